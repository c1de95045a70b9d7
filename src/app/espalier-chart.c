/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-chart.c: the chart widget. It fits its axes around the visible layers'
 * data, lays out a title, a legend, tick labels (numeric, or category names from a
 * layer) and axis titles around a plot rectangle, and draws all of it with cairo, the
 * layers through their axes, in snapshot and when saving (PNG, SVG, PDF). A pointer
 * over the plot shows a readout of the nearest item; a right click offers "Save
 * Image…". Changes of layers, series or axes queue a redraw, which GTK coalesces to
 * one per frame. It owns no data: layers and their series do. */

#include "config.h"

#include <math.h>
#include <cairo-pdf.h>
#include <cairo-svg.h>
#include <glib/gi18n.h>
#include <adwaita.h>

#include "espalier-chart.h"
#include "espalier-chart-layers.h"
#include "espalier-ui-util.h"

struct _EspalierChart
{
  GtkWidget             parent_instance;

  char                 *title;
  char                 *empty_text;
  EspalierChartAxis    *x_axis;
  EspalierChartAxis    *y_axis;
  GPtrArray            *layers;          /* (n_layers) EspalierChartLayer, owned */

  GtkWidget            *popover;         /* context menu, NULL until first shown */
  GtkNativeDialog      *save_dialog;     /* while "Save Image…" is open */
  GtkFileFilter        *filters[3];      /* PNG, SVG, PDF of save_dialog */

  double                hover_x;
  double                hover_y;
  guint                 draw_count;
  guint                 hovering : 1;
  guint                 show_legend : 1;
  guint                 square : 1;
  guint                 in_layout : 1;   /* fitting axes: their "changed" is ours */
};

G_DEFINE_FINAL_TYPE (EspalierChart, espalier_chart, GTK_TYPE_WIDGET)

