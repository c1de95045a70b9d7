/* es-cuda-ops.cu: the ops of the CUDA backend, each as its kernels and then its
 * launcher (the function the interface points to), in the order of es-backend.h.
 * Matrix products (dense layers, and convolutions after im2col) go through cuBLAS in
 * fp32 (TF32 only when asked), or with bf16/fp16 operands and fp32 accumulation in
 * mixed precision (see gemm_rm_16); everything else is a plain kernel written to be
 * obviously right first: one thread per output element, or one warp per row for the
 * row-wise ops (softmax and the losses), or one block per channel (BatchNorm).
 *
 * Agreement with the CPU backend: the kernels compute the formulas of es-ref-impl.h in
 * the same order, sums in double as the reference does, and the file is compiled with
 * --fmad=false so no multiply-add is fused behind our back (and -ftz=true: denormals
 * flushed as on the CPU backend's threads): the element-wise ops
 * (activations but sigmoid/tanh, dropout and its counter-based masks, the optimizer
 * steps, masks, fake quantization) give the CPU's results bit for bit, the others
 * within fp32 rounding. Reductions that come back to the host (losses, correct
 * counts, sums of squares, min/max) add per-block partials in a fixed order, so a
 * result repeats exactly from run to run.
 *
 * Dimension key as in es-ref.h: B = batch, IN/OUT = features, C = channels, H/W =
 * height/width, OC = output channels, K = kernel, S = stride, P = padding, OH/OW =
 * output height/width, KK = K*K, CKK = C*K*K, OHW = OH*OW, NB = images in a chunk,
 * NP = NB*OHW (columns of a chunk), N = elements. Row-major, NCHW. */
#include "es-cuda-private.h"
#include "es-quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NT ES_CUDA_THREADS
#define WARPS_PER_BLOCK (NT / 32)
#define FULL_MASK 0xffffffffu


/* Row r of a grid-stride loop of warps over n rows (the whole warp takes a row). */
#define FOR_EACH_ROW(r, n)                                                                 \
  for (int64_t r = ((int64_t) blockIdx.x * blockDim.x + threadIdx.x) / 32;                \
       r < (int64_t) (n); r += ((int64_t) gridDim.x * blockDim.x) / 32)



/* Blocks for n rows, one warp per row, capped at the number of partials (so the row
 * kernels that add up a loss have one partial per block). */
static unsigned
grid_rows (int64_t n)
{
  int64_t g = ES_CEIL_DIV (n, (int64_t) WARPS_PER_BLOCK);

  return (unsigned) (g < 1 ? 1 : g > ES_CUDA_PARTIALS ? ES_CUDA_PARTIALS : g);
}

/* Blocks for an element-wise sum into partials. */
static unsigned
grid_partials (int64_t n)
{
  int64_t g = ES_CEIL_DIV (n, (int64_t) NT);

  return (unsigned) (g < 1 ? 1 : g > ES_CUDA_PARTIALS ? ES_CUDA_PARTIALS : g);
}

/* ---- device helpers ------------------------------------------------------------- */

/* Sums and maxima over a warp by butterfly: every lane ends with the same value, the
 * same from run to run. */
__device__ static double
warp_sum (double v)
{
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync (FULL_MASK, v, o);
  return v;
}

__device__ static float
warp_max (float v)
{
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf (v, __shfl_xor_sync (FULL_MASK, v, o));
  return v;
}

/* The sum of v over the block, in every thread. sh holds 33 doubles; every thread
 * of the block must call it. */
__device__ static double
block_sum_all (double v, double *sh)
{
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;

  v = warp_sum (v);
  __syncthreads ();  /* sh is free again after an earlier call */
  if (lane == 0)
    sh[w] = v;
  __syncthreads ();
  if (threadIdx.x == 0)
    {
      double s = 0.0;

      for (int i = 0; i < nw; i++)
        s += sh[i];
      sh[32] = s;
    }
  __syncthreads ();
  return sh[32];
}

/* Adds each warp's lane-0 value a (and b) of the block in warp order into
 * partial[blockIdx.x] (and partial[ES_CUDA_PARTIALS + blockIdx.x]). Every thread of
 * the block calls it. */
__device__ static void
block_partials (double a, double b, double *partial)
{
  __shared__ double sa[WARPS_PER_BLOCK], sb[WARPS_PER_BLOCK];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;

  if (lane == 0)
    {
      sa[w] = a;
      sb[w] = b;
    }
  __syncthreads ();
  if (threadIdx.x == 0)
    {
      double ta = 0.0, tb = 0.0;

      for (int i = 0; i < WARPS_PER_BLOCK; i++)
        {
          ta += sa[i];
          tb += sb[i];
        }
      partial[blockIdx.x] = ta;
      partial[ES_CUDA_PARTIALS + blockIdx.x] = tb;
    }
}

/* result[v] = the sum of partial[v * ES_CUDA_PARTIALS + (0 .. G)], v < nv, one block. */
__global__ static void
k_finish_sum (double *result, const double *partial, int G, int nv)
{
  __shared__ double sh[33];

  for (int v = 0; v < nv; v++)
    {
      double s = 0.0;

      for (int i = threadIdx.x; i < G; i += blockDim.x)
        s += partial[v * ES_CUDA_PARTIALS + i];
      s = block_sum_all (s, sh);
      if (threadIdx.x == 0)
        result[v] = s;
    }
}

/* Partials, finished, copied to out (nv <= 2) through the stream; NaN on failure. */
static bool
finish_sum (EsCuda *cu, unsigned G, int nv, double *out)
{
  LAUNCH (cu, k_finish_sum, 1, NT, cu->result, cu->partial, (int) G, nv);
  return es_cuda_fetch_results (cu, out, nv);
}

/* es_hash64 and es_rand_uniform of es-common.h, for the device: the same bits. */
__device__ static uint64_t
d_hash64 (uint64_t x)
{
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__device__ static double
d_rand_uniform (uint64_t seed, uint64_t index)
{
  return (double) (d_hash64 (seed ^ d_hash64 (index)) >> 11) * (1.0 / 9007199254740992.0);
}

/* The reference's overflow-free sigmoid. */
__device__ static float
d_sigmoid (float x)
{
  if (x >= 0.0f)
    return 1.0f / (1.0f + expf (-x));
  const float e = expf (x);
  return e / (1.0f + e);
}

/* lrintf (v) as x86-64 computes it (cvtss2si): NaN and values out of long's range
 * give LONG_MIN; the clamps of es-quant.h that follow then pick the lowest code. */
__device__ static long long
d_lrintf_x86 (float v)
{
  if (!(fabsf (v) < 0x1p63f))
    return (long long) (-9223372036854775807LL - 1);
  return __float2ll_rn (v);
}

/* The first index of the largest value of row (C), as a scan that keeps the first
 * strictly larger value does it: NaN never wins, and a NaN in column 0 keeps 0. All
 * lanes of the warp call it and get the same answer. The row may have just been
 * written by the warp's lanes (the probabilities of k_xent_fwd): __syncwarp orders
 * those writes before these reads, column 0 is read by every lane. */
__device__ static int
warp_row_argmax (const float *row, int C, int lane)
{
  float bv = -INFINITY;
  int bi = -1;

  __syncwarp ();

  for (int c = lane; c < C; c += 32)
    {
      const float v = row[c];

      if (v == v && (bi < 0 || v > bv))
        {
          bv = v;
          bi = c;
        }
    }
  for (int o = 16; o > 0; o >>= 1)
    {
      const float ov = __shfl_xor_sync (FULL_MASK, bv, o);
      const int oi = __shfl_xor_sync (FULL_MASK, bi, o);

      if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi)))
        {
          bv = ov;
          bi = oi;
        }
    }
  if (bi < 0 || row[0] != row[0])
    bi = 0;
  return bi;
}

/* softmax of row x (C) into y, one warp: y = exp(x - max) / sum, the sum in double.
 * Returns the row's logsumexp, m + log(sum) (float, as the reference), and its max
 * in *m_out. */
__device__ static float
warp_softmax_row (float *y, const float *x, int C, int lane, float *m_out)
{
  float m = -INFINITY;
  double s = 0.0;

  for (int c = lane; c < C; c += 32)
    m = fmaxf (m, x[c]);
  m = warp_max (m);
  for (int c = lane; c < C; c += 32)
    {
      const float e = expf (x[c] - m);

      y[c] = e;
      s += (double) e;
    }
  s = warp_sum (s);
  for (int c = lane; c < C; c += 32)
    y[c] = (float) ((double) y[c] / s);
  if (m_out != NULL)
    *m_out = m;
  return m + logf ((float) s);
}

/* softmax of x / temp into y, one warp (the reference's soft_row); returns
 * logsumexp(x / temp). */
__device__ static float
warp_soft_row (float *y, const float *x, float temp, int C, int lane)
{
  float m = -INFINITY;
  double s = 0.0;

  for (int c = lane; c < C; c += 32)
    m = fmaxf (m, x[c]);
  m = warp_max (m);
  const float mt = m / temp;
  for (int c = lane; c < C; c += 32)
    {
      const float e = expf (x[c] / temp - mt);

      y[c] = e;
      s += (double) e;
    }
  s = warp_sum (s);
  for (int c = lane; c < C; c += 32)
    y[c] = (float) ((double) y[c] / s);
  return mt + logf ((float) s);
}

/* ---- matrix products -------------------------------------------------------------- */

/* Mixed precision (EsCuda.precision bf16 or fp16, set_precision below): each product
 * rounds its two operands to 16 bits (round to nearest even, as __float2bfloat16_rn
 * and __float2half_rn do) into the backend's half workspace, then cublasGemmEx
 * multiplies them on the tensor cores with fp32 accumulation (CUBLAS_COMPUTE_32F) into
 * the fp32 result, alpha and beta applied in fp32, so dw and db still accumulate in
 * fp32. Why on the fly, not a 16-bit copy of the weights kept beside the fp32 master
 * weights: the ops see only fp32 pointers, and a copy refreshed "after the optimizer
 * step" would need the backend to track every write to the parameters (uploads,
 * copies, masks, restores), decided on the host, which a captured CUDA Graph would
 * replay stale; converting in every product is the same sequence of kernels each step,
 * so it captures and replays as it is. The cost is one read of 4 bytes and one write
 * of 2 per operand element: on a square layer (n = B = IN = OUT) 5 n^2 conversions a
 * training step (x, w forward; dout once for both of its products, w, x backward)
 * against 6 n^3 flops of products: 30 n^2 bytes, about 15% of the products' time at
 * n = 4096 on an H200 (bench-cuda estimates it), and less as the product grows. When the
 * budget refuses the workspace, the product runs in fp32 (more exact, slower). */

/* 16-bit operands start at multiples of 256 bytes and have row strides of a multiple
 * of 8 elements (16 bytes), as the tensor cores prefer. */
#define HALF_ALIGN_BYTES 256
#define HALF_LD(cols) ((int) ES_CEIL_DIV ((int64_t) (cols), 8) * 8)

__device__ static inline uint16_t
d_round16 (float v, int fp16)
{
  return fp16 ? __half_as_ushort (__float2half_rn (v))
              : __bfloat16_as_ushort (__float2bfloat16_rn (v));
}

/* dst (n) = src (n) rounded to 16 bits: a contiguous operand */
__global__ static void
k_round16 (uint16_t *dst, const float *src, int64_t n, int fp16)
{
  FOR_EACH (i, n)
    dst[i] = d_round16 (src[i], fp16);
}

/* dst (rows, ldd) = src (rows, cols) of row stride lds rounded to 16 bits, a block
 * per row (the columns past cols of dst are never read) */
