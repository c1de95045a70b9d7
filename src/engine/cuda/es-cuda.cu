/* es-cuda.cu: the CUDA backend's life and memory: creation on a device (with clear
 * errors when there is none), the stream and cuBLAS handle every op uses, allocations
 * charged to the budget before cudaMalloc is asked, copies between host and device,
 * the record of the first failure, and the growing workspaces the ops borrow.
 * The ops themselves are in es-cuda-ops.cu, the device list in es-cuda-device.cu.
 *
 * What it is not: a caching allocator. Memory is asked of cudaMalloc once per
 * allocation of the trainer (which allocates everything up front) and given back by
 * cudaFree, so what the budget counts is what the device holds for us. */
#include "es-cuda-private.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* cuBLAS's workspace when the budget allows it (cuBLAS would otherwise take one of
 * its own, outside the budget). */
#define BLAS_WORKSPACE_BYTES ((size_t) 4 << 20)

/* ---- errors --------------------------------------------------------------------- */

/* A CUDA failure as an EsStatus: no device or an unusable one is ES_ERR_UNSUPPORTED
 * (the caller falls back to the CPU), memory ES_ERR_NOMEM, anything else ES_ERR_IO
 * (the device failed). */
static EsStatus
status_of (cudaError_t e)
{
  switch (e)
    {
    case cudaErrorMemoryAllocation:
      return ES_ERR_NOMEM;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorInvalidDevice:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
      return ES_ERR_UNSUPPORTED;
    default:
      return ES_ERR_IO;
    }
}

bool
es_cuda_record (EsCuda *cu, cudaError_t status, const char *what, const char *file, int line)
{
  if (status == cudaSuccess)
    return true;
  if (!cu->failed)
    {
      const char *base = strrchr (file, '/');

      es_error_set (&cu->error, status_of (status), "CUDA error %s (%s) in %s at %s:%d",
                    cudaGetErrorName (status), cudaGetErrorString (status), what,
                    base != NULL ? base + 1 : file, line);
      cu->failed = true;
    }
  return false;
}

bool
es_cuda_record_blas (EsCuda *cu, cublasStatus_t status, const char *what, const char *file,
                     int line)
{
  if (status == CUBLAS_STATUS_SUCCESS)
    return true;
  if (!cu->failed)
    {
      const char *base = strrchr (file, '/');

      es_error_set (&cu->error, status == CUBLAS_STATUS_ALLOC_FAILED ? ES_ERR_NOMEM : ES_ERR_IO,
                    "cuBLAS error %s (%s) in %s at %s:%d", cublasGetStatusName (status),
                    cublasGetStatusString (status), what, base != NULL ? base + 1 : file,
                    line);
      cu->failed = true;
    }
  return false;
}

bool
es_cuda_enter_read (EsCuda *cu)
{
  int current = -1;

  if (cu->failed)
    return false;
  if (cudaGetDevice (&current) != cudaSuccess || current != cu->device)
    return ES_CU_CHECK (cu, cudaSetDevice (cu->device));
  return true;
}

bool
es_cuda_enter (EsCuda *cu)
{
  cu->xent_valid = false;
  return es_cuda_enter_read (cu);
}

bool
es_cuda_fetch_results (EsCuda *cu, double *out, int n)
{
  for (int i = 0; i < n; i++)
    out[i] = NAN;
  if (cu->failed
      || !ES_CU_CHECK (cu, cudaMemcpyAsync (cu->host_result, cu->result,
                                            (size_t) n * sizeof (double),
                                            cudaMemcpyDeviceToHost, cu->stream))
      || !ES_CU_CHECK (cu, cudaStreamSynchronize (cu->stream)))
    return false;
  memcpy (out, cu->host_result, (size_t) n * sizeof (double));
  return true;
}

/* ---- memory --------------------------------------------------------------------- */

/* Device memory for the backend's own use, charged as kind; NULL (err set, the
 * backend not failed) when the budget or the device refuses. */
static void *
device_alloc (EsCuda *cu, EsMemKind kind, size_t bytes, EsError *err)
{
  void *p = NULL;
  cudaError_t e;

  if (bytes > SIZE_MAX - 256)
    {
      es_error_set (err, ES_ERR_NOMEM, "Cannot allocate %zu bytes", bytes);
      return NULL;
    }
  if (!es_budget_charge (cu->be.budget, kind, bytes, err))
    return NULL;
  e = cudaMalloc (&p, bytes == 0 ? 256 : bytes);
  if (e == cudaErrorMemoryAllocation)
    {
      char buf[32];

      (void) cudaGetLastError ();  /* an allocation failure is not sticky: clear it */
      es_budget_release (cu->be.budget, kind, bytes);
      es_error_set (err, ES_ERR_NOMEM, "The GPU has no room for %s of %s (%s)",
                    es_format_bytes (buf, sizeof buf, (double) bytes),
                    es_translate (es_mem_kind_name (kind)),
                    cudaGetErrorString (e));
      return NULL;
    }
  if (e != cudaSuccess)
    {
      /* not a matter of room: the device failed */
      es_budget_release (cu->be.budget, kind, bytes);
      ES_CU_CHECK (cu, e);
      if (err != NULL)
        *err = cu->error;
      return NULL;
    }
  return p;
}

