/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-advice-card.h: one remedy of the advisor (EspalierAdvice) as a card: its
 * rank, title, the evidence that led to it, what Apply changes, the estimated gain
 * (labelled an estimate: nothing is claimed before it is measured) and an Apply button,
 * insensitive with the reason shown when the advice cannot be applied. The card applies
 * nothing itself: Apply emits "apply" and the page runs the job. */
#pragma once

#include <adwaita.h>

#include "espalier-profile-report.h"

G_BEGIN_DECLS

#define ESPALIER_TYPE_ADVICE_CARD (espalier_advice_card_get_type ())
G_DECLARE_FINAL_TYPE (EspalierAdviceCard, espalier_advice_card, ESPALIER, ADVICE_CARD, AdwBin)

/* Signal "apply" (no arguments): the user asked to apply this advice. Template children
 * (tests): "title_label", "evidence_label", "action_label", "gain_label",
 * "apply_button", "reason_label". */

/* A card for advice (its texts are copied), ranked `rank` (1: most important), the
 * report's advice number `index`. */
GtkWidget  *espalier_advice_card_new         (guint                 rank,
                                              guint                 index,
                                              const EspalierAdvice *advice);
/* Show another advice (or the same one measured again) in place: a live profile
 * refreshes its cards without remaking them. */
void        espalier_advice_card_update      (EspalierAdviceCard   *self,
                                              guint                 rank,
                                              guint                 index,
                                              const EspalierAdvice *advice);
guint       espalier_advice_card_get_index   (EspalierAdviceCard   *self);
/* The advice's untranslated key ("larger-batch"). */
const char *espalier_advice_card_get_name    (EspalierAdviceCard   *self);
/* While an advice is being applied (by this card or another), no card's Apply is
 * sensitive; `applying` marks this one as the one running. */
void        espalier_advice_card_set_busy    (EspalierAdviceCard   *self,
                                              gboolean              busy,
                                              gboolean              applying);
/* The text the card shows for an estimated gain ("About 1.8× faster (estimate)"), or
 * NULL for NAN (newly allocated; the page's before/after uses the same wording). */
char       *espalier_advice_format_estimate  (double                expected_gain);

G_END_DECLS
