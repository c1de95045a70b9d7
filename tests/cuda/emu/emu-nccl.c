/* SPDX-License-Identifier: GPL-3.0-or-later */
/* emu-nccl.c: an emulated NCCL over MPI, for testing the NCCL path of the data-parallel
 * gradient allreduce (src/core/espalier-distributed.c) where there is no GPU. Built as
 * libnccl-emu.so; tests/cli/test-mpi.c names it in ESPALIER_NCCL_LIBRARY and runs the
 * ranks on the CUDA emulation's backend (es-cuda-emu.h), whose device memory is host
 * memory, so a reduction of "device" gradients is an MPI reduction of the same floats.
 *
 * What it does: the functions espalier-nccl.h loads, with nccl.h's ABI (the types are
 * espalier-nccl.h's; emu-nccl-abi.c checks them against nccl.h when a toolkit has it).
 * ncclGetUniqueId gives random bytes; ncclCommInitRank makes the communicator from
 * MPI_COMM_WORLD (the id is not needed to find the peers) after checking that the rank
 * count and rank are MPI's, that every rank got the same id (its hash, compared over
 * MPI) and that rank 0's is the one its ncclGetUniqueId made. ncclAllReduce starts an
 * MPI_Iallreduce (fp32, sum; in place when the buffers are the same) and ignores the
 * stream: the emulation runs every CUDA call at once, so the reduction is the one thing
 * still in flight, and ncclCommGetAsyncError answers ncclInProgress until it is done
 * (as NCCL does for a nonblocking communicator), letting MPI progress. The caller must
 * not touch the buffers until then, which the gradient path does not.
 *
 * For tests of the failure paths: ESPALIER_NCCL_EMU_FAIL_INIT=R makes ncclCommInitRank
 * fail on rank R (after the others' checks, so nobody hangs).
 *
 * Not emulated: other types, operations, groups, nonblocking initialisation. Test code
 * only. */
#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "espalier-nccl.h"

#define EXPORT __attribute__ ((visibility ("default")))

/* nccl.h's functions, with espalier-nccl.h's names for its types */
EXPORT EspalierNcclResult ncclGetUniqueId       (EspalierNcclUniqueId *id);
EXPORT EspalierNcclResult ncclCommInitRank      (EspalierNcclComm *comm, int nranks,
                                                 EspalierNcclUniqueId id, int rank);
EXPORT EspalierNcclResult ncclAllReduce         (const void *sendbuff, void *recvbuff,
                                                 size_t count, EspalierNcclDataType type,
                                                 EspalierNcclRedOp op, EspalierNcclComm comm,
                                                 void *stream);
EXPORT EspalierNcclResult ncclCommGetAsyncError (EspalierNcclComm comm,
                                                 EspalierNcclResult *async_error);
EXPORT EspalierNcclResult ncclCommDestroy       (EspalierNcclComm comm);
EXPORT EspalierNcclResult ncclCommAbort         (EspalierNcclComm comm);
EXPORT const char        *ncclGetErrorString    (EspalierNcclResult result);
EXPORT EspalierNcclResult ncclGetVersion        (int *version);

struct EspalierNcclCommImpl
{
  MPI_Comm     comm;
  int          rank, size;
  MPI_Request *reqs;   /* (n_reqs) allreduces in flight */
  int          n_reqs, cap_reqs;
  int          failed;
};

static EspalierNcclUniqueId made;   /* the last id this process made */
static int have_made;

/* FNV-1a over the id. */
static unsigned long long
hash_id (const EspalierNcclUniqueId *id)
{
  unsigned long long h = 14695981039346656037ull;

  for (int i = 0; i < ESPALIER_NCCL_UNIQUE_ID_BYTES; i++)
    h = (h ^ (unsigned char) id->internal[i]) * 1099511628211ull;
  return h;
}

EXPORT EspalierNcclResult
ncclGetUniqueId (EspalierNcclUniqueId *id)
{
  unsigned int seed = (unsigned int) (MPI_Wtime () * 1e6);

  if (id == NULL)
    return ESPALIER_NCCL_INVALID_ARGUMENT;
  for (int i = 0; i < ESPALIER_NCCL_UNIQUE_ID_BYTES; i++)
    id->internal[i] = (char) (rand_r (&seed) & 0xff);
  made = *id;
  have_made = 1;
  return ESPALIER_NCCL_SUCCESS;
}

