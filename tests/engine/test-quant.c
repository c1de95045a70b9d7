/* test-quant.c: quantizing a model (es-quant.h). Weights dequantize within half a step
 * of their row's scale; activation parameters hold 0 exactly; fp16 and bf16 round to
 * nearest even with NaN, infinities and subnormals right (checked against the F16C
 * instructions where the CPU has them); the calibrator's ranges on known distributions
 * (min/max exact, the percentile clips an outlier, the MSE range lies inside min/max
 * and near the known optimum for a Gaussian); stored weight bytes; loaders' checks. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "es-quant.h"

/* gcc's __builtin_cpu_supports knows "f16c"; clang 14's (the fuzz build's) does not. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_F16C_TEST 1

/* The F16C instruction, the reference for es_f32_to_f16 where the CPU has it. */
static __attribute__ ((target ("f16c"))) uint16_t
hw_f16 (float f)
{
  return (uint16_t) _cvtss_sh (f, 0);
}
#endif

static EsModel *
make_model (const EsShape *in, const EsLayerSpec *l, int n, uint64_t seed)
{
  EsError err = { 0 };
  EsModel *m = es_model_new (in, l, n, &err);

  g_assert_cmpint (err.code, ==, ES_OK);
  g_assert_nonnull (m);
  es_model_init (m, seed);
  return m;
}

/* Dense(units) ReLU Dense(units2) on in_features inputs. */
static EsModel *
mlp (int in_features, int units, int units2, uint64_t seed)
{
  EsShape in = { 1, { in_features } };
  EsLayerSpec l[3] = { es_layer_spec_default (ES_LAYER_DENSE),
                       es_layer_spec_default (ES_LAYER_RELU),
                       es_layer_spec_default (ES_LAYER_DENSE) };

  l[0].units = units;
  l[2].units = units2;
  return make_model (&in, l, 3, seed);
}

/* Conv2D(4, 3x3, pad 1) ReLU Flatten Dense(5) on (2, 6, 6). */
static EsModel *
convnet (uint64_t seed)
{
  EsShape in = { 3, { 2, 6, 6 } };
  EsLayerSpec l[4] = { es_layer_spec_default (ES_LAYER_CONV2D),
                       es_layer_spec_default (ES_LAYER_RELU),
                       es_layer_spec_default (ES_LAYER_FLATTEN),
                       es_layer_spec_default (ES_LAYER_DENSE) };

  l[0].filters = 4;
  l[0].kernel = 3;
  l[0].padding = 1;
  l[3].units = 5;
  return make_model (&in, l, 4, seed);
}

static void
test_names (void)
{
  for (int m = ES_QUANT_FP32; m <= ES_QUANT_BF16; m++)
    {
      EsQuantMode back;

      g_assert_true (es_quant_mode_from_name (es_quant_mode_name ((EsQuantMode) m), &back));
      g_assert_cmpint (back, ==, m);
    }
  for (int m = ES_CALIB_MINMAX; m <= ES_CALIB_MSE; m++)
    {
      EsCalibMethod back;

      g_assert_true (es_calib_method_from_name (es_calib_method_name ((EsCalibMethod) m), &back));
      g_assert_cmpint (back, ==, m);
    }
  g_assert_cmpstr (es_quant_mode_name (ES_QUANT_INT8_STATIC), ==, "int8-static");
  g_assert_cmpstr (es_calib_method_name (ES_CALIB_MSE), ==, "mse");
  {
    EsQuantMode mq;
    EsCalibMethod mc;

    g_assert_false (es_quant_mode_from_name ("int4", &mq));
    g_assert_false (es_calib_method_from_name ("entropy", &mc));
  }
}

