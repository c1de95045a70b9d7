/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-model-file.c: model files (NAME.json + NAME.safetensors) and templates.
 *
 * Round trips must be bit-exact (parameters, buffers, every option, the history);
 * the safetensors header must be what the format's specification says (checked with
 * Python's standard library when python3 is installed); every corruption must give an
 * error that names the file, and random corruption must never crash. */
#include "config.h"

#include <math.h>
#include <string.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "espalier-error.h"
#include "espalier-model-file.h"
#include "espalier-templates.h"
#include "quant-test-util.h"

static const EsShape image_28 = { .rank = 3, .dims = { 1, 28, 28 } };
static const EsShape points_2 = { .rank = 1, .dims = { 2 } };

/* ------------------------------------------------------------------------------------ */
/* helpers */

static char *
make_tmp_dir (void)
{
  g_autoptr(GError) error = NULL;
  char *dir = g_dir_make_tmp ("espalier-model-XXXXXX", &error);

  g_assert_no_error (error);
  return dir;
}

static int
compare_strings (gconstpointer a, gconstpointer b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

/* Names in dir, sorted, joined with spaces. */
static char *
dir_listing (const char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *name;

  g_assert_nonnull (d);
  while ((name = g_dir_read_name (d)) != NULL)
    g_ptr_array_add (names, g_strdup (name));
  g_ptr_array_sort (names, compare_strings);
  g_ptr_array_add (names, NULL);
  return g_strjoinv (" ", (char **) names->pdata);
}

static void
remove_tree (const char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;

  if (d == NULL)
    return;
  while ((name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *p = g_build_filename (dir, name, NULL);

      if (g_file_test (p, G_FILE_TEST_IS_DIR))
        remove_tree (p);
      else
        g_unlink (p);
    }
  g_rmdir (dir);
}

static GBytes *
read_bytes (const char *path)
{
  g_autoptr(GError) error = NULL;
  char *data = NULL;
  gsize len = 0;

  g_file_get_contents (path, &data, &len, &error);
  g_assert_no_error (error);
  return g_bytes_new_take (data, len);
}

static void
write_bytes (const char *path, const void *data, gsize len)
{
  g_autoptr(GError) error = NULL;

  g_file_set_contents (path, data, (gssize) len, &error);
  g_assert_no_error (error);
}

static guint32
float_bits (float f)
{
  guint32 u;

  memcpy (&u, &f, 4);
  return u;
}

static float
bits_float (guint32 u)
{
  float f;

  memcpy (&f, &u, 4);
  return f;
}

/* Equal bit for bit, or both NaN (JSON writes NaN as null). */
static void
assert_same_double (double a, double b)
{
  if (isnan (a) || isnan (b))
    g_assert_true (isnan (a) && isnan (b));
  else
    g_assert_cmpmem (&a, sizeof a, &b, sizeof b);
}

static void
assert_same_float (float a, float b)
{
  g_assert_cmphex (float_bits (a), ==, float_bits (b));
}

/* Parameters and buffers: seeded init, buffers random, and a few values JSON could not
 * hold (negative zero, a denormal, infinities, a NaN with a payload). */
static void
fill_model (EsModel *model, guint64 seed)
{
  GRand *rand = g_rand_new_with_seed ((guint32) seed);
  float *p = es_model_params (model);
  float *b = es_model_buffers (model);

  es_model_init (model, seed);
  for (gint64 i = 0; i < es_model_n_buffers (model); i++)
    b[i] = (float) g_rand_double_range (rand, 0.01, 3.0);
  if (es_model_n_params (model) >= 5)
    {
      p[0] = -0.0f;
      p[1] = 1e-40f;
      p[2] = bits_float (0x7fc12345u);
      p[3] = INFINITY;
      p[4] = -INFINITY;
    }
  g_rand_free (rand);
}

static void
fill_info (EspalierModelInfo *info, const char *template_name, guint n_classes, guint epochs)
{
  static const char *const names[] = { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                       "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot" };
  EspalierTrainOptions *o = &info->train;

  info->name = g_strdup (template_name);
  info->template_name = g_strdup (template_name);
  info->dataset_source = g_strdup ("fashion-mnist");
  info->preprocessing = g_strdup ("{\"standardize\":true,\"mean\":[0.5,0.25],\"fill\":\"forward\"}");
  info->class_names = g_new0 (char *, n_classes + 1);
  for (guint i = 0; i < n_classes; i++)
    info->class_names[i] = i < G_N_ELEMENTS (names) ? g_strdup (names[i])
                                                   : g_strdup_printf ("class \"%u\"\n", i);
  info->created = g_strdup ("2024-05-01T12:34:56.789Z");
  info->producer = g_strdup ("Espalier test");
  info->input_scale = 1.0 / 255.0;
  info->input_shift = -0.1;

  o->engine.loss = ES_LOSS_MSE;
  o->engine.optimizer = ES_OPT_ADAMW;
  o->engine.lr = 3e-4f;
  o->engine.momentum = 0.85f;
  o->engine.beta1 = 0.91f;
  o->engine.beta2 = 0.998f;
  o->engine.eps = 1.1e-8f;
  o->engine.weight_decay = 0.02f;
  o->engine.l1 = 1e-6f;
  o->engine.l2 = 1e-4f;
  o->engine.clip_norm = 1.5f;
  o->engine.accum_steps = 3;
  o->engine.schedule = ES_LR_COSINE;
  o->engine.step_size = 7;
  o->engine.gamma = 0.3f;
  o->engine.min_lr = 1e-6f;
  o->engine.total_steps = G_GINT64_CONSTANT (5000000000);
  o->engine.warmup_steps = 100;
  o->engine.seed = G_GUINT64_CONSTANT (0xfedcba9876543210);   /* above G_MAXINT64 */
  o->epochs = epochs;
  o->batch_size = 48;
  o->patience = 4;
  o->min_delta = 1e-3;
  o->val_fraction = 0.15;
  o->test_fraction = 0.25;
  o->seed = 12345;
  o->threads = 2;
  o->memory_limit = (gsize) 3 << 30;
  o->augment.shift_pixels = 2;
  o->augment.hflip = TRUE;
  o->augment.noise_std = 0.05f;

  for (guint e = 1; e <= epochs; e++)
    {
      EspalierEpochRecord r = {
        .epoch = e,
        .train_loss = 1.0 / e + 0.1,
        .train_accuracy = 1.0 - 0.5 / e,
        .val_loss = e % 3 == 0 ? NAN : 1.1 / e,
        .val_accuracy = e % 3 == 0 ? NAN : 1.0 - 0.6 / e,
        .lr = 3e-4 * pow (0.97, e),
        .seconds = 0.123456789 * e,
      };

      g_array_append_val (info->history, r);
    }

  info->test.rows = 10000;
  info->test.loss = 0.3141592653589793;
  info->test.accuracy = 0.8765;
  info->test.n_classes = n_classes;
  info->test.confusion = g_new0 (guint, n_classes * n_classes);
  for (guint i = 0; i < n_classes * n_classes; i++)
    info->test.confusion[i] = (i * 7919u) % 1000u;
}

static void
assert_models_equal (EsModel *a, EsModel *b)
{
  EsShape ia = es_model_input_shape (a), ib = es_model_input_shape (b);

  g_assert_true (es_shape_equal (&ia, &ib));
  g_assert_cmpint (es_model_n_layers (a), ==, es_model_n_layers (b));
  for (int i = 0; i < es_model_n_layers (a); i++)
    {
      const EsLayerSpec *sa = &es_model_layer (a, i)->spec, *sb = &es_model_layer (b, i)->spec;

      g_assert_cmpint (sa->kind, ==, sb->kind);
      g_assert_cmpint (sa->units, ==, sb->units);
      g_assert_cmpint (sa->filters, ==, sb->filters);
      g_assert_cmpint (sa->kernel, ==, sb->kernel);
      g_assert_cmpint (sa->stride, ==, sb->stride);
      g_assert_cmpint (sa->padding, ==, sb->padding);
      assert_same_float (sa->alpha, sb->alpha);
      assert_same_float (sa->rate, sb->rate);
      assert_same_float (sa->momentum, sb->momentum);
      assert_same_float (sa->eps, sb->eps);
    }
  g_assert_cmpint (es_model_n_params (a), ==, es_model_n_params (b));
  g_assert_cmpint (es_model_n_buffers (a), ==, es_model_n_buffers (b));
  g_assert_cmpmem (es_model_params (a), es_model_n_params (a) * 4,
                   es_model_params (b), es_model_n_params (b) * 4);
  g_assert_cmpmem (es_model_buffers (a), es_model_n_buffers (a) * 4,
                   es_model_buffers (b), es_model_n_buffers (b) * 4);
}

static void
assert_options_equal (const EspalierTrainOptions *a, const EspalierTrainOptions *b)
{
  g_assert_cmpint (a->engine.loss, ==, b->engine.loss);
  g_assert_cmpint (a->engine.optimizer, ==, b->engine.optimizer);
  assert_same_float (a->engine.lr, b->engine.lr);
  assert_same_float (a->engine.momentum, b->engine.momentum);
  assert_same_float (a->engine.beta1, b->engine.beta1);
  assert_same_float (a->engine.beta2, b->engine.beta2);
  assert_same_float (a->engine.eps, b->engine.eps);
  assert_same_float (a->engine.weight_decay, b->engine.weight_decay);
  assert_same_float (a->engine.l1, b->engine.l1);
  assert_same_float (a->engine.l2, b->engine.l2);
  assert_same_float (a->engine.clip_norm, b->engine.clip_norm);
  g_assert_cmpint (a->engine.accum_steps, ==, b->engine.accum_steps);
  g_assert_cmpint (a->engine.schedule, ==, b->engine.schedule);
  g_assert_cmpint (a->engine.step_size, ==, b->engine.step_size);
  assert_same_float (a->engine.gamma, b->engine.gamma);
  assert_same_float (a->engine.min_lr, b->engine.min_lr);
  g_assert_cmpint (a->engine.total_steps, ==, b->engine.total_steps);
  g_assert_cmpint (a->engine.warmup_steps, ==, b->engine.warmup_steps);
  g_assert_cmpuint (a->engine.seed, ==, b->engine.seed);
  g_assert_cmpuint (a->epochs, ==, b->epochs);
  g_assert_cmpuint (a->batch_size, ==, b->batch_size);
  g_assert_cmpuint (a->patience, ==, b->patience);
  assert_same_double (a->min_delta, b->min_delta);
  assert_same_double (a->val_fraction, b->val_fraction);
  assert_same_double (a->test_fraction, b->test_fraction);
  g_assert_cmpuint (a->seed, ==, b->seed);
  g_assert_cmpuint (a->threads, ==, b->threads);
  g_assert_cmpuint (a->memory_limit, ==, b->memory_limit);
  g_assert_cmpuint (a->augment.shift_pixels, ==, b->augment.shift_pixels);
  g_assert_cmpint (!!a->augment.hflip, ==, !!b->augment.hflip);
  assert_same_float (a->augment.noise_std, b->augment.noise_std);
}

static void
assert_infos_equal (const EspalierModelInfo *a, const EspalierModelInfo *b)
{
  g_assert_cmpstr (a->name, ==, b->name);
  g_assert_cmpstr (a->template_name, ==, b->template_name);
  g_assert_cmpstr (a->dataset_source, ==, b->dataset_source);
  g_assert_cmpstr (a->preprocessing, ==, b->preprocessing);
  g_assert_cmpstr (a->created, ==, b->created);
  g_assert_cmpstr (a->producer, ==, b->producer);
  g_assert_cmpint (a->class_names == NULL, ==, b->class_names == NULL);
  if (a->class_names != NULL)
    g_assert_true (g_strv_equal ((const char *const *) a->class_names,
                                 (const char *const *) b->class_names));
  assert_same_double (a->input_scale, b->input_scale);
  assert_same_double (a->input_shift, b->input_shift);
  assert_options_equal (&a->train, &b->train);

  g_assert_cmpuint (a->history->len, ==, b->history->len);
  for (guint i = 0; i < a->history->len; i++)
    {
      const EspalierEpochRecord *x = &g_array_index (a->history, EspalierEpochRecord, i);
      const EspalierEpochRecord *y = &g_array_index (b->history, EspalierEpochRecord, i);

      g_assert_cmpuint (x->epoch, ==, y->epoch);
      assert_same_double (x->train_loss, y->train_loss);
      assert_same_double (x->train_accuracy, y->train_accuracy);
      assert_same_double (x->val_loss, y->val_loss);
      assert_same_double (x->val_accuracy, y->val_accuracy);
      assert_same_double (x->lr, y->lr);
      assert_same_double (x->seconds, y->seconds);
    }

  g_assert_cmpuint (a->test.rows, ==, b->test.rows);
  assert_same_double (a->test.loss, b->test.loss);
  assert_same_double (a->test.accuracy, b->test.accuracy);
  g_assert_cmpuint (a->test.n_classes, ==, b->test.n_classes);
  g_assert_cmpint (a->test.confusion == NULL, ==, b->test.confusion == NULL);
  if (a->test.confusion != NULL)
    g_assert_cmpmem (a->test.confusion, a->test.n_classes * a->test.n_classes * sizeof (guint),
                     b->test.confusion, b->test.n_classes * b->test.n_classes * sizeof (guint));
}

/* Save model and info as dir/name, load them back and compare everything. */
static void
round_trip (EsModel *model, EspalierModelInfo *info, const char *name)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_autofree char *json_path = g_strconcat (path, ".json", NULL);
  g_autofree char *listing = NULL, *expected = NULL;
  g_autoptr(GError) error = NULL;
  EspalierModelInfo loaded;
  EsModel *back;

  g_assert_true (espalier_model_save (model, info, path, &error));
  g_assert_no_error (error);

  /* Only the two files: the temporary files were renamed. */
  listing = dir_listing (dir);
  expected = g_strdup_printf ("%s.json %s.safetensors", name, name);
  g_assert_cmpstr (listing, ==, expected);

  espalier_model_info_init (&loaded);
  back = espalier_model_load (json_path, &loaded, &error);
  g_assert_no_error (error);
  g_assert_nonnull (back);
  assert_models_equal (model, back);
  assert_infos_equal (info, &loaded);
  es_model_free (back);

  /* The other spelling of the path, and no info wanted. */
  back = espalier_model_load (path, NULL, &error);
  g_assert_no_error (error);
  assert_models_equal (model, back);
  es_model_free (back);

  /* Saving again replaces both files and leaves nothing else. */
  g_assert_true (espalier_model_save (model, info, json_path, &error));
  g_assert_no_error (error);
  g_free (listing);
  listing = dir_listing (dir);
  g_assert_cmpstr (listing, ==, expected);

  espalier_model_info_clear (&loaded);
  remove_tree (dir);
}

/* ------------------------------------------------------------------------------------ */
/* round trips */

static void
test_round_trip_mlp (void)
{
  g_autoptr(GError) error = NULL;
  EspalierModelInfo info;
  EsModel *model;

  espalier_model_info_init (&info);
  model = espalier_model_from_template ("mlp", &image_28, 10, &info.train, &error);
  g_assert_no_error (error);
  fill_model (model, 1);
  fill_info (&info, "mlp", 10, 12);
  round_trip (model, &info, "mlp");
  es_model_free (model);
  espalier_model_info_clear (&info);
}

static void
test_round_trip_lenet (void)
{
  static const char *spec =
    "conv2d:8:3:1:1,batchnorm,relu,maxpool2d:2,"
    "conv2d:16:5:2:2,batchnorm:0.05:0.001,leaky_relu:0.1,avgpool2d:2:1,"
    "flatten,dense:64,sigmoid,dropout:0.3,dense:10,tanh,softmax";
  g_autoptr(GError) error = NULL;
  EspalierModelInfo info;
  EsModel *model;

  /* The template itself. */
  espalier_model_info_init (&info);
  model = espalier_model_from_template ("lenet", &image_28, 10, &info.train, &error);
  g_assert_no_error (error);
  fill_model (model, 2);
  fill_info (&info, "lenet", 10, 10);
  round_trip (model, &info, "lenet");
  es_model_free (model);
  espalier_model_info_clear (&info);

  /* Every layer kind, BatchNorm buffers included. */
  espalier_model_info_init (&info);
  model = espalier_model_from_spec (spec, &image_28, &error);
  g_assert_no_error (error);
  g_assert_cmpint (es_model_n_buffers (model), ==, 2 * 8 + 2 * 16);
  fill_model (model, 3);
  fill_info (&info, NULL, 10, 3);
  info.name = g_strdup ("every kind");
  round_trip (model, &info, "lenet-bn");
  es_model_free (model);
  espalier_model_info_clear (&info);
}

static void
test_round_trip_playground (void)
{
  g_autoptr(GError) error = NULL;
  EspalierModelInfo info;
  EsModel *model;

  espalier_model_info_init (&info);
  model = espalier_model_from_template ("playground", &points_2, 3, &info.train, &error);
  g_assert_no_error (error);
  fill_model (model, 4);
  fill_info (&info, "playground", 3, 300);
  info.train.seed = G_MAXUINT64;
  info.train.memory_limit = G_MAXSIZE;
  round_trip (model, &info, "playground");
  es_model_free (model);
  espalier_model_info_clear (&info);

  /* A bare info: NULLs, no history, no test metrics; name from the path. */
  {
    g_autofree char *dir = make_tmp_dir ();
    g_autofree char *path = g_build_filename (dir, "bare.json", NULL);
    EspalierModelInfo bare, loaded;
    EsModel *back;

    espalier_model_info_init (&bare);
    model = espalier_model_from_template ("playground", &points_2, 2, &bare.train, &error);
    g_assert_no_error (error);
    g_assert_true (espalier_model_save (model, &bare, path, &error));
    g_assert_no_error (error);
    espalier_model_info_init (&loaded);
    back = espalier_model_load (path, &loaded, &error);
    g_assert_no_error (error);
    assert_models_equal (model, back);
    g_assert_cmpstr (loaded.name, ==, "bare");
    g_assert_null (loaded.template_name);
    g_assert_null (loaded.dataset_source);
    g_assert_null (loaded.preprocessing);
    g_assert_null (loaded.class_names);
    g_assert_null (loaded.test.confusion);
    g_assert_true (isnan (loaded.test.loss));
    g_assert_cmpuint (loaded.history->len, ==, 0);
    g_assert_nonnull (loaded.created);
    g_assert_true (g_str_has_prefix (loaded.producer, "Espalier "));
    assert_options_equal (&bare.train, &loaded.train);
    es_model_free (back);
    es_model_free (model);
    espalier_model_info_clear (&loaded);
    espalier_model_info_clear (&bare);
    remove_tree (dir);
  }
}

/* ------------------------------------------------------------------------------------ */
/* the safetensors layout */

/* Save the mlp template (filled) as dir/mlp; returns the model. */
static EsModel *
save_mlp (const char *dir, EspalierModelInfo *info)
{
  g_autofree char *path = g_build_filename (dir, "mlp", NULL);
  g_autoptr(GError) error = NULL;
  EsModel *model = espalier_model_from_template ("mlp", &image_28, 10, &info->train, &error);

  g_assert_no_error (error);
  fill_model (model, 5);
  fill_info (info, "mlp", 10, 5);
  g_assert_true (espalier_model_save (model, info, path, &error));
  g_assert_no_error (error);
  return model;
}

static void
test_safetensors_header (void)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *st_path = g_build_filename (dir, "mlp.safetensors", NULL);
  g_autofree char *json_path = g_build_filename (dir, "mlp.json", NULL);
  g_autoptr(JsonParser) parser = json_parser_new ();
  g_autoptr(JsonParser) jparser = json_parser_new ();
  g_autoptr(GBytes) bytes = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  EspalierModelInfo info;
  EsModel *model;
  const guint8 *data;
  gsize len;
  guint64 header_len;
  JsonObject *header, *meta, *weights;
  gint64 expect_offset = 0;

  espalier_model_info_init (&info);
  model = save_mlp (dir, &info);
  bytes = read_bytes (st_path);
  data = g_bytes_get_data (bytes, &len);
  g_assert_cmpuint (len, >=, 8);
  memcpy (&header_len, data, 8);
  header_len = GUINT64_FROM_LE (header_len);
  g_assert_cmpuint (header_len % 8, ==, 0);
  g_assert_cmpuint (8 + header_len, <=, len);
  g_assert_cmpint (data[8], ==, '{');
  json_parser_load_from_data (parser, (const char *) data + 8, (gssize) header_len, &error);
  g_assert_no_error (error);
  header = json_node_get_object (json_parser_get_root (parser));

  meta = json_object_get_object_member (header, "__metadata__");
  g_assert_nonnull (meta);
  g_assert_cmpstr (json_object_get_string_member (meta, "model"), ==, "mlp");
  g_assert_cmpstr (json_object_get_string_member (meta, "format"), ==, "pt");
  g_assert_cmpuint (json_object_get_size (header), ==, es_model_n_tensors (model) + 1);

  for (int i = 0; i < es_model_n_tensors (model); i++)
    {
      const EsTensorInfo *t = es_model_tensor (model, i);
      JsonObject *e = json_object_get_object_member (header, t->name);
      JsonArray *shape, *offsets;
      gint64 begin, end;

      g_assert_nonnull (e);
      g_assert_cmpstr (json_object_get_string_member (e, "dtype"), ==, "F32");
      shape = json_object_get_array_member (e, "shape");
      g_assert_cmpuint (json_array_get_length (shape), ==, t->rank);
      for (int k = 0; k < t->rank; k++)
        g_assert_cmpint (json_array_get_int_element (shape, k), ==, t->dims[k]);
      offsets = json_object_get_array_member (e, "data_offsets");
      begin = json_array_get_int_element (offsets, 0);
      end = json_array_get_int_element (offsets, 1);
      g_assert_cmpint (begin, ==, expect_offset);
      g_assert_cmpint (end - begin, ==, t->size * 4);
      g_assert_cmpmem (data + 8 + header_len + begin, (gsize) (end - begin),
                       es_model_tensor_data (model, i), (gsize) t->size * 4);
      expect_offset = end;
    }
  g_assert_cmpint (8 + (gint64) header_len + expect_offset, ==, (gint64) len);
  g_assert_cmpstr (es_model_tensor (model, 0)->name, ==, "layers.1.weight");

  /* The JSON file records the weights' name, size and SHA-256. */
  json_parser_load_from_file (jparser, json_path, &error);
  g_assert_no_error (error);
  weights = json_object_get_object_member (json_node_get_object (json_parser_get_root (jparser)),
                                           "weights");
  g_checksum_update (sum, data, (gssize) len);
  g_assert_cmpstr (json_object_get_string_member (weights, "file"), ==, "mlp.safetensors");
  g_assert_cmpint (json_object_get_int_member (weights, "size"), ==, (gint64) len);
  g_assert_cmpstr (json_object_get_string_member (weights, "sha256"), ==, g_checksum_get_string (sum));

  es_model_free (model);
  espalier_model_info_clear (&info);
  remove_tree (dir);
}

