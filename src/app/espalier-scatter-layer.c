/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-scatter-layer.c: a series drawn as dots, coloured by class (palette colour
 * k) or in the layer colour. On raster targets each colour's dot is rendered once by
 * cairo into a small premultiplied stamp, the stamps are blended into one image of the
 * plot by hand, and that image is painted once: far cheaper than a cairo fill per
 * point. Vector targets (SVG, PDF) get real circles. Optional per-point labels (drawn
 * beside the points when few) and class names feed the readout and the legend. */

#include "config.h"

#include <glib/gi18n.h>

#include <math.h>

#include "espalier-chart-layer-private.h"
#include "espalier-chart-layers.h"
#include "espalier-ui-util.h"

#define NO_CLASS G_MAXUINT

/* Labels are drawn beside the points when there are at most this many. */
#define MAX_LABELLED_POINTS 24

struct _EspalierScatterLayer
{
  EspalierChartLayer  parent_instance;

  EspalierSeries     *series;
  double              radius;
  char              **labels;       /* (n_points) readout names, or NULL */
  char              **class_names;  /* (n_classes) names for legend and readout, or NULL */
};

G_DEFINE_FINAL_TYPE (EspalierScatterLayer, espalier_scatter_layer, ESPALIER_TYPE_CHART_LAYER)

enum {
  PROP_0,
  PROP_SERIES,
  PROP_RADIUS,
  PROP_LABELS,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

EspalierChartLayer *
espalier_scatter_layer_new (EspalierSeries *series)
{
  g_return_val_if_fail (series == NULL || ESPALIER_IS_SERIES (series), NULL);

  return g_object_new (ESPALIER_TYPE_SCATTER_LAYER, "series", series, NULL);
}

static void
set_series (EspalierScatterLayer *self,
            EspalierSeries       *series)
{
  if (!espalier_chart_layer_set_series_slot (ESPALIER_CHART_LAYER (self), &self->series, series))
    return;

  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_SERIES]);
  espalier_chart_layer_changed (ESPALIER_CHART_LAYER (self));
}

static void
pad_range (double *lo,
           double *hi)
{
  double pad = (*hi - *lo) * 0.04;
  double new_lo = *lo - pad, new_hi = *hi + pad;

  if (*lo > 0 && new_lo <= 0)
    new_lo = *lo / 1.2;
  if (*hi < 0 && new_hi >= 0)
    new_hi = *hi / 1.2;
  *lo = new_lo;
  *hi = new_hi;
}

static gboolean
espalier_scatter_layer_get_extents (EspalierChartLayer *layer,
                                    double             *x_min,
                                    double             *x_max,
                                    double             *y_min,
                                    double             *y_max)
{
  EspalierScatterLayer *self = ESPALIER_SCATTER_LAYER (layer);

  if (self->series == NULL ||
      !espalier_series_get_extents (self->series, x_min, x_max, y_min, y_max))
    return FALSE;

  /* A little room around the dots so that none sits on the plot's edge (kept on the
   * same side of zero, for log axes). */
  pad_range (x_min, x_max);
  pad_range (y_min, y_max);
  return TRUE;
}

static void
point_color (EspalierScatterLayer *self,
             const guint          *klass,
             guint                 i,
             GdkRGBA              *color)
{
  if (klass != NULL && klass[i] != NO_CLASS)
    espalier_chart_palette_color (klass[i], color);
  else
    *color = *espalier_chart_layer_get_color (ESPALIER_CHART_LAYER (self));
}

/* The dot as drawn everywhere: a filled disc with a rim in the background colour, so
 * that dots stay apart from each other and from a heat map beneath. */
static void
dot_path_fill (cairo_t       *cr,
               double         cx,
               double         cy,
               double         r,
               const GdkRGBA *color,
               const GdkRGBA *rim)
{
  cairo_new_path (cr);
  cairo_arc (cr, cx, cy, r, 0, 2 * G_PI);
  cairo_set_source_rgba (cr, color->red, color->green, color->blue, 0.92);
  cairo_fill_preserve (cr);
  cairo_set_source_rgba (cr, rim->red, rim->green, rim->blue, 0.8);
  cairo_set_line_width (cr, 1);
  cairo_stroke (cr);
}

/* A stamp of the dot, size x size pixels with the centre at the middle pixel. */
static cairo_surface_t *
make_stamp (double         r,
            const GdkRGBA *color,
            const GdkRGBA *rim,
            int           *size)
{
  cairo_surface_t *surface;
  cairo_t *cr;

  *size = 2 * (int) ceil (r + 1) + 1;
  surface = cairo_image_surface_create (CAIRO_FORMAT_ARGB32, *size, *size);
  cr = cairo_create (surface);
  dot_path_fill (cr, *size / 2.0, *size / 2.0, r, color, rim);
  cairo_destroy (cr);
  cairo_surface_flush (surface);
  return surface;
}

