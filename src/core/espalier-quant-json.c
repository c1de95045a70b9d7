/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-quant-json.c: a quantization in the JSON of model and project files, written
 * and read back with every field validated (see espalier-quant-json-private.h). The
 * int8 codes and scales are stored by the callers. */
#include "config.h"

#include "espalier-quant-json-private.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include <glib/gi18n-lib.h>

static gboolean
is_weight_layer (const EsModel *model, int layer)
{
  EsLayerKind kind = es_model_layer (model, layer)->spec.kind;

  return kind == ES_LAYER_DENSE || kind == ES_LAYER_CONV2D;
}

static gboolean
is_int8_mode (EsQuantMode mode)
{
  return mode == ES_QUANT_INT8_STATIC || mode == ES_QUANT_INT8_DYNAMIC;
}

gboolean
espalier_quant_is_stored (const EsQuant *q)
{
  return q != NULL && q->mode != ES_QUANT_FP32;
}

gboolean
espalier_quant_layer_is_int8 (const EsQuant *q, int layer)
{
  return q != NULL && is_int8_mode (q->mode) && layer < q->n_layers && q->layers[layer].int8;
}

gboolean
espalier_quant_tensor_is_16 (const EsQuant *q, const EsModel *model, int t)
{
  return q != NULL && (q->mode == ES_QUANT_FP16 || q->mode == ES_QUANT_BF16)
         && es_model_tensor (model, t)->trainable;
}

void
espalier_quant_layer_shape (const EsModel *model, int layer, int *rows, int *cols)
{
  const EsTensorInfo *w = es_model_tensor (model, es_model_layer (model, layer)->first_tensor);

  *rows = (int) w->dims[0];
  *cols = (int) (w->size / w->dims[0]);
}

/* ------------------------------------------------------------------------------------ */
/* Writing */

