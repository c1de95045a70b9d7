/* test-train-opt.c: the trainer's model-slimming features and their backend ops.
 * Pruning masks hold pruned weights at exactly zero through Adam steps (with and
 * without accumulation), are written back by sync and let weights grow back when
 * removed. Quantization-aware training: the forward pass equals a reference built here
 * from the es-quant.h helpers and es-ref.h kernels, the weight and input gradients are
 * those of the float layer at the fake-quantized weights and inputs with the input
 * gradient zeroed outside the tracked range (the straight-through estimator), ranges
 * are tracked as stated, and a QAT model learns a toy task. Distillation: the loss
 * equals the formula computed here, its gradient matches finite differences, alpha = 0
 * is plain cross-entropy bit for bit, and a student trained on a teacher comes closer
 * to it. The CPU ops match the reference kernels bit for bit.
 *
 * Exactness where it matters: the QAT references use weights and inputs on dyadic grids
 * (k / 2^n) with power-of-two quantization scales, so every sum before a quantizer is
 * exact in float whatever order a kernel adds in, and both sides round the same values.
 * Tolerances: 1e-5 for outputs and gradients after a float layer. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "es-backend.h"
#include "es-quant.h"
#include "es-ref.h"
#include "es-train.h"

#include "engine-test-util.h"

/* ---- helpers -------------------------------------------------------------------- */

/* Dense(hidden) -> Tanh -> Dense(3) [-> Softmax] on 2 inputs. */
static EsModel *
mlp (int hidden, bool softmax, uint64_t seed)
{
  EsShape in = { 1, { 2 } };
  EsLayerSpec l[4];
  int n = 0;
  EsModel *m;

  l[n] = es_layer_spec_default (ES_LAYER_DENSE);
  l[n++].units = hidden;
  l[n++] = es_layer_spec_default (ES_LAYER_TANH);
  l[n] = es_layer_spec_default (ES_LAYER_DENSE);
  l[n++].units = 3;
  if (softmax)
    l[n++] = es_layer_spec_default (ES_LAYER_SOFTMAX);
  m = es_model_new (&in, l, n, NULL);
  g_assert_nonnull (m);
  es_model_init (m, seed);
  return m;
}

/* One epoch over (x (n, 2), y) in batches; returns the mean loss. */
static double
train_epoch (EsTrainer *tr, const float *x, const int32_t *y, int n, int batch)
{
  EsStepStats st = { 0 };

  for (int r = 0; r < n; r += batch)
    {
      EsBatch b = { .B = MIN (batch, n - r), .x_f32 = x + 2 * r, .labels = y + r };
      EsError err = { 0 };

      if (!es_trainer_train_batch (tr, &b, &st, &err))
        g_error ("train_batch: %s", err.message);
    }
  return st.loss_sum / st.rows;
}

static double
eval_loss (EsTrainer *tr, const float *x, const int32_t *y, int n, double *accuracy)
{
  EsStepStats st = { 0 };
  EsBatch b = { .B = n, .x_f32 = x, .labels = y };

  g_assert_true (es_trainer_eval_batch (tr, &b, &st, NULL, NULL));
  if (accuracy != NULL)
    *accuracy = (double) st.correct / st.rows;
  return st.loss_sum / st.rows;
}

static float *
layer_weight (EsModel *m, int layer)
{
  return es_model_tensor_data (m, es_model_layer (m, layer)->first_tensor);
}

static float *
layer_bias (EsModel *m, int layer)
{
  return es_model_tensor_data (m, es_model_layer (m, layer)->first_tensor + 1);
}

/* A random integer in [lo, hi]. */
static int
rand_int (EsRng *rng, int lo, int hi)
{
  return lo + (int) (es_rng_uniform (rng) * (hi - lo + 1));
}

/* max |a - b| over n, with the index printed when above tol. */
static void
check_close (const char *what, const float *got, const float *want, int64_t n, double tol)
{
  int bad = 0;

  for (int64_t i = 0; i < n; i++)
    if (!(fabs ((double) got[i] - (double) want[i]) <= tol))
      {
        if (bad++ < 5)
          g_test_message ("%s[%" G_GINT64_FORMAT "]: got %.9g want %.9g", what, i,
                          (double) got[i], (double) want[i]);
      }
  if (bad > 0)
    g_error ("%s: %d of %" G_GINT64_FORMAT " values differ by more than %g", what, bad, n, tol);
}

static void
check_equal (const char *what, const float *got, const float *want, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    if (memcmp (&got[i], &want[i], sizeof (float)) != 0)
      g_error ("%s[%" G_GINT64_FORMAT "]: got %.9g want %.9g", what, i, (double) got[i],
               (double) want[i]);
}

/* The test's own fake quantization, straight from es-quant.h. */
static void
fq_weights (float *out, const float *w, int rows, int cols)
{
  for (int r = 0; r < rows; r++)
    {
      float m = 0.0f, s;

      for (int c = 0; c < cols; c++)
        m = fmaxf (m, fabsf (w[r * cols + c]));
      s = es_quant_weight_scale (m);
      for (int c = 0; c < cols; c++)
        out[r * cols + c] = (float) es_quant_weight (w[r * cols + c], 1.0f / s) * s;
    }
}

static void
fq_act (float *out, const float *x, int64_t n, float lo, float hi, int qmax)
{
  float s;
  int32_t z;

  es_quant_act_params (lo, hi, qmax, &s, &z);
  for (int64_t i = 0; i < n; i++)
    out[i] = (float) (es_quant_act (x[i], 1.0f / s, z, qmax) - z) * s;
}

/* a float computed in a few float operations against its value in double */
static bool
close_to (float got, double want)
{
  return fabs ((double) got - want) <= 1e-6 * (1.0 + fabs (want));
}

static void
min_max (const float *x, int64_t n, float *lo, float *hi)
{
  *lo = INFINITY;
  *hi = -INFINITY;
  for (int64_t i = 0; i < n; i++)
    {
      *lo = fminf (*lo, x[i]);
      *hi = fmaxf (*hi, x[i]);
    }
}

/* ---- backend ops against the reference ------------------------------------------ */

