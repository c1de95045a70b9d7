/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-batcher.c: the prefetching batcher: every row exactly once per epoch with the
 * right features and labels, a smaller last batch, an order that changes with the epoch
 * and repeats with the seed, uint8 converted as x * scale + shift, augmentation
 * (shifts with background fill, flips, noise) deterministic in the seed, targets for
 * regression, freeing or restarting in the middle of an epoch, and several producer
 * threads giving the same batches as one; shards for data parallelism that put together
 * are the whole batches, also from a position inside an epoch; batch buffers that do not
 * fit the memory fail espalier_batcher_prepare with a GError, not the process. */
#include "config.h"

#include <math.h>

#include "espalier-batcher.h"
#include "espalier-dataset-private.h"
#include "espalier-error.h"
#include "espalier-generate.h"

#include "data-test-util.h"

static EspalierDataset *
generate (const char *spec)
{
  g_autoptr(GError) error = NULL;
  EspalierDataset *ds = espalier_generate_from_spec (spec, &error);

  g_assert_no_error (error);
  return ds;
}

/* N images of (1, H, W), pixel j of image n = (7 * n + 3 * j) % 256, label n % 4. */
static EspalierDataset *
make_images (guint N,
             guint H,
             guint W)
{
  const guint dims[3] = { 1, H, W };
  EspalierDataset *ds = _espalier_dataset_new ("images", "test");
  const guint F = H * W;

  _espalier_dataset_set_shape (ds, 3, dims);
  ds->n_rows = N;
  ds->n_predefined_train = N;
  ds->u8 = g_new (guint8, (gsize) N * F);
  ds->labels = g_new (gint32, N);
  for (guint n = 0; n < N; n++)
    {
      for (guint j = 0; j < F; j++)
        ds->u8[(gsize) n * F + j] = (7 * n + 3 * j) % 256;
      ds->labels[n] = n % 4;
    }
  ds->scale = 1.0f / 255.0f;
  ds->shift = -0.5f;
  _espalier_dataset_set_numbered_classes (ds, 4);
  return ds;
}

static guint32 *
all_rows (guint n)
{
  guint32 *rows = g_new (guint32, n);

  for (guint i = 0; i < n; i++)
    rows[i] = i;
  return rows;
}

/* One epoch's row order, checking each batch against the dataset on the way. */
static GArray *
run_epoch (EspalierBatcher *b,
           EspalierDataset *ds,
           guint            epoch,
           guint            batch_size,
           gboolean         check_values)
{
  GArray *order = g_array_new (FALSE, FALSE, sizeof (guint32));
  const guint F = espalier_dataset_get_row_size (ds);
  const EspalierBatch *batch;
  guint n_batches = 0;

  espalier_batcher_start_epoch (b, epoch);
  while ((batch = espalier_batcher_next (b)) != NULL)
    {
      n_batches++;
      if (n_batches < espalier_batcher_n_batches (b))
        g_assert_cmpuint (batch->B, ==, batch_size);
      for (guint i = 0; i < batch->B; i++)
        {
          guint32 r = batch->rows[i];

          g_array_append_val (order, r);
          if (espalier_dataset_get_labels (ds) != NULL)
            g_assert_cmpint (batch->labels[i], ==, espalier_dataset_get_labels (ds)[r]);
          if (!check_values)
            continue;
          for (guint j = 0; j < F; j++)
            {
              float expected = espalier_dataset_is_u8 (ds)
                               ? espalier_dataset_get_u8 (ds)[(gsize) r * F + j]
                                 * espalier_dataset_get_scale (ds) + espalier_dataset_get_shift (ds)
                               : espalier_dataset_get_f32 (ds)[(gsize) r * F + j];

              g_assert_cmpfloat (batch->x[(gsize) i * F + j], ==, expected);
            }
        }
    }
  g_assert_cmpuint (n_batches, ==, espalier_batcher_n_batches (b));
  g_assert_null (espalier_batcher_next (b));   /* stays at the end */
  return order;
}

static void
assert_each_once (GArray        *order,
                  const guint32 *rows,
                  guint          n_rows,
                  guint          n_dataset)
{
  g_autofree guint *seen = g_new0 (guint, n_dataset);

  g_assert_cmpuint (order->len, ==, n_rows);
  for (guint i = 0; i < order->len; i++)
    seen[g_array_index (order, guint32, i)]++;
  for (guint i = 0; i < n_rows; i++)
    g_assert_cmpuint (seen[rows[i]], ==, 1);
}

