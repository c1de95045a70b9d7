/* es-infer-private.h: the fp32 inference step that EsInfer (es-train.c) and EsExec
 * (es-exec.c) share: one layer on a backend's ops. Engine-internal, not part of any
 * public header; it is not a runner (buffers, batches and fusion plans stay with the
 * callers). */
#pragma once

#include "es-backend.h"
#include "es-model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Layers that are the identity at inference (Flatten, Dropout): runners read through
 * them and the step below does not run them. */
static inline bool
es_infer_identity (EsLayerKind k)
{
  return k == ES_LAYER_FLATTEN || k == ES_LAYER_DROPOUT;
}

/* Layer i of m in fp32 on be: out (B, F_i) from inp (B, in floats of i). The layer's
 * tensors are read from params (P) and buffers (Q), the model's blocks in backend
 * memory; argmax (B, F_i) takes MaxPool2D's indices. A Dense layer runs together with
 * the activation layer act (after i; -1 for none) when the backend has
 * dense_act_forward. Returns the last layer done: act when it was fused, else i. */
int es_infer_layer_forward (EsBackend *be, const EsModel *m, int i, int act, float *out,
                            const float *inp, const float *params, const float *buffers,
                            int32_t *argmax, int B);

#ifdef __cplusplus
}
#endif
