/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-trainer.c: epochs over a dataset with the engine's EsTrainer: split, batcher
 * thread, per-epoch metrics on train and validation, early stopping, progress and
 * cancellation. It never touches GTK. */
#include "config.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>
#include <sys/resource.h>

#include "es-backend.h"
#include "espalier-distributed.h"
#include "espalier-error.h"
#include "espalier-split.h"
#include "espalier-trainer.h"

struct _EspalierTrainer
{
  GObject               parent_instance;

  EspalierDataset      *dataset;
  EsModel              *model;          /* borrowed */
  EspalierTrainOptions  opts;
  EspalierSplit        *split;
  GArray               *history;        /* EspalierEpochRecord */
  guint                 micro_batch;
  char                 *plan;
  double                snapshot_interval;  /* seconds between STEP snapshots, 0: none */
  /* Pause: the worker waits between steps while `paused` is set (atomic). */
  gint                  paused;
  GMutex                pause_lock;
  GCond                 pause_cond;

  /* Optimization hooks (see the header), applied to the EsTrainer of each run. */
  EsMask               *mask;           /* fixed mask, or NULL */
  EsMask               *run_mask;       /* the mask at the end of the last run, or NULL */
  gboolean              gradual;
  EspalierPruneSchedule schedule;       /* layers points into schedule_layers */
  gboolean             *schedule_layers;/* (n_layers) or NULL */
  GArray               *prune_events;   /* EspalierPruneEvent of the last run */
  const EsModel        *teacher;        /* borrowed */
  double                temperature, alpha;
  gboolean             *fq_layers;      /* (n_layers) or NULL: no fake quantization */
  gboolean              fq_reduce_range;
  float                *range_lo, *range_hi;  /* (n_layers) QAT input ranges of the last run */
  gboolean             *range_set;      /* (n_layers) */

  /* Data parallelism (espalier_trainer_set_distributed), borrowed, or NULL. */
  EspalierDistributed  *dist;

  /* Profiling (espalier_trainer_set_profiling). */
  gboolean              prof_on, prof_trace;
  guint                 prof_max_steps;
  EspalierProfile      *profile;        /* of the last run, or NULL */
};

G_DEFINE_FINAL_TYPE (EspalierTrainer, espalier_trainer, G_TYPE_OBJECT)

void
espalier_train_options_init (EspalierTrainOptions *opts)
{
  memset (opts, 0, sizeof *opts);
  es_train_config_default (&opts->engine);
  opts->epochs = 10;
  opts->batch_size = 32;
  opts->val_fraction = 0.1;
  opts->test_fraction = 0.2;
}

void
espalier_metrics_clear (EspalierMetrics *m)
{
  g_clear_pointer (&m->confusion, g_free);
  memset (m, 0, sizeof *m);
}

double
espalier_metrics_class_accuracy (const EspalierMetrics *m, guint k)
{
  guint64 row = 0;

  if (m->confusion == NULL || k >= m->n_classes)
    return NAN;
  for (guint j = 0; j < m->n_classes; j++)
    row += m->confusion[k * m->n_classes + j];
  return row > 0 ? (double) m->confusion[k * m->n_classes + k] / (double) row : NAN;
}

EspalierProfile *
espalier_profile_copy (const EspalierProfile *prof)
{
  EspalierProfile *copy;

  g_return_val_if_fail (prof != NULL, NULL);

  copy = g_memdup2 (prof, sizeof *prof);
  copy->layers = g_memdup2 (prof->layers, sizeof (EsLayerProfile) * prof->n_layers);
  if (prof->events != NULL)
    {
      copy->events = g_array_sized_new (FALSE, FALSE, sizeof (EspalierTraceEvent),
                                        prof->events->len);
      g_array_append_vals (copy->events, prof->events->data, prof->events->len);
    }
  return copy;
}

void
espalier_profile_free (EspalierProfile *prof)
{
  if (prof == NULL)
    return;
  g_free (prof->layers);
  if (prof->events != NULL)
    g_array_unref (prof->events);
  g_free (prof);
}

static void
espalier_trainer_finalize (GObject *object)
{
  EspalierTrainer *self = ESPALIER_TRAINER (object);

  g_clear_object (&self->dataset);
  g_clear_pointer (&self->split, espalier_split_free);
  g_clear_pointer (&self->history, g_array_unref);
  g_clear_pointer (&self->plan, g_free);
  g_clear_pointer (&self->mask, es_mask_free);
  g_clear_pointer (&self->run_mask, es_mask_free);
  g_clear_pointer (&self->schedule_layers, g_free);
  g_clear_pointer (&self->prune_events, g_array_unref);
  g_clear_pointer (&self->fq_layers, g_free);
  g_clear_pointer (&self->range_lo, g_free);
  g_clear_pointer (&self->range_hi, g_free);
  g_clear_pointer (&self->range_set, g_free);
  g_clear_pointer (&self->profile, espalier_profile_free);
  g_mutex_clear (&self->pause_lock);
  g_cond_clear (&self->pause_cond);
  G_OBJECT_CLASS (espalier_trainer_parent_class)->finalize (object);
}

static void
espalier_trainer_class_init (EspalierTrainerClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = espalier_trainer_finalize;
}

static void
espalier_trainer_init (EspalierTrainer *self)
{
  self->history = g_array_new (FALSE, TRUE, sizeof (EspalierEpochRecord));
  self->prune_events = g_array_new (FALSE, TRUE, sizeof (EspalierPruneEvent));
  g_mutex_init (&self->pause_lock);
  g_cond_init (&self->pause_cond);
}

EspalierTrainer *
espalier_trainer_new (EspalierDataset            *dataset,
                      EsModel                    *model,
                      const EspalierTrainOptions *opts)
{
  EspalierTrainer *self;

  g_return_val_if_fail (ESPALIER_IS_DATASET (dataset), NULL);
  g_return_val_if_fail (model != NULL, NULL);

  self = g_object_new (ESPALIER_TYPE_TRAINER, NULL);
  self->dataset = g_object_ref (dataset);
  self->model = model;
  if (opts != NULL)
    self->opts = *opts;
  else
    espalier_train_options_init (&self->opts);
  return self;
}

void
espalier_trainer_set_snapshot_interval (EspalierTrainer *self, double seconds)
{
  g_return_if_fail (ESPALIER_IS_TRAINER (self));
  g_return_if_fail (seconds >= 0.0);

  self->snapshot_interval = seconds;
}

void
espalier_trainer_set_paused (EspalierTrainer *self,
                             gboolean         paused)
{
  g_return_if_fail (ESPALIER_IS_TRAINER (self));

  g_mutex_lock (&self->pause_lock);
  g_atomic_int_set (&self->paused, paused ? 1 : 0);
  g_cond_broadcast (&self->pause_cond);
  g_mutex_unlock (&self->pause_lock);
}

gboolean
espalier_trainer_get_paused (EspalierTrainer *self)
{
  g_return_val_if_fail (ESPALIER_IS_TRAINER (self), FALSE);
  return g_atomic_int_get (&self->paused) != 0;
}

