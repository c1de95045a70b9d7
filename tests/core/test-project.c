/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-project.c: EspalierProject and what it holds: a save and load give back the
 * same doc, options, runs (history values exact) and variants (weights bit-identical);
 * the modified flag and the title; corrupt files fail with ESPALIER_ERROR_FORMAT naming
 * the field; the save is atomic. Also the pieces the project's GUI relies on: variant
 * counts and latency, the trainer's weight snapshots and validation confusion matrix,
 * and loading a dataset on a worker thread. */
#include <math.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "data-test-util.h"
#include "espalier-error.h"
#include "espalier-json-private.h"
#include "espalier-project.h"
#include "espalier-split.h"
#include "espalier-templates.h"
#include "quant-test-util.h"

static const EsShape points = { .rank = 1, .dims = { 2 } };

static EsModel *
model_from_spec (const char *spec, guint64 seed)
{
  g_autoptr(GError) error = NULL;
  EsModel *m = espalier_model_from_spec (spec, &points, &error);

  g_assert_no_error (error);
  es_model_init (m, seed);
  return m;
}

static EspalierRun *
make_run (const char *name, guint n_epochs, gboolean finished)
{
  EspalierTrainOptions opts;
  EspalierRun *run;
  EspalierMetrics test = { .rows = 60, .loss = 0.125, .accuracy = 2.0 / 3.0, .n_classes = 3 };
  guint confusion[9] = { 18, 1, 1, 2, 17, 1, 3, 2, 15 };

  espalier_train_options_init (&opts);
  opts.engine.lr = 0.03f;
  opts.epochs = n_epochs;
  opts.seed = G_MAXUINT64 - 4;   /* above G_MAXINT64: written as a string */
  run = espalier_run_new (name, "dense:8,tanh,dense:3,softmax", &opts);
  for (guint e = 1; e <= n_epochs; e++)
    {
      EspalierEpochRecord r = {
        .epoch = e, .train_loss = 1.0 / (3.0 * e), .train_accuracy = 0.1 * e,
        .val_loss = e == 2 ? NAN : 1e-300 * e, .val_accuracy = e == 2 ? NAN : 1.0 / 7.0,
        .lr = 0.03 / e, .seconds = 0.001 + e,
      };

      espalier_run_add_record (run, &r);
    }
  espalier_run_set_finished (run, finished);
  if (finished)
    {
      test.confusion = confusion;
      espalier_run_set_test (run, &test);
    }
  return run;
}

/* A project with a bit of everything. */
static EspalierProject *
make_project (void)
{
  EspalierProject *p = espalier_project_new ();
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierRun) r1 = make_run ("Run 1", 3, TRUE);
  g_autoptr(EspalierRun) r2 = make_run ("Run 2", 1, FALSE);
  g_autoptr(EspalierVariant) base = NULL, pruned = NULL, bare = NULL;
  EspalierLoadOptions lo;
  EspalierTrainOptions to;
  EsModel *m;
  EsShape in3 = { .rank = 1, .dims = { 2 } };

  espalier_load_options_init (&lo);
  lo.label_column = "label";
  lo.cache_dir = "/tmp/espalier-cache";
  lo.standardize = TRUE;
  lo.csv_header = ESPALIER_CSV_HEADER_PRESENT;
  lo.split_seed = 99;
  espalier_project_set_dataset_source (p, "spiral:n=300,arms=3,noise=0.2,seed=1", &lo);
  espalier_model_doc_set_input (espalier_project_get_model_doc (p), &in3, 3);
  g_assert_true (espalier_model_doc_set_spec (espalier_project_get_model_doc (p),
                                              "dense:8,tanh,dropout:0.1,dense:3,softmax", &error));
  g_assert_no_error (error);
  espalier_train_options_init (&to);
  to.engine.optimizer = ES_OPT_ADAMW;
  to.engine.lr = 0.003f;
  to.epochs = 42;
  to.patience = 5;
  to.augment.hflip = TRUE;
  espalier_project_set_train_options (p, &to);
  espalier_project_add_run (p, r1);
  espalier_project_add_run (p, r2);

  base = espalier_variant_new ("baseline", "baseline",
                               model_from_spec ("dense:8,batchnorm,relu,dense:3", 3));
  m = espalier_variant_get_model (base);
  /* running statistics that are not the init's, to see buffers survive */
  for (gint64 i = 0; i < es_model_n_buffers (m); i++)
    es_model_buffers (m)[i] = 0.5f + (float) i / 3.0f;
  espalier_variant_set_model (base, m);
  espalier_variant_set_accuracy (base, 0.9133333);
  espalier_variant_set_latency_us (base, 1.0 / 3.0);
  espalier_variant_set_description (base, "trained 42 epochs");
  espalier_project_add_variant (p, base);

  m = model_from_spec ("dense:8,relu,dense:3", 5);
  for (gint64 i = 0; i < es_model_n_params (m); i += 2)
    es_model_params (m)[i] = 0.0f;
  pruned = espalier_variant_new ("pruned 50%", "pruned", m);
  espalier_variant_set_parent (pruned, "baseline");
  espalier_variant_set_accuracy (pruned, 0.5);
  espalier_project_add_variant (p, pruned);

  bare = espalier_variant_new ("reduced", "reduced", NULL);
  espalier_project_add_variant (p, bare);
  return p;
}

static void
assert_models_equal (EsModel *a, EsModel *b)
{
  g_autofree char *sa = espalier_model_to_spec (a), *sb = espalier_model_to_spec (b);
  EsShape ia = es_model_input_shape (a), ib = es_model_input_shape (b);

  g_assert_cmpstr (sa, ==, sb);
  g_assert_true (es_shape_equal (&ia, &ib));
  g_assert_cmpint (es_model_n_params (a), ==, es_model_n_params (b));
  g_assert_cmpint (es_model_n_buffers (a), ==, es_model_n_buffers (b));
  g_assert_cmpmem (es_model_params (a), es_model_n_params (a) * 4, es_model_params (b),
                   es_model_n_params (b) * 4);
  g_assert_cmpmem (es_model_buffers (a), es_model_n_buffers (a) * 4, es_model_buffers (b),
                   es_model_n_buffers (b) * 4);
}

static gboolean
same_double (double a, double b)
{
  return (isnan (a) && isnan (b)) || memcmp (&a, &b, sizeof a) == 0;
}

