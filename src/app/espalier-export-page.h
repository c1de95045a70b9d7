/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-export-page.h: the Export page of the window: one of the project's
 * (property "project", EspalierProject) variants written out in a format other tools
 * read. Today that is an Espalier model, NAME.json + NAME.safetensors
 * (espalier-model-file.h); ONNX and C source arrive with the export issue. */
#pragma once

#include <adwaita.h>

#include "espalier-project.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_EXPORT_PAGE (espalier_export_page_get_type ())
G_DECLARE_FINAL_TYPE (EspalierExportPage, espalier_export_page, ESPALIER, EXPORT_PAGE, AdwBin)

GtkWidget       *espalier_export_page_new            (void);
EspalierProject *espalier_export_page_get_project    (EspalierExportPage  *self);
void             espalier_export_page_set_project    (EspalierExportPage  *self,
                                                      EspalierProject     *project);
/* The variant to export: by default the most recently added one. select_variant
 * ignores a variant that is not in the project's list. (transfer none) */
EspalierVariant *espalier_export_page_get_variant    (EspalierExportPage  *self);
void             espalier_export_page_select_variant (EspalierExportPage  *self,
                                                      EspalierVariant     *variant);

/* Write the selected variant as an Espalier model at path ("dir/NAME.json" or
 * "dir/NAME": NAME.json and NAME.safetensors are written), with the project's dataset
 * source, preprocessing, class names, the last run's options and history, and test
 * metrics measured on the loaded dataset's test split (or the last run's for the
 * baseline when no dataset is loaded). Blocks: export_to runs on the calling thread,
 * the async pair on a worker. Fails with ESPALIER_ERROR_INVALID when no variant with
 * weights is selected, and as espalier_model_save does. */
gboolean         espalier_export_page_export_to      (EspalierExportPage  *self,
                                                      const char          *path,
                                                      GError             **error);
void             espalier_export_page_export_async   (EspalierExportPage  *self,
                                                      const char          *path,
                                                      GCancellable        *cancellable,
                                                      GAsyncReadyCallback  callback,
                                                      gpointer             user_data);
/* TRUE on success; bytes (may be NULL) receives the size of the two files. */
gboolean         espalier_export_page_export_finish  (EspalierExportPage  *self,
                                                      GAsyncResult        *result,
                                                      guint64             *bytes,
                                                      GError             **error);

G_END_DECLS
