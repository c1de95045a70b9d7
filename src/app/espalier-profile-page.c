/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-profile-page.c: the Profile page (see espalier-profile-page.h). Two halves:
 * the profiler (a report from core's analyzer drawn by the stage bars, the advice
 * cards, the per-layer table, the roofline and the memory breakdown; the profile and
 * apply jobs; keeping and undoing an applied advice; the live feed of a training run)
 * and the model's facts from its shapes (per layer: output shape, parameters, forward
 * FLOPs and activation floats per sample, share of the FLOPs; a bar chart of the FLOPs;
 * the engine's training memory plan; the last run's time per epoch and rows per
 * second), refreshed at most once per main-loop turn. Jobs run core's functions on
 * worker threads (GTask) on copies of the model and options; results come back to the
 * main thread and are applied only while the page is alive and the job its own. */
#include "config.h"

#include <glib/gi18n.h>

#include <math.h>

#include "es-train.h"
#include "espalier-advice-card.h"
#include "espalier-ceilings.h"
#include "espalier-chart.h"
#include "espalier-chart-layers.h"
#include "espalier-job.h"
#include "espalier-layer-time-table.h"
#include "espalier-memory-breakdown.h"
#include "espalier-profile-page.h"
#include "espalier-roofline-view.h"
#include "espalier-split.h"
#include "espalier-stage-bars.h"
#include "espalier-templates.h"
#include "espalier-ui-util.h"

#define SETTINGS_SCHEMA "io.github.espalier.Espalier"

/* Live reports are drawn at most this often (microseconds). */
#define LIVE_INTERVAL (G_USEC_PER_SEC / 2)

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

  GSettings           *settings;      /* NULL when the schema is not installed */

  /* The report shown, the model and options it profiled, and where it came from. */
  EspalierProfileReport *report;
  EsModel             *report_model;
  EspalierTrainOptions report_opts;
  gboolean             report_live;
  GPtrArray           *finding_rows;  /* AdwActionRow in findings_group */
  GPtrArray           *cards;         /* EspalierAdviceCard in advice_box */

  /* The job running, a profile or an apply (one at a time), and the advice applying. */
  EspalierJob         *job;
  int                  applying;      /* advice index, or -1 */

  /* The last applied advice: its measured result, the options it was applied to, and
   * what keeping it changed, to undo. */
  EspalierAdviceResult result;
  gboolean             have_result;
  char                *result_title;
  EspalierTrainOptions result_base;
  gboolean             kept;
  EspalierTrainOptions undo_opts;
  gboolean             undo_doc;      /* keeping replaced the layers (one undo step) */
  char                *kept_spec;
  guint                undo_threads;  /* the "threads" preference before; G_MAXUINT: kept */
  EspalierProfileReport *undo_report; /* the report shown before keeping */
  EsModel             *undo_model;
  EspalierTrainOptions undo_report_opts;

  /* Live: the latest profile of a training run, drawn at most twice a second, with the
   * machine's ceilings read once off the main thread. */
  EspalierProfile     *live_prof;
  gboolean             live_pending;  /* live_prof has not been drawn yet */
  EsModel             *live_model;    /* built from the doc for live reports */
  gint64               live_drawn;    /* monotonic µs of the last live draw */
  guint                live_id;
  guint                live_count;
  /* The live run's history: the mean step over each stretch between two draws, as
   * stage bars (rows of n_stages seconds, labelled by the steps trained), and the
   * summed stage seconds and steps of the last draw. */
  GArray              *live_rows;     /* double */
  GPtrArray           *live_labels;   /* char * */
  guint                live_stages;
  double              *live_prev;     /* (live_stages) */
  guint                live_prev_steps;
  EsCeilings           ceilings;
  gboolean             have_ceilings;
  gboolean             ceilings_pending;
  GCancellable        *cancellable;   /* the page's own workers: the ceilings */

  /* template: the profiler */
  GtkLabel            *source_label;
  GtkSpinButton       *steps_spin;
  GtkButton           *profile_button;
  GtkSwitch           *live_switch;
  GtkStack            *result_stack;
  GtkLabel            *report_summary_label;
  EspalierStageBars   *stage_bars;
  GtkRevealer         *compare_revealer;
  GtkLabel            *compare_title_label;
  GtkLabel            *compare_change_label;
  GtkLabel            *before_label;
  GtkLabel            *after_label;
  GtkLabel            *gain_label;
  GtkLabel            *quantity_label;
  GtkLabel            *compare_status_label;
  GtkButton           *keep_button;
  GtkButton           *undo_button;
  GtkBox              *advice_box;
  GtkLabel            *advice_empty_label;
  AdwPreferencesGroup *findings_group;
  EspalierLayerTimeTable *layer_table;
  EspalierRooflineView *roofline;
  EspalierMemoryBreakdown *memory_breakdown;

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

enum { PROP_0, PROP_PROJECT, PROP_BUSY, N_PROPS };
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

static void refresh_later  (EspalierProfilePage *self);
static void update_actions (EspalierProfilePage *self);

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
  update_actions (self);
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

