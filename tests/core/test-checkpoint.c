/* test-checkpoint.c: training checkpoints (espalier-checkpoint.h) and the last good
 * state (espalier-trainer.h): a checkpoint reads back field for field; a run stopped
 * and resumed from its checkpoint ends with the same weights, bit for bit, as one that
 * ran through, with early stopping, fake quantization and gradual pruning too, whose
 * state the checkpoint carries; fp16's loss scaler reads back, and a checkpoint without
 * one (as written before it was kept) still loads; a checkpoint of another model, a
 * truncated one and a damaged one are refused; and a loss that turns NaN stops the run
 * naming the step and the layer, the model holding the last good (finite) weights. */
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include "espalier-checkpoint.h"
#include "espalier-dataset.h"
#include "espalier-error.h"
#include "espalier-templates.h"
#include "espalier-trainer.h"
#include "scratch-test-util.h"

static EspalierDataset *
load (const char *spec)
{
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions lo;
  EspalierDataset *ds;

  espalier_load_options_init (&lo);
  lo.use_cache = FALSE;
  ds = espalier_dataset_load (spec, &lo, NULL, &error);
  g_assert_no_error (error);
  return ds;
}

static EsModel *
model_on (const char *spec, guint64 seed)
{
  g_autoptr(GError) error = NULL;
  EsShape in = { 1, { 2 } };
  EsModel *m = espalier_model_from_spec (spec, &in, &error);

  g_assert_no_error (error);
  es_model_init (m, seed);
  return m;
}

/* ---- the file ---------------------------------------------------------------- */

static EspalierCheckpoint *
sample_checkpoint (EsModel *m)
{
  EspalierCheckpoint *ck = espalier_checkpoint_new ();
  gint64 P = es_model_n_params (m), Q = es_model_n_buffers (m);
  EspalierEpochRecord rec = { .epoch = 1, .train_loss = 0.75, .train_accuracy = 0.5,
                              .val_loss = 0.8125, .val_accuracy = 0.4, .lr = 1e-3,
                              .seconds = 0.25 };
  EspalierCheckpointPruneEvent ev = { 12, 0.5, 0.49375 };

  ck->info = (EspalierCheckpointInfo) { .epoch = 2, .position = 48, .step = 13, .ranks = 1,
                                        .batch = 16, .seed = 77 };
  ck->spec = espalier_model_to_spec (m);
  ck->n_params = P;
  ck->n_buffers = Q;
  ck->n_train = 240;
  ck->loss_sum = 31.0 / 3.0;
  ck->correct = 29;
  ck->rows = 48;
  g_array_append_val (ck->history, rec);
  ck->params = g_memdup2 (es_model_params_const (m), P * sizeof (float));
  ck->buffers = Q > 0 ? g_memdup2 (es_model_buffers_const (m), Q * sizeof (float)) : NULL;
  ck->n_slots = 2;
  ck->slots = g_new (float, 2 * P);
  for (gint64 i = 0; i < 2 * P; i++)
    ck->slots[i] = (float) i / 7.0f;
  ck->have_best = TRUE;
  ck->best_val = 0.8125;
  ck->best_epoch = 1;
  ck->bad_epochs = 0;
  ck->best = g_new (float, P + Q);
  for (gint64 i = 0; i < P + Q; i++)
    ck->best[i] = -(float) i / 3.0f;
  ck->n_layers = (guint) es_model_n_layers (m);
  ck->range_lo = g_new0 (float, ck->n_layers);
  ck->range_hi = g_new0 (float, ck->n_layers);
  ck->range_set = g_new0 (gboolean, ck->n_layers);
  ck->range_set[0] = TRUE;
  ck->range_lo[0] = -1.0f / 3.0f;
  ck->range_hi[0] = 2.7182817f;
  ck->next_event = 2;
  g_array_append_val (ck->prune_events, ev);
  ck->mask = g_new (guint8, P);
  for (gint64 i = 0; i < P; i++)
    ck->mask[i] = i % 3 != 0;
  return ck;
}

