/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-profile-page.h: the Profile page of the window: what is known of the
 * project's model (property "project", EspalierProject) before the profiler: each
 * layer's shape, parameters, FLOPs and activations, the training memory plan for the
 * current batch size, and the last run's time per epoch and throughput. */
#pragma once

#include <adwaita.h>

#include "espalier-project.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_PROFILE_PAGE (espalier_profile_page_get_type ())
G_DECLARE_FINAL_TYPE (EspalierProfilePage, espalier_profile_page, ESPALIER, PROFILE_PAGE, AdwBin)

GtkWidget       *espalier_profile_page_new         (void);
EspalierProject *espalier_profile_page_get_project (EspalierProfilePage *self);
void             espalier_profile_page_set_project (EspalierProfilePage *self,
                                                    EspalierProject     *project);

G_END_DECLS
