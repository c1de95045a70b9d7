/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-c-export.c: a model as a C99 .c/.h pair (see espalier-c-export.h).
 *
 * Two passes. The plan walks the model's layers once and turns them into steps, each a
 * call of one small kernel in the generated code on one of a few scratch buffers:
 * BatchNorm folded into the Dense/Conv2D before it, Flatten and Dropout gone, and for
 * int8 layers the whole stretch up to the next int8 layer folded into one
 * requantization where that is exact (see plan_int8). The emitter then writes the
 * constant arrays, the kernels the steps use, the forward function and the header.
 *
 * The int8 arithmetic. For an int8 layer with input codes q (uint8, scale s_x, zero
 * point z_x), codes w (int8, scale s_w[o] per output channel) and bias b, the engine's
 * output is y[o] = s_x s_w[o] acc[o] + b[o] with acc[o] = sum (q - z_x) w, an exact
 * int32. When the next int8 layer follows (through an optional BatchNorm y -> a y + c,
 * monotone activations F and MaxPools), its input code is
 *   clamp(round(F(A[o] acc + C[o]) / s_y) + z_y, 0, qmax),  A = a s_x s_w, C = a b + c,
 * and MaxPool commutes with the monotone quantization, so it runs on codes. The
 * generated code evaluates A acc + C in fixed point, U = acc * m[o] + add[o] (int64,
 * m a 31-bit mantissa of A / s_y, add = C / s_y, both scaled by 2^shift[o]), then
 *  - F the identity or ReLU: code = clamp(z_y + round(U / 2^shift), lo, qmax), lo = z_y
 *    for ReLU (a clamp at the zero point);
 *  - other monotone F: Y = round(U / 2^shift) in units of s_y / 2^FR, and the code is
 *    the number of thresholds T_j <= Y, T_j the least Y whose code is at least j
 *    (found here by bisection in double).
 * The fixed point is far finer than the engine's float arithmetic, so the two give
 * different codes only where the engine's float value falls within its own rounding
 * error of a code boundary. The last int8 layer (and any int8 layer whose stretch the
 * integer path cannot carry) dequantizes in float exactly as the engine writes it,
 * y = (float) acc * (s_x s_w[o]) + b[o]. */
#include "config.h"

#include "espalier-c-export.h"

#include <math.h>
#include <string.h>

#include <gio/gio.h>
#include <glib/gi18n-lib.h>

#include "espalier-error.h"
#include "espalier-format.h"
#include "espalier-json-private.h"

#define NAME_MAX_LEN 48
/* Input codes per int8 output are summed in int32: cols * qmax * 127 must fit. */
#define ACC_LIMIT 2147483647.0
/* |acc * m + add| + rounding stays below this in the generated int64 arithmetic. */
#define U_LIMIT 4611686018427387904.0   /* 2^62 */
/* Fraction bits of the table path's Y at most (units of s_y / 2^FR). */
#define TABLE_MAX_FR 16

/* ------------------------------------------------------------------------------------ */
/* The plan */

typedef enum {
  BUF_INPUT,   /* the caller's input row */
  BUF_F0,      /* float activations, ping */
  BUF_F1,      /* float activations, pong */
  BUF_Q0,      /* uint8 codes, ping */
  BUF_Q1,      /* uint8 codes, pong */
  BUF_X,       /* predict_u8's float input row */
  N_BUFS
} Buf;

static const char *const buf_expr[N_BUFS] = { "x", "s->f0", "s->f1", "s->q0", "s->q1", "s->x" };

typedef enum {
  STEP_QUANTIZE,     /* float -> codes of the next int8 layer's input */
  STEP_DENSE,        /* float */
  STEP_CONV,
  STEP_DENSE_Q,      /* int8; out by qout */
  STEP_CONV_Q,
  STEP_MAXPOOL,      /* float */
  STEP_MAXPOOL_Q,    /* on codes */
  STEP_AVGPOOL,
  STEP_BATCHNORM,    /* a BatchNorm that could not be folded */
  STEP_RELU,
  STEP_LEAKY_RELU,
  STEP_SIGMOID,
  STEP_TANH,
  STEP_SOFTMAX,
  N_STEP_KINDS
} StepKind;

typedef enum {
  QOUT_FLOAT,        /* dequantized: y = acc * scale[o] + bias[o] */
  QOUT_CLAMP,        /* codes: clamp(zero + round(U / 2^shift), lo, hi) */
  QOUT_TABLE,        /* codes: thresholds <= round(U / 2^shift) */
} QOut;

typedef struct {
  StepKind      kind;
  int           layer;          /* the model layer it runs (0-based) */
  char         *what;           /* the comment above its call */
  Buf           src, dst;
  int           c, h, w;        /* input (C, H, W); (F, 1, 1) for vectors */
  int           oc, oh, ow;     /* output */
  int           k, stride, pad;
  float         alpha;          /* LeakyReLU */
  gint64        n;              /* element-wise: values */
  /* float Dense/Conv2D, BatchNorm folded */
  float        *wf;             /* (OUT, IN) or (OC, C, K, K) */
  float        *bf;             /* (OUT) */
  /* BatchNorm (CH): gamma, 1 / sqrt(var + eps), mean, beta */
  float        *bn[4];
  /* int8 */
  const gint8  *wq;             /* (rows, cols), borrowed from the quantization */
  int           rows, cols;
  gint32        zx;             /* input zero point */
  QOut          qout;
  float        *deq_scale;      /* QOUT_FLOAT (rows): s_x s_w[o] */
  float        *deq_bias;       /* QOUT_FLOAT (rows) */
  gint32       *mult;           /* QOUT_CLAMP, QOUT_TABLE (rows) */
  guint8       *shift;          /* (rows) */
  gint64       *add;            /* (rows) */
  gint32        zero, lo, hi;   /* QOUT_CLAMP; STEP_QUANTIZE: zero */
  gint32       *table;          /* QOUT_TABLE (n_table) ascending */
  int           n_table;
  float         inv_scale;      /* STEP_QUANTIZE */
  int           qmax;           /* STEP_QUANTIZE */
  int           target;         /* the int8 layer whose input codes it makes, or -1 */
} Step;

typedef struct {
  const EsModel *model;
  const EsQuant *quant;         /* NULL: every layer float */
  int            qmax;          /* 255, or 127 with reduce_range */
  GArray        *steps;         /* (Step) */
  gint64         buf_size[N_BUFS];
  /* the value the next step reads */
  Buf            cur;
  gboolean       cur_codes;
  int            c, h, w;
  guint          n_int8;
} Plan;

static void
step_clear (Step *s)
{
  g_free (s->what);
  g_free (s->wf);
  g_free (s->bf);
  for (guint i = 0; i < G_N_ELEMENTS (s->bn); i++)
    g_free (s->bn[i]);
  g_free (s->deq_scale);
  g_free (s->deq_bias);
  g_free (s->mult);
  g_free (s->shift);
  g_free (s->add);
  g_free (s->table);
}

static void
plan_clear (Plan *p)
{
  if (p->steps != NULL)
    {
      for (guint i = 0; i < p->steps->len; i++)
        step_clear (&g_array_index (p->steps, Step, i));
      g_array_unref (p->steps);
      p->steps = NULL;
    }
}

static const EsLayerInfo *
layer_at (const Plan *p, int i)
{
  return es_model_layer (p->model, i);
}

static gboolean
is_int8 (const Plan *p, int i)
{
  return p->quant != NULL && p->quant->mode == ES_QUANT_INT8_STATIC
         && i < p->quant->n_layers && p->quant->layers[i].int8;
}

static const float *
tensor_const (const EsModel *model, int t)
{
  const EsTensorInfo *ti = es_model_tensor (model, t);

  return (ti->trainable ? es_model_params_const (model) : es_model_buffers_const (model))
         + ti->offset;
}

static float *
tensor_dup (const EsModel *model, int t)
{
  const EsTensorInfo *ti = es_model_tensor (model, t);

  return g_memdup2 (tensor_const (model, t), (gsize) ti->size * sizeof (float));
}

static void
shape_chw (const EsShape *s, int *c, int *h, int *w)
{
  *c = s->dims[0];
  *h = s->rank == 3 ? s->dims[1] : 1;
  *w = s->rank == 3 ? s->dims[2] : 1;
}

static char *
shape_text (const EsShape *s)
{
  char buf[64];

  return g_strdup (es_shape_format (s, buf, sizeof buf));
}

/* The buffer of the kind wanted that is not avoid, sized for n values. */
static Buf
take_buf (Plan *p, gboolean codes, Buf avoid, gint64 n)
{
  Buf b = codes ? (avoid == BUF_Q0 ? BUF_Q1 : BUF_Q0) : (avoid == BUF_F0 ? BUF_F1 : BUF_F0);

  p->buf_size[b] = MAX (p->buf_size[b], n);
  return b;
}

static Step *
add_step (Plan *p, StepKind kind, int layer)
{
  Step s = { .kind = kind, .layer = layer, .target = -1, .src = p->cur };

  s.c = p->c;
  s.h = p->h;
  s.w = p->w;
  g_array_append_val (p->steps, s);
  return &g_array_index (p->steps, Step, p->steps->len - 1);
}

/* Make s write a new buffer of the kind, n values of shape (c, h, w), and make that the
 * current value. */
static void
step_output (Plan *p, Step *s, gboolean codes, int c, int h, int w)
{
  gint64 n = (gint64) c * h * w;

  s->dst = take_buf (p, codes, s->src, n);
  s->oc = c;
  s->oh = h;
  s->ow = w;
  p->cur = s->dst;
  p->cur_codes = codes;
  p->c = c;
  p->h = h;
  p->w = w;
}

/* Make the float step s write the current value in place, or a new buffer when that is
 * the caller's input. */
static void
step_in_place (Plan *p, Step *s)
{
  if (p->cur == BUF_INPUT)
    step_output (p, s, FALSE, p->c, p->h, p->w);
  else
    {
      s->dst = p->cur;
      s->oc = p->c;
      s->oh = p->h;
      s->ow = p->w;
    }
}

/* An element-wise float step, in place unless it reads the caller's input. */
static void
plan_elementwise (Plan *p, StepKind kind, int layer, float alpha)
{
  Step *s = add_step (p, kind, layer);

  s->alpha = alpha;
  s->n = (gint64) p->c * p->h * p->w;
  s->what = g_strdup_printf ("layer %d: %s", layer + 1,
                             es_layer_kind_title (layer_at (p, layer)->spec.kind));
  step_in_place (p, s);
}

/* BatchNorm's per-channel gamma, 1 / sqrt(var + eps) (in float, as the engine), mean
 * and beta. */
