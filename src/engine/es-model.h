/* es-model.h: a model is a sequence of layers with shape inference, its parameters in
 * one host allocation carved into named tensors (llm.c style), and per-layer counts of
 * parameters, FLOPs and activation memory. It holds no execution state: a trainer or an
 * inference session (es-train.h) copies the parameters to a backend and back.
 *
 * Shapes are per sample, without the batch: (F) for features, (C,H,W) for images. */
#pragma once

#include "es-common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  ES_LAYER_DENSE,
  ES_LAYER_CONV2D,
  ES_LAYER_MAXPOOL2D,
  ES_LAYER_AVGPOOL2D,
  ES_LAYER_FLATTEN,
  ES_LAYER_RELU,
  ES_LAYER_LEAKY_RELU,
  ES_LAYER_SIGMOID,
  ES_LAYER_TANH,
  ES_LAYER_SOFTMAX,
  ES_LAYER_DROPOUT,
  ES_LAYER_BATCHNORM,
  ES_LAYER_N_KINDS
} EsLayerKind;

/* What a user sets on a layer; fields a kind does not use are ignored. */
typedef struct {
  EsLayerKind kind;
  int   units;     /* Dense: output features */
  int   filters;   /* Conv2D: output channels */
  int   kernel;    /* Conv2D, pools: square kernel size */
  int   stride;    /* Conv2D (default 1), pools (default = kernel); 0 = default */
  int   padding;   /* Conv2D: zeros on each side */
  float alpha;     /* LeakyReLU: negative slope (default 0.01) */
  float rate;      /* Dropout: drop probability in [0, 1) */
  float momentum;  /* BatchNorm: running-statistics momentum (default 0.1) */
  float eps;       /* BatchNorm: variance epsilon (default 1e-5) */
} EsLayerSpec;

#define ES_MAX_RANK 3

typedef struct {
  int rank;                 /* 1: (F); 3: (C,H,W) */
  int dims[ES_MAX_RANK];
} EsShape;

/* One named parameter or buffer tensor of a layer, a slice of the model's block. */
typedef struct {
  char    name[32];         /* "layers.3.weight": stable, used in safetensors */
  bool    trainable;        /* false for BatchNorm running statistics */
  int64_t offset;           /* in floats, into es_model_params or es_model_buffers */
  int64_t size;             /* floats */
  int     rank;
  int64_t dims[4];          /* Dense weight (OUT,IN); conv weight (OC,C,K,K); bias (OUT) */
} EsTensorInfo;

typedef struct {
  EsLayerSpec spec;         /* with defaults filled in */
  EsShape     in, out;
  int64_t     n_params;     /* trainable floats */
  int64_t     n_buffers;    /* non-trainable floats (running statistics) */
  int64_t     flops;        /* forward FLOPs per sample, a multiply-add counting 2 */
  int64_t     out_floats;   /* output activation floats per sample */
  int         first_tensor; /* index of its first tensor in es_model_tensor */
  int         n_tensors;
} EsLayerInfo;

typedef struct EsModel EsModel;

/* Build a model on input shape `input`, checking every layer's shape. On a bad shape the
 * error names the layer (index and kind) and both shapes. Parameters are zero until
 * es_model_init. */
EsModel            *es_model_new          (const EsShape *input, const EsLayerSpec *layers,
                                           int n_layers, EsError *err);
EsModel            *es_model_copy         (const EsModel *model);
void                es_model_free         (EsModel *model);

/* He (ReLU family) or Glorot (others) uniform weights, zero biases, BatchNorm gamma 1,
 * beta 0, running mean 0, var 1; deterministic in seed. */
void                es_model_init         (EsModel *model, uint64_t seed);

int                 es_model_n_layers     (const EsModel *model);
const EsLayerInfo  *es_model_layer        (const EsModel *model, int i);
EsShape             es_model_input_shape  (const EsModel *model);
EsShape             es_model_output_shape (const EsModel *model);

float              *es_model_params       (EsModel *model);   /* (n_params) trainable */
const float        *es_model_params_const (const EsModel *model);
int64_t             es_model_n_params     (const EsModel *model);
float              *es_model_buffers      (EsModel *model);   /* (n_buffers) */
const float        *es_model_buffers_const(const EsModel *model);
int64_t             es_model_n_buffers    (const EsModel *model);
int                 es_model_n_tensors    (const EsModel *model);
const EsTensorInfo *es_model_tensor       (const EsModel *model, int i);
/* Pointer to tensor i's data, in the params or buffers block. */
float              *es_model_tensor_data  (EsModel *model, int i);

/* Forward FLOPs per sample and output activation floats per sample, summed. */
int64_t             es_model_flops        (const EsModel *model);
int64_t             es_model_max_act      (const EsModel *model);

/* Shape helpers. */
int64_t             es_shape_size         (const EsShape *shape);
bool                es_shape_equal        (const EsShape *a, const EsShape *b);
/* "(1, 28, 28)" into buf; returns buf. */
const char         *es_shape_format       (const EsShape *shape, char *buf, size_t size);

/* Layer kinds by name: "dense", "conv2d", "maxpool2d", "avgpool2d", "flatten", "relu",
 * "leaky_relu", "sigmoid", "tanh", "softmax", "dropout", "batchnorm". */
const char         *es_layer_kind_name    (EsLayerKind kind);
/* Display name: "Dense", "Conv2D", ... */
const char         *es_layer_kind_title   (EsLayerKind kind);
bool                es_layer_kind_from_name (const char *name, EsLayerKind *kind);
/* A spec with the defaults of kind. */
EsLayerSpec         es_layer_spec_default (EsLayerKind kind);
/* True when a layer is a pure element-wise activation. */
bool                es_layer_kind_is_activation (EsLayerKind kind);

#ifdef __cplusplus
}
#endif
