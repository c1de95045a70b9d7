/* es-prune.c: masks, magnitude pruning (per layer and global), the Zhu & Gupta schedule,
 * 2:4 masks, structured pruning of Dense neurons and Conv2D channels, and layer
 * reduction. Everything works on the host copy of a model (es-model.h); applying a mask
 * during training is the trainer's business (es_trainer_set_mask).
 *
 * Dimension key: U = units of the pruned layer (Dense outputs or Conv2D filters),
 * KEEP = the units kept, R = a weight row (Dense IN, Conv2D C*K*K), BLK = the inputs of
 * the next layer one unit feeds (1 for a Dense, H*W after a Flatten of (U, H, W), K*K
 * per output channel of a next Conv2D).
 *
 * Orders are total so results never depend on a sort's stability: magnitude pruning
 * removes weights in ascending (|w|, index) order (a NaN counts as the largest), 2:4
 * keeps the two last of a group in that order, structured pruning keeps units in
 * descending norm, the lower index first among equals. */
#include "es-prune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct EsMask {
  int64_t  n;
  uint8_t *data;   /* (n) */
};

/* ---- helpers -------------------------------------------------------------------- */

static bool
kind_is_weight (EsLayerKind kind)
{
  return kind == ES_LAYER_DENSE || kind == ES_LAYER_CONV2D;
}

bool
es_prune_layer_is_prunable (const EsModel *model, int layer)
{
  const EsLayerInfo *info = es_model_layer (model, layer);

  return info != NULL && kind_is_weight (info->spec.kind);
}

/* The weight tensor of a Dense or Conv2D layer (its first tensor). */
static const EsTensorInfo *
weight_tensor (const EsModel *model, int layer)
{
  return es_model_tensor (model, es_model_layer (model, layer)->first_tensor);
}

static const float *
tensor_const (const EsModel *model, int t)
{
  const EsTensorInfo *ti = es_model_tensor (model, t);

  return (ti->trainable ? es_model_params_const (model) : es_model_buffers_const (model))
         + ti->offset;
}

/* The next Dense/Conv2D layer after layer, or -1. */
static int
next_weight_layer (const EsModel *model, int layer)
{
  for (int j = layer + 1; j < es_model_n_layers (model); j++)
    if (es_prune_layer_is_prunable (model, j))
      return j;
  return -1;
}

static int
layer_units (const EsLayerInfo *info)
{
  return info->spec.kind == ES_LAYER_DENSE ? info->spec.units : info->spec.filters;
}

static bool
check_mask (const EsModel *model, const EsMask *mask, EsError *err)
{
  if (mask == NULL || mask->n != es_model_n_params (model))
    {
      es_error_set (err, ES_ERR_INVALID,
                    "The pruning mask was made for a model with %lld parameters, not %lld",
                    mask != NULL ? (long long) mask->n : 0LL,
                    (long long) es_model_n_params (model));
      return false;
    }
  return true;
}

/* ---- masks ------------------------------------------------------------------------ */

/* A mask of n entries, uninitialized; NULL when memory fails. */
static EsMask *
mask_alloc (int64_t n)
{
  EsMask *mask = calloc (1, sizeof *mask);

  if (mask == NULL)
    return NULL;
  mask->n = n;
  mask->data = malloc ((size_t) ES_MAX (n, 1));
  if (mask->data == NULL)
    {
      free (mask);
      return NULL;
    }
  return mask;
}

EsMask *
es_mask_new (const EsModel *model)
{
  EsMask *mask = mask_alloc (es_model_n_params (model));

  if (mask != NULL)
    memset (mask->data, 1, (size_t) mask->n);
  return mask;
}

EsMask *
es_mask_copy (const EsMask *mask)
{
  EsMask *copy = mask_alloc (mask->n);

  if (copy != NULL)
    memcpy (copy->data, mask->data, (size_t) mask->n);
  return copy;
}

void
es_mask_free (EsMask *mask)
{
  if (mask == NULL)
    return;
  free (mask->data);
  free (mask);
}

