/* es-cuda-emu.cc: the CPU emulation of CUDA declared in es-cuda-emu.h (test code): the
 * runtime calls, cuBLAS's sgemm, and the kernel scheduler.
 *
 * Kernels: a block's threads run as fibers on stacks of their own; a fiber runs until
 * it finishes or waits at a barrier (__syncthreads, or the two warp barriers around a
 * shuffle's exchange), then the next one runs. When every fiber waits, the scheduler
 * releases the warps whose lanes all wait at a warp barrier, else the block when all
 * its live threads wait at __syncthreads; when nothing can be released it reports the
 * deadlock and aborts. A kernel whose first launch never reached a barrier runs its
 * threads one after another on later launches, without fibers (fast); if such a thread
 * then reaches a barrier after all, that is reported and aborts too. Runnable fibers are
 * taken in an order that changes from block to block. Blocks run one after another,
 * which is a legal schedule of independent blocks. The fiber switch is a few lines of
 * x86-64 assembly (ucontext elsewhere), told to AddressSanitizer when it is on.
 * Not thread-safe: one test thread drives it. */
#include "es-cuda-emu.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>
#include <typeindex>
dim3 threadIdx, blockIdx, blockDim, gridDim;

/* ---- memory ------------------------------------------------------------------------- */

namespace {

enum class Kind { device, pinned };

struct Alloc
{
  size_t bytes;
  Kind   kind;
};

std::map<uintptr_t, Alloc> allocs;
size_t device_used;
const size_t device_capacity = (size_t) 8 << 30;   /* 8 GiB of emulated device memory */
cudaError_t last_error = cudaSuccess;

cudaError_t
fail (cudaError_t e)
{
  if (e != cudaSuccess)
    last_error = e;
  return e;
}

/* Whether [p, p + n) lies inside one allocation of kind. */
bool
inside (const void *p, size_t n, Kind kind)
{
  uintptr_t a = (uintptr_t) p;
  auto it = allocs.upper_bound (a);

  if (it == allocs.begin ())
    return false;
  --it;
  return it->second.kind == kind && a >= it->first && a + n <= it->first + it->second.bytes
         && a + n >= a;
}

bool
is_device (const void *p, size_t n)
{
  return inside (p, n ? n : 1, Kind::device);
}

/* ---- graph capture: the stream capturing, what it recorded, whether it broke ---- */
cudaStream_t capture_stream;
std::vector<std::function<void ()>> *captured;
bool capture_broken;
long graph_launches, graph_items;

/* A call the device refuses while stream work is recorded: the capture breaks. */
cudaError_t
break_capture (const char *what)
{
  fprintf (stderr, "cuda emulator: %s while a CUDA Graph is recorded\n", what);
  capture_broken = true;
  return fail (cudaErrorStreamCaptureUnsupported);
}

}  // namespace

const char *
cudaGetErrorName (cudaError_t e)
{
  switch (e)
    {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaErrorUnknown";
    }
}

const char *
cudaGetErrorString (cudaError_t e)
{
  switch (e)
    {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "unknown error";
    }
}

cudaError_t
cudaGetLastError (void)
{
  cudaError_t e = last_error;

  last_error = cudaSuccess;
  return e;
}

cudaError_t
cudaGetDeviceCount (int *n)
{
  *n = 1;
  return cudaSuccess;
}

static int current_device;

cudaError_t
cudaGetDevice (int *device)
{
  *device = current_device;
  return cudaSuccess;
}

cudaError_t
cudaSetDevice (int device)
{
  if (device != 0)
    return fail (cudaErrorInvalidDevice);
  current_device = device;
  return cudaSuccess;
}

cudaError_t
cudaDeviceGetAttribute (int *value, cudaDeviceAttr attr, int device)
{
  if (device != 0)
    return fail (cudaErrorInvalidDevice);
  switch (attr)
    {
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMultiProcessorCount: *value = 132; break;
    case cudaDevAttrL2CacheSize: *value = 50 << 20; break;
    default: return fail (cudaErrorInvalidValue);
    }
  return cudaSuccess;
}

cudaError_t
cudaDeviceGetPCIBusId (char *bus_id, int len, int device)
{
  if (device != 0)
    return fail (cudaErrorInvalidDevice);
  snprintf (bus_id, (size_t) len, "0000:00:00.0");
  return cudaSuccess;
}

