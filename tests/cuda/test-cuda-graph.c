/* test-cuda-graph.c: training on the CUDA backend without a host round trip per step
 * (es-train.h's resident data, deferred statistics, CUDA Graphs and uploads ahead),
 * against the ordinary eager steps on the same backend, model, data and seed.
 *
 * Why the weights must agree bit for bit: every path runs the same kernels on the same
 * operands in the same order. A resident batch is gathered with the expression of
 * load_u8 (x * scale + shift, no fused multiply-add), the loss's kernel is the one
 * softmax_xent_forward runs (only its sums go elsewhere), the backward ops are the
 * same calls, and the optimizer's device-side values are computed on the host by the
 * same float expressions adam_step's launcher computes, then read by a kernel with
 * adam_step's formula. A replayed graph runs the recorded launches with their recorded
 * arguments. So any difference is a bug, not rounding: the test asks for equality.
 * The loss sums differ in where they are added (the device adds the rows' losses in
 * double; the eager path adds each batch's float mean times its rows), so they are
 * compared within 1e-5 relative, and the correct counts exactly.
 *
 * Checked: graph replay = eager steps over several steps with Adam, a cosine schedule
 * and warm-up, again with Nesterov SGD and a step schedule, with AdamW, with
 * Dropout (the seeds of the replayed steps from the device), with clipping by the
 * global norm (the norm and the factor computed on the device), with bf16, and with
 * fp16 and dynamic loss scaling from a scale so large that the first steps overflow (the
 * overflow check, the skip and the scale's update on the device: the same steps
 * skipped, the same scale, the same weights as the host's scaler); a run stopped
 * between steps and continued in a new trainer from its state (weights, optimizer,
 * the loss scaler's state) = one that ran through; resident batches =
 * host batches; the streaming path (es_trainer_prefetch) = both; a budget too small
 * for the resident dataset refuses it (ES_ERR_BUDGET) and streaming takes over; a NaN
 * planted in the data is reported at the reading, naming the step, with the
 * parameters of the steps before it; a step with a gradient-reduce hook (which must
 * wait) takes the ordinary path. Without a device: the clean refusal, exit 77.
 * No GLib. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es-backend.h"
#include "es-cuda.h"
#include "es-train.h"

#include "cuda-tap.h"

#define N_ROWS  64
#define D_IN    24
#define HIDDEN  16
#define BATCH   8
#define STEPS   7

/* Rows of uint8 "images" with labels that depend on them (the brightest of 10
 * stripes), so training has something to learn. */
static void
make_data (uint8_t *x, int32_t *y, int n, int D, uint64_t seed)
{
  EsRng rng = { seed };

  for (int i = 0; i < n; i++)
    {
      int best = 0;
      double best_sum = -1.0;

      for (int d = 0; d < D; d++)
        x[(int64_t) i * D + d] = (uint8_t) (es_rng_next (&rng) & 0xff);
      for (int k = 0; k < 10; k++)
        {
          double s = 0.0;

          for (int d = k; d < D; d += 10)
            s += x[(int64_t) i * D + d];
          if (s > best_sum)
            {
              best_sum = s;
              best = k;
            }
        }
      y[i] = best;
    }
}

/* The dropout rate of the models mlp makes (0: no Dropout layer). */
static float dropout_rate;
/* run () gives its trainers a gradient-reduce hook (single process: it changes nothing
 * but makes every step wait for it) */
static bool with_hook;

static bool
hook_finish (void *user, EsBackend *be, float *grads, int64_t n, int64_t rows, EsError *err)
{
  (void) user, (void) be, (void) grads, (void) n, (void) rows, (void) err;
  return true;
}

/* Dense, act, [Dropout,] Dense(10), Softmax. */
static EsModel *
mlp_act (uint64_t seed, EsLayerKind act)
{
  EsShape in = { 1, { D_IN } };
  EsLayerSpec l[5];
  EsModel *m;
  int n = 0;

  l[n] = es_layer_spec_default (ES_LAYER_DENSE);
  l[n++].units = HIDDEN;
  l[n++] = es_layer_spec_default (act);
  if (dropout_rate > 0.0f)
    {
      l[n] = es_layer_spec_default (ES_LAYER_DROPOUT);
      l[n++].rate = dropout_rate;
    }
  l[n] = es_layer_spec_default (ES_LAYER_DENSE);
  l[n++].units = 10;
  l[n++] = es_layer_spec_default (ES_LAYER_SOFTMAX);
  m = es_model_new (&in, l, n, NULL);
  if (m != NULL)
    es_model_init (m, seed);
  return m;
}

