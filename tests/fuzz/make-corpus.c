/* SPDX-License-Identifier: GPL-3.0-or-later */
/* make-corpus.c: writes the seed corpora of the fuzz harnesses (tests/fuzz/corpus/) with
 * Espalier's own writers: model files, projects, training checkpoints (version 2, and
 * version 1 made from one), ONNX exports and CSV exports of small generated data, plus
 * IDX files made by hand (Espalier reads IDX, it does not write it) and spec strings.
 * Every file is a valid input, a few KB at most.
 *
 *   make-corpus OUTDIR        writes OUTDIR/<harness>/seed-*
 *
 * The files it wrote are committed; run it again after a format changes (ninja -C
 * BUILDDIR tests/fuzz/make-corpus && BUILDDIR/tests/fuzz/make-corpus tests/fuzz/corpus). */
#include "config.h"

#include <json-glib/json-glib.h>
#include <math.h>
#include <zlib.h>

#include "es-quant.h"
#include "espalier-checkpoint.h"
#include "espalier-csv.h"
#include "espalier-generate.h"
#include "espalier-onnx.h"
#include "espalier-project.h"
#include "fuzz-common.h"
#include "fuzz-models.h"

static const char *out_dir;

static void
check (gboolean ok, GError *error)
{
  if (!ok)
    g_error ("%s", error != NULL ? error->message : "failed");
}

/* OUTDIR/harness/name holding the concatenation of the n pieces, separated by FUZZ_SEP
 * when sep; prefix (may be NULL) is one byte before them. */
static void
write_seed (const char *harness, const char *name, const guint8 *prefix, gboolean sep,
            GBytes *const *pieces, guint n)
{
  g_autofree char *dir = g_build_filename (out_dir, harness, NULL);
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_autoptr(GByteArray) all = g_byte_array_new ();
  g_autoptr(GError) error = NULL;

  g_mkdir_with_parents (dir, 0755);
  if (prefix != NULL)
    g_byte_array_append (all, prefix, 1);
  for (guint i = 0; i < n; i++)
    {
      gsize len;
      const guint8 *p = g_bytes_get_data (pieces[i], &len);

      if (i > 0 && sep)
        g_byte_array_append (all, (const guint8 *) FUZZ_SEP, FUZZ_SEP_LEN);
      g_byte_array_append (all, p, (guint) len);
    }
  check (g_file_set_contents (path, (const char *) all->data, all->len, &error), error);
}

static GBytes *
read_bytes (const char *path)
{
  g_autoptr(GError) error = NULL;
  char *text = NULL;
  gsize len = 0;

  check (g_file_get_contents (path, &text, &len, &error), error);
  return g_bytes_new_take (text, len);
}

