/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-checkpoint.c: the checkpoint file (espalier-checkpoint.h): safetensors with
 * the run's state as JSON in the header's metadata, written through espalier-save.h,
 * and its validating reader.
 *
 * Dimension key: P = parameters, Q = buffers, L = layers. */
#include "config.h"

#include <float.h>
#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>

#include "espalier-checkpoint.h"
#include "espalier-error.h"
#include "espalier-json-private.h"
#include "espalier-limits.h"
#include "espalier-save.h"
#include "espalier-templates.h"

#define CHECKPOINT_FORMAT "espalier-checkpoint"
/* The safetensors library refuses headers above 100 MB; so do we. */
#define MAX_HEADER_BYTES  (100u << 20)

/* The tensors of a checkpoint in file order; bytes is the size of one element. */
typedef struct {
  const char *name;
  const char *dtype;
  gint64      n;        /* elements */
  const void *data;     /* host order */
} Tensor;

#define MAX_TENSORS 6

EspalierCheckpoint *
espalier_checkpoint_new (void)
{
  EspalierCheckpoint *ck = g_new0 (EspalierCheckpoint, 1);

  ck->history = g_array_new (FALSE, TRUE, sizeof (EspalierEpochRecord));
  ck->prune_events = g_array_new (FALSE, TRUE, sizeof (EspalierCheckpointPruneEvent));
  ck->best_val = INFINITY;
  ck->info.ranks = 1;
  return ck;
}

void
espalier_checkpoint_free (EspalierCheckpoint *ck)
{
  if (ck == NULL)
    return;
  g_free (ck->spec);
  g_clear_pointer (&ck->history, g_array_unref);
  g_clear_pointer (&ck->prune_events, g_array_unref);
  g_free (ck->params);
  g_free (ck->buffers);
  g_free (ck->slots);
  g_free (ck->best);
  g_free (ck->range_lo);
  g_free (ck->range_hi);
  g_free (ck->range_set);
  g_free (ck->mask);
  g_free (ck);
}

/* The tensors ck holds, in file order; returns how many. */
static int
list_tensors (const EspalierCheckpoint *ck, Tensor *t)
{
  int n = 0;

  t[n++] = (Tensor) { "params", "F32", ck->n_params, ck->params };
  if (ck->n_buffers > 0)
    t[n++] = (Tensor) { "buffers", "F32", ck->n_buffers, ck->buffers };
  if (ck->n_slots >= 1)
    t[n++] = (Tensor) { "optimizer.0", "F32", ck->n_params, ck->slots };
  if (ck->n_slots >= 2)
    t[n++] = (Tensor) { "optimizer.1", "F32", ck->n_params, ck->slots + ck->n_params };
  if (ck->best != NULL)
    t[n++] = (Tensor) { "early_stopping.best", "F32", ck->n_params + ck->n_buffers, ck->best };
  if (ck->mask != NULL)
    t[n++] = (Tensor) { "pruning.mask", "U8", ck->n_params, ck->mask };
  return n;
}

static gsize
element_bytes (const Tensor *t)
{
  return strcmp (t->dtype, "U8") == 0 ? 1 : 4;
}

/* SHA-256 of the tensors' values (floats in host order, as version 1 hashed them). */
static char *
sha256_tensors (const Tensor *t, int n)
{
  GChecksum *sum = g_checksum_new (G_CHECKSUM_SHA256);
  char *hex;

  for (int i = 0; i < n; i++)
    if (t[i].n > 0)
      g_checksum_update (sum, t[i].data, (gssize) ((gsize) t[i].n * element_bytes (&t[i])));
  hex = g_strdup (g_checksum_get_string (sum));
  g_checksum_free (sum);
  return hex;
}

static gboolean
all_finite (const float *v, gint64 n)
{
  for (gint64 i = 0; i < n; i++)
    if (!isfinite (v[i]))
      return FALSE;
  return TRUE;
}

