/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-variant.c: EspalierVariant's optimized-variant side: the format, exec and
 * latency figures as notified properties, the quantization and the size it gives,
 * per-layer sparsity, and espalier_measure_variant on a small MLP (float, 90% sparse,
 * static int8). Timings are only checked for consistency (median <= p95, the chosen
 * kernel is the faster one), never against the clock. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "es-prune.h"
#include "espalier-error.h"
#include "espalier-templates.h"
#include "espalier-variant.h"
#include "quant-test-util.h"

static const EsShape in_64 = { .rank = 1, .dims = { 64 } };

static EsModel *
mlp (const char *spec, guint64 seed)
{
  g_autoptr(GError) error = NULL;
  EsModel *m = espalier_model_from_spec (spec, &in_64, &error);

  g_assert_no_error (error);
  es_model_init (m, seed);
  return m;
}

/* Property names notified, in a table name -> count. */
static void
on_notify (GObject *obj, GParamSpec *pspec, GHashTable *seen)
{
  gpointer n = g_hash_table_lookup (seen, pspec->name);

  g_hash_table_insert (seen, (gpointer) pspec->name, GUINT_TO_POINTER (GPOINTER_TO_UINT (n) + 1));
}

static guint
times (GHashTable *seen, const char *name)
{
  return GPOINTER_TO_UINT (g_hash_table_lookup (seen, name));
}

/* ------------------------------------------------------------------------------------ */

static void
test_properties (void)
{
  g_autoptr(EspalierVariant) v = espalier_variant_new ("base", "baseline",
                                                       mlp ("dense:16,relu,dense:3", 1));
  g_autoptr(GHashTable) seen = g_hash_table_new (g_str_hash, g_str_equal);
  g_autofree char *format = NULL, *exec = NULL;
  EspalierLatency lat = {
    .median_us = 12.5, .p95_us = 20.25, .rows_per_second = 1e6, .dense_us = 12.5,
    .sparse_us = 30.0, .exec = ES_EXEC_DENSE,
  };
  double p95 = 0.0;

  g_assert_cmpstr (espalier_variant_get_format (v), ==, "fp32");
  g_assert_null (espalier_variant_get_exec (v));
  g_assert_null (espalier_variant_get_quant (v));
  g_assert_true (isnan (espalier_variant_get_latency_p95_us (v)));
  g_assert_true (isnan (espalier_variant_get_rows_per_second (v)));
  g_assert_true (isnan (espalier_variant_get_dense_latency_us (v)));
  g_assert_true (isnan (espalier_variant_get_sparse_latency_us (v)));

  g_signal_connect (v, "notify", G_CALLBACK (on_notify), seen);
  espalier_variant_set_latency (v, &lat);
  g_assert_cmpuint (times (seen, "latency-us"), ==, 1);
  g_assert_cmpuint (times (seen, "latency-p95-us"), ==, 1);
  g_assert_cmpuint (times (seen, "rows-per-second"), ==, 1);
  g_assert_cmpuint (times (seen, "dense-latency-us"), ==, 1);
  g_assert_cmpuint (times (seen, "sparse-latency-us"), ==, 1);
  g_assert_cmpuint (times (seen, "exec"), ==, 1);
  g_assert_cmpuint (g_hash_table_size (seen), ==, 6);
  g_assert_cmpfloat (espalier_variant_get_latency_us (v), ==, 12.5);
  g_assert_cmpfloat (espalier_variant_get_latency_p95_us (v), ==, 20.25);
  g_assert_cmpfloat (espalier_variant_get_rows_per_second (v), ==, 1e6);
  g_assert_cmpfloat (espalier_variant_get_dense_latency_us (v), ==, 12.5);
  g_assert_cmpfloat (espalier_variant_get_sparse_latency_us (v), ==, 30.0);
  g_assert_cmpstr (espalier_variant_get_exec (v), ==, "dense");

  /* the same figures again: nothing changes, nothing is notified */
  g_hash_table_remove_all (seen);
  espalier_variant_set_latency (v, &lat);
  g_assert_cmpuint (g_hash_table_size (seen), ==, 0);

  /* NaN figures (not measured) compare equal to NaN */
  lat.dense_us = lat.sparse_us = NAN;
  lat.exec = ES_EXEC_SPARSE;
  espalier_variant_set_latency (v, &lat);
  g_assert_cmpuint (times (seen, "dense-latency-us"), ==, 1);
  g_assert_cmpuint (times (seen, "sparse-latency-us"), ==, 1);
  g_assert_cmpuint (times (seen, "exec"), ==, 1);
  g_assert_cmpuint (g_hash_table_size (seen), ==, 3);
  g_hash_table_remove_all (seen);
  espalier_variant_set_latency (v, &lat);
  g_assert_cmpuint (g_hash_table_size (seen), ==, 0);

  /* through GObject */
  g_object_get (v, "format", &format, "exec", &exec, "latency-p95-us", &p95, NULL);
  g_assert_cmpstr (format, ==, "fp32");
  g_assert_cmpstr (exec, ==, "sparse");
  g_assert_cmpfloat (p95, ==, 20.25);
  g_object_set (v, "rows-per-second", 5.0, "exec", "int8", NULL);
  g_assert_cmpfloat (espalier_variant_get_rows_per_second (v), ==, 5.0);
  g_assert_cmpstr (espalier_variant_get_exec (v), ==, "int8");
  g_assert_cmpuint (times (seen, "rows-per-second"), ==, 1);
  g_assert_cmpuint (times (seen, "exec"), ==, 1);

  /* names that do not exist are refused */
  g_hash_table_remove_all (seen);
  g_test_expect_message ("Espalier", G_LOG_LEVEL_WARNING, "*not a kind of kernels*");
  g_object_set (v, "exec", "quantum", NULL);
  g_test_assert_expected_messages ();
  g_test_expect_message ("Espalier", G_LOG_LEVEL_WARNING, "*not a variant format*");
  g_object_set (v, "format", "int4", NULL);
  g_test_assert_expected_messages ();
  /* float weights are fp32: another format needs a quantization */
  g_test_expect_message ("Espalier", G_LOG_LEVEL_WARNING, "*has fp32 weights, not fp16*");
  g_object_set (v, "format", "fp16", NULL);
  g_test_assert_expected_messages ();
  g_assert_cmpuint (g_hash_table_size (seen), ==, 0);
  g_assert_cmpstr (espalier_variant_get_exec (v), ==, "int8");
  g_assert_cmpstr (espalier_variant_get_format (v), ==, "fp32");

  /* a variant saved without weights keeps the format it names */
  {
    g_autoptr(EspalierVariant) bare = espalier_variant_new ("bare", "quantized", NULL);

    g_object_set (bare, "format", "int8-dynamic", NULL);
    g_assert_cmpstr (espalier_variant_get_format (bare), ==, "int8-dynamic");
    g_assert_cmpuint (espalier_variant_get_size_bytes (bare), ==, 0);
  }
  g_signal_handlers_disconnect_by_func (v, on_notify, seen);
}

