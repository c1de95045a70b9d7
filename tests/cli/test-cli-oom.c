/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-cli-oom.c: espalier-cli train on a machine that cannot hold the run. The CLI runs
 * under a low RLIMIT_AS (set between fork and exec) with a model whose weights fit but
 * whose training state (gradients, optimizer moments, the best weights' copy) cannot:
 * it exits with status 1 and a message about memory, not with a signal or an abort.
 * Twice: once refused by the check before the run, once (ESPALIER_MEMORY_AVAILABLE
 * saying the memory is there) by the allocator itself. Skipped under AddressSanitizer,
 * which cannot run with a low RLIMIT_AS. */
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <glib.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* The address space the CLI gets: its libraries and one compute thread take about
 * 150 MB; the model's weights (dense 2048 -> 12288: 100 MB) fit beside them, and the
 * four copies more that training needs do not. */
#define ADDRESS_SPACE (G_GUINT64_CONSTANT (400) << 20)
#define SPEC "dense:2048,relu,dense:12288,relu,dense:3,softmax"

static void
limit_address_space (gpointer data)
{
  struct rlimit rl;

  /* Between fork and exec: only async-signal-safe calls. */
  if (getrlimit (RLIMIT_AS, &rl) == 0)
    {
      rl.rlim_cur = ADDRESS_SPACE;
      if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < rl.rlim_cur)
        rl.rlim_cur = rl.rlim_max;
      setrlimit (RLIMIT_AS, &rl);
    }
}

static void
test_train_oom (gconstpointer data)
{
  gboolean real_alloc = GPOINTER_TO_INT (data);
  const char *argv[] = { ESPALIER_CLI, "train", "--data", "spiral:n=200,arms=3,seed=1",
                         "--spec", SPEC, "--epochs", "1", "--batch", "32", "--threads", "1",
                         NULL };
  g_auto(GStrv) env = g_get_environ ();
  g_autofree char *out = NULL, *err = NULL;
  g_autoptr(GError) error = NULL;
  int status = 0;

  if (UNDER_ASAN)
    {
      g_test_skip ("AddressSanitizer reserves terabytes of address space for its shadow "
                   "memory: a process under it cannot run with a low RLIMIT_AS");
      return;
    }
  /* One BLAS thread and few malloc arenas: the address space the CLI starts with does
   * not grow with the number of cores. */
  env = g_environ_setenv (env, "OPENBLAS_NUM_THREADS", "1", TRUE);
  env = g_environ_setenv (env, "MALLOC_ARENA_MAX", "2", TRUE);
  env = g_environ_setenv (env, "ESPALIER_NO_CACHE", "1", TRUE);
  if (real_alloc)
    env = g_environ_setenv (env, "ESPALIER_MEMORY_AVAILABLE", "1000000000000000", TRUE);
  else
    env = g_environ_unsetenv (env, "ESPALIER_MEMORY_AVAILABLE");

  g_assert_true (g_spawn_sync (NULL, (char **) argv, env, G_SPAWN_DEFAULT,
                               limit_address_space, NULL, &out, &err, &status, &error));
  g_assert_no_error (error);
  g_test_message ("stderr: %s", err);
  /* A message and status 1: not killed by a signal, not aborted. */
  g_assert_true (WIFEXITED (status));
  g_assert_cmpint (WEXITSTATUS (status), ==, 1);
  g_assert_nonnull (strstr (err, "memory"));
  g_assert_null (strstr (err, "bort"));
  g_assert_null (strstr (err, "CRITICAL"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_data_func ("/cli/oom/checked", GINT_TO_POINTER (FALSE), test_train_oom);
  g_test_add_data_func ("/cli/oom/allocator", GINT_TO_POINTER (TRUE), test_train_oom);
  return g_test_run ();
}