uint8_t *
es_mask_data (EsMask *mask)
{
  return mask->data;
}

const uint8_t *
es_mask_data_const (const EsMask *mask)
{
  return mask->data;
}

int64_t
es_mask_size (const EsMask *mask)
{
  return mask->n;
}

EsMask *
es_mask_from_zeros (const EsModel *model)
{
  EsMask *mask = es_mask_new (model);
  const float *p = es_model_params_const (model);

  if (mask == NULL)
    return NULL;
  for (int i = 0; i < es_model_n_layers (model); i++)
    if (es_prune_layer_is_prunable (model, i))
      {
        const EsTensorInfo *t = weight_tensor (model, i);

        for (int64_t k = 0; k < t->size; k++)
          if (p[t->offset + k] == 0.0f)
            mask->data[t->offset + k] = 0;
      }
  return mask;
}

void
es_mask_apply (const EsMask *mask, EsModel *model)
{
  float *p = es_model_params (model);
  const int64_t n = ES_MIN (mask->n, es_model_n_params (model));

  for (int64_t i = 0; i < n; i++)
    if (!mask->data[i])
      p[i] = 0.0f;
}

/* ---- magnitude pruning ------------------------------------------------------------ */

/* A candidate weight: its magnitude's bits (ordered like the magnitude for floats >= 0;
 * NaN above infinity) and its index into the parameters. */
typedef struct {
  uint32_t mag;
  int64_t  pos;
} Cand;

static uint32_t
magnitude_key (float w)
{
  uint32_t bits;
  float a = fabsf (w);

  memcpy (&bits, &a, sizeof bits);
  return bits;   /* sign cleared: monotone in |w|, NaN (0x7fc...) above +inf */
}

static int
cand_cmp (const void *pa, const void *pb)
{
  const Cand *a = pa, *b = pb;

  if (a->mag != b->mag)
    return a->mag < b->mag ? -1 : 1;
  return (a->pos > b->pos) - (a->pos < b->pos);
}

/* Prune the weights of the layers in list (n_list) together to round(sparsity * n)
 * zeros, pruned ones counting; err when the mask already prunes more. With check_only,
 * nothing changes. */
static bool
prune_group (EsModel *model, EsMask *mask, const int *list, int n_list, double sparsity,
             bool check_only, EsError *err)
{
  float *p = es_model_params (model);
  int64_t total = 0, pruned = 0, target, n_cand = 0, need;
  Cand *cand;

  for (int q = 0; q < n_list; q++)
    {
      const EsTensorInfo *t = weight_tensor (model, list[q]);

      total += t->size;
      for (int64_t k = 0; k < t->size; k++)
        pruned += !mask->data[t->offset + k];
    }
  target = llround (sparsity * (double) total);
  if (pruned > target)
    {
      if (n_list == 1)
        es_error_set (err, ES_ERR_INVALID,
                      "Layer %d (%s) already has %lld of its %lld weights pruned, more than "
                      "the %.4g sparsity asked (%lld)", list[0] + 1,
                      es_layer_kind_title (es_model_layer (model, list[0])->spec.kind),
                      (long long) pruned, (long long) total, sparsity, (long long) target);
      else
        es_error_set (err, ES_ERR_INVALID,
                      "%lld of the %lld selected weights are already pruned, more than the "
                      "%.4g sparsity asked (%lld)", (long long) pruned, (long long) total,
                      sparsity, (long long) target);
      return false;
    }
  need = target - pruned;
  if (check_only || need == 0)
    return true;

  cand = malloc ((size_t) (total - pruned) * sizeof *cand);
  if (cand == NULL)
    {
      es_error_set (err, ES_ERR_NOMEM, "Out of memory sorting %lld weights",
                    (long long) (total - pruned));
      return false;
    }
  for (int q = 0; q < n_list; q++)
    {
      const EsTensorInfo *t = weight_tensor (model, list[q]);

      for (int64_t k = 0; k < t->size; k++)
        if (mask->data[t->offset + k])
          {
            cand[n_cand].mag = magnitude_key (p[t->offset + k]);
            cand[n_cand].pos = t->offset + k;
            n_cand++;
          }
    }
  qsort (cand, (size_t) n_cand, sizeof *cand, cand_cmp);
  for (int64_t i = 0; i < need; i++)
    mask->data[cand[i].pos] = 0;
  free (cand);
  return true;
}

