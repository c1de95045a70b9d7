/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-variant.h: one version of the trained model with its measurements: the
 * trained baseline first, then what pruning, quantization or layer reduction made of it.
 * Every figure is measured (test accuracy on the test split, latency on the kernels
 * that run it), never estimated. It owns its weights (an EsModel) when they are loaded.
 * The Optimize page lists variants; the project saves them. No GTK here. */
#pragma once

#include <glib-object.h>

#include "es-exec.h"
#include "es-model.h"
#include "es-quant.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_VARIANT (espalier_variant_get_type ())
G_DECLARE_FINAL_TYPE (EspalierVariant, espalier_variant, ESPALIER, VARIANT, GObject)

/* Properties, all notified: "name" (string, "baseline", "pruned 50%"), "kind" (string:
 * "baseline", "pruned", "quantized", "reduced"), "description" (string, what was done),
 * "parent" (string, the name of the variant it came from, or NULL), "accuracy" (double,
 * test accuracy 0..1, NaN when not measured), "latency-us" (double, batch-1 inference
 * time in microseconds, NaN when not measured), "size-bytes" (guint64, bytes of the
 * stored weights), "n-params" (gint64), "nonzeros" (gint64, nonzero weights), "flops"
 * (gint64, forward FLOPs per sample). */

/* A variant of `model` (taken over; may be NULL for a saved variant whose weights are
 * not loaded). n-params, nonzeros, flops and size-bytes are counted from the model. */
EspalierVariant *espalier_variant_new            (const char      *name,
                                                  const char      *kind,
                                                  EsModel         *model);
const char      *espalier_variant_get_name       (EspalierVariant *self);
void             espalier_variant_set_name       (EspalierVariant *self,
                                                  const char      *name);
const char      *espalier_variant_get_kind       (EspalierVariant *self);
const char      *espalier_variant_get_description(EspalierVariant *self);
void             espalier_variant_set_description(EspalierVariant *self,
                                                  const char      *description);
const char      *espalier_variant_get_parent     (EspalierVariant *self);
void             espalier_variant_set_parent     (EspalierVariant *self,
                                                  const char      *parent);
double           espalier_variant_get_accuracy   (EspalierVariant *self);
void             espalier_variant_set_accuracy   (EspalierVariant *self,
                                                  double           accuracy);
double           espalier_variant_get_latency_us (EspalierVariant *self);
void             espalier_variant_set_latency_us (EspalierVariant *self,
                                                  double           latency_us);
guint64          espalier_variant_get_size_bytes (EspalierVariant *self);
gint64           espalier_variant_get_n_params   (EspalierVariant *self);
gint64           espalier_variant_get_nonzeros   (EspalierVariant *self);
gint64           espalier_variant_get_flops      (EspalierVariant *self);
/* Fraction of zero weights, 0..1 (0 without parameters). */
double           espalier_variant_get_sparsity   (EspalierVariant *self);
/* The weights, or NULL. (transfer none) */
EsModel         *espalier_variant_get_model      (EspalierVariant *self);
/* Replace the weights (taken over) and recount the sizes. */
void             espalier_variant_set_model      (EspalierVariant *self,
                                                  EsModel         *model);
/* Measure batch-1 inference latency of the model on the CPU backend (median of
 * repeated runs, after warm-up, on `threads` threads, 0: 1) and store it in
 * latency-us. Runs on the calling thread for up to about `seconds` (0: 0.5); call it
 * from a worker. Fails without a model. The notify is emitted on the calling thread:
 * from a worker, measure a variant nothing on the main thread watches yet (a new one),
 * or use espalier_measure_latency and set the result on the main thread. */
gboolean         espalier_variant_measure_latency (EspalierVariant *self,
                                                   guint            threads,
                                                   double           seconds,
                                                   GError         **error);
/* The same measurement of any model, touching no object: safe on a worker while
 * nobody changes the model. */