static EsModel *
mlp (uint64_t seed)
{
  return mlp_act (seed, ES_LAYER_RELU);
}

typedef enum { RUN_EAGER, RUN_RESIDENT, RUN_DEFERRED_EAGER, RUN_STREAM } RunKind;

static const char *const run_names[] = { "eager", "resident + graph", "deferred, no graph",
                                         "streaming + graph" };

typedef struct {
  float      *params;   /* (P) after the run */
  EsStepStats stats;
  EsStepStats eval;     /* evaluation of the whole dataset after it */
  int64_t     steps, replays;
  float       lr;
  float       scale;    /* fp16: the loss scale after the run, its clean steps and the */
  int64_t     clean, skipped;  /* steps skipped */
  bool        ok;
} RunResult;

/* The rows of step k: a fixed shuffle of the dataset, BATCH at a time. */
static void
rows_of_step (int32_t *rows, int k)
{
  for (int r = 0; r < BATCH; r++)
    rows[r] = (int32_t) (((k * BATCH + r) * 37 + 11) % N_ROWS);
}

/* STEPS training batches of the same rows, run as kind says, on be. */
static void
run (EsBackend *be, RunKind kind, const EsTrainConfig *cfg, const uint8_t *x, const int32_t *y,
     RunResult *out)
{
  EsModel *m = mlp (7);
  EsError err = { 0 };
  EsTrainer *tr = es_trainer_new (m, be, cfg, BATCH, &err);
  EsResident *res = NULL;
  uint8_t hx[2][BATCH * D_IN];
  int32_t hy[2][BATCH], rows[BATCH];
  const int64_t P = es_model_n_params (m);

  memset (out, 0, sizeof *out);
  out->ok = tr != NULL;
  if (tr == NULL)
    {
      tap_diag ("%s: es_trainer_new: %s", run_names[kind], err.message);
      es_model_free (m);
      return;
    }
  if (kind != RUN_EAGER)
    es_trainer_set_deferred_stats (tr, true);
  if (with_hook)
    es_trainer_set_grad_reduce (tr, NULL, hook_finish, NULL);
  if (kind == RUN_DEFERRED_EAGER)
    es_trainer_set_graphs (tr, false);
  if (kind == RUN_RESIDENT
      && (res = es_resident_new (be, x, NULL, N_ROWS, D_IN, y, NULL, 0, &err)) == NULL)
    {
      tap_diag ("es_resident_new: %s", err.message);
      out->ok = false;
    }
  /* host batches copied out of the dataset, as a batcher would (two buffers, so the
   * one staged ahead is not overwritten before it is used) */
  for (int k = 0; k < STEPS && out->ok; k++)
    {
      const int s = k & 1;
      EsBatch b = { .B = BATCH, .scale = 1.0f / 255.0f, .shift = -0.5f };

      rows_of_step (rows, k);
      for (int r = 0; r < BATCH; r++)
        {
          memcpy (hx[s] + r * D_IN, x + (int64_t) rows[r] * D_IN, D_IN);
          hy[s][r] = y[rows[r]];
        }
      if (kind == RUN_RESIDENT)
        {
          b.resident = res;
          b.rows = rows;
        }
      else
        {
          b.x_u8 = hx[s];
          b.labels = hy[s];
        }
      if (kind == RUN_STREAM && k == 0 && !es_trainer_prefetch (tr, &b, &err))
        out->ok = tap_ok (false, "prefetch of the first batch: %s", err.message);
      if (kind == RUN_STREAM && k + 1 < STEPS)
        {
          /* the next batch staged while this one runs */
          const int n = (k + 1) & 1;
          int32_t next[BATCH];
          EsBatch nb = b;

          rows_of_step (next, k + 1);
          for (int r = 0; r < BATCH; r++)
            {
              memcpy (hx[n] + r * D_IN, x + (int64_t) next[r] * D_IN, D_IN);
              hy[n][r] = y[next[r]];
            }
          nb.x_u8 = hx[n];
          nb.labels = hy[n];
          if (!es_trainer_prefetch (tr, &nb, &err))
            out->ok = tap_ok (false, "prefetch: %s", err.message);
        }
      if (out->ok && !es_trainer_train_batch (tr, &b, &out->stats, &err))
        {
          tap_diag ("%s: batch %d: %s", run_names[kind], k, err.message);
          out->ok = false;
        }
    }
  if (out->ok && kind != RUN_EAGER && !es_trainer_read_stats (tr, &out->stats, &err))
    {
      tap_diag ("%s: es_trainer_read_stats: %s", run_names[kind], err.message);
      out->ok = false;
    }
  if (out->ok)
    {
      /* every row, more than a batch: resident rows in micro-batches, or the host's */
      static int32_t all[N_ROWS];
      EsBatch b = { .B = N_ROWS, .scale = 1.0f / 255.0f, .shift = -0.5f };

      for (int r = 0; r < N_ROWS; r++)
        all[r] = r;
      if (kind == RUN_RESIDENT)
        {
          b.resident = res;
          b.rows = all;
        }
      else
        {
          b.x_u8 = x;
          b.labels = y;
        }
      out->ok = es_trainer_eval_batch (tr, &b, &out->eval, NULL, &err);
    }
  es_trainer_sync (tr);
  out->params = malloc ((size_t) P * sizeof (float));
  memcpy (out->params, es_model_params (m), (size_t) P * sizeof (float));
  out->steps = es_trainer_step_count (tr);
  out->replays = es_trainer_graph_replays (tr);
  out->lr = es_trainer_current_lr (tr);
  out->scale = es_trainer_loss_scale (tr);
  out->skipped = es_trainer_skipped_steps (tr);
  if (!es_trainer_get_loss_scaler (tr, NULL, &out->clean, NULL))
    out->clean = -1;
  es_trainer_free (tr);
  es_resident_free (res);
  es_model_free (m);
}

