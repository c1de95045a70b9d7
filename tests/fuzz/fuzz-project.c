/* SPDX-License-Identifier: GPL-3.0-or-later */
/* fuzz-project.c: the project file loader (espalier_project_load) on arbitrary bytes.
 *
 * Input: the NAME.espalier file. It is written to a private directory and loaded from
 * there; a project that loads is saved again and must load back with the same runs,
 * variants and model spec: whatever the loader accepts, the writer must accept too. */
#include "config.h"

#include "espalier-project.h"
#include "fuzz-common.h"

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_init ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autofree char *path = NULL, *rt_path = NULL;
  g_autoptr(GFile) file = NULL, rt_file = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierProject) project = NULL, again = NULL;

  fuzz_init ();
  path = fuzz_write ("p.espalier", data, size);
  file = g_file_new_for_path (path);
  project = espalier_project_load (file, NULL, &error);
  g_assert ((project == NULL) != (error == NULL));
  if (project == NULL)
    return 0;

  rt_path = g_build_filename (fuzz_tmp_dir, "rt.espalier", NULL);
  rt_file = g_file_new_for_path (rt_path);
  if (!espalier_project_save (project, rt_file, NULL, &error))
    g_error ("loaded but does not save: %s", error->message);
  again = espalier_project_load (rt_file, NULL, &error);
  if (again == NULL)
    g_error ("saved but does not load back: %s", error->message);
  g_assert_cmpuint (g_list_model_get_n_items (espalier_project_get_runs (project)), ==,
                    g_list_model_get_n_items (espalier_project_get_runs (again)));
  g_assert_cmpuint (g_list_model_get_n_items (espalier_project_get_variants (project)), ==,
                    g_list_model_get_n_items (espalier_project_get_variants (again)));
  g_assert_cmpstr (espalier_project_get_dataset_source (project), ==,
                   espalier_project_get_dataset_source (again));
  {
    g_autofree char *a = espalier_model_doc_to_spec (espalier_project_get_model_doc (project));
    g_autofree char *b = espalier_model_doc_to_spec (espalier_project_get_model_doc (again));

    g_assert_cmpstr (a, ==, b);
  }
  return 0;
}
