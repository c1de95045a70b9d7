/* es-backend.h: the interface every compute backend implements (CPU now, CUDA later),
 * a struct of commented function pointers in the manner of ggml-backend. The model and
 * trainer only ever call through it; pointers passed to op functions live in the
 * backend's memory (plain host memory for the CPU). Op signatures mirror the _f32
 * reference kernels in es-ref.h, whose comments give the shapes and conventions
 * (parameter gradients accumulate, dinp is overwritten, NULL dinp skips it).
 * A backend answers supports_op instead of silently falling back. */
#pragma once

#include "es-common.h"
#include "es-memory.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  ES_OP_DENSE,
  ES_OP_CONV2D,
  ES_OP_MAXPOOL2D,
  ES_OP_AVGPOOL2D,
  ES_OP_RELU,
  ES_OP_LEAKY_RELU,
  ES_OP_SIGMOID,
  ES_OP_TANH,
  ES_OP_SOFTMAX,
  ES_OP_SOFTMAX_XENT,
  ES_OP_BCE,
  ES_OP_MSE,
  ES_OP_DROPOUT,
  ES_OP_BATCHNORM,
  ES_OP_SGD,
  ES_OP_ADAM,
  ES_OP_MASK_APPLY,          /* pruning masks */
  ES_OP_MIN_MAX,             /* QAT range tracking */
  ES_OP_FAKE_QUANT_WEIGHTS,  /* QAT */
  ES_OP_FAKE_QUANT_ACT,      /* QAT: fake_quant_act and its backward */
  ES_OP_DISTILL,             /* distillation loss, forward and backward */
  ES_OP_N_OPS
} EsOp;

/* The statistics a backend adds up in its own memory for a trainer that reads them
 * back only when asked (gather_rows and the ops after it in EsBackendIface):
 * ES_STATS_N doubles. */
enum {
  ES_STATS_LOSS,      /* sum of the per-row losses */
  ES_STATS_CORRECT,   /* rows whose argmax is the label */
  ES_STATS_ROWS,      /* rows counted */
  ES_STATS_STEPS,     /* optimizer steps applied */
  ES_STATS_HALTED,    /* 1 once a loss was not finite: no more updates */
  ES_STATS_SKIP,      /* 1 while the current step is skipped (fp16 gradients overflowed) */
  ES_STATS_SKIPPED,   /* steps skipped so */
  ES_STATS_N = 8
};

/* fp16 dynamic loss scaling's state in backend memory, for amp_unscale_dev and
 * softmax_xent_backward_dev: ES_AMP_N doubles (each float value held exactly). */
enum {
  ES_AMP_SCALE,       /* the loss's multiplier (a float) */
  ES_AMP_CLEAN,       /* clean steps in a row since the scale last changed */
  ES_AMP_INV,         /* 1 / the scale the last clean step was unscaled by (a float) */
  ES_AMP_N = 4
};

typedef struct EsBackend EsBackend;
typedef struct EsBackendIface EsBackendIface;

struct EsBackendIface {
  const char *name;
  /* Backend memory is plain host memory: callers may hand host buffers to the ops
   * directly and read results in place (the CPU backend). */
  bool        host_memory;

  /* memory ---------------------------------------------------------------------- */
  /* Allocate bytes of backend memory (64-byte aligned, zeroed), charged to the
   * backend's budget under kind; NULL and err set when the budget or the device
   * cannot hold it. free takes the same kind and bytes back. */
  void  *(*alloc)       (EsBackend *be, EsMemKind kind, size_t bytes, EsError *err);
  void   (*free)        (EsBackend *be, EsMemKind kind, void *ptr, size_t bytes);
  /* Copies between host memory and backend memory. download returns when the bytes
   * are on the host (it waits for queued work that writes them). */
  void   (*upload)      (EsBackend *be, void *dst, const void *src, size_t bytes);
  void   (*download)    (EsBackend *be, void *dst, const void *src, size_t bytes);
  /* Copy within backend memory (regions do not overlap). */
  void   (*copy)        (EsBackend *be, void *dst, const void *src, size_t bytes);
  void   (*zero)        (EsBackend *be, void *dst, size_t bytes);
  /* Wait until queued work is done (optional: NULL for synchronous backends). */
  void   (*synchronize) (EsBackend *be);
  bool   (*supports_op) (EsBackend *be, EsOp op);
  void   (*destroy)     (EsBackend *be);