/* The first index where a and b (n) differ bit for bit, or -1. */
static int64_t
first_difference (const float *a, const float *b, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    if (memcmp (&a[i], &b[i], sizeof (float)) != 0)
      return i;
  return -1;
}

static void
test_paths_agree (EsBackend *be, const EsTrainConfig *cfg, const char *what)
{
  static uint8_t x[N_ROWS * D_IN];
  static int32_t y[N_ROWS];
  EsModel *m = mlp (7);
  const int64_t P = es_model_n_params (m);
  RunResult r[4];

  es_model_free (m);
  make_data (x, y, N_ROWS, D_IN, 99);
  for (int k = 0; k < 4; k++)
    run (be, (RunKind) k, cfg, x, y, &r[k]);
  for (int k = 1; k < 4; k++)
    {
      int64_t i = r[0].ok && r[k].ok ? first_difference (r[k].params, r[0].params, P) : 0;
      double dl = fabs (r[k].stats.loss_sum - r[0].stats.loss_sum)
                  / fmax (fabs (r[0].stats.loss_sum), 1e-30);

      if (!tap_ok (r[0].ok && r[k].ok && i < 0, "%s: %s gives the eager steps' weights bit for "
                   "bit after %d steps", what, run_names[k], STEPS) && i >= 0 && r[k].ok)
        tap_diag ("parameter %lld: %.9g, eager %.9g", (long long) i, r[k].params[i],
                  r[0].params[i]);
      tap_ok (r[k].steps == r[0].steps && r[k].lr == r[0].lr && r[k].stats.rows == r[0].stats.rows
              && r[k].stats.correct == r[0].stats.correct && dl < 1e-5,
              "%s: %s counts the same steps (%lld), lr, rows (%d), correct rows (%d = %d) and "
              "loss (%.7g vs %.7g)", what, run_names[k], (long long) r[k].steps,
              r[k].stats.rows, r[k].stats.correct, r[0].stats.correct, r[k].stats.loss_sum,
              r[0].stats.loss_sum);
      if (cfg->precision == ES_PRECISION_FP16)
        tap_ok (r[k].scale == r[0].scale && r[k].clean == r[0].clean
                && r[k].skipped == r[0].skipped,
                "%s: %s ends with the host scaler's loss scale (%g = %g), clean steps (%lld) "
                "and skipped steps (%lld = %lld)", what, run_names[k], (double) r[k].scale,
                (double) r[0].scale, (long long) r[k].clean, (long long) r[k].skipped,
                (long long) r[0].skipped);
    }
  tap_ok (r[RUN_RESIDENT].eval.rows == N_ROWS
          && r[RUN_RESIDENT].eval.loss_sum == r[RUN_EAGER].eval.loss_sum
          && r[RUN_RESIDENT].eval.correct == r[RUN_EAGER].eval.correct,
          "%s: evaluating resident rows (%d, in batches) gives the host rows' loss and "
          "correct rows exactly (%.7g, %d)", what, r[RUN_RESIDENT].eval.rows,
          r[RUN_RESIDENT].eval.loss_sum, r[RUN_RESIDENT].eval.correct);
  if (cfg->precision == ES_PRECISION_FP16)
    tap_ok (r[0].skipped > 0 && r[0].steps > 0 && r[0].skipped + r[0].steps == STEPS,
            "%s: the scale overflowed the first gradients: %lld steps skipped, %lld taken",
            what, (long long) r[0].skipped, (long long) r[0].steps);
  /* the first batch runs eagerly, the second is recorded and launched, the rest replay */
  tap_ok (r[RUN_RESIDENT].replays == STEPS - 1 && r[RUN_STREAM].replays == STEPS - 1
          && r[RUN_DEFERRED_EAGER].replays == 0 && r[RUN_EAGER].replays == 0,
          "%s: graphs replayed for every batch after the first (%lld and %lld of %d)", what,
          (long long) r[RUN_RESIDENT].replays, (long long) r[RUN_STREAM].replays, STEPS);
  for (int k = 0; k < 4; k++)
    free (r[k].params);
}

