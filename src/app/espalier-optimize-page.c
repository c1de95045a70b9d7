/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-optimize-page.c: the Optimize page: the project's variants (the trained
 * baseline first, then what slimming made of it) as a table of their measurements and
 * an accuracy-versus-latency chart, both following the variants list and every
 * variant's properties live; per variant: measure latency again (on a worker), export,
 * delete (undoable from a toast). Below them: the selected variant's sparsity per
 * layer; the optimization settings (EspalierOptimizeSettings) with the run of
 * espalier_optimize_async as a job, its fine-tuning curves drawn live from the
 * progress records; the comparison of two variants (EspalierVariantCompare); and the
 * sensitivity scan (espalier_sensitivity_scan_async, shown by EspalierSensitivityView).
 * One optimization or scan at a time, and none while a latency is measured: they would
 * share the cores and skew each other's timings. */
#include "config.h"

#include <math.h>
#include <glib/gi18n.h>

#include "espalier-chart.h"
#include "espalier-chart-layers.h"
#include "espalier-job.h"
#include "espalier-optimize.h"
#include "espalier-optimize-page.h"
#include "espalier-optimize-settings.h"
#include "espalier-optimize-util.h"
#include "espalier-sensitivity-view.h"
#include "espalier-sparsity-strip.h"
#include "espalier-ui-util.h"
#include "espalier-variant-compare.h"

/* The table's columns, in order; each cell factory carries its column. */
typedef enum {
  COL_NAME,
  COL_KIND,
  COL_FORMAT,
  COL_ACCURACY,
  COL_LATENCY,
  COL_P95,
  COL_ROWS_PER_SECOND,
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

/* The live curves take a running-loss point at most this often (seconds). */
#define CURVE_INTERVAL 0.1

typedef enum {
  WORK_NONE,
  WORK_OPTIMIZE,
  WORK_SCAN,
} Work;

struct _EspalierOptimizePage
{
  AdwBin            parent_instance;

  EspalierProject  *project;
  GListModel       *variants;      /* the project's list, (transfer none) */
  GPtrArray        *watched;       /* (element-type EspalierVariant) notify followed */
  GtkSortListModel *sort_model;    /* variants sorted by the column view's sorter */
  GtkSingleSelection *selection;   /* of sort_model: the variant the strip shows */
  EspalierJob      *measure_job;   /* the running measurement, or NULL */
  EspalierJob      *job;           /* the running optimization or scan, or NULL */
  Work              work;          /* what job is */

  /* the fine-tuning curves */
  EspalierSeries   *val_accuracy;
  EspalierSeries   *train_accuracy;
  EspalierSeries   *parent_accuracy;
  EspalierSeries   *running_loss;
  EspalierSeries   *val_loss;

  /* template */
  GtkStack         *stack;
  GtkLabel         *count_label;
  EspalierChart    *chart;
  GtkColumnView    *variants_view;
  GtkLabel         *strip_title;
  EspalierSparsityStrip *strip;
  AdwPreferencesGroup *optimizations_group;
  AdwComboRow      *parent_row;
  EspalierOptimizeSettings *settings;
  GtkLabel         *summary_label;
  GtkButton        *apply_button;
  GtkButton        *stop_button;
  GtkLabel         *tuning_status;
  EspalierChart    *tuning_accuracy_chart;
  EspalierChart    *tuning_loss_chart;
  EspalierVariantCompare *compare;
  AdwComboRow      *scan_kind_row;
  AdwEntryRow      *scan_levels_row;
  GtkButton        *scan_button;
  GtkButton        *scan_stop_button;
  EspalierSensitivityView *scan_view;
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
    case COL_FORMAT:
      return g_strdup (espalier_variant_get_format (variant) != NULL
                       ? espalier_variant_get_format (variant) : "fp32");
    case COL_ACCURACY:
      v = espalier_variant_get_accuracy (variant);
      return isfinite (v) ? g_strdup_printf ("%.2f", 100.0 * v) : g_strdup ("—");
    case COL_LATENCY:
      v = espalier_variant_get_latency_us (variant);
      if (!isfinite (v))
        return g_strdup ("—");
      return g_strdup_printf (v < 100 ? "%.2f" : v < 10000 ? "%.1f" : "%.0f", v);
    case COL_P95:
      v = espalier_variant_get_latency_p95_us (variant);
      if (!isfinite (v))
        return g_strdup ("—");
      return g_strdup_printf (v < 100 ? "%.2f" : v < 10000 ? "%.1f" : "%.0f", v);
    case COL_ROWS_PER_SECOND:
      v = espalier_variant_get_rows_per_second (variant);
      return isfinite (v) ? espalier_format_si (v) : g_strdup ("—");
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

static void select_default_parent (EspalierOptimizePage *self);

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
  select_default_parent (self);
}

/* Cells: a label per figure, bound to the variant's notify so a remeasured variant
 * updates in place; the last column holds the row's action buttons. */

/* Where both kernels were timed, say so: a user sees when sparsity buys nothing. */
static char *
latency_tooltip (EspalierVariant *variant)
{
  double dense = espalier_variant_get_dense_latency_us (variant);
  double sparse = espalier_variant_get_sparse_latency_us (variant);
  const char *exec = espalier_variant_get_exec (variant);
  g_autofree char *d = NULL;
  g_autofree char *sp = NULL;

  if (!isfinite (dense) || !isfinite (sparse))
    return exec != NULL && *exec != '\0'
           /* TRANSLATORS: the kernels a latency was measured on: "dense", "int8" */
           ? g_strdup_printf (_("Measured on %s kernels"), exec) : NULL;
  d = espalier_format_latency (dense);
  sp = espalier_format_latency (sparse);
  /* TRANSLATORS: both timings of a sparse variant, then the kernels chosen */
  return g_strdup_printf (_("Dense kernels %s, sparse (CSR) kernels %s: runs on %s"),
                          d, sp, sparse < dense ? _("sparse") : _("dense"));
}

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
      else if (column == COL_LATENCY)
        {
          g_autofree char *tip = latency_tooltip (variant);

          gtk_widget_set_tooltip_text (child, tip);
        }
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
      if (column == COL_NAME || column == COL_KIND || column == COL_FORMAT)
        gtk_label_set_xalign (GTK_LABEL (child), 0.0);
      else
        {
          gtk_label_set_xalign (GTK_LABEL (child), 1.0);
          gtk_widget_add_css_class (child, "numeric");
        }
      if (column == COL_NAME)
        {
          /* Names like "int8 static (minmax)" stay readable beside eleven figures. */
          gtk_label_set_width_chars (GTK_LABEL (child), 14);
          gtk_widget_add_css_class (child, "heading");
        }
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

  if (column == COL_NAME || column == COL_KIND || column == COL_FORMAT)
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
  EsModel         *model;     /* a copy of its weights, measured on the worker */
  EsQuant         *quant;     /* and of its quantization, or NULL */
  EspalierLatency  latency;
} MeasureData;

