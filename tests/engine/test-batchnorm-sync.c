/* test-batchnorm-sync.c: synchronized BatchNorm (es_trainer_set_stat_reduce) and the
 * agreement on a bad loss under data parallelism (es-train.h), with the processes of a
 * job simulated by threads of this one: each "rank" has its own backend, model and
 * trainer, and the hooks meet in a fake allreduce (every rank's values summed in rank
 * order, so the result is the same on every rank, as MPI's is).
 *
 * What is checked: two ranks with half a batch each (even, uneven, or one holding a
 * padding row that counts for nothing) give the loss, the reduced gradients, and after
 * a few steps the weights and running statistics of one trainer with the whole batch,
 * within fp32 summation tolerance; without the hook they do not (per-rank statistics);
 * the four split BatchNorm ops equal the fused ones; a loss that turns NaN on one rank
 * fails the same step on both, the parameters untouched, and says whose it was.
 *
 * Built three times: on the CPU backend; on the CUDA backend's CPU emulation
 * (TEST_CUDA_EMU), where the op checks and one-rank runs go through the CUDA kernels
 * (the emulation is not meant for several threads, so the two-rank runs stay on the
 * CPU); and on the real CUDA backend (TEST_CUDA, for a GPU machine: it skips without a
 * device).
 *
 * Dimension key: B = rows, CH = BatchNorm channels, SP = values per channel and row,
 * P = parameters. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "es-backend.h"
#include "es-train.h"
#if defined TEST_CUDA_EMU && !defined TEST_CUDA
#define TEST_CUDA
#endif
#ifdef TEST_CUDA
#include "es-cuda.h"
#endif

#define N_ROWS 64
#define STEPS  5            /* optimizer steps each comparison runs */
#define D_IMG  (2 * 6 * 6)   /* conv inputs: 2 channels of 6 x 6 */

static float   xs[N_ROWS * D_IMG];   /* (N_ROWS, D_IMG); the dense model reads 2 floats per row */
static int32_t ys[N_ROWS];

static EsBackend *
backend_new (void)
{
  EsError err = { 0 };
  EsBackend *be;

#ifdef TEST_CUDA
  be = es_cuda_backend_new (0, NULL, &err);
#else
  be = es_cpu_backend_new (1, NULL, &err);
#endif
  g_assert_nonnull (be);
  return be;
}

/* The models, by kind: */
enum {
  DENSE,       /* Dense 8, BatchNorm, ReLU, Dense 3, Softmax on 2 inputs (SP = 1) */
  CONV,        /* Conv2D 4 (3 x 3, padding 1), BatchNorm (SP = 36), ReLU, Flatten, Dense 3 */
  DENSE_TANH,  /* DENSE with Tanh for ReLU: a NaN goes through it (ReLU makes it 0) */
};

static EsModel *
model_new (int kind)
{
  gboolean conv = kind == CONV;
  EsLayerSpec l[5];
  EsModel *m;

  if (conv)
    {
      EsShape in = { 3, { 2, 6, 6 } };

      l[0] = es_layer_spec_default (ES_LAYER_CONV2D);
      l[0].filters = 4;
      l[0].kernel = 3;
      l[0].padding = 1;
      l[1] = es_layer_spec_default (ES_LAYER_BATCHNORM);
      l[2] = es_layer_spec_default (ES_LAYER_RELU);
      l[3] = es_layer_spec_default (ES_LAYER_FLATTEN);
      l[4] = es_layer_spec_default (ES_LAYER_DENSE);
      l[4].units = 3;
      m = es_model_new (&in, l, 5, NULL);
    }
  else
    {
      EsShape in = { 1, { 2 } };

      l[0] = es_layer_spec_default (ES_LAYER_DENSE);
      l[0].units = 8;
      l[1] = es_layer_spec_default (ES_LAYER_BATCHNORM);
      l[2] = es_layer_spec_default (kind == DENSE_TANH ? ES_LAYER_TANH : ES_LAYER_RELU);
      l[3] = es_layer_spec_default (ES_LAYER_DENSE);
      l[3].units = 3;
      l[4] = es_layer_spec_default (ES_LAYER_SOFTMAX);
      m = es_model_new (&in, l, 5, NULL);
    }
  g_assert_nonnull (m);
  es_model_init (m, 11);
  return m;
}