/* A step that must wait (a gradient-reduce hook runs on the host between backward and
 * the update): deferred statistics and resident batches fall back to the ordinary
 * steps, no graph, the same weights and statistics. */
static void
test_fallback (EsBackend *be)
{
  static uint8_t x[N_ROWS * D_IN];
  static int32_t y[N_ROWS];
  EsTrainConfig cfg;
  RunResult eager, res;
  EsModel *m = mlp (7);
  const int64_t P = es_model_n_params (m);

  es_model_free (m);
  make_data (x, y, N_ROWS, D_IN, 3);
  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAM;
  cfg.lr = 0.01f;
  with_hook = true;
  run (be, RUN_EAGER, &cfg, x, y, &eager);
  run (be, RUN_RESIDENT, &cfg, x, y, &res);
  with_hook = false;
  tap_ok (eager.ok && res.ok && res.replays == 0 && first_difference (res.params, eager.params, P) < 0
          && res.stats.rows == eager.stats.rows && res.stats.correct == eager.stats.correct
          && res.stats.loss_sum == eager.stats.loss_sum,
          "with a gradient-reduce hook, resident batches and deferred statistics take the "
          "ordinary steps (%lld replays), the same weights and statistics",
          (long long) res.replays);
  free (eager.params);
  free (res.params);
}

/* Clipping that bites: the eager steps with it are not those without it (so the
 * paths above agreed on clipped steps). */
static void
test_clip_engaged (EsBackend *be, const EsTrainConfig *clipped)
{
  static uint8_t x[N_ROWS * D_IN];
  static int32_t y[N_ROWS];
  EsTrainConfig cfg = *clipped;
  RunResult with, without;
  EsModel *m = mlp (7);
  const int64_t P = es_model_n_params (m);

  es_model_free (m);
  make_data (x, y, N_ROWS, D_IN, 99);
  run (be, RUN_EAGER, &cfg, x, y, &with);
  cfg.clip_norm = 0.0f;
  run (be, RUN_EAGER, &cfg, x, y, &without);
  tap_ok (with.ok && without.ok && first_difference (with.params, without.params, P) >= 0,
          "clipping at %g changes the steps", (double) clipped->clip_norm);
  free (with.params);
  free (without.params);
}

/* The batch of step k from the resident rows. */
static bool
resident_step (EsTrainer *tr, EsResident *res, int k, EsError *err)
{
  int32_t rows[BATCH];
  EsBatch b = { .B = BATCH, .scale = 1.0f / 255.0f, .shift = -0.5f, .resident = res,
                .rows = rows };

  rows_of_step (rows, k);
  return es_trainer_train_batch (tr, &b, NULL, err);
}

/* fp16 on the device path, stopped after `stop` of STEPS steps and continued in a new
 * trainer from what a checkpoint keeps (the weights, the optimizer state, the loss
 * scaler's state): the weights, the steps and the scaler of a run that went through.
 * Also: the scaler's state is refused on an fp32 trainer, and a bad one. */
