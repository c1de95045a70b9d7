/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-atomic-save.c: saves cut short by SIGKILL never leave a mix (espalier-save.h).
 *
 * A child process (fork) saves a model, or a project, over the one on disk; the parent
 * kills it at a random moment of the save (0 to 1.2 times how long a save takes here).
 * After each kill the file on disk must load, and be either the version that was there
 * or the one being written, exactly: the model's weights bit for bit and its JSON file
 * byte for byte, the project file byte for byte. Runs alternate between two versions so
 * each one replaces the other. At the end one save that is not cut must leave nothing
 * but the files themselves: the temporary files of killed writers are gone.
 *
 * ESPALIER_ATOMIC_RUNS (100) sets the kills per kind. Also the espalier_save_atomic
 * basics: cancellation, permissions kept, a live writer's temporary file left alone. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "espalier-error.h"
#include "espalier-model-file.h"
#include "espalier-project.h"
#include "espalier-save.h"
#include "espalier-templates.h"

static guint
n_runs (void)
{
  const char *env = g_getenv ("ESPALIER_ATOMIC_RUNS");

  return env != NULL ? (guint) MAX (g_ascii_strtoull (env, NULL, 10), 1) : 100;
}

static char *
make_tmp_dir (void)
{
  g_autoptr(GError) error = NULL;
  char *dir = g_dir_make_tmp ("espalier-atomic-XXXXXX", &error);

  g_assert_no_error (error);
  return dir;
}

static void
remove_tree (const char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;

  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *p = g_build_filename (dir, name, NULL);

      g_unlink (p);
    }
  g_rmdir (dir);
}

static int
compare_strings (gconstpointer a, gconstpointer b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

/* Names in dir, sorted, joined with spaces. */
static char *
dir_listing (const char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *name;

  g_assert_nonnull (d);
  while ((name = g_dir_read_name (d)) != NULL)
    g_ptr_array_add (names, g_strdup (name));
  g_ptr_array_sort (names, compare_strings);
  g_ptr_array_add (names, NULL);
  return g_strjoinv (" ", (char **) names->pdata);
}

static GBytes *
read_bytes (const char *path)
{
  g_autoptr(GError) error = NULL;
  char *data = NULL;
  gsize len = 0;

  g_file_get_contents (path, &data, &len, &error);
  g_assert_no_error (error);
  return g_bytes_new_take (data, len);
}

/* Run save (data) in a child and kill it after delay_us (or let it finish): the
 * child's end, as waitpid says. */
typedef gboolean (*SaveFunc) (gpointer data);

static int
save_in_child (SaveFunc save, gpointer data, gint64 delay_us)
{
  int status = 0;
  pid_t pid = fork ();

  g_assert_cmpint (pid, >=, 0);
  if (pid == 0)
    _exit (save (data) ? 0 : 1);
  if (delay_us > 0)
    g_usleep ((gulong) delay_us);
  kill (pid, SIGKILL);
  g_assert_cmpint (waitpid (pid, &status, 0), ==, pid);
  /* Finished in time (0), or killed; a save that failed on its own is a bug. */
  g_assert_true ((WIFEXITED (status) && WEXITSTATUS (status) == 0)
                 || (WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL));
  return status;
}

/* How long a save in a child takes here, fork to exit as the parent sees it, in
 * microseconds: the slowest of three. Kills are spread over that. */
static gint64
save_duration (SaveFunc save, gpointer data)
{
  gint64 longest = 0;

  for (int i = 0; i < 3; i++)
    {
      gint64 t0 = g_get_monotonic_time ();
      int status = 0;
      pid_t pid = fork ();

      g_assert_cmpint (pid, >=, 0);
      if (pid == 0)
        _exit (save (data) ? 0 : 1);
      g_assert_cmpint (waitpid (pid, &status, 0), ==, pid);
      g_assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 0);
      longest = MAX (longest, g_get_monotonic_time () - t0);
    }
  return MAX (longest, 1000);
}

/* ------------------------------------------------------------------------------------ */
/* Models */

typedef struct {
  EsModel           *model;
  EspalierModelInfo  info;
  const char        *path;      /* where it is saved */
  GBytes            *json;      /* its JSON file as saved once, for comparison */
} ModelVersion;

static gboolean
save_model (gpointer data)
{
  ModelVersion *v = data;
  g_autoptr(GError) error = NULL;

  if (!espalier_model_save (v->model, &v->info, v->path, &error))
    {
      g_printerr ("save: %s\n", error->message);
      return FALSE;
    }
  return TRUE;
}

