/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-distributed.c: data-parallel training over MPI (espalier-distributed.h):
 * the job, the bucketed gradient allreduce behind the engine's grad-reduce hook, the
 * shard of each global batch, reductions of metrics, the collective timeout, and
 * checkpoints.
 *
 * A checkpoint is a safetensors file (readable by other tools): the tensors "params"
 * (P), "buffers" (Q, when the model has any) and "optimizer.K" (P each, K < the
 * optimizer's slots: velocity, or Adam's first and second moments), and in the header's
 * __metadata__ one string, "espalier", holding JSON: format "espalier-checkpoint",
 * version, where the run stood (epoch, position in the epoch's order, optimizer step),
 * what it ran (ranks, per-rank batch, seed, rows of the training split, model spec),
 * the epoch's training sums so far over all ranks, the finished epochs' records, and
 * the SHA-256 of the tensors' floats.
 *
 * Dimension key: P = parameters, Q = buffers, N = ranks, G = rows of a global batch,
 * F = input floats per row, T = target floats per row. */
#include "config.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es-backend.h"
#include "espalier-distributed.h"
#include "espalier-error.h"

#ifdef ESPALIER_HAVE_MPI

#include <mpi.h>

#include "espalier-json-private.h"
#include "espalier-save.h"
#include "espalier-templates.h"

#define CHECKPOINT_FORMAT  "espalier-checkpoint"
#define CHECKPOINT_VERSION 1
/* The safetensors library refuses headers above 100 MB; so do we. */
#define MAX_HEADER_BYTES   (100u << 20)
/* Broadcasts go in pieces an int can count. */
#define BCAST_CHUNK        (1 << 30)

/* Gradient floats [lo, hi), reduced together once all its layers have reported. */
typedef struct {
  gint64 lo, hi;
  int    n_layers;
  int    layers_left;   /* this step */
} Bucket;

/* A checkpoint read for resuming. */
typedef struct {
  EspalierCheckpointInfo info;
  char    *spec;
  gint64   n_params, n_buffers;
  int      n_slots;
  guint    n_train;
  double   loss_sum;    /* the epoch's training sums so far, over every rank */
  gint64   correct, rows;
  GArray  *history;     /* EspalierEpochRecord of the finished epochs */
  float   *params;      /* (P) */
  float   *buffers;     /* (Q) */
  float   *slots;       /* (n_slots, P) */
} Checkpoint;

struct _EspalierDistributed
{
  MPI_Comm     comm;
  int          rank, size, local_size;
  double       timeout;
  gsize        bucket_bytes;
  char        *ck_path;
  guint        ck_every;
  gboolean     have_last;
  EspalierCheckpointInfo last;
  Checkpoint  *resume;          /* for the next run, or NULL */
  gboolean     shared_error;    /* the last error came out of a collective check */

  /* the current run */
  EsModel     *model;           /* borrowed */
  GArray      *history;         /* borrowed */
  guint        n_train, batch;
  guint64      seed;
  gint64       P;
  gint64       F, T;
  float       *host;            /* (P) the reduction buffer */
  Bucket      *buckets;         /* last layers first */
  int          n_buckets;
  int          next_bucket;     /* the next to start, this step */
  MPI_Request *reqs;            /* (n_buckets) */
  double       weight;          /* this rank's share of the rows of the current step */
  gboolean     even;            /* every rank has the same share this step */
  gboolean     in_place;        /* this step reduces in the gradient vector itself */
  EspalierBatch local;          /* this rank's part of the current global batch */
  gboolean     dummy;           /* it has no rows: one row trained with weight 0 */
  EsStepStats  stats_before;
  guint        epoch;
  guint64      epoch_pos;       /* rows of the epoch's order handed out so far */
  guint        skip_epoch;      /* resuming: skip skip_rows rows of this epoch */
  guint64      skip_rows;
  gboolean     add_stats;       /* resuming: the checkpoint's sums still to add (rank 0) */
  double       ck_loss_sum;
  gint64       ck_correct, ck_rows;
  gint64       steps_seen;      /* the trainer's step count after the last batch */

  /* measured, this run */
  double       t_begin;
  gint64       rows_trained, steps_run, bytes;
  double       comm_s, exposed_s;
};

static gboolean mpi_started;   /* by us: we finalize it */

/* ------------------------------------------------------------------------------ */
/* waiting with a deadline */

static void G_GNUC_NORETURN
end_job (EspalierDistributed *self, const char *message)
{
  g_printerr (_("Rank %d of %d: %s\n"), self->rank, self->size, message);
  fflush (stderr);
  MPI_Abort (self->comm, 1);
  abort ();   /* not reached: MPI_Abort does not return */
}

/* Wait for the n requests, ending the job when the timeout passes or MPI fails. what
 * names the collective for the message. Returns the seconds waited. */
static double
wait_all (EspalierDistributed *self, int n, MPI_Request *reqs, const char *what)
{
  double t0 = MPI_Wtime ();

  for (;;)
    {
      int done = 0, rc;
      double now;

      rc = MPI_Testall (n, reqs, &done, MPI_STATUSES_IGNORE);
      if (rc != MPI_SUCCESS)
        {
          char text[MPI_MAX_ERROR_STRING];
          int len = 0;
          g_autofree char *msg = NULL;

          MPI_Error_string (rc, text, &len);
          msg = g_strdup_printf (_("%s failed (%s): another rank has probably failed; ending "
                                   "the whole job"), what, text);
          end_job (self, msg);
        }
      if (done)
        break;
      now = MPI_Wtime ();
      if (now - t0 > self->timeout)
        {
          g_autofree char *msg = g_strdup_printf (
              _("%s did not finish within the collective timeout of %g s: another rank has "
                "failed, hangs or cannot be reached; ending the whole job"),
              what, self->timeout);
          end_job (self, msg);
        }
      /* Spin while the wait is short (a reduction in flight); then let the core go. */
      if (now - t0 < 0.05)
        sched_yield ();
      else
        g_usleep (1000);
    }
  return MPI_Wtime () - t0;
}

static void
allreduce_doubles (EspalierDistributed *self, double *v, int n, MPI_Op op, const char *what)
{
  MPI_Request req;

  MPI_Iallreduce (MPI_IN_PLACE, v, n, MPI_DOUBLE, op, self->comm, &req);
  self->comm_s += wait_all (self, 1, &req, what);
}

/* Whether every rank holds the same n values. */
static gboolean
all_agree (EspalierDistributed *self, const guint64 *v, int n, const char *what)
{
  g_autofree guint64 *both = g_new (guint64, 2 * n);
  MPI_Request req;

  for (int i = 0; i < n; i++)
    {
      both[i] = v[i];
      both[n + i] = ~v[i];   /* max of the complements: the complement of the min */
    }
  MPI_Iallreduce (MPI_IN_PLACE, both, 2 * n, MPI_UINT64_T, MPI_MAX, self->comm, &req);
  self->comm_s += wait_all (self, 1, &req, what);
  for (int i = 0; i < n; i++)
    if (both[i] != ~both[n + i])
      return FALSE;
  return TRUE;
}

/* FNV-1a over bytes. */
static guint64
hash_bytes (guint64 h, const void *data, gsize len)
{
  const guint8 *p = data;

  for (gsize i = 0; i < len; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

#define HASH_INIT 14695981039346656037ull

/* ------------------------------------------------------------------------------ */
/* the job */

gboolean
espalier_distributed_available (void)
{
  return TRUE;
}

EspalierDistributed *
espalier_distributed_new (GError **error)
{
  EspalierDistributed *self;
  int inited = 0, finalized = 0;
  MPI_Comm local;

  MPI_Finalized (&finalized);
  if (finalized)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED,
                   _("MPI has already been finalized in this process"));
      return NULL;
    }
  MPI_Initialized (&inited);
  if (!inited)
    {
      int provided = MPI_THREAD_SINGLE;

      if (MPI_Init_thread (NULL, NULL, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
        {
          g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED,
                       _("MPI could not start"));
          return NULL;
        }
      mpi_started = TRUE;
      if (provided < MPI_THREAD_SERIALIZED)
        g_warning ("MPI gives thread level %d, not MPI_THREAD_SERIALIZED: training runs on a "
                   "worker thread", provided);
    }
  self = g_new0 (EspalierDistributed, 1);
  MPI_Comm_dup (MPI_COMM_WORLD, &self->comm);
  /* Errors come back to wait_all, which ends the job with a message. */
  MPI_Comm_set_errhandler (self->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank (self->comm, &self->rank);
  MPI_Comm_size (self->comm, &self->size);
  MPI_Comm_split_type (self->comm, MPI_COMM_TYPE_SHARED, self->rank, MPI_INFO_NULL, &local);
  MPI_Comm_size (local, &self->local_size);
  MPI_Comm_free (&local);
  self->timeout = 300;
  return self;
}

static void
checkpoint_free (Checkpoint *ck)
{
  if (ck == NULL)
    return;
  g_free (ck->spec);
  if (ck->history != NULL)
    g_array_unref (ck->history);
  g_free (ck->params);
  g_free (ck->buffers);
  g_free (ck->slots);
  g_free (ck);
}

static void
run_clear (EspalierDistributed *self)
{
  g_clear_pointer (&self->host, g_free);
  g_clear_pointer (&self->buckets, g_free);
  g_clear_pointer (&self->reqs, g_free);
  self->n_buckets = 0;
  self->model = NULL;
  self->history = NULL;
}

void
espalier_distributed_free (EspalierDistributed *self)
{
  MPI_Request req;

  if (self == NULL)
    return;
  /* MPI_Finalize waits for every rank without a deadline: wait here with one. */
  MPI_Ibarrier (self->comm, &req);
  wait_all (self, 1, &req, _("The final barrier"));
  run_clear (self);
  checkpoint_free (self->resume);
  g_free (self->ck_path);
  MPI_Comm_free (&self->comm);
  g_free (self);
  if (mpi_started)
    {
      MPI_Finalize ();
      mpi_started = FALSE;
    }
}

void
espalier_distributed_abort (EspalierDistributed *self, const GError *error)
{
  end_job (self, error->message);
}

gboolean
espalier_distributed_all_ok (EspalierDistributed *self, gboolean ok, gboolean *show_error)
{
  /* failed ranks, and whether rank 0 failed */
  double v[2] = { ok ? 0 : 1, !ok && self->rank == 0 ? 1 : 0 };

  allreduce_doubles (self, v, 2, MPI_SUM, _("The check that every rank is ready"));
  if (show_error != NULL)
    *show_error = !ok && (self->rank == 0 || v[1] == 0);
  return v[0] == 0;
}

gboolean
espalier_distributed_error_is_shared (EspalierDistributed *self)
{
  return self->shared_error;
}

int
espalier_distributed_rank (EspalierDistributed *self)
{
  return self->rank;
}

int
espalier_distributed_size (EspalierDistributed *self)
{
  return self->size;
}

int
espalier_distributed_local_size (EspalierDistributed *self)
{
  return self->local_size;
}

void
espalier_distributed_set_timeout (EspalierDistributed *self, double seconds)
{
  g_return_if_fail (seconds > 0);
  self->timeout = seconds;
}

void
espalier_distributed_set_bucket_bytes (EspalierDistributed *self, gsize bytes)
{
  self->bucket_bytes = bytes;
}

void
espalier_distributed_set_checkpoint (EspalierDistributed *self, const char *path, guint every)
{
  g_free (self->ck_path);
  self->ck_path = g_strdup (path);
  self->ck_every = every;
}

gboolean
espalier_distributed_get_last_checkpoint (EspalierDistributed *self,
                                          EspalierCheckpointInfo *info)
{
  if (self->have_last && info != NULL)
    *info = self->last;
  return self->have_last;
}

void
espalier_distributed_get_stats (EspalierDistributed *self, EspalierDistributedStats *stats)
{
  memset (stats, 0, sizeof *stats);
  stats->ranks = (guint) self->size;
  stats->rows = self->rows_trained;
  stats->steps = self->steps_run;
  stats->seconds = self->t_begin > 0 ? MPI_Wtime () - self->t_begin : 0;
  stats->comm_s = self->comm_s;
  stats->exposed_s = self->exposed_s;
  stats->allreduce_bytes = self->bytes;
}

guint
espalier_distributed_global_batch (EspalierDistributed *self, guint batch)
{
  return batch * (guint) self->size;
}

guint64
espalier_distributed_rank_seed (EspalierDistributed *self, guint64 seed)
{
  return self->rank == 0 ? seed : seed ^ es_hash64 (0x72616e6bull + (guint64) self->rank);
}

void
espalier_distributed_shard (EspalierDistributed *self, guint n, guint *first, guint *count)
{
  guint64 a = (guint64) n * (guint64) self->rank / (guint64) self->size;
  guint64 b = (guint64) n * (guint64) (self->rank + 1) / (guint64) self->size;

  *first = (guint) a;
  *count = (guint) (b - a);
}

void
espalier_distributed_fill_progress (EspalierDistributed *self, EspalierProgress *progress)
{
  double s = self->t_begin > 0 ? MPI_Wtime () - self->t_begin : 0;

  progress->ranks = (guint) self->size;
  progress->rank_samples_per_s = s > 0 ? (double) self->rows_trained / s : 0;
  progress->comm_s = self->comm_s;
}

/* ------------------------------------------------------------------------------ */
/* the gradient reduction (the engine's hook) */

/* Start bucket k. On a backend whose memory is the host's, when every rank has the same
 * share of the step's rows, the sum runs in place in the gradient vector (the range is
 * final; finish scales the sum by the share); otherwise the bucket is copied to the
 * host buffer and scaled by this rank's share first. */
static void
post_bucket (EspalierDistributed *self, EsBackend *be, const float *grads, int k)
{
  Bucket *b = &self->buckets[k];
  gint64 n = b->hi - b->lo;
  float *h = self->host + b->lo;

  if (k == 0)
    self->in_place = be->iface->host_memory && self->even;
  if (self->in_place)
    {
      MPI_Iallreduce (MPI_IN_PLACE, (float *) grads + b->lo, (int) n, MPI_FLOAT, MPI_SUM,
                      self->comm, &self->reqs[k]);
      self->bytes += n * (gint64) sizeof (float);
      return;
    }
  be->iface->download (be, h, grads + b->lo, (size_t) n * sizeof (float));
  if (self->weight != 1.0)
    {
      float w = (float) self->weight;

      for (gint64 i = 0; i < n; i++)
        h[i] *= w;
    }
  MPI_Iallreduce (MPI_IN_PLACE, h, (int) n, MPI_FLOAT, MPI_SUM, self->comm, &self->reqs[k]);
  self->bytes += n * (gint64) sizeof (float);
}

/* Backward finished the gradients [offset, offset + count): start every bucket that is
 * now whole, in order. */
static void
on_bucket_ready (void *user, EsBackend *be, const float *grads, int64_t offset, int64_t count)
{
  EspalierDistributed *self = user;
  double t0 = MPI_Wtime ();
  int done;

  for (int k = self->next_bucket; k < self->n_buckets; k++)
    if (offset >= self->buckets[k].lo && offset < self->buckets[k].hi)
      {
        self->buckets[k].layers_left--;
        break;
      }
  while (self->next_bucket < self->n_buckets
         && self->buckets[self->next_bucket].layers_left <= 0)
    post_bucket (self, be, grads, self->next_bucket++);
  /* Open MPI moves messages only inside its calls: a test lets the posted ones on. */
  if (self->next_bucket > 0)
    MPI_Testall (self->next_bucket, self->reqs, &done, MPI_STATUSES_IGNORE);
  self->comm_s += MPI_Wtime () - t0;
}

static bool
on_finish (void *user, EsBackend *be, float *grads, int64_t n, int64_t rows, EsError *err)
{
  EspalierDistributed *self = user;
  double t0 = MPI_Wtime (), waited;

  /* buckets whose layers did not all report (none should) go now, in order */
  while (self->next_bucket < self->n_buckets)
    post_bucket (self, be, grads, self->next_bucket++);
  waited = wait_all (self, self->n_buckets, self->reqs, _("The gradient allreduce"));
  self->exposed_s += waited;
  if (self->in_place)
    be->iface->scale (be, grads, (float) self->weight, n);
  else
    be->iface->upload (be, grads, self->host, (size_t) n * sizeof (float));
  for (int k = 0; k < self->n_buckets; k++)
    self->buckets[k].layers_left = self->buckets[k].n_layers;
  self->next_bucket = 0;
  self->comm_s += MPI_Wtime () - t0;
  return true;
}

/* Layers with parameters, last first, grouped into buckets of at least bucket_bytes
 * (0: a quarter of the gradients, from 64 KiB to 4 MiB). */
static void
plan_buckets (EspalierDistributed *self, const EsModel *model)
{
  int n_layers = es_model_n_layers (model), n = 0;
  gint64 bytes = self->bucket_bytes > 0
                 ? (gint64) self->bucket_bytes
                 : CLAMP (es_model_n_params (model) * (gint64) sizeof (float) / 4,
                          64 << 10, 4 << 20);
  gint64 floats = MAX (bytes / (gint64) sizeof (float), 1);

  self->buckets = g_new0 (Bucket, MAX (n_layers, 1));
  for (int i = n_layers - 1; i >= 0; i--)
    {
      const EsLayerInfo *l = es_model_layer (model, i);
      gint64 lo;
      Bucket *b;

      if (l->n_params <= 0)
        continue;
      lo = es_model_tensor (model, l->first_tensor)->offset;
      if (n == 0 || self->buckets[n - 1].hi - self->buckets[n - 1].lo >= floats)
        {
          b = &self->buckets[n++];
          b->hi = lo + l->n_params;
        }
      else
        b = &self->buckets[n - 1];
      b->lo = lo;
      b->n_layers++;
      b->layers_left = b->n_layers;
    }
  self->n_buckets = n;
  self->reqs = g_new (MPI_Request, MAX (n, 1));
  for (int k = 0; k < MAX (n, 1); k++)
    self->reqs[k] = MPI_REQUEST_NULL;
}

/* ------------------------------------------------------------------------------ */
/* checkpoints: writing (rank 0) */

static void
add_tensor (JsonBuilder *b, const char *name, gint64 n, gint64 *offset)
{
  json_builder_set_member_name (b, name);
  json_builder_begin_object (b);
  espalier_json_add_string (b, "dtype", "F32");
  json_builder_set_member_name (b, "shape");
  json_builder_begin_array (b);
  json_builder_add_int_value (b, n);
  json_builder_end_array (b);
  json_builder_set_member_name (b, "data_offsets");
  json_builder_begin_array (b);
  json_builder_add_int_value (b, *offset);
  json_builder_add_int_value (b, *offset + n * 4);
  json_builder_end_array (b);
  json_builder_end_object (b);
  *offset += n * 4;
}

static char *
sha256_floats (const float *const *arrays, const gint64 *sizes, int n)
{
  GChecksum *sum = g_checksum_new (G_CHECKSUM_SHA256);
  char *hex;

  for (int i = 0; i < n; i++)
    if (sizes[i] > 0)
      g_checksum_update (sum, (const guchar *) arrays[i], sizes[i] * (gssize) sizeof (float));
  hex = g_strdup (g_checksum_get_string (sum));
  g_checksum_free (sum);
  return hex;
}

static gboolean
write_checkpoint (EspalierDistributed *self, EsTrainer *tr, const EspalierCheckpointInfo *info,
                  const double *sums, GError **error)
{
  EsModel *m = self->model;
  gint64 P = es_model_n_params (m), Q = es_model_n_buffers (m), step = 0, offset = 0;
  int n_slots = es_trainer_state_slots (tr);
  g_autofree float *slots = g_new (float, (gsize) MAX (n_slots, 1) * (gsize) P);
  const float *arrays[4] = { es_model_params_const (m), es_model_buffers_const (m), slots,
                             slots + P };
  gint64 sizes[4] = { P, Q, n_slots >= 1 ? P : 0, n_slots >= 2 ? P : 0 };
  g_autofree char *spec = espalier_model_to_spec (m);
  g_autofree char *sha = NULL, *state_text = NULL, *header_text = NULL;
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autoptr(JsonNode) state = NULL, header = NULL;
  EspalierAtomicFile af = ESPALIER_ATOMIC_FILE_INIT;
  GString *hs;
  guint8 len_le[8];
  gboolean ok;

  es_trainer_get_state (tr, &step, slots);
  sha = sha256_floats (arrays, sizes, 4);

  json_builder_begin_object (b);
  espalier_json_add_string (b, "format", CHECKPOINT_FORMAT);
  espalier_json_add_int (b, "version", CHECKPOINT_VERSION);
  espalier_json_add_int (b, "epoch", info->epoch);
  espalier_json_add_u64 (b, "position", info->position);
  espalier_json_add_int (b, "step", step);
  espalier_json_add_int (b, "ranks", info->ranks);
  espalier_json_add_int (b, "batch", info->batch);
  espalier_json_add_u64 (b, "seed", info->seed);
  espalier_json_add_int (b, "n_train", self->n_train);
  espalier_json_add_string (b, "model", spec);
  espalier_json_add_int (b, "n_params", P);
  espalier_json_add_int (b, "n_buffers", Q);
  espalier_json_add_int (b, "optimizer_slots", n_slots);
  json_builder_set_member_name (b, "epoch_sums");
  json_builder_begin_object (b);
  espalier_json_add_double (b, "loss_sum", sums[0]);
  espalier_json_add_int (b, "correct", (gint64) sums[1]);
  espalier_json_add_int (b, "rows", (gint64) sums[2]);
  json_builder_end_object (b);
  json_builder_set_member_name (b, "history");
  espalier_json_build_history (b, self->history);
  espalier_json_add_string (b, "sha256", sha);
  json_builder_end_object (b);
  state = json_builder_get_root (b);
  state_text = espalier_json_to_text (state, FALSE);

  json_builder_reset (b);
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "__metadata__");
  json_builder_begin_object (b);
  espalier_json_add_string (b, "espalier", state_text);
  json_builder_end_object (b);
  add_tensor (b, "params", P, &offset);
  if (Q > 0)
    add_tensor (b, "buffers", Q, &offset);
  for (int k = 0; k < n_slots; k++)
    {
      g_autofree char *name = g_strdup_printf ("optimizer.%d", k);

      add_tensor (b, name, P, &offset);
    }
  json_builder_end_object (b);
  header = json_builder_get_root (b);
  header_text = espalier_json_to_text (header, FALSE);
  hs = g_string_new (header_text);
  while (hs->len % 8 != 0)
    g_string_append_c (hs, ' ');
  for (int i = 0; i < 8; i++)
    len_le[i] = (guint8) ((guint64) hs->len >> (8 * i));

  ok = espalier_atomic_open (&af, self->ck_path, error)
       && espalier_atomic_write (&af, len_le, 8, NULL, error)
       && espalier_atomic_write (&af, hs->str, hs->len, NULL, error);
  for (int i = 0; i < 4 && ok; i++)
    if (sizes[i] > 0)
      ok = espalier_atomic_write_floats (&af, arrays[i], sizes[i], NULL, error);
  ok = ok && espalier_atomic_sync (&af, error) && espalier_atomic_commit (&af, error);
  espalier_atomic_clear (&af);
  g_string_free (hs, TRUE);
  if (!ok)
    g_prefix_error (error, _("Cannot write the checkpoint: "));
  return ok;
}

/* Collective: every rank takes rank 0's buffers (BatchNorm running statistics, which
 * each rank updates from its own rows), so that evaluation and checkpoints see the same
 * model everywhere. */
static void
share_buffers (EspalierDistributed *self, EsTrainer *tr)
{
  gint64 Q = es_model_n_buffers (self->model);
  float *buf = es_model_buffers (self->model);

  if (Q == 0 || self->size == 1)
    return;
  es_trainer_sync (tr);
  for (gint64 off = 0; off < Q; off += BCAST_CHUNK / 4)
    {
      MPI_Request req;

      MPI_Ibcast (buf + off, (int) MIN (Q - off, BCAST_CHUNK / 4), MPI_FLOAT, 0, self->comm,
                  &req);
      self->comm_s += wait_all (self, 1, &req, _("Sharing the BatchNorm statistics"));
    }
  es_trainer_reload_buffers (tr);
}

/* Collective, at a due step: the epoch's sums so far, a check that the ranks still hold
 * the same weights, and rank 0 writes. */
static gboolean
checkpoint (EspalierDistributed *self, EsTrainer *tr, const EsStepStats *stats, GError **error)
{
  double sums[3] = { stats->loss_sum, stats->correct, stats->rows };
  EspalierCheckpointInfo info = {
    .epoch = self->epoch, .position = self->epoch_pos, .step = es_trainer_step_count (tr),
    .ranks = (guint) self->size, .batch = self->batch, .seed = self->seed,
  };
  guint64 h;

  allreduce_doubles (self, sums, 3, MPI_SUM, _("The checkpoint's sum of the training loss"));
  share_buffers (self, tr);
  es_trainer_sync (tr);
  h = hash_bytes (HASH_INIT, es_model_params_const (self->model),
                  (gsize) es_model_n_params (self->model) * sizeof (float));
  if (!all_agree (self, &h, 1, _("The weight check")))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC,
                   _("The ranks' weights have drifted apart by step %lld (the MPI library's "
                     "sums differ between ranks); no checkpoint was written"),
                   (long long) info.step);
      self->shared_error = TRUE;
      return FALSE;
    }
  if (self->rank != 0)
    return TRUE;
  if (!write_checkpoint (self, tr, &info, sums, error))
    return FALSE;
  self->last = info;
  self->have_last = TRUE;
  return TRUE;
}