static void
assert_runs_equal (EspalierRun *a, EspalierRun *b)
{
  GArray *ha = espalier_run_get_history (a), *hb = espalier_run_get_history (b);
  const EspalierMetrics *ta = espalier_run_get_test (a), *tb = espalier_run_get_test (b);

  g_assert_cmpstr (espalier_run_get_name (a), ==, espalier_run_get_name (b));
  g_assert_cmpstr (espalier_run_get_spec (a), ==, espalier_run_get_spec (b));
  g_assert_cmpstr (espalier_run_get_created (a), ==, espalier_run_get_created (b));
  g_assert_cmpint (espalier_run_get_finished (a), ==, espalier_run_get_finished (b));
  g_assert_cmpmem (espalier_run_get_options (a), sizeof (EspalierTrainOptions),
                   espalier_run_get_options (b), sizeof (EspalierTrainOptions));
  g_assert_cmpuint (ha->len, ==, hb->len);
  for (guint i = 0; i < ha->len; i++)
    {
      const EspalierEpochRecord *x = &g_array_index (ha, EspalierEpochRecord, i);
      const EspalierEpochRecord *y = &g_array_index (hb, EspalierEpochRecord, i);

      g_assert_cmpuint (x->epoch, ==, y->epoch);
      g_assert_true (same_double (x->train_loss, y->train_loss));
      g_assert_true (same_double (x->train_accuracy, y->train_accuracy));
      g_assert_true (same_double (x->val_loss, y->val_loss));
      g_assert_true (same_double (x->val_accuracy, y->val_accuracy));
      g_assert_true (same_double (x->lr, y->lr));
      g_assert_true (same_double (x->seconds, y->seconds));
    }
  g_assert_cmpuint (ta->rows, ==, tb->rows);
  g_assert_true (same_double (ta->loss, tb->loss));
  g_assert_true (same_double (ta->accuracy, tb->accuracy));
  g_assert_cmpuint (ta->n_classes, ==, tb->n_classes);
  g_assert_cmpint (ta->confusion == NULL, ==, tb->confusion == NULL);
  if (ta->confusion != NULL)
    g_assert_cmpmem (ta->confusion, ta->n_classes * ta->n_classes * sizeof (guint),
                     tb->confusion, tb->n_classes * tb->n_classes * sizeof (guint));
}

static void
assert_projects_equal (EspalierProject *a, EspalierProject *b)
{
  EspalierModelDoc *da = espalier_project_get_model_doc (a);
  EspalierModelDoc *db = espalier_project_get_model_doc (b);
  g_autofree char *sa = espalier_model_doc_to_spec (da), *sb = espalier_model_doc_to_spec (db);
  const EspalierLoadOptions *la = espalier_project_get_load_options (a);
  const EspalierLoadOptions *lb = espalier_project_get_load_options (b);
  GListModel *runs_a = espalier_project_get_runs (a), *runs_b = espalier_project_get_runs (b);
  GListModel *var_a = espalier_project_get_variants (a), *var_b = espalier_project_get_variants (b);

  g_assert_cmpstr (espalier_project_get_dataset_source (a), ==,
                   espalier_project_get_dataset_source (b));
  g_assert_cmpstr (la->label_column, ==, lb->label_column);
  g_assert_cmpstr (la->labels_path, ==, lb->labels_path);
  g_assert_cmpstr (la->cache_dir, ==, lb->cache_dir);
  g_assert_cmpint (la->csv_header, ==, lb->csv_header);
  g_assert_cmpint (la->one_hot, ==, lb->one_hot);
  g_assert_cmpint (la->ffill, ==, lb->ffill);
  g_assert_cmpint (la->drop_duplicates, ==, lb->drop_duplicates);
  g_assert_cmpint (la->mean_fill, ==, lb->mean_fill);
  g_assert_cmpint (la->standardize, ==, lb->standardize);
  g_assert_cmpint (la->minmax, ==, lb->minmax);
  g_assert_cmpint (la->use_cache, ==, lb->use_cache);
  g_assert_cmpfloat (la->val_fraction, ==, lb->val_fraction);
  g_assert_cmpfloat (la->test_fraction, ==, lb->test_fraction);
  g_assert_cmpuint (la->split_seed, ==, lb->split_seed);

  g_assert_cmpstr (sa, ==, sb);
  g_assert_true (es_shape_equal (espalier_model_doc_get_input (da),
                                 espalier_model_doc_get_input (db)));
  g_assert_cmpuint (espalier_model_doc_get_n_outputs (da), ==,
                    espalier_model_doc_get_n_outputs (db));
  g_assert_cmpmem (espalier_project_get_train_options (a), sizeof (EspalierTrainOptions),
                   espalier_project_get_train_options (b), sizeof (EspalierTrainOptions));

  g_assert_cmpuint (g_list_model_get_n_items (runs_a), ==, g_list_model_get_n_items (runs_b));
  for (guint i = 0; i < g_list_model_get_n_items (runs_a); i++)
    {
      g_autoptr(EspalierRun) x = g_list_model_get_item (runs_a, i);
      g_autoptr(EspalierRun) y = g_list_model_get_item (runs_b, i);

      assert_runs_equal (x, y);
    }

  g_assert_cmpuint (g_list_model_get_n_items (var_a), ==, g_list_model_get_n_items (var_b));
  for (guint i = 0; i < g_list_model_get_n_items (var_a); i++)
    {
      g_autoptr(EspalierVariant) x = g_list_model_get_item (var_a, i);
      g_autoptr(EspalierVariant) y = g_list_model_get_item (var_b, i);

      g_assert_cmpstr (espalier_variant_get_name (x), ==, espalier_variant_get_name (y));
      g_assert_cmpstr (espalier_variant_get_kind (x), ==, espalier_variant_get_kind (y));
      g_assert_cmpstr (espalier_variant_get_description (x), ==,
                       espalier_variant_get_description (y));
      g_assert_cmpstr (espalier_variant_get_parent (x), ==, espalier_variant_get_parent (y));
      g_assert_true (same_double (espalier_variant_get_accuracy (x),
                                  espalier_variant_get_accuracy (y)));
      g_assert_true (same_double (espalier_variant_get_latency_us (x),
                                  espalier_variant_get_latency_us (y)));
      g_assert_cmpuint (espalier_variant_get_size_bytes (x), ==,
                        espalier_variant_get_size_bytes (y));
      g_assert_cmpint (espalier_variant_get_n_params (x), ==, espalier_variant_get_n_params (y));
      g_assert_cmpint (espalier_variant_get_nonzeros (x), ==, espalier_variant_get_nonzeros (y));
      g_assert_cmpint (espalier_variant_get_flops (x), ==, espalier_variant_get_flops (y));
      g_assert_cmpstr (espalier_variant_get_format (x), ==, espalier_variant_get_format (y));
      g_assert_cmpstr (espalier_variant_get_exec (x), ==, espalier_variant_get_exec (y));
      g_assert_true (same_double (espalier_variant_get_latency_p95_us (x),
                                  espalier_variant_get_latency_p95_us (y)));
      g_assert_true (same_double (espalier_variant_get_rows_per_second (x),
                                  espalier_variant_get_rows_per_second (y)));
      g_assert_true (same_double (espalier_variant_get_dense_latency_us (x),
                                  espalier_variant_get_dense_latency_us (y)));
      g_assert_true (same_double (espalier_variant_get_sparse_latency_us (x),
                                  espalier_variant_get_sparse_latency_us (y)));
      g_assert_cmpint (espalier_variant_get_quant (x) == NULL, ==,
                       espalier_variant_get_quant (y) == NULL);
      if (espalier_variant_get_quant (x) != NULL)
        qtu_assert_quants_equal (espalier_variant_get_quant (x), espalier_variant_get_quant (y));
      g_assert_cmpint (espalier_variant_get_model (x) == NULL, ==,
                       espalier_variant_get_model (y) == NULL);
      if (espalier_variant_get_model (x) != NULL)
        assert_models_equal (espalier_variant_get_model (x), espalier_variant_get_model (y));
    }
}

