/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-optimize-util.c: see espalier-optimize-util.h. */
#include "config.h"

#include <math.h>
#include <glib/gi18n.h>

#include "espalier-optimize-util.h"

char *
espalier_layer_title (const EsModel *model,
                      int            layer)
{
  const EsLayerInfo *info;

  g_return_val_if_fail (model != NULL, NULL);
  g_return_val_if_fail (layer >= 0 && layer < es_model_n_layers (model), NULL);

  info = es_model_layer (model, layer);
  switch (info->spec.kind)
    {
    case ES_LAYER_DENSE:
      return g_strdup_printf ("%s %d", es_layer_kind_title (info->spec.kind), info->spec.units);
    case ES_LAYER_CONV2D:
      return g_strdup_printf ("%s %d", es_layer_kind_title (info->spec.kind), info->spec.filters);
    default:
      return g_strdup (es_layer_kind_title (info->spec.kind));
    }
}

char *
espalier_layer_label (const EsModel *model,
                      int            layer)
{
  g_autofree char *title = espalier_layer_title (model, layer);

  /* TRANSLATORS: a layer of the model, counted from 1, and its title ("Dense 128") */
  return title != NULL ? g_strdup_printf (_("Layer %d: %s"), layer + 1, title) : NULL;
}

gboolean
espalier_layer_has_weights (const EsModel *model,
                            int            layer)
{
  EsLayerKind kind;

  if (model == NULL || layer < 0 || layer >= es_model_n_layers (model))
    return FALSE;
  kind = es_model_layer (model, layer)->spec.kind;
  return kind == ES_LAYER_DENSE || kind == ES_LAYER_CONV2D;
}

char *
espalier_format_latency (double us)
{
  if (!isfinite (us))
    return g_strdup ("—");
  if (us >= 1000)
    return g_strdup_printf (_("%.3g ms"), us / 1000);
  return g_strdup_printf (us < 10 ? _("%.2f µs") : us < 100 ? _("%.1f µs") : _("%.0f µs"), us);
}

char *
espalier_format_less_is_better (double   a,
                                double   b,
                                gboolean fast_word)
{
  double r;

  if (!isfinite (a) || !isfinite (b) || a <= 0 || b <= 0)
    return g_strdup ("—");
  r = a / b;
  if (fabs (r - 1) < 0.005)
    /* TRANSLATORS: two variants measure the same */
    return g_strdup (_("same"));
  if (r > 1)
    /* TRANSLATORS: "2.41× faster", "3.9× smaller" */
    return g_strdup_printf (fast_word ? _("%.2f× faster") : _("%.2f× smaller"), r);
  return g_strdup_printf (fast_word ? _("%.2f× slower") : _("%.2f× larger"), 1 / r);
}
