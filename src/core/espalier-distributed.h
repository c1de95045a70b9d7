/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-distributed.h: data-parallel training over MPI. Every process (rank) runs
 * the same EspalierTrainer on its own part of each global batch: the epoch's shuffled
 * order is the same on every rank (same seed), each global batch of N x B rows is cut
 * into N contiguous parts, each rank's batcher gathering, converting and augmenting
 * only its own (espalier_batcher_set_shard), and the gradients are averaged (weighted
 * by rows) with MPI_Iallreduce in buckets, started while backward still runs, before
 * the same optimizer step on every rank. So N ranks with batch B see the same rows per
 * step as one rank with batch N x B. Training and validation metrics and the test
 * evaluation are reduced across ranks. Rank 0 writes checkpoints (model, optimizer
 * state, step, epoch, position in the epoch; the batcher's randomness is
 * counter-based, so the seed and the position are its whole state), atomically; a run
 * resumes from one on any number of ranks.
 *
 * Where the gradients live, and what sums them (the first that applies; every rank
 * takes the same path: they agree with one small reduction at the run's first step):
 * - NCCL, when every rank trains on a CUDA device and can load it (espalier-nccl.h:
 *   "libnccl.so.2" at run time, never linked; ESPALIER_NCCL_LIBRARY names another
 *   file, ESPALIER_NCCL=0 turns it off): ncclAllReduce (fp32, sum) of each bucket in
 *   device memory, queued on the CUDA backend's stream after the kernels that wrote it.
 *   Rank 0 makes the unique id and sends it over MPI; if a rank cannot load NCCL or
 *   join the communicator, every rank falls back to MPI, and the run's stats say why
 *   (EspalierDistributedStats.reduction_note). NCCL wants one GPU per rank.
 * - MPI in place, when it can read the gradients: in host memory (the CPU backend), or
 *   in device memory (the CUDA backend) when the MPI library is CUDA-aware (Open MPI's
 *   MPIX_Query_cuda_support, asked at run time; ESPALIER_MPI_CUDA_AWARE=0 or 1
 *   overrides it).
 * - Otherwise staged: each bucket is downloaded into a host buffer (pinned,
 *   es_cuda_host_alloc, on CUDA), reduced there by MPI and uploaded back.
 *   ESPALIER_MPI_STAGE=1 forces that staging on any backend (to test it on the CPU),
 *   NCCL or not.
 * EspalierDistributedStats.reduction names the path taken; G_MESSAGES_DEBUG=Espalier
 * logs it on each rank.
 *
 * Every collective is non-blocking and waited for with a deadline (the collective
 * timeout): when it passes, the rank prints which collective hung and ends the whole
 * job with MPI_Abort, so a rank that died or hangs never leaves the others waiting.
 * NCCL's are waited for the same way (the stream polled, and ncclCommGetAsyncError),
 * the communicator aborted before the job ends; so is the joining of it
 * (ncclCommInitRank blocks until every rank has joined).
 *
 * Without MPI (meson -Dmpi=disabled, or no libopenmpi-dev) the API is here but
 * espalier_distributed_new fails with ESPALIER_ERROR_UNSUPPORTED.
 *
 * What else is synchronized:
 * - BatchNorm, when asked (espalier_distributed_set_sync_batchnorm, espalier-cli's
 *   --sync-batchnorm): the batch statistics of training are those of the global batch,
 *   each BatchNorm layer summing per channel the count, sum and sum of squares (then,
 *   backward, the two sums its input gradient needs) over the ranks with a blocking
 *   MPI_Allreduce of a few doubles (es_trainer_set_stat_reduce), so N ranks with batch B
 *   train as one rank with N x B also with BatchNorm, and the running statistics are
 *   the same on every rank. Off (the default, as PyTorch's DDP), each rank normalizes
 *   with its own rows' statistics and the running statistics of rank 0 are given to
 *   the others at the end of each epoch.
 * - A loss that turns NaN or infinite on one rank: no extra collective per step. That
 *   rank goes on through the step's gradient reduction with its gradients marked NaN
 *   (es-train.h), so every rank fails the same step; then one small reduction on that
 *   failure path tells them whose loss it was and where it went bad
 *   (espalier_distributed_agree_nonfinite), every rank goes back to the last good
 *   weights, and rank 0 alone says so.
 * - A failure of one rank's own pass over its share of rows outside the training step:
 *   the validation pass of each epoch (a NaN or infinite loss from that rank's rows, an
 *   allocation or the memory limit failing) and the test evaluation
 *   (espalier_distributed_evaluate). After its pass every rank joins one
 *   MPI_Allreduce of one int (the lowest rank that failed, or none; the only cost on
 *   the success path); when one did, that rank's error (domain, code, message up to
 *   1 KiB, cut before a whole character) is broadcast and every rank fails with it,
 *   prefixed "rank R: " (espalier_distributed_share_failure), shared: the trainer puts
 *   the last good weights back on every rank, rank 0 alone shows the error and the job
 *   ends normally. A rank whose device failed keeps its own error and ends the job, as
 *   in training.
 * - The same agreement, where one rank alone can fail outside the step: rank 0's
 *   checkpoint write (a read-only directory, a full disk; one MPI_Allreduce of one int
 *   at checkpoint steps only): training stops on every rank with rank 0's error and what
 *   the checkpoint file still holds (written atomically, a failed write leaves the last
 *   one whole), rather than going on without the checkpoints asked for; each gradual
 *   pruning event of a trainer's schedule (its allocations); and espalier-cli's saving
 *   of the model after the run (rank 0), which ends every rank with status 1 and a
 *   message that says where the last checkpoint is.
 * ESPALIER_TEST_NAN_INPUT=R:S (tests only) makes rank R's batch of step S start with a
 * NaN input (batches from host memory). ESPALIER_TEST_EVAL_FAIL (tests only): R:E makes
 * the first row of rank R's validation pass of epoch E a NaN input (batches from host
 * memory), R:E:alloc makes that pass fail as allocating its batches would (R:E:alloc:WHAT:
 * allocating WHAT, to try a long message), R:test makes rank R's test evaluation fail
 * so. */