__global__ static void
k_round16_rows (uint16_t *dst, int ldd, const float *src, int lds, int rows, int cols, int fp16)
{
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
      dst[r * ldd + c] = d_round16 (src[r * lds + c], fp16);
}

/* The stored matrix src (rows, cols), row stride lds, into dst with row stride ldd. */
static void
round16 (EsCuda *cu, uint16_t *dst, int ldd, const float *src, int lds, int rows, int cols)
{
  const int fp16 = cu->precision == ES_CUDA_FP16;

  if (lds == cols && ldd == cols)
    LAUNCH (cu, k_round16, grid_for ((int64_t) rows * cols), NT, dst, src,
            (int64_t) rows * cols, fp16);
  else
    LAUNCH (cu, k_round16_rows, (unsigned) ES_MAX (1, ES_MIN (rows, 65535)), NT, dst, ldd, src,
            lds, rows, cols, fp16);
}

/* The bytes of a stored matrix (rows, cols) in 16 bits, row stride HALF_LD (cols),
 * rounded up to the alignment; 0 when it is too large for cuBLAS's int sizes. */
static size_t
half_bytes (int rows, int cols)
{
  const int64_t n = (int64_t) rows * HALF_LD (cols);

  return n > INT32_MAX ? 0 : ES_CEIL_DIV ((size_t) n * 2, HALF_ALIGN_BYTES) * HALF_ALIGN_BYTES;
}

/* gemm_rm's product on operands already rounded to 16 bits: A16 (stored as gemm_rm's
 * A, row stride lda16) and B16. */
static void
gemm_rm_16_ready (EsCuda *cu, bool ta, bool tb, int M, int N, int K, float alpha,
                  const uint16_t *A16, int lda16, const uint16_t *B16, int ldb16, float beta,
                  float *C, int ldc)
{
  const cudaDataType_t type = cu->precision == ES_CUDA_FP16 ? CUDA_R_16F : CUDA_R_16BF;

  ES_BLAS_CHECK (cu, cublasGemmEx (cu->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
                                   B16, type, ldb16, A16, type, lda16, &beta, C,
                                   CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* The half workspace of at least bytes; NULL when it cannot be had (the product then
 * runs in fp32). When the budget refuses it while the convolution columns (ws) hold
 * memory no convolution is using, they are given back and it is asked again: the next
 * convolution sizes its chunks with the larger copies counted (conv_workspace). While a
 * CUDA Graph is recorded nothing is allocated or freed (that would break the capture). */
static void *buf_get_beside_ws (EsCuda *cu, EsCudaBuf *b, size_t bytes);

static uint8_t *
half_get (EsCuda *cu, size_t bytes)
{
  if (cu->capturing)
    return cu->half.bytes >= bytes ? (uint8_t *) cu->half.ptr : NULL;
  return (uint8_t *) buf_get_beside_ws (cu, &cu->half, bytes);
}

/* The buffer b (half, stage, idx) of at least bytes for an op outside a convolution.
 * Under a budget the convolution columns grow into whatever room it has (more images
 * per product), also room es_mem_plan counts for these buffers: when the budget
 * refuses b while the columns hold memory no convolution is using, they are given back
 * and b asked again (the next convolution sizes its chunks beside b). */
static void *
buf_get_beside_ws (EsCuda *cu, EsCudaBuf *b, size_t bytes)
{
  void *p = es_cuda_buf_get (cu, b, bytes);

  if (p == NULL && b != &cu->ws && cu->ws.ptr != NULL && !cu->in_conv)
    {
      es_cuda_buf_release (cu, &cu->ws);
      p = es_cuda_buf_get (cu, b, bytes);
    }
  return p;
}

/* gemm_rm's product with 16-bit operands; false (nothing queued) when the workspace
 * cannot be had. */
static bool
gemm_rm_16 (EsCuda *cu, bool ta, bool tb, int M, int N, int K, float alpha, const float *A,
            int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
  /* the stored shapes: A (ta ? K : M, ta ? M : K), B (tb ? N : K, tb ? K : N) */
  const int ra = ta ? K : M, ca = ta ? M : K, rb = tb ? N : K, cb = tb ? K : N;
  const size_t a_bytes = half_bytes (ra, ca), b_bytes = half_bytes (rb, cb);
  uint8_t *ws;

  if (a_bytes == 0 || b_bytes == 0)
    return false;
  ws = half_get (cu, a_bytes + b_bytes);
  if (ws == NULL)
    return false;
  round16 (cu, (uint16_t *) ws, HALF_LD (ca), A, lda, ra, ca);
  round16 (cu, (uint16_t *) (ws + a_bytes), HALF_LD (cb), B, ldb, rb, cb);
  gemm_rm_16_ready (cu, ta, tb, M, N, K, alpha, (const uint16_t *) ws, HALF_LD (ca),
                    (const uint16_t *) (ws + a_bytes), HALF_LD (cb), beta, C, ldc);
  return true;
}

/* Row-major C (M,N) = alpha op(A) (M,K) . op(B) (K,N) + beta C, with lda, ldb, ldc the
 * row strides of the stored matrices. cuBLAS is column-major, and a row-major matrix
 * is its own transpose read column-major, so this is C^T = op(B)^T op(A)^T: the same
 * operation flags, the operands and M/N swapped. In bf16/fp16 the operands are
 * rounded to 16 bits first (above). */
static bool
gemm_rm (EsCuda *cu, bool ta, bool tb, int M, int N, int K, float alpha, const float *A,
         int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
  if (M <= 0 || N <= 0)
    return true;
  if (K <= 0)  /* an empty sum: C = beta C (cuBLAS would refuse the leading dimensions) */
    return beta != 0.0f
           || ES_CU_CHECK (cu, cudaMemset2DAsync (C, (size_t) ldc * sizeof (float), 0,
                                                  (size_t) N * sizeof (float), (size_t) M,
                                                  cu->stream));
  if (cu->precision != ES_CUDA_FP32)
    {
      if (gemm_rm_16 (cu, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
        return !cu->failed;
      cu->fp32_products++;  /* no room for the copies: fp32, and counted */
    }
  return ES_BLAS_CHECK (cu, cublasSgemm (cu->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                         ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
                                         B, ldb, A, lda, &beta, C, ldc));
}

/* The interface's set_precision: precision is an EsPrecision (es-train.h), whose
 * values ES_CUDA_FP32/_BF16/_FP16 repeat. Every device of compute capability 7.5 runs
 * fp16 products on its tensor cores; bf16 needs 8.0 (Ampere) and is refused before. */
static bool
cu_set_precision (EsBackend *be, int precision, EsError *err)
{
  EsCuda *cu = es_cuda_of (be);
  int major = 0;

  if (precision != ES_CUDA_FP32 && precision != ES_CUDA_BF16 && precision != ES_CUDA_FP16)
    {
      es_error_set (err, ES_ERR_INVALID, "Unknown precision %d", precision);
      return false;
    }
  if (precision == ES_CUDA_BF16
      && cudaDeviceGetAttribute (&major, cudaDevAttrComputeCapabilityMajor, cu->device)
         == cudaSuccess
      && major < 8)
    {
      es_error_set (err, ES_ERR_UNSUPPORTED,
                    "bf16 needs a GPU of compute capability 8.0 or newer; this one is %d.x "
                    "(fp16 works on it)", major);
      return false;
    }
  cu->precision = precision;
  return true;
}

/* ---- data ------------------------------------------------------------------------- */

/* out (N) = inp (N) * scale + shift */
__global__ static void
k_load_u8 (float *out, const uint8_t *inp, float scale, float shift, int64_t n)
{
  FOR_EACH (i, n)
    out[i] = (float) inp[i] * scale + shift;
}

/* The bytes go to the device as bytes and are converted there; when the budget has
 * no room for the byte buffer they are converted on the host and go as floats. */
static void
cu_load_u8 (EsBackend *be, float *out, const uint8_t *inp, float scale, float shift,
            int64_t N)
{
  EsCuda *cu = es_cuda_of (be);
  uint8_t *stage;

  if (!es_cuda_enter (cu) || N <= 0)
    return;
  stage = (uint8_t *) buf_get_beside_ws (cu, &cu->stage, (size_t) N);
  if (stage != NULL)
    {
      es_cuda_upload (be, stage, inp, (size_t) N);
      LAUNCH (cu, k_load_u8, grid_for (N), NT, out, stage, scale, shift, N);
      return;
    }
  for (int64_t i0 = 0; i0 < N; i0 += ES_CUDA_HOST_CHUNK)
    {
      const int64_t n = ES_MIN ((int64_t) ES_CUDA_HOST_CHUNK, N - i0);

      for (int64_t i = 0; i < n; i++)
        cu->host_f32[i] = (float) inp[i0 + i] * scale + shift;
      /* from pageable memory: staged by the driver before the call returns */
      if (!ES_CU_CHECK (cu, cudaMemcpyAsync (out + i0, cu->host_f32, (size_t) n * sizeof (float),
                                             cudaMemcpyHostToDevice, cu->stream)))
        return;
    }
}

/* ---- dense -------------------------------------------------------------------------- */

/* out (B,OUT) = bias (OUT) in every row */
__global__ static void
k_rows_fill (float *out, const float *bias, int B, int OUT)
{
  FOR_EACH (i, (int64_t) B * OUT)
    out[i] = bias[i % OUT];
}

/* db (OUT) += column sums of dout (B,OUT): a block takes 32 columns, its 8 warps
 * stride over the rows, and the 8 partial sums are added in order. */
__global__ static void
k_column_sums_add (float *db, const float *dout, int B, int OUT)
{
  __shared__ double sh[WARPS_PER_BLOCK][32];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int o = blockIdx.x * 32 + lane;
  double acc = 0.0;

  if (o < OUT)
    for (int b = w; b < B; b += WARPS_PER_BLOCK)
      acc += (double) dout[(int64_t) b * OUT + o];
  sh[w][lane] = acc;
  __syncthreads ();
  if (w == 0 && o < OUT)
    {
      double s = 0.0;

      for (int i = 0; i < WARPS_PER_BLOCK; i++)
        s += sh[i][lane];
      db[o] += (float) s;
    }
}

/* out (B,OUT) = inp (B,IN) . w^T (OUT,IN) + b: the bias rows first, then one product
 * added onto them. */
static void
cu_dense_forward (EsBackend *be, float *out, const float *inp, const float *w,
                  const float *b, int B, int IN, int OUT)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || B <= 0 || OUT <= 0)
    return;
  if (b != NULL)
    LAUNCH (cu, k_rows_fill, grid_for ((int64_t) B * OUT), NT, out, b, B, OUT);
  gemm_rm (cu, false, true, B, OUT, IN, 1.0f, inp, IN, w, IN, b != NULL ? 1.0f : 0.0f, out,
           OUT);
}

/* dinp (B,IN) = dout (B,OUT) . w (OUT,IN); dw (OUT,IN) += dout^T . inp; db += sums. */
static void
cu_dense_backward (EsBackend *be, float *dinp, float *dw, float *db, const float *dout,
                   const float *inp, const float *w, int B, int IN, int OUT)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu))
    return;
  /* bf16/fp16: dout rounded once for both products (gemm_rm would round it twice) */
  if (cu->precision != ES_CUDA_FP32 && dinp != NULL && B > 0 && IN > 0 && OUT > 0)
    {
      const size_t g_bytes = half_bytes (B, OUT), w_bytes = half_bytes (OUT, IN);
      const size_t x_bytes = half_bytes (B, IN);
      uint8_t *ws = g_bytes == 0 || w_bytes == 0 || x_bytes == 0 ? NULL
                    : half_get (cu, g_bytes + w_bytes + x_bytes);

      if (ws != NULL)
        {
          const uint16_t *g16 = (const uint16_t *) ws, *w16 = (const uint16_t *) (ws + g_bytes);
          const uint16_t *x16 = (const uint16_t *) (ws + g_bytes + w_bytes);

          round16 (cu, (uint16_t *) g16, HALF_LD (OUT), dout, OUT, B, OUT);
          round16 (cu, (uint16_t *) w16, HALF_LD (IN), w, IN, OUT, IN);
          round16 (cu, (uint16_t *) x16, HALF_LD (IN), inp, IN, B, IN);
          gemm_rm_16_ready (cu, false, false, B, IN, OUT, 1.0f, g16, HALF_LD (OUT), w16,
                            HALF_LD (IN), 0.0f, dinp, IN);
          gemm_rm_16_ready (cu, true, false, OUT, IN, B, 1.0f, g16, HALF_LD (OUT), x16,
                            HALF_LD (IN), 1.0f, dw, IN);
          if (db != NULL)
            LAUNCH (cu, k_column_sums_add, (unsigned) ES_CEIL_DIV (OUT, 32), NT, db, dout, B,
                    OUT);
          return;
        }
    }
  if (dinp != NULL)
    {
      if (OUT > 0)
        gemm_rm (cu, false, false, B, IN, OUT, 1.0f, dout, OUT, w, IN, 0.0f, dinp, IN);
      else if (B > 0 && IN > 0)
        ES_CU_CHECK (cu, cudaMemsetAsync (dinp, 0, (size_t) B * IN * sizeof (float), cu->stream));
    }
  if (B <= 0)
    return;
  gemm_rm (cu, true, false, OUT, IN, B, 1.0f, dout, OUT, inp, IN, 1.0f, dw, IN);
  if (db != NULL && OUT > 0)
    LAUNCH (cu, k_column_sums_add, (unsigned) ES_CEIL_DIV (OUT, 32), NT, db, dout, B, OUT);
}

