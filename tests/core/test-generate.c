/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-generate.c: the 2-D teaching sets: shapes, class names and balance, geometry
 * without noise, determinism in the seed, spec parsing and its errors, and loading a
 * spec through espalier_dataset_load(). */
#include "config.h"

#include <math.h>

#include "espalier-dataset.h"
#include "espalier-generate.h"

#include "data-test-util.h"

static EspalierDataset *
generate (const char *spec)
{
  g_autoptr(GError) error = NULL;
  EspalierDataset *ds = espalier_generate_from_spec (spec, &error);

  g_assert_no_error (error);
  g_assert_nonnull (ds);
  return ds;
}

static void
test_shapes (void)
{
  const struct { const char *spec; const char *name; guint n, k; const char *source; } cases[] = {
    { "spiral", "spiral", 300, 3, "spiral:n=300,arms=3,noise=0.2,seed=1" },
    { "spiral:n=301,arms=4", "spiral", 301, 4, "spiral:n=301,arms=4,noise=0.2,seed=1" },
    { "moons:n=500,noise=0.1", "moons", 500, 2, "moons:n=500,noise=0.1,seed=1" },
    { "circles:n=101", "circles", 101, 2, "circles:n=101,noise=0.05,factor=0.5,seed=1" },
    { "xor:n=64,seed=3", "xor", 64, 2, "xor:n=64,noise=0.1,seed=3" },
    { "blobs:n=250,centers=5", "blobs", 250, 5, "blobs:n=250,centers=5,noise=0.5,seed=1" },
    { "gaussian:k=4,n=40", "blobs", 40, 4, "blobs:n=40,centers=4,noise=0.5,seed=1" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr(EspalierDataset) ds = generate (cases[i].spec);
      g_autofree guint *counts = g_new0 (guint, cases[i].k);
      const gint32 *labels = espalier_dataset_get_labels (ds);
      guint lo = G_MAXUINT, hi = 0;

      g_assert_cmpstr (espalier_dataset_get_name (ds), ==, cases[i].name);
      g_assert_cmpstr (espalier_dataset_get_source (ds), ==, cases[i].source);
      g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, cases[i].n);
      g_assert_cmpuint (espalier_dataset_get_row_size (ds), ==, 2);
      g_assert_cmpuint (espalier_dataset_get_rank (ds), ==, 1);
      g_assert_cmpuint (espalier_dataset_get_dims (ds)[0], ==, 2);
      g_assert_false (espalier_dataset_is_u8 (ds));
      g_assert_nonnull (espalier_dataset_get_f32 (ds));
      g_assert_cmpuint (espalier_dataset_get_n_predefined_train (ds), ==, cases[i].n);
      g_assert_cmpuint (espalier_dataset_get_n_classes (ds), ==, cases[i].k);
      g_assert_cmpstr (espalier_dataset_get_class_name (ds, 0), ==, "class 0");
      g_assert_cmpstr (espalier_dataset_get_class_name (ds, cases[i].k - 1), ==,
                       cases[i].k == 2 ? "class 1" : cases[i].k == 3 ? "class 2"
                       : cases[i].k == 4 ? "class 3" : "class 4");
      g_assert_cmpstr (espalier_dataset_get_feature_name (ds, 1), ==, "x1");
      for (guint r = 0; r < cases[i].n; r++)
        {
          g_assert_cmpint (labels[r], >=, 0);
          g_assert_cmpint (labels[r], <, (gint) cases[i].k);
          counts[labels[r]]++;
          g_assert_true (isfinite (espalier_dataset_get_f32 (ds)[2 * r]));
        }
      for (guint c = 0; c < cases[i].k; c++)
        {
          lo = MIN (lo, counts[c]);
          hi = MAX (hi, counts[c]);
        }
      g_assert_cmpuint (hi - lo, <=, 1);
    }
}

