/* es-ceiling.h: the machine's own ceilings for a roofline, measured on a backend: the
 * peak FLOP/s of its dense product on a large square-ish matrix, and the memory
 * bandwidth of a stream-like copy over arrays far larger than the caches. Measured, not
 * looked up: no tables of CPU models. Caching the result is core's business
 * (espalier-ceilings.h); this only measures. */
#pragma once

#include "es-backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  double gemm_gflops;   /* best dense_forward rate, 2*B*IN*OUT FLOPs a run */
  double copy_gbs;      /* best copy rate, bytes read + bytes written a run, 1e9 B/s */
  int    n_threads;     /* the backend's compute threads */
  int    gemm_b, gemm_in, gemm_out;   /* the product measured: (B, IN) x (OUT, IN)^T */
  double copy_bytes;    /* size of one of the two copy arrays */
  double measure_s;     /* seconds the measurement took */
  bool   cached;        /* set by caches that return an earlier measurement; false here */
} EsCeilings;

/* Measure be's ceilings in about `seconds` (split between the two; each is the best of
 * at least three runs after a warm-up, so short budgets still give a value). The copy
 * runs on the CPU backend's pool (es_cpu_backend_pool) with one chunk per thread, or
 * through the backend's copy function on others. false and err set when the buffers
 * cannot be allocated or the backend has no dense product. */
bool es_measure_ceilings (EsBackend *be, double seconds, EsCeilings *out, EsError *err);

#ifdef __cplusplus
}
#endif