static void
test_ops (void)
{
  enum { N = 100003 };  /* odd, and past the pool's split */
  EsBackend *be = es_cpu_backend_new (2, NULL, NULL);
  const EsBackendIface *b = be->iface;
  EsRng rng = { 42 };
  g_autofree float *x = g_new (float, N);
  g_autofree float *got = g_new (float, N);
  g_autofree float *want = g_new (float, N);
  g_autofree float *dout = g_new (float, N);
  g_autofree uint8_t *mask = g_new (uint8_t, N);

  for (int op = ES_OP_MASK_APPLY; op <= ES_OP_DISTILL; op++)
    g_assert_true (b->supports_op (be, (EsOp) op));

  for (int i = 0; i < N; i++)
    {
      x[i] = (float) (es_rng_normal (&rng) * 3.0);
      dout[i] = (float) es_rng_normal (&rng);
      mask[i] = es_rng_uniform (&rng) < 0.3 ? 0 : (uint8_t) (1 + i % 3);
    }
  x[17] = NAN;
  x[18] = INFINITY;

  /* mask_apply, at several lengths and offsets (vector tails) */
  for (int n = 1; n <= N; n = n * 7 + 3)
    {
      memcpy (got, x + 1, (size_t) n * sizeof (float));
      memcpy (want, x + 1, (size_t) n * sizeof (float));
      b->mask_apply (be, got, mask + 1, n);
      es_ref_mask_apply_f32 (want, mask + 1, n);
      check_equal ("mask_apply", got, want, n);
    }

  /* min_max: NaN skipped, inf counted; without them too */
  for (int n = 1; n <= N; n = n * 5 + 1)
    {
      float lo, hi, rlo, rhi;

      b->min_max (be, &lo, &hi, x, n);
      es_ref_min_max_f32 (&rlo, &rhi, x, n);
      g_assert_cmpfloat (lo, ==, rlo);
      g_assert_cmpfloat (hi, ==, rhi);
      b->min_max (be, &lo, &hi, x + 19, MIN (n, N - 19));
      es_ref_min_max_f32 (&rlo, &rhi, x + 19, MIN (n, N - 19));
      g_assert_cmpfloat (lo, ==, rlo);
      g_assert_cmpfloat (hi, ==, rhi);
      g_assert_true (isfinite (lo) && isfinite (hi));
    }

  /* fake_quant_weights: rows of several magnitudes, a zero row, ties */
  {
    enum { ROWS = 37, COLS = 203 };
    g_autofree float *w = g_new (float, ROWS * COLS);

    for (int r = 0; r < ROWS; r++)
      for (int c = 0; c < COLS; c++)
        w[r * COLS + c] = r == 3 ? 0.0f : (float) es_rng_normal (&rng) * powf (10.0f, (float) (r % 7 - 3));
    /* a row with max 127/128 and values at exact half steps (ties to even) */
    for (int c = 0; c < COLS; c++)
      w[5 * COLS + c] = c == 0 ? 127.0f / 128.0f : (float) (c - 100) / 256.0f;
    b->fake_quant_weights (be, got, w, ROWS, COLS);
    es_ref_fake_quant_weights_f32 (want, w, ROWS, COLS);
    check_equal ("fake_quant_weights", got, want, ROWS * COLS);
    fq_weights (want, w, ROWS, COLS);
    check_equal ("fake_quant_weights vs es-quant.h", got, want, ROWS * COLS);
    /* in place */
    b->fake_quant_weights (be, w, w, ROWS, COLS);
    check_equal ("fake_quant_weights in place", w, want, ROWS * COLS);
  }

  /* fake_quant_act over ranges that clip, with ties, huge values and NaN */
  {
    static const float ranges[][2] = { { -1.0f, 2.0f }, { 0.5f, 3.0f }, { -4.0f, -1.0f },
                                       { -2.0f, 127.0f / 64.0f }, { 0.0f, 0.0f } };

    x[20] = -INFINITY;
    x[21] = 3e30f;
    x[22] = -3e30f;
    for (int i = 30; i < 300; i++)
      x[i] = (float) (i - 160) / 128.0f;  /* half steps of s = 1/64 */
    for (guint k = 0; k < G_N_ELEMENTS (ranges); k++)
      for (int qmax = 127; qmax <= 255; qmax += 128)
        {
          b->fake_quant_act (be, got, x, ranges[k][0], ranges[k][1], qmax, N);
          es_ref_fake_quant_act_f32 (want, x, ranges[k][0], ranges[k][1], qmax, N);
          check_equal ("fake_quant_act", got, want, N);
          fq_act (want, x, N, ranges[k][0], ranges[k][1], qmax);
          check_equal ("fake_quant_act vs es-quant.h", got, want, N);
        }
    /* in place */
    memcpy (got, x, N * sizeof (float));
    b->fake_quant_act (be, got, got, -1.0f, 2.0f, 255, N);
    fq_act (want, x, N, -1.0f, 2.0f, 255);
    check_equal ("fake_quant_act in place", got, want, N);
  }

  /* the straight-through gradient, also in place */
  b->fake_quant_act_backward (be, got, dout, x, -1.0f, 2.0f, N);
  es_ref_fake_quant_act_backward_f32 (want, dout, x, -1.0f, 2.0f, N);
  check_equal ("fake_quant_act_backward", got, want, N);
  for (int i = 0; i < N; i++)
    g_assert_true (want[i] == ((x[i] >= -1.0f && x[i] <= 2.0f) ? dout[i] : 0.0f));
  memcpy (got, dout, N * sizeof (float));
  b->fake_quant_act_backward (be, got, got, x, 0.5f, 3.0f, N);  /* widened to [0, 3] */
  es_ref_fake_quant_act_backward_f32 (want, dout, x, 0.0f, 3.0f, N);
  check_equal ("fake_quant_act_backward in place", got, want, N);

  /* distillation: the CPU runs the reference */
  {
    enum { B = 7, C = 10 };
    float logits[B * C], teacher[B * C], probs[2][B * C], ss[2][B * C], st[2][B * C];
    float losses[2][B], dl[2][B * C];
    int32_t labels[B];
    float l0, l1;

    for (int i = 0; i < B * C; i++)
      {
        logits[i] = (float) es_rng_normal (&rng) * 4.0f;
        teacher[i] = (float) es_rng_normal (&rng) * 4.0f;
      }
    for (int i = 0; i < B; i++)
      labels[i] = i % C;
    l0 = b->distill_forward (be, probs[0], ss[0], st[0], losses[0], logits, teacher, labels,
                             3.0f, 0.4f, B, C);
    l1 = es_ref_distill_forward_f32 (probs[1], ss[1], st[1], losses[1], logits, teacher,
                                     labels, 3.0f, 0.4f, B, C);
    g_assert_cmpfloat (l0, ==, l1);
    check_equal ("distill probs", probs[0], probs[1], B * C);
    check_equal ("distill losses", losses[0], losses[1], B);
    b->distill_backward (be, dl[0], probs[0], ss[0], st[0], labels, 3.0f, 0.4f, 0.25f, B, C);
    es_ref_distill_backward_f32 (dl[1], probs[1], ss[1], st[1], labels, 3.0f, 0.4f, 0.25f, B, C);
    check_equal ("distill dlogits", dl[0], dl[1], B * C);
  }
  es_backend_free (be);
}

/* ---- distillation loss: formula and gradient ------------------------------------- */

/* The loss of one row in double, from the definition. */
static double
distill_row (const double *s, const double *t, int label, double T, double alpha, int C)
{
  double ms = -INFINITY, mt = -INFINITY, zs = 0, zst = 0, ztt = 0, ce, kl = 0;

  for (int c = 0; c < C; c++)
    {
      ms = fmax (ms, s[c]);
      mt = fmax (mt, t[c]);
    }
  for (int c = 0; c < C; c++)
    {
      zs += exp (s[c] - ms);
      zst += exp ((s[c] - ms) / T);
      ztt += exp ((t[c] - mt) / T);
    }
  ce = ms + log (zs) - s[label];
  for (int c = 0; c < C; c++)
    {
      double pt = exp ((t[c] - mt) / T) / ztt;
      double ps = exp ((s[c] - ms) / T) / zst;

      kl += pt * (log (pt) - log (ps));
    }
  return (1 - alpha) * ce + alpha * T * T * kl;
}