static void
batchnorm_params (const Plan *p, int i, const float **gamma, const float **beta,
                  const float **mean, const float **var)
{
  const EsLayerInfo *l = layer_at (p, i);

  *gamma = tensor_const (p->model, l->first_tensor);
  *beta = tensor_const (p->model, l->first_tensor + 1);
  *mean = tensor_const (p->model, l->first_tensor + 2);
  *var = tensor_const (p->model, l->first_tensor + 3);
}

static float
batchnorm_rstd (float var, float eps)
{
  return 1.0f / sqrtf (var + eps);
}

/* The index of the first layer from i on that is not Flatten or Dropout. */
static int
skip_noops (const Plan *p, int i)
{
  int n = es_model_n_layers (p->model);

  while (i < n)
    {
      EsLayerKind k = layer_at (p, i)->spec.kind;

      if (k != ES_LAYER_FLATTEN && k != ES_LAYER_DROPOUT)
        break;
      i++;
    }
  return i;
}

/* A BatchNorm at j (after skip_noops) that normalizes the output of layer i channel by
 * channel, so it can fold into it; -1 otherwise. */
static int
foldable_batchnorm (const Plan *p, int i, int j)
{
  const EsLayerInfo *l = layer_at (p, i);

  if (j < es_model_n_layers (p->model)
      && layer_at (p, j)->spec.kind == ES_LAYER_BATCHNORM
      && es_shape_equal (&layer_at (p, j)->in, &l->out))
    return j;
  return -1;
}

static char *
layer_what (const Plan *p, int i, int bn, const char *extra)
{
  const EsLayerInfo *l = layer_at (p, i);
  g_autofree char *in = shape_text (&l->in);
  g_autofree char *out = shape_text (&l->out);

  return g_strdup_printf ("layer %d: %s %s -> %s%s%s", i + 1, es_layer_kind_title (l->spec.kind),
                          in, out, bn >= 0 ? ", BatchNorm folded in" : "", extra ? extra : "");
}

/* A float Dense or Conv2D, with a BatchNorm that follows it folded in. Returns the next
 * layer to plan. */
static int
plan_float_layer (Plan *p, int i)
{
  const EsLayerInfo *l = layer_at (p, i);
  const EsTensorInfo *wt = es_model_tensor (p->model, l->first_tensor);
  int j = skip_noops (p, i + 1);
  int bn = foldable_batchnorm (p, i, j);
  gboolean conv = l->spec.kind == ES_LAYER_CONV2D;
  Step *s = add_step (p, conv ? STEP_CONV : STEP_DENSE, i);
  int rows = conv ? l->spec.filters : l->spec.units;
  gint64 cols = wt->size / rows;
  int oc, oh, ow;

  s->wf = tensor_dup (p->model, l->first_tensor);
  s->bf = tensor_dup (p->model, l->first_tensor + 1);
  s->rows = rows;
  s->cols = (int) cols;
  if (conv)
    {
      s->k = l->spec.kernel;
      s->stride = l->spec.stride;
      s->pad = l->spec.padding;
    }
  if (bn >= 0)
    {
      const float *gamma, *beta, *mean, *var;
      float eps = layer_at (p, bn)->spec.eps;

      batchnorm_params (p, bn, &gamma, &beta, &mean, &var);
      for (int o = 0; o < rows; o++)
        {
          double a = (double) gamma[o] * (double) batchnorm_rstd (var[o], eps);

          for (gint64 k = 0; k < cols; k++)
            s->wf[o * cols + k] = (float) ((double) s->wf[o * cols + k] * a);
          s->bf[o] = (float) (((double) s->bf[o] - (double) mean[o]) * a + (double) beta[o]);
        }
    }
  s->what = layer_what (p, i, bn, NULL);
  shape_chw (&l->out, &oc, &oh, &ow);
  step_output (p, s, FALSE, oc, oh, ow);
  return bn >= 0 ? bn + 1 : i + 1;
}

/* ---- int8 ------------------------------------------------------------------------ */

/* The code of the real value v: clamp(round(v / s + z), 0, qmax), ties to even; any
 * magnitude (the engine's lrintf is only defined within long's range). */
static int
real_code (double v, double s, gint32 zero, int qmax)
{
  double t = v / s + zero;

  if (!(t > 0.0))
    return 0;
  if (t > qmax)
    return qmax;
  return (int) nearbyint (t);
}

/* The monotone activations of a tail (layer indices), applied in double. */
static double
tail_apply (const Plan *p, const int *tail, int n_tail, double u)
{
  for (int t = 0; t < n_tail; t++)
    {
      const EsLayerSpec *s = &layer_at (p, tail[t])->spec;

      switch (s->kind)
        {
        case ES_LAYER_RELU:
          u = u > 0.0 ? u : 0.0;
          break;
        case ES_LAYER_LEAKY_RELU:
          u = u > 0.0 ? u : (double) s->alpha * u;
          break;
        case ES_LAYER_SIGMOID:
          u = u >= 0.0 ? 1.0 / (1.0 + exp (-u)) : exp (u) / (1.0 + exp (u));
          break;
        case ES_LAYER_TANH:
          u = tanh (u);
          break;
        default:
          break;
        }
    }
  return u;
}

/* Whether a real code (F(u) / s_y + z_y) of at least j is reached. */
static gboolean
tail_reaches (const Plan *p, const int *tail, int n_tail, double u, double s_y, gint32 z_y,
              int j)
{
  return tail_apply (p, tail, n_tail, u) / s_y + z_y >= j - 0.5;
}

/* Thresholds of the table path: table[j - 1] is the least Y (units s_y / 2^fr, Y in
 * [-(2^31 - 1), 2^31 - 2]) whose code is at least j, or 2^31 - 1 when none is. Chooses
 * fr so that Y's range covers every input whose code differs from the limits'; FALSE
 * when no fr from 0 does. */
static gboolean
tail_table (const Plan *p, const int *tail, int n_tail, double s_y, gint32 z_y, int *fr_out,
            gint32 *table)
{
  const double y_min = -2147483647.0, y_max = 2147483646.0;
  int code_hi = real_code (tail_apply (p, tail, n_tail, 1e300), s_y, z_y, p->qmax);
  int code_lo = real_code (tail_apply (p, tail, n_tail, -1e300), s_y, z_y, p->qmax);
  double r = 256.0;
  int fr;

  /* the input range (in units of s_y) beyond which the code is the limit's */
  while (r < 0x1p40
         && (real_code (tail_apply (p, tail, n_tail, r * s_y), s_y, z_y, p->qmax) != code_hi
             || real_code (tail_apply (p, tail, n_tail, -r * s_y), s_y, z_y, p->qmax) != code_lo))
    r *= 2.0;
  fr = MIN (TABLE_MAX_FR, 30 - (int) ceil (log2 (r)));
  if (fr < 0)
    return FALSE;
  for (int j = 1; j <= p->qmax; j++)
    {
      double lo = y_min, hi = y_max;
      double unit = s_y / ldexp (1.0, fr);

      if (!tail_reaches (p, tail, n_tail, hi * unit, s_y, z_y, j))
        {
          table[j - 1] = G_MAXINT32;
          continue;
        }
      /* least integer Y in [lo, hi] that reaches j: invariant hi reaches */
      if (tail_reaches (p, tail, n_tail, lo * unit, s_y, z_y, j))
        hi = lo;
      while (hi - lo > 1.0)
        {
          double mid = floor ((lo + hi) / 2.0);

          if (tail_reaches (p, tail, n_tail, mid * unit, s_y, z_y, j))
            hi = mid;
          else
            lo = mid;
        }
      table[j - 1] = (gint32) hi;
    }
  *fr_out = fr;
  return TRUE;
}

/* m and shift with m / 2^shift ~ M, |m| < 2^31, and add = round(C 2^shift), so that
 * |acc| <= amax keeps |acc m + add| + 2^shift under 2^62; FALSE when no shift >= 1 does. */
static gboolean
fixed_point (double M, double C, double amax, gint32 *m_out, guint8 *shift_out,
             gint64 *add_out)
{
  int shift;
  double m;

  if (!isfinite (M) || !isfinite (C))
    return FALSE;
  if (M == 0.0)
    shift = 31;
  else
    {
      int e;

      frexp (M, &e);            /* |M| = f 2^e, f in [0.5, 1) */
      shift = 31 - e;           /* |m| in [2^30, 2^31] */
    }
  shift = MIN (shift, 62);
  for (; shift >= 1; shift--)
    {
      double add;

      m = nearbyint (ldexp (M, shift));
      if (fabs (m) >= 2147483648.0)
        continue;
      add = nearbyint (ldexp (C, shift));
      if (amax * fabs (m) + fabs (add) + ldexp (1.0, shift) < U_LIMIT)
        {
          *m_out = (gint32) m;
          *shift_out = (guint8) shift;
          *add_out = (gint64) add;
          return TRUE;
        }
    }
  return FALSE;
}

static gboolean
quant_layer_check (const Plan *p, int i, GError **error)
{
  const EsLayerInfo *l = layer_at (p, i);
  const EsQuantLayer *ql = &p->quant->layers[i];
  const EsTensorInfo *wt;
  int rows;

  if (l->spec.kind != ES_LAYER_DENSE && l->spec.kind != ES_LAYER_CONV2D)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE,
                   _("The quantization makes layer %d (%s) int8, but only Dense and Conv2D layers can be"),
                   i + 1, es_layer_kind_title (l->spec.kind));
      return FALSE;
    }
  wt = es_model_tensor (p->model, l->first_tensor);
  rows = l->spec.kind == ES_LAYER_CONV2D ? l->spec.filters : l->spec.units;
  if (ql->rows != rows || (gint64) ql->cols * rows != wt->size || ql->w_q == NULL
      || ql->w_scale == NULL)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE,
                   _("The quantization of layer %d does not fit the model’s weights"), i + 1);
      return FALSE;
    }
  if (!ql->calibrated || !(ql->in_scale > 0.0f) || !isfinite (ql->in_scale)
      || ql->in_zero < 0 || ql->in_zero > p->qmax)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED,
                   _("Layer %d has no calibrated input range: calibrate the int8 variant before exporting it"),
                   i + 1);
      return FALSE;
    }
  for (int o = 0; o < rows; o++)
    if (!(ql->w_scale[o] > 0.0f) || !isfinite (ql->w_scale[o]))
      {
        g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED,
                     _("Layer %d has a weight scale that is not a positive number"), i + 1);
        return FALSE;
      }
  if ((double) ql->cols * p->qmax * 127.0 > ACC_LIMIT)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED,
                   _("Layer %d sums %d products per output, too many for a 32-bit accumulator"),
                   i + 1, ql->cols);
      return FALSE;
    }
  return TRUE;
}

