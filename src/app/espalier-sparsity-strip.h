/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-sparsity-strip.h: a row of cells, one per weight layer (Dense, Conv2D) of a
 * variant, each shaded by the fraction of its weights that are zero and printed with
 * that percentage; the layer's title under it, a tooltip with the counts. It follows
 * the variant's notify. It draws what the variant holds; it computes nothing. */
#pragma once

#include <gtk/gtk.h>

#include "espalier-variant.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_SPARSITY_STRIP (espalier_sparsity_strip_get_type ())
G_DECLARE_FINAL_TYPE (EspalierSparsityStrip, espalier_sparsity_strip, ESPALIER, SPARSITY_STRIP, GtkWidget)

/* Property "variant" (EspalierVariant, may be NULL). */

GtkWidget       *espalier_sparsity_strip_new          (void);
EspalierVariant *espalier_sparsity_strip_get_variant  (EspalierSparsityStrip *self);
void             espalier_sparsity_strip_set_variant  (EspalierSparsityStrip *self,
                                                       EspalierVariant       *variant);
/* The cells drawn: how many, and each one's layer index and zero fraction 0..1. */
guint            espalier_sparsity_strip_get_n_cells  (EspalierSparsityStrip *self);
guint            espalier_sparsity_strip_get_cell_layer (EspalierSparsityStrip *self,
                                                         guint                  cell);
double           espalier_sparsity_strip_get_cell_sparsity (EspalierSparsityStrip *self,
                                                            guint                  cell);
/* The tooltip at widget pixel (x, y), or NULL outside every cell. */
char            *espalier_sparsity_strip_describe_at  (EspalierSparsityStrip *self,
                                                       double                 x,
                                                       double                 y);

G_END_DECLS
