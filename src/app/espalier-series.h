/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-series.h: the data of a chart layer, in data units: points (x, y), each with
 * an optional class index (scatter colours). The worker's progress feeds it on the main
 * thread; every change emits "changed" (the chart queues one redraw per frame). It knows
 * nothing of pixels. */
#pragma once

#include <glib-object.h>

G_BEGIN_DECLS

#define ESPALIER_TYPE_SERIES (espalier_series_get_type ())
G_DECLARE_FINAL_TYPE (EspalierSeries, espalier_series, ESPALIER, SERIES, GObject)

/* Properties: "title" (string, shown in the legend), "n-points" (guint).
 * Signal "changed" (no arguments). */

EspalierSeries *espalier_series_new        (const char     *title);
const char     *espalier_series_get_title  (EspalierSeries *self);
void            espalier_series_set_title  (EspalierSeries *self,
                                            const char     *title);
guint           espalier_series_get_n_points (EspalierSeries *self);
/* (n_points) arrays; valid until the next change. */
const double   *espalier_series_get_x      (EspalierSeries *self);
const double   *espalier_series_get_y      (EspalierSeries *self);
/* (n_points) class indices, or NULL when no point has one. */
const guint    *espalier_series_get_class  (EspalierSeries *self);
void            espalier_series_append     (EspalierSeries *self,
                                            double          x,
                                            double          y);
void            espalier_series_append_class (EspalierSeries *self,
                                            double          x,
                                            double          y,
                                            guint           klass);
/* Replace all points (klass may be NULL). */
void            espalier_series_set_data   (EspalierSeries *self,
                                            const double   *x,
                                            const double   *y,
                                            const guint    *klass,
                                            guint           n);
void            espalier_series_clear      (EspalierSeries *self);
/* Data extents; FALSE when empty. Non-finite values are skipped. */
gboolean        espalier_series_get_extents (EspalierSeries *self,
                                            double         *x_min,
                                            double         *x_max,
                                            double         *y_min,
                                            double         *y_max);

G_END_DECLS
