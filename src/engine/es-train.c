/* es-train.c: the engine's training and inference runners over a backend. One batch
 * at a time; epochs and datasets are core's business. The trainer also slims models
 * while they train: pruning masks held through the optimizer steps, quantization-aware
 * training (fake quantization with a straight-through estimator) and knowledge
 * distillation from a teacher run beside the student, all through backend ops. When
 * asked, it times each training batch by stage and layer (profiling).
 *
 * Dimension key: B = micro-batch rows, D = input floats per row, F_i = output floats
 * per row of layer i, P = trainable parameters, Q = buffers (running statistics).
 *
 * Memory is planned: every allocation is made once in es_trainer_new, charged to the
 * backend's budget by kind; the backward pass reuses two gradient buffers (ping-pong)
 * instead of keeping one per layer. A final Softmax (with cross-entropy) or Sigmoid
 * (with binary cross-entropy) is fused into the loss while training. */
#include "es-train.h"
#include "es-infer-private.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Execution record of one layer. */
typedef struct {
  const EsLayerInfo *info;
  float   *w, *b;            /* into params (device); NULL without */
  float   *dw, *db;          /* into grads */
  float   *running;          /* BatchNorm: running mean (CH) then var (CH), in the buffers block */
  float   *out;              /* (B, F_i) activations, or an alias of the input */
  float   *own;              /* the layer's own output allocation, when it has one */
  int32_t *argmax;           /* MaxPool: (B, F_i) */
  uint8_t *mask;             /* Dropout: (B, F_i) */
  float   *bn_mean, *bn_rstd;/* BatchNorm: (CH) saved for backward */

  /* quantization-aware training (Dense, Conv2D) */
  bool     qat;              /* weights and input fake-quantized */
  float   *wq;               /* (OUT, IN) or (OC, C*K*K) fake-quantized weights */
  float   *qin;              /* (B, in floats) fake-quantized input */
  uint64_t wq_gen;           /* the parameter generation wq was made from */
  bool     q_tracked;        /* q_lo, q_hi hold a range */
  float    q_lo, q_hi;       /* the tracked input range */
  bool     q_tracked_saved;  /* the range before the current batch */
  float    q_lo_saved, q_hi_saved;
  float    q_use_lo, q_use_hi; /* the range the last forward quantized over */
} Exec;

/* Device allocations, kept to be freed together. */
typedef struct {
  struct { void *ptr; EsMemKind kind; size_t bytes; } *items;
  int n, cap;
} AllocList;

/* The teacher of distillation: its parameters on the device and an inference-only
 * execution list whose outputs alternate between two buffers. */
typedef struct {
  const EsModel *model;
  Exec          *exec;        /* (n_layers) */
  int            n_exec;      /* layers run: a final Softmax is skipped (logits) */
  float         *params;      /* (P_teacher) */
  float         *buffers;     /* (Q_teacher) */
  float         *bufA, *bufB; /* (B, widest output) ping-pong */
  int32_t       *argmax;      /* (B, widest MaxPool output) */
  float         *soft_s;      /* (B, F_out) softmax(student / T) */
  float         *soft_t;      /* (B, F_out) softmax(teacher / T) */
  float          temp, alpha;
  AllocList      allocs;
} Teacher;

/* Exponential moving average of the QAT input ranges: range = m range + (1 - m) batch. */
#define QAT_RANGE_MOMENTUM 0.99f

struct EsTrainer {
  EsModel       *model;
  EsBackend     *be;
  EsTrainConfig  cfg;
  int            batch;       /* rows per batch the caller sends */
  int            micro;       /* rows per forward/backward */
  int            n_exec;      /* layers run while training (a fused last layer excluded) */
  bool           fused_last;  /* the model's last layer is folded into the loss */
  int            first_grad;  /* layers <= this do not need dinp */
  int64_t        D, F_out;

  float   *params;            /* (P) */
  float   *grads;             /* (P) */
  float   *opt_m, *opt_v;     /* (P) Adam moments, or opt_m = SGD velocity */
  float   *buffers;           /* (Q) */
  float   *x;                 /* (B, D) */
  int32_t *labels;            /* (B) */
  float   *targets;           /* (B, F_out) */
  float   *probs;             /* (B, F_out) loss output */
  float   *losses;            /* (B) */
  float   *dA, *dB;           /* (B, max F) gradient ping-pong */
  Exec    *exec;              /* (n_layers) */

  int      accum_done;        /* batches accumulated since the last step */
  int64_t  steps;             /* optimizer steps */
  float    lr;                /* current learning rate */

  uint8_t *mask;              /* (P) pruning mask on the device, or NULL */
  bool     mask_on;
  bool     qat_on;            /* some layer has exec[i].qat */
  int      qmax;              /* QAT activation codes 0..qmax */
  uint64_t param_gen;         /* bumped whenever params change */
  Teacher *teacher;           /* distillation, or NULL */

  AllocList allocs;           /* every allocation but the teacher's, for free */
  float   *buffers_saved;     /* (Q) running statistics before the current batch */
  int      min_micro;         /* smallest micro-batch the model trains correctly with */
  int      r0;                /* first row of the current micro-batch, for dropout seeds */

  /* data-parallel gradient reduction (es_trainer_set_grad_reduce) */
  EsGradBucketFunc grad_bucket;
  EsGradFinishFunc grad_finish;
  void    *grad_user;
  bool     grad_last;         /* this backward completes the step's gradients */
  int64_t  step_rows;         /* rows of the batches since the last optimizer step */

  /* profiling (es_trainer_set_profiling) */
  bool     prof_on;
  bool     prof_active;       /* inside a timed training batch */
  double   prof_t;            /* es_now of the last reading */
  EsProfile prof;
  EsLayerProfile *prof_layers;/* (n_layers) */
  EsProfileEventFunc prof_func;
  void    *prof_user;
};

/* ------------------------------------------------------------------------------ */
/* names */

static const char *const loss_names[] = { "softmax_cross_entropy", "binary_cross_entropy", "mse" };
static const char *const opt_names[] = { "sgd", "momentum", "nesterov", "adam", "adamw" };
static const char *const lr_names[] = { "constant", "step", "cosine" };
static const char *const stage_names[] = { "load", "forward", "loss", "metrics", "backward",
                                           "optimizer" };

static bool
lookup_name (const char *const *names, int n, const char *name, int *out)
{
  if (name == NULL)
    return false;
  for (int i = 0; i < n; i++)
    if (strcasecmp (names[i], name) == 0)
      {
        *out = i;
        return true;
      }
  return false;
}

const char *
es_loss_kind_name (EsLossKind kind)
{
  return (unsigned) kind < ES_N_ELEMENTS (loss_names) ? loss_names[kind] : "unknown";
}

bool
es_loss_kind_from_name (const char *name, EsLossKind *kind)
{
  int i;

  if (name != NULL && (strcasecmp (name, "cross_entropy") == 0
                       || strcasecmp (name, "sparse_categorical_crossentropy") == 0))
    name = "softmax_cross_entropy";
  if (name != NULL && strcasecmp (name, "bce") == 0)
    name = "binary_cross_entropy";
  if (!lookup_name (loss_names, ES_N_ELEMENTS (loss_names), name, &i))
    return false;
  *kind = (EsLossKind) i;
  return true;
}

const char *
es_opt_kind_name (EsOptKind kind)
{
  return (unsigned) kind < ES_N_ELEMENTS (opt_names) ? opt_names[kind] : "unknown";
}

bool
es_opt_kind_from_name (const char *name, EsOptKind *kind)
{
  int i;

  if (!lookup_name (opt_names, ES_N_ELEMENTS (opt_names), name, &i))
    return false;
  *kind = (EsOptKind) i;
  return true;
}

const char *
es_lr_schedule_name (EsLrSchedule s)
{
  return (unsigned) s < ES_N_ELEMENTS (lr_names) ? lr_names[s] : "unknown";
}

bool
es_lr_schedule_from_name (const char *name, EsLrSchedule *s)
{
  int i;

  if (!lookup_name (lr_names, ES_N_ELEMENTS (lr_names), name, &i))
    return false;
  *s = (EsLrSchedule) i;
  return true;
}

void
es_train_config_default (EsTrainConfig *cfg)
{
  memset (cfg, 0, sizeof *cfg);
  cfg->loss = ES_LOSS_SOFTMAX_XENT;
  cfg->optimizer = ES_OPT_ADAM;
  cfg->lr = 1e-3f;
  cfg->momentum = 0.9f;
  cfg->beta1 = 0.9f;
  cfg->beta2 = 0.999f;
  cfg->eps = 1e-7f;
  cfg->weight_decay = 0.01f;
  cfg->accum_steps = 1;
  cfg->schedule = ES_LR_CONSTANT;
  cfg->step_size = 1000;
  cfg->gamma = 0.1f;
}

/* ------------------------------------------------------------------------------ */
/* planning */

static bool
last_is_fused (const EsModel *model, EsLossKind loss)
{
  EsLayerKind k = es_model_layer (model, es_model_n_layers (model) - 1)->spec.kind;

  return (loss == ES_LOSS_SOFTMAX_XENT && k == ES_LAYER_SOFTMAX)
         || (loss == ES_LOSS_BCE && k == ES_LAYER_SIGMOID);
}

static int
optimizer_slots (EsOptKind opt)
{
  switch (opt)
    {
    case ES_OPT_SGD: return 0;
    case ES_OPT_MOMENTUM:
    case ES_OPT_NESTEROV: return 1;
    default: return 2;
    }
}

/* Bytes of per-layer activations and their side records for B rows. */
static size_t
activation_bytes (const EsModel *model, int B, bool training)
{
  size_t bytes = 0;
  int64_t max_act = es_model_max_act (model);

  if (!training)
    {
      /* EsInfer: two buffers as wide as the widest layer that writes, and MaxPool's
       * indices. */
      size_t widest = 1, argmax = 0;

      for (int i = 0; i < es_model_n_layers (model); i++)
        {
          const EsLayerInfo *l = es_model_layer (model, i);

          if (!es_infer_identity (l->spec.kind))
            widest = ES_MAX (widest, (size_t) l->out_floats);
          if (l->spec.kind == ES_LAYER_MAXPOOL2D)
            argmax = ES_MAX (argmax, (size_t) l->out_floats);
        }
      return (size_t) B * (2 * widest * sizeof (float) + argmax * sizeof (int32_t));
    }
  for (int i = 0; i < es_model_n_layers (model); i++)
    {
      const EsLayerInfo *l = es_model_layer (model, i);
      size_t n = (size_t) B * (size_t) l->out_floats;

      if (l->spec.kind == ES_LAYER_FLATTEN)
        continue;
      bytes += n * sizeof (float);
      if (l->spec.kind == ES_LAYER_MAXPOOL2D)
        bytes += n * sizeof (int32_t);
      else if (l->spec.kind == ES_LAYER_DROPOUT)
        bytes += n;
      else if (l->spec.kind == ES_LAYER_BATCHNORM)
        bytes += 2 * (size_t) l->in.dims[0] * sizeof (float);
    }
  /* gradient ping-pong, loss probabilities and per-row losses */
  bytes += 2 * (size_t) B * (size_t) max_act * sizeof (float);
  return bytes;
}