static gboolean
orders_equal (GArray *a,
              GArray *b)
{
  return a->len == b->len && memcmp (a->data, b->data, a->len * sizeof (guint32)) == 0;
}

static void
test_every_row_once (void)
{
  g_autoptr(EspalierDataset) ds = generate ("spiral:n=300");
  g_autofree guint32 *rows = g_new (guint32, 103);
  g_autoptr(EspalierBatcher) b = NULL;

  /* A subset: every other row from 1. */
  for (guint i = 0; i < 103; i++)
    rows[i] = 1 + 2 * i;
  b = espalier_batcher_new (ds, rows, 103, 10, TRUE, 5, NULL);
  g_assert_cmpuint (espalier_batcher_n_batches (b), ==, 11);
  for (guint epoch = 0; epoch < 3; epoch++)
    {
      g_autoptr(GArray) order = run_epoch (b, ds, epoch, 10, TRUE);

      assert_each_once (order, rows, 103, 300);
    }
  g_assert_cmpfloat (espalier_batcher_wait_seconds (b), >=, 0.0);
}

static void
test_last_batch (void)
{
  g_autoptr(EspalierDataset) ds = generate ("xor:n=50");
  g_autofree guint32 *rows = all_rows (50);
  g_autoptr(EspalierBatcher) b = espalier_batcher_new (ds, rows, 50, 16, FALSE, 0, NULL);
  const EspalierBatch *batch;
  guint sizes[4], n = 0;

  espalier_batcher_start_epoch (b, 0);
  while ((batch = espalier_batcher_next (b)) != NULL)
    sizes[n++] = batch->B;
  g_assert_cmpuint (n, ==, 4);
  g_assert_cmpuint (sizes[0], ==, 16);
  g_assert_cmpuint (sizes[3], ==, 2);
}

static void
test_order (void)
{
  g_autoptr(EspalierDataset) ds = generate ("moons:n=200");
  g_autofree guint32 *rows = all_rows (200);
  g_autoptr(EspalierBatcher) a = espalier_batcher_new (ds, rows, 200, 32, TRUE, 7, NULL);
  g_autoptr(EspalierBatcher) same = espalier_batcher_new (ds, rows, 200, 32, TRUE, 7, NULL);
  g_autoptr(EspalierBatcher) other = espalier_batcher_new (ds, rows, 200, 32, TRUE, 8, NULL);
  g_autoptr(EspalierBatcher) plain = espalier_batcher_new (ds, rows, 200, 32, FALSE, 7, NULL);
  g_autoptr(GArray) a0 = run_epoch (a, ds, 0, 32, FALSE);
  g_autoptr(GArray) a1 = run_epoch (a, ds, 1, 32, FALSE);
  g_autoptr(GArray) a0_again = run_epoch (a, ds, 0, 32, FALSE);
  g_autoptr(GArray) same0 = run_epoch (same, ds, 0, 32, FALSE);
  g_autoptr(GArray) other0 = run_epoch (other, ds, 0, 32, FALSE);
  g_autoptr(GArray) plain3 = run_epoch (plain, ds, 3, 32, FALSE);

  g_assert_false (orders_equal (a0, a1));
  g_assert_true (orders_equal (a0, a0_again));
  g_assert_true (orders_equal (a0, same0));
  g_assert_false (orders_equal (a0, other0));
  g_assert_cmpmem (plain3->data, 200 * sizeof (guint32), rows, 200 * sizeof (guint32));
}

static void
test_u8_conversion (void)
{
  g_autoptr(EspalierDataset) ds = make_images (37, 5, 6);
  g_autofree guint32 *rows = all_rows (37);
  g_autoptr(EspalierBatcher) b = espalier_batcher_new (ds, rows, 37, 8, TRUE, 1, NULL);
  g_autoptr(GArray) order = run_epoch (b, ds, 0, 8, TRUE);

  assert_each_once (order, rows, 37, 37);
}

/* keep_u8 hands over the same rows unconverted, with the scale and shift to apply;
 * augmentation needs floats, so it keeps converting then. */
