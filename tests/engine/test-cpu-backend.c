/* test-cpu-backend.c: every op of the CPU backend against the es-ref.h _f32 reference
 * (or, for ops the reference lacks, a plain loop here) on random inputs, with 1 and 2
 * threads and sizes on both sides of the single-thread / pooled threshold; then the
 * memory budget, the thread pool and FTZ on pool threads.
 *
 * Tolerances: GEMM-based ops (dense, conv) |got - want| <= 1e-5 (|want| + max |want|),
 * since BLAS sums in a different order than the double-accumulating reference;
 * sigmoid/tanh forward 4 ulp-ish (their own exp); softmax forward 1e-6 relative (its
 * own exp, and a float sum); Adam's parameter 1e-6 relative (its constants are
 * folded); everything else bit-exact. A failure prints the op, the index and both
 * values. */
#include <glib.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "es-backend.h"
#include "es-pool.h"
#include "es-ref.h"

static const int thread_counts[] = { 1, 2 };

/* ---- helpers -------------------------------------------------------------------- */

static float *
rand_floats (EsRng *rng, int64_t n, float lo, float hi)
{
  float *x = g_new (float, n > 0 ? n : 1);

  for (int64_t i = 0; i < n; i++)
    x[i] = lo + (hi - lo) * (float) es_rng_uniform (rng);
  return x;
}

static float *
zeros (int64_t n)
{
  return g_malloc0 ((gsize) (n > 0 ? n : 1) * sizeof (float));
}

static float *
dup_floats (const float *x, int64_t n)
{
  return g_memdup2 (x, (gsize) (n > 0 ? n : 1) * sizeof (float));
}

/* Backend memory holding a copy of host data. */
static float *
be_copy (EsBackend *be, const float *x, int64_t n)
{
  EsError err = { 0 };
  float *p = be->iface->alloc (be, ES_MEM_ACTIVATIONS, (size_t) n * sizeof (float), &err);

  g_assert_nonnull (p);
  be->iface->upload (be, p, x, (size_t) n * sizeof (float));
  return p;
}

static void
be_release (EsBackend *be, float *p, int64_t n)
{
  be->iface->free (be, ES_MEM_ACTIVATIONS, p, (size_t) n * sizeof (float));
}

/* Close in the GEMM sense: relative to the element and to the array's largest value. */
static void
check_close (const char *what, int nt, const float *got, const float *want, int64_t n,
             double rtol)
{
  double mag = 0.0;
  int bad = 0;

  for (int64_t i = 0; i < n; i++)
    mag = fmax (mag, fabs ((double) want[i]));
  for (int64_t i = 0; i < n; i++)
    {
      double d = fabs ((double) got[i] - (double) want[i]);
      if (!(d <= rtol * (fabs ((double) want[i]) + mag)) && !(isnan (got[i]) && isnan (want[i])))
        {
          if (bad++ < 5)
            g_test_message ("%s (%d threads): [%" G_GINT64_FORMAT "] got %.9g want %.9g",
                            what, nt, i, got[i], want[i]);
        }
    }
  if (bad > 0)
    {
      g_test_message ("%s (%d threads): %d of %" G_GINT64_FORMAT " values differ",
                      what, nt, bad, n);
      g_test_fail ();
    }
}

/* Element-wise relative (plus a tiny absolute floor for values near 0). */
static void
check_rel (const char *what, int nt, const float *got, const float *want, int64_t n,
           double rtol, double atol)
{
  int bad = 0;

  for (int64_t i = 0; i < n; i++)
    {
      double d = fabs ((double) got[i] - (double) want[i]);
      if (!(d <= rtol * fabs ((double) want[i]) + atol) && !(isnan (got[i]) && isnan (want[i])))
        if (bad++ < 5)
          g_test_message ("%s (%d threads): [%" G_GINT64_FORMAT "] got %.9g want %.9g",
                          what, nt, i, got[i], want[i]);
    }
  if (bad > 0)
    {
      g_test_message ("%s (%d threads): %d of %" G_GINT64_FORMAT " values differ",
                      what, nt, bad, n);
      g_test_fail ();
    }
}

static void
check_exact (const char *what, int nt, const float *got, const float *want, int64_t n)
{
  int bad = 0;

  for (int64_t i = 0; i < n; i++)
    if (!(got[i] == want[i]) && !(isnan (got[i]) && isnan (want[i])))
      if (bad++ < 5)
        g_test_message ("%s (%d threads): [%" G_GINT64_FORMAT "] got %.9g want %.9g",
                        what, nt, i, got[i], want[i]);
  if (bad > 0)
    {
      g_test_message ("%s (%d threads): %d of %" G_GINT64_FORMAT " values differ",
                      what, nt, bad, n);
      g_test_fail ();
    }
}

static void
check_exact_bytes (const char *what, int nt, const void *got, const void *want, size_t n,
                   size_t elem)
{
  for (size_t i = 0; i < n; i++)
    if (memcmp ((const char *) got + i * elem, (const char *) want + i * elem, elem) != 0)
      {
        g_test_message ("%s (%d threads): element %zu differs", what, nt, i);
        g_test_fail ();
        return;
      }
}

static EsBackend *
new_backend (int nt, EsBudget *budget)
{
  EsError err = { 0 };
  EsBackend *be = es_cpu_backend_new (nt, budget, &err);

  g_assert_nonnull (be);
  g_assert_cmpint (be->n_threads, ==, nt);
  return be;
}

/* ---- dense ------------------------------------------------------------------------ */

typedef struct { int B, IN, OUT; } DenseShape;

static const DenseShape dense_shapes[] = {
  { 3, 5, 4 },        /* tiny: caller only */
  { 32, 784, 128 },   /* the reference MLP, layer 1: split by OUT */
  { 32, 128, 10 },    /* layer 2 at B=32: caller only */
  { 128, 128, 10 },   /* layer 2 at B=128: caller only too (under 2 x 256k) */
  { 512, 128, 10 },   /* narrow OUT: forward split by rows */
  { 256, 8, 300 },    /* narrow IN */
  { 7, 301, 45 },     /* odd sizes */
  { 33, 517, 67 },    /* odd sizes, split */
  { 1, 784, 128 },    /* batch 1: the single-row dot-product kernel */
  { 5, 33, 70 },      /* a 4-row tile, then one row */
};