/* After checking mask: the selected prunable layers, a new list (n_list) the caller
 * frees; NULL and err set when the mask does not fit, memory fails or none is selected. */
static int *
selected_layers (const EsModel *model, const EsMask *mask, const bool *layers, int *n_list,
                 EsError *err)
{
  int *list;
  int n = 0;

  if (!check_mask (model, mask, err))
    return NULL;
  list = malloc ((size_t) es_model_n_layers (model) * sizeof *list);
  if (list == NULL)
    {
      es_error_set (err, ES_ERR_NOMEM, "Out of memory");
      return NULL;
    }
  for (int i = 0; i < es_model_n_layers (model); i++)
    if ((layers == NULL || layers[i]) && es_prune_layer_is_prunable (model, i))
      list[n++] = i;
  if (n == 0)
    {
      es_error_set (err, ES_ERR_INVALID, "None of the selected layers has prunable weights "
                    "(only Dense and Conv2D layers do)");
      free (list);
      return NULL;
    }
  *n_list = n;
  return list;
}

bool
es_prune_magnitude (EsModel *model, EsMask *mask, float sparsity, EsPruneScope scope,
                    const bool *layers, EsError *err)
{
  int *list;
  int n_list = 0;
  bool ok = true;

  if (!(sparsity >= 0.0f && sparsity < 1.0f))
    {
      es_error_set (err, ES_ERR_INVALID, "The sparsity must be in [0, 1), not %g",
                    (double) sparsity);
      return false;
    }
  if (scope != ES_PRUNE_PER_LAYER && scope != ES_PRUNE_GLOBAL)
    {
      es_error_set (err, ES_ERR_INVALID, "Unknown pruning scope %d", (int) scope);
      return false;
    }
  list = selected_layers (model, mask, layers, &n_list, err);
  if (list == NULL)
    return false;
  if (scope == ES_PRUNE_GLOBAL)
    ok = prune_group (model, mask, list, n_list, sparsity, false, err);
  else
    {
      /* check every layer first, so a failure changes nothing */
      for (int q = 0; q < n_list && ok; q++)
        ok = prune_group (model, mask, &list[q], 1, sparsity, true, err);
      for (int q = 0; q < n_list && ok; q++)
        ok = prune_group (model, mask, &list[q], 1, sparsity, false, err);
    }
  free (list);
  if (ok)
    es_mask_apply (mask, model);
  return ok;
}

float
es_prune_cubic_sparsity (float s_i, float s_f, int64_t t0, int64_t n, int64_t dt, int64_t t)
{
  double span, frac;

  if (t <= t0)
    return s_i;
  span = (double) n * (double) dt;
  if (n <= 0 || dt <= 0 || (double) (t - t0) >= span)
    return s_f;
  frac = 1.0 - (double) (t - t0) / span;
  return (float) ((double) s_f + ((double) s_i - (double) s_f) * frac * frac * frac);
}

/* ---- 2:4 -------------------------------------------------------------------------- */

