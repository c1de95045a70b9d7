/* test-sparse.c: CSR from dense, the scalar reference against a dense product, the
 * fast path against the reference bit for bit (batches 1, 3, 17, 64; sparsities from 0
 * to 1, with empty rows; with and without bias and ReLU), row ranges, and a timing of
 * batch-1 sparse against the CPU backend's dense kernel (printed, never asserted). */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "es-backend.h"
#include "es-sparse.h"

/* w (rows, cols) in [-1, 1) with a fraction `sparsity` of exact zeros, and a few whole
 * rows zero when sparsity > 0 (empty CSR rows). */
static float *
sparse_weights (EsRng *rng, int rows, int cols, double sparsity)
{
  float *w = g_new (float, (gsize) rows * cols);

  for (int64_t i = 0; i < (int64_t) rows * cols; i++)
    {
      double u = es_rng_uniform (rng);
      w[i] = u < sparsity ? 0.0f : (float) (2.0 * es_rng_uniform (rng) - 1.0);
    }
  if (sparsity > 0.0 && rows > 2)
    memset (w + (gsize) (rows / 2) * cols, 0, (gsize) cols * sizeof (float));
  return w;
}

static float *
rand_floats (EsRng *rng, int64_t n)
{
  float *x = g_new (float, n);

  for (int64_t i = 0; i < n; i++)
    x[i] = (float) (2.0 * es_rng_uniform (rng) - 1.0);
  return x;
}

