/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-onnx.c: ONNX export and import in core, with nothing but our own code: every
 * exported model imports back to the same outputs (bit for bit where nothing was
 * folded, within float rounding where BatchNorm was), the summary counts what was
 * written, the writes are atomic, a graph written the way other tools write them
 * imports to the model it means, and broken files (truncated, wrong opset, unknown
 * operator, missing initializer, wrong shapes, branches) give errors that say what is
 * wrong and where. The files are broken through the same generated protobuf-c messages
 * the exporter uses. ONNX's checker and ONNX Runtime are in test-onnx-peers.c. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "onnx.pb-c.h"

#include "espalier-error.h"
#include "espalier-onnx.h"
#include "onnx-test-util.h"

/* ------------------------------------------------------------------------------------ */
/* helpers */

static void
assert_close (const float *a, const float *b, gsize n, double rtol, double atol)
{
  double worst = 0.0;
  gsize at = 0;

  for (gsize k = 0; k < n; k++)
    {
      double d = fabs ((double) a[k] - b[k]) - (atol + rtol * fabs ((double) b[k]));

      if (!(d <= worst) || isnan (d))
        {
          worst = isnan (d) ? INFINITY : d;
          at = k;
        }
    }
  if (worst > 0.0)
    g_error ("value %" G_GSIZE_FORMAT " differs: %.9g vs %.9g (rtol %g, atol %g)", at, a[at],
             b[at], rtol, atol);
}

/* Same layers (kinds and hyper-parameters) and bit-identical tensors. */
static void
assert_models_equal (const EsModel *a, const EsModel *b)
{
  EsShape ia = es_model_input_shape (a), ib = es_model_input_shape (b);

  g_assert_true (es_shape_equal (&ia, &ib));
  g_assert_cmpint (es_model_n_layers (a), ==, es_model_n_layers (b));
  for (int i = 0; i < es_model_n_layers (a); i++)
    {
      const EsLayerSpec *x = &es_model_layer (a, i)->spec, *y = &es_model_layer (b, i)->spec;

      g_assert_cmpint (x->kind, ==, y->kind);
      switch (x->kind)
        {
        case ES_LAYER_DENSE: g_assert_cmpint (x->units, ==, y->units); break;
        case ES_LAYER_CONV2D:
          g_assert_cmpint (x->filters, ==, y->filters);
          g_assert_cmpint (x->padding, ==, y->padding);
          G_GNUC_FALLTHROUGH;
        case ES_LAYER_MAXPOOL2D:
        case ES_LAYER_AVGPOOL2D:
          g_assert_cmpint (x->kernel, ==, y->kernel);
          g_assert_cmpint (x->stride, ==, y->stride);
          break;
        case ES_LAYER_LEAKY_RELU: g_assert_cmpfloat (x->alpha, ==, y->alpha); break;
        case ES_LAYER_BATCHNORM:
          g_assert_cmpfloat (x->eps, ==, y->eps);
          g_assert_cmpfloat_with_epsilon (x->momentum, y->momentum, 1e-6);
          break;
        default: break;
        }
    }
  g_assert_cmpint (es_model_n_params (a), ==, es_model_n_params (b));
  g_assert_cmpint (es_model_n_buffers (a), ==, es_model_n_buffers (b));
  g_assert_cmpmem (es_model_params_const (a), es_model_n_params (a) * sizeof (float),
                   es_model_params_const (b), es_model_n_params (b) * sizeof (float));
  g_assert_cmpmem (es_model_buffers_const (a), es_model_n_buffers (a) * sizeof (float),
                   es_model_buffers_const (b), es_model_n_buffers (b) * sizeof (float));
}

static EsModel *
import_ok (const char *path, EspalierOnnxMeta *meta)
{
  g_autoptr(GError) error = NULL;
  EsModel *m = espalier_onnx_import (path, meta, &error);

  g_assert_no_error (error);
  g_assert_nonnull (m);
  return m;
}

/* Export, import, and compare outputs on 200 rows: exact, or within rtol. */
static EsModel *
round_trip (const EsModel *m, const char *name, double rtol, EspalierOnnxSummary *summary)
{
  g_autofree char *path = otu_export (m, NULL, name, summary);
  g_autofree float *x = otu_rows (200);
  EsModel *back = import_ok (path, NULL);
  g_autofree float *ya = otu_infer (m, x, 200), *yb = otu_infer (back, x, 200);
  gsize n = (gsize) 200 * otu_out_size (m);

  g_assert_cmpint (otu_out_size (back), ==, otu_out_size (m));
  if (rtol == 0.0)
    g_assert_cmpmem (ya, n * sizeof (float), yb, n * sizeof (float));
  else
    assert_close (yb, ya, n, rtol, 1e-6);
  return back;
}

