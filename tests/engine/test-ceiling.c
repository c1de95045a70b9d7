/* test-ceiling.c: es_measure_ceilings on the CPU backend: a short measurement gives
 * positive, finite rates and says what it measured; a zero budget still measures (the
 * minimum number of runs); bad arguments are refused. No timing is asserted. */
#include <glib.h>
#include <math.h>

#include "es-ceiling.h"

static void
check_ceilings (const EsCeilings *c, int n_threads)
{
  g_assert_true (isfinite (c->gemm_gflops));
  g_assert_cmpfloat (c->gemm_gflops, >, 0.0);
  g_assert_true (isfinite (c->copy_gbs));
  g_assert_cmpfloat (c->copy_gbs, >, 0.0);
  g_assert_cmpint (c->n_threads, ==, n_threads);
  g_assert_cmpint (c->gemm_b, >, 0);
  g_assert_cmpint (c->gemm_in, >, 0);
  g_assert_cmpint (c->gemm_out, >, 0);
  g_assert_cmpfloat (c->copy_bytes, >=, 32.0 * 1024 * 1024);
  g_assert_cmpfloat (c->measure_s, >, 0.0);
  g_assert_false (c->cached);
}

static void
test_measure (void)
{
  for (int threads = 1; threads <= 2; threads++)
    {
      EsError err = { 0 };
      EsCeilings c;
      EsBackend *be = es_cpu_backend_new (threads, NULL, &err);

      g_assert_nonnull (be);
      g_assert_true (es_measure_ceilings (be, 0.05, &c, &err));
      g_assert_cmpint (err.code, ==, ES_OK);
      check_ceilings (&c, be->n_threads);
      g_assert_true (es_measure_ceilings (be, 0.0, &c, &err));
      check_ceilings (&c, be->n_threads);
      es_backend_free (be);
    }
}

static void
test_budget_and_args (void)
{
  EsError err = { 0 };
  EsBudget *budget = es_budget_new (1 << 20);   /* far below the copy arrays */
  EsBackend *be = es_cpu_backend_new (1, budget, &err);
  EsCeilings c;

  g_assert_nonnull (be);
  g_assert_false (es_measure_ceilings (be, 0.0, &c, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_BUDGET);
  /* everything taken was given back */
  g_assert_cmpuint (es_budget_used (budget), ==, 0);
  es_error_clear (&err);
  g_assert_false (es_measure_ceilings (be, -1.0, &c, &err));
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  es_backend_free (be);
  es_budget_free (budget);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/ceiling/measure", test_measure);
  g_test_add_func ("/ceiling/budget-and-args", test_budget_and_args);
  return g_test_run ();
}
