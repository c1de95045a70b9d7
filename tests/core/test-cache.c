/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-cache.c: the binary dataset cache: the hash against xxh64's reference values, a
 * second load that comes from the cache and equals the first, keys that change with
 * the options and the file's contents, corrupt, truncated and foreign cache files
 * ignored and rewritten, quick-key entries, an unwritable cache directory, and
 * Fashion-MNIST timed parsed and cached. */
#include "config.h"

#include <math.h>

#include "espalier-dataset.h"
#include "espalier-dataset-cache.h"
#include "espalier-generate.h"

#include "data-test-util.h"

static const char *table =
  "size,color,weight,kind\n"
  "1,red,3,cat\n"
  "2,blue,NA,dog\n"
  "3,red,5.5,cat\n"
  "3,red,5.5,cat\n"
  "4,blue,8,dog\n"
  "5,red,9,dog\n";

static void
cached_options (EspalierLoadOptions *options,
                const char          *cache_dir)
{
  espalier_load_options_init (options);
  options->cache_dir = cache_dir;
  options->one_hot = TRUE;
  options->ffill = TRUE;
  options->drop_duplicates = TRUE;
  options->standardize = TRUE;
  options->val_fraction = 0;
  options->test_fraction = 0.2;
}

/* The names of the .escache files in dir, sorted. */
static GPtrArray *
cache_files (const char *dir)
{
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  GDir *d = g_dir_open (dir, 0, NULL);
  const char *name;

  if (d == NULL)
    return names;
  while ((name = g_dir_read_name (d)) != NULL)
    if (g_str_has_suffix (name, ".escache"))
      g_ptr_array_add (names, g_build_filename (dir, name, NULL));
  g_dir_close (d);
  return names;
}

static void
assert_same_dataset (EspalierDataset *a,
                     EspalierDataset *b)
{
  guint N = espalier_dataset_get_n_rows (a), F = espalier_dataset_get_row_size (a);
  const EspalierPreprocessReport *ra = espalier_dataset_get_preprocess_report (a);
  const EspalierPreprocessReport *rb = espalier_dataset_get_preprocess_report (b);

  g_assert_cmpstr (espalier_dataset_get_name (a), ==, espalier_dataset_get_name (b));
  g_assert_cmpstr (espalier_dataset_get_source (a), ==, espalier_dataset_get_source (b));
  g_assert_cmpuint (N, ==, espalier_dataset_get_n_rows (b));
  g_assert_cmpuint (F, ==, espalier_dataset_get_row_size (b));
  g_assert_cmpuint (espalier_dataset_get_rank (a), ==, espalier_dataset_get_rank (b));
  g_assert_cmpmem (espalier_dataset_get_dims (a), espalier_dataset_get_rank (a) * sizeof (guint),
                   espalier_dataset_get_dims (b), espalier_dataset_get_rank (b) * sizeof (guint));
  g_assert_cmpint (espalier_dataset_is_u8 (a), ==, espalier_dataset_is_u8 (b));
  if (espalier_dataset_is_u8 (a))
    g_assert_cmpmem (espalier_dataset_get_u8 (a), (gsize) N * F,
                     espalier_dataset_get_u8 (b), (gsize) N * F);
  else
    g_assert_cmpmem (espalier_dataset_get_f32 (a), (gsize) N * F * 4,
                     espalier_dataset_get_f32 (b), (gsize) N * F * 4);
  g_assert_cmpfloat (espalier_dataset_get_scale (a), ==, espalier_dataset_get_scale (b));
  g_assert_cmpfloat (espalier_dataset_get_shift (a), ==, espalier_dataset_get_shift (b));
  g_assert_cmpuint (espalier_dataset_get_n_classes (a), ==, espalier_dataset_get_n_classes (b));
  for (guint k = 0; k < espalier_dataset_get_n_classes (a); k++)
    g_assert_cmpstr (espalier_dataset_get_class_name (a, k), ==,
                     espalier_dataset_get_class_name (b, k));
  if (espalier_dataset_get_labels (a) != NULL)
    g_assert_cmpmem (espalier_dataset_get_labels (a), N * 4, espalier_dataset_get_labels (b), N * 4);
  else
    g_assert_null (espalier_dataset_get_labels (b));
  for (guint j = 0; j < F; j++)
    g_assert_cmpstr (espalier_dataset_get_feature_name (a, j), ==,
                     espalier_dataset_get_feature_name (b, j));
  g_assert_cmpuint (espalier_dataset_get_n_predefined_train (a), ==,
                    espalier_dataset_get_n_predefined_train (b));
  g_assert_cmpmem (ra, sizeof *ra, rb, sizeof *rb);
}

