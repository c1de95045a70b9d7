/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-model-doc.c: EspalierModelDoc: edits with undo and redo and their labels, quick
 * property edits merging into one step, the first invalid layer and a reason a student
 * can act on, the output check, totals against the engine's own model, spec strings
 * both ways, templates, and property notifications only on real changes. */
#include <math.h>
#include <string.h>

#include "espalier-error.h"
#include "espalier-model-doc.h"
#include "espalier-templates.h"

static const EsShape image = { .rank = 3, .dims = { 1, 28, 28 } };

static EsLayerSpec
layer (EsLayerKind kind)
{
  return es_layer_spec_default (kind);
}

static void
assert_spec (EspalierModelDoc *doc, const char *expected)
{
  g_autofree char *spec = espalier_model_doc_to_spec (doc);

  g_assert_cmpstr (spec, ==, expected);
}

typedef struct {
  guint changed;
  guint n_layers, valid, can_undo, can_redo, undo_label, redo_label;
} Counts;

static void
on_changed (EspalierModelDoc *doc, Counts *c)
{
  c->changed++;
}

static void
on_notify (GObject *obj, GParamSpec *pspec, Counts *c)
{
  const char *name = g_param_spec_get_name (pspec);

  if (strcmp (name, "n-layers") == 0)
    c->n_layers++;
  else if (strcmp (name, "valid") == 0)
    c->valid++;
  else if (strcmp (name, "can-undo") == 0)
    c->can_undo++;
  else if (strcmp (name, "can-redo") == 0)
    c->can_redo++;
  else if (strcmp (name, "undo-label") == 0)
    c->undo_label++;
  else if (strcmp (name, "redo-label") == 0)
    c->redo_label++;
}

static void
watch (EspalierModelDoc *doc, Counts *c)
{
  memset (c, 0, sizeof *c);
  g_signal_connect (doc, "changed", G_CALLBACK (on_changed), c);
  g_signal_connect (doc, "notify", G_CALLBACK (on_notify), c);
}

static void
test_empty (void)
{
  g_autoptr(EspalierModelDoc) doc = espalier_model_doc_new (NULL, 0);
  g_autoptr(GError) error = NULL;
  EsModel *model;

  g_assert_cmpint (espalier_model_doc_get_input (doc)->rank, ==, 1);
  g_assert_cmpint (espalier_model_doc_get_input (doc)->dims[0], ==, 2);
  g_assert_cmpuint (espalier_model_doc_get_n_layers (doc), ==, 0);
  g_assert_false (espalier_model_doc_is_valid (doc));
  g_assert_cmpint (espalier_model_doc_get_first_error (doc), ==, -1);
  g_assert_cmpstr (espalier_model_doc_get_error (doc), ==, "The model has no layers");
  g_assert_false (espalier_model_doc_can_undo (doc));
  g_assert_false (espalier_model_doc_undo (doc));
  g_assert_false (espalier_model_doc_redo (doc));
  assert_spec (doc, "");
  model = espalier_model_doc_build (doc, 0, &error);
  g_assert_null (model);
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);
  g_assert_finalize_object (g_steal_pointer (&doc));
}

/* Insert, remove, move: each one step with its label; undo walks back through every
 * state and redo forward again. */
