/* es-exec.c: see es-exec.h. A CPU-only runner: layers in order over two float
 * activation buffers (like EsInfer in es-train.c), each weight layer on its kernel.
 * It is not a graph compiler: the only rewrites are fusions of an activation into the
 * layer before it and, in static int8, handing a layer's uint8 output straight to the
 * next int8 Dense layer.
 *
 * - dense: the backend's dense_act_forward with the activation that follows (past
 *   identity layers), as EsInfer runs it; the backend cuts the work over its pool.
 * - sparse: es_csr_dense_forward with a following ReLU fused, the batch cut over the
 *   backend's pool, each task with its own scratch.
 * - int8 Dense: the input quantized row by row (static: the layer's calibrated scale and
 *   zero point; dynamic: from this batch's min and max, over the whole batch so the
 *   result does not depend on how it is cut), then es_qgemm_forward with a following
 *   ReLU fused into the requantization. In static int8, a chain of int8 Dense layers
 *   (with ReLU, Flatten or Dropout between them) runs as one parallel region, each task
 *   taking its rows of the batch through every layer of the chain with the uint8
 *   activations passed on directly; the result equals the unchained one bit for bit.
 * - int8 Conv2D: per image, the image quantized, an im2col of the uint8 image (padding
 *   is the zero point, the code of 0.0), then one product into the (OC, OH*OW) plane.
 * - everything else: the backend's ops (pools, activations, softmax, BatchNorm with
 *   running statistics, Conv2D in fp32) through es_infer_layer_forward, the step EsInfer
 *   runs (es-infer-private.h); Flatten and Dropout are the identity.
 * With an observer set, nothing is fused or chained, so every layer's input exists.
 *
 * Dimension key: B = batch rows, IN/OUT = Dense features, C/H/W = image, OC = output
 * channels, K = kernel, S = stride, P = padding, OHW = OH*OW, CKK = C*K*K. */
#include "es-exec.h"
#include "es-infer-private.h"
#include "es-pool.h"
#include "es-qgemm.h"
#include "es-sparse.h"

#include <stdlib.h>
#include <string.h>

/* A product below this many multiply-adds a task stays on one thread. int8 runs about
 * four times as many per cycle as the fp32 kernels, whose threshold is 2^18. */
#define INT8_PAR_MIN_MACS   (1 << 20)
#define SPARSE_PAR_MIN_MACS (1 << 18)

typedef struct {
  EsExecKind      kind;       /* weight layers; ES_EXEC_DENSE for the rest */
  int             act;        /* the activation layer fused into this one, or -1 */
  /* sparse */
  EsCsr          *csr;
  /* int8 */
  EsQGemmWeights *qw;
  int64_t         ldx;        /* Dense: bytes a row of xq; Conv2D: bytes a quantized image */
  uint8_t        *xq;         /* Dense: (max_batch, ldx) the quantized input */
  float           in_scale, in_inv;  /* static: the input's scale, 1 / scale, zero */
  int32_t         in_zero;
  int             chain_to;   /* static: the int8 Dense layer fed with uint8, or -1 */
} ExecLayer;

struct EsExec {
  EsModel       *model;       /* owned copy (fp16/bf16: weights rounded) */
  float         *params;      /* (n_params) its parameters in backend memory (aligned) */
  float         *buffers;     /* (n_buffers) */
  EsQuant       *quant;       /* owned copy or NULL */
  EsBackend     *be;
  EsPool        *pool;
  int            n_threads;
  int            max_batch;
  int64_t        D;
  EsQGemmPath    path;
  int            qmax;
  bool           dynamic;
  ExecLayer     *layers;      /* (n_layers) */
  int64_t        row_a;       /* floats a row of bufA and bufB */
  int64_t        row_argmax;
  float         *bufA, *bufB; /* (max_batch, row_a) */
  int32_t       *argmax;      /* (max_batch, row_argmax) or NULL */
  /* per task */
  float         *sp_scratch[ES_POOL_MAX_TASKS];
  uint8_t       *conv_img[ES_POOL_MAX_TASKS];  /* a quantized image */
  uint8_t       *conv_col[ES_POOL_MAX_TASKS];  /* its im2col (OHW, ldc) */
  EsExecObserver obs;
  void          *obs_data;
};

