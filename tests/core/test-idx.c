/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-idx.c: the IDX loader on files written here (raw and gzip, ubyte and float, 2
 * to 5 dimensions, labels found by name or given) and on every kind of bad file, each
 * error checked for its code and for naming the file and the header field; then
 * Fashion-MNIST, a tiny fake one and the real one when it is installed. */
#include "config.h"

#include <fcntl.h>
#include <math.h>
#include <unistd.h>

#include "espalier-dataset.h"
#include "espalier-dataset-private.h"
#include "espalier-idx.h"

#include "data-test-util.h"

/* 5 items of 3 x 4: pixel j of item n is 10 * n + j; labels n % 3, so 3 classes. */
static void
write_small_pair (const char *dir,
                  const char *images_name,
                  const char *labels_name,
                  gboolean    gzip)
{
  guint32 idims[3] = { 5, 3, 4 }, ldims[1] = { 5 };
  guint8 pixels[60], labels[5];
  g_autoptr(GByteArray) images = NULL;
  g_autoptr(GByteArray) lab = NULL;
  g_autofree char *p1 = NULL;
  g_autofree char *p2 = NULL;

  for (guint n = 0; n < 5; n++)
    {
      for (guint j = 0; j < 12; j++)
        pixels[n * 12 + j] = 10 * n + j;
      labels[n] = n % 3;
    }
  images = dtu_idx (0x08, 3, idims, pixels, sizeof pixels);
  lab = dtu_idx (0x08, 1, ldims, labels, sizeof labels);
  p1 = dtu_write_idx (dir, images_name, images, gzip);
  if (labels_name != NULL)
    p2 = dtu_write_idx (dir, labels_name, lab, gzip);
}

static EspalierDataset *
load_no_cache (const char  *path,
               GError     **error)
{
  EspalierLoadOptions options;

  dtu_options_no_cache (&options);
  return espalier_dataset_load (path, &options, NULL, error);
}

static void
check_small_pair (EspalierDataset *ds,
                  const char      *images_name)
{
  const guint *dims = espalier_dataset_get_dims (ds);
  const guint8 *u8 = espalier_dataset_get_u8 (ds);
  const gint32 *labels = espalier_dataset_get_labels (ds);

  g_assert_cmpstr (espalier_dataset_get_name (ds), ==, images_name);
  g_assert_true (g_path_is_absolute (espalier_dataset_get_source (ds)));
  g_assert_true (g_str_has_suffix (espalier_dataset_get_source (ds), images_name));
  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, 5);
  g_assert_cmpuint (espalier_dataset_get_row_size (ds), ==, 12);
  g_assert_cmpuint (espalier_dataset_get_rank (ds), ==, 3);
  g_assert_cmpuint (dims[0], ==, 1);
  g_assert_cmpuint (dims[1], ==, 3);
  g_assert_cmpuint (dims[2], ==, 4);
  g_assert_true (espalier_dataset_is_u8 (ds));
  g_assert_null (espalier_dataset_get_f32 (ds));
  g_assert_cmpfloat_with_epsilon (espalier_dataset_get_scale (ds), 1.0f / 255.0f, 1e-9);
  g_assert_cmpfloat (espalier_dataset_get_shift (ds), ==, 0.0f);
  for (guint n = 0; n < 5; n++)
    {
      for (guint j = 0; j < 12; j++)
        g_assert_cmpuint (u8[n * 12 + j], ==, 10 * n + j);
      g_assert_cmpint (labels[n], ==, n % 3);
    }
  g_assert_cmpuint (espalier_dataset_get_n_classes (ds), ==, 3);
  g_assert_cmpstr (espalier_dataset_get_class_name (ds, 0), ==, "0");
  g_assert_cmpstr (espalier_dataset_get_class_name (ds, 2), ==, "2");
  g_assert_cmpuint (espalier_dataset_get_n_predefined_train (ds), ==, 5);
  g_assert_null (espalier_dataset_get_targets (ds));
  g_assert_cmpstr (espalier_dataset_get_feature_name (ds, 11), ==, "p11");
}

static void
test_ubyte_raw (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *path = g_build_filename (dir, "small-images.idx3-ubyte", NULL);
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GError) error = NULL;

  write_small_pair (dir, "small-images.idx3-ubyte", "small-labels.idx1-ubyte", FALSE);
  ds = load_no_cache (path, &error);
  g_assert_no_error (error);
  check_small_pair (ds, "small-images.idx3-ubyte");
}

static void
test_ubyte_gzip (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *path = g_build_filename (dir, "train-images-idx3-ubyte.gz", NULL);
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GError) error = NULL;

  write_small_pair (dir, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", TRUE);
  ds = load_no_cache (path, &error);
  g_assert_no_error (error);
  check_small_pair (ds, "train-images-idx3-ubyte.gz");
}

/* gzip is told by content: a gzip file without .gz, and a raw one named .gz. */
static void
test_gzip_by_content (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *path = g_build_filename (dir, "data-images.idx", NULL);
  g_autofree char *path2 = g_build_filename (dir, "raw-images.idx.gz", NULL);
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(EspalierDataset) ds2 = NULL;
  g_autoptr(GError) error = NULL;

  write_small_pair (dir, "data-images.idx", "data-labels.idx", TRUE);
  ds = load_no_cache (path, &error);
  g_assert_no_error (error);
  check_small_pair (ds, "data-images.idx");

  write_small_pair (dir, "raw-images.idx.gz", "raw-labels.idx.gz", FALSE);
  ds2 = load_no_cache (path2, &error);
  g_assert_no_error (error);
  check_small_pair (ds2, "raw-images.idx.gz");
}

