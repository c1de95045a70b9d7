/* test-qgemm.c: the int8 products (es-qgemm.h). Every path this CPU has equals the
 * scalar reference bit for bit: int32 sums, requantized floats (with and without ReLU,
 * transposed), uint8 outputs, on random shapes (odd K, K not a multiple of 4, 16 or 64,
 * 1 to 70 rows), with full-range and reduced-range activations; the saturation case of
 * vpmaddubsw (all 255 activations against all +-127 weights) is exact; the vectorized
 * activation quantizer equals es_quant_act on every value, NaN and infinities included. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "es-qgemm.h"
#include "es-quant.h"

static const EsQGemmPath all_paths[] = { ES_QGEMM_SCALAR, ES_QGEMM_AVX2, ES_QGEMM_VNNI };

typedef struct {
  int      B, K, N;
  int64_t  ldx;
  uint8_t *x;      /* (B, ldx), garbage past K */
  int8_t  *w;      /* (N, K) */
  float   *scale;  /* (N) */
  float   *bias;   /* (N) */
} Problem;

static void
problem_init (Problem *p, int B, int K, int N, bool reduce_range, EsRng *rng)
{
  const int amax = reduce_range ? 127 : 255;

  p->B = B;
  p->K = K;
  p->N = N;
  p->ldx = es_qgemm_row_bytes (K) + 4 * (int64_t) (es_rng_next (rng) % 3);
  p->x = g_malloc ((size_t) (B * p->ldx));
  p->w = g_malloc ((size_t) N * (size_t) K);
  p->scale = g_malloc ((size_t) N * sizeof (float));
  p->bias = g_malloc ((size_t) N * sizeof (float));
  for (int64_t i = 0; i < B * p->ldx; i++)
    p->x[i] = (uint8_t) (es_rng_next (rng) % 256);   /* past K too: must not matter */
  for (int b = 0; b < B; b++)
    for (int k = 0; k < K; k++)
      p->x[b * p->ldx + k] = (uint8_t) (es_rng_next (rng) % (uint64_t) (amax + 1));
  for (int64_t i = 0; i < (int64_t) N * K; i++)
    p->w[i] = (int8_t) ((int) (es_rng_next (rng) % 255) - 127);
  for (int o = 0; o < N; o++)
    {
      p->scale[o] = (float) (1e-3 * (0.5 + es_rng_uniform (rng)));
      p->bias[o] = (float) (es_rng_uniform (rng) - 0.5);
    }
}

static void
problem_clear (Problem *p)
{
  g_free (p->x);
  g_free (p->w);
  g_free (p->scale);
  g_free (p->bias);
}

static EsQGemmWeights *
pack (const Problem *p, bool reduce_range, EsQGemmPath path)
{
  EsError err = { 0 };
  EsQGemmWeights *pw = es_qgemm_pack (p->w, p->scale, p->bias, p->N, p->K, reduce_range,
                                      path, &err);

  g_assert_cmpint (err.code, ==, ES_OK);
  g_assert_nonnull (pw);
  return pw;
}

