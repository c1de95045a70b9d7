/* cli-test-util.h: running espalier-cli from a test (test-cli, test-cli-device): its
 * exit status and what it wrote, with XDG_CACHE_HOME in the test's own tmpdir (which
 * the test sets before the first run). Header-only: each test is one file. */
#pragma once

#include <glib.h>
#include <stdarg.h>
#include <sys/wait.h>

static char *tmpdir;

typedef struct {
  int   status;
  char *out;
  char *err;
} Run;

static inline void
run_clear (Run *r)
{
  g_free (r->out);
  g_free (r->err);
}

/* Run espalier-cli with a NULL-terminated argument list. */
static inline Run
cli (const char *first, ...)
{
  g_autoptr(GPtrArray) argv = g_ptr_array_new ();
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) env = g_get_environ ();
  Run r = { 0 };
  va_list ap;
  int wait_status;

  env = g_environ_setenv (env, "XDG_CACHE_HOME", tmpdir, TRUE);
  g_ptr_array_add (argv, (char *) ESPALIER_CLI);
  va_start (ap, first);
  for (const char *a = first; a != NULL; a = va_arg (ap, const char *))
    g_ptr_array_add (argv, (char *) a);
  va_end (ap);
  g_ptr_array_add (argv, NULL);
  g_assert_true (g_spawn_sync (NULL, (char **) argv->pdata, env, G_SPAWN_DEFAULT, NULL, NULL,
                               &r.out, &r.err, &wait_status, &error));
  g_assert_no_error (error);
  r.status = WIFEXITED (wait_status) ? WEXITSTATUS (wait_status) : -1;
  return r;
}