/* About 300 kB of weights, seeded: versions differ in every weight. */
static void
model_version (ModelVersion *v, const char *path, guint64 seed)
{
  static const EsShape in = { .rank = 1, .dims = { 256 } };
  g_autoptr(GError) error = NULL;

  v->model = espalier_model_from_spec ("dense:256,relu,dense:10,softmax", &in, &error);
  g_assert_no_error (error);
  es_model_init (v->model, seed);
  espalier_model_info_init (&v->info);
  v->info.name = g_strdup ("big");
  v->info.created = g_strdup ("2024-01-01T00:00:00Z");
  v->info.producer = g_strdup ("Espalier test");
  v->info.dataset_source = g_strdup_printf ("version %" G_GUINT64_FORMAT, seed);
  v->path = path;
}

/* Which version the pair on disk loads as: 0 or 1. */
static int
loaded_model_version (const char *path, ModelVersion *versions)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *json_path = NULL;
  g_autoptr(GBytes) json = NULL;
  EsModel *model = espalier_model_load (path, NULL, &error);
  int which = -1;

  g_assert_no_error (error);
  for (int k = 0; k < 2; k++)
    if (memcmp (es_model_params_const (model), es_model_params_const (versions[k].model),
                (gsize) es_model_n_params (model) * sizeof (float)) == 0)
      which = k;
  es_model_free (model);
  g_assert_cmpint (which, >=, 0);
  espalier_model_paths (path, &json_path, NULL);
  json = read_bytes (json_path);
  g_assert_true (g_bytes_equal (json, versions[which].json));
  return which;
}

static void
test_model_killed (void)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "big", NULL);
  g_autofree char *json_path = g_build_filename (dir, "big.json", NULL);
  g_autofree char *listing = NULL;
  ModelVersion versions[2];
  gint64 duration;
  int on_disk;
  guint runs = n_runs (), n_old = 0, n_new = 0;

  for (int k = 0; k < 2; k++)
    {
      model_version (&versions[k], path, 11 + k);
      g_assert_true (save_model (&versions[k]));
      versions[k].json = read_bytes (json_path);
    }
  on_disk = 1;
  duration = save_duration (save_model, &versions[1]);

  for (guint i = 0; i < runs; i++)
    {
      int writing = 1 - on_disk, now;

      save_in_child (save_model, &versions[writing],
                     g_test_rand_int_range (0, (gint32) MIN (duration * 6 / 5, G_MAXINT32)));
      now = loaded_model_version (path, versions);
      if (now == on_disk)
        n_old++;
      else
        n_new++;
      on_disk = now;
    }
  g_test_message ("%u kills: %u left the old model, %u the new one", runs, n_old, n_new);

  /* One save that runs to its end clears what the killed ones left. */
  g_assert_true (save_model (&versions[0]));
  g_assert_cmpint (loaded_model_version (path, versions), ==, 0);
  listing = dir_listing (dir);
  g_assert_cmpstr (listing, ==, "big.json big.safetensors");

  for (int k = 0; k < 2; k++)
    {
      es_model_free (versions[k].model);
      espalier_model_info_clear (&versions[k].info);
      g_bytes_unref (versions[k].json);
    }
  remove_tree (dir);
}

/* ------------------------------------------------------------------------------------ */
/* Projects */

typedef struct {
  EspalierProject *project;
  GFile           *file;
  GBytes          *bytes;   /* the file as saved once */
} ProjectVersion;

static gboolean
save_project (gpointer data)
{
  ProjectVersion *v = data;
  g_autoptr(GError) error = NULL;

  if (!espalier_project_save (v->project, v->file, NULL, &error))
    {
      g_printerr ("save: %s\n", error->message);
      return FALSE;
    }
  return TRUE;
}

/* A project with a variant of about 66000 weights (350 kB of base64). */
static void
project_version (ProjectVersion *v, GFile *file, guint64 seed)
{
  static const EsShape in = { .rank = 1, .dims = { 256 } };
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierVariant) variant = NULL;
  g_autofree char *source = g_strdup_printf ("spiral:n=%" G_GUINT64_FORMAT, 100 + seed);
  EsModel *model = espalier_model_from_spec ("dense:256,relu,dense:3", &in, &error);

  g_assert_no_error (error);
  es_model_init (model, seed);
  v->project = espalier_project_new ();
  espalier_project_set_dataset_source (v->project, source, NULL);
  variant = espalier_variant_new ("baseline", "baseline", model);
  espalier_project_add_variant (v->project, variant);
  v->file = g_object_ref (file);
}

static int
loaded_project_version (GFile *file, ProjectVersion *versions)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierProject) project = espalier_project_load (file, NULL, &error);
  g_autofree char *path = g_file_get_path (file);
  g_autoptr(GBytes) bytes = read_bytes (path);

  g_assert_no_error (error);
  g_assert_nonnull (project);
  for (int k = 0; k < 2; k++)
    if (g_bytes_equal (bytes, versions[k].bytes))
      {
        g_assert_cmpstr (espalier_project_get_dataset_source (project), ==,
                         espalier_project_get_dataset_source (versions[k].project));
        return k;
      }
  g_error ("the project on disk is neither version (%" G_GSIZE_FORMAT " bytes)",
           g_bytes_get_size (bytes));
  return -1;
}