/* float32 (N, F) images become rank-1 f32 rows; labels given as an option. */
static void
test_float (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *images = NULL;
  g_autofree char *labels = NULL;
  g_autoptr(GByteArray) idx = NULL;
  g_autoptr(GByteArray) lab = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions options;
  guint32 dims[2] = { 4, 3 }, ldims[1] = { 4 };
  guint8 payload[48], lpayload[4] = { 1, 0, 1, 1 };
  const float *f32;

  for (guint i = 0; i < 12; i++)
    {
      float v = (float) i * 0.5f - 2.0f;
      guint32 bits;

      memcpy (&bits, &v, 4);
      payload[4 * i] = bits >> 24;
      payload[4 * i + 1] = bits >> 16;
      payload[4 * i + 2] = bits >> 8;
      payload[4 * i + 3] = bits;
    }
  idx = dtu_idx (0x0D, 2, dims, payload, sizeof payload);
  lab = dtu_idx (0x08, 1, ldims, lpayload, sizeof lpayload);
  images = dtu_write_idx (dir, "points.idx", idx, TRUE);
  labels = dtu_write_idx (dir, "which.idx", lab, FALSE);

  dtu_options_no_cache (&options);
  options.labels_path = labels;
  ds = espalier_dataset_load (images, &options, NULL, &error);
  g_assert_no_error (error);
  g_assert_false (espalier_dataset_is_u8 (ds));
  g_assert_cmpuint (espalier_dataset_get_rank (ds), ==, 1);
  g_assert_cmpuint (espalier_dataset_get_dims (ds)[0], ==, 3);
  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, 4);
  g_assert_cmpfloat (espalier_dataset_get_scale (ds), ==, 1.0f);
  f32 = espalier_dataset_get_f32 (ds);
  for (guint i = 0; i < 12; i++)
    g_assert_cmpfloat (f32[i], ==, (float) i * 0.5f - 2.0f);
  g_assert_cmpuint (espalier_dataset_get_n_classes (ds), ==, 2);
  g_assert_cmpint (espalier_dataset_get_labels (ds)[0], ==, 1);
}

/* An infinite value in a float IDX file is refused, naming the item; NaN stays a
 * missing value for the cleaning steps. */
static void
test_float_infinite (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  guint32 dims[2] = { 3, 2 };
  guint8 payload[24];
  g_autoptr(GByteArray) idx = NULL;
  g_autofree char *path = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GError) error = NULL;

  for (guint i = 0; i < 6; i++)
    {
      float v = i == 3 ? INFINITY : (float) i;
      guint32 bits;

      memcpy (&bits, &v, 4);
      payload[4 * i] = bits >> 24;
      payload[4 * i + 1] = bits >> 16;
      payload[4 * i + 2] = bits >> 8;
      payload[4 * i + 3] = bits;
    }
  idx = dtu_idx (0x0D, 2, dims, payload, sizeof payload);
  path = dtu_write_idx (dir, "inf.idx", idx, FALSE);
  ds = load_no_cache (path, &error);
  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_CORRUPT,
                    "inf.idx", "item 1, value 1", "infinite", NULL);
}

/* 4 dimensions are (N, C, H, W); 5 keep their dims as rank 4. */
static void
test_more_dims (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  guint32 dims4[4] = { 2, 3, 2, 2 }, dims5[5] = { 2, 2, 2, 2, 2 };
  guint8 payload[24] = { 0 };
  g_autoptr(GByteArray) idx4 = dtu_idx (0x08, 4, dims4, payload, 24);
  g_autofree char *p4 = dtu_write_idx (dir, "four.idx", idx4, FALSE);
  g_autoptr(EspalierDataset) ds4 = NULL;
  g_autoptr(GError) error = NULL;

  ds4 = load_no_cache (p4, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_rank (ds4), ==, 3);
  g_assert_cmpuint (espalier_dataset_get_dims (ds4)[0], ==, 3);
  g_assert_cmpuint (espalier_dataset_get_row_size (ds4), ==, 12);
  g_assert_null (espalier_dataset_get_labels (ds4));
  g_assert_true (dtu_report_has (ds4, "no labels"));

  {
    guint8 payload5[32] = { 0 };
    g_autoptr(GByteArray) good5 = dtu_idx (0x08, 5, dims5, payload5, 32);
    g_autofree char *p5 = dtu_write_idx (dir, "five.idx", good5, FALSE);
    g_autoptr(EspalierDataset) ds5 = load_no_cache (p5, &error);

    g_assert_no_error (error);
    g_assert_cmpuint (espalier_dataset_get_rank (ds5), ==, 4);
    g_assert_cmpuint (espalier_dataset_get_row_size (ds5), ==, 16);
  }
}

static void
test_find_labels (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  const char *pairs[][2] = {
    { "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz" },
    { "t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte" },
    { "a-images-idx3-ubyte", "a-labels-idx1-ubyte.gz" },
    { "b-images-idx3-ubyte.gz", "b-labels-idx1-ubyte" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (pairs); i++)
    {
      g_autofree char *images = dtu_write_text (dir, pairs[i][0], "x");
      g_autofree char *labels = dtu_write_text (dir, pairs[i][1], "x");
      g_autofree char *found = espalier_idx_find_labels (images);

      g_assert_cmpstr (found, ==, labels);
    }
  {
    g_autofree char *lonely = dtu_write_text (dir, "lonely-images.idx", "x");
    g_autofree char *plain = dtu_write_text (dir, "plain.idx", "x");
    g_autofree char *none1 = espalier_idx_find_labels (lonely);
    g_autofree char *none2 = espalier_idx_find_labels (plain);

    g_assert_null (none1);
    g_assert_null (none2);
  }
}

/* Bad files */

static void
expect_load_error (const char *path,
                   int         code,
                   const char *field)
{
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *base = g_path_get_basename (path);

  ds = load_no_cache (path, &error);
  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, code, base, field, NULL);
}

