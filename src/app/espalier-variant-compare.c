/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-variant-compare.c: see espalier-variant-compare.h. The table's labels are
 * made once; choosing a variant or a variant's notify rewrites their text. "B against
 * A" is said the way a user asks: how much faster, how much smaller, how many points
 * of accuracy lost or won. */
#include "config.h"

#include <math.h>
#include <glib/gi18n.h>

#include "espalier-optimize-util.h"
#include "espalier-ui-util.h"
#include "espalier-variant-compare.h"

/* The figures, one table row each, in order. */
typedef enum {
  ROW_ACCURACY,
  ROW_LATENCY,
  ROW_P95,
  ROW_THROUGHPUT,
  ROW_SIZE,
  ROW_PARAMS,
  ROW_NONZEROS,
  ROW_SPARSITY,
  ROW_FLOPS,
  ROW_FORMAT,
  N_ROWS
} Row;

#define N_COLS 4   /* figure, A, B, B against A */

struct _EspalierVariantCompare
{
  AdwBin           parent_instance;

  GListModel      *variants;
  EspalierVariant *a;
  EspalierVariant *b;
  GtkWidget       *cells[N_ROWS + 1][N_COLS];   /* GtkLabel, row 0 the header */

  /* template */
  AdwComboRow     *a_row;
  AdwComboRow     *b_row;
  GtkGrid         *grid;
};

G_DEFINE_FINAL_TYPE (EspalierVariantCompare, espalier_variant_compare, ADW_TYPE_BIN)

enum { PROP_0, PROP_VARIANTS, N_PROPS };
static GParamSpec *properties[N_PROPS];

GtkWidget *
espalier_variant_compare_new (void)
{
  return g_object_new (ESPALIER_TYPE_VARIANT_COMPARE, NULL);
}

static const char *
row_title (Row row)
{
  switch (row)
    {
    case ROW_ACCURACY:   return _("Test accuracy");
    case ROW_LATENCY:    return _("Latency, batch 1 (median)");
    case ROW_P95:        return _("Latency, batch 1 (95th percentile)");
    case ROW_THROUGHPUT: return _("Throughput, large batch");
    case ROW_SIZE:       return _("Size of the weights");
    case ROW_PARAMS:     return _("Parameters");
    case ROW_NONZEROS:   return _("Nonzero weights");
    case ROW_SPARSITY:   return _("Sparsity");
    case ROW_FLOPS:      return _("FLOPs per sample");
    case ROW_FORMAT:     return _("Format and kernels");
    case N_ROWS:
    default:             return NULL;
    }
}

/* One variant's figure as text. */
static char *
format_value (EspalierVariant *v,
              Row              row)
{
  double x;

  if (v == NULL)
    return g_strdup ("—");
  switch (row)
    {
    case ROW_ACCURACY:
      x = espalier_variant_get_accuracy (v);
      return isfinite (x) ? g_strdup_printf ("%.2f %%", 100 * x) : g_strdup ("—");
    case ROW_LATENCY:
      return espalier_format_latency (espalier_variant_get_latency_us (v));
    case ROW_P95:
      return espalier_format_latency (espalier_variant_get_latency_p95_us (v));
    case ROW_THROUGHPUT:
      {
        g_autofree char *si = NULL;

        x = espalier_variant_get_rows_per_second (v);
        if (!isfinite (x))
          return g_strdup ("—");
        si = espalier_format_si (x);
        /* TRANSLATORS: throughput, "1.23 M rows/s" */
        return g_strdup_printf (_("%s rows/s"), si);
      }
    case ROW_SIZE:
      return g_strdup_printf (_("%.1f kB"), espalier_variant_get_size_bytes (v) / 1000.0);
    case ROW_PARAMS:
      return espalier_format_grouped (espalier_variant_get_n_params (v));
    case ROW_NONZEROS:
      return espalier_format_grouped (espalier_variant_get_nonzeros (v));
    case ROW_SPARSITY:
      return g_strdup_printf ("%.1f %%", 100 * espalier_variant_get_sparsity (v));
    case ROW_FLOPS:
      return espalier_format_si ((double) espalier_variant_get_flops (v));
    case ROW_FORMAT:
      {
        const char *format = espalier_variant_get_format (v);
        const char *exec = espalier_variant_get_exec (v);

        if (exec == NULL || *exec == '\0')
          return g_strdup (format != NULL ? format : "—");
        /* TRANSLATORS: a storage format and the kernels it ran on: "int8-static · int8" */
        return g_strdup_printf (_("%s · %s"), format != NULL ? format : "—", exec);
      }
    case N_ROWS:
    default:
      return NULL;
    }
}