static void
test_undo_redo (void)
{
  g_autoptr(EspalierModelDoc) doc = espalier_model_doc_new (&image, 10);
  g_autoptr(GPtrArray) states = g_ptr_array_new_with_free_func (g_free);
  const char *labels[] = { "Add Flatten", "Add Dense", "Add ReLU", "Add Dense", "Add Softmax",
                           "Remove ReLU", "Move Dense" };
  g_autofree char *label = NULL;
  Counts c;

  watch (doc, &c);
  g_ptr_array_add (states, espalier_model_doc_to_spec (doc));
  espalier_model_doc_insert (doc, 0, &(EsLayerSpec) { .kind = ES_LAYER_DENSE, .units = 10 });
  g_ptr_array_add (states, espalier_model_doc_to_spec (doc));
  g_assert_cmpuint (c.can_undo, ==, 1);
  g_assert_cmpuint (c.n_layers, ==, 1);
  g_assert_cmpuint (c.changed, ==, 1);
  /* the first edit went to index 0: put the Flatten in front and walk on from there */
  g_assert_true (espalier_model_doc_undo (doc));
  g_assert_cmpuint (c.can_redo, ==, 1);
  espalier_model_doc_insert (doc, 0, &(EsLayerSpec) { .kind = ES_LAYER_FLATTEN });
  g_assert_false (espalier_model_doc_can_redo (doc));
  g_assert_cmpuint (c.can_redo, ==, 2);
  g_ptr_array_set_size (states, 1);
  g_ptr_array_add (states, espalier_model_doc_to_spec (doc));
  espalier_model_doc_insert (doc, 99, &(EsLayerSpec) { .kind = ES_LAYER_DENSE, .units = 128 });
  g_ptr_array_add (states, espalier_model_doc_to_spec (doc));
  espalier_model_doc_insert (doc, 2, &(EsLayerSpec) { .kind = ES_LAYER_RELU });
  g_ptr_array_add (states, espalier_model_doc_to_spec (doc));
  g_assert_false (espalier_model_doc_is_valid (doc));   /* 128 outputs for 10 classes */
  espalier_model_doc_insert (doc, 3, &(EsLayerSpec) { .kind = ES_LAYER_DENSE, .units = 10 });
  g_ptr_array_add (states, espalier_model_doc_to_spec (doc));
  g_assert_true (espalier_model_doc_is_valid (doc));
  espalier_model_doc_insert (doc, 4, &(EsLayerSpec) { .kind = ES_LAYER_SOFTMAX });
  g_ptr_array_add (states, espalier_model_doc_to_spec (doc));
  assert_spec (doc, "flatten,dense:128,relu,dense:10,softmax");
  g_assert_cmpuint (c.can_undo, ==, 3);   /* only when it changed */
  espalier_model_doc_remove (doc, 2);
  g_ptr_array_add (states, espalier_model_doc_to_spec (doc));
  assert_spec (doc, "flatten,dense:128,dense:10,softmax");
  espalier_model_doc_move (doc, 1, 2);
  g_ptr_array_add (states, espalier_model_doc_to_spec (doc));
  assert_spec (doc, "flatten,dense:10,dense:128,softmax");
  g_assert_false (espalier_model_doc_is_valid (doc));
  g_assert_cmpint (espalier_model_doc_get_first_error (doc), ==, 3);

  /* a move onto itself is nothing */
  c.changed = 0;
  espalier_model_doc_move (doc, 1, 1);
  g_assert_cmpuint (c.changed, ==, 0);

  for (int i = G_N_ELEMENTS (labels) - 1; i >= 0; i--)
    {
      g_clear_pointer (&label, g_free);
      g_object_get (doc, "undo-label", &label, NULL);
      g_assert_cmpstr (label, ==, labels[i]);
      g_assert_true (espalier_model_doc_undo (doc));
      assert_spec (doc, g_ptr_array_index (states, i));
      g_clear_pointer (&label, g_free);
      g_object_get (doc, "redo-label", &label, NULL);
      g_assert_cmpstr (label, ==, labels[i]);
    }
  g_assert_false (espalier_model_doc_can_undo (doc));
  g_assert_false (espalier_model_doc_undo (doc));
  for (guint i = 0; i < G_N_ELEMENTS (labels); i++)
    {
      g_assert_true (espalier_model_doc_redo (doc));
      assert_spec (doc, g_ptr_array_index (states, i + 1));
    }
  g_assert_false (espalier_model_doc_redo (doc));
  g_assert_true (espalier_model_doc_can_undo (doc));

  /* New and Open forget the history */
  c.can_undo = 0;
  espalier_model_doc_clear_history (doc);
  g_assert_false (espalier_model_doc_can_undo (doc));
  g_assert_cmpuint (c.can_undo, ==, 1);
  assert_spec (doc, "flatten,dense:10,dense:128,softmax");
  g_signal_handlers_disconnect_by_data (doc, &c);
}

