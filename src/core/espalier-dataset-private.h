/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-dataset-private.h: the dataset's struct and the helpers its loaders (IDX,
 * CSV, generators), the preprocessing and the cache share. Not installed, not for the
 * trainer or the UI: they read a dataset through espalier-dataset.h. */
#pragma once

#include "espalier-dataset.h"

G_BEGIN_DECLS

struct _EspalierDataset
{
  GObject                  parent_instance;

  char                    *name;
  char                    *source;

  guint                    n_rows;             /* N */
  guint                    row_size;           /* F, the product of dims */
  guint                    rank;
  guint                   *dims;               /* (rank) */
  GBytes                  *storage;            /* when set, owns u8/f32/labels/targets
                                                * (a mapped cache file); else each is
                                                * its own g_malloc block */
  guint8                  *u8;                 /* (N, F) or NULL */
  float                   *f32;                /* (N, F) or NULL */
  float                    scale;
  float                    shift;

  gint32                  *labels;             /* (N) or NULL */
  guint                    n_classes;          /* K */
  char                   **class_names;        /* (K + 1), NULL-terminated */
  float                   *targets;            /* (N, T) or NULL */
  guint                    n_targets;          /* T */

  guint                    n_predefined_train;

  char                   **feature_names;      /* (F + 1) or NULL: made up on demand */
  char                    *label_name;         /* header of the label column, or NULL */

  GPtrArray               *report;             /* (element-type utf8) */
  EspalierPreprocessReport counts;
  gboolean                 from_cache;

  /* Only while loading (not cached): where a row and a feature came from, so that
   * preprocessing can name the line and column of a missing value. */
  char                    *origin_path;        /* the CSV file, or NULL */
  guint                   *row_lines;          /* (N) 1-based line, or NULL */
  guint                   *feature_columns;    /* (F) 1-based source column, or NULL */
  char                   **column_names;       /* source columns, NULL-terminated, or NULL */
};

/* A new, empty dataset; loaders fill the fields. */
EspalierDataset *_espalier_dataset_new            (const char      *name,
                                                   const char      *source);
/* Set rank and dims (copied) and row_size from them. */
void             _espalier_dataset_set_shape      (EspalierDataset *self,
                                                   guint            rank,
                                                   const guint     *dims);
/* class_names "0", "1", ... up to n_classes - 1. */
void             _espalier_dataset_set_numbered_classes (EspalierDataset *self,
                                                   guint            n_classes);
void             _espalier_dataset_add_report     (EspalierDataset *self,
                                                   const char      *format,
                                                   ...) G_GNUC_PRINTF (2, 3);
/* Drop the loading-only fields. */
void             _espalier_dataset_forget_origin  (EspalierDataset *self);

/* Run options' preprocessing steps in order (ffill, drop_duplicates, mean_fill,
 * standardize or minmax) and check that no missing value is left. */
gboolean         _espalier_dataset_preprocess     (EspalierDataset            *self,
                                                   const EspalierLoadOptions  *options,
                                                   GCancellable               *cancellable,
                                                   GError                    **error);

/* Read a whole file. Errors are ESPALIER_DATA_ERROR_NOT_FOUND or _IO naming path. */
GBytes          *_espalier_data_read_file         (const char      *path,
                                                   GCancellable    *cancellable,
                                                   GError         **error);
/* Whether bytes start with the gzip magic (1f 8b). */
gboolean         _espalier_data_is_gzip           (GBytes          *bytes);
/* The decompressed bytes of a gzip stream (several members allowed), or a new
 * reference to bytes when they are not gzip. Errors name path. */
GBytes          *_espalier_data_gunzip            (GBytes          *bytes,
                                                   const char      *path,
                                                   GCancellable    *cancellable,
                                                   GError         **error);

/* A source read front to back in pieces, gunzipped on the way when it starts with the
 * gzip magic (several members and zero padding allowed, as _espalier_data_gunzip), from
 * bytes in memory or from a file read through a small buffer: what lets a loader
 * inflate a large payload straight into its final place. Errors name path and are
 * those of _espalier_data_read_file and _espalier_data_gunzip. */
typedef struct _EspalierDataStream EspalierDataStream;

/* A stream over bytes (a new reference is kept). */
EspalierDataStream *_espalier_data_stream_new     (GBytes              *bytes,
                                                   const char          *path,
                                                   GError             **error);
/* A stream over the file at path. */
EspalierDataStream *_espalier_data_stream_open    (const char          *path,
                                                   GCancellable        *cancellable,
                                                   GError             **error);
void             _espalier_data_stream_free       (EspalierDataStream  *stream);
/* Whether the source is gzip. */
gboolean         _espalier_data_stream_is_gzip    (EspalierDataStream  *stream);
/* The source's length as stored (compressed when gzip). */
guint64          _espalier_data_stream_get_source_size (EspalierDataStream *stream);
/* Up to length decompressed bytes into buffer; *n_read is less only at the end. */
gboolean         _espalier_data_stream_read       (EspalierDataStream  *stream,
                                                   void                *buffer,
                                                   gsize                length,
                                                   gsize               *n_read,
                                                   GCancellable        *cancellable,
                                                   GError             **error);
/* Read the rest to the end, checking it, and count it in *n_skipped. */
gboolean         _espalier_data_stream_skip_rest  (EspalierDataStream  *stream,
                                                   guint64             *n_skipped,
                                                   GCancellable        *cancellable,
                                                   GError             **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (EspalierDataStream, _espalier_data_stream_free)

G_END_DECLS
