/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-model-canvas.h: the model drawn as a chain of blocks, from the input to the
 * output, with the tensor shape on every edge, parameters and FLOPs on every block and
 * the totals at the bottom; it edits the EspalierModelDoc set on it: layer kinds dropped
 * on it are inserted, blocks dragged on it are moved, Delete removes the selected layer,
 * arrow keys move the selection and Ctrl+Up/Down the layer. Drawn with cairo in
 * snapshot; it asks for the height it needs, so put it in a GtkScrolledWindow. It edits
 * through the document only and keeps no model state of its own but the selection.
 *
 * Coordinates are the widget's own, in pixels. */
#pragma once

#include <gtk/gtk.h>

#include "espalier-model-doc.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_MODEL_CANVAS (espalier_model_canvas_get_type ())
G_DECLARE_FINAL_TYPE (EspalierModelCanvas, espalier_model_canvas, ESPALIER, MODEL_CANVAS, GtkWidget)

/* How a layer's block was drawn in the last frame. */
typedef enum {
  ESPALIER_BLOCK_NONE,       /* not drawn (yet) */
  ESPALIER_BLOCK_NORMAL,
  ESPALIER_BLOCK_INVALID,    /* the first invalid layer: red, its reason under it */
  ESPALIER_BLOCK_DISABLED,   /* after an invalid layer: greyed */
} EspalierBlockState;

/* Properties: "doc" (EspalierModelDoc, may be NULL), "selected" (int, the selected layer
 * or -1). Actions (on the canvas, with their keys): "canvas.delete" (Delete, BackSpace),
 * "canvas.select-previous" (Up), "canvas.select-next" (Down), "canvas.move-up"
 * (Ctrl+Up), "canvas.move-down" (Ctrl+Down), "canvas.unselect" (Escape). */

GtkWidget          *espalier_model_canvas_new              (void);
EspalierModelDoc   *espalier_model_canvas_get_doc          (EspalierModelCanvas *self);
void                espalier_model_canvas_set_doc          (EspalierModelCanvas *self,
                                                            EspalierModelDoc    *doc);
int                 espalier_model_canvas_get_selected     (EspalierModelCanvas *self);
/* Select layer `index` (-1 or out of range: nothing) and scroll it into view. */
void                espalier_model_canvas_select           (EspalierModelCanvas *self,
                                                            int                  index);

/* Geometry, for the drop target, the drag gesture and tests. */

/* The block of layer i as laid out for the current width; FALSE when there is none. */
gboolean            espalier_model_canvas_get_block_rect   (EspalierModelCanvas *self,
                                                            guint                i,
                                                            graphene_rect_t     *rect);
/* The layer whose block contains (x, y), or -1. */
int                 espalier_model_canvas_layer_at         (EspalierModelCanvas *self,
                                                            double               x,
                                                            double               y);
/* Where a layer dropped at height y goes: 0..n_layers (the gap nearest to y). */
guint               espalier_model_canvas_insertion_index  (EspalierModelCanvas *self,
                                                            double               y);

/* Editing, as the drop target and the drag gesture do it. */

/* Insert a layer of `kind` (its defaults) at the gap nearest to y and select it. */
void                espalier_model_canvas_drop_kind        (EspalierModelCanvas *self,
                                                            EsLayerKind          kind,
                                                            double               y);
/* Press at (x0, y0), drag to (x1, y1) and release, as the drag gesture does: the
 * pressed layer is selected and, when the pointer moved past the threshold, moved to
 * the gap nearest to y1. Returns TRUE when a layer moved. */
gboolean            espalier_model_canvas_drag_layer       (EspalierModelCanvas *self,
                                                            double               x0,
                                                            double               y0,
                                                            double               x1,
                                                            double               y1);

/* What the last frame drew, for tests. */

/* The number of layer blocks drawn. */
guint               espalier_model_canvas_get_n_drawn      (EspalierModelCanvas *self);
/* How layer i's block was drawn (ESPALIER_BLOCK_NONE when it was not). */
EspalierBlockState  espalier_model_canvas_get_drawn_state  (EspalierModelCanvas *self,
                                                            guint                i);
/* The reason drawn under an invalid block, or NULL; index (may be NULL) receives the
 * layer it was drawn under. */
const char         *espalier_model_canvas_get_drawn_error  (EspalierModelCanvas *self,
                                                            int                 *index);

/* A layer's title with its key setting: "Dense 128", "Conv2D 6 5×5". */
char               *espalier_layer_spec_title              (const EsLayerSpec   *spec);
/* The colour the canvas marks a kind with (weights blue, pools and Flatten purple,
 * activations green, Dropout and BatchNorm orange), for widget's style. */
void                espalier_layer_kind_color              (GtkWidget           *widget,
                                                            EsLayerKind          kind,
                                                            GdkRGBA             *color);

G_END_DECLS