/* The model's layers changed: a live report builds them again. */
static void
on_doc_changed (EspalierProfilePage *self)
{
  g_clear_pointer (&self->live_model, es_model_free);
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

/* The profiler: options, actions, showing a report ----------------------------------- */

static gboolean
settings_has_key (GSettings  *settings,
                  const char *key)
{
  g_autoptr(GSettingsSchema) schema = NULL;

  if (settings == NULL)
    return FALSE;
  g_object_get (settings, "settings-schema", &schema, NULL);
  return schema != NULL && g_settings_schema_has_key (schema, key);
}

static guint
settings_get_uint (EspalierProfilePage *self,
                   const char          *key)
{
  return settings_has_key (self->settings, key) ? g_settings_get_uint (self->settings, key) : 0;
}

/* The options a run uses, as the Train page makes them: the project's, with the
 * preferences' threads and memory limit when they are set. */
static void
run_options (EspalierProfilePage  *self,
             EspalierTrainOptions *o)
{
  guint threads = settings_get_uint (self, "threads");
  guint limit_mib = settings_get_uint (self, "memory-limit");

  *o = *espalier_project_get_train_options (self->project);
  if (threads > 0)
    o->threads = threads;
  if (limit_mib > 0)
    o->memory_limit = (gsize) limit_mib * 1024 * 1024;
}

static void
profile_options (EspalierProfilePage    *self,
                 EspalierProfileOptions *popts)
{
  espalier_profile_options_init (popts);
  popts->steps = (guint) gtk_spin_button_get_value_as_int (self->steps_spin);
  /* Every interval, for a bar per step. */
  popts->trace = TRUE;
}

/* Why the project cannot be profiled now, or NULL. */
static const char *
profile_blocker (EspalierProfilePage *self)
{
  if (self->project == NULL || self->doc == NULL)
    return _("There is no project");
  if (self->job != NULL)
    return _("A profile is already running");
  if (espalier_project_get_dataset (self->project) == NULL)
    return _("Load a dataset first: the profile trains on it");
  if (!espalier_model_doc_is_valid (self->doc))
    return _("The model has to be valid to profile it");
  return NULL;
}

/* What keeping the applied advice would change in the project, as flags. */
enum { KEEP_OPTIONS = 1 << 0, KEEP_LAYERS = 1 << 1, KEEP_THREADS = 1 << 2 };

static gboolean
engine_differs (const EsTrainConfig *a,
                const EsTrainConfig *b)
{
  return a->optimizer != b->optimizer || a->weight_decay != b->weight_decay
         || a->l2 != b->l2 || a->accum_steps != b->accum_steps || a->lr != b->lr;
}

static guint
keep_changes (EspalierProfilePage *self)
{
  const EspalierTrainOptions *base = &self->result_base, *o = &self->result.opts;
  guint changes = 0;

  if (!self->have_result)
    return 0;
  if (o->batch_size != base->batch_size || o->data_threads != base->data_threads
      || o->prefetch != base->prefetch || o->keep_denormals != base->keep_denormals
      || engine_differs (&o->engine, &base->engine))
    changes |= KEEP_OPTIONS;
  if (o->threads != base->threads)
    changes |= KEEP_THREADS;
  if (self->result.model != NULL && self->doc != NULL)
    {
      g_autofree char *spec = espalier_model_to_spec (self->result.model);
      g_autofree char *doc_spec = espalier_model_doc_to_spec (self->doc);

      if (g_strcmp0 (spec, doc_spec) != 0)
        changes |= KEEP_LAYERS;
    }
  return changes;
}

static void
update_actions (EspalierProfilePage *self)
{
  GtkWidget *widget = GTK_WIDGET (self);
  const char *blocker = profile_blocker (self);

  gtk_widget_action_set_enabled (widget, "profile.run", blocker == NULL);
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->profile_button),
                               blocker != NULL ? blocker
                                               : _("Train a copy of the model for a few steps with timing on, and find what limits it (Ctrl+Shift+P)"));
  gtk_widget_action_set_enabled (widget, "profile.keep",
                                 self->have_result && !self->kept && self->job == NULL
                                 && keep_changes (self) != 0);
  gtk_widget_action_set_enabled (widget, "profile.undo", self->kept && self->job == NULL);
  gtk_widget_action_set_enabled (widget, "profile.dismiss", self->have_result);
  for (guint i = 0; self->cards != NULL && i < self->cards->len; i++)
    {
      EspalierAdviceCard *card = g_ptr_array_index (self->cards, i);

      espalier_advice_card_set_busy (card, self->job != NULL,
                                     self->applying >= 0
                                     && espalier_advice_card_get_index (card) == (guint) self->applying);
    }
}

static char *
format_step_time (double s)
{
  if (s < 1e-3)
    return g_strdup_printf (_("%.0f µs"), s * 1e6);
  if (s < 1)
    return g_strdup_printf (_("%.2f ms"), s * 1e3);
  return g_strdup_printf (_("%.2f s"), s);
}

static void on_card_apply (EspalierAdviceCard  *card,
                           EspalierProfilePage *self);
static void schedule_live (EspalierProfilePage *self);

static void
show_findings (EspalierProfilePage *self)
{
  guint n = self->report != NULL ? espalier_profile_report_n_findings (self->report) : 0;

  for (guint i = 0; i < self->finding_rows->len; i++)
    adw_preferences_group_remove (self->findings_group, g_ptr_array_index (self->finding_rows, i));
  g_ptr_array_set_size (self->finding_rows, 0);

  for (guint i = 0; i < n; i++)
    {
      const EspalierFinding *f = espalier_profile_report_finding (self->report, i);
      GtkWidget *row = adw_action_row_new ();
      GtkWidget *severity;
      g_autofree char *share = g_strdup_printf ("%.0f %%", 100.0 * CLAMP (f->severity, 0, 1));

      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (row), f->title != NULL ? f->title : f->name);
      adw_preferences_row_set_use_markup (ADW_PREFERENCES_ROW (row), FALSE);
      if (f->evidence != NULL)
        adw_action_row_set_subtitle (ADW_ACTION_ROW (row), f->evidence);
      severity = gtk_label_new (share);
      gtk_widget_add_css_class (severity, "numeric");
      gtk_widget_add_css_class (severity, "dim-label");
      gtk_widget_set_tooltip_text (severity, _("The share of the step time (or of the memory) at stake"));
      adw_action_row_add_suffix (ADW_ACTION_ROW (row), severity);
      adw_preferences_group_add (self->findings_group, row);
      g_ptr_array_add (self->finding_rows, row);
    }
  gtk_widget_set_visible (GTK_WIDGET (self->findings_group), n > 0);
}

