/* es-cuda-emu.h: a CPU emulation of the part of CUDA the backend uses, for testing
 * src/engine/cuda where there is no GPU: the backend's own sources are compiled by a
 * C++ compiler with ES_CUDA_EMULATE defined, against this header instead of
 * cuda_runtime.h and cublas_v2.h, and linked with es-cuda-emu.cc.
 *
 * What it emulates: one device of "emulated" memory (malloc'd, filled with 0xff bytes
 * when allocated and when freed, so reads of unwritten or freed memory give NaN); the
 * runtime calls the backend makes, synchronously, with the copy directions checked
 * against where the pointers live; cuBLAS's column-major sgemm and gemmEx (16-bit
 * operands, with cuda_bf16.h's and cuda_fp16.h's rounding); and kernels: every
 * thread of a block runs as a fiber, and __syncthreads and the warp shuffles switch
 * between them, so the block and warp barriers behave as on the device (a shuffle with
 * missing lanes, or a barrier that can never be passed, aborts with a message).
 * What it is not: a model of timing, of memory ordering between blocks (they run one
 * after another), or of the device's arithmetic (expf and friends are the host's).
 * Test code only. */
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>

/* ---- kernels ------------------------------------------------------------------------ */

struct dim3
{
  unsigned x, y, z;
  dim3 (unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x (vx), y (vy), z (vz) {}
};

/* the running emulated thread's coordinates (set by the scheduler at each switch) */
extern dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
/* one block runs at a time, so a function's static variable is its block's memory */
#define __shared__ static

/* Runs body as a kernel of grid x block threads (x dimensions only). */
void es_emu_launch (dim3 grid, dim3 block, const std::function<void ()> &body);
void __syncthreads ();
/* A barrier of the warp's lanes (all of them: the backend only uses the full mask). */
void __syncwarp (unsigned mask = 0xffffffffu);
/* Every lane of the warp must call it (the backend only ever passes the full mask). */
uint64_t es_emu_shfl_xor (uint64_t bits, int lane_mask);

template <typename T>
static inline T
__shfl_xor_sync (unsigned mask, T v, int lane_mask)
{
  static_assert (sizeof (T) <= 8, "shuffles move at most 8 bytes");
  uint64_t bits = 0;
  T out;

  (void) mask;
  __builtin_memcpy (&bits, &v, sizeof v);
  bits = es_emu_shfl_xor (bits, lane_mask);
  __builtin_memcpy (&out, &bits, sizeof out);
  return out;
}

static inline long long
__float2ll_rn (float x)
{
  return llrintf (x);
}

/* ---- runtime ------------------------------------------------------------------------ */

typedef enum
{
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorNoKernelImageForDevice = 209,
  cudaErrorUnsupportedPtxVersion = 222,
  cudaErrorSystemDriverMismatch = 803,
  cudaErrorCompatNotSupportedOnDevice = 804,
  cudaErrorNotReady = 600,
  cudaErrorLaunchFailure = 719,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureWrongThread = 908,
} cudaError_t;

typedef enum
{
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
} cudaMemcpyKind;

typedef enum
{
  cudaMemoryTypeUnregistered = 0,
  cudaMemoryTypeHost = 1,
  cudaMemoryTypeDevice = 2,
  cudaMemoryTypeManaged = 3,
} cudaMemoryType;

typedef struct
{
  cudaMemoryType type;
  int device;
  void *devicePointer, *hostPointer;
} cudaPointerAttributes;

typedef enum
{
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrL2CacheSize = 38,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
} cudaDeviceAttr;

typedef struct
{
  char name[256];
} cudaDeviceProp;

typedef struct EsEmuStream *cudaStream_t;
#define cudaStreamNonBlocking 0x01

const char *cudaGetErrorName (cudaError_t e);
const char *cudaGetErrorString (cudaError_t e);
cudaError_t cudaGetLastError (void);
cudaError_t cudaGetDeviceCount (int *n);
cudaError_t cudaGetDevice (int *device);
cudaError_t cudaSetDevice (int device);
cudaError_t cudaDeviceGetAttribute (int *value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceGetPCIBusId (char *bus_id, int len, int device);
cudaError_t cudaDriverGetVersion (int *version);
cudaError_t cudaRuntimeGetVersion (int *version);
cudaError_t cudaGetDeviceProperties (cudaDeviceProp *prop, int device);
cudaError_t cudaMemGetInfo (size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMalloc (void **ptr, size_t bytes);
cudaError_t cudaFree (void *ptr);
cudaError_t cudaMallocHost (void **ptr, size_t bytes);
cudaError_t cudaFreeHost (void *ptr);
cudaError_t cudaStreamCreateWithFlags (cudaStream_t *stream, unsigned flags);
cudaError_t cudaStreamDestroy (cudaStream_t stream);
cudaError_t cudaStreamSynchronize (cudaStream_t stream);
/* Every call runs synchronously: the stream is always idle (cudaSuccess). */
cudaError_t cudaStreamQuery (cudaStream_t stream);
cudaError_t cudaMemcpyAsync (void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                             cudaStream_t stream);
cudaError_t cudaMemsetAsync (void *dst, int value, size_t bytes, cudaStream_t stream);
cudaError_t cudaMemset2DAsync (void *dst, size_t pitch, int value, size_t width, size_t height,
                               cudaStream_t stream);
cudaError_t cudaPointerGetAttributes (cudaPointerAttributes *attr, const void *ptr);

/* Pinned memory, events and CUDA Graphs (es-cuda-graph.cu). Events complete at once
 * (every call runs synchronously). Capture: between cudaStreamBeginCapture and
 * cudaStreamEndCapture the kernels, copies, memsets and cuBLAS calls queued on the
 * capturing stream are recorded instead of run (the arguments by value, cuBLAS's
 * alpha and beta read at once as cuBLAS reads host pointers), and cudaGraphLaunch
 * runs them again in order. What the device cannot do while capturing breaks the
 * capture, as there: a synchronization of the capturing stream, an allocation or a
 * free, a copy between the device and pageable host memory on it; the call fails with
 * cudaErrorStreamCaptureUnsupported and cudaStreamEndCapture with
 * cudaErrorStreamCaptureInvalidated. Kernels carry no stream here, so every launch
 * during a capture is taken as the capturing stream's. */
typedef struct EsEmuEvent *cudaEvent_t;
typedef struct EsEmuGraph *cudaGraph_t;
typedef struct EsEmuGraph *cudaGraphExec_t;
#define cudaEventDisableTiming 0x02
#define cudaHostAllocDefault 0x00
typedef enum
{
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
} cudaStreamCaptureMode;

cudaError_t cudaHostAlloc (void **ptr, size_t bytes, unsigned flags);
cudaError_t cudaEventCreateWithFlags (cudaEvent_t *event, unsigned flags);
cudaError_t cudaEventDestroy (cudaEvent_t event);
cudaError_t cudaEventRecord (cudaEvent_t event, cudaStream_t stream);
cudaError_t cudaEventSynchronize (cudaEvent_t event);
cudaError_t cudaStreamWaitEvent (cudaStream_t stream, cudaEvent_t event, unsigned flags);
cudaError_t cudaStreamBeginCapture (cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture (cudaStream_t stream, cudaGraph_t *graph);
cudaError_t cudaGraphInstantiate (cudaGraphExec_t *exec, cudaGraph_t graph,
                                  unsigned long long flags);
cudaError_t cudaGraphLaunch (cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphDestroy (cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy (cudaGraphExec_t exec);
/* For tests: graphs replayed, and work items (launches, copies, cuBLAS calls) run
 * by those replays, since the process started. */
extern "C" long es_emu_graph_launches (void);
extern "C" long es_emu_graph_items_run (void);
/* For tests: host-to-device copies run since the process started (a replayed graph's
 * included). Named so that the emulation's module exports it (es-cuda.map), for the
 * core tests that load it. */
extern "C" long es_cuda_emu_h2d_copies (void);

/* ---- cuBLAS --------------------------------------------------------------------------- */

typedef struct EsEmuBlas *cublasHandle_t;

typedef enum
{
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7,
} cublasStatus_t;

typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUBLAS_POINTER_MODE_HOST = 0 } cublasPointerMode_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3 } cublasMath_t;

cublasStatus_t cublasCreate (cublasHandle_t *handle);
cublasStatus_t cublasDestroy (cublasHandle_t handle);
cublasStatus_t cublasSetStream (cublasHandle_t handle, cudaStream_t stream);
cublasStatus_t cublasSetPointerMode (cublasHandle_t handle, cublasPointerMode_t mode);
cublasStatus_t cublasSetMathMode (cublasHandle_t handle, cublasMath_t mode);
cublasStatus_t cublasSetWorkspace (cublasHandle_t handle, void *workspace, size_t bytes);
const char    *cublasGetStatusName (cublasStatus_t status);
const char    *cublasGetStatusString (cublasStatus_t status);
/* column-major C (m,n) = alpha op(A) (m,k) op(B) (k,n) + beta C, as cuBLAS defines it;
 * the operands must be emulated device memory and the leading dimensions valid */
/* cublasGemmEx with 16-bit operands (CUDA_R_16BF or CUDA_R_16F, both the same) or fp32
 * ones, an fp32 C and CUBLAS_COMPUTE_32F: the operands are decoded exactly and the
 * products summed as cublasSgemm's (the rounding to 16 bits is the caller's) */
typedef enum { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 } cudaDataType_t;
typedef enum { CUBLAS_COMPUTE_32F = 68 } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;
cublasStatus_t cublasGemmEx (cublasHandle_t handle, cublasOperation_t transa,
                             cublasOperation_t transb, int m, int n, int k, const void *alpha,
                             const void *A, cudaDataType_t Atype, int lda, const void *B,
                             cudaDataType_t Btype, int ldb, const void *beta, void *C,
                             cudaDataType_t Ctype, int ldc, cublasComputeType_t computeType,
                             cublasGemmAlgo_t algo);

/* ---- cuda_bf16.h, cuda_fp16.h: the two 16-bit types and their rounding ------------------ */

struct __nv_bfloat16 { uint16_t x; };
struct __half { uint16_t x; };

/* float to bf16 (8 significant bits), round to nearest even; NaN stays a (quiet) NaN */
static inline __nv_bfloat16
__float2bfloat16_rn (float f)
{
  uint32_t u;

  __builtin_memcpy (&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return { (uint16_t) ((u >> 16) | 0x40) };
  /* adding 0x7fff plus the lowest kept bit carries into the kept bits exactly when the
   * dropped half is over a half, or a half with the kept part odd (to even) */
  u += 0x7fffu + ((u >> 16) & 1u);
  return { (uint16_t) (u >> 16) };
}

/* float to IEEE binary16 (11 significant bits, exponent -14..15, subnormals down to
 * 2^-24), round to nearest even; past 65504 (from 65520 up) infinity; NaN quiet */
static inline __half
__float2half_rn (float f)
{
  uint32_t u, sign, mag, exp;
  uint16_t h;

  __builtin_memcpy (&u, &f, 4);
  sign = (u >> 16) & 0x8000u;
  mag = u & 0x7fffffffu;
  exp = mag >> 23;
  if (mag > 0x7f800000u)
    return { (uint16_t) (sign | 0x7e00u | ((mag >> 13) & 0x3ffu)) };
  if (exp >= 143)                       /* 2^16 and up, or infinity */
    return { (uint16_t) (sign | 0x7c00u) };
  if (exp >= 113)                       /* a normal half: 2^-14 .. 2^16 */
    {
      uint32_t m = mag - (112u << 23);  /* rebias the exponent: 127 - 15 */

      m += 0xfffu + ((m >> 13) & 1u);   /* nearest even at bit 13; may carry up to inf */
      h = (uint16_t) (m >> 13);
      return { (uint16_t) (sign | h) };
    }
  if (exp < 102)                        /* under 2^-25: rounds to zero (2^-25 itself is a tie) */
    return { (uint16_t) sign };
  {
    /* subnormal: value = mant * 2^(exp - 150) with the hidden bit; in units of 2^-24
     * that is mant >> (126 - exp), rounded to nearest even */
    const uint32_t mant = (mag & 0x7fffffu) | 0x800000u, shift = 126u - exp;
    const uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);

    h = (uint16_t) (q + (rem > half || (rem == half && (q & 1u))));
    return { (uint16_t) (sign | h) };
  }
}

static inline uint16_t __bfloat16_as_ushort (__nv_bfloat16 h) { return h.x; }
static inline uint16_t __half_as_ushort (__half h) { return h.x; }

cublasStatus_t cublasSgemm (cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const float *alpha,
                            const float *A, int lda, const float *B, int ldb, const float *beta,
                            float *C, int ldc);
