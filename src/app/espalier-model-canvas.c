/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-model-canvas.c: the model canvas: layout of the block chain, drawing with
 * cairo and pango in snapshot, and the edits a pointer or keyboard makes on it (drop a
 * kind, drag a block, keys). Not the palette or the properties panel (the Model page),
 * and no model logic: shapes, counts and reasons come from EspalierModelDoc.
 *
 * Layout, top to bottom: the input block, then for each layer an edge and its block (an
 * invalid layer's reason under it), the last edge, the output block and the totals
 * card. Layer i's block is geometry i; gap k (0..n) is the edge above block k (above
 * the output for k = n): where a drop or a move at that height lands. */
#include "config.h"

#include <glib/gi18n.h>
#include <math.h>
#include <string.h>

#include "espalier-model-canvas.h"
#include "espalier-ui-util.h"

#define MARGIN             24.0
#define MIN_BLOCK_WIDTH    220.0
#define MAX_BLOCK_WIDTH    440.0
#define END_HEIGHT         40.0   /* input and output blocks */
#define LAYER_HEIGHT       58.0
#define SMALL_HEIGHT       34.0   /* activations */
#define SMALL_WIDTH        0.6    /* of a layer block */
#define EDGE_GAP           38.0
#define ERROR_PAD          8.0
#define PLACEHOLDER_HEIGHT 76.0
#define TOTALS_GAP         28.0
#define TOTALS_HEIGHT      66.0
#define RADIUS             10.0
#define DRAG_THRESHOLD     4.0
#define DISABLED_ALPHA     0.4

typedef struct
{
  graphene_rect_t rect;     /* the block */
  double          bottom;   /* below the reason drawn under it, if any */
} BlockGeom;

typedef struct
{
  GArray         *blocks;   /* (n_layers) BlockGeom */
  graphene_rect_t input;
  graphene_rect_t output;
  graphene_rect_t placeholder;   /* empty model only */
  graphene_rect_t totals;
  graphene_rect_t error;    /* the reason's box, when error_index >= 0 */
  int             error_index;
  double          height;
} Layout;

typedef struct
{
  GdkRGBA fg;
  GdkRGBA card;
  GdkRGBA shade;
  GdkRGBA accent_bg;
  GdkRGBA accent;
  GdkRGBA error;
  GdkRGBA success;
  GdkRGBA reshape;          /* pools, Flatten */
  GdkRGBA regular;          /* Dropout, BatchNorm */
} Colors;

struct _EspalierModelCanvas
{
  GtkWidget         parent_instance;

  EspalierModelDoc *doc;
  int               selected;
  int               hovered;

  Layout            layout;
  gboolean          layout_valid;
  int               layout_width;

  /* A block being dragged (drag_from >= 0) or a kind hovering (drop_hover). */
  int               drag_from;
  double            drag_x0, drag_y0;
  double            drag_grab_dy;      /* pointer y - block top when pressed */
  double            drag_y;            /* pointer y now */
  gboolean          dragging;          /* moved past the threshold */
  int               drop_index;        /* gap the insertion line is drawn at, or -1 */

  guint             scroll_source;
  int               scroll_index;

  /* What the last frame drew. */
  GArray           *drawn;             /* (n_drawn) EspalierBlockState as guint8 */
  char             *drawn_error;
  int               drawn_error_index;
};

G_DEFINE_FINAL_TYPE (EspalierModelCanvas, espalier_model_canvas, GTK_TYPE_WIDGET)

enum { PROP_0, PROP_DOC, PROP_SELECTED, N_PROPS };
static GParamSpec *properties[N_PROPS];

GtkWidget *
espalier_model_canvas_new (void)
{
  return g_object_new (ESPALIER_TYPE_MODEL_CANVAS, NULL);
}

/* Formatting. */

static char *
format_number (double v)
{
  return g_strdup_printf ("%g", v);
}

char *
espalier_layer_spec_title (const EsLayerSpec *spec)
{
  const char *title;
  g_autofree char *num = NULL;

  g_return_val_if_fail (spec != NULL, NULL);

  title = es_layer_kind_title (spec->kind);
  switch (spec->kind)
    {
    case ES_LAYER_DENSE:
      return g_strdup_printf ("%s %d", title, spec->units);
    case ES_LAYER_CONV2D:
      return g_strdup_printf ("%s %d %d×%d", title, spec->filters, spec->kernel, spec->kernel);
    case ES_LAYER_MAXPOOL2D:
    case ES_LAYER_AVGPOOL2D:
      return g_strdup_printf ("%s %d×%d", title, spec->kernel, spec->kernel);
    case ES_LAYER_LEAKY_RELU:
      num = format_number (spec->alpha);
      return g_strdup_printf ("%s %s", title, num);
    case ES_LAYER_DROPOUT:
      num = format_number (spec->rate);
      return g_strdup_printf ("%s %s", title, num);
    default:
      return g_strdup (title);
    }
}

/* The second line of a layer block: the settings the title does not show. */
static char *
layer_spec_detail (const EsLayerSpec *spec)
{
  g_autofree char *a = NULL;
  g_autofree char *b = NULL;

  switch (spec->kind)
    {
    case ES_LAYER_DENSE:
      return g_strdup (_("fully connected"));
    case ES_LAYER_CONV2D:
      return g_strdup_printf (_("stride %d · padding %d"), spec->stride, spec->padding);
    case ES_LAYER_MAXPOOL2D:
    case ES_LAYER_AVGPOOL2D:
      return g_strdup_printf (_("stride %d"), spec->stride > 0 ? spec->stride : spec->kernel);
    case ES_LAYER_FLATTEN:
      return g_strdup (_("to a feature vector"));
    case ES_LAYER_DROPOUT:
      return g_strdup (_("while training"));
    case ES_LAYER_BATCHNORM:
      a = format_number (spec->momentum);
      b = format_number (spec->eps);
      return g_strdup_printf (_("momentum %s · ε %s"), a, b);
    default:
      return NULL;
    }
}

/* Activations are drawn as small pills. */
static gboolean
kind_is_small (EsLayerKind kind)
{
  return es_layer_kind_is_activation (kind) || kind == ES_LAYER_SOFTMAX;
}

/* Layout. */

static void
layout_clear (Layout *layout)
{
  g_clear_pointer (&layout->blocks, g_array_unref);
}

/* Text in the canvas's font, styled (espalier_text_layout_style). */
static PangoLayout *
make_text (EspalierModelCanvas *self,
           const char          *text,
           double               scale,
           PangoWeight          weight,
           gboolean             tabular)
{
  return espalier_text_layout_new (GTK_WIDGET (self), text, scale, weight, tabular);
}

static PangoLayout *
make_error_text (EspalierModelCanvas *self,
                 const char          *text,
                 double               width)
{
  PangoLayout *pl = make_text (self, text, 0.85, PANGO_WEIGHT_NORMAL, FALSE);

  pango_layout_set_width (pl, (int) (width * PANGO_SCALE));
  pango_layout_set_wrap (pl, PANGO_WRAP_WORD_CHAR);
  pango_layout_set_alignment (pl, PANGO_ALIGN_CENTER);
  return pl;
}

