/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-dataset.c: the dataset object, reading and gunzipping source files (whole,
 * or as streams for the IDX loader to inflate into place), the one loader that
 * resolves a spec (Fashion-MNIST, a generator, an IDX or a CSV file), consults the
 * binary cache and dispatches to the parsers, and the CSV export. The parsers live in
 * their own files, the cleaning steps in espalier-dataset-preprocess.c.
 *
 * Dimension key: N = rows, F = features per row, T = targets per row. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <glib/gi18n-lib.h>
#include <glib/gstdio.h>
#include <zlib.h>

#include "espalier-format.h"
#include "espalier-csv.h"
#include "espalier-dataset-cache.h"
#include "espalier-dataset-private.h"
#include "espalier-generate.h"
#include "espalier-idx.h"
#include "espalier-limits.h"
#include "espalier-save.h"
#include "espalier-split.h"

G_DEFINE_QUARK (espalier-data-error-quark, espalier_data_error)

G_DEFINE_FINAL_TYPE (EspalierDataset, espalier_dataset, G_TYPE_OBJECT)

void
espalier_load_options_init (EspalierLoadOptions *options)
{
  g_return_if_fail (options != NULL);

  memset (options, 0, sizeof *options);
  options->csv_header = ESPALIER_CSV_HEADER_AUTO;
  options->val_fraction = 0.1;
  options->test_fraction = 0.2;
  options->split_seed = 0;
  options->use_cache = TRUE;
}

EspalierDataset *
_espalier_dataset_new (const char *name,
                       const char *source)
{
  EspalierDataset *self = g_object_new (ESPALIER_TYPE_DATASET, NULL);

  self->name = g_strdup (name);
  self->source = g_strdup (source);
  return self;
}

void
_espalier_dataset_set_shape (EspalierDataset *self,
                             guint            rank,
                             const guint     *dims)
{
  guint64 size = 1;

  g_free (self->dims);
  self->rank = rank;
  self->dims = g_new0 (guint, MAX (rank, 1));
  for (guint i = 0; i < rank; i++)
    {
      self->dims[i] = dims[i];
      size *= dims[i];
    }
  g_assert (size <= G_MAXUINT);
  self->row_size = rank > 0 ? (guint) size : 0;
}

void
_espalier_dataset_set_numbered_classes (EspalierDataset *self,
                                        guint            n_classes)
{
  g_strfreev (self->class_names);
  self->n_classes = n_classes;
  self->class_names = g_new0 (char *, n_classes + 1);
  for (guint k = 0; k < n_classes; k++)
    self->class_names[k] = g_strdup_printf ("%u", k);
}

void
_espalier_dataset_add_report (EspalierDataset *self,
                              const char      *format,
                              ...)
{
  va_list ap;

  va_start (ap, format);
  g_ptr_array_add (self->report, g_strdup_vprintf (format, ap));
  va_end (ap);
}

void
_espalier_dataset_forget_origin (EspalierDataset *self)
{
  g_clear_pointer (&self->origin_path, g_free);
  g_clear_pointer (&self->row_lines, g_free);
  g_clear_pointer (&self->feature_columns, g_free);
  g_clear_pointer (&self->column_names, g_strfreev);
}

static void
espalier_dataset_finalize (GObject *object)
{
  EspalierDataset *self = ESPALIER_DATASET (object);

  g_free (self->name);
  g_free (self->source);
  g_free (self->dims);
  if (self->storage == NULL)
    {
      g_free (self->u8);
      g_free (self->f32);
      g_free (self->labels);
      g_free (self->targets);
    }
  g_clear_pointer (&self->storage, g_bytes_unref);
  g_strfreev (self->class_names);
  g_strfreev (self->feature_names);
  g_free (self->label_name);
  g_ptr_array_unref (self->report);
  _espalier_dataset_forget_origin (self);

  G_OBJECT_CLASS (espalier_dataset_parent_class)->finalize (object);
}

static void
espalier_dataset_class_init (EspalierDatasetClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  object_class->finalize = espalier_dataset_finalize;
}

static void
espalier_dataset_init (EspalierDataset *self)
{
  self->scale = 1.0f;
  self->shift = 0.0f;
  self->report = g_ptr_array_new_with_free_func (g_free);
}

/* Getters */

const char *
espalier_dataset_get_name (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), NULL);
  return self->name;
}

guint
espalier_dataset_get_n_rows (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), 0);
  return self->n_rows;
}

guint
espalier_dataset_get_row_size (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), 0);
  return self->row_size;
}

guint
espalier_dataset_get_rank (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), 0);
  return self->rank;
}

const guint *
espalier_dataset_get_dims (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), NULL);
  return self->dims;
}

gboolean
espalier_dataset_is_u8 (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), FALSE);
  return self->u8 != NULL;
}

const guint8 *
espalier_dataset_get_u8 (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), NULL);
  return self->u8;
}

const float *
espalier_dataset_get_f32 (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), NULL);
  return self->f32;
}