const char *
es_exec_kind_name (EsExecKind kind)
{
  switch (kind)
    {
    case ES_EXEC_DENSE: return "dense";
    case ES_EXEC_SPARSE: return "sparse";
    case ES_EXEC_INT8: return "int8";
    default: return "unknown";
    }
}

const char *
es_exec_int8_path (void)
{
  return es_qgemm_path_name (es_qgemm_default_path ());
}

static bool
is_activation (EsLayerKind k)
{
  return k == ES_LAYER_RELU || k == ES_LAYER_LEAKY_RELU || k == ES_LAYER_SIGMOID
         || k == ES_LAYER_TANH;
}

/* The first layer after i that is not the identity at inference, or -1. */
static int
next_real (const EsModel *m, int i)
{
  for (int j = i + 1; j < es_model_n_layers (m); j++)
    if (!es_infer_identity (es_model_layer (m, j)->spec.kind))
      return j;
  return -1;
}

static void *
alloc64 (size_t bytes)
{
  size_t n = ES_CEIL_DIV (ES_MAX (bytes, 1), 64) * 64;
  void *p = aligned_alloc (64, n);

  if (p != NULL)
    memset (p, 0, n);
  return p;
}

/* Tensor t of layer i in backend memory. */
static const float *
layer_param (const EsExec *ex, int i, int t)
{
  const EsLayerInfo *l = es_model_layer (ex->model, i);
  const EsTensorInfo *ti = es_model_tensor (ex->model, l->first_tensor + t);

  return (ti->trainable ? ex->params : ex->buffers) + ti->offset;
}

void
es_exec_free (EsExec *ex)
{
  if (ex == NULL)
    return;
  if (ex->layers != NULL && ex->model != NULL)
    for (int i = 0; i < es_model_n_layers (ex->model); i++)
      {
        es_csr_free (ex->layers[i].csr);
        es_qgemm_free (ex->layers[i].qw);
        free (ex->layers[i].xq);
      }
  for (int t = 0; t < ES_POOL_MAX_TASKS; t++)
    {
      free (ex->sp_scratch[t]);
      free (ex->conv_img[t]);
      free (ex->conv_col[t]);
    }
  if (ex->argmax != NULL)
    ex->be->iface->free (ex->be, ES_MEM_ACTIVATIONS, ex->argmax,
                         (size_t) ex->max_batch * (size_t) ex->row_argmax * sizeof (int32_t));
  if (ex->bufB != NULL)
    ex->be->iface->free (ex->be, ES_MEM_ACTIVATIONS, ex->bufB,
                         (size_t) ex->max_batch * (size_t) ex->row_a * sizeof (float));
  if (ex->bufA != NULL)
    ex->be->iface->free (ex->be, ES_MEM_ACTIVATIONS, ex->bufA,
                         (size_t) ex->max_batch * (size_t) ex->row_a * sizeof (float));
  if (ex->buffers != NULL)
    ex->be->iface->free (ex->be, ES_MEM_WEIGHTS, ex->buffers,
                         ES_MAX ((size_t) es_model_n_buffers (ex->model), 1) * sizeof (float));
  if (ex->params != NULL)
    ex->be->iface->free (ex->be, ES_MEM_WEIGHTS, ex->params,
                         ES_MAX ((size_t) es_model_n_params (ex->model), 1) * sizeof (float));
  free (ex->layers);
  es_quant_free (ex->quant);
  es_model_free (ex->model);
  free (ex);
}