/* The safetensors file read by Python's standard library, following the format's
 * specification: the header, contiguous offsets, the little-endian floats. */
static const char python_check[] =
  "import json, math, struct, sys\n"
  "b = open(sys.argv[1], 'rb').read()\n"
  "n, = struct.unpack('<Q', b[:8])\n"
  "assert n % 8 == 0 and 8 + n <= len(b)\n"
  "h = json.loads(b[8:8 + n].decode('utf-8'))\n"
  "meta = h.pop('__metadata__', {})\n"
  "assert all(isinstance(v, str) for v in meta.values())\n"
  "data = b[8 + n:]\n"
  "pos = 0\n"
  "for s, e, k in sorted((v['data_offsets'][0], v['data_offsets'][1], k) for k, v in h.items()):\n"
  "    assert s == pos, k\n"
  "    pos = e\n"
  "assert pos == len(data)\n"
  "out = {}\n"
  "for k, v in h.items():\n"
  "    assert v['dtype'] == 'F32'\n"
  "    count = 1\n"
  "    for d in v['shape']:\n"
  "        count *= d\n"
  "    s, e = v['data_offsets']\n"
  "    assert e - s == 4 * count\n"
  "    vals = struct.unpack('<%df' % count, data[s:e])\n"
  "    out[k] = [v['shape'], vals[-1], sum(x for x in vals if math.isfinite(x))]\n"
  "print(json.dumps(out))\n";

