/* es-model.c: layer sequences, shape inference, the parameter block and its named
 * tensors, initialization, and per-layer counts. Not execution: see es-train.c. */
#include "es-model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct EsModel {
  EsShape       input;
  int           n_layers;
  EsLayerInfo  *layers;     /* (n_layers) */
  int           n_tensors;
  EsTensorInfo *tensors;    /* (n_tensors) */
  int64_t       n_params;
  int64_t       n_buffers;
  float        *params;     /* (n_params) trainable, one allocation */
  float        *buffers;    /* (n_buffers) running statistics */
};

static const struct {
  const char *name;
  const char *title;
} layer_names[ES_LAYER_N_KINDS] = {
  [ES_LAYER_DENSE]      = { "dense",      "Dense" },
  [ES_LAYER_CONV2D]     = { "conv2d",     "Conv2D" },
  [ES_LAYER_MAXPOOL2D]  = { "maxpool2d",  "MaxPool2D" },
  [ES_LAYER_AVGPOOL2D]  = { "avgpool2d",  "AvgPool2D" },
  [ES_LAYER_FLATTEN]    = { "flatten",    "Flatten" },
  [ES_LAYER_RELU]       = { "relu",       "ReLU" },
  [ES_LAYER_LEAKY_RELU] = { "leaky_relu", "LeakyReLU" },
  [ES_LAYER_SIGMOID]    = { "sigmoid",    "Sigmoid" },
  [ES_LAYER_TANH]       = { "tanh",       "Tanh" },
  [ES_LAYER_SOFTMAX]    = { "softmax",    "Softmax" },
  [ES_LAYER_DROPOUT]    = { "dropout",    "Dropout" },
  [ES_LAYER_BATCHNORM]  = { "batchnorm",  "BatchNorm" },
};

const char *
es_layer_kind_name (EsLayerKind kind)
{
  return (unsigned) kind < ES_LAYER_N_KINDS ? layer_names[kind].name : "unknown";
}

const char *
es_layer_kind_title (EsLayerKind kind)
{
  return (unsigned) kind < ES_LAYER_N_KINDS ? layer_names[kind].title : "Unknown";
}

bool
es_layer_kind_from_name (const char *name, EsLayerKind *kind)
{
  if (name == NULL)
    return false;
  for (int k = 0; k < ES_LAYER_N_KINDS; k++)
    if (strcasecmp (name, layer_names[k].name) == 0 || strcasecmp (name, layer_names[k].title) == 0)
      {
        *kind = (EsLayerKind) k;
        return true;
      }
  return false;
}

bool
es_layer_kind_is_activation (EsLayerKind kind)
{
  return kind == ES_LAYER_RELU || kind == ES_LAYER_LEAKY_RELU || kind == ES_LAYER_SIGMOID
         || kind == ES_LAYER_TANH;
}

EsLayerSpec
es_layer_spec_default (EsLayerKind kind)
{
  EsLayerSpec s = { .kind = kind };

  switch (kind)
    {
    case ES_LAYER_DENSE: s.units = 128; break;
    case ES_LAYER_CONV2D: s.filters = 8; s.kernel = 3; s.stride = 1; break;
    case ES_LAYER_MAXPOOL2D:
    case ES_LAYER_AVGPOOL2D: s.kernel = 2; s.stride = 2; break;
    case ES_LAYER_LEAKY_RELU: s.alpha = 0.01f; break;
    case ES_LAYER_DROPOUT: s.rate = 0.2f; break;
    case ES_LAYER_BATCHNORM: s.momentum = 0.1f; s.eps = 1e-5f; break;
    default: break;
    }
  return s;
}

int64_t
es_shape_size (const EsShape *shape)
{
  int64_t n = 1;

  for (int i = 0; i < shape->rank; i++)
    n *= shape->dims[i];
  return n;
}

bool
es_shape_equal (const EsShape *a, const EsShape *b)
{
  if (a->rank != b->rank)
    return false;
  for (int i = 0; i < a->rank; i++)
    if (a->dims[i] != b->dims[i])
      return false;
  return true;
}

