/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-dataset-cache.h: the binary cache of loaded and preprocessed datasets, so
 * the next load of the same file with the same options is a read instead of a parse.
 *
 * A cache file is named by a key: a hash of the source files' contents (the bytes as
 * stored, compressed or not) and of the options that shape the result. Hashing 30 MB
 * of gzip every time would cost what the cache saves, so a small "quick key" entry per
 * file maps (path, size, mtime, ctime, inode) to its content hash; a changed file
 * misses it and is hashed again. Files are written to a temporary name and renamed,
 * carry a checksum of everything in them, and a cache file that is truncated, corrupt,
 * from another version or for another key is ignored (and rewritten by the loader),
 * never trusted. */
#pragma once

#include "espalier-dataset.h"

G_BEGIN_DECLS

/* A fast 64-bit hash (xxh64-style) of data, continued from seed. */
guint64          espalier_hash64                    (gconstpointer     data,
                                                     gsize             length,
                                                     guint64           seed);

/* The cache directory options name, or g_get_user_cache_dir()/espalier. */
char            *espalier_dataset_cache_dir         (const EspalierLoadOptions *options);

/* The content hash of the file at path. When cache_dir has a quick-key entry matching
 * the file's stat, that; else the file is read (returned in *contents when not NULL, so
 * the caller need not read it again), hashed and the entry written. */
gboolean         espalier_dataset_cache_hash_file   (const char       *cache_dir,
                                                     const char       *path,
                                                     guint64          *hash,
                                                     GBytes          **contents,
                                                     GCancellable     *cancellable,
                                                     GError          **error);

/* The path of the cache file for key in cache_dir. */
char            *espalier_dataset_cache_path        (const char       *cache_dir,
                                                     guint64           key);

/* Write dataset to path atomically, tagged with key. */
gboolean         espalier_dataset_cache_write       (EspalierDataset  *dataset,
                                                     const char       *path,
                                                     guint64           key,
                                                     GError          **error);
/* Read a cache file written for key. A file that is missing gives NOT_FOUND; one that
 * is truncated, fails its checksum or was written for another key or version gives
 * ESPALIER_DATA_ERROR_CORRUPT (or _TRUNCATED): callers treat both as a miss. */
EspalierDataset *espalier_dataset_cache_read        (const char       *path,
                                                     guint64           key,
                                                     GCancellable     *cancellable,
                                                     GError          **error);

G_END_DECLS