static void cu_act_forward (EsBackend *be, EsOp act, float *out, const float *inp, float alpha,
                            int64_t N);

/* Inference: the product, then the activation in place (act ES_OP_DENSE: none). */
static void
cu_dense_act_forward (EsBackend *be, EsOp act, float *out, const float *inp, const float *w,
                      const float *b, float alpha, int B, int IN, int OUT)
{
  cu_dense_forward (be, out, inp, w, b, B, IN, OUT);
  if (act != ES_OP_DENSE)
    cu_act_forward (be, act, out, out, alpha, (int64_t) B * OUT);
}

/* ---- conv2d ------------------------------------------------------------------------- */

/* Columns of NB images: col (CKK, NP) with col[r][img*OHW + p] the input under weight
 * r = (c, kh, kw) at output position p of image img (0 in the padding). */
__global__ static void
k_im2col (float *col, const float *inp, int NB, int C, int H, int W, int K, int S, int P,
          int OH, int OW)
{
  const int64_t OHW = (int64_t) OH * OW, NP = NB * OHW;

  FOR_EACH (j, (int64_t) C * K * K * NP)
    {
      const int64_t r = j / NP, q = j % NP;
      const int64_t img = q / OHW, p = q % OHW;
      const int oh = (int) (p / OW), ow = (int) (p % OW);
      const int c = (int) (r / (K * K)), kk = (int) (r % (K * K));
      const int ih = oh * S - P + kk / K, iw = ow * S - P + kk % K;

      col[j] = ih >= 0 && ih < H && iw >= 0 && iw < W
               ? inp[((img * C + c) * H + ih) * (int64_t) W + iw] : 0.0f;
    }
}

/* dinp (NB,C,H,W) = each pixel gathers dcol (CKK, NP) from every output position
 * whose window covers it (overwritten). */
__global__ static void
k_col2im (float *dinp, const float *dcol, int NB, int C, int H, int W, int K, int S, int P,
          int OH, int OW)
{
  const int64_t OHW = (int64_t) OH * OW, NP = NB * OHW;

  FOR_EACH (j, (int64_t) NB * C * H * W)
    {
      const int iw = (int) (j % W), ih = (int) (j / W % H);
      const int64_t c = j / ((int64_t) H * W) % C, img = j / ((int64_t) C * H * W);
      float acc = 0.0f;

      for (int kh = 0; kh < K; kh++)
        {
          const int th = ih + P - kh;

          if (th < 0 || th % S != 0 || th / S >= OH)
            continue;
          for (int kw = 0; kw < K; kw++)
            {
              const int tw = iw + P - kw;

              if (tw < 0 || tw % S != 0 || tw / S >= OW)
                continue;
              acc += dcol[((c * K + kh) * K + kw) * NP + img * OHW + (int64_t) (th / S) * OW
                          + tw / S];
            }
        }
      dinp[j] = acc;
    }
}

/* out (NB,OC,OHW) = outc (OC, NP) laid out by image, + bias (OC) (may be NULL). */
__global__ static void
k_cols_to_images (float *out, const float *outc, const float *bias, int NB, int OC,
                  int64_t OHW)
{
  const int64_t NP = NB * OHW;

  FOR_EACH (j, (int64_t) NB * OC * OHW)
    {
      const int64_t p = j % OHW, oc = j / OHW % OC, img = j / (OHW * OC);

      out[j] = outc[oc * NP + img * OHW + p] + (bias != NULL ? bias[oc] : 0.0f);
    }
}

/* doutc (OC, NP) = dout (NB,OC,OHW) laid out by channel. */
__global__ static void
k_images_to_cols (float *doutc, const float *dout, int NB, int OC, int64_t OHW)
{
  const int64_t NP = NB * OHW;

  FOR_EACH (j, (int64_t) NB * OC * OHW)
    {
      const int64_t p = j % OHW, oc = j / OHW % OC, img = j / (OHW * OC);

      doutc[oc * NP + img * OHW + p] = dout[j];
    }
}

/* db (OC) += sums of dout (B,OC,OHW) over images and positions: a block per channel. */
__global__ static void
k_conv_db (float *db, const float *dout, int B, int OC, int64_t OHW)
{
  __shared__ double sh[33];
  const int oc = blockIdx.x;
  double acc = 0.0;

  for (int64_t t = threadIdx.x; t < (int64_t) B * OHW; t += blockDim.x)
    acc += (double) dout[((t / OHW) * OC + oc) * OHW + t % OHW];
  acc = block_sum_all (acc, sh);
  if (threadIdx.x == 0)
    db[oc] += (float) acc;
}

/* Direct kernels, no workspace: the reference's loops, one thread per output. */
__global__ static void
k_conv_fwd_direct (float *out, const float *inp, const float *w, const float *b, int B, int C,
                   int H, int W, int OC, int K, int S, int P, int OH, int OW)
{
  FOR_EACH (j, (int64_t) B * OC * OH * OW)
    {
      const int ow = (int) (j % OW), oh = (int) (j / OW % OH);
      const int64_t oc = j / ((int64_t) OH * OW) % OC, bi = j / ((int64_t) OC * OH * OW);
      double acc = b != NULL ? (double) b[oc] : 0.0;

      for (int c = 0; c < C; c++)
        {
          const float *plane = inp + (bi * C + c) * H * (int64_t) W;
          const float *wk = w + (oc * C + c) * K * (int64_t) K;

          for (int kh = 0; kh < K; kh++)
            {
              const int ih = oh * S - P + kh;

              if (ih < 0 || ih >= H)
                continue;
              for (int kw = 0; kw < K; kw++)
                {
                  const int iw = ow * S - P + kw;

                  if (iw >= 0 && iw < W)
                    acc += (double) plane[(int64_t) ih * W + iw] * (double) wk[kh * K + kw];
                }
            }
        }
      out[j] = (float) acc;
    }
}

__global__ static void
k_conv_dinp_direct (float *dinp, const float *dout, const float *w, int B, int C, int H,
                    int W, int OC, int K, int S, int P, int OH, int OW)
{
  FOR_EACH (j, (int64_t) B * C * H * W)
    {
      const int iw = (int) (j % W), ih = (int) (j / W % H);
      const int64_t c = j / ((int64_t) H * W) % C, bi = j / ((int64_t) C * H * W);
      double acc = 0.0;

      for (int oc = 0; oc < OC; oc++)
        {
          const float *g = dout + (bi * OC + oc) * OH * (int64_t) OW;
          const float *wk = w + ((int64_t) oc * C + c) * K * K;

          for (int kh = 0; kh < K; kh++)
            {
              const int th = ih + P - kh;

              if (th < 0 || th % S != 0 || th / S >= OH)
                continue;
              for (int kw = 0; kw < K; kw++)
                {
                  const int tw = iw + P - kw;

                  if (tw < 0 || tw % S != 0 || tw / S >= OW)
                    continue;
                  acc += (double) g[(int64_t) (th / S) * OW + tw / S] * (double) wk[kh * K + kw];
                }
            }
        }
      dinp[j] = (float) acc;
    }
}

__global__ static void
k_conv_dw_direct (float *dw, const float *dout, const float *inp, int B, int C, int H, int W,
                  int OC, int K, int S, int P, int OH, int OW)
{
  FOR_EACH (j, (int64_t) OC * C * K * K)
    {
      const int kw = (int) (j % K), kh = (int) (j / K % K);
      const int64_t c = j / ((int64_t) K * K) % C, oc = j / ((int64_t) C * K * K);
      double acc = 0.0;

      for (int bi = 0; bi < B; bi++)
        {
          const float *plane = inp + ((int64_t) bi * C + c) * H * W;
          const float *g = dout + ((int64_t) bi * OC + oc) * OH * OW;

          for (int oh = 0; oh < OH; oh++)
            {
              const int ih = oh * S - P + kh;

              if (ih < 0 || ih >= H)
                continue;
              for (int ow = 0; ow < OW; ow++)
                {
                  const int iw = ow * S - P + kw;

                  if (iw >= 0 && iw < W)
                    acc += (double) g[(int64_t) oh * OW + ow] * (double) plane[(int64_t) ih * W + iw];
                }
            }
        }
      dw[j] += (float) acc;
    }
}

/* The bytes of the 16-bit copies (gemm_rm_16's operands) a convolution's products take
 * for a chunk of NB images; 0 in fp32. pass 0, forward: w (OC,CKK) and the columns
 * (CKK,NP); 1, backward: the output gradient's columns (OC,NP) with the columns; 2,
 * backward with the input gradient: also (OC,NP) with w. es_mem_plan's half_plan
 * counts the same for one image. */
static size_t
conv_half_bytes (const EsCuda *cu, int64_t CKK, int OC, int64_t OHW, int NB, int pass)
{
  const int NP = (int) (NB * OHW), ckk = (int) CKK;
  size_t bytes;

  if (cu->precision == ES_CUDA_FP32)
    return 0;
  if (pass == 0)
    return half_bytes (OC, ckk) + half_bytes (ckk, NP);
  bytes = half_bytes (OC, NP) + half_bytes (ckk, NP);
  return pass == 2 ? ES_MAX (bytes, half_bytes (OC, ckk) + half_bytes (OC, NP)) : bytes;
}

/* The bytes the two workspaces hold after a chunk of NB images, with ws_held bytes of
 * columns' buffer kept: (CKK + OC) OHW floats an image, and the copies. */