/* |w - q s| <= s / 2 for every weight, s = max|row| / 127, the row's largest at +-127. */
static void
check_layer_weights (const EsModel *m, const EsQuant *q, int i)
{
  const EsLayerInfo *l = es_model_layer (m, i);
  const EsTensorInfo *t = es_model_tensor (m, l->first_tensor);
  const float *w = es_model_params_const (m) + t->offset;
  const EsQuantLayer *ql = &q->layers[i];

  g_assert_true (ql->int8);
  g_assert_cmpint ((int64_t) ql->rows * ql->cols, ==, t->size);
  for (int r = 0; r < ql->rows; r++)
    {
      float max_abs = 0.0f;
      bool hit = false;

      for (int k = 0; k < ql->cols; k++)
        max_abs = fmaxf (max_abs, fabsf (w[r * ql->cols + k]));
      g_assert_cmpfloat (ql->w_scale[r], ==, max_abs / 127.0f);
      for (int k = 0; k < ql->cols; k++)
        {
          const int8_t qv = ql->w_q[r * ql->cols + k];
          const double err = fabs ((double) w[r * ql->cols + k] - (double) qv * ql->w_scale[r]);

          g_assert_cmpint (qv, >=, -127);
          g_assert_cmpint (qv, <=, 127);
          g_assert_cmpfloat (err, <=, 0.5 * ql->w_scale[r] * (1.0 + 1e-5));
          hit = hit || qv == 127 || qv == -127;
        }
      g_assert_true (hit);
    }
}

static void
test_weights (void)
{
  EsModel *m = mlp (37, 21, 5, 1), *c = convnet (2);
  EsError err = { 0 };
  bool keep[3] = { false, false, true };
  EsQuant *q = es_quant_new (m, ES_QUANT_INT8_STATIC, NULL, false, &err);
  EsQuant *qk = es_quant_new (m, ES_QUANT_INT8_DYNAMIC, keep, true, &err);
  EsQuant *qc = es_quant_new (c, ES_QUANT_INT8_STATIC, NULL, false, &err);

  g_assert_nonnull (q);
  g_assert_nonnull (qk);
  g_assert_nonnull (qc);
  g_assert_cmpint (q->n_layers, ==, 3);
  check_layer_weights (m, q, 0);
  check_layer_weights (m, q, 2);
  g_assert_false (q->layers[1].int8);        /* ReLU */
  g_assert_cmpint (q->layers[0].rows, ==, 21);
  g_assert_cmpint (q->layers[0].cols, ==, 37);
  g_assert_false (q->layers[0].calibrated);
  check_layer_weights (m, qk, 0);
  g_assert_false (qk->layers[2].int8);       /* kept in float */
  g_assert_true (qk->reduce_range);
  check_layer_weights (c, qc, 0);
  g_assert_cmpint (qc->layers[0].rows, ==, 4);
  g_assert_cmpint (qc->layers[0].cols, ==, 2 * 3 * 3);
  check_layer_weights (c, qc, 3);
  g_assert_true (es_quant_check (q, m, NULL));
  g_assert_true (es_quant_check (qc, c, NULL));

  /* a row of zeros: scale 1, codes 0 */
  {
    EsModel *z = mlp (4, 3, 2, 3);
    float *w = es_model_tensor_data (z, es_model_layer (z, 0)->first_tensor);
    EsQuant *qz;

    memset (w, 0, 4 * sizeof (float));   /* row 0 */
    qz = es_quant_new (z, ES_QUANT_INT8_STATIC, NULL, false, NULL);
    g_assert_cmpfloat (qz->layers[0].w_scale[0], ==, 1.0f);
    for (int k = 0; k < 4; k++)
      g_assert_cmpint (qz->layers[0].w_q[k], ==, 0);
    /* and a weight that is not a number is refused, naming the layer */
    w[5] = NAN;
    g_assert_null (es_quant_new (z, ES_QUANT_INT8_STATIC, NULL, false, &err));
    g_assert_cmpint (err.code, ==, ES_ERR_NUMERIC);
    g_assert_nonnull (strstr (err.message, "Layer 0 (Dense)"));
    es_quant_free (qz);
    es_model_free (z);
  }
  /* fp16 / bf16 / fp32 quantize nothing to int8 */
  {
    EsQuant *qh = es_quant_new (m, ES_QUANT_FP16, NULL, false, NULL);

    for (int i = 0; i < qh->n_layers; i++)
      g_assert_false (qh->layers[i].int8);
    es_quant_free (qh);
  }
  es_quant_free (q);
  es_quant_free (qk);
  es_quant_free (qc);
  es_model_free (m);
  es_model_free (c);
}

