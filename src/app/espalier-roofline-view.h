/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-roofline-view.h: the roofline of a profile: each timed layer a point at its
 * arithmetic intensity (FLOP per byte moved) and achieved GFLOP/s, on log-log axes,
 * under this machine's measured ceilings: the copy bandwidth's slope up to the ridge
 * point and the matrix product's peak after it. Points are coloured memory-bound or
 * compute-bound and named ("3 Dense") beside the dot and in the hover readout. It draws
 * a report's summary and measures nothing. */
#pragma once

#include <adwaita.h>

#include "espalier-chart.h"
#include "espalier-profile-report.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_ROOFLINE_VIEW (espalier_roofline_view_get_type ())
G_DECLARE_FINAL_TYPE (EspalierRooflineView, espalier_roofline_view, ESPALIER, ROOFLINE_VIEW, AdwBin)

GtkWidget     *espalier_roofline_view_new          (void);
/* Draw summary (may be NULL: nothing); its figures are copied. Layers that were not
 * timed or moved no bytes are left out; without ceilings the points stand alone. */
void           espalier_roofline_view_set_summary  (EspalierRooflineView         *self,
                                                    const EspalierProfileSummary *summary);
/* Layers drawn as points. */
guint          espalier_roofline_view_get_n_points (EspalierRooflineView         *self);
/* TRUE when the ceilings are drawn. */
gboolean       espalier_roofline_view_has_roof     (EspalierRooflineView         *self);
/* (transfer none) */
EspalierChart *espalier_roofline_view_get_chart    (EspalierRooflineView         *self);

G_END_DECLS
