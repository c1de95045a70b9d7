/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-split.c: train / validation / test splits: exact sizes, disjoint parts covering
 * every row, stratification, determinism in the seed, a predefined test part kept
 * (a tiny fake Fashion-MNIST), sets without classes, and bad fractions. */
#include "config.h"

#include <math.h>

#include "espalier-dataset.h"
#include "espalier-generate.h"
#include "espalier-split.h"

#include "data-test-util.h"

static EspalierDataset *
generate (const char *spec)
{
  g_autoptr(GError) error = NULL;
  EspalierDataset *ds = espalier_generate_from_spec (spec, &error);

  g_assert_no_error (error);
  return ds;
}

static EspalierSplit *
split (EspalierDataset *ds,
       double           val,
       double           test,
       guint64          seed)
{
  g_autoptr(GError) error = NULL;
  EspalierSplit *s = espalier_split_new (ds, val, test, seed, &error);

  g_assert_no_error (error);
  g_assert_nonnull (s);
  return s;
}

/* Every row in exactly one part; each part ascending. */
static void
check_partition (EspalierSplit *s,
                 guint          n_rows)
{
  g_autofree guint8 *seen = g_new0 (guint8, n_rows);
  GArray *parts[3] = { s->train, s->val, s->test };

  for (guint p = 0; p < 3; p++)
    for (guint i = 0; i < parts[p]->len; i++)
      {
        guint32 r = g_array_index (parts[p], guint32, i);

        g_assert_cmpuint (r, <, n_rows);
        g_assert_cmpuint (seen[r], ==, 0);
        seen[r] = 1;
        if (i > 0)
          g_assert_cmpuint (g_array_index (parts[p], guint32, i - 1), <, r);
      }
  for (guint r = 0; r < n_rows; r++)
    g_assert_cmpuint (seen[r], ==, 1);
}

static void
test_sizes (void)
{
  g_autoptr(EspalierDataset) ds = generate ("blobs:n=1000,centers=3");
  g_autoptr(EspalierSplit) s = split (ds, 0.1, 0.2, 0);
  g_autoptr(EspalierSplit) none = split (ds, 0, 0, 0);

  g_assert_cmpuint (s->train->len, ==, 700);
  g_assert_cmpuint (s->val->len, ==, 100);
  g_assert_cmpuint (s->test->len, ==, 200);
  check_partition (s, 1000);

  g_assert_cmpuint (none->train->len, ==, 1000);
  g_assert_cmpuint (none->val->len, ==, 0);
  g_assert_cmpuint (none->test->len, ==, 0);
}

static void
test_stratified (void)
{
  /* 3 classes of 167, 167, 166 rows: uneven on purpose. */
  g_autoptr(EspalierDataset) ds = generate ("spiral:n=500");
  g_autoptr(EspalierSplit) s = split (ds, 0.15, 0.25, 3);
  const gint32 *labels = espalier_dataset_get_labels (ds);
  GArray *parts[3] = { s->train, s->val, s->test };
  const double share[3] = { 0.6, 0.15, 0.25 };

  check_partition (s, 500);
  g_assert_cmpuint (s->test->len, ==, 125);
  g_assert_cmpuint (s->val->len, ==, 75);
  for (guint p = 0; p < 3; p++)
    {
      guint counts[3] = { 0 };

      for (guint i = 0; i < parts[p]->len; i++)
        counts[labels[g_array_index (parts[p], guint32, i)]]++;
      for (guint c = 0; c < 3; c++)
        {
          double expected = (c < 2 ? 167 : 166) * share[p];

          g_assert_cmpfloat (counts[c], >=, expected - 1.0);
          g_assert_cmpfloat (counts[c], <=, expected + 1.0);
        }
    }
}

static gboolean
arrays_equal (GArray *a,
              GArray *b)
{
  return a->len == b->len && memcmp (a->data, b->data, a->len * sizeof (guint32)) == 0;
}