/* Choose and check layer i's kind. */
static bool
plan_kind (EsExec *ex, const EsExecKind *kinds, int i, EsError *err)
{
  const EsLayerInfo *l = es_model_layer (ex->model, i);
  const char *title = es_layer_kind_title (l->spec.kind);
  const bool weight = l->spec.kind == ES_LAYER_DENSE || l->spec.kind == ES_LAYER_CONV2D;
  const bool q8 = ex->quant != NULL && ex->quant->layers[i].int8;
  EsExecKind k;

  if (!weight)
    {
      ex->layers[i].kind = ES_EXEC_DENSE;
      return true;
    }
  k = kinds != NULL ? kinds[i] : q8 ? ES_EXEC_INT8 : ES_EXEC_DENSE;
  if ((unsigned) k > ES_EXEC_INT8)
    {
      es_error_set (err, ES_ERR_INVALID, "Layer %d (%s): unknown kernel kind %d", i, title,
                    (int) k);
      return false;
    }
  if (k == ES_EXEC_SPARSE && l->spec.kind != ES_LAYER_DENSE)
    {
      es_error_set (err, ES_ERR_UNSUPPORTED,
                    "Layer %d (%s) cannot run sparse: only Dense layers have a sparse kernel",
                    i, title);
      return false;
    }
  if (k == ES_EXEC_INT8 && !q8)
    {
      if (ex->quant == NULL || (ex->quant->mode != ES_QUANT_INT8_STATIC
                                && ex->quant->mode != ES_QUANT_INT8_DYNAMIC))
        es_error_set (err, ES_ERR_INVALID,
                      "Layer %d (%s) cannot run int8: the model has no int8 quantization",
                      i, title);
      else
        es_error_set (err, ES_ERR_INVALID,
                      "Layer %d (%s) cannot run int8: the quantization keeps it in float",
                      i, title);
      return false;
    }
  if (k == ES_EXEC_INT8 && ex->quant->mode == ES_QUANT_INT8_STATIC
      && !ex->quant->layers[i].calibrated)
    {
      es_error_set (err, ES_ERR_INVALID,
                    "Layer %d (%s) cannot run static int8: its input range is not calibrated",
                    i, title);
      return false;
    }
  ex->layers[i].kind = k;
  return true;
}

/* Build layer i's kernel state and say which activation it fuses. */
static bool
plan_layer (EsExec *ex, int i, EsError *err)
{
  const EsModel *m = ex->model;
  const EsLayerInfo *l = es_model_layer (m, i);
  ExecLayer *L = &ex->layers[i];
  int j = next_real (m, i);
  EsLayerKind next = j >= 0 ? es_model_layer (m, j)->spec.kind : ES_LAYER_N_KINDS;

  L->act = -1;
  L->chain_to = -1;
  if (l->spec.kind != ES_LAYER_DENSE && l->spec.kind != ES_LAYER_CONV2D)
    return true;
  switch (L->kind)
    {
    case ES_EXEC_DENSE:
      if (l->spec.kind == ES_LAYER_DENSE && ex->be->iface->dense_act_forward != NULL
          && is_activation (next))
        L->act = j;
      return true;
    case ES_EXEC_SPARSE:
      if (next == ES_LAYER_RELU)
        L->act = j;
      L->csr = es_csr_from_dense (layer_param (ex, i, 0), l->spec.units, l->in.dims[0], err);
      return L->csr != NULL;
    default:
      break;
    }
  /* int8 */
  {
    const EsQuantLayer *ql = &ex->quant->layers[i];

    if (next == ES_LAYER_RELU)
      L->act = j;
    L->qw = es_qgemm_pack (ql->w_q, ql->w_scale, layer_param (ex, i, 1), ql->rows, ql->cols,
                           ex->quant->reduce_range, ex->path, err);
    if (L->qw == NULL)
      return false;
    if (!ex->dynamic)
      {
        L->in_scale = ql->in_scale;
        L->in_inv = 1.0f / ql->in_scale;
        L->in_zero = ql->in_zero;
      }
    if (l->spec.kind == ES_LAYER_DENSE)
      {
        L->ldx = ES_CEIL_DIV (es_qgemm_row_bytes (ql->cols), 64) * 64;
        L->xq = alloc64 ((size_t) ex->max_batch * (size_t) L->ldx);
      }
    else
      L->ldx = es_qgemm_row_bytes ((int) es_shape_size (&l->in));
    if (l->spec.kind == ES_LAYER_DENSE && L->xq == NULL)
      {
        es_error_set (err, ES_ERR_NOMEM, "Out of memory for the int8 input");
        return false;
      }
  }
  return true;
}