/* Few labelled points (variants on the Optimize chart, layers on the roofline) get their
 * names beside them, placed so that no two names overlap. */
static void
draw_labels (EspalierScatterLayer  *self,
             cairo_t               *cr,
             const graphene_rect_t *area,
             EspalierChartAxis     *x_axis,
             EspalierChartAxis     *y_axis)
{
  const double *xs = espalier_series_get_x (self->series);
  const double *ys = espalier_series_get_y (self->series);
  guint n = espalier_series_get_n_points (self->series);
  g_autoptr(GArray) placed_rects = g_array_new (FALSE, FALSE, sizeof (graphene_rect_t));
  GdkRGBA fg;

  if (self->labels == NULL || n > MAX_LABELLED_POINTS)
    return;

  espalier_chart_layer_get_cairo_fg (cr, &fg);
  cairo_set_source_rgba (cr, fg.red, fg.green, fg.blue, fg.alpha * 0.75);
  for (guint i = 0; i < n && self->labels[i] != NULL; i++)
    {
      g_autoptr(PangoLayout) layout = NULL;
      double px, py, gap = self->radius + 4;
      int tw, th;
      gboolean placed = FALSE;

      espalier_chart_layer_map (area, x_axis, y_axis, xs[i], ys[i], &px, &py);
      if (!isfinite (px) || !isfinite (py))
        continue;

      layout = espalier_chart_layer_create_layout (cr, self->labels[i]);
      espalier_text_layout_style (layout, PANGO_SCALE_SMALL, PANGO_WEIGHT_NORMAL, FALSE);
      pango_layout_get_pixel_size (layout, &tw, &th);

      /* Right of the dot, else left of it, above or below it: the first place inside the
       * plot that no label drawn before covers. A label with no free place is left to
       * the readout. */
      {
        const double cand[4][2] = {
          { px + gap, py - th / 2.0 },
          { px - gap - tw, py - th / 2.0 },
          { px - tw / 2.0, py - gap - th },
          { px - tw / 2.0, py + gap },
        };

        for (guint c = 0; c < G_N_ELEMENTS (cand) && !placed; c++)
          {
            graphene_rect_t r = GRAPHENE_RECT_INIT (cand[c][0], cand[c][1], tw, th);

            if (r.origin.x < area->origin.x || r.origin.x + tw > area->origin.x + area->size.width
                || r.origin.y < area->origin.y - 1
                || r.origin.y + th > area->origin.y + area->size.height + 1)
              continue;
            placed = TRUE;
            for (guint k = 0; k < placed_rects->len && placed; k++)
              placed = !graphene_rect_intersection (&g_array_index (placed_rects, graphene_rect_t, k),
                                                    &r, NULL);
            if (!placed)
              continue;
            g_array_append_val (placed_rects, r);
            cairo_move_to (cr, round (r.origin.x), round (r.origin.y));
            pango_cairo_show_layout (cr, layout);
          }
      }
    }
}

/* Blend a premultiplied stamp onto a premultiplied ARGB32 canvas at (x, y), clipped. */
static void
blend_stamp (guint32       *canvas,
             int            canvas_stride,   /* in pixels */
             int            canvas_w,
             int            canvas_h,
             const guint32 *stamp,
             int            stamp_stride,    /* in pixels */
             int            size,
             int            x,
             int            y)
{
  int r0 = MAX (0, -y), r1 = MIN (size, canvas_h - y);
  int c0 = MAX (0, -x), c1 = MIN (size, canvas_w - x);

  for (int r = r0; r < r1; r++)
    {
      const guint32 *src = stamp + (gsize) r * stamp_stride;
      guint32 *dst = canvas + (gsize) (y + r) * canvas_stride + x;

      for (int c = c0; c < c1; c++)
        {
          guint32 s = src[c], d, inv;

          if (s == 0)
            continue;
          inv = 255 - (s >> 24);
          if (inv == 0)
            {
              dst[c] = s;
              continue;
            }
          d = dst[c];
          /* OVER per channel: s + d * (1 - s.alpha), rounded. */
          {
            guint32 rb = (d & 0x00ff00ff) * inv + 0x00800080;
            guint32 ag = ((d >> 8) & 0x00ff00ff) * inv + 0x00800080;

            rb = ((rb + ((rb >> 8) & 0x00ff00ff)) >> 8) & 0x00ff00ff;
            ag = ((ag + ((ag >> 8) & 0x00ff00ff)) >> 8) & 0x00ff00ff;
            dst[c] = s + (rb | (ag << 8));
          }
        }
    }
}