static void
test_determinism (void)
{
  const char *kinds[] = { "spiral", "moons", "circles", "xor", "blobs" };

  for (guint i = 0; i < G_N_ELEMENTS (kinds); i++)
    {
      g_autofree char *s1 = g_strdup_printf ("%s:n=200,seed=7", kinds[i]);
      g_autofree char *s2 = g_strdup_printf ("%s:n=200,seed=8", kinds[i]);
      g_autoptr(EspalierDataset) a = generate (s1);
      g_autoptr(EspalierDataset) b = generate (s1);
      g_autoptr(EspalierDataset) c = generate (s2);
      g_autoptr(EspalierDataset) again = generate (espalier_dataset_get_source (a));

      g_assert_cmpmem (espalier_dataset_get_f32 (a), 400 * sizeof (float),
                       espalier_dataset_get_f32 (b), 400 * sizeof (float));
      g_assert_cmpmem (espalier_dataset_get_f32 (a), 400 * sizeof (float),
                       espalier_dataset_get_f32 (again), 400 * sizeof (float));
      g_assert_true (memcmp (espalier_dataset_get_f32 (a), espalier_dataset_get_f32 (c),
                             400 * sizeof (float)) != 0);
    }
}

/* Without noise each set has its exact shape. */
static void
test_geometry (void)
{
  {
    g_autoptr(EspalierDataset) ds = generate ("circles:n=100,noise=0,factor=0.3");
    const float *x = espalier_dataset_get_f32 (ds);

    for (guint r = 0; r < 100; r++)
      g_assert_cmpfloat_with_epsilon (hypot (x[2 * r], x[2 * r + 1]),
                                      espalier_dataset_get_labels (ds)[r] == 0 ? 1.0 : 0.3,
                                      1e-5);
  }
  {
    g_autoptr(EspalierDataset) ds = generate ("moons:n=100,noise=0");
    const float *x = espalier_dataset_get_f32 (ds);

    for (guint r = 0; r < 50; r++)
      {
        g_assert_cmpfloat_with_epsilon (hypot (x[2 * r], x[2 * r + 1]), 1.0, 1e-5);
        g_assert_cmpfloat (x[2 * r + 1], >=, -1e-6);
      }
    for (guint r = 50; r < 100; r++)
      g_assert_cmpfloat_with_epsilon (hypot (x[2 * r] - 1, x[2 * r + 1] - 0.5), 1.0, 1e-5);
  }
  {
    g_autoptr(EspalierDataset) ds = generate ("xor:n=200,noise=0");
    const float *x = espalier_dataset_get_f32 (ds);

    for (guint r = 0; r < 200; r++)
      g_assert_cmpint (x[2 * r] * x[2 * r + 1] >= 0 ? 0 : 1, ==,
                       espalier_dataset_get_labels (ds)[r]);
  }
  {
    g_autoptr(EspalierDataset) ds = generate ("spiral:n=300,noise=0.5");
    const float *x = espalier_dataset_get_f32 (ds);

    for (guint r = 0; r < 300; r++)
      g_assert_cmpfloat (hypot (x[2 * r], x[2 * r + 1]), <=, 1.0 + 1e-5);
  }
  {
    /* Blob means lie near distinct centres 3 away from the origin. */
    g_autoptr(EspalierDataset) ds = generate ("blobs:n=600,centers=3,noise=0.3");
    const float *x = espalier_dataset_get_f32 (ds);
    double mx[3] = { 0 }, my[3] = { 0 };

    for (guint r = 0; r < 600; r++)
      {
        mx[r / 200] += x[2 * r] / 200.0;
        my[r / 200] += x[2 * r + 1] / 200.0;
      }
    for (guint c = 0; c < 3; c++)
      {
        g_assert_cmpfloat_with_epsilon (hypot (mx[c], my[c]), 3.0, 0.15);
        g_assert_cmpfloat (hypot (mx[c] - mx[(c + 1) % 3], my[c] - my[(c + 1) % 3]), >, 4.0);
      }
  }
}