EsExec *
es_exec_new (const EsModel *model, const EsQuant *quant, const EsExecKind *kinds,
             EsBackend *be, int max_batch, EsError *err)
{
  const int n = es_model_n_layers (model);
  EsShape in = es_model_input_shape (model);
  size_t sp_floats = 0, img_bytes = 0, col_bytes = 0;
  EsExec *ex;

  if (max_batch <= 0)
    {
      es_error_set (err, ES_ERR_INVALID, "The batch size must be at least 1");
      return NULL;
    }
  if (be == NULL || !be->iface->host_memory || es_cpu_backend_pool (be) == NULL)
    {
      es_error_set (err, ES_ERR_UNSUPPORTED, "Variants run on the CPU backend only");
      return NULL;
    }
  if (quant != NULL)
    {
      if (!es_quant_check (quant, model, err))
        return NULL;
    }
  ex = calloc (1, sizeof *ex);
  if (ex == NULL)
    goto nomem;
  ex->be = be;
  ex->pool = es_cpu_backend_pool (be);
  ex->n_threads = ES_MIN (es_pool_n_threads (ex->pool), ES_POOL_MAX_TASKS);
  ex->max_batch = max_batch;
  ex->D = es_shape_size (&in);
  ex->path = es_qgemm_default_path ();
  if (quant != NULL)
    {
      ex->quant = es_quant_copy (quant);
      if (ex->quant == NULL)
        goto nomem;
      ex->qmax = quant->reduce_range ? 127 : 255;
      ex->dynamic = quant->mode == ES_QUANT_INT8_DYNAMIC;
    }
  /* fp16 and bf16 compute in fp32 on the rounded weights */
  if (quant != NULL && (quant->mode == ES_QUANT_FP16 || quant->mode == ES_QUANT_BF16))
    ex->model = es_quant_dequantized_model (model, quant);
  else
    ex->model = es_model_copy (model);
  ex->layers = calloc ((size_t) ES_MAX (n, 1), sizeof *ex->layers);
  if (ex->model == NULL || ex->layers == NULL)
    goto nomem;
  /* the parameters where the backend wants them: 64-byte aligned, charged to its budget */
  {
    const size_t P = (size_t) es_model_n_params (ex->model), Q = (size_t) es_model_n_buffers (ex->model);

    ex->params = be->iface->alloc (be, ES_MEM_WEIGHTS, ES_MAX (P, 1) * sizeof (float), err);
    if (ex->params == NULL)
      goto fail;
    ex->buffers = be->iface->alloc (be, ES_MEM_WEIGHTS, ES_MAX (Q, 1) * sizeof (float), err);
    if (ex->buffers == NULL)
      goto fail;
    memcpy (ex->params, es_model_params_const (ex->model), P * sizeof (float));
    memcpy (ex->buffers, es_model_buffers_const (ex->model), Q * sizeof (float));
  }
  for (int i = 0; i < n; i++)
    if (!plan_kind (ex, kinds, i, err))
      goto fail;
  for (int i = 0; i < n; i++)
    {
      const EsLayerInfo *l = es_model_layer (ex->model, i);
      ExecLayer *L = &ex->layers[i];

      if (!plan_layer (ex, i, err))
        {
          if (err != NULL)   /* name the layer */
            {
              char msg[sizeof err->message];

              memcpy (msg, err->message, sizeof msg);
              es_error_set (err, err->code, "Layer %d (%s): %s", i,
                            es_layer_kind_title (l->spec.kind), msg);
            }
          goto fail;
        }
      if (!es_infer_identity (l->spec.kind))
        ex->row_a = ES_MAX (ex->row_a, l->out_floats);
      if (l->spec.kind == ES_LAYER_MAXPOOL2D)
        ex->row_argmax = ES_MAX (ex->row_argmax, l->out_floats);
      if (L->kind == ES_EXEC_SPARSE)
        sp_floats = ES_MAX (sp_floats, es_csr_scratch_floats (L->csr, max_batch));
      if (L->kind == ES_EXEC_INT8 && l->spec.kind == ES_LAYER_CONV2D)
        {
          const int OHW = l->out.dims[1] * l->out.dims[2];

          img_bytes = ES_MAX (img_bytes, (size_t) L->ldx);
          col_bytes = ES_MAX (col_bytes, (size_t) OHW
                              * (size_t) es_qgemm_row_bytes (ex->quant->layers[i].cols));
        }
    }
  /* static chains: an int8 Dense (with its ReLU) whose next real layer is an int8 Dense */
  for (int i = 0; i < n && ex->quant != NULL && !ex->dynamic; i++)
    {
      ExecLayer *L = &ex->layers[i];
      int j;

      if (L->kind != ES_EXEC_INT8 || es_model_layer (ex->model, i)->spec.kind != ES_LAYER_DENSE)
        continue;
      j = next_real (ex->model, L->act >= 0 ? L->act : i);
      if (j >= 0 && ex->layers[j].kind == ES_EXEC_INT8
          && es_model_layer (ex->model, j)->spec.kind == ES_LAYER_DENSE)
        L->chain_to = j;
    }
  ex->row_a = ES_MAX (ex->row_a, 1);
  ex->bufA = be->iface->alloc (be, ES_MEM_ACTIVATIONS,
                               (size_t) max_batch * (size_t) ex->row_a * sizeof (float), err);
  if (ex->bufA == NULL)
    goto fail;
  ex->bufB = be->iface->alloc (be, ES_MEM_ACTIVATIONS,
                               (size_t) max_batch * (size_t) ex->row_a * sizeof (float), err);
  if (ex->bufB == NULL)
    goto fail;
  if (ex->row_argmax > 0)
    {
      ex->argmax = be->iface->alloc (be, ES_MEM_ACTIVATIONS, (size_t) max_batch
                                     * (size_t) ex->row_argmax * sizeof (int32_t), err);
      if (ex->argmax == NULL)
        goto fail;
    }
  for (int t = 0; t < ex->n_threads; t++)
    {
      if (sp_floats > 0 && (ex->sp_scratch[t] = alloc64 (sp_floats * sizeof (float))) == NULL)
        goto nomem;
      if (img_bytes > 0 && ((ex->conv_img[t] = alloc64 (img_bytes)) == NULL
                            || (ex->conv_col[t] = alloc64 (col_bytes)) == NULL))
        goto nomem;
    }
  return ex;

nomem:
  es_error_set (err, ES_ERR_NOMEM, "Out of memory creating a variant runner");
fail:
  es_exec_free (ex);
  return NULL;
}

