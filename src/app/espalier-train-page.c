/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-train-page.c: the Train page. It edits the project's training options, runs
 * EspalierTrainer on a worker (progress comes back to the main context) and plots what
 * the worker reports: per-epoch loss and accuracy, the running loss, throughput, the
 * decision boundary of 2-D sets (inferred on a grid on another worker from the weight
 * snapshots the trainer posts), the validation confusion matrix and weight histograms.
 * When a run ends it measures the model on the test split and its latency (a worker
 * again) and files the run, the model and a "baseline" variant with the project.
 *
 * Pause suspends the trainer's worker between two steps (espalier_trainer_set_paused):
 * weights, optimizer state, data order and schedule stay where they were, and Resume
 * goes on from the same step.
 *
 * It does not train itself, touch the dataset's rows on the main thread beyond the 2-D
 * scatter, or know about other pages. */
#include "config.h"

#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include <glib/gi18n.h>

#include "es-backend.h"
#include "es-train.h"
#include "espalier-chart-layers.h"
#include "espalier-checkpoint.h"
#include "espalier-error.h"
#include "espalier-job.h"
#include "espalier-train-page.h"
#include "espalier-ui-util.h"

#define SETTINGS_SCHEMA    "io.github.espalier.Espalier"
#define BOUNDARY_CELLS     100    /* decision-boundary grid cells per side */
#define SNAPSHOT_INTERVAL  0.2    /* seconds between weight snapshots for the boundary */
#define RATE_INTERVAL      0.25   /* seconds between throughput points */
#define UI_INTERVAL        (1.0 / 30) /* seconds between label and running-loss updates */
#define WEIGHTS_INTERVAL   0.25   /* seconds between histogram and confusion updates */
#define HISTOGRAM_BINS     30
#define MAX_SCATTER_POINTS 2000
#define LATENCY_SECONDS    0.5
#define CHECKPOINT_EVERY   ESPALIER_LAST_GOOD_EVERY  /* optimizer steps between checkpoints */

typedef enum {
  PHASE_TRAINING,      /* a trainer segment runs on its worker */
  PHASE_PAUSED,        /* between segments, weights kept */
  PHASE_EVALUATING,    /* test metrics and latency on a worker */
} Phase;

/* One run from Start to its end, across pauses. Reference-counted (g_atomic_rc_box):
 * the page and every asynchronous call in flight hold it, so a page that goes away
 * mid-run leaves the workers nothing dangling; the last reference is dropped on the
 * main thread. */
typedef struct {
  GWeakRef              page;
  EspalierProject      *project;
  EspalierDataset      *dataset;
  EsModel              *model;           /* trained in place; NULL once the project has it */
  EspalierTrainOptions  opts;            /* the run's options, all its epochs */
  EspalierRun          *run;
  EspalierJob          *job;
  gulong                job_cancel_id;
  EspalierTrainer      *trainer;         /* the current segment's */
  GCancellable         *cancellable;     /* the current segment's */
  Phase                 phase;
  gboolean              stop_requested;
  guint                 segment_base;    /* epochs done before the current segment */
  guint                 epochs_done;     /* records so far */
  guint                 steps_per_epoch;
  gint64                cosine_steps;    /* optimizer steps the cosine schedule spans */
  gint64                opt_steps_done;  /* optimizer steps of finished segments */
  guint64               segment_batches; /* batches done in the current segment */
  double                time_offset;     /* seconds trained in finished segments */
  double                elapsed;         /* seconds into the current segment */
  double                last_rate_t;     /* when throughput was last plotted */
  guint64               last_rate_rows;  /* rows trained in the segment by then */
  double                rate;            /* samples/s over the last interval */
  double                last_ui_t;       /* when the labels and running loss were updated */
  double                last_weights_t;  /* when a snapshot last reached the charts */
  char                 *ck_path;         /* where the run keeps its last good state */
  EspalierCheckpoint   *resume;          /* the leftover checkpoint it resumes, or NULL */
  guint                 resumed_epochs;  /* epochs that checkpoint had finished */
  gint64                fp32_products;   /* 16-bit products run in fp32, as last shown */
} Session;

struct _EspalierTrainPage
{
  AdwBin               parent_instance;

  EspalierProject     *project;
  GSettings           *settings;         /* NULL when the schema is not installed */
  Session             *session;          /* NULL when idle */
  gboolean             syncing;          /* controls being set from the options */
  guint                plan_idle_id;
  gint64               fp32_products;   /* the last run's 16-bit products run in fp32 */
  guint                pulse_id;         /* the progress bar pulsing while measuring */

  /* live series and the layers that draw them */
  EspalierSeries      *train_loss;       /* (epoch, loss) */
  EspalierSeries      *val_loss;
  EspalierSeries      *running_loss;     /* (fractional epoch, running loss) */
  EspalierSeries      *train_accuracy;
  EspalierSeries      *val_accuracy;
  EspalierSeries      *throughput;       /* (seconds, samples/s) */
  EspalierSeries      *points;           /* the 2-D data, classes as colours */
  EspalierChartLayer  *boundary_layer;
  EspalierChartLayer  *confusion_layer;
  EspalierSeries      *histogram;        /* a step outline: (weight, count) */

  /* decision boundary */
  gboolean             two_d;
  double               grid[4];          /* x_min, x_max, y_min, y_max */
  GCancellable        *boundary_cancellable;
  gboolean             boundary_busy;
  EsModel             *boundary_pending; /* the newest snapshot waiting for the worker */
  guint                boundary_updates;

  /* weight histograms */
  EsModel             *weights;          /* the latest epoch's weights */
  GArray              *weight_layers;    /* (int) model layer of each dropdown entry */

  /* template */
  GtkButton           *start_button;
  GtkButton           *pause_button;
  GtkButton           *stop_button;
  GtkProgressBar      *progress_bar;
  GtkLabel            *status_label;
  GtkLabel            *message_label;
  GtkWidget           *resume_box;        /* "Resume training from step S?" */
  GtkLabel            *resume_label;
  EspalierCheckpoint  *leftover;          /* a crashed run's checkpoint, offered */
  char                *leftover_path;
  int                  slot_fd;            /* the locked checkpoint slot, or -1 */
  char                *slot_base;          /* the project's checkpoint directory */
  char                *slot_dir;           /* its slot this page holds */
  gboolean             resuming;          /* Start was pressed through Resume */
  GtkWidget           *options_box;
  AdwComboRow         *optimizer_row;
  GtkSpinButton       *lr_spin;
  AdwComboRow         *schedule_row;
  GtkWidget           *step_size_row;
  GtkSpinButton       *step_size_spin;
  GtkWidget           *gamma_row;
  GtkSpinButton       *gamma_spin;
  GtkSpinButton       *warmup_spin;
  GtkSpinButton       *batch_spin;
  GtkSpinButton       *epochs_spin;
  GtkSpinButton       *accum_spin;
  GtkSpinButton       *patience_spin;
  GtkSpinButton       *l1_spin;
  GtkSpinButton       *l2_spin;
  AdwActionRow        *dropout_row;
  GtkSpinButton       *dropout_spin;
  AdwActionRow        *cpu_row;
  GtkCheckButton      *cpu_check;
  AdwActionRow        *gpu_row;
  GtkCheckButton      *gpu_check;
  GtkDropDown         *cuda_dropdown;     /* which CUDA device, when there are several */
  AdwActionRow        *precision_row;
  GtkSwitch           *precision_switch;
  AdwExpanderRow      *plan_row;
  GtkLabel            *plan_label;
  GtkGrid             *chart_grid;
  EspalierChart       *loss_chart;
  EspalierChart       *accuracy_chart;
  EspalierChart       *boundary_chart;
  EspalierChart       *confusion_chart;
  GtkWidget           *weights_overlay;
  EspalierChart       *weights_chart;
  EspalierChart       *throughput_chart;
  GtkDropDown         *layer_dropdown;
  GtkStringList       *layer_list;
};

G_DEFINE_FINAL_TYPE (EspalierTrainPage, espalier_train_page, ADW_TYPE_BIN)

enum { PROP_0, PROP_PROJECT, PROP_TRAINING, PROP_PAUSED, N_PROPS };
static GParamSpec *properties[N_PROPS];

/* "profile" (gpointer: const EspalierProfile *, valid during the emission): a profiled
 * run's profile so far, for the Profile page (the "profiling" preference). */
enum { SIGNAL_PROFILE, N_SIGNALS };
static guint signals[N_SIGNALS];

/* The combo rows' entries, in their order in the .ui. */
static const EsOptKind optimizer_kinds[] = {
  ES_OPT_SGD, ES_OPT_MOMENTUM, ES_OPT_NESTEROV, ES_OPT_ADAM, ES_OPT_ADAMW,
};
static const EsLrSchedule schedule_kinds[] = {
  ES_LR_CONSTANT, ES_LR_STEP, ES_LR_COSINE,
};

GtkWidget *
espalier_train_page_new (void)
{
  return g_object_new (ESPALIER_TYPE_TRAIN_PAGE, NULL);
}

static void update_state       (EspalierTrainPage *self);
static void show_project_state (EspalierTrainPage *self);
static void start_segment      (EspalierTrainPage *self,
                                Session           *s);

/* Sessions ---------------------------------------------------------------------------- */

/* Stop following the job's Cancel button (the handler may already be gone with the
 * page: g_signal_connect_object). */
static void
session_disconnect_job (Session *s)
{
  if (s->job != NULL && s->job_cancel_id != 0
      && g_signal_handler_is_connected (espalier_job_get_cancellable (s->job), s->job_cancel_id))
    g_signal_handler_disconnect (espalier_job_get_cancellable (s->job), s->job_cancel_id);
  s->job_cancel_id = 0;
}

static void
session_clear (gpointer data)
{
  Session *s = data;

  g_weak_ref_clear (&s->page);
  session_disconnect_job (s);
  g_clear_object (&s->project);
  g_clear_object (&s->dataset);
  g_clear_pointer (&s->model, es_model_free);
  g_clear_object (&s->run);
  g_clear_object (&s->job);
  g_clear_object (&s->trainer);
  g_clear_object (&s->cancellable);
  g_clear_pointer (&s->ck_path, g_free);
  g_clear_pointer (&s->resume, espalier_checkpoint_free);
}

static Session *
session_ref (Session *s)
{
  return g_atomic_rc_box_acquire (s);
}

static gboolean
session_release_idle (gpointer data)
{
  g_atomic_rc_box_release_full (data, session_clear);
  return G_SOURCE_REMOVE;
}

/* Drop a reference from any thread: the objects a session holds are released on the
 * main thread. */
static void
session_release_later (gpointer data)
{
  g_idle_add_full (G_PRIORITY_DEFAULT, session_release_idle, data, NULL);
}

static void
session_release (Session *s)
{
  g_atomic_rc_box_release_full (s, session_clear);
}

/* The page of s when it is still the page's current session, with a reference. */
static EspalierTrainPage *
session_get_page (Session *s)
{
  EspalierTrainPage *self = g_weak_ref_get (&s->page);

  if (self != NULL && self->session != s)
    g_clear_object (&self);
  return self;
}

/* Options of the next trainer: the epochs left, and the schedule carried on from the
 * optimizer steps already done (warm-up shortened, step decays applied, cosine resumed
 * from the rate reached over the steps left). */
static void
segment_options (Session              *s,
                 EspalierTrainOptions *o)
{
  EsTrainConfig *e = &o->engine;
  gint64 t = s->opt_steps_done;

  *o = s->opts;
  o->epochs = s->opts.epochs - s->epochs_done;
  if (t <= 0)
    return;
  e->warmup_steps = (int) MAX (0, (gint64) e->warmup_steps - t);
  switch (e->schedule)
    {
    case ES_LR_STEP:
      if (e->step_size > 0)
        e->lr = (float) (e->lr * pow (e->gamma, (double) (t / e->step_size)));
      break;
    case ES_LR_COSINE:
      if (s->cosine_steps > t)
        {
          double lr_t = e->min_lr + 0.5 * (e->lr - e->min_lr)
                                        * (1.0 + cos (G_PI * (double) t / (double) s->cosine_steps));

          e->lr = (float) lr_t;
          e->total_steps = s->cosine_steps - t;
        }
      else
        {
          /* Past the end the schedule sits at min_lr; the engine wants a positive rate. */
          e->lr = MAX (e->min_lr, G_MINFLOAT);
          e->schedule = ES_LR_CONSTANT;
        }
      break;
    case ES_LR_CONSTANT:
    default:
      break;
    }
}

/* Small helpers ----------------------------------------------------------------------- */

static guint
settings_get_uint (EspalierTrainPage *self,
                   const char        *key)
{
  g_autoptr(GSettingsSchema) schema = NULL;

  if (self->settings == NULL)
    return 0;
  g_object_get (self->settings, "settings-schema", &schema, NULL);
  return g_settings_schema_has_key (schema, key) ? g_settings_get_uint (self->settings, key) : 0;
}

