/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-onnx.h: models to and from ONNX files, written and read with protobuf-c code
 * generated at build time from the onnx.proto that Debian's libonnx-dev ships.
 *
 * Export writes a graph that ONNX Runtime runs unchanged (opset 13, IR version 7):
 * input "input" of shape [batch, C, H, W] (image models) or [batch, F], output
 * "output" [batch, OUT] (probabilities when the model ends in Softmax, else logits),
 * the batch dimension dynamic. Dense is Gemm (transB = 1), Conv2D Conv, the pools
 * MaxPool/AveragePool, Flatten Flatten, the activations their ONNX operators, Dropout
 * nothing, and BatchNorm is folded into the Dense or Conv2D before it (Dropout between
 * them allowed) or else a BatchNormalization node. Pruned models are dense tensors with
 * their zeros. A quantization (es-quant.h) changes the weight layers it quantizes:
 *   int8 static   QDQ form: the layer's input goes through QuantizeLinear ->
 *                 DequantizeLinear with its uint8 scale and zero point (with reduce_range
 *                 values beyond the calibrated range saturate at code 255, not 127 as in
 *                 the engine: a Clip would keep ONNX Runtime off its int8 kernels; the
 *                 metadata "note" says so), the weights are
 *                 int8 initializers through DequantizeLinear with per-channel scales
 *                 (axis 0, zero points 0) and the bias an int32 initializer at scale
 *                 s_x s_w through DequantizeLinear (float for a Conv without quantized
 *                 output), so ONNX Runtime fuses each group into its int8 kernels
 *                 (QGemm, QLinearConv). When only ReLU, MaxPool, Flatten
 *                 or Dropout separate two int8 layers, the second one's input
 *                 quantization is also put right after the first (it commutes with
 *                 them), giving ONNX Runtime the output quantization its int8
 *                 convolution needs; the values are the same.
 *   int8 dynamic  DynamicQuantizeLinear on the input (one range per batch, as the
 *                 engine), MatMulInteger / ConvInteger on the int8 weights, then the
 *                 int32 sums times s_x s_w plus the bias in float.
 *   fp16, bf16    the rounded weights, stored as float32.
 * metadata_props carry what preprocessing the inputs need and what the outputs mean
 * (see EspalierOnnxMeta).
 *
 * Import reads the same operator set back into an EsModel, for models made elsewhere:
 * Gemm, or MatMul with an optional Add of a constant, as Dense; Conv; MaxPool;
 * AveragePool; Relu; LeakyRelu; Sigmoid; Tanh; Softmax; Flatten or a Reshape to
 * [batch, -1]; BatchNormalization; Dropout and Identity skipped; Constant nodes. QDQ
 * models come back in float: DequantizeLinear of constants is applied, activation
 * QuantizeLinear -> DequantizeLinear pairs are dropped. A Clip is read as a ReLU when
 * it clips at 0 only.
 * The graph must be a chain from one float input to one output. Every failure is a
 * GError naming the file and, where there is one, the node, its operator and the
 * tensor: ESPALIER_ERROR_UNSUPPORTED for operators and attributes Espalier cannot run,
 * ESPALIER_ERROR_FORMAT for corrupt or truncated files, opsets out of range, missing
 * initializers and shapes that do not fit.
 *
 * Not here: safetensors (espalier-model-file.h) and C source export. */
#pragma once

#include <glib.h>

#include "es-model.h"
#include "es-quant.h"
#include "espalier-model-file.h"

G_BEGIN_DECLS

/* The opset export writes, and the range import reads (default domain "ai.onnx"). */
#define ESPALIER_ONNX_OPSET          13
#define ESPALIER_ONNX_OPSET_MIN       7
#define ESPALIER_ONNX_OPSET_MAX      21
/* The IR version export writes (the one opset 13 goes with). */
#define ESPALIER_ONNX_IR_VERSION      7

/* What a model file says beside its graph. On export every field may be NULL/0 (the
 * defaults are given); on import every field is filled from the file (NULL where the
 * file has nothing). */
