/* es-cpu.c: the CPU backend. One EsPool of n_threads is its only parallelism: BLAS is
 * pinned to one thread, and each large product is cut by rows of its output across
 * the pool, so threads never oversubscribe the cores.
 *
 * Matrix products: two small AVX-512 kernels (dot-product tiles for A . B^T, broadcast
 * tiles for A . B and A^T . B, no packing) when the CPU has AVX-512F, CBLAS otherwise
 * or with ESPALIER_GEMM=blas in the environment (see "matrix products" below for why).
 * Dense layers: forward cut by output features (task t reads rows of w), backward by
 * rows of dw and db (the same rows) and of dinp by batch. The inference forward
 * (dense_act_forward) applies the next activation as it goes, and from 96 rows packs
 * w once per thread and cuts the batch instead (see dense_forward_act). Convolutions:
 * im2col + one product per image, images cut across threads with private dw partials
 * (col2im for dinp). Element-wise loops (activations, load_u8, the optimizer steps) are plain loops
 * compiled for AVX-512, AVX2 and baseline with target_clones and picked at load time;
 * elements are cut in equal contiguous parts. Weights, gradients and optimizer state
 * are therefore cut the same way in every op, and since the pool runs task t on thread t
 * whenever it can, each core keeps its part in its own cache from step to step.
 * Pools and softmax call the es-ref.h kernels on slices of the batch (in parallel when
 * large; softmax of up to 16 classes has an AVX-512 kernel); the losses and BatchNorm
 * call them as they are. The slimming ops (pruning masks, min/max, fake quantization
 * and its straight-through gradient) are element-wise loops too, equal bit for bit to
 * the reference (es-quant.h's rounding in a form that vectorizes); the distillation
 * loss is the reference.
 *
 * What it is not: a GEMM library, a graph executor, or for two threads at once: one
 * thread drives a backend at a time (the conv workspace is shared).
 * Small problems (under PAR_MIN_MACS multiply-adds, or PAR_MIN_ELEMS elements a thread)
 * stay on the calling thread. Memory is host memory, 64-byte aligned, charged to the
 * budget. Every thread that runs an op has FTZ/DAZ set (Adam's state decays into
 * denormals otherwise), unless es_cpu_backend_set_ftz turned it off for the denormal
 * detector: ops and pool threads apply the backend's setting as they start. Build
 * with -DES_NO_CLONES for plain portable code (e.g. for ThreadSanitizer, which cannot
 * run ifunc-dispatched functions).
 *
 * Dimension key as in es-ref.h: B = batch, IN/OUT = features, C = channels,
 * H/W = height/width, OC = output channels, K = kernel, S = stride, P = padding,
 * OH/OW = output height/width, CKK = C*K*K, OHW = OH*OW, N = elements. */
#include "es-backend.h"
#include "es-pool.h"
#include "es-quant.h"
#include "es-ref.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS's own and OpenMP's; declared weak so another CBLAS, and no OpenMP, link too
 * (then they are NULL). */
void openblas_set_num_threads (int num_threads);
int  openblas_get_num_threads (void);
int  omp_get_max_threads (void);
#pragma weak openblas_set_num_threads
#pragma weak openblas_get_num_threads
#pragma weak omp_get_max_threads

/* Below these amounts per thread a product or a loop runs on the caller alone. A
 * dispatch to spinning workers costs only 0.1-0.4 us on the 2-core EPYC
 * (bench-kernels), but what a split really costs is the data that then crosses cores:
 * writing a line the other core holds takes ~10 ns there. In a training step (bench-
 * kernels --more), splitting the 784-128-10 MLP's second layer at B=128 (164k
 * multiply-adds) cost 15-25 us more than running it on one core, so products are split
 * from 2 x 256k multiply-adds (~2.5 us of work) and loops from 2 x 32k floats. */
#define PAR_MIN_MACS  (1 << 18)
#define PAR_MIN_ELEMS (1 << 15)
/* Element-wise work is cut in chunks of this many floats (a cache line's multiple). */
#define CHUNK_ALIGN 16

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(__clang__) && !defined(ES_NO_CLONES)
#define ES_CLONES __attribute__ ((target_clones ("avx512f", "avx2", "default")))
#else
#define ES_CLONES
#endif
/* Short copy loops stay loops: not turned into memcpy / memset calls (whose call cost
 * is most of a 14-float row). */
#if defined(__GNUC__) && !defined(__clang__)
#define ES_NO_LIBC_CALLS __attribute__ ((optimize ("no-tree-loop-distribute-patterns")))
#else
#define ES_NO_LIBC_CALLS
#endif

typedef struct {
  EsBackend  be;
  EsPool    *pool;
  int        n_threads;
  double    *partial;    /* (2, n_threads) per-thread sums, or minima then maxima */
  float     *ws;         /* workspace for im2col and partial gradients (ws_bytes) */
  size_t     ws_bytes;
} EsCpu;

/* The backend behind the interface pointer. */
static inline EsCpu *
cpu_of (EsBackend *be)
{
  return be->impl;
}

/* Called first by every op: the backend's FTZ/DAZ setting (es_cpu_backend_set_ftz) on
 * the calling thread, written only when it changed since this thread applied one (the
 * pool's threads apply it as they wake for a run). */
static inline void
cpu_enter (const EsCpu *cpu)
{
  es_pool_apply_ftz (cpu->pool);
}

/* How many threads to use for `work` units when `min_per_thread` make a share worth it. */
static inline int
threads_for (const EsCpu *cpu, double work, double min_per_thread)
{
  double n = work / min_per_thread;

  if (cpu->n_threads <= 1 || n < 2.0)
    return 1;
  return n >= cpu->n_threads ? cpu->n_threads : (int) n;
}

/* ---- memory ------------------------------------------------------------------- */

/* Host memory rounded up to 64 bytes, aligned to 64 and zeroed; the caller's byte
 * count (not the rounded one) is charged, so free can release the same. */
static void *
cpu_alloc (EsBackend *be, EsMemKind kind, size_t bytes, EsError *err)
{
  size_t rounded;
  void *p;

  if (bytes > SIZE_MAX - 64)
    {
      es_error_set (err, ES_ERR_NOMEM, "Cannot allocate %zu bytes", bytes);
      return NULL;
    }
  if (!es_budget_charge (be->budget, kind, bytes, err))
    return NULL;
  rounded = bytes == 0 ? 64 : ES_CEIL_DIV (bytes, 64) * 64;
  p = aligned_alloc (64, rounded);
  if (p == NULL)
    {
      char buf[32];

      es_budget_release (be->budget, kind, bytes);
      es_error_set (err, ES_ERR_NOMEM, "Out of memory allocating %s of %s",
                    es_format_bytes (buf, sizeof buf, (double) bytes),
                    es_translate (es_mem_kind_name (kind)));
      return NULL;
    }
  memset (p, 0, rounded);
  return p;
}

/* Frees ptr and releases the charge of alloc (kind, bytes). NULL is ignored. */
static void
cpu_free (EsBackend *be, EsMemKind kind, void *ptr, size_t bytes)
{
  if (ptr == NULL)
    return;
  free (ptr);
  es_budget_release (be->budget, kind, bytes);
}

/* Host and backend memory are the same: copies are memcpy (host to backend). */
static void
cpu_upload (EsBackend *be, void *dst, const void *src, size_t bytes)
{
  if (bytes > 0)
    memcpy (dst, src, bytes);
}

/* backend to host */
static void
cpu_download (EsBackend *be, void *dst, const void *src, size_t bytes)
{
  if (bytes > 0)
    memcpy (dst, src, bytes);
}

static void
cpu_copy (EsBackend *be, void *dst, const void *src, size_t bytes)
{
  if (bytes > 0)
    memcpy (dst, src, bytes);
}

/* Every op runs here; none falls back silently. */
static bool
cpu_supports_op (EsBackend *be, EsOp op)
{
  return (unsigned) op < ES_OP_N_OPS;
}

/* The workspace, grown (never shrunk) to at least bytes and charged as ES_MEM_WORKSPACE;
 * NULL when the budget refuses, and the caller then takes a path without one. */
static float *
cpu_workspace (EsCpu *cpu, size_t bytes)
{
  float *ws;

  if (cpu->ws_bytes >= bytes)
    return cpu->ws;
  cpu_free (&cpu->be, ES_MEM_WORKSPACE, cpu->ws, cpu->ws_bytes);
  cpu->ws = NULL;
  cpu->ws_bytes = 0;
  bytes = ES_CEIL_DIV (bytes, 65536) * 65536;
  ws = cpu_alloc (&cpu->be, ES_MEM_WORKSPACE, bytes, NULL);
  if (ws == NULL)
    return NULL;
  cpu->ws = ws;
  cpu->ws_bytes = bytes;
  return ws;
}

/* Joins the pool and frees the workspace. */
static void
cpu_destroy (EsBackend *be)
{
  EsCpu *cpu = cpu_of (be);

  es_pool_free (cpu->pool);
  cpu_free (be, ES_MEM_WORKSPACE, cpu->ws, cpu->ws_bytes);
  free (cpu->partial);
  free (cpu);
}

/* ---- parallel ranges ---------------------------------------------------------- */

typedef void (*RangeFn) (const void *args, int64_t i0, int64_t i1);

typedef struct {
  RangeFn     fn;
  const void *args;
  int64_t     n, align;
} RangeJob;

/* A pool task: its part of [0, n). */
static void
range_job_run (void *data, int t, int nt)
{
  const RangeJob *job = data;
  int64_t i0, i1;

  es_pool_chunk (job->n, job->align, t, nt, &i0, &i1);
  if (i0 < i1)
    job->fn (job->args, i0, i1);
}

/* fn (args, i0, i1) over [0, n) in parts aligned to align, split across threads only
 * when there are at least min_per_thread per thread. */
static void
parallel_range_ex (EsCpu *cpu, int64_t n, int64_t align, int64_t min_per_thread, RangeFn fn,
                   const void *args)
{
  int nt = threads_for (cpu, (double) n, (double) min_per_thread);

  if (nt <= 1)
    {
      if (n > 0)
        fn (args, 0, n);
      return;
    }
  es_pool_run_n (cpu->pool, nt, range_job_run, &(RangeJob) { fn, args, n, align });
}

/* The same over floats: parts of whole cache lines, PAR_MIN_ELEMS per thread. The
 * parts of equal n are the same in every op, so a thread finds its share of the
 * gradients and the optimizer state in its own cache. */
static void
parallel_range (EsCpu *cpu, int64_t n, RangeFn fn, const void *args)
{
  parallel_range_ex (cpu, n, CHUNK_ALIGN, PAR_MIN_ELEMS, fn, args);
}

typedef struct {
  char *dst;
} ZeroArgs;

/* memset of bytes [i0, i1) */
static void
zero_range (const void *p, int64_t i0, int64_t i1)
{
  const ZeroArgs *a = p;

  memset (a->dst + i0, 0, (size_t) (i1 - i0));
}

/* memset; large buffers (the gradients) in contiguous parts across the threads, the
 * same parts the optimizer step later walks, so each core keeps its share in cache. */
static void
cpu_zero (EsBackend *be, void *dst, size_t bytes)
{
  /* in bytes: parts of 64 (the float split of CHUNK_ALIGN floats, times 4) */
  parallel_range_ex (cpu_of (be), (int64_t) bytes, CHUNK_ALIGN * (int64_t) sizeof (float),
                     PAR_MIN_ELEMS * (int64_t) sizeof (float), zero_range, &(ZeroArgs) { dst });
}

/* ---- vector kernels ------------------------------------------------------------ */

/* exp(x) for x <= 0 (Cephes' expf: range reduction by ln 2, a degree-6 polynomial,
 * 2^n built in the exponent bits), branch-free so it vectorizes; ~2 ulp. Results
 * under 2^-126 come out as 0 or tiny normals. NaN is not handled (callers do). */
static inline float
exp_nonpos (float x)
{
  float t, n, r, z, p, s;
  int32_t bits;

  x = x > -87.0f ? x : -87.0f;
  t = x * 1.44269504088896341f + 12582912.0f;  /* 1.5 * 2^23: rounds to an integer */
  n = t - 12582912.0f;
  r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  z = r * r;
  p = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
         + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f) * z + r + 1.0f;
  bits = ((int32_t) n + 127) << 23;
  memcpy (&s, &bits, sizeof s);
  return p * s;
}

/* The loops below are the element-wise kernels, each over n elements of its own
 * arguments (callers offset the pointers to a part). */

/* out = inp * scale + shift */
ES_CLONES static void
k_load_u8 (float *restrict out, const uint8_t *restrict inp, float scale, float shift,
           int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    out[i] = (float) inp[i] * scale + shift;
}