/* The range always holds 0, whose code is the zero point exactly. */
static void
test_act_params (void)
{
  static const float ranges[][2] = { { -1.0f, 3.0f }, { 0.0f, 6.0f }, { 0.5f, 2.0f },
                                     { -4.0f, -0.25f }, { 0.0f, 0.0f }, { -1e-3f, 1e4f },
                                     { -0.3f, 0.7f }, { -2.0f, 2.0f } };

  for (size_t i = 0; i < G_N_ELEMENTS (ranges); i++)
    for (int qmax = 127; qmax <= 255; qmax += 128)
      {
        const float lo = ranges[i][0], hi = ranges[i][1];
        float s;
        int32_t z;

        es_quant_act_params (lo, hi, qmax, &s, &z);
        g_assert_cmpfloat (s, >, 0.0f);
        g_assert_cmpint (z, >=, 0);
        g_assert_cmpint (z, <=, qmax);
        /* 0.0 quantizes to z and dequantizes to exactly 0.0 */
        g_assert_cmpint (es_quant_act (0.0f, 1.0f / s, z, qmax), ==, z);
        g_assert_cmpfloat ((float) (es_quant_act (0.0f, 1.0f / s, z, qmax) - z) * s, ==, 0.0f);
        /* the ends of the widened range are within a step of the ends of the grid */
        if (hi > lo)
          {
            const float wl = fminf (lo, 0.0f), wh = fmaxf (hi, 0.0f);

            g_assert_cmpfloat (fabsf ((float) (0 - z) * s - wl), <=, s);
            g_assert_cmpfloat (fabsf ((float) (qmax - z) * s - wh), <=, s);
            g_assert_cmpint (es_quant_act (lo, 1.0f / s, z, qmax), >=, 0);
            if (hi > 0.0f)
              g_assert_cmpint (es_quant_act (hi * 10.0f, 1.0f / s, z, qmax), ==, qmax);
          }
      }
}

