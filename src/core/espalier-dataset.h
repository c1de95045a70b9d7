/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-dataset.h: a loaded dataset, rows of features with class labels or
 * regression targets, and the one loader a user reaches it through: Fashion-MNIST by
 * name, a generated 2-D teaching set, an IDX or a CSV file. Loading also runs the
 * chosen preprocessing (fill, de-duplicate, scale) and the binary cache.
 *
 * Dimension key: N = rows, F = row_size (floats per row), K = classes, T = targets.
 * Images stay uint8 in memory and are turned into floats per batch as
 * x * scale + shift (see EspalierBatcher). A dataset is immutable once loaded. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

#define ESPALIER_DATA_ERROR (espalier_data_error_quark ())

typedef enum {
  ESPALIER_DATA_ERROR_IO = 1,          /* a file could not be read or written */
  ESPALIER_DATA_ERROR_NOT_FOUND,       /* no such file, dataset name or generator */
  ESPALIER_DATA_ERROR_EMPTY,           /* an empty file, or no data rows */
  ESPALIER_DATA_ERROR_TRUNCATED,       /* a gzip stream or a payload ends early */
  ESPALIER_DATA_ERROR_CORRUPT,         /* compressed data or trailing bytes that make no sense */
  ESPALIER_DATA_ERROR_BAD_HEADER,      /* IDX magic, type or dimensions wrong */
  ESPALIER_DATA_ERROR_MISMATCH,        /* images and labels (or dims) do not agree */
  ESPALIER_DATA_ERROR_LABEL_RANGE,     /* a label outside 0..255 (or the known classes) */
  ESPALIER_DATA_ERROR_RAGGED,          /* a CSV row with a different number of fields */
  ESPALIER_DATA_ERROR_NON_NUMERIC,     /* a non-numeric CSV feature, one-hot not chosen */
  ESPALIER_DATA_ERROR_MISSING_VALUE,   /* a missing value left when no fill is chosen */
  ESPALIER_DATA_ERROR_UNKNOWN_COLUMN,  /* a label column that names no column */
  ESPALIER_DATA_ERROR_SPEC,            /* a generator spec that does not parse */
  ESPALIER_DATA_ERROR_INVALID,         /* bad options: fractions, conflicting steps */
} EspalierDataError;

GQuark espalier_data_error_quark (void);

/* Whether the first CSV row is a header. AUTO: it is when it has a non-numeric cell in
 * a column whose second-row cell is numeric. */
typedef enum {
  ESPALIER_CSV_HEADER_AUTO,
  ESPALIER_CSV_HEADER_PRESENT,
  ESPALIER_CSV_HEADER_ABSENT,
} EspalierCsvHeader;

/* What espalier_dataset_load() is asked to do beyond reading. Plain data: initialize
 * with espalier_load_options_init(), then set fields. Strings are borrowed. */
typedef struct {
  /* CSV */
  const char        *label_column;    /* header name, or a 0-based index ("4"; "-1" is the
                                       * last); NULL: the last column */
  gboolean           one_hot;         /* one-hot encode non-numeric feature columns
                                       * (FALSE: refuse them with an error) */
  EspalierCsvHeader  csv_header;      /* AUTO */
  /* IDX */
  const char        *labels_path;     /* labels of an IDX image file; NULL: found by the
                                       * usual naming (images -> labels, idx3 -> idx1) */
  /* Preprocessing, applied in this order; each step reports what it changed. */
  gboolean           ffill;           /* missing cell := the cell above it */
  gboolean           drop_duplicates; /* drop rows equal to an earlier one (features and label) */
  gboolean           mean_fill;       /* missing cell := training-split mean of its column */
  gboolean           standardize;     /* z-score with the training split's mean and std */
  gboolean           minmax;          /* scale to 0..1 with the training split's min and max */
  /* The split whose training part gives the statistics above: the same numbers as the
   * trainer's split (EspalierTrainOptions) make them agree. */
  double             val_fraction;    /* 0.1 */
  double             test_fraction;   /* 0.2 */
  guint64            split_seed;      /* 0 */
  /* Cache */
  gboolean           use_cache;       /* TRUE */
  const char        *cache_dir;       /* NULL: g_get_user_cache_dir()/espalier */
} EspalierLoadOptions;

void espalier_load_options_init (EspalierLoadOptions *options);

/* What the preprocessing steps changed, also as sentences in espalier_dataset_get_report(). */
typedef struct {
  guint ffilled_cells;        /* cells forward-filled */
  guint mean_filled_cells;    /* cells mean-filled */
  guint duplicate_rows;       /* rows dropped */
  guint standardized_columns; /* columns z-scored (images: 1, the pixel scale) */
  guint minmax_columns;       /* columns min-max scaled (images: 1) */
  guint one_hot_columns;      /* source columns one-hot encoded by the CSV loader */
  guint one_hot_features;     /* features they became */
} EspalierPreprocessReport;

#define ESPALIER_TYPE_DATASET (espalier_dataset_get_type ())
G_DECLARE_FINAL_TYPE (EspalierDataset, espalier_dataset, ESPALIER, DATASET, GObject)

