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
 * and warm-up, again with Nesterov SGD and a step schedule, with AdamW, and with
 * Dropout (the seeds of the replayed steps from the device); resident batches =
 * host batches; the streaming path (es_trainer_prefetch) = both; a budget too small
 * for the resident dataset refuses it (ES_ERR_BUDGET) and streaming takes over; a NaN
 * planted in the data is reported at the reading, naming the step, with the
 * parameters of the steps before it. Without a device: the clean refusal, exit 77.
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
    }
  tap_ok (r[RUN_RESIDENT].eval.rows == N_ROWS
          && r[RUN_RESIDENT].eval.loss_sum == r[RUN_EAGER].eval.loss_sum
          && r[RUN_RESIDENT].eval.correct == r[RUN_EAGER].eval.correct,
          "%s: evaluating resident rows (%d, in batches) gives the host rows' loss and "
          "correct rows exactly (%.7g, %d)", what, r[RUN_RESIDENT].eval.rows,
          r[RUN_RESIDENT].eval.loss_sum, r[RUN_RESIDENT].eval.correct);
  /* the first batch runs eagerly, the second is recorded and launched, the rest replay */
  tap_ok (r[RUN_RESIDENT].replays == STEPS - 1 && r[RUN_STREAM].replays == STEPS - 1
          && r[RUN_DEFERRED_EAGER].replays == 0 && r[RUN_EAGER].replays == 0,
          "%s: graphs replayed for every batch after the first (%lld and %lld of %d)", what,
          (long long) r[RUN_RESIDENT].replays, (long long) r[RUN_STREAM].replays, STEPS);
  for (int k = 0; k < 4; k++)
    free (r[k].params);
}

/* A step that must wait (clipping by the global norm reads the norm back): deferred
 * statistics and resident batches fall back to the ordinary steps, no graph, the same
 * weights and statistics. */
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
  cfg.clip_norm = 0.5f;
  run (be, RUN_EAGER, &cfg, x, y, &eager);
  run (be, RUN_RESIDENT, &cfg, x, y, &res);
  tap_ok (eager.ok && res.ok && res.replays == 0 && first_difference (res.params, eager.params, P) < 0
          && res.stats.rows == eager.stats.rows && res.stats.correct == eager.stats.correct
          && res.stats.loss_sum == eager.stats.loss_sum,
          "with clipping, resident batches and deferred statistics take the ordinary steps "
          "(%lld replays), the same weights and statistics", (long long) res.replays);
  free (eager.params);
  free (res.params);
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

  test_fallback (be);
  test_budget_refusal ();
  test_nan_at_readback (be);
  es_backend_free (be);
  return tap_done ();
}