EXPORT EspalierNcclResult
ncclCommInitRank (EspalierNcclComm *comm, int nranks, EspalierNcclUniqueId id, int rank)
{
  const char *fail = getenv ("ESPALIER_NCCL_EMU_FAIL_INIT");
  struct EspalierNcclCommImpl *c;
  unsigned long long h[2];
  int inited = 0, world_rank, world_size, bad;

  if (comm == NULL)
    return ESPALIER_NCCL_INVALID_ARGUMENT;
  *comm = NULL;
  MPI_Initialized (&inited);
  if (!inited)
    return ESPALIER_NCCL_INVALID_USAGE;
  MPI_Comm_rank (MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size (MPI_COMM_WORLD, &world_size);
  /* the same id everywhere: the min and the max of its hash agree */
  h[0] = hash_id (&id);
  h[1] = ~h[0];
  MPI_Allreduce (MPI_IN_PLACE, h, 2, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
  bad = h[0] != ~h[1]
        || nranks != world_size || rank != world_rank
        || (rank == 0 && (!have_made || memcmp (&made, &id, sizeof id) != 0));
  c = calloc (1, sizeof *c);
  if (c == NULL)
    abort ();
  /* collective: every rank makes it, then those that fail drop theirs */
  MPI_Comm_dup (MPI_COMM_WORLD, &c->comm);
  MPI_Comm_set_errhandler (c->comm, MPI_ERRORS_RETURN);
  if (bad || (fail != NULL && *fail != '\0' && atoi (fail) == rank))
    {
      MPI_Comm_free (&c->comm);
      free (c);
      return bad ? ESPALIER_NCCL_INVALID_ARGUMENT : ESPALIER_NCCL_SYSTEM_ERROR;
    }
  c->rank = rank;
  c->size = nranks;
  *comm = c;
  return ESPALIER_NCCL_SUCCESS;
}

EXPORT EspalierNcclResult
ncclAllReduce (const void *sendbuff, void *recvbuff, size_t count, EspalierNcclDataType type,
               EspalierNcclRedOp op, EspalierNcclComm comm, void *stream)
{
  MPI_Request *grown;

  (void) stream;
  if (comm == NULL || recvbuff == NULL || (sendbuff == NULL && count > 0))
    return ESPALIER_NCCL_INVALID_ARGUMENT;
  if (type != ESPALIER_NCCL_FLOAT32 || op != ESPALIER_NCCL_SUM || count > INT_MAX)
    return ESPALIER_NCCL_INVALID_ARGUMENT;
  if (comm->failed)
    return ESPALIER_NCCL_REMOTE_ERROR;
  if (comm->n_reqs == comm->cap_reqs)
    {
      int cap = comm->cap_reqs > 0 ? 2 * comm->cap_reqs : 8;

      grown = realloc (comm->reqs, (size_t) cap * sizeof *grown);
      if (grown == NULL)
        return ESPALIER_NCCL_SYSTEM_ERROR;
      comm->reqs = grown;
      comm->cap_reqs = cap;
    }
  if (MPI_Iallreduce (sendbuff == recvbuff ? MPI_IN_PLACE : sendbuff, recvbuff, (int) count,
                      MPI_FLOAT, MPI_SUM, comm->comm, &comm->reqs[comm->n_reqs])
      != MPI_SUCCESS)
    return ESPALIER_NCCL_SYSTEM_ERROR;
  comm->n_reqs++;
  return ESPALIER_NCCL_SUCCESS;
}

EXPORT EspalierNcclResult
ncclCommGetAsyncError (EspalierNcclComm comm, EspalierNcclResult *async_error)
{
  int done = 0;

  if (comm == NULL || async_error == NULL)
    return ESPALIER_NCCL_INVALID_ARGUMENT;
  if (!comm->failed && comm->n_reqs > 0)
    {
      if (MPI_Testall (comm->n_reqs, comm->reqs, &done, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
        comm->failed = 1;
      else if (done)
        comm->n_reqs = 0;
    }
  *async_error = comm->failed ? ESPALIER_NCCL_REMOTE_ERROR
                 : comm->n_reqs > 0 ? ESPALIER_NCCL_IN_PROGRESS : ESPALIER_NCCL_SUCCESS;
  return ESPALIER_NCCL_SUCCESS;
}

static void
comm_free (EspalierNcclComm comm)
{
  /* requests still in flight (an abort) are left to MPI, which the job then ends */
  MPI_Comm_free (&comm->comm);
  free (comm->reqs);
  free (comm);
}

EXPORT EspalierNcclResult
ncclCommDestroy (EspalierNcclComm comm)
{
  if (comm == NULL)
    return ESPALIER_NCCL_INVALID_ARGUMENT;
  if (comm->n_reqs > 0 && !comm->failed)
    MPI_Waitall (comm->n_reqs, comm->reqs, MPI_STATUSES_IGNORE);
  comm_free (comm);
  return ESPALIER_NCCL_SUCCESS;
}

EXPORT EspalierNcclResult
ncclCommAbort (EspalierNcclComm comm)
{
  if (comm == NULL)
    return ESPALIER_NCCL_INVALID_ARGUMENT;
  comm_free (comm);
  return ESPALIER_NCCL_SUCCESS;
}

EXPORT const char *
ncclGetErrorString (EspalierNcclResult result)
{
  switch (result)
    {
    case ESPALIER_NCCL_SUCCESS: return "no error (emulated NCCL)";
    case ESPALIER_NCCL_SYSTEM_ERROR: return "unhandled system error (emulated NCCL)";
    case ESPALIER_NCCL_INVALID_ARGUMENT: return "invalid argument (emulated NCCL)";
    case ESPALIER_NCCL_INVALID_USAGE: return "invalid usage (emulated NCCL)";
    case ESPALIER_NCCL_REMOTE_ERROR:
      return "remote process exited or there was a network error (emulated NCCL)";
    case ESPALIER_NCCL_IN_PROGRESS: return "NCCL operation in progress (emulated NCCL)";
    default: return "unknown result code (emulated NCCL)";
    }
}

EXPORT EspalierNcclResult
ncclGetVersion (int *version)
{
  if (version == NULL)
    return ESPALIER_NCCL_INVALID_ARGUMENT;
  *version = 0;   /* not a real NCCL */
  return ESPALIER_NCCL_SUCCESS;
}