/* "fashion-mnist", the file's basename, or the generator ("spiral"). */
const char    *espalier_dataset_get_name               (EspalierDataset *self);
guint          espalier_dataset_get_n_rows             (EspalierDataset *self);
/* Floats per row (F). */
guint          espalier_dataset_get_row_size           (EspalierDataset *self);
/* Per-row shape: rank 1 (F) for tables and 2-D sets, rank 3 (C, H, W) for images. */
guint          espalier_dataset_get_rank               (EspalierDataset *self);
const guint   *espalier_dataset_get_dims               (EspalierDataset *self);
gboolean       espalier_dataset_is_u8                  (EspalierDataset *self);
/* (N, F) or NULL */
const guint8  *espalier_dataset_get_u8                 (EspalierDataset *self);
/* (N, F) or NULL */
const float   *espalier_dataset_get_f32                (EspalierDataset *self);
/* A feature's value is x * scale + shift: 1/255 and 0 for images, 1 and 0 for floats. */
float          espalier_dataset_get_scale              (EspalierDataset *self);
float          espalier_dataset_get_shift              (EspalierDataset *self);
/* (N) class indices in 0..K-1, or NULL for regression */
const gint32  *espalier_dataset_get_labels             (EspalierDataset *self);
/* K, 0 for regression */
guint          espalier_dataset_get_n_classes          (EspalierDataset *self);
const char    *espalier_dataset_get_class_name         (EspalierDataset *self,
                                                        guint            klass);
/* (N, T) for regression, or NULL */
const float   *espalier_dataset_get_targets            (EspalierDataset *self);
guint          espalier_dataset_get_n_targets          (EspalierDataset *self);
/* Name of feature i: a CSV header ("sepal_length", "color=red" when one-hot), "x0",
 * "x1" for 2-D sets, "p0".. for images. */
const char    *espalier_dataset_get_feature_name       (EspalierDataset *self,
                                                        guint            i);
/* Rows [0, n_predefined_train) are the source's own training part and the rest its
 * own test part (Fashion-MNIST: 60000 + 10000); n_rows when it has none. */
guint          espalier_dataset_get_n_predefined_train (EspalierDataset *self);
/* "fashion-mnist", an absolute file path, or a full generator spec
 * ("spiral:n=300,arms=3,noise=0.2,seed=1"): with the same options, enough to load it
 * again. */
const char    *espalier_dataset_get_source             (EspalierDataset *self);
/* One sentence per step that loading took ("forward-fill: 3 cells filled",
 * "loaded from cache in 21 ms"), in order. (element-type utf8) (transfer none) */
GPtrArray     *espalier_dataset_get_report             (EspalierDataset *self);
const EspalierPreprocessReport *
               espalier_dataset_get_preprocess_report  (EspalierDataset *self);
/* Whether espalier_dataset_load() took it from the binary cache. */
gboolean       espalier_dataset_is_from_cache          (EspalierDataset *self);

/* Load what a user can name:
 *  - "fashion-mnist": the Debian IDX files, train + t10k (n_predefined_train 60000);
 *  - a generator spec: "spiral", "moons:n=500,noise=0.1" (see espalier-generate.h);
 *  - an IDX file (.idx, -idx3-ubyte, gzip or raw, detected by content), its labels
 *    found by the usual naming or given as options->labels_path;
 *  - a CSV file (.csv, .tsv, .txt; gzip allowed): delimiter and header detected.
 * Then runs options' preprocessing and, when options->use_cache, reads or writes the
 * binary cache. options may be NULL (defaults). Errors are ESPALIER_DATA_ERROR
 * (naming the file and the line, column or header field) or G_IO_ERROR_CANCELLED. */
EspalierDataset *espalier_dataset_load       (const char                 *spec,
                                              const EspalierLoadOptions  *options,
                                              GCancellable               *cancellable,
                                              GError                    **error);
/* espalier_dataset_load on a worker thread (a GTask); callback runs in the caller's
 * thread-default main context. spec and options (with their strings) are copied. */
void             espalier_dataset_load_async  (const char                 *spec,
                                               const EspalierLoadOptions  *options,
                                               GCancellable               *cancellable,
                                               GAsyncReadyCallback         callback,
                                               gpointer                    user_data);
EspalierDataset *espalier_dataset_load_finish (GAsyncResult               *result,
                                               GError                    **error);
/* Whether the Fashion-MNIST files are installed (dataset-fashion-mnist; the
 * environment variable ESPALIER_FASHION_MNIST_DIR overrides the directory). */
gboolean         espalier_dataset_fashion_mnist_available (void);
/* The directory "fashion-mnist" is read from. */
const char      *espalier_dataset_fashion_mnist_dir       (void);

/* Write the processed table as CSV, header included: the features (images as
 * x * scale + shift), then the label (class name) or the targets. Atomic. */
gboolean         espalier_dataset_export_csv (EspalierDataset  *self,
                                              const char       *path,
                                              GError          **error);

G_END_DECLS
