/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-dataset-cache.c: the binary dataset cache and the quick-key entries.
 *
 * A cache file, native byte order (a byte-order mark rejects foreign ones):
 *   header   64 bytes: magic "ESPDSC01", byte-order mark, version, key, meta length,
 *            payload length, meta hash, payload hash, header hash
 *   meta     name, source, shape, scale and shift, classes, feature names, report,
 *            counts: u32 numbers and length-prefixed strings
 *   payload  features (N, F) uint8 or float32, labels (N) int32, targets (N, T) float32
 * Everything is checked before a dataset is made: lengths against the file size, the
 * three hashes, every count in the meta against what remains. The payload is read
 * straight into the dataset's arrays, so a hit costs one read and one hash pass.
 *
 * A quick-key entry, files/<hash of path and stat>: magic "ESQK", version, the quick
 * key, the content hash and a hash of those. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <glib/gi18n-lib.h>
#include <glib/gstdio.h>

#include "espalier-dataset-cache.h"
#include "espalier-dataset-private.h"

#define CACHE_MAGIC      "ESPDSC01"
#define CACHE_VERSION    1u
#define CACHE_BOM        0x01020304u
#define QUICK_MAGIC      0x4b515345u   /* "ESQK" */
#define MAX_META         (64u << 20)

/* xxh64 */

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P3 0x165667B19E3779F9ull
#define P4 0x85EBCA77C2B2AE63ull
#define P5 0x27D4EB2F165667C5ull

static inline guint64
rotl64 (guint64 x,
        int     r)
{
  return (x << r) | (x >> (64 - r));
}

static inline guint64
read64 (const guint8 *p)
{
  guint64 v;

  memcpy (&v, p, 8);
  return GUINT64_FROM_LE (v);
}

static inline guint32
read32 (const guint8 *p)
{
  guint32 v;

  memcpy (&v, p, 4);
  return GUINT32_FROM_LE (v);
}

static inline guint64
xxh_round (guint64 acc,
           guint64 input)
{
  acc += input * P2;
  acc = rotl64 (acc, 31);
  return acc * P1;
}

static inline guint64
xxh_merge (guint64 acc,
           guint64 val)
{
  acc ^= xxh_round (0, val);
  return acc * P1 + P4;
}

