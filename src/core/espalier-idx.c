/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-idx.c: reading IDX files (gzip or raw) into datasets, and Fashion-MNIST.
 *
 * An IDX file is a big-endian header, magic 0x0000TTNN (TT the element type, NN the
 * number of dimensions), NN 32-bit dimensions, then the elements in row-major order.
 * Every check names the file and the header field it failed on; a dataset is only
 * made once everything checked out, so nothing half-loads.
 *
 * Files are read as streams (espalier-dataset-private.h): the header first, then the
 * payload inflated straight into the block it ends up in, so that neither the
 * compressed file nor a decompressed copy is ever whole in memory beside it. A size
 * fault that only shows at the end of a gzip stream gives the error the whole file
 * would have given.
 *
 * Dimension key: N = items (dimension 0), F = elements per item. */
#include "config.h"

#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>

#include "espalier-dataset-private.h"
#include "espalier-idx.h"
#include "espalier-limits.h"

const char * const espalier_fashion_mnist_files[4] = {
  "train-images-idx3-ubyte.gz",
  "train-labels-idx1-ubyte.gz",
  "t10k-images-idx3-ubyte.gz",
  "t10k-labels-idx1-ubyte.gz",
};

static const char * const fashion_mnist_classes[10] = {
  "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
};

gsize
espalier_idx_type_size (EspalierIdxType type)
{
  switch (type)
    {
    case ESPALIER_IDX_UBYTE:
    case ESPALIER_IDX_SBYTE:
      return 1;
    case ESPALIER_IDX_SHORT:
      return 2;
    case ESPALIER_IDX_INT:
    case ESPALIER_IDX_FLOAT:
      return 4;
    case ESPALIER_IDX_DOUBLE:
      return 8;
    default:
      return 0;
    }
}

static const char *
type_name (EspalierIdxType type)
{
  switch (type)
    {
    case ESPALIER_IDX_UBYTE: return "ubyte";
    case ESPALIER_IDX_SBYTE: return "sbyte";
    case ESPALIER_IDX_SHORT: return "short";
    case ESPALIER_IDX_INT: return "int";
    case ESPALIER_IDX_FLOAT: return "float";
    case ESPALIER_IDX_DOUBLE: return "double";
    default: return "unknown";
    }
}

static guint32
read_be32 (const guint8 *p)
{
  return (guint32) p[0] << 24 | (guint32) p[1] << 16 | (guint32) p[2] << 8 | p[3];
}

static char *
format_dims (const EspalierIdx *idx)
{
  GString *s = g_string_new (NULL);

  for (guint d = 0; d < idx->ndim; d++)
    g_string_append_printf (s, "%s%u", d > 0 ? " x " : "", idx->dims[d]);
  return g_string_free (s, FALSE);
}

void
espalier_idx_clear (EspalierIdx *idx)
{
  g_return_if_fail (idx != NULL);

  g_clear_pointer (&idx->payload, g_bytes_unref);
  memset (idx, 0, sizeof *idx);
}

/* Parse the header at the start of p: n bytes, the whole file or at least its first
 * IDX_HEADER_MAX bytes when it has that many. Sets idx's type, ndim, dims and
 * n_elements (payload stays NULL) and *header to the header's length. */
#define IDX_HEADER_MAX (4 + 4 * ESPALIER_IDX_MAX_DIMS)

