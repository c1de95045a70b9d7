/* test-model.c: shape inference, its error messages, parameter layout and counts,
 * FLOPs, initialization and copies of EsModel. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "es-model.h"

static EsLayerSpec
L (EsLayerKind kind)
{
  return es_layer_spec_default (kind);
}

static EsLayerSpec
dense (int units)
{
  EsLayerSpec s = L (ES_LAYER_DENSE);
  s.units = units;
  return s;
}

static EsLayerSpec
conv (int filters, int k, int stride, int pad)
{
  EsLayerSpec s = L (ES_LAYER_CONV2D);
  s.filters = filters;
  s.kernel = k;
  s.stride = stride;
  s.padding = pad;
  return s;
}

static const EsShape img = { 3, { 1, 28, 28 } };

static void
test_reference_mlp (void)
{
  EsLayerSpec layers[] = { L (ES_LAYER_FLATTEN), dense (128), L (ES_LAYER_RELU), dense (10),
                           L (ES_LAYER_SOFTMAX) };
  EsError err = { 0 };
  EsModel *m = es_model_new (&img, layers, 5, &err);
  EsShape out;

  g_assert_nonnull (m);
  g_assert_cmpint (err.code, ==, ES_OK);
  g_assert_cmpint (es_model_n_params (m), ==, 784 * 128 + 128 + 128 * 10 + 10);
  g_assert_cmpint (es_model_n_params (m), ==, 101770);
  out = es_model_output_shape (m);
  g_assert_cmpint (out.rank, ==, 1);
  g_assert_cmpint (out.dims[0], ==, 10);
  g_assert_cmpint (es_model_layer (m, 0)->out.dims[0], ==, 784);
  /* forward FLOPs: 2 * (784*128 + 128*10) plus the element-wise layers */
  g_assert_cmpint (es_model_layer (m, 1)->flops, ==, 2 * 784 * 128);
  g_assert_cmpint (es_model_layer (m, 3)->flops, ==, 2 * 128 * 10);
  g_assert_cmpint (es_model_n_tensors (m), ==, 4);
  g_assert_cmpstr (es_model_tensor (m, 0)->name, ==, "layers.1.weight");
  g_assert_cmpint (es_model_tensor (m, 0)->dims[0], ==, 128);
  g_assert_cmpint (es_model_tensor (m, 0)->dims[1], ==, 784);
  g_assert_cmpstr (es_model_tensor (m, 3)->name, ==, "layers.3.bias");
  g_assert_cmpint (es_model_tensor (m, 3)->offset + es_model_tensor (m, 3)->size, ==, 101770);
  g_assert_cmpint (es_model_max_act (m), ==, 784);
  es_model_free (m);
}

static void
test_cnn_shapes (void)
{
  EsLayerSpec layers[] = {
    conv (6, 5, 1, 2), L (ES_LAYER_RELU), L (ES_LAYER_MAXPOOL2D),
    conv (16, 5, 1, 0), L (ES_LAYER_BATCHNORM), L (ES_LAYER_TANH), L (ES_LAYER_AVGPOOL2D),
    L (ES_LAYER_FLATTEN), dense (10),
  };
  EsModel *m = es_model_new (&img, layers, G_N_ELEMENTS (layers), NULL);
  const EsLayerInfo *c1, *p1, *c2, *bn, *p2;

  g_assert_nonnull (m);
  c1 = es_model_layer (m, 0);
  p1 = es_model_layer (m, 2);
  c2 = es_model_layer (m, 3);
  bn = es_model_layer (m, 4);
  p2 = es_model_layer (m, 6);
  g_assert_cmpint (c1->out.dims[0], ==, 6);
  g_assert_cmpint (c1->out.dims[1], ==, 28);
  g_assert_cmpint (p1->out.dims[1], ==, 14);
  g_assert_cmpint (c2->out.dims[1], ==, 10);
  g_assert_cmpint (p2->out.dims[1], ==, 5);
  g_assert_cmpint (c1->n_params, ==, 6 * 25 + 6);
  g_assert_cmpint (c1->flops, ==, 2LL * 6 * 28 * 28 * 25);
  g_assert_cmpint (bn->n_params, ==, 32);
  g_assert_cmpint (bn->n_buffers, ==, 32);
  g_assert_cmpint (es_model_n_buffers (m), ==, 32);
  g_assert_cmpint (es_model_layer (m, 8)->in.dims[0], ==, 16 * 5 * 5);
  /* BatchNorm's running variance starts at one */
  for (int t = 0; t < es_model_n_tensors (m); t++)
    if (strstr (es_model_tensor (m, t)->name, "running_var"))
      g_assert_cmpfloat (es_model_tensor_data (m, t)[0], ==, 1.0f);
  es_model_free (m);
}

