/* test-profile.c: the trainer's profiling counters (es_trainer_set_profiling). Off, a
 * run leaves every counter at zero; on, every layer that runs gets forward and
 * backward time and the FLOPs its shape implies, a last layer fused into the loss gets
 * none, the stages add up to the total exactly (the readings are chained) and cover
 * the time spent in the calls, the event callback reports contiguous
 * intervals that sum to the counters, evaluation is not timed, and reset clears it all.
 * Bytes moved: es_layer_bytes_moved against the traffic of every layer kind worked
 * out here from its shapes, and the profile's bytes summed over the batches. The
 * profiler's detectors: denormals counted in the trainer's tensors (planted ones found,
 * none after training with FTZ/DAZ), FTZ off and on taking effect on the CPU backend's
 * pool threads, and the thread counts. Nothing asserts how long anything takes. */
#include <float.h>
#include <glib.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "es-backend.h"
#include "es-pool.h"
#include "es-train.h"

#include "engine-test-util.h"

#define N_ROWS 512
#define BATCH  64

/* Dense(64) -> ReLU -> Dense(3) -> Softmax (fused into the loss) on 2 inputs. */
static EsModel *
mlp (void)
{
  EsShape in = { 1, { 2 } };
  EsLayerSpec l[4];
  EsModel *m;

  l[0] = es_layer_spec_default (ES_LAYER_DENSE);
  l[0].units = 64;
  l[1] = es_layer_spec_default (ES_LAYER_RELU);
  l[2] = es_layer_spec_default (ES_LAYER_DENSE);
  l[2].units = 3;
  l[3] = es_layer_spec_default (ES_LAYER_SOFTMAX);
  m = es_model_new (&in, l, 4, NULL);
  g_assert_nonnull (m);
  es_model_init (m, 7);
  return m;
}

typedef struct {
  EsModel   *model;
  EsBackend *be;
  EsTrainer *tr;
  float      x[N_ROWS * 2];
  int32_t    y[N_ROWS];
} Fixture;

static void
fixture_init (Fixture *f)
{
  EsTrainConfig cfg;

  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAM;
  etu_blobs (f->x, f->y, N_ROWS, 3);
  f->model = mlp ();
  f->be = es_cpu_backend_new (1, NULL, NULL);
  g_assert_nonnull (f->be);
  f->tr = es_trainer_new (f->model, f->be, &cfg, BATCH, NULL);
  g_assert_nonnull (f->tr);
}

static void
fixture_clear (Fixture *f)
{
  es_trainer_free (f->tr);
  es_backend_free (f->be);
  es_model_free (f->model);
}

static void
train_epochs (Fixture *f, int epochs)
{
  for (int e = 0; e < epochs; e++)
    for (int r = 0; r < N_ROWS; r += BATCH)
      {
        EsBatch b = { .B = BATCH, .x_f32 = f->x + 2 * r, .labels = f->y + r };
        EsError err = { 0 };

        if (!es_trainer_train_batch (f->tr, &b, NULL, &err))
          g_error ("train_batch: %s", err.message);
      }
}

static void
assert_all_zero (EsTrainer *tr, int n_layers)
{
  EsProfile p;

  es_trainer_get_profile (tr, &p);
  for (int s = 0; s < ES_N_STAGES; s++)
    g_assert_cmpfloat (p.stage_s[s], ==, 0.0);
  g_assert_cmpfloat (p.total_s, ==, 0.0);
  g_assert_cmpint (p.batches, ==, 0);
  g_assert_cmpint (p.micro_batches, ==, 0);
  g_assert_cmpint (p.rows, ==, 0);
  for (int i = 0; i < n_layers; i++)
    {
      EsLayerProfile lp;

      g_assert_true (es_trainer_get_layer_profile (tr, i, &lp));
      g_assert_cmpfloat (lp.forward_s, ==, 0.0);
      g_assert_cmpfloat (lp.backward_s, ==, 0.0);
      g_assert_cmpint (lp.forward_flops, ==, 0);
      g_assert_cmpint (lp.backward_flops, ==, 0);
      g_assert_cmpint (lp.forward_bytes, ==, 0);
      g_assert_cmpint (lp.backward_bytes, ==, 0);
    }
}

