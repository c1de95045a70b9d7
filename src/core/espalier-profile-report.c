/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-profile-report.c: the bottleneck analyzer over an EspalierProfile: the
 * step split by stage, each layer on the roofline, the detectors (each finding quotes
 * the figures it rests on), the advisor that turns findings into remedies with an
 * estimated gain, Apply (which measures before and after in one call, so the user sees
 * a measured gain, never the estimate alone), JSON and the Chrome trace. It only reads
 * profiles: the timing itself is the trainer's and the engine's. No GTK.
 *
 * The estimates are small models of where the time goes, stated where they are made:
 * the launch-bound one splits each step into what grows with the batch and what does
 * not (the optimizer, weight traffic, per-step overheads); the data one compares the
 * batcher's preparation time with the compute time it has to hide behind. */
#include "config.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>

#include "es-backend.h"
#include "es-memory.h"
#include "es-prune.h"
#include "es-quant.h"
#include "espalier-ceilings.h"
#include "espalier-dataset-private.h"
#include "espalier-error.h"
#include "espalier-json-private.h"
#include "espalier-limits.h"
#include "espalier-profile-report.h"
#include "espalier-variant.h"

/* ---- thresholds of the detectors ------------------------------------------------ */

/* data-bound: the trainer waits at least this share of the step for batches ... */
#define DATA_WAIT_SHARE       0.10
/* ... while the batcher's threads wait for a free slot less than this share of the
 * time, and take at least this share of the compute time to prepare a batch */
#define PRODUCER_MAX_WAIT     0.25
#define PREPARE_VS_COMPUTE    0.50
/* launch-bound: a batch 4x larger would give at least this rows/s gain (estimated) */
#define LAUNCH_MIN_GAIN       1.25
/* the ridge point (FLOP per byte) of a typical CPU, where the ceilings are not known */
#define TYPICAL_RIDGE         10.0
/* memory: the engine's peak above this share of the limit */
#define MEMORY_NEAR_LIMIT     0.85
/* dominant layer: more than this share of the layers' time */
#define DOMINANT_SHARE        0.50
/* compute-bound: layers at least this share of the step, at this share of the roofline */
#define COMPUTE_LAYERS_SHARE  0.50
#define COMPUTE_ROOFLINE      0.50
/* per-batch conversion: the engine's load stage at least this share of the step */
#define LOAD_SHARE            0.15
/* findings with less at stake are not reported, advice estimated to gain less is not
 * given (but for wrong settings: too many threads, denormals not flushed) */
#define MIN_SEVERITY          0.05
#define MIN_GAIN              1.05
/* busy cores: the training thread waits for a core at least this share of the time */
#define RUNQUEUE_SHARE        0.10
/* a layer above this multiple of the measured peak means the peak was measured low */
#define CEILING_SLACK         1.2
/* denormals: steps timed each way by the probe */
#define PROBE_MAX_STEPS       20

void
espalier_profile_options_init (EspalierProfileOptions *popts)
{
  g_return_if_fail (popts != NULL);

  memset (popts, 0, sizeof *popts);
  popts->steps = 50;
  popts->probe_denormals = TRUE;
}

/* An advice with what Apply changes. */
typedef struct {
  EspalierAdvice pub;
  guint          batch, accum;     /* LARGER_BATCH, GRAD_ACCUMULATION: new batch, accum */
  guint          workers, ahead;   /* PREFETCH_DATA */
  guint          threads;          /* FEWER_THREADS */
  int            keep;             /* PRUNE: units kept */
} Advice;

/* A finding while the report is built, with the advice that answers it. */
typedef struct {
  EspalierFinding pub;
  GArray         *advice;          /* Advice */
} Pending;

struct _EspalierProfileReport
{
  EspalierProfile        *profile;
  EsModel                *model;
  EspalierTrainOptions    opts;
  EsCeilings              ceilings;
  gboolean                have_ceilings;
  /* Some layer ran well above the measured peak: the ceilings were measured while the
   * machine was busy, and the detectors do not lean on them. */
  gboolean                ceilings_low;
  EspalierProfileSummary  summary;
  EspalierStageTime       stages[ES_N_STAGES + 2];
  EspalierLayerTime      *layers;        /* (n_layers) */
  GArray                 *findings;      /* EspalierFinding */
  GArray                 *advice;        /* Advice */
  GPtrArray              *strings;       /* what findings and advice point into */
  /* The denormal probe of espalier_profile_run: seconds per step with flush-to-zero
   * off and on over probe_steps steps each; 0 steps: not probed. */
  guint                   probe_steps;
  double                  probe_off_s, probe_on_s;
};

static const char *
own (EspalierProfileReport *r, char *s)
{
  g_ptr_array_add (r->strings, s);
  return s;
}

static const char *
stage_label (const char *name)
{
  if (g_str_equal (name, "data")) return C_("profile stage", "data");
  if (g_str_equal (name, "load")) return C_("profile stage", "load");
  if (g_str_equal (name, "forward")) return C_("profile stage", "forward");
  if (g_str_equal (name, "loss")) return C_("profile stage", "loss");
  if (g_str_equal (name, "metrics")) return C_("profile stage", "metrics");
  if (g_str_equal (name, "backward")) return C_("profile stage", "backward");
  if (g_str_equal (name, "optimizer")) return C_("profile stage", "optimizer");
  if (g_str_equal (name, "other")) return C_("profile stage", "other");
  return name;
}

static const char *const finding_names[ESPALIER_N_FINDINGS] = {
  [ESPALIER_FINDING_DATA_BOUND] = "data-bound",
  [ESPALIER_FINDING_LAUNCH_BOUND] = "launch-bound",
  [ESPALIER_FINDING_MEMORY_LIMIT] = "memory-limit",
  [ESPALIER_FINDING_DOMINANT_LAYER] = "dominant-layer",
  [ESPALIER_FINDING_DENORMALS] = "denormals",
  [ESPALIER_FINDING_OVERSUBSCRIBED] = "oversubscribed",
  [ESPALIER_FINDING_CONVERT_PER_BATCH] = "convert-per-batch",
  [ESPALIER_FINDING_OPTIMIZER] = "optimizer",
  [ESPALIER_FINDING_COMPUTE_BOUND] = "compute-bound",
};

static const char *const advice_names[ESPALIER_N_ADVICE] = {
  [ESPALIER_ADVICE_LARGER_BATCH] = "larger-batch",
  [ESPALIER_ADVICE_PREFETCH_DATA] = "prefetch",
  [ESPALIER_ADVICE_STANDARDIZE_ONCE] = "standardize-once",
  [ESPALIER_ADVICE_MIXED_PRECISION] = "mixed-precision",
  [ESPALIER_ADVICE_GRAD_ACCUMULATION] = "grad-accumulation",
  [ESPALIER_ADVICE_ADAMW] = "adamw",
  [ESPALIER_ADVICE_FEWER_LAYERS] = "fewer-layers",
  [ESPALIER_ADVICE_PRUNE] = "prune",
  [ESPALIER_ADVICE_QUANTIZE] = "quantize",
  [ESPALIER_ADVICE_GPU] = "gpu",
  [ESPALIER_ADVICE_FLUSH_DENORMALS] = "flush-denormals",
  [ESPALIER_ADVICE_FEWER_THREADS] = "fewer-threads",
};

const char *
espalier_advice_kind_name (EspalierAdviceKind kind)
{
  g_return_val_if_fail ((guint) kind < ESPALIER_N_ADVICE, NULL);
  return advice_names[kind];
}

const char *
espalier_finding_kind_name (EspalierFindingKind kind)
{
  g_return_val_if_fail ((guint) kind < ESPALIER_N_FINDINGS, NULL);
  return finding_names[kind];
}

static gboolean
is_weight_layer (const EsModel *model, int i)
{
  EsLayerKind k = es_model_layer (model, i)->spec.kind;

  return k == ES_LAYER_DENSE || k == ES_LAYER_CONV2D;
}

static int
last_weight_layer (const EsModel *model)
{
  for (int i = es_model_n_layers (model) - 1; i >= 0; i--)
    if (is_weight_layer (model, i))
      return i;
  return -1;
}

/* Whether layer i's backward pass writes an input gradient: some layer before it has
 * parameters. */
static gboolean
needs_dinput (const EsModel *model, int i)
{
  for (int j = 0; j < i; j++)
    if (es_model_layer (model, j)->n_params > 0)
      return TRUE;
  return FALSE;
}

/* ---- the summary ----------------------------------------------------------------- */

