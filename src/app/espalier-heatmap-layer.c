/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-heatmap-layer.c: a (rows, cols) grid of values over a data rectangle. Two
 * uses: a decision boundary (many cells, each a class with a confidence: the class's
 * palette colour, more opaque where surer, drawn as one smoothly scaled image) and a
 * confusion matrix (few cells, a sequential blue ramp from the smallest to the largest
 * value, drawn as separate cells with their numbers and class names on the axes). */

#include "config.h"

#include <glib/gi18n.h>

#include <math.h>

#include "espalier-chart-layer-private.h"
#include "espalier-chart-layers.h"

#define NO_CLASS G_MAXUINT

/* Grids up to this many cells are drawn cell by cell (gaps, numbers). */
#define MAX_DISCRETE_CELLS 1024

struct _EspalierHeatmapLayer
{
  EspalierChartLayer  parent_instance;

  double             *values;       /* (rows, cols), row 0 at the top */
  guint              *classes;      /* (rows, cols) or NULL */
  guint               rows;
  guint               cols;
  double              x_min, x_max, y_min, y_max;
  double              value_min, value_max;
  char              **row_labels;   /* (rows) or NULL */
  char              **col_labels;   /* (cols) or NULL */
  cairo_surface_t    *image;        /* (rows, cols) ARGB32 cache, NULL when stale */
  guint               show_values : 1;
};

G_DEFINE_FINAL_TYPE (EspalierHeatmapLayer, espalier_heatmap_layer, ESPALIER_TYPE_CHART_LAYER)