/* Quick edits of one layer are one step; another layer, or a pause, starts a new one. */
static void
test_merge_edits (void)
{
  g_autoptr(EspalierModelDoc) doc = espalier_model_doc_new (&image, 10);
  g_autoptr(GError) error = NULL;
  g_autofree char *label = NULL;
  EsLayerSpec s;

  g_assert_true (espalier_model_doc_set_spec (doc, "flatten,dense:128,relu,dense:10", &error));
  g_assert_no_error (error);
  espalier_model_doc_clear_history (doc);

  for (int units = 127; units >= 100; units--)
    {
      s = *espalier_model_doc_get_layer (doc, 1);
      s.units = units;
      espalier_model_doc_set_layer (doc, 1, &s);
    }
  assert_spec (doc, "flatten,dense:100,relu,dense:10");
  g_object_get (doc, "undo-label", &label, NULL);
  g_assert_cmpstr (label, ==, "Edit Dense");
  g_assert_true (espalier_model_doc_undo (doc));
  assert_spec (doc, "flatten,dense:128,relu,dense:10");
  g_assert_false (espalier_model_doc_can_undo (doc));
  g_assert_true (espalier_model_doc_redo (doc));
  assert_spec (doc, "flatten,dense:100,relu,dense:10");

  /* an edit of the same value is no edit at all */
  espalier_model_doc_clear_history (doc);
  espalier_model_doc_set_layer (doc, 1, espalier_model_doc_get_layer (doc, 1));
  g_assert_false (espalier_model_doc_can_undo (doc));

  /* another layer in between: two steps */
  s = *espalier_model_doc_get_layer (doc, 1);
  s.units = 64;
  espalier_model_doc_set_layer (doc, 1, &s);
  s = layer (ES_LAYER_TANH);
  espalier_model_doc_set_layer (doc, 2, &s);
  assert_spec (doc, "flatten,dense:64,tanh,dense:10");
  g_assert_true (espalier_model_doc_undo (doc));
  assert_spec (doc, "flatten,dense:64,relu,dense:10");
  g_assert_true (espalier_model_doc_undo (doc));
  assert_spec (doc, "flatten,dense:100,relu,dense:10");
  g_assert_false (espalier_model_doc_can_undo (doc));

  /* the same layer after more than a second: two steps */
  s = *espalier_model_doc_get_layer (doc, 1);
  s.units = 50;
  espalier_model_doc_set_layer (doc, 1, &s);
  g_usleep (1100 * 1000);
  s.units = 40;
  espalier_model_doc_set_layer (doc, 1, &s);
  g_assert_true (espalier_model_doc_undo (doc));
  assert_spec (doc, "flatten,dense:50,relu,dense:10");
  g_assert_true (espalier_model_doc_undo (doc));
  assert_spec (doc, "flatten,dense:100,relu,dense:10");

  /* an undo ends the merge: the next edit is a step of its own */
  g_assert_true (espalier_model_doc_redo (doc));
  s.units = 30;
  espalier_model_doc_set_layer (doc, 1, &s);
  g_assert_true (espalier_model_doc_undo (doc));
  assert_spec (doc, "flatten,dense:50,relu,dense:10");
}

/* A Dense on an image: the Dense is the first invalid layer, says to add a Flatten, and
 * the layers after it have neither info nor reason. */
