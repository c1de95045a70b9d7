/* es-prune.h: pruning a model's weights. A mask holds one byte per trainable float of
 * the model (1 keep, 0 pruned) over es_model_params; only the weights of Dense and
 * Conv2D layers are prunable (never biases or BatchNorm). Magnitude pruning (per layer
 * or global) reaches the asked sparsity exactly; the Zhu & Gupta cubic schedule gives
 * the sparsity of each step of gradual pruning; 2:4 masks keep the two largest of
 * every four consecutive inputs; structured pruning removes whole Dense neurons or
 * Conv2D channels and physically shrinks the layer, the BatchNorm after it and the
 * next weight layer's inputs, so the result runs on ordinary dense kernels. Layer
 * reduction removes a whole weight layer and repairs its neighbours' shapes.
 *
 * Zhu & Gupta, "To prune, or not to prune" (2017); TensorFlow Model Optimization calls
 * the schedule PolynomialDecay with power 3. */
#pragma once

#include "es-model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  ES_PRUNE_PER_LAYER,   /* every selected layer reaches the sparsity on its own */
  ES_PRUNE_GLOBAL,      /* one threshold over all selected layers' weights */
} EsPruneScope;

typedef enum {
  ES_NORM_L1,
  ES_NORM_L2,
} EsNorm;

typedef struct EsMask EsMask;

/* A mask of all ones for model's parameters. */
EsMask        *es_mask_new          (const EsModel *model);
EsMask        *es_mask_copy         (const EsMask *mask);
void           es_mask_free         (EsMask *mask);
/* (n_params) bytes, 1 keep, 0 pruned; biases and BatchNorm are always 1. */
uint8_t       *es_mask_data         (EsMask *mask);
const uint8_t *es_mask_data_const   (const EsMask *mask);
int64_t        es_mask_size         (const EsMask *mask);
/* A mask with a 0 wherever model's prunable weights are exactly zero (to keep a loaded
 * pruned model pruned while it is fine-tuned). */
EsMask        *es_mask_from_zeros   (const EsModel *model);
/* params *= mask. */
void           es_mask_apply        (const EsMask *mask, EsModel *model);

/* Whether layer i has prunable weights (Dense, Conv2D). */
bool           es_prune_layer_is_prunable (const EsModel *model, int layer);

/* Magnitude pruning to `sparsity` in [0, 1): zero the smallest-|w| weights so that
 * exactly round(sparsity * n) of each selected layer's weights (per layer) or of all
 * selected weights (global) are pruned, ties broken by index. Weights the mask already
 * prunes stay pruned and count towards the target (so gradual pruning only adds).
 * layers (n_layers) selects layers, NULL: every prunable one. Updates mask and zeroes
 * the pruned weights in model. Fails when the mask already prunes more than asked or
 * no selected layer is prunable. */
bool           es_prune_magnitude   (EsModel *model, EsMask *mask, float sparsity,
                                     EsPruneScope scope, const bool *layers, EsError *err);

/* Zhu & Gupta: the sparsity at optimizer step t of gradual pruning from s_i to s_f
 * starting at step t0, pruning every dt steps n times:
 *   s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3,
 * s_i before t0 and s_f after t0 + n dt. */
float          es_prune_cubic_sparsity (float s_i, float s_f, int64_t t0, int64_t n,
                                        int64_t dt, int64_t t);

/* 2:4 semi-structured sparsity: in every group of four consecutive inputs of a
 * selected layer's weight rows (Dense (OUT,IN), Conv2D (OC, C*K*K)) keep the two of
 * largest magnitude. Layers whose row length is not a multiple of 4 fail with
 * ES_ERR_SHAPE naming the layer. */
bool           es_prune_2_4         (EsModel *model, EsMask *mask, const bool *layers,
                                     EsError *err);

/* Structured pruning: a new model in which Dense layer `layer` keeps `keep` of its
 * neurons (Conv2D: filters) with the largest weight-row norm (ties by index, kept in
 * their original order); the BatchNorm that follows it (before the next weight layer)
 * and the next Dense or Conv2D layer's inputs shrink to match, through Flatten (a
 * Conv2D channel is a block of H*W inputs of the next Dense). The removed units' bias
 * contributions are lost, as in every structured-pruning tool. Fails on the last weight
 * layer (its outputs are the model's), on keep outside [1, units), or on a layer that
 * is not Dense or Conv2D. */
EsModel       *es_prune_structured  (const EsModel *model, int layer, int keep, EsNorm norm,
                                     EsError *err);
/* Indices (keep) of the units es_prune_structured keeps, ascending; false on the same
 * errors. For tests and the GUI's preview. */
bool           es_prune_structured_units (const EsModel *model, int layer, int keep,
                                          EsNorm norm, int *units, EsError *err);

/* Layer reduction: a new model without weight layer `layer` (Dense or Conv2D) and the
 * activation, Dropout and BatchNorm layers that follow it up to the next weight layer.
 * The next weight layer now reads what the removed one read; when that is a Dense
 * layer and the removed one was Dense, its new weights start from the composition
 * W_next W_removed and b_next + W_next b_removed (exact if the activation between them
 * were the identity), otherwise from es_model_init's scheme with seed. Every other
 * layer keeps its weights. Fails on the last weight layer, on a layer that is not
 * Dense/Conv2D, or when the shapes cannot be repaired (a Conv2D whose removal changes
 * the spatial size the next layer expects: the error says why). */
EsModel       *es_reduce_remove_layer (const EsModel *model, int layer, uint64_t seed,
                                       EsError *err);

/* Zeros among the prunable weights of layer i, and their count (0 for layers without
 * prunable weights). */
int64_t        es_prune_layer_zeros (const EsModel *model, int layer, int64_t *n_weights);
/* Fraction of zeros among all prunable weights of the model (0 when it has none). */
double         es_prune_model_sparsity (const EsModel *model);

#ifdef __cplusplus
}
#endif