static gboolean
parse_header (const guint8  *p,
              gsize          n,
              const char    *path,
              EspalierIdx   *idx,
              gsize         *header,
              GError       **error)
{
  gsize n_elements = 1;
  guint32 magic;

  memset (idx, 0, sizeof *idx);
  if (n == 0)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_EMPTY,
                   _("%s: empty file"), path);
      return FALSE;
    }
  if (n < 4)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_TRUNCATED,
                   _("%s: header field 'magic' is cut off: the file has only %llu bytes"),
                   path, (unsigned long long) n);
      return FALSE;
    }
  magic = read_be32 (p);
  if (p[0] != 0 || p[1] != 0)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_BAD_HEADER,
                   _("%s: header field 'magic' is 0x%08X: not an IDX file (the magic is "
                     "0x0000TTNN, type TT and NN dimensions, e.g. 0x00000803)"), path, magic);
      return FALSE;
    }
  if (espalier_idx_type_size (p[2]) == 0)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_BAD_HEADER,
                   _("%s: header field 'type' (magic 0x%08X) is 0x%02X, not one of 0x08 "
                     "ubyte, 0x09 sbyte, 0x0B short, 0x0C int, 0x0D float, 0x0E double"),
                   path, magic, p[2]);
      return FALSE;
    }
  if (p[3] == 0 || p[3] > ESPALIER_IDX_MAX_DIMS)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_BAD_HEADER,
                   _("%s: header field 'number of dimensions' (magic 0x%08X) is %u; 1 to %u "
                     "are supported"), path, magic, p[3], ESPALIER_IDX_MAX_DIMS);
      return FALSE;
    }
  idx->type = p[2];
  idx->ndim = p[3];
  *header = 4 + 4 * (gsize) idx->ndim;
  if (n < *header)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_TRUNCATED,
                   _("%s: header field 'dimension %llu' is cut off: %u dimensions need a "
                     "%llu-byte header, the file has %llu bytes"), path,
                   (unsigned long long) (n - 4) / 4, idx->ndim, (unsigned long long) *header,
                   (unsigned long long) n);
      return FALSE;
    }
  for (guint d = 0; d < idx->ndim; d++)
    {
      idx->dims[d] = read_be32 (p + 4 + 4 * d);
      if (idx->dims[d] == 0)
        {
          g_set_error (error, ESPALIER_DATA_ERROR,
                       d == 0 ? ESPALIER_DATA_ERROR_EMPTY : ESPALIER_DATA_ERROR_BAD_HEADER,
                       _("%s: header field 'dimension %u' is 0%s"), path, d,
                       d == 0 ? _(": the file holds no items") : "");
          return FALSE;
        }
      if (!g_size_checked_mul (&n_elements, n_elements, idx->dims[d]))
        {
          g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_BAD_HEADER,
                       _("%s: header field 'dimension %u' (%u) makes the data too large"),
                       path, d, idx->dims[d]);
          return FALSE;
        }
    }
  idx->n_elements = n_elements;
  return TRUE;
}

/* Check that the file has exactly the payload the header promises: have bytes after
 * the header. On success *payload is its length. */
static gboolean
check_payload (const EspalierIdx  *idx,
               const char         *path,
               gsize               header,
               guint64             have,
               gsize              *payload,
               GError            **error)
{
  gsize esize = espalier_idx_type_size (idx->type);

  if (!g_size_checked_mul (payload, idx->n_elements, esize) || *payload > have)
    {
      g_autofree char *dims = format_dims (idx);

      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_TRUNCATED,
                   _("%s: header fields 'dimensions' (%s %s) promise %llu bytes of data "
                     "after the %llu-byte header, the file has %llu"), path, dims,
                   type_name (idx->type), (unsigned long long) (idx->n_elements * esize),
                   (unsigned long long) header, (unsigned long long) have);
      return FALSE;
    }
  if (*payload < have)
    {
      g_autofree char *dims = format_dims (idx);

      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISMATCH,
                   _("%s: header fields 'dimensions' (%s %s) describe %llu bytes of data "
                     "but the file has %llu more"),
                   path, dims, type_name (idx->type), (unsigned long long) *payload,
                   (unsigned long long) (have - *payload));
      return FALSE;
    }
  return TRUE;
}