/* The run's state, the JSON string of __metadata__.espalier. */
static char *
state_json (const EspalierCheckpoint *ck, const char *sha)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autoptr(JsonNode) root = NULL;

  json_builder_begin_object (b);
  espalier_json_add_string (b, "format", CHECKPOINT_FORMAT);
  espalier_json_add_int (b, "version", ESPALIER_CHECKPOINT_VERSION);
  espalier_json_add_int (b, "epoch", ck->info.epoch);
  espalier_json_add_u64 (b, "position", ck->info.position);
  espalier_json_add_int (b, "step", ck->info.step);
  espalier_json_add_int (b, "ranks", ck->info.ranks);
  espalier_json_add_int (b, "batch", ck->info.batch);
  espalier_json_add_u64 (b, "seed", ck->info.seed);
  espalier_json_add_int (b, "n_train", ck->n_train);
  espalier_json_add_string (b, "model", ck->spec);
  espalier_json_add_int (b, "n_params", ck->n_params);
  espalier_json_add_int (b, "n_buffers", ck->n_buffers);
  espalier_json_add_int (b, "optimizer_slots", ck->n_slots);
  json_builder_set_member_name (b, "epoch_sums");
  json_builder_begin_object (b);
  espalier_json_add_double (b, "loss_sum", ck->loss_sum);
  espalier_json_add_int (b, "correct", ck->correct);
  espalier_json_add_int (b, "rows", ck->rows);
  json_builder_end_object (b);
  json_builder_set_member_name (b, "history");
  espalier_json_build_history (b, ck->history);

  json_builder_set_member_name (b, "early_stopping");
  json_builder_begin_object (b);
  espalier_json_add_bool (b, "have_best", ck->best != NULL && ck->have_best);
  espalier_json_add_double (b, "best_val", ck->best_val);   /* null while infinite */
  espalier_json_add_int (b, "best_epoch", ck->best_epoch);
  espalier_json_add_int (b, "bad_epochs", ck->bad_epochs);
  json_builder_end_object (b);

  json_builder_set_member_name (b, "fake_quant");
  json_builder_begin_array (b);
  for (guint i = 0; i < ck->n_layers; i++)
    if (ck->range_set[i])
      {
        json_builder_begin_object (b);
        espalier_json_add_int (b, "layer", i);
        espalier_json_add_float (b, "lo", ck->range_lo[i]);
        espalier_json_add_float (b, "hi", ck->range_hi[i]);
        json_builder_end_object (b);
      }
  json_builder_end_array (b);

  json_builder_set_member_name (b, "pruning");
  json_builder_begin_object (b);
  espalier_json_add_int (b, "next_event", ck->next_event);
  json_builder_set_member_name (b, "events");
  json_builder_begin_array (b);
  for (guint i = 0; i < ck->prune_events->len; i++)
    {
      const EspalierCheckpointPruneEvent *ev =
          &g_array_index (ck->prune_events, EspalierCheckpointPruneEvent, i);

      json_builder_begin_object (b);
      espalier_json_add_int (b, "step", ev->step);
      espalier_json_add_double (b, "target", ev->target);
      espalier_json_add_double (b, "sparsity", ev->sparsity);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
  json_builder_end_object (b);

  if (ck->have_scaler)
    {
      json_builder_set_member_name (b, "loss_scaler");
      json_builder_begin_object (b);
      espalier_json_add_float (b, "scale", ck->loss_scale);
      espalier_json_add_int (b, "clean_steps", ck->scale_clean);
      espalier_json_add_int (b, "skipped_steps", ck->skipped_steps);
      json_builder_end_object (b);
    }

  espalier_json_add_string (b, "sha256", sha);
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  return espalier_json_to_text (root, FALSE);
}