/* What the trainer allocates for the features cfg plans for: the mask (P bytes), per
 * fake-quantized layer its weights and a batch of its input, and the teacher's
 * parameters, its two activation buffers and the softened probabilities (2 B F). */
static void
plan_slimming (const EsModel *model, const EsTrainConfig *cfg, int batch, EsMemPlan *plan)
{
  if (cfg->plan_mask)
    plan->weights += (size_t) es_model_n_params (model);
  if (cfg->plan_fake_quant)
    for (int i = 0; i < es_model_n_layers (model); i++)
      {
        const EsLayerInfo *l = es_model_layer (model, i);

        if (l->spec.kind == ES_LAYER_DENSE || l->spec.kind == ES_LAYER_CONV2D)
          {
            plan->weights += (size_t) es_model_tensor (model, l->first_tensor)->size
                             * sizeof (float);
            plan->activations += (size_t) batch * (size_t) es_shape_size (&l->in) * sizeof (float);
          }
      }
  if (cfg->plan_teacher != NULL)
    {
      const EsModel *t = cfg->plan_teacher;
      EsShape out = es_model_output_shape (model);

      plan->weights += (size_t) (es_model_n_params (t) + es_model_n_buffers (t)) * sizeof (float);
      plan->activations += activation_bytes (t, batch, false)
                           + 2 * (size_t) batch * (size_t) es_shape_size (&out) * sizeof (float);
    }
}

void
es_mem_plan (const EsModel *model, const EsTrainConfig *cfg, int batch, bool training,
             EsMemPlan *plan)
{
  EsShape out = es_model_output_shape (model);
  EsShape in = es_model_input_shape (model);
  size_t P = (size_t) es_model_n_params (model), Q = (size_t) es_model_n_buffers (model);
  size_t F = (size_t) es_shape_size (&out), D = (size_t) es_shape_size (&in);

  memset (plan, 0, sizeof *plan);
  plan->weights = (P + Q) * sizeof (float);
  if (training)
    {
      plan->gradients = P * sizeof (float);
      plan->optimizer = (size_t) optimizer_slots (cfg->optimizer) * P * sizeof (float);
    }
  plan->activations = activation_bytes (model, batch, training);
  if (training)
    plan->activations += (size_t) batch * (F + 1) * sizeof (float);
  plan->data = (size_t) batch * (D + F) * sizeof (float) + (size_t) batch * sizeof (int32_t);
  /* Convolutions run as im2col + GEMM: one image's columns (C*K*K, OH*OW) and, while
   * training, a private weight-gradient partial, per compute thread (one counted here). */
  for (int i = 0; i < es_model_n_layers (model); i++)
    {
      const EsLayerInfo *l = es_model_layer (model, i);

      if (l->spec.kind == ES_LAYER_CONV2D)
        {
          size_t ckk = (size_t) l->in.dims[0] * (size_t) l->spec.kernel * (size_t) l->spec.kernel;
          size_t cols = ckk * (size_t) l->out.dims[1] * (size_t) l->out.dims[2];
          size_t ws = (cols + (training ? ckk * (size_t) l->spec.filters : 0)) * sizeof (float);

          plan->workspace = ES_MAX (plan->workspace, ws);
        }
    }
  if (training)
    plan_slimming (model, cfg, batch, plan);
  plan->total = plan->weights + plan->gradients + plan->optimizer + plan->activations
                + plan->workspace + plan->data;
}

/* ------------------------------------------------------------------------------ */
/* trainer */

/* Backend memory recorded in list l. */
static void *
list_alloc (EsBackend *be, AllocList *l, EsMemKind kind, size_t bytes, EsError *err)
{
  void *p;

  if (bytes == 0)
    bytes = 64;
  if (l->n == l->cap)
    {
      int cap = l->cap ? 2 * l->cap : 32;
      void *grown = realloc (l->items, (size_t) cap * sizeof *l->items);

      if (grown == NULL)
        {
          es_error_set (err, ES_ERR_NOMEM, "Out of memory planning the trainer");
          return NULL;
        }
      l->items = grown;
      l->cap = cap;
    }
  p = be->iface->alloc (be, kind, bytes, err);
  if (p == NULL)
    return NULL;
  l->items[l->n].ptr = p;
  l->items[l->n].kind = kind;
  l->items[l->n].bytes = bytes;
  l->n++;
  return p;
}

/* Frees everything in l, newest first; l stays usable. */
static void
list_release (EsBackend *be, AllocList *l)
{
  for (int i = l->n - 1; i >= 0; i--)
    be->iface->free (be, l->items[i].kind, l->items[i].ptr, l->items[i].bytes);
  l->n = 0;
}

static void *
tr_alloc (EsTrainer *tr, EsMemKind kind, size_t bytes, EsError *err)
{
  return list_alloc (tr->be, &tr->allocs, kind, bytes, err);
}

static void
tr_release_all (EsTrainer *tr)
{
  list_release (tr->be, &tr->allocs);
}

/* Point e's parameter, gradient and running-statistics fields into the blocks (grads
 * may be NULL: inference). */
static void
exec_bind (Exec *e, const EsModel *m, float *params, float *grads, float *buffers)
{
  const EsLayerInfo *l = e->info;
  const EsTensorInfo *tw, *tb;

  if (l->n_tensors == 0)
    return;
  tw = es_model_tensor (m, l->first_tensor);
  tb = es_model_tensor (m, l->first_tensor + 1);
  e->w = params + tw->offset;
  e->b = params + tb->offset;
  if (grads != NULL)
    {
      e->dw = grads + tw->offset;
      e->db = grads + tb->offset;
    }
  if (l->spec.kind == ES_LAYER_BATCHNORM)
    e->running = buffers + es_model_tensor (m, l->first_tensor + 2)->offset;
}

static bool
tr_allocate (EsTrainer *tr, EsError *err)
{
  EsModel *m = tr->model;
  size_t B = (size_t) tr->micro;
  size_t P = (size_t) es_model_n_params (m), Q = (size_t) es_model_n_buffers (m);
  int64_t max_act = es_model_max_act (m);
  int slots = optimizer_slots (tr->cfg.optimizer);
  float *prev;

#define ALLOC(dst, kind, bytes) \
  do { if (((dst) = tr_alloc (tr, kind, bytes, err)) == NULL) return false; } while (0)

  ALLOC (tr->params, ES_MEM_WEIGHTS, P * sizeof (float));
  ALLOC (tr->buffers, ES_MEM_WEIGHTS, Q * sizeof (float));
  if (Q > 0)
    ALLOC (tr->buffers_saved, ES_MEM_WEIGHTS, Q * sizeof (float));
  ALLOC (tr->grads, ES_MEM_GRADIENTS, P * sizeof (float));
  if (slots >= 1)
    ALLOC (tr->opt_m, ES_MEM_OPTIMIZER, P * sizeof (float));
  if (slots >= 2)
    ALLOC (tr->opt_v, ES_MEM_OPTIMIZER, P * sizeof (float));
  ALLOC (tr->x, ES_MEM_DATA, B * (size_t) tr->D * sizeof (float));
  ALLOC (tr->labels, ES_MEM_DATA, B * sizeof (int32_t));
  ALLOC (tr->targets, ES_MEM_DATA, B * (size_t) tr->F_out * sizeof (float));
  ALLOC (tr->probs, ES_MEM_ACTIVATIONS, B * (size_t) tr->F_out * sizeof (float));
  ALLOC (tr->losses, ES_MEM_ACTIVATIONS, B * sizeof (float));
  ALLOC (tr->dA, ES_MEM_ACTIVATIONS, B * (size_t) max_act * sizeof (float));
  ALLOC (tr->dB, ES_MEM_ACTIVATIONS, B * (size_t) max_act * sizeof (float));

  prev = tr->x;
  for (int i = 0; i < es_model_n_layers (m); i++)
    {
      Exec *e = &tr->exec[i];
      const EsLayerInfo *l = e->info;
      size_t n = B * (size_t) l->out_floats;

      if (l->spec.kind == ES_LAYER_FLATTEN)
        {
          e->out = prev;
        }
      else if (i == es_model_n_layers (m) - 1 && tr->fused_last)
        e->out = tr->probs;
      else
        {
          ALLOC (e->own, ES_MEM_ACTIVATIONS, n * sizeof (float));
          e->out = e->own;
        }
      if (l->spec.kind == ES_LAYER_MAXPOOL2D)
        ALLOC (e->argmax, ES_MEM_ACTIVATIONS, n * sizeof (int32_t));
      if (l->spec.kind == ES_LAYER_DROPOUT)
        ALLOC (e->mask, ES_MEM_ACTIVATIONS, n);
      if (l->spec.kind == ES_LAYER_BATCHNORM)
        {
          ALLOC (e->bn_mean, ES_MEM_ACTIVATIONS, (size_t) l->in.dims[0] * sizeof (float));
          ALLOC (e->bn_rstd, ES_MEM_ACTIVATIONS, (size_t) l->in.dims[0] * sizeof (float));
        }
      exec_bind (e, m, tr->params, tr->grads, tr->buffers);
      prev = e->out;
    }
#undef ALLOC
  return true;
}

/* The backend op that runs a layer kind. */
static EsOp
layer_op (EsLayerKind k)
{
  switch (k)
    {
    case ES_LAYER_DENSE: return ES_OP_DENSE;
    case ES_LAYER_CONV2D: return ES_OP_CONV2D;
    case ES_LAYER_MAXPOOL2D: return ES_OP_MAXPOOL2D;
    case ES_LAYER_AVGPOOL2D: return ES_OP_AVGPOOL2D;
    case ES_LAYER_RELU: return ES_OP_RELU;
    case ES_LAYER_LEAKY_RELU: return ES_OP_LEAKY_RELU;
    case ES_LAYER_SIGMOID: return ES_OP_SIGMOID;
    case ES_LAYER_TANH: return ES_OP_TANH;
    case ES_LAYER_SOFTMAX: return ES_OP_SOFTMAX;
    case ES_LAYER_DROPOUT: return ES_OP_DROPOUT;
    case ES_LAYER_BATCHNORM: return ES_OP_BATCHNORM;
    default: return ES_OP_N_OPS;  /* Flatten: no op */
    }
}

/* Ask the backend for every op the model (and, training, its loss and optimizer)
 * needs, so a missing one is an error naming the layer, not a crash mid-run. */