static Onnx__ModelProto *
load_proto (const char *path)
{
  g_autofree char *data = NULL;
  gsize len;
  Onnx__ModelProto *m;

  g_assert_true (g_file_get_contents (path, &data, &len, NULL));
  m = onnx__model_proto__unpack (NULL, len, (const guint8 *) data);
  g_assert_nonnull (m);
  return m;
}

static void
save_proto (const Onnx__ModelProto *m, const char *path)
{
  gsize size = onnx__model_proto__get_packed_size (m);
  g_autofree guint8 *buf = g_malloc (size);

  onnx__model_proto__pack (m, buf);
  g_assert_true (g_file_set_contents (path, (const char *) buf, (gssize) size, NULL));
}

static Onnx__NodeProto *
find_node (Onnx__ModelProto *m, const char *op)
{
  for (gsize i = 0; i < m->graph->n_node; i++)
    if (strcmp (m->graph->node[i]->op_type, op) == 0)
      return m->graph->node[i];
  g_error ("no %s node", op);
  return NULL;
}

static Onnx__TensorProto *
find_init (Onnx__ModelProto *m, const char *name)
{
  for (gsize i = 0; i < m->graph->n_initializer; i++)
    if (strcmp (m->graph->initializer[i]->name, name) == 0)
      return m->graph->initializer[i];
  g_error ("no initializer %s", name);
  return NULL;
}

/* The import of path fails with domain/code and a message holding every fragment. */
static void
assert_import_fails (const char *path, GQuark domain, int code, const char *const *fragments)
{
  g_autoptr(GError) error = NULL;
  EspalierOnnxMeta meta;
  EsModel *m;

  espalier_onnx_meta_init (&meta);
  meta.producer = g_strdup ("untouched");
  m = espalier_onnx_import (path, &meta, &error);
  g_assert_null (m);
  g_assert_error (error, domain, code);
  g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, path));
  for (int i = 0; fragments != NULL && fragments[i] != NULL; i++)
    if (strstr (error->message, fragments[i]) == NULL)
      g_error ("“%s” is not in the message: %s", fragments[i], error->message);
  g_assert_cmpstr (meta.producer, ==, "untouched");
  espalier_onnx_meta_clear (&meta);
}

/* ------------------------------------------------------------------------------------ */
/* export and round trips */

static void
test_mlp (void)
{
  g_autoptr(GError) error = NULL;
  EsModel *m = otu_mlp ();
  EspalierOnnxSummary summary, inspected;
  g_autofree char *path = otu_export (m, NULL, "mlp", &summary);
  g_autofree char *ops = espalier_onnx_summary_ops (&summary);
  EspalierOnnxMeta meta;
  EsModel *back;
  GStatBuf st;

  /* The summary: what was written, as the file says when read back. */
  g_assert_cmpstr (ops, ==, "Flatten 1, Gemm 2, Relu 1, Softmax 1");
  g_assert_cmpint (summary.opset, ==, 13);
  g_assert_cmpuint (summary.n_nodes, ==, 5);
  g_assert_cmpuint (summary.n_initializers, ==, 4);
  g_assert_cmpint (summary.initializer_bytes, ==, es_model_n_params (m) * 4);
  g_assert_cmpint (g_stat (path, &st), ==, 0);
  g_assert_cmpint (summary.file_size, ==, st.st_size);
  g_assert_true (espalier_onnx_inspect (path, &inspected, &error));
  g_assert_no_error (error);
  g_assert_cmpmem (&inspected, sizeof inspected, &summary, sizeof summary);

  /* Bit for bit back, with the metadata. */
  espalier_onnx_meta_init (&meta);
  back = import_ok (path, &meta);
  assert_models_equal (m, back);
  g_assert_cmpstr (meta.model_name, ==, "mlp");
  g_assert_cmpstr (meta.producer, ==, "Espalier");
  g_assert_cmpstr (meta.version, ==, PACKAGE_VERSION);
  g_assert_nonnull (meta.class_names);
  g_assert_cmpuint (g_strv_length (meta.class_names), ==, 10);
  g_assert_cmpstr (meta.class_names[0], ==, "T-shirt/top");
  g_assert_cmpstr (meta.class_names[9], ==, "Ankle boot");
  g_assert_cmpfloat (meta.input_scale, ==, 1.0 / 255.0);
  g_assert_cmpfloat (meta.input_shift, ==, 0.0);
  g_assert_cmpstr (meta.preprocessing, ==, "{\"scale\":\"divide-255\"}");
  g_assert_true (meta.probabilities);
  g_assert_cmpstr (meta.quantization, ==, "fp32");
  g_assert_cmpint (meta.opset, ==, 13);
  espalier_onnx_meta_clear (&meta);
  es_model_free (back);
  es_model_free (round_trip (m, "mlp-outputs", 0.0, NULL));
  es_model_free (m);
}

