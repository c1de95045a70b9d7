/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-onnx-import.c: an ONNX file (read by the protobuf-c code generated from
 * onnx.proto) into an EsModel. The graph is walked once, in its (topological) node
 * order, following one value, the activations, from the graph's input to its output:
 * every node either computes on constants only (Constant, DequantizeLinear of an
 * initializer: evaluated here), or reads the activations and becomes an engine layer,
 * is folded into the layer before it (an Add after MatMul), or is skipped (Dropout,
 * Identity, QuantizeLinear -> DequantizeLinear). Anything else is an error that names
 * the node and its operator; a value read that nothing provides is a missing
 * initializer; a value read that is an older activation means the graph branches,
 * which a sequence of layers cannot express.
 *
 * Not here: the operators' numerics (the engine runs the model) and export
 * (espalier-onnx-export.c). */
#include "config.h"

#include "espalier-onnx-private.h"

#include <math.h>
#include <string.h>

#include <gio/gio.h>
#include <glib/gi18n-lib.h>
#include <json-glib/json-glib.h>

#include "espalier-error.h"
#include "espalier-json-private.h"

#define MAX_CONST_RANK 8
/* Values a constant may hold: far above any real layer, below int overflow. */
#define MAX_CONST_VALUES ((gint64) 1 << 31)

/* A constant: an initializer, a Constant node or a constant folded here. Integer
 * types (and shapes) keep exact values in iv, floating ones in f. */
typedef struct {
  int     dtype;          /* ONNX__TENSOR_PROTO__DATA_TYPE__* */
  guint   rank;
  gint64  dims[MAX_CONST_RANK];
  gint64  n;              /* product of dims */
  float  *f;              /* (n) FLOAT or DOUBLE, else NULL */
  gint64 *iv;             /* (n) integer types, else NULL */
} Const;

typedef struct {
  const char       *path;
  gint64            opset;
  GHashTable       *consts;     /* name -> Const (owned) */
  GHashTable       *seen;       /* names of every activation produced so far */
  GArray           *specs;      /* (EsLayerSpec) */
  GPtrArray        *tensors;    /* (float *) each layer's tensors in es_model_tensor order */
  GArray           *sizes;      /* (gint64) floats of each of tensors */
  EsShape           input;
  EsShape           shape;      /* of the activations, per sample */
  const char       *cur;        /* name of the activations */
  gboolean          quantized;  /* cur is the output of an activation QuantizeLinear */
  int               fresh;      /* the Dense/Conv2D layer cur is the direct output of, or -1 */
  gboolean          bias_added; /* an Add has been folded into that layer's bias */
  gboolean          dequantized;/* the file had quantization nodes */
} Import;

static void
const_free (gpointer p)
{
  Const *c = p;

  g_free (c->f);
  g_free (c->iv);
  g_free (c);
}

/* ------------------------------------------------------------------------------------ */
/* Errors */

/* "“name” (Op)" for messages; nodes without a name are numbered. */
static char *
node_label (const Onnx__NodeProto *n, gsize index)
{
  const char *op = n->op_type != NULL ? n->op_type : "?";

  if (n->name != NULL && n->name[0] != '\0')
    return g_strdup_printf ("“%s” (%s)", n->name, op);
  return g_strdup_printf ("#%" G_GSIZE_FORMAT " (%s)", index + 1, op);
}

G_GNUC_PRINTF (4, 5) static gboolean
fail (Import *im, GError **error, int code, const char *fmt, ...)
{
  g_autofree char *msg = NULL;
  va_list ap;

  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error (error, ESPALIER_ERROR, code, "%s: %s", im->path, msg);
  return FALSE;
}

/* ------------------------------------------------------------------------------------ */
/* Constants */

static gboolean
is_float_type (int dtype)
{
  return dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || dtype == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE;
}

static gboolean
is_int_type (int dtype)
{
  switch (dtype)
    {
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL:
      return TRUE;
    default:
      return FALSE;
    }
}

static int
raw_size (int dtype)
{
  switch (dtype)
    {
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL:
      return 1;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16:
      return 2;
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
      return 4;
    default:
      return 8;
    }
}

/* Element k of little-endian raw bytes of an integer type. */
static gint64
raw_int (const guint8 *p, int dtype, gint64 k)
{
  switch (dtype)
    {
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8: return (gint8) p[k];
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL: return p[k];
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16: return (gint16) (p[2 * k] | p[2 * k + 1] << 8);
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16: return (guint16) (p[2 * k] | p[2 * k + 1] << 8);
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
      {
        guint32 u;

        memcpy (&u, p + 4 * k, 4);
        return (gint32) GUINT32_FROM_LE (u);
      }
    default:
      {
        guint64 u;

        memcpy (&u, p + 8 * k, 8);
        return (gint64) GUINT64_FROM_LE (u);
      }
    }
}

/* The values of tensor t (named what for messages) as a Const, or NULL with an error. */
static Const *
const_from_tensor (Import *im, const Onnx__TensorProto *t, const char *what, GError **error)
{
  g_autoptr(GString) shape = g_string_new ("(");
  Const *c = g_new0 (Const, 1);
  gint64 have;

  c->dtype = t->has_data_type ? t->data_type : 0;
  if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
    {
      fail (im, error, ESPALIER_ERROR_UNSUPPORTED,
            _("the tensor “%s” keeps its values in an external file, which Espalier does not read"),
            what);
      goto fail;
    }
  if (!is_float_type (c->dtype) && !is_int_type (c->dtype))
    {
      fail (im, error, ESPALIER_ERROR_UNSUPPORTED,
            _("the tensor “%s” has data type %d, which Espalier does not read (it reads "
              "float, double and integers)"), what, c->dtype);
      goto fail;
    }
  if (t->n_dims > MAX_CONST_RANK)
    {
      fail (im, error, ESPALIER_ERROR_FORMAT, _("the tensor “%s” has %llu dimensions"),
            what, (unsigned long long) t->n_dims);
      goto fail;
    }
  c->rank = (guint) t->n_dims;
  c->n = 1;
  for (guint i = 0; i < c->rank; i++)
    {
      c->dims[i] = t->dims[i];
      g_string_append_printf (shape, "%s%" G_GINT64_FORMAT, i ? ", " : "", t->dims[i]);
      if (t->dims[i] < 0 || (t->dims[i] > 0 && c->n > MAX_CONST_VALUES / t->dims[i]))
        {
          fail (im, error, ESPALIER_ERROR_FORMAT, _("the tensor “%s” has an impossible shape"),
                what);
          goto fail;
        }
      c->n *= t->dims[i];
    }
  g_string_append_c (shape, ')');

  if (t->has_raw_data)
    have = (gint64) (t->raw_data.len / (gsize) raw_size (c->dtype));
  else if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
    have = (gint64) t->n_float_data;
  else if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE)
    have = (gint64) t->n_double_data;
  else if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__INT64)
    have = (gint64) t->n_int64_data;
  else
    have = (gint64) t->n_int32_data;
  if (have != c->n || (t->has_raw_data && t->raw_data.len != (gsize) (c->n * raw_size (c->dtype))))
    {
      fail (im, error, ESPALIER_ERROR_FORMAT,
            _("the tensor “%s” holds %lld values where its shape %s needs %lld"), what,
            (long long) have, shape->str, (long long) c->n);
      goto fail;
    }

  if (is_float_type (c->dtype))
    {
      c->f = g_new (float, MAX (c->n, 1));
      for (gint64 k = 0; k < c->n; k++)
        {
          if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE)
            {
              double d;

              if (t->has_raw_data)
                {
                  guint64 u;

                  memcpy (&u, t->raw_data.data + 8 * k, 8);
                  u = GUINT64_FROM_LE (u);
                  memcpy (&d, &u, 8);
                }
              else
                d = t->double_data[k];
              c->f[k] = (float) d;
            }
          else if (!t->has_raw_data)
            c->f[k] = t->float_data[k];
        }
      if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT && t->has_raw_data)
        espalier_floats_from_le (c->f, t->raw_data.data, c->n);
    }
  else
    {
      c->iv = g_new (gint64, MAX (c->n, 1));
      for (gint64 k = 0; k < c->n; k++)
        {
          if (t->has_raw_data)
            c->iv[k] = raw_int (t->raw_data.data, c->dtype, k);
          else if (c->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__INT64)
            c->iv[k] = t->int64_data[k];
          else
            c->iv[k] = t->int32_data[k];
        }
    }
  return c;