static gboolean
settings_get_boolean (EspalierTrainPage *self,
                      const char        *key)
{
  g_autoptr(GSettingsSchema) schema = NULL;

  if (self->settings == NULL)
    return FALSE;
  g_object_get (self->settings, "settings-schema", &schema, NULL);
  return g_settings_schema_has_key (schema, key) && g_settings_get_boolean (self->settings, key);
}

static char *
settings_get_device (EspalierTrainPage *self)
{
  g_autoptr(GSettingsSchema) schema = NULL;

  if (self->settings == NULL)
    return g_strdup ("cpu");
  g_object_get (self->settings, "settings-schema", &schema, NULL);
  if (!g_settings_schema_has_key (schema, "device"))
    return g_strdup ("cpu");
  return g_settings_get_string (self->settings, "device");
}

static char *
format_duration (double seconds)
{
  guint s = (guint) MAX (0.0, round (seconds));

  if (s < 60)
    return g_strdup_printf (_("%u s"), s);
  if (s < 3600)
    return g_strdup_printf (_("%u min %u s"), s / 60, s % 60);
  return g_strdup_printf (_("%u h %u min"), s / 3600, (s % 3600) / 60);
}

/* A 2-D classification set: its decision boundary can be drawn. */
static gboolean
dataset_is_2d (EspalierDataset *ds)
{
  return ds != NULL
         && espalier_dataset_get_rank (ds) == 1
         && espalier_dataset_get_row_size (ds) == 2
         && espalier_dataset_get_labels (ds) != NULL
         && espalier_dataset_get_n_classes (ds) >= 2;
}

static void
set_message (EspalierTrainPage *self,
             const char        *message,
             gboolean           is_error)
{
  gtk_label_set_text (self->message_label, message ? message : "");
  gtk_widget_set_visible (GTK_WIDGET (self->message_label), message != NULL && *message);
  if (is_error)
    gtk_widget_add_css_class (GTK_WIDGET (self->message_label), "error-text");
  else
    gtk_widget_remove_css_class (GTK_WIDGET (self->message_label), "error-text");
}

/* Why training cannot start now (translated, g_free), or NULL. */
static char *
start_blocker (EspalierTrainPage *self)
{
  EspalierModelDoc *doc;

  if (self->project == NULL)
    return g_strdup (_("There is no project to train."));
  if (espalier_project_get_dataset (self->project) == NULL)
    return g_strdup (_("There is no dataset to train on: load one on the Data page."));
  doc = espalier_project_get_model_doc (self->project);
  if (!espalier_model_doc_is_valid (doc))
    {
      const char *reason = espalier_model_doc_get_error (doc);
      g_autofree char *text = g_strdup (reason ? reason : _("The model has no layers"));
      gsize len = strlen (text);

      if (len > 0 && text[len - 1] == '.')
        text[len - 1] = '\0';
      return g_strdup_printf (_("The model cannot be trained: %s. Fix it on the Model page."), text);
    }
  return NULL;
}

/* Options <-> controls ---------------------------------------------------------------- */

static guint
index_of_optimizer (EsOptKind kind)
{
  for (guint i = 0; i < G_N_ELEMENTS (optimizer_kinds); i++)
    if (optimizer_kinds[i] == kind)
      return i;
  return 3;
}

static guint
index_of_schedule (EsLrSchedule schedule)
{
  for (guint i = 0; i < G_N_ELEMENTS (schedule_kinds); i++)
    if (schedule_kinds[i] == schedule)
      return i;
  return 0;
}

/* The first Dropout layer of the model, or -1. */
static int
first_dropout (EspalierModelDoc *doc)
{
  guint n = espalier_model_doc_get_n_layers (doc);

  for (guint i = 0; i < n; i++)
    if (espalier_model_doc_get_layer (doc, i)->kind == ES_LAYER_DROPOUT)
      return (int) i;
  return -1;
}

static void
sync_dropout (EspalierTrainPage *self)
{
  EspalierModelDoc *doc = self->project ? espalier_project_get_model_doc (self->project) : NULL;
  int i = doc ? first_dropout (doc) : -1;
  gboolean was = self->syncing;

  self->syncing = TRUE;
  if (i >= 0)
    {
      gtk_spin_button_set_value (self->dropout_spin, espalier_model_doc_get_layer (doc, (guint) i)->rate);
      adw_action_row_set_subtitle (self->dropout_row, _("Drop rate of the model's Dropout layers"));
      gtk_widget_set_tooltip_text (GTK_WIDGET (self->dropout_row), NULL);
    }
  else
    {
      gtk_spin_button_set_value (self->dropout_spin, 0);
      adw_action_row_set_subtitle (self->dropout_row, _("The model has no Dropout layer"));
      gtk_widget_set_tooltip_text (GTK_WIDGET (self->dropout_row),
                                   _("Add a Dropout layer on the Model page to set its rate here"));
    }
  gtk_widget_set_sensitive (GTK_WIDGET (self->dropout_row), i >= 0);
  self->syncing = was;
}

static void
sync_controls (EspalierTrainPage *self)
{
  EspalierTrainOptions defaults;
  const EspalierTrainOptions *o;
  guint schedule;

  if (self->project != NULL)
    o = espalier_project_get_train_options (self->project);
  else
    {
      espalier_train_options_init (&defaults);
      o = &defaults;
    }

  self->syncing = TRUE;
  adw_combo_row_set_selected (self->optimizer_row, index_of_optimizer (o->engine.optimizer));
  gtk_spin_button_set_value (self->lr_spin, o->engine.lr);
  schedule = index_of_schedule (o->engine.schedule);
  adw_combo_row_set_selected (self->schedule_row, schedule);
  gtk_spin_button_set_value (self->step_size_spin, MAX (o->engine.step_size, 1));
  gtk_spin_button_set_value (self->gamma_spin, o->engine.gamma);
  gtk_spin_button_set_value (self->warmup_spin, o->engine.warmup_steps);
  gtk_spin_button_set_value (self->batch_spin, o->batch_size);
  gtk_spin_button_set_value (self->epochs_spin, o->epochs);
  gtk_spin_button_set_value (self->accum_spin, MAX (o->engine.accum_steps, 1));
  gtk_spin_button_set_value (self->patience_spin, o->patience);
  gtk_spin_button_set_value (self->l1_spin, o->engine.l1);
  gtk_spin_button_set_value (self->l2_spin, o->engine.l2);
  self->syncing = FALSE;

  gtk_widget_set_visible (self->step_size_row, schedule_kinds[schedule] == ES_LR_STEP);
  gtk_widget_set_visible (self->gamma_row, schedule_kinds[schedule] == ES_LR_STEP);
  sync_dropout (self);
}

static void
read_controls (EspalierTrainPage    *self,
               EspalierTrainOptions *o)
{
  guint opt = adw_combo_row_get_selected (self->optimizer_row);
  guint schedule = adw_combo_row_get_selected (self->schedule_row);

  *o = *espalier_project_get_train_options (self->project);
  if (opt < G_N_ELEMENTS (optimizer_kinds))
    o->engine.optimizer = optimizer_kinds[opt];
  if (schedule < G_N_ELEMENTS (schedule_kinds))
    o->engine.schedule = schedule_kinds[schedule];
  o->engine.lr = (float) gtk_spin_button_get_value (self->lr_spin);
  o->engine.step_size = gtk_spin_button_get_value_as_int (self->step_size_spin);
  o->engine.gamma = (float) gtk_spin_button_get_value (self->gamma_spin);
  o->engine.warmup_steps = gtk_spin_button_get_value_as_int (self->warmup_spin);
  o->engine.accum_steps = gtk_spin_button_get_value_as_int (self->accum_spin);
  o->engine.l1 = (float) gtk_spin_button_get_value (self->l1_spin);
  o->engine.l2 = (float) gtk_spin_button_get_value (self->l2_spin);
  o->batch_size = (guint) gtk_spin_button_get_value_as_int (self->batch_spin);
  o->epochs = (guint) gtk_spin_button_get_value_as_int (self->epochs_spin);
  o->patience = (guint) gtk_spin_button_get_value_as_int (self->patience_spin);
}

/* The options a run uses: the project's, with the preferences' threads and memory
 * limit when they are set, on the device chosen on the page: the CPU, or the CUDA
 * device of the drop-down (the first). "auto" (the default) is the GPU when there is
 * one. A "cuda" preference on a machine without one asks for device 0 all the same:
 * the trainer then trains on the CPU and says why. */
static void
run_options (EspalierTrainPage    *self,
             EspalierTrainOptions *o)
{
  guint threads = settings_get_uint (self, "threads");
  guint limit_mib = settings_get_uint (self, "memory-limit");
  g_autofree char *device = settings_get_device (self);

  *o = *espalier_project_get_train_options (self->project);
  if (threads > 0)
    o->threads = threads;
  if (limit_mib > 0)
    o->memory_limit = (gsize) limit_mib * 1024 * 1024;
  o->device = ESPALIER_DEVICE_CPU;
  if (g_strcmp0 (device, "cuda") == 0
      || (g_strcmp0 (device, "auto") == 0 && espalier_cuda_device_count () > 0))
    o->device = self->cuda_dropdown != NULL
                ? (gint) gtk_drop_down_get_selected (self->cuda_dropdown) : 0;
}

/* The memory plan ------------------------------------------------------------------- */

static void
format_plan (GString         *s,
             const EsMemPlan *plan)
{
  static const struct { const char *name; gsize offset; } parts[] = {
    { N_("Weights"),     G_STRUCT_OFFSET (EsMemPlan, weights) },
    { N_("Gradients"),   G_STRUCT_OFFSET (EsMemPlan, gradients) },
    { N_("Optimizer"),   G_STRUCT_OFFSET (EsMemPlan, optimizer) },
    { N_("Activations"), G_STRUCT_OFFSET (EsMemPlan, activations) },
    { N_("Workspace"),   G_STRUCT_OFFSET (EsMemPlan, workspace) },
    { N_("Data"),        G_STRUCT_OFFSET (EsMemPlan, data) },
    { N_("Total"),       G_STRUCT_OFFSET (EsMemPlan, total) },
  };

  for (guint i = 0; i < G_N_ELEMENTS (parts); i++)
    {
      char buf[32];
      size_t v = G_STRUCT_MEMBER (size_t, plan, parts[i].offset);

      g_string_append_printf (s, "%s%-12s %10s", i ? "\n" : "", _(parts[i].name),
                              es_format_bytes (buf, sizeof buf, (double) v));
    }
}

/* Plan the memory of the model as the document stands: an uninitialized model is enough
 * (es_mem_plan only reads its shapes). */
static gboolean
update_plan_idle (gpointer data)
{
  EspalierTrainPage *self = data;
  EspalierModelDoc *doc;
  EspalierTrainOptions o;
  g_autofree EsLayerSpec *specs = NULL;
  g_autoptr(GString) text = g_string_new (NULL);
  EsModel *model;
  EsMemPlan plan;
  EsError err = { 0 };
  guint n;
  char buf[32];

  self->plan_idle_id = 0;
  if (self->project == NULL || self->session != NULL)
    return G_SOURCE_REMOVE;
  doc = espalier_project_get_model_doc (self->project);
  if (!espalier_model_doc_is_valid (doc))
    {
      adw_preferences_row_set_title (ADW_PREFERENCES_ROW (self->plan_row), _("Memory plan"));
      adw_expander_row_set_subtitle (self->plan_row, _("Shown when the model is valid"));
      gtk_label_set_text (self->plan_label, "");
      return G_SOURCE_REMOVE;
    }
  n = espalier_model_doc_get_n_layers (doc);
  specs = g_new (EsLayerSpec, n);
  for (guint i = 0; i < n; i++)
    specs[i] = *espalier_model_doc_get_layer (doc, i);
  model = es_model_new (espalier_model_doc_get_input (doc), specs, (int) n, &err);
  if (model == NULL)
    {
      adw_expander_row_set_subtitle (self->plan_row, err.message);
      return G_SOURCE_REMOVE;
    }
  run_options (self, &o);
  o.engine.plan_cuda = o.device >= 0;   /* a GPU's workspace has its own layout */
  o.engine.plan_prefetch = o.device >= 0;   /* and batches go up one ahead */
  es_mem_plan (model, &o.engine, (int) o.batch_size, TRUE, &plan);
  es_model_free (model);

  format_plan (text, &plan);
  gtk_label_set_text (self->plan_label, text->str);
  es_format_bytes (buf, sizeof buf, (double) plan.total);
  if (o.memory_limit > 0 && plan.total > o.memory_limit)
    {
      g_autofree char *sub = g_strdup_printf (
          _("%s at batch %u: over the memory limit, so batches will be split and accumulated"),
          buf, o.batch_size);
      adw_expander_row_set_subtitle (self->plan_row, sub);
    }
  else
    {
      g_autofree char *sub = g_strdup_printf (_("%s at batch %u"), buf, o.batch_size);
      adw_expander_row_set_subtitle (self->plan_row, sub);
    }
  /* the last run's products that fell back to fp32 stay said until the next run */
  if (self->fp32_products > 0)
    {
      g_autofree char *msg = espalier_fp32_products_message (self->fp32_products);

      adw_expander_row_set_subtitle (self->plan_row, msg);
    }
  return G_SOURCE_REMOVE;
}

