/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-c-export.c: the C source export (espalier-c-export.h).
 *
 * Each model is exported, compiled with the system's C compiler as strict C99
 * (-std=c99 -Wall -Wextra -pedantic -Werror) together with a small driver written
 * here, and run on 1,000 rows (Fashion-MNIST's test images when installed, generated
 * images otherwise); its classes and outputs are compared with the engine's:
 *  - float models (an MLP; a CNN with every layer kind, BatchNorm folded and not) against
 *    EsInfer: the same class on every row, outputs within 1e-4;
 *  - int8 variants against EsExec, which requantizes in float where the generated code
 *    uses integers only: the agreement of classes is measured and printed, and must be
 *    at least 99.5% (the ONNX bar); the outputs of rows whose classes agree must match.
 * Also: bad names and paths are refused without writing anything, the summary's sizes
 * are the files' sizes, and a failed write leaves no file behind. */
#include "config.h"

#include <math.h>
#include <string.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "es-backend.h"
#include "es-exec.h"
#include "es-quant.h"
#include "es-train.h"
#include "espalier-c-export.h"
#include "espalier-dataset.h"
#include "espalier-error.h"
#include "espalier-idx.h"

#include "data-test-util.h"

#define N_ROWS 1000
#define N_TRAIN 4000
#define IMG 784

static const char *const class_names[] = {
  "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
  "Bag", "Ankle boot", NULL
};

/* ------------------------------------------------------------------------------------ */
/* Data: N_TRAIN training and N_ROWS test images, bytes, with labels */

typedef struct {
  guint8  *train, *test;          /* (N, 784) */
  gint32  *train_labels;          /* (N_TRAIN) */
  float   *test_f;                /* (N_ROWS, 784) = byte / 255 as the engine converts */
  gboolean real;                  /* Fashion-MNIST, not generated */
} Data;

static Data data;
static char *tmp_root;
static char *cc;
static EsBackend *backend;

static void
data_generate (void)
{
  EsRng rng = { 42 };

  /* class k: a bright band at rows 2k..2k+7, noise elsewhere */
  for (int r = 0; r < N_TRAIN + N_ROWS; r++)
    {
      guint8 *img = r < N_TRAIN ? data.train + (gsize) r * IMG : data.test + (gsize) (r - N_TRAIN) * IMG;
      int k = (int) (es_rng_next (&rng) % 10);

      for (int p = 0; p < IMG; p++)
        {
          int row = p / 28;
          int v = (int) (es_rng_next (&rng) % 96);

          if (row >= 2 * k && row < 2 * k + 8)
            v += 140;
          img[p] = (guint8) v;
        }
      if (r < N_TRAIN)
        data.train_labels[r] = k;
    }
}

static void
data_load (void)
{
  data.train = g_new (guint8, (gsize) N_TRAIN * IMG);
  data.test = g_new (guint8, (gsize) N_ROWS * IMG);
  data.train_labels = g_new (gint32, N_TRAIN);
  data.test_f = g_new (float, (gsize) N_ROWS * IMG);

  if (espalier_dataset_fashion_mnist_available ())
    {
      g_autoptr(GError) error = NULL;
      g_autofree char *images = g_build_filename (espalier_dataset_fashion_mnist_dir (),
                                                  "t10k-images-idx3-ubyte.gz", NULL);
      g_autofree char *labels = g_build_filename (espalier_dataset_fashion_mnist_dir (),
                                                  "t10k-labels-idx1-ubyte.gz", NULL);
      g_autoptr(EspalierDataset) ds = espalier_idx_load (images, labels, NULL, &error);

      g_assert_no_error (error);
      g_assert_cmpuint (espalier_dataset_get_n_rows (ds), >=, N_TRAIN + N_ROWS);
      /* train on the first rows, test on the last ones */
      memcpy (data.train, espalier_dataset_get_u8 (ds), (gsize) N_TRAIN * IMG);
      memcpy (data.train_labels, espalier_dataset_get_labels (ds), N_TRAIN * sizeof (gint32));
      memcpy (data.test, espalier_dataset_get_u8 (ds)
                         + (gsize) (espalier_dataset_get_n_rows (ds) - N_ROWS) * IMG,
              (gsize) N_ROWS * IMG);
      data.real = TRUE;
    }
  else
    data_generate ();
  for (gsize i = 0; i < (gsize) N_ROWS * IMG; i++)
    data.test_f[i] = (float) data.test[i] * (1.0f / 255.0f);
}

/* ------------------------------------------------------------------------------------ */
/* Models */