const char *
es_shape_format (const EsShape *shape, char *buf, size_t size)
{
  size_t len = 0;

  len += (size_t) snprintf (buf, size, "(");
  for (int i = 0; i < shape->rank && len < size; i++)
    len += (size_t) snprintf (buf + len, size - len, i ? ", %d" : "%d", shape->dims[i]);
  if (len < size)
    snprintf (buf + len, size - len, ")");
  return buf;
}

static EsShape
shape1 (int f)
{
  EsShape s = { .rank = 1, .dims = { f } };
  return s;
}

static EsShape
shape3 (int c, int h, int w)
{
  EsShape s = { .rank = 3, .dims = { c, h, w } };
  return s;
}

/* Fill defaults the user left at zero. */
static EsLayerSpec
spec_with_defaults (const EsLayerSpec *in)
{
  EsLayerSpec s = *in;

  switch (s.kind)
    {
    case ES_LAYER_CONV2D:
      if (s.stride <= 0)
        s.stride = 1;
      break;
    case ES_LAYER_MAXPOOL2D:
    case ES_LAYER_AVGPOOL2D:
      if (s.kernel <= 0)
        s.kernel = 2;
      if (s.stride <= 0)
        s.stride = s.kernel;
      break;
    case ES_LAYER_LEAKY_RELU:
      if (s.alpha == 0.0f)
        s.alpha = 0.01f;
      break;
    case ES_LAYER_BATCHNORM:
      if (s.momentum <= 0.0f)
        s.momentum = 0.1f;
      if (s.eps <= 0.0f)
        s.eps = 1e-5f;
      break;
    default:
      break;
    }
  return s;
}

/* A shape error of layer i: what it needs and (may be NULL) what to do, both fragments
 * the caller has translated (es_translate). */
static bool
layer_error (EsError *err, int i, const EsLayerSpec *s, const EsShape *in, const char *what,
             const char *detail)
{
  char shape[64];

  es_shape_format (in, shape, sizeof shape);
  if (detail != NULL)
    es_error_set (err, ES_ERR_SHAPE, "Layer %d (%s) %s, but its input has shape %s: %s", i + 1,
                  es_layer_kind_title (s->kind), what, shape, detail);
  else
    es_error_set (err, ES_ERR_SHAPE, "Layer %d (%s) %s, but its input has shape %s", i + 1,
                  es_layer_kind_title (s->kind), what, shape);
  return false;
}