static bool
check_supported (const EsModel *model, EsBackend *be, const EsTrainConfig *cfg, EsError *err)
{
  for (int i = 0; i < es_model_n_layers (model); i++)
    {
      EsLayerKind k = es_model_layer (model, i)->spec.kind;
      EsOp op = layer_op (k);

      if (op != ES_OP_N_OPS && !be->iface->supports_op (be, op))
        {
          es_error_set (err, ES_ERR_UNSUPPORTED, "The %s backend cannot run layer %d (%s)",
                        be->iface->name, i + 1, es_layer_kind_title (k));
          return false;
        }
    }
  if (cfg != NULL)
    {
      EsOp loss = cfg->loss == ES_LOSS_SOFTMAX_XENT ? ES_OP_SOFTMAX_XENT
                  : cfg->loss == ES_LOSS_BCE ? ES_OP_BCE : ES_OP_MSE;
      EsOp opt = cfg->optimizer >= ES_OPT_ADAM ? ES_OP_ADAM : ES_OP_SGD;

      if (!be->iface->supports_op (be, loss) || !be->iface->supports_op (be, opt))
        {
          es_error_set (err, ES_ERR_UNSUPPORTED, "The %s backend cannot run the %s loss with %s",
                        be->iface->name, es_loss_kind_name (cfg->loss),
                        es_opt_kind_name (cfg->optimizer));
          return false;
        }
    }
  return true;
}

EsTrainer *
es_trainer_new (EsModel *model, EsBackend *be, const EsTrainConfig *cfg, int batch,
                EsError *err)
{
  EsTrainer *tr;
  EsShape in = es_model_input_shape (model), out = es_model_output_shape (model);
  int accum = cfg->accum_steps > 0 ? cfg->accum_steps : 1;

  if (batch <= 0)
    {
      es_error_set (err, ES_ERR_INVALID, "The batch size must be at least 1 (got %d)", batch);
      return NULL;
    }
  if (!(cfg->lr > 0.0f) || !isfinite (cfg->lr))
    {
      es_error_set (err, ES_ERR_INVALID, "The learning rate must be positive (got %g)", cfg->lr);
      return NULL;
    }
  if (cfg->loss == ES_LOSS_SOFTMAX_XENT && out.rank != 1)
    {
      es_error_set (err, ES_ERR_SHAPE, "Cross-entropy needs a flat output (classes); add Flatten and Dense");
      return NULL;
    }

  {
    EsLayerKind last = es_model_layer (model, es_model_n_layers (model) - 1)->spec.kind;

    /* The loss reads logits; a final layer that squashes them for the other loss would
     * be applied twice. */
    if ((cfg->loss == ES_LOSS_SOFTMAX_XENT && last == ES_LAYER_SIGMOID)
        || (cfg->loss == ES_LOSS_BCE && last == ES_LAYER_SOFTMAX))
      {
        es_error_set (err, ES_ERR_INVALID,
                      "A final %s does not go with the %s loss: use Softmax with cross-entropy "
                      "and Sigmoid with binary cross-entropy",
                      es_layer_kind_title (last), es_loss_kind_name (cfg->loss));
        return NULL;
      }
  }
  if (!check_supported (model, be, cfg, err))
    return NULL;

  tr = calloc (1, sizeof *tr);
  if (tr == NULL || (tr->exec = calloc ((size_t) es_model_n_layers (model), sizeof *tr->exec)) == NULL
      || (tr->prof_layers = calloc ((size_t) es_model_n_layers (model), sizeof *tr->prof_layers)) == NULL)
    {
      free (tr);
      es_error_set (err, ES_ERR_NOMEM, "Out of memory creating the trainer");
      return NULL;
    }
  tr->model = model;
  tr->be = be;
  tr->cfg = *cfg;
  tr->cfg.accum_steps = accum;
  tr->batch = batch;
  tr->D = es_shape_size (&in);
  tr->F_out = es_shape_size (&out);
  tr->fused_last = last_is_fused (model, cfg->loss);
  tr->n_exec = es_model_n_layers (model) - (tr->fused_last ? 1 : 0);
  tr->lr = cfg->lr;
  tr->qmax = 255;
  tr->param_gen = 1;
  tr->first_grad = -1;
  for (int i = 0; i < es_model_n_layers (model); i++)
    {
      tr->exec[i].info = es_model_layer (model, i);
      if (tr->first_grad < 0 && tr->exec[i].info->n_params > 0)
        tr->first_grad = i;
    }
  if (tr->first_grad < 0)
    tr->first_grad = es_model_n_layers (model);
  /* BatchNorm normalizes with the statistics of each micro-batch: a tiny one (one row
   * has no variance) would change what the layer learns, so halving stops here. */
  tr->min_micro = 1;
  for (int i = 0; i < es_model_n_layers (model); i++)
    if (es_model_layer (model, i)->spec.kind == ES_LAYER_BATCHNORM)
      tr->min_micro = ES_MIN (batch, 16);

  /* Halve the micro-batch until the plan fits what is left of the budget. */
  tr->micro = batch;
  if (be->budget != NULL && es_budget_limit (be->budget) > 0)
    {
      size_t avail = es_budget_limit (be->budget) - ES_MIN (es_budget_limit (be->budget),
                                                            es_budget_used (be->budget));
      EsMemPlan plan;

      for (;;)
        {
          size_t need;

          es_mem_plan (model, &tr->cfg, tr->micro, true, &plan);
          /* the plan counts one thread's convolution workspace; 10% slack besides */
          need = plan.total + plan.workspace * (size_t) ES_MAX (be->n_threads - 1, 0);
          if (need + need / 10 <= avail || (tr->micro + 1) / 2 < tr->min_micro || tr->micro == 1)
            break;
          tr->micro = (tr->micro + 1) / 2;
        }
    }

  for (;;)
    {
      EsError local = { 0 };

      if (tr_allocate (tr, &local))
        break;
      tr_release_all (tr);
      memset (tr->exec, 0, (size_t) es_model_n_layers (model) * sizeof *tr->exec);
      for (int i = 0; i < es_model_n_layers (model); i++)
        tr->exec[i].info = es_model_layer (model, i);
      if (local.code != ES_ERR_BUDGET || tr->micro == 1 || (tr->micro + 1) / 2 < tr->min_micro)
        {
          if (local.code == ES_ERR_BUDGET && tr->min_micro > 1)
            {
              char why[sizeof local.message];

              memcpy (why, local.message, sizeof why);
              es_error_set (&local, ES_ERR_BUDGET,
                            "%s; the model has BatchNorm, which needs micro-batches of at "
                            "least %d rows: raise the memory limit", why, tr->min_micro);
            }
          if (err != NULL)
            *err = local;
          es_trainer_free (tr);
          return NULL;
        }
      tr->micro = (tr->micro + 1) / 2;
    }
  es_trainer_reload (tr, true);
  return tr;
}

static void teacher_free (EsTrainer *tr);

void
es_trainer_free (EsTrainer *tr)
{
  if (tr == NULL)
    return;
  teacher_free (tr);
  tr_release_all (tr);
  free (tr->exec);
  free (tr->prof_layers);
  free (tr->allocs.items);
  free (tr);
}

int
es_trainer_micro_batch (const EsTrainer *tr)
{
  return tr->micro;
}

int
es_trainer_accum_steps (const EsTrainer *tr)
{
  return tr->cfg.accum_steps * ES_CEIL_DIV (tr->batch, tr->micro);
}

int64_t
es_trainer_step_count (const EsTrainer *tr)
{
  return tr->steps;
}

float
es_trainer_current_lr (const EsTrainer *tr)
{
  return tr->lr;
}

void
es_trainer_set_lr (EsTrainer *tr, float lr)
{
  tr->cfg.lr = lr;
  tr->lr = lr;
}

void
es_trainer_sync (EsTrainer *tr)
{
  const EsBackendIface *b = tr->be->iface;

  b->download (tr->be, es_model_params (tr->model), tr->params,
               (size_t) es_model_n_params (tr->model) * sizeof (float));
  b->download (tr->be, es_model_buffers (tr->model), tr->buffers,
               (size_t) es_model_n_buffers (tr->model) * sizeof (float));
}

void
es_trainer_reload (EsTrainer *tr, bool reset_optimizer)
{
  const EsBackendIface *b = tr->be->iface;
  size_t P = (size_t) es_model_n_params (tr->model) * sizeof (float);

  b->upload (tr->be, tr->params, es_model_params (tr->model), P);
  b->upload (tr->be, tr->buffers, es_model_buffers (tr->model),
             (size_t) es_model_n_buffers (tr->model) * sizeof (float));
  if (tr->mask_on)
    b->mask_apply (tr->be, tr->params, tr->mask, es_model_n_params (tr->model));
  tr->param_gen++;
  b->zero (tr->be, tr->grads, P);
  tr->accum_done = 0;
  if (reset_optimizer)
    {
      if (tr->opt_m != NULL)
        b->zero (tr->be, tr->opt_m, P);
      if (tr->opt_v != NULL)
        b->zero (tr->be, tr->opt_v, P);
      tr->steps = 0;
    }
}

/* The learning rate for optimizer step `step` (0-based). */
static float
scheduled_lr (const EsTrainConfig *cfg, int64_t step)
{
  double lr = cfg->lr;

  switch (cfg->schedule)
    {
    case ES_LR_STEP:
      if (cfg->step_size > 0)
        lr *= pow (cfg->gamma, (double) (step / cfg->step_size));
      break;
    case ES_LR_COSINE:
      if (cfg->total_steps > 0)
        {
          double t = ES_MIN ((double) step / (double) cfg->total_steps, 1.0);
          lr = cfg->min_lr + 0.5 * (cfg->lr - cfg->min_lr) * (1.0 + cos (M_PI * t));
        }
      break;
    default:
      break;
    }
  if (cfg->warmup_steps > 0 && step < cfg->warmup_steps)
    lr *= (double) (step + 1) / (double) cfg->warmup_steps;
  return (float) lr;
}

/* Profiling: the time since the last reading goes to stage (and to layer's forward or
 * backward when layer >= 0). Call only while tr->prof_active. */
static void
prof_mark (EsTrainer *tr, EsStage stage, int layer)
{
  double now, dt;

  if (tr->be->iface->synchronize != NULL)
    tr->be->iface->synchronize (tr->be);
  now = es_now ();
  dt = now - tr->prof_t;
  tr->prof.stage_s[stage] += dt;
  if (layer >= 0)
    {
      if (stage == ES_STAGE_BACKWARD)
        tr->prof_layers[layer].backward_s += dt;
      else
        tr->prof_layers[layer].forward_s += dt;
    }
  if (tr->prof_func != NULL)
    tr->prof_func (tr->prof_user, stage, layer, tr->prof_t, now);
  tr->prof_t = now;
}

/* Copy rows [r0, r0+B) of the batch to the device input and labels. */
static void
load_rows (EsTrainer *tr, const EsBatch *batch, int r0, int B)
{
  const EsBackendIface *b = tr->be->iface;
  size_t D = (size_t) tr->D;

  if (batch->x_u8 != NULL)
    b->load_u8 (tr->be, tr->x, batch->x_u8 + (size_t) r0 * D, batch->scale, batch->shift,
                (int64_t) B * (int64_t) D);
  else
    b->upload (tr->be, tr->x, batch->x_f32 + (size_t) r0 * D, (size_t) B * D * sizeof (float));
  if (batch->labels != NULL)
    b->upload (tr->be, tr->labels, batch->labels + r0, (size_t) B * sizeof (int32_t));
  if (batch->targets != NULL)
    b->upload (tr->be, tr->targets, batch->targets + (size_t) r0 * (size_t) tr->F_out,
               (size_t) B * (size_t) tr->F_out * sizeof (float));
}

