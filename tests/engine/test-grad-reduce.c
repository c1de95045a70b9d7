/* test-grad-reduce.c: the trainer's hooks for data parallelism and checkpoints
 * (es-train.h): buckets report every parameter layer's gradients once, last layer
 * first, on the step's last micro-batch only; finish sees the step's rows and what it
 * leaves in the gradients is what the optimizer applies; a failing finish leaves the
 * parameters as they were; and a trainer restored from a model copy and
 * es_trainer_get_state continues bit for bit like the one that was not stopped. */
#include <glib.h>
#include <string.h>

#include "es-backend.h"
#include "es-train.h"

#include "engine-test-util.h"

#define N_ROWS 96

static float xs[N_ROWS * 2];
static int32_t ys[N_ROWS];

/* Dense 16, BatchNorm, Tanh, Dense 3, Softmax: three layers with parameters. */
static EsModel *
model_new (void)
{
  EsShape in = { 1, { 2 } };
  EsLayerSpec l[5] = {
    es_layer_spec_default (ES_LAYER_DENSE), es_layer_spec_default (ES_LAYER_BATCHNORM),
    es_layer_spec_default (ES_LAYER_TANH), es_layer_spec_default (ES_LAYER_DENSE),
    es_layer_spec_default (ES_LAYER_SOFTMAX),
  };
  EsModel *m;

  l[0].units = 16;
  l[3].units = 3;
  m = es_model_new (&in, l, 5, NULL);
  g_assert_nonnull (m);
  es_model_init (m, 7);
  return m;
}

static EsTrainer *
trainer_new (EsModel *m, EsBackend *be, EsOptKind opt, float lr, int accum, int batch)
{
  EsTrainConfig cfg;
  EsError err = { 0 };
  EsTrainer *tr;

  es_train_config_default (&cfg);
  cfg.optimizer = opt;
  cfg.lr = lr;
  cfg.accum_steps = accum;
  tr = es_trainer_new (m, be, &cfg, batch, &err);
  g_assert_nonnull (tr);
  return tr;
}

/* Batch k of B rows (wrapping over the data). */
static EsBatch
batch_at (int k, int B)
{
  int r = (k * B) % (N_ROWS - B + 1);
  EsBatch b = { .B = B, .x_f32 = xs + 2 * r, .labels = ys + r };

  return b;
}

typedef struct {
  const EsModel *model;
  GArray  *calls;         /* (offset, count) pairs, gint64 */
  int      finishes;
  int64_t  rows;
  float    factor;        /* finish multiplies the gradients by it */
  gboolean fail;
} Record;

static void
on_bucket (void *user, EsBackend *be, const float *grads, int64_t offset, int64_t count)
{
  Record *rec = user;
  gint64 pair[2] = { offset, count };

  g_array_append_vals (rec->calls, pair, 2);
}

static bool
on_finish (void *user, EsBackend *be, float *grads, int64_t n, int64_t rows, EsError *err)
{
  Record *rec = user;

  g_assert_cmpint (n, ==, es_model_n_params (rec->model));
  rec->finishes++;
  rec->rows = rows;
  if (rec->fail)
    {
      es_error_set (err, ES_ERR_INVALID, "reduction failed");
      return false;
    }
  be->iface->scale (be, grads, rec->factor, n);
  return true;
}

