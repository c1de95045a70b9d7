/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-optimize-page.c: the Optimize page: the project's variants (the trained
 * baseline first, then what slimming made of it) as a table of their measurements and
 * an accuracy-versus-latency chart, both following the variants list and every
 * variant's properties live; per variant: measure latency again (on a worker), export,
 * delete (undoable from a toast). It does not prune, quantize or reduce yet: those
 * controls arrive with their own issue into the "Optimizations" group. */
#include "config.h"

#include <math.h>
#include <glib/gi18n.h>

#include "espalier-chart.h"
#include "espalier-chart-layers.h"
#include "espalier-job.h"
#include "espalier-optimize-page.h"
#include "espalier-ui-util.h"

/* The table's columns, in order; each cell factory carries its column. */
typedef enum {
  COL_NAME,
  COL_KIND,
  COL_ACCURACY,
  COL_LATENCY,
  COL_SIZE,
  COL_PARAMS,
  COL_SPARSITY,
  COL_FLOPS,
  COL_ACTIONS,
  N_COLUMNS
} Column;

/* The variant kinds the chart colours and names in its legend; anything else is
 * "Other". */
static const char * const chart_kinds[] = { "baseline", "pruned", "quantized", "reduced", NULL };

/* How long one latency measurement runs, in seconds (median of repeated runs). */
#define MEASURE_SECONDS 1.0

struct _EspalierOptimizePage
{
  AdwBin            parent_instance;

  EspalierProject  *project;
  GListModel       *variants;      /* the project's list, (transfer none) */
  GPtrArray        *watched;       /* (element-type EspalierVariant) notify followed */
  GtkSortListModel *sort_model;    /* variants sorted by the column view's sorter */
  EspalierJob      *measure_job;   /* the running measurement, or NULL */

  /* template */
  GtkStack         *stack;
  GtkLabel         *count_label;
  EspalierChart    *chart;
  GtkColumnView    *variants_view;
  AdwPreferencesGroup *optimizations_group;
};

G_DEFINE_FINAL_TYPE (EspalierOptimizePage, espalier_optimize_page, ADW_TYPE_BIN)

enum { PROP_0, PROP_PROJECT, N_PROPS };
static GParamSpec *properties[N_PROPS];

enum { EXPORT_REQUESTED, N_SIGNALS };
static guint signals[N_SIGNALS];

GtkWidget *
espalier_optimize_page_new (void)
{
  return g_object_new (ESPALIER_TYPE_OPTIMIZE_PAGE, NULL);
}

/* Formatting */

static const char *
kind_title (const char *kind)
{
  if (g_strcmp0 (kind, "baseline") == 0)
    return _("Baseline");
  if (g_strcmp0 (kind, "pruned") == 0)
    return _("Pruned");
  if (g_strcmp0 (kind, "quantized") == 0)
    return _("Quantized");
  if (g_strcmp0 (kind, "reduced") == 0)
    return _("Reduced");
  return kind != NULL ? kind : "";
}

static char *
format_cell (EspalierVariant *variant,
             Column           column)
{
  double v;

  switch (column)
    {
    case COL_NAME:
      return g_strdup (espalier_variant_get_name (variant));
    case COL_KIND:
      return g_strdup (kind_title (espalier_variant_get_kind (variant)));
    case COL_ACCURACY:
      v = espalier_variant_get_accuracy (variant);
      return isfinite (v) ? g_strdup_printf ("%.2f", 100.0 * v) : g_strdup ("—");
    case COL_LATENCY:
      v = espalier_variant_get_latency_us (variant);
      if (!isfinite (v))
        return g_strdup ("—");
      return g_strdup_printf (v < 100 ? "%.2f" : v < 10000 ? "%.1f" : "%.0f", v);
    case COL_SIZE:
      return g_strdup_printf ("%.1f", espalier_variant_get_size_bytes (variant) / 1000.0);
    case COL_PARAMS:
      return espalier_format_grouped (espalier_variant_get_n_params (variant));
    case COL_SPARSITY:
      return g_strdup_printf ("%.1f", 100.0 * espalier_variant_get_sparsity (variant));
    case COL_FLOPS:
      return espalier_format_si ((double) espalier_variant_get_flops (variant));
    case COL_ACTIONS:
    case N_COLUMNS:
    default:
      return NULL;
    }
}