static size_t
conv_need (const EsCuda *cu, int64_t CKK, int OC, int64_t OHW, int pass, int NB,
           size_t ws_held)
{
  const size_t cols = (size_t) NB * (size_t) ((CKK + OC) * OHW) * sizeof (float);

  return ES_MAX (ws_held, cols) + ES_MAX (cu->half.bytes,
                                          conv_half_bytes (cu, CKK, OC, OHW, NB, pass));
}

/* The convolution workspace for a chunk of images (up to B), (CKK + OC) OHW floats
 * each: the columns and the output's (or its gradient's) columns; up to 64 MiB, or
 * what ws holds when more, may be taken. In bf16/fp16 a chunk's products also need
 * their 16-bit copies in the half workspace (conv_half_bytes for pass). Under a budget
 * the chunk is the most images whose columns and copies fit together in what is free
 * plus what the two workspaces hold (which they keep: neither shrinks), so no product
 * runs in fp32 for want of room where one image's fit (es_mem_plan's workspace,
 * planned for this backend): when one image fits only with the columns' buffer made
 * smaller, it is remade; when not even that, the columns alone and the products in
 * fp32. While a CUDA Graph is recorded nothing is allocated: the chunk is what the
 * workspaces hold. NULL when not even one image's columns can be had (the direct
 * kernels then run). */
static float *
conv_workspace (EsCuda *cu, int64_t CKK, int OC, int64_t OHW, int pass, int B, int *nb)
{
  const size_t per_image = (size_t) ((CKK + OC) * OHW) * sizeof (float);
  const size_t cap = ES_MAX (cu->ws.bytes, (size_t) 64 << 20);
  const size_t limit = es_budget_limit (cu->be.budget);
  int n = (int) ES_MIN ((size_t) B, ES_MAX ((size_t) 1, cap / per_image));

  if (cu->conv_direct)
    return NULL;
  /* cuBLAS takes int sizes: a chunk's columns must fit one */
  while (n > 1 && (size_t) n * per_image / sizeof (float) > (size_t) INT32_MAX)
    n = (n + 1) / 2;
  if (cu->capturing)
    {
      while (n > 1 && ((size_t) n * per_image > cu->ws.bytes
                       || conv_half_bytes (cu, CKK, OC, OHW, n, pass) > cu->half.bytes))
        n--;
      if (cu->ws.ptr == NULL || (size_t) n * per_image > cu->ws.bytes)
        return NULL;
      *nb = n;
      return (float *) cu->ws.ptr;
    }
  if (limit > 0)
    {
      const size_t used = es_budget_used (cu->be.budget);
      const size_t room = (limit > used ? limit - used : 0) + cu->ws.bytes + cu->half.bytes;
      int lo = 1, hi = n;

      /* the most images that fit beside the buffers as they are (the need grows with
       * the images): a binary search */
      while (lo < hi)
        {
          const int mid = lo + (hi - lo + 1) / 2;

          if (conv_need (cu, CKK, OC, OHW, pass, mid, cu->ws.bytes) <= room)
            lo = mid;
          else
            hi = mid - 1;
        }
      n = lo;
      if (conv_need (cu, CKK, OC, OHW, pass, 1, cu->ws.bytes) > room
          && conv_need (cu, CKK, OC, OHW, pass, 1, 0) <= room)
        es_cuda_buf_release (cu, &cu->ws);  /* remade for one image, the copies beside */
    }
  for (;;)
    {
      float *ws = (float *) es_cuda_buf_get (cu, &cu->ws, (size_t) n * per_image);

      if (ws != NULL)
        {
          *nb = n;
          return ws;
        }
      if (n == 1)
        return NULL;
      n = (n + 1) / 2;
    }
}

/* out (B,OC,OH,OW) = conv(inp (B,C,H,W), w (OC,C,K,K)) + b: per chunk of NB images,
 * im2col, one product outc (OC,NP) = w (OC,CKK) . col (CKK,NP), then the columns laid
 * out as images with the bias added. */
static void
cu_conv2d_forward (EsBackend *be, float *out, const float *inp, const float *w, const float *b,
                   int B, int C, int H, int W, int OC, int K, int S, int P)
{
  EsCuda *cu = es_cuda_of (be);
  const int OH = ES_CONV_OUT (H, K, S, P), OW = ES_CONV_OUT (W, K, S, P);
  const int64_t OHW = (int64_t) OH * OW, CKK = (int64_t) C * K * K;
  float *ws;
  int NB = 1;

  if (!es_cuda_enter (cu) || B <= 0 || OC <= 0 || OHW <= 0)
    return;
  ws = conv_workspace (cu, CKK, OC, OHW, 0, B, &NB);
  if (ws == NULL)
    {
      LAUNCH (cu, k_conv_fwd_direct, grid_for ((int64_t) B * OC * OHW), NT, out, inp, w, b, B,
              C, H, W, OC, K, S, P, OH, OW);
      cu->fp32_products += cu->precision != ES_CUDA_FP32;
      return;
    }
  cu->in_conv = true;
  for (int b0 = 0; b0 < B; b0 += NB)
    {
      const int nb = ES_MIN (NB, B - b0);
      const int64_t NP = nb * OHW;
      float *col = ws, *outc = ws + CKK * NP;

      LAUNCH (cu, k_im2col, grid_for (CKK * NP), NT, col, inp + (int64_t) b0 * C * H * W, nb,
              C, H, W, K, S, P, OH, OW);
      gemm_rm (cu, false, false, OC, (int) NP, (int) CKK, 1.0f, w, (int) CKK, col, (int) NP,
               0.0f, outc, (int) NP);
      LAUNCH (cu, k_cols_to_images, grid_for (nb * OC * OHW), NT,
              out + (int64_t) b0 * OC * OHW, outc, b, nb, OC, OHW);
    }
  cu->in_conv = false;
}

/* Per chunk: doutc (OC,NP) from dout, col from inp; dw (OC,CKK) += doutc . col^T;
 * then dcol (CKK,NP) = w^T . doutc into col's place, and col2im into dinp. */
static void
cu_conv2d_backward (EsBackend *be, float *dinp, float *dw, float *db, const float *dout,
                    const float *inp, const float *w, int B, int C, int H, int W, int OC,
                    int K, int S, int P)
{
  EsCuda *cu = es_cuda_of (be);
  const int OH = ES_CONV_OUT (H, K, S, P), OW = ES_CONV_OUT (W, K, S, P);
  const int64_t OHW = (int64_t) OH * OW, CKK = (int64_t) C * K * K;
  float *ws;
  int NB = 1;

  if (!es_cuda_enter (cu) || B <= 0)
    return;
  if (OC <= 0 || OHW <= 0)
    {
      if (dinp != NULL)
        ES_CU_CHECK (cu, cudaMemsetAsync (dinp, 0, (size_t) B * C * H * W * sizeof (float),
                                          cu->stream));
      return;
    }
  if (db != NULL)
    LAUNCH (cu, k_conv_db, (unsigned) OC, NT, db, dout, B, OC, OHW);
  ws = conv_workspace (cu, CKK, OC, OHW, dinp != NULL ? 2 : 1, B, &NB);
  if (ws == NULL)
    {
      LAUNCH (cu, k_conv_dw_direct, grid_for (OC * CKK), NT, dw, dout, inp, B, C, H, W, OC, K,
              S, P, OH, OW);
      if (dinp != NULL)
        LAUNCH (cu, k_conv_dinp_direct, grid_for ((int64_t) B * C * H * W), NT, dinp, dout, w,
                B, C, H, W, OC, K, S, P, OH, OW);
      if (cu->precision != ES_CUDA_FP32)
        cu->fp32_products += dinp != NULL ? 2 : 1;
      return;
    }
  cu->in_conv = true;
  for (int b0 = 0; b0 < B; b0 += NB)
    {
      const int nb = ES_MIN (NB, B - b0);
      const int64_t NP = nb * OHW;
      float *col = ws, *doutc = ws + CKK * NP;

      LAUNCH (cu, k_images_to_cols, grid_for (nb * OC * OHW), NT, doutc,
              dout + (int64_t) b0 * OC * OHW, nb, OC, OHW);
      LAUNCH (cu, k_im2col, grid_for (CKK * NP), NT, col, inp + (int64_t) b0 * C * H * W, nb,
              C, H, W, K, S, P, OH, OW);
      gemm_rm (cu, false, true, OC, (int) CKK, (int) NP, 1.0f, doutc, (int) NP, col, (int) NP,
               1.0f, dw, (int) CKK);
      if (dinp == NULL)
        continue;
      gemm_rm (cu, true, false, (int) CKK, (int) NP, OC, 1.0f, w, (int) CKK, doutc, (int) NP,
               0.0f, col, (int) NP);
      LAUNCH (cu, k_col2im, grid_for ((int64_t) nb * C * H * W), NT,
              dinp + (int64_t) b0 * C * H * W, col, nb, C, H, W, K, S, P, OH, OW);
    }
  cu->in_conv = false;
}

/* ---- pooling (no padding) ----------------------------------------------------------- */

/* out, argmax (B,C,OH,OW): the window's first maximum, a NaN winning (the reference). */
__global__ static void
k_maxpool_fwd (float *out, int32_t *argmax, const float *inp, int64_t BC, int H, int W, int K,
               int S, int OH, int OW)
{
  FOR_EACH (j, BC * OH * OW)
    {
      const int ow = (int) (j % OW), oh = (int) (j / OW % OH);
      const float *plane = inp + j / ((int64_t) OH * OW) * H * W;
      int32_t best_i = (int32_t) (oh * S * W + ow * S);
      float best = plane[best_i];

      for (int kh = 0; kh < K; kh++)
        for (int kw = 0; kw < K; kw++)
          {
            const int32_t i = (int32_t) ((oh * S + kh) * W + ow * S + kw);
            const float v = plane[i];

            if (v > best || (v != v && best == best))
              {
                best = v;
                best_i = i;
              }
          }
      out[j] = best;
      argmax[j] = best_i;
    }
}

/* dinp (B,C,H,W) = each pixel gathers dout from the windows that chose it, in the
 * order the reference adds them (row by row of windows). */
__global__ static void
k_maxpool_bwd (float *dinp, const float *dout, const int32_t *argmax, int64_t BC, int H, int W,
               int K, int S, int OH, int OW)
{
  FOR_EACH (j, BC * H * W)
    {
      const int iw = (int) (j % W), ih = (int) (j / W % H);
      const int64_t o0 = j / ((int64_t) H * W) * OH * OW;
      const int32_t self = ih * W + iw;
      const int oh0 = ih - K + 1 <= 0 ? 0 : (ih - K + 1 + S - 1) / S;
      const int ow0 = iw - K + 1 <= 0 ? 0 : (iw - K + 1 + S - 1) / S;
      const int oh1 = ES_MIN (ih / S, OH - 1), ow1 = ES_MIN (iw / S, OW - 1);
      float acc = 0.0f;

      for (int oh = oh0; oh <= oh1; oh++)
        for (int ow = ow0; ow <= ow1; ow++)
          {
            const int64_t o = o0 + (int64_t) oh * OW + ow;

            if (argmax[o] == self)
              acc += dout[o];
          }
      dinp[j] = acc;
    }
}

__global__ static void
k_avgpool_fwd (float *out, const float *inp, int64_t BC, int H, int W, int K, int S, int OH,
               int OW)
{
  FOR_EACH (j, BC * OH * OW)
    {
      const int ow = (int) (j % OW), oh = (int) (j / OW % OH);
      const float *plane = inp + j / ((int64_t) OH * OW) * H * W;
      double acc = 0.0;

      for (int kh = 0; kh < K; kh++)
        for (int kw = 0; kw < K; kw++)
          acc += (double) plane[(int64_t) (oh * S + kh) * W + ow * S + kw];
      out[j] = (float) (acc / ((double) K * K));
    }
}