guint64
espalier_hash64 (gconstpointer data,
                 gsize         length,
                 guint64       seed)
{
  const guint8 *p = data, *end = p + length;
  guint64 h;

  g_return_val_if_fail (data != NULL || length == 0, 0);

  if (length >= 32)
    {
      const guint8 *limit = end - 32;
      guint64 v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;

      do
        {
          v1 = xxh_round (v1, read64 (p));
          v2 = xxh_round (v2, read64 (p + 8));
          v3 = xxh_round (v3, read64 (p + 16));
          v4 = xxh_round (v4, read64 (p + 24));
          p += 32;
        }
      while (p <= limit);
      h = rotl64 (v1, 1) + rotl64 (v2, 7) + rotl64 (v3, 12) + rotl64 (v4, 18);
      h = xxh_merge (h, v1);
      h = xxh_merge (h, v2);
      h = xxh_merge (h, v3);
      h = xxh_merge (h, v4);
    }
  else
    h = seed + P5;

  h += length;
  for (; p + 8 <= end; p += 8)
    {
      h ^= xxh_round (0, read64 (p));
      h = rotl64 (h, 27) * P1 + P4;
    }
  if (p + 4 <= end)
    {
      h ^= (guint64) read32 (p) * P1;
      h = rotl64 (h, 23) * P2 + P3;
      p += 4;
    }
  for (; p < end; p++)
    {
      h ^= *p * P5;
      h = rotl64 (h, 11) * P1;
    }
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

char *
espalier_dataset_cache_dir (const EspalierLoadOptions *options)
{
  if (options != NULL && options->cache_dir != NULL)
    return g_strdup (options->cache_dir);
  return g_build_filename (g_get_user_cache_dir (), "espalier", NULL);
}

char *
espalier_dataset_cache_path (const char *cache_dir,
                             guint64     key)
{
  g_autofree char *name = NULL;

  g_return_val_if_fail (cache_dir != NULL, NULL);

  name = g_strdup_printf ("%016" G_GINT64_MODIFIER "x.escache", key);
  return g_build_filename (cache_dir, name, NULL);
}

/* Quick keys */

static gboolean
quick_key (const char *path,
           guint64    *key,
           struct stat *st_out)
{
  struct stat st;
  g_autofree char *abs = NULL;
  g_autofree char *text = NULL;

  if (g_stat (path, &st) != 0)
    return FALSE;
  abs = g_canonicalize_filename (path, NULL);
  text = g_strdup_printf ("%s\n%" G_GINT64_FORMAT "\n%" G_GINT64_FORMAT ".%09ld\n%"
                          G_GINT64_FORMAT ".%09ld\n%" G_GUINT64_FORMAT "\n%" G_GUINT64_FORMAT,
                          abs, (gint64) st.st_size, (gint64) st.st_mtim.tv_sec,
                          (long) st.st_mtim.tv_nsec, (gint64) st.st_ctim.tv_sec,
                          (long) st.st_ctim.tv_nsec, (guint64) st.st_ino, (guint64) st.st_dev);
  *key = espalier_hash64 (text, strlen (text), 0x71756963ull);
  if (st_out != NULL)
    *st_out = st;
  return TRUE;
}

static char *
quick_path (const char *cache_dir,
            guint64     qkey)
{
  g_autofree char *name = g_strdup_printf ("%016" G_GINT64_MODIFIER "x", qkey);

  return g_build_filename (cache_dir, "files", name, NULL);
}

typedef struct {
  guint32 magic;
  guint32 version;
  guint64 qkey;
  guint64 content;
  guint64 check;
} QuickEntry;

G_STATIC_ASSERT (sizeof (QuickEntry) == 32);

gboolean
espalier_dataset_cache_hash_file (const char    *cache_dir,
                                  const char    *path,
                                  guint64       *hash,
                                  GBytes       **contents,
                                  GCancellable  *cancellable,
                                  GError       **error)
{
  g_autofree char *qpath = NULL;
  g_autofree char *stored = NULL;
  g_autoptr(GBytes) bytes = NULL;
  struct stat before, after;
  guint64 qkey = 0, qkey_after;
  gsize length = 0;
  gboolean have_key;
  QuickEntry entry;

  g_return_val_if_fail (cache_dir != NULL, FALSE);
  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (hash != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (contents != NULL)
    *contents = NULL;

  have_key = quick_key (path, &qkey, &before);
  if (have_key)
    {
      qpath = quick_path (cache_dir, qkey);
      if (g_file_get_contents (qpath, &stored, &length, NULL) && length == sizeof entry)
        {
          memcpy (&entry, stored, sizeof entry);
          if (entry.magic == QUICK_MAGIC && entry.version == CACHE_VERSION
              && entry.qkey == qkey
              && entry.check == espalier_hash64 (&entry, offsetof (QuickEntry, check), 0))
            {
              *hash = entry.content;
              return TRUE;
            }
        }
    }

  bytes = _espalier_data_read_file (path, cancellable, error);
  if (bytes == NULL)
    return FALSE;
  {
    gsize n;
    gconstpointer data = g_bytes_get_data (bytes, &n);

    *hash = espalier_hash64 (data, n, 0x636f6e74656e74ull);   /* "content" */
  }

  /* Remember it, unless the file changed while it was read. */
  if (have_key && quick_key (path, &qkey_after, &after) && qkey_after == qkey)
    {
      g_autofree char *dir = g_build_filename (cache_dir, "files", NULL);

      entry.magic = QUICK_MAGIC;
      entry.version = CACHE_VERSION;
      entry.qkey = qkey;
      entry.content = *hash;
      entry.check = espalier_hash64 (&entry, offsetof (QuickEntry, check), 0);
      if (g_mkdir_with_parents (dir, 0700) != 0
          || !g_file_set_contents (qpath, (const char *) &entry, sizeof entry, NULL))
        g_debug ("could not write the quick key of %s", path);
    }

  if (contents != NULL)
    *contents = g_steal_pointer (&bytes);
  return TRUE;
}

/* Cache files */

typedef struct {
  char    magic[8];
  guint32 bom;
  guint32 version;
  guint64 key;
  guint64 meta_length;
  guint64 payload_length;
  guint64 meta_hash;
  guint64 payload_hash;
  guint64 header_hash;
} CacheHeader;

G_STATIC_ASSERT (sizeof (CacheHeader) == 64);

static void
put_u32 (GByteArray *b,
         guint32     v)
{
  g_byte_array_append (b, (const guint8 *) &v, 4);
}

static void
put_str (GByteArray *b,
         const char *s)
{
  if (s == NULL)
    {
      put_u32 (b, G_MAXUINT32);
      return;
    }
  put_u32 (b, strlen (s));
  g_byte_array_append (b, (const guint8 *) s, strlen (s));
}

typedef struct {
  const guint8 *p;
  gsize         left;
  gboolean      ok;
} Reader;

static guint32
get_u32 (Reader *r)
{
  guint32 v;

  if (!r->ok || r->left < 4)
    {
      r->ok = FALSE;
      return 0;
    }
  memcpy (&v, r->p, 4);
  r->p += 4;
  r->left -= 4;
  return v;
}

static float
get_f32 (Reader *r)
{
  guint32 bits = get_u32 (r);
  float v;

  memcpy (&v, &bits, 4);
  return v;
}

static char *
get_str (Reader *r)
{
  guint32 n = get_u32 (r);
  char *s;

  if (!r->ok || n == G_MAXUINT32)
    return NULL;
  if (n > r->left || memchr (r->p, '\0', n) != NULL)
    {
      r->ok = FALSE;
      return NULL;
    }
  s = g_strndup ((const char *) r->p, n);
  r->p += n;
  r->left -= n;
  return s;
}

/* A vector of n strings (n + 1 with the NULL), or NULL when one is missing. */
static char **
get_strv (Reader *r,
          guint   n)
{
  char **v;

  if (!r->ok || n > r->left / 4)
    {
      r->ok = FALSE;
      return NULL;
    }
  v = g_new0 (char *, n + 1);
  for (guint i = 0; i < n && r->ok; i++)
    {
      v[i] = get_str (r);
      if (v[i] == NULL)
        r->ok = FALSE;
    }
  if (!r->ok)
    g_clear_pointer (&v, g_strfreev);
  return v;
}

static GByteArray *
serialize_meta (EspalierDataset *ds)
{
  GByteArray *b = g_byte_array_new ();
  guint32 bits;
  guint flags = (ds->u8 != NULL ? 1 : 0) | (ds->labels != NULL ? 2 : 0)
                | (ds->targets != NULL ? 4 : 0) | (ds->feature_names != NULL ? 8 : 0);

  put_str (b, ds->name);
  put_str (b, ds->source);
  put_u32 (b, flags);
  put_u32 (b, ds->n_rows);
  put_u32 (b, ds->rank);
  for (guint i = 0; i < ds->rank; i++)
    put_u32 (b, ds->dims[i]);
  memcpy (&bits, &ds->scale, 4);
  put_u32 (b, bits);
  memcpy (&bits, &ds->shift, 4);
  put_u32 (b, bits);
  put_u32 (b, ds->n_classes);
  for (guint k = 0; k < ds->n_classes; k++)
    put_str (b, ds->class_names[k]);
  put_u32 (b, ds->n_targets);
  put_u32 (b, ds->n_predefined_train);
  if (ds->feature_names != NULL)
    for (guint j = 0; j < ds->row_size; j++)
      put_str (b, ds->feature_names[j]);
  put_str (b, ds->label_name);
  put_u32 (b, ds->counts.ffilled_cells);
  put_u32 (b, ds->counts.mean_filled_cells);
  put_u32 (b, ds->counts.duplicate_rows);
  put_u32 (b, ds->counts.standardized_columns);
  put_u32 (b, ds->counts.minmax_columns);
  put_u32 (b, ds->counts.one_hot_columns);
  put_u32 (b, ds->counts.one_hot_features);
  put_u32 (b, ds->report->len);
  for (guint i = 0; i < ds->report->len; i++)
    put_str (b, g_ptr_array_index (ds->report, i));
  return b;
}

/* Sections start on 16-byte boundaries, so the mapped arrays are aligned. */
#define ALIGN16(n) (((n) + 15) & ~(guint64) 15)

typedef struct {
  const void *data;
  gsize       length;
} Section;

/* The payload's sections, in file order. */
static guint
payload_sections (EspalierDataset *ds,
                  Section          s[3])
{
  const gsize cells = (gsize) ds->n_rows * ds->row_size;
  guint n = 0;

  if (ds->u8 != NULL)
    s[n++] = (Section) { ds->u8, cells };
  else
    s[n++] = (Section) { ds->f32, cells * sizeof (float) };
  if (ds->labels != NULL)
    s[n++] = (Section) { ds->labels, (gsize) ds->n_rows * sizeof (gint32) };
  if (ds->targets != NULL)
    s[n++] = (Section) { ds->targets, (gsize) ds->n_rows * ds->n_targets * sizeof (float) };
  return n;
}

static gboolean
write_all (int           fd,
           const void   *data,
           gsize         length)
{
  const guint8 *p = data;

  while (length > 0)
    {
      gssize done = write (fd, p, MIN (length, (gsize) 1 << 30));

      if (done < 0 && errno == EINTR)
        continue;
      if (done <= 0)
        return FALSE;
      p += done;
      length -= done;
    }
  return TRUE;
}

gboolean
espalier_dataset_cache_write (EspalierDataset  *dataset,
                              const char       *path,
                              guint64           key,
                              GError          **error)
{
  static const guint8 zeros[16] = { 0 };
  g_autoptr(GByteArray) meta = NULL;
  g_autofree char *tmp = NULL;
  CacheHeader header;
  Section sections[3];
  guint n_sections;
  guint64 payload_hash = 0, payload_length = 0;
  gboolean ok;
  int fd, saved;

  g_return_val_if_fail (ESPALIER_IS_DATASET (dataset), FALSE);
  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  meta = serialize_meta (dataset);
  g_byte_array_append (meta, zeros, ALIGN16 (meta->len) - meta->len);
  n_sections = payload_sections (dataset, sections);
  for (guint i = 0; i < n_sections; i++)
    {
      payload_hash = espalier_hash64 (sections[i].data, sections[i].length, payload_hash);
      payload_length += ALIGN16 (sections[i].length);
    }

  memset (&header, 0, sizeof header);
  memcpy (header.magic, CACHE_MAGIC, 8);
  header.bom = CACHE_BOM;
  header.version = CACHE_VERSION;
  header.key = key;
  header.meta_length = meta->len;
  header.payload_length = payload_length;
  header.meta_hash = espalier_hash64 (meta->data, meta->len, 0);
  header.payload_hash = payload_hash;
  header.header_hash = espalier_hash64 (&header, offsetof (CacheHeader, header_hash), 0);

  /* A temporary file renamed over the target: readers see the old file or the new one,
   * and a mapping of the old one stays valid. No fsync: after a crash a torn file
   * fails its hashes and is rewritten. */
  tmp = g_strdup_printf ("%s.XXXXXX", path);
  fd = g_mkstemp_full (tmp, O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0)
    {
      saved = errno;
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                   _("%s: cannot create: %s"), tmp, g_strerror (saved));
      return FALSE;
    }
  ok = write_all (fd, &header, sizeof header) && write_all (fd, meta->data, meta->len);
  for (guint i = 0; ok && i < n_sections; i++)
    ok = write_all (fd, sections[i].data, sections[i].length)
         && write_all (fd, zeros, ALIGN16 (sections[i].length) - sections[i].length);
  saved = errno;
  if (close (fd) != 0 && ok)
    {
      ok = FALSE;
      saved = errno;
    }
  if (ok && g_rename (tmp, path) != 0)
    {
      ok = FALSE;
      saved = errno;
    }
  if (!ok)
    {
      g_unlink (tmp);
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                   _("%s: cannot write: %s"), path, g_strerror (saved));
      return FALSE;
    }
  return TRUE;
}