static void
test_invalid_dense_after_conv (void)
{
  g_autoptr(EspalierModelDoc) doc = espalier_model_doc_new (&image, 10);
  g_autoptr(GError) error = NULL;
  const char *reason;
  EsModel *model;

  g_assert_true (espalier_model_doc_set_spec (doc, "conv2d:4:3,relu,dense:10,softmax", &error));
  g_assert_no_error (error);
  g_assert_false (espalier_model_doc_is_valid (doc));
  g_assert_cmpint (espalier_model_doc_get_first_error (doc), ==, 2);
  g_assert_nonnull (espalier_model_doc_get_layer_info (doc, 0));
  g_assert_nonnull (espalier_model_doc_get_layer_info (doc, 1));
  g_assert_null (espalier_model_doc_get_layer_info (doc, 2));
  g_assert_null (espalier_model_doc_get_layer_info (doc, 3));
  g_assert_null (espalier_model_doc_get_layer_error (doc, 0));
  g_assert_null (espalier_model_doc_get_layer_error (doc, 3));
  reason = espalier_model_doc_get_layer_error (doc, 2);
  g_test_message ("reason: %s", reason);
  g_assert_nonnull (strstr (reason, "(4, 26, 26)"));
  g_assert_nonnull (strstr (reason, "add a Flatten before it"));
  g_assert_true (g_str_has_prefix (espalier_model_doc_get_error (doc), "Layer 3 (Dense): "));
  g_assert_nonnull (strstr (espalier_model_doc_get_error (doc), reason));
  g_assert_cmpint (espalier_model_doc_get_layer_info (doc, 1)->out.dims[1], ==, 26);

  model = espalier_model_doc_build (doc, 0, &error);
  g_assert_null (model);
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);
  g_assert_cmpstr (error->message, ==, espalier_model_doc_get_error (doc));
  g_clear_error (&error);

  /* the fix the reason names makes it valid */
  espalier_model_doc_insert (doc, 2, &(EsLayerSpec) { .kind = ES_LAYER_FLATTEN });
  g_assert_true (espalier_model_doc_is_valid (doc));
  g_assert_null (espalier_model_doc_get_error (doc));
  g_assert_cmpint (espalier_model_doc_get_first_error (doc), ==, -1);

  /* a window larger than the image, and a convolution after a Flatten */
  g_assert_true (espalier_model_doc_set_spec (doc, "conv2d:4:40,flatten,dense:10", &error));
  g_assert_cmpint (espalier_model_doc_get_first_error (doc), ==, 0);
  g_assert_nonnull (strstr (espalier_model_doc_get_layer_error (doc, 0), "smaller kernel"));
  g_assert_true (espalier_model_doc_set_spec (doc, "flatten,maxpool2d:2,dense:10", &error));
  g_assert_cmpint (espalier_model_doc_get_first_error (doc), ==, 1);
  g_assert_nonnull (strstr (espalier_model_doc_get_layer_error (doc, 1), "(C, H, W)"));
}

/* A layer typed with a huge width is refused by size before anything is allocated: the
 * reason names the memory the weights would need against what is available, the build
 * fails with a memory error, and a smaller width makes the model valid again. */
static void
test_too_large (void)
{
  g_autoptr(EspalierModelDoc) doc = espalier_model_doc_new (&image, 10);
  g_autoptr(GError) error = NULL;
  const char *reason;
  EsModel *model;

  g_setenv ("ESPALIER_MEMORY_AVAILABLE", "100000000", TRUE);   /* 100 MB */
  /* 784 × 16 M weights: 52 GB, far over 100 MB */
  g_assert_true (espalier_model_doc_set_spec (doc, "flatten,dense:16000000,dense:10,softmax",
                                              &error));
  g_assert_no_error (error);
  g_assert_false (espalier_model_doc_is_valid (doc));
  g_assert_cmpint (espalier_model_doc_get_first_error (doc), ==, 1);
  g_assert_null (espalier_model_doc_get_layer_info (doc, 1));
  reason = espalier_model_doc_get_layer_error (doc, 1);
  g_test_message ("reason: %s", reason);
  g_assert_nonnull (strstr (reason, "50.2"));
  g_assert_nonnull (strstr (reason, "100.0"));
  model = espalier_model_doc_build (doc, 0, &error);
  g_assert_null (model);
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY);
  g_clear_error (&error);

  /* Layers that each fit but together do not: the one that crosses the line is named. */
  g_assert_true (espalier_model_doc_set_spec (doc, "flatten,dense:20000,dense:600,dense:10",
                                              &error));
  g_assert_cmpint (espalier_model_doc_get_first_error (doc), ==, 2);

  /* An activation too large to be a real model (16 M × 28 × 28 values a sample). */
  g_assert_true (espalier_model_doc_set_spec (doc, "conv2d:16000000:1,flatten,dense:10",
                                              &error));
  g_assert_cmpint (espalier_model_doc_get_first_error (doc), ==, 0);
  g_assert_nonnull (strstr (espalier_model_doc_get_layer_error (doc, 0), "too large"));

  g_assert_true (espalier_model_doc_set_spec (doc, "flatten,dense:1000,dense:10,softmax",
                                              &error));
  g_assert_true (espalier_model_doc_is_valid (doc));
  model = espalier_model_doc_build (doc, 0, &error);
  g_assert_no_error (error);
  es_model_free (model);
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");
}

