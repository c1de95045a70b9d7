/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-trainer.h: training a model on a dataset over epochs: splits, the batcher
 * thread, the engine trainer, metrics per epoch, early stopping, progress and
 * cancellation. The worker never touches GTK; progress goes to a callback on the
 * worker thread (the CLI prints it) or, for the async API, to the caller's main
 * context. */
#pragma once

#include <gio/gio.h>

#include "es-prune.h"
#include "es-train.h"
#include "espalier-batcher.h"
#include "espalier-checkpoint.h"
#include "espalier-dataset.h"
#include "espalier-device.h"

G_BEGIN_DECLS

typedef struct {
  EsTrainConfig   engine;          /* loss, optimizer, lr, schedule, regularization */
  guint           epochs;          /* 10 */
  guint           batch_size;      /* 32 */
  guint           patience;        /* early stopping: epochs without a better val loss (0: off) */
  double          min_delta;       /* improvement that counts (0) */
  double          val_fraction;    /* of all rows held out for validation (0.1); of the
                                    * training part when the set has its own test part */
  double          test_fraction;   /* of all rows, for sets without their own test part (0.2) */
  guint64         seed;            /* splits, shuffling, init, dropout (0) */
  guint           threads;         /* compute threads, 0: chosen by the work per step */
  gsize           memory_limit;    /* engine memory budget in bytes, 0: none */
  EspalierAugment augment;
  /* The data pipeline (espalier_batcher_set_prefetch): threads preparing batches (0:
   * 1) and batches prepared ahead of the one in training (0: 1). */
  guint           data_threads;
  guint           prefetch;
  /* Compute without flush-to-zero (FALSE): only for the denormal detector, which times
   * steps both ways; espalier_trainer_set_flush_denormals sets it too. */
  gboolean        keep_denormals;
  /* Where to train (espalier-device.h): ESPALIER_DEVICE_AUTO (the default: the first
   * CUDA device when there is one, else the CPU), ESPALIER_DEVICE_CPU, or a CUDA device
   * index; a CUDA device asked for by index that cannot start leaves the run on the CPU
   * with a MESSAGE saying why. memory_limit is then the GPU pool's budget. tf32: TF32
   * tensor cores for the CUDA matrix products (FALSE). */
  gint            device;
  gboolean        tf32;
} EspalierTrainOptions;

void espalier_train_options_init (EspalierTrainOptions *opts);

typedef struct {
  guint  epoch;                    /* 1-based */
  double train_loss, train_accuracy;
  double val_loss, val_accuracy;   /* NaN without a validation split */
  double lr;
  double seconds;                  /* wall time of the epoch's training pass */
} EspalierEpochRecord;

/* Loss, accuracy and the confusion matrix (n_classes x n_classes, rows = truth) of a
 * model on a set of rows. */
typedef struct {
  guint   rows;
  double  loss;
  double  accuracy;
  guint   n_classes;
  guint  *confusion;               /* (n_classes, n_classes) or NULL for regression */
} EspalierMetrics;

void   espalier_metrics_clear          (EspalierMetrics *m);
/* Accuracy of class k (recall), NaN when the class has no rows. */
double espalier_metrics_class_accuracy (const EspalierMetrics *m, guint k);

typedef struct _EspalierProfile EspalierProfile;   /* below, with profiling */
typedef struct _EspalierDistributed EspalierDistributed;   /* espalier-distributed.h */

typedef enum {
  ESPALIER_PROGRESS_START,         /* plan decided, before the first step */
  ESPALIER_PROGRESS_STEP,          /* after a batch, at most ~30 times a second */
  ESPALIER_PROGRESS_EPOCH,         /* an epoch ended; record is set */
  ESPALIER_PROGRESS_MESSAGE,       /* something the user should read (batch halving...) */
} EspalierProgressKind;

