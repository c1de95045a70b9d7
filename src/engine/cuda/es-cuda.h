/* es-cuda.h: the CUDA backend (es-backend.h's interface on an NVIDIA GPU) and the
 * device list. Matrix products go through cuBLAS, everything else through our own
 * kernels; every op is queued on one stream of the backend, and ops that return a
 * value to the host (the losses, argmax_correct, sum_squares, min_max) wait for it.
 * Built only when nvcc is found (config.h's ES_HAVE_CUDA); tests and benchmarks link
 * the engine's CUDA library, while core opens it as a module (libespalier-cuda.so,
 * through espalier-device.h) so that programs start without CUDA's libraries.
 *
 * A dataset resident on the device, batches streamed ahead through pinned memory and
 * training steps captured in a CUDA Graph are es-train.h's (es_resident_new,
 * es_trainer_prefetch, es_trainer_set_graphs) on this backend's optional ops
 * (es-cuda-graph.cu). TF32 for the matrix products can be switched on
 * (es_cuda_backend_set_tf32).
 *
 * Mixed precision: the interface's set_precision makes the matrix products (dense and
 * convolution, forward and backward) round their operands to bf16 (compute capability
 * 8.0 and newer) or fp16 and multiply them on the tensor cores with fp32 accumulation
 * (cublasGemmEx, CUBLAS_COMPUTE_32F); the tensors the ops see stay fp32, so the
 * weights are fp32 master weights and every other op runs in fp32. The loss scaling
 * fp16 needs is the trainer's (es-train.h). es-cuda-ops.cu says why the 16-bit
 * operands are converted in every product rather than kept.
 *
 * Errors: the op functions of EsBackendIface return nothing, so a CUDA or cuBLAS
 * failure inside one is recorded in the backend (the first one, with the call, file
 * and line) and the backend stops doing work: later ops return at once, the losses
 * and sums they would return are NaN (a trainer then stops with ES_ERR_NUMERIC) and
 * es_cuda_backend_check tells what went wrong. Allocation failures are reported by
 * alloc itself and do not stop the backend. */
#pragma once

#include "es-backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* CUDA devices this process can use: 0 when there is no device, no driver, or a
 * driver too old for the runtime we were built with (never an error). */
int         es_cuda_device_count     (void);

/* One device, as nvidia-smi shows it. The NVML fields are read through
 * libnvidia-ml.so.1 loaded at run time; without it have_nvml is false and they are
 * -1. */
typedef struct {
  int     index;
  char    name[256];
  char    pci_bus_id[32];        /* "0000:3B:00.0" */
  int     cc_major, cc_minor;    /* compute capability */
  int     multiprocessors;
  size_t  mem_total, mem_free;   /* bytes, as cudaMemGetInfo reports them */
  size_t  l2_bytes;
  int     driver_version;        /* CUDA version the driver supports: 13000 = 13.0 */
  int     runtime_version;       /* CUDA runtime we were built with */
  bool    have_nvml;
  char    driver_string[80];     /* NVML's driver version ("580.159.03"), or "" */
  int     utilization_gpu;       /* percent of time a kernel ran, NVML; -1 unknown */
  int     utilization_mem;       /* percent of time memory was read or written; -1 */
  int     temperature_c;         /* -1 unknown */
  double  power_w;               /* current draw; -1 unknown */
  double  power_limit_w;         /* enforced limit; -1 unknown */
} EsCudaDeviceInfo;

/* Fills info for device (0 .. es_cuda_device_count () - 1). Reading the free memory
 * creates the device's context if it has none (as any CUDA use does). false and err
 * (ES_ERR_UNSUPPORTED without a usable device, ES_ERR_INVALID for a bad index). */
bool        es_cuda_device_info      (int device, EsCudaDeviceInfo *info, EsError *err);

/* A CUDA backend on device, its allocations charged to budget (may be NULL: no
 * limit); the budget is the memory limit of the GPU pool, and alloc never goes past
 * it. The backend itself takes a little of it at once: cuBLAS's workspace (4 MiB, or
 * none when the budget is smaller) and 16 KiB for reductions; the ops borrow more as
 * workspace when the budget has room (convolution columns, staging for uint8
 * batches) and take slower paths without it when it has not. NULL and err set when
 * there is no device or driver (ES_ERR_UNSUPPORTED, the message says why and the
 * caller can fall back to the CPU backend), the device is older than compute
 * capability 7.5, our kernels do not load on it, or the budget cannot hold the
 * backend's own buffers (ES_ERR_BUDGET). Never aborts the process.
 * The environment variable ESPALIER_CUDA_CONV=direct makes convolutions take the
 * kernels that need no workspace (otherwise they run as im2col + GEMM and take them
 * only when the budget refuses the workspace); for tests. */
EsBackend  *es_cuda_backend_new      (int device, EsBudget *budget, EsError *err);

/* The device index of a CUDA backend, or -1 when be is not one. */
int         es_cuda_backend_device   (EsBackend *be);

/* Waits for the backend's queued work; false and err set (the first failure, with
 * the call, file and line) when a CUDA or cuBLAS call has failed since the backend
 * was made. Once false, it stays false: make a new backend. */
bool        es_cuda_backend_check    (EsBackend *be, EsError *err);

/* TF32 tensor cores for the fp32 matrix products (dense and convolution): about
 * 10 bits of mantissa in the products, far faster on Ampere and newer. Off by
 * default, so results agree with the CPU backend to fp32 rounding. false when be is
 * not a CUDA backend. */
bool        es_cuda_backend_set_tf32 (EsBackend *be, bool on);

/* Mixed precision's fallbacks: the matrix products asked in bf16 or fp16 (the
 * interface's set_precision) that ran in fp32 instead because the budget or the device
 * had no room for their 16-bit operand copies (or a convolution's columns), since the
 * backend was made; -1 when be is not a CUDA backend. Results stay right, only slower
 * and more exact: a trainer under a budget of es_mem_plan's bytes (planned for this
 * backend, EsTrainConfig.plan_cuda) has none. */
int64_t     es_cuda_backend_fp32_products (EsBackend *be);

/* For a library that queues its own work on the backend's stream (NCCL's allreduce of
 * the data-parallel gradients, espalier-distributed.c): the backend's cudaStream_t, with
 * the backend's device made current on the calling thread (NCCL takes the current
 * device); NULL when be is not a CUDA backend or has failed. Work queued on it runs in
 * order with the backend's ops. */
void       *es_cuda_backend_get_stream (EsBackend *be);
/* Whether the work queued on the stream so far has finished, without waiting (to wait
 * with a deadline): 1 finished, 0 still running, -1 when be is not a CUDA backend or a
 * CUDA call has failed (es_cuda_backend_check says which). */
int         es_cuda_backend_query    (EsBackend *be);

/* Page-locked ("pinned") host memory of bytes, 64-byte aligned, for buffers the GPU
 * copies to and from often (an MPI library staging gradients): the copies run by DMA
 * at full speed and need no bounce buffer. NULL when none can be had (no device or
 * driver, or the system's limit on locked memory): the caller then uses ordinary
 * memory. Free it with es_cuda_host_free (NULL is ignored). Each block is costly to
 * make (it is mapped for the device): allocate once, reuse. */
void       *es_cuda_host_alloc       (size_t bytes);
void        es_cuda_host_free        (void *ptr);

/* The module's copy of the engine has its own message-translation hook (es-common.h's
 * es_set_translate): core gives it its own when it opens the module (espalier-device.c),
 * so the backend's errors come in the user's language too. NULL: English. */
void        es_cuda_set_translate    (EsTranslateFunc fn);

#ifdef __cplusplus
}
#endif
