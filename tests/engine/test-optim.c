/* test-optim.c: optimizer steps, regularization, clipping, accumulation and learning-rate
 * schedules against values computed by hand, through the CPU backend and EsTrainer. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "es-backend.h"
#include "es-train.h"

#define CLOSE(a, b) g_assert_cmpfloat_with_epsilon ((a), (b), 1e-6)

static EsBackend *
backend (void)
{
  EsError err = { 0 };
  EsBackend *be = es_cpu_backend_new (1, NULL, &err);

  g_assert_nonnull (be);
  return be;
}

static void
test_sgd_steps (void)
{
  EsBackend *be = backend ();
  float p = 1.0f, g = 0.5f, v = 0.0f;

  be->iface->sgd_step (be, &p, NULL, &g, 0.1f, 0.0f, false, 1);
  CLOSE (p, 0.95f);

  /* momentum: v = 0.5, p = 1 - 0.05; then v = 0.95, p -= 0.095 */
  p = 1.0f;
  be->iface->sgd_step (be, &p, &v, &g, 0.1f, 0.9f, false, 1);
  CLOSE (v, 0.5f);
  CLOSE (p, 0.95f);
  be->iface->sgd_step (be, &p, &v, &g, 0.1f, 0.9f, false, 1);
  CLOSE (v, 0.95f);
  CLOSE (p, 0.855f);

  /* Nesterov: p -= lr (g + mu v) = 0.1 (0.5 + 0.45) */
  p = 1.0f;
  v = 0.0f;
  be->iface->sgd_step (be, &p, &v, &g, 0.1f, 0.9f, true, 1);
  CLOSE (p, 0.905f);
  es_backend_free (be);
}

static void
test_adam_steps (void)
{
  EsBackend *be = backend ();
  float p = 1.0f, g = 0.5f, m = 0.0f, v = 0.0f;
  float bc1 = 1.0f - 0.9f, bc2 = 1.0f - 0.999f;

  /* step 1: m = 0.05, v = 0.00025; mhat = 0.5, vhat = 0.25; p -= 0.01 * 0.5 / 0.5 */
  be->iface->adam_step (be, &p, &m, &v, &g, 0.01f, 0.9f, 0.999f, 1e-8f, 0.0f, bc1, bc2, 1);
  CLOSE (m, 0.05f);
  CLOSE (v, 0.00025f);
  g_assert_cmpfloat_with_epsilon (p, 0.99f, 1e-5);

  /* step 2 with g = -0.5: m = 0.045 - 0.05 = -0.005, v = 0.00024975 + 0.00025 */
  g = -0.5f;
  {
    double m2 = 0.9 * 0.05 + 0.1 * -0.5, v2 = 0.999 * 0.00025 + 0.001 * 0.25;
    double mh = m2 / (1 - 0.81), vh = v2 / (1 - 0.998001);
    double expect = 0.99 - 0.01 * mh / (sqrt (vh) + 1e-8);

    be->iface->adam_step (be, &p, &m, &v, &g, 0.01f, 0.9f, 0.999f, 1e-8f, 0.0f,
                          (float) (1 - 0.81), (float) (1 - 0.998001), 1);
    g_assert_cmpfloat_with_epsilon (p, expect, 1e-5);
  }

  /* AdamW: the decay is decoupled, p -= lr (1 + wd p) on the first step */
  p = 1.0f;
  g = 0.5f;
  m = v = 0.0f;
  be->iface->adam_step (be, &p, &m, &v, &g, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, bc1, bc2, 1);
  g_assert_cmpfloat_with_epsilon (p, 1.0 - 0.01 * 1.1, 1e-5);
  es_backend_free (be);
}

static void
test_regularize (void)
{
  EsBackend *be = backend ();
  float p[3] = { 2.0f, -1.0f, 0.0f };
  float g[3] = { 0.1f, 0.1f, 0.1f };

  be->iface->regularize (be, g, p, 0.01f, 0.5f, 3);
  CLOSE (g[0], 0.1f + 0.01f + 1.0f);
  CLOSE (g[1], 0.1f - 0.01f - 0.5f);
  CLOSE (g[2], 0.1f);
  es_backend_free (be);
}

/* Dense(1) on one input with w = 2, b = 0 and MSE against 0: pred 2, dpred 4,
 * dw = db = 4 for x = 1. */
static EsModel *
tiny_model (void)
{
  EsShape in = { 1, { 1 } };
  EsLayerSpec d = es_layer_spec_default (ES_LAYER_DENSE);
  EsModel *m;

  d.units = 1;
  m = es_model_new (&in, &d, 1, NULL);
  es_model_params (m)[0] = 2.0f;
  es_model_params (m)[1] = 0.0f;
  return m;
}

static void
train_once (EsTrainer *tr, float x, float t)
{
  EsBatch b = { .B = 1, .x_f32 = &x, .targets = &t };
  EsStepStats st = { 0 };
  EsError err = { 0 };

  g_assert_true (es_trainer_train_batch (tr, &b, &st, &err));
  g_assert_cmpint (st.rows, ==, 1);
}

