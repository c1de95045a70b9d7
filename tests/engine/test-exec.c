/* test-exec.c: the variant runner (es-exec.h). Dense equals EsInfer; static int8 of a
 * briefly trained MLP equals, bit for bit, the int8 model recomputed here from the
 * scalar reference (es_qgemm_ref_forward and es_quant_act), chained or not, on 1 or 2
 * threads, and stays close to float (max error and top-1 agreement reported); dynamic
 * int8 likewise with this batch's range; int8 Conv2D against a direct convolution of
 * the quantized image; layers kept in float; sparse equals dense; mixed kinds; fp16;
 * the observer; errors that name the layer. /exec/latency prints the batch 1/64/256
 * table of fp32 against int8 on 1 and 2 threads (no time is asserted). */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "es-exec.h"
#include "es-qgemm.h"
#include "es-ref.h"
#include "es-train.h"

#define D_IN 784
#define HIDDEN 128
#define CLASSES 10

/* Inputs like images: 10 class prototypes in [0,1], plus noise, clamped. */
static void
make_data (float *x, int32_t *y, int n, uint64_t seed)
{
  static float proto[CLASSES][D_IN];
  static bool proto_done;
  EsRng rng = { seed };

  if (!proto_done)
    {
      EsRng pr = { 1234 };

      for (int c = 0; c < CLASSES; c++)
        for (int k = 0; k < D_IN; k++)
          proto[c][k] = es_rng_uniform (&pr) < 0.3 ? (float) es_rng_uniform (&pr) : 0.0f;
      proto_done = true;
    }
  for (int i = 0; i < n; i++)
    {
      const int c = (int) (es_rng_next (&rng) % CLASSES);

      for (int k = 0; k < D_IN; k++)
        {
          float v = proto[c][k] + 0.35f * (float) es_rng_normal (&rng);

          x[(int64_t) i * D_IN + k] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
        }
      if (y != NULL)
        y[i] = c;
    }
}

/* The reference MLP: Flatten(28x28) Dense(128) ReLU Dense(10) [Softmax]. */
static EsModel *
reference_mlp (bool softmax, uint64_t seed)
{
  EsShape in = { 3, { 1, 28, 28 } };
  EsLayerSpec l[5] = { es_layer_spec_default (ES_LAYER_FLATTEN),
                       es_layer_spec_default (ES_LAYER_DENSE),
                       es_layer_spec_default (ES_LAYER_RELU),
                       es_layer_spec_default (ES_LAYER_DENSE),
                       es_layer_spec_default (ES_LAYER_SOFTMAX) };
  EsModel *m;

  l[1].units = HIDDEN;
  l[3].units = CLASSES;
  m = es_model_new (&in, l, softmax ? 5 : 4, NULL);
  g_assert_nonnull (m);
  es_model_init (m, seed);
  return m;
}

/* A briefly trained reference MLP (with softmax) and the same weights without it. */
static EsModel *trained, *trained_logits;

static void
ensure_trained (void)
{
  enum { N = 1024, BATCH = 64 };
  float *x;
  int32_t *y;
  EsBackend *be;
  EsTrainConfig cfg;
  EsTrainer *tr;
  EsStepStats st = { 0 };

  if (trained != NULL)
    return;
  x = g_malloc ((size_t) N * D_IN * sizeof (float));
  y = g_malloc (N * sizeof (int32_t));
  make_data (x, y, N, 1);
  be = es_cpu_backend_new (2, NULL, NULL);
  trained = reference_mlp (true, 7);
  es_train_config_default (&cfg);
  cfg.lr = 2e-3f;
  tr = es_trainer_new (trained, be, &cfg, BATCH, NULL);
  g_assert_nonnull (tr);
  for (int e = 0; e < 2; e++)
    for (int r = 0; r < N; r += BATCH)
      {
        EsBatch b = { .B = BATCH, .x_f32 = x + (int64_t) r * D_IN, .labels = y + r };

        g_assert_true (es_trainer_train_batch (tr, &b, e == 1 ? &st : NULL, NULL));
      }
  es_trainer_sync (tr);
  g_test_message ("trained-ish MLP: last epoch accuracy %.3f", (double) st.correct / st.rows);
  es_trainer_free (tr);
  es_backend_free (be);
  trained_logits = reference_mlp (false, 7);
  memcpy (es_model_params (trained_logits), es_model_params_const (trained),
          (size_t) es_model_n_params (trained) * sizeof (float));
  g_free (x);
  g_free (y);
}

/* A static int8 quantization of m calibrated (min/max) on n rows of fresh data. */
static EsQuant *
static_quant (const EsModel *m, const bool *keep, bool reduce_range, EsCalibMethod method)
{
  enum { N = 512 };
  float *x = g_malloc ((size_t) N * D_IN * sizeof (float));
  EsError err = { 0 };
  EsQuant *q = es_quant_new (m, ES_QUANT_INT8_STATIC, keep, reduce_range, &err);
  EsCalib *c = es_calib_new (m, method, 0.0f, &err);

  g_assert_nonnull (q);
  g_assert_nonnull (c);
  make_data (x, NULL, N, 2);
  for (int r = 0; r < N; r += 128)
    g_assert_true (es_calib_observe (c, x + (int64_t) r * D_IN, 128, &err));
  g_assert_true (es_calib_apply (c, q, &err));
  g_assert_true (es_quant_is_ready (q, NULL));
  es_calib_free (c);
  g_free (x);
  return q;
}