static void
queue_plan (EspalierTrainPage *self)
{
  if (self->plan_idle_id == 0)
    self->plan_idle_id = g_idle_add (update_plan_idle, self);
}

/* The CUDA devices (EspalierDevice) and, when there are none, why: listed once, as
 * reading them wakes the driver, and GPUs do not come and go while the app runs. */
static const GArray *
cuda_devices (const char **no_cuda)
{
  static GArray *list;
  static char *reason;

  if (g_once_init_enter (&list))
    {
      GArray *all = espalier_devices_list (&reason);

      g_array_remove_index (all, 0);   /* the CPU, which has its own row */
      g_once_init_leave (&list, all);
    }
  *no_cuda = reason;
  return list;
}

/* The GPU row: the CUDA devices by name and memory (a drop-down picks one when there
 * are several), or insensitive with a tooltip saying why there is none; the check
 * buttons follow the preference. */
static void
update_gpu_row (EspalierTrainPage *self)
{
  const char *no_cuda = NULL;
  const GArray *gpus = cuda_devices (&no_cuda);
  g_autofree char *device = settings_get_device (self);
  gboolean cuda = FALSE;

  if (gpus->len == 0)
    {
      g_autofree char *tooltip = no_cuda != NULL && *no_cuda != '\0'
                                 ? g_strdup_printf (_("No CUDA device can be used: %s"), no_cuda)
                                 : g_strdup (_("No CUDA device can be used"));

      adw_action_row_set_subtitle (self->gpu_row, _("No CUDA device"));
      gtk_widget_set_sensitive (GTK_WIDGET (self->gpu_row), FALSE);
      gtk_widget_set_tooltip_text (GTK_WIDGET (self->gpu_row), tooltip);
    }
  else
    {
      g_autoptr(GString) subtitle = g_string_new (NULL);

      for (guint i = 0; i < gpus->len; i++)
        {
          const EspalierDevice *d = &g_array_index (gpus, EspalierDevice, i);
          char mem[32];

          es_format_bytes (mem, sizeof mem, (double) d->cuda.mem_total);
          /* TRANSLATORS: a GPU in the device list: its name and memory */
          g_string_append_printf (subtitle, i ? _(" · %s, %s") : _("%s, %s"), d->name, mem);
        }
      adw_action_row_set_subtitle (self->gpu_row, subtitle->str);
      gtk_widget_set_sensitive (GTK_WIDGET (self->gpu_row), TRUE);
      gtk_widget_set_tooltip_text (GTK_WIDGET (self->gpu_row),
                                   _("Train on the GPU; the memory limit of Preferences is its "
                                     "memory pool's"));
      if (gpus->len > 1 && self->cuda_dropdown == NULL)
        {
          g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func (g_free);

          for (guint i = 0; i < gpus->len; i++)
            g_ptr_array_add (names, espalier_device_describe (g_array_index (gpus, EspalierDevice, i).device));
          g_ptr_array_add (names, NULL);
          self->cuda_dropdown = GTK_DROP_DOWN (gtk_drop_down_new_from_strings ((const char * const *) names->pdata));
          gtk_widget_set_valign (GTK_WIDGET (self->cuda_dropdown), GTK_ALIGN_CENTER);
          adw_action_row_add_suffix (self->gpu_row, GTK_WIDGET (self->cuda_dropdown));
        }
      /* "auto", the default, is the GPU when there is one */
      cuda = g_strcmp0 (device, "cuda") == 0 || g_strcmp0 (device, "auto") == 0;
    }
  self->syncing = TRUE;
  gtk_check_button_set_active (cuda ? self->gpu_check : self->cpu_check, TRUE);
  self->syncing = FALSE;
}

static void
update_device_rows (EspalierTrainPage *self)
{
  guint threads = settings_get_uint (self, "threads");
  guint limit = settings_get_uint (self, "memory-limit");
  g_autofree char *threads_text = threads
    ? g_strdup_printf (g_dngettext (NULL, "%u thread", "%u threads", threads), threads)
    : g_strdup (_("threads chosen per model"));
  g_autofree char *limit_text = limit
    ? g_strdup_printf (_("memory limit %u MiB"), limit)
    : g_strdup (_("no memory limit"));
  g_autofree char *cores = g_strdup_printf (g_dngettext (NULL, "%u core", "%u cores",
                                                         g_get_num_processors ()),
                                            g_get_num_processors ());
  g_autofree char *subtitle = g_strdup_printf ("%s · %s · %s", cores, threads_text, limit_text);

  adw_action_row_set_subtitle (self->cpu_row, subtitle);
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->cpu_row),
                               _("Threads and the memory limit are set in Preferences"));
  update_gpu_row (self);
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->precision_row),
                               _("Mixed precision (float16 or bfloat16 with loss scaling) runs on the GPU; the CPU backend computes in float32"));
}

/* Charts ------------------------------------------------------------------------------ */

static EspalierChartLayer *
add_line (EspalierChart  *chart,
          EspalierSeries *series,
          guint           color,
          gboolean        dashed)
{
  EspalierChartLayer *layer = espalier_line_layer_new (series);
  GdkRGBA rgba;

  espalier_chart_palette_color (color, &rgba);
  espalier_chart_layer_set_color (layer, &rgba);
  espalier_chart_layer_set_title (layer, espalier_series_get_title (series));
  if (dashed)
    espalier_line_layer_set_dashed (ESPALIER_LINE_LAYER (layer), TRUE);
  espalier_chart_add_layer (chart, layer);
  g_object_unref (layer);
  return layer;
}

static void
setup_charts (EspalierTrainPage *self)
{
  EspalierChartLayer *layer;

  self->train_loss = espalier_series_new (_("Training"));
  self->val_loss = espalier_series_new (_("Validation"));
  self->running_loss = espalier_series_new (_("Running"));
  self->train_accuracy = espalier_series_new (_("Training"));
  self->val_accuracy = espalier_series_new (_("Validation"));
  self->throughput = espalier_series_new (_("Samples/s"));
  self->points = espalier_series_new (_("Data"));

  add_line (self->loss_chart, self->train_loss, 0, FALSE);
  add_line (self->loss_chart, self->val_loss, 1, FALSE);
  layer = add_line (self->loss_chart, self->running_loss, 0, TRUE);
  g_object_set (layer, "line-width", 1.0, NULL);
  espalier_chart_axis_set_title (espalier_chart_get_x_axis (self->loss_chart), _("Epoch"));
  espalier_chart_axis_set_integer_ticks (espalier_chart_get_x_axis (self->loss_chart), TRUE);
  espalier_chart_axis_set_title (espalier_chart_get_y_axis (self->loss_chart), _("Loss"));
  espalier_chart_axis_set_include_zero (espalier_chart_get_y_axis (self->loss_chart), TRUE);

  add_line (self->accuracy_chart, self->train_accuracy, 0, FALSE);
  add_line (self->accuracy_chart, self->val_accuracy, 1, FALSE);
  espalier_chart_axis_set_title (espalier_chart_get_x_axis (self->accuracy_chart), _("Epoch"));
  espalier_chart_axis_set_integer_ticks (espalier_chart_get_x_axis (self->accuracy_chart), TRUE);
  espalier_chart_axis_set_title (espalier_chart_get_y_axis (self->accuracy_chart), _("Accuracy"));
  espalier_chart_axis_set_range (espalier_chart_get_y_axis (self->accuracy_chart), 0, 1);

  add_line (self->throughput_chart, self->throughput, 2, FALSE);
  espalier_chart_axis_set_title (espalier_chart_get_x_axis (self->throughput_chart), _("Seconds"));
  espalier_chart_axis_set_title (espalier_chart_get_y_axis (self->throughput_chart), _("Samples/s"));
  espalier_chart_axis_set_include_zero (espalier_chart_get_y_axis (self->throughput_chart), TRUE);

  self->boundary_layer = espalier_heatmap_layer_new ();
  espalier_chart_layer_set_title (self->boundary_layer, _("Prediction"));
  espalier_chart_add_layer (self->boundary_chart, self->boundary_layer);
  layer = espalier_scatter_layer_new (self->points);
  espalier_scatter_layer_set_radius (ESPALIER_SCATTER_LAYER (layer), 2.5);
  espalier_chart_layer_set_title (layer, _("Data"));
  espalier_chart_add_layer (self->boundary_chart, layer);
  g_object_unref (layer);

  self->confusion_layer = espalier_heatmap_layer_new ();
  espalier_heatmap_layer_set_show_values (ESPALIER_HEATMAP_LAYER (self->confusion_layer), TRUE);
  espalier_chart_layer_set_title (self->confusion_layer, _("Rows"));
  espalier_chart_add_layer (self->confusion_chart, self->confusion_layer);
  espalier_chart_axis_set_title (espalier_chart_get_x_axis (self->confusion_chart), _("Predicted"));
  espalier_chart_axis_set_title (espalier_chart_get_y_axis (self->confusion_chart), _("True"));

  /* A histogram as a step outline on a numeric weight axis (bars would put one
   * category label per bin under the axis). */
  self->histogram = espalier_series_new (_("Weights"));
  add_line (self->weights_chart, self->histogram, 0, FALSE);
  espalier_chart_axis_set_title (espalier_chart_get_x_axis (self->weights_chart), _("Weight"));
  espalier_chart_axis_set_title (espalier_chart_get_y_axis (self->weights_chart), _("Count"));
  espalier_chart_axis_set_include_zero (espalier_chart_get_y_axis (self->weights_chart), TRUE);
}

/* Two columns: loss, accuracy, then the decision boundary (2-D sets), the confusion
 * matrix, the weights and throughput. */
static void
layout_charts (EspalierTrainPage *self)
{
  GtkWidget *cards[] = {
    GTK_WIDGET (self->loss_chart), GTK_WIDGET (self->accuracy_chart),
    GTK_WIDGET (self->boundary_chart), GTK_WIDGET (self->confusion_chart),
    self->weights_overlay, GTK_WIDGET (self->throughput_chart),
  };
  GtkLayoutManager *layout = gtk_widget_get_layout_manager (GTK_WIDGET (self->chart_grid));
  guint pos = 0;

  gtk_widget_set_visible (GTK_WIDGET (self->boundary_chart), self->two_d);
  for (guint i = 0; i < G_N_ELEMENTS (cards); i++)
    {
      GtkGridLayoutChild *child;

      if (!gtk_widget_get_visible (cards[i]))
        continue;
      child = GTK_GRID_LAYOUT_CHILD (gtk_layout_manager_get_layout_child (layout, cards[i]));
      gtk_grid_layout_child_set_column (child, (int) (pos % 2));
      gtk_grid_layout_child_set_row (child, (int) (pos / 2));
      pos++;
    }
}

static void
clear_live_charts (EspalierTrainPage *self)
{
  espalier_series_clear (self->train_loss);
  espalier_series_clear (self->val_loss);
  espalier_series_clear (self->running_loss);
  espalier_series_clear (self->train_accuracy);
  espalier_series_clear (self->val_accuracy);
  espalier_series_clear (self->throughput);
}

static void
append_record (EspalierTrainPage         *self,
               const EspalierEpochRecord *rec)
{
  espalier_series_append (self->train_loss, rec->epoch, rec->train_loss);
  espalier_series_append (self->train_accuracy, rec->epoch, rec->train_accuracy);
  if (isfinite (rec->val_loss))
    espalier_series_append (self->val_loss, rec->epoch, rec->val_loss);
  if (isfinite (rec->val_accuracy))
    espalier_series_append (self->val_accuracy, rec->epoch, rec->val_accuracy);
}

/* Keep only the running points up to x (a resumed run repeats its interrupted epoch). */
static void
truncate_series (EspalierSeries *series,
                 double          x_max)
{
  guint n = espalier_series_get_n_points (series), keep = 0;
  const double *x = espalier_series_get_x (series);

  while (keep < n && (isnan (x[keep]) || x[keep] <= x_max))
    keep++;
  if (keep < n)
    {
      g_autofree double *xs = g_memdup2 (x, keep * sizeof (double));
      g_autofree double *ys = g_memdup2 (espalier_series_get_y (series), keep * sizeof (double));

      espalier_series_set_data (series, xs, ys, NULL, keep);
    }
}

