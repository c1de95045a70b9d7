/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-trainer.c: epochs over a dataset with the engine's EsTrainer: split, batcher
 * thread, per-epoch metrics on train and validation, early stopping, progress and
 * cancellation. It never touches GTK. */
#include "config.h"

#include <glib/gi18n-lib.h>
#include <dlfcn.h>
#include <math.h>
#include <string.h>
#include <sys/resource.h>

#include "es-backend.h"
#include "espalier-device.h"
#include "espalier-distributed.h"
#include "espalier-error.h"
#include "espalier-limits.h"
#include "espalier-split.h"
#include "espalier-templates.h"
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
  gint64                fp32_products;  /* the last run's (espalier_trainer_get_fp32_products) */
  gint                  device_used;    /* the last run's (espalier_trainer_get_device_used) */
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

  /* Checkpoints (espalier_trainer_set_checkpoint, _set_resume). */
  char                 *ck_path;        /* or NULL: none written */
  guint                 ck_every;       /* optimizer steps between them */
  EspalierCheckpoint   *resume;         /* for the next run, or NULL */
  gboolean              have_last_ck;
  EspalierCheckpointInfo last_ck;       /* the last one the last run wrote */

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
  opts->device = ESPALIER_DEVICE_AUTO;
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
  g_clear_pointer (&self->ck_path, g_free);
  g_clear_pointer (&self->resume, espalier_checkpoint_free);
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
  self->device_used = ESPALIER_DEVICE_CPU;
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
espalier_trainer_set_checkpoint (EspalierTrainer *self,
                                 const char      *path,
                                 guint            every)
{
  g_return_if_fail (ESPALIER_IS_TRAINER (self));

  g_clear_pointer (&self->ck_path, g_free);
  self->ck_path = path != NULL && every > 0 ? g_strdup (path) : NULL;
  self->ck_every = path != NULL ? every : 0;
}

gboolean
espalier_trainer_set_resume (EspalierTrainer        *self,
                             const char             *path,
                             EspalierCheckpointInfo *info,
                             GError                **error)
{
  EspalierCheckpoint *ck = NULL;

  g_return_val_if_fail (ESPALIER_IS_TRAINER (self), FALSE);

  if (path != NULL)
    {
      ck = espalier_checkpoint_load (path, error);
      if (ck == NULL)
        {
          g_prefix_error (error, _("Cannot resume: "));
          return FALSE;
        }
      if (!espalier_checkpoint_fits_model (ck, self->model, error))
        {
          g_prefix_error (error, _("Cannot resume from %s: "), path);
          espalier_checkpoint_free (ck);
          return FALSE;
        }
      if (info != NULL)
        *info = ck->info;
    }
  g_clear_pointer (&self->resume, espalier_checkpoint_free);
  self->resume = ck;
  return TRUE;
}