static EsExec *
exec_new (const EsModel *m, const EsQuant *q, const EsExecKind *kinds, EsBackend *be, int max_b)
{
  EsError err = { 0 };
  EsExec *ex = es_exec_new (m, q, kinds, be, max_b, &err);

  if (ex == NULL)
    g_error ("es_exec_new: %s", err.message);
  return ex;
}

static void
test_dense_equals_infer (void)
{
  EsShape cin = { 3, { 3, 10, 10 } };
  EsLayerSpec cl[9] = { es_layer_spec_default (ES_LAYER_CONV2D),
                        es_layer_spec_default (ES_LAYER_BATCHNORM),
                        es_layer_spec_default (ES_LAYER_LEAKY_RELU),
                        es_layer_spec_default (ES_LAYER_MAXPOOL2D),
                        es_layer_spec_default (ES_LAYER_DROPOUT),
                        es_layer_spec_default (ES_LAYER_FLATTEN),
                        es_layer_spec_default (ES_LAYER_DENSE),
                        es_layer_spec_default (ES_LAYER_TANH),
                        es_layer_spec_default (ES_LAYER_DENSE) };
  EsModel *models[2];
  float *x = g_malloc (64 * D_IN * sizeof (float));
  EsRng rng = { 3 };

  cl[0].filters = 5;
  cl[0].kernel = 3;
  cl[0].padding = 1;
  cl[3].kernel = 2;
  cl[4].rate = 0.3f;
  cl[6].units = 17;
  cl[8].units = 4;
  models[0] = reference_mlp (true, 3);
  models[1] = es_model_new (&cin, cl, 9, NULL);
  g_assert_nonnull (models[1]);
  es_model_init (models[1], 4);
  /* BatchNorm with running statistics that are not the identity */
  for (int i = 0; i < es_model_n_buffers (models[1]); i++)
    es_model_buffers (models[1])[i] = 0.5f + (float) es_rng_uniform (&rng);
  for (int i = 0; i < 64 * D_IN; i++)
    x[i] = (float) es_rng_uniform (&rng);
  for (int threads = 1; threads <= 2; threads++)
    {
      EsBackend *be = es_cpu_backend_new (threads, NULL, NULL);

      for (int mi = 0; mi < 2; mi++)
        {
          EsExec *ex = exec_new (models[mi], NULL, NULL, be, 64);
          EsInfer *inf = es_infer_new (models[mi], be, 64, NULL);
          const EsShape os = es_model_output_shape (models[mi]);
          const int F = (int) es_shape_size (&os);
          static const int Bs[] = { 1, 7, 64 };

          for (size_t bi = 0; bi < G_N_ELEMENTS (Bs); bi++)
            {
              const float *a = es_exec_run (ex, x, Bs[bi]);
              float *keep = g_memdup2 (a, (size_t) Bs[bi] * F * sizeof (float));
              const float *b = es_infer_run (inf, x, Bs[bi]);

              for (int i = 0; i < Bs[bi] * F; i++)
                g_assert_cmpfloat_with_epsilon (keep[i], b[i], 1e-5);
              g_free (keep);
            }
          for (int i = 0; i < es_model_n_layers (models[mi]); i++)
            g_assert_cmpint (es_exec_layer_kind (ex, i), ==, ES_EXEC_DENSE);
          g_assert_null (es_exec_run (ex, x, 65));
          g_assert_null (es_exec_run (ex, x, 0));
          es_exec_free (ex);
          es_infer_free (inf);
        }
      es_backend_free (be);
    }
  es_model_free (models[0]);
  es_model_free (models[1]);
  g_free (x);
}

