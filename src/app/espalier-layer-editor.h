/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-layer-editor.h: the Model page's properties panel: the kind and settings of
 * one layer of an EspalierModelDoc, only the fields its kind uses, and what shape
 * inference says about it (shapes, parameters, FLOPs, or why it is invalid). Every edit
 * goes to espalier_model_doc_set_layer, so it is undoable and repeated edits of a field
 * merge into one step. */
#pragma once

#include <adwaita.h>

#include "espalier-model-doc.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_LAYER_EDITOR (espalier_layer_editor_get_type ())
G_DECLARE_FINAL_TYPE (EspalierLayerEditor, espalier_layer_editor, ESPALIER, LAYER_EDITOR, AdwBin)

/* Properties: "doc" (EspalierModelDoc, may be NULL), "index" (int, the layer shown, -1:
 * none; the panel then says how to pick one). */

GtkWidget        *espalier_layer_editor_new       (void);
EspalierModelDoc *espalier_layer_editor_get_doc   (EspalierLayerEditor *self);
void              espalier_layer_editor_set_doc   (EspalierLayerEditor *self,
                                                   EspalierModelDoc    *doc);
int               espalier_layer_editor_get_index (EspalierLayerEditor *self);
void              espalier_layer_editor_set_index (EspalierLayerEditor *self,
                                                   int                  index);

/* For tests: the spin button of a field ("units", "filters", "kernel", "stride",
 * "padding", "alpha", "rate", "momentum", "eps"), or NULL for an unknown name; and
 * whether its row is shown for the current layer. */
GtkSpinButton    *espalier_layer_editor_get_field (EspalierLayerEditor *self,
                                                   const char          *field);
gboolean          espalier_layer_editor_field_visible (EspalierLayerEditor *self,
                                                       const char          *field);
/* For tests: the kind chooser (an AdwComboRow whose items follow EsLayerKind). */
AdwComboRow      *espalier_layer_editor_get_kind_row (EspalierLayerEditor *self);

G_END_DECLS
