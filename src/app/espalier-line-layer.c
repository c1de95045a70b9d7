/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-line-layer.c: a series drawn as a polyline (markers on the points when they
 * are few and far apart). Sparse lines, dashed lines and vector output are one cairo
 * path, decimated while it is built: consecutive points in the same pixel column become
 * at most four (first, min, max, last, in their order), which keeps the drawn shape.
 * Dense lines on raster targets skip cairo's stroker (microseconds per segment): the
 * rows the line crosses in each pixel column are rasterized into an A8 mask, painted
 * once. Either way a redraw costs the series' length once plus the plot's width.
 * Non-finite values break the line. */

#include "config.h"

#include <math.h>

#include "espalier-chart-layer-private.h"
#include "espalier-chart-layers.h"

struct _EspalierLineLayer
{
  EspalierChartLayer  parent_instance;

  EspalierSeries     *series;
  double              line_width;
  guint               dashed : 1;
};

G_DEFINE_FINAL_TYPE (EspalierLineLayer, espalier_line_layer, ESPALIER_TYPE_CHART_LAYER)

enum {
  PROP_0,
  PROP_SERIES,
  PROP_LINE_WIDTH,
  PROP_DASHED,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

/* Markers are drawn when there are at most this many points, each this far apart. */
#define MARKER_MAX_POINTS 60
#define MARKER_MIN_SPACING 8.0
/* Lines with points closer than this many pixels on average are rasterized by hand. */
#define DENSE_SPACING 3.0

EspalierChartLayer *
espalier_line_layer_new (EspalierSeries *series)
{
  g_return_val_if_fail (series == NULL || ESPALIER_IS_SERIES (series), NULL);

  return g_object_new (ESPALIER_TYPE_LINE_LAYER, "series", series, NULL);
}

static void
set_series (EspalierLineLayer *self,
            EspalierSeries    *series)
{
  if (!espalier_chart_layer_set_series_slot (ESPALIER_CHART_LAYER (self), &self->series, series))
    return;

  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_SERIES]);
  espalier_chart_layer_changed (ESPALIER_CHART_LAYER (self));
}

static gboolean
espalier_line_layer_get_extents (EspalierChartLayer *layer,
                                 double             *x_min,
                                 double             *x_max,
                                 double             *y_min,
                                 double             *y_max)
{
  EspalierLineLayer *self = ESPALIER_LINE_LAYER (layer);

  if (self->series == NULL)
    return FALSE;
  return espalier_series_get_extents (self->series, x_min, x_max, y_min, y_max);
}

/* The points of one pixel column: the first, lowest, highest and last, as pixels. */
typedef struct
{
  double fx, fy;
  double lx, ly;
  double min_x, min_y;
  double max_x, max_y;
  guint  min_i, max_i;
} Column;

static void
column_emit (cairo_t      *cr,
             const Column *col,
             gboolean     *in_path)
{
  if (*in_path)
    cairo_line_to (cr, col->fx, col->fy);
  else
    cairo_move_to (cr, col->fx, col->fy);
  *in_path = TRUE;

  /* The extremes in the order they came, then the last point. */
  if (col->min_i < col->max_i)
    {
      cairo_line_to (cr, col->min_x, col->min_y);
      cairo_line_to (cr, col->max_x, col->max_y);
    }
  else if (col->max_i < col->min_i)
    {
      cairo_line_to (cr, col->max_x, col->max_y);
      cairo_line_to (cr, col->min_x, col->min_y);
    }
  cairo_line_to (cr, col->lx, col->ly);
}

/* Column spans of the centre line: lo[c]..hi[c] are the rows the polyline crosses in
 * pixel column c (mask coordinates). */
static void
span_segment (float  *lo,
              float  *hi,
              int     n_cols,
              double  x0,
              double  y0,
              double  x1,
              double  y1)
{
  double slope;
  int c0, c1;

  if (x1 < x0)
    {
      double t;

      t = x0, x0 = x1, x1 = t;
      t = y0, y0 = y1, y1 = t;
    }
  if (x1 < 0 || x0 >= n_cols)
    return;

  slope = x1 > x0 ? (y1 - y0) / (x1 - x0) : 0;
  c0 = MAX ((int) floor (x0), 0);
  c1 = MIN ((int) floor (x1), n_cols - 1);
  for (int c = c0; c <= c1; c++)
    {
      double xa = MAX (x0, c);
      double xb = MIN (x1, c + 1);
      double ya = x1 > x0 ? y0 + (xa - x0) * slope : y0;
      double yb = x1 > x0 ? y0 + (xb - x0) * slope : y1;

      lo[c] = MIN (lo[c], (float) MIN (ya, yb));
      hi[c] = MAX (hi[c], (float) MAX (ya, yb));
    }
}

