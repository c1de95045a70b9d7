/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-data-page.h: the Data page of the window. It shows and edits the project set on
 * it (property "project", EspalierProject): where the dataset comes from (a built-in
 * set, a generated 2-D set, an IDX or CSV file), its preprocessing and split, and what
 * was loaded (summary, the loader's report, a preview and the class counts). Loading
 * runs on a worker as an EspalierJob; a failed load keeps the previous dataset and
 * shows the loader's message on the page. */
#pragma once

#include <adwaita.h>

#include "espalier-chart.h"
#include "espalier-project.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_DATA_PAGE (espalier_data_page_get_type ())
G_DECLARE_FINAL_TYPE (EspalierDataPage, espalier_data_page, ESPALIER, DATA_PAGE, AdwBin)

/* Properties: "project" (EspalierProject), "loading" (gboolean, read-only: a load is
 * running), "error-text" (string, read-only: the last load's error shown on the page,
 * or NULL). */

GtkWidget       *espalier_data_page_new            (void);
EspalierProject *espalier_data_page_get_project    (EspalierDataPage          *self);
void             espalier_data_page_set_project    (EspalierDataPage          *self,
                                                    EspalierProject           *project);
/* Load source (a name like "fashion-mnist", a generator spec, a file path) with options
 * (NULL: defaults) on a worker, shown as a job; the page's controls show source and
 * options. On success the project gets the dataset (espalier_project_set_dataset); on
 * failure the previous dataset stays and the error is shown on the page and as a
 * toast. A load started while another runs cancels the earlier one. */
void             espalier_data_page_load           (EspalierDataPage          *self,
                                                    const char                *source,
                                                    const EspalierLoadOptions *options);
gboolean         espalier_data_page_get_loading    (EspalierDataPage          *self);
/* The error message shown on the page, or NULL when none is shown. */
const char      *espalier_data_page_get_error_text (EspalierDataPage          *self);
/* The dataset the page shows (the project's, or the last one loaded without a
 * project), or NULL. (transfer none) */
EspalierDataset *espalier_data_page_get_dataset    (EspalierDataPage          *self);
/* What the preview shows: "empty", "loading", "images", "table" or "points". */
const char      *espalier_data_page_get_preview_kind (EspalierDataPage        *self);
/* The preview's widgets, for the window's "save image" and the tests. (transfer none) */
EspalierChart   *espalier_data_page_get_scatter_chart (EspalierDataPage       *self);
EspalierChart   *espalier_data_page_get_class_chart   (EspalierDataPage       *self);
GtkWidget       *espalier_data_page_get_image_grid    (EspalierDataPage       *self);
GtkColumnView   *espalier_data_page_get_table         (EspalierDataPage       *self);

G_END_DECLS
