/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-optimize-settings.h: the choice of an optimization technique and its
 * settings, on the Optimize page: prune (magnitude, gradual, structured, 2:4), quantize
 * (int8 static, int8 dynamic, fp16, bf16, quantization-aware training) or remove a
 * layer, with the rows that technique uses shown and the others hidden. It turns the
 * rows into EspalierOptimizeOptions; it runs nothing. Its layer lists (layer to remove,
 * layers kept in float) come from the parent's model. */
#pragma once

#include <adwaita.h>

#include "espalier-optimize.h"

G_BEGIN_DECLS

/* The choices of the technique row, in its order. */
typedef enum {
  ESPALIER_TECHNIQUE_PRUNE_MAGNITUDE,
  ESPALIER_TECHNIQUE_PRUNE_GRADUAL,
  ESPALIER_TECHNIQUE_PRUNE_STRUCTURED,
  ESPALIER_TECHNIQUE_PRUNE_2_4,
  ESPALIER_TECHNIQUE_INT8_STATIC,
  ESPALIER_TECHNIQUE_INT8_DYNAMIC,
  ESPALIER_TECHNIQUE_FP16,
  ESPALIER_TECHNIQUE_BF16,
  ESPALIER_TECHNIQUE_QAT,
  ESPALIER_TECHNIQUE_REDUCE,
  ESPALIER_N_TECHNIQUES
} EspalierTechnique;

#define ESPALIER_TYPE_OPTIMIZE_SETTINGS (espalier_optimize_settings_get_type ())
G_DECLARE_FINAL_TYPE (EspalierOptimizeSettings, espalier_optimize_settings, ESPALIER, OPTIMIZE_SETTINGS, AdwBin)

/* Property "technique" (guint, an EspalierTechnique). Signal "changed": any setting
 * changed (the page updates its summary). */

GtkWidget         *espalier_optimize_settings_new           (void);
EspalierTechnique  espalier_optimize_settings_get_technique (EspalierOptimizeSettings *self);
void               espalier_optimize_settings_set_technique (EspalierOptimizeSettings *self,
                                                             EspalierTechnique         technique);
/* The layers to offer come from model (borrowed for the call; NULL: none). Choices
 * that still fit the new model are kept. */
void               espalier_optimize_settings_set_model     (EspalierOptimizeSettings *self,
                                                             const EsModel            *model);
/* Fill opts (initialized here) from the rows; clear it with
 * espalier_optimize_options_clear. */
void               espalier_optimize_settings_get_options   (EspalierOptimizeSettings *self,
                                                             EspalierOptimizeOptions  *opts);
/* Whether the technique fine-tunes (the page then shows the live curves). */
gboolean           espalier_technique_fine_tunes            (EspalierTechnique         technique,
                                                             guint                     epochs);

G_END_DECLS
