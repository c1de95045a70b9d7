/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-batcher.c: the prefetching batch producer. A ring of slots (two by default):
 * the consumer holds one (the batch next() returned), the producer threads (one by
 * default) fill the others with the following batches, batch b always in slot
 * b % n_slots, then sleep on the condition variable until a slot is free or an epoch
 * starts. One mutex guards the slot states and the epoch; each worker claims a batch
 * under it and fills the slot unlocked, and start_epoch() waits for every fill in
 * flight to finish before it touches the order, so no worker reads a half-written
 * permutation. The workers count the seconds they spend filling and waiting for a
 * free slot, for the profiler. The slots, the order and the workers' scratch rows are
 * allocated in one place (slots_prepare), checked, once the settings are known.
 *
 * Randomness is counter-based: the order of epoch e comes from (seed, e), the
 * augmentation of the row at position p from (seed, e, p), whatever the timing, the
 * batch size or the shard.
 *
 * Shards (data parallelism): batch b covers positions [start, end) of the epoch's order
 * (start is b * batch_size, or the position the epoch started at for its first batch);
 * with R ranks, rank r fills only [start + G r / R, start + G (r + 1) / R), G = end -
 * start: the same split espalier_distributed_shard makes of a whole set.
 *
 * Dimension key: B = batch size, F = row size, T = targets, (C, H, W) image shape. */
#include "config.h"

#include <string.h>

#include "es-common.h"
#include "espalier-batcher.h"
#include "espalier-limits.h"

#include <glib/gi18n-lib.h>

typedef struct {
  float         *x;            /* (B, F), unused (1) when keeping uint8 */
  guint8        *x_u8;         /* (B, F) when keeping uint8, else NULL */
  gint32        *labels;       /* (B) or NULL */
  float         *targets;      /* (B, T) or NULL */
  guint32       *rows;         /* (B) */
  EspalierBatch  batch;
  gint64         index;        /* the batch it holds, -1 when free */
  gboolean       filling;      /* a worker is filling it */
} Slot;

typedef struct {
  struct _EspalierBatcher *self;
  GThread                 *thread;
  float                   *scratch;   /* (F) for shifts and flips */
} Worker;

struct _EspalierBatcher
{
  EspalierDataset *ds;
  guint32         *rows;         /* (n_rows) as given */
  guint32         *order;        /* (n_rows) this epoch's order */
  guint            n_rows;
  guint            batch_size;
  guint            n_batches;
  gboolean         shuffle;
  guint64          seed;
  EspalierAugment  augment;
  gboolean         augmenting;
  gboolean         keep_u8;      /* hand over uint8 rows unconverted */
  guint            rank, ranks;  /* the shard this epoch fills (0, 1: all) */

  /* The dataset, read-only. */
  guint            F, T, C, H, W;
  const guint8    *u8;           /* (N, F) or NULL */
  const float     *f32;          /* (N, F) or NULL */
  const gint32    *labels;       /* (N) or NULL */
  const float     *targets;      /* (N, T) or NULL */
  float            scale, shift;

  Slot            *slots;        /* (n_slots) */
  guint            n_slots;
  guint            want_slots;   /* the setters', for the next prepare */
  gboolean         prepared;     /* the slots, the order and the scratch rows are there */
  Worker         **workers;      /* (n_workers) */
  guint            n_workers;

  GMutex           lock;
  GCond            cond;
  /* Under lock: */
  gboolean         quit;
  gboolean         active;       /* an epoch was started */
  guint            generation;   /* bumped by start_epoch */
  guint            epoch;
  guint            start_pos;    /* the position in the order the epoch started at */
  guint            want_rank, want_ranks;  /* set_shard's, for the next epoch */
  guint            next_fill;    /* batch a worker claims next */
  guint            next_take;    /* batch next() returns next */
  guint            filling;      /* fills in flight */
  gint             held;         /* slot the consumer holds, -1 */
  double           wait_seconds;
  double           produce_seconds;        /* all workers, since creation */
  double           producer_wait_seconds;
  gint64           freed_at;     /* when next() last freed a slot */
};

