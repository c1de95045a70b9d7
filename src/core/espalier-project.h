/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-project.h: what a user works on and keeps as NAME.espalier: the dataset
 * reference and its preprocessing, the model being edited (an EspalierModelDoc), the
 * training options, the training runs with their curves, and the variants with their
 * measurements, weights and quantization. The file is one JSON document (format below),
 * written atomically; variant weights are stored in it as base64 of little-endian
 * float32 in es_model_tensor order, with their SHA-256, so the project is one file to
 * move. A quantized variant keeps its float weights too, and its quantization as in
 * model files (espalier-quant-json-private.h) with the int8 layers' weights in base64
 * (per int8 layer: scales (rows) as little-endian float32, then codes (rows, cols)) and
 * their SHA-256. Version 2 added the variants' format, exec, latency_p95_us,
 * rows_per_second, dense/sparse_latency_us and quantization; version 1 files still load.
 *
 *   { "format": "espalier-project", "version": 2, "producer": "Espalier 0.1.0",
 *     "dataset": { "source": "spiral:n=300,...", "options": { "ffill": false, ... } },
 *     "model": { "input": [2], "n_outputs": 3, "spec": "dense:8,relu,..." },
 *     "training": { ...EspalierTrainOptions as in model files... },
 *     "runs": [ { "name", "spec", "created", "finished", "options", "history": [..],
 *                 "test": {...} } ],
 *     "variants": [ { "name", "kind", "description", "parent", "accuracy",
 *                     "latency_us", "latency_p95_us", "rows_per_second",
 *                     "dense_latency_us", "sparse_latency_us", "exec", "format", "spec",
 *                     "input", "weights": "base64", "sha256",
 *                     "quantization": null or { "mode", "reduce_range", "layers": [..],
 *                                               "weights": "base64", "sha256" } } ] }
 *
 * The dataset itself is not saved: a project names it and loads it again. The project
 * holds the loaded dataset while the app runs (espalier_project_set_dataset). No GTK. */
#pragma once

#include <gio/gio.h>

#include "espalier-dataset.h"
#include "espalier-model-doc.h"
#include "espalier-run.h"
#include "espalier-trainer.h"
#include "espalier-variant.h"

G_BEGIN_DECLS

#define ESPALIER_PROJECT_FORMAT_VERSION 2

#define ESPALIER_TYPE_PROJECT (espalier_project_get_type ())
G_DECLARE_FINAL_TYPE (EspalierProject, espalier_project, ESPALIER, PROJECT, GObject)

/* Properties: "file" (GFile, NULL until saved or opened), "title" (string: the file's
 * base name without extension, or "Untitled"), "modified" (gboolean: changed since the
 * last save or open; set by every change below and by model-doc edits), "dataset"
 * (EspalierDataset, the loaded one, or NULL), "dataset-source" (string), "model-doc"
 * (EspalierModelDoc, constant), "model" (the current trained weights: an EsModel
 * pointer as G_TYPE_POINTER, NULL until trained). Signal "changed" (no arguments) with
 * every change that sets modified. */

EspalierProject            *espalier_project_new                (void);

GFile                      *espalier_project_get_file           (EspalierProject *self);
const char                 *espalier_project_get_title          (EspalierProject *self);
gboolean                    espalier_project_get_modified       (EspalierProject *self);
void                        espalier_project_set_modified       (EspalierProject *self,
                                                                 gboolean         modified);

/* Dataset: the source string (espalier_dataset_get_source form) and the options it is
 * loaded with. The options' strings are copied and owned by the project. */
const char                 *espalier_project_get_dataset_source (EspalierProject *self);
const EspalierLoadOptions  *espalier_project_get_load_options   (EspalierProject *self);
void                        espalier_project_set_dataset_source (EspalierProject            *self,
                                                                 const char                 *source,
                                                                 const EspalierLoadOptions  *options);
/* The loaded dataset (may be NULL). Setting it also sets the source and options from
 * it when they differ, and sets the model doc's input shape and class count. */