/* ReLU: out = max(inp, 0) as the reference writes it (a NaN gives 0) */
ES_CLONES static void
k_relu_fwd (float *out, const float *inp, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

/* dinp = dout where inp > 0 */
ES_CLONES static void
k_relu_bwd (float *dinp, const float *dout, const float *inp, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    dinp[i] = inp[i] > 0.0f ? dout[i] : 0.0f;
}

/* LeakyReLU: alpha * inp below 0 */
ES_CLONES static void
k_leaky_fwd (float *out, const float *inp, float alpha, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    out[i] = inp[i] > 0.0f ? inp[i] : alpha * inp[i];
}

/* dinp = dout, or alpha * dout below 0 */
ES_CLONES static void
k_leaky_bwd (float *dinp, const float *dout, const float *inp, float alpha, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    dinp[i] = inp[i] > 0.0f ? dout[i] : alpha * dout[i];
}

/* sigmoid through exp(-|x|) (never overflows), as the reference does. */
ES_CLONES static void
k_sigmoid_fwd (float *out, const float *inp, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    {
      const float x = inp[i];
      const float e = exp_nonpos (-fabsf (x));
      const float y = x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
      out[i] = x != x ? x : y;
    }
}

/* dinp = dout * y (1 - y), y = the output */
ES_CLONES static void
k_sigmoid_bwd (float *dinp, const float *dout, const float *out, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    dinp[i] = dout[i] * out[i] * (1.0f - out[i]);
}

/* tanh: Cephes' odd polynomial below 0.625, (1 - e) / (1 + e) with e = exp(-2|x|)
 * above (no cancellation there), the sign put back. */
ES_CLONES static void
k_tanh_fwd (float *out, const float *inp, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    {
      const float x = inp[i];
      const float a = fabsf (x);
      const float s = x * x;
      const float small = ((((-5.70498872745e-3f * s + 2.06390887954e-2f) * s
                             - 5.37397155531e-2f) * s + 1.33314422036e-1f) * s
                           - 3.33332819422e-1f) * s * x + x;
      const float e = exp_nonpos (-2.0f * a);
      const float big = copysignf ((1.0f - e) / (1.0f + e), x);
      const float y = a < 0.625f ? small : big;
      out[i] = x != x ? x : y;
    }
}

/* dinp = dout * (1 - y^2), y = the output */
ES_CLONES static void
k_tanh_bwd (float *dinp, const float *dout, const float *out, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    dinp[i] = dout[i] * (1.0f - out[i] * out[i]);
}

/* x *= s */
ES_CLONES static void
k_scale (float *x, float s, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    x[i] *= s;
}

/* grad += l1 * sign(param) + l2 * param, sign(0) = 0. */
ES_CLONES static void
k_regularize (float *restrict grad, const float *restrict param, float l1, float l2,
              int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    {
      const float p = param[i];
      const float sgn = p > 0.0f ? 1.0f : (p < 0.0f ? -1.0f : 0.0f);
      grad[i] += l1 * sgn + l2 * p;
    }
}

/* SGD without momentum: p -= lr g */
ES_CLONES static void
k_sgd_plain (float *restrict param, const float *restrict grad, float lr, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    param[i] -= lr * grad[i];
}

/* v = mu v + g; p -= lr v */
ES_CLONES static void
k_sgd_momentum (float *restrict param, float *restrict vel, const float *restrict grad,
                float lr, float mu, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    {
      const float v = mu * vel[i] + grad[i];
      vel[i] = v;
      param[i] -= lr * v;
    }
}

/* v = mu v + g; p -= lr (g + mu v) */
ES_CLONES static void
k_sgd_nesterov (float *restrict param, float *restrict vel, const float *restrict grad,
                float lr, float mu, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    {
      const float g = grad[i];
      const float v = mu * vel[i] + g;
      vel[i] = v;
      param[i] -= lr * (g + mu * v);
    }
}

/* One fused pass: m, v and param each read and written once. The bias corrections
 * are folded into two constants (as PyTorch does), leaving one square root and one
 * division per element, which bound this loop: m / bc1 / (sqrt (v / bc2) + eps) is
 * computed as (lr / bc1) m / (sqrt (v) / sqrt (bc2) + eps), a few ulp away. */
ES_CLONES static void
k_adam (float *restrict param, float *restrict m, float *restrict v,
        const float *restrict grad, float lr, float beta1, float beta2, float eps,
        float wd, float bc1, float bc2, int64_t n)
{
  const float one_m_b1 = 1.0f - beta1;
  const float one_m_b2 = 1.0f - beta2;
  const float step = lr / bc1;
  const float inv_sqrt_bc2 = 1.0f / sqrtf (bc2);
  const float decay = lr * wd;

  for (int64_t i = 0; i < n; i++)
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

/* Sum of x^2 in double, 16 independent lanes so it vectorizes without reassociation. */
ES_CLONES static double
k_sum_squares (const float *x, int64_t n)
{
  double lane[16] = { 0 };
  double s = 0.0;
  int64_t i = 0;

  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; j++)
      lane[j] += (double) x[i + j] * (double) x[i + j];
  for (; i < n; i++)
    s += (double) x[i] * (double) x[i];
  for (int j = 0; j < 16; j++)
    s += lane[j];
  return s;
}

/* acc (n) += x (n) */
ES_CLONES static void
k_add (float *restrict acc, const float *restrict x, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    acc[i] += x[i];
}

/* Sum of x (n) in float, 16 lanes. */
ES_CLONES static float
k_sum (const float *x, int64_t n)
{
  float lane[16] = { 0 };
  float s = 0.0f;
  int64_t i = 0;

  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; j++)
      lane[j] += x[i + j];
  for (; i < n; i++)
    s += x[i];
  for (int j = 0; j < 16; j++)
    s += lane[j];
  return s;
}

/* db (n) += column sums of dout (B rows of stride ld), in blocks kept in registers. */
static void
column_sums_add (float *restrict db, const float *restrict dout, int B, int64_t ld,
                 int64_t n)
{
  float tmp[256];

  for (int64_t o0 = 0; o0 < n; o0 += 256)
    {
      const int64_t len = ES_MIN (256, n - o0);

      memset (tmp, 0, sizeof tmp);
      for (int b = 0; b < B; b++)
        k_add (tmp, dout + (int64_t) b * ld + o0, len);
      k_add (db + o0, tmp, len);
    }
}

/* Output positions ow in [*lo, *hi) read inside the row for kernel column kw:
 * 0 <= ow*S - P + kw < W. */
static inline void
valid_range (int OW, int W, int S, int P, int kw, int *lo, int *hi)
{
  int a = P - kw, b = W + P - kw;   /* a <= ow*S < b */

  *lo = a <= 0 ? 0 : (a + S - 1) / S;
  *hi = b <= 0 ? 0 : ES_MIN (OW, (b + S - 1) / S);
  if (*lo > *hi)
    *lo = *hi;
}

/* The activation argument of the dense forward when there is none. */
#define ACT_NONE ES_OP_DENSE

/* rows (rows, cols; row stride ldo) = act(rows) in place, act as act_forward's
 * (ACT_NONE: nothing), with act_forward's kernels, so a fused layer gives the bits of
 * the two ops in turn. */
static void
act_rows (EsOp act, float alpha, float *out, int64_t ldo, int64_t rows, int64_t cols)
{
  if (act == ACT_NONE || rows <= 0 || cols <= 0)
    return;
  if (ldo == cols)
    {
      cols *= rows;
      rows = 1;
    }
  for (int64_t r = 0; r < rows; r++)
    {
      float *o = out + r * ldo;

      switch (act)
        {
        case ES_OP_RELU: k_relu_fwd (o, o, cols); break;
        case ES_OP_LEAKY_RELU: k_leaky_fwd (o, o, alpha, cols); break;
        case ES_OP_SIGMOID: k_sigmoid_fwd (o, o, cols); break;
        case ES_OP_TANH: k_tanh_fwd (o, o, cols); break;
        default: break;
        }
    }
}

/* ---- matrix products ---------------------------------------------------------------- */

/* Two small AVX-512 kernels cover every product the layers need, with no packing:
 *
 *   NT  C (M,N) = beta C + A (M,K) . B (N,K)^T   rows of A and B both run along K: a
 *       4x4 tile of dot products, 16 accumulators of 16 lanes along K, summed across
 *       lanes once per tile, and a last single row in 1x8 tiles (dense forward,
 *       conv dw);
 *   NN / TN  C (M,N) = beta C + A . B (K,N)      A (m,k) at A[m*rsa + k*csa]: an 8x32 tile
 *       of outer products, a broadcast of A times two vectors of a B row per k (dense
 *       dw and dinp, conv forward and dcol).
 *
 * Edge rows are computed from a repeated valid row and not stored; edge columns are
 * masked. Debian's OpenBLAS 0.3.21 runs its AVX2 (Haswell) kernels on AVX-512 AMD
 * parts, and these reach ~1.5-2x that on the MLP's shapes (bench-kernels). Without
 * AVX-512F, or with ESPALIER_GEMM=blas in the environment, cblas_sgemm does it all.
 * Inference on large batches has a third, the packed product (see packed_rows), and
 * softmax over at most 16 classes its own kernel. */

#if defined(__GNUC__) && defined(__x86_64__) && !defined(ES_NO_CLONES)
#define ES_HAVE_AVX512_GEMM 1
static bool use_avx512;
#include <immintrin.h>

#define ES_AVX512 __attribute__ ((target ("avx512f")))

/* The four sums of a, b, c, d (16 lanes each), as one xmm. */
ES_AVX512 static inline __m128
hsum4 (__m512 a, __m512 b, __m512 c, __m512 d)
{
  /* per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], the same for c, d */
  __m512 ab = _mm512_add_ps (_mm512_unpacklo_ps (a, b), _mm512_unpackhi_ps (a, b));
  __m512 cd = _mm512_add_ps (_mm512_unpacklo_ps (c, d), _mm512_unpackhi_ps (c, d));
  /* per lane: [a, b, c, d] */
  __m512 s = _mm512_add_ps (_mm512_shuffle_ps (ab, cd, _MM_SHUFFLE (1, 0, 1, 0)),
                            _mm512_shuffle_ps (ab, cd, _MM_SHUFFLE (3, 2, 3, 2)));
  __m256 lo = _mm512_castps512_ps256 (s);
  __m256 hi = _mm256_castpd_ps (_mm512_extractf64x4_pd (_mm512_castps_pd (s), 1));
  __m256 h = _mm256_add_ps (lo, hi);

  return _mm_add_ps (_mm256_castps256_ps128 (h), _mm256_extractf128_ps (h, 1));
}

/* c (N) = beta c + a (K) . B (N,K; ldb)^T for a single row of A: 1x8 tiles of dot
 * products, one load of a and eight of B a vector. A lone row (batch 1) in a 4x4 tile
 * would do four times its multiply-adds. */
ES_AVX512 static void
gemm_nt_row_avx512 (int N, int K, const float *a, const float *B, int ldb, float beta,
                    float *c)
{
  const int kfull = K & ~15;
  const __mmask16 tail = (__mmask16) ((1u << (K & 15)) - 1);

  for (int j = 0; j < N; j += 8)
    {
      const float *b[8];
      __m512 acc[8];
      int k;

      for (int q = 0; q < 8; q++)
        {
          b[q] = B + (int64_t) ES_MIN (j + q, N - 1) * ldb;
          acc[q] = _mm512_setzero_ps ();
        }
      for (k = 0; k < kfull; k += 16)
        {
          const __m512 va = _mm512_loadu_ps (a + k);

          for (int q = 0; q < 8; q++)
            acc[q] = _mm512_fmadd_ps (va, _mm512_loadu_ps (b[q] + k), acc[q]);
        }
      if (tail != 0)
        {
          const __m512 va = _mm512_maskz_loadu_ps (tail, a + k);

          for (int q = 0; q < 8; q++)
            acc[q] = _mm512_fmadd_ps (va, _mm512_maskz_loadu_ps (tail, b[q] + k), acc[q]);
        }
      {
        const __m256 s = _mm256_setr_m128 (hsum4 (acc[0], acc[1], acc[2], acc[3]),
                                           hsum4 (acc[4], acc[5], acc[6], acc[7]));
        const int nr = ES_MIN (8, N - j);

        if (nr == 8)
          _mm256_storeu_ps (c + j, beta != 0.0f ? _mm256_add_ps (_mm256_loadu_ps (c + j), s) : s);
        else
          {
            float v[8];

            _mm256_storeu_ps (v, s);
            for (int q = 0; q < nr; q++)
              c[j + q] = beta != 0.0f ? c[j + q] + v[q] : v[q];
          }
      }
    }
}

/* C (M,N; ldc) = beta C + A (M,K; lda) . B (N,K; ldb)^T, in 4x4 tiles of dot products
 * (i over rows of A, j over rows of B, k along both in vectors of 16); a last single
 * row by gemm_nt_row_avx512. */
ES_AVX512 static void
gemm_nt_avx512 (int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                float beta, float *C, int ldc)
{
  const int kfull = K & ~15;
  const __mmask16 tail = (__mmask16) ((1u << (K & 15)) - 1);

  for (int i = 0; i < M; i += 4)
    {
      if (M - i == 1)
        {
          gemm_nt_row_avx512 (N, K, A + (int64_t) i * lda, B, ldb, beta, C + (int64_t) i * ldc);
          break;
        }
      const float *a0 = A + (int64_t) ES_MIN (i + 0, M - 1) * lda;
      const float *a1 = A + (int64_t) ES_MIN (i + 1, M - 1) * lda;
      const float *a2 = A + (int64_t) ES_MIN (i + 2, M - 1) * lda;
      const float *a3 = A + (int64_t) ES_MIN (i + 3, M - 1) * lda;

      for (int j = 0; j < N; j += 4)
        {
          const float *b0 = B + (int64_t) ES_MIN (j + 0, N - 1) * ldb;
          const float *b1 = B + (int64_t) ES_MIN (j + 1, N - 1) * ldb;
          const float *b2 = B + (int64_t) ES_MIN (j + 2, N - 1) * ldb;
          const float *b3 = B + (int64_t) ES_MIN (j + 3, N - 1) * ldb;
          __m512 c00 = _mm512_setzero_ps (), c01 = c00, c02 = c00, c03 = c00;
          __m512 c10 = c00, c11 = c00, c12 = c00, c13 = c00;
          __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00;
          __m512 c30 = c00, c31 = c00, c32 = c00, c33 = c00;
          __m512 va0, va1, va2, va3, vb0, vb1, vb2, vb3;
          int k;

#define NT_STEP                                                                     \
          c00 = _mm512_fmadd_ps (va0, vb0, c00); c01 = _mm512_fmadd_ps (va0, vb1, c01); \
          c02 = _mm512_fmadd_ps (va0, vb2, c02); c03 = _mm512_fmadd_ps (va0, vb3, c03); \
          c10 = _mm512_fmadd_ps (va1, vb0, c10); c11 = _mm512_fmadd_ps (va1, vb1, c11); \
          c12 = _mm512_fmadd_ps (va1, vb2, c12); c13 = _mm512_fmadd_ps (va1, vb3, c13); \
          c20 = _mm512_fmadd_ps (va2, vb0, c20); c21 = _mm512_fmadd_ps (va2, vb1, c21); \
          c22 = _mm512_fmadd_ps (va2, vb2, c22); c23 = _mm512_fmadd_ps (va2, vb3, c23); \
          c30 = _mm512_fmadd_ps (va3, vb0, c30); c31 = _mm512_fmadd_ps (va3, vb1, c31); \
          c32 = _mm512_fmadd_ps (va3, vb2, c32); c33 = _mm512_fmadd_ps (va3, vb3, c33);

          for (k = 0; k < kfull; k += 16)
            {
              va0 = _mm512_loadu_ps (a0 + k); va1 = _mm512_loadu_ps (a1 + k);
              va2 = _mm512_loadu_ps (a2 + k); va3 = _mm512_loadu_ps (a3 + k);
              vb0 = _mm512_loadu_ps (b0 + k); vb1 = _mm512_loadu_ps (b1 + k);
              vb2 = _mm512_loadu_ps (b2 + k); vb3 = _mm512_loadu_ps (b3 + k);
              NT_STEP
            }
          if (tail != 0)
            {
              va0 = _mm512_maskz_loadu_ps (tail, a0 + k); va1 = _mm512_maskz_loadu_ps (tail, a1 + k);
              va2 = _mm512_maskz_loadu_ps (tail, a2 + k); va3 = _mm512_maskz_loadu_ps (tail, a3 + k);
              vb0 = _mm512_maskz_loadu_ps (tail, b0 + k); vb1 = _mm512_maskz_loadu_ps (tail, b1 + k);
              vb2 = _mm512_maskz_loadu_ps (tail, b2 + k); vb3 = _mm512_maskz_loadu_ps (tail, b3 + k);
              NT_STEP
            }
#undef NT_STEP

          {
            const __m128 s[4] = { hsum4 (c00, c01, c02, c03), hsum4 (c10, c11, c12, c13),
                                  hsum4 (c20, c21, c22, c23), hsum4 (c30, c31, c32, c33) };
            const int nr = ES_MIN (4, N - j);

            for (int r = 0; r < 4 && i + r < M; r++)
              {
                float *crow = C + (int64_t) (i + r) * ldc + j;
                if (nr == 4)
                  _mm_storeu_ps (crow, beta != 0.0f ? _mm_add_ps (_mm_loadu_ps (crow), s[r]) : s[r]);
                else
                  {
                    float v[4];
                    _mm_storeu_ps (v, s[r]);
                    for (int c = 0; c < nr; c++)
                      crow[c] = beta != 0.0f ? crow[c] + v[c] : v[c];
                  }
              }
          }
        }
    }
}