/* The reference MLP: 784 -> 128 -> 10. */
static EsModel *
reference_mlp (guint64 seed)
{
  static const EsShape in_784 = { .rank = 1, .dims = { 784 } };
  g_autoptr(GError) error = NULL;
  EsModel *m = espalier_model_from_spec ("dense:128,relu,dense:10", &in_784, &error);

  g_assert_no_error (error);
  es_model_init (m, seed);
  return m;
}

static void
test_quant (void)
{
  g_autoptr(EspalierVariant) v = espalier_variant_new ("q", "quantized", reference_mlp (2));
  g_autoptr(GHashTable) seen = g_hash_table_new (g_str_hash, g_str_equal);
  EsModel *m = espalier_variant_get_model (v);
  guint64 fp32 = espalier_variant_get_size_bytes (v);
  /* int8: a byte a weight, 4 for each row's scale and each bias */
  guint64 int8 = 784 * 128 + 128 * 10 + 4 * (128 + 10) + 4 * (128 + 10);
  EsQuant *q;
  double ratio;

  g_assert_cmpuint (fp32, ==, 4 * (guint64) es_model_n_params (m));
  g_signal_connect (v, "notify", G_CALLBACK (on_notify), seen);

  q = qtu_quant (m, ES_QUANT_INT8_STATIC, NULL, 3);
  espalier_variant_set_quant (v, q);
  g_assert_true (espalier_variant_get_quant (v) == q);
  g_assert_cmpstr (espalier_variant_get_format (v), ==, "int8-static");
  g_assert_cmpuint (espalier_variant_get_size_bytes (v), ==, es_quant_weight_bytes (m, q));
  g_assert_cmpuint (espalier_variant_get_size_bytes (v), ==, int8);
  g_assert_cmpuint (times (seen, "format"), ==, 1);
  g_assert_cmpuint (times (seen, "size-bytes"), ==, 1);
  /* about a quarter of fp32 (the target: at least 3.9x smaller) */
  ratio = (double) fp32 / (double) espalier_variant_get_size_bytes (v);
  g_test_message ("fp32 %" G_GUINT64_FORMAT " bytes, int8 %" G_GUINT64_FORMAT " (%.3fx)", fp32,
                  espalier_variant_get_size_bytes (v), ratio);
  g_assert_cmpfloat (ratio, >, 3.9);
  g_assert_cmpfloat (ratio, <=, 4.0);

  /* fp16: half */
  espalier_variant_set_quant (v, qtu_quant (m, ES_QUANT_FP16, NULL, 0));
  g_assert_cmpstr (espalier_variant_get_format (v), ==, "fp16");
  g_assert_cmpuint (espalier_variant_get_size_bytes (v), ==,
                    es_quant_weight_bytes (m, espalier_variant_get_quant (v)));
  g_assert_cmpuint (espalier_variant_get_size_bytes (v), <, fp32);
  g_assert_cmpuint (espalier_variant_get_size_bytes (v), >=, fp32 / 2);

  /* back to float */
  g_hash_table_remove_all (seen);
  espalier_variant_set_quant (v, NULL);
  g_assert_null (espalier_variant_get_quant (v));
  g_assert_cmpstr (espalier_variant_get_format (v), ==, "fp32");
  g_assert_cmpuint (espalier_variant_get_size_bytes (v), ==, fp32);
  g_assert_cmpuint (times (seen, "format"), ==, 1);
  g_assert_cmpuint (times (seen, "size-bytes"), ==, 1);

  /* a quantization of other weights is refused (and freed) */
  {
    EsModel *other = mlp ("dense:7,relu,dense:10", 2);

    g_test_expect_message ("Espalier", G_LOG_LEVEL_CRITICAL, "*does not fit*");
    espalier_variant_set_quant (v, qtu_quant (other, ES_QUANT_INT8_DYNAMIC, NULL, 0));
    g_test_assert_expected_messages ();
    g_assert_null (espalier_variant_get_quant (v));
    es_model_free (other);
  }

  /* new weights of another shape drop the quantization */
  espalier_variant_set_quant (v, qtu_quant (m, ES_QUANT_INT8_DYNAMIC, NULL, 0));
  g_assert_cmpstr (espalier_variant_get_format (v), ==, "int8-dynamic");
  espalier_variant_set_model (v, mlp ("dense:5,relu,dense:10", 4));
  g_assert_null (espalier_variant_get_quant (v));
  g_assert_cmpstr (espalier_variant_get_format (v), ==, "fp32");
  g_assert_cmpuint (espalier_variant_get_size_bytes (v), ==,
                    4 * (guint64) es_model_n_params (espalier_variant_get_model (v)));
  g_signal_handlers_disconnect_by_func (v, on_notify, seen);
}