static void
test_error_empty (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *path = dtu_write (dir, "empty-images.idx3-ubyte", "", 0);

  expect_load_error (path, ESPALIER_DATA_ERROR_EMPTY, "empty file");
}

static void
test_error_truncated_gzip (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  guint32 dims[3] = { 50, 8, 8 };
  g_autofree guint8 *pixels = g_new (guint8, 50 * 64);
  g_autoptr(GByteArray) idx = NULL;
  g_autoptr(GByteArray) gz = NULL;
  g_autofree char *path = NULL;

  for (guint i = 0; i < 50 * 64; i++)
    pixels[i] = g_test_rand_int_range (0, 256);
  idx = dtu_idx (0x08, 3, dims, pixels, 50 * 64);
  gz = dtu_gzip (idx->data, idx->len);
  path = dtu_write (dir, "cut-images.idx3-ubyte.gz", gz->data, gz->len / 2);
  expect_load_error (path, ESPALIER_DATA_ERROR_TRUNCATED, "truncated gzip");
}

static void
test_error_corrupt_gzip (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  guint32 dims[3] = { 50, 8, 8 };
  g_autofree guint8 *pixels = g_new0 (guint8, 50 * 64);
  g_autoptr(GByteArray) idx = NULL;
  g_autoptr(GByteArray) gz = NULL;
  g_autofree char *path = NULL;

  idx = dtu_idx (0x08, 3, dims, pixels, 50 * 64);
  gz = dtu_gzip (idx->data, idx->len);
  /* Damage the trailer's CRC: the data inflates, the check fails. */
  gz->data[gz->len - 6] ^= 0xff;
  path = dtu_write (dir, "crc-images.idx3-ubyte.gz", gz->data, gz->len);
  expect_load_error (path, ESPALIER_DATA_ERROR_CORRUPT, "corrupt gzip");
}

static void
test_error_magic (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  const guint8 bad[] = { 0x12, 0x34, 0x08, 0x03, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 7 };
  g_autofree char *path = dtu_write (dir, "magic-images.idx", bad, sizeof bad);

  expect_load_error (path, ESPALIER_DATA_ERROR_BAD_HEADER, "'magic'");
}

static void
test_error_type (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  const guint8 bad[] = { 0, 0, 0x0A, 0x02, 0, 0, 0, 1, 0, 0, 0, 1, 7 };
  g_autofree char *path = dtu_write (dir, "type-images.idx", bad, sizeof bad);

  expect_load_error (path, ESPALIER_DATA_ERROR_BAD_HEADER, "'type'");
}

static void
test_error_ndim (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  const guint8 bad[] = { 0, 0, 0x08, 0x00, 7 };
  g_autofree char *path = dtu_write (dir, "ndim-images.idx", bad, sizeof bad);

  expect_load_error (path, ESPALIER_DATA_ERROR_BAD_HEADER, "'number of dimensions'");
}

static void
test_error_truncated_header (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  const guint8 bad[] = { 0, 0, 0x08, 0x03, 0, 0, 0, 5, 0, 0 };
  g_autofree char *path = dtu_write (dir, "short-images.idx", bad, sizeof bad);

  expect_load_error (path, ESPALIER_DATA_ERROR_TRUNCATED, "'dimension 1'");
}

static void
test_error_zero_dimension (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  const guint8 bad[] = { 0, 0, 0x08, 0x02, 0, 0, 0, 2, 0, 0, 0, 0 };
  g_autofree char *path = dtu_write (dir, "zero-images.idx", bad, sizeof bad);

  expect_load_error (path, ESPALIER_DATA_ERROR_BAD_HEADER, "'dimension 1' is 0");
}

static void
test_error_short_payload (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  guint32 dims[3] = { 10, 4, 4 };
  guint8 pixels[100] = { 0 };
  g_autoptr(GByteArray) idx = dtu_idx (0x08, 3, dims, pixels, sizeof pixels);
  g_autofree char *path = dtu_write_idx (dir, "few-images.idx", idx, TRUE);

  expect_load_error (path, ESPALIER_DATA_ERROR_TRUNCATED, "'dimensions' (10 x 4 x 4 ubyte)");
}

/* Limits: a header describing more than the memory holds is refused, naming the size,
 * before anything is allocated. ESPALIER_MEMORY_AVAILABLE makes the machine small. */

/* A 28-byte raw file whose header claims 10^12 ubyte elements (1000000 x 1000 x 1000):
 * the file cannot hold them, and the error says how many bytes it promised. */
static void
test_limit_huge_header_raw (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  guint32 dims[3] = { 1000000, 1000, 1000 };
  guint8 pixels[12] = { 0 };
  g_autoptr(GByteArray) idx = dtu_idx (0x08, 3, dims, pixels, sizeof pixels);
  g_autofree char *path = dtu_write_idx (dir, "huge-images.idx", idx, FALSE);

  expect_load_error (path, ESPALIER_DATA_ERROR_TRUNCATED, "promise 1000000000000 bytes");
}

/* The same header gzipped: the stream is read to its end (nothing kept) to give the
 * same error. */