static void
test_dense (void)
{
  for (size_t t = 0; t < G_N_ELEMENTS (thread_counts); t++)
    {
      const int nt = thread_counts[t];
      EsBackend *be = new_backend (nt, NULL);

      for (size_t s = 0; s < G_N_ELEMENTS (dense_shapes); s++)
        {
          const int B = dense_shapes[s].B, IN = dense_shapes[s].IN, OUT = dense_shapes[s].OUT;
          EsRng rng = { 1000 + s };
          float *inp = rand_floats (&rng, (int64_t) B * IN, -1, 1);
          float *w = rand_floats (&rng, (int64_t) OUT * IN, -0.5f, 0.5f);
          float *b = rand_floats (&rng, OUT, -1, 1);
          float *dout = rand_floats (&rng, (int64_t) B * OUT, -1, 1);
          float *dw0 = rand_floats (&rng, (int64_t) OUT * IN, -1, 1);   /* accumulated onto */
          float *db0 = rand_floats (&rng, OUT, -1, 1);
          float *want = g_new (float, (int64_t) B * OUT);
          float *want_dinp = g_new (float, (int64_t) B * IN);
          float *want_dw = dup_floats (dw0, (int64_t) OUT * IN);
          float *want_db = dup_floats (db0, OUT);
          float *x = be_copy (be, inp, (int64_t) B * IN);
          float *wd = be_copy (be, w, (int64_t) OUT * IN);
          float *bd = be_copy (be, b, OUT);
          float *g = be_copy (be, dout, (int64_t) B * OUT);
          float *out = be_copy (be, want, (int64_t) B * OUT);
          float *dinp = be_copy (be, want_dinp, (int64_t) B * IN);
          float *dw = be_copy (be, dw0, (int64_t) OUT * IN);
          float *db = be_copy (be, db0, OUT);
          char what[96];

          g_snprintf (what, sizeof what, "dense_forward %dx%dx%d", B, IN, OUT);
          es_ref_dense_forward_f32 (want, inp, w, b, B, IN, OUT);
          be->iface->dense_forward (be, out, x, wd, bd, B, IN, OUT);
          check_close (what, nt, out, want, (int64_t) B * OUT, 1e-5);

          g_snprintf (what, sizeof what, "dense_forward no bias %dx%dx%d", B, IN, OUT);
          es_ref_dense_forward_f32 (want, inp, w, NULL, B, IN, OUT);
          be->iface->dense_forward (be, out, x, wd, NULL, B, IN, OUT);
          check_close (what, nt, out, want, (int64_t) B * OUT, 1e-5);

          /* Twice, so the accumulation into dw and db is checked too. */
          for (int rep = 0; rep < 2; rep++)
            {
              es_ref_dense_backward_f32 (want_dinp, want_dw, want_db, dout, inp, w, B, IN, OUT);
              be->iface->dense_backward (be, dinp, dw, db, g, x, wd, B, IN, OUT);
            }
          g_snprintf (what, sizeof what, "dense_backward dinp %dx%dx%d", B, IN, OUT);
          check_close (what, nt, dinp, want_dinp, (int64_t) B * IN, 1e-5);
          g_snprintf (what, sizeof what, "dense_backward dw %dx%dx%d", B, IN, OUT);
          check_close (what, nt, dw, want_dw, (int64_t) OUT * IN, 1e-5);
          g_snprintf (what, sizeof what, "dense_backward db %dx%dx%d", B, IN, OUT);
          check_close (what, nt, db, want_db, OUT, 1e-5);

          /* dinp NULL (first layer) and db NULL (no bias) are accepted. */
          es_ref_dense_backward_f32 (NULL, want_dw, NULL, dout, inp, w, B, IN, OUT);
          be->iface->dense_backward (be, NULL, dw, NULL, g, x, wd, B, IN, OUT);
          g_snprintf (what, sizeof what, "dense_backward NULL dinp, dw %dx%dx%d", B, IN, OUT);
          check_close (what, nt, dw, want_dw, (int64_t) OUT * IN, 1e-5);
          g_snprintf (what, sizeof what, "dense_backward NULL db %dx%dx%d", B, IN, OUT);
          check_close (what, nt, db, want_db, OUT, 1e-5);

          be_release (be, x, (int64_t) B * IN);
          be_release (be, wd, (int64_t) OUT * IN);
          be_release (be, bd, OUT);
          be_release (be, g, (int64_t) B * OUT);
          be_release (be, out, (int64_t) B * OUT);
          be_release (be, dinp, (int64_t) B * IN);
          be_release (be, dw, (int64_t) OUT * IN);
          be_release (be, db, OUT);
          g_free (inp); g_free (w); g_free (b); g_free (dout); g_free (dw0); g_free (db0);
          g_free (want); g_free (want_dinp); g_free (want_dw); g_free (want_db);
        }
      es_backend_free (be);
    }
}

/* ---- dense + activation (inference) ----------------------------------------------- */

/* dense_act_forward against the reference dense and activation in turn. From 96 rows
 * and 48 outputs (AVX-512) it is the packed product: panels of 64 columns and a last
 * one of 1-4 vectors (the 6x4, 8x3, 12x2 and 16x1 tiles), columns masked within a
 * panel, IN not a multiple of 16 (the packing's tail), rows cut across threads with
 * a tail tile. Below, the dot-product tiles with the activation after them. */
static const DenseShape dense_act_shapes[] = {
  { 1, 784, 128 },     /* batch 1 */
  { 5, 33, 70 },       /* below the packed path */
  { 130, 784, 10 },    /* too few outputs for it */
  { 96, 784, 128 },    /* the reference MLP's layer 1, from the first packed size */
  { 1000, 784, 128 },  /* and larger, split by rows */
  { 300, 100, 130 },   /* panels 64, 64 and a 16x1 tail of 2 columns */
  { 97, 5, 112 },      /* 64 + 48: the 8x3 tile; IN under one vector */
  { 120, 300, 96 },    /* 64 + 32: the 12x2 tile */
  { 211, 37, 48 },     /* one 8x3 panel */
  { 150, 17, 50 },     /* one 6x4 panel of 50 columns */
};

/* act(pre) within the GEMM tolerance of pre: every activation here moves a value by at
 * most as much as its input moved, so |got - want| <= rtol (|pre| + max |pre|). */
static void
check_act_close (const char *what, int nt, const float *got, const float *want,
                 const float *pre, int64_t n, double rtol)
{
  double mag = 0.0;
  int bad = 0;

  for (int64_t i = 0; i < n; i++)
    mag = fmax (mag, fabs ((double) pre[i]));
  for (int64_t i = 0; i < n; i++)
    {
      double d = fabs ((double) got[i] - (double) want[i]);
      if (!(got[i] == want[i] || d <= rtol * (fabs ((double) pre[i]) + mag))
          && !(isnan (got[i]) && isnan (want[i])))
        if (bad++ < 5)
          g_test_message ("%s (%d threads): [%" G_GINT64_FORMAT "] got %.9g want %.9g",
                          what, nt, i, got[i], want[i]);
    }
  if (bad > 0)
    {
      g_test_message ("%s (%d threads): %d of %" G_GINT64_FORMAT " values differ",
                      what, nt, bad, n);
      g_test_fail ();
    }
}

static void
test_dense_act (void)
{
  const EsOp acts[] = { ES_OP_DENSE, ES_OP_RELU, ES_OP_LEAKY_RELU, ES_OP_SIGMOID, ES_OP_TANH };
  const char *names[] = { "none", "relu", "leaky_relu", "sigmoid", "tanh" };
  const float alpha = 0.1f;

  for (size_t t = 0; t < G_N_ELEMENTS (thread_counts); t++)
    {
      const int nt = thread_counts[t];
      EsBackend *be = new_backend (nt, NULL);

      g_assert_nonnull (be->iface->dense_act_forward);
      for (size_t s = 0; s < G_N_ELEMENTS (dense_act_shapes); s++)
        {
          const int B = dense_act_shapes[s].B, IN = dense_act_shapes[s].IN;
          const int OUT = dense_act_shapes[s].OUT;
          const int64_t N = (int64_t) B * OUT;
          /* Under memcheck (50 times slower) the largest product checks one activation
           * with bias: its packing and row split are the same for all of them, and the
           * full set took eight minutes there. */
          const gboolean light = g_getenv ("ESPALIER_UNDER_VALGRIND") != NULL
                                 && (int64_t) B * IN * OUT > 20000000;
          EsRng rng = { 7000 + s };
          float *inp = rand_floats (&rng, (int64_t) B * IN, -1, 1);
          float *w = rand_floats (&rng, (int64_t) OUT * IN, -0.5f, 0.5f);
          float *b = rand_floats (&rng, OUT, -1, 1);
          float *pre = zeros (N), *want = zeros (N);
          float *x, *wd, *bd, *out;

          if (B > 1)
            inp[(int64_t) (B - 1) * IN] = NAN;  /* a row of NaN pre-activations */
          x = be_copy (be, inp, (int64_t) B * IN);
          wd = be_copy (be, w, (int64_t) OUT * IN);
          bd = be_copy (be, b, OUT);
          out = be_copy (be, want, N);
          for (int with_bias = 1; with_bias >= (light ? 1 : 0); with_bias--)
            {
              es_ref_dense_forward_f32 (pre, inp, w, with_bias ? b : NULL, B, IN, OUT);
              for (size_t a = 0; a < (light ? 2 : G_N_ELEMENTS (acts)); a++)
                {
                  char what[96];

                  switch (acts[a])
                    {
                    case ES_OP_RELU: es_ref_relu_forward_f32 (want, pre, N); break;
                    case ES_OP_LEAKY_RELU: es_ref_leaky_relu_forward_f32 (want, pre, alpha, N); break;
                    case ES_OP_SIGMOID: es_ref_sigmoid_forward_f32 (want, pre, N); break;
                    case ES_OP_TANH: es_ref_tanh_forward_f32 (want, pre, N); break;
                    default: memcpy (want, pre, (size_t) N * sizeof (float)); break;
                    }
                  be->iface->dense_act_forward (be, acts[a], out, x, wd, with_bias ? bd : NULL,
                                                alpha, B, IN, OUT);
                  g_snprintf (what, sizeof what, "dense_act_forward %s%s %dx%dx%d", names[a],
                              with_bias ? "" : " no bias", B, IN, OUT);
                  check_act_close (what, nt, out, want, pre, N, 1e-5);
                }
            }
          be_release (be, x, (int64_t) B * IN);
          be_release (be, wd, (int64_t) OUT * IN);
          be_release (be, bd, OUT);
          be_release (be, out, N);
          g_free (inp); g_free (w); g_free (b); g_free (pre); g_free (want);
        }
      es_backend_free (be);
    }
}

