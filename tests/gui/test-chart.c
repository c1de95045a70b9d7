/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-chart.c: the chart widgets: axis normalization, ticks and labels; auto ranges;
 * data mapped to the expected pixels (through the plot area and in rendered images);
 * redraws after a series change; hover readouts; heat map cells; saving PNG, SVG and
 * PDF; the empty state; no leaks. Screenshots of a gallery of charts, light and dark.
 * It does not test timing (bench/bench-chart.c does). */

#include "config.h"

#include <math.h>
#include <glib/gstdio.h>

#include "espalier-chart.h"
#include "espalier-chart-layers.h"
#include "gui-test-util.h"

/* The step between ticks is 1, 2 or 5 times a power of ten. */
static gboolean
is_nice_step (double step)
{
  double mag = pow (10.0, floor (log10 (step) + 1e-9));
  double norm = step / mag;

  return fabs (norm - 1) < 1e-6 || fabs (norm - 2) < 1e-6 || fabs (norm - 5) < 1e-6;
}

static void
test_axis_normalize (void)
{
  g_autoptr(EspalierChartAxis) axis = espalier_chart_axis_new ("epoch");
  double min, max;

  espalier_chart_axis_set_range (axis, 0, 10);
  g_assert_false (espalier_chart_axis_get_auto_range (axis));
  espalier_chart_axis_get_range (axis, &min, &max);
  g_assert_cmpfloat (min, ==, 0);
  g_assert_cmpfloat (max, ==, 10);
  g_assert_cmpfloat_with_epsilon (espalier_chart_axis_normalize (axis, 2.5), 0.25, 1e-12);
  g_assert_cmpfloat_with_epsilon (espalier_chart_axis_normalize (axis, 12), 1.2, 1e-12);
  g_assert_cmpfloat_with_epsilon (espalier_chart_axis_denormalize (axis, 0.25), 2.5, 1e-12);

  /* A fixed range ignores fits. */
  espalier_chart_axis_fit (axis, -100, 100);
  espalier_chart_axis_get_range (axis, &min, &max);
  g_assert_cmpfloat (max, ==, 10);

  espalier_chart_axis_set_range (axis, 1, 1000);
  espalier_chart_axis_set_logarithmic (axis, TRUE);
  g_assert_cmpfloat_with_epsilon (espalier_chart_axis_normalize (axis, 10), 1.0 / 3, 1e-12);
  g_assert_cmpfloat_with_epsilon (espalier_chart_axis_denormalize (axis, 2.0 / 3), 100, 1e-9);
  g_assert_true (isnan (espalier_chart_axis_normalize (axis, 0)));
}