/* Cover rows top..bottom of one mask column with alpha (0..1), antialiased at the ends,
 * keeping the larger coverage where something is already drawn. */
static void
fill_span (guchar *data,
           int     stride,
           int     n_rows,
           int     col,
           double  top,
           double  bottom,
           double  alpha)
{
  int r0 = MAX ((int) floor (top), 0);
  int r1 = MIN ((int) ceil (bottom), n_rows);

  for (int r = r0; r < r1; r++)
    {
      double cover = MIN (bottom, r + 1) - MAX (top, r);
      guchar v = (guchar) (CLAMP (cover, 0, 1) * alpha * 255 + 0.5);
      guchar *p = data + (gsize) r * stride + col;

      if (v > *p)
        *p = v;
    }
}

/* Dense lines: cairo's stroker costs microseconds per segment, so many points are
 * rasterized here instead, column by column into an A8 mask of the plot (the exact rows
 * the polyline crosses in each column, widened by the line width), then painted in one
 * cairo_mask_surface. The cost is the number of points plus the plot's width. */
static void
draw_dense (EspalierLineLayer     *self,
            cairo_t               *cr,
            const graphene_rect_t *area,
            EspalierChartAxis     *x_axis,
            EspalierChartAxis     *y_axis,
            const GdkRGBA         *color)
{
  const double *xs = espalier_series_get_x (self->series);
  const double *ys = espalier_series_get_y (self->series);
  guint n = espalier_series_get_n_points (self->series);
  double w = self->line_width;
  int margin = (int) ceil (w) + 4;
  double ox = floor (area->origin.x) - margin;
  double oy = floor (area->origin.y) - margin;
  int n_cols = (int) ceil (area->size.width) + 2 * margin;
  int n_rows = (int) ceil (area->size.height) + 2 * margin;
  double ext = CLAMP ((w - 1) / 2, 0, 4);
  cairo_surface_t *mask;
  float *lo, *hi;          /* (n_cols) */
  gboolean have_prev = FALSE;
  double prev_x = 0, prev_y = 0;
  guchar *data;
  int stride;

  lo = g_new (float, n_cols);
  hi = g_new (float, n_cols);
  for (int c = 0; c < n_cols; c++)
    {
      lo[c] = G_MAXFLOAT;
      hi[c] = -G_MAXFLOAT;
    }

  for (guint i = 0; i < n; i++)
    {
      double px, py;

      espalier_chart_layer_map (area, x_axis, y_axis, xs[i], ys[i], &px, &py);
      if (!isfinite (px) || !isfinite (py))
        {
          have_prev = FALSE;
          continue;
        }
      px = CLAMP (px - ox, -1e6, 1e6);
      py = CLAMP (py - oy, -1e6, 1e6);
      if (have_prev)
        span_segment (lo, hi, n_cols, prev_x, prev_y, px, py);
      else
        span_segment (lo, hi, n_cols, px, py, px, py);
      prev_x = px;
      prev_y = py;
      have_prev = TRUE;
    }

  mask = cairo_image_surface_create (CAIRO_FORMAT_A8, n_cols, n_rows);
  cairo_surface_flush (mask);
  data = cairo_image_surface_get_data (mask);
  stride = cairo_image_surface_get_stride (mask);
  for (int c = 0; c < n_cols; c++)
    {
      double top, bottom;

      if (lo[c] > hi[c])
        continue;
      top = lo[c] - w / 2;
      bottom = hi[c] + w / 2;
      fill_span (data, stride, n_rows, c, top, bottom, 1);
      /* The pen's width across: neighbouring columns, fading out. */
      for (int d = 1; d <= (int) ceil (ext); d++)
        {
          double alpha = MIN (1, ext - (d - 1));

          if (c - d >= 0)
            fill_span (data, stride, n_rows, c - d, top, bottom, alpha);
          if (c + d < n_cols)
            fill_span (data, stride, n_rows, c + d, top, bottom, alpha);
        }
    }
  cairo_surface_mark_dirty (mask);

  gdk_cairo_set_source_rgba (cr, color);
  cairo_mask_surface (cr, mask, ox, oy);

  cairo_surface_destroy (mask);
  g_free (lo);
  g_free (hi);
}

