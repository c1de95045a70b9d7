/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-advice-card.c: see espalier-advice-card.h. The texts come translated from the
 * advisor; the card only frames them: the gain always says it is an estimate, and an
 * advice that cannot apply keeps its Apply button, insensitive, with the reason beside
 * it and as its tooltip, so the user sees what would have to change. */
#include "config.h"

#include <math.h>
#include <glib/gi18n.h>

#include "espalier-advice-card.h"

struct _EspalierAdviceCard
{
  AdwBin      parent_instance;

  guint       index;
  char       *name;
  gboolean    can_apply;
  gboolean    busy;

  /* template */
  GtkLabel   *rank_label;
  GtkLabel   *title_label;
  GtkLabel   *evidence_label;
  GtkLabel   *action_label;
  GtkLabel   *gain_label;
  GtkStack   *button_stack;
  GtkButton  *apply_button;
  GtkSpinner *spinner;
  GtkLabel   *reason_label;
};

G_DEFINE_FINAL_TYPE (EspalierAdviceCard, espalier_advice_card, ADW_TYPE_BIN)

enum { SIGNAL_APPLY, N_SIGNALS };
static guint signals[N_SIGNALS];

char *
espalier_advice_format_estimate (double expected_gain)
{
  if (!isfinite (expected_gain) || expected_gain <= 0)
    return NULL;
  /* TRANSLATORS: an advice's expected speed-up before it is measured: "about 1.8× faster" */
  return g_strdup_printf (_("Estimated: about %.1f× faster (an estimate until applied and measured)"),
                          expected_gain);
}

static void
on_apply_clicked (EspalierAdviceCard *self)
{
  if (self->can_apply)
    g_signal_emit (self, signals[SIGNAL_APPLY], 0);
}

GtkWidget *
espalier_advice_card_new (guint                 rank,
                          guint                 index,
                          const EspalierAdvice *advice)
{
  EspalierAdviceCard *self;

  g_return_val_if_fail (advice != NULL, NULL);

  self = g_object_new (ESPALIER_TYPE_ADVICE_CARD, NULL);
  espalier_advice_card_update (self, rank, index, advice);
  return GTK_WIDGET (self);
}

void
espalier_advice_card_update (EspalierAdviceCard   *self,
                             guint                 rank,
                             guint                 index,
                             const EspalierAdvice *advice)
{
  g_autofree char *rank_text = NULL, *gain = NULL, *action = NULL;
  const char *reason = NULL;

  g_return_if_fail (ESPALIER_IS_ADVICE_CARD (self));
  g_return_if_fail (advice != NULL);

  self->index = index;
  g_free (self->name);
  self->name = g_strdup (advice->name);
  self->can_apply = advice->can_apply;

  rank_text = g_strdup_printf ("%u", rank);
  gtk_label_set_label (self->rank_label, rank_text);
  gtk_label_set_label (self->title_label, advice->title != NULL ? advice->title : advice->name);
  gtk_label_set_label (self->evidence_label, advice->evidence != NULL ? advice->evidence : "");
  gtk_widget_set_visible (GTK_WIDGET (self->evidence_label),
                          advice->evidence != NULL && *advice->evidence != '\0');
  if (advice->action != NULL && *advice->action != '\0')
    /* TRANSLATORS: what applying an advice changes: "Apply: batch 32 → 128" */
    action = g_strdup_printf (_("Apply: %s"), advice->action);
  gtk_label_set_label (self->action_label, action != NULL ? action : "");
  gtk_widget_set_visible (GTK_WIDGET (self->action_label), action != NULL);
  gain = espalier_advice_format_estimate (advice->expected_gain);
  gtk_label_set_label (self->gain_label, gain != NULL ? gain : _("No estimate: apply it to measure the gain"));

  if (!advice->can_apply)
    reason = advice->cannot_apply != NULL && *advice->cannot_apply != '\0'
             ? advice->cannot_apply : _("This advice cannot be applied here");
  gtk_label_set_label (self->reason_label, reason != NULL ? reason : "");
  gtk_widget_set_visible (GTK_WIDGET (self->reason_label), reason != NULL);
  gtk_widget_set_tooltip_text (GTK_WIDGET (self->apply_button),
                               reason != NULL ? reason
                                              : _("Make this change on a copy, profile before and after, and compare"));
  gtk_widget_set_sensitive (GTK_WIDGET (self->apply_button), advice->can_apply && !self->busy);
  if (advice->can_apply && rank == 1)
    gtk_widget_add_css_class (GTK_WIDGET (self->apply_button), "suggested-action");
  else
    gtk_widget_remove_css_class (GTK_WIDGET (self->apply_button), "suggested-action");
}

guint
espalier_advice_card_get_index (EspalierAdviceCard *self)
{
  g_return_val_if_fail (ESPALIER_IS_ADVICE_CARD (self), 0);
  return self->index;
}

const char *
espalier_advice_card_get_name (EspalierAdviceCard *self)
{
  g_return_val_if_fail (ESPALIER_IS_ADVICE_CARD (self), NULL);
  return self->name;
}

void
espalier_advice_card_set_busy (EspalierAdviceCard *self,
                               gboolean            busy,
                               gboolean            applying)
{
  g_return_if_fail (ESPALIER_IS_ADVICE_CARD (self));

  self->busy = busy;
  gtk_widget_set_sensitive (GTK_WIDGET (self->apply_button), self->can_apply && !busy);
  gtk_stack_set_visible_child_name (self->button_stack, busy && applying ? "busy" : "apply");
  gtk_spinner_set_spinning (self->spinner, busy && applying);
}

static void
espalier_advice_card_dispose (GObject *object)
{
  gtk_widget_dispose_template (GTK_WIDGET (object), ESPALIER_TYPE_ADVICE_CARD);
  G_OBJECT_CLASS (espalier_advice_card_parent_class)->dispose (object);
}

static void
espalier_advice_card_finalize (GObject *object)
{
  EspalierAdviceCard *self = ESPALIER_ADVICE_CARD (object);

  g_free (self->name);
  G_OBJECT_CLASS (espalier_advice_card_parent_class)->finalize (object);
}

static void
espalier_advice_card_class_init (EspalierAdviceCardClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GtkWidgetClass *widget_class = GTK_WIDGET_CLASS (klass);

  object_class->dispose = espalier_advice_card_dispose;
  object_class->finalize = espalier_advice_card_finalize;

  signals[SIGNAL_APPLY] = g_signal_new ("apply", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                                        0, NULL, NULL, NULL, G_TYPE_NONE, 0);

  gtk_widget_class_set_template_from_resource (widget_class,
                                               "/io/github/espalier/Espalier/ui/espalier-advice-card.ui");
  gtk_widget_class_bind_template_child (widget_class, EspalierAdviceCard, rank_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierAdviceCard, title_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierAdviceCard, evidence_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierAdviceCard, action_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierAdviceCard, gain_label);
  gtk_widget_class_bind_template_child (widget_class, EspalierAdviceCard, button_stack);
  gtk_widget_class_bind_template_child (widget_class, EspalierAdviceCard, apply_button);
  gtk_widget_class_bind_template_child (widget_class, EspalierAdviceCard, spinner);
  gtk_widget_class_bind_template_child (widget_class, EspalierAdviceCard, reason_label);
  gtk_widget_class_bind_template_callback (widget_class, on_apply_clicked);
}

static void
espalier_advice_card_init (EspalierAdviceCard *self)
{
  gtk_widget_init_template (GTK_WIDGET (self));
}
