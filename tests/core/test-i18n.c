/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-i18n.c: the engine's messages in the user's language. es_set_translate's hook on
 * its own (a fake translator), then an engine error reached through a real core call
 * (espalier_model_from_spec on an input of dimension -7) with the catalog this build
 * compiled from po/zh_CN.po (ESPALIER_TEST_LOCALEDIR: build/po, holding
 * zh_CN/LC_MESSAGES/espalier.mo). Each language runs in its own subprocess: gettext
 * caches what it found, so a process that has translated keeps doing so.
 *
 * The locale is C.UTF-8, which glibc always has, and the language comes from LANGUAGE
 * (honoured by glibc in any locale but "C"), so no zh_CN locale needs to be installed.
 *
 * Built a second time with TEST_CUDA_MODULE (tests/cuda/meson.build: test-i18n-cuda-emu,
 * on the CUDA emulation's module), it runs the CUDA module's cases too: the module has
 * its own copy of the engine, given core's hook when core opens it
 * (es_cuda_set_translate). */
#include "config.h"

#include <glib.h>
#include <glib/gi18n-lib.h>
#include <locale.h>
#include <string.h>

#include "es-common.h"
#include "es-memory.h"
#include "espalier-device.h"
#include "espalier-error.h"
#include "espalier-templates.h"

/* The engine's message for an input dimension that is not positive (es-model.c), and the
 * dimension the tests give. */
#define DIM_MSGID "The model input has a dimension of %d"
#define BAD_DIM   (-7)

/* ------------------------------------------------------------------------------------ */
/* The hook itself */

static int n_hook_calls;

/* Translates DIM_MSGID only, to a format with the same argument; NULL for the rest
 * (es_translate then keeps the msgid). */
static const char *
fake_translate (const char *msgid)
{
  g_atomic_int_inc (&n_hook_calls);
  if (g_strcmp0 (msgid, DIM_MSGID) == 0)
    return "input dim <%d>";
  return NULL;
}

static void
test_hook_default (void)
{
  EsError err = { 0 };
  g_autofree char *expected = g_strdup_printf (DIM_MSGID, BAD_DIM);

  es_set_translate (NULL);
  g_assert_cmpstr (es_translate (DIM_MSGID), ==, DIM_MSGID);
  es_error_set (&err, ES_ERR_SHAPE, DIM_MSGID, BAD_DIM);
  g_assert_cmpint (err.code, ==, ES_ERR_SHAPE);
  g_assert_cmpstr (err.message, ==, expected);
}

static void
test_hook_set (void)
{
  EsError err = { 0 };
  g_autofree char *translated = g_strdup_printf ("input dim <%d>", BAD_DIM);
  g_autofree char *other = g_strdup_printf ("Layer %d has an unknown kind (%d)", 3, 42);
  g_autofree char *english = g_strdup_printf (DIM_MSGID, BAD_DIM);

  n_hook_calls = 0;
  es_set_translate (fake_translate);

  es_error_set (&err, ES_ERR_SHAPE, DIM_MSGID, BAD_DIM);
  g_assert_cmpstr (err.message, ==, translated);
  g_assert_cmpint (n_hook_calls, ==, 1);

  /* a msgid the hook does not know stays English */
  es_error_set (&err, ES_ERR_INVALID, "Layer %d has an unknown kind (%d)", 3, 42);
  g_assert_cmpint (err.code, ==, ES_ERR_INVALID);
  g_assert_cmpstr (err.message, ==, other);
  g_assert_cmpint (n_hook_calls, ==, 2);

  /* no record, no call */
  es_error_set (NULL, ES_ERR_SHAPE, DIM_MSGID, BAD_DIM);
  g_assert_cmpint (n_hook_calls, ==, 2);

  /* and back to English */
  es_set_translate (NULL);
  es_error_set (&err, ES_ERR_SHAPE, DIM_MSGID, BAD_DIM);
  g_assert_cmpint (n_hook_calls, ==, 2);
  g_assert_cmpstr (err.message, ==, english);
}

/* The hook runs on whichever thread reports an error: every thread sees it. */
static gpointer
report_from_thread (gpointer data)
{
  EsError *err = data;

  for (int i = 0; i < 100; i++)
    es_error_set (err, ES_ERR_SHAPE, DIM_MSGID, BAD_DIM - i);
  return NULL;
}

static void
test_hook_threads (void)
{
  EsError errs[4] = { { 0 } };
  GThread *threads[G_N_ELEMENTS (errs)];
  g_autofree char *last = g_strdup_printf ("input dim <%d>", BAD_DIM - 99);

  n_hook_calls = 0;
  es_set_translate (fake_translate);
  for (guint t = 0; t < G_N_ELEMENTS (threads); t++)
    threads[t] = g_thread_new ("report", report_from_thread, &errs[t]);
  for (guint t = 0; t < G_N_ELEMENTS (threads); t++)
    g_thread_join (threads[t]);
  es_set_translate (NULL);

  g_assert_cmpint (n_hook_calls, ==, 100 * (int) G_N_ELEMENTS (threads));
  for (guint t = 0; t < G_N_ELEMENTS (errs); t++)
    g_assert_cmpstr (errs[t].message, ==, last);
}

/* ------------------------------------------------------------------------------------ */
/* Through core, with the catalog */

/* setlocale, the build's catalog and (install_hook) espalier_i18n_init, as main does. */
static void
start_like_main (const char *language, const char *locale, gboolean install_hook)
{
  if (language != NULL)
    g_setenv ("LANGUAGE", language, TRUE);
  else
    g_unsetenv ("LANGUAGE");
  g_assert_nonnull (setlocale (LC_ALL, locale));
  bindtextdomain (GETTEXT_PACKAGE, ESPALIER_TEST_LOCALEDIR);
  bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
  if (install_hook)
    espalier_i18n_init ();
}

/* The message of the engine error that building "relu" on (-7) gives, through core. */
static char *
model_error_message (void)
{
  EsShape input = { .rank = 1, .dims = { BAD_DIM } };
  g_autoptr(GError) error = NULL;
  EsModel *model = espalier_model_from_spec ("relu", &input, &error);

  g_assert_null (model);
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);
  return g_strdup (error->message);
}