static void
show_advice (EspalierProfilePage *self)
{
  guint n = self->report != NULL ? espalier_profile_report_n_advice (self->report) : 0;
  gboolean same = n == self->cards->len;

  /* The same advice again (a live refresh): update the cards in place, so that a
   * click on Apply is not lost to a card being remade. */
  for (guint i = 0; same && i < n; i++)
    same = g_strcmp0 (espalier_advice_card_get_name (g_ptr_array_index (self->cards, i)),
                      espalier_profile_report_advice (self->report, i)->name) == 0;
  if (!same)
    {
      for (guint i = 0; i < self->cards->len; i++)
        gtk_box_remove (self->advice_box, g_ptr_array_index (self->cards, i));
      g_ptr_array_set_size (self->cards, 0);
    }
  for (guint i = 0; i < n; i++)
    {
      const EspalierAdvice *a = espalier_profile_report_advice (self->report, i);

      if (same)
        espalier_advice_card_update (g_ptr_array_index (self->cards, i), i + 1, i, a);
      else
        {
          GtkWidget *card = espalier_advice_card_new (i + 1, i, a);

          g_signal_connect (card, "apply", G_CALLBACK (on_card_apply), self);
          gtk_box_append (self->advice_box, card);
          g_ptr_array_add (self->cards, card);
        }
    }
  gtk_widget_set_visible (GTK_WIDGET (self->advice_empty_label), self->report != NULL && n == 0);
  gtk_widget_set_visible (GTK_WIDGET (self->advice_box), n > 0);
}

static void
show_source (EspalierProfilePage *self,
             const char          *error)
{
  const EspalierProfileSummary *s = self->report != NULL
                                    ? espalier_profile_report_get_summary (self->report) : NULL;
  g_autofree char *text = NULL;

  if (error != NULL)
    text = g_strdup (error);
  else if (s == NULL)
    text = g_strdup (_("No profile yet"));
  else if (self->report_live)
    text = g_strdup_printf (ngettext ("Live: %u step of the training run so far",
                                      "Live: %u steps of the training run so far", s->steps),
                            s->steps);
  else
    {
      g_autoptr(GDateTime) now = g_date_time_new_now_local ();
      g_autofree char *when = g_date_time_format (now, "%H:%M");

      /* TRANSLATORS: where the profile shown comes from: steps profiled and the time */
      text = g_strdup_printf (ngettext ("Profiled %u step on a copy of the model at %s",
                                        "Profiled %u steps on a copy of the model at %s", s->steps),
                              s->steps, when);
    }
  gtk_label_set_label (self->source_label, text);
  if (error != NULL)
    gtk_widget_add_css_class (GTK_WIDGET (self->source_label), "error");
  else
    gtk_widget_remove_css_class (GTK_WIDGET (self->source_label), "error");
}

static void
show_report (EspalierProfilePage *self)
{
  const EspalierProfileSummary *s = self->report != NULL
                                    ? espalier_profile_report_get_summary (self->report) : NULL;

  gtk_stack_set_visible_child_name (self->result_stack, s != NULL ? "report" : "none");
  if (s != NULL && self->report_live && self->live_labels->len > 0 && self->live_stages == s->n_stages)
    espalier_stage_bars_set_bars (self->stage_bars, s, (const double *) (gpointer) self->live_rows->data,
                                  (const char * const *) self->live_labels->pdata,
                                  self->live_labels->len,
                                  _("Steps trained (each bar: the mean step since the bar before)"));
  else
    espalier_stage_bars_set_summary (self->stage_bars, s);
  espalier_layer_time_table_set_summary (self->layer_table, s);
  espalier_roofline_view_set_summary (self->roofline, s);
  espalier_memory_breakdown_set_profile (self->memory_breakdown, s != NULL ? s->profile : NULL);
  show_findings (self);
  show_advice (self);
  if (s != NULL)
    {
      g_autofree char *step = format_step_time (s->step_s);
      g_autofree char *rate = espalier_format_si (s->rows_per_s);
      g_autofree char *text = NULL;

      if (s->micro_batch > 0 && s->micro_batch < s->batch)
        /* TRANSLATORS: the profile's headline, when the memory budget split the batch */
        text = g_strdup_printf (_("%s per step · %s rows/s · batch %u in micro-batches of %u · the stages cover %.0f %% of the time"),
                                step, rate, s->batch, s->micro_batch, 100.0 * s->coverage);
      else
        /* TRANSLATORS: the profile's headline: "3.10 ms per step · 10.3 k rows/s · batch 32 · ..." */
        text = g_strdup_printf (_("%s per step · %s rows/s · batch %u · the stages cover %.0f %% of the time"),
                                step, rate, s->batch, 100.0 * s->coverage);
      if (s->profile != NULL && s->profile->device_name[0] != '\0')
        {
          /* TRANSLATORS: the headline, then the device the steps ran on ("CPU", "CUDA 0: …") */
          g_autofree char *headline = g_strdup_printf (_("%s · on %s"), text, s->profile->device_name);

          g_free (text);
          text = g_steal_pointer (&headline);
        }
      gtk_label_set_label (self->report_summary_label, text);
    }
  show_source (self, NULL);
  update_actions (self);
}

/* Show report (taken over; NULL clears) of model (taken over) trained with opts. */
static void
set_report (EspalierProfilePage        *self,
            EspalierProfileReport      *report,
            EsModel                    *model,
            const EspalierTrainOptions *opts,
            gboolean                    live)
{
  const EspalierProfileSummary *s;

  g_clear_pointer (&self->report, espalier_profile_report_unref);
  g_clear_pointer (&self->report_model, es_model_free);
  self->report = report;
  self->report_model = model;
  if (opts != NULL)
    self->report_opts = *opts;
  self->report_live = live;
  /* Ceilings a profile measured or read serve the live reports too. */
  s = report != NULL ? espalier_profile_report_get_summary (report) : NULL;
  if (s != NULL && s->have_ceilings && !self->have_ceilings)
    {
      self->ceilings = s->ceilings;
      self->have_ceilings = TRUE;
    }
  show_report (self);
}

/* Jobs --------------------------------------------------------------------------------
 * A Work is what one job's worker gets: copies of the model and options, the dataset
 * (read-only), and for an apply the report whose advice it applies; the page is a weak
 * reference. The relay that brings progress to the main thread holds a reference too;
 * the job's end drops the relay. */

typedef struct {
  GWeakRef               page;
  EspalierJob           *job;
  EspalierProgressRelay *relay;
  EspalierDataset       *dataset;
  EsModel               *model;
  EspalierTrainOptions   opts;
  EspalierProfileOptions popts;
  guint                  steps_per_epoch;
  /* apply */
  EspalierProfileReport *report;
  guint                  advice;
  char                  *title;
  EspalierAdviceResult   result;
} Work;