cudaError_t
cudaDriverGetVersion (int *version)
{
  *version = 13000;
  return cudaSuccess;
}

cudaError_t
cudaRuntimeGetVersion (int *version)
{
  *version = 13000;
  return cudaSuccess;
}

cudaError_t
cudaGetDeviceProperties (cudaDeviceProp *prop, int device)
{
  if (device != 0)
    return fail (cudaErrorInvalidDevice);
  memset (prop, 0, sizeof *prop);
  snprintf (prop->name, sizeof prop->name, "CUDA emulator (Espalier tests)");
  return cudaSuccess;
}

cudaError_t
cudaMemGetInfo (size_t *free_bytes, size_t *total_bytes)
{
  *total_bytes = device_capacity;
  *free_bytes = device_capacity - device_used;
  return cudaSuccess;
}

static cudaError_t
emu_alloc (void **ptr, size_t bytes, Kind kind)
{
  void *p;

  if (kind == Kind::device && bytes > device_capacity - device_used)
    return fail (cudaErrorMemoryAllocation);
  p = malloc (bytes ? bytes : 1);
  if (p == NULL)
    return fail (cudaErrorMemoryAllocation);
  memset (p, 0xff, bytes);  /* NaN until written */
  allocs[(uintptr_t) p] = Alloc { bytes ? bytes : 1, kind };
  if (kind == Kind::device)
    device_used += bytes;
  *ptr = p;
  return cudaSuccess;
}

static cudaError_t
emu_free (void *ptr, Kind kind)
{
  auto it = allocs.find ((uintptr_t) ptr);

  if (ptr == NULL)
    return cudaSuccess;
  if (it == allocs.end () || it->second.kind != kind)
    {
      fprintf (stderr, "cuda emulator: freeing %p, which is not %s memory\n", ptr,
               kind == Kind::device ? "device" : "pinned host");
      abort ();
    }
  memset (ptr, 0xff, it->second.bytes);  /* reads after free give NaN */
  if (kind == Kind::device)
    device_used -= it->second.bytes;
  allocs.erase (it);
  free (ptr);
  return cudaSuccess;
}

cudaError_t
cudaMalloc (void **ptr, size_t bytes)
{
  if (capture_stream != NULL)
    return break_capture ("cudaMalloc");
  return emu_alloc (ptr, bytes, Kind::device);
}

cudaError_t
cudaFree (void *ptr)
{
  if (capture_stream != NULL)
    return break_capture ("cudaFree");
  return emu_free (ptr, Kind::device);
}

cudaError_t
cudaMallocHost (void **ptr, size_t bytes)
{
  if (capture_stream != NULL)
    return break_capture ("cudaMallocHost");
  return emu_alloc (ptr, bytes, Kind::pinned);
}

cudaError_t
cudaHostAlloc (void **ptr, size_t bytes, unsigned)
{
  return cudaMallocHost (ptr, bytes);
}

cudaError_t
cudaFreeHost (void *ptr)
{
  if (capture_stream != NULL)
    return break_capture ("cudaFreeHost");
  return emu_free (ptr, Kind::pinned);
}

struct EsEmuStream
{
  unsigned flags;
};

cudaError_t
cudaStreamCreateWithFlags (cudaStream_t *stream, unsigned flags)
{
  *stream = new EsEmuStream { flags };
  return cudaSuccess;
}

cudaError_t
cudaStreamDestroy (cudaStream_t stream)
{
  delete stream;
  return cudaSuccess;
}

cudaError_t
cudaStreamSynchronize (cudaStream_t stream)
{
  if (stream == NULL)
    return fail (cudaErrorInvalidValue);
  if (stream == capture_stream)
    return break_capture ("cudaStreamSynchronize of the capturing stream");
  return cudaSuccess;
}

cudaError_t
cudaStreamQuery (cudaStream_t stream)
{
  if (stream == NULL)
    return fail (cudaErrorInvalidValue);
  if (stream == capture_stream)
    return break_capture ("cudaStreamQuery of the capturing stream");
  return cudaSuccess;
}

/* ---- events and graphs --------------------------------------------------------------- */

struct EsEmuEvent
{
  unsigned flags;
};

