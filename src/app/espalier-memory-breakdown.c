/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-memory-breakdown.c: see espalier-memory-breakdown.h. The chart holds one
 * stacked bars layer per memory kind (bar 0: in use) and one plain layer for the
 * engine's peak and the limit, so the legend names the kinds. The process's resident
 * set is only in the numbers: it counts the whole application (the toolkit too), and
 * beside it the engine's few kilobytes of a small model would not show. */
#include "config.h"

#include <math.h>
#include <glib/gi18n.h>

#include "espalier-chart-layers.h"
#include "espalier-memory-breakdown.h"

/* Rows of the numbers, in order: the kinds (EsMemKind order), then the totals. */
typedef enum {
  ROW_WEIGHTS,
  ROW_GRADIENTS,
  ROW_OPTIMIZER,
  ROW_ACTIVATIONS,
  ROW_WORKSPACE,
  ROW_DATA,
  ROW_TOTAL,
  ROW_PEAK,
  ROW_LIMIT,
  ROW_RSS,
  ROW_RSS_PEAK,
  N_ROWS
} Row;

G_STATIC_ASSERT (ROW_DATA + 1 == ES_MEM_N_KINDS);

static const char * const row_keys[N_ROWS] = {
  "weights", "gradients", "optimizer", "activations", "workspace", "data",
  "total", "peak", "limit", "rss", "rss-peak",
};

struct _EspalierMemoryBreakdown
{
  AdwBin         parent_instance;

  EspalierChart *chart;
  GtkGrid       *grid;
  GtkLabel      *names[N_ROWS];
  GtkLabel      *values[N_ROWS];
};

G_DEFINE_FINAL_TYPE (EspalierMemoryBreakdown, espalier_memory_breakdown, ADW_TYPE_BIN)

GtkWidget *
espalier_memory_breakdown_new (void)
{
  return g_object_new (ESPALIER_TYPE_MEMORY_BREAKDOWN, NULL);
}

static const char *
row_title (Row row)
{
  switch (row)
    {
    case ROW_WEIGHTS:     return _("Weights");
    case ROW_GRADIENTS:   return _("Gradients");
    case ROW_OPTIMIZER:   return _("Optimizer State");
    case ROW_ACTIVATIONS: return _("Activations");
    case ROW_WORKSPACE:   return _("Workspace");
    case ROW_DATA:        return _("Input Batch");
    case ROW_TOTAL:       return _("Engine in use");
    case ROW_PEAK:        return _("Engine peak");
    case ROW_LIMIT:       return _("Memory limit");
    case ROW_RSS:         return _("Process resident");
    case ROW_RSS_PEAK:    return _("Process peak");
    case N_ROWS:
    default:              return NULL;
    }
}

static void
set_row (EspalierMemoryBreakdown *self,
         Row                      row,
         gboolean                 visible,
         gsize                    bytes)
{
  g_autofree char *text = visible ? g_format_size (bytes) : NULL;

  gtk_label_set_label (self->values[row], text != NULL ? text : "");
  gtk_widget_set_visible (GTK_WIDGET (self->names[row]), visible);
  gtk_widget_set_visible (GTK_WIDGET (self->values[row]), visible);
}

void
espalier_memory_breakdown_set_profile (EspalierMemoryBreakdown *self,
                                       const EspalierProfile   *prof)
{
  const char *labels[4] = { NULL };
  double values[3], bases[3], totals[3];
  gsize in_use = 0;
  double unit, top;
  guint n_bars;

  g_return_if_fail (ESPALIER_IS_MEMORY_BREAKDOWN (self));

  espalier_chart_remove_all (self->chart);
  for (Row r = 0; r < N_ROWS; r++)
    set_row (self, r, FALSE, 0);
  if (prof == NULL)
    return;

  for (int k = 0; k < ES_MEM_N_KINDS; k++)
    {
      in_use += prof->mem_kind[k];
      set_row (self, (Row) k, TRUE, prof->mem_kind[k]);
    }
  set_row (self, ROW_TOTAL, TRUE, in_use);
  set_row (self, ROW_PEAK, TRUE, prof->mem_peak);
  set_row (self, ROW_LIMIT, prof->mem_limit > 0, prof->mem_limit);
  set_row (self, ROW_RSS, prof->rss > 0, prof->rss);
  set_row (self, ROW_RSS_PEAK, prof->rss_peak > 0, prof->rss_peak);

  /* The chart in kB or MB, whichever keeps the numbers readable. */
  top = MAX ((double) MAX (in_use, prof->mem_peak), (double) prof->mem_limit);
  if (top >= 1e6)
    {
      unit = 1e6;
      espalier_chart_axis_set_title (espalier_chart_get_y_axis (self->chart), _("Memory (MB)"));
    }
  else
    {
      unit = 1e3;
      espalier_chart_axis_set_title (espalier_chart_get_y_axis (self->chart), _("Memory (kB)"));
    }

  /* TRANSLATORS: bars of the memory chart: the engine's memory now, its peak, the limit */
  labels[0] = C_("memory bar", "In use");
  labels[1] = C_("memory bar", "Peak");
  labels[2] = C_("memory bar", "Limit");
  n_bars = prof->mem_limit > 0 ? 3 : 2;

  bases[0] = 0;
  for (int k = 0; k < ES_MEM_N_KINDS; k++)
    {
      g_autoptr(EspalierChartLayer) layer = espalier_bars_layer_new ();
      GdkRGBA color;

      values[0] = (double) prof->mem_kind[k] / unit;
      values[1] = values[2] = NAN;   /* the stack is bar 0 only */
      bases[1] = bases[2] = 0;
      espalier_chart_layer_set_title (layer, row_title ((Row) k));
      espalier_chart_palette_color ((guint) k, &color);
      espalier_chart_layer_set_color (layer, &color);
      espalier_bars_layer_set_stacked (ESPALIER_BARS_LAYER (layer), values, bases, labels, n_bars);
      espalier_chart_add_layer (self->chart, layer);
      bases[0] += values[0];
    }

  {
    g_autoptr(EspalierChartLayer) layer = espalier_bars_layer_new ();
    GdkRGBA color;

    /* Nothing in slot 0: the stack stands there. */
    totals[0] = NAN;
    totals[1] = (double) prof->mem_peak / unit;
    totals[2] = (double) prof->mem_limit / unit;
    espalier_chart_layer_set_title (layer, _("Totals"));
    espalier_chart_layer_set_show_in_legend (layer, FALSE);
    espalier_chart_palette_color (7, &color);
    espalier_chart_layer_set_color (layer, &color);
    espalier_bars_layer_set_values (ESPALIER_BARS_LAYER (layer), totals, labels, n_bars);
    espalier_chart_add_layer (self->chart, layer);
  }
}