/* The requantization of int8 layer i straight into the input codes of int8 layer
 * target, through the BatchNorm bn (or -1) and the tail's activations; FALSE (s
 * untouched) when the fixed point cannot hold it. */
static gboolean
plan_requant (Plan *p, Step *s, int i, int bn, const int *tail, int n_tail, int target)
{
  const EsQuantLayer *ql = &p->quant->layers[i];
  const EsQuantLayer *qt = &p->quant->layers[target];
  const float *bias = tensor_const (p->model, layer_at (p, i)->first_tensor + 1);
  const float *gamma = NULL, *beta = NULL, *mean = NULL, *var = NULL;
  double s_y = qt->in_scale, amax = (double) ql->cols * p->qmax * 127.0;
  gboolean closed = TRUE;
  g_autofree gint32 *table = NULL;
  g_autofree gint32 *mult = g_new (gint32, ql->rows);
  g_autofree guint8 *shift = g_new (guint8, ql->rows);
  g_autofree gint64 *add = g_new (gint64, ql->rows);
  int fr = 0;

  for (int t = 0; t < n_tail; t++)
    {
      EsLayerKind k = layer_at (p, tail[t])->spec.kind;

      if (k != ES_LAYER_RELU && k != ES_LAYER_MAXPOOL2D)
        closed = FALSE;
    }
  if (!closed)
    {
      table = g_new (gint32, p->qmax);
      if (!tail_table (p, tail, n_tail, s_y, qt->in_zero, &fr, table))
        return FALSE;
    }
  if (bn >= 0)
    batchnorm_params (p, bn, &gamma, &beta, &mean, &var);
  for (int o = 0; o < ql->rows; o++)
    {
      double A = (double) (ql->in_scale * ql->w_scale[o]), C = bias[o];

      if (bn >= 0)
        {
          double a = (double) gamma[o] * (double) batchnorm_rstd (var[o], layer_at (p, bn)->spec.eps);

          A *= a;
          C = a * (C - (double) mean[o]) + (double) beta[o];
        }
      if (!fixed_point (ldexp (A / s_y, fr), ldexp (C / s_y, fr), amax, &mult[o], &shift[o],
                        &add[o]))
        return FALSE;
    }
  s->qout = closed ? QOUT_CLAMP : QOUT_TABLE;
  s->mult = g_steal_pointer (&mult);
  s->shift = g_steal_pointer (&shift);
  s->add = g_steal_pointer (&add);
  s->zero = qt->in_zero;
  s->hi = p->qmax;
  s->lo = 0;
  for (int t = 0; t < n_tail; t++)
    if (layer_at (p, tail[t])->spec.kind == ES_LAYER_RELU)
      s->lo = qt->in_zero;
  if (!closed)
    {
      s->table = g_steal_pointer (&table);
      s->n_table = p->qmax;
    }
  s->target = target;
  return TRUE;
}

/* Int8 layer i: quantize its input if it is float; then either requantize straight into
 * the next int8 layer's input codes (when only a BatchNorm right after it, monotone
 * activations, MaxPool, Flatten and Dropout lie between), or dequantize to float.
 * Returns the next layer to plan, or -1 with error set. */
static int
plan_int8 (Plan *p, int i, GError **error)
{
  const EsLayerInfo *l = layer_at (p, i);
  const EsQuantLayer *ql = &p->quant->layers[i];
  int n = es_model_n_layers (p->model);
  gboolean conv = l->spec.kind == ES_LAYER_CONV2D;
  g_autofree int *tail = g_new (int, n);
  int n_tail = 0, j, bn, target = -1;
  int oc, oh, ow;
  Step *s;

  if (!quant_layer_check (p, i, error))
    return -1;
  p->n_int8++;
  if (!p->cur_codes)
    {
      s = add_step (p, STEP_QUANTIZE, i);
      s->inv_scale = 1.0f / ql->in_scale;
      s->zero = ql->in_zero;
      s->qmax = p->qmax;
      s->target = i;
      s->n = (gint64) p->c * p->h * p->w;
      s->what = g_strdup_printf ("layer %d's input: float -> uint8 codes (scale %g, zero point %d)",
                                 i + 1, (double) ql->in_scale, (int) ql->in_zero);
      step_output (p, s, TRUE, p->c, p->h, p->w);
    }

  /* what lies between this layer and the next int8 one */
  j = skip_noops (p, i + 1);
  bn = foldable_batchnorm (p, i, j);
  if (bn >= 0)
    j = bn + 1;
  for (; j < n; j++)
    {
      const EsLayerSpec *t = &layer_at (p, j)->spec;

      if (t->kind == ES_LAYER_FLATTEN || t->kind == ES_LAYER_DROPOUT)
        continue;
      if (t->kind == ES_LAYER_RELU || t->kind == ES_LAYER_SIGMOID || t->kind == ES_LAYER_TANH
          || t->kind == ES_LAYER_MAXPOOL2D
          || (t->kind == ES_LAYER_LEAKY_RELU && t->alpha >= 0.0f))
        tail[n_tail++] = j;
      else
        break;
    }
  if (j < n && is_int8 (p, j))
    {
      target = j;
      if (!quant_layer_check (p, target, error))
        return -1;
    }

  s = add_step (p, conv ? STEP_CONV_Q : STEP_DENSE_Q, i);
  s->wq = ql->w_q;
  s->rows = ql->rows;
  s->cols = ql->cols;
  s->zx = ql->in_zero;
  if (conv)
    {
      s->k = l->spec.kernel;
      s->stride = l->spec.stride;
      s->pad = l->spec.padding;
    }
  if (target >= 0 && plan_requant (p, s, i, bn, tail, n_tail, target))
    {
      GString *what = g_string_new (NULL);
      g_autofree char *head = layer_what (p, i, bn, ", int8");

      g_string_append (what, head);
      for (int t = 0; t < n_tail; t++)
        if (layer_at (p, tail[t])->spec.kind != ES_LAYER_MAXPOOL2D)
          g_string_append_printf (what, ", %s", es_layer_kind_title (layer_at (p, tail[t])->spec.kind));
      g_string_append_printf (what, ", requantized to layer %d's input codes", target + 1);
      s->what = g_string_free (what, FALSE);
      shape_chw (&l->out, &oc, &oh, &ow);
      step_output (p, s, TRUE, oc, oh, ow);
      /* the MaxPools, on codes */
      for (int t = 0; t < n_tail; t++)
        {
          const EsLayerInfo *pl = layer_at (p, tail[t]);

          if (pl->spec.kind != ES_LAYER_MAXPOOL2D)
            continue;
          s = add_step (p, STEP_MAXPOOL_Q, tail[t]);
          s->k = pl->spec.kernel;
          s->stride = pl->spec.stride;
          s->what = layer_what (p, tail[t], -1, ", on codes");
          shape_chw (&pl->out, &oc, &oh, &ow);
          step_output (p, s, TRUE, oc, oh, ow);
        }
      return target;
    }

  /* dequantize, as the engine does */
  s->qout = QOUT_FLOAT;
  s->deq_scale = g_new (float, ql->rows);
  s->deq_bias = tensor_dup (p->model, l->first_tensor + 1);
  for (int o = 0; o < ql->rows; o++)
    s->deq_scale[o] = ql->in_scale * ql->w_scale[o];
  s->what = layer_what (p, i, -1, ", int8, dequantized to float");
  shape_chw (&l->out, &oc, &oh, &ow);
  step_output (p, s, FALSE, oc, oh, ow);
  return i + 1;
}

static gboolean
plan_build (Plan *p, GError **error)
{
  int n = es_model_n_layers (p->model);
  EsShape in = es_model_input_shape (p->model);

  p->steps = g_array_new (FALSE, TRUE, sizeof (Step));
  p->cur = BUF_INPUT;
  p->cur_codes = FALSE;
  shape_chw (&in, &p->c, &p->h, &p->w);
  for (int i = 0; i < n;)
    {
      const EsLayerInfo *l = layer_at (p, i);
      int oc, oh, ow;
      Step *s;

      if (p->cur_codes && !is_int8 (p, i))
        {
          /* plan_int8 only leaves codes for the int8 layer they were made for */
          g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE,
                       _("Internal error planning layer %d"), i + 1);
          return FALSE;
        }
      switch (l->spec.kind)
        {
        case ES_LAYER_DENSE:
        case ES_LAYER_CONV2D:
          if (is_int8 (p, i))
            {
              i = plan_int8 (p, i, error);
              if (i < 0)
                return FALSE;
            }
          else
            i = plan_float_layer (p, i);
          continue;
        case ES_LAYER_FLATTEN:
        case ES_LAYER_DROPOUT:
          shape_chw (&l->out, &p->c, &p->h, &p->w);
          break;
        case ES_LAYER_MAXPOOL2D:
        case ES_LAYER_AVGPOOL2D:
          s = add_step (p, l->spec.kind == ES_LAYER_MAXPOOL2D ? STEP_MAXPOOL : STEP_AVGPOOL, i);
          s->k = l->spec.kernel;
          s->stride = l->spec.stride;
          s->what = layer_what (p, i, -1, NULL);
          shape_chw (&l->out, &oc, &oh, &ow);
          step_output (p, s, FALSE, oc, oh, ow);
          break;
        case ES_LAYER_BATCHNORM:
          {
            const float *gamma, *beta, *mean, *var;
            int ch = l->in.dims[0];

            batchnorm_params (p, i, &gamma, &beta, &mean, &var);
            s = add_step (p, STEP_BATCHNORM, i);
            s->bn[0] = g_memdup2 (gamma, (gsize) ch * sizeof (float));
            s->bn[1] = g_new (float, ch);
            for (int c = 0; c < ch; c++)
              s->bn[1][c] = batchnorm_rstd (var[c], l->spec.eps);
            s->bn[2] = g_memdup2 (mean, (gsize) ch * sizeof (float));
            s->bn[3] = g_memdup2 (beta, (gsize) ch * sizeof (float));
            s->n = es_shape_size (&l->in);
            s->what = layer_what (p, i, -1, NULL);
            step_in_place (p, s);
          }
          break;
        case ES_LAYER_RELU:
          plan_elementwise (p, STEP_RELU, i, 0.0f);
          break;
        case ES_LAYER_LEAKY_RELU:
          plan_elementwise (p, STEP_LEAKY_RELU, i, l->spec.alpha);
          break;
        case ES_LAYER_SIGMOID:
          plan_elementwise (p, STEP_SIGMOID, i, 0.0f);
          break;
        case ES_LAYER_TANH:
          plan_elementwise (p, STEP_TANH, i, 0.0f);
          break;
        case ES_LAYER_SOFTMAX:
          plan_elementwise (p, STEP_SOFTMAX, i, 0.0f);
          break;
        default:
          g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED,
                       _("Layer %d has a kind the C export does not know"), i + 1);
          return FALSE;
        }
      i++;
    }
  return TRUE;
}