static void
test_safetensors_python (void)
{
  g_autofree char *python = g_find_program_in_path ("python3");
  g_autofree char *dir = NULL, *st_path = NULL, *out = NULL, *err_out = NULL;
  g_autoptr(JsonParser) parser = json_parser_new ();
  g_autoptr(GError) error = NULL;
  EspalierModelInfo info;
  EsModel *model;
  JsonObject *result;
  int status = 0;

  if (python == NULL)
    {
      g_test_skip ("python3 is not installed");
      return;
    }
  dir = make_tmp_dir ();
  st_path = g_build_filename (dir, "mlp.safetensors", NULL);
  espalier_model_info_init (&info);
  model = save_mlp (dir, &info);
  {
    const char *argv[] = { python, "-c", python_check, st_path, NULL };

    g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err_out,
                  &status, &error);
  }
  g_assert_no_error (error);
  if (!g_spawn_check_wait_status (status, NULL))
    g_error ("python's reading of %s failed: %s", st_path, err_out);
  json_parser_load_from_data (parser, out, -1, &error);
  g_assert_no_error (error);
  result = json_node_get_object (json_parser_get_root (parser));
  g_assert_cmpuint (json_object_get_size (result), ==, es_model_n_tensors (model));
  for (int i = 0; i < es_model_n_tensors (model); i++)
    {
      const EsTensorInfo *t = es_model_tensor (model, i);
      const float *v = es_model_tensor_data (model, i);
      JsonArray *row = json_object_get_array_member (result, t->name);
      JsonArray *shape = json_array_get_array_element (row, 0);
      double sum = 0.0;

      for (int k = 0; k < t->rank; k++)
        g_assert_cmpint (json_array_get_int_element (shape, k), ==, t->dims[k]);
      assert_same_float ((float) json_array_get_double_element (row, 1), v[t->size - 1]);
      for (gint64 k = 0; k < t->size; k++)
        if (isfinite (v[k]))
          sum += v[k];
      g_assert_cmpfloat_with_epsilon (json_array_get_double_element (row, 2), sum,
                                      1e-9 * (1.0 + fabs (sum)));
    }
  es_model_free (model);
  espalier_model_info_clear (&info);
  remove_tree (dir);
}

/* ------------------------------------------------------------------------------------ */
/* atomic writes */

static void
test_atomic_write (void)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *missing = g_build_filename (dir, "no-such-dir", "mlp", NULL);
  g_autofree char *blocker = g_build_filename (dir, "mlp.json", NULL);
  g_autofree char *listing = NULL;
  g_autoptr(GError) error = NULL;
  EspalierModelInfo info;
  EsModel *model;

  espalier_model_info_init (&info);
  model = espalier_model_from_template ("mlp", &image_28, 10, &info.train, &error);
  g_assert_no_error (error);

  /* A directory that does not exist: an I/O error, nothing written. */
  g_assert_false (espalier_model_save (model, &info, missing, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  g_assert_nonnull (strstr (error->message, "mlp"));
  g_clear_error (&error);
  listing = dir_listing (dir);
  g_assert_cmpstr (listing, ==, "");

  /* The target is a directory: the rename fails and the temporary files go away. */
  g_assert_cmpint (g_mkdir (blocker, 0755), ==, 0);
  g_assert_false (espalier_model_save (model, &info, blocker, &error));
  g_assert_nonnull (error);
  g_assert_true (error->domain == G_IO_ERROR);
  g_clear_error (&error);
  g_free (listing);
  listing = dir_listing (dir);
  g_assert_false (strstr (listing, ".mlp.") != NULL);
  g_rmdir (blocker);

  /* Preprocessing that is not JSON is refused before anything is written. */
  info.preprocessing = g_strdup ("{standardize: yes");
  g_assert_false (espalier_model_save (model, &info, blocker, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_clear_error (&error);
  g_free (listing);
  listing = dir_listing (dir);
  g_assert_false (strstr (listing, "mlp.json") != NULL);

  /* So are options that loading would refuse. */
  g_clear_pointer (&info.preprocessing, g_free);
  info.train.batch_size = 0;
  g_assert_false (espalier_model_save (model, &info, blocker, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "training.batch_size"));
  g_clear_error (&error);
  info.train.batch_size = 32;
  info.train.engine.lr = NAN;
  g_assert_false (espalier_model_save (model, &info, blocker, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "training.lr"));
  g_clear_error (&error);
  g_free (listing);
  listing = dir_listing (dir);
  g_assert_false (strstr (listing, "mlp.json") != NULL);

  es_model_free (model);
  espalier_model_info_clear (&info);
  remove_tree (dir);
}

/* ------------------------------------------------------------------------------------ */
/* load errors */

typedef struct {
  char              *dir;
  char              *json_path;
  char              *st_path;
  GBytes            *json;   /* the pristine files */
  GBytes            *st;
  EsModel           *model;
  EsQuant           *quant;  /* the quantized fixture's, else NULL */
  EspalierModelInfo  info;
} Fixture;

static void
fixture_set_up (Fixture *f, gconstpointer data)
{
  f->dir = make_tmp_dir ();
  f->json_path = g_build_filename (f->dir, "mlp.json", NULL);
  f->st_path = g_build_filename (f->dir, "mlp.safetensors", NULL);
  espalier_model_info_init (&f->info);
  f->model = save_mlp (f->dir, &f->info);
  f->json = read_bytes (f->json_path);
  f->st = read_bytes (f->st_path);
}

static void
fixture_tear_down (Fixture *f, gconstpointer data)
{
  remove_tree (f->dir);
  g_free (f->dir);
  g_free (f->json_path);
  g_free (f->st_path);
  g_bytes_unref (f->json);
  g_bytes_unref (f->st);
  es_model_free (f->model);
  g_clear_pointer (&f->quant, es_quant_free);
  espalier_model_info_clear (&f->info);
}

/* Load must fail with ESPALIER_ERROR_FORMAT naming file and containing what. */
static void
assert_format_error (Fixture *f, const char *file, const char *what)
{
  g_autoptr(GError) error = NULL;
  EspalierModelInfo info;
  EsModel *model;

  espalier_model_info_init (&info);
  info.name = g_strdup ("untouched");
  model = espalier_model_load (f->json_path, &info, &error);
  g_assert_null (model);
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT);
  if (g_test_verbose ())
    g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, file));
  if (what != NULL && strstr (error->message, what) == NULL)
    g_error ("“%s” is not in the error “%s”", what, error->message);
  g_assert_cmpstr (info.name, ==, "untouched");
  espalier_model_info_clear (&info);
}

typedef void (*EditJson) (JsonObject *root);

/* Rewrite the JSON file after edit. */
static void
edit_json (Fixture *f, EditJson edit)
{
  g_autoptr(JsonParser) parser = json_parser_new ();
  g_autoptr(GError) error = NULL;
  g_autofree char *text = NULL;
  gsize len;
  const char *data = g_bytes_get_data (f->json, &len);

  json_parser_load_from_data (parser, data, (gssize) len, &error);
  g_assert_no_error (error);
  edit (json_node_get_object (json_parser_get_root (parser)));
  text = json_to_string (json_parser_get_root (parser), TRUE);
  write_bytes (f->json_path, text, strlen (text));
}

typedef void (*EditHeader) (JsonObject *header);

/* Rewrite the safetensors header after edit, keeping the data. */
static void
edit_header (Fixture *f, EditHeader edit)
{
  g_autoptr(JsonParser) parser = json_parser_new ();
  g_autoptr(GError) error = NULL;
  g_autofree char *text = NULL;
  GString *out;
  gsize len;
  const guint8 *data = g_bytes_get_data (f->st, &len);
  guint64 n, n_le;

  memcpy (&n, data, 8);
  n = GUINT64_FROM_LE (n);
  json_parser_load_from_data (parser, (const char *) data + 8, (gssize) n, &error);
  g_assert_no_error (error);
  edit (json_node_get_object (json_parser_get_root (parser)));
  text = json_to_string (json_parser_get_root (parser), FALSE);
  out = g_string_new (text);
  while (out->len % 8 != 0)
    g_string_append_c (out, ' ');
  n_le = GUINT64_TO_LE ((guint64) out->len);
  g_string_prepend_len (out, (const char *) &n_le, 8);
  g_string_append_len (out, (const char *) data + 8 + n, (gssize) (len - 8 - n));
  write_bytes (f->st_path, out->str, out->len);
  g_string_free (out, TRUE);
}

static void
test_load_ok (Fixture *f, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  EsModel *model = espalier_model_load (f->json_path, NULL, &error);

  g_assert_no_error (error);
  assert_models_equal (f->model, model);
  es_model_free (model);
}

