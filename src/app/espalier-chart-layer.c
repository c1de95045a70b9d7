/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-chart-layer.c: the base class of chart layers: title, colour, visibility and
 * the "changed" signal, the data-to-pixel mapping every layer draws through, the text
 * helpers layers use for labels, the chart palette, and the helpers the layer classes
 * share (espalier-chart-layer-private.h). It draws nothing itself. */

#include "config.h"

#include <math.h>

#include "espalier-chart-layer-private.h"
#include "espalier-ui-util.h"

typedef struct
{
  char    *title;
  GdkRGBA  color;
  guint    color_set : 1;
  guint    visible : 1;
  guint    show_in_legend : 1;
} EspalierChartLayerPrivate;

G_DEFINE_ABSTRACT_TYPE_WITH_PRIVATE (EspalierChartLayer, espalier_chart_layer, G_TYPE_OBJECT)

enum {
  PROP_0,
  PROP_TITLE,
  PROP_COLOR,
  PROP_VISIBLE,
  PROP_SHOW_IN_LEGEND,
  N_PROPS
};

enum {
  CHANGED,
  N_SIGNALS
};

static GParamSpec *properties[N_PROPS];
static guint signals[N_SIGNALS];

/* A qualitative palette from the GNOME colour hues, in an order that keeps neighbours
 * apart; each is mid-light so it reads on light and dark backgrounds. (10, RGB) */
static const guint32 palette[] = {
  0x3584e4, /* blue */
  0xff7800, /* orange */
  0x2ec27e, /* green */
  0xe01b24, /* red */
  0x9141ac, /* purple */
  0x986a44, /* brown */
  0xd6569b, /* pink */
  0x8f8e92, /* grey */
  0xe5a50a, /* yellow */
  0x1aa3b8, /* teal */
};

/* Text settings the chart attaches to a cairo context for its layers. */
typedef struct
{
  PangoContext *context;
  GdkRGBA       fg;
  GdkRGBA       bg;
} CairoFont;

static cairo_user_data_key_t cairo_font_key;

static void
cairo_font_free (gpointer data)
{
  CairoFont *font = data;

  g_clear_object (&font->context);
  g_free (font);
}

static void
espalier_chart_layer_finalize (GObject *object)
{
  EspalierChartLayer *self = ESPALIER_CHART_LAYER (object);
  EspalierChartLayerPrivate *priv = espalier_chart_layer_get_instance_private (self);

  g_free (priv->title);

  G_OBJECT_CLASS (espalier_chart_layer_parent_class)->finalize (object);
}

