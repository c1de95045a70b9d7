/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-nccl.c: NCCL loaded at run time (espalier-nccl.h): dlopen of the library and
 * dlsym of the handful of functions the gradient allreduce uses. Nothing here calls
 * NCCL; espalier-distributed.c does. */
#include "config.h"

#include <dlfcn.h>
#include <glib/gi18n-lib.h>
#include <string.h>

#include "espalier-error.h"
#include "espalier-nccl.h"

static EspalierNccl nccl;
static char *failure;   /* why it could not be loaded, or NULL */

/* Fills nccl, or sets failure. Once. */
static void
load (void)
{
  const char *env = g_getenv ("ESPALIER_NCCL_LIBRARY");
  const char *path = env != NULL && *env != '\0' ? env : "libnccl.so.2";
  const char *off = g_getenv ("ESPALIER_NCCL");
  struct {
    const char *name;
    void      **slot;
    gboolean    optional;
  } syms[] = {
    { "ncclGetUniqueId",       (void **) &nccl.get_unique_id, FALSE },
    { "ncclCommInitRank",      (void **) &nccl.comm_init_rank, FALSE },
    { "ncclAllReduce",         (void **) &nccl.all_reduce, FALSE },
    { "ncclCommDestroy",       (void **) &nccl.comm_destroy, FALSE },
    { "ncclCommAbort",         (void **) &nccl.comm_abort, FALSE },
    { "ncclCommGetAsyncError", (void **) &nccl.comm_get_async_error, FALSE },
    { "ncclGetErrorString",    (void **) &nccl.get_error_string, TRUE },
  };
  int (*get_version) (int *version);
  void *lib;

  if (off != NULL && strcmp (off, "0") == 0)
    {
      failure = g_strdup (_("turned off by ESPALIER_NCCL=0"));
      return;
    }
  /* RTLD_LOCAL: its symbols stay its own; RTLD_NOW: a library missing one of its own
   * dependencies fails here, not at the first collective. */
  lib = dlopen (path, RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL)
    {
      const char *why = dlerror ();

      failure = g_strdup_printf (_("%s cannot be loaded (%s)"), path,
                                 why != NULL ? why : _("unknown error"));
      return;
    }
  for (gsize i = 0; i < G_N_ELEMENTS (syms); i++)
    {
      *syms[i].slot = dlsym (lib, syms[i].name);
      if (*syms[i].slot == NULL && !syms[i].optional)
        {
          failure = g_strdup_printf (_("%s has no %s: it is not NCCL 2.4 or newer"), path,
                                     syms[i].name);
          dlclose (lib);
          memset (&nccl, 0, sizeof nccl);
          return;
        }
    }
  *(void **) &get_version = dlsym (lib, "ncclGetVersion");
  if (get_version == NULL || get_version (&nccl.version) != ESPALIER_NCCL_SUCCESS)
    nccl.version = 0;
  nccl.path = g_strdup (path);
  /* kept for the process: communicators may outlive any one run */
}

const EspalierNccl *
espalier_nccl_get (GError **error)
{
  static gsize once = 0;

  if (g_once_init_enter (&once))
    {
      load ();
      g_once_init_leave (&once, 1);
    }
  if (failure != NULL)
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED, "%s", failure);
      return NULL;
    }
  return &nccl;
}

const char *
espalier_nccl_error_string (const EspalierNccl *n, EspalierNcclResult result)
{
  const char *s;

  if (n != NULL && n->get_error_string != NULL
      && (s = n->get_error_string (result)) != NULL)
    return s;
  switch (result)
    {
    case ESPALIER_NCCL_SUCCESS: return "no error";
    case ESPALIER_NCCL_UNHANDLED_CUDA_ERROR: return "unhandled cuda error";
    case ESPALIER_NCCL_SYSTEM_ERROR: return "unhandled system error";
    case ESPALIER_NCCL_INTERNAL_ERROR: return "internal error";
    case ESPALIER_NCCL_INVALID_ARGUMENT: return "invalid argument";
    case ESPALIER_NCCL_INVALID_USAGE: return "invalid usage";
    case ESPALIER_NCCL_REMOTE_ERROR: return "remote process exited or there was a network error";
    case ESPALIER_NCCL_IN_PROGRESS: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}