static int64_t
row_floats (int kind)
{
  return kind == CONV ? D_IMG : 2;
}

/* Rows first .. first + B - 1 of step k's window of `window` rows. */
static EsBatch
batch_of (int kind, int k, int window, int first, int B, float *xbuf)
{
  int r0 = (k * window) % (N_ROWS - window + 1) + first;
  int64_t F = row_floats (kind);

  /* the dense model's rows are the first 2 floats of each image */
  for (int r = 0; r < B; r++)
    memcpy (xbuf + r * F, xs + (int64_t) (r0 + r) * D_IMG, (size_t) F * sizeof (float));
  return (EsBatch) { .B = B, .x_f32 = xbuf, .labels = ys + r0 };
}

static EsTrainer *
trainer_new (EsModel *m, EsBackend *be, int batch)
{
  EsTrainConfig cfg;
  EsError err = { 0 };
  EsTrainer *tr;

  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_MOMENTUM;
  cfg.lr = 0.1f;
  tr = es_trainer_new (m, be, &cfg, batch, &err);
  g_assert_nonnull (tr);
  return tr;
}

/* |a - b| <= tol (1 + |a|) for each of n; returns the largest difference. */
static double
assert_close (const char *what, const float *a, const float *b, int64_t n, double tol)
{
  double worst = 0;

  for (int64_t i = 0; i < n; i++)
    {
      double d = fabs ((double) a[i] - (double) b[i]);

      worst = MAX (worst, d);
      if (!(d <= tol * (1 + fabs ((double) a[i]))))
        g_error ("%s[%" G_GINT64_FORMAT "]: %.9g and %.9g differ by %.3g, above %.3g", what,
                 i, a[i], b[i], d, tol * (1 + fabs ((double) a[i])));
    }
  return worst;
}

#ifndef TEST_CUDA

/* ------------------------------------------------------------------------------ */
/* a fake allreduce between threads */

#define MAX_RANKS 2
#define MAX_VALUES 4096

typedef struct {
  GMutex  lock;
  GCond   cond;
  int     ranks, arrived, len;
  guint64 generation;
  double  slot[MAX_RANKS][MAX_VALUES];
  double  result[MAX_VALUES];
} FakeComm;

/* Sum v (n) over the ranks in place, in rank order; blocks until every rank called. */
static void
comm_allreduce (FakeComm *c, int rank, double *v, int n)
{
  guint64 gen;

  g_assert_cmpint (n, <=, MAX_VALUES);
  g_mutex_lock (&c->lock);
  gen = c->generation;
  if (c->arrived == 0)
    c->len = n;
  g_assert_cmpint (c->len, ==, n);   /* every rank reduces the same thing */
  memcpy (c->slot[rank], v, (size_t) n * sizeof (double));
  if (++c->arrived == c->ranks)
    {
      for (int i = 0; i < n; i++)
        {
          double s = 0;

          for (int r = 0; r < c->ranks; r++)
            s += c->slot[r][i];
          c->result[i] = s;
        }
      c->arrived = 0;
      c->generation++;
      g_cond_broadcast (&c->cond);
    }
  else
    while (gen == c->generation)
      g_cond_wait (&c->cond, &c->lock);
  memcpy (v, c->result, (size_t) n * sizeof (double));
  g_mutex_unlock (&c->lock);
}

/* One rank of the simulated job. */
typedef struct {
  FakeComm  *comm;
  int        rank;
  int        kind;                 /* of model */
  gboolean   sync, padding;
  int        first, rows, window;  /* this rank's rows of each step's window */
  int        steps;
  int        nan_step;             /* 1-based step whose first input is NaN here (0: none) */
  double     weight;               /* share of the step's rows: rows / window (0 padding) */
  EsBackend *be;
  EsModel   *model;
  EsTrainer *tr;
  /* results */
  double     loss[8];              /* per step, this rank's loss sum */
  float     *grads1;               /* (P) the reduced gradients of step 1 */
  gboolean   failed;
  int        failed_step;
  gboolean   own;
  char       message[256];
  float     *params_before;        /* (P) before the failing step */
} Rank;

static void
on_stat (void *user, double *v, int n)
{
  Rank *r = user;

  if (r->padding)
    memset (v, 0, (size_t) n * sizeof (double));
  comm_allreduce (r->comm, r->rank, v, n);
}