static void
test_axis_ticks (void)
{
  static const double ranges[][2] = {
    { 0, 1 }, { -3.7, 12.2 }, { 0.001, 0.0047 }, { 1e6, 7.3e6 }, { -1, 1 },
    { 2.5, 2.6 }, { 0, 10000 }, { 99, 101 },
  };
  g_autoptr(EspalierChartAxis) axis = espalier_chart_axis_new (NULL);

  for (guint r = 0; r < G_N_ELEMENTS (ranges); r++)
    for (guint max_ticks = 2; max_ticks <= 12; max_ticks++)
      {
        g_autoptr(GArray) ticks = NULL;

        espalier_chart_axis_set_range (axis, ranges[r][0], ranges[r][1]);
        ticks = espalier_chart_axis_get_ticks (axis, max_ticks);
        g_assert_cmpuint (ticks->len, >=, 1);
        g_assert_cmpuint (ticks->len, <=, max_ticks);
        for (guint i = 0; i < ticks->len; i++)
          {
            double v = g_array_index (ticks, double, i);
            double eps = (ranges[r][1] - ranges[r][0]) * 1e-9;

            g_assert_cmpfloat (v, >=, ranges[r][0] - eps);
            g_assert_cmpfloat (v, <=, ranges[r][1] + eps);
            if (i > 0)
              {
                double step = v - g_array_index (ticks, double, i - 1);
                double first = g_array_index (ticks, double, 1) - g_array_index (ticks, double, 0);

                g_assert_true (is_nice_step (step));
                g_assert_cmpfloat_with_epsilon (step, first, first * 1e-6);
              }
          }
      }

  /* A usual case, exactly. */
  {
    g_autoptr(GArray) ticks = NULL;
    g_autofree char *label = NULL;

    espalier_chart_axis_set_range (axis, 0, 1);
    ticks = espalier_chart_axis_get_ticks (axis, 6);
    g_assert_cmpuint (ticks->len, ==, 6);
    g_assert_cmpfloat_with_epsilon (g_array_index (ticks, double, 2), 0.4, 1e-12);

    g_array_unref (ticks);
    ticks = espalier_chart_axis_get_ticks (axis, 11);
    label = espalier_chart_axis_format (axis, 0.25);
    g_assert_cmpstr (label, ==, "0.25");
  }

  /* Integer ticks (epochs): whole numbers only, labelled without decimals; wide
   * ranges still thin to 1-2-5 steps. */
  {
    static const double iranges[][2] = { { 1, 2 }, { 0.5, 3.5 }, { 1, 7 }, { 0, 120 } };

    espalier_chart_axis_set_integer_ticks (axis, TRUE);
    for (guint r = 0; r < G_N_ELEMENTS (iranges); r++)
      for (guint max_ticks = 2; max_ticks <= 12; max_ticks++)
        {
          g_autoptr(GArray) ticks = NULL;

          espalier_chart_axis_set_range (axis, iranges[r][0], iranges[r][1]);
          ticks = espalier_chart_axis_get_ticks (axis, max_ticks);
          g_assert_cmpuint (ticks->len, >=, 1);
          g_assert_cmpuint (ticks->len, <=, max_ticks);
          for (guint i = 0; i < ticks->len; i++)
            {
              double v = g_array_index (ticks, double, i);
              g_autofree char *label = espalier_chart_axis_format (axis, v);
              g_autofree char *whole = g_strdup_printf ("%.0f", v);

              g_assert_cmpfloat (v, ==, round (v));
              if (fabs (v) < 1000)
                g_assert_cmpstr (label, ==, whole);
            }
          /* the range 1..2 at any density: 1 and 2 and nothing between */
          if (r == 0)
            g_assert_cmpuint (ticks->len, ==, 2);
        }
    espalier_chart_axis_set_integer_ticks (axis, FALSE);
  }

  /* Big values get a suffix. */
  {
    g_autoptr(GArray) ticks = NULL;
    g_autofree char *label = NULL;

    espalier_chart_axis_set_range (axis, 0, 5e6);
    ticks = espalier_chart_axis_get_ticks (axis, 6);
    label = espalier_chart_axis_format (axis, 2e6);
    g_assert_cmpstr (label, ==, "2M");
  }

  /* Log axes: powers of ten, thinned when there are many. */
  {
    g_autoptr(GArray) ticks = NULL;
    g_autofree char *label = NULL;

    espalier_chart_axis_set_logarithmic (axis, TRUE);
    espalier_chart_axis_set_range (axis, 1, 1e4);
    ticks = espalier_chart_axis_get_ticks (axis, 8);
    g_assert_cmpuint (ticks->len, ==, 5);
    for (guint i = 0; i < ticks->len; i++)
      g_assert_cmpfloat_with_epsilon (g_array_index (ticks, double, i), pow (10, i), 1e-9 * pow (10, i));
    label = espalier_chart_axis_format (axis, 1e3);
    g_assert_cmpstr (label, ==, "1k");

    g_array_unref (ticks);
    espalier_chart_axis_set_range (axis, 1e-6, 1e6);
    ticks = espalier_chart_axis_get_ticks (axis, 5);
    g_assert_cmpuint (ticks->len, <=, 5);
    g_assert_cmpuint (ticks->len, >=, 2);
    for (guint i = 0; i < ticks->len; i++)
      {
        double e = log10 (g_array_index (ticks, double, i));
        g_assert_cmpfloat_with_epsilon (e, round (e), 1e-9);
      }
  }
}

static void
test_axis_fit (void)
{
  g_autoptr(EspalierChartAxis) axis = espalier_chart_axis_new (NULL);
  double min, max;

  espalier_chart_axis_fit (axis, 0.13, 0.91);
  espalier_chart_axis_get_range (axis, &min, &max);
  g_assert_cmpfloat (min, <=, 0.13);
  g_assert_cmpfloat (max, >=, 0.91);
  g_assert_cmpfloat_with_epsilon (min, 0.0, 1e-12);
  g_assert_cmpfloat_with_epsilon (max, 1.0, 1e-12);

  espalier_chart_axis_set_include_zero (axis, TRUE);
  espalier_chart_axis_fit (axis, 3.2, 47.9);
  espalier_chart_axis_get_range (axis, &min, &max);
  g_assert_cmpfloat (min, ==, 0);
  g_assert_cmpfloat (max, ==, 50);

  /* One value still gets a range around it. */
  espalier_chart_axis_set_include_zero (axis, FALSE);
  espalier_chart_axis_fit (axis, 5, 5);
  espalier_chart_axis_get_range (axis, &min, &max);
  g_assert_cmpfloat (min, <, 5);
  g_assert_cmpfloat (max, >, 5);

  espalier_chart_axis_set_logarithmic (axis, TRUE);
  espalier_chart_axis_fit (axis, 0.03, 470);
  espalier_chart_axis_get_range (axis, &min, &max);
  g_assert_cmpfloat_with_epsilon (min, 0.01, 1e-12);
  g_assert_cmpfloat_with_epsilon (max, 1000, 1e-9);
}

static EspalierSeries *
make_loss_series (void)
{
  EspalierSeries *series = espalier_series_new ("loss");

  for (guint i = 0; i < 50; i++)
    espalier_series_append (series, i, 2.0 * exp (-(double) i / 12.0) + 0.1 + 0.03 * sin (i));
  return series;
}

static void
count_change (guint *count)
{
  (*count)++;
}