/* Looking variants up by name: names are unique in a project (adding one with an
 * existing name replaces it), and a name stays right when the table is sorted. */
static EspalierVariant *
find_variant (EspalierOptimizePage *self,
              const char           *name,
              guint                *position)
{
  guint n = self->variants != NULL ? g_list_model_get_n_items (self->variants) : 0;

  for (guint i = 0; i < n; i++)
    {
      g_autoptr(EspalierVariant) v = g_list_model_get_item (self->variants, i);

      if (g_strcmp0 (espalier_variant_get_name (v), name) == 0)
        {
          if (position != NULL)
            *position = i;
          return g_steal_pointer (&v);
        }
    }
  return NULL;
}

/* The chart */

static guint
kind_index (const char *kind)
{
  for (guint k = 0; chart_kinds[k] != NULL; k++)
    if (g_strcmp0 (kind, chart_kinds[k]) == 0)
      return k;
  return G_N_ELEMENTS (chart_kinds) - 1;
}

typedef struct {
  double x, y;
} Point;

static int
compare_points (gconstpointer a, gconstpointer b)
{
  const Point *pa = a, *pb = b;

  if (pa->x != pb->x)
    return pa->x < pb->x ? -1 : 1;
  return pa->y > pb->y ? -1 : pa->y < pb->y;
}

/* The measured points of one kind of variant. */
typedef struct {
  GArray    *x;        /* (element-type double) latency, µs */
  GArray    *y;        /* (element-type double) accuracy, % */
  GPtrArray *labels;   /* (element-type utf8) variant names, NULL-terminated at the end */
} KindPoints;

/* One scatter layer per kind present (its colour and legend entry), one labelled point
 * per measured variant at (latency, accuracy %), and the dashed line of the best
 * trade-offs (no faster variant is as accurate) when it has two points or more. */
