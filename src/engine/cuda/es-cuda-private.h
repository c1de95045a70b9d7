/* es-cuda-private.h: what the CUDA backend's files share (C++ under nvcc only): the
 * backend's state, the checks that record the first CUDA or cuBLAS failure with its
 * file and line, and the memory helpers of es-cuda.cu that the ops of es-cuda-ops.cu
 * use. Not installed, not for callers. */
#pragma once

#ifdef ES_CUDA_EMULATE
/* tests/cuda/emu: the same code on a CPU emulation of the runtime, cuBLAS and the
 * kernels' threads, so the backend is tested where there is no GPU */
#include "es-cuda-emu.h"
#else
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include "es-cuda.h"

/* Reductions that return a value to the host run in two launches: at most
 * ES_CUDA_PARTIALS blocks each write a partial (in a fixed order, so results repeat
 * bit for bit), then one block adds them up. */
#define ES_CUDA_PARTIALS 1024
/* Threads of a block in the element-wise and row kernels (8 warps). */
#define ES_CUDA_THREADS 256

/* Staging slots of es-backend.h's upload_ahead. */
#define ES_CUDA_AHEAD_SLOTS 4

/* A device buffer that grows on demand, charged to the budget as ES_MEM_WORKSPACE. */
typedef struct {
  void   *ptr;
  size_t  bytes;
} EsCudaBuf;

typedef struct {
  EsBackend       be;
  int             device;
  cudaStream_t    stream;
  cublasHandle_t  blas;
  bool            tf32;
  int             precision;     /* of the matrix products: ES_CUDA_FP32, _BF16, _FP16 */
  EsCudaBuf       half;          /* their operands rounded to 16 bits (es-cuda-ops.cu) */
  int64_t         fp32_products; /* products asked in 16 bits that ran in fp32 for want of
                                  * room (es_cuda_backend_fp32_products) */
  bool            conv_direct;   /* ESPALIER_CUDA_CONV=direct */
  bool            in_conv;       /* a convolution is using ws (no one may release it) */

  void           *blas_ws;       /* cuBLAS workspace (blas_ws_bytes, charged) */
  size_t          blas_ws_bytes;
  double         *partial;       /* (2, ES_CUDA_PARTIALS) per-block partials */
  double         *result;        /* (8) finished reductions, device side */
  double         *host_result;   /* (8) pinned host memory the results come back to */
  size_t          fixed_bytes;   /* partial + result, charged as ES_MEM_WORKSPACE */

  EsCudaBuf       ws;            /* convolution columns */
  EsCudaBuf       stage;         /* uint8 batches on their way in (load_u8) */
  EsCudaBuf       idx;           /* argmax results (B) on their way out */
  float          *host_f32;      /* (ES_CUDA_HOST_CHUNK) host staging when stage is refused */

  /* softmax_xent_forward also counts the rows it got right, for the argmax_correct
   * call that follows it in a training step (saves a second wait) */
  bool            xent_valid;
  const float    *xent_probs;
  const int32_t  *xent_labels;
  int             xent_B, xent_C, xent_correct;

  bool            failed;        /* a CUDA or cuBLAS call failed: no more work */
  EsError         error;         /* the first failure */

  /* es-cuda-graph.cu: a CUDA Graph being recorded, and uploads one batch ahead (the copy
   * stream, pinned staging slots and their events, all made on first use) */
  bool            capturing;
  cudaStream_t    copy_stream;
  cudaEvent_t     ev_copied[ES_CUDA_AHEAD_SLOTS];  /* a slot's copy has left its pinned buffer */
  cudaEvent_t     ev_released[ES_CUDA_AHEAD_SLOTS];/* the work that read the slot's device
                                                    * buffers is done */
  void           *pinned[ES_CUDA_AHEAD_SLOTS];     /* pinned host memory, charged to no budget */
  size_t          pinned_bytes[ES_CUDA_AHEAD_SLOTS];
} EsCuda;

#define ES_CUDA_HOST_CHUNK (1 << 16)

/* EsCuda.precision: the values of es-train.h's EsPrecision */
#define ES_CUDA_FP32 0
#define ES_CUDA_BF16 1
#define ES_CUDA_FP16 2

static inline EsCuda *
es_cuda_of (EsBackend *be)
{
  return (EsCuda *) be->impl;
}

/* Records the first failure (what, file, line) and marks the backend failed; true
 * when status is success. */
bool  es_cuda_record        (EsCuda *cu, cudaError_t status, const char *what,
                             const char *file, int line);
