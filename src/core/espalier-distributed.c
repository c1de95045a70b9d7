/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-distributed.c: data-parallel training over MPI (espalier-distributed.h):
 * the job, the bucketed gradient allreduce behind the engine's grad-reduce hook (MPI,
 * or NCCL on CUDA through espalier-nccl.h), the shard of each global batch, reductions of metrics, the collective timeout, and
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
#include "espalier-nccl.h"
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
  const char  *path_name;       /* "nccl", "cuda-aware mpi", "staged", "host"; NULL before */
  /* NCCL (agree_on_nccl): whether this run uses it, agreed at its first reduction */
  gboolean     path_agreed;
  gboolean     use_nccl;
  char        *nccl_note;       /* on CUDA, why this run does not use NCCL, or NULL */
  const EspalierNccl *nccl;
  EspalierNcclComm nccl_comm;
  void        *stream;          /* the CUDA backend's, where NCCL works */
  void      *(*get_stream) (EsBackend *be);     /* the module's es_cuda_backend_get_stream */
  int        (*stream_query) (EsBackend *be);   /* and es_cuda_backend_query */
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
  /* synchronized BatchNorm, and a test's bad input (the block before "the run") */
  gboolean     sync_bn;         /* espalier_distributed_set_sync_batchnorm */
  int          nan_rank;        /* ESPALIER_TEST_NAN_INPUT: this rank's ... */
  gint64       nan_step;        /* ...step S gets a NaN input (0: none) */
  float       *nan_x;           /* (B, F) the poisoned copy of that batch */
  int          eval_rank;       /* ESPALIER_TEST_EVAL_FAIL: this rank's ... */
  guint        eval_epoch;      /* ...validation pass of this epoch (0: none; */
  gboolean     eval_test;       /* or the test evaluation, when this) fails, */
  gboolean     eval_alloc;      /* as allocating would, else with a NaN input */
  char        *eval_what;       /* what it failed to allocate, or NULL */

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

static void nan_test_parse (EspalierDistributed *self);
static void eval_test_parse (EspalierDistributed *self);

/* ------------------------------------------------------------------------------ */
/* waiting with a deadline */

static void G_GNUC_NORETURN
end_job (EspalierDistributed *self, const char *message)
{
  /* NCCL's communicator first: its kernels may wait on the other ranks */
  if (self->nccl_comm != NULL)
    self->nccl->comm_abort (self->nccl_comm);
  self->nccl_comm = NULL;
  g_printerr (_("Rank %d of %d: %s\n"), self->rank, self->size, message);
  fflush (stderr);
  MPI_Abort (self->comm, 1);
  abort ();   /* not reached: MPI_Abort does not return */
}

/* One turn of a wait for what that began at t0: the job ends once the collective
 * timeout has passed. It spins while the wait is short (a reduction in flight), then
 * lets the core go. */