/* ------------------------------------------------------------------------------ */
/* checkpoints: reading (every rank, the bytes rank 0 read) */

static JsonObject *
tensor_entry (EspalierReader *r, JsonObject *header, const char *name, gint64 n,
              gsize data_len, gint64 *start)
{
  JsonObject *t = espalier_reader_object (r, header, "", name);
  JsonArray *shape, *offs;
  g_autofree char *dtype = NULL;

  if (t == NULL)
    return NULL;
  dtype = espalier_reader_string (r, t, name, "dtype", FALSE);
  shape = espalier_reader_array (r, t, name, "shape", FALSE);
  offs = espalier_reader_array (r, t, name, "data_offsets", FALSE);
  if (r->error != NULL)
    return NULL;
  if (g_strcmp0 (dtype, "F32") != 0 || json_array_get_length (shape) != 1
      || json_array_get_int_element (shape, 0) != n || json_array_get_length (offs) != 2)
    {
      espalier_reader_fail (r, _("the tensor “%s” is not %lld float32 values"), name,
                            (long long) n);
      return NULL;
    }
  *start = json_array_get_int_element (offs, 0);
  if (*start < 0 || json_array_get_int_element (offs, 1) != *start + n * 4
      || (guint64) (*start + n * 4) > data_len)
    {
      espalier_reader_fail (r, _("the tensor “%s” lies outside the file's data"), name);
      return NULL;
    }
  return t;
}