static void
test_off (void)
{
  Fixture f;
  EsStepStats st = { 0 };
  EsBatch all = { .B = BATCH, .x_f32 = f.x, .labels = f.y };

  fixture_init (&f);
  g_assert_false (es_trainer_get_profiling (f.tr));
  train_epochs (&f, 2);
  assert_all_zero (f.tr, 4);
  /* evaluation is never timed, even with profiling on */
  es_trainer_set_profiling (f.tr, true);
  g_assert_true (es_trainer_eval_batch (f.tr, &all, &st, NULL, NULL));
  assert_all_zero (f.tr, 4);
  g_assert_false (es_trainer_get_layer_profile (f.tr, 4, &(EsLayerProfile) { 0 }));
  g_assert_false (es_trainer_get_layer_profile (f.tr, -1, &(EsLayerProfile) { 0 }));
  fixture_clear (&f);
}

typedef struct {
  double stage_s[ES_N_STAGES];
  double fwd_s[4], bwd_s[4];
  double last_t1;
  int    n, gaps;
} Events;

static void
on_event (void *user, EsStage stage, int layer, double t0, double t1)
{
  Events *ev = user;

  g_assert_cmpint (stage, >=, 0);
  g_assert_cmpint (stage, <, ES_N_STAGES);
  g_assert_cmpfloat (t1, >=, t0);
  /* within one batch every interval starts where the one before ended */
  if (ev->n > 0 && stage != ES_STAGE_LOAD && t0 != ev->last_t1)
    ev->gaps++;
  ev->stage_s[stage] += t1 - t0;
  if (layer >= 0)
    {
      g_assert_cmpint (layer, <, 4);
      if (stage == ES_STAGE_BACKWARD)
        ev->bwd_s[layer] += t1 - t0;
      else
        {
          g_assert_cmpint (stage, ==, ES_STAGE_FORWARD);
          ev->fwd_s[layer] += t1 - t0;
        }
    }
  ev->last_t1 = t1;
  ev->n++;
}

static void
test_on (void)
{
  Fixture f;
  Events ev = { 0 };
  EsProfile p;
  double t0, wall, sum = 0.0;
  int epochs = 4, batches = epochs * (N_ROWS / BATCH);

  fixture_init (&f);
  es_trainer_set_profiling (f.tr, true);
  es_trainer_set_profile_events (f.tr, on_event, &ev);
  g_assert_true (es_trainer_get_profiling (f.tr));
  t0 = es_now ();
  train_epochs (&f, epochs);
  wall = es_now () - t0;

  es_trainer_get_profile (f.tr, &p);
  g_assert_cmpint (p.batches, ==, batches);
  g_assert_cmpint (p.micro_batches, ==, batches);  /* no budget: no halving */
  g_assert_cmpint (p.rows, ==, batches * BATCH);
  for (int s = 0; s < ES_N_STAGES; s++)
    {
      g_assert_cmpfloat (p.stage_s[s], >, 0.0);
      g_assert_cmpfloat (fabs (ev.stage_s[s] - p.stage_s[s]), <=, 1e-9 * batches);
      sum += p.stage_s[s];
    }
  g_assert_cmpint (ev.gaps, ==, 0);
  /* chained readings: the stages are the total */
  g_assert_cmpfloat (fabs (sum - p.total_s), <=, 1e-9 * p.total_s + 1e-12);
  /* and the total is time spent in the calls: within the loop's wall time, and most of
   * it (the bound is loose: a loaded machine may preempt between two calls) */
  g_assert_cmpfloat (p.total_s, <=, wall);
  g_assert_cmpfloat (p.total_s, >=, 0.5 * wall);

  for (int i = 0; i < 4; i++)
    {
      const EsLayerInfo *info = es_model_layer (f.model, i);
      EsLayerProfile lp;

      g_assert_true (es_trainer_get_layer_profile (f.tr, i, &lp));
      if (i == 3)
        {
          /* the Softmax is fused into the loss */
          g_assert_cmpfloat (lp.forward_s, ==, 0.0);
          g_assert_cmpfloat (lp.backward_s, ==, 0.0);
          g_assert_cmpint (lp.forward_flops, ==, 0);
          g_assert_cmpint (lp.forward_bytes, ==, 0);
          g_assert_cmpint (lp.backward_bytes, ==, 0);
          continue;
        }
      g_assert_cmpfloat (lp.forward_s, >, 0.0);
      g_assert_cmpfloat (lp.backward_s, >, 0.0);
      g_assert_cmpfloat (fabs (lp.forward_s - ev.fwd_s[i]), <=, 1e-9 * batches);
      g_assert_cmpfloat (fabs (lp.backward_s - ev.bwd_s[i]), <=, 1e-9 * batches);
      g_assert_cmpint (lp.forward_flops, ==, info->flops * p.rows);
      /* the first layer needs no input gradient */
      g_assert_cmpint (lp.backward_flops, ==, info->flops * p.rows * (i == 0 ? 1 : 2));
      g_assert_cmpint (lp.forward_bytes, ==,
                       batches * es_layer_bytes_moved (f.model, i, BATCH, false, false));
      g_assert_cmpint (lp.backward_bytes, ==,
                       batches * es_layer_bytes_moved (f.model, i, BATCH, true, i > 0));
    }

  /* off again: the counters stay as they were */
  {
    EsProfile q;

    es_trainer_set_profiling (f.tr, false);
    train_epochs (&f, 1);
    es_trainer_get_profile (f.tr, &q);
    g_assert_cmpmem (&p, sizeof p, &q, sizeof q);
  }
  es_trainer_profile_reset (f.tr);
  assert_all_zero (f.tr, 4);
  fixture_clear (&f);
}