static void
set_confusion (EspalierTrainPage     *self,
               const EspalierMetrics *m,
               EspalierDataset       *ds,
               const char            *title)
{
  guint k = m->n_classes;
  g_autofree double *values = NULL;
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func (g_free);

  if (m->confusion == NULL || k == 0)
    return;
  values = g_new (double, (gsize) k * k);   /* (k, k), rows = truth */
  for (gsize i = 0; i < (gsize) k * k; i++)
    values[i] = m->confusion[i];
  for (guint c = 0; c < k; c++)
    {
      const char *name = ds && c < espalier_dataset_get_n_classes (ds)
                         ? espalier_dataset_get_class_name (ds, c) : NULL;

      g_ptr_array_add (names, name ? g_strdup (name) : g_strdup_printf ("%u", c));
    }
  g_ptr_array_add (names, NULL);
  espalier_heatmap_layer_set_data (ESPALIER_HEATMAP_LAYER (self->confusion_layer), values, NULL,
                                   k, k, -0.5, k - 0.5, -0.5, k - 0.5);
  espalier_heatmap_layer_set_labels (ESPALIER_HEATMAP_LAYER (self->confusion_layer),
                                     (const char * const *) names->pdata,
                                     (const char * const *) names->pdata);
  espalier_chart_axis_set_range (espalier_chart_get_x_axis (self->confusion_chart), -0.5, k - 0.5);
  espalier_chart_axis_set_range (espalier_chart_get_y_axis (self->confusion_chart), -0.5, k - 0.5);
  espalier_chart_set_title (self->confusion_chart, title);
}

/* Weight histograms ---------------------------------------------------------------------- */

/* The weights of a layer to histogram: its tensors named "...weight", or all its
 * trainable tensors when none is (BatchNorm's gamma and beta). */
static GPtrArray *
layer_weight_tensors (EsModel *model,
                      int      layer)
{
  const EsLayerInfo *info = es_model_layer (model, layer);
  GPtrArray *tensors = g_ptr_array_new ();   /* (const EsTensorInfo *) */
  gboolean named = FALSE;

  for (int t = info->first_tensor; t < info->first_tensor + info->n_tensors; t++)
    {
      const EsTensorInfo *ti = es_model_tensor (model, t);

      named = named || (ti->trainable && g_str_has_suffix (ti->name, "weight"));
    }
  for (int t = info->first_tensor; t < info->first_tensor + info->n_tensors; t++)
    {
      const EsTensorInfo *ti = es_model_tensor (model, t);

      if (ti->trainable && (!named || g_str_has_suffix (ti->name, "weight")))
        g_ptr_array_add (tensors, GINT_TO_POINTER (t));
    }
  return tensors;
}

static void
update_histogram (EspalierTrainPage *self)
{
  guint sel = gtk_drop_down_get_selected (self->layer_dropdown);
  g_autoptr(GPtrArray) tensors = NULL;
  double counts[HISTOGRAM_BINS];
  double xs[2 * HISTOGRAM_BINS + 2], ys[2 * HISTOGRAM_BINS + 2];   /* the outline */
  double lo = INFINITY, hi = -INFINITY, width;
  guint n = 0;

  if (self->weights == NULL || sel == GTK_INVALID_LIST_POSITION || sel >= self->weight_layers->len)
    {
      espalier_series_clear (self->histogram);
      return;
    }
  tensors = layer_weight_tensors (self->weights, g_array_index (self->weight_layers, int, sel));

  for (guint i = 0; i < tensors->len; i++)
    {
      int t = GPOINTER_TO_INT (tensors->pdata[i]);
      const float *w = es_model_tensor_data (self->weights, t);   /* (size) */

      for (gint64 j = 0; j < es_model_tensor (self->weights, t)->size; j++)
        if (isfinite (w[j]))
          {
            lo = MIN (lo, w[j]);
            hi = MAX (hi, w[j]);
          }
    }
  if (!(lo <= hi))
    lo = hi = 0;
  if (hi - lo < 1e-12)
    {
      lo -= 0.5;
      hi += 0.5;
    }
  width = (hi - lo) / HISTOGRAM_BINS;
  memset (counts, 0, sizeof counts);
  for (guint i = 0; i < tensors->len; i++)
    {
      int t = GPOINTER_TO_INT (tensors->pdata[i]);
      const float *w = es_model_tensor_data (self->weights, t);

      for (gint64 j = 0; j < es_model_tensor (self->weights, t)->size; j++)
        if (isfinite (w[j]))
          counts[CLAMP ((int) ((w[j] - lo) / width), 0, HISTOGRAM_BINS - 1)] += 1;
    }

  xs[n] = lo, ys[n++] = 0;
  for (guint b = 0; b < HISTOGRAM_BINS; b++)
    {
      xs[n] = lo + b * width, ys[n++] = counts[b];
      xs[n] = lo + (b + 1) * width, ys[n++] = counts[b];
    }
  xs[n] = hi, ys[n++] = 0;
  espalier_series_set_data (self->histogram, xs, ys, NULL, n);
}

/* Take over `model` as the weights the histograms show. */
static void
set_weights (EspalierTrainPage *self,
             EsModel           *model)
{
  g_autoptr(GArray) layers = g_array_new (FALSE, FALSE, sizeof (int));
  gboolean same = self->weights != NULL && model != NULL;
  guint selected = gtk_drop_down_get_selected (self->layer_dropdown);

  if (model != NULL)
    for (int i = 0; i < es_model_n_layers (model); i++)
      if (es_model_layer (model, i)->n_params > 0)
        g_array_append_val (layers, i);
  same = same && layers->len == self->weight_layers->len
         && memcmp (layers->data, self->weight_layers->data, layers->len * sizeof (int)) == 0;
  if (same)
    for (guint j = 0; j < layers->len; j++)
      {
        int i = g_array_index (layers, int, j);

        if (es_model_layer (model, i)->spec.kind != es_model_layer (self->weights, i)->spec.kind
            || es_model_layer (model, i)->n_params != es_model_layer (self->weights, i)->n_params)
          same = FALSE;
      }

  g_clear_pointer (&self->weights, es_model_free);
  self->weights = model;
  if (!same)
    {
      g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func (g_free);

      g_array_set_size (self->weight_layers, 0);
      g_array_append_vals (self->weight_layers, layers->data, layers->len);
      for (guint j = 0; j < layers->len; j++)
        {
          const EsLayerInfo *info = es_model_layer (model, g_array_index (layers, int, j));
          char in[64], out[64];

          g_ptr_array_add (names, g_strdup_printf (_("Layer %d · %s %s → %s"),
                                                   g_array_index (layers, int, j) + 1,
                                                   es_layer_kind_title (info->spec.kind),
                                                   es_shape_format (&info->in, in, sizeof in),
                                                   es_shape_format (&info->out, out, sizeof out)));
        }
      g_ptr_array_add (names, NULL);
      self->syncing = TRUE;
      gtk_string_list_splice (self->layer_list, 0,
                              g_list_model_get_n_items (G_LIST_MODEL (self->layer_list)),
                              (const char * const *) names->pdata);
      gtk_drop_down_set_selected (self->layer_dropdown,
                                  layers->len == 0 ? GTK_INVALID_LIST_POSITION
                                  : selected < layers->len ? selected : 0);
      self->syncing = FALSE;
    }
  gtk_widget_set_visible (GTK_WIDGET (self->layer_dropdown), self->weight_layers->len > 0);
  update_histogram (self);
}

/* Decision boundary ---------------------------------------------------------------------- */

typedef struct {
  EsModel  *model;                       /* owned */
  double    x_min, x_max, y_min, y_max;
  double   *values;                      /* (BOUNDARY_CELLS, BOUNDARY_CELLS) confidence 0..1 */
  guint    *classes;                     /* (BOUNDARY_CELLS, BOUNDARY_CELLS) */
} BoundaryData;

static void
boundary_data_free (gpointer data)
{
  BoundaryData *bd = data;

  g_clear_pointer (&bd->model, es_model_free);
  g_free (bd->values);
  g_free (bd->classes);
  g_free (bd);
}

/* Worker: the model on every cell centre of the grid; class = argmax, value = how far
 * the winning probability is above chance (0 on the boundary, 1 when certain). */
static void
boundary_thread (GTask        *task,
                 gpointer      source,
                 gpointer      task_data,
                 GCancellable *cancellable)
{
  BoundaryData *bd = task_data;
  const guint n = BOUNDARY_CELLS, rows = (guint) n * n;
  g_autofree float *x = g_new (float, (gsize) rows * 2);   /* (rows, 2) */
  EsShape out_shape = es_model_output_shape (bd->model);
  int n_layers = es_model_n_layers (bd->model);
  EsLayerKind last = n_layers > 0 ? es_model_layer (bd->model, n_layers - 1)->spec.kind : ES_LAYER_DENSE;
  guint C = (guint) es_shape_size (&out_shape);
  EsError err = { 0 };
  EsBackend *be;
  EsInfer *inf;
  const float *y;   /* (rows, C) */

  for (guint r = 0; r < n; r++)
    for (guint c = 0; c < n; c++)
      {
        x[((gsize) r * n + c) * 2 + 0] = (float) (bd->x_min + (c + 0.5) * (bd->x_max - bd->x_min) / n);
        x[((gsize) r * n + c) * 2 + 1] = (float) (bd->y_max - (r + 0.5) * (bd->y_max - bd->y_min) / n);
      }
  be = es_cpu_backend_new (1, NULL, &err);
  inf = be ? es_infer_new (bd->model, be, (int) rows, &err) : NULL;
  if (inf == NULL || C == 0)
    {
      es_backend_free (be);
      g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_FAILED, "%s", err.message);
      return;
    }
  y = es_infer_run (inf, x, (int) rows);
  bd->values = g_new (double, rows);
  bd->classes = g_new (guint, rows);
  for (guint i = 0; i < rows; i++)
    {
      const float *o = y + (gsize) i * C;
      double p_best;
      guint best = 0, k = MAX (C, 2);

      if (C == 1)
        {
          double p = last == ES_LAYER_SIGMOID ? o[0] : 1.0 / (1.0 + exp (-o[0]));

          best = p >= 0.5;
          p_best = best ? p : 1 - p;
        }
      else
        {
          double sum = 0;

          for (guint j = 1; j < C; j++)
            if (o[j] > o[best])
              best = j;
          if (last == ES_LAYER_SOFTMAX)
            p_best = o[best];
          else
            {
              for (guint j = 0; j < C; j++)
                sum += exp ((double) o[j] - o[best]);
              p_best = 1.0 / sum;
            }
        }
      bd->classes[i] = best;
      bd->values[i] = CLAMP ((p_best - 1.0 / k) / (1.0 - 1.0 / k), 0.0, 1.0);
      if (!isfinite (bd->values[i]))
        bd->values[i] = 0;
    }
  es_infer_free (inf);
  es_backend_free (be);
  g_task_return_boolean (task, TRUE);
}

static void boundary_request (EspalierTrainPage *self,
                              EsModel           *model);