static Checkpoint *
parse_checkpoint (const char *path, const guint8 *bytes, gsize len, GError **error)
{
  EspalierReader r = { path, NULL };
  g_autoptr(JsonParser) hparser = json_parser_new ();
  g_autoptr(JsonParser) sparser = json_parser_new ();
  Checkpoint *ck = g_new0 (Checkpoint, 1);
  JsonObject *header = NULL, *meta = NULL, *state = NULL, *sums;
  g_autofree char *state_text = NULL, *sha = NULL, *want = NULL;
  guint64 hlen = 0;
  gint64 v = 0, start = 0;
  const guint8 *data;
  gsize data_len;

  for (int i = 0; i < 8 && len >= 8; i++)
    hlen |= (guint64) bytes[i] << (8 * i);
  if (len < 8 || hlen > MAX_HEADER_BYTES || hlen > len - 8)
    {
      espalier_reader_fail (&r, _("it is %llu bytes, not a safetensors file"),
                            (unsigned long long) len);
      goto fail;
    }
  header = espalier_reader_parse (&r, hparser, (const char *) bytes + 8, (gsize) hlen);
  if (header != NULL)
    meta = espalier_reader_object (&r, header, "", "__metadata__");
  if (meta != NULL)
    state_text = espalier_reader_string (&r, meta, "__metadata__", "espalier", FALSE);
  if (state_text != NULL)
    state = espalier_reader_parse (&r, sparser, state_text, strlen (state_text));
  if (state == NULL)
    goto fail;
  espalier_reader_format (&r, state, CHECKPOINT_FORMAT, CHECKPOINT_VERSION);
  if (espalier_reader_int (&r, state, "", "epoch", 1, G_MAXUINT, &v))
    ck->info.epoch = (guint) v;
  espalier_reader_u64 (&r, state, "", "position", &ck->info.position);
  espalier_reader_int (&r, state, "", "step", 0, G_MAXINT64, &ck->info.step);
  espalier_reader_uint (&r, state, "", "ranks", &ck->info.ranks);
  espalier_reader_uint (&r, state, "", "batch", &ck->info.batch);
  espalier_reader_u64 (&r, state, "", "seed", &ck->info.seed);
  espalier_reader_uint (&r, state, "", "n_train", &ck->n_train);
  ck->spec = espalier_reader_string (&r, state, "", "model", FALSE);
  espalier_reader_int (&r, state, "", "n_params", 1, G_MAXINT32, &ck->n_params);
  espalier_reader_int (&r, state, "", "n_buffers", 0, G_MAXINT32, &ck->n_buffers);
  espalier_reader_int32 (&r, state, "", "optimizer_slots", 0, 2, &ck->n_slots);
  sums = espalier_reader_object (&r, state, "", "epoch_sums");
  if (sums != NULL)
    {
      espalier_reader_double (&r, sums, "epoch_sums", "loss_sum", FALSE, 0, G_MAXDOUBLE,
                              &ck->loss_sum);
      espalier_reader_int (&r, sums, "epoch_sums", "correct", 0, G_MAXINT64, &ck->correct);
      espalier_reader_int (&r, sums, "epoch_sums", "rows", 0, G_MAXINT64, &ck->rows);
    }
  ck->history = g_array_new (FALSE, TRUE, sizeof (EspalierEpochRecord));
  espalier_reader_history (&r, state, "", "history", ck->history);
  want = espalier_reader_string (&r, state, "", "sha256", FALSE);
  if (r.error != NULL)
    goto fail;
  if (ck->info.position > ck->n_train)
    {
      espalier_reader_fail (&r, _("its position %llu lies beyond the %u training rows"),
                            (unsigned long long) ck->info.position, ck->n_train);
      goto fail;
    }

  data = bytes + 8 + hlen;
  data_len = len - 8 - (gsize) hlen;
  ck->params = g_new (float, ck->n_params);
  ck->buffers = g_new (float, MAX (ck->n_buffers, 1));
  ck->slots = g_new (float, (gsize) MAX (ck->n_slots, 1) * (gsize) ck->n_params);
  if (tensor_entry (&r, header, "params", ck->n_params, data_len, &start))
    espalier_floats_from_le (ck->params, data + start, ck->n_params);
  if (ck->n_buffers > 0 && tensor_entry (&r, header, "buffers", ck->n_buffers, data_len, &start))
    espalier_floats_from_le (ck->buffers, data + start, ck->n_buffers);
  for (int k = 0; k < ck->n_slots; k++)
    {
      g_autofree char *name = g_strdup_printf ("optimizer.%d", k);

      if (tensor_entry (&r, header, name, ck->n_params, data_len, &start))
        espalier_floats_from_le (ck->slots + (gsize) k * (gsize) ck->n_params, data + start,
                                 ck->n_params);
    }
  if (r.error != NULL)
    goto fail;
  {
    const float *arrays[4] = { ck->params, ck->buffers, ck->slots, ck->slots + ck->n_params };
    gint64 sizes[4] = { ck->n_params, ck->n_buffers, ck->n_slots >= 1 ? ck->n_params : 0,
                        ck->n_slots >= 2 ? ck->n_params : 0 };

    sha = sha256_floats (arrays, sizes, 4);
  }
  if (g_strcmp0 (sha, want) != 0)
    {
      espalier_reader_fail (&r, _("its tensors do not match their SHA-256: the file is damaged"));
      goto fail;
    }
  return ck;

fail:
  g_propagate_error (error, r.error);
  checkpoint_free (ck);
  return NULL;
}

