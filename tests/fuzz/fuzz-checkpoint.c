/* SPDX-License-Identifier: GPL-3.0-or-later */
/* fuzz-checkpoint.c: the training checkpoint loader (espalier_checkpoint_load, the file
 * of `espalier-cli train --resume` and of the application's leftover checkpoint offer)
 * on arbitrary bytes.
 *
 * Input: an options byte, then the checkpoint file. Bit 0 of the options: re-hash,
 * the SHA-256 in the state (the 64 hex digits after its "sha256") made that of the
 * file's tensor data, so that fuzzed tensors get past the checksum as tensors a user
 * edited by hand (and re-hashed) would; without it the fuzzed file is loaded as it is.
 * Bits 1-2: the input shape the model of the checkpoint's spec is built on (SHAPES).
 *
 * A checkpoint that loads must save and load back with the same state, field for
 * field; checked against the model its spec builds, it fits (and then has that
 * model's parameter and buffer counts) or is refused with ESPALIER_ERROR_SHAPE. */
#include "config.h"

#include <math.h>

#include "espalier-checkpoint.h"
#include "espalier-error.h"
#include "espalier-templates.h"
#include "fuzz-common.h"

#define OPT_REHASH 0x01

/* The input shapes of the options' bits 1-2 (the seeds' models use the first three). */
static const EsShape SHAPES[4] = {
  { .rank = 1, .dims = { 2 } },
  { .rank = 1, .dims = { 4 } },
  { .rank = 3, .dims = { 1, 4, 4 } },
  { .rank = 3, .dims = { 1, 28, 28 } },
};

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_init ();
  return 0;
}

/* The state's SHA-256 (file, len bytes) replaced with that of the data after the header,
 * which is what the tensors hash to when they lie side by side as the writer puts them.
 * Nothing happens when the header length or the digest is not where it would be. */
static void
rehash (guint8 *file, gsize len)
{
  static const char key[] = "sha256\\\":\\\"";   /* inside the JSON string of the state */
  guint64 hlen = 0;
  guint8 *at;
  g_autofree char *sum = NULL;

  if (len < 8)
    return;
  for (int i = 0; i < 8; i++)
    hlen |= (guint64) file[i] << (8 * i);
  if (hlen > len - 8)
    return;
  at = memmem (file + 8, (gsize) hlen, key, sizeof key - 1);
  if (at == NULL || (gsize) (at - file) + sizeof key - 1 + 64 > 8 + hlen)
    return;
  sum = g_compute_checksum_for_data (G_CHECKSUM_SHA256, file + 8 + hlen, len - 8 - (gsize) hlen);
  memcpy (at + sizeof key - 1, sum, 64);
}

static gboolean
same_double (double a, double b)
{
  return a == b || (isnan (a) && isnan (b));
}