static void
test_from_dense (void)
{
  const float w[3 * 4] = { 0, 1.5f, 0, -2,
                           0, 0, 0, 0,
                           3, 0, -0.0f, 4 };
  EsError err = { 0 };
  EsCsr *m = es_csr_from_dense (w, 3, 4, &err);
  const int32_t want_ptr[] = { 0, 2, 2, 4 };
  const int32_t want_col[] = { 1, 3, 0, 3 };
  const float want_val[] = { 1.5f, -2, 3, 4 };

  g_assert_nonnull (m);
  g_assert_cmpint (m->rows, ==, 3);
  g_assert_cmpint (m->cols, ==, 4);
  g_assert_cmpint (m->nnz, ==, 4);
  for (int i = 0; i < 4; i++)
    g_assert_cmpint (m->row_ptr[i], ==, want_ptr[i]);
  for (int i = 0; i < 4; i++)
    {
      g_assert_cmpint (m->col[i], ==, want_col[i]);
      g_assert_cmpfloat (m->val[i], ==, want_val[i]);
    }
  g_assert_cmpuint (es_csr_bytes (m), ==, 4 * sizeof (int32_t) + 4 * (sizeof (int32_t) + sizeof (float)));
  es_csr_free (m);

  /* all zero: no nonzeros, every row empty */
  {
    float z[6] = { 0 };
    m = es_csr_from_dense (z, 2, 3, &err);
    g_assert_nonnull (m);
    g_assert_cmpint (m->nnz, ==, 0);
    g_assert_cmpint (m->row_ptr[2], ==, 0);
    es_csr_free (m);
  }
  g_assert_null (es_csr_from_dense (w, -1, 4, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
}

/* out (B, OUT) = act (inp . W^T + b) in double from the dense W: the product the CSR
 * kernels must approximate. */
static void
dense_double (double *out, const float *inp, const float *w, const float *b, bool relu,
              int B, int IN, int OUT)
{
  for (int i = 0; i < B; i++)
    for (int o = 0; o < OUT; o++)
      {
        double s = b != NULL ? b[o] : 0.0;
        for (int k = 0; k < IN; k++)
          s += (double) inp[(int64_t) i * IN + k] * w[(int64_t) o * IN + k];
        out[(int64_t) i * OUT + o] = relu && s < 0.0 ? 0.0 : s;
      }
}

typedef struct { int IN, OUT; } Shape;

static void
test_forward (void)
{
  const Shape shapes[] = { { 5, 3 }, { 16, 16 }, { 37, 29 }, { 784, 128 }, { 128, 10 },
                           { 300, 40 } };
  const int batches[] = { 1, 3, 17, 64 };
  const double sparsities[] = { 0.0, 0.5, 0.9, 0.97, 1.0 };
  int checked = 0;

  g_test_message ("sparse path: %s", es_csr_path ());
  for (gsize s = 0; s < G_N_ELEMENTS (shapes); s++)
    for (gsize p = 0; p < G_N_ELEMENTS (sparsities); p++)
      {
        const int IN = shapes[s].IN, OUT = shapes[s].OUT;
        EsRng rng = { 100 * s + p };
        float *w = sparse_weights (&rng, OUT, IN, sparsities[p]);
        float *bias = rand_floats (&rng, OUT);
        EsError err = { 0 };
        EsCsr *m = es_csr_from_dense (w, OUT, IN, &err);
        int64_t nnz = 0;

        g_assert_nonnull (m);
        for (int64_t i = 0; i < (int64_t) OUT * IN; i++)
          nnz += w[i] != 0.0f;
        g_assert_cmpint (m->nnz, ==, nnz);
        for (gsize bi = 0; bi < G_N_ELEMENTS (batches); bi++)
          for (int variant = 0; variant < 4; variant++)
            {
              const int B = batches[bi];
              const bool relu = variant & 1;
              const float *b = variant & 2 ? bias : NULL;
              float *x = rand_floats (&rng, (int64_t) B * IN);
              float *ref = g_new (float, (gsize) B * OUT);
              float *fast = g_new (float, (gsize) B * OUT);
              float *part = g_new (float, (gsize) B * OUT);
              double *want = g_new (double, (gsize) B * OUT);
              gsize ns = es_csr_scratch_floats (m, B);
              float *scratch = g_new (float, ns + 1);
              int bad = 0;

              es_csr_dense_forward_ref (ref, x, m, b, relu, B);
              /* ref within tolerance of the double product */
              dense_double (want, x, w, b, relu, B, IN, OUT);
              for (int64_t i = 0; i < (int64_t) B * OUT; i++)
                if (fabs (ref[i] - want[i]) > 1e-5 * (1.0 + sqrt ((double) IN)))
                  if (bad++ < 5)
                    g_test_message ("ref %dx%d B=%d: [%" G_GINT64_FORMAT "] %.9g vs %.9g",
                                    OUT, IN, B, i, ref[i], want[i]);
              /* the fast path equals the reference bit for bit */
              memset (fast, 0xff, (gsize) B * OUT * sizeof (float));
              es_csr_dense_forward (fast, x, m, b, relu, B, scratch, 0, OUT);
              if (memcmp (fast, ref, (gsize) B * OUT * sizeof (float)) != 0)
                {
                  for (int64_t i = 0; i < (int64_t) B * OUT; i++)
                    if (memcmp (&fast[i], &ref[i], sizeof (float)) != 0 && bad++ < 5)
                      g_test_message ("fast %dx%d s=%.2f B=%d relu=%d bias=%d: [%"
                                      G_GINT64_FORMAT "] %.9g vs ref %.9g", OUT, IN,
                                      sparsities[p], B, relu, b != NULL, i, fast[i], ref[i]);
                  bad++;
                }
              /* row ranges: three calls cover every row, each writes only its own */
              {
                const int cut1 = OUT / 3, cut2 = (2 * OUT) / 3 + 1;

                memset (part, 0xff, (gsize) B * OUT * sizeof (float));
                es_csr_dense_forward (part, x, m, b, relu, B, scratch, 0, cut1);
                for (int i = 0; i < B; i++)
                  for (int o = cut1; o < OUT; o++)
                    {
                      guint32 bits;
                      memcpy (&bits, &part[(int64_t) i * OUT + o], sizeof bits);
                      if (bits != 0xffffffffu && bad++ < 5)
                        g_test_message ("row range [0,%d) wrote row %d", cut1, o);
                    }
                es_csr_dense_forward (part, x, m, b, relu, B, scratch, cut1, cut2);
                es_csr_dense_forward (part, x, m, b, relu, B, scratch, cut2, OUT);
                es_csr_dense_forward (part, x, m, b, relu, B, scratch, OUT, OUT);   /* empty */
                if (memcmp (part, ref, (gsize) B * OUT * sizeof (float)) != 0 && bad++ < 5)
                  g_test_message ("row ranges %dx%d B=%d differ from the whole", OUT, IN, B);
              }
              if (bad > 0)
                g_test_fail ();
              checked++;
              g_free (x);
              g_free (ref);
              g_free (fast);
              g_free (part);
              g_free (want);
              g_free (scratch);
            }
        es_csr_free (m);
        g_free (w);
        g_free (bias);
      }
  g_assert_cmpint (checked, ==, G_N_ELEMENTS (shapes) * G_N_ELEMENTS (sparsities)
                                * G_N_ELEMENTS (batches) * 4);
}

/* Values that differ in sign, NaN and -0 give the same bits on both paths. */
static void
test_special_values (void)
{
  const int IN = 40, OUT = 6, B = 3;
  float w[6 * 40], x[3 * 40], bias[6] = { 0, -0.0f, 1, -1, NAN, 0 };
  float ref[3 * 6], fast[3 * 6], scratch[40 * 16];
  EsRng rng = { 7 };
  EsCsr *m;

  for (int i = 0; i < OUT * IN; i++)
    w[i] = i % 3 == 0 ? 0.0f : (float) (2.0 * es_rng_uniform (&rng) - 1.0);
  for (int i = 0; i < B * IN; i++)
    x[i] = (float) (2.0 * es_rng_uniform (&rng) - 1.0);
  x[5] = NAN;              /* row 0 of the batch: NaN wherever column 5 is used */
  x[IN + 7] = -0.0f;
  memset (w + IN, 0, IN * sizeof (float));   /* row 1 empty: its output is the bias */
  m = es_csr_from_dense (w, OUT, IN, NULL);
  for (int relu = 0; relu < 2; relu++)
    for (int bsz = 1; bsz <= B; bsz += 2)
      {
        es_csr_dense_forward_ref (ref, x, m, bias, relu, bsz);
        es_csr_dense_forward (fast, x, m, bias, relu, bsz, scratch, 0, OUT);
        g_assert_cmpmem (fast, bsz * OUT * sizeof (float), ref, bsz * OUT * sizeof (float));
        /* the empty row is exactly the bias (ReLU'd), -0 bias giving +0 */
        for (int i = 0; i < bsz; i++)
          {
            float v = ref[i * OUT + 1];
            g_assert_true (v == 0.0f && !signbit (v));
            if (relu)
              g_assert_cmpfloat (ref[i * OUT + 4], ==, 0.0f);   /* ReLU(NaN) is 0 */
            else
              g_assert_true (isnan (ref[i * OUT + 4]));
          }
      }
  es_csr_free (m);
}

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return (x > y) - (x < y);
}

/* Median seconds of fn over reps runs, after a warm-up. */
typedef void (*RunFn) (void *data);

static double
median_time (RunFn fn, void *data, int reps, int inner)
{
  double *t = g_new (double, reps);
  double med;

  for (int i = 0; i < inner * 3; i++)
    fn (data);
  for (int r = 0; r < reps; r++)
    {
      double t0 = es_now ();
      for (int i = 0; i < inner; i++)
        fn (data);
      t[r] = (es_now () - t0) / inner;
    }
  qsort (t, reps, sizeof *t, cmp_double);
  med = t[reps / 2];
  g_free (t);
  return med;
}

typedef struct {
  EsBackend *be;
  float *out, *x, *w, *b, *scratch;
  EsCsr *csr;
  int B, IN, OUT;
} Bench;

static void
run_dense (void *data)
{
  Bench *k = data;
  k->be->iface->dense_act_forward (k->be, ES_OP_RELU, k->out, k->x, k->w, k->b, 0.0f, k->B,
                                   k->IN, k->OUT);
}

static void
run_sparse (void *data)
{
  Bench *k = data;
  es_csr_dense_forward (k->out, k->x, k->csr, k->b, true, k->B, k->scratch, 0, k->OUT);
}

static void
run_sparse_ref (void *data)
{
  Bench *k = data;
  es_csr_dense_forward_ref (k->out, k->x, k->csr, k->b, true, k->B);
}

/* 784 -> 128 at 90% sparsity: sparse against dense fp32 on one thread. Printed only:
 * timings are not something a test can assert on a shared machine. */
static void
test_timing (void)
{
  const int IN = 784, OUT = 128;
  const int batches[] = { 1, 64 };
  EsError err = { 0 };
  EsBackend *be = es_cpu_backend_new (1, NULL, &err);
  EsRng rng = { 99 };
  float *w = sparse_weights (&rng, OUT, IN, 0.9);
  float *b = rand_floats (&rng, OUT);
  EsCsr *csr = es_csr_from_dense (w, OUT, IN, NULL);

  g_assert_nonnull (be);
  for (gsize i = 0; i < G_N_ELEMENTS (batches); i++)
    {
      const int B = batches[i];
      Bench k = { be, NULL, rand_floats (&rng, (int64_t) B * IN), w, b, NULL, csr, B, IN, OUT };
      /* short timed runs (~100 us): on a loaded machine, long ones all include some
       * time the process was not scheduled, which the median then cannot remove */
      int inner = B == 1 ? 20 : 1;
      double td, ts, tr;

      k.out = g_new (float, (gsize) B * OUT);
      k.scratch = g_new (float, es_csr_scratch_floats (csr, B) + 1);
      /* sparse first: the backend's pool may keep a worker spinning for a while after
       * a dense call, which would slow what runs next on a small machine */
      ts = median_time (run_sparse, &k, 51, inner);
      tr = median_time (run_sparse_ref, &k, 11, inner);
      td = median_time (run_dense, &k, 51, inner);
      g_test_message ("784x128 at %.0f%% sparsity (%lld nonzeros), B=%d: dense fp32 %.2f us, "
                      "sparse %s %.2f us (%.2fx), sparse scalar %.2f us",
                      100.0 * (1.0 - (double) csr->nnz / (IN * OUT)), (long long) csr->nnz,
                      B, td * 1e6, es_csr_path (), ts * 1e6, td / ts, tr * 1e6);
      g_free (k.out);
      g_free (k.x);
      g_free (k.scratch);
    }
  es_csr_free (csr);
  g_free (w);
  g_free (b);
  es_backend_free (be);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/sparse/from-dense", test_from_dense);
  g_test_add_func ("/sparse/forward", test_forward);
  g_test_add_func ("/sparse/special-values", test_special_values);
  g_test_add_func ("/sparse/timing", test_timing);
  return g_test_run ();
}
