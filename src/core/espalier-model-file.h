/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-model-file.h: a model on disk as two files side by side, NAME.json
 * (architecture, quantization, training configuration, metrics history, test metrics,
 * dataset reference, class names, provenance and the weights file's SHA-256) and
 * NAME.safetensors (every tensor of es_model_tensor in the standard safetensors layout
 * that other tools read). Writes are atomic; reads validate every field, so a corrupt
 * or mismatched pair is an ESPALIER_ERROR_FORMAT naming the file and the field, never
 * a crash. It is not a project file: see espalier-project.h.
 *
 * The weights are stored as the variant keeps them: F32 for a float model; for int8
 * (static or dynamic) each int8 layer's weight as I8 codes ("layers.N.weight", its
 * float shape) with its per-output-channel scales ("layers.N.weight_scale", F32, (rows));
 * for fp16 / bf16 every trainable tensor as F16 / BF16 (what es_quant_dequantized_model
 * rounds and es_quant_weight_bytes counts). Buffers (BatchNorm running statistics), and
 * the biases and float layers of int8 variants, are F32. The JSON's "quantization" (null for float)
 * holds the mode, reduce_range and each layer's int8 flag and static input range
 * (espalier-quant-json-private.h). Version 2 of the JSON added it; version 1 files are
 * float and still read. */
#pragma once

#include <glib.h>

#include "es-model.h"
#include "es-quant.h"
#include "espalier-trainer.h"

G_BEGIN_DECLS

/* Version of the JSON layout written by espalier_model_save (1 is still read). */
#define ESPALIER_MODEL_FORMAT_VERSION 2

/* Everything about a model except its architecture and weights. */
typedef struct {
  char                 *name;            /* "mlp"; NULL at save: the file's base name */
  char                 *template_name;   /* "mlp", or NULL */
  char                 *dataset_source;  /* "fashion-mnist", a path or a generator spec; or NULL */
  char                 *preprocessing;   /* JSON text of the preprocessing options, or NULL */
  char                **class_names;     /* NULL-terminated, or NULL */
  EspalierTrainOptions  train;
  GArray               *history;         /* (EspalierEpochRecord) per-epoch metrics */
  EspalierMetrics       test;            /* test metrics; rows 0 when not evaluated */
  char                 *created;         /* ISO 8601; NULL at save: now */
  char                 *producer;        /* "Espalier 0.1.0"; NULL at save: this build */
  double                input_scale;     /* the model expects x * input_scale + input_shift */
  double                input_shift;
} EspalierModelInfo;

/* Defaults: espalier_train_options_init, an empty history, input_scale 1, shift 0. */
void      espalier_model_info_init  (EspalierModelInfo *info);
/* Free what info holds and zero it; espalier_model_info_init it again to reuse it. */
void      espalier_model_info_clear (EspalierModelInfo *info);

/* The two paths of a model: path is "dir/NAME.json" or "dir/NAME". Either output may be
 * NULL; free the results with g_free. */
void      espalier_model_paths      (const char  *path,
                                     char       **json_path,
                                     char       **safetensors_path);

/* Write NAME.safetensors, then NAME.json, each through a temporary file in the same
 * directory that is synced and renamed over its target (espalier-save.h); both are
 * complete before the first rename, and the old weights stay reachable as
 * .NAME.safetensors.old between the two renames, so that a save cut at any point loads
 * as the old model or the new one. Fails with G_IO_ERROR when a file cannot be written, and with
 * ESPALIER_ERROR_INVALID, before writing anything, when info holds what
 * espalier_model_load would refuse (preprocessing that is not JSON, a batch size of 0,
 * a NaN option...). On failure no temporary file is left behind. */
gboolean  espalier_model_save       (const EsModel           *model,
                                     const EspalierModelInfo *info,
                                     const char              *path,
                                     GError                 **error);

/* Read NAME.json and the weights file it names (or the .old weights a cut save kept, when
 * they are the ones NAME.json records). info (may be NULL; else initialized or
 * zero-filled) is cleared and filled on success and left untouched on failure. Fails with
 * G_IO_ERROR when a file cannot be read, ESPALIER_ERROR_MEMORY, before anything is
 * allocated, when the architecture's parameters would not fit the JSON's
 * training.memory_limit or the memory this machine has (espalier-limits.h), and
 * ESPALIER_ERROR_FORMAT, naming the file and the field or tensor,
 * when anything in either file is missing, mistyped, out of range or inconsistent
 * (the architecture is rebuilt and shape-checked, every tensor's dtype, shape and byte
 * range is checked, and the weights' size and SHA-256 must match the JSON). */
EsModel  *espalier_model_load       (const char         *path,
                                     EspalierModelInfo  *info,
                                     GError            **error);

/* espalier_model_save for a variant: model stored as quant (NULL or ES_QUANT_FP32: float,
 * as espalier_model_save). For int8 layers only the codes and scales are written, not
 * model's float weights. Fails with ESPALIER_ERROR_INVALID before writing anything when
 * quant does not fit model (es_quant_check), a static int8 quantization is not
 * calibrated, a scale is not finite and above 0, a code is -128, or an input scale or
 * zero point is not that of its range. */
gboolean  espalier_model_save_variant (const EsModel           *model,
                                       const EsQuant           *quant,
                                       const EspalierModelInfo *info,
                                       const char              *path,
                                       GError                 **error);
/* espalier_model_load for a variant, with the checks of espalier_model_save_variant as
 * ESPALIER_ERROR_FORMAT naming the field or tensor. The model's int8 layers hold their
 * dequantized weights (es_quant_dequantized_model: codes times scales), fp16/bf16
 * weights their values widened to float. *quant (may be NULL: then only the
 * dequantized model is returned) receives the quantization, or NULL for a float model;
 * it is set only on success. */
EsModel  *espalier_model_load_variant (const char         *path,
                                       EspalierModelInfo  *info,
                                       EsQuant           **quant,
                                       GError            **error);

G_END_DECLS
