/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-train-page.h: the Train page of the window. On the left, the hyperparameters
 * of the project set on it (property "project", EspalierProject), the device, the memory
 * plan and Start, Pause and Stop; on the right, live charts: loss and accuracy per epoch
 * with the running loss, throughput, the decision boundary of 2-D sets, the confusion
 * matrix and per-layer weight histograms. A run that ends is added to the project with
 * its test metrics, its model becomes the project's model and a measured "baseline"
 * variant. Training itself runs in core (EspalierTrainer) on a worker thread. */
#pragma once

#include <adwaita.h>

#include "espalier-chart.h"
#include "espalier-project.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_TRAIN_PAGE (espalier_train_page_get_type ())
G_DECLARE_FINAL_TYPE (EspalierTrainPage, espalier_train_page, ESPALIER, TRAIN_PAGE, AdwBin)

/* Properties: "project" (EspalierProject), "training" (gboolean, read-only: a run is in
 * progress, paused or being evaluated), "paused" (gboolean, read-only). Signal "profile"
 * (gpointer: const EspalierProfile *, valid during the emission): with the "profiling"
 * preference on, runs are profiled and each profile record passes here (the window
 * hands it to the Profile page). */

GtkWidget       *espalier_train_page_new                   (void);
EspalierProject *espalier_train_page_get_project           (EspalierTrainPage *self);
void             espalier_train_page_set_project           (EspalierTrainPage *self,
                                                            EspalierProject   *project);

/* Start training the project's model with its options (or resume a paused run). When
 * it cannot start (no dataset, an invalid model) the page shows why and nothing runs. */
void             espalier_train_page_start                 (EspalierTrainPage *self);
/* Stop after the current step; the run is kept in the project as unfinished. */
void             espalier_train_page_stop                  (EspalierTrainPage *self);
/* Pause a running run after the current step, or resume a paused one. */
void             espalier_train_page_pause                 (EspalierTrainPage *self);
gboolean         espalier_train_page_get_training          (EspalierTrainPage *self);
/* Where this page's runs keep their checkpoint for its project (NULL without one). */
char            *espalier_train_page_get_checkpoint_path   (EspalierTrainPage *self);
gboolean         espalier_train_page_get_paused            (EspalierTrainPage *self);

/* The loss chart (transfer none): layer 0 is the training loss per epoch, layer 1 the
 * validation loss, layer 2 the running loss within epochs. */
EspalierChart   *espalier_train_page_get_loss_chart        (EspalierTrainPage *self);
/* How many times the decision boundary was drawn (0 for sets that are not 2-D). */
guint            espalier_train_page_get_boundary_updates  (EspalierTrainPage *self);

G_END_DECLS