/* All layers fit but the output does not match the classes: the last layer carries it. */
static void
test_invalid_output (void)
{
  g_autoptr(EspalierModelDoc) doc = espalier_model_doc_new (&image, 10);
  g_autoptr(GError) error = NULL;
  const char *reason;
  Counts c;

  g_assert_true (espalier_model_doc_set_spec (doc, "flatten,dense:64,relu", &error));
  g_assert_false (espalier_model_doc_is_valid (doc));
  g_assert_cmpint (espalier_model_doc_get_first_error (doc), ==, 2);
  reason = espalier_model_doc_get_layer_error (doc, 2);
  g_test_message ("reason: %s", reason);
  g_assert_nonnull (strstr (reason, "64 outputs"));
  g_assert_nonnull (strstr (reason, "10"));
  g_assert_true (g_str_has_prefix (espalier_model_doc_get_error (doc), "Layer 3 (ReLU): "));
  /* the last layer itself fits: the canvas still gets its shapes */
  g_assert_nonnull (espalier_model_doc_get_layer_info (doc, 2));

  /* an image output */
  g_assert_true (espalier_model_doc_set_spec (doc, "conv2d:10:3", &error));
  g_assert_cmpint (espalier_model_doc_get_first_error (doc), ==, 0);
  g_assert_nonnull (strstr (espalier_model_doc_get_layer_error (doc, 0), "Flatten"));

  /* the dataset changes: no undo step, "changed" and "valid" follow */
  g_assert_true (espalier_model_doc_set_spec (doc, "flatten,dense:64", &error));
  watch (doc, &c);
  espalier_model_doc_set_input (doc, &image, 64);
  g_assert_true (espalier_model_doc_is_valid (doc));
  g_assert_cmpuint (c.changed, ==, 1);
  g_assert_cmpuint (c.valid, ==, 1);
  g_assert_cmpuint (c.can_undo, ==, 0);
  g_assert_cmpuint (espalier_model_doc_get_n_outputs (doc), ==, 64);
  espalier_model_doc_set_input (doc, &image, 0);   /* 0: no output check */
  g_assert_true (espalier_model_doc_is_valid (doc));
  g_assert_cmpuint (c.valid, ==, 1);
  g_assert_true (espalier_model_doc_undo (doc));   /* undoes the spec, not the input */
  assert_spec (doc, "conv2d:10:3");
  g_signal_handlers_disconnect_by_data (doc, &c);
}

