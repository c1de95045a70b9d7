/* es-quant.c: see es-quant.h. Weight quantization, the storage arithmetic of fp16 and
 * bf16, and the calibrator of static activation ranges. It does not run int8 products
 * (es-qgemm.c) or models (es-exec.c): the calibrator runs the float model through an
 * EsExec of its own and reads every weight layer's input through the observer tap.
 *
 * Calibration histograms are logarithmic: a bin is a float exponent and the top
 * HIST_MANT_BITS bits of the mantissa of |x| (about 0.8% wide relative to the value),
 * over 2^-64 .. 2^64. So they need no range fixed in advance, never re-bin, and give
 * the same counts whatever order and batch sizes the values arrive in. Exact zeros are
 * counted apart: they quantize without error (0 is always on the grid). */
#include "es-quant.h"
#include "es-exec.h"

#include <stdlib.h>
#include <string.h>

static inline int
qmax_of (bool reduce_range)
{
  return reduce_range ? 127 : 255;
}

static bool
is_weight_layer (EsLayerKind k)
{
  return k == ES_LAYER_DENSE || k == ES_LAYER_CONV2D;
}

/* ------------------------------------------------------------------------------ */
/* names */

static const char *const mode_names[] = {
  [ES_QUANT_FP32] = "fp32",
  [ES_QUANT_INT8_STATIC] = "int8-static",
  [ES_QUANT_INT8_DYNAMIC] = "int8-dynamic",
  [ES_QUANT_FP16] = "fp16",
  [ES_QUANT_BF16] = "bf16",
};

static const char *const calib_names[] = {
  [ES_CALIB_MINMAX] = "minmax",
  [ES_CALIB_PERCENTILE] = "percentile",
  [ES_CALIB_MSE] = "mse",
};

const char *
es_quant_mode_name (EsQuantMode mode)
{
  return (unsigned) mode < ES_N_ELEMENTS (mode_names) ? mode_names[mode] : "unknown";
}

bool
es_quant_mode_from_name (const char *name, EsQuantMode *mode)
{
  for (size_t i = 0; name != NULL && i < ES_N_ELEMENTS (mode_names); i++)
    if (strcmp (name, mode_names[i]) == 0)
      {
        *mode = (EsQuantMode) i;
        return true;
      }
  return false;
}

const char *
es_calib_method_name (EsCalibMethod m)
{
  return (unsigned) m < ES_N_ELEMENTS (calib_names) ? calib_names[m] : "unknown";
}

bool
es_calib_method_from_name (const char *name, EsCalibMethod *m)
{
  for (size_t i = 0; name != NULL && i < ES_N_ELEMENTS (calib_names); i++)
    if (strcmp (name, calib_names[i]) == 0)
      {
        *m = (EsCalibMethod) i;
        return true;
      }
  return false;
}

/* ------------------------------------------------------------------------------ */
/* fp16 and bf16 */

static inline uint32_t
f32_bits (float x)
{
  uint32_t u;

  memcpy (&u, &x, sizeof u);
  return u;
}

static inline float
bits_f32 (uint32_t u)
{
  float x;

  memcpy (&x, &u, sizeof x);
  return x;
}

/* Integer arithmetic only, so FTZ/DAZ on the calling thread change nothing. */
uint16_t
es_f32_to_f16 (float x)
{
  const uint32_t f = f32_bits (x);
  const uint16_t sign = (uint16_t) ((f >> 16) & 0x8000);
  uint32_t a = f & 0x7fffffff;
  int e;

  if (a >= 0x7f800000)  /* Inf, or NaN kept quiet with the top of its payload */
    return a == 0x7f800000 ? sign | 0x7c00 : sign | 0x7e00 | ((a >> 13) & 0x3ff);
  if (a >= 0x477ff000)  /* from 65520 (halfway past 65504, ties to even) up: Inf */
    return sign | 0x7c00;
  if (a >= 0x38800000)  /* a normal half (from 2^-14): round the 13 bits dropped */
    {
      a += 0xfff + ((a >> 13) & 1);
      return sign | (uint16_t) ((a - 0x38000000) >> 13);
    }
  /* a half subnormal, h * 2^-24, or zero */
  e = (int) (a >> 23);
  if (e < 102)          /* below 2^-25 (and 2^-25 itself ties to 0) */
    return sign;
  {
    const uint32_t m = (a & 0x7fffff) | 0x800000;
    const int shift = 126 - e;           /* 14 .. 24 */
    uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);

    if (rem > half || (rem == half && (h & 1)))
      h++;
    return sign | (uint16_t) h;
  }
}