/* Worker: wait while paused, waking for resume or cancel; returns the seconds waited
 * (they do not count as training time). */
static double
wait_while_paused (EspalierTrainer *self,
                   GCancellable    *cancellable)
{
  gint64 start = g_get_monotonic_time ();

  g_mutex_lock (&self->pause_lock);
  while (g_atomic_int_get (&self->paused) && !g_cancellable_is_cancelled (cancellable))
    g_cond_wait_until (&self->pause_cond, &self->pause_lock,
                       g_get_monotonic_time () + 50 * G_TIME_SPAN_MILLISECOND);
  g_mutex_unlock (&self->pause_lock);
  return (g_get_monotonic_time () - start) / 1e6;
}

void
espalier_trainer_set_mask (EspalierTrainer *self,
                           const EsMask    *mask)
{
  g_return_if_fail (ESPALIER_IS_TRAINER (self));
  g_return_if_fail (mask == NULL || es_mask_size (mask) == es_model_n_params (self->model));

  g_clear_pointer (&self->mask, es_mask_free);
  if (mask != NULL)
    self->mask = es_mask_copy (mask);
}

void
espalier_trainer_set_prune_schedule (EspalierTrainer             *self,
                                     const EspalierPruneSchedule *schedule)
{
  int n_layers;

  g_return_if_fail (ESPALIER_IS_TRAINER (self));

  g_clear_pointer (&self->schedule_layers, g_free);
  self->gradual = schedule != NULL;
  if (schedule == NULL)
    return;
  g_return_if_fail (schedule->frequency >= 1 && schedule->n_events >= 1);
  n_layers = es_model_n_layers (self->model);
  self->schedule = *schedule;
  if (schedule->layers != NULL)
    self->schedule_layers = g_memdup2 (schedule->layers, (gsize) n_layers * sizeof (gboolean));
  self->schedule.layers = self->schedule_layers;
}

GArray *
espalier_trainer_get_prune_events (EspalierTrainer *self)
{
  g_return_val_if_fail (ESPALIER_IS_TRAINER (self), NULL);
  return self->prune_events;
}

const EsMask *
espalier_trainer_get_mask (EspalierTrainer *self)
{
  g_return_val_if_fail (ESPALIER_IS_TRAINER (self), NULL);
  return self->run_mask;
}

void
espalier_trainer_set_teacher (EspalierTrainer *self,
                              const EsModel   *teacher,
                              double           temperature,
                              double           alpha)
{
  g_return_if_fail (ESPALIER_IS_TRAINER (self));
  g_return_if_fail (teacher == NULL || (temperature > 0 && alpha >= 0 && alpha <= 1));

  self->teacher = teacher;
  self->temperature = temperature;
  self->alpha = alpha;
}

void
espalier_trainer_set_fake_quant (EspalierTrainer *self,
                                 const gboolean  *layers,
                                 gboolean         reduce_range)
{
  g_return_if_fail (ESPALIER_IS_TRAINER (self));

  g_clear_pointer (&self->fq_layers, g_free);
  if (layers != NULL)
    self->fq_layers = g_memdup2 (layers, (gsize) es_model_n_layers (self->model) * sizeof (gboolean));
  self->fq_reduce_range = reduce_range;
}

gboolean
espalier_trainer_get_input_range (EspalierTrainer *self,
                                  guint            layer,
                                  float           *lo,
                                  float           *hi)
{
  g_return_val_if_fail (ESPALIER_IS_TRAINER (self), FALSE);

  if (self->range_set == NULL || layer >= (guint) es_model_n_layers (self->model)
      || !self->range_set[layer])
    return FALSE;
  if (lo != NULL)
    *lo = self->range_lo[layer];
  if (hi != NULL)
    *hi = self->range_hi[layer];
  return TRUE;
}

GArray *
espalier_trainer_get_history (EspalierTrainer *self)
{
  g_return_val_if_fail (ESPALIER_IS_TRAINER (self), NULL);
  return self->history;
}

const EspalierSplit *
espalier_trainer_get_split (EspalierTrainer *self)
{
  g_return_val_if_fail (ESPALIER_IS_TRAINER (self), NULL);
  return self->split;
}

void
espalier_trainer_set_distributed (EspalierTrainer     *self,
                                  EspalierDistributed *dist)
{
  g_return_if_fail (ESPALIER_IS_TRAINER (self));
  self->dist = dist;
}

void
espalier_trainer_set_profiling (EspalierTrainer *self,
                                gboolean         on,
                                guint            max_steps,
                                gboolean         trace)
{
  g_return_if_fail (ESPALIER_IS_TRAINER (self));
  self->prof_on = on;
  self->prof_max_steps = on ? max_steps : 0;
  self->prof_trace = on && trace;
}

const EspalierProfile *
espalier_trainer_get_profile (EspalierTrainer *self)
{
  g_return_val_if_fail (ESPALIER_IS_TRAINER (self), NULL);
  return self->profile;
}

void
espalier_trainer_set_flush_denormals (EspalierTrainer *self,
                                      gboolean         on)
{
  g_return_if_fail (ESPALIER_IS_TRAINER (self));
  self->opts.keep_denormals = !on;
}

#define PROFILE_RING 1024

/* Where the profile's counters started: the batcher's and the process's, read when
 * profiling begins, so the profile covers its own steps only; and the last steps' data
 * waits and wall times. */
typedef struct {
  double produce_s, producer_wait_s;
  gint64 involuntary_switches;
  double last_post;                 /* es_now of the last STEP record with a profile */
  double runqueue_wait_s, trainer_runqueue_wait_s;
  /* The data wait and wall time of the last PROFILE_RING steps, for their medians. */
  double data[PROFILE_RING], wall[PROFILE_RING];
  guint  n;                         /* steps recorded, all time */
  double step_data;                 /* this step's data wait */
} ProfileBase;

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y;
}

static double
median (const double *v, guint n)
{
  double sorted[PROFILE_RING];

  if (n == 0)
    return 0.0;
  memcpy (sorted, v, n * sizeof *v);
  qsort (sorted, n, sizeof *sorted, cmp_double);
  return n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
}

static gint64
involuntary_switches (void)
{
  struct rusage ru;

  return getrusage (RUSAGE_SELF, &ru) == 0 ? (gint64) ru.ru_nivcsw : 0;
}

/* VmRSS and VmHWM of /proc/self/status in bytes, 0 where unknown. */
static void
read_rss (gsize *rss, gsize *peak)
{
  g_autofree char *text = NULL;
  const char *p;

  *rss = *peak = 0;
  if (!g_file_get_contents ("/proc/self/status", &text, NULL, NULL))
    return;
  if ((p = strstr (text, "\nVmRSS:")) != NULL)
    *rss = (gsize) g_ascii_strtoull (p + 7, NULL, 10) * 1024;
  if ((p = strstr (text, "\nVmHWM:")) != NULL)
    *peak = (gsize) g_ascii_strtoull (p + 7, NULL, 10) * 1024;
}

