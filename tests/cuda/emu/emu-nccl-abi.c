/* SPDX-License-Identifier: GPL-3.0-or-later */
/* emu-nccl-abi.c: espalier-nccl.h's own declarations of NCCL's types against nccl.h, at
 * build time, where a CUDA toolkit brings nccl.h (core declares them itself so that it
 * builds without CUDA, and loads NCCL at run time). Compiled into libnccl-emu.so; it
 * has no code. */
#include <nccl.h>

#include "espalier-nccl.h"

_Static_assert (sizeof (EspalierNcclUniqueId) == sizeof (ncclUniqueId), "ncclUniqueId");
_Static_assert (ESPALIER_NCCL_UNIQUE_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "NCCL_UNIQUE_ID_BYTES");
_Static_assert (sizeof (EspalierNcclComm) == sizeof (ncclComm_t), "ncclComm_t");
_Static_assert (sizeof (EspalierNcclResult) == sizeof (ncclResult_t), "ncclResult_t");
_Static_assert (sizeof (EspalierNcclDataType) == sizeof (ncclDataType_t), "ncclDataType_t");
_Static_assert (sizeof (EspalierNcclRedOp) == sizeof (ncclRedOp_t), "ncclRedOp_t");
_Static_assert ((int) ESPALIER_NCCL_SUCCESS == (int) ncclSuccess, "ncclSuccess");
_Static_assert ((int) ESPALIER_NCCL_UNHANDLED_CUDA_ERROR == (int) ncclUnhandledCudaError, "");
_Static_assert ((int) ESPALIER_NCCL_SYSTEM_ERROR == (int) ncclSystemError, "ncclSystemError");
_Static_assert ((int) ESPALIER_NCCL_INTERNAL_ERROR == (int) ncclInternalError, "");
_Static_assert ((int) ESPALIER_NCCL_INVALID_ARGUMENT == (int) ncclInvalidArgument, "");
_Static_assert ((int) ESPALIER_NCCL_INVALID_USAGE == (int) ncclInvalidUsage, "ncclInvalidUsage");
_Static_assert ((int) ESPALIER_NCCL_REMOTE_ERROR == (int) ncclRemoteError, "ncclRemoteError");
_Static_assert ((int) ESPALIER_NCCL_IN_PROGRESS == (int) ncclInProgress, "ncclInProgress");
_Static_assert ((int) ESPALIER_NCCL_FLOAT32 == (int) ncclFloat32, "ncclFloat32");
_Static_assert ((int) ESPALIER_NCCL_SUM == (int) ncclSum, "ncclSum");
