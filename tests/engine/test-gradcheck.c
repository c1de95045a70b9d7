/* test-gradcheck.c: checks the reference kernels of es-ref.h, the yardstick every fast
 * kernel is measured against, in three ways:
 *
 *   /engine/gradcheck/LAYER  every backward of the _f64 kernels against central finite
 *                            differences of its forward (eps 1e-6; an element passes when
 *                            |analytic - numeric| <= 1e-5 + 1e-3 |numeric|), on the scalar
 *                            objective L = sum(out * R) with a fixed random R, so dout = R
 *                            (the losses: L = the returned mean, scale = 1/count). It also
 *                            checks that parameter gradients accumulate (a second backward
 *                            doubles them), that dinp is overwritten (it is filled with NaN
 *                            first) and that dinp = NULL is accepted.
 *   /engine/ref/f32/LAYER    the _f32 kernels against the _f64 ones on the same inputs
 *                            (rounded to float first): forward within 1e-4 relative (+1e-6
 *                            absolute), backward within 1e-4 relative + 1e-5 of the largest
 *                            value of the tensor (a gradient is a sum that may cancel).
 *   /engine/ref/values/NAME  a few forwards against numbers worked out by hand.
 *
 * What it is not: a test of the fast kernels (test-cpu-backend does that) or a speed
 * test. Sizes are small so the whole file runs in well under a second.
 * A failure names the tensor, the flat index and both values (g_test_message). */
#include "es-ref.h"

#include <glib.h>
#include <math.h>
#include <string.h>

#define GC_EPS 1e-6
#define GC_ATOL 1e-5
#define GC_RTOL 1e-3
#define F32_RTOL 1e-4
#define F32_ATOL 1e-6
#define F32_GRAD_ATOL 1e-5 /* times the largest |value| of the tensor */
#define MAX_REPORTS 8      /* differing elements printed per tensor */

/* ---- helpers ------------------------------------------------------------------ */

/* Every buffer of a test comes from its arena and goes with it. */
static GPtrArray *
arena_new (void)
{
  return g_ptr_array_new_with_free_func (g_free);
}

static double *
vec (GPtrArray *arena, size_t n)
{
  double *x = g_new0 (double, n > 0 ? n : 1);
  g_ptr_array_add (arena, x);
  return x;
}

static float *
fvec (GPtrArray *arena, size_t n)
{
  float *x = g_new0 (float, n > 0 ? n : 1);
  g_ptr_array_add (arena, x);
  return x;
}

static int32_t *
ivec (GPtrArray *arena, size_t n)
{
  int32_t *x = g_new0 (int32_t, n > 0 ? n : 1);
  g_ptr_array_add (arena, x);
  return x;
}

static uint8_t *
bvec (GPtrArray *arena, size_t n)
{
  uint8_t *x = g_new0 (uint8_t, n > 0 ? n : 1);
  g_ptr_array_add (arena, x);
  return x;
}

static double *
vec_copy (GPtrArray *arena, const double *src, size_t n)
{
  double *x = vec (arena, n);
  memcpy (x, src, n * sizeof *x);
  return x;
}

static void
fill_uniform (double *x, size_t n, double lo, double hi, EsRng *rng)
{
  for (size_t i = 0; i < n; i++)
    x[i] = lo + (hi - lo) * es_rng_uniform (rng);
}

/* values in ±[0.1, 1]: far from the kink of relu and leaky relu at 0 */
static void
fill_away_from_zero (double *x, size_t n, EsRng *rng)
{
  for (size_t i = 0; i < n; i++)
    {
      const double v = 0.1 + 0.9 * es_rng_uniform (rng);
      x[i] = es_rng_uniform (rng) < 0.5 ? -v : v;
    }
}

/* a shuffled ladder of values 0.01 apart: no ties, so a window's maximum stays its
 * maximum when one value is nudged by ±eps */
static void
fill_distinct (double *x, size_t n, EsRng *rng)
{
  int32_t *idx = g_new (int32_t, n);

  for (size_t i = 0; i < n; i++)
    idx[i] = (int32_t) i;
  es_shuffle (idx, n, rng);
  for (size_t i = 0; i < n; i++)
    x[i] = 0.01 * ((double) idx[i] - 0.5 * (double) n);
  g_free (idx);
}

static void
fill_nan (double *x, size_t n)
{
  for (size_t i = 0; i < n; i++)
    x[i] = NAN;
}

static double
dot (const double *a, const double *b, size_t n)
{
  double s = 0.0;

  for (size_t i = 0; i < n; i++)
    s += a[i] * b[i];
  return s;
}

static double
max_abs (const double *x, size_t n)
{
  double m = 0.0;

  for (size_t i = 0; i < n; i++)
    m = fmax (m, fabs (x[i]));
  return m;
}

/* L as a function of whatever tensor the check nudges: runs the forward, returns L. */
typedef double (*LossFunc) (void *ctx);

/* Central differences of loss over each element of x against analytic (n). */
static void
check_grad (const char *what, double *x, const double *analytic, size_t n, LossFunc loss,
            void *ctx)
{
  size_t bad = 0;

  for (size_t i = 0; i < n; i++)
    {
      const double saved = x[i];
      const double xp = saved + GC_EPS, xm = saved - GC_EPS;
      x[i] = xp;
      const double lp = loss (ctx);
      x[i] = xm;
      const double lm = loss (ctx);
      x[i] = saved;
      const double numeric = (lp - lm) / (xp - xm);
      if (!(fabs (analytic[i] - numeric) <= GC_ATOL + GC_RTOL * fabs (numeric)))
        {
          if (bad < MAX_REPORTS)
            g_test_message ("%s[%zu]: analytic %.10g, numeric %.10g (diff %.3g)", what, i,
                            analytic[i], numeric, analytic[i] - numeric);
          bad++;
        }
    }
  if (bad > 0)
    {
      g_test_message ("%s: %zu of %zu elements differ from finite differences", what, bad,
                      n);
      g_test_fail ();
    }
  loss (ctx); /* leave the forward outputs as they were for the unperturbed inputs */
}

/* got == k * once exactly: a gradient accumulated k times (x + x and 2x + x are exact). */
static void
check_multiple (const char *what, const double *once, const double *got, size_t n, int k)
{
  size_t bad = 0;

  for (size_t i = 0; i < n; i++)
    if (got[i] != k * once[i])
      {
        if (bad < MAX_REPORTS)
          g_test_message ("%s[%zu]: after %d backward calls %.10g, want %d x %.10g", what, i,
                          k, got[i], k, once[i]);
        bad++;
      }
  if (bad > 0)
    {
      g_test_message ("%s: does not accumulate (+=) over backward calls", what);
      g_test_fail ();
    }
}

static void
check_values (const char *what, const double *got, const double *want, size_t n,
              double tol)
{
  size_t bad = 0;

  for (size_t i = 0; i < n; i++)
    if (!(fabs (got[i] - want[i]) <= tol))
      {
        if (bad < MAX_REPORTS)
          g_test_message ("%s[%zu]: got %.10g, want %.10g", what, i, got[i], want[i]);
        bad++;
      }
  if (bad > 0)
    g_test_fail ();
}

static void
check_value (const char *what, double got, double want, double tol)
{
  check_values (what, &got, &want, 1, tol);
}

static void
check_finite (const char *what, const double *x, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (!isfinite (x[i]))
      {
        g_test_message ("%s[%zu]: %g is not finite", what, i, x[i]);
        g_test_fail ();
        return;
      }
}

/* A tensor in both precisions: d holds exactly the float values of f, so the _f32 and
 * _f64 kernels see the same inputs. */
typedef struct {
  double *d;
  float *f;
  size_t n;
} Pair;

static Pair
pair_new (GPtrArray *arena, size_t n)
{
  return (Pair) { .d = vec (arena, n), .f = fvec (arena, n), .n = n };
}

static Pair
pair_from (GPtrArray *arena, const double *x, size_t n)
{
  Pair p = pair_new (arena, n);

  for (size_t i = 0; i < n; i++)
    {
      p.f[i] = (float) x[i];
      p.d[i] = (double) p.f[i];
    }
  return p;
}

static Pair
pair_uniform (GPtrArray *arena, size_t n, double lo, double hi, EsRng *rng)
{
  double *x = vec (arena, n);

  fill_uniform (x, n, lo, hi, rng);
  return pair_from (arena, x, n);
}