static void
test_distill_gradcheck (void)
{
  enum { B = 3, C = 5 };
  EsRng rng = { 7 };
  double s[B * C], t[B * C], probs[B * C], ss[B * C], st[B * C], losses[B], dl[B * C];
  int32_t labels[B] = { 0, 3, 4 };
  const double T = 2.5, alpha = 0.6, scale = 1.0 / B;

  for (int i = 0; i < B * C; i++)
    {
      s[i] = es_rng_normal (&rng) * 2.0;
      t[i] = es_rng_normal (&rng) * 2.0;
    }
  {
    double mean = es_ref_distill_forward_f64 (probs, ss, st, losses, s, t, labels, T, alpha, B, C);
    double want = 0;

    for (int b = 0; b < B; b++)
      {
        double row = distill_row (s + b * C, t + b * C, labels[b], T, alpha, C);

        g_assert_cmpfloat (fabs (losses[b] - row), <=, 1e-12 * (1 + fabs (row)));
        want += row / B;
      }
    g_assert_cmpfloat (fabs (mean - want), <=, 1e-12);
  }
  es_ref_distill_backward_f64 (dl, probs, ss, st, labels, T, alpha, scale, B, C);
  for (int i = 0; i < B * C; i++)
    {
      const double h = 1e-6, keep = s[i];
      double lp, lm, fd;

      s[i] = keep + h;
      lp = es_ref_distill_forward_f64 (probs, ss, st, NULL, s, t, labels, T, alpha, B, C);
      s[i] = keep - h;
      lm = es_ref_distill_forward_f64 (probs, ss, st, NULL, s, t, labels, T, alpha, B, C);
      s[i] = keep;
      /* the forward returns the mean: scale * sum = scale * B * mean */
      fd = scale * B * (lp - lm) / (2 * h);
      if (fabs (fd - dl[i]) > 1e-8 * (1 + fabs (fd)))
        g_error ("dlogits[%d]: analytic %.12g, finite differences %.12g", i, dl[i], fd);
    }

  /* alpha = 0 is softmax cross-entropy, bit for bit, in float */
  {
    float fs[B * C], ft[B * C], p0[B * C], p1[B * C], fss[B * C], fst[B * C];
    float l0[B], l1[B], d0[B * C], d1[B * C];
    float m0, m1;

    for (int i = 0; i < B * C; i++)
      {
        fs[i] = (float) s[i];
        ft[i] = (float) t[i];
      }
    m0 = es_ref_distill_forward_f32 (p0, fss, fst, l0, fs, ft, labels, 4.0f, 0.0f, B, C);
    m1 = es_ref_softmax_xent_forward_f32 (p1, l1, fs, labels, B, C);
    g_assert_cmpfloat (m0, ==, m1);
    check_equal ("alpha 0 probs", p0, p1, B * C);
    check_equal ("alpha 0 losses", l0, l1, B);
    es_ref_distill_backward_f32 (d0, p0, fss, fst, labels, 4.0f, 0.0f, 0.125f, B, C);
    es_ref_softmax_xent_backward_f32 (d1, p1, labels, 0.125f, B, C);
    check_equal ("alpha 0 dlogits", d0, d1, B * C);
  }
}

/* The trainer's mixed loss on a tiny batch equals the formula. */
static void
test_distill_loss_value (void)
{
  enum { B = 2, C = 3 };
  EsShape in = { 1, { 2 } };
  EsLayerSpec ls = es_layer_spec_default (ES_LAYER_DENSE);
  EsLayerSpec lt[2] = { es_layer_spec_default (ES_LAYER_DENSE),
                        es_layer_spec_default (ES_LAYER_SOFTMAX) };
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsModel *student, *teacher;
  EsTrainConfig cfg;
  EsTrainer *tr;
  EsError err = { 0 };
  const float x[B * 2] = { 0.5f, -1.25f, 2.0f, 0.75f };
  const int32_t y[B] = { 2, 0 };
  const float T = 2.0f, alpha = 0.7f;
  double want = 0;

  ls.units = C;
  lt[0].units = C;
  student = es_model_new (&in, &ls, 1, NULL);
  teacher = es_model_new (&in, lt, 2, NULL);
  es_model_init (student, 1);
  es_model_init (teacher, 2);
  for (int o = 0; o < C; o++)
    {
      layer_bias (student, 0)[o] = 0.1f * (float) o;
      layer_bias (teacher, 0)[o] = -0.2f * (float) o;
    }
  for (int r = 0; r < B; r++)
    {
      double s[C], t[C];

      for (int o = 0; o < C; o++)
        {
          s[o] = layer_bias (student, 0)[o];
          t[o] = layer_bias (teacher, 0)[o];
          for (int i = 0; i < 2; i++)
            {
              s[o] += (double) layer_weight (student, 0)[o * 2 + i] * x[r * 2 + i];
              t[o] += (double) layer_weight (teacher, 0)[o * 2 + i] * x[r * 2 + i];
            }
        }
      want += distill_row (s, t, y[r], T, alpha, C) / B;
    }

  es_train_config_default (&cfg);
  cfg.optimizer = ES_OPT_SGD;
  tr = es_trainer_new (student, be, &cfg, B, NULL);
  g_assert_true (es_trainer_set_teacher (tr, teacher, T, alpha, &err));
  {
    EsStepStats st = { 0 };
    EsBatch batch = { .B = B, .x_f32 = x, .labels = y };

    g_assert_true (es_trainer_eval_batch (tr, &batch, &st, NULL, NULL));
    g_test_message ("mixed loss %.7f, formula %.7f", st.loss_sum / B, want);
    g_assert_cmpfloat (fabs (st.loss_sum / B - want), <=, 1e-5 * (1 + fabs (want)));
    /* training reports the same loss (computed before its step) */
    memset (&st, 0, sizeof st);
    g_assert_true (es_trainer_train_batch (tr, &batch, &st, NULL));
    g_assert_cmpfloat (fabs (st.loss_sum / B - want), <=, 1e-5 * (1 + fabs (want)));
  }
  /* off again: plain cross-entropy, which differs */
  g_assert_true (es_trainer_set_teacher (tr, NULL, 0, 0, NULL));
  es_trainer_free (tr);
  es_model_free (student);
  es_model_free (teacher);
  es_backend_free (be);
}

/* A teacher with every kind of layer runs in inference mode (BatchNorm's running
 * statistics, Dropout off, MaxPool, its final Softmax skipped): at T = 1 and alpha = 1
 * the loss is KL(teacher || student) of the two models' own predictions. */