/* The int8 MLP (Flatten Dense ReLU Dense) from the scalar reference: logits (B, 10). */
static void
int8_mlp_reference (float *logits, const EsModel *m, const EsQuant *q, const float *x, int B,
                    bool dynamic)
{
  const EsQuantLayer *l1 = &q->layers[1], *l2 = &q->layers[3];
  const int qmax = q->reduce_range ? 127 : 255;
  const float *b1 = es_model_tensor_data ((EsModel *) m, es_model_layer (m, 1)->first_tensor + 1);
  const float *b2 = es_model_tensor_data ((EsModel *) m, es_model_layer (m, 3)->first_tensor + 1);
  uint8_t *q1 = g_malloc ((size_t) B * D_IN), *q2 = g_malloc ((size_t) B * HIDDEN);
  float *y1 = g_malloc ((size_t) B * HIDDEN * sizeof (float));
  float s1 = l1->in_scale, s2 = l2->in_scale;
  int32_t z1 = l1->in_zero, z2 = l2->in_zero;

  if (dynamic)
    {
      float lo = INFINITY, hi = -INFINITY;

      for (int i = 0; i < B * D_IN; i++)
        lo = fminf (lo, x[i]), hi = fmaxf (hi, x[i]);
      es_quant_act_params (lo, hi, qmax, &s1, &z1);
    }
  for (int i = 0; i < B * D_IN; i++)
    q1[i] = (uint8_t) es_quant_act (x[i], 1.0f / s1, z1, qmax);
  es_qgemm_ref_forward (q1, D_IN, l1->w_q, l1->w_scale, b1, B, D_IN, HIDDEN,
                        &(EsQGemmOut) { .x_scale = s1, .x_zero = z1, .relu = true, .out = y1,
                                        .ld_out = HIDDEN });
  if (dynamic)
    {
      float lo = INFINITY, hi = -INFINITY;

      for (int i = 0; i < B * HIDDEN; i++)
        lo = fminf (lo, y1[i]), hi = fmaxf (hi, y1[i]);
      es_quant_act_params (lo, hi, qmax, &s2, &z2);
    }
  for (int i = 0; i < B * HIDDEN; i++)
    q2[i] = (uint8_t) es_quant_act (y1[i], 1.0f / s2, z2, qmax);
  es_qgemm_ref_forward (q2, HIDDEN, l2->w_q, l2->w_scale, b2, B, HIDDEN, CLASSES,
                        &(EsQGemmOut) { .x_scale = s2, .x_zero = z2, .out = logits,
                                        .ld_out = CLASSES });
  g_free (q1);
  g_free (q2);
  g_free (y1);
}

static void
noop_observer (void *data, int layer, const float *inp, int B, int64_t in_floats)
{
  (*(int *) data)++;
}

static void
assert_equal_floats (const float *a, const float *b, int n, const char *what)
{
  for (int i = 0; i < n; i++)
    if (!(a[i] == b[i]))
      g_error ("%s: value %d is %.9g, expected %.9g", what, i, (double) a[i], (double) b[i]);
}

/* Static int8: exactly the reference int8 model, chained or not, on 1 and 2 threads,
 * with full and reduced range; close to float. */
static void
test_int8_static (void)
{
  enum { B = 200 };
  float *x = g_malloc ((size_t) B * D_IN * sizeof (float));
  float *ref = g_malloc ((size_t) B * CLASSES * sizeof (float));

  ensure_trained ();
  make_data (x, NULL, B, 3);
  for (int rr = 0; rr < 2; rr++)
    {
      EsQuant *q = static_quant (trained_logits, NULL, rr, ES_CALIB_MINMAX);

      int8_mlp_reference (ref, trained_logits, q, x, B, false);
      for (int threads = 1; threads <= 2; threads++)
        {
          EsBackend *be = es_cpu_backend_new (threads, NULL, NULL);
          EsExec *ex = exec_new (trained_logits, q, NULL, be, B);
          int calls = 0;
          char what[64];

          g_assert_cmpint (es_exec_layer_kind (ex, 1), ==, ES_EXEC_INT8);
          g_assert_cmpint (es_exec_layer_kind (ex, 3), ==, ES_EXEC_INT8);
          g_snprintf (what, sizeof what, "int8 static rr=%d threads=%d", rr, threads);
          assert_equal_floats (es_exec_run (ex, x, B), ref, B * CLASSES, what);
          /* row 17 alone gives the same row */
          assert_equal_floats (es_exec_run (ex, x + 17 * D_IN, 1), ref + 17 * CLASSES, CLASSES, what);
          /* with an observer nothing is fused or chained: the same values */
          es_exec_set_observer (ex, noop_observer, &calls);
          g_snprintf (what, sizeof what, "int8 static unchained rr=%d threads=%d", rr, threads);
          assert_equal_floats (es_exec_run (ex, x, B), ref, B * CLASSES, what);
          g_assert_cmpint (calls, ==, 4);
          es_exec_set_observer (ex, NULL, NULL);
          es_exec_free (ex);
          es_backend_free (be);
        }
      es_quant_free (q);
    }
  g_free (x);
  g_free (ref);
}

/* Against float: probabilities within a few hundredths, the same class almost always. */
static void
test_int8_close_to_float (void)
{
  enum { B = 500 };
  float *x = g_malloc ((size_t) B * D_IN * sizeof (float));
  EsBackend *be = es_cpu_backend_new (2, NULL, NULL);
  static const EsCalibMethod methods[] = { ES_CALIB_MINMAX, ES_CALIB_PERCENTILE, ES_CALIB_MSE };

  ensure_trained ();
  make_data (x, NULL, B, 4);
  for (size_t mi = 0; mi < G_N_ELEMENTS (methods); mi++)
    {
      EsQuant *q = static_quant (trained, NULL, false, methods[mi]);
      EsExec *ef = exec_new (trained, NULL, NULL, be, B), *e8 = exec_new (trained, q, NULL, be, B);
      const float *pf = es_exec_run (ef, x, B);
      const float *p8 = es_exec_run (e8, x, B);
      double max_err = 0.0;
      int agree = 0;

      for (int b = 0; b < B; b++)
        {
          int af = 0, a8 = 0;

          for (int c = 0; c < CLASSES; c++)
            {
              max_err = fmax (max_err, fabs (pf[b * CLASSES + c] - p8[b * CLASSES + c]));
              af = pf[b * CLASSES + c] > pf[b * CLASSES + af] ? c : af;
              a8 = p8[b * CLASSES + c] > p8[b * CLASSES + a8] ? c : a8;
            }
          agree += af == a8;
        }
      g_test_message ("int8 static (%s) vs fp32: max |dp| %.5f, top-1 agreement %d/%d",
                      es_calib_method_name (methods[mi]), max_err, agree, B);
      g_assert_cmpfloat (max_err, <, 0.1);
      g_assert_cmpint (agree, >=, B * 97 / 100);
      es_exec_free (ef);
      es_exec_free (e8);
      es_quant_free (q);
    }
  es_backend_free (be);
  g_free (x);
}