static EsModel *
model_new (const EsLayerSpec *specs, int n, uint64_t seed)
{
  EsShape in = { .rank = 3, .dims = { 1, 28, 28 } };
  EsError err = { 0 };
  EsModel *m = es_model_new (&in, specs, n, &err);

  g_assert_true (m != NULL);
  es_model_init (m, seed);
  return m;
}

/* One epoch of Adam on the training images. */
static void
model_train (EsModel *m)
{
  EsTrainConfig cfg;
  EsError err = { 0 };
  EsTrainer *tr;
  const int batch = 64;

  es_train_config_default (&cfg);
  cfg.loss = ES_LOSS_SOFTMAX_XENT;
  cfg.optimizer = ES_OPT_ADAM;
  cfg.lr = 2e-3f;
  tr = es_trainer_new (m, backend, &cfg, batch, &err);
  g_assert_true (tr != NULL);
  for (int r = 0; r + batch <= N_TRAIN; r += batch)
    {
      EsBatch b = { .B = batch, .x_u8 = data.train + (gsize) r * IMG, .scale = 1.0f / 255.0f,
                    .labels = data.train_labels + r };

      g_assert_true (es_trainer_train_batch (tr, &b, NULL, &err));
    }
  es_trainer_sync (tr);
  es_trainer_free (tr);
}

static const EsLayerSpec mlp_specs[] = {
  { .kind = ES_LAYER_FLATTEN },
  { .kind = ES_LAYER_DENSE, .units = 128 },
  { .kind = ES_LAYER_RELU },
  { .kind = ES_LAYER_DENSE, .units = 10 },
  { .kind = ES_LAYER_SOFTMAX },
};

static EsModel *mlp;   /* the reference model, trained once */

/* Every layer kind: BatchNorm folded (after the first Conv2D) and not (after a pool),
 * each activation, both pools, Dropout, Flatten. */
static const EsLayerSpec cnn_specs[] = {
  { .kind = ES_LAYER_CONV2D, .filters = 6, .kernel = 3, .padding = 1 },    /* (6, 28, 28) */
  { .kind = ES_LAYER_BATCHNORM },
  { .kind = ES_LAYER_RELU },
  { .kind = ES_LAYER_MAXPOOL2D, .kernel = 2 },                             /* (6, 14, 14) */
  { .kind = ES_LAYER_CONV2D, .filters = 8, .kernel = 3, .stride = 2 },     /* (8, 6, 6) */
  { .kind = ES_LAYER_LEAKY_RELU, .alpha = 0.1f },
  { .kind = ES_LAYER_AVGPOOL2D, .kernel = 2 },                             /* (8, 3, 3) */
  { .kind = ES_LAYER_BATCHNORM },
  { .kind = ES_LAYER_TANH },
  { .kind = ES_LAYER_FLATTEN },                                            /* (72) */
  { .kind = ES_LAYER_DROPOUT, .rate = 0.3f },
  { .kind = ES_LAYER_DENSE, .units = 24 },
  { .kind = ES_LAYER_SIGMOID },
  { .kind = ES_LAYER_DENSE, .units = 10 },
  { .kind = ES_LAYER_SOFTMAX },
};

/* BatchNorm statistics far from the identity, so folding them is tested for real. */
static void
randomize_batchnorm (EsModel *m)
{
  EsRng rng = { 7 };

  for (int t = 0; t < es_model_n_tensors (m); t++)
    {
      const EsTensorInfo *ti = es_model_tensor (m, t);
      float *v = es_model_tensor_data (m, t);
      int layer = atoi (ti->name + strlen ("layers."));

      if (es_model_layer (m, layer)->spec.kind != ES_LAYER_BATCHNORM)
        continue;
      for (gint64 k = 0; k < ti->size; k++)
        {
          double u = es_rng_uniform (&rng);

          if (g_str_has_suffix (ti->name, ".weight"))
            v[k] = (float) (0.5 + u);          /* gamma */
          else if (g_str_has_suffix (ti->name, ".bias"))
            v[k] = (float) (u - 0.5);          /* beta */
          else if (g_str_has_suffix (ti->name, "running_mean"))
            v[k] = (float) (0.4 * (u - 0.5));
          else
            v[k] = (float) (0.2 + u);          /* running_var */
        }
    }
}

