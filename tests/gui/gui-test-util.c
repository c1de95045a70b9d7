/* SPDX-License-Identifier: GPL-3.0-or-later */
/* gui-test-util.c: set-up, main-loop waiting, screenshots, windows and clean-up for the
 * GUI tests. */
#include "config.h"

#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gui-test-util.h"

#include "espalier-generate.h"
#include "espalier-project.h"

static char  *private_cache;   /* made by this process, removed at its exit */
static pid_t  private_cache_owner;

static void
remove_private_cache (void)
{
  g_autofree char *cmd = NULL;

  /* children that inherit the variable leave it to the process that made it */
  if (private_cache == NULL || private_cache_owner != getpid ())
    return;
  cmd = g_strdup_printf ("rm -rf '%s'", private_cache);
  if (system (cmd) != 0)
    g_printerr ("could not remove %s\n", private_cache);
}

void
gui_test_isolate_cache (void)
{
  /* The Train page keeps a checkpoint of an unsaved project's run in the user's cache
   * directory: tests running side by side would find each other's. A test that chose
   * its own XDG_CACHE_HOME keeps it. */
  if (g_getenv ("XDG_CACHE_HOME") != NULL && g_str_has_prefix (g_getenv ("XDG_CACHE_HOME"),
                                                                g_get_tmp_dir ()))
    return;
  private_cache = g_dir_make_tmp ("espalier-gui-test-XXXXXX", NULL);
  g_assert_nonnull (private_cache);
  private_cache_owner = getpid ();
  g_setenv ("XDG_CACHE_HOME", private_cache, TRUE);
  atexit (remove_private_cache);
}

void
gui_test_init (int    *argc,
               char ***argv)
{
  gui_test_isolate_cache ();
  g_setenv ("GSETTINGS_BACKEND", "memory", TRUE);
  g_setenv ("GTK_A11Y", "test", FALSE);
  g_setenv ("GSK_RENDERER", "cairo", FALSE);
  g_setenv ("ESPALIER_NO_CACHE", "1", FALSE);
  gtk_test_init (argc, argv, NULL);
  adw_init ();
}

static gboolean
timeout_cb (gpointer data)
{
  gboolean *done = data;

  *done = TRUE;
  return G_SOURCE_REMOVE;
}

void
gui_test_iterate (guint ms)
{
  gboolean done = FALSE;

  g_timeout_add (ms, timeout_cb, &done);
  while (!done)
    g_main_context_iteration (NULL, TRUE);
  while (g_main_context_pending (NULL))
    g_main_context_iteration (NULL, FALSE);
}

gboolean
gui_test_wait_until (gboolean (*condition) (gpointer data),
                     gpointer  data,
                     guint     timeout_ms)
{
  gint64 end = g_get_monotonic_time () + (gint64) timeout_ms * 1000;

  while (!condition (data))
    {
      if (g_get_monotonic_time () > end)
        return FALSE;
      gui_test_iterate (10);
    }
  return TRUE;
}

char *
gui_test_screenshot (GtkWidget  *widget,
                     const char *name)
{
  const char *dir = g_getenv ("ESPALIER_SCREENSHOT_DIR");
  g_autoptr(GdkPaintable) paintable = NULL;
  g_autoptr(GtkSnapshot) snapshot = NULL;
  g_autoptr(GskRenderNode) node = NULL;
  g_autoptr(GdkTexture) texture = NULL;
  g_autofree char *file = NULL;
  char *path;
  GskRenderer *renderer;
  GtkNative *native;
  int width = gtk_widget_get_width (widget);
  int height = gtk_widget_get_height (widget);

  if (width <= 0 || height <= 0)
    return NULL;
  if (dir == NULL)
    dir = g_get_tmp_dir ();
  g_mkdir_with_parents (dir, 0755);

  paintable = gtk_widget_paintable_new (widget);
  snapshot = gtk_snapshot_new ();
  gdk_paintable_snapshot (paintable, snapshot, width, height);
  node = gtk_snapshot_free_to_node (g_steal_pointer (&snapshot));
  if (node == NULL)
    return NULL;
  native = gtk_widget_get_native (widget);
  renderer = native ? gtk_native_get_renderer (native) : NULL;
  if (renderer == NULL)
    return NULL;
  texture = gsk_renderer_render_texture (renderer, node,
                                         &GRAPHENE_RECT_INIT (0, 0, width, height));
  file = g_strconcat (name, ".png", NULL);
  path = g_build_filename (dir, file, NULL);
  if (!gdk_texture_save_to_png (texture, path))
    g_clear_pointer (&path, g_free);
  return path;
}

void
gui_test_save_screenshot (GtkWidget  *widget,
                          const char *name,
                          guint       settle_ms)
{
  g_autofree char *path = NULL;

  if (settle_ms > 0)
    gui_test_iterate (settle_ms);
  path = gui_test_screenshot (widget, name);
  g_assert_nonnull (path);
  g_test_message ("screenshot: %s", path);
}

GtkWindow *
gui_test_window_new (GtkWidget *child,
                     int        width,
                     int        height)
{
  GtkWindow *window = GTK_WINDOW (gtk_window_new ());

  gtk_window_set_default_size (window, width, height);
  gtk_window_set_child (window, child);
  gtk_window_present (window);
  while (!gtk_widget_get_mapped (GTK_WIDGET (window)))
    g_main_context_iteration (NULL, TRUE);
  gui_test_iterate (50);
  return window;
}

void
gui_test_window_destroy (GtkWindow *window)
{
  gtk_window_destroy (window);
  gui_test_iterate (50);
}

GtkWidget *
gui_test_find_label (GtkWidget  *widget,
                     const char *text)
{
  if (GTK_IS_LABEL (widget) && gtk_widget_get_mapped (widget)
      && strstr (gtk_label_get_label (GTK_LABEL (widget)), text) != NULL)
    return widget;
  for (GtkWidget *child = gtk_widget_get_first_child (widget); child != NULL;
       child = gtk_widget_get_next_sibling (child))
    {
      GtkWidget *found = gui_test_find_label (child, text);

      if (found != NULL)
        return found;
    }
  return NULL;
}

char *
gui_test_make_tmp_dir (const char *tmpl)
{
  g_autoptr(GError) error = NULL;
  char *path = g_dir_make_tmp (tmpl, &error);

  g_assert_no_error (error);
  return path;
}

void
gui_test_remove_dir (const char *path)
{
  g_autoptr(GDir) dir = g_dir_open (path, 0, NULL);
  const char *name;

  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
    {
      g_autofree char *file = g_build_filename (path, name, NULL);

      g_unlink (file);
    }
  g_rmdir (path);
}

void
gui_test_tear_down_page (GtkWindow  *window,
                         gpointer    page,
                         gpointer    project,
                         const char *tmp_dir)
{
  gui_test_window_destroy (window);
  g_assert_finalize_object (page);
  g_assert_finalize_object (project);
  if (tmp_dir != NULL)
    gui_test_remove_dir (tmp_dir);
}

gpointer
gui_test_spiral_project (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) dataset = NULL;
  EspalierProject *project = espalier_project_new ();

  dataset = espalier_generate_from_spec ("spiral:n=300,arms=3,noise=0.2,seed=1", &error);
  g_assert_no_error (error);
  espalier_project_set_dataset (project, dataset, NULL);
  espalier_model_doc_apply_template (espalier_project_get_model_doc (project), "playground",
                                     NULL, &error);
  g_assert_no_error (error);
  return project;
}
