/* SPDX-License-Identifier: GPL-3.0-or-later */
/* gui-test-util.h: what the GUI tests share: GTK and libadwaita set up for a test
 * (resources, a memory GSettings backend), waiting for the main loop, screenshots of a
 * widget saved as PNG into ESPALIER_SCREENSHOT_DIR (meson-logs/screenshots), windows,
 * finding a label, and a temporary directory's removal. */
#pragma once

#include <adwaita.h>

G_BEGIN_DECLS

/* g_test_init, adw_init and the app's resources; call first in main. */
void     gui_test_init        (int *argc, char ***argv);
/* A private XDG_CACHE_HOME for this process, removed at its exit (gui_test_init does
 * it): the Train page's checkpoints of unsaved projects live there. */
void     gui_test_isolate_cache (void);
/* Run the main loop until nothing is pending and at least `ms` milliseconds passed. */
void     gui_test_iterate     (guint ms);
/* Run the main loop until condition(data) is TRUE or timeout_ms passes; returns it. */
gboolean gui_test_wait_until  (gboolean (*condition) (gpointer data),
                               gpointer  data,
                               guint     timeout_ms);
/* Render widget (which must be mapped) with its own size into NAME.png in the
 * screenshot directory; returns the path (g_free) or NULL when it could not. */
char    *gui_test_screenshot  (GtkWidget  *widget,
                               const char *name);
/* The same after settle_ms of main loop (animations), failing the test when no
 * screenshot could be taken; the path goes to the test log. */
void     gui_test_save_screenshot (GtkWidget  *widget,
                                   const char *name,
                                   guint       settle_ms);
/* A window of width x height holding child, presented and mapped. */
GtkWindow *gui_test_window_new (GtkWidget *child,
                                int        width,
                                int        height);
/* Destroy window and run the main loop a little, so that what it held can be checked
 * with g_assert_finalize_object. */
void     gui_test_window_destroy (GtkWindow *window);
/* A mapped GtkLabel in widget or under it whose text contains text, or NULL. */
GtkWidget *gui_test_find_label (GtkWidget  *widget,
                                const char *text);
/* A new directory from tmpl ("name-XXXXXX") in the temporary directory; fails the test
 * when it cannot be made. Free with g_free after gui_test_remove_dir. */
char    *gui_test_make_tmp_dir (const char *tmpl);
/* Delete the files in directory path (not below it) and the directory. */
void     gui_test_remove_dir  (const char *path);
/* The end of a page test: destroy window, check that page and project (the fixture's
 * references) are finalized with it, and remove tmp_dir (may be NULL). */
void     gui_test_tear_down_page (GtkWindow  *window,
                                  gpointer    page,
                                  gpointer    project,
                                  const char *tmp_dir);

/* A project on a 300-row spiral (3 arms) with the playground model (Dense 8, Tanh,
 * Dense 8, Tanh, Dense 3, Softmax), untrained. (transfer full; an EspalierProject) */
gpointer    gui_test_spiral_project (void);

G_END_DECLS
