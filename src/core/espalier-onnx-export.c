/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-onnx-export.c: an EsModel (and its quantization) as an ONNX file, built as
 * protobuf-c messages (generated from onnx.proto) and packed by libprotobuf-c: no
 * hand-written encoder. What each layer becomes is described in espalier-onnx.h.
 *
 * Every message, string and array of the graph is allocated through a Builder and
 * freed with it once the file is written; the messages only point into that memory.
 * Values are named after the engine's layers ("layers.3.out", "layers.3.weight"), so
 * a file reads like the model's JSON; the first input is "input", the last output
 * "output".
 *
 * Dimension key: B = batch (the dynamic "batch" dimension), OUT/IN = Dense features,
 * OC/C = channels, K = kernel. */
#include "config.h"

#include "espalier-onnx-private.h"

#include <math.h>
#include <string.h>

#include <gio/gio.h>
#include <glib/gi18n-lib.h>
#include <json-glib/json-glib.h>

#include "espalier-error.h"
#include "espalier-format.h"
#include "espalier-json-private.h"
#include "espalier-limits.h"

/* Attributes a node of ours can carry at most (Conv: five). */
#define MAX_ATTRS 8

typedef struct {
  GPtrArray  *mem;      /* everything allocated for the messages, freed with g_free */
  GPtrArray  *nodes;    /* (Onnx__NodeProto *) in execution order */
  GPtrArray  *inits;    /* (Onnx__TensorProto *) */
  GPtrArray  *props;    /* (Onnx__StringStringEntryProto *) metadata */
  const char *cur;      /* the value the next layer reads */
} Builder;

static gpointer
b_alloc (Builder *b, gsize size)
{
  gpointer p = g_malloc0 (MAX (size, 1));

  g_ptr_array_add (b->mem, p);
  return p;
}

static char *
b_strdup (Builder *b, const char *s)
{
  char *d = g_strdup (s);

  g_ptr_array_add (b->mem, d);
  return d;
}

G_GNUC_PRINTF (2, 3) static char *
b_printf (Builder *b, const char *fmt, ...)
{
  va_list ap;
  char *s;

  va_start (ap, fmt);
  s = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_ptr_array_add (b->mem, s);
  return s;
}

/* ------------------------------------------------------------------------------------ */
/* Initializers */

/* An initializer of dtype (ONNX__TENSOR_PROTO__DATA_TYPE__*) with dims (rank, 0 for a
 * scalar) whose raw_data is a copy of bytes (already little-endian). */
static Onnx__TensorProto *
b_tensor_raw (Builder *b, const char *name, int dtype, const gint64 *dims, guint rank,
              const void *bytes, gsize len)
{
  Onnx__TensorProto *t = b_alloc (b, sizeof *t);

  onnx__tensor_proto__init (t);
  t->name = b_strdup (b, name);
  t->has_data_type = TRUE;
  t->data_type = dtype;
  t->n_dims = rank;
  t->dims = b_alloc (b, rank * sizeof (int64_t));
  for (guint i = 0; i < rank; i++)
    t->dims[i] = dims[i];
  t->has_raw_data = TRUE;
  t->raw_data.len = len;
  t->raw_data.data = b_alloc (b, len);
  if (len > 0)
    memcpy (t->raw_data.data, bytes, len);
  g_ptr_array_add (b->inits, t);
  return t;
}

/* n floats (the product of dims) as a FLOAT initializer. Returns its name. */
static const char *
b_floats (Builder *b, const char *name, const gint64 *dims, guint rank, const float *data)
{
  gint64 n = 1;
  Onnx__TensorProto *t;

  for (guint i = 0; i < rank; i++)
    n *= dims[i];
  t = b_tensor_raw (b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, dims, rank, NULL, 0);
  t->raw_data.data = b_alloc (b, (gsize) n * 4);
  t->raw_data.len = (gsize) n * 4;
  espalier_floats_to_le (t->raw_data.data, data, n);
  return t->name;
}

static const char *
b_float_scalar (Builder *b, const char *name, float v)
{
  return b_floats (b, name, NULL, 0, &v);
}

static const char *
b_int32s (Builder *b, const char *name, const gint64 *dims, guint rank, const gint32 *data)
{
  gint64 n = 1;
  Onnx__TensorProto *t;
  guint8 *p;

  for (guint i = 0; i < rank; i++)
    n *= dims[i];
  t = b_tensor_raw (b, name, ONNX__TENSOR_PROTO__DATA_TYPE__INT32, dims, rank, NULL, 0);
  p = t->raw_data.data = b_alloc (b, (gsize) n * 4);
  t->raw_data.len = (gsize) n * 4;
  for (gint64 i = 0; i < n; i++)
    {
      guint32 u = GUINT32_TO_LE ((guint32) data[i]);

      memcpy (p + 4 * i, &u, 4);
    }
  return t->name;
}

/* ------------------------------------------------------------------------------------ */
/* Nodes */

