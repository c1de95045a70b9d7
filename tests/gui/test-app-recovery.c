/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-app-recovery.c: the application survives what goes wrong around it, in a real
 * window: a training run over the memory limit or over the memory the machine has ends
 * with a message, the window stays usable and the project's model is as it was; corrupt
 * settings (a hand-edited keyfile read through GSETTINGS_BACKEND=keyfile, in a child
 * process) are ignored; a project whose dataset file is gone asks where it went (Locate…
 * or Open Without Data) and opens intact; a save into a directory that cannot be written
 * says which directory, keeps the project unsaved and offers Save As. */
#include "config.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "gui-test-util.h"

#include "espalier-application.h"
#include "espalier-project.h"
#include "espalier-templates.h"
#include "espalier-train-page.h"
#include "espalier-window.h"

typedef struct {
  EspalierApplication *app;
  EspalierWindow      *window;
  char                *tmpdir;
} Fixture;

/* Set-up like gui_test_init, with the settings from a keyfile when the parent test
 * names its directory (ESPALIER_TEST_KEYFILE_HOME): the backend is chosen once per
 * process, before anything asks for settings. */
static void
recovery_test_init (int    *argc,
                    char ***argv)
{
  const char *home = g_getenv ("ESPALIER_TEST_KEYFILE_HOME");

  gui_test_isolate_cache ();
  if (home != NULL)
    {
      g_setenv ("XDG_CONFIG_HOME", home, TRUE);
      g_setenv ("GSETTINGS_BACKEND", "keyfile", TRUE);
    }
  else
    g_setenv ("GSETTINGS_BACKEND", "memory", TRUE);
  g_setenv ("GTK_A11Y", "test", FALSE);
  g_setenv ("GSK_RENDERER", "cairo", FALSE);
  g_setenv ("ESPALIER_NO_CACHE", "1", FALSE);
  /* The default project on the spiral set, not 70000 images. */
  g_setenv ("ESPALIER_FASHION_MNIST_DIR", "/nonexistent", TRUE);
  gtk_test_init (argc, argv, NULL);
  adw_init ();
}

static void
fixture_set_up (Fixture       *f,
                gconstpointer  data)
{
  g_autoptr(GError) error = NULL;

  f->tmpdir = g_dir_make_tmp ("espalier-recovery-XXXXXX", &error);
  g_assert_no_error (error);
  f->app = espalier_application_new ();
  g_application_set_flags (G_APPLICATION (f->app), G_APPLICATION_NON_UNIQUE);
  g_application_register (G_APPLICATION (f->app), NULL, &error);
  g_assert_no_error (error);
  f->window = espalier_window_new (ADW_APPLICATION (f->app));
  gtk_window_set_default_size (GTK_WINDOW (f->window), 1400, 900);
  gtk_window_present (GTK_WINDOW (f->window));
  while (!gtk_widget_get_mapped (GTK_WIDGET (f->window)))
    g_main_context_iteration (NULL, TRUE);
}

static void
fixture_tear_down (Fixture       *f,
                   gconstpointer  data)
{
  GList *toplevels = gtk_window_list_toplevels ();

  /* Dialogs first (they are transient for the window). */
  for (GList *l = toplevels; l; l = l->next)
    if (l->data != (gpointer) f->window)
      gtk_window_destroy (l->data);
  g_list_free (toplevels);
  espalier_project_set_modified (espalier_window_get_project (f->window), FALSE);
  g_object_ref (f->window);
  gtk_window_destroy (GTK_WINDOW (f->window));
  gui_test_iterate (50);
  g_assert_finalize_object (f->window);
  g_application_quit (G_APPLICATION (f->app));
  g_object_unref (f->app);
  g_chmod (f->tmpdir, 0755);
  gui_test_remove_dir (f->tmpdir);
  g_free (f->tmpdir);
}

/* Dialogs ------------------------------------------------------------------------ */