/* a and b hold the same state (b was saved from a and loaded back). */
static void
assert_same (const EspalierCheckpoint *a, const EspalierCheckpoint *b)
{
  gint64 P = a->n_params, Q = a->n_buffers;

  g_assert_cmpuint (a->info.epoch, ==, b->info.epoch);
  g_assert_cmpuint (a->info.position, ==, b->info.position);
  g_assert_cmpint (a->info.step, ==, b->info.step);
  g_assert_cmpuint (a->info.ranks, ==, b->info.ranks);
  g_assert_cmpuint (a->info.batch, ==, b->info.batch);
  g_assert_cmpuint (a->info.seed, ==, b->info.seed);
  g_assert_cmpstr (a->spec, ==, b->spec);
  g_assert_cmpint (P, ==, b->n_params);
  g_assert_cmpint (Q, ==, b->n_buffers);
  g_assert_cmpuint (a->n_train, ==, b->n_train);
  g_assert_true (same_double (a->loss_sum, b->loss_sum));
  g_assert_cmpint (a->correct, ==, b->correct);
  g_assert_cmpint (a->rows, ==, b->rows);
  g_assert_cmpuint (a->history->len, ==, b->history->len);
  for (guint i = 0; i < a->history->len; i++)
    {
      const EspalierEpochRecord *ra = &g_array_index (a->history, EspalierEpochRecord, i);
      const EspalierEpochRecord *rb = &g_array_index (b->history, EspalierEpochRecord, i);

      g_assert_cmpuint (ra->epoch, ==, rb->epoch);
      g_assert_true (same_double (ra->train_loss, rb->train_loss)
                     && same_double (ra->train_accuracy, rb->train_accuracy)
                     && same_double (ra->val_loss, rb->val_loss)
                     && same_double (ra->val_accuracy, rb->val_accuracy)
                     && same_double (ra->lr, rb->lr) && same_double (ra->seconds, rb->seconds));
    }
  g_assert_true (memcmp (a->params, b->params, (gsize) P * sizeof (float)) == 0);
  g_assert_true ((a->buffers == NULL) == (b->buffers == NULL));
  if (a->buffers != NULL)
    g_assert_true (memcmp (a->buffers, b->buffers, (gsize) Q * sizeof (float)) == 0);
  g_assert_cmpint (a->n_slots, ==, b->n_slots);
  if (a->n_slots > 0)
    g_assert_true (memcmp (a->slots, b->slots, (gsize) (a->n_slots * P) * sizeof (float)) == 0);

  g_assert_cmpint (a->have_best, ==, b->have_best);
  g_assert_true (same_double (a->best_val, b->best_val));
  g_assert_cmpuint (a->best_epoch, ==, b->best_epoch);
  g_assert_cmpuint (a->bad_epochs, ==, b->bad_epochs);
  g_assert_true ((a->best == NULL) == (b->best == NULL));
  if (a->best != NULL)
    g_assert_true (memcmp (a->best, b->best, (gsize) (P + Q) * sizeof (float)) == 0);

  g_assert_cmpuint (a->n_layers, ==, b->n_layers);
  for (guint i = 0; i < a->n_layers; i++)
    {
      g_assert_cmpint (a->range_set[i], ==, b->range_set[i]);
      if (a->range_set[i])
        {
          g_assert_cmpfloat (a->range_lo[i], ==, b->range_lo[i]);
          g_assert_cmpfloat (a->range_hi[i], ==, b->range_hi[i]);
        }
    }

  g_assert_cmpint (a->next_event, ==, b->next_event);
  g_assert_cmpuint (a->prune_events->len, ==, b->prune_events->len);
  for (guint i = 0; i < a->prune_events->len; i++)
    {
      const EspalierCheckpointPruneEvent *ea =
          &g_array_index (a->prune_events, EspalierCheckpointPruneEvent, i);
      const EspalierCheckpointPruneEvent *eb =
          &g_array_index (b->prune_events, EspalierCheckpointPruneEvent, i);

      g_assert_cmpint (ea->step, ==, eb->step);
      g_assert_cmpfloat (ea->target, ==, eb->target);
      g_assert_cmpfloat (ea->sparsity, ==, eb->sparsity);
    }
  g_assert_true ((a->mask == NULL) == (b->mask == NULL));
  if (a->mask != NULL)
    g_assert_true (memcmp (a->mask, b->mask, (gsize) P) == 0);

  g_assert_cmpint (a->have_scaler, ==, b->have_scaler);
  if (a->have_scaler)
    {
      g_assert_cmpfloat (a->loss_scale, ==, b->loss_scale);
      g_assert_cmpint (a->scale_clean, ==, b->scale_clean);
      g_assert_cmpint (a->skipped_steps, ==, b->skipped_steps);
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autofree char *path = NULL, *rt_path = NULL;
  g_autofree guint8 *file = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierCheckpoint) ck = NULL, again = NULL;
  EsModel *model;
  gsize len;

  fuzz_init ();
  if (size < 1)
    return 0;
  len = size - 1;
  file = g_memdup2 (data + 1, len);
  if (data[0] & OPT_REHASH)
    rehash (file, len);
  path = fuzz_write ("c.ckpt", file, len);
  ck = espalier_checkpoint_load (path, &error);
  g_assert ((ck == NULL) != (error == NULL));
  if (ck == NULL)
    {
      /* a file that is there but not a checkpoint is a format problem; one that does
       * not fit the (pretend) machine, a memory one */
      if (!g_error_matches (error, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT)
          && !g_error_matches (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY))
        g_error ("refused with an unexpected error: %s", error->message);
      return 0;
    }
  g_assert_nonnull (ck->spec);
  g_assert_nonnull (ck->params);

  /* whatever the loader accepts, the writer must accept, and it must read back */
  rt_path = g_build_filename (fuzz_tmp_dir, "rt.ckpt", NULL);
  if (!espalier_checkpoint_save (ck, rt_path, &error))
    g_error ("loaded but does not save: %s", error->message);
  again = espalier_checkpoint_load (rt_path, &error);
  if (again == NULL)
    g_error ("saved but does not load back: %s", error->message);
  assert_same (ck, again);

  /* the model its spec builds: when it fits, the counts are that model's */
  model = espalier_model_from_spec (ck->spec, &SHAPES[(data[0] >> 1) & 3], &error);
  g_assert ((model == NULL) != (error == NULL));
  g_clear_error (&error);
  if (model != NULL)
    {
      gboolean counts = ck->n_params == es_model_n_params (model)
                        && ck->n_buffers == es_model_n_buffers (model);
      gboolean fits = espalier_checkpoint_fits_model (ck, model, &error);

      g_assert ((fits && error == NULL)
                || (!fits && g_error_matches (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE)));
      if (fits)
        g_assert_true (counts);
      es_model_free (model);
    }
  return 0;
}