/* Infer the output shape and counts of one layer. */
static bool
infer_layer (EsLayerInfo *info, int i, EsError *err)
{
  const EsLayerSpec *s = &info->spec;
  const EsShape *in = &info->in;
  int64_t in_size = es_shape_size (in);
  char need[192];    /* a translated fragment */

  info->n_params = 0;
  info->n_buffers = 0;
  info->flops = 0;
  switch (s->kind)
    {
    case ES_LAYER_DENSE:
      if (in->rank != 1)
        return layer_error (err, i, s, in, es_translate ("needs a flat input of shape (features)"),
                            es_translate ("add a Flatten layer before it"));
      if (s->units <= 0)
        return layer_error (err, i, s, in, es_translate ("needs at least one unit"), NULL);
      info->out = shape1 (s->units);
      info->n_params = in_size * s->units + s->units;
      info->flops = 2 * in_size * s->units;
      break;

    case ES_LAYER_CONV2D:
    case ES_LAYER_MAXPOOL2D:
    case ES_LAYER_AVGPOOL2D:
      {
        int pad = s->kind == ES_LAYER_CONV2D ? s->padding : 0;
        int oh, ow;

        if (in->rank != 3)
          return layer_error (err, i, s, in,
                              es_translate ("needs an image input of shape (C, H, W)"), NULL);
        if (s->kernel <= 0 || s->stride <= 0 || pad < 0
            || s->kernel > 65536 || s->stride > 65536 || pad > 65536)
          return layer_error (err, i, s, in,
                              es_translate ("needs kernel and stride from 1 and padding from 0, "
                                            "each at most 65536"), NULL);
        if (in->dims[1] + 2 * pad < s->kernel || in->dims[2] + 2 * pad < s->kernel)
          {
            snprintf (need, sizeof need, es_translate ("has a kernel of %d that does not fit"),
                      s->kernel);
            return layer_error (err, i, s, in, need,
                                es_translate ("use a smaller kernel or more padding"));
          }
        oh = ES_CONV_OUT (in->dims[1], s->kernel, s->stride, pad);
        ow = ES_CONV_OUT (in->dims[2], s->kernel, s->stride, pad);
        if (s->kind == ES_LAYER_CONV2D)
          {
            if (s->filters <= 0)
              return layer_error (err, i, s, in, es_translate ("needs at least one filter"), NULL);
            info->out = shape3 (s->filters, oh, ow);
            info->n_params = (int64_t) s->filters * in->dims[0] * s->kernel * s->kernel + s->filters;
            info->flops = 2 * (int64_t) s->filters * oh * ow * in->dims[0] * s->kernel * s->kernel;
          }
        else
          {
            info->out = shape3 (in->dims[0], oh, ow);
            info->flops = (int64_t) in->dims[0] * oh * ow * s->kernel * s->kernel;
          }
      }
      break;

    case ES_LAYER_FLATTEN:
      info->out = shape1 ((int) in_size);
      break;

    case ES_LAYER_SOFTMAX:
      if (in->rank != 1)
        return layer_error (err, i, s, in, es_translate ("works on a flat input (classes)"),
                            es_translate ("add a Flatten layer before it"));
      info->out = *in;
      info->flops = 3 * in_size;
      break;

    case ES_LAYER_RELU:
    case ES_LAYER_LEAKY_RELU:
    case ES_LAYER_SIGMOID:
    case ES_LAYER_TANH:
    case ES_LAYER_DROPOUT:
      if (s->kind == ES_LAYER_DROPOUT && (s->rate < 0.0f || s->rate >= 1.0f))
        return layer_error (err, i, s, in, es_translate ("needs a rate in [0, 1)"), NULL);
      info->out = *in;
      info->flops = in_size;
      break;

    case ES_LAYER_BATCHNORM:
      {
        int ch = in->dims[0];

        info->out = *in;
        info->n_params = 2 * ch;
        info->n_buffers = 2 * ch;
        info->flops = 4 * in_size;
      }
      break;

    default:
      es_error_set (err, ES_ERR_INVALID, "Layer %d has an unknown kind (%d)", i + 1, (int) s->kind);
      return false;
    }
  info->out_floats = es_shape_size (&info->out);
  /* Kernels index with 32-bit dimensions and 64-bit products: refuse what would not fit. */
  if (info->out_floats > INT32_MAX || in_size > INT32_MAX || info->n_params > INT32_MAX)
    return layer_error (err, i, s, in, es_translate ("would be too large (over 2^31 values)"),
                        NULL);
  return true;
}

static void
add_tensor (EsModel *m, int layer, const char *what, bool trainable, int64_t *offset, int rank,
            int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
  EsTensorInfo *t = &m->tensors[m->n_tensors++];
  int64_t dims[4] = { d0, d1, d2, d3 };

  snprintf (t->name, sizeof t->name, "layers.%d.%s", layer, what);
  t->trainable = trainable;
  t->rank = rank;
  t->size = 1;
  for (int k = 0; k < 4; k++)
    {
      t->dims[k] = k < rank ? dims[k] : 0;
      if (k < rank)
        t->size *= dims[k];
    }
  t->offset = *offset;
  *offset += t->size;
}