static void
boundary_done (GObject      *source,
               GAsyncResult *result,
               gpointer      data)
{
  GWeakRef *ref = data;
  g_autoptr(EspalierTrainPage) self = g_weak_ref_get (ref);
  GTask *task = G_TASK (result);
  BoundaryData *bd = g_task_get_task_data (task);
  g_autoptr(GError) error = NULL;
  gboolean ok = g_task_propagate_boolean (task, &error);

  g_weak_ref_clear (ref);
  g_free (ref);
  if (self == NULL || g_task_had_error (task) || g_cancellable_is_cancelled (g_task_get_cancellable (task)))
    {
      if (error != NULL && !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        g_warning ("Decision boundary: %s", error->message);
      if (self != NULL)
        self->boundary_busy = FALSE;
      return;
    }
  self->boundary_busy = FALSE;
  if (ok && self->two_d)
    {
      espalier_heatmap_layer_set_data (ESPALIER_HEATMAP_LAYER (self->boundary_layer),
                                       bd->values, bd->classes, BOUNDARY_CELLS, BOUNDARY_CELLS,
                                       bd->x_min, bd->x_max, bd->y_min, bd->y_max);
      self->boundary_updates++;
    }
  if (self->boundary_pending != NULL)
    boundary_request (self, g_steal_pointer (&self->boundary_pending));
}

/* Draw the decision boundary of `model` (taken over), on a worker; while one is being
 * computed, only the newest request waits. */
static void
boundary_request (EspalierTrainPage *self,
                  EsModel           *model)
{
  g_autoptr(GTask) task = NULL;
  BoundaryData *bd;
  GWeakRef *ref;
  EsShape in = es_model_input_shape (model);

  if (!self->two_d || es_shape_size (&in) != 2)
    {
      es_model_free (model);
      return;
    }
  if (self->boundary_busy)
    {
      g_clear_pointer (&self->boundary_pending, es_model_free);
      self->boundary_pending = model;
      return;
    }
  bd = g_new0 (BoundaryData, 1);
  bd->model = model;
  bd->x_min = self->grid[0];
  bd->x_max = self->grid[1];
  bd->y_min = self->grid[2];
  bd->y_max = self->grid[3];
  ref = g_new0 (GWeakRef, 1);
  g_weak_ref_init (ref, self);
  task = g_task_new (NULL, self->boundary_cancellable, boundary_done, ref);
  g_task_set_source_tag (task, boundary_request);
  g_task_set_task_data (task, bd, boundary_data_free);
  g_task_set_name (task, "[espalier] decision boundary");
  self->boundary_busy = TRUE;
  g_task_run_in_thread (task, boundary_thread);
}

/* The dataset changed: the scatter of its points and the grid around them. */
static void
update_dataset (EspalierTrainPage *self)
{
  EspalierDataset *ds = self->project ? espalier_project_get_dataset (self->project) : NULL;
  gboolean two_d = dataset_is_2d (ds);

  g_clear_pointer (&self->boundary_pending, es_model_free);
  espalier_heatmap_layer_set_data (ESPALIER_HEATMAP_LAYER (self->boundary_layer), NULL, NULL, 0, 0,
                                   0, 1, 0, 1);
  self->two_d = two_d;
  if (two_d)
    {
      guint n = espalier_dataset_get_n_rows (ds);
      guint stride = MAX (1, (n + MAX_SCATTER_POINTS - 1) / MAX_SCATTER_POINTS);
      guint m = (n + stride - 1) / stride;
      const float *f = espalier_dataset_get_f32 (ds);
      const guint8 *u = espalier_dataset_get_u8 (ds);
      const gint32 *labels = espalier_dataset_get_labels (ds);
      float scale = espalier_dataset_get_scale (ds), shift = espalier_dataset_get_shift (ds);
      g_autofree double *xs = g_new (double, MAX (m, 1));
      g_autofree double *ys = g_new (double, MAX (m, 1));
      g_autofree guint *ks = g_new (guint, MAX (m, 1));
      double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY, mx, my;
      guint j = 0;

      /* Rows come grouped by class: a stride keeps every class in a large set. */
      for (guint i = 0; i < n && j < m; i += stride, j++)
        {
          xs[j] = f ? f[(gsize) i * 2] : u[(gsize) i * 2] * scale + shift;
          ys[j] = f ? f[(gsize) i * 2 + 1] : u[(gsize) i * 2 + 1] * scale + shift;
          ks[j] = (guint) MAX (labels[i], 0);
          if (isfinite (xs[j]) && isfinite (ys[j]))
            {
              x0 = MIN (x0, xs[j]);
              x1 = MAX (x1, xs[j]);
              y0 = MIN (y0, ys[j]);
              y1 = MAX (y1, ys[j]);
            }
        }
      if (!(x0 < x1))
        x0 = -1, x1 = 1;
      if (!(y0 < y1))
        y0 = -1, y1 = 1;
      mx = 0.08 * (x1 - x0);
      my = 0.08 * (y1 - y0);
      self->grid[0] = x0 - mx;
      self->grid[1] = x1 + mx;
      self->grid[2] = y0 - my;
      self->grid[3] = y1 + my;
      espalier_series_set_data (self->points, xs, ys, ks, j);
      espalier_chart_axis_set_range (espalier_chart_get_x_axis (self->boundary_chart),
                                     self->grid[0], self->grid[1]);
      espalier_chart_axis_set_range (espalier_chart_get_y_axis (self->boundary_chart),
                                     self->grid[2], self->grid[3]);
      espalier_chart_axis_set_title (espalier_chart_get_x_axis (self->boundary_chart),
                                     espalier_dataset_get_feature_name (ds, 0));
      espalier_chart_axis_set_title (espalier_chart_get_y_axis (self->boundary_chart),
                                     espalier_dataset_get_feature_name (ds, 1));
    }
  else
    espalier_series_clear (self->points);
  layout_charts (self);
}

/* State ----------------------------------------------------------------------------- */

static void
notify_state (EspalierTrainPage *self)
{
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_TRAINING]);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_PAUSED]);
}

static void
update_state (EspalierTrainPage *self)
{
  Session *s = self->session;
  g_autofree char *blocker = s == NULL ? start_blocker (self) : NULL;
  gboolean idle = s == NULL;

  gtk_widget_set_sensitive (GTK_WIDGET (self->start_button), idle && blocker == NULL);
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->start_button),
                               blocker ? blocker : _("Train the model with these settings (Ctrl+Enter)"));
  gtk_widget_set_sensitive (GTK_WIDGET (self->pause_button),
                            s != NULL && !s->stop_requested
                            && (s->phase == PHASE_PAUSED || s->phase == PHASE_TRAINING));
  gtk_button_set_label (self->pause_button,
                        s != NULL && s->phase == PHASE_PAUSED ? _("_Resume") : _("_Pause"));
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->pause_button),
                               s != NULL && s->phase == PHASE_PAUSED
                               ? _("Go on from the step where the run paused")
                               : _("Pause after the current step; the weights, the optimizer's "
                                   "state and the data order wait where they are"));
  gtk_widget_set_sensitive (GTK_WIDGET (self->stop_button),
                            s != NULL && s->phase != PHASE_EVALUATING && !s->stop_requested);
  gtk_widget_set_sensitive (self->options_box, idle);

  if (idle)
    {
      EspalierDataset *ds = self->project ? espalier_project_get_dataset (self->project) : NULL;

      if (blocker != NULL)
        {
          gtk_label_set_text (self->status_label, blocker);
          gtk_widget_add_css_class (GTK_WIDGET (self->status_label), "error-text");
        }
      else
        {
          gint64 n_params = 0;
          g_autofree char *text = NULL;
          g_autofree char *params = NULL;

          espalier_model_doc_get_totals (espalier_project_get_model_doc (self->project),
                                         &n_params, NULL, NULL);
          params = espalier_format_grouped (n_params);
          text = g_strdup_printf (_("Ready: %s, %u rows; a model of %s parameters"),
                                  espalier_dataset_get_name (ds), espalier_dataset_get_n_rows (ds),
                                  params);
          gtk_label_set_text (self->status_label, text);
          gtk_widget_remove_css_class (GTK_WIDGET (self->status_label), "error-text");
        }
    }
  else
    gtk_widget_remove_css_class (GTK_WIDGET (self->status_label), "error-text");
}

static void
set_progress (EspalierTrainPage *self,
              Session           *s,
              double             fraction,
              const char        *text)
{
  if (fraction < 0)
    gtk_progress_bar_pulse (self->progress_bar);
  else
    gtk_progress_bar_set_fraction (self->progress_bar, CLAMP (fraction, 0, 1));
  gtk_progress_bar_set_text (self->progress_bar, text);
  if (s->job != NULL)
    {
      espalier_job_set_fraction (s->job, fraction < 0 ? -1 : CLAMP (fraction, 0, 1));
      espalier_job_set_status (s->job, text);
    }
}

/* The end of a session: file what was done with the project, finish its job, and let
 * the page go idle. error: NULL when stopped by the user. Works without the page. */
static void
session_end (Session      *s,
             const GError *error)
{
  g_autoptr(EspalierTrainPage) self = session_get_page (s);
  g_autoptr(GError) cancelled = NULL;

  /* A stopped run is kept, unfinished; a failed one when it got anywhere. */
  if (error == NULL || s->epochs_done > 0)
    {
      espalier_run_set_finished (s->run, FALSE);
      espalier_project_add_run (s->project, s->run);
    }
  if (error == NULL)
    cancelled = g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CANCELLED, _("Training stopped"));
  /* A loss that turned NaN: the trainer went back to the last good weights; the
   * project keeps them. */
  if (g_error_matches (error, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC) && s->model != NULL)
    {
      espalier_project_set_model (s->project, g_steal_pointer (&s->model));
      if (self != NULL)
        {
          set_weights (self, es_model_copy (espalier_project_get_model (s->project)));
          if (self->two_d)
            boundary_request (self, es_model_copy (espalier_project_get_model (s->project)));
        }
    }
  session_disconnect_job (s);
  espalier_job_finish (s->job, error ? error : cancelled);

  if (self != NULL)
    {
      /* The weights as they ended (progress shows them only a few times a second). */
      if (s->model != NULL)
        {
          set_weights (self, es_model_copy (s->model));
          if (self->two_d)
            boundary_request (self, es_model_copy (s->model));
        }
      if (error != NULL)
        {
          /* A loss gone bad says itself that training stopped, and where. */
          g_autofree char *text = g_error_matches (error, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC)
                                  ? g_strdup (error->message)
                                  : g_strdup_printf (_("Training failed: %s"), error->message);

          set_message (self, text, TRUE);
          set_progress (self, s, 0, _("Failed"));
        }
      else
        {
          g_autofree char *text = g_strdup_printf (
              g_dngettext (NULL, "Stopped after %u epoch; the run is kept as unfinished.",
                           "Stopped after %u epochs; the run is kept as unfinished.",
                           s->epochs_done),
              s->epochs_done);

          set_message (self, text, FALSE);
          set_progress (self, s, (double) s->epochs_done / MAX (s->opts.epochs, 1), _("Stopped"));
        }
      self->session = NULL;
      session_release (s);
      update_state (self);
      queue_plan (self);
      notify_state (self);
    }
}

/* Test metrics and latency ------------------------------------------------------------ */

typedef struct {
  Session          *session;             /* a reference */
  guint32          *rows;                /* (n_rows) the test split, or the next best */
  guint             n_rows;
  gboolean          is_test;             /* rows are the test split */
  const char       *rows_name;           /* "test", "validation", "training" (translated) */
  EsLossKind        loss;
  guint             threads;
  EspalierMetrics   metrics;
  EspalierVariant  *variant;
  GError           *error;               /* what went wrong, the rest still done */
} FinishData;

static void
finish_data_free (gpointer data)
{
  FinishData *fd = data;

  session_release_later (fd->session);
  g_free (fd->rows);
  espalier_metrics_clear (&fd->metrics);
  g_clear_object (&fd->variant);
  g_clear_error (&fd->error);
  g_free (fd);
}

/* Worker: the session's model and dataset are not touched by anyone else meanwhile. */
static void
finish_thread (GTask        *task,
               gpointer      source,
               gpointer      task_data,
               GCancellable *cancellable)
{
  FinishData *fd = task_data;
  Session *s = fd->session;
  GError *error = NULL;

  if (fd->n_rows > 0
      && !espalier_evaluate (s->model, s->dataset, fd->rows, fd->n_rows, fd->loss, fd->threads,
                             &fd->metrics, &error))
    g_propagate_prefixed_error (&fd->error, error, "%s", _("The test split could not be evaluated: "));
  fd->variant = espalier_variant_new ("baseline", "baseline", es_model_copy (s->model));
  if (fd->metrics.rows > 0)
    espalier_variant_set_accuracy (fd->variant, fd->metrics.accuracy);
  if (!espalier_variant_measure_latency (fd->variant, 1, LATENCY_SECONDS, &error))
    {
      if (fd->error == NULL)
        g_propagate_prefixed_error (&fd->error, error, "%s", _("The latency could not be measured: "));
      else
        g_clear_error (&error);
    }
  g_task_return_boolean (task, TRUE);
}