static void
refresh_chart (EspalierOptimizePage *self)
{
  KindPoints kinds[G_N_ELEMENTS (chart_kinds)] = { { NULL } };   /* kinds + "other" */
  g_autoptr(GArray) points = g_array_new (FALSE, FALSE, sizeof (Point));
  guint n = self->variants != NULL ? g_list_model_get_n_items (self->variants) : 0;
  double x_min = INFINITY, x_max = -INFINITY;
  EspalierChartAxis *x_axis = espalier_chart_get_x_axis (self->chart);

  espalier_chart_remove_all (self->chart);

  for (guint i = 0; i < n; i++)
    {
      g_autoptr(EspalierVariant) v = g_list_model_get_item (self->variants, i);
      double latency = espalier_variant_get_latency_us (v);
      double accuracy = espalier_variant_get_accuracy (v);
      Point p = { latency, 100.0 * accuracy };
      KindPoints *kp;

      if (!isfinite (latency) || latency <= 0 || !isfinite (accuracy))
        continue;
      kp = &kinds[kind_index (espalier_variant_get_kind (v))];
      if (kp->x == NULL)
        {
          kp->x = g_array_new (FALSE, FALSE, sizeof (double));
          kp->y = g_array_new (FALSE, FALSE, sizeof (double));
          kp->labels = g_ptr_array_new_with_free_func (g_free);
        }
      g_array_append_val (kp->x, p.x);
      g_array_append_val (kp->y, p.y);
      g_ptr_array_add (kp->labels, g_strdup (espalier_variant_get_name (v)));
      g_array_append_val (points, p);
      x_min = MIN (x_min, latency);
      x_max = MAX (x_max, latency);
    }

  /* Latencies spread over orders of magnitude (int8 against float, a tenth of the
   * layers) read better on a log axis; close ones on a linear one. */
  espalier_chart_axis_set_logarithmic (x_axis, points->len > 1 && x_max > 10 * x_min);

  /* The line first, so the points are drawn over it and answer the readout. */
  if (points->len >= 2)
    {
      g_autoptr(EspalierSeries) front = espalier_series_new (_("Best trade-off"));
      double best = -INFINITY;
      GdkRGBA grey = { 0.5, 0.5, 0.5, 0.8 };

      g_array_sort (points, compare_points);
      for (guint i = 0; i < points->len; i++)
        {
          const Point *p = &g_array_index (points, Point, i);

          if (p->y > best)
            {
              espalier_series_append (front, p->x, p->y);
              best = p->y;
            }
        }
      if (espalier_series_get_n_points (front) >= 2)
        {
          g_autoptr(EspalierChartLayer) line = espalier_line_layer_new (front);

          espalier_chart_layer_set_title (line, _("Best trade-off"));
          espalier_chart_layer_set_color (line, &grey);
          espalier_line_layer_set_dashed (ESPALIER_LINE_LAYER (line), TRUE);
          espalier_chart_add_layer (self->chart, line);
        }
    }

  for (guint k = 0; k < G_N_ELEMENTS (kinds); k++)
    {
      KindPoints *kp = &kinds[k];
      g_autoptr(EspalierSeries) series = NULL;
      g_autoptr(EspalierChartLayer) layer = NULL;
      const char *title = chart_kinds[k] != NULL ? kind_title (chart_kinds[k]) : _("Other");
      GdkRGBA color;

      if (kp->x == NULL)
        continue;
      series = espalier_series_new (title);
      espalier_series_set_data (series, (const double *) kp->x->data,
                                (const double *) kp->y->data, NULL, kp->x->len);
      layer = espalier_scatter_layer_new (series);
      espalier_chart_layer_set_title (layer, title);
      espalier_chart_palette_color (k, &color);
      espalier_chart_layer_set_color (layer, &color);
      espalier_scatter_layer_set_radius (ESPALIER_SCATTER_LAYER (layer), 6);
      g_ptr_array_add (kp->labels, NULL);
      espalier_scatter_layer_set_labels (ESPALIER_SCATTER_LAYER (layer),
                                         (const char * const *) kp->labels->pdata);
      espalier_chart_add_layer (self->chart, layer);

      g_array_unref (kp->x);
      g_array_unref (kp->y);
      g_ptr_array_unref (kp->labels);
    }
}

static void
refresh_count (EspalierOptimizePage *self)
{
  guint n = self->variants != NULL ? g_list_model_get_n_items (self->variants) : 0;
  g_autofree char *text = g_strdup_printf (ngettext ("%u variant", "%u variants", n), n);

  gtk_label_set_label (self->count_label, text);
  gtk_stack_set_visible_child_name (self->stack, n > 0 ? "variants" : "empty");
}

/* Callbacks */

static void
on_variant_notify (EspalierVariant      *variant,
                   GParamSpec           *pspec,
                   EspalierOptimizePage *self)
{
  if (g_str_equal (pspec->name, "accuracy") || g_str_equal (pspec->name, "latency-us")
      || g_str_equal (pspec->name, "name") || g_str_equal (pspec->name, "kind"))
    refresh_chart (self);
}

static void
unwatch_variants (EspalierOptimizePage *self)
{
  for (guint i = 0; i < self->watched->len; i++)
    g_signal_handlers_disconnect_by_func (g_ptr_array_index (self->watched, i),
                                          on_variant_notify, self);
  g_ptr_array_set_size (self->watched, 0);
}

/* Follow the notify of every variant in the list (the chart plots their figures). */
static void
watch_variants (EspalierOptimizePage *self)
{
  guint n = self->variants != NULL ? g_list_model_get_n_items (self->variants) : 0;

  unwatch_variants (self);
  for (guint i = 0; i < n; i++)
    {
      EspalierVariant *v = g_list_model_get_item (self->variants, i);

      g_signal_connect (v, "notify", G_CALLBACK (on_variant_notify), self);
      g_ptr_array_add (self->watched, v);
    }
}