/* Integer-only: every Dense/Conv2D int8, no float step before the last int8 layer
 * except the first step's input quantization. */
static gboolean
plan_integer_only (const Plan *p)
{
  int last = -1, n = es_model_n_layers (p->model);

  if (p->n_int8 == 0)
    return FALSE;
  for (int i = 0; i < n; i++)
    {
      EsLayerKind k = layer_at (p, i)->spec.kind;

      if ((k == ES_LAYER_DENSE || k == ES_LAYER_CONV2D) && !is_int8 (p, i))
        return FALSE;
    }
  for (guint t = 0; t < p->steps->len; t++)
    {
      const Step *s = &g_array_index (p->steps, Step, t);

      if (s->kind == STEP_DENSE_Q || s->kind == STEP_CONV_Q)
        last = (int) t;
    }
  for (int t = 0; t < last; t++)
    {
      const Step *s = &g_array_index (p->steps, Step, t);

      if (s->kind == STEP_QUANTIZE && t == 0)
        continue;
      if (s->kind == STEP_DENSE_Q || s->kind == STEP_CONV_Q)
        {
          if (s->qout == QOUT_FLOAT)
            return FALSE;
          continue;
        }
      if (s->kind != STEP_MAXPOOL_Q)
        return FALSE;
    }
  return TRUE;
}

/* ------------------------------------------------------------------------------------ */
/* Emitting */

typedef struct {
  GString *c;            /* the .c text */
  gsize    weight_bytes;
  gboolean uses[N_STEP_KINDS];
  gboolean uses_libm;
  gboolean uses_quant_out;
  gboolean not_finite;   /* a float array held an infinity or NaN */
} Emit;

/* Values as a C initializer, wrapped under 100 columns. */
static void
emit_values_begin (GString *c, const char *type, const char *name, gint64 n, const char *shape)
{
  g_string_append_printf (c, "static const %s %s[%" G_GINT64_FORMAT "] = {%s%s%s\n",
                          type, name, n, shape ? "  /* " : "", shape ? shape : "",
                          shape ? " */" : "");
}

static void
emit_value (GString *c, const char *text, gsize *col)
{
  gsize len = strlen (text);

  if (*col == 0)
    {
      g_string_append (c, "  ");
      *col = 2;
    }
  else if (*col + len + 2 > 96)
    {
      g_string_append (c, ",\n  ");
      *col = 2;
    }
  else
    {
      g_string_append (c, ", ");
      *col += 2;
    }
  g_string_append (c, text);
  *col += len;
}

static void
emit_values_end (GString *c)
{
  g_string_append (c, "\n};\n\n");
}

/* v as a C float literal of exactly that value: the shortest text that reads back as
 * v, when it lies so close to v (under 0.49 ulp) that rounding it straight to float,
 * as a compiler does with the f suffix, gives v too; otherwise nine digits, which
 * always do. */
static const char *
float_literal (char *buf, float v)
{
  double back, ulp;
  gsize len;

  espalier_format_float (buf, v);
  back = g_ascii_strtod (buf, NULL);
  ulp = (double) nextafterf (fabsf (v), INFINITY) - (double) fabsf (v);
  if (!(fabs (back - (double) v) < 0.49 * ulp))
    g_ascii_formatd (buf, G_ASCII_DTOSTR_BUF_SIZE, "%.9g", (double) v);
  len = strlen (buf);
  if (strpbrk (buf, ".e") == NULL)
    {
      g_strlcpy (buf + len, ".0", G_ASCII_DTOSTR_BUF_SIZE - len);
      len += 2;
    }
  g_strlcpy (buf + len, "f", G_ASCII_DTOSTR_BUF_SIZE - len);
  return buf;
}

static void
emit_floats (Emit *e, const char *name, const float *v, gint64 n, const char *shape)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE + 4];
  gsize col = 0;

  emit_values_begin (e->c, "float", name, n, shape);
  for (gint64 i = 0; i < n; i++)
    {
      if (!isfinite (v[i]))
        e->not_finite = TRUE;
      emit_value (e->c, float_literal (buf, v[i]), &col);
    }
  emit_values_end (e->c);
  e->weight_bytes += (gsize) n * sizeof (float);
}

static void
emit_ints (Emit *e, const char *type, gsize size, const char *name, gint64 n, const char *shape,
           gint64 (*get) (const void *v, gint64 i), const void *v)
{
  char buf[32];
  gsize col = 0;

  emit_values_begin (e->c, type, name, n, shape);
  for (gint64 i = 0; i < n; i++)
    {
      g_snprintf (buf, sizeof buf, "%" G_GINT64_FORMAT, get (v, i));
      emit_value (e->c, buf, &col);
    }
  emit_values_end (e->c);
  e->weight_bytes += (gsize) n * size;
}

static gint64 get_i8 (const void *v, gint64 i) { return ((const gint8 *) v)[i]; }
static gint64 get_u8 (const void *v, gint64 i) { return ((const guint8 *) v)[i]; }
static gint64 get_i32 (const void *v, gint64 i) { return ((const gint32 *) v)[i]; }
static gint64 get_i64 (const void *v, gint64 i) { return ((const gint64 *) v)[i]; }

/* A float as a C expression of exactly that value. */
static char *
float_expr (float v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE + 4];

  return g_strdup (float_literal (buf, v));
}

/* The constant arrays of one step, named l<layer>_<what>. */
static void
emit_step_data (Emit *e, const Step *s)
{
  int L = s->layer + 1;
  char name[64], shape[64];

  switch (s->kind)
    {
    case STEP_DENSE:
    case STEP_CONV:
      if (s->kind == STEP_DENSE)
        g_snprintf (shape, sizeof shape, "(%d, %d)", s->rows, s->cols);
      else
        g_snprintf (shape, sizeof shape, "(%d, %d, %d, %d)", s->rows, s->c, s->k, s->k);
      g_snprintf (name, sizeof name, "l%d_weight", L);
      emit_floats (e, name, s->wf, (gint64) s->rows * s->cols, shape);
      g_snprintf (name, sizeof name, "l%d_bias", L);
      emit_floats (e, name, s->bf, s->rows, NULL);
      break;
    case STEP_DENSE_Q:
    case STEP_CONV_Q:
      if (s->kind == STEP_DENSE_Q)
        g_snprintf (shape, sizeof shape, "(%d, %d) int8 codes", s->rows, s->cols);
      else
        g_snprintf (shape, sizeof shape, "(%d, %d, %d, %d) int8 codes", s->rows, s->c, s->k, s->k);
      g_snprintf (name, sizeof name, "l%d_weight", L);
      emit_ints (e, "int8_t", 1, name, (gint64) s->rows * s->cols, shape, get_i8, s->wq);
      if (s->qout == QOUT_FLOAT)
        {
          g_snprintf (name, sizeof name, "l%d_scale", L);
          emit_floats (e, name, s->deq_scale, s->rows, "s_x s_w[o]");
          g_snprintf (name, sizeof name, "l%d_bias", L);
          emit_floats (e, name, s->deq_bias, s->rows, NULL);
        }
      else
        {
          g_snprintf (name, sizeof name, "l%d_mult", L);
          emit_ints (e, "int32_t", 4, name, s->rows, "fixed-point multiplier", get_i32, s->mult);
          g_snprintf (name, sizeof name, "l%d_shift", L);
          emit_ints (e, "uint8_t", 1, name, s->rows, "its right shift", get_u8, s->shift);
          g_snprintf (name, sizeof name, "l%d_add", L);
          emit_ints (e, "int64_t", 8, name, s->rows, "bias (and BatchNorm) at mult's scale",
                     get_i64, s->add);
          if (s->qout == QOUT_TABLE)
            {
              g_snprintf (name, sizeof name, "l%d_table", L);
              emit_ints (e, "int32_t", 4, name, s->n_table, "least Y of each code 1..", get_i32,
                         s->table);
            }
        }
      break;
    case STEP_BATCHNORM:
      {
        static const char *const what[4] = { "gamma", "rstd", "mean", "beta" };

        for (int k = 0; k < 4; k++)
          {
            g_snprintf (name, sizeof name, "l%d_%s", L, what[k]);
            emit_floats (e, name, s->bn[k], s->c, NULL);
          }
      }
      break;
    default:
      break;
    }
}

/* The kernels, each emitted when a step uses it. */
static const char kernel_dense[] =
  "/* out (OUT) = w (OUT, IN) . x (IN) + b (OUT) */\n"
  "static void\n"
  "dense (float *out, const float *x, const float *w, const float *b, long n_in, long n_out)\n"
  "{\n"
  "  long o, i;\n"
  "\n"
  "  for (o = 0; o < n_out; o++)\n"
  "    {\n"
  "      const float *row = w + o * n_in;\n"
  "      float acc = b[o];\n"
  "\n"
  "      for (i = 0; i < n_in; i++)\n"
  "        acc += row[i] * x[i];\n"
  "      out[o] = acc;\n"
  "    }\n"
  "}\n\n";

static const char kernel_conv[] =
  "/* out (OC, OH, OW) = x (C, H, W) convolved with w (OC, C, K, K) at stride st, with\n"
  " * pad zeros around x, + b (OC) */\n"
  "static void\n"
  "conv2d (float *out, const float *x, const float *w, const float *b, long c_in, long h,\n"
  "        long wd, long c_out, long k, long st, long pad, long oh_n, long ow_n)\n"
  "{\n"
  "  long oc, oh, ow, c, kh, kw;\n"
  "\n"
  "  for (oc = 0; oc < c_out; oc++)\n"
  "    for (oh = 0; oh < oh_n; oh++)\n"
  "      for (ow = 0; ow < ow_n; ow++)\n"
  "        {\n"
  "          float acc = b[oc];\n"
  "\n"
  "          for (c = 0; c < c_in; c++)\n"
  "            for (kh = 0; kh < k; kh++)\n"
  "              {\n"
  "                const long ih = oh * st - pad + kh;\n"
  "\n"
  "                if (ih < 0 || ih >= h)\n"
  "                  continue;\n"
  "                for (kw = 0; kw < k; kw++)\n"
  "                  {\n"
  "                    const long iw = ow * st - pad + kw;\n"
  "\n"
  "                    if (iw >= 0 && iw < wd)\n"
  "                      acc += x[(c * h + ih) * wd + iw] * w[((oc * c_in + c) * k + kh) * k + kw];\n"
  "                  }\n"
  "              }\n"
  "          out[(oc * oh_n + oh) * ow_n + ow] = acc;\n"
  "        }\n"
  "}\n\n";