gboolean
espalier_checkpoint_save (const EspalierCheckpoint *ck,
                          const char               *path,
                          GError                  **error)
{
  Tensor t[MAX_TENSORS];
  int n;
  g_autofree char *sha = NULL, *state = NULL, *header_text = NULL;
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autoptr(JsonNode) header = NULL;
  EspalierAtomicFile af = ESPALIER_ATOMIC_FILE_INIT;
  GString *hs;
  guint8 len_le[8];
  gint64 offset = 0;
  gboolean ok;

  g_return_val_if_fail (ck != NULL && ck->params != NULL && path != NULL, FALSE);
  g_return_val_if_fail (ck->n_slots == 0 || ck->slots != NULL, FALSE);

  if (!all_finite (ck->params, ck->n_params)
      || (ck->buffers != NULL && !all_finite (ck->buffers, ck->n_buffers))
      || (ck->slots != NULL && !all_finite (ck->slots, (gint64) ck->n_slots * ck->n_params)))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_NUMERIC,
                   _("Cannot write the checkpoint %s: the weights or the optimizer state at "
                     "step %lld are not finite"),
                   path, (long long) ck->info.step);
      return FALSE;
    }

  n = list_tensors (ck, t);
  sha = sha256_tensors (t, n);
  state = state_json (ck, sha);

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "__metadata__");
  json_builder_begin_object (b);
  espalier_json_add_string (b, "espalier", state);
  json_builder_end_object (b);
  for (int i = 0; i < n; i++)
    {
      gint64 bytes = t[i].n * (gint64) element_bytes (&t[i]);

      json_builder_set_member_name (b, t[i].name);
      json_builder_begin_object (b);
      espalier_json_add_string (b, "dtype", t[i].dtype);
      json_builder_set_member_name (b, "shape");
      json_builder_begin_array (b);
      json_builder_add_int_value (b, t[i].n);
      json_builder_end_array (b);
      json_builder_set_member_name (b, "data_offsets");
      json_builder_begin_array (b);
      json_builder_add_int_value (b, offset);
      json_builder_add_int_value (b, offset + bytes);
      json_builder_end_array (b);
      json_builder_end_object (b);
      offset += bytes;
    }
  json_builder_end_object (b);
  header = json_builder_get_root (b);
  header_text = espalier_json_to_text (header, FALSE);
  hs = g_string_new (header_text);
  while (hs->len % 8 != 0)
    g_string_append_c (hs, ' ');
  for (int i = 0; i < 8; i++)
    len_le[i] = (guint8) ((guint64) hs->len >> (8 * i));

  ok = espalier_atomic_open (&af, path, error)
       && espalier_atomic_write (&af, len_le, 8, NULL, error)
       && espalier_atomic_write (&af, hs->str, hs->len, NULL, error);
  for (int i = 0; i < n && ok; i++)
    {
      if (t[i].n == 0)
        continue;
      if (element_bytes (&t[i]) == 1)
        ok = espalier_atomic_write (&af, t[i].data, (gsize) t[i].n, NULL, error);
      else
        ok = espalier_atomic_write_floats (&af, t[i].data, t[i].n, NULL, error);
    }
  ok = ok && espalier_atomic_sync (&af, error) && espalier_atomic_commit (&af, error);
  espalier_atomic_clear (&af);
  g_string_free (hs, TRUE);
  if (!ok)
    g_prefix_error (error, _("Cannot write the checkpoint: "));
  return ok;
}

/* Element i of a, when it is a JSON integer (a string, an object or a double is not:
 * json_array_get_int_element does not check). */
static gboolean
array_int (JsonArray *a, guint i, gint64 *out)
{
  JsonNode *node = i < json_array_get_length (a) ? json_array_get_element (a, i) : NULL;

  if (node == NULL || !JSON_NODE_HOLDS_VALUE (node) || json_node_get_value_type (node) != G_TYPE_INT64)
    return FALSE;
  *out = json_node_get_int (node);
  return TRUE;
}

