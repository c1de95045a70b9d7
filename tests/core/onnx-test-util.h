/* SPDX-License-Identifier: GPL-3.0-or-later */
/* onnx-test-util.h: what test-onnx.c and test-onnx-peers.c share: the models every
 * ONNX test exports (a float MLP, a LeNet-like network with BatchNorm and both pools,
 * a network whose BatchNorms cannot be folded, one per activation, int8 variants),
 * their input rows (the first Fashion-MNIST test images scaled to [0, 1], or seeded
 * uniform rows when the data set is not installed), engine outputs through EsInfer
 * (float) and EsExec (the int8 kernels), and a scratch directory. Header-only, static.
 *
 * Dimension key: N = rows, D = input floats per row, C = outputs per row. */
#pragma once

#include <math.h>
#include <string.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <zlib.h>

#include "config.h"
#include "es-backend.h"
#include "es-exec.h"
#include "es-model.h"
#include "es-quant.h"
#include "es-train.h"
#include "espalier-onnx.h"

#include "data-test-util.h"

#define OTU_ROWS 1000

static char *otu_dir;

/* ------------------------------------------------------------------------------------ */
/* scratch directory (removed with data-test-util.h's dtu_rm_rf) */

G_GNUC_UNUSED static void
otu_init (int *argc, char ***argv)
{
  g_test_init (argc, argv, NULL);
  otu_dir = g_dir_make_tmp ("espalier-onnx-test-XXXXXX", NULL);
  g_assert_nonnull (otu_dir);
}

G_GNUC_UNUSED static int
otu_finish (int status)
{
  dtu_rm_rf (otu_dir);
  g_clear_pointer (&otu_dir, g_free);
  return status;
}

/* A path in the scratch directory. */
G_GNUC_UNUSED static char *
otu_path (const char *name)
{
  return g_build_filename (otu_dir, name, NULL);
}

/* ------------------------------------------------------------------------------------ */
/* models */

static const EsShape otu_image = { .rank = 3, .dims = { 1, 28, 28 } };
static const EsShape otu_flat = { .rank = 1, .dims = { 784 } };

static EsLayerSpec
otu_layer (EsLayerKind kind, int size)
{
  EsLayerSpec s = es_layer_spec_default (kind);

  switch (kind)
    {
    case ES_LAYER_DENSE: s.units = size; break;
    case ES_LAYER_CONV2D: s.filters = size; s.kernel = 5; break;
    case ES_LAYER_MAXPOOL2D:
    case ES_LAYER_AVGPOOL2D: s.kernel = size; s.stride = size; break;
    case ES_LAYER_LEAKY_RELU: s.alpha = 0.2f; break;
    case ES_LAYER_DROPOUT: s.rate = 0.3f; break;
    default: break;
    }
  return s;
}

/* BatchNorm layers get statistics and affine parameters away from the identity, so
 * that folding them is really tested. */
static void
otu_perturb_batchnorms (EsModel *m, guint64 seed)
{
  EsRng rng = { seed };

  for (int i = 0; i < es_model_n_layers (m); i++)
    {
      const EsLayerInfo *l = es_model_layer (m, i);

      if (l->spec.kind != ES_LAYER_BATCHNORM)
        continue;
      for (int t = 0; t < 4; t++)
        {
          float *v = es_model_tensor_data (m, l->first_tensor + t);
          gint64 n = es_model_tensor (m, l->first_tensor + t)->size;

          for (gint64 k = 0; k < n; k++)
            {
              double u = es_rng_uniform (&rng);

              switch (t)
                {
                case 0: v[k] = (float) (0.5 + u); break;           /* gamma */
                case 1: v[k] = (float) (u - 0.5) * 0.4f; break;    /* beta */
                case 2: v[k] = (float) (u - 0.5) * 0.2f; break;    /* running mean */
                default: v[k] = (float) (0.2 + u); break;          /* running variance */
                }
            }
        }
    }
}

