/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-profile-report.h: the bottleneck analyzer. From a profiled training run
 * (EspalierProfile) and the machine's ceilings it derives what the CLI prints and the
 * Profile page draws: the step split by stage, each layer's time, FLOPs, bytes moved,
 * achieved FLOP/s and bandwidth on a roofline, memory by kind, the findings of the
 * detectors (data-bound, launch-bound, memory near the limit, a dominant layer,
 * denormals, oversubscription, per-batch conversion, ...) and the advisor's remedies,
 * ranked, each with its evidence, an estimated gain and an action. Applying a remedy
 * changes a copy of the model or the options and profiles again; the measured
 * before/after is what the user is shown, never the estimate alone. */
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

#include "es-ceiling.h"
#include "es-model.h"
#include "espalier-dataset.h"
#include "espalier-trainer.h"

G_BEGIN_DECLS

/* ---- running a profile ---------------------------------------------------------- */

typedef struct {
  guint    steps;            /* training steps profiled (50) */
  gboolean trace;            /* keep every interval (EspalierProfile.events) (FALSE) */
  gboolean remeasure;        /* measure the ceilings again instead of the cache (FALSE) */
  gboolean probe_denormals;  /* when denormals are found, time steps with flush-to-zero
                              * off and on to measure what they cost (TRUE) */
} EspalierProfileOptions;

void espalier_profile_options_init (EspalierProfileOptions *popts);

typedef struct _EspalierProfileReport EspalierProfileReport;

/* Train a copy of model (the model itself is not changed) on dataset with opts for
 * popts->steps steps with profiling on (after one warm-up step; no validation or early
 * stopping), read the machine's ceilings (espalier-ceilings.h) for the threads that
 * ran, and build the report; with denormals found and flush-to-zero off, time a few
 * steps both ways (popts->probe_denormals). Runs on the calling thread (use a GTask for
 * the UI); progress as espalier_trainer_run gives it (func may be NULL). Cancelling
 * returns NULL with G_IO_ERROR_CANCELLED. */
EspalierProfileReport *espalier_profile_run (EspalierDataset              *dataset,
                                             const EsModel                *model,
                                             const EspalierTrainOptions   *opts,
                                             const EspalierProfileOptions *popts,
                                             GCancellable                 *cancellable,
                                             EspalierProgressFunc          func,
                                             gpointer                      user_data,
                                             GError                      **error);

/* A report on a profile taken elsewhere (a live training run's
 * EspalierProgress.profile): prof, model and opts are copied; ceilings may be NULL
 * (no roofline: the roofline fields are 0 and no finding that needs them is made).
 * Cheap enough to call twice a second. NULL when there is no memory for the report's
 * copy of the model (espalier_model_try_copy): skip this report. */
EspalierProfileReport *espalier_profile_report_new  (const EspalierProfile      *prof,
                                                     const EsModel              *model,
                                                     const EspalierTrainOptions *opts,
                                                     const EsCeilings           *ceilings);
EspalierProfileReport *espalier_profile_report_ref   (EspalierProfileReport *report);
void                   espalier_profile_report_unref (EspalierProfileReport *report);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (EspalierProfileReport, espalier_profile_report_unref)

/* ---- what it holds ----------------------------------------------------------------
 * All getters return memory owned by the report, valid while it lives. */

/* The stages of a step in order: "data" (the trainer waiting for the batcher and
 * filling the batch), the engine's EsStage names, then "other" (what is left of the
 * wall time: progress reports, bookkeeping). Their seconds add up to wall_s. */
typedef struct {
  const char *name;          /* untranslated key: "data", "forward", ..., "other" */
  const char *label;         /* translated, for display */
  double      seconds;       /* summed over the steps */
  double      share;         /* of wall_s */
} EspalierStageTime;

typedef struct {
  guint       index;
  const char *kind;          /* es_layer_kind_name */
  double      forward_s, backward_s;   /* summed over the steps */
  double      share;         /* of the step's wall time */
  double      flops;         /* per step, forward + backward */
  double      bytes;         /* per step, forward + backward (es_layer_bytes_moved) */
  double      gflops;        /* achieved: flops / time, 1e9/s (0 where not timed) */
  double      gbs;           /* achieved bandwidth: bytes / time, 1e9 B/s */
  double      intensity;     /* arithmetic intensity, FLOP per byte */
  double      attainable_gflops;  /* min(peak, intensity x copy bandwidth); 0 w/o ceilings */
  double      roofline_share;     /* gflops / attainable_gflops */
  gboolean    memory_bound;       /* intensity below the ridge point peak / bandwidth */
} EspalierLayerTime;