static EsOp
act_op (EsLayerKind k)
{
  switch (k)
    {
    case ES_LAYER_RELU: return ES_OP_RELU;
    case ES_LAYER_LEAKY_RELU: return ES_OP_LEAKY_RELU;
    case ES_LAYER_SIGMOID: return ES_OP_SIGMOID;
    default: return ES_OP_TANH;
    }
}

/* QAT: layer e's input inp (N) fake-quantized into e->qin. Training first folds this
 * batch's range into the tracked one; evaluation uses the tracked range as it is, or
 * the batch's own while none is tracked. */
static const float *
qat_input (EsTrainer *tr, Exec *e, const float *inp, int64_t N, bool train)
{
  EsBackend *be = tr->be;
  float lo = e->q_lo, hi = e->q_hi;

  if (train || !e->q_tracked)
    {
      float blo, bhi;

      be->iface->min_max (be, &blo, &bhi, inp, N);
      if (train && blo <= bhi)  /* not all NaN */
        {
          if (!e->q_tracked)
            {
              e->q_lo = blo;
              e->q_hi = bhi;
              e->q_tracked = true;
            }
          else
            {
              e->q_lo = QAT_RANGE_MOMENTUM * e->q_lo + (1.0f - QAT_RANGE_MOMENTUM) * blo;
              e->q_hi = QAT_RANGE_MOMENTUM * e->q_hi + (1.0f - QAT_RANGE_MOMENTUM) * bhi;
            }
        }
      lo = e->q_tracked ? e->q_lo : blo;
      hi = e->q_tracked ? e->q_hi : bhi;
    }
  if (!(lo <= hi))
    lo = hi = 0.0f;
  e->q_use_lo = lo;
  e->q_use_hi = hi;
  be->iface->fake_quant_act (be, e->qin, inp, lo, hi, tr->qmax, N);
  return e->qin;
}

/* QAT: e->wq = e->w (rows, cols) fake-quantized, redone only after the parameters
 * changed (micro-batches of one step and evaluations share it). */
static const float *
qat_weights (EsTrainer *tr, Exec *e, int rows, int cols)
{
  if (e->wq_gen != tr->param_gen)
    {
      tr->be->iface->fake_quant_weights (tr->be, e->wq, e->w, rows, cols);
      e->wq_gen = tr->param_gen;
    }
  return e->wq;
}

/* Forward layers [0, n) of exec on B rows of x; train selects dropout, batch
 * statistics and the update of QAT ranges. */
static void
forward_exec (EsTrainer *tr, Exec *exec, int n, const float *x, int B, bool train)
{
  EsBackend *be = tr->be;
  const EsBackendIface *b = be->iface;
  const float *inp = x;

  for (int i = 0; i < n; i++)
    {
      Exec *e = &exec[i];
      const EsLayerSpec *s = &e->info->spec;
      const EsShape *is = &e->info->in;
      int64_t N = (int64_t) B * e->info->out_floats;
      const float *w = e->w;

      switch (s->kind)
        {
        case ES_LAYER_DENSE:
          if (e->qat)
            {
              inp = qat_input (tr, e, inp, (int64_t) B * is->dims[0], train);
              w = qat_weights (tr, e, s->units, is->dims[0]);
            }
          b->dense_forward (be, e->out, inp, w, e->b, B, is->dims[0], s->units);
          break;
        case ES_LAYER_CONV2D:
          if (e->qat)
            {
              inp = qat_input (tr, e, inp, (int64_t) B * es_shape_size (is), train);
              w = qat_weights (tr, e, s->filters, is->dims[0] * s->kernel * s->kernel);
            }
          b->conv2d_forward (be, e->out, inp, w, e->b, B, is->dims[0], is->dims[1],
                             is->dims[2], s->filters, s->kernel, s->stride, s->padding);
          break;
        case ES_LAYER_MAXPOOL2D:
          b->maxpool2d_forward (be, e->out, e->argmax, inp, B, is->dims[0], is->dims[1],
                                is->dims[2], s->kernel, s->stride);
          break;
        case ES_LAYER_AVGPOOL2D:
          b->avgpool2d_forward (be, e->out, inp, B, is->dims[0], is->dims[1], is->dims[2],
                                s->kernel, s->stride);
          break;
        case ES_LAYER_FLATTEN:
          e->out = (float *) inp;
          break;
        case ES_LAYER_RELU:
        case ES_LAYER_LEAKY_RELU:
        case ES_LAYER_SIGMOID:
        case ES_LAYER_TANH:
          b->act_forward (be, act_op (s->kind), e->out, inp, s->alpha, N);
          break;
        case ES_LAYER_SOFTMAX:
          b->softmax_forward (be, e->out, inp, B, (int) e->info->out_floats);
          break;
        case ES_LAYER_DROPOUT:
          /* identity unless training: the layer then reads through to its input */
          e->out = (train && s->rate > 0.0f) ? e->own : (float *) inp;
          if (e->out == e->own)
            b->dropout_forward (be, e->out, e->mask, inp, s->rate,
                                tr->cfg.seed ^ es_hash64 ((uint64_t) tr->steps * 1315423911u
                                                          + (uint64_t) tr->accum_done * 7919u
                                                          + (uint64_t) tr->r0 * 104729u
                                                          + (uint64_t) i),
                                N);
          break;
        case ES_LAYER_BATCHNORM:
          {
            int CH = is->dims[0];
            int SP = (int) (e->info->out_floats / CH);
            const float *rm = e->running, *rv = e->running + CH;

            if (train)
              b->batchnorm_forward_train (be, e->out, e->bn_mean, e->bn_rstd, e->running,
                                          e->running + CH, inp, e->w, e->b, s->momentum,
                                          s->eps, B, CH, SP);
            else
              b->batchnorm_forward_infer (be, e->out, inp, e->w, e->b, rm, rv, s->eps, B, CH, SP);
          }
          break;
        default:
          break;
        }
      inp = e->out;
      if (tr->prof_active && exec == tr->exec)
        {
          prof_mark (tr, ES_STAGE_FORWARD, i);
          tr->prof_layers[i].forward_flops += e->info->flops * B;
          tr->prof_layers[i].forward_bytes += es_layer_bytes_moved (tr->model, i, B, false, false);
        }
    }
}

/* Forward the trainer's layers [0, n) on its input. */
static void
forward (EsTrainer *tr, int n, int B, bool train)
{
  forward_exec (tr, tr->exec, n, tr->x, B, train);
}

/* Backward from dlogits (in tr->dA) through layers [0, n). */
static void
backward (EsTrainer *tr, int n, int B)
{
  EsBackend *be = tr->be;
  const EsBackendIface *b = be->iface;
  float *dout = tr->dA, *spare = tr->dB;

  for (int i = n - 1; i >= 0 && i >= tr->first_grad; i--)
    {
      Exec *e = &tr->exec[i];
      const EsLayerSpec *s = &e->info->spec;
      const EsShape *is = &e->info->in;
      const float *inp = i > 0 ? tr->exec[i - 1].out : tr->x;
      float *dinp = i > tr->first_grad ? spare : NULL;
      int64_t N = (int64_t) B * e->info->out_floats;
      bool ran = true;

      switch (s->kind)
        {
        case ES_LAYER_DENSE:
          /* QAT: the float layer's gradients at the fake-quantized weights and input
           * (straight through the rounding), the input's zeroed outside its range */
          b->dense_backward (be, dinp, e->dw, e->db, dout, e->qat ? e->qin : inp,
                             e->qat ? e->wq : e->w, B, is->dims[0], s->units);
          if (e->qat && dinp != NULL)
            b->fake_quant_act_backward (be, dinp, dinp, inp, e->q_use_lo, e->q_use_hi,
                                        (int64_t) B * is->dims[0]);
          break;
        case ES_LAYER_CONV2D:
          b->conv2d_backward (be, dinp, e->dw, e->db, dout, e->qat ? e->qin : inp,
                              e->qat ? e->wq : e->w, B, is->dims[0], is->dims[1], is->dims[2],
                              s->filters, s->kernel, s->stride, s->padding);
          if (e->qat && dinp != NULL)
            b->fake_quant_act_backward (be, dinp, dinp, inp, e->q_use_lo, e->q_use_hi,
                                        (int64_t) B * es_shape_size (is));
          break;
        case ES_LAYER_MAXPOOL2D:
          b->maxpool2d_backward (be, dinp, dout, e->argmax, B, is->dims[0], is->dims[1],
                                 is->dims[2], s->kernel, s->stride);
          break;
        case ES_LAYER_AVGPOOL2D:
          b->avgpool2d_backward (be, dinp, dout, B, is->dims[0], is->dims[1], is->dims[2],
                                 s->kernel, s->stride);
          break;
        case ES_LAYER_FLATTEN:
          ran = false;  /* the gradient passes through unchanged */
          break;
        case ES_LAYER_RELU:
        case ES_LAYER_LEAKY_RELU:
        case ES_LAYER_SIGMOID:
        case ES_LAYER_TANH:
          b->act_backward (be, act_op (s->kind), dinp, dout, inp, e->out, s->alpha, N);
          break;
        case ES_LAYER_SOFTMAX:
          b->softmax_backward (be, dinp, dout, e->out, B, (int) e->info->out_floats);
          break;
        case ES_LAYER_DROPOUT:
          if (s->rate <= 0.0f)
            {
              ran = false;  /* it was an identity */
              break;
            }
          b->dropout_backward (be, dinp, dout, e->mask, s->rate, N);
          break;
        case ES_LAYER_BATCHNORM:
          {
            int CH = is->dims[0];

            b->batchnorm_backward (be, dinp, e->dw, e->db, dout, inp, e->w, e->bn_mean,
                                   e->bn_rstd, B, CH, (int) (e->info->out_floats / CH));
          }
          break;
        default:
          break;
        }
      if (tr->prof_active)
        {
          prof_mark (tr, ES_STAGE_BACKWARD, i);
          if (ran)
            {
              tr->prof_layers[i].backward_flops += e->info->flops * B * (dinp != NULL ? 2 : 1);
              tr->prof_layers[i].backward_bytes += es_layer_bytes_moved (tr->model, i, B, true,
                                                                         dinp != NULL);
            }
        }
      if (tr->grad_last && tr->grad_bucket != NULL && e->info->n_params > 0)
        tr->grad_bucket (tr->grad_user, be, tr->grads,
                         es_model_tensor (tr->model, e->info->first_tensor)->offset,
                         e->info->n_params);
      if (!ran)
        continue;
      if (dinp == NULL)
        break;
      spare = dout;
      dout = dinp;
    }
}

/* Loss forward on the model's output for B rows; returns the mean loss. For the
 * fused cases the loss reads the logits (the output of layer n_exec-1). */