static void
test_lenet_folded (void)
{
  EsModel *m = otu_lenet ();
  EspalierOnnxSummary summary;
  EsModel *back = round_trip (m, "lenet", 1e-4, &summary);
  g_autofree char *ops = espalier_onnx_summary_ops (&summary);

  /* Three BatchNorms folded into the Conv and Dense before them, Dropout gone. */
  g_assert_cmpstr (ops, ==, "Conv 2, Relu 3, MaxPool 1, AveragePool 1, Flatten 1, Gemm 2, "
                            "Softmax 1");
  g_assert_cmpint (es_model_n_layers (back), ==, es_model_n_layers (m) - 4);
  for (int i = 0; i < es_model_n_layers (back); i++)
    {
      EsLayerKind k = es_model_layer (back, i)->spec.kind;

      g_assert_true (k != ES_LAYER_BATCHNORM && k != ES_LAYER_DROPOUT);
    }
  es_model_free (back);
  es_model_free (m);
}

static void
test_batchnorm_nodes (void)
{
  EsModel *m = otu_bn_nodes ();
  EspalierOnnxSummary summary;
  EsModel *back = round_trip (m, "bn-nodes", 0.0, &summary);

  g_assert_cmpuint (otu_op_count (&summary, "BatchNormalization"), ==, 3);
  assert_models_equal (m, back);
  es_model_free (back);
  es_model_free (m);
}

static void
test_activations (void)
{
  const EsLayerKind acts[] = { ES_LAYER_RELU, ES_LAYER_LEAKY_RELU, ES_LAYER_SIGMOID,
                               ES_LAYER_TANH, ES_LAYER_SOFTMAX };
  const char *ops[] = { "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Softmax" };

  for (gsize i = 0; i < G_N_ELEMENTS (acts); i++)
    {
      EsModel *m = otu_activation (acts[i]);
      EspalierOnnxSummary summary;
      EsModel *back = round_trip (m, es_layer_kind_name (acts[i]), 0.0, &summary);
      EspalierOnnxMeta meta;
      g_autofree char *path = otu_export (m, NULL, "act", NULL);

      g_assert_cmpuint (otu_op_count (&summary, ops[i]), ==, 1);
      g_assert_cmpuint (otu_op_count (&summary, "Gemm"), ==, 2);
      assert_models_equal (m, back);
      espalier_onnx_meta_init (&meta);
      es_model_free (import_ok (path, &meta));
      g_assert_false (meta.probabilities);   /* ends in a Dense: logits */
      espalier_onnx_meta_clear (&meta);
      es_model_free (back);
      es_model_free (m);
    }
}

/* Static int8 in QDQ form: imported back in float, the weights are exactly the int8
 * codes times their scales, the biases within half a step of the int32 bias. */