static void
espalier_chart_layer_get_property (GObject    *object,
                                   guint       prop_id,
                                   GValue     *value,
                                   GParamSpec *pspec)
{
  EspalierChartLayer *self = ESPALIER_CHART_LAYER (object);
  EspalierChartLayerPrivate *priv = espalier_chart_layer_get_instance_private (self);

  switch (prop_id)
    {
    case PROP_TITLE:
      g_value_set_string (value, priv->title);
      break;
    case PROP_COLOR:
      g_value_set_boxed (value, &priv->color);
      break;
    case PROP_VISIBLE:
      g_value_set_boolean (value, priv->visible);
      break;
    case PROP_SHOW_IN_LEGEND:
      g_value_set_boolean (value, priv->show_in_legend);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_chart_layer_set_property (GObject      *object,
                                   guint         prop_id,
                                   const GValue *value,
                                   GParamSpec   *pspec)
{
  EspalierChartLayer *self = ESPALIER_CHART_LAYER (object);

  switch (prop_id)
    {
    case PROP_TITLE:
      espalier_chart_layer_set_title (self, g_value_get_string (value));
      break;
    case PROP_COLOR:
      if (g_value_get_boxed (value) != NULL)
        espalier_chart_layer_set_color (self, g_value_get_boxed (value));
      break;
    case PROP_VISIBLE:
      espalier_chart_layer_set_visible (self, g_value_get_boolean (value));
      break;
    case PROP_SHOW_IN_LEGEND:
      espalier_chart_layer_set_show_in_legend (self, g_value_get_boolean (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_chart_layer_class_init (EspalierChartLayerClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->finalize = espalier_chart_layer_finalize;
  object_class->get_property = espalier_chart_layer_get_property;
  object_class->set_property = espalier_chart_layer_set_property;

  properties[PROP_TITLE] =
    g_param_spec_string ("title", NULL, NULL, NULL,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_COLOR] =
    g_param_spec_boxed ("color", NULL, NULL, GDK_TYPE_RGBA,
                        G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_VISIBLE] =
    g_param_spec_boolean ("visible", NULL, NULL, TRUE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_SHOW_IN_LEGEND] =
    g_param_spec_boolean ("show-in-legend", NULL, NULL, TRUE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  signals[CHANGED] =
    g_signal_new ("changed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                  0, NULL, NULL, NULL, G_TYPE_NONE, 0);
}

static void
espalier_chart_layer_init (EspalierChartLayer *self)
{
  EspalierChartLayerPrivate *priv = espalier_chart_layer_get_instance_private (self);

  espalier_chart_palette_color (0, &priv->color);
  priv->visible = TRUE;
  priv->show_in_legend = TRUE;
}

const char *
espalier_chart_layer_get_title (EspalierChartLayer *self)
{
  EspalierChartLayerPrivate *priv = espalier_chart_layer_get_instance_private (self);

  g_return_val_if_fail (ESPALIER_IS_CHART_LAYER (self), NULL);

  return priv->title;
}

void
espalier_chart_layer_set_title (EspalierChartLayer *self,
                                const char         *title)
{
  EspalierChartLayerPrivate *priv = espalier_chart_layer_get_instance_private (self);

  g_return_if_fail (ESPALIER_IS_CHART_LAYER (self));

  if (g_strcmp0 (priv->title, title) == 0)
    return;

  g_free (priv->title);
  priv->title = g_strdup (title);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_TITLE]);
  espalier_chart_layer_changed (self);
}

const GdkRGBA *
espalier_chart_layer_get_color (EspalierChartLayer *self)
{
  EspalierChartLayerPrivate *priv = espalier_chart_layer_get_instance_private (self);

  g_return_val_if_fail (ESPALIER_IS_CHART_LAYER (self), NULL);

  return &priv->color;
}

static void
apply_color (EspalierChartLayer *self,
             const GdkRGBA      *color)
{
  EspalierChartLayerPrivate *priv = espalier_chart_layer_get_instance_private (self);

  if (gdk_rgba_equal (&priv->color, color))
    return;

  priv->color = *color;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_COLOR]);
  espalier_chart_layer_changed (self);
}

void
espalier_chart_layer_set_color (EspalierChartLayer *self,
                                const GdkRGBA      *color)
{
  EspalierChartLayerPrivate *priv = espalier_chart_layer_get_instance_private (self);

  g_return_if_fail (ESPALIER_IS_CHART_LAYER (self));
  g_return_if_fail (color != NULL);

  priv->color_set = TRUE;
  apply_color (self, color);
}

void
espalier_chart_layer_set_default_color (EspalierChartLayer *self,
                                        const GdkRGBA      *color)
{
  EspalierChartLayerPrivate *priv = espalier_chart_layer_get_instance_private (self);

  g_return_if_fail (ESPALIER_IS_CHART_LAYER (self));
  g_return_if_fail (color != NULL);

  if (!priv->color_set)
    apply_color (self, color);
}

gboolean
espalier_chart_layer_get_visible (EspalierChartLayer *self)
{
  EspalierChartLayerPrivate *priv = espalier_chart_layer_get_instance_private (self);

  g_return_val_if_fail (ESPALIER_IS_CHART_LAYER (self), FALSE);

  return priv->visible;
}

void
espalier_chart_layer_set_visible (EspalierChartLayer *self,
                                  gboolean            visible)
{
  EspalierChartLayerPrivate *priv = espalier_chart_layer_get_instance_private (self);

  g_return_if_fail (ESPALIER_IS_CHART_LAYER (self));

  visible = !!visible;
  if (priv->visible == (guint) visible)
    return;

  priv->visible = visible;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_VISIBLE]);
  espalier_chart_layer_changed (self);
}

gboolean
espalier_chart_layer_get_show_in_legend (EspalierChartLayer *self)
{
  EspalierChartLayerPrivate *priv = espalier_chart_layer_get_instance_private (self);

  g_return_val_if_fail (ESPALIER_IS_CHART_LAYER (self), FALSE);

  return priv->show_in_legend;
}

void
espalier_chart_layer_set_show_in_legend (EspalierChartLayer *self,
                                         gboolean            show)
{
  EspalierChartLayerPrivate *priv = espalier_chart_layer_get_instance_private (self);

  g_return_if_fail (ESPALIER_IS_CHART_LAYER (self));

  show = !!show;
  if (priv->show_in_legend == (guint) show)
    return;

  priv->show_in_legend = show;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_SHOW_IN_LEGEND]);
  espalier_chart_layer_changed (self);
}

void
espalier_chart_layer_changed (EspalierChartLayer *self)
{
  g_return_if_fail (ESPALIER_IS_CHART_LAYER (self));

  g_signal_emit (self, signals[CHANGED], 0);
}

void
espalier_chart_layer_map (const graphene_rect_t *area,
                          EspalierChartAxis     *x_axis,
                          EspalierChartAxis     *y_axis,
                          double                 x,
                          double                 y,
                          double                *px,
                          double                *py)
{
  double nx = espalier_chart_axis_normalize (x_axis, x);
  double ny = espalier_chart_axis_normalize (y_axis, y);

  if (px != NULL)
    *px = area->origin.x + nx * area->size.width;
  if (py != NULL)
    *py = area->origin.y + (1.0 - ny) * area->size.height;
}

