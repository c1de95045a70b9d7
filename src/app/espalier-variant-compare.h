/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-variant-compare.h: two variants side by side, chosen from a list (A and B),
 * with every measurement of each and how B compares with A: the latency speed-up, the
 * size ratio, the accuracy difference in points. It follows both variants' notify. It
 * measures nothing. */
#pragma once

#include <adwaita.h>

#include "espalier-variant.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_VARIANT_COMPARE (espalier_variant_compare_get_type ())
G_DECLARE_FINAL_TYPE (EspalierVariantCompare, espalier_variant_compare, ESPALIER, VARIANT_COMPARE, AdwBin)

/* Property "variants" (GListModel of EspalierVariant, may be NULL). The table
 * (template child "grid") has a header row, then one row per figure; columns: the
 * figure, A, B, B against A. */

GtkWidget       *espalier_variant_compare_new          (void);
GListModel      *espalier_variant_compare_get_variants (EspalierVariantCompare *self);
void             espalier_variant_compare_set_variants (EspalierVariantCompare *self,
                                                        GListModel             *variants);
/* Choose A and B by name (either may be NULL: left as it is). */
void             espalier_variant_compare_select       (EspalierVariantCompare *self,
                                                        const char             *a,
                                                        const char             *b);
/* The variants compared, or NULL. (transfer none) */
EspalierVariant *espalier_variant_compare_get_a        (EspalierVariantCompare *self);
EspalierVariant *espalier_variant_compare_get_b        (EspalierVariantCompare *self);

G_END_DECLS