static void
test_stage_names (void)
{
  for (int s = 0; s < ES_N_STAGES; s++)
    {
      g_assert_nonnull (es_stage_name (s));
      for (int t = 0; t < s; t++)
        g_assert_cmpstr (es_stage_name (s), !=, es_stage_name (t));
    }
  g_assert_cmpstr (es_stage_name (ES_STAGE_FORWARD), ==, "forward");
}

/* ---- bytes moved --------------------------------------------------------------- */

/* Every layer kind, on a (1, 8, 8) input:
 *  0 Conv2D(4, 3x3, pad 1) (4,8,8)   5 Dropout(0.5)      10 Tanh
 *  1 BatchNorm                         6 Flatten (64)      11 Dropout(0): an identity
 *  2 ReLU                              7 Dense(8)          12 Dense(3)
 *  3 MaxPool2D(2) (4,4,4)              8 LeakyReLU         13 Softmax (not fused: MSE)
 *  4 AvgPool2D(2) (4,2,2) -> 16        9 Sigmoid */
#define CNN_LAYERS 14
#define CNN_ROWS   64
#define CNN_BATCH  16

static EsModel *
every_kind (void)
{
  static const EsLayerKind kinds[CNN_LAYERS] = {
    ES_LAYER_CONV2D, ES_LAYER_BATCHNORM, ES_LAYER_RELU, ES_LAYER_MAXPOOL2D,
    ES_LAYER_AVGPOOL2D, ES_LAYER_DROPOUT, ES_LAYER_FLATTEN, ES_LAYER_DENSE,
    ES_LAYER_LEAKY_RELU, ES_LAYER_SIGMOID, ES_LAYER_TANH, ES_LAYER_DROPOUT,
    ES_LAYER_DENSE, ES_LAYER_SOFTMAX,
  };
  EsShape in = { 3, { 1, 8, 8 } };
  EsLayerSpec l[CNN_LAYERS];
  EsModel *m;

  for (int i = 0; i < CNN_LAYERS; i++)
    l[i] = es_layer_spec_default (kinds[i]);
  l[0].filters = 4;
  l[0].kernel = 3;
  l[0].padding = 1;
  l[3].kernel = 2;
  l[4].kernel = 2;
  l[5].rate = 0.5f;
  l[7].units = 8;
  l[11].rate = 0.0f;
  l[12].units = 3;
  m = es_model_new (&in, l, CNN_LAYERS, NULL);
  g_assert_nonnull (m);
  es_model_init (m, 11);
  return m;
}