static gboolean
bcast_bytes (EspalierDistributed *self, guint8 *data, gint64 len)
{
  for (gint64 off = 0; off < len; off += BCAST_CHUNK)
    {
      MPI_Request req;

      MPI_Ibcast (data + off, (int) MIN (len - off, BCAST_CHUNK), MPI_BYTE, 0, self->comm, &req);
      self->comm_s += wait_all (self, 1, &req, _("Sending the checkpoint"));
    }
  return TRUE;
}

gboolean
espalier_distributed_set_resume (EspalierDistributed    *self,
                                 const char             *path,
                                 EspalierCheckpointInfo *info,
                                 GError                **error)
{
  g_autofree char *contents = NULL;
  g_autoptr(GError) local = NULL;
  gsize len = 0;
  gint64 n = -1;
  MPI_Request req;
  Checkpoint *ck;

  self->shared_error = TRUE;   /* every rank fails alike below */
  if (self->rank == 0)
    {
      if (g_file_get_contents (path, &contents, &len, &local))
        n = (gint64) len;
    }
  MPI_Ibcast (&n, 1, MPI_INT64_T, 0, self->comm, &req);
  self->comm_s += wait_all (self, 1, &req, _("Sending the checkpoint"));
  if (n < 0)
    {
      if (local != NULL)
        g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_IO, _("Cannot resume: %s"),
                     local->message);
      else
        g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_IO,
                     _("Cannot resume: rank 0 could not read %s"), path);
      return FALSE;
    }
  if (self->rank != 0)
    contents = g_malloc (MAX (n, 1));
  bcast_bytes (self, (guint8 *) contents, n);
  ck = parse_checkpoint (path, (const guint8 *) contents, (gsize) n, error);
  if (ck == NULL)
    {
      g_prefix_error (error, _("Cannot resume: "));
      return FALSE;
    }
  checkpoint_free (self->resume);
  self->resume = ck;
  if (info != NULL)
    *info = ck->info;
  self->shared_error = FALSE;
  return TRUE;
}