static void
augment_row (EspalierBatcher *self,
             float           *scratch,
             float           *x,
             guint            epoch,
             guint            position)
{
  const EspalierAugment *a = &self->augment;
  EsRng rng;

  rng.state = es_hash64 (self->seed ^ 0x61756773ull)
              ^ es_hash64 (((guint64) epoch << 32) ^ position);

  if (self->C > 0 && (a->shift_pixels > 0 || a->hflip))
    {
      const guint C = self->C, H = self->H, W = self->W;
      const float fill = self->shift;   /* a raw 0, converted */
      gint k = (gint) a->shift_pixels;
      gint dx = k > 0 ? (gint) (es_rng_next (&rng) % (guint64) (2 * k + 1)) - k : 0;
      gint dy = k > 0 ? (gint) (es_rng_next (&rng) % (guint64) (2 * k + 1)) - k : 0;
      gboolean flip = a->hflip && es_rng_uniform (&rng) < 0.5;

      if (dx != 0 || dy != 0 || flip)
        {
          memcpy (scratch, x, sizeof (float) * self->F);
          for (guint c = 0; c < C; c++)
            for (guint y = 0; y < H; y++)
              for (guint xx = 0; xx < W; xx++)
                {
                  gint sx = (gint) (flip ? W - 1 - xx : xx) - dx;
                  gint sy = (gint) y - dy;
                  float *out = &x[((gsize) c * H + y) * W + xx];

                  if (sx < 0 || sy < 0 || sx >= (gint) W || sy >= (gint) H)
                    *out = fill;
                  else
                    *out = scratch[((gsize) c * H + sy) * W + sx];
                }
        }
    }
  if (a->noise_std > 0)
    for (guint j = 0; j < self->F; j++)
      x[j] += (float) (es_rng_normal (&rng) * a->noise_std);
}

static void
fill_slot (EspalierBatcher *self,
           float           *scratch,
           Slot            *slot,
           guint            b,
           guint            epoch)
{
  const guint F = self->F, T = self->T;
  const guint start = MAX (b * self->batch_size, self->start_pos);
  const guint G = MIN ((b + 1) * self->batch_size, self->n_rows) - start;
  /* this shard: positions [first, first + B) */
  guint first = start + (guint) ((guint64) G * self->rank / self->ranks);
  guint B = start + (guint) ((guint64) G * (self->rank + 1) / self->ranks) - first;
  gboolean padding = B == 0;

  if (padding)
    {
      first = start;
      B = 1;
    }
  for (guint i = 0; i < B; i++)
    {
      guint32 row = self->order[first + i];
      float *x = slot->x_u8 != NULL ? NULL : slot->x + (gsize) i * F;

      slot->rows[i] = row;
      if (slot->x_u8 != NULL)
        memcpy (slot->x_u8 + (gsize) i * F, self->u8 + (gsize) row * F, F);
      else if (self->u8 != NULL)
        {
          const guint8 *src = self->u8 + (gsize) row * F;

          for (guint j = 0; j < F; j++)
            x[j] = src[j] * self->scale + self->shift;
        }
      else
        {
          const float *src = self->f32 + (gsize) row * F;

          if (self->scale == 1.0f && self->shift == 0.0f)
            memcpy (x, src, sizeof (float) * F);
          else
            for (guint j = 0; j < F; j++)
              x[j] = src[j] * self->scale + self->shift;
        }
      if (self->labels != NULL)
        slot->labels[i] = self->labels[row];
      if (self->targets != NULL)
        memcpy (slot->targets + (gsize) i * T, self->targets + (gsize) row * T,
                sizeof (float) * T);
      if (self->augmenting)
        augment_row (self, scratch, x, epoch, first + i);
    }
  slot->batch.B = B;
  slot->batch.position = start;
  slot->batch.global_B = G;
  slot->batch.padding = padding;
  slot->batch.x = slot->x_u8 != NULL ? NULL : slot->x;
  slot->batch.x_u8 = slot->x_u8;
  slot->batch.scale = self->scale;
  slot->batch.shift = self->shift;
  slot->batch.labels = slot->labels;
  slot->batch.targets = slot->targets;
  slot->batch.rows = slot->rows;
}

