/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-layer-time-table.c: see espalier-layer-time-table.h. A GtkColumnView over a
 * list of row objects, each a copy of one EspalierLayerTime; cells are labels made by a
 * signal factory, numbers right-aligned in tabular figures. Times are per step (the
 * summary sums them over its steps); a layer that was not timed (the last layer fused
 * into the loss) shows dashes where a rate would be. */
#include "config.h"

#include <math.h>
#include <glib/gi18n.h>

#include "espalier-layer-time-table.h"
#include "espalier-ui-util.h"

/* Rows */

struct _EspalierLayerTimeRow
{
  GObject            parent_instance;

  EspalierLayerTime  layer;        /* layer.kind points at kind */
  char              *kind;
  guint              steps;
  gboolean           have_ceilings;
};

G_DEFINE_FINAL_TYPE (EspalierLayerTimeRow, espalier_layer_time_row, G_TYPE_OBJECT)

static void
espalier_layer_time_row_finalize (GObject *object)
{
  EspalierLayerTimeRow *self = ESPALIER_LAYER_TIME_ROW (object);

  g_free (self->kind);
  G_OBJECT_CLASS (espalier_layer_time_row_parent_class)->finalize (object);
}

static void
espalier_layer_time_row_class_init (EspalierLayerTimeRowClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = espalier_layer_time_row_finalize;
}

static void
espalier_layer_time_row_init (EspalierLayerTimeRow *self)
{
}

static EspalierLayerTimeRow *
row_new (const EspalierLayerTime      *layer,
         const EspalierProfileSummary *summary)
{
  EspalierLayerTimeRow *row = g_object_new (ESPALIER_TYPE_LAYER_TIME_ROW, NULL);

  row->layer = *layer;
  row->kind = g_strdup (layer->kind);
  row->layer.kind = row->kind;
  row->steps = summary->steps;
  row->have_ceilings = summary->have_ceilings;
  return row;
}

const EspalierLayerTime *
espalier_layer_time_row_get_layer (EspalierLayerTimeRow *row)
{
  g_return_val_if_fail (ESPALIER_IS_LAYER_TIME_ROW (row), NULL);
  return &row->layer;
}

guint
espalier_layer_time_row_get_steps (EspalierLayerTimeRow *row)
{
  g_return_val_if_fail (ESPALIER_IS_LAYER_TIME_ROW (row), 0);
  return row->steps;
}

char *
espalier_layer_time_name (const EspalierLayerTime *layer)
{
  EsLayerKind kind;
  const char *title = layer->kind != NULL ? layer->kind : "?";

  if (layer->kind != NULL && es_layer_kind_from_name (layer->kind, &kind))
    title = es_layer_kind_title (kind);
  return g_strdup_printf ("%u %s", layer->index + 1, title);
}

/* The table */

typedef enum {
  COL_INDEX,
  COL_KIND,
  COL_FORWARD,
  COL_BACKWARD,
  COL_SHARE,
  COL_FLOPS,
  COL_BYTES,
  COL_GFLOPS,
  COL_GBS,
  COL_INTENSITY,
  COL_ROOF,
  COL_BOUND,
  N_COLUMNS
} Column;

struct _EspalierLayerTimeTable
{
  AdwBin         parent_instance;

  GListStore    *rows;
  GtkColumnView *view;
};

G_DEFINE_FINAL_TYPE (EspalierLayerTimeTable, espalier_layer_time_table, ADW_TYPE_BIN)

GtkWidget *
espalier_layer_time_table_new (void)
{
  return g_object_new (ESPALIER_TYPE_LAYER_TIME_TABLE, NULL);
}

static char *
format_time (double s)
{
  if (!(s > 0))
    return g_strdup ("0");
  if (s < 1e-3)
    return g_strdup_printf (_("%.1f µs"), s * 1e6);
  if (s < 1)
    return g_strdup_printf (_("%.2f ms"), s * 1e3);
  return g_strdup_printf (_("%.2f s"), s);
}