/* A static int8 quantization of m calibrated (min/max) on 512 training images. */
static EsQuant *
quantize (const EsModel *m, gboolean reduce_range)
{
  EsError err = { 0 };
  EsQuant *q = es_quant_new (m, ES_QUANT_INT8_STATIC, NULL, reduce_range, &err);
  EsCalib *cal = es_calib_new (m, ES_CALIB_MINMAX, 99.99f, &err);
  g_autofree float *x = g_new (float, (gsize) 512 * IMG);

  g_assert_true (q != NULL && cal != NULL);
  for (gsize i = 0; i < (gsize) 512 * IMG; i++)
    x[i] = (float) data.train[i] * (1.0f / 255.0f);
  g_assert_true (es_calib_observe (cal, x, 512, &err));
  g_assert_true (es_calib_apply (cal, q, &err));
  g_assert_true (es_quant_is_ready (q, &err));
  es_calib_free (cal);
  return q;
}

/* ------------------------------------------------------------------------------------ */
/* Compiling and running the generated code */

static const char driver_c[] =
  "/* driver.c: rows from a file through the generated model (NAME, UNAME, HEADER and\n"
  " * HAVE_U8, HAVE_CLASSES come from the command line) into a file: for each row the\n"
  " * class (int32) and the outputs (floats). Odd rows use the reentrant entry point. */\n"
  "#include <stdio.h>\n"
  "#include <stdint.h>\n"
  "#include HEADER\n"
  "\n"
  "#define CAT_(a, b) a##b\n"
  "#define CAT(a, b) CAT_ (a, b)\n"
  "#define F(suffix) CAT (NAME, suffix)\n"
  "#define M(suffix) CAT (UNAME, suffix)\n"
  "\n"
  "int\n"
  "main (int argc, char **argv)\n"
  "{\n"
  "  static float x[M (_INPUT_SIZE)];\n"
  "#ifdef HAVE_U8\n"
  "  static uint8_t bytes[M (_INPUT_SIZE)];\n"
  "#endif\n"
  "  static F (_scratch) scratch;\n"
  "  float y[M (_OUTPUT_SIZE)];\n"
  "  FILE *in, *out;\n"
  "  long row;\n"
  "\n"
  "  if (argc != 4)\n"
  "    return 2;\n"
  "  in = fopen (argv[2], \"rb\");\n"
  "  out = fopen (argv[3], \"wb\");\n"
  "  if (in == NULL || out == NULL)\n"
  "    return 3;\n"
  "  for (row = 0;; row++)\n"
  "    {\n"
  "      int32_t cls;\n"
  "\n"
  "      if (argv[1][0] == 'u')\n"
  "        {\n"
  "#ifdef HAVE_U8\n"
  "          if (fread (bytes, 1, (size_t) M (_INPUT_SIZE), in) != (size_t) M (_INPUT_SIZE))\n"
  "            break;\n"
  "          cls = row % 2 ? F (_predict_u8_r) (bytes, y, &scratch) : F (_predict_u8) (bytes, y);\n"
  "#else\n"
  "          return 4;\n"
  "#endif\n"
  "        }\n"
  "      else\n"
  "        {\n"
  "          if (fread (x, sizeof (float), (size_t) M (_INPUT_SIZE), in) != (size_t) M (_INPUT_SIZE))\n"
  "            break;\n"
  "          cls = row % 2 ? F (_predict_r) (x, y, &scratch) : F (_predict) (x, NULL);\n"
  "          if (row % 2 == 0 && F (_predict) (x, y) != cls)\n"
  "            return 5;\n"
  "        }\n"
  "#ifdef HAVE_CLASSES\n"
  "      if (F (_class_names)[cls][0] == '\\0')\n"
  "        return 6;\n"
  "#endif\n"
  "      if (fwrite (&cls, sizeof cls, 1, out) != 1\n"
  "          || fwrite (y, sizeof (float), (size_t) M (_OUTPUT_SIZE), out) != (size_t) M (_OUTPUT_SIZE))\n"
  "        return 7;\n"
  "    }\n"
  "  return fclose (out) == 0 ? 0 : 8;\n"
  "}\n";

/* What the generated program said about each row. */
typedef struct {
  gint32 cls[N_ROWS];
  float *y;               /* (N_ROWS, n_out) */
} Result;

static void
result_clear (Result *r)
{
  g_clear_pointer (&r->y, g_free);
}

static void
spawn_ok (char **argv, const char *cwd)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *out = NULL, *err = NULL;
  int status = 0;

  g_spawn_sync (cwd, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err, &status, &error);
  g_assert_no_error (error);
  if (!g_spawn_check_wait_status (status, NULL))
    {
      g_autofree char *cmd = g_strjoinv (" ", argv);

      g_test_message ("%s\n%s%s", cmd, out, err);
      g_assert_not_reached ();
    }
  g_assert_cmpstr (err, ==, "");   /* no warnings either */
}

