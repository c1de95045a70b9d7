/* test-prune.c: masks, magnitude pruning (exact sparsity, per layer and global,
 * monotone, biases untouched), the cubic schedule, 2:4 masks, structured pruning
 * (outputs equal those of the dense model with the removed units zeroed, for an MLP
 * and for conv models) and layer reduction (valid shapes; a Dense -> Dense pair without
 * an activation gives the same outputs), with their errors. Models run on the CPU
 * backend's EsInfer. */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "es-prune.h"
#include "es-train.h"

static EsLayerSpec
L (EsLayerKind kind)
{
  return es_layer_spec_default (kind);
}

static EsLayerSpec
dense (int units)
{
  EsLayerSpec s = L (ES_LAYER_DENSE);
  s.units = units;
  return s;
}

static EsLayerSpec
conv (int filters, int k, int pad)
{
  EsLayerSpec s = L (ES_LAYER_CONV2D);
  s.filters = filters;
  s.kernel = k;
  s.stride = 1;
  s.padding = pad;
  return s;
}

static EsModel *
new_model (const EsShape *in, const EsLayerSpec *layers, int n, uint64_t seed)
{
  EsError err = { 0 };
  EsModel *m = es_model_new (in, layers, n, &err);

  if (m == NULL)
    g_error ("model: %s", err.message);
  es_model_init (m, seed);
  return m;
}

/* Biases and BatchNorm parameters random too, so that "never pruned" and "carried over"
 * are checked on values that are not all zero or one. */
static void
randomize_non_weights (EsModel *m, uint64_t seed)
{
  EsRng rng = { seed };

  for (int t = 0; t < es_model_n_tensors (m); t++)
    {
      const EsTensorInfo *ti = es_model_tensor (m, t);
      float *d = es_model_tensor_data (m, t);

      if (strstr (ti->name, "weight") != NULL && ti->rank > 1)
        continue;
      for (int64_t k = 0; k < ti->size; k++)
        {
          double u = es_rng_uniform (&rng);
          if (strstr (ti->name, "running_var") != NULL)
            d[k] = (float) (0.5 + u);
          else if (ti->rank == 1 && strstr (ti->name, "weight") != NULL)   /* gamma */
            d[k] = (float) (0.5 + u);
          else
            d[k] = (float) (u - 0.5);
        }
    }
}

static float *
rand_input (const EsModel *m, int B, uint64_t seed)
{
  EsShape in = es_model_input_shape (m);
  int64_t n = (int64_t) B * es_shape_size (&in);
  float *x = g_new (float, n);
  EsRng rng = { seed };

  for (int64_t i = 0; i < n; i++)
    x[i] = (float) (2.0 * es_rng_uniform (&rng) - 1.0);
  return x;
}

/* The model's outputs (B, out) on x, a copy. */
static float *
run_model (const EsModel *m, const float *x, int B)
{
  EsError err = { 0 };
  EsBackend *be = es_cpu_backend_new (1, NULL, &err);
  EsInfer *inf;
  EsShape out = es_model_output_shape (m);
  gsize n = (gsize) B * es_shape_size (&out);
  float *y;

  g_assert_nonnull (be);
  inf = es_infer_new (m, be, B, &err);
  if (inf == NULL)
    g_error ("infer: %s", err.message);
  y = g_memdup2 (es_infer_run (inf, x, B), n * sizeof (float));
  es_infer_free (inf);
  es_backend_free (be);
  return y;
}

static void
assert_close (const char *what, const float *got, const float *want, gsize n, double rtol)
{
  int bad = 0;

  for (gsize i = 0; i < n; i++)
    if (!(fabs ((double) got[i] - want[i]) <= rtol * (1.0 + fabs ((double) want[i]))))
      if (bad++ < 5)
        g_test_message ("%s: [%" G_GSIZE_FORMAT "] got %.9g want %.9g", what, i, got[i], want[i]);
  if (bad > 0)
    {
      g_test_message ("%s: %d of %" G_GSIZE_FORMAT " outputs differ", what, bad, n);
      g_test_fail ();
    }
}

static const float *
weights_of (const EsModel *m, int layer, int64_t *n)
{
  const EsTensorInfo *t = es_model_tensor (m, es_model_layer (m, layer)->first_tensor);

  *n = t->size;
  return es_model_params_const (m) + t->offset;
}

static int64_t
count_zeros (const float *w, int64_t n)
{
  int64_t z = 0;

  for (int64_t i = 0; i < n; i++)
    z += w[i] == 0.0f;
  return z;
}

/* ---- masks and magnitude pruning -------------------------------------------------- */

static const EsShape flat20 = { 1, { 20 } };