/* The dataset the meta describes, without its arrays; NULL when the meta is
 * inconsistent in any way. *flags_out says which arrays the payload holds. */
static EspalierDataset *
parse_meta (const guint8 *data,
            gsize         length,
            guint64       payload_length,
            guint        *flags_out)
{
  g_autoptr(EspalierDataset) ds = NULL;
  Reader r = { data, length, TRUE };
  guint flags, rank, n_report;
  guint64 row = 1, expected;
  g_autofree guint *dims = NULL;

  ds = g_object_new (ESPALIER_TYPE_DATASET, NULL);
  ds->name = get_str (&r);
  ds->source = get_str (&r);
  flags = get_u32 (&r);
  ds->n_rows = get_u32 (&r);
  rank = get_u32 (&r);
  if (!r.ok || ds->name == NULL || ds->source == NULL || rank == 0 || rank > 64
      || flags > 15)
    return NULL;
  dims = g_new (guint, rank);
  for (guint i = 0; i < rank; i++)
    {
      dims[i] = get_u32 (&r);
      row *= dims[i];
      if (row > G_MAXUINT)
        return NULL;
    }
  _espalier_dataset_set_shape (ds, rank, dims);
  ds->scale = get_f32 (&r);
  ds->shift = get_f32 (&r);
  ds->n_classes = get_u32 (&r);
  if ((flags & 2) == 0 && ds->n_classes != 0)
    return NULL;
  ds->class_names = get_strv (&r, ds->n_classes);
  ds->n_targets = get_u32 (&r);
  ds->n_predefined_train = get_u32 (&r);
  if (!r.ok || ds->class_names == NULL || ds->n_predefined_train > ds->n_rows
      || ((flags & 4) != 0) != (ds->n_targets > 0))
    return NULL;
  if (flags & 8)
    {
      ds->feature_names = get_strv (&r, ds->row_size);
      if (ds->feature_names == NULL)
        return NULL;
    }
  ds->label_name = get_str (&r);   /* may be NULL */
  ds->counts.ffilled_cells = get_u32 (&r);
  ds->counts.mean_filled_cells = get_u32 (&r);
  ds->counts.duplicate_rows = get_u32 (&r);
  ds->counts.standardized_columns = get_u32 (&r);
  ds->counts.minmax_columns = get_u32 (&r);
  ds->counts.one_hot_columns = get_u32 (&r);
  ds->counts.one_hot_features = get_u32 (&r);
  n_report = get_u32 (&r);
  if (!r.ok || n_report > r.left / 4)
    return NULL;
  for (guint i = 0; i < n_report; i++)
    {
      char *line = get_str (&r);

      if (line == NULL)
        return NULL;
      g_ptr_array_add (ds->report, line);
    }
  /* Then only the zero padding. */
  if (!r.ok || r.left >= 16)
    return NULL;
  for (gsize i = 0; i < r.left; i++)
    if (r.p[i] != 0)
      return NULL;

  expected = ALIGN16 ((guint64) ds->n_rows * ds->row_size * ((flags & 1) ? 1 : sizeof (float)))
             + ((flags & 2) ? ALIGN16 ((guint64) ds->n_rows * sizeof (gint32)) : 0)
             + ((flags & 4) ? ALIGN16 ((guint64) ds->n_rows * ds->n_targets * sizeof (float)) : 0);
  if (expected != payload_length)
    return NULL;
  *flags_out = flags;
  return g_steal_pointer (&ds);
}

