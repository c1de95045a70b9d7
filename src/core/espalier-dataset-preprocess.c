/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-dataset-preprocess.c: the cleaning steps espalier_dataset_load() runs on a
 * freshly parsed dataset, in order: forward-fill, drop duplicates, mean-fill, the
 * missing-value check, then standardize or min-max. Statistics come from the training
 * part of the split the options describe, so validation and test rows never leak into
 * them. Each step adds a sentence to the report and its count to the counts. Images
 * (uint8) are scaled through scale and shift, never converted.
 *
 * Dimension key: N = rows, F = features per row, T = targets per row. */
#include "config.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "espalier-dataset-cache.h"
#include "espalier-dataset-private.h"
#include "espalier-split.h"

static gboolean
row_is_train (const guint8 *mask,
              guint         row)
{
  return mask == NULL || mask[row];
}

static guint
forward_fill (EspalierDataset *self,
              guint           *left_unfilled)
{
  const guint N = self->n_rows, F = self->row_size;
  guint filled = 0, left = 0;

  for (guint j = 0; j < F; j++)
    {
      float last = NAN;

      for (guint i = 0; i < N; i++)
        {
          float *v = &self->f32[(gsize) i * F + j];

          if (!isnan (*v))
            last = *v;
          else if (!isnan (last))
            {
              *v = last;
              filled++;
            }
          else
            left++;
        }
    }
  *left_unfilled = left;
  return filled;
}

static gsize
row_feature_bytes (EspalierDataset *self)
{
  return (gsize) self->row_size * (self->u8 != NULL ? 1 : sizeof (float));
}

static const guint8 *
row_feature_data (EspalierDataset *self,
                  guint            i)
{
  if (self->u8 != NULL)
    return self->u8 + (gsize) i * self->row_size;
  return (const guint8 *) (self->f32 + (gsize) i * self->row_size);
}

static gboolean
rows_equal (EspalierDataset *self,
            guint            a,
            guint            b)
{
  if (memcmp (row_feature_data (self, a), row_feature_data (self, b),
              row_feature_bytes (self)) != 0)
    return FALSE;
  if (self->labels != NULL && self->labels[a] != self->labels[b])
    return FALSE;
  if (self->targets != NULL
      && memcmp (self->targets + (gsize) a * self->n_targets,
                 self->targets + (gsize) b * self->n_targets,
                 self->n_targets * sizeof (float)) != 0)
    return FALSE;
  return TRUE;
}

typedef struct { guint64 hash; guint row; } RowHash;

static int
compare_row_hash (gconstpointer a,
                  gconstpointer b)
{
  const RowHash *x = a, *y = b;

  if (x->hash != y->hash)
    return x->hash < y->hash ? -1 : 1;
  return x->row < y->row ? -1 : x->row > y->row;
}

/* Compare rows bit by bit (a missing value equals a missing value) and keep the first
 * of each group. Returns the number of rows dropped. */
static guint
drop_duplicates (EspalierDataset *self,
                 GCancellable    *cancellable)
{
  const guint N = self->n_rows, F = self->row_size, T = self->n_targets;
  const gsize fbytes = row_feature_bytes (self);
  RowHash *hashes;
  guint8 *dup;
  guint n_dup = 0, w = 0, dropped_train = 0;

  if (N < 2)
    return 0;

  hashes = g_new (RowHash, N);
  for (guint i = 0; i < N; i++)
    {
      guint64 h = espalier_hash64 (row_feature_data (self, i), fbytes, 0);

      if (self->labels != NULL)
        h = espalier_hash64 (&self->labels[i], sizeof (gint32), h);
      if (self->targets != NULL)
        h = espalier_hash64 (self->targets + (gsize) i * T, T * sizeof (float), h);
      hashes[i].hash = h;
      hashes[i].row = i;
    }
  qsort (hashes, N, sizeof *hashes, compare_row_hash);

  dup = g_new0 (guint8, N);
  for (guint s = 0; s < N;)
    {
      guint e = s + 1;

      while (e < N && hashes[e].hash == hashes[s].hash)
        e++;
      for (guint j = s + 1; j < e; j++)
        for (guint k = s; k < j; k++)
          if (!dup[hashes[k].row] && rows_equal (self, hashes[k].row, hashes[j].row))
            {
              dup[hashes[j].row] = 1;
              n_dup++;
              break;
            }
      s = e;
    }
  g_free (hashes);

  if (n_dup == 0 || g_cancellable_is_cancelled (cancellable))
    {
      g_free (dup);
      return 0;
    }

  for (guint i = 0; i < N; i++)
    {
      if (dup[i])
        {
          if (i < self->n_predefined_train)
            dropped_train++;
          continue;
        }
      if (w != i)
        {
          if (self->u8 != NULL)
            memcpy (self->u8 + (gsize) w * F, self->u8 + (gsize) i * F, F);
          else
            memcpy (self->f32 + (gsize) w * F, self->f32 + (gsize) i * F, F * sizeof (float));
          if (self->labels != NULL)
            self->labels[w] = self->labels[i];
          if (self->targets != NULL)
            memcpy (self->targets + (gsize) w * T, self->targets + (gsize) i * T,
                    T * sizeof (float));
          if (self->row_lines != NULL)
            self->row_lines[w] = self->row_lines[i];
        }
      w++;
    }
  g_free (dup);
  self->n_predefined_train -= dropped_train;
  self->n_rows = w;
  return n_dup;
}

