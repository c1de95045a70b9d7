/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-nccl.h: NCCL (NVIDIA's collectives library), loaded at run time for the
 * data-parallel gradient allreduce on CUDA (espalier-distributed.c). Never linked:
 * programs start and train where it is absent, and core builds without CUDA. The few
 * types we pass across are declared here, with the values nccl.h documents (NCCL 2.x:
 * an opaque communicator pointer, a 128-byte unique id, int enums); when a CUDA toolkit
 * with nccl.h is found, tests/cuda/emu/emu-nccl-abi.c checks them against it at build
 * time.
 *
 * Which library: $ESPALIER_NCCL_LIBRARY names a file (the tests point it at an
 * emulation over MPI, tests/cuda/emu/emu-nccl.c); otherwise "libnccl.so.2" as the
 * dynamic linker finds it. ESPALIER_NCCL=0 turns NCCL off. Loaded once per process,
 * on first use, and kept.
 *
 * Not here: any CUDA call (the stream NCCL works on is the CUDA backend's, reached
 * through its module), nor groups, other reductions or other types: the gradients are
 * fp32 and summed. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct EspalierNcclCommImpl *EspalierNcclComm;   /* ncclComm_t */

#define ESPALIER_NCCL_UNIQUE_ID_BYTES 128
typedef struct {
  char internal[ESPALIER_NCCL_UNIQUE_ID_BYTES];
} EspalierNcclUniqueId;                                   /* ncclUniqueId */

typedef enum {                                            /* ncclResult_t */
  ESPALIER_NCCL_SUCCESS = 0,
  ESPALIER_NCCL_UNHANDLED_CUDA_ERROR = 1,
  ESPALIER_NCCL_SYSTEM_ERROR = 2,
  ESPALIER_NCCL_INTERNAL_ERROR = 3,
  ESPALIER_NCCL_INVALID_ARGUMENT = 4,
  ESPALIER_NCCL_INVALID_USAGE = 5,
  ESPALIER_NCCL_REMOTE_ERROR = 6,
  ESPALIER_NCCL_IN_PROGRESS = 7,
} EspalierNcclResult;

typedef enum {                                            /* ncclDataType_t */
  ESPALIER_NCCL_FLOAT32 = 7,
} EspalierNcclDataType;

typedef enum {                                            /* ncclRedOp_t */
  ESPALIER_NCCL_SUM = 0,
} EspalierNcclRedOp;

/* The functions we use, looked up in the loaded library (nccl.h names them). */
typedef struct {
  EspalierNcclResult (*get_unique_id)  (EspalierNcclUniqueId *id);           /* ncclGetUniqueId */
  EspalierNcclResult (*comm_init_rank) (EspalierNcclComm *comm, int nranks,
                                        EspalierNcclUniqueId id, int rank);  /* ncclCommInitRank */
  EspalierNcclResult (*all_reduce)     (const void *sendbuff, void *recvbuff, size_t count,
                                        EspalierNcclDataType type, EspalierNcclRedOp op,
                                        EspalierNcclComm comm, void *stream); /* ncclAllReduce */
  EspalierNcclResult (*comm_destroy)   (EspalierNcclComm comm);              /* ncclCommDestroy */
  EspalierNcclResult (*comm_abort)     (EspalierNcclComm comm);              /* ncclCommAbort */
  EspalierNcclResult (*comm_get_async_error) (EspalierNcclComm comm,
                                              EspalierNcclResult *async_error);
  const char        *(*get_error_string) (EspalierNcclResult result);       /* ncclGetErrorString */
  int                 version;   /* ncclGetVersion's (22805 = 2.28.5), 0 when it has none */
  char               *path;      /* the file loaded, as it was named */
} EspalierNccl;

/* NCCL, loaded on the first call (thread-safe) and kept for the process; NULL and error
 * (ESPALIER_ERROR_UNSUPPORTED, saying which file and why, or that ESPALIER_NCCL=0 turned
 * it off) when it cannot be had. Every later call gives the same answer. */
const EspalierNccl *espalier_nccl_get            (GError            **error);

/* The library's text for result, or ours for the codes nccl.h documents (never NULL). */
const char         *espalier_nccl_error_string   (const EspalierNccl *nccl,
                                                  EspalierNcclResult  result);

G_END_DECLS
