/* test-nonfinite.c: es_trainer_find_nonfinite names the first layer whose values went
 * bad after a NaN or infinite loss: an infinity planted in a layer's weights is found
 * in that layer's weights, one planted in an input row in the first layer's outputs,
 * and a finite model has none. Also es_trainer_set_input_range round-trips. */
#include <math.h>

#include "engine-test-util.h"
#include "es-backend.h"
#include "es-model.h"
#include "es-train.h"

#define N 32   /* rows */

/* Dense(8), ReLU, Dense(3) on 2 inputs: layers 0, 1, 2. */
static EsModel *
make_model (void)
{
  EsShape in = { 1, { 2 } };
  EsLayerSpec l[3] = {
    { .kind = ES_LAYER_DENSE, .units = 8 },
    { .kind = ES_LAYER_RELU },
    { .kind = ES_LAYER_DENSE, .units = 3 },
  };
  EsModel *m = es_model_new (&in, l, 3, NULL);

  g_assert_nonnull (m);
  es_model_init (m, 3);
  return m;
}

/* Train one batch of (x, y) on m, expecting ES_ERR_NUMERIC when bad; returns the layer
 * es_trainer_find_nonfinite names and its kind. */
static int
train_and_find (EsModel *m, const float *x, const int32_t *y, bool bad, EsNonfiniteKind *what)
{
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsTrainConfig cfg;
  EsTrainer *tr;
  EsBatch b = { .B = N, .x_f32 = x, .labels = y };
  EsError err = { 0 };
  bool ok;
  int layer;

  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_SGD;
  cfg.lr = 0.01f;
  tr = es_trainer_new (m, be, &cfg, N, &err);
  g_assert_nonnull (tr);
  ok = es_trainer_train_batch (tr, &b, NULL, &err);
  g_assert_true (ok == !bad);
  if (bad)
    g_assert_cmpint (err.code, ==, ES_ERR_NUMERIC);
  layer = es_trainer_find_nonfinite (tr, what);
  es_trainer_free (tr);
  es_backend_free (be);
  return layer;
}

static void
test_planted_weight (void)
{
  float x[N * 2];
  int32_t y[N];
  EsModel *m = make_model ();
  const EsLayerInfo *l2 = es_model_layer (m, 2);
  const EsTensorInfo *w2 = es_model_tensor (m, l2->first_tensor);
  EsNonfiniteKind what = ES_NONFINITE_NONE;

  etu_blobs (x, y, N, 1);
  /* one weight of the last Dense layer (layer 2) made infinite */
  es_model_params (m)[w2->offset + 5] = INFINITY;
  g_assert_cmpint (train_and_find (m, x, y, true, &what), ==, 2);
  g_assert_cmpint (what, ==, ES_NONFINITE_PARAMS);
  es_model_free (m);
}

static void
test_planted_input (void)
{
  float x[N * 2];
  int32_t y[N];
  EsModel *m = make_model ();
  EsNonfiniteKind what = ES_NONFINITE_NONE;

  etu_blobs (x, y, N, 2);
  x[2 * 17 + 1] = INFINITY;   /* row 17: the first Dense layer's output goes bad */
  g_assert_cmpint (train_and_find (m, x, y, true, &what), ==, 0);
  g_assert_cmpint (what, ==, ES_NONFINITE_ACTIVATIONS);
  es_model_free (m);
}

static void
test_all_finite (void)
{
  float x[N * 2];
  int32_t y[N];
  EsModel *m = make_model ();
  EsNonfiniteKind what = ES_NONFINITE_ACTIVATIONS;

  etu_blobs (x, y, N, 3);
  g_assert_cmpint (train_and_find (m, x, y, false, &what), ==, -1);
  g_assert_cmpint (what, ==, ES_NONFINITE_NONE);
  es_model_free (m);
}

static void
test_input_range (void)
{
  EsModel *m = make_model ();
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsTrainConfig cfg;
  EsTrainer *tr;
  bool layers[3] = { true, false, true };
  float lo = 0, hi = 0;

  es_train_config_default (&cfg);
  tr = es_trainer_new (m, be, &cfg, N, NULL);
  g_assert_nonnull (tr);
  /* without QAT nothing takes a range */
  g_assert_false (es_trainer_set_input_range (tr, 0, -1.0f, 2.0f));
  g_assert_true (es_trainer_set_fake_quant (tr, layers, false, NULL));
  g_assert_false (es_trainer_get_input_range (tr, 2, &lo, &hi));
  g_assert_true (es_trainer_set_input_range (tr, 2, -0.25f, 3.5f));
  g_assert_true (es_trainer_get_input_range (tr, 2, &lo, &hi));
  g_assert_cmpfloat (lo, ==, -0.25f);
  g_assert_cmpfloat (hi, ==, 3.5f);
  g_assert_false (es_trainer_set_input_range (tr, 1, 0.0f, 1.0f));   /* ReLU: no QAT */
  g_assert_false (es_trainer_set_input_range (tr, 0, 2.0f, 1.0f));   /* lo > hi */
  g_assert_false (es_trainer_set_input_range (tr, 0, NAN, 1.0f));
  es_trainer_free (tr);
  es_backend_free (be);
  es_model_free (m);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/engine/nonfinite/planted-weight", test_planted_weight);
  g_test_add_func ("/engine/nonfinite/planted-input", test_planted_input);
  g_test_add_func ("/engine/nonfinite/all-finite", test_all_finite);
  g_test_add_func ("/engine/nonfinite/input-range", test_input_range);
  return g_test_run ();
}