/* ---- conv2d ------------------------------------------------------------------------ */

typedef struct { int B, C, H, W, OC, K, S, P; } ConvShape;

static const ConvShape conv_shapes[] = {
  { 2, 3, 7, 7, 4, 3, 1, 1 },      /* small: caller only */
  { 16, 3, 32, 32, 8, 3, 2, 1 },   /* stride 2, padded: images split */
  { 8, 16, 16, 16, 32, 1, 1, 0 },  /* 1x1: no im2col */
  { 1, 8, 28, 28, 16, 5, 1, 2 },   /* one large image: im2col rows, then columns */
  { 5, 2, 9, 11, 6, 4, 3, 0 },     /* odd sizes */
  { 7, 8, 30, 33, 12, 4, 3, 1 },   /* odd sizes, uneven split, stride 3 */
  { 3, 4, 6, 5, 3, 3, 1, 2 },      /* padding wider than needed */
  { 4, 3, 40, 37, 8, 3, 1, 1 },    /* rows wider than 16 floats */
};

static void
test_conv2d (void)
{
  for (size_t t = 0; t < G_N_ELEMENTS (thread_counts); t++)
    {
      const int nt = thread_counts[t];
      EsBudget *budget = es_budget_new (0);
      EsBackend *be = new_backend (nt, budget);

      for (size_t s = 0; s < G_N_ELEMENTS (conv_shapes); s++)
        {
          const ConvShape *cs = &conv_shapes[s];
          const int B = cs->B, C = cs->C, H = cs->H, W = cs->W, OC = cs->OC, K = cs->K,
                    S = cs->S, P = cs->P;
          const int OH = ES_CONV_OUT (H, K, S, P), OW = ES_CONV_OUT (W, K, S, P);
          const int64_t n_in = (int64_t) B * C * H * W, n_out = (int64_t) B * OC * OH * OW;
          const int64_t n_w = (int64_t) OC * C * K * K;
          EsRng rng = { 2000 + s };
          float *inp = rand_floats (&rng, n_in, -1, 1);
          float *w = rand_floats (&rng, n_w, -0.5f, 0.5f);
          float *b = rand_floats (&rng, OC, -1, 1);
          float *dout = rand_floats (&rng, n_out, -1, 1);
          float *dw0 = rand_floats (&rng, n_w, -1, 1);
          float *db0 = rand_floats (&rng, OC, -1, 1);
          float *want = zeros (n_out);
          float *want_dinp = zeros (n_in);
          float *want_dw = dup_floats (dw0, n_w);
          float *want_db = dup_floats (db0, OC);
          float *out = zeros (n_out);
          float *dinp = zeros (n_in);
          float *dw = dup_floats (dw0, n_w);
          float *db = dup_floats (db0, OC);
          char what[128];

          g_snprintf (what, sizeof what, "conv2d_forward B%d C%d %dx%d OC%d K%d S%d P%d",
                      B, C, H, W, OC, K, S, P);
          es_ref_conv2d_forward_f32 (want, inp, w, b, B, C, H, W, OC, K, S, P);
          be->iface->conv2d_forward (be, out, inp, w, b, B, C, H, W, OC, K, S, P);
          check_close (what, nt, out, want, n_out, 1e-5);

          es_ref_conv2d_forward_f32 (want, inp, w, NULL, B, C, H, W, OC, K, S, P);
          be->iface->conv2d_forward (be, out, inp, w, NULL, B, C, H, W, OC, K, S, P);
          check_close (what, nt, out, want, n_out, 1e-5);

          for (int rep = 0; rep < 2; rep++)
            {
              es_ref_conv2d_backward_f32 (want_dinp, want_dw, want_db, dout, inp, w,
                                          B, C, H, W, OC, K, S, P);
              be->iface->conv2d_backward (be, dinp, dw, db, dout, inp, w,
                                          B, C, H, W, OC, K, S, P);
            }
          g_snprintf (what, sizeof what, "conv2d_backward dinp B%d C%d %dx%d OC%d K%d S%d P%d",
                      B, C, H, W, OC, K, S, P);
          check_close (what, nt, dinp, want_dinp, n_in, 1e-5);
          g_snprintf (what, sizeof what, "conv2d_backward dw B%d C%d %dx%d OC%d K%d S%d P%d",
                      B, C, H, W, OC, K, S, P);
          check_close (what, nt, dw, want_dw, n_w, 1e-5);
          g_snprintf (what, sizeof what, "conv2d_backward db B%d C%d %dx%d OC%d K%d S%d P%d",
                      B, C, H, W, OC, K, S, P);
          check_close (what, nt, db, want_db, OC, 1e-5);

          es_ref_conv2d_backward_f32 (NULL, want_dw, NULL, dout, inp, w, B, C, H, W, OC, K, S, P);
          be->iface->conv2d_backward (be, NULL, dw, NULL, dout, inp, w, B, C, H, W, OC, K, S, P);
          g_snprintf (what, sizeof what, "conv2d_backward NULL dinp, dw B%d C%d %dx%d OC%d K%d",
                      B, C, H, W, OC, K);
          check_close (what, nt, dw, want_dw, n_w, 1e-5);
          check_close (what, nt, db, want_db, OC, 1e-5);

          g_free (inp); g_free (w); g_free (b); g_free (dout); g_free (dw0); g_free (db0);
          g_free (want); g_free (want_dinp); g_free (want_dw); g_free (want_db);
          g_free (out); g_free (dinp); g_free (dw); g_free (db);
        }
      /* The im2col workspace is charged to the budget, and released with the backend. */
      g_assert_cmpuint (es_budget_used_kind (budget, ES_MEM_WORKSPACE), >, 0);
      es_backend_free (be);
      g_assert_cmpuint (es_budget_used (budget), ==, 0);
      es_budget_free (budget);
    }
}