static float
loss_forward (EsTrainer *tr, int B)
{
  EsBackend *be = tr->be;
  const EsBackendIface *b = be->iface;
  const float *logits = tr->n_exec > 0 ? tr->exec[tr->n_exec - 1].out : tr->x;
  int F = (int) tr->F_out;

  if (tr->teacher != NULL)
    {
      Teacher *t = tr->teacher;
      const float *tl;

      forward_exec (tr, t->exec, t->n_exec, tr->x, B, false);
      tl = t->n_exec > 0 ? t->exec[t->n_exec - 1].out : tr->x;
      return b->distill_forward (be, tr->probs, t->soft_s, t->soft_t, tr->losses, logits, tl,
                                 tr->labels, t->temp, t->alpha, B, F);
    }
  switch (tr->cfg.loss)
    {
    case ES_LOSS_SOFTMAX_XENT:
      return b->softmax_xent_forward (be, tr->probs, tr->losses, logits, tr->labels, B, F);
    case ES_LOSS_BCE:
      return b->bce_forward (be, tr->probs, tr->losses, logits, tr->targets, (int64_t) B * F);
    default:
      return b->mse_forward (be, tr->losses, logits, tr->targets, B, F);
    }
}

static void
loss_backward (EsTrainer *tr, int B, float scale)
{
  EsBackend *be = tr->be;
  const EsBackendIface *b = be->iface;
  const float *logits = tr->n_exec > 0 ? tr->exec[tr->n_exec - 1].out : tr->x;
  int F = (int) tr->F_out;

  if (tr->teacher != NULL)
    {
      const Teacher *t = tr->teacher;

      b->distill_backward (be, tr->dA, tr->probs, t->soft_s, t->soft_t, tr->labels, t->temp,
                           t->alpha, scale, B, F);
      return;
    }
  switch (tr->cfg.loss)
    {
    case ES_LOSS_SOFTMAX_XENT:
      b->softmax_xent_backward (be, tr->dA, tr->probs, tr->labels, scale, B, F);
      break;
    case ES_LOSS_BCE:
      b->bce_backward (be, tr->dA, tr->probs, tr->targets, scale, (int64_t) B * F);
      break;
    default:
      b->mse_backward (be, tr->dA, logits, tr->targets, scale, B, F);
      break;
    }
}

/* Rows of the current micro-batch whose prediction is right; pred (B) on the host. */
static int
count_correct (EsTrainer *tr, int B, const float *scores, int32_t *pred)
{
  EsBackend *be = tr->be;
  int F = (int) tr->F_out;

  if (tr->cfg.loss == ES_LOSS_SOFTMAX_XENT)
    return be->iface->argmax_correct (be, pred, scores, tr->labels, B, F);
  if (tr->cfg.loss == ES_LOSS_BCE && F == 1)
    {
      float p[256], t[256];
      int correct = 0;

      for (int r0 = 0; r0 < B; r0 += 256)
        {
          int n = ES_MIN (256, B - r0);

          be->iface->download (be, p, scores + r0, (size_t) n * sizeof (float));
          be->iface->download (be, t, tr->targets + r0, (size_t) n * sizeof (float));
          for (int r = 0; r < n; r++)
            {
              int yhat = p[r] >= 0.5f;

              correct += yhat == (t[r] >= 0.5f);
              if (pred != NULL)
                pred[r0 + r] = yhat;
            }
        }
      return correct;
    }
  return 0;
}

static void
optimizer_step (EsTrainer *tr)
{
  EsBackend *be = tr->be;
  const EsBackendIface *b = be->iface;
  const EsTrainConfig *c = &tr->cfg;
  int64_t P = es_model_n_params (tr->model);
  float lr = scheduled_lr (c, tr->steps);

  tr->lr = lr;
  /* pruned weights get no gradient (take no part in the norm, gather no state) */
  if (tr->mask_on)
    b->mask_apply (be, tr->grads, tr->mask, P);
  if (c->clip_norm > 0.0f)
    {
      double norm = sqrt (b->sum_squares (be, tr->grads, P));

      if (norm > c->clip_norm)
        b->scale (be, tr->grads, (float) (c->clip_norm / norm), P);
    }
  if (c->l1 > 0.0f || c->l2 > 0.0f)
    b->regularize (be, tr->grads, tr->params, c->l1, c->l2, P);
  switch (c->optimizer)
    {
    case ES_OPT_SGD:
      b->sgd_step (be, tr->params, NULL, tr->grads, lr, 0.0f, false, P);
      break;
    case ES_OPT_MOMENTUM:
    case ES_OPT_NESTEROV:
      b->sgd_step (be, tr->params, tr->opt_m, tr->grads, lr, c->momentum,
                   c->optimizer == ES_OPT_NESTEROV, P);
      break;
    case ES_OPT_ADAM:
    case ES_OPT_ADAMW:
      {
        double t = (double) (tr->steps + 1);
        float bc1 = (float) (1.0 - pow (c->beta1, t));
        float bc2 = (float) (1.0 - pow (c->beta2, t));

        b->adam_step (be, tr->params, tr->opt_m, tr->opt_v, tr->grads, lr, c->beta1, c->beta2,
                      c->eps, c->optimizer == ES_OPT_ADAMW ? c->weight_decay : 0.0f, bc1, bc2, P);
      }
      break;
    }
  /* and stay zero whatever momentum they had */
  if (tr->mask_on)
    b->mask_apply (be, tr->params, tr->mask, P);
  b->zero (be, tr->grads, (size_t) P * sizeof (float));
  tr->steps++;
  tr->param_gen++;
}

/* A batch must carry inputs and what the loss compares them with. */
static bool
check_batch (const EsTrainer *tr, const EsBatch *batch, EsError *err)
{
  if ((batch->x_f32 == NULL) == (batch->x_u8 == NULL))
    {
      es_error_set (err, ES_ERR_INVALID, "A batch needs exactly one of float or uint8 inputs");
      return false;
    }
  if (tr->cfg.loss == ES_LOSS_SOFTMAX_XENT ? batch->labels == NULL : batch->targets == NULL)
    {
      es_error_set (err, ES_ERR_INVALID, "A batch for the %s loss needs %s",
                    es_loss_kind_name (tr->cfg.loss),
                    tr->cfg.loss == ES_LOSS_SOFTMAX_XENT ? "class labels" : "targets");
      return false;
    }
  return true;
}

/* ------------------------------------------------------------------------------ */
/* data parallelism and checkpoints */

void
es_trainer_set_grad_reduce (EsTrainer *tr, EsGradBucketFunc bucket_ready,
                            EsGradFinishFunc finish, void *user)
{
  tr->grad_bucket = finish != NULL ? bucket_ready : NULL;
  tr->grad_finish = finish;
  tr->grad_user = user;
}

/* The reduction failed: the batch is undone as a bad loss undoes it (gradients zeroed,
 * running statistics and QAT ranges as before it, nothing accumulated). */
static void
grad_reduce_failed (EsTrainer *tr)
{
  const EsBackendIface *b = tr->be->iface;

  b->zero (tr->be, tr->grads, (size_t) es_model_n_params (tr->model) * sizeof (float));
  if (tr->buffers_saved != NULL)
    b->copy (tr->be, tr->buffers, tr->buffers_saved,
             (size_t) es_model_n_buffers (tr->model) * sizeof (float));
  if (tr->qat_on)
    for (int i = 0; i < tr->n_exec; i++)
      {
        Exec *e = &tr->exec[i];

        e->q_tracked = e->q_tracked_saved;
        e->q_lo = e->q_lo_saved;
        e->q_hi = e->q_hi_saved;
      }
  tr->accum_done = 0;
}

void
es_trainer_reload_buffers (EsTrainer *tr)
{
  tr->be->iface->upload (tr->be, tr->buffers, es_model_buffers (tr->model),
                         (size_t) es_model_n_buffers (tr->model) * sizeof (float));
}

int
es_trainer_state_slots (const EsTrainer *tr)
{
  return optimizer_slots (tr->cfg.optimizer);
}

void
es_trainer_get_state (EsTrainer *tr, int64_t *steps, float *slots)
{
  const EsBackendIface *b = tr->be->iface;
  size_t P = (size_t) es_model_n_params (tr->model);
  float *dev[2] = { tr->opt_m, tr->opt_v };

  if (steps != NULL)
    *steps = tr->steps;
  for (int k = 0; k < optimizer_slots (tr->cfg.optimizer) && slots != NULL; k++)
    b->download (tr->be, slots + (size_t) k * P, dev[k], P * sizeof (float));
}

bool
es_trainer_set_state (EsTrainer *tr, int64_t steps, const float *slots, EsError *err)
{
  const EsBackendIface *b = tr->be->iface;
  size_t P = (size_t) es_model_n_params (tr->model);
  float *dev[2] = { tr->opt_m, tr->opt_v };
  int n = optimizer_slots (tr->cfg.optimizer);

  if (steps < 0 || (n > 0 && slots == NULL))
    {
      es_error_set (err, ES_ERR_INVALID, "An optimizer state needs a step count >= 0 and "
                    "%d vector%s of parameters", n, n == 1 ? "" : "s");
      return false;
    }
  for (int k = 0; k < n; k++)
    b->upload (tr->be, dev[k], slots + (size_t) k * P, P * sizeof (float));
  b->zero (tr->be, tr->grads, P * sizeof (float));
  tr->accum_done = 0;
  tr->steps = steps;
  tr->lr = steps > 0 ? scheduled_lr (&tr->cfg, steps - 1) : tr->cfg.lr;
  return true;
}