static void
pair_check_tol (const char *what, Pair p, double atol)
{
  size_t bad = 0;

  for (size_t i = 0; i < p.n; i++)
    {
      const double f = (double) p.f[i], d = p.d[i];
      if (!(fabs (f - d) <= atol + F32_RTOL * fabs (d)))
        {
          if (bad < MAX_REPORTS)
            g_test_message ("%s[%zu]: f32 %.9g, f64 %.12g (diff %.3g)", what, i, f, d, f - d);
          bad++;
        }
    }
  if (bad > 0)
    {
      g_test_message ("%s: %zu of %zu elements of _f32 differ from _f64", what, bad, p.n);
      g_test_fail ();
    }
}

/* forward outputs */
static void
pair_check (const char *what, Pair p)
{
  pair_check_tol (what, p, F32_ATOL);
}

/* gradients: sums that may cancel, so the slack scales with the tensor's largest value */
static void
pair_check_grad (const char *what, Pair p)
{
  pair_check_tol (what, p, F32_GRAD_ATOL * max_abs (p.d, p.n) + F32_ATOL);
}

static void
scalar_check (const char *what, float f, double d)
{
  Pair p = { .d = &d, .f = &f, .n = 1 };

  pair_check (what, p);
}

/* ---- gradient checks ------------------------------------------------------------ */

/* dense */

typedef struct {
  int B, IN, OUT;
  double *inp, *w, *b, *out, *R;
} DenseCtx;

static double
dense_loss (void *p)
{
  DenseCtx *c = p;

  es_ref_dense_forward_f64 (c->out, c->inp, c->w, c->b, c->B, c->IN, c->OUT);
  return dot (c->out, c->R, (size_t) c->B * c->OUT);
}

static void
test_gradcheck_dense (void)
{
  g_autoptr (GPtrArray) arena = arena_new ();
  EsRng rng = { 11 };
  const int B = 3, IN = 5, OUT = 4;
  const size_t ni = (size_t) B * IN, nw = (size_t) OUT * IN, no = (size_t) B * OUT;
  DenseCtx c = { B, IN, OUT, vec (arena, ni), vec (arena, nw), vec (arena, OUT),
                 vec (arena, no), vec (arena, no) };
  double *dinp = vec (arena, ni), *dw = vec (arena, nw), *db = vec (arena, OUT);

  fill_uniform (c.inp, ni, -1, 1, &rng);
  fill_uniform (c.w, nw, -1, 1, &rng);
  fill_uniform (c.b, OUT, -1, 1, &rng);
  fill_uniform (c.R, no, -1, 1, &rng);
  fill_nan (dinp, ni);

  es_ref_dense_backward_f64 (dinp, dw, db, c.R, c.inp, c.w, B, IN, OUT);
  check_grad ("dense dinp", c.inp, dinp, ni, dense_loss, &c);
  check_grad ("dense dw", c.w, dw, nw, dense_loss, &c);
  check_grad ("dense db", c.b, db, OUT, dense_loss, &c);

  /* parameter gradients accumulate; dinp = NULL (and db = NULL) skip their part */
  double *dw1 = vec_copy (arena, dw, nw), *db1 = vec_copy (arena, db, OUT);
  es_ref_dense_backward_f64 (NULL, dw, db, c.R, c.inp, c.w, B, IN, OUT);
  check_multiple ("dense dw", dw1, dw, nw, 2);
  check_multiple ("dense db", db1, db, OUT, 2);
  es_ref_dense_backward_f64 (NULL, dw, NULL, c.R, c.inp, c.w, B, IN, OUT);
  check_multiple ("dense dw (db NULL)", dw1, dw, nw, 3);
}

/* conv2d */

typedef struct {
  int B, C, H, W, OC, K, S, P;
  double *inp, *w, *b, *out, *R;
} ConvCtx;

static size_t
conv_out_size (const ConvCtx *c)
{
  return (size_t) c->B * c->OC * ES_CONV_OUT (c->H, c->K, c->S, c->P)
         * ES_CONV_OUT (c->W, c->K, c->S, c->P);
}

static double
conv_loss (void *p)
{
  ConvCtx *c = p;

  es_ref_conv2d_forward_f64 (c->out, c->inp, c->w, c->b, c->B, c->C, c->H, c->W, c->OC,
                             c->K, c->S, c->P);
  return dot (c->out, c->R, conv_out_size (c));
}

static const struct { int K, S, P; } conv_configs[] = {
  { 3, 1, 0 }, { 3, 1, 1 }, { 3, 2, 0 }, { 3, 2, 1 }, { 2, 2, 1 }, { 1, 1, 0 },
};

static void
test_gradcheck_conv2d (void)
{
  for (size_t k = 0; k < ES_N_ELEMENTS (conv_configs); k++)
    {
      g_autoptr (GPtrArray) arena = arena_new ();
      EsRng rng = { 21 + k };
      /* H != W and an odd W: a swapped index or an uncovered last column shows */
      ConvCtx c = { .B = 2, .C = 2, .H = 5, .W = 6, .OC = 3,
                    .K = conv_configs[k].K, .S = conv_configs[k].S, .P = conv_configs[k].P };
      const size_t ni = (size_t) c.B * c.C * c.H * c.W;
      const size_t nw = (size_t) c.OC * c.C * c.K * c.K;
      const size_t no = conv_out_size (&c);
      g_autofree char *tag = g_strdup_printf ("conv2d K=%d S=%d P=%d", c.K, c.S, c.P);
      g_autofree char *s_dinp = g_strconcat (tag, " dinp", NULL);
      g_autofree char *s_dw = g_strconcat (tag, " dw", NULL);
      g_autofree char *s_db = g_strconcat (tag, " db", NULL);

      c.inp = vec (arena, ni);
      c.w = vec (arena, nw);
      c.b = vec (arena, c.OC);
      c.out = vec (arena, no);
      c.R = vec (arena, no);
      double *dinp = vec (arena, ni), *dw = vec (arena, nw), *db = vec (arena, c.OC);
      fill_uniform (c.inp, ni, -1, 1, &rng);
      fill_uniform (c.w, nw, -1, 1, &rng);
      fill_uniform (c.b, c.OC, -1, 1, &rng);
      fill_uniform (c.R, no, -1, 1, &rng);
      fill_nan (dinp, ni);

      es_ref_conv2d_backward_f64 (dinp, dw, db, c.R, c.inp, c.w, c.B, c.C, c.H, c.W, c.OC,
                                  c.K, c.S, c.P);
      check_grad (s_dinp, c.inp, dinp, ni, conv_loss, &c);
      check_grad (s_dw, c.w, dw, nw, conv_loss, &c);
      check_grad (s_db, c.b, db, c.OC, conv_loss, &c);

      double *dw1 = vec_copy (arena, dw, nw), *db1 = vec_copy (arena, db, c.OC);
      es_ref_conv2d_backward_f64 (NULL, dw, db, c.R, c.inp, c.w, c.B, c.C, c.H, c.W, c.OC,
                                  c.K, c.S, c.P);
      check_multiple (s_dw, dw1, dw, nw, 2);
      check_multiple (s_db, db1, db, c.OC, 2);
    }
}

/* pooling */

typedef struct {
  int B, C, H, W, K, S;
  double *inp, *out, *R;
  int32_t *argmax;
} PoolCtx;

static size_t
pool_out_size (const PoolCtx *c)
{
  return (size_t) c->B * c->C * ES_CONV_OUT (c->H, c->K, c->S, 0)
         * ES_CONV_OUT (c->W, c->K, c->S, 0);
}

static double
maxpool_loss (void *p)
{
  PoolCtx *c = p;

  es_ref_maxpool2d_forward_f64 (c->out, c->argmax, c->inp, c->B, c->C, c->H, c->W, c->K,
                                c->S);
  return dot (c->out, c->R, pool_out_size (c));
}

static double
avgpool_loss (void *p)
{
  PoolCtx *c = p;

  es_ref_avgpool2d_forward_f64 (c->out, c->inp, c->B, c->C, c->H, c->W, c->K, c->S);
  return dot (c->out, c->R, pool_out_size (c));
}

/* non-overlapping, overlapping (S < K) and a window larger than its stride by 2 */
static const struct { int K, S; } pool_configs[] = { { 2, 2 }, { 3, 2 }, { 2, 1 } };

