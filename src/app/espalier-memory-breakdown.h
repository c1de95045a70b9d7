/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-memory-breakdown.h: the memory a profiled run used: the engine's allocations
 * by kind (weights, gradients, optimizer state, activations, workspace, data) as one
 * stacked bar beside its peak, the memory limit when one is set, and the process's
 * resident set and its peak; the same figures as numbers beside the chart. It draws an
 * EspalierProfile's memory fields and measures nothing. */
#pragma once

#include <adwaita.h>

#include "espalier-chart.h"
#include "espalier-trainer.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_MEMORY_BREAKDOWN (espalier_memory_breakdown_get_type ())
G_DECLARE_FINAL_TYPE (EspalierMemoryBreakdown, espalier_memory_breakdown, ESPALIER, MEMORY_BREAKDOWN, AdwBin)

GtkWidget     *espalier_memory_breakdown_new         (void);
/* Show prof's memory (may be NULL: nothing); its figures are copied. */
void           espalier_memory_breakdown_set_profile (EspalierMemoryBreakdown *self,
                                                      const EspalierProfile   *prof);
/* The text of the number shown for row `key` ("weights", "gradients", "optimizer",
 * "activations", "workspace", "data", "total", "peak", "limit", "rss", "rss-peak"), or
 * NULL when that row is hidden (tests). */
const char    *espalier_memory_breakdown_get_text    (EspalierMemoryBreakdown *self,
                                                      const char              *key);
/* (transfer none) */
EspalierChart *espalier_memory_breakdown_get_chart   (EspalierMemoryBreakdown *self);

G_END_DECLS