bool
es_trainer_train_batch (EsTrainer *tr, const EsBatch *batch, EsStepStats *stats, EsError *err)
{
  int B = batch->B;
  float scale;
  double loss_sum = 0.0, t_begin = 0.0;
  int correct = 0;

  if (B <= 0 || B > tr->batch)
    {
      es_error_set (err, ES_ERR_INVALID, "A batch of %d rows does not fit a trainer made for %d",
                    B, tr->batch);
      return false;
    }
  if (!check_batch (tr, batch, err))
    return false;
  if (tr->prof_on)
    {
      t_begin = es_now ();
      tr->prof_t = t_begin;
      tr->prof_active = true;
    }
  /* BatchNorm updates its running statistics in the forward pass: keep them to put
   * back if this batch turns out bad. */
  if (tr->buffers_saved != NULL)
    tr->be->iface->copy (tr->be, tr->buffers_saved, tr->buffers,
                         (size_t) es_model_n_buffers (tr->model) * sizeof (float));
  /* so do the QAT ranges */
  if (tr->qat_on)
    for (int i = 0; i < tr->n_exec; i++)
      {
        Exec *e = &tr->exec[i];

        e->q_tracked_saved = e->q_tracked;
        e->q_lo_saved = e->q_lo;
        e->q_hi_saved = e->q_hi;
      }
  scale = 1.0f / ((float) B * (float) tr->cfg.accum_steps);
  for (int r0 = 0; r0 < B; r0 += tr->micro)
    {
      int mb = ES_MIN (tr->micro, B - r0);
      float loss;

      tr->r0 = r0;
      load_rows (tr, batch, r0, mb);
      if (tr->prof_active)
        prof_mark (tr, ES_STAGE_LOAD, -1);
      forward (tr, tr->n_exec, mb, true);
      loss = loss_forward (tr, mb);
      if (!isfinite (loss))
        {
          if (tr->prof_active)
            {
              tr->prof.total_s += tr->prof_t - t_begin;
              tr->prof_active = false;
            }
          tr->be->iface->zero (tr->be, tr->grads, (size_t) es_model_n_params (tr->model) * sizeof (float));
          if (tr->buffers_saved != NULL)
            tr->be->iface->copy (tr->be, tr->buffers, tr->buffers_saved,
                                 (size_t) es_model_n_buffers (tr->model) * sizeof (float));
          if (tr->qat_on)
            for (int i = 0; i < tr->n_exec; i++)
              {
                Exec *e = &tr->exec[i];

                e->q_tracked = e->q_tracked_saved;
                e->q_lo = e->q_lo_saved;
                e->q_hi = e->q_hi_saved;
              }
          tr->accum_done = 0;
          es_error_set (err, ES_ERR_NUMERIC, "The loss became %s at step %lld",
                        isnan (loss) ? "NaN" : "infinite", (long long) tr->steps + 1);
          return false;
        }
      loss_sum += (double) loss * mb;
      if (tr->prof_active)
        prof_mark (tr, ES_STAGE_LOSS, -1);
      correct += count_correct (tr, mb, tr->cfg.loss == ES_LOSS_MSE ? tr->exec[tr->n_exec - 1].out : tr->probs, NULL);
      if (tr->prof_active)
        prof_mark (tr, ES_STAGE_METRICS, -1);
      loss_backward (tr, mb, scale);
      if (tr->prof_active)
        prof_mark (tr, ES_STAGE_LOSS, -1);
      tr->grad_last = r0 + mb >= B && tr->accum_done + 1 >= tr->cfg.accum_steps;
      backward (tr, tr->n_exec, mb);
      tr->grad_last = false;
      if (tr->prof_active)
        tr->prof.micro_batches++;
    }
  if (tr->accum_done == 0)
    tr->step_rows = 0;
  tr->step_rows += B;
  if (++tr->accum_done >= tr->cfg.accum_steps)
    {
      if (tr->grad_finish != NULL
          && !tr->grad_finish (tr->grad_user, tr->be, tr->grads, es_model_n_params (tr->model),
                               tr->step_rows, err))
        {
          grad_reduce_failed (tr);
          if (tr->prof_active)
            {
              tr->prof.total_s += tr->prof_t - t_begin;
              tr->prof_active = false;
            }
          return false;
        }
      optimizer_step (tr);
      tr->accum_done = 0;
    }
  if (tr->prof_active)
    {
      prof_mark (tr, ES_STAGE_OPTIMIZER, -1);
      tr->prof.total_s += tr->prof_t - t_begin;
      tr->prof.batches++;
      tr->prof.rows += B;
      tr->prof_active = false;
    }
  if (stats != NULL)
    {
      stats->loss_sum += loss_sum;
      stats->correct += correct;
      stats->rows += B;
    }
  return true;
}

bool
es_trainer_eval_batch (EsTrainer *tr, const EsBatch *batch, EsStepStats *stats, int32_t *pred,
                       EsError *err)
{
  int B = batch->B;
  double loss_sum = 0.0;
  int correct = 0;

  if (B <= 0 || !check_batch (tr, batch, err))
    {
      if (B <= 0)
        es_error_set (err, ES_ERR_INVALID, "An empty batch cannot be evaluated");
      return false;
    }
  for (int r0 = 0; r0 < B; r0 += tr->micro)
    {
      int mb = ES_MIN (tr->micro, B - r0);
      float loss;

      load_rows (tr, batch, r0, mb);
      forward (tr, tr->n_exec, mb, false);
      loss = loss_forward (tr, mb);
      if (!isfinite (loss))
        {
          es_error_set (err, ES_ERR_NUMERIC, "The loss is %s on evaluation",
                        isnan (loss) ? "NaN" : "infinite");
          return false;
        }
      loss_sum += (double) loss * mb;
      correct += count_correct (tr, mb, tr->cfg.loss == ES_LOSS_MSE ? tr->exec[tr->n_exec - 1].out : tr->probs,
                                pred != NULL ? pred + r0 : NULL);
    }
  if (stats != NULL)
    {
      stats->loss_sum += loss_sum;
      stats->correct += correct;
      stats->rows += B;
    }
  return true;
}

bool
es_trainer_predict (EsTrainer *tr, const float *x, int B, float *out, EsError *err)
{
  const EsBackendIface *b = tr->be->iface;
  int n = es_model_n_layers (tr->model);
  size_t F = (size_t) tr->F_out;

  if (B <= 0 || x == NULL || out == NULL)
    {
      es_error_set (err, ES_ERR_INVALID, "Prediction needs at least one row of input and an output");
      return false;
    }
  for (int r0 = 0; r0 < B; r0 += tr->micro)
    {
      int mb = ES_MIN (tr->micro, B - r0);
      EsBatch rows = { .B = B, .x_f32 = x };

      load_rows (tr, &rows, r0, mb);
      /* every layer: a fused last one writes into probs */
      forward (tr, n, mb, false);
      b->download (tr->be, out + (size_t) r0 * F, tr->exec[n - 1].out,
                   (size_t) mb * F * sizeof (float));
    }
  return true;
}

/* ------------------------------------------------------------------------------ */
/* profiling */

const char *
es_stage_name (EsStage stage)
{
  return (unsigned) stage < ES_N_STAGES ? stage_names[stage] : "unknown";
}

void
es_trainer_set_profiling (EsTrainer *tr, bool on)
{
  tr->prof_on = on;
}

bool
es_trainer_get_profiling (const EsTrainer *tr)
{
  return tr->prof_on;
}

void
es_trainer_profile_reset (EsTrainer *tr)
{
  memset (&tr->prof, 0, sizeof tr->prof);
  memset (tr->prof_layers, 0, (size_t) es_model_n_layers (tr->model) * sizeof *tr->prof_layers);
}

void
es_trainer_get_profile (const EsTrainer *tr, EsProfile *prof)
{
  *prof = tr->prof;
}

bool
es_trainer_get_layer_profile (const EsTrainer *tr, int layer, EsLayerProfile *lp)
{
  if (layer < 0 || layer >= es_model_n_layers (tr->model))
    return false;
  *lp = tr->prof_layers[layer];
  return true;
}

void
es_trainer_set_profile_events (EsTrainer *tr, EsProfileEventFunc func, void *user)
{
  tr->prof_func = func;
  tr->prof_user = user;
}

/* The minimal-traffic model of es_layer_bytes_moved, kind by kind (R rows, IN and OUT
 * floats per row, P parameters of which Wn are the weight tensor, CH channels):
 *   Dense, Conv2D   forward  P + R IN + R OUT
 *                   backward 2P (gradients read and written) + R IN (for dw) + R OUT
 *                            (dout), and with dinp Wn (weights) + R IN (dinp written)
 *   MaxPool2D       forward  R IN + R OUT + R OUT int32 indices; backward R OUT dout
 *                            + the indices + R IN dinp
 *   AvgPool2D       forward  R IN + R OUT; backward R OUT + R IN
 *   activations,    forward  R IN + R OUT; backward R OUT dout + R OUT (the saved input
 *   Softmax                  or output it differentiates at) + R IN dinp
 *   Dropout         forward  R IN + R OUT + R OUT mask bytes; backward R OUT + the mask
 *                            + R IN; nothing at rate 0 (the trainer skips it)
 *   BatchNorm       forward  P (gamma, beta) + 4 CH (running statistics read and
 *                            written) + 2 CH (mean, rstd saved) + R IN + R OUT
 *                   backward 2P + CH gamma + 2 CH saved + R IN + R OUT, + R IN dinp
 *   Flatten         0: a view of its input, no kernel runs
 * A layer without parameters does nothing backward without an input gradient. im2col
 * columns and other scratch are not counted: they are the kernel's choice, not the
 * layer's need. */
int64_t
es_layer_bytes_moved (const EsModel *model, int layer, int64_t rows, bool backward,
                      bool need_dinput)
{
  const EsLayerInfo *l;
  int64_t in, out, P, W = 0, CH, f;
  const int64_t F = (int64_t) sizeof (float);

  if (model == NULL || layer < 0 || layer >= es_model_n_layers (model) || rows <= 0)
    return 0;
  l = es_model_layer (model, layer);
  in = rows * es_shape_size (&l->in);
  out = rows * l->out_floats;
  P = l->n_params;
  if (l->n_tensors > 0)
    W = es_model_tensor (model, l->first_tensor)->size;
  if (backward && P == 0 && !need_dinput)
    return 0;
  switch (l->spec.kind)
    {
    case ES_LAYER_DENSE:
    case ES_LAYER_CONV2D:
      if (!backward)
        return (P + in + out) * F;
      return (2 * P + in + out + (need_dinput ? W + in : 0)) * F;
    case ES_LAYER_MAXPOOL2D:
      if (!backward)
        return (in + out) * F + out * (int64_t) sizeof (int32_t);
      return (out + in) * F + out * (int64_t) sizeof (int32_t);
    case ES_LAYER_AVGPOOL2D:
      return (in + out) * F;
    case ES_LAYER_RELU:
    case ES_LAYER_LEAKY_RELU:
    case ES_LAYER_SIGMOID:
    case ES_LAYER_TANH:
    case ES_LAYER_SOFTMAX:
      return (backward ? in + 2 * out : in + out) * F;
    case ES_LAYER_DROPOUT:
      if (!(l->spec.rate > 0.0f))
        return 0;
      return (in + out) * F + out;  /* the mask: a byte per element */
    case ES_LAYER_BATCHNORM:
      CH = l->in.dims[0];
      if (!backward)
        f = P + 4 * CH + 2 * CH + in + out;
      else
        f = 2 * P + CH + 2 * CH + in + out + (need_dinput ? in : 0);
      return f * F;
    case ES_LAYER_FLATTEN:
    default:
      return 0;
    }
}

/* Subnormal fp32 values among N floats: exponent bits zero, mantissa not. */
static int64_t
count_subnormal (const float *x, int64_t N)
{
  int64_t n = 0;

  for (int64_t i = 0; i < N; i++)
    {
      uint32_t u;

      memcpy (&u, &x[i], sizeof u);
      n += (u & 0x7f800000u) == 0 && (u & 0x007fffffu) != 0;
    }
  return n;
}

/* Denormals in N floats of backend memory at p, read in place or through download in
 * chunks of tmp (TMP floats); *total counts the values. */