bool
es_prune_2_4 (EsModel *model, EsMask *mask, const bool *layers, EsError *err)
{
  const float *p = es_model_params_const (model);
  int *list;
  int n_list = 0;

  list = selected_layers (model, mask, layers, &n_list, err);
  if (list == NULL)
    return false;
  for (int q = 0; q < n_list; q++)
    {
      const EsTensorInfo *t = weight_tensor (model, list[q]);
      const int64_t row = t->size / t->dims[0];

      if (row % 4 != 0)
        {
          es_error_set (err, ES_ERR_SHAPE,
                        "Layer %d (%s) has weight rows of %lld inputs, not a multiple of 4, "
                        "so it cannot take a 2:4 mask", list[q] + 1,
                        es_layer_kind_title (es_model_layer (model, list[q])->spec.kind),
                        (long long) row);
          free (list);
          return false;
        }
    }
  for (int q = 0; q < n_list; q++)
    {
      const EsTensorInfo *t = weight_tensor (model, list[q]);

      /* rows are a multiple of 4 long, so groups never straddle two rows */
      for (int64_t g = t->offset; g < t->offset + t->size; g += 4)
        {
          Cand c[4];

          for (int j = 0; j < 4; j++)
            {
              /* weights already pruned come first: they stay pruned */
              c[j].mag = mask->data[g + j] ? magnitude_key (p[g + j]) + 1u : 0u;
              c[j].pos = g + j;
            }
          qsort (c, 4, sizeof *c, cand_cmp);
          mask->data[c[0].pos] = 0;
          mask->data[c[1].pos] = 0;
        }
    }
  free (list);
  es_mask_apply (mask, model);
  return true;
}

/* ---- structured pruning ------------------------------------------------------------ */

typedef struct {
  double norm;
  int    unit;
} UnitNorm;

static int
unit_norm_cmp (const void *pa, const void *pb)
{
  const UnitNorm *a = pa, *b = pb;

  if (a->norm != b->norm)
    return a->norm > b->norm ? -1 : 1;   /* largest first */
  return (a->unit > b->unit) - (a->unit < b->unit);
}

static int
int_cmp (const void *pa, const void *pb)
{
  int a = *(const int *) pa, b = *(const int *) pb;

  return (a > b) - (a < b);
}

/* Checks shared by es_prune_structured and es_reduce_remove_layer: layer is a Dense or
 * Conv2D layer with another one after it. Returns that next one, or -1. what: what would
 * be done to it, translated (es_translate), as in "cannot be <what>". */
static int
check_weight_layer (const EsModel *model, int layer, const char *what, EsError *err)
{
  const EsLayerInfo *info = es_model_layer (model, layer);
  int next;

  if (info == NULL)
    {
      es_error_set (err, ES_ERR_INVALID, "The model has no layer %d (it has %d)", layer + 1,
                    es_model_n_layers (model));
      return -1;
    }
  if (!kind_is_weight (info->spec.kind))
    {
      es_error_set (err, ES_ERR_INVALID, "Layer %d (%s) cannot be %s: only Dense and Conv2D "
                    "layers can", layer + 1, es_layer_kind_title (info->spec.kind), what);
      return -1;
    }
  next = next_weight_layer (model, layer);
  if (next < 0)
    es_error_set (err, ES_ERR_INVALID, "Layer %d (%s) is the last weight layer: its outputs "
                  "are the model's, so it cannot be %s", layer + 1,
                  es_layer_kind_title (info->spec.kind), what);
  return next;
}

bool
es_prune_structured_units (const EsModel *model, int layer, int keep, EsNorm norm,
                           int *units, EsError *err)
{
  const EsLayerInfo *info;
  const EsTensorInfo *t;
  const float *w;
  UnitNorm *un;
  int U;
  int64_t R;

  if (check_weight_layer (model, layer, es_translate ("pruned by units"), err) < 0)
    return false;
  info = es_model_layer (model, layer);
  U = layer_units (info);
  if (keep < 1 || keep >= U)
    {
      es_error_set (err, ES_ERR_INVALID, "Layer %d (%s) has %d %s: keep between 1 and %d, "
                    "not %d", layer + 1, es_layer_kind_title (info->spec.kind), U,
                    info->spec.kind == ES_LAYER_DENSE ? es_translate ("units")
                                                      : es_translate ("filters"),
                    U - 1, keep);
      return false;
    }
  if (norm != ES_NORM_L1 && norm != ES_NORM_L2)
    {
      es_error_set (err, ES_ERR_INVALID, "Unknown norm %d", (int) norm);
      return false;
    }
  un = malloc ((size_t) U * sizeof *un);
  if (un == NULL)
    {
      es_error_set (err, ES_ERR_NOMEM, "Out of memory");
      return false;
    }
  t = weight_tensor (model, layer);
  w = tensor_const (model, info->first_tensor);
  R = t->size / U;
  for (int u = 0; u < U; u++)
    {
      const float *row = w + (int64_t) u * R;   /* (R) */
      double s = 0.0;

      for (int64_t k = 0; k < R; k++)
        s += norm == ES_NORM_L1 ? fabs ((double) row[k]) : (double) row[k] * row[k];
      un[u].norm = isnan (s) ? INFINITY : s;   /* L2 ranks as its square does */
      un[u].unit = u;
    }
  qsort (un, (size_t) U, sizeof *un, unit_norm_cmp);
  for (int i = 0; i < keep; i++)
    units[i] = un[i].unit;
  free (un);
  qsort (units, (size_t) keep, sizeof *units, int_cmp);
  return true;
}

