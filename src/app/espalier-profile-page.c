/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-profile-page.c: the Profile page as far as it goes before the profiler:
 * what the model's shapes tell (per layer: output shape, parameters, forward FLOPs and
 * activation floats per sample, share of the FLOPs; a bar chart of the FLOPs), the
 * engine's training memory plan for the current batch size, and the last run's time
 * per epoch and rows per second. Everything follows the model doc, the project and the
 * runs, refreshed at most once per main-loop turn. It measures nothing itself: timing
 * per stage and layer and the roofline come with the profiler issue. */
#include "config.h"

#include <glib/gi18n.h>

#include "es-train.h"
#include "espalier-chart.h"
#include "espalier-chart-layers.h"
#include "espalier-profile-page.h"
#include "espalier-split.h"
#include "espalier-ui-util.h"

/* One row of the layers table: a snapshot of a layer's EsLayerInfo, taken at refresh. */
#define ESPALIER_TYPE_PROFILE_ROW (espalier_profile_row_get_type ())
G_DECLARE_FINAL_TYPE (EspalierProfileRow, espalier_profile_row, ESPALIER, PROFILE_ROW, GObject)

struct _EspalierProfileRow
{
  GObject  parent_instance;

  guint    index;          /* 0-based position in the model */
  char    *kind;           /* "Dense" */
  char    *output_shape;   /* "(128)", or NULL when the layer is invalid */
  char    *error;          /* why it is invalid, or NULL */
  gint64   n_params;
  gint64   flops;          /* forward FLOPs per sample */
  gint64   activations;    /* output floats per sample */
  double   share;          /* of the model's FLOPs, 0..1 */
};

G_DEFINE_FINAL_TYPE (EspalierProfileRow, espalier_profile_row, G_TYPE_OBJECT)

enum {
  ROW_PROP_0,
  ROW_PROP_INDEX,
  ROW_PROP_KIND,
  ROW_PROP_OUTPUT_SHAPE,
  ROW_PROP_ERROR,
  ROW_PROP_N_PARAMS,
  ROW_PROP_FLOPS,
  ROW_PROP_ACTIVATIONS,
  ROW_PROP_SHARE,
  ROW_N_PROPS
};

/* The table's columns, in order. */
typedef enum {
  COL_INDEX,
  COL_KIND,
  COL_SHAPE,
  COL_PARAMS,
  COL_FLOPS,
  COL_ACTIVATIONS,
  COL_SHARE,
  N_COLUMNS
} Column;

/* The memory plan's parts, in the order of es-train.h's EsMemPlan. */
typedef enum {
  MEM_WEIGHTS,
  MEM_GRADIENTS,
  MEM_OPTIMIZER,
  MEM_ACTIVATIONS,
  MEM_WORKSPACE,
  MEM_DATA,
  MEM_TOTAL,
  N_MEM_ROWS
} MemRow;

struct _EspalierProfilePage
{
  AdwBin               parent_instance;

  EspalierProject     *project;
  EspalierModelDoc    *doc;           /* the project's, (transfer none) */
  GListModel          *runs;          /* the project's, (transfer none) */
  EspalierRun         *watched_run;   /* the last run, whose records we follow */
  GListStore          *rows;          /* (element-type EspalierProfileRow) */
  guint                refresh_id;

  /* Rows of the training split, cached: a split of a big set is not free. */
  EspalierDataset     *split_dataset;
  double               split_val, split_test;
  guint64              split_seed;
  guint                split_train_rows;

  AdwActionRow        *mem_rows[N_MEM_ROWS];
  GtkLabel            *mem_labels[N_MEM_ROWS];

  /* template */
  GtkStack            *stack;
  GtkLabel            *summary_label;
  GtkLabel            *caption_label;
  GtkLabel            *error_label;
  GtkColumnView       *layers_view;
  EspalierChart       *flops_chart;
  EspalierChart       *memory_chart;
  AdwPreferencesGroup *memory_group;
  AdwPreferencesGroup *run_group;
  AdwActionRow        *run_row;
  AdwActionRow        *epoch_time_row;
  AdwActionRow        *throughput_row;
  GtkLabel            *run_label;
  GtkLabel            *epoch_time_label;
  GtkLabel            *throughput_label;
};

G_DEFINE_FINAL_TYPE (EspalierProfilePage, espalier_profile_page, ADW_TYPE_BIN)