static void
test_missing_files (Fixture *f, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *nowhere = g_build_filename (f->dir, "nothing.json", NULL);

  g_assert_null (espalier_model_load (nowhere, NULL, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  g_assert_nonnull (strstr (error->message, nowhere));
  g_clear_error (&error);

  g_unlink (f->st_path);
  g_assert_null (espalier_model_load (f->json_path, NULL, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  g_assert_nonnull (strstr (error->message, f->st_path));
}

static void
test_truncated (Fixture *f, gconstpointer data)
{
  gsize len;
  const guint8 *st = g_bytes_get_data (f->st, &len);

  write_bytes (f->st_path, st, len - 100);
  assert_format_error (f, f->st_path, "truncated");
  write_bytes (f->st_path, st, 5);
  assert_format_error (f, f->st_path, "too short");
  write_bytes (f->st_path, st, 0);
  assert_format_error (f, f->st_path, "too short");
  write_bytes (f->st_path, st, 200);
  assert_format_error (f, f->st_path, "header length");
}

static void
test_header_length (Fixture *f, gconstpointer data)
{
  gsize len;
  g_autofree guint8 *st = g_memdup2 (g_bytes_get_data (f->st, &len), g_bytes_get_size (f->st));
  guint64 huge = GUINT64_TO_LE (G_MAXUINT64 - 3);

  memcpy (st, &huge, 8);
  write_bytes (f->st_path, st, len);
  assert_format_error (f, f->st_path, "header length");
  huge = GUINT64_TO_LE (1);
  memcpy (st, &huge, 8);
  write_bytes (f->st_path, st, len);
  assert_format_error (f, f->st_path, "header length");
}

static void
set_dtype_f16 (JsonObject *header)
{
  json_object_set_string_member (json_object_get_object_member (header, "layers.3.weight"),
                                 "dtype", "F16");
}

static void
test_wrong_dtype (Fixture *f, gconstpointer data)
{
  edit_header (f, set_dtype_f16);
  assert_format_error (f, f->st_path, "dtype F16");
}

static void
transpose_shape (JsonObject *header)
{
  JsonArray *shape = json_array_new ();

  /* (10, 128) -> (128, 10): the same bytes, the wrong shape. */
  json_array_add_int_element (shape, 128);
  json_array_add_int_element (shape, 10);
  json_object_set_array_member (json_object_get_object_member (header, "layers.3.weight"),
                                "shape", shape);
}

static void
test_shape_mismatch (Fixture *f, gconstpointer data)
{
  edit_header (f, transpose_shape);
  assert_format_error (f, f->st_path, "layers.3.weight");
}

static void
overlap_offsets (JsonObject *header)
{
  JsonArray *offsets = json_array_new ();

  /* layers.3.bias (10 floats) placed inside layers.1.bias. */
  json_array_add_int_element (offsets, 784 * 128 * 4);
  json_array_add_int_element (offsets, 784 * 128 * 4 + 40);
  json_object_set_array_member (json_object_get_object_member (header, "layers.3.bias"),
                                "data_offsets", offsets);
}

static void
drop_tensor (JsonObject *header)
{
  json_object_remove_member (header, "layers.1.bias");
}

static void
add_tensor (JsonObject *header)
{
  JsonObject *extra = json_object_new ();
  JsonArray *shape = json_array_new (), *offsets = json_array_new ();

  json_object_set_string_member (extra, "dtype", "F32");
  json_array_add_int_element (shape, 1);
  json_array_add_int_element (offsets, 0);
  json_array_add_int_element (offsets, 4);
  json_object_set_array_member (extra, "shape", shape);
  json_object_set_array_member (extra, "data_offsets", offsets);
  json_object_set_object_member (header, "layers.9.weight", extra);
}

static void
bad_metadata (JsonObject *header)
{
  json_object_set_int_member (json_object_get_object_member (header, "__metadata__"), "n", 3);
}

static void
test_bad_header (Fixture *f, gconstpointer data)
{
  edit_header (f, overlap_offsets);
  assert_format_error (f, f->st_path, "overlap");
  edit_header (f, drop_tensor);
  assert_format_error (f, f->st_path, "“layers.1.bias” is missing");
  edit_header (f, add_tensor);
  assert_format_error (f, f->st_path, "layers.9.weight");
  edit_header (f, bad_metadata);
  assert_format_error (f, f->st_path, "__metadata__");
}

static void
test_checksum (Fixture *f, gconstpointer data)
{
  gsize len;
  g_autofree guint8 *st = g_memdup2 (g_bytes_get_data (f->st, &len), g_bytes_get_size (f->st));

  st[len - 1] ^= 0x01;
  write_bytes (f->st_path, st, len);
  assert_format_error (f, f->st_path, "SHA-256");
}

/* A save cut between its two renames leaves the new weights beside the old JSON file,
 * with the old weights kept as .mlp.safetensors.old: the load is the old model, exactly.
 * Other weights there (not the ones the JSON records) change nothing. */
static void
test_previous_weights (Fixture *f, gconstpointer data)
{
  g_autofree char *prev = g_build_filename (f->dir, ".mlp.safetensors.old", NULL);
  g_autoptr(GError) error = NULL;
  gsize len;
  g_autofree guint8 *other = g_memdup2 (g_bytes_get_data (f->st, &len), g_bytes_get_size (f->st));
  EsModel *model;

  other[len - 1] ^= 0x01;
  g_assert_cmpint (g_rename (f->st_path, prev), ==, 0);
  write_bytes (f->st_path, other, len);
  model = espalier_model_load (f->json_path, NULL, &error);
  g_assert_no_error (error);
  qtu_assert_weights_equal (model, f->model);
  es_model_free (model);

  /* Kept weights that are not the JSON's own: the error is about the weights file. */
  write_bytes (prev, other, len);
  assert_format_error (f, f->st_path, "SHA-256");
}

/* Limits: the architecture's parameters are checked against training.memory_limit and
 * the machine's memory (ESPALIER_MEMORY_AVAILABLE makes it small) before anything is
 * mapped or allocated: ESPALIER_ERROR_MEMORY naming the count and the sizes. */
static void
set_memory_limit (JsonObject *root)
{
  json_object_set_int_member (json_object_get_object_member (root, "training"), "memory_limit",
                              100000);
}

static void
assert_memory_error (Fixture *f, const char *count, const char *why)
{
  g_autoptr(GError) error = NULL;
  EsModel *model = espalier_model_load (f->json_path, NULL, &error);

  g_assert_null (model);
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY);
  g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, f->json_path));
  if (strstr (error->message, count) == NULL || strstr (error->message, why) == NULL)
    g_error ("“%s” and “%s” are not in the error “%s”", count, why, error->message);
}

static void
test_memory_limit (Fixture *f, gconstpointer data)
{
  g_autofree char *count = g_strdup_printf ("has %" G_GINT64_FORMAT " parameters",
                                            es_model_n_params (f->model)
                                            + es_model_n_buffers (f->model));
  g_autofree char *need = g_format_size ((guint64) (es_model_n_params (f->model)
                                                    + es_model_n_buffers (f->model)) * 4);
  g_autofree char *limit = g_format_size (100000);
  g_autofree char *why = g_strdup_printf ("needs %s of memory, more than the memory limit of %s",
                                          need, limit);

  edit_json (f, set_memory_limit);
  assert_memory_error (f, count, why);
}

/* The same model on a machine of 100 kB. */
static void
test_memory_available (Fixture *f, gconstpointer data)
{
  gint64 n = es_model_n_params (f->model) + es_model_n_buffers (f->model);
  g_autofree char *count = g_strdup_printf ("has %" G_GINT64_FORMAT " parameters", n);
  g_autofree char *need = g_format_size ((guint64) n * 4), *have = g_format_size (100000);
  g_autofree char *why = g_strdup_printf ("needs %s of memory, more than the %s available", need,
                                          have);

  g_setenv ("ESPALIER_MEMORY_AVAILABLE", "100000", TRUE);
  assert_memory_error (f, count, why);
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");
}

/* A JSON file declaring enormous layers beside its small weights file: refused as
 * corrupt before anything is allocated, naming the floats the layers would need. */
static void
enormous_layers (JsonObject *root)
{
  JsonArray *layers = json_object_get_array_member (json_object_get_object_member (root,
                                                                                   "architecture"),
                                                    "layers");

  /* flatten, dense:128, relu, dense:10, softmax -> the two Dense 16777216 wide */
  json_object_set_int_member (json_array_get_object_element (layers, 1), "units", 16777216);
  json_object_set_int_member (json_array_get_object_element (layers, 3), "units", 16777216);
}

static void
test_memory_enormous (Fixture *f, gconstpointer data)
{
  /* Dense 784 -> U (weights and biases): already more than the data holds. */
  double U = 16777216.0;
  g_autofree char *floats = g_strdup_printf ("up to its layer 2 the architecture in %s needs %.0f "
                                             "floats", f->json_path, 784.0 * U + U);

  edit_json (f, enormous_layers);
  assert_format_error (f, f->st_path, floats);
}

static void
remove_lr (JsonObject *root)
{
  json_object_remove_member (json_object_get_object_member (root, "training"), "lr");
}

static void
remove_weights (JsonObject *root)
{
  json_object_remove_member (root, "weights");
}

static void
epochs_as_string (JsonObject *root)
{
  json_object_set_string_member (json_object_get_object_member (root, "training"), "epochs", "ten");
}

static JsonObject *
layer_object (JsonObject *root, guint i)
{
  return json_array_get_object_element (
    json_object_get_array_member (json_object_get_object_member (root, "architecture"), "layers"), i);
}

static void
negative_units (JsonObject *root)
{
  json_object_set_int_member (layer_object (root, 1), "units", -5);
}

static void
unknown_kind (JsonObject *root)
{
  json_object_set_string_member (layer_object (root, 1), "kind", "transformer");
}

static void
missing_units (JsonObject *root)
{
  json_object_remove_member (layer_object (root, 3), "units");
}

static void
unknown_optimizer (JsonObject *root)
{
  json_object_set_string_member (json_object_get_object_member (root, "training"), "optimizer",
                                 "lion");
}

static void
flat_input (JsonObject *root)
{
  JsonArray *shape = json_array_new ();

  /* Flatten then Dense still build on (784), but the tensors are the same: so drop
   * Flatten's reason to exist by putting a pool first. */
  json_array_add_int_element (shape, 784);
  json_object_set_array_member (json_object_get_object_member (root, "architecture"),
                                "input_shape", shape);
  json_object_set_string_member (layer_object (root, 0), "kind", "maxpool2d");
  json_object_set_int_member (layer_object (root, 0), "kernel", 2);
  json_object_set_int_member (layer_object (root, 0), "stride", 2);
}

static void
wrong_n_params (JsonObject *root)
{
  json_object_set_int_member (json_object_get_object_member (root, "architecture"), "n_params", 7);
}

static void
escaping_weights (JsonObject *root)
{
  json_object_set_string_member (json_object_get_object_member (root, "weights"), "file",
                                 "../mlp.safetensors");
}

static void
bad_confusion (JsonObject *root)
{
  JsonArray *rows = json_object_get_array_member (json_object_get_object_member (root, "test"),
                                                  "confusion");

  json_array_add_int_element (json_array_get_array_element (rows, 4), 3);
}

static void
huge_layer (JsonObject *root)
{
  json_object_set_int_member (layer_object (root, 1), "units", 1 << 24);
  json_object_set_int_member (layer_object (root, 3), "units", 1 << 24);
}

static void
huge_input (JsonObject *root)
{
  JsonArray *shape = json_array_new ();

  json_array_add_int_element (shape, 1);
  json_array_add_int_element (shape, 1 << 20);
  json_array_add_int_element (shape, 1 << 20);
  json_object_set_array_member (json_object_get_object_member (root, "architecture"),
                                "input_shape", shape);
}

static void
wrong_format (JsonObject *root)
{
  json_object_set_string_member (root, "format", "keras");
}

static void
newer_version (JsonObject *root)
{
  json_object_set_int_member (root, "version", 99);
}

static void
test_json_errors (Fixture *f, gconstpointer data)
{
  static const struct {
    EditJson    edit;
    const char *what;
  } cases[] = {
    { remove_lr, "“training.lr” is missing" },
    { remove_weights, "“weights” is missing" },
    { epochs_as_string, "training.epochs" },
    { negative_units, "architecture.layers[1].units" },
    { unknown_kind, "transformer" },
    { missing_units, "“architecture.layers[3].units” is missing" },
    { unknown_optimizer, "lion" },
    { flat_input, "Layer 1" },
    { wrong_n_params, "n_params" },
    { escaping_weights, "weights.file" },
    { bad_confusion, "test.confusion[4]" },
    { huge_layer, "the architecture is corrupt" },
    { huge_input, "too large" },
    { wrong_format, "keras" },
    { newer_version, "version 99" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      gsize len;
      const char *json = g_bytes_get_data (f->json, &len);

      edit_json (f, cases[i].edit);
      assert_format_error (f, f->json_path, cases[i].what);
      write_bytes (f->json_path, json, len);
    }
}

static void
test_malformed_json (Fixture *f, gconstpointer data)
{
  gsize len;
  const char *json = g_bytes_get_data (f->json, &len);

  write_bytes (f->json_path, json, len / 2);
  assert_format_error (f, f->json_path, "JSON");
  write_bytes (f->json_path, "[1, 2, 3]", 9);
  assert_format_error (f, f->json_path, "object");
  write_bytes (f->json_path, "", 0);
  assert_format_error (f, f->json_path, NULL);
  {
    static const char bad_utf8[] = "{\"format\": \"espalier-model\", \"x\": \"\xff\xfe\"}";

    write_bytes (f->json_path, bad_utf8, strlen (bad_utf8));
  }
  assert_format_error (f, f->json_path, "UTF-8");
}

/* Random corruption of either file loads or fails cleanly; it never crashes. */
static void
test_fuzz (void)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *json_path = g_build_filename (dir, "p.json", NULL);
  g_autofree char *st_path = g_build_filename (dir, "p.safetensors", NULL);
  static const char json_chars[] = "{}[]\":,.-0123456789eEn\\tf";
  g_autoptr(GBytes) json = NULL, st = NULL;
  g_autoptr(GError) error = NULL;
  GRand *rand = g_rand_new_with_seed (7);
  EspalierModelInfo info;
  EsModel *model;
  int loaded = 0, failed = 0;

  espalier_model_info_init (&info);
  model = espalier_model_from_template ("playground", &points_2, 3, &info.train, &error);
  g_assert_no_error (error);
  fill_info (&info, "playground", 3, 4);
  g_assert_true (espalier_model_save (model, &info, json_path, &error));
  g_assert_no_error (error);
  json = read_bytes (json_path);
  st = read_bytes (st_path);

  for (int round = 0; round < 600; round++)
    {
      GBytes *victim = round % 2 == 0 ? json : st;
      const char *path = round % 2 == 0 ? json_path : st_path;
      gsize len = g_bytes_get_size (victim);
      g_autofree guint8 *copy = g_memdup2 (g_bytes_get_data (victim, NULL), len);
      gsize new_len = len;
      int flips = g_rand_int_range (rand, 1, 5);
      EspalierModelInfo out;
      EsModel *back;

      for (int k = 0; k < flips; k++)
        {
          gsize at = (gsize) g_rand_int_range (rand, 0, (gint32) len);

          switch (g_rand_int_range (rand, 0, 4))
            {
            case 0: copy[at] ^= (guint8) (1u << g_rand_int_range (rand, 0, 8)); break;
            case 1: copy[at] = (guint8) g_rand_int_range (rand, 0, 256); break;
            case 2: copy[at] = json_chars[g_rand_int_range (rand, 0, sizeof json_chars - 1)]; break;
            default: new_len = MIN (new_len, at); break;
            }
        }
      write_bytes (path, copy, new_len);
      espalier_model_info_init (&out);
      back = espalier_model_load (json_path, &out, &error);
      if (back != NULL)
        {
          loaded++;
          es_model_free (back);
        }
      else
        {
          g_assert_nonnull (error);
          g_assert_true (error->domain == ESPALIER_ERROR);
          g_assert_nonnull (strstr (error->message, path));
          failed++;
          g_clear_error (&error);
        }
      espalier_model_info_clear (&out);
      write_bytes (path, g_bytes_get_data (victim, NULL), len);
    }
  g_test_message ("fuzz: %d loaded, %d refused", loaded, failed);
  g_assert_cmpint (failed, >, 300);

  g_rand_free (rand);
  es_model_free (model);
  espalier_model_info_clear (&info);
  remove_tree (dir);
}

/* A place in a JSON tree: a member of an object or an element of an array. */
typedef struct {
  JsonNode *parent;
  char     *key;     /* object member, or NULL */
  guint     index;   /* array element */
} Slot;

static void
slot_free (gpointer p)
{
  Slot *slot = p;

  g_free (slot->key);
  g_free (slot);
}

static void
collect_slots (JsonNode *node, GPtrArray *out)
{
  if (JSON_NODE_HOLDS_OBJECT (node))
    {
      JsonObject *obj = json_node_get_object (node);
      g_autoptr(GList) members = json_object_get_members (obj);

      for (GList *l = members; l != NULL; l = l->next)
        {
          Slot *slot = g_new0 (Slot, 1);

          slot->parent = node;
          slot->key = g_strdup (l->data);
          g_ptr_array_add (out, slot);
          collect_slots (json_object_get_member (obj, l->data), out);
        }
    }
  else if (JSON_NODE_HOLDS_ARRAY (node))
    {
      JsonArray *arr = json_node_get_array (node);

      for (guint i = 0; i < json_array_get_length (arr); i++)
        {
          Slot *slot = g_new0 (Slot, 1);

          slot->parent = node;
          slot->index = i;
          g_ptr_array_add (out, slot);
          collect_slots (json_array_get_element (arr, i), out);
        }
    }
}

/* Replace one random value of the JSON text with a well-formed but wrong one, or drop
 * it. (json-glib 1.6 cannot re-initialize a node that holds a container, so values are
 * replaced through their parent; an array element moves to the end.) */
static char *
mutate_json (const char *text, gsize len, GRand *rand)
{
  g_autoptr(JsonParser) parser = json_parser_new ();
  g_autoptr(GPtrArray) slots = g_ptr_array_new_with_free_func (slot_free);
  g_autoptr(GError) error = NULL;
  JsonNode *value = NULL;
  Slot *slot;

  json_parser_load_from_data (parser, text, (gssize) len, &error);
  g_assert_no_error (error);
  collect_slots (json_parser_get_root (parser), slots);
  slot = g_ptr_array_index (slots, g_rand_int_range (rand, 0, (gint32) slots->len));
  switch (g_rand_int_range (rand, 0, 12))
    {
    case 0: value = json_node_init_int (json_node_alloc (), -1); break;
    case 1: value = json_node_init_int (json_node_alloc (), 0); break;
    case 2: value = json_node_init_int (json_node_alloc (), G_GINT64_CONSTANT (1) << 31); break;
    case 3: value = json_node_init_int (json_node_alloc (), G_GINT64_CONSTANT (1) << 62); break;
    case 4: value = json_node_init_double (json_node_alloc (), -2.5); break;
    case 5: value = json_node_init_double (json_node_alloc (), 15000000000.0); break;
    case 6: value = json_node_init_string (json_node_alloc (), "x"); break;
    case 7: value = json_node_init_null (json_node_alloc ()); break;
    case 8: value = json_node_init_boolean (json_node_alloc (), TRUE); break;
    case 9: value = json_node_new (JSON_NODE_ARRAY); json_node_take_array (value, json_array_new ()); break;
    case 10: value = json_node_new (JSON_NODE_OBJECT); json_node_take_object (value, json_object_new ()); break;
    default: break;   /* drop it */
    }
  if (slot->key != NULL)
    {
      if (value != NULL)
        json_object_set_member (json_node_get_object (slot->parent), slot->key, value);
      else
        json_object_remove_member (json_node_get_object (slot->parent), slot->key);
    }
  else
    {
      json_array_remove_element (json_node_get_array (slot->parent), slot->index);
      if (value != NULL)
        json_array_add_element (json_node_get_array (slot->parent), value);
    }
  return json_to_string (json_parser_get_root (parser), FALSE);
}

/* Well-formed JSON with one wrong value, in the model file or in the safetensors
 * header, is refused with a format error (or, rarely, still a valid model). */
static void
test_fuzz_values (void)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *json_path = g_build_filename (dir, "p.json", NULL);
  g_autofree char *st_path = g_build_filename (dir, "p.safetensors", NULL);
  g_autoptr(GBytes) json = NULL, st = NULL;
  g_autoptr(GError) error = NULL;
  GRand *rand = g_rand_new_with_seed (11);
  static const EsShape small = { .rank = 3, .dims = { 1, 6, 6 } };
  EspalierModelInfo info;
  EsModel *model;
  int loaded = 0, failed = 0;

  espalier_model_info_init (&info);
  model = espalier_model_from_spec ("conv2d:2:3:1:1,batchnorm,relu,maxpool2d:2,flatten,dense:3,softmax",
                                    &small, &error);
  g_assert_no_error (error);
  fill_info (&info, "small", 3, 3);
  g_assert_true (espalier_model_save (model, &info, json_path, &error));
  g_assert_no_error (error);
  json = read_bytes (json_path);
  st = read_bytes (st_path);

  for (int round = 0; round < 1000; round++)
    {
      gboolean in_json = round % 2 == 0;
      const char *path = in_json ? json_path : st_path;
      gsize len;
      const char *data = g_bytes_get_data (in_json ? json : st, &len);
      EsModel *back;

      if (in_json)
        {
          g_autofree char *text = mutate_json (data, len, rand);

          write_bytes (json_path, text, strlen (text));
        }
      else
        {
          guint64 n, n_le;
          g_autofree char *header = NULL;
          GString *out;

          memcpy (&n, data, 8);
          n = GUINT64_FROM_LE (n);
          header = mutate_json (data + 8, (gsize) n, rand);
          out = g_string_new (header);
          while (out->len % 8 != 0)
            g_string_append_c (out, ' ');
          n_le = GUINT64_TO_LE ((guint64) out->len);
          g_string_prepend_len (out, (const char *) &n_le, 8);
          g_string_append_len (out, data + 8 + n, (gssize) (len - 8 - n));
          write_bytes (st_path, out->str, out->len);
          g_string_free (out, TRUE);
        }
      back = espalier_model_load (json_path, NULL, &error);
      if (back != NULL)
        {
          loaded++;
          es_model_free (back);
        }
      else
        {
          g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT);
          g_assert_nonnull (strstr (error->message, path));
          failed++;
          g_clear_error (&error);
        }
      write_bytes (path, data, len);
    }
  g_test_message ("fuzz-values: %d loaded, %d refused", loaded, failed);
  g_assert_cmpint (failed, >, 700);

  g_rand_free (rand);
  es_model_free (model);
  espalier_model_info_clear (&info);
  remove_tree (dir);
}

