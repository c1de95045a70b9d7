/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-sparsity-strip.c: the per-layer sparsity strip of the Optimize page. The
 * cells are recomputed from the variant when it changes (a few numbers per weight
 * layer); the snapshot lays them out for the current width each frame. Colours come
 * from the theme (accent for zeros), so dark and high-contrast styles follow. */
#include "config.h"

#include <math.h>
#include <glib/gi18n.h>

#include "espalier-optimize-util.h"
#include "espalier-sparsity-strip.h"
#include "espalier-ui-util.h"

#define CELL_H      40   /* pixels of the shaded cell */
#define LABEL_GAP    4   /* between cell and title */
#define LABEL_H     16   /* the title line under a cell */
#define GAP          6   /* between cells */
#define MIN_CELL_W  28
#define NAT_CELL_W 120
#define MAX_CELL_W 160

typedef struct {
  guint   layer;
  double  sparsity;    /* 0..1 */
  gint64  weights;     /* prunable weights of the layer */
  char   *title;       /* "Dense 128" or "Dense 128 · int8" */
} Cell;

struct _EspalierSparsityStrip
{
  GtkWidget        parent_instance;

  EspalierVariant *variant;
  GArray          *cells;      /* (element-type Cell) */
  char            *empty_text; /* shown instead of cells, or NULL */
};

G_DEFINE_FINAL_TYPE (EspalierSparsityStrip, espalier_sparsity_strip, GTK_TYPE_WIDGET)

enum { PROP_0, PROP_VARIANT, N_PROPS };
static GParamSpec *properties[N_PROPS];

GtkWidget *
espalier_sparsity_strip_new (void)
{
  return g_object_new (ESPALIER_TYPE_SPARSITY_STRIP, NULL);
}

static void
cell_clear (gpointer data)
{
  Cell *cell = data;

  g_free (cell->title);
}

/* Cells from the variant */

static void
update_accessible (EspalierSparsityStrip *self)
{
  g_autoptr(GString) text = g_string_new (NULL);

  if (self->empty_text != NULL)
    g_string_append (text, self->empty_text);
  for (guint i = 0; i < self->cells->len; i++)
    {
      const Cell *c = &g_array_index (self->cells, Cell, i);

      /* TRANSLATORS: one layer of the sparsity strip for screen readers */
      g_string_append_printf (text, _("%s%s: %.1f %% zero"), i > 0 ? "; " : "", c->title,
                              100 * c->sparsity);
    }
  gtk_accessible_update_property (GTK_ACCESSIBLE (self),
                                  GTK_ACCESSIBLE_PROPERTY_DESCRIPTION, text->str, -1);
}

static void
refresh (EspalierSparsityStrip *self)
{
  EsModel *model = self->variant != NULL ? espalier_variant_get_model (self->variant) : NULL;
  const EsQuant *quant = self->variant != NULL ? espalier_variant_get_quant (self->variant) : NULL;

  g_array_set_size (self->cells, 0);
  g_clear_pointer (&self->empty_text, g_free);

  if (self->variant == NULL)
    self->empty_text = g_strdup (_("Select a variant to see the sparsity of its layers"));
  else if (model == NULL)
    self->empty_text = g_strdup_printf (_("The weights of “%s” are not loaded"),
                                        espalier_variant_get_name (self->variant));
  else
    {
      for (int i = 0; i < es_model_n_layers (model); i++)
        {
          const EsLayerInfo *info = es_model_layer (model, i);
          g_autofree char *title = NULL;
          Cell cell = { 0 };

          if (!espalier_layer_has_weights (model, i))
            continue;
          title = espalier_layer_title (model, i);
          cell.layer = (guint) i;
          cell.sparsity = CLAMP (espalier_variant_get_layer_sparsity (self->variant, (guint) i), 0, 1);
          cell.weights = info->n_tensors > 0 ? es_model_tensor (model, info->first_tensor)->size : 0;
          if (quant != NULL && i < quant->n_layers && quant->layers[i].int8)
            /* TRANSLATORS: a layer title and that its weights are stored as int8 */
            cell.title = g_strdup_printf (_("%s · int8"), title);
          else
            cell.title = g_steal_pointer (&title);
          g_array_append_val (self->cells, cell);
        }
      if (self->cells->len == 0)
        self->empty_text = g_strdup (_("This model has no layer with weights"));
    }
  update_accessible (self);
  gtk_widget_queue_resize (GTK_WIDGET (self));
  gtk_widget_queue_draw (GTK_WIDGET (self));
}