static GFile *
tmp_file (const char *name)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *path = g_build_filename (dir, name, NULL);

  return g_file_new_for_path (path);
}

static void
test_round_trip (void)
{
  g_autoptr(EspalierProject) p = make_project ();
  g_autoptr(EspalierProject) q = NULL;
  g_autoptr(EspalierProject) r = NULL;
  g_autoptr(GFile) file = tmp_file ("My Net.espalier");
  g_autoptr(GFile) again = NULL;
  g_autoptr(GError) error = NULL;

  g_assert_true (espalier_project_get_modified (p));
  g_assert_cmpstr (espalier_project_get_title (p), ==, "Untitled");
  g_assert_true (espalier_project_save (p, file, NULL, &error));
  g_assert_no_error (error);
  g_assert_false (espalier_project_get_modified (p));
  g_assert_true (g_file_equal (espalier_project_get_file (p), file));
  g_assert_cmpstr (espalier_project_get_title (p), ==, "My Net");

  q = espalier_project_load (file, NULL, &error);
  g_assert_no_error (error);
  g_assert_nonnull (q);
  g_assert_false (espalier_project_get_modified (q));
  g_assert_cmpstr (espalier_project_get_title (q), ==, "My Net");
  g_assert_true (g_file_equal (espalier_project_get_file (q), file));
  g_assert_false (espalier_model_doc_can_undo (espalier_project_get_model_doc (q)));
  g_assert_null (espalier_project_get_dataset (q));
  assert_projects_equal (p, q);

  /* saved again, it reads the same a second time */
  again = tmp_file ("again.espalier");
  g_assert_true (espalier_project_save (q, again, NULL, &error));
  r = espalier_project_load (again, NULL, &error);
  g_assert_no_error (error);
  assert_projects_equal (p, r);
  g_assert_finalize_object (g_steal_pointer (&r));
  g_assert_finalize_object (g_steal_pointer (&q));
  g_assert_finalize_object (g_steal_pointer (&p));
}

typedef struct {
  guint changed, modified;
} Seen;

static void
on_changed (EspalierProject *p, Seen *s)
{
  s->changed++;
}

static void
on_modified (GObject *obj, GParamSpec *pspec, Seen *s)
{
  s->modified++;
}

static void
test_modified (void)
{
  g_autoptr(EspalierProject) p = espalier_project_new ();
  g_autoptr(GFile) file = tmp_file ("m.espalier");
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierRun) run = make_run ("Run 1", 1, TRUE);
  g_autoptr(EspalierVariant) v = espalier_variant_new ("baseline", "baseline", NULL);
  g_autoptr(EspalierVariant) v2 = espalier_variant_new ("baseline", "baseline", NULL);
  EspalierModelDoc *doc = espalier_project_get_model_doc (p);
  EspalierTrainOptions to = *espalier_project_get_train_options (p);
  Seen s = { 0 };

  g_signal_connect (p, "changed", G_CALLBACK (on_changed), &s);
  g_signal_connect (p, "notify::modified", G_CALLBACK (on_modified), &s);
  g_assert_false (espalier_project_get_modified (p));
  g_assert_cmpstr (espalier_project_get_title (p), ==, "Untitled");

  espalier_model_doc_insert (doc, 0, &(EsLayerSpec) { .kind = ES_LAYER_DENSE, .units = 2 });
  g_assert_true (espalier_project_get_modified (p));
  g_assert_cmpuint (s.changed, ==, 1);
  g_assert_cmpuint (s.modified, ==, 1);
  espalier_model_doc_insert (doc, 1, &(EsLayerSpec) { .kind = ES_LAYER_SOFTMAX });
  g_assert_cmpuint (s.changed, ==, 2);
  g_assert_cmpuint (s.modified, ==, 1);   /* already set */

  g_assert_true (espalier_project_save (p, file, NULL, &error));
  g_assert_no_error (error);
  g_assert_false (espalier_project_get_modified (p));
  g_assert_cmpuint (s.modified, ==, 2);
  g_assert_cmpstr (espalier_project_get_title (p), ==, "m");

  /* the same options again are no change */
  espalier_project_set_train_options (p, &to);
  espalier_project_set_dataset_source (p, NULL, NULL);
  g_assert_false (espalier_project_get_modified (p));
  g_assert_cmpuint (s.changed, ==, 2);

  to.epochs = 3;
  espalier_project_set_train_options (p, &to);
  g_assert_true (espalier_project_get_modified (p));
  espalier_project_set_modified (p, FALSE);
  espalier_project_set_dataset_source (p, "moons", NULL);
  g_assert_true (espalier_project_get_modified (p));
  g_assert_cmpstr (espalier_project_get_dataset_source (p), ==, "moons");
  espalier_project_set_modified (p, FALSE);
  espalier_project_add_run (p, run);
  g_assert_true (espalier_project_get_modified (p));
  espalier_project_set_modified (p, FALSE);
  espalier_project_add_variant (p, v);
  g_assert_true (espalier_project_get_modified (p));
  espalier_project_set_modified (p, FALSE);
  /* a namesake replaces */
  espalier_project_add_variant (p, v2);
  g_assert_true (espalier_project_get_modified (p));
  g_assert_cmpuint (g_list_model_get_n_items (espalier_project_get_variants (p)), ==, 1);
  espalier_project_set_modified (p, FALSE);
  espalier_project_remove_variant (p, 0);
  g_assert_true (espalier_project_get_modified (p));
  g_assert_cmpuint (g_list_model_get_n_items (espalier_project_get_variants (p)), ==, 0);

  /* what the project holds changes: a run's new epoch, a variant's measurement */
  espalier_project_add_variant (p, v);
  espalier_project_set_modified (p, FALSE);
  espalier_run_add_record (run, &(EspalierEpochRecord) { .epoch = 2 });
  g_assert_true (espalier_project_get_modified (p));
  espalier_project_set_modified (p, FALSE);
  espalier_run_set_finished (run, FALSE);
  g_assert_true (espalier_project_get_modified (p));
  espalier_project_set_modified (p, FALSE);
  espalier_variant_set_latency_us (v, 3.5);
  g_assert_true (espalier_project_get_modified (p));
  espalier_project_set_modified (p, FALSE);
  espalier_project_add_variant (p, v);   /* already there: nothing */
  g_assert_false (espalier_project_get_modified (p));
  espalier_project_add_variant (p, v2);  /* replaces v, which is then no concern */
  espalier_project_set_modified (p, FALSE);
  espalier_variant_set_latency_us (v, 4.5);
  g_assert_false (espalier_project_get_modified (p));
  espalier_variant_set_latency_us (v2, 4.5);
  g_assert_true (espalier_project_get_modified (p));

  /* the trained weights are not part of the file */
  espalier_project_set_modified (p, FALSE);
  espalier_project_set_model (p, model_from_spec ("dense:2", 1));
  g_assert_nonnull (espalier_project_get_model (p));
  g_assert_false (espalier_project_get_modified (p));
  espalier_project_set_model (p, NULL);

  g_signal_handlers_disconnect_by_data (p, &s);
  g_assert_finalize_object (g_steal_pointer (&p));
}