/* ------------------------------------------------------------------------------ */
/* the run */

gboolean
espalier_distributed_begin_run (EspalierDistributed  *self,
                                EsTrainer            *tr,
                                EsModel              *model,
                                GArray               *history,
                                guint                 n_train,
                                guint                 batch,
                                guint64               seed,
                                guint                *first_epoch,
                                GError              **error)
{
  g_autofree char *spec = espalier_model_to_spec (model);
  EsShape in = es_model_input_shape (model), out = es_model_output_shape (model);
  Checkpoint *ck = self->resume;
  guint64 v[7];

  run_clear (self);
  *first_epoch = 1;
  self->shared_error = TRUE;   /* the ranks agree below, so they fail alike */
  /* Every rank must train the same model on the same order with the same batch. */
  v[0] = (guint64) es_model_n_params (model);
  v[1] = (guint64) es_model_n_buffers (model);
  v[2] = n_train;
  v[3] = batch;
  v[4] = seed;
  v[5] = hash_bytes (HASH_INIT, spec, strlen (spec));
  v[6] = hash_bytes (hash_bytes (HASH_INIT, es_model_params_const (model),
                                 (gsize) v[0] * sizeof (float)),
                     es_model_buffers_const (model), (gsize) v[1] * sizeof (float));
  if (!all_agree (self, v, G_N_ELEMENTS (v), _("The check that the ranks agree")))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("The ranks do not train the same way: their model, initial weights, "
                     "training rows, batch size or seed differ. Start every rank with the same "
                     "command and data"));
      return FALSE;
    }

  if (ck != NULL)
    {
      EsError es = { 0 };

      if (g_strcmp0 (ck->spec, spec) != 0 || ck->n_params != es_model_n_params (model)
          || ck->n_buffers != es_model_n_buffers (model))
        {
          g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT,
                       _("Cannot resume: the checkpoint holds the model %s, not %s"), ck->spec,
                       spec);
          return FALSE;
        }
      if (ck->n_slots != es_trainer_state_slots (tr))
        {
          g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT,
                       _("Cannot resume: the checkpoint was written with another optimizer "
                         "(%d state vectors, this one has %d)"),
                       ck->n_slots, es_trainer_state_slots (tr));
          return FALSE;
        }
      if (ck->info.seed != seed || ck->n_train != n_train)
        {
          g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                       _("Cannot resume: the checkpoint was written with seed %llu on %u "
                         "training rows, this run has seed %llu and %u rows: give the same "
                         "--seed and data"),
                       (unsigned long long) ck->info.seed, ck->n_train,
                       (unsigned long long) seed, n_train);
          return FALSE;
        }
      memcpy (es_model_params (model), ck->params, (gsize) ck->n_params * sizeof (float));
      memcpy (es_model_buffers (model), ck->buffers, (gsize) ck->n_buffers * sizeof (float));
      es_trainer_reload (tr, true);
      if (!es_trainer_set_state (tr, ck->info.step, ck->slots, &es))
        {
          espalier_error_from_es (error, &es, _("Cannot resume"));
          return FALSE;
        }
      g_array_append_vals (history, ck->history->data, ck->history->len);
      *first_epoch = ck->info.epoch;
      self->skip_epoch = ck->info.epoch;
      self->skip_rows = ck->info.position;
      self->add_stats = self->rank == 0;
      self->ck_loss_sum = ck->loss_sum;
      self->ck_correct = ck->correct;
      self->ck_rows = ck->rows;
      checkpoint_free (g_steal_pointer (&self->resume));
    }
  else
    {
      self->skip_epoch = 0;
      self->skip_rows = 0;
      self->add_stats = FALSE;
    }

  self->model = model;
  self->history = history;
  self->n_train = n_train;
  self->batch = batch;
  self->seed = seed;
  self->P = es_model_n_params (model);
  self->F = es_shape_size (&in);
  self->T = es_shape_size (&out);
  self->host = g_new0 (float, MAX (self->P, 1));
  plan_buckets (self, model);
  self->next_bucket = 0;
  self->weight = 1.0 / self->size;
  self->epoch = 0;
  self->epoch_pos = 0;
  self->steps_seen = es_trainer_step_count (tr);
  self->rows_trained = self->steps_run = self->bytes = 0;
  self->comm_s = self->exposed_s = 0;
  self->t_begin = MPI_Wtime ();
  /* one rank has nothing to reduce */
  if (self->size > 1)
    es_trainer_set_grad_reduce (tr, on_bucket_ready, on_finish, self);
  self->shared_error = FALSE;
  return TRUE;
}