static void
finish_done (GObject      *source,
             GAsyncResult *result,
             gpointer      data)
{
  FinishData *fd = g_task_get_task_data (G_TASK (result));
  Session *s = fd->session;
  g_autoptr(EspalierTrainPage) self = session_get_page (s);
  g_autofree char *description = NULL;

  g_task_propagate_boolean (G_TASK (result), NULL);

  if (fd->metrics.rows > 0 && fd->is_test)
    espalier_run_set_test (s->run, &fd->metrics);
  espalier_run_set_finished (s->run, TRUE);
  espalier_project_add_run (s->project, s->run);
  if (fd->is_test || fd->metrics.rows == 0)
    description = g_strdup_printf (_("Trained in %s"), espalier_run_get_name (s->run));
  else
    description = g_strdup_printf (_("Trained in %s; accuracy on the %s rows (no test split)"),
                                   espalier_run_get_name (s->run), fd->rows_name);
  espalier_variant_set_description (fd->variant, description);
  espalier_project_set_model (s->project, g_steal_pointer (&s->model));
  espalier_project_add_variant (s->project, fd->variant);
  session_disconnect_job (s);
  espalier_job_finish (s->job, fd->error);

  if (self != NULL)
    {
      g_autofree char *text = NULL;
      double latency = espalier_variant_get_latency_us (fd->variant);
      EsModel *model = espalier_project_get_model (s->project);
      /* Where the run trained, as the trainer made its backend (a device that could not
       * start left it on the CPU). The latency is always the CPU's
       * (espalier_variant_measure_latency): said as such, so that it is not read as the
       * GPU's after a GPU run. */
      gboolean on_gpu = s->trainer != NULL
                        && espalier_trainer_get_device_used (s->trainer) >= 0;

      set_weights (self, es_model_copy (model));
      if (self->two_d)
        boundary_request (self, es_model_copy (model));

      if (fd->metrics.rows > 0)
        {
          g_autofree char *title = g_strdup_printf (_("Confusion Matrix (%s)"), fd->rows_name);
          g_autofree char *accuracy = g_strdup_printf (
              fd->is_test ? _("test accuracy %.1f %% on %u rows")
                          : _("accuracy %.1f %% on the %u %s rows (there is no test split)"),
              100 * fd->metrics.accuracy, fd->metrics.rows, fd->rows_name);

          set_confusion (self, &fd->metrics, s->dataset, title);
          if (isfinite (latency) && on_gpu)
            /* TRANSLATORS: %s is the accuracy above; the latency is measured on the
             * CPU whatever the training ran on */
            text = g_strdup_printf (_("Done: trained on the GPU; %s. Inference latency of the "
                                      "trained model on the CPU: %.3g µs per sample (batch 1, "
                                      "one thread)."), accuracy, latency);
          else if (isfinite (latency))
            text = g_strdup_printf (_("Done: %s. Inference latency of the trained model on the "
                                      "CPU: %.3g µs per sample (batch 1, one thread)."),
                                    accuracy, latency);
          else if (on_gpu)
            text = g_strdup_printf (_("Done: trained on the GPU; %s."), accuracy);
          else
            text = g_strdup_printf (_("Done: %s."), accuracy);
        }
      else
        text = g_strdup (on_gpu ? _("Done: trained on the GPU. There are no rows to measure "
                                    "the model on.")
                                : _("Done. There are no rows to measure the model on."));
      if (fd->error != NULL)
        {
          g_autofree char *both = g_strdup_printf ("%s\n%s", text, fd->error->message);

          set_message (self, both, TRUE);
        }
      else
        set_message (self, text, FALSE);
      set_progress (self, s, 1, _("Done"));
      self->session = NULL;
      session_release (s);
      update_state (self);
      queue_plan (self);
      notify_state (self);
    }
}

static gboolean
pulse_cb (gpointer data)
{
  EspalierTrainPage *self = data;

  if (self->session == NULL || self->session->phase != PHASE_EVALUATING)
    {
      self->pulse_id = 0;
      return G_SOURCE_REMOVE;
    }
  gtk_progress_bar_pulse (self->progress_bar);
  return G_SOURCE_CONTINUE;
}

static void
begin_finish (Session *s)
{
  g_autoptr(EspalierTrainPage) self = session_get_page (s);
  g_autoptr(GTask) task = NULL;
  const EspalierSplit *split = espalier_trainer_get_split (s->trainer);
  FinishData *fd = g_new0 (FinishData, 1);

  s->phase = PHASE_EVALUATING;
  fd->session = session_ref (s);
  /* The test split; a set trained on all its rows (the playground) is measured on
   * the validation or training rows instead, and says so. */
  if (split != NULL)
    {
      GArray *rows = split->test;

      fd->is_test = TRUE;
      fd->rows_name = C_("split", "test");
      if (rows->len == 0)
        {
          rows = split->val->len > 0 ? split->val : split->train;
          fd->rows_name = split->val->len > 0 ? C_("split", "validation") : C_("split", "training");
          fd->is_test = FALSE;
        }
      fd->n_rows = rows->len;
      fd->rows = g_memdup2 (rows->data, (gsize) fd->n_rows * sizeof (guint32));
    }
  fd->loss = s->opts.engine.loss;
  fd->threads = s->opts.threads;
  if (self != NULL)
    {
      set_progress (self, s, -1, _("Measuring accuracy and latency…"));
      if (self->pulse_id == 0)
        self->pulse_id = g_timeout_add (100, pulse_cb, self);
      update_state (self);
    }
  task = g_task_new (NULL, NULL, finish_done, NULL);
  g_task_set_source_tag (task, begin_finish);
  g_task_set_task_data (task, fd, finish_data_free);
  g_task_set_name (task, "[espalier] test metrics");
  g_task_run_in_thread (task, finish_thread);
}

/* Training progress ------------------------------------------------------------------- */

/* Small sets run thousands of epochs a second: every record is kept, but what costs
 * more than an append (labels, the running loss, copies of the weights) is limited to
 * a few updates a second; the end of the run shows the final state. */
static void
on_step (EspalierTrainPage      *self,
         Session                *s,
         const EspalierProgress *p)
{
  guint epoch = s->segment_base + p->epoch;
  double x = (epoch - 1) + (double) p->step / MAX (p->steps, 1);
  double fraction = x / MAX (s->opts.epochs, 1);
  guint64 rows;
  g_autofree char *eta = NULL;
  g_autofree char *text = NULL;
  g_autofree char *status = NULL;

  s->elapsed = p->elapsed;
  s->segment_batches = (guint64) (p->epoch - 1) * p->steps + p->step;
  /* Rows over wall time, validation passes included (the last batch of an epoch
   * counts whole); the last step plots one too, so a short run gets its point. */
  rows = s->segment_batches * s->opts.batch_size;
  if (p->elapsed - s->last_rate_t >= RATE_INTERVAL
      || (epoch == s->opts.epochs && p->step == p->steps && p->elapsed > s->last_rate_t))
    {
      s->rate = (double) (rows - s->last_rate_rows) / (p->elapsed - s->last_rate_t);
      espalier_series_append (self->throughput, s->time_offset + p->elapsed, s->rate);
      s->last_rate_t = p->elapsed;
      s->last_rate_rows = rows;
    }
  if (p->elapsed - s->last_ui_t < UI_INTERVAL)
    return;
  s->last_ui_t = p->elapsed;
  if (isfinite (p->loss))
    {
      guint n = espalier_series_get_n_points (self->running_loss);

      /* Epochs shorter than the update interval leave no running curve: break the
       * line rather than draw one across epochs it never saw. */
      if (n > 0 && x - espalier_series_get_x (self->running_loss)[n - 1] > 1.0)
        espalier_series_append (self->running_loss, NAN, NAN);
      espalier_series_append (self->running_loss, x, p->loss);
    }
  eta = format_duration (p->eta);
  text = g_strdup_printf (_("Epoch %u of %u · %s left"), epoch, s->opts.epochs, eta);
  set_progress (self, s, fraction, text);
  if (s->rate > 0)
    status = g_strdup_printf (_("Step %u of %u · loss %.4f · accuracy %.1f %% · %'.0f samples/s"),
                              p->step, p->steps, p->loss, 100 * p->accuracy, s->rate);
  else
    status = g_strdup_printf (_("Step %u of %u · loss %.4f · accuracy %.1f %%"),
                              p->step, p->steps, p->loss, 100 * p->accuracy);
  gtk_label_set_text (self->status_label, status);
}

static void
on_epoch (EspalierTrainPage      *self,
          Session                *s,
          const EspalierProgress *p)
{
  EspalierEpochRecord rec = *p->record;

  rec.epoch = s->segment_base + p->record->epoch;
  s->epochs_done = rec.epoch;
  s->elapsed = p->elapsed;
  espalier_run_add_record (s->run, &rec);
  append_record (self, &rec);
  if (p->elapsed - s->last_weights_t < WEIGHTS_INTERVAL && rec.epoch < s->opts.epochs)
    return;
  s->last_weights_t = p->elapsed;
  if (p->val_metrics != NULL && p->val_metrics->confusion != NULL)
    set_confusion (self, p->val_metrics, s->dataset, _("Confusion Matrix (validation)"));
  if (p->snapshot != NULL)
    set_weights (self, es_model_copy (p->snapshot));
}

static void
on_progress (const EspalierProgress *p,
             gpointer                data)
{
  Session *s = data;
  g_autoptr(EspalierTrainPage) self = session_get_page (s);

  /* A paused worker may still have progress on its way: it belongs to the run. */
  if (self == NULL || (s->phase != PHASE_TRAINING && s->phase != PHASE_PAUSED))
    return;
  switch (p->kind)
    {
    case ESPALIER_PROGRESS_START:
      s->steps_per_epoch = p->steps;
      if (s->cosine_steps == 0)
        s->cosine_steps = s->opts.engine.total_steps > 0
                          ? s->opts.engine.total_steps
                          : (gint64) s->opts.epochs * p->steps / MAX (s->opts.engine.accum_steps, 1);
      break;
    case ESPALIER_PROGRESS_STEP:
      on_step (self, s, p);
      break;
    case ESPALIER_PROGRESS_EPOCH:
      on_epoch (self, s, p);
      break;
    case ESPALIER_PROGRESS_MESSAGE:
      if (p->message != NULL)
        {
          set_message (self, p->message, FALSE);
          espalier_show_toast (GTK_WIDGET (self), p->message);
        }
      break;
    default:
      break;
    }
  /* mixed precision that fell back to fp32 for want of memory: said where the memory
   * plan is shown (and once as a toast) */
  if (p->fp32_products > s->fp32_products)
    {
      g_autofree char *msg = espalier_fp32_products_message (p->fp32_products);

      if (s->fp32_products == 0)
        espalier_show_toast (GTK_WIDGET (self), msg);
      s->fp32_products = self->fp32_products = p->fp32_products;
      adw_expander_row_set_subtitle (self->plan_row, msg);
    }
  if (p->snapshot != NULL && self->two_d)
    boundary_request (self, es_model_copy (p->snapshot));
  if (p->profile != NULL)
    g_signal_emit (self, signals[SIGNAL_PROFILE], 0, p->profile);
}

static void
on_trained (GObject      *source,
            GAsyncResult *result,
            gpointer      data)
{
  Session *s = data;
  g_autoptr(GError) error = NULL;
  gboolean ok = espalier_trainer_run_finish (ESPALIER_TRAINER (source), result, &error);

  /* the run ended in order (finished, stopped, failed): no state to come back to */
  if (s->ck_path != NULL)
    g_unlink (s->ck_path);

  s->opt_steps_done += (gint64) (s->segment_batches / (guint64) MAX (s->opts.engine.accum_steps, 1));
  s->time_offset += s->elapsed;
  s->segment_batches = 0;
  s->elapsed = 0;

  if (ok)
    begin_finish (s);
  else if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    session_end (s, NULL);
  else
    session_end (s, error);
  session_release (s);
}

static void
job_cancelled_cb (GCancellable      *cancellable,
                  EspalierTrainPage *self)
{
  espalier_train_page_stop (self);
}

/* The last good state on disk ---------------------------------------------------------
 * A run writes a checkpoint (espalier-checkpoint.h) every CHECKPOINT_EVERY optimizer
 * steps into the project's cache directory, the user cache directory's
 * espalier/projects/<SHA-1 of the project file's URI>, or espalier/unsaved for a
 * project not saved yet; the run removes it when it ends, however it ends. One found
 * when a project is opened was left by a run that crashed or was killed: the page
 * offers to resume from it when it fits the project's model.
 * Two windows on unsaved projects (or on the same file) must not share one: a page
 * holds a slot of that directory, the directory itself or DIR-1, DIR-2…, the first
 * whose lock file it can lock (flock), for as long as it shows the project. A page
 * opened after a crash gets the first free slot, the crashed process's. */

#define CHECKPOINT_SLOTS 32

static void
release_slot (EspalierTrainPage *self)
{
  if (self->slot_fd >= 0)
    close (self->slot_fd);   /* and with it the lock */
  self->slot_fd = -1;
  g_clear_pointer (&self->slot_base, g_free);
  g_clear_pointer (&self->slot_dir, g_free);
}