gboolean
espalier_trainer_get_last_checkpoint (EspalierTrainer        *self,
                                      EspalierCheckpointInfo *info)
{
  g_return_val_if_fail (ESPALIER_IS_TRAINER (self), FALSE);

  if (self->have_last_ck && info != NULL)
    *info = self->last_ck;
  return self->have_last_ck;
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

/* The profile's device: which, its name, and on CUDA its memory and NVML readings. */
static void
profile_device (EspalierProfile *prof, EsBackend *be)
{
  EsCudaDeviceInfo info;

  prof->device = espalier_backend_get_device (be);
  prof->device_utilization = prof->device_temperature_c = -1;
  prof->device_power_w = -1.0;
  if (prof->device_name[0] == '\0')
    {
      g_autofree char *name = espalier_device_describe (prof->device);

      g_strlcpy (prof->device_name, name, sizeof prof->device_name);
    }
  if (!espalier_device_get_cuda_info (prof->device, &info))
    return;
  prof->device_mem_total = info.mem_total;
  prof->device_mem_free = info.mem_free;
  prof->device_utilization = info.utilization_gpu;
  prof->device_temperature_c = info.temperature_c;
  prof->device_power_w = info.power_w;
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
  /* the CUDA kernels flush denormals to zero (nvcc -ftz=true) */
  profile_device (prof, be);
  if (prof->device >= 0)
    prof->ftz = TRUE;
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

gint
espalier_trainer_get_device_used (EspalierTrainer *self)
{
  g_return_val_if_fail (ESPALIER_IS_TRAINER (self), ESPALIER_DEVICE_CPU);
  return self->device_used;
}

gint64
espalier_trainer_get_fp32_products (EspalierTrainer *self)
{
  g_return_val_if_fail (ESPALIER_IS_TRAINER (self), 0);
  return self->fp32_products;
}

char *
espalier_fp32_products_message (gint64 n)
{
  return g_strdup_printf (ngettext ("%lld matrix product ran in fp32: the memory limit left no "
                                    "room for its 16-bit copies; raise the limit or lower the "
                                    "batch",
                                    "%lld matrix products ran in fp32: the memory limit left no "
                                    "room for their 16-bit copies; raise the limit or lower the "
                                    "batch", (gulong) MIN (n, (gint64) G_MAXULONG)),
                          (long long) n);
}

typedef gint64 (*Fp32CountFunc) (EsBackend *be);

/* The CUDA backend's count of products that fell back to fp32
 * (es_cuda_backend_fp32_products), looked up in the module that made be, which core
 * opens at run time; NULL on the CPU backend or when the module lacks it. */
static Fp32CountFunc
backend_fp32_counter (EsBackend *be)
{
  Dl_info info;
  void *module;
  Fp32CountFunc count;

  if (be == NULL || espalier_backend_get_device (be) < 0 || dladdr (be->iface, &info) == 0
      || info.dli_fname == NULL
      || (module = dlopen (info.dli_fname, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD)) == NULL)
    return NULL;
  count = (Fp32CountFunc) dlsym (module, "es_cuda_backend_fp32_products");
  dlclose (module);   /* it stays: core made it resident */
  return count;
}

static gint64
backend_fp32_products (EsBackend *be, Fp32CountFunc count)
{
  return count != NULL ? MAX (count (be), 0) : 0;
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

static guint auto_threads (const EsModel *model, guint batch);

char *
espalier_trainer_describe_plan (EspalierTrainer *self)
{
  EsTrainConfig cfg;
  EsMemPlan plan;
  GString *s;
  char a[32];
  guint batch;

  g_return_val_if_fail (ESPALIER_IS_TRAINER (self), NULL);

  batch = self->micro_batch ? self->micro_batch : self->opts.batch_size;
  cfg = self->opts.engine;
  /* the layout of the backend the run will have (a GPU's workspace differs) */
  cfg.plan_cuda = self->opts.device >= 0
                  || (self->opts.device == ESPALIER_DEVICE_AUTO && espalier_cuda_device_count () > 0);
  cfg.plan_prefetch = cfg.plan_cuda && self->dist == NULL;
  cfg.plan_threads = (int) (self->opts.threads ? self->opts.threads
                                               : auto_threads (self->model, batch));
  es_mem_plan (self->model, &cfg, (int) batch, TRUE, &plan);
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

/* An engine batch of resident rows: rows (B, dataset row numbers). */
static void
to_resident (EsBatch *eb, EsResident *res, const guint32 *rows)
{
  eb->resident = res;
  eb->rows = (const int32_t *) rows;   /* below INT32_MAX: es_resident_new checked */
  eb->x_f32 = NULL;
  eb->x_u8 = NULL;
  eb->labels = NULL;
  eb->targets = NULL;
}

/* Loss and accuracy of tr on rows, with the confusion matrix when metrics wants it.
 * nan_first (ESPALIER_TEST_EVAL_FAIL, espalier-distributed.h): the first row's first
 * input is a NaN (batches from host memory). */
static gboolean
evaluate_rows (EsTrainer         *tr,
               EspalierDataset   *ds,
               const guint32     *rows,
               guint              n_rows,
               guint              batch,
               gboolean           bce,
               EsResident        *res,
               gboolean           nan_first,
               EspalierMetrics   *metrics,
               GCancellable      *cancellable,
               GError           **error)
{
  g_autofree gint32 *pred = g_new0 (gint32, batch);
  g_autofree float *bce_targets = bce ? g_new0 (float, batch) : NULL;
  g_autofree float *nan_x = NULL;   /* (B, F) the poisoned copy of the first batch */
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
  if (!espalier_batcher_prepare (batcher, error))
    {
      espalier_batcher_free (batcher);
      return FALSE;
    }
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
      if (res != NULL)
        to_resident (&eb, res, b->rows);
      else if (nan_first)
        {
          gsize n = (gsize) b->B * espalier_dataset_get_row_size (ds);

          nan_x = g_new (float, MAX (n, 1));
          for (gsize i = 0; i < n; i++)
            nan_x[i] = b->x != NULL ? b->x[i] : b->x_u8[i] * b->scale + b->shift;
          nan_x[0] = NAN;
          eb.x_f32 = nan_x;
          eb.x_u8 = NULL;
          nan_first = FALSE;
        }
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
  EsBackend           *be;            /* for the fp32 fallbacks' count, or NULL */
  Fp32CountFunc        fp32_count;    /* be's counter of them, or NULL */
} Reporter;

/* Pass p to the callback, then free its snapshot unless the callback took it (the async
 * path does, see post_progress). */
static void
report (Reporter *rep, EspalierProgress *p)
{
  if (rep->dist != NULL)
    espalier_distributed_fill_progress (rep->dist, p);
  p->fp32_products = backend_fp32_products (rep->be, rep->fp32_count);
  if (rep->func != NULL)
    rep->func (p, rep->data);
  g_clear_pointer (&p->snapshot, es_model_free);
}

/* A copy of the weights as they are now on the device, or NULL when there is no memory
 * for one: the snapshot is for display, the run goes on without it. */
static EsModel *
snapshot (EsTrainer *tr, EsModel *model)
{
  g_autoptr(GError) error = NULL;
  EsModel *copy;

  es_trainer_sync (tr);
  copy = espalier_model_try_copy (model, "the snapshot", &error);
  if (copy == NULL)
    g_debug ("%s", error->message);
  return copy;
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

/* ---- checkpoints and the last good state -----------------------------------------
 * Every good_every optimizer steps (the checkpoint interval, or ESPALIER_LAST_GOOD_EVERY
 * without checkpoints) and when the run starts, the weights, buffers and optimizer state
 * are copied to the host when they are all finite: the last good state. A checkpoint is
 * written from that copy. When the loss turns NaN or infinite the run goes back to it,
 * so a user loses at most good_every steps. */

typedef struct {
  EspalierTrainer   *self;
  EsTrainer         *tr;
  /* the run's early stopping and gradual pruning state (its locals) */
  gboolean          *have_best;
  double            *best_val;
  guint             *best_epoch, *bad_epochs;
  float             *best;          /* (P + Q) */
  gint64            *next_event;
  /* where the run stands */
  guint              epoch;
  guint64            position;      /* rows of the epoch's order handed out */
  const EsStepStats *stats;         /* the epoch's training sums so far */
  gint64             steps_seen;
  /* the last good state: parameters, buffers, optimizer state of step good_step */
  guint              good_every;
  gint64             good_step;
  float             *good, *scratch;  /* (P + Q + slots P) each */
} RunState;

static gboolean
floats_finite (const float *v, gsize n)
{
  for (gsize i = 0; i < n; i++)
    if (!isfinite (v[i]))
      return FALSE;
  return TRUE;
}

/* Take the device state as the last good one when it is finite. */
static gboolean
keep_last_good (RunState *rs)
{
  EsModel *m = rs->self->model;
  gsize P = (gsize) es_model_n_params (m), Q = (gsize) es_model_n_buffers (m);
  gsize n = P + Q + (gsize) es_trainer_state_slots (rs->tr) * P;
  gint64 step = 0;
  float *t;

  es_trainer_sync (rs->tr);
  memcpy (rs->scratch, es_model_params_const (m), P * sizeof (float));
  if (Q > 0)
    memcpy (rs->scratch + P, es_model_buffers_const (m), Q * sizeof (float));
  es_trainer_get_state (rs->tr, &step, rs->scratch + P + Q);
  if (!floats_finite (rs->scratch, n))
    return FALSE;
  t = rs->good;
  rs->good = rs->scratch;
  rs->scratch = t;
  rs->good_step = step;
  return TRUE;
}

/* Put the last good state back on the device and in the model. */
static void
restore_last_good (RunState *rs)
{
  EsModel *m = rs->self->model;
  gsize P = (gsize) es_model_n_params (m), Q = (gsize) es_model_n_buffers (m);
  EsError es = { 0 };

  memcpy (es_model_params (m), rs->good, P * sizeof (float));
  if (Q > 0)
    memcpy (es_model_buffers (m), rs->good + P, Q * sizeof (float));
  es_trainer_reload (rs->tr, true);
  es_trainer_set_state (rs->tr, rs->good_step, rs->good + P + Q, &es);
  es_trainer_sync (rs->tr);   /* the mask, if any, applied to the model too */
}

/* Where the values went bad, as a whole sentence (translators get sentences, not
 * pieces): layer (from 0; -1: nowhere) of kind what; there: on another rank. */
static char *
nonfinite_where (EspalierTrainer *self, int layer, EsNonfiniteKind what, gboolean there)
{
  const char *kind;

  if (layer < 0)
    return g_strdup (there ? _("Every layer's values are finite there: the loss itself overflowed.")
                           : _("Every layer's values are finite: the loss itself overflowed."));
  /* layers numbered from 1, as espalier-cli info prints them */
  kind = es_layer_kind_name (es_model_layer (self->model, layer)->spec.kind);
  switch (what)
    {
    case ES_NONFINITE_PARAMS:
      return g_strdup_printf (there ? _("The first layer whose values went bad there is layer %d (%s), in its weights.")
                                    : _("The first layer whose values went bad is layer %d (%s), in its weights."),
                              layer + 1, kind);
    case ES_NONFINITE_ACTIVATIONS:
      return g_strdup_printf (there ? _("The first layer whose values went bad there is layer %d (%s), in its outputs.")
                                    : _("The first layer whose values went bad is layer %d (%s), in its outputs."),
                              layer + 1, kind);
    default:
      return g_strdup_printf (there ? _("The first layer whose values went bad there is layer %d (%s), in its gradients.")
                                    : _("The first layer whose values went bad is layer %d (%s), in its gradients."),
                              layer + 1, kind);
    }
}

typedef enum { LOSS_INFINITE, LOSS_NAN, LOSS_NOT_FINITE } BadLoss;

/* The loss turned bad (NaN, infinite or one of them) at step: find where, go back to
 * the last good state, and say both. */
static void
numeric_stop (RunState *rs, guint epoch, gint64 step, BadLoss bad, GError **error)
{
  EsNonfiniteKind what = ES_NONFINITE_NONE;
  int layer = es_trainer_find_nonfinite (rs->tr, &what);
  g_autofree char *where = nonfinite_where (rs->self, layer, what, FALSE);
  g_autofree char *head = NULL, *tail = NULL;

  restore_last_good (rs);
  head = g_strdup_printf (bad == LOSS_NAN ? _("Training stopped at step %lld (epoch %u): the loss became NaN.")
                          : bad == LOSS_INFINITE ? _("Training stopped at step %lld (epoch %u): the loss became infinite.")
                          : _("Training stopped at step %lld (epoch %u): the loss became NaN or infinite."),
                          (long long) step, epoch);
  tail = g_strdup_printf (_("The model holds the weights of step %lld, the last good state."),
                          (long long) rs->good_step);
  g_clear_error (error);
  /* TRANSLATORS: three whole sentences in a row; languages that write no space
   * between sentences write "%s%s%s" */
  g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC, C_("sentences", "%s %s %s"), head,
               where, tail);
}

/* Data parallel: every rank failed this step alike (a bad loss is carried through the
 * gradient reduction, es-train.h). The ranks agree on whose loss went bad and where
 * (that rank alone looks), every rank goes back to the last good state and holds the
 * same message, shared, for rank 0 to show. own: this rank's loss went bad (nan: NaN,
 * else infinite). A rank whose backend failed (backend_ok FALSE: error holds why) takes
 * part and keeps its own error. */
static void
numeric_stop_ranks (RunState *rs, guint epoch, gint64 step, gboolean own, gboolean nan,
                    gboolean backend_ok, GError **error)
{
  EsNonfiniteKind what = ES_NONFINITE_NONE, bad_what;
  int layer = -1, bad_layer, bad;
  gboolean bad_nan, bad_failed;
  g_autofree char *head = NULL, *where = NULL, *tail = NULL;

  own = own && backend_ok;
  if (own)
    layer = es_trainer_find_nonfinite (rs->tr, &what);
  bad = espalier_distributed_agree_nonfinite (rs->self->dist, own, !backend_ok, nan, layer, what,
                                              &bad_failed, &bad_nan, &bad_layer, &bad_what);
  restore_last_good (rs);
  if (!backend_ok)
    return;
  tail = g_strdup_printf (_("Every rank holds the weights of step %lld, the last good state."),
                          (long long) rs->good_step);
  if (bad >= 0 && bad_failed)
    head = g_strdup_printf (_("Training stopped at step %lld (epoch %u): the device of rank %d "
                              "failed (that rank says how)."),
                            (long long) step, epoch, bad);
  else if (bad >= 0)
    {
      head = g_strdup_printf (bad_nan ? _("Training stopped at step %lld (epoch %u): the loss of rank %d became NaN.")
                                      : _("Training stopped at step %lld (epoch %u): the loss of rank %d became infinite."),
                              (long long) step, epoch, bad);
      where = nonfinite_where (rs->self, bad_layer, bad_what, TRUE);
    }
  else
    head = g_strdup_printf (_("Training stopped at step %lld (epoch %u): the gradients summed "
                              "over the ranks became NaN or infinite."),
                            (long long) step, epoch);
  g_clear_error (error);
  if (where != NULL)
    g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC, C_("sentences", "%s %s %s"), head,
                 where, tail);
  else
    /* TRANSLATORS: two whole sentences in a row; languages that write no space between
     * sentences write "%s%s" */
    g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC, C_("sentences", "%s %s"), head,
                 tail);
}

/* Data parallel, after this rank's validation pass of epoch (val_ok: it succeeded, else
 * error says why; device_ok FALSE: its device failed, which error says): the ranks
 * agree whether any rank's failed (espalier_distributed_share_failure), one small
 * reduction. When one did, every rank goes back to the last good state (the current one
 * when it is finite: the ranks hold the same weights, which a failed pass does not
 * change) and fails with that rank's error, shared, for rank 0 to show; a rank whose
 * device failed keeps its own. FALSE then. */
static gboolean
validation_agree (RunState *rs, guint epoch, gboolean val_ok, gboolean device_ok,
                  GError **error)
{
  g_autoptr(GError) local = NULL;
  g_autofree char *tail = NULL;

  if (!val_ok)
    {
      if (error != NULL && *error != NULL)
        local = g_steal_pointer (error);
      if (device_ok && local != NULL
          && g_error_matches (local, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC))
        {
          EsNonfiniteKind what = ES_NONFINITE_NONE;
          int layer = es_trainer_find_nonfinite (rs->tr, &what);
          g_autofree char *where = nonfinite_where (rs->self, layer, what, FALSE);
          g_autofree char *head = g_strdup_printf (
              strstr (local->message, "NaN") != NULL
                ? _("Validation after epoch %u stopped: the loss on this rank's validation rows became NaN.")
                : _("Validation after epoch %u stopped: the loss on this rank's validation rows became infinite."),
              epoch);

          g_clear_error (&local);
          g_set_error (&local, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC, C_("sentences", "%s %s"),
                       head, where);
        }
      else if (device_ok && local != NULL)
        {
          /* a sentence, as the last good state's follows it */
          g_autofree char *text = g_strdup (local->message);
          GQuark domain = local->domain;
          int code = local->code;

          if (g_str_has_suffix (text, "."))
            text[strlen (text) - 1] = '\0';
          g_clear_error (&local);
          g_set_error (&local, domain, code, _("Validation after epoch %u failed: %s."), epoch,
                       text);
        }
    }
  if (espalier_distributed_share_failure (rs->self->dist, val_ok, !device_ok, &local))
    return TRUE;
  if (!device_ok)
    {
      g_propagate_error (error, g_steal_pointer (&local));   /* the job ends with it */
      return FALSE;
    }
  keep_last_good (rs);
  restore_last_good (rs);
  tail = g_strdup_printf (_("Every rank holds the weights of step %lld, the last good state."),
                          (long long) rs->good_step);
  g_clear_error (error);
  if (local != NULL)
    g_set_error (error, local->domain, local->code, C_("sentences", "%s %s"), local->message,
                 tail);
  return FALSE;
}

static gboolean check_backend (EsBackend *be, GError **error);

/* Data parallel, after this rank's gradual pruning event (pruned: it succeeded, else
 * error says why). Every rank prunes the same weights alike at the same step, so the
 * arguments, the sparsity and the mask are the same everywhere; but its allocations
 * (the host's candidate lists, the device's mask under a memory limit or on a GPU
 * another process shares) can fail on one rank alone. So at each event (a few per
 * run) the ranks agree whether any failed (espalier_distributed_share_failure, one
 * small reduction) and, when one did, every rank stops with its error, shared; a rank
 * whose device failed keeps its own. The ranks' weights may then differ (pruned on some
 * only): nothing is saved from a failed run, and the last checkpoint was written before
 * the event. FALSE then. (No caller runs a schedule on ranks yet: espalier-cli train
 * --distributed sets none and the prune command runs in one process; this keeps the
 * pair from ending in the collective timeout once one does.) */
static gboolean
prune_agree (RunState *rs, EsBackend *be, gboolean pruned, GError **error)
{
  EspalierDistributed *dist = rs->self->dist;

  if (dist == NULL || espalier_distributed_size (dist) == 1)
    return pruned;
  return espalier_distributed_share_failure (dist, pruned, !pruned && !check_backend (be, error),
                                             error);
}

/* The hooks' state into ck (an EspalierCheckpointFillFunc: data-parallel checkpoints
 * get it too). */
static void
fill_hooks (EspalierCheckpoint *ck, gpointer data)
{
  RunState *rs = data;
  EspalierTrainer *self = rs->self;
  gsize P = (gsize) es_model_n_params (self->model), Q = (gsize) es_model_n_buffers (self->model);

  ck->have_best = *rs->have_best;
  ck->best_val = *rs->best_val;
  ck->best_epoch = *rs->best_epoch;
  ck->bad_epochs = *rs->bad_epochs;
  if (*rs->have_best)
    ck->best = g_memdup2 (rs->best, (P + Q) * sizeof (float));
  if (self->fq_layers != NULL)
    {
      guint L = (guint) es_model_n_layers (self->model);

      ck->n_layers = L;
      ck->range_lo = g_new0 (float, L);
      ck->range_hi = g_new0 (float, L);
      ck->range_set = g_new0 (gboolean, L);
      for (guint i = 0; i < L; i++)
        ck->range_set[i] = es_trainer_get_input_range (rs->tr, (int) i, &ck->range_lo[i],
                                                       &ck->range_hi[i]);
    }
  if (self->gradual)
    ck->next_event = *rs->next_event;
  for (guint i = 0; i < self->prune_events->len; i++)
    {
      const EspalierPruneEvent *ev = &g_array_index (self->prune_events, EspalierPruneEvent, i);
      EspalierCheckpointPruneEvent cev = { ev->step, ev->target, ev->sparsity };

      g_array_append_val (ck->prune_events, cev);
    }
  if (self->run_mask != NULL)
    ck->mask = g_memdup2 (es_mask_data_const (self->run_mask), P);
  /* fp16: the loss scaler's state, read from the device when it decides there */
  ck->have_scaler = es_trainer_get_loss_scaler (rs->tr, &ck->loss_scale, &ck->scale_clean,
                                                &ck->skipped_steps);
}

/* The hooks' state from ck, after the weights and optimizer state are back. */
static gboolean
restore_hooks (RunState *rs, const EspalierCheckpoint *ck, GError **error)
{
  EspalierTrainer *self = rs->self;
  gsize P = (gsize) es_model_n_params (self->model), Q = (gsize) es_model_n_buffers (self->model);
  EsError es = { 0 };

  *rs->have_best = ck->have_best && ck->best != NULL;
  if (*rs->have_best)
    memcpy (rs->best, ck->best, (P + Q) * sizeof (float));
  *rs->best_val = ck->best_val;
  *rs->best_epoch = ck->best_epoch;
  *rs->bad_epochs = ck->bad_epochs;
  for (guint i = 0; i < ck->n_layers; i++)
    if (ck->range_set[i]
        && (self->fq_layers == NULL || i >= (guint) es_model_n_layers (self->model)
            || !es_trainer_set_input_range (rs->tr, (int) i, ck->range_lo[i], ck->range_hi[i])))
      {
        g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                     _("Cannot resume: the checkpoint was trained with fake quantization on "
                       "layer %u and this run does not fake-quantize it"),
                     i + 1);
        return FALSE;
      }
  if (self->gradual)
    *rs->next_event = ck->next_event;
  g_array_set_size (self->prune_events, 0);
  for (guint i = 0; i < ck->prune_events->len; i++)
    {
      const EspalierCheckpointPruneEvent *cev =
          &g_array_index (ck->prune_events, EspalierCheckpointPruneEvent, i);
      EspalierPruneEvent ev = { cev->step, cev->target, cev->sparsity };

      g_array_append_val (self->prune_events, ev);
    }
  if (ck->mask != NULL)
    {
      if (self->run_mask == NULL)
        self->run_mask = es_mask_new (self->model);
      memcpy (es_mask_data (self->run_mask), ck->mask, P);
      if (!es_trainer_set_mask (rs->tr, es_mask_data_const (self->run_mask), &es))
        {
          espalier_error_from_es (error, &es, _("Cannot resume"));
          return FALSE;
        }
    }
  /* a run that does not scale (not fp16, or moved to the CPU in fp32) has no use for
   * the scale; one without it in the checkpoint starts from the initial scale */
  if (ck->have_scaler
      && !es_trainer_set_loss_scaler (rs->tr, ck->loss_scale, ck->scale_clean, ck->skipped_steps,
                                      &es)
      && es.code != ES_ERR_UNSUPPORTED)
    {
      espalier_error_from_es (error, &es, _("Cannot resume"));
      return FALSE;
    }
  return TRUE;
}

/* A single-process run continues from ck: weights, optimizer state, history, hooks. */
static gboolean
resume_from (RunState *rs, const EspalierCheckpoint *ck, guint n_train, GError **error)
{
  EspalierTrainer *self = rs->self;
  EsModel *m = self->model;
  EsError es = { 0 };

  if (!espalier_checkpoint_fits_model (ck, m, error))
    {
      g_prefix_error (error, _("Cannot resume: "));
      return FALSE;
    }
  if (ck->n_slots != es_trainer_state_slots (rs->tr))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("Cannot resume: the checkpoint was written with another optimizer (%d "
                     "state vectors, this one has %d)"),
                   ck->n_slots, es_trainer_state_slots (rs->tr));
      return FALSE;
    }
  if (ck->info.seed != self->opts.seed || ck->n_train != n_train)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("Cannot resume: the checkpoint was written with seed %llu on %u training "
                     "rows, this run has seed %llu and %u rows: give the same seed and data"),
                   (unsigned long long) ck->info.seed, ck->n_train,
                   (unsigned long long) self->opts.seed, n_train);
      return FALSE;
    }
  memcpy (es_model_params (m), ck->params, (gsize) ck->n_params * sizeof (float));
  if (ck->n_buffers > 0)
    memcpy (es_model_buffers (m), ck->buffers, (gsize) ck->n_buffers * sizeof (float));
  es_trainer_reload (rs->tr, true);
  if (!es_trainer_set_state (rs->tr, ck->info.step, ck->slots, &es))
    {
      espalier_error_from_es (error, &es, _("Cannot resume"));
      return FALSE;
    }
  g_array_append_vals (self->history, ck->history->data, ck->history->len);
  return restore_hooks (rs, ck, error);
}