/* A node op (default domain) named name, reading inputs (n_in names), writing one
 * value named output. Returns the node; attributes are added with b_attr_*. */
static Onnx__NodeProto *
b_node (Builder *b, const char *op, const char *name, const char *const *inputs, guint n_in,
        const char *output)
{
  Onnx__NodeProto *n = b_alloc (b, sizeof *n);

  onnx__node_proto__init (n);
  n->op_type = b_strdup (b, op);
  n->name = b_strdup (b, name);
  n->n_input = n_in;
  n->input = b_alloc (b, n_in * sizeof (char *));
  for (guint i = 0; i < n_in; i++)
    n->input[i] = b_strdup (b, inputs[i]);
  n->n_output = 1;
  n->output = b_alloc (b, sizeof (char *));
  n->output[0] = b_strdup (b, output);
  n->attribute = b_alloc (b, MAX_ATTRS * sizeof (Onnx__AttributeProto *));
  g_ptr_array_add (b->nodes, n);
  return n;
}

/* A node reading b->cur (and extra inputs after it) whose output becomes b->cur. */
static Onnx__NodeProto *
b_chain (Builder *b, const char *op, const char *name, const char *const *extra, guint n_extra,
         const char *output)
{
  const char *inputs[5];
  Onnx__NodeProto *n;

  g_assert (n_extra < G_N_ELEMENTS (inputs));
  inputs[0] = b->cur;
  for (guint i = 0; i < n_extra; i++)
    inputs[1 + i] = extra[i];
  n = b_node (b, op, name, inputs, 1 + n_extra, output);
  b->cur = n->output[0];
  return n;
}

static Onnx__AttributeProto *
b_attr (Builder *b, Onnx__NodeProto *n, const char *name, Onnx__AttributeProto__AttributeType type)
{
  Onnx__AttributeProto *a = b_alloc (b, sizeof *a);

  g_assert (n->n_attribute < MAX_ATTRS);
  onnx__attribute_proto__init (a);
  a->name = b_strdup (b, name);
  a->has_type = TRUE;
  a->type = type;
  n->attribute[n->n_attribute++] = a;
  return a;
}

static void
b_attr_int (Builder *b, Onnx__NodeProto *n, const char *name, gint64 v)
{
  Onnx__AttributeProto *a = b_attr (b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);

  a->has_i = TRUE;
  a->i = v;
}

static void
b_attr_float (Builder *b, Onnx__NodeProto *n, const char *name, float v)
{
  Onnx__AttributeProto *a = b_attr (b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);

  a->has_f = TRUE;
  a->f = v;
}

/* count copies of v. */
static void
b_attr_ints (Builder *b, Onnx__NodeProto *n, const char *name, gint64 v, guint count)
{
  Onnx__AttributeProto *a = b_attr (b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);

  a->n_ints = count;
  a->ints = b_alloc (b, count * sizeof (int64_t));
  for (guint i = 0; i < count; i++)
    a->ints[i] = v;
}

/* Kernel, stride and padding of a Conv, MaxPool or AveragePool over square windows. */
static void
b_attr_window (Builder *b, Onnx__NodeProto *n, const EsLayerSpec *s, int pad)
{
  b_attr_ints (b, n, "kernel_shape", s->kernel, 2);
  b_attr_ints (b, n, "strides", s->stride, 2);
  b_attr_ints (b, n, "pads", pad, 4);
}

static Onnx__ValueInfoProto *
b_value_info (Builder *b, const char *name, const EsShape *shape)
{
  Onnx__ValueInfoProto *vi = b_alloc (b, sizeof *vi);
  Onnx__TypeProto *tp = b_alloc (b, sizeof *tp);
  Onnx__TypeProto__Tensor *tt = b_alloc (b, sizeof *tt);
  Onnx__TensorShapeProto *sp = b_alloc (b, sizeof *sp);

  onnx__value_info_proto__init (vi);
  onnx__type_proto__init (tp);
  onnx__type_proto__tensor__init (tt);
  onnx__tensor_shape_proto__init (sp);
  vi->name = b_strdup (b, name);
  vi->type = tp;
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  tt->has_elem_type = TRUE;
  tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  tt->shape = sp;
  sp->n_dim = 1 + (size_t) shape->rank;
  sp->dim = b_alloc (b, sp->n_dim * sizeof (Onnx__TensorShapeProto__Dimension *));
  for (size_t i = 0; i < sp->n_dim; i++)
    {
      Onnx__TensorShapeProto__Dimension *d = b_alloc (b, sizeof *d);

      onnx__tensor_shape_proto__dimension__init (d);
      if (i == 0)
        {
          d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
          d->dim_param = b_strdup (b, "batch");
        }
      else
        {
          d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
          d->dim_value = shape->dims[i - 1];
        }
      sp->dim[i] = d;
    }
  return vi;
}