/* Nonzero biases (the engine initializes them to 0), so that every bias path counts. */
static void
otu_random_biases (EsModel *m, guint64 seed)
{
  EsRng rng = { seed };

  for (int i = 0; i < es_model_n_layers (m); i++)
    {
      const EsLayerInfo *l = es_model_layer (m, i);

      if (l->spec.kind != ES_LAYER_DENSE && l->spec.kind != ES_LAYER_CONV2D)
        continue;
      {
        float *b = es_model_tensor_data (m, l->first_tensor + 1);
        gint64 n = es_model_tensor (m, l->first_tensor + 1)->size;

        for (gint64 k = 0; k < n; k++)
          b[k] = (float) (es_rng_uniform (&rng) - 0.5) * 0.1f;
      }
    }
}

static EsModel *
otu_model (const EsShape *in, const EsLayerSpec *specs, int n, guint64 seed)
{
  EsError es = { 0 };
  EsModel *m = es_model_new (in, specs, n, &es);

  if (m == NULL)
    g_error ("es_model_new: %s", es.message);
  es_model_init (m, seed);
  otu_random_biases (m, seed + 1);
  otu_perturb_batchnorms (m, seed + 2);
  return m;
}

/* The reference model: Flatten(28x28) -> Dense(128, relu) -> Dense(10, softmax). */
G_GNUC_UNUSED static EsModel *
otu_mlp (void)
{
  EsLayerSpec s[] = {
    otu_layer (ES_LAYER_FLATTEN, 0), otu_layer (ES_LAYER_DENSE, 128),
    otu_layer (ES_LAYER_RELU, 0), otu_layer (ES_LAYER_DENSE, 10),
    otu_layer (ES_LAYER_SOFTMAX, 0),
  };

  return otu_model (&otu_image, s, G_N_ELEMENTS (s), 11);
}

/* LeNet-like: every BatchNorm follows a Conv2D or Dense (through a Dropout for the
 * last), so all fold; both pools. */
G_GNUC_UNUSED static EsModel *
otu_lenet (void)
{
  EsLayerSpec s[] = {
    otu_layer (ES_LAYER_CONV2D, 6), otu_layer (ES_LAYER_BATCHNORM, 0),
    otu_layer (ES_LAYER_RELU, 0), otu_layer (ES_LAYER_MAXPOOL2D, 2),
    otu_layer (ES_LAYER_CONV2D, 16), otu_layer (ES_LAYER_BATCHNORM, 0),
    otu_layer (ES_LAYER_RELU, 0), otu_layer (ES_LAYER_AVGPOOL2D, 2),
    otu_layer (ES_LAYER_FLATTEN, 0), otu_layer (ES_LAYER_DENSE, 120),
    otu_layer (ES_LAYER_DROPOUT, 0), otu_layer (ES_LAYER_BATCHNORM, 0),
    otu_layer (ES_LAYER_RELU, 0), otu_layer (ES_LAYER_DENSE, 10),
    otu_layer (ES_LAYER_SOFTMAX, 0),
  };

  s[0].padding = 2;
  return otu_model (&otu_image, s, G_N_ELEMENTS (s), 12);
}

/* BatchNorms that cannot be folded: on the input, after a ReLU, after a pool; ends in
 * logits. */
G_GNUC_UNUSED static EsModel *
otu_bn_nodes (void)
{
  EsLayerSpec s[] = {
    otu_layer (ES_LAYER_BATCHNORM, 0), otu_layer (ES_LAYER_CONV2D, 4),
    otu_layer (ES_LAYER_RELU, 0), otu_layer (ES_LAYER_MAXPOOL2D, 2),
    otu_layer (ES_LAYER_BATCHNORM, 0), otu_layer (ES_LAYER_FLATTEN, 0),
    otu_layer (ES_LAYER_DENSE, 32), otu_layer (ES_LAYER_RELU, 0),
    otu_layer (ES_LAYER_BATCHNORM, 0), otu_layer (ES_LAYER_DENSE, 10),
  };

  s[1].kernel = 3;
  s[1].stride = 2;
  s[1].padding = 1;
  return otu_model (&otu_image, s, G_N_ELEMENTS (s), 13);
}

/* Dense(784 -> 32) -> act -> Dense(10) on flat input. */
G_GNUC_UNUSED static EsModel *
otu_activation (EsLayerKind act)
{
  EsLayerSpec s[] = {
    otu_layer (ES_LAYER_DENSE, 32), otu_layer (act, 0), otu_layer (ES_LAYER_DENSE, 10),
  };

  return otu_model (&otu_flat, s, G_N_ELEMENTS (s), 14 + act);
}