float
es_f16_to_f32 (uint16_t h)
{
  const uint32_t sign = (uint32_t) (h & 0x8000) << 16;
  int e = (h >> 10) & 0x1f;
  uint32_t m = h & 0x3ff;

  if (e == 0x1f)
    return bits_f32 (sign | 0x7f800000 | (m << 13));
  if (e == 0)
    {
      if (m == 0)
        return bits_f32 (sign);
      e = 1;
      while (!(m & 0x400))
        {
          m <<= 1;
          e--;
        }
      m &= 0x3ff;
    }
  return bits_f32 (sign | ((uint32_t) (e + 112) << 23) | (m << 13));
}

uint16_t
es_f32_to_bf16 (float x)
{
  uint32_t f = f32_bits (x);

  if ((f & 0x7fffffff) > 0x7f800000)
    return (uint16_t) ((f >> 16) | 0x0040);   /* NaN stays NaN (quiet) */
  f += 0x7fff + ((f >> 16) & 1);
  return (uint16_t) (f >> 16);
}

float
es_bf16_to_f32 (uint16_t h)
{
  return bits_f32 ((uint32_t) h << 16);
}

/* ------------------------------------------------------------------------------ */
/* EsQuant */

static void
layer_clear (EsQuantLayer *l)
{
  free (l->w_scale);
  free (l->w_q);
  memset (l, 0, sizeof *l);
}

EsQuant *
es_quant_new_empty (EsQuantMode mode, int n_layers)
{
  EsQuant *q;

  if (n_layers < 0)
    return NULL;
  q = calloc (1, sizeof *q);
  if (q == NULL)
    return NULL;
  q->layers = calloc ((size_t) ES_MAX (n_layers, 1), sizeof *q->layers);
  if (q->layers == NULL)
    {
      free (q);
      return NULL;
    }
  q->mode = mode;
  q->n_layers = n_layers;
  return q;
}

void
es_quant_free (EsQuant *q)
{
  if (q == NULL)
    return;
  for (int i = 0; i < q->n_layers; i++)
    layer_clear (&q->layers[i]);
  free (q->layers);
  free (q);
}

/* Also marks the layer int8. */
bool
es_quant_layer_alloc (EsQuantLayer *l, int rows, int cols, EsError *err)
{
  if (rows <= 0 || cols <= 0)
    {
      es_error_set (err, ES_ERR_INVALID, "An int8 layer needs a positive weight shape (got %d x %d)",
                    rows, cols);
      return false;
    }
  free (l->w_scale);
  free (l->w_q);
  l->w_scale = malloc ((size_t) rows * sizeof (float));
  l->w_q = malloc ((size_t) rows * (size_t) cols);
  if (l->w_scale == NULL || l->w_q == NULL)
    {
      free (l->w_scale);
      free (l->w_q);
      l->w_scale = NULL;
      l->w_q = NULL;
      l->rows = l->cols = 0;
      l->int8 = false;
      es_error_set (err, ES_ERR_NOMEM, "Out of memory for int8 weights");
      return false;
    }
  l->rows = rows;
  l->cols = cols;
  l->int8 = true;
  return true;
}

EsQuant *
es_quant_copy (const EsQuant *q)
{
  EsQuant *c;

  if (q == NULL)
    return NULL;
  c = es_quant_new_empty (q->mode, q->n_layers);
  if (c == NULL)
    return NULL;
  c->reduce_range = q->reduce_range;
  for (int i = 0; i < q->n_layers; i++)
    {
      const EsQuantLayer *s = &q->layers[i];
      EsQuantLayer *d = &c->layers[i];

      *d = *s;
      d->w_scale = NULL;
      d->w_q = NULL;
      if (s->w_scale == NULL || s->w_q == NULL)
        continue;
      if (!es_quant_layer_alloc (d, s->rows, s->cols, NULL))
        {
          es_quant_free (c);
          return NULL;
        }
      d->int8 = s->int8;
      memcpy (d->w_scale, s->w_scale, (size_t) s->rows * sizeof (float));
      memcpy (d->w_q, s->w_q, (size_t) s->rows * (size_t) s->cols);
    }
  return c;
}

/* The weight (rows, cols) of weight layer i. */
static const float *
layer_weight (const EsModel *model, int i, int *rows, int *cols)
{
  const EsLayerInfo *l = es_model_layer (model, i);
  const EsTensorInfo *t = es_model_tensor (model, l->first_tensor);

  *rows = l->spec.kind == ES_LAYER_DENSE ? l->spec.units : l->spec.filters;
  *cols = (int) (t->size / *rows);
  return es_model_params_const (model) + t->offset;
}