  /* data ------------------------------------------------------------------------ */
  /* out (N) = inp (N, bytes on the host) * scale + shift: a uint8 batch converted
   * on the way in, so images stay uint8 until the batch is used. */
  void   (*load_u8)     (EsBackend *be, float *out, const uint8_t *inp, float scale,
                         float shift, int64_t N);

  /* layers (see es-ref.h) --------------------------------------------------------- */
  void  (*dense_forward)      (EsBackend *be, float *out, const float *inp, const float *w,
                               const float *b, int B, int IN, int OUT);
  void  (*dense_backward)     (EsBackend *be, float *dinp, float *dw, float *db,
                               const float *dout, const float *inp, const float *w,
                               int B, int IN, int OUT);
  /* (optional: NULL when the backend has none; callers then run dense_forward and
   * act_forward in turn) The dense forward for inference, with the activation that
   * follows it: out (B,OUT) = act(inp . w^T + b), act and alpha as act_forward's, or
   * act ES_OP_DENSE for none. No backward follows, so a backend may cut or lay out
   * the work otherwise than dense_forward does for training. */
  void  (*dense_act_forward)  (EsBackend *be, EsOp act, float *out, const float *inp,
                               const float *w, const float *b, float alpha, int B, int IN,
                               int OUT);
  void  (*conv2d_forward)     (EsBackend *be, float *out, const float *inp, const float *w,
                               const float *b, int B, int C, int H, int W, int OC, int K,
                               int S, int P);
  void  (*conv2d_backward)    (EsBackend *be, float *dinp, float *dw, float *db,
                               const float *dout, const float *inp, const float *w,
                               int B, int C, int H, int W, int OC, int K, int S, int P);
  void  (*maxpool2d_forward)  (EsBackend *be, float *out, int32_t *argmax, const float *inp,
                               int B, int C, int H, int W, int K, int S);
  void  (*maxpool2d_backward) (EsBackend *be, float *dinp, const float *dout,
                               const int32_t *argmax, int B, int C, int H, int W, int K,
                               int S);
  void  (*avgpool2d_forward)  (EsBackend *be, float *out, const float *inp,
                               int B, int C, int H, int W, int K, int S);
  void  (*avgpool2d_backward) (EsBackend *be, float *dinp, const float *dout,
                               int B, int C, int H, int W, int K, int S);
  /* Element-wise activations; act is ES_OP_RELU, _LEAKY_RELU, _SIGMOID or _TANH.
   * backward reads inp for ReLU/LeakyReLU and out for Sigmoid/Tanh. */
  void  (*act_forward)        (EsBackend *be, EsOp act, float *out, const float *inp,
                               float alpha, int64_t N);
  void  (*act_backward)       (EsBackend *be, EsOp act, float *dinp, const float *dout,
                               const float *inp, const float *out, float alpha, int64_t N);
  void  (*softmax_forward)    (EsBackend *be, float *out, const float *inp, int B, int C);
  void  (*softmax_backward)   (EsBackend *be, float *dinp, const float *dout,
                               const float *out, int B, int C);
  void  (*dropout_forward)    (EsBackend *be, float *out, uint8_t *mask, const float *inp,
                               float rate, uint64_t seed, int64_t N);
  void  (*dropout_backward)   (EsBackend *be, float *dinp, const float *dout,
                               const uint8_t *mask, float rate, int64_t N);
  void  (*batchnorm_forward_train) (EsBackend *be, float *out, float *mean, float *rstd,
                                    float *running_mean, float *running_var,
                                    const float *inp, const float *gamma, const float *beta,
                                    float momentum, float eps, int B, int CH, int SP);
  void  (*batchnorm_forward_infer) (EsBackend *be, float *out, const float *inp,
                                    const float *gamma, const float *beta,
                                    const float *running_mean, const float *running_var,
                                    float eps, int B, int CH, int SP);
  void  (*batchnorm_backward) (EsBackend *be, float *dinp, float *dgamma, float *dbeta,
                               const float *dout, const float *inp, const float *gamma,
                               const float *mean, const float *rstd, int B, int CH, int SP);
  /* Synchronized BatchNorm (es_trainer_set_stat_reduce): the two fused training ops
   * above cut where the statistics of several processes are summed; the fused ones
   * stay for the unsynchronized path. (optional: NULL, all four, where the backend has
   * none; the trainer then refuses synchronization.) Over each channel's n = B*SP
   * values of inp (B,CH,SP), with xhat = (x - mean) * rstd:
   * batchnorm_stats: part (3, CH) = the values' mean as a float and the float
   *   remainder of the double mean (mean - first), then their sum of squared deviations
   *   from that mean (two passes, sums in double);
   * batchnorm_forward_apply: out = gamma * (x - mean) * rstd + beta, mean and rstd (CH)
   *   given;
   * batchnorm_backward_stats: part (2, CH) = sum dout, sum dout * xhat; dbeta (CH) +=
   *   the first, dgamma (CH) += the second (each may be NULL);
   * batchnorm_backward_apply: dinp = gamma * rstd * (dout - coef[c] - xhat * coef[CH +
   *   c]) with coef (2, CH) given (the global sums, scaled). */
  void  (*batchnorm_stats)         (EsBackend *be, float *part, const float *inp,
                                    int B, int CH, int SP);
  void  (*batchnorm_forward_apply) (EsBackend *be, float *out, const float *inp,
                                    const float *gamma, const float *beta,
                                    const float *mean, const float *rstd,
                                    int B, int CH, int SP);
  void  (*batchnorm_backward_stats)(EsBackend *be, float *part, float *dgamma, float *dbeta,
                                    const float *dout, const float *inp, const float *mean,
                                    const float *rstd, int B, int CH, int SP);
  void  (*batchnorm_backward_apply)(EsBackend *be, float *dinp, const float *dout,
                                    const float *inp, const float *gamma, const float *mean,
                                    const float *rstd, const float *coef,
                                    int B, int CH, int SP);

