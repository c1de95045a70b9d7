/* es-ref.h: the portable reference kernels of every layer, forward and backward, and of
 * the trainer's model-slimming ops (pruning masks, fake quantization, distillation), in
 * float (_f32) and double (_f64) from one source (es-ref-impl.h). They are plain loops:
 * the gradient checks run the _f64 versions against finite differences, and every fast
 * kernel (BLAS, AVX-512, CUDA) is tested against the _f32 ones. Not for speed.
 *
 * Dimension key: B = batch, IN/OUT = features, C = channels, H/W = height/width,
 * OC = output channels, K = kernel size, S = stride, P = padding, N = elements,
 * CH = BatchNorm channels, SP = spatial size per channel (H*W, or 1 for 1-D).
 * Layout is row-major, images NCHW.
 *
 * Conventions (llm.c): outputs first, then inputs, then hyper-parameters, then sizes.
 * Parameter gradients (dw, db, dgamma, dbeta) ACCUMULATE (+=) so micro-batches add up;
 * input gradients (dinp) are OVERWRITTEN (=). A NULL dinp skips that work (first layer). */
#pragma once

#include "es-common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ES_CONV_OUT(n, k, s, p) (((n) + 2 * (p) - (k)) / (s) + 1)

#define ES_REF_DECLARE(T, SFX)                                                           \
  /* out (B,OUT) = inp (B,IN) . w^T (OUT,IN) + b (OUT); b may be NULL, and so may db */   \
  void es_ref_dense_forward_##SFX (T *out, const T *inp, const T *w, const T *b,          \
                                   int B, int IN, int OUT);                               \
  void es_ref_dense_backward_##SFX (T *dinp, T *dw, T *db, const T *dout, const T *inp,   \
                                    const T *w, int B, int IN, int OUT);                  \
  /* out (B,OC,OH,OW) from inp (B,C,H,W), w (OC,C,K,K), b (OC); OH = ES_CONV_OUT(H,K,S,P) */ \
  /* (padding is zeros; b may be NULL, and so may db) */                                  \
  void es_ref_conv2d_forward_##SFX (T *out, const T *inp, const T *w, const T *b,         \
                                    int B, int C, int H, int W, int OC, int K, int S,     \
                                    int P);                                               \
  void es_ref_conv2d_backward_##SFX (T *dinp, T *dw, T *db, const T *dout, const T *inp,  \
                                     const T *w, int B, int C, int H, int W, int OC,      \
                                     int K, int S, int P);                                \
  /* out, argmax (B,C,OH,OW) with OH = ES_CONV_OUT(H,K,S,0); argmax indexes inp's plane */ \
  /* (first maximum wins; backward sums dout where windows overlap, S < K) */             \
  void es_ref_maxpool2d_forward_##SFX (T *out, int32_t *argmax, const T *inp,             \
                                       int B, int C, int H, int W, int K, int S);         \
  void es_ref_maxpool2d_backward_##SFX (T *dinp, const T *dout, const int32_t *argmax,    \
                                        int B, int C, int H, int W, int K, int S);        \
  void es_ref_avgpool2d_forward_##SFX (T *out, const T *inp,                              \
                                       int B, int C, int H, int W, int K, int S);         \
  void es_ref_avgpool2d_backward_##SFX (T *dinp, const T *dout,                           \
                                        int B, int C, int H, int W, int K, int S);        \
  /* element-wise activations over N values; sigmoid/tanh backward read the output */    \
  void es_ref_relu_forward_##SFX (T *out, const T *inp, int64_t N);                       \
  void es_ref_relu_backward_##SFX (T *dinp, const T *dout, const T *inp, int64_t N);      \
  void es_ref_leaky_relu_forward_##SFX (T *out, const T *inp, T alpha, int64_t N);        \
  void es_ref_leaky_relu_backward_##SFX (T *dinp, const T *dout, const T *inp, T alpha,   \
                                         int64_t N);                                      \
  void es_ref_sigmoid_forward_##SFX (T *out, const T *inp, int64_t N);                    \
  void es_ref_sigmoid_backward_##SFX (T *dinp, const T *dout, const T *out, int64_t N);   \
  void es_ref_tanh_forward_##SFX (T *out, const T *inp, int64_t N);                       \
  void es_ref_tanh_backward_##SFX (T *dinp, const T *dout, const T *out, int64_t N);      \
  /* softmax over the last dimension of (B,C) */                                          \
  void es_ref_softmax_forward_##SFX (T *out, const T *inp, int B, int C);                 \
  void es_ref_softmax_backward_##SFX (T *dinp, const T *dout, const T *out, int B, int C);\
  /* fused softmax + cross-entropy with integer labels (B) in [0,C): probs (B,C),        \
   * losses (B) = -log p[label]; returns the mean loss. Backward writes                   \
   * dlogits = (probs - onehot) * scale (scale is usually 1/B). losses may be NULL;       \
   * the loss gradients (dlogits, dpred) are overwritten, like dinp. */                   \
  T    es_ref_softmax_xent_forward_##SFX (T *probs, T *losses, const T *logits,           \
                                          const int32_t *labels, int B, int C);           \
  void es_ref_softmax_xent_backward_##SFX (T *dlogits, const T *probs,                    \
                                           const int32_t *labels, T scale, int B, int C); \
  /* binary cross-entropy on logits with targets in [0,1], fused with the sigmoid:        \
   * probs (N), losses (N); dlogits = (probs - target) * scale */                         \
  T    es_ref_bce_forward_##SFX (T *probs, T *losses, const T *logits, const T *targets,  \
                                 int64_t N);                                              \
  void es_ref_bce_backward_##SFX (T *dlogits, const T *probs, const T *targets, T scale,  \
                                  int64_t N);                                             \
  /* mean squared error: losses (B) = mean over D of (pred - target)^2; returns the mean; \
   * dpred = 2 (pred - target) / D * scale */                                             \
  T    es_ref_mse_forward_##SFX (T *losses, const T *pred, const T *target, int B, int D);\
  void es_ref_mse_backward_##SFX (T *dpred, const T *pred, const T *target, T scale,      \
                                  int B, int D);                                          \
  /* inverted dropout: mask (N) is 1 where kept (es_rand_uniform(seed, i) >= rate),       \
   * out = inp * mask / (1 - rate); the rate is compared in double, rate >= 1 drops all */ \
  void es_ref_dropout_forward_##SFX (T *out, uint8_t *mask, const T *inp, T rate,         \
                                     uint64_t seed, int64_t N);                           \
  void es_ref_dropout_backward_##SFX (T *dinp, const T *dout, const uint8_t *mask, T rate,\
                                      int64_t N);                                         \
  /* BatchNorm over inp (B,CH,SP): training mode saves mean, rstd (CH) and updates the    \
   * running statistics (may be NULL) as r = (1-momentum) r + momentum batch (unbiased    \
   * variance for the running value, as PyTorch does; the output is normalized with       \
   * the biased one). Backward: dgamma, dbeta may be NULL. */                             \
  void es_ref_batchnorm_forward_train_##SFX (T *out, T *mean, T *rstd, T *running_mean,   \
                                             T *running_var, const T *inp, const T *gamma,\
                                             const T *beta, T momentum, T eps,            \
                                             int B, int CH, int SP);                      \
  void es_ref_batchnorm_forward_infer_##SFX (T *out, const T *inp, const T *gamma,        \
                                             const T *beta, const T *running_mean,        \
                                             const T *running_var, T eps,                 \
                                             int B, int CH, int SP);                      \
  void es_ref_batchnorm_backward_##SFX (T *dinp, T *dgamma, T *dbeta, const T *dout,      \
                                        const T *inp, const T *gamma, const T *mean,      \
                                        const T *rstd, int B, int CH, int SP);            \
  /* Synchronized BatchNorm's halves (es-backend.h): per channel part (3,CH) = the mean   \
   * as T, its remainder (mean - first, as T) and the sum of squared deviations; out =     \
   * gamma (x - mean) rstd + beta with given mean, rstd; part (2,CH) = sum dout, sum       \
   * dout xhat, added into dbeta, dgamma (may be NULL); dinp = gamma rstd (dout - coef[c]  \
   * - xhat coef[CH + c]). */                                                              \
  void es_ref_batchnorm_stats_##SFX (T *part, const T *inp, int B, int CH, int SP);       \
  void es_ref_batchnorm_forward_apply_##SFX (T *out, const T *inp, const T *gamma,        \
                                             const T *beta, const T *mean, const T *rstd, \
                                             int B, int CH, int SP);                      \
  void es_ref_batchnorm_backward_stats_##SFX (T *part, T *dgamma, T *dbeta, const T *dout,\
                                              const T *inp, const T *mean, const T *rstd, \
                                              int B, int CH, int SP);                     \
  void es_ref_batchnorm_backward_apply_##SFX (T *dinp, const T *dout, const T *inp,       \
                                              const T *gamma, const T *mean,              \
                                              const T *rstd, const T *coef, int B, int CH,\
                                              int SP);                                    \
  /* pruning: x (N) = mask ? x : 0 (mask bytes: nonzero keeps) */                        \
  void es_ref_mask_apply_##SFX (T *x, const uint8_t *mask, int64_t N);                    \
  /* the smallest and largest value of x (N > 0), NaN skipped (+inf, -inf when all are) */ \
  void es_ref_min_max_##SFX (T *lo, T *hi, const T *x, int64_t N);                        \
  /* Fake quantization (QAT) in es-quant.h's float arithmetic, whatever T is:             \
   * weights (rows, cols) per row: s = es_quant_weight_scale (max |w_row|),               \
   * out = es_quant_weight (w, 1/s) * s; out may be w. */                                 \
  void es_ref_fake_quant_weights_##SFX (T *out, const T *w, int rows, int cols);          \
  /* activations (N) over [lo, hi]: es_quant_act_params (lo, hi, qmax, &s, &z),           \
   * out = (es_quant_act (x, 1/s, z, qmax) - z) * s; out may be inp. */                   \
  void es_ref_fake_quant_act_##SFX (T *out, const T *inp, T lo, T hi, int qmax, int64_t N);\
  /* its straight-through gradient: dinp (N) = dout where min(lo,0) <= inp <= max(hi,0),  \
   * else 0 (the range es_quant_act_params quantizes over; dinp may be dout) */           \
  void es_ref_fake_quant_act_backward_##SFX (T *dinp, const T *dout, const T *inp, T lo,  \
                                             T hi, int64_t N);                            \
  /* Knowledge distillation (Hinton et al. 2015) on student logits (B,C), teacher logits  \
   * (B,C), labels (B), temperature temp > 0, alpha in [0,1]: probs = softmax(logits)     \
   * exactly as softmax_xent_forward writes them, soft_s = softmax(logits / temp),        \
   * soft_t = softmax(teacher / temp) (each (B,C)); losses (B, may be NULL) =              \
   * (1 - alpha) CE + alpha temp^2 KL(soft_t || soft_s); returns their mean. Backward:     \
   * dlogits = ((1 - alpha)(probs - onehot) + alpha temp (soft_s - soft_t)) * scale,      \
   * the gradient of scale * sum(losses) (overwritten). */                                \
  T    es_ref_distill_forward_##SFX (T *probs, T *soft_s, T *soft_t, T *losses,            \
                                     const T *logits, const T *teacher,                   \
                                     const int32_t *labels, T temp, T alpha, int B,       \
                                     int C);                                              \
  void es_ref_distill_backward_##SFX (T *dlogits, const T *probs, const T *soft_s,         \
                                      const T *soft_t, const int32_t *labels, T temp,     \
                                      T alpha, T scale, int B, int C);

ES_REF_DECLARE (float, f32)
ES_REF_DECLARE (double, f64)

#undef ES_REF_DECLARE

#ifdef __cplusplus
}
#endif