static void
test_limit_huge_header_gzip (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  guint32 dims[3] = { 1000000, 1000, 1000 };
  guint8 pixels[12] = { 0 };
  g_autoptr(GByteArray) idx = dtu_idx (0x08, 3, dims, pixels, sizeof pixels);
  g_autofree char *path = dtu_write_idx (dir, "huge-images.idx.gz", idx, TRUE);

  expect_load_error (path, ESPALIER_DATA_ERROR_TRUNCATED, "promise 1000000000000 bytes");
}

/* A consistent float file of 1000 x 1000 (4 MB, 8 MB with its float copy), raw and
 * gzip, on a machine of 1 MB: the need and what is available are named. */
static void
test_limit_memory (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  guint32 dims[2] = { 1000, 1000 };
  g_autofree guint8 *payload = g_new0 (guint8, 4000000);
  g_autoptr(GByteArray) idx = NULL;
  g_autofree char *need = g_format_size (8000000), *have = g_format_size (1000000);
  g_autofree char *field = g_strdup_printf ("needs %s of memory, more than the %s available",
                                            need, have);
  GRand *rand = g_rand_new_with_seed (7);

  /* Small random floats: gzip cannot squeeze them much. */
  for (guint i = 0; i < 1000000; i++)
    payload[4 * i + 3] = (guint8) g_rand_int (rand);
  g_rand_free (rand);
  idx = dtu_idx (0x0D, 2, dims, payload, 4000000);
  g_setenv ("ESPALIER_MEMORY_AVAILABLE", "1000000", TRUE);
  for (int gzip = 0; gzip < 2; gzip++)
    {
      g_autofree char *path = dtu_write_idx (dir, gzip ? "float-images.idx.gz" : "float-images.idx",
                                             idx, gzip);

      expect_load_error (path, ESPALIER_DATA_ERROR_IO, field);
    }
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");
}

/* A sparse raw file that really holds the 10^12 bytes its header promises (holes take
 * no disk): refused by the memory check without reading it. Skipped where the file
 * system cannot make such a file. */
static void
test_limit_sparse_terabyte (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  guint32 dims[3] = { 1000000, 1000, 1000 };
  g_autoptr(GByteArray) idx = dtu_idx (0x08, 3, dims, NULL, 0);
  g_autofree char *path = dtu_write_idx (dir, "sparse-images.idx", idx, FALSE);
  g_autofree char *size = g_format_size (1000000000000);
  g_autofree char *field = g_strdup_printf ("describe %s of data", size);
  int fd = open (path, O_WRONLY);

  g_assert_cmpint (fd, >=, 0);
  if (ftruncate (fd, (off_t) idx->len + (off_t) 1000000000000) != 0)
    {
      close (fd);
      g_test_skip ("the file system cannot hold a sparse file of 1 TB");
      return;
    }
  close (fd);
  g_setenv ("ESPALIER_MEMORY_AVAILABLE", "1000000000", TRUE);
  expect_load_error (path, ESPALIER_DATA_ERROR_IO, field);
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");
  g_unlink (path);
}

static void
test_error_extra_bytes (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  guint32 dims[2] = { 2, 4 };
  guint8 pixels[9] = { 0 };
  g_autoptr(GByteArray) idx = dtu_idx (0x08, 2, dims, pixels, sizeof pixels);
  g_autofree char *path = dtu_write_idx (dir, "extra-images.idx", idx, FALSE);

  expect_load_error (path, ESPALIER_DATA_ERROR_MISMATCH, "'dimensions'");
}

static void
test_error_label_count (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  guint32 dims[3] = { 5, 2, 2 }, ldims[1] = { 4 };
  guint8 pixels[20] = { 0 }, labels[4] = { 0 };
  g_autoptr(GByteArray) idx = dtu_idx (0x08, 3, dims, pixels, sizeof pixels);
  g_autoptr(GByteArray) lab = dtu_idx (0x08, 1, ldims, labels, sizeof labels);
  g_autofree char *path = dtu_write_idx (dir, "count-images.idx", idx, FALSE);
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GError) error = NULL;

  g_free (dtu_write_idx (dir, "count-labels.idx", lab, TRUE));
  ds = load_no_cache (path, &error);
  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISMATCH,
                    "count-labels.idx", "'dimension 0'", "is 4", "count-images.idx",
                    "has 5", NULL);
}

static void
test_error_label_range (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  guint32 dims[3] = { 3, 2, 2 }, ldims[1] = { 3 };
  guint8 pixels[12] = { 0 };
  const guint8 big[12] = { 0, 0, 0, 1, 0, 0, 1, 44, 0, 0, 0, 2 };   /* int32: 1, 300, 2 */
  const guint8 negative[3] = { 1, 0xff, 0 };                        /* sbyte: 1, -1, 0 */
  g_autoptr(GByteArray) idx = dtu_idx (0x08, 3, dims, pixels, sizeof pixels);
  g_autoptr(GByteArray) lab1 = dtu_idx (0x0C, 1, ldims, big, sizeof big);
  g_autoptr(GByteArray) lab2 = dtu_idx (0x09, 1, ldims, negative, sizeof negative);
  g_autofree char *path = dtu_write_idx (dir, "range-images.idx", idx, FALSE);
  g_autofree char *l1 = dtu_write_idx (dir, "big.idx", lab1, FALSE);
  g_autofree char *l2 = dtu_write_idx (dir, "negative.idx", lab2, FALSE);
  EspalierLoadOptions options;

  dtu_options_no_cache (&options);
  for (guint i = 0; i < 2; i++)
    {
      g_autoptr(EspalierDataset) ds = NULL;
      g_autoptr(GError) error = NULL;

      options.labels_path = i == 0 ? l1 : l2;
      ds = espalier_dataset_load (path, &options, NULL, &error);
      g_assert_null (ds);
      dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_LABEL_RANGE,
                        i == 0 ? "big.idx" : "negative.idx", "item 1",
                        i == 0 ? "300" : "-1", "out of range", NULL);
    }
}