static void
test_keep_u8 (void)
{
  g_autoptr(EspalierDataset) ds = make_images (29, 4, 5);
  g_autofree guint32 *rows = all_rows (29);
  g_autoptr(EspalierBatcher) b = espalier_batcher_new (ds, rows, 29, 8, TRUE, 3, NULL);
  g_autoptr(EspalierBatcher) c = espalier_batcher_new (ds, rows, 29, 8, TRUE, 3, NULL);
  EspalierAugment aug = { .hflip = TRUE };
  g_autoptr(EspalierBatcher) d = espalier_batcher_new (ds, rows, 29, 8, TRUE, 3, &aug);
  const EspalierBatch *kb, *fb;
  const guint F = 20;

  espalier_batcher_set_keep_u8 (b, TRUE);
  espalier_batcher_start_epoch (b, 1);
  espalier_batcher_start_epoch (c, 1);
  while ((kb = espalier_batcher_next (b)) != NULL)
    {
      fb = espalier_batcher_next (c);
      g_assert_nonnull (fb);
      g_assert_null (kb->x);
      g_assert_nonnull (kb->x_u8);
      g_assert_cmpuint (kb->B, ==, fb->B);
      g_assert_cmpmem (kb->rows, kb->B * sizeof (guint32), fb->rows, fb->B * sizeof (guint32));
      for (guint i = 0; i < kb->B * F; i++)
        g_assert_cmpfloat (kb->x_u8[i] * kb->scale + kb->shift, ==, fb->x[i]);
    }
  g_assert_null (espalier_batcher_next (c));

  espalier_batcher_set_keep_u8 (d, TRUE);
  espalier_batcher_start_epoch (d, 0);
  kb = espalier_batcher_next (d);
  g_assert_nonnull (kb->x);
  g_assert_null (kb->x_u8);
}

static void
test_targets (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autoptr(GString) text = g_string_new ("a,b,y\n");
  g_autofree char *path = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(EspalierBatcher) b = NULL;
  g_autofree guint32 *rows = all_rows (20);
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions options;
  const EspalierBatch *batch;

  for (guint i = 0; i < 20; i++)
    g_string_append_printf (text, "%u,%u,%u.25\n", i, 2 * i, 3 * i);
  path = dtu_write_text (dir, "reg.csv", text->str);
  dtu_options_no_cache (&options);
  ds = espalier_dataset_load (path, &options, NULL, &error);
  g_assert_no_error (error);

  b = espalier_batcher_new (ds, rows, 20, 6, TRUE, 3, NULL);
  espalier_batcher_start_epoch (b, 0);
  while ((batch = espalier_batcher_next (b)) != NULL)
    {
      g_assert_null (batch->labels);
      g_assert_nonnull (batch->targets);
      for (guint i = 0; i < batch->B; i++)
        {
          g_assert_cmpfloat (batch->targets[i], ==, 3.0f * batch->rows[i] + 0.25f);
          g_assert_cmpfloat (batch->x[2 * i + 1], ==, 2.0f * batch->rows[i]);
        }
    }
}

/* Collect an epoch's x in row order (rows not shuffled). */
static float *
epoch_x (EspalierBatcher *b,
         guint            epoch,
         guint            n,
         guint            F)
{
  float *x = g_new (float, (gsize) n * F);
  const EspalierBatch *batch;
  guint at = 0;

  espalier_batcher_start_epoch (b, epoch);
  while ((batch = espalier_batcher_next (b)) != NULL)
    {
      memcpy (x + (gsize) at * F, batch->x, sizeof (float) * batch->B * F);
      at += batch->B;
    }
  g_assert_cmpuint (at, ==, n);
  return x;
}