static void
test_shape_errors (void)
{
  EsError err = { 0 };
  EsLayerSpec no_flatten[] = { dense (10) };
  EsLayerSpec big_kernel[] = { L (ES_LAYER_FLATTEN), conv (4, 3, 1, 0) };
  EsLayerSpec too_big[] = { conv (4, 29, 1, 0) };
  EsLayerSpec zero_units[] = { L (ES_LAYER_FLATTEN), dense (0) };
  EsLayerSpec bad_rate[] = { L (ES_LAYER_DROPOUT) };
  EsShape bad = { 2, { 3, 3 } };

  bad_rate[0].rate = 1.0f;

  g_assert_null (es_model_new (&img, no_flatten, 1, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_SHAPE);
  g_assert_nonnull (strstr (err.message, "Layer 1 (Dense)"));
  g_assert_nonnull (strstr (err.message, "(1, 28, 28)"));
  g_assert_nonnull (strstr (err.message, "Flatten"));

  es_error_clear (&err);
  g_assert_null (es_model_new (&img, big_kernel, 2, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_SHAPE);
  g_assert_nonnull (strstr (err.message, "Layer 2 (Conv2D)"));
  g_assert_nonnull (strstr (err.message, "(784)"));

  es_error_clear (&err);
  g_assert_null (es_model_new (&img, too_big, 1, &err));
  g_assert_nonnull (strstr (err.message, "kernel of 29"));

  es_error_clear (&err);
  g_assert_null (es_model_new (&img, zero_units, 2, &err));
  g_assert_nonnull (strstr (err.message, "Layer 2 (Dense)"));

  es_error_clear (&err);
  g_assert_null (es_model_new (&img, bad_rate, 1, &err));
  g_assert_nonnull (strstr (err.message, "rate"));

  es_error_clear (&err);
  g_assert_null (es_model_new (&bad, no_flatten, 1, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_SHAPE);

  es_error_clear (&err);
  g_assert_null (es_model_new (&img, NULL, 0, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
}

static void
test_init (void)
{
  EsShape in = { 1, { 2 } };
  EsLayerSpec layers[] = { dense (8), L (ES_LAYER_TANH), dense (8), L (ES_LAYER_RELU), dense (3) };
  EsModel *a = es_model_new (&in, layers, 5, NULL);
  EsModel *b = es_model_new (&in, layers, 5, NULL);
  EsModel *c;
  const EsTensorInfo *w0, *w1;
  double limit;

  es_model_init (a, 42);
  es_model_init (b, 42);
  g_assert_cmpmem (es_model_params (a), es_model_n_params (a) * sizeof (float),
                   es_model_params (b), es_model_n_params (b) * sizeof (float));
  es_model_init (b, 43);
  g_assert_true (memcmp (es_model_params (a), es_model_params (b),
                         es_model_n_params (a) * sizeof (float)) != 0);

  /* Glorot before tanh: |w| <= sqrt(6 / (2 + 8)); He before ReLU: sqrt(6 / 8); biases zero */
  w0 = es_model_tensor (a, 0);
  limit = sqrt (6.0 / 10.0);
  for (int i = 0; i < w0->size; i++)
    g_assert_cmpfloat (fabs (es_model_params (a)[w0->offset + i]), <=, limit);
  for (int i = 0; i < es_model_tensor (a, 1)->size; i++)
    g_assert_cmpfloat (es_model_params (a)[es_model_tensor (a, 1)->offset + i], ==, 0.0f);
  w1 = es_model_tensor (a, 2);
  limit = sqrt (6.0 / 8.0);
  for (int i = 0; i < w1->size; i++)
    g_assert_cmpfloat (fabs (es_model_params (a)[w1->offset + i]), <=, limit);

  c = es_model_copy (a);
  g_assert_cmpmem (es_model_params (a), es_model_n_params (a) * sizeof (float),
                   es_model_params (c), es_model_n_params (c) * sizeof (float));
  es_model_free (a);
  es_model_free (b);
  es_model_free (c);
}

static void
test_names (void)
{
  for (int k = 0; k < ES_LAYER_N_KINDS; k++)
    {
      EsLayerKind back;

      g_assert_true (es_layer_kind_from_name (es_layer_kind_name ((EsLayerKind) k), &back));
      g_assert_cmpint (back, ==, k);
      g_assert_true (es_layer_kind_from_name (es_layer_kind_title ((EsLayerKind) k), &back));
      g_assert_cmpint (back, ==, k);
    }
  {
    EsLayerKind k;
    g_assert_false (es_layer_kind_from_name ("lstm", &k));
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/engine/model/reference-mlp", test_reference_mlp);
  g_test_add_func ("/engine/model/cnn-shapes", test_cnn_shapes);
  g_test_add_func ("/engine/model/shape-errors", test_shape_errors);
  g_test_add_func ("/engine/model/init", test_init);
  g_test_add_func ("/engine/model/names", test_names);
  return g_test_run ();
}
