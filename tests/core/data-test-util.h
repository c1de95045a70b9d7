/* SPDX-License-Identifier: GPL-3.0-or-later */
/* data-test-util.h: helpers the data-layer tests share: a scratch directory per test
 * program (also the XDG cache, so no test writes to the user's), files written from
 * bytes, IDX files built by hand (raw or gzip, through zlib), a fake Fashion-MNIST, and
 * an error check that the message names what it must. dtu_rm_rf also clears the
 * scratch trees of the export tests (onnx-test-util.h, test-c-export.c). Header-only,
 * static. */
#pragma once

#include <string.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <zlib.h>

#include "espalier-dataset.h"

static char *dtu_root;

G_GNUC_UNUSED static void
dtu_rm_rf (const char *path)
{
  GDir *dir = g_dir_open (path, 0, NULL);

  if (dir != NULL)
    {
      const char *name;

      while ((name = g_dir_read_name (dir)) != NULL)
        {
          g_autofree char *child = g_build_filename (path, name, NULL);

          if (g_file_test (child, G_FILE_TEST_IS_DIR) && !g_file_test (child, G_FILE_TEST_IS_SYMLINK))
            dtu_rm_rf (child);
          else
            g_unlink (child);
        }
      g_dir_close (dir);
    }
  g_rmdir (path);
}

/* g_test_init, then a scratch root that is also XDG_CACHE_HOME. */
G_GNUC_UNUSED static void
dtu_init (int    *argc,
          char ***argv)
{
  g_autofree char *cache = NULL;

  g_test_init (argc, argv, NULL);
  dtu_root = g_dir_make_tmp ("espalier-data-test-XXXXXX", NULL);
  g_assert_nonnull (dtu_root);
  cache = g_build_filename (dtu_root, "xdg-cache", NULL);
  g_setenv ("XDG_CACHE_HOME", cache, TRUE);
}

G_GNUC_UNUSED static int
dtu_finish (int status)
{
  dtu_rm_rf (dtu_root);
  g_clear_pointer (&dtu_root, g_free);
  return status;
}

/* A new empty directory under the root. */
G_GNUC_UNUSED static char *
dtu_tmpdir (void)
{
  g_autofree char *tmpl = g_build_filename (dtu_root, "t-XXXXXX", NULL);
  char *dir = g_mkdtemp (g_steal_pointer (&tmpl));

  g_assert_nonnull (dir);
  return dir;
}

G_GNUC_UNUSED static char *
dtu_write (const char    *dir,
           const char    *name,
           gconstpointer  data,
           gsize          length)
{
  g_autoptr(GError) error = NULL;
  char *path = g_build_filename (dir, name, NULL);

  g_file_set_contents (path, data, length, &error);
  g_assert_no_error (error);
  return path;
}

G_GNUC_UNUSED static char *
dtu_write_text (const char *dir,
                const char *name,
                const char *text)
{
  return dtu_write (dir, name, text, strlen (text));
}