static double
block_width_for (int width)
{
  return CLAMP (width - 2 * MARGIN, MIN_BLOCK_WIDTH, MAX_BLOCK_WIDTH);
}

/* Lay the chain out for `width`; fills `out` (layout_clear it). */
static void
compute_layout (EspalierModelCanvas *self,
                int                  width,
                Layout              *out)
{
  guint n = self->doc ? espalier_model_doc_get_n_layers (self->doc) : 0;
  double bw = block_width_for (width);
  double cx = MAX (width, bw + 2 * MARGIN) / 2.0;
  double y = MARGIN;
  int first_error = self->doc ? espalier_model_doc_get_first_error (self->doc) : -1;

  memset (out, 0, sizeof *out);
  out->blocks = g_array_sized_new (FALSE, TRUE, sizeof (BlockGeom), n);
  out->error_index = -1;

  out->input = GRAPHENE_RECT_INIT (cx - bw / 2, y, bw, END_HEIGHT);
  y += END_HEIGHT;

  for (guint i = 0; i < n; i++)
    {
      const EsLayerSpec *spec = espalier_model_doc_get_layer (self->doc, i);
      gboolean small = kind_is_small (spec->kind);
      double w = small ? round (bw * SMALL_WIDTH) : bw;
      double h = small ? SMALL_HEIGHT : LAYER_HEIGHT;
      BlockGeom g;

      y += EDGE_GAP;
      g.rect = GRAPHENE_RECT_INIT (round (cx - w / 2), y, w, h);
      y += h;
      if ((int) i == first_error && espalier_model_doc_get_layer_error (self->doc, i) != NULL)
        {
          g_autoptr(PangoLayout) pl = make_error_text (self, espalier_model_doc_get_layer_error (self->doc, i), bw);
          int tw, th;

          pango_layout_get_pixel_size (pl, &tw, &th);
          out->error_index = i;
          out->error = GRAPHENE_RECT_INIT (cx - bw / 2, y + ERROR_PAD, bw, th);
          y += ERROR_PAD + th;
        }
      g.bottom = y;
      g_array_append_val (out->blocks, g);
    }

  if (n == 0)
    {
      y += EDGE_GAP;
      out->placeholder = GRAPHENE_RECT_INIT (cx - bw / 2, y, bw, PLACEHOLDER_HEIGHT);
      y += PLACEHOLDER_HEIGHT;
    }

  y += EDGE_GAP;
  out->output = GRAPHENE_RECT_INIT (cx - bw / 2, y, bw, END_HEIGHT);
  y += END_HEIGHT + TOTALS_GAP;
  out->totals = GRAPHENE_RECT_INIT (cx - bw / 2, y, bw, TOTALS_HEIGHT);
  y += TOTALS_HEIGHT + MARGIN;
  out->height = y;
}

static const Layout *
ensure_layout (EspalierModelCanvas *self)
{
  int width = gtk_widget_get_width (GTK_WIDGET (self));

  if (width <= 0)
    width = (int) (MAX_BLOCK_WIDTH + 2 * MARGIN);
  if (!self->layout_valid || self->layout_width != width)
    {
      layout_clear (&self->layout);
      compute_layout (self, width, &self->layout);
      self->layout_valid = TRUE;
      self->layout_width = width;
    }
  return &self->layout;
}

static void
invalidate_layout (EspalierModelCanvas *self)
{
  self->layout_valid = FALSE;
  gtk_widget_queue_resize (GTK_WIDGET (self));
}

/* The bottom of whatever is above gap k and the top of what is below it. */
static void
gap_bounds (const Layout *layout,
            guint         k,
            double       *top,
            double       *bottom)
{
  guint n = layout->blocks->len;

  *top = k == 0 ? layout->input.origin.y + layout->input.size.height
                : g_array_index (layout->blocks, BlockGeom, k - 1).bottom;
  if (k < n)
    *bottom = g_array_index (layout->blocks, BlockGeom, k).rect.origin.y;
  else if (n == 0)
    *bottom = layout->placeholder.origin.y;
  else
    *bottom = layout->output.origin.y;
}

/* Selection and scrolling. */

static gboolean
scroll_idle_cb (gpointer data)
{
  EspalierModelCanvas *self = data;
  GtkWidget *sw = gtk_widget_get_ancestor (GTK_WIDGET (self), GTK_TYPE_SCROLLED_WINDOW);
  GtkWidget *viewport;
  graphene_rect_t r;
  GtkAdjustment *adj;
  double vx, vy;

  self->scroll_source = 0;
  if (sw == NULL || self->scroll_index < 0
      || !espalier_model_canvas_get_block_rect (self, self->scroll_index, &r))
    return G_SOURCE_REMOVE;
  viewport = gtk_scrolled_window_get_child (GTK_SCROLLED_WINDOW (sw));
  if (viewport == NULL
      || !gtk_widget_translate_coordinates (GTK_WIDGET (self), viewport, 0, r.origin.y, &vx, &vy))
    return G_SOURCE_REMOVE;
  adj = gtk_scrolled_window_get_vadjustment (GTK_SCROLLED_WINDOW (sw));
  vy += gtk_adjustment_get_value (adj);
  gtk_adjustment_clamp_page (adj, vy - EDGE_GAP, vy + r.size.height + EDGE_GAP);
  return G_SOURCE_REMOVE;
}

static void
scroll_to_layer (EspalierModelCanvas *self,
                 int                  index)
{
  self->scroll_index = index;
  if (index >= 0 && self->scroll_source == 0)
    /* After the next layout, when the scrolled window knows the new height. */
    self->scroll_source = g_idle_add_full (G_PRIORITY_LOW, scroll_idle_cb,
                                           g_object_ref (self), g_object_unref);
}

/* While dragging near the top or bottom of the visible part, scroll towards it. */
static void
autoscroll (EspalierModelCanvas *self,
            double               y)
{
  GtkWidget *sw = gtk_widget_get_ancestor (GTK_WIDGET (self), GTK_TYPE_SCROLLED_WINDOW);
  GtkWidget *viewport;
  GtkAdjustment *adj;
  double vx, vy, h, step = 0;
  const double edge = 48.0;

  if (sw == NULL || (viewport = gtk_scrolled_window_get_child (GTK_SCROLLED_WINDOW (sw))) == NULL
      || !gtk_widget_translate_coordinates (GTK_WIDGET (self), viewport, 0, y, &vx, &vy))
    return;
  h = gtk_widget_get_height (viewport);
  if (vy < edge)
    step = -(edge - vy) / 2;
  else if (vy > h - edge)
    step = (vy - (h - edge)) / 2;
  if (step == 0)
    return;
  adj = gtk_scrolled_window_get_vadjustment (GTK_SCROLLED_WINDOW (sw));
  gtk_adjustment_set_value (adj, gtk_adjustment_get_value (adj) + step);
}

