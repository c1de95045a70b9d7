/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-save.h: atomic, durable writes of the files a user keeps (models, projects,
 * exports). A file is written to a temporary file beside its target (".NAME.XXXXXX",
 * same directory, so same file system), synced, renamed over the target, and the
 * directory is synced, so that after a crash or a power cut the target is the old file
 * or the new one, whole, never a mix or a truncation.
 *
 * A temporary file is locked (flock) while its writer lives; one left behind by a writer
 * that was killed is removed by the next save of the same target. The new file keeps
 * the permissions of the one it replaces.
 *
 * Not here: what is written (espalier-json-private.h, the exporters). */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* One file being written, from espalier_atomic_open to espalier_atomic_commit; always
 * end with espalier_atomic_clear (it removes the temporary file when not committed). */
typedef struct {
  char *path;       /* the target */
  char *tmp_path;   /* the temporary file next to it, until committed */
  int   fd;         /* open (and locked) until committed or cleared */
} EspalierAtomicFile;

#define ESPALIER_ATOMIC_FILE_INIT { NULL, NULL, -1 }

/* Create the temporary file for path (first removing those of writers that died). */
gboolean espalier_atomic_open         (EspalierAtomicFile *af,
                                       const char         *path,
                                       GError            **error);
/* Append len bytes; sum (may be NULL) is updated with them. */
gboolean espalier_atomic_write        (EspalierAtomicFile *af,
                                       const void         *data,
                                       gsize               len,
                                       GChecksum          *sum,
                                       GError            **error);
/* data (n) as little-endian float32, whatever the host order. */
gboolean espalier_atomic_write_floats (EspalierAtomicFile *af,
                                       const float        *data,
                                       gint64              n,
                                       GChecksum          *sum,
                                       GError            **error);
/* fsync the temporary file: its contents are on disk. Several files can be synced
 * before the first is committed, so a set of files changes together as far as renames
 * allow. */
gboolean espalier_atomic_sync         (EspalierAtomicFile *af,
                                       GError            **error);
/* Rename the synced temporary file over the target and sync the directory. */
gboolean espalier_atomic_commit       (EspalierAtomicFile *af,
                                       GError            **error);
/* Remove the temporary file if it is still there, and free what af holds. */
void     espalier_atomic_clear        (EspalierAtomicFile *af);

/* fsync the directory holding path, so that a rename or link in it is durable.
 * Failures are ignored (some file systems cannot sync a directory). */
void     espalier_sync_directory      (const char         *path);

/* The whole sequence for data in memory: path holds data (len bytes), or, on failure
 * (G_IO_ERROR naming the file, or G_IO_ERROR_CANCELLED when cancellable is cancelled
 * before the rename), what it held before. */
gboolean espalier_save_atomic         (const char         *path,
                                       const void         *data,
                                       gsize               len,
                                       GCancellable       *cancellable,
                                       GError            **error);

G_END_DECLS