/* A visible toplevel of type (an AdwMessageDialog: with that heading, NULL any). */
static GtkWindow *
find_toplevel (GType       type,
               const char *heading)
{
  GList *toplevels = gtk_window_list_toplevels ();
  GtkWindow *found = NULL;

  for (GList *l = toplevels; l != NULL && found == NULL; l = l->next)
    if (G_TYPE_CHECK_INSTANCE_TYPE (l->data, type) && gtk_widget_get_visible (l->data)
        && (heading == NULL
            || g_strcmp0 (adw_message_dialog_get_heading (l->data), heading) == 0))
      found = l->data;
  g_list_free (toplevels);
  return found;
}

typedef struct {
  GType       type;
  const char *heading;
} Wanted;

static gboolean
toplevel_shown (gpointer data)
{
  Wanted *w = data;

  return find_toplevel (w->type, w->heading) != NULL;
}

/* Wait for a message dialog with heading; fails the test when none comes. */
static AdwMessageDialog *
wait_message (const char *heading)
{
  Wanted w = { ADW_TYPE_MESSAGE_DIALOG, heading };

  if (!gui_test_wait_until (toplevel_shown, &w, 20000))
    {
      /* What is there instead, for the log. */
      GList *toplevels = gtk_window_list_toplevels ();

      for (GList *l = toplevels; l != NULL; l = l->next)
        g_test_message ("toplevel %s, visible %d, %s", G_OBJECT_TYPE_NAME (l->data),
                        gtk_widget_get_visible (l->data),
                        ADW_IS_MESSAGE_DIALOG (l->data)
                          ? adw_message_dialog_get_heading (l->data)
                          : gtk_window_get_title (l->data));
      g_list_free (toplevels);
      g_error ("no dialog “%s” came", heading);
    }
  return ADW_MESSAGE_DIALOG (find_toplevel (w.type, heading));
}

static GtkWidget *
find_button (GtkWidget  *widget,
             const char *label)
{
  if (GTK_IS_BUTTON (widget) && g_strcmp0 (gtk_button_get_label (GTK_BUTTON (widget)), label) == 0)
    return widget;
  for (GtkWidget *c = gtk_widget_get_first_child (widget); c; c = gtk_widget_get_next_sibling (c))
    {
      GtkWidget *found = find_button (c, label);

      if (found != NULL)
        return found;
    }
  return NULL;
}

/* Click the dialog's button labelled label (with its mnemonic underscore), as a user. */
static void
click (AdwMessageDialog *dialog,
       const char       *label)
{
  GtkWidget *button = find_button (GTK_WIDGET (dialog), label);

  g_assert_nonnull (button);
  g_signal_emit_by_name (button, "clicked");
  gui_test_iterate (50);
}

static void
close_message (AdwMessageDialog *dialog)
{
  gtk_window_destroy (GTK_WINDOW (dialog));
  gui_test_iterate (50);
}

/* The native file chooser's dialog (the portal is not there under Xvfb): shown, then
 * cancelled. */
static void
cancel_file_chooser (const char *screenshot)
{
  Wanted w = { GTK_TYPE_FILE_CHOOSER_DIALOG, NULL };
  GtkWindow *chooser;

  g_assert_true (gui_test_wait_until (toplevel_shown, &w, 20000));
  chooser = find_toplevel (w.type, NULL);
  if (screenshot != NULL)
    gui_test_save_screenshot (GTK_WIDGET (chooser), screenshot, 300);
  gtk_dialog_response (GTK_DIALOG (chooser), GTK_RESPONSE_CANCEL);
  gui_test_iterate (100);
}

/* Out of memory ------------------------------------------------------------------- */

static gboolean
not_training (gpointer data)
{
  EspalierTrainPage *page = data;

  return !espalier_train_page_get_training (page);
}