#pragma once

#include <gio/gio.h>

#include "es-train.h"
#include "espalier-batcher.h"
#include "espalier-checkpoint.h"
#include "espalier-dataset.h"
#include "espalier-trainer.h"

G_BEGIN_DECLS

/* (EspalierDistributed is declared in espalier-trainer.h.) */

/* TRUE when this build has MPI. */
gboolean             espalier_distributed_available      (void);

/* Join the job: MPI_Init_thread (serialized: the trainer's worker thread makes the
 * calls) on the first call in the process. Started without mpirun, the process is a
 * job of one rank. Fails with ESPALIER_ERROR_UNSUPPORTED without MPI. */
EspalierDistributed *espalier_distributed_new            (GError              **error);
/* Wait (with the timeout) until every rank has got here, then MPI_Finalize. */
void                 espalier_distributed_free           (EspalierDistributed  *self);
/* Print "rank R of N: <error>" on standard error and end the whole job (MPI_Abort with
 * status 1): for a failure on one rank that the others cannot know about. */
void                 espalier_distributed_abort          (EspalierDistributed  *self,
                                                          const GError         *error) G_GNUC_NORETURN;

/* Collective, once where every rank passes (before training): whether every rank
 * reached it with ok. *show_error (may be NULL) tells a rank that failed whether to
 * show its error: rank 0 shows its own (the others most likely failed the same way and
 * stay quiet); the others show theirs only when rank 0 did not fail. */
gboolean             espalier_distributed_all_ok         (EspalierDistributed  *self,
                                                          gboolean              ok,
                                                          gboolean             *show_error);
/* Whether the last error this rank's run or collective calls returned came out of a
 * collective check, so that every rank got the same one (rank 0 alone need show it
 * and the job can end normally); otherwise it is this rank's alone
 * (espalier_distributed_abort). */
gboolean             espalier_distributed_error_is_shared (EspalierDistributed *self);

int                  espalier_distributed_rank           (EspalierDistributed  *self);
int                  espalier_distributed_size           (EspalierDistributed  *self);
/* Ranks on this machine (MPI_COMM_TYPE_SHARED), to share its cores among them. */
int                  espalier_distributed_local_size     (EspalierDistributed  *self);
/* This rank's place among them (0 .. local_size - 1): with the device left to us, rank
 * r of a machine trains on its GPU r modulo the machine's count. */
int                  espalier_distributed_local_rank     (EspalierDistributed  *self);

/* Seconds a collective may take before the job is ended (300; > 0). */
void                 espalier_distributed_set_timeout    (EspalierDistributed  *self,
                                                          double                seconds);
/* Gradient bytes per allreduce bucket (0, the default: a quarter of the model's
 * gradients, from 64 KiB to 4 MiB): layers are grouped, last first, until a bucket
 * holds at least this many; smaller buckets start sooner, larger ones pay the latency
 * less often. */
void                 espalier_distributed_set_bucket_bytes (EspalierDistributed *self,
                                                          gsize                 bytes);
/* Synchronized BatchNorm (see above; off by default), from the next run on. */
void                 espalier_distributed_set_sync_batchnorm (EspalierDistributed *self,
                                                          gboolean              on);