/* A small convolutional network for int8: Conv -> ReLU -> MaxPool twice, then two Dense
 * layers, Softmax. */
G_GNUC_UNUSED static EsModel *
otu_convnet (void)
{
  EsLayerSpec s[] = {
    otu_layer (ES_LAYER_CONV2D, 8), otu_layer (ES_LAYER_RELU, 0),
    otu_layer (ES_LAYER_MAXPOOL2D, 2), otu_layer (ES_LAYER_CONV2D, 16),
    otu_layer (ES_LAYER_RELU, 0), otu_layer (ES_LAYER_MAXPOOL2D, 2),
    otu_layer (ES_LAYER_FLATTEN, 0), otu_layer (ES_LAYER_DENSE, 64),
    otu_layer (ES_LAYER_RELU, 0), otu_layer (ES_LAYER_DENSE, 10),
    otu_layer (ES_LAYER_SOFTMAX, 0),
  };

  s[0].kernel = 3;
  s[3].kernel = 3;
  return otu_model (&otu_image, s, G_N_ELEMENTS (s), 15);
}

/* ------------------------------------------------------------------------------------ */
/* data */

/* The first n Fashion-MNIST test images as (n, 784) floats in [0, 1] (raw / 255), or
 * seeded uniform values in [0, 1) when the data set is not installed. */
G_GNUC_UNUSED static float *
otu_rows (int n)
{
  g_autofree char *path = g_build_filename (FASHION_MNIST_DIR, "t10k-images-idx3-ubyte.gz", NULL);
  float *x = g_new (float, (gsize) n * 784);   /* (n, 784) */
  gzFile f = gzopen (path, "rb");
  g_autofree guint8 *raw = g_new (guint8, (gsize) n * 784);
  guint8 header[16];

  if (f != NULL && gzread (f, header, 16) == 16 && header[2] == 0x08 && header[3] == 3
      && gzread (f, raw, (unsigned) n * 784) == n * 784)
    {
      for (gsize k = 0; k < (gsize) n * 784; k++)
        x[k] = raw[k] / 255.0f;
    }
  else
    {
      EsRng rng = { 7 };

      g_test_message ("Fashion-MNIST not found at %s: seeded uniform rows instead", path);
      for (gsize k = 0; k < (gsize) n * 784; k++)
        x[k] = (float) es_rng_uniform (&rng);
    }
  if (f != NULL)
    gzclose (f);
  return x;
}

/* Columns of the model's output. */
G_GNUC_UNUSED static int
otu_out_size (const EsModel *m)
{
  EsShape out = es_model_output_shape (m);

  return (int) es_shape_size (&out);
}

/* The float model on n rows of x through EsInfer on the CPU backend: (n, C). */
G_GNUC_UNUSED static float *
otu_infer (const EsModel *m, const float *x, int n)
{
  EsError es = { 0 };
  EsBackend *be = es_cpu_backend_new (1, NULL, &es);
  EsInfer *inf;
  const float *y;
  float *out;
  EsShape in = es_model_input_shape (m);

  g_assert_nonnull (be);
  inf = es_infer_new (m, be, n, &es);
  if (inf == NULL)
    g_error ("es_infer_new: %s", es.message);
  y = es_infer_run (inf, x, n);
  g_assert_nonnull (y);
  (void) in;
  out = g_memdup2 (y, (gsize) n * otu_out_size (m) * sizeof (float));
  es_infer_free (inf);
  es_backend_free (be);
  return out;
}

/* The model with quant on its int8 kernels (EsExec), on all n rows in one batch (so a
 * dynamic quantization sees the whole batch's range, as ONNX Runtime does): (n, C). */
G_GNUC_UNUSED static float *
otu_exec (const EsModel *m, const EsQuant *q, const float *x, int n)
{
  EsError es = { 0 };
  EsBackend *be = es_cpu_backend_new (1, NULL, &es);
  EsExec *ex;
  const float *y;
  float *out;

  g_assert_nonnull (be);
  ex = es_exec_new (m, q, NULL, be, n, &es);
  if (ex == NULL)
    g_error ("es_exec_new: %s", es.message);
  y = es_exec_run (ex, x, n);
  g_assert_nonnull (y);
  out = g_memdup2 (y, (gsize) n * otu_out_size (m) * sizeof (float));
  es_exec_free (ex);
  es_backend_free (be);
  return out;
}

