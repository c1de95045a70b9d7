/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-split.c: train / validation / test row indices. Per class (or for all rows
 * when there are no classes) the rows are shuffled with one seeded EsRng, the first
 * ones go to test, the next to validation, the rest to training. How many of each
 * class is decided by largest remainder, so the totals are round(n * fraction)
 * whatever the classes. */
#include "config.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>

#include "es-common.h"
#include "espalier-split.h"

static void
shuffle_u32 (guint32 *v,
             gsize    n,
             EsRng   *rng)
{
  for (gsize i = n; i > 1; i--)
    {
      gsize j = (gsize) (es_rng_next (rng) % i);
      guint32 t = v[i - 1];

      v[i - 1] = v[j];
      v[j] = t;
    }
}

/* out[c] ~ counts[c] * fraction, capped at avail[c], summing to round (total * fraction)
 * where total is the sum of counts. */
static void
allocate (const guint *counts,
          const guint *avail,
          guint        k,
          double       fraction,
          guint       *out)
{
  g_autofree double *rem = g_new (double, k);
  guint64 total = 0, sum = 0, target;

  for (guint c = 0; c < k; c++)
    total += counts[c];
  target = (guint64) floor (total * fraction + 0.5);
  for (guint c = 0; c < k; c++)
    {
      double q = counts[c] * fraction;

      out[c] = MIN ((guint) floor (q), avail[c]);
      rem[c] = q - floor (q);
      sum += out[c];
    }
  while (sum < target)
    {
      guint best = G_MAXUINT;

      for (guint c = 0; c < k; c++)
        if (out[c] < avail[c] && rem[c] >= 0 && (best == G_MAXUINT || rem[c] > rem[best]))
          best = c;
      if (best == G_MAXUINT)
        break;
      out[best]++;
      rem[best] = -1;
      sum++;
    }
}

static int
compare_u32 (gconstpointer a,
             gconstpointer b)
{
  guint32 x = *(const guint32 *) a, y = *(const guint32 *) b;

  return x < y ? -1 : x > y;
}

void
espalier_split_free (EspalierSplit *split)
{
  if (split == NULL)
    return;
  g_clear_pointer (&split->train, g_array_unref);
  g_clear_pointer (&split->val, g_array_unref);
  g_clear_pointer (&split->test, g_array_unref);
  g_free (split);
}

EspalierSplit *
espalier_split_new (EspalierDataset  *dataset,
                    double            val_fraction,
                    double            test_fraction,
                    guint64           seed,
                    GError          **error)
{
  g_autoptr(EspalierSplit) split = NULL;
  g_autofree guint *counts = NULL;
  g_autofree guint *avail = NULL;
  g_autofree guint *n_test = NULL;
  g_autofree guint *n_val = NULL;
  g_autofree guint *start = NULL;
  g_autofree guint32 *rows = NULL;
  const gint32 *labels;
  guint n_rows, pool, K;
  gboolean predefined;
  EsRng rng;

  g_return_val_if_fail (ESPALIER_IS_DATASET (dataset), NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  n_rows = espalier_dataset_get_n_rows (dataset);
  pool = espalier_dataset_get_n_predefined_train (dataset);
  predefined = pool < n_rows;
  if (!predefined)
    pool = n_rows;

  if (!(val_fraction >= 0 && val_fraction < 1) || !(test_fraction >= 0 && test_fraction < 1)
      || (!predefined && val_fraction + test_fraction >= 1))
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_INVALID,
                   _("Bad split: validation %g and test %g must be fractions in [0, 1) "
                     "leaving some rows for training"), val_fraction, test_fraction);
      return NULL;
    }
  if (predefined)
    test_fraction = 0;

  labels = espalier_dataset_get_labels (dataset);
  K = labels != NULL ? MAX (espalier_dataset_get_n_classes (dataset), 1) : 1;

  /* Group the pool's rows by class, in row order. */
  counts = g_new0 (guint, K);
  for (guint i = 0; i < pool; i++)
    {
      gint32 c = labels != NULL ? labels[i] : 0;

      if (c < 0 || (guint) c >= K)
        {
          g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_LABEL_RANGE,
                       _("%s: row %u has label %d, outside 0..%u"),
                       espalier_dataset_get_name (dataset), i, c, K - 1);
          return NULL;
        }
      counts[c]++;
    }
  start = g_new0 (guint, K + 1);
  for (guint c = 0; c < K; c++)
    start[c + 1] = start[c] + counts[c];
  rows = g_new (guint32, MAX (pool, 1));
  {
    g_autofree guint *fill = g_memdup2 (start, sizeof (guint) * K);

    for (guint i = 0; i < pool; i++)
      rows[fill[labels != NULL ? labels[i] : 0]++] = i;
  }

  n_test = g_new0 (guint, K);
  n_val = g_new0 (guint, K);
  avail = g_memdup2 (counts, sizeof (guint) * K);
  allocate (counts, avail, K, test_fraction, n_test);
  for (guint c = 0; c < K; c++)
    avail[c] -= n_test[c];
  allocate (counts, avail, K, val_fraction, n_val);

  split = g_new0 (EspalierSplit, 1);
  split->train = g_array_sized_new (FALSE, FALSE, sizeof (guint32), pool);
  split->val = g_array_new (FALSE, FALSE, sizeof (guint32));
  split->test = g_array_new (FALSE, FALSE, sizeof (guint32));

  rng.state = es_hash64 (seed ^ 0x73706c6974ull);   /* "split" */
  for (guint c = 0; c < K; c++)
    {
      guint32 *r = rows + start[c];

      shuffle_u32 (r, counts[c], &rng);
      g_array_append_vals (split->test, r, n_test[c]);
      g_array_append_vals (split->val, r + n_test[c], n_val[c]);
      g_array_append_vals (split->train, r + n_test[c] + n_val[c],
                           counts[c] - n_test[c] - n_val[c]);
    }
  if (predefined)
    for (guint32 i = pool; i < n_rows; i++)
      g_array_append_val (split->test, i);

  if (split->train->len == 0)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_INVALID,
                   _("%s: %u rows are too few to split with validation %g and test %g: no "
                     "training rows are left"), espalier_dataset_get_name (dataset), pool,
                   val_fraction, test_fraction);
      return NULL;
    }

  g_array_sort (split->train, compare_u32);
  g_array_sort (split->val, compare_u32);
  g_array_sort (split->test, compare_u32);
  return g_steal_pointer (&split);
}
