/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-recovery.c: core on a hostile machine or with a damaged project. Out of memory:
 * checked allocations fail with ESPALIER_ERROR_MEMORY instead of aborting; a training
 * run that cannot fit (a small ESPALIER_MEMORY_AVAILABLE, or a child process under a low
 * RLIMIT_AS, where the allocator itself refuses) returns a GError and leaves the model's
 * weights as they were, and one that fits only in smaller batches is split. A project
 * whose dataset file is gone still loads, says which file is missing, and can be
 * pointed at where it went. A save into a directory that cannot be written fails
 * naming it, keeps the project modified and leaves no file behind. Evaluation and
 * profiling whose buffers or copies of the model do not fit fail the same way. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "data-test-util.h"
#include "espalier-error.h"
#include "espalier-limits.h"
#include "espalier-optimize.h"
#include "espalier-profile-report.h"
#include "espalier-project.h"
#include "espalier-templates.h"

/* AddressSanitizer reserves terabytes of address space for its shadow memory, so a
 * process under it cannot run with a low RLIMIT_AS. */
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

static const EsShape points = { .rank = 1, .dims = { 2 } };

static EspalierDataset *
load_spiral (void)
{
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions opts;
  EspalierDataset *ds;

  dtu_options_no_cache (&opts);
  ds = espalier_dataset_load ("spiral:n=200,arms=3,seed=4", &opts, NULL, &error);
  g_assert_no_error (error);
  return ds;
}

static EsModel *
model_from_spec (const char *spec)
{
  g_autoptr(GError) error = NULL;
  EsModel *m = espalier_model_from_spec (spec, &points, &error);

  g_assert_no_error (error);
  es_model_init (m, 3);
  return m;
}

static void
set_available (guint64 bytes)
{
  g_autofree char *text = g_strdup_printf ("%" G_GUINT64_FORMAT, bytes);

  g_setenv ("ESPALIER_MEMORY_AVAILABLE", text, TRUE);
}

/* Train model on ds for one epoch of batch rows; the result, error set on failure. */
static gboolean
train (EspalierDataset *ds, EsModel *model, guint batch, guint *micro_batch, GError **error)
{
  g_autoptr(EspalierTrainer) trainer = NULL;
  EspalierTrainOptions opts;
  gboolean ok;

  espalier_train_options_init (&opts);
  opts.epochs = 1;
  opts.batch_size = batch;
  opts.threads = 1;
  trainer = espalier_trainer_new (ds, model, &opts);
  ok = espalier_trainer_run (trainer, NULL, NULL, NULL, error);
  if (micro_batch != NULL)
    *micro_batch = espalier_trainer_get_micro_batch (trainer);
  return ok;
}

/* Out of memory ---------------------------------------------------------------------- */

static void
test_try_alloc (void)
{
  g_autoptr(GError) error = NULL;
  g_autofree float *zeros = NULL;
  gpointer p;

  /* A size that overflows. */
  p = espalier_try_alloc (G_MAXSIZE / 2, 4, FALSE, "the test buffer", &error);
  g_assert_null (p);
  dtu_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY, "the test buffer", NULL);
  g_clear_error (&error);

  /* More than the machine has: refused before the allocator is asked, with the size. */
  set_available (1000);
  p = espalier_try_alloc (1000, 1000, TRUE, "the test buffer", &error);
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");
  g_assert_null (p);
  /* (g_format_size puts a no-break space before the unit) */
  dtu_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY, "the test buffer", "needs 1.0",
                    "MB of memory", "kB available", NULL);
  g_clear_error (&error);

  zeros = espalier_try_alloc (1000, sizeof (float), TRUE, "the test buffer", &error);
  g_assert_no_error (error);
  for (guint i = 0; i < 1000; i++)
    g_assert_cmpfloat (zeros[i], ==, 0.0f);
}

/* A run whose least plan does not fit what is available is refused before anything is
 * allocated; the model keeps its weights; with the memory back, it trains. */