/* dst (rows, KEEP, BLK) = the units' blocks of src (rows, U, BLK). */
static void
gather_blocks (float *dst, const float *src, int64_t rows, int U, const int *units, int keep,
               int64_t blk)
{
  for (int64_t o = 0; o < rows; o++)
    for (int i = 0; i < keep; i++)
      memcpy (dst + (o * keep + i) * blk, src + (o * U + units[i]) * blk,
              (size_t) blk * sizeof (float));
}

static void
copy_layer_tensors (EsModel *dst, int dst_layer, const EsModel *src, int src_layer)
{
  const EsLayerInfo *di = es_model_layer (dst, dst_layer);
  const EsLayerInfo *si = es_model_layer (src, src_layer);

  for (int k = 0; k < si->n_tensors; k++)
    memcpy (es_model_tensor_data (dst, di->first_tensor + k),
            tensor_const (src, si->first_tensor + k),
            (size_t) es_model_tensor (src, si->first_tensor + k)->size * sizeof (float));
}

/* A copy of model's layer specs. */
static EsLayerSpec *
copy_specs (const EsModel *model, EsError *err)
{
  const int n = es_model_n_layers (model);
  EsLayerSpec *specs = malloc ((size_t) n * sizeof *specs);

  if (specs == NULL)
    {
      es_error_set (err, ES_ERR_NOMEM, "Out of memory");
      return NULL;
    }
  for (int i = 0; i < n; i++)
    specs[i] = es_model_layer (model, i)->spec;
  return specs;
}