static void
work_clear (gpointer data)
{
  Work *w = data;

  g_weak_ref_clear (&w->page);
  g_clear_object (&w->job);
  g_clear_pointer (&w->relay, espalier_progress_relay_unref);
  g_clear_object (&w->dataset);
  g_clear_pointer (&w->model, es_model_free);
  g_clear_pointer (&w->report, espalier_profile_report_unref);
  g_free (w->title);
  espalier_advice_result_clear (&w->result);
}

static Work *
work_ref (Work *w)
{
  return g_atomic_rc_box_acquire (w);
}

static void
work_release (gpointer w)
{
  g_atomic_rc_box_release_full (w, work_clear);
}

static void
notify_busy (EspalierProfilePage *self)
{
  update_actions (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_BUSY]);
}

/* A new job on the project's dataset and a copy of model (NULL: built from the doc). */
static Work *
work_new (EspalierProfilePage        *self,
          const char                 *title,
          const EsModel              *model,
          const EspalierTrainOptions *opts)
{
  Work *w = g_atomic_rc_box_new0 (Work);

  g_weak_ref_init (&w->page, self);
  w->job = espalier_job_new (title);
  w->dataset = g_object_ref (espalier_project_get_dataset (self->project));
  w->model = es_model_copy (model);
  w->opts = *opts;
  profile_options (self, &w->popts);
  self->job = g_object_ref (w->job);
  return w;
}

/* The model to profile: the project's trained weights when they are the doc's layers
 * (denormals and such depend on the weights), else the doc's layers freshly built. */
static EsModel *
model_to_profile (EspalierProfilePage  *self,
                  GError              **error)
{
  EsModel *trained = espalier_project_get_model (self->project);
  const EspalierTrainOptions *opts = espalier_project_get_train_options (self->project);

  if (trained != NULL)
    {
      g_autofree char *spec = espalier_model_to_spec (trained);
      g_autofree char *doc_spec = espalier_model_doc_to_spec (self->doc);

      if (g_strcmp0 (spec, doc_spec) == 0)
        return es_model_copy (trained);
    }
  return espalier_model_doc_build (self->doc, opts->seed, error);
}

static void
on_profile_progress (const EspalierProgress *p,
                     gpointer                data)
{
  Work *w = data;
  g_autofree char *status = NULL;
  guint done;

  switch (p->kind)
    {
    case ESPALIER_PROGRESS_START:
      w->steps_per_epoch = p->steps;
      break;
    case ESPALIER_PROGRESS_STEP:
      done = (p->epoch > 0 ? p->epoch - 1 : 0) * w->steps_per_epoch + p->step;
      done = MIN (done, w->popts.steps);
      /* TRANSLATORS: progress of a profile: "Step 20 of 50 · loss 0.4123" */
      status = g_strdup_printf (_("Step %u of %u · loss %.4f"), done, w->popts.steps, p->loss);
      espalier_job_set_fraction (w->job, CLAMP ((double) done / MAX (w->popts.steps, 1), 0, 1));
      espalier_job_set_status (w->job, status);
      break;
    case ESPALIER_PROGRESS_MESSAGE:
      if (p->message != NULL)
        espalier_job_set_status (w->job, p->message);
      break;
    case ESPALIER_PROGRESS_EPOCH:
    default:
      break;
    }
}

static void
profile_thread (GTask        *task,
                gpointer      source_object,
                gpointer      task_data,
                GCancellable *cancellable)
{
  Work *w = task_data;
  GError *error = NULL;
  EspalierProfileReport *report;

  report = espalier_profile_run (w->dataset, w->model, &w->opts, &w->popts, cancellable,
                                 espalier_progress_relay_post, w->relay, &error);
  if (report != NULL)
    g_task_return_pointer (task, report, (GDestroyNotify) espalier_profile_report_unref);
  else
    g_task_return_error (task, error);
}

static void
profile_done (GObject      *source,
              GAsyncResult *result,
              gpointer      data)
{
  Work *w = data;
  g_autoptr(EspalierProfilePage) self = g_weak_ref_get (&w->page);
  g_autoptr(GError) error = NULL;
  EspalierProfileReport *report = g_task_propagate_pointer (G_TASK (result), &error);

  g_clear_pointer (&w->relay, espalier_progress_relay_unref);
  espalier_job_finish (w->job, error);
  if (self != NULL && self->job == w->job)
    {
      g_clear_object (&self->job);
      if (report != NULL)
        set_report (self, g_steal_pointer (&report), g_steal_pointer (&w->model), &w->opts, FALSE);
      else if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        show_source (self, _("Profile stopped"));
      else if (error != NULL)
        {
          g_autofree char *text = g_strdup_printf (_("The profile failed: %s"), error->message);

          show_source (self, text);
        }
      notify_busy (self);
      /* A live profile that came meanwhile. */
      if (self->live_pending)
        schedule_live (self);
    }
  g_clear_pointer (&report, espalier_profile_report_unref);
  work_release (w);
}

void
espalier_profile_page_run (EspalierProfilePage *self)
{
  g_autoptr(GTask) task = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *status = NULL;
  const char *blocker;
  EspalierTrainOptions opts;
  EsModel *model;
  Work *w;

  g_return_if_fail (ESPALIER_IS_PROFILE_PAGE (self));

  if ((blocker = profile_blocker (self)) != NULL)
    {
      espalier_show_toast (GTK_WIDGET (self), blocker);
      return;
    }
  if ((model = model_to_profile (self, &error)) == NULL)
    {
      espalier_show_toast (GTK_WIDGET (self), error->message);
      return;
    }
  run_options (self, &opts);
  w = work_new (self, _("Profiling"), model, &opts);
  es_model_free (model);
  w->relay = espalier_progress_relay_new (on_profile_progress, work_ref (w), work_release);
  status = g_strdup_printf (ngettext ("%u training step on a copy of the model",
                                      "%u training steps on a copy of the model", w->popts.steps),
                            w->popts.steps);
  espalier_job_set_status (w->job, status);
  espalier_job_set_fraction (w->job, 0);
  espalier_job_show (w->job, GTK_WIDGET (self));
  show_source (self, _("Profiling…"));
  notify_busy (self);

  task = g_task_new (NULL, espalier_job_get_cancellable (w->job), profile_done, w);
  g_task_set_source_tag (task, espalier_profile_page_run);
  g_task_set_task_data (task, work_ref (w), work_release);
  g_task_run_in_thread (task, profile_thread);
}