static guint
mean_fill (EspalierDataset *self,
           const guint8    *train,
           guint           *n_columns)
{
  const guint N = self->n_rows, F = self->row_size;
  guint filled = 0, columns = 0;

  for (guint j = 0; j < F; j++)
    {
      double sum = 0, all_sum = 0;
      gsize count = 0, all_count = 0, missing = 0;
      float mean;

      for (guint i = 0; i < N; i++)
        {
          float v = self->f32[(gsize) i * F + j];

          if (isnan (v))
            {
              missing++;
              continue;
            }
          all_sum += v;
          all_count++;
          if (row_is_train (train, i))
            {
              sum += v;
              count++;
            }
        }
      if (missing == 0)
        continue;
      if (count > 0)
        mean = (float) (sum / count);
      else if (all_count > 0)
        mean = (float) (all_sum / all_count);   /* no training value: all rows */
      else
        continue;                               /* nothing to fill with */
      for (guint i = 0; i < N; i++)
        {
          float *v = &self->f32[(gsize) i * F + j];

          if (isnan (*v))
            {
              *v = mean;
              filled++;
            }
        }
      columns++;
    }
  *n_columns = columns;
  return filled;
}

static gboolean
check_no_missing (EspalierDataset            *self,
                  const EspalierLoadOptions  *options,
                  GError                    **error)
{
  const guint N = self->n_rows, F = self->row_size;
  const char *hint;

  if (self->f32 == NULL)
    return TRUE;

  if (options->ffill && !options->mean_fill)
    hint = _("nothing above it to forward-fill; add mean-fill");
  else if (options->mean_fill)
    hint = _("the column has no value to take a mean of");
  else
    hint = _("choose forward-fill or mean-fill");

  for (guint i = 0; i < N; i++)
    for (guint j = 0; j < F; j++)
      {
        if (!isnan (self->f32[(gsize) i * F + j]))
          continue;
        if (self->origin_path != NULL && self->row_lines != NULL
            && self->feature_columns != NULL && self->column_names != NULL)
          {
            guint col = self->feature_columns[j];

            g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISSING_VALUE,
                         _("%s: line %u, column %u ('%s'): missing value (%s)"),
                         self->origin_path, self->row_lines[i], col,
                         self->column_names[col - 1], hint);
          }
        else
          {
            g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISSING_VALUE,
                         _("%s: row %u, feature %u: missing value (%s)"),
                         self->source, i + 1, j + 1, hint);
          }
        return FALSE;
      }
  return TRUE;
}

/* Statistics of raw image values over the training rows, from a histogram. */
static void
u8_statistics (EspalierDataset *self,
               const guint8    *train,
               double          *mean,
               double          *std,
               guint           *min,
               guint           *max)
{
  guint64 hist[256] = { 0 };
  guint64 count = 0;
  double sum = 0, sq = 0;

  for (guint i = 0; i < self->n_rows; i++)
    {
      const guint8 *row = self->u8 + (gsize) i * self->row_size;

      if (!row_is_train (train, i))
        continue;
      for (guint j = 0; j < self->row_size; j++)
        hist[row[j]]++;
    }
  *min = 255;
  *max = 0;
  for (guint v = 0; v < 256; v++)
    {
      if (hist[v] == 0)
        continue;
      count += hist[v];
      sum += (double) v * hist[v];
      sq += (double) v * v * hist[v];
      *min = MIN (*min, v);
      *max = MAX (*max, v);
    }
  if (count == 0)
    {
      *mean = 0;
      *std = 1;
      *min = 0;
      *max = 255;
      return;
    }
  *mean = sum / count;
  *std = sqrt (MAX (sq / count - *mean * *mean, 0.0));
}

static void
standardize (EspalierDataset *self,
             const guint8    *train,
             guint            n_train)
{
  const guint N = self->n_rows, F = self->row_size;

  if (self->u8 != NULL)
    {
      double mean, std;
      guint lo, hi;

      u8_statistics (self, train, &mean, &std, &lo, &hi);
      if (std < 1e-12)
        std = 1;
      self->scale = (float) (1.0 / std);
      self->shift = (float) (-mean / std);
      self->counts.standardized_columns = 1;
      _espalier_dataset_add_report (self,
                                    _("standardize: pixels scaled as (x - %.3f) / %.3f with "
                                      "the statistics of %u training rows"), mean, std, n_train);
      return;
    }

  {
    guint constant = 0;

    for (guint j = 0; j < F; j++)
      {
        double sum = 0, sq = 0, mean, std;
        gsize count = 0;

        for (guint i = 0; i < N; i++)
          if (row_is_train (train, i))
            {
              double v = self->f32[(gsize) i * F + j];

              sum += v;
              count++;
            }
        mean = count > 0 ? sum / count : 0;
        for (guint i = 0; i < N; i++)
          if (row_is_train (train, i))
            {
              double d = self->f32[(gsize) i * F + j] - mean;

              sq += d * d;
            }
        std = count > 0 ? sqrt (sq / count) : 1;
        if (std < 1e-12)
          {
            std = 1;
            constant++;
          }
        for (guint i = 0; i < N; i++)
          {
            float *v = &self->f32[(gsize) i * F + j];

            *v = (float) ((*v - mean) / std);
          }
      }
    self->counts.standardized_columns = F;
    _espalier_dataset_add_report (self,
                                  _("standardize: %u columns (%llu cells) to mean 0 and std 1 "
                                    "with the statistics of %u training rows%s"),
                                  F, (unsigned long long) N * F, n_train,
                                  constant > 0 ? _(" (constant columns only centred)") : "");
  }
}

