/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-device.h: the devices a model can train on (the CPU and the CUDA devices of
 * es-cuda.h), listed as the CLI's `devices` command and the Train page show them; the
 * user's choice of one (ESPALIER_DEVICE_*, "auto", "cpu", "cuda:N"); and the backend
 * for a choice, falling back to the CPU with a message when CUDA cannot start. Works
 * the same in a build without CUDA: the list is then the CPU alone. Not a scheduler:
 * one run, one device. */
#pragma once

#include <glib.h>

#include "es-backend.h"
#include "es-cuda.h"

G_BEGIN_DECLS

/* A device choice (EspalierTrainOptions.device): one of these, or a CUDA device
 * index (>= 0). */
#define ESPALIER_DEVICE_AUTO  (-2)   /* the first CUDA device when one can be used, else the CPU */
#define ESPALIER_DEVICE_CPU   (-1)

typedef struct {
  gint             device;   /* ESPALIER_DEVICE_CPU or a CUDA device index */
  char            *name;     /* the CPU's model name, or the GPU's */
  guint            cores;    /* CPU: processors this process may use; 0 for a GPU */
  EsCudaDeviceInfo cuda;     /* CUDA devices: es_cuda_device_info's fields */
} EspalierDevice;

/* (element-type EspalierDevice) the CPU first, then each CUDA device that can be
 * queried. no_cuda (may be NULL) gets why there is no CUDA device in the list (the
 * engine's reason: no device or driver, a driver too old, a build without CUDA), or
 * NULL when there is one. */
GArray   *espalier_devices_list             (char      **no_cuda);

/* CUDA devices the process can use (0 without a device, a driver or CUDA support).
 * The first call may load the CUDA backend's module (see espalier-device.c). */
guint     espalier_cuda_device_count        (void);
/* Why no CUDA device can be used, NULL when one can. (transfer full) */
char     *espalier_cuda_unavailable_reason  (void);

/* "auto", "cpu", "cuda" (device 0) or "cuda:N" into a choice. A CUDA index must name
 * a device of this machine, except 0, which is accepted without one (the run then
 * falls back to the CPU and says so). FALSE with ESPALIER_ERROR_INVALID otherwise. */
gboolean  espalier_device_parse             (const char  *text,
                                             gint        *device,
                                             GError     **error);
/* The choice as espalier_device_parse reads it: "auto", "cpu", "cuda:0". */
char     *espalier_device_to_string         (gint         device);
/* The choice for people: "CPU", "CUDA 0: NVIDIA H200 (139.8 GiB)", "Automatic". */
char     *espalier_device_describe          (gint         device);

/* A CUDA device's details as they are now (free memory, NVML's readings); FALSE for
 * the CPU or a device that cannot be queried. */
gboolean  espalier_device_get_cuda_info     (gint              device,
                                             EsCudaDeviceInfo *info);

/* A backend for device on budget (may be NULL), the CPU's with threads compute
 * threads (0: every core). A CUDA device asked for by index that cannot start (no
 * device or driver, a build without CUDA, a budget too small for the backend's own
 * buffers) gives the CPU backend and fallback (may be NULL) a message saying why;
 * ESPALIER_DEVICE_AUTO falls back silently. tf32: TF32 tensor cores for the CUDA
 * matrix products. NULL and error only when the CPU backend cannot start either. */
EsBackend *espalier_backend_new             (gint         device,
                                             guint        threads,
                                             EsBudget    *budget,
                                             gboolean     tf32,
                                             char       **fallback,
                                             GError     **error);
/* The device a backend runs on: a CUDA index, or ESPALIER_DEVICE_CPU. */
gint      espalier_backend_get_device       (EsBackend   *be);
/* On a CUDA backend, waits for its queued work and turns a recorded CUDA or cuBLAS
 * failure (es_cuda_backend_check: the call, file and line) into a GError of
 * ESPALIER_ERROR (its code from the engine's status). TRUE on the CPU backend. */
gboolean  espalier_backend_check            (EsBackend   *be,
                                             GError     **error);

/* Frees what dev holds (the list's clear function). */
void      espalier_device_clear             (EspalierDevice *dev);

G_END_DECLS