/* Export is done: compile dir/NAME.c with the driver, run it on the test rows (as floats,
 * and as bytes when u8), fill res (and res_u8). */
static void
compile_and_run (const char *dir, const char *name, int n_out, gboolean u8, gboolean classes,
                 Result *res, Result *res_u8)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *upper = g_ascii_strup (name, -1);
  g_autofree char *driver = g_build_filename (dir, "driver.c", NULL);
  g_autofree char *src = g_strdup_printf ("%s.c", name);
  g_autofree char *d_name = g_strdup_printf ("-DNAME=%s", name);
  g_autofree char *d_upper = g_strdup_printf ("-DUNAME=%s", upper);
  g_autofree char *d_header = g_strdup_printf ("-DHEADER=\"%s.h\"", name);
  g_autofree char *rows_f = g_build_filename (dir, "rows.f32", NULL);
  g_autofree char *rows_u8 = g_build_filename (dir, "rows.u8", NULL);
  g_autofree char *out_path = g_build_filename (dir, "out.bin", NULL);
  GPtrArray *args = g_ptr_array_new ();
  const char *const base[] = { cc, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror",
                               "-O2", "-o", "prog", "driver.c" };

  g_assert_true (g_file_set_contents (driver, driver_c, -1, &error));
  g_assert_true (g_file_set_contents (rows_f, (const char *) data.test_f,
                                      (gssize) N_ROWS * IMG * sizeof (float), &error));
  g_assert_true (g_file_set_contents (rows_u8, (const char *) data.test, (gssize) N_ROWS * IMG,
                                      &error));
  for (guint i = 0; i < G_N_ELEMENTS (base); i++)
    g_ptr_array_add (args, (char *) base[i]);
  g_ptr_array_add (args, src);
  g_ptr_array_add (args, d_name);
  g_ptr_array_add (args, d_upper);
  g_ptr_array_add (args, d_header);
  if (u8)
    g_ptr_array_add (args, (char *) "-DHAVE_U8");
  if (classes)
    g_ptr_array_add (args, (char *) "-DHAVE_CLASSES");
  g_ptr_array_add (args, (char *) "-lm");
  g_ptr_array_add (args, NULL);
  spawn_ok ((char **) args->pdata, dir);
  g_ptr_array_unref (args);

  for (int pass = 0; pass < (u8 ? 2 : 1); pass++)
    {
      g_autofree char *prog = g_build_filename (dir, "prog", NULL);
      char *argv[] = { prog, (char *) (pass ? "u8" : "f32"), pass ? rows_u8 : rows_f, out_path, NULL };
      g_autofree char *bytes = NULL;
      gsize len = 0;
      gsize rec = sizeof (gint32) + (gsize) n_out * sizeof (float);
      Result *r = pass ? res_u8 : res;

      spawn_ok (argv, dir);
      g_assert_true (g_file_get_contents (out_path, &bytes, &len, &error));
      g_assert_cmpuint (len, ==, rec * N_ROWS);
      r->y = g_new (float, (gsize) N_ROWS * n_out);
      for (int row = 0; row < N_ROWS; row++)
        {
          memcpy (&r->cls[row], bytes + rec * row, sizeof (gint32));
          memcpy (r->y + (gsize) row * n_out, bytes + rec * row + sizeof (gint32),
                  (gsize) n_out * sizeof (float));
        }
    }
}

static int
argmax (const float *y, int n)
{
  int best = 0;

  for (int i = 1; i < n; i++)
    if (y[i] > y[best])
      best = i;
  return best;
}

static gsize
file_size (const char *path)
{
  GStatBuf st;

  g_assert_cmpint (g_stat (path, &st), ==, 0);
  return (gsize) st.st_size;
}

static char *
test_dir (const char *what)
{
  char *dir = g_build_filename (tmp_root, what, NULL);

  g_assert_cmpint (g_mkdir_with_parents (dir, 0755), ==, 0);
  return dir;
}