typedef struct {
  EspalierProgressKind       kind;
  guint                      epoch, epochs;
  guint                      step, steps;      /* batch within the epoch */
  double                     loss, accuracy;   /* running, this epoch */
  double                     elapsed, eta;     /* seconds */
  const EspalierEpochRecord *record;           /* ESPALIER_PROGRESS_EPOCH */
  const char                *message;          /* ESPALIER_PROGRESS_MESSAGE */
  /* A copy of the model with the current weights, owned by the progress record and
   * freed after the callback returns (copy it to keep it): set on every EPOCH event and,
   * with espalier_trainer_set_snapshot_interval, on STEP events at most once per
   * interval; NULL otherwise. */
  EsModel                   *snapshot;
  /* ESPALIER_PROGRESS_EPOCH: the validation metrics with the confusion matrix, NULL
   * without a validation split. Valid during the callback. */
  const EspalierMetrics     *val_metrics;
  /* With profiling on: the profile so far of this run (steps counted from its start),
   * on STEP records at most twice a second and on every EPOCH record; NULL otherwise.
   * Valid during the callback (the relay delivers a copy; espalier_profile_copy to keep
   * it). Lets the Profile page update live. */
  const EspalierProfile     *profile;
  /* Data-parallel runs (espalier_trainer_set_distributed): the ranks training together,
   * this rank's training rows per second since the run began, and its seconds in
   * communication so far (waiting for reductions, staging gradients). ranks is 0 in a
   * run of one process. */
  guint                      ranks;
  double                     rank_samples_per_s;
  double                     comm_s;
  /* Mixed precision's fallbacks: the matrix products asked in bf16 or fp16 that ran in
   * fp32 so far in this run because the memory limit left no room for their 16-bit
   * operand copies (es_cuda_backend_fp32_products); 0 in fp32 and on the CPU. */
  gint64                     fp32_products;
} EspalierProgress;

typedef void (*EspalierProgressFunc) (const EspalierProgress *progress, gpointer user_data);

#define ESPALIER_TYPE_TRAINER (espalier_trainer_get_type ())
G_DECLARE_FINAL_TYPE (EspalierTrainer, espalier_trainer, ESPALIER, TRAINER, GObject)

/* A trainer for `model` (borrowed; the trainer writes the trained weights into it) on
 * `dataset`. */
EspalierTrainer  *espalier_trainer_new          (EspalierDataset            *dataset,
                                                 EsModel                    *model,
                                                 const EspalierTrainOptions *opts);
/* Attach a snapshot of the weights to STEP progress at most every `seconds` (0, the
 * default: snapshots only at epoch ends). Set it before running. */
void              espalier_trainer_set_snapshot_interval (EspalierTrainer *self,
                                                          double           seconds);
/* Pause a run between two steps, or resume it (any thread). A paused run keeps its
 * weights, optimizer state and data order on the worker; cancelling still ends it. The
 * time spent paused does not count in elapsed, ETA or epoch seconds. */
void              espalier_trainer_set_paused   (EspalierTrainer *self,
                                                 gboolean         paused);
gboolean          espalier_trainer_get_paused   (EspalierTrainer *self);
/* Train on the calling thread. Progress goes to func on this thread. Cancelling stops
 * at the end of the current step; the model then holds the weights of the last
 * completed step and the call returns FALSE with G_IO_ERROR_CANCELLED. */
gboolean          espalier_trainer_run          (EspalierTrainer      *self,
                                                 GCancellable         *cancellable,
                                                 EspalierProgressFunc  func,
                                                 gpointer              user_data,
                                                 GError              **error);
/* The same on a worker thread; func is called in the thread-default main context of
 * the caller. */
void              espalier_trainer_run_async    (EspalierTrainer      *self,
                                                 GCancellable         *cancellable,
                                                 EspalierProgressFunc  func,
                                                 gpointer              user_data,
                                                 GDestroyNotify        user_data_free,
                                                 GAsyncReadyCallback   callback,
                                                 gpointer              callback_data);
gboolean          espalier_trainer_run_finish   (EspalierTrainer      *self,
                                                 GAsyncResult         *result,
                                                 GError              **error);

/* ---- hooks for the optimization jobs (espalier-optimize.h) -----------------------
 * Set them before running; they hold for every later run of this trainer. */

/* Pruning: keep the weights that mask (copied; NULL removes it) prunes at zero through
 * training: they are zeroed when the run starts and after every optimizer step. */
void              espalier_trainer_set_mask     (EspalierTrainer *self,
                                                 const EsMask    *mask);

/* Gradual magnitude pruning on the Zhu & Gupta cubic schedule
 * (es_prune_cubic_sparsity): at optimizer steps t0 + k dt, k = 0..n, the selected
 * weights are pruned to s_t and the mask grows (pruned weights stay pruned). The run
 * starts from the mask of espalier_trainer_set_mask, or from none. When the run ends
 * before the last event, the weights are pruned to s_f at its end, so a finished run
 * always reaches the final sparsity; each event is a MESSAGE. */