static void
test_series (void)
{
  g_autoptr(EspalierSeries) series = espalier_series_new ("s");
  double x0, x1, y0, y1;
  guint changes = 0;

  g_assert_false (espalier_series_get_extents (series, &x0, &x1, &y0, &y1));
  g_assert_null (espalier_series_get_class (series));
  espalier_series_append (series, 1, 5);
  espalier_series_append (series, NAN, 7);
  espalier_series_append (series, -2, 3);
  g_assert_cmpuint (espalier_series_get_n_points (series), ==, 3);
  g_assert_true (espalier_series_get_extents (series, &x0, &x1, &y0, &y1));
  g_assert_cmpfloat (x0, ==, -2);
  g_assert_cmpfloat (x1, ==, 1);
  g_assert_cmpfloat (y0, ==, 3);
  g_assert_cmpfloat (y1, ==, 5);

  espalier_series_append_class (series, 4, 4, 2);
  g_assert_nonnull (espalier_series_get_class (series));
  g_assert_cmpuint (espalier_series_get_class (series)[3], ==, 2);
  g_assert_cmpuint (espalier_series_get_class (series)[0], ==, G_MAXUINT);

  {
    double xs[] = { 10, 20 }, ys[] = { -1, 1 };

    g_signal_connect_swapped (series, "changed", G_CALLBACK (count_change), &changes);
    espalier_series_set_data (series, xs, ys, NULL, 2);
    g_assert_cmpuint (changes, ==, 1);
    g_assert_null (espalier_series_get_class (series));
    g_assert_true (espalier_series_get_extents (series, &x0, &x1, &y0, &y1));
    g_assert_cmpfloat (x0, ==, 10);
    g_assert_cmpfloat (y1, ==, 1);
  }
  espalier_series_clear (series);
  g_assert_cmpuint (espalier_series_get_n_points (series), ==, 0);
  g_assert_false (espalier_series_get_extents (series, NULL, NULL, NULL, NULL));
}

/* Read one pixel (premultiplied ARGB32) as 0..1 channels. */
static void
surface_pixel (cairo_surface_t *surface,
               int              x,
               int              y,
               double          *r,
               double          *g,
               double          *b,
               double          *a)
{
  const guchar *data;
  guint32 p;

  cairo_surface_flush (surface);
  data = cairo_image_surface_get_data (surface);
  p = *(const guint32 *) (gconstpointer) (data + y * cairo_image_surface_get_stride (surface) + x * 4);
  *a = ((p >> 24) & 0xff) / 255.0;
  *r = ((p >> 16) & 0xff) / 255.0;
  *g = ((p >> 8) & 0xff) / 255.0;
  *b = (p & 0xff) / 255.0;
}

static void
test_auto_range_and_pixels (void)
{
  g_autoptr(EspalierSeries) series = make_loss_series ();
  g_autoptr(EspalierSeries) points = espalier_series_new ("points");
  g_autoptr(EspalierChartLayer) line = espalier_line_layer_new (series);
  g_autoptr(EspalierChartLayer) scatter = espalier_scatter_layer_new (points);
  EspalierChart *chart = ESPALIER_CHART (espalier_chart_new ());
  cairo_surface_t *surface;
  graphene_rect_t area;
  double min, max, px, py, r, g, b, a;
  cairo_t *cr;

  g_object_ref_sink (chart);
  espalier_chart_add_layer (chart, line);
  espalier_chart_get_plot_area (chart, 600, 400, &area);
  g_assert_cmpfloat (area.size.width, >, 400);
  g_assert_cmpfloat (area.size.height, >, 250);
  g_assert_cmpfloat (area.origin.x + area.size.width, <=, 600);
  g_assert_cmpfloat (area.origin.y + area.size.height, <=, 400);

  /* The auto range holds all the data, with rounded ends. */
  espalier_chart_axis_get_range (espalier_chart_get_x_axis (chart), &min, &max);
  g_assert_cmpfloat (min, <=, 0);
  g_assert_cmpfloat (max, >=, 49);
  espalier_chart_axis_get_range (espalier_chart_get_y_axis (chart), &min, &max);
  g_assert_cmpfloat (min, <=, 0.1);
  g_assert_cmpfloat (max, >=, 2.1);
  g_assert_cmpfloat (max, <=, 3);

  /* A point in the middle of fixed ranges lands in the middle of the plot. */
  espalier_chart_remove_layer (chart, line);
  espalier_chart_add_layer (chart, scatter);
  espalier_series_append (points, 5, 0.5);
  espalier_chart_axis_set_range (espalier_chart_get_x_axis (chart), 0, 10);
  espalier_chart_axis_set_range (espalier_chart_get_y_axis (chart), 0, 1);
  espalier_chart_get_plot_area (chart, 600, 400, &area);
  espalier_chart_layer_map (&area, espalier_chart_get_x_axis (chart),
                            espalier_chart_get_y_axis (chart), 5, 0.5, &px, &py);
  g_assert_cmpfloat_with_epsilon (px, area.origin.x + area.size.width / 2, 1e-9);
  g_assert_cmpfloat_with_epsilon (py, area.origin.y + area.size.height / 2, 1e-9);
  espalier_chart_layer_map (&area, espalier_chart_get_x_axis (chart),
                            espalier_chart_get_y_axis (chart), 0, 1, &px, &py);
  g_assert_cmpfloat (px, ==, area.origin.x);
  g_assert_cmpfloat (py, ==, area.origin.y);

  /* Square mode keeps the plot square. */
  espalier_chart_set_square (chart, TRUE);
  {
    graphene_rect_t sq;

    espalier_chart_get_plot_area (chart, 600, 400, &sq);
    g_assert_cmpfloat (sq.size.width, ==, sq.size.height);
    g_assert_cmpfloat (sq.size.height, ==, area.size.height);
  }
  espalier_chart_set_square (chart, FALSE);

  /* And is drawn there, in the layer's colour (palette blue, the chart's first). */
  surface = cairo_image_surface_create (CAIRO_FORMAT_ARGB32, 600, 400);
  cr = cairo_create (surface);
  espalier_chart_draw (chart, cr, 600, 400);
  cairo_destroy (cr);
  surface_pixel (surface, (int) (area.origin.x + area.size.width / 2),
                 (int) (area.origin.y + area.size.height / 2), &r, &g, &b, &a);
  g_assert_cmpfloat (a, >, 0.8);
  g_assert_cmpfloat (b, >, r + 0.2);
  surface_pixel (surface, (int) (area.origin.x + area.size.width / 4),
                 (int) (area.origin.y + area.size.height / 4) + 3, &r, &g, &b, &a);
  g_assert_cmpfloat (a, <, 0.3);
  cairo_surface_destroy (surface);

  /* Lines, sparse (a cairo path) and dense (rasterized by columns), cross the middle. */
  espalier_chart_remove_all (chart);
  for (guint dense = 0; dense < 2; dense++)
    {
      g_autoptr(EspalierSeries) flat = espalier_series_new ("flat");
      g_autoptr(EspalierChartLayer) flat_line = espalier_line_layer_new (flat);
      guint n = dense ? 5000 : 11;

      for (guint i = 0; i < n; i++)
        espalier_series_append (flat, 10.0 * i / (n - 1), 0.5);
      espalier_chart_add_layer (chart, flat_line);
      surface = cairo_image_surface_create (CAIRO_FORMAT_ARGB32, 600, 400);
      cr = cairo_create (surface);
      espalier_chart_draw (chart, cr, 600, 400);
      cairo_destroy (cr);
      /* (a point between markers, so the line itself) */
      surface_pixel (surface, (int) (area.origin.x + area.size.width * 0.33),
                     (int) floor (area.origin.y + area.size.height / 2), &r, &g, &b, &a);
      g_assert_cmpfloat (a, >, 0.45);
      g_assert_cmpfloat (b, >, r + 0.2);
      surface_pixel (surface, (int) (area.origin.x + area.size.width * 0.33),
                     (int) (area.origin.y + area.size.height / 2) + 6, &r, &g, &b, &a);
      g_assert_cmpfloat (a, <, 0.3);
      cairo_surface_destroy (surface);
      espalier_chart_remove_layer (chart, flat_line);
    }

  g_object_unref (chart);
}