static void
b_prop (Builder *b, const char *key, const char *value)
{
  Onnx__StringStringEntryProto *e = b_alloc (b, sizeof *e);

  onnx__string_string_entry_proto__init (e);
  e->key = b_strdup (b, key);
  e->value = b_strdup (b, value);
  g_ptr_array_add (b->props, e);
}

static void
b_prop_double (Builder *b, const char *key, double v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  b_prop (b, key, espalier_format_double (buf, v));
}

/* ------------------------------------------------------------------------------------ */
/* Layers */

typedef struct {
  const EsModel  *model;
  const EsQuant  *quant;     /* int8 modes only, else NULL */
  GString        *notes;     /* what the export changed, for metadata "note" */
  gboolean       *act_params;/* (n_layers) input scale/zero initializers written */
} Export;

static const float *
tensor_const (const EsModel *model, int t)
{
  const EsTensorInfo *ti = es_model_tensor (model, t);

  return (ti->trainable ? es_model_params_const (model) : es_model_buffers_const (model))
         + ti->offset;
}

static const EsQuantLayer *
int8_layer (const Export *ex, int i)
{
  if (ex->quant == NULL || i >= ex->quant->n_layers || !ex->quant->layers[i].int8)
    return NULL;
  return &ex->quant->layers[i];
}

static gboolean
is_static (const Export *ex)
{
  return ex->quant != NULL && ex->quant->mode == ES_QUANT_INT8_STATIC;
}

/* The BatchNorm layer that can be folded into weight layer i (Dropout between them
 * allowed), or -1. int8 layers keep their quantized weights as they are. */
static int
foldable_batchnorm (const Export *ex, int i)
{
  int n = es_model_n_layers (ex->model);
  int j = i + 1;

  if (int8_layer (ex, i) != NULL)
    return -1;
  while (j < n && es_model_layer (ex->model, j)->spec.kind == ES_LAYER_DROPOUT)
    j++;
  return j < n && es_model_layer (ex->model, j)->spec.kind == ES_LAYER_BATCHNORM ? j : -1;
}

/* The static int8 layer after layer i that only ReLU, MaxPool, Flatten or Dropout
 * separate from it, or -1. Its input quantization commutes with them (they are
 * monotone and keep 0), so it can be placed right after layer i. */
static int
next_int8_through (const Export *ex, int i)
{
  int n = es_model_n_layers (ex->model);

  if (!is_static (ex))
    return -1;
  for (int j = i + 1; j < n; j++)
    {
      EsLayerKind k = es_model_layer (ex->model, j)->spec.kind;

      if (k == ES_LAYER_RELU || k == ES_LAYER_MAXPOOL2D || k == ES_LAYER_FLATTEN
          || k == ES_LAYER_DROPOUT)
        continue;
      return (k == ES_LAYER_DENSE || k == ES_LAYER_CONV2D) && int8_layer (ex, j) != NULL ? j : -1;
    }
  return -1;
}

/* QuantizeLinear -> DequantizeLinear of b->cur with layer j's input scale and zero
 * point. tag keeps the names apart when the same quantization is placed twice. With
 * reduce_range the scale maps the calibrated range onto codes 0..127 as in the engine,
 * but values beyond it saturate at 255 rather than 127: a Clip there would keep ONNX
 * Runtime from fusing the group into its int8 kernels (the 7-bit codes exist for CPUs
 * without VNNI, which ONNX Runtime handles itself). */
static void
emit_act_qdq (Builder *b, Export *ex, int j, const char *tag)
{
  const EsQuantLayer *ql = &ex->quant->layers[j];
  int qmax = ex->quant->reduce_range ? 127 : 255;
  const char *scale = b_printf (b, "layers.%d.input_scale", j);
  const char *zero = b_printf (b, "layers.%d.input_zero_point", j);
  const char *qz[2] = { scale, zero };

  if (!ex->act_params[j])
    {
      guint8 z = (guint8) CLAMP (ql->in_zero, 0, qmax);

      b_float_scalar (b, scale, ql->in_scale);
      b_tensor_raw (b, zero, ONNX__TENSOR_PROTO__DATA_TYPE__UINT8, NULL, 0, &z, 1);
      ex->act_params[j] = TRUE;
    }
  b_chain (b, "QuantizeLinear", b_printf (b, "layers.%d.input_quantize%s", j, tag), qz, 2,
           b_printf (b, "layers.%d.input_q%s", j, tag));
  b_chain (b, "DequantizeLinear", b_printf (b, "layers.%d.input_dequantize%s", j, tag), qz, 2,
           b_printf (b, "layers.%d.input_dq%s", j, tag));
}

/* Layer i's weight dims: (OUT, IN) or (OC, C, K, K); returns the rank. */
static guint
weight_dims (const EsLayerInfo *info, gint64 dims[4])
{
  if (info->spec.kind == ES_LAYER_DENSE)
    {
      dims[0] = info->spec.units;
      dims[1] = info->in.dims[0];
      return 2;
    }
  dims[0] = info->spec.filters;
  dims[1] = info->in.dims[0];
  dims[2] = info->spec.kernel;
  dims[3] = info->spec.kernel;
  return 4;
}

