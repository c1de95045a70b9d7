/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-window.h: the main window: a header bar with the view switcher (Data, Model,
 * Train, Profile, Optimize, Export), the project's title and its menu; the pages; the
 * job bar (progress, Cancel) and toasts. It owns the current EspalierProject and hands
 * it to every page. */
#pragma once

#include <adwaita.h>

#include "espalier-job.h"
#include "espalier-project.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_WINDOW (espalier_window_get_type ())
G_DECLARE_FINAL_TYPE (EspalierWindow, espalier_window, ESPALIER, WINDOW, AdwApplicationWindow)

EspalierWindow  *espalier_window_new          (AdwApplication  *application);
EspalierProject *espalier_window_get_project  (EspalierWindow  *self);
/* Replace the project (New, Open); pages follow. */
void             espalier_window_set_project  (EspalierWindow  *self,
                                               EspalierProject *project);
/* Show page "data", "model", "train", "profile", "optimize" or "export". */
void             espalier_window_show_page    (EspalierWindow  *self,
                                               const char      *name);
const char      *espalier_window_get_page     (EspalierWindow  *self);
/* The page widget named like espalier_window_show_page's names. (transfer none) */
GtkWidget       *espalier_window_get_page_widget (EspalierWindow *self,
                                                 const char     *name);
/* The job bar and toasts (see espalier-job.h). */
void             espalier_window_add_job      (EspalierWindow  *self,
                                               EspalierJob     *job);
void             espalier_window_add_toast    (EspalierWindow  *self,
                                               const char      *message);
/* Open a .espalier file (on a worker); asks first when the current project has unsaved
 * changes. Errors are shown in the window. */
void             espalier_window_open_file    (EspalierWindow  *self,
                                               GFile           *file);
/* Save the project to file on a worker (a job); file NULL: the project's own file. */
void             espalier_window_save_to      (EspalierWindow  *self,
                                               GFile           *file);
/* Load the project's dataset source on a worker (a job with progress); on success the
 * project gets the dataset. On failure the previous dataset stays, and the error is
 * shown. */
void             espalier_window_load_dataset (EspalierWindow             *self,
                                               const char                 *source,
                                               const EspalierLoadOptions  *options);

G_END_DECLS
