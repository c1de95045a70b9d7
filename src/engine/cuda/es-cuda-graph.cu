/* es-cuda-graph.cu: what lets the CUDA backend train without a host round trip per
 * step (the optional block of es-backend.h that starts at gather_rows): rows of a
 * dataset resident in device memory gathered by index, the loss and the correct rows
 * added up in device memory, optimizer steps that read their scheduled values from a
 * device table, fp16 loss scaling and gradient clipping decided on the device, CUDA
 * Graph capture and replay of the queued work, and uploads one batch ahead through
 * pinned staging memory on a copy stream with events.
 *
 * What it is not: a scheduler. The trainer (es-train.c) decides what to capture and
 * when to read the statistics back; here are the ops it needs, each kernel followed by
 * its launcher as in es-cuda-ops.cu, whose arithmetic the kernels repeat bit for bit
 * (the same formulas, compiled with the same --fmad=false).
 *
 * Dimension key: B = rows of a batch, D = values per row, N = elements. */
#include "es-cuda-private.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NT ES_CUDA_THREADS




/* ---- resident data ------------------------------------------------------------------ */

/* out (B, D) = src row rows[b] (row b without rows) * scale + shift, as k_load_u8 */
__global__ static void
k_gather_u8 (float *out, const uint8_t *src, const int32_t *rows, float scale, float shift,
             int B, int64_t D)
{
  FOR_EACH (i, (int64_t) B * D)
    {
      const int64_t b = i / D, j = i - b * D;
      const int64_t r = rows != NULL ? (int64_t) rows[b] : b;

      out[i] = (float) src[r * D + j] * scale + shift;
    }
}

__global__ static void
k_gather_f32 (float *out, const float *src, const int32_t *rows, int B, int64_t D)
{
  FOR_EACH (i, (int64_t) B * D)
    {
      const int64_t b = i / D, j = i - b * D;
      const int64_t r = rows != NULL ? (int64_t) rows[b] : b;

      out[i] = src[r * D + j];
    }
}

__global__ static void
k_gather_i32 (int32_t *out, const int32_t *src, const int32_t *rows, int B)
{
  FOR_EACH (b, B)
    out[b] = src[rows != NULL ? rows[b] : b];
}

void
es_cuda_gather_rows (EsBackend *be, float *out, const void *src, bool src_u8, float scale,
                     float shift, const int32_t *rows, int B, int64_t D)
{
  EsCuda *cu = es_cuda_of (be);
  const int64_t n = (int64_t) B * D;

  if (!es_cuda_enter (cu) || n <= 0)
    return;
  if (src_u8)
    LAUNCH (cu, k_gather_u8, grid_for (n), NT, out, (const uint8_t *) src, rows, scale, shift,
            B, D);
  else
    LAUNCH (cu, k_gather_f32, grid_for (n), NT, out, (const float *) src, rows, B, D);
}

void
es_cuda_gather_i32 (EsBackend *be, int32_t *out, const int32_t *src, const int32_t *rows,
                    int B)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || B <= 0)
    return;
  LAUNCH (cu, k_gather_i32, grid_for (B), NT, out, src, rows, B);
}

/* ---- statistics kept on the device ---------------------------------------------------- */

/* One thread: the G partial sums of losses and correct rows that k_xent_fwd left
 * (in block order, as k_finish_sum adds them) into stats, or the halt. */
__global__ static void
k_stats_add (double *stats, const double *partial, int G, int B)
{
  double loss = 0.0, correct = 0.0;

  if (threadIdx.x != 0 || blockIdx.x != 0 || stats[ES_STATS_HALTED] != 0.0)
    return;
  for (int i = 0; i < G; i++)
    {
      loss += partial[i];
      correct += partial[ES_CUDA_PARTIALS + i];
    }
  if (isfinite (loss))
    {
      stats[ES_STATS_LOSS] += loss;
      stats[ES_STATS_CORRECT] += correct;
      stats[ES_STATS_ROWS] += (double) B;
    }
  else
    stats[ES_STATS_HALTED] = 1.0;
}

