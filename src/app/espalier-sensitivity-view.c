/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-sensitivity-view.c: see espalier-sensitivity-view.h. Built in code (a chart
 * and a grid side by side): its table has as many columns as the scan had levels, so a
 * template would hold nothing but the box. A cell is marked when the layer alone costs
 * a point (warning) or five (error) of accuracy, so the layers to spare stand out. */
#include "config.h"

#include <math.h>
#include <glib/gi18n.h>

#include "espalier-chart-layers.h"
#include "espalier-optimize-util.h"
#include "espalier-sensitivity-view.h"

struct _EspalierSensitivityView
{
  AdwBin         parent_instance;

  EspalierChart *chart;
  GtkGrid       *table;
  guint          n_layers;
};

G_DEFINE_FINAL_TYPE (EspalierSensitivityView, espalier_sensitivity_view, ADW_TYPE_BIN)

GtkWidget *
espalier_sensitivity_view_new (void)
{
  return g_object_new (ESPALIER_TYPE_SENSITIVITY_VIEW, NULL);
}

static GtkWidget *
table_label (const char *text,
             gboolean    header,
             gboolean    first_col)
{
  GtkWidget *label = gtk_label_new (text);

  gtk_label_set_xalign (GTK_LABEL (label), first_col ? 0.0 : 1.0);
  gtk_widget_add_css_class (label, header ? "heading" : "numeric");
  return label;
}

/* Mark a result by the accuracy it lost, in points. */
static void
mark_drop (GtkWidget *label,
           double     points)
{
  if (points >= 5)
    gtk_widget_add_css_class (label, "error");
  else if (points >= 1)
    gtk_widget_add_css_class (label, "warning");
}

static void
clear_table (EspalierSensitivityView *self)
{
  GtkWidget *child;

  while ((child = gtk_widget_get_first_child (GTK_WIDGET (self->table))) != NULL)
    gtk_grid_remove (self->table, child);
  self->n_layers = 0;
}

static char *
layer_name (const EsModel *model,
            guint          layer)
{
  if (model != NULL && (int) layer < es_model_n_layers (model))
    return espalier_layer_label (model, (int) layer);
  return g_strdup_printf (_("Layer %u"), layer + 1);
}

/* The distinct levels of the rows, in their order (the scan's). */
static GArray *
distinct_levels (GArray *rows)
{
  GArray *levels = g_array_new (FALSE, FALSE, sizeof (double));

  for (guint i = 0; i < rows->len; i++)
    {
      double level = g_array_index (rows, EspalierSensitivityRow, i).level;
      gboolean seen = FALSE;

      for (guint k = 0; k < levels->len && !seen; k++)
        seen = g_array_index (levels, double, k) == level;
      if (!seen)
        g_array_append_val (levels, level);
    }
  return levels;
}

