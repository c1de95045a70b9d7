/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-sensitivity-view.h: the result of a sensitivity scan on the Optimize page: a
 * chart (for pruning, validation accuracy against the sparsity of each layer alone, a
 * line per layer; for quantization, the accuracy each layer costs alone in int8, a bar
 * per layer) beside a table of the same numbers. It shows results; the page runs the
 * scan. */
#pragma once

#include <adwaita.h>

#include "espalier-chart.h"
#include "espalier-optimize.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_SENSITIVITY_VIEW (espalier_sensitivity_view_get_type ())
G_DECLARE_FINAL_TYPE (EspalierSensitivityView, espalier_sensitivity_view, ESPALIER, SENSITIVITY_VIEW, AdwBin)

GtkWidget     *espalier_sensitivity_view_new         (void);
/* Show rows (element-type EspalierSensitivityRow, as espalier_sensitivity_scan returns
 * them; copied) of a scan of kind; model (borrowed for the call, may be NULL) names
 * the layers. rows NULL: empty. */
void           espalier_sensitivity_view_set_results (EspalierSensitivityView *self,
                                                      EspalierSensitivityKind  kind,
                                                      GArray                  *rows,
                                                      const EsModel           *model);
/* How many layers the results cover (table rows below the header). */
guint          espalier_sensitivity_view_get_n_layers (EspalierSensitivityView *self);
EspalierChart *espalier_sensitivity_view_get_chart   (EspalierSensitivityView *self);
GtkGrid       *espalier_sensitivity_view_get_table   (EspalierSensitivityView *self);

G_END_DECLS