static void
build_summary (EspalierProfileReport *r)
{
  const EspalierProfile *p = r->profile;
  EspalierProfileSummary *s = &r->summary;
  double staged, wall = p->wall_s;
  guint n = 0;

  memset (s, 0, sizeof *s);
  s->steps = p->steps;
  s->batch = p->batch ? p->batch : r->opts.batch_size;
  s->micro_batch = p->micro_batch ? p->micro_batch : s->batch;
  s->wall_s = wall;
  s->step_s = p->steps > 0 ? wall / p->steps : 0.0;
  s->rows_per_s = wall > 0 ? (double) p->engine.rows / wall : 0.0;

  r->stages[n++] = (EspalierStageTime) { "data", NULL, p->data_s, 0 };
  staged = p->data_s;
  for (int st = 0; st < ES_N_STAGES; st++)
    {
      r->stages[n++] = (EspalierStageTime) { es_stage_name ((EsStage) st), NULL,
                                             p->engine.stage_s[st], 0 };
      staged += p->engine.stage_s[st];
    }
  r->stages[n++] = (EspalierStageTime) { "other", NULL, MAX (wall - staged, 0.0), 0 };
  for (guint i = 0; i < n; i++)
    {
      r->stages[i].label = stage_label (r->stages[i].name);
      r->stages[i].share = wall > 0 ? r->stages[i].seconds / wall : 0.0;
    }
  s->coverage = wall > 0 ? staged / wall : 1.0;
  s->n_stages = n;
  s->stages = r->stages;

  s->have_ceilings = r->have_ceilings;
  s->ceilings = r->ceilings;
  g_clear_pointer (&r->layers, g_free);
  r->layers = g_new0 (EspalierLayerTime, MAX (p->n_layers, 1));
  for (guint i = 0; i < p->n_layers && (int) i < es_model_n_layers (r->model); i++)
    {
      const EsLayerProfile *lp = &p->layers[i];
      EspalierLayerTime *l = &r->layers[i];
      double t = lp->forward_s + lp->backward_s;
      double flops = (double) (lp->forward_flops + lp->backward_flops);
      double bytes = (double) (lp->forward_bytes + lp->backward_bytes);

      l->index = i;
      l->kind = es_layer_kind_name (es_model_layer (r->model, (int) i)->spec.kind);
      l->forward_s = lp->forward_s;
      l->backward_s = lp->backward_s;
      l->share = wall > 0 ? t / wall : 0.0;
      l->flops = p->steps > 0 ? flops / p->steps : 0.0;
      l->bytes = p->steps > 0 ? bytes / p->steps : 0.0;
      l->gflops = t > 0 ? flops / t / 1e9 : 0.0;
      l->gbs = t > 0 ? bytes / t / 1e9 : 0.0;
      l->intensity = bytes > 0 ? flops / bytes : 0.0;
      if (r->have_ceilings && r->ceilings.copy_gbs > 0)
        {
          l->attainable_gflops = MIN (r->ceilings.gemm_gflops,
                                      l->intensity * r->ceilings.copy_gbs);
          l->roofline_share = l->attainable_gflops > 0 && t > 0
                              ? l->gflops / l->attainable_gflops : 0.0;
          l->memory_bound = bytes > 0
                            && l->intensity < r->ceilings.gemm_gflops / r->ceilings.copy_gbs;
        }
    }
  s->n_layers = p->n_layers;
  s->layers = r->layers;
  r->ceilings_low = FALSE;
  for (guint i = 0; r->have_ceilings && i < p->n_layers; i++)
    r->ceilings_low |= r->layers[i].gflops > CEILING_SLACK * r->ceilings.gemm_gflops;
  s->ceilings_low = r->ceilings_low;
  s->profile = r->profile;
}

/* ---- the detectors ------------------------------------------------------------- */

/* What the detectors share. */
typedef struct {
  double steps, step, wall;     /* without stalls in the data wait (see build_findings) */
  double data_s;                /* the typical data wait, times the steps */
  double data_share, load_share, opt_share, other_share;
  double layers_s;              /* all layers' time, summed over the steps */
  double roofline;              /* the layers' roofline share, weighted by their time;
                                 * -1 without ceilings */
  gboolean data_bound;
  double cores;
} Ctx;

static Pending *
add_finding (GArray              *pending,
             EspalierFindingKind  kind,
             double               severity,
             int                  layer,
             const char          *title,
             const char          *evidence)
{
  Pending p = { { kind, finding_names[kind], title, evidence, severity, layer },
                g_array_new (FALSE, TRUE, sizeof (Advice)) };

  g_array_append_val (pending, p);
  return &g_array_index (pending, Pending, pending->len - 1);
}

static Advice *
add_advice (Pending            *f,
            EspalierAdviceKind  kind,
            const char         *title,
            const char         *evidence,
            const char         *action,
            double              gain,
            int                 layer)
{
  Advice a = { 0 };

  a.pub.kind = kind;
  a.pub.name = advice_names[kind];
  a.pub.title = title;
  a.pub.evidence = evidence;
  a.pub.action = action;
  a.pub.expected_gain = gain;
  a.pub.finding = f->pub.kind;
  a.pub.layer = layer;
  a.pub.can_apply = TRUE;
  g_array_append_val (f->advice, a);
  return &g_array_index (f->advice, Advice, f->advice->len - 1);
}

static void
cannot (Advice *a, const char *why)
{
  a->pub.can_apply = FALSE;
  a->pub.cannot_apply = why;
}

static const char *
no_gpu_reason (void)
{
#if HAVE_CUDA
  return _("Training in Espalier runs on the CPU backend: the CUDA backend cannot train "
           "yet");
#else
  return _("This build has no CUDA backend");
#endif
}

/* The share of layer i's time that does not grow with the batch: its weight traffic
 * (es_layer_bytes_moved at zero rows, once per engine pass) against the per-row part
 * (its FLOPs or its activation traffic, whichever takes longer on the roofline), with
 * the machine's ridge point (peak FLOP/s over bandwidth), or a typical CPU's where the
 * ceilings are unknown or measured low. */
static double
layer_fixed_share (EspalierProfileReport *r, guint i)
{
  const EspalierProfile *p = r->profile;
  const EspalierLayerTime *l = &r->layers[i];
  gboolean nd = needs_dinput (r->model, (int) i);
  double passes = p->engine.batches > 0 ? (double) p->engine.micro_batches / p->engine.batches : 1.0;
  double f1 = es_layer_bytes_moved (r->model, (int) i, 1, false, false);
  double f2 = es_layer_bytes_moved (r->model, (int) i, 2, false, false);
  double b1 = es_layer_bytes_moved (r->model, (int) i, 1, true, nd);
  double b2 = es_layer_bytes_moved (r->model, (int) i, 2, true, nd);
  double weights = passes * (MAX (2 * f1 - f2, 0.0) + MAX (2 * b1 - b2, 0.0));
  double ridge = r->have_ceilings && !r->ceilings_low
                 ? r->ceilings.gemm_gflops / r->ceilings.copy_gbs : TYPICAL_RIDGE;
  double act, w, row;

  if (l->bytes <= 0)
    return 0.0;
  weights = MIN (weights, l->bytes);
  act = l->bytes - weights;
  w = weights * ridge;                        /* in FLOP-equivalents */
  row = MAX (l->flops, act * ridge);
  return w + row > 0 ? w / (w + row) : 0.0;
}

static void
detect_data (EspalierProfileReport *r, Ctx *c, GArray *pending)
{
  const EspalierProfile *p = r->profile;
  guint workers = MAX (p->data_threads, 1);
  /* the batcher's shares of the time it ran in, stalls included */
  double busy = p->wall_s > 0 ? p->produce_s / (p->wall_s * workers) : 0.0;
  double waiting = p->wall_s > 0 ? p->producer_wait_s / (p->wall_s * workers) : 0.0;
  double prepare = p->produce_s / c->steps;               /* worker-seconds a batch */
  double compute = MAX (c->step - c->data_s / c->steps, 1e-9);
  guint cores = (guint) MAX (c->cores, 1);
  guint k, ahead;
  double gain;
  Pending *f;
  Advice *a;

  /* The trainer waits for batches, the batcher's threads hardly ever wait for the
   * trainer, and preparing a batch takes them about as long as training on it: the
   * data is the slow side. (A trainer that waits for batches prepared in a fraction of
   * its step waits for the hand-over between threads: a cost per step, which the
   * launch-bound detector counts.) */
  if (c->data_share < DATA_WAIT_SHARE || waiting > PRODUCER_MAX_WAIT
      || prepare / workers < PREPARE_VS_COMPUTE * compute)
    return;
  c->data_bound = TRUE;
  f = add_finding (pending, ESPALIER_FINDING_DATA_BOUND, c->data_share, -1,
                   _("The data pipeline is the bottleneck"),
                   own (r, g_strdup_printf (
                     _("The trainer waited for batches %.1f%% of the step (%.3f ms of "
                       "%.3f ms). The batcher (threads: %u) needed %.3f ms of thread time "
                       "to prepare each batch%s and was busy %.0f%% of the time, waiting "
                       "for a free slot only %.0f%% of it: the data is the slow side."),
                     100 * c->data_share, 1e3 * c->data_s / c->steps, 1e3 * c->step,
                     workers, 1e3 * prepare,
                     p->augment ? _(" (gather, convert, augment)") : _(" (gather, convert)"),
                     100 * MIN (busy, 1.0), 100 * waiting)));

  /* Enough threads to prepare a batch in the time the compute takes, within the cores,
   * the new step time the slower of the two sides. */
  k = (guint) ceil (prepare / compute);
  k = CLAMP (k, workers + 1, MAX (MIN (cores, 8u), workers + 1));
  ahead = MAX (2 * k, MAX (p->prefetch, 1));
  gain = c->step / MAX (compute, prepare / MIN (k, cores));
  a = add_advice (f, ESPALIER_ADVICE_PREFETCH_DATA,
                  own (r, g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "Prepare batches on %u thread",
                                                        "Prepare batches on %u threads", k), k)),
                  own (r, g_strdup_printf (
                    _("A batch takes %.3f ms to prepare and %.3f ms to train on: %u "
                      "threads preparing batches ahead keep the compute fed (estimate)."),
                    1e3 * prepare, 1e3 * compute, k)),
                  own (r, g_strdup_printf (
                    _("The batcher prepares batches on %u threads instead of %u, up to %u "
                      "ahead of the one in training, off the training thread's path."),
                    k, workers, ahead)),
                  gain, -1);
  a->workers = k;
  a->ahead = ahead;
  if (cores <= workers)
    cannot (a, own (r, g_strdup_printf (_("The batcher already has a thread for each of "
                                           "the %u cores this process may run on"),
                                         cores)));
  if (p->convert_per_batch && p->augment)
    add_advice (f, ESPALIER_ADVICE_STANDARDIZE_ONCE,
                _("Convert the set to floats once"),
                _("Every batch converts its uint8 (or scaled) rows to floats before the "
                  "augmentation: converting the whole set once takes that off every "
                  "batch. No estimate: how much of the preparation is conversion is not "
                  "timed apart."),
                _("The rows are converted to floats (x × scale + shift) once, before "
                  "training; batches then only gather and augment them."),
                NAN, -1);
}