/* Per-layer infos and totals agree with the engine's model of the same layers. */
static void
test_totals (void)
{
  g_autoptr(EspalierModelDoc) doc = espalier_model_doc_new (&image, 10);
  g_autoptr(GError) error = NULL;
  gint64 params, flops, acts, act_sum = 0, buffers = 0;
  EsModel *model;

  g_assert_true (espalier_model_doc_apply_template (doc, "lenet", NULL, &error));
  g_assert_no_error (error);
  espalier_model_doc_insert (doc, 1, &(EsLayerSpec) { .kind = ES_LAYER_BATCHNORM });
  g_assert_true (espalier_model_doc_is_valid (doc));
  model = espalier_model_doc_build (doc, 7, &error);
  g_assert_no_error (error);
  g_assert_cmpint (es_model_n_layers (model), ==, (int) espalier_model_doc_get_n_layers (doc));
  for (int i = 0; i < es_model_n_layers (model); i++)
    {
      const EsLayerInfo *a = es_model_layer (model, i);
      const EsLayerInfo *b = espalier_model_doc_get_layer_info (doc, (guint) i);

      g_assert_nonnull (b);
      g_assert_true (es_shape_equal (&a->in, &b->in));
      g_assert_true (es_shape_equal (&a->out, &b->out));
      g_assert_cmpint (a->n_params, ==, b->n_params);
      g_assert_cmpint (a->n_buffers, ==, b->n_buffers);
      g_assert_cmpint (a->flops, ==, b->flops);
      g_assert_cmpint (a->out_floats, ==, b->out_floats);
      g_assert_cmpint (a->first_tensor, ==, b->first_tensor);
      g_assert_cmpint (a->n_tensors, ==, b->n_tensors);
      g_assert_true (memcmp (&a->spec, &b->spec, sizeof a->spec) == 0);
      act_sum += a->out_floats;
      buffers += a->n_buffers;
    }
  espalier_model_doc_get_totals (doc, &params, &flops, &acts);
  g_assert_cmpint (params, ==, es_model_n_params (model));
  g_assert_cmpint (buffers, ==, es_model_n_buffers (model));
  g_assert_cmpint (flops, ==, es_model_flops (model));
  g_assert_cmpint (acts, ==, act_sum);
  espalier_model_doc_get_totals (doc, NULL, NULL, NULL);

  /* the same seed, the same weights */
  {
    EsModel *again = espalier_model_doc_build (doc, 7, &error);

    g_assert_no_error (error);
    g_assert_true (memcmp (es_model_params (model), es_model_params (again),
                           (gsize) es_model_n_params (model) * sizeof (float)) == 0);
    es_model_free (again);
  }
  es_model_free (model);

  /* an invalid model sums the layers before its first invalid one */
  g_assert_true (espalier_model_doc_set_spec (doc, "flatten,dense:5,conv2d:2:2", &error));
  espalier_model_doc_get_totals (doc, &params, &flops, NULL);
  g_assert_cmpint (params, ==, 784 * 5 + 5);
  g_assert_cmpint (flops, ==, 2 * 784 * 5);
}