gboolean         espalier_measure_latency         (const EsModel   *model,
                                                   guint            threads,
                                                   double           seconds,
                                                   double          *latency_us,
                                                   GError         **error);

/* ---- optimized variants (issue 4) ------------------------------------------------
 * More properties, all notified: "format" (string: "fp32", "fp16", "bf16",
 * "int8-static", "int8-dynamic"), "exec" (string: the kernels its latency and accuracy
 * were measured on: "dense", "sparse", "int8"), "latency-p95-us" (double, 95th
 * percentile of batch-1 latency, NaN: not measured), "rows-per-second" (double, large
 * batch throughput, NaN), "dense-latency-us" and "sparse-latency-us" (double, batch-1
 * median on dense and on CSR kernels, NaN unless the variant is sparse enough that both
 * were measured).  size-bytes follows the format (es_quant_weight_bytes). exec is NULL
 * until measured. All six are writable (for loaders): "format" only to a name
 * es_quant_mode_from_name knows and, once weights are set, only to their own format
 * (fp32 without a quantization); "exec" to NULL or a kernel name; a value that breaks
 * this is refused with a warning. NaN is set through espalier_variant_set_latency (a
 * double property refuses it). */

/* Latency figures of one measurement. */
typedef struct {
  double median_us, p95_us;       /* batch 1 */
  double rows_per_second;         /* batch `large_batch` */
  double dense_us, sparse_us;     /* batch-1 medians of both kernels, NaN unless measured */
  EsExecKind exec;                /* the kernels chosen: the faster where both ran */
} EspalierLatency;

/* The quantization, or NULL for float variants. (transfer none) */
const EsQuant   *espalier_variant_get_quant      (EspalierVariant *self);
/* Replace the quantization (taken over; NULL: float); sets format and recounts
 * size-bytes. The model must be set first and match it (es_quant_check; otherwise a
 * critical and quant is freed). espalier_variant_set_model drops a quantization that no
 * longer fits the new weights. */
void             espalier_variant_set_quant      (EspalierVariant *self,
                                                  EsQuant         *quant);
const char      *espalier_variant_get_format     (EspalierVariant *self);
const char      *espalier_variant_get_exec       (EspalierVariant *self);
double           espalier_variant_get_latency_p95_us   (EspalierVariant *self);
double           espalier_variant_get_rows_per_second  (EspalierVariant *self);
double           espalier_variant_get_dense_latency_us (EspalierVariant *self);
double           espalier_variant_get_sparse_latency_us(EspalierVariant *self);
/* Store a measurement's figures (latency-us, latency-p95-us, rows-per-second,
 * dense/sparse latency, exec) on the main thread. */
void             espalier_variant_set_latency    (EspalierVariant       *self,
                                                  const EspalierLatency *latency);
/* Fraction of zero prunable weights of layer i (0 for layers without). */
double           espalier_variant_get_layer_sparsity (EspalierVariant *self,
                                                      guint            layer);

/* Measure model with quant (may be NULL) through es-exec on the CPU backend with
 * `threads` threads (0: 1): batch-1 median and 95th percentile after warm-up, rows/s at
 * batch large_batch (0: 256), for about `seconds` in all (0: 1). When the model's Dense
 * layers are at least half zeros, both dense and CSR kernels are timed and the faster
 * is chosen per the whole model (CSR for the Dense layers that are themselves at least
 * half zeros); otherwise only one. int8 quantizations run on int8 kernels (no sparse
 * try), fp16/bf16 on dense kernels with the rounded weights. The input is the same
 * seeded random batch for every variant of a model. Touches no object: call it from a
 * worker. espalier_measure_latency and espalier_variant_measure_latency are this
 * measurement (the variant's with its quantization, storing every figure). */
gboolean         espalier_measure_variant        (const EsModel   *model,
                                                  const EsQuant   *quant,
                                                  guint            threads,
                                                  guint            large_batch,
                                                  double           seconds,
                                                  EspalierLatency *latency,
                                                  GError         **error);

G_END_DECLS