/* The dataset sets the doc's input and classes, and the source. */
static void
test_dataset (void)
{
  g_autoptr(EspalierProject) p = espalier_project_new ();
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions lo;

  dtu_options_no_cache (&lo);
  ds = espalier_dataset_load ("moons:n=50,seed=2", &lo, NULL, &error);
  g_assert_no_error (error);
  espalier_project_set_dataset (p, ds, &lo);
  g_assert_true (espalier_project_get_dataset (p) == ds);
  g_assert_cmpstr (espalier_project_get_dataset_source (p), ==, espalier_dataset_get_source (ds));
  g_assert_false (espalier_project_get_load_options (p)->use_cache);
  g_assert_cmpuint (espalier_model_doc_get_n_outputs (espalier_project_get_model_doc (p)), ==, 2);
  g_assert_cmpint (espalier_model_doc_get_input (espalier_project_get_model_doc (p))->dims[0],
                   ==, 2);
  g_assert_true (espalier_project_get_modified (p));
  espalier_project_set_dataset (p, NULL, NULL);
  g_assert_null (espalier_project_get_dataset (p));
}

static gboolean
dir_holds_only (const char *dir, const char *name)
{
  g_autoptr(GDir) d = g_dir_open (dir, 0, NULL);
  const char *n;
  gboolean ok = TRUE;

  while ((n = g_dir_read_name (d)) != NULL)
    if (strcmp (n, name) != 0)
      {
        g_test_message ("left behind: %s", n);
        ok = FALSE;
      }
  return ok;
}