/* Frees what device_alloc gave, once the stream is done with it. */
static void
device_free (EsCuda *cu, EsMemKind kind, void *ptr, size_t bytes)
{
  if (ptr == NULL)
    return;
  if (!cu->failed)
    ES_CU_CHECK (cu, cudaStreamSynchronize (cu->stream));
  /* freed even after a failure, so the budget and the device get it back */
  (void) cudaFree (ptr);
  es_budget_release (cu->be.budget, kind, bytes);
}

/* Device memory (256-byte aligned, zeroed on the stream), the caller's byte count
 * charged to the budget under kind before the device is asked. */
void *
es_cuda_alloc (EsBackend *be, EsMemKind kind, size_t bytes, EsError *err)
{
  EsCuda *cu = es_cuda_of (be);
  void *p;

  if (!es_cuda_enter (cu))
    {
      if (err != NULL)
        *err = cu->error;
      return NULL;
    }
  p = device_alloc (cu, kind, bytes, err);
  if (p != NULL && bytes > 0 && !ES_CU_CHECK (cu, cudaMemsetAsync (p, 0, bytes, cu->stream)))
    {
      device_free (cu, kind, p, bytes);
      if (err != NULL)
        *err = cu->error;
      return NULL;
    }
  return p;
}

void
es_cuda_free (EsBackend *be, EsMemKind kind, void *ptr, size_t bytes)
{
  EsCuda *cu = es_cuda_of (be);

  if (ptr == NULL)
    return;
  (void) es_cuda_enter (cu);
  device_free (cu, kind, ptr, bytes);
}

/* Host to device. From ordinary (pageable) memory the driver copies src to its own
 * staging memory before returning, so the caller may reuse src at once; from pinned
 * memory the copy is direct, so it is waited for, for the same promise. */
void
es_cuda_upload (EsBackend *be, void *dst, const void *src, size_t bytes)
{
  EsCuda *cu = es_cuda_of (be);
  cudaPointerAttributes attr;
  bool pinned;

  if (!es_cuda_enter (cu) || bytes == 0)
    return;
  pinned = cudaPointerGetAttributes (&attr, src) == cudaSuccess
           && attr.type == cudaMemoryTypeHost;
  (void) cudaGetLastError ();  /* older runtimes flag unregistered memory here */
  if (ES_CU_CHECK (cu, cudaMemcpyAsync (dst, src, bytes, cudaMemcpyHostToDevice, cu->stream))
      && pinned)
    ES_CU_CHECK (cu, cudaStreamSynchronize (cu->stream));
}

/* Device to host, after the queued work that writes src. */
void
es_cuda_download (EsBackend *be, void *dst, const void *src, size_t bytes)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter_read (cu) || bytes == 0)
    return;
  if (ES_CU_CHECK (cu, cudaMemcpyAsync (dst, src, bytes, cudaMemcpyDeviceToHost, cu->stream)))
    ES_CU_CHECK (cu, cudaStreamSynchronize (cu->stream));
}

void
es_cuda_copy (EsBackend *be, void *dst, const void *src, size_t bytes)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || bytes == 0)
    return;
  ES_CU_CHECK (cu, cudaMemcpyAsync (dst, src, bytes, cudaMemcpyDeviceToDevice, cu->stream));
}

void
es_cuda_zero (EsBackend *be, void *dst, size_t bytes)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || bytes == 0)
    return;
  ES_CU_CHECK (cu, cudaMemsetAsync (dst, 0, bytes, cu->stream));
}

void
es_cuda_synchronize (EsBackend *be)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter_read (cu))
    return;
  ES_CU_CHECK (cu, cudaStreamSynchronize (cu->stream));
}

/* Every op of the interface runs here. */
bool
es_cuda_supports_op (EsBackend *be, EsOp op)
{
  return (unsigned) op < ES_OP_N_OPS;
}

void *
es_cuda_buf_get (EsCuda *cu, EsCudaBuf *b, size_t bytes)
{
  size_t want;
  void *p;

  if (b->bytes >= bytes && b->ptr != NULL)
    return b->ptr;
  es_cuda_buf_release (cu, b);
  /* in steps of 1 MiB, so a slowly growing need does not reallocate each time;
   * exactly what is needed under a memory limit (the rounding would take room planned
   * for the other workspaces: es_mem_plan counts them exactly) or when the device
   * cannot spare it */
  want = es_budget_limit (cu->be.budget) > 0 ? bytes
         : ES_CEIL_DIV (bytes, (size_t) 1 << 20) << 20;
  p = device_alloc (cu, ES_MEM_WORKSPACE, want, NULL);
  if (p == NULL && want != bytes)
    p = device_alloc (cu, ES_MEM_WORKSPACE, want = bytes, NULL);
  if (p == NULL)
    return NULL;
  b->ptr = p;
  b->bytes = want;
  return p;
}