static void
on_variants_changed (GListModel           *model,
                     guint                 position,
                     guint                 removed,
                     guint                 added,
                     EspalierOptimizePage *self)
{
  watch_variants (self);
  refresh_chart (self);
  refresh_count (self);
}

/* Cells: a label per figure, bound to the variant's notify so a remeasured variant
 * updates in place; the last column holds the row's action buttons. */

static void
update_cell (GtkListItem *item)
{
  EspalierVariant *variant = gtk_list_item_get_item (item);
  GtkWidget *child = gtk_list_item_get_child (item);
  Column column = GPOINTER_TO_INT (g_object_get_data (G_OBJECT (item), "column"));

  if (variant == NULL || child == NULL)
    return;

  if (column == COL_ACTIONS)
    {
      const char *name = espalier_variant_get_name (variant);

      for (GtkWidget *b = gtk_widget_get_first_child (child); b != NULL;
           b = gtk_widget_get_next_sibling (b))
        {
          /* The target first: an "s" action without one is refused. */
          gtk_actionable_set_action_target (GTK_ACTIONABLE (b), "s", name);
          gtk_actionable_set_action_name (GTK_ACTIONABLE (b), g_object_get_data (G_OBJECT (b), "action"));
        }
    }
  else
    {
      g_autofree char *text = format_cell (variant, column);

      gtk_label_set_label (GTK_LABEL (child), text);
      if (column == COL_NAME)
        gtk_widget_set_tooltip_text (child, espalier_variant_get_description (variant));
    }
}

static void
on_cell_variant_notify (EspalierVariant *variant,
                        GParamSpec      *pspec,
                        GtkListItem     *item)
{
  update_cell (item);
}

static GtkWidget *
action_button (const char *icon_name,
               const char *action_name,
               const char *tooltip)
{
  GtkWidget *button = gtk_button_new_from_icon_name (icon_name);

  /* The action is set with its target when the cell is bound. */
  g_object_set_data (G_OBJECT (button), "action", (gpointer) action_name);
  gtk_widget_set_tooltip_text (button, tooltip);
  gtk_accessible_update_property (GTK_ACCESSIBLE (button),
                                  GTK_ACCESSIBLE_PROPERTY_LABEL, tooltip, -1);
  gtk_widget_add_css_class (button, "flat");
  return button;
}

static void
on_cell_setup (GtkSignalListItemFactory *factory,
               GtkListItem              *item,
               gpointer                  data)
{
  Column column = GPOINTER_TO_INT (data);
  GtkWidget *child;

  g_object_set_data (G_OBJECT (item), "column", data);
  if (column == COL_ACTIONS)
    {
      child = gtk_box_new (GTK_ORIENTATION_HORIZONTAL, 0);
      gtk_box_append (GTK_BOX (child),
                      action_button ("view-refresh-symbolic", "optimize.measure-latency",
                                     _("Measure Latency Again")));
      gtk_box_append (GTK_BOX (child),
                      action_button ("document-save-as-symbolic", "optimize.export",
                                     _("Export…")));
      gtk_box_append (GTK_BOX (child),
                      action_button ("user-trash-symbolic", "optimize.delete", _("Delete")));
    }
  else
    {
      child = gtk_label_new (NULL);
      gtk_label_set_ellipsize (GTK_LABEL (child), PANGO_ELLIPSIZE_END);
      if (column == COL_NAME || column == COL_KIND)
        gtk_label_set_xalign (GTK_LABEL (child), 0.0);
      else
        {
          gtk_label_set_xalign (GTK_LABEL (child), 1.0);
          gtk_widget_add_css_class (child, "numeric");
        }
      if (column == COL_NAME)
        gtk_widget_add_css_class (child, "heading");
    }
  gtk_list_item_set_child (item, child);
}

static void
on_cell_bind (GtkSignalListItemFactory *factory,
              GtkListItem              *item,
              gpointer                  data)
{
  EspalierVariant *variant = gtk_list_item_get_item (item);

  g_signal_connect (variant, "notify", G_CALLBACK (on_cell_variant_notify), item);
  update_cell (item);
}