float
espalier_dataset_get_scale (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), 1.0f);
  return self->scale;
}

float
espalier_dataset_get_shift (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), 0.0f);
  return self->shift;
}

const gint32 *
espalier_dataset_get_labels (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), NULL);
  return self->labels;
}

guint
espalier_dataset_get_n_classes (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), 0);
  return self->n_classes;
}

const char *
espalier_dataset_get_class_name (EspalierDataset *self,
                                 guint            klass)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), NULL);
  g_return_val_if_fail (klass < self->n_classes, NULL);
  return self->class_names[klass];
}

const float *
espalier_dataset_get_targets (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), NULL);
  return self->targets;
}

guint
espalier_dataset_get_n_targets (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), 0);
  return self->n_targets;
}

const char *
espalier_dataset_get_feature_name (EspalierDataset *self,
                                   guint            i)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), NULL);
  g_return_val_if_fail (i < self->row_size, NULL);

  /* Made on first use; the exchange keeps it safe from two threads at once. */
  if (g_atomic_pointer_get (&self->feature_names) == NULL)
    {
      const char *prefix = self->rank == 3 ? "p" : "x";
      char **names = g_new0 (char *, self->row_size + 1);

      for (guint j = 0; j < self->row_size; j++)
        names[j] = g_strdup_printf ("%s%u", prefix, j);
      if (!g_atomic_pointer_compare_and_exchange (&self->feature_names, NULL, names))
        g_strfreev (names);
    }
  return ((char **) g_atomic_pointer_get (&self->feature_names))[i];
}

guint
espalier_dataset_get_n_predefined_train (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), 0);
  return self->n_predefined_train;
}

const char *
espalier_dataset_get_source (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), NULL);
  return self->source;
}

GPtrArray *
espalier_dataset_get_report (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), NULL);
  return self->report;
}

const EspalierPreprocessReport *
espalier_dataset_get_preprocess_report (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), NULL);
  return &self->counts;
}

gboolean
espalier_dataset_is_from_cache (EspalierDataset *self)
{
  g_return_val_if_fail (ESPALIER_IS_DATASET (self), FALSE);
  return self->from_cache;
}

/* Reading files */

/* Open path for reading, a regular file; its stat in *st. */
static int
open_regular (const char   *path,
              struct stat  *st,
              GError      **error)
{
  int fd = g_open (path, O_RDONLY | O_CLOEXEC, 0);

  if (fd < 0)
    {
      int saved = errno;

      g_set_error (error, ESPALIER_DATA_ERROR,
                   saved == ENOENT ? ESPALIER_DATA_ERROR_NOT_FOUND : ESPALIER_DATA_ERROR_IO,
                   _("%s: cannot open: %s"), path, g_strerror (saved));
      return -1;
    }
  if (fstat (fd, st) != 0)
    {
      int saved = errno;

      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                   _("%s: cannot stat: %s"), path, g_strerror (saved));
      close (fd);
      return -1;
    }
  if (!S_ISREG (st->st_mode))
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                   _("%s: not a regular file%s"), path,
                   S_ISDIR (st->st_mode) ? _(" (a directory)") : "");
      close (fd);
      return -1;
    }
  return fd;
}

/* Read up to length bytes, retrying on EINTR; 0 only at the end of the file. */
static gboolean
read_some (int          fd,
           const char  *path,
           guint8      *buffer,
           gsize        length,
           gsize       *n_read,
           GError     **error)
{
  gssize got;

  do
    got = read (fd, buffer, MIN (length, 16u << 20));
  while (got < 0 && errno == EINTR);
  if (got < 0)
    {
      int saved = errno;

      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                   _("%s: read failed: %s"), path, g_strerror (saved));
      return FALSE;
    }
  *n_read = (gsize) got;
  return TRUE;
}

GBytes *
_espalier_data_read_file (const char    *path,
                          GCancellable  *cancellable,
                          GError       **error)
{
  struct stat st;
  guint8 *data;
  gsize done = 0;
  int fd;

  fd = open_regular (path, &st, error);
  if (fd < 0)
    return NULL;

  /* A file larger than the memory is refused before any of it is read
   * (espalier-limits.h). */
  {
    g_autofree char *why = NULL;

    if (!espalier_memory_fits ((guint64) st.st_size, 0, &why))
      {
        g_autofree char *size = g_format_size ((guint64) st.st_size);

        /* TRANSLATORS: "data.csv: reading this 100.0 GB file needs 100.0 GB of memory,
         * more than the 15.2 GB available" */
        g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                     _("%s: reading this %s file %s"), path, size, why);
        close (fd);
        return NULL;
      }
  }
  data = g_try_malloc (MAX (st.st_size, 1));
  if (data == NULL)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                   _("%s: not enough memory to read %lld bytes"),
                   path, (long long) st.st_size);
      close (fd);
      return NULL;
    }
  while (done < (gsize) st.st_size)
    {
      gsize got;

      if (!read_some (fd, path, data + done, (gsize) st.st_size - done, &got, error))
        goto fail;
      if (got == 0)
        {
          g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                       _("%s: read failed: the file shrank while reading"), path);
          goto fail;
        }
      done += got;
      if (g_cancellable_set_error_if_cancelled (cancellable, error))
        goto fail;
    }
  close (fd);
  return g_bytes_new_take (data, done);