/* Export m (quant q) as dir/NAME.{c,h}, checking the summary against the files. */
static void
export_ok (const EsModel *m, const EsQuant *q, const EspalierModelInfo *info, const char *dir,
           const char *name, EspalierCExportSummary *sum)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *c_path = g_strdup_printf ("%s/%s.c", dir, name);
  g_autofree char *h_path = g_strdup_printf ("%s/%s.h", dir, name);

  g_assert_true (espalier_c_export (m, q, info, name, c_path, h_path, sum, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (sum->c_bytes, ==, file_size (c_path));
  g_assert_cmpuint (sum->h_bytes, ==, file_size (h_path));
  g_assert_cmpuint (sum->weight_bytes, >, 0);
  g_assert_cmpuint (sum->weight_bytes, <, sum->c_bytes);
  g_assert_cmpuint (sum->n_ops, >, 0);
  /* libm exactly when the code includes math.h for expf/tanhf */
  {
    g_autofree char *text = NULL;

    g_assert_true (g_file_get_contents (c_path, &text, NULL, NULL));
    g_assert_cmpint (sum->needs_libm, ==, strstr (text, "#include <math.h>") != NULL);
  }
}

static EspalierModelInfo *
info_new (void)
{
  EspalierModelInfo *info = g_new0 (EspalierModelInfo, 1);

  espalier_model_info_init (info);
  info->input_scale = 1.0 / 255.0;
  info->input_shift = 0.0;
  info->class_names = g_strdupv ((char **) class_names);
  return info;
}

static void
info_free (EspalierModelInfo *info)
{
  espalier_model_info_clear (info);
  g_free (info);
}

/* One info for the whole run (freed at exit). */
static EspalierModelInfo *static_info;

static const EspalierModelInfo *
info_new_static (void)
{
  if (static_info == NULL)
    static_info = info_new ();
  return static_info;
}

/* ------------------------------------------------------------------------------------ */
/* Float */

/* The generated code of float model m against EsInfer on every test row. */
static void
check_float (const EsModel *m, const EsQuant *q, const char *what)
{
  g_autofree char *dir = test_dir (what);
  const EspalierModelInfo *info = info_new_static ();
  EspalierCExportSummary sum;
  EsError err = { 0 };
  EsInfer *inf = es_infer_new (m, backend, N_ROWS, &err);
  const int n_out = (int) es_model_layer (m, es_model_n_layers (m) - 1)->out_floats;
  const float *ref;
  Result res = { 0 }, res_u8 = { 0 };
  double max_diff = 0.0;

  g_assert_true (inf != NULL);
  export_ok (m, q, info, dir, what, &sum);
  g_assert_false (sum.integer_only);
  g_assert_cmpuint (sum.n_int8_layers, ==, 0);
  compile_and_run (dir, what, n_out, TRUE, TRUE, &res, &res_u8);

  ref = es_infer_run (inf, data.test_f, N_ROWS);
  for (int row = 0; row < N_ROWS; row++)
    {
      const float *e = ref + (gsize) row * n_out;

      g_assert_cmpint (res.cls[row], ==, argmax (e, n_out));
      g_assert_cmpint (res_u8.cls[row], ==, res.cls[row]);
      for (int o = 0; o < n_out; o++)
        {
          double d = fabs ((double) res.y[(gsize) row * n_out + o] - (double) e[o]);

          max_diff = MAX (max_diff, d);
          g_assert_cmpfloat (res_u8.y[(gsize) row * n_out + o], ==, res.y[(gsize) row * n_out + o]);
        }
    }
  g_test_message ("%s: %d rows (%s), same class on every row, max |output - engine| %.3g; "
                  ".c %" G_GSIZE_FORMAT " bytes, .h %" G_GSIZE_FORMAT ", weights %" G_GSIZE_FORMAT
                  ", scratch %" G_GSIZE_FORMAT ", %u ops",
                  what, N_ROWS, data.real ? "Fashion-MNIST" : "generated", max_diff,
                  sum.c_bytes, sum.h_bytes, sum.weight_bytes, sum.scratch_bytes, sum.n_ops);
  g_assert_cmpfloat (max_diff, <=, 1e-4);
  result_clear (&res);
  result_clear (&res_u8);
  es_infer_free (inf);
}

static void
test_float_mlp (void)
{
  if (cc == NULL)
    {
      g_test_skip ("no C compiler");
      return;
    }
  check_float (mlp, NULL, "mlp");
}

static void
test_float_cnn (void)
{
  EsModel *m;

  if (cc == NULL)
    {
      g_test_skip ("no C compiler");
      return;
    }
  m = model_new (cnn_specs, G_N_ELEMENTS (cnn_specs), 3);
  randomize_batchnorm (m);
  check_float (m, NULL, "cnn");
  es_model_free (m);
}

/* fp16 weights: exported as the float values they round to, which is the rounded
 * model's float export byte for byte (and that runs as the engine does). */
static void
test_fp16 (void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = NULL, *c_fp16 = NULL, *c_rounded = NULL;
  g_autofree char *text_fp16 = NULL, *text_rounded = NULL;
  EspalierCExportSummary sum;
  EsError err = { 0 };
  EsModel *rounded;
  EsQuant *q;

  if (cc == NULL)
    {
      g_test_skip ("no C compiler");
      return;
    }
  q = es_quant_new (mlp, ES_QUANT_FP16, NULL, FALSE, &err);
  g_assert_true (q != NULL);
  rounded = es_quant_dequantized_model (mlp, q);
  g_assert_true (rounded != NULL);
  check_float (rounded, NULL, "rounded");
  dir = test_dir ("fp16");
  export_ok (mlp, q, info_new_static (), dir, "rounded", &sum);
  c_fp16 = g_build_filename (dir, "rounded.c", NULL);
  c_rounded = g_build_filename (tmp_root, "rounded", "rounded.c", NULL);
  g_assert_true (g_file_get_contents (c_fp16, &text_fp16, NULL, &error));
  g_assert_true (g_file_get_contents (c_rounded, &text_rounded, NULL, &error));
  g_assert_cmpstr (text_fp16, ==, text_rounded);
  es_model_free (rounded);
  es_quant_free (q);
}

/* ------------------------------------------------------------------------------------ */
/* Int8 */

/* The generated code of int8 variant (m, q) against EsExec on every test row: the
 * classes must agree on at least min_agree_permille / 1000 of the rows. Returns the
 * rows whose class agrees. */
static int
check_int8 (const EsModel *m, const EsQuant *q, const char *what, gboolean integer_only,
            int min_agree_permille)
{
  g_autofree char *dir = test_dir (what);
  const EspalierModelInfo *info = info_new_static ();
  EspalierCExportSummary sum;
  EsError err = { 0 };
  EsExec *ex = es_exec_new (m, q, NULL, backend, N_ROWS, &err);
  const int n_out = (int) es_model_layer (m, es_model_n_layers (m) - 1)->out_floats;
  const float *ref;
  Result res = { 0 }, res_u8 = { 0 };
  int agree = 0, agree_u8 = 0, same = 0;
  double max_diff = 0.0;

  g_assert_true (ex != NULL);
  export_ok (m, q, info, dir, what, &sum);
  g_assert_cmpint (sum.integer_only, ==, integer_only);
  g_assert_cmpuint (sum.n_int8_layers, >, 0);
  compile_and_run (dir, what, n_out, TRUE, TRUE, &res, &res_u8);

  ref = es_exec_run (ex, data.test_f, N_ROWS);
  for (int row = 0; row < N_ROWS; row++)
    {
      const float *e = ref + (gsize) row * n_out;
      int cls = argmax (e, n_out);

      /* bytes through the table give the codes floats give */
      g_assert_cmpint (res_u8.cls[row], ==, res.cls[row]);
      agree += res.cls[row] == cls;
      agree_u8 += res_u8.cls[row] == cls;
      if (res.cls[row] == cls)
        {
          double d = 0.0;

          for (int o = 0; o < n_out; o++)
            d = MAX (d, fabs ((double) res.y[(gsize) row * n_out + o] - (double) e[o]));
          max_diff = MAX (max_diff, d);
          same += d <= 1e-5;
        }
    }
  g_test_message ("%s: int8 C code and the engine (EsExec) agree on %d of %d rows (%s), "
                  "%d of %d from bytes; outputs equal (within 1e-5) on %d rows, at most %.3g apart; "
                  ".c %" G_GSIZE_FORMAT " bytes, .h %" G_GSIZE_FORMAT ", weights %" G_GSIZE_FORMAT
                  ", scratch %" G_GSIZE_FORMAT ", %u ops, integer-only %s",
                  what, agree, N_ROWS, data.real ? "Fashion-MNIST" : "generated", agree_u8,
                  N_ROWS, same, max_diff, sum.c_bytes, sum.h_bytes, sum.weight_bytes,
                  sum.scratch_bytes, sum.n_ops, sum.integer_only ? "yes" : "no");
  /* A code differs from the engine's only where the engine's float value lies within
   * its rounding error of a code boundary, a few codes in 10^5: so nearly every row
   * has the same codes throughout, hence the same outputs (up to float rounding), and
   * a class can differ only on a row where such a code also decides it. */
  g_assert_cmpint (same * 100, >=, 95 * N_ROWS);
  g_assert_cmpint (agree * 1000, >=, min_agree_permille * N_ROWS);
  result_clear (&res);
  result_clear (&res_u8);
  es_exec_free (ex);
  return agree;
}

static void
test_int8_mlp (void)
{
  EsQuant *q;

  if (cc == NULL)
    {
      g_test_skip ("no C compiler");
      return;
    }
  q = quantize (mlp, FALSE);
  /* the bar for the reference model: the same class on every row */
  check_int8 (mlp, q, "mlp8", TRUE, 1000);
  es_quant_free (q);
}

/* Monotone activations between int8 layers (the threshold tables) and 7-bit
 * activations. */
static void
test_int8_activations (void)
{
  static const EsLayerSpec specs[] = {
    { .kind = ES_LAYER_FLATTEN },
    { .kind = ES_LAYER_DENSE, .units = 64 },
    { .kind = ES_LAYER_BATCHNORM },
    { .kind = ES_LAYER_LEAKY_RELU, .alpha = 0.05f },
    { .kind = ES_LAYER_DENSE, .units = 48 },
    { .kind = ES_LAYER_TANH },
    { .kind = ES_LAYER_DROPOUT, .rate = 0.1f },
    { .kind = ES_LAYER_DENSE, .units = 32 },
    { .kind = ES_LAYER_SIGMOID },
    { .kind = ES_LAYER_DENSE, .units = 10 },
  };
  EsModel *m;
  EsQuant *q;

  if (cc == NULL)
    {
      g_test_skip ("no C compiler");
      return;
    }
  m = model_new (specs, G_N_ELEMENTS (specs), 5);
  randomize_batchnorm (m);
  model_train (m);
  q = quantize (m, TRUE);
  /* ONNX Runtime's bar for int8 (99.5%) */
  check_int8 (m, q, "act8", TRUE, 995);
  es_quant_free (q);
  es_model_free (m);
}

/* The CNN in int8: BatchNorm folded into a requantization, MaxPool on codes, an AvgPool
 * that makes its int8 layer dequantize (so not integer-only). */
static void
test_int8_cnn (void)
{
  EsModel *m;
  EsQuant *q;

  if (cc == NULL)
    {
      g_test_skip ("no C compiler");
      return;
    }
  m = model_new (cnn_specs, G_N_ELEMENTS (cnn_specs), 3);
  randomize_batchnorm (m);
  model_train (m);
  q = quantize (m, FALSE);
  check_int8 (m, q, "cnn8", FALSE, 995);
  es_quant_free (q);
  es_model_free (m);
}

/* ------------------------------------------------------------------------------------ */
/* Refusals */

static void
assert_empty_dir (const char *dir)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);

  g_assert_nonnull (d);
  g_assert_null (g_dir_read_name (d));
}