  /* losses: return the mean loss to the host ---------------------------------------- */
  float (*softmax_xent_forward)  (EsBackend *be, float *probs, float *losses,
                                  const float *logits, const int32_t *labels, int B, int C);
  void  (*softmax_xent_backward) (EsBackend *be, float *dlogits, const float *probs,
                                  const int32_t *labels, float scale, int B, int C);
  float (*bce_forward)           (EsBackend *be, float *probs, float *losses,
                                  const float *logits, const float *targets, int64_t N);
  void  (*bce_backward)          (EsBackend *be, float *dlogits, const float *probs,
                                  const float *targets, float scale, int64_t N);
  float (*mse_forward)           (EsBackend *be, float *losses, const float *pred,
                                  const float *target, int B, int D);
  void  (*mse_backward)          (EsBackend *be, float *dpred, const float *pred,
                                  const float *target, float scale, int B, int D);
  /* Number of rows of scores (B,C) whose argmax equals labels (B); into host memory
   * pred (B) when it is not NULL. */
  int   (*argmax_correct)        (EsBackend *be, int32_t *pred, const float *scores,
                                  const int32_t *labels, int B, int C);

  /* optimizer -------------------------------------------------------------------- */
  /* Sum of squares of x (N), for gradient clipping by global norm. */
  double (*sum_squares) (EsBackend *be, const float *x, int64_t N);
  /* x (N) *= s */
  void   (*scale)       (EsBackend *be, float *x, float s, int64_t N);
  /* grad (N) += l1 * sign(param) + l2 * param */
  void   (*regularize)  (EsBackend *be, float *grad, const float *param, float l1,
                         float l2, int64_t N);
  /* SGD with momentum (velocity may be NULL when momentum is 0): v = mu v + g;
   * p -= lr (nesterov ? g + mu v : v). */
  void   (*sgd_step)    (EsBackend *be, float *param, float *velocity, const float *grad,
                         float lr, float momentum, bool nesterov, int64_t N);
  /* Adam / AdamW: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
   * p -= lr (m / bc1 / (sqrt(v / bc2) + eps) + wd p), with bc = 1 - beta^t and wd the
   * decoupled weight decay (0 for Adam). */
  void   (*adam_step)   (EsBackend *be, float *param, float *m, float *v, const float *grad,
                         float lr, float beta1, float beta2, float eps, float weight_decay,
                         float bc1, float bc2, int64_t N);