typedef struct {
  double          initial_sparsity;  /* s_i */
  double          final_sparsity;    /* s_f */
  gint64          begin_step;        /* t0, in optimizer steps */
  gint64          frequency;         /* dt >= 1 */
  gint64          n_events;          /* n >= 1 */
  EsPruneScope    scope;
  const gboolean *layers;            /* (n_layers) layers to prune (copied), NULL: every
                                      * prunable one */
} EspalierPruneSchedule;

/* NULL turns gradual pruning off. */
void              espalier_trainer_set_prune_schedule (EspalierTrainer             *self,
                                                       const EspalierPruneSchedule *schedule);

/* One pruning event of the last run. */
typedef struct {
  gint64 step;        /* optimizer steps done before it */
  double target;      /* s_t */
  double sparsity;    /* measured: zeros among the selected layers' weights after it */
} EspalierPruneEvent;

/* (element-type EspalierPruneEvent) the events of the last run, in order. */
GArray           *espalier_trainer_get_prune_events (EspalierTrainer *self);
/* The mask of the end of the last run (set or grown by the schedule), or NULL when it
 * ran without one. (transfer none) */
const EsMask     *espalier_trainer_get_mask     (EspalierTrainer *self);

/* Knowledge distillation from teacher (borrowed: it must outlive every run; same input
 * and output shapes as the model): loss (1 - alpha) CE + alpha T^2 KL at temperature
 * T (es_trainer_set_teacher). NULL turns it off. */
void              espalier_trainer_set_teacher  (EspalierTrainer *self,
                                                 const EsModel   *teacher,
                                                 double           temperature,
                                                 double           alpha);

/* Quantization-aware training: fake-quantize the weights and inputs of the layers
 * chosen by layers ((n_layers), copied; NULL turns it off) as the int8 kernels will
 * (es_trainer_set_fake_quant). Validation runs fake-quantized too. */
void              espalier_trainer_set_fake_quant (EspalierTrainer *self,
                                                   const gboolean  *layers,
                                                   gboolean         reduce_range);
/* The input range QAT tracked for layer during the last run; FALSE when it tracked
 * none for that layer. */
gboolean          espalier_trainer_get_input_range (EspalierTrainer *self,
                                                    guint            layer,
                                                    float           *lo,
                                                    float           *hi);

/* Data-parallel training (espalier-distributed.h): the following runs take this rank's
 * part of every global batch, reduce gradients and metrics across ranks, write and
 * resume checkpoints. dist is borrowed (it must outlive the runs); NULL: one process. */
void              espalier_trainer_set_distributed (EspalierTrainer     *self,
                                                    EspalierDistributed *dist);

/* ---- checkpoints and the last good state (espalier-checkpoint.h) -----------------
 * A run keeps its last good state in memory: the weights, buffers and optimizer state,
 * copied from the device when the run starts and after every `every` optimizer steps of
 * espalier_trainer_set_checkpoint (ESPALIER_LAST_GOOD_EVERY without checkpoints) when
 * they are all finite. When the loss turns NaN or infinite the run stops with
 * ESPALIER_ERROR_NUMERIC naming the step and the first layer (numbered from 1, as
 * espalier-cli info prints them) whose weights, outputs or gradients went bad, and the
 * model holds that last good state: a user loses at most `every` steps. */
#define ESPALIER_LAST_GOOD_EVERY 100

/* Write a checkpoint to path (atomically) every `every` optimizer steps of the
 * following runs of one process (NULL or 0: none; data-parallel runs write theirs with
 * espalier_distributed_set_checkpoint). A checkpoint is the last good state, with where
 * the run stood and its hooks' state (early stopping, QAT ranges, gradual pruning). */
void              espalier_trainer_set_checkpoint (EspalierTrainer *self,
                                                   const char      *path,
                                                   guint            every);
/* The next run (one process) continues from the checkpoint at path (NULL: starts
 * afresh), as if it had not stopped: the same options and data give bit-identical
 * weights. Reads it now: ESPALIER_ERROR_IO or _FORMAT for a file that cannot be read
 * or is not a whole checkpoint, ESPALIER_ERROR_SHAPE for one of another model; the run
 * refuses one of another optimizer, seed or training split. info (may be NULL) says
 * where it left off. */