gboolean
espalier_idx_parse (GBytes       *contents,
                    const char   *path,
                    EspalierIdx  *idx,
                    GError      **error)
{
  gsize n, header, payload;
  const guint8 *p;

  g_return_val_if_fail (contents != NULL, FALSE);
  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (idx != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  p = g_bytes_get_data (contents, &n);
  if (!parse_header (p, n, path, idx, &header, error)
      || !check_payload (idx, path, header, n - header, &payload, error))
    return FALSE;
  idx->payload = g_bytes_new_from_bytes (contents, header, payload);
  return TRUE;
}

/* Reading a file in a stream: the header first, so that the payload can be read
 * straight into the block it ends up in, without the whole file (compressed or not)
 * in memory first. */

/* Deflate never does better than 1032 to 1: a gzip file cannot hold more than this. */
#define GZIP_MAX_RATIO 1100

typedef struct {
  EspalierDataStream *stream;
  const char         *path;
  EspalierIdx         idx;                    /* the header; payload stays NULL */
  gsize               header;                 /* its length */
  gsize               payload;                /* n_elements * element size */
  guint8              ahead[IDX_HEADER_MAX];  /* (n_ahead) read with the header */
  gsize               n_ahead;
} IdxReader;

static void
idx_reader_clear (IdxReader *r)
{
  g_clear_pointer (&r->stream, _espalier_data_stream_free);
  espalier_idx_clear (&r->idx);
}

/* Open raw (or, when NULL, the file at path) and read the header. */
static gboolean
idx_reader_open (IdxReader     *r,
                 GBytes        *raw,
                 const char    *path,
                 GCancellable  *cancellable,
                 GError       **error)
{
  memset (r, 0, sizeof *r);
  r->path = path;
  r->stream = raw != NULL ? _espalier_data_stream_new (raw, path, error)
                          : _espalier_data_stream_open (path, cancellable, error);
  if (r->stream == NULL)
    return FALSE;
  return _espalier_data_stream_read (r->stream, r->ahead, sizeof r->ahead, &r->n_ahead,
                                     cancellable, error)
         && parse_header (r->ahead, r->n_ahead, path, &r->idx, &r->header, error);
}

/* Whether the memory holds what the header describes: its payload, and a float copy
 * of every element when float_copy. Refused naming the size, before any allocation. */
static gboolean
check_memory (const EspalierIdx  *idx,
              const char         *path,
              gboolean            float_copy,
              GError            **error)
{
  double bytes = (double) idx->n_elements * (double) espalier_idx_type_size (idx->type);
  double need = bytes + (float_copy ? (double) idx->n_elements * sizeof (float) : 0.0);
  g_autofree char *why = NULL;

  if (!espalier_memory_fits (need >= 0x1p63 ? G_MAXUINT64 : (guint64) need, 0, &why))
    {
      g_autofree char *dims = format_dims (idx);
      g_autofree char *size = g_format_size (bytes >= 0x1p63 ? G_MAXUINT64 : (guint64) bytes);

      /* TRANSLATORS: "images.idx: header fields 'dimensions' (1000000 x 1000000 ubyte)
       * describe 1.0 TB of data: loading it needs 1.0 TB of memory, more than the
       * 20.1 GB available" */
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                   _("%s: header fields 'dimensions' (%s %s) describe %s of data: loading it %s"),
                   path, dims, type_name (idx->type), size, why);
      return FALSE;
    }
  return TRUE;
}

/* Before the payload is given room: fail on a size the file cannot hold, with the
 * error the whole file would give, then on one the memory cannot hold (check_memory).
 * A raw file's size is known: checked exactly. A gzip one's is only known at its end:
 * read to it (nothing kept) when the header promises more than any gzip file of this
 * size can hold. */
static gboolean
idx_reader_check_size (IdxReader     *r,
                       gboolean       float_copy,
                       GCancellable  *cancellable,
                       GError       **error)
{
  guint64 size = _espalier_data_stream_get_source_size (r->stream);
  gsize esize = espalier_idx_type_size (r->idx.type);
  guint64 skipped;

  if (!_espalier_data_stream_is_gzip (r->stream))
    return check_payload (&r->idx, r->path, r->header, size - r->header, &r->payload,
                          error)
           && check_memory (&r->idx, r->path, float_copy, error);
  if (g_size_checked_mul (&r->payload, r->idx.n_elements, esize)
      && r->payload / GZIP_MAX_RATIO <= size)
    return check_memory (&r->idx, r->path, float_copy, error);
  if (!_espalier_data_stream_skip_rest (r->stream, &skipped, cancellable, error))
    return FALSE;
  if (check_payload (&r->idx, r->path, r->header, r->n_ahead - r->header + skipped,
                     &r->payload, error))
    {
      /* Not reached: nothing was kept to read the payload from. */
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_CORRUPT,
                   _("%s: the gzip data decompresses to more than it can"), r->path);
      return FALSE;
    }
  return FALSE;
}

/* Read the payload into out (r->payload bytes) and check that nothing follows; the
 * stream is closed after it. */