/* Zero the first `zeros` weights of Dense layer `layer` of m. */
static void
zero_weights (EsModel *m, int layer, gint64 zeros)
{
  int t = es_model_layer (m, layer)->first_tensor;
  float *w = es_model_tensor_data (m, t);

  for (gint64 i = 0; i < zeros; i++)
    w[i] = 0.0f;
}

static void
test_layer_sparsity (void)
{
  EsModel *m = mlp ("dense:16,relu,dense:3", 5);
  g_autoptr(EspalierVariant) v = NULL;

  zero_weights (m, 0, 64 * 16 / 4);       /* a quarter of 64 x 16 */
  zero_weights (m, 2, 16 * 3);            /* all of 16 x 3 */
  v = espalier_variant_new ("p", "pruned", m);
  g_assert_cmpfloat (espalier_variant_get_layer_sparsity (v, 0), ==, 0.25);
  g_assert_cmpfloat (espalier_variant_get_layer_sparsity (v, 1), ==, 0.0);   /* relu */
  g_assert_cmpfloat (espalier_variant_get_layer_sparsity (v, 2), ==, 1.0);
  espalier_variant_set_model (v, NULL);
  g_assert_cmpfloat (espalier_variant_get_layer_sparsity (v, 0), ==, 0.0);
}

/* ------------------------------------------------------------------------------------ */
/* Measuring */

static void
assert_consistent (const EspalierLatency *lat)
{
  g_test_message ("median %.3f us, p95 %.3f us, %.0f rows/s, dense %.3f, sparse %.3f, %s",
                  lat->median_us, lat->p95_us, lat->rows_per_second, lat->dense_us,
                  lat->sparse_us, es_exec_kind_name (lat->exec));
  g_assert_true (isfinite (lat->median_us));
  g_assert_cmpfloat (lat->median_us, >, 0.0);
  g_assert_cmpfloat (lat->median_us, <=, lat->p95_us);
  g_assert_true (isfinite (lat->p95_us));
  g_assert_true (isfinite (lat->rows_per_second));
  g_assert_cmpfloat (lat->rows_per_second, >, 0.0);
}

static void
test_measure_dense (void)
{
  g_autoptr(GError) error = NULL;
  EsModel *m = mlp ("dense:32,relu,dense:10", 6);
  EspalierLatency lat;

  g_assert_true (espalier_measure_variant (m, NULL, 1, 64, 0.1, &lat, &error));
  g_assert_no_error (error);
  assert_consistent (&lat);
  g_assert_cmpint (lat.exec, ==, ES_EXEC_DENSE);
  g_assert_true (isnan (lat.dense_us));
  g_assert_true (isnan (lat.sparse_us));
  es_model_free (m);
}