/* The Gemm or Conv node of layer i reading b->cur, weight and bias (names). */
static void
emit_weight_op (Builder *b, const EsLayerInfo *info, int i, const char *weight, const char *bias)
{
  const char *wb[2] = { weight, bias };
  Onnx__NodeProto *n;

  if (info->spec.kind == ES_LAYER_DENSE)
    {
      n = b_chain (b, "Gemm", b_printf (b, "layers.%d.gemm", i), wb, 2,
                   b_printf (b, "layers.%d.out", i));
      b_attr_float (b, n, "alpha", 1.0f);
      b_attr_float (b, n, "beta", 1.0f);
      b_attr_int (b, n, "transB", 1);
    }
  else
    {
      n = b_chain (b, "Conv", b_printf (b, "layers.%d.conv", i), wb, 2,
                   b_printf (b, "layers.%d.out", i));
      b_attr_window (b, n, &info->spec, info->spec.padding);
      b_attr_ints (b, n, "dilations", 1, 2);
      b_attr_int (b, n, "group", 1);
    }
}

/* A float Dense or Conv2D, with the BatchNorm layer bn (or -1) folded in:
 * s = gamma / sqrt(var + eps), w' = w s (per output channel), b' = (b - mean) s + beta. */
static void
emit_weight_float (Builder *b, Export *ex, int i, const float *w, int bn)
{
  const EsLayerInfo *info = es_model_layer (ex->model, i);
  const float *bias = tensor_const (ex->model, info->first_tensor + 1);
  gint64 dims[4];
  guint rank = weight_dims (info, dims);
  gint64 rows = dims[0], cols = rank == 2 ? dims[1] : dims[1] * dims[2] * dims[3];
  g_autofree float *wf = NULL, *bf = NULL;

  if (bn >= 0)
    {
      const EsLayerInfo *bi = es_model_layer (ex->model, bn);
      const float *gamma = tensor_const (ex->model, bi->first_tensor);
      const float *beta = tensor_const (ex->model, bi->first_tensor + 1);
      const float *mean = tensor_const (ex->model, bi->first_tensor + 2);
      const float *var = tensor_const (ex->model, bi->first_tensor + 3);

      wf = g_new (float, rows * cols);   /* (rows, cols) */
      bf = g_new (float, rows);          /* (rows) */
      for (gint64 o = 0; o < rows; o++)
        {
          double s = gamma[o] / sqrt ((double) var[o] + bi->spec.eps);

          for (gint64 k = 0; k < cols; k++)
            wf[o * cols + k] = (float) (w[o * cols + k] * s);
          bf[o] = (float) (((double) bias[o] - mean[o]) * s + beta[o]);
        }
      w = wf;
      bias = bf;
    }
  emit_weight_op (b, info, i, b_floats (b, b_printf (b, "layers.%d.weight", i), dims, rank, w),
                  b_floats (b, b_printf (b, "layers.%d.bias", i), dims, 1, bias));
}