/* Train the window's project once, to the end; whether it got a model. */
static void
train_and_wait (Fixture *f)
{
  EspalierTrainPage *page = ESPALIER_TRAIN_PAGE (espalier_window_get_page_widget (f->window, "train"));

  gtk_widget_activate_action (GTK_WIDGET (f->window), "win.train", NULL);
  g_assert_true (espalier_train_page_get_training (page));
  g_assert_true (gui_test_wait_until (not_training, page, 120000));
  gui_test_iterate (100);
}

/* A failed run: the message dialog and the page's message both say why. */
static void
assert_failed_run (Fixture    *f,
                   const char *reason,
                   const char *screenshot)
{
  AdwMessageDialog *dialog = wait_message ("Training Failed");

  g_test_message ("dialog: %s", adw_message_dialog_get_body (dialog));
  g_assert_nonnull (strstr (adw_message_dialog_get_body (dialog), reason));
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->window), "Training failed"));
  gui_test_save_screenshot (GTK_WIDGET (f->window), screenshot, 300);
  close_message (dialog);
}

static void
test_out_of_memory (Fixture       *f,
                    gconstpointer  data)
{
  g_autoptr(EspalierProject) project = gui_test_spiral_project ();
  EspalierModelDoc *doc = espalier_project_get_model_doc (project);
  GSettings *settings = espalier_settings_get_default ();
  g_autoptr(GError) error = NULL;
  g_autofree float *weights = NULL;
  EspalierTrainOptions opts;
  EsModel *model;
  gsize n;

  g_assert_nonnull (settings);
  opts = *espalier_project_get_train_options (project);
  opts.epochs = 1;
  opts.threads = 1;
  espalier_project_set_train_options (project, &opts);
  espalier_window_set_project (f->window, project);

  /* A trained model to keep. */
  train_and_wait (f);
  model = espalier_project_get_model (project);
  g_assert_nonnull (model);
  n = (gsize) es_model_n_params (model);
  weights = g_memdup2 (es_model_params (model), n * sizeof (float));

  /* Over the memory limit (Preferences): 1 MiB, and a model of 4 MB. */
  g_assert_true (espalier_model_doc_set_spec (doc, "dense:1024,relu,dense:1024,relu,dense:3,softmax",
                                              &error));
  g_assert_no_error (error);
  g_settings_set_uint (settings, "memory-limit", 1);
  train_and_wait (f);
  assert_failed_run (f, "memory", "recovery-memory-limit");
  g_assert_true (espalier_project_get_model (project) == model);
  g_assert_cmpmem (es_model_params (model), n * sizeof (float), weights, n * sizeof (float));
  g_settings_reset (settings, "memory-limit");

  /* Over what the machine has: refused before anything is allocated. */
  g_setenv ("ESPALIER_MEMORY_AVAILABLE", "100000", TRUE);
  train_and_wait (f);
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");
  assert_failed_run (f, "available", "recovery-memory-available");
  g_assert_true (espalier_project_get_model (project) == model);
  g_assert_cmpmem (es_model_params (model), n * sizeof (float), weights, n * sizeof (float));

  /* The window goes on: back to the small model, and it trains. */
  g_assert_true (espalier_model_doc_undo (doc));
  train_and_wait (f);
  g_assert_null (find_toplevel (ADW_TYPE_MESSAGE_DIALOG, "Training Failed"));
  g_assert_nonnull (espalier_project_get_model (project));
  g_assert_true (espalier_project_get_model (project) != model);
}

/* Corrupt settings ------------------------------------------------------------------ */

/* A keyfile (GSETTINGS_BACKEND=keyfile) with values of the wrong type, out of range,
 * outside the choices, or naming files that are not there; profiling=true shows it was
 * read. recent names (among junk) two files that exist, one of them not UTF-8. */
