/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-checkpoint.h: training checkpoints, the file a run resumes from. A
 * checkpoint holds everything a run needs to continue exactly as if it had not stopped:
 * the parameters, buffers (BatchNorm statistics) and optimizer state, where the run
 * stood (epoch, position in the epoch's shuffled order, optimizer step; the batcher's
 * randomness is counter-based, so the seed and the position are its whole state), the
 * epoch's training sums so far, the finished epochs' records, and the state of the
 * trainer's hooks: early stopping (best weights, best validation loss, epochs without
 * improvement), the input ranges quantization-aware training tracked, gradual
 * pruning's progress (events done, mask), and fp16 dynamic loss scaling's state (the
 * scale, the clean steps towards its next growth, the steps skipped).
 *
 * The file is safetensors (readable by other tools): tensors "params" (P), "buffers"
 * (Q, when the model has any), "optimizer.K" (P each, K < the optimizer's slots),
 * "early_stopping.best" (P + Q, when early stopping kept weights) and "pruning.mask" (P
 * bytes, U8, when the run prunes), and in the header's __metadata__ one string,
 * "espalier", holding JSON: format "espalier-checkpoint", version (2; version 1, which
 * data-parallel runs wrote before, reads as a checkpoint without hook state; a version
 * 2 checkpoint without "loss_scaler", written before it was kept, reads as one without
 * a scaler), the fields below and the SHA-256 of the tensors. Written atomically and durably
 * (espalier-save.h): after a crash the file is the previous checkpoint or the new one.
 *
 * Not here: when checkpoints are written (EspalierTrainer, espalier-distributed.c).
 *
 * Dimension key: P = parameters, Q = buffers, L = layers. */
#pragma once

#include <gio/gio.h>

#include "es-model.h"

G_BEGIN_DECLS

#define ESPALIER_CHECKPOINT_VERSION 2

/* Where a checkpoint left off. */
typedef struct {
  guint   epoch;        /* 1-based epoch it was written in */
  guint64 position;     /* rows of that epoch's shuffled order already trained on */
  gint64  step;         /* optimizer steps done */
  guint   ranks;        /* processes that wrote it (1 without MPI) */
  guint   batch;        /* rows per process per step then */
  guint64 seed;
} EspalierCheckpointInfo;

/* One gradual pruning event (the same fields as EspalierPruneEvent). */
typedef struct {
  gint64 step;
  double target;
  double sparsity;
} EspalierCheckpointPruneEvent;

typedef struct {
  EspalierCheckpointInfo info;
  char     *spec;          /* the model (espalier_model_to_spec) */
  gint64    n_params;      /* P */
  gint64    n_buffers;     /* Q */
  guint     n_train;       /* rows of the training split */
  double    loss_sum;      /* the epoch's training sums so far (over every process) */
  gint64    correct, rows;
  GArray   *history;       /* EspalierEpochRecord of the finished epochs */
  float    *params;        /* (P) */
  float    *buffers;       /* (Q), NULL when Q is 0 */
  int       n_slots;       /* optimizer state vectors, 0..2 */
  float    *slots;         /* (n_slots, P), NULL when none */

  /* early stopping */
  gboolean  have_best;     /* best holds the weights of the best epoch */
  double    best_val;      /* the best validation loss (INFINITY: none yet) */
  guint     best_epoch;
  guint     bad_epochs;    /* epochs since it improved */
  float    *best;          /* (P + Q) or NULL */

  /* quantization-aware training: the tracked input range of layer i when range_set[i] */
  guint     n_layers;      /* L, 0 without QAT */
  float    *range_lo, *range_hi;  /* (L) */
  gboolean *range_set;     /* (L) */

  /* gradual pruning */
  gint64    next_event;    /* the next event of the schedule to run (0 without) */
  GArray   *prune_events;  /* EspalierCheckpointPruneEvent done so far */
  guint8   *mask;          /* (P) 1 keep, 0 pruned, or NULL */

  /* fp16 dynamic loss scaling (es_trainer_get_loss_scaler); have_scaler FALSE: the
   * run did not scale, or the file is older, and a resumed run starts from the
   * configured initial scale */
  gboolean  have_scaler;
  float     loss_scale;    /* finite, > 0 */
  gint64    scale_clean;   /* clean steps in a row since the scale last changed */
  gint64    skipped_steps; /* steps skipped for overflowed gradients */
} EspalierCheckpoint;

/* An empty checkpoint (history and prune_events empty arrays, best_val INFINITY). */
EspalierCheckpoint *espalier_checkpoint_new        (void);
void                espalier_checkpoint_free       (EspalierCheckpoint  *ck);

/* Write ck to path atomically and durably. Refuses (ESPALIER_ERROR_NUMERIC) weights or
 * optimizer state that are not finite: a checkpoint is a state worth going back to. */
gboolean            espalier_checkpoint_save       (const EspalierCheckpoint *ck,
                                                    const char          *path,
                                                    GError             **error);
/* Read the checkpoint at path: ESPALIER_ERROR_IO when it cannot be read,
 * ESPALIER_ERROR_FORMAT (naming the file and the problem) when it is not a whole
 * Espalier checkpoint of a version this build reads (truncated, damaged: the SHA-256
 * does not match, tensors larger than the file holds, values that are not finite),
 * ESPALIER_ERROR_MEMORY when its tensors do not fit in memory. Nothing is allocated
 * for tensors before their sizes are checked against the file. */
EspalierCheckpoint *espalier_checkpoint_load       (const char          *path,
                                                    GError             **error);
/* The same from the bytes (len) of a file; path names it in messages. */
EspalierCheckpoint *espalier_checkpoint_parse      (const char          *path,
                                                    const guint8        *bytes,
                                                    gsize                len,
                                                    GError             **error);
/* Whether ck was written for model (the same layers, so the same parameters and
 * buffers); ESPALIER_ERROR_SHAPE naming both models when not. */
gboolean            espalier_checkpoint_fits_model (const EspalierCheckpoint *ck,
                                                    const EsModel       *model,
                                                    GError             **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (EspalierCheckpoint, espalier_checkpoint_free)

G_END_DECLS
