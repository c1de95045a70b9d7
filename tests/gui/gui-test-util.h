/* SPDX-License-Identifier: GPL-3.0-or-later */
/* gui-test-util.h: what the GUI tests share: GTK and libadwaita set up for a test
 * (resources, a memory GSettings backend), waiting for the main loop, and screenshots of
 * a widget saved as PNG into ESPALIER_SCREENSHOT_DIR (meson-logs/screenshots). */
#pragma once

#include <adwaita.h>

G_BEGIN_DECLS

/* g_test_init, adw_init and the app's resources; call first in main. */
void     gui_test_init        (int *argc, char ***argv);
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
/* A window of width x height holding child, presented and mapped. */
GtkWindow *gui_test_window_new (GtkWidget *child,
                                int        width,
                                int        height);

G_END_DECLS