static void
measure_data_free (MeasureData *data)
{
  g_clear_object (&data->variant);
  g_clear_pointer (&data->model, es_model_free);
  g_clear_pointer (&data->quant, es_quant_free);
  g_free (data);
}

/* Worker: only the copies, which nothing else sees, are touched here. */
static void
measure_thread (GTask        *task,
                gpointer      source_object,
                gpointer      task_data,
                GCancellable *cancellable)
{
  MeasureData *data = task_data;
  GError *error = NULL;

  if (espalier_measure_variant (data->model, data->quant, 1, 0, MEASURE_SECONDS,
                                &data->latency, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, error);
}

static void update_busy (EspalierOptimizePage *self);

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
    espalier_variant_set_latency (data->variant, &data->latency);
  if (job != NULL)
    espalier_job_finish (job, error);
  update_busy (self);
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
  const EsQuant *quant;
  EsModel *model;
  MeasureData *data;

  if (variant == NULL || self->measure_job != NULL || self->job != NULL)
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
  data->model = es_model_copy (model);
  quant = espalier_variant_get_quant (variant);
  data->quant = quant != NULL ? es_quant_copy (quant) : NULL;

  /* One measurement at a time: two would share the cores and skew each other. */
  self->measure_job = espalier_job_new (_("Measuring latency"));
  update_busy (self);
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

/* The busy state: one optimization or scan at a time, none during a measurement. */

static void
update_busy (EspalierOptimizePage *self)
{
  gboolean idle = self->job == NULL && self->measure_job == NULL;

  if (self->stop_button == NULL)   /* disposed: a measurement ended after the page */
    return;

  gtk_widget_action_set_enabled (GTK_WIDGET (self), "optimize.apply", idle);
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "optimize.scan", idle);
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "optimize.stop", self->job != NULL);
  gtk_widget_action_set_enabled (GTK_WIDGET (self), "optimize.measure-latency", idle);
  gtk_widget_set_visible (GTK_WIDGET (self->stop_button), self->work == WORK_OPTIMIZE);
  /* What a run was started with stays as it was while it runs. */
  gtk_widget_set_sensitive (GTK_WIDGET (self->settings), self->job == NULL);
  gtk_widget_set_sensitive (GTK_WIDGET (self->parent_row), self->job == NULL);
  gtk_widget_set_sensitive (GTK_WIDGET (self->scan_kind_row), self->job == NULL);
  gtk_widget_set_sensitive (GTK_WIDGET (self->scan_levels_row), self->job == NULL);
  gtk_widget_set_visible (GTK_WIDGET (self->scan_stop_button), self->work == WORK_SCAN);
}

/* The parent: the variant optimizations and scans start from */

static EspalierVariant *
selected_parent (EspalierOptimizePage *self)
{
  return self->variants != NULL ? adw_combo_row_get_selected_item (self->parent_row) : NULL;
}