static void
on_cell_unbind (GtkSignalListItemFactory *factory,
                GtkListItem              *item,
                gpointer                  data)
{
  EspalierVariant *variant = gtk_list_item_get_item (item);

  if (variant != NULL)
    g_signal_handlers_disconnect_by_func (variant, on_cell_variant_notify, item);
}

/* Sparsity has no property of its own: sort on nonzeros per parameter. */
static int
compare_sparsity (gconstpointer a,
                  gconstpointer b,
                  gpointer      data)
{
  double sa = espalier_variant_get_sparsity ((EspalierVariant *) a);
  double sb = espalier_variant_get_sparsity ((EspalierVariant *) b);

  return sa < sb ? -1 : sa > sb;
}

static void
add_column (EspalierOptimizePage *self,
            Column                column,
            const char           *title,
            const char           *property,
            gboolean              expand)
{
  GtkColumnViewColumn *col;
  GtkSorter *sorter = NULL;

  col = espalier_column_view_append (self->variants_view, title, expand,
                                     G_CALLBACK (on_cell_setup), G_CALLBACK (on_cell_bind),
                                     G_CALLBACK (on_cell_unbind), GINT_TO_POINTER (column));
  gtk_column_view_column_set_resizable (col, column != COL_ACTIONS);

  if (column == COL_NAME || column == COL_KIND)
    sorter = GTK_SORTER (gtk_string_sorter_new (
      gtk_property_expression_new (ESPALIER_TYPE_VARIANT, NULL, property)));
  else if (column == COL_SPARSITY)
    sorter = GTK_SORTER (gtk_custom_sorter_new (compare_sparsity, NULL, NULL));
  else if (property != NULL)
    sorter = GTK_SORTER (gtk_numeric_sorter_new (
      gtk_property_expression_new (ESPALIER_TYPE_VARIANT, NULL, property)));
  if (sorter != NULL)
    {
      gtk_column_view_column_set_sorter (col, sorter);
      g_object_unref (sorter);
    }
}

/* Actions */

typedef struct {
  EspalierVariant *variant;   /* the one in the project: gets the result */
  EspalierVariant *probe;     /* a copy of its weights, measured on the worker */
} MeasureData;

static void
measure_data_free (MeasureData *data)
{
  g_clear_object (&data->variant);
  g_clear_object (&data->probe);
  g_free (data);
}

/* Worker: only the probe, which nothing else sees, is touched here. */
static void
measure_thread (GTask        *task,
                gpointer      source_object,
                gpointer      task_data,
                GCancellable *cancellable)
{
  MeasureData *data = task_data;
  GError *error = NULL;

  if (espalier_variant_measure_latency (data->probe, 1, MEASURE_SECONDS, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, error);
}

static void
measure_done (GObject      *object,
              GAsyncResult *result,
              gpointer      user_data)
{
  EspalierOptimizePage *self = ESPALIER_OPTIMIZE_PAGE (object);
  MeasureData *data = g_task_get_task_data (G_TASK (result));
  g_autoptr(EspalierJob) job = g_steal_pointer (&self->measure_job);
  g_autoptr(GError) error = NULL;

  if (g_task_propagate_boolean (G_TASK (result), &error))
    espalier_variant_set_latency_us (data->variant,
                                     espalier_variant_get_latency_us (data->probe));
  if (job != NULL)
    espalier_job_finish (job, error);
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "optimize.measure-latency", TRUE);
}