/* Under lock: whether a worker can claim the next batch now. */
static gboolean
can_fill (EspalierBatcher *self)
{
  const Slot *slot;

  if (!self->active || self->next_fill >= self->n_batches)
    return FALSE;
  slot = &self->slots[self->next_fill % self->n_slots];
  return slot->index < 0 && !slot->filling;
}

static gpointer
batcher_thread (gpointer data)
{
  Worker *worker = data;
  EspalierBatcher *self = worker->self;

  g_mutex_lock (&self->lock);
  for (;;)
    {
      guint b, gen, epoch;
      gint64 t0;
      Slot *slot;

      while (!self->quit && !can_fill (self))
        {
          /* Blocked with batches left to fill: every slot is ahead of the consumer. */
          gboolean blocked = self->active && self->next_fill < self->n_batches;

          t0 = g_get_monotonic_time ();
          g_cond_wait (&self->cond, &self->lock);
          if (blocked)
            {
              /* until the consumer freed a slot: the time it takes this thread to be
               * scheduled again is not the data being ahead */
              gint64 t1 = g_get_monotonic_time ();

              if (self->freed_at > t0 && self->freed_at < t1)
                t1 = self->freed_at;
              self->producer_wait_seconds += (t1 - t0) / 1e6;
            }
        }
      if (self->quit)
        break;

      b = self->next_fill++;
      slot = &self->slots[b % self->n_slots];
      slot->filling = TRUE;
      self->filling++;
      gen = self->generation;
      epoch = self->epoch;
      g_mutex_unlock (&self->lock);

      t0 = g_get_monotonic_time ();
      fill_slot (self, worker->scratch, slot, b, epoch);

      g_mutex_lock (&self->lock);
      self->produce_seconds += (g_get_monotonic_time () - t0) / 1e6;
      slot->filling = FALSE;
      self->filling--;
      if (gen == self->generation)
        slot->index = b;
      g_cond_broadcast (&self->cond);
    }
  g_mutex_unlock (&self->lock);
  return NULL;
}

/* Under lock, no epoch active: frees the slots. */
static void
slots_free (EspalierBatcher *self)
{
  for (guint s = 0; s < self->n_slots; s++)
    {
      Slot *slot = &self->slots[s];

      g_free (slot->x);
      g_free (slot->x_u8);
      g_free (slot->rows);
      g_free (slot->labels);
      g_free (slot->targets);
    }
  g_clear_pointer (&self->slots, g_free);
  self->n_slots = 0;
  self->prepared = FALSE;
}

/* Under lock, no epoch active: what grows with the batch (want_slots slots of
 * batch_size rows), the dataset (the order) or the row (each worker's scratch row),
 * allocated for the settings made so far; FALSE with ESPALIER_ERROR_MEMORY when it does
 * not fit, and nothing of it left. */