static GBytes *
gzip_bytes (GBytes *plain)
{
  gsize size;
  const guint8 *data = g_bytes_get_data (plain, &size);
  z_stream z = { 0 };
  gsize cap;
  guint8 *out;

  if (deflateInit2 (&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    g_error ("deflateInit2");
  cap = deflateBound (&z, (uLong) size) + 64;
  out = g_malloc (cap);
  z.next_in = (Bytef *) data;
  z.avail_in = (uInt) size;
  z.next_out = out;
  z.avail_out = (uInt) cap;
  if (deflate (&z, Z_FINISH) != Z_STREAM_END)
    g_error ("deflate");
  cap = z.total_out;
  deflateEnd (&z);
  return g_bytes_new_take (out, cap);
}

/* ------------------------------------------------------------------------------------ */
/* IDX */

/* An IDX file of type (its element size esize) and dims, elements from a simple
 * pattern (labels: 0..n_classes-1 when n_classes > 0). Big-endian, as the format is. */
static GBytes *
idx_file (guint8 type, guint esize, guint ndim, const guint *dims, guint n_classes)
{
  GByteArray *b = g_byte_array_new ();
  guint8 head[4] = { 0, 0, type, (guint8) ndim };
  gsize n = 1;

  g_byte_array_append (b, head, 4);
  for (guint d = 0; d < ndim; d++)
    {
      guint8 be[4] = { dims[d] >> 24, dims[d] >> 16, dims[d] >> 8, dims[d] };

      g_byte_array_append (b, be, 4);
      n *= dims[d];
    }
  for (gsize i = 0; i < n; i++)
    {
      guint8 e[8] = { 0 };

      if (n_classes > 0)
        e[esize - 1] = (guint8) (i % n_classes);
      else if (type == 0x0D)
        {
          float f = (float) i * 0.25f - 1.0f;
          guint32 u;

          memcpy (&u, &f, 4);
          e[0] = u >> 24, e[1] = u >> 16, e[2] = u >> 8, e[3] = u;
        }
      else if (type == 0x0E)
        {
          double v = (double) i / 3.0;
          guint64 u;

          memcpy (&u, &v, 8);
          for (int k = 0; k < 8; k++)
            e[k] = (guint8) (u >> (56 - 8 * k));
        }
      else
        e[esize - 1] = (guint8) (i * 37 + 11);
      g_byte_array_append (b, e, esize);
    }
  return g_byte_array_free_to_bytes (b);
}

static void
make_idx (void)
{
  const guint img3[3] = { 3, 4, 4 }, img2[2] = { 3, 2 }, img4[4] = { 2, 2, 2, 2 };
  const guint lab[1] = { 3 }, fm_train[3] = { 2, 28, 28 }, fm_test[3] = { 1, 28, 28 };
  const guint fm_lab_train[1] = { 2 }, fm_lab_test[1] = { 1 };
  const guint8 mode0 = 0, mode1 = 1, mode2 = 2;
  struct { const char *name; guint8 type, esize; guint ndim; const guint *dims; } images[] = {
    { "ubyte-3d", 0x08, 1, 3, img3 },
    { "float-2d", 0x0D, 4, 2, img2 },
    { "short-4d", 0x0B, 2, 4, img4 },
    { "double-2d", 0x0E, 8, 2, img2 },
    { "int-2d", 0x0C, 4, 2, img2 },
    { "sbyte-3d", 0x09, 1, 3, img3 },
  };

  for (guint i = 0; i < G_N_ELEMENTS (images); i++)
    {
      g_autoptr(GBytes) img = idx_file (images[i].type, images[i].esize, images[i].ndim,
                                        images[i].dims, 0);
      g_autoptr(GBytes) gz = gzip_bytes (img);
      g_autoptr(GBytes) labels = idx_file (i % 2 ? 0x0C : 0x08, i % 2 ? 4 : 1, 1, lab, 3);
      g_autoptr(GBytes) labels_gz = gzip_bytes (labels);
      GBytes *pair[2] = { img, labels }, *pair_gz[2] = { gz, labels_gz };
      g_autofree char *n0 = g_strdup_printf ("seed-%s", images[i].name);
      g_autofree char *n1 = g_strdup_printf ("seed-%s-labels", images[i].name);
      g_autofree char *n0z = g_strdup_printf ("seed-%s-gz", images[i].name);
      g_autofree char *n1z = g_strdup_printf ("seed-%s-labels-gz", images[i].name);

      write_seed ("idx", n0, &mode0, TRUE, &img, 1);
      write_seed ("idx", n1, &mode1, TRUE, pair, 2);
      write_seed ("idx", n0z, &mode0, TRUE, &gz, 1);
      write_seed ("idx", n1z, &mode1, TRUE, pair_gz, 2);
      write_seed ("idx-gz", n0, &mode0, TRUE, &img, 1);
      write_seed ("idx-gz", n1, &mode1, TRUE, pair, 2);
    }
  {
    g_autoptr(GBytes) ti = idx_file (0x08, 1, 3, fm_train, 0);
    g_autoptr(GBytes) tl = idx_file (0x08, 1, 1, fm_lab_train, 10);
    g_autoptr(GBytes) vi = idx_file (0x08, 1, 3, fm_test, 0);
    g_autoptr(GBytes) vl = idx_file (0x08, 1, 1, fm_lab_test, 10);
    GBytes *four[4] = { ti, tl, vi, vl };
    g_autoptr(GBytes) tiz = gzip_bytes (ti), tlz = gzip_bytes (tl), viz = gzip_bytes (vi),
                      vlz = gzip_bytes (vl);
    GBytes *four_gz[4] = { tiz, tlz, viz, vlz };

    write_seed ("idx", "seed-fashion-mnist", &mode2, TRUE, four, 4);
    write_seed ("idx", "seed-fashion-mnist-gz", &mode2, TRUE, four_gz, 4);
    write_seed ("idx-gz", "seed-fashion-mnist", &mode2, TRUE, four, 4);
  }
}

/* ------------------------------------------------------------------------------------ */
/* CSV */

static void
csv_seed (const char *name, guint8 flags, const char *text)
{
  g_autoptr(GBytes) b = g_bytes_new (text, strlen (text));

  write_seed ("csv", name, &flags, FALSE, &b, 1);
}

static void
make_csv (const char *tmp)
{
  const char *gens[] = { "spiral:n=12,arms=3,seed=2", "moons:n=10", "blobs:n=9,centers=3" };

  for (guint i = 0; i < G_N_ELEMENTS (gens); i++)
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(EspalierDataset) ds = espalier_generate_from_spec (gens[i], &error);
      g_autofree char *path = g_build_filename (tmp, "export.csv", NULL);
      g_autofree char *name = g_strdup_printf ("seed-export-%u", i);
      g_autofree char *name_gz = g_strdup_printf ("seed-export-%u-gz", i);
      g_autoptr(GBytes) text = NULL, gz = NULL;
      guint8 flags = (guint8) (i * 0x45);

      check (ds != NULL, error);
      check (espalier_dataset_export_csv (ds, path, &error), error);
      text = read_bytes (path);
      gz = gzip_bytes (text);
      write_seed ("csv", name, &flags, FALSE, &text, 1);
      write_seed ("csv", name_gz, &flags, FALSE, &gz, 1);
    }
  csv_seed ("seed-one-hot", 0x04 | 0x10,
            "color,size,label\nred,1.5,yes\nblue,2,no\n\"gr,een\",NA,yes\nred,,no\n");
  csv_seed ("seed-semicolon", 0x01, "a;b;c\n1,5;2,25;0\n3,0;-4,5e2;1\n");
  csv_seed ("seed-tab-crlf", 0x02, "1\t2\t3\r\n4\t5\t6\r\n7\tnan\t9\r\n");
  csv_seed ("seed-quotes", 0x20, "\"x\",\"y\",\"label\"\n\"1\",\"2\",\"a \"\"b\"\"\"\n"
            "3,4,\"multi\nline\"\n5,N/A,c\n");
  csv_seed ("seed-regression", 0x40 | 0x80, "x0,x1,target\n0.5,1,0.25\n0.5,1,0.25\n"
            "-1e-3,2,3.75\n1e3,null,-2.5\n");
  csv_seed ("seed-bom", 0x08, "\xEF\xBB\xBFlabel,f1,f2\n0,1,2\n1,3,4\n2,5,6\n");
  csv_seed ("seed-many-classes", 0x00, "f,label\n1,10\n2,20\n3,30\n4,40\n5,-7\n");
}

/* ------------------------------------------------------------------------------------ */
/* Models, safetensors, ONNX, specs */

static void
make_models (const char *tmp)
{
  for (guint i = 0; i < G_N_ELEMENTS (fuzz_model_kinds); i++)
    {
      const char *kind = fuzz_model_kinds[i].name;
      g_autofree char *json_path = g_build_filename (tmp, "m.json", NULL);
      g_autofree char *st_path = g_build_filename (tmp, "m.safetensors", NULL);
      g_autofree char *onnx_path = g_build_filename (tmp, "m.onnx", NULL);
      g_autofree char *name = g_strdup_printf ("seed-%s", kind);
      g_autoptr(GError) error = NULL;
      g_autoptr(GBytes) json = NULL, st = NULL, onnx = NULL;
      EspalierModelInfo info;
      EspalierOnnxMeta meta;
      EsQuant *quant = NULL;
      EsModel *model = fuzz_model_build (i, &quant);
      guint8 selector = (guint8) i;

      fuzz_model_info (i, &info);
      check (espalier_model_save_variant (model, quant, &info, json_path, &error), error);
      json = read_bytes (json_path);
      st = read_bytes (st_path);
      {
        GBytes *pair[2] = { json, st };

        write_seed ("model", name, NULL, TRUE, pair, 2);
      }
      write_seed ("safetensors", name, &selector, FALSE, &st, 1);

      espalier_onnx_meta_init (&meta);   /* from_info clears it first */
      espalier_onnx_meta_from_info (&meta, &info);
      check (espalier_onnx_export (model, quant, &meta, onnx_path, NULL, &error), error);
      onnx = read_bytes (onnx_path);
      write_seed ("onnx", name, NULL, FALSE, &onnx, 1);

      espalier_onnx_meta_clear (&meta);
      espalier_model_info_clear (&info);
      g_clear_pointer (&quant, es_quant_free);
      es_model_free (model);
    }
}

static void
make_specs (void)
{
  static const struct { const char *name; guint8 shape[3]; const char *spec; } specs[] = {
    { "seed-mlp", { 2, 0, 27 }, "flatten,dense:128,relu,dense:10,softmax" },
    { "seed-lenet", { 2, 0, 27 }, "conv2d:6:5:1:2,relu,maxpool2d:2,conv2d:16:5,relu,maxpool2d:2,"
                                   "flatten,dense:120,relu,dense:84,relu,dense:10,softmax" },
    { "seed-playground", { 0, 1, 0 }, "dense:8,tanh,dense:8,tanh,dense:3,softmax" },
    { "seed-all-kinds", { 2, 2, 7 }, "Conv2D:4:3:2:1,BatchNorm:0.2:1e-3,leaky_relu:0.05,"
                                      "avgpool2d:2:1,MaxPool2D:1,dropout:0.5,Flatten,"
                                      "Dense:5,sigmoid" },
    { "seed-spaces", { 0, 15, 0 }, " dense : 4 , relu,dense:2 " },
    { "seed-spiral", { 0, 1, 0 }, "spiral:n=300,arms=3,noise=0.2,seed=1" },
    { "seed-blobs", { 0, 1, 0 }, "blobs:n=50,centers=4,noise=0.5,seed=7" },
    { "seed-circles", { 0, 1, 0 }, "circles:factor=0.3,noise=0.05" },
    { "seed-moons", { 0, 1, 0 }, "moons" },
    { "seed-xor", { 0, 1, 0 }, "xor:n=64,k=2" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (specs); i++)
    {
      g_autoptr(GByteArray) b = g_byte_array_new ();
      g_autoptr(GBytes) bytes = NULL;

      g_byte_array_append (b, specs[i].shape, 3);
      g_byte_array_append (b, (const guint8 *) specs[i].spec, (guint) strlen (specs[i].spec));
      bytes = g_byte_array_free_to_bytes (g_steal_pointer (&b));
      write_seed ("spec", specs[i].name, NULL, FALSE, &bytes, 1);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Projects */

static void
save_project (EspalierProject *p, const char *tmp, const char *name)
{
  g_autofree char *path = g_build_filename (tmp, "p.espalier", NULL);
  g_autoptr(GFile) file = g_file_new_for_path (path);
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) bytes = NULL;

  check (espalier_project_save (p, file, NULL, &error), error);
  bytes = read_bytes (path);
  write_seed ("project", name, NULL, FALSE, &bytes, 1);
}

static void
make_projects (const char *tmp)
{
  g_autoptr(EspalierProject) bare = espalier_project_new ();
  g_autoptr(EspalierProject) full = espalier_project_new ();
  g_autoptr(GError) error = NULL;
  EsShape in2 = { .rank = 1, .dims = { 2 } };
  EspalierTrainOptions to;
  EspalierLoadOptions lo;

  save_project (bare, tmp, "seed-empty");

  espalier_load_options_init (&lo);
  lo.label_column = "label";
  lo.standardize = TRUE;
  lo.csv_header = ESPALIER_CSV_HEADER_PRESENT;
  espalier_project_set_dataset_source (full, "spiral:n=30,arms=3,noise=0.2,seed=1", &lo);
  espalier_model_doc_set_input (espalier_project_get_model_doc (full), &in2, 3);
  check (espalier_model_doc_set_spec (espalier_project_get_model_doc (full),
                                      "dense:4,tanh,dropout:0.1,dense:3,softmax", &error), error);
  espalier_train_options_init (&to);
  to.engine.optimizer = ES_OPT_ADAMW;
  to.epochs = 3;
  espalier_project_set_train_options (full, &to);
  {
    g_autoptr(EspalierRun) run = espalier_run_new ("Run 1", "dense:4,tanh,dense:3,softmax", &to);
    EspalierEpochRecord rec = { .epoch = 1, .train_loss = 1.0, .train_accuracy = 0.4,
                                .val_loss = NAN, .val_accuracy = NAN, .lr = 0.01,
                                .seconds = 0.5 };
    guint confusion[9] = { 3, 1, 0, 0, 4, 1, 1, 0, 2 };
    EspalierMetrics test = { .rows = 12, .loss = 0.5, .accuracy = 0.75, .n_classes = 3,
                             .confusion = confusion };

    espalier_run_add_record (run, &rec);
    espalier_run_set_finished (run, TRUE);
    espalier_run_set_test (run, &test);
    espalier_project_add_run (full, run);
  }
  {
    EsShape in = { .rank = 1, .dims = { 2 } };
    EsModel *m = espalier_model_from_spec ("dense:4,batchnorm,relu,dense:3", &in, &error);
    EsModel *mq = espalier_model_from_spec ("dense:4,relu,dense:3", &in, &error);
    g_autoptr(EspalierVariant) base = NULL, q = NULL, bare_v = NULL;
    EsError es = { 0 };
    EsQuant *quant;

    check (m != NULL && mq != NULL, error);
    es_model_init (m, 3);
    es_model_init (mq, 4);
    base = espalier_variant_new ("baseline", "baseline", m);
    espalier_variant_set_accuracy (base, 0.75);
    espalier_variant_set_latency_us (base, 2.5);
    espalier_project_add_variant (full, base);

    q = espalier_variant_new ("int8", "quantized", mq);
    quant = es_quant_new (espalier_variant_get_model (q), ES_QUANT_INT8_STATIC, NULL, false, &es);
    check (quant != NULL, NULL);
    for (int l = 0; l < quant->n_layers; l++)
      if (quant->layers[l].int8)
        es_quant_set_input_range (quant, l, -1.0f, 2.0f);
    espalier_variant_set_quant (q, quant);
    espalier_variant_set_parent (q, "baseline");
    espalier_project_add_variant (full, q);

    bare_v = espalier_variant_new ("reduced", "reduced", NULL);
    espalier_project_add_variant (full, bare_v);
  }
  save_project (full, tmp, "seed-full");
}

/* ------------------------------------------------------------------------------------ */
/* Training checkpoints */

/* A checkpoint of a model of spec on input, initialized with seed, with n_slots optimizer
 * vectors; hooks: 0 none, 1 every hook's state (early stopping with weights, QAT ranges,
 * gradual pruning, the loss scaler), 2 early stopping without weights and the scaler. */
static EspalierCheckpoint *
checkpoint (const char *spec, const EsShape *input, guint64 seed, int n_slots, int hooks)
{
  g_autoptr(GError) error = NULL;
  EsModel *m = espalier_model_from_spec (spec, input, &error);
  EspalierCheckpoint *ck = espalier_checkpoint_new ();
  EspalierEpochRecord rec = { .epoch = 1, .train_loss = 0.75, .train_accuracy = 0.5,
                              .val_loss = 0.8125, .val_accuracy = 0.375, .lr = 0.01,
                              .seconds = 0.25 };
  gint64 P, Q;

  check (m != NULL, error);
  es_model_init (m, seed);
  P = es_model_n_params (m);
  Q = es_model_n_buffers (m);
  ck->info = (EspalierCheckpointInfo) { .epoch = 2, .position = 16, .step = 5, .ranks = 1,
                                        .batch = 8, .seed = seed };
  ck->spec = espalier_model_to_spec (m);
  ck->n_params = P;
  ck->n_buffers = Q;
  ck->n_train = 40;
  ck->loss_sum = 7.5;
  ck->correct = 9;
  ck->rows = 16;
  if (hooks == 0)
    rec.val_loss = rec.val_accuracy = NAN;   /* no validation split */
  g_array_append_val (ck->history, rec);
  ck->params = g_memdup2 (es_model_params_const (m), (gsize) P * sizeof (float));
  ck->buffers = Q > 0 ? g_memdup2 (es_model_buffers_const (m), (gsize) Q * sizeof (float)) : NULL;
  ck->n_slots = n_slots;
  ck->slots = n_slots > 0 ? g_new (float, n_slots * P) : NULL;
  for (gint64 i = 0; i < n_slots * P; i++)
    ck->slots[i] = (float) (i % 11) / 8.0f;
  if (hooks >= 1)
    {
      ck->best_val = 0.8125;
      ck->best_epoch = 1;
      ck->bad_epochs = hooks == 2 ? 1 : 0;
      ck->have_scaler = TRUE;
      ck->loss_scale = 32768.0f;
      ck->scale_clean = 3;
      ck->skipped_steps = 1;
    }
  if (hooks == 1)
    {
      EspalierCheckpointPruneEvent ev[2] = { { 2, 0.25, 0.25 }, { 4, 0.5, 0.5 } };

      ck->have_best = TRUE;
      ck->best = g_new (float, P + Q);
      for (gint64 i = 0; i < P + Q; i++)
        ck->best[i] = (float) (i % 7) / -4.0f;
      ck->n_layers = (guint) es_model_n_layers (m);
      ck->range_lo = g_new0 (float, ck->n_layers);
      ck->range_hi = g_new0 (float, ck->n_layers);
      ck->range_set = g_new0 (gboolean, ck->n_layers);
      ck->range_set[0] = ck->range_set[ck->n_layers - 1] = TRUE;
      ck->range_lo[0] = -1.5f;
      ck->range_hi[0] = 2.25f;
      ck->range_lo[ck->n_layers - 1] = 0.0f;
      ck->range_hi[ck->n_layers - 1] = 6.0f;
      ck->next_event = 2;
      g_array_append_vals (ck->prune_events, ev, 2);
      ck->mask = g_new (guint8, P);
      for (gint64 i = 0; i < P; i++)
        ck->mask[i] = i % 2;
    }
  es_model_free (m);
  return ck;
}

/* The checkpoint file (bytes) rewritten as version 1 wrote it: the state without the
 * hooks' members and with version 1; the tensors (and so their SHA-256) unchanged. */
static GBytes *
as_version_1 (GBytes *v2)
{
  static const char *const hooks[] = { "early_stopping", "fake_quant", "pruning", "loss_scaler" };
  gsize len;
  const guint8 *p = g_bytes_get_data (v2, &len);
  guint64 hlen = 0;
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) header = NULL, state = NULL;
  g_autofree char *header_text = NULL, *state_text = NULL;
  g_autoptr(GByteArray) out = g_byte_array_new ();
  JsonObject *meta, *so;
  GString *hs;
  guint8 len_le[8];

  for (int i = 0; i < 8; i++)
    hlen |= (guint64) p[i] << (8 * i);
  header_text = g_strndup ((const char *) p + 8, (gsize) hlen);
  header = json_from_string (header_text, &error);
  check (header != NULL, error);
  meta = json_object_get_object_member (json_node_get_object (header), "__metadata__");
  state = json_from_string (json_object_get_string_member (meta, "espalier"), &error);
  check (state != NULL, error);
  so = json_node_get_object (state);
  json_object_set_int_member (so, "version", 1);
  for (guint i = 0; i < G_N_ELEMENTS (hooks); i++)
    json_object_remove_member (so, hooks[i]);
  state_text = json_to_string (state, FALSE);
  json_object_set_string_member (meta, "espalier", state_text);
  g_clear_pointer (&header_text, g_free);
  header_text = json_to_string (header, FALSE);
  hs = g_string_new (header_text);
  while (hs->len % 8 != 0)
    g_string_append_c (hs, ' ');
  for (int i = 0; i < 8; i++)
    len_le[i] = (guint8) ((guint64) hs->len >> (8 * i));
  g_byte_array_append (out, len_le, 8);
  g_byte_array_append (out, (const guint8 *) hs->str, (guint) hs->len);
  g_byte_array_append (out, p + 8 + hlen, (guint) (len - 8 - (gsize) hlen));
  g_string_free (hs, TRUE);
  return g_byte_array_free_to_bytes (g_steal_pointer (&out));
}

static void
make_checkpoints (const char *tmp)
{
  /* options: bit 0 re-hash, bits 1-2 the input shape (fuzz-checkpoint.c's SHAPES) */
  static const struct {
    const char *name; const char *spec; EsShape input; guint8 options; int slots, hooks;
    gboolean v1;
  } cks[] = {
    { "seed-v2-plain", "dense:4,relu,dense:3", { 1, { 2 } }, 0x01, 0, 0, FALSE },
    { "seed-v2-extras", "dense:8,batchnorm,relu,dense:3,softmax", { 1, { 2 } }, 0x01, 2, 1, FALSE },
    { "seed-v2-cnn", "conv2d:2:3:1:1,batchnorm,relu,maxpool2d:2,flatten,dense:3", { 3, { 1, 4, 4 } },
      0x05, 1, 2, FALSE },
    { "seed-v2-no-rehash", "dense:5,tanh,dense:2", { 1, { 4 } }, 0x02, 2, 1, FALSE },
    { "seed-v1", "dense:6,relu,dense:3", { 1, { 4 } }, 0x03, 1, 0, TRUE },
  };
  g_autofree char *path = g_build_filename (tmp, "run.ckpt", NULL);

  for (guint i = 0; i < G_N_ELEMENTS (cks); i++)
    {
      g_autoptr(EspalierCheckpoint) ck = checkpoint (cks[i].spec, &cks[i].input, i + 1,
                                                     cks[i].slots, cks[i].hooks);
      g_autoptr(GError) error = NULL;
      g_autoptr(GBytes) bytes = NULL;

      if (cks[i].v1)
        ck->info.ranks = 2;   /* version 1 was written by data-parallel runs */
      check (espalier_checkpoint_save (ck, path, &error), error);
      bytes = read_bytes (path);
      if (cks[i].v1)
        {
          GBytes *v1 = as_version_1 (bytes);

          g_bytes_unref (bytes);
          bytes = v1;
        }
      write_seed ("checkpoint", cks[i].name, &cks[i].options, FALSE, &bytes, 1);
    }
}

int
main (int argc, char **argv)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *tmp = NULL;

  if (argc != 2)
    {
      g_printerr ("usage: %s OUTDIR\n", argv[0]);
      return 2;
    }
  out_dir = argv[1];
  g_setenv ("LANGUAGE", "C", TRUE);
  tmp = g_dir_make_tmp ("espalier-corpus-XXXXXX", &error);
  check (tmp != NULL, error);

  make_idx ();
  make_csv (tmp);
  make_models (tmp);
  make_specs ();
  make_projects (tmp);
  make_checkpoints (tmp);

  {
    g_autoptr(GDir) d = g_dir_open (tmp, 0, NULL);
    const char *name;

    while (d != NULL && (name = g_dir_read_name (d)) != NULL)
      {
        g_autofree char *p = g_build_filename (tmp, name, NULL);

        g_unlink (p);
      }
    g_rmdir (tmp);
  }
  return 0;
}