void
es_cuda_softmax_xent_forward_acc (EsBackend *be, float *probs, float *losses,
                                  const float *logits, const int32_t *labels, int B, int C,
                                  double *stats)
{
  EsCuda *cu = es_cuda_of (be);
  unsigned G;

  if (!es_cuda_enter (cu) || B <= 0 || C <= 0)
    return;
  G = es_cuda_xent_partials (cu, probs, losses, logits, labels, B, C);
  if (G > 0)
    LAUNCH (cu, k_stats_add, 1, 32, stats, (const double *) cu->partial, (int) G, B);
}

/* ---- optimizer steps with device-side values ------------------------------------------ */

/* k_sgd of es-cuda-ops.cu with lr = h[0] */
__global__ static void
k_sgd_dev (float *param, float *vel, const float *grad, float mu, bool nesterov,
           const float *hyper, const int32_t *slot, const double *stats, int64_t n)
{
  const float lr = hyper[4 * (int64_t) *slot];

  if (stats[ES_STATS_HALTED] != 0.0 || stats[ES_STATS_SKIP] != 0.0)
    return;
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

/* k_adam of es-cuda-ops.cu with step, inv_sqrt_bc2 and decay = h[1], h[2], h[3] */
__global__ static void
k_adam_dev (float *param, float *m, float *v, const float *grad, float beta1, float beta2,
            float one_m_b1, float one_m_b2, float eps, const float *hyper, const int32_t *slot,
            const double *stats, int64_t n)
{
  const float *h = hyper + 4 * (int64_t) *slot;
  const float step = h[1], inv_sqrt_bc2 = h[2], decay = h[3];

  if (stats[ES_STATS_HALTED] != 0.0 || stats[ES_STATS_SKIP] != 0.0)
    return;
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

/* es_hash64 and es_rand_uniform of es-common.h, as es-cuda-ops.cu has them */
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

/* k_dropout_fwd of es-cuda-ops.cu with seed = seeds[*slot * stride + index] */
__global__ static void
k_dropout_fwd_dev (float *out, uint8_t *mask, const float *inp, double rate, float keep,
                   const uint64_t *seeds, const int32_t *slot, int stride, int index, int64_t n)
{
  const uint64_t seed = seeds[(int64_t) *slot * stride + index];

  FOR_EACH (i, n)
    {
      const bool kept = d_rand_uniform (seed, (uint64_t) i) >= rate;

      mask[i] = kept ? 1 : 0;
      out[i] = kept ? inp[i] * keep : 0.0f;
    }
}

void
es_cuda_dropout_forward_dev (EsBackend *be, float *out, uint8_t *mask, const float *inp,
                             float rate, const uint64_t *seeds, const int32_t *slot, int stride,
                             int index, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);
  const float keep = rate < 1.0f ? 1.0f / (1.0f - rate) : 0.0f;  /* keep_scale's */

  if (!es_cuda_enter (cu) || N <= 0)
    return;
  LAUNCH (cu, k_dropout_fwd_dev, grid_for (N), NT, out, mask, inp, (double) rate, keep, seeds,
          slot, stride, index, N);
}

__global__ static void
k_step_advance (int32_t *slot, double *stats)
{
  if (threadIdx.x != 0 || blockIdx.x != 0 || stats[ES_STATS_HALTED] != 0.0
      || stats[ES_STATS_SKIP] != 0.0)
    return;
  *slot += 1;
  stats[ES_STATS_STEPS] += 1.0;
}

void
es_cuda_sgd_step_dev (EsBackend *be, float *param, float *velocity, const float *grad,
                      float momentum, bool nesterov, const float *hyper, const int32_t *slot,
                      const double *stats, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || N <= 0)
    return;
  LAUNCH (cu, k_sgd_dev, grid_for (N), NT, param, velocity, grad, momentum, nesterov, hyper,
          slot, stats, N);
}

void
es_cuda_adam_step_dev (EsBackend *be, float *param, float *m, float *v, const float *grad,
                       float beta1, float beta2, float eps, const float *hyper,
                       const int32_t *slot, const double *stats, int64_t N)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || N <= 0)
    return;
  LAUNCH (cu, k_adam_dev, grid_for (N), NT, param, m, v, grad, beta1, beta2, 1.0f - beta1,
          1.0f - beta2, eps, hyper, slot, stats, N);
}

void
es_cuda_step_advance (EsBackend *be, int32_t *slot, double *stats)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu))
    return;
  LAUNCH (cu, k_step_advance, 1, 32, slot, stats);
}

