/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-train-device.c: the Train page's device rows on a machine where no CUDA device
 * can be used (this one, CI, a build without CUDA): the GPU row is insensitive and its
 * tooltip says why, the CPU stays chosen, and a "cuda" preference trains on the CPU
 * with the fallback message on the page. With a device present the row lists it
 * instead. A screenshot of the rows goes to the screenshot directory. */
#include "config.h"

#include <string.h>

#include "espalier-device.h"
#include "espalier-generate.h"
#include "espalier-train-page.h"
#include "gui-test-util.h"

#define SPIRAL "spiral:n=300,arms=3,noise=0.2,seed=1"

/* The AdwActionRow titled title under widget, or NULL. */
static GtkWidget *
find_row (GtkWidget  *widget,
          const char *title)
{
  if (ADW_IS_ACTION_ROW (widget)
      && g_strcmp0 (adw_preferences_row_get_title (ADW_PREFERENCES_ROW (widget)), title) == 0)
    return widget;
  for (GtkWidget *c = gtk_widget_get_first_child (widget); c != NULL; c = gtk_widget_get_next_sibling (c))
    {
      GtkWidget *found = find_row (c, title);

      if (found != NULL)
        return found;
    }
  return NULL;
}

/* The first GtkCheckButton under widget. */
static GtkCheckButton *
find_check (GtkWidget *widget)
{
  if (GTK_IS_CHECK_BUTTON (widget))
    return GTK_CHECK_BUTTON (widget);
  for (GtkWidget *c = gtk_widget_get_first_child (widget); c != NULL; c = gtk_widget_get_next_sibling (c))
    {
      GtkCheckButton *found = find_check (c);

      if (found != NULL)
        return found;
    }
  return NULL;
}

static EspalierProject *
spiral_project (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = espalier_generate_from_spec (SPIRAL, &error);
  EspalierProject *project = espalier_project_new ();
  EspalierTrainOptions opts;

  g_assert_no_error (error);
  espalier_project_set_dataset (project, ds, NULL);
  espalier_train_options_init (&opts);
  espalier_model_doc_apply_template (espalier_project_get_model_doc (project), "playground",
                                     &opts, &error);
  g_assert_no_error (error);
  opts.epochs = 2;
  espalier_project_set_train_options (project, &opts);
  return project;
}

/* The page's toasts: in a test's plain window they go to the log (espalier_show_toast). */
static GString *toasts;

static void
on_message (const char *domain, GLogLevelFlags level, const char *message, gpointer data)
{
  g_string_append_printf (toasts, "%s\n", message);
}

/* The fallback on the page's message line, or as a toast (a quick run may replace the
 * line with its result before the main loop gets to look). */
static gboolean
fallback_shown (gpointer page)
{
  return gui_test_find_label (page, "Running on the CPU instead") != NULL
         || strstr (toasts->str, "Running on the CPU instead") != NULL;
}

static gboolean
not_training (gpointer page)
{
  return !espalier_train_page_get_training (page);
}

static void
test_no_device (void)
{
  g_autoptr(GSettings) settings = g_settings_new ("io.github.espalier.Espalier");
  EspalierProject *project = spiral_project ();
  EspalierTrainPage *page = ESPALIER_TRAIN_PAGE (g_object_ref_sink (espalier_train_page_new ()));
  GtkWindow *window;
  GtkWidget *gpu_row, *cpu_row;
  g_autofree char *reason = NULL;
  g_autofree char *tooltip = NULL;

  g_settings_set_string (settings, "device", "cpu");
  espalier_train_page_set_project (page, project);
  window = gui_test_window_new (GTK_WIDGET (page), 1500, 950);
  gui_test_iterate (100);
  gpu_row = find_row (GTK_WIDGET (page), "GPU (CUDA)");
  cpu_row = find_row (GTK_WIDGET (page), "CPU");
  g_assert_nonnull (gpu_row);
  g_assert_nonnull (cpu_row);
  gui_test_save_screenshot (gtk_widget_get_parent (gpu_row), "train-device-rows", 100);

  if (espalier_cuda_device_count () > 0)
    {
      /* a GPU machine: the row lists the devices and can be chosen */
      g_assert_true (gtk_widget_get_sensitive (gpu_row));
      g_assert_cmpstr (adw_action_row_get_subtitle (ADW_ACTION_ROW (gpu_row)), !=, "No CUDA device");
      g_test_skip ("a CUDA device is present: no fallback");
      gui_test_tear_down_page (window, page, project, NULL);
      return;
    }

  reason = espalier_cuda_unavailable_reason ();
  g_assert_nonnull (reason);
  tooltip = g_strdup_printf ("No CUDA device can be used: %s", reason);
  g_assert_false (gtk_widget_get_sensitive (gpu_row));
  g_assert_cmpstr (gtk_widget_get_tooltip_text (gpu_row), ==, tooltip);
  g_assert_cmpstr (adw_action_row_get_subtitle (ADW_ACTION_ROW (gpu_row)), ==, "No CUDA device");
  g_assert_true (gtk_check_button_get_active (find_check (cpu_row)));
  g_assert_false (gtk_check_button_get_active (find_check (gpu_row)));

  /* a "cuda" preference (another machine's) keeps the CPU chosen on the page... */
  g_settings_set_string (settings, "device", "cuda");
  gui_test_iterate (50);
  g_assert_true (gtk_check_button_get_active (find_check (cpu_row)));
  g_assert_false (gtk_widget_get_sensitive (gpu_row));
  /* ...and a run on it trains on the CPU and says why */
  toasts = g_string_new (NULL);
  g_log_set_handler ("Espalier", G_LOG_LEVEL_MESSAGE, on_message, NULL);
  espalier_train_page_start (page);
  g_assert_true (gui_test_wait_until (fallback_shown, page, 30000));
  g_assert_true (gui_test_wait_until (not_training, page, 60000));
  gui_test_save_screenshot (GTK_WIDGET (page), "train-device-fallback", 100);
  g_settings_set_string (settings, "device", "cpu");
  g_string_free (g_steal_pointer (&toasts), TRUE);

  gui_test_tear_down_page (window, page, project, NULL);
}

int
main (int argc, char **argv)
{
  gui_test_init (&argc, &argv);
  g_test_add_func ("/train-device/no-device", test_no_device);
  return g_test_run ();
}