static void
pool_gradcheck (gboolean is_max)
{
  for (size_t k = 0; k < ES_N_ELEMENTS (pool_configs); k++)
    {
      g_autoptr (GPtrArray) arena = arena_new ();
      EsRng rng = { 31 + k };
      PoolCtx c = { .B = 2, .C = 3, .H = 6, .W = 7, .K = pool_configs[k].K,
                    .S = pool_configs[k].S };
      const size_t ni = (size_t) c.B * c.C * c.H * c.W, no = pool_out_size (&c);
      g_autofree char *what = g_strdup_printf ("%s K=%d S=%d dinp",
                                               is_max ? "maxpool2d" : "avgpool2d", c.K, c.S);

      c.inp = vec (arena, ni);
      c.out = vec (arena, no);
      c.R = vec (arena, no);
      c.argmax = ivec (arena, no);
      double *dinp = vec (arena, ni);
      if (is_max)
        fill_distinct (c.inp, ni, &rng);
      else
        fill_uniform (c.inp, ni, -1, 1, &rng);
      fill_uniform (c.R, no, -1, 1, &rng);
      fill_nan (dinp, ni);

      if (is_max)
        {
          maxpool_loss (&c);
          es_ref_maxpool2d_backward_f64 (dinp, c.R, c.argmax, c.B, c.C, c.H, c.W, c.K, c.S);
          check_grad (what, c.inp, dinp, ni, maxpool_loss, &c);
          es_ref_maxpool2d_backward_f64 (NULL, c.R, c.argmax, c.B, c.C, c.H, c.W, c.K, c.S);
        }
      else
        {
          es_ref_avgpool2d_backward_f64 (dinp, c.R, c.B, c.C, c.H, c.W, c.K, c.S);
          check_grad (what, c.inp, dinp, ni, avgpool_loss, &c);
          es_ref_avgpool2d_backward_f64 (NULL, c.R, c.B, c.C, c.H, c.W, c.K, c.S);
        }
    }
}

static void
test_gradcheck_maxpool (void)
{
  pool_gradcheck (TRUE);
}

static void
test_gradcheck_avgpool (void)
{
  pool_gradcheck (FALSE);
}

/* element-wise activations */

typedef enum { ACT_RELU, ACT_LEAKY, ACT_SIGMOID, ACT_TANH } Act;

typedef struct {
  Act act;
  int64_t N;
  double alpha;
  double *inp, *out, *R;
} ActCtx;

static void
act_forward (ActCtx *c)
{
  switch (c->act)
    {
    case ACT_RELU: es_ref_relu_forward_f64 (c->out, c->inp, c->N); break;
    case ACT_LEAKY: es_ref_leaky_relu_forward_f64 (c->out, c->inp, c->alpha, c->N); break;
    case ACT_SIGMOID: es_ref_sigmoid_forward_f64 (c->out, c->inp, c->N); break;
    case ACT_TANH: es_ref_tanh_forward_f64 (c->out, c->inp, c->N); break;
    default: g_assert_not_reached ();
    }
}

static void
act_backward (ActCtx *c, double *dinp)
{
  switch (c->act)
    {
    case ACT_RELU: es_ref_relu_backward_f64 (dinp, c->R, c->inp, c->N); break;
    case ACT_LEAKY:
      es_ref_leaky_relu_backward_f64 (dinp, c->R, c->inp, c->alpha, c->N);
      break;
    case ACT_SIGMOID: es_ref_sigmoid_backward_f64 (dinp, c->R, c->out, c->N); break;
    case ACT_TANH: es_ref_tanh_backward_f64 (dinp, c->R, c->out, c->N); break;
    default: g_assert_not_reached ();
    }
}

static double
act_loss (void *p)
{
  ActCtx *c = p;

  act_forward (c);
  return dot (c->out, c->R, (size_t) c->N);
}

static void
act_gradcheck (Act act, const char *what)
{
  g_autoptr (GPtrArray) arena = arena_new ();
  EsRng rng = { 41 + act };
  ActCtx c = { .act = act, .N = 48, .alpha = 0.1 };
  const size_t n = (size_t) c.N;
  double *dinp = vec (arena, n);

  c.inp = vec (arena, n);
  c.out = vec (arena, n);
  c.R = vec (arena, n);
  if (act == ACT_RELU || act == ACT_LEAKY)
    fill_away_from_zero (c.inp, n, &rng);
  else
    fill_uniform (c.inp, n, -4, 4, &rng);
  fill_uniform (c.R, n, -1, 1, &rng);
  fill_nan (dinp, n);

  act_forward (&c); /* sigmoid and tanh backward read the output */
  act_backward (&c, dinp);
  check_grad (what, c.inp, dinp, n, act_loss, &c);
  act_backward (&c, NULL);
}

static void
test_gradcheck_relu (void)
{
  act_gradcheck (ACT_RELU, "relu dinp");
}

static void
test_gradcheck_leaky_relu (void)
{
  act_gradcheck (ACT_LEAKY, "leaky_relu dinp");
}

static void
test_gradcheck_sigmoid (void)
{
  act_gradcheck (ACT_SIGMOID, "sigmoid dinp");
}

static void
test_gradcheck_tanh (void)
{
  act_gradcheck (ACT_TANH, "tanh dinp");
}

/* softmax */

typedef struct {
  int B, C;
  double *inp, *out, *R;
} SoftmaxCtx;

static double
softmax_loss (void *p)
{
  SoftmaxCtx *c = p;

  es_ref_softmax_forward_f64 (c->out, c->inp, c->B, c->C);
  return dot (c->out, c->R, (size_t) c->B * c->C);
}

static void
test_gradcheck_softmax (void)
{
  g_autoptr (GPtrArray) arena = arena_new ();
  EsRng rng = { 51 };
  SoftmaxCtx c = { .B = 3, .C = 6 };
  const size_t n = (size_t) c.B * c.C;
  double *dinp = vec (arena, n);

  c.inp = vec (arena, n);
  c.out = vec (arena, n);
  c.R = vec (arena, n);
  fill_uniform (c.inp, n, -3, 3, &rng);
  fill_uniform (c.R, n, -1, 1, &rng);
  fill_nan (dinp, n);

  softmax_loss (&c);
  es_ref_softmax_backward_f64 (dinp, c.R, c.out, c.B, c.C);
  check_grad ("softmax dinp", c.inp, dinp, n, softmax_loss, &c);
  es_ref_softmax_backward_f64 (NULL, c.R, c.out, c.B, c.C);
}

/* losses: L = the returned mean, and backward with scale = 1 / count */

typedef struct {
  int B, C;
  double *logits, *probs, *losses;
  int32_t *labels;
} XentCtx;

static double
xent_loss (void *p)
{
  XentCtx *c = p;

  return es_ref_softmax_xent_forward_f64 (c->probs, c->losses, c->logits, c->labels, c->B,
                                          c->C);
}

static void
test_gradcheck_softmax_xent (void)
{
  g_autoptr (GPtrArray) arena = arena_new ();
  EsRng rng = { 61 };
  XentCtx c = { .B = 4, .C = 5 };
  const size_t n = (size_t) c.B * c.C;
  double *dlogits = vec (arena, n);

  c.logits = vec (arena, n);
  c.probs = vec (arena, n);
  c.losses = vec (arena, c.B);
  c.labels = ivec (arena, c.B);
  fill_uniform (c.logits, n, -3, 3, &rng);
  for (int b = 0; b < c.B; b++)
    c.labels[b] = (int32_t) (es_rng_next (&rng) % (uint64_t) c.C);
  fill_nan (dlogits, n);

  const double mean = xent_loss (&c);
  check_value ("softmax_xent mean of losses", mean,
               (c.losses[0] + c.losses[1] + c.losses[2] + c.losses[3]) / 4, 1e-12);
  es_ref_softmax_xent_backward_f64 (dlogits, c.probs, c.labels, 1.0 / c.B, c.B, c.C);
  check_grad ("softmax_xent dlogits", c.logits, dlogits, n, xent_loss, &c);
}

typedef struct {
  int64_t N;
  double *logits, *targets, *probs, *losses;
} BceCtx;

static double
bce_loss (void *p)
{
  BceCtx *c = p;

  return es_ref_bce_forward_f64 (c->probs, c->losses, c->logits, c->targets, c->N);
}

