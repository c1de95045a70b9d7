/* es-qgemm.h: the int8 matrix products (uint8 activations times int8 weights into int32),
 * a scalar reference and run-time dispatched AVX2 and AVX-512 VNNI paths.
 *
 * One product is out (B, N) = requant (x (B, K) . w^T (N, K)): x uint8 with scale s_x
 * and zero point z_x (es-quant.h), w int8 with one scale s_w[o] per output row, summed
 * exactly in int32, then
 *   y[b,o] = (s_x * s_w[o]) * (float) (acc[b,o] - z_x * rowsum[o]) + bias[o]
 * (es_qgemm_requant below, in this order, on every path), an optional ReLU, and either
 * floats or the next int8 layer's uint8 input (es_quant_act of y).
 *
 * Paths. VNNI: vpdpbusd adds four u8 x s8 products into each int32 lane without
 * saturation. AVX2: vpmaddubsw adds two u8 x s8 products into int16 with saturation
 * (255 * 127 * 2 = 64770 > 32767), so it is used only when the activations are in
 * 0..127 (reduce_range); with full-range activations the AVX2 path widens both to
 * int16 and uses vpmaddwd, which cannot saturate. Integer sums are exact in any order,
 * and the float epilogue is the same expression everywhere, so every path equals the
 * scalar reference bit for bit (tests/engine/test-qgemm.c). K is at most
 * ES_QGEMM_MAX_K, so that no int32 sum can overflow (255 * 127 * K < 2^31).
 *
 * Weights are packed once, for one path (es_qgemm_pack): blocks of output rows laid
 * out for that path's kernel, zero-padded to whole blocks and to K a multiple of 4,
 * with the per-row sums of q_w for the zero-point correction. Nothing is allocated per
 * call. Threads: a call works on the rows of x it is given, so callers cut the batch.
 *
 * Dimension key: B = batch rows, K = inputs per row, N = outputs (weight rows). */
#pragma once

#include "es-common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  ES_QGEMM_SCALAR,   /* plain C: the reference layout, every CPU */
  ES_QGEMM_AVX2,     /* AVX2: vpmaddubsw (reduce_range) or widened vpmaddwd */
  ES_QGEMM_VNNI,     /* AVX-512 VNNI: vpdpbusd on 512-bit vectors */
} EsQGemmPath;

#define ES_QGEMM_MAX_K 65536

/* "scalar", "avx2", "vnni" */
const char  *es_qgemm_path_name      (EsQGemmPath path);
/* Whether this CPU (and its OS) can run path. */
bool         es_qgemm_path_available (EsQGemmPath path);
/* The path products take unless told otherwise: the best this CPU has, or the one
 * ESPALIER_QGEMM=scalar|avx2|vnni in the environment names, when the CPU has it. */
EsQGemmPath  es_qgemm_default_path   (void);

/* Bytes a row of activations must span for a product of K inputs: K rounded up to 4.
 * The kernels read them all; the bytes past K meet zero weights and may hold any value
 * but must be initialized (es_qgemm_quantize writes them as zeros). */
static inline int64_t
es_qgemm_row_bytes (int K)
{
  return ((int64_t) K + 3) / 4 * 4;
}

/* Weights packed for one path. */
typedef struct EsQGemmWeights EsQGemmWeights;

/* Pack w (N, K) int8 with scales w_scale (N) and bias (N) (NULL: zeros) for path (which
 * must be available). reduce_range promises activations in 0..127 (the AVX2 path then
 * uses vpmaddubsw). NULL and err set on bad sizes or no memory. */
EsQGemmWeights *es_qgemm_pack        (const int8_t *w, const float *w_scale,
                                      const float *bias, int N, int K, bool reduce_range,
                                      EsQGemmPath path, EsError *err);
void         es_qgemm_free           (EsQGemmWeights *pw);
EsQGemmPath  es_qgemm_weights_path   (const EsQGemmWeights *pw);
int          es_qgemm_weights_n      (const EsQGemmWeights *pw);
int          es_qgemm_weights_k      (const EsQGemmWeights *pw);
/* sum_k w[o,k] (N): the zero-point correction's row sums. */
const int32_t *es_qgemm_weights_rowsum (const EsQGemmWeights *pw);

/* What a product does with its sums. Set x_scale and x_zero, and at least one of out
 * and out_q. */
typedef struct {
  float    x_scale;       /* s_x, the activations' scale */
  int32_t  x_zero;        /* z_x, their zero point */
  bool     relu;          /* y = max (y, 0) before storing */
  /* Float output: out[b * ld_out + o], or out[o * ld_out + b] with transposed (a
   * convolution's (OC, OH*OW) plane). NULL: none. */
  float   *out;
  int64_t  ld_out;
  bool     transposed;
  /* The next int8 layer's input: out_q[b * ld_q + o] = es_quant_act (y, q_inv_scale,
   * q_zero, q_qmax). NULL: none. */
  uint8_t *out_q;
  int64_t  ld_q;
  float    q_inv_scale;
  int32_t  q_zero;
  int      q_qmax;
} EsQGemmOut;

/* The product of B rows of x (B, ldx bytes apart, es_qgemm_row_bytes (K) of them
 * read) with pw, requantized into o. */
void         es_qgemm_forward        (const EsQGemmWeights *pw, const uint8_t *x,
                                      int64_t ldx, int B, const EsQGemmOut *o);
/* The raw int32 sums acc (B, ld_acc) = x . w^T (for tests and tools). */
void         es_qgemm_s32            (const EsQGemmWeights *pw, int32_t *acc,
                                      int64_t ld_acc, const uint8_t *x, int64_t ldx, int B);

/* xq (B rows, ldq bytes apart) = es_quant_act (x, inv_scale, zero, qmax) of x (B rows
 * of K floats, ldx apart), the bytes from K to es_qgemm_row_bytes (K) set to zero;
 * vectorized for path (bit for bit es_quant_act, also for NaN and infinities). */
void         es_qgemm_quantize       (EsQGemmPath path, uint8_t *xq, int64_t ldq,
                                      const float *x, int64_t ldx, int B, int K,
                                      float inv_scale, int32_t zero, int qmax);
/* The smallest and largest of x (N), NaNs skipped (0, 0 when there is none): the
 * activation range of dynamic quantization. */
void         es_qgemm_minmax         (EsQGemmPath path, const float *x, int64_t N,
                                      float *lo, float *hi);

/* The scalar reference on unpacked w (N, K) row-major: plain loops the fast paths are
 * tested against. */
void         es_qgemm_ref_s32        (int32_t *acc, int64_t ld_acc, const uint8_t *x,
                                      int64_t ldx, const int8_t *w, int B, int K, int N);
void         es_qgemm_ref_forward    (const uint8_t *x, int64_t ldx, const int8_t *w,
                                      const float *w_scale, const float *bias, int B,
                                      int K, int N, const EsQGemmOut *o);

/* The requantization of one sum, m = s_x * s_w[o] and z_rowsum = z_x * rowsum[o]: the
 * one expression every path computes (multiplication, then addition, never fused). */
static inline float
es_qgemm_requant (int32_t acc, int32_t z_rowsum, float m, float bias)
{
  return m * (float) (acc - z_rowsum) + bias;
}

#ifdef __cplusplus
}
#endif