/* Applying advice, keeping it, undoing it */

static char *
format_quantity (EspalierAdviceKind kind,
                 double             v)
{
  if (!isfinite (v))
    return g_strdup ("—");
  switch (kind)
    {
    case ESPALIER_ADVICE_GRAD_ACCUMULATION:
      return g_format_size ((guint64) MAX (v, 0));
    case ESPALIER_ADVICE_QUANTIZE:
      if (v >= 1000)
        return g_strdup_printf (_("%.2f ms"), v / 1000);
      return g_strdup_printf (_("%.1f µs"), v);
    default:
      {
        g_autofree char *rate = espalier_format_si (v);

        return g_strdup_printf (_("%s rows/s"), rate);
      }
    }
}

static void
show_result (EspalierProfilePage *self)
{
  const EspalierAdviceResult *r = &self->result;
  g_autofree char *title = NULL, *before = NULL, *after = NULL, *gain = NULL;
  g_autofree char *quantity = NULL, *status = NULL;
  guint changes = keep_changes (self);

  /* Hidden, not only folded: a folded revealer still takes the box's spacing. */
  gtk_widget_set_visible (GTK_WIDGET (self->compare_revealer), self->have_result);
  if (!self->have_result)
    {
      gtk_revealer_set_reveal_child (self->compare_revealer, FALSE);
      update_actions (self);
      return;
    }

  /* TRANSLATORS: heading of the before/after of an applied advice */
  title = g_strdup_printf (_("Applied: %s"), self->result_title != NULL ? self->result_title : "");
  gtk_label_set_label (self->compare_title_label, title);
  gtk_label_set_label (self->compare_change_label, r->change != NULL ? r->change : "");
  before = format_quantity (r->kind, r->before);
  after = format_quantity (r->kind, r->after);
  gtk_label_set_label (self->before_label, before);
  gtk_label_set_label (self->after_label, after);
  if (isfinite (r->gain) && r->gain > 0)
    /* TRANSLATORS: the measured gain of an applied advice: "1.63×" better */
    gain = g_strdup_printf (r->gain >= 1 ? _("%.2f× better") : _("%.2f× (worse)"), r->gain);
  else
    gain = g_strdup ("—");
  gtk_label_set_label (self->gain_label, gain);
  if (isfinite (r->gain) && r->gain < 1)
    gtk_widget_add_css_class (GTK_WIDGET (self->gain_label), "error");
  else
    gtk_widget_remove_css_class (GTK_WIDGET (self->gain_label), "error");
  /* TRANSLATORS: %s is the measured quantity: "rows/s (training)" */
  quantity = g_strdup_printf (_("%s, measured before and after, one right after the other under the same conditions"),
                              r->quantity != NULL ? r->quantity : "");
  gtk_label_set_label (self->quantity_label, quantity);

  if (self->kept)
    status = g_strdup (_("Kept in the project. Undo puts it back as it was."));
  else if (changes == 0)
    status = g_strdup (_("Nothing in the project’s options or layers changes with this advice; the Optimize page makes variants of a model."));
  else if ((changes & KEEP_LAYERS) && (changes & (KEEP_OPTIONS | KEEP_THREADS)))
    status = g_strdup (_("Keeping it changes the training options and the model’s layers; it can be undone."));
  else if (changes & KEEP_LAYERS)
    status = g_strdup (_("Keeping it changes the model’s layers; it can be undone."));
  else
    status = g_strdup (_("Keeping it changes the training options; it can be undone."));
  gtk_label_set_label (self->compare_status_label, status);
  gtk_widget_set_visible (GTK_WIDGET (self->keep_button), !self->kept && changes != 0);
  gtk_widget_set_visible (GTK_WIDGET (self->undo_button), self->kept);
  gtk_revealer_set_reveal_child (self->compare_revealer, TRUE);
  update_actions (self);
}

static void
forget_undo (EspalierProfilePage *self)
{
  self->kept = FALSE;
  self->undo_doc = FALSE;
  self->undo_threads = G_MAXUINT;
  g_clear_pointer (&self->kept_spec, g_free);
  g_clear_pointer (&self->undo_report, espalier_profile_report_unref);
  g_clear_pointer (&self->undo_model, es_model_free);
}

static void
clear_result (EspalierProfilePage *self)
{
  espalier_advice_result_clear (&self->result);
  self->have_result = FALSE;
  g_clear_pointer (&self->result_title, g_free);
  forget_undo (self);
}