/* Floats in a shape. */
static int64_t
shape_floats (const EsShape *s)
{
  int64_t n = 1;

  for (int d = 0; d < s->rank; d++)
    n *= s->dims[d];
  return n;
}

/* What layer l should move for R rows, worked out from its spec and shapes: fp32
 * tensors at 4 bytes, MaxPool indices at 4, dropout mask bytes at 1. */
static int64_t
expected_bytes (const EsLayerInfo *l, int64_t R, bool backward, bool dinp)
{
  const EsLayerSpec *s = &l->spec;
  int64_t in = R * shape_floats (&l->in), out = R * shape_floats (&l->out);
  int64_t weights = 0, params = 0, CH = l->in.dims[0];

  switch (s->kind)
    {
    case ES_LAYER_DENSE:
      weights = (int64_t) s->units * l->in.dims[0];
      params = weights + s->units;
      break;
    case ES_LAYER_CONV2D:
      weights = (int64_t) s->filters * l->in.dims[0] * s->kernel * s->kernel;
      params = weights + s->filters;
      break;
    case ES_LAYER_BATCHNORM:
      params = 2 * CH;  /* gamma, beta */
      break;
    default:
      break;
    }
  if (backward && params == 0 && !dinp)
    return 0;
  switch (s->kind)
    {
    case ES_LAYER_DENSE:
    case ES_LAYER_CONV2D:
      /* forward: weights, bias, input, output; backward: dw, db read and written, the
       * input (for dw), dout, and for dinp the weights read and dinp written */
      return 4 * (backward ? 2 * params + in + out + (dinp ? weights + in : 0)
                           : params + in + out);
    case ES_LAYER_BATCHNORM:
      /* forward: gamma, beta, running mean and var read and written, mean and rstd
       * saved; backward: dgamma, dbeta read and written, gamma, mean, rstd, input, dout */
      return 4 * (backward ? 2 * params + 3 * CH + in + out + (dinp ? in : 0)
                           : params + 6 * CH + in + out);
    case ES_LAYER_MAXPOOL2D:
      return 4 * (in + out) + 4 * out;  /* + int32 argmax, both ways */
    case ES_LAYER_AVGPOOL2D:
      return 4 * (in + out);
    case ES_LAYER_RELU:
    case ES_LAYER_LEAKY_RELU:
    case ES_LAYER_SIGMOID:
    case ES_LAYER_TANH:
    case ES_LAYER_SOFTMAX:
      /* backward reads dout and the saved input or output, writes dinp */
      return 4 * (backward ? in + 2 * out : in + out);
    case ES_LAYER_DROPOUT:
      return s->rate > 0.0f ? 4 * (in + out) + out : 0;
    default:
      return 0;  /* Flatten: a view */
    }
}

static void
test_bytes_kinds (void)
{
  EsModel *m = every_kind ();

  g_assert_cmpint (es_model_n_layers (m), ==, CNN_LAYERS);
  for (int i = 0; i < CNN_LAYERS; i++)
    {
      const EsLayerInfo *l = es_model_layer (m, i);

      for (int64_t R = 1; R <= 64; R *= 8)
        for (int bw = 0; bw < 2; bw++)
          for (int di = 0; di < 2; di++)
            {
              int64_t got = es_layer_bytes_moved (m, i, R, bw, di);

              if (!bw && di)
                continue;  /* need_dinput is a backward matter */
              if (got != expected_bytes (l, R, bw, di))
                g_error ("layer %d (%s) rows %" G_GINT64_FORMAT " %s%s: %" G_GINT64_FORMAT
                         " bytes, expected %" G_GINT64_FORMAT, i, es_layer_kind_name (l->spec.kind),
                         R, bw ? "backward" : "forward", di ? " with dinp" : "", got,
                         expected_bytes (l, R, bw, di));
            }
    }
  /* Flatten is a view; a Dropout of rate 0 an identity */
  g_assert_cmpint (es_layer_bytes_moved (m, 6, 32, false, false), ==, 0);
  g_assert_cmpint (es_layer_bytes_moved (m, 6, 32, true, true), ==, 0);
  g_assert_cmpint (es_layer_bytes_moved (m, 11, 32, false, false), ==, 0);
  /* a parameter-free layer with no input gradient to make does nothing backward */
  g_assert_cmpint (es_layer_bytes_moved (m, 2, 32, true, false), ==, 0);
  g_assert_cmpint (es_layer_bytes_moved (m, 2, 32, true, true), >, 0);
  /* traffic grows with the rows; parameters do not */
  g_assert_cmpint (es_layer_bytes_moved (m, 7, 2, false, false)
                   - es_layer_bytes_moved (m, 7, 1, false, false), ==,
                   4 * (16 + 8));
  /* out of range */
  g_assert_cmpint (es_layer_bytes_moved (m, -1, 8, false, false), ==, 0);
  g_assert_cmpint (es_layer_bytes_moved (m, CNN_LAYERS, 8, false, false), ==, 0);
  g_assert_cmpint (es_layer_bytes_moved (m, 0, 0, false, false), ==, 0);
  es_model_free (m);
}