/* C (M,N; ldc) = beta C + A . B (K,N; ldb), A (m,k) at A[m*rsa + k*csa]: 8 rows x 32
 * columns of C in 16 registers, one broadcast of A and two vectors of B a k. */
ES_AVX512 static void
gemm_outer_avx512 (int M, int N, int K, const float *A, int64_t rsa, int64_t csa,
                   const float *B, int ldb, float beta, float *C, int ldc)
{
  for (int j = 0; j < N; j += 32)
    {
      const int nj = ES_MIN (32, N - j);
      const __mmask16 m0 = nj >= 16 ? 0xffff : (__mmask16) ((1u << nj) - 1);
      const __mmask16 m1 = nj >= 32 ? 0xffff : nj > 16 ? (__mmask16) ((1u << (nj - 16)) - 1) : 0;

      for (int i = 0; i < M; i += 8)
        {
          const float *a[8];
          __m512 c0[8], c1[8];
          const float *bp = B + j;

          for (int r = 0; r < 8; r++)
            {
              a[r] = A + (int64_t) ES_MIN (i + r, M - 1) * rsa;
              c0[r] = c1[r] = _mm512_setzero_ps ();
            }
          for (int k = 0; k < K; k++, bp += ldb)
            {
              const __m512 b0 = _mm512_maskz_loadu_ps (m0, bp);
              const __m512 b1 = _mm512_maskz_loadu_ps (m1, bp + 16);
              const int64_t ko = (int64_t) k * csa;

              for (int r = 0; r < 8; r++)
                {
                  const __m512 av = _mm512_set1_ps (a[r][ko]);
                  c0[r] = _mm512_fmadd_ps (av, b0, c0[r]);
                  c1[r] = _mm512_fmadd_ps (av, b1, c1[r]);
                }
            }
          for (int r = 0; r < 8 && i + r < M; r++)
            {
              float *crow = C + (int64_t) (i + r) * ldc + j;
              if (beta != 0.0f)
                {
                  c0[r] = _mm512_add_ps (c0[r], _mm512_maskz_loadu_ps (m0, crow));
                  c1[r] = _mm512_add_ps (c1[r], _mm512_maskz_loadu_ps (m1, crow + 16));
                }
              _mm512_mask_storeu_ps (crow, m0, c0[r]);
              _mm512_mask_storeu_ps (crow + 16, m1, c1[r]);
            }
        }
    }
}
/* Lanes [lo, hi) of the 16 starting at o, as a mask. */
ES_AVX512 static inline __mmask16
lane_mask (int o, int lo, int hi)
{
  const int a = ES_MAX (lo - o, 0), b = ES_MIN (hi - o, 16);

  return b <= a ? 0 : (__mmask16) (((1u << b) - 1) & ~((1u << a) - 1));
}

/* The packed product for large batches: C (M,N) = act(A (M,K) . W (N,K)^T + bias),
 * with W first copied into panels of up to PANEL_COLS columns, each (K, 16*NV) k-major
 * and zero-padded past N, and the bias the same way. A tile of R rows x NV vectors of
 * C then lives in R*NV registers, started from the bias: per k, NV loads of the panel
 * row and R broadcasts of A feed R*NV multiply-adds. At 6x4 that is 10 loads for 24
 * FMAs and 21 bytes of panel per 24 FMAs (vs 4x4 dot products: 8 loads, 64 bytes of W
 * from L2 per 16 FMAs), which the dot-product kernel cannot reach at large M: it reads
 * all of W from L2 again for every 4 rows of A. The copy costs ~10 us for 784x128
 * (16x16 blocks transposed in registers), so this pays from ~50 rows a thread
 * (DENSE_PACKED_MIN_ROWS). */
#define PANEL_COLS 64

/* Rows of a tile for a panel of nv vectors: ~24 accumulators, and at least 8 FMA
 * chains in flight for nv = 1. */
static inline int
panel_rows (int nv)
{
  return nv == 4 ? 6 : nv == 3 ? 8 : nv == 2 ? 12 : 16;
}

/* The activation of the packed product's epilogue: ES_OP_RELU, _LEAKY_RELU, or any
 * other value for none. */
ES_AVX512 static inline __m512
tile_act (__m512 x, EsOp act, float alpha)
{
  if (act == ES_OP_RELU)
    return _mm512_max_ps (x, _mm512_setzero_ps ());  /* NaN gives 0, as the reference */
  if (act == ES_OP_LEAKY_RELU)  /* alpha x unless x > 0 (NaN too) */
    return _mm512_mask_mul_ps (x, _mm512_cmp_ps_mask (x, _mm512_setzero_ps (), _CMP_NGT_UQ),
                               x, _mm512_set1_ps (alpha));
  return x;
}

/* One tile: rows a[0..R) of A against one panel wp (K, 16*NV) from bias bp (16*NV);
 * rows [0, rows) and columns [0, ncols) stored at C (ldc). */
#define DEFINE_PACKED_TILE(R, NV)                                                         \
ES_AVX512 static void                                                                   \
packed_tile_##R##x##NV (const float *const *a, int K, const float *wp, const float *bp,   \
                        float *C, int ldc, int rows, int ncols, EsOp act, float alpha)     \
{                                                                                        \
  __m512 acc[R][NV];                                                                     \
                                                                                         \
  _Pragma ("GCC unroll 16")                                                              \
  for (int v = 0; v < NV; v++)                                                           \
    {                                                                                    \
      const __m512 b = _mm512_load_ps (bp + 16 * v);                                     \
      _Pragma ("GCC unroll 16")                                                          \
      for (int r = 0; r < R; r++)                                                        \
        acc[r][v] = b;                                                                   \
    }                                                                                    \
  _Pragma ("GCC unroll 2")                                                               \
  for (int k = 0; k < K; k++, wp += 16 * NV)                                             \
    {                                                                                    \
      __m512 w[NV];                                                                      \
                                                                                         \
      _Pragma ("GCC unroll 16")                                                          \
      for (int v = 0; v < NV; v++)                                                       \
        w[v] = _mm512_load_ps (wp + 16 * v);                                             \
      _Pragma ("GCC unroll 16")                                                          \
      for (int r = 0; r < R; r++)                                                        \
        {                                                                                \
          const __m512 av = _mm512_set1_ps (a[r][k]);                                    \
          _Pragma ("GCC unroll 16")                                                      \
          for (int v = 0; v < NV; v++)                                                   \
            acc[r][v] = _mm512_fmadd_ps (av, w[v], acc[r][v]);                           \
        }                                                                                \
    }                                                                                    \
  _Pragma ("GCC unroll 16")                                                              \
  for (int r = 0; r < R; r++)                                                            \
    if (r < rows)                                                                        \
      {                                                                                  \
        _Pragma ("GCC unroll 16")                                                        \
        for (int v = 0; v < NV; v++)                                                     \
          _mm512_mask_storeu_ps (C + (int64_t) r * ldc + 16 * v, lane_mask (16 * v, 0, ncols), \
                                 tile_act (acc[r][v], act, alpha));                      \
      }                                                                                  \
}

DEFINE_PACKED_TILE (6, 4)
DEFINE_PACKED_TILE (8, 3)
DEFINE_PACKED_TILE (12, 2)
DEFINE_PACKED_TILE (16, 1)
#undef DEFINE_PACKED_TILE

/* Panel p of N columns: its first column, vectors and offset in the packed copy. */
static inline void
panel_of (int p, int N, int K, int *c0, int *nv, int64_t *off)
{
  *c0 = p * PANEL_COLS;
  *nv = ES_MIN (PANEL_COLS, ES_CEIL_DIV (N - *c0, 16) * 16) / 16;
  *off = (int64_t) *c0 * K;
}

/* Floats of the packed copy of W (N,K) and its bias. */
static inline int64_t
packed_floats (int N, int K)
{
  const int64_t npad = ES_CEIL_DIV (N, 16) * 16;

  return npad * K + npad;
}

