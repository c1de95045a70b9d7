/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-batcher.h: batches of a dataset's rows for training and evaluation. A
 * thread of its own shuffles (seeded, per epoch), gathers, converts uint8 to float
 * (x * scale + shift) and augments one batch ahead of the consumer (double
 * buffering), or more threads further ahead (espalier_batcher_set_prefetch); they
 * sleep on a condition variable, never spin.
 *
 * Dimension key: B = batch size, F = row size, T = targets. */
#pragma once

#include "espalier-dataset.h"
#include "espalier-split.h"

G_BEGIN_DECLS

typedef struct {
  guint         B;         /* rows in this batch; the last one of an epoch may be smaller */
  const float  *x;         /* (B, F) */
  const gint32 *labels;    /* (B) or NULL */
  const float  *targets;   /* (B, T) or NULL */
  const guint32 *rows;     /* (B) the dataset rows they came from */
  /* With espalier_batcher_set_keep_u8(): the uint8 rows, converted by the consumer as
   * x_u8 * scale + shift; x is then NULL. */
  const guint8  *x_u8;     /* (B, F) or NULL */
  float          scale, shift;
  /* The whole batch this one is a shard of (espalier_batcher_set_shard), or itself:
   * its first row's position in the epoch's order and its rows over every shard. */
  guint          position;
  guint          global_B;
  /* A shard with no rows of its own (a last batch with fewer rows than shards) holds
   * the whole batch's first row instead, so that its rank can still take part in the
   * step; that row counts for nothing. */
  gboolean       padding;
} EspalierBatch;

/* Augmentation, for images (rank 3) only except the noise, which applies to any
 * features. Random per row, deterministic in (seed, epoch, position). */
typedef struct {
  guint    shift_pixels;   /* shift by -k..k pixels in x and y, filling with raw 0 */
  gboolean hflip;          /* flip left-right with probability 1/2 */
  float    noise_std;      /* add N(0, noise_std) to the converted values */
} EspalierAugment;

typedef struct _EspalierBatcher EspalierBatcher;

/* A batcher over rows (n_rows, copied) of ds (referenced). shuffle FALSE keeps the
 * rows' order. augment NULL: none. What grows with the batch and the row is allocated
 * by espalier_batcher_prepare. */
EspalierBatcher     *espalier_batcher_new           (EspalierDataset       *ds,
                                                     const guint32         *rows,
                                                     guint                  n_rows,
                                                     guint                  batch_size,
                                                     gboolean               shuffle,
                                                     guint64                seed,
                                                     const EspalierAugment *augment);
/* Hand uint8 datasets over unconverted (batch->x_u8) when no augmentation needs
 * floats, so the compute thread converts them where they are used: a quarter of the
 * bytes cross between cores. Call before the first epoch. */
void                 espalier_batcher_set_keep_u8   (EspalierBatcher       *self,
                                                     gboolean               keep_u8);
/* Prepare batches on `workers` threads (1 by default) up to `ahead` batches ahead of
 * the one the consumer holds (1 by default), for a data pipeline slower than the
 * compute (heavy augmentation). The batches and their order are the same whatever the
 * setting. Call before the first epoch. */
void                 espalier_batcher_set_prefetch  (EspalierBatcher       *self,
                                                     guint                  workers,
                                                     guint                  ahead);
guint                espalier_batcher_get_workers   (EspalierBatcher       *self);
/* Data parallelism: cut every batch of batch_size rows into `ranks` contiguous shards
 * (rank r gets rows [G r / ranks, G (r + 1) / ranks) of a batch of G rows) and
 * gather, convert and augment only shard `rank`. The order and the augmentation are
 * those of the whole batch (the randomness goes by position in the epoch's order), so
 * the shards of every rank, put together, are the unsharded batch. (0, 1): no shards,
 * the default. Takes effect at the next start_epoch. */
void                 espalier_batcher_set_shard     (EspalierBatcher       *self,
                                                     guint                  rank,
                                                     guint                  ranks);
/* Allocates the batch buffers for the settings made so far (set_keep_u8,
 * set_prefetch): a slot of (batch_size, F) floats (and the uint8 rows, the labels, the
 * targets) for each batch in the ring, a scratch row for each thread, the epoch's order.
 * FALSE with ESPALIER_ERROR_MEMORY when they do not fit (espalier_try_alloc); the
 * batcher then holds none of them and can be freed, or prepared again. Call after the
 * setters and before the first epoch (a setter called later drops them again). When it
 * was not called, start_epoch prepares, and aborts as g_new() would on failure. */
gboolean             espalier_batcher_prepare       (EspalierBatcher       *self,
                                                     GError               **error);
/* Reshuffle with seed and epoch and start prefetching; an epoch in progress is
 * abandoned. */
void                 espalier_batcher_start_epoch   (EspalierBatcher       *self,
                                                     guint                  epoch);
/* The same, from row `position` of the epoch's order on (a resumed run): the batch
 * that holds it starts there, cut short, and the later batches are the usual ones.
 * Past the end, the epoch has no batches. Starting again the epoch just started, from
 * the same place with the same shards, before next() keeps the batches prepared. */
void                 espalier_batcher_start_epoch_at (EspalierBatcher      *self,
                                                     guint                  epoch,
                                                     guint                  position);
/* The next batch (this rank's shard of it when sharded), NULL at the end of the epoch.
 * The batch stays valid until the next call (or start_epoch, or free). */
const EspalierBatch *espalier_batcher_next          (EspalierBatcher       *self);
/* Batches of a whole epoch. */
guint                espalier_batcher_n_batches     (EspalierBatcher       *self);
/* Seconds next() spent waiting for data this epoch. */
double               espalier_batcher_wait_seconds  (EspalierBatcher       *self);
/* The producer side since the batcher was made, summed over its threads: seconds spent
 * preparing batches (gather, convert, augment) and seconds spent waiting for the
 * consumer to free a slot while batches were left to prepare (the data is ahead).
 * Either may be NULL. */
void                 espalier_batcher_get_producer_seconds (EspalierBatcher *self,
                                                            double          *produce,
                                                            double          *wait);
/* Stops and joins the thread, also in the middle of an epoch. */
void                 espalier_batcher_free          (EspalierBatcher       *self);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (EspalierBatcher, espalier_batcher_free)

G_END_DECLS