EsQuant *
es_quant_new (const EsModel *model, EsQuantMode mode, const bool *keep_float,
              bool reduce_range, EsError *err)
{
  const int n = es_model_n_layers (model);
  EsQuant *q;

  if ((unsigned) mode >= ES_N_ELEMENTS (mode_names))
    {
      es_error_set (err, ES_ERR_INVALID, "Unknown quantization mode %d", (int) mode);
      return NULL;
    }
  q = es_quant_new_empty (mode, n);
  if (q == NULL)
    {
      es_error_set (err, ES_ERR_NOMEM, "Out of memory quantizing the model");
      return NULL;
    }
  q->reduce_range = reduce_range;
  if (mode != ES_QUANT_INT8_STATIC && mode != ES_QUANT_INT8_DYNAMIC)
    return q;
  for (int i = 0; i < n; i++)
    {
      const EsLayerInfo *info = es_model_layer (model, i);
      EsQuantLayer *l = &q->layers[i];
      const float *w;
      int rows, cols;

      if (!is_weight_layer (info->spec.kind) || (keep_float != NULL && keep_float[i]))
        continue;
      w = layer_weight (model, i, &rows, &cols);
      if (!es_quant_layer_alloc (l, rows, cols, err))
        {
          es_quant_free (q);
          return NULL;
        }
      /* per output channel: s = max|w_row| / 127, q = clamp (round (w / s)) */
      for (int r = 0; r < rows; r++)
        {
          const float *wr = w + (int64_t) r * cols;
          float max_abs = 0.0f, inv;

          for (int k = 0; k < cols; k++)
            {
              if (!isfinite (wr[k]))
                {
                  es_error_set (err, ES_ERR_NUMERIC,
                                "Layer %d (%s) has a weight that is not a finite number",
                                i, es_layer_kind_title (info->spec.kind));
                  es_quant_free (q);
                  return NULL;
                }
              max_abs = fmaxf (max_abs, fabsf (wr[k]));
            }
          l->w_scale[r] = es_quant_weight_scale (max_abs);
          inv = 1.0f / l->w_scale[r];
          for (int k = 0; k < cols; k++)
            l->w_q[(int64_t) r * cols + k] = es_quant_weight (wr[k], inv);
        }
    }
  return q;
}

void
es_quant_set_input_range (EsQuant *q, int layer, float lo, float hi)
{
  EsQuantLayer *l;

  if (q == NULL || layer < 0 || layer >= q->n_layers)
    return;
  l = &q->layers[layer];
  l->in_lo = lo;
  l->in_hi = hi;
  l->calibrated = true;
  es_quant_act_params (lo, hi, qmax_of (q->reduce_range), &l->in_scale, &l->in_zero);
}

bool
es_quant_is_ready (const EsQuant *q, EsError *err)
{
  if (q->mode != ES_QUANT_INT8_STATIC)
    return true;
  for (int i = 0; i < q->n_layers; i++)
    if (q->layers[i].int8 && !q->layers[i].calibrated)
      {
        es_error_set (err, ES_ERR_INVALID,
                      "Layer %d has no calibrated input range: calibrate the static int8 model first",
                      i);
        return false;
      }
  return true;
}

