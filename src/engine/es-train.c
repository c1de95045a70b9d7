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
 * backend's budget by kind (those of features switched on later, and the workspaces the
 * backend's ops take, are in the plan too: es_mem_plan bounds what a run charges, so a
 * budget of the plan never fails mid-run); the backward pass reuses two gradient
 * buffers (ping-pong) instead of keeping one per layer. A final Softmax (with
 * cross-entropy) or Sigmoid (with binary cross-entropy) is fused into the loss while
 * training. */
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
  double   bn_count;         /* synchronized BatchNorm: values per channel over every
                              * process in the last training forward */

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
  int      last_rows;         /* rows of the last training forward (es_trainer_find_nonfinite) */

  /* data-parallel gradient reduction (es_trainer_set_grad_reduce) */
  EsGradBucketFunc grad_bucket;
  EsGradFinishFunc grad_finish;
  void    *grad_user;
  bool     grad_last;         /* this backward completes the step's gradients */
  int64_t  step_rows;         /* rows of the batches since the last optimizer step */
  bool     step_bad;          /* a loss of this step was not finite (with a finish hook:
                               * the step goes on to its reduction, marked) */
  bool     step_bad_nan;      /* ...and the first such loss was NaN */
  bool     numeric_own;       /* the last ES_ERR_NUMERIC was this process' own loss */

  /* synchronized BatchNorm (es_trainer_set_stat_reduce) */
  EsStatReduceFunc stat_reduce;
  void    *stat_user;
  float   *bn_part;           /* (3, widest CH) backend memory: partial sums */
  float   *bn_hostf;          /* (4, widest CH) host: the partial sums, then what goes
                               * back (mean, rstd, running mean and variance) */
  double  *bn_hostd;          /* (3, widest CH) host: what the hook sums */
  int      bn_rows;           /* rows of the training batch being run */

  /* mixed precision (amp_*) */
  float    loss_scale;        /* fp16: the loss's multiplier; 1 otherwise */
  int      scale_clean;       /* fp16: clean steps since the scale last changed */
  int64_t  skipped;           /* optimizer steps skipped for overflowed gradients */
  double  *amp_dev;           /* (ES_AMP_N) the scaler's state on the device path */
  bool     amp_dev_live;      /* amp_dev, not the three fields above, is current (the
                               * device decides; stats_fold brings it back) */

  /* resident data, deferred statistics, CUDA Graphs, uploads ahead (the block before
   * es_trainer_train_batch) */
  int32_t *rows_dev;          /* (2, batch) row indices of resident batches, alternately
                               * in one half and the other, so a batch's copy overlaps
                               * the batch before (a graph recorded for each half) */
  int      rows_par;          /* the half of the current batch */
  bool     rows_ready;        /* that half holds the current training batch's rows */
  bool     rows_slot_used;    /* ...through the pinned rows slot, to release */
  bool     in_graph_block;    /* graph_train_batch runs the ordinary path */
  bool     deferred;          /* es_trainer_set_deferred_stats */
  double  *stats_dev;         /* (ES_STATS_N) statistics added up on the device */
  bool     stats_dirty;       /* stats_dev may hold something */
  bool     stats_started;     /* stats_dev zeroed and stats_base set at its first use */
  int64_t  stats_base;        /* steps done when stats_dev was last zeroed */
  EsStepStats pend;           /* counted on the host, not read yet */
  float   *hyper;             /* (HYPER_STEPS, 4) scheduled optimizer values, device */
  float   *hyper_host;        /* (HYPER_STEPS, 4) their host copy */
  int32_t *hyper_slot;        /* device: the row of hyper the next step reads */
  int64_t  hyper_base;        /* step of row 0 */
  int64_t  hyper_expect;      /* the step the device takes next */
  float    hyper_lr;          /* cfg.lr the table was made with */
  bool     hyper_valid;
  int      n_drop;            /* Dropout layers trained */
  uint64_t *seeds;            /* (HYPER_STEPS, n_drop) their seeds, device; NULL: none */
  uint64_t *seeds_host;       /* the same on the host */
  bool     graph_seeds_on;    /* recording: Dropout reads its seed from seeds */
  bool     graphs_off;        /* es_trainer_set_graphs (false) */
  bool     graph_failed;      /* recording failed once: no more tries */
  void    *graphs[2];         /* the recorded step for the key below, by rows_par (host
                               * batches use [0]) */
  int      graph_B;
  const struct EsResident *graph_res;
  const uint8_t *graph_mask;
  float    graph_scale, graph_shift;
  int      graph_seen;        /* batches of this key run so far without a graph */
  int64_t  graph_replays;
  void    *ahead_x[2];        /* (micro, D) staged inputs (uint8 or float) */
  int32_t *ahead_labels[2];   /* (micro) */
  float   *ahead_targets[2];  /* (micro, F_out) */
  bool     ahead_full[2];
  int      ahead_B[2];
  const void *ahead_src[2], *ahead_lab[2], *ahead_tgt[2];  /* the host batch staged */
  int      ahead_next;        /* the slot the next es_trainer_prefetch fills */

  /* profiling (es_trainer_set_profiling) */
  bool     prof_on;
  bool     prof_active;       /* inside a timed training batch */
  double   prof_t;            /* es_now of the last reading */
  EsProfile prof;
  EsLayerProfile *prof_layers;/* (n_layers) */
  EsProfileEventFunc prof_func;
  void    *prof_user;
};

/* Resident data, deferred statistics, graphs and uploads ahead: the block before
 * es_trainer_train_batch. */
static bool check_resident_batch (const EsTrainer *tr, const EsBatch *batch, EsError *err);
static bool graph_load_rows      (EsTrainer *tr, const EsBatch *batch, int r0, int B);
static bool graph_train_batch    (EsTrainer *tr, const EsBatch *batch, EsStepStats *stats,
                                  EsError *err);
static void graph_free_all       (EsTrainer *tr);
static int  dropout_index        (const EsTrainer *tr, int layer);
static bool rows_buffer          (EsTrainer *tr, EsError *err);
static bool stats_fold           (EsTrainer *tr, double *s);
static void amp_leave_device     (EsTrainer *tr);

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

static const char *const precision_names[] = { "fp32", "bf16", "fp16" };

const char *
es_precision_name (EsPrecision p)
{
  return (unsigned) p < ES_N_ELEMENTS (precision_names) ? precision_names[p] : "unknown";
}