  /* slimming a model: pruning, quantization-aware training, distillation ----------- */
  /* x (N) = mask ? x : 0, mask (N) bytes in backend memory (nonzero keeps): holds
   * pruned parameters, and their gradients, at exactly zero. Runs twice a training
   * step over every parameter. */
  void   (*mask_apply)  (EsBackend *be, float *x, const uint8_t *mask, int64_t N);
  /* The smallest and largest value of x (N > 0) into host memory *lo, *hi, NaN
   * skipped (+inf, -inf when every value is NaN): the batch range QAT tracks. */
  void   (*min_max)     (EsBackend *be, float *lo, float *hi, const float *x, int64_t N);
  /* out (rows, cols) = w through int8 and back as es-quant.h quantizes weights: per
   * row s = es_quant_weight_scale (max |w_row|), out = es_quant_weight (w, 1/s) * s,
   * bit for bit. out may be w. */
  void   (*fake_quant_weights) (EsBackend *be, float *out, const float *w, int rows,
                                int cols);
  /* out (N) = inp through uint8 and back as an int8 layer quantizes its input over
   * the range [lo, hi]: es_quant_act_params (lo, hi, qmax, &s, &z), out =
   * (es_quant_act (x, 1/s, z, qmax) - z) * s, bit for bit. out may be inp. */
  void   (*fake_quant_act)     (EsBackend *be, float *out, const float *inp, float lo,
                                float hi, int qmax, int64_t N);
  /* Its straight-through gradient: dinp (N) = dout where min(lo,0) <= inp <= max(hi,0)
   * (inp the input before fake quantization), 0 elsewhere. dinp may be dout. */
  void   (*fake_quant_act_backward) (EsBackend *be, float *dinp, const float *dout,
                                     const float *inp, float lo, float hi, int64_t N);
  /* Distillation loss on student logits (B,C) and teacher logits (B,C) with labels (B),
   * temperature temp and mix alpha (es-ref.h's distill_forward): probs, soft_s, soft_t
   * (B,C) are kept for backward, losses (B) may be NULL; returns the mean loss to the
   * host. Backward overwrites dlogits (B,C) with the gradient of scale * sum(losses). */
  float  (*distill_forward)  (EsBackend *be, float *probs, float *soft_s, float *soft_t,
                              float *losses, const float *logits, const float *teacher,
                              const int32_t *labels, float temp, float alpha, int B, int C);
  void   (*distill_backward) (EsBackend *be, float *dlogits, const float *probs,
                              const float *soft_s, const float *soft_t,
                              const int32_t *labels, float temp, float alpha, float scale,
                              int B, int C);

  /* resident data, deferred statistics and captured steps ----------------------------
   * (optional, all of them: NULL where the backend has none, as the CPU backend; the
   * trainer then takes its ordinary path). The trainer uses them to train without a
   * host round trip per step: the dataset uploaded once and gathered by row index,
   * the loss and the correct rows added up in backend memory (stats, ES_STATS_N
   * doubles), the optimizer's scheduled values read from a table in backend memory,
   * and the whole step recorded once and replayed (CUDA Graphs). */