void
es_cuda_buf_release (EsCuda *cu, EsCudaBuf *b)
{
  device_free (cu, ES_MEM_WORKSPACE, b->ptr, b->bytes);
  b->ptr = NULL;
  b->bytes = 0;
}

/* ---- life ----------------------------------------------------------------------- */

/* Frees whatever of cu was made (also for a half-made one). */
static void
cuda_free_all (EsCuda *cu)
{
  if (cu->stream != NULL)
    (void) cudaStreamSynchronize (cu->stream);
  es_cuda_ahead_free (cu);
  es_cuda_buf_release (cu, &cu->ws);
  es_cuda_buf_release (cu, &cu->stage);
  es_cuda_buf_release (cu, &cu->idx);
  es_cuda_buf_release (cu, &cu->half);
  if (cu->blas != NULL)
    (void) cublasDestroy (cu->blas);
  device_free (cu, ES_MEM_WORKSPACE, cu->blas_ws, cu->blas_ws_bytes);
  device_free (cu, ES_MEM_WORKSPACE, cu->partial, cu->fixed_bytes);
  if (cu->host_result != NULL)
    (void) cudaFreeHost (cu->host_result);
  if (cu->stream != NULL)
    (void) cudaStreamDestroy (cu->stream);
  free (cu->host_f32);
  free (cu);
}

void
es_cuda_destroy (EsBackend *be)
{
  EsCuda *cu = es_cuda_of (be);

  (void) es_cuda_enter (cu);
  cuda_free_all (cu);
}

/* The first failure of creation into err (cu's record of it), then everything freed. */
static EsBackend *
creation_failed (EsCuda *cu, EsError *err)
{
  if (err != NULL)
    *err = cu->error;
  cuda_free_all (cu);
  return NULL;
}

