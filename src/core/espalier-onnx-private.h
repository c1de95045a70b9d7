/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-onnx-private.h: what ONNX export (espalier-onnx-export.c), import
 * (espalier-onnx-import.c) and inspection (espalier-onnx.c) share: the protobuf-c
 * messages generated from onnx.proto at build time, reading a file into them, and
 * metadata keys. Internal to core. */
#pragma once

#include <glib.h>

#include "espalier-onnx.h"
#include "onnx.pb-c.h"

G_BEGIN_DECLS

/* ONNX's limit on a protobuf message (models beyond it keep weights outside). */
#define ESPALIER_ONNX_MAX_BYTES  ((gint64) G_MAXINT32)

/* metadata_props keys */
#define ESPALIER_ONNX_META_CLASS_NAMES   "class_names"
#define ESPALIER_ONNX_META_INPUT_SCALE   "input_scale"
#define ESPALIER_ONNX_META_INPUT_SHIFT   "input_shift"
#define ESPALIER_ONNX_META_INPUT_MEAN    "input_mean"
#define ESPALIER_ONNX_META_INPUT_STD     "input_std"
#define ESPALIER_ONNX_META_PREPROCESSING "preprocessing"
#define ESPALIER_ONNX_META_OUTPUT        "output"        /* "probabilities" or "logits" */
#define ESPALIER_ONNX_META_QUANTIZATION  "quantization"  /* es_quant_mode_name */
#define ESPALIER_ONNX_META_NOTE          "note"

/* The model path holds, parsed (free with onnx__model_proto__free_unpacked (m, NULL)).
 * size_out (may be NULL) receives the file's size. G_IO_ERROR when it cannot be read,
 * ESPALIER_ERROR_FORMAT when it is not a protobuf ModelProto (truncated or corrupt)
 * or over ESPALIER_ONNX_MAX_BYTES. */
Onnx__ModelProto *espalier_onnx_read_proto (const char             *path,
                                            gint64                 *size_out,
                                            GError                **error);
/* Count the nodes, operators and initializers of m. */
void              espalier_onnx_summarize  (const Onnx__ModelProto *m,
                                            gint64                  file_size,
                                            EspalierOnnxSummary    *summary);

G_END_DECLS