enum {
  PROP_0,
  PROP_SHOW_VALUES,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

EspalierChartLayer *
espalier_heatmap_layer_new (void)
{
  return g_object_new (ESPALIER_TYPE_HEATMAP_LAYER, NULL);
}

/* The colour of cell i, and how strong it is (0..1, for the text colour). */
static void
cell_color (EspalierHeatmapLayer *self,
            guint                 i,
            GdkRGBA              *color,
            double               *strength)
{
  double v = self->values[i];
  double t;

  if (self->classes != NULL)
    {
      t = isfinite (v) ? CLAMP (v, 0, 1) : 0;
      if (self->classes[i] == NO_CLASS)
        {
          *color = (GdkRGBA) { 0, 0, 0, 0 };
          *strength = 0;
          return;
        }
      espalier_chart_palette_color (self->classes[i], color);
      color->alpha = 0.08 + 0.42 * t;
      *strength = color->alpha;
      return;
    }

  if (self->value_max > self->value_min)
    t = (v - self->value_min) / (self->value_max - self->value_min);
  else
    t = self->value_max > 0 ? 1 : 0;
  t = isfinite (t) ? CLAMP (t, 0, 1) : 0;
  *color = *espalier_chart_layer_get_color (ESPALIER_CHART_LAYER (self));
  color->alpha = 0.06 + 0.94 * t;
  *strength = t;
}

static cairo_surface_t *
build_image (EspalierHeatmapLayer *self)
{
  cairo_surface_t *surface;
  guchar *data;
  int stride;

  surface = cairo_image_surface_create (CAIRO_FORMAT_ARGB32, self->cols, self->rows);
  cairo_surface_flush (surface);
  data = cairo_image_surface_get_data (surface);
  stride = cairo_image_surface_get_stride (surface);
  for (guint r = 0; r < self->rows; r++)
    {
      guint32 *row = (guint32 *) (gpointer) (data + (gsize) r * stride);

      for (guint c = 0; c < self->cols; c++)
        {
          GdkRGBA color;
          double strength;
          guint a, red, green, blue;

          cell_color (self, r * self->cols + c, &color, &strength);
          a = (guint) lround (color.alpha * 255);
          red = (guint) lround (color.red * color.alpha * 255);
          green = (guint) lround (color.green * color.alpha * 255);
          blue = (guint) lround (color.blue * color.alpha * 255);
          row[c] = (a << 24) | (red << 16) | (green << 8) | blue;
        }
    }
  cairo_surface_mark_dirty (surface);
  return surface;
}

static gboolean
espalier_heatmap_layer_get_extents (EspalierChartLayer *layer,
                                    double             *x_min,
                                    double             *x_max,
                                    double             *y_min,
                                    double             *y_max)
{
  EspalierHeatmapLayer *self = ESPALIER_HEATMAP_LAYER (layer);

  if (self->rows == 0 || self->cols == 0)
    return FALSE;

  *x_min = self->x_min;
  *x_max = self->x_max;
  *y_min = self->y_min;
  *y_max = self->y_max;
  return TRUE;
}

static guint
espalier_heatmap_layer_get_axis_labels (EspalierChartLayer *layer,
                                        GtkOrientation      orientation,
                                        GArray             *positions,
                                        GPtrArray          *labels)
{
  EspalierHeatmapLayer *self = ESPALIER_HEATMAP_LAYER (layer);
  char **names;
  guint count;

  if (orientation == GTK_ORIENTATION_HORIZONTAL)
    {
      names = self->col_labels;
      count = self->cols;
    }
  else
    {
      names = self->row_labels;
      count = self->rows;
    }
  if (names == NULL)
    return 0;

  for (guint i = 0; i < count && names[i] != NULL; i++)
    {
      double pos;

      if (orientation == GTK_ORIENTATION_HORIZONTAL)
        pos = self->x_min + (i + 0.5) * (self->x_max - self->x_min) / self->cols;
      else
        pos = self->y_max - (i + 0.5) * (self->y_max - self->y_min) / self->rows;
      g_array_append_val (positions, pos);
      g_ptr_array_add (labels, names[i]);
    }
  return positions->len;
}

static gboolean
espalier_heatmap_layer_is_tight (EspalierChartLayer *layer,
                                 GtkOrientation      orientation)
{
  return TRUE;
}

static char *
format_value (double v)
{
  if (v == floor (v) && fabs (v) < 1e9)
    return g_strdup_printf ("%.0f", v);
  return g_strdup_printf ("%.2f", v);
}

static void
draw_cells (EspalierHeatmapLayer *self,
            cairo_t              *cr,
            double                left,
            double                top,
            double                cw,
            double                ch)
{
  double gap = MIN (cw, ch) >= 8 ? 1 : 0;
  GdkRGBA fg;

  espalier_chart_layer_get_cairo_fg (cr, &fg);

  for (guint r = 0; r < self->rows; r++)
    for (guint c = 0; c < self->cols; c++)
      {
        guint i = r * self->cols + c;
        double x0 = round (left + c * cw);
        double x1 = round (left + (c + 1) * cw);
        double y0 = round (top + r * ch);
        double y1 = round (top + (r + 1) * ch);
        GdkRGBA color;
        double strength;

        cell_color (self, i, &color, &strength);
        gdk_cairo_set_source_rgba (cr, &color);
        cairo_rectangle (cr, x0, y0, x1 - x0 - gap, y1 - y0 - gap);
        cairo_fill (cr);

        if (self->show_values && isfinite (self->values[i]))
          {
            g_autofree char *text = format_value (self->values[i]);
            g_autoptr(PangoLayout) layout = espalier_chart_layer_create_layout (cr, text);
            int tw, th;

            pango_layout_get_pixel_size (layout, &tw, &th);
            if (tw + 2 > x1 - x0 || th > y1 - y0)
              continue;
            if (strength > 0.55)
              cairo_set_source_rgb (cr, 1, 1, 1);
            else if (self->values[i] == 0)
              cairo_set_source_rgba (cr, fg.red, fg.green, fg.blue, fg.alpha * 0.35);
            else
              gdk_cairo_set_source_rgba (cr, &fg);
            cairo_move_to (cr, round ((x0 + x1 - gap - tw) / 2), round ((y0 + y1 - gap - th) / 2));
            pango_cairo_show_layout (cr, layout);
          }
      }
}

static void
espalier_heatmap_layer_draw (EspalierChartLayer    *layer,
                             cairo_t               *cr,
                             const graphene_rect_t *area,
                             EspalierChartAxis     *x_axis,
                             EspalierChartAxis     *y_axis)
{
  EspalierHeatmapLayer *self = ESPALIER_HEATMAP_LAYER (layer);
  double left, top, right, bottom, cw, ch;

  if (self->rows == 0 || self->cols == 0)
    return;

  espalier_chart_layer_map (area, x_axis, y_axis, self->x_min, self->y_max, &left, &top);
  espalier_chart_layer_map (area, x_axis, y_axis, self->x_max, self->y_min, &right, &bottom);
  if (!isfinite (left) || !isfinite (top) || !isfinite (right) || !isfinite (bottom) ||
      right <= left || bottom <= top)
    return;

  cw = (right - left) / self->cols;
  ch = (bottom - top) / self->rows;

  cairo_save (cr);
  if ((gsize) self->rows * self->cols <= MAX_DISCRETE_CELLS)
    {
      draw_cells (self, cr, left, top, cw, ch);
    }
  else
    {
      cairo_pattern_t *pattern;
      cairo_matrix_t matrix;

      if (self->image == NULL)
        self->image = build_image (self);

      /* One image, scaled smoothly, pixel centres on cell centres: the pattern maps
       * user space (pixels) to image space (cells). */
      pattern = cairo_pattern_create_for_surface (self->image);
      cairo_matrix_init_scale (&matrix, 1 / cw, 1 / ch);
      cairo_matrix_translate (&matrix, -left, -top);
      cairo_pattern_set_matrix (pattern, &matrix);
      cairo_pattern_set_extend (pattern, CAIRO_EXTEND_PAD);
      cairo_pattern_set_filter (pattern, CAIRO_FILTER_BILINEAR);
      cairo_set_source (cr, pattern);
      cairo_rectangle (cr, left, top, right - left, bottom - top);
      cairo_fill (cr);
      cairo_pattern_destroy (pattern);
    }
  cairo_restore (cr);
}

/* The cell under pixel (px, py), or FALSE. */
static gboolean
cell_at (EspalierHeatmapLayer  *self,
         const graphene_rect_t *area,
         EspalierChartAxis     *x_axis,
         EspalierChartAxis     *y_axis,
         double                 px,
         double                 py,
         guint                 *row,
         guint                 *col)
{
  double left, top, right, bottom;
  double fc, fr;

  if (self->rows == 0 || self->cols == 0)
    return FALSE;

  espalier_chart_layer_map (area, x_axis, y_axis, self->x_min, self->y_max, &left, &top);
  espalier_chart_layer_map (area, x_axis, y_axis, self->x_max, self->y_min, &right, &bottom);
  if (!(right > left) || !(bottom > top))
    return FALSE;

  fc = (px - left) / (right - left) * self->cols;
  fr = (py - top) / (bottom - top) * self->rows;
  if (fc < 0 || fr < 0 || fc >= self->cols || fr >= self->rows)
    return FALSE;

  *col = (guint) fc;
  *row = (guint) fr;
  return TRUE;
}

static char *
espalier_heatmap_layer_describe_at (EspalierChartLayer    *layer,
                                    const graphene_rect_t *area,
                                    EspalierChartAxis     *x_axis,
                                    EspalierChartAxis     *y_axis,
                                    double                 px,
                                    double                 py,
                                    double                 radius)
{
  EspalierHeatmapLayer *self = ESPALIER_HEATMAP_LAYER (layer);
  g_autofree char *value = NULL;
  const char *x_title, *y_title;
  guint r, c, i;

  if (!cell_at (self, area, x_axis, y_axis, px, py, &r, &c))
    return NULL;

  i = r * self->cols + c;
  value = format_value (self->values[i]);
  x_title = espalier_chart_layer_axis_name (x_axis, "");
  y_title = espalier_chart_layer_axis_name (y_axis, "");

  if (self->row_labels != NULL && self->col_labels != NULL &&
      r < g_strv_length (self->row_labels) && c < g_strv_length (self->col_labels))
    return g_strdup_printf ("%s %s, %s %s: %s", y_title, self->row_labels[r],
                            x_title, self->col_labels[c], value);

  if (self->classes != NULL && self->classes[i] != NO_CLASS)
    return g_strdup_printf (_("class %u (%.2f)"), self->classes[i], self->values[i]);

  return g_strdup_printf (_("row %u, column %u: %s"), r, c, value);
}

static void
espalier_heatmap_layer_finalize (GObject *object)
{
  EspalierHeatmapLayer *self = ESPALIER_HEATMAP_LAYER (object);

  g_free (self->values);
  g_free (self->classes);
  g_strfreev (self->row_labels);
  g_strfreev (self->col_labels);
  g_clear_pointer (&self->image, cairo_surface_destroy);

  G_OBJECT_CLASS (espalier_heatmap_layer_parent_class)->finalize (object);
}

static void
espalier_heatmap_layer_get_property (GObject    *object,
                                     guint       prop_id,
                                     GValue     *value,
                                     GParamSpec *pspec)
{
  EspalierHeatmapLayer *self = ESPALIER_HEATMAP_LAYER (object);

  switch (prop_id)
    {
    case PROP_SHOW_VALUES:
      g_value_set_boolean (value, self->show_values);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_heatmap_layer_set_property (GObject      *object,
                                     guint         prop_id,
                                     const GValue *value,
                                     GParamSpec   *pspec)
{
  EspalierHeatmapLayer *self = ESPALIER_HEATMAP_LAYER (object);

  switch (prop_id)
    {
    case PROP_SHOW_VALUES:
      espalier_heatmap_layer_set_show_values (self, g_value_get_boolean (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
on_notify_color (EspalierHeatmapLayer *self)
{
  g_clear_pointer (&self->image, cairo_surface_destroy);
}

static void
espalier_heatmap_layer_class_init (EspalierHeatmapLayerClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  EspalierChartLayerClass *layer_class = ESPALIER_CHART_LAYER_CLASS (klass);

  object_class->finalize = espalier_heatmap_layer_finalize;
  object_class->get_property = espalier_heatmap_layer_get_property;
  object_class->set_property = espalier_heatmap_layer_set_property;

  layer_class->get_extents = espalier_heatmap_layer_get_extents;
  layer_class->draw = espalier_heatmap_layer_draw;
  layer_class->describe_at = espalier_heatmap_layer_describe_at;
  layer_class->get_axis_labels = espalier_heatmap_layer_get_axis_labels;
  layer_class->is_tight = espalier_heatmap_layer_is_tight;

  properties[PROP_SHOW_VALUES] =
    g_param_spec_boolean ("show-values", NULL, NULL, FALSE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);
}

static void
espalier_heatmap_layer_init (EspalierHeatmapLayer *self)
{
  espalier_chart_layer_set_show_in_legend (ESPALIER_CHART_LAYER (self), FALSE);
  g_signal_connect (self, "notify::color", G_CALLBACK (on_notify_color), NULL);
}

void
espalier_heatmap_layer_set_data (EspalierHeatmapLayer *self,
                                 const double         *values,
                                 const guint          *classes,
                                 guint                 rows,
                                 guint                 cols,
                                 double                x_min,
                                 double                x_max,
                                 double                y_min,
                                 double                y_max)
{
  gsize n = (gsize) rows * cols;

  g_return_if_fail (ESPALIER_IS_HEATMAP_LAYER (self));
  g_return_if_fail (n == 0 || values != NULL);

  g_clear_pointer (&self->values, g_free);
  g_clear_pointer (&self->classes, g_free);
  g_clear_pointer (&self->image, cairo_surface_destroy);
  if (n == 0)
    rows = cols = 0;
  self->rows = rows;
  self->cols = cols;
  self->x_min = MIN (x_min, x_max);
  self->x_max = MAX (x_min, x_max);
  self->y_min = MIN (y_min, y_max);
  self->y_max = MAX (y_min, y_max);
  if (n > 0)
    {
      self->values = g_memdup2 (values, n * sizeof (double));
      if (classes != NULL)
        self->classes = g_memdup2 (classes, n * sizeof (guint));
    }

  self->value_min = G_MAXDOUBLE;
  self->value_max = -G_MAXDOUBLE;
  for (gsize i = 0; i < n; i++)
    if (isfinite (values[i]))
      {
        self->value_min = MIN (self->value_min, values[i]);
        self->value_max = MAX (self->value_max, values[i]);
      }
  if (self->value_min > self->value_max)
    self->value_min = self->value_max = 0;

  espalier_chart_layer_changed (ESPALIER_CHART_LAYER (self));
}

void
espalier_heatmap_layer_set_show_values (EspalierHeatmapLayer *self,
                                        gboolean              show)
{
  g_return_if_fail (ESPALIER_IS_HEATMAP_LAYER (self));

  show = !!show;
  if (self->show_values == (guint) show)
    return;

  self->show_values = show;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_SHOW_VALUES]);
  espalier_chart_layer_changed (ESPALIER_CHART_LAYER (self));
}

void
espalier_heatmap_layer_set_labels (EspalierHeatmapLayer *self,
                                   const char * const   *row_labels,
                                   const char * const   *col_labels)
{
  g_return_if_fail (ESPALIER_IS_HEATMAP_LAYER (self));

  g_strfreev (self->row_labels);
  g_strfreev (self->col_labels);
  self->row_labels = g_strdupv ((char **) row_labels);
  self->col_labels = g_strdupv ((char **) col_labels);
  espalier_chart_layer_changed (ESPALIER_CHART_LAYER (self));
}
