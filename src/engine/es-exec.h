/* es-exec.h: inference of a variant on the CPU, each weight layer on the kernel chosen
 * for it: dense fp32 (the CPU backend's fused dense/activation), CSR sparse (es-sparse.h)
 * or int8 (es-qgemm.h, static or dynamic activation ranges). Other layers run in float;
 * an int8 layer quantizes its input on the way in and dequantizes its output (with a
 * following ReLU fused into the requantization), so layers can be mixed freely. This
 * is what every variant's accuracy and latency are measured on: the kernels that really
 * run it.
 *
 * Dimension key: B = batch rows, D = input floats per row. */
#pragma once

#include "es-backend.h"
#include "es-model.h"
#include "es-quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  ES_EXEC_DENSE,    /* fp32 dense kernels */
  ES_EXEC_SPARSE,   /* CSR sparse times dense (Dense layers only) */
  ES_EXEC_INT8,     /* int8 kernels (needs a quantized layer) */
} EsExecKind;

const char *es_exec_kind_name (EsExecKind kind);   /* "dense", "sparse", "int8" */

typedef struct EsExec EsExec;

/* A runner for model (copied: the caller may free it) with quantization quant (may be
 * NULL; copied) on the CPU backend be (borrowed; its thread pool runs large batches),
 * for up to max_batch rows. kinds (n_layers) chooses each layer's kernel, NULL: int8
 * where quant quantizes the layer, dense elsewhere. A kind a layer cannot take
 * (sparse for a Conv2D, int8 for a layer quant keeps in float) fails naming the layer. */
EsExec      *es_exec_new        (const EsModel *model, const EsQuant *quant,
                                 const EsExecKind *kinds, EsBackend *be, int max_batch,
                                 EsError *err);
void         es_exec_free       (EsExec *ex);
/* Run B rows of x (B, D); returns the output (B, out), valid until the next call. */
const float *es_exec_run        (EsExec *ex, const float *x, int B);
EsExecKind   es_exec_layer_kind (const EsExec *ex, int layer);
/* The kernel path of int8 and sparse layers on this CPU: "vnni", "avx2" or "scalar";
 * "avx512" or "scalar". */
const char  *es_exec_int8_path  (void);

/* Called with every layer's input (B rows of in_floats) before the layer runs: the
 * calibrator's tap. NULL removes it. */
typedef void (*EsExecObserver) (void *data, int layer, const float *inp, int B,
                                int64_t in_floats);
void         es_exec_set_observer (EsExec *ex, EsExecObserver fn, void *data);

#ifdef __cplusplus
}
#endif