/* The baseline (or the first variant) when nothing valid is chosen. */
static void
select_default_parent (EspalierOptimizePage *self)
{
  guint n = self->variants != NULL ? g_list_model_get_n_items (self->variants) : 0;

  if (n == 0 || selected_parent (self) != NULL)
    return;
  for (guint i = 0; i < n; i++)
    {
      g_autoptr(EspalierVariant) v = g_list_model_get_item (self->variants, i);

      if (g_strcmp0 (espalier_variant_get_kind (v), "baseline") == 0)
        {
          adw_combo_row_set_selected (self->parent_row, i);
          return;
        }
    }
  adw_combo_row_set_selected (self->parent_row, 0);
}

static void
update_summary (EspalierOptimizePage *self)
{
  EspalierVariant *parent = selected_parent (self);
  EspalierOptimizeOptions opts;
  g_autofree char *what = NULL;
  g_autofree char *text = NULL;

  espalier_optimize_settings_get_options (self->settings, &opts);
  what = espalier_optimize_describe (&opts);
  espalier_optimize_options_clear (&opts);
  if (parent != NULL)
    /* TRANSLATORS: the variant optimized, then what will be done: "From “baseline”:
     * prune 90% of weights per layer by magnitude, fine-tune 2 epochs" */
    text = g_strdup_printf (_("From “%s”: %s"), espalier_variant_get_name (parent), what);
  else
    text = g_steal_pointer (&what);
  gtk_label_set_label (self->summary_label, text);
}

static void
on_parent_changed (EspalierOptimizePage *self)
{
  EspalierVariant *parent = selected_parent (self);

  espalier_optimize_settings_set_model (self->settings,
                                        parent != NULL ? espalier_variant_get_model (parent) : NULL);
  update_summary (self);
}

/* The selected variant of the table: the strip shows it */

static void
on_selection_changed (EspalierOptimizePage *self)
{
  EspalierVariant *variant = gtk_single_selection_get_selected_item (self->selection);
  g_autofree char *title = NULL;

  espalier_sparsity_strip_set_variant (self->strip, variant);
  if (variant != NULL)
    /* TRANSLATORS: the heading of the sparsity strip, with the variant's name */
    title = g_strdup_printf (_("Sparsity per Layer of “%s”"), espalier_variant_get_name (variant));
  gtk_label_set_label (self->strip_title, title != NULL ? title : _("Sparsity per Layer"));
}

static void
select_in_table (EspalierOptimizePage *self,
                 EspalierVariant      *variant)
{
  guint n = g_list_model_get_n_items (G_LIST_MODEL (self->sort_model));

  for (guint i = 0; i < n; i++)
    {
      g_autoptr(EspalierVariant) v = g_list_model_get_item (G_LIST_MODEL (self->sort_model), i);

      if (v == variant)
        {
          gtk_single_selection_set_selected (self->selection, i);
          return;
        }
    }
}

/* The fine-tuning curves */

static void
clear_curves (EspalierOptimizePage *self,
              EspalierVariant      *parent,
              gboolean              fine_tunes)
{
  double accuracy = parent != NULL && fine_tunes ? espalier_variant_get_accuracy (parent) : NAN;
  g_autofree char *title = NULL;

  espalier_series_clear (self->val_accuracy);
  espalier_series_clear (self->train_accuracy);
  espalier_series_clear (self->parent_accuracy);
  espalier_series_clear (self->running_loss);
  espalier_series_clear (self->val_loss);
  if (parent != NULL)
    {
      /* TRANSLATORS: the legend of the parent's accuracy line: "“baseline” (test)" */
      title = g_strdup_printf (_("“%s” (test)"), espalier_variant_get_name (parent));
      espalier_series_set_title (self->parent_accuracy, title);
      for (guint i = 0; i < espalier_chart_get_n_layers (self->tuning_accuracy_chart); i++)
        {
          EspalierChartLayer *layer = espalier_chart_get_layer (self->tuning_accuracy_chart, i);

          if (ESPALIER_IS_LINE_LAYER (layer)
              && espalier_line_layer_get_series (ESPALIER_LINE_LAYER (layer)) == self->parent_accuracy)
            espalier_chart_layer_set_title (layer, title);
        }
    }
  /* The parent's accuracy, to see what fine-tuning recovers towards: from epoch 0 to
   * the last, extended as epochs arrive. */
  if (isfinite (accuracy))
    espalier_series_append (self->parent_accuracy, 0, 100 * accuracy);
}

static void
extend_parent_line (EspalierOptimizePage *self,
                    double                x)
{
  guint n = espalier_series_get_n_points (self->parent_accuracy);
  double y;

  if (n == 0)
    return;
  y = espalier_series_get_y (self->parent_accuracy)[0];
  if (n > 1 && espalier_series_get_x (self->parent_accuracy)[n - 1] >= x)
    return;
  {
    double xs[2] = { 0, x };
    double ys[2] = { y, y };

    espalier_series_set_data (self->parent_accuracy, xs, ys, NULL, 2);
  }
}