static void
measure_latency_action (GtkWidget  *widget,
                        const char *action_name,
                        GVariant   *parameter)
{
  EspalierOptimizePage *self = ESPALIER_OPTIMIZE_PAGE (widget);
  const char *name = g_variant_get_string (parameter, NULL);
  g_autoptr(EspalierVariant) variant = find_variant (self, name, NULL);
  g_autoptr(GTask) task = NULL;
  g_autofree char *status = NULL;
  EsModel *model;
  MeasureData *data;

  if (variant == NULL || self->measure_job != NULL)
    return;
  model = espalier_variant_get_model (variant);
  if (model == NULL)
    {
      g_autofree char *msg = g_strdup_printf (_("“%s” has no weights loaded to measure"), name);

      espalier_show_toast (widget, msg);
      return;
    }

  data = g_new0 (MeasureData, 1);
  data->variant = g_object_ref (variant);
  data->probe = espalier_variant_new (name, espalier_variant_get_kind (variant),
                                      es_model_copy (model));

  /* One measurement at a time: two would share the cores and skew each other. */
  gtk_widget_action_set_enabled (widget, "optimize.measure-latency", FALSE);
  self->measure_job = espalier_job_new (_("Measuring latency"));
  status = g_strdup_printf (_("“%s”, one sample at a time"), name);
  espalier_job_set_status (self->measure_job, status);
  espalier_job_set_fraction (self->measure_job, -1);
  espalier_job_show (self->measure_job, widget);

  task = g_task_new (self, espalier_job_get_cancellable (self->measure_job), measure_done, NULL);
  g_task_set_source_tag (task, measure_latency_action);
  g_task_set_task_data (task, data, (GDestroyNotify) measure_data_free);
  g_task_run_in_thread (task, measure_thread);
}

static void
export_action (GtkWidget  *widget,
               const char *action_name,
               GVariant   *parameter)
{
  EspalierOptimizePage *self = ESPALIER_OPTIMIZE_PAGE (widget);
  g_autoptr(EspalierVariant) variant =
    find_variant (self, g_variant_get_string (parameter, NULL), NULL);

  if (variant != NULL)
    g_signal_emit (self, signals[EXPORT_REQUESTED], 0, variant);
}

static void
on_undo_clicked (AdwToast             *toast,
                 EspalierOptimizePage *self)
{
  EspalierVariant *variant = g_object_get_data (G_OBJECT (toast), "variant");
  EspalierProject *project = g_object_get_data (G_OBJECT (toast), "project");

  /* Only into the project it left: after New or Open the variant has no home. */
  if (project != NULL && project == self->project && variant != NULL)
    espalier_project_add_variant (project, variant);
}

static void
remove_variant (EspalierOptimizePage *self,
                const char           *name)
{
  g_autoptr(EspalierVariant) variant = NULL;
  g_autofree char *message = NULL;
  GtkWidget *overlay;
  AdwToast *toast;
  guint position;

  if (self->project == NULL || (variant = find_variant (self, name, &position)) == NULL)
    return;
  espalier_project_remove_variant (self->project, position);

  message = g_strdup_printf (_("Deleted “%s”"), name);
  overlay = gtk_widget_get_ancestor (GTK_WIDGET (self), ADW_TYPE_TOAST_OVERLAY);
  if (overlay == NULL)
    {
      espalier_show_toast (GTK_WIDGET (self), message);
      return;
    }
  toast = adw_toast_new (message);
  adw_toast_set_button_label (toast, _("_Undo"));
  adw_toast_set_priority (toast, ADW_TOAST_PRIORITY_HIGH);
  g_object_set_data_full (G_OBJECT (toast), "variant", g_object_ref (variant), g_object_unref);
  g_object_set_data_full (G_OBJECT (toast), "project", g_object_ref (self->project),
                          g_object_unref);
  g_signal_connect_object (toast, "button-clicked", G_CALLBACK (on_undo_clicked), self, 0);
  adw_toast_overlay_add_toast (ADW_TOAST_OVERLAY (overlay), toast);
}

static void
on_delete_response (AdwMessageDialog     *dialog,
                    const char           *response,
                    EspalierOptimizePage *self)
{
  if (g_str_equal (response, "delete"))
    remove_variant (self, g_object_get_data (G_OBJECT (dialog), "variant-name"));
}

