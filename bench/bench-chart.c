/* SPDX-License-Identifier: GPL-3.0-or-later */
/* bench-chart.c: times espalier_chart_draw, the whole chart (axes, labels, legend and
 * layers) drawn with cairo into a 1000 x 600 image surface, for a 10,000-point line
 * layer (the target: under 4 ms), a 10,000-point scatter layer coloured by 3 classes,
 * and the chart without layers' data cost (an empty series, for the fixed overhead).
 *
 * The peer, in the same run: the same points drawn the way a plain GtkDrawingArea chart
 * draws them (GNOME System Monitor's graph, most cairo tutorials): one cairo path through
 * every point, stroked, and one cairo_arc fill per scatter dot. Its time is the
 * baseline of the ratios printed.
 *
 * Usage: bench-chart [--points N] [--runs R]
 * Prints one line per case: the median and best of R draws in milliseconds. Needs a
 * display for GTK (run it under xvfb-run); not a test: numbers depend on the machine. */

#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "espalier-chart.h"
#include "espalier-chart-layers.h"

#define WIDTH 1000
#define HEIGHT 600

static int
compare_double (const void *a,
                const void *b)
{
  double x = *(const double *) a;
  double y = *(const double *) b;

  return (x > y) - (x < y);
}

typedef struct {
  const double *x, *y;
  guint         n;
  gboolean      dots;
} Plain;

/* The peer: every point through cairo directly, mapped to the same 1000 x 600 area. */
static void
plain_draw (const Plain *p,
            cairo_t     *cr)
{
  double x_min = INFINITY, x_max = -INFINITY, y_min = INFINITY, y_max = -INFINITY;

  for (guint i = 0; i < p->n; i++)
    {
      x_min = MIN (x_min, p->x[i]);
      x_max = MAX (x_max, p->x[i]);
      y_min = MIN (y_min, p->y[i]);
      y_max = MAX (y_max, p->y[i]);
    }
  cairo_set_source_rgb (cr, 0.2, 0.4, 0.8);
  cairo_set_line_width (cr, 2);
  for (guint i = 0; i < p->n; i++)
    {
      double px = 60 + (p->x[i] - x_min) / (x_max - x_min) * (WIDTH - 80);
      double py = HEIGHT - 40 - (p->y[i] - y_min) / (y_max - y_min) * (HEIGHT - 60);

      if (p->dots)
        {
          cairo_new_sub_path (cr);
          cairo_arc (cr, px, py, 3, 0, 2 * G_PI);
          cairo_fill (cr);
        }
      else if (i == 0)
        cairo_move_to (cr, px, py);
      else
        cairo_line_to (cr, px, py);
    }
  if (!p->dots)
    cairo_stroke (cr);
}

/* Draw the chart (or, with plain set, the peer) `runs` times onto a fresh surface;
 * prints median and best in ms and returns the median. */
static double
time_draw (const char    *name,
           EspalierChart *chart,
           const Plain   *plain,
           guint          runs)
{
  double median;
  cairo_surface_t *surface = cairo_image_surface_create (CAIRO_FORMAT_ARGB32, WIDTH, HEIGHT);
  double *ms = g_new (double, runs);

  for (guint r = 0; r < runs + 2; r++)
    {
      cairo_t *cr = cairo_create (surface);
      gint64 start;

      cairo_set_operator (cr, CAIRO_OPERATOR_CLEAR);
      cairo_paint (cr);
      cairo_set_operator (cr, CAIRO_OPERATOR_OVER);
      start = g_get_monotonic_time ();
      if (plain != NULL)
        plain_draw (plain, cr);
      else
        espalier_chart_draw (chart, cr, WIDTH, HEIGHT);
      cairo_surface_flush (surface);
      /* The first two runs warm caches (fonts, glyphs) and are not counted. */
      if (r >= 2)
        ms[r - 2] = (g_get_monotonic_time () - start) / 1000.0;
      cairo_destroy (cr);
    }

  qsort (ms, runs, sizeof (double), compare_double);
  median = ms[runs / 2];
  printf ("%-40s median %8.3f ms   best %8.3f ms   (%u runs, %dx%d)\n",
          name, median, ms[0], runs, WIDTH, HEIGHT);
  g_free (ms);
  cairo_surface_destroy (surface);
  return median;
}