static void
test_clip_and_l2 (void)
{
  EsBackend *be = backend ();
  EsModel *m = tiny_model ();
  EsTrainConfig cfg;
  EsTrainer *tr;

  es_train_config_default (&cfg);
  cfg.loss = ES_LOSS_MSE;
  cfg.optimizer = ES_OPT_SGD;
  cfg.lr = 0.1f;
  cfg.clip_norm = 1.0f;
  tr = es_trainer_new (m, be, &cfg, 1, NULL);
  g_assert_nonnull (tr);
  train_once (tr, 1.0f, 0.0f);
  es_trainer_sync (tr);
  /* |(4, 4)| = 5.657 -> clipped to (0.7071, 0.7071) */
  g_assert_cmpfloat_with_epsilon (es_model_params (m)[0], 2.0 - 0.1 / sqrt (2.0), 1e-5);
  g_assert_cmpfloat_with_epsilon (es_model_params (m)[1], -0.1 / sqrt (2.0), 1e-5);
  es_trainer_free (tr);

  es_model_params (m)[0] = 2.0f;
  es_model_params (m)[1] = 0.0f;
  cfg.clip_norm = 0.0f;
  cfg.l2 = 0.5f;
  tr = es_trainer_new (m, be, &cfg, 1, NULL);
  train_once (tr, 1.0f, 0.0f);
  es_trainer_sync (tr);
  /* dw = 4 + 0.5 * 2 = 5; db = 4 + 0 */
  g_assert_cmpfloat_with_epsilon (es_model_params (m)[0], 2.0 - 0.5, 1e-5);
  g_assert_cmpfloat_with_epsilon (es_model_params (m)[1], -0.4, 1e-5);
  es_trainer_free (tr);
  es_model_free (m);
  es_backend_free (be);
}

static void
test_accumulation (void)
{
  EsBackend *be = backend ();
  EsModel *m = tiny_model ();
  EsTrainConfig cfg;
  EsTrainer *tr;

  es_train_config_default (&cfg);
  cfg.loss = ES_LOSS_MSE;
  cfg.optimizer = ES_OPT_SGD;
  cfg.lr = 0.1f;
  cfg.accum_steps = 2;
  tr = es_trainer_new (m, be, &cfg, 1, NULL);
  train_once (tr, 1.0f, 0.0f);
  es_trainer_sync (tr);
  g_assert_cmpfloat (es_model_params (m)[0], ==, 2.0f);  /* no step yet */
  g_assert_cmpint (es_trainer_step_count (tr), ==, 0);
  /* second batch x = 1, t = 1: dpred = 2; the mean of (4, 2) is 3 */
  train_once (tr, 1.0f, 1.0f);
  es_trainer_sync (tr);
  g_assert_cmpint (es_trainer_step_count (tr), ==, 1);
  g_assert_cmpfloat_with_epsilon (es_model_params (m)[0], 2.0 - 0.3, 1e-5);
  es_trainer_free (tr);
  es_model_free (m);
  es_backend_free (be);
}

static void
test_schedules (void)
{
  EsBackend *be = backend ();
  EsModel *m = tiny_model ();
  EsTrainConfig cfg;
  EsTrainer *tr;

  es_train_config_default (&cfg);
  cfg.loss = ES_LOSS_MSE;
  cfg.optimizer = ES_OPT_SGD;
  cfg.lr = 0.01f;
  cfg.schedule = ES_LR_STEP;
  cfg.step_size = 2;
  cfg.gamma = 0.5f;
  tr = es_trainer_new (m, be, &cfg, 1, NULL);
  for (int step = 0; step < 6; step++)
    {
      train_once (tr, 0.0f, 0.0f);
      g_assert_cmpfloat_with_epsilon (es_trainer_current_lr (tr), 0.01 * pow (0.5, step / 2), 1e-9);
    }
  es_trainer_free (tr);

  cfg.schedule = ES_LR_COSINE;
  cfg.total_steps = 10;
  cfg.min_lr = 0.001f;
  cfg.warmup_steps = 2;
  tr = es_trainer_new (m, be, &cfg, 1, NULL);
  for (int step = 0; step < 12; step++)
    {
      double expect = 0.001 + 0.5 * (0.01 - 0.001) * (1 + cos (M_PI * MIN (step / 10.0, 1.0)));

      if (step < 2)
        expect *= (step + 1) / 2.0;
      train_once (tr, 0.0f, 0.0f);
      g_assert_cmpfloat_with_epsilon (es_trainer_current_lr (tr), expect, 1e-8);
    }
  es_trainer_free (tr);
  es_model_free (m);
  es_backend_free (be);
}

static void
test_names (void)
{
  EsOptKind o;
  EsLossKind l;
  EsLrSchedule s;

  g_assert_true (es_opt_kind_from_name ("AdamW", &o));
  g_assert_cmpint (o, ==, ES_OPT_ADAMW);
  g_assert_true (es_loss_kind_from_name ("cross_entropy", &l));
  g_assert_cmpint (l, ==, ES_LOSS_SOFTMAX_XENT);
  g_assert_true (es_lr_schedule_from_name (es_lr_schedule_name (ES_LR_COSINE), &s));
  g_assert_cmpint (s, ==, ES_LR_COSINE);
  g_assert_false (es_opt_kind_from_name ("lion", &o));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/engine/optim/sgd", test_sgd_steps);
  g_test_add_func ("/engine/optim/adam", test_adam_steps);
  g_test_add_func ("/engine/optim/regularize", test_regularize);
  g_test_add_func ("/engine/optim/clip-and-l2", test_clip_and_l2);
  g_test_add_func ("/engine/optim/accumulation", test_accumulation);
  g_test_add_func ("/engine/optim/schedules", test_schedules);
  g_test_add_func ("/engine/optim/names", test_names);
  return g_test_run ();
}