struct EsEmuGraph
{
  std::vector<std::function<void ()>> items;
};

cudaError_t
cudaEventCreateWithFlags (cudaEvent_t *event, unsigned flags)
{
  *event = new EsEmuEvent { flags };
  return cudaSuccess;
}

cudaError_t
cudaEventDestroy (cudaEvent_t event)
{
  delete event;
  return cudaSuccess;
}

/* Work runs as it is queued, so an event is complete as soon as it is recorded; one
 * recorded on the capturing stream becomes a node that does nothing. */
cudaError_t
cudaEventRecord (cudaEvent_t event, cudaStream_t stream)
{
  if (event == NULL || stream == NULL)
    return fail (cudaErrorInvalidValue);
  if (stream == capture_stream)
    captured->push_back ([] {});
  return cudaSuccess;
}

cudaError_t
cudaEventSynchronize (cudaEvent_t event)
{
  return event == NULL ? fail (cudaErrorInvalidValue) : cudaSuccess;
}

cudaError_t
cudaStreamWaitEvent (cudaStream_t stream, cudaEvent_t event, unsigned)
{
  return stream == NULL || event == NULL ? fail (cudaErrorInvalidValue) : cudaSuccess;
}

cudaError_t
cudaStreamBeginCapture (cudaStream_t stream, cudaStreamCaptureMode)
{
  if (stream == NULL || capture_stream != NULL)
    return fail (cudaErrorInvalidValue);
  capture_stream = stream;
  captured = new std::vector<std::function<void ()>> ();
  capture_broken = false;
  return cudaSuccess;
}

cudaError_t
cudaStreamEndCapture (cudaStream_t stream, cudaGraph_t *graph)
{
  std::vector<std::function<void ()>> *items = captured;

  *graph = NULL;
  if (stream == NULL || stream != capture_stream)
    return fail (cudaErrorInvalidValue);
  capture_stream = NULL;
  captured = NULL;
  if (capture_broken)
    {
      delete items;
      return fail (cudaErrorStreamCaptureInvalidated);
    }
  *graph = new EsEmuGraph { std::move (*items) };
  delete items;
  return cudaSuccess;
}

cudaError_t
cudaGraphInstantiate (cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long)
{
  if (graph == NULL)
    return fail (cudaErrorInvalidValue);
  *exec = new EsEmuGraph { graph->items };
  return cudaSuccess;
}

cudaError_t
cudaGraphLaunch (cudaGraphExec_t exec, cudaStream_t stream)
{
  if (exec == NULL || stream == NULL || capture_stream != NULL)
    return fail (cudaErrorInvalidValue);
  graph_launches++;
  for (const auto &item : exec->items)
    {
      item ();
      graph_items++;
    }
  return cudaSuccess;
}

cudaError_t
cudaGraphDestroy (cudaGraph_t graph)
{
  delete graph;
  return cudaSuccess;
}

cudaError_t
cudaGraphExecDestroy (cudaGraphExec_t exec)
{
  delete exec;
  return cudaSuccess;
}

extern "C" long
es_emu_graph_launches (void)
{
  return graph_launches;
}

extern "C" long
es_emu_graph_items_run (void)
{
  return graph_items;
}

/* host-to-device copies run (not those recorded), for es_cuda_emu_h2d_copies */
static long h2d_copies;

extern "C" long
es_cuda_emu_h2d_copies (void)
{
  return h2d_copies;
}

/* Copies run at once; the direction must match where the pointers live (the
 * backend names it every time), and a device range must lie inside one allocation. */