static void
test_round_trip (void)
{
  g_autoptr(GError) error = NULL;
  EsModel *m = model_on ("dense:8,batchnorm,relu,dense:3", 1);
  g_autoptr(EspalierCheckpoint) ck = sample_checkpoint (m);
  g_autoptr(EspalierCheckpoint) back = NULL;
  g_autofree char *path = tmp_path ("run.ckpt");
  gint64 P = ck->n_params, Q = ck->n_buffers;
  const EspalierEpochRecord *r0, *r1;

  g_assert_cmpint (Q, >, 0);
  g_assert_true (espalier_checkpoint_save (ck, path, &error));
  g_assert_no_error (error);
  back = espalier_checkpoint_load (path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (back);
  g_assert_true (memcmp (&back->info, &ck->info, sizeof ck->info) == 0);
  g_assert_cmpstr (back->spec, ==, ck->spec);
  g_assert_cmpint (back->n_params, ==, P);
  g_assert_cmpint (back->n_buffers, ==, Q);
  g_assert_cmpuint (back->n_train, ==, ck->n_train);
  g_assert_cmpfloat (back->loss_sum, ==, ck->loss_sum);
  g_assert_cmpint (back->correct, ==, ck->correct);
  g_assert_cmpint (back->rows, ==, ck->rows);
  g_assert_cmpuint (back->history->len, ==, 1);
  r0 = &g_array_index (ck->history, EspalierEpochRecord, 0);
  r1 = &g_array_index (back->history, EspalierEpochRecord, 0);
  g_assert_cmpfloat (r1->train_loss, ==, r0->train_loss);
  g_assert_cmpfloat (r1->val_loss, ==, r0->val_loss);
  g_assert_true (memcmp (back->params, ck->params, P * sizeof (float)) == 0);
  g_assert_true (memcmp (back->buffers, ck->buffers, Q * sizeof (float)) == 0);
  g_assert_cmpint (back->n_slots, ==, 2);
  g_assert_true (memcmp (back->slots, ck->slots, 2 * P * sizeof (float)) == 0);
  g_assert_true (back->have_best);
  g_assert_cmpfloat (back->best_val, ==, ck->best_val);
  g_assert_cmpuint (back->best_epoch, ==, 1);
  g_assert_nonnull (back->best);
  g_assert_true (memcmp (back->best, ck->best, (P + Q) * sizeof (float)) == 0);
  g_assert_cmpuint (back->n_layers, >=, 1);
  g_assert_true (back->range_set[0]);
  g_assert_cmpfloat (back->range_lo[0], ==, ck->range_lo[0]);
  g_assert_cmpfloat (back->range_hi[0], ==, ck->range_hi[0]);
  for (guint i = 1; i < back->n_layers; i++)
    g_assert_false (back->range_set[i]);
  g_assert_cmpint (back->next_event, ==, 2);
  g_assert_cmpuint (back->prune_events->len, ==, 1);
  g_assert_cmpint (g_array_index (back->prune_events, EspalierCheckpointPruneEvent, 0).step, ==, 12);
  g_assert_cmpfloat (g_array_index (back->prune_events, EspalierCheckpointPruneEvent, 0).sparsity,
                     ==, 0.49375);
  g_assert_nonnull (back->mask);
  g_assert_true (memcmp (back->mask, ck->mask, P) == 0);

  /* non-finite weights are not a state worth writing */
  ck->params[3] = NAN;
  g_assert_false (espalier_checkpoint_save (ck, path, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC);
  remove_with_dir (path);
  es_model_free (m);
}

/* fp16 dynamic loss scaling's state reads back exactly; a checkpoint without it (as
 * written before it was kept, or by a run that did not scale) loads without; a scale
 * that is not positive is refused. */
static void
test_loss_scaler (void)
{
  g_autoptr(GError) error = NULL;
  EsModel *m = model_on ("dense:8,relu,dense:3", 1);
  g_autoptr(EspalierCheckpoint) ck = sample_checkpoint (m);
  g_autofree char *path = tmp_path ("run.ckpt");
  g_autofree char *text = NULL;
  EspalierCheckpoint *back;

  ck->have_scaler = TRUE;
  ck->loss_scale = 12345.678f;
  ck->scale_clean = 7;
  ck->skipped_steps = 42;
  g_assert_true (espalier_checkpoint_save (ck, path, &error));
  g_assert_no_error (error);
  back = espalier_checkpoint_load (path, &error);
  g_assert_no_error (error);
  g_assert_true (back->have_scaler);
  g_assert_cmpfloat (back->loss_scale, ==, ck->loss_scale);
  g_assert_cmpint (back->scale_clean, ==, 7);
  g_assert_cmpint (back->skipped_steps, ==, 42);
  g_assert_cmpint (back->info.step, ==, ck->info.step);
  espalier_checkpoint_free (back);

  ck->have_scaler = FALSE;
  g_assert_true (espalier_checkpoint_save (ck, path, &error));
  g_assert_true (g_file_get_contents (path, &text, NULL, &error));
  g_assert_null (strstr (text + 8, "loss_scaler"));
  back = espalier_checkpoint_load (path, &error);
  g_assert_no_error (error);
  g_assert_false (back->have_scaler);
  g_assert_true (back->have_best);   /* the rest of the hooks' state as before */
  g_assert_cmpint (back->next_event, ==, 2);
  espalier_checkpoint_free (back);

  ck->have_scaler = TRUE;
  ck->loss_scale = 0.0f;
  g_assert_true (espalier_checkpoint_save (ck, path, &error));
  back = espalier_checkpoint_load (path, &error);
  g_assert_null (back);
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT);
  g_test_message ("%s", error->message);
  remove_with_dir (path);
  es_model_free (m);
}

static void
test_damaged_refused (void)
{
  g_autoptr(GError) error = NULL;
  EsModel *m = model_on ("dense:8,relu,dense:3", 2);
  g_autoptr(EspalierCheckpoint) ck = sample_checkpoint (m);
  g_autofree char *path = tmp_path ("run.ckpt");
  g_autofree char *bytes = NULL;
  gsize len = 0;
  gsize cuts[5];

  g_assert_true (espalier_checkpoint_save (ck, path, &error));
  g_assert_true (g_file_get_contents (path, &bytes, &len, &error));
  cuts[0] = 0;
  cuts[1] = 5;
  cuts[2] = len / 3;       /* inside the header */
  cuts[3] = len - 40;      /* inside the tensors */
  cuts[4] = len - 1;
  for (guint i = 0; i < G_N_ELEMENTS (cuts); i++)
    {
      EspalierCheckpoint *got;

      g_assert_true (g_file_set_contents (path, bytes, (gssize) cuts[i], &error));
      got = espalier_checkpoint_load (path, &error);
      g_assert_null (got);
      g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT);
      g_test_message ("cut at %" G_GSIZE_FORMAT ": %s", cuts[i], error->message);
      g_clear_error (&error);
    }
  /* one flipped bit in the last tensor: the SHA-256 no longer matches */
  bytes[len - 2] ^= 0x10;
  g_assert_true (g_file_set_contents (path, bytes, (gssize) len, &error));
  g_assert_null (espalier_checkpoint_load (path, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT);
  g_assert_nonnull (strstr (error->message, "SHA-256"));
  g_clear_error (&error);
  remove_with_dir (path);
  g_assert_null (espalier_checkpoint_load (path, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_IO);
  es_model_free (m);
}

static void
test_wrong_model (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load ("blobs:n=120,centers=3,noise=0.3,seed=2");
  EsModel *m = model_on ("dense:8,relu,dense:3", 2);
  EsModel *other = model_on ("dense:9,relu,dense:3", 2);
  g_autoptr(EspalierCheckpoint) ck = sample_checkpoint (m);
  g_autoptr(EspalierTrainer) tr = espalier_trainer_new (ds, other, NULL);
  g_autofree char *path = tmp_path ("run.ckpt");

  g_assert_true (espalier_checkpoint_fits_model (ck, m, &error));
  g_assert_false (espalier_checkpoint_fits_model (ck, other, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);
  g_clear_error (&error);
  g_assert_true (espalier_checkpoint_save (ck, path, &error));
  g_assert_false (espalier_trainer_set_resume (tr, path, NULL, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);
  g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, "dense:9"));
  remove_with_dir (path);
  es_model_free (m);
  es_model_free (other);
}

/* ---- damaged headers (tests/fuzz/fuzz-checkpoint.c) ---------------------------- */

/* The checkpoint file bytes (len) with its header's text edited: the first from replaced
 * by to (which must be there); the header padded and its length rewritten. */
static guint8 *
edit_header (const guint8 *bytes, gsize len, const char *from, const char *to, gsize *out_len)
{
  guint64 hlen = 0;
  g_autoptr(GString) h = NULL;
  GByteArray *out = g_byte_array_new ();
  guint8 len_le[8];

  for (int i = 0; i < 8; i++)
    hlen |= (guint64) bytes[i] << (8 * i);
  h = g_string_new_len ((const char *) bytes + 8, (gssize) hlen);
  g_assert_nonnull (strstr (h->str, from));
  g_string_replace (h, from, to, 1);
  while (h->len > 0 && h->str[h->len - 1] == ' ')
    g_string_truncate (h, h->len - 1);
  while (h->len % 8 != 0)
    g_string_append_c (h, ' ');
  for (int i = 0; i < 8; i++)
    len_le[i] = (guint8) ((guint64) h->len >> (8 * i));
  g_byte_array_append (out, len_le, 8);
  g_byte_array_append (out, (const guint8 *) h->str, (guint) h->len);
  g_byte_array_append (out, bytes + 8 + hlen, (guint) (len - 8 - hlen));
  *out_len = out->len;
  return g_byte_array_free (out, FALSE);
}

/* The state's SHA-256 made that of the file's tensor data (bytes, len), as a user who
 * edited the tensors by hand and re-hashed them would. */
static void
rehash (guint8 *bytes, gsize len)
{
  static const char key[] = "sha256\\\":\\\"";
  guint64 hlen = 0;
  g_autofree char *sum = NULL;
  guint8 *at;

  for (int i = 0; i < 8; i++)
    hlen |= (guint64) bytes[i] << (8 * i);
  at = memmem (bytes + 8, hlen, key, sizeof key - 1);
  g_assert_nonnull (at);
  sum = g_compute_checksum_for_data (G_CHECKSUM_SHA256, bytes + 8 + hlen, len - 8 - hlen);
  memcpy (at + sizeof key - 1, sum, 64);
}

/* Loading bytes (len) fails with code; returns the message. */
static char *
load_fails (const guint8 *bytes, gsize len, gint code)
{
  g_autofree char *path = tmp_path ("edited.ckpt");
  g_autoptr(GError) error = NULL;
  EspalierCheckpoint *got;
  char *message;

  g_assert_true (g_file_set_contents (path, (const char *) bytes, (gssize) len, &error));
  got = espalier_checkpoint_load (path, &error);
  g_assert_null (got);
  g_assert_error (error, ESPALIER_ERROR, code);
  g_test_message ("%s", error->message);
  message = g_strdup (error->message);
  remove_with_dir (path);
  return message;
}

/* A small file declaring 2^31 - 1 parameters (or buffers) is refused, naming the sizes,
 * before anything is allocated for them: it used to ask for tens of GB and abort. */
static void
test_huge_declared (void)
{
  g_autoptr(GError) error = NULL;
  EsModel *m = model_on ("dense:8,batchnorm,relu,dense:3", 3);
  g_autoptr(EspalierCheckpoint) ck = sample_checkpoint (m);
  g_autofree char *path = tmp_path ("run.ckpt");
  g_autofree char *bytes = NULL;
  g_autofree char *from_p = NULL, *from_q = NULL;
  gsize len = 0;

  g_assert_true (espalier_checkpoint_save (ck, path, &error));
  g_assert_true (g_file_get_contents (path, &bytes, &len, &error));
  from_p = g_strdup_printf ("\\\"n_params\\\":%lld,", (long long) ck->n_params);
  from_q = g_strdup_printf ("\\\"n_buffers\\\":%lld,", (long long) ck->n_buffers);
  {
    gsize n = 0;
    g_autofree guint8 *huge = edit_header ((guint8 *) bytes, len, from_p,
                                           "\\\"n_params\\\":2147483647,", &n);
    g_autofree char *msg = load_fails (huge, n, ESPALIER_ERROR_FORMAT);

    g_assert_nonnull (strstr (msg, "2147483647 parameters"));
    g_assert_nonnull (strstr (msg, "truncated or damaged"));
  }
  {
    gsize n = 0;
    g_autofree guint8 *huge = edit_header ((guint8 *) bytes, len, from_q,
                                           "\\\"n_buffers\\\":2147483647,", &n);
    g_autofree char *msg = load_fails (huge, n, ESPALIER_ERROR_FORMAT);

    g_assert_nonnull (strstr (msg, "2147483647 buffers"));
  }
  /* tensors the data holds, on a machine they do not fit: a memory error, no abort */
  {
    const char *before = g_getenv ("ESPALIER_MEMORY_AVAILABLE");
    g_autofree char *saved = g_strdup (before);
    g_autofree char *msg = NULL;

    g_setenv ("ESPALIER_MEMORY_AVAILABLE", "64", TRUE);
    msg = load_fails ((guint8 *) bytes, len, ESPALIER_ERROR_MEMORY);
    if (saved != NULL)
      g_setenv ("ESPALIER_MEMORY_AVAILABLE", saved, TRUE);
    else
      g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");
    g_assert_nonnull (strstr (msg, "edited.ckpt"));
  }
  remove_with_dir (path);
  es_model_free (m);
}

/* Tensor entries whose shape or offsets are not integers, or lie far outside the file,
 * and weights that are not finite (re-hashed, so that only the values are wrong), are
 * refused as damaged. */
static void
test_damaged_entries (void)
{
  static const struct { const char *from, *to; } edits[] = {
    { "\"shape\":[", "\"shape\":[{}],\"y\":[" },
    { "\"shape\":[", "\"shape\":[[1]],\"y\":[" },
    { "\"shape\":[", "\"shape\":[\"x\"],\"y\":[" },
    { "\"data_offsets\":[0,", "\"data_offsets\":[{},[]],\"y\":[0," },
    { "\"data_offsets\":[0,", "\"data_offsets\":[0.5,\"x\"],\"y\":[0," },
    { "\"data_offsets\":[0,", "\"data_offsets\":[0,{\"a\":1}],\"y\":[0," },
    { "\"data_offsets\":[0,", "\"data_offsets\":[9223372036854775807,1],\"y\":[0," },
    { "\"data_offsets\":[0,", "\"data_offsets\":[-8,1],\"y\":[0," },
  };
  g_autoptr(GError) error = NULL;
  EsModel *m = model_on ("dense:8,relu,dense:3", 4);
  g_autoptr(EspalierCheckpoint) ck = sample_checkpoint (m);
  g_autofree char *path = tmp_path ("run.ckpt");
  g_autofree char *bytes = NULL;
  gsize len = 0;
  float nan = NAN;

  g_assert_true (espalier_checkpoint_save (ck, path, &error));
  g_assert_true (g_file_get_contents (path, &bytes, &len, &error));
  for (guint i = 0; i < G_N_ELEMENTS (edits); i++)
    {
      gsize n = 0;
      g_autofree guint8 *bad = edit_header ((guint8 *) bytes, len, edits[i].from, edits[i].to, &n);
      g_autofree char *msg = load_fails (bad, n, ESPALIER_ERROR_FORMAT);

      g_assert_nonnull (strstr (msg, "params"));
    }
  /* the last parameter (the end of "params", which comes first) made NaN */
  {
    g_autofree guint8 *bad = g_memdup2 (bytes, len);
    guint64 hlen = 0;
    g_autofree char *msg = NULL;

    for (int i = 0; i < 8; i++)
      hlen |= (guint64) bad[i] << (8 * i);
    memcpy (bad + 8 + hlen + (ck->n_params - 1) * 4, &nan, 4);
    rehash (bad, len);
    msg = load_fails (bad, len, ESPALIER_ERROR_FORMAT);
    g_assert_nonnull (strstr (msg, "not finite"));
  }
  remove_with_dir (path);
  es_model_free (m);
}

/* ---- exact resume ------------------------------------------------------------- */

typedef enum { PLAIN, EARLY_STOP, QAT, GRADUAL } Extra;

static void
setup (EspalierTrainer *tr, EsModel *m, Extra extra)
{
  if (extra == QAT)
    {
      gboolean layers[8] = { 0 };

      for (int i = 0; i < es_model_n_layers (m); i++)
        layers[i] = es_model_layer (m, i)->spec.kind == ES_LAYER_DENSE;
      espalier_trainer_set_fake_quant (tr, layers, FALSE);
    }
  else if (extra == GRADUAL)
    {
      EspalierPruneSchedule sc = { .initial_sparsity = 0.0, .final_sparsity = 0.6,
                                   .begin_step = 4, .frequency = 6, .n_events = 5,
                                   .scope = ES_PRUNE_PER_LAYER };

      espalier_trainer_set_prune_schedule (tr, &sc);
    }
}

static void
options (EspalierTrainOptions *o, Extra extra)
{
  espalier_train_options_init (o);
  o->epochs = 4;
  o->batch_size = 16;
  o->seed = 11;
  o->threads = 1;
  o->val_fraction = 0.2;
  o->test_fraction = 0.0;
  o->engine.optimizer = ES_OPT_ADAM;
  o->engine.lr = 0.02f;
  if (extra == EARLY_STOP)
    {
      o->patience = 50;   /* never runs out: the run ends on its best epoch */
      o->epochs = 5;
    }
}

/* Train through; then train again from the same start, stopped in epoch 3 with a
 * checkpoint every `every` steps, and resumed from the checkpoint: both end with the
 * same weights, buffers and history. */
static void
check_exact_resume (Extra extra, guint every)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load ("blobs:n=300,centers=3,noise=0.3,seed=2");
  const char *spec = extra == PLAIN ? "dense:16,batchnorm,relu,dense:3" : "dense:16,relu,dense:3";
  EsModel *a = model_on (spec, 5), *b = model_on (spec, 5), *c = model_on (spec, 99);
  g_autofree char *path = tmp_path ("run.ckpt");
  g_autoptr(EspalierTrainer) ta = NULL, tb = NULL, tc = NULL;
  g_autoptr(EspalierCheckpoint) ck = NULL;
  EspalierCheckpointInfo info;
  EspalierTrainOptions o;
  Stopper stop = { g_cancellable_new (), 3 };
  GArray *ha, *hc;

  options (&o, extra);
  ta = espalier_trainer_new (ds, a, &o);
  setup (ta, a, extra);
  g_assert_true (espalier_trainer_run (ta, NULL, NULL, NULL, &error));
  g_assert_no_error (error);

  tb = espalier_trainer_new (ds, b, &o);
  setup (tb, b, extra);
  espalier_trainer_set_checkpoint (tb, path, every);
  g_assert_false (espalier_trainer_run (tb, stop.cancel, stop_in_epoch, &stop, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_clear_error (&error);
  g_assert_true (espalier_trainer_get_last_checkpoint (tb, &info));
  g_test_message ("stopped; the checkpoint is of step %lld, epoch %u, %llu rows in",
                  (long long) info.step, info.epoch, (unsigned long long) info.position);
  g_assert_cmpint (info.step % every, ==, 0);
  g_assert_cmpuint (info.epoch, >=, 2);

  /* what the checkpoint carries of the hooks, against the stopped run's own state
   * (with a checkpoint every step, the last is of the run's last step) */
  ck = espalier_checkpoint_load (path, &error);
  g_assert_no_error (error);
  if (extra == EARLY_STOP)
    {
      GArray *h = ck->history;
      double best = INFINITY;
      guint best_epoch = 0;

      g_assert_cmpuint (h->len, ==, info.epoch - 1);
      for (guint i = 0; i < h->len; i++)
        if (g_array_index (h, EspalierEpochRecord, i).val_loss < best)
          {
            best = g_array_index (h, EspalierEpochRecord, i).val_loss;
            best_epoch = i + 1;
          }
      g_assert_true (ck->have_best);
      g_assert_nonnull (ck->best);
      g_assert_cmpfloat (ck->best_val, ==, best);
      g_assert_cmpuint (ck->best_epoch, ==, best_epoch);
      g_assert_cmpuint (ck->bad_epochs, ==, h->len - best_epoch);
    }
  if (extra == QAT)
    {
      guint ranged = 0;

      g_assert_cmpint (every, ==, 1);
      for (guint i = 0; i < ck->n_layers; i++)
        {
          float lo = 0, hi = 0;
          gboolean set = espalier_trainer_get_input_range (tb, i, &lo, &hi);

          g_assert_cmpint (set, ==, ck->range_set[i]);
          if (set)
            {
              g_assert_cmpfloat (lo, ==, ck->range_lo[i]);
              g_assert_cmpfloat (hi, ==, ck->range_hi[i]);
              ranged++;
            }
        }
      g_assert_cmpuint (ranged, ==, 2);
    }
  if (extra == GRADUAL)
    {
      GArray *ev = espalier_trainer_get_prune_events (tb);

      g_assert_cmpint (every, ==, 1);
      g_assert_cmpuint (ck->prune_events->len, ==, ev->len);
      g_assert_cmpuint (ev->len, >=, 1);
      g_assert_cmpint (ck->next_event, ==, (gint64) ev->len);
      for (guint i = 0; i < ev->len; i++)
        g_assert_cmpint (g_array_index (ck->prune_events, EspalierCheckpointPruneEvent, i).step,
                         ==, g_array_index (ev, EspalierPruneEvent, i).step);
      g_assert_nonnull (ck->mask);
      g_assert_true (memcmp (ck->mask, es_mask_data_const (espalier_trainer_get_mask (tb)),
                             ck->n_params) == 0);
    }

  tc = espalier_trainer_new (ds, c, &o);
  setup (tc, c, extra);
  g_assert_true (espalier_trainer_set_resume (tc, path, &info, &error));
  g_assert_no_error (error);
  g_assert_true (espalier_trainer_run (tc, NULL, NULL, NULL, &error));
  g_assert_no_error (error);

  g_assert_true (memcmp (es_model_params_const (a), es_model_params_const (c),
                         es_model_n_params (a) * sizeof (float)) == 0);
  g_assert_true (memcmp (es_model_buffers_const (a), es_model_buffers_const (c),
                         es_model_n_buffers (a) * sizeof (float)) == 0);
  ha = espalier_trainer_get_history (ta);
  hc = espalier_trainer_get_history (tc);
  g_assert_cmpuint (ha->len, ==, hc->len);
  for (guint i = 0; i < ha->len; i++)
    {
      const EspalierEpochRecord *x = &g_array_index (ha, EspalierEpochRecord, i);
      const EspalierEpochRecord *y = &g_array_index (hc, EspalierEpochRecord, i);

      g_assert_cmpfloat (x->train_loss, ==, y->train_loss);
      g_assert_cmpfloat (x->train_accuracy, ==, y->train_accuracy);
      g_assert_cmpfloat (x->val_loss, ==, y->val_loss);
    }
  if (extra == GRADUAL)
    g_assert_true (memcmp (es_mask_data_const (espalier_trainer_get_mask (ta)),
                           es_mask_data_const (espalier_trainer_get_mask (tc)),
                           es_model_n_params (a)) == 0);
  g_object_unref (stop.cancel);
  remove_with_dir (path);
  es_model_free (a);
  es_model_free (b);
  es_model_free (c);
}

static void test_exact_resume (void) { check_exact_resume (PLAIN, 5); }
static void test_resume_early_stopping (void) { check_exact_resume (EARLY_STOP, 3); }
static void test_resume_qat (void) { check_exact_resume (QAT, 1); }
static void test_resume_gradual (void) { check_exact_resume (GRADUAL, 1); }

/* ---- NaN ---------------------------------------------------------------------- */

static void
test_nan_stop (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load ("blobs:n=300,centers=3,noise=0.3,seed=2");
  EsModel *m = model_on ("dense:16,relu,dense:16,relu,dense:3", 4);
  g_autofree char *path = tmp_path ("run.ckpt");
  g_autoptr(EspalierTrainer) tr = NULL;
  g_autoptr(GRegex) re = g_regex_new ("step (\\d+) \\(epoch (\\d+)\\).*layer (\\d+) \\((\\w+)\\)"
                                      ".*weights of step (\\d+)", 0, 0, NULL);
  g_autoptr(GMatchInfo) mi = NULL;
  g_autoptr(EspalierCheckpoint) ck = NULL;
  g_autofree char *s_step = NULL, *s_layer = NULL, *s_kind = NULL, *s_good = NULL;
  EspalierTrainOptions o;
  gint64 P = es_model_n_params (m);
  int layer;

  espalier_train_options_init (&o);
  o.epochs = 2;
  o.batch_size = 16;
  o.seed = 3;
  o.threads = 1;
  o.engine.optimizer = ES_OPT_SGD;
  o.engine.lr = 1e30f;    /* the weights blow up within a few steps */
  tr = espalier_trainer_new (ds, m, &o);
  espalier_trainer_set_checkpoint (tr, path, 1);
  g_assert_false (espalier_trainer_run (tr, NULL, NULL, NULL, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC);
  g_test_message ("%s", error->message);
  g_assert_true (g_regex_match (re, error->message, 0, &mi));
  s_step = g_match_info_fetch (mi, 1);
  s_layer = g_match_info_fetch (mi, 3);
  s_kind = g_match_info_fetch (mi, 4);
  s_good = g_match_info_fetch (mi, 5);
  layer = atoi (s_layer);
  /* layers named from 1, with their kind */
  g_assert_cmpint (layer, >=, 1);
  g_assert_cmpint (layer, <=, es_model_n_layers (m));
  g_assert_cmpstr (s_kind, ==, es_layer_kind_name (es_model_layer (m, layer - 1)->spec.kind));
  g_assert_cmpint (g_ascii_strtoll (s_good, NULL, 10), <, g_ascii_strtoll (s_step, NULL, 10));

  /* the model holds finite weights: those of the last good step, the checkpoint's */
  for (gint64 i = 0; i < P; i++)
    g_assert_true (isfinite (es_model_params_const (m)[i]));
  g_clear_error (&error);
  ck = espalier_checkpoint_load (path, &error);
  if (g_ascii_strtoll (s_good, NULL, 10) > 0)
    {
      g_assert_no_error (error);
      g_assert_cmpint (ck->info.step, ==, g_ascii_strtoll (s_good, NULL, 10));
      g_assert_true (memcmp (ck->params, es_model_params_const (m), P * sizeof (float)) == 0);
    }
  else
    g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_IO);   /* none was good enough */
  remove_with_dir (path);
  es_model_free (m);
}

/* A planted infinity in the data: the first Dense layer's outputs go bad at the step
 * whose batch holds the row, and the model goes back to the last good state, taken
 * every ESPALIER_LAST_GOOD_EVERY steps without checkpoints (here: the start). */
static void
test_nan_planted (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load ("blobs:n=300,centers=3,noise=0.3,seed=2");
  float *x = (float *) espalier_dataset_get_f32 (ds);   /* the test owns this dataset */
  EsModel *m = model_on ("dense:16,relu,dense:3", 4);
  g_autofree float *start = g_memdup2 (es_model_params_const (m),
                                       es_model_n_params (m) * sizeof (float));
  g_autoptr(EspalierTrainer) tr = NULL;
  EspalierTrainOptions o;

  for (guint r = 0; r < espalier_dataset_get_n_rows (ds); r++)
    x[r * 2] = INFINITY;   /* every row: the first step fails */
  espalier_train_options_init (&o);
  o.epochs = 1;
  o.seed = 3;
  o.threads = 1;
  tr = espalier_trainer_new (ds, m, &o);
  g_assert_false (espalier_trainer_run (tr, NULL, NULL, NULL, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC);
  g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, "step 1 (epoch 1)"));
  g_assert_nonnull (strstr (error->message, "layer 1 (dense), in its outputs"));
  g_assert_nonnull (strstr (error->message, "weights of step 0"));
  g_assert_true (memcmp (start, es_model_params_const (m),
                         es_model_n_params (m) * sizeof (float)) == 0);
  es_model_free (m);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/core/checkpoint/round-trip", test_round_trip);
  g_test_add_func ("/core/checkpoint/damaged-refused", test_damaged_refused);
  g_test_add_func ("/core/checkpoint/loss-scaler", test_loss_scaler);
  g_test_add_func ("/core/checkpoint/wrong-model", test_wrong_model);
  g_test_add_func ("/core/checkpoint/huge-declared", test_huge_declared);
  g_test_add_func ("/core/checkpoint/damaged-entries", test_damaged_entries);
  g_test_add_func ("/core/checkpoint/exact-resume", test_exact_resume);
  g_test_add_func ("/core/checkpoint/resume-early-stopping", test_resume_early_stopping);
  g_test_add_func ("/core/checkpoint/resume-qat", test_resume_qat);
  g_test_add_func ("/core/checkpoint/resume-gradual", test_resume_gradual);
  g_test_add_func ("/core/checkpoint/nan-stop", test_nan_stop);
  g_test_add_func ("/core/checkpoint/nan-planted", test_nan_planted);
  return g_test_run ();
}
