/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-chart-layers.h: the concrete chart layers, one class per .c file:
 *   EspalierLineLayer    (espalier-line-layer.c)    a series as a polyline, with markers
 *                                                   when few points
 *   EspalierScatterLayer (espalier-scatter-layer.c) a series as dots coloured by class
 *   EspalierBarsLayer    (espalier-bars-layer.c)    bars at x = 0..n-1 with labels
 *   EspalierHeatmapLayer (espalier-heatmap-layer.c) a (rows, cols) grid of values over
 *                                                   a data rectangle, optionally with
 *                                                   per-cell class colours and numbers */
#pragma once

#include "espalier-chart-layer.h"
#include "espalier-series.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_LINE_LAYER (espalier_line_layer_get_type ())
G_DECLARE_FINAL_TYPE (EspalierLineLayer, espalier_line_layer, ESPALIER, LINE_LAYER, EspalierChartLayer)
/* Property "series" (EspalierSeries), "line-width" (double, 2), "dashed" (gboolean). */
EspalierChartLayer *espalier_line_layer_new          (EspalierSeries *series);
EspalierSeries     *espalier_line_layer_get_series   (EspalierLineLayer *self);
void                espalier_line_layer_set_dashed   (EspalierLineLayer *self,
                                                      gboolean           dashed);

#define ESPALIER_TYPE_SCATTER_LAYER (espalier_scatter_layer_get_type ())
G_DECLARE_FINAL_TYPE (EspalierScatterLayer, espalier_scatter_layer, ESPALIER, SCATTER_LAYER, EspalierChartLayer)
/* Property "series", "radius" (double, 3 pixels). Points with a class take palette
 * colour k; without, the layer colour. "labels" (strv): a readout name per point,
 * optional (variant names on the Optimize chart). */
EspalierChartLayer *espalier_scatter_layer_new        (EspalierSeries *series);
EspalierSeries     *espalier_scatter_layer_get_series (EspalierScatterLayer *self);
void                espalier_scatter_layer_set_radius (EspalierScatterLayer *self,
                                                       double                radius);
void                espalier_scatter_layer_set_labels (EspalierScatterLayer *self,
                                                       const char * const   *labels);
/* Class names (NULL-terminated) for the legend (one entry per class) and readout. */
void                espalier_scatter_layer_set_class_names (EspalierScatterLayer *self,
                                                       const char * const   *names);
const char * const *espalier_scatter_layer_get_class_names (EspalierScatterLayer *self);

#define ESPALIER_TYPE_BARS_LAYER (espalier_bars_layer_get_type ())
G_DECLARE_FINAL_TYPE (EspalierBarsLayer, espalier_bars_layer, ESPALIER, BARS_LAYER, EspalierChartLayer)
/* n bars at x = 0..n-1 with heights values[i] and labels (may be NULL) drawn under the
 * axis; bars coloured by palette when "per-bar-colors" is TRUE. */
EspalierChartLayer *espalier_bars_layer_new          (void);
void                espalier_bars_layer_set_values   (EspalierBarsLayer   *self,
                                                      const double        *values,
                                                      const char * const  *labels,
                                                      guint                n);
void                espalier_bars_layer_set_per_bar_colors (EspalierBarsLayer *self,
                                                      gboolean             per_bar);
/* Stacked bars: the same, bar i rising from bases[i] (NULL: from zero) to bases[i] +
 * values[i]. A stack is one layer per part (its title and colour in the legend), each
 * part's bases the sum of the parts below; stacked parts print no values, and the
 * readout names the part ("step 3 · Forward: 1.2"). */
void                espalier_bars_layer_set_stacked  (EspalierBarsLayer   *self,
                                                      const double        *values,
                                                      const double        *bases,
                                                      const char * const  *labels,
                                                      guint                n);

#define ESPALIER_TYPE_HEATMAP_LAYER (espalier_heatmap_layer_get_type ())
G_DECLARE_FINAL_TYPE (EspalierHeatmapLayer, espalier_heatmap_layer, ESPALIER, HEATMAP_LAYER, EspalierChartLayer)
/* values: (rows, cols), row 0 at y_max (top), drawn over the data rectangle
 * [x_min, x_max] x [y_min, y_max]. Colour: with classes (rows*cols class indices), the
 * palette colour of the class at an intensity from the value (0..1: confidence, for
 * decision boundaries); without, a sequential colour map from value_min to value_max
 * (confusion matrices). "show-values": print each cell's value (integers when whole). */
EspalierChartLayer *espalier_heatmap_layer_new        (void);
void                espalier_heatmap_layer_set_data   (EspalierHeatmapLayer *self,
                                                       const double         *values,
                                                       const guint          *classes,
                                                       guint                 rows,
                                                       guint                 cols,
                                                       double                x_min,
                                                       double                x_max,
                                                       double                y_min,
                                                       double                y_max);
void                espalier_heatmap_layer_set_show_values (EspalierHeatmapLayer *self,
                                                       gboolean              show);
/* Row and column labels (confusion matrix: class names), drawn by the chart on the
 * axes when the axes are not numeric. May be NULL. */
void                espalier_heatmap_layer_set_labels (EspalierHeatmapLayer *self,
                                                       const char * const   *row_labels,
                                                       const char * const   *col_labels);

G_END_DECLS
