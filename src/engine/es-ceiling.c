/* es-ceiling.c: the machine's ceilings (es-ceiling.h): a timed dense product and a
 * timed parallel copy, best of several runs. Not a benchmark suite: two numbers for a
 * roofline, good to a few percent. */
#include "es-ceiling.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "es-pool.h"

/* B = batch rows, IN = input features, OUT = output features */
#define GEMM_B   256
#define GEMM_IN  1024
#define GEMM_OUT 1024
/* Each copy array: 64 MB, well past any last-level cache we expect to meet. */
#define COPY_BYTES ((size_t) 64 << 20)
#define MIN_RUNS 3

typedef struct {
  char       *dst;
  const char *src;
  size_t      bytes;
} CopyJob;

static void
copy_task (void *data, int index, int n_tasks)
{
  CopyJob *job = data;
  int64_t begin, end;

  es_pool_chunk ((int64_t) job->bytes, 4096, index, n_tasks, &begin, &end);
  if (end > begin)
    memcpy (job->dst + begin, job->src + begin, (size_t) (end - begin));
}

static void
fill (float *x, int64_t n)
{
  for (int64_t i = 0; i < n; i++)
    x[i] = 0.01f * (float) ((i * 7) % 13) - 0.06f;
}

/* Upload a filled host buffer into backend memory x (n floats). */
static bool
fill_backend (EsBackend *be, float *x, int64_t n, EsError *err)
{
  float *host;

  if (be->iface->host_memory)
    {
      fill (x, n);
      return true;
    }
  host = malloc ((size_t) n * sizeof (float));
  if (host == NULL)
    {
      es_error_set (err, ES_ERR_NOMEM, "Out of memory for the ceiling measurement");
      return false;
    }
  fill (host, n);
  be->iface->upload (be, x, host, (size_t) n * sizeof (float));
  free (host);
  return true;
}

static void
be_sync (EsBackend *be)
{
  if (be->iface->synchronize != NULL)
    be->iface->synchronize (be);
}

static double
measure_gemm (EsBackend *be, double seconds, EsError *err)
{
  size_t n_inp = (size_t) GEMM_B * GEMM_IN, n_w = (size_t) GEMM_OUT * GEMM_IN;
  size_t n_out = (size_t) GEMM_B * GEMM_OUT;
  float *inp, *w, *b, *out;   /* (B, IN), (OUT, IN), (OUT), (B, OUT) */
  double flops = 2.0 * GEMM_B * GEMM_IN * GEMM_OUT, best = 0.0, start;
  bool ok = false;

  inp = be->iface->alloc (be, ES_MEM_WORKSPACE, n_inp * sizeof (float), err);
  w = inp ? be->iface->alloc (be, ES_MEM_WORKSPACE, n_w * sizeof (float), err) : NULL;
  b = w ? be->iface->alloc (be, ES_MEM_WORKSPACE, GEMM_OUT * sizeof (float), err) : NULL;
  out = b ? be->iface->alloc (be, ES_MEM_WORKSPACE, n_out * sizeof (float), err) : NULL;
  if (out == NULL)
    goto done;
  if (!fill_backend (be, inp, (int64_t) n_inp, err) || !fill_backend (be, w, (int64_t) n_w, err)
      || !fill_backend (be, b, GEMM_OUT, err))
    goto done;

  be->iface->dense_forward (be, out, inp, w, b, GEMM_B, GEMM_IN, GEMM_OUT);   /* warm-up */
  be_sync (be);
  start = es_now ();
  for (int run = 0; run < MIN_RUNS || es_now () - start < seconds; run++)
    {
      double t0 = es_now (), t;

      be->iface->dense_forward (be, out, inp, w, b, GEMM_B, GEMM_IN, GEMM_OUT);
      be_sync (be);
      t = es_now () - t0;
      if (t > 0 && flops / t > best)
        best = flops / t;
    }
  ok = true;

done:
  if (out) be->iface->free (be, ES_MEM_WORKSPACE, out, n_out * sizeof (float));
  if (b) be->iface->free (be, ES_MEM_WORKSPACE, b, GEMM_OUT * sizeof (float));
  if (w) be->iface->free (be, ES_MEM_WORKSPACE, w, n_w * sizeof (float));
  if (inp) be->iface->free (be, ES_MEM_WORKSPACE, inp, n_inp * sizeof (float));
  return ok ? best / 1e9 : -1.0;
}

static double
measure_copy (EsBackend *be, double seconds, EsError *err)
{
  struct EsPool *pool = es_cpu_backend_pool (be);
  char *src, *dst;
  double best = 0.0, start;
  CopyJob job;

  src = be->iface->alloc (be, ES_MEM_WORKSPACE, COPY_BYTES, err);
  dst = src ? be->iface->alloc (be, ES_MEM_WORKSPACE, COPY_BYTES, err) : NULL;
  if (dst == NULL)
    {
      if (src) be->iface->free (be, ES_MEM_WORKSPACE, src, COPY_BYTES);
      return -1.0;
    }
  if (!fill_backend (be, (float *) src, (int64_t) (COPY_BYTES / sizeof (float)), err))
    {
      be->iface->free (be, ES_MEM_WORKSPACE, dst, COPY_BYTES);
      be->iface->free (be, ES_MEM_WORKSPACE, src, COPY_BYTES);
      return -1.0;
    }
  job.dst = dst;
  job.src = src;
  job.bytes = COPY_BYTES;

  /* the first run also faults the destination's pages in */
  start = es_now ();
  for (int run = 0; run < MIN_RUNS + 1 || es_now () - start < seconds; run++)
    {
      double t0 = es_now (), t;

      if (pool != NULL)
        es_pool_run (pool, copy_task, &job);
      else
        be->iface->copy (be, dst, src, COPY_BYTES);
      be_sync (be);
      t = es_now () - t0;
      if (run > 0 && t > 0 && 2.0 * COPY_BYTES / t > best)
        best = 2.0 * COPY_BYTES / t;
    }
  be->iface->free (be, ES_MEM_WORKSPACE, dst, COPY_BYTES);
  be->iface->free (be, ES_MEM_WORKSPACE, src, COPY_BYTES);
  return best / 1e9;
}

bool
es_measure_ceilings (EsBackend *be, double seconds, EsCeilings *out, EsError *err)
{
  double start = es_now (), gflops, gbs;

  if (be == NULL || out == NULL || !(seconds >= 0.0))
    {
      es_error_set (err, ES_ERR_INVALID, "Bad arguments to the ceiling measurement");
      return false;
    }
  if (be->iface->dense_forward == NULL || !be->iface->supports_op (be, ES_OP_DENSE))
    {
      es_error_set (err, ES_ERR_UNSUPPORTED, "Backend %s has no dense product to measure",
                    be->iface->name);
      return false;
    }
  gflops = measure_gemm (be, seconds / 2, err);
  if (gflops < 0)
    return false;
  gbs = measure_copy (be, seconds / 2, err);
  if (gbs < 0)
    return false;
  if (!isfinite (gflops) || gflops <= 0 || !isfinite (gbs) || gbs <= 0)
    {
      es_error_set (err, ES_ERR_NUMERIC, "The ceiling measurement gave no usable time");
      return false;
    }

  memset (out, 0, sizeof *out);
  out->gemm_gflops = gflops;
  out->copy_gbs = gbs;
  out->n_threads = be->n_threads;
  out->gemm_b = GEMM_B;
  out->gemm_in = GEMM_IN;
  out->gemm_out = GEMM_OUT;
  out->copy_bytes = (double) COPY_BYTES;
  out->measure_s = es_now () - start;
  out->cached = false;
  return true;
}