static char *
corrupt_keyfile (const char *ok_uri,
                 const char *latin1_uri)
{
  return g_strdup_printf (
      "[io/github/espalier/Espalier]\n"
      "window-width=0\n"
      "window-height=2147483647\n"
      "window-maximized='yes'\n"
      "memory-limit='lots'\n"
      "threads=100000\n"
      "device='tpu'\n"
      "color-scheme='purple'\n"
      "profiling=true\n"
      "recent-projects=['not a uri', '', 'file:///nonexistent/x.espalier', "
      "'http://example.invalid/p.espalier', 'file:///', '%s', '%s']\n"
      "no-such-key=42\n",
      latin1_uri, ok_uri);
}

/* Items of the window's recent section that open a project. */
static guint
count_recent (EspalierWindow *window)
{
  GMenuModel *menu = G_MENU_MODEL (gtk_widget_get_template_child (GTK_WIDGET (window),
                                                                  ESPALIER_TYPE_WINDOW,
                                                                  "recent_section"));
  guint n = 0;

  g_assert_nonnull (menu);
  for (int i = 0; i < g_menu_model_get_n_items (menu); i++)
    {
      g_autofree char *action = NULL, *label = NULL;

      if (g_menu_model_get_item_attribute (menu, i, G_MENU_ATTRIBUTE_ACTION, "s", &action)
          && g_strcmp0 (action, "win.open-recent") == 0)
        {
          g_assert_true (g_menu_model_get_item_attribute (menu, i, G_MENU_ATTRIBUTE_LABEL, "s",
                                                          &label));
          g_test_message ("recent: %s", label);
          n++;
        }
    }
  return n;
}

static void
corrupt_settings_child (gboolean garbage)
{
  g_autoptr(EspalierApplication) app = espalier_application_new ();
  g_autoptr(GError) error = NULL;
  EspalierWindow *window;
  GSettings *settings;
  GtkWidget *prefs = NULL;
  int width = 0, height = 0;

  g_application_set_flags (G_APPLICATION (app), G_APPLICATION_NON_UNIQUE);
  g_application_register (G_APPLICATION (app), NULL, &error);
  g_assert_no_error (error);
  settings = espalier_settings_get_default ();
  g_assert_nonnull (settings);
  /* The keyfile was read (or, garbage, ignored whole), and nothing bad in it took. */
  g_assert_cmpint (g_settings_get_boolean (settings, "profiling"), ==, !garbage);
  g_assert_cmpuint (g_settings_get_uint (settings, "memory-limit"), ==, 0);
  g_assert_cmpuint (g_settings_get_uint (settings, "threads"), ==, 0);
  g_assert_cmpint (g_settings_get_int (settings, "window-height"), ==, 800);
  g_assert_false (g_settings_get_boolean (settings, "window-maximized"));

  /* The window takes sizes it can have. */
  window = espalier_window_new (ADW_APPLICATION (app));
  gtk_window_get_default_size (GTK_WINDOW (window), &width, &height);
  g_assert_cmpint (width, ==, 1280);
  g_assert_cmpint (height, ==, 800);
  gtk_window_present (GTK_WINDOW (window));
  while (!gtk_widget_get_mapped (GTK_WIDGET (window)))
    g_main_context_iteration (NULL, TRUE);

  /* The recent menu: only the files that are there, with names it can show. */
  g_assert_cmpuint (count_recent (window), ==, garbage ? 0 : 2);

  if (!garbage)
    {
      /* Preferences open on the same settings. */
      g_action_group_activate_action (G_ACTION_GROUP (app), "preferences", NULL);
      gui_test_iterate (300);
      {
        GList *toplevels = gtk_window_list_toplevels ();

        for (GList *l = toplevels; l; l = l->next)
          if (ADW_IS_PREFERENCES_WINDOW (l->data))
            prefs = l->data;
        g_list_free (toplevels);
      }
      g_assert_nonnull (prefs);
      gui_test_save_screenshot (prefs, "recovery-settings-corrupt-prefs", 300);
      gui_test_save_screenshot (GTK_WIDGET (window), "recovery-settings-corrupt", 100);
      gtk_window_destroy (GTK_WINDOW (prefs));
    }
  gtk_window_destroy (GTK_WINDOW (window));
  gui_test_iterate (50);
  g_application_quit (G_APPLICATION (app));
}