/* The run-queue wait (second field of schedstat, nanoseconds) in seconds, 0 unknown. */
static double
schedstat_wait (const char *path)
{
  g_autofree char *text = NULL;
  char *end;
  guint64 v;

  if (!g_file_get_contents (path, &text, NULL, NULL))
    return 0.0;
  g_ascii_strtoull (text, &end, 10);
  v = g_ascii_strtoull (end, NULL, 10);
  return v / 1e9;
}

/* The run-queue wait of all the process's threads and of the calling one. */
static void
read_runqueue (double *all, double *self)
{
  GDir *dir = g_dir_open ("/proc/self/task", 0, NULL);
  const char *name;

  *all = 0.0;
  *self = schedstat_wait ("/proc/thread-self/schedstat");
  if (dir == NULL)
    return;
  while ((name = g_dir_read_name (dir)) != NULL)
    {
      g_autofree char *path = g_build_filename ("/proc/self/task", name, "schedstat", NULL);

      *all += schedstat_wait (path);
    }
  g_dir_close (dir);
}

static void
profile_begin (ProfileBase *base, EspalierBatcher *batcher)
{
  espalier_batcher_get_producer_seconds (batcher, &base->produce_s, &base->producer_wait_s);
  base->involuntary_switches = involuntary_switches ();
  read_runqueue (&base->runqueue_wait_s, &base->trainer_runqueue_wait_s);
  base->last_post = es_now ();
}

/* Bring prof up to date from the engine, the batcher, the budget and the process. */
static void
profile_update (EspalierTrainer   *self,
                EspalierProfile   *prof,
                const ProfileBase *base,
                EsTrainer         *tr,
                EsBackend         *be,
                EsBudget          *budget,
                EspalierBatcher   *batcher)
{
  es_trainer_get_profile (tr, &prof->engine);
  for (guint i = 0; i < prof->n_layers; i++)
    es_trainer_get_layer_profile (tr, (int) i, &prof->layers[i]);
  if (batcher != NULL)
    {
      espalier_batcher_get_producer_seconds (batcher, &prof->produce_s, &prof->producer_wait_s);
      prof->produce_s -= base->produce_s;
      prof->producer_wait_s -= base->producer_wait_s;
    }
  prof->batch = self->opts.batch_size;
  prof->micro_batch = self->micro_batch;
  prof->train_rows = self->split->train->len;
  if (batcher != NULL)
    prof->data_threads = espalier_batcher_get_workers (batcher);
  prof->prefetch = MAX (self->opts.prefetch, 1);
  prof->convert_per_batch = espalier_dataset_is_u8 (self->dataset)
                            || espalier_dataset_get_scale (self->dataset) != 1.0f
                            || espalier_dataset_get_shift (self->dataset) != 0.0f;
  prof->augment = self->opts.augment.noise_std > 0
                  || (espalier_dataset_get_rank (self->dataset) == 3
                      && (self->opts.augment.shift_pixels > 0 || self->opts.augment.hflip));
  for (int k = 0; k < ES_MEM_N_KINDS; k++)
    prof->mem_kind[k] = es_budget_used_kind (budget, (EsMemKind) k);
  prof->mem_peak = es_budget_peak (budget);
  prof->mem_limit = es_budget_limit (budget);
  read_rss (&prof->rss, &prof->rss_peak);
  es_cpu_backend_thread_info (be, &prof->threads);
  prof->involuntary_switches = involuntary_switches () - base->involuntary_switches;
  read_runqueue (&prof->runqueue_wait_s, &prof->trainer_runqueue_wait_s);
  prof->runqueue_wait_s = MAX (prof->runqueue_wait_s - base->runqueue_wait_s, 0.0);
  prof->trainer_runqueue_wait_s = MAX (prof->trainer_runqueue_wait_s
                                       - base->trainer_runqueue_wait_s, 0.0);
  prof->ftz = es_cpu_backend_get_ftz (be);
  prof->data_median_s = median (base->data, MIN (base->n, PROFILE_RING));
  prof->step_median_s = median (base->wall, MIN (base->n, PROFILE_RING));
}

/* The engine's intervals into the trace (on the worker). */
static void
on_profile_event (void *user, EsStage stage, int layer, double t0, double t1)
{
  EspalierTraceEvent ev = { (int) stage, layer, t0, t1 };

  g_array_append_val ((GArray *) user, ev);
}

guint
espalier_trainer_get_micro_batch (EspalierTrainer *self)
{
  g_return_val_if_fail (ESPALIER_IS_TRAINER (self), 0);
  return self->micro_batch;
}

/* Append label and pad it to width columns; a wide (CJK) character takes two. */
static void
append_padded (GString *s, const char *label, guint width)
{
  guint used = 0;

  for (const char *p = label; *p != '\0'; p = g_utf8_next_char (p))
    used += g_unichar_iswide (g_utf8_get_char (p)) ? 2 : 1;
  g_string_append (s, label);
  for (; used < width; used++)
    g_string_append_c (s, ' ');
}

char *
espalier_trainer_describe_plan (EspalierTrainer *self)
{
  EsMemPlan plan;
  GString *s;
  char a[32];
  guint batch;

  g_return_val_if_fail (ESPALIER_IS_TRAINER (self), NULL);

  batch = self->micro_batch ? self->micro_batch : self->opts.batch_size;
  es_mem_plan (self->model, &self->opts.engine, (int) batch, TRUE, &plan);
  s = g_string_new (NULL);
#define LINE(label, v) (append_padded (s, label, 12), \
                       g_string_append_printf (s, " %10s\n", es_format_bytes (a, sizeof a, (double) (v))))
  LINE (C_("memory plan", "weights"), plan.weights);
  LINE (C_("memory plan", "gradients"), plan.gradients);
  LINE (C_("memory plan", "optimizer"), plan.optimizer);
  LINE (C_("memory plan", "activations"), plan.activations);
  LINE (C_("memory plan", "workspace"), plan.workspace);
  LINE (C_("memory plan", "data"), plan.data);
  LINE (C_("memory plan", "total"), plan.total);
#undef LINE
  return g_string_free (s, FALSE);
}

/* Check that the model fits the dataset before any work. */
static gboolean
check_fit (EsModel *model, EspalierDataset *ds, const EsTrainConfig *cfg, GError **error)
{
  EsShape in = es_model_input_shape (model), out = es_model_output_shape (model);
  char a[64], b[64];

  if ((guint) es_shape_size (&in) != espalier_dataset_get_row_size (ds))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE,
                   _("The model takes inputs of shape %s (%lld values) but %s has rows of %u "
                     "values"),
                   es_shape_format (&in, a, sizeof a), (long long) es_shape_size (&in),
                   espalier_dataset_get_name (ds), espalier_dataset_get_row_size (ds));
      return FALSE;
    }
  if (cfg->loss == ES_LOSS_SOFTMAX_XENT)
    {
      if (espalier_dataset_get_labels (ds) == NULL || espalier_dataset_get_n_classes (ds) == 0)
        {
          g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                       _("Cross-entropy needs class labels, and %s has none: use the MSE loss"),
                       espalier_dataset_get_name (ds));
          return FALSE;
        }
      if ((guint) es_shape_size (&out) != espalier_dataset_get_n_classes (ds))
        {
          g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE,
                       _("The model outputs %s but %s has %u classes: make the last Dense layer "
                         "%u units"),
                       es_shape_format (&out, b, sizeof b), espalier_dataset_get_name (ds),
                       espalier_dataset_get_n_classes (ds), espalier_dataset_get_n_classes (ds));
          return FALSE;
        }
    }
  else if (espalier_dataset_get_targets (ds) == NULL
           || (guint) es_shape_size (&out) != espalier_dataset_get_n_targets (ds))
    {
      if (!(cfg->loss == ES_LOSS_BCE && es_shape_size (&out) == 1
            && espalier_dataset_get_n_classes (ds) == 2))
        {
          g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE,
                       _("The model outputs %s but %s has %u targets per row"),
                       es_shape_format (&out, b, sizeof b), espalier_dataset_get_name (ds),
                       espalier_dataset_get_n_targets (ds));
          return FALSE;
        }
    }
  return TRUE;
}