bool
es_quant_check (const EsQuant *q, const EsModel *model, EsError *err)
{
  const int n = es_model_n_layers (model);
  const bool int8_mode = q->mode == ES_QUANT_INT8_STATIC || q->mode == ES_QUANT_INT8_DYNAMIC;

  if ((unsigned) q->mode >= ES_N_ELEMENTS (mode_names))
    {
      es_error_set (err, ES_ERR_FORMAT, "Unknown quantization mode %d", (int) q->mode);
      return false;
    }
  if (q->n_layers != n)
    {
      es_error_set (err, ES_ERR_FORMAT,
                    "The quantization has %d layers but the model has %d", q->n_layers, n);
      return false;
    }
  for (int i = 0; i < n; i++)
    {
      const EsQuantLayer *l = &q->layers[i];
      EsLayerKind kind = es_model_layer (model, i)->spec.kind;
      const char *title = es_layer_kind_title (kind);
      int rows, cols;

      if (!l->int8)
        continue;
      if (!int8_mode)
        {
          es_error_set (err, ES_ERR_FORMAT, "Layer %d (%s) is int8 in a %s quantization", i,
                        title, es_quant_mode_name (q->mode));
          return false;
        }
      if (!is_weight_layer (kind))
        {
          es_error_set (err, ES_ERR_FORMAT,
                        "Layer %d (%s) cannot be int8: only Dense and Conv2D layers can", i,
                        title);
          return false;
        }
      layer_weight (model, i, &rows, &cols);
      if (l->rows != rows || l->cols != cols || l->w_scale == NULL || l->w_q == NULL)
        {
          es_error_set (err, ES_ERR_FORMAT,
                        "Layer %d (%s) has int8 weights of %d x %d, but the model's are %d x %d",
                        i, title, l->rows, l->cols, rows, cols);
          return false;
        }
      for (int r = 0; r < rows; r++)
        if (!(l->w_scale[r] > 0.0f) || !isfinite (l->w_scale[r]))
          {
            es_error_set (err, ES_ERR_FORMAT,
                          "Layer %d (%s) has a weight scale that is not a positive number", i,
                          title);
            return false;
          }
      for (int64_t k = 0; k < (int64_t) rows * cols; k++)
        if (l->w_q[k] < -127)
          {
            es_error_set (err, ES_ERR_FORMAT,
                          "Layer %d (%s) has an int8 weight of -128 (the range is -127..127)",
                          i, title);
            return false;
          }
      if (q->mode == ES_QUANT_INT8_STATIC && l->calibrated
          && (!(l->in_scale > 0.0f) || !isfinite (l->in_scale) || l->in_zero < 0
              || l->in_zero > qmax_of (q->reduce_range) || !(l->in_lo <= l->in_hi)))
        {
          es_error_set (err, ES_ERR_FORMAT, "Layer %d (%s) has an invalid input range", i,
                        title);
          return false;
        }
    }
  return true;
}

EsModel *
es_quant_dequantized_model (const EsModel *model, const EsQuant *q)
{
  EsModel *m;

  if (!es_quant_check (q, model, NULL))
    return NULL;
  m = es_model_copy (model);
  if (m == NULL)
    return NULL;
  if (q->mode == ES_QUANT_FP16 || q->mode == ES_QUANT_BF16)
    {
      float *p = es_model_params (m);

      for (int64_t i = 0; i < es_model_n_params (m); i++)
        p[i] = q->mode == ES_QUANT_FP16 ? es_f16_to_f32 (es_f32_to_f16 (p[i]))
                                        : es_bf16_to_f32 (es_f32_to_bf16 (p[i]));
      return m;
    }
  for (int i = 0; i < q->n_layers; i++)
    {
      const EsQuantLayer *l = &q->layers[i];
      const EsLayerInfo *info = es_model_layer (m, i);
      float *w;

      if (!l->int8)
        continue;
      w = es_model_tensor_data (m, info->first_tensor);
      for (int r = 0; r < l->rows; r++)
        for (int k = 0; k < l->cols; k++)
          w[(int64_t) r * l->cols + k] = (float) l->w_q[(int64_t) r * l->cols + k] * l->w_scale[r];
    }
  return m;
}

/* Trainable parameters at their stored width, plus the non-trainable buffers
 * (BatchNorm running statistics), which every mode keeps in fp32. */
size_t
es_quant_weight_bytes (const EsModel *model, const EsQuant *q)
{
  size_t bytes = (size_t) es_model_n_buffers (model) * sizeof (float);
  const int64_t P = es_model_n_params (model);

  if (q == NULL || q->mode == ES_QUANT_FP32)
    return bytes + (size_t) P * sizeof (float);
  if (q->mode == ES_QUANT_FP16 || q->mode == ES_QUANT_BF16)
    return bytes + (size_t) P * sizeof (uint16_t);
  for (int i = 0; i < es_model_n_layers (model); i++)
    {
      const EsLayerInfo *info = es_model_layer (model, i);
      const bool int8 = i < q->n_layers && q->layers[i].int8;

      for (int t = 0; t < info->n_tensors; t++)
        {
          const EsTensorInfo *ti = es_model_tensor (model, info->first_tensor + t);

          if (!ti->trainable)
            continue;
          if (int8 && t == 0)  /* the weight: int8 values and a float scale a row */
            bytes += (size_t) ti->size + (size_t) q->layers[i].rows * sizeof (float);
          else
            bytes += (size_t) ti->size * sizeof (float);
        }
    }
  return bytes;
}

/* ------------------------------------------------------------------------------ */
/* calibration */