static const char kernel_maxpool[] =
  "/* out (C, OH, OW) = the largest value of each k x k window of x (C, H, W), stride st */\n"
  "static void\n"
  "maxpool (float *out, const float *x, long c_n, long h, long wd, long k, long st,\n"
  "         long oh_n, long ow_n)\n"
  "{\n"
  "  long c, oh, ow, kh, kw;\n"
  "\n"
  "  for (c = 0; c < c_n; c++)\n"
  "    for (oh = 0; oh < oh_n; oh++)\n"
  "      for (ow = 0; ow < ow_n; ow++)\n"
  "        {\n"
  "          const float *win = x + (c * h + oh * st) * wd + ow * st;\n"
  "          float best = win[0];\n"
  "\n"
  "          for (kh = 0; kh < k; kh++)\n"
  "            for (kw = 0; kw < k; kw++)\n"
  "              if (win[kh * wd + kw] > best)\n"
  "                best = win[kh * wd + kw];\n"
  "          out[(c * oh_n + oh) * ow_n + ow] = best;\n"
  "        }\n"
  "}\n\n";

static const char kernel_maxpool_q[] =
  "/* maxpool on codes: quantization is monotone, so the largest code is the code of the\n"
  " * largest value */\n"
  "static void\n"
  "maxpool_q (uint8_t *out, const uint8_t *x, long c_n, long h, long wd, long k, long st,\n"
  "           long oh_n, long ow_n)\n"
  "{\n"
  "  long c, oh, ow, kh, kw;\n"
  "\n"
  "  for (c = 0; c < c_n; c++)\n"
  "    for (oh = 0; oh < oh_n; oh++)\n"
  "      for (ow = 0; ow < ow_n; ow++)\n"
  "        {\n"
  "          const uint8_t *win = x + (c * h + oh * st) * wd + ow * st;\n"
  "          uint8_t best = win[0];\n"
  "\n"
  "          for (kh = 0; kh < k; kh++)\n"
  "            for (kw = 0; kw < k; kw++)\n"
  "              if (win[kh * wd + kw] > best)\n"
  "                best = win[kh * wd + kw];\n"
  "          out[(c * oh_n + oh) * ow_n + ow] = best;\n"
  "        }\n"
  "}\n\n";

static const char kernel_avgpool[] =
  "/* out (C, OH, OW) = the mean of each k x k window of x (C, H, W), stride st */\n"
  "static void\n"
  "avgpool (float *out, const float *x, long c_n, long h, long wd, long k, long st,\n"
  "         long oh_n, long ow_n)\n"
  "{\n"
  "  long c, oh, ow, kh, kw;\n"
  "\n"
  "  for (c = 0; c < c_n; c++)\n"
  "    for (oh = 0; oh < oh_n; oh++)\n"
  "      for (ow = 0; ow < ow_n; ow++)\n"
  "        {\n"
  "          const float *win = x + (c * h + oh * st) * wd + ow * st;\n"
  "          float acc = 0.0f;\n"
  "\n"
  "          for (kh = 0; kh < k; kh++)\n"
  "            for (kw = 0; kw < k; kw++)\n"
  "              acc += win[kh * wd + kw];\n"
  "          out[(c * oh_n + oh) * ow_n + ow] = acc / (float) (k * k);\n"
  "        }\n"
  "}\n\n";

static const char kernel_batchnorm[] =
  "/* BatchNorm with the running statistics: out = gamma ((x - mean) rstd) + beta, x\n"
  " * (CH, SP); rstd = 1 / sqrt(var + eps) */\n"
  "static void\n"
  "batchnorm (float *out, const float *x, const float *gamma, const float *rstd,\n"
  "           const float *mean, const float *beta, long ch_n, long sp)\n"
  "{\n"
  "  long c, i;\n"
  "\n"
  "  for (c = 0; c < ch_n; c++)\n"
  "    for (i = c * sp; i < (c + 1) * sp; i++)\n"
  "      out[i] = gamma[c] * ((x[i] - mean[c]) * rstd[c]) + beta[c];\n"
  "}\n\n";

static const char kernel_relu[] =
  "static void\n"
  "relu (float *out, const float *x, long n)\n"
  "{\n"
  "  long i;\n"
  "\n"
  "  for (i = 0; i < n; i++)\n"
  "    out[i] = x[i] > 0.0f ? x[i] : 0.0f;\n"
  "}\n\n";

static const char kernel_leaky_relu[] =
  "static void\n"
  "leaky_relu (float *out, const float *x, float alpha, long n)\n"
  "{\n"
  "  long i;\n"
  "\n"
  "  for (i = 0; i < n; i++)\n"
  "    out[i] = x[i] > 0.0f ? x[i] : alpha * x[i];\n"
  "}\n\n";

static const char kernel_sigmoid[] =
  "/* 1 / (1 + e^-x), taking exp of non-positive values only */\n"
  "static void\n"
  "sigmoid (float *out, const float *x, long n)\n"
  "{\n"
  "  long i;\n"
  "\n"
  "  for (i = 0; i < n; i++)\n"
  "    {\n"
  "      if (x[i] >= 0.0f)\n"
  "        out[i] = 1.0f / (1.0f + expf (-x[i]));\n"
  "      else\n"
  "        {\n"
  "          const float e = expf (x[i]);\n"
  "\n"
  "          out[i] = e / (1.0f + e);\n"
  "        }\n"
  "    }\n"
  "}\n\n";

static const char kernel_tanh[] =
  "static void\n"
  "tanh_act (float *out, const float *x, long n)\n"
  "{\n"
  "  long i;\n"
  "\n"
  "  for (i = 0; i < n; i++)\n"
  "    out[i] = tanhf (x[i]);\n"
  "}\n\n";

static const char kernel_softmax[] =
  "/* e^(x - max) / sum e^(x - max) */\n"
  "static void\n"
  "softmax (float *out, const float *x, long n)\n"
  "{\n"
  "  float m = x[0], sum = 0.0f;\n"
  "  long i;\n"
  "\n"
  "  for (i = 1; i < n; i++)\n"
  "    m = x[i] > m ? x[i] : m;\n"
  "  for (i = 0; i < n; i++)\n"
  "    {\n"
  "      out[i] = expf (x[i] - m);\n"
  "      sum += out[i];\n"
  "    }\n"
  "  for (i = 0; i < n; i++)\n"
  "    out[i] /= sum;\n"
  "}\n\n";

static const char kernel_quantize[] =
  "/* lrintf (v) in the default rounding mode (to nearest, ties to even), without libm;\n"
  " * NaN and values below -1e9 give -2^30, values above 1e9 give 2^30 */\n"
  "static int32_t\n"
  "round_even (float v)\n"
  "{\n"
  "  int32_t r;\n"
  "  float f;\n"
  "\n"
  "  if (!(v > -1.0e9f))\n"
  "    return -1073741824L;\n"
  "  if (v > 1.0e9f)\n"
  "    return 1073741824L;\n"
  "  r = (int32_t) v;          /* toward zero */\n"
  "  f = v - (float) r;        /* exact */\n"
  "  if (f > 0.5f || (!(f < 0.5f) && (r & 1)))            /* f == 0.5: to even */\n"
  "    r++;\n"
  "  else if (f < -0.5f || (!(f > -0.5f) && (r & 1)))\n"
  "    r--;\n"
  "  return r;\n"
  "}\n"
  "\n"
  "/* out = clamp(round(x * inv_scale) + zero, 0, qmax): an int8 layer's input codes */\n"
  "static void\n"
  "quantize (uint8_t *out, const float *x, float inv_scale, int32_t zero, int32_t qmax, long n)\n"
  "{\n"
  "  long i;\n"
  "\n"
  "  for (i = 0; i < n; i++)\n"
  "    {\n"
  "      const int32_t q = round_even (x[i] * inv_scale) + zero;\n"
  "\n"
  "      out[i] = (uint8_t) (q < 0 ? 0 : q > qmax ? qmax : q);\n"
  "    }\n"
  "}\n\n";

static const char kernel_quant_out[] =
  "/* How an int8 layer's sums leave it: either dequantized to float,\n"
  " *   out_f[j] = acc * scale[o] + bias[o],\n"
  " * or requantized to the next int8 layer's input codes in integers only: with\n"
  " * U = acc * mult[o] + add[o] and Y = U / 2^shift[o] rounded to nearest,\n"
  " *   out_q[j] = clamp(zero + Y, lo, hi)            (table NULL; lo = zero for ReLU), or\n"
  " *   out_q[j] = the number of table entries <= Y   (monotone activations). */\n"
  "typedef struct {\n"
  "  float         *out_f;\n"
  "  const float   *scale, *bias;\n"
  "  uint8_t       *out_q;\n"
  "  const int32_t *mult;\n"
  "  const uint8_t *shift;\n"
  "  const int64_t *add;\n"
  "  int32_t        zero, lo, hi;\n"
  "  const int32_t *table;\n"
  "  int32_t        n_table;\n"
  "} quant_out;\n"
  "\n"
  "/* v / 2^s rounded to nearest, ties upward (s >= 1; |v| < 2^62) */\n"
  "static int64_t\n"
  "rshift_round (int64_t v, int s)\n"
  "{\n"
  "  const int64_t half = (int64_t) 1 << (s - 1);\n"
  "\n"
  "  return v >= 0 ? (v + half) >> s : -((half - 1 - v) >> s);\n"
  "}\n"
  "\n"
  "static void\n"
  "quant_out_store (const quant_out *q, long o, long j, int32_t acc)\n"
  "{\n"
  "  int64_t y;\n"
  "\n"
  "  if (q->out_f != NULL)\n"
  "    {\n"
  "      q->out_f[j] = (float) acc * q->scale[o] + q->bias[o];\n"
  "      return;\n"
  "    }\n"
  "  y = rshift_round ((int64_t) acc * q->mult[o] + q->add[o], q->shift[o]);\n"
  "  if (q->table == NULL)\n"
  "    {\n"
  "      y += q->zero;\n"
  "      q->out_q[j] = (uint8_t) (y < q->lo ? q->lo : y > q->hi ? q->hi : y);\n"
  "    }\n"
  "  else\n"
  "    {\n"
  "      int32_t lo = 0, hi = q->n_table;\n"
  "\n"
  "      y = y < -2147483647L ? -2147483647L : y > 2147483646L ? 2147483646L : y;\n"
  "      while (lo < hi)\n"
  "        {\n"
  "          const int32_t mid = lo + (hi - lo) / 2;\n"
  "\n"
  "          if (q->table[mid] <= y)\n"
  "            lo = mid + 1;\n"
  "          else\n"
  "            hi = mid;\n"
  "        }\n"
  "      q->out_q[j] = (uint8_t) lo;\n"
  "    }\n"
  "}\n\n";