typedef struct {
  guint              steps;
  guint              batch, micro_batch;
  double             wall_s, step_s;      /* all steps; per step */
  double             rows_per_s;          /* rows trained per second of wall time */
  double             coverage;            /* staged seconds / wall_s */
  guint              n_stages;
  const EspalierStageTime *stages;        /* (n_stages) */
  guint              n_layers;
  const EspalierLayerTime *layers;        /* (n_layers) */
  gboolean           have_ceilings;
  EsCeilings         ceilings;
  gboolean           ceilings_low;        /* some layer ran well above the measured peak:
                                           * the ceilings were measured on a busy machine
                                           * (the detectors then do not use them) */
  const EspalierProfile *profile;         /* what it was built from (memory, threads,
                                           * denormals, events) */
} EspalierProfileSummary;

const EspalierProfileSummary *espalier_profile_report_get_summary (EspalierProfileReport *report);

/* ---- findings and advice ------------------------------------------------------- */

typedef enum {
  ESPALIER_FINDING_DATA_BOUND,        /* compute waits on the data pipeline */
  ESPALIER_FINDING_LAUNCH_BOUND,      /* small batches: fixed per-call costs dominate */
  ESPALIER_FINDING_MEMORY_LIMIT,      /* the engine's peak close to the memory limit */
  ESPALIER_FINDING_DOMINANT_LAYER,    /* one layer takes most of the compute */
  ESPALIER_FINDING_DENORMALS,         /* denormal floats, and what they cost */
  ESPALIER_FINDING_OVERSUBSCRIBED,    /* more compute threads than cores */
  ESPALIER_FINDING_CONVERT_PER_BATCH, /* data converted/standardized again every batch */
  ESPALIER_FINDING_OPTIMIZER,         /* optimizer time or an L2-with-Adam setting */
  ESPALIER_FINDING_COMPUTE_BOUND,     /* the layers run near the machine's ceilings */
  ESPALIER_N_FINDINGS
} EspalierFindingKind;

typedef enum {
  ESPALIER_ADVICE_LARGER_BATCH,
  ESPALIER_ADVICE_PREFETCH_DATA,      /* cache or prefetch the data */
  ESPALIER_ADVICE_STANDARDIZE_ONCE,   /* convert/standardize the set once, not per batch */
  ESPALIER_ADVICE_MIXED_PRECISION,
  ESPALIER_ADVICE_GRAD_ACCUMULATION,  /* smaller micro-batches, same effective batch */
  ESPALIER_ADVICE_ADAMW,
  ESPALIER_ADVICE_FEWER_LAYERS,
  ESPALIER_ADVICE_PRUNE,
  ESPALIER_ADVICE_QUANTIZE,
  ESPALIER_ADVICE_GPU,
  ESPALIER_ADVICE_FLUSH_DENORMALS,
  ESPALIER_ADVICE_FEWER_THREADS,
  ESPALIER_N_ADVICE
} EspalierAdviceKind;

typedef struct {
  EspalierFindingKind kind;
  const char *name;          /* untranslated key: "data-bound", "launch-bound", ... */
  const char *title;         /* translated: "The data pipeline is the bottleneck" */
  const char *evidence;      /* translated: the measured figures that led here */
  double      severity;      /* the share of step time (or of memory) at stake, 0..1;
                              * findings are sorted by it, most severe first */
  int         layer;         /* the layer it names, or -1 */
} EspalierFinding;

typedef struct {
  EspalierAdviceKind  kind;
  const char *name;          /* untranslated key: "larger-batch", "prefetch", ... */
  const char *title;         /* translated: "Train on batches of 128" */
  const char *evidence;      /* translated: why, from the findings' figures */
  const char *action;        /* translated: what Apply changes */
  double      expected_gain; /* estimated speed-up of the measured quantity (rows per
                              * second of training; for QUANTIZE, batch-1 inference;
                              * for GRAD_ACCUMULATION, the engine's peak memory, as
                              * before / after), > 1; NAN when no estimate can be made.
                              * An estimate only: shown as such until measured by
                              * espalier_advice_apply */
  EspalierFindingKind finding;   /* the finding it answers */
  int         layer;         /* the layer it acts on, or -1 */
  gboolean    can_apply;
  const char *cannot_apply;  /* translated reason when !can_apply ("no CUDA device") */
} EspalierAdvice;