static void
test_corrupt_settings (gconstpointer data)
{
  gboolean garbage = GPOINTER_TO_INT (data);
  g_autofree char *home = NULL, *dir = NULL, *keyfile = NULL, *ok = NULL, *latin1 = NULL;
  g_autofree char *ok_uri = NULL, *latin1_uri = NULL, *text = NULL;
  g_autoptr(GError) error = NULL;

  if (g_test_subprocess ())
    {
      corrupt_settings_child (garbage);
      return;
    }
  home = gui_test_make_tmp_dir ("espalier-keyfile-XXXXXX");
  dir = g_build_filename (home, "glib-2.0", "settings", NULL);
  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  keyfile = g_build_filename (dir, "keyfile", NULL);
  ok = g_build_filename (home, "ok.espalier", NULL);
  latin1 = g_build_filename (home, "caf\xe9.espalier", NULL);
  g_assert_true (g_file_set_contents (ok, "{}", -1, NULL));
  g_assert_true (g_file_set_contents (latin1, "{}", -1, NULL));
  ok_uri = g_filename_to_uri (ok, NULL, &error);
  g_assert_no_error (error);
  latin1_uri = g_filename_to_uri (latin1, NULL, &error);
  g_assert_no_error (error);
  if (garbage)
    text = g_strdup ("\x01\x02[io/github/espalier/Espalier\nwindow-width=\xff\xfe\n=\n[[\n");
  else
    text = corrupt_keyfile (ok_uri, latin1_uri);
  g_assert_true (g_file_set_contents (keyfile, text, -1, NULL));

  g_setenv ("ESPALIER_TEST_KEYFILE_HOME", home, TRUE);
  /* A guard against a hang: a loaded machine under AddressSanitizer takes minutes. */
  g_test_trap_subprocess (NULL, 400 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_INHERIT_STDERR);
  g_unsetenv ("ESPALIER_TEST_KEYFILE_HOME");
  g_unlink (keyfile);
  g_rmdir (dir);
  {
    g_autofree char *glib_dir = g_build_filename (home, "glib-2.0", NULL);

    g_rmdir (glib_dir);
  }
  g_unlink (ok);
  g_unlink (latin1);
  g_rmdir (home);
  g_test_trap_assert_passed ();
}

/* A missing dataset ----------------------------------------------------------------- */

static char *
write_csv (const char *dir,
           const char *name,
           guint       features)
{
  g_autoptr(GString) s = g_string_new (NULL);
  char *path = g_build_filename (dir, name, NULL);

  for (guint k = 0; k < features; k++)
    g_string_append_printf (s, "x%u,", k);
  g_string_append (s, "label\n");
  for (guint r = 0; r < 40; r++)
    {
      for (guint k = 0; k < features; k++)
        g_string_append_printf (s, "%u.%u,", (r * 7 + k * 3) % 11, r % 10);
      g_string_append (s, r % 2 ? "yes\n" : "no\n");
    }
  g_assert_true (g_file_set_contents (path, s->str, -1, NULL));
  return path;
}

static gboolean
project_replaced (gpointer data)
{
  gpointer *args = data;

  return espalier_window_get_project (args[0]) != args[1];
}

static gboolean
has_dataset (gpointer data)
{
  return espalier_project_get_dataset (data) != NULL;
}

/* Open path in the window and wait for the new project. */
static EspalierProject *
open_project (Fixture    *f,
              const char *path)
{
  g_autoptr(GFile) file = g_file_new_for_path (path);
  gpointer args[2] = { f->window, espalier_window_get_project (f->window) };

  espalier_project_set_modified (args[1], FALSE);
  espalier_window_open_file (f->window, file);
  g_assert_true (gui_test_wait_until (project_replaced, args, 20000));
  return espalier_window_get_project (f->window);
}