  /* out (B, D) = src rows rows[b] (B, backend memory; NULL for rows 0 .. B-1) of a
   * (rows, D) table in backend memory: uint8 converted as x * scale + shift when
   * src_u8, else floats copied. */
  void   (*gather_rows)   (EsBackend *be, float *out, const void *src, bool src_u8,
                           float scale, float shift, const int32_t *rows, int B, int64_t D);
  /* out (B) = src[rows[b]] (labels), rows as gather_rows takes them. */
  void   (*gather_i32)    (EsBackend *be, int32_t *out, const int32_t *src,
                           const int32_t *rows, int B);
  /* softmax_xent_forward that waits for nothing: probs and losses as it writes them,
   * then, unless stats[ES_STATS_HALTED] is set, stats[ES_STATS_LOSS] += the sum of the
   * B losses, [ES_STATS_CORRECT] += the rows whose argmax is the label and
   * [ES_STATS_ROWS] += B when that sum is finite, or [ES_STATS_HALTED] = 1 when not. */
  void   (*softmax_xent_forward_acc) (EsBackend *be, float *probs, float *losses,
                                      const float *logits, const int32_t *labels, int B,
                                      int C, double *stats);
  /* sgd_step and adam_step with what changes from step to step read from backend
   * memory: h = hyper + 4 * *slot holds lr, lr / bc1, 1 / sqrt(bc2) and lr * wd (as
   * adam_step folds them: the same bits); no update at all while
   * stats[ES_STATS_HALTED] or stats[ES_STATS_SKIP] is set. */
  void   (*sgd_step_dev)  (EsBackend *be, float *param, float *velocity, const float *grad,
                           float momentum, bool nesterov, const float *hyper,
                           const int32_t *slot, const double *stats, int64_t N);
  void   (*adam_step_dev) (EsBackend *be, float *param, float *m, float *v, const float *grad,
                           float beta1, float beta2, float eps, const float *hyper,
                           const int32_t *slot, const double *stats, int64_t N);
  /* dropout_forward with its seed read from backend memory: seeds[*slot * stride +
   * index] (the same masks as dropout_forward with that seed). */
  void   (*dropout_forward_dev) (EsBackend *be, float *out, uint8_t *mask, const float *inp,
                                 float rate, const uint64_t *seeds, const int32_t *slot,
                                 int stride, int index, int64_t N);
  /* Unless stats[ES_STATS_HALTED] or [ES_STATS_SKIP]: *slot += 1 and
   * stats[ES_STATS_STEPS] += 1. */
  void   (*step_advance)  (EsBackend *be, int32_t *slot, double *stats);
  /* Record the work queued from graph_begin to graph_end instead of running it;
   * graph_end returns it ready to replay (NULL and err set when it could not be
   * recorded: then none of it ran). graph_launch queues one replay; graph_free. */
  bool   (*graph_begin)   (EsBackend *be, EsError *err);
  void  *(*graph_end)     (EsBackend *be, EsError *err);
  bool   (*graph_launch)  (EsBackend *be, void *graph, EsError *err);
  void   (*graph_free)    (EsBackend *be, void *graph);
  /* Uploads one batch ahead: part i of n goes from src[i] (host; reusable once this
   * returns) through pinned staging slot (0 to 3) to dst[i] (backend memory) on a copy
   * stream, overlapping the work queued. The copy into slot's buffers starts after the
   * work queued before slot's last upload_release. upload_wait: work queued from now
   * on waits for slot's copy. */
  bool   (*upload_ahead)  (EsBackend *be, int slot, int n, void *const *dst,
                           const void *const *src, const size_t *bytes, EsError *err);
  void   (*upload_wait)   (EsBackend *be, int slot);
  void   (*upload_release)(EsBackend *be, int slot);
  /* fp16 loss scaling and clipping by the global norm in such steps (optional too: the
   * trainer runs those steps the ordinary way without them). The arithmetic is the
   * trainer's host-side scaler's and clipping's (es-train.c), the same bits.
   * softmax_xent_backward_dev: softmax_xent_backward with scale = (float)
   * amp[ES_AMP_SCALE] / div (amp: the ES_AMP_N state above).
   * amp_unscale_dev: unless stats[ES_STATS_HALTED], with s the scale: when grad (N)
   * holds an inf or a NaN (its sum of squares is not finite), stats[ES_STATS_SKIP] = 1,
   * [ES_STATS_SKIPPED] += 1, s = max(s * backoff, 1e-30) and the clean steps 0; else
   * [ES_STATS_SKIP] = 0, grad *= 1 / s, clean steps + 1 and, reaching interval, s *=
   * growth when that is finite, and clean steps 0.
   * clip_norm_dev: grad (N) *= (float) (max_norm / norm) when norm = sqrt (sum_squares
   * (grad)) > max_norm, in double. */
  void   (*softmax_xent_backward_dev) (EsBackend *be, float *dlogits, const float *probs,
                                       const int32_t *labels, const double *amp, float div,
                                       int B, int C);
  void   (*amp_unscale_dev) (EsBackend *be, float *grad, int64_t N, double *amp,
                             double *stats, float backoff, float growth, int interval);
  void   (*clip_norm_dev)   (EsBackend *be, float *grad, int64_t N, float max_norm);