/* 90% of every Dense weight zero: both kernels timed, the faster chosen. */
static void
test_measure_sparse (void)
{
  g_autoptr(GError) error = NULL;
  EsModel *m = mlp ("dense:128,relu,dense:10", 7);
  EspalierLatency lat;

  for (int layer = 0; layer < es_model_n_layers (m); layer++)
    if (es_model_layer (m, layer)->spec.kind == ES_LAYER_DENSE)
      {
        const EsTensorInfo *t = es_model_tensor (m, es_model_layer (m, layer)->first_tensor);
        float *w = es_model_tensor_data (m, es_model_layer (m, layer)->first_tensor);

        for (gint64 i = 0; i < t->size; i++)
          if (i % 10 != 0)
            w[i] = 0.0f;
      }
  g_assert_cmpfloat (es_prune_model_sparsity (m), >=, 0.89);

  g_assert_true (espalier_measure_variant (m, NULL, 1, 64, 0.2, &lat, &error));
  g_assert_no_error (error);
  assert_consistent (&lat);
  g_assert_true (isfinite (lat.dense_us) && lat.dense_us > 0.0);
  g_assert_true (isfinite (lat.sparse_us) && lat.sparse_us > 0.0);
  g_assert_true (lat.exec == ES_EXEC_DENSE || lat.exec == ES_EXEC_SPARSE);
  g_assert_cmpfloat (lat.median_us, ==, MIN (lat.dense_us, lat.sparse_us));
  g_assert_cmpint (lat.exec, ==, lat.sparse_us < lat.dense_us ? ES_EXEC_SPARSE : ES_EXEC_DENSE);
  es_model_free (m);
}

static void
test_measure_int8 (void)
{
  g_autoptr(GError) error = NULL;
  EsModel *m = mlp ("dense:32,relu,dense:10", 8);
  EsQuant *q = qtu_quant (m, ES_QUANT_INT8_STATIC, NULL, 9);
  EspalierLatency lat;

  g_assert_true (espalier_measure_variant (m, q, 1, 64, 0.1, &lat, &error));
  g_assert_no_error (error);
  assert_consistent (&lat);
  g_assert_cmpint (lat.exec, ==, ES_EXEC_INT8);
  g_assert_true (isnan (lat.dense_us));

  /* a quantization of other weights fails, it does not crash */
  {
    EsModel *other = mlp ("dense:8,relu,dense:10", 8);

    g_assert_false (espalier_measure_variant (other, q, 1, 64, 0.1, &lat, &error));
    g_assert_nonnull (error);
    g_assert_true (error->domain == ESPALIER_ERROR);
    g_assert_nonnull (strstr (error->message, "does not fit"));
    g_clear_error (&error);
    es_model_free (other);
  }
  es_quant_free (q);
  es_model_free (m);
}

/* The variant's own measurement stores every figure; with int8 weights, on int8. */
static void
test_variant_measure (void)
{
  g_autoptr(EspalierVariant) v = espalier_variant_new ("v", "quantized",
                                                       mlp ("dense:32,relu,dense:10", 10));
  g_autoptr(GError) error = NULL;
  double us = NAN;

  g_assert_true (espalier_variant_measure_latency (v, 1, 0.05, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (espalier_variant_get_exec (v), ==, "dense");
  g_assert_cmpfloat (espalier_variant_get_latency_us (v), <=,
                     espalier_variant_get_latency_p95_us (v));
  g_assert_cmpfloat (espalier_variant_get_rows_per_second (v), >, 0.0);

  espalier_variant_set_quant (v, qtu_quant (espalier_variant_get_model (v),
                                            ES_QUANT_INT8_DYNAMIC, NULL, 0));
  g_assert_true (espalier_variant_measure_latency (v, 1, 0.05, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (espalier_variant_get_exec (v), ==, "int8");
  g_assert_cmpfloat (espalier_variant_get_latency_us (v), >, 0.0);

  /* the plain latency of a model still works */
  g_assert_true (espalier_measure_latency (espalier_variant_get_model (v), 1, 0.05, &us, &error));
  g_assert_no_error (error);
  g_assert_cmpfloat (us, >, 0.0);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/core/variant/properties", test_properties);
  g_test_add_func ("/core/variant/quant", test_quant);
  g_test_add_func ("/core/variant/layer-sparsity", test_layer_sparsity);
  g_test_add_func ("/core/variant/measure/dense", test_measure_dense);
  g_test_add_func ("/core/variant/measure/sparse", test_measure_sparse);
  g_test_add_func ("/core/variant/measure/int8", test_measure_int8);
  g_test_add_func ("/core/variant/measure/variant", test_variant_measure);
  return g_test_run ();
}
