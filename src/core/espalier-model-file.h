/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-model-file.h: a model on disk as two files side by side, NAME.json
 * (architecture, training configuration, metrics history, test metrics, dataset
 * reference, class names, provenance and the weights file's SHA-256) and
 * NAME.safetensors (every tensor of es_model_tensor, F32, in the standard safetensors
 * layout that other tools read). Writes are atomic; reads validate every field, so a
 * corrupt or mismatched pair is an ESPALIER_ERROR_FORMAT naming the file and the
 * field, never a crash. It is not a project file: see espalier-project.h. */
#pragma once

#include <glib.h>

#include "es-model.h"
#include "espalier-trainer.h"

G_BEGIN_DECLS

/* Version of the JSON layout written by espalier_model_save. */
#define ESPALIER_MODEL_FORMAT_VERSION 1

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
 * directory that is synced and renamed over its target; both are complete before the
 * first rename. Fails with G_IO_ERROR when a file cannot be written, and with
 * ESPALIER_ERROR_INVALID, before writing anything, when info holds what
 * espalier_model_load would refuse (preprocessing that is not JSON, a batch size of 0,
 * a NaN option...). On failure no temporary file is left behind. */
gboolean  espalier_model_save       (const EsModel           *model,
                                     const EspalierModelInfo *info,
                                     const char              *path,
                                     GError                 **error);

/* Read NAME.json and the weights file it names. info (may be NULL; else initialized or
 * zero-filled) is cleared and filled on success and left untouched on failure. Fails with G_IO_ERROR when a file
 * cannot be read and ESPALIER_ERROR_FORMAT, naming the file and the field or tensor,
 * when anything in either file is missing, mistyped, out of range or inconsistent
 * (the architecture is rebuilt and shape-checked, every tensor's dtype, shape and byte
 * range is checked, and the weights' size and SHA-256 must match the JSON). */
EsModel  *espalier_model_load       (const char         *path,
                                     EspalierModelInfo  *info,
                                     GError            **error);

G_END_DECLS