static void
on_variant_notify (EspalierVariant       *variant,
                   GParamSpec            *pspec,
                   EspalierSparsityStrip *self)
{
  refresh (self);
}

/* Layout */

static double
cell_width (EspalierSparsityStrip *self,
            int                    width)
{
  guint n = self->cells->len;

  if (n == 0)
    return 0;
  return CLAMP ((width - (double) GAP * (n - 1)) / n, 1, MAX_CELL_W);
}

static int
cell_at (EspalierSparsityStrip *self,
         double                 x,
         double                 y)
{
  double w = cell_width (self, gtk_widget_get_width (GTK_WIDGET (self)));
  int i;

  if (w <= 0 || x < 0 || y < 0 || y > CELL_H + LABEL_GAP + LABEL_H)
    return -1;
  i = (int) floor (x / (w + GAP));
  if (i >= (int) self->cells->len || x - i * (w + GAP) > w)
    return -1;
  return i;
}

static void
espalier_sparsity_strip_measure (GtkWidget      *widget,
                                 GtkOrientation  orientation,
                                 int             for_size,
                                 int            *minimum,
                                 int            *natural,
                                 int            *minimum_baseline,
                                 int            *natural_baseline)
{
  EspalierSparsityStrip *self = ESPALIER_SPARSITY_STRIP (widget);
  guint n = MAX (self->cells->len, 1);

  if (orientation == GTK_ORIENTATION_HORIZONTAL)
    {
      *minimum = MIN_CELL_W;
      *natural = (int) (n * NAT_CELL_W + (n - 1) * GAP);
    }
  else
    *minimum = *natural = CELL_H + LABEL_GAP + LABEL_H;
}

static void
get_colors (GtkWidget *widget,
            GdkRGBA   *fg,
            GdkRGBA   *accent,
            GdkRGBA   *accent_fg)
{
  GtkStyleContext *context = gtk_widget_get_style_context (widget);

  gtk_style_context_get_color (context, fg);
  if (!gtk_style_context_lookup_color (context, "accent_bg_color", accent))
    *accent = (GdkRGBA) { 0.21, 0.52, 0.89, 1 };
  if (!gtk_style_context_lookup_color (context, "accent_fg_color", accent_fg))
    *accent_fg = (GdkRGBA) { 1, 1, 1, 1 };
}

/* Text centred in [x, x + w] at top y, when it fits. */
static void
draw_text (GtkWidget     *widget,
           cairo_t       *cr,
           const char    *text,
           double         scale,
           PangoWeight    weight,
           double         x,
           double         w,
           double         y,
           double         h,
           const GdkRGBA *color,
           double         alpha)
{
  g_autoptr(PangoLayout) layout = espalier_text_layout_new (widget, text, scale, weight, TRUE);
  int tw, th;

  pango_layout_set_width (layout, (int) (w * PANGO_SCALE));
  pango_layout_set_ellipsize (layout, PANGO_ELLIPSIZE_END);
  pango_layout_set_alignment (layout, PANGO_ALIGN_CENTER);
  pango_layout_get_pixel_size (layout, &tw, &th);
  if (th > h + 2 || w < 18)
    return;
  espalier_cairo_set_source (cr, color, alpha);
  cairo_move_to (cr, x, y + (h - th) / 2);
  pango_cairo_show_layout (cr, layout);
}