/* A quantization of m in mode, static int8 calibrated (min/max) on the first 256
 * rows of x. */
G_GNUC_UNUSED static EsQuant *
otu_quant (const EsModel *m, EsQuantMode mode, gboolean reduce_range, const float *x)
{
  EsError es = { 0 };
  EsQuant *q = es_quant_new (m, mode, NULL, reduce_range, &es);

  if (q == NULL)
    g_error ("es_quant_new: %s", es.message);
  if (mode == ES_QUANT_INT8_STATIC)
    {
      EsCalib *c = es_calib_new (m, ES_CALIB_MINMAX, 99.99f, &es);

      if (c == NULL || !es_calib_observe (c, x, 256, &es) || !es_calib_apply (c, q, &es))
        g_error ("calibration: %s", es.message);
      es_calib_free (c);
    }
  return q;
}

G_GNUC_UNUSED static int
otu_argmax (const float *row, int C)
{
  int best = 0;

  for (int c = 1; c < C; c++)
    if (row[c] > row[best])
      best = c;
  return best;
}

/* Export m (with q) to dir/name.onnx with the test metadata; returns the path. */
G_GNUC_UNUSED static char *
otu_export (const EsModel *m, const EsQuant *q, const char *name, EspalierOnnxSummary *summary)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *file = g_strdup_printf ("%s.onnx", name);
  char *path = otu_path (file);
  static char *classes[] = { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                             "Shirt", "Sneaker", "Bag", "Ankle boot", NULL };
  EspalierOnnxMeta meta;

  espalier_onnx_meta_init (&meta);
  meta.model_name = (char *) name;
  meta.class_names = classes;
  meta.input_scale = 1.0 / 255.0;
  meta.input_shift = 0.0;
  meta.preprocessing = (char *) "{\"scale\":\"divide-255\"}";
  g_assert_true (espalier_onnx_export (m, q, &meta, path, summary, &error));
  g_assert_no_error (error);
  return path;
}

/* Count of op in a summary (0 when absent). */
G_GNUC_UNUSED static guint
otu_op_count (const EspalierOnnxSummary *s, const char *op)
{
  for (guint k = 0; k < s->n_op_kinds; k++)
    if (strcmp (s->ops[k].op, op) == 0)
      return s->ops[k].count;
  return 0;
}

/* ------------------------------------------------------------------------------------ */
/* A graph written the way other tools write them, built here with the protobuf-c
 * messages: input "x" (N, 784) -> Reshape (from a Constant) to (N, 1, 28, 28) -> Conv
 * 4x3x3 with auto_pad SAME_UPPER (float_data, not raw) -> Clip at 0 (a ReLU, opset 11
 * style) -> MaxPool 2 -> Flatten -> MatMul (784, 16) -> Add (16) -> Relu -> Identity ->
 * Gemm (16, 10) with transB 0, alpha 0.5, beta 2, C (1, 10) -> Softmax without axis.
 * Opset 11, IR version 6. The weights are seeded; otu_foreign_reference gives the
 * engine model the graph means. */

#ifdef PROTOBUF_C_H   /* the includer has the generated onnx.pb-c.h */

typedef struct {
  GPtrArray *mem;
  GPtrArray *nodes, *inits;
} OtuGraph;

static gpointer
otu_keep (OtuGraph *g, gpointer p)
{
  g_ptr_array_add (g->mem, p);
  return p;
}

static Onnx__TensorProto *
otu_tensor (OtuGraph *g, const char *name, int dtype, const gint64 *dims, guint rank)
{
  Onnx__TensorProto *t = otu_keep (g, g_new0 (Onnx__TensorProto, 1));

  onnx__tensor_proto__init (t);
  t->name = otu_keep (g, g_strdup (name));
  t->has_data_type = TRUE;
  t->data_type = dtype;
  t->n_dims = rank;
  t->dims = otu_keep (g, g_memdup2 (dims, MAX (rank, 1) * sizeof (gint64)));
  return t;
}