EsModel *
es_prune_structured (const EsModel *model, int layer, int keep, EsNorm norm, EsError *err)
{
  const EsShape input = es_model_input_shape (model);
  const int n_layers = es_model_n_layers (model);
  EsLayerSpec *specs;
  EsModel *nm;
  int *units;
  int next, U;

  next = check_weight_layer (model, layer, es_translate ("pruned by units"), err);
  if (next < 0)
    return NULL;
  U = layer_units (es_model_layer (model, layer));
  units = malloc ((size_t) ES_MAX (keep, 1) * sizeof *units);
  if (units == NULL)
    {
      es_error_set (err, ES_ERR_NOMEM, "Out of memory");
      return NULL;
    }
  if (!es_prune_structured_units (model, layer, keep, norm, units, err))
    {
      free (units);
      return NULL;
    }
  specs = copy_specs (model, err);
  if (specs == NULL)
    {
      free (units);
      return NULL;
    }
  if (specs[layer].kind == ES_LAYER_DENSE)
    specs[layer].units = keep;
  else
    specs[layer].filters = keep;
  nm = es_model_new (&input, specs, n_layers, err);
  free (specs);
  if (nm == NULL)
    {
      free (units);
      return NULL;
    }

  for (int j = 0; j < n_layers; j++)
    {
      const EsLayerInfo *oi = es_model_layer (model, j);
      const EsLayerInfo *ni = es_model_layer (nm, j);

      if (j < layer || j > next)
        copy_layer_tensors (nm, j, model, j);
      else if (j == layer)
        {
          /* weight rows (U, R) -> (KEEP, R), bias (U) -> (KEEP) */
          const EsTensorInfo *wt = es_model_tensor (model, oi->first_tensor);

          gather_blocks (es_model_tensor_data (nm, ni->first_tensor),
                         tensor_const (model, oi->first_tensor), 1, U, units, keep,
                         wt->size / U);
          gather_blocks (es_model_tensor_data (nm, ni->first_tensor + 1),
                         tensor_const (model, oi->first_tensor + 1), 1, U, units, keep, 1);
        }
      else if (j < next)
        {
          /* BatchNorm between: every tensor (CH) holds U blocks of CH / U (1 per channel,
           * H*W per channel after a Flatten) */
          for (int k = 0; k < oi->n_tensors; k++)
            {
              const EsTensorInfo *t = es_model_tensor (model, oi->first_tensor + k);

              gather_blocks (es_model_tensor_data (nm, ni->first_tensor + k),
                             tensor_const (model, oi->first_tensor + k), 1, U, units, keep,
                             t->size / U);
            }
        }
      else
        {
          /* the next layer's inputs: Dense w (OUT, U*BLK), Conv2D w (OC, U*K*K) */
          const EsTensorInfo *wt = es_model_tensor (model, oi->first_tensor);
          const int64_t rows = wt->dims[0];

          gather_blocks (es_model_tensor_data (nm, ni->first_tensor),
                         tensor_const (model, oi->first_tensor), rows, U, units, keep,
                         wt->size / rows / U);
          memcpy (es_model_tensor_data (nm, ni->first_tensor + 1),
                  tensor_const (model, oi->first_tensor + 1), (size_t) rows * sizeof (float));
        }
    }
  free (units);
  return nm;
}

/* ---- layer reduction -------------------------------------------------------------- */

static bool
removable_after (EsLayerKind kind)
{
  return es_layer_kind_is_activation (kind) || kind == ES_LAYER_DROPOUT
         || kind == ES_LAYER_BATCHNORM;
}