static void
test_gradcheck_bce (void)
{
  g_autoptr (GPtrArray) arena = arena_new ();
  EsRng rng = { 71 };
  BceCtx c = { .N = 12 };
  const size_t n = (size_t) c.N;
  double *dlogits = vec (arena, n);

  c.logits = vec (arena, n);
  c.targets = vec (arena, n);
  c.probs = vec (arena, n);
  c.losses = vec (arena, n);
  fill_uniform (c.logits, n, -4, 4, &rng);
  fill_uniform (c.targets, n, 0, 1, &rng);
  c.targets[0] = 0.0; /* hard labels too */
  c.targets[1] = 1.0;
  fill_nan (dlogits, n);

  bce_loss (&c);
  es_ref_bce_backward_f64 (dlogits, c.probs, c.targets, 1.0 / (double) c.N, c.N);
  check_grad ("bce dlogits", c.logits, dlogits, n, bce_loss, &c);
}

typedef struct {
  int B, D;
  double *pred, *target, *losses;
} MseCtx;

static double
mse_loss (void *p)
{
  MseCtx *c = p;

  return es_ref_mse_forward_f64 (c->losses, c->pred, c->target, c->B, c->D);
}

static void
test_gradcheck_mse (void)
{
  g_autoptr (GPtrArray) arena = arena_new ();
  EsRng rng = { 81 };
  MseCtx c = { .B = 3, .D = 4 };
  const size_t n = (size_t) c.B * c.D;
  double *dpred = vec (arena, n);

  c.pred = vec (arena, n);
  c.target = vec (arena, n);
  c.losses = vec (arena, c.B);
  fill_uniform (c.pred, n, -2, 2, &rng);
  fill_uniform (c.target, n, -2, 2, &rng);
  fill_nan (dpred, n);

  es_ref_mse_backward_f64 (dpred, c.pred, c.target, 1.0 / c.B, c.B, c.D);
  check_grad ("mse dpred", c.pred, dpred, n, mse_loss, &c);
}

/* dropout: the mask is a function of (seed, index) only, so each forward of the finite
 * differences draws the same one */

typedef struct {
  int64_t N;
  double rate;
  uint64_t seed;
  double *inp, *out, *R;
  uint8_t *mask;
} DropoutCtx;

static double
dropout_loss (void *p)
{
  DropoutCtx *c = p;

  es_ref_dropout_forward_f64 (c->out, c->mask, c->inp, c->rate, c->seed, c->N);
  return dot (c->out, c->R, (size_t) c->N);
}

static void
test_gradcheck_dropout (void)
{
  g_autoptr (GPtrArray) arena = arena_new ();
  EsRng rng = { 91 };
  DropoutCtx c = { .N = 64, .rate = 0.3, .seed = 1234 };
  const size_t n = (size_t) c.N;
  double *dinp = vec (arena, n);
  size_t kept = 0;

  c.inp = vec (arena, n);
  c.out = vec (arena, n);
  c.R = vec (arena, n);
  c.mask = bvec (arena, n);
  fill_uniform (c.inp, n, -1, 1, &rng);
  fill_uniform (c.R, n, -1, 1, &rng);
  fill_nan (dinp, n);

  dropout_loss (&c);
  for (size_t i = 0; i < n; i++)
    {
      const uint8_t want = es_rand_uniform (c.seed, i) >= c.rate;
      if (c.mask[i] != want)
        {
          g_test_message ("dropout mask[%zu]: %d, want %d", i, c.mask[i], want);
          g_test_fail ();
        }
      kept += c.mask[i];
    }
  /* the test means something only if both kinds of element are there */
  g_assert_cmpuint (kept, >, 0);
  g_assert_cmpuint (kept, <, n);

  es_ref_dropout_backward_f64 (dinp, c.R, c.mask, c.rate, c.N);
  check_grad ("dropout dinp", c.inp, dinp, n, dropout_loss, &c);
  es_ref_dropout_backward_f64 (NULL, c.R, c.mask, c.rate, c.N);
}

/* batchnorm (training mode: the batch statistics depend on every input) */

typedef struct {
  int B, CH, SP;
  double *inp, *gamma, *beta, *out, *mean, *rstd, *R;
} BnCtx;

#define BN_EPS 1e-5
#define BN_MOMENTUM 0.1

static double
bn_loss (void *p)
{
  BnCtx *c = p;

  es_ref_batchnorm_forward_train_f64 (c->out, c->mean, c->rstd, NULL, NULL, c->inp,
                                      c->gamma, c->beta, BN_MOMENTUM, BN_EPS, c->B, c->CH,
                                      c->SP);
  return dot (c->out, c->R, (size_t) c->B * c->CH * c->SP);
}

static void
bn_gradcheck (const char *name, int B, int CH, int SP, uint64_t seed)
{
  g_autoptr (GPtrArray) arena = arena_new ();
  EsRng rng = { seed };
  BnCtx c = { .B = B, .CH = CH, .SP = SP };
  const size_t n = (size_t) B * CH * SP;
  double *dinp = vec (arena, n), *dgamma = vec (arena, CH), *dbeta = vec (arena, CH);
  g_autofree char *s_dinp = g_strconcat (name, " dinp", NULL);
  g_autofree char *s_dgamma = g_strconcat (name, " dgamma", NULL);
  g_autofree char *s_dbeta = g_strconcat (name, " dbeta", NULL);

  c.inp = vec (arena, n);
  c.gamma = vec (arena, CH);
  c.beta = vec (arena, CH);
  c.out = vec (arena, n);
  c.mean = vec (arena, CH);
  c.rstd = vec (arena, CH);
  c.R = vec (arena, n);
  fill_uniform (c.inp, n, -2, 2, &rng);
  for (size_t i = 0; i < n; i++) /* channels with their own mean */
    c.inp[i] += 0.5 * (double) ((i / (size_t) SP) % (size_t) CH);
  fill_uniform (c.gamma, CH, 0.5, 1.5, &rng);
  fill_uniform (c.beta, CH, -0.5, 0.5, &rng);
  fill_uniform (c.R, n, -1, 1, &rng);
  fill_nan (dinp, n);

  bn_loss (&c);
  es_ref_batchnorm_backward_f64 (dinp, dgamma, dbeta, c.R, c.inp, c.gamma, c.mean, c.rstd,
                                 B, CH, SP);
  check_grad (s_dinp, c.inp, dinp, n, bn_loss, &c);
  check_grad (s_dgamma, c.gamma, dgamma, CH, bn_loss, &c);
  check_grad (s_dbeta, c.beta, dbeta, CH, bn_loss, &c);

  double *dgamma1 = vec_copy (arena, dgamma, CH), *dbeta1 = vec_copy (arena, dbeta, CH);
  es_ref_batchnorm_backward_f64 (NULL, dgamma, dbeta, c.R, c.inp, c.gamma, c.mean, c.rstd,
                                 B, CH, SP);
  check_multiple (s_dgamma, dgamma1, dgamma, CH, 2);
  check_multiple (s_dbeta, dbeta1, dbeta, CH, 2);
}

static void
test_gradcheck_batchnorm_1d (void)
{
  bn_gradcheck ("batchnorm-1d", 6, 4, 1, 101);
}

static void
test_gradcheck_batchnorm_2d (void)
{
  bn_gradcheck ("batchnorm-2d", 3, 2, 6, 102);
}

/* ---- _f32 against _f64 ---------------------------------------------------------- */

static void
test_f32_dense (void)
{
  g_autoptr (GPtrArray) arena = arena_new ();
  EsRng rng = { 201 };
  const int B = 4, IN = 19, OUT = 7;
  Pair inp = pair_uniform (arena, (size_t) B * IN, -1, 1, &rng);
  Pair w = pair_uniform (arena, (size_t) OUT * IN, -1, 1, &rng);
  Pair b = pair_uniform (arena, OUT, -1, 1, &rng);
  Pair R = pair_uniform (arena, (size_t) B * OUT, -1, 1, &rng);
  Pair out = pair_new (arena, (size_t) B * OUT);
  Pair dinp = pair_new (arena, inp.n), dw = pair_new (arena, w.n), db = pair_new (arena, OUT);

  es_ref_dense_forward_f32 (out.f, inp.f, w.f, b.f, B, IN, OUT);
  es_ref_dense_forward_f64 (out.d, inp.d, w.d, b.d, B, IN, OUT);
  pair_check ("dense out", out);
  es_ref_dense_backward_f32 (dinp.f, dw.f, db.f, R.f, inp.f, w.f, B, IN, OUT);
  es_ref_dense_backward_f64 (dinp.d, dw.d, db.d, R.d, inp.d, w.d, B, IN, OUT);
  pair_check_grad ("dense dinp", dinp);
  pair_check_grad ("dense dw", dw);
  pair_check_grad ("dense db", db);
}