static void
test_f16 (void)
{
  /* every half value comes back from float unchanged (NaNs stay NaNs) */
  for (uint32_t h = 0; h < 65536; h++)
    {
      const float f = es_f16_to_f32 ((uint16_t) h);
      const uint16_t back = es_f32_to_f16 (f);

      if (((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff) != 0)
        {
          g_assert_true (isnan (f));
          g_assert_cmpint (back & 0x7c00, ==, 0x7c00);
          g_assert_cmpint (back & 0x3ff, !=, 0);
        }
      else
        g_assert_cmpint (back, ==, h);
    }
  /* values derived by hand: steps of 2^-10 at 1, ties to even */
  g_assert_cmpint (es_f32_to_f16 (1.0f), ==, 0x3c00);
  g_assert_cmpint (es_f32_to_f16 (1.0f + 0x1p-11f), ==, 0x3c00);
  g_assert_cmpint (es_f32_to_f16 (1.0f + 3 * 0x1p-11f), ==, 0x3c02);
  g_assert_cmpint (es_f32_to_f16 (1.0f + 0x1p-11f + 0x1p-20f), ==, 0x3c01);
  g_assert_cmpint (es_f32_to_f16 (-2.0f), ==, 0xc000);
  g_assert_cmpint (es_f32_to_f16 (-0.0f), ==, 0x8000);
  g_assert_cmpint (es_f32_to_f16 (65504.0f), ==, 0x7bff);
  g_assert_cmpint (es_f32_to_f16 (65519.0f), ==, 0x7bff);
  g_assert_cmpint (es_f32_to_f16 (65520.0f), ==, 0x7c00);
  g_assert_cmpint (es_f32_to_f16 (1e10f), ==, 0x7c00);
  g_assert_cmpint (es_f32_to_f16 (-INFINITY), ==, 0xfc00);
  g_assert_true (isnan (es_f16_to_f32 (es_f32_to_f16 (NAN))));
  g_assert_cmpint (es_f32_to_f16 (0x1p-24f), ==, 0x0001);        /* smallest subnormal */
  g_assert_cmpint (es_f32_to_f16 (0x1p-25f), ==, 0x0000);        /* tie to even: 0 */
  g_assert_cmpint (es_f32_to_f16 (0x1.8p-25f), ==, 0x0001);
  g_assert_cmpint (es_f32_to_f16 (3 * 0x1p-25f), ==, 0x0002);    /* tie to even: 2 */
  g_assert_cmpint (es_f32_to_f16 (1023 * 0x1p-24f), ==, 0x03ff); /* largest subnormal */
  g_assert_cmpint (es_f32_to_f16 (0x1p-14f), ==, 0x0400);        /* smallest normal */
  g_assert_cmpint (es_f32_to_f16 (0x1p-14f - 0x1p-26f), ==, 0x0400);
  g_assert_cmpint (es_f32_to_f16 (1e-30f), ==, 0x0000);
  g_assert_cmpfloat (es_f16_to_f32 (0x0001), ==, 0x1p-24f);
  g_assert_cmpfloat (es_f16_to_f32 (0x7bff), ==, 65504.0f);

#ifdef HAVE_F16C_TEST
  if (__builtin_cpu_supports ("f16c"))
    {
      EsRng rng = { 5 };

      for (int i = 0; i < 200000; i++)
        {
          uint32_t u = (uint32_t) es_rng_next (&rng);
          float f;

          if (i % 4 == 1)   /* concentrate on the half range, subnormals included */
            u = (u & 0x80000000u) | (0x33000000u + (u % (0x47800000u - 0x33000000u)));
          memcpy (&f, &u, sizeof f);
          if (isnan (f))
            continue;
          if (es_f32_to_f16 (f) != hw_f16 (f))
            g_error ("f16 of %a: %#x, F16C %#x", (double) f, es_f32_to_f16 (f), hw_f16 (f));
        }
    }
#endif
}

static void
test_bf16 (void)
{
  for (uint32_t h = 0; h < 65536; h++)
    {
      const float f = es_bf16_to_f32 ((uint16_t) h);
      const uint16_t back = es_f32_to_bf16 (f);

      if (isnan (f))
        {
          g_assert_cmpint (back & 0x7f80, ==, 0x7f80);
          g_assert_cmpint (back & 0x7f, !=, 0);
        }
      else
        g_assert_cmpint (back, ==, h);
    }
  g_assert_cmpint (es_f32_to_bf16 (1.0f), ==, 0x3f80);
  g_assert_cmpint (es_f32_to_bf16 (1.0f + 0x1p-8f), ==, 0x3f80);      /* tie to even */
  g_assert_cmpint (es_f32_to_bf16 (1.0f + 3 * 0x1p-8f), ==, 0x3f82);  /* tie to even */
  g_assert_cmpint (es_f32_to_bf16 (1.0f + 0x1p-8f + 0x1p-20f), ==, 0x3f81);
  g_assert_cmpint (es_f32_to_bf16 (INFINITY), ==, 0x7f80);
  g_assert_cmpint (es_f32_to_bf16 (3.4e38f), ==, 0x7f80);              /* rounds past the top */
  g_assert_true (isnan (es_bf16_to_f32 (es_f32_to_bf16 (NAN))));
  {
    uint32_t sig_nan = 0x7f800001u;   /* payload only in the low bits */
    float f;

    memcpy (&f, &sig_nan, sizeof f);
    g_assert_true (isnan (es_bf16_to_f32 (es_f32_to_bf16 (f))));
  }
  /* subnormal floats keep their top bits */
  g_assert_cmpint (es_f32_to_bf16 (0x1p-130f), ==, 0x0008);
  g_assert_cmpint (es_f32_to_bf16 (0x1p-130f + 0x1p-149f), ==, 0x0008);
  {
    const float f = es_bf16_to_f32 (0x0008);
    uint32_t u;

    memcpy (&u, &f, sizeof u);
    g_assert_cmpint (u, ==, 0x00080000u);   /* 2^-130, a float subnormal */
  }
}

/* Calibrate layer 0 of a Dense model on rows of x (n floats in rows of D). */
static void
calibrate (const EsModel *m, EsCalibMethod method, float pct, const float *x, int rows,
           EsQuant *q)
{
  EsError err = { 0 };
  EsCalib *c = es_calib_new (m, method, pct, &err);
  const int D = (int) es_shape_size (&es_model_layer (m, 0)->in);

  g_assert_nonnull (c);
  for (int r = 0; r < rows; r += 100)   /* batches of 100 and a last partial one */
    g_assert_true (es_calib_observe (c, x + (int64_t) r * D, ES_MIN (100, rows - r), &err));
  g_assert_true (es_calib_apply (c, q, &err));
  g_assert_cmpint (err.code, ==, ES_OK);
  es_calib_free (c);
}

static void
test_calibration (void)
{
  const int D = 10, rows = 2050;
  EsModel *m = mlp (D, 8, 3, 4);
  float *uni = g_malloc ((size_t) rows * D * sizeof (float));
  float *gau = g_malloc ((size_t) rows * D * sizeof (float));
  float ulo = INFINITY, uhi = -INFINITY, glo = INFINITY, ghi = -INFINITY;
  EsRng rng = { 6 };
  EsQuant *q = es_quant_new (m, ES_QUANT_INT8_STATIC, NULL, false, NULL);
  EsError err = { 0 };

  for (int i = 0; i < rows * D; i++)
    {
      uni[i] = (float) es_rng_uniform (&rng);
      gau[i] = (float) es_rng_normal (&rng);
    }
  uni[777] = 100.0f;   /* one outlier among 20500 */
  for (int i = 0; i < rows * D; i++)
    {
      ulo = fminf (ulo, uni[i]);
      uhi = fmaxf (uhi, uni[i]);
      glo = fminf (glo, gau[i]);
      ghi = fmaxf (ghi, gau[i]);
    }
  g_assert_false (es_quant_is_ready (q, &err));
  g_assert_nonnull (strstr (err.message, "Layer 0"));

  /* min/max: exactly what was seen */
  calibrate (m, ES_CALIB_MINMAX, 0.0f, uni, rows, q);
  g_assert_cmpfloat (q->layers[0].in_lo, ==, ulo);
  g_assert_cmpfloat (q->layers[0].in_hi, ==, uhi);
  g_assert_true (q->layers[0].calibrated);
  g_assert_true (q->layers[2].calibrated);
  g_assert_cmpfloat (q->layers[2].in_lo, >=, 0.0f);    /* after a ReLU */
  g_assert_cmpint (q->layers[2].in_zero, ==, 0);
  g_assert_true (es_quant_is_ready (q, NULL));
  {
    float s;
    int32_t z;

    es_quant_act_params (ulo, uhi, 255, &s, &z);
    g_assert_cmpfloat (q->layers[0].in_scale, ==, s);
    g_assert_cmpint (q->layers[0].in_zero, ==, z);
  }

  /* the 99.9th percentile of |x| clips the outlier: ~1 instead of 100 */
  calibrate (m, ES_CALIB_PERCENTILE, 99.9f, uni, rows, q);
  g_assert_cmpfloat (q->layers[0].in_lo, ==, ulo);
  g_assert_cmpfloat (q->layers[0].in_hi, >=, 0.99f);
  g_assert_cmpfloat (q->layers[0].in_hi, <=, 1.01f);
  /* the default percentile (99.99) on the Gaussian: inside min/max, beyond 3 sigma */
  calibrate (m, ES_CALIB_PERCENTILE, 0.0f, gau, rows, q);
  g_assert_cmpfloat (q->layers[0].in_hi, <=, ghi);
  g_assert_cmpfloat (q->layers[0].in_hi, >=, 3.0f);
  g_assert_cmpfloat (q->layers[0].in_lo, >=, glo);
  g_assert_cmpfloat (q->layers[0].in_lo, <=, -3.0f);

  /* MSE on N(0,1) with 256 levels: the optimum clips near 4 sigma (inside the
   * sample's extremes, about +-4.1 for 20500 samples); never outside min/max */
  calibrate (m, ES_CALIB_MSE, 0.0f, gau, rows, q);
  g_test_message ("MSE range on N(0,1): [%g, %g], sample [%g, %g]",
                  (double) q->layers[0].in_lo, (double) q->layers[0].in_hi, (double) glo,
                  (double) ghi);
  g_assert_cmpfloat (q->layers[0].in_hi, <=, ghi);
  g_assert_cmpfloat (q->layers[0].in_lo, >=, glo);
  g_assert_cmpfloat (q->layers[0].in_hi, >=, 2.5f);
  g_assert_cmpfloat (q->layers[0].in_lo, <=, -2.5f);
  /* MSE on the uniform data with a single outlier: its squared error outweighs the
   * finer step, so the range still reaches it; and stays inside min/max */
  calibrate (m, ES_CALIB_MSE, 0.0f, uni, rows, q);
  g_assert_cmpfloat (q->layers[0].in_hi, <=, uhi);
  g_assert_cmpfloat (q->layers[0].in_lo, >=, ulo);
  /* 0.05% of the values at 3 to 4, the rest in [0, 1]: clipping them at 1 would cost
   * ~10 * 2.5^2 = ~60 in squared error against ~20500 * (4/255)^2 / 12 = ~0.4 for the
   * coarser step, so the MSE range keeps them */
  {
    float *mix = g_malloc ((size_t) rows * D * sizeof (float));

    for (int i = 0; i < rows * D; i++)
      mix[i] = i % 2000 == 0 ? 3.0f + (float) es_rng_uniform (&rng) : (float) es_rng_uniform (&rng);
    calibrate (m, ES_CALIB_MSE, 0.0f, mix, rows, q);
    g_test_message ("MSE range, 0.05%% outliers at 3..4: [%g, %g]", (double) q->layers[0].in_lo,
                    (double) q->layers[0].in_hi);
    g_assert_cmpfloat (q->layers[0].in_hi, >=, 3.0f);
    g_assert_cmpfloat (q->layers[0].in_hi, <=, 4.0f);
    g_free (mix);
  }

  /* errors: an unobserved calibrator, a bad percentile */
  {
    EsCalib *c = es_calib_new (m, ES_CALIB_MINMAX, 0.0f, NULL);

    g_assert_false (es_calib_apply (c, q, &err));
    g_assert_nonnull (strstr (err.message, "Layer 0 (Dense)"));
    es_calib_free (c);
    es_error_clear (&err);
    g_assert_null (es_calib_new (m, ES_CALIB_PERCENTILE, 101.0f, &err));
    g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  }
  es_quant_free (q);
  es_model_free (m);
  g_free (uni);
  g_free (gau);
}

/* The MSE choice is the best of the candidates: a brute-force search over clipping
 * thresholds on the real quantizer gives no smaller error than it (within 10%). */
static double
quant_sq_error (const float *x, int n, float lo, float hi, int qmax)
{
  float s;
  int32_t z;
  double e = 0.0;

  es_quant_act_params (lo, hi, qmax, &s, &z);
  for (int i = 0; i < n; i++)
    {
      const double d = (double) (es_quant_act (x[i], 1.0f / s, z, qmax) - z) * s - x[i];

      e += d * d;
    }
  return e;
}

static void
test_mse_optimum (void)
{
  const int D = 4, rows = 5000, n = rows * D;
  EsModel *m = mlp (D, 3, 2, 9);
  float *x = g_malloc ((size_t) n * sizeof (float));
  EsQuant *q = es_quant_new (m, ES_QUANT_INT8_STATIC, NULL, true, NULL);
  EsRng rng = { 8 };
  float amax = 0.0f, lo, hi;
  double best = INFINITY, got;

  /* Laplace(1): heavy tails, where clipping pays */
  for (int i = 0; i < n; i++)
    {
      double u = es_rng_uniform (&rng) - 0.5;

      x[i] = (float) (u < 0 ? log (1.0 + 2.0 * u) : -log (1.0 - 2.0 * u));
      amax = fmaxf (amax, fabsf (x[i]));
    }
  calibrate (m, ES_CALIB_MSE, 0.0f, x, rows, q);
  lo = q->layers[0].in_lo;
  hi = q->layers[0].in_hi;
  got = quant_sq_error (x, n, lo, hi, 127);
  for (int k = 1; k <= 400; k++)
    {
      const float t = amax * (float) k / 400.0f;

      best = fmin (best, quant_sq_error (x, n, -t, t, 127));
    }
  g_test_message ("Laplace, 7 bits: MSE range [%g, %g] of max %g; error %g, best of a scan %g",
                  (double) lo, (double) hi, (double) amax, got, best);
  g_assert_cmpfloat (hi, <, amax);
  g_assert_cmpfloat (got, <=, best * 1.1);
  es_quant_free (q);
  es_model_free (m);
  g_free (x);
}

static void
test_weight_bytes (void)
{
  /* the reference MLP: 784 -> 128 -> 10 */
  EsModel *m = mlp (784, 128, 10, 10);
  const size_t P = (size_t) es_model_n_params (m);
  EsQuant *q8 = es_quant_new (m, ES_QUANT_INT8_STATIC, NULL, false, NULL);
  EsQuant *q16 = es_quant_new (m, ES_QUANT_FP16, NULL, false, NULL);
  EsQuant *qb = es_quant_new (m, ES_QUANT_BF16, NULL, false, NULL);
  EsQuant *q32 = es_quant_new (m, ES_QUANT_FP32, NULL, false, NULL);
  bool keep[3] = { false, false, true };
  EsQuant *qk = es_quant_new (m, ES_QUANT_INT8_DYNAMIC, keep, false, NULL);
  /* int8 weights + a float scale per row, float biases */
  const size_t int8_bytes = 784 * 128 + 128 * 4 + 128 * 4 + 128 * 10 + 10 * 4 + 10 * 4;
  const size_t keep_bytes = 784 * 128 + 128 * 4 + 128 * 4 + (128 * 10 + 10) * 4;

  g_assert_cmpuint (P, ==, 784 * 128 + 128 + 128 * 10 + 10);
  g_assert_cmpuint (es_quant_weight_bytes (m, NULL), ==, 4 * P);
  g_assert_cmpuint (es_quant_weight_bytes (m, q32), ==, 4 * P);
  g_assert_cmpuint (es_quant_weight_bytes (m, q16), ==, 2 * P);
  g_assert_cmpuint (es_quant_weight_bytes (m, qb), ==, 2 * P);
  g_assert_cmpuint (es_quant_weight_bytes (m, q8), ==, int8_bytes);
  g_assert_cmpuint (es_quant_weight_bytes (m, qk), ==, keep_bytes);
  g_test_message ("reference MLP: fp32 %zu bytes, int8 %zu (%.2fx smaller)", 4 * P, int8_bytes,
                  (double) (4 * P) / (double) int8_bytes);
  g_assert_cmpfloat ((double) (4 * P) / (double) int8_bytes, >=, 3.9);

  /* BatchNorm's running statistics stay fp32 in every mode */
  {
    EsShape in = { 1, { 6 } };
    EsLayerSpec l[2] = { es_layer_spec_default (ES_LAYER_DENSE),
                         es_layer_spec_default (ES_LAYER_BATCHNORM) };
    EsModel *bn;
    EsQuant *qbn;

    l[0].units = 4;
    bn = make_model (&in, l, 2, 1);
    qbn = es_quant_new (bn, ES_QUANT_FP16, NULL, false, NULL);
    g_assert_cmpuint (es_quant_weight_bytes (bn, qbn), ==,
                      2 * (size_t) es_model_n_params (bn) + 4 * (size_t) es_model_n_buffers (bn));
    es_quant_free (qbn);
    es_model_free (bn);
  }
  es_quant_free (q8);
  es_quant_free (q16);
  es_quant_free (qb);
  es_quant_free (q32);
  es_quant_free (qk);
  es_model_free (m);
}

/* What a loader does: new_empty, layer_alloc, fill; check accepts it and rejects what
 * does not fit, naming the layer. */
static void
test_check_and_empty (void)
{
  EsModel *m = mlp (9, 6, 4, 11), *other = mlp (9, 7, 4, 11);
  EsQuant *q = es_quant_new (m, ES_QUANT_INT8_STATIC, NULL, false, NULL);
  EsQuant *e = es_quant_new_empty (ES_QUANT_INT8_STATIC, 3), *c;
  EsError err = { 0 };

  g_assert_nonnull (e);
  for (int i = 0; i < 3; i++)
    {
      const EsQuantLayer *s = &q->layers[i];

      g_assert_false (e->layers[i].int8);
      if (!s->int8)
        continue;
      g_assert_true (es_quant_layer_alloc (&e->layers[i], s->rows, s->cols, &err));
      g_assert_true (e->layers[i].int8);
      memcpy (e->layers[i].w_scale, s->w_scale, (size_t) s->rows * sizeof (float));
      memcpy (e->layers[i].w_q, s->w_q, (size_t) s->rows * (size_t) s->cols);
      es_quant_set_input_range (e, i, -1.0f, 2.0f);
    }
  g_assert_true (es_quant_check (e, m, &err));
  g_assert_true (es_quant_is_ready (e, &err));
  g_assert_cmpfloat (e->layers[0].in_lo, ==, -1.0f);
  g_assert_cmpfloat (e->layers[0].in_hi, ==, 2.0f);

  /* a copy is deep and equal */
  c = es_quant_copy (e);
  g_assert_true (c->layers[0].w_q != e->layers[0].w_q);
  g_assert_cmpmem (c->layers[0].w_q, 54, e->layers[0].w_q, 54);
  g_assert_cmpfloat (c->layers[2].in_scale, ==, e->layers[2].in_scale);
  es_quant_free (c);

  /* the wrong model */
  g_assert_false (es_quant_check (e, other, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_FORMAT);
  g_assert_nonnull (strstr (err.message, "Layer 0 (Dense)"));
  /* an int8 ReLU */
  es_error_clear (&err);
  e->layers[1].int8 = true;
  g_assert_false (es_quant_check (e, m, &err));
  g_assert_nonnull (strstr (err.message, "Layer 1 (ReLU)"));
  e->layers[1].int8 = false;
  /* a bad scale, a -128 code */
  e->layers[2].w_scale[1] = 0.0f;
  g_assert_false (es_quant_check (e, m, &err));
  g_assert_nonnull (strstr (err.message, "Layer 2"));
  e->layers[2].w_scale[1] = 0.5f;
  e->layers[2].w_q[3] = -128;
  g_assert_false (es_quant_check (e, m, &err));
  e->layers[2].w_q[3] = 0;
  g_assert_true (es_quant_check (e, m, NULL));
  /* int8 layers in an fp16 quantization, a layer count that differs */
  e->mode = ES_QUANT_FP16;
  g_assert_false (es_quant_check (e, m, &err));
  e->mode = ES_QUANT_INT8_STATIC;
  {
    EsQuant *short_q = es_quant_new_empty (ES_QUANT_INT8_STATIC, 2);

    g_assert_false (es_quant_check (short_q, m, &err));
    es_quant_free (short_q);
  }
  g_assert_false (es_quant_layer_alloc (&e->layers[0], 0, 3, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  es_quant_free (e);
  es_quant_free (q);
  es_model_free (m);
  es_model_free (other);
}

/* The dequantized model: int8 weights as q * s, biases and float layers unchanged;
 * fp16 parameters rounded. */
static void
test_dequantized (void)
{
  EsModel *m = mlp (12, 7, 3, 12);
  bool keep[3] = { false, false, true };
  EsQuant *q = es_quant_new (m, ES_QUANT_INT8_STATIC, keep, false, NULL);
  EsQuant *qh = es_quant_new (m, ES_QUANT_FP16, NULL, false, NULL);
  EsModel *d = es_quant_dequantized_model (m, q), *h = es_quant_dequantized_model (m, qh);
  const EsLayerInfo *l0 = es_model_layer (m, 0);
  const float *w = es_model_tensor_data (d, l0->first_tensor);
  const float *b = es_model_tensor_data (d, l0->first_tensor + 1);
  const float *b_orig = es_model_tensor_data (m, l0->first_tensor + 1);
  const float *w2 = es_model_tensor_data (d, es_model_layer (m, 2)->first_tensor);
  const float *w2_orig = es_model_tensor_data (m, es_model_layer (m, 2)->first_tensor);

  g_assert_nonnull (d);
  g_assert_nonnull (h);
  for (int r = 0; r < 7; r++)
    for (int k = 0; k < 12; k++)
      g_assert_cmpfloat (w[r * 12 + k], ==, q->layers[0].w_q[r * 12 + k] * q->layers[0].w_scale[r]);
  g_assert_cmpmem (b, 7 * sizeof (float), b_orig, 7 * sizeof (float));
  g_assert_cmpmem (w2, 21 * sizeof (float), w2_orig, 21 * sizeof (float));
  for (int64_t i = 0; i < es_model_n_params (m); i++)
    g_assert_cmpfloat (es_model_params (h)[i], ==,
                       es_f16_to_f32 (es_f32_to_f16 (es_model_params (m)[i])));
  es_model_free (d);
  es_model_free (h);
  es_quant_free (q);
  es_quant_free (qh);
  es_model_free (m);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/quant/names", test_names);
  g_test_add_func ("/quant/weights", test_weights);
  g_test_add_func ("/quant/act-params", test_act_params);
  g_test_add_func ("/quant/f16", test_f16);
  g_test_add_func ("/quant/bf16", test_bf16);
  g_test_add_func ("/quant/calibration", test_calibration);
  g_test_add_func ("/quant/mse-optimum", test_mse_optimum);
  g_test_add_func ("/quant/weight-bytes", test_weight_bytes);
  g_test_add_func ("/quant/check-and-empty", test_check_and_empty);
  g_test_add_func ("/quant/dequantized", test_dequantized);
  return g_test_run ();
}