void
espalier_json_add_quant (JsonBuilder *b, const char *key, const EsQuant *q,
                         void (*extra) (JsonBuilder *b, gpointer data), gpointer data)
{
  json_builder_set_member_name (b, key);
  if (!espalier_quant_is_stored (q))
    {
      json_builder_add_null_value (b);
      return;
    }
  json_builder_begin_object (b);
  espalier_json_add_string (b, "mode", es_quant_mode_name (q->mode));
  espalier_json_add_bool (b, "reduce_range", q->reduce_range);
  json_builder_set_member_name (b, "layers");
  json_builder_begin_array (b);
  for (int i = 0; i < q->n_layers; i++)
    {
      const EsQuantLayer *l = &q->layers[i];

      json_builder_begin_object (b);
      espalier_json_add_bool (b, "int8", l->int8);
      if (l->int8 && q->mode == ES_QUANT_INT8_STATIC)
        {
          espalier_json_add_float (b, "in_lo", l->in_lo);
          espalier_json_add_float (b, "in_hi", l->in_hi);
          espalier_json_add_float (b, "in_scale", l->in_scale);
          espalier_json_add_int (b, "in_zero", l->in_zero);
        }
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
  if (extra != NULL)
    extra (b, data);
  json_builder_end_object (b);
}

/* ------------------------------------------------------------------------------------ */
/* Reading */

static gboolean
read_layer (EspalierReader *r, JsonNode *node, const char *where, EsQuant *q,
            const EsModel *model, int i)
{
  EsQuantLayer *l = &q->layers[i];
  int qmax = q->reduce_range ? 127 : 255;
  gboolean int8 = FALSE;
  JsonObject *obj;
  EsError es = { 0 };
  float scale;
  int32_t zero;
  int rows, cols;

  if (!JSON_NODE_HOLDS_OBJECT (node))
    return espalier_reader_fail (r, _("“%s” is not an object"), where);
  obj = json_node_get_object (node);
  if (!espalier_reader_bool (r, obj, where, "int8", &int8) || !int8)
    return r->error == NULL;
  if (!is_int8_mode (q->mode))
    return espalier_reader_fail (r, _("“%s.int8” is true, but the mode %s has no int8 layers"),
                                 where, es_quant_mode_name (q->mode));
  if (!is_weight_layer (model, i))
    return espalier_reader_fail (r, _("“%s.int8” is true, but layer %d is %s, not Dense or "
                                      "Conv2D"), where, i,
                                 es_layer_kind_title (es_model_layer (model, i)->spec.kind));
  espalier_quant_layer_shape (model, i, &rows, &cols);
  if (!es_quant_layer_alloc (l, rows, cols, &es))
    return espalier_reader_fail (r, _("“%s”: %s"), where, es.message);
  l->int8 = true;
  if (q->mode != ES_QUANT_INT8_STATIC)
    return TRUE;

  /* A static layer's input range, and the scale and zero point it gives. */
  espalier_reader_float (r, obj, where, "in_lo", -FLT_MAX, FLT_MAX, &l->in_lo);
  espalier_reader_float (r, obj, where, "in_hi", -FLT_MAX, FLT_MAX, &l->in_hi);
  if (r->error == NULL && !(l->in_lo <= l->in_hi))
    return espalier_reader_fail (r, _("“%s.in_lo” is above “%s.in_hi”"), where, where);
  if (espalier_reader_float (r, obj, where, "in_scale", 0.0, FLT_MAX, &l->in_scale)
      && !(l->in_scale > 0.0f))
    return espalier_reader_fail (r, _("“%s.in_scale” is 0; a scale is above 0"), where);
  if (!espalier_reader_int32 (r, obj, where, "in_zero", 0, qmax, &l->in_zero))
    return FALSE;
  es_quant_act_params (l->in_lo, l->in_hi, qmax, &scale, &zero);
  if (scale != l->in_scale || zero != l->in_zero)
    return espalier_reader_fail (r, _("“%s.in_scale” and “%s.in_zero” are not those of the range "
                                      "%g..%g (%g and %d)"), where, where, (double) l->in_lo,
                                 (double) l->in_hi, (double) scale, (int) zero);
  l->calibrated = true;
  return TRUE;
}

EsQuant *
espalier_reader_quant (EspalierReader *r, JsonObject *obj, const char *where, const char *key,
                       const EsModel *model, JsonObject **qobj)
{
  g_autofree char *path = espalier_reader_path (where, key);
  g_autofree char *mode_name = NULL;
  JsonNode *node = espalier_reader_member (r, obj, where, key);
  JsonObject *o;
  JsonArray *layers;
  EsQuantMode mode;
  EsQuant *q;
  gboolean reduce = FALSE;
  int n = es_model_n_layers (model);

  if (qobj != NULL)
    *qobj = NULL;
  if (node == NULL || JSON_NODE_HOLDS_NULL (node))
    return NULL;
  if (!JSON_NODE_HOLDS_OBJECT (node))
    {
      espalier_reader_wrong_type (r, where, key, _("an object or null"));
      return NULL;
    }
  o = json_node_get_object (node);
  mode_name = espalier_reader_string (r, o, path, "mode", FALSE);
  if (mode_name == NULL)
    return NULL;
  if (!es_quant_mode_from_name (mode_name, &mode))
    {
      espalier_reader_fail (r, _("“%s.mode” is “%s”, not int8-static, int8-dynamic, fp16 or "
                                 "bf16"), path, mode_name);
      return NULL;
    }
  if (mode == ES_QUANT_FP32)
    {
      espalier_reader_fail (r, _("“%s.mode” is fp32; float weights have no quantization (null)"),
                            path);
      return NULL;
    }
  if (!espalier_reader_bool (r, o, path, "reduce_range", &reduce))
    return NULL;
  layers = espalier_reader_array (r, o, path, "layers", FALSE);
  if (layers == NULL)
    return NULL;
  if (json_array_get_length (layers) != (guint) n)
    {
      espalier_reader_fail (r, _("“%s.layers” has %u entries; the model has %d layers"), path,
                            json_array_get_length (layers), n);
      return NULL;
    }
  q = es_quant_new_empty (mode, n);
  if (q == NULL)
    {
      espalier_reader_fail (r, _("“%s”: out of memory"), path);
      return NULL;
    }
  q->reduce_range = reduce;
  for (int i = 0; i < n; i++)
    {
      g_autofree char *lw = g_strdup_printf ("%s.layers[%d]", path, i);

      if (!read_layer (r, json_array_get_element (layers, (guint) i), lw, q, model, i))
        {
          es_quant_free (q);
          return NULL;
        }
    }
  if (qobj != NULL)
    *qobj = o;
  return q;
}

gboolean
espalier_quant_check_weights (EspalierReader *r, const EsQuant *q, const EsModel *model,
                              const char *prefix)
{
  EsError es = { 0 };

  for (int i = 0; i < q->n_layers; i++)
    {
      const EsQuantLayer *l = &q->layers[i];

      if (!espalier_quant_layer_is_int8 (q, i))
        continue;
      for (int o = 0; o < l->rows; o++)
        if (!(isfinite (l->w_scale[o]) && l->w_scale[o] > 0.0f))
          return espalier_reader_fail (r, _("“%slayers.%d.weight_scale” [%d] is %g; a scale is "
                                            "finite and above 0"), prefix, i, o,
                                       (double) l->w_scale[o]);
      for (gint64 k = 0; k < (gint64) l->rows * l->cols; k++)
        if (l->w_q[k] < -127)
          return espalier_reader_fail (r, _("“%slayers.%d.weight” [%lld] is %d; int8 weights "
                                            "are -127..127"), prefix, i, (long long) k,
                                       (int) l->w_q[k]);
    }
  if (!es_quant_check (q, model, &es))
    return espalier_reader_fail (r, _("the quantization does not fit the model: %s"), es.message);
  if (q->mode == ES_QUANT_INT8_STATIC && !es_quant_is_ready (q, &es))
    return espalier_reader_fail (r, _("the quantization is not ready: %s"), es.message);
  return TRUE;
}