enum { PROP_0, PROP_PROJECT, N_PROPS };
static GParamSpec *properties[N_PROPS];

/* The row type */

static void
espalier_profile_row_finalize (GObject *object)
{
  EspalierProfileRow *self = ESPALIER_PROFILE_ROW (object);

  g_free (self->kind);
  g_free (self->output_shape);
  g_free (self->error);
  G_OBJECT_CLASS (espalier_profile_row_parent_class)->finalize (object);
}

static void
espalier_profile_row_get_property (GObject    *object,
                                   guint       prop_id,
                                   GValue     *value,
                                   GParamSpec *pspec)
{
  EspalierProfileRow *self = ESPALIER_PROFILE_ROW (object);

  switch (prop_id)
    {
    case ROW_PROP_INDEX:
      g_value_set_uint (value, self->index);
      break;
    case ROW_PROP_KIND:
      g_value_set_string (value, self->kind);
      break;
    case ROW_PROP_OUTPUT_SHAPE:
      g_value_set_string (value, self->output_shape);
      break;
    case ROW_PROP_ERROR:
      g_value_set_string (value, self->error);
      break;
    case ROW_PROP_N_PARAMS:
      g_value_set_int64 (value, self->n_params);
      break;
    case ROW_PROP_FLOPS:
      g_value_set_int64 (value, self->flops);
      break;
    case ROW_PROP_ACTIVATIONS:
      g_value_set_int64 (value, self->activations);
      break;
    case ROW_PROP_SHARE:
      g_value_set_double (value, self->share);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_profile_row_class_init (EspalierProfileRowClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  const GParamFlags flags = G_PARAM_READABLE | G_PARAM_STATIC_STRINGS;
  GParamSpec *props[ROW_N_PROPS] = { NULL };

  object_class->finalize = espalier_profile_row_finalize;
  object_class->get_property = espalier_profile_row_get_property;

  props[ROW_PROP_INDEX] = g_param_spec_uint ("index", NULL, NULL, 0, G_MAXUINT, 0, flags);
  props[ROW_PROP_KIND] = g_param_spec_string ("kind", NULL, NULL, NULL, flags);
  props[ROW_PROP_OUTPUT_SHAPE] = g_param_spec_string ("output-shape", NULL, NULL, NULL, flags);
  props[ROW_PROP_ERROR] = g_param_spec_string ("error", NULL, NULL, NULL, flags);
  props[ROW_PROP_N_PARAMS] = g_param_spec_int64 ("n-params", NULL, NULL, 0, G_MAXINT64, 0, flags);
  props[ROW_PROP_FLOPS] = g_param_spec_int64 ("flops", NULL, NULL, 0, G_MAXINT64, 0, flags);
  props[ROW_PROP_ACTIVATIONS] =
    g_param_spec_int64 ("activations", NULL, NULL, 0, G_MAXINT64, 0, flags);
  props[ROW_PROP_SHARE] = g_param_spec_double ("share", NULL, NULL, 0, 1, 0, flags);
  g_object_class_install_properties (object_class, ROW_N_PROPS, props);
}

static void
espalier_profile_row_init (EspalierProfileRow *self)
{
}

/* Formatting */

static char *
format_seconds (double s)
{
  if (s < 1e-3)
    return g_strdup_printf (_("%.0f µs"), s * 1e6);
  if (s < 1)
    return g_strdup_printf (_("%.1f ms"), s * 1e3);
  if (s < 100)
    return g_strdup_printf (_("%.2f s"), s);
  return g_strdup_printf (_("%.0f s"), s);
}

GtkWidget *
espalier_profile_page_new (void)
{
  return g_object_new (ESPALIER_TYPE_PROFILE_PAGE, NULL);
}

/* Refreshing */

static void
refresh_layers (EspalierProfilePage *self)
{
  guint n = espalier_model_doc_get_n_layers (self->doc);
  g_autoptr(GPtrArray) rows = g_ptr_array_new_with_free_func (g_object_unref);
  g_autofree double *flops = g_new0 (double, MAX (n, 1));           /* (n) */
  g_autofree const char **labels = g_new0 (const char *, n + 1);    /* (n) */
  gint64 total_params = 0, total_flops = 0, total_act = 0;
  g_autofree char *params_text = NULL, *flops_text = NULL, *act_text = NULL;
  g_autofree char *summary = NULL;
  const char *error = espalier_model_doc_get_error (self->doc);
  EspalierChartLayer *bars;

  espalier_model_doc_get_totals (self->doc, &total_params, &total_flops, &total_act);

  for (guint i = 0; i < n; i++)
    {
      const EsLayerSpec *spec = espalier_model_doc_get_layer (self->doc, i);
      const EsLayerInfo *info = espalier_model_doc_get_layer_info (self->doc, i);
      EspalierProfileRow *row = g_object_new (ESPALIER_TYPE_PROFILE_ROW, NULL);

      row->index = i;
      row->kind = g_strdup (es_layer_kind_title (spec->kind));
      row->error = g_strdup (espalier_model_doc_get_layer_error (self->doc, i));
      if (info != NULL)
        {
          char buf[64];

          row->output_shape = g_strdup (es_shape_format (&info->out, buf, sizeof buf));
          row->n_params = info->n_params;
          row->flops = info->flops;
          row->activations = info->out_floats;
          row->share = total_flops > 0 ? (double) info->flops / (double) total_flops : 0.0;
        }
      flops[i] = (double) row->flops;
      labels[i] = row->kind;
      g_ptr_array_add (rows, row);
    }
  g_list_store_splice (self->rows, 0, g_list_model_get_n_items (G_LIST_MODEL (self->rows)),
                       rows->pdata, rows->len);

  params_text = espalier_format_grouped (total_params);
  flops_text = espalier_format_si ((double) total_flops);
  act_text = espalier_format_si ((double) total_act);
  summary = g_strdup_printf (ngettext ("%u layer · %s parameters · %s FLOPs and %s activation floats per sample",
                                       "%u layers · %s parameters · %s FLOPs and %s activation floats per sample",
                                       n),
                             n, params_text, flops_text, act_text);
  gtk_label_set_label (self->summary_label, summary);

  gtk_label_set_label (self->error_label, error != NULL ? error : "");
  gtk_widget_set_visible (GTK_WIDGET (self->error_label), error != NULL && n > 0);

  bars = espalier_chart_get_n_layers (self->flops_chart) > 0
         ? espalier_chart_get_layer (self->flops_chart, 0) : NULL;
  if (bars != NULL)
    espalier_bars_layer_set_values (ESPALIER_BARS_LAYER (bars), flops,
                                    (const char * const *) labels, n);
}

static const char *
mem_title (MemRow row)
{
  switch (row)
    {
    case MEM_WEIGHTS:     return _("Weights");
    case MEM_GRADIENTS:   return _("Gradients");
    case MEM_OPTIMIZER:   return _("Optimizer State");
    case MEM_ACTIVATIONS: return _("Activations");
    case MEM_WORKSPACE:   return _("Workspace");
    case MEM_DATA:        return _("Input Batch");
    case MEM_TOTAL:       return _("Total");
    case N_MEM_ROWS:
    default:              return NULL;
    }
}

static const char *
mem_subtitle (MemRow row)
{
  switch (row)
    {
    case MEM_WEIGHTS:     return _("Parameters and BatchNorm running statistics");
    case MEM_GRADIENTS:   return _("One per trainable parameter");
    case MEM_OPTIMIZER:   return _("Momentum and moment estimates the optimizer keeps");
    case MEM_ACTIVATIONS: return _("Layer outputs kept for the backward pass, for the whole batch");
    case MEM_WORKSPACE:   return _("Convolution columns (im2col) of one compute thread");
    case MEM_DATA:        return _("Inputs, targets and labels of one batch on the device");
    case MEM_TOTAL:       return NULL;
    case N_MEM_ROWS:
    default:              return NULL;
    }
}

static void
refresh_memory (EspalierProfilePage *self)
{
  const EspalierTrainOptions *opts = espalier_project_get_train_options (self->project);
  g_autoptr(GError) error = NULL;
  EsModel *model = NULL;
  EsMemPlan plan = { 0 };
  size_t parts[N_MEM_ROWS];
  double values[MEM_TOTAL];       /* (MEM_TOTAL) in the chart's unit */
  const char *labels[MEM_TOTAL + 1] = { NULL };
  g_autofree char *description = NULL;
  double unit;
  const char *unit_name;
  EspalierChartLayer *bars;

  if (espalier_model_doc_is_valid (self->doc))
    model = espalier_model_doc_build (self->doc, 0, &error);
  if (model != NULL)
    {
      es_mem_plan (model, &opts->engine, (int) MAX (opts->batch_size, 1), true, &plan);
      es_model_free (model);
    }

  parts[MEM_WEIGHTS] = plan.weights;
  parts[MEM_GRADIENTS] = plan.gradients;
  parts[MEM_OPTIMIZER] = plan.optimizer;
  parts[MEM_ACTIVATIONS] = plan.activations;
  parts[MEM_WORKSPACE] = plan.workspace;
  parts[MEM_DATA] = plan.data;
  parts[MEM_TOTAL] = plan.total;

  for (guint r = 0; r < N_MEM_ROWS; r++)
    {
      g_autofree char *text = model != NULL ? g_format_size (parts[r]) : NULL;

      gtk_label_set_label (self->mem_labels[r], text != NULL ? text : "—");
    }

  if (model != NULL)
    description = g_strdup_printf (ngettext ("Planned by the engine for a batch of %u row, before anything is allocated",
                                             "Planned by the engine for a batch of %u rows, before anything is allocated",
                                             opts->batch_size),
                                   opts->batch_size);
  else
    description = g_strdup (_("The model has to be valid to plan its memory"));
  adw_preferences_group_set_description (self->memory_group, description);

  /* The chart in KB or MB, whichever keeps the numbers readable. */
  if (plan.total >= 1000 * 1000)
    {
      unit = 1e6;
      unit_name = _("Memory (MB)");
    }
  else
    {
      unit = 1e3;
      unit_name = _("Memory (kB)");
    }
  espalier_chart_axis_set_title (espalier_chart_get_y_axis (self->memory_chart), unit_name);
  for (guint r = 0; r < MEM_TOTAL; r++)
    {
      values[r] = (double) parts[r] / unit;
      labels[r] = mem_title (r);
    }
  bars = espalier_chart_get_n_layers (self->memory_chart) > 0
         ? espalier_chart_get_layer (self->memory_chart, 0) : NULL;
  if (bars != NULL)
    espalier_bars_layer_set_values (ESPALIER_BARS_LAYER (bars), values, labels,
                                    model != NULL ? MEM_TOTAL : 0);
}

/* Training rows of the split the run's options make, or 0 without the dataset. */
static guint
train_rows (EspalierProfilePage        *self,
            const EspalierTrainOptions *opts)
{
  EspalierDataset *dataset = espalier_project_get_dataset (self->project);
  g_autoptr(EspalierSplit) split = NULL;

  if (dataset == NULL)
    return 0;
  if (dataset == self->split_dataset && opts->val_fraction == self->split_val
      && opts->test_fraction == self->split_test && opts->seed == self->split_seed)
    return self->split_train_rows;

  split = espalier_split_new (dataset, opts->val_fraction, opts->test_fraction, opts->seed, NULL);
  g_set_object (&self->split_dataset, dataset);
  self->split_val = opts->val_fraction;
  self->split_test = opts->test_fraction;
  self->split_seed = opts->seed;
  self->split_train_rows = split != NULL ? split->train->len : 0;
  return self->split_train_rows;
}

static void refresh_later (EspalierProfilePage *self);

static void
on_run_record_added (EspalierRun         *run,
                     guint                index,
                     EspalierProfilePage *self)
{
  refresh_later (self);
}

static void
watch_run (EspalierProfilePage *self,
           EspalierRun         *run)
{
  espalier_follow (&self->watched_run, run, "record-added",
                   G_CALLBACK (on_run_record_added), self, 0);
}

static void
refresh_run (EspalierProfilePage *self)
{
  guint n_runs = g_list_model_get_n_items (self->runs);
  g_autoptr(EspalierRun) run = n_runs > 0 ? g_list_model_get_item (self->runs, n_runs - 1) : NULL;
  GArray *history = run != NULL ? espalier_run_get_history (run) : NULL;
  double seconds = 0;
  guint timed = 0, rows;
  g_autofree char *run_text = NULL;

  watch_run (self, run);
  for (guint i = 0; history != NULL && i < history->len; i++)
    {
      const EspalierEpochRecord *r = &g_array_index (history, EspalierEpochRecord, i);

      if (r->seconds > 0)
        {
          seconds += r->seconds;
          timed++;
        }
    }
  gtk_widget_set_visible (GTK_WIDGET (self->epoch_time_row), timed > 0);
  gtk_widget_set_visible (GTK_WIDGET (self->throughput_row), FALSE);

  if (run == NULL)
    {
      gtk_label_set_label (self->run_label, _("None yet"));
      adw_action_row_set_subtitle (self->run_row, _("Train the model to time it"));
      return;
    }

  run_text = g_strdup_printf (ngettext ("%s · %u epoch", "%s · %u epochs", history->len),
                              espalier_run_get_name (run), history->len);
  gtk_label_set_label (self->run_label, run_text);
  {
    g_autoptr(GDateTime) created = g_date_time_new_from_iso8601 (espalier_run_get_created (run), NULL);
    g_autoptr(GDateTime) local = created != NULL ? g_date_time_to_local (created) : NULL;
    g_autofree char *when = local != NULL ? g_date_time_format (local, _("%Y-%m-%d %H:%M")) : NULL;
    g_autofree char *sub = when != NULL ? g_strdup_printf (_("Started %s"), when) : NULL;

    adw_action_row_set_subtitle (self->run_row, sub != NULL ? sub : "");
  }
  if (timed == 0)
    return;

  seconds /= timed;
  {
    g_autofree char *text = format_seconds (seconds);

    gtk_label_set_label (self->epoch_time_label, text);
  }
  rows = train_rows (self, espalier_run_get_options (run));
  if (rows > 0)
    {
      g_autofree char *rate = espalier_format_si (rows / seconds);
      g_autofree char *text = g_strdup_printf (_("%s rows/s"), rate);
      g_autofree char *sub = g_strdup_printf (_("%'u training rows per epoch"), rows);

      gtk_label_set_label (self->throughput_label, text);
      adw_action_row_set_subtitle (self->throughput_row, sub);
      gtk_widget_set_visible (GTK_WIDGET (self->throughput_row), TRUE);
    }
}

static void
refresh (EspalierProfilePage *self)
{
  gboolean has_layers = self->doc != NULL && espalier_model_doc_get_n_layers (self->doc) > 0;

  gtk_stack_set_visible_child_name (self->stack, has_layers ? "profile" : "empty");
  if (self->project == NULL)
    {
      g_list_store_remove_all (self->rows);
      watch_run (self, NULL);
      return;
    }
  refresh_layers (self);
  refresh_memory (self);
  refresh_run (self);
}

static gboolean
refresh_idle (gpointer data)
{
  EspalierProfilePage *self = data;

  self->refresh_id = 0;
  refresh (self);
  return G_SOURCE_REMOVE;
}

/* Coalesce: an edit changes the doc and the project at once. Before the next frame. */
static void
refresh_later (EspalierProfilePage *self)
{
  if (self->refresh_id == 0)
    self->refresh_id = g_idle_add_full (G_PRIORITY_HIGH_IDLE + 10, refresh_idle, self, NULL);
}

/* Callbacks */

static void
on_changed (EspalierProfilePage *self)
{
  refresh_later (self);
}

static void
on_runs_changed (GListModel          *model,
                 guint                position,
                 guint                removed,
                 guint                added,
                 EspalierProfilePage *self)
{
  refresh_later (self);
}

/* Cells */

static void
on_cell_setup (GtkSignalListItemFactory *factory,
               GtkListItem              *item,
               gpointer                  data)
{
  Column column = GPOINTER_TO_INT (data);
  GtkWidget *label = gtk_label_new (NULL);

  gtk_label_set_xalign (GTK_LABEL (label), column == COL_KIND || column == COL_SHAPE ? 0.0 : 1.0);
  if (column != COL_KIND)
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
  EspalierProfileRow *row = gtk_list_item_get_item (item);
  GtkWidget *label = gtk_list_item_get_child (item);
  gboolean known = row->output_shape != NULL;
  g_autofree char *text = NULL;

  switch (column)
    {
    case COL_INDEX:
      text = g_strdup_printf ("%u", row->index + 1);
      break;
    case COL_KIND:
      text = g_strdup (row->kind);
      break;
    case COL_SHAPE:
      text = g_strdup (known ? row->output_shape : "—");
      break;
    case COL_PARAMS:
      text = known ? espalier_format_grouped (row->n_params) : g_strdup ("—");
      break;
    case COL_FLOPS:
      text = known ? espalier_format_grouped (row->flops) : g_strdup ("—");
      break;
    case COL_ACTIVATIONS:
      text = known ? espalier_format_grouped (row->activations) : g_strdup ("—");
      break;
    case COL_SHARE:
      text = known ? g_strdup_printf ("%.1f %%", 100.0 * row->share) : g_strdup ("—");
      break;
    case N_COLUMNS:
    default:
      break;
    }
  gtk_label_set_label (GTK_LABEL (label), text);
  gtk_widget_set_tooltip_text (label, row->error);
  if (row->error != NULL && column == COL_KIND)
    gtk_widget_add_css_class (label, "error");
  else
    gtk_widget_remove_css_class (label, "error");
}

static void
add_column (EspalierProfilePage *self,
            Column               column,
            const char          *title,
            gboolean             expand)
{
  espalier_column_view_append (self->layers_view, title, expand, G_CALLBACK (on_cell_setup),
                               G_CALLBACK (on_cell_bind), NULL, GINT_TO_POINTER (column));
}

/* Life cycle */

static void
disconnect_project (EspalierProfilePage *self)
{
  if (self->project == NULL)
    return;
  g_signal_handlers_disconnect_by_func (self->project, on_changed, self);
  g_signal_handlers_disconnect_by_func (self->doc, on_changed, self);
  g_signal_handlers_disconnect_by_func (self->runs, on_runs_changed, self);
  watch_run (self, NULL);
  self->doc = NULL;
  self->runs = NULL;
}

static void
espalier_profile_page_dispose (GObject *object)
{
  EspalierProfilePage *self = ESPALIER_PROFILE_PAGE (object);

  g_clear_handle_id (&self->refresh_id, g_source_remove);
  disconnect_project (self);
  /* The bin's child is a template child: let the bin drop it before the template
   * does, or both would unparent it. */
  adw_bin_set_child (ADW_BIN (self), NULL);
  gtk_widget_dispose_template (GTK_WIDGET (self), ESPALIER_TYPE_PROFILE_PAGE);
  g_clear_object (&self->project);
  g_clear_object (&self->split_dataset);
  g_clear_object (&self->rows);
  G_OBJECT_CLASS (espalier_profile_page_parent_class)->dispose (object);
}

static void
espalier_profile_page_get_property (GObject    *object,
                                    guint       prop_id,
                                    GValue     *value,
                                    GParamSpec *pspec)
{
  EspalierProfilePage *self = ESPALIER_PROFILE_PAGE (object);

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
espalier_profile_page_set_property (GObject      *object,
                                    guint         prop_id,
                                    const GValue *value,
                                    GParamSpec   *pspec)
{
  EspalierProfilePage *self = ESPALIER_PROFILE_PAGE (object);

  switch (prop_id)
    {
    case PROP_PROJECT:
      espalier_profile_page_set_project (self, g_value_get_object (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_profile_page_class_init (EspalierProfilePageClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->dispose = espalier_profile_page_dispose;
  object_class->get_property = espalier_profile_page_get_property;
  object_class->set_property = espalier_profile_page_set_property;

  properties[PROP_PROJECT] =
    g_param_spec_object ("project", NULL, NULL, ESPALIER_TYPE_PROJECT,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  g_type_ensure (ESPALIER_TYPE_CHART);
  gtk_widget_class_set_template_from_resource (widget_class,
                                               "/io/github/espalier/Espalier/ui/espalier-profile-page.ui");
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, stack);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, summary_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, caption_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, error_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, layers_view);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, flops_chart);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, memory_chart);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, memory_group);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, run_group);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, run_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, epoch_time_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, throughput_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, run_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, epoch_time_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, throughput_label);
}

static void
espalier_profile_page_init (EspalierProfilePage *self)
{
  g_autoptr(GtkNoSelection) selection = NULL;
  g_autoptr(EspalierChartLayer) flops_bars = espalier_bars_layer_new ();
  g_autoptr(EspalierChartLayer) memory_bars = espalier_bars_layer_new ();
  EspalierChartAxis *axis;

  gtk_widget_init_template (GTK_WIDGET (self));

  self->rows = g_list_store_new (ESPALIER_TYPE_PROFILE_ROW);
  selection = gtk_no_selection_new (G_LIST_MODEL (g_object_ref (self->rows)));
  gtk_column_view_set_model (self->layers_view, GTK_SELECTION_MODEL (selection));
  add_column (self, COL_INDEX, "#", FALSE);
  add_column (self, COL_KIND, _("Layer"), TRUE);
  add_column (self, COL_SHAPE, _("Output Shape"), FALSE);
  add_column (self, COL_PARAMS, _("Parameters"), FALSE);
  add_column (self, COL_FLOPS, _("FLOPs / Sample"), FALSE);
  add_column (self, COL_ACTIVATIONS, _("Activations / Sample"), FALSE);
  add_column (self, COL_SHARE, _("Share of FLOPs"), FALSE);

  espalier_chart_set_title (self->flops_chart, _("Forward FLOPs per Sample"));
  espalier_chart_set_show_legend (self->flops_chart, FALSE);
  espalier_chart_set_empty_text (self->flops_chart, _("The model has no valid layers"));
  espalier_chart_layer_set_title (flops_bars, _("FLOPs"));
  espalier_chart_add_layer (self->flops_chart, flops_bars);
  axis = espalier_chart_get_y_axis (self->flops_chart);
  espalier_chart_axis_set_title (axis, _("FLOPs"));
  espalier_chart_axis_set_include_zero (axis, TRUE);

  espalier_chart_set_title (self->memory_chart, _("Training Memory Plan"));
  espalier_chart_set_show_legend (self->memory_chart, FALSE);
  espalier_chart_set_empty_text (self->memory_chart, _("The model has to be valid to plan its memory"));
  espalier_chart_layer_set_title (memory_bars, _("Memory"));
  espalier_bars_layer_set_per_bar_colors (ESPALIER_BARS_LAYER (memory_bars), TRUE);
  espalier_chart_add_layer (self->memory_chart, memory_bars);
  espalier_chart_axis_set_include_zero (espalier_chart_get_y_axis (self->memory_chart), TRUE);

  for (guint r = 0; r < N_MEM_ROWS; r++)
    {
      self->mem_rows[r] = ADW_ACTION_ROW (adw_action_row_new ());
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (self->mem_rows[r]), mem_title (r));
      if (mem_subtitle (r) != NULL)
        adw_action_row_set_subtitle (self->mem_rows[r], mem_subtitle (r));
      self->mem_labels[r] = GTK_LABEL (gtk_label_new (NULL));
      gtk_label_set_selectable (self->mem_labels[r], TRUE);
      gtk_widget_add_css_class (GTK_WIDGET (self->mem_labels[r]), "numeric");
      if (r == MEM_TOTAL)
        gtk_widget_add_css_class (GTK_WIDGET (self->mem_labels[r]), "heading");
      adw_action_row_add_suffix (self->mem_rows[r], GTK_WIDGET (self->mem_labels[r]));
      adw_preferences_group_add (self->memory_group, GTK_WIDGET (self->mem_rows[r]));
    }

  refresh (self);
}

EspalierProject *
espalier_profile_page_get_project (EspalierProfilePage *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROFILE_PAGE (self), NULL);
  return self->project;
}

void
espalier_profile_page_set_project (EspalierProfilePage *self,
                                   EspalierProject     *project)
{
  g_return_if_fail (ESPALIER_IS_PROFILE_PAGE (self));
  g_return_if_fail (project == NULL || ESPALIER_IS_PROJECT (project));

  if (self->project == project)
    return;

  disconnect_project (self);
  g_set_object (&self->project, project);
  if (project != NULL)
    {
      self->doc = espalier_project_get_model_doc (project);
      self->runs = espalier_project_get_runs (project);
      g_signal_connect_swapped (project, "changed", G_CALLBACK (on_changed), self);
      g_signal_connect_swapped (project, "notify::dataset", G_CALLBACK (on_changed), self);
      g_signal_connect_swapped (self->doc, "changed", G_CALLBACK (on_changed), self);
      g_signal_connect (self->runs, "items-changed", G_CALLBACK (on_runs_changed), self);
    }
  /* A new project shows at once; later edits coalesce. */
  g_clear_handle_id (&self->refresh_id, g_source_remove);
  refresh (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_PROJECT]);
}
