/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-model-page.h: the Model page of the window: a palette of layer kinds, the
 * model canvas (EspalierModelCanvas) and a properties panel for the selected layer,
 * with templates and undo/redo. It shows and edits the model document of the project
 * set on it (property "project", EspalierProject).
 *
 * Actions on the page: "model.undo" (Ctrl+Z), "model.redo" (Ctrl+Shift+Z), enabled from
 * the document's can-undo/can-redo; "model.template" (string: "mlp", "lenet",
 * "playground"); "model.append-layer" (string: a kind name, es_layer_kind_name);
 * "model.remove-layer" (the selected layer). */
#pragma once

#include <adwaita.h>

#include "espalier-project.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_MODEL_PAGE (espalier_model_page_get_type ())
G_DECLARE_FINAL_TYPE (EspalierModelPage, espalier_model_page, ESPALIER, MODEL_PAGE, AdwBin)

GtkWidget       *espalier_model_page_new          (void);
EspalierProject *espalier_model_page_get_project  (EspalierModelPage *self);
void             espalier_model_page_set_project  (EspalierModelPage *self,
                                                   EspalierProject   *project);

/* Undo or redo the last model edit (what "model.undo" / "model.redo" do; the window
 * routes its own Undo here while the page is visible). */
void             espalier_model_page_undo         (EspalierModelPage *self);
void             espalier_model_page_redo         (EspalierModelPage *self);
/* Append a layer of kind with its defaults and select it (a palette item activated). */
void             espalier_model_page_append_layer (EspalierModelPage *self,
                                                   EsLayerKind        kind);
/* Replace the model by template `name` ("mlp", "lenet", "playground"), taking its
 * training defaults into the project; a template that does not suit the dataset is
 * reported in a toast and changes nothing. Returns TRUE when applied. */
gboolean         espalier_model_page_apply_template (EspalierModelPage *self,
                                                     const char        *name);

/* The page's parts, for the window and tests. (transfer none) */
GtkWidget       *espalier_model_page_get_canvas   (EspalierModelPage *self);
GtkWidget       *espalier_model_page_get_editor   (EspalierModelPage *self);

G_END_DECLS