static char *
format_bytes (double b)
{
  return g_format_size ((guint64) MAX (b, 0));
}

static char *
format_rate (double v)
{
  if (!(v > 0) || !isfinite (v))
    return g_strdup ("—");
  if (v < 10)
    return g_strdup_printf ("%.2f", v);
  if (v < 100)
    return g_strdup_printf ("%.1f", v);
  return g_strdup_printf ("%.0f", v);
}

static char *
cell_text (EspalierLayerTimeRow *row,
           Column                column)
{
  const EspalierLayerTime *l = &row->layer;
  double steps = MAX (row->steps, 1);
  gboolean timed = l->forward_s + l->backward_s > 0;

  switch (column)
    {
    case COL_INDEX:
      return g_strdup_printf ("%u", l->index + 1);
    case COL_KIND:
      {
        EsLayerKind kind;

        if (l->kind != NULL && es_layer_kind_from_name (l->kind, &kind))
          return g_strdup (es_layer_kind_title (kind));
        return g_strdup (l->kind != NULL ? l->kind : "?");
      }
    case COL_FORWARD:
      return timed ? format_time (l->forward_s / steps) : g_strdup ("—");
    case COL_BACKWARD:
      return timed ? format_time (l->backward_s / steps) : g_strdup ("—");
    case COL_SHARE:
      return timed ? g_strdup_printf ("%.1f %%", 100.0 * l->share) : g_strdup ("—");
    case COL_FLOPS:
      return timed || l->flops > 0 ? espalier_format_si (l->flops) : g_strdup ("—");
    case COL_BYTES:
      return timed || l->bytes > 0 ? format_bytes (l->bytes) : g_strdup ("—");
    case COL_GFLOPS:
      return timed ? format_rate (l->gflops) : g_strdup ("—");
    case COL_GBS:
      return timed ? format_rate (l->gbs) : g_strdup ("—");
    case COL_INTENSITY:
      return l->bytes > 0 ? g_strdup_printf ("%.2f", l->intensity) : g_strdup ("—");
    case COL_ROOF:
      if (!row->have_ceilings || !timed || !(l->attainable_gflops > 0))
        return g_strdup ("—");
      return g_strdup_printf ("%.0f %%", 100.0 * l->roofline_share);
    case COL_BOUND:
      if (!row->have_ceilings || l->bytes <= 0 || l->flops <= 0)
        return g_strdup ("—");
      /* TRANSLATORS: what limits a layer on the roofline */
      return g_strdup (l->memory_bound ? C_("roofline", "Memory") : C_("roofline", "Compute"));
    case N_COLUMNS:
    default:
      return NULL;
    }
}

static void
on_cell_setup (GtkSignalListItemFactory *factory,
               GtkListItem              *item,
               gpointer                  data)
{
  Column column = GPOINTER_TO_INT (data);
  GtkWidget *label = gtk_label_new (NULL);

  gtk_label_set_xalign (GTK_LABEL (label), column == COL_KIND || column == COL_BOUND ? 0.0 : 1.0);
  if (column != COL_KIND && column != COL_BOUND)
    gtk_widget_add_css_class (label, "numeric");
  if (column == COL_INDEX)
    gtk_widget_add_css_class (label, "dim-label");
  gtk_list_item_set_child (item, label);
}

static void
on_cell_bind (GtkSignalListItemFactory *factory,
              GtkListItem              *item,
              gpointer                  data)
{
  Column column = GPOINTER_TO_INT (data);
  EspalierLayerTimeRow *row = gtk_list_item_get_item (item);
  GtkWidget *label = gtk_list_item_get_child (item);
  g_autofree char *text = cell_text (row, column);

  gtk_label_set_label (GTK_LABEL (label), text);
  if (column == COL_SHARE && row->layer.share >= 0.5)
    gtk_widget_add_css_class (label, "heading");
  else
    gtk_widget_remove_css_class (label, "heading");
}