#define HIST_MANT_BITS 7
#define HIST_EXP_MIN   (-64)
#define HIST_EXP_MAX   64
#define HIST_BINS      ((HIST_EXP_MAX - HIST_EXP_MIN) << HIST_MANT_BITS)

typedef struct {
  bool      weight;     /* a Dense or Conv2D layer: observed */
  uint64_t  count;      /* finite values seen (zeros included) */
  uint64_t  zeros;
  float     lo, hi;     /* smallest and largest finite value */
  uint64_t *hist;       /* (HIST_BINS) of |x| for nonzero finite x */
} CalibLayer;

struct EsCalib {
  EsModel      *model;
  EsCalibMethod method;
  float         percentile;
  EsBackend    *be;
  EsExec       *exec;
  int           exec_batch;
  int           n_layers;
  CalibLayer   *layers;
};

/* The bin of a positive finite float: exponent and top mantissa bits. */
static inline int
hist_bin (float a)
{
  const uint32_t u = f32_bits (a);
  const int e = (int) (u >> 23) - 127;

  if (e < HIST_EXP_MIN)
    return 0;
  if (e >= HIST_EXP_MAX)
    return HIST_BINS - 1;
  return ((e - HIST_EXP_MIN) << HIST_MANT_BITS)
         | (int) ((u >> (23 - HIST_MANT_BITS)) & ((1u << HIST_MANT_BITS) - 1));
}

/* The lower edge of bin j (j = HIST_BINS: the top edge). */
static double
hist_edge (int j)
{
  const int e = (j >> HIST_MANT_BITS) + HIST_EXP_MIN;
  const int m = j & ((1 << HIST_MANT_BITS) - 1);

  return ldexp (1.0 + (double) m / (1 << HIST_MANT_BITS), e);
}

void
es_calib_free (EsCalib *c)
{
  if (c == NULL)
    return;
  for (int i = 0; i < c->n_layers; i++)
    free (c->layers[i].hist);
  free (c->layers);
  es_exec_free (c->exec);
  es_backend_free (c->be);
  es_model_free (c->model);
  free (c);
}

EsCalib *
es_calib_new (const EsModel *model, EsCalibMethod method, float percentile, EsError *err)
{
  EsCalib *c;

  if ((unsigned) method >= ES_N_ELEMENTS (calib_names))
    {
      es_error_set (err, ES_ERR_INVALID, "Unknown calibration method %d", (int) method);
      return NULL;
    }
  if (percentile <= 0.0f)
    percentile = 99.99f;
  if (!(percentile <= 100.0f))
    {
      es_error_set (err, ES_ERR_INVALID,
                    "The calibration percentile must be in (0, 100] (got %g)", (double) percentile);
      return NULL;
    }
  c = calloc (1, sizeof *c);
  if (c == NULL)
    goto nomem;
  c->method = method;
  c->percentile = percentile;
  c->n_layers = es_model_n_layers (model);
  c->model = es_model_copy (model);
  c->layers = calloc ((size_t) ES_MAX (c->n_layers, 1), sizeof *c->layers);
  if (c->model == NULL || c->layers == NULL)
    goto nomem;
  for (int i = 0; i < c->n_layers; i++)
    {
      CalibLayer *l = &c->layers[i];

      l->weight = is_weight_layer (es_model_layer (model, i)->spec.kind);
      l->lo = INFINITY;
      l->hi = -INFINITY;
      if (l->weight && method != ES_CALIB_MINMAX)
        {
          l->hist = calloc (HIST_BINS, sizeof *l->hist);
          if (l->hist == NULL)
            goto nomem;
        }
    }
  c->be = es_cpu_backend_new (1, NULL, err);
  if (c->be == NULL)
    {
      es_calib_free (c);
      return NULL;
    }
  return c;

nomem:
  es_calib_free (c);
  es_error_set (err, ES_ERR_NOMEM, "Out of memory creating a calibrator");
  return NULL;
}

/* The observer: every weight layer's input. */
static void
calib_tap (void *data, int layer, const float *inp, int B, int64_t in_floats)
{
  EsCalib *c = data;
  CalibLayer *l;
  const int64_t N = (int64_t) B * in_floats;

  if (layer < 0 || layer >= c->n_layers || !c->layers[layer].weight)
    return;
  l = &c->layers[layer];
  for (int64_t i = 0; i < N; i++)
    {
      const float v = inp[i];

      if (!isfinite (v))
        continue;
      l->count++;
      if (v < l->lo)
        l->lo = v;
      if (v > l->hi)
        l->hi = v;
      if (v == 0.0f)
        l->zeros++;
      else if (l->hist != NULL)
        l->hist[hist_bin (fabsf (v))]++;
    }
}