static void
test_augment_shift (void)
{
  const guint N = 40, H = 6, W = 7, F = H * W;
  g_autoptr(EspalierDataset) ds = make_images (N, H, W);
  g_autofree guint32 *rows = all_rows (N);
  const EspalierAugment aug = { .shift_pixels = 2 };
  g_autoptr(EspalierBatcher) a = espalier_batcher_new (ds, rows, N, 16, FALSE, 9, &aug);
  g_autoptr(EspalierBatcher) a2 = espalier_batcher_new (ds, rows, N, 5, FALSE, 9, &aug);
  g_autoptr(EspalierBatcher) b = espalier_batcher_new (ds, rows, N, 16, FALSE, 10, &aug);
  g_autofree float *xa = epoch_x (a, 0, N, F);
  g_autofree float *xa2 = epoch_x (a2, 0, N, F);
  g_autofree float *xb = epoch_x (b, 0, N, F);
  g_autofree float *xa_next = epoch_x (a, 1, N, F);
  guint changed = 0;

  /* Deterministic in (seed, epoch, position), whatever the batch size. */
  g_assert_cmpmem (xa, N * F * sizeof (float), xa2, N * F * sizeof (float));
  g_assert_true (memcmp (xa, xb, N * F * sizeof (float)) != 0);
  g_assert_true (memcmp (xa, xa_next, N * F * sizeof (float)) != 0);

  /* Every image is its original shifted by some (dx, dy) in -2..2, background 0. */
  for (guint n = 0; n < N; n++)
    {
      const guint8 *src = espalier_dataset_get_u8 (ds) + (gsize) n * F;
      const float *x = xa + (gsize) n * F;
      gboolean found = FALSE;

      for (gint dy = -2; dy <= 2 && !found; dy++)
        for (gint dx = -2; dx <= 2 && !found; dx++)
          {
            gboolean match = TRUE;

            for (guint y = 0; y < H && match; y++)
              for (guint xx = 0; xx < W && match; xx++)
                {
                  gint sy = (gint) y - dy, sx = (gint) xx - dx;
                  float expected = sy < 0 || sx < 0 || sy >= (gint) H || sx >= (gint) W
                                   ? -0.5f : src[sy * W + sx] * (1.0f / 255.0f) - 0.5f;

                  match = x[y * W + xx] == expected;
                }
            found = match;
            if (match && (dx != 0 || dy != 0))
              changed++;
          }
      g_assert_true (found);
    }
  g_assert_cmpuint (changed, >, N / 2);
}

static void
test_augment_flip (void)
{
  const guint N = 64, H = 3, W = 5, F = H * W;
  g_autoptr(EspalierDataset) ds = make_images (N, H, W);
  g_autofree guint32 *rows = all_rows (N);
  const EspalierAugment aug = { .hflip = TRUE };
  g_autoptr(EspalierBatcher) a = espalier_batcher_new (ds, rows, N, 10, FALSE, 1, &aug);
  g_autofree float *x = epoch_x (a, 0, N, F);
  guint flipped = 0;

  for (guint n = 0; n < N; n++)
    {
      const guint8 *src = espalier_dataset_get_u8 (ds) + (gsize) n * F;
      gboolean same = TRUE, mirror = TRUE;

      for (guint y = 0; y < H; y++)
        for (guint xx = 0; xx < W; xx++)
          {
            float v = x[(gsize) n * F + y * W + xx];

            same = same && v == src[y * W + xx] * (1.0f / 255.0f) - 0.5f;
            mirror = mirror && v == src[y * W + (W - 1 - xx)] * (1.0f / 255.0f) - 0.5f;
          }
      g_assert_true (same || mirror);
      flipped += mirror && !same;
    }
  g_test_message ("%u of %u flipped", flipped, N);
  g_assert_cmpuint (flipped, >, N / 4);
  g_assert_cmpuint (flipped, <, 3 * N / 4);
}

static void
test_augment_noise (void)
{
  g_autoptr(EspalierDataset) ds = generate ("blobs:n=2000");
  g_autofree guint32 *rows = all_rows (2000);
  const EspalierAugment aug = { .noise_std = 0.25f };
  g_autoptr(EspalierBatcher) b = espalier_batcher_new (ds, rows, 2000, 128, FALSE, 4, &aug);
  g_autofree float *x = epoch_x (b, 0, 2000, 2);
  const float *orig = espalier_dataset_get_f32 (ds);
  double sum = 0, sq = 0;

  for (guint i = 0; i < 4000; i++)
    {
      double d = x[i] - orig[i];

      sum += d;
      sq += d * d;
    }
  g_assert_cmpfloat_with_epsilon (sum / 4000, 0.0, 0.02);
  g_assert_cmpfloat_with_epsilon (sqrt (sq / 4000), 0.25, 0.02);
}

/* Shifts and flips do nothing to rows that are not images. */
static void
test_augment_not_images (void)
{
  g_autoptr(EspalierDataset) ds = generate ("circles:n=100");
  g_autofree guint32 *rows = all_rows (100);
  const EspalierAugment aug = { .shift_pixels = 3, .hflip = TRUE };
  g_autoptr(EspalierBatcher) b = espalier_batcher_new (ds, rows, 100, 30, TRUE, 2, &aug);
  g_autoptr(GArray) order = run_epoch (b, ds, 0, 30, TRUE);

  assert_each_once (order, rows, 100, 100);
}