fail:
  const_free (c);
  return NULL;
}

/* Value k as a double, whatever the type. */
static double
const_at (const Const *c, gint64 k)
{
  return c->f != NULL ? (double) c->f[k] : (double) c->iv[k];
}

static char *
const_shape (const Const *c)
{
  GString *s = g_string_new ("(");

  for (guint i = 0; i < c->rank; i++)
    g_string_append_printf (s, "%s%" G_GINT64_FORMAT, i ? ", " : "", c->dims[i]);
  g_string_append_c (s, ')');
  return g_string_free (s, FALSE);
}

/* ------------------------------------------------------------------------------------ */
/* Node inputs and attributes */

static const char *
node_input (const Onnx__NodeProto *n, gsize k)
{
  return k < n->n_input && n->input[k] != NULL && n->input[k][0] != '\0' ? n->input[k] : NULL;
}

/* Why value `name`, read by node n, is neither a constant nor the activations. */
static gboolean
fail_unknown_input (Import *im, const Onnx__NodeProto *n, gsize idx, const char *name,
                    GError **error)
{
  g_autofree char *label = node_label (n, idx);

  if (g_hash_table_contains (im->seen, name))
    return fail (im, error, ESPALIER_ERROR_UNSUPPORTED,
                 _("node %s reads “%s”, an earlier result: the graph branches, and Espalier "
                   "imports only a chain of layers"), label, name);
  return fail (im, error, ESPALIER_ERROR_FORMAT,
               _("node %s reads “%s”, which is missing: no initializer, Constant node or "
                 "earlier node provides it"), label, name);
}

/* Input k of n as a constant, or NULL with an error (optional: NULL without one when
 * the input is absent). */
static const Const *
input_const (Import *im, const Onnx__NodeProto *n, gsize idx, gsize k, gboolean optional,
             GError **error)
{
  const char *name = node_input (n, k);
  const Const *c;

  if (name == NULL)
    {
      if (!optional)
        {
          g_autofree char *label = node_label (n, idx);

          fail (im, error, ESPALIER_ERROR_FORMAT, _("node %s lacks its input %llu"),
                label, (unsigned long long) k + 1);
        }
      return NULL;
    }
  c = g_hash_table_lookup (im->consts, name);
  if (c != NULL)
    return c;
  if (im->cur != NULL && strcmp (name, im->cur) == 0)
    {
      g_autofree char *label = node_label (n, idx);

      fail (im, error, ESPALIER_ERROR_UNSUPPORTED,
            _("node %s takes computed values as its input %llu, where Espalier needs a "
              "constant (an initializer)"), label, (unsigned long long) k + 1);
      return NULL;
    }
  fail_unknown_input (im, n, idx, name, error);
  return NULL;
}

/* Input 0 of n must be the activations. */
static gboolean
input_act (Import *im, const Onnx__NodeProto *n, gsize idx, GError **error)
{
  const char *name = node_input (n, 0);
  g_autofree char *label = node_label (n, idx);

  if (name == NULL)
    return fail (im, error, ESPALIER_ERROR_FORMAT, _("node %s has no input"), label);
  if (strcmp (name, im->cur) == 0)
    {
      if (im->quantized && strcmp (n->op_type, "DequantizeLinear") != 0)
        return fail (im, error, ESPALIER_ERROR_UNSUPPORTED,
                     _("node %s reads the quantized tensor “%s”: Espalier imports a "
                       "QuantizeLinear only when a DequantizeLinear follows it"), label, name);
      return TRUE;
    }
  if (g_hash_table_contains (im->consts, name))
    return fail (im, error, ESPALIER_ERROR_UNSUPPORTED,
                 _("node %s computes on constants only, which Espalier cannot import"), label);
  return fail_unknown_input (im, n, idx, name, error);
}

static const Onnx__AttributeProto *
attr (const Onnx__NodeProto *n, const char *name)
{
  for (gsize i = 0; i < n->n_attribute; i++)
    if (n->attribute[i]->name != NULL && strcmp (n->attribute[i]->name, name) == 0)
      return n->attribute[i];
  return NULL;
}

static gint64
attr_int (const Onnx__NodeProto *n, const char *name, gint64 def)
{
  const Onnx__AttributeProto *a = attr (n, name);

  return a != NULL && a->has_i ? a->i : def;
}

static float
attr_float (const Onnx__NodeProto *n, const char *name, float def)
{
  const Onnx__AttributeProto *a = attr (n, name);

  return a != NULL && a->has_f ? a->f : def;
}

/* The ints of an attribute; *count 0 when absent. */
static const int64_t *
attr_ints (const Onnx__NodeProto *n, const char *name, gsize *count)
{
  const Onnx__AttributeProto *a = attr (n, name);

  *count = a != NULL ? a->n_ints : 0;
  return a != NULL ? a->ints : NULL;
}

static gboolean
attr_string_is (const Onnx__NodeProto *n, const char *name, const char *value, const char *def)
{
  const Onnx__AttributeProto *a = attr (n, name);

  if (a == NULL || !a->has_s)
    return strcmp (value, def) == 0;
  return a->s.len == strlen (value) && memcmp (a->s.data, value, a->s.len) == 0;
}

/* An attribute with a value Espalier cannot run. */
static gboolean
fail_attr (Import *im, const Onnx__NodeProto *n, gsize idx, const char *what, GError **error)
{
  g_autofree char *label = node_label (n, idx);

  return fail (im, error, ESPALIER_ERROR_UNSUPPORTED, _("node %s: %s"), label, what);
}

/* Every ints attribute `name` (when present) has count entries equal to v. */
static gboolean
ints_all (const Onnx__NodeProto *n, const char *name, gsize count, gint64 v)
{
  gsize have;
  const int64_t *p = attr_ints (n, name, &have);

  if (have == 0)
    return TRUE;
  if (have != count)
    return FALSE;
  for (gsize i = 0; i < have; i++)
    if (p[i] != v)
      return FALSE;
  return TRUE;
}

/* A square value from an ints attribute of two entries (or def when absent); -1 when
 * the entries differ. */