fail:
  g_free (data);
  close (fd);
  return NULL;
}

gboolean
_espalier_data_is_gzip (GBytes *bytes)
{
  gsize n;
  const guint8 *p = g_bytes_get_data (bytes, &n);

  return n >= 2 && p[0] == 0x1f && p[1] == 0x8b;
}

/* Streams */

#define STREAM_BUFFER_SIZE ((gsize) 256 << 10)   /* file reads */
#define STREAM_OUT_CHUNK   ((gsize) 4 << 20)     /* output per inflate call, between
                                                  * checks for cancellation */

struct _EspalierDataStream
{
  char          *path;
  GBytes        *bytes;         /* the source in memory, or NULL */
  int            fd;            /* else the file, or -1 */
  guint8        *buffer;        /* (STREAM_BUFFER_SIZE) read from fd */

  const guint8  *next;          /* (avail) source bytes read but not yet used */
  gsize          avail;
  guint64        pos;           /* the offset of next in the source */
  guint64        size;          /* the source's length */

  gboolean       gzip;
  gboolean       inflating;     /* zs is initialized */
  gboolean       at_end;        /* all of the decompressed stream was handed out */
  guint64        n_out;         /* decompressed bytes handed out */
  z_stream       zs;
};

/* Make at least want bytes available (fewer only where the source ends): move what is
 * left to the start of the buffer and read more after it. Bytes in memory are all
 * available from the start. */
static gboolean
stream_fill (EspalierDataStream  *self,
             gsize                want,
             GError             **error)
{
  if (self->fd < 0)
    return TRUE;
  want = MIN (want, STREAM_BUFFER_SIZE);
  if (self->avail >= want || self->pos + self->avail == self->size)
    return TRUE;

  memmove (self->buffer, self->next, self->avail);
  self->next = self->buffer;
  while (self->avail < want && self->pos + self->avail < self->size)
    {
      gsize room = MIN (STREAM_BUFFER_SIZE - self->avail,
                        self->size - (self->pos + self->avail));
      gsize got;

      if (!read_some (self->fd, self->path, self->buffer + self->avail, room, &got, error))
        return FALSE;
      if (got == 0)
        {
          g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                       _("%s: read failed: the file shrank while reading"), self->path);
          return FALSE;
        }
      self->avail += got;
    }
  return TRUE;
}

static void
stream_consume (EspalierDataStream *self,
                gsize               n)
{
  self->next += n;
  self->avail -= n;
  self->pos += n;
}

/* Set up reading: tell gzip from raw by the first two bytes. */
static EspalierDataStream *
stream_start (EspalierDataStream  *self,
              GError             **error)
{
  if (!stream_fill (self, 2, error))
    {
      _espalier_data_stream_free (self);
      return NULL;
    }
  self->gzip = self->avail >= 2 && self->next[0] == 0x1f && self->next[1] == 0x8b;
  if (self->gzip)
    {
      if (inflateInit2 (&self->zs, 16 + MAX_WBITS) != Z_OK)
        {
          g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                       _("%s: cannot start gzip decompression"), self->path);
          _espalier_data_stream_free (self);
          return NULL;
        }
      self->inflating = TRUE;
    }
  else if (self->size == 0)
    {
      self->at_end = TRUE;
    }
  return self;
}

EspalierDataStream *
_espalier_data_stream_new (GBytes      *bytes,
                           const char  *path,
                           GError     **error)
{
  EspalierDataStream *self;
  gsize n;

  g_return_val_if_fail (bytes != NULL, NULL);
  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  self = g_new0 (EspalierDataStream, 1);
  self->path = g_strdup (path);
  self->bytes = g_bytes_ref (bytes);
  self->fd = -1;
  self->next = g_bytes_get_data (bytes, &n);
  self->avail = n;
  self->size = n;
  return stream_start (self, error);
}

EspalierDataStream *
_espalier_data_stream_open (const char    *path,
                            GCancellable  *cancellable,
                            GError       **error)
{
  EspalierDataStream *self;
  struct stat st;
  int fd;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (g_cancellable_set_error_if_cancelled (cancellable, error))
    return NULL;
  fd = open_regular (path, &st, error);
  if (fd < 0)
    return NULL;

  self = g_new0 (EspalierDataStream, 1);
  self->path = g_strdup (path);
  self->fd = fd;
  self->buffer = g_malloc (STREAM_BUFFER_SIZE);
  self->next = self->buffer;
  self->size = (guint64) st.st_size;
  return stream_start (self, error);
}

void
_espalier_data_stream_free (EspalierDataStream *self)
{
  if (self == NULL)
    return;
  if (self->inflating)
    inflateEnd (&self->zs);
  if (self->fd >= 0)
    close (self->fd);
  g_free (self->buffer);
  g_clear_pointer (&self->bytes, g_bytes_unref);
  g_free (self->path);
  g_free (self);
}

