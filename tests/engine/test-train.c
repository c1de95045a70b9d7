/* test-train.c: EsTrainer and EsInfer end to end on data made here: a short training
 * run reaches a stated accuracy, a fixed seed repeats its losses, the memory budget
 * halves the micro-batch without changing the result, a diverging loss stops with the
 * weights intact, and inference agrees with the trainer's evaluation, with Dense and
 * activation fused or not. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "es-backend.h"
#include "es-train.h"

#include "engine-test-util.h"

static EsModel *
small_mlp (uint64_t seed, bool dropout_bn)
{
  EsShape in = { 1, { 2 } };
  EsLayerSpec l[8];
  int n = 0;

  l[n] = es_layer_spec_default (ES_LAYER_DENSE);
  l[n++].units = 16;
  if (dropout_bn)
    l[n++] = es_layer_spec_default (ES_LAYER_BATCHNORM);
  l[n++] = es_layer_spec_default (ES_LAYER_TANH);
  if (dropout_bn)
    {
      l[n] = es_layer_spec_default (ES_LAYER_DROPOUT);
      l[n++].rate = 0.1f;
    }
  l[n] = es_layer_spec_default (ES_LAYER_DENSE);
  l[n++].units = 3;
  l[n++] = es_layer_spec_default (ES_LAYER_SOFTMAX);
  {
    EsModel *m = es_model_new (&in, l, n, NULL);
    g_assert_nonnull (m);
    es_model_init (m, seed);
    return m;
  }
}

/* Train epochs over (x, y) in batches; returns the last epoch's mean loss and fills
 * losses (epochs) when not NULL. */
static double
train (EsTrainer *tr, const float *x, const int32_t *y, int n, int batch, int epochs,
       double *losses)
{
  double last = 0;

  for (int e = 0; e < epochs; e++)
    {
      EsStepStats st = { 0 };

      for (int r = 0; r < n; r += batch)
        {
          EsBatch b = { .B = MIN (batch, n - r), .x_f32 = x + 2 * r, .labels = y + r };
          EsError err = { 0 };

          g_assert_true (es_trainer_train_batch (tr, &b, &st, &err));
        }
      last = st.loss_sum / st.rows;
      if (losses)
        losses[e] = last;
    }
  return last;
}

static void
test_learns_blobs (void)
{
  enum { N = 600 };
  g_autofree float *x = g_new (float, 2 * N);
  g_autofree int32_t *y = g_new (int32_t, N);
  EsBackend *be = es_cpu_backend_new (2, NULL, NULL);
  EsModel *m = small_mlp (1, true);
  EsTrainConfig cfg;
  EsTrainer *tr;
  EsStepStats st = { 0 };
  EsBatch all = { .B = N, .x_f32 = x, .labels = y };
  double first, last;
  double losses[20];

  etu_blobs (x, y, N, 7);
  es_train_config_default (&cfg);
  cfg.lr = 0.01f;
  cfg.seed = 3;
  tr = es_trainer_new (m, be, &cfg, N, NULL);
  g_assert_nonnull (tr);
  train (tr, x, y, N, 32, 20, losses);
  first = losses[0];
  last = losses[19];
  g_test_message ("loss %.4f -> %.4f", first, last);
  g_assert_cmpfloat (last, <, first * 0.5);
  g_assert_true (es_trainer_eval_batch (tr, &all, &st, NULL, NULL));
  g_test_message ("accuracy %.3f", (double) st.correct / st.rows);
  g_assert_cmpfloat ((double) st.correct / st.rows, >=, 0.95);
  es_trainer_free (tr);
  es_model_free (m);
  es_backend_free (be);
}