static void
test_bad_names (void)
{
  static const char *const bad[] = {
    "", "1mlp", "_mlp", "m-lp", "m lp", "mlp.v2", "ml\xc3\xa9", "a\"b",
    "a_very_long_name_that_is_longer_than_forty_eight_chars",
  };
  static const char *const good[] = { "mlp", "M", "fashion_mnist_v2", "int" };
  g_autofree char *dir = test_dir ("names");
  g_autofree char *c_path = g_build_filename (dir, "m.c", NULL);
  g_autofree char *h_path = g_build_filename (dir, "m.h", NULL);
  g_autofree char *h_bad = g_build_filename (dir, "m\".h", NULL);
  g_autofree char *missing = g_build_filename (dir, "no-such-dir", "m.c", NULL);
  EspalierCExportSummary sum = { 0 };

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr(GError) error = NULL;

      g_assert_false (espalier_c_export_check_name (bad[i], &error));
      g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
      g_clear_error (&error);
      g_assert_false (espalier_c_export (mlp, NULL, NULL, bad[i], c_path, h_path, &sum, &error));
      g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
    }
  for (guint i = 0; i < G_N_ELEMENTS (good); i++)
    g_assert_true (espalier_c_export_check_name (good[i], NULL));

  {
    g_autoptr(GError) error = NULL;

    /* one file for both */
    g_assert_false (espalier_c_export (mlp, NULL, NULL, "m", c_path, c_path, &sum, &error));
    g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
    g_clear_error (&error);
    /* a header that cannot be #included */
    g_assert_false (espalier_c_export (mlp, NULL, NULL, "m", c_path, h_bad, &sum, &error));
    g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
    g_clear_error (&error);
    /* a directory that does not exist: nothing is left anywhere */
    g_assert_false (espalier_c_export (mlp, NULL, NULL, "m", missing, h_path, &sum, &error));
    g_assert_nonnull (error);
    g_assert_cmpuint (sum.c_bytes, ==, 0);
  }
  assert_empty_dir (dir);
}