enum {
  PROP_0,
  PROP_TITLE,
  PROP_X_AXIS,
  PROP_Y_AXIS,
  PROP_SHOW_LEGEND,
  PROP_SQUARE,
  PROP_EMPTY_TEXT,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

/* Spacing in pixels. */
#define PAD            10.0   /* around everything */
#define LABEL_GAP       6.0   /* between tick labels and the plot */
#define TITLE_GAP       8.0   /* under the title and legend rows */
#define HOVER_RADIUS    8.0   /* how near the pointer an item must be */
#define SWATCH_W       14.0
#define LEGEND_SPACING 16.0

typedef enum {
  TEXT_TICK,
  TEXT_LABEL,
  TEXT_TITLE,
} TextKind;

/* One legend entry: a swatch of a layer (or of one class of a scatter layer). */
typedef struct
{
  PangoLayout        *layout;
  EspalierChartLayer *layer;        /* borrowed */
  GdkRGBA             color;
  double              x, y;         /* top left of the swatch + text */
  double              width;
} LegendItem;

/* Everything the chart draws around its plot, for one size. */
typedef struct
{
  graphene_rect_t  plot;
  double           width, height;
  double           line_h;          /* height of a tick label line */

  PangoLayout     *title;           /* or NULL */
  double           title_y;
  GArray          *legend;          /* LegendItem */

  /* Ticks: data positions and their label layouts (x and y). */
  GArray          *x_pos;           /* (n_x) double */
  GPtrArray       *x_text;          /* (n_x) PangoLayout */
  GArray          *y_pos;           /* (n_y) double */
  GPtrArray       *y_text;          /* (n_y) PangoLayout */
  gboolean         x_category;
  gboolean         y_category;
  gboolean         x_rotated;       /* x labels at 45 degrees */
  guint            x_stride;        /* draw every x_stride-th category label */
  guint            y_stride;

  PangoLayout     *x_title;         /* or NULL */
  PangoLayout     *y_title;         /* or NULL */
  double           y_title_x;       /* its left edge: beside the plot, which a square
                                     * chart centres */
  gboolean         empty;
} ChartLayout;

GtkWidget *
espalier_chart_new (void)
{
  return g_object_new (ESPALIER_TYPE_CHART, NULL);
}

/* Layout and colours */

static PangoLayout *
make_text (EspalierChart *self,
           const char    *text,
           TextKind       kind)
{
  GtkWidget *widget = GTK_WIDGET (self);

  switch (kind)
    {
    case TEXT_TICK:
      return espalier_text_layout_new (widget, text, PANGO_SCALE_SMALL, PANGO_WEIGHT_NORMAL, TRUE);
    case TEXT_TITLE:
      return espalier_text_layout_new (widget, text, 1.0, PANGO_WEIGHT_BOLD, FALSE);
    case TEXT_LABEL:
    default:
      return espalier_text_layout_new (widget, text, 1.0, PANGO_WEIGHT_NORMAL, FALSE);
    }
}

static double
text_width (PangoLayout *layout)
{
  int w, h;

  pango_layout_get_pixel_size (layout, &w, &h);
  return w;
}

static double
text_height (PangoLayout *layout)
{
  int w, h;

  pango_layout_get_pixel_size (layout, &w, &h);
  return h;
}

static void
get_colors (EspalierChart *self,
            GdkRGBA       *fg,
            GdkRGBA       *bg)
{
  GtkStyleContext *context = gtk_widget_get_style_context (GTK_WIDGET (self));

  gtk_style_context_get_color (context, fg);
  if (bg != NULL &&
      !gtk_style_context_lookup_color (context, "view_bg_color", bg) &&
      !gtk_style_context_lookup_color (context, "window_bg_color", bg))
    {
      /* Light text on dark, or the other way round. */
      double l = 0.3 * fg->red + 0.59 * fg->green + 0.11 * fg->blue;

      *bg = l > 0.5 ? (GdkRGBA) { 0.14, 0.14, 0.14, 1 } : (GdkRGBA) { 1, 1, 1, 1 };
    }
}

static void
chart_layout_clear (ChartLayout *l)
{
  g_clear_object (&l->title);
  g_clear_object (&l->x_title);
  g_clear_object (&l->y_title);
  if (l->legend != NULL)
    {
      for (guint i = 0; i < l->legend->len; i++)
        g_object_unref (g_array_index (l->legend, LegendItem, i).layout);
      g_array_unref (l->legend);
    }
  g_clear_pointer (&l->x_pos, g_array_unref);
  g_clear_pointer (&l->y_pos, g_array_unref);
  g_clear_pointer (&l->x_text, g_ptr_array_unref);
  g_clear_pointer (&l->y_text, g_ptr_array_unref);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (ChartLayout, chart_layout_clear)

/* Fit the auto axes around the visible layers; FALSE when no layer has data. */
static gboolean
fit_axes (EspalierChart *self)
{
  double x_lo = G_MAXDOUBLE, x_hi = -G_MAXDOUBLE;
  double y_lo = G_MAXDOUBLE, y_hi = -G_MAXDOUBLE;
  gboolean x_tight = FALSE, y_tight = FALSE;
  gboolean any = FALSE;

  for (guint i = 0; i < self->layers->len; i++)
    {
      EspalierChartLayer *layer = g_ptr_array_index (self->layers, i);
      EspalierChartLayerClass *klass = ESPALIER_CHART_LAYER_GET_CLASS (layer);
      double x0, x1, y0, y1;

      if (!espalier_chart_layer_get_visible (layer) || klass->get_extents == NULL ||
          !klass->get_extents (layer, &x0, &x1, &y0, &y1))
        continue;

      any = TRUE;
      x_lo = MIN (x_lo, x0);
      x_hi = MAX (x_hi, x1);
      y_lo = MIN (y_lo, y0);
      y_hi = MAX (y_hi, y1);
      if (klass->is_tight != NULL)
        {
          x_tight |= klass->is_tight (layer, GTK_ORIENTATION_HORIZONTAL);
          y_tight |= klass->is_tight (layer, GTK_ORIENTATION_VERTICAL);
        }
    }
  if (!any)
    return FALSE;

  self->in_layout = TRUE;
  if (x_tight)
    espalier_chart_axis_fit_exact (self->x_axis, x_lo, x_hi);
  else
    espalier_chart_axis_fit (self->x_axis, x_lo, x_hi);
  if (y_tight)
    espalier_chart_axis_fit_exact (self->y_axis, y_lo, y_hi);
  else
    espalier_chart_axis_fit (self->y_axis, y_lo, y_hi);
  self->in_layout = FALSE;
  return TRUE;
}

/* Category labels of the first visible layer that has some for this axis. */
static gboolean
collect_categories (EspalierChart  *self,
                    GtkOrientation  orientation,
                    GArray         *positions,
                    GPtrArray      *texts)
{
  g_autoptr(GPtrArray) labels = g_ptr_array_new ();

  for (guint i = 0; i < self->layers->len; i++)
    {
      EspalierChartLayer *layer = g_ptr_array_index (self->layers, i);
      EspalierChartLayerClass *klass = ESPALIER_CHART_LAYER_GET_CLASS (layer);

      if (!espalier_chart_layer_get_visible (layer) || klass->get_axis_labels == NULL)
        continue;
      if (klass->get_axis_labels (layer, orientation, positions, labels) > 0)
        break;
      g_array_set_size (positions, 0);
      g_ptr_array_set_size (labels, 0);
    }

  for (guint i = 0; i < labels->len; i++)
    g_ptr_array_add (texts, make_text (self, g_ptr_array_index (labels, i), TEXT_TICK));
  return labels->len > 0;
}

static void
numeric_ticks (EspalierChart     *self,
               EspalierChartAxis *axis,
               guint              max_ticks,
               GArray            *positions,
               GPtrArray         *texts)
{
  g_autoptr(GArray) ticks = espalier_chart_axis_get_ticks (axis, max_ticks);

  g_array_set_size (positions, 0);
  g_ptr_array_set_size (texts, 0);
  for (guint i = 0; i < ticks->len; i++)
    {
      double v = g_array_index (ticks, double, i);
      g_autofree char *label = espalier_chart_axis_format (axis, v);

      g_array_append_val (positions, v);
      g_ptr_array_add (texts, make_text (self, label, TEXT_TICK));
    }
}

static double
max_text_width (GPtrArray *texts)
{
  double w = 0;

  for (guint i = 0; i < texts->len; i++)
    w = MAX (w, text_width (g_ptr_array_index (texts, i)));
  return w;
}

static void
add_legend_item (EspalierChart      *self,
                 ChartLayout        *l,
                 EspalierChartLayer *layer,
                 const char         *text,
                 const GdkRGBA      *color)
{
  LegendItem item = { 0 };

  item.layout = make_text (self, text, TEXT_TICK);
  item.layer = layer;
  item.color = *color;
  item.width = SWATCH_W + 5 + text_width (item.layout);
  g_array_append_val (l->legend, item);
}

static void
collect_legend (EspalierChart *self,
                ChartLayout   *l)
{
  l->legend = g_array_new (FALSE, TRUE, sizeof (LegendItem));
  if (!self->show_legend)
    return;

  for (guint i = 0; i < self->layers->len; i++)
    {
      EspalierChartLayer *layer = g_ptr_array_index (self->layers, i);
      const char *title = espalier_chart_layer_get_title (layer);

      if (!espalier_chart_layer_get_visible (layer) ||
          !espalier_chart_layer_get_show_in_legend (layer))
        continue;

      if (ESPALIER_IS_SCATTER_LAYER (layer))
        {
          const char * const *names =
            espalier_scatter_layer_get_class_names (ESPALIER_SCATTER_LAYER (layer));

          if (names != NULL)
            {
              for (guint k = 0; names[k] != NULL; k++)
                {
                  GdkRGBA color;

                  espalier_chart_palette_color (k, &color);
                  add_legend_item (self, l, layer, names[k], &color);
                }
              continue;
            }
        }

      if (title != NULL && *title != '\0')
        add_legend_item (self, l, layer, title, espalier_chart_layer_get_color (layer));
    }
}

/* Lay out legend items in right-aligned rows of at most `avail` pixels from y; returns
 * the height used. first_row_avail: room left in the first row (beside the title). */
static double
place_legend (ChartLayout *l,
              double       right,
              double       avail,
              double       first_row_avail,
              double       y)
{
  guint start = 0;
  double row_h = l->line_h + 2;
  double used = 0;
  gboolean first = TRUE;

  while (start < l->legend->len)
    {
      double row_avail = first ? first_row_avail : avail;
      double w = 0;
      guint end = start;

      for (; end < l->legend->len; end++)
        {
          LegendItem *item = &g_array_index (l->legend, LegendItem, end);
          double add = item->width + (end > start ? LEGEND_SPACING : 0);

          if (end > start && w + add > row_avail)
            break;
          w += add;
        }
      if (first && w > row_avail && first_row_avail < avail)
        {
          /* Not even one item fits beside the title: start below it. */
          first = FALSE;
          y += row_h;
          used += row_h;
          continue;
        }

      {
        double x = right - w;

        for (guint i = start; i < end; i++)
          {
            LegendItem *item = &g_array_index (l->legend, LegendItem, i);

            item->x = round (x);
            item->y = round (y);
            x += item->width + LEGEND_SPACING;
          }
      }
      start = end;
      first = FALSE;
      y += row_h;
      used += row_h;
    }
  return used;
}

static void
chart_layout_compute (EspalierChart *self,
                      double         width,
                      double         height,
                      ChartLayout   *l)
{
  g_autoptr(PangoLayout) probe = NULL;
  const char *x_title = espalier_chart_axis_get_title (self->x_axis);
  const char *y_title = espalier_chart_axis_get_title (self->y_axis);
  double top = PAD, bottom, left, right;
  double plot_w, plot_h, y_label_w, x_label_h;
  guint max_ticks;

  memset (l, 0, sizeof *l);
  l->width = width;
  l->height = height;
  l->empty = !fit_axes (self);
  l->x_pos = g_array_new (FALSE, FALSE, sizeof (double));
  l->y_pos = g_array_new (FALSE, FALSE, sizeof (double));
  l->x_text = g_ptr_array_new_with_free_func (g_object_unref);
  l->y_text = g_ptr_array_new_with_free_func (g_object_unref);
  l->x_stride = l->y_stride = 1;

  probe = make_text (self, "0.9", TEXT_TICK);
  l->line_h = text_height (probe);

  /* Title and legend rows. */
  collect_legend (self, l);
  if (self->title != NULL && *self->title != '\0')
    {
      double title_w, title_h;

      l->title = make_text (self, self->title, TEXT_TITLE);
      title_w = text_width (l->title);
      title_h = text_height (l->title);
      l->title_y = top;
      if (l->legend->len > 0)
        {
          double used = place_legend (l, width - PAD, width - 2 * PAD,
                                      width - 2 * PAD - title_w - 2 * LEGEND_SPACING,
                                      top + (title_h - l->line_h) / 2);
          top += MAX (title_h, used);
        }
      else
        top += title_h;
      top += TITLE_GAP;
    }
  else if (l->legend->len > 0)
    {
      top += place_legend (l, width - PAD, width - 2 * PAD, width - 2 * PAD, top);
      top += TITLE_GAP - 2;
    }

  if (x_title != NULL && *x_title != '\0')
    l->x_title = make_text (self, x_title, TEXT_LABEL);
  if (y_title != NULL && *y_title != '\0')
    l->y_title = make_text (self, y_title, TEXT_LABEL);

  /* Y ticks, from an estimate of the plot height. */
  bottom = PAD + l->line_h + LABEL_GAP + (l->x_title != NULL ? text_height (l->x_title) + 4 : 0);
  plot_h = MAX (height - top - bottom, 1);
  l->y_category = collect_categories (self, GTK_ORIENTATION_VERTICAL, l->y_pos, l->y_text);
  if (!l->y_category)
    {
      max_ticks = (guint) CLAMP (plot_h / (l->line_h * 2.2), 2, 11);
      numeric_ticks (self, self->y_axis, max_ticks, l->y_pos, l->y_text);
    }
  y_label_w = max_text_width (l->y_text);

  left = PAD + y_label_w + LABEL_GAP;
  if (l->y_title != NULL)
    left += text_height (l->y_title) + 6;
  right = PAD;

  /* X ticks: thinned until their labels do not touch. */
  l->x_category = collect_categories (self, GTK_ORIENTATION_HORIZONTAL, l->x_pos, l->x_text);
  plot_w = MAX (width - left - right, 1);
  if (self->square)
    plot_w = MIN (plot_w, plot_h);
  if (!l->x_category)
    {
      max_ticks = (guint) CLAMP (plot_w / 70, 2, 12);
      for (;;)
        {
          double w;

          numeric_ticks (self, self->x_axis, max_ticks, l->x_pos, l->x_text);
          w = max_text_width (l->x_text);
          if (max_ticks <= 2 || l->x_pos->len < 2 || (l->x_pos->len - 1) * (w + 14) <= plot_w)
            break;
          max_ticks--;
        }
      /* The last label is centred on the right edge: leave it room. */
      if (l->x_text->len > 0)
        right = MAX (right, text_width (g_ptr_array_index (l->x_text, l->x_text->len - 1)) / 2 + 2);
      x_label_h = l->line_h;
    }
  else
    {
      double spacing = plot_w / MAX (l->x_pos->len, 1);
      double w = max_text_width (l->x_text);

      x_label_h = l->line_h;
      if (w + 6 > spacing)
        {
          /* Tilted labels need less room along the axis. */
          l->x_rotated = TRUE;
          x_label_h = (w + l->line_h) * G_SQRT2 / 2;
          while (l->line_h * G_SQRT2 * 1.1 > spacing * l->x_stride)
            l->x_stride++;
        }
    }

  bottom = PAD + x_label_h + LABEL_GAP;
  if (l->x_title != NULL)
    bottom += text_height (l->x_title) + 4;

  l->plot.origin.x = round (left);
  l->plot.origin.y = round (top);
  l->plot.size.width = MAX (round (width - left - right), 1);
  l->plot.size.height = MAX (round (height - top - bottom), 1);

  if (self->square)
    {
      double side = MIN (l->plot.size.width, l->plot.size.height);

      l->plot.origin.x += round ((l->plot.size.width - side) / 2);
      l->plot.size.width = side;
      l->plot.size.height = side;
    }
  l->y_title_x = l->plot.origin.x - round (left) + PAD;

  if (l->y_category)
    {
      double spacing = l->plot.size.height / MAX (l->y_pos->len, 1);

      while (l->line_h * 1.05 > spacing * l->y_stride)
        l->y_stride++;
    }
}

/* Drawing */

static void
draw_axes (EspalierChart     *self,
           cairo_t           *cr,
           const ChartLayout *l,
           const GdkRGBA     *fg)
{
  const graphene_rect_t *p = &l->plot;
  double px0 = p->origin.x, py0 = p->origin.y;
  double px1 = px0 + p->size.width, py1 = py0 + p->size.height;

  cairo_save (cr);
  cairo_set_line_width (cr, 1);

  /* Grid lines at numeric ticks. */
  espalier_cairo_set_source (cr, fg, 0.1);
  if (!l->y_category)
    for (guint i = 0; i < l->y_pos->len; i++)
      {
        double y;

        espalier_chart_layer_map (p, self->x_axis, self->y_axis, 0,
                                  g_array_index (l->y_pos, double, i), NULL, &y);
        if (!isfinite (y))
          continue;
        y = round (y) + 0.5;
        cairo_move_to (cr, px0, y);
        cairo_line_to (cr, px1, y);
      }
  if (!l->x_category)
    for (guint i = 0; i < l->x_pos->len; i++)
      {
        double x;

        espalier_chart_layer_map (p, self->x_axis, self->y_axis,
                                  g_array_index (l->x_pos, double, i), 0, &x, NULL);
        if (!isfinite (x))
          continue;
        x = round (x) + 0.5;
        cairo_move_to (cr, x, py0);
        cairo_line_to (cr, x, py1);
      }
  cairo_stroke (cr);

  /* Axis lines: left and bottom, unless both axes are categories (a matrix). */
  if (!(l->x_category && l->y_category))
    {
      espalier_cairo_set_source (cr, fg, 0.35);
      cairo_move_to (cr, px0 + 0.5, py0);
      cairo_line_to (cr, px0 + 0.5, py1 + 0.5);
      cairo_line_to (cr, px1, py1 + 0.5);
      cairo_stroke (cr);
    }

  /* Y labels, right-aligned and centred on their tick. */
  espalier_cairo_set_source (cr, fg, 0.7);
  for (guint i = 0; i < l->y_pos->len; i += l->y_stride)
    {
      PangoLayout *text = g_ptr_array_index (l->y_text, i);
      double y;

      espalier_chart_layer_map (p, self->x_axis, self->y_axis, 0,
                                g_array_index (l->y_pos, double, i), NULL, &y);
      if (!isfinite (y) || y < py0 - 1 || y > py1 + 1)
        continue;
      cairo_move_to (cr, round (px0 - LABEL_GAP - text_width (text)),
                     round (y - text_height (text) / 2));
      pango_cairo_show_layout (cr, text);
    }

  /* X labels: centred under their tick, or tilted so that they end at it. */
  for (guint i = 0; i < l->x_pos->len; i += l->x_stride)
    {
      PangoLayout *text = g_ptr_array_index (l->x_text, i);
      double x;

      espalier_chart_layer_map (p, self->x_axis, self->y_axis,
                                g_array_index (l->x_pos, double, i), 0, &x, NULL);
      if (!isfinite (x) || x < px0 - 1 || x > px1 + 1)
        continue;
      if (l->x_rotated)
        {
          cairo_save (cr);
          cairo_translate (cr, round (x), round (py1 + LABEL_GAP));
          cairo_rotate (cr, -G_PI / 4);
          cairo_move_to (cr, -text_width (text) - 2, -text_height (text) / 2);
          pango_cairo_show_layout (cr, text);
          cairo_restore (cr);
        }
      else
        {
          cairo_move_to (cr, round (x - text_width (text) / 2), round (py1 + LABEL_GAP));
          pango_cairo_show_layout (cr, text);
        }
    }

  /* Axis titles. */
  espalier_cairo_set_source (cr, fg, 0.85);
  if (l->x_title != NULL)
    {
      cairo_move_to (cr, round (px0 + (p->size.width - text_width (l->x_title)) / 2),
                     round (l->height - PAD - text_height (l->x_title)));
      pango_cairo_show_layout (cr, l->x_title);
    }
  if (l->y_title != NULL)
    {
      cairo_save (cr);
      cairo_translate (cr, l->y_title_x,
                       round (py0 + (p->size.height + text_width (l->y_title)) / 2));
      cairo_rotate (cr, -G_PI / 2);
      cairo_move_to (cr, 0, 0);
      pango_cairo_show_layout (cr, l->y_title);
      cairo_restore (cr);
    }

  cairo_restore (cr);
}

static void
draw_legend (cairo_t           *cr,
             const ChartLayout *l,
             const GdkRGBA     *fg)
{
  for (guint i = 0; i < l->legend->len; i++)
    {
      const LegendItem *item = &g_array_index (l->legend, LegendItem, i);
      double cy = item->y + l->line_h / 2;

      gdk_cairo_set_source_rgba (cr, &item->color);
      if (ESPALIER_IS_LINE_LAYER (item->layer))
        {
          gboolean dashed = FALSE;

          g_object_get (item->layer, "dashed", &dashed, NULL);
          cairo_save (cr);
          cairo_set_line_width (cr, 2);
          cairo_set_line_cap (cr, CAIRO_LINE_CAP_ROUND);
          if (dashed)
            {
              double dash[] = { 4, 3 };
              cairo_set_dash (cr, dash, 2, 0);
            }
          cairo_move_to (cr, item->x + 1, round (cy));
          cairo_line_to (cr, item->x + SWATCH_W - 1, round (cy));
          cairo_stroke (cr);
          cairo_restore (cr);
        }
      else if (ESPALIER_IS_SCATTER_LAYER (item->layer))
        {
          cairo_arc (cr, item->x + SWATCH_W / 2, cy, 4, 0, 2 * G_PI);
          cairo_fill (cr);
        }
      else
        {
          cairo_rectangle (cr, item->x + 2, round (cy - 5), SWATCH_W - 4, 10);
          cairo_fill (cr);
        }

      espalier_cairo_set_source (cr, fg, 0.85);
      cairo_move_to (cr, item->x + SWATCH_W + 5, item->y);
      pango_cairo_show_layout (cr, item->layout);
    }
}

static void
draw_with_layout (EspalierChart     *self,
                  cairo_t           *cr,
                  const ChartLayout *l)
{
  const graphene_rect_t *p = &l->plot;
  GdkRGBA fg, bg;

  get_colors (self, &fg, &bg);

  if (l->title != NULL)
    {
      gdk_cairo_set_source_rgba (cr, &fg);
      cairo_move_to (cr, PAD, l->title_y);
      pango_cairo_show_layout (cr, l->title);
    }

  if (l->empty)
    {
      const char *text = self->empty_text != NULL ? self->empty_text : _("No data");
      g_autoptr(PangoLayout) layout = make_text (self, text, TEXT_LABEL);

      pango_layout_set_width (layout, (int) (MAX (l->width - 2 * PAD, 1) * PANGO_SCALE));
      pango_layout_set_alignment (layout, PANGO_ALIGN_CENTER);
      pango_layout_set_wrap (layout, PANGO_WRAP_WORD_CHAR);
      espalier_cairo_set_source (cr, &fg, 0.55);
      cairo_move_to (cr, PAD, round ((l->height - text_height (layout)) / 2));
      pango_cairo_show_layout (cr, layout);
      return;
    }

  draw_axes (self, cr, l, &fg);
  draw_legend (cr, l, &fg);

  /* Layers, clipped to the plot with room for line caps and dots at the edges. */
  cairo_save (cr);
  cairo_rectangle (cr, p->origin.x - 4, p->origin.y - 4,
                   p->size.width + 8, p->size.height + 8);
  cairo_clip (cr);
  espalier_chart_layer_set_cairo_style (cr, gtk_widget_get_pango_context (GTK_WIDGET (self)),
                                        &fg, &bg);
  for (guint i = 0; i < self->layers->len; i++)
    {
      EspalierChartLayer *layer = g_ptr_array_index (self->layers, i);
      EspalierChartLayerClass *klass = ESPALIER_CHART_LAYER_GET_CLASS (layer);

      if (espalier_chart_layer_get_visible (layer) && klass->draw != NULL)
        {
          cairo_save (cr);
          klass->draw (layer, cr, p, self->x_axis, self->y_axis);
          cairo_restore (cr);
        }
    }
  cairo_restore (cr);
}

static char *
describe_with_layout (EspalierChart     *self,
                      const ChartLayout *l,
                      double             x,
                      double             y)
{
  const graphene_rect_t *p = &l->plot;

  if (l->empty ||
      x < p->origin.x - HOVER_RADIUS || x > p->origin.x + p->size.width + HOVER_RADIUS ||
      y < p->origin.y - HOVER_RADIUS || y > p->origin.y + p->size.height + HOVER_RADIUS)
    return NULL;

  /* The topmost layer that has something there. */
  for (guint i = self->layers->len; i > 0; i--)
    {
      EspalierChartLayer *layer = g_ptr_array_index (self->layers, i - 1);
      EspalierChartLayerClass *klass = ESPALIER_CHART_LAYER_GET_CLASS (layer);
      char *text;

      if (!espalier_chart_layer_get_visible (layer) || klass->describe_at == NULL)
        continue;
      text = klass->describe_at (layer, p, self->x_axis, self->y_axis, x, y, HOVER_RADIUS);
      if (text != NULL)
        return text;
    }
  return NULL;
}

/* The readout: a small rounded box beside the pointer, kept inside the widget. */
static void
draw_readout (EspalierChart *self,
              cairo_t       *cr,
              double         width,
              double         height,
              const char    *text)
{
  g_autoptr(PangoLayout) layout = make_text (self, text, TEXT_TICK);
  GdkRGBA fg, bg;
  double w, h, x, y, r = 5;

  get_colors (self, &fg, &bg);
  w = text_width (layout) + 16;
  h = text_height (layout) + 10;
  x = self->hover_x + 14;
  y = self->hover_y + 14;
  if (x + w > width - 2)
    x = self->hover_x - 14 - w;
  if (y + h > height - 2)
    y = self->hover_y - 14 - h;
  x = round (MAX (x, 2));
  y = round (MAX (y, 2));

  cairo_new_path (cr);
  espalier_cairo_rounded_rect (cr, &GRAPHENE_RECT_INIT (x, y, w, h), r);
  espalier_cairo_set_source (cr, &bg, 0.96);
  cairo_fill_preserve (cr);
  espalier_cairo_set_source (cr, &fg, 0.18);
  cairo_set_line_width (cr, 1);
  cairo_stroke (cr);

  gdk_cairo_set_source_rgba (cr, &fg);
  cairo_move_to (cr, x + 8, y + 5);
  pango_cairo_show_layout (cr, layout);
}

/* Callbacks */

static void
on_layer_changed (EspalierChart *self)
{
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

static void
on_axis_changed (EspalierChart *self)
{
  if (!self->in_layout)
    gtk_widget_queue_draw (GTK_WIDGET (self));
}

static void
on_motion (GtkEventControllerMotion *motion,
           double                    x,
           double                    y,
           EspalierChart            *self)
{
  self->hovering = TRUE;
  self->hover_x = x;
  self->hover_y = y;
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

static void
on_leave (GtkEventControllerMotion *motion,
          EspalierChart            *self)
{
  self->hovering = FALSE;
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

static void
popup_menu_at (EspalierChart *self,
               double         x,
               double         y)
{
  GdkRectangle rect = { (int) x, (int) y, 1, 1 };

  if (self->popover == NULL)
    {
      g_autoptr(GMenu) menu = g_menu_new ();

      g_menu_append (menu, _("Save Image…"), "chart.save-image");
      self->popover = gtk_popover_menu_new_from_model (G_MENU_MODEL (menu));
      gtk_popover_set_has_arrow (GTK_POPOVER (self->popover), FALSE);
      gtk_widget_set_halign (self->popover, GTK_ALIGN_START);
      gtk_widget_set_parent (self->popover, GTK_WIDGET (self));
    }
  gtk_popover_set_pointing_to (GTK_POPOVER (self->popover), &rect);
  gtk_popover_popup (GTK_POPOVER (self->popover));
}

static void
on_secondary_pressed (GtkGestureClick *gesture,
                      int              n_press,
                      double           x,
                      double           y,
                      EspalierChart   *self)
{
  gtk_gesture_set_state (GTK_GESTURE (gesture), GTK_EVENT_SEQUENCE_CLAIMED);
  popup_menu_at (self, x, y);
}

static void
menu_popup_action (GtkWidget  *widget,
                   const char *action_name,
                   GVariant   *param)
{
  popup_menu_at (ESPALIER_CHART (widget),
                 gtk_widget_get_width (widget) / 2.0,
                 gtk_widget_get_height (widget) / 2.0);
}

static void
show_save_error (EspalierChart *self,
                 const GError  *error)
{
  GtkRoot *root = gtk_widget_get_root (GTK_WIDGET (self));
  GtkWidget *dialog;

  dialog = adw_message_dialog_new (GTK_IS_WINDOW (root) ? GTK_WINDOW (root) : NULL,
                                   _("Could Not Save the Image"), error->message);
  adw_message_dialog_add_response (ADW_MESSAGE_DIALOG (dialog), "close", _("_Close"));
  gtk_window_present (GTK_WINDOW (dialog));
}

static void
on_save_response (GtkNativeDialog *dialog,
                  int              response,
                  EspalierChart   *self)
{
  static const char *extensions[] = { ".png", ".svg", ".pdf" };

  if (response == GTK_RESPONSE_ACCEPT)
    {
      g_autoptr(GFile) file = gtk_file_chooser_get_file (GTK_FILE_CHOOSER (dialog));
      g_autofree char *path = file != NULL ? g_file_get_path (file) : NULL;
      g_autoptr(GError) error = NULL;

      if (path != NULL)
        {
          g_autofree char *lower = g_ascii_strdown (path, -1);
          GtkFileFilter *filter = gtk_file_chooser_get_filter (GTK_FILE_CHOOSER (dialog));
          gboolean known = FALSE;

          for (guint i = 0; i < G_N_ELEMENTS (extensions); i++)
            known |= g_str_has_suffix (lower, extensions[i]);
          if (!known)
            {
              /* No extension typed: take the chosen format's. */
              const char *ext = extensions[0];
              char *with_ext;

              for (guint i = 0; i < G_N_ELEMENTS (extensions); i++)
                if (filter == self->filters[i])
                  ext = extensions[i];
              with_ext = g_strconcat (path, ext, NULL);
              g_free (path);
              path = with_ext;
            }
          if (!espalier_chart_save (self, path, 0, 0, &error))
            show_save_error (self, error);
        }
    }

  g_signal_handlers_disconnect_by_func (dialog, on_save_response, self);
  for (guint i = 0; i < G_N_ELEMENTS (self->filters); i++)
    self->filters[i] = NULL;
  g_clear_object (&self->save_dialog);
}

static void
save_image_action (GtkWidget  *widget,
                   const char *action_name,
                   GVariant   *param)
{
  EspalierChart *self = ESPALIER_CHART (widget);
  static const struct { const char *name; const char *mime; } formats[] = {
    { N_("PNG Image"), "image/png" },
    { N_("SVG Image"), "image/svg+xml" },
    { N_("PDF Document"), "application/pdf" },
  };
  GtkRoot *root = gtk_widget_get_root (widget);
  GtkFileChooserNative *native;
  g_autofree char *name = NULL;

  if (self->save_dialog != NULL)
    {
      gtk_native_dialog_show (self->save_dialog);
      return;
    }

  native = gtk_file_chooser_native_new (_("Save Image"),
                                        GTK_IS_WINDOW (root) ? GTK_WINDOW (root) : NULL,
                                        GTK_FILE_CHOOSER_ACTION_SAVE,
                                        _("_Save"), _("_Cancel"));
  gtk_native_dialog_set_modal (GTK_NATIVE_DIALOG (native), TRUE);
  for (guint i = 0; i < G_N_ELEMENTS (formats); i++)
    {
      g_autoptr(GtkFileFilter) filter = gtk_file_filter_new ();

      gtk_file_filter_set_name (filter, _(formats[i].name));
      gtk_file_filter_add_mime_type (filter, formats[i].mime);
      gtk_file_chooser_add_filter (GTK_FILE_CHOOSER (native), filter);
      self->filters[i] = filter;
    }

  if (self->title != NULL && *self->title != '\0')
    {
      name = g_strconcat (self->title, ".png", NULL);
      g_strdelimit (name, "/\\:", '-');
    }
  gtk_file_chooser_set_current_name (GTK_FILE_CHOOSER (native),
                                     name != NULL ? name : _("chart.png"));

  self->save_dialog = GTK_NATIVE_DIALOG (native);
  g_signal_connect (native, "response", G_CALLBACK (on_save_response), self);
  gtk_native_dialog_show (self->save_dialog);
}

/* GtkWidget */

static void
espalier_chart_snapshot (GtkWidget   *widget,
                         GtkSnapshot *snapshot)
{
  EspalierChart *self = ESPALIER_CHART (widget);
  int width = gtk_widget_get_width (widget);
  int height = gtk_widget_get_height (widget);
  g_auto(ChartLayout) l = { 0 };
  cairo_t *cr;

  if (width <= 0 || height <= 0)
    return;

  self->draw_count++;
  cr = gtk_snapshot_append_cairo (snapshot, &GRAPHENE_RECT_INIT (0, 0, width, height));
  chart_layout_compute (self, width, height, &l);
  draw_with_layout (self, cr, &l);

  if (self->hovering && !l.empty &&
      self->hover_x >= l.plot.origin.x && self->hover_x <= l.plot.origin.x + l.plot.size.width &&
      self->hover_y >= l.plot.origin.y && self->hover_y <= l.plot.origin.y + l.plot.size.height)
    {
      GdkRGBA fg;

      /* A faint guide under the pointer. */
      get_colors (self, &fg, NULL);
      espalier_cairo_set_source (cr, &fg, 0.2);
      cairo_set_line_width (cr, 1);
      cairo_move_to (cr, round (self->hover_x) + 0.5, l.plot.origin.y);
      cairo_line_to (cr, round (self->hover_x) + 0.5, l.plot.origin.y + l.plot.size.height);
      cairo_stroke (cr);
    }

  if (self->hovering)
    {
      g_autofree char *text = describe_with_layout (self, &l, self->hover_x, self->hover_y);

      if (text != NULL)
        draw_readout (self, cr, width, height, text);
    }
  cairo_destroy (cr);
}

static void
espalier_chart_measure (GtkWidget      *widget,
                        GtkOrientation  orientation,
                        int             for_size,
                        int            *minimum,
                        int            *natural,
                        int            *minimum_baseline,
                        int            *natural_baseline)
{
  if (orientation == GTK_ORIENTATION_HORIZONTAL)
    {
      *minimum = 120;
      *natural = 400;
    }
  else
    {
      *minimum = 90;
      *natural = 260;
    }
}

static void
espalier_chart_size_allocate (GtkWidget *widget,
                              int        width,
                              int        height,
                              int        baseline)
{
  EspalierChart *self = ESPALIER_CHART (widget);

  if (self->popover != NULL)
    gtk_popover_present (GTK_POPOVER (self->popover));
}

static void
espalier_chart_css_changed (GtkWidget         *widget,
                            GtkCssStyleChange *change)
{
  GTK_WIDGET_CLASS (espalier_chart_parent_class)->css_changed (widget, change);
  gtk_widget_queue_draw (widget);
}

/* GObject */

static void
espalier_chart_constructed (GObject *object)
{
  EspalierChart *self = ESPALIER_CHART (object);

  G_OBJECT_CLASS (espalier_chart_parent_class)->constructed (object);

  if (self->x_axis == NULL)
    self->x_axis = espalier_chart_axis_new (NULL);
  if (self->y_axis == NULL)
    self->y_axis = espalier_chart_axis_new (NULL);
  g_signal_connect_object (self->x_axis, "changed", G_CALLBACK (on_axis_changed),
                           self, G_CONNECT_SWAPPED);
  g_signal_connect_object (self->y_axis, "changed", G_CALLBACK (on_axis_changed),
                           self, G_CONNECT_SWAPPED);
}

static void
espalier_chart_dispose (GObject *object)
{
  EspalierChart *self = ESPALIER_CHART (object);

  if (self->save_dialog != NULL)
    {
      g_signal_handlers_disconnect_by_func (self->save_dialog, on_save_response, self);
      gtk_native_dialog_destroy (self->save_dialog);
      g_clear_object (&self->save_dialog);
    }
  g_clear_pointer (&self->popover, gtk_widget_unparent);
  if (self->layers != NULL)
    espalier_chart_remove_all (self);

  G_OBJECT_CLASS (espalier_chart_parent_class)->dispose (object);
}

static void
espalier_chart_finalize (GObject *object)
{
  EspalierChart *self = ESPALIER_CHART (object);

  g_free (self->title);
  g_free (self->empty_text);
  g_clear_object (&self->x_axis);
  g_clear_object (&self->y_axis);
  g_clear_pointer (&self->layers, g_ptr_array_unref);

  G_OBJECT_CLASS (espalier_chart_parent_class)->finalize (object);
}

static void
espalier_chart_get_property (GObject    *object,
                             guint       prop_id,
                             GValue     *value,
                             GParamSpec *pspec)
{
  EspalierChart *self = ESPALIER_CHART (object);

  switch (prop_id)
    {
    case PROP_TITLE:
      g_value_set_string (value, self->title);
      break;
    case PROP_X_AXIS:
      g_value_set_object (value, self->x_axis);
      break;
    case PROP_Y_AXIS:
      g_value_set_object (value, self->y_axis);
      break;
    case PROP_SHOW_LEGEND:
      g_value_set_boolean (value, self->show_legend);
      break;
    case PROP_SQUARE:
      g_value_set_boolean (value, self->square);
      break;
    case PROP_EMPTY_TEXT:
      g_value_set_string (value, self->empty_text);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_chart_set_property (GObject      *object,
                             guint         prop_id,
                             const GValue *value,
                             GParamSpec   *pspec)
{
  EspalierChart *self = ESPALIER_CHART (object);

  switch (prop_id)
    {
    case PROP_TITLE:
      espalier_chart_set_title (self, g_value_get_string (value));
      break;
    case PROP_X_AXIS:
      self->x_axis = g_value_dup_object (value);
      break;
    case PROP_Y_AXIS:
      self->y_axis = g_value_dup_object (value);
      break;
    case PROP_SHOW_LEGEND:
      espalier_chart_set_show_legend (self, g_value_get_boolean (value));
      break;
    case PROP_SQUARE:
      espalier_chart_set_square (self, g_value_get_boolean (value));
      break;
    case PROP_EMPTY_TEXT:
      espalier_chart_set_empty_text (self, g_value_get_string (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

/* Close the context menu with the chart: GTK 4.8 otherwise keeps querying the pointer
 * over a surface that is gone once the window closes under an open menu. */
static void
espalier_chart_unmap (GtkWidget *widget)
{
  EspalierChart *self = ESPALIER_CHART (widget);

  if (self->popover != NULL)
    gtk_popover_popdown (GTK_POPOVER (self->popover));
  GTK_WIDGET_CLASS (espalier_chart_parent_class)->unmap (widget);
}

static void
espalier_chart_class_init (EspalierChartClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->constructed = espalier_chart_constructed;
  object_class->dispose = espalier_chart_dispose;
  object_class->finalize = espalier_chart_finalize;
  object_class->get_property = espalier_chart_get_property;
  object_class->set_property = espalier_chart_set_property;

  widget_class->snapshot = espalier_chart_snapshot;
  widget_class->measure = espalier_chart_measure;
  widget_class->size_allocate = espalier_chart_size_allocate;
  widget_class->css_changed = espalier_chart_css_changed;
  widget_class->unmap = espalier_chart_unmap;

  properties[PROP_TITLE] =
    g_param_spec_string ("title", NULL, NULL, NULL,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_X_AXIS] =
    g_param_spec_object ("x-axis", NULL, NULL, ESPALIER_TYPE_CHART_AXIS,
                         G_PARAM_READWRITE | G_PARAM_CONSTRUCT_ONLY | G_PARAM_STATIC_STRINGS);
  properties[PROP_Y_AXIS] =
    g_param_spec_object ("y-axis", NULL, NULL, ESPALIER_TYPE_CHART_AXIS,
                         G_PARAM_READWRITE | G_PARAM_CONSTRUCT_ONLY | G_PARAM_STATIC_STRINGS);
  properties[PROP_SHOW_LEGEND] =
    g_param_spec_boolean ("show-legend", NULL, NULL, TRUE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_SQUARE] =
    g_param_spec_boolean ("square", NULL, NULL, FALSE,
                          G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_EMPTY_TEXT] =
    g_param_spec_string ("empty-text", NULL, NULL, NULL,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  gtk_widget_class_install_action (widget_class, "chart.save-image", NULL, save_image_action);
  gtk_widget_class_install_action (widget_class, "menu.popup", NULL, menu_popup_action);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_F10, GDK_SHIFT_MASK, "menu.popup", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_Menu, 0, "menu.popup", NULL);

  gtk_widget_class_set_css_name (widget_class, "chart");
  gtk_widget_class_set_accessible_role (widget_class, GTK_ACCESSIBLE_ROLE_IMG);
}

static void
espalier_chart_init (EspalierChart *self)
{
  GtkEventController *motion;
  GtkGesture *click;

  self->layers = g_ptr_array_new_with_free_func (g_object_unref);
  self->show_legend = TRUE;

  motion = gtk_event_controller_motion_new ();
  g_signal_connect (motion, "enter", G_CALLBACK (on_motion), self);
  g_signal_connect (motion, "motion", G_CALLBACK (on_motion), self);
  g_signal_connect (motion, "leave", G_CALLBACK (on_leave), self);
  gtk_widget_add_controller (GTK_WIDGET (self), motion);

  click = gtk_gesture_click_new ();
  gtk_gesture_single_set_button (GTK_GESTURE_SINGLE (click), GDK_BUTTON_SECONDARY);
  g_signal_connect (click, "pressed", G_CALLBACK (on_secondary_pressed), self);
  gtk_widget_add_controller (GTK_WIDGET (self), GTK_EVENT_CONTROLLER (click));
}

/* Public API */

void
espalier_chart_set_title (EspalierChart *self,
                          const char    *title)
{
  g_return_if_fail (ESPALIER_IS_CHART (self));

  if (g_strcmp0 (self->title, title) == 0)
    return;

  g_free (self->title);
  self->title = g_strdup (title);
  gtk_accessible_update_property (GTK_ACCESSIBLE (self),
                                  GTK_ACCESSIBLE_PROPERTY_LABEL, title != NULL ? title : "",
                                  -1);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_TITLE]);
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

EspalierChartAxis *
espalier_chart_get_x_axis (EspalierChart *self)
{
  g_return_val_if_fail (ESPALIER_IS_CHART (self), NULL);

  return self->x_axis;
}

EspalierChartAxis *
espalier_chart_get_y_axis (EspalierChart *self)
{
  g_return_val_if_fail (ESPALIER_IS_CHART (self), NULL);

  return self->y_axis;
}

void
espalier_chart_add_layer (EspalierChart      *self,
                          EspalierChartLayer *layer)
{
  GdkRGBA color;

  g_return_if_fail (ESPALIER_IS_CHART (self));
  g_return_if_fail (ESPALIER_IS_CHART_LAYER (layer));

  /* Layers without a colour of their own take the next palette colour. */
  espalier_chart_palette_color (self->layers->len, &color);
  espalier_chart_layer_set_default_color (layer, &color);

  g_ptr_array_add (self->layers, g_object_ref (layer));
  g_signal_connect_object (layer, "changed", G_CALLBACK (on_layer_changed),
                           self, G_CONNECT_SWAPPED);
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

void
espalier_chart_remove_layer (EspalierChart      *self,
                             EspalierChartLayer *layer)
{
  guint index;

  g_return_if_fail (ESPALIER_IS_CHART (self));
  g_return_if_fail (ESPALIER_IS_CHART_LAYER (layer));

  if (!g_ptr_array_find (self->layers, layer, &index))
    return;

  g_signal_handlers_disconnect_by_func (layer, on_layer_changed, self);
  g_ptr_array_remove_index (self->layers, index);
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

void
espalier_chart_remove_all (EspalierChart *self)
{
  g_return_if_fail (ESPALIER_IS_CHART (self));

  for (guint i = 0; i < self->layers->len; i++)
    g_signal_handlers_disconnect_by_func (g_ptr_array_index (self->layers, i),
                                          on_layer_changed, self);
  g_ptr_array_set_size (self->layers, 0);
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

guint
espalier_chart_get_n_layers (EspalierChart *self)
{
  g_return_val_if_fail (ESPALIER_IS_CHART (self), 0);

  return self->layers->len;
}

EspalierChartLayer *
espalier_chart_get_layer (EspalierChart *self,
                          guint          i)
{
  g_return_val_if_fail (ESPALIER_IS_CHART (self), NULL);
  g_return_val_if_fail (i < self->layers->len, NULL);

  return g_ptr_array_index (self->layers, i);
}

void
espalier_chart_set_show_legend (EspalierChart *self,
                                gboolean       show)
{
  g_return_if_fail (ESPALIER_IS_CHART (self));

  show = !!show;
  if (self->show_legend == (guint) show)
    return;

  self->show_legend = show;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_SHOW_LEGEND]);
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

void
espalier_chart_set_square (EspalierChart *self,
                           gboolean       square)
{
  g_return_if_fail (ESPALIER_IS_CHART (self));

  square = !!square;
  if (self->square == (guint) square)
    return;

  self->square = square;
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_SQUARE]);
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

void
espalier_chart_set_empty_text (EspalierChart *self,
                               const char    *text)
{
  g_return_if_fail (ESPALIER_IS_CHART (self));

  if (g_strcmp0 (self->empty_text, text) == 0)
    return;

  g_free (self->empty_text);
  self->empty_text = g_strdup (text);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_EMPTY_TEXT]);
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

void
espalier_chart_get_plot_area (EspalierChart   *self,
                              int              width,
                              int              height,
                              graphene_rect_t *area)
{
  g_auto(ChartLayout) l = { 0 };

  g_return_if_fail (ESPALIER_IS_CHART (self));
  g_return_if_fail (area != NULL);

  chart_layout_compute (self, width, height, &l);
  *area = l.plot;
}

void
espalier_chart_draw (EspalierChart *self,
                     cairo_t       *cr,
                     int            width,
                     int            height)
{
  g_auto(ChartLayout) l = { 0 };

  g_return_if_fail (ESPALIER_IS_CHART (self));
  g_return_if_fail (cr != NULL);

  if (width <= 0 || height <= 0)
    return;

  cairo_save (cr);
  chart_layout_compute (self, width, height, &l);
  draw_with_layout (self, cr, &l);
  cairo_restore (cr);
}

gboolean
espalier_chart_save (EspalierChart  *self,
                     const char     *path,
                     int             width,
                     int             height,
                     GError        **error)
{
  g_autofree char *lower = NULL;
  cairo_surface_t *surface;
  cairo_status_t status;
  gboolean png = FALSE;
  GdkRGBA bg;
  cairo_t *cr;

  g_return_val_if_fail (ESPALIER_IS_CHART (self), FALSE);
  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (width <= 0 || height <= 0)
    {
      width = gtk_widget_get_width (GTK_WIDGET (self));
      height = gtk_widget_get_height (GTK_WIDGET (self));
      if (width <= 0 || height <= 0)
        {
          width = 800;
          height = 500;
        }
    }

  lower = g_ascii_strdown (path, -1);
  if (g_str_has_suffix (lower, ".png"))
    {
      surface = cairo_image_surface_create (CAIRO_FORMAT_ARGB32, width, height);
      png = TRUE;
    }
  else if (g_str_has_suffix (lower, ".svg"))
    surface = cairo_svg_surface_create (path, width, height);
  else if (g_str_has_suffix (lower, ".pdf"))
    surface = cairo_pdf_surface_create (path, width, height);
  else
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   _("Cannot save “%s”: the name must end in .png, .svg or .pdf"), path);
      return FALSE;
    }

  cr = cairo_create (surface);
  get_colors (self, &(GdkRGBA) { 0 }, &bg);
  gdk_cairo_set_source_rgba (cr, &bg);
  cairo_paint (cr);
  espalier_chart_draw (self, cr, width, height);
  cairo_destroy (cr);

  if (png)
    status = cairo_surface_write_to_png (surface, path);
  else
    {
      cairo_surface_finish (surface);
      status = cairo_surface_status (surface);
    }
  cairo_surface_destroy (surface);

  if (status != CAIRO_STATUS_SUCCESS)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED,
                   _("Could not save the chart to “%s”: %s"), path,
                   cairo_status_to_string (status));
      return FALSE;
    }
  return TRUE;
}

char *
espalier_chart_describe_at (EspalierChart *self,
                            double         x,
                            double         y)
{
  g_auto(ChartLayout) l = { 0 };
  int width, height;

  g_return_val_if_fail (ESPALIER_IS_CHART (self), NULL);

  width = gtk_widget_get_width (GTK_WIDGET (self));
  height = gtk_widget_get_height (GTK_WIDGET (self));
  if (width <= 0 || height <= 0)
    return NULL;

  chart_layout_compute (self, width, height, &l);
  return describe_with_layout (self, &l, x, y);
}

guint
espalier_chart_get_draw_count (EspalierChart *self)
{
  g_return_val_if_fail (ESPALIER_IS_CHART (self), 0);

  return self->draw_count;
}
