/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-split.h: train / validation / test row indices of a dataset. Stratified
 * when the labels are classes (each class keeps its share in every part, counts by
 * largest remainder so the totals are exact); a dataset with its own test part
 * (n_predefined_train < n_rows) keeps it as the test set and carves the validation
 * set from its training part. Deterministic in the seed; each part sorted ascending. */
#pragma once

#include "espalier-dataset.h"

G_BEGIN_DECLS

typedef struct {
  GArray *train;   /* (element-type guint32) row indices */
  GArray *val;
  GArray *test;
} EspalierSplit;

/* val_fraction and test_fraction are of all rows; with a predefined test part,
 * test_fraction is ignored and val_fraction is of the training part. Both in [0, 1)
 * with a non-empty training part left, else ESPALIER_DATA_ERROR_INVALID. */
EspalierSplit *espalier_split_new  (EspalierDataset  *dataset,
                                    double            val_fraction,
                                    double            test_fraction,
                                    guint64           seed,
                                    GError          **error);
void           espalier_split_free (EspalierSplit    *split);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (EspalierSplit, espalier_split_free)

G_END_DECLS