EsModel *
es_model_new (const EsShape *input, const EsLayerSpec *layers, int n_layers, EsError *err)
{
  EsModel *m;
  EsShape cur;
  int64_t poff = 0, boff = 0;

  if (input == NULL || input->rank < 1 || input->rank > ES_MAX_RANK || input->rank == 2)
    {
      es_error_set (err, ES_ERR_SHAPE, "The model input must be (features) or (C, H, W)");
      return NULL;
    }
  for (int k = 0; k < input->rank; k++)
    if (input->dims[k] <= 0)
      {
        es_error_set (err, ES_ERR_SHAPE, "The model input has a dimension of %d", input->dims[k]);
        return NULL;
      }
  if (n_layers <= 0 || layers == NULL)
    {
      es_error_set (err, ES_ERR_INVALID, "A model needs at least one layer");
      return NULL;
    }

  m = calloc (1, sizeof *m);
  if (m == NULL)
    {
      es_error_set (err, ES_ERR_NOMEM, "Out of memory building the model");
      return NULL;
    }
  m->layers = calloc ((size_t) n_layers, sizeof *m->layers);
  m->tensors = calloc ((size_t) n_layers * 4, sizeof *m->tensors);
  if (m->layers == NULL || m->tensors == NULL)
    {
      es_model_free (m);
      es_error_set (err, ES_ERR_NOMEM, "Out of memory building the model");
      return NULL;
    }
  m->input = *input;
  m->n_layers = n_layers;
  cur = *input;
  for (int i = 0; i < n_layers; i++)
    {
      EsLayerInfo *info = &m->layers[i];

      info->spec = spec_with_defaults (&layers[i]);
      info->in = cur;
      if (!infer_layer (info, i, err))
        {
          es_model_free (m);
          return NULL;
        }
      info->first_tensor = m->n_tensors;
      switch (info->spec.kind)
        {
        case ES_LAYER_DENSE:
          add_tensor (m, i, "weight", true, &poff, 2, info->spec.units, info->in.dims[0], 0, 0);
          add_tensor (m, i, "bias", true, &poff, 1, info->spec.units, 0, 0, 0);
          break;
        case ES_LAYER_CONV2D:
          add_tensor (m, i, "weight", true, &poff, 4, info->spec.filters, info->in.dims[0],
                      info->spec.kernel, info->spec.kernel);
          add_tensor (m, i, "bias", true, &poff, 1, info->spec.filters, 0, 0, 0);
          break;
        case ES_LAYER_BATCHNORM:
          add_tensor (m, i, "weight", true, &poff, 1, info->in.dims[0], 0, 0, 0);
          add_tensor (m, i, "bias", true, &poff, 1, info->in.dims[0], 0, 0, 0);
          add_tensor (m, i, "running_mean", false, &boff, 1, info->in.dims[0], 0, 0, 0);
          add_tensor (m, i, "running_var", false, &boff, 1, info->in.dims[0], 0, 0, 0);
          break;
        default:
          break;
        }
      info->n_tensors = m->n_tensors - info->first_tensor;
      cur = info->out;
    }
  m->n_params = poff;
  m->n_buffers = boff;
  m->params = calloc ((size_t) ES_MAX (poff, 1), sizeof (float));
  m->buffers = calloc ((size_t) ES_MAX (boff, 1), sizeof (float));
  if (m->params == NULL || m->buffers == NULL)
    {
      es_model_free (m);
      es_error_set (err, ES_ERR_NOMEM, "Out of memory for %lld parameters", (long long) poff);
      return NULL;
    }
  /* BatchNorm starts as the identity even before es_model_init. */
  for (int t = 0; t < m->n_tensors; t++)
    if (strstr (m->tensors[t].name, "running_var") != NULL)
      for (int64_t k = 0; k < m->tensors[t].size; k++)
        m->buffers[m->tensors[t].offset + k] = 1.0f;
  return m;
}

EsModel *
es_model_copy (const EsModel *model)
{
  EsLayerSpec *specs = malloc ((size_t) model->n_layers * sizeof *specs);
  EsModel *copy;

  if (specs == NULL)
    return NULL;
  for (int i = 0; i < model->n_layers; i++)
    specs[i] = model->layers[i].spec;
  copy = es_model_new (&model->input, specs, model->n_layers, NULL);
  free (specs);
  if (copy == NULL)
    return NULL;
  memcpy (copy->params, model->params, (size_t) model->n_params * sizeof (float));
  memcpy (copy->buffers, model->buffers, (size_t) model->n_buffers * sizeof (float));
  return copy;
}

void
es_model_free (EsModel *model)
{
  if (model == NULL)
    return;
  free (model->layers);
  free (model->tensors);
  free (model->params);
  free (model->buffers);
  free (model);
}