static void
espalier_sparsity_strip_snapshot (GtkWidget   *widget,
                                  GtkSnapshot *snapshot)
{
  EspalierSparsityStrip *self = ESPALIER_SPARSITY_STRIP (widget);
  int width = gtk_widget_get_width (widget);
  int height = gtk_widget_get_height (widget);
  double w = cell_width (self, width);
  GdkRGBA fg, accent, accent_fg;
  cairo_t *cr;

  if (width <= 0 || height <= 0)
    return;
  get_colors (widget, &fg, &accent, &accent_fg);
  cr = gtk_snapshot_append_cairo (snapshot, &GRAPHENE_RECT_INIT (0, 0, width, height));

  if (self->empty_text != NULL)
    {
      g_autoptr(PangoLayout) layout = espalier_text_layout_new (widget, self->empty_text, 1.0,
                                                                PANGO_WEIGHT_NORMAL, FALSE);
      int tw, th;

      pango_layout_get_pixel_size (layout, &tw, &th);
      espalier_cairo_set_source (cr, &fg, 0.55);
      cairo_move_to (cr, 0, (height - th) / 2.0);
      pango_cairo_show_layout (cr, layout);
      cairo_destroy (cr);
      return;
    }

  for (guint i = 0; i < self->cells->len; i++)
    {
      const Cell *c = &g_array_index (self->cells, Cell, i);
      double x = round (i * (w + GAP));
      double cw = round ((i + 1) * (w + GAP) - GAP) - x;
      /* Dense cells stay a faint tint; fully pruned ones take the whole accent. */
      double alpha = 0.08 + 0.92 * c->sparsity;
      g_autofree char *pct = g_strdup_printf ("%.1f %%", 100 * c->sparsity);

      espalier_cairo_rounded_rect (cr, &GRAPHENE_RECT_INIT (x + 0.5, 0.5, cw - 1, CELL_H - 1), 6);
      espalier_cairo_set_source (cr, &accent, alpha);
      cairo_fill_preserve (cr);
      cairo_set_line_width (cr, 1);
      espalier_cairo_set_source (cr, &fg, 0.15);
      cairo_stroke (cr);

      draw_text (widget, cr, pct, 1.0, PANGO_WEIGHT_BOLD, x + 2, cw - 4, 0, CELL_H,
                 alpha > 0.65 ? &accent_fg : &fg, 1.0);
      draw_text (widget, cr, c->title, 0.8, PANGO_WEIGHT_NORMAL, x, cw, CELL_H + LABEL_GAP,
                 LABEL_H, &fg, 0.7);
    }
  cairo_destroy (cr);
}

static gboolean
espalier_sparsity_strip_query_tooltip (GtkWidget  *widget,
                                       int         x,
                                       int         y,
                                       gboolean    keyboard,
                                       GtkTooltip *tooltip)
{
  g_autofree char *text = espalier_sparsity_strip_describe_at (ESPALIER_SPARSITY_STRIP (widget), x, y);

  if (text == NULL)
    return FALSE;
  gtk_tooltip_set_text (tooltip, text);
  return TRUE;
}

/* Life cycle */

static void
espalier_sparsity_strip_dispose (GObject *object)
{
  EspalierSparsityStrip *self = ESPALIER_SPARSITY_STRIP (object);

  espalier_follow (&self->variant, NULL, "notify", G_CALLBACK (on_variant_notify), self, 0);
  G_OBJECT_CLASS (espalier_sparsity_strip_parent_class)->dispose (object);
}

static void
espalier_sparsity_strip_finalize (GObject *object)
{
  EspalierSparsityStrip *self = ESPALIER_SPARSITY_STRIP (object);

  g_clear_pointer (&self->cells, g_array_unref);
  g_clear_pointer (&self->empty_text, g_free);
  G_OBJECT_CLASS (espalier_sparsity_strip_parent_class)->finalize (object);
}

