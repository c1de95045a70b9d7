/* SPDX-License-Identifier: GPL-3.0-or-later */
/* quant-test-util.h: what the variant, model-file and project tests share about
 * quantized variants: a quantization of a model in each mode (static int8 calibrated
 * on seeded random rows), an exact comparison of two EsQuant (the fields each mode
 * uses), and of two models' weights. Header-only, static. */
#pragma once

#include <string.h>

#include <glib.h>

#include "es-quant.h"

/* q of model in mode; keep_float (n_layers, may be NULL) keeps layers in float. Static
 * int8 is calibrated with min/max on 64 normal rows from seed. */
G_GNUC_UNUSED static EsQuant *
qtu_quant (const EsModel *model, EsQuantMode mode, const bool *keep_float, guint64 seed)
{
  EsError es = { 0 };
  EsQuant *q = es_quant_new (model, mode, keep_float, false, &es);

  if (q == NULL)
    g_error ("es_quant_new: %s", es.message);
  if (mode == ES_QUANT_INT8_STATIC)
    {
      EsShape in = es_model_input_shape (model);
      gint64 D = es_shape_size (&in);
      g_autofree float *x = g_new (float, 64 * D);   /* (64, D) */
      EsRng rng = { seed };
      EsCalib *c;

      for (gint64 i = 0; i < 64 * D; i++)
        x[i] = (float) es_rng_normal (&rng);
      c = es_calib_new (model, ES_CALIB_MINMAX, 99.99f, &es);
      if (c == NULL || !es_calib_observe (c, x, 64, &es) || !es_calib_apply (c, q, &es))
        g_error ("calibration: %s", es.message);
      es_calib_free (c);
      g_assert_true (es_quant_is_ready (q, NULL));
    }
  return q;
}

G_GNUC_UNUSED static void
qtu_assert_same_float (float a, float b)
{
  g_assert_cmpmem (&a, sizeof a, &b, sizeof b);
}

/* Equal in everything the mode uses: mode, reduce_range, each layer's int8 flag; for
 * int8 layers the shape, scales and codes; for static ones the input range, scale
 * and zero point. */
G_GNUC_UNUSED static void
qtu_assert_quants_equal (const EsQuant *a, const EsQuant *b)
{
  g_assert_nonnull (a);
  g_assert_nonnull (b);
  g_assert_cmpint (a->mode, ==, b->mode);
  g_assert_cmpint (a->reduce_range, ==, b->reduce_range);
  g_assert_cmpint (a->n_layers, ==, b->n_layers);
  for (int i = 0; i < a->n_layers; i++)
    {
      const EsQuantLayer *x = &a->layers[i], *y = &b->layers[i];

      g_assert_cmpint (x->int8, ==, y->int8);
      if (!x->int8)
        continue;
      g_assert_cmpint (x->rows, ==, y->rows);
      g_assert_cmpint (x->cols, ==, y->cols);
      g_assert_cmpmem (x->w_scale, x->rows * sizeof (float), y->w_scale, y->rows * sizeof (float));
      g_assert_cmpmem (x->w_q, (gsize) x->rows * x->cols, y->w_q, (gsize) y->rows * y->cols);
      if (a->mode != ES_QUANT_INT8_STATIC)
        continue;
      g_assert_cmpint (x->calibrated, ==, y->calibrated);
      qtu_assert_same_float (x->in_lo, y->in_lo);
      qtu_assert_same_float (x->in_hi, y->in_hi);
      qtu_assert_same_float (x->in_scale, y->in_scale);
      g_assert_cmpint (x->in_zero, ==, y->in_zero);
    }
}

/* Parameters and buffers equal bit for bit (shapes are the callers' to compare). */
G_GNUC_UNUSED static void
qtu_assert_weights_equal (const EsModel *a, const EsModel *b)
{
  g_assert_cmpint (es_model_n_params (a), ==, es_model_n_params (b));
  g_assert_cmpint (es_model_n_buffers (a), ==, es_model_n_buffers (b));
  g_assert_cmpmem (es_model_params_const (a), es_model_n_params (a) * 4,
                   es_model_params_const (b), es_model_n_params (b) * 4);
  g_assert_cmpmem (es_model_buffers_const (a), es_model_n_buffers (a) * 4,
                   es_model_buffers_const (b), es_model_n_buffers (b) * 4);
}