EsExecKind
es_exec_layer_kind (const EsExec *ex, int layer)
{
  if (layer < 0 || layer >= es_model_n_layers (ex->model))
    return ES_EXEC_DENSE;
  return ex->layers[layer].kind;
}

void
es_exec_set_observer (EsExec *ex, EsExecObserver fn, void *data)
{
  ex->obs = fn;
  ex->obs_data = fn != NULL ? data : NULL;
}

/* ------------------------------------------------------------------------------ */
/* parallel parts */

static int
tasks_for (const EsExec *ex, double macs, double min_per_task, int B)
{
  int nt = (int) (macs / min_per_task);

  return ES_MAX (1, ES_MIN (ES_MIN (nt, ex->n_threads), B));
}

static void
run_tasks (EsExec *ex, int nt, EsPoolFn fn, void *job)
{
  if (nt <= 1)
    fn (job, 0, 1);
  else
    es_pool_run_n (ex->pool, nt, fn, job);
}

typedef struct {
  EsExec      *ex;
  int          first;       /* the first layer */
  bool         fuse;        /* fuse ReLUs and follow chains */
  const float *inp;         /* (B, IN) */
  float       *out;         /* (B, OUT) of the last layer of the chain */
  int          B;
  float        x_scale, x_inv;
  int32_t      x_zero;
} Int8Job;

/* Task t: its rows of the batch through the int8 Dense layer and those chained to it. */
static void
int8_dense_part (void *data, int t, int nt)
{
  const Int8Job *job = data;
  EsExec *ex = job->ex;
  const ExecLayer *L = &ex->layers[job->first];
  float sx = job->x_scale;
  int32_t zx = job->x_zero;
  int64_t b0, b1;
  int i = job->first;

  es_pool_chunk (job->B, 1, t, nt, &b0, &b1);
  if (b0 >= b1)
    return;
  {
    const int IN = es_qgemm_weights_k (L->qw);

    es_qgemm_quantize (ex->path, L->xq + b0 * L->ldx, L->ldx, job->inp + b0 * IN, IN,
                       (int) (b1 - b0), IN, job->x_inv, job->x_zero, ex->qmax);
  }
  for (;;)
    {
      const int next = job->fuse ? L->chain_to : -1;
      const int OUT = es_qgemm_weights_n (L->qw);
      EsQGemmOut o = { .x_scale = sx, .x_zero = zx, .relu = job->fuse && L->act >= 0 };

      if (next >= 0)
        {
          const ExecLayer *N = &ex->layers[next];

          o.out_q = N->xq + b0 * N->ldx;
          o.ld_q = N->ldx;
          o.q_inv_scale = N->in_inv;
          o.q_zero = N->in_zero;
          o.q_qmax = ex->qmax;
        }
      else
        {
          o.out = job->out + b0 * OUT;
          o.ld_out = OUT;
        }
      es_qgemm_forward (L->qw, L->xq + b0 * L->ldx, L->ldx, (int) (b1 - b0), &o);
      if (next < 0)
        break;
      i = next;
      L = &ex->layers[i];
      sx = L->in_scale;
      zx = L->in_zero;
    }
}

