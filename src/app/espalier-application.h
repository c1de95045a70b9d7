/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-application.h: the application object: app-wide actions (quit, about,
 * preferences), the style (light, dark, system) and the settings. */
#pragma once

#include <adwaita.h>

G_BEGIN_DECLS

#define ESPALIER_TYPE_APPLICATION (espalier_application_get_type ())
G_DECLARE_FINAL_TYPE (EspalierApplication, espalier_application, ESPALIER, APPLICATION, AdwApplication)

EspalierApplication *espalier_application_new          (void);
/* The app's settings, or NULL when the schema is neither installed nor in the build
 * tree (the app then runs on defaults). (transfer none) */
GSettings           *espalier_application_get_settings (EspalierApplication *self);
/* The settings of the default application, or NULL (widget tests). (transfer none) */
GSettings           *espalier_settings_get_default     (void);

G_END_DECLS