/* Fill an engine batch from a batcher batch; binary labels become BCE targets. */
static void
to_es_batch (const EspalierBatch *b, EsBatch *eb, float *bce_targets)
{
  memset (eb, 0, sizeof *eb);
  eb->B = (int) b->B;
  eb->x_f32 = b->x;
  eb->x_u8 = b->x_u8;
  eb->scale = b->scale;
  eb->shift = b->shift;
  eb->labels = b->labels;
  eb->targets = b->targets;
  if (bce_targets != NULL && b->targets == NULL && b->labels != NULL)
    {
      for (guint r = 0; r < b->B; r++)
        bce_targets[r] = (float) b->labels[r];
      eb->targets = bce_targets;
    }
}

/* Loss and accuracy of tr on rows, with the confusion matrix when metrics wants it. */
static gboolean
evaluate_rows (EsTrainer         *tr,
               EspalierDataset   *ds,
               const guint32     *rows,
               guint              n_rows,
               guint              batch,
               gboolean           bce,
               EspalierMetrics   *metrics,
               GCancellable      *cancellable,
               GError           **error)
{
  g_autofree gint32 *pred = g_new0 (gint32, batch);
  g_autofree float *bce_targets = bce ? g_new0 (float, batch) : NULL;
  EspalierBatcher *batcher;
  const EspalierBatch *b;
  EsStepStats stats = { 0 };
  guint n_classes = espalier_dataset_get_n_classes (ds);
  gboolean ok = TRUE;

  metrics->rows = n_rows;
  metrics->n_classes = n_classes;
  g_clear_pointer (&metrics->confusion, g_free);
  if (n_classes > 0)
    metrics->confusion = g_new0 (guint, (gsize) n_classes * n_classes);
  if (n_rows == 0)
    {
      metrics->loss = metrics->accuracy = NAN;
      return TRUE;
    }

  batcher = espalier_batcher_new (ds, rows, n_rows, batch, FALSE, 0, NULL);
  espalier_batcher_set_keep_u8 (batcher, TRUE);
  espalier_batcher_start_epoch (batcher, 0);
  while ((b = espalier_batcher_next (batcher)) != NULL)
    {
      EsBatch eb;
      EsError es = { 0 };

      if (g_cancellable_set_error_if_cancelled (cancellable, error))
        {
          ok = FALSE;
          break;
        }
      to_es_batch (b, &eb, bce_targets);
      if (!es_trainer_eval_batch (tr, &eb, &stats, pred, &es))
        {
          espalier_error_from_es (error, &es, NULL);
          ok = FALSE;
          break;
        }
      if (metrics->confusion != NULL && b->labels != NULL)
        for (guint r = 0; r < b->B; r++)
          if (pred[r] >= 0 && (guint) pred[r] < n_classes && (guint) b->labels[r] < n_classes)
            metrics->confusion[(gsize) b->labels[r] * n_classes + (guint) pred[r]]++;
    }
  espalier_batcher_free (batcher);
  metrics->loss = stats.rows ? stats.loss_sum / stats.rows : NAN;
  metrics->accuracy = stats.rows ? (double) stats.correct / stats.rows : NAN;
  return ok;
}

typedef struct {
  EspalierProgressFunc func;
  gpointer             data;
  double               last_step;
  double               last_snapshot;
  EspalierDistributed *dist;          /* adds the data-parallel fields, or NULL */
} Reporter;

/* Pass p to the callback, then free its snapshot unless the callback took it (the async
 * path does, see post_progress). */
static void
report (Reporter *rep, EspalierProgress *p)
{
  if (rep->dist != NULL)
    espalier_distributed_fill_progress (rep->dist, p);
  if (rep->func != NULL)
    rep->func (p, rep->data);
  g_clear_pointer (&p->snapshot, es_model_free);
}

/* A copy of the weights as they are now on the device. */
static EsModel *
snapshot (EsTrainer *tr, EsModel *model)
{
  es_trainer_sync (tr);
  return es_model_copy (model);
}

static void
report_message (Reporter *rep, const char *message)
{
  EspalierProgress p = { .kind = ESPALIER_PROGRESS_MESSAGE, .message = message };

  report (rep, &p);
}

/* Zeros among the weights of the layers a schedule prunes (every prunable one when
 * layers is NULL). */
static double
selected_sparsity (const EsModel *model, const gboolean *layers)
{
  gint64 zeros = 0, total = 0;

  for (int i = 0; i < es_model_n_layers (model); i++)
    if (layers == NULL || layers[i])
      {
        int64_t n = 0;

        zeros += es_prune_layer_zeros (model, i, &n);
        total += n;
      }
  return total > 0 ? (double) zeros / (double) total : 0.0;
}

/* A gboolean array (n) as the engine's bool array; NULL stays NULL. */
static bool *
to_bools (const gboolean *v, int n)
{
  bool *b;

  if (v == NULL)
    return NULL;
  b = g_new (bool, n);
  for (int i = 0; i < n; i++)
    b[i] = v[i] != FALSE;
  return b;
}

/* One event of gradual pruning: prune the weights on the host to target, grow the mask
 * and hand both back to the device. */
static gboolean
prune_event (EspalierTrainer *self,
             EsTrainer       *tr,
             double           target,
             Reporter        *rep,
             GError         **error)
{
  const EspalierPruneSchedule *sc = &self->schedule;
  int n_layers = es_model_n_layers (self->model);
  g_autofree bool *layers = to_bools (sc->layers, n_layers);
  EspalierPruneEvent ev = { .step = es_trainer_step_count (tr), .target = target };
  EsError es = { 0 };
  g_autofree char *msg = NULL;

  es_trainer_sync (tr);
  if (!es_prune_magnitude (self->model, self->run_mask, (float) target, sc->scope, layers, &es))
    {
      espalier_error_from_es (error, &es, _("Gradual pruning failed"));
      return FALSE;
    }
  es_trainer_reload (tr, false);
  if (!es_trainer_set_mask (tr, es_mask_data_const (self->run_mask), &es))
    {
      espalier_error_from_es (error, &es, _("Gradual pruning failed"));
      return FALSE;
    }
  ev.sparsity = selected_sparsity (self->model, sc->layers);
  g_array_append_val (self->prune_events, ev);
  msg = g_strdup_printf (_("Gradual pruning: %.1f%% of the weights pruned after %lld steps"),
                         100 * ev.sparsity, (long long) ev.step);
  report_message (rep, msg);
  return TRUE;
}