static void
test_train_refused (void)
{
  g_autoptr(EspalierDataset) ds = load_spiral ();
  EsModel *model = model_from_spec ("dense:256,relu,dense:256,relu,dense:3,softmax");
  gsize n = (gsize) es_model_n_params (model);
  g_autofree float *before = g_memdup2 (es_model_params (model), n * sizeof (float));
  g_autoptr(GError) error = NULL;
  EspalierTrainOptions opts;
  EsMemPlan least;

  espalier_train_options_init (&opts);
  es_mem_plan (model, &opts.engine, 1, true, &least);
  set_available (least.total / 2);
  g_assert_false (train (ds, model, 32, NULL, &error));
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");
  dtu_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY, "Training cannot start",
                    "available", NULL);
  g_test_message ("refused: %s", error->message);
  g_assert_cmpmem (es_model_params (model), n * sizeof (float), before, n * sizeof (float));
  g_clear_error (&error);

  g_assert_true (train (ds, model, 32, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (memcmp (es_model_params (model), before, n * sizeof (float)) != 0);
  es_model_free (model);
}

/* A run whose full batch does not fit what is available, but one row does, trains in
 * micro-batches (a model of wide activations and few weights). */
static void
test_train_split (void)
{
  g_autoptr(EspalierDataset) ds = load_spiral ();
  EsModel *model = model_from_spec ("dense:1024,relu,dense:3,softmax");
  g_autoptr(GError) error = NULL;
  EspalierTrainOptions opts;
  EsMemPlan least, full;
  guint batch = 128, micro = 0;

  espalier_train_options_init (&opts);
  es_mem_plan (model, &opts.engine, 1, true, &least);
  es_mem_plan (model, &opts.engine, (int) batch, true, &full);
  /* wide activations, few weights: the batch is what does not fit */
  g_assert_cmpuint ((full.total - least.total) / 2, >, 2 * (8 * least.weights + 64 * 1024));
  /* the least plan, the trainer's own copies of the weights on the host (the best, the
   * last good state: at most 8 in all), the batcher's rows (a few kB), and half of what
   * the full batch adds */
  set_available (least.total + 8 * least.weights + 64 * 1024 + (full.total - least.total) / 2);
  g_assert_true (train (ds, model, batch, &micro, &error));
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");
  g_assert_no_error (error);
  g_assert_cmpuint (micro, <, batch);
  g_assert_cmpuint (micro, >=, 1);
  es_model_free (model);
}

/* Evaluation (the trainer's, through the batcher, and the optimizer's) whose batch
 * buffers do not fit, and profiling whose copy of the model does not: a GError each;
 * with the memory back, they run. */
static void
test_eval_profile_refused (void)
{
  g_autoptr(EspalierDataset) ds = load_spiral ();
  EsModel *model = model_from_spec ("dense:8,tanh,dense:3,softmax");
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierProfileReport) report = NULL;
  EspalierMetrics m = { 0 };
  EspalierTrainOptions opts;
  EspalierProfileOptions popts;
  guint64 weights = (guint64) es_model_n_params (model) * sizeof (float);

  /* the row list (4 bytes a row) fits; a batch of the 200 rows of 2 floats does not */
  set_available (200 * 4 + 100);
  g_assert_false (espalier_evaluate (model, ds, NULL, 0, ES_LOSS_SOFTMAX_XENT, 1, &m, &error));
  dtu_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY, "the batch buffers", NULL);
  g_test_message ("evaluate: %s", error->message);
  g_clear_error (&error);
  espalier_metrics_clear (&m);
  g_assert_false (espalier_evaluate_exec (model, NULL, NULL, ds, NULL, 0, 1, &m, &error));
  dtu_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY, "the evaluation buffers", NULL);
  g_clear_error (&error);
  espalier_metrics_clear (&m);

  espalier_train_options_init (&opts);
  opts.threads = 1;
  espalier_profile_options_init (&popts);
  popts.steps = 3;
  set_available (weights / 2);
  g_assert_null (espalier_profile_run (ds, model, &opts, &popts, NULL, NULL, NULL, &error));
  dtu_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY, "copy of the model", NULL);
  g_clear_error (&error);
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");

  g_assert_true (espalier_evaluate (model, ds, NULL, 0, ES_LOSS_SOFTMAX_XENT, 1, &m, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (m.rows, ==, 200);
  espalier_metrics_clear (&m);
  /* Under memcheck the profile's first run measures the machine's ceilings for a
   * minute (nothing is cached in CI); the profile runs under ASan and plain. */
  if (g_getenv ("ESPALIER_UNDER_VALGRIND") == NULL)
    {
      report = espalier_profile_run (ds, model, &opts, &popts, NULL, NULL, NULL, &error);
      g_assert_no_error (error);
      g_assert_nonnull (report);
    }
  es_model_free (model);
}

/* Bytes of address space this process holds (the first field of /proc/self/statm). */
static guint64
address_space (void)
{
  g_autofree char *statm = NULL;

  g_assert_true (g_file_get_contents ("/proc/self/statm", &statm, NULL, NULL));
  return g_ascii_strtoull (statm, NULL, 10) * (guint64) sysconf (_SC_PAGESIZE);
}

/* In a child under RLIMIT_AS: a model whose weights fit but whose training state
 * (gradients, optimizer moments, the best weights' copy: 4x the weights) cannot.
 * real_alloc: ESPALIER_MEMORY_AVAILABLE says the memory is there, so the check before
 * the run passes and the allocator itself refuses. Both end in a GError; then, the
 * limit lifted, the same process trains a small model. */
static void
rlimit_child (gboolean real_alloc)
{
  g_autoptr(EspalierDataset) ds = load_spiral ();
  EsModel *big = model_from_spec ("dense:2048,relu,dense:6144,relu,dense:3,softmax");
  EsModel *small = model_from_spec ("dense:8,tanh,dense:3,softmax");
  gsize n = (gsize) es_model_n_params (big), weights = n * sizeof (float);
  g_autofree float *before = g_memdup2 (es_model_params (big), weights);
  g_autoptr(GError) error = NULL;
  struct rlimit old, low;

  g_assert_cmpuint (weights, >, 48 << 20);
  if (real_alloc)
    set_available (G_GUINT64_CONSTANT (1) << 50);
  g_assert_cmpint (getrlimit (RLIMIT_AS, &old), ==, 0);
  low = old;
  low.rlim_cur = address_space () + weights / 2 + (96 << 20);
  g_assert_cmpint (setrlimit (RLIMIT_AS, &low), ==, 0);

  g_assert_false (train (ds, big, 32, NULL, &error));
  g_assert_nonnull (error);
  g_printerr ("%s\n", error->message);
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY);
  g_assert_cmpmem (es_model_params (big), weights, before, weights);
  es_model_free (big);

  g_assert_cmpint (setrlimit (RLIMIT_AS, &old), ==, 0);
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");
  g_clear_error (&error);
  g_assert_true (train (ds, small, 32, NULL, &error));
  g_assert_no_error (error);
  es_model_free (small);
}

