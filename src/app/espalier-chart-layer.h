/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-chart-layer.h: the base class of what an EspalierChart draws (line, scatter,
 * bars, heat map): a layer has a title for the legend, a colour and its data, reports
 * its extents in data units, draws itself with cairo into the plot area through the
 * chart's axes, and answers "what is under this point" for the hover readout. */
#pragma once

#include <gtk/gtk.h>

#include "espalier-chart-axis.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_CHART_LAYER (espalier_chart_layer_get_type ())
G_DECLARE_DERIVABLE_TYPE (EspalierChartLayer, espalier_chart_layer, ESPALIER, CHART_LAYER, GObject)

struct _EspalierChartLayerClass
{
  GObjectClass parent_class;

  /* Data extents; FALSE when there is nothing to draw. */
  gboolean (*get_extents) (EspalierChartLayer *self,
                           double *x_min, double *x_max,
                           double *y_min, double *y_max);
  /* Draw into area (pixels, the plot rectangle). Map data through
   * espalier_chart_layer_map (x to area width, y to area height, y up). */
  void     (*draw)        (EspalierChartLayer     *self,
                           cairo_t                *cr,
                           const graphene_rect_t  *area,
                           EspalierChartAxis      *x_axis,
                           EspalierChartAxis      *y_axis);
  /* (optional) A readout for the nearest item to pixel (px, py) within `radius`
   * pixels ("epoch 3: loss 0.412"), or NULL. */
  char    *(*describe_at) (EspalierChartLayer     *self,
                           const graphene_rect_t  *area,
                           EspalierChartAxis      *x_axis,
                           EspalierChartAxis      *y_axis,
                           double                  px,
                           double                  py,
                           double                  radius);

  /* (optional) Category labels that replace the numeric ticks of one axis (x for
   * GTK_ORIENTATION_HORIZONTAL): bar names, a confusion matrix's classes. Appends data
   * positions (double) and labels (borrowed const char *, valid until the next change)
   * and returns how many it added. */
  guint    (*get_axis_labels) (EspalierChartLayer *self,
                               GtkOrientation      orientation,
                               GArray             *positions,
                               GPtrArray          *labels);
  /* (optional) TRUE when an auto axis should end exactly at this layer's extents
   * (bars across x, heat map cells) instead of at rounded values. */
  gboolean (*is_tight)        (EspalierChartLayer *self,
                               GtkOrientation      orientation);

  gpointer padding[2];
};

/* Properties: "title" (string), "color" (GdkRGBA), "visible" (gboolean, TRUE),
 * "show-in-legend" (gboolean, TRUE). Signal "changed": the chart redraws. Subclasses
 * call espalier_chart_layer_changed when their data changes. */

const char    *espalier_chart_layer_get_title   (EspalierChartLayer *self);
void           espalier_chart_layer_set_title   (EspalierChartLayer *self,
                                                 const char         *title);
const GdkRGBA *espalier_chart_layer_get_color   (EspalierChartLayer *self);
void           espalier_chart_layer_set_color   (EspalierChartLayer *self,
                                                 const GdkRGBA      *color);
/* The colour used while none was set with set_color (the chart gives each layer a
 * palette colour by its position). */
void           espalier_chart_layer_set_default_color (EspalierChartLayer *self,
                                                 const GdkRGBA      *color);
gboolean       espalier_chart_layer_get_visible (EspalierChartLayer *self);
void           espalier_chart_layer_set_visible (EspalierChartLayer *self,
                                                 gboolean            visible);
void           espalier_chart_layer_changed     (EspalierChartLayer *self);
/* Data point -> pixel in area, through the axes. */
void           espalier_chart_layer_map         (const graphene_rect_t *area,
                                                 EspalierChartAxis     *x_axis,
                                                 EspalierChartAxis     *y_axis,
                                                 double                 x,
                                                 double                 y,
                                                 double                *px,
                                                 double                *py);
gboolean       espalier_chart_layer_get_show_in_legend (EspalierChartLayer *self);
void           espalier_chart_layer_set_show_in_legend (EspalierChartLayer *self,
                                                 gboolean            show);
/* Text and colours for layers: the chart calls set_cairo_style on the cairo context
 * before layers draw (its font and its foreground and background colours);
 * create_layout makes a layout in that font (a default one when none was set),
 * get_cairo_fg and get_cairo_bg give the colours (black on white when none were set). */
void           espalier_chart_layer_set_cairo_style (cairo_t             *cr,
                                                 PangoContext          *context,
                                                 const GdkRGBA         *fg,
                                                 const GdkRGBA         *bg);
PangoLayout   *espalier_chart_layer_create_layout (cairo_t            *cr,
                                                 const char         *text);
void           espalier_chart_layer_get_cairo_fg (cairo_t             *cr,
                                                 GdkRGBA             *fg);
void           espalier_chart_layer_get_cairo_bg (cairo_t             *cr,
                                                 GdkRGBA             *bg);
/* Colour k of the chart palette (class colours, series colours). */
void           espalier_chart_palette_color     (guint               k,
                                                 GdkRGBA            *color);

G_END_DECLS