/* Random shapes: every path's int32 sums equal the reference's. */
static void
test_s32_paths (void)
{
  EsRng rng = { 11 };
  static const int Ks[] = { 1, 2, 3, 4, 5, 7, 15, 16, 17, 31, 63, 64, 65, 100, 127, 129, 255, 784 };
  int checked = 0;

  for (int trial = 0; trial < 60; trial++)
    {
      const bool rr = trial % 2 == 1;
      const int B = 1 + (int) (es_rng_next (&rng) % 70);
      const int K = trial < (int) G_N_ELEMENTS (Ks) ? Ks[trial] : 1 + (int) (es_rng_next (&rng) % 300);
      const int N = 1 + (int) (es_rng_next (&rng) % 70);
      Problem p;
      int32_t *ref, *got;

      problem_init (&p, B, K, N, rr, &rng);
      ref = g_malloc ((size_t) B * (size_t) N * sizeof (int32_t));
      got = g_malloc ((size_t) B * (size_t) N * sizeof (int32_t));
      es_qgemm_ref_s32 (ref, N, p.x, p.ldx, p.w, B, K, N);
      for (size_t pi = 0; pi < G_N_ELEMENTS (all_paths); pi++)
        {
          EsQGemmWeights *pw;

          if (!es_qgemm_path_available (all_paths[pi]))
            continue;
          pw = pack (&p, rr, all_paths[pi]);
          memset (got, 0x5a, (size_t) B * (size_t) N * sizeof (int32_t));
          es_qgemm_s32 (pw, got, N, p.x, p.ldx, B);
          for (int i = 0; i < B * N; i++)
            if (got[i] != ref[i])
              g_error ("%s rr=%d B=%d K=%d N=%d: sum [%d, %d] is %d, the reference %d",
                       es_qgemm_path_name (all_paths[pi]), rr, B, K, N, i / N, i % N, got[i],
                       ref[i]);
          es_qgemm_free (pw);
          checked++;
        }
      g_free (ref);
      g_free (got);
      problem_clear (&p);
    }
  g_assert_cmpint (checked, >=, 60);
}

static void
assert_same_floats (const float *a, const float *b, int64_t n, const char *what)
{
  for (int64_t i = 0; i < n; i++)
    if (memcmp (&a[i], &b[i], sizeof (float)) != 0)
      g_error ("%s: value %" G_GINT64_FORMAT " is %.9g, the reference %.9g", what, i,
               (double) a[i], (double) b[i]);
}

/* The requantized outputs: floats (plain, ReLU, transposed) and uint8, bit for bit. */
static void
test_forward_paths (void)
{
  EsRng rng = { 12 };

  for (int trial = 0; trial < 40; trial++)
    {
      const bool rr = trial % 2 == 0, relu = trial % 3 != 0, transposed = trial % 5 == 1;
      const int B = 1 + (int) (es_rng_next (&rng) % 70);
      const int K = 1 + (int) (es_rng_next (&rng) % 200);
      const int N = 1 + (int) (es_rng_next (&rng) % 70);
      const int qmax = rr ? 127 : 255;
      Problem p;
      float *ref, *got;
      uint8_t *refq, *gotq;
      EsQGemmOut o = { .x_scale = 0.02f, .x_zero = (int32_t) (es_rng_next (&rng) % (uint64_t) (qmax + 1)),
                       .relu = relu, .ld_out = transposed ? B : N, .transposed = transposed,
                       .ld_q = N + 3, .q_inv_scale = 1.0f / 0.05f, .q_zero = 7, .q_qmax = qmax };
      char what[128];

      problem_init (&p, B, K, N, rr, &rng);
      ref = g_malloc ((size_t) B * (size_t) N * sizeof (float));
      got = g_malloc ((size_t) B * (size_t) N * sizeof (float));
      refq = g_malloc0 ((size_t) B * (size_t) (N + 3));
      gotq = g_malloc0 ((size_t) B * (size_t) (N + 3));
      o.out = ref;
      o.out_q = refq;
      es_qgemm_ref_forward (p.x, p.ldx, p.w, p.scale, p.bias, B, K, N, &o);
      for (size_t pi = 0; pi < G_N_ELEMENTS (all_paths); pi++)
        {
          EsQGemmWeights *pw;

          if (!es_qgemm_path_available (all_paths[pi]))
            continue;
          pw = pack (&p, rr, all_paths[pi]);
          memset (got, 0, (size_t) B * (size_t) N * sizeof (float));
          memset (gotq, 0, (size_t) B * (size_t) (N + 3));
          o.out = got;
          o.out_q = gotq;
          es_qgemm_forward (pw, p.x, p.ldx, B, &o);
          g_snprintf (what, sizeof what, "%s rr=%d relu=%d T=%d B=%d K=%d N=%d",
                      es_qgemm_path_name (all_paths[pi]), rr, relu, transposed, B, K, N);
          assert_same_floats (got, ref, (int64_t) B * N, what);
          g_assert_cmpmem (gotq, (size_t) B * (size_t) (N + 3), refq, (size_t) B * (size_t) (N + 3));
          es_qgemm_free (pw);
        }
      /* and the reference agrees with the formula in doubles */
      for (int b = 0; b < B; b++)
        for (int n = 0; n < N; n++)
          {
            double acc = 0.0, y;

            for (int k = 0; k < K; k++)
              acc += ((double) p.x[b * p.ldx + k] - o.x_zero) * p.w[n * K + k];
            y = (double) o.x_scale * p.scale[n] * acc + p.bias[n];
            if (relu)
              y = fmax (y, 0.0);
            g_assert_cmpfloat_with_epsilon (ref[transposed ? n * B + b : b * N + n], y,
                                            1e-5 * (1.0 + fabs (y)));
          }
      g_free (ref);
      g_free (got);
      g_free (refq);
      g_free (gotq);
      problem_clear (&p);
    }
}

