/* test-profile.c: the trainer's profiling counters (es_trainer_set_profiling). Off, a
 * run leaves every counter at zero; on, every layer that runs gets forward and
 * backward time and the FLOPs its shape implies, a last layer fused into the loss gets
 * none, the stages add up to the total exactly (the readings are chained) and cover
 * the time spent in the calls, the event callback reports contiguous
 * intervals that sum to the counters, evaluation is not timed, and reset clears it all.
 * Nothing asserts how long anything takes. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "es-backend.h"
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
          continue;
        }
      g_assert_cmpfloat (lp.forward_s, >, 0.0);
      g_assert_cmpfloat (lp.backward_s, >, 0.0);
      g_assert_cmpfloat (fabs (lp.forward_s - ev.fwd_s[i]), <=, 1e-9 * batches);
      g_assert_cmpfloat (fabs (lp.backward_s - ev.bwd_s[i]), <=, 1e-9 * batches);
      g_assert_cmpint (lp.forward_flops, ==, info->flops * p.rows);
      /* the first layer needs no input gradient */
      g_assert_cmpint (lp.backward_flops, ==, info->flops * p.rows * (i == 0 ? 1 : 2));
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

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/profile/off", test_off);
  g_test_add_func ("/profile/on", test_on);
  g_test_add_func ("/profile/stage-names", test_stage_names);
  return g_test_run ();
}