static void
test_f32_conv2d (void)
{
  for (size_t k = 0; k < ES_N_ELEMENTS (conv_configs); k++)
    {
      g_autoptr (GPtrArray) arena = arena_new ();
      EsRng rng = { 211 + k };
      const int B = 2, C = 3, H = 7, W = 6, OC = 4;
      const int K = conv_configs[k].K, S = conv_configs[k].S, P = conv_configs[k].P;
      const size_t no = (size_t) B * OC * ES_CONV_OUT (H, K, S, P) * ES_CONV_OUT (W, K, S, P);
      Pair inp = pair_uniform (arena, (size_t) B * C * H * W, -1, 1, &rng);
      Pair w = pair_uniform (arena, (size_t) OC * C * K * K, -1, 1, &rng);
      Pair b = pair_uniform (arena, OC, -1, 1, &rng);
      Pair R = pair_uniform (arena, no, -1, 1, &rng);
      Pair out = pair_new (arena, no);
      Pair dinp = pair_new (arena, inp.n), dw = pair_new (arena, w.n), db = pair_new (arena, OC);
      g_autofree char *tag = g_strdup_printf ("conv2d K=%d S=%d P=%d", K, S, P);
      g_autofree char *s_out = g_strconcat (tag, " out", NULL);
      g_autofree char *s_dinp = g_strconcat (tag, " dinp", NULL);
      g_autofree char *s_dw = g_strconcat (tag, " dw", NULL);
      g_autofree char *s_db = g_strconcat (tag, " db", NULL);

      es_ref_conv2d_forward_f32 (out.f, inp.f, w.f, b.f, B, C, H, W, OC, K, S, P);
      es_ref_conv2d_forward_f64 (out.d, inp.d, w.d, b.d, B, C, H, W, OC, K, S, P);
      pair_check (s_out, out);
      es_ref_conv2d_backward_f32 (dinp.f, dw.f, db.f, R.f, inp.f, w.f, B, C, H, W, OC, K, S, P);
      es_ref_conv2d_backward_f64 (dinp.d, dw.d, db.d, R.d, inp.d, w.d, B, C, H, W, OC, K, S, P);
      pair_check_grad (s_dinp, dinp);
      pair_check_grad (s_dw, dw);
      pair_check_grad (s_db, db);
    }
}

static void
pool_f32 (gboolean is_max)
{
  for (size_t k = 0; k < ES_N_ELEMENTS (pool_configs); k++)
    {
      g_autoptr (GPtrArray) arena = arena_new ();
      EsRng rng = { 221 + k };
      const int B = 2, C = 3, H = 6, W = 7, K = pool_configs[k].K, S = pool_configs[k].S;
      const size_t ni = (size_t) B * C * H * W;
      const size_t no = (size_t) B * C * ES_CONV_OUT (H, K, S, 0) * ES_CONV_OUT (W, K, S, 0);
      double *x = vec (arena, ni);
      if (is_max)
        fill_distinct (x, ni, &rng);
      else
        fill_uniform (x, ni, -1, 1, &rng);
      Pair inp = pair_from (arena, x, ni);
      Pair R = pair_uniform (arena, no, -1, 1, &rng);
      Pair out = pair_new (arena, no), dinp = pair_new (arena, ni);
      int32_t *arg32 = ivec (arena, no), *arg64 = ivec (arena, no);
      g_autofree char *tag = g_strdup_printf ("%s K=%d S=%d", is_max ? "maxpool2d" : "avgpool2d",
                                              K, S);
      g_autofree char *s_out = g_strconcat (tag, " out", NULL);
      g_autofree char *s_dinp = g_strconcat (tag, " dinp", NULL);

      if (is_max)
        {
          es_ref_maxpool2d_forward_f32 (out.f, arg32, inp.f, B, C, H, W, K, S);
          es_ref_maxpool2d_forward_f64 (out.d, arg64, inp.d, B, C, H, W, K, S);
          for (size_t i = 0; i < no; i++)
            if (arg32[i] != arg64[i])
              {
                g_test_message ("%s argmax[%zu]: f32 %d, f64 %d", tag, i, arg32[i], arg64[i]);
                g_test_fail ();
              }
          es_ref_maxpool2d_backward_f32 (dinp.f, R.f, arg32, B, C, H, W, K, S);
          es_ref_maxpool2d_backward_f64 (dinp.d, R.d, arg64, B, C, H, W, K, S);
        }
      else
        {
          es_ref_avgpool2d_forward_f32 (out.f, inp.f, B, C, H, W, K, S);
          es_ref_avgpool2d_forward_f64 (out.d, inp.d, B, C, H, W, K, S);
          es_ref_avgpool2d_backward_f32 (dinp.f, R.f, B, C, H, W, K, S);
          es_ref_avgpool2d_backward_f64 (dinp.d, R.d, B, C, H, W, K, S);
        }
      pair_check (s_out, out);
      pair_check_grad (s_dinp, dinp);
    }
}

static void
test_f32_maxpool (void)
{
  pool_f32 (TRUE);
}

static void
test_f32_avgpool (void)
{
  pool_f32 (FALSE);
}

static void
act_f32 (Act act, const char *name)
{
  g_autoptr (GPtrArray) arena = arena_new ();
  EsRng rng = { 231 + act };
  const int64_t N = 64;
  double *x = vec (arena, N);
  g_autofree char *s_out = g_strconcat (name, " out", NULL);
  g_autofree char *s_dinp = g_strconcat (name, " dinp", NULL);

  fill_uniform (x, N, -5, 5, &rng);
  x[0] = 0.0;
  x[1] = 30.0; /* saturated ends */
  x[2] = -30.0;
  Pair inp = pair_from (arena, x, N);
  Pair R = pair_uniform (arena, N, -1, 1, &rng);
  Pair out = pair_new (arena, N), dinp = pair_new (arena, N);
  const float af = 0.125f;
  const double ad = 0.125;

  switch (act)
    {
    case ACT_RELU:
      es_ref_relu_forward_f32 (out.f, inp.f, N);
      es_ref_relu_forward_f64 (out.d, inp.d, N);
      es_ref_relu_backward_f32 (dinp.f, R.f, inp.f, N);
      es_ref_relu_backward_f64 (dinp.d, R.d, inp.d, N);
      break;
    case ACT_LEAKY:
      es_ref_leaky_relu_forward_f32 (out.f, inp.f, af, N);
      es_ref_leaky_relu_forward_f64 (out.d, inp.d, ad, N);
      es_ref_leaky_relu_backward_f32 (dinp.f, R.f, inp.f, af, N);
      es_ref_leaky_relu_backward_f64 (dinp.d, R.d, inp.d, ad, N);
      break;
    case ACT_SIGMOID:
      es_ref_sigmoid_forward_f32 (out.f, inp.f, N);
      es_ref_sigmoid_forward_f64 (out.d, inp.d, N);
      es_ref_sigmoid_backward_f32 (dinp.f, R.f, out.f, N);
      es_ref_sigmoid_backward_f64 (dinp.d, R.d, out.d, N);
      break;
    case ACT_TANH:
      es_ref_tanh_forward_f32 (out.f, inp.f, N);
      es_ref_tanh_forward_f64 (out.d, inp.d, N);
      es_ref_tanh_backward_f32 (dinp.f, R.f, out.f, N);
      es_ref_tanh_backward_f64 (dinp.d, R.d, out.d, N);
      break;
    default:
      g_assert_not_reached ();
    }
  pair_check (s_out, out);
  pair_check_grad (s_dinp, dinp);
}

static void
test_f32_relu (void)
{
  act_f32 (ACT_RELU, "relu");
}

static void
test_f32_leaky_relu (void)
{
  act_f32 (ACT_LEAKY, "leaky_relu");
}

static void
test_f32_sigmoid (void)
{
  act_f32 (ACT_SIGMOID, "sigmoid");
}

static void
test_f32_tanh (void)
{
  act_f32 (ACT_TANH, "tanh");
}