gboolean          espalier_trainer_set_resume     (EspalierTrainer        *self,
                                                   const char             *path,
                                                   EspalierCheckpointInfo *info,
                                                   GError                **error);
/* The last checkpoint the last run wrote (one process); FALSE when none. */
gboolean          espalier_trainer_get_last_checkpoint (EspalierTrainer        *self,
                                                        EspalierCheckpointInfo *info);

/* ---- profiling (es_trainer_set_profiling) ---------------------------------------- */

/* The stage of an EspalierTraceEvent that is not the engine's: waiting for the batcher
 * and filling the engine's batch from it. */
#define ESPALIER_STAGE_DATA (-1)

typedef struct {
  int    stage;      /* EsStage or ESPALIER_STAGE_DATA */
  int    layer;      /* -1 for a stage that is not a layer's */
  double t0, t1;     /* seconds on the es_now clock */
} EspalierTraceEvent;

struct _EspalierProfile {
  guint           steps;     /* training batches profiled */
  double          wall_s;    /* their wall time, from asking the batcher for the batch to
                              * the end of the step (progress reports included) */
  double          data_s;    /* of which waiting for the batcher and filling the batch */
  EsProfile       engine;    /* of which inside the engine, by stage */
  guint           n_layers;
  EsLayerProfile *layers;    /* (n_layers) */
  GArray         *events;    /* EspalierTraceEvent in order, NULL unless traced */

  /* The other side of the data pipeline, the batcher's own thread, over the same
   * steps: preparing batches (gather, convert, augment) and waiting for the trainer to
   * take one (the data is ahead: compute is the slow side). */
  double          produce_s;
  double          producer_wait_s;
  /* Medians over the last 1024 profiled steps of the data wait and of the wall time of
   * a step: the typical step, which a stall of the machine does not move. */
  double          data_median_s, step_median_s;
  guint           batch;          /* rows per step asked for */
  guint           micro_batch;    /* rows per engine pass the budget allowed */
  /* The data side's setup: rows of the training split (an epoch), the batcher's
   * threads and batches ahead, whether rows are converted per batch (uint8 as
   * x * scale + shift, or scaled floats) and augmented per batch. */
  guint           train_rows;
  guint           data_threads, prefetch;
  gboolean        convert_per_batch, augment;

  /* Memory at the end of the profiled steps: the engine's budget by kind (EsMemKind),
   * its peak and limit (0: none), and the process's resident set and its peak
   * (/proc/self/status VmRSS and VmHWM; 0 where unknown). */
  gsize           mem_kind[ES_MEM_N_KINDS];
  gsize           mem_peak, mem_limit;
  gsize           rss, rss_peak;

  /* Threads (es_cpu_backend_thread_info) and the involuntary context switches of the
   * process during the profiled steps (getrusage), for the oversubscription detector;
   * whether flush-to-zero was on, and the denormals in the trainer's tensors at the end. */
  EsThreadInfo    threads;
  gint64          involuntary_switches;
  /* Seconds the process's threads, and the training thread alone, spent runnable but
   * waiting for a core (run-queue wait, /proc/self/task/N/schedstat) during the
   * profiled steps: more threads than cores, or other work on the machine. 0 where
   * unknown. */
  double          runqueue_wait_s, trainer_runqueue_wait_s;
  gboolean        ftz;
  EsDenormalCount denormals;

  /* The device the steps ran on: ESPALIER_DEVICE_CPU or a CUDA device index, and its
   * name. On CUDA, mem_kind, mem_peak and mem_limit above are the GPU pool's, and these
   * the device at the end of the profiled steps (es_cuda_device_info): its memory, and
   * NVML's utilization, temperature and power (-1 when unknown, as without NVML). */
  gint            device;
  char            device_name[256];
  gsize           device_mem_total, device_mem_free;
  gint            device_utilization, device_temperature_c;
  double          device_power_w;
};

/* A deep copy (events included), and its release. */
EspalierProfile *espalier_profile_copy (const EspalierProfile *prof);
void             espalier_profile_free (EspalierProfile *prof);