static gboolean
slots_prepare (EspalierBatcher  *self,
               GError          **error)
{
  /* TRANSLATORS: what did not fit in "Not enough memory for %s" */
  const char *what = _("the batch buffers");
  /* no batch holds more rows than there are */
  const guint B = MAX (MIN (self->batch_size, self->n_rows), 1);
  const gsize BF = (gsize) B * self->F;

  slots_free (self);
  g_clear_pointer (&self->order, g_free);
  self->order = espalier_try_alloc (self->n_rows, sizeof (guint32), FALSE, what, error);
  if (self->order == NULL)
    return FALSE;
  self->slots = g_new0 (Slot, self->want_slots);
  self->n_slots = self->want_slots;
  for (guint s = 0; s < self->n_slots; s++)
    {
      Slot *slot = &self->slots[s];

      slot->index = -1;
      /* the floats, or with keep_u8 the bytes (and no floats: they are not used) */
      if ((slot->x = espalier_try_alloc (self->keep_u8 ? 1 : BF, sizeof (float), TRUE, what,
                                         error)) == NULL
          || (self->keep_u8
              && (slot->x_u8 = espalier_try_alloc (BF, 1, TRUE, what, error)) == NULL)
          || (slot->rows = espalier_try_alloc (B, sizeof (guint32), TRUE, what, error)) == NULL
          || (self->labels != NULL
              && (slot->labels = espalier_try_alloc (B, sizeof (gint32), TRUE, what,
                                                     error)) == NULL)
          || (self->targets != NULL
              && (slot->targets = espalier_try_alloc ((gsize) B * self->T,
                                                      sizeof (float), TRUE, what,
                                                      error)) == NULL))
        goto fail;
    }
  for (guint w = 0; w < self->n_workers; w++)
    if (self->workers[w]->scratch == NULL
        && (self->workers[w]->scratch = espalier_try_alloc (self->F, sizeof (float), FALSE, what,
                                                            error)) == NULL)
      goto fail;
  self->prepared = TRUE;
  return TRUE;

fail:
  slots_free (self);
  g_clear_pointer (&self->order, g_free);
  return FALSE;
}

/* Under lock: start workers until there are n. */
static void
workers_add (EspalierBatcher *self,
             guint            n)
{
  if (n <= self->n_workers)
    return;
  self->workers = g_renew (Worker *, self->workers, n);
  for (guint w = self->n_workers; w < n; w++)
    {
      Worker *worker = g_new0 (Worker, 1);

      worker->self = self;
      /* worker->scratch: by slots_prepare */
      worker->thread = g_thread_new ("espalier-batcher", batcher_thread, worker);
      self->workers[w] = worker;
    }
  self->n_workers = n;
}

EspalierBatcher *
espalier_batcher_new (EspalierDataset       *ds,
                      const guint32         *rows,
                      guint                  n_rows,
                      guint                  batch_size,
                      gboolean               shuffle,
                      guint64                seed,
                      const EspalierAugment *augment)
{
  EspalierBatcher *self;
  guint N;

  g_return_val_if_fail (ESPALIER_IS_DATASET (ds), NULL);
  g_return_val_if_fail (rows != NULL || n_rows == 0, NULL);
  g_return_val_if_fail (batch_size > 0, NULL);

  N = espalier_dataset_get_n_rows (ds);
  for (guint i = 0; i < n_rows; i++)
    g_return_val_if_fail (rows[i] < N, NULL);

  self = g_new0 (EspalierBatcher, 1);
  self->ds = g_object_ref (ds);
  /* 4 bytes a row, beside the dataset's own F or more: the order, the batches and the
   * scratch rows wait for espalier_batcher_prepare */
  self->rows = g_memdup2 (rows, sizeof (guint32) * n_rows);
  self->n_rows = n_rows;
  self->batch_size = batch_size;
  self->n_batches = (n_rows + batch_size - 1) / batch_size;
  self->shuffle = shuffle;
  self->seed = seed;

  self->F = espalier_dataset_get_row_size (ds);
  self->T = espalier_dataset_get_n_targets (ds);
  self->u8 = espalier_dataset_get_u8 (ds);
  self->f32 = espalier_dataset_get_f32 (ds);
  self->labels = espalier_dataset_get_labels (ds);
  self->targets = espalier_dataset_get_targets (ds);
  self->scale = espalier_dataset_get_scale (ds);
  self->shift = espalier_dataset_get_shift (ds);
  if (espalier_dataset_get_rank (ds) == 3)
    {
      const guint *dims = espalier_dataset_get_dims (ds);

      self->C = dims[0];
      self->H = dims[1];
      self->W = dims[2];
    }
  if (augment != NULL)
    {
      self->augment = *augment;
      self->augmenting = augment->noise_std > 0
                         || (self->C > 0 && (augment->shift_pixels > 0 || augment->hflip));
    }
  self->held = -1;
  self->ranks = self->want_ranks = 1;

  self->want_slots = 2;

  g_mutex_init (&self->lock);
  g_cond_init (&self->cond);
  g_mutex_lock (&self->lock);
  workers_add (self, 1);
  g_mutex_unlock (&self->lock);
  return self;
}