static void
test_deterministic (void)
{
  enum { N = 300 };
  g_autofree float *x = g_new (float, 2 * N);
  g_autofree int32_t *y = g_new (int32_t, N);
  double a[5], b[5];
  EsTrainConfig cfg;

  etu_blobs (x, y, N, 9);
  es_train_config_default (&cfg);
  cfg.seed = 11;
  for (int run = 0; run < 2; run++)
    {
      EsBackend *be = es_cpu_backend_new (2, NULL, NULL);
      EsModel *m = small_mlp (5, true);
      EsTrainer *tr = es_trainer_new (m, be, &cfg, 32, NULL);

      train (tr, x, y, N, 32, 5, run == 0 ? a : b);
      es_trainer_free (tr);
      es_model_free (m);
      es_backend_free (be);
    }
  for (int e = 0; e < 5; e++)
    g_assert_cmpfloat (a[e], ==, b[e]);
}

static void
test_budget_halves_batch (void)
{
  enum { N = 256, BATCH = 128 };
  g_autofree float *x = g_new (float, 2 * N);
  g_autofree int32_t *y = g_new (int32_t, N);
  EsTrainConfig cfg;
  EsMemPlan full, small;
  EsModel *m1 = small_mlp (2, false), *m2 = small_mlp (2, false);
  EsBackend *be1 = es_cpu_backend_new (1, NULL, NULL);
  EsBudget *budget;
  EsBackend *be2;
  EsTrainer *t1, *t2;
  EsError err = { 0 };

  etu_blobs (x, y, N, 4);
  es_train_config_default (&cfg);
  es_mem_plan (m1, &cfg, BATCH, true, &full);
  es_mem_plan (m1, &cfg, BATCH / 4, true, &small);
  g_assert_cmpuint (small.activations, <, full.activations);
  g_assert_cmpuint (full.total, ==, full.weights + full.gradients + full.optimizer + full.activations + full.workspace + full.data);

  /* a budget between the two plans: the trainer must go down to a quarter or less */
  budget = es_budget_new ((full.total + small.total) / 2);
  be2 = es_cpu_backend_new (1, budget, NULL);
  t1 = es_trainer_new (m1, be1, &cfg, BATCH, NULL);
  t2 = es_trainer_new (m2, be2, &cfg, BATCH, &err);
  g_assert_nonnull (t2);
  g_assert_cmpint (es_trainer_micro_batch (t2), <, BATCH);
  g_assert_cmpint (es_trainer_accum_steps (t2), >=, 2);
  g_assert_cmpuint (es_budget_used (budget), <=, es_budget_limit (budget));
  g_test_message ("micro-batch %d, accumulating %d", es_trainer_micro_batch (t2),
                  es_trainer_accum_steps (t2));

  train (t1, x, y, N, BATCH, 3, NULL);
  train (t2, x, y, N, BATCH, 3, NULL);
  es_trainer_sync (t1);
  es_trainer_sync (t2);
  for (int i = 0; i < es_model_n_params (m1); i++)
    g_assert_cmpfloat_with_epsilon (es_model_params (m1)[i], es_model_params (m2)[i], 1e-4);
  es_trainer_free (t1);
  es_trainer_free (t2);
  g_assert_cmpuint (es_budget_used (budget), ==, 0);

  /* a budget that cannot hold even the weights is a clear error */
  es_budget_set_limit (budget, 1024);
  es_error_clear (&err);
  g_assert_null (es_trainer_new (m2, be2, &cfg, BATCH, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_BUDGET);
  g_assert_cmpstr (err.message, !=, "");
  g_test_message ("%s", err.message);

  es_backend_free (be1);
  es_backend_free (be2);
  es_budget_free (budget);
  es_model_free (m1);
  es_model_free (m2);
}

static void
test_divergence_stops (void)
{
  enum { N = 64 };
  g_autofree float *x = g_new (float, 2 * N);
  g_autofree int32_t *y = g_new (int32_t, N);
  g_autofree float *t = g_new (float, N);
  g_autofree float *before = NULL;
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsShape in = { 1, { 2 } };
  EsLayerSpec d = es_layer_spec_default (ES_LAYER_DENSE);
  EsModel *m;
  EsTrainConfig cfg;
  EsTrainer *tr;
  EsError err = { 0 };
  bool ok = true;
  int step;

  /* Linear regression with a learning rate far too high: every step multiplies the
   * error by about 1 - 2 lr |x|^2, so the loss overflows within a few dozen steps. */
  d.units = 1;
  m = es_model_new (&in, &d, 1, NULL);
  es_model_init (m, 1);
  etu_blobs (x, y, N, 1);
  for (int i = 0; i < N; i++)
    t[i] = (float) y[i];
  es_train_config_default (&cfg);
  cfg.loss = ES_LOSS_MSE;
  cfg.optimizer = ES_OPT_SGD;
  cfg.lr = 10.0f;
  tr = es_trainer_new (m, be, &cfg, N, NULL);
  for (step = 0; step < 200 && ok; step++)
    {
      EsBatch b = { .B = N, .x_f32 = x, .targets = t };

      es_trainer_sync (tr);
      g_free (before);
      before = g_memdup2 (es_model_params (m), es_model_n_params (m) * sizeof (float));
      ok = es_trainer_train_batch (tr, &b, NULL, &err);
    }
  g_assert_false (ok);
  g_test_message ("stopped after %d steps: %s", step, err.message);
  g_assert_cmpint (err.code, ==, ES_ERR_NUMERIC);
  g_assert_nonnull (strstr (err.message, "step"));
  /* the failing batch changed nothing */
  es_trainer_sync (tr);
  g_assert_cmpmem (before, es_model_n_params (m) * sizeof (float), es_model_params (m),
                   es_model_n_params (m) * sizeof (float));
  es_trainer_free (tr);
  es_model_free (m);
  es_backend_free (be);
}

static void
test_infer_matches_eval (void)
{
  enum { N = 90 };
  g_autofree float *x = g_new (float, 2 * N);
  g_autofree int32_t *y = g_new (int32_t, N);
  g_autofree int32_t *pred = g_new (int32_t, N);
  EsBackend *be = es_cpu_backend_new (2, NULL, NULL);
  EsModel *m = small_mlp (8, true);
  EsTrainConfig cfg;
  EsTrainer *tr;
  EsInfer *inf;
  EsBatch all = { .B = N, .x_f32 = x, .labels = y };
  EsStepStats st = { 0 };
  const float *out;
  int agree = 0;

  etu_blobs (x, y, N, 2);
  es_train_config_default (&cfg);
  cfg.lr = 0.01f;
  tr = es_trainer_new (m, be, &cfg, 32, NULL);
  train (tr, x, y, N, 32, 5, NULL);
  es_trainer_sync (tr);
  g_assert_true (es_trainer_eval_batch (tr, &all, &st, pred, NULL));

  inf = es_infer_new (m, be, N, NULL);
  g_assert_nonnull (inf);
  out = es_infer_run (inf, x, N);
  g_assert_nonnull (out);
  for (int r = 0; r < N; r++)
    {
      int best = 0;
      float sum = 0;

      for (int c = 0; c < 3; c++)
        {
          sum += out[r * 3 + c];
          if (out[r * 3 + c] > out[r * 3 + best])
            best = c;
        }
      g_assert_cmpfloat_with_epsilon (sum, 1.0, 1e-5);  /* the Softmax layer ran */
      agree += best == pred[r];
    }
  g_assert_cmpint (agree, ==, N);
  /* batch 1 gives the same row */
  {
    float row0[3];
    memcpy (row0, out, sizeof row0);
    out = es_infer_run (inf, x, 1);
    for (int c = 0; c < 3; c++)
      g_assert_cmpfloat_with_epsilon (out[c], row0[c], 1e-6);
  }
  es_infer_free (inf);
  es_trainer_free (tr);
  es_model_free (m);
  es_backend_free (be);
}

/* Dense layers followed by activations run fused (dense_act_forward) at inference: on
 * a model whose Dense 64 -> Dropout -> ReLU and Dense 48 -> LeakyReLU take the packed
 * product at 200 rows, the output matches an EsInfer on the same backend without the
 * op (Dense then activation) to GEMM tolerance, and the trainer's evaluation in every
 * row's class. */
static void
test_infer_fused (void)
{
  enum { N = 200 };
  g_autofree float *x = g_new (float, 2 * N);
  g_autofree int32_t *y = g_new (int32_t, N);
  g_autofree int32_t *pred = g_new (int32_t, N);
  g_autofree float *fused = g_new (float, 3 * N);
  EsBackend *be = es_cpu_backend_new (2, NULL, NULL);
  EsBackendIface plain_iface = *be->iface;
  EsBackend plain = *be;
  EsShape in = { 1, { 2 } };
  EsLayerSpec l[8];
  EsModel *m;
  EsTrainConfig cfg;
  EsTrainer *tr;
  EsInfer *inf;
  EsBatch all = { .B = N, .x_f32 = x, .labels = y };
  EsStepStats st = { 0 };
  const float *out;
  int n = 0, agree = 0;

  /* the same backend with no fused op: es_infer_run falls back to Dense + activation */
  g_assert_nonnull (be->iface->dense_act_forward);
  plain_iface.dense_act_forward = NULL;
  plain.iface = &plain_iface;

  l[n] = es_layer_spec_default (ES_LAYER_DENSE);
  l[n++].units = 64;
  l[n] = es_layer_spec_default (ES_LAYER_DROPOUT);
  l[n++].rate = 0.1f;
  l[n++] = es_layer_spec_default (ES_LAYER_RELU);
  l[n] = es_layer_spec_default (ES_LAYER_DENSE);
  l[n++].units = 48;
  l[n] = es_layer_spec_default (ES_LAYER_LEAKY_RELU);
  l[n++].alpha = 0.2f;
  l[n] = es_layer_spec_default (ES_LAYER_DENSE);
  l[n++].units = 3;
  l[n++] = es_layer_spec_default (ES_LAYER_SOFTMAX);
  m = es_model_new (&in, l, n, NULL);
  g_assert_nonnull (m);
  es_model_init (m, 5);

  etu_blobs (x, y, N, 4);
  es_train_config_default (&cfg);
  cfg.lr = 0.01f;
  tr = es_trainer_new (m, be, &cfg, 50, NULL);
  train (tr, x, y, N, 50, 3, NULL);
  es_trainer_sync (tr);
  g_assert_true (es_trainer_eval_batch (tr, &all, &st, pred, NULL));

  inf = es_infer_new (m, be, N, NULL);
  g_assert_nonnull (inf);
  out = es_infer_run (inf, x, N);
  g_assert_nonnull (out);
  memcpy (fused, out, 3 * N * sizeof (float));
  es_infer_free (inf);

  inf = es_infer_new (m, &plain, N, NULL);
  g_assert_nonnull (inf);
  out = es_infer_run (inf, x, N);
  g_assert_nonnull (out);
  for (int r = 0; r < N; r++)
    {
      int best = 0;

      for (int c = 0; c < 3; c++)
        {
          if (fabsf (fused[r * 3 + c] - out[r * 3 + c]) > 1e-5f)
            g_error ("row %d class %d: fused %.9g, unfused %.9g", r, c, fused[r * 3 + c],
                     out[r * 3 + c]);
          if (fused[r * 3 + c] > fused[r * 3 + best])
            best = c;
        }
      agree += best == pred[r];
    }
  g_assert_cmpint (agree, ==, N);
  es_infer_free (inf);
  es_trainer_free (tr);
  es_model_free (m);
  es_backend_free (be);
}

/* A batch that turns the loss non-finite leaves BatchNorm's running statistics as they
 * were, not only the weights. */
static void
test_bad_batch_keeps_running_stats (void)
{
  enum { N = 32 };
  g_autofree float *x = g_new (float, 2 * N);
  g_autofree int32_t *y = g_new (int32_t, N);
  g_autofree float *before = NULL;
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsModel *m = small_mlp (3, true);
  EsTrainConfig cfg;
  EsTrainer *tr;
  EsBatch b = { .B = N, .x_f32 = x, .labels = y };
  EsError err = { 0 };

  etu_blobs (x, y, N, 5);
  es_train_config_default (&cfg);
  tr = es_trainer_new (m, be, &cfg, N, NULL);
  g_assert_true (es_trainer_train_batch (tr, &b, NULL, &err));
  es_trainer_sync (tr);
  before = g_memdup2 (es_model_buffers (m), es_model_n_buffers (m) * sizeof (float));
  x[3] = NAN;
  g_assert_false (es_trainer_train_batch (tr, &b, NULL, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_NUMERIC);
  es_trainer_sync (tr);
  for (int i = 0; i < es_model_n_buffers (m); i++)
    g_assert_cmpfloat (es_model_buffers (m)[i], ==, before[i]);
  es_trainer_free (tr);
  es_model_free (m);
  es_backend_free (be);
}

/* What the engine refuses up front: a batch without what the loss needs, a final layer
 * that does not go with the loss, and micro-batches too small for BatchNorm. */
static void
test_refusals (void)
{
  enum { N = 64 };
  g_autofree float *x = g_new0 (float, 2 * N);
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsModel *m = small_mlp (3, true);
  EsShape in = { 1, { 2 } };
  EsLayerSpec sig[2] = { es_layer_spec_default (ES_LAYER_DENSE), es_layer_spec_default (ES_LAYER_SIGMOID) };
  EsModel *ms;
  EsTrainConfig cfg;
  EsTrainer *tr;
  EsBatch b = { .B = N, .x_f32 = x };
  EsError err = { 0 };
  EsMemPlan plan;
  EsBudget *budget;
  EsBackend *tight;

  es_train_config_default (&cfg);
  tr = es_trainer_new (m, be, &cfg, N, NULL);
  g_assert_false (es_trainer_train_batch (tr, &b, NULL, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  g_assert_nonnull (strstr (err.message, "labels"));
  es_trainer_free (tr);

  sig[0].units = 3;
  ms = es_model_new (&in, sig, 2, NULL);
  es_error_clear (&err);
  g_assert_null (es_trainer_new (ms, be, &cfg, N, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  g_assert_nonnull (strstr (err.message, "Sigmoid"));
  es_model_free (ms);

  /* a budget that would need micro-batches of 4 rows: BatchNorm stops the halving at 16 */
  es_mem_plan (m, &cfg, 4, true, &plan);
  budget = es_budget_new (plan.total + plan.total / 10);
  tight = es_cpu_backend_new (1, budget, NULL);
  es_error_clear (&err);
  tr = es_trainer_new (m, tight, &cfg, N, &err);
  if (tr != NULL)
    {
      g_assert_cmpint (es_trainer_micro_batch (tr), >=, 16);
      es_trainer_free (tr);
    }
  else
    {
      g_assert_cmpint (err.code, ==, ES_ERR_BUDGET);
      g_assert_nonnull (strstr (err.message, "BatchNorm"));
    }
  es_backend_free (tight);
  es_budget_free (budget);
  es_model_free (m);
  es_backend_free (be);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/engine/train/learns-blobs", test_learns_blobs);
  g_test_add_func ("/engine/train/deterministic", test_deterministic);
  g_test_add_func ("/engine/train/budget-halves-batch", test_budget_halves_batch);
  g_test_add_func ("/engine/train/divergence-stops", test_divergence_stops);
  g_test_add_func ("/engine/train/bad-batch-keeps-running-stats", test_bad_batch_keeps_running_stats);
  g_test_add_func ("/engine/train/refusals", test_refusals);
  g_test_add_func ("/engine/train/infer-matches-eval", test_infer_matches_eval);
  g_test_add_func ("/engine/train/infer-fused", test_infer_fused);
  return g_test_run ();
}