/* The input's scale and zero point: the calibrated ones, or this batch's. */
static void
int8_input_params (const EsExec *ex, const ExecLayer *L, const float *inp, int64_t N,
                   float *scale, float *inv, int32_t *zero)
{
  if (!ex->dynamic)
    {
      *scale = L->in_scale;
      *inv = L->in_inv;
      *zero = L->in_zero;
      return;
    }
  {
    float lo, hi;

    es_qgemm_minmax (ex->path, inp, N, &lo, &hi);
    es_quant_act_params (lo, hi, ex->qmax, scale, zero);
    *inv = 1.0f / *scale;
  }
}

/* Layer i (an int8 Dense) and the layers chained to it; returns the last layer done. */
static int
run_int8_dense (EsExec *ex, int i, const float *inp, float *out, int B)
{
  const bool fuse = ex->obs == NULL;
  Int8Job job = { ex, i, fuse, inp, out, B, 0.0f, 0.0f, 0 };
  double macs = 0.0;
  int last = i;

  int8_input_params (ex, &ex->layers[i], inp,
                     (int64_t) B * es_qgemm_weights_k (ex->layers[i].qw),
                     &job.x_scale, &job.x_inv, &job.x_zero);
  for (int k = i; k >= 0; k = fuse ? ex->layers[k].chain_to : -1)
    {
      const ExecLayer *L = &ex->layers[k];

      macs += (double) B * es_qgemm_weights_k (L->qw) * es_qgemm_weights_n (L->qw);
      last = fuse && L->act >= 0 ? L->act : k;
    }
  run_tasks (ex, tasks_for (ex, macs, INT8_PAR_MIN_MACS, B), int8_dense_part, &job);
  return last;
}

typedef struct {
  EsExec      *ex;
  int          layer;
  bool         relu;
  const float *inp;    /* (B, C, H, W) */
  float       *out;    /* (B, OC, OH, OW) */
  int          B;
  float        x_scale, x_inv;
  int32_t      x_zero;
} ConvJob;

/* col (OHW, ldc) of a quantized image (C, H, W), pad the zero point's code. */
static void
im2col_u8 (uint8_t *col, int64_t ldc, const uint8_t *img, int C, int H, int W, int K, int S,
           int P, int OH, int OW, uint8_t pad)
{
  for (int oh = 0; oh < OH; oh++)
    for (int ow = 0; ow < OW; ow++)
      {
        uint8_t *dst = col + ((int64_t) oh * OW + ow) * ldc;

        for (int c = 0; c < C; c++)
          for (int kh = 0; kh < K; kh++)
            {
              const int ih = oh * S - P + kh;

              for (int kw = 0; kw < K; kw++)
                {
                  const int iw = ow * S - P + kw;

                  *dst++ = ih >= 0 && ih < H && iw >= 0 && iw < W
                             ? img[((int64_t) c * H + ih) * W + iw] : pad;
                }
            }
      }
}

static void
int8_conv_part (void *data, int t, int nt)
{
  const ConvJob *job = data;
  EsExec *ex = job->ex;
  const ExecLayer *L = &ex->layers[job->layer];
  const EsLayerInfo *l = es_model_layer (ex->model, job->layer);
  const int C = l->in.dims[0], H = l->in.dims[1], W = l->in.dims[2];
  const int OC = l->out.dims[0], OH = l->out.dims[1], OW = l->out.dims[2];
  const int CHW = C * H * W, CKK = C * l->spec.kernel * l->spec.kernel;
  const int64_t ldc = es_qgemm_row_bytes (CKK);
  int64_t i0, i1;

  es_pool_chunk (job->B, 1, t, nt, &i0, &i1);
  for (int64_t img = i0; img < i1; img++)
    {
      EsQGemmOut o = { .x_scale = job->x_scale, .x_zero = job->x_zero, .relu = job->relu,
                       .out = job->out + img * OC * OH * OW, .ld_out = (int64_t) OH * OW,
                       .transposed = true };

      es_qgemm_quantize (ex->path, ex->conv_img[t], L->ldx, job->inp + img * CHW, CHW, 1,
                         CHW, job->x_inv, job->x_zero, ex->qmax);
      im2col_u8 (ex->conv_col[t], ldc, ex->conv_img[t], C, H, W, l->spec.kernel,
                 l->spec.stride, l->spec.padding, OH, OW, (uint8_t) job->x_zero);
      es_qgemm_forward (L->qw, ex->conv_col[t], ldc, OH * OW, &o);
    }
}