  /* mixed precision ------------------------------------------------------------------ */
  /* (optional: NULL for backends that compute in fp32 only, which then refuse
   * anything else) The precision of the matrix products that follow (dense and
   * convolution, forward and backward): precision is an EsPrecision of es-train.h
   * (0 fp32, 1 bf16, 2 fp16). In bf16/fp16 the operands are rounded to 16 bits and
   * the products accumulated in fp32; every pointer stays fp32, and so does every other
   * op. false and err set (ES_ERR_UNSUPPORTED) when the backend cannot. */
  bool   (*set_precision)    (EsBackend *be, int precision, EsError *err);
};

struct EsBackend {
  const EsBackendIface *iface;
  EsBudget             *budget;     /* memory charged by alloc (not owned) */
  int                   n_threads;  /* compute threads the backend uses */
  void                 *impl;       /* the backend's own state */
};

/* The CPU backend: CBLAS for matrix products and run-time dispatched vector loops,
 * on one thread pool of n_threads (0: the number of cores) with BLAS pinned to one
 * thread so pools never oversubscribe. budget may be NULL (no limit). */
EsBackend *es_cpu_backend_new (int n_threads, EsBudget *budget, EsError *err);
/* The thread pool of a CPU backend (for CPU-only runners such as es-exec.h, so they
 * share its threads instead of starting a second pool); NULL for other backends. */
struct EsPool;
struct EsPool *es_cpu_backend_pool (EsBackend *be);
/* The matrix-product path the CPU backends of this process use: "avx512" (CPUs with
 * AVX-512F) or "cblas" (others, or ESPALIER_GEMM=blas in the environment). */
const char *es_cpu_backend_gemm_path (void);
/* Flush-to-zero / denormals-are-zero on the CPU backend's compute threads: on (the
 * default) or off, for the denormal detector that times steps both ways. It takes
 * effect on the calling thread now and on each pool thread before its next task, and
 * holds until changed; false for other backends (nothing changed). */
bool        es_cpu_backend_set_ftz   (EsBackend *be, bool on);
bool        es_cpu_backend_get_ftz   (EsBackend *be);

/* The threads that may compute at once in this process, for the oversubscription
 * detector: the backend's pool, BLAS's own threads (OpenBLAS' openblas_get_num_threads
 * when linked, else 1), OpenMP's (omp_get_max_threads when linked, else the
 * OMP_NUM_THREADS variable, else 0 for none), the cores this process may run on
 * (sched_getaffinity) and the threads the process has (/proc/self/status, 0 when
 * unknown). */
typedef struct {
  int pool_threads, blas_threads, omp_threads, cores, process_threads;
} EsThreadInfo;

void        es_cpu_backend_thread_info (EsBackend *be, EsThreadInfo *info);

static inline void
es_backend_free (EsBackend *be)
{
  if (be != NULL)
    be->iface->destroy (be);
}

#ifdef __cplusplus
}
#endif