static int64_t
count_device_subnormal (EsBackend *be, const float *p, int64_t N, float *tmp, int64_t TMP,
                        int64_t *total)
{
  int64_t n = 0;

  if (p == NULL || N <= 0)
    return 0;
  *total += N;
  if (be->iface->host_memory)
    return count_subnormal (p, N);
  for (int64_t i = 0; i < N; i += TMP)
    {
      int64_t k = ES_MIN (TMP, N - i);

      be->iface->download (be, tmp, p + i, (size_t) k * sizeof (float));
      n += count_subnormal (tmp, k);
    }
  return n;
}

void
es_trainer_count_denormals (EsTrainer *tr, EsDenormalCount *out)
{
  enum { TMP = 16384 };
  EsBackend *be = tr->be;
  int64_t P = es_model_n_params (tr->model), Q = es_model_n_buffers (tr->model);
  int64_t B = tr->micro, t = 0;
  float *tmp = NULL;

  memset (out, 0, sizeof *out);
  if (!be->iface->host_memory && (tmp = malloc (TMP * sizeof (float))) == NULL)
    return;
#define COUNT(field, ptr, n) \
  (out->field += count_device_subnormal (be, (ptr), (n), tmp, TMP, &t))
  COUNT (params, tr->params, P);
  COUNT (params, tr->buffers, Q);  /* BatchNorm running statistics */
  COUNT (gradients, tr->grads, P);
  COUNT (optimizer, tr->opt_m, P);
  COUNT (optimizer, tr->opt_v, P);
  /* float activations only: MaxPool indices and dropout masks are not floats */
  for (int i = 0; i < es_model_n_layers (tr->model); i++)
    {
      const Exec *e = &tr->exec[i];

      COUNT (activations, e->own, B * e->info->out_floats);
      if (e->bn_mean != NULL)
        {
          COUNT (activations, e->bn_mean, e->info->in.dims[0]);
          COUNT (activations, e->bn_rstd, e->info->in.dims[0]);
        }
    }
  COUNT (activations, tr->probs, B * tr->F_out);
  COUNT (activations, tr->losses, B);
  COUNT (activations, tr->dA, B * es_model_max_act (tr->model));
  COUNT (activations, tr->dB, B * es_model_max_act (tr->model));
#undef COUNT
  out->total_values = t;
  free (tmp);
}

/* ------------------------------------------------------------------------------ */
/* slimming: pruning masks, quantization-aware training, distillation */

static bool
require_op (EsBackend *be, EsOp op, const char *what, EsError *err)
{
  if (be->iface->supports_op (be, op))
    return true;
  es_error_set (err, ES_ERR_UNSUPPORTED, "The %s backend cannot run %s", be->iface->name, what);
  return false;
}

bool
es_trainer_set_mask (EsTrainer *tr, const uint8_t *mask, EsError *err)
{
  const EsBackendIface *b = tr->be->iface;
  int64_t P = es_model_n_params (tr->model);

  if (mask == NULL)
    {
      tr->mask_on = false;
      return true;
    }
  if (!require_op (tr->be, ES_OP_MASK_APPLY, "pruning masks", err))
    return false;
  if (tr->mask == NULL && (tr->mask = tr_alloc (tr, ES_MEM_WEIGHTS, (size_t) P, err)) == NULL)
    return false;
  b->upload (tr->be, tr->mask, mask, (size_t) P);
  tr->mask_on = true;
  b->mask_apply (tr->be, tr->params, tr->mask, P);
  tr->param_gen++;
  return true;
}

static bool
qat_layer_kind (EsLayerKind k)
{
  return k == ES_LAYER_DENSE || k == ES_LAYER_CONV2D;
}

bool
es_trainer_set_fake_quant (EsTrainer *tr, const bool *layers, bool reduce_range, EsError *err)
{
  int n = es_model_n_layers (tr->model), chosen = 0;

  if (layers == NULL)
    {
      for (int i = 0; i < n; i++)
        tr->exec[i].qat = tr->exec[i].q_tracked = false;
      tr->qat_on = false;
      return true;
    }
  if (!require_op (tr->be, ES_OP_MIN_MAX, "quantization-aware training", err)
      || !require_op (tr->be, ES_OP_FAKE_QUANT_WEIGHTS, "quantization-aware training", err)
      || !require_op (tr->be, ES_OP_FAKE_QUANT_ACT, "quantization-aware training", err))
    return false;
  /* buffers first, so a failure leaves the previous choice as it was */
  for (int i = 0; i < n; i++)
    {
      Exec *e = &tr->exec[i];
      const EsLayerInfo *l = e->info;
      size_t w_floats, in_floats;

      if (!layers[i] || !qat_layer_kind (l->spec.kind))
        continue;
      w_floats = (size_t) es_model_tensor (tr->model, l->first_tensor)->size;
      in_floats = (size_t) tr->micro * (size_t) es_shape_size (&l->in);
      chosen++;
      if (e->wq == NULL
          && (e->wq = tr_alloc (tr, ES_MEM_WEIGHTS, w_floats * sizeof (float), err)) == NULL)
        return false;
      if (e->qin == NULL
          && (e->qin = tr_alloc (tr, ES_MEM_ACTIVATIONS, in_floats * sizeof (float), err)) == NULL)
        return false;
    }
  if (chosen == 0)
    {
      es_error_set (err, ES_ERR_INVALID, "Quantization-aware training needs a Dense or Conv2D layer");
      return false;
    }
  for (int i = 0; i < n; i++)
    {
      Exec *e = &tr->exec[i];
      bool on = layers[i] && qat_layer_kind (e->info->spec.kind);

      if (on && !e->qat)
        e->wq_gen = 0;  /* not made yet */
      if (!on)
        e->q_tracked = false;
      e->qat = on;
    }
  tr->qmax = reduce_range ? 127 : 255;
  tr->qat_on = true;
  return true;
}

bool
es_trainer_get_input_range (const EsTrainer *tr, int layer, float *lo, float *hi)
{
  const Exec *e;

  if (layer < 0 || layer >= es_model_n_layers (tr->model))
    return false;
  e = &tr->exec[layer];
  if (!e->qat || !e->q_tracked)
    return false;
  *lo = e->q_lo;
  *hi = e->q_hi;
  return true;
}

static void
teacher_free (EsTrainer *tr)
{
  Teacher *t = tr->teacher;

  if (t == NULL)
    return;
  list_release (tr->be, &t->allocs);
  free (t->allocs.items);
  free (t->exec);
  free (t);
  tr->teacher = NULL;
}

/* The teacher's device copy and its inference execution list for micro-batches. */
static Teacher *
teacher_new (EsTrainer *tr, const EsModel *model, EsError *err)
{
  EsBackend *be = tr->be;
  int n = es_model_n_layers (model);
  size_t B = (size_t) tr->micro;
  size_t P = (size_t) es_model_n_params (model), Q = (size_t) es_model_n_buffers (model);
  int64_t widest = 1, widest_pool = 0;
  Teacher *t = calloc (1, sizeof *t);
  const float *prev = NULL;

  if (t == NULL || (t->exec = calloc ((size_t) n, sizeof *t->exec)) == NULL)
    {
      free (t);
      es_error_set (err, ES_ERR_NOMEM, "Out of memory creating the teacher");
      return NULL;
    }
  t->model = model;
  t->n_exec = n - (es_model_layer (model, n - 1)->spec.kind == ES_LAYER_SOFTMAX ? 1 : 0);
  for (int i = 0; i < n; i++)
    {
      const EsLayerInfo *l = es_model_layer (model, i);

      if (!es_infer_identity (l->spec.kind))
        widest = ES_MAX (widest, l->out_floats);
      if (l->spec.kind == ES_LAYER_MAXPOOL2D)
        widest_pool = ES_MAX (widest_pool, l->out_floats);
    }
#define T_ALLOC(dst, kind, bytes) \
  do { if (((dst) = list_alloc (be, &t->allocs, kind, bytes, err)) == NULL) goto fail; } while (0)
  T_ALLOC (t->params, ES_MEM_WEIGHTS, P * sizeof (float));
  T_ALLOC (t->buffers, ES_MEM_WEIGHTS, Q * sizeof (float));
  T_ALLOC (t->bufA, ES_MEM_ACTIVATIONS, B * (size_t) widest * sizeof (float));
  T_ALLOC (t->bufB, ES_MEM_ACTIVATIONS, B * (size_t) widest * sizeof (float));
  if (widest_pool > 0)
    T_ALLOC (t->argmax, ES_MEM_ACTIVATIONS, B * (size_t) widest_pool * sizeof (int32_t));
  T_ALLOC (t->soft_s, ES_MEM_ACTIVATIONS, B * (size_t) tr->F_out * sizeof (float));
  T_ALLOC (t->soft_t, ES_MEM_ACTIVATIONS, B * (size_t) tr->F_out * sizeof (float));
#undef T_ALLOC
  for (int i = 0; i < n; i++)
    {
      Exec *e = &t->exec[i];

      e->info = es_model_layer (model, i);
      exec_bind (e, model, t->params, NULL, t->buffers);
      e->argmax = t->argmax;
      /* identity layers read through (forward_exec points them at their input) */
      if (!es_infer_identity (e->info->spec.kind))
        {
          e->out = prev == t->bufA ? t->bufB : t->bufA;
          prev = e->out;
        }
    }
  be->iface->upload (be, t->params, es_model_params_const (model), P * sizeof (float));
  be->iface->upload (be, t->buffers, es_model_buffers_const (model), Q * sizeof (float));
  return t;

fail:
  list_release (be, &t->allocs);
  free (t->allocs.items);
  free (t->exec);
  free (t);
  return NULL;
}

bool
es_trainer_set_teacher (EsTrainer *tr, const EsModel *teacher, float temperature, float alpha,
                        EsError *err)
{
  EsShape si = es_model_input_shape (tr->model), so = es_model_output_shape (tr->model);
  EsShape ti, to;
  EsLayerKind last;

  teacher_free (tr);
  if (teacher == NULL)
    return true;
  ti = es_model_input_shape (teacher);
  to = es_model_output_shape (teacher);
  last = es_model_layer (teacher, es_model_n_layers (teacher) - 1)->spec.kind;
  if (tr->cfg.loss != ES_LOSS_SOFTMAX_XENT)
    {
      es_error_set (err, ES_ERR_INVALID, "Distillation needs the softmax_cross_entropy loss (not %s)",
                    es_loss_kind_name (tr->cfg.loss));
      return false;
    }
  if (!(temperature > 0.0f) || !isfinite (temperature) || !(alpha >= 0.0f && alpha <= 1.0f))
    {
      es_error_set (err, ES_ERR_INVALID,
                    "Distillation needs a positive temperature and alpha in [0, 1] (got %g and %g)",
                    temperature, alpha);
      return false;
    }
  if (!es_shape_equal (&si, &ti) || !es_shape_equal (&so, &to))
    {
      char a[64], b[64], c[64], d[64];

      es_error_set (err, ES_ERR_SHAPE,
                    "The teacher maps %s to %s but the student %s to %s",
                    es_shape_format (&ti, a, sizeof a), es_shape_format (&to, b, sizeof b),
                    es_shape_format (&si, c, sizeof c), es_shape_format (&so, d, sizeof d));
      return false;
    }
  if (last == ES_LAYER_SIGMOID)
    {
      es_error_set (err, ES_ERR_INVALID, "A teacher ending in Sigmoid has no class logits to distill");
      return false;
    }
  if (!check_supported (teacher, tr->be, NULL, err)
      || !require_op (tr->be, ES_OP_DISTILL, "the distillation loss", err))
    return false;
  tr->teacher = teacher_new (tr, teacher, err);
  if (tr->teacher == NULL)
    return false;
  tr->teacher->temp = temperature;
  tr->teacher->alpha = alpha;
  return true;
}