static void
wait_tick (EspalierDistributed *self, double t0, const char *what)
{
  double waited = MPI_Wtime () - t0;

  if (waited > self->timeout)
    {
      g_autofree char *msg = g_strdup_printf (
          _("%s did not finish within the collective timeout of %g s: another rank has "
            "failed, hangs or cannot be reached; ending the whole job"),
          what, self->timeout);
      end_job (self, msg);
    }
  if (waited < 0.05)
    sched_yield ();
  else
    g_usleep (1000);
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
      wait_tick (self, t0, what);
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
  nan_test_parse (self);
  eval_test_parse (self);
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
  /* every rank gets here (a run's start, the job's end): NCCL's teardown may wait for them */
  if (self->nccl_comm != NULL)
    self->nccl->comm_destroy (self->nccl_comm);
  self->nccl_comm = NULL;
  self->use_nccl = FALSE;
  self->path_agreed = FALSE;
  self->path_name = NULL;
  g_clear_pointer (&self->nccl_note, g_free);
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
  g_free (self->nan_x);
  g_free (self->eval_what);
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
  stats->reduction = self->size == 1 ? "none" : self->path_name;
  stats->reduction_note = self->nccl_note;
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

/* A function of the CUDA backend's module (es-cuda.h): core opens the backend as a
 * module (espalier-device.c), so it is looked up in the library the backend's interface
 * table lives in, already loaded. NULL when be is not a CUDA backend or the module
 * lacks it. */
static void *
cuda_module_symbol (EsBackend *be, const char *name)
{
  Dl_info info;
  void *module, *sym;

  if (espalier_backend_get_device (be) < 0 || dladdr (be->iface, &info) == 0
      || info.dli_fname == NULL)
    return NULL;
  module = dlopen (info.dli_fname, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
  if (module == NULL)
    return NULL;
  sym = dlsym (module, name);
  dlclose (module);   /* it stays: core made it resident */
  return sym;
}

/* The staging buffer (P), pinned for a CUDA backend when the driver gives it
 * (es_cuda_host_alloc). */
static float *
host_buffer (EspalierDistributed *self, EsBackend *be)
{
  void *(*alloc) (size_t);
  void (*release) (void *);

  if (self->host != NULL)
    return self->host;
  alloc = (void *(*) (size_t)) cuda_module_symbol (be, "es_cuda_host_alloc");
  release = (void (*) (void *)) cuda_module_symbol (be, "es_cuda_host_free");
  if (alloc != NULL && release != NULL
      && (self->host = alloc ((size_t) MAX (self->P, 1) * sizeof (float))) != NULL)
    self->host_free = release;
  if (self->host == NULL)
    self->host = g_new0 (float, MAX (self->P, 1));
  return self->host;
}

/* ---- NCCL ----------------------------------------------------------------------
 * On CUDA, when every rank can load NCCL (espalier-nccl.h), the buckets are summed by
 * ncclAllReduce on the backend's stream, in device memory, queued after the kernels that
 * wrote them. NCCL's calls return at once; the wait at the end of backward polls the
 * stream and ncclCommGetAsyncError against the collective timeout. */

/* NCCL failed (result r, in the call named what) or hangs: the communicator is aborted
 * (its kernels stopped) and the job ended with message. */
static void G_GNUC_NORETURN
nccl_failed (EspalierDistributed *self, const char *what, EspalierNcclResult r)
{
  g_autofree char *msg = g_strdup_printf (_("%s failed in NCCL (%s): another rank has probably "
                                            "failed; ending the whole job"),
                                          what, espalier_nccl_error_string (self->nccl, r));
  end_job (self, msg);
}

/* ncclCommInitRank blocks until every rank has joined, and a rank that died never does:
 * it runs on a thread of its own while the worker waits with the collective timeout
 * (making no MPI call meanwhile: the emulated NCCL of the tests joins over MPI). */
typedef struct {
  EspalierDistributed *self;
  EsBackend           *be;
  EspalierNcclUniqueId id;
  EspalierNcclComm     comm;
  EspalierNcclResult   result;
  gint                 done;
} NcclJoin;

static gpointer
nccl_join_thread (gpointer data)
{
  NcclJoin *j = data;

  /* NCCL takes the thread's current device: the accessor makes it the backend's */
  if (j->self->get_stream (j->be) == NULL)
    j->result = ESPALIER_NCCL_UNHANDLED_CUDA_ERROR;
  else
    j->result = j->self->nccl->comm_init_rank (&j->comm, j->self->size, j->id, j->self->rank);
  g_atomic_int_set (&j->done, 1);
  return NULL;
}

/* Collective, at the run's first reduction: whether this run reduces with NCCL. Every
 * rank says whether it can (on CUDA, NCCL loaded, the backend's stream at hand); only
 * when all can, rank 0's unique id goes to every rank and each joins the communicator;
 * if one fails to join, every rank falls back to MPI. On CUDA, self->nccl_note says
 * why NCCL is not used. */
static void
agree_on_nccl (EspalierDistributed *self, EsBackend *be)
{
  g_autoptr(GError) error = NULL;
  gboolean cuda = !be->iface->host_memory && espalier_backend_get_device (be) >= 0;
  const char *why = NULL;
  double can[2];
  struct {
    EspalierNcclUniqueId id;
    gint32               ok;
  } msg = { { { 0 } }, 0 };
  NcclJoin join = { self, be, { { 0 } }, NULL, ESPALIER_NCCL_SUCCESS, 0 };
  double failed[2];
  gint64 start;
  GThread *thread;

  if (cuda)
    {
      self->get_stream = (void *(*) (EsBackend *))
                         cuda_module_symbol (be, "es_cuda_backend_get_stream");
      self->stream_query = (int (*) (EsBackend *))
                           cuda_module_symbol (be, "es_cuda_backend_query");
      if (self->force_stage)
        why = _("ESPALIER_MPI_STAGE=1 stages the gradients through host memory");
      else if ((self->nccl = espalier_nccl_get (&error)) == NULL)
        why = error->message;
      else if (self->get_stream == NULL || self->stream_query == NULL)
        why = _("the CUDA backend's module gives no stream (es_cuda_backend_get_stream)");
      else if ((self->stream = self->get_stream (be)) == NULL)
        why = _("the CUDA backend has failed");
    }
  can[0] = cuda ? 1 : 0;
  can[1] = cuda && why == NULL ? 1 : 0;
  allreduce_doubles (self, can, 2, MPI_MIN, _("The check that every rank can use NCCL"));
  if (can[0] == 0)
    return;   /* not every rank is on CUDA: NCCL is no choice */
  if (can[1] == 0)
    {
      self->nccl_note = g_strdup (why != NULL ? why : _("another rank cannot use NCCL"));
      return;
    }

  /* rank 0's unique id to every rank */
  if (self->rank == 0)
    {
      EspalierNcclResult r = self->nccl->get_unique_id (&msg.id);

      msg.ok = r == ESPALIER_NCCL_SUCCESS;
      if (!msg.ok)
        self->nccl_note = g_strdup_printf (_("ncclGetUniqueId failed (%s)"),
                                           espalier_nccl_error_string (self->nccl, r));
    }
  {
    MPI_Request req;

    MPI_Ibcast (&msg, (int) sizeof msg, MPI_BYTE, 0, self->comm, &req);
    self->comm_s += wait_all (self, 1, &req, _("Sending NCCL's unique id"));
  }
  if (!msg.ok)
    {
      if (self->nccl_note == NULL)
        self->nccl_note = g_strdup (_("ncclGetUniqueId failed on rank 0"));
      return;
    }

  /* every rank joins, waited for with the timeout */
  join.id = msg.id;
  start = g_get_monotonic_time ();
  thread = g_thread_new ("espalier-nccl-init", nccl_join_thread, &join);
  while (!g_atomic_int_get (&join.done))
    {
      if ((double) (g_get_monotonic_time () - start) / G_USEC_PER_SEC > self->timeout)
        {
          g_autofree char *text = g_strdup_printf (
              _("%s did not finish within the collective timeout of %g s: another rank has "
                "failed, hangs or cannot be reached; ending the whole job"),
              _("Starting NCCL (ncclCommInitRank)"), self->timeout);
          end_job (self, text);
        }
      g_usleep (1000);
    }
  g_thread_join (thread);
  self->comm_s += (double) (g_get_monotonic_time () - start) / G_USEC_PER_SEC;
  failed[0] = join.result != ESPALIER_NCCL_SUCCESS ? 1 : 0;
  failed[1] = self->rank == 0 ? failed[0] : 0;
  allreduce_doubles (self, failed, 2, MPI_SUM, _("The check that every rank joined NCCL"));
  if (failed[0] > 0)
    {
      /* of no use without the others; abort: destroying waits for them */
      if (join.result == ESPALIER_NCCL_SUCCESS && join.comm != NULL)
        self->nccl->comm_abort (join.comm);
      if (failed[1] > 0)
        self->nccl_note = g_strdup_printf (_("ncclCommInitRank failed (%s)"),
                                           espalier_nccl_error_string (self->nccl, join.result));
      else
        self->nccl_note = g_strdup (_("ncclCommInitRank failed on another rank"));
      return;
    }
  self->nccl_comm = join.comm;
  self->use_nccl = TRUE;
}

/* Wait for the NCCL reductions queued on the backend's stream: until the stream is idle
 * and the communicator has no operation in progress, ending the job when NCCL reports
 * an error, the device fails, or the timeout passes. Returns the seconds waited. */
static double
nccl_wait (EspalierDistributed *self, EsBackend *be, const char *what)
{
  double t0 = MPI_Wtime ();

  for (;;)
    {
      EspalierNcclResult async = ESPALIER_NCCL_SUCCESS;
      EspalierNcclResult r = self->nccl->comm_get_async_error (self->nccl_comm, &async);
      int idle;

      if (r != ESPALIER_NCCL_SUCCESS)
        nccl_failed (self, what, r);
      if (async != ESPALIER_NCCL_SUCCESS && async != ESPALIER_NCCL_IN_PROGRESS)
        nccl_failed (self, what, async);
      idle = self->stream_query (be);
      if (idle < 0)
        {
          g_autoptr(GError) error = NULL;
          g_autofree char *msg = NULL;

          espalier_backend_check (be, &error);
          msg = g_strdup_printf (_("%s: the CUDA device failed (%s); ending the whole job"), what,
                                 error != NULL ? error->message : _("unknown error"));
          end_job (self, msg);
        }
      if (idle == 1 && async == ESPALIER_NCCL_SUCCESS)
        break;
      wait_tick (self, t0, what);
    }
  return MPI_Wtime () - t0;
}

/* How this step's gradients are reduced. With NCCL (agreed at the run's first step, see
 * agree_on_nccl): in device memory on the backend's stream. Otherwise through MPI:
 * directly, when MPI can read the gradient vector (host memory, or device memory and a
 * CUDA-aware MPI); or (with ESPALIER_MPI_STAGE set too) staged: each bucket downloaded
 * to the host buffer (pinned for CUDA), scaled by the share there, summed, and the
 * whole uploaded back at the end. Reduced directly, the sum is scaled by the share
 * after it when every rank has the same one, else each rank's part is scaled first. */
static void
choose_path (EspalierDistributed *self, EsBackend *be)
{
  gboolean device = !be->iface->host_memory;

  if (!self->path_agreed)
    {
      agree_on_nccl (self, be);
      self->path_agreed = TRUE;
    }
  self->direct = self->use_nccl
                 || (!self->force_stage
                     && (!device || (self->cuda_aware && espalier_backend_get_device (be) >= 0)));
  self->post_scale = self->direct && self->even;
  if (!self->direct)
    host_buffer (self, be);
  self->path_name = self->use_nccl ? "nccl"
                    : !self->direct ? "staged"
                    : device ? "cuda-aware mpi" : "host";
  if (!self->path_told)
    {
      g_debug ("rank %d: gradients reduced %s", self->rank,
               self->use_nccl ? "with NCCL on the CUDA backend's stream"
               : self->direct ? (device ? "from device memory (CUDA-aware MPI)"
                                        : "in place in host memory")
                              : (self->host_free != NULL ? "staged through pinned host memory"
                                                         : "staged through host memory"));
      if (self->nccl_note != NULL)
        g_debug ("rank %d: NCCL not used: %s", self->rank, self->nccl_note);
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
  if (self->use_nccl)
    {
      EspalierNcclResult r;

      /* queued on the stream after the kernels that wrote the range */
      buf = (float *) grads + b->lo;
      if (!self->post_scale && self->weight != 1.0)
        be->iface->scale (be, buf, (float) self->weight, n);
      r = self->nccl->all_reduce (buf, buf, (size_t) n, ESPALIER_NCCL_FLOAT32, ESPALIER_NCCL_SUM,
                                  self->nccl_comm, self->stream);
      if (r != ESPALIER_NCCL_SUCCESS)
        nccl_failed (self, _("The gradient allreduce (NCCL)"), r);
      self->bytes += n * (gint64) sizeof (float);
      return;
    }
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
  /* Open MPI moves messages only inside its calls: a test lets the posted ones on (an
   * emulated NCCL over MPI moves them when asked for its errors). */
  if (self->use_nccl)
    {
      EspalierNcclResult async;

      (void) self->nccl->comm_get_async_error (self->nccl_comm, &async);
    }
  else if (self->next_bucket > 0)
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
  if (self->use_nccl)
    waited = nccl_wait (self, be, _("The gradient allreduce (NCCL)"));
  else
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

/* Rank 0's checkpoint that could not be written (error says why), as the error every
 * rank will stop with: why, where training stopped and what the file still holds (it
 * is written atomically: a failed write leaves the last one whole). */
static void
checkpoint_failed (EspalierDistributed *self, const EspalierCheckpointInfo *info,
                   GError **error)
{
  g_autofree char *why = NULL, *head = NULL, *tail = NULL;
  GQuark domain = ESPALIER_ERROR;
  int code = ESPALIER_ERROR_IO;

  if (error == NULL)
    return;
  if (*error != NULL)
    {
      why = g_strdup ((*error)->message);
      domain = (*error)->domain;
      code = (*error)->code;
    }
  else
    why = g_strdup_printf (_("Cannot write the checkpoint %s"), self->ck_path);
  if (g_str_has_suffix (why, "."))
    why[strlen (why) - 1] = '\0';
  /* TRANSLATORS: %s is why the checkpoint could not be written (an error message
   * without its full stop) */
  head = g_strdup_printf (_("%s. Training stopped on every rank at step %lld (epoch %u): "
                            "the checkpoints asked for cannot be written."),
                          why, (long long) info->step, info->epoch);
  tail = self->have_last
         ? g_strdup_printf (_("%s still holds the checkpoint of step %lld (epoch %u), the "
                              "last one written."),
                            self->ck_path, (long long) self->last.step, self->last.epoch)
         : g_strdup (_("No checkpoint was written before in this run."));
  g_clear_error (error);
  g_set_error (error, domain, code, C_("sentences", "%s %s"), head, tail);
}

/* Collective, at a due step: the epoch's sums so far, a check that the ranks still hold
 * the same weights, and rank 0 writes. A write that fails fails every rank alike (one
 * more MPI_Allreduce of one int, espalier_distributed_share_failure, at checkpoint steps
 * only) with rank 0's error: training stops rather than going on without the
 * checkpoints the user asked for, and the job ends normally with status 1 on every rank
 * and the last checkpoint written whole. */
static gboolean
checkpoint (EspalierDistributed *self, EsTrainer *tr, const EsStepStats *stats, GError **error)
{
  double sums[3] = { stats->loss_sum, stats->correct, stats->rows };
  EspalierCheckpointInfo info = {
    .epoch = self->epoch, .position = self->epoch_pos, .step = es_trainer_step_count (tr),
    .ranks = (guint) self->size, .batch = self->batch, .seed = self->seed,
  };
  gboolean ok = TRUE;
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
  if (self->rank == 0)
    {
      if (!write_checkpoint (self, tr, &info, sums, error))
        ok = FALSE;
      else
        {
          self->last = info;
          self->have_last = TRUE;
        }
    }
  if (!ok)
    checkpoint_failed (self, &info, error);
  return espalier_distributed_share_failure (self, ok, FALSE, error);
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
/* synchronized BatchNorm, the agreement on a bad loss, and a test's bad input */

void
espalier_distributed_set_sync_batchnorm (EspalierDistributed *self, gboolean on)
{
  self->sync_bn = on;
}

gboolean
espalier_distributed_get_sync_batchnorm (EspalierDistributed *self)
{
  return self->sync_bn;
}

/* The engine's statistics hook (es_trainer_set_stat_reduce): v summed over the ranks,
 * blocking with the collective timeout; a rank whose row is padding adds zeros. */
static void
on_stat_reduce (void *user, double *v, int n)
{
  EspalierDistributed *self = user;

  if (self->dummy)
    memset (v, 0, (gsize) n * sizeof (double));
  allreduce_doubles (self, v, n, MPI_SUM, _("The BatchNorm statistics' allreduce"));
}

/* For begin_run: the statistics hook on tr when asked for and there are ranks to sum
 * over. A failure is this rank's alone. */
static gboolean
install_stat_reduce (EspalierDistributed *self, EsTrainer *tr, GError **error)
{
  EsError es = { 0 };

  if (self->size > 1 && self->sync_bn && !es_trainer_set_stat_reduce (tr, on_stat_reduce, self, &es))
    {
      espalier_error_from_es (error, &es, _("Cannot synchronize BatchNorm"));
      self->shared_error = FALSE;
      return FALSE;
    }
  return TRUE;
}

/* Which rank agree_nonfinite names, from its values (own, failed, nan, layer, what):
 * the smallest key. A rank that failed first; then the rank whose values went bad
 * earliest in the model (a NaN of one rank reaches the others' later layers through
 * synchronized BatchNorm statistics): lowest layer, then parameters before outputs
 * before gradients, a loss that overflowed by itself last; G_MAXDOUBLE for a rank whose
 * loss stayed finite. */
static double
bad_key (const double *v)
{
  if (v[1] != 0)
    return -1.0;
  if (v[0] == 0)
    return G_MAXDOUBLE;
  return v[3] >= 0 ? v[3] * 4 + v[4] : G_MAXDOUBLE / 2;
}

int
espalier_distributed_agree_nonfinite (EspalierDistributed *self,
                                      gboolean             own,
                                      gboolean             failed,
                                      gboolean             nan,
                                      int                  layer,
                                      EsNonfiniteKind      what,
                                      gboolean            *bad_failed,
                                      gboolean            *bad_nan,
                                      int                 *bad_layer,
                                      EsNonfiniteKind     *bad_what)
{
  enum { K = 5 };   /* per rank: own, failed, nan, layer, what */
  g_autofree double *v = g_new0 (double, K * (gsize) self->size);
  int bad = -1;

  v[K * self->rank] = own ? 1 : 0;
  v[K * self->rank + 1] = failed ? 1 : 0;
  v[K * self->rank + 2] = nan ? 1 : 0;
  v[K * self->rank + 3] = layer;
  v[K * self->rank + 4] = what;
  allreduce_doubles (self, v, K * self->size, MPI_SUM, _("The check of where the loss went bad"));
  for (int r = 0; r < self->size; r++)
    if (bad_key (v + K * r) < G_MAXDOUBLE
        && (bad < 0 || bad_key (v + K * r) < bad_key (v + K * bad)))
      bad = r;
  *bad_failed = bad >= 0 && v[K * bad + 1] != 0;
  *bad_nan = bad >= 0 && v[K * bad + 2] != 0;
  *bad_layer = bad >= 0 && !*bad_failed ? (int) v[K * bad + 3] : -1;
  *bad_what = bad >= 0 && !*bad_failed ? (EsNonfiniteKind) v[K * bad + 4] : ES_NONFINITE_NONE;
  /* a rank that failed otherwise keeps its own error, and ends the job with it */
  self->shared_error = !failed;
  return bad;
}

/* ESPALIER_TEST_NAN_INPUT=R:S, for tests: rank R trains step S with a NaN for its
 * batch's first input, as a rank reading damaged data would. Read once, when set. */
static void
nan_test_parse (EspalierDistributed *self)
{
  const char *v = g_getenv ("ESPALIER_TEST_NAN_INPUT");
  long long step = 0;
  int rank = -1;

  self->nan_step = 0;
  if (v != NULL && sscanf (v, "%d:%lld", &rank, &step) == 2 && rank >= 0 && step > 0)
    {
      self->nan_rank = rank;
      self->nan_step = step;
    }
}

/* In next: the poisoned float copy of this rank's part, when it is the test's step. */
static void
nan_test_inject (EspalierDistributed *self)
{
  EspalierBatch *b = &self->local;
  gsize n = (gsize) b->B * (gsize) self->F;

  if (self->nan_step == 0 || self->rank != self->nan_rank
      || self->steps_seen + 1 != self->nan_step || n == 0)
    return;
  self->nan_x = g_renew (float, self->nan_x, n);
  if (b->x != NULL)
    memcpy (self->nan_x, b->x, n * sizeof (float));
  else
    for (gsize i = 0; i < n; i++)
      self->nan_x[i] = b->x_u8[i] * b->scale + b->shift;
  self->nan_x[0] = NAN;
  b->x = self->nan_x;
  b->x_u8 = NULL;
}

/* ------------------------------------------------------------------------------ */
/* a failure of one rank's own pass, shared (and a test's failing pass) */

/* What share_failure sends from the rank that failed: its error, bounded. */
#define SHARED_DOMAIN_MAX  64
#define SHARED_MESSAGE_MAX 1024

typedef struct {
  gint32 code;
  char   domain[SHARED_DOMAIN_MAX];     /* g_quark_to_string of the error's domain */
  char   message[SHARED_MESSAGE_MAX];
} SharedError;

/* src into dest (size bytes with the NUL), made valid UTF-8 and, when it does not fit,
 * cut before a whole character and ended with an ellipsis. */
static void
copy_utf8_bounded (char *dest, gsize size, const char *src)
{
  static const char ellipsis[] = "\xe2\x80\xa6";   /* U+2026, and its NUL */
  g_autofree char *valid = g_utf8_make_valid (src, -1);
  gsize len = strlen (valid), cut;

  if (len < size)
    {
      memcpy (dest, valid, len + 1);
      return;
    }
  cut = size - sizeof ellipsis;
  while (cut > 0 && ((guchar) valid[cut] & 0xC0) == 0x80)   /* inside a character */
    cut--;
  memcpy (dest, valid, cut);
  memcpy (dest + cut, ellipsis, sizeof ellipsis);
}

gboolean
espalier_distributed_share_failure (EspalierDistributed *self,
                                    gboolean             ok,
                                    gboolean             own,
                                    GError             **error)
{
  int first = ok ? self->size : self->rank;   /* the lowest rank that failed */
  SharedError msg = { 0 };
  MPI_Request req;
  GQuark domain;

  self->shared_error = FALSE;
  if (self->size == 1)
    return ok;
  MPI_Iallreduce (MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, self->comm, &req);
  self->comm_s += wait_all (self, 1, &req, _("The check that every rank's pass succeeded"));
  if (first >= self->size)
    return TRUE;

  /* the failure path: that rank's error to every rank */
  if (self->rank == first)
    {
      const GError *e = error != NULL ? *error : NULL;

      msg.code = e != NULL ? e->code : ESPALIER_ERROR_INVALID;
      g_strlcpy (msg.domain, g_quark_to_string (e != NULL ? e->domain : ESPALIER_ERROR),
                 sizeof msg.domain);
      copy_utf8_bounded (msg.message, sizeof msg.message,
                         e != NULL ? e->message : _("unknown error"));
    }
  MPI_Ibcast (&msg, (int) sizeof msg, MPI_BYTE, first, self->comm, &req);
  self->comm_s += wait_all (self, 1, &req, _("Sending the error of the rank that failed"));
  if (!ok && own)
    return FALSE;   /* this rank's device failed: its error stays its own */
  msg.domain[sizeof msg.domain - 1] = '\0';
  msg.message[sizeof msg.message - 1] = '\0';
  domain = msg.domain[0] != '\0' ? g_quark_from_string (msg.domain) : ESPALIER_ERROR;
  {
    g_autofree char *text = g_utf8_make_valid (msg.message, -1);

    g_clear_error (error);
    g_set_error_literal (error, domain, msg.code, text);
    g_prefix_error (error, _("rank %d: "), first);
  }
  self->shared_error = TRUE;
  return FALSE;
}

/* ESPALIER_TEST_EVAL_FAIL=R:E, R:E:alloc[:WHAT], R:test[:alloc[:WHAT]], for tests: rank
 * R's validation pass of epoch E meets a NaN input, or fails as allocating (WHAT, to try
 * long messages) would; R:test: its test evaluation (espalier_distributed_evaluate)
 * fails as allocating would. Read once, when set. */
static void
eval_test_parse (EspalierDistributed *self)
{
  const char *v = g_getenv ("ESPALIER_TEST_EVAL_FAIL");
  g_auto(GStrv) part = NULL;
  gint64 rank = 0;
  guint64 epoch = 0;
  gboolean test;

  self->eval_epoch = 0;
  self->eval_test = FALSE;
  if (v == NULL || *v == '\0')
    return;
  part = g_strsplit (v, ":", 4);
  if (part[0] == NULL || part[1] == NULL
      || !g_ascii_string_to_signed (part[0], 10, 0, G_MAXINT, &rank, NULL))
    return;
  test = g_str_equal (part[1], "test");
  if (!test && !g_ascii_string_to_unsigned (part[1], 10, 1, G_MAXUINT, &epoch, NULL))
    return;
  if (part[2] != NULL && !g_str_equal (part[2], "alloc"))
    return;
  self->eval_rank = (int) rank;
  self->eval_epoch = (guint) epoch;
  self->eval_test = test;
  self->eval_alloc = test || part[2] != NULL;
  g_free (self->eval_what);
  self->eval_what = part[2] != NULL ? g_strdup (part[3]) : NULL;
}

/* The error of the test's failing allocation (a test's own words: not for translators). */
static void
eval_test_alloc_error (GError **error, const char *what)
{
  g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY,
               "Not enough memory for %s (ESPALIER_TEST_EVAL_FAIL)", what);
}

int
espalier_distributed_test_eval_fault (EspalierDistributed *self, guint epoch, GError **error)
{
  if (self->eval_epoch == 0 || epoch != self->eval_epoch || self->rank != self->eval_rank)
    return 0;
  if (!self->eval_alloc)
    return 1;
  eval_test_alloc_error (error, self->eval_what != NULL ? self->eval_what
                                                       : "the validation batches");
  return -1;
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
  if (!install_stat_reduce (self, tr, error))
    return FALSE;
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
  nan_test_inject (self);
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
  if (count > 0 && self->eval_test && self->rank == self->eval_rank)
    {
      eval_test_alloc_error (error, self->eval_what != NULL ? self->eval_what
                                                           : "the test batches");
      ok = FALSE;
    }
  else if (count > 0)
    ok = espalier_evaluate (model, dataset, rows + first, count, loss, threads, metrics, error);
  else
    {
      guint nc = espalier_dataset_get_n_classes (dataset);

      espalier_metrics_clear (metrics);
      metrics->n_classes = nc;
      if (nc > 0)
        metrics->confusion = g_new0 (guint, (gsize) nc * nc);
    }
  /* A failure here is this rank's alone: the ranks agree on it and every rank fails with
   * the error of the first that did. */
  if (!espalier_distributed_share_failure (self, ok, FALSE, error))
    {
      espalier_metrics_clear (metrics);
      return FALSE;
    }
  return espalier_distributed_reduce_metrics (self, metrics, error);
}

#else /* !ESPALIER_HAVE_MPI */

void espalier_distributed_set_sync_batchnorm (EspalierDistributed *self, gboolean on) { }
gboolean espalier_distributed_get_sync_batchnorm (EspalierDistributed *self) { return FALSE; }

int
espalier_distributed_agree_nonfinite (EspalierDistributed *self, gboolean own, gboolean failed,
                                      gboolean nan, int layer, EsNonfiniteKind what,
                                      gboolean *bad_failed, gboolean *bad_nan, int *bad_layer,
                                      EsNonfiniteKind *bad_what)
{
  *bad_failed = failed;
  *bad_nan = nan;
  *bad_layer = own ? layer : -1;
  *bad_what = own ? what : ES_NONFINITE_NONE;
  return own ? 0 : -1;
}

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
espalier_distributed_share_failure (EspalierDistributed *self, gboolean ok, gboolean own,
                                    GError **error)
{
  return ok;
}

int
espalier_distributed_test_eval_fault (EspalierDistributed *self, guint epoch, GError **error)
{
  return 0;
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
