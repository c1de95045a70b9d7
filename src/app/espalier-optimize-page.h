/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-optimize-page.h: the Optimize page of the window: the project's variants
 * (property "project", EspalierProject) as a table of their measurements and an
 * accuracy-versus-latency chart, with per-variant actions; pruning, quantization and
 * layer reduction with live fine-tuning curves, a per-layer sparsity strip, the
 * comparison of two variants and sensitivity scans. Signal "export-requested"
 * (EspalierVariant): the user chose Export… on a variant; the window shows the Export
 * page with it selected. */
#pragma once

#include <adwaita.h>

#include "espalier-project.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_OPTIMIZE_PAGE (espalier_optimize_page_get_type ())
G_DECLARE_FINAL_TYPE (EspalierOptimizePage, espalier_optimize_page, ESPALIER, OPTIMIZE_PAGE, AdwBin)

/* Actions (parameter: the variant's name, "s"): "optimize.measure-latency",
 * "optimize.export", "optimize.delete" (the baseline after a confirmation). Without
 * parameter: "optimize.apply" (run the optimization set on the page as a job),
 * "optimize.scan" (the sensitivity scan), "optimize.stop" (cancel either). */

GtkWidget       *espalier_optimize_page_new         (void);
EspalierProject *espalier_optimize_page_get_project (EspalierOptimizePage *self);
void             espalier_optimize_page_set_project (EspalierOptimizePage *self,
                                                     EspalierProject      *project);

G_END_DECLS