static gboolean
idx_reader_read (IdxReader     *r,
                 guint8        *out,
                 GCancellable  *cancellable,
                 GError       **error)
{
  gsize in_ahead = r->n_ahead - r->header;
  gsize first = MIN (in_ahead, r->payload), got, checked;
  guint64 skipped;

  memcpy (out, r->ahead + r->header, first);
  if (!_espalier_data_stream_read (r->stream, out + first, r->payload - first, &got,
                                   cancellable, error))
    return FALSE;
  if (first + got < r->payload)
    return check_payload (&r->idx, r->path, r->header, first + got, &checked, error);
  if (!_espalier_data_stream_skip_rest (r->stream, &skipped, cancellable, error))
    return FALSE;
  if ((in_ahead - first) + skipped > 0)
    return check_payload (&r->idx, r->path, r->header,
                          r->payload + (in_ahead - first) + skipped, &checked, error);
  g_clear_pointer (&r->stream, _espalier_data_stream_free);
  return TRUE;
}

/* Read and parse one whole file: raw, or when NULL the file at path. */
static gboolean
read_idx (GBytes        *raw,
          const char    *path,
          EspalierIdx   *idx,
          GCancellable  *cancellable,
          GError       **error)
{
  IdxReader r;
  guint8 *payload;
  gboolean ok = FALSE;

  memset (idx, 0, sizeof *idx);
  if (!idx_reader_open (&r, raw, path, cancellable, error)
      || !idx_reader_check_size (&r, FALSE, cancellable, error))
    goto out;
  payload = g_try_malloc (MAX (r.payload, 1));
  if (payload == NULL)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                   _("%s: not enough memory for %llu bytes of data"), path,
                   (unsigned long long) r.payload);
      goto out;
    }
  if (!idx_reader_read (&r, payload, cancellable, error))
    {
      g_free (payload);
      goto out;
    }
  *idx = r.idx;
  idx->payload = g_bytes_new_take (payload, r.payload);
  r.idx.payload = NULL;
  ok = TRUE;
out:
  idx_reader_clear (&r);
  return ok;
}

/* Check an images file's header: items of at least one dimension. */
static gboolean
check_images (const EspalierIdx  *img,
              const char         *path,
              GError            **error)
{
  guint64 row = 1;

  if (img->ndim < 2)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_BAD_HEADER,
                   _("%s: header field 'number of dimensions' is 1: a labels file, not "
                     "images (items need 2 or more dimensions)"), path);
      return FALSE;
    }
  for (guint d = 1; d < img->ndim; d++)
    row *= img->dims[d];
  if (row > G_MAXUINT / 4)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_BAD_HEADER,
                   _("%s: header fields 'dimension 1' and on make items of %llu elements, "
                     "too large"), path, (unsigned long long) row);
      return FALSE;
    }
  return TRUE;
}

/* Row shape from the file's dimensions beyond the first. */
static void
set_shape_from (EspalierDataset   *ds,
                const EspalierIdx *img)
{
  guint dims[ESPALIER_IDX_MAX_DIMS];

  if (img->ndim == 3)
    {
      dims[0] = 1;
      dims[1] = img->dims[1];
      dims[2] = img->dims[2];
      _espalier_dataset_set_shape (ds, 3, dims);
      return;
    }
  for (guint d = 1; d < img->ndim; d++)
    dims[d - 1] = img->dims[d];
  _espalier_dataset_set_shape (ds, img->ndim - 1, dims);
}

/* Convert img's big-endian payload p into floats. */
/* Decode the payload to floats; returns the index of the first infinite value, or -1.
 * (NaN is kept: later steps treat it as a missing value.) */
static gssize
convert_to_f32 (const EspalierIdx *img,
                const guint8      *p,
                float             *out)
{
  gssize first_inf = -1;

  for (gsize i = 0; i < img->n_elements; i++)
    {
      switch (img->type)
        {
        case ESPALIER_IDX_UBYTE:
          out[i] = p[i];
          break;
        case ESPALIER_IDX_SBYTE:
          out[i] = (gint8) p[i];
          break;
        case ESPALIER_IDX_SHORT:
          out[i] = (gint16) ((guint16) p[2 * i] << 8 | p[2 * i + 1]);
          break;
        case ESPALIER_IDX_INT:
          out[i] = (gint32) read_be32 (p + 4 * i);
          break;
        case ESPALIER_IDX_FLOAT:
          {
            guint32 bits = read_be32 (p + 4 * i);

            memcpy (&out[i], &bits, 4);
          }
          break;
        case ESPALIER_IDX_DOUBLE:
          {
            guint64 bits = (guint64) read_be32 (p + 8 * i) << 32 | read_be32 (p + 8 * i + 4);
            double v;

            memcpy (&v, &bits, 8);
            out[i] = (float) v;
          }
          break;
        default:
          g_assert_not_reached ();
        }
      if (first_inf < 0 && isinf (out[i]))
        first_inf = (gssize) i;
    }
  return first_inf;
}