/* The directory of the slot this page holds for base, taken when needed. */
static const char *
checkpoint_slot (EspalierTrainPage *self,
                 const char        *base)
{
  if (self->slot_base != NULL && strcmp (self->slot_base, base) == 0)
    return self->slot_dir;
  release_slot (self);
  self->slot_base = g_strdup (base);
  for (guint k = 0; k < CHECKPOINT_SLOTS; k++)
    {
      g_autofree char *dir = k == 0 ? g_strdup (base) : g_strdup_printf ("%s-%u", base, k);
      g_autofree char *lock = g_build_filename (dir, "lock", NULL);
      int fd;

      if (g_mkdir_with_parents (dir, 0700) != 0)
        break;
      fd = open (lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      if (fd >= 0 && flock (fd, LOCK_EX | LOCK_NB) == 0)
        {
          self->slot_fd = fd;
          self->slot_dir = g_steal_pointer (&dir);
          return self->slot_dir;
        }
      if (fd >= 0)
        close (fd);
    }
  /* no lock to be had (a file system without them): the first slot, shared */
  self->slot_dir = g_strdup (base);
  return self->slot_dir;
}

static char *
checkpoint_path (EspalierTrainPage *self,
                 EspalierProject   *project)
{
  GFile *file = espalier_project_get_file (project);
  g_autofree char *uri = file != NULL ? g_file_get_uri (file) : NULL;
  g_autofree char *key = uri != NULL ? g_compute_checksum_for_string (G_CHECKSUM_SHA1, uri, -1)
                                     : NULL;
  g_autofree char *base = key == NULL
                          ? g_build_filename (g_get_user_cache_dir (), "espalier", "unsaved", NULL)
                          : g_build_filename (g_get_user_cache_dir (), "espalier", "projects",
                                              key, NULL);

  return g_build_filename (checkpoint_slot (self, base), "train.ckpt", NULL);
}

static void
hide_leftover (EspalierTrainPage *self)
{
  g_clear_pointer (&self->leftover, espalier_checkpoint_free);
  g_clear_pointer (&self->leftover_path, g_free);
  gtk_widget_set_visible (self->resume_box, FALSE);
}

/* Offer to resume from a checkpoint a crashed run of this project left behind. */
static void
check_leftover (EspalierTrainPage *self)
{
  g_autofree char *path = NULL;
  g_autofree char *text = NULL;
  g_autoptr(GError) error = NULL;
  EspalierCheckpoint *ck;
  EsModel *model;

  hide_leftover (self);
  if (self->project == NULL || self->session != NULL)
    return;
  path = checkpoint_path (self, self->project);
  if (!g_file_test (path, G_FILE_TEST_IS_REGULAR))
    return;
  ck = espalier_checkpoint_load (path, &error);
  if (ck == NULL)
    {
      g_message ("Ignoring the checkpoint %s: %s", path, error->message);
      return;
    }
  model = espalier_model_doc_build (espalier_project_get_model_doc (self->project), 0, NULL);
  if (model == NULL || !espalier_checkpoint_fits_model (ck, model, NULL))
    {
      g_clear_pointer (&model, es_model_free);
      espalier_checkpoint_free (ck);
      return;
    }
  es_model_free (model);
  self->leftover = ck;
  self->leftover_path = g_steal_pointer (&path);
  text = g_strdup_printf (_("Resume training from step %lld (epoch %u)?"),
                          (long long) ck->info.step, ck->info.epoch);
  gtk_label_set_text (self->resume_label, text);
  gtk_widget_set_visible (self->resume_box, TRUE);
}

static void
resume_clicked_cb (EspalierTrainPage *self)
{
  if (self->leftover == NULL || self->session != NULL)
    return;
  self->resuming = TRUE;
  espalier_train_page_start (self);
  self->resuming = FALSE;
}

static void
discard_clicked_cb (EspalierTrainPage *self)
{
  if (self->leftover_path != NULL)
    g_unlink (self->leftover_path);
  hide_leftover (self);
}

/* Before a segment runs: where its checkpoints go, and the checkpoint to resume from
 * when the user asked to (its finished epochs then join the run and the charts). */
static gboolean
segment_checkpoint (EspalierTrainPage *self,
                    Session           *s,
                    GError           **error)
{
  g_autofree char *dir = NULL;

  if (s->ck_path == NULL)
    s->ck_path = checkpoint_path (self, s->project);
  dir = g_path_get_dirname (s->ck_path);
  if (g_mkdir_with_parents (dir, 0700) == 0)
    espalier_trainer_set_checkpoint (s->trainer, s->ck_path, CHECKPOINT_EVERY);
  if (s->resume == NULL)
    return TRUE;
  if (!espalier_trainer_set_resume (s->trainer, s->ck_path, NULL, error))
    return FALSE;
  for (guint i = 0; i < s->resume->history->len; i++)
    {
      const EspalierEpochRecord *rec = &g_array_index (s->resume->history, EspalierEpochRecord, i);

      espalier_run_add_record (s->run, rec);
      append_record (self, rec);
    }
  s->resumed_epochs = s->resume->history->len;
  return TRUE;
}

/* Run the next segment of s: a trainer for the epochs left on the current weights. */
static void
start_segment (EspalierTrainPage *self,
               Session           *s)
{
  EspalierTrainOptions o;
  g_autofree char *plan = NULL;

  segment_options (s, &o);
  g_clear_object (&s->trainer);
  s->trainer = espalier_trainer_new (s->dataset, s->model, &o);
  /* Snapshots feed the live decision boundary; epochs bring one for the histograms. */
  if (self->two_d)
    espalier_trainer_set_snapshot_interval (s->trainer, SNAPSHOT_INTERVAL);
  /* "Profile While Training" (the Profile page's switch): the page follows the run. */
  if (self->settings != NULL && settings_get_boolean (self, "profiling"))
    espalier_trainer_set_profiling (s->trainer, TRUE, 0, FALSE);
  plan = espalier_trainer_describe_plan (s->trainer);
  gtk_label_set_text (self->plan_label, g_strchomp (plan));
  self->fp32_products = 0;
  {
    g_autoptr(GError) error = NULL;

    if (!segment_checkpoint (self, s, &error))
      {
        /* a checkpoint that cannot be resumed: the run starts afresh and says why */
        g_autofree char *text = g_strdup_printf (_("Starting afresh: %s"), error->message);

        set_message (self, text, TRUE);
        g_clear_pointer (&s->resume, espalier_checkpoint_free);
      }
  }

  g_clear_object (&s->cancellable);
  s->cancellable = g_cancellable_new ();
  s->phase = PHASE_TRAINING;
  s->segment_base = s->epochs_done;
  s->last_rate_t = 0;
  s->last_rate_rows = 0;
  s->rate = 0;
  s->last_ui_t = -1;
  s->last_weights_t = -1;
  truncate_series (self->running_loss, s->epochs_done);
  s->epochs_done += s->resumed_epochs;   /* segment_base stays: records count from 1 */
  espalier_trainer_run_async (s->trainer, s->cancellable, on_progress, session_ref (s),
                              session_release_later, on_trained, session_ref (s));
  update_state (self);
  notify_state (self);
}

/* Callbacks ------------------------------------------------------------------------- */

static void
start_clicked_cb (EspalierTrainPage *self)
{
  espalier_train_page_start (self);
}

static void
pause_clicked_cb (EspalierTrainPage *self)
{
  espalier_train_page_pause (self);
}

static void
stop_clicked_cb (EspalierTrainPage *self)
{
  espalier_train_page_stop (self);
}

static void
option_changed_cb (EspalierTrainPage *self)
{
  EspalierTrainOptions o;
  guint schedule = adw_combo_row_get_selected (self->schedule_row);

  gtk_widget_set_visible (self->step_size_row, schedule < G_N_ELEMENTS (schedule_kinds)
                                               && schedule_kinds[schedule] == ES_LR_STEP);
  gtk_widget_set_visible (self->gamma_row, schedule < G_N_ELEMENTS (schedule_kinds)
                                           && schedule_kinds[schedule] == ES_LR_STEP);
  if (self->syncing || self->project == NULL)
    return;
  read_controls (self, &o);
  self->syncing = TRUE;
  espalier_project_set_train_options (self->project, &o);
  self->syncing = FALSE;
  queue_plan (self);
}

/* The rate goes to every Dropout layer of the model (the doc merges the edits of one
 * layer within a second into one undo step). */
static void
dropout_changed_cb (EspalierTrainPage *self)
{
  EspalierModelDoc *doc;
  float rate = (float) gtk_spin_button_get_value (self->dropout_spin);
  guint n;

  if (self->syncing || self->project == NULL)
    return;
  doc = espalier_project_get_model_doc (self->project);
  n = espalier_model_doc_get_n_layers (doc);
  self->syncing = TRUE;
  for (guint i = 0; i < n; i++)
    {
      EsLayerSpec spec = *espalier_model_doc_get_layer (doc, i);

      if (spec.kind == ES_LAYER_DROPOUT && spec.rate != rate)
        {
          spec.rate = rate;
          espalier_model_doc_set_layer (doc, i, &spec);
        }
    }
  self->syncing = FALSE;
}

static void
device_toggled_cb (EspalierTrainPage *self)
{
  g_autoptr(GSettingsSchema) schema = NULL;

  if (self->syncing || self->settings == NULL)
    return;
  g_object_get (self->settings, "settings-schema", &schema, NULL);
  if (g_settings_schema_has_key (schema, "device"))
    g_settings_set_string (self->settings, "device",
                           gtk_check_button_get_active (self->gpu_check) ? "cuda" : "cpu");
}

static void
layer_selected_cb (EspalierTrainPage *self)
{
  if (!self->syncing)
    update_histogram (self);
}

static void
settings_changed_cb (EspalierTrainPage *self)
{
  update_device_rows (self);
  queue_plan (self);
}

static void
project_changed_cb (EspalierTrainPage *self)
{
  if (!self->syncing)
    sync_controls (self);
  update_state (self);
  queue_plan (self);
}

static void
doc_changed_cb (EspalierTrainPage *self)
{
  if (!self->syncing)
    sync_dropout (self);
  update_state (self);
  queue_plan (self);
}

static void
dataset_changed_cb (EspalierTrainPage *self)
{
  update_dataset (self);
  if (self->session == NULL)
    show_project_state (self);
  update_state (self);
}

static void
runs_changed_cb (EspalierTrainPage *self)
{
  if (self->session == NULL)
    show_project_state (self);
}

/* Show what the project holds when no run is live: the last run's curves and test
 * confusion matrix, the trained model's weights and decision boundary. */
static void
show_project_state (EspalierTrainPage *self)
{
  GListModel *runs;
  guint n;
  EsModel *model;

  clear_live_charts (self);
  espalier_heatmap_layer_set_data (ESPALIER_HEATMAP_LAYER (self->confusion_layer), NULL, NULL,
                                   0, 0, 0, 1, 0, 1);
  espalier_chart_set_title (self->confusion_chart, _("Confusion Matrix"));
  if (self->project == NULL)
    {
      set_weights (self, NULL);
      return;
    }

  runs = espalier_project_get_runs (self->project);
  n = g_list_model_get_n_items (runs);
  if (n > 0)
    {
      g_autoptr(EspalierRun) run = g_list_model_get_item (runs, n - 1);
      GArray *history = espalier_run_get_history (run);
      const EspalierMetrics *test = espalier_run_get_test (run);

      for (guint i = 0; i < history->len; i++)
        append_record (self, &g_array_index (history, EspalierEpochRecord, i));
      if (test != NULL && test->rows > 0 && test->confusion != NULL)
        set_confusion (self, test, espalier_project_get_dataset (self->project),
                       _("Confusion Matrix (test)"));
    }

  /* The trained model; a reopened project has it as its baseline variant. */
  model = espalier_project_get_model (self->project);
  if (model == NULL)
    {
      GListModel *variants = espalier_project_get_variants (self->project);

      for (guint i = 0; i < g_list_model_get_n_items (variants) && model == NULL; i++)
        {
          g_autoptr(EspalierVariant) v = g_list_model_get_item (variants, i);

          if (g_strcmp0 (espalier_variant_get_kind (v), "baseline") == 0)
            model = espalier_variant_get_model (v);
        }
    }
  set_weights (self, model ? es_model_copy (model) : NULL);
  if (model != NULL && self->two_d)
    boundary_request (self, es_model_copy (model));
}

/* Stop listening to the project, and stop its run: it is filed with that project,
 * unfinished. */
static void
detach_project (EspalierTrainPage *self)
{
  if (self->project != NULL)
    {
      g_signal_handlers_disconnect_by_data (self->project, self);
      g_signal_handlers_disconnect_by_data (espalier_project_get_model_doc (self->project), self);
      g_signal_handlers_disconnect_by_data (espalier_project_get_runs (self->project), self);
    }
  if (self->session != NULL)
    {
      Session *s = g_steal_pointer (&self->session);

      s->stop_requested = TRUE;
      if (s->phase == PHASE_TRAINING || s->phase == PHASE_PAUSED)
        g_cancellable_cancel (s->cancellable);
      session_release (s);
      notify_state (self);
    }
}

/* GObject ----------------------------------------------------------------------------- */

static void
espalier_train_page_dispose (GObject *object)
{
  EspalierTrainPage *self = ESPALIER_TRAIN_PAGE (object);

  detach_project (self);
  g_clear_object (&self->project);
  g_cancellable_cancel (self->boundary_cancellable);
  g_clear_handle_id (&self->plan_idle_id, g_source_remove);
  g_clear_handle_id (&self->pulse_id, g_source_remove);
  g_clear_object (&self->settings);
  gtk_widget_dispose_template (GTK_WIDGET (self), ESPALIER_TYPE_TRAIN_PAGE);
  G_OBJECT_CLASS (espalier_train_page_parent_class)->dispose (object);
}

static void
espalier_train_page_finalize (GObject *object)
{
  EspalierTrainPage *self = ESPALIER_TRAIN_PAGE (object);

  g_clear_object (&self->boundary_cancellable);
  g_clear_pointer (&self->boundary_pending, es_model_free);
  g_clear_pointer (&self->weights, es_model_free);
  g_clear_pointer (&self->leftover, espalier_checkpoint_free);
  g_clear_pointer (&self->leftover_path, g_free);
  release_slot (self);
  g_clear_pointer (&self->weight_layers, g_array_unref);
  g_clear_object (&self->train_loss);
  g_clear_object (&self->val_loss);
  g_clear_object (&self->running_loss);
  g_clear_object (&self->train_accuracy);
  g_clear_object (&self->val_accuracy);
  g_clear_object (&self->throughput);
  g_clear_object (&self->points);
  g_clear_object (&self->boundary_layer);
  g_clear_object (&self->confusion_layer);
  g_clear_object (&self->histogram);
  G_OBJECT_CLASS (espalier_train_page_parent_class)->finalize (object);
}

static void
espalier_train_page_get_property (GObject    *object,
                                  guint       prop_id,
                                  GValue     *value,
                                  GParamSpec *pspec)
{
  EspalierTrainPage *self = ESPALIER_TRAIN_PAGE (object);

  switch (prop_id)
    {
    case PROP_PROJECT:
      g_value_set_object (value, self->project);
      break;
    case PROP_TRAINING:
      g_value_set_boolean (value, espalier_train_page_get_training (self));
      break;
    case PROP_PAUSED:
      g_value_set_boolean (value, espalier_train_page_get_paused (self));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_train_page_set_property (GObject      *object,
                                  guint         prop_id,
                                  const GValue *value,
                                  GParamSpec   *pspec)
{
  EspalierTrainPage *self = ESPALIER_TRAIN_PAGE (object);

  switch (prop_id)
    {
    case PROP_PROJECT:
      espalier_train_page_set_project (self, g_value_get_object (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_train_page_class_init (EspalierTrainPageClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->dispose = espalier_train_page_dispose;
  object_class->finalize = espalier_train_page_finalize;
  object_class->get_property = espalier_train_page_get_property;
  object_class->set_property = espalier_train_page_set_property;

  properties[PROP_PROJECT] =
    g_param_spec_object ("project", NULL, NULL, ESPALIER_TYPE_PROJECT,
                         G_PARAM_READWRITE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS);
  properties[PROP_TRAINING] =
    g_param_spec_boolean ("training", NULL, NULL, FALSE,
                          G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  properties[PROP_PAUSED] =
    g_param_spec_boolean ("paused", NULL, NULL, FALSE,
                          G_PARAM_READABLE | G_PARAM_STATIC_STRINGS);
  g_object_class_install_properties (object_class, N_PROPS, properties);
  signals[SIGNAL_PROFILE] = g_signal_new ("profile", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                                          0, NULL, NULL, NULL, G_TYPE_NONE, 1, G_TYPE_POINTER);

  g_type_ensure (ESPALIER_TYPE_CHART);
  gtk_widget_class_set_template_from_resource (widget_class,
                                               "/io/github/espalier/Espalier/ui/espalier-train-page.ui");
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, start_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, pause_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, stop_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, progress_bar);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, status_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, message_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, resume_box);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, resume_label);
  gtk_widget_class_bind_template_callback (widget_class, resume_clicked_cb);
  gtk_widget_class_bind_template_callback (widget_class, discard_clicked_cb);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, options_box);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, optimizer_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, lr_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, schedule_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, step_size_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, step_size_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, gamma_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, gamma_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, warmup_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, batch_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, epochs_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, accum_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, patience_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, l1_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, l2_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, dropout_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, dropout_spin);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, cpu_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, cpu_check);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, gpu_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, gpu_check);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, precision_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, precision_switch);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, plan_row);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, plan_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, chart_grid);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, loss_chart);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, accuracy_chart);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, boundary_chart);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, confusion_chart);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, weights_overlay);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, weights_chart);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, throughput_chart);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, layer_dropdown);
  gtk_widget_class_bind_template_child (widget_class, EspalierTrainPage, layer_list);
  gtk_widget_class_bind_template_callback (widget_class, start_clicked_cb);
  gtk_widget_class_bind_template_callback (widget_class, pause_clicked_cb);
  gtk_widget_class_bind_template_callback (widget_class, stop_clicked_cb);
  gtk_widget_class_bind_template_callback (widget_class, option_changed_cb);
  gtk_widget_class_bind_template_callback (widget_class, dropout_changed_cb);
  gtk_widget_class_bind_template_callback (widget_class, device_toggled_cb);
  gtk_widget_class_bind_template_callback (widget_class, layer_selected_cb);
}