static void
test_distill_teacher_layers (void)
{
  enum { B = 6, C = 5 };
  EsShape in = { 3, { 1, 8, 8 } };
  EsLayerSpec lt[8], ls[3];
  EsBackend *be = es_cpu_backend_new (2, NULL, NULL);
  EsModel *teacher, *student;
  EsTrainConfig cfg;
  EsTrainer *tr;
  EsInfer *it, *is;
  EsRng rng = { 9 };
  float x[B * 64], pt[B * C], ps[B * C];
  int32_t y[B];
  double want = 0;
  int n = 0;

  lt[n] = es_layer_spec_default (ES_LAYER_CONV2D);
  lt[n].filters = 4;
  lt[n].kernel = 3;
  lt[n++].padding = 1;
  lt[n++] = es_layer_spec_default (ES_LAYER_BATCHNORM);
  lt[n++] = es_layer_spec_default (ES_LAYER_RELU);
  lt[n] = es_layer_spec_default (ES_LAYER_MAXPOOL2D);
  lt[n++].kernel = 2;
  lt[n] = es_layer_spec_default (ES_LAYER_DROPOUT);
  lt[n++].rate = 0.3f;
  lt[n++] = es_layer_spec_default (ES_LAYER_FLATTEN);
  lt[n] = es_layer_spec_default (ES_LAYER_DENSE);
  lt[n++].units = C;
  lt[n++] = es_layer_spec_default (ES_LAYER_SOFTMAX);
  teacher = es_model_new (&in, lt, n, NULL);
  g_assert_nonnull (teacher);
  es_model_init (teacher, 1);
  for (int i = 0; i < 4; i++)
    {
      es_model_buffers (teacher)[i] = 0.1f * (float) i;         /* running mean */
      es_model_buffers (teacher)[4 + i] = 1.0f + 0.5f * (float) i;  /* running var */
    }
  ls[0] = es_layer_spec_default (ES_LAYER_FLATTEN);
  ls[1] = es_layer_spec_default (ES_LAYER_DENSE);
  ls[1].units = C;
  ls[2] = es_layer_spec_default (ES_LAYER_SOFTMAX);
  student = es_model_new (&in, ls, 3, NULL);
  es_model_init (student, 2);
  for (int i = 0; i < B * 64; i++)
    x[i] = (float) es_rng_normal (&rng);
  for (int i = 0; i < B; i++)
    y[i] = i % C;

  it = es_infer_new (teacher, be, B, NULL);
  is = es_infer_new (student, be, B, NULL);
  memcpy (pt, es_infer_run (it, x, B), sizeof pt);
  memcpy (ps, es_infer_run (is, x, B), sizeof ps);
  for (int i = 0; i < B * C; i++)
    want += (double) pt[i] * (log (pt[i]) - log (ps[i])) / B;

  es_train_config_default (&cfg);
  tr = es_trainer_new (student, be, &cfg, B, NULL);
  g_assert_true (es_trainer_set_teacher (tr, teacher, 1.0f, 1.0f, NULL));
  {
    EsStepStats st = { 0 };
    EsBatch batch = { .B = B, .x_f32 = x, .labels = y };

    g_assert_true (es_trainer_eval_batch (tr, &batch, &st, NULL, NULL));
    g_test_message ("KL %.7f, from the two models' predictions %.7f", st.loss_sum / B, want);
    g_assert_cmpfloat (want, >, 0.01);
    g_assert_cmpfloat (fabs (st.loss_sum / B - want), <=, 1e-5 * (1 + want));
  }
  es_trainer_free (tr);
  es_infer_free (it);
  es_infer_free (is);
  es_model_free (teacher);
  es_model_free (student);
  es_backend_free (be);
}

/* alpha = 0: the same run as without a teacher, bit for bit, with a fused Softmax. */
static void
test_distill_alpha0 (void)
{
  enum { N = 240, BATCH = 24 };
  g_autofree float *x = g_new (float, 2 * N);
  g_autofree int32_t *y = g_new (int32_t, N);
  EsBackend *be = es_cpu_backend_new (2, NULL, NULL);
  EsModel *teacher = mlp (32, true, 99);
  EsModel *a = mlp (8, true, 5), *b = mlp (8, true, 5);
  EsTrainConfig cfg;
  EsTrainer *ta, *tb;

  etu_blobs (x, y, N, 3);
  es_train_config_default (&cfg);
  cfg.lr = 0.01f;
  ta = es_trainer_new (a, be, &cfg, BATCH, NULL);
  tb = es_trainer_new (b, be, &cfg, BATCH, NULL);
  g_assert_true (es_trainer_set_teacher (tb, teacher, 3.0f, 0.0f, NULL));
  for (int e = 0; e < 3; e++)
    {
      double la = train_epoch (ta, x, y, N, BATCH);
      double lb = train_epoch (tb, x, y, N, BATCH);

      g_assert_cmpfloat (la, ==, lb);
    }
  es_trainer_sync (ta);
  es_trainer_sync (tb);
  check_equal ("alpha 0 parameters", es_model_params (b), es_model_params (a), es_model_n_params (a));
  es_trainer_free (ta);
  es_trainer_free (tb);
  es_model_free (a);
  es_model_free (b);
  es_model_free (teacher);
  es_backend_free (be);
}

/* A student trained on the teacher alone (alpha = 1) comes closer to it: the loss is
 * then T^2 KL(teacher || student). */
static void
test_distill_learns (void)
{
  enum { N = 300, BATCH = 30 };
  g_autofree float *x = g_new (float, 2 * N);
  g_autofree int32_t *y = g_new (int32_t, N);
  EsBackend *be = es_cpu_backend_new (2, NULL, NULL);
  EsModel *teacher = mlp (32, true, 11), *student = mlp (6, true, 12);
  EsTrainConfig cfg;
  EsTrainer *tt, *ts;
  double before, after, acc;

  etu_blobs (x, y, N, 5);
  es_train_config_default (&cfg);
  cfg.lr = 0.02f;
  tt = es_trainer_new (teacher, be, &cfg, BATCH, NULL);
  for (int e = 0; e < 15; e++)
    train_epoch (tt, x, y, N, BATCH);
  es_trainer_sync (tt);
  eval_loss (tt, x, y, N, &acc);
  g_test_message ("teacher accuracy %.3f", acc);

  ts = es_trainer_new (student, be, &cfg, BATCH, NULL);
  g_assert_true (es_trainer_set_teacher (ts, teacher, 2.0f, 1.0f, NULL));
  before = eval_loss (ts, x, y, N, NULL);
  for (int e = 0; e < 15; e++)
    train_epoch (ts, x, y, N, BATCH);
  after = eval_loss (ts, x, y, N, &acc);
  g_test_message ("T^2 KL %.4f -> %.4f, student accuracy %.3f", before, after, acc);
  g_assert_cmpfloat (after, <, 0.3 * before);
  g_assert_cmpfloat (acc, >=, 0.9);
  es_trainer_free (ts);
  es_trainer_free (tt);
  es_model_free (student);
  es_model_free (teacher);
  es_backend_free (be);
}

/* ---- pruning masks --------------------------------------------------------------- */