/* The rows-weighted average of the ranks' gradients, as espalier-distributed.c makes
 * it (there in float; in double here, which only tightens the comparison). */
static bool
on_finish (void *user, EsBackend *be, float *grads, int64_t n, G_GNUC_UNUSED int64_t rows,
           G_GNUC_UNUSED EsError *err)
{
  Rank *r = user;
  g_autofree float *h = g_new (float, n);
  g_autofree double *v = g_new (double, n);

  g_assert_cmpint (n, <=, MAX_VALUES);
  be->iface->download (be, h, grads, (size_t) n * sizeof (float));
  for (int64_t i = 0; i < n; i++)
    v[i] = (double) h[i] * r->weight;
  comm_allreduce (r->comm, r->rank, v, (int) n);
  for (int64_t i = 0; i < n; i++)
    h[i] = (float) v[i];
  if (r->grads1 == NULL)
    r->grads1 = g_memdup2 (h, (gsize) n * sizeof (float));
  be->iface->upload (be, grads, h, (size_t) n * sizeof (float));
  return true;
}

static gpointer
rank_run (gpointer data)
{
  Rank *r = data;
  int64_t P;
  g_autofree float *xbuf = g_new (float, (gsize) r->window * D_IMG);
  EsError err = { 0 };

  r->be = backend_new ();
  r->model = model_new (r->kind);
  r->tr = trainer_new (r->model, r->be, r->padding ? 1 : r->rows);
  P = es_model_n_params (r->model);
  es_trainer_set_grad_reduce (r->tr, NULL, on_finish, r);
  if (r->sync)
    g_assert_true (es_trainer_set_stat_reduce (r->tr, on_stat, r, &err));
  for (int k = 0; k < r->steps; k++)
    {
      /* a padding rank trains the window's first row, which counts for nothing */
      EsBatch b = r->padding ? batch_of (r->kind, k, r->window, 0, 1, xbuf)
                             : batch_of (r->kind, k, r->window, r->first, r->rows, xbuf);
      EsStepStats st = { 0 };

      if (k + 1 == r->nan_step)
        {
          xbuf[0] = NAN;
          es_trainer_sync (r->tr);
          r->params_before = g_memdup2 (es_model_params_const (r->model),
                                        (gsize) P * sizeof (float));
        }
      if (!es_trainer_train_batch (r->tr, &b, &st, &err))
        {
          r->failed = TRUE;
          r->failed_step = k + 1;
          r->own = es_trainer_numeric_was_own (r->tr);
          g_strlcpy (r->message, err.message, sizeof r->message);
          g_assert_cmpint (err.code, ==, ES_ERR_NUMERIC);
          break;
        }
      r->loss[k] = st.loss_sum;
    }
  es_trainer_sync (r->tr);
  return NULL;
}

static void
rank_clear (Rank *r)
{
  es_trainer_free (r->tr);
  es_model_free (r->model);
  es_backend_free (r->be);
  g_free (r->grads1);
  g_free (r->params_before);
}

/* Run ranks (n) to their end on threads of their own. */
static void
job_run (Rank *ranks, int n)
{
  static FakeComm comm;
  GThread *th[MAX_RANKS];

  g_mutex_init (&comm.lock);
  g_cond_init (&comm.cond);
  comm.ranks = n;
  comm.arrived = 0;
  for (int i = 0; i < n; i++)
    {
      ranks[i].comm = &comm;
      ranks[i].rank = i;
      th[i] = g_thread_new ("rank", rank_run, &ranks[i]);
    }
  for (int i = 0; i < n; i++)
    g_thread_join (th[i]);
  g_mutex_clear (&comm.lock);
  g_cond_clear (&comm.cond);
}

/* Ranks split [0, window) of each step's window as cut says: {rows of rank 0}, the
 * rest to rank 1 (0: rank 1 holds a padding row). The tolerance: every sum is taken
 * in another order on one rank and on two (float gradients, double statistics), a
 * relative error of a few float ulp (~1e-7) per step; momentum SGD at lr 0.1 over 5
 * steps carries it along without growth beyond that order, so 2e-5 (1 + |x|) leaves a
 * margin of ten, far below the 1e-2 that per-rank statistics move the weights by
 * (checked below). */
