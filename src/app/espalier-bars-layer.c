/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-bars-layer.c: n bars at x = 0..n-1 rising from zero (or from the bottom of a
 * log axis), each with its value printed above it when there is room. The bar names
 * replace the chart's numeric x ticks (get_axis_labels) and the x axis ends exactly at
 * the outer bars' slots (is_tight). Stacked bars are one layer per part, each bar
 * rising from a base (the parts below it) instead of zero; those print no values and
 * name their part in the readout. */

#include "config.h"

#include <math.h>

#include "espalier-chart-layers.h"

struct _EspalierBarsLayer
{
  EspalierChartLayer  parent_instance;

  double             *values;       /* (n) */
  double             *bases;        /* (n) where the bars start, or NULL: zero */
  char              **labels;       /* (n) or NULL */
  guint               n;
  guint               per_bar_colors : 1;
};

G_DEFINE_FINAL_TYPE (EspalierBarsLayer, espalier_bars_layer, ESPALIER_TYPE_CHART_LAYER)

enum {
  PROP_0,
  PROP_PER_BAR_COLORS,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

/* The share of a bar's slot that the bar covers. */
#define BAR_FILL 0.7

EspalierChartLayer *
espalier_bars_layer_new (void)
{
  return g_object_new (ESPALIER_TYPE_BARS_LAYER, NULL);
}

static gboolean
espalier_bars_layer_get_extents (EspalierChartLayer *layer,
                                 double             *x_min,
                                 double             *x_max,
                                 double             *y_min,
                                 double             *y_max)
{
  EspalierBarsLayer *self = ESPALIER_BARS_LAYER (layer);
  double lo = 0, hi = 0;

  if (self->n == 0)
    return FALSE;

  for (guint i = 0; i < self->n; i++)
    {
      double base = self->bases != NULL && isfinite (self->bases[i]) ? self->bases[i] : 0;

      if (!isfinite (self->values[i]))
        continue;
      lo = MIN (lo, MIN (base, base + self->values[i]));
      hi = MAX (hi, MAX (base, base + self->values[i]));
    }

  *x_min = -0.5;
  *x_max = self->n - 0.5;
  *y_min = lo;
  *y_max = hi;
  return TRUE;
}

static guint
espalier_bars_layer_get_axis_labels (EspalierChartLayer *layer,
                                     GtkOrientation      orientation,
                                     GArray             *positions,
                                     GPtrArray          *labels)
{
  EspalierBarsLayer *self = ESPALIER_BARS_LAYER (layer);

  if (orientation != GTK_ORIENTATION_HORIZONTAL || self->labels == NULL)
    return 0;

  for (guint i = 0; i < self->n; i++)
    {
      double x = i;

      g_array_append_val (positions, x);
      g_ptr_array_add (labels, self->labels[i]);
    }
  return self->n;
}

static gboolean
espalier_bars_layer_is_tight (EspalierChartLayer *layer,
                              GtkOrientation      orientation)
{
  return orientation == GTK_ORIENTATION_HORIZONTAL;
}

static char *
format_value (double v)
{
  if (v == floor (v) && fabs (v) < 1e9)
    return g_strdup_printf ("%.0f", v);
  return g_strdup_printf ("%.3g", v);
}

/* The pixel rectangle of bar i; FALSE when it cannot be drawn. */
static gboolean
bar_rect (EspalierBarsLayer     *self,
          guint                  i,
          const graphene_rect_t *area,
          EspalierChartAxis     *x_axis,
          EspalierChartAxis     *y_axis,
          double                *x0,
          double                *x1,
          double                *y_base,
          double                *y_top)
{
  double base = 0;

  if (self->bases != NULL)
    base = self->bases[i];
  else if (espalier_chart_axis_get_logarithmic (y_axis))
    espalier_chart_axis_get_range (y_axis, &base, NULL);

  espalier_chart_layer_map (area, x_axis, y_axis, i - BAR_FILL / 2, base, x0, y_base);
  espalier_chart_layer_map (area, x_axis, y_axis, i + BAR_FILL / 2,
                            self->bases != NULL ? base + self->values[i] : self->values[i],
                            x1, y_top);
  if (!isfinite (*x0) || !isfinite (*x1) || !isfinite (*y_base) || !isfinite (*y_top))
    return FALSE;

  /* Pixel-snapped edges; at least one pixel wide. */
  *x0 = round (*x0);
  *x1 = MAX (round (*x1), *x0 + 1);
  *y_base = round (*y_base);
  *y_top = round (*y_top);
  return TRUE;
}

static void
espalier_bars_layer_draw (EspalierChartLayer    *layer,
                          cairo_t               *cr,
                          const graphene_rect_t *area,
                          EspalierChartAxis     *x_axis,
                          EspalierChartAxis     *y_axis)
{
  EspalierBarsLayer *self = ESPALIER_BARS_LAYER (layer);
  GdkRGBA fg;

  espalier_chart_layer_get_cairo_fg (cr, &fg);

  cairo_save (cr);
  for (guint i = 0; i < self->n; i++)
    {
      GdkRGBA color;
      double x0, x1, yb, yt, top, h, r;

      if (!bar_rect (self, i, area, x_axis, y_axis, &x0, &x1, &yb, &yt))
        continue;

      if (self->per_bar_colors)
        espalier_chart_palette_color (i, &color);
      else
        color = *espalier_chart_layer_get_color (layer);

      /* A bar with slightly rounded outer corners; a stacked part is square. */
      top = MIN (yb, yt);
      h = fabs (yb - yt);
      r = self->bases != NULL ? 0.0 : MIN (3.0, MIN ((x1 - x0) / 2, h / 2));
      cairo_new_path (cr);
      if (yt <= yb)
        {
          cairo_move_to (cr, x0, yb);
          cairo_arc (cr, x0 + r, top + r, r, G_PI, 1.5 * G_PI);
          cairo_arc (cr, x1 - r, top + r, r, 1.5 * G_PI, 2 * G_PI);
          cairo_line_to (cr, x1, yb);
        }
      else
        {
          cairo_move_to (cr, x0, yb);
          cairo_arc_negative (cr, x0 + r, yt - r, r, G_PI, 0.5 * G_PI);
          cairo_arc_negative (cr, x1 - r, yt - r, r, 0.5 * G_PI, 0);
          cairo_line_to (cr, x1, yb);
        }
      cairo_close_path (cr);
      cairo_set_source_rgba (cr, color.red, color.green, color.blue, 0.85);
      cairo_fill (cr);

      /* The value above the bar (below a negative one) when it fits the slot. */
      if (isfinite (self->values[i]) && self->bases == NULL)
        {
          g_autofree char *text = format_value (self->values[i]);
          g_autoptr(PangoLayout) layout = espalier_chart_layer_create_layout (cr, text);
          int tw, th;

          pango_layout_get_pixel_size (layout, &tw, &th);
          if (tw <= (x1 - x0) / BAR_FILL - 2)
            {
              double ty = yt <= yb ? top - th - 2 : top + h + 2;

              if (ty >= area->origin.y - 1 &&
                  ty + th <= area->origin.y + area->size.height + 1)
                {
                  gdk_cairo_set_source_rgba (cr, &fg);
                  cairo_move_to (cr, round ((x0 + x1 - tw) / 2), round (ty));
                  pango_cairo_show_layout (cr, layout);
                }
            }
        }
    }
  cairo_restore (cr);
}

static char *
espalier_bars_layer_describe_at (EspalierChartLayer    *layer,
                                 const graphene_rect_t *area,
                                 EspalierChartAxis     *x_axis,
                                 EspalierChartAxis     *y_axis,
                                 double                 px,
                                 double                 py,
                                 double                 radius)
{
  EspalierBarsLayer *self = ESPALIER_BARS_LAYER (layer);
  g_autofree char *value = NULL;
  double x0, x1, yb, yt;
  double fx;
  long i;

  if (self->n == 0 || area->size.width <= 0)
    return NULL;

  fx = espalier_chart_axis_denormalize (x_axis, (px - area->origin.x) / area->size.width);
  i = lround (fx);
  if (i < 0 || i >= (long) self->n)
    return NULL;
  if (!bar_rect (self, i, area, x_axis, y_axis, &x0, &x1, &yb, &yt))
    return NULL;
  if (px < x0 - radius || px > x1 + radius ||
      py < MIN (yb, yt) - radius || py > MAX (yb, yt) + radius)
    return NULL;

  value = format_value (self->values[i]);
  if (self->bases != NULL)
    {
      const char *part = espalier_chart_layer_get_title (layer);

      if (self->labels != NULL)
        return g_strdup_printf ("%s · %s: %s", self->labels[i], part != NULL ? part : "", value);
      return g_strdup_printf ("%ld · %s: %s", i, part != NULL ? part : "", value);
    }
  if (self->labels != NULL)
    return g_strdup_printf ("%s: %s", self->labels[i], value);
  return g_strdup_printf ("%ld: %s", i, value);
}

static void
espalier_bars_layer_finalize (GObject *object)
{
  EspalierBarsLayer *self = ESPALIER_BARS_LAYER (object);

  g_free (self->values);
  g_free (self->bases);
  g_strfreev (self->labels);

  G_OBJECT_CLASS (espalier_bars_layer_parent_class)->finalize (object);
}

static void
espalier_bars_layer_get_property (GObject    *object,
                                  guint       prop_id,
                                  GValue     *value,
                                  GParamSpec *pspec)
{
  EspalierBarsLayer *self = ESPALIER_BARS_LAYER (object);

  switch (prop_id)
    {
    case PROP_PER_BAR_COLORS:
      g_value_set_boolean (value, self->per_bar_colors);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_bars_layer_set_property (GObject      *object,
                                  guint         prop_id,
                                  const GValue *value,
                                  GParamSpec   *pspec)
{
  EspalierBarsLayer *self = ESPALIER_BARS_LAYER (object);

  switch (prop_id)
    {
    case PROP_PER_BAR_COLORS:
      espalier_bars_layer_set_per_bar_colors (self, g_value_get_boolean (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_bars_layer_class_init (EspalierBarsLayerClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  EspalierChartLayerClass *layer_class = ESPALIER_CHART_LAYER_CLASS (klass);

  object_class->finalize = espalier_bars_layer_finalize;
  object_class->get_property = espalier_bars_layer_get_property;
  object_class->set_property = espalier_bars_layer_set_property;

  layer_class->get_extents = espalier_bars_layer_get_extents;
  layer_class->draw = espalier_bars_layer_draw;
  layer_class->describe_at = espalier_bars_layer_describe_at;
  layer_class->get_axis_labels = espalier_bars_layer_get_axis_labels;
  layer_class->is_tight = espalier_bars_layer_is_tight;

  properties[PROP_PER_BAR_COLORS] =
    g_param_spec_boolean ("per-bar-colors", NULL, NULL, FALSE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);
}

static void
espalier_bars_layer_init (EspalierBarsLayer *self)
{
}

void
espalier_bars_layer_set_values (EspalierBarsLayer  *self,
                                const double       *values,
                                const char * const *labels,
                                guint               n)
{
  espalier_bars_layer_set_stacked (self, values, NULL, labels, n);
}

void
espalier_bars_layer_set_stacked (EspalierBarsLayer  *self,
                                 const double       *values,
                                 const double       *bases,
                                 const char * const *labels,
                                 guint               n)
{
  g_return_if_fail (ESPALIER_IS_BARS_LAYER (self));
  g_return_if_fail (n == 0 || values != NULL);

  g_free (self->values);
  g_free (self->bases);
  g_strfreev (self->labels);
  self->values = n > 0 ? g_memdup2 (values, n * sizeof (double)) : NULL;
  self->bases = n > 0 && bases != NULL ? g_memdup2 (bases, n * sizeof (double)) : NULL;
  self->labels = NULL;
  self->n = n;
  if (labels != NULL && n > 0)
    {
      self->labels = g_new0 (char *, n + 1);
      for (guint i = 0; i < n; i++)
        self->labels[i] = g_strdup (labels[i] != NULL ? labels[i] : "");
    }
  espalier_chart_layer_changed (ESPALIER_CHART_LAYER (self));
}

void
espalier_bars_layer_set_per_bar_colors (EspalierBarsLayer *self,
                                        gboolean           per_bar)
{
  g_return_if_fail (ESPALIER_IS_BARS_LAYER (self));

  per_bar = !!per_bar;
  if (self->per_bar_colors == (guint) per_bar)
    return;

  self->per_bar_colors = per_bar;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_PER_BAR_COLORS]);
  espalier_chart_layer_changed (ESPALIER_CHART_LAYER (self));
}