static void
apply_thread (GTask        *task,
              gpointer      source_object,
              gpointer      task_data,
              GCancellable *cancellable)
{
  Work *w = task_data;
  GError *error = NULL;

  if (espalier_advice_apply (w->report, w->advice, w->dataset, w->model, &w->opts, &w->popts,
                             cancellable, &w->result, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, error);
}

static void
apply_done (GObject      *source,
            GAsyncResult *result,
            gpointer      data)
{
  Work *w = data;
  g_autoptr(EspalierProfilePage) self = g_weak_ref_get (&w->page);
  g_autoptr(GError) error = NULL;
  gboolean ok = g_task_propagate_boolean (G_TASK (result), &error);

  espalier_job_finish (w->job, error);
  if (self != NULL && self->job == w->job)
    {
      g_clear_object (&self->job);
      self->applying = -1;
      if (ok)
        {
          clear_result (self);
          self->result = w->result;
          memset (&w->result, 0, sizeof w->result);
          self->have_result = TRUE;
          self->result_title = g_strdup (w->title);
          self->result_base = w->opts;
          show_result (self);
        }
      else if (error != NULL && !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        {
          g_autofree char *text = g_strdup_printf (_("Applying “%s” failed: %s"), w->title, error->message);

          show_source (self, text);
        }
      notify_busy (self);
      if (self->live_pending)
        schedule_live (self);
    }
  work_release (w);
}

void
espalier_profile_page_apply_advice (EspalierProfilePage *self,
                                    guint                i)
{
  g_autoptr(GTask) task = NULL;
  const EspalierAdvice *advice;
  Work *w;

  g_return_if_fail (ESPALIER_IS_PROFILE_PAGE (self));

  if (self->job != NULL || self->report == NULL || self->report_model == NULL
      || i >= espalier_profile_report_n_advice (self->report))
    return;
  advice = espalier_profile_report_advice (self->report, i);
  if (!advice->can_apply)
    return;
  if (espalier_project_get_dataset (self->project) == NULL)
    {
      espalier_show_toast (GTK_WIDGET (self), _("Load a dataset first: the profile trains on it"));
      return;
    }

  w = work_new (self, _("Applying advice"), self->report_model, &self->report_opts);
  w->report = espalier_profile_report_ref (self->report);
  w->advice = i;
  w->title = g_strdup (advice->title);
  self->applying = (int) i;
  espalier_job_set_status (w->job, advice->title);
  espalier_job_set_fraction (w->job, -1);
  espalier_job_show (w->job, GTK_WIDGET (self));
  notify_busy (self);

  task = g_task_new (NULL, espalier_job_get_cancellable (w->job), apply_done, w);
  g_task_set_source_tag (task, espalier_profile_page_apply_advice);
  g_task_set_task_data (task, work_ref (w), work_release);
  g_task_run_in_thread (task, apply_thread);
}

static void
on_card_apply (EspalierAdviceCard  *card,
               EspalierProfilePage *self)
{
  espalier_profile_page_apply_advice (self, espalier_advice_card_get_index (card));
}

/* Keep the applied advice's change: the project's training options, the model's layers
 * (one undo step of the model doc) and the "threads" preference, each only where the
 * advice changed it; the page then shows the profile measured after the change. */
static void
keep_action (GtkWidget  *widget,
             const char *action_name,
             GVariant   *parameter)
{
  EspalierProfilePage *self = ESPALIER_PROFILE_PAGE (widget);
  const EspalierTrainOptions *o = &self->result.opts;
  EspalierTrainOptions next;
  guint changes = keep_changes (self);

  if (!self->have_result || self->kept || self->job != NULL || changes == 0)
    return;

  forget_undo (self);
  self->undo_opts = *espalier_project_get_train_options (self->project);
  next = self->undo_opts;
  if (changes & KEEP_OPTIONS)
    {
      next.batch_size = o->batch_size;
      next.data_threads = o->data_threads;
      next.prefetch = o->prefetch;
      next.keep_denormals = o->keep_denormals;
      next.engine = o->engine;
    }
  if (changes & KEEP_THREADS)
    {
      next.threads = o->threads;
      /* The preference wins over the project's threads: change it too when set. */
      if (settings_get_uint (self, "threads") > 0)
        {
          self->undo_threads = settings_get_uint (self, "threads");
          g_settings_set_uint (self->settings, "threads", o->threads);
        }
    }
  espalier_project_set_train_options (self->project, &next);
  if (changes & KEEP_LAYERS)
    {
      g_autoptr(GError) error = NULL;
      g_autofree char *spec = espalier_model_to_spec (self->result.model);

      if (espalier_model_doc_set_spec (self->doc, spec, &error))
        {
          self->undo_doc = TRUE;
          self->kept_spec = g_steal_pointer (&spec);
        }
      else
        espalier_show_toast (widget, error->message);
    }
  self->kept = TRUE;

  /* Show the profile of the change; undo brings the one before back. */
  if (self->result.report != NULL && self->result.model != NULL)
    {
      self->undo_report = self->report != NULL ? espalier_profile_report_ref (self->report) : NULL;
      self->undo_model = self->report_model != NULL ? es_model_copy (self->report_model) : NULL;
      self->undo_report_opts = self->report_opts;
      set_report (self, espalier_profile_report_ref (self->result.report),
                  es_model_copy (self->result.model), &self->result.opts, FALSE);
    }
  show_result (self);
}

static void
undo_action (GtkWidget  *widget,
             const char *action_name,
             GVariant   *parameter)
{
  EspalierProfilePage *self = ESPALIER_PROFILE_PAGE (widget);

  if (!self->kept || self->job != NULL)
    return;

  espalier_project_set_train_options (self->project, &self->undo_opts);
  if (self->undo_doc && espalier_model_doc_can_undo (self->doc))
    {
      g_autofree char *spec = espalier_model_doc_to_spec (self->doc);

      /* Only the step keeping made: a later edit of the model is the user's. */
      if (g_strcmp0 (spec, self->kept_spec) == 0)
        espalier_model_doc_undo (self->doc);
    }
  if (self->undo_threads != G_MAXUINT && self->settings != NULL)
    g_settings_set_uint (self->settings, "threads", self->undo_threads);
  if (self->undo_report != NULL)
    set_report (self, g_steal_pointer (&self->undo_report), g_steal_pointer (&self->undo_model),
                &self->undo_report_opts, FALSE);
  forget_undo (self);
  show_result (self);
  gtk_label_set_label (self->compare_status_label, _("Undone: the project is as it was."));
}

static void
dismiss_action (GtkWidget  *widget,
                const char *action_name,
                GVariant   *parameter)
{
  EspalierProfilePage *self = ESPALIER_PROFILE_PAGE (widget);

  clear_result (self);
  show_result (self);
}

static void
run_action (GtkWidget  *widget,
            const char *action_name,
            GVariant   *parameter)
{
  espalier_profile_page_run (ESPALIER_PROFILE_PAGE (widget));
}

/* Live: a training run's profile -------------------------------------------------- */

typedef struct {
  GWeakRef   page;
  guint      threads;
  EsCeilings ceilings;
} CeilingsData;

static void
ceilings_data_free (gpointer data)
{
  CeilingsData *d = data;

  g_weak_ref_clear (&d->page);
  g_free (d);
}

static void
ceilings_thread (GTask        *task,
                 gpointer      source_object,
                 gpointer      task_data,
                 GCancellable *cancellable)
{
  CeilingsData *d = task_data;
  GError *error = NULL;

  if (espalier_ceilings_get (d->threads, FALSE, &d->ceilings, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, error);
}

static void
ceilings_done (GObject      *source,
               GAsyncResult *result,
               gpointer      data)
{
  CeilingsData *d = g_task_get_task_data (G_TASK (result));
  g_autoptr(EspalierProfilePage) self = g_weak_ref_get (&d->page);
  g_autoptr(GError) error = NULL;
  gboolean ok = g_task_propagate_boolean (G_TASK (result), &error);

  if (self == NULL)
    return;
  self->ceilings_pending = FALSE;
  if (ok && !self->have_ceilings)
    {
      self->ceilings = d->ceilings;
      self->have_ceilings = TRUE;
      /* The live report again, now with its roofline. */
      if (self->live_prof != NULL && self->report_live)
        {
          self->live_pending = TRUE;
          schedule_live (self);
        }
    }
  else if (!ok && !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    g_warning ("The machine's ceilings could not be read: %s", error->message);
}

/* Read the ceilings once, on a worker (measuring them takes a third of a second). */
static void
request_ceilings (EspalierProfilePage *self,
                  guint                threads)
{
  g_autoptr(GTask) task = NULL;
  CeilingsData *d;

  if (self->have_ceilings || self->ceilings_pending)
    return;
  self->ceilings_pending = TRUE;
  d = g_new0 (CeilingsData, 1);
  g_weak_ref_init (&d->page, self);
  d->threads = threads;
  task = g_task_new (NULL, self->cancellable, ceilings_done, NULL);
  g_task_set_task_data (task, d, ceilings_data_free);
  g_task_run_in_thread (task, ceilings_thread);
}

static void
live_history_reset (EspalierProfilePage *self)
{
  g_array_set_size (self->live_rows, 0);
  g_ptr_array_set_size (self->live_labels, 0);
  g_clear_pointer (&self->live_prev, g_free);
  self->live_stages = 0;
  self->live_prev_steps = 0;
}

/* One bar more for the stretch of the run since the last draw: its mean step. A run
 * that starts again (fewer steps than before) starts a new history. */
static void
live_history_add (EspalierProfilePage          *self,
                  const EspalierProfileSummary *s)
{
  guint n = s->n_stages, steps;

  if (self->live_prev == NULL || self->live_stages != n || s->steps < self->live_prev_steps)
    {
      live_history_reset (self);
      self->live_stages = n;
      self->live_prev = g_new0 (double, n);
    }
  if (s->steps == self->live_prev_steps)
    return;
  steps = s->steps - self->live_prev_steps;
  for (guint k = 0; k < n; k++)
    {
      double mean = MAX (s->stages[k].seconds - self->live_prev[k], 0.0) / steps;

      g_array_append_val (self->live_rows, mean);
      self->live_prev[k] = s->stages[k].seconds;
    }
  g_ptr_array_add (self->live_labels, g_strdup_printf ("%u", s->steps));
  self->live_prev_steps = s->steps;
  if (self->live_labels->len > ESPALIER_STAGE_BARS_MAX_STEPS)
    {
      g_array_remove_range (self->live_rows, 0, n);
      g_ptr_array_remove_index (self->live_labels, 0);
    }
}

static void
draw_live (EspalierProfilePage *self)
{
  const EspalierProfile *prof = self->live_prof;
  g_autoptr(GError) error = NULL;
  EspalierTrainOptions opts;
  EspalierProfileReport *report;

  if (prof == NULL || self->project == NULL || !self->live_pending)
    return;
  /* A job's report stays until it ends; the live one comes after. */
  if (self->job != NULL)
    return;
  self->live_pending = FALSE;
  self->live_drawn = g_get_monotonic_time ();

  /* The report needs the model's layers (not its weights): the doc's, built once. */
  if (self->live_model == NULL || (guint) es_model_n_layers (self->live_model) != prof->n_layers)
    {
      g_clear_pointer (&self->live_model, es_model_free);
      if (espalier_model_doc_is_valid (self->doc))
        self->live_model = espalier_model_doc_build (self->doc, 0, &error);
    }
  if (self->live_model == NULL || (guint) es_model_n_layers (self->live_model) != prof->n_layers)
    {
      show_source (self, _("The model has changed since the training run started: its profile cannot be shown"));
      return;
    }
  run_options (self, &opts);
  if (prof->batch > 0)
    opts.batch_size = prof->batch;
  if (!self->have_ceilings)
    request_ceilings (self, prof->threads.pool_threads > 0 ? (guint) prof->threads.pool_threads : 0);

  report = espalier_profile_report_new (prof, self->live_model, &opts,
                                        self->have_ceilings ? &self->ceilings : NULL);
  /* no memory for its copy of the model: the next one tries again */
  if (report == NULL)
    return;
  live_history_add (self, espalier_profile_report_get_summary (report));
  set_report (self, report, es_model_copy (self->live_model), &opts, TRUE);
  self->live_count++;
}

static gboolean
live_timeout (gpointer data)
{
  EspalierProfilePage *self = data;

  self->live_id = 0;
  draw_live (self);
  return G_SOURCE_REMOVE;
}

static void
schedule_live (EspalierProfilePage *self)
{
  gint64 wait = self->live_drawn + LIVE_INTERVAL - g_get_monotonic_time ();

  if (self->live_id != 0)
    return;
  self->live_id = g_timeout_add (wait > 0 ? (guint) (wait / 1000) : 0, live_timeout, self);
}

void
espalier_profile_page_update_live (EspalierProfilePage   *self,
                                   const EspalierProfile *profile)
{
  g_return_if_fail (ESPALIER_IS_PROFILE_PAGE (self));

  if (profile == NULL)
    return;
  g_clear_pointer (&self->live_prof, espalier_profile_free);
  self->live_prof = espalier_profile_copy (profile);
  self->live_pending = TRUE;
  schedule_live (self);
}

guint
espalier_profile_page_get_live_count (EspalierProfilePage *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROFILE_PAGE (self), 0);
  return self->live_count;
}

gboolean
espalier_profile_page_get_busy (EspalierProfilePage *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROFILE_PAGE (self), FALSE);
  return self->job != NULL;
}

EspalierProfileReport *
espalier_profile_page_get_report (EspalierProfilePage *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROFILE_PAGE (self), NULL);
  return self->report;
}

const EspalierAdviceResult *
espalier_profile_page_get_result (EspalierProfilePage *self)
{
  g_return_val_if_fail (ESPALIER_IS_PROFILE_PAGE (self), NULL);
  return self->have_result ? &self->result : NULL;
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
  g_signal_handlers_disconnect_by_func (self->doc, on_doc_changed, self);
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
  g_clear_handle_id (&self->live_id, g_source_remove);
  g_cancellable_cancel (self->cancellable);
  /* A job of this page ends with it: its result would have nowhere to go. */
  if (self->job != NULL)
    espalier_job_cancel (self->job);
  g_clear_object (&self->job);
  disconnect_project (self);
  /* The bin's child is a template child: let the bin drop it before the template
   * does, or both would unparent it. */
  adw_bin_set_child (ADW_BIN (self), NULL);
  gtk_widget_dispose_template (GTK_WIDGET (self), ESPALIER_TYPE_PROFILE_PAGE);
  g_clear_object (&self->project);
  g_clear_object (&self->split_dataset);
  g_clear_object (&self->rows);
  g_clear_object (&self->settings);
  g_clear_object (&self->cancellable);
  g_clear_pointer (&self->finding_rows, g_ptr_array_unref);
  g_clear_pointer (&self->cards, g_ptr_array_unref);
  g_clear_pointer (&self->report, espalier_profile_report_unref);
  g_clear_pointer (&self->report_model, es_model_free);
  g_clear_pointer (&self->live_prof, espalier_profile_free);
  g_clear_pointer (&self->live_model, es_model_free);
  g_clear_pointer (&self->live_prev, g_free);
  g_clear_pointer (&self->live_rows, g_array_unref);
  g_clear_pointer (&self->live_labels, g_ptr_array_unref);
  clear_result (self);
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
    case PROP_BUSY:
      g_value_set_boolean (value, self->job != NULL);
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
  properties[PROP_BUSY] =
    g_param_spec_boolean ("busy", NULL, NULL, FALSE, G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  gtk_widget_class_install_action (widget_class, "profile.run", NULL, run_action);
  gtk_widget_class_install_action (widget_class, "profile.keep", NULL, keep_action);
  gtk_widget_class_install_action (widget_class, "profile.undo", NULL, undo_action);
  gtk_widget_class_install_action (widget_class, "profile.dismiss", NULL, dismiss_action);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_p, GDK_CONTROL_MASK | GDK_SHIFT_MASK,
                                       "profile.run", NULL);
  gtk_widget_class_add_binding_action (widget_class, GDK_KEY_P, GDK_CONTROL_MASK | GDK_SHIFT_MASK,
                                       "profile.run", NULL);

  g_type_ensure (ESPALIER_TYPE_CHART);
  g_type_ensure (ESPALIER_TYPE_STAGE_BARS);
  g_type_ensure (ESPALIER_TYPE_LAYER_TIME_TABLE);
  g_type_ensure (ESPALIER_TYPE_ROOFLINE_VIEW);
  g_type_ensure (ESPALIER_TYPE_MEMORY_BREAKDOWN);
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
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, source_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, steps_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, profile_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, live_switch);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, result_stack);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, report_summary_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, stage_bars);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, compare_revealer);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, compare_title_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, compare_change_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, before_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, after_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, gain_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, quantity_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, compare_status_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, keep_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, undo_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, advice_box);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, advice_empty_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, findings_group);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, layer_table);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, roofline);
  gtk_widget_class_bind_template_child (widget_class, EspalierProfilePage, memory_breakdown);
}