gboolean
_espalier_data_stream_is_gzip (EspalierDataStream *self)
{
  g_return_val_if_fail (self != NULL, FALSE);
  return self->gzip;
}

guint64
_espalier_data_stream_get_source_size (EspalierDataStream *self)
{
  g_return_val_if_fail (self != NULL, 0);
  return self->size;
}

/* A gzip member ended: another follows, or only zero padding is left. */
static gboolean
stream_member_end (EspalierDataStream  *self,
                   GError             **error)
{
  guint64 left, at;

  if (!stream_fill (self, 2, error))
    return FALSE;
  left = self->size - self->pos;
  if (left == 0)
    {
      self->at_end = TRUE;
      return TRUE;
    }
  if (left >= 2 && self->next[0] == 0x1f && self->next[1] == 0x8b)
    {
      inflateReset (&self->zs);   /* another member follows */
      return TRUE;
    }
  at = self->pos;
  while (self->pos < self->size)
    {
      if (!stream_fill (self, STREAM_BUFFER_SIZE, error))
        return FALSE;
      for (gsize i = 0; i < self->avail; i++)
        if (self->next[i] != 0)
          {
            g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_CORRUPT,
                         _("%s: %llu bytes of trailing garbage after the gzip stream "
                           "(at byte %llu)"),
                         self->path, (unsigned long long) left, (unsigned long long) at);
            return FALSE;
          }
      stream_consume (self, self->avail);
    }
  self->at_end = TRUE;   /* zero padding */
  return TRUE;
}

gboolean
_espalier_data_stream_read (EspalierDataStream  *self,
                            void                *buffer,
                            gsize                length,
                            gsize               *n_read,
                            GCancellable        *cancellable,
                            GError             **error)
{
  guint8 *out = buffer;
  gsize done = 0;

  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (buffer != NULL || length == 0, FALSE);
  g_return_val_if_fail (n_read != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  *n_read = 0;
  while (done < length && !self->at_end)
    {
      if (self->avail == 0 && !stream_fill (self, STREAM_BUFFER_SIZE, error))
        return FALSE;

      if (!self->gzip)
        {
          gsize n = MIN (self->avail, length - done);

          memcpy (out + done, self->next, n);
          stream_consume (self, n);
          done += n;
          self->n_out += n;
          if (self->pos == self->size)
            self->at_end = TRUE;
        }
      else
        {
          uInt in_before, out_before;
          int ret;

          self->zs.next_in = (Bytef *) self->next;
          self->zs.avail_in = in_before = (uInt) MIN (self->avail, (gsize) 1 << 30);
          self->zs.next_out = out + done;
          self->zs.avail_out = out_before = (uInt) MIN (length - done, STREAM_OUT_CHUNK);
          ret = inflate (&self->zs, Z_NO_FLUSH);
          stream_consume (self, in_before - self->zs.avail_in);
          done += out_before - self->zs.avail_out;
          self->n_out += out_before - self->zs.avail_out;

          if (ret == Z_STREAM_END)
            {
              if (!stream_member_end (self, error))
                return FALSE;
            }
          else if (ret == Z_OK || ret == Z_BUF_ERROR)
            {
              if (self->avail == 0 && self->pos == self->size && self->zs.avail_out > 0)
                {
                  g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_TRUNCATED,
                               _("%s: truncated gzip stream: the compressed data ends after "
                                 "%llu bytes, before the end of the stream (%llu bytes "
                                 "decompressed)"), self->path,
                               (unsigned long long) self->size,
                               (unsigned long long) self->n_out);
                  return FALSE;
                }
            }
          else
            {
              g_set_error (error, ESPALIER_DATA_ERROR,
                           ret == Z_MEM_ERROR ? ESPALIER_DATA_ERROR_IO
                                              : ESPALIER_DATA_ERROR_CORRUPT,
                           _("%s: corrupt gzip data near byte %llu: %s"),
                           self->path, (unsigned long long) self->pos,
                           self->zs.msg != NULL ? self->zs.msg : zError (ret));
              return FALSE;
            }
        }
      if (g_cancellable_set_error_if_cancelled (cancellable, error))
        return FALSE;
    }
  *n_read = done;
  return TRUE;
}

