/* engine-test-util.h: data the engine's training tests share (test-train.c,
 * test-train-opt.c). Header-only, static; engine and GLib only. */
#pragma once

#include <glib.h>

#include "es-common.h"

/* Three gaussian blobs in 2-D: x (n, 2), labels y (n). */
G_GNUC_UNUSED static void
etu_blobs (float *x, int32_t *y, int n, uint64_t seed)
{
  static const float centers[3][2] = { { -2, 0 }, { 2, 0 }, { 0, 2.5f } };
  EsRng rng = { seed };

  for (int i = 0; i < n; i++)
    {
      int k = i % 3;

      x[2 * i] = centers[k][0] + 0.6f * (float) es_rng_normal (&rng);
      x[2 * i + 1] = centers[k][1] + 0.6f * (float) es_rng_normal (&rng);
      y[i] = k;
    }
}