static void
test_scaler_resume (EsBackend *be, const EsTrainConfig *cfg, int stop)
{
  static uint8_t x[N_ROWS * D_IN];
  static int32_t y[N_ROWS];
  EsError err = { 0 };
  EsModel *ma = mlp (7), *mb = mlp (7), *mc = mlp (7);
  const int64_t P = es_model_n_params (ma);
  EsTrainer *ta = NULL, *tb = NULL, *tc = NULL, *t32 = NULL;
  EsResident *res = NULL;
  EsTrainConfig c32;
  float *slots = NULL, sa = 0, sb = 0, sc = 0;
  int64_t steps = 0, clean_a = 0, clean_b = 0, clean_c = 0, skip_a = 0, skip_b = 0, skip_c = 0;
  bool ok = true;

  make_data (x, y, N_ROWS, D_IN, 99);
  ta = es_trainer_new (ma, be, cfg, BATCH, &err);
  tb = es_trainer_new (mb, be, cfg, BATCH, &err);
  res = es_resident_new (be, x, NULL, N_ROWS, D_IN, y, NULL, 0, &err);
  if (!tap_ok (ta != NULL && tb != NULL && res != NULL, "fp16 trainers and a dataset (%s)",
               err.message))
    goto out;
  es_trainer_set_deferred_stats (ta, true);
  es_trainer_set_deferred_stats (tb, true);
  for (int k = 0; k < STEPS; k++)
    ok = ok && resident_step (ta, res, k, &err) && (k >= stop || resident_step (tb, res, k, &err));
  ok = ok && es_trainer_read_stats (ta, NULL, &err);
  /* what a checkpoint of tb keeps, read between steps */
  slots = malloc ((size_t) (es_trainer_state_slots (tb) * P + 1) * sizeof (float));
  es_trainer_sync (tb);
  es_trainer_get_state (tb, &steps, slots);
  ok = ok && es_trainer_get_loss_scaler (tb, &sb, &clean_b, &skip_b);
  tap_diag ("stopped after %d batches: %lld steps, scale %g, %lld clean, %lld skipped", stop,
            (long long) steps, (double) sb, (long long) clean_b, (long long) skip_b);
  memcpy (es_model_params (mc), es_model_params (mb), (size_t) P * sizeof (float));
  tc = es_trainer_new (mc, be, cfg, BATCH, &err);
  ok = ok && tc != NULL && es_trainer_set_state (tc, steps, slots, &err)
       && es_trainer_set_loss_scaler (tc, sb, clean_b, skip_b, &err);
  if (tc != NULL)
    es_trainer_set_deferred_stats (tc, true);
  for (int k = stop; k < STEPS && ok; k++)
    ok = resident_step (tc, res, k, &err);
  ok = ok && es_trainer_read_stats (tc, NULL, &err);
  if (!tap_ok (ok, "the runs (%s)", err.message))
    goto out;
  es_trainer_sync (ta);
  es_trainer_sync (tc);
  es_trainer_get_loss_scaler (ta, &sa, &clean_a, &skip_a);
  es_trainer_get_loss_scaler (tc, &sc, &clean_c, &skip_c);
  tap_ok (first_difference (es_model_params (mc), es_model_params (ma), P) < 0
          && es_trainer_step_count (tc) == es_trainer_step_count (ta) && sc == sa
          && clean_c == clean_a && skip_c == skip_a && skip_b > 0,
          "fp16 stopped after %d steps (%lld skipped) and continued from its state ends as the "
          "run that went through: the weights, %lld steps, scale %g, %lld clean, %lld skipped",
          stop, (long long) skip_b, (long long) es_trainer_step_count (ta), (double) sa,
          (long long) clean_a, (long long) skip_a);

  es_train_config_default (&c32);
  t32 = es_trainer_new (mb, be, &c32, BATCH, &err);
  es_error_clear (&err);
  tap_ok (t32 != NULL && !es_trainer_get_loss_scaler (t32, NULL, NULL, NULL)
          && !es_trainer_set_loss_scaler (t32, 2.0f, 0, 0, &err)
          && err.code == ES_ERR_UNSUPPORTED, "an fp32 trainer has no loss scaler (%s)",
          err.message);
  es_error_clear (&err);
  tap_ok (!es_trainer_set_loss_scaler (tc, 0.0f, 0, 0, &err) && err.code == ES_ERR_INVALID
          && !es_trainer_set_loss_scaler (tc, INFINITY, 0, 0, NULL)
          && !es_trainer_set_loss_scaler (tc, 8.0f, -1, 0, NULL),
          "a scale that is not finite and positive, or a negative count, is refused (%s)",
          err.message);
out:
  free (slots);
  es_trainer_free (ta);
  es_trainer_free (tb);
  es_trainer_free (tc);
  es_trainer_free (t32);
  es_resident_free (res);
  es_model_free (ma);
  es_model_free (mb);
  es_model_free (mc);
}

/* fp16 past the device table of scheduled values (1024 steps), never read in between:
 * the table is refilled from the device's count of steps taken, not the host's, which
 * counted the skipped ones as taken; a cosine schedule makes every step's rate its
 * own, so a table off by a step would show in the weights. */