static void
test_int8_static (void)
{
  g_autofree float *x = otu_rows (256);
  EsModel *m = otu_mlp ();
  EsQuant *q = otu_quant (m, ES_QUANT_INT8_STATIC, FALSE, x);
  EsModel *deq = es_quant_dequantized_model (m, q);
  EspalierOnnxSummary summary;
  g_autofree char *path = otu_export (m, q, "mlp-int8", &summary);
  EspalierOnnxMeta meta;
  EsModel *back;

  /* Each Gemm: input Q + DQ, weight DQ, bias DQ; the hidden layer's ReLU lets the
   * second layer's input quantization move up after the first Gemm (two Q/DQ pairs
   * for it, one placed early and one right before its Gemm). */
  g_assert_cmpuint (otu_op_count (&summary, "Gemm"), ==, 2);
  g_assert_cmpuint (otu_op_count (&summary, "QuantizeLinear"), ==, 3);
  g_assert_cmpuint (otu_op_count (&summary, "DequantizeLinear"), ==, 3 + 4);
  g_assert_cmpint (summary.initializer_bytes, <, es_model_n_params (m) * 4 / 3);

  espalier_onnx_meta_init (&meta);
  back = import_ok (path, &meta);
  g_assert_cmpstr (meta.quantization, ==, "int8-static");
  g_assert_cmpint (es_model_n_layers (back), ==, es_model_n_layers (m));
  for (int i = 0; i < es_model_n_layers (m); i++)
    {
      const EsLayerInfo *l = es_model_layer (m, i);
      const EsQuantLayer *ql = &q->layers[i];

      if (l->spec.kind != ES_LAYER_DENSE)
        continue;
      g_assert_true (ql->int8);
      g_assert_cmpmem (es_model_tensor_data (back, l->first_tensor),
                       es_model_tensor (m, l->first_tensor)->size * sizeof (float),
                       es_model_tensor_data (deq, l->first_tensor),
                       es_model_tensor (m, l->first_tensor)->size * sizeof (float));
      for (int o = 0; o < ql->rows; o++)
        {
          float b0 = es_model_tensor_data (deq, l->first_tensor + 1)[o];
          float b1 = es_model_tensor_data (back, l->first_tensor + 1)[o];

          g_assert_cmpfloat (fabsf (b0 - b1), <=, 0.5001f * ql->in_scale * ql->w_scale[o] + 1e-7f);
        }
    }
  espalier_onnx_meta_clear (&meta);
  es_model_free (back);
  es_model_free (deq);
  es_quant_free (q);
  es_model_free (m);
}

/* reduce_range: the 7-bit scales and zero points, no Clip (which would keep ONNX
 * Runtime off its int8 kernels), and a note saying so. */
static void
test_int8_reduce_range (void)
{
  g_autofree float *x = otu_rows (256);
  EsModel *m = otu_convnet ();
  EsQuant *q = otu_quant (m, ES_QUANT_INT8_STATIC, TRUE, x);
  EspalierOnnxSummary summary;
  g_autofree char *path = otu_export (m, q, "convnet-int8-7bit", &summary);
  Onnx__ModelProto *proto = load_proto (path);
  Onnx__TensorProto *z = find_init (proto, "layers.0.input_zero_point");
  Onnx__TensorProto *s = find_init (proto, "layers.0.input_scale");
  float scale;
  gboolean noted = FALSE;
  EsModel *back;

  g_assert_cmpuint (otu_op_count (&summary, "Clip"), ==, 0);
  g_assert_cmpuint (otu_op_count (&summary, "Conv"), ==, 2);
  /* Four int8 layers, each with its input quantization; the three after the first are
   * reached through ReLU/MaxPool/Flatten only, so theirs is also placed early. */
  g_assert_cmpuint (otu_op_count (&summary, "QuantizeLinear"), ==, 4 + 3);
  g_assert_cmpint (z->data_type, ==, ONNX__TENSOR_PROTO__DATA_TYPE__UINT8);
  g_assert_cmpuint (z->raw_data.len, ==, 1);
  g_assert_cmpint (z->raw_data.data[0], ==, q->layers[0].in_zero);
  g_assert_cmpint (q->layers[0].in_zero, <=, 127);
  g_assert_cmpuint (s->raw_data.len, ==, 4);
  memcpy (&scale, s->raw_data.data, 4);
  g_assert_cmpfloat (scale, ==, q->layers[0].in_scale);
  for (gsize i = 0; i < proto->n_metadata_props; i++)
    noted |= strcmp (proto->metadata_props[i]->key, "note") == 0
             && strstr (proto->metadata_props[i]->value, "reduced range") != NULL;
  g_assert_true (noted);
  onnx__model_proto__free_unpacked (proto, NULL);
  back = import_ok (path, NULL);
  g_assert_cmpint (es_model_n_layers (back), ==, es_model_n_layers (m));
  es_model_free (back);
  es_quant_free (q);
  es_model_free (m);
}

/* Dynamic int8 uses integer operators that import does not read: a clear error. */
static void
test_int8_dynamic (void)
{
  g_autofree float *x = otu_rows (256);
  EsModel *m = otu_mlp ();
  EsQuant *q = otu_quant (m, ES_QUANT_INT8_DYNAMIC, FALSE, x);
  EspalierOnnxSummary summary;
  g_autofree char *path = otu_export (m, q, "mlp-dynamic", &summary);
  const char *frags[] = { "DynamicQuantizeLinear", "layers.1.input_quantize", NULL };

  g_assert_cmpuint (otu_op_count (&summary, "DynamicQuantizeLinear"), ==, 2);
  g_assert_cmpuint (otu_op_count (&summary, "MatMulInteger"), ==, 2);
  g_assert_cmpuint (otu_op_count (&summary, "Gemm"), ==, 0);
  assert_import_fails (path, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED, frags);
  es_quant_free (q);
  es_model_free (m);
}