gboolean
espalier_batcher_prepare (EspalierBatcher  *self,
                          GError          **error)
{
  gboolean ok = TRUE;

  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  g_mutex_lock (&self->lock);
  if (!self->prepared)
    ok = slots_prepare (self, error);
  g_mutex_unlock (&self->lock);
  return ok;
}

void
espalier_batcher_set_keep_u8 (EspalierBatcher *self,
                              gboolean         keep_u8)
{
  g_return_if_fail (self != NULL);

  g_mutex_lock (&self->lock);
  if (self->active)
    {
      g_mutex_unlock (&self->lock);
      g_critical ("espalier_batcher_set_keep_u8() must come before the first epoch");
      return;
    }
  self->keep_u8 = keep_u8 && self->u8 != NULL && !self->augmenting;
  slots_free (self);
  g_mutex_unlock (&self->lock);
}

void
espalier_batcher_set_prefetch (EspalierBatcher *self,
                               guint            workers,
                               guint            ahead)
{
  g_return_if_fail (self != NULL);
  g_return_if_fail (workers >= 1 && workers <= 64 && ahead >= 1 && ahead <= 256);

  g_mutex_lock (&self->lock);
  if (self->active)
    {
      g_mutex_unlock (&self->lock);
      g_critical ("espalier_batcher_set_prefetch() must come before the first epoch");
      return;
    }
  /* every worker needs a slot of its own to fill */
  self->want_slots = MAX (ahead, workers) + 1;
  slots_free (self);
  workers_add (self, workers);
  g_mutex_unlock (&self->lock);
}

static void
shuffle_order (EspalierBatcher *self,
               guint            epoch)
{
  EsRng rng;

  if (self->n_rows == 0)
    return;
  memcpy (self->order, self->rows, sizeof (guint32) * self->n_rows);
  if (!self->shuffle)
    return;
  rng.state = es_hash64 (self->seed ^ 0x73687566ull) ^ es_hash64 (epoch);
  for (gsize i = self->n_rows; i > 1; i--)
    {
      gsize j = (gsize) (es_rng_next (&rng) % i);
      guint32 t = self->order[i - 1];

      self->order[i - 1] = self->order[j];
      self->order[j] = t;
    }
}

void
espalier_batcher_set_shard (EspalierBatcher *self,
                            guint            rank,
                            guint            ranks)
{
  g_return_if_fail (self != NULL);
  g_return_if_fail (ranks >= 1 && rank < ranks);

  g_mutex_lock (&self->lock);
  self->want_rank = rank;
  self->want_ranks = ranks;
  g_mutex_unlock (&self->lock);
}

void
espalier_batcher_start_epoch (EspalierBatcher *self,
                              guint            epoch)
{
  espalier_batcher_start_epoch_at (self, epoch, 0);
}