static const char kernel_dense_q[] =
  "/* int8 Dense: acc[o] = sum over i of (x[i] - zx) w[o, i], x (IN) codes, w (OUT, IN) */\n"
  "static void\n"
  "dense_q (const quant_out *q, const uint8_t *x, const int8_t *w, int32_t zx, long n_in,\n"
  "         long n_out)\n"
  "{\n"
  "  long o, i;\n"
  "\n"
  "  for (o = 0; o < n_out; o++)\n"
  "    {\n"
  "      const int8_t *row = w + o * n_in;\n"
  "      int32_t acc = 0;\n"
  "\n"
  "      for (i = 0; i < n_in; i++)\n"
  "        acc += ((int32_t) x[i] - zx) * row[i];\n"
  "      quant_out_store (q, o, o, acc);\n"
  "    }\n"
  "}\n\n";

static const char kernel_conv_q[] =
  "/* int8 Conv2D: acc = sum of (x - zx) w over each window, x (C, H, W) codes, w (OC, C,\n"
  " * K, K); the zero padding is the code zx, so it adds nothing */\n"
  "static void\n"
  "conv2d_q (const quant_out *q, const uint8_t *x, const int8_t *w, int32_t zx, long c_in,\n"
  "          long h, long wd, long c_out, long k, long st, long pad, long oh_n, long ow_n)\n"
  "{\n"
  "  long oc, oh, ow, c, kh, kw;\n"
  "\n"
  "  for (oc = 0; oc < c_out; oc++)\n"
  "    for (oh = 0; oh < oh_n; oh++)\n"
  "      for (ow = 0; ow < ow_n; ow++)\n"
  "        {\n"
  "          int32_t acc = 0;\n"
  "\n"
  "          for (c = 0; c < c_in; c++)\n"
  "            for (kh = 0; kh < k; kh++)\n"
  "              {\n"
  "                const long ih = oh * st - pad + kh;\n"
  "\n"
  "                if (ih < 0 || ih >= h)\n"
  "                  continue;\n"
  "                for (kw = 0; kw < k; kw++)\n"
  "                  {\n"
  "                    const long iw = ow * st - pad + kw;\n"
  "\n"
  "                    if (iw >= 0 && iw < wd)\n"
  "                      acc += ((int32_t) x[(c * h + ih) * wd + iw] - zx)\n"
  "                             * w[((oc * c_in + c) * k + kh) * k + kw];\n"
  "                  }\n"
  "              }\n"
  "          quant_out_store (q, oc, (oc * oh_n + oh) * ow_n + ow, acc);\n"
  "        }\n"
  "}\n\n";

static void
emit_kernels (Emit *e)
{
  GString *c = e->c;

  if (e->uses_quant_out)
    g_string_append (c, kernel_quant_out);
  if (e->uses[STEP_QUANTIZE])
    g_string_append (c, kernel_quantize);
  if (e->uses[STEP_DENSE])
    g_string_append (c, kernel_dense);
  if (e->uses[STEP_CONV])
    g_string_append (c, kernel_conv);
  if (e->uses[STEP_DENSE_Q])
    g_string_append (c, kernel_dense_q);
  if (e->uses[STEP_CONV_Q])
    g_string_append (c, kernel_conv_q);
  if (e->uses[STEP_MAXPOOL])
    g_string_append (c, kernel_maxpool);
  if (e->uses[STEP_MAXPOOL_Q])
    g_string_append (c, kernel_maxpool_q);
  if (e->uses[STEP_AVGPOOL])
    g_string_append (c, kernel_avgpool);
  if (e->uses[STEP_BATCHNORM])
    g_string_append (c, kernel_batchnorm);
  if (e->uses[STEP_RELU])
    g_string_append (c, kernel_relu);
  if (e->uses[STEP_LEAKY_RELU])
    g_string_append (c, kernel_leaky_relu);
  if (e->uses[STEP_SIGMOID])
    g_string_append (c, kernel_sigmoid);
  if (e->uses[STEP_TANH])
    g_string_append (c, kernel_tanh);
  if (e->uses[STEP_SOFTMAX])
    g_string_append (c, kernel_softmax);
}

/* text word-wrapped under 90 columns, the first line continuing one that already holds
 * first_col columns, the next ones starting with cont (" * " in the header's comment);
 * ends the last line. */
static void
append_wrapped (GString *h, const char *text, gsize first_col, const char *cont)
{
  g_auto(GStrv) words = g_strsplit (text, " ", -1);
  gsize col = first_col;
  gboolean line_empty = TRUE;

  for (int i = 0; words[i] != NULL; i++)
    {
      gsize len = strlen (words[i]);

      if (len == 0)
        continue;
      if (!line_empty && col + 1 + len > 89)
        {
          g_string_append_c (h, '\n');
          g_string_append (h, cont);
          col = strlen (cont);
          line_empty = TRUE;
        }
      if (!line_empty)
        {
          g_string_append_c (h, ' ');
          col++;
        }
      g_string_append (h, words[i]);
      col += len;
      line_empty = FALSE;
    }
  g_string_append_c (h, '\n');
}

/* The call of one step inside forward(). */
static void
emit_step_call (GString *c, const Plan *p, const Step *s, gboolean first)
{
  const char *src = buf_expr[s->src], *dst = buf_expr[s->dst];
  int L = s->layer + 1;
  gint64 n = (gint64) s->c * s->h * s->w;

  {
    g_autofree char *comment = g_strdup_printf ("/* %s */", s->what);

    g_string_append (c, "  ");
    append_wrapped (c, comment, 2, "     ");
  }
  switch (s->kind)
    {
    case STEP_QUANTIZE:
      {
        g_autofree char *inv = float_expr (s->inv_scale);

        /* predict_u8 of an int8 model hands over its codes with x NULL */
        g_string_append_printf (c, "  %squantize (%s, %s, %s, %d, %d, %" G_GINT64_FORMAT ");\n",
                                first ? "if (x != NULL)\n    " : "", dst, src, inv,
                                (int) s->zero, s->qmax, n);
      }
      break;
    case STEP_DENSE:
      g_string_append_printf (c, "  dense (%s, %s, l%d_weight, l%d_bias, %d, %d);\n",
                              dst, src, L, L, s->cols, s->rows);
      break;
    case STEP_CONV:
      g_string_append_printf (c, "  conv2d (%s, %s, l%d_weight, l%d_bias, %d, %d, %d, %d, %d, %d, %d, %d, %d);\n",
                              dst, src, L, L, s->c, s->h, s->w, s->oc, s->k, s->stride, s->pad,
                              s->oh, s->ow);
      break;
    case STEP_DENSE_Q:
    case STEP_CONV_Q:
      g_string_append (c, "  {\n    const quant_out q = { ");
      if (s->qout == QOUT_FLOAT)
        g_string_append_printf (c, ".out_f = %s, .scale = l%d_scale, .bias = l%d_bias", dst, L, L);
      else
        {
          g_string_append_printf (c, ".out_q = %s, .mult = l%d_mult, .shift = l%d_shift,\n"
                                  "                          .add = l%d_add", dst, L, L, L);
          if (s->qout == QOUT_CLAMP)
            g_string_append_printf (c, ", .zero = %d, .lo = %d, .hi = %d",
                                    (int) s->zero, (int) s->lo, (int) s->hi);
          else
            g_string_append_printf (c, ", .table = l%d_table, .n_table = %d", L, s->n_table);
        }
      g_string_append (c, " };\n\n");
      if (s->kind == STEP_DENSE_Q)
        g_string_append_printf (c, "    dense_q (&q, %s, l%d_weight, %d, %d, %d);\n",
                                src, L, (int) s->zx, s->cols, s->rows);
      else
        g_string_append_printf (c, "    conv2d_q (&q, %s, l%d_weight, %d, %d, %d, %d, %d, %d, %d, %d, %d, %d);\n",
                                src, L, (int) s->zx, s->c, s->h, s->w, s->oc, s->k, s->stride,
                                s->pad, s->oh, s->ow);
      g_string_append (c, "  }\n");
      break;
    case STEP_MAXPOOL:
    case STEP_MAXPOOL_Q:
    case STEP_AVGPOOL:
      g_string_append_printf (c, "  %s (%s, %s, %d, %d, %d, %d, %d, %d, %d);\n",
                              s->kind == STEP_MAXPOOL ? "maxpool"
                              : s->kind == STEP_MAXPOOL_Q ? "maxpool_q" : "avgpool",
                              dst, src, s->c, s->h, s->w, s->k, s->stride, s->oh, s->ow);
      break;
    case STEP_BATCHNORM:
      g_string_append_printf (c, "  batchnorm (%s, %s, l%d_gamma, l%d_rstd, l%d_mean, l%d_beta, %d, %" G_GINT64_FORMAT ");\n",
                              dst, src, L, L, L, L, s->c, n / s->c);
      break;
    case STEP_RELU:
      g_string_append_printf (c, "  relu (%s, %s, %" G_GINT64_FORMAT ");\n", dst, src, s->n);
      break;
    case STEP_LEAKY_RELU:
      {
        g_autofree char *alpha = float_expr (s->alpha);

        g_string_append_printf (c, "  leaky_relu (%s, %s, %s, %" G_GINT64_FORMAT ");\n",
                                dst, src, alpha, s->n);
      }
      break;
    case STEP_SIGMOID:
      g_string_append_printf (c, "  sigmoid (%s, %s, %" G_GINT64_FORMAT ");\n", dst, src, s->n);
      break;
    case STEP_TANH:
      g_string_append_printf (c, "  tanh_act (%s, %s, %" G_GINT64_FORMAT ");\n", dst, src, s->n);
      break;
    case STEP_SOFTMAX:
      g_string_append_printf (c, "  softmax (%s, %s, %" G_GINT64_FORMAT ");\n", dst, src, s->n);
      break;
    default:
      break;
    }
  (void) p;
}