/* A float initializer: raw little-endian bytes, or float_data. */
static void
otu_init_floats (OtuGraph *g, const char *name, const gint64 *dims, guint rank,
                 const float *v, gboolean raw)
{
  Onnx__TensorProto *t = otu_tensor (g, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, dims, rank);
  gint64 n = 1;

  for (guint i = 0; i < rank; i++)
    n *= dims[i];
  if (raw)
    {
      guint8 *p = otu_keep (g, g_malloc (n * 4));

      for (gint64 k = 0; k < n; k++)
        {
          guint32 u;

          memcpy (&u, &v[k], 4);
          u = GUINT32_TO_LE (u);
          memcpy (p + 4 * k, &u, 4);
        }
      t->has_raw_data = TRUE;
      t->raw_data.data = p;
      t->raw_data.len = n * 4;
    }
  else
    {
      t->n_float_data = n;
      t->float_data = otu_keep (g, g_memdup2 (v, n * sizeof (float)));
    }
  g_ptr_array_add (g->inits, t);
}

static Onnx__NodeProto *
otu_node (OtuGraph *g, const char *op, const char *in0, const char *in1, const char *in2,
          const char *out)
{
  Onnx__NodeProto *n = otu_keep (g, g_new0 (Onnx__NodeProto, 1));
  const char *ins[3] = { in0, in1, in2 };

  onnx__node_proto__init (n);
  n->op_type = otu_keep (g, g_strdup (op));
  n->name = otu_keep (g, g_strdup_printf ("%s_%u", op, g->nodes->len));
  n->input = otu_keep (g, g_new0 (char *, 3));
  for (int i = 0; i < 3 && ins[i] != NULL; i++)
    n->input[n->n_input++] = otu_keep (g, g_strdup (ins[i]));
  n->n_output = 1;
  n->output = otu_keep (g, g_new0 (char *, 1));
  n->output[0] = otu_keep (g, g_strdup (out));
  n->attribute = otu_keep (g, g_new0 (Onnx__AttributeProto *, 4));
  g_ptr_array_add (g->nodes, n);
  return n;
}

static Onnx__AttributeProto *
otu_attr (OtuGraph *g, Onnx__NodeProto *n, const char *name, Onnx__AttributeProto__AttributeType type)
{
  Onnx__AttributeProto *a = otu_keep (g, g_new0 (Onnx__AttributeProto, 1));

  onnx__attribute_proto__init (a);
  a->name = otu_keep (g, g_strdup (name));
  a->has_type = TRUE;
  a->type = type;
  n->attribute[n->n_attribute++] = a;
  return a;
}