static void
minmax (EspalierDataset *self,
        const guint8    *train,
        guint            n_train)
{
  const guint N = self->n_rows, F = self->row_size;

  if (self->u8 != NULL)
    {
      double mean, std;
      guint lo, hi;

      u8_statistics (self, train, &mean, &std, &lo, &hi);
      if (hi > lo)
        {
          self->scale = 1.0f / (float) (hi - lo);
          self->shift = -(float) lo / (float) (hi - lo);
        }
      else
        {
          self->scale = 1.0f;
          self->shift = -(float) lo;
        }
      self->counts.minmax_columns = 1;
      _espalier_dataset_add_report (self,
                                    _("min-max: pixels scaled as (x - %u) / %u with the "
                                      "statistics of %u training rows"), lo, MAX (hi - lo, 1u),
                                    n_train);
      return;
    }

  for (guint j = 0; j < F; j++)
    {
      float lo = INFINITY, hi = -INFINITY, range;

      for (guint i = 0; i < N; i++)
        if (row_is_train (train, i))
          {
            float v = self->f32[(gsize) i * F + j];

            lo = MIN (lo, v);
            hi = MAX (hi, v);
          }
      if (!isfinite (lo))
        lo = hi = 0;
      range = hi > lo ? hi - lo : 1.0f;
      for (guint i = 0; i < N; i++)
        {
          float *v = &self->f32[(gsize) i * F + j];

          *v = (*v - lo) / range;
        }
    }
  self->counts.minmax_columns = F;
  _espalier_dataset_add_report (self,
                                _("min-max: %u columns (%llu cells) scaled to 0..1 with the "
                                  "statistics of %u training rows"),
                                F, (unsigned long long) N * F, n_train);
}

gboolean
_espalier_dataset_preprocess (EspalierDataset            *self,
                              const EspalierLoadOptions  *options,
                              GCancellable               *cancellable,
                              GError                    **error)
{
  g_autofree guint8 *train = NULL;
  guint n_train = self->n_rows;

  if (options->standardize && options->minmax)
    {
      g_set_error_literal (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_INVALID,
                           _("Choose standardize or min-max scaling, not both"));
      return FALSE;
    }

  if (options->ffill)
    {
      guint left = 0;

      if (self->f32 != NULL)
        self->counts.ffilled_cells = forward_fill (self, &left);
      _espalier_dataset_add_report (self, _("forward-fill: %u cells filled%s"),
                                    self->counts.ffilled_cells,
                                    left > 0 ? _(", some with nothing above them left missing") : "");
    }
  if (g_cancellable_set_error_if_cancelled (cancellable, error))
    return FALSE;

  if (options->drop_duplicates)
    {
      self->counts.duplicate_rows = drop_duplicates (self, cancellable);
      if (g_cancellable_set_error_if_cancelled (cancellable, error))
        return FALSE;
      _espalier_dataset_add_report (self, _("drop duplicates: %u rows dropped, %u left"),
                                    self->counts.duplicate_rows, self->n_rows);
    }

  if (options->mean_fill || options->standardize || options->minmax)
    {
      g_autoptr(EspalierSplit) split = NULL;

      split = espalier_split_new (self, options->val_fraction, options->test_fraction,
                                  options->split_seed, error);
      if (split == NULL)
        return FALSE;
      train = g_new0 (guint8, MAX (self->n_rows, 1));
      for (guint i = 0; i < split->train->len; i++)
        train[g_array_index (split->train, guint32, i)] = 1;
      n_train = split->train->len;
    }

  if (options->mean_fill)
    {
      guint columns = 0;

      if (self->f32 != NULL)
        self->counts.mean_filled_cells = mean_fill (self, train, &columns);
      _espalier_dataset_add_report (self,
                                    _("mean-fill: %u cells in %u columns filled with the means "
                                      "of %u training rows"),
                                    self->counts.mean_filled_cells, columns, n_train);
    }

  if (!check_no_missing (self, options, error))
    return FALSE;
  if (g_cancellable_set_error_if_cancelled (cancellable, error))
    return FALSE;

  if (options->standardize)
    standardize (self, train, n_train);
  else if (options->minmax)
    minmax (self, train, n_train);

  return TRUE;
}