static void
test_refused_quant (void)
{
  g_autofree char *dir = test_dir ("refused");
  g_autofree char *c_path = g_build_filename (dir, "m.c", NULL);
  g_autofree char *h_path = g_build_filename (dir, "m.h", NULL);
  EsError err = { 0 };
  EsQuant *q;

  /* dynamic ranges */
  {
    g_autoptr(GError) error = NULL;

    q = es_quant_new (mlp, ES_QUANT_INT8_DYNAMIC, NULL, FALSE, &err);
    g_assert_true (q != NULL);
    g_assert_false (espalier_c_export (mlp, q, NULL, "m", c_path, h_path, NULL, &error));
    g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED);
    es_quant_free (q);
  }
  /* static, not calibrated */
  {
    g_autoptr(GError) error = NULL;

    q = es_quant_new (mlp, ES_QUANT_INT8_STATIC, NULL, FALSE, &err);
    g_assert_true (q != NULL);
    g_assert_false (espalier_c_export (mlp, q, NULL, "m", c_path, h_path, NULL, &error));
    g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_UNSUPPORTED);
    g_assert_nonnull (strstr (error->message, "Layer 2"));
    es_quant_free (q);
  }
  /* made for another model */
  {
    g_autoptr(GError) error = NULL;
    EsModel *other = model_new (cnn_specs, G_N_ELEMENTS (cnn_specs), 1);

    q = quantize (other, FALSE);
    g_assert_false (espalier_c_export (mlp, q, NULL, "m", c_path, h_path, NULL, &error));
    g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_SHAPE);
    es_quant_free (q);
    es_model_free (other);
  }
  assert_empty_dir (dir);
}