static void
show_prune (EspalierSensitivityView *self,
            GArray                  *rows,
            const EsModel           *model)
{
  g_autoptr(GArray) levels = distinct_levels (rows);
  EspalierChartAxis *x_axis = espalier_chart_get_x_axis (self->chart);
  EspalierChartAxis *y_axis = espalier_chart_get_y_axis (self->chart);
  g_autoptr(EspalierSeries) base = espalier_series_new (_("Unpruned"));
  EspalierSeries *series = NULL;
  guint layer = G_MAXUINT, row = 0, color = 0;
  double lo = INFINITY, hi = -INFINITY, baseline = NAN;

  espalier_chart_set_title (self->chart, _("Accuracy with One Layer Pruned"));
  espalier_chart_axis_set_title (x_axis, _("Sparsity of that layer (%)"));
  espalier_chart_axis_set_title (y_axis, _("Validation accuracy (%)"));

  gtk_grid_attach (self->table, table_label (_("Layer"), TRUE, TRUE), 0, 0, 1, 1);
  gtk_grid_attach (self->table, table_label (_("Unpruned"), TRUE, FALSE), 1, 0, 1, 1);
  for (guint k = 0; k < levels->len; k++)
    {
      g_autofree char *title = g_strdup_printf ("%.0f %%", 100 * g_array_index (levels, double, k));

      gtk_grid_attach (self->table, table_label (title, TRUE, FALSE), (int) k + 2, 0, 1, 1);
    }

  for (guint i = 0; i < rows->len; i++)
    {
      const EspalierSensitivityRow *r = &g_array_index (rows, EspalierSensitivityRow, i);
      g_autofree char *text = g_strdup_printf ("%.2f", 100 * r->accuracy);
      GtkWidget *cell;
      guint col = 0;

      if (r->layer != layer)
        {
          g_autofree char *name = layer_name (model, r->layer);
          g_autofree char *base_text = g_strdup_printf ("%.2f", 100 * r->baseline);
          g_autoptr(EspalierChartLayer) line = NULL;
          GdkRGBA rgba;

          layer = r->layer;
          row++;
          gtk_grid_attach (self->table, table_label (name, FALSE, TRUE), 0, (int) row, 1, 1);
          gtk_grid_attach (self->table, table_label (base_text, FALSE, FALSE), 1, (int) row, 1, 1);
          series = espalier_series_new (name);
          line = espalier_line_layer_new (series);
          g_object_unref (series);   /* the layer holds it */
          espalier_chart_layer_set_title (line, name);
          espalier_chart_palette_color (color++, &rgba);
          espalier_chart_layer_set_color (line, &rgba);
          espalier_chart_add_layer (self->chart, line);
          baseline = r->baseline;
        }
      for (guint k = 0; k < levels->len; k++)
        if (g_array_index (levels, double, k) == r->level)
          col = k + 2;
      cell = table_label (text, FALSE, FALSE);
      mark_drop (cell, 100 * (r->baseline - r->accuracy));
      gtk_grid_attach (self->table, cell, (int) col, (int) row, 1, 1);
      espalier_series_append (series, 100 * r->level, 100 * r->accuracy);
      lo = MIN (lo, 100 * r->level);
      hi = MAX (hi, 100 * r->level);
    }
  self->n_layers = row;

  /* The unpruned model's accuracy across the levels, for reference. */
  if (isfinite (baseline) && isfinite (lo))
    {
      g_autoptr(EspalierChartLayer) line = espalier_line_layer_new (base);
      GdkRGBA grey = { 0.5, 0.5, 0.5, 0.8 };

      espalier_series_append (base, lo, 100 * baseline);
      espalier_series_append (base, hi, 100 * baseline);
      espalier_chart_layer_set_title (line, _("Unpruned"));
      espalier_chart_layer_set_color (line, &grey);
      espalier_line_layer_set_dashed (ESPALIER_LINE_LAYER (line), TRUE);
      espalier_chart_add_layer (self->chart, line);
    }
}

static void
show_quantize (EspalierSensitivityView *self,
               GArray                  *rows,
               const EsModel           *model)
{
  EspalierChartAxis *x_axis = espalier_chart_get_x_axis (self->chart);
  EspalierChartAxis *y_axis = espalier_chart_get_y_axis (self->chart);
  g_autoptr(EspalierChartLayer) bars = espalier_bars_layer_new ();
  g_autofree double *drops = g_new0 (double, MAX (rows->len, 1));
  g_autoptr(GPtrArray) labels = g_ptr_array_new_with_free_func (g_free);

  espalier_chart_set_title (self->chart, _("Accuracy Lost with One Layer in int8"));
  espalier_chart_axis_set_title (x_axis, _("Layer"));
  espalier_chart_axis_set_title (y_axis, _("Points of validation accuracy lost"));

  gtk_grid_attach (self->table, table_label (_("Layer"), TRUE, TRUE), 0, 0, 1, 1);
  gtk_grid_attach (self->table, table_label (_("Float"), TRUE, FALSE), 1, 0, 1, 1);
  gtk_grid_attach (self->table, table_label (_("int8"), TRUE, FALSE), 2, 0, 1, 1);
  gtk_grid_attach (self->table, table_label (_("Change (points)"), TRUE, FALSE), 3, 0, 1, 1);

  for (guint i = 0; i < rows->len; i++)
    {
      const EspalierSensitivityRow *r = &g_array_index (rows, EspalierSensitivityRow, i);
      g_autofree char *name = layer_name (model, r->layer);
      g_autofree char *base_text = g_strdup_printf ("%.2f", 100 * r->baseline);
      g_autofree char *text = g_strdup_printf ("%.2f", 100 * r->accuracy);
      g_autofree char *change = g_strdup_printf ("%+.2f", 100 * (r->accuracy - r->baseline));
      GtkWidget *cell;

      gtk_grid_attach (self->table, table_label (name, FALSE, TRUE), 0, (int) i + 1, 1, 1);
      gtk_grid_attach (self->table, table_label (base_text, FALSE, FALSE), 1, (int) i + 1, 1, 1);
      gtk_grid_attach (self->table, table_label (text, FALSE, FALSE), 2, (int) i + 1, 1, 1);
      cell = table_label (change, FALSE, FALSE);
      mark_drop (cell, 100 * (r->baseline - r->accuracy));
      gtk_grid_attach (self->table, cell, 3, (int) i + 1, 1, 1);
      drops[i] = 100 * (r->baseline - r->accuracy);
      g_ptr_array_add (labels, g_strdup_printf ("%u", r->layer + 1));
    }
  g_ptr_array_add (labels, NULL);
  self->n_layers = rows->len;

  espalier_bars_layer_set_values (ESPALIER_BARS_LAYER (bars), drops,
                                  (const char * const *) labels->pdata, rows->len);
  espalier_chart_layer_set_title (bars, _("Accuracy lost"));
  espalier_chart_add_layer (self->chart, bars);
}

