/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-chart-layer-private.h: what the layer classes share beyond the public
 * EspalierChartLayer API (implemented in espalier-chart-layer.c): following the
 * EspalierSeries a layer draws, the point nearest to the pointer and the axis names for
 * a readout, and whether cairo draws to a vector target. For the layer .c files only;
 * the chart and the pages do not use it. */
#pragma once

#include "espalier-chart-layer.h"
#include "espalier-series.h"

G_BEGIN_DECLS

/* Point *slot at series (may be NULL), redrawing the layer whenever it changes; while
 * the layer has no title it takes the series'. Returns FALSE, doing nothing, when *slot
 * already is series. The caller notifies its property and calls
 * espalier_chart_layer_changed; dispose passes NULL. */
gboolean    espalier_chart_layer_set_series_slot   (EspalierChartLayer    *self,
                                                    EspalierSeries       **slot,
                                                    EspalierSeries        *series);
/* The index of the point of series nearest to pixel (px, py) and at most `radius`
 * pixels from it, or G_MAXUINT (no series, no points, none near). */
guint       espalier_chart_layer_nearest_point     (const graphene_rect_t *area,
                                                    EspalierChartAxis     *x_axis,
                                                    EspalierChartAxis     *y_axis,
                                                    EspalierSeries        *series,
                                                    double                 px,
                                                    double                 py,
                                                    double                 radius);
/* The axis title for a readout, or fallback when it has none. */
const char *espalier_chart_layer_axis_name         (EspalierChartAxis     *axis,
                                                    const char            *fallback);
/* TRUE when cr draws to PDF, PostScript or SVG (real paths beat pixel tricks there). */
gboolean    espalier_chart_layer_target_is_vector  (cairo_t               *cr);

G_END_DECLS