/* ---- fp16 loss scaling and clipping without a wait --------------------------------------
 * The trainer's host-side scaler (amp_unscale in es-train.c) and clipping
 * (optimizer_step) on the device: the same float and double expressions, so a step
 * skipped, a scale changed or a gradient clipped here is one the host would have. The
 * sums of squares are sum_squares's own kernels (es_cuda_sum_squares_dev), the same
 * double the host reads back. Whether a step is skipped lives in stats[ES_STATS_SKIP],
 * which the optimizer kernels and k_step_advance read. */

/* k_xent_bwd of es-cuda-ops.cu with scale = amp[ES_AMP_SCALE] / div, the trainer's
 * loss_scale / (rows * accumulation) */
__global__ static void
k_xent_bwd_dev (float *dlogits, const float *probs, const int32_t *labels, const double *amp,
                float div, int B, int C)
{
  const float scale = (float) amp[ES_AMP_SCALE] / div;

  FOR_EACH (j, (int64_t) B * C)
    {
      const float onehot = j % C == labels[j / C] ? 1.0f : 0.0f;

      dlogits[j] = (probs[j] - onehot) * scale;
    }
}

void
es_cuda_softmax_xent_backward_dev (EsBackend *be, float *dlogits, const float *probs,
                                   const int32_t *labels, const double *amp, float div, int B,
                                   int C)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || B <= 0 || C <= 0)
    return;
  LAUNCH (cu, k_xent_bwd_dev, grid_for ((int64_t) B * C), NT, dlogits, probs, labels, amp, div,
          B, C);
}

/* One thread: the scaler's decision on the gradients' sum of squares *sumsq. */
__global__ static void
k_amp_update (double *amp, double *stats, const double *sumsq, float backoff, float growth,
              int interval)
{
  float s;

  if (threadIdx.x != 0 || blockIdx.x != 0 || stats[ES_STATS_HALTED] != 0.0)
    return;
  s = (float) amp[ES_AMP_SCALE];
  if (!isfinite (*sumsq))
    {
      const float t = s * backoff;

      amp[ES_AMP_SCALE] = (double) (t > 1e-30f ? t : 1e-30f);
      amp[ES_AMP_CLEAN] = 0.0;
      stats[ES_STATS_SKIP] = 1.0;
      stats[ES_STATS_SKIPPED] += 1.0;
      return;
    }
  stats[ES_STATS_SKIP] = 0.0;
  amp[ES_AMP_INV] = (double) (1.0f / s);
  amp[ES_AMP_CLEAN] += 1.0;
  if (amp[ES_AMP_CLEAN] >= (double) interval)
    {
      const float g = s * growth;

      if (isfinite (g))
        amp[ES_AMP_SCALE] = (double) g;
      amp[ES_AMP_CLEAN] = 0.0;
    }
}

/* k_scale of es-cuda-ops.cu by the inverse k_amp_update left, on a step it keeps */
__global__ static void
k_amp_scale (float *grad, const double *amp, const double *stats, int64_t n)
{
  const float inv = (float) amp[ES_AMP_INV];

  if (stats[ES_STATS_HALTED] != 0.0 || stats[ES_STATS_SKIP] != 0.0)
    return;
  FOR_EACH (i, n)
    grad[i] *= inv;
}

void
es_cuda_amp_unscale_dev (EsBackend *be, float *grad, int64_t N, double *amp, double *stats,
                         float backoff, float growth, int interval)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || N <= 0)
    return;
  es_cuda_sum_squares_dev (cu, grad, N);
  LAUNCH (cu, k_amp_update, 1, 32, amp, stats, (const double *) cu->result, backoff, growth,
          interval);
  LAUNCH (cu, k_amp_scale, grid_for (N), NT, grad, (const double *) amp,
          (const double *) stats, N);
}

/* grad *= max_norm / norm where the norm is over it (optimizer_step's clipping) */
__global__ static void
k_clip (float *grad, const double *sumsq, float max_norm, int64_t n)
{
  const double norm = sqrt (*sumsq);
  float s;

  if (!(norm > max_norm))
    return;
  s = (float) (max_norm / norm);
  FOR_EACH (i, n)
    grad[i] *= s;
}