gboolean
_espalier_data_stream_skip_rest (EspalierDataStream  *self,
                                 guint64             *n_skipped,
                                 GCancellable        *cancellable,
                                 GError             **error)
{
  g_autofree guint8 *scratch = NULL;
  guint64 total = 0;

  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (n_skipped != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  *n_skipped = 0;
  if (self->at_end)
    return TRUE;
  scratch = g_malloc (STREAM_BUFFER_SIZE);
  while (!self->at_end)
    {
      gsize got;

      if (!_espalier_data_stream_read (self, scratch, STREAM_BUFFER_SIZE, &got,
                                       cancellable, error))
        return FALSE;
      total += got;
    }
  *n_skipped = total;
  return TRUE;
}

GBytes *
_espalier_data_gunzip (GBytes        *bytes,
                       const char    *path,
                       GCancellable  *cancellable,
                       GError       **error)
{
  g_autoptr(EspalierDataStream) stream = NULL;
  gsize n_in, cap, len = 0;
  const guint8 *in;
  guint8 *out;

  if (!_espalier_data_is_gzip (bytes))
    return g_bytes_ref (bytes);

  in = g_bytes_get_data (bytes, &n_in);
  /* The last member's trailer holds its size mod 2^32: a good first guess. */
  cap = 0;
  if (n_in >= 18)
    cap = (gsize) in[n_in - 4] | (gsize) in[n_in - 3] << 8 | (gsize) in[n_in - 2] << 16
          | (gsize) in[n_in - 1] << 24;
  if (cap < n_in || cap > (gsize) 64 * n_in + 4096)
    cap = 4 * n_in;
  cap = MAX (cap, 4096) + 1;   /* + 1: a right guess ends without growing */

  stream = _espalier_data_stream_new (bytes, path, error);
  if (stream == NULL)
    return NULL;
  out = g_try_malloc (cap);
  if (out == NULL)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                   _("%s: not enough memory to decompress"), path);
      return NULL;
    }
  for (;;)
    {
      gsize got;

      if (!_espalier_data_stream_read (stream, out + len, cap - len, &got, cancellable,
                                       error))
        {
          g_free (out);
          return NULL;
        }
      len += got;
      if (len < cap)
        break;   /* the end */

      {
        guint8 *grown = g_try_realloc (out, cap * 2);

        if (grown == NULL)
          {
            g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                         _("%s: not enough memory to decompress"), path);
            g_free (out);
            return NULL;
          }
        out = grown;
        cap *= 2;
      }
    }
  if (len < cap)
    out = g_realloc (out, MAX (len, 1));
  return g_bytes_new_take (out, len);
}

/* Loading */

const char *
espalier_dataset_fashion_mnist_dir (void)
{
  const char *dir = g_getenv ("ESPALIER_FASHION_MNIST_DIR");

  return dir != NULL && dir[0] != '\0' ? dir : FASHION_MNIST_DIR;
}

gboolean
espalier_dataset_fashion_mnist_available (void)
{
  const char *dir = espalier_dataset_fashion_mnist_dir ();

  for (guint i = 0; i < G_N_ELEMENTS (espalier_fashion_mnist_files); i++)
    {
      g_autofree char *path = g_build_filename (dir, espalier_fashion_mnist_files[i], NULL);

      if (!g_file_test (path, G_FILE_TEST_IS_REGULAR))
        return FALSE;
    }
  return TRUE;
}

typedef enum {
  SOURCE_UNKNOWN,
  SOURCE_FASHION_MNIST,
  SOURCE_IDX,
  SOURCE_CSV,
} SourceKind;

/* What a file's name says it is; SOURCE_UNKNOWN leaves it to the contents. */
static SourceKind
kind_from_name (const char *path)
{
  g_autofree char *base = g_path_get_basename (path);
  g_autofree char *lower = g_ascii_strdown (base, -1);

  if (g_str_has_suffix (lower, ".gz"))
    lower[strlen (lower) - 3] = '\0';
  if (g_str_has_suffix (lower, ".csv") || g_str_has_suffix (lower, ".tsv")
      || g_str_has_suffix (lower, ".txt"))
    return SOURCE_CSV;
  if (g_str_has_suffix (lower, ".idx") || g_str_has_suffix (lower, "-ubyte")
      || g_str_has_suffix (lower, ".ubyte") || strstr (lower, ".idx") != NULL
      || strstr (lower, "-idx") != NULL)
    return SOURCE_IDX;
  return SOURCE_UNKNOWN;
}

/* IDX files start with two zero bytes and a known type; anything else is text. Only
 * the first bytes are read (and gunzipped): from raw, or from path when it is NULL. */
static gboolean
kind_from_contents (GBytes        *raw,
                    const char    *path,
                    SourceKind    *kind,
                    GCancellable  *cancellable,
                    GError       **error)
{
  g_autoptr(EspalierDataStream) stream = NULL;
  guint8 p[4];
  gsize n;

  stream = raw != NULL ? _espalier_data_stream_new (raw, path, error)
                       : _espalier_data_stream_open (path, cancellable, error);
  if (stream == NULL
      || !_espalier_data_stream_read (stream, p, sizeof p, &n, cancellable, error))
    return FALSE;
  if (n >= 4 && p[0] == 0 && p[1] == 0 && espalier_idx_type_size (p[2]) > 0)
    *kind = SOURCE_IDX;
  else
    *kind = SOURCE_CSV;
  return TRUE;
}