/* The data offset of tensor name (n elements of dtype) after checking its entry. */
static gboolean
tensor_entry (EspalierReader *r, JsonObject *header, const char *name, const char *dtype,
              gint64 n, gsize data_len, gint64 *start)
{
  JsonObject *t = espalier_reader_object (r, header, "", name);
  JsonArray *shape, *offs;
  g_autofree char *type = NULL;
  gint64 bytes = n * (strcmp (dtype, "U8") == 0 ? 1 : 4);
  gint64 dim = 0, end = 0;

  if (t == NULL)
    return FALSE;
  type = espalier_reader_string (r, t, name, "dtype", FALSE);
  shape = espalier_reader_array (r, t, name, "shape", FALSE);
  offs = espalier_reader_array (r, t, name, "data_offsets", FALSE);
  if (r->error != NULL)
    return FALSE;
  if (g_strcmp0 (type, dtype) != 0 || json_array_get_length (shape) != 1
      || !array_int (shape, 0, &dim) || dim != n || json_array_get_length (offs) != 2)
    return espalier_reader_fail (r, _("the tensor “%s” is not %lld %s values"), name,
                                 (long long) n, dtype);
  /* bytes <= 16 GB and start is checked first: no sum overflows */
  if (!array_int (offs, 0, start) || !array_int (offs, 1, &end) || *start < 0
      || (guint64) *start > data_len || end != *start + bytes || (guint64) end > data_len)
    return espalier_reader_fail (r, _("the tensor “%s” lies outside the file's data: the "
                                      "file is truncated or damaged"), name);
  return TRUE;
}

/* The hook state of version 2. */
static void
read_extras (EspalierReader *r, JsonObject *state, EspalierCheckpoint *ck)
{
  JsonObject *es, *pr;
  JsonArray *fq, *events;
  gint64 v = 0;

  es = espalier_reader_object (r, state, "", "early_stopping");
  if (es != NULL)
    {
      espalier_reader_bool (r, es, "early_stopping", "have_best", &ck->have_best);
      espalier_reader_double (r, es, "early_stopping", "best_val", TRUE, -G_MAXDOUBLE,
                              G_MAXDOUBLE, &ck->best_val);
      if (isnan (ck->best_val))
        ck->best_val = INFINITY;
      if (espalier_reader_int (r, es, "early_stopping", "best_epoch", 0, G_MAXUINT, &v))
        ck->best_epoch = (guint) v;
      if (espalier_reader_int (r, es, "early_stopping", "bad_epochs", 0, G_MAXUINT, &v))
        ck->bad_epochs = (guint) v;
    }
  fq = espalier_reader_array (r, state, "", "fake_quant", FALSE);
  if (fq != NULL && r->error == NULL)
    {
      guint n = json_array_get_length (fq);

      for (guint i = 0; i < n && r->error == NULL; i++)
        {
          JsonNode *node = json_array_get_element (fq, i);
          JsonObject *o;
          gint64 layer = 0;
          float lo = 0, hi = 0;

          if (!JSON_NODE_HOLDS_OBJECT (node))
            {
              espalier_reader_fail (r, _("the field “fake_quant[%u]” is not an object"), i);
              break;
            }
          o = json_node_get_object (node);
          espalier_reader_int (r, o, "fake_quant", "layer", 0, 1 << 20, &layer);
          espalier_reader_float (r, o, "fake_quant", "lo", -G_MAXFLOAT, G_MAXFLOAT, &lo);
          espalier_reader_float (r, o, "fake_quant", "hi", -G_MAXFLOAT, G_MAXFLOAT, &hi);
          if (r->error != NULL)
            break;
          if ((guint) layer >= ck->n_layers)
            {
              guint L = (guint) layer + 1;

              ck->range_lo = g_renew (float, ck->range_lo, L);
              ck->range_hi = g_renew (float, ck->range_hi, L);
              ck->range_set = g_renew (gboolean, ck->range_set, L);
              for (guint k = ck->n_layers; k < L; k++)
                {
                  ck->range_lo[k] = ck->range_hi[k] = 0;
                  ck->range_set[k] = FALSE;
                }
              ck->n_layers = L;
            }
          ck->range_lo[layer] = lo;
          ck->range_hi[layer] = hi;
          ck->range_set[layer] = TRUE;
        }
    }
  pr = espalier_reader_object (r, state, "", "pruning");
  if (pr != NULL)
    {
      espalier_reader_int (r, pr, "pruning", "next_event", 0, G_MAXINT64, &ck->next_event);
      events = espalier_reader_array (r, pr, "pruning", "events", FALSE);
      for (guint i = 0; events != NULL && r->error == NULL && i < json_array_get_length (events); i++)
        {
          JsonNode *node = json_array_get_element (events, i);
          EspalierCheckpointPruneEvent ev = { 0 };
          JsonObject *o;

          if (!JSON_NODE_HOLDS_OBJECT (node))
            {
              espalier_reader_fail (r, _("the field “pruning.events[%u]” is not an object"), i);
              break;
            }
          o = json_node_get_object (node);
          espalier_reader_int (r, o, "pruning.events", "step", 0, G_MAXINT64, &ev.step);
          espalier_reader_double (r, o, "pruning.events", "target", FALSE, 0, 1, &ev.target);
          espalier_reader_double (r, o, "pruning.events", "sparsity", FALSE, 0, 1, &ev.sparsity);
          g_array_append_val (ck->prune_events, ev);
        }
    }
  /* absent from the checkpoints written before it was kept */
  if (r->error == NULL && json_object_has_member (state, "loss_scaler"))
    {
      JsonObject *ls = espalier_reader_object (r, state, "", "loss_scaler");

      if (ls != NULL)
        {
          espalier_reader_float (r, ls, "loss_scaler", "scale", FLT_MIN, G_MAXFLOAT,
                                 &ck->loss_scale);
          espalier_reader_int (r, ls, "loss_scaler", "clean_steps", 0, G_MAXINT32,
                               &ck->scale_clean);
          espalier_reader_int (r, ls, "loss_scaler", "skipped_steps", 0, G_MAXINT64,
                               &ck->skipped_steps);
          ck->have_scaler = r->error == NULL;
        }
    }
}