/* A static int8 Dense or Conv2D in QDQ form (espalier-onnx.h). */
static void
emit_weight_qdq (Builder *b, Export *ex, int i, const EsQuantLayer *ql)
{
  const EsLayerInfo *info = es_model_layer (ex->model, i);
  const float *bias = tensor_const (ex->model, info->first_tensor + 1);
  gint64 dims[4];
  guint rank = weight_dims (info, dims);
  const char *w_q = b_printf (b, "layers.%d.weight_quantized", i);
  const char *w_s = b_printf (b, "layers.%d.weight_scale", i);
  const char *w_z = b_printf (b, "layers.%d.weight_zero_point", i);
  const char *w_dq[3] = { w_q, w_s, w_z };
  const char *weight = b_printf (b, "layers.%d.weight", i);
  const char *bias_name = b_printf (b, "layers.%d.bias", i);
  g_autofree gint32 *b_q = g_new (gint32, ql->rows);     /* (rows) */
  g_autofree float *b_s = g_new (float, ql->rows);       /* (rows) */
  g_autofree gint8 *zeros = g_new0 (gint8, ql->rows);    /* (rows) */
  gboolean bias_fits = TRUE;
  Onnx__NodeProto *n;

  /* If the previous layers did not already leave b->cur quantized this way. */
  if (!g_str_has_prefix (b->cur, b_printf (b, "layers.%d.input_dq", i)))
    emit_act_qdq (b, ex, i, "");

  b_tensor_raw (b, w_q, ONNX__TENSOR_PROTO__DATA_TYPE__INT8, dims, rank, ql->w_q,
                (gsize) ql->rows * ql->cols);
  b_floats (b, w_s, dims, 1, ql->w_scale);
  b_tensor_raw (b, w_z, ONNX__TENSOR_PROTO__DATA_TYPE__INT8, dims, 1, zeros, ql->rows);
  n = b_node (b, "DequantizeLinear", b_printf (b, "layers.%d.weight_dequantize", i), w_dq, 3,
              weight);
  b_attr_int (b, n, "axis", 0);

  /* The bias in int32 at the accumulator's scale, as ONNX Runtime's int8 Gemm and Conv
   * take it; in float when a value does not fit, and for a Conv without a quantized
   * output, which ONNX Runtime runs in float on the dequantized values (an int32 bias
   * would only add its rounding). */
  if (info->spec.kind == ES_LAYER_CONV2D && next_int8_through (ex, i) < 0)
    bias_fits = FALSE;
  for (int o = 0; bias_fits && o < ql->rows; o++)
    {
      double s = (double) ql->in_scale * ql->w_scale[o];
      double q = s > 0.0 ? nearbyint (bias[o] / s) : 0.0;

      b_s[o] = (float) s;
      if (!(s > 0.0) || !(fabs (q) < 2147483647.0))
        bias_fits = FALSE;
      else
        b_q[o] = (gint32) q;
    }
  if (bias_fits)
    {
      const char *b_dq[2] = { b_printf (b, "layers.%d.bias_quantized", i),
                              b_printf (b, "layers.%d.bias_scale", i) };

      b_int32s (b, b_dq[0], dims, 1, b_q);
      b_floats (b, b_dq[1], dims, 1, b_s);
      n = b_node (b, "DequantizeLinear", b_printf (b, "layers.%d.bias_dequantize", i), b_dq, 2,
                  bias_name);
      b_attr_int (b, n, "axis", 0);
    }
  else
    b_floats (b, bias_name, dims, 1, bias);
  emit_weight_op (b, info, i, weight, bias_name);
}

/* A dynamic int8 Dense or Conv2D: DynamicQuantizeLinear, MatMulInteger or ConvInteger
 * on the int8 weights, then (int32 sums) s_x s_w + bias in float. */
static void
emit_weight_dynamic (Builder *b, Export *ex, int i, const EsQuantLayer *ql)
{
  const EsLayerInfo *info = es_model_layer (ex->model, i);
  const float *bias = tensor_const (ex->model, info->first_tensor + 1);
  gboolean dense = info->spec.kind == ES_LAYER_DENSE;
  gint64 dims[4];
  guint rank = weight_dims (info, dims);
  /* Dense: weights (IN, OUT) for MatMulInteger; scale and bias (OUT). Conv: weights
   * (OC, C, K, K); scale and bias (OC, 1, 1) to broadcast over (B, OC, OH, OW). */
  gint64 col_dims[3] = { ql->rows, 1, 1 };
  guint col_rank = dense ? 1 : 3;
  const char *x_q = b_printf (b, "layers.%d.input_q", i);
  const char *x_s = b_printf (b, "layers.%d.input_scale", i);
  const char *x_z = b_printf (b, "layers.%d.input_zero_point", i);
  const char *w_q = b_printf (b, "layers.%d.weight_quantized", i);
  const char *w_s = b_printf (b, "layers.%d.weight_scale", i);
  const char *scale = b_printf (b, "layers.%d.scale", i);
  const char *ins[3];
  Onnx__NodeProto *n;

  /* DynamicQuantizeLinear: three outputs. */
  ins[0] = b->cur;
  n = b_node (b, "DynamicQuantizeLinear", b_printf (b, "layers.%d.input_quantize", i), ins, 1,
              x_q);
  n->n_output = 3;
  n->output = b_alloc (b, 3 * sizeof (char *));
  n->output[0] = (char *) x_q;
  n->output[1] = (char *) x_s;
  n->output[2] = (char *) x_z;

  if (dense)
    {
      g_autofree gint8 *wt = g_new (gint8, (gsize) ql->rows * ql->cols);   /* (IN, OUT) */
      gint64 tdims[2] = { ql->cols, ql->rows };

      for (int o = 0; o < ql->rows; o++)
        for (int k = 0; k < ql->cols; k++)
          wt[(gsize) k * ql->rows + o] = ql->w_q[(gsize) o * ql->cols + k];
      b_tensor_raw (b, w_q, ONNX__TENSOR_PROTO__DATA_TYPE__INT8, tdims, 2, wt,
                    (gsize) ql->rows * ql->cols);
    }
  else
    b_tensor_raw (b, w_q, ONNX__TENSOR_PROTO__DATA_TYPE__INT8, dims, rank, ql->w_q,
                  (gsize) ql->rows * ql->cols);
  b_floats (b, w_s, col_dims, col_rank, ql->w_scale);

  ins[0] = x_q;
  ins[1] = w_q;
  ins[2] = x_z;
  n = b_node (b, dense ? "MatMulInteger" : "ConvInteger",
              b_printf (b, "layers.%d.%s", i, dense ? "matmul" : "conv"), ins, 3,
              b_printf (b, "layers.%d.acc", i));
  if (!dense)
    {
      b_attr_window (b, n, &info->spec, info->spec.padding);
      b_attr_ints (b, n, "dilations", 1, 2);
      b_attr_int (b, n, "group", 1);
    }
  b->cur = n->output[0];
  n = b_chain (b, "Cast", b_printf (b, "layers.%d.cast", i), NULL, 0,
               b_printf (b, "layers.%d.acc_float", i));
  b_attr_int (b, n, "to", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);

  ins[0] = x_s;
  ins[1] = w_s;
  b_node (b, "Mul", b_printf (b, "layers.%d.scale_mul", i), ins, 2, scale);
  b_chain (b, "Mul", b_printf (b, "layers.%d.mul", i), &scale, 1,
           b_printf (b, "layers.%d.scaled", i));
  ins[0] = b_floats (b, b_printf (b, "layers.%d.bias", i), col_dims, col_rank, bias);
  b_chain (b, "Add", b_printf (b, "layers.%d.add", i), ins, 1, b_printf (b, "layers.%d.out", i));
}