static void
set_selected (EspalierModelCanvas *self,
              int                  index)
{
  guint n = self->doc ? espalier_model_doc_get_n_layers (self->doc) : 0;

  if (index < 0 || (guint) index >= n)
    index = -1;
  if (self->selected == index)
    return;
  self->selected = index;
  if (index >= 0)
    {
      g_autofree char *title = espalier_layer_spec_title (espalier_model_doc_get_layer (self->doc, index));
      /* TRANSLATORS: the selected layer, for screen readers: "Layer 2: Dense 128" */
      g_autofree char *text = g_strdup_printf (_("Layer %d: %s"), index + 1, title);

      gtk_accessible_update_property (GTK_ACCESSIBLE (self), GTK_ACCESSIBLE_PROPERTY_DESCRIPTION, text, -1);
    }
  else
    gtk_accessible_reset_property (GTK_ACCESSIBLE (self), GTK_ACCESSIBLE_PROPERTY_DESCRIPTION);
  gtk_widget_queue_draw (GTK_WIDGET (self));
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_SELECTED]);
}

/* Edits. */

static guint
move_target (guint from,
             guint gap)
{
  return gap > from ? gap - 1 : gap;
}

static void
drag_begin (EspalierModelCanvas *self,
            double               x,
            double               y)
{
  int i = espalier_model_canvas_layer_at (self, x, y);
  graphene_rect_t r;

  if (gtk_widget_get_focusable (GTK_WIDGET (self)))
    gtk_widget_grab_focus (GTK_WIDGET (self));
  set_selected (self, i);
  self->drag_from = i;
  self->dragging = FALSE;
  self->drag_x0 = x;
  self->drag_y0 = y;
  self->drag_y = y;
  if (i >= 0 && espalier_model_canvas_get_block_rect (self, i, &r))
    self->drag_grab_dy = y - r.origin.y;
}