static gboolean
has_han (const char *s)
{
  for (const char *p = s; *p != '\0'; p = g_utf8_next_char (p))
    if (g_unichar_get_script (g_utf8_get_char (p)) == G_UNICODE_SCRIPT_HAN)
      return TRUE;
  return FALSE;
}

/* Whether gettext finds the catalog's Chinese here, asked in the parent (which checks
 * no message itself afterwards: every language runs in a subprocess). */
static gboolean
catalog_speaks_chinese (void)
{
  g_autofree char *language = g_strdup (g_getenv ("LANGUAGE"));
  gboolean found;

  start_like_main ("zh_CN", "C.UTF-8", FALSE);
  found = g_strcmp0 (g_dgettext (GETTEXT_PACKAGE, DIM_MSGID), DIM_MSGID) != 0;
  if (language != NULL)
    g_setenv ("LANGUAGE", language, TRUE);
  else
    g_unsetenv ("LANGUAGE");
  setlocale (LC_ALL, "");
  return found;
}

/* Each language check runs in a subprocess of its own (gettext caches what it looked
 * up): in the parent, run this test again as one and check that it passed, FALSE;
 * in the subprocess, TRUE: go on. chinese: the test needs the catalog to answer in
 * Chinese, and is skipped where gettext does not. */
static gboolean
in_subprocess (gboolean chinese)
{
  if (g_test_subprocess ())
    return TRUE;
  if (chinese && !catalog_speaks_chinese ())
    {
      g_test_skip ("gettext does not honour LANGUAGE=zh_CN under LC_ALL=C.UTF-8 here");
      return FALSE;
    }
  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_INHERIT_STDERR);
  g_test_trap_assert_passed ();
  return FALSE;
}

static void
test_engine_error_zh (void)
{
  const char *fmt;
  g_autofree char *message = NULL;
  g_autofree char *expected = NULL;
  g_autofree char *english = g_strdup_printf (DIM_MSGID, BAD_DIM);

  if (!g_test_subprocess ())
    {
      g_autofree char *mo = g_build_filename (ESPALIER_TEST_LOCALEDIR, "zh_CN", "LC_MESSAGES",
                                              GETTEXT_PACKAGE ".mo", NULL);

      g_assert_true (g_file_test (mo, G_FILE_TEST_IS_REGULAR));
      if (!catalog_speaks_chinese ())
        {
          g_test_skip ("gettext does not honour LANGUAGE=zh_CN under LC_ALL=C.UTF-8 here");
          return;
        }
      g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_INHERIT_STDERR);
      g_test_trap_assert_passed ();
      return;
    }

  start_like_main ("zh_CN", "C.UTF-8", TRUE);
  message = model_error_message ();
  fmt = g_dgettext (GETTEXT_PACKAGE, DIM_MSGID);
  g_assert_cmpstr (fmt, !=, DIM_MSGID);
  expected = g_strdup_printf (fmt, BAD_DIM);
  g_assert_cmpstr (message, ==, expected);
  g_assert_cmpstr (message, !=, english);
  g_assert_true (g_utf8_validate (message, -1, NULL));
  g_assert_true (has_han (message));
}