static void
check_split (int kind, int window, int rows0, gboolean padding)
{
  Rank one = { .kind = kind, .sync = TRUE, .first = 0, .window = window,
               .rows = padding ? rows0 : window, .steps = STEPS, .weight = 1.0 };
  Rank two[2] = {
    { .kind = kind, .sync = TRUE, .first = 0, .rows = rows0, .window = window,
      .steps = STEPS },
    { .kind = kind, .sync = TRUE, .first = rows0, .rows = window - rows0, .window = window,
      .steps = STEPS, .padding = padding },
  };
  int64_t P, Q;
  double worst;

  /* the rows-weighted shares (a padding rank's is 0; rank 0 then holds every row) */
  two[0].weight = padding ? 1.0 : (double) rows0 / window;
  two[1].weight = padding ? 0.0 : (double) (window - rows0) / window;
  job_run (&one, 1);
  job_run (two, 2);
  P = es_model_n_params (one.model);
  Q = es_model_n_buffers (one.model);
  g_assert_false (one.failed || two[0].failed || two[1].failed);

  /* the forward: the loss of every row, normalized with the statistics of all */
  for (int k = 0; k < STEPS; k++)
    {
      double both = two[0].loss[k] + (padding ? 0 : two[1].loss[k]);

      g_assert_cmpfloat_with_epsilon (one.loss[k], both, 2e-5 * (1 + fabs (one.loss[k])));
    }
  /* the first step's reduced gradients, the same on both ranks */
  g_assert_cmpmem (two[0].grads1, P * sizeof (float), two[1].grads1, P * sizeof (float));
  worst = assert_close ("gradient", one.grads1, two[0].grads1, P, 2e-5);
  g_test_message ("largest gradient difference: %.3g", worst);
  /* after the steps: weights, and running statistics from the global ones */
  worst = assert_close ("weight", es_model_params_const (one.model),
                        es_model_params_const (two[0].model), P, 2e-5);
  g_test_message ("largest weight difference after %d steps: %.3g", STEPS, worst);
  assert_close ("running statistic", es_model_buffers_const (one.model),
                es_model_buffers_const (two[0].model), Q, 2e-5);
  assert_close ("running statistic on rank 1", es_model_buffers_const (one.model),
                es_model_buffers_const (two[1].model), Q, 2e-5);

  /* without the hook each rank normalizes with its own rows: other gradients */
  if (!padding)
    {
      Rank own[2];
      double most = 0;

      memcpy (own, two, sizeof own);
      for (int i = 0; i < 2; i++)
        {
          own[i].sync = FALSE;
          own[i].grads1 = NULL;
          own[i].params_before = NULL;
        }
      job_run (own, 2);
      for (int64_t i = 0; i < P; i++)
        most = MAX (most, fabs ((double) own[0].grads1[i] - (double) one.grads1[i]));
      g_test_message ("largest gradient difference with per-rank statistics: %.3g", most);
      g_assert_cmpfloat (most, >, 1e-3);
      rank_clear (&own[0]);
      rank_clear (&own[1]);
    }
  rank_clear (&one);
  rank_clear (&two[0]);
  rank_clear (&two[1]);
}

static void
test_dense_even (void)
{
  check_split (DENSE, 16, 8, FALSE);
}

static void
test_dense_uneven (void)
{
  check_split (DENSE, 16, 7, FALSE);
}

static void
test_dense_padding (void)
{
  check_split (DENSE, 12, 12, TRUE);
}

static void
test_conv_uneven (void)
{
  check_split (CONV, 10, 4, FALSE);
}

/* A NaN in rank 1's input at step 3: both ranks fail step 3 with ES_ERR_NUMERIC, rank
 * 1 knowing it was its own loss and rank 0 that it was another's; neither applied the
 * step (the parameters are those after step 2). */
