/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-limits.h: how much memory a load may take, asked before it allocates.
 *
 * The loaders of user files (IDX and CSV datasets, model files, model spec strings,
 * projects) ask here before an allocation that grows with what a file's header or size
 * claims, so that a huge or corrupt file is refused with the size it would need instead
 * of exhausting the machine. This is a guard against the impossible, not an accountant:
 * the engine's memory budget (es-memory.h) does the accounting while training. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Bytes this process can still get: the system's MemAvailable plus free swap, within
 * what its memory cgroup (v2 memory.max, v1 memory.limit_in_bytes) and RLIMIT_AS
 * leave. The environment variable ESPALIER_MEMORY_AVAILABLE (bytes) replaces the
 * figure, to try a small machine (tests and the fuzz harnesses do). G_MAXUINT64 when
 * nothing is known. */
guint64   espalier_memory_available (void);

/* Whether need bytes fit both limit (a memory limit in bytes, 0: none) and
 * espalier_memory_available(). When they do not, *why (may be NULL; g_free it) is the
 * end of a sentence saying so, for the caller's message: "needs 1.0 TB of memory, more
 * than the 23.4 GB available" or "... more than the memory limit of 1.0 MB". */
gboolean  espalier_memory_fits      (guint64      need,
                                     guint64      limit,
                                     char       **why);

G_END_DECLS
