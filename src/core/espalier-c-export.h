/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-c-export.h: a model as C source for microcontrollers and teaching: NAME.c
 * with the weights as constant arrays (float, or int8 codes with their fixed-point
 * requantization) and one inference function, NAME.h with its sizes and prototypes.
 * The generated code is C99, needs nothing beyond the C library (libm's expf/tanhf only
 * when a Sigmoid, Tanh or Softmax runs in float) and never allocates: its activations
 * live in a scratch struct whose size the header gives.
 *
 * Float models run every layer in float, as the engine does (BatchNorm folded into the
 * Dense or Conv2D before it, Dropout and Flatten gone). Static int8 variants run each
 * int8 layer on uint8 codes times int8 weights into int32 and hand the next int8 layer
 * its input codes directly: a per-channel fixed-point multiplier with a rounding shift
 * (int64 products), the bias and any BatchNorm folded in, ReLU a clamp at the output
 * zero point, MaxPool on codes, other monotone activations (LeakyReLU, Sigmoid, Tanh)
 * a search in a table of thresholds. Only the input quantization and the last int8
 * layer's dequantized output are float. Layers the integer path cannot carry (an
 * AvgPool or Softmax between two int8 layers, a layer kept in float) dequantize to float
 * and quantize again, and the summary says the variant is not integer-only.
 *
 * Not here: ONNX (espalier-onnx.h) and safetensors (espalier-model-file.h). */
#pragma once

#include <glib.h>

#include "es-model.h"
#include "es-quant.h"
#include "espalier-model-file.h"

G_BEGIN_DECLS

/* What was written. */
typedef struct {
  gsize    c_bytes;        /* the .c file */
  gsize    h_bytes;        /* the .h file */
  gsize    weight_bytes;   /* constant data in the .c: weights, biases, scales, tables */
  gsize    scratch_bytes;  /* the activation buffers predict uses (NAME_scratch) */
  guint    n_ops;          /* operations predict runs (BatchNorm folded, Flatten and
                            * Dropout gone, int8 requantizations counted with their layer) */
  guint    n_int8_layers;  /* Dense/Conv2D layers that run in int8 */
  gboolean integer_only;   /* int8 variant whose every Dense/Conv2D is int8 and whose
                            * steps from the input quantization to the last int8 layer
                            * are all integer arithmetic (what follows it, such as a
                            * final Softmax, runs on its dequantized output in float) */
  gboolean needs_libm;     /* the code calls expf or tanhf: link with -lm */
} EspalierCExportSummary;

/* Whether name can prefix the generated identifiers: an ASCII letter, then letters,
 * digits or '_', at most 48 characters. Fails with ESPALIER_ERROR_INVALID saying why. */
gboolean espalier_c_export_check_name (const char              *name,
                                       GError                 **error);

/* Write model as the C source c_path and the header h_path (atomically: both files
 * are complete before either replaces its target; on failure neither target changes
 * and no temporary file is left). quant (may be NULL or ES_QUANT_FP32: float) selects
 * the variant: static int8 runs as described above; fp16/bf16 weights are exported as
 * the float values they round to (what the engine computes with); dynamic int8 is
 * refused with ESPALIER_ERROR_UNSUPPORTED (its ranges come from each batch at run
 * time). info (may be NULL) adds NAME_predict_u8, which takes raw bytes and applies
 * info's input_scale and input_shift, and NAME_class_names when info names as many
 * classes as the model has outputs. summary may be NULL.
 *
 * The generated functions, with NAME the name given:
 *   int NAME_predict   (const float *input, float *output);
 *   int NAME_predict_r (const float *input, float *output, NAME_scratch *scratch);
 * return the class (the index of the largest output) and fill output
 * (NAME_OUTPUT_SIZE floats, may be NULL); _r is reentrant, the other uses a static
 * scratch.
 *
 * Fails with ESPALIER_ERROR_INVALID for a bad name, equal paths, a header name that
 * cannot be #included, or weights that are not finite; ESPALIER_ERROR_SHAPE when quant
 * does not fit model; ESPALIER_ERROR_UNSUPPORTED for a quantization this export cannot
 * run (dynamic, uncalibrated, or scales out of the fixed-point range); G_IO_ERROR when
 * a file cannot be written. */
gboolean espalier_c_export            (const EsModel           *model,
                                       const EsQuant           *quant,
                                       const EspalierModelInfo *info,
                                       const char              *name,
                                       const char              *c_path,
                                       const char              *h_path,
                                       EspalierCExportSummary  *summary,
                                       GError                 **error);

G_END_DECLS
