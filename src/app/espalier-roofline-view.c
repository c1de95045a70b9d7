/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-roofline-view.c: see espalier-roofline-view.h. An EspalierChart with two
 * logarithmic axes: two dashed line layers for the roof (the bandwidth slope from the
 * left edge to the ridge point, the peak from the ridge to the right edge) and a scatter
 * layer of the layers, classed compute-bound (palette 0) or memory-bound (palette 1)
 * and labelled. The axes are fixed to the roof and the points with a margin, so that
 * the ridge point is always in view. */
#include "config.h"

#include <math.h>
#include <glib/gi18n.h>

#include "espalier-chart-layers.h"
#include "espalier-layer-time-table.h"
#include "espalier-roofline-view.h"

/* Points along each ceiling: more than the line layer puts markers on. */
#define ROOF_POINTS 64

/* Point classes: their palette colours and legend order. */
enum { CLASS_COMPUTE = 0, CLASS_MEMORY = 1 };

struct _EspalierRooflineView
{
  AdwBin              parent_instance;

  EspalierChart      *chart;
  EspalierSeries     *points;
  EspalierSeries     *slope;
  EspalierSeries     *peak;
  EspalierChartLayer *points_layer;
  EspalierChartLayer *slope_layer;
  EspalierChartLayer *peak_layer;
  gboolean            has_roof;
};

G_DEFINE_FINAL_TYPE (EspalierRooflineView, espalier_roofline_view, ADW_TYPE_BIN)

GtkWidget *
espalier_roofline_view_new (void)
{
  return g_object_new (ESPALIER_TYPE_ROOFLINE_VIEW, NULL);
}

static gboolean
layer_is_drawn (const EspalierLayerTime *l)
{
  return l->gflops > 0 && l->intensity > 0 && isfinite (l->gflops) && isfinite (l->intensity);
}

void
espalier_roofline_view_set_summary (EspalierRooflineView         *self,
                                    const EspalierProfileSummary *summary)
{
  g_autoptr(GArray) xs = g_array_new (FALSE, FALSE, sizeof (double));
  g_autoptr(GArray) ys = g_array_new (FALSE, FALSE, sizeof (double));
  g_autoptr(GArray) classes = g_array_new (FALSE, FALSE, sizeof (guint));
  g_autoptr(GStrvBuilder) names = g_strv_builder_new ();
  g_auto(GStrv) labels = NULL;
  EspalierChartAxis *x_axis = espalier_chart_get_x_axis (self->chart);
  EspalierChartAxis *y_axis = espalier_chart_get_y_axis (self->chart);
  double x_min = INFINITY, x_max = 0, y_min = INFINITY, y_max = 0;
  double bw = 0, peak = 0;

  g_return_if_fail (ESPALIER_IS_ROOFLINE_VIEW (self));

  self->has_roof = summary != NULL && summary->have_ceilings
                   && summary->ceilings.gemm_gflops > 0 && summary->ceilings.copy_gbs > 0;
  if (self->has_roof)
    {
      peak = summary->ceilings.gemm_gflops;
      bw = summary->ceilings.copy_gbs;
    }

  for (guint i = 0; summary != NULL && i < summary->n_layers; i++)
    {
      const EspalierLayerTime *l = &summary->layers[i];
      guint klass = l->memory_bound ? CLASS_MEMORY : CLASS_COMPUTE;

      if (!layer_is_drawn (l))
        continue;
      g_array_append_val (xs, l->intensity);
      g_array_append_val (ys, l->gflops);
      g_array_append_val (classes, klass);
      {
        g_autofree char *name = espalier_layer_time_name (l);

        g_strv_builder_add (names, name);
      }
      x_min = MIN (x_min, l->intensity);
      x_max = MAX (x_max, l->intensity);
      y_min = MIN (y_min, l->gflops);
      y_max = MAX (y_max, l->gflops);
    }
  labels = g_strv_builder_end (names);
  espalier_series_set_data (self->points, (const double *) (gpointer) xs->data,
                            (const double *) (gpointer) ys->data,
                            self->has_roof ? (const guint *) (gpointer) classes->data : NULL,
                            xs->len);
  espalier_scatter_layer_set_labels (ESPALIER_SCATTER_LAYER (self->points_layer),
                                     (const char * const *) labels);
  espalier_scatter_layer_set_class_names (ESPALIER_SCATTER_LAYER (self->points_layer),
                                          self->has_roof ? (const char * const []) {
                                            _("Compute-bound"), _("Memory-bound"), NULL }
                                          : NULL);

  if (!self->has_roof)
    {
      espalier_series_clear (self->slope);
      espalier_series_clear (self->peak);
      espalier_chart_axis_set_auto_range (x_axis, TRUE);
      espalier_chart_axis_set_auto_range (y_axis, TRUE);
      return;
    }

  {
    double ridge = peak / bw;      /* FLOP per byte where the two ceilings meet */
    double lo, hi, bottom, top, x_start;
    double sx[ROOF_POINTS], sy[ROOF_POINTS], hx[ROOF_POINTS], hy[ROOF_POINTS];
    g_autofree char *slope_title = NULL, *peak_title = NULL;

    if (xs->len == 0)
      {
        x_min = x_max = ridge;
        y_min = y_max = peak / 10;
      }
    /* Room around the points and the ridge; the slope starts where it enters the plot. */
    lo = MIN (x_min, ridge) / 3;
    hi = MAX (x_max, ridge) * 3;
    bottom = y_min / 3;
    top = MAX (peak, y_max) * 2.5;
    x_start = MAX (lo, bottom / bw);

    /* Enough points that the line layer draws a plain line, no markers. */
    for (guint i = 0; i < ROOF_POINTS; i++)
      {
        double t = (double) i / (ROOF_POINTS - 1);

        sx[i] = x_start * pow (ridge / x_start, t);
        sy[i] = sx[i] * bw;
        hx[i] = ridge * pow (hi / ridge, t);
        hy[i] = peak;
      }
    espalier_series_set_data (self->slope, sx, sy, NULL, ROOF_POINTS);
    espalier_series_set_data (self->peak, hx, hy, NULL, ROOF_POINTS);
    /* TRANSLATORS: roofline legend: the measured copy bandwidth */
    slope_title = g_strdup_printf (_("Memory %.3g GB/s"), bw);
    /* TRANSLATORS: roofline legend: the measured peak of the matrix product */
    peak_title = g_strdup_printf (_("Peak %.3g GFLOP/s"), peak);
    espalier_chart_layer_set_title (self->slope_layer, slope_title);
    espalier_chart_layer_set_title (self->peak_layer, peak_title);
    espalier_chart_axis_set_range (x_axis, lo, hi);
    espalier_chart_axis_set_range (y_axis, bottom, top);
  }
}