static void
set_tuning_status (EspalierOptimizePage *self,
                   const char           *text,
                   gboolean              error)
{
  gtk_label_set_label (self->tuning_status, text);
  if (error)
    {
      gtk_widget_remove_css_class (GTK_WIDGET (self->tuning_status), "dim-label");
      gtk_widget_add_css_class (GTK_WIDGET (self->tuning_status), "error");
    }
  else
    {
      gtk_widget_remove_css_class (GTK_WIDGET (self->tuning_status), "error");
      gtk_widget_add_css_class (GTK_WIDGET (self->tuning_status), "dim-label");
    }
}

/* A running optimization or scan. It holds what the worker reads (options, levels) until
 * the end, and reaches the page through a weak reference: the page may go first. */
typedef struct {
  GWeakRef                 page;
  EspalierProject         *project;
  EspalierJob             *job;
  EspalierVariant         *parent;
  EspalierTrainOptions     train;
  EspalierOptimizeOptions  opts;
  GStrv                    taken;
  EspalierSensitivityKind  scan_kind;
  double                  *levels;      /* (n_levels) scan sparsities */
  guint                    n_levels;
  guint                    epochs;      /* of fine-tuning, from the START record */
  gint64                   last_curve;  /* monotonic µs of the last running-loss point */
} Run;

static void
run_clear (gpointer data)
{
  Run *run = data;

  g_weak_ref_clear (&run->page);
  g_clear_object (&run->project);
  g_clear_object (&run->job);
  g_clear_object (&run->parent);
  espalier_optimize_options_clear (&run->opts);
  g_clear_pointer (&run->taken, g_strfreev);
  g_clear_pointer (&run->levels, g_free);
}

static Run *
run_ref (Run *run)
{
  return g_atomic_rc_box_acquire (run);
}

static void
run_release (gpointer run)
{
  g_atomic_rc_box_release_full (run, run_clear);
}

/* Start a run from the parent chosen: checks what every run needs, makes the job. */
static Run *
run_new (EspalierOptimizePage *self,
         Work                  work,
         const char           *title)
{
  EspalierVariant *parent = selected_parent (self);
  EspalierDataset *dataset = self->project != NULL ? espalier_project_get_dataset (self->project) : NULL;
  guint n = self->variants != NULL ? g_list_model_get_n_items (self->variants) : 0;
  g_autoptr(GStrvBuilder) names = g_strv_builder_new ();
  Run *run;

  if (parent == NULL)
    {
      espalier_show_toast (GTK_WIDGET (self), _("There is no variant to start from: train the model first"));
      return NULL;
    }
  if (espalier_variant_get_model (parent) == NULL)
    {
      g_autofree char *msg = g_strdup_printf (_("“%s” has no weights loaded to start from"),
                                              espalier_variant_get_name (parent));

      espalier_show_toast (GTK_WIDGET (self), msg);
      return NULL;
    }
  if (dataset == NULL)
    {
      espalier_show_toast (GTK_WIDGET (self),
                           _("Load the dataset first: optimizations fine-tune and measure on it"));
      return NULL;
    }

  run = g_atomic_rc_box_new0 (Run);
  g_weak_ref_init (&run->page, self);
  run->project = g_object_ref (self->project);
  run->parent = g_object_ref (parent);
  run->train = *espalier_project_get_train_options (self->project);
  for (guint i = 0; i < n; i++)
    {
      g_autoptr(EspalierVariant) v = g_list_model_get_item (self->variants, i);

      g_strv_builder_add (names, espalier_variant_get_name (v));
    }
  run->taken = g_strv_builder_end (names);
  run->job = espalier_job_new (title);
  run->last_curve = -1;

  self->job = g_object_ref (run->job);
  self->work = work;
  update_busy (self);
  return run;
}

/* The end of a run on the page (when it is still there). */
static void
run_end (EspalierOptimizePage *self,
         Run                  *run)
{
  if (self->job == run->job)
    {
      g_clear_object (&self->job);
      self->work = WORK_NONE;
    }
  update_busy (self);
}

/* Optimizing */

static void
on_optimize_step (EspalierOptimizePage   *self,
                  Run                    *run,
                  const EspalierProgress *p)
{
  guint epochs = MAX (run->epochs > 0 ? run->epochs : p->epochs, 1);
  double x = (p->epoch > 0 ? p->epoch - 1 : 0) + (double) p->step / MAX (p->steps, 1);
  gint64 now = g_get_monotonic_time ();
  g_autofree char *status = NULL;

  if (run->last_curve >= 0 && now - run->last_curve < CURVE_INTERVAL * G_USEC_PER_SEC
      && p->step < p->steps)
    return;
  run->last_curve = now;
  if (isfinite (p->loss))
    espalier_series_append (self->running_loss, x, p->loss);
  espalier_job_set_fraction (run->job, CLAMP (x / epochs, 0, 1));
  /* TRANSLATORS: fine-tuning progress: "Epoch 1 of 2 · step 30 of 90 · loss 0.4123" */
  status = g_strdup_printf (_("Fine-tuning: epoch %u of %u · step %u of %u · loss %.4f"),
                            MAX (p->epoch, 1), epochs, p->step, p->steps, p->loss);
  espalier_job_set_status (run->job, status);
  set_tuning_status (self, status, FALSE);
}