typedef struct {
  char    *model_name;       /* graph name; export default "espalier" */
  char    *producer;         /* producer_name; export default "Espalier" */
  char    *version;          /* producer_version; export default this build's version */
  char    *description;      /* the model's doc_string, or NULL */
  char   **class_names;      /* NULL-terminated, or NULL: metadata "class_names", a JSON array */
  /* The model expects raw * input_scale + input_shift, written both as metadata
   * "input_scale"/"input_shift" and as the equivalent "input_mean"/"input_std"
   * ((raw - mean) / std). Import: 1 and 0 when the file has neither pair. */
  double   input_scale;
  double   input_shift;
  char    *preprocessing;    /* JSON text of the dataset preprocessing, or NULL */
  /* Read only (filled on import, ignored on export): */
  gboolean probabilities;    /* the output is a Softmax (metadata "output" or the graph) */
  char    *quantization;     /* metadata "quantization": "int8-static", ... or NULL */
  gint64   opset;            /* the default domain's opset */
} EspalierOnnxMeta;

/* Zero meta and set input_scale 1; espalier_onnx_meta_clear frees what it holds. */
void      espalier_onnx_meta_init   (EspalierOnnxMeta *meta);
void      espalier_onnx_meta_clear  (EspalierOnnxMeta *meta);
/* What a model file says, for export: name, class names, input scale and shift,
 * preprocessing (copied; meta is cleared first). info may be NULL: the defaults. */
void      espalier_onnx_meta_from_info (EspalierOnnxMeta        *meta,
                                        const EspalierModelInfo *info);
/* What an imported file said, for saving the model: info (initialized) gets the name,
 * class names, input scale and shift, preprocessing (when it is a JSON object, as model
 * files keep it), and producer "PRODUCER VERSION (imported from ONNX)". */
void      espalier_onnx_meta_to_info   (const EspalierOnnxMeta  *meta,
                                        EspalierModelInfo       *info);

#define ESPALIER_ONNX_MAX_OP_KINDS 24

/* What a file holds, for the Export page and the CLI. */
typedef struct {
  gint64 file_size;          /* bytes */
  gint64 opset;
  guint  n_nodes;
  guint  n_initializers;
  gint64 initializer_bytes;  /* raw bytes of every initializer */
  guint  n_op_kinds;         /* entries of ops, in order of first use */
  struct {
    char  op[40];            /* "Gemm", or "com.microsoft:QGemm" outside the default domain */
    guint count;
  } ops[ESPALIER_ONNX_MAX_OP_KINDS];
  guint  n_other_ops;        /* nodes of kinds beyond the table */
} EspalierOnnxSummary;

/* "Gemm 2, Relu 1, Softmax 1": the operators and their counts (translated separators
 * are not needed: operator names are not translated). Free with g_free. */
char     *espalier_onnx_summary_ops (const EspalierOnnxSummary *summary);

/* Write model (with quant, NULL: float; it must fit model, es_quant_check) as ONNX to
 * path, atomically (a temporary file beside it, synced, renamed). meta may be NULL.
 * summary (may be NULL) receives what was written. Fails with ESPALIER_ERROR_INVALID
 * when quant does not fit model or a static int8 layer has no input range
 * (es_quant_is_ready), ESPALIER_ERROR_UNSUPPORTED when the file would pass ONNX's 2 GiB
 * limit, and G_IO_ERROR when the file cannot be written; nothing is left at path then. */
gboolean  espalier_onnx_export      (const EsModel           *model,
                                     const EsQuant           *quant,
                                     const EspalierOnnxMeta  *meta,
                                     const char              *path,
                                     EspalierOnnxSummary     *summary,
                                     GError                 **error);

/* Read path into a new model (parameters and BatchNorm statistics set; free it with
 * es_model_free). meta_out (may be NULL; initialized or zeroed) is cleared and filled
 * on success, left untouched on failure. */
EsModel  *espalier_onnx_import      (const char              *path,
                                     EspalierOnnxMeta        *meta_out,
                                     GError                 **error);

/* Count what an ONNX file holds without interpreting the graph (any operators, any
 * domain: also for files other tools wrote). */
gboolean  espalier_onnx_inspect     (const char              *path,
                                     EspalierOnnxSummary     *summary,
                                     GError                 **error);

G_END_DECLS