/* ------------------------------------------------------------------------------------ */
/* quantized variants */

static const EsShape image_8 = { .rank = 3, .dims = { 1, 8, 8 } };

/* One variant of each format: an MLP with its last layer kept in float (static), a
 * small CNN (dynamic), BatchNorm buffers beside 16-bit weights (fp16, bf16). */
static const struct {
  const char  *name;
  EsQuantMode  mode;
  const char  *spec;
  gboolean     keep_last;
} qvariants[] = {
  { "int8-static", ES_QUANT_INT8_STATIC, "flatten,dense:32,relu,dense:16,relu,dense:10", TRUE },
  { "int8-dynamic", ES_QUANT_INT8_DYNAMIC, "conv2d:4:3,relu,maxpool2d:2,flatten,dense:10", FALSE },
  { "fp16", ES_QUANT_FP16, "flatten,dense:16,batchnorm,relu,dense:10", FALSE },
  { "bf16", ES_QUANT_BF16, "conv2d:4:3,batchnorm,relu,flatten,dense:10", FALSE },
};

/* The model of qvariants[i], initialized, with running statistics that are not 0 and 1. */
static EsModel *
qvariant_model (guint i, EsQuant **quant)
{
  g_autoptr(GError) error = NULL;
  g_autofree bool *keep = NULL;
  EsModel *model = espalier_model_from_spec (qvariants[i].spec, &image_8, &error);
  int n;

  g_assert_no_error (error);
  es_model_init (model, 11 + i);
  for (gint64 k = 0; k < es_model_n_buffers (model); k++)
    es_model_buffers (model)[k] = 0.25f + (float) k / 7.0f;
  n = es_model_n_layers (model);
  keep = g_new0 (bool, n);
  keep[n - 1] = qvariants[i].keep_last;
  *quant = qtu_quant (model, qvariants[i].mode, keep, 21 + i);
  return model;
}

