/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-templates.h: ready-made models and the model spec string.
 *
 * A template is a named architecture with training defaults: "mlp" (the article's
 * reference model), "lenet" (a small CNN for images) and "playground" (a tiny network
 * for the 2-D teaching sets). A spec string is a model written on one line, one layer
 * per comma-separated token, its arguments after colons:
 *
 *   flatten,dense:128,relu,dense:10,softmax
 *   conv2d:6:5:1:2        filters:kernel[:stride[:padding]]  (stride 1, padding 0)
 *   maxpool2d:2           kernel[:stride]                    (stride = kernel)
 *   avgpool2d:2:2         kernel[:stride]
 *   dropout:0.2           rate
 *   leaky_relu:0.1        alpha                              (0.01)
 *   batchnorm             [momentum[:eps]]                   (0.1, 1e-5)
 *   relu, sigmoid, tanh, softmax, flatten                    no arguments
 *
 * Kinds are the names of es_layer_kind_name, case-insensitive (titles like "Dense" work
 * too). Models built here are initialized (es_model_init) with seed 0, or with the
 * template's training seed. */
#pragma once

#include <glib.h>

#include "es-model.h"
#include "espalier-trainer.h"

G_BEGIN_DECLS

/* The template names, NULL-terminated: "mlp", "lenet", "playground". */
const char *const *espalier_template_names       (void);
/* One line describing a template, or NULL when the name is unknown. */
const char        *espalier_template_describe    (const char *name);

/* Build template `name` for samples of shape `input` and n_outputs classes. opts (may
 * be NULL) receives espalier_train_options_init with the template's training defaults
 * on top. Fails with ESPALIER_ERROR_INVALID for an unknown name (the message lists the
 * known ones) or fewer than 2 classes, and ESPALIER_ERROR_SHAPE when the input does not
 * suit the template. */
EsModel           *espalier_model_from_template  (const char            *name,
                                                  const EsShape         *input,
                                                  guint                  n_outputs,
                                                  EspalierTrainOptions  *opts,
                                                  GError               **error);

/* Parse a spec string into layers (g_free the result). Fails with
 * ESPALIER_ERROR_INVALID naming the token, its position and what is wrong. */
EsLayerSpec       *espalier_spec_parse           (const char            *spec,
                                                  int                   *n_layers,
                                                  GError               **error);
/* Build a model from a spec string on input shape `input`. Parse errors are
 * ESPALIER_ERROR_INVALID, shape errors ESPALIER_ERROR_SHAPE naming the layer, and
 * parameters beyond this machine's memory (espalier-limits.h) ESPALIER_ERROR_MEMORY
 * naming the size, before anything is allocated. */
EsModel           *espalier_model_from_spec      (const char            *spec,
                                                  const EsShape         *input,
                                                  GError               **error);
/* The spec string of a model's layers; espalier_model_from_spec on it and the same
 * input rebuilds the same architecture. */
char              *espalier_model_to_spec        (const EsModel         *model);
/* The spec string of layers (n_layers, "" when 0), with defaults filled in as
 * es_model_new fills them; espalier_spec_parse reads it back. */
char              *espalier_spec_format          (const EsLayerSpec     *layers,
                                                  int                    n_layers);

G_END_DECLS