/* Without room for a workspace the backend still computes, through the reference. */
static void
test_conv2d_no_workspace (void)
{
  EsBudget *budget = es_budget_new (1);
  EsBackend *be = new_backend (2, budget);
  const int B = 4, C = 3, H = 12, W = 12, OC = 8, K = 3, S = 1, P = 1;
  const int64_t n_in = (int64_t) B * C * H * W, n_out = (int64_t) B * OC * H * W;
  const int64_t n_w = (int64_t) OC * C * K * K;
  EsRng rng = { 77 };
  float *inp = rand_floats (&rng, n_in, -1, 1);
  float *w = rand_floats (&rng, n_w, -1, 1);
  float *dout = rand_floats (&rng, n_out, -1, 1);
  float *out = zeros (n_out), *want = zeros (n_out);
  float *dinp = zeros (n_in), *want_dinp = zeros (n_in);
  float *dw = zeros (n_w), *want_dw = zeros (n_w);

  be->iface->conv2d_forward (be, out, inp, w, NULL, B, C, H, W, OC, K, S, P);
  es_ref_conv2d_forward_f32 (want, inp, w, NULL, B, C, H, W, OC, K, S, P);
  check_exact ("conv2d_forward without workspace", 2, out, want, n_out);
  be->iface->conv2d_backward (be, dinp, dw, NULL, dout, inp, w, B, C, H, W, OC, K, S, P);
  es_ref_conv2d_backward_f32 (want_dinp, want_dw, NULL, dout, inp, w, B, C, H, W, OC, K, S, P);
  check_exact ("conv2d_backward without workspace", 2, dinp, want_dinp, n_in);
  check_exact ("conv2d_backward without workspace", 2, dw, want_dw, n_w);
  g_assert_cmpuint (es_budget_used (budget), ==, 0);

  es_backend_free (be);
  es_budget_free (budget);
  g_free (inp); g_free (w); g_free (dout); g_free (out); g_free (want);
  g_free (dinp); g_free (want_dinp); g_free (dw); g_free (want_dw);
}

/* ---- pools ------------------------------------------------------------------------- */

typedef struct { int B, C, H, W, K, S; } PoolShape;

static const PoolShape pool_shapes[] = {
  { 2, 3, 6, 6, 2, 2 },       /* small */
  { 16, 8, 32, 32, 2, 2 },    /* 131k inputs: planes split */
  { 4, 5, 9, 7, 3, 2 },       /* overlapping windows, ragged edge */
  { 64, 16, 12, 12, 3, 3 },
};

static void
test_pools (void)
{
  for (size_t t = 0; t < G_N_ELEMENTS (thread_counts); t++)
    {
      const int nt = thread_counts[t];
      EsBackend *be = new_backend (nt, NULL);

      for (size_t s = 0; s < G_N_ELEMENTS (pool_shapes); s++)
        {
          const PoolShape *ps = &pool_shapes[s];
          const int B = ps->B, C = ps->C, H = ps->H, W = ps->W, K = ps->K, S = ps->S;
          const int64_t n_in = (int64_t) B * C * H * W;
          const int64_t n_out = (int64_t) B * C * ES_CONV_OUT (H, K, S, 0) * ES_CONV_OUT (W, K, S, 0);
          EsRng rng = { 3000 + s };
          float *inp = rand_floats (&rng, n_in, -1, 1);
          float *dout = rand_floats (&rng, n_out, -1, 1);
          float *out = zeros (n_out), *want = zeros (n_out);
          int32_t *am = g_new0 (int32_t, n_out), *want_am = g_new0 (int32_t, n_out);
          float *dinp = zeros (n_in), *want_dinp = zeros (n_in);

          /* Ties: the first maximum must win. */
          for (int64_t i = 0; i < n_in; i += 7)
            inp[i] = 0.5f;

          es_ref_maxpool2d_forward_f32 (want, want_am, inp, B, C, H, W, K, S);
          be->iface->maxpool2d_forward (be, out, am, inp, B, C, H, W, K, S);
          check_exact ("maxpool2d_forward", nt, out, want, n_out);
          check_exact_bytes ("maxpool2d_forward argmax", nt, am, want_am, n_out, sizeof *am);
          es_ref_maxpool2d_backward_f32 (want_dinp, dout, want_am, B, C, H, W, K, S);
          be->iface->maxpool2d_backward (be, dinp, dout, am, B, C, H, W, K, S);
          check_exact ("maxpool2d_backward", nt, dinp, want_dinp, n_in);
          be->iface->maxpool2d_backward (be, NULL, dout, am, B, C, H, W, K, S);

          es_ref_avgpool2d_forward_f32 (want, inp, B, C, H, W, K, S);
          be->iface->avgpool2d_forward (be, out, inp, B, C, H, W, K, S);
          check_exact ("avgpool2d_forward", nt, out, want, n_out);
          es_ref_avgpool2d_backward_f32 (want_dinp, dout, B, C, H, W, K, S);
          be->iface->avgpool2d_backward (be, dinp, dout, B, C, H, W, K, S);
          check_exact ("avgpool2d_backward", nt, dinp, want_dinp, n_in);
          be->iface->avgpool2d_backward (be, NULL, dout, B, C, H, W, K, S);

          g_free (inp); g_free (dout); g_free (out); g_free (want); g_free (am);
          g_free (want_am); g_free (dinp); g_free (want_dinp);
        }
      es_backend_free (be);
    }
}

/* ---- activations ---------------------------------------------------------------------- */

static const int64_t elem_sizes[] = { 1, 37, 1000, 100003 };

static void
test_activations (void)
{
  const EsOp acts[] = { ES_OP_RELU, ES_OP_LEAKY_RELU, ES_OP_SIGMOID, ES_OP_TANH };
  const char *names[] = { "relu", "leaky_relu", "sigmoid", "tanh" };
  const float alpha = 0.01f;

  for (size_t t = 0; t < G_N_ELEMENTS (thread_counts); t++)
    {
      const int nt = thread_counts[t];
      EsBackend *be = new_backend (nt, NULL);

      for (size_t s = 0; s < G_N_ELEMENTS (elem_sizes); s++)
        {
          const int64_t N = elem_sizes[s];
          EsRng rng = { 4000 + s };
          float *inp = rand_floats (&rng, N, -8, 8);
          float *dout = rand_floats (&rng, N, -1, 1);
          float *out = zeros (N), *want = zeros (N);
          float *dinp = zeros (N), *want_dinp = zeros (N);
          char what[64];

          /* Edges: zeros, tiny, large, the tanh branch point, a NaN. */
          const float edges[] = { 0.0f, -0.0f, 1e-6f, -1e-6f, 0.625f, -0.625f, 20.0f,
                                  -20.0f, 100.0f, -100.0f, 88.0f, -90.0f, 1e-3f, NAN };
          for (size_t e = 0; e < G_N_ELEMENTS (edges) && (int64_t) e < N; e++)
            inp[e] = edges[e];

          for (size_t a = 0; a < G_N_ELEMENTS (acts); a++)
            {
              switch (acts[a])
                {
                case ES_OP_RELU:
                  es_ref_relu_forward_f32 (want, inp, N);
                  es_ref_relu_backward_f32 (want_dinp, dout, inp, N);
                  break;
                case ES_OP_LEAKY_RELU:
                  es_ref_leaky_relu_forward_f32 (want, inp, alpha, N);
                  es_ref_leaky_relu_backward_f32 (want_dinp, dout, inp, alpha, N);
                  break;
                case ES_OP_SIGMOID:
                  es_ref_sigmoid_forward_f32 (want, inp, N);
                  es_ref_sigmoid_backward_f32 (want_dinp, dout, want, N);
                  break;
                case ES_OP_TANH:
                  es_ref_tanh_forward_f32 (want, inp, N);
                  es_ref_tanh_backward_f32 (want_dinp, dout, want, N);
                  break;
                default:
                  g_assert_not_reached ();
                }
              be->iface->act_forward (be, acts[a], out, inp, alpha, N);
              g_snprintf (what, sizeof what, "%s_forward N=%" G_GINT64_FORMAT, names[a], N);
              if (acts[a] == ES_OP_SIGMOID || acts[a] == ES_OP_TANH)
                check_rel (what, nt, out, want, N, 5e-7, 1e-30);
              else
                check_exact (what, nt, out, want, N);

              /* backward from the reference's forward output, so it is exact too */
              be->iface->act_backward (be, acts[a], dinp, dout, inp, want, alpha, N);
              g_snprintf (what, sizeof what, "%s_backward N=%" G_GINT64_FORMAT, names[a], N);
              check_exact (what, nt, dinp, want_dinp, N);
              be->iface->act_backward (be, acts[a], NULL, dout, inp, want, alpha, N);

              /* in place */
              memcpy (out, inp, (size_t) N * sizeof (float));
              be->iface->act_forward (be, acts[a], out, out, alpha, N);
              if (acts[a] == ES_OP_RELU)
                check_exact ("relu_forward in place", nt, out, want, N);
            }
          g_free (inp); g_free (dout); g_free (out); g_free (want); g_free (dinp);
          g_free (want_dinp);
        }
      es_backend_free (be);
    }
}