static void
test_hash (void)
{
  /* XXH64 reference values, seed 0. */
  const char *text = "Nobody inspects the spammish repetition";

  g_assert_cmpuint (espalier_hash64 ("", 0, 0), ==, G_GUINT64_CONSTANT (0xEF46DB3751D8E999));
  g_assert_cmpuint (espalier_hash64 ("a", 1, 0), ==, G_GUINT64_CONSTANT (0xD24EC4F1A98C6E5B));
  g_assert_cmpuint (espalier_hash64 ("abc", 3, 0), ==, G_GUINT64_CONSTANT (0x44BC2CF5AD770999));
  g_assert_cmpuint (espalier_hash64 (text, strlen (text), 0), ==,
                    G_GUINT64_CONSTANT (0xFBCEA83C8A378BF1));
  g_assert_cmpuint (espalier_hash64 ("abc", 3, 1), !=, espalier_hash64 ("abc", 3, 0));
  {
    guint8 bytes[100];

    for (guint i = 0; i < 100; i++)
      bytes[i] = i;
    g_assert_cmpuint (espalier_hash64 (bytes, 100, 0), ==, G_GUINT64_CONSTANT (0x6AC1E58032166597));
  }
}

static void
test_roundtrip (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *cache = g_build_filename (dir, "cache", NULL);
  g_autofree char *path = dtu_write_text (dir, "pets.csv", table);
  g_autoptr(EspalierDataset) first = NULL;
  g_autoptr(EspalierDataset) second = NULL;
  g_autoptr(GPtrArray) files = NULL;
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions options;

  cached_options (&options, cache);
  first = espalier_dataset_load (path, &options, NULL, &error);
  g_assert_no_error (error);
  g_assert_false (espalier_dataset_is_from_cache (first));
  g_assert_cmpuint (espalier_dataset_get_n_rows (first), ==, 5);
  files = cache_files (cache);
  g_assert_cmpuint (files->len, ==, 1);

  second = espalier_dataset_load (path, &options, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (espalier_dataset_is_from_cache (second));
  g_assert_true (dtu_report_has (second, "loaded from cache"));
  g_assert_true (dtu_report_has (first, "loaded in"));
  g_assert_false (dtu_report_has (second, "loaded in"));
  /* The preprocessing's sentences come back with it. */
  g_assert_true (dtu_report_has (second, "drop duplicates: 1 rows dropped"));
  g_assert_true (dtu_report_has (second, "forward-fill: 1 cells filled"));
  assert_same_dataset (first, second);
}

/* Other options, other key; the same options again, the same file. */
static void
test_options_key (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *cache = g_build_filename (dir, "cache", NULL);
  g_autofree char *path = dtu_write_text (dir, "pets.csv", table);
  g_autoptr(GPtrArray) files = NULL;
  EspalierLoadOptions options;

  cached_options (&options, cache);
  for (guint round = 0; round < 2; round++)
    for (guint variant = 0; variant < 3; variant++)
      {
        g_autoptr(EspalierDataset) ds = NULL;
        g_autoptr(GError) error = NULL;

        cached_options (&options, cache);
        options.standardize = variant != 1;
        options.minmax = variant == 1;
        options.split_seed = variant == 2 ? 99 : 0;
        ds = espalier_dataset_load (path, &options, NULL, &error);
        g_assert_no_error (error);
        g_assert_cmpint (espalier_dataset_is_from_cache (ds), ==, round == 1);
      }
  files = cache_files (cache);
  g_assert_cmpuint (files->len, ==, 3);
}

static void
test_content_change (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *cache = g_build_filename (dir, "cache", NULL);
  g_autofree char *path = dtu_write_text (dir, "t.csv", "a,y\n1,0\n2,1\n");
  g_autoptr(EspalierDataset) a = NULL;
  g_autoptr(EspalierDataset) b = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *again = NULL;
  EspalierLoadOptions options;

  espalier_load_options_init (&options);
  options.cache_dir = cache;
  a = espalier_dataset_load (path, &options, NULL, &error);
  g_assert_no_error (error);
  /* Same size, new contents. */
  again = dtu_write_text (dir, "t.csv", "a,y\n7,0\n2,1\n");
  b = espalier_dataset_load (path, &options, NULL, &error);
  g_assert_no_error (error);
  g_assert_false (espalier_dataset_is_from_cache (b));
  g_assert_cmpfloat (espalier_dataset_get_f32 (b)[0], ==, 7.0f);
}

/* Damage the cache file in turn: every time the load parses again, gives the right
 * data, and the next load is a hit again. */
static void
test_corrupt (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *cache = g_build_filename (dir, "cache", NULL);
  g_autofree char *path = dtu_write_text (dir, "pets.csv", table);
  g_autoptr(EspalierDataset) reference = NULL;
  g_autoptr(GPtrArray) files = NULL;
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions options;
  const char *damages[] = { "flip-payload", "flip-padding", "flip-meta", "truncate", "garbage", "empty",
                            "header-only" };

  cached_options (&options, cache);
  reference = espalier_dataset_load (path, &options, NULL, &error);
  g_assert_no_error (error);
  files = cache_files (cache);
  g_assert_cmpuint (files->len, ==, 1);

  for (guint i = 0; i < G_N_ELEMENTS (damages); i++)
    {
      const char *file = g_ptr_array_index (files, 0);
      g_autofree char *contents = NULL;
      gsize length;
      g_autoptr(EspalierDataset) damaged = NULL;
      g_autoptr(EspalierDataset) healed = NULL;

      g_assert_true (g_file_get_contents (file, &contents, &length, NULL));
      if (strcmp (damages[i], "flip-payload") == 0)
        contents[length - 20] ^= 0x10;   /* in the labels */
      else if (strcmp (damages[i], "flip-padding") == 0)
        contents[length - 3] ^= 0x10;
      else if (strcmp (damages[i], "flip-meta") == 0)
        contents[70] ^= 0x01;
      else if (strcmp (damages[i], "truncate") == 0)
        length -= 7;
      else if (strcmp (damages[i], "garbage") == 0)
        for (gsize k = 0; k < length; k++)
          contents[k] = (char) (k * 31);
      else if (strcmp (damages[i], "empty") == 0)
        length = 0;
      else
        length = 64;
      g_assert_true (g_file_set_contents (file, contents, length, NULL));

      damaged = espalier_dataset_load (path, &options, NULL, &error);
      g_assert_no_error (error);
      g_test_message ("%s: from cache %d", damages[i], espalier_dataset_is_from_cache (damaged));
      g_assert_false (espalier_dataset_is_from_cache (damaged));
      assert_same_dataset (reference, damaged);

      healed = espalier_dataset_load (path, &options, NULL, &error);
      g_assert_no_error (error);
      g_assert_true (espalier_dataset_is_from_cache (healed));
      assert_same_dataset (reference, healed);
    }
}

static void
test_read_errors (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *file = g_build_filename (dir, "x.escache", NULL);
  g_autofree char *missing = g_build_filename (dir, "missing.escache", NULL);
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(EspalierDataset) back = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *contents = NULL;
  gsize length;

  ds = espalier_generate_from_spec ("spiral:n=90", &error);
  g_assert_no_error (error);
  g_assert_true (espalier_dataset_cache_write (ds, file, 42, &error));
  g_assert_no_error (error);

  back = espalier_dataset_cache_read (file, 42, NULL, &error);
  g_assert_no_error (error);
  assert_same_dataset (ds, back);
  g_clear_object (&back);

  back = espalier_dataset_cache_read (file, 43, NULL, &error);
  g_assert_null (back);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_CORRUPT,
                    "x.escache", "another source", NULL);
  g_clear_error (&error);

  back = espalier_dataset_cache_read (missing, 42, NULL, &error);
  g_assert_null (back);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_NOT_FOUND,
                    "missing.escache", NULL);
  g_clear_error (&error);

  g_assert_true (g_file_get_contents (file, &contents, &length, NULL));
  g_assert_true (g_file_set_contents (file, contents, length - 1, NULL));
  back = espalier_dataset_cache_read (file, 42, NULL, &error);
  g_assert_null (back);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_TRUNCATED,
                    "x.escache", NULL);
}