/* Before each batch: the latest pruning event that is due, if any. */
static gboolean
prune_if_due (EspalierTrainer *self,
              EsTrainer       *tr,
              gint64          *next_event,
              Reporter        *rep,
              GError         **error)
{
  const EspalierPruneSchedule *sc = &self->schedule;
  gint64 step = es_trainer_step_count (tr), due = -1;

  while (*next_event <= sc->n_events && step >= sc->begin_step + *next_event * sc->frequency)
    due = (*next_event)++;
  if (due < 0)
    return TRUE;
  return prune_event (self, tr,
                      es_prune_cubic_sparsity ((float) sc->initial_sparsity,
                                               (float) sc->final_sparsity, sc->begin_step,
                                               sc->n_events, sc->frequency,
                                               sc->begin_step + due * sc->frequency),
                      rep, error);
}

/* Hand the optimization hooks to a new engine trainer. */
static gboolean
apply_hooks (EspalierTrainer *self,
             EsTrainer       *tr,
             GError         **error)
{
  int n_layers = es_model_n_layers (self->model);
  EsError es = { 0 };

  g_array_set_size (self->prune_events, 0);
  g_clear_pointer (&self->run_mask, es_mask_free);
  g_clear_pointer (&self->range_lo, g_free);
  g_clear_pointer (&self->range_hi, g_free);
  g_clear_pointer (&self->range_set, g_free);
  if (self->mask != NULL)
    {
      self->run_mask = es_mask_copy (self->mask);
      if (!es_trainer_set_mask (tr, es_mask_data_const (self->run_mask), &es))
        {
          espalier_error_from_es (error, &es, _("Cannot keep the pruning mask"));
          return FALSE;
        }
    }
  else if (self->gradual)
    self->run_mask = es_mask_new (self->model);
  if (self->teacher != NULL
      && !es_trainer_set_teacher (tr, self->teacher, (float) self->temperature,
                                  (float) self->alpha, &es))
    {
      espalier_error_from_es (error, &es, _("Cannot distill from the teacher"));
      return FALSE;
    }
  if (self->fq_layers != NULL)
    {
      g_autofree bool *layers = to_bools (self->fq_layers, n_layers);

      if (!es_trainer_set_fake_quant (tr, layers, self->fq_reduce_range, &es))
        {
          espalier_error_from_es (error, &es, _("Cannot train with fake quantization"));
          return FALSE;
        }
    }
  return TRUE;
}

/* After a run: keep the input ranges fake quantization tracked. */
static void
keep_input_ranges (EspalierTrainer *self,
                   EsTrainer       *tr)
{
  int n_layers = es_model_n_layers (self->model);

  if (self->fq_layers == NULL)
    return;
  self->range_lo = g_new0 (float, n_layers);
  self->range_hi = g_new0 (float, n_layers);
  self->range_set = g_new0 (gboolean, n_layers);
  for (int i = 0; i < n_layers; i++)
    self->range_set[i] = es_trainer_get_input_range (tr, i, &self->range_lo[i],
                                                     &self->range_hi[i]);
}

/* Compute threads when the user left the choice to us (0). Measured on 2 cores
 * (bench/bench-kernels, espalier-cli train): below ~200 MFLOP per training step a second
 * compute thread loses more to activations and gradients crossing between cores than
 * it gains (the reference MLP at batch 32: 0.22 s an epoch on one thread, 0.36 s on
 * two), while the CNN templates gain ~1.5x from it. */
static guint
auto_threads (const EsModel *model, guint batch)
{
  double step_flops = 3.0 * (double) es_model_flops (model) * batch;

  return step_flops < 2e8 ? 1 : g_get_num_processors ();
}

static EsBackend *
make_backend (guint threads, EsBudget *budget, GError **error)
{
  EsError es = { 0 };
  EsBackend *be = es_cpu_backend_new ((int) threads, budget, &es);

  if (be == NULL)
    espalier_error_from_es (error, &es, _("Could not start the CPU backend"));
  return be;
}