/* Awkward data draws without crashing: non-finite and huge values, points outside
 * fixed ranges, non-positive values on log axes, one point, dense and sparse. */
static void
test_awkward_data (void)
{
  static const double odd[] = { NAN, INFINITY, -INFINITY, 1e300, -1e300, 0, -3, 5e-320 };
  EspalierChart *chart = ESPALIER_CHART (g_object_ref_sink (espalier_chart_new ()));
  g_autoptr(EspalierSeries) series = espalier_series_new ("odd");
  g_autoptr(EspalierChartLayer) line = espalier_line_layer_new (series);
  g_autoptr(EspalierChartLayer) scatter = espalier_scatter_layer_new (series);
  g_autoptr(EspalierChartLayer) bars = espalier_bars_layer_new ();
  cairo_surface_t *surface = cairo_image_surface_create (CAIRO_FORMAT_ARGB32, 300, 200);

  espalier_chart_add_layer (chart, line);
  espalier_chart_add_layer (chart, scatter);
  espalier_chart_add_layer (chart, bars);
  espalier_bars_layer_set_values (ESPALIER_BARS_LAYER (bars), odd, NULL, G_N_ELEMENTS (odd));
  for (guint round = 0; round < 4; round++)
    {
      espalier_series_clear (series);
      for (guint i = 0; i < (round % 2 ? 3000u : 1u); i++)
        espalier_series_append_class (series, odd[i % G_N_ELEMENTS (odd)] * (i % 3),
                                      odd[(i * 7) % G_N_ELEMENTS (odd)], i % 13);
      espalier_series_append (series, 1, 1);
      espalier_chart_axis_set_logarithmic (espalier_chart_get_y_axis (chart), round >= 2);
      if (round == 3)
        espalier_chart_axis_set_range (espalier_chart_get_x_axis (chart), 0.5, 0.75);

      for (int size = 1; size <= 300; size += 299)
        {
          cairo_t *cr = cairo_create (surface);
          g_autofree char *text = NULL;

          espalier_chart_draw (chart, cr, size, size * 2 / 3 + 1);
          cairo_destroy (cr);
          text = espalier_chart_describe_at (chart, 150, 100);
        }
    }
  cairo_surface_destroy (surface);
  g_object_unref (chart);
}

static gboolean
draw_count_above (gpointer data)
{
  gpointer *args = data;

  return espalier_chart_get_draw_count (args[0]) > GPOINTER_TO_UINT (args[1]);
}