static void
on_optimize_epoch (EspalierOptimizePage   *self,
                   Run                    *run,
                   const EspalierProgress *p)
{
  const EspalierEpochRecord *rec = p->record;

  if (rec == NULL)
    return;
  if (isfinite (rec->val_accuracy))
    espalier_series_append (self->val_accuracy, rec->epoch, 100 * rec->val_accuracy);
  if (isfinite (rec->train_accuracy))
    espalier_series_append (self->train_accuracy, rec->epoch, 100 * rec->train_accuracy);
  if (isfinite (rec->val_loss))
    espalier_series_append (self->val_loss, rec->epoch, rec->val_loss);
  extend_parent_line (self, rec->epoch);
}

static void
on_optimize_progress (const EspalierProgress *p,
                      gpointer                data)
{
  Run *run = data;
  g_autoptr(EspalierOptimizePage) self = g_weak_ref_get (&run->page);

  if (self == NULL || self->job != run->job)
    return;
  switch (p->kind)
    {
    case ESPALIER_PROGRESS_START:
      run->epochs = p->epochs;
      break;
    case ESPALIER_PROGRESS_STEP:
      on_optimize_step (self, run, p);
      break;
    case ESPALIER_PROGRESS_EPOCH:
      on_optimize_epoch (self, run, p);
      break;
    case ESPALIER_PROGRESS_MESSAGE:
      if (p->message != NULL)
        {
          espalier_job_set_status (run->job, p->message);
          set_tuning_status (self, p->message, FALSE);
        }
      break;
    default:
      break;
    }
}

static void
on_optimized (GObject      *source,
              GAsyncResult *result,
              gpointer      data)
{
  Run *run = data;
  g_autoptr(EspalierOptimizePage) self = g_weak_ref_get (&run->page);
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierVariant) variant = espalier_optimize_finish (result, &error);

  /* The project gets the variant even when the page has gone. */
  if (variant != NULL)
    espalier_project_add_variant (run->project, variant);
  espalier_job_finish (run->job, error);

  /* Only while the page still owns the job: a disposed page has dropped it. */
  if (self != NULL && self->job == run->job)
    {
      run_end (self, run);
      if (variant != NULL)
        {
          g_autofree char *latency = espalier_format_latency (espalier_variant_get_latency_us (variant));
          g_autofree char *text = NULL;

          /* TRANSLATORS: a new variant, its test accuracy and its batch-1 latency */
          text = g_strdup_printf (_("Added “%s”: %.2f %% test accuracy, %s per sample"),
                                  espalier_variant_get_name (variant),
                                  100 * espalier_variant_get_accuracy (variant), latency);
          set_tuning_status (self, text, FALSE);
          espalier_show_toast (GTK_WIDGET (self), text);
          select_in_table (self, variant);
          espalier_variant_compare_select (self->compare, espalier_variant_get_name (run->parent),
                                           espalier_variant_get_name (variant));
        }
      else if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        set_tuning_status (self, _("Stopped: nothing was added"), FALSE);
      else
        set_tuning_status (self, error != NULL ? error->message : _("The optimization failed"), TRUE);
    }
  run_release (run);
}

static void
apply_action (GtkWidget  *widget,
              const char *action_name,
              GVariant   *parameter)
{
  EspalierOptimizePage *self = ESPALIER_OPTIMIZE_PAGE (widget);
  g_autofree char *what = NULL;
  gboolean fine_tunes;
  Run *run;

  if (self->job != NULL || self->measure_job != NULL)
    return;
  if ((run = run_new (self, WORK_OPTIMIZE, _("Optimizing"))) == NULL)
    return;
  espalier_optimize_settings_get_options (self->settings, &run->opts);
  what = espalier_optimize_describe (&run->opts);
  espalier_job_set_status (run->job, what);
  espalier_job_set_fraction (run->job, -1);
  espalier_job_show (run->job, widget);

  fine_tunes = espalier_technique_fine_tunes (espalier_optimize_settings_get_technique (self->settings),
                                              run->opts.epochs);
  clear_curves (self, run->parent, fine_tunes);
  set_tuning_status (self, fine_tunes ? what : _("No fine-tuning: the weights are converted, then measured"),
                     FALSE);

  espalier_optimize_async (espalier_project_get_dataset (self->project), run->parent, &run->train,
                           &run->opts, (const char * const *) run->taken,
                           espalier_job_get_cancellable (run->job),
                           on_optimize_progress, run_ref (run), run_release,
                           on_optimized, run);
}

static void
stop_action (GtkWidget  *widget,
             const char *action_name,
             GVariant   *parameter)
{
  EspalierOptimizePage *self = ESPALIER_OPTIMIZE_PAGE (widget);

  if (self->job != NULL)
    espalier_job_cancel (self->job);
}