static gint64
ints_square (const Onnx__NodeProto *n, const char *name, gint64 def)
{
  gsize have;
  const int64_t *p = attr_ints (n, name, &have);

  if (have == 0)
    return def;
  if (have != 2 || p[0] != p[1])
    return -1;
  return p[0];
}

/* ------------------------------------------------------------------------------------ */
/* Layers */

static void
push_layer (Import *im, const EsLayerSpec *spec, EsShape out)
{
  g_array_append_val (im->specs, *spec);
  im->shape = out;
  im->fresh = -1;
}

/* floats (taken over) as the next tensor of the model. */
static void
push_tensor (Import *im, float *data, gint64 n)
{
  g_ptr_array_add (im->tensors, data);
  g_array_append_val (im->sizes, n);
}

static void
set_cur (Import *im, const char *name)
{
  im->cur = name;
  g_hash_table_add (im->seen, (gpointer) name);
}

static gboolean
need_flat (Import *im, const Onnx__NodeProto *n, gsize idx, GError **error)
{
  char buf[64];
  g_autofree char *label = NULL;

  if (im->shape.rank == 1)
    return TRUE;
  label = node_label (n, idx);
  return fail (im, error, ESPALIER_ERROR_FORMAT,
               _("node %s needs flat input (batch, features), but its input has shape %s per "
                 "sample"), label, es_shape_format (&im->shape, buf, sizeof buf));
}

static gboolean
need_image (Import *im, const Onnx__NodeProto *n, gsize idx, GError **error)
{
  char buf[64];
  g_autofree char *label = NULL;

  if (im->shape.rank == 3)
    return TRUE;
  label = node_label (n, idx);
  return fail (im, error, ESPALIER_ERROR_FORMAT,
               _("node %s needs image input (batch, C, H, W), but its input has shape %s per "
                 "sample"), label, es_shape_format (&im->shape, buf, sizeof buf));
}

static gboolean
fail_shape (Import *im, const Onnx__NodeProto *n, gsize idx, const char *tensor, const Const *c,
            const char *need, GError **error)
{
  g_autofree char *label = node_label (n, idx);
  g_autofree char *shape = const_shape (c);

  return fail (im, error, ESPALIER_ERROR_FORMAT,
               _("node %s: “%s” has shape %s, but %s"), label, tensor, shape, need);
}

/* Gemm: y = alpha A B' + beta C with B' = B or B^T; A the activations (B, IN). */
static gboolean
import_gemm (Import *im, const Onnx__NodeProto *n, gsize idx, GError **error)
{
  const Const *w, *c = NULL;
  gboolean trans_b = attr_int (n, "transB", 0) != 0;
  float alpha = attr_float (n, "alpha", 1.0f), beta = attr_float (n, "beta", 1.0f);
  gint64 in, out;
  float *wt, *bias;
  EsLayerSpec spec = es_layer_spec_default (ES_LAYER_DENSE);
  EsShape shape = { .rank = 1 };
  g_autofree char *need = NULL;

  if (!input_act (im, n, idx, error) || !need_flat (im, n, idx, error))
    return FALSE;
  if (attr_int (n, "transA", 0) != 0)
    return fail_attr (im, n, idx, _("transA = 1 (a transposed input) is not supported"), error);
  if ((w = input_const (im, n, idx, 1, FALSE, error)) == NULL)
    return FALSE;
  if (node_input (n, 2) != NULL && (c = input_const (im, n, idx, 2, FALSE, error)) == NULL)
    return FALSE;
  in = im->shape.dims[0];
  if (w->rank != 2 || w->f == NULL || (trans_b ? w->dims[1] : w->dims[0]) != in)
    {
      need = g_strdup_printf (_("a float matrix with %lld input features is needed"),
                              (long long) in);
      return fail_shape (im, n, idx, node_input (n, 1), w, need, error);
    }
  out = trans_b ? w->dims[0] : w->dims[1];
  if (out < 1 || out > ESPALIER_ARCH_MAX_FIELD)
    return fail_shape (im, n, idx, node_input (n, 1), w, _("that is no layer size"), error);
  if (c != NULL && (c->f == NULL || (c->n != out && c->n != 1)))
    {
      need = g_strdup_printf (_("a float bias of %lld values is needed"), (long long) out);
      return fail_shape (im, n, idx, node_input (n, 2), c, need, error);
    }
  wt = g_new (float, out * in);   /* (OUT, IN) */
  bias = g_new0 (float, out);     /* (OUT) */
  for (gint64 o = 0; o < out; o++)
    {
      for (gint64 k = 0; k < in; k++)
        wt[o * in + k] = alpha * (trans_b ? w->f[o * in + k] : w->f[k * out + o]);
      if (c != NULL)
        bias[o] = beta * c->f[c->n == 1 ? 0 : o];
    }
  spec.units = (int) out;
  shape.dims[0] = (int) out;
  push_layer (im, &spec, shape);
  push_tensor (im, wt, out * in);
  push_tensor (im, bias, out);
  im->fresh = (int) im->specs->len - 1;
  im->bias_added = c != NULL;
  set_cur (im, n->output[0]);
  return TRUE;
}

/* MatMul of the activations (B, IN) by a constant (IN, OUT): a Dense with zero bias
 * until an Add sets it. */
static gboolean
import_matmul (Import *im, const Onnx__NodeProto *n, gsize idx, GError **error)
{
  const Const *w;
  gint64 in, out;
  float *wt;
  EsLayerSpec spec = es_layer_spec_default (ES_LAYER_DENSE);
  EsShape shape = { .rank = 1 };
  g_autofree char *need = NULL;

  if (!input_act (im, n, idx, error) || !need_flat (im, n, idx, error)
      || (w = input_const (im, n, idx, 1, FALSE, error)) == NULL)
    return FALSE;
  in = im->shape.dims[0];
  if (w->rank != 2 || w->f == NULL || w->dims[0] != in || w->dims[1] < 1
      || w->dims[1] > ESPALIER_ARCH_MAX_FIELD)
    {
      need = g_strdup_printf (_("a float matrix (%lld, outputs) is needed"), (long long) in);
      return fail_shape (im, n, idx, node_input (n, 1), w, need, error);
    }
  out = w->dims[1];
  wt = g_new (float, out * in);   /* (OUT, IN) */
  for (gint64 o = 0; o < out; o++)
    for (gint64 k = 0; k < in; k++)
      wt[o * in + k] = w->f[k * out + o];
  spec.units = (int) out;
  shape.dims[0] = (int) out;
  push_layer (im, &spec, shape);
  push_tensor (im, wt, out * in);
  push_tensor (im, g_new0 (float, out), out);
  im->fresh = (int) im->specs->len - 1;
  im->bias_added = FALSE;
  set_cur (im, n->output[0]);
  return TRUE;
}

/* Add of a constant right after a MatMul (or Gemm, Conv without bias): the bias. The
 * constant may be (OUT), (1, OUT) for Dense, (OC, 1, 1) or (1, OC, 1, 1) for Conv. */