/* Sparse lines (and dashed ones, and vector output): one cairo path, decimated. */
static void
draw_path (EspalierLineLayer     *self,
           cairo_t               *cr,
           const graphene_rect_t *area,
           EspalierChartAxis     *x_axis,
           EspalierChartAxis     *y_axis,
           const GdkRGBA         *color,
           guint                 *n_columns,
           double                *spacing)
{
  const double *xs = espalier_series_get_x (self->series);
  const double *ys = espalier_series_get_y (self->series);
  guint n = espalier_series_get_n_points (self->series);
  guint n_drawn = 0;
  Column col = { 0 };
  double col_index = 0;
  gboolean have_col = FALSE;
  gboolean in_path = FALSE;
  double first_px = 0, last_px = 0;

  cairo_new_path (cr);
  for (guint i = 0; i < n; i++)
    {
      double px, py, c;

      espalier_chart_layer_map (area, x_axis, y_axis, xs[i], ys[i], &px, &py);
      if (!isfinite (px) || !isfinite (py))
        {
          if (have_col)
            column_emit (cr, &col, &in_path);
          have_col = FALSE;
          in_path = FALSE;
          continue;
        }

      /* Keep the path inside what cairo's fixed point can hold. */
      px = CLAMP (px, -1e6, 1e6);
      py = CLAMP (py, -1e6, 1e6);
      c = floor (px);
      if (have_col && c == col_index)
        {
          if (py < col.min_y)
            {
              col.min_x = px, col.min_y = py, col.min_i = i;
            }
          if (py > col.max_y)
            {
              col.max_x = px, col.max_y = py, col.max_i = i;
            }
          col.lx = px;
          col.ly = py;
          continue;
        }

      if (have_col)
        column_emit (cr, &col, &in_path);
      have_col = TRUE;
      col_index = c;
      col.fx = col.lx = col.min_x = col.max_x = px;
      col.fy = col.ly = col.min_y = col.max_y = py;
      col.min_i = col.max_i = i;
      if (n_drawn == 0)
        first_px = px;
      last_px = px;
      n_drawn++;
    }
  if (have_col)
    column_emit (cr, &col, &in_path);

  gdk_cairo_set_source_rgba (cr, color);
  cairo_set_line_width (cr, self->line_width);
  cairo_set_line_join (cr, CAIRO_LINE_JOIN_ROUND);
  cairo_set_line_cap (cr, CAIRO_LINE_CAP_ROUND);
  if (self->dashed)
    {
      double dash[] = { 3 * self->line_width, 2 * self->line_width };
      cairo_set_dash (cr, dash, G_N_ELEMENTS (dash), 0);
    }
  cairo_stroke (cr);
  cairo_set_dash (cr, NULL, 0, 0);

  *n_columns = n_drawn;
  *spacing = n_drawn > 1 ? fabs (last_px - first_px) / (n_drawn - 1) : G_MAXDOUBLE;
}

static void
espalier_line_layer_draw (EspalierChartLayer    *layer,
                          cairo_t               *cr,
                          const graphene_rect_t *area,
                          EspalierChartAxis     *x_axis,
                          EspalierChartAxis     *y_axis)
{
  EspalierLineLayer *self = ESPALIER_LINE_LAYER (layer);
  const GdkRGBA *color = espalier_chart_layer_get_color (layer);
  guint n, n_columns = 0;
  double spacing = 0;

  if (self->series == NULL || (n = espalier_series_get_n_points (self->series)) == 0)
    return;

  cairo_save (cr);
  if (n > area->size.width / DENSE_SPACING && !self->dashed && !espalier_chart_layer_target_is_vector (cr))
    {
      draw_dense (self, cr, area, x_axis, y_axis, color);
      cairo_restore (cr);
      return;
    }

  draw_path (self, cr, area, x_axis, y_axis, color, &n_columns, &spacing);

  /* Markers on few, well separated points (every point got its own column). */
  if (n <= MARKER_MAX_POINTS && n_columns == n && spacing >= MARKER_MIN_SPACING)
    {
      const double *xs = espalier_series_get_x (self->series);
      const double *ys = espalier_series_get_y (self->series);
      double r = self->line_width + 1.0;

      for (guint i = 0; i < n; i++)
        {
          double px, py;

          espalier_chart_layer_map (area, x_axis, y_axis, xs[i], ys[i], &px, &py);
          if (!isfinite (px) || !isfinite (py))
            continue;
          cairo_new_sub_path (cr);
          cairo_arc (cr, px, py, r, 0, 2 * G_PI);
        }
      cairo_fill (cr);
    }

  cairo_restore (cr);
}