/* vpmaddubsw would saturate on 255 * 127 + 255 * 127: no path may. */
static void
test_saturation (void)
{
  const int B = 7, K = 1027, N = 19;
  uint8_t *x = g_malloc ((size_t) B * (size_t) es_qgemm_row_bytes (K));
  int8_t *w = g_malloc ((size_t) N * K);
  float *scale = g_malloc (N * sizeof (float));
  int32_t *acc = g_malloc ((size_t) B * N * sizeof (int32_t));
  const int64_t ldx = es_qgemm_row_bytes (K);

  for (int rr = 0; rr < 2; rr++)
    {
      const int a = rr ? 127 : 255;

      memset (x, a, (size_t) B * (size_t) ldx);
      for (int n = 0; n < N; n++)
        {
          scale[n] = 1.0f;
          for (int k = 0; k < K; k++)   /* row 0 all +127, row 1 all -127, then mixed */
            w[n * K + k] = (int8_t) (n == 0 ? 127 : n == 1 ? -127 : (k + n) % 2 ? 127 : -127);
        }
      for (size_t pi = 0; pi < G_N_ELEMENTS (all_paths); pi++)
        {
          EsQGemmWeights *pw;

          if (!es_qgemm_path_available (all_paths[pi]))
            continue;
          pw = es_qgemm_pack (w, scale, NULL, N, K, rr, all_paths[pi], NULL);
          g_assert_nonnull (pw);
          es_qgemm_s32 (pw, acc, N, x, ldx, B);
          for (int b = 0; b < B; b++)
            for (int n = 0; n < N; n++)
              {
                int64_t want = 0;

                for (int k = 0; k < K; k++)
                  want += (int64_t) a * w[n * K + k];
                g_assert_cmpint (acc[b * N + n], ==, want);
              }
          g_assert_cmpint (acc[0], ==, (int64_t) a * 127 * K);
          g_assert_cmpint (acc[1], ==, -(int64_t) a * 127 * K);
          es_qgemm_free (pw);
        }
    }
  g_free (x);
  g_free (w);
  g_free (scale);
  g_free (acc);
}