static void
test_int8_dynamic (void)
{
  enum { B = 70 };
  float *x = g_malloc ((size_t) B * D_IN * sizeof (float));
  float *ref = g_malloc ((size_t) B * CLASSES * sizeof (float));
  float *fl = g_malloc ((size_t) B * CLASSES * sizeof (float));
  EsQuant *q;
  double max_err = 0.0;

  ensure_trained ();
  make_data (x, NULL, B, 5);
  q = es_quant_new (trained_logits, ES_QUANT_INT8_DYNAMIC, NULL, false, NULL);
  g_assert_true (es_quant_is_ready (q, NULL));
  int8_mlp_reference (ref, trained_logits, q, x, B, true);
  for (int threads = 1; threads <= 2; threads++)
    {
      EsBackend *be = es_cpu_backend_new (threads, NULL, NULL);
      EsExec *ex = exec_new (trained_logits, q, NULL, be, B);
      EsExec *ef = exec_new (trained_logits, NULL, NULL, be, B);

      assert_equal_floats (es_exec_run (ex, x, B), ref, B * CLASSES, "int8 dynamic");
      memcpy (fl, es_exec_run (ef, x, B), (size_t) B * CLASSES * sizeof (float));
      {
        const float *p8 = es_exec_run (ex, x, B);

        for (int i = 0; i < B * CLASSES; i++)
          max_err = fmax (max_err, fabs (p8[i] - fl[i]));
      }
      es_exec_free (ex);
      es_exec_free (ef);
      es_backend_free (be);
    }
  g_test_message ("int8 dynamic vs fp32: max |d logit| %.4f", max_err);
  g_assert_cmpfloat (max_err, <, 0.5);
  es_quant_free (q);
  g_free (x);
  g_free (ref);
  g_free (fl);
}

/* Layer 3 kept in float: layer 1 int8 (not chained), layer 3 dense. */
static void
test_keep_float (void)
{
  enum { B = 33 };
  const bool keep[5] = { false, false, false, true, false };
  float *x = g_malloc ((size_t) B * D_IN * sizeof (float));
  float *ref = g_malloc ((size_t) B * CLASSES * sizeof (float));
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsQuant *q, *qall;
  EsExec *ex;

  ensure_trained ();
  make_data (x, NULL, B, 6);
  q = static_quant (trained_logits, keep, false, ES_CALIB_MINMAX);
  g_assert_false (q->layers[3].int8);
  ex = exec_new (trained_logits, q, NULL, be, B);
  g_assert_cmpint (es_exec_layer_kind (ex, 1), ==, ES_EXEC_INT8);
  g_assert_cmpint (es_exec_layer_kind (ex, 3), ==, ES_EXEC_DENSE);
  /* reference: the int8 hidden layer from the full int8 reference's first half,
   * then the float layer */
  qall = static_quant (trained_logits, NULL, false, ES_CALIB_MINMAX);
  {
    const EsQuantLayer *l1 = &q->layers[1];
    const float *b1 = es_model_tensor_data (trained_logits, es_model_layer (trained_logits, 1)->first_tensor + 1);
    const float *w2 = es_model_tensor_data (trained_logits, es_model_layer (trained_logits, 3)->first_tensor);
    const float *b2 = w2 + HIDDEN * CLASSES;
    uint8_t *q1 = g_malloc ((size_t) B * D_IN);
    float *y1 = g_malloc ((size_t) B * HIDDEN * sizeof (float));
    const float *got = es_exec_run (ex, x, B);

    for (int i = 0; i < B * D_IN; i++)
      q1[i] = (uint8_t) es_quant_act (x[i], 1.0f / l1->in_scale, l1->in_zero, 255);
    es_qgemm_ref_forward (q1, D_IN, l1->w_q, l1->w_scale, b1, B, D_IN, HIDDEN,
                          &(EsQGemmOut) { .x_scale = l1->in_scale, .x_zero = l1->in_zero,
                                          .relu = true, .out = y1, .ld_out = HIDDEN });
    es_ref_dense_forward_f32 (ref, y1, w2, b2, B, HIDDEN, CLASSES);
    for (int i = 0; i < B * CLASSES; i++)
      g_assert_cmpfloat_with_epsilon (got[i], ref[i], 1e-4);
    g_free (q1);
    g_free (y1);
  }
  es_exec_free (ex);
  /* a dense kind asked for an int8 layer runs it in float */
  {
    const EsExecKind kinds[5] = { ES_EXEC_DENSE, ES_EXEC_INT8, ES_EXEC_DENSE, ES_EXEC_DENSE,
                                  ES_EXEC_DENSE };
    EsExec *mixed = exec_new (trained_logits, qall, kinds, be, B);

    g_assert_cmpint (es_exec_layer_kind (mixed, 3), ==, ES_EXEC_DENSE);
    es_exec_free (mixed);
  }
  es_quant_free (q);
  es_quant_free (qall);
  es_backend_free (be);
  g_free (x);
  g_free (ref);
}