static void
test_error_labels_not_1d (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  guint32 dims[3] = { 2, 2, 2 }, ldims[2] = { 2, 2 };
  guint8 pixels[8] = { 0 }, labels[4] = { 0 };
  g_autoptr(GByteArray) idx = dtu_idx (0x08, 3, dims, pixels, sizeof pixels);
  g_autoptr(GByteArray) lab = dtu_idx (0x08, 2, ldims, labels, sizeof labels);
  g_autofree char *path = dtu_write_idx (dir, "flat-images.idx", idx, FALSE);
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GError) error = NULL;

  g_free (dtu_write_idx (dir, "flat-labels.idx", lab, FALSE));
  ds = load_no_cache (path, &error);
  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISMATCH,
                    "flat-labels.idx", "'number of dimensions'", NULL);
}

/* A labels file given where images are expected. */
static void
test_error_images_1d (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  guint32 ldims[1] = { 3 };
  guint8 labels[3] = { 0, 1, 2 };
  g_autoptr(GByteArray) lab = dtu_idx (0x08, 1, ldims, labels, sizeof labels);
  g_autofree char *path = dtu_write_idx (dir, "only-labels-idx1-ubyte", lab, FALSE);

  expect_load_error (path, ESPALIER_DATA_ERROR_BAD_HEADER, "'number of dimensions' is 1");
}

/* The parser on its own, against a header it accepts. */
static void
test_parse (void)
{
  guint32 dims[2] = { 2, 3 };
  guint8 payload[6] = { 1, 2, 3, 4, 5, 6 };
  g_autoptr(GByteArray) b = dtu_idx (0x08, 2, dims, payload, sizeof payload);
  g_autoptr(GBytes) bytes = g_bytes_new (b->data, b->len);
  g_auto(EspalierIdx) idx = { 0 };
  g_autoptr(GError) error = NULL;

  g_assert_true (espalier_idx_parse (bytes, "mem.idx", &idx, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (idx.type, ==, ESPALIER_IDX_UBYTE);
  g_assert_cmpuint (idx.ndim, ==, 2);
  g_assert_cmpuint (idx.dims[1], ==, 3);
  g_assert_cmpuint (idx.n_elements, ==, 6);
  g_assert_cmpuint (g_bytes_get_size (idx.payload), ==, 6);
}

/* Fashion-MNIST */

static void
test_fake_fashion (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *saved = g_strdup (g_getenv ("ESPALIER_FASHION_MNIST_DIR"));
  EspalierLoadOptions options;

  g_setenv ("ESPALIER_FASHION_MNIST_DIR", dir, TRUE);
  g_assert_false (espalier_dataset_fashion_mnist_available ());
  dtu_options_no_cache (&options);
  ds = espalier_dataset_load ("fashion-mnist", &options, NULL, &error);
  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_NOT_FOUND,
                    "train-images-idx3-ubyte.gz", "dataset-fashion-mnist", NULL);
  g_clear_error (&error);

  dtu_write_fake_fashion (dir, 30, 12);
  g_assert_true (espalier_dataset_fashion_mnist_available ());
  ds = espalier_dataset_load ("fashion-mnist", &options, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (espalier_dataset_get_name (ds), ==, "fashion-mnist");
  g_assert_cmpstr (espalier_dataset_get_source (ds), ==, "fashion-mnist");
  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, 42);
  g_assert_cmpuint (espalier_dataset_get_n_predefined_train (ds), ==, 30);
  g_assert_cmpuint (espalier_dataset_get_n_classes (ds), ==, 10);
  g_assert_cmpint (espalier_dataset_get_labels (ds)[31], ==, 1);   /* test item 1 */
  g_assert_cmpuint (espalier_dataset_get_u8 (ds)[31 * 784 + 5], ==, 6);

  if (saved != NULL)
    g_setenv ("ESPALIER_FASHION_MNIST_DIR", saved, TRUE);
  else
    g_unsetenv ("ESPALIER_FASHION_MNIST_DIR");
}

static void
test_fashion_mnist (void)
{
  static const char *names[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
  };
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions options;
  const guint *dims;
  gint64 t0;

  if (!espalier_dataset_fashion_mnist_available ())
    {
      g_test_skip ("Fashion-MNIST is not installed in " FASHION_MNIST_DIR);
      return;
    }
  dtu_options_no_cache (&options);
  t0 = g_get_monotonic_time ();
  ds = espalier_dataset_load ("fashion-mnist", &options, NULL, &error);
  g_assert_no_error (error);
  g_test_message ("Fashion-MNIST parsed in %.0f ms", (g_get_monotonic_time () - t0) / 1e3);

  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, 70000);
  g_assert_cmpuint (espalier_dataset_get_n_predefined_train (ds), ==, 60000);
  g_assert_cmpuint (espalier_dataset_get_row_size (ds), ==, 784);
  g_assert_cmpuint (espalier_dataset_get_rank (ds), ==, 3);
  dims = espalier_dataset_get_dims (ds);
  g_assert_cmpuint (dims[0], ==, 1);
  g_assert_cmpuint (dims[1], ==, 28);
  g_assert_cmpuint (dims[2], ==, 28);
  g_assert_true (espalier_dataset_is_u8 (ds));
  g_assert_cmpuint (espalier_dataset_get_n_classes (ds), ==, 10);
  for (guint k = 0; k < 10; k++)
    g_assert_cmpstr (espalier_dataset_get_class_name (ds, k), ==, names[k]);
  g_assert_cmpint (espalier_dataset_get_labels (ds)[0], ==, 9);
  g_assert_cmpstr (espalier_dataset_get_class_name (ds, espalier_dataset_get_labels (ds)[0]),
                   ==, "Ankle boot");
  /* The first test image is an ankle boot too. */
  g_assert_cmpint (espalier_dataset_get_labels (ds)[60000], ==, 9);
}