static void
test_scaler_long (EsBackend *be, const EsTrainConfig *base)
{
  enum { LONG_STEPS = 1040 };
  static uint8_t x[N_ROWS * D_IN];
  static int32_t y[N_ROWS];
  EsTrainConfig cfg = *base;
  EsError err = { 0 };
  EsModel *ma = mlp (7), *mb = mlp (7);
  const int64_t P = es_model_n_params (ma);
  EsTrainer *ta, *tb;
  EsResident *res;
  bool ok = true;

  make_data (x, y, N_ROWS, D_IN, 99);
  cfg.schedule = ES_LR_COSINE;
  cfg.total_steps = LONG_STEPS;
  cfg.min_lr = 0.001f;
  ta = es_trainer_new (ma, be, &cfg, BATCH, &err);
  tb = es_trainer_new (mb, be, &cfg, BATCH, &err);
  res = es_resident_new (be, x, NULL, N_ROWS, D_IN, y, NULL, 0, &err);
  ok = ta != NULL && tb != NULL && res != NULL;
  if (ok)
    es_trainer_set_deferred_stats (tb, true);
  for (int k = 0; k < LONG_STEPS && ok; k++)
    {
      int32_t rows[BATCH];
      uint8_t hx[BATCH * D_IN];
      int32_t hy[BATCH];
      EsBatch b = { .B = BATCH, .scale = 1.0f / 255.0f, .shift = -0.5f, .x_u8 = hx,
                    .labels = hy };

      rows_of_step (rows, k % 8);
      for (int r = 0; r < BATCH; r++)
        {
          memcpy (hx + r * D_IN, x + (int64_t) rows[r] * D_IN, D_IN);
          hy[r] = y[rows[r]];
        }
      ok = es_trainer_train_batch (ta, &b, NULL, &err) && resident_step (tb, res, k % 8, &err);
    }
  ok = ok && es_trainer_read_stats (tb, NULL, &err);
  if (tap_ok (ok, "%d fp16 steps, eager and replayed (%s)", LONG_STEPS, err.message))
    {
      es_trainer_sync (ta);
      es_trainer_sync (tb);
      tap_ok (first_difference (es_model_params (mb), es_model_params (ma), P) < 0
              && es_trainer_step_count (tb) == es_trainer_step_count (ta)
              && es_trainer_skipped_steps (tb) == es_trainer_skipped_steps (ta)
              && es_trainer_loss_scale (tb) == es_trainer_loss_scale (ta)
              && es_trainer_graph_replays (tb) == LONG_STEPS - 1,
              "past the table of scheduled values: the eager weights, %lld steps, %lld "
              "skipped, scale %g (%lld replays)", (long long) es_trainer_step_count (tb),
              (long long) es_trainer_skipped_steps (tb), (double) es_trainer_loss_scale (tb),
              (long long) es_trainer_graph_replays (tb));
    }
  es_trainer_free (ta);
  es_trainer_free (tb);
  es_resident_free (res);
  es_model_free (ma);
  es_model_free (mb);
}

/* A budget that holds the trainer but not the dataset: es_resident_new refuses it with
 * ES_ERR_BUDGET, charges nothing, and streaming trains as the eager steps do. */
static void
test_budget_refusal (void)
{
  static uint8_t x[N_ROWS * D_IN];
  static int32_t y[N_ROWS];
  EsTrainConfig cfg;
  EsError err = { 0 };
  EsBudget *budget;
  EsBackend *small, *free_be;
  EsResident *res;
  RunResult eager, stream;
  size_t used;
  int64_t P;

  make_data (x, y, N_ROWS, D_IN, 5);
  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAM;
  cfg.lr = 0.01f;
  /* room for the backend and the trainer (tens of KiB for this MLP besides cuBLAS's
   * workspace), not for a 1 GiB dataset */
  budget = es_budget_new ((size_t) 64 << 20);
  small = es_cuda_backend_new (0, budget, &err);
  if (!tap_ok (small != NULL, "a CUDA backend under a 64 MiB budget (%s)", err.message))
    {
      es_budget_free (budget);
      return;
    }
  used = es_budget_used (budget);
  {
    /* the bytes are never read: the budget refuses them before anything is copied */
    const int64_t rows = (int64_t) 1 << 20;

    res = es_resident_new (small, x, NULL, rows, 1024, NULL, NULL, 0, &err);
  }
  tap_ok (res == NULL && err.code == ES_ERR_BUDGET && es_budget_used (budget) == used,
          "a dataset past the budget is refused with ES_ERR_BUDGET, nothing charged (%s)",
          err.message);
  es_resident_free (res);
  run (small, RUN_STREAM, &cfg, x, y, &stream);
  free_be = es_cuda_backend_new (0, NULL, &err);
  run (free_be, RUN_EAGER, &cfg, x, y, &eager);
  {
    EsModel *m = mlp (7);

    P = es_model_n_params (m);
    es_model_free (m);
  }
  tap_ok (stream.ok && eager.ok && first_difference (stream.params, eager.params, P) < 0,
          "streaming under the small budget trains as the eager steps do");
  free (stream.params);
  free (eager.params);
  es_backend_free (free_be);
  es_backend_free (small);
  es_budget_free (budget);
}