static void
test_determinism (void)
{
  g_autoptr(EspalierDataset) ds = generate ("moons:n=400");
  g_autoptr(EspalierSplit) a = split (ds, 0.1, 0.2, 11);
  g_autoptr(EspalierSplit) b = split (ds, 0.1, 0.2, 11);
  g_autoptr(EspalierSplit) c = split (ds, 0.1, 0.2, 12);

  g_assert_true (arrays_equal (a->train, b->train));
  g_assert_true (arrays_equal (a->val, b->val));
  g_assert_true (arrays_equal (a->test, b->test));
  g_assert_false (arrays_equal (a->test, c->test));
  g_assert_cmpuint (a->test->len, ==, c->test->len);
}

static void
test_predefined (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(EspalierSplit) s = NULL;
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions options;
  const gint32 *labels;
  guint val_counts[10] = { 0 };

  g_setenv ("ESPALIER_FASHION_MNIST_DIR", dir, TRUE);
  dtu_write_fake_fashion (dir, 100, 30);
  dtu_options_no_cache (&options);
  ds = espalier_dataset_load ("fashion-mnist", &options, NULL, &error);
  g_assert_no_error (error);
  g_unsetenv ("ESPALIER_FASHION_MNIST_DIR");
  g_assert_cmpuint (espalier_dataset_get_n_predefined_train (ds), ==, 100);

  /* test_fraction is ignored: the test part is rows 100..129. */
  s = split (ds, 0.2, 0.5, 1);
  check_partition (s, 130);
  g_assert_cmpuint (s->test->len, ==, 30);
  for (guint i = 0; i < 30; i++)
    g_assert_cmpuint (g_array_index (s->test, guint32, i), ==, 100 + i);
  g_assert_cmpuint (s->val->len, ==, 20);
  g_assert_cmpuint (s->train->len, ==, 80);
  labels = espalier_dataset_get_labels (ds);
  for (guint i = 0; i < s->val->len; i++)
    {
      guint32 r = g_array_index (s->val, guint32, i);

      g_assert_cmpuint (r, <, 100);
      val_counts[labels[r]]++;
    }
  for (guint c = 0; c < 10; c++)
    g_assert_cmpuint (val_counts[c], ==, 2);   /* 10 of each class, 20 % of them */
}

/* A regression target: no classes, plain shuffled slices. */
static void
test_no_classes (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autoptr(GString) text = g_string_new ("x,y\n");
  g_autofree char *path = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(EspalierSplit) s = NULL;
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions options;

  for (guint i = 0; i < 50; i++)
    g_string_append_printf (text, "%u,%u.5\n", i, i);
  path = dtu_write_text (dir, "reg.csv", text->str);
  dtu_options_no_cache (&options);
  ds = espalier_dataset_load (path, &options, NULL, &error);
  g_assert_no_error (error);
  g_assert_null (espalier_dataset_get_labels (ds));
  s = split (ds, 0.1, 0.3, 9);
  check_partition (s, 50);
  g_assert_cmpuint (s->val->len, ==, 5);
  g_assert_cmpuint (s->test->len, ==, 15);
}

static void
test_errors (void)
{
  g_autoptr(EspalierDataset) ds = generate ("xor:n=10");
  const double bad[][2] = { { -0.1, 0.2 }, { 0.5, 0.5 }, { 0.2, 1.0 }, { NAN, 0.1 } };

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(EspalierSplit) s = espalier_split_new (ds, bad[i][0], bad[i][1], 0, &error);

      g_assert_null (s);
      dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_INVALID, "Bad split",
                        NULL);
    }
  {
    g_autoptr(EspalierDataset) tiny = generate ("xor:n=2");
    g_autoptr(GError) error = NULL;
    g_autoptr(EspalierSplit) s = espalier_split_new (tiny, 0.45, 0.45, 0, &error);

    g_assert_null (s);
    dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_INVALID,
                      "too few", NULL);
  }
}

int
main (int   argc,
      char *argv[])
{
  dtu_init (&argc, &argv);

  g_test_add_func ("/split/sizes", test_sizes);
  g_test_add_func ("/split/stratified", test_stratified);
  g_test_add_func ("/split/determinism", test_determinism);
  g_test_add_func ("/split/predefined-test-part", test_predefined);
  g_test_add_func ("/split/no-classes", test_no_classes);
  g_test_add_func ("/split/errors", test_errors);

  return dtu_finish (g_test_run ());
}