EsModel *
es_reduce_remove_layer (const EsModel *model, int layer, uint64_t seed, EsError *err)
{
  const EsShape input = es_model_input_shape (model);
  const int n_layers = es_model_n_layers (model);
  const EsLayerInfo *ri, *oi_next;
  EsLayerSpec *specs;
  int *new_of;   /* (n_layers) new index of each old layer, -1 when removed */
  int n_new = 0, next;
  EsModel *nm;
  EsError sub = { 0 };

  next = check_weight_layer (model, layer, es_translate ("removed"), err);
  if (next < 0)
    return NULL;
  ri = es_model_layer (model, layer);
  oi_next = es_model_layer (model, next);
  specs = malloc ((size_t) n_layers * sizeof *specs);
  new_of = malloc ((size_t) n_layers * sizeof *new_of);
  if (specs == NULL || new_of == NULL)
    {
      free (specs);
      free (new_of);
      es_error_set (err, ES_ERR_NOMEM, "Out of memory");
      return NULL;
    }
  for (int j = 0; j < n_layers; j++)
    {
      const EsLayerSpec *s = &es_model_layer (model, j)->spec;

      if (j == layer || (j > layer && j < next && removable_after (s->kind)))
        new_of[j] = -1;
      else
        {
          new_of[j] = n_new;
          specs[n_new++] = *s;
        }
    }
  nm = es_model_new (&input, specs, n_new, &sub);
  free (specs);
  if (nm == NULL)
    {
      es_error_set (err, ES_ERR_SHAPE, "Removing layer %d (%s) leaves shapes that do not fit: %s",
                    layer + 1, es_layer_kind_title (ri->spec.kind), sub.message);
      free (new_of);
      return NULL;
    }
  /* every layer after the next weight layer must see the shape it saw before */
  for (int j = next + 1; j < n_layers; j++)
    {
      const EsLayerInfo *oj = es_model_layer (model, j);
      const EsLayerInfo *nj = es_model_layer (nm, new_of[j]);

      if (!es_shape_equal (&oj->in, &nj->in))
        {
          char was[64], now[64], rin[64], rout[64];

          es_shape_format (&oj->in, was, sizeof was);
          es_shape_format (&nj->in, now, sizeof now);
          es_shape_format (&ri->in, rin, sizeof rin);
          es_shape_format (&ri->out, rout, sizeof rout);
          es_error_set (err, ES_ERR_SHAPE,
                        "Removing layer %d (%s) cannot be repaired: it turns %s into %s, and "
                        "without it layer %d (%s) would get %s instead of %s",
                        layer + 1, es_layer_kind_title (ri->spec.kind), rin, rout, j + 1,
                        es_layer_kind_title (oj->spec.kind), now, was);
          es_model_free (nm);
          free (new_of);
          return NULL;
        }
    }

  /* the next weight layer starts from es_model_init's scheme, every other kept layer
   * from its own weights */
  es_model_init (nm, seed);
  for (int j = 0; j < n_layers; j++)
    if (new_of[j] >= 0 && j != next)
      copy_layer_tensors (nm, new_of[j], model, j);

  if (ri->spec.kind == ES_LAYER_DENSE && oi_next->spec.kind == ES_LAYER_DENSE
      && es_model_layer (nm, new_of[next])->in.dims[0] == ri->in.dims[0])
    {
      /* W' (O, I) = Wn (O, U) Wr (U, I); b' (O) = bn + Wn br */
      const int O = oi_next->spec.units, U = ri->spec.units, I = ri->in.dims[0];
      const float *wn = tensor_const (model, oi_next->first_tensor);
      const float *bn = tensor_const (model, oi_next->first_tensor + 1);
      const float *wr = tensor_const (model, ri->first_tensor);
      const float *br = tensor_const (model, ri->first_tensor + 1);
      const EsLayerInfo *ni = es_model_layer (nm, new_of[next]);
      float *w = es_model_tensor_data (nm, ni->first_tensor);
      float *b = es_model_tensor_data (nm, ni->first_tensor + 1);
      double *acc = malloc ((size_t) ES_MAX (I, 1) * sizeof *acc);

      if (acc == NULL)
        {
          es_model_free (nm);
          free (new_of);
          es_error_set (err, ES_ERR_NOMEM, "Out of memory");
          return NULL;
        }
      for (int o = 0; o < O; o++)
        {
          double sb = bn[o];

          for (int i = 0; i < I; i++)
            acc[i] = 0.0;
          for (int u = 0; u < U; u++)
            {
              const double a = wn[(int64_t) o * U + u];
              const float *wru = wr + (int64_t) u * I;   /* (I) */

              if (a == 0.0)
                continue;
              for (int i = 0; i < I; i++)
                acc[i] += a * wru[i];
              sb += a * br[u];
            }
          for (int i = 0; i < I; i++)
            w[(int64_t) o * I + i] = (float) acc[i];
          b[o] = (float) sb;
        }
      free (acc);
    }
  free (new_of);
  return nm;
}

/* ---- counts ----------------------------------------------------------------------- */

int64_t
es_prune_layer_zeros (const EsModel *model, int layer, int64_t *n_weights)
{
  const EsTensorInfo *t;
  const float *w;
  int64_t zeros = 0;

  if (!es_prune_layer_is_prunable (model, layer))
    {
      if (n_weights != NULL)
        *n_weights = 0;
      return 0;
    }
  t = weight_tensor (model, layer);
  w = es_model_params_const (model) + t->offset;
  for (int64_t k = 0; k < t->size; k++)
    zeros += w[k] == 0.0f;
  if (n_weights != NULL)
    *n_weights = t->size;
  return zeros;
}

double
es_prune_model_sparsity (const EsModel *model)
{
  int64_t zeros = 0, total = 0;

  for (int i = 0; i < es_model_n_layers (model); i++)
    {
      int64_t n = 0;

      zeros += es_prune_layer_zeros (model, i, &n);
      total += n;
    }
  return total > 0 ? (double) zeros / (double) total : 0.0;
}