/* Streaming: IDX files are read in pieces, the images inflated straight into the
 * dataset's block. Files larger than the stream's buffer, gzip in several members, and
 * bad files whose fault only shows mid-stream. */

typedef enum {
  PACK_RAW,
  PACK_GZIP,
  PACK_MEMBERS,      /* two gzip members and zero padding */
} Packing;

static char *
write_packed (const char *dir,
              const char *name,
              GByteArray *idx,
              Packing     packing)
{
  g_autoptr(GByteArray) out = NULL;
  g_autoptr(GByteArray) second = NULL;
  const guint8 zeros[100] = { 0 };
  guint half = idx->len / 2;

  if (packing != PACK_MEMBERS)
    return dtu_write_idx (dir, name, idx, packing == PACK_GZIP);
  out = dtu_gzip (idx->data, half);
  second = dtu_gzip (idx->data + half, idx->len - half);
  g_byte_array_append (out, second->data, second->len);
  g_byte_array_append (out, zeros, sizeof zeros);
  return dtu_write (dir, name, out->data, out->len);
}

/* Pixel j of item n: a hash, so that gzip barely shrinks the files and they take
 * several of the stream's reads. */
static guint8
fashion_pixel (guint n,
               guint j)
{
  guint32 x = (n * 784 + j) * 2654435761u;

  x ^= x >> 15;
  x *= 2246822519u;
  x ^= x >> 13;
  return (guint8) x;
}

/* Fashion-MNIST images; n_claimed goes in the header (0: n). */
static GByteArray *
fashion_images (guint n,
                guint n_claimed)
{
  guint32 dims[3] = { n_claimed > 0 ? n_claimed : n, 28, 28 };
  g_autofree guint8 *pixels = g_new (guint8, (gsize) n * 784 + 1);

  for (gsize i = 0; i < (gsize) n * 784; i++)
    pixels[i] = fashion_pixel (i / 784, i % 784);
  return dtu_idx (0x08, 3, dims, pixels, (gsize) n * 784);
}

/* Labels n % 10, item bad_item (if < n) set to 10. */
static GByteArray *
fashion_labels (guint n,
                guint bad_item)
{
  guint32 dims[1] = { n };
  g_autofree guint8 *labels = g_new (guint8, MAX (n, 1));

  for (guint i = 0; i < n; i++)
    labels[i] = i == bad_item ? 10 : i % 10;
  return dtu_idx (0x08, 1, dims, labels, n);
}

static void
write_fashion (const char *dir,
               guint       n_train,
               guint       n_test,
               Packing     packing)
{
  for (guint part = 0; part < 2; part++)
    {
      guint n = part == 0 ? n_train : n_test;
      g_autoptr(GByteArray) images = fashion_images (n, 0);
      g_autoptr(GByteArray) labels = fashion_labels (n, G_MAXUINT);

      g_free (write_packed (dir, espalier_fashion_mnist_files[2 * part], images, packing));
      g_free (write_packed (dir, espalier_fashion_mnist_files[2 * part + 1], labels, packing));
    }
}

static void
check_fashion (EspalierDataset *ds,
               guint            n_train,
               guint            n_test)
{
  const guint8 *u8 = espalier_dataset_get_u8 (ds);
  const gint32 *labels = espalier_dataset_get_labels (ds);

  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, n_train + n_test);
  g_assert_cmpuint (espalier_dataset_get_n_predefined_train (ds), ==, n_train);
  for (guint r = 0; r < n_train + n_test; r++)
    {
      guint n = r < n_train ? r : r - n_train;

      g_assert_cmpint (labels[r], ==, n % 10);
      for (guint j = 0; j < 784; j++)
        if (u8[(gsize) r * 784 + j] != fashion_pixel (n, j))
          g_error ("row %u pixel %u is %u, not %u", r, j, u8[(gsize) r * 784 + j],
                   fashion_pixel (n, j));
    }
}

/* 700 + 300 items: 784 kB, several fills of the stream's buffer; from the files and
 * from their bytes, raw, gzip and gzip in members. */
static void
test_stream_fashion (void)
{
  for (Packing packing = PACK_RAW; packing <= PACK_MEMBERS; packing++)
    {
      g_autofree char *dir = dtu_tmpdir ();
      g_autoptr(EspalierDataset) ds = NULL;
      g_autoptr(EspalierDataset) ds2 = NULL;
      g_autoptr(GError) error = NULL;
      GBytes *raw[4];
      char *paths[4];

      write_fashion (dir, 700, 300, packing);
      ds = espalier_idx_load_fashion_mnist (dir, NULL, &error);
      g_assert_no_error (error);
      check_fashion (ds, 700, 300);

      for (guint i = 0; i < 4; i++)
        {
          paths[i] = g_build_filename (dir, espalier_fashion_mnist_files[i], NULL);
          raw[i] = _espalier_data_read_file (paths[i], NULL, &error);
          g_assert_no_error (error);
        }
      ds2 = espalier_idx_load_fashion_mnist_bytes (raw, (const char * const *) paths, NULL,
                                                   &error);
      g_assert_no_error (error);
      check_fashion (ds2, 700, 300);
      for (guint i = 0; i < 4; i++)
        {
          g_bytes_unref (raw[i]);
          g_free (paths[i]);
        }
    }
}