/* fp16 weights are exported rounded, in float32. */
static void
test_fp16 (void)
{
  g_autofree float *x = otu_rows (16);
  EsModel *m = otu_mlp ();
  EsQuant *q = otu_quant (m, ES_QUANT_FP16, FALSE, x);
  EsModel *deq = es_quant_dequantized_model (m, q);
  g_autofree char *path = otu_export (m, q, "mlp-fp16", NULL);
  EspalierOnnxMeta meta;
  EsModel *back;

  espalier_onnx_meta_init (&meta);
  back = import_ok (path, &meta);
  assert_models_equal (deq, back);
  g_assert_cmpstr (meta.quantization, ==, "fp16");
  espalier_onnx_meta_clear (&meta);
  es_model_free (back);
  es_model_free (deq);
  es_quant_free (q);
  es_model_free (m);
}

/* A quantization that does not fit the model, or is not calibrated, writes nothing. */
static void
test_bad_quant (void)
{
  g_autoptr(GError) error = NULL;
  EsModel *m = otu_mlp (), *other = otu_convnet ();
  EsQuant *q = otu_quant (other, ES_QUANT_INT8_DYNAMIC, FALSE, NULL);
  EsQuant *raw = es_quant_new (m, ES_QUANT_INT8_STATIC, NULL, false, NULL);
  g_autofree char *path = otu_path ("never.onnx");

  g_assert_false (espalier_onnx_export (m, q, NULL, path, NULL, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_nonnull (raw);
  g_assert_false (espalier_onnx_export (m, raw, NULL, path, NULL, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_assert_false (g_file_test (path, G_FILE_TEST_EXISTS));
  es_quant_free (raw);
  es_quant_free (q);
  es_model_free (other);
  es_model_free (m);
}

/* Writes replace the target whole or not at all, and leave no temporary file. */
static void
test_atomic (void)
{
  g_autoptr(GError) error = NULL;
  EsModel *m = otu_activation (ES_LAYER_TANH);
  g_autofree char *dir = otu_path ("atomic");
  g_autofree char *path = g_build_filename (dir, "model.onnx", NULL);
  g_autofree char *missing = g_build_filename (dir, "no-such-dir", "model.onnx", NULL);
  g_autoptr(GDir) d = NULL;
  const char *name;
  int n = 0;

  g_assert_cmpint (g_mkdir (dir, 0700), ==, 0);
  g_assert_true (g_file_set_contents (path, "old", -1, NULL));
  g_assert_true (espalier_onnx_export (m, NULL, NULL, path, NULL, &error));
  g_assert_no_error (error);
  es_model_free (import_ok (path, NULL));
  g_assert_false (espalier_onnx_export (m, NULL, NULL, missing, NULL, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  d = g_dir_open (dir, 0, NULL);
  while ((name = g_dir_read_name (d)) != NULL)
    {
      g_assert_cmpstr (name, ==, "model.onnx");
      n++;
    }
  g_assert_cmpint (n, ==, 1);
  es_model_free (m);
}

/* ------------------------------------------------------------------------------------ */
/* import of other tools' files */

static void
test_foreign (void)
{
  g_autofree char *path = otu_write_foreign ("foreign.onnx");
  g_autofree float *x = otu_rows (200);
  EsModel *ref = otu_foreign_reference ();
  EspalierOnnxMeta meta;
  EsModel *m;
  g_autofree float *y = NULL, *y_ref = NULL;

  espalier_onnx_meta_init (&meta);
  m = import_ok (path, &meta);
  assert_models_equal (ref, m);
  y = otu_infer (m, x, 200);
  y_ref = otu_infer (ref, x, 200);
  g_assert_cmpmem (y, 200 * 10 * sizeof (float), y_ref, 200 * 10 * sizeof (float));
  g_assert_cmpstr (meta.producer, ==, "another-tool");
  g_assert_cmpint (meta.opset, ==, 11);
  g_assert_null (meta.class_names);
  g_assert_cmpfloat (meta.input_scale, ==, 1.0);
  g_assert_true (meta.probabilities);
  espalier_onnx_meta_clear (&meta);
  es_model_free (m);
  es_model_free (ref);
}

/* What the CLI's export and import do: a model file's info into ONNX metadata, and an
 * imported file back into a model file that loads. */
static void
test_model_file (void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *path = otu_path ("from-info.onnx");
  g_autofree char *saved = otu_path ("imported.json");
  EsModel *m = otu_mlp (), *back, *loaded;
  EspalierModelInfo info, info2;
  EspalierOnnxMeta meta, meta2;
  char *classes[] = { "zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine", NULL };

  espalier_model_info_init (&info);
  info.name = g_strdup ("digits");
  info.class_names = g_strdupv (classes);
  info.input_scale = 2.0;
  info.input_shift = -1.0;
  info.preprocessing = g_strdup ("{\"standardize\":true}");
  espalier_onnx_meta_init (&meta);
  espalier_onnx_meta_from_info (&meta, &info);
  g_assert_true (espalier_onnx_export (m, NULL, &meta, path, NULL, &error));
  g_assert_no_error (error);

  espalier_onnx_meta_init (&meta2);
  back = import_ok (path, &meta2);
  g_assert_cmpstr (meta2.model_name, ==, "digits");
  g_assert_cmpfloat (meta2.input_scale, ==, 2.0);
  g_assert_cmpfloat (meta2.input_shift, ==, -1.0);
  espalier_model_info_init (&info2);
  espalier_onnx_meta_to_info (&meta2, &info2);
  g_assert_cmpstr (info2.producer, ==, "Espalier " PACKAGE_VERSION " (imported from ONNX)");
  g_assert_true (espalier_model_save (back, &info2, saved, &error));
  g_assert_no_error (error);
  espalier_model_info_clear (&info2);
  espalier_model_info_init (&info2);
  loaded = espalier_model_load (saved, &info2, &error);
  g_assert_no_error (error);
  assert_models_equal (m, loaded);
  g_assert_cmpstr (info2.name, ==, "digits");
  g_assert_cmpstrv (info2.class_names, classes);
  g_assert_cmpfloat (info2.input_scale, ==, 2.0);
  g_assert_cmpfloat (info2.input_shift, ==, -1.0);
  g_assert_cmpstr (info2.preprocessing, ==, "{\"standardize\":true}");

  espalier_model_info_clear (&info2);
  espalier_model_info_clear (&info);
  espalier_onnx_meta_clear (&meta2);
  espalier_onnx_meta_clear (&meta);
  es_model_free (loaded);
  es_model_free (back);
  es_model_free (m);
}

/* ------------------------------------------------------------------------------------ */
/* broken files */

static char *
mlp_file (const char *name)
{
  EsModel *m = otu_mlp ();
  char *path = otu_export (m, NULL, name, NULL);

  es_model_free (m);
  return path;
}

static void
test_truncated (void)
{
  g_autofree char *good = mlp_file ("good");
  g_autofree char *bad = otu_path ("truncated.onnx");
  g_autofree char *data = NULL;
  gsize len, limit;
  const char *frags[] = { "truncated or corrupt", NULL };

  g_assert_true (g_file_get_contents (good, &data, &len, NULL));
  g_assert_true (g_file_set_contents (bad, data, (gssize) (len / 2), NULL));
  assert_import_fails (bad, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT, frags);
  /* Wherever the file ends before its metadata (the last field, whose entries can be
   * cut between and stay valid), an error (a cut between top-level fields leaves a
   * valid protobuf without its graph or opset), never a crash nor a model. */
  {
    Onnx__ModelProto *m = load_proto (good);
    gsize n_props = m->n_metadata_props;

    m->n_metadata_props = 0;
    limit = onnx__model_proto__get_packed_size (m);
    m->n_metadata_props = n_props;
    onnx__model_proto__free_unpacked (m, NULL);
  }
  g_assert_cmpuint (limit, <, len);
  for (gsize cut = 0; cut < limit; cut += 1 + cut / 3)
    {
      g_autoptr(GError) error = NULL;

      g_assert_true (g_file_set_contents_full (bad, data, (gssize) cut, G_FILE_SET_CONTENTS_NONE,
                                               0600, NULL));
      g_assert_null (espalier_onnx_import (bad, NULL, &error));
      g_assert_nonnull (error);
    }
  /* Not protobuf at all, and empty. */
  g_assert_true (g_file_set_contents (bad, "\xff\xff\xff\xff not onnx", -1, NULL));
  assert_import_fails (bad, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT, frags);
  g_assert_true (g_file_set_contents (bad, "", 0, NULL));
  {
    const char *empty[] = { "empty", NULL };

    assert_import_fails (bad, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT, empty);
  }
  {
    g_autofree char *none = otu_path ("does-not-exist.onnx");

    assert_import_fails (none, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, NULL);
  }
}

/* Random bytes changed anywhere, or in the graph's structure before the weights: an
 * error or a model, never a crash (the sanitizer build watches the reads). */
static void
test_corrupt (void)
{
  g_autofree char *good = mlp_file ("good-corrupt");
  g_autofree char *bad = otu_path ("corrupt.onnx");
  g_autofree char *data = NULL;
  gsize len;
  EsRng rng = { 99 };
  int failed = 0;

  g_assert_true (g_file_get_contents (good, &data, &len, NULL));
  for (int round = 0; round < 200; round++)
    {
      g_autofree char *copy = g_memdup2 (data, len);
      g_autoptr(GError) error = NULL;
      gsize span = round % 2 ? len : MIN (len, 700);
      int flips = 1 + (int) (es_rng_next (&rng) % 4);
      EsModel *m;

      for (int f = 0; f < flips; f++)
        copy[es_rng_next (&rng) % span] = (char) (es_rng_next (&rng) & 0xff);
      g_assert_true (g_file_set_contents_full (bad, copy, (gssize) len, G_FILE_SET_CONTENTS_NONE,
                                               0600, NULL));
      m = espalier_onnx_import (bad, NULL, &error);
      g_assert_true ((m == NULL) != (error == NULL));
      failed += m == NULL;
      es_model_free (m);
    }
  g_test_message ("%d of 200 corrupted files refused", failed);
  g_assert_cmpint (failed, >, 0);
}

static void
test_wrong_opset (void)
{
  g_autofree char *good = mlp_file ("good-opset");
  g_autofree char *bad = otu_path ("opset.onnx");
  Onnx__ModelProto *m = load_proto (good);
  const char *frags99[] = { "opset 99", "opsets 7 to 21", NULL };
  const char *frags3[] = { "opset 3", NULL };
  const char *none[] = { "no opset", NULL };
  gsize n;

  m->opset_import[0]->version = 99;
  save_proto (m, bad);
  assert_import_fails (bad, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT, frags99);
  m->opset_import[0]->version = 3;
  save_proto (m, bad);
  assert_import_fails (bad, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT, frags3);
  n = m->n_opset_import;
  m->n_opset_import = 0;
  save_proto (m, bad);
  assert_import_fails (bad, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT, none);
  m->n_opset_import = n;
  onnx__model_proto__free_unpacked (m, NULL);
}

static void
test_unknown_op (void)
{
  g_autofree char *good = mlp_file ("good-op");
  g_autofree char *bad = otu_path ("unknown-op.onnx");
  Onnx__ModelProto *m = load_proto (good);
  Onnx__NodeProto *n = find_node (m, "Relu");
  const char *frags[] = { "“layers.2.relu”", "operator Erf", NULL };
  const char *frags_domain[] = { "“layers.2.relu”", "com.example", NULL };

  free (n->op_type);
  n->op_type = strdup ("Erf");
  save_proto (m, bad);
  assert_import_fails (bad, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED, frags);
  free (n->op_type);
  n->op_type = strdup ("Relu");
  n->domain = strdup ("com.example");
  save_proto (m, bad);
  assert_import_fails (bad, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED, frags_domain);
  onnx__model_proto__free_unpacked (m, NULL);
}

static void
test_missing_initializer (void)
{
  g_autofree char *good = mlp_file ("good-init");
  g_autofree char *bad = otu_path ("missing.onnx");
  Onnx__ModelProto *m = load_proto (good);
  Onnx__GraphProto *g = m->graph;
  const char *frags[] = { "“layers.3.gemm” (Gemm)", "“layers.3.weight”", "missing", NULL };

  for (gsize i = 0; i < g->n_initializer; i++)
    if (strcmp (g->initializer[i]->name, "layers.3.weight") == 0)
      {
        Onnx__TensorProto *t = g->initializer[i];

        g->initializer[i] = g->initializer[--g->n_initializer];
        onnx__tensor_proto__free_unpacked (t, NULL);
        break;
      }
  save_proto (m, bad);
  assert_import_fails (bad, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT, frags);
  onnx__model_proto__free_unpacked (m, NULL);
}

static void
test_bad_shapes (void)
{
  g_autofree char *good = mlp_file ("good-shape");
  g_autofree char *bad = otu_path ("shape.onnx");
  Onnx__ModelProto *m = load_proto (good);
  Onnx__TensorProto *w = find_init (m, "layers.1.weight");
  const char *frags_w[] = { "“layers.1.gemm”", "“layers.1.weight” has shape (784, 128)",
                            "784 input features", NULL };
  const char *frags_n[] = { "“layers.1.weight”", "100352 values", "needs 200704", NULL };
  const char *frags_out[] = { "declares 7 output values", NULL };
  Onnx__TensorShapeProto__Dimension *d;
  gint64 t;

  /* A weight matrix the wrong way round. */
  t = w->dims[0];
  w->dims[0] = w->dims[1];
  w->dims[1] = t;
  save_proto (m, bad);
  assert_import_fails (bad, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT, frags_w);
  w->dims[1] = w->dims[0];
  w->dims[0] = t;
  /* Fewer values than its shape. */
  w->dims[0] *= 2;
  save_proto (m, bad);
  assert_import_fails (bad, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT, frags_n);
  w->dims[0] /= 2;
  /* A declared output the layers do not produce. */
  d = m->graph->output[0]->type->tensor_type->shape->dim[1];
  d->dim_value = 7;
  save_proto (m, bad);
  assert_import_fails (bad, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT, frags_out);
  d->dim_value = 10;
  onnx__model_proto__free_unpacked (m, NULL);
}

static void
test_branch (void)
{
  g_autofree char *good = mlp_file ("good-branch");
  g_autofree char *bad = otu_path ("branch.onnx");
  Onnx__ModelProto *m = load_proto (good);
  Onnx__NodeProto *n = find_node (m, "Softmax");
  const char *frags[] = { "“layers.4.softmax”", "“layers.0.out”", "branches", NULL };

  /* The Softmax reads the Flatten's output: a skip connection. */
  free (n->input[0]);
  n->input[0] = strdup ("layers.0.out");
  save_proto (m, bad);
  assert_import_fails (bad, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED, frags);
  onnx__model_proto__free_unpacked (m, NULL);
}

static void
test_external_data (void)
{
  g_autofree char *good = mlp_file ("good-external");
  g_autofree char *bad = otu_path ("external.onnx");
  Onnx__ModelProto *m = load_proto (good);
  Onnx__TensorProto *w = find_init (m, "layers.3.weight");
  const char *frags[] = { "“layers.3.weight”", "external file", NULL };

  w->has_data_location = TRUE;
  w->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
  save_proto (m, bad);
  assert_import_fails (bad, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED, frags);
  onnx__model_proto__free_unpacked (m, NULL);
}

int
main (int argc, char **argv)
{
  otu_init (&argc, &argv);
  g_test_add_func ("/onnx/export/mlp", test_mlp);
  g_test_add_func ("/onnx/export/lenet-folded", test_lenet_folded);
  g_test_add_func ("/onnx/export/batchnorm-nodes", test_batchnorm_nodes);
  g_test_add_func ("/onnx/export/activations", test_activations);
  g_test_add_func ("/onnx/export/int8-static", test_int8_static);
  g_test_add_func ("/onnx/export/int8-reduce-range", test_int8_reduce_range);
  g_test_add_func ("/onnx/export/int8-dynamic", test_int8_dynamic);
  g_test_add_func ("/onnx/export/fp16", test_fp16);
  g_test_add_func ("/onnx/export/bad-quant", test_bad_quant);
  g_test_add_func ("/onnx/export/atomic", test_atomic);
  g_test_add_func ("/onnx/import/foreign", test_foreign);
  g_test_add_func ("/onnx/import/model-file", test_model_file);
  g_test_add_func ("/onnx/import/truncated", test_truncated);
  g_test_add_func ("/onnx/import/corrupt", test_corrupt);
  g_test_add_func ("/onnx/import/wrong-opset", test_wrong_opset);
  g_test_add_func ("/onnx/import/unknown-op", test_unknown_op);
  g_test_add_func ("/onnx/import/missing-initializer", test_missing_initializer);
  g_test_add_func ("/onnx/import/bad-shapes", test_bad_shapes);
  g_test_add_func ("/onnx/import/branch", test_branch);
  g_test_add_func ("/onnx/import/external-data", test_external_data);
  return otu_finish (g_test_run ());
}