static void
test_train_rlimit (gconstpointer data)
{
  gboolean real_alloc = GPOINTER_TO_INT (data);

  if (UNDER_ASAN)
    {
      g_test_skip ("AddressSanitizer reserves terabytes of address space for its shadow "
                   "memory: a process under it cannot run with a low RLIMIT_AS");
      return;
    }
  if (g_test_subprocess ())
    {
      rlimit_child (real_alloc);
      return;
    }
  g_test_trap_subprocess (NULL, 120 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
  g_test_message ("child: %s", g_test_trap_has_passed () ? "passed" : "failed");
  g_test_trap_assert_passed ();
}

/* A missing dataset ---------------------------------------------------------------- */

/* A CSV of rows with `features` numeric columns and a label of two classes. */
static char *
write_csv (const char *dir, const char *name, guint features)
{
  g_autoptr(GString) s = g_string_new (NULL);

  for (guint f = 0; f < features; f++)
    g_string_append_printf (s, "x%u,", f);
  g_string_append (s, "label\n");
  for (guint r = 0; r < 24; r++)
    {
      for (guint f = 0; f < features; f++)
        g_string_append_printf (s, "%u.%u,", (r * 7 + f * 3) % 11, r % 10);
      g_string_append (s, r % 2 ? "yes\n" : "no\n");
    }
  return dtu_write_text (dir, name, s->str);
}

static EspalierDataset *
load_csv (const char *path)
{
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions opts;
  EspalierDataset *ds;

  dtu_options_no_cache (&opts);
  ds = espalier_dataset_load (path, &opts, NULL, &error);
  g_assert_no_error (error);
  return ds;
}

/* The spec of project's model doc, kept until the next call. */
static const char *
doc_spec (EspalierProject *project)
{
  static char *spec;

  g_free (spec);
  spec = espalier_model_doc_to_spec (espalier_project_get_model_doc (project));
  return spec;
}

static void
test_missing_dataset (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *csv = write_csv (dir, "table.csv", 3);
  g_autofree char *moved = NULL, *wrong = NULL;
  g_autofree char *project_path = g_build_filename (dir, "p.espalier", NULL);
  g_autoptr(GFile) file = g_file_new_for_path (project_path);
  g_autoptr(EspalierProject) project = espalier_project_new ();
  g_autoptr(EspalierProject) opened = NULL;
  g_autoptr(EspalierDataset) ds = load_csv (csv);
  g_autoptr(EspalierDataset) wrong_ds = NULL, moved_ds = NULL;
  g_autoptr(GError) error = NULL;
  EspalierModelDoc *doc = espalier_project_get_model_doc (project);
  EspalierTrainOptions topts;
  EspalierLoadOptions lopts;
  g_autofree char *spec = NULL;

  espalier_project_set_dataset (project, ds, NULL);
  g_assert_true (espalier_model_doc_apply_template (doc, "mlp", &topts, &error));
  g_assert_no_error (error);
  espalier_project_set_train_options (project, &topts);
  spec = espalier_model_doc_to_spec (doc);
  g_assert_true (espalier_project_check_dataset (project, &error));
  g_assert_true (espalier_project_save (project, file, NULL, &error));
  g_assert_no_error (error);

  /* The file goes away: the project opens all the same, and says what is missing. */
  g_assert_cmpint (g_unlink (csv), ==, 0);
  opened = espalier_project_load (file, NULL, &error);
  g_assert_no_error (error);
  g_assert_nonnull (opened);
  g_assert_false (espalier_project_check_dataset (opened, &error));
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_NOT_FOUND, csv, NULL);
  g_clear_error (&error);
  g_assert_cmpstr (espalier_project_get_dataset_source (opened), ==, csv);
  g_assert_cmpstr (doc_spec (opened), ==, spec);
  g_assert_cmpuint (espalier_project_get_train_options (opened)->epochs, ==, topts.epochs);
  g_assert_false (espalier_project_get_modified (opened));

  /* A file of another shape cannot stand in for it. */
  wrong = write_csv (dir, "wider.csv", 4);
  wrong_ds = load_csv (wrong);
  g_assert_false (espalier_project_dataset_fits (opened, wrong_ds, &error));
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISMATCH, "(4)", "(3)", NULL);
  g_clear_error (&error);

  /* Where it went: the same shape. */
  moved = write_csv (dir, "moved.csv", 3);
  moved_ds = load_csv (moved);
  g_assert_true (espalier_project_dataset_fits (opened, moved_ds, &error));
  g_assert_no_error (error);
  espalier_project_relocate_dataset (opened, moved);
  g_assert_cmpstr (espalier_project_get_dataset_source (opened), ==, moved);
  g_assert_true (espalier_project_get_modified (opened));
  g_assert_true (espalier_project_check_dataset (opened, &error));
  g_assert_cmpstr (doc_spec (opened), ==, spec);

  /* A labels file that is gone is named too, and relocating forgets it. */
  lopts = *espalier_project_get_load_options (opened);
  lopts.labels_path = "/nonexistent/espalier-labels.idx";
  espalier_project_set_dataset_source (opened, moved, &lopts);
  g_assert_false (espalier_project_check_dataset (opened, &error));
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_NOT_FOUND,
                    "espalier-labels.idx", NULL);
  g_clear_error (&error);
  espalier_project_relocate_dataset (opened, moved);
  g_assert_null (espalier_project_get_load_options (opened)->labels_path);
  g_assert_true (espalier_project_check_dataset (opened, &error));

  /* Not files: nothing to miss. */
  espalier_project_set_dataset_source (opened, "spiral:n=100", NULL);
  g_assert_true (espalier_project_check_dataset (opened, &error));
  g_assert_no_error (error);
}