static char *
espalier_line_layer_describe_at (EspalierChartLayer    *layer,
                                 const graphene_rect_t *area,
                                 EspalierChartAxis     *x_axis,
                                 EspalierChartAxis     *y_axis,
                                 double                 px,
                                 double                 py,
                                 double                 radius)
{
  EspalierLineLayer *self = ESPALIER_LINE_LAYER (layer);
  const char *y_title;
  guint i;

  i = espalier_chart_layer_nearest_point (area, x_axis, y_axis, self->series, px, py, radius);
  if (i == G_MAXUINT)
    return NULL;

  y_title = espalier_chart_layer_get_title (layer);
  if (y_title == NULL || *y_title == '\0')
    y_title = espalier_chart_layer_axis_name (y_axis, "y");
  return g_strdup_printf ("%s %.6g: %s %.4g",
                          espalier_chart_layer_axis_name (x_axis, "x"),
                          espalier_series_get_x (self->series)[i], y_title,
                          espalier_series_get_y (self->series)[i]);
}

static void
espalier_line_layer_dispose (GObject *object)
{
  EspalierLineLayer *self = ESPALIER_LINE_LAYER (object);

  espalier_chart_layer_set_series_slot (ESPALIER_CHART_LAYER (self), &self->series, NULL);

  G_OBJECT_CLASS (espalier_line_layer_parent_class)->dispose (object);
}

static void
espalier_line_layer_get_property (GObject    *object,
                                  guint       prop_id,
                                  GValue     *value,
                                  GParamSpec *pspec)
{
  EspalierLineLayer *self = ESPALIER_LINE_LAYER (object);

  switch (prop_id)
    {
    case PROP_SERIES:
      g_value_set_object (value, self->series);
      break;
    case PROP_LINE_WIDTH:
      g_value_set_double (value, self->line_width);
      break;
    case PROP_DASHED:
      g_value_set_boolean (value, self->dashed);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_line_layer_set_property (GObject      *object,
                                  guint         prop_id,
                                  const GValue *value,
                                  GParamSpec   *pspec)
{
  EspalierLineLayer *self = ESPALIER_LINE_LAYER (object);

  switch (prop_id)
    {
    case PROP_SERIES:
      set_series (self, g_value_get_object (value));
      break;
    case PROP_LINE_WIDTH:
      self->line_width = g_value_get_double (value);
      g_object_notify_by_pspec (object, pspec);
      espalier_chart_layer_changed (ESPALIER_CHART_LAYER (self));
      break;
    case PROP_DASHED:
      espalier_line_layer_set_dashed (self, g_value_get_boolean (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_line_layer_class_init (EspalierLineLayerClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  EspalierChartLayerClass *layer_class = ESPALIER_CHART_LAYER_CLASS (klass);

  object_class->dispose = espalier_line_layer_dispose;
  object_class->get_property = espalier_line_layer_get_property;
  object_class->set_property = espalier_line_layer_set_property;

  layer_class->get_extents = espalier_line_layer_get_extents;
  layer_class->draw = espalier_line_layer_draw;
  layer_class->describe_at = espalier_line_layer_describe_at;

  properties[PROP_SERIES] =
    g_param_spec_object ("series", NULL, NULL, ESPALIER_TYPE_SERIES,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_LINE_WIDTH] =
    g_param_spec_double ("line-width", NULL, NULL, 0.1, 32, 2,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_DASHED] =
    g_param_spec_boolean ("dashed", NULL, NULL, FALSE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);
}

static void
espalier_line_layer_init (EspalierLineLayer *self)
{
  self->line_width = 2;
}

EspalierSeries *
espalier_line_layer_get_series (EspalierLineLayer *self)
{
  g_return_val_if_fail (ESPALIER_IS_LINE_LAYER (self), NULL);

  return self->series;
}

void
espalier_line_layer_set_dashed (EspalierLineLayer *self,
                                gboolean           dashed)
{
  g_return_if_fail (ESPALIER_IS_LINE_LAYER (self));

  dashed = !!dashed;
  if (self->dashed == (guint) dashed)
    return;

  self->dashed = dashed;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_DASHED]);
  espalier_chart_layer_changed (ESPALIER_CHART_LAYER (self));
}