static void
delete_action (GtkWidget  *widget,
               const char *action_name,
               GVariant   *parameter)
{
  EspalierOptimizePage *self = ESPALIER_OPTIMIZE_PAGE (widget);
  const char *name = g_variant_get_string (parameter, NULL);
  g_autoptr(EspalierVariant) variant = find_variant (self, name, NULL);
  GtkRoot *root = gtk_widget_get_root (widget);
  GtkWidget *dialog;

  if (variant == NULL)
    return;
  if (g_strcmp0 (espalier_variant_get_kind (variant), "baseline") != 0)
    {
      remove_variant (self, name);
      return;
    }

  /* The baseline is what every other variant is compared with: ask first. */
  dialog = adw_message_dialog_new (GTK_IS_WINDOW (root) ? GTK_WINDOW (root) : NULL,
                                   _("Delete the Baseline?"), NULL);
  adw_message_dialog_format_body (ADW_MESSAGE_DIALOG (dialog),
                                  _("“%s” is the trained model the other variants are "
                                    "compared with. Its weights and measurements leave "
                                    "the project."), name);
  adw_message_dialog_add_responses (ADW_MESSAGE_DIALOG (dialog),
                                    "cancel", _("_Cancel"),
                                    "delete", _("_Delete"),
                                    NULL);
  adw_message_dialog_set_response_appearance (ADW_MESSAGE_DIALOG (dialog), "delete",
                                              ADW_RESPONSE_DESTRUCTIVE);
  adw_message_dialog_set_default_response (ADW_MESSAGE_DIALOG (dialog), "cancel");
  adw_message_dialog_set_close_response (ADW_MESSAGE_DIALOG (dialog), "cancel");
  g_object_set_data_full (G_OBJECT (dialog), "variant-name", g_strdup (name), g_free);
  g_signal_connect_object (dialog, "response", G_CALLBACK (on_delete_response), self, 0);
  gtk_window_present (GTK_WINDOW (dialog));
}

/* Life cycle */

static void
disconnect_project (EspalierOptimizePage *self)
{
  unwatch_variants (self);
  if (self->variants != NULL)
    g_signal_handlers_disconnect_by_func (self->variants, on_variants_changed, self);
  self->variants = NULL;
}

static void
espalier_optimize_page_dispose (GObject *object)
{
  EspalierOptimizePage *self = ESPALIER_OPTIMIZE_PAGE (object);

  /* The measurement's task holds the page until it ends; its callback finishes the job. */
  if (self->measure_job != NULL)
    espalier_job_cancel (self->measure_job);
  disconnect_project (self);
  if (self->sort_model != NULL)
    gtk_sort_list_model_set_model (self->sort_model, NULL);
  /* The bin's child is a template child: let the bin drop it before the template
   * does, or both would unparent it. */
  adw_bin_set_child (ADW_BIN (self), NULL);
  gtk_widget_dispose_template (GTK_WIDGET (self), ESPALIER_TYPE_OPTIMIZE_PAGE);
  g_clear_object (&self->project);
  g_clear_object (&self->sort_model);
  G_OBJECT_CLASS (espalier_optimize_page_parent_class)->dispose (object);
}

static void
espalier_optimize_page_finalize (GObject *object)
{
  EspalierOptimizePage *self = ESPALIER_OPTIMIZE_PAGE (object);

  g_clear_pointer (&self->watched, g_ptr_array_unref);
  g_clear_object (&self->measure_job);
  G_OBJECT_CLASS (espalier_optimize_page_parent_class)->finalize (object);
}

