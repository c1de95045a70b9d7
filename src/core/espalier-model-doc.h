/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-model-doc.h: the model a user edits, as a document: a list of layer specs on
 * the dataset's input shape, checked after every edit, with undo and redo. The canvas
 * draws it and edits it; the project saves it; training builds an EsModel from it.
 * It holds no weights. No GTK here.
 *
 * Checking runs the engine's shape inference layer by layer: every layer up to the first
 * invalid one has its EsLayerInfo (shapes, parameters, FLOPs); the first invalid layer
 * has a reason ("expects (F) features but gets (1, 28, 28): add a Flatten before it");
 * layers after it have neither. A model whose layers are all valid but whose output does
 * not match the dataset (64 features for 10 classes) is invalid too, the reason on its
 * last layer (which keeps its EsLayerInfo: its shapes are right, its size is not). */
#pragma once

#include <glib-object.h>

#include "es-model.h"
#include "espalier-trainer.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_MODEL_DOC (espalier_model_doc_get_type ())
G_DECLARE_FINAL_TYPE (EspalierModelDoc, espalier_model_doc, ESPALIER, MODEL_DOC, GObject)

/* Properties (read-only, notified when they change): "n-layers" (guint), "valid"
 * (gboolean), "can-undo", "can-redo" (gboolean), "undo-label", "redo-label" (the
 * description of the edit an undo or redo would revert: "Add Dense", or NULL).
 * Signal "changed" (no arguments): after every edit, undo, redo and set_input. */

/* An empty model on input shape `input` (NULL: (2), a 2-D set) for n_outputs classes
 * (0: do not check the output). */
EspalierModelDoc  *espalier_model_doc_new             (const EsShape    *input,
                                                       guint             n_outputs);

/* The dataset changed: new input shape and class count. Not an undo step; layers stay.
 * The same values again are no change. */
void               espalier_model_doc_set_input       (EspalierModelDoc *self,
                                                       const EsShape    *input,
                                                       guint             n_outputs);
const EsShape     *espalier_model_doc_get_input       (EspalierModelDoc *self);
guint              espalier_model_doc_get_n_outputs   (EspalierModelDoc *self);

guint              espalier_model_doc_get_n_layers    (EspalierModelDoc *self);
/* Layer i's spec as the user set it (defaults filled in). i < n_layers. */
const EsLayerSpec *espalier_model_doc_get_layer       (EspalierModelDoc *self,
                                                       guint             i);
/* Shape inference result of layer i, or NULL when layer i is invalid or follows an
 * invalid layer (the last layer of an output mismatch keeps it). first_tensor counts
 * from the first layer, as in the built model. Valid until the next change. */
const EsLayerInfo *espalier_model_doc_get_layer_info  (EspalierModelDoc *self,
                                                       guint             i);
/* Why layer i is invalid (translated sentence), or NULL when it is valid or follows the
 * first invalid layer. */
const char        *espalier_model_doc_get_layer_error (EspalierModelDoc *self,
                                                       guint             i);
/* Index of the first invalid layer, or -1. An empty model is invalid with no layer. */
int                espalier_model_doc_get_first_error (EspalierModelDoc *self);
gboolean           espalier_model_doc_is_valid        (EspalierModelDoc *self);
/* Whole-model reason when invalid ("The model has no layers", the layer's reason
 * prefixed by "Layer 3 (Dense): "), NULL when valid. */
const char        *espalier_model_doc_get_error       (EspalierModelDoc *self);
/* Sums over the valid layers: trainable parameters, forward FLOPs per sample, output
 * activation floats per sample. Any output may be NULL. */
void               espalier_model_doc_get_totals      (EspalierModelDoc *self,
                                                       gint64           *n_params,
                                                       gint64           *flops,
                                                       gint64           *activations);

/* Edits; each is one undo step and emits "changed" (an edit that changes nothing is
 * none). Positions are clamped to the list (insert at n_layers appends); out-of-range
 * indices are programming errors (g_return_if_fail). Specs are kept with the defaults
 * es_model_new would fill in, the fields their kind does not use zeroed, and values
 * clamped to what a spec string holds (sizes 1..2^24), so to_spec always reads back. */
void               espalier_model_doc_insert          (EspalierModelDoc  *self,
                                                       guint              position,
                                                       const EsLayerSpec *spec);
void               espalier_model_doc_remove          (EspalierModelDoc  *self,
                                                       guint              position);
/* Move layer `from` so that it ends up at index `to`. */
void               espalier_model_doc_move            (EspalierModelDoc  *self,
                                                       guint              from,
                                                       guint              to);
/* Replace layer i's spec (a property edit). Consecutive edits of the same layer within
 * one second merge into one undo step, so dragging a spin button is one step. */
void               espalier_model_doc_set_layer       (EspalierModelDoc  *self,
                                                       guint              i,
                                                       const EsLayerSpec *spec);
/* Replace all layers by a spec string (espalier-templates.h syntax). One undo step.
 * Parse errors leave the document unchanged. */
gboolean           espalier_model_doc_set_spec        (EspalierModelDoc  *self,
                                                       const char        *spec,
                                                       GError           **error);
/* Replace all layers by template `name` ("mlp", "lenet", "playground") built for the
 * current input; opts (may be NULL) receives the template's training defaults. One undo
 * step; on error the document is unchanged. */
gboolean           espalier_model_doc_apply_template  (EspalierModelDoc     *self,
                                                       const char           *name,
                                                       EspalierTrainOptions *opts,
                                                       GError              **error);
/* The layers as a spec string ("" when empty). */
char              *espalier_model_doc_to_spec         (EspalierModelDoc  *self);

gboolean           espalier_model_doc_can_undo        (EspalierModelDoc  *self);
gboolean           espalier_model_doc_can_redo        (EspalierModelDoc  *self);
/* Return FALSE when there was nothing to undo / redo. */
gboolean           espalier_model_doc_undo            (EspalierModelDoc  *self);
gboolean           espalier_model_doc_redo            (EspalierModelDoc  *self);
/* Forget the undo history (after New or Open). */
void               espalier_model_doc_clear_history   (EspalierModelDoc  *self);

/* A model with these layers, initialized with seed. Fails with ESPALIER_ERROR_SHAPE and
 * espalier_model_doc_get_error's text when the document is invalid. */
EsModel           *espalier_model_doc_build           (EspalierModelDoc  *self,
                                                       guint64            seed,
                                                       GError           **error);

G_END_DECLS