static void
test_mask (gconstpointer data)
{
  const int accum = GPOINTER_TO_INT (data);
  enum { N = 240, BATCH = 16 };
  g_autofree float *x = g_new (float, 2 * N);
  g_autofree int32_t *y = g_new (int32_t, N);
  EsBackend *be = es_cpu_backend_new (2, NULL, NULL);
  EsModel *m = mlp (16, true, 21);
  int64_t P = es_model_n_params (m);
  g_autofree uint8_t *mask = g_new (uint8_t, P);
  g_autofree float *p0 = g_memdup2 (es_model_params (m), (gsize) P * sizeof (float));
  EsTrainConfig cfg;
  EsTrainer *tr;
  EsRng rng = { 77 };
  int64_t pruned = 0, kept = 0, changed = 0, regrown = 0;

  etu_blobs (x, y, N, 13);
  /* half of the first layer's weights at random, a third of the second's such that
   * every hidden unit keeps an output (so every kept weight has a gradient); biases
   * always kept */
  memset (mask, 1, (size_t) P);
  {
    const EsTensorInfo *tw0 = es_model_tensor (m, es_model_layer (m, 0)->first_tensor);
    const EsTensorInfo *tw2 = es_model_tensor (m, es_model_layer (m, 2)->first_tensor);

    for (int64_t i = 0; i < tw0->size; i++)
      mask[tw0->offset + i] = es_rng_uniform (&rng) < 0.5 ? 0 : 1;
    for (int o = 0; o < 3; o++)
      for (int j = 0; j < 16; j++)
        mask[tw2->offset + o * 16 + j] = (o + j) % 3 != 0;
  }
  es_train_config_default (&cfg);
  cfg.lr = 0.01f;
  cfg.accum_steps = accum;
  cfg.clip_norm = 1.0f;
  tr = es_trainer_new (m, be, &cfg, BATCH, NULL);
  g_assert_true (es_trainer_set_mask (tr, mask, NULL));

  /* applied at once: sync writes the masked weights */
  es_trainer_sync (tr);
  for (int64_t i = 0; i < P; i++)
    g_assert_cmpfloat (es_model_params (m)[i], ==, mask[i] ? p0[i] : 0.0f);

  for (int e = 0; e < 4; e++)
    train_epoch (tr, x, y, N, BATCH);
  g_assert_cmpint (es_trainer_step_count (tr), ==, 4 * (N / BATCH) / accum);
  es_trainer_sync (tr);
  for (int64_t i = 0; i < P; i++)
    {
      float v = es_model_params (m)[i];

      if (!mask[i])
        {
          g_assert_true (v == 0.0f);
          pruned++;
        }
      else
        {
          kept++;
          changed += v != p0[i];
        }
    }
  g_test_message ("accum %d: %" G_GINT64_FORMAT " pruned stay zero, %" G_GINT64_FORMAT
                  " of %" G_GINT64_FORMAT " kept changed", accum, pruned, changed, kept);
  g_assert_cmpint (pruned, >, P / 5);
  g_assert_cmpint (changed, ==, kept);

  /* reload masks what it uploads */
  for (int64_t i = 0; i < P; i++)
    if (!mask[i])
      es_model_params (m)[i] = 1.0f;
  es_trainer_reload (tr, false);
  es_trainer_sync (tr);
  for (int64_t i = 0; i < P; i++)
    if (!mask[i])
      g_assert_true (es_model_params (m)[i] == 0.0f);

  /* without the mask they grow back */
  g_assert_true (es_trainer_set_mask (tr, NULL, NULL));
  for (int e = 0; e < 2; e++)
    train_epoch (tr, x, y, N, BATCH);
  es_trainer_sync (tr);
  for (int64_t i = 0; i < P; i++)
    if (!mask[i])
      regrown += es_model_params (m)[i] != 0.0f;
  g_test_message ("%" G_GINT64_FORMAT " of %" G_GINT64_FORMAT " grew back", regrown, pruned);
  g_assert_cmpint (regrown, >=, pruned * 9 / 10);

  es_trainer_free (tr);
  es_model_free (m);
  es_backend_free (be);
}

/* ---- quantization-aware training --------------------------------------------------- */

/* x (n) = k / 512 with the batch's minimum exactly lo_k / 64 and maximum hi_k / 64, so
 * that (hi - lo) / qmax is 1/64: inputs off the grid, their quantized values on it. */
static void
dyadic_inputs (float *x, int n, int lo_k, int hi_k, EsRng *rng)
{
  for (int i = 0; i < n; i++)
    x[i] = (float) rand_int (rng, lo_k * 8, hi_k * 8) / 512.0f;
  x[0] = (float) lo_k / 64.0f;
  x[n - 1] = (float) hi_k / 64.0f;
}

/* Weights k / 4096 with each row's largest magnitude 127/128, so the scale is 1/128
 * and the quantized weights are exact multiples of it; biases k / 8192. */
static void
dyadic_weights (EsModel *m, int layer, EsRng *rng)
{
  const EsTensorInfo *tw = es_model_tensor (m, es_model_layer (m, layer)->first_tensor);
  int rows = (int) tw->dims[0], cols = (int) (tw->size / tw->dims[0]);
  float *w = layer_weight (m, layer), *b = layer_bias (m, layer);

  for (int r = 0; r < rows; r++)
    {
      for (int c = 0; c < cols; c++)
        w[r * cols + c] = (float) rand_int (rng, -4063, 4063) / 4096.0f;
      w[r * cols + rand_int (rng, 0, cols - 1)] = (r % 2 ? -127.0f : 127.0f) / 128.0f;
      b[r] = (float) rand_int (rng, -4096, 4096) / 8192.0f;
    }
}

/* The forward output of a fake-quantized model equals the reference, for Dense and
 * Conv2D, full and reduced range. Before any training each layer quantizes over its
 * batch's own range. */
static void
test_qat_forward (gconstpointer data)
{
  const bool conv = GPOINTER_TO_INT (data);
  enum { B = 5 };
  EsBackend *be = es_cpu_backend_new (2, NULL, NULL);
  EsShape in_dense = { 1, { 16 } }, in_conv = { 3, { 1, 6, 6 } };
  EsLayerSpec l[5];
  int n = 0, first = 0, second;
  EsModel *m;
  EsRng rng = { conv ? 5 : 6 };

  if (conv)
    {
      l[n] = es_layer_spec_default (ES_LAYER_CONV2D);
      l[n].filters = 2;
      l[n].kernel = 3;
      l[n++].padding = 1;
    }
  else
    {
      l[n] = es_layer_spec_default (ES_LAYER_DENSE);
      l[n++].units = 8;
    }
  l[n++] = es_layer_spec_default (ES_LAYER_RELU);
  if (conv)
    l[n++] = es_layer_spec_default (ES_LAYER_FLATTEN);
  second = n;
  l[n] = es_layer_spec_default (ES_LAYER_DENSE);
  l[n++].units = 3;
  l[n++] = es_layer_spec_default (ES_LAYER_SOFTMAX);
  m = es_model_new (conv ? &in_conv : &in_dense, l, n, NULL);
  g_assert_nonnull (m);
  es_model_init (m, 3);
  dyadic_weights (m, first, &rng);

  for (int reduce = 0; reduce <= 1; reduce++)
    {
      const int qmax = reduce ? 127 : 255;
      const int D = conv ? 36 : 16, H = conv ? 72 : 8;
      float x[B * 36], xq[B * 36], h[B * 72], hq[B * 72], wq1[8 * 16], wq2[3 * 72];
      float y[B * 3], want[B * 3], got[B * 3], plain[B * 3];
      bool layers[5] = { false };
      EsTrainConfig cfg;
      EsTrainer *tr;
      EsInfer *inf;
      float lo, hi, d_in = 0, d_out = 0;
      const EsTensorInfo *tw1 = es_model_tensor (m, es_model_layer (m, first)->first_tensor);

      /* range [-2, 127/64] over 255 codes or [-1, 63/64] over 127: scale 1/64 */
      dyadic_inputs (x, B * D, reduce ? -64 : -128, reduce ? 63 : 127, &rng);

      /* the reference */
      min_max (x, B * D, &lo, &hi);
      fq_act (xq, x, B * D, lo, hi, qmax);
      fq_weights (wq1, layer_weight (m, first), (int) tw1->dims[0], (int) (tw1->size / tw1->dims[0]));
      if (conv)
        es_ref_conv2d_forward_f32 (h, xq, wq1, layer_bias (m, first), B, 1, 6, 6, 2, 3, 1, 1);
      else
        es_ref_dense_forward_f32 (h, xq, wq1, layer_bias (m, first), B, D, H);
      es_ref_relu_forward_f32 (h, h, B * H);
      min_max (h, B * H, &lo, &hi);
      fq_act (hq, h, B * H, lo, hi, qmax);
      fq_weights (wq2, layer_weight (m, second), 3, H);
      es_ref_dense_forward_f32 (y, hq, wq2, layer_bias (m, second), B, H, 3);
      es_ref_softmax_forward_f32 (want, y, B, 3);

      es_train_config_default (&cfg);
      tr = es_trainer_new (m, be, &cfg, B, NULL);
      layers[first] = layers[second] = true;
      layers[1] = true;  /* a ReLU: ignored */
      g_assert_true (es_trainer_set_fake_quant (tr, layers, reduce, NULL));
      g_assert_true (es_trainer_predict (tr, x, B, got, NULL));
      check_close ("QAT forward", got, want, B * 3, 1e-5);
      /* evaluation tracks nothing */
      g_assert_false (es_trainer_get_input_range (tr, first, &lo, &hi));

      /* and the quantization did change something */
      inf = es_infer_new (m, be, B, NULL);
      memcpy (plain, es_infer_run (inf, x, B), sizeof plain);
      for (int i = 0; i < B * D; i++)
        d_in = fmaxf (d_in, fabsf (xq[i] - x[i]));
      for (int i = 0; i < B * 3; i++)
        d_out = fmaxf (d_out, fabsf (plain[i] - got[i]));
      g_test_message ("%s, qmax %d: input moved up to %g, output %g", conv ? "conv" : "dense",
                      qmax, d_in, d_out);
      g_assert_cmpfloat (d_in, >, 1e-3);
      g_assert_cmpfloat (d_out, >, 1e-5);

      /* off again: the float model */
      g_assert_true (es_trainer_set_fake_quant (tr, NULL, false, NULL));
      g_assert_true (es_trainer_predict (tr, x, B, got, NULL));
      check_close ("float forward", got, plain, B * 3, 1e-5);
      es_infer_free (inf);
      es_trainer_free (tr);
    }
  es_model_free (m);
  es_backend_free (be);
}