static void
detect_convert (EspalierProfileReport *r, Ctx *c, GArray *pending)
{
  const EspalierProfile *p = r->profile;
  Pending *f;

  if (!p->convert_per_batch || p->augment || c->load_share < LOAD_SHARE)
    return;
  f = add_finding (pending, ESPALIER_FINDING_CONVERT_PER_BATCH, c->load_share, -1,
                   _("Rows are converted to floats in every step"),
                   own (r, g_strdup_printf (
                     _("The load stage, which copies the batch's rows and converts them "
                       "from uint8 (x × scale + shift), takes %.1f%% of the step "
                       "(%.3f ms)."),
                     100 * c->load_share, 1e3 * c->load_share * c->step)));
  add_advice (f, ESPALIER_ADVICE_STANDARDIZE_ONCE,
              _("Convert the set to floats once"),
              own (r, g_strdup_printf (
                _("Converting the set once leaves the load stage (%.1f%% of the step) a "
                  "plain copy, at four times the data's memory. No estimate: the copy "
                  "and the conversion are not timed apart."),
                100 * c->load_share)),
              _("The rows are converted to floats (x × scale + shift) once, before "
                "training; batches then only gather them."),
              NAN, -1);
}

/* The batch Apply would try: 4x, within the training set and the memory limit. */
static guint
larger_batch (EspalierProfileReport *r, guint batch)
{
  const EspalierProfile *p = r->profile;

  for (guint k = 4; k >= 2; k /= 2)
    {
      guint b = batch * k;
      EsMemPlan plan;

      if (p->train_rows > 0 && b > p->train_rows)
        b = p->train_rows;
      if (b <= batch)
        continue;
      if (p->mem_limit > 0)
        {
          EsTrainConfig cfg = r->opts.engine;

          es_mem_plan (r->model, &cfg, (int) b, TRUE, &plan);
          if (plan.total > p->mem_limit)
            continue;
        }
      return b;
    }
  return batch;
}

static void
detect_launch (EspalierProfileReport *r, Ctx *c, GArray *pending)
{
  const EspalierProfileSummary *s = &r->summary;
  double fixed, weights = 0.0, k, gain, row_us;
  guint batch = s->batch, bigger;
  Pending *f;
  Advice *a;

  if (batch == 0 || c->step <= 0)
    return;
  /* Per step, what does not grow with the batch: the optimizer (it walks the
   * parameters, not the rows), the bookkeeping around the step, the hand-over of a
   * batch when the data is not the slow side, and each layer's weight traffic. */
  for (guint i = 0; i < s->n_layers; i++)
    weights += (r->layers[i].forward_s + r->layers[i].backward_s) * layer_fixed_share (r, i);
  fixed = (c->opt_share + c->other_share + (c->data_bound ? 0.0 : c->data_share)) * c->step
          + weights / c->steps;
  fixed = MIN (fixed, c->step);
  bigger = larger_batch (r, batch);
  k = (double) bigger / batch;
  gain = k * c->step / (fixed + k * (c->step - fixed));
  if (bigger <= batch || gain < LAUNCH_MIN_GAIN)
    return;
  row_us = 1e6 * c->step / batch;
  f = add_finding (pending, ESPALIER_FINDING_LAUNCH_BOUND, fixed / c->step, -1,
                   own (r, g_strdup_printf (_("Batches of %u are too small to keep the "
                                              "machine busy"), batch)),
                   own (r, g_strdup_printf (
                     _("A step of %u rows takes %.3f ms, %.2f µs per row. An estimated "
                       "%.0f%% of it (%.3f ms: the optimizer, the weights read and written "
                       "in every pass, the hand-over and bookkeeping of a step) does not "
                       "grow with the batch%s."),
                     batch, 1e3 * c->step, row_us, 100 * fixed / c->step, 1e3 * fixed,
                     c->roofline >= 0
                       ? own (r, g_strdup_printf (_("; the layers reach %.0f%% of what "
                                                    "the roofline allows"),
                                                  100 * c->roofline))
                       : "")));
  a = add_advice (f, ESPALIER_ADVICE_LARGER_BATCH,
                  own (r, g_strdup_printf (_("Train on batches of %u"), bigger)),
                  own (r, g_strdup_printf (
                    _("%.3f ms of each step is fixed: spread over %u rows instead of %u it "
                      "gives about %.2f× the rows per second (estimate)."),
                    1e3 * fixed, bigger, batch, gain)),
                  own (r, g_strdup_printf (
                    _("Batch %u → %u (the learning rate is kept: a larger batch often "
                      "wants a larger one)."), batch, bigger)),
                  gain, -1);
  a->batch = bigger;
}

static void
detect_memory (EspalierProfileReport *r, Ctx *c, GArray *pending)
{
  const EspalierProfile *p = r->profile;
  char peak[32], limit[32], kinds[ES_MEM_N_KINDS][32];
  double ratio, act, gain;
  guint batch = r->summary.batch, micro = r->summary.micro_batch;
  int accum = MAX (r->opts.engine.accum_steps, 1);
  Pending *f;
  Advice *a;

  if (p->mem_limit == 0 || p->mem_peak == 0)
    return;
  ratio = (double) p->mem_peak / (double) p->mem_limit;
  if (ratio <= MEMORY_NEAR_LIMIT)
    return;
  for (int k = 0; k < ES_MEM_N_KINDS; k++)
    es_format_bytes (kinds[k], sizeof kinds[k], (double) p->mem_kind[k]);
  f = add_finding (pending, ESPALIER_FINDING_MEMORY_LIMIT, ratio, -1,
                   _("Memory is close to the limit"),
                   own (r, g_strdup_printf (
                     _("The engine's peak, %s, is %.0f%% of the %s limit (weights %s, "
                       "gradients %s, optimizer %s, activations %s, workspace %s, data "
                       "%s)%s."),
                     es_format_bytes (peak, sizeof peak, (double) p->mem_peak), 100 * ratio,
                     es_format_bytes (limit, sizeof limit, (double) p->mem_limit),
                     kinds[ES_MEM_WEIGHTS], kinds[ES_MEM_GRADIENTS], kinds[ES_MEM_OPTIMIZER],
                     kinds[ES_MEM_ACTIVATIONS], kinds[ES_MEM_WORKSPACE], kinds[ES_MEM_DATA],
                     micro < batch
                       ? own (r, g_strdup_printf (_("; the budget already splits batches of "
                                                    "%u into micro-batches of %u"),
                                                  batch, micro))
                       : "")));
  /* Halving the rows per pass halves what scales with them. */
  act = (double) (p->mem_kind[ES_MEM_ACTIVATIONS] + p->mem_kind[ES_MEM_DATA]
                  + p->mem_kind[ES_MEM_WORKSPACE]);
  gain = (double) p->mem_peak / MAX ((double) p->mem_peak - act / 2, 1.0);
  a = add_advice (f, ESPALIER_ADVICE_GRAD_ACCUMULATION,
                  _("Accumulate gradients over smaller batches"),
                  own (r, g_strdup_printf (
                    _("Activations, workspace and data (%s) grow with the rows of a pass: "
                      "half the rows per pass, twice the passes per optimizer step keep "
                      "the effective batch of %u and lower the peak about %.2f× "
                      "(estimate)."),
                    es_format_bytes (peak, sizeof peak, act), batch * accum, gain)),
                  own (r, g_strdup_printf (_("Batch %u with accumulation %d → batch %u with "
                                             "accumulation %d."),
                                           batch, accum, (batch + 1) / 2, accum * 2)),
                  gain, -1);
  a->batch = (batch + 1) / 2;
  a->accum = (guint) accum * 2;
  if (batch < 2)
    cannot (a, _("The batch is one row already"));
  a = add_advice (f, ESPALIER_ADVICE_MIXED_PRECISION, _("Train in mixed precision"),
                  _("fp16 or bf16 activations and gradients take half the memory of fp32."),
                  _("Activations and gradients in 16 bits, master weights in fp32, with loss "
                    "scaling."),
                  NAN, -1);
  cannot (a, _("The CPU backend computes in fp32 only: mixed precision needs the CUDA "
               "backend"));
  (void) c;
}

