/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-optimize-util.h: the few words and numbers the Optimize page's widgets (the
 * settings, the sparsity strip, the sensitivity results, the comparison) all write the
 * same way: a layer's short title, a latency with its unit, a ratio said as "faster"
 * or "smaller". Text only: no widgets, no state. */
#pragma once

#include <glib.h>

#include "es-model.h"

G_BEGIN_DECLS

/* "Dense 128", "Conv2D 16": the kind and its width. */
char    *espalier_layer_title        (const EsModel *model,
                                      int            layer);
/* "Layer 3: Dense 128" (layers counted from 1, as the model canvas does). */
char    *espalier_layer_label        (const EsModel *model,
                                      int            layer);
/* Whether layer has weights to prune or quantize (Dense, Conv2D). */
gboolean espalier_layer_has_weights  (const EsModel *model,
                                      int            layer);
/* "12.3 µs", "1.24 ms"; "—" when not measured (NaN). */
char    *espalier_format_latency     (double         us);
/* How `b` compares with `a` for a figure where less is better (latency, size):
 * "2.41× faster" / "1.20× slower" (fast_word TRUE) or "3.9× smaller" / "1.2× larger";
 * "same" within 0.5 %; "—" when either is not a positive number. */
char    *espalier_format_less_is_better (double      a,
                                         double      b,
                                         gboolean    fast_word);

G_END_DECLS