/* text as a C string literal: printable ASCII as is, everything else in octal. */
static void
append_c_string (GString *c, const char *text)
{
  g_string_append_c (c, '"');
  for (const guchar *t = (const guchar *) text; *t != '\0'; t++)
    {
      if (*t == '"' || *t == '\\')
        g_string_append_printf (c, "\\%c", *t);
      else if (*t >= 0x20 && *t < 0x7f && *t != '?')   /* '?': no trigraphs */
        g_string_append_c (c, (char) *t);
      else
        g_string_append_printf (c, "\\%03o", *t);
    }
  g_string_append_c (c, '"');
}

typedef struct {
  const char *name;      /* the prefix */
  char       *upper;     /* the prefix for macros */
  char       *h_base;    /* the header's file name */
  gboolean    u8;        /* predict_u8 */
  float       in_scale, in_shift;
  char      **classes;   /* borrowed, or NULL */
  gboolean    lut;       /* predict_u8 maps bytes to the first int8 layer's codes */
  Buf         lut_buf;
} Names;

static char *
describe_variant (const Plan *p, gboolean integer_only)
{
  if (p->quant == NULL || p->quant->mode == ES_QUANT_FP32)
    return g_strdup ("float weights, float arithmetic.");
  if (p->quant->mode == ES_QUANT_FP16 || p->quant->mode == ES_QUANT_BF16)
    return g_strdup_printf ("%s weights (stored here as the float values they round to), float arithmetic.",
                            p->quant->mode == ES_QUANT_FP16 ? "fp16" : "bf16");
  return g_strdup_printf ("int8 static (%u int8 layers%s), %s.",
                          p->n_int8, p->quant->reduce_range ? ", 7-bit activations" : "",
                          integer_only ? "integer arithmetic only from the input quantization to the last int8 layer"
                                       : "not integer-only: some layers between int8 layers run in float");
}

static void
emit_header (GString *h, const Plan *p, const Names *nm, const EspalierCExportSummary *sum,
             gint64 n_in, gint64 n_out, gsize scratch_lines_bytes, const char *scratch_fields,
             const char *libm)
{
  const EsShape in = es_model_input_shape (p->model), out = es_model_output_shape (p->model);
  g_autofree char *in_text = shape_text (&in);
  g_autofree char *out_text = shape_text (&out);
  g_autofree char *variant = describe_variant (p, sum->integer_only);
  const char *N = nm->name, *U = nm->upper;

  g_autofree char *top = g_strdup_printf (
    "%s: a neural network as plain C99, generated by Espalier %s. Do not edit: export "
    "again instead. It needs only the C library%s%s%s and allocates nothing.",
    nm->h_base, PACKAGE_VERSION, libm != NULL ? " (link with -lm for " : "",
    libm != NULL ? libm : "", libm != NULL ? ")" : "");
  g_autofree char *io = g_strdup_printf (
    "Input: %s_INPUT_SIZE floats of shape %s (channels, then rows, then columns), scaled "
    "as the model was trained.%s Output: %s_OUTPUT_SIZE floats of shape %s; predict "
    "returns the index of the largest (the first one on ties).",
    U, in_text, nm->u8 ? " Raw bytes go through the _u8 functions." : "", U, out_text);
  g_autofree char *mem = g_strdup_printf (
    "Memory: %" G_GSIZE_FORMAT " bytes of constant weights; %s_SCRATCH_SIZE bytes of "
    "activations (%" G_GSIZE_FORMAT " without padding), static in %s_predict or the "
    "caller's in %s_predict_r.", sum->weight_bytes, U, scratch_lines_bytes, N, N);

  g_string_append (h, "/* ");
  append_wrapped (h, top, 3, " * ");
  g_string_append (h, " *\n * Layers:\n");
  for (int i = 0; i < es_model_n_layers (p->model); i++)
    {
      const EsLayerInfo *l = layer_at (p, i);
      g_autofree char *a = shape_text (&l->in);
      g_autofree char *b = shape_text (&l->out);

      g_string_append_printf (h, " *   %2d. %-10s %s -> %s%s\n", i + 1,
                              es_layer_kind_title (l->spec.kind), a, b,
                              is_int8 (p, i) ? "  int8" : "");
    }
  g_string_append (h, " * Variant: ");
  append_wrapped (h, variant, 12, " * ");
  g_string_append (h, " * ");
  append_wrapped (h, io, 3, " * ");
  g_string_append (h, " * ");
  append_wrapped (h, mem, 3, " * ");
  if (p->n_int8 > 0)
    {
      g_autofree char *q = g_strdup_printf (
        "Int8: float input rows are quantized to uint8 codes at the first int8 layer%s. "
        "Each int8 layer sums uint8 x int8 products in int32 and hands the next int8 layer "
        "its input codes through a per-channel fixed-point multiplier and rounding shift "
        "(int64), ReLU being a clamp at the zero point; the last int8 layer dequantizes "
        "(acc * scale + bias, in float), so the outputs are float. Espalier's engine "
        "requantizes in float instead: the two can differ on a code only where the "
        "engine's float value lies within its rounding error of a code boundary, and on "
        "a class only on a row where such a code decides it.",
        nm->lut ? " (the _u8 functions map bytes to those codes through a table, without "
                  "float)" : "");

      g_string_append (h, " * ");
      append_wrapped (h, q, 3, " * ");
    }
  g_string_append_printf (h,
    " *\n"
    " * Build: cc -std=c99 -O2 -c %s.c%s\n"
    " */\n"
    "#ifndef %s_H_INCLUDED\n"
    "#define %s_H_INCLUDED\n"
    "\n"
    "#include <stdint.h>\n"
    "\n"
    "#ifdef __cplusplus\n"
    "extern \"C\" {\n"
    "#endif\n"
    "\n"
    "#define %s_INPUT_SIZE %" G_GINT64_FORMAT "   /* floats per input row */\n"
    "#define %s_OUTPUT_SIZE %" G_GINT64_FORMAT "   /* floats per output row */\n",
    N, libm != NULL ? "   (and -lm when linking)" : "", U, U, U, n_in, U, n_out);
  if (nm->u8)
    {
      char a[G_ASCII_DTOSTR_BUF_SIZE], b[G_ASCII_DTOSTR_BUF_SIZE];

      g_string_append_printf (h, "/* _u8: x = byte * %s + %s */\n",
                              espalier_format_float (a, nm->in_scale),
                              espalier_format_float (b, nm->in_shift));
    }
  g_string_append_printf (h,
    "\n"
    "/* The activations of one inference. */\n"
    "typedef struct {\n"
    "%s"
    "} %s_scratch;\n"
    "\n"
    "#define %s_SCRATCH_SIZE (sizeof (%s_scratch))\n"
    "\n"
    "/* Run one row: input (%s_INPUT_SIZE floats) to output (%s_OUTPUT_SIZE floats; may be\n"
    " * NULL). Returns the class, the index of the largest output. Not reentrant: it uses\n"
    " * a static scratch. */\n"
    "int %s_predict (const float *input, float *output);\n"
    "/* The same with the caller's scratch: reentrant. */\n"
    "int %s_predict_r (const float *input, float *output, %s_scratch *scratch);\n",
    scratch_fields, N, U, N, U, U, N, N, N);
  if (nm->u8)
    g_string_append_printf (h,
      "/* The same from raw bytes (%s_INPUT_SIZE of them, an image's pixels). */\n"
      "int %s_predict_u8 (const uint8_t *input, float *output);\n"
      "int %s_predict_u8_r (const uint8_t *input, float *output, %s_scratch *scratch);\n",
      U, N, N, N);
  if (nm->classes != NULL)
    g_string_append_printf (h,
      "/* The name of each class (UTF-8). */\n"
      "extern const char *const %s_class_names[%s_OUTPUT_SIZE];\n", N, U);
  g_string_append_printf (h,
    "\n"
    "#ifdef __cplusplus\n"
    "}\n"
    "#endif\n"
    "\n"
    "#endif /* %s_H_INCLUDED */\n", U);
}

/* The whole .c text, and the header, into c and h; FALSE when a float array (a
 * folded weight, a scale) came out infinite or NaN. */