static void
test_buckets (void)
{
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsModel *m = model_new ();
  EsTrainer *tr = trainer_new (m, be, ES_OPT_ADAM, 0.01f, 2, 16);
  Record rec = { m, g_array_new (FALSE, FALSE, sizeof (gint64)), 0, 0, 1.0f, FALSE };
  EsError err = { 0 };
  EsBatch b;
  int64_t expect = 0;
  int layer_params = 0;

  es_trainer_set_grad_reduce (tr, on_bucket, on_finish, &rec);
  /* first batch of two accumulated: nothing is final yet */
  b = batch_at (0, 16);
  g_assert_true (es_trainer_train_batch (tr, &b, NULL, &err));
  g_assert_cmpuint (rec.calls->len, ==, 0);
  g_assert_cmpint (rec.finishes, ==, 0);
  /* the second one, of 10 rows, completes the step */
  b = batch_at (1, 10);
  g_assert_true (es_trainer_train_batch (tr, &b, NULL, &err));
  g_assert_cmpint (rec.finishes, ==, 1);
  g_assert_cmpint (rec.rows, ==, 26);
  g_assert_cmpint (es_trainer_step_count (tr), ==, 1);

  /* one report per layer with parameters, last first, tiling [0, P) */
  for (int i = 0; i < es_model_n_layers (m); i++)
    layer_params += es_model_layer (m, i)->n_params > 0;
  g_assert_cmpuint (rec.calls->len, ==, 2 * layer_params);
  for (int k = (int) rec.calls->len / 2 - 1; k >= 0; k--)
    {
      gint64 off = g_array_index (rec.calls, gint64, 2 * k);
      gint64 cnt = g_array_index (rec.calls, gint64, 2 * k + 1);

      g_assert_cmpint (off, ==, expect);
      expect += cnt;
    }
  g_assert_cmpint (expect, ==, es_model_n_params (m));

  g_array_unref (rec.calls);
  es_trainer_free (tr);
  es_model_free (m);
  es_backend_free (be);
}

/* What finish leaves is applied: doubled gradients under SGD are the step of twice the
 * learning rate, exactly (both products scale by a power of two). */
static void
test_finish_applies (void)
{
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsModel *a = model_new (), *b = model_new ();
  EsTrainer *ta = trainer_new (a, be, ES_OPT_SGD, 0.05f, 1, 16);
  EsTrainer *tb = trainer_new (b, be, ES_OPT_SGD, 0.1f, 1, 16);
  Record rec = { a, g_array_new (FALSE, FALSE, sizeof (gint64)), 0, 0, 2.0f, FALSE };
  EsError err = { 0 };

  es_trainer_set_grad_reduce (ta, NULL, on_finish, &rec);
  for (int k = 0; k < 3; k++)
    {
      EsBatch bt = batch_at (k, 16);

      g_assert_true (es_trainer_train_batch (ta, &bt, NULL, &err));
      g_assert_true (es_trainer_train_batch (tb, &bt, NULL, &err));
    }
  g_assert_cmpint (rec.finishes, ==, 3);
  g_assert_cmpint (rec.calls->len, ==, 0);   /* no bucket function given */
  es_trainer_sync (ta);
  es_trainer_sync (tb);
  g_assert_cmpmem (es_model_params_const (a), es_model_n_params (a) * sizeof (float),
                   es_model_params_const (b), es_model_n_params (b) * sizeof (float));

  /* a failing reduction fails the batch and leaves the parameters alone */
  {
    g_autofree float *before = g_memdup2 (es_model_params_const (a),
                                          es_model_n_params (a) * sizeof (float));
    EsBatch bt = batch_at (3, 16);

    rec.fail = TRUE;
    g_assert_false (es_trainer_train_batch (ta, &bt, NULL, &err));
    g_assert_cmpstr (err.message, ==, "reduction failed");
    es_trainer_sync (ta);
    g_assert_cmpmem (before, es_model_n_params (a) * sizeof (float),
                     es_model_params_const (a), es_model_n_params (a) * sizeof (float));
    g_assert_cmpint (es_trainer_step_count (ta), ==, 3);
    rec.fail = FALSE;
    g_assert_true (es_trainer_train_batch (ta, &bt, NULL, &err));
    g_assert_cmpint (es_trainer_step_count (ta), ==, 4);
  }

  g_array_unref (rec.calls);
  es_trainer_free (ta);
  es_trainer_free (tb);
  es_model_free (a);
  es_model_free (b);
  es_backend_free (be);
}

/* Stop after 5 steps (model copy + optimizer state), restore into a new trainer: the
 * next 5 steps give the same weights, buffers and learning rate as not stopping. */