void
es_cuda_clip_norm_dev (EsBackend *be, float *grad, int64_t N, float max_norm)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || N <= 0)
    return;
  es_cuda_sum_squares_dev (cu, grad, N);
  LAUNCH (cu, k_clip, grid_for (N), NT, grad, (const double *) cu->result, max_norm, N);
}

/* ---- CUDA Graphs ---------------------------------------------------------------------- */

/* Thread-local capture: a call of this thread that would wait for the device (a sync,
 * an allocation) fails the capture instead of quietly breaking it, and other threads
 * with their own backends are not disturbed. */
bool
es_cuda_graph_begin (EsBackend *be, EsError *err)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu))
    {
      if (err != NULL)
        *err = cu->error;
      return false;
    }
  if (cu->capturing)
    {
      es_error_set (err, ES_ERR_INVALID, "A CUDA Graph is already being recorded");
      return false;
    }
  if (!ES_CU_CHECK (cu, cudaStreamBeginCapture (cu->stream, cudaStreamCaptureModeThreadLocal)))
    {
      if (err != NULL)
        *err = cu->error;
      return false;
    }
  cu->capturing = true;
  return true;
}

void *
es_cuda_graph_end (EsBackend *be, EsError *err)
{
  EsCuda *cu = es_cuda_of (be);
  cudaGraph_t graph = NULL;
  cudaGraphExec_t exec = NULL;
  cudaError_t e;

  if (!cu->capturing)
    {
      es_error_set (err, ES_ERR_INVALID, "No CUDA Graph is being recorded");
      return NULL;
    }
  cu->capturing = false;
  /* ended even when an op failed meanwhile, so the stream works again */
  e = cudaStreamEndCapture (cu->stream, &graph);
  if (e != cudaSuccess || cu->failed)
    {
      (void) cudaGetLastError ();
      if (graph != NULL)
        (void) cudaGraphDestroy (graph);
      if (cu->failed)
        {
          if (err != NULL)
            *err = cu->error;
        }
      else
        es_error_set (err, ES_ERR_UNSUPPORTED, "The training step could not be recorded as a "
                      "CUDA Graph (%s)", cudaGetErrorString (e));
      return NULL;
    }
  e = cudaGraphInstantiate (&exec, graph, 0);
  (void) cudaGraphDestroy (graph);
  if (e != cudaSuccess)
    {
      (void) cudaGetLastError ();
      es_error_set (err, ES_ERR_UNSUPPORTED, "The recorded CUDA Graph cannot be instantiated "
                    "(%s)", cudaGetErrorString (e));
      return NULL;
    }
  return (void *) exec;
}

bool
es_cuda_graph_launch (EsBackend *be, void *graph, EsError *err)
{
  EsCuda *cu = es_cuda_of (be);

  if (!es_cuda_enter (cu) || !ES_CU_CHECK (cu, cudaGraphLaunch ((cudaGraphExec_t) graph,
                                                                cu->stream)))
    {
      if (err != NULL)
        *err = cu->error;
      return false;
    }
  return true;
}

void
es_cuda_graph_free (EsBackend *be, void *graph)
{
  EsCuda *cu = es_cuda_of (be);

  if (graph == NULL)
    return;
  (void) es_cuda_enter_read (cu);
  /* a replay may still be queued: the driver keeps what it needs until it is done */
  (void) cudaGraphExecDestroy ((cudaGraphExec_t) graph);
}

/* ---- uploads one batch ahead ------------------------------------------------------------ */

/* The copy stream and the slots' events, made on first use. */
static bool
ahead_ready (EsCuda *cu)
{
  if (cu->copy_stream != NULL)
    return true;
  if (!ES_CU_CHECK (cu, cudaStreamCreateWithFlags (&cu->copy_stream, cudaStreamNonBlocking)))
    return false;
  for (int s = 0; s < ES_CUDA_AHEAD_SLOTS; s++)
    if (!ES_CU_CHECK (cu, cudaEventCreateWithFlags (&cu->ev_copied[s], cudaEventDisableTiming))
        || !ES_CU_CHECK (cu, cudaEventCreateWithFlags (&cu->ev_released[s],
                                                       cudaEventDisableTiming)))
      return false;
  return true;
}