__global__ static void
k_avgpool_bwd (float *dinp, const float *dout, int64_t BC, int H, int W, int K, int S, int OH,
               int OW)
{
  FOR_EACH (j, BC * H * W)
    {
      const int iw = (int) (j % W), ih = (int) (j / W % H);
      const float *g = dout + j / ((int64_t) H * W) * OH * OW;
      double acc = 0.0;

      for (int kh = 0; kh < K; kh++)
        {
          const int th = ih - kh;

          if (th < 0 || th % S != 0 || th / S >= OH)
            continue;
          for (int kw = 0; kw < K; kw++)
            {
              const int tw = iw - kw;

              if (tw < 0 || tw % S != 0 || tw / S >= OW)
                continue;
              acc += (double) g[(int64_t) (th / S) * OW + tw / S];
            }
        }
      dinp[j] = (float) (acc / ((double) K * K));
    }
}

static void
cu_maxpool2d_forward (EsBackend *be, float *out, int32_t *argmax, const float *inp, int B,
                      int C, int H, int W, int K, int S)
{
  EsCuda *cu = es_cuda_of (be);
  const int OH = ES_CONV_OUT (H, K, S, 0), OW = ES_CONV_OUT (W, K, S, 0);
  const int64_t BC = (int64_t) B * C;

  if (!es_cuda_enter (cu) || BC <= 0 || OH <= 0 || OW <= 0)
    return;
  LAUNCH (cu, k_maxpool_fwd, grid_for (BC * OH * OW), NT, out, argmax, inp, BC, H, W, K, S, OH,
          OW);
}

static void
cu_maxpool2d_backward (EsBackend *be, float *dinp, const float *dout, const int32_t *argmax,
                       int B, int C, int H, int W, int K, int S)
{
  EsCuda *cu = es_cuda_of (be);
  const int OH = ES_CONV_OUT (H, K, S, 0), OW = ES_CONV_OUT (W, K, S, 0);
  const int64_t BC = (int64_t) B * C;

  if (!es_cuda_enter (cu) || dinp == NULL || BC * H * W <= 0)
    return;
  LAUNCH (cu, k_maxpool_bwd, grid_for (BC * H * W), NT, dinp, dout, argmax, BC, H, W, K, S, OH,
          OW);
}

static void
cu_avgpool2d_forward (EsBackend *be, float *out, const float *inp, int B, int C, int H, int W,
                      int K, int S)
{
  EsCuda *cu = es_cuda_of (be);
  const int OH = ES_CONV_OUT (H, K, S, 0), OW = ES_CONV_OUT (W, K, S, 0);
  const int64_t BC = (int64_t) B * C;

  if (!es_cuda_enter (cu) || BC <= 0 || OH <= 0 || OW <= 0)
    return;
  LAUNCH (cu, k_avgpool_fwd, grid_for (BC * OH * OW), NT, out, inp, BC, H, W, K, S, OH, OW);
}

static void
cu_avgpool2d_backward (EsBackend *be, float *dinp, const float *dout, int B, int C, int H,
                       int W, int K, int S)
{
  EsCuda *cu = es_cuda_of (be);
  const int OH = ES_CONV_OUT (H, K, S, 0), OW = ES_CONV_OUT (W, K, S, 0);
  const int64_t BC = (int64_t) B * C;

  if (!es_cuda_enter (cu) || dinp == NULL || BC * H * W <= 0)
    return;
  LAUNCH (cu, k_avgpool_bwd, grid_for (BC * H * W), NT, dinp, dout, BC, H, W, K, S, OH, OW);
}

/* ---- activations ---------------------------------------------------------------------- */

__global__ static void
k_act_fwd (int act, float *out, const float *inp, float alpha, int64_t n)
{
  FOR_EACH (i, n)
    {
      const float x = inp[i];
      float y;

      switch (act)
        {
        case ES_OP_RELU:
          y = x > 0.0f ? x : 0.0f;
          break;
        case ES_OP_LEAKY_RELU:
          y = x > 0.0f ? x : alpha * x;
          break;
        case ES_OP_SIGMOID:
          y = d_sigmoid (x);
          break;
        default:
          y = tanhf (x);
          break;
        }
      out[i] = y;
    }
}

/* ReLU/LeakyReLU read the input, Sigmoid/Tanh the output. */
__global__ static void
k_act_bwd (int act, float *dinp, const float *dout, const float *inp, const float *out,
           float alpha, int64_t n)
{
  FOR_EACH (i, n)
    {
      float d;

      switch (act)
        {
        case ES_OP_RELU:
          d = inp[i] > 0.0f ? dout[i] : 0.0f;
          break;
        case ES_OP_LEAKY_RELU:
          d = inp[i] > 0.0f ? dout[i] : alpha * dout[i];
          break;
        case ES_OP_SIGMOID:
          d = dout[i] * out[i] * (1.0f - out[i]);
          break;
        default:
          d = dout[i] * (1.0f - out[i] * out[i]);
          break;
        }
      dinp[i] = d;
    }
}

static void
cu_act_forward (EsBackend *be, EsOp act, float *out, const float *inp, float alpha, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || N <= 0)
    return;
  LAUNCH (cu, k_act_fwd, grid_for (N), NT, (int) act, out, inp, alpha, N);
}

static void
cu_act_backward (EsBackend *be, EsOp act, float *dinp, const float *dout, const float *inp,
                 const float *out, float alpha, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || dinp == NULL || N <= 0)
    return;
  LAUNCH (cu, k_act_bwd, grid_for (N), NT, (int) act, dinp, dout, inp, out, alpha, N);
}

/* ---- softmax ---------------------------------------------------------------------------- */

__global__ static void
k_softmax_fwd (float *out, const float *inp, int B, int C)
{
  const int lane = threadIdx.x & 31;

  FOR_EACH_ROW (b, B)
    warp_softmax_row (out + b * C, inp + b * C, C, lane, NULL);
}

/* dinp = y (dout - sum_c dout_c y_c), row by row */
__global__ static void
k_softmax_bwd (float *dinp, const float *dout, const float *out, int B, int C)
{
  const int lane = threadIdx.x & 31;

  FOR_EACH_ROW (b, B)
    {
      const float *g = dout + b * C, *y = out + b * C;
      double dot = 0.0;

      for (int c = lane; c < C; c += 32)
        dot += (double) g[c] * (double) y[c];
      dot = warp_sum (dot);
      for (int c = lane; c < C; c += 32)
        dinp[b * C + c] = (float) ((double) y[c] * ((double) g[c] - dot));
    }
}

static void
cu_softmax_forward (EsBackend *be, float *out, const float *inp, int B, int C)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || B <= 0 || C <= 0)
    return;
  LAUNCH (cu, k_softmax_fwd, grid_rows (B), NT, out, inp, B, C);
}

static void
cu_softmax_backward (EsBackend *be, float *dinp, const float *dout, const float *out, int B,
                     int C)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || dinp == NULL || B <= 0 || C <= 0)
    return;
  LAUNCH (cu, k_softmax_bwd, grid_rows (B), NT, dinp, dout, out, B, C);
}

/* ---- dropout ------------------------------------------------------------------------------ */

/* mask = es_rand_uniform (seed, i) >= rate (in double); out = inp * keep or 0 */
__global__ static void
k_dropout_fwd (float *out, uint8_t *mask, const float *inp, double rate, float keep,
               uint64_t seed, int64_t n)
{
  FOR_EACH (i, n)
    {
      const bool kept = d_rand_uniform (seed, (uint64_t) i) >= rate;

      mask[i] = kept ? 1 : 0;
      out[i] = kept ? inp[i] * keep : 0.0f;
    }
}

__global__ static void
k_dropout_bwd (float *dinp, const float *dout, const uint8_t *mask, float keep, int64_t n)
{
  FOR_EACH (i, n)
    dinp[i] = mask[i] ? dout[i] * keep : 0.0f;
}

/* The reference's scale of the kept values: 1 / (1 - rate) in float, 0 when all drop. */
static float
keep_scale (float rate)
{
  return rate < 1.0f ? 1.0f / (1.0f - rate) : 0.0f;
}

static void
cu_dropout_forward (EsBackend *be, float *out, uint8_t *mask, const float *inp, float rate,
                    uint64_t seed, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || N <= 0)
    return;
  LAUNCH (cu, k_dropout_fwd, grid_for (N), NT, out, mask, inp, (double) rate, keep_scale (rate),
          seed, N);
}

static void
cu_dropout_backward (EsBackend *be, float *dinp, const float *dout, const uint8_t *mask,
                     float rate, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || dinp == NULL || N <= 0)
    return;
  LAUNCH (cu, k_dropout_bwd, grid_for (N), NT, dinp, dout, mask, keep_scale (rate), N);
}

/* ---- BatchNorm over (B,CH,SP): one block per channel --------------------------------------- */

/* Channel ch's mean and sum of squared deviations over (B, SP), two passes in double,
 * by the whole block; every thread gets both. */
__device__ static void
channel_moments (const float *inp, int ch, int B, int CH, int SP, double *sh, double *mu_out,
                 double *sq_out)
{
  const int64_t n = (int64_t) B * SP;
  double sum = 0.0, sq = 0.0;

  for (int64_t t = threadIdx.x; t < n; t += blockDim.x)
    sum += (double) inp[((t / SP) * CH + ch) * SP + t % SP];
  sum = block_sum_all (sum, sh);
  const double mu = n > 0 ? sum / (double) n : 0.0;
  for (int64_t t = threadIdx.x; t < n; t += blockDim.x)
    {
      const double d = (double) inp[((t / SP) * CH + ch) * SP + t % SP] - mu;

      sq += d * d;
    }
  *mu_out = mu;
  *sq_out = block_sum_all (sq, sh);
}

__global__ static void
k_bn_train (float *out, float *mean, float *rstd, float *running_mean, float *running_var,
            const float *inp, const float *gamma, const float *beta, float momentum, float eps,
            int B, int CH, int SP)
{
  __shared__ double sh[33];
  const int ch = blockIdx.x;
  const int64_t n = (int64_t) B * SP;
  double mu, sq;

  channel_moments (inp, ch, B, CH, SP, sh, &mu, &sq);
  const double var = n > 0 ? sq / (double) n : 0.0;
  const float rs = 1.0f / sqrtf ((float) var + eps);
  const float muf = (float) mu;

  if (threadIdx.x == 0)
    {
      mean[ch] = muf;
      rstd[ch] = rs;
      if (running_mean != NULL)
        running_mean[ch] = (1.0f - momentum) * running_mean[ch] + momentum * muf;
      if (running_var != NULL)
        {
          const double unbiased = n > 1 ? sq / (double) (n - 1) : var;

          running_var[ch] = (1.0f - momentum) * running_var[ch] + momentum * (float) unbiased;
        }
    }
  for (int64_t t = threadIdx.x; t < n; t += blockDim.x)
    {
      const int64_t j = ((t / SP) * CH + ch) * SP + t % SP;

      out[j] = gamma[ch] * ((inp[j] - muf) * rs) + beta[ch];
    }
}

__global__ static void
k_bn_infer (float *out, const float *inp, const float *gamma, const float *beta,
            const float *running_mean, const float *running_var, float eps, int CH, int SP,
            int64_t n)
{
  FOR_EACH (j, n)
    {
      const int64_t ch = j / SP % CH;
      const float rs = 1.0f / sqrtf (running_var[ch] + eps);

      out[j] = gamma[ch] * ((inp[j] - running_mean[ch]) * rs) + beta[ch];
    }
}