cudaError_t
cudaMemcpyAsync (void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                 cudaStream_t stream)
{
  bool ok;

  if (stream == NULL)
    return fail (cudaErrorInvalidValue);
  if (stream == capture_stream)
    {
      /* the device copies from and to pinned host memory only, inside a graph */
      if ((kind == cudaMemcpyHostToDevice && !inside (src, bytes ? bytes : 1, Kind::pinned))
          || (kind == cudaMemcpyDeviceToHost && !inside (dst, bytes ? bytes : 1, Kind::pinned)))
        return break_capture ("a copy with pageable host memory");
      captured->push_back ([=] { (void) cudaMemcpyAsync (dst, src, bytes, kind, stream); });
      return cudaSuccess;
    }
  switch (kind)
    {
    case cudaMemcpyHostToDevice:
      ok = is_device (dst, bytes) && !is_device (src, 1);
      break;
    case cudaMemcpyDeviceToHost:
      ok = is_device (src, bytes) && !is_device (dst, 1);
      break;
    case cudaMemcpyDeviceToDevice:
      ok = is_device (src, bytes) && is_device (dst, bytes);
      break;
    default:
      ok = false;
      break;
    }
  if (!ok)
    {
      fprintf (stderr, "cuda emulator: cudaMemcpyAsync of %zu bytes, kind %d, from %p to %p "
               "does not match where they live\n", bytes, (int) kind, src, dst);
      return fail (cudaErrorInvalidValue);
    }
  if (kind == cudaMemcpyHostToDevice)
    h2d_copies++;
  memmove (dst, src, bytes);
  return cudaSuccess;
}

cudaError_t
cudaMemsetAsync (void *dst, int value, size_t bytes, cudaStream_t stream)
{
  if (stream != NULL && stream == capture_stream)
    {
      captured->push_back ([=] { (void) cudaMemsetAsync (dst, value, bytes, stream); });
      return cudaSuccess;
    }
  if (stream == NULL || !is_device (dst, bytes))
    {
      fprintf (stderr, "cuda emulator: cudaMemsetAsync of %zu bytes at %p outside device "
               "memory\n", bytes, dst);
      return fail (cudaErrorInvalidValue);
    }
  memset (dst, value, bytes);
  return cudaSuccess;
}

cudaError_t
cudaMemset2DAsync (void *dst, size_t pitch, int value, size_t width, size_t height,
                   cudaStream_t stream)
{
  if (height == 0 || width == 0)
    return cudaSuccess;
  if (stream != NULL && stream == capture_stream)
    {
      captured->push_back ([=] {
        (void) cudaMemset2DAsync (dst, pitch, value, width, height, stream);
      });
      return cudaSuccess;
    }
  if (stream == NULL || width > pitch || !is_device (dst, pitch * (height - 1) + width))
    {
      fprintf (stderr, "cuda emulator: cudaMemset2DAsync of %zu x %zu bytes (pitch %zu) at %p "
               "outside device memory\n", height, width, pitch, dst);
      return fail (cudaErrorInvalidValue);
    }
  for (size_t r = 0; r < height; r++)
    memset ((char *) dst + r * pitch, value, width);
  return cudaSuccess;
}

cudaError_t
cudaPointerGetAttributes (cudaPointerAttributes *attr, const void *ptr)
{
  memset (attr, 0, sizeof *attr);
  attr->type = inside (ptr, 1, Kind::device) ? cudaMemoryTypeDevice
               : inside (ptr, 1, Kind::pinned) ? cudaMemoryTypeHost
               : cudaMemoryTypeUnregistered;
  return cudaSuccess;
}

/* ---- cuBLAS ---------------------------------------------------------------------------- */

struct EsEmuBlas
{
  cudaStream_t stream;
};