/* ------------------------------------------------------------------------------ */
/* inference */

struct EsInfer {
  const EsModel *model;
  EsBackend     *be;
  int            max_batch;
  int64_t        D, F_out;
  int64_t        row_a, row_b;       /* floats a row of bufA, bufB */
  int64_t        row_argmax;         /* int32 a row of argmax; 0 without MaxPool2D */
  float         *params, *buffers;   /* device */
  float         *bufA, *bufB;        /* (max_batch, row_a), (max_batch, row_b) ping-pong */
  int32_t       *argmax;             /* (max_batch, row_argmax) or NULL */
  float         *host_out;           /* (max_batch, F_out) */
  bool           host_backend;       /* results can be read in place */
};

/* The index of the activation that follows layer i of m past identity layers, or -1
 * when another kind of layer (or none) comes first. */
static int
infer_next_act (const EsModel *m, int i)
{
  for (int j = i + 1; j < es_model_n_layers (m); j++)
    {
      EsLayerKind k = es_model_layer (m, j)->spec.kind;

      if (k == ES_LAYER_RELU || k == ES_LAYER_LEAKY_RELU || k == ES_LAYER_SIGMOID
          || k == ES_LAYER_TANH)
        return j;
      if (!es_infer_identity (k))
        return -1;
    }
  return -1;
}

static void
infer_free_buffers (EsInfer *inf)
{
  const EsBackendIface *b = inf->be->iface;
  size_t rows = (size_t) inf->max_batch;

  if (inf->argmax)
    b->free (inf->be, ES_MEM_ACTIVATIONS, inf->argmax,
             rows * (size_t) inf->row_argmax * sizeof (int32_t));
  if (inf->bufB)
    b->free (inf->be, ES_MEM_ACTIVATIONS, inf->bufB, rows * (size_t) inf->row_b * sizeof (float));
  if (inf->bufA)
    b->free (inf->be, ES_MEM_ACTIVATIONS, inf->bufA, rows * (size_t) inf->row_a * sizeof (float));
}

/* The activation buffers hold what layers write: the widest output of a layer that
 * writes one (and the input, on a backend it is uploaded to); MaxPool2D's indices only
 * when there is one. Identity layers write nothing, so a model's input (784 floats a
 * row for MNIST) is not what sizes them. */
EsInfer *
es_infer_new (const EsModel *model, EsBackend *be, int max_batch, EsError *err)
{
  EsInfer *inf;
  const EsBackendIface *b = be->iface;
  EsShape in = es_model_input_shape (model), out = es_model_output_shape (model);
  size_t P = (size_t) es_model_n_params (model), Q = (size_t) es_model_n_buffers (model);
  size_t rows = (size_t) max_batch;
  int64_t widest = 1;
  bool ok;

  if (max_batch <= 0)
    {
      es_error_set (err, ES_ERR_INVALID, "The batch size must be at least 1");
      return NULL;
    }
  if (!check_supported (model, be, NULL, err))
    return NULL;
  inf = calloc (1, sizeof *inf);
  if (inf == NULL)
    {
      es_error_set (err, ES_ERR_NOMEM, "Out of memory creating an inference session");
      return NULL;
    }
  inf->model = model;
  inf->be = be;
  inf->max_batch = max_batch;
  inf->D = es_shape_size (&in);
  inf->F_out = es_shape_size (&out);
  inf->host_backend = b->host_memory;
  for (int i = 0; i < es_model_n_layers (model); i++)
    {
      const EsLayerInfo *l = es_model_layer (model, i);

      if (!es_infer_identity (l->spec.kind))
        widest = ES_MAX (widest, l->out_floats);
      if (l->spec.kind == ES_LAYER_MAXPOOL2D)
        inf->row_argmax = ES_MAX (inf->row_argmax, l->out_floats);
    }
  inf->row_a = widest;
  inf->row_b = inf->host_backend ? widest : ES_MAX (widest, inf->D);
  inf->params = b->alloc (be, ES_MEM_WEIGHTS, ES_MAX (P, 1) * sizeof (float), err);
  inf->buffers = inf->params ? b->alloc (be, ES_MEM_WEIGHTS, ES_MAX (Q, 1) * sizeof (float), err) : NULL;
  inf->bufA = inf->buffers ? b->alloc (be, ES_MEM_ACTIVATIONS, rows * (size_t) inf->row_a * sizeof (float), err) : NULL;
  inf->bufB = inf->bufA ? b->alloc (be, ES_MEM_ACTIVATIONS, rows * (size_t) inf->row_b * sizeof (float), err) : NULL;
  ok = inf->bufB != NULL;
  if (ok && inf->row_argmax > 0)
    {
      inf->argmax = b->alloc (be, ES_MEM_ACTIVATIONS,
                              rows * (size_t) inf->row_argmax * sizeof (int32_t), err);
      ok = inf->argmax != NULL;
    }
  inf->host_out = ok ? malloc (rows * (size_t) inf->F_out * sizeof (float)) : NULL;
  if (inf->host_out == NULL)
    {
      if (ok)
        es_error_set (err, ES_ERR_NOMEM, "Out of memory for the inference output");
      es_infer_free (inf);
      return NULL;
    }
  b->upload (be, inf->params, es_model_params_const (model), P * sizeof (float));
  b->upload (be, inf->buffers, es_model_buffers_const (model), Q * sizeof (float));
  return inf;
}

void
es_infer_free (EsInfer *inf)
{
  const EsBackendIface *b;

  if (inf == NULL)
    return;
  b = inf->be->iface;
  infer_free_buffers (inf);
  if (inf->buffers)
    b->free (inf->be, ES_MEM_WEIGHTS, inf->buffers,
             ES_MAX ((size_t) es_model_n_buffers (inf->model), 1) * sizeof (float));
  if (inf->params)
    b->free (inf->be, ES_MEM_WEIGHTS, inf->params,
             ES_MAX ((size_t) es_model_n_params (inf->model), 1) * sizeof (float));
  free (inf->host_out);
  free (inf);
}

/* Tensor t of layer i: trainable ones in params, the rest in buffers. */
static const float *
infer_tensor (const EsModel *m, const float *params, const float *buffers, int i, int t)
{
  const EsTensorInfo *ti = es_model_tensor (m, es_model_layer (m, i)->first_tensor + t);

  return (ti->trainable ? params : buffers) + ti->offset;
}

int
es_infer_layer_forward (EsBackend *be, const EsModel *m, int i, int act, float *out,
                        const float *inp, const float *params, const float *buffers,
                        int32_t *argmax, int B)
{
  const EsBackendIface *b = be->iface;
  const EsLayerInfo *l = es_model_layer (m, i);
  const EsLayerSpec *s = &l->spec;
  const EsShape *is = &l->in;
  const float *w = NULL, *bias = NULL;

  if (l->n_tensors > 0)
    {
      w = infer_tensor (m, params, buffers, i, 0);
      bias = infer_tensor (m, params, buffers, i, 1);
    }
  switch (s->kind)
    {
    case ES_LAYER_DENSE:
      if (b->dense_act_forward == NULL)
        b->dense_forward (be, out, inp, w, bias, B, is->dims[0], s->units);
      else
        {
          const EsLayerSpec *as = act >= 0 ? &es_model_layer (m, act)->spec : NULL;

          b->dense_act_forward (be, as != NULL ? act_op (as->kind) : ES_OP_DENSE, out, inp, w,
                                bias, as != NULL ? as->alpha : 0.0f, B, is->dims[0], s->units);
          if (act >= 0)
            return act;  /* the activation is done */
        }
      break;
    case ES_LAYER_CONV2D:
      b->conv2d_forward (be, out, inp, w, bias, B, is->dims[0], is->dims[1], is->dims[2],
                         s->filters, s->kernel, s->stride, s->padding);
      break;
    case ES_LAYER_MAXPOOL2D:
      b->maxpool2d_forward (be, out, argmax, inp, B, is->dims[0], is->dims[1], is->dims[2],
                            s->kernel, s->stride);
      break;
    case ES_LAYER_AVGPOOL2D:
      b->avgpool2d_forward (be, out, inp, B, is->dims[0], is->dims[1], is->dims[2], s->kernel,
                            s->stride);
      break;
    case ES_LAYER_RELU:
    case ES_LAYER_LEAKY_RELU:
    case ES_LAYER_SIGMOID:
    case ES_LAYER_TANH:
      b->act_forward (be, act_op (s->kind), out, inp, s->alpha, (int64_t) B * l->out_floats);
      break;
    case ES_LAYER_SOFTMAX:
      b->softmax_forward (be, out, inp, B, (int) l->out_floats);
      break;
    case ES_LAYER_BATCHNORM:
      {
        const int CH = is->dims[0];

        b->batchnorm_forward_infer (be, out, inp, w, bias, infer_tensor (m, params, buffers, i, 2),
                                    infer_tensor (m, params, buffers, i, 3), s->eps, B, CH,
                                    (int) (l->out_floats / CH));
      }
      break;
    default:
      break;
    }
  return i;
}

/* Layer by layer, each output into the buffer the previous one did not write. Dense
 * layers run as dense_act_forward when the backend has it, together with an
 * activation that follows (past identity layers). */
const float *
es_infer_run (EsInfer *inf, const float *x, int B)
{
  EsBackend *be = inf->be;
  const EsBackendIface *b = be->iface;
  const EsModel *m = inf->model;
  const float *inp;
  float *out = inf->bufA;

  if (B <= 0 || B > inf->max_batch)
    return NULL;
  if (inf->host_backend)
    inp = x;
  else
    {
      b->upload (be, inf->bufB, x, (size_t) B * (size_t) inf->D * sizeof (float));
      inp = inf->bufB;
    }
  for (int i = 0; i < es_model_n_layers (m); i++)
    {
      if (es_infer_identity (es_model_layer (m, i)->spec.kind))
        continue;  /* keep reading inp */
      i = es_infer_layer_forward (be, m, i, infer_next_act (m, i), out, inp, inf->params,
                                  inf->buffers, inf->argmax, B);
      inp = out;
      out = (out == inf->bufA) ? inf->bufB : inf->bufA;
    }
  if (inf->host_backend && inp != x)
    return inp;
  b->download (be, inf->host_out, inp, (size_t) B * (size_t) inf->F_out * sizeof (float));
  return inf->host_out;
}
