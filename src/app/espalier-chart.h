/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-chart.h: one chart widget for every plot in the app. It hosts layers
 * (espalier-chart-layers.h) over two axes, draws a title, axes with ticks and labels, a
 * legend and a hover readout, and saves itself as PNG, SVG or PDF. Drawing happens in
 * snapshot through cairo; changes of layers or series queue at most one redraw per
 * frame. */
#pragma once

#include <gtk/gtk.h>

#include "espalier-chart-axis.h"
#include "espalier-chart-layer.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_CHART (espalier_chart_get_type ())
G_DECLARE_FINAL_TYPE (EspalierChart, espalier_chart, ESPALIER, CHART, GtkWidget)

/* Properties: "title" (string), "x-axis", "y-axis" (EspalierChartAxis, construct; new
 * ones by default), "show-legend" (gboolean, TRUE), "square" (gboolean: keep the plot
 * area square, for 2-D data and matrices), "empty-text" (string shown when no layer has
 * data: "Train the model to see its loss"). A right click or the context menu offers
 * "Save Image…" (PNG, SVG, PDF). */

GtkWidget         *espalier_chart_new            (void);
void               espalier_chart_set_title      (EspalierChart      *self,
                                                  const char         *title);
EspalierChartAxis *espalier_chart_get_x_axis     (EspalierChart      *self);
EspalierChartAxis *espalier_chart_get_y_axis     (EspalierChart      *self);
void               espalier_chart_add_layer      (EspalierChart      *self,
                                                  EspalierChartLayer *layer);
void               espalier_chart_remove_layer   (EspalierChart      *self,
                                                  EspalierChartLayer *layer);
void               espalier_chart_remove_all     (EspalierChart      *self);
guint              espalier_chart_get_n_layers   (EspalierChart      *self);
EspalierChartLayer *espalier_chart_get_layer     (EspalierChart      *self,
                                                  guint               i);
void               espalier_chart_set_show_legend (EspalierChart     *self,
                                                  gboolean            show);
void               espalier_chart_set_square     (EspalierChart      *self,
                                                  gboolean            square);
void               espalier_chart_set_empty_text (EspalierChart      *self,
                                                  const char         *text);
/* The plot rectangle (inside the axes) for a widget of width x height pixels. */
void               espalier_chart_get_plot_area  (EspalierChart      *self,
                                                  int                 width,
                                                  int                 height,
                                                  graphene_rect_t    *area);
/* Draw the whole chart with cairo at width x height (what snapshot and save use). */
void               espalier_chart_draw           (EspalierChart      *self,
                                                  cairo_t            *cr,
                                                  int                 width,
                                                  int                 height);
/* Save as PNG, SVG or PDF by the extension of path, at width x height (0: the widget's
 * size, or 800 x 500 when unrealized). G_IO_ERROR on failure or an unknown extension. */
gboolean           espalier_chart_save           (EspalierChart      *self,
                                                  const char         *path,
                                                  int                 width,
                                                  int                 height,
                                                  GError            **error);
/* The hover readout text at widget pixel (x, y), or NULL (tests, and the tooltip). */
char              *espalier_chart_describe_at    (EspalierChart      *self,
                                                  double              x,
                                                  double              y);
/* How many redraws the chart has drawn (tests: a series change led to a redraw). */
guint              espalier_chart_get_draw_count (EspalierChart      *self);

G_END_DECLS