gboolean             espalier_distributed_get_sync_batchnorm (EspalierDistributed *self);
/* Rank 0 writes a checkpoint to path every `every` optimizer steps (0: never); when it
 * cannot, training stops on every rank alike with its error (above). */
void                 espalier_distributed_set_checkpoint (EspalierDistributed  *self,
                                                          const char           *path,
                                                          guint                 every);

/* (EspalierCheckpointInfo, where a checkpoint left off, is in espalier-checkpoint.h.) */

/* Collective: rank 0 reads the checkpoint at path and sends it to every rank; the next
 * run continues from it (espalier_distributed_begin_run checks that it fits the model
 * and the data). info (may be NULL) says where it left off. ESPALIER_ERROR_IO when rank
 * 0 cannot read it, ESPALIER_ERROR_FORMAT when it is not a whole Espalier checkpoint;
 * every rank gets the same error. */
gboolean             espalier_distributed_set_resume     (EspalierDistributed  *self,
                                                          const char           *path,
                                                          EspalierCheckpointInfo *info,
                                                          GError              **error);
/* For EspalierTrainer: func adds the state of the trainer's hooks (early stopping,
 * QAT ranges, gradual pruning) to each checkpoint rank 0 is about to write. */
typedef void (*EspalierCheckpointFillFunc) (EspalierCheckpoint *ck, gpointer user_data);
void                 espalier_distributed_set_checkpoint_fill (EspalierDistributed *self,
                                                          EspalierCheckpointFillFunc func,
                                                          gpointer              user_data);
/* The checkpoint the current run resumed from (after espalier_distributed_begin_run),
 * for the trainer to restore its hooks' state; NULL when it did not resume. */
const EspalierCheckpoint *espalier_distributed_get_resumed (EspalierDistributed *self);
/* The last checkpoint written by this process (rank 0), FALSE when none was. */
gboolean             espalier_distributed_get_last_checkpoint (EspalierDistributed *self,
                                                          EspalierCheckpointInfo *info);

/* Collective: metrics of model on rows (n_rows) of dataset, each rank evaluating its
 * contiguous share (espalier_evaluate) and the sums reduced; every rank gets the whole.
 * When a rank's share fails, every rank fails alike (espalier_distributed_share_failure). */
gboolean             espalier_distributed_evaluate       (EspalierDistributed  *self,
                                                          EsModel              *model,
                                                          EspalierDataset      *dataset,
                                                          const guint32        *rows,
                                                          guint                 n_rows,
                                                          EsLossKind            loss,
                                                          guint                 threads,
                                                          EspalierMetrics      *metrics,
                                                          GError              **error);

/* Time and rows of the last (or current) run, on this rank. */
typedef struct {
  guint   ranks;
  gint64  rows;            /* training rows this rank trained on */
  gint64  steps;           /* optimizer steps this run */
  double  seconds;         /* since the run began */
  double  comm_s;          /* waiting for reductions (gradients, metrics, checks) and
                            * staging gradients to and from the reduction buffers */
  double  exposed_s;       /* of which waiting for the gradient buckets after backward:
                            * the communication that backward did not hide */
  gint64  allreduce_bytes; /* gradient bytes this rank sent into allreduces */
  const char *reduction;   /* how the gradients were summed: "nccl", "cuda-aware mpi"
                            * (MPI on device memory), "staged" (through host buffers),
                            * "host" (MPI in place in host memory); "none" on one rank;
                            * NULL before the run's first step */
  const char *reduction_note; /* on CUDA, why NCCL was not used (NULL when it was, or off
                            * CUDA); valid until the next run or the end of the job */
} EspalierDistributedStats;

void                 espalier_distributed_get_stats      (EspalierDistributed  *self,
                                                          EspalierDistributedStats *stats);

/* ---- for EspalierTrainer (espalier_trainer_set_distributed) ----------------------
 * The trainer calls these from its worker; each rank's calls run in the same order. */

/* The seed of this rank's dropout masks: seed itself on rank 0, a hash of it and the
 * rank on the others, so that ranks do not drop the same units of their rows. */
guint64              espalier_distributed_rank_seed      (EspalierDistributed  *self,
                                                          guint64               seed);
/* Rows per step over all ranks for a per-rank batch. */
guint                espalier_distributed_global_batch   (EspalierDistributed  *self,
                                                          guint                 batch);
/* Collective: check that every rank has the same model, data and batch; install the
 * gradient reduction on tr; with a checkpoint to resume, load its parameters and
 * optimizer state into tr, its epoch records into history and say the epoch to start
 * from (*first_epoch; 1 otherwise). */
