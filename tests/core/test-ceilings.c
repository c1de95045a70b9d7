/* test-ceilings.c: espalier_ceilings_get with XDG_CACHE_HOME in a temporary folder: the
 * first call measures and writes the cache, the second reads the same numbers back
 * without measuring (out.cached), --remeasure measures again, and a corrupt or
 * truncated cache is measured again and rewritten, not reported. */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include "espalier-ceilings.h"

static char *tmpdir;

static void
test_cache (void)
{
  g_autofree char *path = espalier_ceilings_cache_path ();
  g_autofree char *text = NULL;
  g_autoptr(GError) error = NULL;
  EsCeilings first, again, fresh;

  g_assert_true (g_str_has_prefix (path, tmpdir));
  g_remove (path);
  g_assert_true (espalier_ceilings_get (1, FALSE, &first, &error));
  g_assert_no_error (error);
  g_assert_false (first.cached);
  g_assert_cmpfloat (first.gemm_gflops, >, 0.0);
  g_assert_cmpfloat (first.copy_gbs, >, 0.0);
  g_assert_cmpint (first.n_threads, ==, 1);
  g_assert_true (g_file_test (path, G_FILE_TEST_IS_REGULAR));

  g_assert_true (espalier_ceilings_get (1, FALSE, &again, &error));
  g_assert_true (again.cached);
  g_assert_cmpfloat (again.gemm_gflops, ==, first.gemm_gflops);
  g_assert_cmpfloat (again.copy_gbs, ==, first.copy_gbs);
  g_assert_cmpfloat (again.copy_bytes, ==, first.copy_bytes);
  g_assert_cmpint (again.gemm_in, ==, first.gemm_in);
  g_assert_cmpint (again.n_threads, ==, 1);

  /* another thread count is another key, and both stay in the file */
  g_assert_true (espalier_ceilings_get (2, FALSE, &fresh, &error));
  g_assert_false (fresh.cached);
  g_assert_cmpint (fresh.n_threads, ==, 2);
  g_assert_true (espalier_ceilings_get (1, FALSE, &again, &error));
  g_assert_true (again.cached);
  g_assert_cmpfloat (again.gemm_gflops, ==, first.gemm_gflops);

  /* asked to, it measures again */
  g_assert_true (espalier_ceilings_get (1, TRUE, &fresh, &error));
  g_assert_false (fresh.cached);
  g_assert_true (g_file_get_contents (path, &text, NULL, NULL));
  {
    g_autofree char *cpu = espalier_ceilings_cpu_model ();

    g_assert_nonnull (strstr (text, es_cpu_backend_gemm_path ()));
    g_assert_nonnull (strstr (text, "\"threads\""));
    g_assert_cmpstr (cpu, !=, "");
  }
}

static void
test_corrupt (void)
{
  g_autofree char *path = espalier_ceilings_cache_path ();
  g_autoptr(GError) error = NULL;
  const char *bad[] = {
    "not json at all {",
    "{\"version\": 1, \"entries\": [{\"cpu\": 3, \"threads\": \"x\"}, 7, null]}",
    "{\"version\": 99, \"entries\": []}",
    "[1, 2, 3]",
    "",
  };
  EsCeilings c;

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_assert_true (g_file_set_contents (path, bad[i], -1, NULL));
      g_assert_true (espalier_ceilings_get (1, FALSE, &c, &error));
      g_assert_no_error (error);
      g_assert_false (c.cached);
      g_assert_true (isfinite (c.gemm_gflops) && c.gemm_gflops > 0);
      /* rewritten: the next call reads it */
      g_assert_true (espalier_ceilings_get (1, FALSE, &c, &error));
      g_assert_true (c.cached);
    }
  /* an entry for this key with a nonsense rate is measured again */
  {
    g_autofree char *cpu = espalier_ceilings_cpu_model ();
    g_autofree char *esc = g_strescape (cpu, NULL);
    g_autofree char *text = g_strdup_printf (
      "{\"version\": 1, \"entries\": [{\"cpu\": \"%s\", \"threads\": 1, \"gemm\": \"%s\", "
      "\"gemm_gflops\": -5, \"copy_gbs\": 1, \"gemm_b\": 1, \"gemm_in\": 1, \"gemm_out\": 1, "
      "\"copy_bytes\": 1, \"measure_s\": 0}]}", esc, es_cpu_backend_gemm_path ());

    g_assert_true (g_file_set_contents (path, text, -1, NULL));
    g_assert_true (espalier_ceilings_get (1, FALSE, &c, &error));
    g_assert_false (c.cached);
    g_assert_cmpfloat (c.gemm_gflops, >, 0.0);
  }
}

int
main (int argc, char **argv)
{
  int status;

  tmpdir = g_dir_make_tmp ("espalier-ceilings-XXXXXX", NULL);
  g_assert_nonnull (tmpdir);
  g_setenv ("XDG_CACHE_HOME", tmpdir, TRUE);
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/ceilings/cache", test_cache);
  g_test_add_func ("/ceilings/corrupt", test_corrupt);
  status = g_test_run ();
  {
    g_autofree char *path = espalier_ceilings_cache_path ();
    g_autofree char *dir = g_path_get_dirname (path);

    g_remove (path);
    g_rmdir (dir);
    g_rmdir (tmpdir);
  }
  g_free (tmpdir);
  return status;
}