/* How B compares with A; *better: 1 better, -1 worse, 0 neither (for the colour). */
static char *
format_comparison (EspalierVariant *a,
                   EspalierVariant *b,
                   Row              row,
                   int             *better)
{
  double xa, xb;

  *better = 0;
  if (a == NULL || b == NULL)
    return g_strdup ("—");
  switch (row)
    {
    case ROW_ACCURACY:
    case ROW_SPARSITY:
      xa = row == ROW_ACCURACY ? espalier_variant_get_accuracy (a) : espalier_variant_get_sparsity (a);
      xb = row == ROW_ACCURACY ? espalier_variant_get_accuracy (b) : espalier_variant_get_sparsity (b);
      if (!isfinite (xa) || !isfinite (xb))
        return g_strdup ("—");
      if (row == ROW_ACCURACY && fabs (xb - xa) >= 0.0005)
        *better = xb > xa ? 1 : -1;
      /* TRANSLATORS: a difference in percentage points: "−0.42 points", "+90.0 points" */
      return g_strdup_printf (row == ROW_ACCURACY ? _("%+.2f points") : _("%+.1f points"),
                              100 * (xb - xa));
    case ROW_LATENCY:
    case ROW_P95:
      xa = row == ROW_LATENCY ? espalier_variant_get_latency_us (a) : espalier_variant_get_latency_p95_us (a);
      xb = row == ROW_LATENCY ? espalier_variant_get_latency_us (b) : espalier_variant_get_latency_p95_us (b);
      if (isfinite (xa) && isfinite (xb) && xa > 0 && xb > 0 && fabs (xa / xb - 1) >= 0.005)
        *better = xb < xa ? 1 : -1;
      return espalier_format_less_is_better (xa, xb, TRUE);
    case ROW_THROUGHPUT:
      xa = espalier_variant_get_rows_per_second (a);
      xb = espalier_variant_get_rows_per_second (b);
      if (isfinite (xa) && isfinite (xb) && xa > 0 && xb > 0 && fabs (xb / xa - 1) >= 0.005)
        *better = xb > xa ? 1 : -1;
      /* More rows a second is faster: the ratio the other way round. */
      return espalier_format_less_is_better (xb, xa, TRUE);
    case ROW_SIZE:
      xa = (double) espalier_variant_get_size_bytes (a);
      xb = (double) espalier_variant_get_size_bytes (b);
      if (xa > 0 && xb > 0 && fabs (xa / xb - 1) >= 0.005)
        *better = xb < xa ? 1 : -1;
      return espalier_format_less_is_better (xa, xb, FALSE);
    case ROW_PARAMS:
    case ROW_NONZEROS:
    case ROW_FLOPS:
      xa = (double) (row == ROW_PARAMS ? espalier_variant_get_n_params (a)
                     : row == ROW_NONZEROS ? espalier_variant_get_nonzeros (a)
                     : espalier_variant_get_flops (a));
      xb = (double) (row == ROW_PARAMS ? espalier_variant_get_n_params (b)
                     : row == ROW_NONZEROS ? espalier_variant_get_nonzeros (b)
                     : espalier_variant_get_flops (b));
      if (xa <= 0)
        return g_strdup ("—");
      /* TRANSLATORS: B's count as a share of A's: "48.2 % of A" */
      return g_strdup_printf (_("%.1f %% of A"), 100 * xb / xa);
    case ROW_FORMAT:
    case N_ROWS:
    default:
      return g_strdup ("");
    }
}

static void
set_better_class (GtkWidget *label,
                  int        better)
{
  gtk_widget_remove_css_class (label, "success");
  gtk_widget_remove_css_class (label, "warning");
  if (better > 0)
    gtk_widget_add_css_class (label, "success");
  else if (better < 0)
    gtk_widget_add_css_class (label, "warning");
}

static void
refresh (EspalierVariantCompare *self)
{
  gtk_label_set_label (GTK_LABEL (self->cells[0][1]),
                       self->a != NULL ? espalier_variant_get_name (self->a) : "A");
  gtk_label_set_label (GTK_LABEL (self->cells[0][2]),
                       self->b != NULL ? espalier_variant_get_name (self->b) : "B");
  for (Row r = 0; r < N_ROWS; r++)
    {
      g_autofree char *va = format_value (self->a, r);
      g_autofree char *vb = format_value (self->b, r);
      int better;
      g_autofree char *cmp = format_comparison (self->a, self->b, r, &better);

      gtk_label_set_label (GTK_LABEL (self->cells[r + 1][1]), va);
      gtk_label_set_label (GTK_LABEL (self->cells[r + 1][2]), vb);
      gtk_label_set_label (GTK_LABEL (self->cells[r + 1][3]), cmp);
      set_better_class (self->cells[r + 1][3], better);
    }
}