/* The straight-through estimator: after one SGD step (lr 1) the parameter change is
 * the gradient of the float model at the fake-quantized weights and input of layer 1
 * (the QAT layer), with layer 1's input gradient zeroed outside the tracked range. */
static void
test_qat_ste (gconstpointer data)
{
  const bool conv = GPOINTER_TO_INT (data);
  enum { B = 8 };
  EsBackend *be = es_cpu_backend_new (2, NULL, NULL);
  EsShape in_dense = { 1, { 6 } }, in_conv = { 3, { 1, 4, 4 } };
  EsLayerSpec l[3];
  int n = 0;
  EsModel *m;
  EsTrainConfig cfg;
  EsTrainer *tr;
  EsRng rng = { conv ? 31 : 32 };
  bool layers[3] = { false, true, false };
  /* dense: 6 -> 5 -> 3; conv: (1,4,4) -> (2,4,4) -> (2,2,2) */
  const int D = conv ? 16 : 6, H = conv ? 32 : 5, F = conv ? 8 : 3;
  const int64_t P0w = conv ? 18 : 30, P0b = conv ? 2 : 5, P1w = conv ? 36 : 15, P1b = conv ? 2 : 3;
  float x1[B * 16], x2[B * 16], t1[B * 8], t2[B * 8];
  float h[B * 32], hq[B * 32], wq[36], y[B * 8], dy[B * 8], dh[B * 32], dh_plain[B * 32];
  float dw1[36] = { 0 }, db1[2 * 4] = { 0 }, dw0[30] = { 0 }, db0[5] = { 0 };
  float dw0_plain[30] = { 0 }, db0_plain[5] = { 0 };
  float lo, hi, lo1, hi1;
  int64_t P;
  g_autofree float *before = NULL, *after = NULL, *grad = NULL;
  int outside = 0;

  if (conv)
    {
      l[n] = es_layer_spec_default (ES_LAYER_CONV2D);
      l[n].filters = 2;
      l[n].kernel = 3;
      l[n++].padding = 1;
      l[n] = es_layer_spec_default (ES_LAYER_CONV2D);
      l[n].filters = 2;
      l[n++].kernel = 3;
      l[n++] = es_layer_spec_default (ES_LAYER_FLATTEN);
    }
  else
    {
      l[n] = es_layer_spec_default (ES_LAYER_DENSE);
      l[n++].units = 5;
      l[n] = es_layer_spec_default (ES_LAYER_DENSE);
      l[n++].units = 3;
    }
  m = es_model_new (conv ? &in_conv : &in_dense, l, n, NULL);
  g_assert_nonnull (m);
  es_model_init (m, 4);
  P = es_model_n_params (m);
  g_assert_cmpint (P, ==, P0w + P0b + P1w + P1b);
  /* layer 0 exact: weights k/256, biases k/1024, inputs k/64 (sums of products exact) */
  for (int64_t i = 0; i < P0w; i++)
    layer_weight (m, 0)[i] = (float) rand_int (&rng, -256, 256) / 256.0f;
  for (int64_t i = 0; i < P0b; i++)
    layer_bias (m, 0)[i] = (float) rand_int (&rng, -512, 512) / 1024.0f;
  for (int i = 0; i < B * D; i++)
    {
      x1[i] = (float) rand_int (&rng, -128, 128) / 64.0f;
      x2[i] = 2.0f * x1[i];  /* wider: layer 1's input leaves the tracked range */
    }
  for (int i = 0; i < B * F; i++)
    {
      t1[i] = (float) es_rng_normal (&rng);
      t2[i] = (float) es_rng_normal (&rng);
    }
  before = g_memdup2 (es_model_params (m), (gsize) P * sizeof (float));

  es_train_config_default (&cfg);
  cfg.loss = ES_LOSS_MSE;
  cfg.optimizer = ES_OPT_SGD;
  cfg.lr = 1.0f;
  tr = es_trainer_new (m, be, &cfg, B, NULL);
  g_assert_true (es_trainer_set_fake_quant (tr, layers, false, NULL));
  g_assert_false (es_trainer_get_input_range (tr, 1, &lo1, &hi1));
  {
    EsBatch b1 = { .B = B, .x_f32 = x1, .targets = t1 };

    g_assert_true (es_trainer_train_batch (tr, &b1, NULL, NULL));
  }
  g_assert_true (es_trainer_get_input_range (tr, 1, &lo1, &hi1));
  g_assert_false (es_trainer_get_input_range (tr, 0, &lo, &hi));  /* float layer */
  /* the first batch sets the range: layer 1's input range of batch 1 */
  if (conv)
    es_ref_conv2d_forward_f32 (h, x1, layer_weight (m, 0), layer_bias (m, 0), B, 1, 4, 4, 2, 3, 1, 1);
  else
    es_ref_dense_forward_f32 (h, x1, layer_weight (m, 0), layer_bias (m, 0), B, D, H);
  min_max (h, B * H, &lo, &hi);
  g_assert_cmpfloat (lo1, ==, lo);
  g_assert_cmpfloat (hi1, ==, hi);

  /* back to the exact weights (the range stays), then the step under test */
  memcpy (es_model_params (m), before, (size_t) P * sizeof (float));
  es_trainer_reload (tr, true);
  {
    EsBatch b2 = { .B = B, .x_f32 = x2, .targets = t2 };

    g_assert_true (es_trainer_train_batch (tr, &b2, NULL, NULL));
  }
  g_assert_true (es_trainer_get_input_range (tr, 1, &lo, &hi));
  es_trainer_sync (tr);
  after = g_memdup2 (es_model_params (m), (gsize) P * sizeof (float));
  grad = g_new (float, P);
  for (int64_t i = 0; i < P; i++)
    grad[i] = before[i] - after[i];  /* lr 1 */

  /* the reference over the range the step used */
  if (conv)
    es_ref_conv2d_forward_f32 (h, x2, before, before + P0w, B, 1, 4, 4, 2, 3, 1, 1);
  else
    es_ref_dense_forward_f32 (h, x2, before, before + P0w, B, D, H);
  {
    float hmin, hmax;

    min_max (h, B * H, &hmin, &hmax);
    g_assert_true (close_to (lo, 0.99 * lo1 + 0.01 * hmin));
    g_assert_true (close_to (hi, 0.99 * hi1 + 0.01 * hmax));
  }
  fq_act (hq, h, B * H, lo, hi, 255);
  fq_weights (wq, before + P0w + P0b, 2 * !!conv + 3 * !conv, conv ? 18 : 5);
  if (conv)
    es_ref_conv2d_forward_f32 (y, hq, wq, before + P0w + P0b + P1w, B, 2, 4, 4, 2, 3, 1, 0);
  else
    es_ref_dense_forward_f32 (y, hq, wq, before + P0w + P0b + P1w, B, H, F);
  es_ref_mse_backward_f32 (dy, y, t2, 1.0f / B, B, F);
  if (conv)
    es_ref_conv2d_backward_f32 (dh_plain, dw1, db1, dy, hq, wq, B, 2, 4, 4, 2, 3, 1, 0);
  else
    es_ref_dense_backward_f32 (dh_plain, dw1, db1, dy, hq, wq, B, H, F);
  for (int i = 0; i < B * H; i++)
    {
      bool inside = h[i] >= fminf (lo, 0.0f) && h[i] <= fmaxf (hi, 0.0f);

      dh[i] = inside ? dh_plain[i] : 0.0f;
      outside += !inside;
    }
  if (conv)
    {
      es_ref_conv2d_backward_f32 (NULL, dw0, db0, dh, x2, before, B, 1, 4, 4, 2, 3, 1, 1);
      es_ref_conv2d_backward_f32 (NULL, dw0_plain, db0_plain, dh_plain, x2, before, B, 1, 4, 4, 2, 3, 1, 1);
    }
  else
    {
      es_ref_dense_backward_f32 (NULL, dw0, db0, dh, x2, before, B, D, H);
      es_ref_dense_backward_f32 (NULL, dw0_plain, db0_plain, dh_plain, x2, before, B, D, H);
    }
  g_test_message ("%d of %d inputs of the QAT layer outside [%g, %g]", outside, B * H, lo, hi);
  g_assert_cmpint (outside, >, 0);
  g_assert_cmpint (outside, <, B * H);

  check_close ("dW1 (STE)", grad + P0w + P0b, dw1, P1w, 1e-5);
  check_close ("db1", grad + P0w + P0b + P1w, db1, P1b, 1e-5);
  check_close ("dW0 (input gradient zeroed outside)", grad, dw0, P0w, 1e-5);
  check_close ("db0", grad + P0w, db0, P0b, 1e-5);
  /* and the zeroing mattered */
  {
    float d = 0;

    for (int i = 0; i < P0w; i++)
      d = fmaxf (d, fabsf (dw0_plain[i] - dw0[i]));
    g_assert_cmpfloat (d, >, 1e-3);
  }
  es_trainer_free (tr);
  es_model_free (m);
  es_backend_free (be);
}