/* Channel ch's sum of dout and of dout * xhat over (B, SP), in double, by the whole
 * block; every thread gets both. */
__device__ static void
channel_grad_sums (const float *dout, const float *inp, double mu, double rs, int ch, int B,
                   int CH, int SP, double *sh, double *sum_g_out, double *sum_gx_out)
{
  const int64_t n = (int64_t) B * SP;
  double sum_g = 0.0, sum_gx = 0.0;

  for (int64_t t = threadIdx.x; t < n; t += blockDim.x)
    {
      const int64_t j = ((t / SP) * CH + ch) * SP + t % SP;

      sum_g += (double) dout[j];
      sum_gx += (double) dout[j] * (((double) inp[j] - mu) * rs);
    }
  *sum_g_out = block_sum_all (sum_g, sh);
  *sum_gx_out = block_sum_all (sum_gx, sh);
}

__global__ static void
k_bn_bwd (float *dinp, float *dgamma, float *dbeta, const float *dout, const float *inp,
          const float *gamma, const float *mean, const float *rstd, int B, int CH, int SP)
{
  __shared__ double sh[33];
  const int ch = blockIdx.x;
  const int64_t n = (int64_t) B * SP;
  const double mu = (double) mean[ch], rs = (double) rstd[ch];
  double sum_g, sum_gx;

  channel_grad_sums (dout, inp, mu, rs, ch, B, CH, SP, sh, &sum_g, &sum_gx);
  if (threadIdx.x == 0)
    {
      if (dbeta != NULL)
        dbeta[ch] += (float) sum_g;
      if (dgamma != NULL)
        dgamma[ch] += (float) sum_gx;
    }
  if (dinp == NULL || n == 0)
    return;
  const double k = (double) gamma[ch] * rs / (double) n;
  for (int64_t t = threadIdx.x; t < n; t += blockDim.x)
    {
      const int64_t j = ((t / SP) * CH + ch) * SP + t % SP;
      const double xhat = ((double) inp[j] - mu) * rs;

      dinp[j] = (float) (k * ((double) n * (double) dout[j] - sum_g - xhat * sum_gx));
    }
}

static void
cu_batchnorm_forward_train (EsBackend *be, float *out, float *mean, float *rstd,
                            float *running_mean, float *running_var, const float *inp,
                            const float *gamma, const float *beta, float momentum, float eps,
                            int B, int CH, int SP)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || CH <= 0)
    return;
  LAUNCH (cu, k_bn_train, (unsigned) CH, NT, out, mean, rstd, running_mean, running_var, inp,
          gamma, beta, momentum, eps, B, CH, SP);
}

static void
cu_batchnorm_forward_infer (EsBackend *be, float *out, const float *inp, const float *gamma,
                            const float *beta, const float *running_mean,
                            const float *running_var, float eps, int B, int CH, int SP)
{
  EsCuda *cu = es_cuda_of (be);
  const int64_t n = (int64_t) B * CH * SP;

  if (!es_cuda_enter (cu) || n <= 0)
    return;
  LAUNCH (cu, k_bn_infer, grid_for (n), NT, out, inp, gamma, beta, running_mean, running_var,
          eps, CH, SP, n);
}

static void
cu_batchnorm_backward (EsBackend *be, float *dinp, float *dgamma, float *dbeta,
                       const float *dout, const float *inp, const float *gamma,
                       const float *mean, const float *rstd, int B, int CH, int SP)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || CH <= 0)
    return;
  LAUNCH (cu, k_bn_bwd, (unsigned) CH, NT, dinp, dgamma, dbeta, dout, inp, gamma, mean, rstd,
          B, CH, SP);
}

/* Synchronized BatchNorm, cut in four (es-backend.h): the statistics of this process'
 * values (a block per channel, sums in double as k_bn_train), the forward with given
 * statistics, the sums backward needs (a block per channel), dinp with given sums. */

__global__ static void
k_bn_stats (float *part, const float *inp, int B, int CH, int SP)
{
  __shared__ double sh[33];
  const int ch = blockIdx.x;
  double mu, sq;

  channel_moments (inp, ch, B, CH, SP, sh, &mu, &sq);
  if (threadIdx.x == 0)
    {
      const float hi = (float) mu;

      part[ch] = hi;
      part[CH + ch] = (float) (mu - (double) hi);
      part[2 * CH + ch] = (float) sq;
    }
}

__global__ static void
k_bn_apply (float *out, const float *inp, const float *gamma, const float *beta,
            const float *mean, const float *rstd, int CH, int SP, int64_t n)
{
  FOR_EACH (j, n)
    {
      const int64_t ch = j / SP % CH;

      out[j] = gamma[ch] * ((inp[j] - mean[ch]) * rstd[ch]) + beta[ch];
    }
}

__global__ static void
k_bn_bwd_stats (float *part, float *dgamma, float *dbeta, const float *dout, const float *inp,
                const float *mean, const float *rstd, int B, int CH, int SP)
{
  __shared__ double sh[33];
  const int ch = blockIdx.x;
  double sum_g, sum_gx;

  channel_grad_sums (dout, inp, (double) mean[ch], (double) rstd[ch], ch, B, CH, SP, sh, &sum_g,
                     &sum_gx);
  if (threadIdx.x == 0)
    {
      part[ch] = (float) sum_g;
      part[CH + ch] = (float) sum_gx;
      if (dbeta != NULL)
        dbeta[ch] += (float) sum_g;
      if (dgamma != NULL)
        dgamma[ch] += (float) sum_gx;
    }
}

__global__ static void
k_bn_bwd_apply (float *dinp, const float *dout, const float *inp, const float *gamma,
                const float *mean, const float *rstd, const float *coef, int CH, int SP,
                int64_t n)
{
  FOR_EACH (j, n)
    {
      const int64_t ch = j / SP % CH;
      const double rs = (double) rstd[ch];
      const double xhat = ((double) inp[j] - (double) mean[ch]) * rs;

      dinp[j] = (float) ((double) gamma[ch] * rs
                         * ((double) dout[j] - (double) coef[ch] - xhat * (double) coef[CH + ch]));
    }
}

static void
cu_batchnorm_stats (EsBackend *be, float *part, const float *inp, int B, int CH, int SP)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || CH <= 0)
    return;
  LAUNCH (cu, k_bn_stats, (unsigned) CH, NT, part, inp, B, CH, SP);
}

static void
cu_batchnorm_forward_apply (EsBackend *be, float *out, const float *inp, const float *gamma,
                            const float *beta, const float *mean, const float *rstd, int B,
                            int CH, int SP)
{
  EsCuda *cu = es_cuda_of (be);
  const int64_t n = (int64_t) B * CH * SP;

  if (!es_cuda_enter (cu) || n <= 0)
    return;
  LAUNCH (cu, k_bn_apply, grid_for (n), NT, out, inp, gamma, beta, mean, rstd, CH, SP, n);
}

static void
cu_batchnorm_backward_stats (EsBackend *be, float *part, float *dgamma, float *dbeta,
                             const float *dout, const float *inp, const float *mean,
                             const float *rstd, int B, int CH, int SP)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || CH <= 0)
    return;
  LAUNCH (cu, k_bn_bwd_stats, (unsigned) CH, NT, part, dgamma, dbeta, dout, inp, mean, rstd,
          B, CH, SP);
}

static void
cu_batchnorm_backward_apply (EsBackend *be, float *dinp, const float *dout, const float *inp,
                             const float *gamma, const float *mean, const float *rstd,
                             const float *coef, int B, int CH, int SP)
{
  EsCuda *cu = es_cuda_of (be);
  const int64_t n = (int64_t) B * CH * SP;

  if (!es_cuda_enter (cu) || n <= 0 || dinp == NULL)
    return;
  LAUNCH (cu, k_bn_bwd_apply, grid_for (n), NT, dinp, dout, inp, gamma, mean, rstd, coef, CH,
          SP, n);
}

/* ---- losses ------------------------------------------------------------------------------- */

/* probs (B,C), losses (B, may be NULL) of softmax + cross-entropy, and per block the sum
 * of the losses and of the rows whose argmax (of probs) is the label. A label outside
 * [0, C) makes its row's loss NaN instead of a read out of bounds. */
__global__ static void
k_xent_fwd (float *probs, float *losses, const float *logits, const int32_t *labels, int B,
            int C, double *partial)
{
  const int lane = threadIdx.x & 31;
  double loss_sum = 0.0, correct = 0.0;

  FOR_EACH_ROW (b, B)
    {
      const float *x = logits + b * C;
      float *p = probs + b * C;
      const float lse = warp_softmax_row (p, x, C, lane, NULL);
      const int32_t label = labels[b];
      const float loss = label >= 0 && label < C ? lse - x[label] : NAN;
      const int best = warp_row_argmax (p, C, lane);

      if (lane == 0)
        {
          if (losses != NULL)
            losses[b] = loss;
          loss_sum += (double) loss;
          correct += best == label ? 1.0 : 0.0;
        }
    }
  block_partials (loss_sum, correct, partial);
}

/* dlogits (B,C) = (probs - onehot) * scale */
__global__ static void
k_xent_bwd (float *dlogits, const float *probs, const int32_t *labels, float scale, int B,
            int C)
{
  FOR_EACH (j, (int64_t) B * C)
    {
      const float onehot = j % C == labels[j / C] ? 1.0f : 0.0f;

      dlogits[j] = (probs[j] - onehot) * scale;
    }
}

/* k_xent_fwd alone, for es-cuda-graph.cu's forward that waits for nothing. */
unsigned
es_cuda_xent_partials (EsCuda *cu, float *probs, float *losses, const float *logits,
                       const int32_t *labels, int B, int C)
{
  const unsigned G = grid_rows (B);

  if (B <= 0 || C <= 0)
    return 0;
  LAUNCH (cu, k_xent_fwd, G, NT, probs, losses, logits, labels, B, C, cu->partial);
  return G;
}

/* The mean loss to the host; the correct rows are kept for argmax_correct. */
static float
cu_softmax_xent_forward (EsBackend *be, float *probs, float *losses, const float *logits,
                         const int32_t *labels, int B, int C)
{
  EsCuda *cu = es_cuda_of (be);
  double r[2];
  unsigned G;

  if (!es_cuda_enter (cu))
    return NAN;
  if (B <= 0 || C <= 0)
    return 0.0f;
  G = es_cuda_xent_partials (cu, probs, losses, logits, labels, B, C);
  if (!finish_sum (cu, G, 2, r))
    return NAN;
  cu->xent_valid = true;
  cu->xent_probs = probs;
  cu->xent_labels = labels;
  cu->xent_B = B;
  cu->xent_C = C;
  cu->xent_correct = (int) r[1];
  return (float) (r[0] / B);
}

static void
cu_softmax_xent_backward (EsBackend *be, float *dlogits, const float *probs,
                          const int32_t *labels, float scale, int B, int C)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || B <= 0 || C <= 0)
    return;
  LAUNCH (cu, k_xent_bwd, grid_for ((int64_t) B * C), NT, dlogits, probs, labels, scale, B, C);
}

/* probs, losses (N) of binary cross-entropy on logits; per block the sum */
__global__ static void
k_bce_fwd (float *probs, float *losses, const float *logits, const float *targets, int64_t n,
           double *partial)
{
  __shared__ double sh[33];
  double acc = 0.0;

  FOR_EACH (i, n)
    {
      const float x = logits[i], t = targets[i];
      const float loss = (x > 0.0f ? x : 0.0f) - x * t + log1pf (expf (-fabsf (x)));

      probs[i] = d_sigmoid (x);
      if (losses != NULL)
        losses[i] = loss;
      acc += (double) loss;
    }
  acc = block_sum_all (acc, sh);
  if (threadIdx.x == 0)
    partial[blockIdx.x] = acc;
}

