/* es-cuda-emu.h: a CPU emulation of the part of CUDA the backend uses, for testing
 * src/engine/cuda where there is no GPU: the backend's own sources are compiled by a
 * C++ compiler with ES_CUDA_EMULATE defined, against this header instead of
 * cuda_runtime.h and cublas_v2.h, and linked with es-cuda-emu.cc.
 *
 * What it emulates: one device of "emulated" memory (malloc'd, filled with 0xff bytes
 * when allocated and when freed, so reads of unwritten or freed memory give NaN); the
 * runtime calls the backend makes, synchronously, with the copy directions checked
 * against where the pointers live; cuBLAS's column-major sgemm; and kernels: every
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
  cudaErrorLaunchFailure = 719,
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
cudaError_t cudaMemcpyAsync (void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                             cudaStream_t stream);
cudaError_t cudaMemsetAsync (void *dst, int value, size_t bytes, cudaStream_t stream);
cudaError_t cudaMemset2DAsync (void *dst, size_t pitch, int value, size_t width, size_t height,
                               cudaStream_t stream);
cudaError_t cudaPointerGetAttributes (cudaPointerAttributes *attr, const void *ptr);

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
cublasStatus_t cublasSgemm (cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const float *alpha,
                            const float *A, int lda, const float *B, int ldb, const float *beta,
                            float *C, int ldc);