gboolean             espalier_distributed_begin_run      (EspalierDistributed  *self,
                                                          EsTrainer            *tr,
                                                          EsModel              *model,
                                                          GArray               *history,
                                                          guint                 n_train,
                                                          guint                 batch,
                                                          guint64               seed,
                                                          guint                *first_epoch,
                                                          GError              **error);
/* This rank's part of the next global batch of batcher (in epoch, 1-based), NULL at the
 * end of the epoch. On the epoch's first call it shards the batcher for this rank and
 * starts the epoch again (keeping what the batcher prepared when nothing changes), so
 * the trainer's batcher need not know about ranks. Rows a resumed run already trained
 * on are skipped; stats gets the epoch's reduced sums from the checkpoint. Valid until
 * the next call. */
const EspalierBatch *espalier_distributed_next           (EspalierDistributed  *self,
                                                          EspalierBatcher      *batcher,
                                                          guint                 epoch,
                                                          EsStepStats          *stats);
/* After a successful es_trainer_train_batch of that batch: counts it and writes a
 * checkpoint when one is due. */
gboolean             espalier_distributed_step_done      (EspalierDistributed  *self,
                                                          EsTrainer            *tr,
                                                          EsStepStats          *stats,
                                                          GError              **error);
/* Collective, at the end of an epoch's training pass: sum stats over the ranks, and
 * give every rank rank 0's buffers (BatchNorm running statistics, which each rank
 * updates from its own rows; checkpoints share them too), so validation sees one model. */
gboolean             espalier_distributed_end_epoch      (EspalierDistributed  *self,
                                                          EsTrainer            *tr,
                                                          EsStepStats          *stats,
                                                          GError              **error);
/* Collective, when es_trainer_train_batch failed with ES_ERR_NUMERIC in a run with a
 * gradient reduction (every rank fails that step alike, es-train.h): own says whether
 * this rank's loss went bad (es_trainer_numeric_was_own), failed that this rank failed
 * otherwise (its device: its error is its own), nan whether NaN (else infinite), layer
 * and what where (es_trainer_find_nonfinite; -1 and ES_NONFINITE_NONE when not own).
 * Returns the lowest rank whose own loss went bad or that failed (-1: none, the summed
 * gradients did) with *bad_failed, and its nan, layer and what in *bad_nan, *bad_layer,
 * *bad_what; the error made of them is shared (espalier_distributed_error_is_shared),
 * but on a rank that failed. */
int                  espalier_distributed_agree_nonfinite (EspalierDistributed *self,
                                                          gboolean              own,
                                                          gboolean              failed,
                                                          gboolean              nan,
                                                          int                   layer,
                                                          EsNonfiniteKind       what,
                                                          gboolean             *bad_failed,
                                                          gboolean             *bad_nan,
                                                          int                  *bad_layer,
                                                          EsNonfiniteKind      *bad_what);
/* Collective, after a pass each rank made over its own share (the validation pass, the
 * test evaluation): ok says whether this rank's succeeded, *error (error may be NULL)
 * why not, own whether that failure is this rank's device's. TRUE when every rank's
 * succeeded (one MPI_Allreduce of one int). Otherwise FALSE on every rank, with the
 * error of the lowest rank that failed (its domain, code and message, bounded),
 * prefixed "rank R: ", shared (espalier_distributed_error_is_shared); but a rank that
 * failed with own keeps its own error, not shared. */
gboolean             espalier_distributed_share_failure  (EspalierDistributed  *self,
                                                          gboolean              ok,
                                                          gboolean              own,
                                                          GError              **error);
/* For tests (ESPALIER_TEST_EVAL_FAIL, above), before this rank's validation pass of
 * epoch: 0, run it as it is; 1, evaluate its first row with a NaN input; -1, it has
 * failed as allocating its batches would (error set). */
int                  espalier_distributed_test_eval_fault (EspalierDistributed *self,
                                                          guint                 epoch,
                                                          GError              **error);
/* This rank's contiguous share [*first, *first + *count) of n rows. */
void                 espalier_distributed_shard          (EspalierDistributed  *self,
                                                          guint                 n,
                                                          guint                *first,
                                                          guint                *count);
/* Collective: metrics over every rank's share (loss and accuracy weighted by rows,
 * confusion matrices summed). */
gboolean             espalier_distributed_reduce_metrics (EspalierDistributed  *self,
                                                          EspalierMetrics      *metrics,
                                                          GError              **error);
/* Set the data-parallel fields of a progress record. */
void                 espalier_distributed_fill_progress  (EspalierDistributed  *self,
                                                          EspalierProgress     *progress);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (EspalierDistributed, espalier_distributed_free)

G_END_DECLS