static void
test_redraw_and_readout (void)
{
  g_autoptr(EspalierSeries) series = make_loss_series ();
  EspalierChartLayer *line = espalier_line_layer_new (series);
  GtkWidget *chart = espalier_chart_new ();
  EspalierChartAxis *x_axis = espalier_chart_get_x_axis (ESPALIER_CHART (chart));
  GtkWindow *window;
  graphene_rect_t area;
  guint before;
  double px, py;
  char *text;

  espalier_chart_axis_set_title (x_axis, "epoch");
  espalier_chart_set_title (ESPALIER_CHART (chart), "Loss");
  espalier_chart_add_layer (ESPALIER_CHART (chart), line);
  window = gui_test_window_new (chart, 640, 420);
  g_object_ref (chart);
  gui_test_iterate (50);

  /* Appending queues a redraw. */
  before = espalier_chart_get_draw_count (ESPALIER_CHART (chart));
  g_assert_cmpuint (before, >, 0);
  espalier_series_append (series, 50, 0.2);
  g_assert_true (gui_test_wait_until (draw_count_above,
                                      (gpointer[]) { chart, GUINT_TO_POINTER (before) },
                                      2000));

  /* A readout near a point, nothing far from every point. */
  espalier_chart_get_plot_area (ESPALIER_CHART (chart), gtk_widget_get_width (chart),
                                gtk_widget_get_height (chart), &area);
  espalier_chart_layer_map (&area, x_axis, espalier_chart_get_y_axis (ESPALIER_CHART (chart)),
                            10, espalier_series_get_y (series)[10], &px, &py);
  text = espalier_chart_describe_at (ESPALIER_CHART (chart), px + 2, py - 2);
  g_assert_nonnull (text);
  g_assert_true (g_str_has_prefix (text, "epoch 10: loss "));
  g_free (text);
  text = espalier_chart_describe_at (ESPALIER_CHART (chart), 3, 3);
  g_assert_null (text);

  /* The pointer there draws the readout box. */
  {
    g_autoptr(GListModel) controllers = gtk_widget_observe_controllers (chart);

    for (guint i = 0; i < g_list_model_get_n_items (controllers); i++)
      {
        g_autoptr(GObject) controller = g_list_model_get_item (controllers, i);

        if (GTK_IS_EVENT_CONTROLLER_MOTION (controller))
          g_signal_emit_by_name (controller, "motion", px + 2, py - 2);
      }
    before = espalier_chart_get_draw_count (ESPALIER_CHART (chart));
    g_assert_true (gui_test_wait_until (draw_count_above,
                                        (gpointer[]) { chart, GUINT_TO_POINTER (before) },
                                        2000));
    g_free (gui_test_screenshot (chart, "chart-hover"));
  }

  /* The context menu opens and goes with the chart. */
  g_assert_true (gtk_widget_activate_action (chart, "menu.popup", NULL));
  gui_test_iterate (50);

  gtk_window_destroy (window);
  gui_test_iterate (20);
  g_assert_finalize_object (chart);
  g_assert_finalize_object (line);
}

static void
test_heatmap_cells (void)
{
  /* (rows 2, cols 3): row 0 is the top. */
  static const double values[] = { 0, 1, 9,
                                   2, 3, 4 };
  static const char *rows[] = { "cat", "dog", NULL };
  static const char *cols[] = { "cat", "dog", "fox", NULL };
  EspalierChartLayer *heat = espalier_heatmap_layer_new ();
  EspalierChart *chart = ESPALIER_CHART (espalier_chart_new ());
  cairo_surface_t *surface;
  graphene_rect_t area;
  double cw, ch, r, g, b, a, r0, g0, b0, a0;
  g_autofree char *text = NULL;
  GtkWindow *window;
  cairo_t *cr;

  espalier_heatmap_layer_set_data (ESPALIER_HEATMAP_LAYER (heat), values, NULL, 2, 3,
                                   0, 3, 0, 2);
  espalier_heatmap_layer_set_labels (ESPALIER_HEATMAP_LAYER (heat), rows, cols);
  espalier_chart_axis_set_title (espalier_chart_get_x_axis (chart), "predicted");
  espalier_chart_axis_set_title (espalier_chart_get_y_axis (chart), "true");
  espalier_chart_add_layer (chart, heat);

  espalier_chart_get_plot_area (chart, 500, 400, &area);
  cw = area.size.width / 3;
  ch = area.size.height / 2;

  /* The largest value (top right) is the strongest cell, the smallest the weakest. */
  surface = cairo_image_surface_create (CAIRO_FORMAT_ARGB32, 500, 400);
  cr = cairo_create (surface);
  espalier_chart_draw (chart, cr, 500, 400);
  cairo_destroy (cr);
  surface_pixel (surface, (int) (area.origin.x + 2.5 * cw), (int) (area.origin.y + 0.2 * ch),
                 &r, &g, &b, &a);
  surface_pixel (surface, (int) (area.origin.x + 0.5 * cw), (int) (area.origin.y + 0.2 * ch),
                 &r0, &g0, &b0, &a0);
  g_assert_cmpfloat (a, >, 0.95);
  g_assert_cmpfloat (a0, <, 0.2);
  cairo_surface_destroy (surface);

  /* The readout names the cell by its labels. */
  window = gui_test_window_new (GTK_WIDGET (chart), 500, 400);
  g_object_ref (chart);
  espalier_chart_get_plot_area (chart, 500, 400, &area);
  text = espalier_chart_describe_at (chart, area.origin.x + 2.5 * cw, area.origin.y + 0.5 * ch);
  g_assert_cmpstr (text, ==, "true cat, predicted fox: 9");

  gtk_window_destroy (window);
  gui_test_iterate (20);
  g_assert_finalize_object (chart);
  g_assert_finalize_object (heat);
}