/* 80% of the weights zero: sparse equals dense (both fp32) within rounding; mixed with
 * int8 too. */
static void
test_sparse_and_mixed (void)
{
  enum { B = 40 };
  EsModel *m = reference_mlp (false, 9);
  float *x = g_malloc ((size_t) B * D_IN * sizeof (float));
  float *dense = g_malloc ((size_t) B * CLASSES * sizeof (float));
  EsRng rng = { 10 };

  for (int li = 1; li <= 3; li += 2)
    {
      float *w = es_model_tensor_data (m, es_model_layer (m, li)->first_tensor);
      const int64_t n = es_model_tensor (m, es_model_layer (m, li)->first_tensor)->size;

      for (int64_t i = 0; i < n; i++)
        if (es_rng_uniform (&rng) < 0.8)
          w[i] = 0.0f;
    }
  make_data (x, NULL, B, 7);
  for (int threads = 1; threads <= 2; threads++)
    {
      EsBackend *be = es_cpu_backend_new (threads, NULL, NULL);
      const EsExecKind sparse[4] = { ES_EXEC_DENSE, ES_EXEC_SPARSE, ES_EXEC_DENSE, ES_EXEC_SPARSE };
      EsExec *ed = exec_new (m, NULL, NULL, be, B), *es = exec_new (m, NULL, sparse, be, B);
      const float *got;

      memcpy (dense, es_exec_run (ed, x, B), (size_t) B * CLASSES * sizeof (float));
      got = es_exec_run (es, x, B);
      g_assert_cmpint (es_exec_layer_kind (es, 1), ==, ES_EXEC_SPARSE);
      for (int i = 0; i < B * CLASSES; i++)
        g_assert_cmpfloat_with_epsilon (got[i], dense[i], 1e-4 * (1.0 + fabs (dense[i])));
      es_exec_free (es);

      /* mixed: sparse hidden layer, int8 output layer (the hidden one kept in float) */
      {
        const bool keep[4] = { false, true, false, false };
        const EsExecKind kinds[4] = { ES_EXEC_DENSE, ES_EXEC_SPARSE, ES_EXEC_DENSE, ES_EXEC_INT8 };
        EsQuant *q = es_quant_new (m, ES_QUANT_INT8_STATIC, keep, false, NULL);
        EsCalib *c = es_calib_new (m, ES_CALIB_MINMAX, 0.0f, NULL);
        EsExec *mx;
        double max_err = 0.0;

        g_assert_true (es_calib_observe (c, x, B, NULL));
        g_assert_true (es_calib_apply (c, q, NULL));
        mx = exec_new (m, q, kinds, be, B);
        g_assert_cmpint (es_exec_layer_kind (mx, 1), ==, ES_EXEC_SPARSE);
        g_assert_cmpint (es_exec_layer_kind (mx, 3), ==, ES_EXEC_INT8);
        got = es_exec_run (mx, x, B);
        for (int i = 0; i < B * CLASSES; i++)
          max_err = fmax (max_err, fabs (got[i] - dense[i]));
        g_test_message ("sparse + int8 vs dense fp32 (%d threads): max |d logit| %.4f", threads, max_err);
        g_assert_cmpfloat (max_err, <, 0.05);
        es_exec_free (mx);
        es_calib_free (c);
        es_quant_free (q);
      }
      es_exec_free (ed);
      es_backend_free (be);
    }
  es_model_free (m);
  g_free (x);
  g_free (dense);
}

/* int8 Conv2D (3x3, stride 2, padding 1) ReLU Flatten Dense, static: equal to a direct
 * convolution of the quantized image, computed here. */
