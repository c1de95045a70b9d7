/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-optimize.h: the optimization jobs. Each takes a parent variant (the trained
 * baseline or an earlier variant) and a dataset and makes a new variant: pruned
 * (magnitude one-shot or gradual, structured, 2:4), quantized (static or dynamic int8,
 * fp16, bf16, quantization-aware training) or reduced (a weight layer removed, then
 * distillation from the parent or plain fine-tuning). Fine-tuning reuses the trainer
 * (EspalierTrainer) and its progress records, so the GUI's live chart and the CLI's
 * lines are the same as for training. Every new variant is then measured for real:
 * test accuracy and latency on the kernels that run it (es-exec.h). Sensitivity scans
 * measure accuracy with one layer at a time pruned or quantized. No GTK here. */
#pragma once

#include <gio/gio.h>

#include "es-prune.h"
#include "es-quant.h"
#include "espalier-dataset.h"
#include "espalier-trainer.h"
#include "espalier-variant.h"

G_BEGIN_DECLS

typedef enum {
  ESPALIER_OPTIMIZE_PRUNE,             /* magnitude, one shot, then fine-tune */
  ESPALIER_OPTIMIZE_PRUNE_GRADUAL,     /* magnitude on the cubic schedule while training */
  ESPALIER_OPTIMIZE_PRUNE_STRUCTURED,  /* whole neurons / channels, physically removed */
  ESPALIER_OPTIMIZE_PRUNE_2_4,         /* 2:4 semi-structured masks, then fine-tune */
  ESPALIER_OPTIMIZE_QUANTIZE,          /* post-training: quant_mode */
  ESPALIER_OPTIMIZE_QAT,               /* fake-quant fine-tuning, then static int8 */
  ESPALIER_OPTIMIZE_REDUCE,            /* remove a weight layer, then recover */
} EspalierOptimizeKind;

const char *espalier_optimize_kind_name      (EspalierOptimizeKind kind); /* "prune", "prune-gradual", "prune-structured", "prune-2:4", "quantize", "qat", "reduce" */
gboolean    espalier_optimize_kind_from_name (const char *name, EspalierOptimizeKind *kind);

typedef struct {
  EspalierOptimizeKind kind;

  /* pruning */
  double        sparsity;          /* target (0.9) */
  EsPruneScope  scope;             /* ES_PRUNE_GLOBAL */
  double        initial_sparsity;  /* gradual: s_i (0) */
  guint         prune_events;      /* gradual: n, spread over the first 2/3 of fine-tuning (10) */
  double        keep_fraction;     /* structured: units kept in each selected layer (0.5) */
  EsNorm        norm;              /* structured: ES_NORM_L1 */
  gboolean     *layers;            /* (n_layers) layers to prune, NULL: every eligible one
                                    * (structured: every weight layer but the last) */

  /* quantization */
  EsQuantMode   quant_mode;        /* ES_QUANT_INT8_STATIC */
  EsCalibMethod calib;             /* ES_CALIB_MINMAX */
  double        percentile;        /* ES_CALIB_PERCENTILE: 99.99 */
  guint         calib_batches;     /* training batches observed (8) */
  gboolean      reduce_range;      /* 7-bit activations (FALSE) */
  gboolean     *keep_float;        /* (n_layers) layers kept in float, NULL: none */

  /* layer reduction */
  int           remove_layer;      /* index of the Dense/Conv2D layer to remove (-1: the
                                    * last hidden weight layer) */
  gboolean      distill;           /* recover by distillation from the parent (TRUE) */
  double        temperature;       /* T (4) */
  double        alpha;             /* weight of the soft term (0.7) */

  /* fine-tuning after pruning, QAT, reduction (0 epochs: none) */
  guint         epochs;            /* 2 */
  double        lr;                /* 0: train.engine.lr */

  /* measurement */
  guint         threads;           /* latency threads (1) */
  double        latency_seconds;   /* per measurement (1) */
} EspalierOptimizeOptions;

void espalier_optimize_options_init  (EspalierOptimizeOptions *opts);
/* Frees layers and keep_float. */
void espalier_optimize_options_clear (EspalierOptimizeOptions *opts);

/* One line saying what opts will do: "Prune 90% of weights per layer by magnitude,
 * fine-tune 2 epochs". Translated. */
char *espalier_optimize_describe     (const EspalierOptimizeOptions *opts);