/* A NaN in one row of a float dataset: the batch that holds it is reported at the
 * reading, with the step and the parameters after the steps before it. (Tanh, not
 * ReLU, carries the NaN to the loss: ReLU maps it to 0, and only the gradients would
 * show it.) */
static void
test_nan_at_readback (EsBackend *be)
{
  static uint8_t x8[N_ROWS * D_IN];
  static float xf[N_ROWS * D_IN];
  static int32_t y[N_ROWS];
  const int bad_step = 4;   /* 1-based: the fourth batch holds the NaN */
  EsTrainConfig cfg;
  EsError err = { 0 };
  EsModel *m = mlp_act (7, ES_LAYER_TANH), *ref = mlp_act (7, ES_LAYER_TANH);
  EsTrainer *tr, *tr_ref;
  EsResident *res;
  int32_t rows[BATCH];
  const int64_t P = es_model_n_params (m);
  EsStepStats st = { 0 };
  bool read_ok;

  make_data (x8, y, N_ROWS, D_IN, 11);
  for (int i = 0; i < N_ROWS * D_IN; i++)
    xf[i] = (float) x8[i] / 255.0f;
  rows_of_step (rows, bad_step - 1);
  xf[(int64_t) rows[3] * D_IN + 5] = NAN;
  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAM;
  cfg.lr = 0.01f;
  tr = es_trainer_new (m, be, &cfg, BATCH, &err);
  tr_ref = es_trainer_new (ref, be, &cfg, BATCH, &err);
  res = es_resident_new (be, NULL, xf, N_ROWS, D_IN, y, NULL, 0, &err);
  if (!tap_ok (tr != NULL && tr_ref != NULL && res != NULL, "trainers and a float dataset (%s)",
               err.message))
    goto out;
  es_trainer_set_deferred_stats (tr, true);
  for (int k = 0; k < STEPS; k++)
    {
      EsBatch b = { .B = BATCH, .resident = res, .rows = rows };

      rows_of_step (rows, k);
      if (!es_trainer_train_batch (tr, &b, NULL, &err))
        tap_diag ("batch %d: %s", k, err.message);
      if (k < bad_step - 1)
        {
          b.resident = NULL;
          b.rows = NULL;
          /* the same rows from the host, eagerly, for the reference */
          {
            static float hx[BATCH * D_IN];
            static int32_t hy[BATCH];

            for (int r = 0; r < BATCH; r++)
              {
                memcpy (hx + r * D_IN, xf + (int64_t) rows[r] * D_IN, D_IN * sizeof (float));
                hy[r] = y[rows[r]];
              }
            b.x_f32 = hx;
            b.labels = hy;
            es_trainer_train_batch (tr_ref, &b, NULL, &err);
          }
        }
    }
  es_error_clear (&err);
  read_ok = es_trainer_read_stats (tr, &st, &err);
  {
    char want[32];

    snprintf (want, sizeof want, "at step %d ", bad_step);
    tap_ok (!read_ok && err.code == ES_ERR_NUMERIC && strstr (err.message, want) != NULL,
            "the NaN is reported at the reading, naming step %d (%s)", bad_step, err.message);
  }
  tap_ok (es_trainer_step_count (tr) == bad_step - 1 && st.rows == (bad_step - 1) * BATCH,
          "steps applied put back to %d (%lld), the rows before it counted (%d)", bad_step - 1,
          (long long) es_trainer_step_count (tr), st.rows);
  es_trainer_sync (tr);
  es_trainer_sync (tr_ref);
  tap_ok (first_difference (es_model_params (m), es_model_params (ref), P) < 0,
          "the parameters are those after the %d good steps", bad_step - 1);
  /* training goes on from there, and the next reading is clean */
  {
    EsBatch b = { .B = BATCH, .resident = res, .rows = rows };

    rows_of_step (rows, 0);
    es_error_clear (&err);
    tap_ok (es_trainer_train_batch (tr, &b, NULL, &err) && es_trainer_read_stats (tr, &st, &err)
            && es_trainer_step_count (tr) == bad_step,
            "training continues after the reading (%s)", err.message);
  }
out:
  es_resident_free (res);
  es_trainer_free (tr);
  es_trainer_free (tr_ref);
  es_model_free (m);
  es_model_free (ref);
}