EsBackend *
es_cuda_backend_new (int device, EsBudget *budget, EsError *err)
{
  cudaError_t e;
  int n = 0, major = 0, minor = 0;
  EsCuda *cu;
  EsError local = { ES_OK, "" };
  const char *conv;

  e = cudaGetDeviceCount (&n);
  if (e != cudaSuccess || n == 0)
    {
      (void) cudaGetLastError ();
      es_error_set (err, ES_ERR_UNSUPPORTED, "No CUDA device can be used: %s",
                    es_cuda_no_device_reason (e));
      return NULL;
    }
  if (device < 0 || device >= n)
    {
      es_error_set (err, ES_ERR_INVALID, "There is no CUDA device %d (this machine has %d)",
                    device, n);
      return NULL;
    }
  if (cudaDeviceGetAttribute (&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess
      || cudaDeviceGetAttribute (&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess)
    {
      (void) cudaGetLastError ();
      es_error_set (err, ES_ERR_UNSUPPORTED, "CUDA device %d cannot be queried", device);
      return NULL;
    }
  if (major * 10 + minor < 75)
    {
      es_error_set (err, ES_ERR_UNSUPPORTED,
                    "CUDA device %d has compute capability %d.%d; the CUDA backend needs 7.5 "
                    "or newer", device, major, minor);
      return NULL;
    }

  cu = (EsCuda *) calloc (1, sizeof *cu);
  if (cu == NULL)
    {
      es_error_set (err, ES_ERR_NOMEM, "Out of memory creating the CUDA backend");
      return NULL;
    }
  cu->be.iface = &es_cuda_iface;
  cu->be.budget = budget;
  cu->be.n_threads = 1;
  cu->be.impl = cu;
  cu->device = device;
  conv = getenv ("ESPALIER_CUDA_CONV");
  cu->conv_direct = conv != NULL && strcmp (conv, "direct") == 0;

  if (!ES_CU_CHECK (cu, cudaSetDevice (device))
      || !ES_CU_CHECK (cu, cudaStreamCreateWithFlags (&cu->stream, cudaStreamNonBlocking))
      || !ES_CU_CHECK (cu, cudaMallocHost ((void **) &cu->host_result, 8 * sizeof (double)))
      || !ES_BLAS_CHECK (cu, cublasCreate (&cu->blas))
      || !ES_BLAS_CHECK (cu, cublasSetStream (cu->blas, cu->stream))
      || !ES_BLAS_CHECK (cu, cublasSetPointerMode (cu->blas, CUBLAS_POINTER_MODE_HOST))
      || !ES_BLAS_CHECK (cu, cublasSetMathMode (cu->blas, CUBLAS_DEFAULT_MATH)))
    return creation_failed (cu, err);

  cu->host_f32 = (float *) malloc (ES_CUDA_HOST_CHUNK * sizeof (float));
  if (cu->host_f32 == NULL)
    {
      es_error_set (&cu->error, ES_ERR_NOMEM, "Out of memory creating the CUDA backend");
      return creation_failed (cu, err);
    }

  /* the reductions' partials and results: without them no loss can be computed */
  cu->fixed_bytes = (2 * ES_CUDA_PARTIALS + 8) * sizeof (double);
  cu->partial = (double *) device_alloc (cu, ES_MEM_WORKSPACE, cu->fixed_bytes, &local);
  if (cu->partial == NULL)
    {
      cu->error = local;
      cu->fixed_bytes = 0;
      return creation_failed (cu, err);
    }
  cu->result = cu->partial + 2 * ES_CUDA_PARTIALS;

  /* cuBLAS's workspace from the budget when it has room, else none (slower
   * algorithms, but nothing allocated behind the budget's back) */
  cu->blas_ws = device_alloc (cu, ES_MEM_WORKSPACE, BLAS_WORKSPACE_BYTES, NULL);
  cu->blas_ws_bytes = cu->blas_ws != NULL ? BLAS_WORKSPACE_BYTES : 0;
  if (!ES_BLAS_CHECK (cu, cublasSetWorkspace (cu->blas, cu->blas_ws, cu->blas_ws_bytes)))
    return creation_failed (cu, err);

  /* our kernels load on this device (built for sm_90 and PTX): a first launch
   * shows it now, not in the middle of training */
  cu->xent_valid = false;
  if (!ES_CU_CHECK (cu, cudaMemsetAsync (cu->partial, 0, cu->fixed_bytes, cu->stream)))
    return creation_failed (cu, err);
  es_cuda_iface.zero (&cu->be, cu->result, 8 * sizeof (double));
  es_cuda_iface.scale (&cu->be, (float *) cu->result, 1.0f, 2);
  if (!ES_CU_CHECK (cu, cudaStreamSynchronize (cu->stream)) || cu->failed)
    return creation_failed (cu, err);
  return &cu->be;
}

int
es_cuda_backend_device (EsBackend *be)
{
  if (be == NULL || be->iface != &es_cuda_iface)
    return -1;
  return es_cuda_of (be)->device;
}

void *
es_cuda_backend_get_stream (EsBackend *be)
{
  EsCuda *cu;

  if (be == NULL || be->iface != &es_cuda_iface)
    return NULL;
  cu = es_cuda_of (be);
  return es_cuda_enter_read (cu) ? (void *) cu->stream : NULL;
}

int
es_cuda_backend_query (EsBackend *be)
{
  EsCuda *cu;
  cudaError_t e;

  if (be == NULL || be->iface != &es_cuda_iface)
    return -1;
  cu = es_cuda_of (be);
  if (!es_cuda_enter_read (cu))
    return -1;
  e = cudaStreamQuery (cu->stream);
  if (e == cudaErrorNotReady)
    {
      (void) cudaGetLastError ();   /* not an error: the next launch's check must not see it */
      return 0;
    }
  return es_cuda_record (cu, e, "cudaStreamQuery", __FILE__, __LINE__) ? 1 : -1;
}

bool
es_cuda_backend_check (EsBackend *be, EsError *err)
{
  EsCuda *cu;

  if (be == NULL || be->iface != &es_cuda_iface)
    {
      es_error_set (err, ES_ERR_INVALID, "Not a CUDA backend");
      return false;
    }
  cu = es_cuda_of (be);
  if (es_cuda_enter_read (cu))
    ES_CU_CHECK (cu, cudaStreamSynchronize (cu->stream));
  if (!cu->failed)
    return true;
  if (err != NULL)
    *err = cu->error;
  return false;
}

bool
es_cuda_backend_set_tf32 (EsBackend *be, bool on)
{
  EsCuda *cu;

  if (be == NULL || be->iface != &es_cuda_iface)
    return false;
  cu = es_cuda_of (be);
  if (!es_cuda_enter (cu))
    return false;
  if (!ES_BLAS_CHECK (cu, cublasSetMathMode (cu->blas, on ? CUBLAS_TF32_TENSOR_OP_MATH
                                                          : CUBLAS_DEFAULT_MATH)))
    return false;
  cu->tf32 = on;
  return true;
}

int64_t
es_cuda_backend_fp32_products (EsBackend *be)
{
  if (be == NULL || be->iface != &es_cuda_iface)
    return -1;
  return es_cuda_of (be)->fp32_products;
}

void
es_cuda_set_translate (EsTranslateFunc fn)
{
  es_set_translate (fn);
}