EspalierDataset *
espalier_dataset_cache_read (const char    *path,
                             guint64        key,
                             GCancellable  *cancellable,
                             GError       **error)
{
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GMappedFile) mapped = NULL;
  g_autoptr(GError) local_error = NULL;
  const guint8 *data, *at;
  CacheHeader header;
  guint flags = 0;
  guint64 hash = 0;
  gsize length;
  struct stat st;
  int fd;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  fd = g_open (path, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0)
    {
      int saved = errno;

      g_set_error (error, ESPALIER_DATA_ERROR,
                   saved == ENOENT ? ESPALIER_DATA_ERROR_NOT_FOUND : ESPALIER_DATA_ERROR_IO,
                   _("%s: cannot open: %s"), path, g_strerror (saved));
      return NULL;
    }
  if (fstat (fd, &st) != 0 || (gsize) st.st_size < sizeof header)
    {
      close (fd);
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_TRUNCATED,
                   _("%s: shorter than a cache header"), path);
      return NULL;
    }
  /* Mapped, not read: the page cache's pages are used as they are, which is several
   * times faster than faulting in fresh memory and copying. The file is only ever
   * replaced by rename, never rewritten in place, so the mapping stays valid. */
  mapped = g_mapped_file_new_from_fd (fd, FALSE, &local_error);
  close (fd);
  if (mapped == NULL)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                   _("%s: cannot map: %s"), path, local_error->message);
      return NULL;
    }
  data = (const guint8 *) g_mapped_file_get_contents (mapped);
  length = g_mapped_file_get_length (mapped);