/* ---- softmax, dropout, batchnorm, losses ---------------------------------------------- */

static void
test_softmax_dropout_batchnorm (void)
{
  for (size_t t = 0; t < G_N_ELEMENTS (thread_counts); t++)
    {
      const int nt = thread_counts[t];
      EsBackend *be = new_backend (nt, NULL);
      /* softmax: C <= 16 takes the AVX-512 kernel (16 rows at a time, so row tails;
       * 10000 x 10 on two threads), C = 20 the reference on slices */
      const int shapes[][2] = { { 3, 5 }, { 32, 10 }, { 4096, 20 }, { 1, 1 }, { 37, 16 },
                                { 10000, 10 } };

      for (size_t s = 0; s < G_N_ELEMENTS (shapes); s++)
        {
          const int B = shapes[s][0], C = shapes[s][1];
          const int64_t N = (int64_t) B * C;
          EsRng rng = { 5000 + s };
          float *inp = rand_floats (&rng, N, -5, 5);
          float *dout = rand_floats (&rng, N, -1, 1);
          float *out = zeros (N), *want = zeros (N);
          float *dinp = zeros (N), *want_dinp = zeros (N);
          uint8_t *mask = g_malloc0 ((gsize) (N > 0 ? N : 1)), *want_mask = g_malloc0 ((gsize) (N > 0 ? N : 1));

          /* inputs have NaN, inf and -inf in a few rows: a row of NaN, as the reference
           * gives (and 0 or ~1e-38 for -inf) */
          if (B > 8 && C > 3)
            {
              inp[1 * C + 2] = NAN;
              inp[3 * C + 0] = INFINITY;
              inp[5 * C + 1] = -INFINITY;
              for (int c = 0; c < C; c++)
                inp[7 * C + c] = -INFINITY;
            }
          es_ref_softmax_forward_f32 (want, inp, B, C);
          be->iface->softmax_forward (be, out, inp, B, C);
          /* exp_nonpos and a float sum: a few ulp from expf and a double sum */
          check_rel ("softmax_forward", nt, out, want, N, 1e-6, 1e-30);
          if (B > 8 && C > 3)
            for (int c = 0; c < C; c++)
              inp[1 * C + c] = inp[3 * C + c] = inp[5 * C + c] = inp[7 * C + c] = 0.5f;
          es_ref_softmax_backward_f32 (want_dinp, dout, want, B, C);
          be->iface->softmax_backward (be, dinp, dout, want, B, C);
          check_exact ("softmax_backward", nt, dinp, want_dinp, N);

          for (int r = 0; r < 3; r++)
            {
              const float rate = r == 0 ? 0.0f : r == 1 ? 0.3f : 1.0f;
              es_ref_dropout_forward_f32 (want, want_mask, inp, rate, 99 + s, N);
              be->iface->dropout_forward (be, out, mask, inp, rate, 99 + s, N);
              check_exact ("dropout_forward", nt, out, want, N);
              check_exact_bytes ("dropout_forward mask", nt, mask, want_mask, N, 1);
              es_ref_dropout_backward_f32 (want_dinp, dout, want_mask, rate, N);
              be->iface->dropout_backward (be, dinp, dout, mask, rate, N);
              check_exact ("dropout_backward", nt, dinp, want_dinp, N);
            }

          /* BatchNorm over (B, CH, SP): treat C as CH with SP = 1, and B/4 x 4 x C. */
          {
            const int CH = C, SP = 1;
            float *gamma = rand_floats (&rng, CH, 0.5f, 1.5f);
            float *beta = rand_floats (&rng, CH, -1, 1);
            float *mean = zeros (CH), *rstd = zeros (CH);
            float *wmean = zeros (CH), *wrstd = zeros (CH);
            float *rm = rand_floats (&rng, CH, -1, 1), *rv = rand_floats (&rng, CH, 0.5f, 2);
            float *wrm = dup_floats (rm, CH), *wrv = dup_floats (rv, CH);
            float *dg = zeros (CH), *dbt = zeros (CH);
            float *wdg = zeros (CH), *wdbt = zeros (CH);

            es_ref_batchnorm_forward_train_f32 (want, wmean, wrstd, wrm, wrv, inp, gamma, beta,
                                                0.1f, 1e-5f, B, CH, SP);
            be->iface->batchnorm_forward_train (be, out, mean, rstd, rm, rv, inp, gamma, beta,
                                                0.1f, 1e-5f, B, CH, SP);
            check_exact ("batchnorm_forward_train", nt, out, want, N);
            check_exact ("batchnorm_forward_train running_var", nt, rv, wrv, CH);
            es_ref_batchnorm_forward_infer_f32 (want, inp, gamma, beta, wrm, wrv, 1e-5f, B, CH, SP);
            be->iface->batchnorm_forward_infer (be, out, inp, gamma, beta, rm, rv, 1e-5f, B, CH, SP);
            check_exact ("batchnorm_forward_infer", nt, out, want, N);
            es_ref_batchnorm_backward_f32 (want_dinp, wdg, wdbt, dout, inp, gamma, wmean, wrstd,
                                           B, CH, SP);
            be->iface->batchnorm_backward (be, dinp, dg, dbt, dout, inp, gamma, mean, rstd,
                                           B, CH, SP);
            check_exact ("batchnorm_backward", nt, dinp, want_dinp, N);
            check_exact ("batchnorm_backward dgamma", nt, dg, wdg, CH);
            g_free (gamma); g_free (beta); g_free (mean); g_free (rstd); g_free (wmean);
            g_free (wrstd); g_free (rm); g_free (rv); g_free (wrm); g_free (wrv);
            g_free (dg); g_free (dbt); g_free (wdg); g_free (wdbt);
          }

          g_free (inp); g_free (dout); g_free (out); g_free (want); g_free (dinp);
          g_free (want_dinp); g_free (mask); g_free (want_mask);
        }
      es_backend_free (be);
    }
}