/* The vectorized quantizer is es_quant_act, value for value. */
static void
test_quantize_paths (void)
{
  static const float special[] = { NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 0.5f, 1.5f,
                                   2.5f, -0.5f, -1.5f, 1e30f, -1e30f, 3e9f, -3e9f, 1e19f,
                                   -1e19f, 1e-42f, 254.5f, 255.5f, 126.5f, 127.5f };
  EsRng rng = { 13 };

  for (int trial = 0; trial < 30; trial++)
    {
      const int K = 1 + (int) (es_rng_next (&rng) % 100), B = 1 + trial % 4;
      const int qmax = trial % 2 ? 127 : 255;
      const float scale = trial % 3 == 0 ? 1.0f : (float) (0.001 + es_rng_uniform (&rng) * 0.1);
      const float inv = 1.0f / scale;
      const int32_t zero = (int32_t) (es_rng_next (&rng) % (uint64_t) (qmax + 1));
      const int64_t ldq = es_qgemm_row_bytes (K) + 8;
      float *x = g_malloc ((size_t) B * K * sizeof (float));
      uint8_t *q = g_malloc ((size_t) B * ldq);

      for (int i = 0; i < B * K; i++)
        x[i] = (i + trial) % 5 == 0 ? special[(i + trial) % G_N_ELEMENTS (special)]
                                    : (float) ((es_rng_uniform (&rng) - 0.4) * 3.0 * scale * qmax);
      for (size_t pi = 0; pi < G_N_ELEMENTS (all_paths); pi++)
        {
          if (!es_qgemm_path_available (all_paths[pi]))
            continue;
          memset (q, 0xee, (size_t) B * ldq);
          es_qgemm_quantize (all_paths[pi], q, ldq, x, K, B, K, inv, zero, qmax);
          for (int b = 0; b < B; b++)
            {
              for (int k = 0; k < K; k++)
                if (q[b * ldq + k] != es_quant_act (x[b * K + k], inv, zero, qmax))
                  g_error ("%s: quantize (%.9g) gave %d, es_quant_act %d",
                           es_qgemm_path_name (all_paths[pi]), (double) x[b * K + k],
                           q[b * ldq + k], es_quant_act (x[b * K + k], inv, zero, qmax));
              for (int64_t k = K; k < es_qgemm_row_bytes (K); k++)
                g_assert_cmpint (q[b * ldq + k], ==, 0);
            }
        }
      g_free (x);
      g_free (q);
    }
}

static void
test_minmax (void)
{
  EsRng rng = { 14 };

  for (int n = 0; n < 70; n++)
    {
      float *x = g_malloc ((size_t) ES_MAX (n, 1) * sizeof (float));
      float lo0 = INFINITY, hi0 = -INFINITY;

      for (int i = 0; i < n; i++)
        {
          x[i] = i % 7 == 3 ? NAN : (float) (es_rng_uniform (&rng) * 10.0 - 4.0);
          if (x[i] < lo0)
            lo0 = x[i];
          if (x[i] > hi0)
            hi0 = x[i];
        }
      if (!(lo0 <= hi0))
        lo0 = hi0 = 0.0f;
      for (size_t pi = 0; pi < G_N_ELEMENTS (all_paths); pi++)
        {
          float lo, hi;

          if (!es_qgemm_path_available (all_paths[pi]))
            continue;
          es_qgemm_minmax (all_paths[pi], x, n, &lo, &hi);
          g_assert_cmpfloat (lo, ==, lo0);
          g_assert_cmpfloat (hi, ==, hi0);
        }
      g_free (x);
    }
}

static void
test_errors (void)
{
  int8_t w[4] = { 1, 2, 3, 4 };
  float s[2] = { 1, 1 };
  EsError err = { 0 };

  g_assert_null (es_qgemm_pack (w, s, NULL, 2, 0, false, ES_QGEMM_SCALAR, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  es_error_clear (&err);
  g_assert_null (es_qgemm_pack (w, s, NULL, 0, 2, false, ES_QGEMM_SCALAR, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  es_error_clear (&err);
  g_assert_null (es_qgemm_pack (w, s, NULL, 1, ES_QGEMM_MAX_K + 1, false, ES_QGEMM_SCALAR, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  g_assert_true (es_qgemm_path_available (ES_QGEMM_SCALAR));
  g_assert_true (es_qgemm_path_available (es_qgemm_default_path ()));
  g_test_message ("int8 path: %s (avx2 %s, vnni %s)", es_qgemm_path_name (es_qgemm_default_path ()),
                  es_qgemm_path_available (ES_QGEMM_AVX2) ? "yes" : "no",
                  es_qgemm_path_available (ES_QGEMM_VNNI) ? "yes" : "no");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/qgemm/s32-paths", test_s32_paths);
  g_test_add_func ("/qgemm/forward-paths", test_forward_paths);
  g_test_add_func ("/qgemm/saturation", test_saturation);
  g_test_add_func ("/qgemm/quantize-paths", test_quantize_paths);
  g_test_add_func ("/qgemm/minmax", test_minmax);
  g_test_add_func ("/qgemm/errors", test_errors);
  return g_test_run ();
}