static void
test_f32_softmax (void)
{
  g_autoptr (GPtrArray) arena = arena_new ();
  EsRng rng = { 241 };
  const int B = 4, C = 10;
  const size_t n = (size_t) B * C;
  Pair inp = pair_uniform (arena, n, -8, 8, &rng);
  Pair R = pair_uniform (arena, n, -1, 1, &rng);
  Pair out = pair_new (arena, n), dinp = pair_new (arena, n);

  es_ref_softmax_forward_f32 (out.f, inp.f, B, C);
  es_ref_softmax_forward_f64 (out.d, inp.d, B, C);
  pair_check ("softmax out", out);
  es_ref_softmax_backward_f32 (dinp.f, R.f, out.f, B, C);
  es_ref_softmax_backward_f64 (dinp.d, R.d, out.d, B, C);
  pair_check_grad ("softmax dinp", dinp);
}

static void
test_f32_softmax_xent (void)
{
  g_autoptr (GPtrArray) arena = arena_new ();
  EsRng rng = { 251 };
  const int B = 5, C = 10;
  const size_t n = (size_t) B * C;
  Pair logits = pair_uniform (arena, n, -6, 6, &rng);
  Pair probs = pair_new (arena, n), losses = pair_new (arena, B), dlogits = pair_new (arena, n);
  int32_t *labels = ivec (arena, B);

  for (int b = 0; b < B; b++)
    labels[b] = (int32_t) (es_rng_next (&rng) % (uint64_t) C);
  const float mf = es_ref_softmax_xent_forward_f32 (probs.f, losses.f, logits.f, labels, B, C);
  const double md = es_ref_softmax_xent_forward_f64 (probs.d, losses.d, logits.d, labels, B, C);
  pair_check ("softmax_xent probs", probs);
  pair_check ("softmax_xent losses", losses);
  scalar_check ("softmax_xent mean", mf, md);
  es_ref_softmax_xent_backward_f32 (dlogits.f, probs.f, labels, 1.0f / B, B, C);
  es_ref_softmax_xent_backward_f64 (dlogits.d, probs.d, labels, 1.0 / B, B, C);
  pair_check_grad ("softmax_xent dlogits", dlogits);
}

static void
test_f32_bce (void)
{
  g_autoptr (GPtrArray) arena = arena_new ();
  EsRng rng = { 261 };
  const int64_t N = 40;
  Pair logits = pair_uniform (arena, N, -6, 6, &rng);
  Pair targets = pair_uniform (arena, N, 0, 1, &rng);
  Pair probs = pair_new (arena, N), losses = pair_new (arena, N), dlogits = pair_new (arena, N);

  const float mf = es_ref_bce_forward_f32 (probs.f, losses.f, logits.f, targets.f, N);
  const double md = es_ref_bce_forward_f64 (probs.d, losses.d, logits.d, targets.d, N);
  pair_check ("bce probs", probs);
  pair_check ("bce losses", losses);
  scalar_check ("bce mean", mf, md);
  es_ref_bce_backward_f32 (dlogits.f, probs.f, targets.f, 1.0f / N, N);
  es_ref_bce_backward_f64 (dlogits.d, probs.d, targets.d, 1.0 / N, N);
  pair_check_grad ("bce dlogits", dlogits);
}

static void
test_f32_mse (void)
{
  g_autoptr (GPtrArray) arena = arena_new ();
  EsRng rng = { 271 };
  const int B = 4, D = 9;
  const size_t n = (size_t) B * D;
  Pair pred = pair_uniform (arena, n, -3, 3, &rng);
  Pair target = pair_uniform (arena, n, -3, 3, &rng);
  Pair losses = pair_new (arena, B), dpred = pair_new (arena, n);

  const float mf = es_ref_mse_forward_f32 (losses.f, pred.f, target.f, B, D);
  const double md = es_ref_mse_forward_f64 (losses.d, pred.d, target.d, B, D);
  pair_check ("mse losses", losses);
  scalar_check ("mse mean", mf, md);
  es_ref_mse_backward_f32 (dpred.f, pred.f, target.f, 1.0f / B, B, D);
  es_ref_mse_backward_f64 (dpred.d, pred.d, target.d, 1.0 / B, B, D);
  pair_check_grad ("mse dpred", dpred);
}

static void
test_f32_dropout (void)
{
  g_autoptr (GPtrArray) arena = arena_new ();
  EsRng rng = { 281 };
  const int64_t N = 200;
  const uint64_t seed = 777;
  Pair inp = pair_uniform (arena, N, -1, 1, &rng);
  Pair R = pair_uniform (arena, N, -1, 1, &rng);
  Pair out = pair_new (arena, N), dinp = pair_new (arena, N);
  uint8_t *mf = bvec (arena, N), *md = bvec (arena, N);

  /* 0.25 is exact in both types, so both draw the same mask */
  es_ref_dropout_forward_f32 (out.f, mf, inp.f, 0.25f, seed, N);
  es_ref_dropout_forward_f64 (out.d, md, inp.d, 0.25, seed, N);
  g_assert_cmpmem (mf, N, md, N);
  pair_check ("dropout out", out);
  es_ref_dropout_backward_f32 (dinp.f, R.f, mf, 0.25f, N);
  es_ref_dropout_backward_f64 (dinp.d, R.d, md, 0.25, N);
  pair_check_grad ("dropout dinp", dinp);
}

static void
test_f32_batchnorm (void)
{
  static const struct { int B, CH, SP; } shapes[] = { { 8, 5, 1 }, { 3, 4, 9 } };

  for (size_t k = 0; k < ES_N_ELEMENTS (shapes); k++)
    {
      g_autoptr (GPtrArray) arena = arena_new ();
      EsRng rng = { 291 + k };
      const int B = shapes[k].B, CH = shapes[k].CH, SP = shapes[k].SP;
      const size_t n = (size_t) B * CH * SP;
      Pair inp = pair_uniform (arena, n, -2, 3, &rng);
      Pair gamma = pair_uniform (arena, CH, 0.5, 1.5, &rng);
      Pair beta = pair_uniform (arena, CH, -0.5, 0.5, &rng);
      Pair R = pair_uniform (arena, n, -1, 1, &rng);
      Pair rmean = pair_uniform (arena, CH, -0.1, 0.1, &rng);
      Pair rvar = pair_uniform (arena, CH, 0.9, 1.1, &rng);
      Pair out = pair_new (arena, n), mean = pair_new (arena, CH), rstd = pair_new (arena, CH);
      Pair dinp = pair_new (arena, n), dgamma = pair_new (arena, CH), dbeta = pair_new (arena, CH);
      Pair iout = pair_new (arena, n);
      g_autofree char *tag = g_strdup_printf ("batchnorm (%d,%d,%d)", B, CH, SP);
      g_autofree char *s_out = g_strconcat (tag, " out", NULL);
      g_autofree char *s_mean = g_strconcat (tag, " mean", NULL);
      g_autofree char *s_rstd = g_strconcat (tag, " rstd", NULL);
      g_autofree char *s_rmean = g_strconcat (tag, " running_mean", NULL);
      g_autofree char *s_rvar = g_strconcat (tag, " running_var", NULL);
      g_autofree char *s_iout = g_strconcat (tag, " infer out", NULL);
      g_autofree char *s_dinp = g_strconcat (tag, " dinp", NULL);
      g_autofree char *s_dgamma = g_strconcat (tag, " dgamma", NULL);
      g_autofree char *s_dbeta = g_strconcat (tag, " dbeta", NULL);

      es_ref_batchnorm_forward_train_f32 (out.f, mean.f, rstd.f, rmean.f, rvar.f, inp.f,
                                          gamma.f, beta.f, 0.1f, 1e-5f, B, CH, SP);
      es_ref_batchnorm_forward_train_f64 (out.d, mean.d, rstd.d, rmean.d, rvar.d, inp.d,
                                          gamma.d, beta.d, 0.1, 1e-5, B, CH, SP);
      pair_check (s_out, out);
      pair_check (s_mean, mean);
      pair_check (s_rstd, rstd);
      pair_check (s_rmean, rmean);
      pair_check (s_rvar, rvar);
      es_ref_batchnorm_forward_infer_f32 (iout.f, inp.f, gamma.f, beta.f, rmean.f, rvar.f,
                                          1e-5f, B, CH, SP);
      es_ref_batchnorm_forward_infer_f64 (iout.d, inp.d, gamma.d, beta.d, rmean.d, rvar.d,
                                          1e-5, B, CH, SP);
      pair_check (s_iout, iout);
      es_ref_batchnorm_backward_f32 (dinp.f, dgamma.f, dbeta.f, R.f, inp.f, gamma.f, mean.f,
                                     rstd.f, B, CH, SP);
      es_ref_batchnorm_backward_f64 (dinp.d, dgamma.d, dbeta.d, R.d, inp.d, gamma.d, mean.d,
                                     rstd.d, B, CH, SP);
      pair_check_grad (s_dinp, dinp);
      pair_check_grad (s_dgamma, dgamma);
      pair_check_grad (s_dbeta, dbeta);
    }
}