gboolean
espalier_trainer_run (EspalierTrainer      *self,
                      GCancellable         *cancellable,
                      EspalierProgressFunc  func,
                      gpointer              user_data,
                      GError              **error)
{
  EspalierTrainOptions *o;
  EsTrainConfig cfg;
  EsBudget *budget = NULL;
  EsBackend *be = NULL;
  EsTrainer *tr = NULL;
  EspalierBatcher *batcher = NULL;
  g_autofree float *best = NULL;
  g_autofree float *bce_targets = NULL;
  EspalierMetrics vm = { 0 };      /* validation metrics of the current epoch */
  Reporter rep = { func, user_data, 0, -INFINITY, NULL };
  EsError es = { 0 };
  gboolean ok = FALSE, bce, have_best = FALSE;
  double t_start, best_val = INFINITY;
  guint best_epoch = 0;
  guint bad_epochs = 0, steps_per_epoch, patience;
  guint first_epoch = 1, global_batch;  /* data parallelism: resumed epoch, rows per step */
  gint64 next_event = 0;
  gsize n_params;
  EspalierProfile *prof = NULL;    /* self->profile when profiling */
  EspalierProfile snap;            /* what a STEP record shows of it */
  ProfileBase pbase = { 0 };
  gboolean prof_done = FALSE;      /* max_steps reached */
  gboolean prof_warm = FALSE;      /* the warm-up step is done */

  g_return_val_if_fail (ESPALIER_IS_TRAINER (self), FALSE);

  o = &self->opts;
  rep.dist = self->dist;
  cfg = o->engine;
  cfg.seed = o->seed;
  if (self->dist != NULL)  /* each rank its own dropout masks */
    cfg.seed = espalier_distributed_rank_seed (self->dist, cfg.seed);
  bce = cfg.loss == ES_LOSS_BCE && espalier_dataset_get_targets (self->dataset) == NULL;
  if (o->epochs == 0 || o->batch_size == 0)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("Epochs and batch size must be at least 1"));
      return FALSE;
    }
  if (!check_fit (self->model, self->dataset, &cfg, error))
    return FALSE;

  g_clear_pointer (&self->split, espalier_split_free);
  self->split = espalier_split_new (self->dataset, o->val_fraction, o->test_fraction, o->seed, error);
  if (self->split == NULL)
    return FALSE;
  g_array_set_size (self->history, 0);
  if (o->patience > 0 && self->split->val->len == 0)
    report_message (&rep, _("Early stopping is off: it watches the validation loss and this "
                            "run has no validation split (set a validation fraction)"));
  patience = o->patience;
  if (patience > 0 && self->gradual)
    {
      /* Going back to an earlier epoch's weights would undo later pruning. */
      report_message (&rep, _("Early stopping is off during gradual pruning"));
      patience = 0;
    }

  global_batch = self->dist != NULL
                 ? espalier_distributed_global_batch (self->dist, o->batch_size)
                 : o->batch_size;
  steps_per_epoch = (self->split->train->len + global_batch - 1) / global_batch;
  if (cfg.schedule == ES_LR_COSINE && cfg.total_steps <= 0)
    cfg.total_steps = (gint64) o->epochs * steps_per_epoch / MAX (cfg.accum_steps, 1);

  /* Always a budget, so the memory is counted by kind; limit 0 is none. */
  budget = es_budget_new (o->memory_limit);
  be = make_backend (o->threads ? o->threads : auto_threads (self->model, o->batch_size),
                     budget, error);
  if (be == NULL)
    goto out;
  es_cpu_backend_set_ftz (be, !o->keep_denormals);
  tr = es_trainer_new (self->model, be, &cfg, (int) o->batch_size, &es);
  if (tr == NULL)
    {
      espalier_error_from_es (error, &es, _("Training cannot start"));
      goto out;
    }
  if (!apply_hooks (self, tr, error))
    goto out;
  if (self->dist != NULL
      && !espalier_distributed_begin_run (self->dist, tr, self->model, self->history,
                                          self->split->train->len, o->batch_size, o->seed,
                                          &first_epoch, error))
    goto out;
  g_clear_pointer (&self->profile, espalier_profile_free);
  if (self->prof_on)
    {
      prof = self->profile = g_new0 (EspalierProfile, 1);
      prof->n_layers = (guint) es_model_n_layers (self->model);
      prof->layers = g_new0 (EsLayerProfile, prof->n_layers);
      es_trainer_set_profiling (tr, true);
      if (self->prof_trace)
        {
          prof->events = g_array_new (FALSE, FALSE, sizeof (EspalierTraceEvent));
          es_trainer_set_profile_events (tr, on_profile_event, prof->events);
        }
    }
  self->micro_batch = (guint) es_trainer_micro_batch (tr);
  g_clear_pointer (&self->plan, g_free);
  if (self->micro_batch < o->batch_size)
    {
      g_autofree char *msg = g_strdup_printf (
          _("The memory budget holds %u rows at a time, not %u: training on micro-batches of "
            "%u and accumulating %u of them, so every step still sees %u rows"),
          self->micro_batch, o->batch_size, self->micro_batch,
          (o->batch_size + self->micro_batch - 1) / self->micro_batch, o->batch_size);
      report_message (&rep, msg);
    }

  {
    EspalierProgress p = { .kind = ESPALIER_PROGRESS_START, .epochs = o->epochs,
                           .steps = steps_per_epoch };
    report (&rep, &p);
  }

  n_params = (gsize) es_model_n_params (self->model);
  best = g_new (float, n_params + (gsize) es_model_n_buffers (self->model) + 1);
  if (bce)
    bce_targets = g_new0 (float, o->batch_size);
  batcher = espalier_batcher_new (self->dataset, (const guint32 *) self->split->train->data,
                                  self->split->train->len, global_batch, TRUE, o->seed,
                                  (o->augment.shift_pixels || o->augment.hflip || o->augment.noise_std > 0)
                                    ? &o->augment : NULL);
  espalier_batcher_set_keep_u8 (batcher, TRUE);
  if (o->data_threads > 1 || o->prefetch > 1)
    espalier_batcher_set_prefetch (batcher, MAX (o->data_threads, 1), MAX (o->prefetch, 1));
  if (prof != NULL)
    profile_begin (&pbase, batcher);
  t_start = g_get_monotonic_time () / 1e6;
  for (guint epoch = first_epoch; epoch <= o->epochs; epoch++)
    {
      EspalierEpochRecord rec = { .epoch = epoch, .val_loss = NAN, .val_accuracy = NAN };
      EsStepStats stats = { 0 };
      const EspalierBatch *b;
      double t0 = g_get_monotonic_time () / 1e6;
      double t_ask = prof != NULL ? es_now () : 0.0;  /* when this step asked for data */
      guint step = 0;

      espalier_batcher_start_epoch (batcher, epoch - 1);
      while ((b = self->dist != NULL
                  ? espalier_distributed_next (self->dist, batcher, epoch, &stats)
                  : espalier_batcher_next (batcher)) != NULL)
        {
          EsBatch eb;
          double now;

          to_es_batch (b, &eb, bce_targets);
          if (prof != NULL)
            {
              double t_filled = es_now ();

              prof->data_s += t_filled - t_ask;
              pbase.step_data = t_filled - t_ask;
              if (prof->events != NULL)
                {
                  EspalierTraceEvent ev = { ESPALIER_STAGE_DATA, -1, t_ask, t_filled };

                  g_array_append_val (prof->events, ev);
                }
            }
          if (self->gradual && !prune_if_due (self, tr, &next_event, &rep, error))
            {
              es_trainer_sync (tr);
              goto out;
            }
          if (!es_trainer_train_batch (tr, &eb, &stats, &es))
            {
              /* The step was not applied: the device holds the last good weights. */
              es_trainer_sync (tr);
              espalier_error_from_es (error, &es, NULL);
              if (es.code == ES_ERR_NUMERIC)
                g_prefix_error (error, _("Training stopped in epoch %u: "), epoch);
              goto out;
            }
          if (self->dist != NULL
              && !espalier_distributed_step_done (self->dist, tr, &stats, error))
            {
              es_trainer_sync (tr);
              goto out;
            }
          step++;
          now = g_get_monotonic_time () / 1e6;
          if (rep.func != NULL && (now - rep.last_step >= 1.0 / 30.0 || step == steps_per_epoch))
            {
              double done = (epoch - 1) + (double) step / steps_per_epoch;
              EspalierProgress p = {
                .kind = ESPALIER_PROGRESS_STEP, .epoch = epoch, .epochs = o->epochs,
                .step = step, .steps = steps_per_epoch,
                .loss = stats.loss_sum / MAX (stats.rows, 1),
                .accuracy = (double) stats.correct / MAX (stats.rows, 1),
                .elapsed = now - t_start,
                .eta = (now - t_start) / done * (o->epochs - done),
              };
              rep.last_step = now;
              if (self->snapshot_interval > 0
                  && now - rep.last_snapshot >= self->snapshot_interval)
                {
                  p.snapshot = snapshot (tr, self->model);
                  rep.last_snapshot = now;
                }
              if (prof != NULL && prof_warm && es_now () - pbase.last_post >= 0.5)
                {
                  /* this step's engine counters are in; its wall time is so far */
                  profile_update (self, prof, &pbase, tr, be, budget, batcher);
                  snap = *prof;
                  snap.steps++;
                  snap.wall_s += es_now () - t_ask;
                  p.profile = &snap;
                  pbase.last_post = es_now ();
                }
              report (&rep, &p);
            }
          if (g_atomic_int_get (&self->paused))
            {
              double waited = wait_while_paused (self, cancellable);

              t_start += waited;
              t0 += waited;
              t_ask += waited;
            }
          if (g_cancellable_is_cancelled (cancellable))
            {
              es_trainer_sync (tr);
              g_cancellable_set_error_if_cancelled (cancellable, error);
              goto out;
            }
          if (prof != NULL && !prof_warm)
            {
              /* The run's first step (first touch of the buffers, the data pipeline
               * starting) is warm-up: the profile starts after it. */
              prof_warm = TRUE;
              es_trainer_profile_reset (tr);
              prof->data_s = 0;
              if (prof->events != NULL)
                g_array_set_size (prof->events, 0);
              profile_begin (&pbase, batcher);
              t_ask = es_now ();
            }
          else if (prof != NULL)
            {
              double t_end = es_now ();

              prof->wall_s += t_end - t_ask;
              pbase.data[pbase.n % PROFILE_RING] = pbase.step_data;
              pbase.wall[pbase.n % PROFILE_RING] = t_end - t_ask;
              pbase.n++;
              t_ask = t_end;
              if (++prof->steps == self->prof_max_steps)
                {
                  prof_done = TRUE;
                  break;
                }
            }
        }
      if (prof_done)
        break;
      if (self->dist != NULL && !espalier_distributed_end_epoch (self->dist, tr, &stats, error))
        {
          es_trainer_sync (tr);
          goto out;
        }
      rec.seconds = g_get_monotonic_time () / 1e6 - t0;
      rec.train_loss = stats.loss_sum / MAX (stats.rows, 1);
      rec.train_accuracy = (double) stats.correct / MAX (stats.rows, 1);
      rec.lr = es_trainer_current_lr (tr);
      if (self->split->val->len > 0)
        {
          guint v0 = 0, vn = self->split->val->len;  /* this rank's share */

          if (self->dist != NULL)
            espalier_distributed_shard (self->dist, vn, &v0, &vn);
          if (!evaluate_rows (tr, self->dataset, (const guint32 *) self->split->val->data + v0,
                              vn, MAX (o->batch_size, 256), bce, &vm, cancellable, error)
              || (self->dist != NULL
                  && !espalier_distributed_reduce_metrics (self->dist, &vm, error)))
            {
              es_trainer_sync (tr);
              goto out;
            }
          rec.val_loss = vm.loss;
          rec.val_accuracy = vm.accuracy;
        }
      g_array_append_val (self->history, rec);
      {
        double now = g_get_monotonic_time () / 1e6;
        EspalierProgress p = {
          .kind = ESPALIER_PROGRESS_EPOCH, .epoch = epoch, .epochs = o->epochs,
          .step = step, .steps = steps_per_epoch, .loss = rec.train_loss,
          .accuracy = rec.train_accuracy, .elapsed = now - t_start,
          .eta = (now - t_start) / epoch * (o->epochs - epoch), .record = &rec,
          .val_metrics = self->split->val->len > 0 ? &vm : NULL,
        };
        if (rep.func != NULL)
          p.snapshot = snapshot (tr, self->model);
        if (prof != NULL)
          {
            profile_update (self, prof, &pbase, tr, be, budget, batcher);
            p.profile = prof;
          }
        report (&rep, &p);
      }
      espalier_metrics_clear (&vm);

      /* Early stopping on validation loss, keeping the best weights. */
      if (patience > 0 && !isnan (rec.val_loss))
        {
          if (rec.val_loss < best_val - o->min_delta)
            {
              best_val = rec.val_loss;
              best_epoch = epoch;
              have_best = TRUE;
              bad_epochs = 0;
              es_trainer_sync (tr);
              memcpy (best, es_model_params (self->model), n_params * sizeof (float));
              memcpy (best + n_params, es_model_buffers (self->model),
                      (gsize) es_model_n_buffers (self->model) * sizeof (float));
            }
          else if (++bad_epochs >= patience)
            {
              g_autofree char *msg = g_strdup_printf (
                  _("Stopped early after epoch %u: the validation loss has not improved for "
                    "%u epochs; keeping the weights of its best epoch (loss %.4f)"),
                  epoch, patience, best_val);
              memcpy (es_model_params (self->model), best, n_params * sizeof (float));
              memcpy (es_model_buffers (self->model), best + n_params,
                      (gsize) es_model_n_buffers (self->model) * sizeof (float));
              report_message (&rep, msg);
              ok = TRUE;
              goto out;
            }
        }
    }
  /* The steps may not reach the schedule's last event: the final sparsity is still
   * what the run promised. */
  if (self->gradual && next_event <= self->schedule.n_events)
    {
      report_message (&rep, _("Training ended before the pruning schedule did: pruning to "
                              "the final sparsity now"));
      next_event = self->schedule.n_events + 1;
      if (!prune_event (self, tr, self->schedule.final_sparsity, &rep, error))
        goto out;
    }
  es_trainer_sync (tr);
  /* With early stopping on, the run ends on its best epoch even when it ran out of
   * epochs before running out of patience. */
  if (have_best && best_epoch < o->epochs)
    {
      g_autofree char *msg = g_strdup_printf (
          _("Keeping the weights of epoch %u, the best on validation loss (%.4f)"), best_epoch,
          best_val);
      memcpy (es_model_params (self->model), best, n_params * sizeof (float));
      memcpy (es_model_buffers (self->model), best + n_params,
              (gsize) es_model_n_buffers (self->model) * sizeof (float));
      report_message (&rep, msg);
    }
  ok = TRUE;