/* The sensitivity scan */

/* "50, 75, 90" (percent) into fractions; FALSE on anything else. */
static gboolean
parse_levels (const char  *text,
              double     **levels,
              guint       *n_levels)
{
  g_auto(GStrv) parts = g_strsplit_set (text, ",; ", -1);
  g_autoptr(GArray) out = g_array_new (FALSE, FALSE, sizeof (double));

  for (guint i = 0; parts[i] != NULL; i++)
    {
      char *end = NULL;
      double v;

      if (*parts[i] == '\0')
        continue;
      v = g_ascii_strtod (parts[i], &end);
      if (end == parts[i] || (*end != '\0' && *end != '%') || !(v > 0 && v < 100))
        return FALSE;
      v /= 100;
      g_array_append_val (out, v);
    }
  if (out->len == 0)
    return FALSE;
  *n_levels = out->len;
  *levels = (double *) g_array_free (g_steal_pointer (&out), FALSE);
  return TRUE;
}

static void
on_scan_progress (const EspalierProgress *p,
                  gpointer                data)
{
  Run *run = data;
  g_autoptr(EspalierOptimizePage) self = g_weak_ref_get (&run->page);

  if (self == NULL || self->job != run->job)
    return;
  if (p->kind == ESPALIER_PROGRESS_STEP && p->steps > 0)
    {
      /* TRANSLATORS: "Evaluation 3 of 12" of a sensitivity scan */
      g_autofree char *status = g_strdup_printf (_("Evaluation %u of %u"), p->step, p->steps);

      espalier_job_set_fraction (run->job, CLAMP ((double) p->step / p->steps, 0, 1));
      espalier_job_set_status (run->job, status);
    }
  else if (p->kind == ESPALIER_PROGRESS_MESSAGE && p->message != NULL)
    espalier_job_set_status (run->job, p->message);
}

