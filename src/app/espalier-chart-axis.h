/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-chart-axis.h: maps data values to 0..1 (Sysprof's axis idea): layers draw in
 * normalized units and the chart turns them into pixels. A range is fixed or follows the
 * data of the chart's layers (with nice rounded ends); ticks are 1-2-5 steps with labels.
 * Linear or logarithmic (log10; for latency and sizes). */
#pragma once

#include <glib-object.h>

G_BEGIN_DECLS

#define ESPALIER_TYPE_CHART_AXIS (espalier_chart_axis_get_type ())
G_DECLARE_FINAL_TYPE (EspalierChartAxis, espalier_chart_axis, ESPALIER, CHART_AXIS, GObject)

/* Properties: "title" (string), "min", "max" (double), "auto-range" (gboolean, TRUE),
 * "logarithmic" (gboolean), "include-zero" (gboolean: auto range reaches 0).
 * Signal "changed" when the range or scale changes. */

EspalierChartAxis *espalier_chart_axis_new          (const char        *title);
const char        *espalier_chart_axis_get_title    (EspalierChartAxis *self);
void               espalier_chart_axis_set_title    (EspalierChartAxis *self,
                                                     const char        *title);
/* A fixed range; turns auto-range off. */
void               espalier_chart_axis_set_range    (EspalierChartAxis *self,
                                                     double             min,
                                                     double             max);
void               espalier_chart_axis_get_range    (EspalierChartAxis *self,
                                                     double            *min,
                                                     double            *max);
void               espalier_chart_axis_set_auto_range (EspalierChartAxis *self,
                                                     gboolean           auto_range);
gboolean           espalier_chart_axis_get_auto_range (EspalierChartAxis *self);
void               espalier_chart_axis_set_logarithmic (EspalierChartAxis *self,
                                                     gboolean           logarithmic);
void               espalier_chart_axis_set_include_zero (EspalierChartAxis *self,
                                                     gboolean           include_zero);
/* Fit an auto range around [lo, hi] (called by the chart with the layers' extents). */
void               espalier_chart_axis_fit          (EspalierChartAxis *self,
                                                     double             lo,
                                                     double             hi);
/* Fit an auto range to exactly [lo, hi], without rounding the ends (category axes: bars
 * and heat map cells end at the plot's edges). */
void               espalier_chart_axis_fit_exact    (EspalierChartAxis *self,
                                                     double             lo,
                                                     double             hi);
gboolean           espalier_chart_axis_get_logarithmic (EspalierChartAxis *self);
/* Ticks at whole numbers only (epochs, counts): a range of 1..2 gets 1 and 2, not 1.2,
 * 1.4 ... The data may still fall between them. */
void               espalier_chart_axis_set_integer_ticks (EspalierChartAxis *self,
                                                     gboolean           integer_ticks);
/* value -> 0..1 across the range (outside the range: outside 0..1); and back. */
double             espalier_chart_axis_normalize    (EspalierChartAxis *self,
                                                     double             value);
double             espalier_chart_axis_denormalize  (EspalierChartAxis *self,
                                                     double             fraction);
/* Tick values within the range, about max_ticks of them, at 1-2-5 steps (powers of ten
 * for log axes). (element-type double) (transfer full) */
GArray            *espalier_chart_axis_get_ticks    (EspalierChartAxis *self,
                                                     guint              max_ticks);
/* A tick label: "0.25", "1.5k", "2M", "1e-05", formatted for the tick step. */
char              *espalier_chart_axis_format       (EspalierChartAxis *self,
                                                     double             value);

G_END_DECLS