/* After static int8 layer i: when only ReLU, MaxPool, Flatten or Dropout lead to the
 * next int8 layer j, quantize the output with j's input quantization now (exact, see
 * next_int8_through), so ONNX Runtime sees a complete DQ -> op -> Q group. */
static void
emit_output_qdq (Builder *b, Export *ex, int i)
{
  int j = next_int8_through (ex, i);

  if (j >= 0)
    emit_act_qdq (b, ex, j, "_early");
}

static void
emit_layers (Builder *b, Export *ex)
{
  int n = es_model_n_layers (ex->model);
  g_autofree gboolean *folded = g_new0 (gboolean, n);

  for (int i = 0; i < n; i++)
    {
      const EsLayerInfo *info = es_model_layer (ex->model, i);
      const EsLayerSpec *s = &info->spec;
      const char *out = b_printf (b, "layers.%d.out", i);
      Onnx__NodeProto *node;

      switch (s->kind)
        {
        case ES_LAYER_DENSE:
        case ES_LAYER_CONV2D:
          {
            const EsQuantLayer *ql = int8_layer (ex, i);
            const float *w = tensor_const (ex->model, info->first_tensor);
            int bn = foldable_batchnorm (ex, i);

            if (ql != NULL && is_static (ex))
              {
                emit_weight_qdq (b, ex, i, ql);
                emit_output_qdq (b, ex, i);
              }
            else if (ql != NULL && !ex->quant->reduce_range)
              emit_weight_dynamic (b, ex, i, ql);
            else if (ql != NULL)
              {
                /* DynamicQuantizeLinear has no 7-bit form: the int8 weights in float. */
                g_autofree float *wd = g_new (float, (gsize) ql->rows * ql->cols);

                for (gint64 k = 0; k < (gint64) ql->rows * ql->cols; k++)
                  wd[k] = ql->w_q[k] * ql->w_scale[k / ql->cols];
                emit_weight_float (b, ex, i, wd, -1);
                g_string_append_printf (ex->notes, "layer %d: dynamic int8 with reduced range "
                                        "exported with its int8 weights in float; ", i + 1);
              }
            else
              {
                emit_weight_float (b, ex, i, w, bn);
                if (bn >= 0)
                  folded[bn] = TRUE;
              }
          }
          break;

        case ES_LAYER_MAXPOOL2D:
        case ES_LAYER_AVGPOOL2D:
          node = b_chain (b, s->kind == ES_LAYER_MAXPOOL2D ? "MaxPool" : "AveragePool",
                          b_printf (b, "layers.%d.pool", i), NULL, 0, out);
          b_attr_window (b, node, s, 0);
          break;

        case ES_LAYER_FLATTEN:
          node = b_chain (b, "Flatten", b_printf (b, "layers.%d.flatten", i), NULL, 0, out);
          b_attr_int (b, node, "axis", 1);
          break;

        case ES_LAYER_RELU:
          b_chain (b, "Relu", b_printf (b, "layers.%d.relu", i), NULL, 0, out);
          break;

        case ES_LAYER_LEAKY_RELU:
          node = b_chain (b, "LeakyRelu", b_printf (b, "layers.%d.leaky_relu", i), NULL, 0, out);
          b_attr_float (b, node, "alpha", s->alpha);
          break;

        case ES_LAYER_SIGMOID:
          b_chain (b, "Sigmoid", b_printf (b, "layers.%d.sigmoid", i), NULL, 0, out);
          break;

        case ES_LAYER_TANH:
          b_chain (b, "Tanh", b_printf (b, "layers.%d.tanh", i), NULL, 0, out);
          break;

        case ES_LAYER_SOFTMAX:
          /* Always on (B, C): es-model.c refuses a Softmax on images. */
          node = b_chain (b, "Softmax", b_printf (b, "layers.%d.softmax", i), NULL, 0, out);
          b_attr_int (b, node, "axis", 1);
          break;

        case ES_LAYER_DROPOUT:
          break;   /* the identity at inference */

        case ES_LAYER_BATCHNORM:
          if (!folded[i])
            {
              gint64 ch = info->in.dims[0];
              const char *p[4];

              for (int t = 0; t < 4; t++)
                p[t] = b_floats (b, es_model_tensor (ex->model, info->first_tensor + t)->name,
                                 &ch, 1, tensor_const (ex->model, info->first_tensor + t));
              node = b_chain (b, "BatchNormalization", b_printf (b, "layers.%d.batchnorm", i),
                              p, 4, out);
              b_attr_float (b, node, "epsilon", s->eps);
              /* ONNX's momentum weighs the old running value; the engine's the new. */
              b_attr_float (b, node, "momentum", 1.0f - s->momentum);
            }
          break;

        default:
          g_assert_not_reached ();
        }
    }
}