static void
on_scanned (GObject      *source,
            GAsyncResult *result,
            gpointer      data)
{
  Run *run = data;
  g_autoptr(EspalierOptimizePage) self = g_weak_ref_get (&run->page);
  g_autoptr(GError) error = NULL;
  g_autoptr(GArray) rows = espalier_sensitivity_scan_finish (result, &error);

  espalier_job_finish (run->job, error);
  if (self != NULL && self->job == run->job)
    {
      run_end (self, run);
      if (rows != NULL)
        {
          espalier_sensitivity_view_set_results (self->scan_view, run->scan_kind, rows,
                                                 espalier_variant_get_model (run->parent));
          gtk_widget_set_visible (GTK_WIDGET (self->scan_view), TRUE);
        }
      else if (error != NULL && !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        espalier_show_toast (GTK_WIDGET (self), error->message);
    }
  run_release (run);
}

static void
scan_action (GtkWidget  *widget,
             const char *action_name,
             GVariant   *parameter)
{
  EspalierOptimizePage *self = ESPALIER_OPTIMIZE_PAGE (widget);
  EspalierSensitivityKind kind = adw_combo_row_get_selected (self->scan_kind_row) == 1
                                 ? ESPALIER_SENSITIVITY_QUANTIZE : ESPALIER_SENSITIVITY_PRUNE;
  g_autofree double *levels = NULL;
  guint n_levels = 0;
  Run *run;

  if (self->job != NULL || self->measure_job != NULL)
    return;
  if (kind == ESPALIER_SENSITIVITY_PRUNE
      && !parse_levels (gtk_editable_get_text (GTK_EDITABLE (self->scan_levels_row)), &levels, &n_levels))
    {
      gtk_widget_add_css_class (GTK_WIDGET (self->scan_levels_row), "error");
      espalier_show_toast (widget, _("Sparsities are percentages between 0 and 100, separated by commas"));
      return;
    }
  gtk_widget_remove_css_class (GTK_WIDGET (self->scan_levels_row), "error");
  if ((run = run_new (self, WORK_SCAN, _("Sensitivity scan"))) == NULL)
    return;
  run->scan_kind = kind;
  run->levels = g_steal_pointer (&levels);
  run->n_levels = n_levels;
  espalier_job_set_fraction (run->job, -1);
  espalier_job_show (run->job, widget);

  espalier_sensitivity_scan_async (espalier_project_get_dataset (self->project), run->parent,
                                   &run->train, kind, run->levels, run->n_levels,
                                   espalier_job_get_cancellable (run->job),
                                   on_scan_progress, run_ref (run), run_release,
                                   on_scanned, run);
}

/* Enter in the sparsities scans, as the button does. */
static void
on_scan_levels_activated (EspalierOptimizePage *self)
{
  gtk_widget_activate_action (GTK_WIDGET (self), "optimize.scan", NULL);
}

static void
on_scan_kind_changed (EspalierOptimizePage *self)
{
  gtk_widget_set_visible (GTK_WIDGET (self->scan_levels_row),
                          adw_combo_row_get_selected (self->scan_kind_row) != 1);
}

/* The live charts of fine-tuning: their series stay, the page refills them per run. */
static void
setup_tuning_charts (EspalierOptimizePage *self)
{
  struct {
    EspalierChart   *chart;
    EspalierSeries **series;
    const char      *title;
    guint            color;
    gboolean         dashed;
  } lines[] = {
    { self->tuning_accuracy_chart, &self->parent_accuracy, N_("Parent (test)"), 7, TRUE },
    { self->tuning_accuracy_chart, &self->train_accuracy, N_("Training"), 1, FALSE },
    { self->tuning_accuracy_chart, &self->val_accuracy, N_("Validation"), 0, FALSE },
    { self->tuning_loss_chart, &self->running_loss, N_("Training (running)"), 1, FALSE },
    { self->tuning_loss_chart, &self->val_loss, N_("Validation"), 0, FALSE },
  };
  GdkRGBA grey = { 0.5, 0.5, 0.5, 0.8 };

  for (guint i = 0; i < G_N_ELEMENTS (lines); i++)
    {
      g_autoptr(EspalierChartLayer) layer = NULL;
      GdkRGBA color;

      *lines[i].series = espalier_series_new (_(lines[i].title));
      layer = espalier_line_layer_new (*lines[i].series);
      espalier_chart_layer_set_title (layer, _(lines[i].title));
      if (lines[i].dashed)
        {
          espalier_line_layer_set_dashed (ESPALIER_LINE_LAYER (layer), TRUE);
          espalier_chart_layer_set_color (layer, &grey);
        }
      else
        {
          espalier_chart_palette_color (lines[i].color, &color);
          espalier_chart_layer_set_color (layer, &color);
        }
      espalier_chart_add_layer (lines[i].chart, layer);
    }

  espalier_chart_set_title (self->tuning_accuracy_chart, _("Accuracy while Fine-Tuning"));
  espalier_chart_set_empty_text (self->tuning_accuracy_chart,
                                 _("Accuracy after each epoch of fine-tuning appears here"));
  espalier_chart_axis_set_title (espalier_chart_get_x_axis (self->tuning_accuracy_chart), _("Epoch"));
  espalier_chart_axis_set_integer_ticks (espalier_chart_get_x_axis (self->tuning_accuracy_chart), TRUE);
  espalier_chart_axis_set_title (espalier_chart_get_y_axis (self->tuning_accuracy_chart), _("Accuracy (%)"));
  espalier_chart_set_title (self->tuning_loss_chart, _("Loss while Fine-Tuning"));
  espalier_chart_set_empty_text (self->tuning_loss_chart, _("The loss of every step appears here"));
  espalier_chart_axis_set_title (espalier_chart_get_x_axis (self->tuning_loss_chart), _("Epoch"));
  espalier_chart_axis_set_integer_ticks (espalier_chart_get_x_axis (self->tuning_loss_chart), TRUE);
  espalier_chart_axis_set_title (espalier_chart_get_y_axis (self->tuning_loss_chart), _("Loss"));
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

  /* The measurement's task holds the page until it ends; its callback finishes the job.
   * An optimization or scan holds only a weak reference: its callbacks finish the job
   * and leave the page alone once it no longer holds it. */
  if (self->selection != NULL)
    g_signal_handlers_disconnect_by_data (self->selection, self);
  if (self->parent_row != NULL)
    g_signal_handlers_disconnect_by_data (self->parent_row, self);
  if (self->settings != NULL)
    g_signal_handlers_disconnect_by_data (self->settings, self);
  if (self->scan_kind_row != NULL)
    g_signal_handlers_disconnect_by_data (self->scan_kind_row, self);
  if (self->scan_levels_row != NULL)
    g_signal_handlers_disconnect_by_data (self->scan_levels_row, self);
  if (self->measure_job != NULL)
    espalier_job_cancel (self->measure_job);
  if (self->job != NULL)
    espalier_job_cancel (self->job);
  g_clear_object (&self->job);
  self->work = WORK_NONE;
  disconnect_project (self);
  if (self->sort_model != NULL)
    gtk_sort_list_model_set_model (self->sort_model, NULL);
  /* The bin's child is a template child: let the bin drop it before the template
   * does, or both would unparent it. */
  adw_bin_set_child (ADW_BIN (self), NULL);
  gtk_widget_dispose_template (GTK_WIDGET (self), ESPALIER_TYPE_OPTIMIZE_PAGE);
  g_clear_object (&self->project);
  g_clear_object (&self->selection);
  g_clear_object (&self->sort_model);
  g_clear_object (&self->val_accuracy);
  g_clear_object (&self->train_accuracy);
  g_clear_object (&self->parent_accuracy);
  g_clear_object (&self->running_loss);
  g_clear_object (&self->val_loss);
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
  gtk_widget_class_install_action (widget_class, "optimize.apply", NULL, apply_action);
  gtk_widget_class_install_action (widget_class, "optimize.stop", NULL, stop_action);
  gtk_widget_class_install_action (widget_class, "optimize.scan", NULL, scan_action);

  g_type_ensure (ESPALIER_TYPE_CHART);
  g_type_ensure (ESPALIER_TYPE_SPARSITY_STRIP);
  g_type_ensure (ESPALIER_TYPE_OPTIMIZE_SETTINGS);
  g_type_ensure (ESPALIER_TYPE_VARIANT_COMPARE);
  g_type_ensure (ESPALIER_TYPE_SENSITIVITY_VIEW);
  gtk_widget_class_set_template_from_resource (widget_class,
                                               "/io/github/espalier/Espalier/ui/espalier-optimize-page.ui");
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, stack);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, count_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, chart);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, variants_view);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, strip_title);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, strip);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, optimizations_group);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, parent_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, settings);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, summary_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, apply_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, stop_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, tuning_status);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, tuning_accuracy_chart);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, tuning_loss_chart);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, compare);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, scan_kind_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, scan_levels_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, scan_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, scan_stop_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierOptimizePage, scan_view);
}