void
espalier_sensitivity_view_set_results (EspalierSensitivityView *self,
                                       EspalierSensitivityKind  kind,
                                       GArray                  *rows,
                                       const EsModel           *model)
{
  g_return_if_fail (ESPALIER_IS_SENSITIVITY_VIEW (self));

  espalier_chart_remove_all (self->chart);
  clear_table (self);
  if (rows == NULL || rows->len == 0)
    return;
  if (kind == ESPALIER_SENSITIVITY_PRUNE)
    show_prune (self, rows, model);
  else
    show_quantize (self, rows, model);
}

guint
espalier_sensitivity_view_get_n_layers (EspalierSensitivityView *self)
{
  g_return_val_if_fail (ESPALIER_IS_SENSITIVITY_VIEW (self), 0);
  return self->n_layers;
}

EspalierChart *
espalier_sensitivity_view_get_chart (EspalierSensitivityView *self)
{
  g_return_val_if_fail (ESPALIER_IS_SENSITIVITY_VIEW (self), NULL);
  return self->chart;
}

GtkGrid *
espalier_sensitivity_view_get_table (EspalierSensitivityView *self)
{
  g_return_val_if_fail (ESPALIER_IS_SENSITIVITY_VIEW (self), NULL);
  return self->table;
}

static void
espalier_sensitivity_view_class_init (EspalierSensitivityViewClass *klass)
{
  g_type_ensure (ESPALIER_TYPE_CHART);
}

static void
espalier_sensitivity_view_init (EspalierSensitivityView *self)
{
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_HORIZONTAL, 18);
  GtkWidget *frame = gtk_frame_new (NULL);
  GtkWidget *scroller = gtk_scrolled_window_new ();

  self->chart = ESPALIER_CHART (espalier_chart_new ());
  gtk_widget_set_size_request (GTK_WIDGET (self->chart), 360, 300);
  gtk_widget_set_hexpand (GTK_WIDGET (self->chart), TRUE);
  gtk_widget_set_margin_top (GTK_WIDGET (self->chart), 6);
  gtk_widget_set_margin_bottom (GTK_WIDGET (self->chart), 6);
  gtk_widget_set_margin_start (GTK_WIDGET (self->chart), 6);
  gtk_widget_set_margin_end (GTK_WIDGET (self->chart), 6);
  espalier_chart_set_empty_text (self->chart, _("Scan to see how much each layer can take"));
  gtk_frame_set_child (GTK_FRAME (frame), GTK_WIDGET (self->chart));
  gtk_widget_add_css_class (frame, "view");
  gtk_widget_add_css_class (frame, "card");
  gtk_widget_set_hexpand (frame, TRUE);
  gtk_box_append (GTK_BOX (box), frame);

  self->table = GTK_GRID (gtk_grid_new ());
  gtk_grid_set_column_spacing (self->table, 18);
  gtk_grid_set_row_spacing (self->table, 6);
  gtk_widget_set_margin_top (GTK_WIDGET (self->table), 12);
  gtk_widget_set_margin_bottom (GTK_WIDGET (self->table), 12);
  gtk_widget_set_margin_start (GTK_WIDGET (self->table), 12);
  gtk_widget_set_margin_end (GTK_WIDGET (self->table), 12);
  gtk_scrolled_window_set_child (GTK_SCROLLED_WINDOW (scroller), GTK_WIDGET (self->table));
  gtk_scrolled_window_set_policy (GTK_SCROLLED_WINDOW (scroller), GTK_POLICY_AUTOMATIC,
                                  GTK_POLICY_NEVER);
  gtk_scrolled_window_set_propagate_natural_width (GTK_SCROLLED_WINDOW (scroller), TRUE);
  gtk_widget_set_valign (scroller, GTK_ALIGN_START);
  gtk_widget_add_css_class (scroller, "card");
  gtk_box_append (GTK_BOX (box), scroller);

  adw_bin_set_child (ADW_BIN (self), box);
}