EspalierDataset            *espalier_project_get_dataset        (EspalierProject *self);
void                        espalier_project_set_dataset        (EspalierProject            *self,
                                                                 EspalierDataset            *dataset,
                                                                 const EspalierLoadOptions  *options);

/* A dataset file that is gone (moved, deleted, on a drive not mounted) does not stop a
 * project from loading or saving: the source is kept as it was. check_dataset tells it
 * apart: FALSE with ESPALIER_DATA_ERROR_NOT_FOUND naming the missing file (the source or
 * the options' labels_path) when the source is a file path that is not there; TRUE for
 * built-in and generated data and for files that exist. */
gboolean                    espalier_project_check_dataset      (EspalierProject            *self,
                                                                 GError                    **error);
/* Whether dataset can stand in for the project's: the same row shape as the model's
 * input and the same number of classes (or regression targets). FALSE with
 * ESPALIER_DATA_ERROR_MISMATCH saying what differs. */
gboolean                    espalier_project_dataset_fits       (EspalierProject            *self,
                                                                 EspalierDataset            *dataset,
                                                                 GError                    **error);
/* The dataset file is now at path (absolute): it becomes the source, the load options
 * stay, except a labels_path that names a missing file, which is cleared (the labels
 * are then found next to path by the usual naming). Sets modified. */
void                        espalier_project_relocate_dataset   (EspalierProject            *self,
                                                                 const char                 *path);

/* (transfer none) */
EspalierModelDoc           *espalier_project_get_model_doc      (EspalierProject *self);

const EspalierTrainOptions *espalier_project_get_train_options  (EspalierProject *self);
void                        espalier_project_set_train_options  (EspalierProject            *self,
                                                                 const EspalierTrainOptions *options);

/* The trained model (transfer none), or NULL; set_model takes it over (NULL clears). */
EsModel                    *espalier_project_get_model          (EspalierProject *self);
void                        espalier_project_set_model          (EspalierProject *self,
                                                                 EsModel         *model);

/* Runs, oldest first: a GListModel of EspalierRun. (transfer none) */
GListModel                 *espalier_project_get_runs           (EspalierProject *self);
void                        espalier_project_add_run            (EspalierProject *self,
                                                                 EspalierRun     *run);
/* Variants, baseline first: a GListModel of EspalierVariant. (transfer none) Adding a
 * variant named like an existing one replaces it. */
GListModel                 *espalier_project_get_variants       (EspalierProject *self);
void                        espalier_project_add_variant        (EspalierProject *self,
                                                                 EspalierVariant *variant);
void                        espalier_project_remove_variant     (EspalierProject *self,
                                                                 guint            position);

/* Write the project to file atomically (temporary file, fsync, rename) and make it
 * the project's file; clears modified. Fails with G_IO_ERROR, or with
 * ESPALIER_ERROR_INVALID before writing anything when the project holds what
 * espalier_project_load would refuse (a batch size of 0, a NaN option). */
gboolean                    espalier_project_save               (EspalierProject  *self,
                                                                 GFile            *file,
                                                                 GCancellable     *cancellable,
                                                                 GError          **error);
/* The same, with the file written on a worker: the project is serialized on the
 * calling thread, so later changes do not race with the write; they keep the project
 * modified. Finish on the calling thread's main context. */
void                        espalier_project_save_async         (EspalierProject     *self,
                                                                 GFile               *file,
                                                                 GCancellable        *cancellable,
                                                                 GAsyncReadyCallback  callback,
                                                                 gpointer             user_data);
gboolean                    espalier_project_save_finish        (EspalierProject     *self,
                                                                 GAsyncResult        *result,
                                                                 GError             **error);
/* Read a project (dataset not loaded: the caller loads the source with the options).
 * ESPALIER_ERROR_FORMAT naming the file and the field when anything is wrong, G_IO_ERROR
 * when it cannot be read. */
EspalierProject            *espalier_project_load               (GFile            *file,
                                                                 GCancellable     *cancellable,
                                                                 GError          **error);

G_END_DECLS