static gboolean
emit_all (const Plan *p, Names *nm, GString *c, GString *h, EspalierCExportSummary *sum)
{
  static const char *const buf_type[N_BUFS] = { NULL, "float", "float", "uint8_t", "uint8_t", "float" };
  static const char *const buf_field[N_BUFS] = { NULL, "f0", "f1", "q0", "q1", "x" };
  EsShape in = es_model_input_shape (p->model), out = es_model_output_shape (p->model);
  gint64 n_in = es_shape_size (&in), n_out = es_shape_size (&out);
  gint64 sizes[N_BUFS];
  Emit e = { .c = c };
  GString *fields = g_string_new (NULL);
  gsize scratch = 0;
  const Step *first = p->steps->len > 0 ? &g_array_index (p->steps, Step, 0) : NULL;
  const char *N = nm->name, *U = nm->upper;
  const char *final = buf_expr[p->cur];

  memcpy (sizes, p->buf_size, sizeof sizes);
  nm->lut = nm->u8 && first != NULL && first->kind == STEP_QUANTIZE;
  if (nm->lut)
    nm->lut_buf = first->dst;
  else if (nm->u8)
    sizes[BUF_X] = n_in;

  for (guint t = 0; t < p->steps->len; t++)
    {
      const Step *s = &g_array_index (p->steps, Step, t);

      e.uses[s->kind] = TRUE;
      if (s->kind == STEP_DENSE_Q || s->kind == STEP_CONV_Q)
        e.uses_quant_out = TRUE;
      if (s->kind == STEP_SIGMOID || s->kind == STEP_TANH || s->kind == STEP_SOFTMAX)
        e.uses_libm = TRUE;
    }

  /* the scratch struct */
  for (int b = BUF_F0; b < N_BUFS; b++)
    if (sizes[b] > 0)
      {
        g_string_append_printf (fields, "  %-7s %s[%" G_GINT64_FORMAT "];\n", buf_type[b],
                                buf_field[b], sizes[b]);
        scratch += (gsize) sizes[b] * (b == BUF_Q0 || b == BUF_Q1 ? 1 : 4);
      }
  if (scratch == 0)
    g_string_append (fields, "  char unused;\n");

  /* the .c */
  g_string_append_printf (c,
    "/* %s.c: the network described in %s, generated by Espalier %s. Do not edit:\n"
    " * export again instead. */\n"
    "#include <stddef.h>\n"
    "#include <stdint.h>\n"
    "%s"
    "\n"
    "#include \"%s\"\n"
    "\n"
    "/* ---- weights ---------------------------------------------------------------- */\n"
    "\n",
    N, nm->h_base, PACKAGE_VERSION, e.uses_libm ? "#include <math.h>\n" : "", nm->h_base);
  for (guint t = 0; t < p->steps->len; t++)
    emit_step_data (&e, &g_array_index (p->steps, Step, t));
  if (nm->lut)
    {
      guint8 lut[256];
      g_autofree char *what = g_strdup_printf ("byte -> layer %d's input code", first->target + 1);

      for (int v = 0; v < 256; v++)
        {
          float x = (float) v * nm->in_scale + nm->in_shift;

          lut[v] = (guint8) es_quant_act (x, first->inv_scale, first->zero, first->qmax);
        }
      emit_ints (&e, "uint8_t", 1, "input_codes", 256, what, get_u8, lut);
    }
  if (nm->classes != NULL)
    {
      g_string_append_printf (c, "const char *const %s_class_names[%s_OUTPUT_SIZE] = {\n", N, U);
      for (int k = 0; nm->classes[k] != NULL; k++)
        {
          g_string_append (c, "  ");
          append_c_string (c, nm->classes[k]);
          g_string_append (c, ",\n");
        }
      g_string_append (c, "};\n\n");
    }

  g_string_append (c, "/* ---- kernels ---------------------------------------------------------------- */\n\n");
  emit_kernels (&e);

  g_string_append_printf (c,
    "/* ---- the network ------------------------------------------------------------ */\n"
    "\n"
    "/* Copy the output y and return the index of its largest value. */\n"
    "static int\n"
    "finish (const float *y, float *output)\n"
    "{\n"
    "  int best = 0;\n"
    "  long i;\n"
    "\n"
    "  for (i = 0; i < %s_OUTPUT_SIZE; i++)\n"
    "    {\n"
    "      if (output != NULL)\n"
    "        output[i] = y[i];\n"
    "      if (y[i] > y[best])\n"
    "        best = (int) i;\n"
    "    }\n"
    "  return best;\n"
    "}\n"
    "\n"
    "/* x (%s_INPUT_SIZE) through every layer into s; the class. */\n"
    "static int\n"
    "forward (%s_scratch *s, const float *x, float *output)\n"
    "{\n", U, U, N);
  if (scratch == 0)
    g_string_append (c, "  (void) s;\n");
  for (guint t = 0; t < p->steps->len; t++)
    emit_step_call (c, p, &g_array_index (p->steps, Step, t), t == 0);
  g_string_append_printf (c, "  return finish (%s, output);\n}\n\n", final);

  g_string_append_printf (c,
    "int\n"
    "%s_predict_r (const float *input, float *output, %s_scratch *scratch)\n"
    "{\n"
    "  return forward (scratch, input, output);\n"
    "}\n"
    "\n"
    "int\n"
    "%s_predict (const float *input, float *output)\n"
    "{\n"
    "  static %s_scratch scratch;\n"
    "\n"
    "  return forward (&scratch, input, output);\n"
    "}\n", N, N, N, N);
  if (nm->u8)
    {
      g_string_append_printf (c,
        "\n"
        "int\n"
        "%s_predict_u8_r (const uint8_t *input, float *output, %s_scratch *scratch)\n"
        "{\n"
        "  long i;\n"
        "\n"
        "  for (i = 0; i < %s_INPUT_SIZE; i++)\n", N, N, U);
      if (nm->lut)
        g_string_append_printf (c,
          "    scratch->%s[i] = input_codes[input[i]];\n"
          "  return forward (scratch, NULL, output);\n"
          "}\n", buf_field[nm->lut_buf]);
      else
        {
          g_autofree char *scale = float_expr (nm->in_scale);
          g_autofree char *shift = float_expr (nm->in_shift);

          g_string_append_printf (c,
            "    scratch->x[i] = (float) input[i] * %s + %s;\n"
            "  return forward (scratch, scratch->x, output);\n"
            "}\n", scale, shift);
        }
      g_string_append_printf (c,
        "\n"
        "int\n"
        "%s_predict_u8 (const uint8_t *input, float *output)\n"
        "{\n"
        "  static %s_scratch scratch;\n"
        "\n"
        "  return %s_predict_u8_r (input, output, &scratch);\n"
        "}\n", N, N, N);
    }

  sum->weight_bytes = e.weight_bytes;
  sum->scratch_bytes = scratch;
  sum->n_ops = p->steps->len;
  sum->n_int8_layers = p->n_int8;
  sum->integer_only = plan_integer_only (p);
  sum->needs_libm = e.uses_libm;
  {
    const gboolean exp_used = e.uses[STEP_SIGMOID] || e.uses[STEP_SOFTMAX];

    emit_header (h, p, nm, sum, n_in, n_out, scratch, fields->str,
                 !e.uses_libm ? NULL
                 : exp_used && e.uses[STEP_TANH] ? "expf and tanhf"
                 : exp_used ? "expf" : "tanhf");
  }
  g_string_free (fields, TRUE);
  return !e.not_finite;
}

/* ------------------------------------------------------------------------------------ */
/* Public */

gboolean
espalier_c_export_check_name (const char  *name,
                              GError     **error)
{
  gsize len;

  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  len = name != NULL ? strlen (name) : 0;
  if (len == 0)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("The C name is empty: give a name such as “mlp”"));
      return FALSE;
    }
  if (len > NAME_MAX_LEN)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("The C name is too long (%u characters; at most %d)"), (guint) len,
                   NAME_MAX_LEN);
      return FALSE;
    }
  if (!g_ascii_isalpha (name[0]))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("The C name “%s” must start with a letter (A–Z, a–z)"), name);
      return FALSE;
    }
  for (gsize i = 1; i < len; i++)
    if (!g_ascii_isalnum (name[i]) && name[i] != '_')
      {
        g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                     _("The C name “%s” may hold only letters, digits and “_”"), name);
        return FALSE;
      }
  return TRUE;
}

static gboolean
model_finite (const EsModel *model, GError **error)
{
  const float *v = es_model_params_const (model);
  const float *b = es_model_buffers_const (model);

  for (gint64 i = 0; i < es_model_n_params (model); i++)
    if (!isfinite (v[i]))
      goto bad;
  for (gint64 i = 0; i < es_model_n_buffers (model); i++)
    if (!isfinite (b[i]))
      goto bad;
  return TRUE;

bad:
  g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
               _("The model has weights that are not finite numbers: it cannot be written as C"));
  return FALSE;
}

gboolean
espalier_c_export (const EsModel           *model,
                   const EsQuant           *quant,
                   const EspalierModelInfo *info,
                   const char              *name,
                   const char              *c_path,
                   const char              *h_path,
                   EspalierCExportSummary  *summary,
                   GError                 **error)
{
  EspalierAtomicFile cf = ESPALIER_ATOMIC_FILE_INIT, hf = ESPALIER_ATOMIC_FILE_INIT;
  EspalierCExportSummary sum = { 0 };
  EsModel *rounded = NULL;
  Plan p = { 0 };
  Names nm = { .name = name };
  GString *c = NULL, *h = NULL;
  g_autofree char *c_abs = NULL, *h_abs = NULL;
  gboolean ok = FALSE;

  g_return_val_if_fail (model != NULL, FALSE);
  g_return_val_if_fail (c_path != NULL && h_path != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (!espalier_c_export_check_name (name, error))
    return FALSE;
  c_abs = g_canonicalize_filename (c_path, NULL);
  h_abs = g_canonicalize_filename (h_path, NULL);
  if (g_strcmp0 (c_abs, h_abs) == 0)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("The source and the header must be two different files"));
      return FALSE;
    }
  nm.h_base = g_path_get_basename (h_path);
  if (strpbrk (nm.h_base, "\"\\\n") != NULL || !g_utf8_validate (nm.h_base, -1, NULL))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("The header’s file name “%s” cannot be #included: use letters, digits, “-”, “_” and “.”"),
                   nm.h_base);
      goto out;
    }

  if (quant != NULL && quant->mode != ES_QUANT_FP32)
    {
      EsError es = { 0 };

      if (!es_quant_check (quant, model, &es))
        {
          g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE,
                       _("The quantization does not fit the model: %s"), es.message);
          goto out;
        }
      if (quant->mode == ES_QUANT_INT8_DYNAMIC)
        {
          g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED,
                       _("Dynamic int8 takes its ranges from each batch at run time, which the C export does not do: export a static int8 variant"));
          goto out;
        }
      if (quant->mode == ES_QUANT_FP16 || quant->mode == ES_QUANT_BF16)
        {
          rounded = es_quant_dequantized_model (model, quant);
          if (rounded == NULL)
            {
              g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY,
                           _("Out of memory rounding the weights"));
              goto out;
            }
        }
    }
  p.model = rounded != NULL ? rounded : model;
  p.quant = quant;
  p.qmax = quant != NULL && quant->reduce_range ? 127 : 255;
  if (!model_finite (p.model, error) || !plan_build (&p, error))
    goto out;

  nm.upper = g_ascii_strup (name, -1);
  if (info != NULL)
    {
      EsShape out_shape = es_model_output_shape (p.model);

      nm.u8 = TRUE;
      nm.in_scale = (float) info->input_scale;
      nm.in_shift = (float) info->input_shift;
      if (!isfinite (nm.in_scale) || !isfinite (nm.in_shift))
        {
          g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                       _("The model’s input scale and shift must be finite numbers"));
          goto out;
        }
      if (info->class_names != NULL
          && (gint64) g_strv_length (info->class_names) == es_shape_size (&out_shape))
        nm.classes = info->class_names;
    }

  c = g_string_sized_new (1 << 16);
  h = g_string_sized_new (1 << 12);
  if (!emit_all (&p, &nm, c, h, &sum))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("Folding the model’s BatchNorm or scales gave numbers that are not finite: it cannot be written as C"));
      goto out;
    }
  sum.c_bytes = c->len;
  sum.h_bytes = h->len;

  if (!espalier_atomic_open (&cf, c_path, error)
      || !espalier_atomic_write (&cf, c->str, c->len, NULL, error)
      || !espalier_atomic_sync (&cf, error)
      || !espalier_atomic_open (&hf, h_path, error)
      || !espalier_atomic_write (&hf, h->str, h->len, NULL, error)
      || !espalier_atomic_sync (&hf, error)
      || !espalier_atomic_commit (&cf, error)
      || !espalier_atomic_commit (&hf, error))
    goto out;
  if (summary != NULL)
    *summary = sum;
  ok = TRUE;

out:
  espalier_atomic_clear (&cf);
  espalier_atomic_clear (&hf);
  if (c != NULL)
    g_string_free (c, TRUE);
  if (h != NULL)
    g_string_free (h, TRUE);
  plan_clear (&p);
  g_free (nm.upper);
  g_free (nm.h_base);
  es_model_free (rounded);
  return ok;
}