/* The quick key maps the file's stat to its hash; a damaged entry is only a miss. */
static void
test_quick_key (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *cache = g_build_filename (dir, "cache", NULL);
  g_autofree char *files_dir = g_build_filename (cache, "files", NULL);
  g_autofree char *path = dtu_write_text (dir, "q.csv", "a,y\n1,0\n2,1\n");
  g_autoptr(GBytes) contents = NULL;
  g_autoptr(GError) error = NULL;
  guint64 h1 = 0, h2 = 1, h3 = 2;
  GDir *d;
  const char *name;
  guint n = 0;

  g_assert_true (espalier_dataset_cache_hash_file (cache, path, &h1, &contents, NULL, &error));
  g_assert_no_error (error);
  g_assert_nonnull (contents);            /* read: the caller can parse it */
  g_clear_pointer (&contents, g_bytes_unref);

  g_assert_true (espalier_dataset_cache_hash_file (cache, path, &h2, &contents, NULL, &error));
  g_assert_null (contents);               /* the quick key answered */
  g_assert_cmpuint (h1, ==, h2);

  d = g_dir_open (files_dir, 0, NULL);
  g_assert_nonnull (d);
  while ((name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *entry = g_build_filename (files_dir, name, NULL);

      g_assert_true (g_file_set_contents (entry, "broken", 6, NULL));
      n++;
    }
  g_dir_close (d);
  g_assert_cmpuint (n, ==, 1);
  g_assert_true (espalier_dataset_cache_hash_file (cache, path, &h3, &contents, NULL, &error));
  g_assert_nonnull (contents);
  g_assert_cmpuint (h3, ==, h1);
}

/* A cache that cannot be written costs nothing but a report line. */
static void
test_unwritable (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *not_a_dir = dtu_write_text (dir, "file", "x");
  g_autofree char *cache = g_build_filename (not_a_dir, "cache", NULL);
  g_autofree char *path = dtu_write_text (dir, "w.csv", "a,y\n1,0\n2,1\n");
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions options;

  espalier_load_options_init (&options);
  options.cache_dir = cache;
  ds = espalier_dataset_load (path, &options, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, 2);
  g_assert_true (dtu_report_has (ds, "cache not written"));
}

/* IDX images come back from the cache still uint8. */
static void
test_idx_u8 (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *cache = g_build_filename (dir, "cache", NULL);
  g_autoptr(EspalierDataset) a = NULL;
  g_autoptr(EspalierDataset) b = NULL;
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions options;

  g_setenv ("ESPALIER_FASHION_MNIST_DIR", dir, TRUE);
  dtu_write_fake_fashion (dir, 40, 10);
  espalier_load_options_init (&options);
  options.cache_dir = cache;
  options.standardize = TRUE;
  a = espalier_dataset_load ("fashion-mnist", &options, NULL, &error);
  g_assert_no_error (error);
  b = espalier_dataset_load ("fashion-mnist", &options, NULL, &error);
  g_assert_no_error (error);
  g_unsetenv ("ESPALIER_FASHION_MNIST_DIR");
  g_assert_false (espalier_dataset_is_from_cache (a));
  g_assert_true (espalier_dataset_is_from_cache (b));
  g_assert_true (espalier_dataset_is_u8 (b));
  g_assert_cmpfloat (espalier_dataset_get_scale (b), !=, 1.0f / 255.0f);   /* standardized */
  assert_same_dataset (a, b);
}

static void
test_fashion_mnist (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autoptr(EspalierDataset) first = NULL;
  g_autoptr(EspalierDataset) second = NULL;
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions options;
  gint64 t0, t1, t2;
  double parse_ms, cached_ms;

  if (!espalier_dataset_fashion_mnist_available ())
    {
      g_test_skip ("Fashion-MNIST is not installed in " FASHION_MNIST_DIR);
      return;
    }
  espalier_load_options_init (&options);
  options.cache_dir = dir;

  t0 = g_get_monotonic_time ();
  first = espalier_dataset_load ("fashion-mnist", &options, NULL, &error);
  g_assert_no_error (error);
  t1 = g_get_monotonic_time ();
  second = espalier_dataset_load ("fashion-mnist", &options, NULL, &error);
  g_assert_no_error (error);
  t2 = g_get_monotonic_time ();

  parse_ms = (t1 - t0) / 1e3;
  cached_ms = (t2 - t1) / 1e3;
  g_test_message ("Fashion-MNIST: first load %.1f ms (parse and write the cache), "
                  "cached load %.1f ms, %.1fx", parse_ms, cached_ms, parse_ms / cached_ms);
  g_assert_false (espalier_dataset_is_from_cache (first));
  g_assert_true (espalier_dataset_is_from_cache (second));
  g_assert_cmpuint (espalier_dataset_get_n_rows (second), ==, 70000);
  g_assert_true (espalier_dataset_is_u8 (second));
  assert_same_dataset (first, second);
  /* The times are reported, not asserted: on a busy machine (CI's ASan pass) a read can
   * take as long as a parse. That the second load came from the cache, whole, is what
   * is asserted above. */
}

int
main (int   argc,
      char *argv[])
{
  dtu_init (&argc, &argv);

  g_test_add_func ("/cache/hash", test_hash);
  g_test_add_func ("/cache/roundtrip", test_roundtrip);
  g_test_add_func ("/cache/options-key", test_options_key);
  g_test_add_func ("/cache/content-change", test_content_change);
  g_test_add_func ("/cache/corrupt", test_corrupt);
  g_test_add_func ("/cache/read-errors", test_read_errors);
  g_test_add_func ("/cache/quick-key", test_quick_key);
  g_test_add_func ("/cache/unwritable", test_unwritable);
  g_test_add_func ("/cache/idx-u8", test_idx_u8);
  g_test_add_func ("/cache/fashion-mnist", test_fashion_mnist);

  return dtu_finish (g_test_run ());
}