static void
test_nan_agreement (void)
{
  /* without synchronized statistics: the NaN reaches rank 0 through the gradients
   * alone (through the statistics it would make rank 0's own loss NaN too) */
  Rank two[2] = {
    { .kind = DENSE_TANH, .first = 0, .rows = 8, .window = 16, .steps = STEPS,
      .weight = 0.5 },
    { .kind = DENSE_TANH, .first = 8, .rows = 8, .window = 16, .steps = STEPS,
      .weight = 0.5, .nan_step = 3 },
  };
  int64_t P;

  job_run (two, 2);
  P = es_model_n_params (two[0].model);
  for (int i = 0; i < 2; i++)
    g_test_message ("rank %d: %s", i, two[i].failed ? two[i].message : "(no failure)");
  for (int i = 0; i < 2; i++)
    {
      g_assert_true (two[i].failed);
      g_assert_cmpint (two[i].failed_step, ==, 3);
      g_assert_cmpint (es_trainer_step_count (two[i].tr), ==, 2);
    }
  g_assert_true (two[1].own);
  g_assert_false (two[0].own);
  g_assert_nonnull (strstr (two[1].message, "The loss became NaN at step 3"));
  g_assert_nonnull (strstr (two[0].message, "another process"));
  /* the parameters of step 2, the same on both ranks */
  g_assert_cmpmem (two[1].params_before, P * sizeof (float),
                   es_model_params_const (two[1].model), P * sizeof (float));
  g_assert_cmpmem (es_model_params_const (two[0].model), P * sizeof (float),
                   es_model_params_const (two[1].model), P * sizeof (float));
  /* rank 1 found where: the first layer's outputs (the NaN row went through it) */
  {
    EsNonfiniteKind what;

    g_assert_cmpint (es_trainer_find_nonfinite (two[1].tr, &what), ==, 0);
    g_assert_cmpint (what, ==, ES_NONFINITE_ACTIVATIONS);
  }
  rank_clear (&two[0]);
  rank_clear (&two[1]);
}

#endif /* !TEST_CUDA */

/* ------------------------------------------------------------------------------ */
/* one process: on this file's backend */

/* The four split ops, put together as the trainer puts them for one process, equal
 * the fused ones (CPU reference kernels, or the CUDA kernels on the emulation, against
 * the CPU reference), within fp32 tolerance. */