bool
es_cuda_upload_ahead (EsBackend *be, int slot, int n, void *const *dst, const void *const *src,
                      const size_t *bytes, EsError *err)
{
  EsCuda *cu = es_cuda_of (be);
  size_t total = 0, off = 0;
  char *pin;

  if (slot < 0 || slot >= ES_CUDA_AHEAD_SLOTS || n < 0)
    {
      es_error_set (err, ES_ERR_INVALID, "Bad staging slot %d", slot);
      return false;
    }
  if (!es_cuda_enter (cu) || !ahead_ready (cu))
    goto failed;
  for (int i = 0; i < n; i++)
    total += bytes[i];
  /* the host writes the pinned slot once its last copy has left it */
  if (!ES_CU_CHECK (cu, cudaEventSynchronize (cu->ev_copied[slot])))
    goto failed;
  if (cu->pinned_bytes[slot] < total)
    {
      void *p = NULL;

      if (cu->pinned[slot] != NULL)
        (void) cudaFreeHost (cu->pinned[slot]);
      cu->pinned[slot] = NULL;
      cu->pinned_bytes[slot] = 0;
      if (cudaHostAlloc (&p, total, cudaHostAllocDefault) != cudaSuccess)
        {
          (void) cudaGetLastError ();
          es_error_set (err, ES_ERR_NOMEM, "No pinned host memory for a batch of %zu bytes",
                        total);
          return false;
        }
      cu->pinned[slot] = p;
      cu->pinned_bytes[slot] = total;
    }
  pin = (char *) cu->pinned[slot];
  for (int i = 0; i < n; i++)
    {
      memcpy (pin + off, src[i], bytes[i]);
      off += bytes[i];
    }
  /* the device buffers are overwritten once the work that read them is done */
  if (!ES_CU_CHECK (cu, cudaStreamWaitEvent (cu->copy_stream, cu->ev_released[slot], 0)))
    goto failed;
  off = 0;
  for (int i = 0; i < n; i++)
    {
      if (bytes[i] > 0
          && !ES_CU_CHECK (cu, cudaMemcpyAsync (dst[i], pin + off, bytes[i],
                                                cudaMemcpyHostToDevice, cu->copy_stream)))
        goto failed;
      off += bytes[i];
    }
  if (!ES_CU_CHECK (cu, cudaEventRecord (cu->ev_copied[slot], cu->copy_stream)))
    goto failed;
  return true;

failed:
  if (err != NULL)
    *err = cu->error;
  return false;
}

void
es_cuda_upload_wait (EsBackend *be, int slot)
{
  EsCuda *cu = es_cuda_of (be);

  if (slot < 0 || slot >= ES_CUDA_AHEAD_SLOTS || !es_cuda_enter (cu) || !ahead_ready (cu))
    return;
  ES_CU_CHECK (cu, cudaStreamWaitEvent (cu->stream, cu->ev_copied[slot], 0));
}

void
es_cuda_upload_release (EsBackend *be, int slot)
{
  EsCuda *cu = es_cuda_of (be);

  if (slot < 0 || slot >= ES_CUDA_AHEAD_SLOTS || !es_cuda_enter (cu) || !ahead_ready (cu))
    return;
  ES_CU_CHECK (cu, cudaEventRecord (cu->ev_released[slot], cu->stream));
}

/* Frees the copy stream, its events and the pinned slots (es-cuda.cu, at destroy). */
void
es_cuda_ahead_free (EsCuda *cu)
{
  if (cu->copy_stream != NULL)
    (void) cudaStreamSynchronize (cu->copy_stream);
  for (int s = 0; s < ES_CUDA_AHEAD_SLOTS; s++)
    {
      if (cu->ev_copied[s] != NULL)
        (void) cudaEventDestroy (cu->ev_copied[s]);
      if (cu->ev_released[s] != NULL)
        (void) cudaEventDestroy (cu->ev_released[s]);
      if (cu->pinned[s] != NULL)
        (void) cudaFreeHost (cu->pinned[s]);
      cu->ev_copied[s] = cu->ev_released[s] = NULL;
      cu->pinned[s] = NULL;
      cu->pinned_bytes[s] = 0;
    }
  if (cu->copy_stream != NULL)
    (void) cudaStreamDestroy (cu->copy_stream);
  cu->copy_stream = NULL;
}