static void
test_missing_dataset (Fixture       *f,
                      gconstpointer  data)
{
  g_autofree char *csv = write_csv (f->tmpdir, "table.csv", 3);
  g_autofree char *wide = NULL, *moved = NULL, *spec = NULL;
  g_autofree char *path = g_build_filename (f->tmpdir, "p.espalier", NULL);
  g_autoptr(GFile) file = g_file_new_for_path (path);
  g_autoptr(EspalierProject) project = espalier_project_new ();
  g_autoptr(EspalierDataset) dataset = NULL;
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions options;
  EspalierProject *opened;
  AdwMessageDialog *dialog;

  espalier_load_options_init (&options);
  options.use_cache = FALSE;
  dataset = espalier_dataset_load (csv, &options, NULL, &error);
  g_assert_no_error (error);
  espalier_project_set_dataset (project, dataset, &options);
  g_assert_true (espalier_model_doc_apply_template (espalier_project_get_model_doc (project),
                                                    "playground", NULL, &error));
  g_assert_no_error (error);
  spec = espalier_model_doc_to_spec (espalier_project_get_model_doc (project));
  g_assert_true (espalier_project_save (project, file, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpint (g_unlink (csv), ==, 0);

  /* Opened: the project is there, and the window asks where the file went. */
  opened = open_project (f, path);
  dialog = wait_message ("Where Is the Dataset?");
  g_assert_nonnull (strstr (adw_message_dialog_get_body (dialog), csv));
  gui_test_save_screenshot (GTK_WIDGET (dialog), "recovery-missing-dataset", 300);
  {
    g_autofree char *s = espalier_model_doc_to_spec (espalier_project_get_model_doc (opened));

    g_assert_cmpstr (s, ==, spec);
  }
  g_assert_null (espalier_project_get_dataset (opened));

  /* Locate…: the file chooser; cancelled, the question comes back. */
  click (dialog, "_Locate…");
  cancel_file_chooser ("recovery-locate-chooser");
  dialog = wait_message ("Where Is the Dataset?");

  /* A file of another shape is refused, and asked again. */
  close_message (dialog);
  wide = write_csv (f->tmpdir, "wide.csv", 5);
  gtk_widget_activate_action (GTK_WIDGET (f->window), "win.locate-dataset", "s", wide);
  dialog = wait_message ("Where Is the Dataset?");
  g_test_message ("refused: %s", adw_message_dialog_get_body (dialog));
  g_assert_nonnull (strstr (adw_message_dialog_get_body (dialog), "cannot stand in"));
  g_assert_null (espalier_project_get_dataset (opened));
  g_assert_cmpstr (espalier_project_get_dataset_source (opened), ==, csv);
  close_message (dialog);

  /* The right shape: the project points at it, loaded, to be saved. */
  moved = write_csv (f->tmpdir, "moved.csv", 3);
  gtk_widget_activate_action (GTK_WIDGET (f->window), "win.locate-dataset", "s", moved);
  g_assert_true (gui_test_wait_until (has_dataset, opened, 20000));
  g_assert_cmpstr (espalier_project_get_dataset_source (opened), ==, moved);
  g_assert_true (espalier_project_get_modified (opened));
  {
    g_autofree char *s = espalier_model_doc_to_spec (espalier_project_get_model_doc (opened));

    g_assert_cmpstr (s, ==, spec);
  }
  gui_test_save_screenshot (GTK_WIDGET (f->window), "recovery-dataset-located", 300);

  /* Open Without Data: the project as saved, no dataset, no question left. */
  opened = open_project (f, path);
  dialog = wait_message ("Where Is the Dataset?");
  click (dialog, "Open _Without Data");
  g_assert_null (find_toplevel (ADW_TYPE_MESSAGE_DIALOG, "Where Is the Dataset?"));
  g_assert_null (espalier_project_get_dataset (opened));
  g_assert_cmpstr (espalier_project_get_dataset_source (opened), ==, csv);
  g_assert_false (espalier_project_get_modified (opened));
  gui_test_save_screenshot (GTK_WIDGET (f->window), "recovery-open-without-data", 300);
}

/* A read-only directory -------------------------------------------------------------- */

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

static gboolean
saved (gpointer data)
{
  return !espalier_project_get_modified (data);
}

static void
test_read_only_dir (Fixture       *f,
                    gconstpointer  data)
{
  EspalierProject *project = espalier_window_get_project (f->window);
  g_autofree char *path = g_build_filename (f->tmpdir, "p.espalier", NULL);
  g_autofree char *target = NULL, *dir = NULL, *before = NULL, *after = NULL;
  g_autoptr(GFile) file = g_file_new_for_path (path);
  g_autoptr(GFile) target_file = NULL;
  EspalierTrainOptions opts;
  AdwMessageDialog *dialog;
  g_autofree char *body = NULL;

  espalier_project_set_modified (project, TRUE);
  espalier_window_save_to (f->window, file);
  g_assert_true (gui_test_wait_until (saved, project, 20000));
  g_assert_true (g_file_get_contents (path, &before, NULL, NULL));

  g_assert_cmpint (g_chmod (f->tmpdir, 0555), ==, 0);
  if (!can_create_in (f->tmpdir))
    {
      dir = g_strdup (f->tmpdir);
      target = g_strdup (path);
    }
  else if (g_file_test ("/sys/kernel", G_FILE_TEST_IS_DIR) && !can_create_in ("/sys"))
    {
      /* Root writes whatever the mode says; sysfs refuses new files even to root. */
      g_test_message ("root ignores the directory's mode: saving into /sys instead");
      dir = g_strdup ("/sys");
      target = g_strdup ("/sys/espalier-recovery-test.espalier");
    }
  else
    {
      g_test_skip ("the directory's mode does not stop this user (root) from writing in "
                   "it, and no directory that refuses root is at hand");
      return;
    }

  opts = *espalier_project_get_train_options (project);
  opts.epochs++;
  espalier_project_set_train_options (project, &opts);
  target_file = g_file_new_for_path (target);
  espalier_window_save_to (f->window, target_file);

  /* The message names the directory and offers Save As; nothing is lost. */
  dialog = wait_message ("The Project Could Not Be Saved");
  body = g_strdup (adw_message_dialog_get_body (dialog));
  g_test_message ("dialog: %s", body);
  g_assert_nonnull (strstr (body, dir));
  g_assert_nonnull (strstr (body, "cannot be written"));
  g_assert_true (espalier_project_get_modified (project));
  g_assert_false (g_file_test (target, G_FILE_TEST_EXISTS) && g_strcmp0 (target, path) != 0);
  g_assert_true (g_file_get_contents (path, &after, NULL, NULL));
  g_assert_cmpstr (after, ==, before);
  gui_test_save_screenshot (GTK_WIDGET (dialog), "recovery-read-only-dir", 300);
  click (dialog, "Save _As…");
  cancel_file_chooser ("recovery-save-as-chooser");
  g_assert_true (espalier_project_get_modified (project));
  g_chmod (f->tmpdir, 0755);
}

int
main (int   argc,
      char *argv[])
{
  recovery_test_init (&argc, &argv);

  g_test_add ("/app-recovery/out-of-memory", Fixture, NULL, fixture_set_up, test_out_of_memory, fixture_tear_down);
  g_test_add_data_func ("/app-recovery/corrupt-settings/values", GINT_TO_POINTER (FALSE), test_corrupt_settings);
  g_test_add_data_func ("/app-recovery/corrupt-settings/garbage", GINT_TO_POINTER (TRUE), test_corrupt_settings);
  g_test_add ("/app-recovery/missing-dataset", Fixture, NULL, fixture_set_up, test_missing_dataset, fixture_tear_down);
  g_test_add ("/app-recovery/read-only-dir", Fixture, NULL, fixture_set_up, test_read_only_dir, fixture_tear_down);
  return g_test_run ();
}