/* The profile's bytes over several batches of the every-kind model: each layer that
 * ran, the bytes of its pass, every batch. */
static void
test_bytes_profile (void)
{
  EsModel *m = every_kind ();
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsTrainConfig cfg;
  EsTrainer *tr;
  float x[CNN_ROWS * 64], t[CNN_ROWS * 3];
  EsRng rng = { 5 };
  int batches = 0;

  es_train_config_default (&cfg);
  cfg.loss = ES_LOSS_MSE;
  for (int i = 0; i < CNN_ROWS * 64; i++)
    x[i] = (float) es_rng_normal (&rng);
  for (int r = 0; r < CNN_ROWS; r++)
    for (int c = 0; c < 3; c++)
      t[r * 3 + c] = c == r % 3 ? 1.0f : 0.0f;
  tr = es_trainer_new (m, be, &cfg, CNN_BATCH, NULL);
  g_assert_nonnull (tr);
  es_trainer_set_profiling (tr, true);
  for (int epoch = 0; epoch < 2; epoch++)
    for (int r = 0; r < CNN_ROWS; r += CNN_BATCH, batches++)
      {
        EsBatch b = { .B = CNN_BATCH, .x_f32 = x + 64 * r, .targets = t + 3 * r };
        EsError err = { 0 };

        if (!es_trainer_train_batch (tr, &b, NULL, &err))
          g_error ("train_batch: %s", err.message);
      }
  for (int i = 0; i < CNN_LAYERS; i++)
    {
      const EsLayerInfo *l = es_model_layer (m, i);
      EsLayerProfile lp;
      /* layer 0 (the first with parameters) makes no input gradient */
      int64_t fwd = expected_bytes (l, CNN_BATCH, false, false);
      int64_t bwd = expected_bytes (l, CNN_BATCH, true, i > 0);

      g_assert_true (es_trainer_get_layer_profile (tr, i, &lp));
      g_assert_cmpint (lp.forward_bytes, ==, batches * fwd);
      g_assert_cmpint (lp.backward_bytes, ==, batches * bwd);
      if (l->spec.kind == ES_LAYER_FLATTEN
          || (l->spec.kind == ES_LAYER_DROPOUT && l->spec.rate == 0.0f))
        g_assert_cmpint (lp.forward_bytes + lp.backward_bytes, ==, 0);
      else
        g_assert_cmpint (lp.forward_bytes, >, 0);
    }
  es_trainer_profile_reset (tr);
  assert_all_zero (tr, CNN_LAYERS);
  es_trainer_free (tr);
  es_backend_free (be);
  es_model_free (m);
}

/* ---- denormals ------------------------------------------------------------------ */

/* By the bits: with DAZ on, fpclassify's comparisons see a subnormal as zero. */
static gboolean
is_subnormal (float v)
{
  uint32_t u;

  memcpy (&u, &v, sizeof u);
  return (u & 0x7f800000u) == 0 && (u & 0x007fffffu) != 0;
}

