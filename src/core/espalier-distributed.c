/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-distributed.c: data-parallel training over MPI (espalier-distributed.h):
 * the job, the bucketed gradient allreduce behind the engine's grad-reduce hook, the
 * shard of each global batch, reductions of metrics, the collective timeout, and
 * checkpoints.
 *
 * Checkpoints are espalier-checkpoint.h's files: rank 0 fills one (the epoch's
 * training sums reduced over all ranks; the trainer adds its hooks' state through the
 * fill function) and writes it; every rank parses the bytes rank 0 read.
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
#include "espalier-checkpoint.h"
#include "espalier-distributed.h"
#include "espalier-error.h"

#ifdef ESPALIER_HAVE_MPI

#include <dlfcn.h>
#include <mpi.h>
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>   /* Open MPI's MPIX_Query_cuda_support */
#endif

#include "espalier-device.h"
#include "espalier-json-private.h"
#include "espalier-save.h"
#include "espalier-templates.h"

/* Broadcasts go in pieces an int can count. */
#define BCAST_CHUNK        (1 << 30)

/* Gradient floats [lo, hi), reduced together once all its layers have reported. */
typedef struct {
  gint64 lo, hi;
  int    n_layers;
  int    layers_left;   /* this step */
} Bucket;

struct _EspalierDistributed
{
  MPI_Comm     comm;
  int          rank, size, local_size, local_rank;
  double       timeout;
  gsize        bucket_bytes;
  char        *ck_path;
  guint        ck_every;
  gboolean     have_last;
  EspalierCheckpointInfo last;
  EspalierCheckpoint *resume;   /* for the next run, or NULL */
  EspalierCheckpoint *resumed;  /* the one the current run resumed from, or NULL */
  EspalierCheckpointFillFunc ck_fill;   /* adds the trainer's hook state, or NULL */
  gpointer     ck_fill_data;
  gboolean     shared_error;    /* the last error came out of a collective check */

  /* the current run */
  EsModel     *model;           /* borrowed */
  GArray      *history;         /* borrowed */
  guint        n_train, batch;
  guint64      seed;
  gint64       P;
  gint64       F, T;
  float       *host;            /* (P) the staging buffer, made when first needed */
  void       (*host_free) (void *ptr);   /* pinned: the module's es_cuda_host_free */
  gboolean     cuda_aware;      /* MPI reads and writes device memory */
  gboolean     force_stage;     /* ESPALIER_MPI_STAGE: always through host */
  gboolean     path_told;       /* the reduction's path was logged this run */
  Bucket      *buckets;         /* last layers first */
  int          n_buckets;
  int          next_bucket;     /* the next to start, this step */
  MPI_Request *reqs;            /* (n_buckets) */
  double       weight;          /* this rank's share of the rows of the current step */
  gboolean     even;            /* every rank has the same share this step */
  gboolean     direct;          /* this step MPI reduces the gradient vector itself */
  gboolean     post_scale;      /* and the sum is scaled by the share after it */
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

/* Whether the environment variable name is set to something other than "" or "0". */
static gboolean
env_flag (const char *name)
{
  const char *v = g_getenv (name);

  return v != NULL && *v != '\0' && strcmp (v, "0") != 0;
}

/* Whether MPI takes device pointers (a CUDA-aware MPI): ESPALIER_MPI_CUDA_AWARE=0 or 1
 * says so; otherwise Open MPI answers through its CUDA extension at run time (the
 * library loaded may not be the one we were built against); any other MPI: no. */
static gboolean
mpi_cuda_aware (void)
{
  const char *v = g_getenv ("ESPALIER_MPI_CUDA_AWARE");

  if (v != NULL && *v != '\0')
    return strcmp (v, "0") != 0;
#if defined(OMPI_HAVE_MPI_EXT_CUDA) && OMPI_HAVE_MPI_EXT_CUDA
  return MPIX_Query_cuda_support () == 1;
#else
  return FALSE;
#endif
}

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
  MPI_Comm_rank (local, &self->local_rank);
  MPI_Comm_free (&local);
  self->timeout = 300;
  self->cuda_aware = mpi_cuda_aware ();
  self->force_stage = env_flag ("ESPALIER_MPI_STAGE");
  return self;
}