static gboolean
import_add (Import *im, const Onnx__NodeProto *n, gsize idx, GError **error)
{
  const Const *c;
  gsize act = node_input (n, 1) != NULL && im->cur != NULL && strcmp (node_input (n, 1), im->cur) == 0;
  const EsLayerSpec *spec;
  gint64 ch;
  float *bias;

  if (im->fresh < 0 || im->bias_added)
    return fail_attr (im, n, idx, _("Espalier imports an Add only as the bias of the MatMul, "
                                    "Gemm or Conv just before it"), error);
  if (act == 1)
    {
      /* Add (bias, x): swap the roles. */
      const char *name = node_input (n, 0);

      if (name == NULL || (c = g_hash_table_lookup (im->consts, name)) == NULL)
        return name == NULL ? fail_attr (im, n, idx, _("an input is missing"), error)
                            : fail_unknown_input (im, n, idx, name, error);
    }
  else if (!input_act (im, n, idx, error) || (c = input_const (im, n, idx, 1, FALSE, error)) == NULL)
    return FALSE;
  spec = &g_array_index (im->specs, EsLayerSpec, im->fresh);
  ch = spec->kind == ES_LAYER_DENSE ? spec->units : spec->filters;
  if (c->f == NULL || c->n != ch
      || (spec->kind == ES_LAYER_DENSE && c->rank > 2)
      || (spec->kind == ES_LAYER_CONV2D && c->n > 1 && c->rank > 0
          && c->dims[c->rank - 1] != 1 && c->rank != 1))
    {
      g_autofree char *need = g_strdup_printf (_("a float bias of %lld values is needed"),
                                               (long long) ch);

      return fail_shape (im, n, idx, node_input (n, act == 1 ? 0 : 1), c, need, error);
    }
  bias = g_ptr_array_index (im->tensors, im->tensors->len - 1);
  for (gint64 o = 0; o < ch; o++)
    bias[o] += c->f[o];
  im->bias_added = TRUE;
  set_cur (im, n->output[0]);
  return TRUE;
}

/* Padding from auto_pad and pads: symmetric, the same on every side; -1 when not. */
static gint64
conv_padding (const Onnx__NodeProto *n, gint64 k, gint64 stride)
{
  gsize count;
  const int64_t *pads = attr_ints (n, "pads", &count);

  if (attr_string_is (n, "auto_pad", "VALID", "NOTSET"))
    return 0;
  if (attr_string_is (n, "auto_pad", "SAME_UPPER", "NOTSET")
      || attr_string_is (n, "auto_pad", "SAME_LOWER", "NOTSET"))
    return stride == 1 && k % 2 == 1 ? (k - 1) / 2 : -1;
  if (!attr_string_is (n, "auto_pad", "NOTSET", "NOTSET"))
    return -1;
  if (count == 0)
    return 0;
  if (count != 4)
    return -1;
  for (gsize i = 1; i < 4; i++)
    if (pads[i] != pads[0])
      return -1;
  return pads[0];
}

static gboolean
import_conv (Import *im, const Onnx__NodeProto *n, gsize idx, GError **error)
{
  const Const *w, *c = NULL;
  gint64 oc, ch, k, stride, pad;
  EsLayerSpec spec = es_layer_spec_default (ES_LAYER_CONV2D);
  EsShape shape = { .rank = 3 };
  float *wt, *bias;

  if (!input_act (im, n, idx, error) || !need_image (im, n, idx, error)
      || (w = input_const (im, n, idx, 1, FALSE, error)) == NULL)
    return FALSE;
  if (node_input (n, 2) != NULL && (c = input_const (im, n, idx, 2, FALSE, error)) == NULL)
    return FALSE;
  ch = im->shape.dims[0];
  if (w->rank != 4 || w->f == NULL || w->dims[1] != ch || w->dims[2] != w->dims[3]
      || w->dims[0] < 1 || w->dims[0] > ESPALIER_ARCH_MAX_FIELD || w->dims[2] < 1
      || w->dims[2] > 65536)
    {
      g_autofree char *need = g_strdup_printf (_("square float kernels over %lld channels "
                                                 "(OC, %lld, K, K) are needed"),
                                               (long long) ch, (long long) ch);

      return fail_shape (im, n, idx, node_input (n, 1), w, need, error);
    }
  oc = w->dims[0];
  k = w->dims[2];
  if (attr_int (n, "group", 1) != 1)
    return fail_attr (im, n, idx, _("grouped convolutions (group > 1) are not supported"), error);
  if (!ints_all (n, "dilations", 2, 1))
    return fail_attr (im, n, idx, _("dilated convolutions are not supported"), error);
  if (!ints_all (n, "kernel_shape", 2, k))
    return fail_attr (im, n, idx, _("kernel_shape does not match the weights"), error);
  stride = ints_square (n, "strides", 1);
  if (stride < 1 || stride > 65536)
    return fail_attr (im, n, idx, _("only equal strides along height and width are supported"),
                      error);
  pad = conv_padding (n, k, stride);
  if (pad < 0 || pad > 65536)
    return fail_attr (im, n, idx, _("only the same padding on every side is supported"), error);
  if (c != NULL && (c->f == NULL || c->n != oc))
    {
      g_autofree char *need = g_strdup_printf (_("a float bias of %lld values is needed"),
                                               (long long) oc);

      return fail_shape (im, n, idx, node_input (n, 2), c, need, error);
    }
  if (im->shape.dims[1] + 2 * pad < k || im->shape.dims[2] + 2 * pad < k)
    return fail_attr (im, n, idx, _("the kernel is larger than its padded input"), error);
  wt = g_memdup2 (w->f, (gsize) w->n * sizeof (float));   /* (OC, C, K, K) */
  bias = c != NULL ? g_memdup2 (c->f, (gsize) oc * sizeof (float)) : g_new0 (float, oc);
  spec.filters = (int) oc;
  spec.kernel = (int) k;
  spec.stride = (int) stride;
  spec.padding = (int) pad;
  shape.dims[0] = (int) oc;
  shape.dims[1] = ES_CONV_OUT (im->shape.dims[1], (int) k, (int) stride, (int) pad);
  shape.dims[2] = ES_CONV_OUT (im->shape.dims[2], (int) k, (int) stride, (int) pad);
  push_layer (im, &spec, shape);
  push_tensor (im, wt, w->n);
  push_tensor (im, bias, oc);
  im->fresh = (int) im->specs->len - 1;
  im->bias_added = c != NULL;
  set_cur (im, n->output[0]);
  return TRUE;
}

static gboolean
import_pool (Import *im, const Onnx__NodeProto *n, gsize idx, EsLayerKind kind, GError **error)
{
  EsLayerSpec spec = es_layer_spec_default (kind);
  EsShape shape = { .rank = 3 };
  gint64 k, stride;

  if (!input_act (im, n, idx, error) || !need_image (im, n, idx, error))
    return FALSE;
  if (n->n_output > 1 && n->output[1] != NULL && n->output[1][0] != '\0')
    return fail_attr (im, n, idx, _("the indices output is not supported"), error);
  k = ints_square (n, "kernel_shape", -1);
  if (k < 1 || k > 65536)
    return fail_attr (im, n, idx, _("only square pooling windows are supported"), error);
  stride = ints_square (n, "strides", 1);
  if (stride < 1 || stride > 65536)
    return fail_attr (im, n, idx, _("only equal strides along height and width are supported"),
                      error);
  if (!ints_all (n, "dilations", 2, 1))
    return fail_attr (im, n, idx, _("dilated pooling is not supported"), error);
  if (conv_padding (n, k, stride) != 0)
    return fail_attr (im, n, idx, _("padded pooling is not supported"), error);
  if (im->shape.dims[1] < k || im->shape.dims[2] < k)
    return fail_attr (im, n, idx, _("the window is larger than its input"), error);
  /* ceil_mode changes nothing when the windows fit exactly. */
  if (attr_int (n, "ceil_mode", 0) != 0
      && ((im->shape.dims[1] - k) % stride != 0 || (im->shape.dims[2] - k) % stride != 0))
    return fail_attr (im, n, idx, _("ceil_mode = 1 is not supported"), error);
  spec.kernel = (int) k;
  spec.stride = (int) stride;
  shape.dims[0] = im->shape.dims[0];
  shape.dims[1] = ES_CONV_OUT (im->shape.dims[1], (int) k, (int) stride, 0);
  shape.dims[2] = ES_CONV_OUT (im->shape.dims[2], (int) k, (int) stride, 0);
  push_layer (im, &spec, shape);
  set_cur (im, n->output[0]);
  return TRUE;
}