/* The safetensors header of path as a JSON node (freed by the caller); *data_len gets
 * the bytes after it. */
static JsonNode *
st_header (const char *path, gsize *data_len)
{
  g_autoptr(GBytes) bytes = read_bytes (path);
  gsize len;
  const guint8 *data = g_bytes_get_data (bytes, &len);
  guint64 n;
  g_autofree char *text = NULL;
  JsonNode *node;

  memcpy (&n, data, 8);
  n = GUINT64_FROM_LE (n);
  text = g_strndup ((const char *) data + 8, n);
  node = json_from_string (text, NULL);
  g_assert_nonnull (node);
  *data_len = len - 8 - n;
  return node;
}

/* Every tensor has the dtype and size its storage says (int8 weights I8 with F32
 * scales; every trainable tensor 16-bit in fp16/bf16; the rest F32), and the data is
 * exactly their sum. */
static void
check_variant_header (const char *st_path, const EsModel *model, const EsQuant *q)
{
  gsize data_len;
  g_autoptr(JsonNode) root = st_header (st_path, &data_len);
  JsonObject *h = json_node_get_object (root);
  gsize expected = 0;

  for (int l = 0; l < es_model_n_layers (model); l++)
    {
      const EsLayerInfo *li = es_model_layer (model, l);
      gboolean weights = li->spec.kind == ES_LAYER_DENSE || li->spec.kind == ES_LAYER_CONV2D;

      for (int t = li->first_tensor; t < li->first_tensor + li->n_tensors; t++)
        {
          const EsTensorInfo *ti = es_model_tensor (model, t);
          JsonObject *e = json_object_get_object_member (h, ti->name);
          const char *dtype = "F32";

          g_assert_nonnull (e);
          if (t == li->first_tensor && weights && q->mode != ES_QUANT_FP32 && q->layers[l].int8)
            {
              g_autofree char *scale = g_strdup_printf ("layers.%d.weight_scale", l);
              JsonObject *se = json_object_get_object_member (h, scale);

              dtype = "I8";
              g_assert_nonnull (se);
              g_assert_cmpstr (json_object_get_string_member (se, "dtype"), ==, "F32");
              g_assert_cmpint (json_array_get_int_element (json_object_get_array_member (se, "shape"),
                                                           0), ==, ti->dims[0]);
              expected += ti->size + 4 * ti->dims[0];
            }
          else if (ti->trainable && q->mode == ES_QUANT_FP16)
            dtype = "F16", expected += 2 * ti->size;
          else if (ti->trainable && q->mode == ES_QUANT_BF16)
            dtype = "BF16", expected += 2 * ti->size;
          else
            expected += 4 * ti->size;
          g_assert_cmpstr (json_object_get_string_member (e, "dtype"), ==, dtype);
        }
    }
  g_assert_cmpuint (data_len, ==, expected);
}

static void
test_variant_round_trip (gconstpointer data)
{
  guint i = GPOINTER_TO_UINT (data);
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *path = g_build_filename (dir, qvariants[i].name, NULL);
  g_autofree char *json_path = NULL, *st_path = NULL, *listing = NULL, *expected = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) root = NULL;
  g_autoptr(GBytes) json = NULL;
  EspalierModelInfo info, loaded;
  EsQuant *q = NULL, *lq = NULL, *again_q = NULL;
  EsModel *model = qvariant_model (i, &q), *deq = es_quant_dequantized_model (model, q);
  EsModel *back, *again;
  JsonObject *qobj;

  espalier_model_paths (path, &json_path, &st_path);
  espalier_model_info_init (&info);
  fill_info (&info, "mlp", 10, 2);
  g_assert_true (espalier_model_save_variant (model, q, &info, path, &error));
  g_assert_no_error (error);
  listing = dir_listing (dir);
  expected = g_strdup_printf ("%s.json %s.safetensors", qvariants[i].name, qvariants[i].name);
  g_assert_cmpstr (listing, ==, expected);
  check_variant_header (st_path, model, q);

  /* the JSON says version 2 and how the weights are stored */
  json = read_bytes (json_path);
  root = json_from_string (g_bytes_get_data (json, NULL), NULL);
  g_assert_cmpint (json_object_get_int_member (json_node_get_object (root), "version"), ==, 2);
  qobj = json_object_get_object_member (json_node_get_object (root), "quantization");
  g_assert_cmpstr (json_object_get_string_member (qobj, "mode"), ==, qvariants[i].name);

  /* back: the same quantization, and the model is its dequantized weights */
  espalier_model_info_init (&loaded);
  back = espalier_model_load_variant (json_path, &loaded, &lq, &error);
  g_assert_no_error (error);
  g_assert_nonnull (back);
  qtu_assert_quants_equal (q, lq);
  assert_models_equal (deq, back);
  assert_infos_equal (&info, &loaded);
  es_model_free (back);

  /* without asking for the quantization, or through the float API: the same model */
  back = espalier_model_load_variant (path, NULL, NULL, &error);
  g_assert_no_error (error);
  assert_models_equal (deq, back);
  es_model_free (back);
  back = espalier_model_load (path, NULL, &error);
  g_assert_no_error (error);
  assert_models_equal (deq, back);

  /* what was loaded saves and loads to itself */
  g_assert_true (espalier_model_save_variant (back, lq, &loaded, path, &error));
  g_assert_no_error (error);
  again = espalier_model_load_variant (path, NULL, &again_q, &error);
  g_assert_no_error (error);
  qtu_assert_quants_equal (q, again_q);
  assert_models_equal (deq, again);

  es_model_free (again);
  es_model_free (back);
  es_model_free (deq);
  es_model_free (model);
  es_quant_free (again_q);
  es_quant_free (lq);
  es_quant_free (q);
  espalier_model_info_clear (&loaded);
  espalier_model_info_clear (&info);
  remove_tree (dir);
}

/* A float model through the variant API: no quantization, F32 as before. */
static void
test_variant_float (void)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "f", NULL);
  g_autoptr(GError) error = NULL;
  EspalierModelInfo info;
  EsQuant *q = (EsQuant *) 0x1;
  EsModel *model, *back;

  espalier_model_info_init (&info);
  model = save_mlp (dir, &info);
  g_assert_true (espalier_model_save_variant (model, NULL, &info, path, &error));
  g_assert_no_error (error);
  back = espalier_model_load_variant (path, NULL, &q, &error);
  g_assert_no_error (error);
  g_assert_null (q);
  assert_models_equal (model, back);
  es_model_free (back);
  es_model_free (model);
  espalier_model_info_clear (&info);
  remove_tree (dir);
}