guint
espalier_roofline_view_get_n_points (EspalierRooflineView *self)
{
  g_return_val_if_fail (ESPALIER_IS_ROOFLINE_VIEW (self), 0);
  return espalier_series_get_n_points (self->points);
}

gboolean
espalier_roofline_view_has_roof (EspalierRooflineView *self)
{
  g_return_val_if_fail (ESPALIER_IS_ROOFLINE_VIEW (self), FALSE);
  return self->has_roof;
}

EspalierChart *
espalier_roofline_view_get_chart (EspalierRooflineView *self)
{
  g_return_val_if_fail (ESPALIER_IS_ROOFLINE_VIEW (self), NULL);
  return self->chart;
}

static void
espalier_roofline_view_dispose (GObject *object)
{
  EspalierRooflineView *self = ESPALIER_ROOFLINE_VIEW (object);

  adw_bin_set_child (ADW_BIN (self), NULL);
  g_clear_object (&self->points_layer);
  g_clear_object (&self->slope_layer);
  g_clear_object (&self->peak_layer);
  g_clear_object (&self->points);
  g_clear_object (&self->slope);
  g_clear_object (&self->peak);
  G_OBJECT_CLASS (espalier_roofline_view_parent_class)->dispose (object);
}

static void
espalier_roofline_view_class_init (EspalierRooflineViewClass *klass)
{
  G_OBJECT_CLASS (klass)->dispose = espalier_roofline_view_dispose;
}

static void
espalier_roofline_view_init (EspalierRooflineView *self)
{
  EspalierChartAxis *x_axis, *y_axis;
  GdkRGBA color;

  self->chart = ESPALIER_CHART (espalier_chart_new ());
  gtk_widget_set_size_request (GTK_WIDGET (self->chart), -1, 340);
  gtk_widget_set_vexpand (GTK_WIDGET (self->chart), TRUE);
  espalier_chart_set_title (self->chart, _("Roofline"));
  espalier_chart_set_empty_text (self->chart, _("Profile the model to place its layers"));
  x_axis = espalier_chart_get_x_axis (self->chart);
  y_axis = espalier_chart_get_y_axis (self->chart);
  /* TRANSLATORS: roofline axes: arithmetic intensity, achieved rate */
  espalier_chart_axis_set_title (x_axis, _("FLOP/byte"));
  espalier_chart_axis_set_title (y_axis, _("GFLOP/s"));
  espalier_chart_axis_set_logarithmic (x_axis, TRUE);
  espalier_chart_axis_set_logarithmic (y_axis, TRUE);

  self->slope = espalier_series_new (NULL);
  self->peak = espalier_series_new (NULL);
  self->points = espalier_series_new (NULL);

  self->slope_layer = espalier_line_layer_new (self->slope);
  espalier_line_layer_set_dashed (ESPALIER_LINE_LAYER (self->slope_layer), TRUE);
  espalier_chart_palette_color (9, &color);
  espalier_chart_layer_set_color (self->slope_layer, &color);
  self->peak_layer = espalier_line_layer_new (self->peak);
  espalier_line_layer_set_dashed (ESPALIER_LINE_LAYER (self->peak_layer), TRUE);
  espalier_chart_palette_color (3, &color);
  espalier_chart_layer_set_color (self->peak_layer, &color);
  self->points_layer = espalier_scatter_layer_new (self->points);
  espalier_chart_layer_set_title (self->points_layer, _("Layers"));
  espalier_scatter_layer_set_radius (ESPALIER_SCATTER_LAYER (self->points_layer), 5);

  espalier_chart_add_layer (self->chart, self->slope_layer);
  espalier_chart_add_layer (self->chart, self->peak_layer);
  espalier_chart_add_layer (self->chart, self->points_layer);
  adw_bin_set_child (ADW_BIN (self), GTK_WIDGET (self->chart));
}