/* Read n_items labels into out, checking them against max_classes. */
static gboolean
read_labels (const EspalierIdx  *lab,
             const char         *labels_path,
             guint               n_items,
             const char         *images_path,
             guint               max_classes,
             gint32             *out,
             guint              *n_classes,
             GError            **error)
{
  const guint8 *p = g_bytes_get_data (lab->payload, NULL);
  gint64 top = -1;

  if (lab->ndim != 1 && !(lab->ndim == 2 && lab->dims[1] == 1))
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISMATCH,
                   _("%s: header field 'number of dimensions' is %u; a labels file has 1"),
                   labels_path, lab->ndim);
      return FALSE;
    }
  if (lab->type == ESPALIER_IDX_FLOAT || lab->type == ESPALIER_IDX_DOUBLE)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_BAD_HEADER,
                   _("%s: header field 'type' is 0x%02X (%s); labels are integers (0x08 ubyte)"),
                   labels_path, lab->type, type_name (lab->type));
      return FALSE;
    }
  if (lab->dims[0] != n_items)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISMATCH,
                   _("%s: header field 'dimension 0' (the number of labels) is %u, but "
                     "%s has %u items"), labels_path, lab->dims[0], images_path, n_items);
      return FALSE;
    }
  for (guint i = 0; i < n_items; i++)
    {
      gint64 v;

      switch (lab->type)
        {
        case ESPALIER_IDX_UBYTE: v = p[i]; break;
        case ESPALIER_IDX_SBYTE: v = (gint8) p[i]; break;
        case ESPALIER_IDX_SHORT: v = (gint16) ((guint16) p[2 * i] << 8 | p[2 * i + 1]); break;
        case ESPALIER_IDX_INT: v = (gint32) read_be32 (p + 4 * i); break;
        default: g_assert_not_reached ();
        }
      if (v < 0 || v >= max_classes)
        {
          g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_LABEL_RANGE,
                       _("%s: the label of item %u is %lld, out of range (0..%u)"),
                       labels_path, i, (long long) v, max_classes - 1);
          return FALSE;
        }
      out[i] = (gint32) v;
      top = MAX (top, v);
    }
  *n_classes = (guint) (top + 1);
  return TRUE;
}

char *
espalier_idx_find_labels (const char *images_path)
{
  g_autofree char *dir = NULL;
  g_autofree char *base = NULL;
  g_autoptr(GString) name = NULL;
  gboolean changed = FALSE;
  char *at;

  g_return_val_if_fail (images_path != NULL, NULL);

  dir = g_path_get_dirname (images_path);
  base = g_path_get_basename (images_path);
  name = g_string_new (base);

  if ((at = strstr (name->str, "images")) != NULL)
    {
      memcpy (at, "labels", 6);
      changed = TRUE;
    }
  else if ((at = strstr (name->str, "Images")) != NULL)
    {
      memcpy (at, "Labels", 6);
      changed = TRUE;
    }
  for (at = strstr (name->str, "idx"); at != NULL; at = strstr (at + 3, "idx"))
    if (at[3] >= '2' && at[3] <= '9')
      {
        at[3] = '1';
        changed = TRUE;
      }
  if (!changed)
    return NULL;

  {
    g_autofree char *plain = g_str_has_suffix (name->str, ".gz")
                             ? g_strndup (name->str, name->len - 3) : g_strdup (name->str);
    g_autofree char *gz = g_strconcat (plain, ".gz", NULL);
    const char *candidates[] = { name->str, plain, gz };

    for (guint i = 0; i < G_N_ELEMENTS (candidates); i++)
      {
        g_autofree char *path = g_build_filename (dir, candidates[i], NULL);

        if (g_strcmp0 (candidates[i], base) != 0
            && g_file_test (path, G_FILE_TEST_IS_REGULAR))
          return g_steal_pointer (&path);
      }
  }
  return NULL;
}