/* A read-only directory ------------------------------------------------------------ */

/* Whether a file can be created in dir (root can, whatever the mode says). */
static gboolean
can_create_in (const char *dir)
{
  g_autofree char *probe = g_build_filename (dir, ".espalier-probe", NULL);
  int fd = g_open (probe, O_WRONLY | O_CREAT | O_EXCL, 0600);

  if (fd < 0)
    return FALSE;
  close (fd);
  g_unlink (probe);
  return TRUE;
}

static int
compare_names (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char * const *) a, *(const char * const *) b);
}

/* Names in dir, sorted, joined by newlines. */
static char *
list_dir (const char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  g_autoptr(GPtrArray) names = g_ptr_array_new ();
  const char *name;

  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    g_ptr_array_add (names, (gpointer) name);
  g_ptr_array_sort (names, compare_names);
  g_ptr_array_add (names, NULL);
  return g_strjoinv ("\n", (char **) names->pdata);
}

/* Save into dir, which cannot be written: the save fails naming the directory, the
 * project stays modified, and the directory holds what it held. */
static void
save_refused (EspalierProject *project, const char *dir, const char *name)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_autoptr(GFile) file = g_file_new_for_path (path);
  g_autofree char *names = list_dir (dir), *names_after = NULL;
  g_autoptr(GError) error = NULL;
  EspalierTrainOptions opts;

  opts = *espalier_project_get_train_options (project);
  opts.epochs++;
  espalier_project_set_train_options (project, &opts);
  g_assert_true (espalier_project_get_modified (project));
  g_assert_false (espalier_project_save (project, file, NULL, &error));
  g_test_message ("refused: %s", error->message);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED);
  g_assert_nonnull (strstr (error->message, dir));
  g_assert_true (espalier_project_get_modified (project));
  names_after = list_dir (dir);
  g_assert_cmpstr (names_after, ==, names);
}

