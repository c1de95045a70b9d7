/* SPDX-License-Identifier: GPL-3.0-or-later */
/* fuzz-replay.c: a main for a harness without libFuzzer: runs every file of the
 * directories (or files) given through LLVMFuzzerTestOneInput once, as a TAP test.
 * This is how the seed corpora and the regression inputs of crashes once found run in
 * the ordinary test suite, under gcc and its sanitizers. */
#include "config.h"

#include <stdio.h>

#include "fuzz-common.h"

static int
compare_names (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

/* path's files, or path when it is a file, into files (sorted, hidden ones left out). */
static void
collect (const char *path, GPtrArray *files)
{
  g_autoptr(GDir) d = NULL;
  g_autoptr(GPtrArray) names = NULL;
  const char *name;

  if (!g_file_test (path, G_FILE_TEST_IS_DIR))
    {
      g_ptr_array_add (files, g_strdup (path));
      return;
    }
  d = g_dir_open (path, 0, NULL);
  if (d == NULL)
    return;
  names = g_ptr_array_new_with_free_func (g_free);
  while ((name = g_dir_read_name (d)) != NULL)
    if (name[0] != '.')
      g_ptr_array_add (names, g_build_filename (path, name, NULL));
  g_ptr_array_sort (names, compare_names);
  for (guint i = 0; i < names->len; i++)
    collect (g_ptr_array_index (names, i), files);
}

int
main (int argc, char **argv)
{
  g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func (g_free);
  int n_args = argc;

  LLVMFuzzerInitialize (&n_args, &argv);
  for (int i = 1; i < argc; i++)
    if (strcmp (argv[i], "--tap") != 0)
      collect (argv[i], files);
  printf ("1..%u\n", MAX (files->len, 1));
  if (files->len == 0)
    {
      printf ("ok 1 # SKIP no corpus files\n");
      return 0;
    }
  for (guint i = 0; i < files->len; i++)
    {
      const char *path = g_ptr_array_index (files, i);
      g_autofree char *contents = NULL;
      g_autoptr(GError) error = NULL;
      gsize len = 0;

      if (!g_file_get_contents (path, &contents, &len, &error))
        {
          printf ("not ok %u - %s: %s\n", i + 1, path, error->message);
          continue;
        }
      /* A crash ends the test here, naming the input in the log. */
      fprintf (stderr, "%s\n", path);
      LLVMFuzzerTestOneInput ((const uint8_t *) contents, len);
      printf ("ok %u - %s\n", i + 1, path);
      fflush (stdout);
    }
  return 0;
}