__global__ static void
k_bce_bwd (float *dlogits, const float *probs, const float *targets, float scale, int64_t n)
{
  FOR_EACH (i, n)
    dlogits[i] = (probs[i] - targets[i]) * scale;
}

static float
cu_bce_forward (EsBackend *be, float *probs, float *losses, const float *logits,
                const float *targets, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);
  unsigned G;
  double r;

  if (!es_cuda_enter (cu))
    return NAN;
  if (N <= 0)
    return 0.0f;
  G = grid_partials (N);
  LAUNCH (cu, k_bce_fwd, G, NT, probs, losses, logits, targets, N, cu->partial);
  if (!finish_sum (cu, G, 1, &r))
    return NAN;
  return (float) (r / (double) N);
}

static void
cu_bce_backward (EsBackend *be, float *dlogits, const float *probs, const float *targets,
                 float scale, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || N <= 0)
    return;
  LAUNCH (cu, k_bce_bwd, grid_for (N), NT, dlogits, probs, targets, scale, N);
}

/* losses (B) = row means of squared errors (in double); per block their sum */
__global__ static void
k_mse_fwd (float *losses, const float *pred, const float *target, int B, int D,
           double *partial)
{
  const int lane = threadIdx.x & 31;
  double total = 0.0;

  FOR_EACH_ROW (b, B)
    {
      double acc = 0.0;

      for (int d = lane; d < D; d += 32)
        {
          const double e = (double) pred[b * D + d] - (double) target[b * D + d];

          acc += e * e;
        }
      acc = warp_sum (acc);
      if (lane == 0)
        {
          const float loss = D > 0 ? (float) (acc / D) : 0.0f;

          if (losses != NULL)
            losses[b] = loss;
          total += (double) loss;
        }
    }
  block_partials (total, 0.0, partial);
}

/* dpred = 2 (pred - target) / D * scale, in double as the reference */
__global__ static void
k_mse_bwd (float *dpred, const float *pred, const float *target, float scale, int D, int64_t n)
{
  FOR_EACH (j, n)
    dpred[j] = (float) (2.0 * ((double) pred[j] - (double) target[j]) / D * (double) scale);
}

static float
cu_mse_forward (EsBackend *be, float *losses, const float *pred, const float *target, int B,
                int D)
{
  EsCuda *cu = es_cuda_of (be);
  unsigned G;
  double r;

  if (!es_cuda_enter (cu))
    return NAN;
  if (B <= 0)
    return 0.0f;
  G = grid_rows (B);
  LAUNCH (cu, k_mse_fwd, G, NT, losses, pred, target, B, D, cu->partial);
  if (!finish_sum (cu, G, 1, &r))
    return NAN;
  return (float) (r / B);
}

static void
cu_mse_backward (EsBackend *be, float *dpred, const float *pred, const float *target,
                 float scale, int B, int D)
{
  EsCuda *cu = es_cuda_of (be);
  const int64_t n = (int64_t) B * D;

  if (!es_cuda_enter (cu) || n <= 0)
    return;
  LAUNCH (cu, k_mse_bwd, grid_for (n), NT, dpred, pred, target, scale, D, n);
}

/* per row the argmax (into pred when not NULL), per block the rows equal to labels
 * (NULL: none) */
__global__ static void
k_argmax (int32_t *pred, const float *scores, const int32_t *labels, int B, int C,
          double *partial)
{
  const int lane = threadIdx.x & 31;
  double correct = 0.0;

  FOR_EACH_ROW (b, B)
    {
      const int best = warp_row_argmax (scores + b * C, C, lane);

      if (lane == 0)
        {
          if (pred != NULL)
            pred[b] = best;
          if (labels != NULL && best == labels[b])
            correct += 1.0;
        }
    }
  block_partials (correct, 0.0, partial);
}

/* argmax_correct with the scores brought to the host (when the device has no room
 * for the indices), a row at a time in chunks of columns, as the CPU scans them. */
static int
argmax_on_host (EsCuda *cu, int32_t *pred, const float *scores, const int32_t *labels, int B,
                int C)
{
  int correct = 0;

  for (int b = 0; b < B; b++)
    {
      int best = 0;
      float bestv = 0.0f;
      int32_t label = -1;

      for (int c0 = 0; c0 < C; c0 += ES_CUDA_HOST_CHUNK)
        {
          const int nc = ES_MIN (ES_CUDA_HOST_CHUNK, C - c0);

          es_cuda_download (&cu->be, cu->host_f32, scores + (int64_t) b * C + c0,
                            (size_t) nc * sizeof (float));
          for (int c = 0; c < nc; c++)
            if (c0 + c == 0)
              bestv = cu->host_f32[0];
            else if (cu->host_f32[c] > bestv)
              {
                best = c0 + c;
                bestv = cu->host_f32[c];
              }
        }
      pred[b] = best;
      if (labels != NULL)
        {
          es_cuda_download (&cu->be, &label, labels + b, sizeof label);
          correct += best == label;
        }
    }
  return correct;
}

/* Rows of scores (B,C) whose first maximum is labels[b]; pred (host, may be NULL) gets
 * the argmax. Right after softmax_xent_forward on the same probabilities the count it
 * made is returned without a second pass. */
static int
cu_argmax_correct (EsBackend *be, int32_t *pred, const float *scores, const int32_t *labels,
                   int B, int C)
{
  EsCuda *cu = es_cuda_of (be);
  int32_t *dpred = NULL;
  unsigned G;
  double r;

  if (pred == NULL && cu->xent_valid && !cu->failed && scores == cu->xent_probs
      && labels == cu->xent_labels && B == cu->xent_B && C == cu->xent_C)
    return cu->xent_correct;
  if (!es_cuda_enter (cu) || B <= 0 || C <= 0)
    return 0;
  if (pred != NULL)
    {
      dpred = (int32_t *) buf_get_beside_ws (cu, &cu->idx, (size_t) B * sizeof (int32_t));
      if (dpred == NULL)
        return argmax_on_host (cu, pred, scores, labels, B, C);
    }
  G = grid_rows (B);
  LAUNCH (cu, k_argmax, G, NT, dpred, scores, labels, B, C, cu->partial);
  if (!finish_sum (cu, G, 1, &r))
    return 0;
  if (pred != NULL)
    es_cuda_download (be, pred, dpred, (size_t) B * sizeof (int32_t));
  return (int) r;
}

/* ---- optimizer ---------------------------------------------------------------------------- */

__global__ static void
k_sum_squares (const float *x, int64_t n, double *partial)
{
  __shared__ double sh[33];
  double acc = 0.0;

  FOR_EACH (i, n)
    acc += (double) x[i] * (double) x[i];
  acc = block_sum_all (acc, sh);
  if (threadIdx.x == 0)
    partial[blockIdx.x] = acc;
}

static double
cu_sum_squares (EsBackend *be, const float *x, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);
  unsigned G;
  double r;

  if (!es_cuda_enter_read (cu))
    return NAN;
  if (N <= 0)
    return 0.0;
  G = grid_partials (N);
  LAUNCH (cu, k_sum_squares, G, NT, x, N, cu->partial);
  if (!finish_sum (cu, G, 1, &r))
    return NAN;
  return r;
}

/* k_sum_squares and k_finish_sum queued and left in cu->result[0] on the device: the
 * sum cu_sum_squares fetches, for es-cuda-graph.cu's steps that wait for nothing. */
void
es_cuda_sum_squares_dev (EsCuda *cu, const float *x, int64_t N)
{
  const unsigned G = grid_partials (N);

  LAUNCH (cu, k_sum_squares, G, NT, x, N, cu->partial);
  LAUNCH (cu, k_finish_sum, 1, NT, cu->result, (const double *) cu->partial, (int) G, 1);
}

__global__ static void
k_scale (float *x, float s, int64_t n)
{
  FOR_EACH (i, n)
    x[i] *= s;
}

static void
cu_scale (EsBackend *be, float *x, float s, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || N <= 0)
    return;
  LAUNCH (cu, k_scale, grid_for (N), NT, x, s, N);
}

/* grad += l1 sign(param) + l2 param, sign(0) = 0 */
__global__ static void
k_regularize (float *grad, const float *param, float l1, float l2, int64_t n)
{
  FOR_EACH (i, n)
    {
      const float p = param[i];
      const float sgn = p > 0.0f ? 1.0f : (p < 0.0f ? -1.0f : 0.0f);

      grad[i] += l1 * sgn + l2 * p;
    }
}

static void
cu_regularize (EsBackend *be, float *grad, const float *param, float l1, float l2, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || N <= 0)
    return;
  LAUNCH (cu, k_regularize, grid_for (N), NT, grad, param, l1, l2, N);
}

/* SGD: plain (vel NULL), momentum, or Nesterov, as the CPU's three loops */
__global__ static void
k_sgd (float *param, float *vel, const float *grad, float lr, float mu, bool nesterov,
       int64_t n)
{
  FOR_EACH (i, n)
    {
      const float g = grad[i];

      if (vel == NULL)
        param[i] -= lr * g;
      else
        {
          const float v = mu * vel[i] + g;

          vel[i] = v;
          param[i] -= nesterov ? lr * (g + mu * v) : lr * v;
        }
    }
}

static void
cu_sgd_step (EsBackend *be, float *param, float *velocity, const float *grad, float lr,
             float momentum, bool nesterov, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || N <= 0)
    return;
  LAUNCH (cu, k_sgd, grid_for (N), NT, param, velocity, grad, lr, momentum, nesterov, N);
}

/* Adam / AdamW fused, with the CPU's folding of the bias corrections (step = lr / bc1,
 * inv_sqrt_bc2 = 1 / sqrt(bc2), decay = lr wd, made on the host as the CPU makes them). */
__global__ static void
k_adam (float *param, float *m, float *v, const float *grad, float beta1, float beta2,
        float one_m_b1, float one_m_b2, float eps, float step, float inv_sqrt_bc2, float decay,
        int64_t n)
{
  FOR_EACH (i, n)
    {
      const float g = grad[i];
      const float mi = beta1 * m[i] + one_m_b1 * g;
      const float vi = beta2 * v[i] + one_m_b2 * (g * g);
      const float p = param[i];

      m[i] = mi;
      v[i] = vi;
      param[i] = p - (step * mi / (sqrtf (vi) * inv_sqrt_bc2 + eps) + decay * p);
    }
}

static void
cu_adam_step (EsBackend *be, float *param, float *m, float *v, const float *grad, float lr,
              float beta1, float beta2, float eps, float weight_decay, float bc1, float bc2,
              int64_t N)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || N <= 0)
    return;
  LAUNCH (cu, k_adam, grid_for (N), NT, param, m, v, grad, beta1, beta2, 1.0f - beta1,
          1.0f - beta2, eps, lr / bc1, 1.0f / sqrtf (bc2), lr * weight_decay, N);
}

/* ---- pruning masks, fake quantization, distillation ------------------------------------- */

__global__ static void
k_mask_apply (float *x, const uint8_t *mask, int64_t n)
{
  FOR_EACH (i, n)
    x[i] = mask[i] ? x[i] : 0.0f;
}

static void
cu_mask_apply (EsBackend *be, float *x, const uint8_t *mask, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || N <= 0)
    return;
  LAUNCH (cu, k_mask_apply, grid_for (N), NT, x, mask, N);
}