static void
test_read_only_dir (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *path = g_build_filename (dir, "p.espalier", NULL);
  g_autoptr(GFile) file = g_file_new_for_path (path);
  g_autoptr(EspalierProject) project = espalier_project_new ();
  g_autoptr(GError) error = NULL;
  g_autofree char *saved = NULL, *after = NULL;

  espalier_project_set_dataset_source (project, "spiral:n=100", NULL);
  g_assert_true (espalier_project_save (project, file, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (g_file_get_contents (path, &saved, NULL, NULL));

  g_assert_cmpint (g_chmod (dir, 0555), ==, 0);
  if (!can_create_in (dir))
    {
      /* Nothing lost: the old file as it was. */
      save_refused (project, dir, "p.espalier");
      g_assert_true (g_file_get_contents (path, &after, NULL, NULL));
      g_assert_cmpstr (after, ==, saved);
      g_assert_cmpint (g_chmod (dir, 0755), ==, 0);
      return;
    }
  g_chmod (dir, 0755);
  /* Root writes whatever the mode says; sysfs refuses new files even to root. */
  if (g_file_test ("/sys/kernel", G_FILE_TEST_IS_DIR) && !can_create_in ("/sys"))
    {
      g_test_message ("root ignores the directory's mode: saving into /sys instead");
      save_refused (project, "/sys", "espalier-recovery-test.espalier");
      return;
    }
  g_test_skip ("the directory's mode does not stop this user (root) from writing in it, "
               "and no directory that refuses root is at hand");
}

int
main (int argc, char **argv)
{
  dtu_init (&argc, &argv);
  g_test_add_func ("/core/recovery/try-alloc", test_try_alloc);
  g_test_add_func ("/core/recovery/train-refused", test_train_refused);
  g_test_add_func ("/core/recovery/train-split", test_train_split);
  g_test_add_func ("/core/recovery/eval-profile-refused", test_eval_profile_refused);
  g_test_add_data_func ("/core/recovery/train-rlimit/checked", GINT_TO_POINTER (FALSE),
                        test_train_rlimit);
  g_test_add_data_func ("/core/recovery/train-rlimit/allocator", GINT_TO_POINTER (TRUE),
                        test_train_rlimit);
  g_test_add_func ("/core/recovery/missing-dataset", test_missing_dataset);
  g_test_add_func ("/core/recovery/read-only-dir", test_read_only_dir);
  return dtu_finish (g_test_run ());
}