/* Spec strings round-trip every kind and argument; bad text leaves the doc as it was. */
static void
test_spec (void)
{
  g_autoptr(EspalierModelDoc) doc = espalier_model_doc_new (&image, 10);
  g_autoptr(GError) error = NULL;
  const char *spec = "conv2d:6:5:2:1,batchnorm:0.2:0.001,leaky_relu:0.1,avgpool2d:2:1,"
                     "maxpool2d:2,flatten,dropout:0.25,dense:32,sigmoid,dense:16,tanh,dense:10,"
                     "softmax";
  g_autofree char *back = NULL;
  Counts c;

  g_assert_true (espalier_model_doc_set_spec (doc, spec, &error));
  g_assert_no_error (error);
  g_assert_true (espalier_model_doc_is_valid (doc));
  assert_spec (doc, spec);
  back = espalier_model_doc_to_spec (doc);
  g_assert_true (espalier_model_doc_set_spec (doc, back, &error));
  assert_spec (doc, spec);

  /* defaults are filled in, unused fields cleared */
  espalier_model_doc_insert (doc, 0, &(EsLayerSpec) { .kind = ES_LAYER_CONV2D, .filters = 3,
                                                      .kernel = 1, .units = 77, .rate = 0.5f });
  g_assert_cmpint (espalier_model_doc_get_layer (doc, 0)->stride, ==, 1);
  g_assert_cmpint (espalier_model_doc_get_layer (doc, 0)->units, ==, 0);
  g_assert_cmpfloat (espalier_model_doc_get_layer (doc, 0)->rate, ==, 0.0f);
  espalier_model_doc_insert (doc, 0, &(EsLayerSpec) { .kind = ES_LAYER_MAXPOOL2D, .kernel = 3 });
  g_assert_cmpint (espalier_model_doc_get_layer (doc, 0)->stride, ==, 3);

  watch (doc, &c);
  g_free (back);
  back = espalier_model_doc_to_spec (doc);
  g_assert_false (espalier_model_doc_set_spec (doc, "flatten,dense:abc", &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_clear_error (&error);
  assert_spec (doc, back);
  g_assert_cmpuint (c.changed, ==, 0);
  g_assert_cmpuint (c.undo_label, ==, 0);

  /* "" is the empty model, one step */
  g_assert_true (espalier_model_doc_set_spec (doc, "", &error));
  g_assert_cmpuint (espalier_model_doc_get_n_layers (doc), ==, 0);
  g_assert_cmpuint (c.changed, ==, 1);
  g_assert_cmpuint (c.n_layers, ==, 1);
  {
    g_autofree char *label = NULL;

    g_object_get (doc, "undo-label", &label, NULL);
    g_assert_cmpstr (label, ==, "Replace model");
  }
  g_assert_true (espalier_model_doc_undo (doc));
  assert_spec (doc, back);
  g_signal_handlers_disconnect_by_data (doc, &c);
}

static void
test_template (void)
{
  g_autoptr(EspalierModelDoc) doc = espalier_model_doc_new (&image, 10);
  g_autoptr(EspalierModelDoc) points = espalier_model_doc_new (NULL, 3);
  g_autoptr(GError) error = NULL;
  g_autofree char *label = NULL;
  EspalierTrainOptions opts;

  g_assert_true (espalier_model_doc_apply_template (doc, "mlp", &opts, &error));
  g_assert_no_error (error);
  assert_spec (doc, "flatten,dense:128,relu,dense:10,softmax");
  g_assert_true (espalier_model_doc_is_valid (doc));
  g_assert_cmpuint (opts.batch_size, ==, 32);
  g_assert_cmpuint (opts.epochs, ==, 10);
  g_object_get (doc, "undo-label", &label, NULL);
  g_assert_cmpstr (label, ==, "Apply template MLP");

  /* a template that does not suit the input leaves the doc alone */
  g_assert_false (espalier_model_doc_apply_template (points, "lenet", NULL, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);
  g_clear_error (&error);
  g_assert_false (espalier_model_doc_apply_template (points, "nonsense", NULL, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_cmpuint (espalier_model_doc_get_n_layers (points), ==, 0);
  g_assert_false (espalier_model_doc_can_undo (points));

  g_assert_true (espalier_model_doc_apply_template (points, "playground", &opts, &error));
  assert_spec (points, "dense:8,tanh,dense:8,tanh,dense:3,softmax");
  g_assert_true (espalier_model_doc_is_valid (points));
  g_assert_cmpuint (opts.epochs, ==, 300);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/core/model-doc/empty", test_empty);
  g_test_add_func ("/core/model-doc/undo-redo", test_undo_redo);
  g_test_add_func ("/core/model-doc/merge-edits", test_merge_edits);
  g_test_add_func ("/core/model-doc/invalid-dense-after-conv", test_invalid_dense_after_conv);
  g_test_add_func ("/core/model-doc/invalid-output", test_invalid_output);
  g_test_add_func ("/core/model-doc/too-large", test_too_large);
  g_test_add_func ("/core/model-doc/totals", test_totals);
  g_test_add_func ("/core/model-doc/spec", test_spec);
  g_test_add_func ("/core/model-doc/template", test_template);
  return g_test_run ();
}