static void
test_project_killed (void)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "big.espalier", NULL);
  g_autoptr(GFile) file = g_file_new_for_path (path);
  g_autofree char *listing = NULL;
  ProjectVersion versions[2];
  gint64 duration;
  int on_disk;
  guint runs = n_runs (), n_old = 0, n_new = 0;

  for (int k = 0; k < 2; k++)
    {
      project_version (&versions[k], file, 21 + k);
      g_assert_true (save_project (&versions[k]));
      versions[k].bytes = read_bytes (path);
    }
  g_assert_false (g_bytes_equal (versions[0].bytes, versions[1].bytes));
  on_disk = 1;
  duration = save_duration (save_project, &versions[1]);

  for (guint i = 0; i < runs; i++)
    {
      int writing = 1 - on_disk, now;

      save_in_child (save_project, &versions[writing],
                     g_test_rand_int_range (0, (gint32) MIN (duration * 6 / 5, G_MAXINT32)));
      now = loaded_project_version (file, versions);
      if (now == on_disk)
        n_old++;
      else
        n_new++;
      on_disk = now;
    }
  g_test_message ("%u kills: %u left the old project, %u the new one", runs, n_old, n_new);

  g_assert_true (save_project (&versions[0]));
  g_assert_cmpint (loaded_project_version (file, versions), ==, 0);
  listing = dir_listing (dir);
  g_assert_cmpstr (listing, ==, "big.espalier");

  for (int k = 0; k < 2; k++)
    {
      g_object_unref (versions[k].project);
      g_object_unref (versions[k].file);
      g_bytes_unref (versions[k].bytes);
    }
  remove_tree (dir);
}

/* ------------------------------------------------------------------------------------ */
/* espalier_save_atomic */

static void
test_save_basics (void)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "notes.txt", NULL);
  g_autofree char *live = g_build_filename (dir, ".notes.txt.ABCDEF", NULL);
  g_autofree char *stale = g_build_filename (dir, ".notes.txt.GHIJKL", NULL);
  g_autofree char *other = g_build_filename (dir, ".other.txt.MNOPQR", NULL);
  g_autofree char *listing = NULL, *text = NULL;
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GError) error = NULL;
  struct stat st;
  int live_fd;

  /* A new file, then one that replaces it keeping its permissions. */
  g_assert_true (espalier_save_atomic (path, "one", 3, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpint (g_chmod (path, 0600), ==, 0);
  g_assert_true (espalier_save_atomic (path, "two!", 4, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (g_file_get_contents (path, &text, NULL, NULL));
  g_assert_cmpstr (text, ==, "two!");
  g_assert_cmpint (g_stat (path, &st), ==, 0);
  g_assert_cmpint (st.st_mode & 0777, ==, 0600);

  /* Cancelled before the rename: the old file stays, no temporary file is left. */
  g_cancellable_cancel (cancellable);
  g_assert_false (espalier_save_atomic (path, "three", 5, cancellable, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&error);
  g_clear_pointer (&text, g_free);
  g_assert_true (g_file_get_contents (path, &text, NULL, NULL));
  g_assert_cmpstr (text, ==, "two!");

  /* Leftovers: a killed writer's (unlocked) temporary file goes at the next save, a live
   * writer's (locked) stays, and so does another target's. */
  g_assert_true (g_file_set_contents (stale, "stale", -1, NULL));
  g_assert_true (g_file_set_contents (other, "other", -1, NULL));
  g_assert_true (g_file_set_contents (live, "live", -1, NULL));
  live_fd = open (live, O_RDONLY);
  g_assert_cmpint (live_fd, >=, 0);
  g_assert_cmpint (flock (live_fd, LOCK_EX), ==, 0);
  g_assert_true (espalier_save_atomic (path, "four", 4, NULL, &error));
  g_assert_no_error (error);
  listing = dir_listing (dir);
  g_assert_cmpstr (listing, ==, ".notes.txt.ABCDEF .other.txt.MNOPQR notes.txt");
  close (live_fd);

  /* A directory that is not there: an error naming the file. */
  {
    g_autofree char *missing = g_build_filename (dir, "no", "such.txt", NULL);

    g_assert_false (espalier_save_atomic (missing, "x", 1, NULL, &error));
    g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
    g_assert_nonnull (strstr (error->message, "such.txt"));
  }
  remove_tree (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/atomic-save/basics", test_save_basics);
  g_test_add_func ("/atomic-save/model-killed", test_model_killed);
  g_test_add_func ("/atomic-save/project-killed", test_project_killed);

  return g_test_run ();
}