static void
detect_dominant (EspalierProfileReport *r, Ctx *c, GArray *pending)
{
  const EspalierProfileSummary *s = &r->summary;
  int top = -1, next = -1, last_weight = last_weight_layer (r->model);
  double t_top = 0.0, flops = 0.0, share, t_next = 0.0, t_tail = 0.0;
  const EsLayerInfo *li;
  const EspalierLayerTime *l;
  Pending *f;
  Advice *a;

  if (s->n_layers < 2 || c->layers_s <= 0)
    return;
  for (guint i = 0; i < s->n_layers; i++)
    {
      double t = r->layers[i].forward_s + r->layers[i].backward_s;

      flops += r->layers[i].flops;
      if (t > t_top)
        {
          t_top = t;
          top = (int) i;
        }
    }
  share = t_top / c->layers_s;
  if (top < 0 || share <= DOMINANT_SHARE)
    return;
  l = &r->layers[top];
  li = es_model_layer (r->model, top);
  f = add_finding (pending, ESPALIER_FINDING_DOMINANT_LAYER, t_top / c->wall, top,
                   own (r, g_strdup_printf (_("Layer %d (%s) takes most of the compute"),
                                            top + 1, l->kind)),
                   own (r, g_strdup_printf (
                     _("Layer %d (%s) takes %.0f%% of the layers' time (%.3f ms of %.3f ms "
                       "a step, %.0f%% of the step) for %.0f%% of their FLOPs; it runs at "
                       "%.2f GFLOP/s%s."),
                     top + 1, l->kind, 100 * share, 1e3 * t_top / c->steps,
                     1e3 * c->layers_s / c->steps, 100 * t_top / c->wall,
                     flops > 0 ? 100 * l->flops / flops : 0.0, l->gflops,
                     l->attainable_gflops > 0 && !r->ceilings_low
                       ? own (r, g_strdup_printf (_(", %.0f%% of the %.1f GFLOP/s the "
                                                    "roofline allows it"),
                                                  100 * l->roofline_share,
                                                  l->attainable_gflops))
                       : "")));
  if (!is_weight_layer (r->model, top))
    return;
  /* The layers up to the next weight layer belong to it; that one's input shrinks.
   * Layers are numbered from 1 in what the user reads, as espalier-cli info prints them. */
  for (int j = top + 1; j < (int) s->n_layers; j++)
    {
      double t = r->layers[j].forward_s + r->layers[j].backward_s;

      if (is_weight_layer (r->model, j))
        {
          next = j;
          t_next = t;
          break;
        }
      t_tail += t;
    }
  if (top != last_weight && next >= 0)
    {
      int units = li->spec.kind == ES_LAYER_DENSE ? li->spec.units : li->spec.filters;
      int keep = MAX (units / 2, 1);
      double saved = (t_top + t_tail + t_next) * (1.0 - (double) keep / units);
      double gain = c->wall / MAX (c->wall - saved, 1e-12);

      a = add_advice (f, ESPALIER_ADVICE_PRUNE,
                      own (r, g_strdup_printf (_("Prune half of layer %d's units"), top + 1)),
                      next - 1 > top
                      ? own (r, g_strdup_printf (
                          _("Layer %d, the layers after it up to layer %d and layer %d's "
                            "inputs take %.0f%% of the step; keeping %d of %d units saves "
                            "about half of that, %.2f× the rows per second (estimate)."),
                          top + 1, next, next + 1, 100 * (t_top + t_tail + t_next) / c->wall,
                          keep, units, gain))
                      : own (r, g_strdup_printf (
                          _("Layer %d and layer %d's inputs take %.0f%% of the step; keeping "
                            "%d of %d units saves about half of that, %.2f× the rows per "
                            "second (estimate)."),
                          top + 1, next + 1, 100 * (t_top + t_tail + t_next) / c->wall,
                          keep, units, gain)),
                      own (r, g_strdup_printf (
                        _("Structured pruning: layer %d keeps the %d of its %d units with "
                          "the largest weights, layer %d's inputs shrink to match. "
                          "Fine-tune afterwards to recover accuracy."),
                        top + 1, keep, units, next + 1)),
                      gain, top);
      a->keep = keep;
      if (units < 2)
        cannot (a, _("The layer has one unit"));

      gain = c->wall / MAX (c->wall - (t_top + t_tail), 1e-12);
      a = add_advice (f, ESPALIER_ADVICE_FEWER_LAYERS,
                      own (r, g_strdup_printf (_("Remove layer %d"), top + 1)),
                      own (r, g_strdup_printf (
                        _("Layer %d and the layers up to the next weight layer take %.0f%% "
                          "of the step: without them, about %.2f× the rows per second "
                          "(estimate; the model loses capacity, recover it by "
                          "distillation)."),
                        top + 1, 100 * (t_top + t_tail) / c->wall, gain)),
                      own (r, g_strdup_printf (
                        _("Layer reduction: layer %d and its activation are removed; layer "
                          "%d reads what it read."), top + 1, next + 1)),
                      gain, top);
      {
        EsError es = { 0 };
        EsModel *reduced = es_reduce_remove_layer (r->model, top, r->opts.seed, &es);

        if (reduced == NULL)
          cannot (a, own (r, g_strdup (es.message)));
        es_model_free (reduced);
      }
    }
  a = add_advice (f, ESPALIER_ADVICE_QUANTIZE, _("Quantize to int8 for inference"),
                  own (r, g_strdup_printf (
                    _("Layer %d's weights in int8 move a quarter of the bytes and run on "
                      "int8 kernels. No estimate for training: this speeds up inference, "
                      "measured as batch-1 latency."), top + 1)),
                  _("Dynamic int8 quantization of the Dense and Conv2D layers; the trained "
                    "model is unchanged."),
                  NAN, top);
}

static void
detect_denormals (EspalierProfileReport *r, Ctx *c, GArray *pending)
{
  const EspalierProfile *p = r->profile;
  const EsDenormalCount *d = &p->denormals;
  gint64 n = d->params + d->gradients + d->optimizer + d->activations;
  double cost, gain = NAN;
  Pending *f;

  if (n <= 0 || p->ftz)
    return;
  if (r->probe_steps > 0 && r->probe_off_s > 0)
    {
      cost = MAX (1.0 - r->probe_on_s / r->probe_off_s, 0.0);
      gain = r->probe_on_s > 0 ? r->probe_off_s / r->probe_on_s : NAN;
    }
  else   /* not timed: listed, last */
    cost = MIN_SEVERITY;
  f = add_finding (pending, ESPALIER_FINDING_DENORMALS, cost, -1,
                   _("Denormal floats slow the arithmetic"),
                   own (r, g_strdup_printf (
                     _("%lld of %lld values are denormal (weights %lld, gradients %lld, "
                       "optimizer state %lld, activations %lld) and flush-to-zero is off%s."),
                     (long long) n, (long long) d->total_values, (long long) d->params,
                     (long long) d->gradients, (long long) d->optimizer,
                     (long long) d->activations,
                     r->probe_steps > 0
                       ? own (r, g_strdup_printf (g_dngettext (GETTEXT_PACKAGE,
                                                                ": %u step took %.3f ms with it "
                                                                "off, %.3f ms with it on",
                                                                ": %u steps took %.3f ms each with it "
                                                                "off, %.3f ms with it on",
                                                                r->probe_steps),
                                                  r->probe_steps, 1e3 * r->probe_off_s,
                                                  1e3 * r->probe_on_s))
                       : "")));
  add_advice (f, ESPALIER_ADVICE_FLUSH_DENORMALS, _("Flush denormals to zero"),
              r->probe_steps > 0
                ? own (r, g_strdup_printf (_("Timed both ways: %.2f× the speed with "
                                             "flush-to-zero on (estimate from %u steps)."),
                                           gain, r->probe_steps))
                : _("Values this small change nothing a network learns, and the CPU "
                    "handles them many times slower than normal floats."),
              _("Flush-to-zero and denormals-are-zero on the compute threads."),
              gain, -1);
  (void) c;
}

static void
detect_threads (EspalierProfileReport *r, Ctx *c, GArray *pending)
{
  const EspalierProfile *p = r->profile;
  const EsThreadInfo *t = &p->threads;
  gboolean blas = g_str_equal (es_cpu_backend_gemm_path (), "cblas");
  int extra = (blas ? MAX (t->blas_threads - 1, 0) : 0) + MAX (t->omp_threads - 1, 0);
  int compute = t->pool_threads + extra, target;
  double over, waited, gain, per_step;
  gboolean too_many = t->cores > 0 && compute > t->cores;
  const char *wait_text;
  Pending *f;
  Advice *a;

  /* the share of the step the training thread was runnable but had no core */
  waited = p->wall_s > 0 ? MIN (p->trainer_runqueue_wait_s / p->wall_s, 1.0) : 0.0;
  if (!too_many && waited < RUNQUEUE_SHARE)
    return;
  over = too_many ? (double) (compute - t->cores) / compute : 0.0;
  per_step = (double) p->involuntary_switches / c->steps;
  wait_text = own (r, g_strdup_printf (
    _("the training thread waited for a core %.1f%% of the time (%.3f ms a step), the "
      "process's %d threads %.3f ms a step in all; it was switched out involuntarily %.1f "
      "times a step."),
    100 * waited, 1e3 * p->trainer_runqueue_wait_s / c->steps, t->process_threads,
    1e3 * p->runqueue_wait_s / c->steps, per_step));
  if (too_many)
    f = add_finding (pending, ESPALIER_FINDING_OVERSUBSCRIBED, MAX (over, waited), -1,
                     _("More compute threads than cores"),
                     own (r, g_strdup_printf (
                       _("%d threads may compute at once (the pool's %d, BLAS %d%s, OpenMP "
                         "%d) on %d cores; %s"),
                       compute, t->pool_threads, t->blas_threads,
                       blas ? "" : _(" unused: the products run on our own kernels"),
                       t->omp_threads, t->cores, wait_text)));
  else
    f = add_finding (pending, ESPALIER_FINDING_OVERSUBSCRIBED, waited, -1,
                     _("The machine's cores are busy with other work"),
                     own (r, g_strdup_printf (
                       _("The pool computes on %d of the %d cores, yet %s"), t->pool_threads,
                       t->cores, wait_text)));
  if (too_many)
    {
      /* A pool waits at each barrier for its slowest thread: a thread that has to share
       * a core makes the layers' time grow by up to compute / cores. */
      gain = c->wall / MAX (c->wall - c->layers_s * over, 1e-12);
      target = MAX (t->cores - extra, 1);
    }
  else if (t->pool_threads > 1)
    {
      /* the same, with the cores other work leaves: about one in (1 + waited) */
      gain = NAN;
      target = MAX (t->pool_threads / 2, 1);
    }
  else
    return;
  a = add_advice (f, ESPALIER_ADVICE_FEWER_THREADS,
                  own (r, g_strdup_printf (g_dngettext (GETTEXT_PACKAGE, "Compute on %d thread",
                                                        "Compute on %d threads", target),
                                           target)),
                  too_many
                    ? own (r, g_strdup_printf (
                        _("The layers take %.0f%% of the step; with every thread on a core "
                          "of its own they stop waiting for descheduled ones: about %.2f× "
                          "(estimate)."), 100 * c->layers_s / c->wall, gain))
                    : _("Fewer compute threads wait less for one another at each layer "
                        "while other work holds cores. No estimate: it depends on that "
                        "work."),
                  own (r, g_strdup_printf (_("Compute threads %d → %d."), t->pool_threads,
                                           target)),
                  gain, -1);
  a->threads = (guint) target;
  if (target >= t->pool_threads)
    cannot (a, _("The pool is small already: set OPENBLAS_NUM_THREADS=1 and "
                 "OMP_NUM_THREADS=1 in the environment"));
}