static void
test_early_free (void)
{
  g_autoptr(EspalierDataset) ds = make_images (500, 28, 28);
  g_autofree guint32 *rows = all_rows (500);
  const EspalierAugment aug = { .shift_pixels = 2, .hflip = TRUE, .noise_std = 0.1f };

  /* Never started. */
  espalier_batcher_free (espalier_batcher_new (ds, rows, 500, 32, TRUE, 0, &aug));

  /* Started, nothing taken: the producer is filling or waiting. */
  {
    EspalierBatcher *b = espalier_batcher_new (ds, rows, 500, 32, TRUE, 0, &aug);

    espalier_batcher_start_epoch (b, 0);
    espalier_batcher_free (b);
  }

  /* Mid-epoch, many times over to catch a race. */
  for (guint i = 0; i < 50; i++)
    {
      EspalierBatcher *b = espalier_batcher_new (ds, rows, 500, 32, TRUE, i, &aug);

      espalier_batcher_start_epoch (b, 0);
      for (guint k = 0; k < i % 7; k++)
        g_assert_nonnull (espalier_batcher_next (b));
      espalier_batcher_free (b);
    }

  /* The dataset reference is given back. */
  {
    EspalierDataset *alone = make_images (10, 2, 2);
    g_autofree guint32 *r10 = all_rows (10);
    EspalierBatcher *b = espalier_batcher_new (alone, r10, 10, 3, TRUE, 0, NULL);

    g_object_unref (alone);
    espalier_batcher_start_epoch (b, 0);
    g_assert_nonnull (espalier_batcher_next (b));
    espalier_batcher_free (b);
  }
}

/* Starting an epoch before the last one ended abandons it cleanly. */
static void
test_restart_mid_epoch (void)
{
  g_autoptr(EspalierDataset) ds = generate ("spiral:n=400");
  g_autofree guint32 *rows = all_rows (400);
  g_autoptr(EspalierBatcher) b = espalier_batcher_new (ds, rows, 400, 16, TRUE, 1, NULL);
  g_autoptr(EspalierBatcher) fresh = espalier_batcher_new (ds, rows, 400, 16, TRUE, 1, NULL);

  for (guint i = 0; i < 20; i++)
    {
      espalier_batcher_start_epoch (b, i);
      for (guint k = 0; k < i % 5; k++)
        g_assert_nonnull (espalier_batcher_next (b));
    }
  {
    g_autoptr(GArray) order = run_epoch (b, ds, 2, 16, TRUE);
    g_autoptr(GArray) expected = run_epoch (fresh, ds, 2, 16, FALSE);

    assert_each_once (order, rows, 400, 400);
    g_assert_true (orders_equal (order, expected));
  }
}

/* Several producer threads further ahead hand over the same batches in the same order
 * (augmentation included), also across restarts in the middle of an epoch, and count
 * their time preparing and waiting. */
static void
test_workers (void)
{
  const guint N = 300, F = 10 * 10;
  g_autoptr(EspalierDataset) ds = make_images (N, 10, 10);
  g_autofree guint32 *rows = all_rows (N);
  const EspalierAugment aug = { .shift_pixels = 2, .hflip = TRUE, .noise_std = 0.1f };
  g_autoptr(EspalierBatcher) one = espalier_batcher_new (ds, rows, N, 16, TRUE, 9, &aug);
  g_autoptr(EspalierBatcher) many = espalier_batcher_new (ds, rows, N, 16, TRUE, 9, &aug);
  double produce = 0, wait = -1;

  espalier_batcher_set_prefetch (many, 3, 5);
  g_assert_cmpuint (espalier_batcher_get_workers (one), ==, 1);
  g_assert_cmpuint (espalier_batcher_get_workers (many), ==, 3);
  for (guint epoch = 0; epoch < 3; epoch++)
    {
      const EspalierBatch *a, *b;

      /* abandon part of an epoch first */
      espalier_batcher_start_epoch (many, epoch + 7);
      for (guint k = 0; k < epoch * 3; k++)
        g_assert_nonnull (espalier_batcher_next (many));
      espalier_batcher_start_epoch (one, epoch);
      espalier_batcher_start_epoch (many, epoch);
      while ((a = espalier_batcher_next (one)) != NULL)
        {
          b = espalier_batcher_next (many);
          g_assert_nonnull (b);
          g_assert_cmpuint (a->B, ==, b->B);
          g_assert_cmpmem (a->rows, a->B * sizeof (guint32), b->rows, b->B * sizeof (guint32));
          g_assert_cmpmem (a->labels, a->B * sizeof (gint32), b->labels, b->B * sizeof (gint32));
          g_assert_cmpmem (a->x, (gsize) a->B * F * sizeof (float), b->x,
                           (gsize) b->B * F * sizeof (float));
        }
      g_assert_null (espalier_batcher_next (many));
    }
  espalier_batcher_get_producer_seconds (many, &produce, &wait);
  g_assert_cmpfloat (produce, >, 0.0);
  g_assert_cmpfloat (wait, >=, 0.0);
}