/* Make a variant from parent (which must have its model) on dataset with train's
 * splits, seed, batch size and optimizer for fine-tuning. The new variant is named
 * after what was done ("pruned 90%", "int8 static (minmax)") and made unique against
 * the names in `taken` (NULL-terminated, may be NULL); its parent is parent's name;
 * accuracy is measured on the test split through es-exec, and latency with
 * espalier_measure_variant. Fine-tuning progress goes to func as training's does
 * (EPOCH records carry val accuracy); stage changes are MESSAGE records. Runs on the
 * calling thread; cancellable stops it with G_IO_ERROR_CANCELLED. */
EspalierVariant *espalier_optimize             (EspalierDataset               *dataset,
                                                EspalierVariant               *parent,
                                                const EspalierTrainOptions    *train,
                                                const EspalierOptimizeOptions *opts,
                                                const char * const            *taken,
                                                GCancellable                  *cancellable,
                                                EspalierProgressFunc           func,
                                                gpointer                       user_data,
                                                GError                       **error);
/* The same on a worker; func runs in the caller's thread-default main context. parent
 * must not change until it finishes; the result is a new variant nobody watches yet. */
void             espalier_optimize_async       (EspalierDataset               *dataset,
                                                EspalierVariant               *parent,
                                                const EspalierTrainOptions    *train,
                                                const EspalierOptimizeOptions *opts,
                                                const char * const            *taken,
                                                GCancellable                  *cancellable,
                                                EspalierProgressFunc           func,
                                                gpointer                       user_data,
                                                GDestroyNotify                 user_data_free,
                                                GAsyncReadyCallback            callback,
                                                gpointer                       callback_data);
EspalierVariant *espalier_optimize_finish      (GAsyncResult                  *result,
                                                GError                       **error);

/* Accuracy of model with quant (may be NULL) through es-exec with the given kernels
 * (NULL: es_exec_new's default) on rows of dataset (NULL: all rows). */
gboolean         espalier_evaluate_exec        (const EsModel     *model,
                                                const EsQuant     *quant,
                                                const EsExecKind  *kinds,
                                                EspalierDataset   *dataset,
                                                const guint32     *rows,
                                                guint              n_rows,
                                                guint              threads,
                                                EspalierMetrics   *metrics,
                                                GError           **error);

/* Sensitivity scans: accuracy on the validation split (the test split when there is
 * none) with one weight layer at a time pruned by magnitude to each of levels (no
 * fine-tuning), or quantized to int8 alone (levels ignored; one row per layer, level
 * -1). Rows in layer order then level order. */
typedef struct {
  guint  layer;
  double level;      /* sparsity, or -1 for int8 */
  double accuracy;
  double baseline;   /* the unmodified model's accuracy on the same rows */
} EspalierSensitivityRow;

typedef enum {
  ESPALIER_SENSITIVITY_PRUNE,
  ESPALIER_SENSITIVITY_QUANTIZE,
} EspalierSensitivityKind;

/* (element-type EspalierSensitivityRow) progress as MESSAGE records and STEP records
 * whose step/steps count the evaluations. */
GArray          *espalier_sensitivity_scan        (EspalierDataset            *dataset,
                                                   EspalierVariant            *parent,
                                                   const EspalierTrainOptions *train,
                                                   EspalierSensitivityKind     kind,
                                                   const double               *levels,
                                                   guint                       n_levels,
                                                   GCancellable               *cancellable,
                                                   EspalierProgressFunc        func,
                                                   gpointer                    user_data,
                                                   GError                    **error);
void             espalier_sensitivity_scan_async  (EspalierDataset            *dataset,
                                                   EspalierVariant            *parent,
                                                   const EspalierTrainOptions *train,
                                                   EspalierSensitivityKind     kind,
                                                   const double               *levels,
                                                   guint                       n_levels,
                                                   GCancellable               *cancellable,
                                                   EspalierProgressFunc        func,
                                                   gpointer                    user_data,
                                                   GDestroyNotify              user_data_free,
                                                   GAsyncReadyCallback         callback,
                                                   gpointer                    callback_data);
GArray          *espalier_sensitivity_scan_finish (GAsyncResult               *result,
                                                   GError                    **error);

/* The comparison table of variants (EspalierVariant), one row each with every
 * measurement, as CSV (header line first) and as a JSON array; either path may be
 * NULL. Written atomically. */
gboolean         espalier_variants_write_table    (GPtrArray   *variants,
                                                   const char  *csv_path,
                                                   const char  *json_path,
                                                   GError     **error);

G_END_DECLS