static void
otu_attr_ints (OtuGraph *g, Onnx__NodeProto *n, const char *name, gint64 a, gint64 b)
{
  Onnx__AttributeProto *at = otu_attr (g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
  gint64 v[2] = { a, b };

  at->n_ints = 2;
  at->ints = otu_keep (g, g_memdup2 (v, sizeof v));
}

static Onnx__ValueInfoProto *
otu_value_info (OtuGraph *g, const char *name, gint64 features)
{
  Onnx__ValueInfoProto *vi = otu_keep (g, g_new0 (Onnx__ValueInfoProto, 1));
  Onnx__TypeProto *tp = otu_keep (g, g_new0 (Onnx__TypeProto, 1));
  Onnx__TypeProto__Tensor *tt = otu_keep (g, g_new0 (Onnx__TypeProto__Tensor, 1));
  Onnx__TensorShapeProto *sp = otu_keep (g, g_new0 (Onnx__TensorShapeProto, 1));
  Onnx__TensorShapeProto__Dimension **d = otu_keep (g, g_new0 (Onnx__TensorShapeProto__Dimension *, 2));

  onnx__value_info_proto__init (vi);
  onnx__type_proto__init (tp);
  onnx__type_proto__tensor__init (tt);
  onnx__tensor_shape_proto__init (sp);
  for (int i = 0; i < 2; i++)
    {
      d[i] = otu_keep (g, g_new0 (Onnx__TensorShapeProto__Dimension, 1));
      onnx__tensor_shape_proto__dimension__init (d[i]);
    }
  d[0]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
  d[0]->dim_param = otu_keep (g, g_strdup ("N"));
  d[1]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
  d[1]->dim_value = features;
  sp->n_dim = 2;
  sp->dim = d;
  tt->has_elem_type = TRUE;
  tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  tt->shape = sp;
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  vi->name = otu_keep (g, g_strdup (name));
  vi->type = tp;
  return vi;
}

/* Seeded values in [-scale, scale). */
static float *
otu_values (gint64 n, guint64 seed, float scale)
{
  float *v = g_new (float, n);
  EsRng rng = { seed };

  for (gint64 k = 0; k < n; k++)
    v[k] = (float) (es_rng_uniform (&rng) * 2.0 - 1.0) * scale;
  return v;
}

G_GNUC_UNUSED static char *
otu_write_foreign (const char *name)
{
  OtuGraph g = { g_ptr_array_new_with_free_func (g_free), g_ptr_array_new (), g_ptr_array_new () };
  Onnx__ModelProto m = ONNX__MODEL_PROTO__INIT;
  Onnx__GraphProto graph = ONNX__GRAPH_PROTO__INIT;
  Onnx__OperatorSetIdProto opset = ONNX__OPERATOR_SET_ID_PROTO__INIT;
  Onnx__OperatorSetIdProto *opsets[1] = { &opset };
  Onnx__ValueInfoProto *in, *out;
  g_autofree float *wc = otu_values (4 * 9, 1, 0.5f), *bc = otu_values (4, 2, 0.1f);
  g_autofree float *w2 = otu_values (784 * 16, 3, 0.08f), *b2 = otu_values (16, 4, 0.1f);
  g_autofree float *w3 = otu_values (16 * 10, 5, 0.5f), *b3 = otu_values (10, 6, 0.1f);
  float zero = 0.0f;
  gint64 dwc[4] = { 4, 1, 3, 3 }, dbc[1] = { 4 }, dw2[2] = { 784, 16 }, db2[1] = { 16 };
  gint64 dw3[2] = { 16, 10 }, db3[2] = { 1, 10 }, dshape[1] = { 4 };
  gint64 shape_v[4] = { -1, 1, 28, 28 };
  Onnx__NodeProto *n;
  Onnx__AttributeProto *a;
  Onnx__TensorProto *t;
  g_autofree guint8 *buf = NULL;
  gsize size;
  char *path;

  otu_init_floats (&g, "conv.w", dwc, 4, wc, FALSE);
  otu_init_floats (&g, "conv.b", dbc, 1, bc, TRUE);
  otu_init_floats (&g, "clip.min", NULL, 0, &zero, TRUE);
  otu_init_floats (&g, "fc1.w", dw2, 2, w2, TRUE);
  otu_init_floats (&g, "fc1.b", db2, 1, b2, FALSE);
  otu_init_floats (&g, "fc2.w", dw3, 2, w3, TRUE);
  otu_init_floats (&g, "fc2.b", db3, 2, b3, TRUE);

  n = otu_node (&g, "Constant", NULL, NULL, NULL, "shape");
  a = otu_attr (&g, n, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
  t = otu_tensor (&g, "shape", ONNX__TENSOR_PROTO__DATA_TYPE__INT64, dshape, 1);
  t->n_int64_data = 4;
  t->int64_data = otu_keep (&g, g_memdup2 (shape_v, sizeof shape_v));
  a->t = t;
  otu_node (&g, "Reshape", "x", "shape", NULL, "img");
  n = otu_node (&g, "Conv", "img", "conv.w", "conv.b", "c1");
  a = otu_attr (&g, n, "auto_pad", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
  a->has_s = TRUE;
  a->s.data = otu_keep (&g, g_strdup ("SAME_UPPER"));
  a->s.len = strlen ("SAME_UPPER");
  otu_node (&g, "Clip", "c1", "clip.min", NULL, "r1");
  n = otu_node (&g, "MaxPool", "r1", NULL, NULL, "p1");
  otu_attr_ints (&g, n, "kernel_shape", 2, 2);
  otu_attr_ints (&g, n, "strides", 2, 2);
  otu_node (&g, "Flatten", "p1", NULL, NULL, "f1");
  otu_node (&g, "MatMul", "f1", "fc1.w", NULL, "m1");
  otu_node (&g, "Add", "m1", "fc1.b", NULL, "a1");
  otu_node (&g, "Relu", "a1", NULL, NULL, "r2");
  otu_node (&g, "Identity", "r2", NULL, NULL, "i1");
  n = otu_node (&g, "Gemm", "i1", "fc2.w", "fc2.b", "g1");
  a = otu_attr (&g, n, "alpha", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
  a->has_f = TRUE;
  a->f = 0.5f;
  a = otu_attr (&g, n, "beta", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
  a->has_f = TRUE;
  a->f = 2.0f;
  otu_node (&g, "Softmax", "g1", NULL, NULL, "probs");

  in = otu_value_info (&g, "x", 784);
  out = otu_value_info (&g, "probs", 10);
  graph.name = (char *) "foreign";
  graph.n_node = g.nodes->len;
  graph.node = (Onnx__NodeProto **) g.nodes->pdata;
  graph.n_initializer = g.inits->len;
  graph.initializer = (Onnx__TensorProto **) g.inits->pdata;
  graph.n_input = 1;
  graph.input = &in;
  graph.n_output = 1;
  graph.output = &out;
  opset.domain = (char *) "";
  opset.has_version = TRUE;
  opset.version = 11;
  m.has_ir_version = TRUE;
  m.ir_version = 6;
  m.n_opset_import = 1;
  m.opset_import = opsets;
  m.producer_name = (char *) "another-tool";
  m.graph = &graph;
  size = onnx__model_proto__get_packed_size (&m);
  buf = g_malloc (size);
  onnx__model_proto__pack (&m, buf);
  path = otu_path (name);
  g_assert_true (g_file_set_contents (path, (const char *) buf, (gssize) size, NULL));
  g_ptr_array_unref (g.mem);
  g_ptr_array_unref (g.nodes);
  g_ptr_array_unref (g.inits);
  return path;
}

/* The engine model the foreign graph means, built independently: (1, 28, 28) ->
 * Conv2D 4x3x3 padding 1 -> ReLU -> MaxPool 2 -> Flatten -> Dense 16 (w = fc1.w^T) ->
 * ReLU -> Dense 10 (w = 0.5 fc2.w^T, b = 2 fc2.b) -> Softmax. */
G_GNUC_UNUSED static EsModel *
otu_foreign_reference (void)
{
  EsLayerSpec s[] = {
    otu_layer (ES_LAYER_CONV2D, 4), otu_layer (ES_LAYER_RELU, 0),
    otu_layer (ES_LAYER_MAXPOOL2D, 2), otu_layer (ES_LAYER_FLATTEN, 0),
    otu_layer (ES_LAYER_DENSE, 16), otu_layer (ES_LAYER_RELU, 0),
    otu_layer (ES_LAYER_DENSE, 10), otu_layer (ES_LAYER_SOFTMAX, 0),
  };
  g_autofree float *wc = otu_values (4 * 9, 1, 0.5f), *bc = otu_values (4, 2, 0.1f);
  g_autofree float *w2 = otu_values (784 * 16, 3, 0.08f), *b2 = otu_values (16, 4, 0.1f);
  g_autofree float *w3 = otu_values (16 * 10, 5, 0.5f), *b3 = otu_values (10, 6, 0.1f);
  EsError es = { 0 };
  EsModel *m;
  float *p;

  s[0].kernel = 3;
  s[0].padding = 1;
  m = es_model_new (&otu_image, s, G_N_ELEMENTS (s), &es);
  g_assert_nonnull (m);
  memcpy (es_model_tensor_data (m, 0), wc, 36 * sizeof (float));
  memcpy (es_model_tensor_data (m, 1), bc, 4 * sizeof (float));
  p = es_model_tensor_data (m, 2);   /* (16, 784) */
  for (int o = 0; o < 16; o++)
    for (int k = 0; k < 784; k++)
      p[o * 784 + k] = w2[k * 16 + o];
  memcpy (es_model_tensor_data (m, 3), b2, 16 * sizeof (float));
  p = es_model_tensor_data (m, 4);   /* (10, 16) */
  for (int o = 0; o < 10; o++)
    for (int k = 0; k < 16; k++)
      p[o * 16 + k] = 0.5f * w3[k * 10 + o];
  p = es_model_tensor_data (m, 5);
  for (int o = 0; o < 10; o++)
    p[o] = 2.0f * b3[o];
  return m;
}

#endif /* PROTOBUF_C_H */