/* ------------------------------------------------------------------------------------ */
/* The model */

static void
add_metadata (Builder *b, const EsModel *model, const EsQuant *quant, const EspalierOnnxMeta *meta,
              const char *notes)
{
  int n = es_model_n_layers (model);
  gboolean probs = n > 0 && es_model_layer (model, n - 1)->spec.kind == ES_LAYER_SOFTMAX;
  double scale = meta != NULL ? meta->input_scale : 1.0;
  double shift = meta != NULL ? meta->input_shift : 0.0;

  if (meta != NULL && meta->class_names != NULL)
    {
      g_autoptr(JsonBuilder) jb = json_builder_new ();
      g_autoptr(JsonNode) root = NULL;
      g_autofree char *text = NULL;

      json_builder_begin_array (jb);
      for (char **c = meta->class_names; *c != NULL; c++)
        json_builder_add_string_value (jb, *c);
      json_builder_end_array (jb);
      root = json_builder_get_root (jb);
      text = espalier_json_to_text (root, FALSE);
      b_prop (b, ESPALIER_ONNX_META_CLASS_NAMES, text);
    }
  if (!(scale != 0.0) || !isfinite (scale) || !isfinite (shift))
    {
      scale = 1.0;
      shift = 0.0;
    }
  b_prop_double (b, ESPALIER_ONNX_META_INPUT_SCALE, scale);
  b_prop_double (b, ESPALIER_ONNX_META_INPUT_SHIFT, shift);
  /* raw * scale + shift = (raw - mean) / std */
  b_prop_double (b, ESPALIER_ONNX_META_INPUT_MEAN, 0.0 - shift / scale);   /* not -0 */
  b_prop_double (b, ESPALIER_ONNX_META_INPUT_STD, 1.0 / scale);
  if (meta != NULL && meta->preprocessing != NULL)
    b_prop (b, ESPALIER_ONNX_META_PREPROCESSING, meta->preprocessing);
  b_prop (b, ESPALIER_ONNX_META_OUTPUT, probs ? "probabilities" : "logits");
  b_prop (b, ESPALIER_ONNX_META_QUANTIZATION,
          es_quant_mode_name (quant != NULL ? quant->mode : ES_QUANT_FP32));
  if (notes != NULL && notes[0] != '\0')
    b_prop (b, ESPALIER_ONNX_META_NOTE, notes);
}

static gboolean
check_quant (const EsModel *model, const EsQuant *quant, GError **error)
{
  EsError es = { 0 };

  if (quant == NULL)
    return TRUE;
  if (!es_quant_check (quant, model, &es)
      || (quant->mode == ES_QUANT_INT8_STATIC && !es_quant_is_ready (quant, &es)))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("Cannot export this quantization to ONNX: %s"), es.message);
      return FALSE;
    }
  return TRUE;
}

static void
builder_clear (Builder *b)
{
  g_clear_pointer (&b->mem, g_ptr_array_unref);
  g_clear_pointer (&b->nodes, g_ptr_array_unref);
  g_clear_pointer (&b->inits, g_ptr_array_unref);
  g_clear_pointer (&b->props, g_ptr_array_unref);
}

