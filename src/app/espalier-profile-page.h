/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-profile-page.h: the Profile page of the window (property "project",
 * EspalierProject): the bottleneck analyzer's report on the project's model, from a
 * profile it runs (action "profile.run", Ctrl+Shift+P: a few training steps on a copy,
 * as a window job) or from a training run profiled live (the Train page's runs when
 * "Profile While Training", the "profiling" preference, is on): the step split by stage,
 * what limits the run, the advice with Apply (a job that profiles before and after and
 * shows both) and Keep in Project (undoable), the per-layer table, the roofline and the
 * memory; below it, what the model's shapes tell before anything runs (each layer's
 * shape, parameters, FLOPs and activations, the training memory plan, the last run's
 * time per epoch and throughput). The profiling itself is core's
 * (espalier-profile-report.h); the page draws and runs jobs. */
#pragma once

#include <adwaita.h>

#include "espalier-profile-report.h"
#include "espalier-project.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_PROFILE_PAGE (espalier_profile_page_get_type ())
G_DECLARE_FINAL_TYPE (EspalierProfilePage, espalier_profile_page, ESPALIER, PROFILE_PAGE, AdwBin)

/* Properties: "project" (EspalierProject), "busy" (gboolean, read-only: a profile or an
 * advice is being applied). Actions: "profile.run", "profile.keep" (keep the applied
 * advice's change in the project), "profile.undo" (put the project back),
 * "profile.dismiss" (hide the before/after). */

GtkWidget       *espalier_profile_page_new         (void);
EspalierProject *espalier_profile_page_get_project (EspalierProfilePage *self);
void             espalier_profile_page_set_project (EspalierProfilePage *self,
                                                    EspalierProject     *project);

/* Profile the project's model on its dataset with its training options (as the Train
 * page would run them) as a job; the same as "profile.run". Shows why when it cannot
 * start (no dataset, an invalid model, a job running). */
void             espalier_profile_page_run         (EspalierProfilePage *self);
/* Apply advice i of the report shown, as a job; the measured before/after then shows
 * above the advice. Does nothing while busy or when the advice cannot apply. */
void             espalier_profile_page_apply_advice (EspalierProfilePage *self,
                                                     guint                i);
gboolean         espalier_profile_page_get_busy    (EspalierProfilePage *self);
/* The report shown, or NULL. (transfer none) */
EspalierProfileReport *espalier_profile_page_get_report (EspalierProfilePage *self);
/* The measured result of the last applied advice, or NULL once dismissed. (transfer
 * none) */
const EspalierAdviceResult *espalier_profile_page_get_result (EspalierProfilePage *self);

/* A training run's profile so far (EspalierProgress.profile; copied). The page draws
 * a report of it at most twice a second, with the machine's ceilings read once (off the
 * main thread; the roofline appears when they arrive). The window passes the Train
 * page's profiles here. */
void             espalier_profile_page_update_live (EspalierProfilePage   *self,
                                                    const EspalierProfile *profile);
/* How many live reports the page has drawn (tests). */
guint            espalier_profile_page_get_live_count (EspalierProfilePage *self);

G_END_DECLS