/* Every pruned weight of layer `layer` was, in orig, no larger than every kept one. */
static void
assert_smallest_pruned (const EsModel *orig, const EsModel *m, const int *layers, int n_layers)
{
  double max_pruned = -1.0, min_kept = INFINITY;

  for (int q = 0; q < n_layers; q++)
    {
      int64_t n;
      const float *w0 = weights_of (orig, layers[q], &n);
      const float *w = weights_of (m, layers[q], &n);

      for (int64_t i = 0; i < n; i++)
        {
          if (w[i] == 0.0f)
            max_pruned = MAX (max_pruned, fabs (w0[i]));
          else
            {
              g_assert_cmpfloat (w[i], ==, w0[i]);   /* kept weights unchanged */
              min_kept = MIN (min_kept, fabs (w0[i]));
            }
        }
    }
  g_assert_cmpfloat (max_pruned, <=, min_kept);
}

static void
test_magnitude_per_layer (void)
{
  EsLayerSpec layers[] = { dense (32), L (ES_LAYER_RELU), dense (16), L (ES_LAYER_RELU),
                           dense (5) };
  EsModel *orig = new_model (&flat20, layers, G_N_ELEMENTS (layers), 1);
  EsModel *m;
  EsMask *mask, *before;
  EsError err = { 0 };
  const int weight_layers[] = { 0, 2, 4 };
  const float steps[] = { 0.0f, 0.37f, 0.6f, 0.9f };

  randomize_non_weights (orig, 2);
  m = es_model_copy (orig);
  mask = es_mask_new (m);
  g_assert_cmpint (es_mask_size (mask), ==, es_model_n_params (m));
  for (int64_t i = 0; i < es_mask_size (mask); i++)
    g_assert_cmpint (es_mask_data_const (mask)[i], ==, 1);
  g_assert_true (es_prune_layer_is_prunable (m, 0));
  g_assert_false (es_prune_layer_is_prunable (m, 1));
  g_assert_false (es_prune_layer_is_prunable (m, 99));

  for (gsize s = 0; s < G_N_ELEMENTS (steps); s++)
    {
      before = es_mask_copy (mask);
      g_assert_true (es_prune_magnitude (m, mask, steps[s], ES_PRUNE_PER_LAYER, NULL, &err));
      g_assert_cmpint (err.code, ==, ES_OK);
      for (gsize q = 0; q < G_N_ELEMENTS (weight_layers); q++)
        {
          int64_t n, n2;
          const float *w = weights_of (m, weight_layers[q], &n);
          int64_t want = llround ((double) steps[s] * (double) n);

          g_assert_cmpint (count_zeros (w, n), ==, want);
          g_assert_cmpint (es_prune_layer_zeros (m, weight_layers[q], &n2), ==, want);
          g_assert_cmpint (n2, ==, n);
        }
      /* monotone: what was pruned stays pruned; the mask and the zeros agree */
      for (int64_t i = 0; i < es_mask_size (mask); i++)
        {
          if (!es_mask_data_const (before)[i])
            g_assert_cmpint (es_mask_data_const (mask)[i], ==, 0);
          if (!es_mask_data_const (mask)[i])
            g_assert_cmpfloat (es_model_params (m)[i], ==, 0.0f);
        }
      /* per layer: each layer has its own threshold */
      for (gsize q = 0; q < G_N_ELEMENTS (weight_layers); q++)
        assert_smallest_pruned (orig, m, &weight_layers[q], 1);
      es_mask_free (before);
    }
  /* biases are never pruned (here they are all nonzero, so none is zero after) */
  for (int t = 0; t < es_model_n_tensors (m); t++)
    if (strstr (es_model_tensor (m, t)->name, "bias") != NULL)
      {
        const EsTensorInfo *ti = es_model_tensor (m, t);
        for (int64_t k = 0; k < ti->size; k++)
          {
            g_assert_cmpint (es_mask_data_const (mask)[ti->offset + k], ==, 1);
            g_assert_cmpfloat (es_model_params (m)[ti->offset + k], ==,
                               es_model_params_const (orig)[ti->offset + k]);
          }
      }
  g_assert_cmpint (es_prune_layer_zeros (m, 1, NULL), ==, 0);

  /* going back to a lower sparsity fails and changes nothing */
  before = es_mask_copy (mask);
  g_assert_false (es_prune_magnitude (m, mask, 0.5f, ES_PRUNE_PER_LAYER, NULL, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  g_test_message ("expected error: %s", err.message);
  g_assert_cmpmem (es_mask_data_const (mask), es_mask_size (mask), es_mask_data_const (before),
                   es_mask_size (before));
  es_mask_free (before);

  /* from zeros: the same mask back; apply zeroes a fresh copy the same way */
  {
    EsMask *z = es_mask_from_zeros (m);
    EsModel *fresh = es_model_copy (orig);

    g_assert_cmpmem (es_mask_data_const (z), es_mask_size (z), es_mask_data_const (mask),
                     es_mask_size (mask));
    es_mask_apply (z, fresh);
    g_assert_cmpmem (es_model_params_const (fresh), es_model_n_params (fresh) * sizeof (float),
                     es_model_params_const (m), es_model_n_params (m) * sizeof (float));
    es_mask_free (z);
    es_model_free (fresh);
  }
  es_mask_free (mask);
  es_model_free (m);
  es_model_free (orig);
}

static void
test_magnitude_global (void)
{
  const EsShape img = { 3, { 2, 6, 6 } };
  EsLayerSpec layers[] = { conv (4, 3, 1), L (ES_LAYER_RELU), L (ES_LAYER_MAXPOOL2D),
                           L (ES_LAYER_FLATTEN), dense (10), L (ES_LAYER_RELU), dense (3) };
  EsModel *orig = new_model (&img, layers, G_N_ELEMENTS (layers), 3);
  EsModel *m = es_model_copy (orig);
  EsMask *mask = es_mask_new (m);
  EsError err = { 0 };
  const int weight_layers[] = { 0, 4, 6 };
  int64_t total = 0, zeros = 0;
  bool *sel = g_new0 (bool, G_N_ELEMENTS (layers));

  for (gsize q = 0; q < G_N_ELEMENTS (weight_layers); q++)
    {
      int64_t n;
      weights_of (m, weight_layers[q], &n);
      total += n;
    }
  g_assert_true (es_prune_magnitude (m, mask, 0.75f, ES_PRUNE_GLOBAL, NULL, &err));
  for (gsize q = 0; q < G_N_ELEMENTS (weight_layers); q++)
    zeros += es_prune_layer_zeros (m, weight_layers[q], NULL);
  g_assert_cmpint (zeros, ==, llround ((double) 0.75f * (double) total));
  g_assert_cmpfloat_with_epsilon (es_prune_model_sparsity (m), (double) zeros / total, 1e-12);
  /* one threshold over all layers: He-initialized layers of different fan-in prune
   * to different sparsities */
  assert_smallest_pruned (orig, m, weight_layers, G_N_ELEMENTS (weight_layers));
  es_mask_free (mask);
  es_model_free (m);

  /* only the selected layers: the others stay dense */
  m = es_model_copy (orig);
  mask = es_mask_new (m);
  sel[4] = sel[6] = true;
  sel[1] = true;   /* a ReLU: selected but not prunable, ignored */
  g_assert_true (es_prune_magnitude (m, mask, 0.5f, ES_PRUNE_GLOBAL, sel, &err));
  g_assert_cmpint (es_prune_layer_zeros (m, 0, NULL), ==, 0);
  {
    int64_t n4, n6;
    int64_t z = es_prune_layer_zeros (m, 4, &n4) + es_prune_layer_zeros (m, 6, &n6);
    g_assert_cmpint (z, ==, llround ((double) 0.5f * (double) (n4 + n6)));
  }

  /* errors */
  g_assert_false (es_prune_magnitude (m, mask, 1.0f, ES_PRUNE_GLOBAL, NULL, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  g_assert_false (es_prune_magnitude (m, mask, -0.1f, ES_PRUNE_GLOBAL, NULL, &err));
  g_assert_false (es_prune_magnitude (m, mask, NAN, ES_PRUNE_PER_LAYER, NULL, &err));
  memset (sel, 0, G_N_ELEMENTS (layers) * sizeof *sel);
  sel[1] = sel[3] = true;
  err.code = ES_OK;
  g_assert_false (es_prune_magnitude (m, mask, 0.5f, ES_PRUNE_GLOBAL, sel, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  {
    EsModel *other = new_model (&flat20, (EsLayerSpec[]) { dense (3) }, 1, 1);
    err.code = ES_OK;
    g_assert_false (es_prune_magnitude (other, mask, 0.5f, ES_PRUNE_GLOBAL, NULL, &err));
    g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
    g_test_message ("expected error: %s", err.message);
    es_model_free (other);
  }
  g_free (sel);
  es_mask_free (mask);
  es_model_free (m);
  es_model_free (orig);
}

/* Equal magnitudes: the lower index goes first, so the result does not depend on a
 * sort's whims. */
static void
test_magnitude_ties (void)
{
  EsLayerSpec layers[] = { dense (10), dense (3) };
  EsModel *m = new_model (&flat20, layers, G_N_ELEMENTS (layers), 8);
  EsMask *mask = es_mask_new (m);
  EsError err = { 0 };
  int64_t n;
  float *w = es_model_tensor_data (m, 0);
  const int64_t want = llround ((double) 0.3f * 200.0);

  weights_of (m, 0, &n);
  g_assert_cmpint (n, ==, 200);
  for (int64_t i = 0; i < n; i++)
    w[i] = i % 2 ? -0.5f : 0.5f;
  g_assert_true (es_prune_magnitude (m, mask, 0.3f, ES_PRUNE_PER_LAYER, NULL, &err));
  for (int64_t i = 0; i < n; i++)
    g_assert_cmpfloat (w[i], ==, i < want ? 0.0f : (i % 2 ? -0.5f : 0.5f));
  es_mask_free (mask);
  es_model_free (m);
}

/* ---- the cubic schedule ----------------------------------------------------------- */

static void
test_cubic (void)
{
  const float si = 0.1f, sf = 0.9f;
  const int64_t t0 = 100, n = 10, dt = 50;
  float prev = -1.0f;

  g_assert_cmpfloat (es_prune_cubic_sparsity (si, sf, t0, n, dt, 0), ==, si);
  g_assert_cmpfloat (es_prune_cubic_sparsity (si, sf, t0, n, dt, t0), ==, si);
  g_assert_cmpfloat (es_prune_cubic_sparsity (si, sf, t0, n, dt, t0 + n * dt), ==, sf);
  g_assert_cmpfloat (es_prune_cubic_sparsity (si, sf, t0, n, dt, 10 * t0 + n * dt), ==, sf);
  for (int64_t t = 0; t <= t0 + n * dt + 100; t++)
    {
      float s = es_prune_cubic_sparsity (si, sf, t0, n, dt, t);
      g_assert_cmpfloat (s, >=, prev);
      g_assert_cmpfloat (s, >=, si);
      g_assert_cmpfloat (s, <=, sf);
      prev = s;
    }
  /* s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3 at a few steps */
  {
    const int64_t ts[] = { 101, 150, 350, 599 };
    for (gsize i = 0; i < G_N_ELEMENTS (ts); i++)
      {
        double f = 1.0 - (double) (ts[i] - t0) / (double) (n * dt);
        double want = sf + (si - sf) * f * f * f;
        g_assert_cmpfloat_with_epsilon (es_prune_cubic_sparsity (si, sf, t0, n, dt, ts[i]),
                                        want, 1e-6);
      }
    /* halfway, an eighth of the way back from s_f */
    g_assert_cmpfloat_with_epsilon (es_prune_cubic_sparsity (0.0f, 0.8f, 0, 4, 25, 50),
                                    0.8 - 0.8 / 8.0, 1e-6);
  }
  /* a degenerate schedule jumps straight to s_f */
  g_assert_cmpfloat (es_prune_cubic_sparsity (si, sf, t0, 0, dt, t0 + 1), ==, sf);
}

/* ---- 2:4 -------------------------------------------------------------------------- */

static void
assert_2_4 (const EsModel *orig, const EsModel *m, int layer)
{
  int64_t n;
  const float *w0 = weights_of (orig, layer, &n);
  const float *w = weights_of (m, layer, &n);

  g_assert_cmpint (n % 4, ==, 0);
  for (int64_t g = 0; g < n; g += 4)
    {
      int zeros = 0;
      double max_pruned = -1.0, min_kept = INFINITY;

      for (int j = 0; j < 4; j++)
        if (w[g + j] == 0.0f)
          {
            zeros++;
            max_pruned = MAX (max_pruned, fabs (w0[g + j]));
          }
        else
          {
            g_assert_cmpfloat (w[g + j], ==, w0[g + j]);
            min_kept = MIN (min_kept, fabs (w0[g + j]));
          }
      g_assert_cmpint (zeros, ==, 2);
      g_assert_cmpfloat (max_pruned, <=, min_kept);
    }
}

static void
test_2_4 (void)
{
  const EsShape img = { 3, { 2, 5, 5 } };
  /* conv rows are C*K*K = 2*2*2 = 8, the dense rows 4*4*4 = 64 and 12 */
  EsLayerSpec layers[] = { conv (3, 2, 0), conv (4, 2, 0), L (ES_LAYER_RELU),
                           L (ES_LAYER_FLATTEN), dense (12), dense (6) };
  EsModel *orig = new_model (&img, layers, G_N_ELEMENTS (layers), 5);
  EsModel *m = es_model_copy (orig);
  EsMask *mask = es_mask_new (m);
  EsError err = { 0 };

  g_assert_true (es_prune_2_4 (m, mask, NULL, &err));
  assert_2_4 (orig, m, 0);
  assert_2_4 (orig, m, 1);
  assert_2_4 (orig, m, 4);
  assert_2_4 (orig, m, 5);
  g_assert_cmpfloat_with_epsilon (es_prune_model_sparsity (m), 0.5, 1e-12);
  es_mask_free (mask);
  es_model_free (m);

  /* a row of 10 inputs: ES_ERR_SHAPE naming the layer, and nothing changes */
  {
    EsLayerSpec bad[] = { dense (8), dense (10), dense (3) };
    const EsShape in = { 1, { 12 } };
    bool sel[3] = { true, true, false };

    m = new_model (&in, bad, 3, 6);
    mask = es_mask_new (m);
    g_assert_false (es_prune_2_4 (m, mask, NULL, &err));
    g_assert_cmpint (err.code, ==, ES_ERR_SHAPE);
    g_assert_nonnull (strstr (err.message, "Layer 3"));
    g_test_message ("expected error: %s", err.message);
    g_assert_cmpfloat (es_prune_model_sparsity (m), ==, 0.0);
    /* leaving that layer out works */
    err.code = ES_OK;
    g_assert_true (es_prune_2_4 (m, mask, sel, &err));
    g_assert_cmpint (es_prune_layer_zeros (m, 0, NULL), ==, 8 * 12 / 2);
    g_assert_cmpint (es_prune_layer_zeros (m, 1, NULL), ==, 10 * 8 / 2);
    g_assert_cmpint (es_prune_layer_zeros (m, 2, NULL), ==, 0);
    es_mask_free (mask);
    es_model_free (m);
  }
  es_model_free (orig);
}

/* ---- structured pruning ----------------------------------------------------------- */

/* A copy of orig with the units of `layer` not in `units` (keep, ascending) zeroed:
 * weight rows and biases, and, in a BatchNorm before the next weight layer, beta and
 * the running mean (so that it maps the zero channel to zero, as removing it does). */
static EsModel *
zeroed_copy (const EsModel *orig, int layer, const int *units, int keep)
{
  EsModel *z = es_model_copy (orig);
  const EsLayerInfo *info = es_model_layer (z, layer);
  const EsTensorInfo *wt = es_model_tensor (z, info->first_tensor);
  const int U = (int) wt->dims[0];
  const int64_t R = wt->size / U;
  float *w = es_model_tensor_data (z, info->first_tensor);
  float *b = es_model_tensor_data (z, info->first_tensor + 1);

  for (int u = 0, i = 0; u < U; u++)
    {
      if (i < keep && units[i] == u)
        {
          i++;
          continue;
        }
      memset (w + u * R, 0, (gsize) R * sizeof (float));
      b[u] = 0.0f;
      for (int j = layer + 1; j < es_model_n_layers (z); j++)
        {
          const EsLayerInfo *lj = es_model_layer (z, j);

          if (es_prune_layer_is_prunable (z, j))
            break;
          if (lj->spec.kind == ES_LAYER_BATCHNORM)
            {
              const int64_t blk = es_model_tensor (z, lj->first_tensor)->size / U;
              float *beta = es_model_tensor_data (z, lj->first_tensor + 1);
              float *mean = es_model_tensor_data (z, lj->first_tensor + 2);
              for (int64_t q = 0; q < blk; q++)
                beta[u * blk + q] = mean[u * blk + q] = 0.0f;
            }
        }
    }
  return z;
}

/* Prune layer to keep units; the pruned model's outputs equal the zeroed dense
 * model's; the units are the keep largest by norm. */
static void
check_structured (const EsModel *orig, int layer, int keep, EsNorm norm, const char *what)
{
  EsError err = { 0 };
  const EsLayerInfo *info = es_model_layer (orig, layer);
  const EsTensorInfo *wt = es_model_tensor (orig, info->first_tensor);
  const int U = (int) wt->dims[0];
  const int64_t R = wt->size / U;
  const float *w = es_model_params_const (orig) + wt->offset;
  int *units = g_new (int, keep);
  double *norms = g_new (double, U);
  EsModel *pm, *zm;
  const int B = 7;
  float *x, *y_p, *y_z;
  EsShape out = es_model_output_shape (orig);

  g_assert_true (es_prune_structured_units (orig, layer, keep, norm, units, &err));
  for (int u = 0; u < U; u++)
    {
      norms[u] = 0.0;
      for (int64_t k = 0; k < R; k++)
        norms[u] += norm == ES_NORM_L1 ? fabs (w[u * R + k]) : w[u * R + k] * (double) w[u * R + k];
    }
  for (int i = 0; i < keep; i++)
    {
      if (i > 0)
        g_assert_cmpint (units[i - 1], <, units[i]);
      /* every unit left out has a norm no larger than every unit kept */
      for (int u = 0, j = 0; u < U; u++)
        {
          while (j < keep && units[j] < u)
            j++;
          if (j < keep && units[j] == u)
            continue;
          g_assert_cmpfloat (norms[u], <=, norms[units[i]]);
        }
    }

  pm = es_prune_structured (orig, layer, keep, norm, &err);
  g_assert_nonnull (pm);
  g_assert_cmpint (es_model_n_layers (pm), ==, es_model_n_layers (orig));
  g_assert_cmpint (es_model_layer (pm, layer)->out.dims[0], ==, keep);
  {
    EsShape pout = es_model_output_shape (pm);
    g_assert_true (es_shape_equal (&out, &pout));
  }
  g_assert_cmpint (es_model_n_params (pm), <, es_model_n_params (orig));
  zm = zeroed_copy (orig, layer, units, keep);
  x = rand_input (orig, B, 77);
  y_p = run_model (pm, x, B);
  y_z = run_model (zm, x, B);
  assert_close (what, y_p, y_z, (gsize) B * es_shape_size (&out), 1e-5);
  g_free (x);
  g_free (y_p);
  g_free (y_z);
  g_free (units);
  g_free (norms);
  es_model_free (pm);
  es_model_free (zm);
}

static void
test_structured_mlp (void)
{
  EsLayerSpec layers[] = { dense (24), L (ES_LAYER_RELU), dense (16), L (ES_LAYER_RELU),
                           dense (5) };
  EsModel *m = new_model (&flat20, layers, G_N_ELEMENTS (layers), 11);
  EsError err = { 0 };
  int units[24];

  randomize_non_weights (m, 12);
  check_structured (m, 0, 12, ES_NORM_L1, "mlp layer 0, L1");
  check_structured (m, 0, 1, ES_NORM_L2, "mlp layer 0, keep 1");
  check_structured (m, 2, 9, ES_NORM_L2, "mlp layer 2, L2");
  {
    EsModel *pm = es_prune_structured (m, 0, 12, ES_NORM_L1, &err);
    /* the shrunk layers: (24,20) -> (12,20), the next (16,24) -> (16,12) */
    g_assert_cmpint (es_model_tensor (pm, 0)->dims[0], ==, 12);
    g_assert_cmpint (es_model_tensor (pm, 0)->dims[1], ==, 20);
    g_assert_cmpint (es_model_tensor (pm, 2)->dims[0], ==, 16);
    g_assert_cmpint (es_model_tensor (pm, 2)->dims[1], ==, 12);
    g_assert_cmpint (es_model_n_params (pm), ==, 12 * 20 + 12 + 16 * 12 + 16 + 5 * 16 + 5);
    es_model_free (pm);
  }

  /* errors: the last weight layer, keep out of [1, units), not a weight layer */
  g_assert_null (es_prune_structured (m, 4, 2, ES_NORM_L1, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  g_test_message ("expected error: %s", err.message);
  g_assert_false (es_prune_structured_units (m, 4, 2, ES_NORM_L1, units, &err));
  g_assert_null (es_prune_structured (m, 0, 0, ES_NORM_L1, &err));
  g_assert_null (es_prune_structured (m, 0, 24, ES_NORM_L1, &err));
  g_assert_null (es_prune_structured (m, 0, 25, ES_NORM_L1, &err));
  g_test_message ("expected error: %s", err.message);
  g_assert_null (es_prune_structured (m, 1, 2, ES_NORM_L1, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  g_assert_null (es_prune_structured (m, 9, 2, ES_NORM_L1, &err));
  g_assert_null (es_prune_structured (m, -1, 2, ES_NORM_L1, &err));
  es_model_free (m);
}

static void
test_structured_conv (void)
{
  const EsShape img = { 3, { 2, 8, 8 } };
  /* Conv2D-ReLU-[BatchNorm]-MaxPool-Flatten-Dense, and conv -> conv */
  EsLayerSpec with_bn[] = { conv (6, 3, 1), L (ES_LAYER_RELU), L (ES_LAYER_BATCHNORM),
                            L (ES_LAYER_MAXPOOL2D), L (ES_LAYER_FLATTEN), dense (4) };
  EsLayerSpec no_bn[] = { conv (6, 3, 1), L (ES_LAYER_RELU), L (ES_LAYER_MAXPOOL2D),
                          L (ES_LAYER_FLATTEN), dense (4) };
  EsLayerSpec two[] = { conv (5, 3, 0), L (ES_LAYER_RELU), conv (3, 3, 1),
                        L (ES_LAYER_RELU), L (ES_LAYER_FLATTEN), dense (4) };
  /* a BatchNorm after the Flatten: per feature, a channel is a block of H*W */
  EsLayerSpec bn_flat[] = { conv (4, 3, 1), L (ES_LAYER_RELU), L (ES_LAYER_FLATTEN),
                            L (ES_LAYER_BATCHNORM), L (ES_LAYER_DROPOUT), dense (3) };
  EsModel *m;
  EsError err = { 0 };

  m = new_model (&img, with_bn, G_N_ELEMENTS (with_bn), 21);
  randomize_non_weights (m, 22);
  check_structured (m, 0, 3, ES_NORM_L1, "conv-bn-pool-flatten-dense");
  {
    EsModel *pm = es_prune_structured (m, 0, 3, ES_NORM_L2, &err);
    g_assert_nonnull (pm);
    g_assert_cmpint (es_model_layer (pm, 2)->in.dims[0], ==, 3);          /* BatchNorm */
    g_assert_cmpint (es_model_layer (pm, 5)->in.dims[0], ==, 3 * 4 * 4); /* Dense */
    g_assert_cmpint (es_model_n_buffers (pm), ==, 2 * 3);
    es_model_free (pm);
  }
  es_model_free (m);

  m = new_model (&img, no_bn, G_N_ELEMENTS (no_bn), 23);
  randomize_non_weights (m, 24);
  check_structured (m, 0, 4, ES_NORM_L2, "conv-pool-flatten-dense");
  es_model_free (m);

  m = new_model (&img, two, G_N_ELEMENTS (two), 25);
  randomize_non_weights (m, 26);
  check_structured (m, 0, 2, ES_NORM_L1, "conv-conv");
  check_structured (m, 2, 1, ES_NORM_L2, "second conv into dense");
  es_model_free (m);

  m = new_model (&img, bn_flat, G_N_ELEMENTS (bn_flat), 27);
  randomize_non_weights (m, 28);
  check_structured (m, 0, 3, ES_NORM_L1, "conv-flatten-bn-dense");
  es_model_free (m);
}

/* ---- layer reduction -------------------------------------------------------------- */

static void
test_reduce (void)
{
  EsError err = { 0 };

  /* Dense -> (Dropout) -> Dense with no activation: the composition is exact */
  {
    EsLayerSpec layers[] = { dense (9), L (ES_LAYER_DROPOUT), dense (7), L (ES_LAYER_RELU),
                             dense (4) };
    EsModel *m = new_model (&flat20, layers, G_N_ELEMENTS (layers), 31);
    EsModel *r;
    float *x, *y0, *y1;
    const int B = 5;

    randomize_non_weights (m, 32);
    r = es_reduce_remove_layer (m, 0, 1, &err);
    g_assert_nonnull (r);
    g_assert_cmpint (es_model_n_layers (r), ==, 3);
    g_assert_cmpint (es_model_layer (r, 0)->spec.kind, ==, ES_LAYER_DENSE);
    g_assert_cmpint (es_model_layer (r, 0)->in.dims[0], ==, 20);
    g_assert_cmpint (es_model_layer (r, 0)->out.dims[0], ==, 7);
    g_assert_cmpint (es_model_layer (r, 1)->spec.kind, ==, ES_LAYER_RELU);
    /* the last layer keeps its weights */
    g_assert_cmpmem (es_model_tensor_data (r, 2), 7 * 4 * sizeof (float),
                     es_model_tensor_data (m, 4), 7 * 4 * sizeof (float));
    x = rand_input (m, B, 33);
    y0 = run_model (m, x, B);
    y1 = run_model (r, x, B);
    assert_close ("reduce dense-dense", y1, y0, B * 4, 1e-5);
    g_free (x);
    g_free (y0);
    g_free (y1);
    es_model_free (r);

    /* a hidden layer with its activation: shapes valid, the first layer untouched */
    r = es_reduce_remove_layer (m, 2, 1, &err);
    g_assert_nonnull (r);
    g_assert_cmpint (es_model_n_layers (r), ==, 3);   /* Dense(9), Dropout, Dense(4) */
    g_assert_cmpint (es_model_layer (r, 1)->spec.kind, ==, ES_LAYER_DROPOUT);
    g_assert_cmpint (es_model_layer (r, 2)->in.dims[0], ==, 9);
    g_assert_cmpmem (es_model_tensor_data (r, 0), 9 * 20 * sizeof (float),
                     es_model_tensor_data (m, 0), 9 * 20 * sizeof (float));
    es_model_free (r);

    /* errors: the last weight layer, a layer without weights, out of range */
    g_assert_null (es_reduce_remove_layer (m, 4, 1, &err));
    g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
    g_test_message ("expected error: %s", err.message);
    g_assert_null (es_reduce_remove_layer (m, 3, 1, &err));
    g_assert_null (es_reduce_remove_layer (m, 5, 1, &err));
    es_model_free (m);
  }

  /* three hidden layers to two (the target shape) */
  {
    const EsShape img = { 3, { 1, 6, 6 } };
    EsLayerSpec layers[] = { L (ES_LAYER_FLATTEN), dense (16), L (ES_LAYER_RELU),
                             dense (12), L (ES_LAYER_BATCHNORM), L (ES_LAYER_RELU),
                             dense (8), L (ES_LAYER_RELU), dense (3), L (ES_LAYER_SOFTMAX) };
    EsModel *m = new_model (&img, layers, G_N_ELEMENTS (layers), 41);
    EsModel *r = es_reduce_remove_layer (m, 3, 2, &err);
    float *x, *y;

    g_assert_nonnull (r);
    g_assert_cmpint (es_model_n_layers (r), ==, G_N_ELEMENTS (layers) - 3);
    g_assert_cmpint (es_model_layer (r, 3)->spec.kind, ==, ES_LAYER_DENSE);
    g_assert_cmpint (es_model_layer (r, 3)->in.dims[0], ==, 16);
    g_assert_cmpint (es_model_output_shape (r).dims[0], ==, 3);
    x = rand_input (r, 2, 42);
    y = run_model (r, x, 2);
    for (int i = 0; i < 6; i++)
      g_assert_true (isfinite (y[i]));
    g_free (x);
    g_free (y);
    es_model_free (r);
    es_model_free (m);
  }

  /* conv: a same-size conv can go (the next conv reads the input's channels); one
   * that shrinks the image cannot when a later layer keeps its weights */
  {
    const EsShape img = { 3, { 2, 8, 8 } };
    EsLayerSpec same[] = { conv (4, 3, 1), L (ES_LAYER_RELU), conv (5, 3, 1),
                           L (ES_LAYER_RELU), L (ES_LAYER_FLATTEN), dense (3) };
    EsLayerSpec shrink[] = { conv (4, 3, 0), L (ES_LAYER_RELU), conv (5, 3, 1),
                             L (ES_LAYER_RELU), L (ES_LAYER_FLATTEN), dense (3) };
    EsLayerSpec to_dense[] = { conv (4, 3, 0), L (ES_LAYER_RELU), L (ES_LAYER_MAXPOOL2D),
                               L (ES_LAYER_FLATTEN), dense (3) };
    EsModel *m = new_model (&img, same, G_N_ELEMENTS (same), 51);
    EsModel *r = es_reduce_remove_layer (m, 0, 3, &err);

    g_assert_nonnull (r);
    g_assert_cmpint (es_model_n_layers (r), ==, 4);
    g_assert_cmpint (es_model_tensor (r, 0)->dims[1], ==, 2);   /* conv reads 2 channels */
    g_assert_cmpmem (es_model_tensor_data (r, 2), 3 * 5 * 64 * sizeof (float),
                     es_model_tensor_data (m, 4), 3 * 5 * 64 * sizeof (float));
    es_model_free (r);
    es_model_free (m);

    m = new_model (&img, shrink, G_N_ELEMENTS (shrink), 52);
    g_assert_null (es_reduce_remove_layer (m, 0, 3, &err));
    g_assert_cmpint (err.code, ==, ES_ERR_SHAPE);
    g_test_message ("expected error: %s", err.message);
    es_model_free (m);

    /* into a Flatten and Dense: the Dense is re-initialized for its new input */
    m = new_model (&img, to_dense, G_N_ELEMENTS (to_dense), 53);
    r = es_reduce_remove_layer (m, 0, 3, &err);
    g_assert_nonnull (r);
    g_assert_cmpint (es_model_layer (r, 2)->in.dims[0], ==, 2 * 4 * 4);
    g_assert_cmpint (es_prune_layer_zeros (r, 2, NULL), <, 3 * 32);
    es_model_free (r);
    es_model_free (m);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/prune/magnitude-per-layer", test_magnitude_per_layer);
  g_test_add_func ("/prune/magnitude-global", test_magnitude_global);
  g_test_add_func ("/prune/magnitude-ties", test_magnitude_ties);
  g_test_add_func ("/prune/cubic", test_cubic);
  g_test_add_func ("/prune/2-4", test_2_4);
  g_test_add_func ("/prune/structured-mlp", test_structured_mlp);
  g_test_add_func ("/prune/structured-conv", test_structured_conv);
  g_test_add_func ("/prune/reduce", test_reduce);
  return g_test_run ();
}