const char *
espalier_memory_breakdown_get_text (EspalierMemoryBreakdown *self,
                                    const char              *key)
{
  g_return_val_if_fail (ESPALIER_IS_MEMORY_BREAKDOWN (self), NULL);

  for (Row r = 0; r < N_ROWS; r++)
    if (g_strcmp0 (row_keys[r], key) == 0)
      return gtk_widget_get_visible (GTK_WIDGET (self->values[r]))
             ? gtk_label_get_label (self->values[r]) : NULL;
  return NULL;
}

EspalierChart *
espalier_memory_breakdown_get_chart (EspalierMemoryBreakdown *self)
{
  g_return_val_if_fail (ESPALIER_IS_MEMORY_BREAKDOWN (self), NULL);
  return self->chart;
}

static void
espalier_memory_breakdown_class_init (EspalierMemoryBreakdownClass *klass)
{
}

static void
espalier_memory_breakdown_init (EspalierMemoryBreakdown *self)
{
  GtkWidget *box = gtk_box_new (GTK_ORIENTATION_HORIZONTAL, 12);

  self->chart = ESPALIER_CHART (espalier_chart_new ());
  gtk_widget_set_size_request (GTK_WIDGET (self->chart), 260, 340);
  gtk_widget_set_hexpand (GTK_WIDGET (self->chart), TRUE);
  espalier_chart_set_title (self->chart, _("Memory"));
  espalier_chart_set_empty_text (self->chart, _("Profile the model to measure its memory"));
  espalier_chart_axis_set_include_zero (espalier_chart_get_y_axis (self->chart), TRUE);

  self->grid = GTK_GRID (gtk_grid_new ());
  gtk_grid_set_row_spacing (self->grid, 6);
  gtk_grid_set_column_spacing (self->grid, 12);
  gtk_widget_set_valign (GTK_WIDGET (self->grid), GTK_ALIGN_CENTER);
  gtk_widget_set_margin_end (GTK_WIDGET (self->grid), 12);
  for (Row r = 0; r < N_ROWS; r++)
    {
      self->names[r] = GTK_LABEL (gtk_label_new (row_title (r)));
      self->values[r] = GTK_LABEL (gtk_label_new (NULL));
      gtk_label_set_xalign (self->names[r], 0);
      gtk_label_set_xalign (self->values[r], 1);
      gtk_label_set_selectable (self->values[r], TRUE);
      gtk_widget_add_css_class (GTK_WIDGET (self->values[r]), "numeric");
      if (r < ROW_TOTAL)
        gtk_widget_add_css_class (GTK_WIDGET (self->names[r]), "dim-label");
      else
        gtk_widget_add_css_class (GTK_WIDGET (self->values[r]), "heading");
      /* A gap between the kinds and the totals. */
      if (r == ROW_TOTAL)
        gtk_widget_set_margin_top (GTK_WIDGET (self->names[r]), 6);
      gtk_widget_set_visible (GTK_WIDGET (self->names[r]), FALSE);
      gtk_widget_set_visible (GTK_WIDGET (self->values[r]), FALSE);
      gtk_grid_attach (self->grid, GTK_WIDGET (self->names[r]), 0, (int) r, 1, 1);
      gtk_grid_attach (self->grid, GTK_WIDGET (self->values[r]), 1, (int) r, 1, 1);
    }

  gtk_box_append (GTK_BOX (box), GTK_WIDGET (self->chart));
  gtk_box_append (GTK_BOX (box), GTK_WIDGET (self->grid));
  adw_bin_set_child (ADW_BIN (self), box);
}