out:
  espalier_metrics_clear (&vm);
  if (tr != NULL && prof != NULL)
    {
      profile_update (self, prof, &pbase, tr, be, budget, batcher);
      es_trainer_count_denormals (tr, &prof->denormals);
    }
  if (batcher != NULL)
    espalier_batcher_free (batcher);
  if (tr != NULL)
    keep_input_ranges (self, tr);
  es_trainer_free (tr);
  es_backend_free (be);
  if (budget != NULL)
    es_budget_free (budget);
  return ok;
}

/* Progress crosses to the caller's context through one queue and at most one pending
 * source: a slow main loop receives every epoch event but only the latest of a run of
 * step events, so the backlog stays bounded however fast the worker reports. */
struct _EspalierProgressRelay {
  EspalierProgressFunc func;
  gpointer             data;
  GDestroyNotify       data_free;
  GMainContext        *context;
  GMutex               lock;
  GQueue               pending;        /* (Posted) oldest first */
  gboolean             scheduled;      /* a drain source is attached */
};

typedef struct {
  EspalierProgress    progress;     /* owns progress.snapshot */
  EspalierEpochRecord record;
  EspalierMetrics     val_metrics;  /* owns its confusion matrix */
  char               *message;
  EspalierProfile    *profile;      /* a copy, or NULL */
} Posted;

static void
posted_free (gpointer p)
{
  Posted *posted = p;

  g_free (posted->message);
  espalier_profile_free (posted->profile);
  g_clear_pointer (&posted->progress.snapshot, es_model_free);
  espalier_metrics_clear (&posted->val_metrics);
  g_free (posted);
}

static void
relay_clear (gpointer p)
{
  EspalierProgressRelay *relay = p;

  g_queue_clear_full (&relay->pending, posted_free);
  g_mutex_clear (&relay->lock);
  if (relay->data_free != NULL)
    relay->data_free (relay->data);
  g_main_context_unref (relay->context);
}

