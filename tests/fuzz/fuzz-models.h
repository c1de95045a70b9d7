/* SPDX-License-Identifier: GPL-3.0-or-later */
/* fuzz-models.h: the small models the seed corpora are made of (make-corpus.c) and the
 * safetensors harness reads its fuzzed weights against (fuzz-safetensors.c): a float
 * MLP, a small CNN with BatchNorm, and the MLP quantized each way. Deterministic (fixed
 * seeds), a few hundred parameters each. Header-only, static. */
#pragma once

#include <glib.h>

#include "es-quant.h"
#include "espalier-model-file.h"
#include "espalier-templates.h"

typedef struct {
  const char  *name;
  const char  *spec;
  EsShape      input;
  EsQuantMode  mode;
} FuzzModelKind;

G_GNUC_UNUSED static const FuzzModelKind fuzz_model_kinds[] = {
  { "mlp", "dense:6,relu,dropout:0.25,dense:3,softmax", { .rank = 1, .dims = { 4 } }, ES_QUANT_FP32 },
  { "cnn", "conv2d:2:3:1:1,batchnorm,leaky_relu:0.1,maxpool2d:2,avgpool2d:1,flatten,dense:3,"
           "sigmoid", { .rank = 3, .dims = { 1, 4, 4 } }, ES_QUANT_FP32 },
  { "int8-static", "dense:6,tanh,dense:3", { .rank = 1, .dims = { 4 } }, ES_QUANT_INT8_STATIC },
  { "int8-dynamic", "dense:6,relu,dense:3", { .rank = 1, .dims = { 4 } }, ES_QUANT_INT8_DYNAMIC },
  { "fp16", "dense:5,relu,dense:3,softmax", { .rank = 1, .dims = { 4 } }, ES_QUANT_FP16 },
  { "bf16", "dense:5,relu,dense:3,softmax", { .rank = 1, .dims = { 4 } }, ES_QUANT_BF16 },
};

/* Model i, its weights initialized with seed i + 1; *quant gets its quantization (NULL
 * for float). Aborts on failure: these are fixed, known-good models. */
G_GNUC_UNUSED static EsModel *
fuzz_model_build (guint i, EsQuant **quant)
{
  const FuzzModelKind *k = &fuzz_model_kinds[i];
  g_autoptr(GError) error = NULL;
  EsModel *model = espalier_model_from_spec (k->spec, &k->input, &error);
  EsError es = { 0 };

  if (model == NULL)
    g_error ("%s: %s", k->spec, error->message);
  es_model_init (model, i + 1);
  *quant = NULL;
  if (k->mode != ES_QUANT_FP32)
    {
      EsQuant *q = es_quant_new (model, k->mode, NULL, false, &es);

      if (q == NULL)
        g_error ("es_quant_new: %s", es.message);
      if (k->mode == ES_QUANT_INT8_STATIC)
        for (int l = 0; l < q->n_layers; l++)
          if (q->layers[l].int8)
            es_quant_set_input_range (q, l, -2.5f, 3.0f);
      *quant = q;
    }
  return model;
}

/* The model file info of model i: classes, a short history, provenance fixed so the
 * files are the same on every run. */
G_GNUC_UNUSED static void
fuzz_model_info (guint i, EspalierModelInfo *info)
{
  static const char *const classes[] = { "cat", "dog", "bird", NULL };
  EspalierEpochRecord rec = { .epoch = 1, .train_loss = 0.9, .train_accuracy = 0.5,
                              .val_loss = 1.0, .val_accuracy = 0.4, .lr = 0.01,
                              .seconds = 0.25 };

  espalier_model_info_init (info);
  info->name = g_strdup (fuzz_model_kinds[i].name);
  info->template_name = g_strdup ("playground");
  info->dataset_source = g_strdup ("spiral:n=30,arms=3");
  info->preprocessing = g_strdup ("{\"standardize\":true}");
  info->class_names = g_strdupv ((char **) classes);
  info->created = g_strdup ("2024-01-01T00:00:00Z");
  info->producer = g_strdup ("Espalier fuzz corpus");
  info->input_scale = 0.5;
  info->input_shift = -1.0;
  g_array_append_val (info->history, rec);
}