/* r[0..16) = their transpose, as a 16x16 block of floats: r[k] lane i = r[i] lane k. */
ES_AVX512 static inline __attribute__ ((always_inline)) void
transpose16 (__m512 *r)
{
  __m512 t[16];

  for (int i = 0; i < 16; i += 2)
    {
      t[i] = _mm512_unpacklo_ps (r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps (r[i], r[i + 1]);
    }
  /* r[4g + c]: per 128-bit lane l, column c + 4l of rows 4g .. 4g+3 */
  for (int i = 0; i < 16; i += 4)
    {
      r[i] = _mm512_shuffle_ps (t[i], t[i + 2], _MM_SHUFFLE (1, 0, 1, 0));
      r[i + 1] = _mm512_shuffle_ps (t[i], t[i + 2], _MM_SHUFFLE (3, 2, 3, 2));
      r[i + 2] = _mm512_shuffle_ps (t[i + 1], t[i + 3], _MM_SHUFFLE (1, 0, 1, 0));
      r[i + 3] = _mm512_shuffle_ps (t[i + 1], t[i + 3], _MM_SHUFFLE (3, 2, 3, 2));
    }
  /* t[c]: columns c, c+8 of rows 0-7; t[4+c]: c+4, c+12; t[8+c], t[12+c]: rows 8-15 */
  for (int c = 0; c < 4; c++)
    {
      t[c] = _mm512_shuffle_f32x4 (r[c], r[4 + c], 0x88);
      t[4 + c] = _mm512_shuffle_f32x4 (r[c], r[4 + c], 0xdd);
      t[8 + c] = _mm512_shuffle_f32x4 (r[8 + c], r[12 + c], 0x88);
      t[12 + c] = _mm512_shuffle_f32x4 (r[8 + c], r[12 + c], 0xdd);
    }
  for (int c = 0; c < 4; c++)
    {
      r[c] = _mm512_shuffle_f32x4 (t[c], t[8 + c], 0x88);
      r[c + 8] = _mm512_shuffle_f32x4 (t[c], t[8 + c], 0xdd);
      r[c + 4] = _mm512_shuffle_f32x4 (t[4 + c], t[12 + c], 0x88);
      r[c + 12] = _mm512_shuffle_f32x4 (t[4 + c], t[12 + c], 0xdd);
    }
}

/* dst (16 rows of stride ldd) = the transpose of a 16x16 block of src (rows of stride
 * lds): dst[k][r] = src[r][k] for the rows r < nr (the others give 0) and the columns
 * k in kmask; the other rows of dst are not stored. */
ES_AVX512 static void
transpose_16x16 (float *dst, int64_t ldd, const float *src, int64_t lds, int nr,
                 __mmask16 kmask)
{
  __m512 r[16];

  for (int i = 0; i < 16; i++)
    r[i] = i < nr ? _mm512_maskz_loadu_ps (kmask, src + i * lds) : _mm512_setzero_ps ();
  transpose16 (r);
  for (int k = 0; k < 16; k++)
    if ((kmask >> k) & 1)
      _mm512_storeu_ps (dst + k * ldd, r[k]);
}

/* Packs W (N,K) into the panels at wp, 16x16 blocks at a time. */
ES_AVX512 static void
pack_panels (float *restrict wp, const float *restrict W, int N, int K)
{
  for (int p = 0; p * PANEL_COLS < N; p++)
    {
      int c0, nv;
      int64_t off;

      panel_of (p, N, K, &c0, &nv, &off);
      for (int v = 0; v < nv; v++)
        {
          const int r0 = c0 + 16 * v, nr = ES_MAX (0, ES_MIN (16, N - r0));

          for (int k = 0; k < K; k += 16)
            transpose_16x16 (wp + off + (int64_t) k * 16 * nv + 16 * v, 16 * nv,
                             W + (int64_t) ES_MIN (r0, N - 1) * K + k, K, nr,
                             lane_mask (k, 0, K));
        }
    }
}

/* The bias b (N; NULL: zeros) after the panels of wp, padded with zeros. */
static void
pack_bias (float *restrict wp, const float *restrict b, int N, int K)
{
  const int64_t npad = ES_CEIL_DIV (N, 16) * 16;

  for (int64_t c = 0; c < npad; c++)
    wp[npad * K + c] = b != NULL && c < N ? b[c] : 0.0f;
}

/* Rows [r0, r1) of C: blocks of PACKED_MC rows, each against every panel in tiles. */
#define PACKED_MC 24

ES_AVX512 static void
packed_rows (float *C, int ldc, const float *A, int lda, const float *wp, int N, int K,
             EsOp act, float alpha, int64_t r0, int64_t r1)
{
  const float *bias = wp + ES_CEIL_DIV (N, 16) * 16 * (int64_t) K;

  for (int64_t i0 = r0; i0 < r1; i0 += PACKED_MC)
    {
      const int64_t i1 = ES_MIN (i0 + PACKED_MC, r1);

      for (int p = 0; p * PANEL_COLS < N; p++)
        {
          int c0, nv;
          int64_t off;

          panel_of (p, N, K, &c0, &nv, &off);
          {
            const int R = panel_rows (nv);

            for (int64_t i = i0; i < i1; i += R)
              {
                const float *a[16];
                const int rows = (int) ES_MIN (R, i1 - i);
                float *c = C + i * ldc + c0;

                for (int r = 0; r < R; r++)
                  a[r] = A + ES_MIN (i + r, i1 - 1) * lda;
                switch (nv)
                  {
                  case 4:
                    packed_tile_6x4 (a, K, wp + off, bias + c0, c, ldc, rows, N - c0, act, alpha);
                    break;
                  case 3:
                    packed_tile_8x3 (a, K, wp + off, bias + c0, c, ldc, rows, N - c0, act, alpha);
                    break;
                  case 2:
                    packed_tile_12x2 (a, K, wp + off, bias + c0, c, ldc, rows, N - c0, act, alpha);
                    break;
                  default:
                    packed_tile_16x1 (a, K, wp + off, bias + c0, c, ldc, rows, N - c0, act, alpha);
                    break;
                  }
              }
          }
        }
      if (act != ES_OP_RELU && act != ES_OP_LEAKY_RELU)
        act_rows (act, alpha, C + i0 * ldc, ldc, i1 - i0, N);
    }
}

/* exp_nonpos on 16 lanes (the same reduction and polynomial, 2^n by scalef). */
ES_AVX512 static inline __m512
exp_nonpos_avx512 (__m512 x)
{
  const __m512 round = _mm512_set1_ps (12582912.0f);
  __m512 n, r, z, p;

  x = _mm512_max_ps (x, _mm512_set1_ps (-87.0f));
  n = _mm512_sub_ps (_mm512_fmadd_ps (x, _mm512_set1_ps (1.44269504088896341f), round), round);
  r = _mm512_fnmadd_ps (n, _mm512_set1_ps (0.693359375f), x);
  r = _mm512_fnmadd_ps (n, _mm512_set1_ps (-2.12194440e-4f), r);
  z = _mm512_mul_ps (r, r);
  p = _mm512_fmadd_ps (_mm512_set1_ps (1.9875691500e-4f), r, _mm512_set1_ps (1.3981999507e-3f));
  p = _mm512_fmadd_ps (p, r, _mm512_set1_ps (8.3334519073e-3f));
  p = _mm512_fmadd_ps (p, r, _mm512_set1_ps (4.1665795894e-2f));
  p = _mm512_fmadd_ps (p, r, _mm512_set1_ps (1.6666665459e-1f));
  p = _mm512_fmadd_ps (p, r, _mm512_set1_ps (5.0000001201e-1f));
  p = _mm512_fmadd_ps (p, z, _mm512_add_ps (r, _mm512_set1_ps (1.0f)));
  return _mm512_scalef_ps (p, n);
}

/* Softmax of rows [r0, r1) of inp (B,C) into out, for C <= 16: 16 rows at a time
 * transposed into registers, so the row max, exp, sum and division run across 16 rows
 * in each vector with no horizontal reductions. As the reference: the max is x[0]
 * then any larger x[c], a NaN (or inf - inf) anywhere gives a row of NaN; exp is
 * exp_nonpos and the sum in float, a few ulp from the reference's expf and double. */
ES_AVX512 static void
softmax_rows_avx512 (float *out, const float *inp, int64_t r0, int64_t r1, int C)
{
  const __mmask16 cmask = (__mmask16) ((1u << C) - 1);

  for (int64_t r = r0; r < r1; r += 16)
    {
      const int nr = (int) ES_MIN (16, r1 - r);
      __m512 v[16], m, sum = _mm512_setzero_ps ();

      for (int i = 0; i < 16; i++)
        v[i] = i < nr ? _mm512_maskz_loadu_ps (cmask, inp + (r + i) * C) : _mm512_setzero_ps ();
      transpose16 (v);
      m = v[0];
      for (int c = 1; c < C; c++)
        m = _mm512_max_ps (v[c], m);  /* v[c] > m ? v[c] : m */
      for (int c = 0; c < C; c++)
        {
          const __m512 d = _mm512_sub_ps (v[c], m);

          v[c] = _mm512_mask_blend_ps (_mm512_cmp_ps_mask (d, d, _CMP_UNORD_Q),
                                       exp_nonpos_avx512 (d), d);
          sum = _mm512_add_ps (sum, v[c]);
        }
      for (int c = 0; c < C; c++)
        v[c] = _mm512_div_ps (v[c], sum);
      transpose16 (v);
      for (int i = 0; i < nr; i++)
        _mm512_mask_storeu_ps (out + (r + i) * C, cmask, v[i]);
    }
}

/* im2col and col2im for stride 1 with masked loads and stores, 16 floats at a time
 * and no edge loops: rows are short (14 floats at 14x14), so per-row overhead is what
 * counts. im2col: each col row segment is one masked load (padding lanes read as 0)
 * and one masked store. */
ES_AVX512 static void
im2col_s1_avx512 (float *col, const float *img, int C, int H, int W, int K, int P,
                  int OH, int OW, int row0, int row1)
{
  const int64_t OHW = (int64_t) OH * OW;

  for (int row = row0; row < row1; row++)
    {
      const int c = row / (K * K), kh = row / K % K, kw = row % K;
      const float *plane = img + (int64_t) c * H * W;
      float *dst = col + (int64_t) row * OHW;
      int lo, hi;

      valid_range (OW, W, 1, P, kw, &lo, &hi);
      if (OW <= 16)
        {
          /* one vector a row: the masks are the same for every row */
          const __mmask16 store = lane_mask (0, 0, OW), load = lane_mask (0, lo, hi);

          for (int oh = 0; oh < OH; oh++, dst += OW)
            {
              const int ih = oh - P + kh;
              const __m512 v = ih >= 0 && ih < H
                               ? _mm512_maskz_loadu_ps (load, plane + (int64_t) ih * W + kw - P)
                               : _mm512_setzero_ps ();
              _mm512_mask_storeu_ps (dst, store, v);
            }
          continue;
        }
      for (int oh = 0; oh < OH; oh++, dst += OW)
        {
          const int ih = oh - P + kh;
          const bool inside = ih >= 0 && ih < H;
          /* the window row: read only in lanes [lo, hi), which lie inside the row */
          const float *src = plane + (int64_t) (inside ? ih : 0) * W + kw - P;

          for (int o = 0; o < OW; o += 16)
            {
              const __mmask16 load = inside ? lane_mask (o, lo, hi) : 0;

              _mm512_mask_storeu_ps (dst + o, lane_mask (o, 0, OW),
                                     _mm512_maskz_loadu_ps (load, src + o));
            }
        }
    }
}

/* col2im gathers: each image row is summed in a register over the K*K col rows that
 * reach it and stored once, so no store waits on an overlapping earlier store. */
ES_AVX512 static void
col2im_s1_avx512 (float *img, const float *col, int C, int H, int W, int K, int P,
                  int OH, int OW)
{
  const int64_t OHW = (int64_t) OH * OW;

  for (int c = 0; c < C; c++)
    for (int ih = 0; ih < H; ih++)
      {
        float *dst = img + ((int64_t) c * H + ih) * W;

        for (int o = 0; o < W; o += 16)
          {
            __m512 acc = _mm512_setzero_ps ();

            for (int kh = 0; kh < K; kh++)
              {
                const int oh = ih + P - kh;

                if (oh < 0 || oh >= OH)
                  continue;
                for (int kw = 0; kw < K; kw++)
                  {
                    /* pixel iw came from ow = iw + P - kw, when that is in [0, OW) */
                    const float *src = col + ((int64_t) (c * K + kh) * K + kw) * OHW
                                       + (int64_t) oh * OW + P - kw;
                    const __mmask16 m = lane_mask (o, ES_MAX (kw - P, 0),
                                                   ES_MIN (W, OW + kw - P));

                    acc = _mm512_add_ps (acc, _mm512_maskz_loadu_ps (m, src + o));
                  }
              }
            _mm512_mask_storeu_ps (dst + o, lane_mask (o, 0, W), acc);
          }
      }
}
#endif

/* C (M,N; ldc) = beta C + op(A) . op(B), row-major as cblas_sgemm with alpha 1 and
 * beta 0 or 1; op transposes when ta / tb. */
static void
gemm (bool ta, bool tb, int M, int N, int K, const float *A, int lda, const float *B,
      int ldb, float beta, float *C, int ldc)
{
  if (M <= 0 || N <= 0)
    return;
  if (K <= 0)
    {
      if (beta == 0.0f)
        for (int i = 0; i < M; i++)
          memset (C + (int64_t) i * ldc, 0, (size_t) N * sizeof (float));
      return;
    }
#ifdef ES_HAVE_AVX512_GEMM
  if (use_avx512)
    {
      if (!ta && tb)
        {
          gemm_nt_avx512 (M, N, K, A, lda, B, ldb, beta, C, ldc);
          return;
        }
      if (!tb)
        {
          gemm_outer_avx512 (M, N, K, A, ta ? 1 : lda, ta ? lda : 1, B, ldb, beta, C, ldc);
          return;
        }
    }
#endif
  cblas_sgemm (CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
               M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* ---- data ---------------------------------------------------------------------- */

typedef struct {
  float         *out;
  const uint8_t *inp;
  float          scale, shift;
} LoadArgs;

/* range adapters: each calls its kernel on part [i0, i1) */
static void
load_range (const void *p, int64_t i0, int64_t i1)
{
  const LoadArgs *a = p;

  k_load_u8 (a->out + i0, a->inp + i0, a->scale, a->shift, i1 - i0);
}

/* out = inp * scale + shift, uint8 to float. Split from 8k floats a thread, lower than
 * other loops: each core then writes, and holds in its cache, part of the batch that
 * the first layer reads next (a B=32 MNIST batch is 25k floats; measured ~5 us better
 * per training step than converting it on one core). */
static void
cpu_load_u8 (EsBackend *be, float *out, const uint8_t *inp, float scale, float shift,
             int64_t N)
{
  cpu_enter (cpu_of (be));
  parallel_range_ex (cpu_of (be), N, CHUNK_ALIGN, 1 << 13, load_range,
                     &(LoadArgs) { out, inp, scale, shift });
}

/* ---- dense --------------------------------------------------------------------- */

/* out (B, OUT; row stride ldo) = act(inp (B,IN) . w^T (OUT,IN) + b (OUT)), one sgemm. */
static void
dense_fwd_block (float *out, int ldo, const float *inp, const float *w, const float *b,
                 int B, int IN, int OUT, EsOp act, float alpha)
{
  float beta = 0.0f;

  if (b != NULL)
    {
      for (int r = 0; r < B; r++)
        memcpy (out + (int64_t) r * ldo, b, (size_t) OUT * sizeof (float));
      beta = 1.0f;
    }
  gemm (false, true, B, OUT, IN, inp, IN, w, IN, beta, out, ldo);
  act_rows (act, alpha, out, ldo, B, OUT);
}

typedef struct {
  float       *out;
  const float *inp, *w, *b;
  int          B, IN, OUT;
  bool         split_rows;  /* split B (few outputs) instead of OUT */
  EsOp         act;
  float        alpha;
  float       *wp;          /* the packed path: w and b packed, per task (wp_stride) */
  int64_t      wp_stride;
} DenseFwdJob;

/* Task t: a slice of OUT (columns of out, rows of w and b), or of B when split_rows. */
static void
dense_fwd_part (void *data, int t, int nt)
{
  const DenseFwdJob *j = data;
  int64_t lo, hi;

  if (j->split_rows)
    {
      es_pool_chunk (j->B, 1, t, nt, &lo, &hi);
      if (lo < hi)
        dense_fwd_block (j->out + lo * j->OUT, j->OUT, j->inp + lo * j->IN, j->w, j->b,
                         (int) (hi - lo), j->IN, j->OUT, j->act, j->alpha);
    }
  else
    {
      es_pool_chunk (j->OUT, CHUNK_ALIGN, t, nt, &lo, &hi);
      if (lo < hi)
        dense_fwd_block (j->out + lo, j->OUT, j->inp, j->w + lo * j->IN,
                         j->b != NULL ? j->b + lo : NULL, j->B, j->IN, (int) (hi - lo),
                         j->act, j->alpha);
    }
}

#ifdef ES_HAVE_AVX512_GEMM
/* From this many rows the inference forward packs w and cuts the batch (measured
 * crossover on the 784->128 layer with 2 threads; on one thread the two are within
 * 7% of each other from 96 to 192 rows). */
#define DENSE_PACKED_MIN_ROWS 96
/* nor for fewer outputs than this: a panel of one or two vectors feeds too few
 * multiply-adds per broadcast (128->10 at B=10000 took 160 us packed, 115 us in
 * dot-product tiles). */
#define DENSE_PACKED_MIN_OUT 48
/* nor when a packed copy would pass this many floats (4 MB): each thread keeps one in
 * the workspace, and a panel of w that no longer fits in L2 is streamed from memory
 * for every block of rows (measured only on w up to 400 KB). The memory plan counts
 * these copies with the same three numbers and layout (cpu_dense_packed_workspace in
 * es-train.c): change them together. */
#define DENSE_PACKED_MAX_FLOATS (1 << 20)

/* Product task t: packs all of w and b into its own part of the workspace (a copy
 * made by another core would then cross to this one), then a block of rows of out
 * against it. */
static void
dense_packed_part (void *data, int t, int nt)
{
  const DenseFwdJob *j = data;
  float *wp = j->wp + t * j->wp_stride;
  int64_t lo, hi;

  es_pool_chunk (j->B, CHUNK_ALIGN, t, nt, &lo, &hi);
  if (lo >= hi)
    return;
  pack_panels (wp, j->w, j->OUT, j->IN);
  pack_bias (wp, j->b, j->OUT, j->IN);
  packed_rows (j->out, j->OUT, j->inp, j->IN, wp, j->OUT, j->IN, j->act, j->alpha, lo, hi);
}
#endif

/* out (B,OUT) = act(inp (B,IN) . w^T (OUT,IN) + b (OUT)). Each thread a slice of OUT's
 * columns (all of inp, its rows of w), or of B's rows when OUT is too narrow to cut,
 * and the activation on that slice while it is in cache. Training wants that cut: the
 * backward and the optimizer step cut w, dw and the optimizer state the same way, so
 * each core keeps its rows from op to op and step to step.
 *
 * Inference (infer) has no such reason: large batches go to the packed product, each
 * thread with its own packed copy of w and a block of rows of the batch (measured in
 * a training step, the same cut cost 50 us more per step at B=128: w's rows then
 * travel between the cores every step).
 *
 * A single row stays on one core although reading w from L2 is then all its work
 * (3.6 us for the MLP's 784x128): cut by OUT across the two cores it took 2.4 us when
 * both were free, but 7-9 us whenever the host had the other vCPU busy, against 4 us
 * on one. */
static void
dense_forward_act (EsCpu *cpu, float *out, const float *inp, const float *w, const float *b,
                   int B, int IN, int OUT, EsOp act, float alpha, bool infer)
{
  DenseFwdJob job = { out, inp, w, b, B, IN, OUT, .act = act, .alpha = alpha };
  int nt;

  cpu_enter (cpu);
  nt = threads_for (cpu, (double) B * IN * OUT, PAR_MIN_MACS);
#ifdef ES_HAVE_AVX512_GEMM
  job.wp_stride = ES_CEIL_DIV (packed_floats (OUT, IN), CHUNK_ALIGN) * CHUNK_ALIGN;
  if (infer && use_avx512 && B >= DENSE_PACKED_MIN_ROWS && IN > 0
      && OUT >= DENSE_PACKED_MIN_OUT && job.wp_stride <= DENSE_PACKED_MAX_FLOATS
      && (job.wp = cpu_workspace (cpu, (size_t) (job.wp_stride * nt) * sizeof (float))) != NULL)
    {
      es_pool_run_n (cpu->pool, nt, dense_packed_part, &job);
      return;
    }
#endif
  if (nt <= 1)
    {
      dense_fwd_block (out, OUT, inp, w, b, B, IN, OUT, act, alpha);
      return;
    }
  job.split_rows = OUT < 2 * CHUNK_ALIGN * nt;
  es_pool_run_n (cpu->pool, nt, dense_fwd_part, &job);
}

/* out (B,OUT) = inp (B,IN) . w^T (OUT,IN) + b (OUT) */
static void
cpu_dense_forward (EsBackend *be, float *out, const float *inp, const float *w,
                   const float *b, int B, int IN, int OUT)
{
  dense_forward_act (cpu_of (be), out, inp, w, b, B, IN, OUT, ACT_NONE, 0.0f, false);
}

/* out (B,OUT) = act(inp . w^T + b), act as act_forward's or ES_OP_DENSE for none: the
 * inference forward (see dense_forward_act), with the activation applied while the
 * output is in cache (ReLU and LeakyReLU as the packed product stores it). */
static void
cpu_dense_act_forward (EsBackend *be, EsOp act, float *out, const float *inp,
                       const float *w, const float *b, float alpha, int B, int IN, int OUT)
{
  if (act != ES_OP_RELU && act != ES_OP_LEAKY_RELU && act != ES_OP_SIGMOID
      && act != ES_OP_TANH)
    act = ACT_NONE;
  dense_forward_act (cpu_of (be), out, inp, w, b, B, IN, OUT, act, alpha, true);
}

typedef struct {
  float       *dinp, *dw, *db;
  const float *dout, *inp, *w;
  int          B, IN, OUT;
} DenseBwdJob;

/* Task t: rows [lo, hi) of dw and db (a contiguous block of the parameters, the block
 * the forward's task t read from w and the optimizer's task t updates), and rows of
 * dinp by batch. */
static void
dense_bwd_part (void *data, int t, int nt)
{
  const DenseBwdJob *j = data;
  const int B = j->B, IN = j->IN, OUT = j->OUT;
  int64_t lo, hi;

  /* the forward's rows of w when it cuts OUT (16-row blocks), else single rows */
  es_pool_chunk (OUT, OUT >= 2 * CHUNK_ALIGN * nt ? CHUNK_ALIGN : 1, t, nt, &lo, &hi);
  if (lo < hi)
    {
      /* dw (hi-lo, IN) += dout[:, lo:hi]^T (hi-lo, B) . inp (B, IN) */
      gemm (true, false, (int) (hi - lo), IN, B, j->dout + lo, OUT, j->inp, IN, 1.0f,
            j->dw + lo * IN, IN);
      if (j->db != NULL)
        column_sums_add (j->db + lo, j->dout + lo, B, OUT, hi - lo);
    }
  if (j->dinp != NULL)
    {
      /* dinp (hi-lo, IN) = dout[lo:hi] (hi-lo, OUT) . w (OUT, IN) */
      es_pool_chunk (B, 1, t, nt, &lo, &hi);
      if (lo < hi)
        gemm (false, false, (int) (hi - lo), IN, OUT, j->dout + lo * OUT, OUT, j->w, IN,
              0.0f, j->dinp + lo * IN, IN);
    }
}

/* dw (OUT,IN) += dout^T . inp; db (OUT) += column sums of dout (NULL skips);
 * dinp (B,IN) = dout . w (NULL skips). One region: each task owns a block of rows of
 * dw and db and a block of rows of dinp. */
static void
cpu_dense_backward (EsBackend *be, float *dinp, float *dw, float *db, const float *dout,
                    const float *inp, const float *w, int B, int IN, int OUT)
{
  EsCpu *cpu = cpu_of (be);
  double macs = (double) B * IN * OUT * (dinp != NULL ? 2 : 1);
  DenseBwdJob job = { dinp, dw, db, dout, inp, w, B, IN, OUT };
  int nt;

  cpu_enter (cpu_of (be));
  nt = threads_for (cpu, macs, PAR_MIN_MACS);
  nt = ES_MIN (nt, ES_MAX (OUT, B));
  if (nt <= 1)
    dense_bwd_part (&job, 0, 1);
  else
    es_pool_run_n (cpu->pool, nt, dense_bwd_part, &job);
}

/* ---- conv2d -------------------------------------------------------------------- */


/* col (C*K*K, OH*OW) from one image (C,H,W); zeros in the padding. Rows
 * [row0, row1) only, so a single image can be cut across threads. Rows of a small
 * image are short (14 floats at 14x14): plain loops, no memcpy calls. */
ES_CLONES ES_NO_LIBC_CALLS static void
im2col_generic (float *restrict col, const float *restrict img, int C, int H, int W, int K,
        int S, int P, int OH, int OW, int row0, int row1)
{
  const int64_t OHW = (int64_t) OH * OW;

  for (int row = row0; row < row1; row++)
    {
      const int c = row / (K * K), kh = row / K % K, kw = row % K;
      const float *plane = img + (int64_t) c * H * W;
      float *dst = col + (int64_t) row * OHW;
      int lo, hi;

      valid_range (OW, W, S, P, kw, &lo, &hi);
      for (int oh = 0; oh < OH; oh++, dst += OW)
        {
          const int ih = oh * S - P + kh;

          if (ih < 0 || ih >= H)
            {
              for (int ow = 0; ow < OW; ow++)
                dst[ow] = 0.0f;
              continue;
            }
          const float *src = plane + (int64_t) ih * W - P + kw;
          for (int ow = 0; ow < lo; ow++)
            dst[ow] = 0.0f;
          if (S == 1)
            for (int ow = lo; ow < hi; ow++)
              dst[ow] = src[ow];
          else
            for (int ow = lo; ow < hi; ow++)
              dst[ow] = src[(int64_t) ow * S];
          for (int ow = hi; ow < OW; ow++)
            dst[ow] = 0.0f;
        }
    }
}

/* img (C,H,W) = the sum of col (C*K*K, OH*OW) back onto the pixels each entry came
 * from; img is overwritten (the padding entries are dropped). */
ES_CLONES ES_NO_LIBC_CALLS static void
col2im_generic (float *restrict img, const float *restrict col, int C, int H, int W, int K,
        int S, int P, int OH, int OW)
{
  const int64_t OHW = (int64_t) OH * OW;

  for (int64_t i = 0; i < (int64_t) C * H * W; i++)
    img[i] = 0.0f;
  for (int row = 0; row < C * K * K; row++)
    {
      const int c = row / (K * K), kh = row / K % K, kw = row % K;
      float *plane = img + (int64_t) c * H * W;
      const float *src = col + (int64_t) row * OHW;
      int lo, hi;

      valid_range (OW, W, S, P, kw, &lo, &hi);
      for (int oh = 0; oh < OH; oh++, src += OW)
        {
          const int ih = oh * S - P + kh;

          if (ih < 0 || ih >= H)
            continue;
          float *dst = plane + (int64_t) ih * W - P + kw;
          if (S == 1)
            for (int ow = lo; ow < hi; ow++)
              dst[ow] += src[ow];
          else
            for (int ow = lo; ow < hi; ow++)
              dst[(int64_t) ow * S] += src[ow];
        }
    }
}

/* im2col / col2im: the AVX-512 versions for stride 1, the portable loops otherwise. */
static void
im2col (float *col, const float *img, int C, int H, int W, int K, int S, int P, int OH,
        int OW, int row0, int row1)
{
#ifdef ES_HAVE_AVX512_GEMM
  if (use_avx512 && S == 1)
    {
      im2col_s1_avx512 (col, img, C, H, W, K, P, OH, OW, row0, row1);
      return;
    }
#endif
  im2col_generic (col, img, C, H, W, K, S, P, OH, OW, row0, row1);
}

static void
col2im (float *img, const float *col, int C, int H, int W, int K, int S, int P, int OH,
        int OW)
{
#ifdef ES_HAVE_AVX512_GEMM
  if (use_avx512 && S == 1)
    {
      col2im_s1_avx512 (img, col, C, H, W, K, P, OH, OW);
      return;
    }
#endif
  col2im_generic (img, col, C, H, W, K, S, P, OH, OW);
}

typedef struct {
  float       *out, *dinp, *dw, *db;
  const float *inp, *w, *b, *dout;
  int          B, C, H, W, OC, K, S, P, OH, OW;
  bool         direct;      /* 1x1, stride 1, no padding: the image is its own col */
  float       *ws;          /* workspace, ws_stride floats per thread */
  int64_t      ws_stride;
  int          img;         /* the image of a two-phase (single image) forward */
  int          n_parts;     /* backward: threads whose partials conv_bwd_reduce sums */
} ConvJob;

/* out_b (OC, OHW) = w (OC, CKK) . col (CKK, OHW) + b, columns [c0, c1) of OHW. */
static void
conv_fwd_gemm (const ConvJob *j, float *out_b, const float *col, int64_t c0, int64_t c1)
{
  const int CKK = j->C * j->K * j->K;
  const int64_t OHW = (int64_t) j->OH * j->OW;
  const int n = (int) (c1 - c0);
  float beta = 0.0f;

  if (n <= 0)
    return;
  if (j->b != NULL)
    {
      for (int oc = 0; oc < j->OC; oc++)
        {
          float *row = out_b + oc * OHW + c0;
          for (int i = 0; i < n; i++)
            row[i] = j->b[oc];
        }
      beta = 1.0f;
    }
  gemm (false, false, j->OC, n, CKK, j->w, CKK, col + c0, (int) OHW, beta, out_b + c0,
        (int) OHW);
}

/* Forward over this task's images, with its own col. */
static void
conv_fwd_part (void *data, int t, int nt)
{
  const ConvJob *j = data;
  const int CKK = j->C * j->K * j->K;
  const int64_t OHW = (int64_t) j->OH * j->OW, CHW = (int64_t) j->C * j->H * j->W;
  float *col = j->direct ? NULL : j->ws + t * j->ws_stride;
  int64_t b0, b1;

  es_pool_chunk (j->B, 1, t, nt, &b0, &b1);
  for (int64_t b = b0; b < b1; b++)
    {
      const float *img = j->inp + b * CHW;
      if (!j->direct)
        im2col (col, img, j->C, j->H, j->W, j->K, j->S, j->P, j->OH, j->OW, 0, CKK);
      conv_fwd_gemm (j, j->out + b * j->OC * OHW, j->direct ? img : col, 0, OHW);
    }
}

/* Two phases for one image across all tasks: rows of the shared col, */
static void
conv_fwd_im2col_part (void *data, int t, int nt)
{
  const ConvJob *j = data;
  const int CKK = j->C * j->K * j->K;
  int64_t r0, r1;

  es_pool_chunk (CKK, 1, t, nt, &r0, &r1);
  im2col (j->ws, j->inp + (int64_t) j->img * j->C * j->H * j->W, j->C, j->H, j->W,
          j->K, j->S, j->P, j->OH, j->OW, (int) r0, (int) r1);
}

/* then columns of the product. */
static void
conv_fwd_gemm_part (void *data, int t, int nt)
{
  const ConvJob *j = data;
  const int64_t OHW = (int64_t) j->OH * j->OW;
  const float *col = j->direct ? j->inp + (int64_t) j->img * j->C * j->H * j->W : j->ws;
  int64_t c0, c1;

  es_pool_chunk (OHW, CHUNK_ALIGN, t, nt, &c0, &c1);
  conv_fwd_gemm (j, j->out + (int64_t) j->img * j->OC * OHW, col, c0, c1);
}

/* out (B,OC,OH,OW) = conv(inp (B,C,H,W), w (OC,C,K,K)) + b (OC) by im2col and one
 * sgemm per image; images split across threads, or for fewer images than threads,
 * each image's col rows and then its output columns. Without workspace (budget), the
 * reference kernel. */
static void
cpu_conv2d_forward (EsBackend *be, float *out, const float *inp, const float *w,
                    const float *b, int B, int C, int H, int W, int OC, int K, int S,
                    int P)
{
  EsCpu *cpu = cpu_of (be);
  const int OH = ES_CONV_OUT (H, K, S, P), OW = ES_CONV_OUT (W, K, S, P);
  const int64_t CKK = (int64_t) C * K * K, OHW = (int64_t) OH * OW;
  ConvJob job = {
    .out = out, .inp = inp, .w = w, .b = b, .B = B, .C = C, .H = H, .W = W, .OC = OC,
    .K = K, .S = S, .P = P, .OH = OH, .OW = OW, .direct = K == 1 && S == 1 && P == 0,
  };
  int nt;

  cpu_enter (cpu_of (be));
  if (B <= 0 || OH <= 0 || OW <= 0)
    return;
  nt = threads_for (cpu, (double) B * OC * CKK * OHW, PAR_MIN_MACS);
  if (nt > 1 && B < nt)
    {
      /* Few images: every thread on each image in turn. */
      if (!job.direct && (job.ws = cpu_workspace (cpu, CKK * OHW * sizeof (float))) == NULL)
        goto reference;
      for (job.img = 0; job.img < B; job.img++)
        {
          if (!job.direct)
            es_pool_run_n (cpu->pool, nt, conv_fwd_im2col_part, &job);
          es_pool_run_n (cpu->pool, nt, conv_fwd_gemm_part, &job);
        }
      return;
    }

  job.ws_stride = ES_CEIL_DIV (CKK * OHW, CHUNK_ALIGN) * CHUNK_ALIGN;
  if (!job.direct
      && (job.ws = cpu_workspace (cpu, (size_t) (job.ws_stride * nt) * sizeof (float))) == NULL)
    goto reference;
  if (nt <= 1)
    conv_fwd_part (&job, 0, 1);
  else
    es_pool_run_n (cpu->pool, nt, conv_fwd_part, &job);
  return;

reference:
  es_ref_conv2d_forward_f32 (out, inp, w, b, B, C, H, W, OC, K, S, P);
}

/* Backward over this task's images: task 0 accumulates into dw and db, the others
 * into zeroed partials in their workspace (summed by conv_bwd_reduce). */
static void
conv_bwd_part (void *data, int t, int nt)
{
  const ConvJob *j = data;
  const int CKK = j->C * j->K * j->K, OC = j->OC;
  const int64_t OHW = (int64_t) j->OH * j->OW, CHW = (int64_t) j->C * j->H * j->W;
  float *col = j->ws != NULL ? j->ws + t * j->ws_stride : NULL;
  float *dw = t == 0 ? j->dw : col + (j->direct ? 0 : CKK * OHW);
  float *db = t == 0 ? j->db : dw + (int64_t) OC * CKK;
  int64_t b0, b1;

  if (t > 0)
    memset (dw, 0, (size_t) (OC * CKK + OC) * sizeof (float));
  es_pool_chunk (j->B, 1, t, nt, &b0, &b1);
  for (int64_t b = b0; b < b1; b++)
    {
      const float *img = j->inp + b * CHW;
      const float *g = j->dout + b * OC * OHW;
      const float *src = img;

      if (!j->direct)
        {
          im2col (col, img, j->C, j->H, j->W, j->K, j->S, j->P, j->OH, j->OW, 0, CKK);
          src = col;
        }
      /* dw (OC, CKK) += dout_b (OC, OHW) . col^T (OHW, CKK) */
      gemm (false, true, OC, CKK, (int) OHW, g, (int) OHW, src, (int) OHW, 1.0f, dw, CKK);
      if (db != NULL)
        for (int oc = 0; oc < OC; oc++)
          db[oc] += k_sum (g + oc * OHW, OHW);
      if (j->dinp != NULL)
        {
          /* dcol (CKK, OHW) = w^T (CKK, OC) . dout_b (OC, OHW), folded back by col2im */
          float *dimg = j->dinp + b * CHW;
          gemm (true, false, CKK, (int) OHW, OC, j->w, CKK, g, (int) OHW, 0.0f,
                j->direct ? dimg : col, (int) OHW);
          if (!j->direct)
            col2im (dimg, col, j->C, j->H, j->W, j->K, j->S, j->P, j->OH, j->OW);
        }
    }
}

/* dw, db += the partials of tasks 1..n-1, dw's elements split across tasks. */
static void
conv_bwd_reduce (void *data, int t, int nt)
{
  const ConvJob *j = data;
  const int CKK = j->C * j->K * j->K, OC = j->OC;
  const int64_t OHW = (int64_t) j->OH * j->OW;
  const int64_t off = j->direct ? 0 : CKK * OHW;
  int64_t lo, hi;

  es_pool_chunk ((int64_t) OC * CKK, CHUNK_ALIGN, t, nt, &lo, &hi);
  for (int p = 1; p < j->n_parts; p++)
    {
      const float *part = j->ws + p * j->ws_stride + off;
      if (lo < hi)
        k_add (j->dw + lo, part + lo, hi - lo);
      if (t == 0 && j->db != NULL)
        k_add (j->db, part + (int64_t) OC * CKK, OC);
    }
}

/* dw (OC,C,K,K) += sum over images of dout_b . col_b^T; db (OC) += sums of dout
 * (NULL skips); dinp (B,C,H,W) = col2im(w^T . dout_b) (NULL skips). Images split across
 * threads with private dw/db partials, summed in a second region. */
static void
cpu_conv2d_backward (EsBackend *be, float *dinp, float *dw, float *db, const float *dout,
                     const float *inp, const float *w, int B, int C, int H, int W, int OC,
                     int K, int S, int P)
{
  EsCpu *cpu = cpu_of (be);
  const int OH = ES_CONV_OUT (H, K, S, P), OW = ES_CONV_OUT (W, K, S, P);
  const int64_t CKK = (int64_t) C * K * K, OHW = (int64_t) OH * OW;
  ConvJob job = {
    .dinp = dinp, .dw = dw, .db = db, .inp = inp, .w = w, .dout = dout, .B = B, .C = C,
    .H = H, .W = W, .OC = OC, .K = K, .S = S, .P = P, .OH = OH, .OW = OW,
    .direct = K == 1 && S == 1 && P == 0,
  };
  int nt;

  cpu_enter (cpu_of (be));
  if (B <= 0 || OH <= 0 || OW <= 0)
    return;
  nt = threads_for (cpu, (double) B * OC * CKK * OHW * (dinp != NULL ? 2 : 1),
                    PAR_MIN_MACS);
  nt = ES_MIN (nt, B);
  job.ws_stride = ES_CEIL_DIV ((job.direct ? 0 : CKK * OHW) + OC * CKK + OC, CHUNK_ALIGN)
                  * CHUNK_ALIGN;
  /* One thread on 1x1 images needs no workspace: the image is its own col and
   * thread 0 accumulates straight into dw and db. */
  if (!(nt <= 1 && job.direct)
      && (job.ws = cpu_workspace (cpu, (size_t) (job.ws_stride * nt) * sizeof (float))) == NULL)
    {
      es_ref_conv2d_backward_f32 (dinp, dw, db, dout, inp, w, B, C, H, W, OC, K, S, P);
      return;
    }
  if (nt <= 1)
    {
      conv_bwd_part (&job, 0, 1);
      return;
    }
  es_pool_run_n (cpu->pool, nt, conv_bwd_part, &job);
  job.n_parts = nt;
  es_pool_run_n (cpu->pool, threads_for (cpu, (double) OC * CKK * nt, PAR_MIN_ELEMS),
                 conv_bwd_reduce, &job);
}

/* ---- pools, softmax: the reference on slices -------------------------------------- */

typedef struct {
  EsOp         op;
  bool         backward;
  float       *out;
  int32_t     *argmax;
  const float *inp;
  const int32_t *cargmax;
  int64_t      in_plane, out_plane;   /* floats per (b,c) plane, or per row */
  int          H, W, K, S, C;
} SliceArgs;

/* Planes [p0, p1) of B*C (pools) or rows of B (softmax), as a (1, p1 - p0) call. */
static void
slice_range (const void *p, int64_t p0, int64_t p1)
{
  const SliceArgs *a = p;
  const int n = (int) (p1 - p0);

  switch (a->op)
    {
    case ES_OP_MAXPOOL2D:
      if (!a->backward)
        es_ref_maxpool2d_forward_f32 (a->out + p0 * a->out_plane, a->argmax + p0 * a->out_plane,
                                      a->inp + p0 * a->in_plane, 1, n, a->H, a->W, a->K, a->S);
      else
        es_ref_maxpool2d_backward_f32 (a->out + p0 * a->in_plane, a->inp + p0 * a->out_plane,
                                       a->cargmax + p0 * a->out_plane, 1, n, a->H, a->W,
                                       a->K, a->S);
      break;
    case ES_OP_AVGPOOL2D:
      if (!a->backward)
        es_ref_avgpool2d_forward_f32 (a->out + p0 * a->out_plane, a->inp + p0 * a->in_plane,
                                      1, n, a->H, a->W, a->K, a->S);
      else
        es_ref_avgpool2d_backward_f32 (a->out + p0 * a->in_plane, a->inp + p0 * a->out_plane,
                                       1, n, a->H, a->W, a->K, a->S);
      break;
    case ES_OP_SOFTMAX:
#ifdef ES_HAVE_AVX512_GEMM
      if (use_avx512 && a->C <= 16)
        {
          softmax_rows_avx512 (a->out, a->inp, p0, p1, a->C);
          break;
        }
#endif
      es_ref_softmax_forward_f32 (a->out + p0 * a->C, a->inp + p0 * a->C, n, a->C);
      break;
    default:
      break;
    }
}

typedef struct {
  const SliceArgs *args;
  int64_t          n_planes;
} PlaneJob;

/* A pool task: its whole planes. */
static void
plane_job_run (void *data, int t, int nt)
{
  const PlaneJob *job = data;
  int64_t p0, p1;

  es_pool_chunk (job->n_planes, 1, t, nt, &p0, &p1);
  if (p0 < p1)
    slice_range (job->args, p0, p1);
}

/* slice_range over n_planes planes of plane_elems floats, in parallel when large. */
static void
parallel_slices (EsCpu *cpu, int64_t n_planes, int64_t plane_elems, const SliceArgs *args)
{
  int nt = threads_for (cpu, (double) n_planes * plane_elems, PAR_MIN_ELEMS);

  nt = (int) ES_MIN (nt, n_planes);
  if (nt <= 1)
    {
      if (n_planes > 0)
        slice_range (args, 0, n_planes);
      return;
    }
  es_pool_run_n (cpu->pool, nt, plane_job_run, &(PlaneJob) { args, n_planes });
}

/* out, argmax (B,C,OH,OW): the reference, planes split across threads when large. */
static void
cpu_maxpool2d_forward (EsBackend *be, float *out, int32_t *argmax, const float *inp,
                       int B, int C, int H, int W, int K, int S)
{
  const int64_t OHW = (int64_t) ES_CONV_OUT (H, K, S, 0) * ES_CONV_OUT (W, K, S, 0);

  cpu_enter (cpu_of (be));
  parallel_slices (cpu_of (be), (int64_t) B * C, (int64_t) H * W, &(SliceArgs) {
      .op = ES_OP_MAXPOOL2D, .out = out, .argmax = argmax, .inp = inp,
      .in_plane = (int64_t) H * W, .out_plane = OHW, .H = H, .W = W, .K = K, .S = S });
}

/* dinp (B,C,H,W) = dout routed to the argmax (overwritten; NULL does nothing). */
static void
cpu_maxpool2d_backward (EsBackend *be, float *dinp, const float *dout,
                        const int32_t *argmax, int B, int C, int H, int W, int K, int S)
{
  const int64_t OHW = (int64_t) ES_CONV_OUT (H, K, S, 0) * ES_CONV_OUT (W, K, S, 0);

  cpu_enter (cpu_of (be));
  if (dinp == NULL)
    return;
  parallel_slices (cpu_of (be), (int64_t) B * C, (int64_t) H * W, &(SliceArgs) {
      .op = ES_OP_MAXPOOL2D, .backward = true, .out = dinp, .inp = dout,
      .cargmax = argmax, .in_plane = (int64_t) H * W, .out_plane = OHW,
      .H = H, .W = W, .K = K, .S = S });
}

/* out (B,C,OH,OW) = window means: the reference on plane slices. */
static void
cpu_avgpool2d_forward (EsBackend *be, float *out, const float *inp,
                       int B, int C, int H, int W, int K, int S)
{
  const int64_t OHW = (int64_t) ES_CONV_OUT (H, K, S, 0) * ES_CONV_OUT (W, K, S, 0);

  cpu_enter (cpu_of (be));
  parallel_slices (cpu_of (be), (int64_t) B * C, (int64_t) H * W, &(SliceArgs) {
      .op = ES_OP_AVGPOOL2D, .out = out, .inp = inp, .in_plane = (int64_t) H * W,
      .out_plane = OHW, .H = H, .W = W, .K = K, .S = S });
}

/* dinp (B,C,H,W) gathers dout / (K*K) (overwritten; NULL does nothing). */
static void
cpu_avgpool2d_backward (EsBackend *be, float *dinp, const float *dout,
                        int B, int C, int H, int W, int K, int S)
{
  const int64_t OHW = (int64_t) ES_CONV_OUT (H, K, S, 0) * ES_CONV_OUT (W, K, S, 0);

  cpu_enter (cpu_of (be));
  if (dinp == NULL)
    return;
  parallel_slices (cpu_of (be), (int64_t) B * C, (int64_t) H * W, &(SliceArgs) {
      .op = ES_OP_AVGPOOL2D, .backward = true, .out = dinp, .inp = dout,
      .in_plane = (int64_t) H * W, .out_plane = OHW, .H = H, .W = W, .K = K, .S = S });
}

/* ---- activations ----------------------------------------------------------------- */

typedef struct {
  EsOp         act;
  float       *out;
  const float *a, *b;   /* forward: a = inp; backward: a = dout, b = inp or out */
  float        alpha;
  bool         backward;
} ActArgs;

static void
act_range (const void *p, int64_t i0, int64_t i1)
{
  const ActArgs *x = p;
  const int64_t n = i1 - i0;
  float *o = x->out + i0;
  const float *a = x->a + i0;
  const float *b = x->b != NULL ? x->b + i0 : NULL;

  switch (x->act)
    {
    case ES_OP_RELU:
      if (x->backward)
        k_relu_bwd (o, a, b, n);
      else
        k_relu_fwd (o, a, n);
      break;
    case ES_OP_LEAKY_RELU:
      if (x->backward)
        k_leaky_bwd (o, a, b, x->alpha, n);
      else
        k_leaky_fwd (o, a, x->alpha, n);
      break;
    case ES_OP_SIGMOID:
      if (x->backward)
        k_sigmoid_bwd (o, a, b, n);
      else
        k_sigmoid_fwd (o, a, n);
      break;
    case ES_OP_TANH:
      if (x->backward)
        k_tanh_bwd (o, a, b, n);
      else
        k_tanh_fwd (o, a, n);
      break;
    default:
      break;
    }
}

/* out (N) = act(inp); act is ES_OP_RELU, _LEAKY_RELU (slope alpha), _SIGMOID or _TANH.
 * out may be inp. Other ops do nothing. */
static void
cpu_act_forward (EsBackend *be, EsOp act, float *out, const float *inp, float alpha,
                 int64_t N)
{
  cpu_enter (cpu_of (be));
  parallel_range (cpu_of (be), N, act_range,
                  &(ActArgs) { act, out, inp, NULL, alpha, false });
}

/* dinp (N) = dout * act'(...), from inp for ReLU/LeakyReLU and from out for
 * Sigmoid/Tanh (overwritten; NULL does nothing; dinp may be dout). */
static void
cpu_act_backward (EsBackend *be, EsOp act, float *dinp, const float *dout,
                  const float *inp, const float *out, float alpha, int64_t N)
{
  const bool uses_out = act == ES_OP_SIGMOID || act == ES_OP_TANH;

  cpu_enter (cpu_of (be));
  if (dinp == NULL)
    return;
  parallel_range (cpu_of (be), N, act_range,
                  &(ActArgs) { act, dinp, dout, uses_out ? out : inp, alpha, true });
}

/* ---- softmax, dropout, batchnorm --------------------------------------------------- */

/* out (B,C) = row-wise softmax: the reference on row slices. */
static void
cpu_softmax_forward (EsBackend *be, float *out, const float *inp, int B, int C)
{
  cpu_enter (cpu_of (be));
  parallel_slices (cpu_of (be), B, C, &(SliceArgs) {
      .op = ES_OP_SOFTMAX, .out = out, .inp = inp, .C = C });
}

/* dinp (B,C) = y * (dout - <dout, y>) (the reference; NULL does nothing). */
static void
cpu_softmax_backward (EsBackend *be, float *dinp, const float *dout, const float *out,
                      int B, int C)
{
  cpu_enter (cpu_of (be));
  es_ref_softmax_backward_f32 (dinp, dout, out, B, C);
}

typedef struct {
  float         *out;
  uint8_t       *mask;
  const uint8_t *cmask;
  const float   *inp;
  float          rate;
  uint64_t       seed;
} DropoutArgs;

static void
dropout_fwd_range (const void *p, int64_t i0, int64_t i1)
{
  const DropoutArgs *a = p;
  const float keep_scale = a->rate < 1.0f ? 1.0f / (1.0f - a->rate) : 0.0f;

  for (int64_t i = i0; i < i1; i++)
    {
      a->mask[i] = es_rand_uniform (a->seed, (uint64_t) i) >= (double) a->rate ? 1 : 0;
      a->out[i] = a->mask[i] ? a->inp[i] * keep_scale : 0.0f;
    }
}

static void
dropout_bwd_range (const void *p, int64_t i0, int64_t i1)
{
  const DropoutArgs *a = p;
  const float keep_scale = a->rate < 1.0f ? 1.0f / (1.0f - a->rate) : 0.0f;

  for (int64_t i = i0; i < i1; i++)
    a->out[i] = a->cmask[i] ? a->inp[i] * keep_scale : 0.0f;
}

/* Inverted dropout, the reference's counter-based stream (element i draws
 * es_rand_uniform (seed, i)), so any split gives the same mask. */
static void
cpu_dropout_forward (EsBackend *be, float *out, uint8_t *mask, const float *inp,
                     float rate, uint64_t seed, int64_t N)
{
  cpu_enter (cpu_of (be));
  parallel_range (cpu_of (be), N, dropout_fwd_range,
                  &(DropoutArgs) { .out = out, .mask = mask, .inp = inp, .rate = rate,
                                   .seed = seed });
}

/* dinp = dout * mask / (1 - rate) (overwritten; NULL does nothing). */
static void
cpu_dropout_backward (EsBackend *be, float *dinp, const float *dout, const uint8_t *mask,
                      float rate, int64_t N)
{
  cpu_enter (cpu_of (be));
  if (dinp == NULL)
    return;
  parallel_range (cpu_of (be), N, dropout_bwd_range,
                  &(DropoutArgs) { .out = dinp, .cmask = mask, .inp = dout, .rate = rate });
}

/* BatchNorm, training mode: the reference (statistics per channel, saved for backward). */
static void
cpu_batchnorm_forward_train (EsBackend *be, float *out, float *mean, float *rstd,
                             float *running_mean, float *running_var, const float *inp,
                             const float *gamma, const float *beta, float momentum,
                             float eps, int B, int CH, int SP)
{
  cpu_enter (cpu_of (be));
  es_ref_batchnorm_forward_train_f32 (out, mean, rstd, running_mean, running_var, inp,
                                      gamma, beta, momentum, eps, B, CH, SP);
}

/* BatchNorm with the running statistics: the reference. */
static void
cpu_batchnorm_forward_infer (EsBackend *be, float *out, const float *inp,
                             const float *gamma, const float *beta,
                             const float *running_mean, const float *running_var,
                             float eps, int B, int CH, int SP)
{
  cpu_enter (cpu_of (be));
  es_ref_batchnorm_forward_infer_f32 (out, inp, gamma, beta, running_mean, running_var,
                                      eps, B, CH, SP);
}

/* BatchNorm backward (dgamma, dbeta accumulate; dinp overwritten): the reference. */
static void
cpu_batchnorm_backward (EsBackend *be, float *dinp, float *dgamma, float *dbeta,
                        const float *dout, const float *inp, const float *gamma,
                        const float *mean, const float *rstd, int B, int CH, int SP)
{
  cpu_enter (cpu_of (be));
  es_ref_batchnorm_backward_f32 (dinp, dgamma, dbeta, dout, inp, gamma, mean, rstd,
                                 B, CH, SP);
}

/* Synchronized BatchNorm's four halves (es-backend.h): the references, as the fused
 * ops above. */
static void
cpu_batchnorm_stats (EsBackend *be, float *part, const float *inp, int B, int CH, int SP)
{
  cpu_enter (cpu_of (be));
  es_ref_batchnorm_stats_f32 (part, inp, B, CH, SP);
}

static void
cpu_batchnorm_forward_apply (EsBackend *be, float *out, const float *inp, const float *gamma,
                             const float *beta, const float *mean, const float *rstd,
                             int B, int CH, int SP)
{
  cpu_enter (cpu_of (be));
  es_ref_batchnorm_forward_apply_f32 (out, inp, gamma, beta, mean, rstd, B, CH, SP);
}

static void
cpu_batchnorm_backward_stats (EsBackend *be, float *part, float *dgamma, float *dbeta,
                              const float *dout, const float *inp, const float *mean,
                              const float *rstd, int B, int CH, int SP)
{
  cpu_enter (cpu_of (be));
  es_ref_batchnorm_backward_stats_f32 (part, dgamma, dbeta, dout, inp, mean, rstd, B, CH, SP);
}

static void
cpu_batchnorm_backward_apply (EsBackend *be, float *dinp, const float *dout, const float *inp,
                              const float *gamma, const float *mean, const float *rstd,
                              const float *coef, int B, int CH, int SP)
{
  cpu_enter (cpu_of (be));
  es_ref_batchnorm_backward_apply_f32 (dinp, dout, inp, gamma, mean, rstd, coef, B, CH, SP);
}

/* ---- losses: the reference kernels --------------------------------------------------- */

/* probs (B,C), losses (B, may be NULL); returns the mean cross-entropy. */
static float
cpu_softmax_xent_forward (EsBackend *be, float *probs, float *losses, const float *logits,
                          const int32_t *labels, int B, int C)
{
  cpu_enter (cpu_of (be));
  return es_ref_softmax_xent_forward_f32 (probs, losses, logits, labels, B, C);
}

/* dlogits (B,C) = (probs - onehot) * scale. */
static void
cpu_softmax_xent_backward (EsBackend *be, float *dlogits, const float *probs,
                           const int32_t *labels, float scale, int B, int C)
{
  cpu_enter (cpu_of (be));
  es_ref_softmax_xent_backward_f32 (dlogits, probs, labels, scale, B, C);
}

/* probs, losses (N) of binary cross-entropy on logits; returns the mean. */
static float
cpu_bce_forward (EsBackend *be, float *probs, float *losses, const float *logits,
                 const float *targets, int64_t N)
{
  cpu_enter (cpu_of (be));
  return es_ref_bce_forward_f32 (probs, losses, logits, targets, N);
}

/* dlogits (N) = (probs - targets) * scale. */
static void
cpu_bce_backward (EsBackend *be, float *dlogits, const float *probs, const float *targets,
                  float scale, int64_t N)
{
  cpu_enter (cpu_of (be));
  es_ref_bce_backward_f32 (dlogits, probs, targets, scale, N);
}

/* losses (B) = row means of squared errors; returns their mean. */
static float
cpu_mse_forward (EsBackend *be, float *losses, const float *pred, const float *target,
                 int B, int D)
{
  cpu_enter (cpu_of (be));
  return es_ref_mse_forward_f32 (losses, pred, target, B, D);
}

/* dpred (B,D) = 2 (pred - target) / D * scale. */
static void
cpu_mse_backward (EsBackend *be, float *dpred, const float *pred, const float *target,
                  float scale, int B, int D)
{
  cpu_enter (cpu_of (be));
  es_ref_mse_backward_f32 (dpred, pred, target, scale, B, D);
}

/* Rows of scores (B,C) whose first maximum is at labels[b]; pred (B) gets the argmax
 * when not NULL. */
static int
cpu_argmax_correct (EsBackend *be, int32_t *pred, const float *scores,
                    const int32_t *labels, int B, int C)
{
  int correct = 0;

  for (int b = 0; b < B; b++)
    {
      const float *row = scores + (int64_t) b * C;
      int best = 0;

      for (int c = 1; c < C; c++)
        if (row[c] > row[best])
          best = c;
      if (pred != NULL)
        pred[b] = best;
      if (labels != NULL && best == labels[b])
        correct++;
    }
  return correct;
}

/* ---- optimizer ------------------------------------------------------------------------ */

typedef struct {
  const float *x;
  int64_t      n;
  double      *partial;
} SumJob;

/* A pool task: the sum of squares of its part, into partial[t]. */
static void
sum_job_run (void *data, int t, int nt)
{
  const SumJob *j = data;
  int64_t i0, i1;

  es_pool_chunk (j->n, CHUNK_ALIGN, t, nt, &i0, &i1);
  j->partial[t] = i0 < i1 ? k_sum_squares (j->x + i0, i1 - i0) : 0.0;
}

/* Sum of x^2 (N) in double: per-thread partials added in thread order, so the result
 * depends on the thread count only in the last bits. */
static double
cpu_sum_squares (EsBackend *be, const float *x, int64_t N)
{
  EsCpu *cpu = cpu_of (be);
  int nt;
  double s = 0.0;

  cpu_enter (cpu_of (be));
  nt = threads_for (cpu, (double) N, PAR_MIN_ELEMS);
  if (nt <= 1)
    return N > 0 ? k_sum_squares (x, N) : 0.0;
  es_pool_run_n (cpu->pool, nt, sum_job_run, &(SumJob) { x, N, cpu->partial });
  for (int t = 0; t < nt; t++)
    s += cpu->partial[t];
  return s;
}

/* The arguments of the optimizer loops, for their range adapters. */
typedef struct {
  float       *x;          /* scale: x; regularize: grad; sgd, adam: param */
  float       *m, *v;      /* sgd: m = velocity (NULL without momentum); adam: m, v */
  const float *in;         /* regularize: param; sgd, adam: grad */
  float        s, l1, l2;  /* scale: s; regularize: l1, l2 */
  float        lr, momentum, beta1, beta2, eps, wd, bc1, bc2;
  bool         nesterov;
} OptArgs;

static void
scale_range (const void *p, int64_t i0, int64_t i1)
{
  const OptArgs *o = p;

  k_scale (o->x + i0, o->s, i1 - i0);
}

/* x (N) *= s */
static void
cpu_scale (EsBackend *be, float *x, float s, int64_t N)
{
  cpu_enter (cpu_of (be));
  parallel_range (cpu_of (be), N, scale_range, &(OptArgs) { .x = x, .s = s });
}

static void
regularize_range (const void *p, int64_t i0, int64_t i1)
{
  const OptArgs *o = p;

  k_regularize (o->x + i0, o->in + i0, o->l1, o->l2, i1 - i0);
}

/* grad (N) += l1 * sign(param) + l2 * param */
static void
cpu_regularize (EsBackend *be, float *grad, const float *param, float l1, float l2,
                int64_t N)
{
  cpu_enter (cpu_of (be));
  parallel_range (cpu_of (be), N, regularize_range,
                  &(OptArgs) { .x = grad, .in = param, .l1 = l1, .l2 = l2 });
}

static void
sgd_range (const void *p, int64_t i0, int64_t i1)
{
  const OptArgs *o = p;

  if (o->m == NULL)
    k_sgd_plain (o->x + i0, o->in + i0, o->lr, i1 - i0);
  else if (o->nesterov)
    k_sgd_nesterov (o->x + i0, o->m + i0, o->in + i0, o->lr, o->momentum, i1 - i0);
  else
    k_sgd_momentum (o->x + i0, o->m + i0, o->in + i0, o->lr, o->momentum, i1 - i0);
}

/* v = mu v + g; p -= lr (nesterov ? g + mu v : v); without velocity p -= lr g. */
static void
cpu_sgd_step (EsBackend *be, float *param, float *velocity, const float *grad, float lr,
              float momentum, bool nesterov, int64_t N)
{
  cpu_enter (cpu_of (be));
  parallel_range (cpu_of (be), N, sgd_range,
                  &(OptArgs) { .x = param, .m = velocity, .in = grad, .lr = lr,
                               .momentum = momentum, .nesterov = nesterov });
}

static void
adam_range (const void *p, int64_t i0, int64_t i1)
{
  const OptArgs *o = p;

  k_adam (o->x + i0, o->m + i0, o->v + i0, o->in + i0, o->lr, o->beta1, o->beta2, o->eps,
          o->wd, o->bc1, o->bc2, i1 - i0);
}

/* Adam / AdamW in one fused pass over param, m, v, grad (N), in the same contiguous
 * parts as zero and the dense layers' rows, so each core updates what it computed. */
static void
cpu_adam_step (EsBackend *be, float *param, float *m, float *v, const float *grad,
               float lr, float beta1, float beta2, float eps, float weight_decay,
               float bc1, float bc2, int64_t N)
{
  cpu_enter (cpu_of (be));
  parallel_range (cpu_of (be), N, adam_range,
                  &(OptArgs) { .x = param, .m = m, .v = v, .in = grad, .lr = lr,
                               .beta1 = beta1, .beta2 = beta2, .eps = eps,
                               .wd = weight_decay, .bc1 = bc1, .bc2 = bc2 });
}

/* ---- pruning masks, fake quantization, distillation ------------------------------------ */

/* x = mask ? x : 0 (a select: a pruned inf or NaN becomes 0 too; x read first, or
 * the conditional load keeps the loop scalar) */
ES_CLONES static void
k_mask_apply (float *restrict x, const uint8_t *restrict mask, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    {
      const float v = x[i];
      x[i] = mask[i] ? v : 0.0f;
    }
}

/* 16 floats in GCC's vector extension, for the min/max reductions: written as loops,
 * IEEE comparisons against NaN keep GCC from turning them into vector min/max, and
 * it keeps them scalar. SEL16 (m, a, b) = m ? a : b per lane, m a comparison. */
typedef float EsV16f __attribute__ ((vector_size (64)));
typedef int32_t EsV16i __attribute__ ((vector_size (64)));
#define SEL16(m, a, b) ((EsV16f) (((EsV16i) (a) & (m)) | ((EsV16i) (b) & ~(m))))

typedef struct {
  float         *x;
  const uint8_t *mask;
} MaskArgs;

static void
mask_range (const void *p, int64_t i0, int64_t i1)
{
  const MaskArgs *a = p;

  k_mask_apply (a->x + i0, a->mask + i0, i1 - i0);
}

/* x (N) = mask ? x : 0, in the same contiguous parts as the optimizer's loops. */
static void
cpu_mask_apply (EsBackend *be, float *x, const uint8_t *mask, int64_t N)
{
  cpu_enter (cpu_of (be));
  parallel_range (cpu_of (be), N, mask_range, &(MaskArgs) { x, mask });
}

/* The smallest and largest of x (n), NaN skipped (a comparison with NaN is false), in
 * 16 lanes. */
ES_CLONES static void
k_min_max (float *lo, float *hi, const float *x, int64_t n)
{
  EsV16f l, h;
  float rl = INFINITY, rh = -INFINITY;
  int64_t i = 0;

  for (int j = 0; j < 16; j++)
    {
      l[j] = INFINITY;
      h[j] = -INFINITY;
    }
  for (; i + 16 <= n; i += 16)
    {
      EsV16f v;

      memcpy (&v, x + i, sizeof v);
      l = SEL16 (v < l, v, l);
      h = SEL16 (v > h, v, h);
    }
  for (; i < n; i++)
    {
      rl = x[i] < rl ? x[i] : rl;
      rh = x[i] > rh ? x[i] : rh;
    }
  for (int j = 0; j < 16; j++)
    {
      rl = l[j] < rl ? l[j] : rl;
      rh = h[j] > rh ? h[j] : rh;
    }
  *lo = rl;
  *hi = rh;
}

typedef struct {
  const float *x;
  int64_t      n;
  double      *lo, *hi;   /* (nt) per-thread results */
} MinMaxJob;

static void
min_max_job_run (void *data, int t, int nt)
{
  const MinMaxJob *j = data;
  int64_t i0, i1;
  float lo = INFINITY, hi = -INFINITY;

  es_pool_chunk (j->n, CHUNK_ALIGN, t, nt, &i0, &i1);
  if (i0 < i1)
    k_min_max (&lo, &hi, j->x + i0, i1 - i0);
  j->lo[t] = lo;
  j->hi[t] = hi;
}

/* lo, hi (host) = min and max of x (N), NaN skipped; exact, so any split agrees. */
static void
cpu_min_max (EsBackend *be, float *lo, float *hi, const float *x, int64_t N)
{
  EsCpu *cpu = cpu_of (be);
  int nt;
  float l = INFINITY, h = -INFINITY;

  cpu_enter (cpu_of (be));
  nt = threads_for (cpu, (double) N, PAR_MIN_ELEMS);
  if (nt <= 1)
    {
      if (N > 0)
        k_min_max (&l, &h, x, N);
    }
  else
    {
      es_pool_run_n (cpu->pool, nt, min_max_job_run,
                     &(MinMaxJob) { x, N, cpu->partial, cpu->partial + cpu->n_threads });
      for (int t = 0; t < nt; t++)
        {
          const float tl = (float) cpu->partial[t], th = (float) cpu->partial[cpu->n_threads + t];

          l = tl < l ? tl : l;
          h = th > h ? th : h;
        }
    }
  *lo = l;
  *hi = h;
}

/* rint (v) as lrintf gives it on x86-64, for the clamps of es-quant.h that follow: a
 * value out of long's range (and NaN, inf) is LONG_MIN there, so it becomes the lowest
 * code; others saturate at +-2^22 (beyond every code) and round to nearest even by
 * the 1.5 * 2^23 trick, which stays a vector operation where lrintf is a libm call. */
static inline float
rint_like_lrintf (float v)
{
  v = fabsf (v) < 0x1p63f ? v : -0x1p22f;
  v = v > 0x1p22f ? 0x1p22f : v;
  v = v < -0x1p22f ? -0x1p22f : v;
  return (v + 0x1.8p23f) - 0x1.8p23f;
}

/* out = es_quant_weight (w, inv) * s over n, bit for bit (the reference is the test) */
ES_CLONES static void
k_fake_quant_row (float *out, const float *w, float inv, float s, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    {
      int32_t q = (int32_t) rint_like_lrintf (w[i] * inv);

      q = q < -127 ? -127 : q > 127 ? 127 : q;
      out[i] = (float) q * s;
    }
}

/* max |w| over n (0 for none), NaN skipped, 16 lanes */
ES_CLONES static float
k_abs_max (const float *w, int64_t n)
{
  EsV16f lane = { 0 };
  float m = 0.0f;
  int64_t i = 0;

  for (; i + 16 <= n; i += 16)
    {
      EsV16f v, a;

      memcpy (&v, w + i, sizeof v);
      a = (EsV16f) ((EsV16i) v & 0x7fffffff);
      lane = SEL16 (a > lane, a, lane);
    }
  for (; i < n; i++)
    m = fabsf (w[i]) > m ? fabsf (w[i]) : m;
  for (int j = 0; j < 16; j++)
    m = lane[j] > m ? lane[j] : m;
  return m;
}

typedef struct {
  float       *out;
  const float *w;
  int64_t      cols;
} FqWeightArgs;

static void
fq_weight_rows (const void *p, int64_t r0, int64_t r1)
{
  const FqWeightArgs *a = p;

  for (int64_t r = r0; r < r1; r++)
    {
      const float *wr = a->w + r * a->cols;
      const float s = es_quant_weight_scale (k_abs_max (wr, a->cols));

      k_fake_quant_row (a->out + r * a->cols, wr, 1.0f / s, s, a->cols);
    }
}

/* out (rows, cols) = each row of w through int8 and back, rows cut across threads. */
static void
cpu_fake_quant_weights (EsBackend *be, float *out, const float *w, int rows, int cols)
{
  cpu_enter (cpu_of (be));
  parallel_range_ex (cpu_of (be), rows, 1, ES_MAX (1, PAR_MIN_ELEMS / ES_MAX (cols, 1)),
                     fq_weight_rows, &(FqWeightArgs) { out, w, cols });
}

/* out = (es_quant_act (x, inv, z, qmax) - z) * s over n, bit for bit */
ES_CLONES static void
k_fake_quant_act (float *out, const float *inp, float inv, float s, int32_t z, int32_t qmax,
                  int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    {
      int32_t q = (int32_t) rint_like_lrintf (inp[i] * inv) + z;

      q = q < 0 ? 0 : q > qmax ? qmax : q;
      out[i] = (float) (q - z) * s;
    }
}

/* dinp = dout where l <= inp <= h, else 0 */
ES_CLONES static void
k_ste (float *dinp, const float *dout, const float *inp, float l, float h, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    dinp[i] = inp[i] >= l && inp[i] <= h ? dout[i] : 0.0f;
}

typedef struct {
  float       *out;
  const float *a, *b;   /* forward: a = inp; backward: a = dout, b = inp */
  float        inv, s, l, h;
  int32_t      z, qmax;
} FqActArgs;

static void
fq_act_range (const void *p, int64_t i0, int64_t i1)
{
  const FqActArgs *x = p;

  k_fake_quant_act (x->out + i0, x->a + i0, x->inv, x->s, x->z, x->qmax, i1 - i0);
}

static void
ste_range (const void *p, int64_t i0, int64_t i1)
{
  const FqActArgs *x = p;

  k_ste (x->out + i0, x->a + i0, x->b + i0, x->l, x->h, i1 - i0);
}

/* out (N) = inp through uint8 over [lo, hi] and back (es-quant.h's arithmetic). */
static void
cpu_fake_quant_act (EsBackend *be, float *out, const float *inp, float lo, float hi, int qmax,
                    int64_t N)
{
  float s;
  int32_t z;

  cpu_enter (cpu_of (be));
  es_quant_act_params (lo, hi, qmax, &s, &z);
  parallel_range (cpu_of (be), N, fq_act_range,
                  &(FqActArgs) { .out = out, .a = inp, .inv = 1.0f / s, .s = s, .z = z,
                                 .qmax = qmax });
}

/* dinp (N) = dout inside [min(lo,0), max(hi,0)], 0 outside (dinp may be dout). */
static void
cpu_fake_quant_act_backward (EsBackend *be, float *dinp, const float *dout, const float *inp,
                             float lo, float hi, int64_t N)
{
  cpu_enter (cpu_of (be));
  if (dinp == NULL)
    return;
  parallel_range (cpu_of (be), N, ste_range,
                  &(FqActArgs) { .out = dinp, .a = dout, .b = inp, .l = fminf (lo, 0.0f),
                                 .h = fmaxf (hi, 0.0f) });
}

/* The distillation loss: the reference (B*C values, small next to the layers). */
static float
cpu_distill_forward (EsBackend *be, float *probs, float *soft_s, float *soft_t, float *losses,
                     const float *logits, const float *teacher, const int32_t *labels,
                     float temp, float alpha, int B, int C)
{
  cpu_enter (cpu_of (be));
  return es_ref_distill_forward_f32 (probs, soft_s, soft_t, losses, logits, teacher, labels,
                                     temp, alpha, B, C);
}

static void
cpu_distill_backward (EsBackend *be, float *dlogits, const float *probs, const float *soft_s,
                      const float *soft_t, const int32_t *labels, float temp, float alpha,
                      float scale, int B, int C)
{
  cpu_enter (cpu_of (be));
  es_ref_distill_backward_f32 (dlogits, probs, soft_s, soft_t, labels, temp, alpha, scale,
                               B, C);
}

/* ---- the backend ------------------------------------------------------------------------ */

static const EsBackendIface cpu_iface = {
  .name = "cpu",
  .host_memory = true,

  .alloc = cpu_alloc,
  .free = cpu_free,
  .upload = cpu_upload,
  .download = cpu_download,
  .copy = cpu_copy,
  .zero = cpu_zero,
  .synchronize = NULL,  /* every op has finished when it returns */
  .supports_op = cpu_supports_op,
  .destroy = cpu_destroy,

  .load_u8 = cpu_load_u8,

  .dense_forward = cpu_dense_forward,
  .dense_backward = cpu_dense_backward,
  .dense_act_forward = cpu_dense_act_forward,
  .conv2d_forward = cpu_conv2d_forward,
  .conv2d_backward = cpu_conv2d_backward,
  .maxpool2d_forward = cpu_maxpool2d_forward,
  .maxpool2d_backward = cpu_maxpool2d_backward,
  .avgpool2d_forward = cpu_avgpool2d_forward,
  .avgpool2d_backward = cpu_avgpool2d_backward,
  .act_forward = cpu_act_forward,
  .act_backward = cpu_act_backward,
  .softmax_forward = cpu_softmax_forward,
  .softmax_backward = cpu_softmax_backward,
  .dropout_forward = cpu_dropout_forward,
  .dropout_backward = cpu_dropout_backward,
  .batchnorm_forward_train = cpu_batchnorm_forward_train,
  .batchnorm_forward_infer = cpu_batchnorm_forward_infer,
  .batchnorm_backward = cpu_batchnorm_backward,
  .batchnorm_stats = cpu_batchnorm_stats,
  .batchnorm_forward_apply = cpu_batchnorm_forward_apply,
  .batchnorm_backward_stats = cpu_batchnorm_backward_stats,
  .batchnorm_backward_apply = cpu_batchnorm_backward_apply,

  .softmax_xent_forward = cpu_softmax_xent_forward,
  .softmax_xent_backward = cpu_softmax_xent_backward,
  .bce_forward = cpu_bce_forward,
  .bce_backward = cpu_bce_backward,
  .mse_forward = cpu_mse_forward,
  .mse_backward = cpu_mse_backward,
  .argmax_correct = cpu_argmax_correct,

  .sum_squares = cpu_sum_squares,
  .scale = cpu_scale,
  .regularize = cpu_regularize,
  .sgd_step = cpu_sgd_step,
  .adam_step = cpu_adam_step,

  .mask_apply = cpu_mask_apply,
  .min_max = cpu_min_max,
  .fake_quant_weights = cpu_fake_quant_weights,
  .fake_quant_act = cpu_fake_quant_act,
  .fake_quant_act_backward = cpu_fake_quant_act_backward,
  .distill_forward = cpu_distill_forward,
  .distill_backward = cpu_distill_backward,
};

/* See es-backend.h. Pins BLAS to one thread, picks the product kernels, sets FTZ/DAZ on
 * the calling thread and starts the pool. */
static pthread_once_t cpu_global_once = PTHREAD_ONCE_INIT;

/* After ES_HAVE_AVX512_GEMM is known (above). */
static void
cpu_global_init (void)
{
  /* Our pool is the only parallelism: BLAS runs on whichever thread calls it. */
  if (openblas_set_num_threads != NULL)
    openblas_set_num_threads (1);
#ifdef ES_HAVE_AVX512_GEMM
  {
    const char *env = getenv ("ESPALIER_GEMM");

    use_avx512 = __builtin_cpu_supports ("avx512f")
                 && !(env != NULL && strcmp (env, "blas") == 0);
  }
#endif
}

const char *
es_cpu_backend_gemm_path (void)
{
  pthread_once (&cpu_global_once, cpu_global_init);
#ifdef ES_HAVE_AVX512_GEMM
  if (use_avx512)
    return "avx512";
#endif
  return "cblas";
}

EsBackend *
es_cpu_backend_new (int n_threads, EsBudget *budget, EsError *err)
{
  EsCpu *cpu;

  if (n_threads < 0)
    {
      es_error_set (err, ES_ERR_INVALID, "The number of threads cannot be negative (%d)",
                    n_threads);
      return NULL;
    }
  if (n_threads == 0)
    n_threads = es_pool_online_cores ();

  /* Process-wide choices, made once however many backends come and go. */
  pthread_once (&cpu_global_once, cpu_global_init);

  cpu = calloc (1, sizeof *cpu);
  if (cpu != NULL)
    cpu->partial = calloc (2 * (size_t) n_threads, sizeof *cpu->partial);
  if (cpu == NULL || cpu->partial == NULL)
    {
      free (cpu);
      es_error_set (err, ES_ERR_NOMEM, "Out of memory creating the CPU backend");
      return NULL;
    }
  cpu->pool = es_pool_new (n_threads, err);
  if (cpu->pool == NULL)
    {
      free (cpu->partial);
      free (cpu);
      return NULL;
    }
  /* FTZ/DAZ on here now, as on the pool's threads */
  es_pool_apply_ftz (cpu->pool);
  cpu->n_threads = es_pool_n_threads (cpu->pool);
  cpu->be.iface = &cpu_iface;
  cpu->be.budget = budget;
  cpu->be.n_threads = cpu->n_threads;
  cpu->be.impl = cpu;
  return &cpu->be;
}

EsPool *
es_cpu_backend_pool (EsBackend *be)
{
  if (be == NULL || strcmp (be->iface->name, "cpu") != 0)
    return NULL;
  return cpu_of (be)->pool;
}

/* ---- FTZ/DAZ and threads (the profiler's detectors) ------------------------------ */

static bool
is_cpu_backend (const EsBackend *be)
{
  return be != NULL && strcmp (be->iface->name, "cpu") == 0;
}

bool
es_cpu_backend_set_ftz (EsBackend *be, bool on)
{
  if (!is_cpu_backend (be))
    return false;
  es_pool_set_ftz (cpu_of (be)->pool, on);
  return true;
}

bool
es_cpu_backend_get_ftz (EsBackend *be)
{
  return is_cpu_backend (be) && es_pool_get_ftz (cpu_of (be)->pool);
}

/* The Threads: line of /proc/self/status; 0 when unknown. */
static int
process_thread_count (void)
{
  char line[256];
  int n = 0;
  FILE *f = fopen ("/proc/self/status", "r");

  if (f == NULL)
    return 0;
  while (fgets (line, sizeof line, f) != NULL)
    if (strncmp (line, "Threads:", 8) == 0)
      {
        n = atoi (line + 8);
        break;
      }
  fclose (f);
  return n > 0 ? n : 0;
}

void
es_cpu_backend_thread_info (EsBackend *be, EsThreadInfo *info)
{
  cpu_set_t set;

  memset (info, 0, sizeof *info);
  info->pool_threads = is_cpu_backend (be) ? cpu_of (be)->n_threads : 0;
  info->blas_threads = openblas_get_num_threads != NULL ? openblas_get_num_threads () : 1;
  if (omp_get_max_threads != NULL)
    info->omp_threads = omp_get_max_threads ();
  else
    {
      const char *env = getenv ("OMP_NUM_THREADS");

      /* "4" or a list for nested levels ("4,2"): the first level counts */
      info->omp_threads = env != NULL ? ES_MAX (atoi (env), 0) : 0;
    }
  CPU_ZERO (&set);
  info->cores = sched_getaffinity (0, sizeof set, &set) == 0 ? CPU_COUNT (&set) : 0;
  if (info->cores < 1)
    info->cores = es_pool_online_cores ();
  info->process_threads = process_thread_count ();
}