static gboolean
import_batchnorm (Import *im, const Onnx__NodeProto *n, gsize idx, GError **error)
{
  EsLayerSpec spec = es_layer_spec_default (ES_LAYER_BATCHNORM);
  const Const *p[4];
  gint64 ch = im->shape.dims[0];

  if (!input_act (im, n, idx, error))
    return FALSE;
  if (attr_int (n, "training_mode", 0) != 0 || (n->n_output > 1 && n->output[1][0] != '\0'))
    return fail_attr (im, n, idx, _("training mode is not supported"), error);
  for (int t = 0; t < 4; t++)
    {
      if ((p[t] = input_const (im, n, idx, 1 + t, FALSE, error)) == NULL)
        return FALSE;
      if (p[t]->f == NULL || p[t]->n != ch)
        {
          g_autofree char *need = g_strdup_printf (_("%lld float values (one per channel) are "
                                                     "needed"), (long long) ch);

          return fail_shape (im, n, idx, node_input (n, 1 + t), p[t], need, error);
        }
    }
  spec.eps = attr_float (n, "epsilon", 1e-5f);
  spec.momentum = 1.0f - attr_float (n, "momentum", 0.9f);
  if (!(spec.eps > 0.0f) || !(spec.momentum > 0.0f && spec.momentum <= 1.0f))
    return fail_attr (im, n, idx, _("epsilon must be above 0 and momentum below 1"), error);
  push_layer (im, &spec, im->shape);
  for (int t = 0; t < 4; t++)
    push_tensor (im, g_memdup2 (p[t]->f, (gsize) ch * sizeof (float)), ch);
  set_cur (im, n->output[0]);
  return TRUE;
}

/* Flatten (axis 1), or a Reshape that flattens ([0 or -1, -1 or F]) or, on the flat
 * input before any layer, gives it an image shape ([-1 or 0, C, H, W]). */
static gboolean
import_flatten (Import *im, const Onnx__NodeProto *n, gsize idx, gboolean reshape, GError **error)
{
  EsLayerSpec spec = es_layer_spec_default (ES_LAYER_FLATTEN);
  EsShape flat = { .rank = 1 };

  if (!input_act (im, n, idx, error))
    return FALSE;
  if (es_shape_size (&im->shape) > G_MAXINT32)
    return fail_attr (im, n, idx, _("its input is too large"), error);
  flat.dims[0] = (int) es_shape_size (&im->shape);
  if (!reshape)
    {
      gint64 axis = attr_int (n, "axis", 1);

      if (axis != 1 && axis != -(gint64) im->shape.rank)
        return fail_attr (im, n, idx, _("only axis = 1 (keeping the batch) is supported"), error);
    }
  else
    {
      const Const *s = input_const (im, n, idx, 1, FALSE, error);

      if (s == NULL)
        return FALSE;
      if (s->iv == NULL || s->rank != 1)
        return fail_shape (im, n, idx, node_input (n, 1), s, _("a 1-D integer shape is needed"),
                           error);
      if (s->n == 4 && im->specs->len == 0 && im->shape.rank == 1
          && (s->iv[0] == 0 || s->iv[0] == -1) && s->iv[1] > 0 && s->iv[2] > 0 && s->iv[3] > 0
          && s->iv[1] * s->iv[2] * s->iv[3] == im->shape.dims[0]
          && s->iv[1] <= ESPALIER_ARCH_MAX_FIELD && s->iv[2] <= ESPALIER_ARCH_MAX_FIELD)
        {
          /* The rows stay as they are in memory: only the input's shape changes. */
          im->input.rank = 3;
          for (int d = 0; d < 3; d++)
            im->input.dims[d] = (int) s->iv[1 + d];
          im->shape = im->input;
          set_cur (im, n->output[0]);
          return TRUE;
        }
      if (s->n != 2 || (s->iv[0] != 0 && s->iv[0] != -1)
          || (s->iv[1] != -1 && s->iv[1] != flat.dims[0]) || (s->iv[0] == -1 && s->iv[1] == -1))
        return fail_attr (im, n, idx, _("Espalier imports a Reshape only as a Flatten to "
                                        "(batch, features), or to (batch, C, H, W) at the input"),
                          error);
    }
  push_layer (im, &spec, flat);
  set_cur (im, n->output[0]);
  return TRUE;
}

static gboolean
import_softmax (Import *im, const Onnx__NodeProto *n, gsize idx, GError **error)
{
  EsLayerSpec spec = es_layer_spec_default (ES_LAYER_SOFTMAX);
  gint64 rank = 1 + im->shape.rank;
  gint64 axis = attr_int (n, "axis", im->opset >= 13 ? -1 : 1);

  if (!input_act (im, n, idx, error) || !need_flat (im, n, idx, error))
    return FALSE;
  if (axis < 0)
    axis += rank;
  if (axis != 1)
    return fail_attr (im, n, idx, _("only a Softmax over the features (axis 1) is supported"),
                      error);
  push_layer (im, &spec, im->shape);
  set_cur (im, n->output[0]);
  return TRUE;
}

static gboolean
import_activation (Import *im, const Onnx__NodeProto *n, gsize idx, EsLayerKind kind,
                   GError **error)
{
  EsLayerSpec spec = es_layer_spec_default (kind);

  if (!input_act (im, n, idx, error))
    return FALSE;
  if (kind == ES_LAYER_LEAKY_RELU)
    spec.alpha = attr_float (n, "alpha", 0.01f);
  push_layer (im, &spec, im->shape);
  set_cur (im, n->output[0]);
  return TRUE;
}

/* ------------------------------------------------------------------------------------ */
/* Quantization and constants */