static void
detect_optimizer (EspalierProfileReport *r, Ctx *c, GArray *pending)
{
  const EsTrainConfig *e = &r->opts.engine;
  Pending *f;
  Advice *a;

  if (e->optimizer != ES_OPT_ADAM || !(e->l2 > 0))
    return;
  /* a setting more than a cost: listed even when the optimizer's time is small */
  f = add_finding (pending, ESPALIER_FINDING_OPTIMIZER, MAX (c->opt_share, MIN_SEVERITY), -1,
                   _("Adam with L2 regularization"),
                   own (r, g_strdup_printf (
                     _("The L2 term (%g) is added to the gradient, where Adam divides it by "
                       "each weight's running gradient scale: weights with large gradients "
                       "are hardly decayed. The optimizer takes %.1f%% of the step."),
                     e->l2, 100 * c->opt_share)));
  a = add_advice (f, ESPALIER_ADVICE_ADAMW, _("Use AdamW"),
                  _("AdamW decays the weights directly, as L2 is meant to (Loshchilov & "
                    "Hutter). The gain is in regularization, not speed: no speed "
                    "estimate."),
                  own (r, g_strdup_printf (_("Optimizer adam → adamw with weight decay %g, "
                                             "L2 %g → 0."),
                                           e->weight_decay > 0 ? e->weight_decay : 0.01,
                                           e->l2)),
                  NAN, -1);
  (void) a;
}

static void
detect_compute (EspalierProfileReport *r, Ctx *c, GArray *pending)
{
  double layers_share = c->layers_s / c->wall;
  Pending *f;
  Advice *a;

  if (c->roofline < COMPUTE_ROOFLINE || layers_share < COMPUTE_LAYERS_SHARE)
    return;
  /* Only a faster device or fewer FLOPs take this time: half of it counts as at stake,
   * so the remedies that can be applied here rank first. */
  f = add_finding (pending, ESPALIER_FINDING_COMPUTE_BOUND, 0.5 * layers_share * c->roofline,
                   -1, _("The layers run near the machine's ceilings"),
                   own (r, g_strdup_printf (
                     _("The layers take %.0f%% of the step and reach %.0f%% of what the "
                       "roofline allows them (peak %.1f GFLOP/s, copy %.1f GB/s): this "
                       "machine has little more to give."),
                     100 * layers_share, 100 * c->roofline, r->ceilings.gemm_gflops,
                     r->ceilings.copy_gbs)));
  a = add_advice (f, ESPALIER_ADVICE_GPU, _("Train on the GPU"),
                  _("A GPU's peak is one or two orders of magnitude above a CPU's."),
                  _("Train on the CUDA backend."), NAN, -1);
  cannot (a, no_gpu_reason ());
  a = add_advice (f, ESPALIER_ADVICE_MIXED_PRECISION, _("Train in mixed precision"),
                  _("16-bit arithmetic doubles the peak of hardware that has it."),
                  _("Activations and gradients in 16 bits, master weights in fp32, with loss "
                    "scaling."),
                  NAN, -1);
  cannot (a, _("The CPU backend computes in fp32 only: mixed precision needs the CUDA "
               "backend"));
  add_advice (f, ESPALIER_ADVICE_QUANTIZE, _("Quantize to int8 for inference"),
              _("int8 kernels do four times the multiply-adds per instruction. No estimate "
                "for training: this speeds up inference, measured as batch-1 latency."),
              _("Dynamic int8 quantization of the Dense and Conv2D layers; the trained "
                "model is unchanged."),
              NAN, -1);
}

static gint
by_severity (gconstpointer a, gconstpointer b)
{
  double x = ((const Pending *) a)->pub.severity, y = ((const Pending *) b)->pub.severity;

  return x > y ? -1 : x < y ? 1 : 0;
}

static void
build_findings (EspalierProfileReport *r)
{
  const EspalierProfile *p = r->profile;
  g_autoptr(GArray) pending = g_array_new (FALSE, TRUE, sizeof (Pending));
  gboolean seen[ESPALIER_N_ADVICE] = { 0 };
  double weighted = 0.0, timed = 0.0;
  Ctx c = { 0 };

  g_array_set_size (r->findings, 0);
  g_array_set_size (r->advice, 0);
  if (p->steps == 0 || p->wall_s <= 0)
    return;
  /* The typical data wait (the median step's) rather than the sum, so that a stall of
   * the machine while the trainer slept on the batcher decides nothing; the time of
   * the step follows. */
  c.steps = p->steps;
  c.data_s = MIN (p->data_s, p->data_median_s * p->steps);
  c.wall = p->wall_s - (p->data_s - c.data_s);
  c.step = c.wall / p->steps;
  c.data_share = c.data_s / c.wall;
  c.load_share = p->engine.stage_s[ES_STAGE_LOAD] / c.wall;
  c.opt_share = p->engine.stage_s[ES_STAGE_OPTIMIZER] / c.wall;
  c.other_share = r->stages[ES_N_STAGES + 1].seconds / c.wall;
  c.cores = p->threads.cores > 0 ? (double) p->threads.cores : (double) g_get_num_processors ();
  for (guint i = 0; i < r->summary.n_layers; i++)
    {
      double t = r->layers[i].forward_s + r->layers[i].backward_s;

      c.layers_s += t;
      if (r->layers[i].attainable_gflops > 0)
        {
          weighted += t * MIN (r->layers[i].roofline_share, 1.0);
          timed += t;
        }
    }
  c.roofline = r->have_ceilings && !r->ceilings_low && timed > 0 ? weighted / timed : -1.0;

  detect_data (r, &c, pending);      /* first: launch-bound reads c.data_bound */
  detect_convert (r, &c, pending);
  detect_launch (r, &c, pending);
  detect_memory (r, &c, pending);
  detect_dominant (r, &c, pending);
  detect_denormals (r, &c, pending);
  detect_threads (r, &c, pending);
  detect_optimizer (r, &c, pending);
  detect_compute (r, &c, pending);

  g_array_sort (pending, by_severity);
  for (guint i = 0; i < pending->len; i++)
    {
      Pending *f = &g_array_index (pending, Pending, i);

      if (f->pub.severity < MIN_SEVERITY)
        {
          g_array_unref (f->advice);
          continue;
        }
      g_array_append_val (r->findings, f->pub);
      for (guint j = 0; j < f->advice->len; j++)
        {
          Advice *a = &g_array_index (f->advice, Advice, j);

          /* settings that are wrong whatever they cost stay */
          gboolean fix = a->pub.kind == ESPALIER_ADVICE_FEWER_THREADS
                         || a->pub.kind == ESPALIER_ADVICE_FLUSH_DENORMALS;

          if (seen[a->pub.kind]
              || (!fix && isfinite (a->pub.expected_gain) && a->pub.expected_gain < MIN_GAIN))
            continue;
          seen[a->pub.kind] = TRUE;
          g_array_append_val (r->advice, *a);
        }
      g_array_unref (f->advice);
    }
}

static void
report_build (EspalierProfileReport *r)
{
  g_ptr_array_set_size (r->strings, 0);
  build_summary (r);
  build_findings (r);
}

/* ---- the report ------------------------------------------------------------------ */

/* espalier_profile_report_new, or NULL with ESPALIER_ERROR_MEMORY when there is no
 * memory for the report's copy of the model. */
static EspalierProfileReport *
report_new (const EspalierProfile      *prof,
            const EsModel              *model,
            const EspalierTrainOptions *opts,
            const EsCeilings           *ceilings,
            GError                    **error)
{
  EspalierProfileReport *r;
  EsModel *copy;

  /* TRANSLATORS: what did not fit in "Not enough memory for %s" */
  copy = espalier_model_try_copy (model, _("the profile report's copy of the model"), error);
  if (copy == NULL)
    return NULL;
  r = g_atomic_rc_box_new0 (EspalierProfileReport);
  r->profile = espalier_profile_copy (prof);
  r->model = copy;
  if (opts != NULL)
    r->opts = *opts;
  else
    espalier_train_options_init (&r->opts);
  if (ceilings != NULL && ceilings->gemm_gflops > 0 && ceilings->copy_gbs > 0)
    {
      r->ceilings = *ceilings;
      r->have_ceilings = TRUE;
    }
  r->findings = g_array_new (FALSE, TRUE, sizeof (EspalierFinding));
  r->advice = g_array_new (FALSE, TRUE, sizeof (Advice));
  r->strings = g_ptr_array_new_with_free_func (g_free);
  report_build (r);
  return r;
}

EspalierProfileReport *
espalier_profile_report_new (const EspalierProfile      *prof,
                             const EsModel              *model,
                             const EspalierTrainOptions *opts,
                             const EsCeilings           *ceilings)
{
  g_autoptr(GError) error = NULL;
  EspalierProfileReport *r;

  g_return_val_if_fail (prof != NULL, NULL);
  g_return_val_if_fail (model != NULL, NULL);
  g_return_val_if_fail (prof->n_layers == (guint) es_model_n_layers (model), NULL);

  r = report_new (prof, model, opts, ceilings, &error);
  if (r == NULL)
    g_debug ("%s", error->message);
  return r;
}

EspalierProfileReport *
espalier_profile_report_ref (EspalierProfileReport *report)
{
  g_return_val_if_fail (report != NULL, NULL);
  return g_atomic_rc_box_acquire (report);
}

static void
report_clear (gpointer p)
{
  EspalierProfileReport *r = p;

  espalier_profile_free (r->profile);
  es_model_free (r->model);
  g_free (r->layers);
  g_array_unref (r->findings);
  g_array_unref (r->advice);
  g_ptr_array_unref (r->strings);
}

void
espalier_profile_report_unref (EspalierProfileReport *report)
{
  if (report != NULL)
    g_atomic_rc_box_release_full (report, report_clear);
}

const EspalierProfileSummary *
espalier_profile_report_get_summary (EspalierProfileReport *report)
{
  g_return_val_if_fail (report != NULL, NULL);
  return &report->summary;
}

guint
espalier_profile_report_n_findings (EspalierProfileReport *report)
{
  g_return_val_if_fail (report != NULL, 0);
  return report->findings->len;
}

const EspalierFinding *
espalier_profile_report_finding (EspalierProfileReport *report,
                                 guint                  i)
{
  g_return_val_if_fail (report != NULL, NULL);
  g_return_val_if_fail (i < report->findings->len, NULL);
  return &g_array_index (report->findings, EspalierFinding, i);
}

guint
espalier_profile_report_n_advice (EspalierProfileReport *report)
{
  g_return_val_if_fail (report != NULL, 0);
  return report->advice->len;
}