static void
test_losses (void)
{
  EsBackend *be = new_backend (2, NULL);
  const int B = 37, C = 10;
  const int64_t N = (int64_t) B * C;
  EsRng rng = { 6000 };
  float *logits = rand_floats (&rng, N, -6, 6);
  float *targets = rand_floats (&rng, N, 0, 1);
  int32_t *labels = g_new (int32_t, B);
  float *p = zeros (N), *wp = zeros (N);
  float *l = zeros (N), *wl = zeros (N);
  float *d = zeros (N), *wd = zeros (N);
  int32_t *pred = g_new0 (int32_t, B);
  float got, want;
  int correct = 0;

  for (int b = 0; b < B; b++)
    labels[b] = (int32_t) (es_rng_next (&rng) % C);

  want = es_ref_softmax_xent_forward_f32 (wp, wl, logits, labels, B, C);
  got = be->iface->softmax_xent_forward (be, p, l, logits, labels, B, C);
  g_assert_cmpfloat (got, ==, want);
  check_exact ("softmax_xent_forward probs", 2, p, wp, N);
  check_exact ("softmax_xent_forward losses", 2, l, wl, B);
  es_ref_softmax_xent_backward_f32 (wd, wp, labels, 1.0f / B, B, C);
  be->iface->softmax_xent_backward (be, d, p, labels, 1.0f / B, B, C);
  check_exact ("softmax_xent_backward", 2, d, wd, N);

  want = es_ref_bce_forward_f32 (wp, wl, logits, targets, N);
  got = be->iface->bce_forward (be, p, l, logits, targets, N);
  g_assert_cmpfloat (got, ==, want);
  check_exact ("bce_forward", 2, p, wp, N);
  es_ref_bce_backward_f32 (wd, wp, targets, 0.5f, N);
  be->iface->bce_backward (be, d, p, targets, 0.5f, N);
  check_exact ("bce_backward", 2, d, wd, N);

  want = es_ref_mse_forward_f32 (wl, logits, targets, B, C);
  got = be->iface->mse_forward (be, l, logits, targets, B, C);
  g_assert_cmpfloat (got, ==, want);
  check_exact ("mse_forward", 2, l, wl, B);
  es_ref_mse_backward_f32 (wd, logits, targets, 0.25f, B, C);
  be->iface->mse_backward (be, d, logits, targets, 0.25f, B, C);
  check_exact ("mse_backward", 2, d, wd, N);

  /* argmax: first max wins on ties */
  for (int b = 0; b < B; b++)
    {
      float *row = logits + (int64_t) b * C;
      int best = 0;
      if (b % 3 == 0)
        row[2] = row[7] = 100.0f;   /* a tie: 2 wins */
      for (int c = 1; c < C; c++)
        if (row[c] > row[best])
          best = c;
      if (b % 3 == 0)
        g_assert_cmpint (best, ==, 2);
      if (best == labels[b])
        correct++;
      labels[b] = b % 2 == 0 ? best : labels[b];
    }
  correct = 0;
  for (int b = 0; b < B; b++)
    {
      float *row = logits + (int64_t) b * C;
      int best = 0;
      for (int c = 1; c < C; c++)
        if (row[c] > row[best])
          best = c;
      correct += best == labels[b];
    }
  g_assert_cmpint (be->iface->argmax_correct (be, pred, logits, labels, B, C), ==, correct);
  g_assert_cmpint (be->iface->argmax_correct (be, NULL, logits, labels, B, C), ==, correct);
  for (int b = 0; b < B; b += 3)
    g_assert_cmpint (pred[b], ==, 2);

  es_backend_free (be);
  g_free (logits); g_free (targets); g_free (labels); g_free (p); g_free (wp);
  g_free (l); g_free (wl); g_free (d); g_free (wd); g_free (pred);
}

/* ---- data and optimizer ------------------------------------------------------------- */

static void
test_load_u8 (void)
{
  for (size_t t = 0; t < G_N_ELEMENTS (thread_counts); t++)
    {
      const int nt = thread_counts[t];
      EsBackend *be = new_backend (nt, NULL);
      const int64_t sizes[] = { 5, 784 * 32, 784 * 128 };

      for (size_t s = 0; s < G_N_ELEMENTS (sizes); s++)
        {
          const int64_t N = sizes[s];
          uint8_t *u = g_new (uint8_t, N);
          float *out = zeros (N), *want = zeros (N);
          const float scale = 1.0f / 255.0f, shift = -0.5f;

          for (int64_t i = 0; i < N; i++)
            u[i] = (uint8_t) (i * 7 + s);
          for (int64_t i = 0; i < N; i++)
            want[i] = (float) u[i] * scale + shift;
          be->iface->load_u8 (be, out, u, scale, shift, N);
          check_exact ("load_u8", nt, out, want, N);
          g_free (u); g_free (out); g_free (want);
        }
      es_backend_free (be);
    }
}

static void
test_optimizer (void)
{
  const int64_t sizes[] = { 3, 1000, 101770, 300001 };

  for (size_t t = 0; t < G_N_ELEMENTS (thread_counts); t++)
    {
      const int nt = thread_counts[t];
      EsBackend *be = new_backend (nt, NULL);

      for (size_t s = 0; s < G_N_ELEMENTS (sizes); s++)
        {
          const int64_t N = sizes[s];
          EsRng rng = { 7000 + s };
          float *p = rand_floats (&rng, N, -1, 1);
          float *g = rand_floats (&rng, N, -0.1f, 0.1f);
          float *m = rand_floats (&rng, N, -0.01f, 0.01f);
          float *v = rand_floats (&rng, N, 0, 1e-4f);
          float *wp = dup_floats (p, N), *wm = dup_floats (m, N), *wv = dup_floats (v, N);
          float *x = dup_floats (g, N), *wx = dup_floats (g, N);
          double ss = 0.0, got_ss;

          p[0] = wp[0] = 0.0f;   /* sign(0) = 0 */

          /* sum_squares, in double */
          for (int64_t i = 0; i < N; i++)
            ss += (double) g[i] * g[i];
          got_ss = be->iface->sum_squares (be, g, N);
          if (fabs (got_ss - ss) > 1e-12 * ss)
            {
              g_test_message ("sum_squares N=%" G_GINT64_FORMAT " (%d threads): got %.17g want %.17g",
                              N, nt, got_ss, ss);
              g_test_fail ();
            }

          /* scale */
          for (int64_t i = 0; i < N; i++)
            wx[i] *= 0.75f;
          be->iface->scale (be, x, 0.75f, N);
          check_exact ("scale", nt, x, wx, N);

          /* regularize */
          for (int64_t i = 0; i < N; i++)
            {
              const float sgn = wp[i] > 0.0f ? 1.0f : (wp[i] < 0.0f ? -1.0f : 0.0f);
              wx[i] += 1e-3f * sgn + 1e-2f * wp[i];
            }
          be->iface->regularize (be, x, p, 1e-3f, 1e-2f, N);
          check_exact ("regularize", nt, x, wx, N);

          /* sgd: plain, momentum, nesterov */
          for (int mode = 0; mode < 3; mode++)
            {
              const float lr = 0.05f, mu = mode == 0 ? 0.0f : 0.9f;
              for (int64_t i = 0; i < N; i++)
                {
                  if (mode == 0)
                    wp[i] -= lr * g[i];
                  else
                    {
                      const float vi = mu * wm[i] + g[i];
                      wm[i] = vi;
                      wp[i] -= lr * (mode == 2 ? g[i] + mu * vi : vi);
                    }
                }
              be->iface->sgd_step (be, p, mode == 0 ? NULL : m, g, lr, mu, mode == 2, N);
              check_exact ("sgd_step param", nt, p, wp, N);
              check_exact ("sgd_step velocity", nt, m, wm, N);
            }

          /* adam and adamw, two steps */
          for (int step = 1; step <= 4; step++)
            {
              const float lr = 1e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-7f;
              const float wd = step > 2 ? 0.01f : 0.0f;
              const float bc1 = 1.0f - powf (b1, (float) step);
              const float bc2 = 1.0f - powf (b2, (float) step);
              for (int64_t i = 0; i < N; i++)
                {
                  const float mi = b1 * wm[i] + (1.0f - b1) * g[i];
                  const float vi = b2 * wv[i] + (1.0f - b2) * (g[i] * g[i]);
                  wm[i] = mi;
                  wv[i] = vi;
                  wp[i] = wp[i] - lr * (mi / bc1 / (sqrtf (vi / bc2) + eps) + wd * wp[i]);
                }
              be->iface->adam_step (be, p, m, v, g, lr, b1, b2, eps, wd, bc1, bc2, N);
              /* the backend folds the bias corrections into constants: a few ulp of
               * the update (~lr) apart from the literal formula */
              check_rel ("adam_step param", nt, p, wp, N, 1e-6, 1e-8);
              memcpy (wp, p, (size_t) N * sizeof (float));
              check_exact ("adam_step m", nt, m, wm, N);
              check_exact ("adam_step v", nt, v, wv, N);
            }
          g_free (p); g_free (g); g_free (m); g_free (v); g_free (wp); g_free (wm);
          g_free (wv); g_free (x); g_free (wx);
        }
      es_backend_free (be);
    }
}