/* The part of the options that shapes a loaded dataset, as a string to hash. */
static char *
options_key_string (SourceKind                 kind,
                    const EspalierLoadOptions *options)
{
  gboolean uses_split = options->mean_fill || options->standardize || options->minmax;
  char val[G_ASCII_DTOSTR_BUF_SIZE], test[G_ASCII_DTOSTR_BUF_SIZE];

  g_ascii_dtostr (val, sizeof val, uses_split ? options->val_fraction : 0);
  g_ascii_dtostr (test, sizeof test, uses_split ? options->test_fraction : 0);
  /* The version is part of the key: a release that reads or cleans data differently
   * must not be served what an older one cached. */
  return g_strdup_printf ("espalier=" PACKAGE_VERSION "\nkind=%d\nlabel=%s\none_hot=%d\nheader=%d\n"
                          "ffill=%d\ndrop_duplicates=%d\nmean_fill=%d\nstandardize=%d\n"
                          "minmax=%d\nval=%s\ntest=%s\nseed=%" G_GUINT64_FORMAT "\n",
                          kind,
                          options->label_column != NULL ? options->label_column : "",
                          !!options->one_hot, (int) options->csv_header,
                          !!options->ffill, !!options->drop_duplicates, !!options->mean_fill,
                          !!options->standardize, !!options->minmax, val, test,
                          uses_split ? options->split_seed : 0);
}

static EspalierDataset *
load_generated (const char                 *spec,
                const EspalierLoadOptions  *options,
                GCancellable               *cancellable,
                GError                    **error)
{
  g_autoptr(EspalierDataset) ds = espalier_generate_from_spec (spec, error);

  if (ds == NULL)
    return NULL;
  if (!_espalier_dataset_preprocess (ds, options, cancellable, error))
    return NULL;
  _espalier_dataset_forget_origin (ds);
  return g_steal_pointer (&ds);
}