static void
check_resume (EsOptKind opt)
{
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsModel *m = model_new (), *saved, *restored;
  EsTrainer *tr = trainer_new (m, be, opt, 0.02f, 1, 16), *tr2;
  int64_t P = es_model_n_params (m), steps = -1;
  int slots = es_trainer_state_slots (tr);
  g_autofree float *state = g_new (float, MAX (slots, 1) * P);
  EsError err = { 0 };

  g_assert_cmpint (slots, ==, opt == ES_OPT_SGD ? 0 : opt == ES_OPT_MOMENTUM ? 1 : 2);
  for (int k = 0; k < 5; k++)
    {
      EsBatch b = batch_at (k, 16);
      g_assert_true (es_trainer_train_batch (tr, &b, NULL, &err));
    }
  es_trainer_sync (tr);
  saved = es_model_copy (m);
  es_trainer_get_state (tr, &steps, state);
  g_assert_cmpint (steps, ==, 5);
  for (int k = 5; k < 10; k++)
    {
      EsBatch b = batch_at (k, 16);
      g_assert_true (es_trainer_train_batch (tr, &b, NULL, &err));
    }
  es_trainer_sync (tr);

  restored = es_model_copy (saved);
  tr2 = trainer_new (restored, be, opt, 0.02f, 1, 16);
  g_assert_true (es_trainer_set_state (tr2, steps, state, &err));
  for (int k = 5; k < 10; k++)
    {
      EsBatch b = batch_at (k, 16);
      g_assert_true (es_trainer_train_batch (tr2, &b, NULL, &err));
    }
  es_trainer_sync (tr2);
  g_assert_cmpint (es_trainer_step_count (tr2), ==, 10);
  g_assert_cmpmem (es_model_params_const (m), P * sizeof (float),
                   es_model_params_const (restored), P * sizeof (float));
  g_assert_cmpmem (es_model_buffers_const (m), es_model_n_buffers (m) * sizeof (float),
                   es_model_buffers_const (restored), es_model_n_buffers (m) * sizeof (float));
  g_assert_cmpfloat (es_trainer_current_lr (tr), ==, es_trainer_current_lr (tr2));

  /* a bad state is refused */
  g_assert_false (es_trainer_set_state (tr2, -1, state, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);

  es_trainer_free (tr);
  es_trainer_free (tr2);
  es_model_free (m);
  es_model_free (saved);
  es_model_free (restored);
  es_backend_free (be);
}

static void
test_resume_adam (void)
{
  check_resume (ES_OPT_ADAM);
}

static void
test_resume_momentum (void)
{
  check_resume (ES_OPT_MOMENTUM);
}

static void
test_resume_sgd (void)
{
  check_resume (ES_OPT_SGD);
}

/* es_trainer_reload_buffers puts the model's buffers on the device and nothing else. */
static void
test_reload_buffers (void)
{
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsModel *m = model_new ();
  EsTrainer *tr = trainer_new (m, be, ES_OPT_ADAM, 0.01f, 1, 16);
  int64_t Q = es_model_n_buffers (m);
  EsBatch b = batch_at (0, 16);
  EsError err = { 0 };
  g_autofree float *params = NULL;

  g_assert_cmpint (Q, >, 0);
  g_assert_true (es_trainer_train_batch (tr, &b, NULL, &err));
  es_trainer_sync (tr);
  params = g_memdup2 (es_model_params_const (m), es_model_n_params (m) * sizeof (float));
  for (int64_t i = 0; i < Q; i++)
    es_model_buffers (m)[i] = (float) i;
  es_model_params (m)[0] += 1.0f;   /* not to be uploaded */
  es_trainer_reload_buffers (tr);
  es_trainer_sync (tr);
  for (int64_t i = 0; i < Q; i++)
    g_assert_cmpfloat (es_model_buffers_const (m)[i], ==, (float) i);
  g_assert_cmpmem (params, es_model_n_params (m) * sizeof (float),
                   es_model_params_const (m), es_model_n_params (m) * sizeof (float));

  es_trainer_free (tr);
  es_model_free (m);
  es_backend_free (be);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  etu_blobs (xs, ys, N_ROWS, 3);
  g_test_add_func ("/engine/grad-reduce/buckets", test_buckets);
  g_test_add_func ("/engine/grad-reduce/finish-applies", test_finish_applies);
  g_test_add_func ("/engine/grad-reduce/resume-adam", test_resume_adam);
  g_test_add_func ("/engine/grad-reduce/resume-momentum", test_resume_momentum);
  g_test_add_func ("/engine/grad-reduce/resume-sgd", test_resume_sgd);
  g_test_add_func ("/engine/grad-reduce/reload-buffers", test_reload_buffers);
  return g_test_run ();
}