static void
espalier_train_page_init (EspalierTrainPage *self)
{
  GSettingsSchemaSource *source = g_settings_schema_source_get_default ();
  g_autoptr(GSettingsSchema) schema = NULL;

  self->slot_fd = -1;
  gtk_widget_init_template (GTK_WIDGET (self));

  self->boundary_cancellable = g_cancellable_new ();
  self->weight_layers = g_array_new (FALSE, FALSE, sizeof (int));
  /* Preferences, when the schema is installed (tests run without it). */
  if (source != NULL)
    schema = g_settings_schema_source_lookup (source, SETTINGS_SCHEMA, TRUE);
  if (schema != NULL)
    {
      self->settings = g_settings_new_full (schema, NULL, NULL);
      g_signal_connect_object (self->settings, "changed", G_CALLBACK (settings_changed_cb),
                               self, G_CONNECT_SWAPPED);
    }

  setup_charts (self);
  sync_controls (self);
  update_device_rows (self);
  update_dataset (self);
  set_weights (self, NULL);
  update_state (self);
  queue_plan (self);
}

/* Public API ------------------------------------------------------------------------- */

EspalierProject *
espalier_train_page_get_project (EspalierTrainPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_TRAIN_PAGE (self), NULL);
  return self->project;
}

void
espalier_train_page_set_project (EspalierTrainPage *self,
                                 EspalierProject   *project)
{
  g_return_if_fail (ESPALIER_IS_TRAIN_PAGE (self));
  g_return_if_fail (project == NULL || ESPALIER_IS_PROJECT (project));

  if (self->project == project)
    return;

  detach_project (self);
  g_set_object (&self->project, project);
  if (project != NULL)
    {
      g_signal_connect_swapped (project, "changed", G_CALLBACK (project_changed_cb), self);
      g_signal_connect_swapped (project, "notify::dataset", G_CALLBACK (dataset_changed_cb), self);
      g_signal_connect_swapped (project, "notify::model", G_CALLBACK (runs_changed_cb), self);
      g_signal_connect_swapped (espalier_project_get_model_doc (project), "changed",
                                G_CALLBACK (doc_changed_cb), self);
      g_signal_connect_swapped (espalier_project_get_runs (project), "items-changed",
                                G_CALLBACK (runs_changed_cb), self);
    }

  set_message (self, NULL, FALSE);
  check_leftover (self);
  gtk_progress_bar_set_fraction (self->progress_bar, 0);
  gtk_progress_bar_set_text (self->progress_bar, _("Not started"));
  sync_controls (self);
  update_dataset (self);
  show_project_state (self);
  update_state (self);
  queue_plan (self);
  g_object_notify_by_pspec (G_OBJECT (self), properties[PROP_PROJECT]);
}

void
espalier_train_page_start (EspalierTrainPage *self)
{
  g_autofree char *blocker = NULL;
  g_autofree char *name = NULL;
  g_autofree char *spec = NULL;
  g_autoptr(GError) error = NULL;
  EspalierModelDoc *doc;
  Session *s;
  EsModel *model;

  g_return_if_fail (ESPALIER_IS_TRAIN_PAGE (self));

  if (self->session != NULL)
    {
      if (self->session->phase == PHASE_PAUSED)
        espalier_train_page_pause (self);
      return;
    }
  blocker = start_blocker (self);
  if (blocker != NULL)
    {
      /* The status line already says why; the toast answers the key press. */
      update_state (self);
      espalier_show_toast (GTK_WIDGET (self), blocker);
      return;
    }

  doc = espalier_project_get_model_doc (self->project);
  s = g_atomic_rc_box_new0 (Session);
  g_weak_ref_init (&s->page, self);
  s->project = g_object_ref (self->project);
  s->dataset = g_object_ref (espalier_project_get_dataset (self->project));
  run_options (self, &s->opts);
  model = espalier_model_doc_build (doc, s->opts.seed, &error);
  if (model == NULL)
    {
      g_autofree char *text = g_strdup_printf (_("The model cannot be built: %s"), error->message);

      set_message (self, text, TRUE);
      espalier_show_toast (GTK_WIDGET (self), text);
      session_release (s);
      return;
    }
  s->model = model;
  name = g_strdup_printf (_("Run %u"), g_list_model_get_n_items (espalier_project_get_runs (self->project)) + 1);
  spec = espalier_model_doc_to_spec (doc);
  s->run = espalier_run_new (name, spec, &s->opts);
  s->job = espalier_job_new (_("Training"));
  s->job_cancel_id = g_signal_connect_object (espalier_job_get_cancellable (s->job), "cancelled",
                                              G_CALLBACK (job_cancelled_cb), self, 0);
  self->session = s;
  if (self->resuming && self->leftover != NULL)
    {
      s->resume = g_steal_pointer (&self->leftover);
      s->ck_path = g_steal_pointer (&self->leftover_path);
    }
  hide_leftover (self);

  /* a CUDA device that cannot start is the trainer's first message */
  set_message (self, NULL, FALSE);
  clear_live_charts (self);
  espalier_heatmap_layer_set_data (ESPALIER_HEATMAP_LAYER (self->confusion_layer), NULL, NULL,
                                   0, 0, 0, 1, 0, 1);
  espalier_chart_set_title (self->confusion_chart, _("Confusion Matrix"));
  set_weights (self, es_model_copy (s->model));
  if (self->two_d)
    boundary_request (self, es_model_copy (s->model));
  espalier_job_show (s->job, GTK_WIDGET (self));
  set_progress (self, s, 0, _("Starting…"));
  start_segment (self, s);
}

void
espalier_train_page_stop (EspalierTrainPage *self)
{
  Session *s;

  g_return_if_fail (ESPALIER_IS_TRAIN_PAGE (self));

  s = self->session;
  if (s == NULL || s->phase == PHASE_EVALUATING || s->stop_requested)
    return;
  s->stop_requested = TRUE;
  /* A paused worker wakes up for the cancel too. */
  g_cancellable_cancel (s->cancellable);
  set_progress (self, s, gtk_progress_bar_get_fraction (self->progress_bar), _("Stopping…"));
  update_state (self);
}

void
espalier_train_page_pause (EspalierTrainPage *self)
{
  Session *s;

  g_return_if_fail (ESPALIER_IS_TRAIN_PAGE (self));

  s = self->session;
  if (s == NULL || s->stop_requested)
    return;
  if (s->phase == PHASE_PAUSED)
    {
      set_message (self, NULL, FALSE);
      s->phase = PHASE_TRAINING;
      espalier_trainer_set_paused (s->trainer, FALSE);
      set_progress (self, s, gtk_progress_bar_get_fraction (self->progress_bar), _("Resuming…"));
    }
  else if (s->phase == PHASE_TRAINING)
    {
      g_autofree char *text = g_strdup_printf (
          g_dngettext (NULL, "Paused after %u epoch", "Paused after %u epochs", s->epochs_done),
          s->epochs_done);

      s->phase = PHASE_PAUSED;
      espalier_trainer_set_paused (s->trainer, TRUE);
      set_progress (self, s, gtk_progress_bar_get_fraction (self->progress_bar), text);
    }
  else
    return;
  update_state (self);
  notify_state (self);
}

char *
espalier_train_page_get_checkpoint_path (EspalierTrainPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_TRAIN_PAGE (self), NULL);

  return self->project != NULL ? checkpoint_path (self, self->project) : NULL;
}

gboolean
espalier_train_page_get_training (EspalierTrainPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_TRAIN_PAGE (self), FALSE);
  return self->session != NULL;
}

gboolean
espalier_train_page_get_paused (EspalierTrainPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_TRAIN_PAGE (self), FALSE);
  return self->session != NULL && self->session->phase == PHASE_PAUSED;
}

EspalierChart *
espalier_train_page_get_loss_chart (EspalierTrainPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_TRAIN_PAGE (self), NULL);
  return self->loss_chart;
}

guint
espalier_train_page_get_boundary_updates (EspalierTrainPage *self)
{
  g_return_val_if_fail (ESPALIER_IS_TRAIN_PAGE (self), 0);
  return self->boundary_updates;
}
