/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-export-page.h: the Export page of the window: one of the project's
 * (property "project", EspalierProject) variants written out in a format other tools
 * read: an Espalier model (NAME.json + NAME.safetensors, espalier-model-file.h), ONNX
 * (NAME.onnx, espalier-onnx.h) or C source (NAME.c + NAME.h, espalier-c-export.h). The
 * page says before the export what will be written, and after it what was: sizes,
 * ONNX operators, C weight bytes. */
#pragma once

#include <adwaita.h>

#include "espalier-project.h"

G_BEGIN_DECLS

typedef enum {
  ESPALIER_EXPORT_FORMAT_MODEL,   /* NAME.json + NAME.safetensors, quantization kept */
  ESPALIER_EXPORT_FORMAT_ONNX,    /* NAME.onnx, opset 13 (QDQ for static int8) */
  ESPALIER_EXPORT_FORMAT_C,       /* NAME.c + NAME.h (not for dynamic int8) */
} EspalierExportFormat;

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
/* The format the Export button and the functions below write: the Espalier model by
 * default; the page's format rows follow set_format. */
EspalierExportFormat espalier_export_page_get_format (EspalierExportPage  *self);
void             espalier_export_page_set_format     (EspalierExportPage  *self,
                                                      EspalierExportFormat format);
/* Why the selected variant cannot be written as format (a translated sentence: no
 * variant, no weights loaded, an uncalibrated static int8 variant, dynamic int8 as C
 * source), or NULL when it can. Free with g_free. */
char            *espalier_export_page_get_problem    (EspalierExportPage  *self,
                                                      EspalierExportFormat format);

/* Write the selected variant in the page's format. path names the main file, its
 * extension optional: "dir/NAME.json" or "dir/NAME" writes NAME.json and
 * NAME.safetensors (with the project's dataset source, preprocessing, class names, the
 * last run's options and history, and test metrics measured on the loaded dataset's
 * test split through the kernels the variant runs on, or the last run's for the
 * baseline when no dataset is loaded; a quantized variant keeps its quantization);
 * "dir/NAME.onnx" or "dir/NAME" writes NAME.onnx with the class names and input scaling
 * as metadata; "dir/NAME.c" or "dir/NAME" writes NAME.c and NAME.h whose identifiers
 * start with NAME made a C identifier ("pruned-50" -> "pruned_50"). Blocks: export_to
 * runs on the calling thread, the async pair on a worker. Fails with
 * ESPALIER_ERROR_INVALID when no variant with weights is selected or a static int8
 * variant is not calibrated, ESPALIER_ERROR_UNSUPPORTED for dynamic int8 as C source,
 * and as the exporter does (G_IO_ERROR when a file cannot be written). */
gboolean         espalier_export_page_export_to      (EspalierExportPage  *self,
                                                      const char          *path,
                                                      GError             **error);
void             espalier_export_page_export_async   (EspalierExportPage  *self,
                                                      const char          *path,
                                                      GCancellable        *cancellable,
                                                      GAsyncReadyCallback  callback,
                                                      gpointer             user_data);
/* TRUE on success; bytes (may be NULL) receives the size of the files written. Every
 * successful export, synchronous or not, is shown in the page's Last Export summary
 * (files and sizes; ONNX operators; C weight and scratch bytes); an export on a worker
 * hides the previous summary until it ends. */
gboolean         espalier_export_page_export_finish  (EspalierExportPage  *self,
                                                      GAsyncResult        *result,
                                                      guint64             *bytes,
                                                      GError             **error);

G_END_DECLS