/* One epoch of b flattened by position in the epoch's order: rows (n), x (n, F), or the
 * uint8 rows x_u8 (n, F) with keep_u8. */
typedef struct {
  guint32 *rows;
  float   *x;
  guint8  *x_u8;
} Flat;

static void
flat_clear (Flat *f)
{
  g_free (f->rows);
  g_free (f->x);
  g_free (f->x_u8);
}

static Flat
flat_epoch (EspalierBatcher *b, guint epoch, guint n, guint F, gboolean keep_u8)
{
  Flat f = { g_new (guint32, n), keep_u8 ? NULL : g_new (float, (gsize) n * F),
             keep_u8 ? g_new (guint8, (gsize) n * F) : NULL };
  const EspalierBatch *batch;
  guint at = 0;

  espalier_batcher_start_epoch (b, epoch);
  while ((batch = espalier_batcher_next (b)) != NULL)
    {
      g_assert_false (batch->padding);
      g_assert_cmpuint (batch->position, ==, at);
      g_assert_cmpuint (batch->global_B, ==, batch->B);
      memcpy (f.rows + at, batch->rows, sizeof (guint32) * batch->B);
      if (keep_u8)
        memcpy (f.x_u8 + (gsize) at * F, batch->x_u8, (gsize) batch->B * F);
      else
        memcpy (f.x + (gsize) at * F, batch->x, sizeof (float) * batch->B * F);
      at += batch->B;
    }
  g_assert_cmpuint (at, ==, n);
  return f;
}

/* Shards of `ranks` batchers (batch bs, from position `from` of epoch `epoch`, started
 * the way a data-parallel trainer does: the epoch first, then the shard and the start)
 * against the whole epoch `whole` of an unsharded batcher: every shard is the rows of
 * its rank's part of the whole batch at the same positions, with the same converted and
 * augmented values, and the shards of the ranks together cover every position from
 * `from` on exactly once. */
static void
check_shards (EspalierDataset *ds, const guint32 *rows, guint n, guint bs, guint ranks,
              const EspalierAugment *aug, gboolean keep_u8, guint epoch, guint from,
              const Flat *whole)
{
  const guint F = espalier_dataset_get_row_size (ds);
  g_autofree guint *covered = g_new0 (guint, n);
  guint paddings = 0;

  for (guint r = 0; r < ranks; r++)
    {
      g_autoptr(EspalierBatcher) b = espalier_batcher_new (ds, rows, n, bs, TRUE, 3, aug);
      const EspalierBatch *batch;
      guint start = from;

      espalier_batcher_set_keep_u8 (b, keep_u8);
      espalier_batcher_start_epoch (b, epoch);
      espalier_batcher_set_shard (b, r, ranks);
      espalier_batcher_start_epoch_at (b, epoch, from);
      while ((batch = espalier_batcher_next (b)) != NULL)
        {
          /* the whole batch: [start, the next multiple of bs or n) */
          guint end = MIN ((start / bs + 1) * bs, n);
          guint G = end - start;
          guint first = start + (guint) ((guint64) G * r / ranks);
          guint count = start + (guint) ((guint64) G * (r + 1) / ranks) - first;

          g_assert_cmpuint (batch->position, ==, start);
          g_assert_cmpuint (batch->global_B, ==, G);
          g_assert_cmpint (batch->padding, ==, count == 0);
          if (count == 0)
            {
              /* the whole batch's first row, counted for nothing */
              paddings++;
              g_assert_cmpuint (batch->B, ==, 1);
              g_assert_cmpuint (batch->rows[0], ==, whole->rows[start]);
            }
          else
            {
              g_assert_cmpuint (batch->B, ==, count);
              g_assert_cmpmem (batch->rows, count * sizeof (guint32), whole->rows + first,
                               count * sizeof (guint32));
              if (keep_u8)
                g_assert_cmpmem (batch->x_u8, (gsize) count * F, whole->x_u8 + (gsize) first * F,
                                 (gsize) count * F);
              else
                g_assert_cmpmem (batch->x, (gsize) count * F * sizeof (float),
                                 whole->x + (gsize) first * F, (gsize) count * F * sizeof (float));
              for (guint i = 0; i < count; i++)
                {
                  g_assert_cmpint (batch->labels[i], ==,
                                   espalier_dataset_get_labels (ds)[batch->rows[i]]);
                  covered[first + i]++;
                }
            }
          start = end;
        }
      g_assert_cmpuint (start, ==, MAX (from, n));
    }
  for (guint p = 0; p < n; p++)
    g_assert_cmpuint (covered[p], ==, p >= from ? 1 : 0);
  /* a batch of fewer rows than ranks pads the ranks left without one */
  {
    guint expected = 0;

    for (guint start = from; start < n; start = MIN ((start / bs + 1) * bs, n))
      {
        guint G = MIN ((start / bs + 1) * bs, n) - start;

        expected += G < ranks ? ranks - G : 0;
      }
    g_assert_cmpuint (paddings, ==, expected);
  }
}