static void
test_split_ops (void)
{
  enum { B = 5, CH = 3, SP = 7, N = B * CH * SP };
  EsBackend *be = backend_new (), *ref = es_cpu_backend_new (1, NULL, NULL);
  const EsBackendIface *b = be->iface, *r = ref->iface;
  EsRng rng = { 3 };
  float inp[N], dout[N], gamma[CH], beta[CH];
  float out_f[N], out_s[N], dinp_f[N], dinp_s[N];
  float mean[CH], rstd[CH], rm[CH] = { 0 }, rv[CH] = { 1, 1, 1 };
  float dg_f[CH] = { 0 }, db_f[CH] = { 0 }, dg_s[CH] = { 0 }, db_s[CH] = { 0 };
  float part[3 * CH], coef[2 * CH], mean_s[CH], rstd_s[CH];
  float *d_inp, *d_dout, *d_gamma, *d_beta, *d_part, *d_out, *d_mean, *d_rstd, *d_dinp;
  float *d_dg, *d_db, *d_coef;
  EsError err = { 0 };

  g_assert_nonnull (b->batchnorm_stats);
  g_assert_nonnull (b->batchnorm_forward_apply);
  g_assert_nonnull (b->batchnorm_backward_stats);
  g_assert_nonnull (b->batchnorm_backward_apply);
  for (int i = 0; i < N; i++)
    {
      inp[i] = 3.0f + 2.0f * (float) es_rng_normal (&rng);   /* off-centre */
      dout[i] = (float) es_rng_normal (&rng);
    }
  for (int c = 0; c < CH; c++)
    {
      gamma[c] = 1.0f + 0.25f * c;
      beta[c] = 0.5f - 0.25f * c;
    }
  /* the fused reference */
  r->batchnorm_forward_train (ref, out_f, mean, rstd, rm, rv, inp, gamma, beta, 0.1f, 1e-5f,
                              B, CH, SP);
  r->batchnorm_backward (ref, dinp_f, dg_f, db_f, dout, inp, gamma, mean, rstd, B, CH, SP);

#define DEV(ptr, host, n)                                                  \
  do {                                                                     \
    (ptr) = b->alloc (be, ES_MEM_WORKSPACE, (n) * sizeof (float), &err);   \
    g_assert_nonnull (ptr);                                                \
    if ((host) != NULL)                                                    \
      b->upload (be, (ptr), (host), (n) * sizeof (float));                 \
  } while (0)
  DEV (d_inp, inp, N);
  DEV (d_dout, dout, N);
  DEV (d_gamma, gamma, CH);
  DEV (d_beta, beta, CH);
  DEV (d_part, (float *) NULL, 3 * CH);
  DEV (d_out, (float *) NULL, N);
  DEV (d_dinp, (float *) NULL, N);
  DEV (d_mean, (float *) NULL, CH);
  DEV (d_rstd, (float *) NULL, CH);
  DEV (d_coef, (float *) NULL, 2 * CH);
  DEV (d_dg, dg_s, CH);
  DEV (d_db, db_s, CH);
#undef DEV

  /* forward: the statistics, then normalized with them */
  b->batchnorm_stats (be, d_part, d_inp, B, CH, SP);
  b->download (be, part, d_part, sizeof part);
  for (int c = 0; c < CH; c++)
    {
      double mu = (double) part[c] + (double) part[CH + c];
      double var = (double) part[2 * CH + c] / (B * SP);

      g_assert_cmpfloat_with_epsilon (mu, mean[c], 1e-6 * (1 + fabs (mu)));
      g_assert_cmpfloat (fabs ((double) part[CH + c]), <=, 1e-6 * fabs (mu));
      mean_s[c] = (float) mu;
      rstd_s[c] = 1.0f / sqrtf ((float) var + 1e-5f);
      g_assert_cmpfloat_with_epsilon (rstd_s[c], rstd[c], 1e-6 * rstd[c]);
    }
  b->upload (be, d_mean, mean_s, sizeof mean_s);
  b->upload (be, d_rstd, rstd_s, sizeof rstd_s);
  b->batchnorm_forward_apply (be, d_out, d_inp, d_gamma, d_beta, d_mean, d_rstd, B, CH, SP);
  b->download (be, out_s, d_out, sizeof out_s);
  assert_close ("out", out_f, out_s, N, 1e-5);

  /* backward: the sums (gamma's and beta's gradients added), then dinp */
  b->batchnorm_backward_stats (be, d_part, d_dg, d_db, d_dout, d_inp, d_mean, d_rstd, B, CH,
                               SP);
  b->download (be, part, d_part, 2 * CH * sizeof (float));
  b->download (be, dg_s, d_dg, sizeof dg_s);
  b->download (be, db_s, d_db, sizeof db_s);
  assert_close ("dgamma", dg_f, dg_s, CH, 1e-5);
  assert_close ("dbeta", db_f, db_s, CH, 1e-5);
  assert_close ("sum dout", db_f, part, CH, 1e-5);
  assert_close ("sum dout xhat", dg_f, part + CH, CH, 1e-5);
  for (int c = 0; c < 2 * CH; c++)
    coef[c] = part[c] / (B * SP);
  b->upload (be, d_coef, coef, sizeof coef);
  b->batchnorm_backward_apply (be, d_dinp, d_dout, d_inp, d_gamma, d_mean, d_rstd, d_coef, B,
                               CH, SP);
  b->download (be, dinp_s, d_dinp, sizeof dinp_s);
  assert_close ("dinp", dinp_f, dinp_s, N, 1e-5);

  b->free (be, ES_MEM_WORKSPACE, d_inp, N * sizeof (float));
  b->free (be, ES_MEM_WORKSPACE, d_dout, N * sizeof (float));
  b->free (be, ES_MEM_WORKSPACE, d_gamma, CH * sizeof (float));
  b->free (be, ES_MEM_WORKSPACE, d_beta, CH * sizeof (float));
  b->free (be, ES_MEM_WORKSPACE, d_part, 3 * CH * sizeof (float));
  b->free (be, ES_MEM_WORKSPACE, d_out, N * sizeof (float));
  b->free (be, ES_MEM_WORKSPACE, d_dinp, N * sizeof (float));
  b->free (be, ES_MEM_WORKSPACE, d_mean, CH * sizeof (float));
  b->free (be, ES_MEM_WORKSPACE, d_rstd, CH * sizeof (float));
  b->free (be, ES_MEM_WORKSPACE, d_coef, 2 * CH * sizeof (float));
  b->free (be, ES_MEM_WORKSPACE, d_dg, CH * sizeof (float));
  b->free (be, ES_MEM_WORKSPACE, d_db, CH * sizeof (float));
  es_backend_free (be);
  es_backend_free (ref);
}