const EspalierBatch *
espalier_distributed_next (EspalierDistributed *self,
                           EspalierBatcher     *batcher,
                           guint                epoch,
                           EsStepStats         *stats)
{
  const EspalierBatch *b;
  guint offset = 0, G;
  guint64 first, end;

  if (epoch != self->epoch)
    {
      self->epoch = epoch;
      self->epoch_pos = 0;
    }
  if (epoch == self->skip_epoch && self->add_stats)
    {
      stats->loss_sum += self->ck_loss_sum;
      stats->correct += (int) self->ck_correct;
      stats->rows += (int) self->ck_rows;
      self->add_stats = FALSE;
    }
  for (;;)
    {
      b = espalier_batcher_next (batcher);
      if (b == NULL)
        return NULL;
      self->epoch_pos += b->B;
      if (epoch != self->skip_epoch || self->skip_rows == 0)
        break;
      /* resuming: the rows trained on before the checkpoint */
      if (b->B <= self->skip_rows)
        {
          self->skip_rows -= b->B;
          continue;
        }
      offset = (guint) self->skip_rows;
      self->skip_rows = 0;
      break;
    }

  /* This rank's contiguous part of the rows [offset, B) of the global batch. */
  G = b->B - offset;
  first = offset + (guint64) G * (guint64) self->rank / (guint64) self->size;
  end = offset + (guint64) G * (guint64) (self->rank + 1) / (guint64) self->size;
  self->dummy = end == first;
  self->stats_before = *stats;
  if (self->dummy)
    {
      /* Fewer rows than ranks: train on one row that counts for nothing, so that this
       * rank still takes part in the reduction and the step. */
      first = offset;
      end = offset + 1;
      self->weight = 0.0;
    }
  else
    self->weight = (double) (end - first) / (double) G;
  self->even = !self->dummy && G % (guint) self->size == 0;

  self->local = *b;
  self->local.B = (guint) (end - first);
  if (b->x != NULL)
    self->local.x = b->x + first * (guint64) self->F;
  if (b->x_u8 != NULL)
    self->local.x_u8 = b->x_u8 + first * (guint64) self->F;
  if (b->labels != NULL)
    self->local.labels = b->labels + first;
  if (b->targets != NULL)
    self->local.targets = b->targets + first * (guint64) self->T;
  if (b->rows != NULL)
    self->local.rows = b->rows + first;
  return &self->local;
}

