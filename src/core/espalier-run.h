/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-run.h: one training run of a project: the architecture and options it ran
 * with, its per-epoch curves (EspalierEpochRecord) and its test metrics. Runs are kept so
 * a user can compare them and so a saved project reopens with its charts. No GTK. */
#pragma once

#include <glib-object.h>

#include "espalier-trainer.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_RUN (espalier_run_get_type ())
G_DECLARE_FINAL_TYPE (EspalierRun, espalier_run, ESPALIER, RUN, GObject)

/* Properties: "name" (string, "Run 3"), "spec" (string, the model spec string it
 * trained), "created" (string, ISO 8601), "n-epochs" (guint, records so far), "finished"
 * (gboolean: ran to the end or stopped early by patience; FALSE while running or when
 * cancelled). Signal "record-added" (guint index) after espalier_run_add_record. */

EspalierRun                *espalier_run_new          (const char                 *name,
                                                       const char                 *spec,
                                                       const EspalierTrainOptions *options);
/* The same for a run read back from a file: created (ISO 8601; NULL: now). */
EspalierRun                *espalier_run_new_full     (const char                 *name,
                                                       const char                 *spec,
                                                       const EspalierTrainOptions *options,
                                                       const char                 *created);
const char                 *espalier_run_get_name     (EspalierRun *self);
const char                 *espalier_run_get_spec     (EspalierRun *self);
const char                 *espalier_run_get_created  (EspalierRun *self);
const EspalierTrainOptions *espalier_run_get_options  (EspalierRun *self);
/* (EspalierEpochRecord) (transfer none) */
GArray                     *espalier_run_get_history  (EspalierRun *self);
void                        espalier_run_add_record   (EspalierRun                *self,
                                                       const EspalierEpochRecord  *record);
gboolean                    espalier_run_get_finished (EspalierRun *self);
void                        espalier_run_set_finished (EspalierRun *self,
                                                       gboolean     finished);
/* Test metrics (rows 0 when not evaluated); the run keeps a copy of the confusion
 * matrix. */
const EspalierMetrics      *espalier_run_get_test     (EspalierRun *self);
void                        espalier_run_set_test     (EspalierRun                *self,
                                                       const EspalierMetrics      *test);

G_END_DECLS