static void
assert_file_starts_with (const char *path,
                         const char *magic,
                         gsize       len)
{
  g_autofree char *contents = NULL;
  gsize size = 0;

  g_assert_true (g_file_get_contents (path, &contents, &size, NULL));
  g_assert_cmpuint (size, >, len);
  g_assert_cmpmem (contents, len, magic, len);
}

static void
test_save (void)
{
  g_autoptr(EspalierSeries) series = make_loss_series ();
  g_autoptr(EspalierChartLayer) line = espalier_line_layer_new (series);
  EspalierChart *chart = ESPALIER_CHART (g_object_ref_sink (espalier_chart_new ()));
  g_autofree char *dir = g_dir_make_tmp ("espalier-chart-XXXXXX", NULL);
  g_autofree char *png = g_build_filename (dir, "chart.png", NULL);
  g_autofree char *svg = g_build_filename (dir, "chart.SVG", NULL);
  g_autofree char *pdf = g_build_filename (dir, "chart.pdf", NULL);
  g_autofree char *bad = g_build_filename (dir, "chart.bmp", NULL);
  g_autofree char *missing = g_build_filename (dir, "no", "such", "chart.png", NULL);
  g_autoptr(GError) error = NULL;

  espalier_chart_set_title (chart, "Loss");
  espalier_chart_add_layer (chart, line);

  g_assert_true (espalier_chart_save (chart, png, 0, 0, &error));
  g_assert_no_error (error);
  assert_file_starts_with (png, "\x89PNG", 4);
  g_assert_true (espalier_chart_save (chart, svg, 400, 300, &error));
  g_assert_no_error (error);
  assert_file_starts_with (svg, "<?xml", 5);
  g_assert_true (espalier_chart_save (chart, pdf, 400, 300, &error));
  g_assert_no_error (error);
  assert_file_starts_with (pdf, "%PDF", 4);

  g_assert_false (espalier_chart_save (chart, bad, 0, 0, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_false (espalier_chart_save (chart, missing, 0, 0, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_FAILED);

  g_unlink (png);
  g_unlink (svg);
  g_unlink (pdf);
  g_rmdir (dir);
  g_object_unref (chart);
}

static void
test_empty (void)
{
  GtkWidget *chart = espalier_chart_new ();
  g_autoptr(EspalierSeries) series = espalier_series_new ("loss");
  EspalierChartLayer *line = espalier_line_layer_new (series);
  cairo_surface_t *surface;
  GtkWindow *window;
  gboolean inked = FALSE;
  cairo_t *cr;

  espalier_chart_set_empty_text (ESPALIER_CHART (chart), "Train the model to see its loss");
  espalier_chart_add_layer (ESPALIER_CHART (chart), line);
  window = gui_test_window_new (chart, 400, 300);
  g_object_ref (chart);
  g_assert_cmpuint (espalier_chart_get_draw_count (ESPALIER_CHART (chart)), >, 0);
  g_assert_null (espalier_chart_describe_at (ESPALIER_CHART (chart), 200, 150));

  /* The text is drawn around the middle. */
  surface = cairo_image_surface_create (CAIRO_FORMAT_ARGB32, 400, 300);
  cr = cairo_create (surface);
  espalier_chart_draw (ESPALIER_CHART (chart), cr, 400, 300);
  cairo_destroy (cr);
  for (int y = 130; y < 170 && !inked; y++)
    for (int x = 100; x < 300 && !inked; x++)
      {
        double r, g, b, a;

        surface_pixel (surface, x, y, &r, &g, &b, &a);
        inked = a > 0.3;
      }
  g_assert_true (inked);
  cairo_surface_destroy (surface);
  g_free (gui_test_screenshot (chart, "chart-empty"));

  gtk_window_destroy (window);
  gui_test_iterate (20);
  g_assert_finalize_object (chart);
  g_assert_finalize_object (line);
}

/* The gallery */

static GtkWidget *
gallery_loss (void)
{
  GtkWidget *chart = espalier_chart_new ();
  g_autoptr(EspalierSeries) train = espalier_series_new ("train");
  g_autoptr(EspalierSeries) val = espalier_series_new ("validation");
  EspalierChartLayer *layer;

  for (guint i = 0; i <= 400; i++)
    {
      double e = i / 20.0;

      espalier_series_append (train, e, 0.28 + 0.9 * exp (-e / 2.5) + 0.02 * sin (i * 1.7));
      if (i % 20 == 0)
        espalier_series_append (val, e, 0.33 + 0.85 * exp (-e / 2.8) + 0.004 * e);
    }
  espalier_chart_set_title (ESPALIER_CHART (chart), "Loss");
  espalier_chart_axis_set_title (espalier_chart_get_x_axis (ESPALIER_CHART (chart)), "epoch");
  espalier_chart_axis_set_include_zero (espalier_chart_get_y_axis (ESPALIER_CHART (chart)), TRUE);
  layer = espalier_line_layer_new (train);
  espalier_chart_layer_set_title (layer, "train");
  espalier_chart_add_layer (ESPALIER_CHART (chart), layer);
  g_object_unref (layer);
  layer = espalier_line_layer_new (val);
  espalier_chart_layer_set_title (layer, "validation");
  espalier_chart_add_layer (ESPALIER_CHART (chart), layer);
  g_object_unref (layer);
  return chart;
}

static GtkWidget *
gallery_boundary (void)
{
  static const char *names[] = { "arm 1", "arm 2", "arm 3", NULL };
  GtkWidget *chart = espalier_chart_new ();
  g_autoptr(EspalierSeries) points = espalier_series_new ("spiral");
  EspalierChartLayer *heat = espalier_heatmap_layer_new ();
  EspalierChartLayer *scatter = espalier_scatter_layer_new (points);
  enum { N = 120 };
  double *values = g_new (double, N * N);
  guint *classes = g_new (guint, N * N);
  GRand *rand = g_rand_new_with_seed (7);

  /* Three spiral arms, and the class of the nearest arm as the "prediction". */
  for (guint k = 0; k < 3; k++)
    for (guint i = 0; i < 100; i++)
      {
        double t = i / 100.0 * 4.0 + 0.3;
        double angle = t * 1.4 + k * 2 * G_PI / 3 + g_rand_double_range (rand, -0.15, 0.15);

        espalier_series_append_class (points, t * 0.55 * cos (angle), t * 0.55 * sin (angle), k);
      }
  for (guint r = 0; r < N; r++)
    for (guint c = 0; c < N; c++)
      {
        double x = -2.5 + 5.0 * (c + 0.5) / N;
        double y = 2.5 - 5.0 * (r + 0.5) / N;
        double rad = sqrt (x * x + y * y) / 0.55;
        double best = G_MAXDOUBLE, second = G_MAXDOUBLE;
        guint best_k = 0;

        for (guint k = 0; k < 3; k++)
          {
            double a = atan2 (y, x) - (rad * 1.4 + k * 2 * G_PI / 3);
            double d = fabs (remainder (a, 2 * G_PI));

            if (d < best)
              {
                second = best;
                best = d;
                best_k = k;
              }
            else if (d < second)
              second = d;
          }
        classes[r * N + c] = best_k;
        values[r * N + c] = CLAMP (0.4 + (second - best), 0, 1);
      }
  espalier_heatmap_layer_set_data (ESPALIER_HEATMAP_LAYER (heat), values, classes, N, N,
                                   -2.5, 2.5, -2.5, 2.5);
  espalier_scatter_layer_set_class_names (ESPALIER_SCATTER_LAYER (scatter), names);
  espalier_chart_set_title (ESPALIER_CHART (chart), "Decision boundary");
  espalier_chart_set_square (ESPALIER_CHART (chart), TRUE);
  espalier_chart_add_layer (ESPALIER_CHART (chart), heat);
  espalier_chart_add_layer (ESPALIER_CHART (chart), scatter);
  g_object_unref (heat);
  g_object_unref (scatter);
  g_free (values);
  g_free (classes);
  g_rand_free (rand);
  return chart;
}

static GtkWidget *
gallery_bars (void)
{
  static const double ms[] = { 0.42, 1.87, 3.35, 0.96, 0.31 };
  static const char *stages[] = { "data", "copy", "forward", "backward", "optimizer" };
  GtkWidget *chart = espalier_chart_new ();
  EspalierChartLayer *bars = espalier_bars_layer_new ();

  espalier_bars_layer_set_values (ESPALIER_BARS_LAYER (bars), ms, stages, G_N_ELEMENTS (ms));
  espalier_bars_layer_set_per_bar_colors (ESPALIER_BARS_LAYER (bars), TRUE);
  espalier_chart_set_title (ESPALIER_CHART (chart), "Time per stage");
  espalier_chart_axis_set_title (espalier_chart_get_y_axis (ESPALIER_CHART (chart)), "ms");
  espalier_chart_add_layer (ESPALIER_CHART (chart), bars);
  g_object_unref (bars);
  return chart;
}

static GtkWidget *
gallery_confusion (void)
{
  static const char *names[] = { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot", NULL };
  GtkWidget *chart = espalier_chart_new ();
  EspalierChartLayer *heat = espalier_heatmap_layer_new ();
  double values[100];
  GRand *rand = g_rand_new_with_seed (3);

  for (guint r = 0; r < 10; r++)
    for (guint c = 0; c < 10; c++)
      values[r * 10 + c] = r == c ? g_rand_int_range (rand, 780, 970)
                                  : (g_rand_int_range (rand, 0, 10) < 3 ? g_rand_int_range (rand, 0, 60) : 0);
  values[6 * 10 + 0] = 121;
  values[4 * 10 + 2] = 87;
  espalier_heatmap_layer_set_data (ESPALIER_HEATMAP_LAYER (heat), values, NULL, 10, 10,
                                   0, 10, 0, 10);
  espalier_heatmap_layer_set_labels (ESPALIER_HEATMAP_LAYER (heat), names, names);
  espalier_heatmap_layer_set_show_values (ESPALIER_HEATMAP_LAYER (heat), TRUE);
  espalier_chart_set_title (ESPALIER_CHART (chart), "Confusion matrix");
  espalier_chart_axis_set_title (espalier_chart_get_x_axis (ESPALIER_CHART (chart)), "predicted");
  espalier_chart_axis_set_title (espalier_chart_get_y_axis (ESPALIER_CHART (chart)), "true");
  espalier_chart_set_square (ESPALIER_CHART (chart), TRUE);
  espalier_chart_add_layer (ESPALIER_CHART (chart), heat);
  g_object_unref (heat);
  g_rand_free (rand);
  return chart;
}

static GtkWidget *
gallery_latency (void)
{
  static const char *variants[] = { "baseline", "pruned 50%", "pruned 80%", "int8",
                                    "fp16", "reduced", NULL };
  static const double acc[] = { 88.5, 88.1, 86.9, 88.2, 88.4, 87.2 };
  static const double us[] = { 410, 260, 150, 95, 230, 120 };
  GtkWidget *chart = espalier_chart_new ();
  g_autoptr(EspalierSeries) series = espalier_series_new ("variants");
  EspalierChartLayer *scatter = espalier_scatter_layer_new (series);

  for (guint i = 0; i < G_N_ELEMENTS (acc); i++)
    espalier_series_append (series, us[i], acc[i]);
  espalier_scatter_layer_set_labels (ESPALIER_SCATTER_LAYER (scatter), variants);
  espalier_scatter_layer_set_radius (ESPALIER_SCATTER_LAYER (scatter), 5);
  espalier_chart_layer_set_title (scatter, "variants");
  espalier_chart_set_title (ESPALIER_CHART (chart), "Accuracy vs latency");
  espalier_chart_axis_set_title (espalier_chart_get_x_axis (ESPALIER_CHART (chart)), "latency (µs, log)");
  espalier_chart_axis_set_logarithmic (espalier_chart_get_x_axis (ESPALIER_CHART (chart)), TRUE);
  espalier_chart_axis_set_title (espalier_chart_get_y_axis (ESPALIER_CHART (chart)), "accuracy (%)");
  espalier_chart_add_layer (ESPALIER_CHART (chart), scatter);
  g_object_unref (scatter);
  return chart;
}

static void
gallery_screenshot (const char *name)
{
  GtkWidget *grid = gtk_grid_new ();
  GtkWidget *charts[6];
  GtkWindow *window;
  g_autofree char *path = NULL;

  charts[0] = gallery_loss ();
  charts[1] = gallery_boundary ();
  charts[2] = gallery_bars ();
  charts[3] = gallery_confusion ();
  charts[4] = gallery_latency ();
  charts[5] = espalier_chart_new ();
  espalier_chart_set_title (ESPALIER_CHART (charts[5]), "Accuracy");
  espalier_chart_set_empty_text (ESPALIER_CHART (charts[5]), "Train the model to see its accuracy");

  gtk_grid_set_row_spacing (GTK_GRID (grid), 12);
  gtk_grid_set_column_spacing (GTK_GRID (grid), 12);
  gtk_grid_set_row_homogeneous (GTK_GRID (grid), TRUE);
  gtk_grid_set_column_homogeneous (GTK_GRID (grid), TRUE);
  for (guint i = 0; i < G_N_ELEMENTS (charts); i++)
    {
      gtk_widget_set_hexpand (charts[i], TRUE);
      gtk_widget_set_vexpand (charts[i], TRUE);
      gtk_grid_attach (GTK_GRID (grid), charts[i], i % 3, i / 3, 1, 1);
    }
  window = gui_test_window_new (grid, 1380, 860);
  gui_test_iterate (100);

  path = gui_test_screenshot (GTK_WIDGET (window), name);
  g_assert_nonnull (path);
  g_test_message ("screenshot: %s", path);

  gtk_window_destroy (window);
  gui_test_iterate (20);
}

static void
test_gallery (void)
{
  AdwStyleManager *style = adw_style_manager_get_default ();

  gallery_screenshot ("chart-gallery");
  adw_style_manager_set_color_scheme (style, ADW_COLOR_SCHEME_FORCE_DARK);
  gui_test_iterate (50);
  gallery_screenshot ("chart-gallery-dark");
  adw_style_manager_set_color_scheme (style, ADW_COLOR_SCHEME_DEFAULT);
}

int
main (int    argc,
      char **argv)
{
  gui_test_init (&argc, &argv);

  g_test_add_func ("/chart/axis/normalize", test_axis_normalize);
  g_test_add_func ("/chart/axis/ticks", test_axis_ticks);
  g_test_add_func ("/chart/axis/fit", test_axis_fit);
  g_test_add_func ("/chart/series", test_series);
  g_test_add_func ("/chart/auto-range-and-pixels", test_auto_range_and_pixels);
  g_test_add_func ("/chart/awkward-data", test_awkward_data);
  g_test_add_func ("/chart/redraw-and-readout", test_redraw_and_readout);
  g_test_add_func ("/chart/heatmap", test_heatmap_cells);
  g_test_add_func ("/chart/save", test_save);
  g_test_add_func ("/chart/empty", test_empty);
  g_test_add_func ("/chart/gallery", test_gallery);

  return g_test_run ();
}