static void
espalier_scatter_layer_draw (EspalierChartLayer    *layer,
                             cairo_t               *cr,
                             const graphene_rect_t *area,
                             EspalierChartAxis     *x_axis,
                             EspalierChartAxis     *y_axis)
{
  EspalierScatterLayer *self = ESPALIER_SCATTER_LAYER (layer);
  /* stamps[k]: palette class k (mod 10) at index k, the layer colour at the end */
  cairo_surface_t *stamps[11] = { NULL };
  cairo_surface_t *canvas = NULL;
  const double *xs, *ys;
  const guint *klass;
  GdkRGBA rim;
  gboolean vector;
  guint n;
  int size = 0, margin, ox = 0, oy = 0, cw = 0, ch = 0;

  if (self->series == NULL || (n = espalier_series_get_n_points (self->series)) == 0)
    return;

  xs = espalier_series_get_x (self->series);
  ys = espalier_series_get_y (self->series);
  klass = espalier_series_get_class (self->series);
  vector = espalier_chart_layer_target_is_vector (cr);
  espalier_chart_layer_get_cairo_bg (cr, &rim);

  /* Raster targets: the dots are blended into one image of the plot, painted once. */
  margin = (int) ceil (self->radius) + 4;
  if (!vector)
    {
      ox = (int) floor (area->origin.x) - margin;
      oy = (int) floor (area->origin.y) - margin;
      cw = (int) ceil (area->size.width) + 2 * margin;
      ch = (int) ceil (area->size.height) + 2 * margin;
      canvas = cairo_image_surface_create (CAIRO_FORMAT_ARGB32, cw, ch);
      cairo_surface_flush (canvas);
    }

  cairo_save (cr);
  for (guint i = 0; i < n; i++)
    {
      GdkRGBA color;
      double px, py;

      espalier_chart_layer_map (area, x_axis, y_axis, xs[i], ys[i], &px, &py);
      if (!isfinite (px) || !isfinite (py) ||
          px < area->origin.x - margin || px > area->origin.x + area->size.width + margin ||
          py < area->origin.y - margin || py > area->origin.y + area->size.height + margin)
        continue;

      point_color (self, klass, i, &color);
      if (vector)
        {
          dot_path_fill (cr, px, py, self->radius, &color, &rim);
        }
      else
        {
          guint k = klass != NULL && klass[i] != NO_CLASS ? klass[i] % 10 : 10;

          if (stamps[k] == NULL)
            stamps[k] = make_stamp (self->radius, &color, &rim, &size);
          blend_stamp ((guint32 *) (gpointer) cairo_image_surface_get_data (canvas),
                       cairo_image_surface_get_stride (canvas) / 4, cw, ch,
                       (const guint32 *) (gpointer) cairo_image_surface_get_data (stamps[k]),
                       cairo_image_surface_get_stride (stamps[k]) / 4, size,
                       (int) lround (px) - ox - size / 2, (int) lround (py) - oy - size / 2);
        }
    }

  if (canvas != NULL)
    {
      cairo_surface_mark_dirty (canvas);
      cairo_set_source_surface (cr, canvas, ox, oy);
      cairo_paint (cr);
      cairo_surface_destroy (canvas);
    }

  draw_labels (self, cr, area, x_axis, y_axis);
  cairo_restore (cr);

  for (guint k = 0; k < G_N_ELEMENTS (stamps); k++)
    g_clear_pointer (&stamps[k], cairo_surface_destroy);
}

static char *
espalier_scatter_layer_describe_at (EspalierChartLayer    *layer,
                                    const graphene_rect_t *area,
                                    EspalierChartAxis     *x_axis,
                                    EspalierChartAxis     *y_axis,
                                    double                 px,
                                    double                 py,
                                    double                 radius)
{
  EspalierScatterLayer *self = ESPALIER_SCATTER_LAYER (layer);
  const guint *klass;
  guint best_i;
  GString *text;

  best_i = espalier_chart_layer_nearest_point (area, x_axis, y_axis, self->series, px, py,
                                               radius + self->radius);
  if (best_i == G_MAXUINT)
    return NULL;

  klass = espalier_series_get_class (self->series);
  text = g_string_new (NULL);
  if (self->labels != NULL && best_i < g_strv_length (self->labels))
    g_string_append_printf (text, "%s: ", self->labels[best_i]);
  else if (klass != NULL && klass[best_i] != NO_CLASS)
    {
      if (self->class_names != NULL && klass[best_i] < g_strv_length (self->class_names))
        g_string_append_printf (text, "%s: ", self->class_names[klass[best_i]]);
      else
        g_string_append_printf (text, _("class %u: "), klass[best_i]);
    }
  g_string_append_printf (text, "%s %.4g, %s %.4g",
                          espalier_chart_layer_axis_name (x_axis, "x"),
                          espalier_series_get_x (self->series)[best_i],
                          espalier_chart_layer_axis_name (y_axis, "y"),
                          espalier_series_get_y (self->series)[best_i]);
  return g_string_free (text, FALSE);
}