void
espalier_batcher_start_epoch_at (EspalierBatcher *self,
                                 guint            epoch,
                                 guint            position)
{
  guint first_batch;

  g_return_if_fail (self != NULL);

  position = MIN (position, self->n_rows);
  first_batch = position == self->n_rows ? self->n_batches : position / self->batch_size;
  g_mutex_lock (&self->lock);
  if (!self->prepared)
    {
      g_autoptr(GError) error = NULL;

      /* the caller did not ask: fail as g_new would */
      if (!slots_prepare (self, &error))
        g_error ("%s", error->message);
    }
  if (self->active && self->epoch == epoch && self->start_pos == position
      && self->rank == self->want_rank && self->ranks == self->want_ranks
      && self->next_take == first_batch && self->held < 0)
    {
      /* this very epoch, untouched: keep what the workers prepared */
      g_mutex_unlock (&self->lock);
      return;
    }
  self->generation++;
  while (self->filling > 0)
    g_cond_wait (&self->cond, &self->lock);
  shuffle_order (self, epoch);
  self->epoch = epoch;
  self->start_pos = position;
  self->rank = self->want_rank;
  self->ranks = self->want_ranks;
  for (guint s = 0; s < self->n_slots; s++)
    self->slots[s].index = -1;
  self->held = -1;
  self->next_fill = first_batch;
  self->next_take = first_batch;
  self->wait_seconds = 0;
  self->active = TRUE;
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);
}

const EspalierBatch *
espalier_batcher_next (EspalierBatcher *self)
{
  Slot *slot;

  g_return_val_if_fail (self != NULL, NULL);

  g_mutex_lock (&self->lock);
  if (!self->active)
    {
      g_mutex_unlock (&self->lock);
      g_critical ("espalier_batcher_next: call espalier_batcher_start_epoch first");
      return NULL;
    }
  if (self->held >= 0)
    {
      self->slots[self->held].index = -1;
      self->held = -1;
      self->freed_at = g_get_monotonic_time ();
      g_cond_broadcast (&self->cond);
    }
  if (self->next_take >= self->n_batches)
    {
      g_mutex_unlock (&self->lock);
      return NULL;
    }
  slot = &self->slots[self->next_take % self->n_slots];
  if (slot->index != (gint64) self->next_take)
    {
      gint64 t0 = g_get_monotonic_time ();

      while (slot->index != (gint64) self->next_take)
        g_cond_wait (&self->cond, &self->lock);
      self->wait_seconds += (g_get_monotonic_time () - t0) / 1e6;
    }
  self->held = (gint) (self->next_take % self->n_slots);
  self->next_take++;
  g_mutex_unlock (&self->lock);
  return &slot->batch;
}

guint
espalier_batcher_n_batches (EspalierBatcher *self)
{
  g_return_val_if_fail (self != NULL, 0);
  return self->n_batches;
}

double
espalier_batcher_wait_seconds (EspalierBatcher *self)
{
  double s;

  g_return_val_if_fail (self != NULL, 0);

  g_mutex_lock (&self->lock);
  s = self->wait_seconds;
  g_mutex_unlock (&self->lock);
  return s;
}

void
espalier_batcher_get_producer_seconds (EspalierBatcher *self,
                                       double          *produce,
                                       double          *wait)
{
  g_return_if_fail (self != NULL);

  g_mutex_lock (&self->lock);
  if (produce != NULL)
    *produce = self->produce_seconds;
  if (wait != NULL)
    *wait = self->producer_wait_seconds;
  g_mutex_unlock (&self->lock);
}

guint
espalier_batcher_get_workers (EspalierBatcher *self)
{
  g_return_val_if_fail (self != NULL, 0);
  return self->n_workers;
}

void
espalier_batcher_free (EspalierBatcher *self)
{
  if (self == NULL)
    return;

  g_mutex_lock (&self->lock);
  self->quit = TRUE;
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);
  for (guint w = 0; w < self->n_workers; w++)
    {
      g_thread_join (self->workers[w]->thread);
      g_free (self->workers[w]->scratch);
      g_free (self->workers[w]);
    }
  g_free (self->workers);

  g_mutex_clear (&self->lock);
  g_cond_clear (&self->cond);
  slots_free (self);
  g_free (self->rows);
  g_free (self->order);
  g_object_unref (self->ds);
  g_free (self);
}