EspalierDataset *
espalier_dataset_load (const char                 *spec,
                       const EspalierLoadOptions  *options,
                       GCancellable               *cancellable,
                       GError                    **error)
{
  EspalierLoadOptions defaults;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autofree char *cache_dir = NULL;
  g_autofree char *cache_path = NULL;
  g_autofree char *name = NULL;
  g_autofree char *source = NULL;
  g_autofree char *labels_path = NULL;
  g_autoptr(GError) cache_error = NULL;
  const char *paths[4] = { NULL };
  GBytes *raw[4] = { NULL };
  guint n_files = 0;
  SourceKind kind;
  guint64 key = 0;
  double t0 = g_get_monotonic_time () / 1e6;

  g_return_val_if_fail (spec != NULL, NULL);
  g_return_val_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable), NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (options == NULL)
    {
      espalier_load_options_init (&defaults);
      options = &defaults;
    }
  if (options->standardize && options->minmax)
    {
      g_set_error_literal (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_INVALID,
                           _("Choose standardize or min-max scaling, not both"));
      return NULL;
    }

  /* A file of that name in the current directory wins over a generator name. */
  if (espalier_generate_is_spec (spec) && !g_file_test (spec, G_FILE_TEST_IS_REGULAR))
    return load_generated (spec, options, cancellable, error);

  if (g_ascii_strcasecmp (spec, "fashion-mnist") == 0)
    {
      const char *dir = espalier_dataset_fashion_mnist_dir ();

      kind = SOURCE_FASHION_MNIST;
      name = g_strdup ("fashion-mnist");
      source = g_strdup ("fashion-mnist");
      for (guint i = 0; i < 4; i++)
        {
          paths[i] = g_build_filename (dir, espalier_fashion_mnist_files[i], NULL);
          if (!g_file_test (paths[i], G_FILE_TEST_IS_REGULAR))
            {
              g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_NOT_FOUND,
                           _("Fashion-MNIST is not installed: %s is missing (install the "
                             "dataset-fashion-mnist package)"), paths[i]);
              n_files = i + 1;
              goto out;
            }
        }
      n_files = 4;
    }
  else
    {
      if (!g_file_test (spec, G_FILE_TEST_EXISTS))
        {
          g_autofree char *names = g_strjoinv (", ", (char **) espalier_generate_list ());

          g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_NOT_FOUND,
                       _("%s: no such file, and not 'fashion-mnist' or a generator (%s)"),
                       spec, names);
          return NULL;
        }
      source = g_canonicalize_filename (spec, NULL);
      name = g_path_get_basename (spec);
      kind = kind_from_name (source);
      paths[n_files++] = g_strdup (source);
      /* Labels before the cache key, so that they are part of it; a file whose name
       * does not say what it is may turn out to be IDX too. */
      if (kind == SOURCE_IDX || kind == SOURCE_UNKNOWN)
        {
          if (options->labels_path != NULL)
            labels_path = g_canonicalize_filename (options->labels_path, NULL);
          else
            labels_path = espalier_idx_find_labels (source);
          if (labels_path != NULL)
            paths[n_files++] = g_strdup (labels_path);
        }
    }

  /* The cache: a key from the files' contents and the options. */
  if (options->use_cache)
    {
      g_autofree char *opts = options_key_string (kind, options);

      cache_dir = espalier_dataset_cache_dir (options);
      key = espalier_hash64 (opts, strlen (opts), n_files);
      for (guint i = 0; i < n_files; i++)
        {
          guint64 h;

          /* IDX files are streamed from disk below, not kept whole in memory. */
          if (!espalier_dataset_cache_hash_file (cache_dir, paths[i], &h,
                                                 kind == SOURCE_CSV || kind == SOURCE_UNKNOWN
                                                 ? &raw[i] : NULL,
                                                 cancellable, error))
            goto out;
          key = espalier_hash64 (&h, sizeof h, key);
        }
      cache_path = espalier_dataset_cache_path (cache_dir, key);
      ds = espalier_dataset_cache_read (cache_path, key, cancellable, &cache_error);
      if (ds != NULL)
        {
          g_free (ds->name);
          ds->name = g_steal_pointer (&name);
          g_free (ds->source);
          ds->source = g_steal_pointer (&source);
          ds->from_cache = TRUE;
          _espalier_dataset_add_report (ds, _("loaded from cache in %.0f ms"),
                                        (g_get_monotonic_time () / 1e6 - t0) * 1e3);
          goto out;
        }
      if (g_error_matches (cache_error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        {
          g_propagate_error (error, g_steal_pointer (&cache_error));
          goto out;
        }
      g_debug ("cache miss for %s: %s", spec, cache_error->message);
    }

  /* IDX files (Fashion-MNIST too) are streamed from their paths: the images inflate
   * straight into the dataset's block. A CSV file is parsed from memory. */
  if (kind == SOURCE_UNKNOWN)
    {
      if (!kind_from_contents (raw[0], paths[0], &kind, cancellable, error))
        goto out;
      if (kind == SOURCE_IDX)
        for (guint i = 0; i < n_files; i++)
          g_clear_pointer (&raw[i], g_bytes_unref);
    }
  if (kind == SOURCE_CSV && raw[0] == NULL
      && (raw[0] = _espalier_data_read_file (paths[0], cancellable, error)) == NULL)
    goto out;

  switch (kind)
    {
    case SOURCE_FASHION_MNIST:
      ds = espalier_idx_load_fashion_mnist_bytes (raw, paths, cancellable, error);
      break;
    case SOURCE_IDX:
      ds = espalier_idx_load_bytes (raw[0], paths[0], n_files > 1 ? raw[1] : NULL,
                                    n_files > 1 ? paths[1] : NULL, cancellable, error);
      break;
    case SOURCE_CSV:
    case SOURCE_UNKNOWN:
    default:
      ds = espalier_csv_load_bytes (raw[0], paths[0], options, cancellable, error);
      break;
    }
  if (ds == NULL)
    goto out;
  g_free (ds->name);
  ds->name = g_steal_pointer (&name);
  g_free (ds->source);
  ds->source = g_steal_pointer (&source);

  if (!_espalier_dataset_preprocess (ds, options, cancellable, error))
    {
      g_clear_object (&ds);
      goto out;
    }
  _espalier_dataset_forget_origin (ds);

  /* The cache gets the report so far; the lines below are this load's own. */
  if (cache_path != NULL)
    {
      g_autoptr(GError) write_error = NULL;

      if (g_mkdir_with_parents (cache_dir, 0700) != 0)
        _espalier_dataset_add_report (ds, _("cache not written: cannot create %s: %s"),
                                      cache_dir, g_strerror (errno));
      else if (!espalier_dataset_cache_write (ds, cache_path, key, &write_error))
        _espalier_dataset_add_report (ds, _("cache not written: %s"), write_error->message);
    }
  _espalier_dataset_add_report (ds, _("loaded in %.0f ms"),
                                (g_get_monotonic_time () / 1e6 - t0) * 1e3);

out:
  for (guint i = 0; i < G_N_ELEMENTS (paths); i++)
    {
      g_free ((char *) paths[i]);
      g_clear_pointer (&raw[i], g_bytes_unref);
    }
  return g_steal_pointer (&ds);
}

/* Loading on a worker thread: the task data is the spec and a copy of the options
 * whose strings it owns, since the caller's may be gone before the thread runs. */
typedef struct {
  char                *spec;
  EspalierLoadOptions  options;
} LoadJob;

static void
load_job_free (gpointer data)
{
  LoadJob *job = data;

  g_free (job->spec);
  g_free ((char *) job->options.label_column);
  g_free ((char *) job->options.labels_path);
  g_free ((char *) job->options.cache_dir);
  g_free (job);
}

static void
load_thread (GTask        *task,
             gpointer      source,
             gpointer      task_data,
             GCancellable *cancellable)
{
  LoadJob *job = task_data;
  GError *error = NULL;
  EspalierDataset *ds = espalier_dataset_load (job->spec, &job->options, cancellable, &error);

  if (ds != NULL)
    g_task_return_pointer (task, ds, g_object_unref);
  else
    g_task_return_error (task, error);
}

void
espalier_dataset_load_async (const char                 *spec,
                             const EspalierLoadOptions  *options,
                             GCancellable               *cancellable,
                             GAsyncReadyCallback         callback,
                             gpointer                    user_data)
{
  g_autoptr(GTask) task = NULL;
  LoadJob *job;

  g_return_if_fail (spec != NULL);
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));

  job = g_new0 (LoadJob, 1);
  job->spec = g_strdup (spec);
  if (options != NULL)
    job->options = *options;
  else
    espalier_load_options_init (&job->options);
  job->options.label_column = g_strdup (job->options.label_column);
  job->options.labels_path = g_strdup (job->options.labels_path);
  job->options.cache_dir = g_strdup (job->options.cache_dir);

  task = g_task_new (NULL, cancellable, callback, user_data);
  g_task_set_source_tag (task, espalier_dataset_load_async);
  g_task_set_task_data (task, job, load_job_free);
  g_task_run_in_thread (task, load_thread);
}