static void
test_denormals (void)
{
  Fixture f;
  EsDenormalCount c;
  int64_t P;
  float *params;
  /* subnormal bit patterns, not arithmetic: FTZ/DAZ cannot touch them */
  const uint32_t planted[] = { 0x00000001u, 0x007fffffu, 0x80000400u, 0x00012345u, 0x80400000u };

  fixture_init (&f);
  P = es_model_n_params (f.model);
  es_trainer_count_denormals (f.tr, &c);
  g_assert_cmpint (c.params + c.gradients + c.optimizer + c.activations, ==, 0);
  /* params, gradients and Adam's two moments at least, and the activations */
  g_assert_cmpint (c.total_values, >=, 4 * P + BATCH * 3);

  params = es_model_params (f.model);
  for (guint k = 0; k < G_N_ELEMENTS (planted); k++)
    {
      memcpy (&params[k * 37 % P], &planted[k], sizeof (float));
      g_assert_true (is_subnormal (params[k * 37 % P]));
    }
  es_trainer_reload (f.tr, true);
  es_trainer_count_denormals (f.tr, &c);
  g_assert_cmpint (c.params, ==, G_N_ELEMENTS (planted));
  g_assert_cmpint (c.gradients + c.optimizer + c.activations, ==, 0);
  fixture_clear (&f);

  /* a model without them, trained with FTZ/DAZ (the default): none anywhere, although
   * Adam's second moment of rarely-used weights decays towards them */
  fixture_init (&f);
  g_assert_true (es_cpu_backend_get_ftz (f.be));
  train_epochs (&f, 4);
  es_trainer_count_denormals (f.tr, &c);
  g_assert_cmpint (c.params, ==, 0);
  g_assert_cmpint (c.gradients, ==, 0);
  g_assert_cmpint (c.optimizer, ==, 0);
  g_assert_cmpint (c.activations, ==, 0);
  fixture_clear (&f);
}

/* ---- FTZ on the pool threads ---------------------------------------------------- */

#define FTZ_THREADS 3

/* A normal float that a product with FTZ_SCALE takes below FLT_MIN: a subnormal with
 * FTZ off, zero with it on. */
#define FTZ_NORMAL 1e-37f
#define FTZ_SCALE  0.01f

typedef struct {
  atomic_int  others_done;     /* tasks finished on pool threads */
  int         subnormal[ES_POOL_MAX_TASKS];
  int         zero[ES_POOL_MAX_TASKS];
  gboolean    on_caller[ES_POOL_MAX_TASKS];
  GThread    *caller;
} FtzJob;

/* One task: the product on this thread. A task on the caller's thread waits until
 * the others are done, so they must run on pool threads. */
static void
ftz_task (void *data, int t, int nt)
{
  FtzJob *job = data;
  volatile float a = FTZ_NORMAL, s = FTZ_SCALE;
  float r = a * s;

  job->subnormal[t] = is_subnormal (r);
  job->zero[t] = r == 0.0f;
  job->on_caller[t] = g_thread_self () == job->caller;
  if (!job->on_caller[t])
    atomic_fetch_add (&job->others_done, 1);
  else
    {
      gint64 deadline = g_get_monotonic_time () + 30 * G_USEC_PER_SEC;

      while (atomic_load (&job->others_done) < nt - 1)
        {
          if (g_get_monotonic_time () > deadline)
            g_error ("pool workers did not take their tasks");
          g_thread_yield ();
        }
    }
}

/* Run ftz_task on the pool's threads: every thread's product must be subnormal
 * (want_subnormal) or zero (otherwise). */
static void
check_pool_threads (EsBackend *be, gboolean want_subnormal)
{
  FtzJob job = { .caller = g_thread_self () };
  EsPool *pool = es_cpu_backend_pool (be);

  g_assert_nonnull (pool);
  g_assert_cmpint (es_pool_n_threads (pool), ==, FTZ_THREADS);
  es_pool_run (pool, ftz_task, &job);
  /* the caller ran one task at most: the rest ran on the workers */
  g_assert_cmpint (atomic_load (&job.others_done), >=, FTZ_THREADS - 1);
  for (int t = 0; t < FTZ_THREADS; t++)
    {
      g_assert_cmpint (job.subnormal[t], ==, want_subnormal);
      g_assert_cmpint (job.zero[t], ==, !want_subnormal);
    }
}