/* Overwrite one of the four files in dir with data, or with idx packed. */
static void
replace_file (const char   *dir,
              guint         which,
              GByteArray   *data)
{
  g_free (dtu_write (dir, espalier_fashion_mnist_files[which], data->data, data->len));
}

static void
expect_fashion_error (const char   *dir,
                      GCancellable *cancellable,
                      GQuark        domain,
                      int           code,
                      const char   *s1,
                      const char   *s2)
{
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GError) error = NULL;

  ds = espalier_idx_load_fashion_mnist (dir, cancellable, &error);
  g_assert_null (ds);
  dtu_assert_error (error, domain, code, s1, s2, NULL);
}

static void
test_stream_fashion_errors (void)
{
  const guint n_train = 400, n_test = 100;
  g_autoptr(GByteArray) images = fashion_images (n_train, 0);
  g_autoptr(GByteArray) gz = dtu_gzip (images->data, images->len);

  /* Cut mid-payload: the gzip stream ends early. */
  {
    g_autofree char *dir = dtu_tmpdir ();
    g_autoptr(GByteArray) cut = g_byte_array_new ();

    write_fashion (dir, n_train, n_test, PACK_GZIP);
    g_byte_array_append (cut, gz->data, gz->len * 3 / 5);
    replace_file (dir, 0, cut);
    expect_fashion_error (dir, NULL, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_TRUNCATED,
                          "train-images-idx3-ubyte.gz", "truncated gzip");
  }
  /* The footer's size lies (as does nothing else): the gzip check fails. */
  {
    g_autofree char *dir = dtu_tmpdir ();
    g_autoptr(GByteArray) lying = g_byte_array_new ();

    write_fashion (dir, n_train, n_test, PACK_GZIP);
    g_byte_array_append (lying, gz->data, gz->len);
    lying->data[lying->len - 1] ^= 0x40;
    replace_file (dir, 0, lying);
    expect_fashion_error (dir, NULL, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_CORRUPT,
                          "train-images-idx3-ubyte.gz", "corrupt gzip");
  }
  /* Garbage after the gzip member. */
  {
    g_autofree char *dir = dtu_tmpdir ();
    g_autoptr(GByteArray) tail = g_byte_array_new ();

    write_fashion (dir, n_train, n_test, PACK_GZIP);
    g_byte_array_append (tail, gz->data, gz->len);
    g_byte_array_append (tail, (const guint8 *) "\0\0junk", 6);
    replace_file (dir, 0, tail);
    expect_fashion_error (dir, NULL, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_CORRUPT,
                          "train-images-idx3-ubyte.gz", "trailing garbage");
  }
  /* Headers that promise more or fewer items than the files hold, gzip and raw; one
   * promises far more than any gzip file of its size can hold. */
  for (guint i = 0; i < 6; i++)
    {
      static const guint claimed[3] = { 101, 99, 0x10000000 };
      g_autofree char *dir = dtu_tmpdir ();
      g_autoptr(GByteArray) lying = fashion_images (n_test, claimed[i % 3]);
      g_autofree char *path = NULL;

      write_fashion (dir, n_train, n_test, PACK_GZIP);
      path = write_packed (dir, espalier_fashion_mnist_files[2], lying,
                           i < 3 ? PACK_GZIP : PACK_RAW);
      expect_fashion_error (dir, NULL, ESPALIER_DATA_ERROR,
                            claimed[i % 3] > n_test ? ESPALIER_DATA_ERROR_TRUNCATED
                                                    : ESPALIER_DATA_ERROR_MISMATCH,
                            "t10k-images-idx3-ubyte.gz", "'dimensions'");
    }
  /* Labels: too few, and one out of range. */
  {
    g_autofree char *dir = dtu_tmpdir ();
    g_autoptr(GByteArray) few = fashion_labels (n_test - 1, G_MAXUINT);
    g_autofree char *path = NULL;

    write_fashion (dir, n_train, n_test, PACK_GZIP);
    path = write_packed (dir, espalier_fashion_mnist_files[3], few, PACK_GZIP);
    expect_fashion_error (dir, NULL, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISMATCH,
                          "t10k-labels-idx1-ubyte.gz", "'dimension 0'");
  }
  {
    g_autofree char *dir = dtu_tmpdir ();
    g_autoptr(GByteArray) bad = fashion_labels (n_train, 321);
    g_autofree char *path = NULL;

    write_fashion (dir, n_train, n_test, PACK_GZIP);
    path = write_packed (dir, espalier_fashion_mnist_files[1], bad, PACK_MEMBERS);
    expect_fashion_error (dir, NULL, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_LABEL_RANGE,
                          "train-labels-idx1-ubyte.gz", "item 321");
  }
  /* Cancelled. */
  {
    g_autofree char *dir = dtu_tmpdir ();
    g_autoptr(GCancellable) cancellable = g_cancellable_new ();

    write_fashion (dir, n_train, n_test, PACK_GZIP);
    g_cancellable_cancel (cancellable);
    expect_fashion_error (dir, cancellable, G_IO_ERROR, G_IO_ERROR_CANCELLED, "", "");
  }
}

/* The generic loader streams too: a header promising far more than the gzip file can
 * hold, a footer whose size lies, and gzip members with padding. */