/* A fragment formatted into an engine message (es_translate): a Dense layer on a Conv2D's
 * image output, with no Flatten between them, which es-model.c refuses with what the
 * layer needs and what to do, both fragments. */
#define FRAG_SPEC         "conv2d:2:3,dense:4"
#define FRAG_MSGID        "Layer %d (%s) %s, but its input has shape %s: %s"
#define FRAG_NEED_MSGID   "needs a flat input of shape (features)"
#define FRAG_DETAIL_MSGID "add a Flatten layer before it"

static void
test_engine_fragment_zh (void)
{
  EsShape input = { .rank = 3, .dims = { 1, 6, 6 } };
  EsShape conv_out = { .rank = 3, .dims = { 2, 6 - 3 + 1, 6 - 3 + 1 } };   /* stride 1, no padding */
  g_autoptr(GError) error = NULL;
  g_autofree char *expected = NULL;
  const char *need, *detail;
  char shape[64];

  if (!in_subprocess (TRUE))
    return;

  start_like_main ("zh_CN", "C.UTF-8", TRUE);
  g_assert_null (espalier_model_from_spec (FRAG_SPEC, &input, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);

  need = g_dgettext (GETTEXT_PACKAGE, FRAG_NEED_MSGID);
  detail = g_dgettext (GETTEXT_PACKAGE, FRAG_DETAIL_MSGID);
  g_assert_cmpstr (need, !=, FRAG_NEED_MSGID);
  g_assert_cmpstr (detail, !=, FRAG_DETAIL_MSGID);
  es_shape_format (&conv_out, shape, sizeof shape);
  expected = g_strdup_printf (g_dgettext (GETTEXT_PACKAGE, FRAG_MSGID), 2,
                              es_layer_kind_title (ES_LAYER_DENSE), need, shape, detail);
  g_assert_cmpstr (error->message, ==, expected);
  g_assert_null (strstr (error->message, FRAG_NEED_MSGID));
  g_assert_null (strstr (error->message, FRAG_DETAIL_MSGID));
  g_assert_true (has_han (error->message));
}

/* English: no LANGUAGE; the "C" locale, where gettext ignores LANGUAGE; and Chinese
 * asked for but no hook installed (the engine alone never translates). */
static void
check_english (const char *language, const char *locale, gboolean install_hook)
{
  g_autofree char *message = NULL;
  g_autofree char *english = g_strdup_printf (DIM_MSGID, BAD_DIM);

  start_like_main (language, locale, install_hook);
  message = model_error_message ();
  g_assert_cmpstr (message, ==, english);
  g_assert_false (has_han (message));
}

static void
test_engine_error_en (void)
{
  if (!in_subprocess (FALSE))
    return;
  check_english (NULL, "C.UTF-8", TRUE);
}

static void
test_engine_error_c_locale (void)
{
  if (!in_subprocess (FALSE))
    return;
  check_english ("zh_CN", "C", TRUE);
}

static void
test_engine_error_no_hook (void)
{
  if (!in_subprocess (FALSE))
    return;
  check_english ("zh_CN", "C.UTF-8", FALSE);
}

#ifdef TEST_CUDA_MODULE
/* ------------------------------------------------------------------------------------ */
/* The CUDA module's own engine */

#define NO_SUCH_DEVICE_MSGID "There is no CUDA device %d (this machine has %d)"
#define FALLBACK_MSGID       "CUDA device %d cannot be used: %s. Running on the CPU instead."
#define OVER_BUDGET_MSGID    "Allocating %s of %s would exceed the memory limit of %s " \
                             "(%s already in use)"

/* Asking for a device past the last one: the module refuses it (es-cuda.cu) and core
 * falls back to the CPU, quoting the module's reason. install_hook: whether
 * espalier_i18n_init runs (and so the module gets the hook when core opens it). */
static void
check_no_such_device (gboolean install_hook)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *fallback = NULL;
  g_autofree char *reason = NULL;
  g_autofree char *expected = NULL;
  g_autofree char *english = NULL;
  const char *fmt = g_dgettext (GETTEXT_PACKAGE, NO_SUCH_DEVICE_MSGID);
  EsBackend *be;
  int n, asked;

  n = (int) espalier_cuda_device_count ();
  g_assert_cmpint (n, >, 0);
  asked = n + 2;
  be = espalier_backend_new (asked, 1, NULL, FALSE, &fallback, &error);
  g_assert_no_error (error);
  g_assert_nonnull (be);
  g_assert_cmpint (espalier_backend_get_device (be), <, 0);
  es_backend_free (be);

  g_assert_cmpstr (fmt, !=, NO_SUCH_DEVICE_MSGID);
  english = g_strdup_printf (NO_SUCH_DEVICE_MSGID, asked, n);
  reason = install_hook ? g_strdup_printf (fmt, asked, n) : g_strdup (english);
  /* core's own sentence around it is translated either way (_()) */
  expected = g_strdup_printf (g_dgettext (GETTEXT_PACKAGE, FALLBACK_MSGID), asked, reason);
  g_assert_cmpstr (fallback, ==, expected);
  if (install_hook)
    g_assert_null (strstr (fallback, english));
}