static void
espalier_scatter_layer_dispose (GObject *object)
{
  EspalierScatterLayer *self = ESPALIER_SCATTER_LAYER (object);

  espalier_chart_layer_set_series_slot (ESPALIER_CHART_LAYER (self), &self->series, NULL);

  G_OBJECT_CLASS (espalier_scatter_layer_parent_class)->dispose (object);
}

static void
espalier_scatter_layer_finalize (GObject *object)
{
  EspalierScatterLayer *self = ESPALIER_SCATTER_LAYER (object);

  g_strfreev (self->labels);
  g_strfreev (self->class_names);

  G_OBJECT_CLASS (espalier_scatter_layer_parent_class)->finalize (object);
}

static void
espalier_scatter_layer_get_property (GObject    *object,
                                     guint       prop_id,
                                     GValue     *value,
                                     GParamSpec *pspec)
{
  EspalierScatterLayer *self = ESPALIER_SCATTER_LAYER (object);

  switch (prop_id)
    {
    case PROP_SERIES:
      g_value_set_object (value, self->series);
      break;
    case PROP_RADIUS:
      g_value_set_double (value, self->radius);
      break;
    case PROP_LABELS:
      g_value_set_boxed (value, self->labels);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_scatter_layer_set_property (GObject      *object,
                                     guint         prop_id,
                                     const GValue *value,
                                     GParamSpec   *pspec)
{
  EspalierScatterLayer *self = ESPALIER_SCATTER_LAYER (object);

  switch (prop_id)
    {
    case PROP_SERIES:
      set_series (self, g_value_get_object (value));
      break;
    case PROP_RADIUS:
      espalier_scatter_layer_set_radius (self, g_value_get_double (value));
      break;
    case PROP_LABELS:
      espalier_scatter_layer_set_labels (self, g_value_get_boxed (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_scatter_layer_class_init (EspalierScatterLayerClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  EspalierChartLayerClass *layer_class = ESPALIER_CHART_LAYER_CLASS (klass);

  object_class->dispose = espalier_scatter_layer_dispose;
  object_class->finalize = espalier_scatter_layer_finalize;
  object_class->get_property = espalier_scatter_layer_get_property;
  object_class->set_property = espalier_scatter_layer_set_property;

  layer_class->get_extents = espalier_scatter_layer_get_extents;
  layer_class->draw = espalier_scatter_layer_draw;
  layer_class->describe_at = espalier_scatter_layer_describe_at;

  properties[PROP_SERIES] =
    g_param_spec_object ("series", NULL, NULL, ESPALIER_TYPE_SERIES,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_RADIUS] =
    g_param_spec_double ("radius", NULL, NULL, 0.5, 64, 3,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_LABELS] =
    g_param_spec_boxed ("labels", NULL, NULL, G_TYPE_STRV,
                        G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);
}

static void
espalier_scatter_layer_init (EspalierScatterLayer *self)
{
  self->radius = 3;
}

EspalierSeries *
espalier_scatter_layer_get_series (EspalierScatterLayer *self)
{
  g_return_val_if_fail (ESPALIER_IS_SCATTER_LAYER (self), NULL);

  return self->series;
}

void
espalier_scatter_layer_set_radius (EspalierScatterLayer *self,
                                   double                radius)
{
  g_return_if_fail (ESPALIER_IS_SCATTER_LAYER (self));
  g_return_if_fail (radius > 0);

  if (self->radius == radius)
    return;

  self->radius = radius;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_RADIUS]);
  espalier_chart_layer_changed (ESPALIER_CHART_LAYER (self));
}

void
espalier_scatter_layer_set_labels (EspalierScatterLayer *self,
                                   const char * const   *labels)
{
  g_return_if_fail (ESPALIER_IS_SCATTER_LAYER (self));

  g_strfreev (self->labels);
  self->labels = g_strdupv ((char **) labels);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_LABELS]);
}

void
espalier_scatter_layer_set_class_names (EspalierScatterLayer *self,
                                        const char * const   *names)
{
  g_return_if_fail (ESPALIER_IS_SCATTER_LAYER (self));

  g_strfreev (self->class_names);
  self->class_names = g_strdupv ((char **) names);
  espalier_chart_layer_changed (ESPALIER_CHART_LAYER (self));
}

const char * const *
espalier_scatter_layer_get_class_names (EspalierScatterLayer *self)
{
  g_return_val_if_fail (ESPALIER_IS_SCATTER_LAYER (self), NULL);

  return (const char * const *) self->class_names;
}