/* The backend's scale op over enough floats that every thread takes a part. */
static void
check_scale_op (EsBackend *be, gboolean want_subnormal)
{
  const int64_t N = (int64_t) FTZ_THREADS << 17;
  float *x = be->iface->alloc (be, ES_MEM_DATA, (size_t) N * sizeof (float), NULL);
  int64_t subnormal = 0, zero = 0;

  g_assert_nonnull (x);
  for (int64_t i = 0; i < N; i++)
    x[i] = FTZ_NORMAL;
  be->iface->scale (be, x, FTZ_SCALE, N);
  for (int64_t i = 0; i < N; i++)
    {
      subnormal += is_subnormal (x[i]);
      zero += x[i] == 0.0f;
    }
  g_assert_cmpint (subnormal, ==, want_subnormal ? N : 0);
  g_assert_cmpint (zero, ==, want_subnormal ? 0 : N);
  be->iface->free (be, ES_MEM_DATA, x, (size_t) N * sizeof (float));
}

static void
test_ftz (void)
{
  EsBackend *be;

  /* Valgrind runs floating point without MXCSR's flush-to-zero and denormals-are-zero */
  if (g_getenv ("ESPALIER_UNDER_VALGRIND") != NULL)
    {
      g_test_skip ("Valgrind does not emulate flush-to-zero");
      return;
    }
  be = es_cpu_backend_new (FTZ_THREADS, NULL, NULL);
  g_assert_nonnull (be);
  g_assert_true (es_cpu_backend_get_ftz (be));
  check_scale_op (be, FALSE);
  check_pool_threads (be, FALSE);

  g_assert_true (es_cpu_backend_set_ftz (be, false));
  g_assert_false (es_cpu_backend_get_ftz (be));
  check_scale_op (be, TRUE);
  check_pool_threads (be, TRUE);
  /* twice: it holds */
  check_pool_threads (be, TRUE);

  g_assert_true (es_cpu_backend_set_ftz (be, true));
  g_assert_true (es_cpu_backend_get_ftz (be));
  check_scale_op (be, FALSE);
  check_pool_threads (be, FALSE);

  /* a second backend keeps its own setting; each op applies its backend's */
  {
    EsBackend *other = es_cpu_backend_new (FTZ_THREADS, NULL, NULL);

    g_assert_nonnull (other);
    g_assert_true (es_cpu_backend_set_ftz (other, false));
    check_scale_op (other, TRUE);
    check_scale_op (be, FALSE);
    check_scale_op (other, TRUE);
    es_backend_free (other);
  }
  check_scale_op (be, FALSE);
  es_backend_free (be);
}

static void
test_thread_info (void)
{
  EsBackend *be = es_cpu_backend_new (FTZ_THREADS, NULL, NULL);
  EsThreadInfo info;

  g_assert_nonnull (be);
  memset (&info, 0xff, sizeof info);
  es_cpu_backend_thread_info (be, &info);
  g_assert_cmpint (info.pool_threads, ==, be->n_threads);
  g_assert_cmpint (info.pool_threads, ==, FTZ_THREADS);
  g_assert_cmpint (info.cores, >=, 1);
  g_assert_cmpint (info.cores, <=, es_pool_online_cores ());
  g_assert_cmpint (info.blas_threads, >=, 1);
  g_assert_cmpint (info.omp_threads, >=, 0);
  /* this process has at least the pool's threads (the caller counts among them) */
  g_assert_cmpint (info.process_threads, >=, FTZ_THREADS);
  es_backend_free (be);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/profile/off", test_off);
  g_test_add_func ("/profile/on", test_on);
  g_test_add_func ("/profile/stage-names", test_stage_names);
  g_test_add_func ("/profile/bytes-kinds", test_bytes_kinds);
  g_test_add_func ("/profile/bytes-profile", test_bytes_profile);
  g_test_add_func ("/profile/denormals", test_denormals);
  g_test_add_func ("/profile/ftz", test_ftz);
  g_test_add_func ("/profile/thread-info", test_thread_info);
  return g_test_run ();
}