/* What cannot be loaded back is not saved, and nothing is written. */
static void
test_variant_save_refused (void)
{
  g_autofree char *dir = make_tmp_dir ();
  g_autofree char *path = g_build_filename (dir, "v", NULL);
  g_autoptr(GError) error = NULL;
  g_autofree char *listing = NULL;
  EspalierModelInfo info;
  EsQuant *q = NULL, *other_q = NULL, *raw;
  EsModel *model = qvariant_model (0, &q), *other = qvariant_model (1, &other_q);
  EsError es = { 0 };

  espalier_model_info_init (&info);

  /* static int8 without calibration */
  raw = es_quant_new (model, ES_QUANT_INT8_STATIC, NULL, false, &es);
  g_assert_nonnull (raw);
  g_assert_false (espalier_model_save_variant (model, raw, &info, path, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_test_message ("%s", error->message);
  g_clear_error (&error);
  es_quant_free (raw);

  /* a quantization of another model */
  g_assert_false (espalier_model_save_variant (model, other_q, &info, path, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_test_message ("%s", error->message);
  g_clear_error (&error);

  /* a scale that is not a scale */
  q->layers[1].w_scale[3] = NAN;
  g_assert_false (espalier_model_save_variant (model, q, &info, path, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "layers.1.weight_scale"));
  g_clear_error (&error);
  q->layers[1].w_scale[3] = 0.0f;
  g_assert_false (espalier_model_save_variant (model, q, &info, path, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_clear_error (&error);
  q->layers[1].w_scale[3] = 0.5f;

  /* an input scale that is not the range's */
  q->layers[1].in_scale *= 2.0f;
  g_assert_false (espalier_model_save_variant (model, q, &info, path, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "quantization.layers[1].in_scale"));
  g_clear_error (&error);

  listing = dir_listing (dir);
  g_assert_cmpstr (listing, ==, "");

  es_model_free (other);
  es_model_free (model);
  es_quant_free (other_q);
  es_quant_free (q);
  espalier_model_info_clear (&info);
  remove_tree (dir);
}

/* The fixture for corrupt quantized files: qvariants[0] saved as dir/mlp. */
static void
fixture_set_up_quant (Fixture *f, gconstpointer data)
{
  g_autoptr(GError) error = NULL;

  f->dir = make_tmp_dir ();
  f->json_path = g_build_filename (f->dir, "mlp.json", NULL);
  f->st_path = g_build_filename (f->dir, "mlp.safetensors", NULL);
  espalier_model_info_init (&f->info);
  fill_info (&f->info, NULL, 10, 2);
  f->model = qvariant_model (0, &f->quant);
  g_assert_true (espalier_model_save_variant (f->model, f->quant, &f->info, f->json_path,
                                              &error));
  g_assert_no_error (error);
  f->json = read_bytes (f->json_path);
  f->st = read_bytes (f->st_path);
}

static JsonObject *
quant_layer (JsonObject *root, guint i)
{
  return json_array_get_object_element (
    json_object_get_array_member (json_object_get_object_member (root, "quantization"), "layers"), i);
}

static void q_scale_zero (JsonObject *root) { json_object_set_int_member (quant_layer (root, 1), "in_scale", 0); }
static void q_scale_negative (JsonObject *root) { json_object_set_double_member (quant_layer (root, 1), "in_scale", -0.5); }
static void q_zero_range (JsonObject *root) { json_object_set_int_member (quant_layer (root, 1), "in_zero", 256); }
static void q_zero_string (JsonObject *root) { json_object_set_string_member (quant_layer (root, 1), "in_zero", "3"); }
static void q_lo_above_hi (JsonObject *root) { json_object_set_double_member (quant_layer (root, 1), "in_lo", 1000.5); }
static void q_hi_missing (JsonObject *root) { json_object_remove_member (quant_layer (root, 1), "in_hi"); }
static void q_mode (JsonObject *root) { json_object_set_string_member (json_object_get_object_member (root, "quantization"), "mode", "int4"); }
static void q_mode_fp32 (JsonObject *root) { json_object_set_string_member (json_object_get_object_member (root, "quantization"), "mode", "fp32"); }
static void q_reduce (JsonObject *root) { json_object_set_string_member (json_object_get_object_member (root, "quantization"), "reduce_range", "no"); }
static void q_int8_relu (JsonObject *root) { json_object_set_boolean_member (quant_layer (root, 2), "int8", TRUE); }
static void q_missing (JsonObject *root) { json_object_remove_member (root, "quantization"); }
static void q_type (JsonObject *root) { json_object_set_int_member (root, "quantization", 8); }
static void q_version_1 (JsonObject *root) { json_object_set_int_member (root, "version", 1); }

static void
q_scale_mismatch (JsonObject *root)
{
  JsonObject *l = quant_layer (root, 1);

  json_object_set_double_member (l, "in_scale", json_object_get_double_member (l, "in_scale") * 2);
}

static void
q_short_layers (JsonObject *root)
{
  json_array_remove_element (json_object_get_array_member (
    json_object_get_object_member (root, "quantization"), "layers"), 0);
}

/* The JSON says layer 1 is float; the weights file still holds its codes. */
static void
q_float_layer (JsonObject *root)
{
  JsonObject *l = quant_layer (root, 1);

  json_object_set_boolean_member (l, "int8", FALSE);
}

static void
test_quant_json_errors (Fixture *f, gconstpointer data)
{
  static const struct {
    EditJson    edit;
    const char *what;
    gboolean    in_weights;   /* the error names the safetensors file */
  } cases[] = {
    { q_scale_zero, "“quantization.layers[1].in_scale”", FALSE },
    { q_scale_negative, "“quantization.layers[1].in_scale”", FALSE },
    { q_scale_mismatch, "“quantization.layers[1].in_scale”", FALSE },
    { q_zero_range, "“quantization.layers[1].in_zero”", FALSE },
    { q_zero_string, "“quantization.layers[1].in_zero”", FALSE },
    { q_lo_above_hi, "“quantization.layers[1].in_lo”", FALSE },
    { q_hi_missing, "“quantization.layers[1].in_hi” is missing", FALSE },
    { q_mode, "int4", FALSE },
    { q_mode_fp32, "“quantization.mode”", FALSE },
    { q_reduce, "“quantization.reduce_range”", FALSE },
    { q_int8_relu, "“quantization.layers[2].int8”", FALSE },
    { q_short_layers, "“quantization.layers”", FALSE },
    { q_missing, "“quantization” is missing", FALSE },
    { q_type, "“quantization”", FALSE },
    { q_version_1, "version 1", FALSE },
    { q_float_layer, "layers.1.weight", TRUE },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      edit_json (f, cases[i].edit);
      assert_format_error (f, cases[i].in_weights ? f->st_path : f->json_path, cases[i].what);
    }
}

static void
h_dtype (JsonObject *h)
{
  json_object_set_string_member (json_object_get_object_member (h, "layers.1.weight"), "dtype",
                                 "F32");
}

static void
h_scale_shape (JsonObject *h)
{
  JsonArray *shape = json_array_new ();

  json_array_add_int_element (shape, 31);
  json_object_set_array_member (json_object_get_object_member (h, "layers.1.weight_scale"),
                                "shape", shape);
}

static void
h_no_scale (JsonObject *h)
{
  json_object_remove_member (h, "layers.3.weight_scale");
}

/* Change `n` bytes of tensor `name` at byte `at` to `bytes`, and record the new file's
 * size and SHA-256 in the JSON so that only the values are wrong. */
static void
rewrite_tensor (Fixture *f, const char *name, gsize at, const void *bytes, gsize n)
{
  gsize len, data_len;
  g_autofree guint8 *st = g_memdup2 (g_bytes_get_data (f->st, &len), g_bytes_get_size (f->st));
  g_autoptr(JsonNode) header = NULL, root = NULL;
  g_autofree char *sum = NULL, *text = NULL;
  JsonArray *offsets;
  JsonObject *weights;

  write_bytes (f->st_path, st, len);
  header = st_header (f->st_path, &data_len);
  offsets = json_object_get_array_member (json_object_get_object_member (
    json_node_get_object (header), name), "data_offsets");
  memcpy (st + (len - data_len) + json_array_get_int_element (offsets, 0) + at, bytes, n);
  write_bytes (f->st_path, st, len);

  sum = g_compute_checksum_for_data (G_CHECKSUM_SHA256, st, len);
  root = json_from_string (g_bytes_get_data (f->json, NULL), NULL);
  weights = json_object_get_object_member (json_node_get_object (root), "weights");
  json_object_set_string_member (weights, "sha256", sum);
  text = json_to_string (root, TRUE);
  write_bytes (f->json_path, text, strlen (text));
}

static void
test_quant_weight_errors (Fixture *f, gconstpointer data)
{
  float zero = 0.0f, nan = NAN, inf = INFINITY, neg = -1.0f;
  gint8 min = -128;

  edit_header (f, h_dtype);
  assert_format_error (f, f->st_path, "“layers.1.weight” has dtype F32");
  edit_header (f, h_scale_shape);
  assert_format_error (f, f->st_path, "layers.1.weight_scale");
  edit_header (f, h_no_scale);
  assert_format_error (f, f->st_path, "“layers.3.weight_scale” is missing");

  rewrite_tensor (f, "layers.1.weight_scale", 8, &zero, 4);
  assert_format_error (f, f->st_path, "“layers.1.weight_scale” [2]");
  rewrite_tensor (f, "layers.1.weight_scale", 0, &nan, 4);
  assert_format_error (f, f->st_path, "“layers.1.weight_scale” [0]");
  rewrite_tensor (f, "layers.3.weight_scale", 4, &inf, 4);
  assert_format_error (f, f->st_path, "“layers.3.weight_scale” [1]");
  rewrite_tensor (f, "layers.3.weight_scale", 4, &neg, 4);
  assert_format_error (f, f->st_path, "“layers.3.weight_scale” [1]");
  rewrite_tensor (f, "layers.3.weight", 5, &min, 1);
  assert_format_error (f, f->st_path, "“layers.3.weight” [5]");
}

/* Version 1 files (float, no quantization) still load. */
static void
version_1 (JsonObject *root)
{
  json_object_set_int_member (root, "version", 1);
  json_object_remove_member (root, "quantization");
}

static void
test_version_1 (Fixture *f, gconstpointer data)
{
  g_autoptr(GError) error = NULL;
  EsQuant *q = (EsQuant *) 0x1;
  EsModel *model;

  edit_json (f, version_1);
  model = espalier_model_load_variant (f->json_path, NULL, &q, &error);
  g_assert_no_error (error);
  g_assert_null (q);
  assert_models_equal (f->model, model);
  es_model_free (model);
}

/* ------------------------------------------------------------------------------------ */
/* templates */

static void
test_template_names (void)
{
  const char *const *names = espalier_template_names ();

  g_assert_cmpuint (g_strv_length ((char **) names), ==, 3);
  g_assert_cmpstr (names[0], ==, "mlp");
  g_assert_cmpstr (names[1], ==, "lenet");
  g_assert_cmpstr (names[2], ==, "playground");
  for (int i = 0; names[i] != NULL; i++)
    g_assert_nonnull (espalier_template_describe (names[i]));
  g_assert_null (espalier_template_describe ("resnet"));
}

static void
test_template_mlp (void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *spec = NULL;
  EspalierTrainOptions opts;
  EsModel *model;
  EsShape out;

  model = espalier_model_from_template ("mlp", &image_28, 10, &opts, &error);
  g_assert_no_error (error);
  g_assert_cmpint (es_model_n_params (model), ==, 101770);
  out = es_model_output_shape (model);
  g_assert_cmpint (out.rank, ==, 1);
  g_assert_cmpint (out.dims[0], ==, 10);
  g_assert_cmpint (opts.engine.optimizer, ==, ES_OPT_ADAM);
  g_assert_cmpint (opts.engine.loss, ==, ES_LOSS_SOFTMAX_XENT);
  g_assert_cmpfloat (opts.engine.lr, ==, 1e-3f);
  g_assert_cmpuint (opts.batch_size, ==, 32);
  g_assert_cmpuint (opts.epochs, ==, 10);
  /* Initialized: the weights are not all zero. */
  g_assert_cmpfloat (fabsf (es_model_params (model)[0]) + fabsf (es_model_params (model)[1]), >, 0.0f);
  spec = espalier_model_to_spec (model);
  g_assert_cmpstr (spec, ==, "flatten,dense:128,relu,dense:10,softmax");
  es_model_free (model);

  /* Features work too; NULL opts is fine. */
  model = espalier_model_from_template ("mlp", &points_2, 4, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpint (es_model_n_params (model), ==, 2 * 128 + 128 + 128 * 4 + 4);
  es_model_free (model);
}

static void
test_template_lenet (void)
{
  g_autoptr(GError) error = NULL;
  static const EsShape rgb_32 = { .rank = 3, .dims = { 3, 32, 32 } };
  static const EsShape tiny = { .rank = 3, .dims = { 1, 3, 3 } };
  EspalierTrainOptions opts;
  EsModel *model;

  model = espalier_model_from_template ("lenet", &image_28, 10, &opts, &error);
  g_assert_no_error (error);
  g_assert_cmpint (es_model_n_params (model), ==, 160 + 4640 + 1568 * 128 + 128 + 1290);
  /* Modest enough for a few seconds per Fashion-MNIST epoch on two cores. */
  g_assert_cmpint (es_model_flops (model), <, 3000000);
  g_assert_cmpuint (opts.batch_size, ==, 64);
  g_assert_cmpuint (opts.epochs, ==, 10);
  g_assert_cmpfloat (opts.engine.lr, ==, 1e-3f);
  es_model_free (model);

  model = espalier_model_from_template ("lenet", &rgb_32, 5, NULL, &error);
  g_assert_no_error (error);
  es_model_free (model);

  g_assert_null (espalier_model_from_template ("lenet", &points_2, 10, NULL, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);
  g_assert_nonnull (strstr (error->message, "lenet"));
  g_assert_nonnull (strstr (error->message, "(2)"));
  g_clear_error (&error);

  g_assert_null (espalier_model_from_template ("lenet", &tiny, 10, NULL, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);
}

static void
test_template_playground (void)
{
  g_autoptr(GError) error = NULL;
  EspalierTrainOptions opts;
  EsModel *model;

  model = espalier_model_from_template ("playground", &points_2, 3, &opts, &error);
  g_assert_no_error (error);
  g_assert_cmpint (es_model_n_params (model), ==, 24 + 72 + 27);
  g_assert_cmpfloat (opts.engine.lr, ==, 0.03f);
  g_assert_cmpint (opts.engine.optimizer, ==, ES_OPT_ADAM);
  g_assert_cmpuint (opts.batch_size, ==, 16);
  g_assert_cmpuint (opts.epochs, ==, 300);
  g_assert_cmpfloat (opts.val_fraction, ==, 0.0);
  g_assert_cmpfloat (opts.test_fraction, ==, 0.0);
  es_model_free (model);

  g_assert_null (espalier_model_from_template ("playground", &image_28, 10, NULL, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);
  g_assert_nonnull (strstr (error->message, "(1, 28, 28)"));
  g_clear_error (&error);

  g_assert_null (espalier_model_from_template ("resnet", &image_28, 10, NULL, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_assert_nonnull (strstr (error->message, "resnet"));
  g_assert_nonnull (strstr (error->message, "mlp, lenet, playground"));
  g_clear_error (&error);

  g_assert_null (espalier_model_from_template ("mlp", &image_28, 1, NULL, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
}

static void
test_spec_parse (void)
{
  static const struct {
    const char *spec;
    const char *canonical;
  } good[] = {
    { "flatten,dense:128,relu,dense:10,softmax", "flatten,dense:128,relu,dense:10,softmax" },
    { " Flatten , Dense:64 ,ReLU,dense:10", "flatten,dense:64,relu,dense:10" },
    { "conv2d:6:5:1:2,relu,maxpool2d:2,flatten,dense:10", "conv2d:6:5:1:2,relu,maxpool2d:2,flatten,dense:10" },
    { "conv2d:6:5,maxpool2d:3:2,avgpool2d,flatten,dense:3", "conv2d:6:5,maxpool2d:3:2,avgpool2d:2,flatten,dense:3" },
    { "conv2d:4:3:1:1,batchnorm,leaky_relu:0.1,dropout:0.2,flatten,dense:10,sigmoid",
      "conv2d:4:3:1:1,batchnorm,leaky_relu:0.1,dropout:0.2,flatten,dense:10,sigmoid" },
    { "conv2d:4:3:2:0,batchnorm:0.01:0.001,leaky_relu,dropout,flatten,dense:10,tanh",
      "conv2d:4:3:2:0,batchnorm:0.01:0.001,leaky_relu:0.01,dropout:0.2,flatten,dense:10,tanh" },
  };
  static const struct {
    const char *spec;
    const char *token;
    const char *what;
  } bad[] = {
    { "flatten,dense:abc,softmax", "dense:abc", "position 9" },
    { "flatten,,dense:10", "", "empty" },
    { "flatten,dense:10,", "", "position 18" },
    { "transformer:8", "transformer", "not a layer kind" },
    { "flatten,relu:3", "relu:3", "no arguments" },
    { "conv2d:6", "conv2d:6", "conv2d:FILTERS:KERNEL" },
    { "flatten,dense:10,dropout:1.5", "dropout:1.5", "rate" },
    { "flatten,dense:0", "dense:0", "from 1 to" },
    { "flatten,dense:99999999999999", "dense:99999999999999", "layer 2" },
    { "conv2d:4:3:1:-1", "conv2d:4:3:1:-1", "argument 4" },
    /* Found by fuzz-spec: the engine reads an alpha of 0 as its default, so the model
     * would not have been what the spec says. */
    { "flatten,leaky_relu:0.,dense:3", "leaky_relu:0.", "other than 0" },
    { "flatten,leaky_relu:1e-50", "leaky_relu:1e-50", "other than 0" },
  };
  g_autoptr(GError) error = NULL;

  for (gsize i = 0; i < G_N_ELEMENTS (good); i++)
    {
      g_autofree char *spec = NULL, *again = NULL;
      EsModel *model = espalier_model_from_spec (good[i].spec, &image_28, &error);
      EsModel *copy;

      g_assert_no_error (error);
      spec = espalier_model_to_spec (model);
      g_assert_cmpstr (spec, ==, good[i].canonical);
      copy = espalier_model_from_spec (spec, &image_28, &error);
      g_assert_no_error (error);
      es_model_init (copy, 0);
      assert_models_equal (model, copy);
      again = espalier_model_to_spec (copy);
      g_assert_cmpstr (again, ==, spec);
      es_model_free (copy);
      es_model_free (model);
    }

  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autofree char *quoted = g_strdup_printf ("“%s”", bad[i].token);

      g_assert_null (espalier_model_from_spec (bad[i].spec, &image_28, &error));
      g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
      if (strstr (error->message, quoted) == NULL || strstr (error->message, bad[i].what) == NULL)
        g_error ("spec “%s”: the error “%s” should name %s and say “%s”", bad[i].spec,
                 error->message, quoted, bad[i].what);
      g_assert_nonnull (strstr (error->message, "position"));
      if (g_test_verbose ())
        g_test_message ("%s", error->message);
      g_clear_error (&error);
    }

  g_assert_null (espalier_model_from_spec ("  ", &image_28, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_clear_error (&error);

  /* Parsed fine, but the shapes do not fit: the engine's error, naming the layer. */
  g_assert_null (espalier_model_from_spec ("dense:10,softmax", &image_28, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);
  g_assert_nonnull (strstr (error->message, "Layer 1"));
  g_clear_error (&error);
  g_assert_null (espalier_model_from_spec ("conv2d:4:3", &points_2, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);
  g_clear_error (&error);
}

/* A spec whose parameters would not fit the memory (ESPALIER_MEMORY_AVAILABLE makes the
 * machine small) is refused before the engine allocates, naming the count and the
 * sizes. */
static void
test_spec_memory (void)
{
  g_autoptr(GError) error = NULL;
  double U = 16777216.0, n = 784.0 * U + U + U * U + U;
  g_autofree char *count = g_strdup_printf ("has %.0f parameters", n);
  g_autofree char *need = g_format_size ((guint64) (n * 4.0));
  g_autofree char *have = g_format_size (1000000000);
  g_autofree char *why = g_strdup_printf ("needs %s of memory, more than the %s available", need,
                                          have);

  g_setenv ("ESPALIER_MEMORY_AVAILABLE", "1000000000", TRUE);
  g_assert_null (espalier_model_from_spec ("flatten,dense:16777216,dense:16777216", &image_28,
                                           &error));
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_MEMORY);
  if (strstr (error->message, count) == NULL || strstr (error->message, why) == NULL)
    g_error ("“%s” and “%s” are not in the error “%s”", count, why, error->message);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/model-file/round-trip/mlp", test_round_trip_mlp);
  g_test_add_func ("/model-file/round-trip/lenet", test_round_trip_lenet);
  g_test_add_func ("/model-file/round-trip/playground", test_round_trip_playground);
  g_test_add_func ("/model-file/safetensors/header", test_safetensors_header);
  g_test_add_func ("/model-file/safetensors/python", test_safetensors_python);
  g_test_add_func ("/model-file/atomic", test_atomic_write);
  g_test_add ("/model-file/load/ok", Fixture, NULL, fixture_set_up, test_load_ok, fixture_tear_down);
  g_test_add ("/model-file/load/missing", Fixture, NULL, fixture_set_up, test_missing_files,
              fixture_tear_down);
  g_test_add ("/model-file/load/truncated", Fixture, NULL, fixture_set_up, test_truncated,
              fixture_tear_down);
  g_test_add ("/model-file/load/header-length", Fixture, NULL, fixture_set_up, test_header_length,
              fixture_tear_down);
  g_test_add ("/model-file/load/dtype", Fixture, NULL, fixture_set_up, test_wrong_dtype,
              fixture_tear_down);
  g_test_add ("/model-file/load/shape", Fixture, NULL, fixture_set_up, test_shape_mismatch,
              fixture_tear_down);
  g_test_add ("/model-file/load/header", Fixture, NULL, fixture_set_up, test_bad_header,
              fixture_tear_down);
  g_test_add ("/model-file/load/checksum", Fixture, NULL, fixture_set_up, test_checksum,
              fixture_tear_down);
  g_test_add ("/model-file/load/previous-weights", Fixture, NULL, fixture_set_up,
              test_previous_weights, fixture_tear_down);
  g_test_add ("/model-file/limit/memory-limit", Fixture, NULL, fixture_set_up, test_memory_limit,
              fixture_tear_down);
  g_test_add ("/model-file/limit/memory-available", Fixture, NULL, fixture_set_up,
              test_memory_available, fixture_tear_down);
  g_test_add ("/model-file/limit/enormous-layers", Fixture, NULL, fixture_set_up,
              test_memory_enormous, fixture_tear_down);
  g_test_add ("/model-file/load/json-fields", Fixture, NULL, fixture_set_up, test_json_errors,
              fixture_tear_down);
  g_test_add ("/model-file/load/malformed", Fixture, NULL, fixture_set_up, test_malformed_json,
              fixture_tear_down);
  g_test_add_func ("/model-file/load/fuzz", test_fuzz);
  g_test_add_func ("/model-file/load/fuzz-values", test_fuzz_values);
  for (guint i = 0; i < G_N_ELEMENTS (qvariants); i++)
    {
      g_autofree char *name = g_strdup_printf ("/model-file/variant/round-trip/%s",
                                               qvariants[i].name);

      g_test_add_data_func (name, GUINT_TO_POINTER (i), test_variant_round_trip);
    }
  g_test_add_func ("/model-file/variant/float", test_variant_float);
  g_test_add_func ("/model-file/variant/save-refused", test_variant_save_refused);
  g_test_add ("/model-file/variant/json-errors", Fixture, NULL, fixture_set_up_quant,
              test_quant_json_errors, fixture_tear_down);
  g_test_add ("/model-file/variant/weight-errors", Fixture, NULL, fixture_set_up_quant,
              test_quant_weight_errors, fixture_tear_down);
  g_test_add ("/model-file/load/version-1", Fixture, NULL, fixture_set_up, test_version_1,
              fixture_tear_down);
  g_test_add_func ("/templates/names", test_template_names);
  g_test_add_func ("/templates/mlp", test_template_mlp);
  g_test_add_func ("/templates/lenet", test_template_lenet);
  g_test_add_func ("/templates/playground", test_template_playground);
  g_test_add_func ("/templates/spec", test_spec_parse);
  g_test_add_func ("/templates/spec-memory", test_spec_memory);

  return g_test_run ();
}