bool
es_precision_from_name (const char *name, EsPrecision *p)
{
  int i;

  if (!lookup_name (precision_names, ES_N_ELEMENTS (precision_names), name, &i))
    return false;
  *p = (EsPrecision) i;
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
  cfg->precision = ES_PRECISION_FP32;
  cfg->loss_scale_init = 65536.0f;
  cfg->loss_scale_interval = 2000;
  cfg->loss_scale_growth = 2.0f;
  cfg->loss_scale_backoff = 0.5f;
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

/* What list_alloc charges for a request of bytes: an empty one still takes 64. */
static size_t
charged (size_t bytes)
{
  return bytes == 0 ? 64 : bytes;
}

/* Steps of scheduled optimizer values in the device table (16 bytes each). */
#define HYPER_STEPS 1024

/* Bytes of per-layer activations and their side records for B rows: training, the
 * trainer's (tr_allocate: each layer's output but a Flatten's and a last layer fused
 * into the loss, MaxPool's indices, Dropout's mask, BatchNorm's saved mean and rstd,
 * the gradient ping-pong); not training, EsInfer's. */
static size_t
activation_bytes (const EsModel *model, int B, bool training, bool fused_last)
{
  size_t bytes = 0;
  int64_t max_act = es_model_max_act (model);
  int n = es_model_n_layers (model);

  if (!training)
    {
      /* EsInfer: two buffers as wide as the widest layer that writes, and MaxPool's
       * indices. */
      size_t widest = 1, argmax = 0;

      for (int i = 0; i < n; i++)
        {
          const EsLayerInfo *l = es_model_layer (model, i);

          if (!es_infer_identity (l->spec.kind))
            widest = ES_MAX (widest, (size_t) l->out_floats);
          if (l->spec.kind == ES_LAYER_MAXPOOL2D)
            argmax = ES_MAX (argmax, (size_t) l->out_floats);
        }
      return (size_t) B * (2 * widest * sizeof (float) + argmax * sizeof (int32_t));
    }
  for (int i = 0; i < n; i++)
    {
      const EsLayerInfo *l = es_model_layer (model, i);
      size_t rows_n = (size_t) B * (size_t) l->out_floats;

      if (l->spec.kind == ES_LAYER_FLATTEN)
        continue;
      if (!(i == n - 1 && fused_last))
        bytes += charged (rows_n * sizeof (float));
      if (l->spec.kind == ES_LAYER_MAXPOOL2D)
        bytes += charged (rows_n * sizeof (int32_t));
      else if (l->spec.kind == ES_LAYER_DROPOUT)
        bytes += charged (rows_n);
      else if (l->spec.kind == ES_LAYER_BATCHNORM)
        bytes += 2 * charged ((size_t) l->in.dims[0] * sizeof (float));
    }
  /* gradient ping-pong */
  bytes += 2 * charged ((size_t) B * (size_t) max_act * sizeof (float));
  return bytes;
}

/* What the trainer allocates for the features cfg plans for: the mask (P bytes), per
 * fake-quantized layer its weights and a batch of its input, and the teacher's
 * parameters, its two activation buffers and the softened probabilities (2 B F). */
static void
plan_slimming (const EsModel *model, const EsTrainConfig *cfg, int batch, EsMemPlan *plan)
{
  if (cfg->plan_mask)
    plan->weights += charged ((size_t) es_model_n_params (model));
  if (cfg->plan_fake_quant)
    for (int i = 0; i < es_model_n_layers (model); i++)
      {
        const EsLayerInfo *l = es_model_layer (model, i);

        if (l->spec.kind == ES_LAYER_DENSE || l->spec.kind == ES_LAYER_CONV2D)
          {
            plan->weights += charged ((size_t) es_model_tensor (model, l->first_tensor)->size
                                      * sizeof (float));
            plan->activations += charged ((size_t) batch * (size_t) es_shape_size (&l->in)
                                          * sizeof (float));
          }
      }
  if (cfg->plan_teacher != NULL)
    {
      const EsModel *t = cfg->plan_teacher;
      EsShape out = es_model_output_shape (model);
      size_t soft = charged ((size_t) batch * (size_t) es_shape_size (&out) * sizeof (float));

      plan->weights += charged ((size_t) es_model_n_params (t) * sizeof (float))
                       + charged ((size_t) es_model_n_buffers (t) * sizeof (float));
      /* teacher_new's two buffers and MaxPool indices are EsInfer's */
      plan->activations += activation_bytes (t, batch, false, false) + 2 * soft;
    }
}

/* The CUDA backend's 16-bit copy of a stored matrix (rows, cols): its rows padded to
 * a multiple of 8 values, the copy to 256 bytes (half_bytes in es-cuda-ops.cu). */
static size_t
half_copy (size_t rows, size_t cols)
{
  return ES_CEIL_DIV (rows * (ES_CEIL_DIV (cols, (size_t) 8) * 8) * 2, (size_t) 256) * 256;
}

/* The bytes of the 16-bit operand copies the largest product of layer l makes at B
 * rows, as es-cuda-ops.cu lays them out: Dense forward x (B,IN) and w (OUT,IN);
 * backward dout (B,OUT), w and x with the input gradient (dinp), dout and x without;
 * Conv2D per image (the least the backend takes; more images per product when the
 * budget has room), forward w (OC,CKK) and the columns (CKK,OHW), backward the output
 * gradient's columns (OC,OHW) with the columns, or with w. */
static size_t
half_plan (const EsLayerInfo *l, size_t B, bool training, bool dinp)
{
  if (l->spec.kind == ES_LAYER_DENSE)
    {
      size_t in = (size_t) es_shape_size (&l->in), out = (size_t) es_shape_size (&l->out);
      size_t fwd = half_copy (B, in) + half_copy (out, in);

      if (!training)
        return fwd;
      return ES_MAX (fwd, dinp ? half_copy (B, out) + half_copy (out, in) + half_copy (B, in)
                               : half_copy (B, out) + half_copy (B, in));
    }
  if (l->spec.kind == ES_LAYER_CONV2D)
    {
      size_t ckk = (size_t) l->in.dims[0] * (size_t) l->spec.kernel * (size_t) l->spec.kernel;
      size_t ohw = (size_t) l->out.dims[1] * (size_t) l->out.dims[2];
      size_t oc = (size_t) l->spec.filters;
      size_t fwd = half_copy (oc, ckk) + half_copy (ckk, ohw);

      if (!training)
        return fwd;
      fwd = ES_MAX (fwd, half_copy (oc, ohw) + half_copy (ckk, ohw));
      return dinp ? ES_MAX (fwd, half_copy (oc, ckk) + half_copy (oc, ohw)) : fwd;
    }
  return 0;
}

/* The CPU backend's convolution workspace for layer l at B rows on T threads, as
 * es-cpu.c takes it (one block, grown to the largest request, in steps of 64 KiB):
 * forward, each thread's columns (C*K*K, OH*OW), rows of 16 floats (none for a 1x1
 * convolution of stride 1 without padding: the image is its own columns); backward,
 * per thread (at most one per image) the columns and private weight and bias gradient
 * partials (OC*C*K*K + OC). */
static size_t
cpu_conv_workspace (const EsLayerInfo *l, size_t B, size_t T, bool training)
{
  const size_t ckk = (size_t) l->in.dims[0] * (size_t) l->spec.kernel * (size_t) l->spec.kernel;
  const size_t ohw = (size_t) l->out.dims[1] * (size_t) l->out.dims[2];
  const size_t oc = (size_t) l->spec.filters;
  const bool direct = l->spec.kernel == 1 && l->spec.stride == 1 && l->spec.padding == 0;
  const size_t fwd = direct ? 0 : ES_CEIL_DIV (ckk * ohw, (size_t) 16) * 16 * T;
  size_t bwd = 0, nt_b = ES_MIN (T, ES_MAX (B, (size_t) 1));

  if (training && !(direct && nt_b <= 1))
    bwd = ES_CEIL_DIV ((direct ? 0 : ckk * ohw) + oc * ckk + oc, (size_t) 16) * 16 * nt_b;
  return ES_CEIL_DIV (ES_MAX (fwd, bwd) * sizeof (float), (size_t) 65536) * 65536;
}

/* The CPU backend's packed copies of a Dense layer's weights at inference (the
 * forward EsInfer runs, dense_forward_act in es-cpu.c), with es-cpu.c's numbers: on a
 * CPU whose products run on its own AVX-512 kernels (es_cpu_backend_gemm_path), a layer
 * of at least 48 outputs (DENSE_PACKED_MIN_OUT) at 96 rows or more
 * (DENSE_PACKED_MIN_ROWS) copies w (OUT,IN) and b into panels, OUT rounded up to 16
 * columns: OUT16 * (IN + 1) floats, rounded to 16, when that is at most 2^20 floats
 * (DENSE_PACKED_MAX_FLOATS); one copy per thread of the product in the workspace,
 * grown in steps of 64 KiB. Counted for all T threads (a product too small to split
 * takes fewer). The CPU is asked only when a layer would pack. */
static size_t
cpu_dense_packed_workspace (const EsModel *model, size_t B, size_t T)
{
  size_t floats = 0;

  if (B < 96)
    return 0;
  for (int i = 0; i < es_model_n_layers (model); i++)
    {
      const EsLayerInfo *l = es_model_layer (model, i);
      size_t in, npad, stride;

      if (l->spec.kind != ES_LAYER_DENSE || l->spec.units < 48 || l->in.dims[0] <= 0)
        continue;
      in = (size_t) l->in.dims[0];
      npad = ES_CEIL_DIV ((size_t) l->spec.units, (size_t) 16) * 16;
      stride = ES_CEIL_DIV (npad * in + npad, (size_t) 16) * 16;
      if (stride <= ((size_t) 1 << 20))
        floats = ES_MAX (floats, stride * T);
    }
  if (floats == 0 || strcmp (es_cpu_backend_gemm_path (), "avx512") != 0)
    return 0;
  return ES_CEIL_DIV (floats * sizeof (float), (size_t) 65536) * 65536;
}

/* The convolution workspace of model's layers (forward only for a teacher's) on the
 * backend cfg plans for: the largest of them, which the backend keeps. On the CUDA
 * backend (conv_workspace in es-cuda-ops.cu) one image's columns and its output
 * (gradient) columns, (C*K*K + OC) * OH*OW floats: the least its chunks take. */
static size_t
conv_workspace_plan (const EsModel *model, const EsTrainConfig *cfg, size_t B, bool training)
{
  size_t ws = 0, T = cfg != NULL && cfg->plan_threads > 1 ? (size_t) cfg->plan_threads : 1;

  for (int i = 0; i < es_model_n_layers (model); i++)
    {
      const EsLayerInfo *l = es_model_layer (model, i);

      if (l->spec.kind != ES_LAYER_CONV2D)
        continue;
      if (cfg != NULL && cfg->plan_cuda)
        ws = ES_MAX (ws, ((size_t) l->in.dims[0] * (size_t) l->spec.kernel * (size_t) l->spec.kernel
                          + (size_t) l->spec.filters)
                         * (size_t) l->out.dims[1] * (size_t) l->out.dims[2] * sizeof (float));
      else
        ws = ES_MAX (ws, cpu_conv_workspace (l, B, T, training));
    }
  return ws;
}

void
es_mem_plan (const EsModel *model, const EsTrainConfig *cfg, int batch, bool training,
             EsMemPlan *plan)
{
  EsShape out = es_model_output_shape (model);
  EsShape in = es_model_input_shape (model);
  size_t P = (size_t) es_model_n_params (model), Q = (size_t) es_model_n_buffers (model);
  size_t F = (size_t) es_shape_size (&out), D = (size_t) es_shape_size (&in);
  size_t B = (size_t) batch;
  bool cuda = cfg != NULL && cfg->plan_cuda;
  size_t data_batch;

  memset (plan, 0, sizeof *plan);
  if (!training)
    {
      /* es_infer_new's blocks: the parameters and buffers (a float each at the least),
       * the two activation buffers and MaxPool's indices, the second buffer as wide
       * as the input too where the input is uploaded into it (a backend that is not
       * host memory). Nothing is charged as data: results come back to host memory.
       * Then what es_infer_run's ops take: the convolutions' workspace and, on the CPU
       * backend, the packed copies of large Dense products, in one block there (the
       * backend grows a single workspace to the largest request). */
      size_t widest = 1, T = cfg != NULL && cfg->plan_threads > 1 ? (size_t) cfg->plan_threads : 1;

      for (int i = 0; i < es_model_n_layers (model); i++)
        if (!es_infer_identity (es_model_layer (model, i)->spec.kind))
          widest = ES_MAX (widest, (size_t) es_model_layer (model, i)->out_floats);
      plan->weights = ES_MAX (P, (size_t) 1) * sizeof (float)
                      + ES_MAX (Q, (size_t) 1) * sizeof (float);
      plan->activations = activation_bytes (model, batch, false, false);
      if (cuda && D > widest)
        plan->activations += B * (D - widest) * sizeof (float);
      plan->workspace = conv_workspace_plan (model, cfg, B, false);
      if (!cuda)
        plan->workspace = ES_MAX (plan->workspace, cpu_dense_packed_workspace (model, B, T));
      goto total;
    }

  /* tr_allocate: parameters, buffers and their copy from before the batch (BatchNorm's
   * running statistics, restored when a batch goes bad), gradients, optimizer slots */
  plan->weights = charged (P * sizeof (float)) + charged (Q * sizeof (float))
                  + Q * sizeof (float);
  plan->gradients = charged (P * sizeof (float));
  plan->optimizer = (size_t) (cfg != NULL ? optimizer_slots (cfg->optimizer) : 2)
                    * charged (P * sizeof (float));
  /* the layers' outputs and records, the loss probabilities and per-row losses */
  plan->activations = activation_bytes (model, batch, true,
                                        cfg != NULL && last_is_fused (model, cfg->loss))
                      + charged (B * F * sizeof (float)) + charged (B * sizeof (int32_t));
  /* one micro-batch's inputs, labels and targets on the backend */
  data_batch = charged (B * D * sizeof (float)) + charged (B * sizeof (int32_t))
               + charged (B * F * sizeof (float));
  plan->data = data_batch;
  if (cfg != NULL && cfg->plan_prefetch)
    plan->data += 2 * data_batch;  /* es_trainer_prefetch's two slots */

  /* synchronized BatchNorm's partial sums (es_trainer_set_stat_reduce): 3 floats a
   * channel of the widest BatchNorm */
  {
    size_t widest = 0;

    for (int i = 0; i < es_model_n_layers (model); i++)
      if (es_model_layer (model, i)->spec.kind == ES_LAYER_BATCHNORM)
        widest = ES_MAX (widest, (size_t) es_model_layer (model, i)->in.dims[0]);
    if (widest > 0)
      plan->workspace += charged (3 * widest * sizeof (float));
  }

  if (cuda)
    {
      /* the CUDA backend's optional ops: resident batches' row indices (two halves of
       * a batch), and for deferred statistics and CUDA Graphs (softmax cross-entropy
       * only) the statistics, the table of scheduled values and its slot, fp16's scaler
       * and Dropout's seeds (dev_tables) */
      plan->data += charged (2 * B * sizeof (int32_t));
      if (cfg->loss == ES_LOSS_SOFTMAX_XENT)
        {
          size_t n_drop = 0;

          for (int i = 0; i < es_model_n_layers (model); i++)
            n_drop += es_model_layer (model, i)->spec.kind == ES_LAYER_DROPOUT;
          plan->workspace += charged (ES_STATS_N * sizeof (double))
                             + charged (HYPER_STEPS * 4 * sizeof (float))
                             + charged (sizeof (int32_t));
          if (cfg->precision == ES_PRECISION_FP16)
            plan->workspace += charged (ES_AMP_N * sizeof (double));
          if (n_drop > 0)
            plan->workspace += charged (HYPER_STEPS * n_drop * sizeof (uint64_t));
        }
      /* the backend's uint8 staging of a host batch (load_u8) and the argmax rows an
       * evaluation with predictions brings back */
      plan->workspace += B * D + B * sizeof (int32_t);
    }

  /* Convolutions run as im2col + GEMM (conv_workspace_plan), a teacher's too. */
  {
    size_t ws = conv_workspace_plan (model, cfg, B, true);

    if (cfg != NULL && cfg->plan_teacher != NULL)
      ws = ES_MAX (ws, conv_workspace_plan (cfg->plan_teacher, cfg, B, false));
    plan->workspace += ws;
  }
  /* bf16/fp16: the backend rounds each product's operands to 16 bits in a workspace
   * of its own, as large as the largest product's copies (half_plan) */
  if (cfg != NULL && cfg->precision != ES_PRECISION_FP32)
    {
      size_t half = 0;
      int first_grad = es_model_n_layers (model);

      for (int i = es_model_n_layers (model) - 1; i >= 0; i--)
        if (es_model_layer (model, i)->n_params > 0)
          first_grad = i;
      for (int i = 0; i < es_model_n_layers (model); i++)
        half = ES_MAX (half, half_plan (es_model_layer (model, i), B, true, i > first_grad));
      if (cfg->plan_teacher != NULL)
        for (int i = 0; i < es_model_n_layers (cfg->plan_teacher); i++)
          half = ES_MAX (half, half_plan (es_model_layer (cfg->plan_teacher, i), B, false,
                                          false));
      plan->workspace += half;
    }
  if (cfg != NULL)
    plan_slimming (model, cfg, batch, plan);
total:
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
  /* Where the backend has the ops of resident batches, deferred statistics and CUDA
   * Graphs, their buffers now, so that they are part of the plan that fits (the
   * backend's workspaces, which grow into the room a budget has, would otherwise take
   * it first): the row indices, and with softmax cross-entropy (the only loss those
   * steps run) the statistics, the table of scheduled values, fp16's scaler state and
   * Dropout's seeds (dev_buffers). */
  if (tr->be->iface->gather_rows != NULL)
    ALLOC (tr->rows_dev, ES_MEM_DATA, 2 * (size_t) tr->batch * sizeof (int32_t));
  if (tr->be->iface->softmax_xent_forward_acc != NULL && tr->be->iface->step_advance != NULL
      && tr->cfg.loss == ES_LOSS_SOFTMAX_XENT)
    {
      ALLOC (tr->stats_dev, ES_MEM_WORKSPACE, ES_STATS_N * sizeof (double));
      ALLOC (tr->hyper, ES_MEM_WORKSPACE, HYPER_STEPS * 4 * sizeof (float));
      ALLOC (tr->hyper_slot, ES_MEM_WORKSPACE, sizeof (int32_t));
      if (tr->cfg.precision == ES_PRECISION_FP16)
        ALLOC (tr->amp_dev, ES_MEM_WORKSPACE, ES_AMP_N * sizeof (double));
      tr->n_drop = dropout_index (tr, tr->n_exec);
      if (tr->be->iface->dropout_forward_dev != NULL && tr->n_drop > 0)
        ALLOC (tr->seeds, ES_MEM_WORKSPACE, HYPER_STEPS * (size_t) tr->n_drop * sizeof (uint64_t));
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

/* ------------------------------------------------------------------------------ */
/* mixed precision: the backend's matrix products in cfg.precision, and fp16's dynamic
 * loss scaling around the optimizer step (es-train.h, EsPrecision) */

/* The backend's matrix products in the trainer's precision; the CPU backends (no
 * set_precision) compute in fp32 only and refuse the others. */
static bool
amp_set_backend (EsBackend *be, EsPrecision precision, EsError *err)
{
  if (be->iface->set_precision != NULL)
    return be->iface->set_precision (be, (int) precision, err);
  if (precision == ES_PRECISION_FP32)
    return true;
  es_error_set (err, ES_ERR_UNSUPPORTED,
                "The %s backend computes in fp32 only: %s training needs the CUDA backend",
                be->iface->name, es_precision_name (precision));
  return false;
}

/* The configuration's precision and scaler settings, checked. */
static bool
amp_check (const EsTrainConfig *cfg, EsError *err)
{
  if ((unsigned) cfg->precision > ES_PRECISION_FP16)
    {
      es_error_set (err, ES_ERR_INVALID, "Unknown precision %d", (int) cfg->precision);
      return false;
    }
  if (cfg->precision == ES_PRECISION_FP16
      && (!(cfg->loss_scale_init >= 1.0f) || !isfinite (cfg->loss_scale_init)
          || cfg->loss_scale_interval < 1 || !(cfg->loss_scale_growth >= 1.0f)
          || !isfinite (cfg->loss_scale_growth) || !(cfg->loss_scale_backoff > 0.0f)
          || !(cfg->loss_scale_backoff < 1.0f)))
    {
      es_error_set (err, ES_ERR_INVALID,
                    "Loss scaling needs an initial scale of at least 1, a growth interval of "
                    "at least 1 step, a growth factor of at least 1 and a backoff factor "
                    "between 0 and 1");
      return false;
    }
  return true;
}

/* fp16, before masks, clipping and the update: this step's gradients were computed
 * from the loss times loss_scale. When one of them overflowed (an inf or NaN, seen in
 * their sum of squares, which a finite fp32 vector cannot overflow in double) they are
 * dropped, the step is skipped and the scale lowered; else they are unscaled (exactly:
 * the scale is a power of two with the default factors) and, after loss_scale_interval
 * clean steps in a row, the scale grows. True when the step is to be taken. */
static bool
amp_unscale (EsTrainer *tr)
{
  EsBackend *be = tr->be;
  const EsTrainConfig *c = &tr->cfg;
  int64_t P = es_model_n_params (tr->model);

  if (c->precision != ES_PRECISION_FP16)
    return true;
  if (!isfinite (be->iface->sum_squares (be, tr->grads, P)))
    {
      be->iface->zero (be, tr->grads, (size_t) P * sizeof (float));
      tr->loss_scale = ES_MAX (tr->loss_scale * c->loss_scale_backoff, 1e-30f);
      tr->scale_clean = 0;
      tr->skipped++;
      return false;
    }
  be->iface->scale (be, tr->grads, 1.0f / tr->loss_scale, P);
  if (++tr->scale_clean >= c->loss_scale_interval)
    {
      if (isfinite (tr->loss_scale * c->loss_scale_growth))
        tr->loss_scale *= c->loss_scale_growth;
      tr->scale_clean = 0;
    }
  return true;
}

float
es_trainer_loss_scale (const EsTrainer *tr)
{
  return tr->loss_scale;
}

int64_t
es_trainer_skipped_steps (const EsTrainer *tr)
{
  return tr->skipped;
}

bool
es_trainer_get_loss_scaler (EsTrainer *tr, float *scale, int64_t *clean, int64_t *skipped)
{
  if (tr->cfg.precision != ES_PRECISION_FP16)
    return false;
  if (tr->amp_dev_live)
    {
      double s[ES_STATS_N];

      (void) stats_fold (tr, s);
    }
  if (scale != NULL)
    *scale = tr->loss_scale;
  if (clean != NULL)
    *clean = tr->scale_clean;
  if (skipped != NULL)
    *skipped = tr->skipped;
  return true;
}

bool
es_trainer_set_loss_scaler (EsTrainer *tr, float scale, int64_t clean, int64_t skipped,
                            EsError *err)
{
  if (tr->cfg.precision != ES_PRECISION_FP16)
    {
      es_error_set (err, ES_ERR_UNSUPPORTED, "Only fp16 training scales its loss (this "
                    "trainer computes in %s)", es_precision_name (tr->cfg.precision));
      return false;
    }
  if (!(scale > 0.0f) || !isfinite (scale) || clean < 0 || clean > INT32_MAX || skipped < 0)
    {
      es_error_set (err, ES_ERR_INVALID, "A loss scaler's state needs a finite positive "
                    "scale (got %g) and counts of at least 0", (double) scale);
      return false;
    }
  if (tr->amp_dev_live)
    amp_leave_device (tr);  /* what the device counted belongs to the old state */
  tr->loss_scale = scale;
  tr->scale_clean = (int) clean;
  tr->skipped = skipped;
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
  if (!check_supported (model, be, cfg, err) || !amp_check (cfg, err)
      || !amp_set_backend (be, cfg->precision, err))
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
  tr->cfg.plan_cuda = strcmp (be->iface->name, "cuda") == 0;  /* its workspace layout */
  tr->cfg.plan_threads = tr->cfg.plan_cuda ? 1 : ES_MAX (be->n_threads, 1);
  tr->batch = batch;
  tr->D = es_shape_size (&in);
  tr->F_out = es_shape_size (&out);
  tr->fused_last = last_is_fused (model, cfg->loss);
  tr->n_exec = es_model_n_layers (model) - (tr->fused_last ? 1 : 0);
  tr->lr = cfg->lr;
  tr->loss_scale = cfg->precision == ES_PRECISION_FP16 ? cfg->loss_scale_init : 1.0f;
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

  /* Halve the micro-batch until the plan fits what is left of the budget: the plan
   * bounds what the run charges (es_mem_plan), so a budget of exactly it runs at full
   * batch. The resident batches' row indices are made for whole batches. */
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
          need = plan.total;
          if (be->iface->gather_rows != NULL)
            need += 2 * (size_t) (batch - tr->micro) * sizeof (int32_t);
          if (need <= avail || (tr->micro + 1) / 2 < tr->min_micro || tr->micro == 1)
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
  graph_free_all (tr);
  tr_release_all (tr);
  if (tr->cfg.precision != ES_PRECISION_FP32)   /* the backend back to its default */
    amp_set_backend (tr->be, ES_PRECISION_FP32, NULL);
  free (tr->exec);
  free (tr->prof_layers);
  free (tr->bn_hostf);
  free (tr->bn_hostd);
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

  if (tr->amp_dev_live && reset_optimizer)
    amp_leave_device (tr);   /* the device's pending count of skipped steps first */
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

  if ((batch->resident != NULL || tr->ahead_full[0] || tr->ahead_full[1])
      && graph_load_rows (tr, batch, r0, B))
    return;  /* resident rows gathered, or a batch staged ahead taken */
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

/* ---- synchronized BatchNorm (es_trainer_set_stat_reduce) ---------------------------
 * The statistics of a training forward are summed over every process by the hook: per
 * channel the value count n_r, n_r m_r and M2_r + n_r m_r^2 (m_r, M2_r this process'
 * two-pass mean and squared deviations, m_r carried as two floats), in double, so the
 * global variance S2 / N - mean^2 loses nothing a float would keep. Backward sums dout
 * and dout * xhat, each times this process' batch rows: dout carries 1 / rows (the mean
 * loss of this process' rows), the gradient reduction later weights this process by
 * rows / global rows, and with u = dout * rows summed to U over every process the
 * input gradient in this process' own scale is gamma rstd (dout - (U1 + xhat U2) /
 * (rows N)). A process whose rows count for nothing adds zeros through the hook. */

/* forward of BatchNorm layer e on B rows of inp (B, CH, SP), statistics over every
 * process: e->bn_mean, e->bn_rstd and the running statistics as the fused op sets them */
static void
bn_sync_forward (EsTrainer *tr, Exec *e, const float *inp, int B, int CH, int SP)
{
  EsBackend *be = tr->be;
  const EsBackendIface *b = be->iface;
  const EsLayerSpec *s = &e->info->spec;
  float *hf = tr->bn_hostf;
  double *v = tr->bn_hostd;
  const double n = (double) B * SP;

  b->batchnorm_stats (be, tr->bn_part, inp, B, CH, SP);
  b->download (be, hf, tr->bn_part, (size_t) 3 * CH * sizeof (float));
  for (int c = 0; c < CH; c++)
    {
      const double m = (double) hf[c] + (double) hf[CH + c];

      v[c] = n;
      v[CH + c] = n * m;
      v[2 * CH + c] = (double) hf[2 * CH + c] + n * m * m;
    }
  tr->stat_reduce (tr->stat_user, v, 3 * CH);
  e->bn_count = v[0];
  /* hf: mean (CH), rstd (CH), then the running statistics (2, CH) */
  b->download (be, hf + 2 * CH, e->running, (size_t) 2 * CH * sizeof (float));
  for (int c = 0; c < CH; c++)
    {
      const double N = v[c];
      const double mu = N > 0 ? v[CH + c] / N : 0.0;
      const double var = N > 0 ? fmax (v[2 * CH + c] / N - mu * mu, 0.0) : 0.0;
      const double unbiased = N > 1 ? var * N / (N - 1) : var;
      float *rm = &hf[2 * CH + c], *rv = &hf[3 * CH + c];

      hf[c] = (float) mu;
      hf[CH + c] = 1.0f / sqrtf ((float) var + s->eps);
      *rm = (1.0f - s->momentum) * *rm + s->momentum * (float) mu;
      *rv = (1.0f - s->momentum) * *rv + s->momentum * (float) unbiased;
    }
  b->upload (be, e->bn_mean, hf, (size_t) CH * sizeof (float));
  b->upload (be, e->bn_rstd, hf + CH, (size_t) CH * sizeof (float));
  b->upload (be, e->running, hf + 2 * CH, (size_t) 2 * CH * sizeof (float));
  b->batchnorm_forward_apply (be, e->out, inp, e->w, e->b, e->bn_mean, e->bn_rstd, B, CH, SP);
}

/* backward of BatchNorm layer e: dgamma, dbeta this process' part; dinp (not NULL) from
 * the sums over every process */
static void
bn_sync_backward (EsTrainer *tr, Exec *e, float *dinp, const float *dout, const float *inp,
                  int B, int CH, int SP)
{
  EsBackend *be = tr->be;
  const EsBackendIface *b = be->iface;
  float *hf = tr->bn_hostf;
  double *v = tr->bn_hostd;
  const double rows = (double) ES_MAX (tr->bn_rows, 1);

  b->batchnorm_backward_stats (be, tr->bn_part, e->dw, e->db, dout, inp, e->bn_mean,
                               e->bn_rstd, B, CH, SP);
  b->download (be, hf, tr->bn_part, (size_t) 2 * CH * sizeof (float));
  for (int c = 0; c < 2 * CH; c++)
    v[c] = (double) hf[c] * rows;
  tr->stat_reduce (tr->stat_user, v, 2 * CH);
  for (int c = 0; c < 2 * CH; c++)
    hf[c] = e->bn_count > 0 ? (float) (v[c] / (rows * e->bn_count)) : 0.0f;
  b->upload (be, tr->bn_part, hf, (size_t) 2 * CH * sizeof (float));
  b->batchnorm_backward_apply (be, dinp, dout, inp, e->w, e->bn_mean, e->bn_rstd,
                               tr->bn_part, B, CH, SP);
}

/* ---- a bad loss under data parallelism (es_trainer_set_grad_reduce) ----------------
 * The step whose loss is not finite on one process goes on there to its reductions
 * with a NaN written into the first gradient float of every layer it hands to the
 * bucket hook; a sum holding a NaN is NaN, so after finish every process reads the
 * mark of the last layer with parameters and fails the step alike (marks_clear). */

/* grads[at] = NaN */
static void
nan_mark (EsTrainer *tr, int64_t at)
{
  const float nan = NAN;

  tr->be->iface->upload (tr->be, tr->grads + at, &nan, sizeof nan);
}

/* The gradient float the marks are read at: the first of the last layer with
 * parameters, the first one backward hands over; -1 when no layer has any. */
static int64_t
mark_index (const EsTrainer *tr)
{
  for (int i = tr->n_exec - 1; i >= 0; i--)
    if (tr->exec[i].info->n_params > 0)
      return es_model_tensor (tr->model, tr->exec[i].info->first_tensor)->offset;
  return -1;
}

static void grad_reduce_failed (EsTrainer *tr);

/* After finish: false and ES_ERR_NUMERIC (the batch undone as grad_reduce_failed does)
 * when the reduced gradients carry a mark or are not finite there. */
static bool
marks_clear (EsTrainer *tr, EsError *err)
{
  int64_t at = mark_index (tr);
  float x = 0.0f;
  bool own = tr->step_bad, nan = tr->step_bad_nan;

  if (at < 0)
    return true;
  tr->be->iface->download (tr->be, &x, tr->grads + at, sizeof x);
  if (isfinite (x))
    return true;
  grad_reduce_failed (tr);
  tr->numeric_own = own;
  /* core tells NaN from infinite by "NaN" in the message: its translations keep it */
  if (own && nan)
    es_error_set (err, ES_ERR_NUMERIC, "The loss became NaN at step %lld",
                  (long long) tr->steps + 1);
  else if (own)
    es_error_set (err, ES_ERR_NUMERIC, "The loss became infinite at step %lld",
                  (long long) tr->steps + 1);
  else
    es_error_set (err, ES_ERR_NUMERIC, "At step %lld the loss of another process, or the "
                  "gradients summed over the processes, became NaN or infinite",
                  (long long) tr->steps + 1);
  return false;
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
          if (e->out == e->own && tr->graph_seeds_on && exec == tr->exec)
            /* a step being recorded as a CUDA Graph: the seed below, of the step each
             * replay takes, from the device table (the graph block) */
            b->dropout_forward_dev (be, e->out, e->mask, inp, s->rate, tr->seeds,
                                    tr->hyper_slot, tr->n_drop, dropout_index (tr, i), N);
          else if (e->out == e->own)
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

            if (train && tr->stat_reduce != NULL && exec == tr->exec)
              bn_sync_forward (tr, e, inp, B, CH, SP);
            else if (train)
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

            if (tr->stat_reduce != NULL && dinp != NULL)
              bn_sync_backward (tr, e, dinp, dout, inp, B, CH, (int) (e->info->out_floats / CH));
            else
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
        {
          int64_t off = es_model_tensor (tr->model, e->info->first_tensor)->offset;

          if (tr->step_bad)
            nan_mark (tr, off);
          tr->grad_bucket (tr->grad_user, be, tr->grads, off, e->info->n_params);
        }
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
  if (batch->resident != NULL)
    return check_resident_batch (tr, batch, err);
  if ((batch->x_f32 == NULL) == (batch->x_u8 == NULL))
    {
      es_error_set (err, ES_ERR_INVALID, "A batch needs exactly one of float or uint8 inputs");
      return false;
    }
  if (tr->cfg.loss == ES_LOSS_SOFTMAX_XENT ? batch->labels == NULL : batch->targets == NULL)
    {
      es_error_set (err, ES_ERR_INVALID, "A batch for the %s loss needs %s",
                    es_loss_kind_name (tr->cfg.loss),
                    tr->cfg.loss == ES_LOSS_SOFTMAX_XENT ? es_translate ("class labels")
                                                         : es_translate ("targets"));
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

bool
es_trainer_numeric_was_own (const EsTrainer *tr)
{
  return tr->numeric_own;
}

bool
es_trainer_set_stat_reduce (EsTrainer *tr, EsStatReduceFunc fn, void *user, EsError *err)
{
  const EsBackendIface *b = tr->be->iface;
  int widest = 0;

  if (fn != NULL
      && (b->batchnorm_stats == NULL || b->batchnorm_forward_apply == NULL
          || b->batchnorm_backward_stats == NULL || b->batchnorm_backward_apply == NULL))
    {
      es_error_set (err, ES_ERR_UNSUPPORTED,
                    "The %s backend cannot synchronize BatchNorm across processes", b->name);
      return false;
    }
  for (int i = 0; i < es_model_n_layers (tr->model); i++)
    if (es_model_layer (tr->model, i)->spec.kind == ES_LAYER_BATCHNORM)
      widest = ES_MAX (widest, es_model_layer (tr->model, i)->in.dims[0]);
  if (fn != NULL && widest > 0 && tr->bn_part == NULL)
    {
      tr->bn_hostf = malloc ((size_t) 4 * widest * sizeof (float));
      tr->bn_hostd = malloc ((size_t) 3 * widest * sizeof (double));
      if (tr->bn_hostf == NULL || tr->bn_hostd == NULL)
        {
          es_error_set (err, ES_ERR_NOMEM, "Out of memory for the BatchNorm statistics");
          return false;
        }
      tr->bn_part = tr_alloc (tr, ES_MEM_WORKSPACE, (size_t) 3 * widest * sizeof (float), err);
      if (tr->bn_part == NULL)
        return false;
    }
  tr->stat_reduce = fn;
  tr->stat_user = fn != NULL ? user : NULL;
  return true;
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
  tr->step_bad = false;
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
  double s[ES_STATS_N];

  if (tr->amp_dev_live)
    (void) stats_fold (tr, s);   /* steps the device skipped, which the host counted */
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
      /* n is 1 or 2 (a slot per moment): two whole messages, not a plural */
      if (n == 1)
        es_error_set (err, ES_ERR_INVALID, "An optimizer state needs a step count >= 0 and "
                      "one vector of parameters");
      else
        es_error_set (err, ES_ERR_INVALID, "An optimizer state needs a step count >= 0 and "
                      "%d vectors of parameters", n);
      return false;
    }
  if (tr->amp_dev_live)
    amp_leave_device (tr);   /* the device's pending count of skipped steps first */
  for (int k = 0; k < n; k++)
    b->upload (tr->be, dev[k], slots + (size_t) k * P, P * sizeof (float));
  b->zero (tr->be, tr->grads, P * sizeof (float));
  tr->accum_done = 0;
  tr->steps = steps;
  tr->lr = steps > 0 ? scheduled_lr (&tr->cfg, steps - 1) : tr->cfg.lr;
  return true;
}

/* ------------------------------------------------------------------------------ */
/* resident data, deferred statistics, CUDA Graphs, uploads ahead (es-train.h) */

/* The upload_ahead slots: batches alternate between 0 and 1, row indices between 2
 * and 3. */
#define ROWS_SLOT 2

struct EsResident {
  EsBackend *be;
  void      *x;          /* (rows, D) uint8 or float, backend memory */
  bool       u8;
  int32_t   *labels;     /* (rows) or NULL */
  float     *targets;    /* (rows, T) or NULL */
  int64_t    rows, D, T;
};

static size_t
resident_x_bytes (const EsResident *res)
{
  return (size_t) res->rows * (size_t) res->D * (res->u8 ? 1 : sizeof (float));
}

void
es_resident_free (EsResident *res)
{
  const EsBackendIface *b;

  if (res == NULL)
    return;
  b = res->be->iface;
  if (res->x != NULL)
    b->free (res->be, ES_MEM_DATA, res->x, resident_x_bytes (res));
  if (res->labels != NULL)
    b->free (res->be, ES_MEM_DATA, res->labels, (size_t) res->rows * sizeof (int32_t));
  if (res->targets != NULL)
    b->free (res->be, ES_MEM_DATA, res->targets,
             (size_t) res->rows * (size_t) res->T * sizeof (float));
  free (res);
}

EsResident *
es_resident_new (EsBackend *be, const uint8_t *x_u8, const float *x_f32, int64_t rows,
                 int64_t D, const int32_t *labels, const float *targets, int64_t T,
                 EsError *err)
{
  const EsBackendIface *b = be->iface;
  EsResident *res;

  if (b->gather_rows == NULL || b->gather_i32 == NULL)
    {
      es_error_set (err, ES_ERR_UNSUPPORTED, "The %s backend cannot keep a dataset resident",
                    b->name);
      return NULL;
    }
  if ((x_u8 == NULL) == (x_f32 == NULL) || rows <= 0 || rows > INT32_MAX || D <= 0
      || (targets != NULL && T <= 0))
    {
      es_error_set (err, ES_ERR_INVALID, "A resident dataset needs rows, and exactly one of "
                    "float or uint8 inputs");
      return NULL;
    }
  if ((res = calloc (1, sizeof *res)) == NULL)
    {
      es_error_set (err, ES_ERR_NOMEM, "Out of memory");
      return NULL;
    }
  res->be = be;
  res->u8 = x_u8 != NULL;
  res->rows = rows;
  res->D = D;
  res->T = targets != NULL ? T : 0;
  if ((res->x = b->alloc (be, ES_MEM_DATA, resident_x_bytes (res), err)) == NULL
      || (labels != NULL
          && (res->labels = b->alloc (be, ES_MEM_DATA, (size_t) rows * sizeof (int32_t),
                                      err)) == NULL)
      || (targets != NULL
          && (res->targets = b->alloc (be, ES_MEM_DATA,
                                       (size_t) rows * (size_t) T * sizeof (float), err)) == NULL))
    {
      es_resident_free (res);
      return NULL;
    }
  b->upload (be, res->x, res->u8 ? (const void *) x_u8 : (const void *) x_f32,
             resident_x_bytes (res));
  if (labels != NULL)
    b->upload (be, res->labels, labels, (size_t) rows * sizeof (int32_t));
  if (targets != NULL)
    b->upload (be, res->targets, targets, (size_t) rows * (size_t) T * sizeof (float));
  return res;
}

int64_t
es_resident_rows (const EsResident *res)
{
  return res->rows;
}

/* A resident batch: its dataset matches the model and the loss, its rows exist. */
static bool
check_resident_batch (const EsTrainer *tr, const EsBatch *batch, EsError *err)
{
  const EsResident *res = batch->resident;

  if (res->be != tr->be || res->D != tr->D
      || (tr->cfg.loss == ES_LOSS_SOFTMAX_XENT ? res->labels == NULL
                                              : res->targets == NULL || res->T != tr->F_out))
    {
      es_error_set (err, ES_ERR_INVALID, "The resident dataset does not match the trainer "
                    "(backend, input size, labels or targets)");
      return false;
    }
  if (batch->rows == NULL)
    {
      /* consecutive rows from first (evaluation: graph_train_batch refuses them) */
      if (batch->first < 0 || batch->first > res->rows - batch->B)
        {
          es_error_set (err, ES_ERR_INVALID, "Rows %lld to %lld of the batch lie outside a "
                        "dataset of %lld", (long long) batch->first,
                        (long long) batch->first + batch->B - 1, (long long) res->rows);
          return false;
        }
      return true;
    }
  for (int r = 0; r < batch->B; r++)
    if (batch->rows[r] < 0 || batch->rows[r] >= res->rows)
      {
        es_error_set (err, ES_ERR_INVALID, "Row %d of the batch names row %d of a dataset of "
                      "%lld", r, batch->rows[r], (long long) res->rows);
        return false;
      }
  /* the device buffer of row indices, made on first use (the trainer is not const to
   * its allocations) */
  return rows_buffer ((EsTrainer *) tr, err);
}

/* The row indices of a resident batch on the device (made on first use). */
static bool
rows_buffer (EsTrainer *tr, EsError *err)
{
  if (tr->rows_dev == NULL
      && (tr->rows_dev = tr_alloc (tr, ES_MEM_DATA, 2 * (size_t) tr->batch * sizeof (int32_t),
                                   err)) == NULL)
    return false;
  return true;
}

/* The device statistics and the table of scheduled values (made by tr_allocate where
 * the backend has the ops, else here), started on first use (the statistics zeroed,
 * counted from the steps done now) with their host copies; false when they cannot be
 * had (the ordinary path is taken then). */
static bool
dev_buffers (EsTrainer *tr)
{
  EsError local = { 0 };

  if (tr->stats_dev == NULL
      && (tr->stats_dev = tr_alloc (tr, ES_MEM_WORKSPACE, ES_STATS_N * sizeof (double),
                                    &local)) == NULL)
    return false;
  if (!tr->stats_started)
    {
      tr->be->iface->zero (tr->be, tr->stats_dev, ES_STATS_N * sizeof (double));
      tr->stats_base = tr->steps;
      tr->stats_started = true;
    }
  if ((tr->hyper == NULL
       && (tr->hyper = tr_alloc (tr, ES_MEM_WORKSPACE, HYPER_STEPS * 4 * sizeof (float),
                                 &local)) == NULL)
      || (tr->hyper_slot == NULL
          && (tr->hyper_slot = tr_alloc (tr, ES_MEM_WORKSPACE, sizeof (int32_t),
                                         &local)) == NULL)
      || (tr->hyper_host == NULL
          && (tr->hyper_host = malloc (HYPER_STEPS * 4 * sizeof (float))) == NULL))
    return false;
  if (tr->cfg.precision == ES_PRECISION_FP16 && tr->amp_dev == NULL
      && (tr->amp_dev = tr_alloc (tr, ES_MEM_WORKSPACE, ES_AMP_N * sizeof (double),
                                  &local)) == NULL)
    return false;
  if (tr->be->iface->dropout_forward_dev != NULL)
    {
      tr->n_drop = dropout_index (tr, tr->n_exec);
      if (tr->n_drop > 0
          && ((tr->seeds == NULL
               && (tr->seeds = tr_alloc (tr, ES_MEM_WORKSPACE,
                                         HYPER_STEPS * (size_t) tr->n_drop * sizeof (uint64_t),
                                         &local)) == NULL)
              || (tr->seeds_host == NULL
                  && (tr->seeds_host = malloc (HYPER_STEPS * (size_t) tr->n_drop
                                               * sizeof (uint64_t))) == NULL)))
        return false;
    }
  return true;
}

/* Dropout layers before layer (their index in the seeds table). */
static int
dropout_index (const EsTrainer *tr, int layer)
{
  int n = 0;

  for (int i = 0; i < layer; i++)
    n += tr->exec[i].info->spec.kind == ES_LAYER_DROPOUT;
  return n;
}

/* Copy a training batch's row indices to rows_dev: through a pinned staging slot where
 * the backend has them (a copy from pageable memory may wait for the device), so the
 * step after it waits for nothing; released at the end of the batch. */
static void
upload_batch_rows (EsTrainer *tr, const EsBatch *batch)
{
  const EsBackendIface *b = tr->be->iface;
  void *dst;
  const void *src = batch->rows;
  size_t bytes = (size_t) batch->B * sizeof (int32_t);

  tr->rows_par ^= 1;
  dst = tr->rows_dev + (size_t) tr->rows_par * (size_t) tr->batch;
  if (b->upload_ahead != NULL
      && b->upload_ahead (tr->be, ROWS_SLOT + tr->rows_par, 1, &dst, &src, &bytes, NULL))
    {
      b->upload_wait (tr->be, ROWS_SLOT + tr->rows_par);
      tr->rows_slot_used = true;
    }
  else
    b->upload (tr->be, dst, src, bytes);
  tr->rows_ready = true;
}

/* load_rows for the batches it cannot load itself: a resident batch's rows gathered,
 * or a batch staged by es_trainer_prefetch taken from its slot. false: neither. */
static bool
graph_load_rows (EsTrainer *tr, const EsBatch *batch, int r0, int B)
{
  const EsBackendIface *b = tr->be->iface;
  const EsResident *res = batch->resident;

  if (res != NULL && batch->rows == NULL)
    {
      /* consecutive rows: gathered from where they start, no indices copied */
      const int64_t f = batch->first + r0;
      const size_t row_bytes = (size_t) res->D * (res->u8 ? 1 : sizeof (float));

      b->gather_rows (tr->be, tr->x, (const uint8_t *) res->x + (size_t) f * row_bytes, res->u8,
                      batch->scale, batch->shift, NULL, B, tr->D);
      if (res->labels != NULL)
        b->gather_i32 (tr->be, tr->labels, res->labels + f, NULL, B);
      if (res->targets != NULL)
        b->gather_rows (tr->be, tr->targets, res->targets + (size_t) f * (size_t) res->T, false,
                        1.0f, 0.0f, NULL, B, tr->F_out);
      return true;
    }
  if (res != NULL)
    {
      /* a training batch has all its rows there already; evaluation (of any number of
       * rows) copies each micro-batch's now */
      int32_t *half = tr->rows_dev + (size_t) tr->rows_par * (size_t) tr->batch;
      const int32_t *rows = tr->rows_ready ? half + r0 : half;

      if (!tr->rows_ready)
        b->upload (tr->be, half, batch->rows + r0, (size_t) B * sizeof (int32_t));
      b->gather_rows (tr->be, tr->x, res->x, res->u8, batch->scale, batch->shift, rows, B,
                      tr->D);
      if (res->labels != NULL)
        b->gather_i32 (tr->be, tr->labels, res->labels, rows, B);
      if (res->targets != NULL)
        b->gather_rows (tr->be, tr->targets, res->targets, false, 1.0f, 0.0f, rows, B,
                        tr->F_out);
      /* the next copy into this half (on the copy stream) waits for these gathers */
      if (!tr->rows_ready && b->upload_release != NULL)
        b->upload_release (tr->be, ROWS_SLOT + tr->rows_par);
      return true;
    }
  for (int s = 0; s < 2 && r0 == 0 && B == batch->B; s++)
    if (tr->ahead_full[s] && tr->ahead_B[s] == B
        && tr->ahead_src[s] == (batch->x_u8 != NULL ? (const void *) batch->x_u8
                                                    : (const void *) batch->x_f32)
        && tr->ahead_lab[s] == (const void *) batch->labels
        && tr->ahead_tgt[s] == (const void *) batch->targets)
      {
        b->upload_wait (tr->be, s);
        b->gather_rows (tr->be, tr->x, tr->ahead_x[s], batch->x_u8 != NULL, batch->scale,
                        batch->shift, NULL, B, tr->D);
        if (batch->labels != NULL)
          b->copy (tr->be, tr->labels, tr->ahead_labels[s], (size_t) B * sizeof (int32_t));
        if (batch->targets != NULL)
          b->copy (tr->be, tr->targets, tr->ahead_targets[s],
                   (size_t) B * (size_t) tr->F_out * sizeof (float));
        b->upload_release (tr->be, s);
        tr->ahead_full[s] = false;
        return true;
      }
  return false;
}

bool
es_trainer_prefetch (EsTrainer *tr, const EsBatch *batch, EsError *err)
{
  const EsBackendIface *b = tr->be->iface;
  size_t micro = (size_t) tr->micro, D = (size_t) tr->D, F = (size_t) tr->F_out;
  void *dst[3];
  const void *src[3];
  size_t bytes[3];
  int n = 0, s;

  if (b->upload_ahead == NULL || b->gather_rows == NULL)
    {
      es_error_set (err, ES_ERR_UNSUPPORTED, "The %s backend has no asynchronous uploads",
                    b->name);
      return false;
    }
  if (batch->resident != NULL)
    return true;  /* nothing to copy */
  if (!check_batch (tr, batch, err))
    return false;
  if (batch->B <= 0 || batch->B > tr->micro)
    {
      es_error_set (err, ES_ERR_UNSUPPORTED, "Only batches of at most the micro-batch's %d "
                    "rows are uploaded ahead", tr->micro);
      return false;
    }
  for (s = 0; s < 2; s++)
    if (tr->ahead_x[s] == NULL
        && ((tr->ahead_x[s] = tr_alloc (tr, ES_MEM_DATA, micro * D * sizeof (float), err)) == NULL
            || (tr->ahead_labels[s] = tr_alloc (tr, ES_MEM_DATA, micro * sizeof (int32_t),
                                                err)) == NULL
            || (tr->ahead_targets[s] = tr_alloc (tr, ES_MEM_DATA, micro * F * sizeof (float),
                                                 err)) == NULL))
      return false;
  s = tr->ahead_next;
  tr->ahead_next ^= 1;
  dst[n] = tr->ahead_x[s];
  src[n] = batch->x_u8 != NULL ? (const void *) batch->x_u8 : (const void *) batch->x_f32;
  bytes[n++] = (size_t) batch->B * D * (batch->x_u8 != NULL ? 1 : sizeof (float));
  if (batch->labels != NULL)
    {
      dst[n] = tr->ahead_labels[s];
      src[n] = batch->labels;
      bytes[n++] = (size_t) batch->B * sizeof (int32_t);
    }
  if (batch->targets != NULL)
    {
      dst[n] = tr->ahead_targets[s];
      src[n] = batch->targets;
      bytes[n++] = (size_t) batch->B * F * sizeof (float);
    }
  tr->ahead_full[s] = false;
  if (!b->upload_ahead (tr->be, s, n, dst, src, bytes, err))
    return false;
  tr->ahead_full[s] = true;
  tr->ahead_B[s] = batch->B;
  tr->ahead_src[s] = src[0];
  tr->ahead_lab[s] = batch->labels;
  tr->ahead_tgt[s] = batch->targets;
  return true;
}

void
es_trainer_set_deferred_stats (EsTrainer *tr, bool on)
{
  tr->deferred = on;
}

void
es_trainer_set_graphs (EsTrainer *tr, bool on)
{
  tr->graphs_off = !on;
  for (int p = 0; p < 2 && !on; p++)
    if (tr->graphs[p] != NULL)
      {
        tr->be->iface->graph_free (tr->be, tr->graphs[p]);
        tr->graphs[p] = NULL;
      }
}

int64_t
es_trainer_graph_replays (const EsTrainer *tr)
{
  return tr->graph_replays;
}

static void
graph_free_all (EsTrainer *tr)
{
  for (int p = 0; p < 2; p++)
    if (tr->graphs[p] != NULL)
      tr->be->iface->graph_free (tr->be, tr->graphs[p]);
  tr->graphs[0] = tr->graphs[1] = NULL;
  free (tr->hyper_host);
  free (tr->seeds_host);
  tr->hyper_host = NULL;
  tr->seeds_host = NULL;
}

/* Whether this batch can run on the device without a wait (deferred statistics). */
static bool
dev_path_ok (EsTrainer *tr)
{
  const EsBackendIface *b = tr->be->iface;

  return tr->deferred && b->softmax_xent_forward_acc != NULL && b->sgd_step_dev != NULL
         && b->adam_step_dev != NULL && b->step_advance != NULL
         && tr->cfg.loss == ES_LOSS_SOFTMAX_XENT && tr->teacher == NULL && !tr->qat_on
         && (!(tr->cfg.clip_norm > 0.0f) || b->clip_norm_dev != NULL)
         && (tr->cfg.precision != ES_PRECISION_FP16
             || (b->softmax_xent_backward_dev != NULL && b->amp_unscale_dev != NULL))
         && tr->grad_finish == NULL && !tr->prof_on && dev_buffers (tr);
}

/* fp16 on the device path: the scaler's state goes to the device, which then decides
 * (amp_unscale_dev), until amp_leave_device brings it back. */
static void
amp_enter_device (EsTrainer *tr)
{
  double a[ES_AMP_N] = { 0 };

  if (tr->cfg.precision != ES_PRECISION_FP16 || tr->amp_dev_live)
    return;
  a[ES_AMP_SCALE] = (double) tr->loss_scale;
  a[ES_AMP_CLEAN] = (double) tr->scale_clean;
  a[ES_AMP_INV] = (double) (1.0f / tr->loss_scale);
  tr->be->iface->upload (tr->be, tr->amp_dev, a, sizeof a);
  tr->amp_dev_live = true;
}

/* The device's scale and clean steps into loss_scale and scale_clean. */
static void
amp_pull (EsTrainer *tr)
{
  double a[ES_AMP_N];

  if (!tr->amp_dev_live)
    return;
  tr->be->iface->download (tr->be, a, tr->amp_dev, sizeof a);
  tr->loss_scale = (float) a[ES_AMP_SCALE];
  tr->scale_clean = (int) a[ES_AMP_CLEAN];
}

/* Before a step the host scales (or a state set from outside): what the device
 * counted and its scaler's state back on the host, which decides from now on. */
static void
amp_leave_device (EsTrainer *tr)
{
  double s[ES_STATS_N];

  (void) stats_fold (tr, s);
  amp_pull (tr);
  tr->amp_dev_live = false;
}

/* What the device counted since the last fold, into the host's view: the statistics
 * into pend, the fp16 steps it skipped (counted by the host as taken: the steps, the
 * table's expectation and the learning rate put back) and the scaler's state; s
 * (ES_STATS_N) receives the device statistics. false when a loss went bad: then
 * nothing is folded, and the device statistics wait for es_trainer_read_stats. */
static bool
stats_fold (EsTrainer *tr, double *s)
{
  const EsBackendIface *b = tr->be->iface;
  int64_t skipped;

  memset (s, 0, ES_STATS_N * sizeof (double));
  if (tr->stats_dev == NULL || !tr->stats_dirty)
    return true;
  b->download (tr->be, s, tr->stats_dev, ES_STATS_N * sizeof (double));
  if (s[ES_STATS_HALTED] != 0.0)
    return false;
  tr->pend.loss_sum += s[ES_STATS_LOSS];
  tr->pend.correct += (int) s[ES_STATS_CORRECT];
  tr->pend.rows += (int) s[ES_STATS_ROWS];
  skipped = (int64_t) s[ES_STATS_SKIPPED];
  if (skipped > 0)
    {
      tr->skipped += skipped;
      tr->steps -= skipped;
      tr->hyper_expect -= skipped;
      tr->lr = tr->steps > 0 ? scheduled_lr (&tr->cfg, tr->steps - 1) : tr->cfg.lr;
    }
  amp_pull (tr);
  b->zero (tr->be, tr->stats_dev, ES_STATS_N * sizeof (double));
  tr->stats_dirty = false;
  tr->stats_base = tr->steps;
  return true;
}

/* The device table of scheduled values holds the step the device will take next. Rows
 * are what optimizer_step hands adam_step, computed the same way: the same bits. */
static void
hyper_sync (EsTrainer *tr)
{
  const EsTrainConfig *c = &tr->cfg;
  const float wd = c->optimizer == ES_OPT_ADAMW ? c->weight_decay : 0.0f;

  if (tr->hyper_valid && tr->steps == tr->hyper_expect && tr->hyper_lr == c->lr
      && tr->steps - tr->hyper_base < HYPER_STEPS)
    return;
  if (tr->amp_dev_live && tr->stats_dirty)
    {
      /* fp16 steps the device skipped were counted as taken: its count first (a wait,
       * once per HYPER_STEPS steps at most) */
      double s[ES_STATS_N];

      if (stats_fold (tr, s) && tr->hyper_valid && tr->steps == tr->hyper_expect
          && tr->hyper_lr == c->lr && tr->steps - tr->hyper_base < HYPER_STEPS)
        return;
    }
  for (int k = 0; k < HYPER_STEPS; k++)
    {
      const int64_t step = tr->steps + k;
      const float lr = scheduled_lr (c, step);
      const double t = (double) (step + 1);
      const float bc1 = (float) (1.0 - pow (c->beta1, t));
      const float bc2 = (float) (1.0 - pow (c->beta2, t));
      float *h = tr->hyper_host + 4 * k;

      h[0] = lr;
      h[1] = lr / bc1;
      h[2] = 1.0f / sqrtf (bc2);
      h[3] = lr * wd;
      /* forward_exec's seeds of a batch of one micro-batch (accum_done and r0 are 0) */
      for (int i = 0, j = 0; i < tr->n_exec && tr->seeds != NULL; i++)
        if (tr->exec[i].info->spec.kind == ES_LAYER_DROPOUT)
          tr->seeds_host[(size_t) k * (size_t) tr->n_drop + (size_t) j++]
            = c->seed ^ es_hash64 ((uint64_t) step * 1315423911u + (uint64_t) i);
    }
  tr->be->iface->upload (tr->be, tr->hyper, tr->hyper_host, HYPER_STEPS * 4 * sizeof (float));
  if (tr->seeds != NULL)
    tr->be->iface->upload (tr->be, tr->seeds, tr->seeds_host,
                           HYPER_STEPS * (size_t) tr->n_drop * sizeof (uint64_t));
  tr->be->iface->zero (tr->be, tr->hyper_slot, sizeof (int32_t));
  tr->hyper_base = tr->hyper_expect = tr->steps;
  tr->hyper_lr = c->lr;
  tr->hyper_valid = true;
}

/* One micro-batch of B rows from row r0 on the device: forward, loss into the device
 * statistics, backward (the loss's gradient over div, times fp16's loss scale).
 * load: gather/copy the rows first (not when a graph is replayed around a load made
 * outside it). */
static void
dev_micro_batch (EsTrainer *tr, const EsBatch *batch, int r0, int B, float div, bool load)
{
  const float *logits;

  tr->r0 = r0;
  tr->last_rows = B;
  if (load)
    load_rows (tr, batch, r0, B);
  forward (tr, tr->n_exec, B, true);
  logits = tr->n_exec > 0 ? tr->exec[tr->n_exec - 1].out : tr->x;
  tr->be->iface->softmax_xent_forward_acc (tr->be, tr->probs, tr->losses, logits, tr->labels,
                                           B, (int) tr->F_out, tr->stats_dev);
  if (tr->amp_dev_live)
    tr->be->iface->softmax_xent_backward_dev (tr->be, tr->dA, tr->probs, tr->labels,
                                              tr->amp_dev, div, B, (int) tr->F_out);
  else
    loss_backward (tr, B, tr->loss_scale / div);
  backward (tr, tr->n_exec, B);
}

/* optimizer_step's work with the scheduled values from the device table, and its host
 * bookkeeping. */
static void
dev_optimizer_step (EsTrainer *tr)
{
  EsBackend *be = tr->be;
  const EsBackendIface *b = be->iface;
  const EsTrainConfig *c = &tr->cfg;
  int64_t P = es_model_n_params (tr->model);

  /* amp_unscale's and optimizer_step's order: a skipped step leaves the kernels below
   * nothing to update (masks and clipping only touch gradients zeroed at the end) */
  if (tr->amp_dev_live)
    b->amp_unscale_dev (be, tr->grads, P, tr->amp_dev, tr->stats_dev, c->loss_scale_backoff,
                        c->loss_scale_growth, c->loss_scale_interval);
  if (tr->mask_on)
    b->mask_apply (be, tr->grads, tr->mask, P);
  if (c->clip_norm > 0.0f)
    b->clip_norm_dev (be, tr->grads, P, c->clip_norm);
  if (c->l1 > 0.0f || c->l2 > 0.0f)
    b->regularize (be, tr->grads, tr->params, c->l1, c->l2, P);
  switch (c->optimizer)
    {
    case ES_OPT_SGD:
      b->sgd_step_dev (be, tr->params, NULL, tr->grads, 0.0f, false, tr->hyper, tr->hyper_slot,
                       tr->stats_dev, P);
      break;
    case ES_OPT_MOMENTUM:
    case ES_OPT_NESTEROV:
      b->sgd_step_dev (be, tr->params, tr->opt_m, tr->grads, c->momentum,
                       c->optimizer == ES_OPT_NESTEROV, tr->hyper, tr->hyper_slot,
                       tr->stats_dev, P);
      break;
    default:
      b->adam_step_dev (be, tr->params, tr->opt_m, tr->opt_v, tr->grads, c->beta1, c->beta2,
                        c->eps, tr->hyper, tr->hyper_slot, tr->stats_dev, P);
      break;
    }
  if (tr->mask_on)
    b->mask_apply (be, tr->params, tr->mask, P);
  b->zero (be, tr->grads, (size_t) P * sizeof (float));
  b->step_advance (be, tr->hyper_slot, tr->stats_dev);
}

static void
dev_step_done (EsTrainer *tr)
{
  tr->lr = scheduled_lr (&tr->cfg, tr->steps);
  tr->steps++;
  tr->param_gen++;
  tr->hyper_expect++;
}

/* A graph fits: one micro-batch that steps; Dropout only where its seeds can be read
 * from the device (they change every step). */
static bool
graph_ok (const EsTrainer *tr, const EsBatch *batch)
{
  const EsBackendIface *b = tr->be->iface;

  if (tr->graphs_off || tr->graph_failed || b->graph_begin == NULL || tr->cfg.accum_steps != 1
      || batch->B > tr->micro)
    return false;
  return dropout_index (tr, tr->n_exec) == 0 || tr->seeds != NULL;
}

/* A training batch with deferred statistics on the device: a graph replayed, recorded,
 * or the same work queued op by op; nothing waits for the device. */
static bool
dev_train_batch (EsTrainer *tr, const EsBatch *batch, EsError *err)
{
  const EsBackendIface *b = tr->be->iface;
  const int B = batch->B;
  const float div = (float) B * (float) tr->cfg.accum_steps;
  const uint8_t *mask = tr->mask_on ? tr->mask : NULL;

  amp_set_backend (tr->be, tr->cfg.precision, NULL);
  hyper_sync (tr);
  tr->stats_dirty = true;
  if (graph_ok (tr, batch))
    {
      const bool inside = batch->resident != NULL;  /* the load is part of the graph */
      void **graph = &tr->graphs[inside ? tr->rows_par : 0];

      if (tr->graph_B != B || tr->graph_res != batch->resident || tr->graph_mask != mask
          || (inside && (tr->graph_scale != batch->scale || tr->graph_shift != batch->shift)))
        {
          for (int p = 0; p < 2; p++)
            if (tr->graphs[p] != NULL)
              b->graph_free (tr->be, tr->graphs[p]);
          tr->graphs[0] = tr->graphs[1] = NULL;
          tr->graph_seen = 0;
          tr->graph_B = B;
          tr->graph_res = batch->resident;
          tr->graph_mask = mask;
          tr->graph_scale = batch->scale;
          tr->graph_shift = batch->shift;
        }
      if (*graph == NULL && tr->graph_seen++ >= 1)
        {
          EsError local = { 0 };

          if (!inside)
            load_rows (tr, batch, 0, B);
          if (b->graph_begin (tr->be, &local))
            {
              tr->graph_seeds_on = true;
              dev_micro_batch (tr, batch, 0, B, div, inside);
              tr->graph_seeds_on = false;
              dev_optimizer_step (tr);
              *graph = b->graph_end (tr->be, &local);
            }
          if (*graph == NULL)
            tr->graph_failed = true;  /* ordinary steps from now on; this one too */
          else
            {
              if (!b->graph_launch (tr->be, *graph, err))
                return false;
              tr->graph_replays++;
              dev_step_done (tr);
              return true;
            }
        }
      else if (*graph != NULL)
        {
          if (!inside)
            load_rows (tr, batch, 0, B);
          if (!b->graph_launch (tr->be, *graph, err))
            return false;
          tr->graph_replays++;
          dev_step_done (tr);
          return true;
        }
    }
  for (int r0 = 0; r0 < B; r0 += tr->micro)
    dev_micro_batch (tr, batch, r0, ES_MIN (tr->micro, B - r0), div, true);
  if (++tr->accum_done >= tr->cfg.accum_steps)
    {
      dev_optimizer_step (tr);
      dev_step_done (tr);
      tr->accum_done = 0;
    }
  return true;
}

/* es_trainer_train_batch for a resident batch or with deferred statistics. */
static bool
graph_train_batch (EsTrainer *tr, const EsBatch *batch, EsStepStats *stats, EsError *err)
{
  const EsBackendIface *b = tr->be->iface;
  bool ok;

  if (batch->B <= 0 || batch->B > tr->batch)
    {
      es_error_set (err, ES_ERR_INVALID, "A batch of %d rows does not fit a trainer made for %d",
                    batch->B, tr->batch);
      return false;
    }
  if (!check_batch (tr, batch, err))
    return false;
  if (batch->resident != NULL && batch->rows == NULL)
    {
      es_error_set (err, ES_ERR_INVALID, "A resident training batch names its rows");
      return false;
    }
  tr->rows_ready = false;
  tr->rows_slot_used = false;
  if (batch->resident != NULL)
    {
      if (!rows_buffer (tr, err))
        return false;
      upload_batch_rows (tr, batch);
    }
  if (dev_path_ok (tr) && tr->stat_reduce == NULL)
    {
      amp_enter_device (tr);
      ok = dev_train_batch (tr, batch, err);
    }
  else
    {
      /* what the graph recorded may no longer hold (QAT, a teacher, ...): record anew
       * when the device path comes back */
      for (int p = 0; p < 2; p++)
        if (tr->graphs[p] != NULL)
          {
            b->graph_free (tr->be, tr->graphs[p]);
            tr->graphs[p] = NULL;
          }
      tr->graph_B = 0;
      tr->in_graph_block = true;
      ok = es_trainer_train_batch (tr, batch, tr->deferred ? &tr->pend : stats, err);
      tr->in_graph_block = false;
    }
  if (tr->rows_slot_used)
    b->upload_release (tr->be, ROWS_SLOT + tr->rows_par);
  tr->rows_ready = false;
  tr->rows_slot_used = false;
  return ok;
}

bool
es_trainer_read_stats (EsTrainer *tr, EsStepStats *stats, EsError *err)
{
  const EsBackendIface *b = tr->be->iface;
  double s[ES_STATS_N];
  bool ok = true;

  if (!stats_fold (tr, s))
    {
      /* a loss went bad: the device stopped updating (and scaling) at its step */
      const int64_t good = tr->stats_base + (int64_t) s[ES_STATS_STEPS];

      tr->pend.loss_sum += s[ES_STATS_LOSS];
      tr->pend.correct += (int) s[ES_STATS_CORRECT];
      tr->pend.rows += (int) s[ES_STATS_ROWS];
      tr->skipped += (int64_t) s[ES_STATS_SKIPPED];
      amp_pull (tr);
      es_error_set (err, ES_ERR_NUMERIC, "The loss became NaN or infinite at step %lld "
                    "(of steps %lld to %lld, read back together); no update was applied "
                    "from it on", (long long) good + 1, (long long) tr->stats_base + 1,
                    (long long) tr->steps);
      tr->steps = good;
      tr->lr = good > 0 ? scheduled_lr (&tr->cfg, good - 1) : tr->cfg.lr;
      tr->param_gen++;
      tr->accum_done = 0;
      tr->hyper_valid = false;
      b->zero (tr->be, tr->grads, (size_t) es_model_n_params (tr->model) * sizeof (float));
      b->zero (tr->be, tr->stats_dev, sizeof s);
      tr->stats_dirty = false;
      ok = false;
    }
  tr->stats_base = tr->steps;
  if (stats != NULL)
    {
      stats->loss_sum += tr->pend.loss_sum;
      stats->correct += tr->pend.correct;
      stats->rows += tr->pend.rows;
    }
  memset (&tr->pend, 0, sizeof tr->pend);
  return ok;
}

bool
es_trainer_train_batch (EsTrainer *tr, const EsBatch *batch, EsStepStats *stats, EsError *err)
{
  int B = batch->B;
  float scale;
  double loss_sum = 0.0, t_begin = 0.0;
  int correct = 0;

  if ((batch->resident != NULL || tr->deferred) && !tr->in_graph_block)
    return graph_train_batch (tr, batch, stats, err);  /* resident data, deferred stats */
  if (tr->amp_dev_live)
    amp_leave_device (tr);   /* fp16: the host scales this step */
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
  /* fp16: the loss scaled up (amp_unscale takes it out of the gradients) */
  amp_set_backend (tr->be, tr->cfg.precision, NULL);
  scale = tr->loss_scale / ((float) B * (float) tr->cfg.accum_steps);
  tr->bn_rows = B;
  for (int r0 = 0; r0 < B; r0 += tr->micro)
    {
      int mb = ES_MIN (tr->micro, B - r0);
      float loss;

      tr->r0 = r0;
      load_rows (tr, batch, r0, mb);
      if (tr->prof_active)
        prof_mark (tr, ES_STAGE_LOAD, -1);
      forward (tr, tr->n_exec, mb, true);
      tr->last_rows = mb;
      loss = loss_forward (tr, mb);
      if (!isfinite (loss) && tr->grad_finish != NULL)
        {
          /* data parallel: the others wait in this step's reductions; go on to them
           * with the gradients marked, and fail after (marks_clear) */
          if (!tr->step_bad)
            tr->step_bad_nan = isnan (loss);
          tr->step_bad = true;
        }
      else if (!isfinite (loss))
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
          tr->numeric_own = true;
          if (isnan (loss))
            es_error_set (err, ES_ERR_NUMERIC, "The loss became NaN at step %lld",
                          (long long) tr->steps + 1);
          else
            es_error_set (err, ES_ERR_NUMERIC, "The loss became infinite at step %lld",
                          (long long) tr->steps + 1);
          return false;
        }
      if (!tr->step_bad)
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
      if (tr->step_bad && tr->grad_finish != NULL && tr->grad_bucket == NULL
          && mark_index (tr) >= 0)
        nan_mark (tr, mark_index (tr));
      if (tr->grad_finish != NULL
          && (!tr->grad_finish (tr->grad_user, tr->be, tr->grads,
                                es_model_n_params (tr->model), tr->step_rows, err)
              || !marks_clear (tr, err)))
        {
          grad_reduce_failed (tr);
          if (tr->prof_active)
            {
              tr->prof.total_s += tr->prof_t - t_begin;
              tr->prof_active = false;
            }
          return false;
        }
      if (amp_unscale (tr))
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
  amp_set_backend (tr->be, tr->cfg.precision, NULL);
  for (int r0 = 0; r0 < B; r0 += tr->micro)
    {
      int mb = ES_MIN (tr->micro, B - r0);
      float loss;

      load_rows (tr, batch, r0, mb);
      forward (tr, tr->n_exec, mb, false);
      loss = loss_forward (tr, mb);
      if (!isfinite (loss))
        {
          if (isnan (loss))
            es_error_set (err, ES_ERR_NUMERIC, "The loss is NaN on evaluation");
          else
            es_error_set (err, ES_ERR_NUMERIC, "The loss is infinite on evaluation");
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
  amp_set_backend (tr->be, tr->cfg.precision, NULL);
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
  if (!require_op (tr->be, ES_OP_MASK_APPLY, es_translate ("pruning masks"), err))
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
  const char *qat;

  if (layers == NULL)
    {
      for (int i = 0; i < n; i++)
        tr->exec[i].qat = tr->exec[i].q_tracked = false;
      tr->qat_on = false;
      return true;
    }
  qat = es_translate ("quantization-aware training");
  if (!require_op (tr->be, ES_OP_MIN_MAX, qat, err)
      || !require_op (tr->be, ES_OP_FAKE_QUANT_WEIGHTS, qat, err)
      || !require_op (tr->be, ES_OP_FAKE_QUANT_ACT, qat, err))
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

bool
es_trainer_set_input_range (EsTrainer *tr, int layer, float lo, float hi)
{
  Exec *e;

  if (layer < 0 || layer >= es_model_n_layers (tr->model) || !isfinite (lo) || !isfinite (hi)
      || lo > hi)
    return false;
  e = &tr->exec[layer];
  if (!e->qat)
    return false;
  e->q_tracked = true;
  e->q_lo = lo;
  e->q_hi = hi;
  return true;
}

/* Whether n floats at src (device memory) are all finite; host is scratch (n). */
static bool
device_finite (EsTrainer *tr, const float *src, int64_t n, float *host)
{
  tr->be->iface->download (tr->be, host, src, (size_t) n * sizeof (float));
  for (int64_t k = 0; k < n; k++)
    if (!isfinite (host[k]))
      return false;
  return true;
}

int
es_trainer_find_nonfinite (EsTrainer *tr, EsNonfiniteKind *what)
{
  const EsModel *m = tr->model;
  int L = es_model_n_layers (m);
  int64_t widest = 1;
  float *host;
  int found = -1;
  EsNonfiniteKind kind = ES_NONFINITE_NONE;

  for (int t = 0; t < es_model_n_tensors (m); t++)
    widest = ES_MAX (widest, es_model_tensor (m, t)->size);
  for (int i = 0; i < L; i++)
    widest = ES_MAX (widest, (int64_t) tr->last_rows * es_model_layer (m, i)->out_floats);
  host = malloc ((size_t) widest * sizeof (float));
  if (host == NULL)
    return -1;
  /* Layer by layer, first layer first: its parameters, then the output the last
   * training forward left (every layer ran it, a last layer fused into the loss
   * included), then its parameter gradients. */
  for (int i = 0; i < L && found < 0; i++)
    {
      const EsLayerInfo *l = es_model_layer (m, i);
      const Exec *e = &tr->exec[i];

      for (int t = l->first_tensor; t < l->first_tensor + l->n_tensors && found < 0; t++)
        {
          const EsTensorInfo *ti = es_model_tensor (m, t);

          if (ti->trainable && !device_finite (tr, tr->params + ti->offset, ti->size, host))
            found = i, kind = ES_NONFINITE_PARAMS;
        }
      if (found < 0 && tr->last_rows > 0 && e->out != NULL
          && !device_finite (tr, e->out, (int64_t) tr->last_rows * l->out_floats, host))
        found = i, kind = ES_NONFINITE_ACTIVATIONS;
      for (int t = l->first_tensor; t < l->first_tensor + l->n_tensors && found < 0; t++)
        {
          const EsTensorInfo *ti = es_model_tensor (m, t);

          if (ti->trainable && !device_finite (tr, tr->grads + ti->offset, ti->size, host))
            found = i, kind = ES_NONFINITE_GRADIENTS;
        }
    }
  free (host);
  if (what != NULL)
    *what = kind;
  return found;
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
      || !require_op (tr->be, ES_OP_DISTILL, es_translate ("the distillation loss"), err))
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
