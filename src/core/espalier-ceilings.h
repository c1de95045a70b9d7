/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-ceilings.h: the machine's ceilings (es-ceiling.h: peak GFLOP/s of the CPU
 * backend's matrix product, copy bandwidth), measured once and cached in
 * $XDG_CACHE_HOME/espalier/ceilings.json, keyed by CPU model, thread count and the
 * matrix-product path. A missing, corrupt or foreign cache is measured again and
 * rewritten, never an error. */
#pragma once

#include <glib.h>

#include "es-ceiling.h"

G_BEGIN_DECLS

/* The ceilings of the CPU backend on `threads` compute threads (0: the number of
 * cores): from the cache when it holds this machine's key and remeasure is FALSE
 * (out->cached TRUE), else measured (about a third of a second) and stored
 * (out->cached FALSE). A cache that cannot be written is only a warning. FALSE and
 * error set when the backend cannot start or the measurement fails. */
gboolean  espalier_ceilings_get        (guint        threads,
                                        gboolean     remeasure,
                                        EsCeilings  *out,
                                        GError     **error);

/* The cache file's path (newly allocated). */
char     *espalier_ceilings_cache_path (void);

/* This CPU's model name from /proc/cpuinfo, or "unknown" (newly allocated). */
char     *espalier_ceilings_cpu_model  (void);

G_END_DECLS