/* Sharded batchers (data parallelism) for several rank counts, batch sizes and starting
 * positions, with augmentation, put together give the unsharded batches. */
static void
test_shards (void)
{
  const guint N = 45, H = 5, W = 6, F = H * W;
  g_autoptr(EspalierDataset) ds = make_images (N, H, W);
  g_autofree guint32 *rows = all_rows (N);
  const EspalierAugment aug = { .shift_pixels = 1, .hflip = TRUE, .noise_std = 0.1f };
  const guint batch_sizes[] = { 7, 16, 4, 45 };   /* ragged last batches of 3, 13 and 1 */
  const guint rank_counts[] = { 1, 2, 3, 5 };

  for (guint e = 0; e < 2; e++)
    for (guint i = 0; i < G_N_ELEMENTS (batch_sizes); i++)
      {
        const guint bs = batch_sizes[i];
        g_autoptr(EspalierBatcher) b = espalier_batcher_new (ds, rows, N, bs, TRUE, 3, &aug);
        Flat whole = flat_epoch (b, e, N, F, FALSE);

        for (guint k = 0; k < G_N_ELEMENTS (rank_counts); k++)
          {
            check_shards (ds, rows, N, bs, rank_counts[k], &aug, FALSE, e, 0, &whole);
            /* resumed mid-batch and at a batch boundary, and past the end */
            check_shards (ds, rows, N, bs, rank_counts[k], &aug, FALSE, e, bs + 2 < N ? bs + 2 : 1,
                          &whole);
            check_shards (ds, rows, N, bs, rank_counts[k], &aug, FALSE, e, bs, &whole);
            check_shards (ds, rows, N, bs, rank_counts[k], &aug, FALSE, e, N + 5, &whole);
          }
        flat_clear (&whole);
      }

  /* uint8 handed over unconverted, no augmentation */
  {
    g_autoptr(EspalierBatcher) b = espalier_batcher_new (ds, rows, N, 7, TRUE, 3, NULL);
    Flat whole;

    espalier_batcher_set_keep_u8 (b, TRUE);
    whole = flat_epoch (b, 1, N, F, TRUE);
    for (guint k = 0; k < G_N_ELEMENTS (rank_counts); k++)
      check_shards (ds, rows, N, 7, rank_counts[k], NULL, TRUE, 1, 0, &whole);
    flat_clear (&whole);
  }
}

/* Starting again the epoch just started keeps its batches; starting it elsewhere, with
 * other shards or after a batch was taken does not, and each gives its own batches. */
static void
test_start_at_restart (void)
{
  g_autoptr(EspalierDataset) ds = generate ("spiral:n=100");
  g_autofree guint32 *rows = all_rows (100);
  g_autoptr(EspalierBatcher) b = espalier_batcher_new (ds, rows, 100, 16, TRUE, 4, NULL);
  g_autoptr(EspalierBatcher) ref = espalier_batcher_new (ds, rows, 100, 16, TRUE, 4, NULL);
  g_autoptr(GArray) expected = run_epoch (ref, ds, 2, 16, FALSE);
  const EspalierBatch *batch;
  guint at = 0;

  espalier_batcher_start_epoch (b, 2);
  g_assert_nonnull (espalier_batcher_next (b));
  espalier_batcher_start_epoch_at (b, 2, 0);   /* after a next(): from the start again */
  espalier_batcher_start_epoch_at (b, 2, 0);   /* untouched: kept */
  while ((batch = espalier_batcher_next (b)) != NULL)
    {
      g_assert_cmpmem (batch->rows, batch->B * sizeof (guint32),
                       &g_array_index (expected, guint32, at), batch->B * sizeof (guint32));
      at += batch->B;
    }
  g_assert_cmpuint (at, ==, 100);

  espalier_batcher_start_epoch (b, 2);
  espalier_batcher_start_epoch_at (b, 2, 50);  /* the batch [48, 64) from 50 */
  batch = espalier_batcher_next (b);
  g_assert_nonnull (batch);
  g_assert_cmpuint (batch->position, ==, 50);
  g_assert_cmpuint (batch->B, ==, 14);
  g_assert_cmpmem (batch->rows, 14 * sizeof (guint32), &g_array_index (expected, guint32, 50),
                   14 * sizeof (guint32));
}