/* Ranges: the first batch sets them, later ones move them by 1%, evaluation does not;
 * turning QAT off forgets them. Then a QAT model learns blobs, and evaluation runs
 * fake-quantized on the tracked ranges. */
static void
test_qat_ranges_and_learning (void)
{
  enum { N = 600, BATCH = 32 };
  g_autofree float *x = g_new (float, 2 * N);
  g_autofree int32_t *y = g_new (int32_t, N);
  EsBackend *be = es_cpu_backend_new (2, NULL, NULL);
  EsModel *m = mlp (16, true, 8);
  bool layers[4] = { true, false, true, false };
  EsTrainConfig cfg;
  EsTrainer *tr;
  float lo, hi, lo0, hi0, blo, bhi, lo2, hi2;
  double first, last = 0, acc, loss_eval1, loss_eval2;

  etu_blobs (x, y, N, 17);
  es_train_config_default (&cfg);
  cfg.lr = 0.01f;
  tr = es_trainer_new (m, be, &cfg, BATCH, NULL);
  g_assert_true (es_trainer_set_fake_quant (tr, layers, false, NULL));
  {
    EsBatch b = { .B = BATCH, .x_f32 = x, .labels = y };

    g_assert_true (es_trainer_train_batch (tr, &b, NULL, NULL));
  }
  min_max (x, 2 * BATCH, &blo, &bhi);
  g_assert_true (es_trainer_get_input_range (tr, 0, &lo0, &hi0));
  g_assert_cmpfloat (lo0, ==, blo);
  g_assert_cmpfloat (hi0, ==, bhi);
  g_assert_true (es_trainer_get_input_range (tr, 2, &lo2, &hi2));
  g_assert_cmpfloat (lo2, >=, -1.0f);  /* Tanh outputs */
  g_assert_cmpfloat (hi2, <=, 1.0f);
  g_assert_cmpfloat (hi2 - lo2, >, 0.5f);
  g_assert_false (es_trainer_get_input_range (tr, 1, &lo, &hi));
  g_assert_false (es_trainer_get_input_range (tr, 7, &lo, &hi));
  {
    EsBatch b = { .B = BATCH, .x_f32 = x + 2 * BATCH, .labels = y + BATCH };

    g_assert_true (es_trainer_train_batch (tr, &b, NULL, NULL));
  }
  min_max (x + 2 * BATCH, 2 * BATCH, &blo, &bhi);
  g_assert_true (es_trainer_get_input_range (tr, 0, &lo, &hi));
  g_assert_true (close_to (lo, 0.99 * lo0 + 0.01 * blo));
  g_assert_true (close_to (hi, 0.99 * hi0 + 0.01 * bhi));
  /* evaluation uses the ranges without moving them, and repeats itself */
  loss_eval1 = eval_loss (tr, x, y, N, NULL);
  loss_eval2 = eval_loss (tr, x, y, N, NULL);
  g_assert_cmpfloat (loss_eval1, ==, loss_eval2);
  g_assert_true (es_trainer_get_input_range (tr, 0, &lo0, &hi0));
  g_assert_cmpfloat (lo0, ==, lo);
  g_assert_cmpfloat (hi0, ==, hi);

  /* learning: the loss halves and the fake-quantized model classifies */
  first = train_epoch (tr, x, y, N, BATCH);
  for (int e = 0; e < 15; e++)
    last = train_epoch (tr, x, y, N, BATCH);
  eval_loss (tr, x, y, N, &acc);
  g_test_message ("QAT loss %.4f -> %.4f, accuracy %.3f", first, last, acc);
  g_assert_cmpfloat (last, <, 0.5 * first);
  g_assert_cmpfloat (acc, >=, 0.95);
  /* the tracked input range of layer 0 holds most of the data */
  g_assert_true (es_trainer_get_input_range (tr, 0, &lo, &hi));
  {
    int inside = 0;

    for (int i = 0; i < 2 * N; i++)
      inside += x[i] >= lo && x[i] <= hi;
    g_test_message ("layer 0 range [%g, %g] holds %d of %d inputs", lo, hi, inside, 2 * N);
    g_assert_cmpint (inside, >=, 2 * N * 90 / 100);
  }

  g_assert_true (es_trainer_set_fake_quant (tr, NULL, false, NULL));
  g_assert_false (es_trainer_get_input_range (tr, 0, &lo, &hi));
  es_trainer_free (tr);
  es_model_free (m);
  es_backend_free (be);
}