static void
test_int8_conv (void)
{
  enum { B = 5, C = 3, H = 9, W = 8, OC = 6, K = 3, S = 2, P = 1, OUT = 4 };
  const int OH = ES_CONV_OUT (H, K, S, P), OW = ES_CONV_OUT (W, K, S, P);
  EsShape in = { 3, { C, H, W } };
  EsLayerSpec l[4] = { es_layer_spec_default (ES_LAYER_CONV2D),
                       es_layer_spec_default (ES_LAYER_RELU),
                       es_layer_spec_default (ES_LAYER_FLATTEN),
                       es_layer_spec_default (ES_LAYER_DENSE) };
  EsModel *m;
  float *x = g_malloc ((size_t) B * C * H * W * sizeof (float));
  float *y1 = g_malloc ((size_t) B * OC * OH * OW * sizeof (float));
  float *ref = g_malloc ((size_t) B * OUT * sizeof (float));
  EsRng rng = { 12 };
  EsQuant *q;
  EsCalib *c;

  l[0].filters = OC;
  l[0].kernel = K;
  l[0].stride = S;
  l[0].padding = P;
  l[3].units = OUT;
  m = es_model_new (&in, l, 4, NULL);
  g_assert_nonnull (m);
  es_model_init (m, 13);
  /* biases that are not zero */
  {
    float *b0 = es_model_tensor_data (m, es_model_layer (m, 0)->first_tensor + 1);

    for (int o = 0; o < OC; o++)
      b0[o] = (float) (es_rng_uniform (&rng) - 0.5) * 0.2f;
  }
  for (int i = 0; i < B * C * H * W; i++)
    x[i] = (float) (es_rng_uniform (&rng) * 2.0 - 0.7);
  q = es_quant_new (m, ES_QUANT_INT8_STATIC, NULL, false, NULL);
  c = es_calib_new (m, ES_CALIB_MINMAX, 0.0f, NULL);
  g_assert_true (es_calib_observe (c, x, B, NULL));
  g_assert_true (es_calib_apply (c, q, NULL));
  es_calib_free (c);
  {
    const EsQuantLayer *q0 = &q->layers[0], *q3 = &q->layers[3];
    const float *b0 = es_model_tensor_data (m, es_model_layer (m, 0)->first_tensor + 1);
    const float *b3 = es_model_tensor_data (m, es_model_layer (m, 3)->first_tensor + 1);
    const int F = OC * OH * OW;
    uint8_t *q1 = g_malloc ((size_t) B * F);

    for (int b = 0; b < B; b++)
      for (int o = 0; o < OC; o++)
        {
          int32_t rowsum = 0;

          for (int k = 0; k < C * K * K; k++)
            rowsum += q0->w_q[o * C * K * K + k];
          for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++)
              {
                int32_t acc = 0;
                float v;

                for (int ci = 0; ci < C; ci++)
                  for (int kh = 0; kh < K; kh++)
                    for (int kw = 0; kw < K; kw++)
                      {
                        const int ih = oh * S - P + kh, iw = ow * S - P + kw;
                        const int32_t xq = ih < 0 || ih >= H || iw < 0 || iw >= W
                          ? q0->in_zero
                          : es_quant_act (x[((b * C + ci) * H + ih) * W + iw],
                                          1.0f / q0->in_scale, q0->in_zero, 255);

                        acc += xq * q0->w_q[((o * C + ci) * K + kh) * K + kw];
                      }
                v = es_qgemm_requant (acc, q0->in_zero * rowsum, q0->in_scale * q0->w_scale[o],
                                      b0[o]);
                y1[((b * OC + o) * OH + oh) * OW + ow] = v > 0.0f ? v : 0.0f;
              }
        }
    for (int i = 0; i < B * F; i++)
      q1[i] = (uint8_t) es_quant_act (y1[i], 1.0f / q3->in_scale, q3->in_zero, 255);
    es_qgemm_ref_forward (q1, F, q3->w_q, q3->w_scale, b3, B, F, OUT,
                          &(EsQGemmOut) { .x_scale = q3->in_scale, .x_zero = q3->in_zero,
                                          .out = ref, .ld_out = OUT });
    g_free (q1);
  }
  for (int threads = 1; threads <= 2; threads++)
    {
      EsBackend *be = es_cpu_backend_new (threads, NULL, NULL);
      EsExec *ex = exec_new (m, q, NULL, be, B), *ef = exec_new (m, NULL, NULL, be, B);
      const float *got = es_exec_run (ex, x, B);
      double max_err = 0.0;

      g_assert_cmpint (es_exec_layer_kind (ex, 0), ==, ES_EXEC_INT8);
      assert_equal_floats (got, ref, B * OUT, "int8 conv");
      got = es_exec_run (ef, x, B);
      for (int i = 0; i < B * OUT; i++)
        max_err = fmax (max_err, fabs (got[i] - ref[i]));
      g_test_message ("int8 conv vs fp32: max |d| %.4f", max_err);
      g_assert_cmpfloat (max_err, <, 0.05);
      es_exec_free (ex);
      es_exec_free (ef);
      es_backend_free (be);
    }
  es_quant_free (q);
  es_model_free (m);
  g_free (x);
  g_free (y1);
  g_free (ref);
}

/* fp16 runs the rounded weights in fp32: EsInfer on the dequantized model. */
static void
test_fp16 (void)
{
  enum { B = 9 };
  EsModel *m = reference_mlp (true, 14), *d;
  EsQuant *q = es_quant_new (m, ES_QUANT_BF16, NULL, false, NULL);
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  float *x = g_malloc ((size_t) B * D_IN * sizeof (float));
  EsExec *ex;
  EsInfer *inf;

  make_data (x, NULL, B, 8);
  d = es_quant_dequantized_model (m, q);
  ex = exec_new (m, q, NULL, be, B);
  inf = es_infer_new (d, be, B, NULL);
  {
    const float *a = es_exec_run (ex, x, B);
    float *keep = g_memdup2 (a, B * CLASSES * sizeof (float));
    const float *b = es_infer_run (inf, x, B);

    for (int i = 0; i < B * CLASSES; i++)
      g_assert_cmpfloat_with_epsilon (keep[i], b[i], 1e-6);
    g_free (keep);
  }
  es_infer_free (inf);
  es_exec_free (ex);
  es_model_free (d);
  es_quant_free (q);
  es_backend_free (be);
  es_model_free (m);
  g_free (x);
}