gboolean
espalier_distributed_step_done (EspalierDistributed *self,
                                EsTrainer           *tr,
                                EsStepStats         *stats,
                                GError             **error)
{
  gint64 steps = es_trainer_step_count (tr);

  self->shared_error = FALSE;
  if (self->dummy)
    *stats = self->stats_before;
  else
    self->rows_trained += self->local.B;
  if (steps == self->steps_seen)
    return TRUE;
  self->steps_run += steps - self->steps_seen;
  self->steps_seen = steps;
  if (self->ck_path != NULL && self->ck_every > 0 && steps % self->ck_every == 0)
    return checkpoint (self, tr, stats, error);
  return TRUE;
}

gboolean
espalier_distributed_end_epoch (EspalierDistributed *self,
                                EsTrainer           *tr,
                                EsStepStats         *stats,
                                GError             **error)
{
  double v[3] = { stats->loss_sum, stats->correct, stats->rows };

  share_buffers (self, tr);
  allreduce_doubles (self, v, 3, MPI_SUM, _("The sum of the training loss"));
  stats->loss_sum = v[0];
  stats->correct = (int) v[1];
  stats->rows = (int) v[2];
  return TRUE;
}

gboolean
espalier_distributed_reduce_metrics (EspalierDistributed *self,
                                     EspalierMetrics     *m,
                                     GError             **error)
{
  gsize cells = m->confusion != NULL ? (gsize) m->n_classes * m->n_classes : 0;
  g_autofree double *v = g_new0 (double, 3 + cells);
  guint64 shape = cells;

  /* the confusion matrices must be alike to be summed */
  if (!all_agree (self, &shape, 1, _("The check of the metrics' classes")))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                   _("The ranks' metrics have different classes"));
      self->shared_error = TRUE;
      return FALSE;
    }
  v[0] = m->rows;
  v[1] = m->rows > 0 ? m->loss * m->rows : 0;
  v[2] = m->rows > 0 ? round (m->accuracy * m->rows) : 0;
  for (gsize i = 0; i < cells; i++)
    v[3 + i] = m->confusion[i];
  allreduce_doubles (self, v, (int) (3 + cells), MPI_SUM, _("The sum of the metrics"));
  m->rows = (guint) v[0];
  m->loss = v[0] > 0 ? v[1] / v[0] : NAN;
  m->accuracy = v[0] > 0 ? v[2] / v[0] : NAN;
  for (gsize i = 0; i < cells; i++)
    m->confusion[i] = (guint) v[3 + i];
  return TRUE;
}