static void
espalier_optimize_page_init (EspalierOptimizePage *self)
{
  EspalierChartAxis *x_axis, *y_axis;
  g_autoptr(GtkExpression) name = NULL;

  gtk_widget_init_template (GTK_WIDGET (self));
  self->watched = g_ptr_array_new_with_free_func (g_object_unref);

  add_column (self, COL_NAME, _("Name"), "name", TRUE);
  add_column (self, COL_KIND, _("Kind"), "kind", FALSE);
  add_column (self, COL_FORMAT, _("Format"), "format", FALSE);
  /* Short titles: thirteen columns share the width; the page's description and the
   * comparison say the rest (test split, batch 1, median). */
  add_column (self, COL_ACCURACY, _("Accuracy (%)"), "accuracy", FALSE);
  add_column (self, COL_LATENCY, _("Latency (µs)"), "latency-us", FALSE);
  add_column (self, COL_P95, _("p95 (µs)"), "latency-p95-us", FALSE);
  add_column (self, COL_ROWS_PER_SECOND, _("Rows/s"), "rows-per-second", FALSE);
  add_column (self, COL_SIZE, _("Size (kB)"), "size-bytes", FALSE);
  add_column (self, COL_PARAMS, _("Params"), "n-params", FALSE);
  add_column (self, COL_SPARSITY, _("Sparsity (%)"), NULL, FALSE);
  add_column (self, COL_FLOPS, _("FLOPs"), "flops", FALSE);
  add_column (self, COL_ACTIONS, NULL, NULL, FALSE);

  self->sort_model = gtk_sort_list_model_new (NULL,
                                              g_object_ref (gtk_column_view_get_sorter (self->variants_view)));
  /* A selected row: its sparsity per layer shows under the table. */
  self->selection = gtk_single_selection_new (G_LIST_MODEL (g_object_ref (self->sort_model)));
  gtk_column_view_set_model (self->variants_view, GTK_SELECTION_MODEL (self->selection));
  g_signal_connect_swapped (self->selection, "notify::selected-item",
                            G_CALLBACK (on_selection_changed), self);

  espalier_chart_set_title (self->chart, _("Accuracy against Latency"));
  espalier_chart_set_empty_text (self->chart,
                                 _("Variants appear here once their accuracy and latency are measured"));
  x_axis = espalier_chart_get_x_axis (self->chart);
  y_axis = espalier_chart_get_y_axis (self->chart);
  espalier_chart_axis_set_title (x_axis, _("Latency, one sample (µs)"));
  espalier_chart_axis_set_title (y_axis, _("Test accuracy (%)"));

  name = gtk_property_expression_new (ESPALIER_TYPE_VARIANT, NULL, "name");
  adw_combo_row_set_expression (self->parent_row, name);
  g_signal_connect_swapped (self->parent_row, "notify::selected-item",
                            G_CALLBACK (on_parent_changed), self);
  g_signal_connect_swapped (self->settings, "changed", G_CALLBACK (update_summary), self);
  g_signal_connect_swapped (self->scan_kind_row, "notify::selected",
                            G_CALLBACK (on_scan_kind_changed), self);
  g_signal_connect_swapped (self->scan_levels_row, "entry-activated",
                            G_CALLBACK (on_scan_levels_activated), self);
  setup_tuning_charts (self);

  refresh_count (self);
  update_summary (self);
  update_busy (self);
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
      /* After the list's other watchers (the sorted table, the combo rows): choosing a
       * parent while they have not seen the change yet would confuse their selection. */
      g_signal_connect_after (self->variants, "items-changed", G_CALLBACK (on_variants_changed), self);
    }
  gtk_sort_list_model_set_model (self->sort_model, self->variants);
  adw_combo_row_set_model (self->parent_row, self->variants);
  espalier_variant_compare_set_variants (self->compare, self->variants);
  watch_variants (self);
  refresh_chart (self);
  refresh_count (self);
  select_default_parent (self);
  on_parent_changed (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_PROJECT]);
}