static void
run_clear (EspalierDistributed *self)
{
  if (self->host_free != NULL)
    self->host_free (self->host);
  else
    g_free (self->host);
  self->host = NULL;
  self->host_free = NULL;
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
  espalier_checkpoint_free (self->resume);
  espalier_checkpoint_free (self->resumed);
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

int
espalier_distributed_local_rank (EspalierDistributed *self)
{
  return self->local_rank;
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

void
espalier_distributed_set_checkpoint_fill (EspalierDistributed       *self,
                                          EspalierCheckpointFillFunc func,
                                          gpointer                   user_data)
{
  self->ck_fill = func;
  self->ck_fill_data = user_data;
}

const EspalierCheckpoint *
espalier_distributed_get_resumed (EspalierDistributed *self)
{
  return self->resumed;
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

/* The staging buffer (P), pinned for a CUDA backend when the driver gives it. Core
 * opens the CUDA backend as a module (espalier-device.c): es_cuda_host_alloc is looked
 * up in the library the backend's interface table lives in, already loaded. */
static float *
host_buffer (EspalierDistributed *self, EsBackend *be)
{
  Dl_info info;

  if (self->host != NULL)
    return self->host;
  if (espalier_backend_get_device (be) >= 0 && dladdr (be->iface, &info) != 0
      && info.dli_fname != NULL)
    {
      void *module = dlopen (info.dli_fname, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);

      if (module != NULL)
        {
          void *(*alloc) (size_t) = (void *(*) (size_t)) dlsym (module, "es_cuda_host_alloc");
          void (*release) (void *) = (void (*) (void *)) dlsym (module, "es_cuda_host_free");

          if (alloc != NULL && release != NULL
              && (self->host = alloc ((size_t) MAX (self->P, 1) * sizeof (float))) != NULL)
            self->host_free = release;
          dlclose (module);   /* it stays: core made it resident */
        }
    }
  if (self->host == NULL)
    self->host = g_new0 (float, MAX (self->P, 1));
  return self->host;
}

/* How this step's gradients go to MPI. Directly, when MPI can read the gradient vector
 * (host memory, or device memory and a CUDA-aware MPI): summed in place, the sum then
 * scaled by the share when every rank has the same one, else each rank's part scaled
 * by its share first. Otherwise (or with ESPALIER_MPI_STAGE set) staged: each bucket
 * downloaded to the host buffer (pinned for CUDA), scaled by the share there, summed,
 * and the whole uploaded back at the end. */
static void
choose_path (EspalierDistributed *self, EsBackend *be)
{
  gboolean device = !be->iface->host_memory;

  self->direct = !self->force_stage
                 && (!device || (self->cuda_aware && espalier_backend_get_device (be) >= 0));
  self->post_scale = self->direct && self->even;
  if (!self->direct)
    host_buffer (self, be);
  if (!self->path_told)
    {
      g_debug ("rank %d: gradients reduced %s", self->rank,
               self->direct ? (device ? "from device memory (CUDA-aware MPI)"
                                      : "in place in host memory")
                            : (self->host_free != NULL ? "staged through pinned host memory"
                                                 : "staged through host memory"));
      self->path_told = TRUE;
    }
}

/* Start bucket k (see choose_path). */
static void
post_bucket (EspalierDistributed *self, EsBackend *be, const float *grads, int k)
{
  Bucket *b = &self->buckets[k];
  gint64 n = b->hi - b->lo;
  float *buf;

  if (k == 0)
    choose_path (self, be);
  if (self->direct)
    {
      /* the range is final: backward no longer writes it */
      buf = (float *) grads + b->lo;
      if (!self->post_scale && self->weight != 1.0)
        be->iface->scale (be, buf, (float) self->weight, n);
      /* MPI reads device memory outside the backend's stream: the writes must be done */
      if (!be->iface->host_memory && be->iface->synchronize != NULL)
        be->iface->synchronize (be);
    }
  else
    {
      buf = self->host + b->lo;
      be->iface->download (be, buf, grads + b->lo, (size_t) n * sizeof (float));
      if (self->weight != 1.0)
        {
          float w = (float) self->weight;

          for (gint64 i = 0; i < n; i++)
            buf[i] *= w;
        }
    }
  MPI_Iallreduce (MPI_IN_PLACE, buf, (int) n, MPI_FLOAT, MPI_SUM, self->comm, &self->reqs[k]);
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
  if (!self->direct)
    be->iface->upload (be, grads, self->host, (size_t) n * sizeof (float));
  else if (self->post_scale)
    be->iface->scale (be, grads, (float) self->weight, n);
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

static gboolean
write_checkpoint (EspalierDistributed *self, EsTrainer *tr, const EspalierCheckpointInfo *info,
                  const double *sums, GError **error)
{
  EsModel *m = self->model;
  g_autoptr(EspalierCheckpoint) ck = espalier_checkpoint_new ();
  gint64 P = es_model_n_params (m), Q = es_model_n_buffers (m);

  ck->info = *info;
  ck->spec = espalier_model_to_spec (m);
  ck->n_params = P;
  ck->n_buffers = Q;
  ck->n_train = self->n_train;
  ck->loss_sum = sums[0];
  ck->correct = (gint64) sums[1];
  ck->rows = (gint64) sums[2];
  g_array_append_vals (ck->history, self->history->data, self->history->len);
  ck->params = g_memdup2 (es_model_params_const (m), (gsize) P * sizeof (float));
  if (Q > 0)
    ck->buffers = g_memdup2 (es_model_buffers_const (m), (gsize) Q * sizeof (float));
  ck->n_slots = es_trainer_state_slots (tr);
  if (ck->n_slots > 0)
    ck->slots = g_new (float, (gsize) ck->n_slots * (gsize) P);
  es_trainer_get_state (tr, &ck->info.step, ck->slots);
  if (self->ck_fill != NULL)
    self->ck_fill (ck, self->ck_fill_data);
  return espalier_checkpoint_save (ck, self->ck_path, error);
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
  EspalierCheckpoint *ck;

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
  ck = espalier_checkpoint_parse (path, (const guint8 *) contents, (gsize) n, error);
  if (ck == NULL)
    {
      g_prefix_error (error, _("Cannot resume: "));
      return FALSE;
    }
  espalier_checkpoint_free (self->resume);
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
  EspalierCheckpoint *ck = self->resume;
  guint64 v[7];

  run_clear (self);
  g_clear_pointer (&self->resumed, espalier_checkpoint_free);
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

      if (!espalier_checkpoint_fits_model (ck, model, error))
        {
          g_prefix_error (error, _("Cannot resume: "));
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
      if (ck->n_buffers > 0)
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
      self->resumed = g_steal_pointer (&self->resume);
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
  self->path_told = FALSE;
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

  if (epoch != self->epoch)
    {
      /* This rank's shards of the epoch's global batches, from where a resumed run left
       * off (the batch that holds that position cut short). The trainer has just
       * started the epoch: with the same shards and start that keeps its batches. */
      guint from = epoch == self->skip_epoch ? (guint) MIN (self->skip_rows, G_MAXUINT) : 0;

      self->epoch = epoch;
      self->epoch_pos = from;
      espalier_batcher_set_shard (batcher, (guint) self->rank, (guint) self->size);
      espalier_batcher_start_epoch_at (batcher, epoch - 1, from);
    }
  if (epoch == self->skip_epoch && self->add_stats)
    {
      stats->loss_sum += self->ck_loss_sum;
      stats->correct += (int) self->ck_correct;
      stats->rows += (int) self->ck_rows;
      self->add_stats = FALSE;
    }
  b = espalier_batcher_next (batcher);
  if (b == NULL)
    return NULL;
  self->epoch_pos = (guint64) b->position + b->global_B;
  self->stats_before = *stats;
  /* A padding row (fewer rows than ranks) is trained with weight 0, so that this rank
   * still takes part in the reduction and the step. */
  self->dummy = b->padding;
  self->weight = self->dummy ? 0.0 : (double) b->B / (double) b->global_B;
  self->even = !self->dummy && b->global_B % (guint) self->size == 0;
  self->local = *b;
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
int espalier_distributed_local_rank (EspalierDistributed *self) { return 0; }
void espalier_distributed_set_timeout (EspalierDistributed *self, double seconds) { }
void espalier_distributed_set_bucket_bytes (EspalierDistributed *self, gsize bytes) { }
void espalier_distributed_set_checkpoint (EspalierDistributed *self, const char *path,
                                          guint every) { }
void espalier_distributed_set_checkpoint_fill (EspalierDistributed *self,
                                               EspalierCheckpointFillFunc func,
                                               gpointer user_data) { }
const EspalierCheckpoint *espalier_distributed_get_resumed (EspalierDistributed *self) { return NULL; }

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