/* per block the smallest and largest value, NaN skipped */
__global__ static void
k_min_max (const float *x, int64_t n, double *partial)
{
  __shared__ float slo[WARPS_PER_BLOCK], shi[WARPS_PER_BLOCK];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  float lo = INFINITY, hi = -INFINITY;

  FOR_EACH (i, n)
    {
      const float v = x[i];

      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
  for (int o = 16; o > 0; o >>= 1)
    {
      lo = fminf (lo, __shfl_xor_sync (FULL_MASK, lo, o));
      hi = fmaxf (hi, __shfl_xor_sync (FULL_MASK, hi, o));
    }
  if (lane == 0)
    {
      slo[w] = lo;
      shi[w] = hi;
    }
  __syncthreads ();
  if (threadIdx.x == 0)
    {
      for (int i = 1; i < WARPS_PER_BLOCK; i++)
        {
          lo = fminf (lo, slo[i]);
          hi = fmaxf (hi, shi[i]);
        }
      partial[blockIdx.x] = (double) lo;
      partial[ES_CUDA_PARTIALS + blockIdx.x] = (double) hi;
    }
}

__global__ static void
k_finish_min_max (double *result, const double *partial, int G)
{
  if (threadIdx.x == 0)
    {
      double lo = INFINITY, hi = -INFINITY;

      for (int i = 0; i < G; i++)
        {
          lo = fmin (lo, partial[i]);
          hi = fmax (hi, partial[ES_CUDA_PARTIALS + i]);
        }
      result[0] = lo;
      result[1] = hi;
    }
}

/* lo, hi (host) = min and max of x (N), NaN skipped (+inf, -inf when all are NaN). */
static void
cu_min_max (EsBackend *be, float *lo, float *hi, const float *x, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);
  unsigned G;
  double r[2];

  *lo = NAN;
  *hi = NAN;
  if (!es_cuda_enter_read (cu))
    return;
  if (N <= 0)
    {
      *lo = INFINITY;
      *hi = -INFINITY;
      return;
    }
  G = grid_partials (N);
  LAUNCH (cu, k_min_max, G, NT, x, N, cu->partial);
  LAUNCH (cu, k_finish_min_max, 1, 32, cu->result, cu->partial, (int) G);
  if (!es_cuda_fetch_results (cu, r, 2))
    return;
  *lo = (float) r[0];
  *hi = (float) r[1];
}

/* one block per row of w (rows, cols): s from max |w| (NaN skipped), then
 * out = es_quant_weight (w, 1/s) * s; out may be w (each thread rewrites only what it
 * read, after the maximum is known) */
__global__ static void
k_fake_quant_weights (float *out, const float *w, int cols)
{
  __shared__ float sh[WARPS_PER_BLOCK];
  const int lane = threadIdx.x & 31, wi = threadIdx.x >> 5;
  const float *wr = w + (int64_t) blockIdx.x * cols;
  float *o = out + (int64_t) blockIdx.x * cols;
  float m = 0.0f;

  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    {
      const float a = fabsf (wr[c]);

      m = a > m ? a : m;
    }
  m = warp_max (m);
  if (lane == 0)
    sh[wi] = m;
  __syncthreads ();
  m = 0.0f;
  for (int i = 0; i < WARPS_PER_BLOCK; i++)
    m = fmaxf (m, sh[i]);
  const float s = m > 0.0f ? m / 127.0f : 1.0f;   /* es_quant_weight_scale */
  const float inv = 1.0f / s;
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    {
      long long q = d_lrintf_x86 (wr[c] * inv);

      q = q < -127 ? -127 : q > 127 ? 127 : q;
      o[c] = (float) q * s;
    }
}

static void
cu_fake_quant_weights (EsBackend *be, float *out, const float *w, int rows, int cols)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || rows <= 0 || cols <= 0)
    return;
  LAUNCH (cu, k_fake_quant_weights, (unsigned) rows, NT, out, w, cols);
}

/* out = (es_quant_act (x, inv, z, qmax) - z) * s */
__global__ static void
k_fake_quant_act (float *out, const float *inp, float inv, float s, int z, int qmax, int64_t n)
{
  FOR_EACH (i, n)
    {
      long long q = d_lrintf_x86 (inp[i] * inv) + z;

      q = q < 0 ? 0 : q > qmax ? qmax : q;
      out[i] = (float) (q - z) * s;
    }
}

/* dinp = dout where l <= inp <= h, else 0 */
__global__ static void
k_ste (float *dinp, const float *dout, const float *inp, float l, float h, int64_t n)
{
  FOR_EACH (i, n)
    dinp[i] = inp[i] >= l && inp[i] <= h ? dout[i] : 0.0f;
}

static void
cu_fake_quant_act (EsBackend *be, float *out, const float *inp, float lo, float hi, int qmax,
                   int64_t N)
{
  EsCuda *cu = es_cuda_of (be);
  float s;
  int32_t z;

  if (!es_cuda_enter (cu) || N <= 0)
    return;
  es_quant_act_params (lo, hi, qmax, &s, &z);
  LAUNCH (cu, k_fake_quant_act, grid_for (N), NT, out, inp, 1.0f / s, s, (int) z, qmax, N);
}

static void
cu_fake_quant_act_backward (EsBackend *be, float *dinp, const float *dout, const float *inp,
                            float lo, float hi, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || dinp == NULL || N <= 0)
    return;
  LAUNCH (cu, k_ste, grid_for (N), NT, dinp, dout, inp, lo < 0.0f ? lo : 0.0f,
          hi > 0.0f ? hi : 0.0f, N);
}

/* Per row, one warp: the hard part as softmax_xent_forward, the soft parts as the
 * reference's soft_row, the KL divergence in double; per block the sum of losses. */
__global__ static void
k_distill_fwd (float *probs, float *soft_s, float *soft_t, float *losses, const float *logits,
               const float *teacher, const int32_t *labels, float temp, float alpha, int B,
               int C, double *partial)
{
  const int lane = threadIdx.x & 31;
  double total = 0.0;

  FOR_EACH_ROW (b, B)
    {
      const float *x = logits + b * C, *t = teacher + b * C;
      float *ps = soft_s + b * C, *pt = soft_t + b * C;
      const float lse = warp_softmax_row (probs + b * C, x, C, lane, NULL);
      const int32_t label = labels[b];
      const float ce = label >= 0 && label < C ? lse - x[label] : NAN;
      const float lse_s = warp_soft_row (ps, x, temp, C, lane);
      const float lse_t = warp_soft_row (pt, t, temp, C, lane);
      double kl = 0.0;

      for (int c = lane; c < C; c += 32)
        kl += (double) pt[c] * (((double) t[c] / temp - (double) lse_t)
                                - ((double) x[c] / temp - (double) lse_s));
      kl = warp_sum (kl);
      if (lane == 0)
        {
          const float loss = (1.0f - alpha) * ce + alpha * temp * temp * (float) kl;

          if (losses != NULL)
            losses[b] = loss;
          total += (double) loss;
        }
    }
  block_partials (total, 0.0, partial);
}

__global__ static void
k_distill_bwd (float *dlogits, const float *probs, const float *soft_s, const float *soft_t,
               const int32_t *labels, float temp, float alpha, float scale, int B, int C)
{
  FOR_EACH (j, (int64_t) B * C)
    {
      const float onehot = j % C == labels[j / C] ? 1.0f : 0.0f;

      dlogits[j] = ((1.0f - alpha) * (probs[j] - onehot)
                    + alpha * temp * (soft_s[j] - soft_t[j])) * scale;
    }
}

static float
cu_distill_forward (EsBackend *be, float *probs, float *soft_s, float *soft_t, float *losses,
                    const float *logits, const float *teacher, const int32_t *labels,
                    float temp, float alpha, int B, int C)
{
  EsCuda *cu = es_cuda_of (be);
  unsigned G;
  double r;

  if (!es_cuda_enter (cu))
    return NAN;
  if (B <= 0 || C <= 0)
    return 0.0f;
  G = grid_rows (B);
  LAUNCH (cu, k_distill_fwd, G, NT, probs, soft_s, soft_t, losses, logits, teacher, labels,
          temp, alpha, B, C, cu->partial);
  if (!finish_sum (cu, G, 1, &r))
    return NAN;
  return (float) (r / B);
}

static void
cu_distill_backward (EsBackend *be, float *dlogits, const float *probs, const float *soft_s,
                     const float *soft_t, const int32_t *labels, float temp, float alpha,
                     float scale, int B, int C)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || B <= 0 || C <= 0)
    return;
  LAUNCH (cu, k_distill_bwd, grid_for ((int64_t) B * C), NT, dlogits, probs, soft_s, soft_t,
          labels, temp, alpha, scale, B, C);
}

/* ---- the interface ------------------------------------------------------------------------- */

const EsBackendIface es_cuda_iface = {
  .name = "cuda",
  .host_memory = false,

  .alloc = es_cuda_alloc,
  .free = es_cuda_free,
  .upload = es_cuda_upload,
  .download = es_cuda_download,
  .copy = es_cuda_copy,
  .zero = es_cuda_zero,
  .synchronize = es_cuda_synchronize,
  .supports_op = es_cuda_supports_op,
  .destroy = es_cuda_destroy,

  .load_u8 = cu_load_u8,

  .dense_forward = cu_dense_forward,
  .dense_backward = cu_dense_backward,
  .dense_act_forward = cu_dense_act_forward,
  .conv2d_forward = cu_conv2d_forward,
  .conv2d_backward = cu_conv2d_backward,
  .maxpool2d_forward = cu_maxpool2d_forward,
  .maxpool2d_backward = cu_maxpool2d_backward,
  .avgpool2d_forward = cu_avgpool2d_forward,
  .avgpool2d_backward = cu_avgpool2d_backward,
  .act_forward = cu_act_forward,
  .act_backward = cu_act_backward,
  .softmax_forward = cu_softmax_forward,
  .softmax_backward = cu_softmax_backward,
  .dropout_forward = cu_dropout_forward,
  .dropout_backward = cu_dropout_backward,
  .batchnorm_forward_train = cu_batchnorm_forward_train,
  .batchnorm_forward_infer = cu_batchnorm_forward_infer,
  .batchnorm_backward = cu_batchnorm_backward,
  .batchnorm_stats = cu_batchnorm_stats,
  .batchnorm_forward_apply = cu_batchnorm_forward_apply,
  .batchnorm_backward_stats = cu_batchnorm_backward_stats,
  .batchnorm_backward_apply = cu_batchnorm_backward_apply,

  .softmax_xent_forward = cu_softmax_xent_forward,
  .softmax_xent_backward = cu_softmax_xent_backward,
  .bce_forward = cu_bce_forward,
  .bce_backward = cu_bce_backward,
  .mse_forward = cu_mse_forward,
  .mse_backward = cu_mse_backward,
  .argmax_correct = cu_argmax_correct,

  .sum_squares = cu_sum_squares,
  .scale = cu_scale,
  .regularize = cu_regularize,
  .sgd_step = cu_sgd_step,
  .adam_step = cu_adam_step,

  .mask_apply = cu_mask_apply,
  .min_max = cu_min_max,
  .fake_quant_weights = cu_fake_quant_weights,
  .fake_quant_act = cu_fake_quant_act,
  .fake_quant_act_backward = cu_fake_quant_act_backward,
  .distill_forward = cu_distill_forward,
  .distill_backward = cu_distill_backward,

  ES_CUDA_GRAPH_OPS  /* es-cuda-graph.cu */

  .set_precision = cu_set_precision,
};