static void
espalier_optimize_page_get_property (GObject    *object,
                                     guint       prop_id,
                                     GValue     *value,
                                     GParamSpec *pspec)
{
  EspalierOptimizePage *self = ESPALIER_OPTIMIZE_PAGE (object);

  switch (prop_id)
    {
    case PROP_PROJECT:
      g_value_set_object (value, self->project);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_optimize_page_set_property (GObject      *object,
                                     guint         prop_id,
                                     const GValue *value,
                                     GParamSpec   *pspec)
{
  EspalierOptimizePage *self = ESPALIER_OPTIMIZE_PAGE (object);

  switch (prop_id)
    {
    case PROP_PROJECT:
      espalier_optimize_page_set_project (self, g_value_get_object (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_optimize_page_class_init (EspalierOptimizePageClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->dispose = espalier_optimize_page_dispose;
  object_class->finalize = espalier_optimize_page_finalize;
  object_class->get_property = espalier_optimize_page_get_property;
  object_class->set_property = espalier_optimize_page_set_property;

  properties[PROP_PROJECT] =
    g_param_spec_object ("project", NULL, NULL, ESPALIER_TYPE_PROJECT,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  signals[EXPORT_REQUESTED] =
    g_signal_new ("export-requested", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                  0, NULL, NULL, NULL, G_TYPE_NONE, 1, ESPALIER_TYPE_VARIANT);

  gtk_widget_class_install_action (widget_class, "optimize.measure-latency", "s",
                                   measure_latency_action);
  gtk_widget_class_install_action (widget_class, "optimize.export", "s", export_action);
  gtk_widget_class_install_action (widget_class, "optimize.delete", "s", delete_action);

  g_type_ensure (ESPALIER_TYPE_CHART);
  gtk_widget_class_set_template_from_resource (widget_class,
                                               "/io/github/espalier/Espalier/ui/espalier-optimize-page.ui");
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, stack);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, count_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, chart);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, variants_view);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, optimizations_group);
}

static void
espalier_optimize_page_init (EspalierOptimizePage *self)
{
  EspalierChartAxis *x_axis, *y_axis;
  g_autoptr(GtkNoSelection) selection = NULL;

  gtk_widget_init_template (GTK_WIDGET (self));
  self->watched = g_ptr_array_new_with_free_func (g_object_unref);

  add_column (self, COL_NAME, _("Name"), "name", TRUE);
  add_column (self, COL_KIND, _("Kind"), "kind", FALSE);
  add_column (self, COL_ACCURACY, _("Test Accuracy (%)"), "accuracy", FALSE);
  add_column (self, COL_LATENCY, _("Latency (µs, batch 1)"), "latency-us", FALSE);
  add_column (self, COL_SIZE, _("Size (kB)"), "size-bytes", FALSE);
  add_column (self, COL_PARAMS, _("Parameters"), "n-params", FALSE);
  add_column (self, COL_SPARSITY, _("Sparsity (%)"), NULL, FALSE);
  add_column (self, COL_FLOPS, _("FLOPs"), "flops", FALSE);
  add_column (self, COL_ACTIONS, NULL, NULL, FALSE);

  self->sort_model = gtk_sort_list_model_new (NULL,
                                              g_object_ref (gtk_column_view_get_sorter (self->variants_view)));
  selection = gtk_no_selection_new (G_LIST_MODEL (g_object_ref (self->sort_model)));
  gtk_column_view_set_model (self->variants_view, GTK_SELECTION_MODEL (selection));

  espalier_chart_set_title (self->chart, _("Accuracy against Latency"));
  espalier_chart_set_empty_text (self->chart,
                                 _("Variants appear here once their accuracy and latency are measured"));
  x_axis = espalier_chart_get_x_axis (self->chart);
  y_axis = espalier_chart_get_y_axis (self->chart);
  espalier_chart_axis_set_title (x_axis, _("Latency, one sample (µs)"));
  espalier_chart_axis_set_title (y_axis, _("Test accuracy (%)"));

  refresh_count (self);
}

EspalierProject *
espalier_optimize_page_get_project (EspalierOptimizePage *self)
{
  g_return_val_if_fail (ESPALIER_IS_OPTIMIZE_PAGE (self), NULL);
  return self->project;
}

void
espalier_optimize_page_set_project (EspalierOptimizePage *self,
                                    EspalierProject      *project)
{
  g_return_if_fail (ESPALIER_IS_OPTIMIZE_PAGE (self));
  g_return_if_fail (project == NULL || ESPALIER_IS_PROJECT (project));

  if (self->project == project)
    return;

  disconnect_project (self);
  g_set_object (&self->project, project);
  if (project != NULL)
    {
      self->variants = espalier_project_get_variants (project);
      g_signal_connect (self->variants, "items-changed", G_CALLBACK (on_variants_changed), self);
    }
  gtk_sort_list_model_set_model (self->sort_model, self->variants);
  watch_variants (self);
  refresh_chart (self);
  refresh_count (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_PROJECT]);
}