typedef struct {
  int     calls;
  int     layers[8];
  int64_t floats[8];
} Seen;

static void
record_observer (void *data, int layer, const float *inp, int B, int64_t in_floats)
{
  Seen *s = data;

  g_assert_cmpint (B, ==, 3);
  g_assert_nonnull (inp);
  if (s->calls < 8)
    {
      s->layers[s->calls] = layer;
      s->floats[s->calls] = in_floats;
    }
  s->calls++;
}

static void
test_observer (void)
{
  EsModel *m = reference_mlp (true, 15);
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsExec *ex = exec_new (m, NULL, NULL, be, 4);
  float *x = g_malloc0 (3 * D_IN * sizeof (float));
  Seen s = { 0 };
  static const int64_t want[5] = { D_IN, D_IN, HIDDEN, HIDDEN, CLASSES };

  es_exec_set_observer (ex, record_observer, &s);
  g_assert_nonnull (es_exec_run (ex, x, 3));
  g_assert_cmpint (s.calls, ==, 5);
  for (int i = 0; i < 5; i++)
    {
      g_assert_cmpint (s.layers[i], ==, i);
      g_assert_cmpint (s.floats[i], ==, want[i]);
    }
  es_exec_set_observer (ex, NULL, NULL);
  g_assert_nonnull (es_exec_run (ex, x, 3));
  g_assert_cmpint (s.calls, ==, 5);
  es_exec_free (ex);
  es_backend_free (be);
  es_model_free (m);
  g_free (x);
}