/* One callback per slot: when A and B are one variant, moving A must not disconnect
 * B's handler (espalier_follow disconnects by callback and data). */
static void
on_a_notify (EspalierVariant        *variant,
             GParamSpec             *pspec,
             EspalierVariantCompare *self)
{
  refresh (self);
}

static void
on_b_notify (EspalierVariant        *variant,
             GParamSpec             *pspec,
             EspalierVariantCompare *self)
{
  refresh (self);
}

static void
follow_selection (EspalierVariantCompare *self)
{
  gpointer a = self->variants != NULL ? adw_combo_row_get_selected_item (self->a_row) : NULL;
  gpointer b = self->variants != NULL ? adw_combo_row_get_selected_item (self->b_row) : NULL;
  gboolean changed = FALSE;

  changed |= espalier_follow (&self->a, a, "notify", G_CALLBACK (on_a_notify), self, 0);
  changed |= espalier_follow (&self->b, b, "notify", G_CALLBACK (on_b_notify), self, 0);
  if (changed)
    refresh (self);
}

static void
on_selected_changed (EspalierVariantCompare *self)
{
  follow_selection (self);
}

static guint
position_of (GListModel *model,
             const char *name)
{
  guint n = model != NULL ? g_list_model_get_n_items (model) : 0;

  for (guint i = 0; i < n; i++)
    {
      g_autoptr(EspalierVariant) v = g_list_model_get_item (model, i);

      if (g_strcmp0 (espalier_variant_get_name (v), name) == 0)
        return i;
    }
  return GTK_INVALID_LIST_POSITION;
}

/* A: the baseline (or the first); B: the newest other variant. */
static void
select_defaults (EspalierVariantCompare *self)
{
  guint n = self->variants != NULL ? g_list_model_get_n_items (self->variants) : 0;
  guint a = 0;

  if (n == 0)
    return;
  for (guint i = 0; i < n; i++)
    {
      g_autoptr(EspalierVariant) v = g_list_model_get_item (self->variants, i);

      if (g_strcmp0 (espalier_variant_get_kind (v), "baseline") == 0)
        {
          a = i;
          break;
        }
    }
  adw_combo_row_set_selected (self->a_row, a);
  adw_combo_row_set_selected (self->b_row, n > 1 && a == n - 1 ? n - 2 : n - 1);
}

static void
on_variants_changed (GListModel             *model,
                     guint                   position,
                     guint                   removed,
                     guint                   added,
                     EspalierVariantCompare *self)
{
  /* The rows keep their item where it stayed; after the first variants arrive, pick. */
  if (g_list_model_get_n_items (model) == added && added > 0)
    select_defaults (self);
  follow_selection (self);
}

/* Life cycle */

static GtkWidget *
cell_label (guint row,
            guint col)
{
  GtkWidget *label = gtk_label_new (NULL);

  gtk_label_set_xalign (GTK_LABEL (label), col == 0 ? 0.0 : 1.0);
  gtk_label_set_ellipsize (GTK_LABEL (label), PANGO_ELLIPSIZE_END);
  gtk_label_set_selectable (GTK_LABEL (label), FALSE);
  gtk_widget_set_hexpand (label, col == 0);
  if (col == 0)
    gtk_widget_set_margin_start (label, 12);
  if (col == N_COLS - 1)
    gtk_widget_set_margin_end (label, 12);
  if (row == 0)
    {
      gtk_widget_set_margin_top (label, 12);
      gtk_widget_add_css_class (label, "heading");
    }
  else
    gtk_widget_add_css_class (label, "numeric");
  if (row == N_ROWS)
    gtk_widget_set_margin_bottom (label, 12);
  if (col == 0 && row > 0)
    gtk_widget_add_css_class (label, "dim-label");
  return label;
}

static void
espalier_variant_compare_dispose (GObject *object)
{
  EspalierVariantCompare *self = ESPALIER_VARIANT_COMPARE (object);

  espalier_variant_compare_set_variants (self, NULL);
  adw_bin_set_child (ADW_BIN (self), NULL);
  gtk_widget_dispose_template (GTK_WIDGET (self), ESPALIER_TYPE_VARIANT_COMPARE);
  G_OBJECT_CLASS (espalier_variant_compare_parent_class)->dispose (object);
}