bool  es_cuda_record_blas   (EsCuda *cu, cublasStatus_t status, const char *what,
                             const char *file, int line);

#define ES_CU_CHECK(cu, call) es_cuda_record ((cu), (call), #call, __FILE__, __LINE__)
#define ES_BLAS_CHECK(cu, call) es_cuda_record_blas ((cu), (call), #call, __FILE__, __LINE__)
/* After every kernel launch: a bad configuration shows here, not at the next sync. */
#define ES_CU_LAUNCHED(cu, name) es_cuda_record ((cu), cudaGetLastError (), name, __FILE__, __LINE__)

/* Kernel launching, shared by the .cu files. */
/* Element i of a grid-stride loop over n. */
#define FOR_EACH(i, n)                                                                     \
  for (int64_t i = (int64_t) blockIdx.x * blockDim.x + threadIdx.x; i < (int64_t) (n);    \
       i += (int64_t) gridDim.x * blockDim.x)

/* Queue kernel on the backend's stream and record a failed launch. Under the
 * emulation the arguments are captured by value, so a launch recorded in a graph can
 * be replayed after the launcher has returned. */
#ifndef ES_CUDA_EMULATE
#define LAUNCH(cu, kernel, grid, block, ...)                                               \
  do                                                                                      \
    {                                                                                     \
      kernel<<<(grid), (block), 0, (cu)->stream>>> (__VA_ARGS__);                         \
      ES_CU_LAUNCHED ((cu), #kernel);                                                     \
    }                                                                                     \
  while (0)
#else
#define LAUNCH(cu, kernel, grid, block, ...)                                               \
  do                                                                                      \
    {                                                                                     \
      es_emu_launch ((grid), (block), [=] { kernel (__VA_ARGS__); });                      \
      ES_CU_LAUNCHED ((cu), #kernel);                                                     \
    }                                                                                     \
  while (0)
#endif

/* Blocks for n elements, one per thread, capped (the loops stride over the rest). */
static inline unsigned
grid_for (int64_t n)
{
  int64_t g = ES_CEIL_DIV (n, (int64_t) ES_CUDA_THREADS);

  return (unsigned) (g < 1 ? 1 : g > (1 << 20) ? (1 << 20) : g);
}

/* Called first by every op: false when the backend has failed (do nothing then). It
 * makes the backend's device current on the calling thread and forgets the counted
 * rows of the last softmax_xent_forward (the op may write what they were counted
 * on); es_cuda_enter_read, for calls that write no device memory, keeps them. */
bool  es_cuda_enter         (EsCuda *cu);
bool  es_cuda_enter_read    (EsCuda *cu);

/* The buffer b grown to at least bytes (never shrunk), charged as ES_MEM_WORKSPACE;
 * NULL when the budget or the device refuses (not a failure of the backend: callers
 * then take a path without it). */
void *es_cuda_buf_get       (EsCuda *cu, EsCudaBuf *b, size_t bytes);
void  es_cuda_buf_release   (EsCuda *cu, EsCudaBuf *b);

/* Waits for the stream and copies n doubles of cu->result to out; false (out left
 * NaN) when the backend has failed. */
bool  es_cuda_fetch_results (EsCuda *cu, double *out, int n);

/* Why cudaGetDeviceCount gave e (or no device), in words for a user (es-cuda-device.cu);
 * a static string, or a buffer of the calling thread. */
const char *es_cuda_no_device_reason (cudaError_t e);

/* The memory functions of the interface (es-cuda.cu). */
void *es_cuda_alloc         (EsBackend *be, EsMemKind kind, size_t bytes, EsError *err);
void  es_cuda_free          (EsBackend *be, EsMemKind kind, void *ptr, size_t bytes);
void  es_cuda_upload        (EsBackend *be, void *dst, const void *src, size_t bytes);
void  es_cuda_download      (EsBackend *be, void *dst, const void *src, size_t bytes);
void  es_cuda_copy          (EsBackend *be, void *dst, const void *src, size_t bytes);
void  es_cuda_zero          (EsBackend *be, void *dst, size_t bytes);
void  es_cuda_synchronize   (EsBackend *be);
bool  es_cuda_supports_op   (EsBackend *be, EsOp op);
void  es_cuda_destroy       (EsBackend *be);

/* es-cuda-ops.cu: softmax_xent_forward's kernel alone (probs, losses and per block the
 * loss sum and correct rows into cu->partial); returns the blocks it ran, 0 for none. */
unsigned es_cuda_xent_partials (EsCuda *cu, float *probs, float *losses, const float *logits,
                                const int32_t *labels, int B, int C);
/* es-cuda-ops.cu: sum_squares's kernels alone, the sum of squares of x (N > 0) left in
 * cu->result[0] (device memory). */
void     es_cuda_sum_squares_dev (EsCuda *cu, const float *x, int64_t N);

/* es-cuda-graph.cu: the ops of es-backend.h's optional block from gather_rows on, and
 * the end of the uploads ahead (at destroy). */
void  es_cuda_gather_rows   (EsBackend *be, float *out, const void *src, bool src_u8,
                             float scale, float shift, const int32_t *rows, int B, int64_t D);
void  es_cuda_gather_i32    (EsBackend *be, int32_t *out, const int32_t *src,
                             const int32_t *rows, int B);
void  es_cuda_softmax_xent_forward_acc (EsBackend *be, float *probs, float *losses,
                                        const float *logits, const int32_t *labels, int B,
                                        int C, double *stats);
void  es_cuda_sgd_step_dev  (EsBackend *be, float *param, float *velocity, const float *grad,
                             float momentum, bool nesterov, const float *hyper,
                             const int32_t *slot, const double *stats, int64_t N);
void  es_cuda_adam_step_dev (EsBackend *be, float *param, float *m, float *v,
                             const float *grad, float beta1, float beta2, float eps,
                             const float *hyper, const int32_t *slot, const double *stats,
                             int64_t N);
void  es_cuda_dropout_forward_dev (EsBackend *be, float *out, uint8_t *mask, const float *inp,
                                   float rate, const uint64_t *seeds, const int32_t *slot,
                                   int stride, int index, int64_t N);
void  es_cuda_step_advance  (EsBackend *be, int32_t *slot, double *stats);
bool  es_cuda_graph_begin   (EsBackend *be, EsError *err);
void *es_cuda_graph_end     (EsBackend *be, EsError *err);
bool  es_cuda_graph_launch  (EsBackend *be, void *graph, EsError *err);
void  es_cuda_graph_free    (EsBackend *be, void *graph);
bool  es_cuda_upload_ahead  (EsBackend *be, int slot, int n, void *const *dst,
                             const void *const *src, const size_t *bytes, EsError *err);
void  es_cuda_upload_wait   (EsBackend *be, int slot);
void  es_cuda_upload_release (EsBackend *be, int slot);
void  es_cuda_softmax_xent_backward_dev (EsBackend *be, float *dlogits, const float *probs,
                                         const int32_t *labels, const double *amp, float div,
                                         int B, int C);
void  es_cuda_amp_unscale_dev (EsBackend *be, float *grad, int64_t N, double *amp,
                               double *stats, float backoff, float growth, int interval);
void  es_cuda_clip_norm_dev (EsBackend *be, float *grad, int64_t N, float max_norm);
void  es_cuda_ahead_free    (EsCuda *cu);

/* Those ops as designated initializers, for es_cuda_iface. */
#define ES_CUDA_GRAPH_OPS                                                                  \
  .gather_rows = es_cuda_gather_rows,                                                      \
  .gather_i32 = es_cuda_gather_i32,                                                        \
  .softmax_xent_forward_acc = es_cuda_softmax_xent_forward_acc,                            \
  .sgd_step_dev = es_cuda_sgd_step_dev,                                                    \
  .adam_step_dev = es_cuda_adam_step_dev,                                                  \
  .dropout_forward_dev = es_cuda_dropout_forward_dev,                                      \
  .step_advance = es_cuda_step_advance,                                                    \
  .graph_begin = es_cuda_graph_begin,                                                      \
  .graph_end = es_cuda_graph_end,                                                          \
  .graph_launch = es_cuda_graph_launch,                                                    \
  .graph_free = es_cuda_graph_free,                                                        \
  .upload_ahead = es_cuda_upload_ahead,                                                    \
  .upload_wait = es_cuda_upload_wait,                                                      \
  .upload_release = es_cuda_upload_release,                                                \
  .softmax_xent_backward_dev = es_cuda_softmax_xent_backward_dev,                          \
  .amp_unscale_dev = es_cuda_amp_unscale_dev,                                              \
  .clip_norm_dev = es_cuda_clip_norm_dev,

/* The interface, with the ops of es-cuda-ops.cu. */
extern const EsBackendIface es_cuda_iface;