/* n_elems * elem_size bytes (espalier_try_alloc), or NULL with the reason recorded in r
 * (ESPALIER_ERROR_MEMORY, naming the file); like the reader's getters, nothing once r
 * holds a problem. */
static gpointer
try_alloc (EspalierReader *r, gsize n_elems, gsize elem_size)
{
  GError *local = NULL;
  gpointer p;

  if (r->error != NULL)
    return NULL;
  p = espalier_try_alloc (n_elems, elem_size, FALSE, _("the checkpoint's tensors"), &local);
  if (p == NULL)
    {
      g_prefix_error (&local, "%s: ", r->file);
      r->error = local;
    }
  return p;
}

EspalierCheckpoint *
espalier_checkpoint_parse (const char   *path,
                           const guint8 *bytes,
                           gsize         len,
                           GError      **error)
{
  EspalierReader r = { path, NULL };
  g_autoptr(JsonParser) hparser = json_parser_new ();
  g_autoptr(JsonParser) sparser = json_parser_new ();
  EspalierCheckpoint *ck = espalier_checkpoint_new ();
  JsonObject *header = NULL, *meta = NULL, *state = NULL, *sums;
  g_autofree char *state_text = NULL, *sha = NULL, *want = NULL;
  guint64 hlen = 0;
  gint64 v = 0, version = 1, start = 0;
  guint64 need;
  gboolean have_best_tensor, have_mask;
  const guint8 *data;
  gsize data_len;
  Tensor t[MAX_TENSORS];
  int n;

  for (int i = 0; i < 8 && len >= 8; i++)
    hlen |= (guint64) bytes[i] << (8 * i);
  if (len < 8 || hlen > MAX_HEADER_BYTES || hlen > len - 8)
    {
      espalier_reader_fail (&r, _("it is %llu bytes, not a whole safetensors file: it is "
                                  "truncated or not a checkpoint"),
                            (unsigned long long) len);
      goto fail;
    }
  header = espalier_reader_parse (&r, hparser, (const char *) bytes + 8, (gsize) hlen);
  if (header != NULL)
    meta = espalier_reader_object (&r, header, "", "__metadata__");
  if (meta != NULL)
    state_text = espalier_reader_string (&r, meta, "__metadata__", "espalier", FALSE);
  if (state_text != NULL)
    state = espalier_reader_parse (&r, sparser, state_text, strlen (state_text));
  if (state == NULL)
    goto fail;
  espalier_reader_format (&r, state, CHECKPOINT_FORMAT, ESPALIER_CHECKPOINT_VERSION);
  espalier_reader_int (&r, state, "", "version", 1, ESPALIER_CHECKPOINT_VERSION, &version);
  if (espalier_reader_int (&r, state, "", "epoch", 1, G_MAXUINT, &v))
    ck->info.epoch = (guint) v;
  espalier_reader_u64 (&r, state, "", "position", &ck->info.position);
  espalier_reader_int (&r, state, "", "step", 0, G_MAXINT64, &ck->info.step);
  espalier_reader_uint (&r, state, "", "ranks", &ck->info.ranks);
  espalier_reader_uint (&r, state, "", "batch", &ck->info.batch);
  espalier_reader_u64 (&r, state, "", "seed", &ck->info.seed);
  espalier_reader_uint (&r, state, "", "n_train", &ck->n_train);
  ck->spec = espalier_reader_string (&r, state, "", "model", FALSE);
  espalier_reader_int (&r, state, "", "n_params", 1, G_MAXINT32, &ck->n_params);
  espalier_reader_int (&r, state, "", "n_buffers", 0, G_MAXINT32, &ck->n_buffers);
  espalier_reader_int32 (&r, state, "", "optimizer_slots", 0, 2, &ck->n_slots);
  sums = espalier_reader_object (&r, state, "", "epoch_sums");
  if (sums != NULL)
    {
      espalier_reader_double (&r, sums, "epoch_sums", "loss_sum", FALSE, 0, G_MAXDOUBLE,
                              &ck->loss_sum);
      espalier_reader_int (&r, sums, "epoch_sums", "correct", 0, G_MAXINT64, &ck->correct);
      espalier_reader_int (&r, sums, "epoch_sums", "rows", 0, G_MAXINT64, &ck->rows);
    }
  espalier_reader_history (&r, state, "", "history", ck->history);
  if (version >= 2 && r.error == NULL)
    read_extras (&r, state, ck);
  want = espalier_reader_string (&r, state, "", "sha256", FALSE);
  if (r.error != NULL)
    goto fail;
  if (ck->info.position > ck->n_train)
    {
      espalier_reader_fail (&r, _("its position %llu lies beyond the %u training rows"),
                            (unsigned long long) ck->info.position, ck->n_train);
      goto fail;
    }

  data = bytes + 8 + hlen;
  data_len = len - 8 - (gsize) hlen;
  have_best_tensor = json_object_has_member (header, "early_stopping.best");
  have_mask = json_object_has_member (header, "pruning.mask");
  /* The tensors the state declares must fit in the file's data (the writer puts them
   * side by side) before anything is allocated for them: a small file claiming 2^31
   * parameters is damaged, not a reason to ask for tens of GB. (P, Q < 2^31: no sum
   * below overflows.) */
  need = (guint64) (ck->n_params + ck->n_buffers) * sizeof (float)
         + (guint64) ck->n_slots * (guint64) ck->n_params * sizeof (float)
         + (have_best_tensor ? (guint64) (ck->n_params + ck->n_buffers) * sizeof (float) : 0)
         + (have_mask ? (guint64) ck->n_params : 0);
  if (need > data_len)
    {
      espalier_reader_fail (&r, _("it declares %lld parameters, %lld buffers and %d optimizer "
                                  "state vectors, %llu bytes of tensors, but holds %llu bytes "
                                  "of tensor data: the file is truncated or damaged"),
                            (long long) ck->n_params, (long long) ck->n_buffers, ck->n_slots,
                            (unsigned long long) need, (unsigned long long) data_len);
      goto fail;
    }
  ck->params = try_alloc (&r, (gsize) ck->n_params, sizeof (float));
  if (ck->n_buffers > 0)
    ck->buffers = try_alloc (&r, (gsize) ck->n_buffers, sizeof (float));
  if (ck->n_slots > 0)
    ck->slots = try_alloc (&r, (gsize) ck->n_slots * (gsize) ck->n_params, sizeof (float));
  if (have_best_tensor)
    ck->best = try_alloc (&r, (gsize) (ck->n_params + ck->n_buffers), sizeof (float));
  if (have_mask)
    ck->mask = try_alloc (&r, (gsize) ck->n_params, 1);
  if (r.error != NULL)
    goto fail;
  ck->have_best = ck->have_best && have_best_tensor;
  n = list_tensors (ck, t);
  for (int i = 0; i < n && r.error == NULL; i++)
    if (tensor_entry (&r, header, t[i].name, t[i].dtype, t[i].n, data_len, &start))
      {
        if (element_bytes (&t[i]) == 1)
          memcpy ((void *) t[i].data, data + start, (gsize) t[i].n);
        else
          espalier_floats_from_le ((float *) t[i].data, data + start, t[i].n);
      }
  if (r.error != NULL)
    goto fail;
  sha = sha256_tensors (t, n);
  if (g_strcmp0 (sha, want) != 0)
    {
      espalier_reader_fail (&r, _("its tensors do not match their SHA-256: the file is damaged"));
      goto fail;
    }
  /* what espalier_checkpoint_save refuses to write is no state to go back to */
  if (!all_finite (ck->params, ck->n_params)
      || (ck->buffers != NULL && !all_finite (ck->buffers, ck->n_buffers))
      || (ck->slots != NULL && !all_finite (ck->slots, (gint64) ck->n_slots * ck->n_params)))
    {
      espalier_reader_fail (&r, _("its weights or optimizer state are not finite: the file "
                                  "is damaged"));
      goto fail;
    }
  return ck;

fail:
  g_propagate_error (error, r.error);
  espalier_checkpoint_free (ck);
  return NULL;
}

EspalierCheckpoint *
espalier_checkpoint_load (const char *path,
                          GError    **error)
{
  g_autofree char *contents = NULL;
  g_autoptr(GError) local = NULL;
  gsize len = 0;

  g_return_val_if_fail (path != NULL, NULL);

  if (!g_file_get_contents (path, &contents, &len, &local))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_IO, "%s", local->message);
      return NULL;
    }
  return espalier_checkpoint_parse (path, (const guint8 *) contents, len, error);
}

gboolean
espalier_checkpoint_fits_model (const EspalierCheckpoint *ck,
                                const EsModel            *model,
                                GError                  **error)
{
  g_autofree char *spec = NULL;

  g_return_val_if_fail (ck != NULL && model != NULL, FALSE);

  spec = espalier_model_to_spec (model);
  if (g_strcmp0 (ck->spec, spec) != 0 || ck->n_params != es_model_n_params (model)
      || ck->n_buffers != es_model_n_buffers (model))
    {
      g_set_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE,
                   _("The checkpoint holds the model %s (%lld parameters), not this one, %s "
                     "(%lld parameters)"),
                   ck->spec, (long long) ck->n_params, spec,
                   (long long) es_model_n_params (model));
      return FALSE;
    }
  return TRUE;
}