/* ---- memory ------------------------------------------------------------------------ */

static void
test_budget (void)
{
  EsBudget *budget = es_budget_new (1000);
  EsError err = { 0 };
  char buf[32];

  g_assert_cmpuint (es_budget_limit (budget), ==, 1000);
  g_assert_true (es_budget_charge (budget, ES_MEM_WEIGHTS, 600, &err));
  g_assert_true (es_budget_charge (budget, ES_MEM_GRADIENTS, 300, &err));
  g_assert_cmpint (err.code, ==, ES_OK);
  g_assert_false (es_budget_charge (budget, ES_MEM_ACTIVATIONS, 500, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_BUDGET);
  g_test_message ("budget message: %s", err.message);
  g_assert_nonnull (strstr (err.message, "activations"));
  g_assert_nonnull (strstr (err.message, "500 bytes"));
  g_assert_nonnull (strstr (err.message, "1.0 kB"));
  g_assert_cmpuint (es_budget_used (budget), ==, 900);
  g_assert_cmpuint (es_budget_used_kind (budget, ES_MEM_WEIGHTS), ==, 600);
  g_assert_cmpuint (es_budget_used_kind (budget, ES_MEM_GRADIENTS), ==, 300);
  g_assert_cmpuint (es_budget_used_kind (budget, ES_MEM_ACTIVATIONS), ==, 0);
  /* a request that would wrap around size_t fails too */
  g_assert_false (es_budget_charge (budget, ES_MEM_DATA, SIZE_MAX - 10, NULL));

  es_budget_release (budget, ES_MEM_WEIGHTS, 600);
  g_assert_cmpuint (es_budget_used (budget), ==, 300);
  g_assert_cmpuint (es_budget_peak (budget), ==, 900);
  g_assert_true (es_budget_charge (budget, ES_MEM_ACTIVATIONS, 500, NULL));
  g_assert_cmpuint (es_budget_peak (budget), ==, 900);
  es_budget_release (budget, ES_MEM_ACTIVATIONS, 500);
  es_budget_release (budget, ES_MEM_GRADIENTS, 300);
  g_assert_cmpuint (es_budget_used (budget), ==, 0);

  es_budget_set_limit (budget, 0);
  g_assert_true (es_budget_charge (budget, ES_MEM_DATA, (size_t) 1 << 40, NULL));
  g_assert_cmpuint (es_budget_peak (budget), ==, (size_t) 1 << 40);
  es_budget_release (budget, ES_MEM_DATA, (size_t) 1 << 40);
  es_budget_free (budget);

  /* a NULL budget accepts everything */
  g_assert_true (es_budget_charge (NULL, ES_MEM_DATA, SIZE_MAX, NULL));
  g_assert_cmpuint (es_budget_used (NULL), ==, 0);

  g_assert_cmpstr (es_format_bytes (buf, sizeof buf, 0), ==, "0 bytes");
  g_assert_cmpstr (es_format_bytes (buf, sizeof buf, 999), ==, "999 bytes");
  g_assert_cmpstr (es_format_bytes (buf, sizeof buf, 1500), ==, "1.5 kB");
  g_assert_cmpstr (es_format_bytes (buf, sizeof buf, 999999), ==, "1.0 MB");
  g_assert_cmpstr (es_format_bytes (buf, sizeof buf, 123456789), ==, "123.5 MB");
  g_assert_cmpstr (es_format_bytes (buf, sizeof buf, 4.2e9), ==, "4.2 GB");
  for (int k = 0; k < ES_MEM_N_KINDS; k++)
    g_assert_cmpstr (es_mem_kind_name ((EsMemKind) k), !=, "unknown");
}

static void
test_alloc (void)
{
  EsBudget *budget = es_budget_new (1 << 20);
  EsBackend *be = new_backend (2, budget);
  EsError err = { 0 };
  uint8_t *a, *b;

  g_assert_true (be->iface->supports_op (be, ES_OP_DENSE));
  for (int op = 0; op < ES_OP_N_OPS; op++)
    g_assert_true (be->iface->supports_op (be, (EsOp) op));
  g_assert_null (be->iface->synchronize);

  a = be->iface->alloc (be, ES_MEM_WEIGHTS, 1000, &err);
  g_assert_nonnull (a);
  g_assert_cmpuint ((uintptr_t) a % 64, ==, 0);
  for (int i = 0; i < 1000; i++)
    g_assert_cmpint (a[i], ==, 0);
  g_assert_cmpuint (es_budget_used_kind (budget, ES_MEM_WEIGHTS), ==, 1000);

  b = be->iface->alloc (be, ES_MEM_OPTIMIZER, 2 << 20, &err);
  g_assert_null (b);
  g_assert_cmpint (err.code, ==, ES_ERR_BUDGET);
  g_assert_nonnull (strstr (err.message, "optimizer state"));
  g_assert_nonnull (strstr (err.message, "2.1 MB"));
  g_assert_nonnull (strstr (err.message, "1.0 MB"));
  g_assert_cmpuint (es_budget_used (budget), ==, 1000);

  b = be->iface->alloc (be, ES_MEM_DATA, 0, &err);   /* zero bytes: a valid pointer */
  g_assert_nonnull (b);
  be->iface->zero (be, a, 1000);
  be->iface->free (be, ES_MEM_DATA, b, 0);
  be->iface->free (be, ES_MEM_WEIGHTS, a, 1000);
  be->iface->free (be, ES_MEM_WEIGHTS, NULL, 0);
  g_assert_cmpuint (es_budget_used (budget), ==, 0);
  g_assert_cmpuint (es_budget_peak (budget), ==, 1000);

  es_backend_free (be);
  es_budget_free (budget);
}

/* ---- pool ----------------------------------------------------------------------------- */

typedef struct {
  gint  *counts;      /* (n_threads) runs per index */
  gint   total;       /* calls in this dispatch */
  gint   bad;         /* calls with a wrong n */
  int    expect_n;
} PoolCount;

static void
count_fn (void *data, int i, int n)
{
  PoolCount *pc = data;

  if (n != pc->expect_n || i < 0 || i >= n)
    g_atomic_int_inc (&pc->bad);
  else
    g_atomic_int_inc (&pc->counts[i]);
  g_atomic_int_inc (&pc->total);
}

static void
test_pool (void)
{
  for (int nt = 1; nt <= 4; nt++)
    {
      EsError err = { 0 };
      EsPool *pool = es_pool_new (nt, &err);
      gint counts[4] = { 0 };
      PoolCount pc = { counts, 0, 0, nt };
      const int runs = 20000;

      g_assert_nonnull (pool);
      g_assert_cmpint (es_pool_n_threads (pool), ==, nt);
      for (int r = 0; r < runs; r++)
        {
          pc.total = 0;
          es_pool_run (pool, count_fn, &pc);
          /* returned only after every index ran exactly once */
          g_assert_cmpint (g_atomic_int_get (&pc.total), ==, nt);
        }
      g_assert_cmpint (pc.bad, ==, 0);
      for (int i = 0; i < nt; i++)
        g_assert_cmpint (counts[i], ==, runs);

      /* fewer active threads */
      for (int active = 1; active <= nt; active++)
        {
          memset (counts, 0, sizeof counts);
          pc.expect_n = active;
          for (int r = 0; r < 100; r++)
            {
              pc.total = 0;
              es_pool_run_n (pool, active, count_fn, &pc);
              g_assert_cmpint (pc.total, ==, active);
            }
          for (int i = 0; i < active; i++)
            g_assert_cmpint (counts[i], ==, 100);
        }

      /* more tasks than threads: still each index once */
      {
        gint many[ES_POOL_MAX_TASKS] = { 0 };
        PoolCount pm = { many, 0, 0, nt + 3 };

        for (int r = 0; r < 200; r++)
          {
            pm.total = 0;
            es_pool_run_n (pool, nt + 3, count_fn, &pm);
            g_assert_cmpint (pm.total, ==, nt + 3);
          }
        g_assert_cmpint (pm.bad, ==, 0);
        for (int i = 0; i < nt + 3; i++)
          g_assert_cmpint (many[i], ==, 200);
      }

      /* the sleeping path: no spinning, pauses between runs */
      es_pool_set_spin_us (pool, 0);
      memset (counts, 0, sizeof counts);
      pc.expect_n = nt;
      for (int r = 0; r < 50; r++)
        {
          pc.total = 0;
          es_pool_run (pool, count_fn, &pc);
          g_assert_cmpint (pc.total, ==, nt);
          if (r % 10 == 0)
            g_usleep (2000);
        }
      for (int i = 0; i < nt; i++)
        g_assert_cmpint (counts[i], ==, 50);
      es_pool_free (pool);
    }
  es_pool_free (NULL);
  g_assert_cmpint (es_pool_online_cores (), >=, 1);
}

typedef struct {
  EsPool *pool;
  gint    inner_calls;
  gint    inner_bad;
} Nested;

static void
nested_inner (void *data, int i, int n)
{
  Nested *ns = data;

  if (i < 0 || i >= n || n != 2)
    g_atomic_int_inc (&ns->inner_bad);
  g_atomic_int_inc (&ns->inner_calls);
}

static void
nested_outer (void *data, int i, int n)
{
  Nested *ns = data;

  es_pool_run (ns->pool, nested_inner, ns);   /* runs its tasks serially, no deadlock */
}

static void
test_pool_nested (void)
{
  Nested ns = { es_pool_new (2, NULL), 0, 0 };

  es_pool_run (ns.pool, nested_outer, &ns);
  g_assert_cmpint (ns.inner_calls, ==, 4);   /* 2 outer tasks x 2 inner */
  g_assert_cmpint (ns.inner_bad, ==, 0);
  es_pool_free (ns.pool);
}

static void
test_pool_chunk (void)
{
  const int64_t ns[] = { 0, 1, 15, 16, 17, 100, 1000, 101770 };
  const int64_t aligns[] = { 1, 16 };

  for (size_t a = 0; a < G_N_ELEMENTS (aligns); a++)
    for (size_t k = 0; k < G_N_ELEMENTS (ns); k++)
      for (int parts = 1; parts <= 5; parts++)
        {
          int64_t next = 0;
          for (int i = 0; i < parts; i++)
            {
              int64_t b, e;
              es_pool_chunk (ns[k], aligns[a], i, parts, &b, &e);
              g_assert_cmpint (b, ==, next);
              g_assert_cmpint (e, >=, b);
              if (e < ns[k])
                g_assert_cmpint (e % aligns[a], ==, 0);
              next = e;
            }
          g_assert_cmpint (next, ==, ns[k]);
        }
}

/* ---- FTZ / DAZ -------------------------------------------------------------------------- */

typedef struct {
  pthread_t     caller;
  volatile float a, b;
  gint          on_worker;     /* tasks that ran on a pool thread */
  gint          not_flushed;   /* of those, how many saw a denormal */
  gint          started;
} FtzData;

static void
ftz_fn (void *data, int i, int n)
{
  FtzData *fd = data;
  gint64 until = g_get_monotonic_time () + 200;
  float r;

  /* Keep the task busy a little so that the other thread claims the other one. */
  g_atomic_int_inc (&fd->started);
  while (g_atomic_int_get (&fd->started) < n && g_get_monotonic_time () < until)
    ;
  /* 1e-20 * 1e-20 = 1e-40, a denormal unless flushed to zero */
  r = fd->a * fd->b;
  if (!pthread_equal (pthread_self (), fd->caller))
    {
      g_atomic_int_inc (&fd->on_worker);
      if (r != 0.0f)
        g_atomic_int_inc (&fd->not_flushed);
    }
}

static void
test_ftz (void)
{
  EsPool *pool;
  FtzData fd = { pthread_self (), 1e-20f, 1e-20f, 0, 0, 0 };
  EsBackend *be;
  float x[16];

  /* Valgrind runs floating point without MXCSR's flush-to-zero and denormals-are-zero */
  if (g_getenv ("ESPALIER_UNDER_VALGRIND") != NULL)
    {
      g_test_skip ("Valgrind does not emulate flush-to-zero");
      return;
    }
  pool = es_pool_new (2, NULL);

  for (int k = 0; k < 1000 && g_atomic_int_get (&fd.on_worker) < 10; k++)
    {
      fd.started = 0;
      es_pool_run (pool, ftz_fn, &fd);
    }
  g_assert_cmpint (fd.on_worker, >=, 1);
  g_assert_cmpint (fd.not_flushed, ==, 0);
  es_pool_free (pool);

  /* through the backend: a product that would be denormal comes out 0 */
  be = new_backend (2, NULL);
  for (int i = 0; i < 16; i++)
    x[i] = 1e-30f;
  be->iface->scale (be, x, 1e-10f, 16);
  for (int i = 0; i < 16; i++)
    g_assert_cmpfloat (x[i], ==, 0.0f);
  es_backend_free (be);
}

/* The fast path is really the one taken where the CPU has it (a silent fallback to
 * CBLAS once cost 8x in batch-1 latency without failing any other test). */
static void
test_gemm_path (void)
{
  const char *env = g_getenv ("ESPALIER_GEMM");
  const char *path = es_cpu_backend_gemm_path ();

  g_test_message ("GEMM path: %s", path);
#if defined(__x86_64__) && defined(__GNUC__)
  if (env != NULL && g_str_equal (env, "blas"))
    g_assert_cmpstr (path, ==, "cblas");
  else if (__builtin_cpu_supports ("avx512f"))
    g_assert_cmpstr (path, ==, "avx512");
  else
    g_assert_cmpstr (path, ==, "cblas");
#else
  (void) env;
  g_assert_cmpstr (path, ==, "cblas");
#endif
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/engine/cpu/gemm-path", test_gemm_path);
  g_test_add_func ("/cpu-backend/budget", test_budget);
  g_test_add_func ("/cpu-backend/alloc", test_alloc);
  g_test_add_func ("/cpu-backend/pool", test_pool);
  g_test_add_func ("/cpu-backend/pool-nested", test_pool_nested);
  g_test_add_func ("/cpu-backend/pool-chunk", test_pool_chunk);
  g_test_add_func ("/cpu-backend/ftz", test_ftz);
  g_test_add_func ("/cpu-backend/dense", test_dense);
  g_test_add_func ("/cpu-backend/dense-act", test_dense_act);
  g_test_add_func ("/cpu-backend/conv2d", test_conv2d);
  g_test_add_func ("/cpu-backend/conv2d-no-workspace", test_conv2d_no_workspace);
  g_test_add_func ("/cpu-backend/pools", test_pools);
  g_test_add_func ("/cpu-backend/activations", test_activations);
  g_test_add_func ("/cpu-backend/softmax-dropout-batchnorm", test_softmax_dropout_batchnorm);
  g_test_add_func ("/cpu-backend/losses", test_losses);
  g_test_add_func ("/cpu-backend/load-u8", test_load_u8);
  g_test_add_func ("/cpu-backend/optimizer", test_optimizer);

  return g_test_run ();
}