/* DequantizeLinear of a constant: (x - zero) * scale, per tensor or along axis. */
static gboolean
fold_dequantize (Import *im, const Onnx__NodeProto *n, gsize idx, GError **error)
{
  const Const *x, *s, *z = NULL;
  gint64 axis = attr_int (n, "axis", 1);
  gint64 inner = 1, len = 1;
  Const *c;

  if ((x = input_const (im, n, idx, 0, FALSE, error)) == NULL
      || (s = input_const (im, n, idx, 1, FALSE, error)) == NULL)
    return FALSE;
  if (node_input (n, 2) != NULL && (z = input_const (im, n, idx, 2, FALSE, error)) == NULL)
    return FALSE;
  if (s->f == NULL || (z != NULL && z->n != s->n) || x->iv == NULL)
    return fail_attr (im, n, idx, _("integers, float scales and matching zero points are "
                                    "needed"), error);
  if (s->n > 1)
    {
      if (axis < 0)
        axis += x->rank;
      if (s->rank != 1 || axis < 0 || axis >= (gint64) x->rank || x->dims[axis] != s->n)
        return fail_shape (im, n, idx, node_input (n, 1), s,
                           _("one scale per tensor or per slice along the axis is needed"),
                           error);
      len = s->n;
      for (guint d = (guint) axis + 1; d < x->rank; d++)
        inner *= x->dims[d];
    }
  c = g_new0 (Const, 1);
  c->dtype = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  c->rank = x->rank;
  memcpy (c->dims, x->dims, sizeof c->dims);
  c->n = x->n;
  c->f = g_new (float, MAX (c->n, 1));
  for (gint64 k = 0; k < c->n; k++)
    {
      gint64 a = s->n > 1 ? (k / inner) % len : 0;
      double zero = z != NULL ? const_at (z, a) : 0.0;

      c->f[k] = (float) (((double) x->iv[k] - zero) * s->f[a]);
    }
  g_hash_table_replace (im->consts, g_strdup (n->output[0]), c);
  return TRUE;
}

static gboolean
import_constant (Import *im, const Onnx__NodeProto *n, gsize idx, GError **error)
{
  const Onnx__AttributeProto *a;
  Const *c = NULL;

  if ((a = attr (n, "value")) != NULL && a->t != NULL)
    c = const_from_tensor (im, a->t, n->output[0], error);
  else if ((a = attr (n, "value_float")) != NULL && a->has_f)
    {
      c = g_new0 (Const, 1);
      c->dtype = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
      c->n = 1;
      c->f = g_new (float, 1);
      c->f[0] = a->f;
    }
  else if ((a = attr (n, "value_int")) != NULL && a->has_i)
    {
      c = g_new0 (Const, 1);
      c->dtype = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
      c->n = 1;
      c->iv = g_new (gint64, 1);
      c->iv[0] = a->i;
    }
  else if ((a = attr (n, "value_ints")) != NULL || (a = attr (n, "value_floats")) != NULL)
    {
      gboolean ints = strcmp (a->name, "value_ints") == 0;

      c = g_new0 (Const, 1);
      c->dtype = ints ? ONNX__TENSOR_PROTO__DATA_TYPE__INT64 : ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
      c->rank = 1;
      c->n = c->dims[0] = (gint64) (ints ? a->n_ints : a->n_floats);
      if (ints)
        c->iv = g_memdup2 (a->ints, MAX (a->n_ints, 1) * sizeof (gint64));
      else
        c->f = g_memdup2 (a->floats, MAX (a->n_floats, 1) * sizeof (float));
    }
  else
    return fail_attr (im, n, idx, _("only tensor, float and integer constants are supported"),
                      error);
  if (c == NULL)
    return FALSE;
  g_hash_table_replace (im->consts, g_strdup (n->output[0]), c);
  return TRUE;
}

/* Clip of the activations: a ReLU when it clips at 0 only. */
static gboolean
import_clip (Import *im, const Onnx__NodeProto *n, gsize idx, GError **error)
{
  const Const *lo = NULL, *hi = NULL;
  double vlo, vhi;

  if (!input_act (im, n, idx, error))
    return FALSE;
  if (im->opset >= 11)
    {
      if (node_input (n, 1) != NULL && (lo = input_const (im, n, idx, 1, FALSE, error)) == NULL)
        return FALSE;
      if (node_input (n, 2) != NULL && (hi = input_const (im, n, idx, 2, FALSE, error)) == NULL)
        return FALSE;
      vlo = lo != NULL && lo->n == 1 ? const_at (lo, 0) : -INFINITY;
      vhi = hi != NULL && hi->n == 1 ? const_at (hi, 0) : INFINITY;
    }
  else
    {
      vlo = attr_float (n, "min", -INFINITY);
      vhi = attr_float (n, "max", INFINITY);
    }
  if (vlo != 0.0 || !(vhi > 1e30))
    return fail_attr (im, n, idx, _("Espalier imports a Clip only as a ReLU (min 0, no max)"),
                      error);
  return import_activation (im, n, idx, ES_LAYER_RELU, error);
}

/* ------------------------------------------------------------------------------------ */
/* The graph */

static gboolean
import_node (Import *im, const Onnx__GraphProto *g, gsize idx, GError **error)
{
  const Onnx__NodeProto *n = g->node[idx];
  const char *op = n->op_type != NULL ? n->op_type : "";
  g_autofree char *label = node_label (n, idx);

  if (n->n_output < 1 || n->output[0] == NULL || n->output[0][0] == '\0')
    return fail (im, error, ESPALIER_ERROR_FORMAT, _("node %s has no output"), label);
  if (n->domain != NULL && n->domain[0] != '\0' && strcmp (n->domain, "ai.onnx") != 0)
    return fail (im, error, ESPALIER_ERROR_UNSUPPORTED,
                 _("node %s uses the operator %s of the domain “%s”, which Espalier cannot "
                   "import"), label, op, n->domain);
  if (strcmp (op, "Constant") == 0)
    return import_constant (im, n, idx, error);
  /* DequantizeLinear of a constant is folded; of the activations it ends a Q/DQ pair. */
  if (strcmp (op, "DequantizeLinear") == 0)
    {
      const char *x = node_input (n, 0);

      im->dequantized = TRUE;
      if (x != NULL && g_hash_table_contains (im->consts, x))
        return fold_dequantize (im, n, idx, error);
      if (!input_act (im, n, idx, error))
        return FALSE;
      if (!im->quantized)
        return fail_attr (im, n, idx, _("a DequantizeLinear of float values is not supported"),
                          error);
      im->quantized = FALSE;
      set_cur (im, n->output[0]);
      return TRUE;
    }
  if (strcmp (op, "QuantizeLinear") == 0)
    {
      im->dequantized = TRUE;
      if (!input_act (im, n, idx, error))
        return FALSE;
      /* Check its scale and zero point are there, then pass the values through. */
      if (input_const (im, n, idx, 1, FALSE, error) == NULL
          || (node_input (n, 2) != NULL && input_const (im, n, idx, 2, FALSE, error) == NULL))
        return FALSE;
      im->quantized = TRUE;
      set_cur (im, n->output[0]);
      return TRUE;
    }
  if (strcmp (op, "Identity") == 0 || strcmp (op, "Dropout") == 0)
    {
      if (!input_act (im, n, idx, error))
        return FALSE;
      set_cur (im, n->output[0]);
      return TRUE;
    }
  if (strcmp (op, "Gemm") == 0)
    return import_gemm (im, n, idx, error);
  if (strcmp (op, "MatMul") == 0)
    return import_matmul (im, n, idx, error);
  if (strcmp (op, "Add") == 0)
    return import_add (im, n, idx, error);
  if (strcmp (op, "Conv") == 0)
    return import_conv (im, n, idx, error);
  if (strcmp (op, "MaxPool") == 0)
    return import_pool (im, n, idx, ES_LAYER_MAXPOOL2D, error);
  if (strcmp (op, "AveragePool") == 0)
    return import_pool (im, n, idx, ES_LAYER_AVGPOOL2D, error);
  if (strcmp (op, "BatchNormalization") == 0)
    return import_batchnorm (im, n, idx, error);
  if (strcmp (op, "Flatten") == 0)
    return import_flatten (im, n, idx, FALSE, error);
  if (strcmp (op, "Reshape") == 0)
    return import_flatten (im, n, idx, TRUE, error);
  if (strcmp (op, "Softmax") == 0)
    return import_softmax (im, n, idx, error);
  if (strcmp (op, "Relu") == 0)
    return import_activation (im, n, idx, ES_LAYER_RELU, error);
  if (strcmp (op, "LeakyRelu") == 0)
    return import_activation (im, n, idx, ES_LAYER_LEAKY_RELU, error);
  if (strcmp (op, "Sigmoid") == 0)
    return import_activation (im, n, idx, ES_LAYER_SIGMOID, error);
  if (strcmp (op, "Tanh") == 0)
    return import_activation (im, n, idx, ES_LAYER_TANH, error);
  if (strcmp (op, "Clip") == 0)
    return import_clip (im, n, idx, error);
  return fail (im, error, ESPALIER_ERROR_UNSUPPORTED,
               _("node %s uses the operator %s, which Espalier cannot import (it reads Gemm, "
                 "MatMul, Add, Conv, MaxPool, AveragePool, BatchNormalization, Flatten, "
                 "Reshape, Relu, LeakyRelu, Sigmoid, Tanh, Softmax, Clip, Dropout, Identity, "
                 "Constant, QuantizeLinear and DequantizeLinear)"), label, op);
}