/* The untranslated keys of the kinds: "data-bound", ...; "larger-batch", ... (the
 * names of EspalierFinding and EspalierAdvice). */
const char            *espalier_finding_kind_name (EspalierFindingKind kind);
const char            *espalier_advice_kind_name  (EspalierAdviceKind  kind);

/* Findings and advice, most important first; advice follows the order of the findings
 * it answers. */
guint                  espalier_profile_report_n_findings (EspalierProfileReport *report);
const EspalierFinding *espalier_profile_report_finding    (EspalierProfileReport *report,
                                                           guint                  i);
guint                  espalier_profile_report_n_advice   (EspalierProfileReport *report);
const EspalierAdvice  *espalier_profile_report_advice     (EspalierProfileReport *report,
                                                           guint                  i);

/* The denormal probe of espalier_profile_run (denormals found with flush-to-zero off):
 * seconds per step over `steps` steps with flush-to-zero off and on, from the profiled
 * weights. FALSE (and 0s) when no probe ran. Any pointer may be NULL. */
gboolean               espalier_profile_report_get_probe (EspalierProfileReport *report,
                                                          guint                 *steps,
                                                          double                *ftz_off_step_s,
                                                          double                *ftz_on_step_s);

/* ---- applying advice ------------------------------------------------------------ */

/* What applying a piece of advice changed and measured. */
typedef struct {
  EspalierAdviceKind     kind;
  EsModel               *model;      /* the changed copy of the model (owned) */
  EspalierTrainOptions   opts;       /* the changed options */
  char                  *change;     /* translated: "batch 32 → 128" */
  const char            *quantity;   /* translated: "rows/s (training)", "batch-1
                                      * latency (inference, µs)" or, for
                                      * GRAD_ACCUMULATION, "engine peak memory (bytes)" */
  double                 before, after;   /* the quantity, measured in the same call */
  double                 gain;       /* after / before for rates, before / after for
                                      * latencies and memory: > 1 is better */
  EspalierProfileReport *report;     /* the new profile (NULL for QUANTIZE) */
} EspalierAdviceResult;

void espalier_advice_result_clear (EspalierAdviceResult *res);

/* Apply advice i of report: change a copy of model / opts (or of the dataset, for
 * STANDARDIZE_ONCE) as its action says, profile again with popts (or, for QUANTIZE,
 * measure inference latency of both), and fill res. The before figure is measured
 * again in the same call, not taken from the old report, so both sides ran under the
 * same conditions: one profile right after the other, and for speeds the best of up to
 * three such pairs while a pair takes under a second. FALSE with an error
 * (ESPALIER_ERROR_UNSUPPORTED) when the advice cannot be applied (can_apply is FALSE)
 * or with the run's error when it fails; cancellable as espalier_profile_run. */
gboolean espalier_advice_apply (EspalierProfileReport        *report,
                                guint                         i,
                                EspalierDataset              *dataset,
                                const EsModel                *model,
                                const EspalierTrainOptions   *opts,
                                const EspalierProfileOptions *popts,
                                GCancellable                 *cancellable,
                                EspalierAdviceResult         *res,
                                GError                      **error);

/* ---- output ---------------------------------------------------------------------- */

/* The report as a JSON object (stages, layers, machine, memory, threads, denormals,
 * findings, advice) for `espalier-cli profile --json`. */
JsonNode *espalier_profile_report_to_json (EspalierProfileReport *report);

/* The profile's intervals as a Chrome trace-event JSON file (Perfetto,
 * chrome://tracing): one complete ("X") event per interval and one per step around
 * them, microseconds from the first. FALSE when the profile has no events. */
gboolean  espalier_profile_write_trace    (const EspalierProfile *prof,
                                           const EsModel         *model,
                                           const char            *path,
                                           GError               **error);

G_END_DECLS