#define FAIL(code, ...) \
  G_STMT_START { \
    g_set_error (error, ESPALIER_DATA_ERROR, code, __VA_ARGS__); \
    return NULL; \
  } G_STMT_END

  if (length < sizeof header)
    FAIL (ESPALIER_DATA_ERROR_TRUNCATED, _("%s: shorter than a cache header"), path);
  memcpy (&header, data, sizeof header);
  if (memcmp (header.magic, CACHE_MAGIC, 8) != 0 || header.bom != CACHE_BOM
      || header.version != CACHE_VERSION
      || header.header_hash != espalier_hash64 (&header, offsetof (CacheHeader, header_hash), 0))
    FAIL (ESPALIER_DATA_ERROR_CORRUPT, _("%s: not a cache file of this version"), path);
  if (header.key != key)
    FAIL (ESPALIER_DATA_ERROR_CORRUPT, _("%s: written for another source or options"), path);
  if (header.meta_length > MAX_META || header.meta_length % 16 != 0
      || header.payload_length > (guint64) length
      || sizeof header + header.meta_length + header.payload_length != (guint64) length)
    FAIL (ESPALIER_DATA_ERROR_TRUNCATED, _("%s: %llu bytes, the header says %llu"), path,
          (unsigned long long) length,
          (unsigned long long) (sizeof header + header.meta_length + header.payload_length));

  at = data + sizeof header;
  if (espalier_hash64 (at, header.meta_length, 0) != header.meta_hash)
    FAIL (ESPALIER_DATA_ERROR_CORRUPT, _("%s: the metadata fails its checksum"), path);
  ds = parse_meta (at, header.meta_length, header.payload_length, &flags);
  if (ds == NULL)
    FAIL (ESPALIER_DATA_ERROR_CORRUPT, _("%s: inconsistent metadata"), path);
  at += header.meta_length;

  /* Point the arrays into the mapping, section by section; the mapping is theirs. */
  ds->storage = g_mapped_file_get_bytes (mapped);
  {
    const gsize N = ds->n_rows;
    const gsize lengths[3] = {
      N * ds->row_size * ((flags & 1) ? 1 : sizeof (float)),
      (flags & 2) ? N * sizeof (gint32) : 0,
      (flags & 4) ? N * ds->n_targets * sizeof (float) : 0,
    };
    gpointer *targets[3] = {
      (flags & 1) ? (gpointer *) &ds->u8 : (gpointer *) &ds->f32,
      (gpointer *) &ds->labels,
      (gpointer *) &ds->targets,
    };

    for (guint i = 0; i < 3; i++)
      {
        if (i > 0 && lengths[i] == 0)
          continue;
        *targets[i] = (gpointer) at;
        hash = espalier_hash64 (at, lengths[i], hash);
        for (gsize k = lengths[i]; k < ALIGN16 (lengths[i]); k++)
          if (at[k] != 0)
            FAIL (ESPALIER_DATA_ERROR_CORRUPT, _("%s: damaged padding"), path);
        at += ALIGN16 (lengths[i]);
        if (g_cancellable_set_error_if_cancelled (cancellable, error))
          return NULL;
      }
  }
  if (hash != header.payload_hash)
    FAIL (ESPALIER_DATA_ERROR_CORRUPT, _("%s: the data fails its checksum"), path);
#undef FAIL

  /* Labels are trusted only inside the classes. */
  if (ds->labels != NULL)
    for (guint i = 0; i < ds->n_rows; i++)
      if (ds->labels[i] < 0 || (guint) ds->labels[i] >= ds->n_classes)
        {
          g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_CORRUPT,
                       _("%s: row %u has label %d outside the classes"), path, i,
                       ds->labels[i]);
          return NULL;
        }
  return g_steal_pointer (&ds);
}