const EspalierAdvice *
espalier_profile_report_advice (EspalierProfileReport *report,
                                guint                  i)
{
  g_return_val_if_fail (report != NULL, NULL);
  g_return_val_if_fail (i < report->advice->len, NULL);
  return &g_array_index (report->advice, Advice, i).pub;
}

gboolean
espalier_profile_report_get_probe (EspalierProfileReport *report,
                                   guint                 *steps,
                                   double                *ftz_off_step_s,
                                   double                *ftz_on_step_s)
{
  g_return_val_if_fail (report != NULL, FALSE);

  if (steps != NULL)
    *steps = report->probe_steps;
  if (ftz_off_step_s != NULL)
    *ftz_off_step_s = report->probe_off_s;
  if (ftz_on_step_s != NULL)
    *ftz_on_step_s = report->probe_on_s;
  return report->probe_steps > 0;
}

/* ---- running a profile ---------------------------------------------------------- */

/* Train a copy of model (already a copy when trained is set: it is then trained in
 * place and kept) for steps steps with profiling on; the profile (a copy) or NULL. */
static EspalierProfile *
profile_steps (EspalierDataset            *dataset,
               EsModel                    *model,
               const EspalierTrainOptions *opts,
               guint                       steps,
               gboolean                    trace,
               GCancellable               *cancellable,
               EspalierProgressFunc        func,
               gpointer                    user_data,
               GError                    **error)
{
  g_autoptr(EspalierTrainer) trainer = NULL;
  EspalierTrainOptions o = *opts;

  /* every epoch has a step: the run ends on the step count (after the warm-up step),
   * with no validation or early stopping between steps */
  o.epochs = steps + 1;
  o.val_fraction = 0;
  o.patience = 0;
  trainer = espalier_trainer_new (dataset, model, &o);
  espalier_trainer_set_profiling (trainer, TRUE, steps, trace);
  if (!espalier_trainer_run (trainer, cancellable, func, user_data, error))
    return NULL;
  return espalier_profile_copy (espalier_trainer_get_profile (trainer));
}

EspalierProfileReport *
espalier_profile_run (EspalierDataset              *dataset,
                      const EsModel                *model,
                      const EspalierTrainOptions   *opts,
                      const EspalierProfileOptions *popts,
                      GCancellable                 *cancellable,
                      EspalierProgressFunc          func,
                      gpointer                      user_data,
                      GError                      **error)
{
  EspalierProfileOptions defaults;
  EspalierTrainOptions o;
  EspalierProfile *prof;
  EspalierProfileReport *report;
  EsModel *trained;
  EsCeilings ceil;
  guint threads;

  g_return_val_if_fail (ESPALIER_IS_DATASET (dataset), NULL);
  g_return_val_if_fail (model != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (popts == NULL)
    {
      espalier_profile_options_init (&defaults);
      popts = &defaults;
    }
  if (opts != NULL)
    o = *opts;
  else
    espalier_train_options_init (&o);
  if (popts->steps == 0 || o.batch_size == 0)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("A profile needs at least one step of at least one row"));
      return NULL;
    }

  /* TRANSLATORS: what did not fit in "Not enough memory for %s" */
  trained = espalier_model_try_copy (model, _("the profiled copy of the model"), error);
  if (trained == NULL)
    return NULL;
  prof = profile_steps (dataset, trained, &o, popts->steps, popts->trace, cancellable, func,
                        user_data, error);
  if (prof == NULL)
    {
      es_model_free (trained);
      return NULL;
    }
  /* The roofline of the threads that ran. */
  threads = prof->threads.pool_threads > 0 ? (guint) prof->threads.pool_threads : o.threads;
  if (!espalier_ceilings_get (threads, popts->remeasure, &ceil, error))
    {
      espalier_profile_free (prof);
      es_model_free (trained);
      return NULL;
    }
  report = report_new (prof, model, &o, &ceil, error);
  if (report == NULL)
    {
      espalier_profile_free (prof);
      es_model_free (trained);
      return NULL;
    }

  /* Denormals without flush-to-zero: time steps from the trained weights both ways,
   * twice, so the finding states what they cost. */
  if (popts->probe_denormals && !prof->ftz
      && prof->denormals.params + prof->denormals.gradients + prof->denormals.optimizer
         + prof->denormals.activations > 0)
    {
      guint k = CLAMP (popts->steps, 3, PROBE_MAX_STEPS);
      double step[2] = { INFINITY, INFINITY };

      /* off, on, off, on: the best of each, so a hiccup of the machine does not decide */
      for (guint run = 0; run < 4; run++)
        {
          guint on = run % 2;
          EsModel *copy = espalier_model_try_copy (trained, _("the profiled copy of the model"),
                                                   error);
          EspalierTrainOptions po = o;
          EspalierProfile *pp = NULL;

          po.keep_denormals = !on;
          if (copy != NULL)
            pp = profile_steps (dataset, copy, &po, k, FALSE, cancellable, NULL, NULL, error);
          es_model_free (copy);
          if (pp == NULL)
            {
              espalier_profile_free (prof);
              es_model_free (trained);
              espalier_profile_report_unref (report);
              return NULL;
            }
          if (pp->steps > 0)
            step[on] = MIN (step[on], pp->wall_s / pp->steps);
          espalier_profile_free (pp);
        }
      report->probe_steps = k;
      report->probe_off_s = isfinite (step[0]) ? step[0] : 0.0;
      report->probe_on_s = isfinite (step[1]) ? step[1] : 0.0;
      report_build (report);
    }
  espalier_profile_free (prof);
  es_model_free (trained);
  return report;
}

/* ---- applying advice ------------------------------------------------------------ */

void
espalier_advice_result_clear (EspalierAdviceResult *res)
{
  if (res == NULL)
    return;
  g_clear_pointer (&res->model, es_model_free);
  g_clear_pointer (&res->change, g_free);
  g_clear_pointer (&res->report, espalier_profile_report_unref);
  memset (res, 0, sizeof *res);
}

/* The set with every row converted to floats once (x * scale + shift). */
static EspalierDataset *
float_copy (EspalierDataset *ds)
{
  EspalierDataset *copy = _espalier_dataset_new (ds->name, ds->source);
  gsize n = (gsize) ds->n_rows * ds->row_size;

  _espalier_dataset_set_shape (copy, ds->rank, ds->dims);
  copy->n_rows = ds->n_rows;
  copy->n_predefined_train = ds->n_predefined_train;
  copy->f32 = g_new (float, MAX (n, 1));
  for (gsize i = 0; i < n; i++)
    copy->f32[i] = (ds->u8 != NULL ? (float) ds->u8[i] : ds->f32[i]) * ds->scale + ds->shift;
  if (ds->labels != NULL)
    copy->labels = g_memdup2 (ds->labels, sizeof (gint32) * ds->n_rows);
  copy->n_classes = ds->n_classes;
  copy->class_names = g_strdupv (ds->class_names);
  if (ds->targets != NULL)
    copy->targets = g_memdup2 (ds->targets, sizeof (float) * ds->n_rows * ds->n_targets);
  copy->n_targets = ds->n_targets;
  copy->label_name = g_strdup (ds->label_name);
  return copy;
}

static gboolean
measure_latency (const EsModel *model,
                 const EsQuant *quant,
                 guint          threads,
                 double        *us,
                 GError       **error)
{
  EspalierLatency lat;

  if (!espalier_measure_variant (model, quant, threads, 0, 0.5, &lat, error))
    return FALSE;
  *us = lat.median_us;
  return TRUE;
}