static int
run_int8_conv (EsExec *ex, int i, const float *inp, float *out, int B)
{
  const EsLayerInfo *l = es_model_layer (ex->model, i);
  const ExecLayer *L = &ex->layers[i];
  const bool fuse = ex->obs == NULL && L->act >= 0;
  ConvJob job = { ex, i, fuse, inp, out, B, 0.0f, 0.0f, 0 };
  double macs = (double) B * (double) l->flops / 2.0;

  int8_input_params (ex, L, inp, (int64_t) B * es_shape_size (&l->in), &job.x_scale,
                     &job.x_inv, &job.x_zero);
  run_tasks (ex, tasks_for (ex, macs, INT8_PAR_MIN_MACS, B), int8_conv_part, &job);
  return fuse ? L->act : i;
}

typedef struct {
  EsExec      *ex;
  const EsCsr *csr;
  const float *bias;
  bool         relu;
  const float *inp;
  float       *out;
  int          B;
} SparseJob;

static void
sparse_part (void *data, int t, int nt)
{
  const SparseJob *job = data;
  int64_t b0, b1;

  es_pool_chunk (job->B, 1, t, nt, &b0, &b1);
  if (b0 < b1)
    es_csr_dense_forward (job->out + b0 * job->csr->rows, job->inp + b0 * job->csr->cols,
                          job->csr, job->bias, job->relu, (int) (b1 - b0),
                          job->ex->sp_scratch[t], 0, job->csr->rows);
}

static int
run_sparse (EsExec *ex, int i, const float *inp, float *out, int B)
{
  const ExecLayer *L = &ex->layers[i];
  const bool fuse = ex->obs == NULL && L->act >= 0;
  SparseJob job = { ex, L->csr, layer_param (ex, i, 1), fuse, inp, out, B };

  run_tasks (ex, tasks_for (ex, (double) B * (double) L->csr->nnz, SPARSE_PAR_MIN_MACS, B),
             sparse_part, &job);
  return fuse ? L->act : i;
}

/* ------------------------------------------------------------------------------ */
/* the run */

const float *
es_exec_run (EsExec *ex, const float *x, int B)
{
  const EsModel *m = ex->model;
  const float *inp = x;
  float *out = ex->bufA;

  if (x == NULL || B <= 0 || B > ex->max_batch)
    return NULL;
  es_pool_apply_ftz (ex->pool);  /* the backend's FTZ/DAZ setting */
  for (int i = 0; i < es_model_n_layers (m); i++)
    {
      const EsLayerInfo *l = es_model_layer (m, i);
      const ExecLayer *L = &ex->layers[i];

      if (ex->obs != NULL)
        ex->obs (ex->obs_data, i, inp, B, es_shape_size (&l->in));
      if (es_infer_identity (l->spec.kind))
        continue;  /* keep reading inp */
      if (L->kind == ES_EXEC_INT8 && l->spec.kind == ES_LAYER_DENSE)
        i = run_int8_dense (ex, i, inp, out, B);
      else if (L->kind == ES_EXEC_INT8 && l->spec.kind == ES_LAYER_CONV2D)
        i = run_int8_conv (ex, i, inp, out, B);
      else if (L->kind == ES_EXEC_SPARSE && l->spec.kind == ES_LAYER_DENSE)
        i = run_sparse (ex, i, inp, out, B);
      else
        i = es_infer_layer_forward (ex->be, m, i, ex->obs == NULL ? L->act : -1, out, inp,
                                    ex->params, ex->buffers, ex->argmax, B);
      inp = out;
      out = out == ex->bufA ? ex->bufB : ex->bufA;
    }
  return inp;
}