EspalierProgressRelay *
espalier_progress_relay_new (EspalierProgressFunc func,
                             gpointer             user_data,
                             GDestroyNotify       user_data_free)
{
  EspalierProgressRelay *relay = g_atomic_rc_box_new0 (EspalierProgressRelay);

  relay->func = func;
  relay->data = user_data;
  relay->data_free = user_data_free;
  relay->context = g_main_context_ref_thread_default ();
  g_mutex_init (&relay->lock);
  g_queue_init (&relay->pending);
  return relay;
}

EspalierProgressRelay *
espalier_progress_relay_ref (EspalierProgressRelay *relay)
{
  return g_atomic_rc_box_acquire (relay);
}

void
espalier_progress_relay_unref (EspalierProgressRelay *relay)
{
  g_atomic_rc_box_release_full (relay, relay_clear);
}

/* Caller's context: deliver everything queued, in order. */
static gboolean
drain (gpointer p)
{
  EspalierProgressRelay *relay = p;
  GQueue batch = G_QUEUE_INIT;
  Posted *posted;

  g_mutex_lock (&relay->lock);
  batch = relay->pending;
  g_queue_init (&relay->pending);
  relay->scheduled = FALSE;
  g_mutex_unlock (&relay->lock);

  while ((posted = g_queue_pop_head (&batch)) != NULL)
    {
      if (relay->func != NULL)
        relay->func (&posted->progress, relay->data);
      posted_free (posted);
    }
  return G_SOURCE_REMOVE;
}

/* Worker-thread side: copy the record and post it to the caller's context. */
void
espalier_progress_relay_post (const EspalierProgress *progress,
                              gpointer                user_data)
{
  EspalierProgressRelay *relay = user_data;
  Posted *posted = g_new0 (Posted, 1);

  posted->progress = *progress;
  if (progress->record != NULL)
    {
      posted->record = *progress->record;
      posted->progress.record = &posted->record;
    }
  if (progress->val_metrics != NULL)
    {
      const EspalierMetrics *vm = progress->val_metrics;
      gsize cells = (gsize) vm->n_classes * vm->n_classes;

      posted->val_metrics = *vm;
      if (vm->confusion != NULL)
        posted->val_metrics.confusion = g_memdup2 (vm->confusion, cells * sizeof (guint));
      posted->progress.val_metrics = &posted->val_metrics;
    }
  /* The snapshot moves to the posted copy; report() frees what is left in the
   * original. Every record comes from its job's own non-const locals. */
  ((EspalierProgress *) progress)->snapshot = NULL;
  posted->message = g_strdup (progress->message);
  posted->progress.message = posted->message;
  if (progress->profile != NULL)
    posted->profile = espalier_profile_copy (progress->profile);
  posted->progress.profile = posted->profile;

  g_mutex_lock (&relay->lock);
  {
    Posted *last = g_queue_peek_tail (&relay->pending);

    /* A newer step event makes an undelivered one worthless. */
    if (last != NULL && last->progress.kind == ESPALIER_PROGRESS_STEP &&
        posted->progress.kind == ESPALIER_PROGRESS_STEP)
      posted_free (g_queue_pop_tail (&relay->pending));
  }
  g_queue_push_tail (&relay->pending, posted);
  /* Always through a source: g_main_context_invoke() would run drain() right here on
   * the worker when the caller's context happens to be free. */
  if (!relay->scheduled)
    {
      GSource *source = g_idle_source_new ();

      relay->scheduled = TRUE;
      g_source_set_priority (source, G_PRIORITY_DEFAULT);
      g_source_set_callback (source, drain, espalier_progress_relay_ref (relay),
                             (GDestroyNotify) espalier_progress_relay_unref);
      g_source_set_static_name (source, "[espalier] training progress");
      g_source_attach (source, relay->context);
      g_source_unref (source);
    }
  g_mutex_unlock (&relay->lock);
}

static void
run_thread (GTask        *task,
            gpointer      source,
            gpointer      task_data,
            GCancellable *cancellable)
{
  EspalierTrainer *self = source;
  EspalierProgressRelay *relay = task_data;
  GError *error = NULL;

  if (espalier_trainer_run (self, cancellable, relay->func ? espalier_progress_relay_post : NULL,
                            relay, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, error);
}

void
espalier_trainer_run_async (EspalierTrainer      *self,
                            GCancellable         *cancellable,
                            EspalierProgressFunc  func,
                            gpointer              user_data,
                            GDestroyNotify        user_data_free,
                            GAsyncReadyCallback   callback,
                            gpointer              callback_data)
{
  g_autoptr(GTask) task = NULL;

  g_return_if_fail (ESPALIER_IS_TRAINER (self));

  task = g_task_new (self, cancellable, callback, callback_data);
  g_task_set_source_tag (task, espalier_trainer_run_async);
  g_task_set_task_data (task, espalier_progress_relay_new (func, user_data, user_data_free),
                        (GDestroyNotify) espalier_progress_relay_unref);
  g_task_run_in_thread (task, run_thread);
}

gboolean
espalier_trainer_run_finish (EspalierTrainer  *self,
                             GAsyncResult     *result,
                             GError          **error)
{
  g_return_val_if_fail (g_task_is_valid (result, self), FALSE);
  return g_task_propagate_boolean (G_TASK (result), error);
}

gboolean
espalier_evaluate (EsModel          *model,
                   EspalierDataset  *dataset,
                   const guint32    *rows,
                   guint             n_rows,
                   EsLossKind        loss,
                   guint             threads,
                   EspalierMetrics  *metrics,
                   GError          **error)
{
  g_autofree guint32 *all = NULL;
  EsTrainConfig cfg;
  EsBackend *be;
  EsTrainer *tr;
  EsError es = { 0 };
  gboolean ok;
  const guint batch = 1000;

  g_return_val_if_fail (model != NULL, FALSE);
  g_return_val_if_fail (ESPALIER_IS_DATASET (dataset), FALSE);

  es_train_config_default (&cfg);
  cfg.loss = loss;
  cfg.optimizer = ES_OPT_SGD;  /* no optimizer state is allocated */
  if (!check_fit (model, dataset, &cfg, error))
    return FALSE;
  if (rows == NULL)
    {
      n_rows = espalier_dataset_get_n_rows (dataset);
      all = g_new (guint32, n_rows);
      for (guint i = 0; i < n_rows; i++)
        all[i] = i;
      rows = all;
    }
  be = make_backend (threads ? threads : auto_threads (model, batch), NULL, error);
  if (be == NULL)
    return FALSE;
  tr = es_trainer_new (model, be, &cfg, (int) batch, &es);
  if (tr == NULL)
    {
      espalier_error_from_es (error, &es, _("Evaluation cannot start"));
      es_backend_free (be);
      return FALSE;
    }
  ok = evaluate_rows (tr, dataset, rows, n_rows, batch,
                      loss == ES_LOSS_BCE && espalier_dataset_get_targets (dataset) == NULL,
                      metrics, NULL, error);
  es_trainer_free (tr);
  es_backend_free (be);
  return ok;
}