/* The activation that follows layer i (skipping Dropout/BatchNorm), for the init gain. */
static EsLayerKind
next_activation (const EsModel *m, int i)
{
  for (int j = i + 1; j < m->n_layers; j++)
    {
      EsLayerKind k = m->layers[j].spec.kind;

      if (k == ES_LAYER_DROPOUT || k == ES_LAYER_BATCHNORM)
        continue;
      return k;
    }
  return ES_LAYER_N_KINDS;
}

void
es_model_init (EsModel *model, uint64_t seed)
{
  for (int i = 0; i < model->n_layers; i++)
    {
      const EsLayerInfo *info = &model->layers[i];
      EsLayerKind act = next_activation (model, i);

      for (int t = info->first_tensor; t < info->first_tensor + info->n_tensors; t++)
        {
          const EsTensorInfo *ti = &model->tensors[t];
          float *data = es_model_tensor_data (model, t);
          const char *what = strrchr (ti->name, '.') + 1;

          if (info->spec.kind == ES_LAYER_BATCHNORM)
            {
              float v = (strcmp (what, "weight") == 0 || strcmp (what, "running_var") == 0) ? 1.0f : 0.0f;
              for (int64_t k = 0; k < ti->size; k++)
                data[k] = v;
            }
          else if (strcmp (what, "weight") == 0)
            {
              /* fan_in = all dims but the first; He for the ReLU family, Glorot otherwise. */
              int64_t fan_in = ti->size / ti->dims[0];
              int64_t fan_out = ti->dims[0] * (ti->rank == 4 ? ti->dims[2] * ti->dims[3] : 1);
              double limit;
              EsRng rng = { seed ^ es_hash64 ((uint64_t) i + 1) };

              if (act == ES_LAYER_RELU || act == ES_LAYER_LEAKY_RELU)
                limit = sqrt (6.0 / (double) fan_in);
              else
                limit = sqrt (6.0 / (double) (fan_in + fan_out));
              for (int64_t k = 0; k < ti->size; k++)
                data[k] = (float) ((2.0 * es_rng_uniform (&rng) - 1.0) * limit);
            }
          else
            {
              for (int64_t k = 0; k < ti->size; k++)
                data[k] = 0.0f;
            }
        }
    }
}

int
es_model_n_layers (const EsModel *model)
{
  return model->n_layers;
}

const EsLayerInfo *
es_model_layer (const EsModel *model, int i)
{
  return i >= 0 && i < model->n_layers ? &model->layers[i] : NULL;
}

EsShape
es_model_input_shape (const EsModel *model)
{
  return model->input;
}

EsShape
es_model_output_shape (const EsModel *model)
{
  return model->layers[model->n_layers - 1].out;
}

float *
es_model_params (EsModel *model)
{
  return model->params;
}

const float *
es_model_params_const (const EsModel *model)
{
  return model->params;
}

int64_t
es_model_n_params (const EsModel *model)
{
  return model->n_params;
}

float *
es_model_buffers (EsModel *model)
{
  return model->buffers;
}

const float *
es_model_buffers_const (const EsModel *model)
{
  return model->buffers;
}

int64_t
es_model_n_buffers (const EsModel *model)
{
  return model->n_buffers;
}

int
es_model_n_tensors (const EsModel *model)
{
  return model->n_tensors;
}

const EsTensorInfo *
es_model_tensor (const EsModel *model, int i)
{
  return i >= 0 && i < model->n_tensors ? &model->tensors[i] : NULL;
}

float *
es_model_tensor_data (EsModel *model, int i)
{
  const EsTensorInfo *t = &model->tensors[i];

  return (t->trainable ? model->params : model->buffers) + t->offset;
}

int64_t
es_model_flops (const EsModel *model)
{
  int64_t f = 0;

  for (int i = 0; i < model->n_layers; i++)
    f += model->layers[i].flops;
  return f;
}

int64_t
es_model_max_act (const EsModel *model)
{
  int64_t mx = es_shape_size (&model->input);

  for (int i = 0; i < model->n_layers; i++)
    mx = ES_MAX (mx, model->layers[i].out_floats);
  return mx;
}
