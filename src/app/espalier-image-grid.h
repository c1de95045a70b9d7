/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-image-grid.h: a grid of the first samples of an image dataset, each drawn
 * pixel for pixel (nearest-neighbour scaling) with its label under it. It shows what
 * the loader read; it is not an image viewer and draws no statistics. */
#pragma once

#include <gtk/gtk.h>

#include "espalier-dataset.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_IMAGE_GRID (espalier_image_grid_get_type ())
G_DECLARE_FINAL_TYPE (EspalierImageGrid, espalier_image_grid, ESPALIER, IMAGE_GRID, GtkWidget)

/* Properties: "max-images" (guint, 64: how many rows the next set_dataset takes),
 * "tile-size" (guint, about 84 pixels: images are scaled by a whole factor to about
 * this size). */

GtkWidget *espalier_image_grid_new              (void);
/* Show the first max-images rows of dataset (rank 3, (C, H, W) rows; uint8 shown as
 * is, floats stretched per image). Any other dataset, or NULL, empties the grid. */
void       espalier_image_grid_set_dataset      (EspalierImageGrid *self,
                                                 EspalierDataset   *dataset);
/* How many images the grid holds. */
guint      espalier_image_grid_get_n_images     (EspalierImageGrid *self);
/* The label drawn under image i ("Ankle boot"), or NULL. */
const char *espalier_image_grid_get_label       (EspalierImageGrid *self,
                                                 guint              i);
void       espalier_image_grid_set_max_images   (EspalierImageGrid *self,
                                                 guint              max_images);
void       espalier_image_grid_set_tile_size    (EspalierImageGrid *self,
                                                 guint              tile_size);

G_END_DECLS