bool
es_calib_observe (EsCalib *c, const float *x, int B, EsError *err)
{
  if (B <= 0 || x == NULL)
    {
      es_error_set (err, ES_ERR_INVALID, "Calibration needs at least one row");
      return false;
    }
  if (c->exec == NULL || B > c->exec_batch)
    {
      es_exec_free (c->exec);
      c->exec = es_exec_new (c->model, NULL, NULL, c->be, B, err);
      c->exec_batch = c->exec != NULL ? B : 0;
      if (c->exec == NULL)
        return false;
      es_exec_set_observer (c->exec, calib_tap, c);
    }
  return es_exec_run (c->exec, x, B) != NULL;
}

/* The clipping magnitude t below which pct percent of the values' magnitudes lie. */
static double
calib_percentile (const CalibLayer *l, double pct)
{
  const double want = pct / 100.0 * (double) l->count;
  double cum = (double) l->zeros;

  if (cum >= want)
    return 0.0;
  for (int j = 0; j < HIST_BINS; j++)
    {
      cum += (double) l->hist[j];
      if (l->hist[j] > 0 && cum >= want)
        return hist_edge (j + 1);
    }
  return INFINITY;
}

/* The clipping magnitude t of least expected squared error: each nonzero value inside
 * [max (lo, -t), min (hi, t)] costs s^2 / 12 (s the step of that range), each value
 * past t costs (|x| - t)^2, bins taken at their centres; the sums of the values past t
 * come from suffix sums, so every bin edge is tried in one pass. */
static double
calib_mse (const CalibLayer *l, int qmax)
{
  const double lo = fmin (l->lo, 0.0), hi = fmax (l->hi, 0.0);
  const double amax = fmax (-lo, hi);
  double n_out = 0.0, s1 = 0.0, s2 = 0.0, nonzero = (double) (l->count - l->zeros);
  double best_t = amax, best_err;
  int last = -1;

  for (int j = 0; j < HIST_BINS; j++)
    if (l->hist[j] > 0)
      last = j;
  if (last < 0)
    return amax;
  {
    const double s = (fmin (hi, amax) - fmax (lo, -amax)) / qmax;

    best_err = nonzero * s * s / 12.0;
  }
  /* t = the upper edge of bin j, from the top down: bins above j are clipped */
  for (int j = last; j >= 0; j--)
    {
      const double t = fmin (hist_edge (j + 1), amax);
      const double s = (fmin (hi, t) - fmax (lo, -t)) / qmax;
      const double inside = nonzero - n_out;
      const double err = inside * s * s / 12.0 + s2 - 2.0 * t * s1 + t * t * n_out;

      if (t > 0.0 && err < best_err)
        {
          best_err = err;
          best_t = t;
        }
      if (l->hist[j] > 0)
        {
          const double c = 0.5 * (hist_edge (j) + hist_edge (j + 1));
          const double n = (double) l->hist[j];

          n_out += n;
          s1 += n * c;
          s2 += n * c * c;
        }
    }
  return best_t;
}

bool
es_calib_apply (const EsCalib *c, EsQuant *q, EsError *err)
{
  if (q->n_layers != c->n_layers)
    {
      es_error_set (err, ES_ERR_INVALID,
                    "The quantization has %d layers but the calibrated model has %d",
                    q->n_layers, c->n_layers);
      return false;
    }
  for (int i = 0; i < q->n_layers; i++)
    {
      const CalibLayer *l = &c->layers[i];
      double lo, hi, t;

      if (!q->layers[i].int8)
        continue;
      if (!l->weight || l->count == 0)
        {
          es_error_set (err, ES_ERR_INVALID,
                        "Layer %d (%s) saw no input: observe at least one batch before calibrating",
                        i, es_layer_kind_title (es_model_layer (c->model, i)->spec.kind));
          return false;
        }
      lo = l->lo;
      hi = l->hi;
      switch (c->method)
        {
        case ES_CALIB_PERCENTILE:
          t = calib_percentile (l, c->percentile);
          lo = fmax (lo, -t);
          hi = fmin (hi, t);
          break;
        case ES_CALIB_MSE:
          t = calib_mse (l, qmax_of (q->reduce_range));
          lo = fmax (lo, -t);
          hi = fmin (hi, t);
          break;
        default:
          break;
        }
      es_quant_set_input_range (q, i, (float) lo, (float) hi);
    }
  return true;
}