EspalierDataset *
espalier_idx_load_bytes (GBytes        *images_raw,
                         const char    *images_path,
                         GBytes        *labels_raw,
                         const char    *labels_path,
                         GCancellable  *cancellable,
                         GError       **error)
{
  IdxReader img;
  g_auto(EspalierIdx) lab = { 0 };
  g_autofree guint8 *u8 = NULL;
  g_autofree float *f32 = NULL;
  g_autofree gint32 *labels = NULL;
  g_autofree char *base = NULL;
  g_autofree char *dims = NULL;
  EspalierDataset *ds = NULL;
  guint n_classes = 0;
  guint N;

  g_return_val_if_fail (images_path != NULL, NULL);
  g_return_val_if_fail (labels_raw == NULL || labels_path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  /* The images first, read straight into the dataset's block when they are ubyte. */
  if (!idx_reader_open (&img, images_raw, images_path, cancellable, error)
      || !check_images (&img.idx, images_path, error)
      || !idx_reader_check_size (&img, img.idx.type != ESPALIER_IDX_UBYTE, cancellable, error))
    goto out;
  N = img.idx.dims[0];
  if (img.idx.type == ESPALIER_IDX_UBYTE)
    {
      u8 = g_try_malloc (img.payload);
      if (u8 == NULL)
        {
          g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                       _("%s: not enough memory for %u items"), images_path, N);
          goto out;
        }
      if (!idx_reader_read (&img, u8, cancellable, error))
        goto out;
    }
  else
    {
      g_autofree guint8 *payload = g_try_malloc (img.payload);

      f32 = g_try_new (float, img.idx.n_elements);
      if (payload == NULL || f32 == NULL)
        {
          g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                       _("%s: not enough memory for %u items"), images_path, N);
          goto out;
        }
      if (!idx_reader_read (&img, payload, cancellable, error))
        goto out;
      {
        gssize bad = convert_to_f32 (&img.idx, payload, f32);

        if (bad >= 0)
          {
            gsize per_item = img.idx.n_elements / MAX (N, 1);

            g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_CORRUPT,
                         _("%s: item %llu, value %llu is infinite; only finite numbers (or "
                           "NaN for a missing value) can be trained on"), images_path,
                         (unsigned long long) ((gsize) bad / MAX (per_item, 1)),
                         (unsigned long long) ((gsize) bad % MAX (per_item, 1)));
            goto out;
          }
      }
    }

  if (labels_path != NULL)
    {
      if (!read_idx (labels_raw, labels_path, &lab, cancellable, error))
        goto out;
      labels = g_new (gint32, N);
      if (!read_labels (&lab, labels_path, N, images_path, 256, labels, &n_classes, error))
        goto out;
    }

  base = g_path_get_basename (images_path);
  ds = _espalier_dataset_new (base, images_path);
  set_shape_from (ds, &img.idx);
  ds->n_rows = N;
  ds->n_predefined_train = N;
  if (u8 != NULL)
    {
      ds->u8 = g_steal_pointer (&u8);
      ds->scale = 1.0f / 255.0f;
    }
  else
    {
      ds->f32 = g_steal_pointer (&f32);
    }

  dims = format_dims (&img.idx);
  if (labels != NULL)
    {
      ds->labels = g_steal_pointer (&labels);
      _espalier_dataset_set_numbered_classes (ds, n_classes);
      _espalier_dataset_add_report (ds, _("read %s %s items from %s and %u classes from %s"),
                                    dims, type_name (img.idx.type), images_path, n_classes,
                                    labels_path);
    }
  else
    {
      ds->class_names = g_new0 (char *, 1);
      _espalier_dataset_add_report (ds, _("read %s %s items from %s; no labels file found, "
                                      "the rows have no labels"), dims, type_name (img.idx.type),
                                    images_path);
    }

out:
  idx_reader_clear (&img);
  return ds;
}