void
espalier_chart_layer_set_cairo_style (cairo_t       *cr,
                                      PangoContext  *context,
                                      const GdkRGBA *fg,
                                      const GdkRGBA *bg)
{
  CairoFont *font;

  g_return_if_fail (cr != NULL);
  g_return_if_fail (PANGO_IS_CONTEXT (context));

  font = g_new0 (CairoFont, 1);
  font->context = g_object_ref (context);
  font->fg = fg != NULL ? *fg : (GdkRGBA) { 0, 0, 0, 1 };
  font->bg = bg != NULL ? *bg : (GdkRGBA) { 1, 1, 1, 1 };
  cairo_set_user_data (cr, &cairo_font_key, font, cairo_font_free);
}

PangoLayout *
espalier_chart_layer_create_layout (cairo_t    *cr,
                                    const char *text)
{
  CairoFont *font;
  PangoLayout *layout;

  g_return_val_if_fail (cr != NULL, NULL);

  font = cairo_get_user_data (cr, &cairo_font_key);
  if (font != NULL)
    layout = pango_layout_new (font->context);
  else
    layout = pango_cairo_create_layout (cr);
  pango_layout_set_text (layout, text != NULL ? text : "", -1);
  return layout;
}

void
espalier_chart_layer_get_cairo_fg (cairo_t *cr,
                                   GdkRGBA *fg)
{
  CairoFont *font;

  g_return_if_fail (cr != NULL);
  g_return_if_fail (fg != NULL);

  font = cairo_get_user_data (cr, &cairo_font_key);
  *fg = font != NULL ? font->fg : (GdkRGBA) { 0, 0, 0, 1 };
}

void
espalier_chart_layer_get_cairo_bg (cairo_t *cr,
                                   GdkRGBA *bg)
{
  CairoFont *font;

  g_return_if_fail (cr != NULL);
  g_return_if_fail (bg != NULL);

  font = cairo_get_user_data (cr, &cairo_font_key);
  *bg = font != NULL ? font->bg : (GdkRGBA) { 1, 1, 1, 1 };
}

void
espalier_chart_palette_color (guint    k,
                              GdkRGBA *color)
{
  guint32 c;

  g_return_if_fail (color != NULL);

  c = palette[k % G_N_ELEMENTS (palette)];
  color->red = ((c >> 16) & 0xff) / 255.0f;
  color->green = ((c >> 8) & 0xff) / 255.0f;
  color->blue = (c & 0xff) / 255.0f;
  color->alpha = 1.0f;
}

/* Protected: espalier-chart-layer-private.h */

static void
on_series_changed (EspalierChartLayer *self)
{
  espalier_chart_layer_changed (self);
}

gboolean
espalier_chart_layer_set_series_slot (EspalierChartLayer  *self,
                                      EspalierSeries     **slot,
                                      EspalierSeries      *series)
{
  g_return_val_if_fail (ESPALIER_IS_CHART_LAYER (self), FALSE);
  g_return_val_if_fail (slot != NULL, FALSE);
  g_return_val_if_fail (series == NULL || ESPALIER_IS_SERIES (series), FALSE);

  if (!espalier_follow (slot, series, "changed", G_CALLBACK (on_series_changed), self,
                        G_CONNECT_SWAPPED))
    return FALSE;
  /* The legend shows the series' title until the layer gets its own. */
  if (series != NULL && espalier_chart_layer_get_title (self) == NULL)
    espalier_chart_layer_set_title (self, espalier_series_get_title (series));
  return TRUE;
}

guint
espalier_chart_layer_nearest_point (const graphene_rect_t *area,
                                    EspalierChartAxis     *x_axis,
                                    EspalierChartAxis     *y_axis,
                                    EspalierSeries        *series,
                                    double                 px,
                                    double                 py,
                                    double                 radius)
{
  const double *xs, *ys;
  double best = radius * radius;
  guint n, best_i = G_MAXUINT;

  if (series == NULL)
    return G_MAXUINT;

  n = espalier_series_get_n_points (series);
  xs = espalier_series_get_x (series);
  ys = espalier_series_get_y (series);
  for (guint i = 0; i < n; i++)
    {
      double qx, qy, d;

      espalier_chart_layer_map (area, x_axis, y_axis, xs[i], ys[i], &qx, &qy);
      d = (qx - px) * (qx - px) + (qy - py) * (qy - py);
      if (d <= best)
        {
          best = d;
          best_i = i;
        }
    }
  return best_i;
}

const char *
espalier_chart_layer_axis_name (EspalierChartAxis *axis,
                                const char        *fallback)
{
  const char *title = espalier_chart_axis_get_title (axis);

  return title != NULL && *title != '\0' ? title : fallback;
}

gboolean
espalier_chart_layer_target_is_vector (cairo_t *cr)
{
  switch (cairo_surface_get_type (cairo_get_target (cr)))
    {
    case CAIRO_SURFACE_TYPE_PDF:
    case CAIRO_SURFACE_TYPE_PS:
    case CAIRO_SURFACE_TYPE_SVG:
      return TRUE;
    default:
      return FALSE;
    }
}