static void
test_errors (void)
{
  EsModel *m = reference_mlp (true, 16), *other = reference_mlp (false, 16);
  EsShape cin = { 3, { 1, 6, 6 } };
  EsLayerSpec cl[3] = { es_layer_spec_default (ES_LAYER_CONV2D),
                        es_layer_spec_default (ES_LAYER_FLATTEN),
                        es_layer_spec_default (ES_LAYER_DENSE) };
  EsModel *conv;
  EsBackend *be = es_cpu_backend_new (1, NULL, NULL);
  EsError err = { 0 };
  const bool keep[5] = { false, false, false, true, false };
  EsQuant *q = es_quant_new (m, ES_QUANT_INT8_STATIC, keep, false, NULL);
  const EsExecKind int8_all[5] = { ES_EXEC_DENSE, ES_EXEC_INT8, ES_EXEC_DENSE, ES_EXEC_INT8,
                                   ES_EXEC_DENSE };

  cl[0].filters = 2;
  cl[0].kernel = 3;
  cl[2].units = 3;
  conv = es_model_new (&cin, cl, 3, NULL);
  g_assert_nonnull (conv);
  {
    const EsExecKind sp[3] = { ES_EXEC_SPARSE, ES_EXEC_DENSE, ES_EXEC_DENSE };

    g_assert_null (es_exec_new (conv, NULL, sp, be, 4, &err));
    g_assert_nonnull (strstr (err.message, "Layer 0 (Conv2D)"));
    g_test_message ("%s", err.message);
  }
  /* not calibrated */
  es_error_clear (&err);
  g_assert_null (es_exec_new (m, q, NULL, be, 4, &err));
  g_assert_nonnull (strstr (err.message, "Layer 1 (Dense)"));
  g_test_message ("%s", err.message);
  es_quant_set_input_range (q, 1, 0.0f, 1.0f);
  g_assert_true (es_quant_is_ready (q, NULL));
  /* int8 on a layer kept in float */
  es_error_clear (&err);
  g_assert_null (es_exec_new (m, q, int8_all, be, 4, &err));
  g_assert_nonnull (strstr (err.message, "Layer 3 (Dense)"));
  g_test_message ("%s", err.message);
  /* int8 without a quantization */
  es_error_clear (&err);
  g_assert_null (es_exec_new (m, NULL, int8_all, be, 4, &err));
  g_assert_nonnull (strstr (err.message, "Layer 1 (Dense)"));
  /* a quantization of another model */
  es_error_clear (&err);
  g_assert_null (es_exec_new (other, q, NULL, be, 4, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_FORMAT);
  /* a layer too wide for the int8 kernels */
  {
    EsShape win = { 1, { ES_QGEMM_MAX_K + 1 } };
    EsLayerSpec wl = es_layer_spec_default (ES_LAYER_DENSE);
    EsModel *wide;
    EsQuant *wq;

    wl.units = 2;
    wide = es_model_new (&win, &wl, 1, NULL);
    es_model_init (wide, 1);
    wq = es_quant_new (wide, ES_QUANT_INT8_DYNAMIC, NULL, false, NULL);
    es_error_clear (&err);
    g_assert_null (es_exec_new (wide, wq, NULL, be, 1, &err));
    g_assert_true (g_str_has_prefix (err.message, "Layer 0 (Dense): "));
    g_test_message ("%s", err.message);
    es_quant_free (wq);
    es_model_free (wide);
  }
  /* no rows */
  es_error_clear (&err);
  g_assert_null (es_exec_new (m, q, NULL, be, 0, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  /* and with everything right, it runs */
  {
    EsExec *ex = exec_new (m, q, NULL, be, 4);
    float x[D_IN] = { 0 };

    g_assert_nonnull (es_exec_run (ex, x, 1));
    es_exec_free (ex);
  }
  g_assert_cmpstr (es_exec_kind_name (ES_EXEC_SPARSE), ==, "sparse");
  g_assert_cmpstr (es_exec_int8_path (), ==, es_qgemm_path_name (es_qgemm_default_path ()));
  es_quant_free (q);
  es_model_free (m);
  es_model_free (other);
  es_model_free (conv);
  es_backend_free (be);
}

/* ------------------------------------------------------------------------------ */
/* latency: printed, never asserted */

typedef const float *(*RunFn) (void *runner, const float *x, int B);

static const float *
run_exec (void *r, const float *x, int B)
{
  return es_exec_run (r, x, B);
}

static const float *
run_infer (void *r, const float *x, int B)
{
  return es_infer_run (r, x, B);
}

/* The best time of one run over budget_s of runs, in microseconds: on a shared machine
 * the fastest run is the one nothing else interrupted. */
static double
time_runner (RunFn fn, void *r, const float *x, int B, double budget_s)
{
  const double start = es_now ();
  double best = INFINITY;

  fn (r, x, B);   /* warm-up */
  do
    {
      const double t = es_now ();

      fn (r, x, B);
      best = fmin (best, es_now () - t);
    }
  while (es_now () - start < budget_s);
  return best * 1e6;
}

static void
test_latency (void)
{
  static const int Bs[] = { 1, 64, 256 };
  const char *env = g_getenv ("ESPALIER_BENCH_SECONDS");
  const double budget = env != NULL ? g_ascii_strtod (env, NULL) : 0.03;
  float *x;
  EsQuant *q;

  /* a table of times, no assertion: under memcheck it would time Valgrind */
  if (g_getenv ("ESPALIER_UNDER_VALGRIND") != NULL)
    {
      g_test_skip ("the times under Valgrind are Valgrind's");
      return;
    }
  x = g_malloc (256 * D_IN * sizeof (float));
  ensure_trained ();
  make_data (x, NULL, 256, 9);
  q = static_quant (trained, NULL, false, ES_CALIB_MINMAX);
  g_test_message ("reference MLP 784-128-10 + softmax; int8 path %s, fp32 GEMM %s",
                  es_exec_int8_path (), es_cpu_backend_gemm_path ());
  g_test_message ("best of %.2f s of runs each", budget);
  g_test_message ("threads  batch   EsInfer us   exec fp32 us   exec int8 us   fp32/int8");
  for (int threads = 1; threads <= 2; threads++)
    {
      EsBackend *be = es_cpu_backend_new (threads, NULL, NULL);
      EsInfer *inf = es_infer_new (trained, be, 256, NULL);
      EsExec *ef = exec_new (trained, NULL, NULL, be, 256), *e8 = exec_new (trained, q, NULL, be, 256);

      for (size_t bi = 0; bi < G_N_ELEMENTS (Bs); bi++)
        {
          const double ti = time_runner (run_infer, inf, x, Bs[bi], budget);
          const double tf = time_runner (run_exec, ef, x, Bs[bi], budget);
          const double t8 = time_runner (run_exec, e8, x, Bs[bi], budget);

          g_test_message ("%7d  %5d  %11.2f  %13.2f  %13.2f  %9.2fx", threads, Bs[bi], ti, tf,
                          t8, fmin (ti, tf) / t8);
        }
      es_exec_free (ef);
      es_exec_free (e8);
      es_infer_free (inf);
      es_backend_free (be);
    }
  es_quant_free (q);
  g_free (x);
}

int
main (int argc, char **argv)
{
  int rc;

  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/exec/dense-equals-infer", test_dense_equals_infer);
  g_test_add_func ("/exec/int8-static", test_int8_static);
  g_test_add_func ("/exec/int8-close-to-float", test_int8_close_to_float);
  g_test_add_func ("/exec/int8-dynamic", test_int8_dynamic);
  g_test_add_func ("/exec/keep-float", test_keep_float);
  g_test_add_func ("/exec/sparse-and-mixed", test_sparse_and_mixed);
  g_test_add_func ("/exec/int8-conv", test_int8_conv);
  g_test_add_func ("/exec/fp16", test_fp16);
  g_test_add_func ("/exec/observer", test_observer);
  g_test_add_func ("/exec/errors", test_errors);
  g_test_add_func ("/exec/latency", test_latency);
  rc = g_test_run ();
  es_model_free (trained);
  es_model_free (trained_logits);
  return rc;
}