EspalierDataset *
espalier_idx_load (const char    *images_path,
                   const char    *labels_path,
                   GCancellable  *cancellable,
                   GError       **error)
{
  g_autofree char *found = NULL;

  g_return_val_if_fail (images_path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (labels_path == NULL)
    labels_path = found = espalier_idx_find_labels (images_path);
  return espalier_idx_load_bytes (NULL, images_path, NULL, labels_path, cancellable,
                                  error);
}

EspalierDataset *
espalier_idx_load_fashion_mnist_bytes (GBytes * const     raw[4],
                                       const char * const paths[4],
                                       GCancellable      *cancellable,
                                       GError           **error)
{
  IdxReader img[2];
  EspalierIdx lab[2] = { { 0 } };
  g_autofree guint8 *u8 = NULL;
  g_autofree gint32 *labels = NULL;
  EspalierDataset *ds = NULL;
  guint N[2], n_classes;
  const gsize F = 28 * 28;

  g_return_val_if_fail (paths != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  memset (img, 0, sizeof img);
  /* The headers (and the small labels files) first, to learn the size of the one
   * block the images are then inflated into. */
  for (guint part = 0; part < 2; part++)
    {
      const char *ipath = paths[2 * part], *lpath = paths[2 * part + 1];

      if (!idx_reader_open (&img[part], raw != NULL ? raw[2 * part] : NULL, ipath,
                            cancellable, error)
          || !read_idx (raw != NULL ? raw[2 * part + 1] : NULL, lpath, &lab[part],
                        cancellable, error))
        goto out;
      if (img[part].idx.type != ESPALIER_IDX_UBYTE || img[part].idx.ndim != 3
          || img[part].idx.dims[1] != 28 || img[part].idx.dims[2] != 28)
        {
          g_autofree char *dims = format_dims (&img[part].idx);

          g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISMATCH,
                       _("%s: header fields 'type' and 'dimensions' are %s %s; Fashion-MNIST "
                         "images are N x 28 x 28 ubyte"), ipath, dims,
                       type_name (img[part].idx.type));
          goto out;
        }
      if (!idx_reader_check_size (&img[part], FALSE, cancellable, error))
        goto out;
      N[part] = img[part].idx.dims[0];
    }

  u8 = g_try_malloc ((gsize) (N[0] + N[1]) * F);
  labels = g_new (gint32, (gsize) N[0] + N[1]);
  if (u8 == NULL)
    {
      g_set_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO,
                   _("%s: not enough memory for %u images"), paths[0], N[0] + N[1]);
      goto out;
    }
  for (guint part = 0; part < 2; part++)
    {
      gsize at = part == 0 ? 0 : N[0];

      if (!idx_reader_read (&img[part], u8 + at * F, cancellable, error))
        goto out;
      idx_reader_clear (&img[part]);
    }
  for (guint part = 0; part < 2; part++)
    {
      gsize at = part == 0 ? 0 : N[0];

      if (!read_labels (&lab[part], paths[2 * part + 1], N[part], paths[2 * part],
                        G_N_ELEMENTS (fashion_mnist_classes), labels + at, &n_classes, error))
        goto out;
    }

  {
    const guint dims[3] = { 1, 28, 28 };

    ds = _espalier_dataset_new ("fashion-mnist", "fashion-mnist");
    _espalier_dataset_set_shape (ds, 3, dims);
  }
  ds->n_rows = N[0] + N[1];
  ds->n_predefined_train = N[0];
  ds->u8 = g_steal_pointer (&u8);
  ds->scale = 1.0f / 255.0f;
  ds->labels = g_steal_pointer (&labels);
  ds->n_classes = G_N_ELEMENTS (fashion_mnist_classes);
  ds->class_names = g_new0 (char *, ds->n_classes + 1);
  for (guint k = 0; k < ds->n_classes; k++)
    ds->class_names[k] = g_strdup (fashion_mnist_classes[k]);
  _espalier_dataset_add_report (ds, _("read Fashion-MNIST: %u training and %u test images of "
                                  "28 x 28, 10 classes"), N[0], N[1]);

out:
  for (guint part = 0; part < 2; part++)
    {
      idx_reader_clear (&img[part]);
      espalier_idx_clear (&lab[part]);
    }
  return ds;
}

EspalierDataset *
espalier_idx_load_fashion_mnist (const char    *dir,
                                 GCancellable  *cancellable,
                                 GError       **error)
{
  char *paths[4] = { NULL };
  EspalierDataset *ds;

  g_return_val_if_fail (dir != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  for (guint i = 0; i < 4; i++)
    paths[i] = g_build_filename (dir, espalier_fashion_mnist_files[i], NULL);
  ds = espalier_idx_load_fashion_mnist_bytes (NULL, (const char * const *) paths,
                                              cancellable, error);
  for (guint i = 0; i < 4; i++)
    g_free (paths[i]);
  return ds;
}