/* ---- memory plan and refusals --------------------------------------------------------- */

static void
test_plan (void)
{
  enum { BATCH = 64 };
  EsShape in = { 1, { 784 } };
  EsLayerSpec l[4] = { es_layer_spec_default (ES_LAYER_DENSE), es_layer_spec_default (ES_LAYER_RELU),
                       es_layer_spec_default (ES_LAYER_DENSE), es_layer_spec_default (ES_LAYER_SOFTMAX) };
  EsModel *student, *teacher;
  EsTrainConfig cfg;
  EsMemPlan base, full;
  EsBudget *budget;
  EsBackend *be;
  EsTrainer *tr;
  int64_t P;
  bool layers[4] = { true, false, true, false };
  g_autofree uint8_t *mask = NULL;

  l[0].units = 32;
  l[2].units = 10;
  student = es_model_new (&in, l, 4, NULL);
  l[0].units = 128;
  teacher = es_model_new (&in, l, 4, NULL);
  es_model_init (student, 1);
  es_model_init (teacher, 2);
  P = es_model_n_params (student);
  mask = g_malloc ((gsize) P);
  memset (mask, 1, (gsize) P);

  es_train_config_default (&cfg);
  es_mem_plan (student, &cfg, BATCH, true, &base);
  cfg.plan_mask = true;
  cfg.plan_fake_quant = true;
  cfg.plan_teacher = teacher;
  es_mem_plan (student, &cfg, BATCH, true, &full);
  /* mask bytes, fake-quantized weights (784x32, 32x10), teacher weights and buffers
   * (none: the 64 bytes an empty allocation takes) */
  g_assert_cmpuint (full.weights - base.weights, ==,
                    (size_t) P + (784 * 32 + 32 * 10) * 4 + (size_t) es_model_n_params (teacher) * 4
                    + 64);
  /* inputs of both layers, the teacher's two 128-wide buffers, two softened outputs */
  g_assert_cmpuint (full.activations - base.activations, ==,
                    (size_t) BATCH * ((784 + 32) + 2 * 128 + 2 * 10) * 4);
  g_assert_cmpuint (full.gradients, ==, base.gradients);

  /* what the trainer then charges stays within the plan */
  budget = es_budget_new (0);
  be = es_cpu_backend_new (1, budget, NULL);
  tr = es_trainer_new (student, be, &cfg, BATCH, NULL);
  g_assert_nonnull (tr);
  g_assert_true (es_trainer_set_mask (tr, mask, NULL));
  g_assert_true (es_trainer_set_fake_quant (tr, layers, false, NULL));
  g_assert_true (es_trainer_set_teacher (tr, teacher, 2.0f, 0.5f, NULL));
  g_test_message ("charged %zu of a plan of %zu", es_budget_used (budget), full.total);
  g_assert_cmpuint (es_budget_used (budget), <=, full.total);
  g_assert_cmpuint (es_budget_used (budget), >, base.total);
  /* a second teacher replaces the first */
  g_assert_true (es_trainer_set_teacher (tr, teacher, 2.0f, 0.5f, NULL));
  g_assert_cmpuint (es_budget_used (budget), <=, full.total);
  es_trainer_free (tr);
  g_assert_cmpuint (es_budget_used (budget), ==, 0);
  es_backend_free (be);
  es_budget_free (budget);
  es_model_free (student);
  es_model_free (teacher);
}

static void
test_refusals (void)
{
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsModel *m = mlp (8, true, 1), *teacher = mlp (16, true, 2), *other;
  EsShape in3 = { 1, { 3 } };
  EsLayerSpec ls[2] = { es_layer_spec_default (ES_LAYER_DENSE), es_layer_spec_default (ES_LAYER_SIGMOID) };
  EsTrainConfig cfg;
  EsTrainer *tr;
  EsError err = { 0 };
  bool only_act[4] = { false, true, false, false };

  es_train_config_default (&cfg);
  tr = es_trainer_new (m, be, &cfg, 8, NULL);
  g_assert_false (es_trainer_set_teacher (tr, teacher, 0.0f, 0.5f, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  err.code = ES_OK;
  g_assert_false (es_trainer_set_teacher (tr, teacher, 2.0f, 1.5f, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  ls[0].units = 3;
  other = es_model_new (&in3, ls, 1, NULL);
  err.code = ES_OK;
  g_assert_false (es_trainer_set_teacher (tr, other, 2.0f, 0.5f, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_SHAPE);
  g_test_message ("%s", err.message);
  es_model_free (other);
  {
    EsShape in2 = { 1, { 2 } };

    other = es_model_new (&in2, ls, 2, NULL);
    err.code = ES_OK;
    g_assert_false (es_trainer_set_teacher (tr, other, 2.0f, 0.5f, &err));
    g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
    es_model_free (other);
  }
  err.code = ES_OK;
  g_assert_false (es_trainer_set_fake_quant (tr, only_act, false, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  es_trainer_free (tr);

  cfg.loss = ES_LOSS_MSE;
  tr = es_trainer_new (m, be, &cfg, 8, NULL);
  err.code = ES_OK;
  g_assert_false (es_trainer_set_teacher (tr, teacher, 2.0f, 0.5f, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  es_trainer_free (tr);
  es_model_free (m);
  es_model_free (teacher);
  es_backend_free (be);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/engine/train-opt/ops", test_ops);
  g_test_add_func ("/engine/train-opt/distill-gradcheck", test_distill_gradcheck);
  g_test_add_func ("/engine/train-opt/distill-loss", test_distill_loss_value);
  g_test_add_func ("/engine/train-opt/distill-teacher-layers", test_distill_teacher_layers);
  g_test_add_func ("/engine/train-opt/distill-alpha0", test_distill_alpha0);
  g_test_add_func ("/engine/train-opt/distill-learns", test_distill_learns);
  g_test_add_data_func ("/engine/train-opt/mask", GINT_TO_POINTER (1), test_mask);
  g_test_add_data_func ("/engine/train-opt/mask-accum", GINT_TO_POINTER (3), test_mask);
  g_test_add_data_func ("/engine/train-opt/qat-forward-dense", GINT_TO_POINTER (0), test_qat_forward);
  g_test_add_data_func ("/engine/train-opt/qat-forward-conv", GINT_TO_POINTER (1), test_qat_forward);
  g_test_add_data_func ("/engine/train-opt/qat-ste-dense", GINT_TO_POINTER (0), test_qat_ste);
  g_test_add_data_func ("/engine/train-opt/qat-ste-conv", GINT_TO_POINTER (1), test_qat_ste);
  g_test_add_func ("/engine/train-opt/qat-ranges-learning", test_qat_ranges_and_learning);
  g_test_add_func ("/engine/train-opt/plan", test_plan);
  g_test_add_func ("/engine/train-opt/refusals", test_refusals);
  return g_test_run ();
}