/* Exporting over existing files replaces them. */
static void
test_overwrite (void)
{
  g_autofree char *dir = test_dir ("overwrite");
  g_autofree char *c_path = g_build_filename (dir, "m.c", NULL);
  g_autofree char *h_path = g_build_filename (dir, "m.h", NULL);
  g_autoptr(GError) error = NULL;
  EspalierCExportSummary sum;
  g_autofree char *text = NULL;

  g_assert_true (g_file_set_contents (c_path, "old", -1, NULL));
  g_assert_true (g_file_set_contents (h_path, "old", -1, NULL));
  g_assert_true (espalier_c_export (mlp, NULL, NULL, "m", c_path, h_path, &sum, &error));
  g_assert_no_error (error);
  g_assert_true (g_file_get_contents (h_path, &text, NULL, NULL));
  g_assert_nonnull (strstr (text, "int m_predict (const float *input, float *output);"));
  g_assert_null (strstr (text, "_predict_u8"));   /* no info: no byte entry point */
  g_assert_cmpuint (file_size (c_path), ==, sum.c_bytes);
  /* only the two files */
  {
    g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
    int n = 0;

    while (g_dir_read_name (d) != NULL)
      n++;
    g_assert_cmpint (n, ==, 2);
  }
}

/* ------------------------------------------------------------------------------------ */

int
main (int argc, char **argv)
{
  EsError err = { 0 };
  int status;

  g_test_init (&argc, &argv, NULL);
  tmp_root = g_dir_make_tmp ("espalier-c-export-XXXXXX", NULL);
  g_assert_nonnull (tmp_root);
  cc = g_find_program_in_path ("gcc");
  if (cc == NULL)
    cc = g_find_program_in_path ("cc");
  backend = es_cpu_backend_new (2, NULL, &err);
  g_assert_true (backend != NULL);
  data_load ();
  mlp = model_new (mlp_specs, G_N_ELEMENTS (mlp_specs), 1);
  model_train (mlp);

  g_test_add_func ("/c-export/bad-names", test_bad_names);
  g_test_add_func ("/c-export/refused-quant", test_refused_quant);
  g_test_add_func ("/c-export/overwrite", test_overwrite);
  g_test_add_func ("/c-export/float-mlp", test_float_mlp);
  g_test_add_func ("/c-export/float-cnn", test_float_cnn);
  g_test_add_func ("/c-export/fp16", test_fp16);
  g_test_add_func ("/c-export/int8-mlp", test_int8_mlp);
  g_test_add_func ("/c-export/int8-activations", test_int8_activations);
  g_test_add_func ("/c-export/int8-cnn", test_int8_cnn);
  status = g_test_run ();

  es_model_free (mlp);
  es_backend_free (backend);
  g_free (data.train);
  g_free (data.test);
  g_free (data.train_labels);
  g_free (data.test_f);
  g_clear_pointer (&static_info, info_free);
  /* ESPALIER_TEST_KEEP=1 keeps the generated files to look at */
  if (g_strcmp0 (g_getenv ("ESPALIER_TEST_KEEP"), "1") == 0)
    g_printerr ("# generated files kept in %s\n", tmp_root);
  else
    dtu_rm_rf (tmp_root);
  g_free (tmp_root);
  g_free (cc);
  return status;
}
