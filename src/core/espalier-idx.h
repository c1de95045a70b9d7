/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-idx.h: the IDX format (LeCun's MNIST files) and Fashion-MNIST. Reads any
 * dimensionality, gzip or raw (told apart by content, not by name): ubyte images stay
 * uint8, the other element types become float32. A labels file is ubyte (or another
 * integer type) with one dimension, holding classes 0..255. Only reading: Espalier
 * does not write IDX. */
#pragma once

#include "espalier-dataset.h"

G_BEGIN_DECLS

/* Element types: the third byte of the magic. */
typedef enum {
  ESPALIER_IDX_UBYTE  = 0x08,
  ESPALIER_IDX_SBYTE  = 0x09,
  ESPALIER_IDX_SHORT  = 0x0B,
  ESPALIER_IDX_INT    = 0x0C,
  ESPALIER_IDX_FLOAT  = 0x0D,
  ESPALIER_IDX_DOUBLE = 0x0E,
} EspalierIdxType;

#define ESPALIER_IDX_MAX_DIMS 16

/* A parsed IDX file: the header, and its payload still big-endian as in the file. */
typedef struct {
  EspalierIdxType  type;
  guint            ndim;
  guint            dims[ESPALIER_IDX_MAX_DIMS];   /* (ndim) */
  gsize            n_elements;
  GBytes          *payload;                        /* n_elements * element size */
} EspalierIdx;

/* Parse decompressed IDX bytes; path only names the file in errors (header field and
 * value). The payload must be exactly what the dimensions say. */
gboolean         espalier_idx_parse              (GBytes          *contents,
                                                  const char      *path,
                                                  EspalierIdx     *idx,
                                                  GError         **error);
void             espalier_idx_clear              (EspalierIdx     *idx);
/* The size of an element, 0 for a type that is not one of the above. */
gsize            espalier_idx_type_size          (EspalierIdxType  type);

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (EspalierIdx, espalier_idx_clear)

/* The labels file next to an images file by the usual naming ("images" -> "labels",
 * "idx3" -> "idx1", with or without .gz), or NULL when there is none. */
char            *espalier_idx_find_labels        (const char      *images_path);

/* A dataset from an images file (N, d1, ...) and a labels file (N), or none when
 * labels_path is NULL. raw bytes as read (gzip or not), the paths naming them; a NULL
 * raw is streamed from its path instead, so that only the final block is ever whole
 * in memory. Rows of rank 1 for 2-D files (N, F), (1, H, W) for 3-D, (C, H, W) for 4-D
 * (N, C, H, W), the dims as they are beyond. Classes are "0".."K-1", K = max label +
 * 1. No preprocessing, no cache. A header describing more data than this machine's memory
 * holds (espalier-limits.h) is refused, naming the size, before anything is allocated
 * (ESPALIER_DATA_ERROR_IO). */
EspalierDataset *espalier_idx_load_bytes         (GBytes          *images_raw,
                                                  const char      *images_path,
                                                  GBytes          *labels_raw,
                                                  const char      *labels_path,
                                                  GCancellable    *cancellable,
                                                  GError         **error);
/* The same from files; labels_path NULL: found with espalier_idx_find_labels(). */
EspalierDataset *espalier_idx_load               (const char      *images_path,
                                                  const char      *labels_path,
                                                  GCancellable    *cancellable,
                                                  GError         **error);

/* The four Fashion-MNIST file names, in the order the loaders take them:
 * train images, train labels, t10k images, t10k labels. */
extern const char * const espalier_fashion_mnist_files[4];

/* Fashion-MNIST from the four files' raw bytes (paths name them): train + t10k
 * concatenated, n_predefined_train = 60000, the ten class names. raw NULL, or a NULL
 * raw[i]: streamed from the path, the images inflated straight into the dataset's
 * one block. */
EspalierDataset *espalier_idx_load_fashion_mnist_bytes (GBytes * const     raw[4],
                                                        const char * const paths[4],
                                                        GCancellable      *cancellable,
                                                        GError           **error);
/* The same from a directory holding the four files. */
EspalierDataset *espalier_idx_load_fashion_mnist (const char      *dir,
                                                  GCancellable    *cancellable,
                                                  GError         **error);

G_END_DECLS