/* Profile the following runs: time every step by stage and layer. The run's first step
 * is warm-up (first touch of the buffers, the data pipeline starting) and not counted.
 * max_steps > 0 ends a run after that many profiled steps, max_steps + 1 in all (over
 * epochs; the unfinished epoch gets no record and no validation). trace also keeps
 * every interval (EspalierProfile.events). */
void              espalier_trainer_set_profiling (EspalierTrainer *self,
                                                  gboolean         on,
                                                  guint            max_steps,
                                                  gboolean         trace);
/* The profile of the last run, NULL when it ran without profiling. (transfer none) */
const EspalierProfile *espalier_trainer_get_profile (EspalierTrainer *self);
/* Flush-to-zero / denormals-are-zero on the compute threads (TRUE, the default): FALSE
 * only for the denormal detector, which times steps both ways. */
void              espalier_trainer_set_flush_denormals (EspalierTrainer *self,
                                                        gboolean         on);

/* Per-epoch records of the last run (EspalierEpochRecord). Like the getters below,
 * read it only when no run is in progress: the worker appends to it. */
GArray           *espalier_trainer_get_history  (EspalierTrainer *self);
/* The split used (train/val/test row indices). */
const EspalierSplit *espalier_trainer_get_split (EspalierTrainer *self);
/* Micro-batch and accumulation the memory budget allowed. */
guint             espalier_trainer_get_micro_batch (EspalierTrainer *self);
/* Where the last run trained: a CUDA device index, or ESPALIER_DEVICE_CPU (also before
 * a run, and when the device asked for could not start). */
gint              espalier_trainer_get_device_used (EspalierTrainer *self);
/* The last run's matrix products that ran in fp32 instead of bf16/fp16 for want of
 * memory (EspalierProgress.fp32_products at its end); 0 before a run. */
gint64            espalier_trainer_get_fp32_products (EspalierTrainer *self);
/* "N matrix products ran in fp32: ...", the sentence telling the user of n such
 * fallbacks (n > 0), translated; free it. */
char             *espalier_fp32_products_message (gint64 n);
/* The memory plan, "weights 397 KB, gradients ..." lines. */
char             *espalier_trainer_describe_plan   (EspalierTrainer *self);

/* Progress from a worker thread to a main context, as espalier_trainer_run_async
 * delivers it, for other jobs that run on workers (the optimize jobs). Records are
 * copied (with their record, validation metrics and message); a relay delivers every
 * EPOCH and MESSAGE record but only the latest of a run of STEP records that arrived
 * while the context was busy. */
typedef struct _EspalierProgressRelay EspalierProgressRelay;

/* A relay to func in the caller's thread-default main context; user_data_free runs
 * when the last reference and the last pending delivery are gone. */
EspalierProgressRelay *espalier_progress_relay_new   (EspalierProgressFunc    func,
                                                      gpointer                user_data,
                                                      GDestroyNotify          user_data_free);
EspalierProgressRelay *espalier_progress_relay_ref   (EspalierProgressRelay  *relay);
void                   espalier_progress_relay_unref (EspalierProgressRelay  *relay);
/* An EspalierProgressFunc for the worker (user_data: the relay). It takes over
 * progress->snapshot (setting it to NULL). */
void                   espalier_progress_relay_post  (const EspalierProgress *progress,
                                                      gpointer                relay);

/* Evaluate `model` on `rows` of `dataset` (all rows when rows is NULL). */
gboolean          espalier_evaluate              (EsModel           *model,
                                                 EspalierDataset   *dataset,
                                                 const guint32     *rows,
                                                 guint              n_rows,
                                                 EsLossKind         loss,
                                                 guint              threads,
                                                 EspalierMetrics   *metrics,
                                                 GError           **error);
/* The same on device (espalier-device.h; espalier_evaluate runs on the CPU): a CUDA
 * device asked for by index that cannot start leaves it on the CPU and sets fallback
 * (may be NULL) to a message saying why. tf32 as in EspalierTrainOptions. */
gboolean          espalier_evaluate_device       (EsModel           *model,
                                                 EspalierDataset   *dataset,
                                                 const guint32     *rows,
                                                 guint              n_rows,
                                                 EsLossKind         loss,
                                                 guint              threads,
                                                 gint               device,
                                                 gboolean           tf32,
                                                 char             **fallback,
                                                 EspalierMetrics   *metrics,
                                                 GError           **error);

G_END_DECLS