static void
on_stat_alone (void *user, G_GNUC_UNUSED double *v, G_GNUC_UNUSED int n)
{
  (*(int *) user)++;
}

/* One process with the hook (a sum over itself leaves v alone) trains as the fused
 * path does, within fp32 tolerance, and the hook is called twice per BatchNorm layer
 * and step (forward and backward; not backward of a first layer that needs no input
 * gradient: not the case here). */
static void
test_one_process (void)
{
  for (int kind = DENSE; kind <= CONV; kind++)
    {
      EsBackend *be = backend_new ();
      EsModel *a = model_new (kind), *b = model_new (kind);
      EsTrainer *ta = trainer_new (a, be, 16), *tb = trainer_new (b, be, 16);
      g_autofree float *xbuf = g_new (float, 16 * D_IMG);
      EsError err = { 0 };
      int calls = 0;

      g_assert_true (es_trainer_set_stat_reduce (ta, on_stat_alone, &calls, &err));
      for (int k = 0; k < STEPS; k++)
        {
          EsBatch bt = batch_of (kind, k, 16, 0, 16, xbuf);
          EsStepStats sa = { 0 }, sb = { 0 };

          g_assert_true (es_trainer_train_batch (ta, &bt, &sa, &err));
          g_assert_true (es_trainer_train_batch (tb, &bt, &sb, &err));
          g_assert_cmpfloat_with_epsilon (sa.loss_sum, sb.loss_sum, 1e-5 * (1 + sb.loss_sum));
        }
      g_assert_cmpint (calls, ==, 2 * STEPS);
      es_trainer_sync (ta);
      es_trainer_sync (tb);
      assert_close ("weight", es_model_params_const (b), es_model_params_const (a),
                    es_model_n_params (a), 1e-5);
      assert_close ("running statistic", es_model_buffers_const (b), es_model_buffers_const (a),
                    es_model_n_buffers (a), 1e-5);
      /* off again: the fused path */
      g_assert_true (es_trainer_set_stat_reduce (ta, NULL, NULL, &err));
      {
        EsBatch bt = batch_of (kind, 0, 16, 0, 16, xbuf);

        g_assert_true (es_trainer_train_batch (ta, &bt, NULL, &err));
        g_assert_cmpint (calls, ==, 2 * STEPS);
      }
      es_trainer_free (ta);
      es_trainer_free (tb);
      es_model_free (a);
      es_model_free (b);
      es_backend_free (be);
    }
}

#ifdef TEST_CUDA
static void
skip_with_reason (gconstpointer reason)
{
  g_test_skip (reason);
}
#endif

int
main (int argc, char **argv)
{
  EsRng rng = { 5 };

  g_test_init (&argc, &argv, NULL);
  for (int i = 0; i < N_ROWS; i++)
    {
      ys[i] = i % 3;
      for (int j = 0; j < D_IMG; j++)
        xs[i * D_IMG + j] = (float) es_rng_normal (&rng) + (j < 2 ? 1.5f * ys[i] : 0.0f)
                            + (j % 36 < 18 ? 0.5f * ys[i] : 0.0f);
    }
#ifdef TEST_CUDA
  {
    EsError err = { 0 };
    EsBackend *be = es_cuda_backend_new (0, NULL, &err);

    if (be == NULL)
      {
        /* no device here: one test that says so */
        g_test_add_data_func_full ("/engine/batchnorm-sync/cuda", g_strdup (err.message),
                                   skip_with_reason, g_free);
        return g_test_run ();
      }
    es_backend_free (be);
  }
#endif
  g_test_add_func ("/engine/batchnorm-sync/split-ops", test_split_ops);
  g_test_add_func ("/engine/batchnorm-sync/one-process", test_one_process);
#ifndef TEST_CUDA
  g_test_add_func ("/engine/batchnorm-sync/dense-even", test_dense_even);
  g_test_add_func ("/engine/batchnorm-sync/dense-uneven", test_dense_uneven);
  g_test_add_func ("/engine/batchnorm-sync/dense-padding", test_dense_padding);
  g_test_add_func ("/engine/batchnorm-sync/conv-uneven", test_conv_uneven);
  g_test_add_func ("/engine/batchnorm-sync/nan-agreement", test_nan_agreement);
#endif
  return g_test_run ();
}