gboolean
espalier_advice_apply (EspalierProfileReport        *report,
                       guint                         i,
                       EspalierDataset              *dataset,
                       const EsModel                *model,
                       const EspalierTrainOptions   *opts,
                       const EspalierProfileOptions *popts,
                       GCancellable                 *cancellable,
                       EspalierAdviceResult         *res,
                       GError                      **error)
{
  g_autoptr(EspalierDataset) data = NULL;
  g_autoptr(EspalierProfileReport) before = NULL;
  EspalierProfileOptions po;
  EspalierTrainOptions o;
  const Advice *a;
  EsError es = { 0 };
  char buf[32];

  g_return_val_if_fail (report != NULL, FALSE);
  g_return_val_if_fail (i < report->advice->len, FALSE);
  g_return_val_if_fail (ESPALIER_IS_DATASET (dataset), FALSE);
  g_return_val_if_fail (model != NULL, FALSE);
  g_return_val_if_fail (res != NULL, FALSE);

  memset (res, 0, sizeof *res);
  a = &g_array_index (report->advice, Advice, i);
  if (!a->pub.can_apply)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED,
                   _("“%s” cannot be applied: %s"), a->pub.title,
                   a->pub.cannot_apply ? a->pub.cannot_apply : "");
      return FALSE;
    }
  if (opts != NULL)
    o = *opts;
  else
    espalier_train_options_init (&o);
  if (popts != NULL)
    po = *popts;
  else
    espalier_profile_options_init (&po);
  /* both sides timed alike: no trace, no probe */
  po.trace = FALSE;
  po.probe_denormals = FALSE;
  po.remeasure = FALSE;

  res->kind = a->pub.kind;
  res->opts = o;
  res->quantity = _("rows/s (training)");
  data = g_object_ref (dataset);
  switch (a->pub.kind)
    {
    case ESPALIER_ADVICE_LARGER_BATCH:
      res->opts.batch_size = a->batch;
      res->change = g_strdup_printf (_("batch %u → %u"), o.batch_size, a->batch);
      break;
    case ESPALIER_ADVICE_PREFETCH_DATA:
      res->opts.data_threads = a->workers;
      res->opts.prefetch = a->ahead;
      res->change = g_strdup_printf (_("data threads %u → %u, batches ahead %u → %u"),
                                     MAX (o.data_threads, 1), a->workers, MAX (o.prefetch, 1),
                                     a->ahead);
      break;
    case ESPALIER_ADVICE_STANDARDIZE_ONCE:
      g_clear_object (&data);
      data = float_copy (dataset);
      res->change = g_strdup_printf (_("rows converted to floats once (%s)"),
                                     es_format_bytes (buf, sizeof buf,
                                                      4.0 * espalier_dataset_get_n_rows (dataset)
                                                      * espalier_dataset_get_row_size (dataset)));
      break;
    case ESPALIER_ADVICE_GRAD_ACCUMULATION:
      res->opts.batch_size = a->batch;
      res->opts.engine.accum_steps = (int) a->accum;
      res->quantity = _("engine peak memory (bytes)");
      res->change = g_strdup_printf (_("batch %u → %u, accumulation %d → %u"), o.batch_size,
                                     a->batch, MAX (o.engine.accum_steps, 1), a->accum);
      break;
    case ESPALIER_ADVICE_ADAMW:
      res->opts.engine.optimizer = ES_OPT_ADAMW;
      if (!(res->opts.engine.weight_decay > 0))
        res->opts.engine.weight_decay = 0.01f;
      res->opts.engine.l2 = 0;
      res->change = g_strdup_printf (_("adam with L2 %g → adamw with weight decay %g"),
                                     o.engine.l2, res->opts.engine.weight_decay);
      break;
    case ESPALIER_ADVICE_FEWER_LAYERS:
      res->model = es_reduce_remove_layer (model, a->pub.layer, o.seed, &es);
      res->change = g_strdup_printf (_("layer %d (%s) removed"), a->pub.layer + 1,
                                     es_layer_kind_name (es_model_layer (model, a->pub.layer)->spec.kind));
      break;
    case ESPALIER_ADVICE_PRUNE:
      {
        const EsLayerInfo *li = es_model_layer (model, a->pub.layer);

        res->model = es_prune_structured (model, a->pub.layer, a->keep, ES_NORM_L2, &es);
        res->change = g_strdup_printf (_("layer %d: %d → %d units"), a->pub.layer + 1,
                                       li->spec.kind == ES_LAYER_DENSE ? li->spec.units
                                                                       : li->spec.filters,
                                       a->keep);
      }
      break;
    case ESPALIER_ADVICE_QUANTIZE:
      {
        EsQuant *q = es_quant_new (model, ES_QUANT_INT8_DYNAMIC, NULL, false, &es);
        gboolean ok;

        if (q == NULL)
          {
            espalier_error_from_es (error, &es, _("Cannot quantize the model"));
            return FALSE;
          }
        res->quantity = _("batch-1 latency (inference, µs)");
        res->change = g_strdup (_("int8 weights (dynamic) for the Dense and Conv2D layers"));
        /* TRANSLATORS: what did not fit in "Not enough memory for %s" */
        res->model = espalier_model_try_copy (model, _("the changed copy of the model"), error);
        ok = res->model != NULL
             && measure_latency (model, NULL, o.threads, &res->before, error)
             && !g_cancellable_set_error_if_cancelled (cancellable, error)
             && measure_latency (model, q, o.threads, &res->after, error);
        es_quant_free (q);
        if (!ok)
          {
            espalier_advice_result_clear (res);
            return FALSE;
          }
        res->gain = res->after > 0 ? res->before / res->after : NAN;
        return TRUE;
      }
    case ESPALIER_ADVICE_FLUSH_DENORMALS:
      res->opts.keep_denormals = FALSE;
      res->change = g_strdup (_("flush-to-zero off → on"));
      break;
    case ESPALIER_ADVICE_FEWER_THREADS:
      res->opts.threads = a->threads;
      res->change = g_strdup_printf (_("compute threads %d → %u"),
                                     report->profile->threads.pool_threads, a->threads);
      break;
    case ESPALIER_ADVICE_MIXED_PRECISION:
    case ESPALIER_ADVICE_GPU:
    case ESPALIER_N_ADVICE:
    default:
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED,
                   _("“%s” cannot be applied here"), a->pub.title);
      espalier_advice_result_clear (res);
      return FALSE;
    }
  if (res->model == NULL && (a->pub.kind == ESPALIER_ADVICE_PRUNE
                             || a->pub.kind == ESPALIER_ADVICE_FEWER_LAYERS))
    {
      espalier_error_from_es (error, &es, _("Cannot change the model"));
      espalier_advice_result_clear (res);
      return FALSE;
    }
  if (res->model == NULL
      && (res->model = espalier_model_try_copy (model, _("the changed copy of the model"),
                                                error)) == NULL)
    {
      espalier_advice_result_clear (res);
      return FALSE;
    }

  /* Before and after, one right after the other, under the same conditions; for
   * speeds, the best of up to three such pairs (as benchmarks do: a run slowed by
   * something else on the machine says nothing about the change), while a pair takes
   * under a second. */
  {
    gboolean memory = a->pub.kind == ESPALIER_ADVICE_GRAD_ACCUMULATION;
    gint64 t0 = g_get_monotonic_time ();

    res->before = res->after = memory ? INFINITY : 0.0;
    for (guint pair = 0; pair < (memory ? 1u : 3u); pair++)
      {
        g_autoptr(EspalierProfileReport) after = NULL;
        double x, y;

        g_clear_pointer (&before, espalier_profile_report_unref);
        before = espalier_profile_run (dataset, model, &o, &po, cancellable, NULL, NULL, error);
        if (before != NULL)
          after = espalier_profile_run (data, res->model, &res->opts, &po, cancellable, NULL,
                                        NULL, error);
        if (after == NULL)
          {
            espalier_advice_result_clear (res);
            return FALSE;
          }
        x = memory ? (double) before->profile->mem_peak : before->summary.rows_per_s;
        y = memory ? (double) after->profile->mem_peak : after->summary.rows_per_s;
        if (memory)
          {
            res->before = x;
            res->after = y;
            res->report = g_steal_pointer (&after);
          }
        else
          {
            res->before = MAX (res->before, x);
            if (y > res->after || res->report == NULL)
              {
                res->after = y;
                g_clear_pointer (&res->report, espalier_profile_report_unref);
                res->report = g_steal_pointer (&after);
              }
          }
        if (g_get_monotonic_time () - t0 > G_USEC_PER_SEC)
          break;
      }
    if (memory)
      res->gain = res->after > 0 ? res->before / res->after : NAN;
    else
      res->gain = res->before > 0 ? res->after / res->before : NAN;
  }
  return TRUE;
}

/* ---- output ---------------------------------------------------------------------- */

