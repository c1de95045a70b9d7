/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-quant-json-private.h: a quantization (EsQuant) in JSON, shared by the model
 * file (espalier-model-file.c, weights in the safetensors file) and the project file
 * (espalier-project.c, weights in base64): the mode, reduce_range and each layer's
 * int8 flag and static input range, and the validation of what a file holds. The
 * weights themselves (int8 codes and per-channel scales) are stored by each file in its
 * own way. Internal to core.
 *
 *   "quantization": { "mode": "int8-static", "reduce_range": false,
 *                     "layers": [ { "int8": true, "in_lo": -1.5, "in_hi": 3.25,
 *                                   "in_scale": 0.0186, "in_zero": 81 },
 *                                 { "int8": false }, ... ] }      (or null: float)
 *
 * Static int8 layers carry in_lo, in_hi, in_scale and in_zero; dynamic ones take their
 * range from each batch and carry none. */
#pragma once

#include <json-glib/json-glib.h>

#include "es-model.h"
#include "es-quant.h"
#include "espalier-json-private.h"

G_BEGIN_DECLS

/* Whether q stores anything (NULL and ES_QUANT_FP32 do not: the weights are float). */
gboolean  espalier_quant_is_stored     (const EsQuant *q);
/* Whether layer i's weight tensor is stored as int8 (I8 codes + F32 scales). */
gboolean  espalier_quant_layer_is_int8 (const EsQuant *q, int layer);
/* Whether tensor t is stored as 16-bit floats: every trainable tensor of an fp16 or
 * bf16 quantization (es_quant_dequantized_model rounds them all and
 * es_quant_weight_bytes counts them at 2 bytes); buffers stay F32. */
gboolean  espalier_quant_tensor_is_16  (const EsQuant *q, const EsModel *model, int t);
/* Rows and row length of layer i's weight (Dense (OUT, IN), Conv2D (OC, C*K*K)). */
void      espalier_quant_layer_shape   (const EsModel *model, int layer, int *rows, int *cols);

/* A member `key` holding q's object, or null when q stores nothing. extra (may be
 * NULL) adds more members to the object: called with the builder inside it. */
void      espalier_json_add_quant      (JsonBuilder   *b,
                                        const char    *key,
                                        const EsQuant *q,
                                        void         (*extra) (JsonBuilder *b, gpointer data),
                                        gpointer       data);

/* Read obj.key for model: NULL without an error for null, else an EsQuant whose int8
 * layers are allocated (es_quant_layer_alloc) with their scales and codes still to be
 * filled by the caller; every field is checked (mode, flags only on Dense/Conv2D
 * layers of an int8 mode, ranges finite with lo <= hi, scale finite and > 0, zero point
 * within the codes, scale and zero point those of the range). *qobj (may be NULL)
 * receives the object for members the caller adds. */
EsQuant  *espalier_reader_quant        (EspalierReader *r,
                                        JsonObject     *obj,
                                        const char     *where,
                                        const char     *key,
                                        const EsModel  *model,
                                        JsonObject    **qobj);
/* The weights of q once filled: every scale finite and > 0 (“<prefix>layers.N.
 * weight_scale”), every code in -127..127 (“<prefix>layers.N.weight”), then
 * es_quant_check against model and, for static int8, es_quant_is_ready. */
gboolean  espalier_quant_check_weights (EspalierReader *r,
                                        const EsQuant  *q,
                                        const EsModel  *model,
                                        const char     *prefix);

G_END_DECLS