static void
test_atomic_save (void)
{
  g_autoptr(EspalierProject) p = make_project ();
  g_autoptr(EspalierProject) q = NULL;
  g_autoptr(GFile) file = tmp_file ("a.espalier");
  g_autoptr(GFile) parent = g_file_get_parent (file);
  g_autoptr(GFile) nowhere = NULL;
  g_autofree char *dir = g_file_get_path (parent);
  g_autofree char *path = g_file_get_path (file);
  g_autofree char *missing = NULL;
  g_autoptr(GError) error = NULL;

  g_assert_true (g_file_set_contents (path, "old contents", -1, NULL));
  g_assert_true (espalier_project_save (p, file, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (dir_holds_only (dir, "a.espalier"));
  q = espalier_project_load (file, NULL, &error);
  g_assert_no_error (error);
  assert_projects_equal (p, q);

  /* a directory that is not there: an error, nothing left, the project unchanged */
  espalier_project_set_modified (p, TRUE);
  missing = g_build_filename (dir, "no", "such", "x.espalier", NULL);
  nowhere = g_file_new_for_path (missing);
  g_assert_false (espalier_project_save (p, nowhere, NULL, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  g_clear_error (&error);
  g_assert_true (espalier_project_get_modified (p));
  g_assert_true (g_file_equal (espalier_project_get_file (p), file));
  g_assert_true (dir_holds_only (dir, "a.espalier"));

  /* what load would refuse is not written */
  {
    EspalierTrainOptions to = *espalier_project_get_train_options (p);

    to.batch_size = 0;
    espalier_project_set_train_options (p, &to);
    g_assert_false (espalier_project_save (p, file, NULL, &error));
    dtu_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID, "training.batch_size", NULL);
    g_clear_error (&error);
    g_assert_true (dir_holds_only (dir, "a.espalier"));
    to.batch_size = 16;
    espalier_project_set_train_options (p, &to);
  }

  /* cancelled before it starts */
  {
    g_autoptr(GCancellable) cancel = g_cancellable_new ();

    g_cancellable_cancel (cancel);
    g_assert_false (espalier_project_save (p, file, cancel, &error));
    g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
    g_clear_error (&error);
    g_assert_true (dir_holds_only (dir, "a.espalier"));
  }
}

/* ------------------------------------------------------------------------------------ */
/* Corrupt files */

typedef void (*Corrupt) (JsonObject *root);

static JsonObject *
obj_at (JsonObject *root, const char *path)
{
  g_auto(GStrv) parts = g_strsplit (path, ".", -1);
  JsonObject *o = root;

  for (char **p = parts; *p != NULL; p++)
    {
      char *bracket = strchr (*p, '[');

      if (bracket != NULL)
        {
          guint index = (guint) g_ascii_strtoull (bracket + 1, NULL, 10);

          *bracket = '\0';
          o = json_array_get_object_element (json_object_get_array_member (o, *p), index);
        }
      else
        o = json_object_get_object_member (o, *p);
    }
  return o;
}

static void
c_epochs_string (JsonObject *root)
{
  json_object_set_string_member (obj_at (root, "training"), "epochs", "ten");
}

static void
c_history_type (JsonObject *root)
{
  json_object_set_boolean_member (obj_at (root, "runs[0].history[1]"), "train_loss", TRUE);
}

static void
c_input_type (JsonObject *root)
{
  json_object_set_string_member (obj_at (root, "model"), "input", "a");
}

static void
c_bad_base64 (JsonObject *root)
{
  json_object_set_string_member (obj_at (root, "variants[0]"), "weights", "AAAA@@@@");
}

static void
c_sha_mismatch (JsonObject *root)
{
  char zeros[65];

  memset (zeros, '0', 64);
  zeros[64] = '\0';
  json_object_set_string_member (obj_at (root, "variants[1]"), "sha256", zeros);
}

/* valid base64 with a matching checksum, but 4 bytes short */
static void
c_short_weights (JsonObject *root)
{
  JsonObject *v = obj_at (root, "variants[1]");
  gsize len;
  g_autofree guint8 *bytes = g_base64_decode (json_object_get_string_member (v, "weights"), &len);
  g_autofree char *text = g_base64_encode (bytes, len - 4);
  g_autofree char *sum = g_compute_checksum_for_data (G_CHECKSUM_SHA256, bytes, len - 4);

  json_object_set_string_member (v, "weights", text);
  json_object_set_string_member (v, "sha256", sum);
}

static void
c_missing_dataset (JsonObject *root)
{
  json_object_remove_member (root, "dataset");
}

static void
c_missing_run_lr (JsonObject *root)
{
  json_object_remove_member (obj_at (root, "runs[1].options"), "lr");
}

static void
c_missing_sha (JsonObject *root)
{
  json_object_remove_member (obj_at (root, "variants[0]"), "sha256");
}

static void
c_format (JsonObject *root)
{
  json_object_set_string_member (root, "format", "espalier-model");
}

static void
c_version (JsonObject *root)
{
  json_object_set_int_member (root, "version", 99);
}

static void
c_model_spec (JsonObject *root)
{
  json_object_set_string_member (obj_at (root, "model"), "spec", "dense:abc");
}

static void
c_variant_spec (JsonObject *root)
{
  json_object_set_string_member (obj_at (root, "variants[0]"), "spec", "conv2d:4:3");
}

static void
c_accuracy (JsonObject *root)
{
  json_object_set_double_member (obj_at (root, "variants[1]"), "accuracy", -0.5);
}

static void
c_duplicate_variant (JsonObject *root)
{
  json_object_set_string_member (obj_at (root, "variants[1]"), "name", "baseline");
}

static void
c_kind (JsonObject *root)
{
  json_object_set_string_member (obj_at (root, "variants[1]"), "kind", "magic");
}

static void
c_confusion (JsonObject *root)
{
  JsonArray *rows = json_object_get_array_member (obj_at (root, "runs[0].test"), "confusion");

  json_array_remove_element (rows, 2);
}

static void
c_csv_header (JsonObject *root)
{
  json_object_set_string_member (obj_at (root, "dataset.options"), "csv_header", "sometimes");
}

static void
c_orphan_spec (JsonObject *root)
{
  json_object_set_string_member (obj_at (root, "variants[2]"), "spec", "dense:3");
}

static void
c_runs_type (JsonObject *root)
{
  json_object_set_int_member (root, "runs", 3);
}

static const struct {
  const char *name;
  Corrupt     corrupt;
  const char *field;
  const char *also;
} corruptions[] = {
  { "epochs-string", c_epochs_string, "training.epochs", "integer" },
  { "history-type", c_history_type, "runs[0].history[1].train_loss", "number" },
  { "input-type", c_input_type, "model.input", "array" },
  { "bad-base64", c_bad_base64, "variants[0].weights", "base64" },
  { "sha-mismatch", c_sha_mismatch, "variants[1]", "SHA-256" },
  { "short-weights", c_short_weights, "variants[1].weights", "bytes" },
  { "missing-dataset", c_missing_dataset, "dataset", "missing" },
  { "missing-run-lr", c_missing_run_lr, "runs[1].options.lr", "missing" },
  { "missing-sha", c_missing_sha, "variants[0].sha256", "missing" },
  { "format", c_format, "format", "espalier-project" },
  { "version", c_version, "version", "99" },
  { "model-spec", c_model_spec, "model.spec", "abc" },
  { "variant-spec", c_variant_spec, "variants[0].spec", "(C, H, W)" },
  { "accuracy", c_accuracy, "variants[1].accuracy", "outside" },
  { "duplicate-variant", c_duplicate_variant, "variants[1].name", "baseline" },
  { "kind", c_kind, "variants[1].kind", "magic" },
  { "confusion", c_confusion, "runs[0].test.confusion", "rows" },
  { "csv-header", c_csv_header, "dataset.options.csv_header", "sometimes" },
  { "orphan-spec", c_orphan_spec, "variants[2].spec", "weights" },
  { "runs-type", c_runs_type, "runs", "array" },
};

static char *
saved_text (void)
{
  g_autoptr(EspalierProject) p = make_project ();
  g_autoptr(GFile) file = tmp_file ("base.espalier");
  g_autoptr(GError) error = NULL;
  char *text = NULL;

  g_assert_true (espalier_project_save (p, file, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (g_file_load_contents (file, NULL, &text, NULL, NULL, &error));
  return text;
}

static void
assert_load_fails (const char *text, gssize len, const char *field, const char *also)
{
  g_autoptr(GFile) file = tmp_file ("bad.espalier");
  g_autofree char *path = g_file_get_path (file);
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierProject) p = NULL;

  g_assert_true (g_file_set_contents (path, text, len, NULL));
  p = espalier_project_load (file, NULL, &error);
  g_assert_null (p);
  dtu_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_FORMAT, path, field, also, NULL);
}

static void
test_corrupt (gconstpointer data)
{
  guint which = GPOINTER_TO_UINT (data);
  g_autofree char *text = saved_text ();
  g_autoptr(JsonNode) root = json_from_string (text, NULL);
  g_autofree char *bad = NULL;

  g_assert_nonnull (root);
  corruptions[which].corrupt (json_node_get_object (root));
  bad = espalier_json_to_text (root, TRUE);
  assert_load_fails (bad, -1, corruptions[which].field, corruptions[which].also);
}

static void
test_corrupt_text (void)
{
  g_autofree char *text = saved_text ();
  g_autoptr(GFile) missing = tmp_file ("missing.espalier");
  g_autoptr(GError) error = NULL;

  assert_load_fails (text, (gssize) strlen (text) / 2, "", "not valid JSON");
  assert_load_fails ("[1, 2]", -1, "", "not a JSON object");
  assert_load_fails ("{\"format\": \"espalier-pro\xff\"}", -1, "", "UTF-8");
  assert_load_fails ("", 0, "", "JSON");
  g_assert_null (espalier_project_load (missing, NULL, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
}

/* ------------------------------------------------------------------------------------ */
/* Optimized variants: formats, quantizations and measurements */

/* make_project's variants, then (from variants[3]) one of each quantized format with
 * measurements, and a quantized variant saved without weights. */
static EspalierProject *
make_optimized_project (void)
{
  static const EsQuantMode modes[] = { ES_QUANT_INT8_STATIC, ES_QUANT_INT8_DYNAMIC,
                                       ES_QUANT_FP16, ES_QUANT_BF16 };
  EspalierProject *p = make_project ();
  g_autoptr(EspalierVariant) bare = NULL;

  for (gsize i = 0; i < G_N_ELEMENTS (modes); i++)
    {
      g_autoptr(EspalierVariant) v = NULL;
      EsModel *m = model_from_spec (i == 3 ? "dense:8,batchnorm,relu,dense:3"
                                           : "dense:8,relu,dense:3", 30 + i);
      EspalierLatency lat = {
        .median_us = 1.5 + i, .p95_us = 2.75 + i, .rows_per_second = 1e6 / 3.0,
        .dense_us = i == 1 ? 1.0 / 3.0 : NAN, .sparse_us = i == 1 ? 0.25 : NAN,
        .exec = i < 2 ? ES_EXEC_INT8 : ES_EXEC_DENSE,
      };

      v = espalier_variant_new (es_quant_mode_name (modes[i]), "quantized", m);
      espalier_variant_set_quant (v, qtu_quant (m, modes[i], NULL, 40 + i));
      espalier_variant_set_parent (v, "baseline");
      espalier_variant_set_accuracy (v, 0.875);
      if (i != 2)
        espalier_variant_set_latency (v, &lat);
      espalier_project_add_variant (p, v);
    }
  bare = espalier_variant_new ("bare int8", "quantized", NULL);
  g_object_set (bare, "format", "int8-dynamic", "exec", "int8", "rows-per-second", 12.5, NULL);
  espalier_project_add_variant (p, bare);
  return p;
}

static void
test_optimized_round_trip (void)
{
  g_autoptr(EspalierProject) p = make_optimized_project ();
  g_autoptr(EspalierProject) q = NULL, r = NULL;
  g_autoptr(GFile) file = tmp_file ("optimized.espalier");
  g_autoptr(GFile) again = tmp_file ("optimized-again.espalier");
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierVariant) v = NULL;

  g_assert_true (espalier_project_save (p, file, NULL, &error));
  g_assert_no_error (error);
  q = espalier_project_load (file, NULL, &error);
  g_assert_no_error (error);
  assert_projects_equal (p, q);

  /* the static int8 variant as it came back */
  v = g_list_model_get_item (espalier_project_get_variants (q), 3);
  g_assert_cmpstr (espalier_variant_get_format (v), ==, "int8-static");
  g_assert_cmpstr (espalier_variant_get_exec (v), ==, "int8");
  g_assert_cmpuint (espalier_variant_get_size_bytes (v), ==,
                    es_quant_weight_bytes (espalier_variant_get_model (v),
                                           espalier_variant_get_quant (v)));
  g_clear_object (&v);
  v = g_list_model_get_item (espalier_project_get_variants (q), 7);
  g_assert_cmpstr (espalier_variant_get_format (v), ==, "int8-dynamic");
  g_assert_null (espalier_variant_get_model (v));

  g_assert_true (espalier_project_save (q, again, NULL, &error));
  g_assert_no_error (error);
  r = espalier_project_load (again, NULL, &error);
  g_assert_no_error (error);
  assert_projects_equal (p, r);
}

static char *
saved_optimized_text (void)
{
  g_autoptr(EspalierProject) p = make_optimized_project ();
  g_autoptr(GFile) file = tmp_file ("optimized-base.espalier");
  g_autoptr(GError) error = NULL;
  char *text = NULL;

  g_assert_true (espalier_project_save (p, file, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (g_file_load_contents (file, NULL, &text, NULL, NULL, &error));
  return text;
}

static void
q_in_zero (JsonObject *root)
{
  JsonArray *layers = json_object_get_array_member (obj_at (root, "variants[3].quantization"),
                                                    "layers");

  json_object_set_int_member (json_array_get_object_element (layers, 0), "in_zero", 300);
}

static void
q_sha (JsonObject *root)
{
  char zeros[65];

  memset (zeros, '0', 64);
  zeros[64] = '\0';
  json_object_set_string_member (obj_at (root, "variants[3].quantization"), "sha256", zeros);
}

/* Replace the int8 weights of variants[i] with `edit` of them, with a matching SHA-256. */
static void
set_quant_bytes (JsonObject *root, const char *path, gsize cut, gsize zero_at)
{
  JsonObject *q = obj_at (root, path);
  gsize len;
  g_autofree guint8 *bytes = g_base64_decode (json_object_get_string_member (q, "weights"), &len);
  g_autofree char *text = NULL, *sum = NULL;

  if (zero_at != G_MAXSIZE)
    memset (bytes + zero_at, 0, 4);
  text = g_base64_encode (bytes, len - cut);
  sum = g_compute_checksum_for_data (G_CHECKSUM_SHA256, bytes, len - cut);
  json_object_set_string_member (q, "weights", text);
  json_object_set_string_member (q, "sha256", sum);
}

static void q_short (JsonObject *root) { set_quant_bytes (root, "variants[4].quantization", 1, G_MAXSIZE); }
static void q_zero_scale (JsonObject *root) { set_quant_bytes (root, "variants[3].quantization", 0, 4); }
static void q_format (JsonObject *root) { json_object_set_string_member (obj_at (root, "variants[3]"), "format", "fp16"); }
static void q_float_format (JsonObject *root) { json_object_set_string_member (obj_at (root, "variants[0]"), "format", "bf16"); }
static void q_unknown_format (JsonObject *root) { json_object_set_string_member (obj_at (root, "variants[7]"), "format", "int4"); }
static void q_exec (JsonObject *root) { json_object_set_string_member (obj_at (root, "variants[4]"), "exec", "gpu"); }
static void q_rows (JsonObject *root) { json_object_set_double_member (obj_at (root, "variants[3]"), "rows_per_second", -1.0); }
static void q_p95_missing (JsonObject *root) { json_object_remove_member (obj_at (root, "variants[0]"), "latency_p95_us"); }
static void q_quant_missing (JsonObject *root) { json_object_remove_member (obj_at (root, "variants[1]"), "quantization"); }
static void q_mode (JsonObject *root) { json_object_set_string_member (obj_at (root, "variants[5].quantization"), "mode", "int2"); }

static void
q_bare_quant (JsonObject *root)
{
  JsonNode *copy = json_node_copy (json_object_get_member (obj_at (root, "variants[4]"),
                                                           "quantization"));

  json_object_set_member (obj_at (root, "variants[7]"), "quantization", copy);
}

static const struct {
  const char *name;
  Corrupt     corrupt;
  const char *field;
  const char *also;
} quant_corruptions[] = {
  { "in-zero", q_in_zero, "variants[3].quantization.layers[0].in_zero", "300" },
  { "quant-sha", q_sha, "variants[3].quantization", "SHA-256" },
  { "quant-short", q_short, "variants[4].quantization.weights", "bytes" },
  { "quant-scale", q_zero_scale, "variants[3].quantization.layers.0.weight_scale", "[1]" },
  { "format", q_format, "variants[3].format", "int8-static" },
  { "float-format", q_float_format, "variants[0].format", "fp32" },
  { "unknown-format", q_unknown_format, "variants[7].format", "int4" },
  { "exec", q_exec, "variants[4].exec", "gpu" },
  { "rows", q_rows, "variants[3].rows_per_second", "" },
  { "p95-missing", q_p95_missing, "variants[0].latency_p95_us", "missing" },
  { "quant-missing", q_quant_missing, "variants[1].quantization", "missing" },
  { "mode", q_mode, "variants[5].quantization.mode", "int2" },
  { "bare-quant", q_bare_quant, "variants[7].quantization", "weights" },
};

static void
test_optimized_corrupt (gconstpointer data)
{
  guint which = GPOINTER_TO_UINT (data);
  g_autofree char *text = saved_optimized_text ();
  g_autoptr(JsonNode) root = json_from_string (text, NULL);
  g_autofree char *bad = NULL;

  g_assert_nonnull (root);
  quant_corruptions[which].corrupt (json_node_get_object (root));
  bad = espalier_json_to_text (root, TRUE);
  assert_load_fails (bad, -1, quant_corruptions[which].field, quant_corruptions[which].also);
}

/* A version 1 file (no formats, figures or quantizations) still loads: float variants,
 * not measured beyond latency_us. */
static void
test_version_1 (void)
{
  static const char *const v2_fields[] = { "latency_p95_us", "rows_per_second",
                                           "dense_latency_us", "sparse_latency_us", "exec",
                                           "format", "quantization" };
  g_autoptr(EspalierProject) p = make_project ();
  g_autoptr(EspalierProject) q = NULL;
  g_autoptr(GFile) file = tmp_file ("v1.espalier");
  g_autofree char *path = g_file_get_path (file);
  g_autofree char *text = NULL, *old = NULL;
  g_autoptr(JsonNode) root = NULL;
  g_autoptr(GError) error = NULL;
  JsonArray *variants;

  g_assert_true (espalier_project_save (p, file, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (g_file_load_contents (file, NULL, &text, NULL, NULL, &error));
  root = json_from_string (text, NULL);
  json_object_set_int_member (json_node_get_object (root), "version", 1);
  variants = json_object_get_array_member (json_node_get_object (root), "variants");
  for (guint i = 0; i < json_array_get_length (variants); i++)
    for (gsize k = 0; k < G_N_ELEMENTS (v2_fields); k++)
      {
        JsonObject *v = json_array_get_object_element (variants, i);

        g_assert_true (json_object_has_member (v, v2_fields[k]));
        json_object_remove_member (v, v2_fields[k]);
      }
  old = espalier_json_to_text (root, TRUE);
  g_assert_true (g_file_set_contents (path, old, -1, NULL));

  q = espalier_project_load (file, NULL, &error);
  g_assert_no_error (error);
  assert_projects_equal (p, q);
}

/* ------------------------------------------------------------------------------------ */
/* Variants */

static guint notified;

static void
on_notify (GObject *obj, GParamSpec *pspec, gpointer data)
{
  notified++;
}

static void
test_variant_counts (void)
{
  g_autoptr(EspalierVariant) v = NULL;
  g_autoptr(GError) error = NULL;
  EsModel *m = model_from_spec ("dense:4,batchnorm,relu,dense:3", 1);
  gint64 n = es_model_n_params (m);

  g_assert_cmpint (n, ==, 2 * 4 + 4 + 2 * 4 + 4 * 3 + 3);
  for (gint64 i = 0; i < n; i++)
    es_model_params (m)[i] = i < 9 ? 0.0f : 0.5f;
  v = espalier_variant_new ("pruned", "pruned", m);
  g_assert_cmpint (espalier_variant_get_n_params (v), ==, n);
  g_assert_cmpint (espalier_variant_get_nonzeros (v), ==, n - 9);
  g_assert_cmpfloat_with_epsilon (espalier_variant_get_sparsity (v), 9.0 / n, 1e-12);
  g_assert_cmpuint (espalier_variant_get_size_bytes (v), ==, 4 * (n + 8));
  g_assert_cmpint (espalier_variant_get_flops (v), ==, es_model_flops (m));
  g_assert_true (isnan (espalier_variant_get_accuracy (v)));
  g_assert_true (isnan (espalier_variant_get_latency_us (v)));
  g_assert_null (espalier_variant_get_parent (v));

  g_signal_connect (v, "notify", G_CALLBACK (on_notify), NULL);
  notified = 0;
  espalier_variant_set_accuracy (v, 0.75);
  espalier_variant_set_accuracy (v, 0.75);
  espalier_variant_set_name (v, "pruned");
  g_assert_cmpuint (notified, ==, 1);
  g_assert_cmpfloat (espalier_variant_get_accuracy (v), ==, 0.75);

  g_assert_true (espalier_variant_measure_latency (v, 1, 0.05, &error));
  g_assert_no_error (error);
  g_test_message ("latency %.3f us", espalier_variant_get_latency_us (v));
  g_assert_true (isfinite (espalier_variant_get_latency_us (v)));
  g_assert_cmpfloat (espalier_variant_get_latency_us (v), >, 0.0);

  /* new weights, new counts */
  espalier_variant_set_model (v, model_from_spec ("dense:3", 1));
  g_assert_cmpint (espalier_variant_get_n_params (v), ==, 9);
  g_assert_cmpint (espalier_variant_get_nonzeros (v), ==, 6);   /* biases start at zero */
  g_assert_cmpuint (espalier_variant_get_size_bytes (v), ==, 36);

  espalier_variant_set_model (v, NULL);
  g_assert_cmpint (espalier_variant_get_n_params (v), ==, 0);
  g_assert_cmpfloat (espalier_variant_get_sparsity (v), ==, 0.0);
  g_assert_false (espalier_variant_measure_latency (v, 1, 0.05, &error));
  g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
  g_signal_handlers_disconnect_by_func (v, on_notify, NULL);
}

/* ------------------------------------------------------------------------------------ */
/* The trainer's snapshots and validation metrics */

typedef struct {
  guint epochs, step_snapshots, steps;
  guint val_rows;
  gboolean val_expected;
  EsModel *last;           /* copy of the last epoch's snapshot */
  GThread *thread;
} Progress;

static void
on_progress (const EspalierProgress *p, gpointer data)
{
  Progress *pr = data;

  g_assert_true (pr->thread == NULL || g_thread_self () == pr->thread);
  if (p->kind == ESPALIER_PROGRESS_STEP)
    {
      pr->steps++;
      pr->step_snapshots += p->snapshot != NULL;
    }
  else if (p->kind == ESPALIER_PROGRESS_EPOCH)
    {
      pr->epochs++;
      g_assert_nonnull (p->snapshot);
      g_clear_pointer (&pr->last, es_model_free);
      pr->last = es_model_copy (p->snapshot);
      if (pr->val_expected)
        {
          guint64 sum = 0;

          g_assert_nonnull (p->val_metrics);
          g_assert_nonnull (p->val_metrics->confusion);
          g_assert_cmpuint (p->val_metrics->rows, ==, pr->val_rows);
          for (guint i = 0; i < p->val_metrics->n_classes * p->val_metrics->n_classes; i++)
            sum += p->val_metrics->confusion[i];
          g_assert_cmpuint (sum, ==, pr->val_rows);
          g_assert_cmpfloat (p->val_metrics->accuracy, ==, p->record->val_accuracy);
        }
      else
        g_assert_null (p->val_metrics);
    }
  else
    g_assert_null (p->snapshot);
}

static void
on_done (GObject *source, GAsyncResult *result, gpointer data)
{
  GAsyncResult **out = data;

  *out = g_object_ref (result);
}

/* Train the playground model 3 epochs on ds with on_progress checking every record. */
static void
train (EspalierDataset *ds, double val_fraction, double interval, gboolean async,
       Progress *pr)
{
  g_autoptr(EspalierTrainer) tr = NULL;
  g_autoptr(GError) error = NULL;
  EspalierTrainOptions opts;
  EspalierSplit *split;
  EsModel *model;
  EsShape in = { .rank = 1, .dims = { 2 } };

  model = espalier_model_from_template ("playground", &in, 3, &opts, &error);
  g_assert_no_error (error);
  opts.epochs = 3;
  opts.val_fraction = val_fraction;
  opts.test_fraction = 0.0;
  memset (pr, 0, sizeof *pr);
  pr->val_expected = val_fraction > 0;
  pr->thread = g_thread_self ();
  /* the trainer's own split, for the validation row count */
  split = espalier_split_new (ds, opts.val_fraction, opts.test_fraction, opts.seed, &error);
  g_assert_no_error (error);
  pr->val_rows = split->val->len;
  espalier_split_free (split);

  tr = espalier_trainer_new (ds, model, &opts);
  espalier_trainer_set_snapshot_interval (tr, interval);
  if (async)
    {
      g_autoptr(GAsyncResult) result = NULL;

      espalier_trainer_run_async (tr, NULL, on_progress, pr, NULL, on_done, &result);
      while (result == NULL)
        g_main_context_iteration (NULL, TRUE);
      while (g_main_context_pending (NULL))
        g_main_context_iteration (NULL, FALSE);
      g_assert_true (espalier_trainer_run_finish (tr, result, &error));
    }
  else
    g_assert_true (espalier_trainer_run (tr, NULL, on_progress, pr, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (pr->epochs, ==, 3);
  g_assert_cmpuint (pr->steps, >, 0);
  g_assert_nonnull (pr->last);
  /* the last epoch's snapshot holds the final weights */
  g_assert_cmpmem (es_model_params (pr->last), es_model_n_params (pr->last) * 4,
                   es_model_params (model), es_model_n_params (model) * 4);
  g_clear_pointer (&pr->last, es_model_free);
  g_clear_object (&tr);
  es_model_free (model);
}

static EspalierDataset *
spiral (void)
{
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions lo;
  EspalierDataset *ds;

  dtu_options_no_cache (&lo);
  ds = espalier_dataset_load ("spiral:n=150,arms=3,noise=0.2,seed=1", &lo, NULL, &error);
  g_assert_no_error (error);
  return ds;
}

/* Without an interval: snapshots at epoch ends only. */
static void
test_trainer_snapshots (void)
{
  g_autoptr(EspalierDataset) ds = spiral ();
  Progress pr;

  train (ds, 0.2, 0.0, FALSE, &pr);
  g_assert_cmpuint (pr.step_snapshots, ==, 0);
}

/* With an interval, steps carry snapshots too. */
static void
test_trainer_interval (void)
{
  g_autoptr(EspalierDataset) ds = spiral ();
  Progress pr;

  train (ds, 0.2, 1e-6, FALSE, &pr);
  g_assert_cmpuint (pr.step_snapshots, >, 0);
  g_assert_cmpuint (pr.step_snapshots, <=, pr.steps);
}

static void
test_trainer_no_val (void)
{
  g_autoptr(EspalierDataset) ds = spiral ();
  Progress pr;

  train (ds, 0.0, 0.0, FALSE, &pr);
}

/* Through the main context: the records are copies that live until delivered. */
static void
test_trainer_async (void)
{
  g_autoptr(EspalierDataset) ds = spiral ();
  Progress pr;

  train (ds, 0.2, 1e-6, TRUE, &pr);
  g_assert_cmpuint (pr.step_snapshots, >, 0);
}

/* ------------------------------------------------------------------------------------ */
/* Loading a dataset on a worker thread */

static EspalierDataset *
load_async (const char *spec, const EspalierLoadOptions *lo, GError **error)
{
  g_autoptr(GAsyncResult) result = NULL;

  espalier_dataset_load_async (spec, lo, NULL, on_done, &result);
  while (result == NULL)
    g_main_context_iteration (NULL, TRUE);
  return espalier_dataset_load_finish (result, error);
}

static void
test_dataset_async (void)
{
  g_autoptr(EspalierDataset) sync = NULL, async = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *csv = dtu_write_text (dir, "t.csv", "a,b,kind\n1,2,x\n3,4,y\n5,6,x\n");
  EspalierLoadOptions lo;
  char *column = g_strdup ("kind");

  dtu_options_no_cache (&lo);
  sync = espalier_dataset_load ("spiral:n=90,seed=4", &lo, NULL, &error);
  g_assert_no_error (error);
  async = load_async ("spiral:n=90,seed=4", &lo, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_n_rows (async), ==, espalier_dataset_get_n_rows (sync));
  g_assert_cmpuint (espalier_dataset_get_row_size (async), ==,
                    espalier_dataset_get_row_size (sync));
  g_assert_cmpstr (espalier_dataset_get_source (async), ==, espalier_dataset_get_source (sync));
  g_assert_cmpmem (espalier_dataset_get_f32 (async), 90 * 2 * 4, espalier_dataset_get_f32 (sync),
                   90 * 2 * 4);
  g_assert_cmpmem (espalier_dataset_get_labels (async), 90 * 4, espalier_dataset_get_labels (sync),
                   90 * 4);
  g_clear_object (&async);

  /* the options' strings are copied: freed right after the call, still used right */
  {
    g_autoptr(GAsyncResult) result = NULL;

    lo.label_column = column;
    espalier_dataset_load_async (csv, &lo, NULL, on_done, &result);
    memset (column, 'z', strlen (column));
    g_free (column);
    lo.label_column = NULL;
    while (result == NULL)
      g_main_context_iteration (NULL, TRUE);
    async = espalier_dataset_load_finish (result, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (espalier_dataset_get_n_classes (async), ==, 2);
    g_assert_cmpuint (espalier_dataset_get_row_size (async), ==, 2);
  }

  /* errors come back as they do from the sync call */
  g_clear_object (&async);
  async = load_async ("/nonexistent/file.csv", &lo, &error);
  g_assert_null (async);
  g_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_NOT_FOUND);
}

int
main (int argc, char **argv)
{
  dtu_init (&argc, &argv);
  g_test_add_func ("/core/project/round-trip", test_round_trip);
  g_test_add_func ("/core/project/modified", test_modified);
  g_test_add_func ("/core/project/dataset", test_dataset);
  g_test_add_func ("/core/project/atomic-save", test_atomic_save);
  g_test_add_func ("/core/project/corrupt/text", test_corrupt_text);
  for (guint i = 0; i < G_N_ELEMENTS (corruptions); i++)
    {
      g_autofree char *path = g_strdup_printf ("/core/project/corrupt/%s", corruptions[i].name);

      g_test_add_data_func (path, GUINT_TO_POINTER (i), test_corrupt);
    }
  g_test_add_func ("/core/project/optimized/round-trip", test_optimized_round_trip);
  for (guint i = 0; i < G_N_ELEMENTS (quant_corruptions); i++)
    {
      g_autofree char *path = g_strdup_printf ("/core/project/optimized/corrupt/%s",
                                               quant_corruptions[i].name);

      g_test_add_data_func (path, GUINT_TO_POINTER (i), test_optimized_corrupt);
    }
  g_test_add_func ("/core/project/version-1", test_version_1);
  g_test_add_func ("/core/variant/counts", test_variant_counts);
  g_test_add_func ("/core/trainer/snapshots", test_trainer_snapshots);
  g_test_add_func ("/core/trainer/interval", test_trainer_interval);
  g_test_add_func ("/core/trainer/no-validation", test_trainer_no_val);
  g_test_add_func ("/core/trainer/async-snapshots", test_trainer_async);
  g_test_add_func ("/core/dataset/load-async", test_dataset_async);
  return dtu_finish (g_test_run ());
}
