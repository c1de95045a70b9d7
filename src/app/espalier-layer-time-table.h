/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-layer-time-table.h: the per-layer table of a profile: for each layer its
 * forward and backward time per step, its share of the step, FLOPs and bytes moved per
 * step, achieved GFLOP/s and GB/s, arithmetic intensity, how close it runs to the roof
 * and whether it is memory- or compute-bound. It draws a report's summary (espalier-
 * profile-report.h) and measures nothing. */
#pragma once

#include <adwaita.h>

#include "espalier-profile-report.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_LAYER_TIME_ROW (espalier_layer_time_row_get_type ())
G_DECLARE_FINAL_TYPE (EspalierLayerTimeRow, espalier_layer_time_row, ESPALIER, LAYER_TIME_ROW, GObject)

/* One table row: a copy of an EspalierLayerTime (its kind string owned by the row) and
 * the summary's step count and ceilings flag. (transfer none) */
const EspalierLayerTime *espalier_layer_time_row_get_layer      (EspalierLayerTimeRow *row);
guint                    espalier_layer_time_row_get_steps      (EspalierLayerTimeRow *row);

#define ESPALIER_TYPE_LAYER_TIME_TABLE (espalier_layer_time_table_get_type ())
G_DECLARE_FINAL_TYPE (EspalierLayerTimeTable, espalier_layer_time_table, ESPALIER, LAYER_TIME_TABLE, AdwBin)

GtkWidget  *espalier_layer_time_table_new         (void);
/* Show summary's layers (may be NULL: none). */
void        espalier_layer_time_table_set_summary (EspalierLayerTimeTable       *self,
                                                   const EspalierProfileSummary *summary);
/* The rows (EspalierLayerTimeRow), one per layer. (transfer none) */
GListModel *espalier_layer_time_table_get_rows    (EspalierLayerTimeTable       *self);

/* "3 Dense": a layer's 1-based position and display name, for tables, points and
 * advice (newly allocated). */
char       *espalier_layer_time_name              (const EspalierLayerTime      *layer);

G_END_DECLS