static void
test_empty (void)
{
  g_autoptr(EspalierDataset) ds = generate ("xor:n=10");
  g_autoptr(EspalierBatcher) b = espalier_batcher_new (ds, NULL, 0, 4, TRUE, 0, NULL);

  g_assert_cmpuint (espalier_batcher_n_batches (b), ==, 0);
  espalier_batcher_start_epoch (b, 0);
  g_assert_null (espalier_batcher_next (b));
}

/* Batch buffers over what is available (ESPALIER_MEMORY_AVAILABLE): prepare fails with
 * ESPALIER_ERROR_MEMORY, the batcher can still be freed or prepared again; uint8 rows
 * kept as they are take a quarter of the floats and fit where those did not. */
static void
test_out_of_memory (void)
{
  const guint N = 300, H = 32, W = 32, B = 64;
  g_autoptr(EspalierDataset) ds = make_images (N, H, W);
  g_autofree guint32 *rows = all_rows (N);
  g_autoptr(EspalierBatcher) b = espalier_batcher_new (ds, rows, N, B, TRUE, 2, NULL);
  g_autoptr(EspalierBatcher) u8 = espalier_batcher_new (ds, rows, N, B, TRUE, 2, NULL);
  g_autoptr(GError) error = NULL;
  g_autofree char *avail = NULL;
  g_autoptr(GArray) order = NULL;

  /* one slot of floats is (B, H W) floats; of bytes a quarter of that */
  avail = g_strdup_printf ("%u", B * H * W * 4 / 2);
  g_setenv ("ESPALIER_MEMORY_AVAILABLE", avail, TRUE);
  espalier_batcher_set_prefetch (b, 3, 8);
  g_assert_false (espalier_batcher_prepare (b, &error));
  dtu_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY, "the batch buffers",
                    "available", NULL);
  g_test_message ("%s", error->message);
  g_clear_error (&error);
  espalier_batcher_set_keep_u8 (u8, TRUE);
  g_assert_true (espalier_batcher_prepare (u8, &error));
  g_assert_no_error (error);
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");

  /* the memory back: the same batcher prepares and hands over every row */
  g_assert_true (espalier_batcher_prepare (b, &error));
  g_assert_no_error (error);
  order = run_epoch (b, ds, 0, B, TRUE);
  assert_each_once (order, rows, N, N);
}

int
main (int   argc,
      char *argv[])
{
  dtu_init (&argc, &argv);

  g_test_add_func ("/batcher/every-row-once", test_every_row_once);
  g_test_add_func ("/batcher/last-batch", test_last_batch);
  g_test_add_func ("/batcher/order", test_order);
  g_test_add_func ("/batcher/u8-conversion", test_u8_conversion);
  g_test_add_func ("/batcher/keep-u8", test_keep_u8);
  g_test_add_func ("/batcher/targets", test_targets);
  g_test_add_func ("/batcher/augment-shift", test_augment_shift);
  g_test_add_func ("/batcher/augment-flip", test_augment_flip);
  g_test_add_func ("/batcher/augment-noise", test_augment_noise);
  g_test_add_func ("/batcher/augment-not-images", test_augment_not_images);
  g_test_add_func ("/batcher/early-free", test_early_free);
  g_test_add_func ("/batcher/restart-mid-epoch", test_restart_mid_epoch);
  g_test_add_func ("/batcher/empty", test_empty);
  g_test_add_func ("/batcher/workers", test_workers);
  g_test_add_func ("/batcher/shards", test_shards);
  g_test_add_func ("/batcher/start-at-restart", test_start_at_restart);
  g_test_add_func ("/batcher/out-of-memory", test_out_of_memory);

  return dtu_finish (g_test_run ());
}
