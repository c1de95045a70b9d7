/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-preferences-window.h: the Preferences window: compute device, threads,
 * memory limit and style, kept in GSettings. */
#pragma once

#include <adwaita.h>

G_BEGIN_DECLS

#define ESPALIER_TYPE_PREFERENCES_WINDOW (espalier_preferences_window_get_type ())
G_DECLARE_FINAL_TYPE (EspalierPreferencesWindow, espalier_preferences_window, ESPALIER, PREFERENCES_WINDOW, AdwPreferencesWindow)

/* settings may be NULL (no schema): the window then explains that nothing is kept. */
GtkWidget *espalier_preferences_window_new (GSettings *settings);

G_END_DECLS
