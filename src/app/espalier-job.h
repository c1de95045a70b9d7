/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-job.h: a long piece of work the user waits for (load, train, optimize,
 * export) as the window shows it: a title, a progress fraction and status line, a
 * Cancel button bound to its GCancellable, and its end (an error becomes a toast or a
 * dialog that says what to do). The work itself runs on a worker thread elsewhere (a
 * GTask, EspalierTrainer's async run); a job only carries its state to the UI, on the
 * main thread. */
#pragma once

#include <gtk/gtk.h>

G_BEGIN_DECLS

#define ESPALIER_TYPE_JOB (espalier_job_get_type ())
G_DECLARE_FINAL_TYPE (EspalierJob, espalier_job, ESPALIER, JOB, GObject)

/* Properties: "title" (string, "Training"), "fraction" (double 0..1, or -1 while the
 * amount of work is unknown: the bar pulses), "status" (string, "Epoch 3 of 10 · 12 s
 * left"), "running" (gboolean), "cancellable" (GCancellable, constant).
 * Signal "finished" (GError *error, NULL on success or cancel) once. */

EspalierJob  *espalier_job_new             (const char  *title);
const char   *espalier_job_get_title       (EspalierJob *self);
double        espalier_job_get_fraction    (EspalierJob *self);
void          espalier_job_set_fraction    (EspalierJob *self,
                                            double       fraction);
const char   *espalier_job_get_status      (EspalierJob *self);
void          espalier_job_set_status      (EspalierJob *self,
                                            const char  *status);
gboolean      espalier_job_get_running     (EspalierJob *self);
GCancellable *espalier_job_get_cancellable (EspalierJob *self);
void          espalier_job_cancel          (EspalierJob *self);
/* The work ended. error: NULL on success; a G_IO_ERROR_CANCELLED error counts as a
 * cancel, not a failure. Emits "finished" and clears "running". */
void          espalier_job_finish          (EspalierJob  *self,
                                            const GError *error);
/* Show the job in the window `widget` belongs to (its progress bar and Cancel button;
 * its error, if any, as a toast or dialog). Does nothing when the widget is not in an
 * EspalierWindow (widget tests). */
void          espalier_job_show            (EspalierJob *self,
                                            GtkWidget   *widget);
/* A short message for the user in the window `widget` belongs to (a toast); logged
 * with g_message when there is no window. */
void          espalier_show_toast          (GtkWidget   *widget,
                                            const char  *message);

G_END_DECLS