JsonNode *
espalier_profile_report_to_json (EspalierProfileReport *report)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();
  const EspalierProfileSummary *s;
  const EspalierProfile *p;
  double steps;

  g_return_val_if_fail (report != NULL, NULL);

  s = &report->summary;
  p = report->profile;
  steps = MAX (p->steps, 1);
  json_builder_begin_object (b);
  espalier_json_add_int (b, "steps", s->steps);
  espalier_json_add_int (b, "batch", s->batch);
  espalier_json_add_int (b, "micro_batch", s->micro_batch);
  espalier_json_add_int (b, "accum_steps", MAX (report->opts.engine.accum_steps, 1));
  espalier_json_add_double (b, "wall_s", s->wall_s);
  espalier_json_add_double (b, "step_ms", 1e3 * s->step_s);
  espalier_json_add_double (b, "step_median_ms", 1e3 * p->step_median_s);
  espalier_json_add_double (b, "rows_per_s", s->rows_per_s);
  espalier_json_add_double (b, "coverage", s->coverage);
  espalier_json_add_bool (b, "adds_up", fabs (1.0 - s->coverage) <= 0.05);

  json_builder_set_member_name (b, "stages");
  json_builder_begin_array (b);
  for (guint i = 0; i < s->n_stages; i++)
    {
      json_builder_begin_object (b);
      espalier_json_add_string (b, "name", s->stages[i].name);
      espalier_json_add_string (b, "label", s->stages[i].label);
      espalier_json_add_double (b, "seconds", s->stages[i].seconds);
      espalier_json_add_double (b, "ms_per_step", 1e3 * s->stages[i].seconds / steps);
      espalier_json_add_double (b, "share", s->stages[i].share);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);

  json_builder_set_member_name (b, "layers");
  json_builder_begin_array (b);
  for (guint i = 0; i < s->n_layers; i++)
    {
      const EspalierLayerTime *l = &s->layers[i];

      json_builder_begin_object (b);
      espalier_json_add_int (b, "index", l->index);
      espalier_json_add_string (b, "kind", l->kind);
      espalier_json_add_double (b, "forward_ms", 1e3 * l->forward_s / steps);
      espalier_json_add_double (b, "backward_ms", 1e3 * l->backward_s / steps);
      espalier_json_add_double (b, "share", l->share);
      espalier_json_add_int (b, "flops", (gint64) llround (l->flops));
      espalier_json_add_int (b, "bytes", (gint64) llround (l->bytes));
      espalier_json_add_double (b, "gflops_per_s", l->gflops);
      espalier_json_add_double (b, "gb_per_s", l->gbs);
      espalier_json_add_double (b, "intensity", l->intensity);
      espalier_json_add_double (b, "attainable_gflops_per_s", l->attainable_gflops);
      espalier_json_add_double (b, "roofline_share", l->roofline_share);
      espalier_json_add_string (b, "bound", !s->have_ceilings || l->bytes <= 0 ? NULL
                      : l->memory_bound ? "memory" : "compute");
      json_builder_end_object (b);
    }
  json_builder_end_array (b);

  json_builder_set_member_name (b, "machine");
  if (s->have_ceilings)
    {
      json_builder_begin_object (b);
      espalier_json_add_double (b, "peak_gflops_per_s", s->ceilings.gemm_gflops);
      espalier_json_add_double (b, "copy_gb_per_s", s->ceilings.copy_gbs);
      espalier_json_add_double (b, "ridge_flop_per_byte", s->ceilings.gemm_gflops / s->ceilings.copy_gbs);
      espalier_json_add_int (b, "threads", s->ceilings.n_threads);
      espalier_json_add_string (b, "gemm", es_cpu_backend_gemm_path ());
      espalier_json_add_bool (b, "cached", s->ceilings.cached);
      espalier_json_add_bool (b, "measured_low", s->ceilings_low);
      json_builder_end_object (b);
    }
  else
    json_builder_add_null_value (b);

  json_builder_set_member_name (b, "memory");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "kinds");
  json_builder_begin_object (b);
  for (int k = 0; k < ES_MEM_N_KINDS; k++)
    espalier_json_add_int (b, es_mem_kind_name ((EsMemKind) k), (gint64) p->mem_kind[k]);
  json_builder_end_object (b);
  espalier_json_add_int (b, "peak", (gint64) p->mem_peak);
  espalier_json_add_int (b, "limit", (gint64) p->mem_limit);
  espalier_json_add_double (b, "peak_share", p->mem_limit > 0 ? (double) p->mem_peak / p->mem_limit : NAN);
  espalier_json_add_int (b, "rss", (gint64) p->rss);
  espalier_json_add_int (b, "rss_peak", (gint64) p->rss_peak);
  json_builder_end_object (b);

  /* The device the steps ran on; on CUDA the memory above is the GPU pool's, and the
   * device's own readings (-1, unknown, as null) */
  json_builder_set_member_name (b, "device");
  json_builder_begin_object (b);
  {
    g_autofree char *id = espalier_device_to_string (p->device);

    espalier_json_add_string (b, "device", id);
  }
  espalier_json_add_string (b, "name", p->device_name);
  if (p->device >= 0)
    {
      espalier_json_add_int (b, "memory_total", (gint64) p->device_mem_total);
      espalier_json_add_int (b, "memory_free", (gint64) p->device_mem_free);
      espalier_json_add_double (b, "utilization_gpu",
                                p->device_utilization >= 0 ? p->device_utilization : NAN);
      espalier_json_add_double (b, "temperature_c",
                                p->device_temperature_c >= 0 ? p->device_temperature_c : NAN);
      espalier_json_add_double (b, "power_w", p->device_power_w >= 0 ? p->device_power_w : NAN);
    }
  json_builder_end_object (b);

  json_builder_set_member_name (b, "threads");
  json_builder_begin_object (b);
  espalier_json_add_int (b, "pool", p->threads.pool_threads);
  espalier_json_add_int (b, "blas", p->threads.blas_threads);
  espalier_json_add_int (b, "omp", p->threads.omp_threads);
  espalier_json_add_int (b, "cores", p->threads.cores);
  espalier_json_add_int (b, "process", p->threads.process_threads);
  espalier_json_add_int (b, "data", MAX (p->data_threads, 1));
  espalier_json_add_int (b, "involuntary_switches", p->involuntary_switches);
  espalier_json_add_double (b, "involuntary_switches_per_step", p->involuntary_switches / steps);
  espalier_json_add_double (b, "runqueue_wait_ms_per_step", 1e3 * p->runqueue_wait_s / steps);
  espalier_json_add_double (b, "trainer_runqueue_wait_ms_per_step", 1e3 * p->trainer_runqueue_wait_s / steps);
  json_builder_end_object (b);

  json_builder_set_member_name (b, "data");
  json_builder_begin_object (b);
  espalier_json_add_int (b, "train_rows", p->train_rows);
  espalier_json_add_int (b, "threads", MAX (p->data_threads, 1));
  espalier_json_add_int (b, "prefetch", MAX (p->prefetch, 1));
  espalier_json_add_bool (b, "convert_per_batch", p->convert_per_batch);
  espalier_json_add_bool (b, "augment", p->augment);
  espalier_json_add_double (b, "wait_ms_per_step", 1e3 * p->data_s / steps);
  espalier_json_add_double (b, "wait_median_ms", 1e3 * p->data_median_s);
  espalier_json_add_double (b, "produce_ms_per_step", 1e3 * p->produce_s / steps);
  espalier_json_add_double (b, "producer_wait_ms_per_step", 1e3 * p->producer_wait_s / steps);
  json_builder_end_object (b);

  json_builder_set_member_name (b, "denormals");
  json_builder_begin_object (b);
  espalier_json_add_bool (b, "ftz", p->ftz);
  espalier_json_add_int (b, "params", p->denormals.params);
  espalier_json_add_int (b, "gradients", p->denormals.gradients);
  espalier_json_add_int (b, "optimizer", p->denormals.optimizer);
  espalier_json_add_int (b, "activations", p->denormals.activations);
  espalier_json_add_int (b, "total_values", p->denormals.total_values);
  json_builder_set_member_name (b, "probe");
  if (report->probe_steps > 0)
    {
      json_builder_begin_object (b);
      espalier_json_add_int (b, "steps", report->probe_steps);
      espalier_json_add_double (b, "ftz_off_step_ms", 1e3 * report->probe_off_s);
      espalier_json_add_double (b, "ftz_on_step_ms", 1e3 * report->probe_on_s);
      json_builder_end_object (b);
    }
  else
    json_builder_add_null_value (b);
  json_builder_end_object (b);

  json_builder_set_member_name (b, "findings");
  json_builder_begin_array (b);
  for (guint i = 0; i < report->findings->len; i++)
    {
      const EspalierFinding *f = &g_array_index (report->findings, EspalierFinding, i);

      json_builder_begin_object (b);
      espalier_json_add_string (b, "name", f->name);
      espalier_json_add_string (b, "title", f->title);
      espalier_json_add_string (b, "evidence", f->evidence);
      espalier_json_add_double (b, "severity", f->severity);
      if (f->layer >= 0)
        espalier_json_add_int (b, "layer", f->layer);
      else
        espalier_json_add_string (b, "layer", NULL);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);

  json_builder_set_member_name (b, "advice");
  json_builder_begin_array (b);
  for (guint i = 0; i < report->advice->len; i++)
    {
      const EspalierAdvice *a = &g_array_index (report->advice, Advice, i).pub;

      json_builder_begin_object (b);
      espalier_json_add_int (b, "index", i + 1);
      espalier_json_add_string (b, "name", a->name);
      espalier_json_add_string (b, "title", a->title);
      espalier_json_add_string (b, "evidence", a->evidence);
      espalier_json_add_string (b, "action", a->action);
      espalier_json_add_double (b, "expected_gain", a->expected_gain);
      espalier_json_add_bool (b, "estimate", TRUE);
      espalier_json_add_string (b, "finding", finding_names[a->finding]);
      if (a->layer >= 0)
        espalier_json_add_int (b, "layer", a->layer);
      else
        espalier_json_add_string (b, "layer", NULL);
      espalier_json_add_bool (b, "can_apply", a->can_apply);
      espalier_json_add_string (b, "cannot_apply", a->cannot_apply);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
  json_builder_end_object (b);
  return json_builder_get_root (b);
}

/* The name of a trace event's stage: the engine's, or "data". */
static const char *
trace_stage_name (int stage)
{
  return stage == ESPALIER_STAGE_DATA ? "data" : es_stage_name ((EsStage) stage);
}

static void
trace_event (JsonBuilder *b,
             const char  *name,
             const char  *cat,
             double       ts,
             double       dur,
             guint        step,
             int          layer)
{
  json_builder_begin_object (b);
  espalier_json_add_string (b, "name", name);
  espalier_json_add_string (b, "cat", cat);
  espalier_json_add_string (b, "ph", "X");
  espalier_json_add_double (b, "ts", ts);
  espalier_json_add_double (b, "dur", dur);
  espalier_json_add_int (b, "pid", 1);
  espalier_json_add_int (b, "tid", 1);
  json_builder_set_member_name (b, "args");
  json_builder_begin_object (b);
  espalier_json_add_int (b, "step", step);
  if (layer >= 0)
    espalier_json_add_int (b, "layer", layer);
  json_builder_end_object (b);
  json_builder_end_object (b);
}

gboolean
espalier_profile_write_trace (const EspalierProfile *prof,
                              const EsModel         *model,
                              const char            *path,
                              GError               **error)
{
  g_autoptr(JsonBuilder) b = NULL;
  g_autoptr(JsonGenerator) gen = NULL;
  g_autoptr(JsonNode) root = NULL;
  const EspalierTraceEvent *ev;
  guint n, step = 0;
  double origin;

  g_return_val_if_fail (prof != NULL, FALSE);
  g_return_val_if_fail (model != NULL, FALSE);
  g_return_val_if_fail (path != NULL, FALSE);

  if (prof->events == NULL || prof->events->len == 0)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("The profile kept no intervals: profile with tracing on"));
      return FALSE;
    }
  ev = (const EspalierTraceEvent *) prof->events->data;
  n = prof->events->len;
  origin = ev[0].t0;
  b = json_builder_new ();
  json_builder_begin_object (b);
  espalier_json_add_string (b, "displayTimeUnit", "ms");
  json_builder_set_member_name (b, "traceEvents");
  json_builder_begin_array (b);
  for (guint i = 0; i < n; i++)
    {
      const EspalierTraceEvent *e = &ev[i];
      g_autofree char *name = NULL;

      if (e->stage == ESPALIER_STAGE_DATA)
        {
          /* a step: from asking for its data to the end of its last interval */
          double end = e->t1;
          g_autofree char *sname = NULL;

          for (guint j = i + 1; j < n && ev[j].stage != ESPALIER_STAGE_DATA; j++)
            end = MAX (end, ev[j].t1);
          sname = g_strdup_printf ("step %u", ++step);
          trace_event (b, sname, "step", (e->t0 - origin) * 1e6, (end - e->t0) * 1e6, step,
                       -1);
        }
      if (e->layer >= 0 && e->layer < es_model_n_layers (model))
        name = g_strdup_printf ("%s %d %s", trace_stage_name (e->stage), e->layer,
                                es_layer_kind_name (es_model_layer (model, e->layer)->spec.kind));
      else
        name = g_strdup (trace_stage_name (e->stage));
      trace_event (b, name, trace_stage_name (e->stage), (e->t0 - origin) * 1e6,
                   (e->t1 - e->t0) * 1e6, step, e->layer);
    }
  json_builder_end_array (b);
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  gen = json_generator_new ();
  json_generator_set_root (gen, root);
  return json_generator_to_file (gen, path, error);
}