/* Without the ops (the CPU backend): no resident data, no uploads ahead; deferred
 * statistics still add up on the host. */
static void
test_cpu_backend (void)
{
  static uint8_t x[N_ROWS * D_IN];
  static int32_t y[N_ROWS];
  EsError err = { 0 };
  EsBackend *cpu = es_cpu_backend_new (1, NULL, &err);
  EsTrainConfig cfg;
  EsModel *m = mlp (3);
  EsTrainer *tr;
  EsStepStats st = { 0 }, direct = { 0 };
  EsBatch b = { .B = BATCH, .x_u8 = x, .labels = y, .scale = 1.0f / 255.0f };

  make_data (x, y, N_ROWS, D_IN, 1);
  tap_ok (es_resident_new (cpu, x, NULL, N_ROWS, D_IN, y, NULL, 0, &err) == NULL
          && err.code == ES_ERR_UNSUPPORTED, "the CPU backend keeps no dataset resident");
  es_train_config_default (&cfg);
  tr = es_trainer_new (m, cpu, &cfg, BATCH, &err);
  es_error_clear (&err);
  tap_ok (!es_trainer_prefetch (tr, &b, &err) && err.code == ES_ERR_UNSUPPORTED,
          "nor uploads ahead");
  es_trainer_set_deferred_stats (tr, true);
  es_trainer_train_batch (tr, &b, &direct, &err);
  es_trainer_train_batch (tr, &b, &direct, &err);
  es_trainer_read_stats (tr, &st, &err);
  tap_ok (direct.rows == 0 && st.rows == 2 * BATCH && es_trainer_graph_replays (tr) == 0,
          "deferred statistics add up on the host and come with the reading (%d rows)", st.rows);
  es_trainer_free (tr);
  es_model_free (m);
  es_backend_free (cpu);
}

int
main (void)
{
  EsError err = { 0 };
  EsBackend *be;
  EsTrainConfig cfg;

  test_cpu_backend ();
  tap_require_device ();
  be = es_cuda_backend_new (0, NULL, &err);
  if (!tap_ok (be != NULL, "a CUDA backend (%s)", err.message))
    return tap_done ();

  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAM;
  cfg.lr = 0.01f;
  cfg.schedule = ES_LR_COSINE;
  cfg.total_steps = STEPS;
  cfg.min_lr = 0.001f;
  cfg.warmup_steps = 3;
  test_paths_agree (be, &cfg, "Adam, cosine with warm-up");

  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_NESTEROV;
  cfg.momentum = 0.9f;
  cfg.lr = 0.05f;
  cfg.schedule = ES_LR_STEP;
  cfg.step_size = 2;
  cfg.gamma = 0.5f;
  cfg.l2 = 1e-3f;
  test_paths_agree (be, &cfg, "Nesterov, step schedule, L2");

  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAMW;
  cfg.weight_decay = 0.01f;
  cfg.lr = 0.01f;
  test_paths_agree (be, &cfg, "AdamW");

  /* Dropout: each replay reads its step's seed from the device */
  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAM;
  cfg.lr = 0.01f;
  cfg.seed = 1234;
  dropout_rate = 0.3f;
  test_paths_agree (be, &cfg, "Adam, Dropout 0.3");
  dropout_rate = 0.0f;

  /* clipping by the global norm: the norm and the factor on the device */
  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAM;
  cfg.lr = 0.01f;
  cfg.clip_norm = 0.1f;
  test_paths_agree (be, &cfg, "Adam, clipping at 0.1");
  test_clip_engaged (be, &cfg);

  /* fp16 from a scale that overflows the first steps' gradients: skipped, the scale
   * lowered by 16 each time, then grown after every 2 clean steps */
  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAM;
  cfg.lr = 0.01f;
  cfg.precision = ES_PRECISION_FP16;
  cfg.loss_scale_init = 1073741824.0f;   /* 2^30 */
  cfg.loss_scale_backoff = 0.0625f;
  cfg.loss_scale_interval = 2;
  test_paths_agree (be, &cfg, "fp16, overflowing scale");
  test_scaler_resume (be, &cfg, 4);
  test_scaler_long (be, &cfg);
  cfg.clip_norm = 0.1f;
  test_paths_agree (be, &cfg, "fp16, overflowing scale, clipping");

  /* bf16 (no scaling): the products' precision set for the recorded steps too */
  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_ADAM;
  cfg.lr = 0.01f;
  cfg.precision = ES_PRECISION_BF16;
  test_paths_agree (be, &cfg, "bf16");

  test_fallback (be);
  test_budget_refusal ();
  test_nan_at_readback (be);
  es_backend_free (be);
  return tap_done ();
}