static void
espalier_sparsity_strip_get_property (GObject    *object,
                                      guint       prop_id,
                                      GValue     *value,
                                      GParamSpec *pspec)
{
  EspalierSparsityStrip *self = ESPALIER_SPARSITY_STRIP (object);

  switch (prop_id)
    {
    case PROP_VARIANT:
      g_value_set_object (value, self->variant);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_sparsity_strip_set_property (GObject      *object,
                                      guint         prop_id,
                                      const GValue *value,
                                      GParamSpec   *pspec)
{
  EspalierSparsityStrip *self = ESPALIER_SPARSITY_STRIP (object);

  switch (prop_id)
    {
    case PROP_VARIANT:
      espalier_sparsity_strip_set_variant (self, g_value_get_object (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_sparsity_strip_class_init (EspalierSparsityStripClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->dispose = espalier_sparsity_strip_dispose;
  object_class->finalize = espalier_sparsity_strip_finalize;
  object_class->get_property = espalier_sparsity_strip_get_property;
  object_class->set_property = espalier_sparsity_strip_set_property;
  widget_class->measure = espalier_sparsity_strip_measure;
  widget_class->snapshot = espalier_sparsity_strip_snapshot;
  widget_class->query_tooltip = espalier_sparsity_strip_query_tooltip;

  properties[PROP_VARIANT] =
    g_param_spec_object ("variant", NULL, NULL, ESPALIER_TYPE_VARIANT,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  gtk_widget_class_set_css_name (widget_class, "sparsity-strip");
  gtk_widget_class_set_accessible_role (widget_class, GTK_ACCESSIBLE_ROLE_IMG);
}

static void
espalier_sparsity_strip_init (EspalierSparsityStrip *self)
{
  self->cells = g_array_new (FALSE, TRUE, sizeof (Cell));
  g_array_set_clear_func (self->cells, cell_clear);
  gtk_widget_set_has_tooltip (GTK_WIDGET (self), TRUE);
  gtk_accessible_update_property (GTK_ACCESSIBLE (self), GTK_ACCESSIBLE_PROPERTY_LABEL,
                                  _("Sparsity per layer"), -1);
  refresh (self);
}

/* Public API */

EspalierVariant *
espalier_sparsity_strip_get_variant (EspalierSparsityStrip *self)
{
  g_return_val_if_fail (ESPALIER_IS_SPARSITY_STRIP (self), NULL);
  return self->variant;
}

void
espalier_sparsity_strip_set_variant (EspalierSparsityStrip *self,
                                     EspalierVariant       *variant)
{
  g_return_if_fail (ESPALIER_IS_SPARSITY_STRIP (self));
  g_return_if_fail (variant == NULL || ESPALIER_IS_VARIANT (variant));

  if (!espalier_follow (&self->variant, variant, "notify", G_CALLBACK (on_variant_notify), self, 0))
    return;
  refresh (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_VARIANT]);
}

guint
espalier_sparsity_strip_get_n_cells (EspalierSparsityStrip *self)
{
  g_return_val_if_fail (ESPALIER_IS_SPARSITY_STRIP (self), 0);
  return self->cells->len;
}

guint
espalier_sparsity_strip_get_cell_layer (EspalierSparsityStrip *self,
                                        guint                  cell)
{
  g_return_val_if_fail (ESPALIER_IS_SPARSITY_STRIP (self), 0);
  g_return_val_if_fail (cell < self->cells->len, 0);
  return g_array_index (self->cells, Cell, cell).layer;
}

double
espalier_sparsity_strip_get_cell_sparsity (EspalierSparsityStrip *self,
                                           guint                  cell)
{
  g_return_val_if_fail (ESPALIER_IS_SPARSITY_STRIP (self), NAN);
  g_return_val_if_fail (cell < self->cells->len, NAN);
  return g_array_index (self->cells, Cell, cell).sparsity;
}

char *
espalier_sparsity_strip_describe_at (EspalierSparsityStrip *self,
                                     double                 x,
                                     double                 y)
{
  EsModel *model;
  const Cell *c;
  g_autofree char *label = NULL;
  g_autofree char *zeros = NULL;
  g_autofree char *total = NULL;
  int i;

  g_return_val_if_fail (ESPALIER_IS_SPARSITY_STRIP (self), NULL);

  if ((i = cell_at (self, x, y)) < 0 || self->variant == NULL
      || (model = espalier_variant_get_model (self->variant)) == NULL)
    return NULL;
  c = &g_array_index (self->cells, Cell, i);
  label = espalier_layer_label (model, (int) c->layer);
  zeros = espalier_format_grouped ((gint64) llround (c->sparsity * (double) c->weights));
  total = espalier_format_grouped (c->weights);
  /* TRANSLATORS: "Layer 2: Dense 128", then "1,149 of 1,280 weights are zero (89.8 %)" */
  return g_strdup_printf (_("%s\n%s of %s weights are zero (%.1f %%)"), label, zeros, total,
                          100 * c->sparsity);
}
