/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-stage-bars.h: where a training step's time goes, as a chart: one stacked bar
 * per profiled step (data, load, forward, loss, metrics, backward, optimizer, other)
 * when the profile kept its intervals (EspalierProfile.events), or one bar of the mean
 * step when it did not, or bars the caller computed (a live run's stretches); a legend
 * of the stages and a line of each stage's share under it. It draws a report's summary
 * (espalier-profile-report.h) and measures nothing. */
#pragma once

#include <adwaita.h>

#include "espalier-chart.h"
#include "espalier-profile-report.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_STAGE_BARS (espalier_stage_bars_get_type ())
G_DECLARE_FINAL_TYPE (EspalierStageBars, espalier_stage_bars, ESPALIER, STAGE_BARS, AdwBin)

/* Most steps drawn; a longer trace shows its last ones. */
#define ESPALIER_STAGE_BARS_MAX_STEPS 120

GtkWidget     *espalier_stage_bars_new         (void);
/* Draw summary (may be NULL: nothing). Nothing of it is kept: the figures are copied. */
void           espalier_stage_bars_set_summary (EspalierStageBars            *self,
                                                const EspalierProfileSummary *summary);
/* Draw n_bars given bars instead: seconds ((n_bars, summary->n_stages), per step, in the
 * summary's stage order) labelled labels ((n_bars), may be NULL), x_title under them
 * (may be NULL). The live view draws a run's mean step over each stretch this way. */
void           espalier_stage_bars_set_bars    (EspalierStageBars            *self,
                                                const EspalierProfileSummary *summary,
                                                const double                 *seconds,
                                                const char * const           *labels,
                                                guint                         n_bars,
                                                const char                   *x_title);
/* Bars cut off at the top of the scale: steps of more than 5 times the median step
 * (with 5 steps or more), marked "↑" under the axis and told of under the chart. */
guint          espalier_stage_bars_get_n_clipped (EspalierStageBars          *self);
/* Bars drawn: the steps found in the events, or 1 for the mean step, or 0. */
guint          espalier_stage_bars_get_n_bars  (EspalierStageBars            *self);
/* The seconds of stage k (the summary's order) in bar i, NAN out of range (tests). */
double         espalier_stage_bars_get_seconds (EspalierStageBars            *self,
                                                guint                         bar,
                                                guint                         stage);
/* (transfer none) */
EspalierChart *espalier_stage_bars_get_chart   (EspalierStageBars            *self);

/* Per-step split of a profile's events into n_stages stages (the summary's order, keys
 * as EspalierStageTime.name; "other" takes what no interval covers). A step starts at
 * each data interval and ends where the next begins; the last ends at its last
 * interval. Returns the steps found (0 without events), their seconds in *seconds
 * ((steps, n_stages), g_free). For the widget and its tests. */
guint          espalier_stage_bars_split_events (const EspalierProfileSummary *summary,
                                                 double                      **seconds);

G_END_DECLS