G_GNUC_UNUSED static GByteArray *
dtu_gzip (gconstpointer data,
          gsize         length)
{
  GByteArray *out = g_byte_array_new ();
  z_stream zs;
  guint8 buf[16384];
  int ret;

  memset (&zs, 0, sizeof zs);
  g_assert_cmpint (deflateInit2 (&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
                   ==, Z_OK);
  zs.next_in = (Bytef *) data;
  zs.avail_in = length;
  do
    {
      zs.next_out = buf;
      zs.avail_out = sizeof buf;
      ret = deflate (&zs, Z_FINISH);
      g_assert_cmpint (ret, !=, Z_STREAM_ERROR);
      g_byte_array_append (out, buf, sizeof buf - zs.avail_out);
    }
  while (ret != Z_STREAM_END);
  deflateEnd (&zs);
  return out;
}

G_GNUC_UNUSED static void
dtu_put_be32 (GByteArray *b,
              guint32     v)
{
  guint8 p[4] = { v >> 24, v >> 16, v >> 8, v };

  g_byte_array_append (b, p, 4);
}

/* An IDX file: magic 0x0000TTNN, dims, then payload (already big-endian). */
G_GNUC_UNUSED static GByteArray *
dtu_idx (guint8          type,
         guint           ndim,
         const guint32  *dims,
         gconstpointer   payload,
         gsize           payload_length)
{
  GByteArray *b = g_byte_array_new ();
  guint8 magic[4] = { 0, 0, type, ndim };

  g_byte_array_append (b, magic, 4);
  for (guint d = 0; d < ndim; d++)
    dtu_put_be32 (b, dims[d]);
  g_byte_array_append (b, payload, payload_length);
  return b;
}

/* Write an IDX byte array as name, gzipped when gzip. */
G_GNUC_UNUSED static char *
dtu_write_idx (const char *dir,
               const char *name,
               GByteArray *idx,
               gboolean    gzip)
{
  if (gzip)
    {
      g_autoptr(GByteArray) gz = dtu_gzip (idx->data, idx->len);

      return dtu_write (dir, name, gz->data, gz->len);
    }
  return dtu_write (dir, name, idx->data, idx->len);
}

/* The four Fashion-MNIST files, tiny: pixel (i, j) of item n is (n + j) % 256, label
 * n % 10. */
G_GNUC_UNUSED static void
dtu_write_fake_fashion (const char *dir,
                        guint       n_train,
                        guint       n_test)
{
  const char *names[4] = {
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
  };

  for (guint part = 0; part < 2; part++)
    {
      guint n = part == 0 ? n_train : n_test;
      guint32 idims[3] = { n, 28, 28 }, ldims[1] = { n };
      g_autofree guint8 *pixels = g_new (guint8, (gsize) n * 784);
      g_autofree guint8 *labels = g_new (guint8, MAX (n, 1));
      g_autoptr(GByteArray) images = NULL;
      g_autoptr(GByteArray) lab = NULL;
      g_autofree char *p1 = NULL;
      g_autofree char *p2 = NULL;

      for (guint i = 0; i < n; i++)
        {
          for (guint j = 0; j < 784; j++)
            pixels[(gsize) i * 784 + j] = (guint8) ((i + j) % 256);
          labels[i] = i % 10;
        }
      images = dtu_idx (0x08, 3, idims, pixels, (gsize) n * 784);
      lab = dtu_idx (0x08, 1, ldims, labels, n);
      p1 = dtu_write_idx (dir, names[2 * part], images, TRUE);
      p2 = dtu_write_idx (dir, names[2 * part + 1], lab, TRUE);
    }
}

/* Assert error is domain/code and its message contains each of the NULL-terminated
 * strings. */
G_GNUC_UNUSED static void
dtu_assert_error (const GError *error,
                  GQuark        domain,
                  int           code,
                  ...)
{
  va_list ap;
  const char *s;

  g_assert_nonnull (error);
  g_test_message ("error: %s", error->message);
  g_assert_error (error, domain, code);
  va_start (ap, code);
  while ((s = va_arg (ap, const char *)) != NULL)
    {
      if (strstr (error->message, s) == NULL)
        g_error ("message “%s” does not name “%s”", error->message, s);
    }
  va_end (ap);
}

/* Options that skip the cache (most tests load small files once). */
G_GNUC_UNUSED static void
dtu_options_no_cache (EspalierLoadOptions *options)
{
  espalier_load_options_init (options);
  options->use_cache = FALSE;
}

/* Whether the report has a line containing s. */
G_GNUC_UNUSED static gboolean
dtu_report_has (EspalierDataset *ds,
                const char      *s)
{
  GPtrArray *report = espalier_dataset_get_report (ds);

  for (guint i = 0; i < report->len; i++)
    if (strstr (g_ptr_array_index (report, i), s) != NULL)
      return TRUE;
  return FALSE;
}