static void
espalier_profile_page_init (EspalierProfilePage *self)
{
  g_autoptr(GtkNoSelection) selection = NULL;
  g_autoptr(EspalierChartLayer) flops_bars = espalier_bars_layer_new ();
  g_autoptr(EspalierChartLayer) memory_bars = espalier_bars_layer_new ();
  EspalierChartAxis *axis;

  gtk_widget_init_template (GTK_WIDGET (self));

  self->applying = -1;
  self->undo_threads = G_MAXUINT;
  self->cancellable = g_cancellable_new ();
  self->finding_rows = g_ptr_array_new ();
  self->live_rows = g_array_new (FALSE, FALSE, sizeof (double));
  self->live_labels = g_ptr_array_new_with_free_func (g_free);
  self->cards = g_ptr_array_new ();
  /* "Profile While Training" is the "profiling" preference, which the Train page reads
   * when a run starts; without the schema (some tests) it cannot be set. */
  {
    GSettingsSchemaSource *source = g_settings_schema_source_get_default ();
    g_autoptr(GSettingsSchema) schema = source != NULL
      ? g_settings_schema_source_lookup (source, SETTINGS_SCHEMA, TRUE) : NULL;

    if (schema != NULL)
      self->settings = g_settings_new_full (schema, NULL, NULL);
  }
  if (settings_has_key (self->settings, "profiling"))
    g_settings_bind (self->settings, "profiling", self->live_switch, "active", G_SETTINGS_BIND_DEFAULT);
  else
    gtk_widget_set_sensitive (GTK_WIDGET (self->live_switch), FALSE);

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

  show_report (self);
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
  /* A report, an applied advice and a live model belong to the project they came from. */
  clear_result (self);
  g_clear_pointer (&self->live_prof, espalier_profile_free);
  g_clear_pointer (&self->live_model, es_model_free);
  self->live_pending = FALSE;
  live_history_reset (self);
  set_report (self, NULL, NULL, NULL, FALSE);
  show_result (self);
  if (project != NULL)
    {
      self->doc = espalier_project_get_model_doc (project);
      self->runs = espalier_project_get_runs (project);
      g_signal_connect_swapped (project, "changed", G_CALLBACK (on_changed), self);
      g_signal_connect_swapped (project, "notify::dataset", G_CALLBACK (on_changed), self);
      g_signal_connect_swapped (self->doc, "changed", G_CALLBACK (on_doc_changed), self);
      g_signal_connect (self->runs, "items-changed", G_CALLBACK (on_runs_changed), self);
    }
  /* A new project shows at once; later edits coalesce. */
  g_clear_handle_id (&self->refresh_id, g_source_remove);
  refresh (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_PROJECT]);
}