static void
test_cuda_module_zh (void)
{
  if (!in_subprocess (TRUE))
    return;
  start_like_main ("zh_CN", "C.UTF-8", TRUE);
  check_no_such_device (TRUE);
}

/* Without espalier_i18n_init the module's messages stay English, as core's engine's do. */
static void
test_cuda_module_no_hook (void)
{
  if (!in_subprocess (TRUE))
    return;
  start_like_main ("zh_CN", "C.UTF-8", FALSE);
  check_no_such_device (FALSE);
}

/* A memory kind formatted into the module's message (es_translate of es_mem_kind_name):
 * a budget of one byte has no room for the backend's own buffers, which are workspace
 * (es-cuda.h), so the module's es-memory.c refuses them in Chinese. The sizes are the
 * module's; what is checked is every piece of the translated format, in order, and the
 * translated kind between them. */
static void
test_cuda_module_budget_zh (void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *fallback = NULL;
  g_auto(GStrv) pieces = NULL;
  const char *kind, *at;
  EsBudget *budget;
  EsBackend *be;

  if (!in_subprocess (TRUE))
    return;
  start_like_main ("zh_CN", "C.UTF-8", TRUE);
  budget = es_budget_new (1);
  be = espalier_backend_new (0, 1, budget, FALSE, &fallback, &error);
  g_assert_no_error (error);
  g_assert_nonnull (be);
  g_assert_cmpint (espalier_backend_get_device (be), <, 0);
  es_backend_free (be);
  es_budget_free (budget);

  g_assert_nonnull (fallback);
  g_assert_true (has_han (fallback));
  kind = g_dgettext (GETTEXT_PACKAGE, es_mem_kind_name (ES_MEM_WORKSPACE));
  g_assert_cmpstr (kind, !=, es_mem_kind_name (ES_MEM_WORKSPACE));
  g_assert_nonnull (strstr (fallback, kind));
  g_assert_null (strstr (fallback, "would exceed"));
  pieces = g_strsplit (g_dgettext (GETTEXT_PACKAGE, OVER_BUDGET_MSGID), "%s", -1);
  g_assert_cmpuint (g_strv_length (pieces), ==, 5);
  at = fallback;
  for (guint i = 0; pieces[i] != NULL; i++)
    {
      const char *found = strstr (at, pieces[i]);

      g_assert_nonnull (found);
      at = found + strlen (pieces[i]);
    }
}
#endif

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

#ifdef TEST_CUDA_MODULE
  /* before the first device call opens a module */
  g_setenv ("ESPALIER_CUDA_MODULE", TEST_CUDA_MODULE, TRUE);
  g_test_add_func ("/i18n/cuda-module/zh", test_cuda_module_zh);
  g_test_add_func ("/i18n/cuda-module/no-hook", test_cuda_module_no_hook);
  g_test_add_func ("/i18n/cuda-module/budget-zh", test_cuda_module_budget_zh);
#endif
  g_test_add_func ("/i18n/hook/default", test_hook_default);
  g_test_add_func ("/i18n/hook/set", test_hook_set);
  g_test_add_func ("/i18n/hook/threads", test_hook_threads);
  g_test_add_func ("/i18n/engine-error/zh", test_engine_error_zh);
  g_test_add_func ("/i18n/engine-error/fragment-zh", test_engine_fragment_zh);
  g_test_add_func ("/i18n/engine-error/en", test_engine_error_en);
  g_test_add_func ("/i18n/engine-error/c-locale", test_engine_error_c_locale);
  g_test_add_func ("/i18n/engine-error/no-hook", test_engine_error_no_hook);
  return g_test_run ();
}