static void
espalier_variant_compare_get_property (GObject    *object,
                                       guint       prop_id,
                                       GValue     *value,
                                       GParamSpec *pspec)
{
  EspalierVariantCompare *self = ESPALIER_VARIANT_COMPARE (object);

  switch (prop_id)
    {
    case PROP_VARIANTS:
      g_value_set_object (value, self->variants);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_variant_compare_set_property (GObject      *object,
                                       guint         prop_id,
                                       const GValue *value,
                                       GParamSpec   *pspec)
{
  EspalierVariantCompare *self = ESPALIER_VARIANT_COMPARE (object);

  switch (prop_id)
    {
    case PROP_VARIANTS:
      espalier_variant_compare_set_variants (self, g_value_get_object (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_variant_compare_class_init (EspalierVariantCompareClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->dispose = espalier_variant_compare_dispose;
  object_class->get_property = espalier_variant_compare_get_property;
  object_class->set_property = espalier_variant_compare_set_property;

  properties[PROP_VARIANTS] =
    g_param_spec_object ("variants", NULL, NULL, G_TYPE_LIST_MODEL,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  gtk_widget_class_set_template_from_resource (widget_class,
                                               "/io/github/espalier/Espalier/ui/espalier-variant-compare.ui");
  gtk_widget_class_bind_template_child (widget_class, EspalierVariantCompare, a_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierVariantCompare, b_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierVariantCompare, grid);
}

static void
espalier_variant_compare_init (EspalierVariantCompare *self)
{
  g_autoptr(GtkExpression) name = NULL;

  gtk_widget_init_template (GTK_WIDGET (self));

  name = gtk_property_expression_new (ESPALIER_TYPE_VARIANT, NULL, "name");
  adw_combo_row_set_expression (self->a_row, name);
  adw_combo_row_set_expression (self->b_row, name);
  g_signal_connect_swapped (self->a_row, "notify::selected-item", G_CALLBACK (on_selected_changed), self);
  g_signal_connect_swapped (self->b_row, "notify::selected-item", G_CALLBACK (on_selected_changed), self);

  for (guint r = 0; r <= N_ROWS; r++)
    for (guint c = 0; c < N_COLS; c++)
      {
        self->cells[r][c] = cell_label (r, c);
        gtk_grid_attach (self->grid, self->cells[r][c], (int) c, (int) r, 1, 1);
      }
  for (Row r = 0; r < N_ROWS; r++)
    gtk_label_set_label (GTK_LABEL (self->cells[r + 1][0]), row_title (r));
  gtk_label_set_label (GTK_LABEL (self->cells[0][3]), _("B against A"));
  refresh (self);
}

/* Public API */

GListModel *
espalier_variant_compare_get_variants (EspalierVariantCompare *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT_COMPARE (self), NULL);
  return self->variants;
}

void
espalier_variant_compare_set_variants (EspalierVariantCompare *self,
                                       GListModel             *variants)
{
  g_return_if_fail (ESPALIER_IS_VARIANT_COMPARE (self));
  g_return_if_fail (variants == NULL || G_IS_LIST_MODEL (variants));

  /* After the combo rows have seen the change: selecting before would confuse them. */
  if (!espalier_follow (&self->variants, variants, "items-changed",
                        G_CALLBACK (on_variants_changed), self, G_CONNECT_AFTER))
    return;
  adw_combo_row_set_model (self->a_row, variants);
  adw_combo_row_set_model (self->b_row, variants);
  select_defaults (self);
  follow_selection (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_VARIANTS]);
}

void
espalier_variant_compare_select (EspalierVariantCompare *self,
                                 const char             *a,
                                 const char             *b)
{
  guint pa, pb;

  g_return_if_fail (ESPALIER_IS_VARIANT_COMPARE (self));

  pa = a != NULL ? position_of (self->variants, a) : GTK_INVALID_LIST_POSITION;
  pb = b != NULL ? position_of (self->variants, b) : GTK_INVALID_LIST_POSITION;
  if (pa != GTK_INVALID_LIST_POSITION)
    adw_combo_row_set_selected (self->a_row, pa);
  if (pb != GTK_INVALID_LIST_POSITION)
    adw_combo_row_set_selected (self->b_row, pb);
  follow_selection (self);
}

EspalierVariant *
espalier_variant_compare_get_a (EspalierVariantCompare *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT_COMPARE (self), NULL);
  return self->a;
}

EspalierVariant *
espalier_variant_compare_get_b (EspalierVariantCompare *self)
{
  g_return_val_if_fail (ESPALIER_IS_VARIANT_COMPARE (self), NULL);
  return self->b;
}