/* The default domain's opset, checked against what Espalier reads. */
static gboolean
read_opset (Import *im, const Onnx__ModelProto *m, GError **error)
{
  im->opset = -1;
  for (gsize i = 0; i < m->n_opset_import; i++)
    {
      const Onnx__OperatorSetIdProto *o = m->opset_import[i];

      if (o->domain == NULL || o->domain[0] == '\0' || strcmp (o->domain, "ai.onnx") == 0)
        im->opset = o->has_version ? o->version : 0;
    }
  if (im->opset < 0)
    return fail (im, error, ESPALIER_ERROR_FORMAT,
                 _("the model declares no opset for the default ONNX domain"));
  if (im->opset < ESPALIER_ONNX_OPSET_MIN || im->opset > ESPALIER_ONNX_OPSET_MAX)
    return fail (im, error, ESPALIER_ERROR_FORMAT,
                 _("the model uses ONNX opset %lld; Espalier reads opsets %d to %d"),
                 (long long) im->opset, ESPALIER_ONNX_OPSET_MIN, ESPALIER_ONNX_OPSET_MAX);
  return TRUE;
}

/* Static dims of a value's tensor type after the batch: 0 when unknown. Returns the
 * rank (with the batch), or -1 when vi is not a float tensor. */
static int
value_dims (const Onnx__ValueInfoProto *vi, gint64 dims[8], gboolean *known)
{
  const Onnx__TypeProto *tp = vi->type;
  const Onnx__TensorShapeProto *sp;

  *known = FALSE;
  if (tp == NULL || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || tp->tensor_type == NULL
      || tp->tensor_type->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
    return -1;
  sp = tp->tensor_type->shape;
  if (sp == NULL || sp->n_dim > 8)
    return 0;
  *known = TRUE;
  for (gsize d = 0; d < sp->n_dim; d++)
    {
      const Onnx__TensorShapeProto__Dimension *dim = sp->dim[d];

      dims[d] = dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE
                ? dim->dim_value : 0;
      if (d > 0 && dims[d] <= 0)
        *known = FALSE;
    }
  return (int) sp->n_dim;
}

static gboolean
read_input (Import *im, const Onnx__GraphProto *g, GError **error)
{
  const Onnx__ValueInfoProto *in = NULL;
  gint64 dims[8];
  gboolean known;
  int rank;

  for (gsize i = 0; i < g->n_input; i++)
    {
      if (g->input[i]->name == NULL || g_hash_table_contains (im->consts, g->input[i]->name))
        continue;   /* old files list initializers as inputs too */
      if (in != NULL)
        return fail (im, error, ESPALIER_ERROR_UNSUPPORTED,
                     _("the graph has several inputs (“%s”, “%s”); Espalier imports models "
                       "with one"), in->name, g->input[i]->name);
      in = g->input[i];
    }
  if (in == NULL)
    return fail (im, error, ESPALIER_ERROR_FORMAT, _("the graph has no input"));
  rank = value_dims (in, dims, &known);
  if (rank < 0)
    return fail (im, error, ESPALIER_ERROR_UNSUPPORTED,
                 _("the input “%s” is not a float tensor"), in->name);
  if ((rank != 2 && rank != 4) || !known)
    return fail (im, error, ESPALIER_ERROR_UNSUPPORTED,
                 _("the input “%s” must have a known shape (batch, features) or (batch, C, H, W)"),
                 in->name);
  im->input.rank = rank - 1;
  for (int d = 1; d < rank; d++)
    {
      if (dims[d] > ESPALIER_ARCH_MAX_FIELD)
        return fail (im, error, ESPALIER_ERROR_FORMAT, _("the input “%s” is too large"), in->name);
      im->input.dims[d - 1] = (int) dims[d];
    }
  if (es_shape_size (&im->input) > G_MAXINT32)
    return fail (im, error, ESPALIER_ERROR_FORMAT, _("the input “%s” is too large"), in->name);
  im->shape = im->input;
  set_cur (im, in->name);
  return TRUE;
}

/* The graph's one output must be the activations at the end, with the shape they have. */
static gboolean
check_output (Import *im, const Onnx__GraphProto *g, GError **error)
{
  gint64 dims[8];
  gboolean known;
  int rank;

  if (g->n_output != 1)
    return fail (im, error, ESPALIER_ERROR_UNSUPPORTED,
                 _("the graph has %llu outputs; Espalier imports models with one"),
                 (unsigned long long) g->n_output);
  if (im->quantized || g->output[0]->name == NULL || strcmp (g->output[0]->name, im->cur) != 0)
    return fail (im, error, ESPALIER_ERROR_UNSUPPORTED,
                 _("the graph's output “%s” is not the end of its chain of layers (“%s”)"),
                 g->output[0]->name ? g->output[0]->name : "", im->cur);
  rank = value_dims (g->output[0], dims, &known);
  if (rank > 0 && known)
    {
      gint64 size = 1;

      for (int d = 1; d < rank; d++)
        size *= dims[d];
      if (size != es_shape_size (&im->shape))
        {
          char buf[64];

          return fail (im, error, ESPALIER_ERROR_FORMAT,
                       _("the graph declares %lld output values per sample, but its layers "
                         "produce shape %s"), (long long) size,
                       es_shape_format (&im->shape, buf, sizeof buf));
        }
    }
  return TRUE;
}

static void
read_metadata (const Onnx__ModelProto *m, const EsModel *model, Import *im, EspalierOnnxMeta *meta)
{
  const char *mean = NULL, *std = NULL, *scale = NULL, *shift = NULL;
  int n = es_model_n_layers (model);

  espalier_onnx_meta_init (meta);
  meta->producer = g_strdup (m->producer_name);
  meta->version = g_strdup (m->producer_version);
  meta->description = g_strdup (m->doc_string);
  meta->model_name = g_strdup (m->graph->name);
  meta->opset = im->opset;
  meta->probabilities = n > 0 && es_model_layer (model, n - 1)->spec.kind == ES_LAYER_SOFTMAX;
  for (gsize i = 0; i < m->n_metadata_props; i++)
    {
      const char *k = m->metadata_props[i]->key, *v = m->metadata_props[i]->value;

      if (k == NULL || v == NULL)
        continue;
      if (strcmp (k, ESPALIER_ONNX_META_CLASS_NAMES) == 0)
        {
          g_autoptr(JsonParser) parser = json_parser_new ();
          JsonNode *root;

          if (json_parser_load_from_data (parser, v, -1, NULL)
              && (root = json_parser_get_root (parser)) != NULL && JSON_NODE_HOLDS_ARRAY (root))
            {
              JsonArray *a = json_node_get_array (root);
              GPtrArray *names = g_ptr_array_new ();

              for (guint j = 0; j < json_array_get_length (a); j++)
                {
                  JsonNode *e = json_array_get_element (a, j);

                  if (JSON_NODE_HOLDS_VALUE (e) && json_node_get_value_type (e) == G_TYPE_STRING)
                    g_ptr_array_add (names, g_strdup (json_node_get_string (e)));
                  else
                    g_ptr_array_add (names, g_strdup_printf ("%u", j));
                }
              g_ptr_array_add (names, NULL);
              g_strfreev (meta->class_names);
              meta->class_names = (char **) g_ptr_array_free (names, FALSE);
            }
        }
      else if (strcmp (k, ESPALIER_ONNX_META_INPUT_SCALE) == 0)
        scale = v;
      else if (strcmp (k, ESPALIER_ONNX_META_INPUT_SHIFT) == 0)
        shift = v;
      else if (strcmp (k, ESPALIER_ONNX_META_INPUT_MEAN) == 0)
        mean = v;
      else if (strcmp (k, ESPALIER_ONNX_META_INPUT_STD) == 0)
        std = v;
      else if (strcmp (k, ESPALIER_ONNX_META_PREPROCESSING) == 0)
        {
          g_free (meta->preprocessing);
          meta->preprocessing = g_strdup (v);
        }
      else if (strcmp (k, ESPALIER_ONNX_META_QUANTIZATION) == 0)
        {
          g_free (meta->quantization);
          meta->quantization = g_strdup (v);
        }
    }
  if (meta->quantization == NULL && im->dequantized)
    meta->quantization = g_strdup ("int8-static");
  if (scale != NULL && shift != NULL)
    {
      char *e1, *e2;
      double s = g_ascii_strtod (scale, &e1), t = g_ascii_strtod (shift, &e2);

      if (*e1 == '\0' && *e2 == '\0' && isfinite (s) && isfinite (t) && s != 0.0)
        {
          meta->input_scale = s;
          meta->input_shift = t;
          return;
        }
    }
  if (mean != NULL && std != NULL)
    {
      char *e1, *e2;
      double mu = g_ascii_strtod (mean, &e1), sd = g_ascii_strtod (std, &e2);

      if (*e1 == '\0' && *e2 == '\0' && isfinite (mu) && isfinite (sd) && sd != 0.0)
        {
          meta->input_scale = 1.0 / sd;
          meta->input_shift = -mu / sd;
        }
    }
}

static EsModel *
build_model (Import *im, GError **error)
{
  EsError es = { 0 };
  EsModel *model;
  int n = (int) im->specs->len;

  if (n == 0)
    {
      fail (im, error, ESPALIER_ERROR_UNSUPPORTED, _("the graph has no layers"));
      return NULL;
    }
  if (espalier_arch_check_size (&im->input, (const EsLayerSpec *) im->specs->data, n, NULL) >= 0)
    {
      fail (im, error, ESPALIER_ERROR_FORMAT, _("the model is too large"));
      return NULL;
    }
  model = es_model_new (&im->input, (const EsLayerSpec *) im->specs->data, n, &es);
  if (model == NULL)
    {
      g_autofree char *prefix = g_strdup_printf ("%s", im->path);

      espalier_error_from_es (error, &es, prefix);
      if (error != NULL && *error != NULL && (*error)->domain == ESPALIER_ERROR
          && (*error)->code == ESPALIER_ERROR_SHAPE)
        (*error)->code = ESPALIER_ERROR_FORMAT;
      return NULL;
    }
  g_assert ((guint) es_model_n_tensors (model) == im->tensors->len);
  for (int t = 0; t < es_model_n_tensors (model); t++)
    {
      const EsTensorInfo *ti = es_model_tensor (model, t);

      g_assert (ti->size == g_array_index (im->sizes, gint64, t));
      memcpy (es_model_tensor_data (model, t), g_ptr_array_index (im->tensors, t),
              (gsize) ti->size * sizeof (float));
    }
  return model;
}

EsModel *
espalier_onnx_import (const char *path, EspalierOnnxMeta *meta_out, GError **error)
{
  Import im = { 0 };
  Onnx__ModelProto *m;
  const Onnx__GraphProto *g;
  EsModel *model = NULL;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  m = espalier_onnx_read_proto (path, NULL, error);
  if (m == NULL)
    return NULL;
  im.path = path;
  im.consts = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, const_free);
  im.seen = g_hash_table_new (g_str_hash, g_str_equal);
  im.specs = g_array_new (FALSE, TRUE, sizeof (EsLayerSpec));
  im.tensors = g_ptr_array_new_with_free_func (g_free);
  im.sizes = g_array_new (FALSE, FALSE, sizeof (gint64));
  im.fresh = -1;

  g = m->graph;
  if (g == NULL)
    {
      fail (&im, error, ESPALIER_ERROR_FORMAT, _("the file holds no graph"));
      goto out;
    }
  if (!read_opset (&im, m, error))
    goto out;
  for (gsize i = 0; i < g->n_initializer; i++)
    {
      const Onnx__TensorProto *t = g->initializer[i];
      Const *c;

      if (t->name == NULL || t->name[0] == '\0')
        {
          fail (&im, error, ESPALIER_ERROR_FORMAT, _("initializer %llu has no name"),
                (unsigned long long) i + 1);
          goto out;
        }
      if ((c = const_from_tensor (&im, t, t->name, error)) == NULL)
        goto out;
      g_hash_table_replace (im.consts, g_strdup (t->name), c);
    }
  if (g->n_sparse_initializer > 0)
    {
      fail (&im, error, ESPALIER_ERROR_UNSUPPORTED, _("sparse initializers are not supported"));
      goto out;
    }
  if (!read_input (&im, g, error))
    goto out;
  for (gsize i = 0; i < g->n_node; i++)
    if (!import_node (&im, g, i, error))
      goto out;
  if (!check_output (&im, g, error))
    goto out;
  model = build_model (&im, error);
  if (model != NULL && meta_out != NULL)
    {
      espalier_onnx_meta_clear (meta_out);
      read_metadata (m, model, &im, meta_out);
    }

out:
  g_hash_table_unref (im.consts);
  g_hash_table_unref (im.seen);
  g_array_unref (im.specs);
  g_ptr_array_unref (im.tensors);
  g_array_unref (im.sizes);
  onnx__model_proto__free_unpacked (m, NULL);
  return model;
}
