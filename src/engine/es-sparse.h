/* es-sparse.h: compressed sparse rows for the weights of a pruned Dense layer and the
 * sparse-times-dense product that runs them on the CPU. A portable scalar reference
 * and a vector path chosen at run time (AVX-512 where the CPU has it) compute the same
 * sums in the same order (fused multiply-adds in both), so tests compare them exactly.
 * Whether sparsity buys time is
 * a measurement (es-exec.h runs a model both ways); nothing here assumes it does. */
#pragma once

#include "es-common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* W (rows, cols) with nnz nonzeros: row r's entries are col[row_ptr[r] .. row_ptr[r+1])
 * with values val[...], columns ascending. */
typedef struct {
  int      rows, cols;
  int64_t  nnz;
  int32_t *row_ptr;   /* (rows + 1) */
  int32_t *col;       /* (nnz) */
  float   *val;       /* (nnz) */
} EsCsr;

/* The nonzeros of w (rows, cols) row-major; NULL and err set when memory fails. */
EsCsr  *es_csr_from_dense (const float *w, int rows, int cols, EsError *err);
void    es_csr_free       (EsCsr *m);
/* Bytes of the three arrays (what a CSR variant stores). */
size_t  es_csr_bytes      (const EsCsr *m);

/* out (B, OUT) = act (inp (B, IN) . W^T + b) with W (OUT, IN) in CSR, b (OUT) or NULL,
 * relu true for a fused ReLU. The scalar reference. */
void    es_csr_dense_forward_ref (float *out, const float *inp, const EsCsr *w,
                                  const float *b, bool relu, int B);
/* The same on the fastest path this CPU has; scratch holds at least
 * es_csr_scratch_floats (w, B) floats (a transposed copy of inp for B > 1). Rows
 * [row0, row1) of W only, so callers can split the work over threads. */
void    es_csr_dense_forward     (float *out, const float *inp, const EsCsr *w,
                                  const float *b, bool relu, int B, float *scratch,
                                  int row0, int row1);
size_t  es_csr_scratch_floats    (const EsCsr *w, int B);
/* "avx512" or "scalar": the path es_csr_dense_forward takes on this CPU
 * (ESPALIER_SPARSE=scalar in the environment forces the reference). */
const char *es_csr_path          (void);

#ifdef __cplusplus
}
#endif