/* Write the last good state (just taken) to the checkpoint file. */
static gboolean
write_checkpoint (RunState *rs, GError **error)
{
  EspalierTrainer *self = rs->self;
  EsModel *m = self->model;
  gsize P = (gsize) es_model_n_params (m), Q = (gsize) es_model_n_buffers (m);
  g_autoptr(EspalierCheckpoint) ck = espalier_checkpoint_new ();

  ck->info = (EspalierCheckpointInfo) {
    .epoch = rs->epoch, .position = rs->position, .step = rs->good_step, .ranks = 1,
    .batch = self->opts.batch_size, .seed = self->opts.seed,
  };
  ck->spec = espalier_model_to_spec (m);
  ck->n_params = (gint64) P;
  ck->n_buffers = (gint64) Q;
  ck->n_train = self->split->train->len;
  ck->loss_sum = rs->stats->loss_sum;
  ck->correct = rs->stats->correct;
  ck->rows = rs->stats->rows;
  g_array_append_vals (ck->history, self->history->data, self->history->len);
  ck->params = g_memdup2 (rs->good, P * sizeof (float));
  if (Q > 0)
    ck->buffers = g_memdup2 (rs->good + P, Q * sizeof (float));
  ck->n_slots = es_trainer_state_slots (rs->tr);
  if (ck->n_slots > 0)
    ck->slots = g_memdup2 (rs->good + P + Q, (gsize) ck->n_slots * P * sizeof (float));
  fill_hooks (ck, rs);
  if (!espalier_checkpoint_save (ck, self->ck_path, error))
    return FALSE;
  self->last_ck = ck->info;
  self->have_last_ck = TRUE;
  return TRUE;
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

/* The backend for device (espalier-device.h), the CPU's with threads: a CUDA device
 * asked for by index that cannot start leaves the work on the CPU, and rep (may be
 * NULL) tells the user why. */
static EsBackend *
make_backend (gint        device,
              gboolean    tf32,
              guint       threads,
              EsBudget   *budget,
              Reporter   *rep,
              GError    **error)
{
  g_autofree char *fallback = NULL;
  EsBackend *be = espalier_backend_new (device, threads, budget, tf32, &fallback, error);

  if (fallback != NULL && rep != NULL)
    report_message (rep, fallback);
  return be;
}

/* After work on be: a CUDA failure recorded in it (with its call, file and line)
 * becomes the error, replacing what it caused (NaN losses); FALSE then. */
static gboolean
check_backend (EsBackend *be, GError **error)
{
  GError *device_error = NULL;

  if (be == NULL || espalier_backend_check (be, &device_error))
    return TRUE;
  g_clear_error (error);
  g_propagate_error (error, device_error);
  return FALSE;
}

/* ---- feeding a CUDA device -------------------------------------------------------
 * On a CUDA backend a step of a small model is a few microseconds of work, less than
 * a copy or a wait for the host would cost, so the steps are fed without either:
 * - the dataset (every row, so the training, validation and test rows alike) uploaded
 *   once (es_resident_new) when it fits the memory budget beside the training and no
 *   augmentation needs batches made on the host; the batches, in the batcher's order,
 *   then name their rows by index. Otherwise the host batches go up one ahead through
 *   pinned memory on a copy stream (es_trainer_prefetch).
 * - the loss and the correct rows added up on the device (deferred statistics; the
 *   steps then replay as CUDA Graphs, es_trainer_set_graphs) and read at each progress
 *   report, every FEED_READ_EVERY batches, before the last good state is taken and at
 *   the epoch's end. A loss gone bad is noticed at the reading: the engine stopped
 *   updating at its step, and the batches since the last reading are kept so that the
 *   bad one runs again, eagerly, to find the first bad layer as the eager path does.
 * Profiling times eager steps: with it on, only the data is fed so. For comparing the
 * paths (tests, bug reports): ESPALIER_CUDA_RESIDENT=0, ESPALIER_CUDA_DEFERRED=0 and
 * ESPALIER_CUDA_GRAPHS=0 in the environment turn each off. */

#define FEED_READ_EVERY 64

typedef struct {
  gint64   step;          /* optimizer steps done before it */
  int      B;
  gsize    off;           /* its bytes in Feed.store: rows, or inputs, labels, targets */
  gboolean u8, labels, targets;
  float    scale, shift;
} FeedBatch;

typedef struct {
  EsResident *res;        /* the dataset on the device, or NULL */
  gboolean    deferred;   /* statistics on the device until read */
  gboolean    prefetch;   /* host batches uploaded one ahead */
  gsize       D, T;       /* input values and targets per row */
  GArray     *kept;       /* (FeedBatch) the training batches since the last reading */
  GByteArray *store;      /* their rows or data, each part 8-byte aligned */
} Feed;

static gboolean
env_off (const char *name)
{
  return g_strcmp0 (g_getenv (name), "0") == 0;
}

/* Choose how the steps on be are fed; reports what the user should know (rep). reserve:
 * the bytes the run will still charge to budget beyond what it holds now, which a
 * dataset kept on the device must leave free. */
static void
feed_setup (Feed            *feed,
            EspalierTrainer *self,
            EsTrainer       *tr,
            EsBackend       *be,
            EsBudget        *budget,
            gboolean         bce,
            gboolean         augment,
            gboolean         profiling,
            gsize            reserve,
            Reporter        *rep)
{
  EspalierDataset *ds = self->dataset;
  guint n = espalier_dataset_get_n_rows (ds);
  gboolean u8 = espalier_dataset_is_u8 (ds);
  gboolean xent = self->opts.engine.loss == ES_LOSS_SOFTMAX_XENT;
  const gint32 *labels = xent || bce ? espalier_dataset_get_labels (ds) : NULL;
  const float *targets = xent || bce ? NULL : espalier_dataset_get_targets (ds);
  g_autofree float *label_targets = NULL;
  gsize limit = es_budget_limit (budget), used, need;
  EsError es = { 0 };

  memset (feed, 0, sizeof *feed);
  feed->D = espalier_dataset_get_row_size (ds);
  feed->T = bce ? 1 : targets != NULL ? espalier_dataset_get_n_targets (ds) : 0;
  if (espalier_backend_get_device (be) == ESPALIER_DEVICE_CPU || self->dist != NULL)
    return;
  feed->deferred = !profiling && !env_off ("ESPALIER_CUDA_DEFERRED");
  es_trainer_set_deferred_stats (tr, feed->deferred);
  if (env_off ("ESPALIER_CUDA_GRAPHS"))
    es_trainer_set_graphs (tr, false);
  feed->kept = g_array_new (FALSE, FALSE, sizeof (FeedBatch));
  feed->store = g_byte_array_new ();
  feed->prefetch = TRUE;
  if (env_off ("ESPALIER_CUDA_RESIDENT") || n == 0 || (xent ? labels == NULL
                                                         : labels == NULL && targets == NULL))
    return;
  if (augment)
    {
      report_message (rep, _("Augmentation makes every batch on the host: the dataset is not "
                             "kept on the device, each batch is copied to it one step ahead"));
      return;
    }
  need = (gsize) n * (feed->D * (u8 ? 1 : sizeof (float)) + (xent ? sizeof (gint32) : 0)
                      + feed->T * sizeof (float));
  used = es_budget_used (budget);
  if (limit == 0 || used + need + reserve <= limit)
    {
      if (bce && labels != NULL && (label_targets = g_try_new (float, n)) != NULL)
        for (guint r = 0; r < n; r++)
          label_targets[r] = (float) labels[r];
      if (!bce || label_targets != NULL)
        feed->res = es_resident_new (be, u8 ? espalier_dataset_get_u8 (ds) : NULL,
                                     u8 ? NULL : espalier_dataset_get_f32 (ds), n,
                                     (int64_t) feed->D, xent ? labels : NULL,
                                     bce ? label_targets : targets, (int64_t) feed->T, &es);
      if (feed->res != NULL)
        {
          feed->prefetch = FALSE;
          return;
        }
      if (es.code == ES_ERR_UNSUPPORTED)
        return;
    }
  {
    g_autofree char *size = g_format_size (need);
    /* what is left once the training has all it will take */
    g_autofree char *left = g_format_size (limit > used + reserve ? limit - used - reserve : 0);
    g_autofree char *msg = limit > 0
        ? g_strdup_printf (_("The dataset (%s) does not fit in the device's memory budget "
                             "beside the training (%s left): each batch is copied to the "
                             "device one step ahead"), size, left)
        : g_strdup_printf (_("The dataset (%s) cannot be kept on the device (%s): each batch "
                             "is copied to it one step ahead"), size, es.message);

    report_message (rep, msg);
  }
}

static void
feed_clear (Feed *feed)
{
  g_clear_pointer (&feed->res, es_resident_free);
  g_clear_pointer (&feed->kept, g_array_unref);
  g_clear_pointer (&feed->store, g_byte_array_unref);
}

/* Start the upload of a host batch about to be trained on: the device is still busy
 * with the steps queued before it. */
static void
feed_prefetch (Feed *feed, EsTrainer *tr, const EsBatch *eb)
{
  EsError es = { 0 };

  if (feed->prefetch && eb->resident == NULL && eb->B <= es_trainer_micro_batch (tr)
      && !es_trainer_prefetch (tr, eb, &es))
    feed->prefetch = FALSE;   /* the batches load as usual */
}

static void
store_append (GByteArray *store, const void *data, gsize bytes)
{
  static const guint8 zeros[8] = { 0 };

  g_byte_array_append (store, data, (guint) bytes);
  if (bytes % 8 != 0)
    g_byte_array_append (store, zeros, (guint) (8 - bytes % 8));
}

/* Keep a batch just queued with deferred statistics (step: the optimizer steps done
 * before it), until the next reading. */
static void
feed_keep (Feed *feed, const EsBatch *eb, gint64 step)
{
  FeedBatch fb = { .step = step, .B = eb->B, .u8 = eb->x_u8 != NULL,
                   .labels = eb->labels != NULL, .targets = eb->targets != NULL,
                   .scale = eb->scale, .shift = eb->shift };
  gsize B = (gsize) eb->B;

  if (!feed->deferred)
    return;
  fb.off = feed->store->len;
  if (eb->resident != NULL)
    store_append (feed->store, eb->rows, B * sizeof (int32_t));
  else
    {
      if (eb->x_u8 != NULL)
        store_append (feed->store, eb->x_u8, B * feed->D);
      else
        store_append (feed->store, eb->x_f32, B * feed->D * sizeof (float));
      if (eb->labels != NULL)
        store_append (feed->store, eb->labels, B * sizeof (int32_t));
      if (eb->targets != NULL)
        store_append (feed->store, eb->targets, B * feed->T * sizeof (float));
    }
  g_array_append_val (feed->kept, fb);
}

/* The engine batch of a kept one (pointing into feed->store). */
static void
feed_rebuild (Feed *feed, const FeedBatch *fb, EsBatch *eb)
{
  const guint8 *p = feed->store->data + fb->off;
  gsize B = (gsize) fb->B, xb = B * feed->D * (fb->u8 ? 1 : sizeof (float));

  memset (eb, 0, sizeof *eb);
  eb->B = fb->B;
  eb->scale = fb->scale;
  eb->shift = fb->shift;
  if (feed->res != NULL)
    {
      to_resident (eb, feed->res, (const guint32 *) p);
      return;
    }
  if (fb->u8)
    eb->x_u8 = p;
  else
    eb->x_f32 = (const float *) p;
  p += (xb + 7) / 8 * 8;
  if (fb->labels)
    {
      eb->labels = (const int32_t *) p;
      p += (B * sizeof (int32_t) + 7) / 8 * 8;
    }
  if (fb->targets)
    eb->targets = (const float *) p;
}

/* The engine's reading found a loss that was not finite: it stopped updating at that
 * step. Run the step's batches again, eagerly, from the same weights: it fails again
 * as it would have on the eager path, and numeric_stop finds the first bad layer in
 * what it left and goes back to the last good state. The kept batches are tagged with
 * the steps counted on the host, one a step since the last reading; fp16 steps the
 * device skipped in that window (skipped_before: the count at the last reading) were
 * counted there but are not steps, so the bad step's batches carry the tag of the
 * steps applied plus those skipped. */
static void
feed_numeric_stop (Feed *feed, RunState *rs, gint64 skipped_before, GError **error)
{
  gint64 good = es_trainer_step_count (rs->tr);   /* put back to the steps applied */
  gint64 tag = good + MAX (es_trainer_skipped_steps (rs->tr) - skipped_before, 0);

  es_trainer_set_deferred_stats (rs->tr, false);
  feed->deferred = FALSE;
  for (guint i = 0; i < feed->kept->len; i++)
    {
      const FeedBatch *fb = &g_array_index (feed->kept, FeedBatch, i);
      EsError es = { 0 };
      EsBatch eb;

      if (fb->step != tag)
        continue;
      feed_rebuild (feed, fb, &eb);
      if (!es_trainer_train_batch (rs->tr, &eb, NULL, &es))
        {
          if (es.code != ES_ERR_NUMERIC)
            break;
          numeric_stop (rs, rs->epoch, good + 1,
                        strstr (es.message, "NaN") != NULL ? LOSS_NAN : LOSS_INFINITE, error);
          return;
        }
    }
  /* not again (or it failed otherwise): the reading's step, in its words */
  numeric_stop (rs, rs->epoch, good + 1, LOSS_NOT_FINITE, error);
}

/* Add the statistics counted on the device since the last reading into stats; FALSE
 * and error when a loss was not finite (the model then holds the last good state) or
 * the device failed. */
static gboolean
feed_read (Feed *feed, RunState *rs, EsBackend *be, EsStepStats *stats, GError **error)
{
  EsError es = { 0 };
  gboolean ok = TRUE;
  gint64 skipped;   /* the last reading's, until this one */

  if (!feed->deferred)
    return TRUE;
  skipped = es_trainer_skipped_steps (rs->tr);
  if (!es_trainer_read_stats (rs->tr, stats, &es))
    {
      es_trainer_sync (rs->tr);
      espalier_error_from_es (error, &es, NULL);
      if (es.code == ES_ERR_NUMERIC && check_backend (be, error))
        feed_numeric_stop (feed, rs, skipped, error);
      ok = FALSE;
    }
  g_array_set_size (feed->kept, 0);
  g_byte_array_set_size (feed->store, 0);
  return ok;
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
  gint device;                     /* o->device, or this rank's GPU */
  EsTrainer *tr = NULL;
  EspalierBatcher *batcher = NULL;
  g_autofree float *best = NULL;
  g_autofree float *bce_targets = NULL;
  EspalierMetrics vm = { 0 };      /* validation metrics of the current epoch */
  Reporter rep = { func, user_data, 0, -INFINITY, NULL, NULL, NULL };
  EsError es = { 0 };
  gsize used_before = 0;           /* charged to the budget before the trainer */
  gboolean ok = FALSE, bce, have_best = FALSE;
  double t_start, best_val = INFINITY;
  guint best_epoch = 0;
  guint bad_epochs = 0, steps_per_epoch, patience;
  guint first_epoch = 1, global_batch;  /* data parallelism: resumed epoch, rows per step */
  gint64 next_event = 0;
  RunState rs = { .self = self, .have_best = &have_best, .best_val = &best_val,
                  .best_epoch = &best_epoch, .bad_epochs = &bad_epochs,
                  .next_event = &next_event };
  guint64 skip_rows = 0;           /* resuming: rows of first_epoch already trained on */
  const EspalierCheckpoint *resumed = NULL;
  gsize n_params;
  EspalierProfile *prof = NULL;    /* self->profile when profiling */
  EspalierProfile snap;            /* what a STEP record shows of it */
  ProfileBase pbase = { 0 };
  gboolean prof_done = FALSE;      /* max_steps reached */
  gboolean prof_warm = FALSE;      /* the warm-up step is done */
  Feed feed = { 0 };               /* how a CUDA device is fed */

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
  device = o->device;
  if (device == ESPALIER_DEVICE_AUTO && self->dist != NULL && espalier_cuda_device_count () > 0)
    device = espalier_distributed_local_rank (self->dist)
             % (gint) espalier_cuda_device_count ();  /* one GPU per rank of a machine */
  be = make_backend (device, o->tf32,
                     o->threads ? o->threads : auto_threads (self->model, o->batch_size),
                     budget, &rep, error);
  if (be == NULL)
    goto out;
  rep.be = be;
  rep.fp32_count = backend_fp32_counter (be);
  self->fp32_products = 0;
  self->device_used = espalier_backend_get_device (be);
  if (espalier_backend_get_device (be) == ESPALIER_DEVICE_CPU)
    es_cpu_backend_set_ftz (be, !o->keep_denormals);
  if (espalier_backend_get_device (be) == ESPALIER_DEVICE_CPU && device != ESPALIER_DEVICE_CPU
      && cfg.precision != ES_PRECISION_FP32)
    {
      /* A GPU was wanted and is not there: the run goes on as the CPU can do it. (Asked
       * of the CPU itself, 16-bit training stays the engine's error.) */
      g_autofree char *msg = g_strdup_printf (_("%s training needs a CUDA device: training "
                                                "in fp32 on the CPU instead"),
                                              es_precision_name (cfg.precision));
      report_message (&rep, msg);
      cfg.precision = ES_PRECISION_FP32;
    }
  /* On the host, the least a run takes must fit this machine, and the batches are split
   * when a full one does not (espalier-limits.h). Beside the engine's plan: the best
   * weights' copy, the last good state (two copies of weights, buffers and up to two
   * optimizer moments) and the batcher's slots (floats and bytes per row). */
  if (espalier_backend_get_device (be) == ESPALIER_DEVICE_CPU)
    {
      gsize budget_limit = o->memory_limit;
      guint64 p = (guint64) es_model_n_params (self->model);
      guint64 pq = p + (guint64) es_model_n_buffers (self->model) + 1;
      guint64 n_slots = (guint64) MAX (MAX (o->prefetch, o->data_threads), 1) + 1;
      guint64 extra = (3 * pq + 4 * p) * 4
                      + n_slots * global_batch
                        * ((guint64) espalier_dataset_get_row_size (self->dataset) * 5 + 16);

      if (!espalier_limits_check_training (self->model, &cfg, o->batch_size, extra,
                                           &budget_limit, error))
        goto out;
      es_budget_set_limit (budget, budget_limit);
    }
  /* a CUDA device is fed through uploads ahead unless the dataset stays on it: the
   * plan (and the micro-batch it allows) holds their two staged batches */
  cfg.plan_prefetch = espalier_backend_get_device (be) != ESPALIER_DEVICE_CPU
                      && self->dist == NULL;
  used_before = es_budget_used (budget);
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
    /* What the run will still charge beyond what the trainer holds now (workspaces
     * grown on first use): a dataset kept on the device must leave room for it. The
     * plan bounds everything charged from es_trainer_new on (es-train.h). */
    EsMemPlan plan;
    gsize charged = es_budget_used (budget) - MIN (used_before, es_budget_used (budget));

    cfg.plan_cuda = espalier_backend_get_device (be) != ESPALIER_DEVICE_CPU;
    cfg.plan_threads = be->n_threads;
    es_mem_plan (self->model, &cfg, (int) self->micro_batch, TRUE, &plan);
    feed_setup (&feed, self, tr, be, budget, bce,
                o->augment.shift_pixels || o->augment.hflip || o->augment.noise_std > 0,
                prof != NULL, plan.total > charged ? plan.total - charged : 0, &rep);
  }

  {
    EspalierProgress p = { .kind = ESPALIER_PROGRESS_START, .epochs = o->epochs,
                           .steps = steps_per_epoch };
    report (&rep, &p);
  }

  n_params = (gsize) es_model_n_params (self->model);
  best = espalier_try_alloc (n_params + (gsize) es_model_n_buffers (self->model) + 1,
                             sizeof (float), FALSE, _("the best weights"), error);
  if (best == NULL)
    goto out;

  /* Resuming, and the state to go back to when the loss turns NaN. */
  rs.tr = tr;
  rs.best = best;
  self->have_last_ck = FALSE;
  rs.good_every = self->ck_every > 0 ? self->ck_every : ESPALIER_LAST_GOOD_EVERY;
  {
    gsize n = (n_params + (gsize) es_model_n_buffers (self->model)
               + (gsize) es_trainer_state_slots (tr) * n_params);

    rs.good = espalier_try_alloc (n, sizeof (float), FALSE, _("the last good weights"), error);
    rs.scratch = rs.good != NULL ? espalier_try_alloc (n, sizeof (float), FALSE,
                                                       _("the last good weights"), error)
                                 : NULL;
    if (rs.scratch == NULL)
      goto out;
  }
  if (self->dist != NULL)
    {
      resumed = espalier_distributed_get_resumed (self->dist);
      espalier_distributed_set_checkpoint_fill (self->dist, fill_hooks, &rs);
    }
  else if (self->resume != NULL)
    {
      resumed = self->resume;
      if (!resume_from (&rs, resumed, self->split->train->len, error))
        goto out;
      first_epoch = resumed->info.epoch;
      skip_rows = resumed->info.position;
    }
  if (resumed != NULL && self->dist != NULL && !restore_hooks (&rs, resumed, error))
    goto out;
  if (!keep_last_good (&rs))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC,
                   _("Training cannot start: the weights or the optimizer state hold values "
                     "that are not finite (NaN or infinity)"));
      goto out;
    }
  rs.steps_seen = es_trainer_step_count (tr);
  if (bce)
    bce_targets = g_new0 (float, o->batch_size);
  batcher = espalier_batcher_new (self->dataset, (const guint32 *) self->split->train->data,
                                  self->split->train->len, global_batch, TRUE, o->seed,
                                  (o->augment.shift_pixels || o->augment.hflip || o->augment.noise_std > 0)
                                    ? &o->augment : NULL);
  espalier_batcher_set_keep_u8 (batcher, TRUE);
  if (o->data_threads > 1 || o->prefetch > 1)
    espalier_batcher_set_prefetch (batcher, MAX (o->data_threads, 1), MAX (o->prefetch, 1));
  if (!espalier_batcher_prepare (batcher, error))
    {
      g_clear_pointer (&batcher, espalier_batcher_free);
      goto out;
    }
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
      rs.epoch = epoch;
      rs.position = 0;
      rs.stats = &stats;
      if (self->dist == NULL && resumed != NULL && epoch == first_epoch)
        {
          /* the epoch's sums from before the checkpoint */
          stats.loss_sum = resumed->loss_sum;
          stats.correct = (int) resumed->correct;
          stats.rows = (int) resumed->rows;
        }
      while ((b = self->dist != NULL
                  ? espalier_distributed_next (self->dist, batcher, epoch, &stats)
                  : espalier_batcher_next (batcher)) != NULL)
        {
          EsBatch eb;
          double now;
          gint64 step_before;

          to_es_batch (b, &eb, bce_targets);
          if (self->dist == NULL)
            {
              rs.position += b->B;
              if (skip_rows > 0 && b->B <= skip_rows)
                {
                  /* resuming: trained on before the checkpoint */
                  skip_rows -= b->B;
                  step++;
                  continue;
                }
              if (skip_rows > 0)
                {
                  /* the rest of a batch the checkpoint cut (it had another batch size) */
                  guint64 D = espalier_dataset_get_row_size (self->dataset);
                  EsShape os = es_model_output_shape (self->model);
                  guint64 T = (guint64) es_shape_size (&os);

                  eb.B -= (int) skip_rows;
                  if (eb.x_f32 != NULL)
                    eb.x_f32 += skip_rows * D;
                  if (eb.x_u8 != NULL)
                    eb.x_u8 += skip_rows * D;
                  if (eb.labels != NULL)
                    eb.labels += skip_rows;
                  if (eb.targets != NULL)
                    eb.targets += skip_rows * T;
                  skip_rows = 0;
                }
            }
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
          if (self->gradual)
            {
              gint64 events_before = next_event;
              gboolean pruned = prune_if_due (self, tr, &next_event, &rep, error);

              /* with ranks, an event (due at the same step on every rank) that failed on
               * one fails every rank alike */
              if (next_event != events_before)
                pruned = prune_agree (&rs, be, pruned, error);
              if (!pruned)
                {
                  es_trainer_sync (tr);
                  goto out;
                }
            }
          if (feed.res != NULL)
            to_resident (&eb, feed.res, b->rows + (b->B - (guint) eb.B));
          feed_prefetch (&feed, tr, &eb);
          step_before = es_trainer_step_count (tr);
          if (!es_trainer_train_batch (tr, &eb, &stats, &es))
            {
              /* The step was not applied. A NaN goes back to the last good state; with
               * ranks, on every rank at once. */
              es_trainer_sync (tr);
              espalier_error_from_es (error, &es, NULL);
              if (es.code == ES_ERR_NUMERIC && self->dist != NULL
                  && espalier_distributed_size (self->dist) > 1)
                numeric_stop_ranks (&rs, epoch, es_trainer_step_count (tr) + 1,
                                    es_trainer_numeric_was_own (tr),
                                    strstr (es.message, "NaN") != NULL,
                                    check_backend (be, error), error);
              else if (es.code == ES_ERR_NUMERIC && check_backend (be, error))
                numeric_stop (&rs, epoch, es_trainer_step_count (tr) + 1,
                              strstr (es.message, "NaN") != NULL ? LOSS_NAN : LOSS_INFINITE,
                              error);
              goto out;
            }
          if (self->dist != NULL
              && !espalier_distributed_step_done (self->dist, tr, &stats, error))
            {
              es_trainer_sync (tr);
              goto out;
            }
          feed_keep (&feed, &eb, step_before);
          if (feed.deferred && feed.kept->len >= FEED_READ_EVERY
              && !feed_read (&feed, &rs, be, &stats, error))
            goto out;
          if (es_trainer_step_count (tr) != rs.steps_seen)
            {
              /* an optimizer step: keep the last good state, write the checkpoint due */
              rs.steps_seen = es_trainer_step_count (tr);
              if (rs.steps_seen % rs.good_every == 0
                  && !feed_read (&feed, &rs, be, &stats, error))
                goto out;
              /* fp16 on the device: the reading may have taken back steps it skipped */
              rs.steps_seen = es_trainer_step_count (tr);
              if (rs.steps_seen % rs.good_every == 0 && keep_last_good (&rs)
                  && self->dist == NULL && self->ck_path != NULL
                  && !write_checkpoint (&rs, error))
                {
                  es_trainer_sync (tr);
                  goto out;
                }
            }
          step++;
          now = g_get_monotonic_time () / 1e6;
          if (rep.func != NULL && (now - rep.last_step >= 1.0 / 30.0 || step == steps_per_epoch))
            {
              double done = (epoch - 1) + (double) step / steps_per_epoch;
              EspalierProgress p;

              if (!feed_read (&feed, &rs, be, &stats, error))
                goto out;
              p = (EspalierProgress) {
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
      if (!feed_read (&feed, &rs, be, &stats, error))
        goto out;
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
          int fault = 0;   /* ESPALIER_TEST_EVAL_FAIL's, on this rank */
          gboolean val_ok;

          if (self->dist != NULL)
            {
              espalier_distributed_shard (self->dist, vn, &v0, &vn);
              fault = espalier_distributed_test_eval_fault (self->dist, epoch, error);
            }
          val_ok = fault >= 0
                   && evaluate_rows (tr, self->dataset,
                                     (const guint32 *) self->split->val->data + v0, vn,
                                     MAX (o->batch_size, 256), bce, feed.res, fault > 0, &vm,
                                     cancellable, error);
          if (!val_ok)
            es_trainer_sync (tr);
          /* with ranks, a failure of one rank's pass fails every rank alike */
          if (self->dist != NULL && espalier_distributed_size (self->dist) > 1
              && !validation_agree (&rs, epoch, val_ok, val_ok || check_backend (be, error),
                                    error))
            goto out;
          if (!val_ok
              || (self->dist != NULL
                  && !espalier_distributed_reduce_metrics (self->dist, &vm, error)))
            {
              es_trainer_sync (tr);
              /* weights gone bad in the last step: go back to the last good state */
              if (error != NULL && g_error_matches (*error, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC)
                  && check_backend (be, error))
                numeric_stop (&rs, epoch, es_trainer_step_count (tr),
                              strstr ((*error)->message, "NaN") != NULL ? LOSS_NAN
                                                                        : LOSS_INFINITE,
                              error);
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
      if (!prune_agree (&rs, be, prune_event (self, tr, self->schedule.final_sparsity, &rep,
                                              error),
                        error))
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
  if (!check_backend (be, error))
    ok = FALSE;
  if (tr != NULL && prof != NULL)
    {
      profile_update (self, prof, &pbase, tr, be, budget, batcher);
      es_trainer_count_denormals (tr, &prof->denormals);
    }
  feed_clear (&feed);
  if (batcher != NULL)
    espalier_batcher_free (batcher);
  if (tr != NULL)
    keep_input_ranges (self, tr);
  if (self->dist != NULL)
    espalier_distributed_set_checkpoint_fill (self->dist, NULL, NULL);
  g_clear_pointer (&self->resume, espalier_checkpoint_free);   /* used once */
  g_free (rs.good);
  g_free (rs.scratch);
  es_trainer_free (tr);
  self->fp32_products = backend_fp32_products (be, rep.fp32_count);
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
  return espalier_evaluate_device (model, dataset, rows, n_rows, loss, threads,
                                   ESPALIER_DEVICE_CPU, FALSE, NULL, metrics, error);
}

/* ---- evaluating on a CUDA device -------------------------------------------------
 * The rows to evaluate go to the device once, in their order (eval_resident), and the
 * batches then name consecutive rows of that copy (EsBatch.first): no batch, and no
 * row index, is copied from the host. When the device cannot hold them (or with
 * ESPALIER_CUDA_RESIDENT=0) the batches are copied as on the CPU, with the same
 * metrics: a gathered row is the row uploaded, converted by the same expression. */

/* rows (n) of ds on be in their order: the inputs as stored (uint8 converted as they
 * are gathered; float converted here as the batcher converts them) with the labels
 * (cross-entropy), the labels as binary targets (bce) or the targets (the other
 * losses). NULL when be cannot keep them (no such ops, the memory refused). */
static EsResident *
eval_resident (EsBackend       *be,
               EspalierDataset *ds,
               const guint32   *rows,
               guint            n,
               EsLossKind       loss,
               gboolean         bce)
{
  gsize D = espalier_dataset_get_row_size (ds);
  gboolean u8 = espalier_dataset_is_u8 (ds), xent = loss == ES_LOSS_SOFTMAX_XENT;
  const gint32 *labels = espalier_dataset_get_labels (ds);
  const float *targets = espalier_dataset_get_targets (ds);
  gsize T = xent ? 0 : bce ? 1 : espalier_dataset_get_n_targets (ds);
  float scale = espalier_dataset_get_scale (ds), shift = espalier_dataset_get_shift (ds);
  g_autofree guint8 *x8 = NULL;
  g_autofree float *xf = NULL, *t = NULL;
  g_autofree gint32 *y = NULL;
  EsError es = { 0 };

  if (n == 0 || env_off ("ESPALIER_CUDA_RESIDENT")
      || ((xent || bce) ? labels == NULL : targets == NULL || T == 0))
    return NULL;
  if (u8 ? (x8 = g_try_malloc ((gsize) n * D)) == NULL
         : (xf = g_try_malloc ((gsize) n * D * sizeof (float))) == NULL)
    return NULL;
  if (xent ? (y = g_try_new (gint32, n)) == NULL
           : (t = g_try_new (float, (gsize) n * T)) == NULL)
    return NULL;
  for (guint i = 0; i < n; i++)
    {
      gsize r = rows[i];

      if (u8)
        memcpy (x8 + i * D, espalier_dataset_get_u8 (ds) + r * D, D);
      else
        {
          const float *src = espalier_dataset_get_f32 (ds) + r * D;
          float *dst = xf + i * D;

          if (scale == 1.0f && shift == 0.0f)
            memcpy (dst, src, D * sizeof (float));
          else
            for (gsize j = 0; j < D; j++)
              dst[j] = src[j] * scale + shift;
        }
      if (xent)
        y[i] = labels[r];
      else if (bce)
        t[i] = (float) labels[r];
      else
        memcpy (t + i * T, targets + r * T, T * sizeof (float));
    }
  return es_resident_new (be, x8, xf, n, (int64_t) D, y, t, (int64_t) T, &es);
}

/* evaluate_rows on eval_resident's copy res of rows: batches of consecutive rows. */
static gboolean
evaluate_resident (EsTrainer        *tr,
                   EspalierDataset  *ds,
                   const guint32    *rows,
                   guint             n_rows,
                   guint             batch,
                   EsResident       *res,
                   EspalierMetrics  *metrics,
                   GError          **error)
{
  g_autofree gint32 *pred = g_new0 (gint32, batch);
  const gint32 *labels = espalier_dataset_get_labels (ds);
  guint n_classes = espalier_dataset_get_n_classes (ds);
  gboolean u8 = espalier_dataset_is_u8 (ds);
  EsStepStats stats = { 0 };

  metrics->rows = n_rows;
  metrics->n_classes = n_classes;
  g_clear_pointer (&metrics->confusion, g_free);
  if (n_classes > 0)
    metrics->confusion = g_new0 (guint, (gsize) n_classes * n_classes);
  for (guint r0 = 0; r0 < n_rows; r0 += batch)
    {
      EsBatch eb = { .B = (int) MIN (batch, n_rows - r0), .resident = res, .first = r0,
                     .scale = u8 ? espalier_dataset_get_scale (ds) : 1.0f,
                     .shift = u8 ? espalier_dataset_get_shift (ds) : 0.0f };
      EsError es = { 0 };

      if (!es_trainer_eval_batch (tr, &eb, &stats, pred, &es))
        {
          espalier_error_from_es (error, &es, NULL);
          return FALSE;
        }
      if (metrics->confusion != NULL && labels != NULL)
        for (guint r = 0; r < (guint) eb.B; r++)
          {
            guint32 label = (guint32) labels[rows[r0 + r]];

            if (pred[r] >= 0 && (guint) pred[r] < n_classes && label < n_classes)
              metrics->confusion[(gsize) label * n_classes + (guint) pred[r]]++;
          }
    }
  metrics->loss = stats.rows ? stats.loss_sum / stats.rows : NAN;
  metrics->accuracy = stats.rows ? (double) stats.correct / stats.rows : NAN;
  return TRUE;
}

gboolean
espalier_evaluate_device (EsModel          *model,
                          EspalierDataset  *dataset,
                          const guint32    *rows,
                          guint             n_rows,
                          EsLossKind        loss,
                          guint             threads,
                          gint              device,
                          gboolean          tf32,
                          char            **fallback,
                          EspalierMetrics  *metrics,
                          GError          **error)
{
  g_autofree guint32 *all = NULL;
  EsTrainConfig cfg;
  EsBackend *be;
  EsTrainer *tr;
  EsResident *res = NULL;
  EsError es = { 0 };
  gboolean ok, bce;
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
  be = espalier_backend_new (device, threads ? threads : auto_threads (model, batch), NULL,
                             tf32, fallback, error);
  if (be == NULL)
    return FALSE;
  tr = es_trainer_new (model, be, &cfg, (int) batch, &es);
  if (tr == NULL)
    {
      espalier_error_from_es (error, &es, _("Evaluation cannot start"));
      es_backend_free (be);
      return FALSE;
    }
  bce = loss == ES_LOSS_BCE && espalier_dataset_get_targets (dataset) == NULL;
  if (espalier_backend_get_device (be) != ESPALIER_DEVICE_CPU)
    res = eval_resident (be, dataset, rows, n_rows, loss, bce);
  ok = res != NULL
       ? evaluate_resident (tr, dataset, rows, n_rows, batch, res, metrics, error)
       : evaluate_rows (tr, dataset, rows, n_rows, batch, bce, NULL, FALSE, metrics, NULL,
                        error);
  es_resident_free (res);
  if (!check_backend (be, error))
    {
      ok = FALSE;
      espalier_metrics_clear (metrics);
    }
  es_trainer_free (tr);
  es_backend_free (be);
  return ok;
}