static void
test_parse (void)
{
  EspalierGenerateParams p;
  g_autoptr(GError) error = NULL;
  g_autofree char *spec = NULL;

  g_assert_true (espalier_generate_parse_spec ("spiral: n = 90 , arms=5,noise=0.125,seed=42",
                                               &p, &error));
  g_assert_no_error (error);
  g_assert_cmpint (p.kind, ==, ESPALIER_GENERATOR_SPIRAL);
  g_assert_cmpuint (p.n, ==, 90);
  g_assert_cmpuint (p.k, ==, 5);
  g_assert_cmpfloat (p.noise, ==, 0.125);
  g_assert_cmpuint (p.seed, ==, 42);
  spec = espalier_generate_params_to_spec (&p);
  g_assert_cmpstr (spec, ==, "spiral:n=90,arms=5,noise=0.125,seed=42");

  g_assert_true (espalier_generate_is_spec ("moons"));
  g_assert_true (espalier_generate_is_spec ("XOR:n=3"));
  g_assert_false (espalier_generate_is_spec ("moons.csv"));
  g_assert_false (espalier_generate_is_spec ("fashion-mnist"));

  {
    EspalierGenerateParams q;
    g_autofree char *s = NULL;

    espalier_generate_params_init (&q, ESPALIER_GENERATOR_MOONS);
    q.noise = 0.1 + 0.2;   /* 0.30000000000000004 */
    s = espalier_generate_params_to_spec (&q);
    g_assert_true (espalier_generate_parse_spec (s, &p, &error));
    g_assert_cmpfloat (p.noise, ==, q.noise);
  }
}

static void
test_parse_errors (void)
{
  const struct { const char *spec; const char *names; } cases[] = {
    { "spirals", "unknown generator" },
    { "spiral:foo=1", "unknown key 'foo'" },
    { "moons:arms=3", "unknown key 'arms'" },
    { "spiral:n=abc", "bad value 'abc' for key 'n'" },
    { "spiral:n=0", "key 'n'" },
    { "moons:noise=-1", "key 'noise'" },
    { "circles:factor=1.5", "key 'factor'" },
    { "blobs:centers=1", "key 'centers'" },
    { "spiral:n=2", "fewer rows than the 3 classes" },
    { "xor:n", "not key=value" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(EspalierDataset) ds = espalier_generate_from_spec (cases[i].spec, &error);

      g_assert_null (ds);
      dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_SPEC,
                        cases[i].names, NULL);
    }
}

static void
test_load (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  EspalierLoadOptions options;
  const float *x;
  double sum = 0;

  ds = espalier_dataset_load ("moons:n=500,noise=0.1", NULL, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, 500);
  g_assert_cmpstr (espalier_dataset_get_source (ds), ==, "moons:n=500,noise=0.1,seed=1");
  g_assert_false (espalier_dataset_is_from_cache (ds));
  g_clear_object (&ds);

  espalier_load_options_init (&options);
  options.standardize = TRUE;
  options.val_fraction = 0;
  options.test_fraction = 0;
  ds = espalier_dataset_load ("blobs:n=300", &options, NULL, &error);
  g_assert_no_error (error);
  x = espalier_dataset_get_f32 (ds);
  for (guint r = 0; r < 300; r++)
    sum += x[2 * r];
  g_assert_cmpfloat_with_epsilon (sum / 300, 0.0, 1e-5);
  g_assert_true (dtu_report_has (ds, "standardize: 2 columns"));
  g_clear_object (&ds);

  ds = espalier_dataset_load ("spiral:n=x", NULL, NULL, &error);
  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_SPEC, "spiral:n=x", NULL);
}

int
main (int   argc,
      char *argv[])
{
  dtu_init (&argc, &argv);

  g_test_add_func ("/generate/shapes", test_shapes);
  g_test_add_func ("/generate/determinism", test_determinism);
  g_test_add_func ("/generate/geometry", test_geometry);
  g_test_add_func ("/generate/parse", test_parse);
  g_test_add_func ("/generate/parse-errors", test_parse_errors);
  g_test_add_func ("/generate/load", test_load);

  return dtu_finish (g_test_run ());
}
