/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-csv.h: delimited text tables (CSV, TSV, semicolons) into datasets. Detects
 * the delimiter and the header, parses quoted fields ("a,b", doubled quotes, line
 * breaks inside quotes), picks the label column, one-hot encodes or refuses
 * non-numeric features. Missing cells ("", NA, N/A, NaN, null) become NaN for the
 * preprocessing steps to fill; this file does no preprocessing and no caching.
 *
 * Labels: a column of integers becomes classes named by the values (sorted
 * numerically; "0".."9" stay 0..9); a column with any non-numeric value becomes classes
 * named by the strings, sorted by byte value (so the mapping does not depend on row
 * order); a column with non-integer numbers, or with more than
 * ESPALIER_CSV_MAX_INT_CLASSES distinct integers, becomes one regression target. */
#pragma once

#include "espalier-dataset.h"

G_BEGIN_DECLS

#define ESPALIER_CSV_MAX_INT_CLASSES 1000

/* ',', ';' or '\t', from the first 20 lines (quotes understood). Candidates are those
 * that split every line into the same number (> 1) of fields; comma drops out when
 * semicolon is one ("1,5;2,3" has decimal commas); the most fields wins, ties going to
 * tab, then semicolon, then comma. With no candidate, the delimiter giving the first
 * line the most fields; ',' for a single column. */
char             espalier_csv_detect_delimiter (const char *text,
                                                gsize       length);

/* Whether a cell is a missing value: empty, NA, N/A, NaN, null (any case). */
gboolean         espalier_csv_is_missing       (const char *cell);

/* A dataset from CSV bytes (raw as read; gzip allowed); path names the file in errors
 * ("data.csv: line 7, column 3 ('color'): ..."). Uses options' label_column, one_hot
 * and csv_header; options may be NULL. */
EspalierDataset *espalier_csv_load_bytes       (GBytes                     *raw,
                                                const char                 *path,
                                                const EspalierLoadOptions  *options,
                                                GCancellable               *cancellable,
                                                GError                    **error);
EspalierDataset *espalier_csv_load             (const char                 *path,
                                                const EspalierLoadOptions  *options,
                                                GCancellable               *cancellable,
                                                GError                    **error);

G_END_DECLS