gboolean
espalier_onnx_export (const EsModel *model, const EsQuant *quant, const EspalierOnnxMeta *meta,
                      const char *path, EspalierOnnxSummary *summary, GError **error)
{
  Builder b = { 0 };
  Export ex = { 0 };
  Onnx__ModelProto mp = ONNX__MODEL_PROTO__INIT;
  Onnx__GraphProto graph = ONNX__GRAPH_PROTO__INIT;
  Onnx__OperatorSetIdProto opset = ONNX__OPERATOR_SET_ID_PROTO__INIT;
  Onnx__OperatorSetIdProto *opsets[1] = { &opset };
  Onnx__ValueInfoProto *in_vi, *out_vi;
  EspalierAtomicFile af = ESPALIER_ATOMIC_FILE_INIT;
  EsModel *rounded = NULL;
  EsShape in_shape, out_shape;
  g_autofree guint8 *buf = NULL;
  gsize size;
  gboolean ok = FALSE;

  g_return_val_if_fail (model != NULL, FALSE);
  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (!check_quant (model, quant, error))
    return FALSE;

  b.mem = g_ptr_array_new_with_free_func (g_free);
  b.nodes = g_ptr_array_new ();
  b.inits = g_ptr_array_new ();
  b.props = g_ptr_array_new ();
  b.cur = "input";
  ex.model = model;
  ex.notes = g_string_new (NULL);
  ex.act_params = g_new0 (gboolean, es_model_n_layers (model));
  if (quant != NULL && (quant->mode == ES_QUANT_FP16 || quant->mode == ES_QUANT_BF16))
    {
      /* Computed in fp32 after rounding: the rounded weights are the model. */
      rounded = es_quant_dequantized_model (model, quant);
      ex.model = rounded;
      g_string_append_printf (ex.notes, "weights rounded to %s, stored as float32; ",
                              es_quant_mode_name (quant->mode));
    }
  else if (quant != NULL && quant->mode != ES_QUANT_FP32)
    {
      ex.quant = quant;
      if (quant->mode == ES_QUANT_INT8_STATIC && quant->reduce_range)
        g_string_append (ex.notes, "reduced range: inputs beyond the calibrated range "
                         "saturate at code 255, not 127; ");
    }

  emit_layers (&b, &ex);
  if (b.nodes->len == 0)
    b_chain (&b, "Identity", "identity", NULL, 0, "output");
  else
    {
      Onnx__NodeProto *last = g_ptr_array_index (b.nodes, b.nodes->len - 1);

      g_assert (last->output[0] == b.cur);
      last->output[0] = b_strdup (&b, "output");
    }

  in_shape = es_model_input_shape (ex.model);
  out_shape = es_model_output_shape (ex.model);
  in_vi = b_value_info (&b, "input", &in_shape);
  out_vi = b_value_info (&b, "output", &out_shape);
  graph.name = b_strdup (&b, meta != NULL && meta->model_name != NULL ? meta->model_name
                                                                      : "espalier");
  graph.n_node = b.nodes->len;
  graph.node = (Onnx__NodeProto **) b.nodes->pdata;
  graph.n_initializer = b.inits->len;
  graph.initializer = (Onnx__TensorProto **) b.inits->pdata;
  graph.n_input = 1;
  graph.input = &in_vi;
  graph.n_output = 1;
  graph.output = &out_vi;

  if (ex.notes->len > 2)
    g_string_truncate (ex.notes, ex.notes->len - 2);
  add_metadata (&b, model, quant, meta, ex.notes->str);
  opset.domain = b_strdup (&b, "");
  opset.has_version = TRUE;
  opset.version = ESPALIER_ONNX_OPSET;
  mp.has_ir_version = TRUE;
  mp.ir_version = ESPALIER_ONNX_IR_VERSION;
  mp.n_opset_import = 1;
  mp.opset_import = opsets;
  mp.producer_name = b_strdup (&b, meta != NULL && meta->producer != NULL ? meta->producer
                                                                         : "Espalier");
  mp.producer_version = b_strdup (&b, meta != NULL && meta->version != NULL ? meta->version
                                                                           : PACKAGE_VERSION);
  if (meta != NULL && meta->description != NULL)
    mp.doc_string = b_strdup (&b, meta->description);
  mp.graph = &graph;
  mp.n_metadata_props = b.props->len;
  mp.metadata_props = (Onnx__StringStringEntryProto **) b.props->pdata;

  size = onnx__model_proto__get_packed_size (&mp);
  if ((guint64) size > (guint64) ESPALIER_ONNX_MAX_BYTES)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED,
                   _("The model is too large for one ONNX file (%llu bytes, over 2 GiB)"),
                   (unsigned long long) size);
      goto out;
    }
  /* TRANSLATORS: what did not fit in "Not enough memory for %s" */
  buf = espalier_try_alloc (size, 1, FALSE, _("the ONNX file's contents"), error);
  if (buf == NULL)
    goto out;
  onnx__model_proto__pack (&mp, buf);
  if (!espalier_atomic_open (&af, path, error)
      || !espalier_atomic_write (&af, buf, size, NULL, error)
      || !espalier_atomic_sync (&af, error)
      || !espalier_atomic_commit (&af, error))
    goto out;
  espalier_sync_directory (path);
  if (summary != NULL)
    espalier_onnx_summarize (&mp, (gint64) size, summary);
  ok = TRUE;

out:
  espalier_atomic_clear (&af);
  g_string_free (ex.notes, TRUE);
  g_free (ex.act_params);
  es_model_free (rounded);
  builder_clear (&b);
  return ok;
}
