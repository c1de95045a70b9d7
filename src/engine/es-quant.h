/* es-quant.h: quantizing a model. Weights are int8, symmetric, one scale per output
 * channel (q = clamp(round(w / s), -127, 127), s = max|w_row| / 127); activations are
 * uint8, asymmetric, one scale and zero point per tensor (q = clamp(round(x / s) + z,
 * 0, qmax), qmax 255, or 127 with reduce_range). A Dense or Conv2D layer in int8 takes
 * its input quantized this way, multiplies int8 by uint8 into int32 (es-qgemm.h) and
 * requantizes:
 *   y[o] = s_x s_w[o] (acc[o] - z_x sum_k q_w[o,k]) + b[o].
 * Static int8 fixes each quantized layer's input range by calibration (min/max,
 * percentile, or the range of least squared error) on a few batches; dynamic int8
 * takes it from each batch's min/max at run time. fp16 and bf16 only change how the
 * weights are stored: they are computed in fp32 after rounding.
 *
 * The inline helpers at the end are the one definition of the arithmetic, shared by
 * the int8 kernels, the quantizer and the trainer's fake quantization (QAT), so a
 * quantization-aware trained model sees exactly the rounding it will run with. */
#pragma once

#include <math.h>

#include "es-model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  ES_QUANT_FP32,          /* nothing quantized */
  ES_QUANT_INT8_STATIC,   /* int8 weights, calibrated activation ranges */
  ES_QUANT_INT8_DYNAMIC,  /* int8 weights, activation ranges per batch at run time */
  ES_QUANT_FP16,          /* weights stored as IEEE half, computed in fp32 */
  ES_QUANT_BF16,          /* weights stored as bfloat16, computed in fp32 */
} EsQuantMode;

typedef enum {
  ES_CALIB_MINMAX,        /* the observed min and max */
  ES_CALIB_PERCENTILE,    /* clip at a percentile of |x| (99.99 by default) */
  ES_CALIB_MSE,           /* the clipping range of least squared quantization error */
} EsCalibMethod;

/* One layer's quantization; int8 false for layers kept in float (and every layer that
 * is not Dense or Conv2D). */
typedef struct {
  bool     int8;
  bool     calibrated;  /* static: in_lo..in_hi observed (or set after QAT) */
  float    in_lo, in_hi;/* static: the input range calibration chose */
  float    in_scale;    /* static: input activation scale and zero point */
  int32_t  in_zero;
  int      rows, cols;  /* weight rows (OUT or OC) and row length (IN or C*K*K) */
  float   *w_scale;     /* (rows) per output channel */
  int8_t  *w_q;         /* (rows, cols) */
} EsQuantLayer;

typedef struct {
  EsQuantMode   mode;
  bool          reduce_range;   /* activations in 0..127 (for CPUs without VNNI) */
  int           n_layers;
  EsQuantLayer *layers;         /* (n_layers) */
} EsQuant;

const char  *es_quant_mode_name      (EsQuantMode mode);   /* "fp32", "int8-static", ... */
bool         es_quant_mode_from_name (const char *name, EsQuantMode *mode);
const char  *es_calib_method_name    (EsCalibMethod m);    /* "minmax", "percentile", "mse" */
bool         es_calib_method_from_name (const char *name, EsCalibMethod *m);

/* Quantize model's weights for mode. keep_float (n_layers) keeps chosen Dense/Conv2D
 * layers in float (NULL: none). For ES_QUANT_INT8_STATIC the activation ranges are
 * still to be set (es_calib_apply or es_quant_set_input_range). */
EsQuant     *es_quant_new            (const EsModel *model, EsQuantMode mode,
                                      const bool *keep_float, bool reduce_range,
                                      EsError *err);
EsQuant     *es_quant_copy           (const EsQuant *q);
void         es_quant_free           (EsQuant *q);
/* An empty EsQuant for n_layers (every layer float) for loaders to fill: each int8
 * layer's w_scale and w_q are then allocated with es_quant_layer_alloc, which also
 * marks the layer int8. */