void
espalier_layer_time_table_set_summary (EspalierLayerTimeTable       *self,
                                       const EspalierProfileSummary *summary)
{
  g_autoptr(GPtrArray) rows = g_ptr_array_new_with_free_func (g_object_unref);

  g_return_if_fail (ESPALIER_IS_LAYER_TIME_TABLE (self));

  for (guint i = 0; summary != NULL && i < summary->n_layers; i++)
    g_ptr_array_add (rows, row_new (&summary->layers[i], summary));
  g_list_store_splice (self->rows, 0, g_list_model_get_n_items (G_LIST_MODEL (self->rows)),
                       rows->pdata, rows->len);
}

GListModel *
espalier_layer_time_table_get_rows (EspalierLayerTimeTable *self)
{
  g_return_val_if_fail (ESPALIER_IS_LAYER_TIME_TABLE (self), NULL);
  return G_LIST_MODEL (self->rows);
}

static void
add_column (EspalierLayerTimeTable *self,
            Column                  column,
            const char             *title)
{
  espalier_column_view_append (self->view, title, column == COL_KIND,
                               G_CALLBACK (on_cell_setup), G_CALLBACK (on_cell_bind), NULL,
                               GINT_TO_POINTER (column));
}

static void
espalier_layer_time_table_dispose (GObject *object)
{
  EspalierLayerTimeTable *self = ESPALIER_LAYER_TIME_TABLE (object);

  adw_bin_set_child (ADW_BIN (self), NULL);
  g_clear_object (&self->rows);
  G_OBJECT_CLASS (espalier_layer_time_table_parent_class)->dispose (object);
}

static void
espalier_layer_time_table_class_init (EspalierLayerTimeTableClass *klass)
{
  G_OBJECT_CLASS (klass)->dispose = espalier_layer_time_table_dispose;
}

static void
espalier_layer_time_table_init (EspalierLayerTimeTable *self)
{
  GtkWidget *scroller = gtk_scrolled_window_new ();
  GtkNoSelection *selection;

  self->rows = g_list_store_new (ESPALIER_TYPE_LAYER_TIME_ROW);
  selection = gtk_no_selection_new (G_LIST_MODEL (g_object_ref (self->rows)));
  self->view = GTK_COLUMN_VIEW (gtk_column_view_new (GTK_SELECTION_MODEL (selection)));
  gtk_column_view_set_show_row_separators (self->view, TRUE);
  gtk_column_view_set_reorderable (self->view, FALSE);
  gtk_widget_add_css_class (GTK_WIDGET (self->view), "data-table");

  add_column (self, COL_INDEX, "#");
  add_column (self, COL_KIND, _("Layer"));
  /* TRANSLATORS: column titles of the per-layer profile table; times are per step */
  add_column (self, COL_FORWARD, _("Forward"));
  add_column (self, COL_BACKWARD, _("Backward"));
  add_column (self, COL_SHARE, _("Share"));
  add_column (self, COL_FLOPS, _("FLOPs"));
  add_column (self, COL_BYTES, _("Bytes"));
  add_column (self, COL_GFLOPS, _("GFLOP/s"));
  add_column (self, COL_GBS, _("GB/s"));
  add_column (self, COL_INTENSITY, _("FLOP/Byte"));
  add_column (self, COL_ROOF, _("Of Roof"));
  add_column (self, COL_BOUND, _("Bound By"));

  /* The page scrolls; the table shows all its rows and scrolls sideways. */
  gtk_scrolled_window_set_policy (GTK_SCROLLED_WINDOW (scroller), GTK_POLICY_AUTOMATIC,
                                  GTK_POLICY_NEVER);
  gtk_scrolled_window_set_child (GTK_SCROLLED_WINDOW (scroller), GTK_WIDGET (self->view));
  gtk_widget_add_css_class (scroller, "card");
  adw_bin_set_child (ADW_BIN (self), scroller);
}