EspalierDataset *
espalier_dataset_load_finish (GAsyncResult  *result,
                              GError       **error)
{
  g_return_val_if_fail (g_task_is_valid (result, NULL), NULL);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == espalier_dataset_load_async,
                        NULL);

  return g_task_propagate_pointer (G_TASK (result), error);
}

/* Export */

static void
append_csv_field (GString    *out,
                  const char *field)
{
  if (strpbrk (field, ",\"\n\r") == NULL)
    {
      g_string_append (out, field);
      return;
    }
  g_string_append_c (out, '"');
  for (const char *p = field; *p; p++)
    {
      if (*p == '"')
        g_string_append_c (out, '"');
      g_string_append_c (out, *p);
    }
  g_string_append_c (out, '"');
}

static void
append_float (GString *out,
              float    v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  g_string_append (out, espalier_format_float (buf, v));
}

gboolean
espalier_dataset_export_csv (EspalierDataset  *self,
                             const char       *path,
                             GError          **error)
{
  EspalierAtomicFile af = ESPALIER_ATOMIC_FILE_INIT;
  g_autoptr(GString) out = NULL;
  g_autoptr(GError) local_error = NULL;
  guint F;

  g_return_val_if_fail (ESPALIER_IS_DATASET (self), FALSE);
  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  F = self->row_size;
  /* Written beside the target, synced and renamed over it: a crash or a full disk
   * leaves the file that was there before, never half an export. */
  if (!espalier_atomic_open (&af, path, &local_error))
    {
      espalier_atomic_clear (&af);
      /* The message names the file already. */
      g_set_error_literal (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                           local_error->message);
      return FALSE;
    }

  out = g_string_sized_new (1 << 16);
  for (guint j = 0; j < F; j++)
    {
      if (j > 0)
        g_string_append_c (out, ',');
      append_csv_field (out, espalier_dataset_get_feature_name (self, j));
    }
  if (self->labels != NULL || self->targets != NULL)
    {
      if (F > 0)
        g_string_append_c (out, ',');
      if (self->targets != NULL && self->n_targets > 1)
        for (guint t = 0; t < self->n_targets; t++)
          {
            g_autofree char *tname = g_strdup_printf ("%s%u", self->label_name != NULL
                                                              ? self->label_name : "target", t);
            if (t > 0)
              g_string_append_c (out, ',');
            append_csv_field (out, tname);
          }
      else
        append_csv_field (out, self->label_name != NULL ? self->label_name
                                : self->labels != NULL ? "label" : "target");
    }
  g_string_append_c (out, '\n');

  for (guint i = 0; i < self->n_rows; i++)
    {
      for (guint j = 0; j < F; j++)
        {
          gsize at = (gsize) i * F + j;

          if (j > 0)
            g_string_append_c (out, ',');
          append_float (out, self->u8 != NULL ? self->u8[at] * self->scale + self->shift
                                               : self->f32[at]);
        }
      if (self->labels != NULL)
        {
          if (F > 0)
            g_string_append_c (out, ',');
          append_csv_field (out, self->class_names[self->labels[i]]);
        }
      else if (self->targets != NULL)
        for (guint t = 0; t < self->n_targets; t++)
          {
            if (F > 0 || t > 0)
              g_string_append_c (out, ',');
            append_float (out, self->targets[(gsize) i * self->n_targets + t]);
          }
      g_string_append_c (out, '\n');

      if (out->len >= (1 << 16) || i + 1 == self->n_rows)
        {
          if (!espalier_atomic_write (&af, out->str, out->len, NULL, &local_error))
            goto fail;
          g_string_truncate (out, 0);
        }
    }
  if (out->len > 0 && !espalier_atomic_write (&af, out->str, out->len, NULL, &local_error))
    goto fail;
  if (!espalier_atomic_sync (&af, &local_error) || !espalier_atomic_commit (&af, &local_error))
    goto fail;
  espalier_atomic_clear (&af);
  return TRUE;

fail:
  /* The temporary file goes; whatever was at path before stays. */
  espalier_atomic_clear (&af);
  g_set_error_literal (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                       local_error->message);
  return FALSE;
}