EsQuant     *es_quant_new_empty      (EsQuantMode mode, int n_layers);
bool         es_quant_layer_alloc    (EsQuantLayer *l, int rows, int cols, EsError *err);
/* Set a static layer's input range (after QAT or from a file) and its scale/zero. */
void         es_quant_set_input_range(EsQuant *q, int layer, float lo, float hi);
/* Whether every int8 layer of a static quantization has its input range. */
bool         es_quant_is_ready       (const EsQuant *q, EsError *err);
/* Checks q fits model (layer count, kinds, weight shapes): for loaders. */
bool         es_quant_check          (const EsQuant *q, const EsModel *model, EsError *err);

/* A copy of model whose weights went through the storage of q: int8 weights
 * dequantized (q * s), fp16/bf16 rounded; biases and float layers unchanged. The
 * accuracy of this model in fp32 is what fp16/bf16 variants run; for int8 it is the
 * weight error alone. */
EsModel     *es_quant_dequantized_model (const EsModel *model, const EsQuant *q);
/* Bytes the weights take stored this way: int8 weights plus float scales, biases and
 * float layers; 2 bytes per parameter for fp16/bf16; 4 for fp32. BatchNorm's running
 * statistics (buffers, not parameters) count 4 bytes each in every mode. */
size_t       es_quant_weight_bytes   (const EsModel *model, const EsQuant *q);

/* Calibration of static ranges: observe the float model's input of every int8 layer on
 * a few batches, then choose each range by method. */
typedef struct EsCalib EsCalib;

EsCalib     *es_calib_new            (const EsModel *model, EsCalibMethod method,
                                      float percentile, EsError *err);
void         es_calib_free           (EsCalib *c);
/* Run B rows of x (B, D) through the float model and record the inputs of every
 * Dense/Conv2D layer. */
bool         es_calib_observe        (EsCalib *c, const float *x, int B, EsError *err);
/* Set in_lo/in_hi/in_scale/in_zero of every int8 layer of q from what was observed. */
bool         es_calib_apply          (const EsCalib *c, EsQuant *q, EsError *err);

/* IEEE half and bfloat16, round to nearest even (NaN stays NaN). */
uint16_t     es_f32_to_f16           (float x);
float        es_f16_to_f32           (uint16_t h);
uint16_t     es_f32_to_bf16          (float x);
float        es_bf16_to_f32          (uint16_t h);

/* ------------------------------------------------------------------------------ */
/* The arithmetic, shared by kernels, quantizer and fake quantization */

/* Activation scale and zero point for the range [lo, hi] widened to contain 0, with
 * codes 0..qmax: s = (hi - lo) / qmax, z = round(-lo / s) clamped to [0, qmax]. */
static inline void
es_quant_act_params (float lo, float hi, int qmax, float *scale, int32_t *zero)
{
  float s;
  long z;

  lo = fminf (lo, 0.0f);
  hi = fmaxf (hi, 0.0f);
  s = (hi - lo) / (float) qmax;
  if (!(s > 0.0f) || !isfinite (s))
    s = 1.0f;
  z = lrintf (-lo / s);
  *scale = s;
  *zero = (int32_t) (z < 0 ? 0 : z > qmax ? qmax : z);
}

/* The code of x; inv_scale is 1.0f / scale, computed once in float by every caller
 * (kernels, exec, fake quantization), so all of them round the same products. */
static inline int32_t
es_quant_act (float x, float inv_scale, int32_t zero, int qmax)
{
  long q = lrintf (x * inv_scale) + zero;

  return (int32_t) (q < 0 ? 0 : q > qmax ? qmax : q);
}

/* Per-channel weight scale from the largest magnitude of the row. */
static inline float
es_quant_weight_scale (float max_abs)
{
  return max_abs > 0.0f ? max_abs / 127.0f : 1.0f;
}

static inline int8_t
es_quant_weight (float w, float inv_scale)
{
  long q = lrintf (w * inv_scale);

  return (int8_t) (q < -127 ? -127 : q > 127 ? 127 : q);
}

#ifdef __cplusplus
}
#endif