gboolean
espalier_distributed_evaluate (EspalierDistributed *self,
                               EsModel             *model,
                               EspalierDataset     *dataset,
                               const guint32       *rows,
                               guint                n_rows,
                               EsLossKind           loss,
                               guint                threads,
                               EspalierMetrics     *metrics,
                               GError             **error)
{
  g_autofree guint32 *all = NULL;
  guint first, count;
  gboolean ok = TRUE;

  if (rows == NULL)
    {
      n_rows = espalier_dataset_get_n_rows (dataset);
      all = g_new (guint32, MAX (n_rows, 1));
      for (guint i = 0; i < n_rows; i++)
        all[i] = i;
      rows = all;
    }
  espalier_distributed_shard (self, n_rows, &first, &count);
  if (count > 0)
    ok = espalier_evaluate (model, dataset, rows + first, count, loss, threads, metrics, error);
  else
    {
      guint nc = espalier_dataset_get_n_classes (dataset);

      espalier_metrics_clear (metrics);
      metrics->n_classes = nc;
      if (nc > 0)
        metrics->confusion = g_new0 (guint, (gsize) nc * nc);
    }
  /* A failure here is this rank's alone: the caller ends the job. */
  self->shared_error = FALSE;
  if (!ok)
    return FALSE;
  return espalier_distributed_reduce_metrics (self, metrics, error);
}

#else /* !ESPALIER_HAVE_MPI */

/* This build has no MPI: nothing can make an EspalierDistributed, so the functions
 * below are never reached with one; they keep the API whole. */
struct _EspalierDistributed
{
  int rank, size;
};

gboolean
espalier_distributed_available (void)
{
  return FALSE;
}

EspalierDistributed *
espalier_distributed_new (GError **error)
{
  g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED,
               _("This build of Espalier has no MPI: install Open MPI (libopenmpi-dev) and "
                 "build again to train on several processes"));
  return NULL;
}

void
espalier_distributed_free (EspalierDistributed *self)
{
  g_free (self);
}

void
espalier_distributed_abort (EspalierDistributed *self, const GError *error)
{
  g_error ("%s", error->message);
}

int espalier_distributed_rank (EspalierDistributed *self) { return 0; }
int espalier_distributed_size (EspalierDistributed *self) { return 1; }
int espalier_distributed_local_size (EspalierDistributed *self) { return 1; }
void espalier_distributed_set_timeout (EspalierDistributed *self, double seconds) { }
void espalier_distributed_set_bucket_bytes (EspalierDistributed *self, gsize bytes) { }
void espalier_distributed_set_checkpoint (EspalierDistributed *self, const char *path,
                                          guint every) { }

gboolean
espalier_distributed_set_resume (EspalierDistributed *self, const char *path,
                                 EspalierCheckpointInfo *info, GError **error)
{
  return espalier_distributed_new (error) != NULL;
}

gboolean
espalier_distributed_get_last_checkpoint (EspalierDistributed *self,
                                          EspalierCheckpointInfo *info)
{
  return FALSE;
}

gboolean
espalier_distributed_all_ok (EspalierDistributed *self, gboolean ok, gboolean *show_error)
{
  if (show_error != NULL)
    *show_error = !ok;
  return ok;
}

gboolean
espalier_distributed_error_is_shared (EspalierDistributed *self)
{
  return FALSE;
}

gboolean
espalier_distributed_evaluate (EspalierDistributed *self, EsModel *model,
                               EspalierDataset *dataset, const guint32 *rows, guint n_rows,
                               EsLossKind loss, guint threads, EspalierMetrics *metrics,
                               GError **error)
{
  return espalier_evaluate (model, dataset, rows, n_rows, loss, threads, metrics, error);
}

void
espalier_distributed_get_stats (EspalierDistributed *self, EspalierDistributedStats *stats)
{
  memset (stats, 0, sizeof *stats);
}

guint espalier_distributed_global_batch (EspalierDistributed *self, guint batch) { return batch; }
guint64 espalier_distributed_rank_seed (EspalierDistributed *self, guint64 seed) { return seed; }

gboolean
espalier_distributed_begin_run (EspalierDistributed *self, EsTrainer *tr, EsModel *model,
                                GArray *history, guint n_train, guint batch, guint64 seed,
                                guint *first_epoch, GError **error)
{
  return espalier_distributed_new (error) != NULL;
}

const EspalierBatch *
espalier_distributed_next (EspalierDistributed *self, EspalierBatcher *batcher, guint epoch,
                           EsStepStats *stats)
{
  return espalier_batcher_next (batcher);
}

gboolean
espalier_distributed_step_done (EspalierDistributed *self, EsTrainer *tr, EsStepStats *stats,
                                GError **error)
{
  return TRUE;
}

gboolean
espalier_distributed_end_epoch (EspalierDistributed *self, EsTrainer *tr, EsStepStats *stats,
                                GError **error)
{
  return TRUE;
}

void
espalier_distributed_shard (EspalierDistributed *self, guint n, guint *first, guint *count)
{
  *first = 0;
  *count = n;
}

gboolean
espalier_distributed_reduce_metrics (EspalierDistributed *self, EspalierMetrics *metrics,
                                     GError **error)
{
  return TRUE;
}

void
espalier_distributed_fill_progress (EspalierDistributed *self, EspalierProgress *progress)
{
}

#endif /* ESPALIER_HAVE_MPI */