int
main (int    argc,
      char **argv)
{
  guint n = 10000, runs = 50;
  g_autoptr(EspalierSeries) line_series = NULL;
  g_autoptr(EspalierSeries) scatter_series = NULL;
  g_autoptr(EspalierSeries) empty_series = NULL;
  g_autoptr(EspalierChartLayer) line = NULL;
  g_autoptr(EspalierChartLayer) scatter = NULL;
  g_autoptr(EspalierChartLayer) empty = NULL;
  EspalierChart *chart;
  GRand *rand;

  for (int i = 1; i < argc; i++)
    {
      if (strcmp (argv[i], "--points") == 0 && i + 1 < argc)
        n = (guint) atoi (argv[++i]);
      else if (strcmp (argv[i], "--runs") == 0 && i + 1 < argc)
        {
          int r = atoi (argv[++i]);

          runs = (guint) MAX (r, 1);
        }
      else
        {
          fprintf (stderr, "usage: %s [--points N] [--runs R]\n", argv[0]);
          return 2;
        }
    }

  if (!gtk_init_check ())
    {
      fprintf (stderr, "bench-chart: no display (run it under xvfb-run)\n");
      return 77;
    }

  /* A noisy loss curve, and three Gaussian blobs. */
  rand = g_rand_new_with_seed (42);
  line_series = espalier_series_new ("loss");
  scatter_series = espalier_series_new ("points");
  empty_series = espalier_series_new ("empty");
  for (guint i = 0; i < n; i++)
    {
      double t = (double) i / n * 30.0;
      guint k = i % 3;

      espalier_series_append (line_series, t,
                              2.0 * exp (-t / 6.0) + 0.25 + g_rand_double_range (rand, -0.08, 0.08));
      espalier_series_append_class (scatter_series,
                                    cos (k * 2.1) * 2 + g_rand_double_range (rand, -1.5, 1.5),
                                    sin (k * 2.1) * 2 + g_rand_double_range (rand, -1.5, 1.5),
                                    k);
    }
  g_rand_free (rand);

  line = espalier_line_layer_new (line_series);
  scatter = espalier_scatter_layer_new (scatter_series);
  empty = espalier_line_layer_new (empty_series);

  chart = ESPALIER_CHART (g_object_ref_sink (espalier_chart_new ()));
  espalier_chart_set_title (chart, "Loss");
  espalier_chart_axis_set_title (espalier_chart_get_x_axis (chart), "epoch");
  espalier_chart_axis_set_title (espalier_chart_get_y_axis (chart), "loss");

  printf ("espalier_chart_draw, %u points\n", n);

  /* Fixed costs: axes, labels and legend with a layer that has one point. */
  espalier_series_append (empty_series, 0, 0);
  espalier_chart_add_layer (chart, empty);
  time_draw ("axes, labels, legend (1 point)", chart, NULL, runs);
  espalier_chart_remove_all (chart);

  {
    Plain line_peer = { espalier_series_get_x (line_series), espalier_series_get_y (line_series), n, FALSE };
    Plain dots_peer = { espalier_series_get_x (scatter_series), espalier_series_get_y (scatter_series), n, TRUE };
    double ours, peer;

    espalier_chart_add_layer (chart, line);
    ours = time_draw ("line layer, whole chart", chart, NULL, runs);
    peer = time_draw ("peer: one cairo path, stroked", NULL, &line_peer, runs);
    printf ("%-40s %.3fx the peer's time\n", "line ratio (ours / peer)", ours / peer);
    espalier_chart_remove_all (chart);

    espalier_chart_add_layer (chart, scatter);
    ours = time_draw ("scatter layer (3 classes), whole chart", chart, NULL, runs);
    peer = time_draw ("peer: cairo_arc fill per dot", NULL, &dots_peer, runs);
    printf ("%-40s %.3fx the peer's time\n", "scatter ratio (ours / peer)", ours / peer);
    espalier_chart_remove_all (chart);
  }

  g_object_unref (chart);
  return 0;
}