static void
drag_update (EspalierModelCanvas *self,
             double               dx,
             double               dy)
{
  guint gap;

  if (self->drag_from < 0)
    return;
  if (!self->dragging && hypot (dx, dy) < DRAG_THRESHOLD)
    return;
  if (!self->dragging)
    gtk_widget_set_cursor_from_name (GTK_WIDGET (self), "grabbing");
  self->dragging = TRUE;
  self->drag_y = self->drag_y0 + dy;
  autoscroll (self, self->drag_y);
  gap = espalier_model_canvas_insertion_index (self, self->drag_y);
  /* The gaps right above and below the block leave it where it is: no line there. */
  self->drop_index = move_target (self->drag_from, gap) == (guint) self->drag_from ? -1 : (int) gap;
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

static gboolean
drag_end (EspalierModelCanvas *self,
          double               dx,
          double               dy)
{
  gboolean moved = FALSE;

  drag_update (self, dx, dy);
  if (self->drag_from >= 0 && self->dragging && self->doc != NULL)
    {
      guint from = self->drag_from;
      guint to = move_target (from, espalier_model_canvas_insertion_index (self, self->drag_y));

      self->drag_from = -1;
      self->drop_index = -1;
      if (to != from)
        {
          espalier_model_doc_move (self->doc, from, to);
          set_selected (self, to);
          moved = TRUE;
        }
    }
  if (self->dragging)
    gtk_widget_set_cursor_from_name (GTK_WIDGET (self), self->hovered >= 0 ? "grab" : NULL);
  self->drag_from = -1;
  self->dragging = FALSE;
  self->drop_index = -1;
  gtk_widget_queue_draw (GTK_WIDGET (self));
  return moved;
}

/* Callbacks. */

static void
on_doc_changed (EspalierModelDoc    *doc,
                EspalierModelCanvas *self)
{
  guint n = espalier_model_doc_get_n_layers (doc);

  if (self->drag_from >= (int) n)
    {
      self->drag_from = -1;
      self->dragging = FALSE;
      self->drop_index = -1;
    }
  if (self->hovered >= (int) n)
    self->hovered = -1;
  if (self->selected >= (int) n)
    set_selected (self, (int) n - 1);
  invalidate_layout (self);
}

static void
on_drag_begin (GtkGestureDrag      *gesture,
               double               x,
               double               y,
               EspalierModelCanvas *self)
{
  drag_begin (self, x, y);
  if (self->drag_from < 0)
    gtk_gesture_set_state (GTK_GESTURE (gesture), GTK_EVENT_SEQUENCE_DENIED);
}

static void
on_drag_update (GtkGestureDrag      *gesture,
                double               dx,
                double               dy,
                EspalierModelCanvas *self)
{
  drag_update (self, dx, dy);
}

static void
on_drag_end (GtkGestureDrag      *gesture,
             double               dx,
             double               dy,
             EspalierModelCanvas *self)
{
  drag_end (self, dx, dy);
}

static void
on_drag_cancel (GtkGesture          *gesture,
                GdkEventSequence    *sequence,
                EspalierModelCanvas *self)
{
  self->drag_from = -1;
  self->dragging = FALSE;
  self->drop_index = -1;
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

static void
set_hovered (EspalierModelCanvas *self,
             int                  index)
{
  if (self->hovered == index)
    return;
  self->hovered = index;
  if (!self->dragging)
    gtk_widget_set_cursor_from_name (GTK_WIDGET (self), index >= 0 ? "grab" : NULL);
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

static void
on_motion (GtkEventControllerMotion *motion,
           double                    x,
           double                    y,
           EspalierModelCanvas      *self)
{
  set_hovered (self, espalier_model_canvas_layer_at (self, x, y));
}

static void
on_leave (GtkEventControllerMotion *motion,
          EspalierModelCanvas      *self)
{
  set_hovered (self, -1);
}

static GdkDragAction
on_drop_motion (GtkDropTarget       *target,
                double               x,
                double               y,
                EspalierModelCanvas *self)
{
  int gap;

  if (self->doc == NULL)
    return 0;
  autoscroll (self, y);
  gap = espalier_model_canvas_insertion_index (self, y);
  if (gap != self->drop_index)
    {
      self->drop_index = gap;
      gtk_widget_queue_draw (GTK_WIDGET (self));
    }
  return GDK_ACTION_COPY;
}

static void
on_drop_leave (GtkDropTarget       *target,
               EspalierModelCanvas *self)
{
  self->drop_index = -1;
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

static gboolean
on_drop (GtkDropTarget       *target,
         const GValue        *value,
         double               x,
         double               y,
         EspalierModelCanvas *self)
{
  EsLayerKind kind;

  self->drop_index = -1;
  gtk_widget_queue_draw (GTK_WIDGET (self));
  if (self->doc == NULL || !G_VALUE_HOLDS_STRING (value)
      || !es_layer_kind_from_name (g_value_get_string (value), &kind))
    return FALSE;
  espalier_model_canvas_drop_kind (self, kind, y);
  gtk_widget_grab_focus (GTK_WIDGET (self));
  return TRUE;
}

/* Actions. */

static void
action_delete (GtkWidget  *widget,
               const char *action_name,
               GVariant   *parameter)
{
  EspalierModelCanvas *self = ESPALIER_MODEL_CANVAS (widget);
  int i = self->selected;
  guint n;

  if (self->doc == NULL || i < 0)
    return;
  espalier_model_doc_remove (self->doc, i);
  n = espalier_model_doc_get_n_layers (self->doc);
  /* The next layer takes its place; the previous one when it was the last. */
  espalier_model_canvas_select (self, n == 0 ? -1 : MIN (i, (int) n - 1));
}

static void
action_select_step (GtkWidget  *widget,
                    const char *action_name,
                    GVariant   *parameter)
{
  EspalierModelCanvas *self = ESPALIER_MODEL_CANVAS (widget);
  int step = g_str_equal (action_name, "canvas.select-next") ? 1 : -1;
  int n = self->doc ? (int) espalier_model_doc_get_n_layers (self->doc) : 0;
  int i;

  if (n == 0)
    return;
  if (self->selected < 0)
    i = step > 0 ? 0 : n - 1;
  else
    i = CLAMP (self->selected + step, 0, n - 1);
  espalier_model_canvas_select (self, i);
}

static void
action_move (GtkWidget  *widget,
             const char *action_name,
             GVariant   *parameter)
{
  EspalierModelCanvas *self = ESPALIER_MODEL_CANVAS (widget);
  int step = g_str_equal (action_name, "canvas.move-down") ? 1 : -1;
  int n = self->doc ? (int) espalier_model_doc_get_n_layers (self->doc) : 0;
  int i = self->selected;
  int to = i + step;

  if (i < 0 || to < 0 || to >= n)
    return;
  espalier_model_doc_move (self->doc, i, to);
  espalier_model_canvas_select (self, to);
}

static void
action_unselect (GtkWidget  *widget,
                 const char *action_name,
                 GVariant   *parameter)
{
  set_selected (ESPALIER_MODEL_CANVAS (widget), -1);
}

/* Drawing. */

static void
lookup (GtkStyleContext *ctx,
        const char      *name,
        const char      *fallback,
        GdkRGBA         *color)
{
  if (!gtk_style_context_lookup_color (ctx, name, color))
    gdk_rgba_parse (color, fallback);
}

static void
get_colors (GtkWidget *widget,
            Colors    *c)
{
  GtkStyleContext *ctx = gtk_widget_get_style_context (widget);
  gboolean dark;

  gtk_style_context_get_color (ctx, &c->fg);
  dark = 0.2126 * c->fg.red + 0.7152 * c->fg.green + 0.0722 * c->fg.blue > 0.5;
  lookup (ctx, "card_bg_color", dark ? "#383838" : "#ffffff", &c->card);
  lookup (ctx, "card_shade_color", "rgba(0,0,0,0.07)", &c->shade);
  lookup (ctx, "accent_bg_color", "#3584e4", &c->accent_bg);
  lookup (ctx, "accent_color", dark ? "#78aeed" : "#1c71d8", &c->accent);
  lookup (ctx, "error_color", dark ? "#ff7b63" : "#c01c28", &c->error);
  lookup (ctx, "success_color", dark ? "#8ff0a4" : "#1b8553", &c->success);
  /* The GNOME palette's purple and orange, lighter in dark mode. */
  gdk_rgba_parse (&c->reshape, dark ? "#c061cb" : "#9141ac");
  gdk_rgba_parse (&c->regular, dark ? "#ffa348" : "#e66100");
}

/* Draw pl with its left edge at x (or its right edge, or its centre) and its middle at y. */
static void
show_text (cairo_t       *cr,
           PangoLayout   *pl,
           double         x,
           double         y,
           double         xalign,
           const GdkRGBA *color,
           double         alpha)
{
  int w, h;

  pango_layout_get_pixel_size (pl, &w, &h);
  cairo_move_to (cr, round (x - xalign * w), round (y - h / 2.0));
  espalier_cairo_set_source (cr, color, alpha);
  pango_cairo_show_layout (cr, pl);
}

static const GdkRGBA *
stripe_color (const Colors *c,
              EsLayerKind   kind)
{
  switch (kind)
    {
    case ES_LAYER_DENSE:
    case ES_LAYER_CONV2D:
      return &c->accent_bg;
    case ES_LAYER_MAXPOOL2D:
    case ES_LAYER_AVGPOOL2D:
    case ES_LAYER_FLATTEN:
      return &c->reshape;
    case ES_LAYER_DROPOUT:
    case ES_LAYER_BATCHNORM:
      return &c->regular;
    default:
      return &c->success;
    }
}

static void
draw_card (cairo_t               *cr,
           const Colors          *c,
           const graphene_rect_t *r,
           double                 radius,
           const GdkRGBA         *fill,
           double                 fill_alpha,
           const GdkRGBA         *border,
           double                 border_alpha,
           double                 border_width,
           double                 alpha)
{
  graphene_rect_t shadow = *r;

  /* A soft drop shadow, then the fill and a hairline border. */
  shadow.origin.y += 1;
  espalier_cairo_rounded_rect (cr, &shadow, radius);
  espalier_cairo_set_source (cr, &c->shade, alpha);
  cairo_fill (cr);
  espalier_cairo_rounded_rect (cr, r, radius);
  espalier_cairo_set_source (cr, fill, fill_alpha * alpha);
  cairo_fill (cr);
  if (border != NULL)
    {
      graphene_rect_t inset = *r;

      graphene_rect_inset (&inset, border_width / 2, border_width / 2);
      espalier_cairo_rounded_rect (cr, &inset, radius - border_width / 2);
      espalier_cairo_set_source (cr, border, border_alpha * alpha);
      cairo_set_line_width (cr, border_width);
      cairo_stroke (cr);
    }
}

static void
draw_layer_block (EspalierModelCanvas   *self,
                  cairo_t               *cr,
                  const Colors          *c,
                  guint                  i,
                  const graphene_rect_t *r,
                  EspalierBlockState     state,
                  double                 alpha)
{
  const EsLayerSpec *spec = espalier_model_doc_get_layer (self->doc, i);
  const EsLayerInfo *info = espalier_model_doc_get_layer_info (self->doc, i);
  gboolean small = kind_is_small (spec->kind);
  gboolean selected = (int) i == self->selected;
  gboolean hovered = (int) i == self->hovered && !self->dragging;
  gboolean invalid = state == ESPALIER_BLOCK_INVALID;
  double x = r->origin.x, y = r->origin.y, w = r->size.width, h = r->size.height;
  g_autofree char *title = espalier_layer_spec_title (spec);
  g_autoptr(PangoLayout) title_pl = NULL;
  double radius = small ? h / 2 : RADIUS;

  if (state == ESPALIER_BLOCK_DISABLED)
    alpha *= DISABLED_ALPHA;

  if (small)
    draw_card (cr, c, r, radius, invalid ? &c->error : &c->fg, invalid ? 0.12 : 0.05,
               invalid ? &c->error : &c->fg, invalid ? 0.9 : 0.12, invalid ? 1.5 : 1.0, alpha);
  else
    {
      draw_card (cr, c, r, radius, &c->card, 1.0, invalid ? &c->error : &c->fg,
                 invalid ? 0.9 : 0.14, invalid ? 1.5 : 1.0, alpha);
      if (invalid)
        {
          espalier_cairo_rounded_rect (cr, r, radius);
          espalier_cairo_set_source (cr, &c->error, 0.08 * alpha);
          cairo_fill (cr);
        }
      /* The kind's colour as a stripe along the left edge. */
      cairo_save (cr);
      espalier_cairo_rounded_rect (cr, r, radius);
      cairo_clip (cr);
      cairo_rectangle (cr, x, y, 5, h);
      espalier_cairo_set_source (cr, invalid ? &c->error : stripe_color (c, spec->kind), alpha);
      cairo_fill (cr);
      cairo_restore (cr);
    }
  if (hovered && !selected)
    {
      espalier_cairo_rounded_rect (cr, r, radius);
      espalier_cairo_set_source (cr, &c->fg, 0.04 * alpha);
      cairo_fill (cr);
    }

  if (small)
    {
      title_pl = make_text (self, title, 0.92, PANGO_WEIGHT_NORMAL, FALSE);
      show_text (cr, title_pl, x + 16, y + h / 2, 0, invalid ? &c->error : &c->fg, 0.8 * alpha);
      if (info != NULL)
        {
          g_autofree char *flops = espalier_format_flops (info->flops);
          g_autoptr(PangoLayout) pl = make_text (self, flops, 0.8, PANGO_WEIGHT_NORMAL, TRUE);

          show_text (cr, pl, x + w - 16, y + h / 2, 1, &c->fg, 0.5 * alpha);
        }
    }
  else
    {
      g_autofree char *detail = layer_spec_detail (spec);
      g_autoptr(PangoLayout) detail_pl = NULL;

      title_pl = make_text (self, title, 1.0, PANGO_WEIGHT_BOLD, TRUE);
      if (detail != NULL)
        {
          detail_pl = make_text (self, detail, 0.82, PANGO_WEIGHT_NORMAL, TRUE);
          show_text (cr, title_pl, x + 18, y + h / 2 - 9, 0, invalid ? &c->error : &c->fg, alpha);
          show_text (cr, detail_pl, x + 18, y + h / 2 + 10, 0, &c->fg, 0.55 * alpha);
        }
      else
        show_text (cr, title_pl, x + 18, y + h / 2, 0, invalid ? &c->error : &c->fg, alpha);

      if (info != NULL)
        {
          g_autofree char *count = espalier_format_count (info->n_params);
          g_autofree char *params = g_strdup_printf (_("%s params"), count);
          g_autofree char *flops = espalier_format_flops (info->flops);
          g_autoptr(PangoLayout) params_pl = make_text (self, params, 0.82, PANGO_WEIGHT_NORMAL, TRUE);
          g_autoptr(PangoLayout) flops_pl = make_text (self, flops, 0.82, PANGO_WEIGHT_NORMAL, TRUE);

          show_text (cr, params_pl, x + w - 16, y + h / 2 - 9, 1, &c->fg,
                     (info->n_params > 0 ? 0.75 : 0.45) * alpha);
          show_text (cr, flops_pl, x + w - 16, y + h / 2 + 10, 1, &c->fg, 0.55 * alpha);
        }
    }

  if (selected)
    {
      graphene_rect_t outer = *r;

      graphene_rect_inset (&outer, -3, -3);
      espalier_cairo_rounded_rect (cr, &outer, radius + 3);
      espalier_cairo_set_source (cr, &c->accent_bg, alpha);
      cairo_set_line_width (cr, 2.0);
      cairo_stroke (cr);
    }
}

/* An arrow down from y0 to y1 at x, the shape (or NULL) beside it. */
static void
draw_edge (EspalierModelCanvas *self,
           cairo_t             *cr,
           const Colors        *c,
           double               x,
           double               y0,
           double               y1,
           const EsShape       *shape,
           gboolean             live)
{
  double alpha = live ? 0.45 : 0.2;
  double head = 5.0;

  x = round (x) + 0.5;
  y0 += 3;
  y1 -= 3;
  cairo_save (cr);
  cairo_set_line_width (cr, 1.5);
  if (!live)
    cairo_set_dash (cr, (double[]) { 3, 3 }, 2, 0);
  cairo_move_to (cr, x, y0);
  cairo_line_to (cr, x, y1 - head);
  espalier_cairo_set_source (cr, &c->fg, alpha);
  cairo_stroke (cr);
  cairo_restore (cr);
  cairo_move_to (cr, x - head, y1 - head - 1);
  cairo_line_to (cr, x + head, y1 - head - 1);
  cairo_line_to (cr, x, y1);
  cairo_close_path (cr);
  espalier_cairo_set_source (cr, &c->fg, alpha);
  cairo_fill (cr);

  if (shape != NULL)
    {
      char buf[64];
      g_autoptr(PangoLayout) pl = make_text (self, es_shape_format (shape, buf, sizeof buf),
                                             0.8, PANGO_WEIGHT_NORMAL, TRUE);

      show_text (cr, pl, x + 12, (y0 + y1) / 2, 0, &c->fg, 0.6);
    }
}

static void
draw_end_block (EspalierModelCanvas   *self,
                cairo_t               *cr,
                const Colors          *c,
                const graphene_rect_t *r,
                const char            *markup,
                const GdkRGBA         *tint,
                const GdkRGBA         *text)
{
  g_autoptr(PangoLayout) pl = make_text (self, NULL, 1.0, PANGO_WEIGHT_NORMAL, TRUE);

  draw_card (cr, c, r, r->size.height / 2, &c->card, 1.0, tint, 0.45, 1.0, 1.0);
  espalier_cairo_rounded_rect (cr, r, r->size.height / 2);
  espalier_cairo_set_source (cr, tint, 0.12);
  cairo_fill (cr);
  pango_layout_set_markup (pl, markup, -1);
  show_text (cr, pl, r->origin.x + r->size.width / 2, r->origin.y + r->size.height / 2,
             0.5, text, 1.0);
}

static void
draw_insertion_line (cairo_t      *cr,
                     const Colors *c,
                     const Layout *layout,
                     guint         gap)
{
  double top, bottom, y, x0, x1;

  gap_bounds (layout, gap, &top, &bottom);
  y = round ((top + bottom) / 2);
  x0 = layout->input.origin.x - 6;
  x1 = layout->input.origin.x + layout->input.size.width + 6;
  espalier_cairo_set_source (cr, &c->accent_bg, 1.0);
  cairo_set_line_width (cr, 3);
  cairo_set_line_cap (cr, CAIRO_LINE_CAP_ROUND);
  cairo_move_to (cr, x0 + 4, y);
  cairo_line_to (cr, x1 - 4, y);
  cairo_stroke (cr);
  cairo_arc (cr, x0, y, 4.5, 0, 2 * G_PI);
  cairo_fill (cr);
  cairo_arc (cr, x1, y, 4.5, 0, 2 * G_PI);
  cairo_fill (cr);
  cairo_set_line_cap (cr, CAIRO_LINE_CAP_BUTT);
}

static void
draw_totals (EspalierModelCanvas   *self,
             cairo_t               *cr,
             const Colors          *c,
             const graphene_rect_t *r,
             gboolean               valid)
{
  gint64 n_params = 0, flops = 0, acts = 0;
  g_autofree char *params_s = NULL;
  g_autofree char *flops_s = NULL;
  g_autofree char *acts_s = NULL;
  const char *values[3];
  const char *captions[3] = { N_("parameters"), N_("FLOPs per sample"), N_("activations per sample") };
  double col = r->size.width / 3;

  espalier_model_doc_get_totals (self->doc, &n_params, &flops, &acts);
  params_s = espalier_format_count (n_params);
  flops_s = espalier_format_flops (flops);
  acts_s = g_format_size_full ((guint64) acts * sizeof (float), G_FORMAT_SIZE_IEC_UNITS);
  values[0] = params_s;
  values[1] = flops_s;
  values[2] = acts_s;

  draw_card (cr, c, r, RADIUS, &c->card, 1.0, &c->fg, 0.14, 1.0, 1.0);
  for (int k = 0; k < 3; k++)
    {
      g_autoptr(PangoLayout) value = make_text (self, values[k], 1.2, PANGO_WEIGHT_BOLD, TRUE);
      g_autoptr(PangoLayout) caption = make_text (self, _(captions[k]), 0.8, PANGO_WEIGHT_NORMAL, FALSE);
      double cx = r->origin.x + col * (k + 0.5);
      double cy = r->origin.y + r->size.height / 2;

      show_text (cr, value, cx, cy - 9, 0.5, &c->fg, valid ? 1.0 : 0.5);
      show_text (cr, caption, cx, cy + 13, 0.5, &c->fg, 0.55);
      if (k > 0)
        {
          double sx = round (r->origin.x + col * k) + 0.5;

          cairo_move_to (cr, sx, r->origin.y + 14);
          cairo_line_to (cr, sx, r->origin.y + r->size.height - 14);
          espalier_cairo_set_source (cr, &c->fg, 0.1);
          cairo_set_line_width (cr, 1);
          cairo_stroke (cr);
        }
    }
}

static void
draw_placeholder (EspalierModelCanvas   *self,
                  cairo_t               *cr,
                  const Colors          *c,
                  const graphene_rect_t *r,
                  gboolean               target)
{
  g_autoptr(PangoLayout) line1 = make_text (self, _("Drop layers here"), 1.0, PANGO_WEIGHT_BOLD, FALSE);
  g_autoptr(PangoLayout) line2 = make_text (self, _("from the palette, or start from a template"),
                                            0.85, PANGO_WEIGHT_NORMAL, FALSE);
  graphene_rect_t inset = *r;

  graphene_rect_inset (&inset, 1, 1);
  espalier_cairo_rounded_rect (cr, &inset, RADIUS);
  espalier_cairo_set_source (cr, target ? &c->accent_bg : &c->fg, target ? 0.12 : 0.03);
  cairo_fill_preserve (cr);
  cairo_save (cr);
  cairo_set_dash (cr, (double[]) { 6, 4 }, 2, 0);
  cairo_set_line_width (cr, target ? 2 : 1.5);
  espalier_cairo_set_source (cr, target ? &c->accent_bg : &c->fg, target ? 1.0 : 0.3);
  cairo_stroke (cr);
  cairo_restore (cr);
  show_text (cr, line1, r->origin.x + r->size.width / 2, r->origin.y + r->size.height / 2 - 10,
             0.5, &c->fg, 0.7);
  show_text (cr, line2, r->origin.x + r->size.width / 2, r->origin.y + r->size.height / 2 + 12,
             0.5, &c->fg, 0.5);
}

static void
record_drawn (EspalierModelCanvas *self,
              guint                n)
{
  g_array_set_size (self->drawn, n);
  if (n > 0)
    memset (self->drawn->data, ESPALIER_BLOCK_NONE, n);
  g_clear_pointer (&self->drawn_error, g_free);
  self->drawn_error_index = -1;
}

static void
espalier_model_canvas_snapshot (GtkWidget   *widget,
                                GtkSnapshot *snapshot)
{
  EspalierModelCanvas *self = ESPALIER_MODEL_CANVAS (widget);
  int width = gtk_widget_get_width (widget);
  int height = gtk_widget_get_height (widget);
  const Layout *layout;
  const EsShape *shape;
  g_autofree char *input_markup = NULL;
  g_autofree char *output_markup = NULL;
  char buf[64];
  Colors c;
  cairo_t *cr;
  guint n;
  int first_error;
  gboolean valid;
  double cx;

  if (self->doc == NULL)
    {
      record_drawn (self, 0);
      return;
    }
  layout = ensure_layout (self);
  n = layout->blocks->len;
  first_error = espalier_model_doc_get_first_error (self->doc);
  valid = espalier_model_doc_is_valid (self->doc);
  record_drawn (self, n);
  get_colors (widget, &c);
  cx = layout->input.origin.x + layout->input.size.width / 2;

  cr = gtk_snapshot_append_cairo (snapshot, &GRAPHENE_RECT_INIT (0, 0, width, MAX (height, layout->height)));

  /* Input and the edges. */
  shape = espalier_model_doc_get_input (self->doc);
  input_markup = g_markup_printf_escaped ("<b>%s</b>  %s", _("Input"), es_shape_format (shape, buf, sizeof buf));
  draw_end_block (self, cr, &c, &layout->input, input_markup, &c.accent_bg, &c.accent);
  for (guint k = 0; k <= n; k++)
    {
      double top, bottom;
      const EsShape *edge_shape = NULL;
      gboolean live = first_error < 0 || (int) k <= first_error;

      if (n == 0)
        {
          gap_bounds (layout, 0, &top, &bottom);
          draw_edge (self, cr, &c, cx, top, bottom, shape, TRUE);
          top = layout->placeholder.origin.y + layout->placeholder.size.height;
          draw_edge (self, cr, &c, cx, top, layout->output.origin.y, NULL, FALSE);
          break;
        }
      gap_bounds (layout, k, &top, &bottom);
      if (k == 0)
        edge_shape = shape;
      else if (espalier_model_doc_get_layer_info (self->doc, k - 1) != NULL)
        edge_shape = &espalier_model_doc_get_layer_info (self->doc, k - 1)->out;
      if ((int) k == self->drop_index)
        edge_shape = NULL;
      draw_edge (self, cr, &c, cx, top, bottom, edge_shape, live && (k < n || valid));
    }

  /* The layer blocks, the dragged one faded where it was. */
  for (guint i = 0; i < n; i++)
    {
      const BlockGeom *g = &g_array_index (layout->blocks, BlockGeom, i);
      EspalierBlockState state = first_error < 0 || (int) i < first_error ? ESPALIER_BLOCK_NORMAL
                                 : (int) i == first_error ? ESPALIER_BLOCK_INVALID
                                 : ESPALIER_BLOCK_DISABLED;
      double alpha = self->dragging && (int) i == self->drag_from ? 0.35 : 1.0;

      draw_layer_block (self, cr, &c, i, &g->rect, state, alpha);
      g_array_index (self->drawn, guint8, i) = state;
    }
  if (layout->error_index >= 0)
    {
      const char *reason = espalier_model_doc_get_layer_error (self->doc, layout->error_index);
      g_autoptr(PangoLayout) pl = make_error_text (self, reason, layout->error.size.width);

      cairo_move_to (cr, layout->error.origin.x, layout->error.origin.y);
      espalier_cairo_set_source (cr, &c.error, 1.0);
      pango_cairo_show_layout (cr, pl);
      self->drawn_error = g_strdup (reason);
      self->drawn_error_index = layout->error_index;
    }
  if (n == 0)
    draw_placeholder (self, cr, &c, &layout->placeholder, self->drop_index == 0);

  /* Output and totals. */
  if (espalier_model_doc_get_n_outputs (self->doc) > 0)
    output_markup = g_markup_printf_escaped (ngettext ("<b>%s</b>: %u class", "<b>%s</b>: %u classes",
                                                       espalier_model_doc_get_n_outputs (self->doc)),
                                             _("Output"), espalier_model_doc_get_n_outputs (self->doc));
  else
    output_markup = g_markup_printf_escaped ("<b>%s</b>", _("Output"));
  draw_end_block (self, cr, &c, &layout->output, output_markup,
                  valid ? &c.success : &c.fg, valid ? &c.success : &c.fg);
  draw_totals (self, cr, &c, &layout->totals, valid);

  /* What a drag is about to do: the insertion line and the block under the pointer. */
  if (self->drop_index >= 0 && n > 0)
    draw_insertion_line (cr, &c, layout, self->drop_index);
  if (self->dragging && self->drag_from >= 0)
    {
      graphene_rect_t ghost = g_array_index (layout->blocks, BlockGeom, self->drag_from).rect;

      ghost.origin.y = self->drag_y - self->drag_grab_dy;
      cairo_push_group (cr);
      draw_card (cr, &c, &GRAPHENE_RECT_INIT (ghost.origin.x + 2, ghost.origin.y + 4,
                                              ghost.size.width, ghost.size.height),
                 RADIUS, &c.shade, 1.0, NULL, 0, 0, 1.0);
      draw_layer_block (self, cr, &c, self->drag_from, &ghost, ESPALIER_BLOCK_NORMAL, 1.0);
      cairo_pop_group_to_source (cr);
      cairo_paint_with_alpha (cr, 0.92);
    }

  cairo_destroy (cr);
}

static GtkSizeRequestMode
espalier_model_canvas_get_request_mode (GtkWidget *widget)
{
  return GTK_SIZE_REQUEST_HEIGHT_FOR_WIDTH;
}

static void
espalier_model_canvas_measure (GtkWidget      *widget,
                               GtkOrientation  orientation,
                               int             for_size,
                               int            *minimum,
                               int            *natural,
                               int            *minimum_baseline,
                               int            *natural_baseline)
{
  EspalierModelCanvas *self = ESPALIER_MODEL_CANVAS (widget);

  if (orientation == GTK_ORIENTATION_HORIZONTAL)
    {
      *minimum = (int) (MIN_BLOCK_WIDTH + 2 * MARGIN);
      *natural = (int) (MAX_BLOCK_WIDTH + 2 * MARGIN);
    }
  else
    {
      Layout layout;
      int width = for_size > 0 ? for_size : (int) (MAX_BLOCK_WIDTH + 2 * MARGIN);

      compute_layout (self, width, &layout);
      *minimum = *natural = (int) ceil (layout.height);
      layout_clear (&layout);
    }
}

static void
espalier_model_canvas_size_allocate (GtkWidget *widget,
                                     int        width,
                                     int        height,
                                     int        baseline)
{
  ESPALIER_MODEL_CANVAS (widget)->layout_valid = FALSE;
}

static void
espalier_model_canvas_css_changed (GtkWidget         *widget,
                                   GtkCssStyleChange *change)
{
  GTK_WIDGET_CLASS (espalier_model_canvas_parent_class)->css_changed (widget, change);
  /* Fonts may have changed, and with them the reasons' heights. */
  invalidate_layout (ESPALIER_MODEL_CANVAS (widget));
}

static void
espalier_model_canvas_dispose (GObject *object)
{
  EspalierModelCanvas *self = ESPALIER_MODEL_CANVAS (object);

  g_clear_handle_id (&self->scroll_source, g_source_remove);
  if (self->doc != NULL)
    g_signal_handlers_disconnect_by_data (self->doc, self);
  g_clear_object (&self->doc);
  G_OBJECT_CLASS (espalier_model_canvas_parent_class)->dispose (object);
}

static void
espalier_model_canvas_finalize (GObject *object)
{
  EspalierModelCanvas *self = ESPALIER_MODEL_CANVAS (object);

  layout_clear (&self->layout);
  g_array_unref (self->drawn);
  g_free (self->drawn_error);
  G_OBJECT_CLASS (espalier_model_canvas_parent_class)->finalize (object);
}

static void
espalier_model_canvas_get_property (GObject    *object,
                                    guint       prop_id,
                                    GValue     *value,
                                    GParamSpec *pspec)
{
  EspalierModelCanvas *self = ESPALIER_MODEL_CANVAS (object);

  switch (prop_id)
    {
    case PROP_DOC:
      g_value_set_object (value, self->doc);
      break;
    case PROP_SELECTED:
      g_value_set_int (value, self->selected);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_model_canvas_set_property (GObject      *object,
                                    guint         prop_id,
                                    const GValue *value,
                                    GParamSpec   *pspec)
{
  EspalierModelCanvas *self = ESPALIER_MODEL_CANVAS (object);

  switch (prop_id)
    {
    case PROP_DOC:
      espalier_model_canvas_set_doc (self, g_value_get_object (value));
      break;
    case PROP_SELECTED:
      espalier_model_canvas_select (self, g_value_get_int (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_model_canvas_class_init (EspalierModelCanvasClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->dispose = espalier_model_canvas_dispose;
  object_class->finalize = espalier_model_canvas_finalize;
  object_class->get_property = espalier_model_canvas_get_property;
  object_class->set_property = espalier_model_canvas_set_property;

  widget_class->snapshot = espalier_model_canvas_snapshot;
  widget_class->get_request_mode = espalier_model_canvas_get_request_mode;
  widget_class->measure = espalier_model_canvas_measure;
  widget_class->size_allocate = espalier_model_canvas_size_allocate;
  widget_class->css_changed = espalier_model_canvas_css_changed;

  properties[PROP_DOC] =
    g_param_spec_object ("doc", NULL, NULL, ESPALIER_TYPE_MODEL_DOC,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_SELECTED] =
    g_param_spec_int ("selected", NULL, NULL, -1, G_MAXINT, -1,
                      G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  gtk_widget_class_install_action (widget_class, "canvas.delete", NULL, action_delete);
  gtk_widget_class_install_action (widget_class, "canvas.select-previous", NULL, action_select_step);
  gtk_widget_class_install_action (widget_class, "canvas.select-next", NULL, action_select_step);
  gtk_widget_class_install_action (widget_class, "canvas.move-up", NULL, action_move);
  gtk_widget_class_install_action (widget_class, "canvas.move-down", NULL, action_move);
  gtk_widget_class_install_action (widget_class, "canvas.unselect", NULL, action_unselect);

  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_Delete, 0, "canvas.delete", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_KP_Delete, 0, "canvas.delete", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_BackSpace, 0, "canvas.delete", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_Up, 0, "canvas.select-previous", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_KP_Up, 0, "canvas.select-previous", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_Down, 0, "canvas.select-next", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_KP_Down, 0, "canvas.select-next", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_Up, GDK_CONTROL_MASK, "canvas.move-up", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_Down, GDK_CONTROL_MASK, "canvas.move-down", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_Escape, 0, "canvas.unselect", NULL);

  gtk_widget_class_set_css_name (widget_class, "modelcanvas");
  gtk_widget_class_set_accessible_role (widget_class, GTK_ACCESSIBLE_ROLE_GROUP);
}

static void
espalier_model_canvas_init (EspalierModelCanvas *self)
{
  GtkGesture *drag = gtk_gesture_drag_new ();
  GtkEventController *motion = gtk_event_controller_motion_new ();
  GtkDropTarget *drop = gtk_drop_target_new (G_TYPE_STRING, GDK_ACTION_COPY);

  self->selected = -1;
  self->hovered = -1;
  self->drag_from = -1;
  self->drop_index = -1;
  self->scroll_index = -1;
  self->drawn = g_array_new (FALSE, TRUE, sizeof (guint8));
  self->drawn_error_index = -1;

  gtk_widget_set_focusable (GTK_WIDGET (self), TRUE);
  gtk_widget_set_focus_on_click (GTK_WIDGET (self), TRUE);
  gtk_accessible_update_property (GTK_ACCESSIBLE (self), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                  _("Model layers"), -1);

  gtk_gesture_single_set_button (GTK_GESTURE_SINGLE (drag), GDK_BUTTON_PRIMARY);
  g_signal_connect (drag, "drag-begin", G_CALLBACK (on_drag_begin), self);
  g_signal_connect (drag, "drag-update", G_CALLBACK (on_drag_update), self);
  g_signal_connect (drag, "drag-end", G_CALLBACK (on_drag_end), self);
  g_signal_connect (drag, "cancel", G_CALLBACK (on_drag_cancel), self);
  gtk_widget_add_controller (GTK_WIDGET (self), GTK_EVENT_CONTROLLER (drag));

  g_signal_connect (motion, "motion", G_CALLBACK (on_motion), self);
  g_signal_connect (motion, "leave", G_CALLBACK (on_leave), self);
  gtk_widget_add_controller (GTK_WIDGET (self), motion);

  g_signal_connect (drop, "enter", G_CALLBACK (on_drop_motion), self);
  g_signal_connect (drop, "motion", G_CALLBACK (on_drop_motion), self);
  g_signal_connect (drop, "leave", G_CALLBACK (on_drop_leave), self);
  g_signal_connect (drop, "drop", G_CALLBACK (on_drop), self);
  gtk_widget_add_controller (GTK_WIDGET (self), GTK_EVENT_CONTROLLER (drop));
}

EspalierModelDoc *
espalier_model_canvas_get_doc (EspalierModelCanvas *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_CANVAS (self), NULL);
  return self->doc;
}

void
espalier_model_canvas_set_doc (EspalierModelCanvas *self,
                               EspalierModelDoc    *doc)
{
  g_return_if_fail (ESPALIER_IS_MODEL_CANVAS (self));
  g_return_if_fail (doc == NULL || ESPALIER_IS_MODEL_DOC (doc));

  if (!espalier_follow (&self->doc, doc, "changed", G_CALLBACK (on_doc_changed), self, 0))
    return;
  self->drag_from = -1;
  self->dragging = FALSE;
  self->drop_index = -1;
  self->hovered = -1;
  set_selected (self, -1);
  invalidate_layout (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_DOC]);
}

int
espalier_model_canvas_get_selected (EspalierModelCanvas *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_CANVAS (self), -1);
  return self->selected;
}

void
espalier_model_canvas_select (EspalierModelCanvas *self,
                              int                  index)
{
  g_return_if_fail (ESPALIER_IS_MODEL_CANVAS (self));

  set_selected (self, index);
  if (self->selected >= 0)
    scroll_to_layer (self, self->selected);
}

gboolean
espalier_model_canvas_get_block_rect (EspalierModelCanvas *self,
                                      guint                i,
                                      graphene_rect_t     *rect)
{
  const Layout *layout;

  g_return_val_if_fail (ESPALIER_IS_MODEL_CANVAS (self), FALSE);
  g_return_val_if_fail (rect != NULL, FALSE);

  if (self->doc == NULL)
    return FALSE;
  layout = ensure_layout (self);
  if (i >= layout->blocks->len)
    return FALSE;
  *rect = g_array_index (layout->blocks, BlockGeom, i).rect;
  return TRUE;
}

int
espalier_model_canvas_layer_at (EspalierModelCanvas *self,
                                double               x,
                                double               y)
{
  const Layout *layout;

  g_return_val_if_fail (ESPALIER_IS_MODEL_CANVAS (self), -1);

  if (self->doc == NULL)
    return -1;
  layout = ensure_layout (self);
  for (guint i = 0; i < layout->blocks->len; i++)
    if (graphene_rect_contains_point (&g_array_index (layout->blocks, BlockGeom, i).rect,
                                      &GRAPHENE_POINT_INIT (x, y)))
      return i;
  return -1;
}

guint
espalier_model_canvas_insertion_index (EspalierModelCanvas *self,
                                       double               y)
{
  const Layout *layout;
  guint n;

  g_return_val_if_fail (ESPALIER_IS_MODEL_CANVAS (self), 0);

  if (self->doc == NULL)
    return 0;
  layout = ensure_layout (self);
  n = layout->blocks->len;
  for (guint i = 0; i < n; i++)
    {
      const graphene_rect_t *r = &g_array_index (layout->blocks, BlockGeom, i).rect;

      if (y < r->origin.y + r->size.height / 2)
        return i;
    }
  return n;
}

void
espalier_model_canvas_drop_kind (EspalierModelCanvas *self,
                                 EsLayerKind          kind,
                                 double               y)
{
  EsLayerSpec spec;
  guint gap;

  g_return_if_fail (ESPALIER_IS_MODEL_CANVAS (self));
  g_return_if_fail ((unsigned) kind < ES_LAYER_N_KINDS);

  if (self->doc == NULL)
    return;
  gap = espalier_model_canvas_insertion_index (self, y);
  spec = es_layer_spec_default (kind);
  espalier_model_doc_insert (self->doc, gap, &spec);
  espalier_model_canvas_select (self, gap);
}

gboolean
espalier_model_canvas_drag_layer (EspalierModelCanvas *self,
                                  double               x0,
                                  double               y0,
                                  double               x1,
                                  double               y1)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_CANVAS (self), FALSE);

  drag_begin (self, x0, y0);
  drag_update (self, (x1 - x0) / 2, (y1 - y0) / 2);
  return drag_end (self, x1 - x0, y1 - y0);
}

guint
espalier_model_canvas_get_n_drawn (EspalierModelCanvas *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_CANVAS (self), 0);
  return self->drawn->len;
}

EspalierBlockState
espalier_model_canvas_get_drawn_state (EspalierModelCanvas *self,
                                       guint                i)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_CANVAS (self), ESPALIER_BLOCK_NONE);

  if (i >= self->drawn->len)
    return ESPALIER_BLOCK_NONE;
  return g_array_index (self->drawn, guint8, i);
}

const char *
espalier_model_canvas_get_drawn_error (EspalierModelCanvas *self,
                                       int                 *index)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_CANVAS (self), NULL);

  if (index != NULL)
    *index = self->drawn_error_index;
  return self->drawn_error;
}

void
espalier_layer_kind_color (GtkWidget   *widget,
                           EsLayerKind  kind,
                           GdkRGBA     *color)
{
  Colors c;

  g_return_if_fail (GTK_IS_WIDGET (widget));
  g_return_if_fail (color != NULL);

  get_colors (widget, &c);
  *color = *stripe_color (&c, kind);
}