cublasStatus_t
cublasCreate (cublasHandle_t *handle)
{
  *handle = new EsEmuBlas { NULL };
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t
cublasDestroy (cublasHandle_t handle)
{
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t
cublasSetStream (cublasHandle_t handle, cudaStream_t stream)
{
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t
cublasSetPointerMode (cublasHandle_t, cublasPointerMode_t)
{
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t
cublasSetMathMode (cublasHandle_t, cublasMath_t)
{
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t
cublasSetWorkspace (cublasHandle_t, void *workspace, size_t bytes)
{
  if (bytes > 0 && !is_device (workspace, bytes))
    return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

const char *
cublasGetStatusName (cublasStatus_t status)
{
  return status == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS"
         : status == CUBLAS_STATUS_INVALID_VALUE ? "CUBLAS_STATUS_INVALID_VALUE"
         : "CUBLAS_STATUS_OTHER";
}

const char *
cublasGetStatusString (cublasStatus_t status)
{
  return status == CUBLAS_STATUS_SUCCESS ? "success"
         : status == CUBLAS_STATUS_INVALID_VALUE ? "an invalid value was used as an argument"
         : "other error";
}

/* A matrix operand stored column-major: rows x cols with leading dimension ld, as
 * device memory. */
static bool
operand_ok (const float *p, int rows, int cols, int ld)
{
  if (rows == 0 || cols == 0)
    return true;
  return ld >= (rows > 1 ? rows : 1)
         && is_device (p, ((size_t) ld * (size_t) (cols - 1) + (size_t) rows) * sizeof (float));
}

cublasStatus_t
cublasSgemm (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
             int n, int k, const float *alpha, const float *A, int lda, const float *B, int ldb,
             const float *beta, float *C, int ldc)
{
  const bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;

  if (handle == NULL || handle->stream == NULL)
    return CUBLAS_STATUS_NOT_INITIALIZED;
  if (handle->stream == capture_stream)
    {
      const float al = *alpha, bt = *beta;   /* host pointers: read at the call */

      captured->push_back ([=] {
        (void) cublasSgemm (handle, transa, transb, m, n, k, &al, A, lda, B, ldb, &bt, C, ldc);
      });
      return CUBLAS_STATUS_SUCCESS;
    }
  if (m < 0 || n < 0 || k < 0
      || !operand_ok (A, ta ? k : m, ta ? m : k, lda)
      || !operand_ok (B, tb ? n : k, tb ? k : n, ldb)
      || !operand_ok (C, m, n, ldc))
    {
      fprintf (stderr, "cuda emulator: cublasSgemm (%c%c, m=%d n=%d k=%d, lda=%d ldb=%d ldc=%d) "
               "has an operand outside device memory or a bad leading dimension\n",
               ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, lda, ldb, ldc);
      return CUBLAS_STATUS_INVALID_VALUE;
    }
  for (int j = 0; j < n; j++)
    for (int i = 0; i < m; i++)
      {
        double acc = 0.0;

        for (int l = 0; l < k; l++)
          {
            const double a = ta ? A[l + (size_t) i * lda] : A[i + (size_t) l * lda];
            const double b = tb ? B[j + (size_t) l * ldb] : B[l + (size_t) j * ldb];

            acc += a * b;
          }
        float *c = &C[i + (size_t) j * ldc];
        /* beta = 0: C is not read (it may hold NaN), as cuBLAS promises */
        *c = *beta == 0.0f ? (float) (*alpha * acc) : (float) (*alpha * acc + *beta * *c);
      }
  return CUBLAS_STATUS_SUCCESS;
}

/* An element of a 16-bit operand as the float it stands for (exact). */
static float
decode16 (uint16_t h, cudaDataType_t type)
{
  uint32_t u;
  float f;

  if (type == CUDA_R_16BF)
    u = (uint32_t) h << 16;
  else
    {
      const uint32_t sign = (uint32_t) (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu,
                     m = h & 0x3ffu;

      if (e == 31)
        u = sign | 0x7f800000u | (m << 13);
      else if (e != 0)
        u = sign | ((e + 112u) << 23) | (m << 13);
      else
        {
          /* subnormal: m 2^-24, exact in a float */
          f = ldexpf ((float) m, -24);
          return sign != 0 ? -f : f;
        }
    }
  memcpy (&f, &u, 4);
  return f;
}

/* A column-major operand of type in emulated device memory. */
static bool
operand_ok_typed (const void *p, int rows, int cols, int ld, size_t elem)
{
  if (rows == 0 || cols == 0)
    return true;
  return ld >= (rows > 1 ? rows : 1)
         && is_device (p, ((size_t) ld * (size_t) (cols - 1) + (size_t) rows) * elem);
}

cublasStatus_t
cublasGemmEx (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
              int n, int k, const void *alpha, const void *A, cudaDataType_t Atype, int lda,
              const void *B, cudaDataType_t Btype, int ldb, const void *beta, void *C,
              cudaDataType_t Ctype, int ldc, cublasComputeType_t computeType,
              cublasGemmAlgo_t algo)
{
  const bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;
  const size_t elem = Atype == CUDA_R_32F ? 4 : 2;
  const float al = *(const float *) alpha, be = *(const float *) beta;
  float *c32 = (float *) C;

  (void) algo;
  if (handle == NULL || handle->stream == NULL)
    return CUBLAS_STATUS_NOT_INITIALIZED;
  if (handle->stream == capture_stream)   /* recorded: alpha and beta read now */
    {
      captured->push_back ([=] {
        (void) cublasGemmEx (handle, transa, transb, m, n, k, &al, A, Atype, lda, B, Btype, ldb,
                             &be, C, Ctype, ldc, computeType, algo);
      });
      return CUBLAS_STATUS_SUCCESS;
    }
  /* what the backend uses: both operands of one type, an fp32 C, fp32 compute */
  if (Atype != Btype || Ctype != CUDA_R_32F || computeType != CUBLAS_COMPUTE_32F
      || (Atype != CUDA_R_32F && Atype != CUDA_R_16F && Atype != CUDA_R_16BF))
    {
      fprintf (stderr, "cuda emulator: cublasGemmEx with types %d x %d -> %d, compute %d is "
               "not emulated\n", Atype, Btype, Ctype, computeType);
      return CUBLAS_STATUS_INVALID_VALUE;
    }
  if (m < 0 || n < 0 || k < 0
      || !operand_ok_typed (A, ta ? k : m, ta ? m : k, lda, elem)
      || !operand_ok_typed (B, tb ? n : k, tb ? k : n, ldb, elem)
      || !operand_ok (c32, m, n, ldc))
    {
      fprintf (stderr, "cuda emulator: cublasGemmEx (%c%c, m=%d n=%d k=%d, lda=%d ldb=%d ldc=%d) "
               "has an operand outside device memory or a bad leading dimension\n",
               ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, lda, ldb, ldc);
      return CUBLAS_STATUS_INVALID_VALUE;
    }
  auto at = [&] (const void *p, size_t i) -> double {
    return elem == 4 ? (double) ((const float *) p)[i]
                     : (double) decode16 (((const uint16_t *) p)[i], Atype);
  };
  for (int j = 0; j < n; j++)
    for (int i = 0; i < m; i++)
      {
        double acc = 0.0;

        for (int l = 0; l < k; l++)
          acc += at (A, ta ? l + (size_t) i * lda : i + (size_t) l * lda)
                 * at (B, tb ? j + (size_t) l * ldb : l + (size_t) j * ldb);
        float *c = &c32[i + (size_t) j * ldc];
        /* beta = 0: C is not read */
        *c = be == 0.0f ? (float) (al * acc) : (float) (al * acc + be * *c);
      }
  return CUBLAS_STATUS_SUCCESS;
}

/* ---- kernels: fibers ------------------------------------------------------------------- */

#if defined(__x86_64__)
/* es_emu_switch (save, load): saves the callee-saved registers on the current stack and
 * the stack pointer in *save, then takes the stack at load and returns on it with its
 * registers: a whole fiber switch in a dozen instructions, no system call, and nothing
 * a sanitizer intercepts (glibc's longjmp asks the kernel for the signal stack under
 * AddressSanitizer: millions of system calls in a test). */
extern "C" void es_emu_switch (void **save, void *load);
asm (".text\n"
     ".p2align 4\n"
     ".globl es_emu_switch\n"
     ".hidden es_emu_switch\n"
     ".type es_emu_switch, @function\n"
     "es_emu_switch:\n"
     "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
     "  movq %rsp, (%rdi)\n"
     "  movq %rsi, %rsp\n"
     "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
     "  ret\n"
     ".size es_emu_switch, .-es_emu_switch\n");
#else
#include <ucontext.h>
#endif

namespace {

enum class St { fresh, runnable, at_block, at_warp, done };

struct Fiber
{
#if defined(__x86_64__)
  void       *sp;             /* its saved stack pointer while it does not run */
#else
  ucontext_t  uc;
#endif
  St          state;
};

const int max_threads = 1024;
const size_t stack_bytes = 64 << 10;

Fiber fibers[max_threads];
char *stacks[max_threads];
#if defined(__x86_64__)
void *scheduler_sp;
#else
ucontext_t scheduler_uc;
#endif
int running = -1;             /* the fiber running, or -1 (direct mode: no fibers) */
bool direct_mode;             /* threads run one after another without fibers */
bool reached_barrier;         /* a barrier was reached during this launch */
const std::function<void ()> *body;
uint64_t slots[max_threads];  /* shuffle exchange, by thread */
std::map<std::type_index, bool> kernel_syncs;  /* kernel -> it reached a barrier */

/* AddressSanitizer is told of every switch between stacks (its fiber interface), so
 * the emulated tests can run under it too; without it these do nothing. */
#if defined(__SANITIZE_ADDRESS__)
void *asan_fake;               /* the fake stack of the side being left */
const void *sched_bottom;      /* the scheduler's stack, learnt on the first switch */
size_t sched_size;

void
to_fiber (int i)
{
  __sanitizer_start_switch_fiber (&asan_fake, stacks[i], stack_bytes);
}

void
in_fiber ()
{
  __sanitizer_finish_switch_fiber (asan_fake, &sched_bottom, &sched_size);
}

void
to_scheduler (bool dying)
{
  __sanitizer_start_switch_fiber (dying ? NULL : &asan_fake, sched_bottom, sched_size);
}

void
in_scheduler ()
{
  __sanitizer_finish_switch_fiber (asan_fake, NULL, NULL);
}
#else
void to_fiber (int) {}
void in_fiber () {}
void to_scheduler (bool) {}
void in_scheduler () {}
#endif

/* From the running fiber to the scheduler. */
void
switch_to_scheduler (Fiber *f)
{
#if defined(__x86_64__)
  es_emu_switch (&f->sp, scheduler_sp);
#else
  swapcontext (&f->uc, &scheduler_uc);
#endif
}

/* A fiber's first frame: the kernel's body, then back to the scheduler for good. */
void
trampoline ()
{
  in_fiber ();
  (*body) ();
  fibers[running].state = St::done;
  to_scheduler (true);
  switch_to_scheduler (&fibers[running]);
  abort ();  /* a finished fiber is never resumed */
}

/* Back to the scheduler in state s; returns when the scheduler resumes this fiber. */
void
wait_in (St s)
{
  reached_barrier = true;
  if (running < 0)
    {
      fprintf (stderr, "cuda emulator: a kernel that ran its first launch without barriers "
               "reached one (run it on fibers from the start)\n");
      abort ();
    }
  Fiber *f = &fibers[running];

  f->state = s;
  to_scheduler (false);
  switch_to_scheduler (f);
  in_fiber ();
}

/* Runs fiber i until it waits or ends. */
void
resume (int i)
{
  running = i;
  threadIdx = dim3 ((unsigned) i);
  fibers[i].state = St::runnable;
  to_fiber (i);
#if defined(__x86_64__)
  es_emu_switch (&scheduler_sp, fibers[i].sp);
#else
  swapcontext (&scheduler_uc, &fibers[i].uc);
#endif
  in_scheduler ();
  running = -1;
}

/* Fiber i ready to start the kernel on its own stack: on x86-64 a stack laid out as
 * es_emu_switch leaves one, returning into trampoline as if it had been called. */
void
prepare_fiber (int i)
{
  if (stacks[i] == NULL && (stacks[i] = (char *) aligned_alloc (64, stack_bytes)) == NULL)
    abort ();
#if defined(__SANITIZE_ADDRESS__)
  /* the frames an earlier fiber left on this stack are gone (nothing unwound them) */
  __asan_unpoison_memory_region (stacks[i], stack_bytes);
#endif
#if defined(__x86_64__)
  {
    void **top = (void **) (stacks[i] + stack_bytes);

    top[-1] = NULL;                      /* trampoline's return address: it never returns */
    top[-2] = (void *) trampoline;       /* where es_emu_switch's ret goes */
    for (int r = 3; r <= 8; r++)
      top[-r] = NULL;                    /* rbp, rbx, r12 .. r15 */
    fibers[i].sp = &top[-8];
  }
#else
  getcontext (&fibers[i].uc);
  fibers[i].uc.uc_stack.ss_sp = stacks[i];
  fibers[i].uc.uc_stack.ss_size = stack_bytes;
  fibers[i].uc.uc_link = NULL;
  makecontext (&fibers[i].uc, trampoline, 0);
#endif
  fibers[i].state = St::fresh;
}

const char *
state_name (St s)
{
  switch (s)
    {
    case St::fresh: return "not started";
    case St::runnable: return "runnable";
    case St::at_block: return "at __syncthreads";
    case St::at_warp: return "at a shuffle";
    default: return "done";
    }
}

/* One block of nt threads on fibers. */
void
run_block_fibers (int nt)
{
  for (int i = 0; i < nt; i++)
    prepare_fiber (i);
  for (;;)
    {
      int live = 0, at_block = 0;
      bool released = false;

      /* in an order that changes from block to block, so a barrier the code needs but
       * lacks is less likely to go unnoticed behind one lucky order */
      for (int j = 0; j < nt; j++)
        {
          const int i = nt % 37 == 0 ? j
                        : (int) (((unsigned) j * 37u + blockIdx.x * 13u) % (unsigned) nt);

          if (fibers[i].state == St::fresh || fibers[i].state == St::runnable)
            resume (i);
        }
      for (int i = 0; i < nt; i++)
        {
          live += fibers[i].state != St::done;
          at_block += fibers[i].state == St::at_block;
        }
      if (live == 0)
        return;
      /* warps whose lanes all wait at a shuffle go on */
      for (int w = 0; w * 32 < nt; w++)
        {
          const int l0 = w * 32, l1 = l0 + 32 < nt ? l0 + 32 : nt;
          int waiting = 0;

          for (int i = l0; i < l1; i++)
            waiting += fibers[i].state == St::at_warp;
          if (waiting == l1 - l0)
            {
              for (int i = l0; i < l1; i++)
                fibers[i].state = St::runnable;
              released = true;
            }
          else if (waiting > 0)
            for (int i = l0; i < l1; i++)
              if (fibers[i].state == St::done)
                {
                  fprintf (stderr, "cuda emulator: block %u, warp %d shuffles while lane %d has "
                           "exited\n", blockIdx.x, w, i - l0);
                  abort ();
                }
        }
      if (!released && at_block == live)
        {
          for (int i = 0; i < nt; i++)
            if (fibers[i].state == St::at_block)
              fibers[i].state = St::runnable;
          released = true;
        }
      if (!released)
        {
          fprintf (stderr, "cuda emulator: block %u of a kernel is stuck:\n", blockIdx.x);
          for (int i = 0; i < nt; i++)
            if (fibers[i].state != St::done)
              fprintf (stderr, "  thread %d: %s\n", i, state_name (fibers[i].state));
          abort ();
        }
    }
}

}  // namespace

void
__syncthreads ()
{
  wait_in (St::at_block);
}

void
__syncwarp (unsigned)
{
  wait_in (St::at_warp);
}

uint64_t
es_emu_shfl_xor (uint64_t bits, int lane_mask)
{
  const unsigned me = threadIdx.x, lane = me & 31, base = me - lane;
  const unsigned other = base + (lane ^ (unsigned) lane_mask);
  uint64_t v;

  if (running >= 0 && (other >= blockDim.x || (lane ^ (unsigned) lane_mask) > 31))
    {
      fprintf (stderr, "cuda emulator: shuffle with lane mask %d from a warp of fewer lanes\n",
               lane_mask);
      abort ();
    }
  slots[me] = bits;
  wait_in (St::at_warp);
  v = slots[other];
  wait_in (St::at_warp);
  return v;
}

void
es_emu_launch (dim3 grid, dim3 block, const std::function<void ()> &fn)
{
  const std::type_index key (fn.target_type ());
  auto known = kernel_syncs.find (key);

  if (capture_stream != NULL)
    {
      std::function<void ()> f = fn;

      captured->push_back ([=] { es_emu_launch (grid, block, f); });
      return;
    }

  if (grid.x == 0 || block.x == 0 || block.x > (unsigned) max_threads || grid.y != 1
      || block.y != 1)
    {
      fail (cudaErrorInvalidValue);
      return;
    }
  gridDim = grid;
  blockDim = block;
  body = &fn;
  direct_mode = known != kernel_syncs.end () && !known->second;
  reached_barrier = false;
  for (unsigned b = 0; b < grid.x; b++)
    {
      blockIdx = dim3 (b);
      if (direct_mode)
        for (unsigned t = 0; t < block.x; t++)
          {
            threadIdx = dim3 (t);
            fn ();
          }
      else
        run_block_fibers ((int) block.x);
    }
  if (known == kernel_syncs.end ())
    kernel_syncs[key] = reached_barrier;
  body = NULL;
}