/* ---- forward values worked out by hand ------------------------------------------ */

static void
test_values_dense (void)
{
  /* inp (2,3), w (2,3), b (2) */
  const double inp[] = { 1, 2, 3, -1, 0, 2 };
  const double w[] = { 1, 0, -1, 0.5, 0.5, 0.5 };
  const double b[] = { 0.1, -0.2 };
  /* row 0: 1 - 3 + 0.1, 0.5 * 6 - 0.2; row 1: -1 - 2 + 0.1, 0.5 * 1 - 0.2 */
  const double want[] = { -1.9, 2.8, -2.9, 0.3 };
  const double want_nobias[] = { -2.0, 3.0, -3.0, 0.5 };
  double out[4];

  es_ref_dense_forward_f64 (out, inp, w, b, 2, 3, 2);
  check_values ("dense out", out, want, 4, 1e-12);
  es_ref_dense_forward_f64 (out, inp, w, NULL, 2, 3, 2);
  check_values ("dense out (no bias)", out, want_nobias, 4, 1e-12);
}

static void
test_values_conv2d (void)
{
  /* one 3x3 plane 1..9, a 2x2 kernel of ones, bias 0.5 */
  const double inp[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
  const double w[] = { 1, 1, 1, 1 };
  const double b[] = { 0.5 };
  /* S=1, P=0: sums of each 2x2 block */
  const double want_s1[] = { 12.5, 16.5, 24.5, 28.5 };
  /* S=2, P=1: windows at (-1,-1), (-1,1), (1,-1), (1,1): {1}, {2,3}, {4,7}, {5,6,8,9} */
  const double want_s2p1[] = { 1.5, 5.5, 11.5, 28.5 };
  double out[4];

  es_ref_conv2d_forward_f64 (out, inp, w, b, 1, 1, 3, 3, 1, 2, 1, 0);
  check_values ("conv2d S=1 P=0 out", out, want_s1, 4, 1e-12);
  es_ref_conv2d_forward_f64 (out, inp, w, b, 1, 1, 3, 3, 1, 2, 2, 1);
  check_values ("conv2d S=2 P=1 out", out, want_s2p1, 4, 1e-12);
}

static const double pool_plane[16] = {
  1, 3, 2, 0,
  4, 2, 1, 5,
  0, 1, 7, 7,
  6, 2, 3, 1,
};

static void
test_values_maxpool (void)
{
  const double want[] = { 4, 5, 6, 7 };
  /* (1,0), (1,3), (3,0), and the first of the two 7s, (2,2) */
  const int32_t want_arg[] = { 4, 7, 12, 10 };
  const double dout[] = { 1, 2, 3, 4 };
  const double want_dinp[16] = { 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 4, 0, 3, 0, 0, 0 };
  double out[4], dinp[16];
  int32_t arg[4];

  es_ref_maxpool2d_forward_f64 (out, arg, pool_plane, 1, 1, 4, 4, 2, 2);
  check_values ("maxpool2d out", out, want, 4, 0);
  for (int i = 0; i < 4; i++)
    if (arg[i] != want_arg[i])
      {
        g_test_message ("maxpool2d argmax[%d]: got %d, want %d", i, arg[i], want_arg[i]);
        g_test_fail ();
      }
  es_ref_maxpool2d_backward_f64 (dinp, dout, arg, 1, 1, 4, 4, 2, 2);
  check_values ("maxpool2d dinp", dinp, want_dinp, 16, 0);

  /* a NaN in a window comes out, not a number next to it */
  double with_nan[16];
  memcpy (with_nan, pool_plane, sizeof with_nan);
  with_nan[5] = NAN;
  es_ref_maxpool2d_forward_f64 (out, arg, with_nan, 1, 1, 4, 4, 2, 2);
  g_assert_true (isnan (out[0]));
  g_assert_cmpint (arg[0], ==, 5);
}

static void
test_values_avgpool (void)
{
  const double want[] = { 2.5, 2.0, 2.25, 4.5 };
  double out[4];

  es_ref_avgpool2d_forward_f64 (out, pool_plane, 1, 1, 4, 4, 2, 2);
  check_values ("avgpool2d out", out, want, 4, 1e-12);
}

static void
test_values_softmax (void)
{
  const double inp[] = { 1, 2, 3 };
  /* e^-2, e^-1, 1 over their sum */
  const double want[] = { 0.09003057317038046, 0.24472847105479767, 0.6652409557748219 };
  const double big[] = { 1000, 1001, 1002 }; /* the same after subtracting the max */
  double out[3];
  float outf[3];
  const float inpf[] = { 1, 2, 3 };

  es_ref_softmax_forward_f64 (out, inp, 1, 3);
  check_values ("softmax [1,2,3]", out, want, 3, 1e-15);
  es_ref_softmax_forward_f64 (out, big, 1, 3);
  check_values ("softmax [1000,1001,1002]", out, want, 3, 1e-15);
  es_ref_softmax_forward_f32 (outf, inpf, 1, 3);
  for (int i = 0; i < 3; i++)
    check_value ("softmax_f32 [1,2,3]", outf[i], want[i], 1e-7);
}

static void
test_values_softmax_xent (void)
{
  const double logits[] = { 1, 2, 3, 1000, 0, -1000 };
  const int32_t labels[] = { 2, 2 };
  double probs[6], losses[2];

  const double mean = es_ref_softmax_xent_forward_f64 (probs, losses, logits, labels, 2, 3);
  check_value ("softmax_xent loss [1,2,3] label 2", losses[0], -log (0.6652409557748219),
               1e-14);
  /* p[label] underflows to 0, the loss does not: logsumexp - logit = 1000 + 1000 */
  check_value ("softmax_xent loss [1000,0,-1000] label 2", losses[1], 2000.0, 1e-9);
  check_value ("softmax_xent mean", mean, (losses[0] + losses[1]) / 2, 1e-12);
  check_finite ("softmax_xent probs", probs, 6);

  /* losses may be NULL when only the mean is wanted */
  const double mean2 = es_ref_softmax_xent_forward_f64 (probs, NULL, logits, labels, 2, 3);
  check_value ("softmax_xent mean (losses NULL)", mean2, mean, 0);
}

static void
test_values_bce (void)
{
  const double logits[] = { 0, 100, -100, 2 };
  const double targets[] = { 1, 0, 1, 0.25 };
  /* log 2; 100; 100; 2 - 0.5 + log1p(e^-2) */
  const double want[] = { G_LN2, 100, 100, 1.5 + log1p (exp (-2.0)) };
  double probs[4], losses[4];
  float fl[4], ft[4], fp[4], flo[4];

  const double mean = es_ref_bce_forward_f64 (probs, losses, logits, targets, 4);
  check_values ("bce losses", losses, want, 4, 1e-12);
  check_value ("bce mean", mean, (want[0] + want[1] + want[2] + want[3]) / 4, 1e-12);
  check_value ("bce probs[0]", probs[0], 0.5, 0);
  check_finite ("bce probs", probs, 4);

  for (int i = 0; i < 4; i++)
    {
      fl[i] = (float) logits[i];
      ft[i] = (float) targets[i];
    }
  es_ref_bce_forward_f32 (fp, flo, fl, ft, 4);
  for (int i = 0; i < 4; i++)
    check_value ("bce_f32 losses", flo[i], want[i], 1e-5 * fmax (1.0, want[i]));
}

static void
test_values_sigmoid_extremes (void)
{
  const double x[] = { -1000, -40, 0, 40, 1000 };
  const float xf[] = { -1000, -40, 0, 40, 1000 };
  double y[5];
  float yf[5];

  es_ref_sigmoid_forward_f64 (y, x, 5);
  es_ref_sigmoid_forward_f32 (yf, xf, 5);
  check_value ("sigmoid(-1000)", y[0], 0, 0);
  check_value ("sigmoid(-40)", y[1], exp (-40.0) / (1 + exp (-40.0)), 1e-30);
  check_value ("sigmoid(0)", y[2], 0.5, 0);
  check_value ("sigmoid(40)", y[3], 1, 1e-16);
  check_value ("sigmoid(1000)", y[4], 1, 0);
  for (int i = 0; i < 5; i++)
    {
      g_assert_true (isfinite (yf[i]));
      check_value ("sigmoid_f32", yf[i], y[i], 1e-7);
    }
}

static void
test_values_mse (void)
{
  const double pred[] = { 1, 2, 0, 0 };
  const double target[] = { 0, 0, 0, 3 };
  const double want[] = { 2.5, 4.5 };
  double losses[2];

  const double mean = es_ref_mse_forward_f64 (losses, pred, target, 2, 2);
  check_values ("mse losses", losses, want, 2, 1e-15);
  check_value ("mse mean", mean, 3.5, 1e-15);
}

static void
test_values_dropout (void)
{
  const double inp[] = { 1, -2, 3, -4, 5 };
  double out[5];
  uint8_t mask[5];

  /* rate 0 keeps everything unchanged */
  es_ref_dropout_forward_f64 (out, mask, inp, 0.0, 99, 5);
  check_values ("dropout rate 0", out, inp, 5, 0);
  for (int i = 0; i < 5; i++)
    g_assert_cmpint (mask[i], ==, 1);

  /* rate 1 drops everything, with no 0 * inf NaN */
  es_ref_dropout_forward_f64 (out, mask, inp, 1.0, 99, 5);
  for (int i = 0; i < 5; i++)
    {
      g_assert_cmpint (mask[i], ==, 0);
      check_value ("dropout rate 1", out[i], 0, 0);
    }

  /* kept values are scaled by 1 / (1 - rate) */
  es_ref_dropout_forward_f64 (out, mask, inp, 0.5, 99, 5);
  for (int i = 0; i < 5; i++)
    check_value ("dropout rate 0.5", out[i], mask[i] ? 2 * inp[i] : 0, 0);
}

static void
test_values_batchnorm (void)
{
  /* one channel, B = 4: mean 2.5, biased variance 1.25, unbiased 5/3 */
  const double inp[] = { 1, 2, 3, 4 };
  const double gamma[] = { 2 }, beta[] = { 1 };
  double out[4], mean[1], rstd[1], rmean[1] = { 0 }, rvar[1] = { 1 }, iout[4];

  es_ref_batchnorm_forward_train_f64 (out, mean, rstd, rmean, rvar, inp, gamma, beta, 0.1,
                                      0.0, 4, 1, 1);
  check_value ("batchnorm mean", mean[0], 2.5, 1e-15);
  check_value ("batchnorm rstd", rstd[0], 1 / sqrt (1.25), 1e-15);
  check_value ("batchnorm running_mean", rmean[0], 0.25, 1e-15);
  check_value ("batchnorm running_var", rvar[0], 0.9 + 0.1 * 5.0 / 3.0, 1e-15);
  for (int i = 0; i < 4; i++)
    check_value ("batchnorm out", out[i], 2 * (inp[i] - 2.5) / sqrt (1.25) + 1, 1e-14);

  /* running statistics may be NULL */
  es_ref_batchnorm_forward_train_f64 (out, mean, rstd, NULL, NULL, inp, gamma, beta, 0.1,
                                      0.0, 4, 1, 1);

  /* inference with the batch's own (biased) statistics gives the training output */
  const double bmean[] = { 2.5 }, bvar[] = { 1.25 };
  es_ref_batchnorm_forward_infer_f64 (iout, inp, gamma, beta, bmean, bvar, 0.0, 4, 1, 1);
  check_values ("batchnorm infer", iout, out, 4, 1e-14);

  /* 2-D: a channel is normalized over batch and space together, (B,CH,SP) = (2,2,2) */
  const double x2[] = { 0, 2, 10, 10, 4, 6, 20, 30 };
  const double g2[] = { 1, 1 }, b2[] = { 0, 0 };
  double o2[8], m2[2], r2[2];
  es_ref_batchnorm_forward_train_f64 (o2, m2, r2, NULL, NULL, x2, g2, b2, 0.1, 0.0, 2, 2, 2);
  check_value ("batchnorm-2d mean[0]", m2[0], 3, 1e-15);  /* 0 2 4 6 */
  check_value ("batchnorm-2d mean[1]", m2[1], 17.5, 1e-15); /* 10 10 20 30 */
  check_value ("batchnorm-2d rstd[0]", r2[0], 1 / sqrt (5.0), 1e-15);
}

int
main (int argc, char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/engine/gradcheck/dense", test_gradcheck_dense);
  g_test_add_func ("/engine/gradcheck/conv2d", test_gradcheck_conv2d);
  g_test_add_func ("/engine/gradcheck/maxpool2d", test_gradcheck_maxpool);
  g_test_add_func ("/engine/gradcheck/avgpool2d", test_gradcheck_avgpool);
  g_test_add_func ("/engine/gradcheck/relu", test_gradcheck_relu);
  g_test_add_func ("/engine/gradcheck/leaky-relu", test_gradcheck_leaky_relu);
  g_test_add_func ("/engine/gradcheck/sigmoid", test_gradcheck_sigmoid);
  g_test_add_func ("/engine/gradcheck/tanh", test_gradcheck_tanh);
  g_test_add_func ("/engine/gradcheck/softmax", test_gradcheck_softmax);
  g_test_add_func ("/engine/gradcheck/softmax-xent", test_gradcheck_softmax_xent);
  g_test_add_func ("/engine/gradcheck/bce", test_gradcheck_bce);
  g_test_add_func ("/engine/gradcheck/mse", test_gradcheck_mse);
  g_test_add_func ("/engine/gradcheck/dropout", test_gradcheck_dropout);
  g_test_add_func ("/engine/gradcheck/batchnorm-1d", test_gradcheck_batchnorm_1d);
  g_test_add_func ("/engine/gradcheck/batchnorm-2d", test_gradcheck_batchnorm_2d);

  g_test_add_func ("/engine/ref/f32/dense", test_f32_dense);
  g_test_add_func ("/engine/ref/f32/conv2d", test_f32_conv2d);
  g_test_add_func ("/engine/ref/f32/maxpool2d", test_f32_maxpool);
  g_test_add_func ("/engine/ref/f32/avgpool2d", test_f32_avgpool);
  g_test_add_func ("/engine/ref/f32/relu", test_f32_relu);
  g_test_add_func ("/engine/ref/f32/leaky-relu", test_f32_leaky_relu);
  g_test_add_func ("/engine/ref/f32/sigmoid", test_f32_sigmoid);
  g_test_add_func ("/engine/ref/f32/tanh", test_f32_tanh);
  g_test_add_func ("/engine/ref/f32/softmax", test_f32_softmax);
  g_test_add_func ("/engine/ref/f32/softmax-xent", test_f32_softmax_xent);
  g_test_add_func ("/engine/ref/f32/bce", test_f32_bce);
  g_test_add_func ("/engine/ref/f32/mse", test_f32_mse);
  g_test_add_func ("/engine/ref/f32/dropout", test_f32_dropout);
  g_test_add_func ("/engine/ref/f32/batchnorm", test_f32_batchnorm);

  g_test_add_func ("/engine/ref/values/dense", test_values_dense);
  g_test_add_func ("/engine/ref/values/conv2d", test_values_conv2d);
  g_test_add_func ("/engine/ref/values/maxpool2d", test_values_maxpool);
  g_test_add_func ("/engine/ref/values/avgpool2d", test_values_avgpool);
  g_test_add_func ("/engine/ref/values/softmax", test_values_softmax);
  g_test_add_func ("/engine/ref/values/softmax-xent", test_values_softmax_xent);
  g_test_add_func ("/engine/ref/values/bce", test_values_bce);
  g_test_add_func ("/engine/ref/values/sigmoid-extremes", test_values_sigmoid_extremes);
  g_test_add_func ("/engine/ref/values/mse", test_values_mse);
  g_test_add_func ("/engine/ref/values/dropout", test_values_dropout);
  g_test_add_func ("/engine/ref/values/batchnorm", test_values_batchnorm);

  return g_test_run ();
}