static void
test_stream_idx (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  guint32 huge[3] = { 0x40000000, 8, 8 }, dims[3] = { 50, 8, 8 };
  g_autofree guint8 *pixels = g_new0 (guint8, 50 * 64);
  g_autoptr(GByteArray) lying = dtu_idx (0x08, 3, huge, pixels, 50 * 64);
  g_autoptr(GByteArray) good = dtu_idx (0x08, 3, dims, pixels, 50 * 64);
  g_autoptr(GByteArray) gz = dtu_gzip (good->data, good->len);
  g_autofree char *p1 = write_packed (dir, "huge-images.idx3-ubyte.gz", lying, PACK_GZIP);
  g_autofree char *p2 = write_packed (dir, "huge-raw-images.idx3-ubyte", lying, PACK_RAW);
  g_autofree char *p3 = NULL;
  g_autofree char *p4 = write_packed (dir, "parts-images.idx3-ubyte.gz", good, PACK_MEMBERS);
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GError) error = NULL;

  expect_load_error (p1, ESPALIER_DATA_ERROR_TRUNCATED, "'dimensions' (1073741824 x 8 x 8");
  expect_load_error (p2, ESPALIER_DATA_ERROR_TRUNCATED, "'dimensions' (1073741824 x 8 x 8");

  gz->data[gz->len - 2] ^= 0x01;
  p3 = dtu_write (dir, "footer-images.idx3-ubyte.gz", gz->data, gz->len);
  expect_load_error (p3, ESPALIER_DATA_ERROR_CORRUPT, "corrupt gzip");

  ds = load_no_cache (p4, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, 50);
}

/* Whole-buffer gunzip (what CSV files use) when the footer's size guess is wrong:
 * members whose last one understates the total grow the buffer; a footer that lies
 * fails the gzip check. */
static void
test_gunzip_footer (void)
{
  g_autofree guint8 *data = g_new (guint8, 100000);
  g_autoptr(GByteArray) a = NULL;
  g_autoptr(GByteArray) b = NULL;
  g_autoptr(GBytes) packed = NULL;
  g_autoptr(GBytes) plain = NULL;
  g_autoptr(GError) error = NULL;

  for (guint i = 0; i < 100000; i++)
    data[i] = (guint8) (i * 7 % 13);
  a = dtu_gzip (data, 99000);
  b = dtu_gzip (data + 99000, 1000);
  g_byte_array_append (a, b->data, b->len);
  packed = g_bytes_new (a->data, a->len);
  plain = _espalier_data_gunzip (packed, "members.gz", NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (g_bytes_get_size (plain), ==, 100000);
  g_assert_cmpmem (g_bytes_get_data (plain, NULL), 100000, data, 100000);

  g_clear_pointer (&packed, g_bytes_unref);
  g_clear_pointer (&plain, g_bytes_unref);
  a->data[a->len - 3] ^= 0x10;
  packed = g_bytes_new (a->data, a->len);
  plain = _espalier_data_gunzip (packed, "lying.gz", NULL, &error);
  g_assert_null (plain);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_CORRUPT, "lying.gz",
                    "corrupt gzip", NULL);
}

int
main (int   argc,
      char *argv[])
{
  dtu_init (&argc, &argv);

  g_test_add_func ("/idx/ubyte-raw", test_ubyte_raw);
  g_test_add_func ("/idx/ubyte-gzip", test_ubyte_gzip);
  g_test_add_func ("/idx/gzip-by-content", test_gzip_by_content);
  g_test_add_func ("/idx/float", test_float);
  g_test_add_func ("/idx/float-infinite", test_float_infinite);
  g_test_add_func ("/idx/more-dims", test_more_dims);
  g_test_add_func ("/idx/find-labels", test_find_labels);
  g_test_add_func ("/idx/parse", test_parse);
  g_test_add_func ("/idx/error/empty", test_error_empty);
  g_test_add_func ("/idx/error/truncated-gzip", test_error_truncated_gzip);
  g_test_add_func ("/idx/error/corrupt-gzip", test_error_corrupt_gzip);
  g_test_add_func ("/idx/error/magic", test_error_magic);
  g_test_add_func ("/idx/error/type", test_error_type);
  g_test_add_func ("/idx/error/ndim", test_error_ndim);
  g_test_add_func ("/idx/error/truncated-header", test_error_truncated_header);
  g_test_add_func ("/idx/error/zero-dimension", test_error_zero_dimension);
  g_test_add_func ("/idx/error/short-payload", test_error_short_payload);
  g_test_add_func ("/idx/error/extra-bytes", test_error_extra_bytes);
  g_test_add_func ("/idx/limit/huge-header-raw", test_limit_huge_header_raw);
  g_test_add_func ("/idx/limit/huge-header-gzip", test_limit_huge_header_gzip);
  g_test_add_func ("/idx/limit/memory", test_limit_memory);
  g_test_add_func ("/idx/limit/sparse-terabyte", test_limit_sparse_terabyte);
  g_test_add_func ("/idx/error/label-count", test_error_label_count);
  g_test_add_func ("/idx/error/label-range", test_error_label_range);
  g_test_add_func ("/idx/error/labels-not-1d", test_error_labels_not_1d);
  g_test_add_func ("/idx/error/images-1d", test_error_images_1d);
  g_test_add_func ("/idx/stream/fashion", test_stream_fashion);
  g_test_add_func ("/idx/stream/fashion-errors", test_stream_fashion_errors);
  g_test_add_func ("/idx/stream/idx", test_stream_idx);
  g_test_add_func ("/idx/stream/gunzip-footer", test_gunzip_footer);
  g_test_add_func ("/idx/fashion-mnist/fake", test_fake_fashion);
  g_test_add_func ("/idx/fashion-mnist/real", test_fashion_mnist);

  return dtu_finish (g_test_run ());
}
