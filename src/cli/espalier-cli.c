/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-cli.c: the headless front end over core: train, eval, info, datasets, bench, devices,
 * the optimization commands prune, quantize, reduce, sensitivity and compare, which
 * make measured variants of a saved model (espalier-optimize.h), profile (where a
 * training step's time goes, and the advisor's remedies), and export (ONNX,
 * safetensors + JSON, C source) and import (ONNX) of model files. Output is a progress
 * bar with ETA on a terminal, plain lines otherwise, or one JSON object per event with
 * --json. Exit status: 0 success, 1 failure, 2 bad usage. Ctrl-C stops training or
 * fine-tuning at the end of the current step and writes nothing. Under mpirun, train
 * --distributed trains data-parallel (espalier-distributed.h): rank 0 alone prints and
 * writes. */
#include "config.h"

#include <fcntl.h>
#include <glib-unix.h>
#include <glib/gi18n.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "es-backend.h"
#include "es-train.h"
#include "espalier-c-export.h"
#include "espalier-ceilings.h"
#include "espalier-dataset.h"
#include "espalier-device.h"
#include "espalier-distributed.h"
#include "espalier-error.h"
#include "espalier-model-file.h"
#include "espalier-onnx.h"
#include "espalier-optimize.h"
#include "espalier-profile-report.h"
#include "espalier-split.h"
#include "espalier-templates.h"
#include "espalier-trainer.h"

#define EXIT_USAGE 2

/* How a command prints: --json, a terminal (progress bar), or plain lines. */
typedef enum { OUT_PLAIN, OUT_TTY, OUT_JSON } OutMode;

static OutMode out_mode = OUT_PLAIN;

static void
emit_json (JsonBuilder *b)
{
  g_autoptr(JsonGenerator) gen = json_generator_new ();
  g_autoptr(JsonNode) root = json_builder_get_root (b);
  g_autofree char *text = NULL;

  json_generator_set_root (gen, root);
  text = json_generator_to_data (gen, NULL);
  printf ("%s\n", text);
  fflush (stdout);
}

static JsonBuilder *
json_event (const char *event)
{
  JsonBuilder *b = json_builder_new ();

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "event");
  json_builder_add_string_value (b, event);
  return b;
}

static void
json_double (JsonBuilder *b, const char *name, double v)
{
  json_builder_set_member_name (b, name);
  if (isfinite (v))
    json_builder_add_double_value (b, v);
  else
    json_builder_add_null_value (b);
}

static void
json_int (JsonBuilder *b, const char *name, gint64 v)
{
  json_builder_set_member_name (b, name);
  json_builder_add_int_value (b, v);
}

static void
json_str (JsonBuilder *b, const char *name, const char *v)
{
  json_builder_set_member_name (b, name);
  if (v != NULL)
    json_builder_add_string_value (b, v);
  else
    json_builder_add_null_value (b);
}

static void
json_finish (JsonBuilder *b)
{
  json_builder_end_object (b);
  emit_json (b);
  g_object_unref (b);
}

/* Say what went wrong, in the chosen output mode. what: an N_() phrase, translated for
 * people and kept as it is in JSON. */
static int
fail (GError *error, const char *what)
{
  if (out_mode == OUT_JSON)
    {
      JsonBuilder *b = json_event ("error");
      json_str (b, "message", error->message);
      json_str (b, "while", what);   /* untranslated: for scripts */
      json_finish (b);
    }
  else
    {
      if (out_mode == OUT_TTY)
        fputs ("\r\033[K", stderr);
      /* TRANSLATORS: "espalier-cli: loading the dataset: <the error>" */
      g_printerr (_("espalier-cli: %s: %s\n"), _(what), error->message);
    }
  g_error_free (error);
  return 1;
}

static int
usage_error (GOptionContext *ctx, const char *fmt, ...) G_GNUC_PRINTF (2, 3);

static int
usage_error (GOptionContext *ctx, const char *fmt, ...)
{
  va_list ap;
  g_autofree char *msg = NULL;

  va_start (ap, fmt);
  msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_printerr (_("espalier-cli: %s\n"), msg);
  if (ctx != NULL)
    g_printerr (_("Try '%s --help'.\n"), g_get_prgname ());
  return EXIT_USAGE;
}

/* ------------------------------------------------------------------------------ */
/* options shared by commands */

typedef struct {
  char     *data;
  char     *label;
  gboolean  ffill, mean_fill, drop_dup, standardize, minmax, no_cache, one_hot;
} DataOpts;

static void
data_opts_clear (DataOpts *d)
{
  g_clear_pointer (&d->data, g_free);
  g_clear_pointer (&d->label, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (DataOpts, data_opts_clear)

static GOptionEntry *
data_entries (DataOpts *d)
{
  GOptionEntry entries[] = {
    { "data", 'd', 0, G_OPTION_ARG_STRING, &d->data,
      _("Dataset: fashion-mnist, a generator (spiral, moons, circles, xor, blobs, with "
        "options like spiral:n=300,arms=3,noise=0.2,seed=1), or an IDX or CSV file"), "SPEC" },
    { "label", 0, 0, G_OPTION_ARG_STRING, &d->label, _("CSV label column, by name or index (default: the last)"), "COL" },
    { "one-hot", 0, 0, G_OPTION_ARG_NONE, &d->one_hot, _("One-hot encode non-numeric CSV columns instead of refusing them"), NULL },
    { "ffill", 0, 0, G_OPTION_ARG_NONE, &d->ffill, _("Fill missing values from the row above"), NULL },
    { "mean-fill", 0, 0, G_OPTION_ARG_NONE, &d->mean_fill, _("Fill missing values with the column mean"), NULL },
    { "drop-duplicates", 0, 0, G_OPTION_ARG_NONE, &d->drop_dup, _("Drop duplicate rows"), NULL },
    { "standardize", 0, 0, G_OPTION_ARG_NONE, &d->standardize, _("Z-score features with the training split's statistics"), NULL },
    { "minmax", 0, 0, G_OPTION_ARG_NONE, &d->minmax, _("Scale features to 0..1"), NULL },
    { "no-cache", 0, 0, G_OPTION_ARG_NONE, &d->no_cache, _("Do not read or write the dataset cache"), NULL },
    { NULL }
  };
  return g_memdup2 (entries, sizeof entries);
}

/* The preprocessing a model was trained with, kept in its file as a JSON object, so
 * eval and --init see the data the same way. */
static char *
data_opts_to_json (const DataOpts *d)
{
  g_autoptr(JsonBuilder) b = json_builder_new ();
  g_autoptr(JsonGenerator) gen = json_generator_new ();
  g_autoptr(JsonNode) root = NULL;

  json_builder_begin_object (b);
  if (d->label != NULL)
    {
      json_builder_set_member_name (b, "label_column");
      json_builder_add_string_value (b, d->label);
    }
#define FLAG(name, v) json_builder_set_member_name (b, name); json_builder_add_boolean_value (b, v)
  FLAG ("one_hot", d->one_hot);
  FLAG ("ffill", d->ffill);
  FLAG ("mean_fill", d->mean_fill);
  FLAG ("drop_duplicates", d->drop_dup);
  FLAG ("standardize", d->standardize);
  FLAG ("minmax", d->minmax);
#undef FLAG
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  return json_generator_to_data (gen, NULL);
}

/* Take the saved preprocessing when the user named no dataset of their own. */
static void
data_opts_from_json (DataOpts *d, const char *text)
{
  g_autoptr(JsonParser) parser = json_parser_new ();
  JsonObject *o;

  if (text == NULL || d->data != NULL || !json_parser_load_from_data (parser, text, -1, NULL)
      || !JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)))
    return;
  o = json_node_get_object (json_parser_get_root (parser));
  if (d->label == NULL && json_object_has_member (o, "label_column"))
    d->label = g_strdup (json_object_get_string_member (o, "label_column"));
  d->one_hot |= json_object_get_boolean_member_with_default (o, "one_hot", FALSE);
  d->ffill |= json_object_get_boolean_member_with_default (o, "ffill", FALSE);
  d->mean_fill |= json_object_get_boolean_member_with_default (o, "mean_fill", FALSE);
  d->drop_dup |= json_object_get_boolean_member_with_default (o, "drop_duplicates", FALSE);
  d->standardize |= json_object_get_boolean_member_with_default (o, "standardize", FALSE);
  d->minmax |= json_object_get_boolean_member_with_default (o, "minmax", FALSE);
}

static const char *
default_data (void)
{
  return espalier_dataset_fashion_mnist_available () ? "fashion-mnist" : "spiral";
}

static EspalierDataset *
load_data (DataOpts *d, const char *fallback, double val, double test, guint64 seed, GError **error)
{
  EspalierLoadOptions lo;
  const char *spec = d->data ? d->data : fallback ? fallback : default_data ();
  EspalierDataset *ds;

  espalier_load_options_init (&lo);
  lo.label_column = d->label;
  lo.one_hot = d->one_hot;
  lo.ffill = d->ffill;
  lo.mean_fill = d->mean_fill;
  lo.drop_duplicates = d->drop_dup;
  lo.standardize = d->standardize;
  lo.minmax = d->minmax;
  lo.use_cache = !d->no_cache;
  lo.val_fraction = val;
  lo.test_fraction = test;
  lo.split_seed = seed;
  ds = espalier_dataset_load (spec, &lo, NULL, error);
  if (ds == NULL)
    return NULL;
  if (out_mode == OUT_JSON)
    {
      GPtrArray *report = espalier_dataset_get_report (ds);
      JsonBuilder *b = json_event ("dataset");

      json_str (b, "name", espalier_dataset_get_name (ds));
      json_str (b, "source", espalier_dataset_get_source (ds));
      json_int (b, "rows", espalier_dataset_get_n_rows (ds));
      json_int (b, "row_size", espalier_dataset_get_row_size (ds));
      json_int (b, "classes", espalier_dataset_get_n_classes (ds));
      json_builder_set_member_name (b, "cached");
      json_builder_add_boolean_value (b, espalier_dataset_is_from_cache (ds));
      json_builder_set_member_name (b, "preprocessing");
      json_builder_begin_array (b);
      for (guint i = 0; report != NULL && i < report->len; i++)
        json_builder_add_string_value (b, g_ptr_array_index (report, i));
      json_builder_end_array (b);
      json_finish (b);
    }
  else
    {
      GPtrArray *report = espalier_dataset_get_report (ds);

      g_print (_("Dataset %s: %u rows of %u values, %u classes%s\n"),
               espalier_dataset_get_name (ds), espalier_dataset_get_n_rows (ds),
               espalier_dataset_get_row_size (ds), espalier_dataset_get_n_classes (ds),
               espalier_dataset_is_from_cache (ds) ? _(" (from cache)") : "");
      for (guint i = 0; report != NULL && i < report->len; i++)
        g_print ("  %s\n", (const char *) g_ptr_array_index (report, i));
    }
  return ds;
}

static EsShape
dataset_shape (EspalierDataset *ds)
{
  EsShape s = { 0 };
  const guint *dims = espalier_dataset_get_dims (ds);

  s.rank = (int) espalier_dataset_get_rank (ds);
  for (int i = 0; i < s.rank && i < ES_MAX_RANK; i++)
    s.dims[i] = (int) dims[i];
  return s;
}

static guint
dataset_outputs (EspalierDataset *ds)
{
  return espalier_dataset_get_n_classes (ds) ? espalier_dataset_get_n_classes (ds)
                                             : espalier_dataset_get_n_targets (ds);
}

static gboolean
parse_size (const char *text, gsize *out)
{
  char *end;
  double v = g_ascii_strtod (text, &end);

  if (end == text || !isfinite (v) || v < 0)
    return FALSE;
  switch (g_ascii_toupper (*end))
    {
    case 'K': v *= 1024; end++; break;
    case 'M': v *= 1024 * 1024; end++; break;
    case 'G': v *= 1024.0 * 1024 * 1024; end++; break;
    case '\0': break;
    default: return FALSE;
    }
  if (*end == 'B' || *end == 'b')
    end++;
  if (*end != '\0' || v >= 0x1p62)
    return FALSE;
  *out = (gsize) v;
  return TRUE;
}

/* The printf field width that pads text to width terminal columns: printf counts bytes,
 * and a wide (CJK) character is three bytes but two columns. */
static int
field_width (const char *text, int width)
{
  int cols = 0;

  for (const char *p = text; *p != '\0'; p = g_utf8_next_char (p))
    cols += g_unichar_iswide (g_utf8_get_char (p)) ? 2 : 1;
  return width + (int) strlen (text) - cols;
}

static void
print_layers (const EsModel *model, const EsTrainConfig *train, guint batch)
{
  char shape[64], mem[32];
  EsShape in = es_model_input_shape (model);
  EsMemPlan plan;
  const char *layer = C_("column", "layer"), *output = C_("column", "output");
  const char *params = C_("column", "params"), *flops = C_("column", "FLOPs/row");
  const char *act = C_("column", "act/row"), *input = C_("column", "input");

  g_print ("%-3s %-*s %-*s %*s %*s %*s\n", "#", field_width (layer, 11), layer,
           field_width (output, 16), output, field_width (params, 12), params,
           field_width (flops, 14), flops, field_width (act, 12), act);
  g_print ("%-3s %-*s %-16s %12s %14s %12s\n", "", field_width (input, 11), input,
           es_shape_format (&in, shape, sizeof shape),
           "", "", es_format_bytes (mem, sizeof mem, (double) es_shape_size (&in) * 4));
  for (int i = 0; i < es_model_n_layers (model); i++)
    {
      const EsLayerInfo *l = es_model_layer (model, i);

      g_print ("%-3d %-11s %-16s %12lld %14lld %12s\n", i + 1, es_layer_kind_title (l->spec.kind),
               es_shape_format (&l->out, shape, sizeof shape), (long long) l->n_params,
               (long long) l->flops, es_format_bytes (mem, sizeof mem, (double) l->out_floats * 4));
    }
  g_print (_("total: %lld parameters (%s), %lld FLOPs per row forward\n"),
           (long long) es_model_n_params (model),
           es_format_bytes (mem, sizeof mem, (double) es_model_n_params (model) * 4),
           (long long) es_model_flops (model));
  if (batch > 0)
    {
      es_mem_plan (model, train, (int) batch, TRUE, &plan);
      g_print (_("memory plan for training at batch %u (%s): "), batch,
               es_opt_kind_name (train->optimizer));
      g_print (_("weights %s, "), es_format_bytes (mem, sizeof mem, (double) plan.weights));
      g_print (_("gradients %s, "), es_format_bytes (mem, sizeof mem, (double) plan.gradients));
      g_print (_("optimizer %s, "), es_format_bytes (mem, sizeof mem, (double) plan.optimizer));
      g_print (_("activations %s, "), es_format_bytes (mem, sizeof mem, (double) plan.activations));
      if (plan.workspace > 0)
        g_print (_("workspace %s, "), es_format_bytes (mem, sizeof mem, (double) plan.workspace));
      g_print (_("data %s; "), es_format_bytes (mem, sizeof mem, (double) plan.data));
      g_print (_("total %s\n"), es_format_bytes (mem, sizeof mem, (double) plan.total));
    }
}

/* The "layers" member: each layer's kind, output shape, parameters, FLOPs and activation
 * bytes per row, as `info --json` and `import --json` print them. */
static void
json_layers (JsonBuilder *b, const EsModel *model)
{
  char shape[64];

  json_builder_set_member_name (b, "layers");
  json_builder_begin_array (b);
  for (int i = 0; i < es_model_n_layers (model); i++)
    {
      const EsLayerInfo *l = es_model_layer (model, i);

      json_builder_begin_object (b);
      json_str (b, "kind", es_layer_kind_name (l->spec.kind));
      json_str (b, "output", es_shape_format (&l->out, shape, sizeof shape));
      json_int (b, "params", l->n_params);
      json_int (b, "flops", l->flops);
      json_int (b, "activation_bytes", l->out_floats * 4);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
}

/* A split's name as people read it; JSON keeps test, val, train and all. */
static const char *
split_title (const char *split)
{
  if (g_str_equal (split, "test"))
    return C_("split", "test");
  if (g_str_equal (split, "val"))
    return C_("split", "val");
  if (g_str_equal (split, "train"))
    return C_("split", "train");
  if (g_str_equal (split, "all"))
    return C_("split", "all");
  return split;
}

static void
print_metrics (const EspalierMetrics *m, EspalierDataset *ds, const char *what)
{
  if (out_mode == OUT_JSON)
    {
      JsonBuilder *b = json_event ("metrics");

      json_str (b, "split", what);
      json_int (b, "rows", m->rows);
      json_double (b, "loss", m->loss);
      json_double (b, "accuracy", m->accuracy);
      if (m->confusion != NULL)
        {
          json_builder_set_member_name (b, "class_accuracy");
          json_builder_begin_object (b);
          for (guint k = 0; k < m->n_classes; k++)
            json_double (b, espalier_dataset_get_class_name (ds, k),
                         espalier_metrics_class_accuracy (m, k));
          json_builder_end_object (b);
          json_builder_set_member_name (b, "confusion");
          json_builder_begin_array (b);
          for (guint r = 0; r < m->n_classes; r++)
            {
              json_builder_begin_array (b);
              for (guint c = 0; c < m->n_classes; c++)
                json_builder_add_int_value (b, m->confusion[r * m->n_classes + c]);
              json_builder_end_array (b);
            }
          json_builder_end_array (b);
        }
      json_finish (b);
      return;
    }
  if (m->n_classes > 0)
    g_print (_("%s: %u rows, loss %.4f, accuracy %.2f%%\n"), split_title (what), m->rows, m->loss,
             100 * m->accuracy);
  else
    g_print (_("%s: %u rows, loss %.4f\n"), split_title (what), m->rows, m->loss);
  if (m->confusion != NULL && m->n_classes <= 20)
    {
      const char *cls = C_("column", "class"), *acc = C_("column", "accuracy");

      g_print ("  %-*s %*s   %s\n", field_width (cls, 14), cls, field_width (acc, 9), acc,
               _("confusion (rows: truth, columns: predicted)"));
      for (guint k = 0; k < m->n_classes; k++)
        {
          g_print ("  %-14.14s %8.2f%%  ", espalier_dataset_get_class_name (ds, k),
                   100 * espalier_metrics_class_accuracy (m, k));
          for (guint c = 0; c < m->n_classes; c++)
            g_print (" %5u", m->confusion[k * m->n_classes + c]);
          g_print ("\n");
        }
    }
}

/* ------------------------------------------------------------------------------ */
/* train */

typedef struct {
  GMainLoop    *loop;
  GCancellable *cancellable;
  GError       *error;
  gboolean      ok;
  guint         last_epoch, last_step;
  gboolean      interrupted;
} RunState;

/* Data-parallel fields of a progress record (espalier-distributed.h), when it has them. */
static void
json_distributed (JsonBuilder *b, const EspalierProgress *p)
{
  if (p->ranks == 0)
    return;
  json_int (b, "ranks", p->ranks);
  json_double (b, "rank_samples_per_s", p->rank_samples_per_s);
  json_double (b, "comm_s", p->comm_s);
}

static void
draw_bar (const EspalierProgress *p)
{
  const int width = 28;
  double frac = p->steps ? (double) p->step / p->steps : 0;
  int fill = (int) (frac * width);
  char bar[64];
  int eta = (int) (p->eta + 0.5);

  for (int i = 0; i < width; i++)
    bar[i] = i < fill ? '#' : '.';
  bar[width] = '\0';
  fputs ("\r\033[K", stderr);
  fprintf (stderr, _("epoch %u/%u [%s] %u/%u loss %.4f acc %.2f%% ETA %d:%02d"),
           p->epoch, p->epochs, bar, p->step, p->steps, p->loss, 100 * p->accuracy,
           eta / 60, eta % 60);
  fflush (stderr);
}

static void
on_progress (const EspalierProgress *p, gpointer user_data)
{
  RunState *st = user_data;

  if (p->kind == ESPALIER_PROGRESS_STEP || p->kind == ESPALIER_PROGRESS_EPOCH)
    {
      st->last_epoch = p->epoch;
      st->last_step = p->step;
    }
  if (out_mode == OUT_JSON)
    {
      JsonBuilder *b;

      switch (p->kind)
        {
        case ESPALIER_PROGRESS_START:
          b = json_event ("start");
          json_int (b, "epochs", p->epochs);
          json_int (b, "steps_per_epoch", p->steps);
          json_finish (b);
          break;
        case ESPALIER_PROGRESS_STEP:
          b = json_event ("step");
          json_int (b, "epoch", p->epoch);
          json_int (b, "step", p->step);
          json_int (b, "steps", p->steps);
          json_double (b, "loss", p->loss);
          json_double (b, "accuracy", p->accuracy);
          json_double (b, "elapsed", p->elapsed);
          json_double (b, "eta", p->eta);
          json_int (b, "fp32_products", p->fp32_products);
          json_distributed (b, p);
          json_finish (b);
          break;
        case ESPALIER_PROGRESS_EPOCH:
          b = json_event ("epoch");
          json_int (b, "epoch", p->epoch);
          json_double (b, "train_loss", p->record->train_loss);
          json_double (b, "train_accuracy", p->record->train_accuracy);
          json_double (b, "val_loss", p->record->val_loss);
          json_double (b, "val_accuracy", p->record->val_accuracy);
          json_double (b, "lr", p->record->lr);
          json_double (b, "seconds", p->record->seconds);
          json_int (b, "fp32_products", p->fp32_products);
          json_distributed (b, p);
          json_finish (b);
          break;
        case ESPALIER_PROGRESS_MESSAGE:
          b = json_event ("message");
          json_str (b, "message", p->message);
          json_finish (b);
          break;
        }
      return;
    }
  switch (p->kind)
    {
    case ESPALIER_PROGRESS_START:
      break;
    case ESPALIER_PROGRESS_STEP:
      if (out_mode == OUT_TTY)
        draw_bar (p);
      break;
    case ESPALIER_PROGRESS_EPOCH:
      if (out_mode == OUT_TTY)
        fputs ("\r\033[K", stderr);
      g_print (_("epoch %u/%u: loss %.4f, accuracy %.2f%%"), p->epoch, p->epochs,
               p->record->train_loss, 100 * p->record->train_accuracy);
      if (!isnan (p->record->val_loss))
        g_print (_("; validation loss %.4f, accuracy %.2f%%"), p->record->val_loss,
                 100 * p->record->val_accuracy);
      g_print (_(" (%.2f s)\n"), p->record->seconds);
      break;
    case ESPALIER_PROGRESS_MESSAGE:
      if (out_mode == OUT_TTY)
        fputs ("\r\033[K", stderr);
      g_print ("%s\n", p->message);
      break;
    }
}

static void
on_trained (GObject *source, GAsyncResult *result, gpointer user_data)
{
  RunState *st = user_data;

  st->ok = espalier_trainer_run_finish (ESPALIER_TRAINER (source), result, &st->error);
  g_main_loop_quit (st->loop);
}

static gboolean
on_sigint (gpointer user_data)
{
  RunState *st = user_data;

  st->interrupted = TRUE;
  g_cancellable_cancel (st->cancellable);
  return G_SOURCE_CONTINUE;
}

static gboolean
parse_augment (const char *text, EspalierAugment *aug, GError **error)
{
  g_auto(GStrv) parts = g_strsplit (text, ",", -1);

  for (int i = 0; parts[i] != NULL; i++)
    {
      char *eq = strchr (parts[i], '=');
      const char *key = parts[i];
      const char *val = eq ? eq + 1 : NULL;

      if (eq)
        *eq = '\0';
      if (g_str_equal (key, "shift"))
        {
          guint64 k = 2;

          if (val != NULL && !g_ascii_string_to_unsigned (val, 10, 0, 13, &k, NULL))
            {
              g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                           _("shift=%s: give a whole number of pixels from 0 to 13"), val);
              return FALSE;
            }
          aug->shift_pixels = (guint) k;
        }
      else if (g_str_equal (key, "flip") && val == NULL)
        aug->hflip = TRUE;
      else if (g_str_equal (key, "noise"))
        {
          char *end = NULL;
          double sd = val ? g_ascii_strtod (val, &end) : 0.05;

          if (val != NULL && (end == val || *end != '\0' || !isfinite (sd) || sd < 0))
            {
              g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                           _("noise=%s: give a standard deviation such as 0.05"), val);
              return FALSE;
            }
          aug->noise_std = (float) sd;
        }
      else
        {
          g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                       _("Unknown augmentation '%s' (known: shift=K, flip, noise=STD)"), key);
          return FALSE;
        }
    }
  return TRUE;
}

/* Rank 0, after a data-parallel run: throughput, communication and the last checkpoint. */
static void
print_distributed_summary (EspalierDistributed *d, const char *checkpoint)
{
  EspalierDistributedStats s;
  EspalierCheckpointInfo ck;
  gboolean have_ck = espalier_distributed_get_last_checkpoint (d, &ck);
  double rate, share, exposed;

  espalier_distributed_get_stats (d, &s);
  rate = s.seconds > 0 ? s.rows / s.seconds : 0;
  share = s.seconds > 0 ? s.comm_s / s.seconds : 0;
  exposed = s.seconds > 0 ? s.exposed_s / s.seconds : 0;
  if (out_mode == OUT_JSON)
    {
      JsonBuilder *b = json_event ("distributed_summary");
      json_int (b, "ranks", s.ranks);
      json_int (b, "steps", s.steps);
      json_int (b, "rows_rank0", s.rows);
      json_double (b, "seconds", s.seconds);
      json_double (b, "rank_samples_per_s", rate);
      json_double (b, "comm_s", s.comm_s);
      json_double (b, "exposed_comm_s", s.exposed_s);
      json_int (b, "allreduce_bytes", s.allreduce_bytes);
      json_str (b, "reduction", s.reduction);
      json_str (b, "reduction_note", s.reduction_note);
      if (have_ck)
        {
          json_str (b, "checkpoint", checkpoint);
          json_int (b, "checkpoint_step", ck.step);
          json_int (b, "checkpoint_epoch", ck.epoch);
        }
      json_finish (b);
      return;
    }
  g_print (ngettext ("Data-parallel: %u rank, %.0f samples/s on rank 0 (about %.0f together); "
                     "%.1f%% of its time in communication, %.1f%% waiting for gradients after "
                     "backward\n",
                     "Data-parallel: %u ranks, %.0f samples/s on rank 0 (about %.0f together); "
                     "%.1f%% of its time in communication, %.1f%% waiting for gradients after "
                     "backward\n", s.ranks),
           s.ranks, rate, rate * s.ranks, 100 * share, 100 * exposed);
  /* which path summed the gradients: nccl, cuda-aware mpi, staged or host */
  if (s.reduction != NULL && s.ranks > 1)
    g_print (_("Gradients summed by: %s\n"), s.reduction);
  if (s.reduction_note != NULL)
    g_print (_("NCCL not used: %s\n"), s.reduction_note);
  if (have_ck)
    g_print (_("Last checkpoint: %s, after step %lld (epoch %u)\n"), checkpoint,
             (long long) ck.step, ck.epoch);
}

/* A failure of train under --distributed before training starts: every rank reports
 * once at the same point (espalier_distributed_all_ok), so that an error all ranks share
 * is shown once, by rank 0, and one rank's own error by that rank. */
static int
fail_rank (EspalierDistributed *d, GError *error, const char *what)
{
  gboolean show = TRUE;

  if (d != NULL)
    espalier_distributed_all_ok (d, FALSE, &show);
  if (!show)
    {
      g_error_free (error);
      return 1;
    }
  if (d != NULL && espalier_distributed_rank (d) != 0)
    g_prefix_error (&error, _("rank %d: "), espalier_distributed_rank (d));
  return fail (error, what);
}

/* A failure of a data-parallel run on this rank: one that every rank got alike is shown
 * by rank 0 and the job ends normally; this rank's own ends the whole job. */
static int
fail_run (EspalierDistributed *d, GError *error, const char *what)
{
  if (d == NULL || espalier_distributed_size (d) == 1)
    return fail (error, what);
  if (espalier_distributed_error_is_shared (d))
    {
      if (espalier_distributed_rank (d) == 0)
        return fail (error, what);
      g_error_free (error);
      return 1;
    }
  g_prefix_error (&error, "%s: ", _(what));
  espalier_distributed_abort (d, error);
}

/* Rank 0 could not save the trained model (-o) after a data-parallel run: every rank
 * joins the agreement the others make after the save (espalier_distributed_share_failure)
 * and fails alike, ending normally with status 1; the message says what was lost and
 * where the last checkpoint is, to resume from or to keep. */
static int
fail_save (EspalierDistributed *d, const char *checkpoint, GError *error)
{
  EspalierCheckpointInfo ck;
  g_autofree char *why = g_strdup (error->message);
  GQuark domain = error->domain;
  int code = error->code;

  if (d == NULL)
    return fail (error, N_("saving the model"));
  if (g_str_has_suffix (why, "."))
    why[strlen (why) - 1] = '\0';
  g_clear_error (&error);
  /* TRANSLATORS: the first %s is why the model could not be saved (an error message
   * without its full stop) */
  if (checkpoint != NULL && espalier_distributed_get_last_checkpoint (d, &ck))
    g_set_error (&error, domain, code,
                 _("%s. The trained weights were not saved; the last checkpoint, %s, holds "
                   "those of step %lld (epoch %u)."),
                 why, checkpoint, (long long) ck.step, ck.epoch);
  else
    g_set_error (&error, domain, code,
                 _("%s. The trained weights were not saved, and no checkpoint was written."),
                 why);
  espalier_distributed_share_failure (d, FALSE, FALSE, &error);
  return fail_run (d, error, N_("saving the model"));
}

/* ---- devices: --device and --tf32 on the commands that make a backend (train, eval,
 * profile, bench), and the devices command ----------------------------------------- */

#define DEVICE_ENTRIES(text, tf32) \
  { "device", 0, 0, G_OPTION_ARG_STRING, &(text), _("Where to compute: auto (the first CUDA device, else the CPU), cpu, cuda or cuda:N"), "DEVICE" }, \
  { "tf32", 0, 0, G_OPTION_ARG_NONE, &(tf32), _("TF32 tensor cores for the matrix products on a CUDA device"), NULL }

/* --device's value (NULL: auto) into *device; FALSE and error for a bad one. */
static gboolean
device_arg (const char *text, gint *device, GError **error)
{
  *device = ESPALIER_DEVICE_AUTO;
  return text == NULL || espalier_device_parse (text, device, error);
}

/* Why CUDA was asked for and the work runs on the CPU (NULL: nothing to say): on
 * standard error, or a message event with --json. */
static void
print_fallback (const char *message)
{
  if (message == NULL)
    return;
  if (out_mode == OUT_JSON)
    {
      JsonBuilder *b = json_event ("message");
      json_str (b, "message", message);
      json_finish (b);
    }
  else
    g_printerr ("%s\n", message);
}

/* A CUDA version number as CUDA writes it: 13000 is "13.0". */
static char *
cuda_version (int v)
{
  return v > 0 ? g_strdup_printf ("%d.%d", v / 1000, v % 1000 / 10) : g_strdup ("?");
}

static void
json_device (JsonBuilder *b, const EspalierDevice *dev)
{
  const EsCudaDeviceInfo *c = &dev->cuda;
  g_autofree char *id = espalier_device_to_string (dev->device);
  g_autofree char *cc = NULL, *drv = NULL, *rt = NULL;

  json_builder_begin_object (b);
  json_str (b, "device", id);
  json_str (b, "name", dev->name);
  if (dev->device < 0)
    {
      json_int (b, "cores", dev->cores);
      json_builder_end_object (b);
      return;
    }
  cc = g_strdup_printf ("%d.%d", c->cc_major, c->cc_minor);
  drv = cuda_version (c->driver_version);
  rt = cuda_version (c->runtime_version);
  json_int (b, "index", dev->device);
  json_str (b, "compute_capability", cc);
  json_int (b, "multiprocessors", c->multiprocessors);
  json_int (b, "memory_total", (gint64) c->mem_total);
  json_int (b, "memory_free", (gint64) c->mem_free);
  json_int (b, "l2_bytes", (gint64) c->l2_bytes);
  json_str (b, "pci_bus_id", c->pci_bus_id);
  json_str (b, "driver_cuda_version", drv);
  json_str (b, "runtime_cuda_version", rt);
  json_builder_set_member_name (b, "nvml");
  json_builder_add_boolean_value (b, c->have_nvml);
  json_str (b, "driver", c->have_nvml && c->driver_string[0] ? c->driver_string : NULL);
  /* -1 (unknown) as null */
  json_double (b, "utilization_gpu", c->utilization_gpu >= 0 ? c->utilization_gpu : NAN);
  json_double (b, "utilization_memory", c->utilization_mem >= 0 ? c->utilization_mem : NAN);
  json_double (b, "temperature_c", c->temperature_c >= 0 ? c->temperature_c : NAN);
  json_double (b, "power_w", c->power_w >= 0 ? c->power_w : NAN);
  json_double (b, "power_limit_w", c->power_limit_w >= 0 ? c->power_limit_w : NAN);
  json_builder_end_object (b);
}

static void
print_device (const EspalierDevice *dev)
{
  const EsCudaDeviceInfo *c = &dev->cuda;
  g_autofree char *id = espalier_device_to_string (dev->device);
  g_autofree char *drv = NULL, *rt = NULL;
  char a[32], b[32], l2[32];

  if (dev->device < 0)
    {
      g_print (g_dngettext (GETTEXT_PACKAGE, "%-8s %s, %u core\n", "%-8s %s, %u cores\n",
                            dev->cores), id, dev->name, dev->cores);
      return;
    }
  drv = cuda_version (c->driver_version);
  rt = cuda_version (c->runtime_version);
  g_print ("%-8s %s\n", id, dev->name);
  g_print (_("         compute capability %d.%d, %d multiprocessors, L2 %s, PCI %s\n"),
           c->cc_major, c->cc_minor, c->multiprocessors,
           es_format_bytes (l2, sizeof l2, (double) c->l2_bytes), c->pci_bus_id);
  g_print (_("         memory %s total, %s free\n"),
           es_format_bytes (a, sizeof a, (double) c->mem_total),
           es_format_bytes (b, sizeof b, (double) c->mem_free));
  if (c->have_nvml && c->driver_string[0] != '\0')
    g_print (_("         driver %s (CUDA %s), runtime CUDA %s\n"), c->driver_string, drv, rt);
  else
    g_print (_("         driver CUDA %s, runtime CUDA %s\n"), drv, rt);
  if (!c->have_nvml)
    {
      g_print (_("         NVML not found: no utilization, temperature or power\n"));
      return;
    }
  g_print ("         ");
  if (c->utilization_gpu >= 0)
    g_print (_("utilization %d%% GPU, %d%% memory; "), c->utilization_gpu, MAX (c->utilization_mem, 0));
  if (c->temperature_c >= 0)
    g_print (_("%d °C; "), c->temperature_c);
  if (c->power_w >= 0 && c->power_limit_w > 0)
    g_print (_("power %.0f W of %.0f W"), c->power_w, c->power_limit_w);
  else if (c->power_w >= 0)
    g_print (_("power %.0f W"), c->power_w);
  g_print ("\n");
}

static int
cmd_devices (int argc, char **argv)
{
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("- the CPU and the CUDA devices"));
  g_autoptr(GError) error = NULL;
  g_autoptr(GArray) list = NULL;
  g_autofree char *no_cuda = NULL;
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, _("JSON output"), NULL },
    { NULL }
  };

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_set_summary (ctx, _("The devices --device can name, as nvidia-smi shows them: "
                                       "the CPU, and each CUDA\n"
                                       "device with its compute capability, memory, driver and "
                                       "runtime versions, and\n"
                                       "its utilization, temperature and power when NVML is "
                                       "present."));
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    return usage_error (ctx, _("devices: %s"), error->message);
  if (argc > 1)
    return usage_error (ctx, _("devices: unexpected argument '%s'"), argv[1]);
  list = espalier_devices_list (&no_cuda);
  if (json)
    {
      JsonBuilder *b;

      out_mode = OUT_JSON;
      b = json_event ("devices");
      json_builder_set_member_name (b, "devices");
      json_builder_begin_array (b);
      for (guint i = 0; i < list->len; i++)
        json_device (b, &g_array_index (list, EspalierDevice, i));
      json_builder_end_array (b);
      json_str (b, "no_cuda", no_cuda);
      json_finish (b);
      return 0;
    }
  for (guint i = 0; i < list->len; i++)
    print_device (&g_array_index (list, EspalierDevice, i));
  if (no_cuda != NULL)
    /* TRANSLATORS: %s says why (in English: the engine's words) */
    g_print (_("No CUDA device: %s\n"), no_cuda);
  return 0;
}

static int
cmd_train (int argc, char **argv)
{
  g_auto(DataOpts) d = { 0 };
  g_autofree GOptionEntry *dentries = data_entries (&d);
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("- train a model"));
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(EspalierTrainer) trainer = NULL;
  g_autofree char *model_name = NULL, *spec = NULL, *init = NULL, *output = NULL;
  g_autofree char *optimizer = NULL, *loss = NULL, *schedule = NULL, *memory = NULL, *augment = NULL;
  double lr = -1, l1 = 0, l2 = 0, clip = 0, wd = -1, val = -1, test = -1, min_delta = 0;
  int epochs = 0, batch = 0, accum = 0, warmup = 0, patience = 0, threads = 0, step_size = 0;
  gint64 seed = -1;
  guint64 load_seed;
  double load_val, load_test;
  gboolean json = FALSE, plan = FALSE;
  g_autofree char *device = NULL, *precision = NULL;   /* --device, --precision */
  gboolean tf32 = FALSE;
  gint device_choice;
  EsPrecision precision_choice = ES_PRECISION_FP32;
  /* data parallelism */
  gboolean distributed = FALSE, quiet = FALSE;
  g_autofree char *checkpoint = NULL, *resume = NULL;
  int checkpoint_every = 0;
  double coll_timeout = 0;
  gboolean sync_bn = FALSE;   /* --sync-batchnorm */
  g_autoptr(EspalierDistributed) dist = NULL;
  EspalierTrainOptions opts;
  EspalierModelInfo info;
  EsModel *model = NULL;
  RunState st = { 0 };
  EspalierMetrics test_metrics = { 0 };
  const EspalierSplit *split;
  guint sigint_id;
  int status = 1;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_STRING, &model_name, _("Template: mlp, lenet, playground (default: mlp for images, playground for 2-D sets)"), "NAME" },
    { "spec", 0, 0, G_OPTION_ARG_STRING, &spec, _("Layers as a spec string, e.g. flatten,dense:128,relu,dense:10,softmax"), "LAYERS" },
    { "init", 0, 0, G_OPTION_ARG_FILENAME, &init, _("Continue from a saved model (NAME.json)"), "FILE" },
    { "epochs", 'e', 0, G_OPTION_ARG_INT, &epochs, _("Epochs (template default)"), "N" },
    { "batch", 'b', 0, G_OPTION_ARG_INT, &batch, _("Batch size (template default)"), "N" },
    { "lr", 0, 0, G_OPTION_ARG_DOUBLE, &lr, _("Learning rate (template default)"), "LR" },
    { "optimizer", 0, 0, G_OPTION_ARG_STRING, &optimizer, "sgd, momentum, nesterov, adam, adamw", "NAME" },
    { "loss", 0, 0, G_OPTION_ARG_STRING, &loss, "softmax_cross_entropy, binary_cross_entropy, mse", "NAME" },
    { "weight-decay", 0, 0, G_OPTION_ARG_DOUBLE, &wd, _("AdamW decoupled weight decay (0.01)"), "WD" },
    { "l1", 0, 0, G_OPTION_ARG_DOUBLE, &l1, _("L1 regularization"), "F" },
    { "l2", 0, 0, G_OPTION_ARG_DOUBLE, &l2, _("L2 regularization"), "F" },
    { "clip", 0, 0, G_OPTION_ARG_DOUBLE, &clip, _("Clip the gradient's global norm"), "NORM" },
    { "accumulate", 0, 0, G_OPTION_ARG_INT, &accum, _("Accumulate gradients over N batches per step"), "N" },
    { "schedule", 0, 0, G_OPTION_ARG_STRING, &schedule, _("Learning-rate schedule: constant, step, cosine"), "NAME" },
    { "step-size", 0, 0, G_OPTION_ARG_INT, &step_size, _("Steps between decays of the step schedule"), "N" },
    { "warmup", 0, 0, G_OPTION_ARG_INT, &warmup, _("Linear warm-up steps"), "N" },
    { "patience", 0, 0, G_OPTION_ARG_INT, &patience, _("Stop early after N epochs without a better validation loss"), "N" },
    { "min-delta", 0, 0, G_OPTION_ARG_DOUBLE, &min_delta, _("Smallest validation-loss improvement that counts"), "F" },
    { "val", 0, 0, G_OPTION_ARG_DOUBLE, &val, _("Validation fraction of all rows, or of the training part of a set with its own test part (0.1)"), "F" },
    { "test", 0, 0, G_OPTION_ARG_DOUBLE, &test, _("Test fraction, for sets without their own test part (0.2)"), "F" },
    { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, _("Random seed (0)"), "N" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, _("Compute threads (default: one per core when the model is large enough to gain from it)"), "N" },
    { "memory-limit", 0, 0, G_OPTION_ARG_STRING, &memory, _("Engine memory budget, e.g. 64M (on a CUDA device: the GPU pool's)"), "SIZE" },
    DEVICE_ENTRIES (device, tf32),
    { "precision", 0, 0, G_OPTION_ARG_STRING, &precision, _("Compute precision: fp32 (default), bf16 or fp16 (mixed precision, fp32 master weights; a CUDA device)"), "P" },
    { "augment", 0, 0, G_OPTION_ARG_STRING, &augment, _("Image augmentation: shift=K,flip,noise=STD"), "LIST" },
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output, _("Save the trained model as NAME.json + NAME.safetensors"), "NAME" },
    { "plan", 0, 0, G_OPTION_ARG_NONE, &plan, _("Print the layers and the memory plan before training"), NULL },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, _("One JSON object per event on standard output"), NULL },
    { "distributed", 0, 0, G_OPTION_ARG_NONE, &distributed, _("Data-parallel over the ranks of an MPI job (mpirun -np N): --batch rows per rank, N times that per step"), NULL },
    { "checkpoint", 0, 0, G_OPTION_ARG_FILENAME, &checkpoint, _("Write a checkpoint to FILE every --checkpoint-every steps (with --distributed: rank 0 does)"), "FILE" },
    { "checkpoint-every", 0, 0, G_OPTION_ARG_INT, &checkpoint_every, _("Optimizer steps between checkpoints (100)"), "K" },
    { "resume", 0, 0, G_OPTION_ARG_FILENAME, &resume, _("Continue from a checkpoint (with --distributed: on any number of ranks)"), "FILE" },
    { "collective-timeout", 0, 0, G_OPTION_ARG_DOUBLE, &coll_timeout, _("With --distributed: seconds a collective may take before the job is ended (300)"), "S" },
    { "sync-batchnorm", 0, 0, G_OPTION_ARG_NONE, &sync_bn, _("With --distributed: BatchNorm statistics over the global batch, so N ranks train as one with N times the batch (default: each rank's own rows, as PyTorch DDP)"), NULL },
    { NULL }
  };

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_main_entries (ctx, dentries, NULL);
  g_option_context_set_summary (ctx, _("Trains a model on a dataset and reports test metrics.\n"
                                       "Default: the mlp template on Fashion-MNIST (spiral when it "
                                       "is not installed)."));
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    return usage_error (ctx, _("train: %s"), error->message);
  if (argc > 1)
    return usage_error (ctx, _("train: unexpected argument '%s'"), argv[1]);
  if (json)
    out_mode = OUT_JSON;
  if ((model_name != NULL) + (spec != NULL) + (init != NULL) > 1)
    return usage_error (ctx, _("train: give only one of --model, --spec and --init"));
  if (epochs < 0 || batch < 0 || accum < 0 || threads < 0 || patience < 0
      || l1 < 0 || l2 < 0 || clip < 0 || min_delta < 0 || seed < -1)
    return usage_error (ctx, _("train: counts, rates and the seed cannot be negative"));
  if (lr != -1 && !(lr > 0 && isfinite (lr)))
    return usage_error (ctx, _("train: the learning rate must be positive"));
  if (!device_arg (device, &device_choice, &error))
    return usage_error (ctx, _("train: %s"), error->message);
  if (precision != NULL && !es_precision_from_name (precision, &precision_choice))
    return usage_error (ctx, _("train: --precision must be fp32, bf16 or fp16, not '%s'"),
                        precision);
  if (!distributed && coll_timeout)
    return usage_error (ctx, _("train: --collective-timeout goes with --distributed"));
  if (!distributed && sync_bn)
    return usage_error (ctx, _("train: --sync-batchnorm goes with --distributed"));
  if (checkpoint_every < 0 || coll_timeout < 0 || !isfinite (coll_timeout))
    return usage_error (ctx, _("train: counts, rates and the seed cannot be negative"));
  if (checkpoint_every > 0 && checkpoint == NULL)
    return usage_error (ctx, _("train: --checkpoint-every needs --checkpoint FILE"));
  if (distributed)
    {
      dist = espalier_distributed_new (&error);
      if (dist == NULL)
        return fail (g_steal_pointer (&error), N_("starting MPI"));
      quiet = espalier_distributed_rank (dist) != 0;
      if (quiet)
        {
          /* Rank 0 alone speaks; errors still reach standard error. */
          int null_fd = open ("/dev/null", O_WRONLY | O_CLOEXEC);

          if (null_fd >= 0)
            {
              fflush (stdout);
              dup2 (null_fd, STDOUT_FILENO);
              close (null_fd);
            }
        }
      if (coll_timeout > 0)
        espalier_distributed_set_timeout (dist, coll_timeout);
      espalier_distributed_set_sync_batchnorm (dist, sync_bn);
      if (checkpoint != NULL)
        espalier_distributed_set_checkpoint (dist, checkpoint,
                                             checkpoint_every ? (guint) checkpoint_every : 100);
    }

  /* Names and sizes are checked before any work starts. */
  {
    EsOptKind ok_opt;
    EsLossKind ok_loss;
    EsLrSchedule ok_sched;
    gsize ok_size;
    EspalierAugment ok_aug = { 0 };

    if (optimizer && !es_opt_kind_from_name (optimizer, &ok_opt))
      return usage_error (ctx, _("train: unknown optimizer '%s' (sgd, momentum, nesterov, adam, "
                                 "adamw)"), optimizer);
    if (loss && !es_loss_kind_from_name (loss, &ok_loss))
      return usage_error (ctx, _("train: unknown loss '%s' (softmax_cross_entropy, "
                                 "binary_cross_entropy, mse)"), loss);
    if (schedule && !es_lr_schedule_from_name (schedule, &ok_sched))
      return usage_error (ctx, _("train: unknown schedule '%s' (constant, step, cosine)"),
                          schedule);
    if (memory && !parse_size (memory, &ok_size))
      return usage_error (ctx, _("train: cannot read the size '%s' (say 64M or 2G)"), memory);
    if (augment && !parse_augment (augment, &ok_aug, &error))
      return usage_error (ctx, _("train: %s"), error->message);
  }

  espalier_model_info_init (&info);
  espalier_train_options_init (&opts);
  if (init != NULL)
    {
      model = espalier_model_load (init, &info, &error);
      if (model == NULL)
        return fail_rank (dist, g_steal_pointer (&error), N_("loading the model"));
      opts = info.train;
      data_opts_from_json (&d, info.preprocessing);
    }

  load_seed = seed >= 0 ? (guint64) seed : opts.seed;
  load_val = val >= 0 ? val : opts.val_fraction;
  load_test = test >= 0 ? test : opts.test_fraction;
  ds = load_data (&d, init ? info.dataset_source : NULL, load_val, load_test, load_seed, &error);
  if (ds == NULL)
    {
      es_model_free (model);
      espalier_model_info_clear (&info);
      return fail_rank (dist, g_steal_pointer (&error), N_("loading the dataset"));
    }

  if (model == NULL)
    {
      EsShape in = dataset_shape (ds);

      if (spec != NULL)
        model = espalier_model_from_spec (spec, &in, &error);
      else
        {
          const char *name = model_name ? model_name
                             : espalier_dataset_get_rank (ds) == 3 ? "mlp" : "playground";
          if (espalier_dataset_get_rank (ds) == 1 && espalier_dataset_get_row_size (ds) != 2 && model_name == NULL)
            name = "mlp";
          model = espalier_model_from_template (name, &in, dataset_outputs (ds), &opts, &error);
          g_free (info.template_name);
          info.template_name = g_strdup (name);
        }
      if (model == NULL)
        {
          espalier_model_info_clear (&info);
          return fail_rank (dist, g_steal_pointer (&error), N_("building the model"));
        }
      es_model_init (model, load_seed);
    }

  /* Flags override the template's or the saved model's defaults. */
  if (epochs) opts.epochs = (guint) epochs;
  if (batch) opts.batch_size = (guint) batch;
  if (lr != -1) opts.engine.lr = (float) lr;
  if (wd >= 0) opts.engine.weight_decay = (float) wd;
  if (l1 > 0) opts.engine.l1 = (float) l1;
  if (l2 > 0) opts.engine.l2 = (float) l2;
  if (clip > 0) opts.engine.clip_norm = (float) clip;
  if (accum) opts.engine.accum_steps = accum;
  if (warmup) opts.engine.warmup_steps = warmup;
  if (step_size) opts.engine.step_size = step_size;
  if (patience) opts.patience = (guint) patience;
  if (min_delta > 0) opts.min_delta = min_delta;
  if (val >= 0) opts.val_fraction = val;
  if (test >= 0) opts.test_fraction = test;
  if (threads) opts.threads = (guint) threads;
  if (seed >= 0) opts.seed = (guint64) seed;  /* --init keeps the saved seed, and its split */
  opts.device = device_choice;
  opts.tf32 = tf32;
  if (precision != NULL) opts.engine.precision = precision_choice;

  /* Standardization, min-max and mean-fill take their statistics from the training
   * split; a template that splits otherwise than the defaults the data was loaded with
   * means loading it again with the trainer's own split. */
  if ((d.standardize || d.minmax || d.mean_fill)
      && (opts.val_fraction != load_val || opts.test_fraction != load_test || opts.seed != load_seed))
    {
      g_clear_object (&ds);
      ds = load_data (&d, init ? info.dataset_source : NULL, opts.val_fraction,
                      opts.test_fraction, opts.seed, &error);
      if (ds == NULL)
        {
          es_model_free (model);
          espalier_model_info_clear (&info);
          return fail_rank (dist, g_steal_pointer (&error), N_("loading the dataset"));
        }
    }
  if (optimizer)
    es_opt_kind_from_name (optimizer, &opts.engine.optimizer);
  if (loss)
    es_loss_kind_from_name (loss, &opts.engine.loss);
  if (schedule)
    es_lr_schedule_from_name (schedule, &opts.engine.schedule);
  if (memory)
    parse_size (memory, &opts.memory_limit);
  if (augment)
    parse_augment (augment, &opts.augment, NULL);

  if (dist != NULL)
    {
      int n = espalier_distributed_size (dist), local = espalier_distributed_local_size (dist);
      EspalierCheckpointInfo ck;

      /* The cores of this machine shared among its ranks, unless the user chose. */
      if (threads == 0 && local > 1)
        opts.threads = (guint) MAX (1, (int) g_get_num_processors () / local);
      if (!espalier_distributed_all_ok (dist, TRUE, NULL))
        {
          if (!quiet)
            g_printerr (_("espalier-cli: training: another rank could not start\n"));
          es_model_free (model);
          espalier_model_info_clear (&info);
          return 1;
        }
      if (resume != NULL && !espalier_distributed_set_resume (dist, resume, &ck, &error))
        {
          es_model_free (model);
          espalier_model_info_clear (&info);
          return fail_run (dist, g_steal_pointer (&error), N_("resuming"));
        }
      if (out_mode == OUT_JSON && !quiet)
        {
          JsonBuilder *b = json_event ("distributed");
          json_int (b, "ranks", n);
          json_int (b, "batch_per_rank", opts.batch_size);
          json_int (b, "global_batch", (gint64) opts.batch_size * n);
          json_double (b, "lr", opts.engine.lr);
          json_str (b, "lr_scaling", "none");
          json_builder_set_member_name (b, "sync_batchnorm");
          json_builder_add_boolean_value (b, sync_bn);
          json_int (b, "threads_per_rank", opts.threads);
          json_str (b, "checkpoint", checkpoint);
          json_str (b, "resume", resume);
          if (resume != NULL)
            {
              json_int (b, "resume_epoch", ck.epoch);
              json_int (b, "resume_position", (gint64) ck.position);
              json_int (b, "resume_step", ck.step);
              json_int (b, "resume_ranks", ck.ranks);
            }
          json_finish (b);
        }
      else if (!quiet)
        {
          g_print (ngettext ("Data-parallel on %d rank: batch %u per rank, %u rows per step; "
                             "learning rate %g as given, not scaled with the global batch "
                             "(linear scaling from one rank's batch would be --lr %g)\n",
                             "Data-parallel on %d ranks: batch %u per rank, %u rows per step; "
                             "learning rate %g as given, not scaled with the global batch "
                             "(linear scaling from one rank's batch would be --lr %g)\n", n),
                   n, opts.batch_size, opts.batch_size * (guint) n, opts.engine.lr,
                   opts.engine.lr * n);
          if (resume != NULL)
            g_print (ngettext ("Resuming from %s: epoch %u, %llu rows into it, after step %lld "
                               "(written by %u rank with batch %u)\n",
                               "Resuming from %s: epoch %u, %llu rows into it, after step %lld "
                               "(written by %u ranks with batch %u each)\n", ck.ranks),
                     resume, ck.epoch, (unsigned long long) ck.position, (long long) ck.step,
                     ck.ranks, ck.batch);
        }
    }

  if (plan && out_mode != OUT_JSON && !quiet)
    print_layers (model, &opts.engine, opts.batch_size);

  trainer = espalier_trainer_new (ds, model, &opts);
  if (dist != NULL)
    espalier_trainer_set_distributed (trainer, dist);
  else
    {
      /* One process: the trainer writes and resumes checkpoints itself. */
      EspalierCheckpointInfo ck;

      espalier_trainer_set_checkpoint (trainer, checkpoint,
                                       checkpoint_every ? (guint) checkpoint_every : 100);
      if (resume != NULL && !espalier_trainer_set_resume (trainer, resume, &ck, &error))
        {
          g_clear_object (&trainer);
          es_model_free (model);
          espalier_model_info_clear (&info);
          return fail (g_steal_pointer (&error), N_("resuming"));
        }
      if (resume != NULL && out_mode == OUT_JSON)
        {
          JsonBuilder *b = json_event ("resume");
          json_str (b, "resume", resume);
          json_int (b, "resume_epoch", ck.epoch);
          json_int (b, "resume_position", (gint64) ck.position);
          json_int (b, "resume_step", ck.step);
          json_finish (b);
        }
      else if (resume != NULL)
        g_print (_("Resuming from %s: epoch %u, %llu rows into it, after step %lld\n"), resume,
                 ck.epoch, (unsigned long long) ck.position, (long long) ck.step);
    }
  st.loop = g_main_loop_new (NULL, FALSE);
  st.cancellable = g_cancellable_new ();
  sigint_id = g_unix_signal_add (SIGINT, on_sigint, &st);
  espalier_trainer_run_async (trainer, st.cancellable, quiet ? NULL : on_progress, &st, NULL,
                              on_trained, &st);
  g_main_loop_run (st.loop);
  g_source_remove (sigint_id);

  if (!st.ok)
    {
      if (st.interrupted)
        {
          g_clear_error (&st.error);
          g_set_error (&st.error, G_IO_ERROR, G_IO_ERROR_CANCELLED,
                       _("stopped by Ctrl-C in epoch %u after step %u; nothing was saved"),
                       st.last_epoch, st.last_step);
        }
      status = fail_run (dist, st.error, N_("training"));
      goto out;
    }

  split = espalier_trainer_get_split (trainer);
  if (split->test->len > 0)
    {
      /* Under --distributed each rank evaluates its share of the test rows. */
      if (dist != NULL
          ? !espalier_distributed_evaluate (dist, model, ds, (const guint32 *) split->test->data,
                                            split->test->len, opts.engine.loss, opts.threads,
                                            &test_metrics, &error)
          : !espalier_evaluate_device (model, ds, (const guint32 *) split->test->data,
                                       split->test->len, opts.engine.loss, opts.threads,
                                       opts.device, opts.tf32, NULL, &test_metrics, &error))
        {
          status = fail_run (dist, g_steal_pointer (&error), N_("evaluating"));
          goto out;
        }
      if (!quiet)
        print_metrics (&test_metrics, ds, "test");
    }
  if (dist != NULL && !quiet)
    print_distributed_summary (dist, checkpoint);
  else if (dist == NULL && checkpoint != NULL && out_mode != OUT_JSON)
    {
      EspalierCheckpointInfo ck;

      if (espalier_trainer_get_last_checkpoint (trainer, &ck))
        g_print (_("Last checkpoint: %s, after step %lld (epoch %u)\n"), checkpoint,
                 (long long) ck.step, ck.epoch);
    }
  /* mixed precision that fell back to fp32 for want of memory: the user should know */
  if (!quiet && out_mode != OUT_JSON && espalier_trainer_get_fp32_products (trainer) > 0)
    {
      g_autofree char *msg =
          espalier_fp32_products_message (espalier_trainer_get_fp32_products (trainer));

      g_print ("%s\n", msg);
    }

  if (output != NULL && !quiet)
    {
      GArray *hist = espalier_trainer_get_history (trainer);
      guint nc = espalier_dataset_get_n_classes (ds);

      info.train = opts;
      g_free (info.dataset_source);
      info.dataset_source = g_strdup (espalier_dataset_get_source (ds));
      g_free (info.preprocessing);
      info.preprocessing = data_opts_to_json (&d);
      if (info.history != NULL)
        g_array_set_size (info.history, 0);
      else
        info.history = g_array_new (FALSE, TRUE, sizeof (EspalierEpochRecord));
      g_array_append_vals (info.history, hist->data, hist->len);
      espalier_metrics_clear (&info.test);
      info.test = test_metrics;
      memset (&test_metrics, 0, sizeof test_metrics);
      if (nc > 0 && info.class_names == NULL)
        {
          info.class_names = g_new0 (char *, nc + 1);
          for (guint k = 0; k < nc; k++)
            info.class_names[k] = g_strdup (espalier_dataset_get_class_name (ds, k));
        }
      info.input_scale = espalier_dataset_is_u8 (ds) ? espalier_dataset_get_scale (ds) : 1.0;
      info.input_shift = espalier_dataset_is_u8 (ds) ? espalier_dataset_get_shift (ds) : 0.0;
      if (!espalier_model_save (model, &info, output, &error))
        {
          status = fail_save (dist, checkpoint, g_steal_pointer (&error));
          goto out;
        }
      if (out_mode == OUT_JSON)
        {
          JsonBuilder *b = json_event ("saved");
          json_str (b, "path", output);
          json_finish (b);
        }
      else
        g_print (_("Saved %s\n"), output);
    }
  /* Under --distributed the ranks wait for rank 0's save and fail alike if it failed
   * (fail_save): one small reduction after the run. */
  if (output != NULL && dist != NULL
      && !espalier_distributed_share_failure (dist, TRUE, FALSE, &error))
    {
      status = fail_run (dist, g_steal_pointer (&error), N_("saving the model"));
      goto out;
    }
  if (out_mode == OUT_JSON && !quiet)
    {
      JsonBuilder *b = json_event ("done");
      json_int (b, "fp32_products", espalier_trainer_get_fp32_products (trainer));
      json_finish (b);
    }
  status = 0;

out:
  espalier_metrics_clear (&test_metrics);
  g_clear_object (&trainer);
  es_model_free (model);
  espalier_model_info_clear (&info);
  g_main_loop_unref (st.loop);
  g_object_unref (st.cancellable);
  return status;
}

/* ------------------------------------------------------------------------------ */
/* eval */

static int
cmd_eval (int argc, char **argv)
{
  g_auto(DataOpts) d = { 0 };
  g_autofree GOptionEntry *dentries = data_entries (&d);
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("MODEL.json - evaluate a saved model"));
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autofree char *which = NULL, *device = NULL, *fallback = NULL;
  gboolean json = FALSE, tf32 = FALSE;
  int threads = 0;
  gint device_choice;
  EspalierModelInfo info;
  EspalierMetrics m = { 0 };
  EsModel *model;
  int status = 1;
  GOptionEntry entries[] = {
    { "split", 's', 0, G_OPTION_ARG_STRING, &which, _("Rows to use: test (default), val, train or all"), "PART" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, _("Compute threads"), "N" },
    DEVICE_ENTRIES (device, tf32),
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, _("JSON output"), NULL },
    { NULL }
  };

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_main_entries (ctx, dentries, NULL);
  g_option_context_set_summary (ctx, _("Loss, accuracy, per-class accuracy and the confusion "
                                       "matrix of a saved model.\n"
                                       "The dataset defaults to the one it was trained on, split "
                                       "the same way."));
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    return usage_error (ctx, _("eval: %s"), error->message);
  if (argc != 2)
    return usage_error (ctx, _("eval: name one model file (NAME.json)"));
  if (which != NULL && !g_strv_contains ((const char *[]) { "test", "val", "train", "all", NULL }, which))
    return usage_error (ctx, _("eval: --split must be test, val, train or all"));
  if (threads < 0)
    return usage_error (ctx, _("eval: --threads cannot be negative"));
  if (!device_arg (device, &device_choice, &error))
    return usage_error (ctx, _("eval: %s"), error->message);
  if (json)
    out_mode = OUT_JSON;

  espalier_model_info_init (&info);
  model = espalier_model_load (argv[1], &info, &error);
  if (model == NULL)
    return fail (g_steal_pointer (&error), N_("loading the model"));
  data_opts_from_json (&d, info.preprocessing);
  ds = load_data (&d, info.dataset_source, info.train.val_fraction, info.train.test_fraction,
                  info.train.seed, &error);
  if (ds == NULL)
    {
      status = fail (g_steal_pointer (&error), N_("loading the dataset"));
      goto out;
    }
  if (which == NULL || !g_str_equal (which, "all"))
    {
      g_autoptr(EspalierSplit) split = espalier_split_new (ds, info.train.val_fraction,
                                                           info.train.test_fraction,
                                                           info.train.seed, &error);
      GArray *rows;

      if (split == NULL)
        {
          status = fail (g_steal_pointer (&error), N_("splitting the dataset"));
          goto out;
        }
      rows = which == NULL || g_str_equal (which, "test") ? split->test
             : g_str_equal (which, "val") ? split->val : split->train;
      if (!espalier_evaluate_device (model, ds, (const guint32 *) rows->data, rows->len,
                                     info.train.engine.loss, (guint) threads, device_choice,
                                     tf32, &fallback, &m, &error))
        {
          status = fail (g_steal_pointer (&error), N_("evaluating"));
          goto out;
        }
    }
  else if (!espalier_evaluate_device (model, ds, NULL, 0, info.train.engine.loss,
                                      (guint) threads, device_choice, tf32, &fallback, &m,
                                      &error))
    {
      status = fail (g_steal_pointer (&error), N_("evaluating"));
      goto out;
    }
  print_fallback (fallback);
  print_metrics (&m, ds, which ? which : "test");
  status = 0;

out:
  espalier_metrics_clear (&m);
  es_model_free (model);
  espalier_model_info_clear (&info);
  return status;
}

/* ------------------------------------------------------------------------------ */
/* info */

static int
cmd_info (int argc, char **argv)
{
  g_auto(DataOpts) d = { 0 };
  g_autofree GOptionEntry *dentries = data_entries (&d);
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("[MODEL.json] - describe a model"));
  g_autoptr(GError) error = NULL;
  g_autofree char *model_name = NULL, *spec = NULL;
  int batch = 32;
  gboolean json = FALSE;
  EspalierModelInfo info;
  EsModel *model = NULL;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_STRING, &model_name, _("A template instead of a file"), "NAME" },
    { "spec", 0, 0, G_OPTION_ARG_STRING, &spec, _("A spec string instead of a file"), "LAYERS" },
    { "batch", 'b', 0, G_OPTION_ARG_INT, &batch, _("Batch size for the memory plan (32)"), "N" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, _("JSON output"), NULL },
    { NULL }
  };

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_main_entries (ctx, dentries, NULL);
  g_option_context_set_summary (ctx, _("Layers with output shapes, parameters, FLOPs and "
                                       "activation memory, and the\n"
                                       "memory plan of training. A template or spec is sized for "
                                       "--data (default data)."));
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    return usage_error (ctx, _("info: %s"), error->message);
  if ((argc == 2) + (model_name != NULL) + (spec != NULL) != 1 || argc > 2)
    return usage_error (ctx, _("info: name one model file, or give --model or --spec"));
  if (batch <= 0)
    return usage_error (ctx, _("info: --batch must be at least 1"));
  if (json)
    out_mode = OUT_JSON;

  espalier_model_info_init (&info);
  if (argc == 2)
    model = espalier_model_load (argv[1], &info, &error);
  else
    {
      g_autoptr(EspalierDataset) ds = NULL;
      EsShape in;

      if (out_mode != OUT_JSON)
        out_mode = OUT_PLAIN;
      ds = load_data (&d, NULL, 0.1, 0.2, 0, &error);
      if (ds == NULL)
        {
          espalier_model_info_clear (&info);
          return fail (g_steal_pointer (&error), N_("loading the dataset"));
        }
      in = dataset_shape (ds);
      model = spec ? espalier_model_from_spec (spec, &in, &error)
                   : espalier_model_from_template (model_name, &in, dataset_outputs (ds), NULL, &error);
    }
  if (model == NULL)
    {
      espalier_model_info_clear (&info);
      return fail (g_steal_pointer (&error), N_("reading the model"));
    }

  if (out_mode == OUT_JSON)
    {
      JsonBuilder *b = json_event ("model");
      EsMemPlan plan;

      json_int (b, "params", es_model_n_params (model));
      json_int (b, "flops", es_model_flops (model));
      json_layers (b, model);
      es_mem_plan (model, &info.train.engine, batch, TRUE, &plan);
      json_builder_set_member_name (b, "memory_plan");
      json_builder_begin_object (b);
      json_int (b, "batch", batch);
      json_int (b, "weights", (gint64) plan.weights);
      json_int (b, "gradients", (gint64) plan.gradients);
      json_int (b, "optimizer", (gint64) plan.optimizer);
      json_int (b, "activations", (gint64) plan.activations);
      json_int (b, "workspace", (gint64) plan.workspace);
      json_int (b, "data", (gint64) plan.data);
      json_int (b, "total", (gint64) plan.total);
      json_builder_end_object (b);
      if (info.history != NULL && info.history->len > 0)
        json_double (b, "test_accuracy", info.test.rows ? info.test.accuracy : NAN);
      json_finish (b);
    }
  else
    {
      if (argc == 2)
        {
          g_print (_("%s: trained on %s for %u epochs"), argv[1],
                   info.dataset_source ? info.dataset_source : _("(unknown)"),
                   info.history ? info.history->len : 0);
          if (info.test.rows > 0)
            g_print (_(", test accuracy %.2f%%"), 100 * info.test.accuracy);
          g_print ("\n");
        }
      print_layers (model, &info.train.engine, (guint) batch);
    }
  es_model_free (model);
  espalier_model_info_clear (&info);
  return 0;
}

/* ------------------------------------------------------------------------------ */
/* datasets */

static int
cmd_datasets (int argc, char **argv)
{
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("- list the datasets known by name"));
  g_autoptr(GError) error = NULL;
  g_auto(DataOpts) d = { 0 };
  g_autofree GOptionEntry *dentries = data_entries (&d);
  g_autofree char *export = NULL;
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "export-csv", 0, 0, G_OPTION_ARG_FILENAME, &export,
      _("Load --data with its preprocessing and write the processed table as CSV"), "FILE" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, _("JSON output"), NULL },
    { NULL }
  };
  static const struct { const char *name, *about; } gens[] = {
    /* N_(): translated in the listing, English in JSON */
    { "spiral", N_("k interleaved spiral arms (n=300, arms=3, noise=0.2, seed=0)") },
    { "moons", N_("two interleaving half circles (n, noise, seed)") },
    { "circles", N_("a circle inside a ring (n, noise, seed)") },
    { "xor", N_("four quadrants, opposite ones alike (n, noise, seed)") },
    { "blobs", N_("gaussian blobs (n, centers=3, noise, seed)") },
  };
  gboolean fm = espalier_dataset_fashion_mnist_available ();

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_main_entries (ctx, dentries, NULL);
  g_option_context_set_summary (ctx, _("Any IDX (.gz or raw) or CSV file can also be given by "
                                       "its path.\n"
                                       "With --export-csv, the dataset named by --data is cleaned "
                                       "as asked\n"
                                       "(--ffill, --mean-fill, --drop-duplicates, --standardize, "
                                       "--minmax) and written out."));
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    return usage_error (ctx, _("datasets: %s"), error->message);
  if (argc > 1)
    return usage_error (ctx, _("datasets: unexpected argument '%s'"), argv[1]);
  if (json)
    out_mode = OUT_JSON;
  if (export != NULL)
    {
      g_autoptr(EspalierDataset) ds = NULL;

      if (d.data == NULL)
        return usage_error (ctx, _("datasets: --export-csv needs --data"));
      if (out_mode == OUT_TTY)
        out_mode = OUT_PLAIN;
      ds = load_data (&d, NULL, 0.1, 0.2, 0, &error);
      if (ds == NULL)
        return fail (g_steal_pointer (&error), N_("loading the dataset"));
      if (!espalier_dataset_export_csv (ds, export, &error))
        return fail (g_steal_pointer (&error), N_("exporting the dataset"));
      if (out_mode == OUT_JSON)
        {
          JsonBuilder *b = json_event ("exported");
          json_str (b, "path", export);
          json_finish (b);
        }
      else
        g_print (_("Wrote %s\n"), export);
      return 0;
    }
  if (json)
    {
      JsonBuilder *b = json_event ("datasets");

      json_builder_set_member_name (b, "datasets");
      json_builder_begin_array (b);
      json_builder_begin_object (b);
      json_str (b, "name", "fashion-mnist");
      json_str (b, "path", espalier_dataset_fashion_mnist_dir ());
      json_builder_set_member_name (b, "installed");
      json_builder_add_boolean_value (b, fm);
      json_builder_end_object (b);
      for (guint i = 0; i < G_N_ELEMENTS (gens); i++)
        {
          json_builder_begin_object (b);
          json_str (b, "name", gens[i].name);
          json_str (b, "about", gens[i].about);
          json_builder_end_object (b);
        }
      json_builder_end_array (b);
      json_finish (b);
      return 0;
    }
  g_print ("%-14s %s\n", "fashion-mnist",
           fm ? espalier_dataset_fashion_mnist_dir ()
              : _("not installed: apt-get install dataset-fashion-mnist"));
  for (guint i = 0; i < G_N_ELEMENTS (gens); i++)
    g_print (_("%-14s generated: %s\n"), gens[i].name, _(gens[i].about));
  g_print (_("%-14s any IDX or CSV file, by path\n"), "FILE");
  return 0;
}

/* ------------------------------------------------------------------------------ */
/* bench */

static int
compare_double (gconstpointer a, gconstpointer b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return (x > y) - (x < y);
}

static int
cmd_bench (int argc, char **argv)
{
  g_auto(DataOpts) d = { 0 };
  g_autofree GOptionEntry *dentries = data_entries (&d);
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("[MODEL.json] - time inference"));
  g_autoptr(GError) error = NULL;
  g_autofree char *model_name = NULL;
  g_autofree float *x = NULL;
  int rows = 10000, reps = 20000, threads = 0;
  gboolean json = FALSE, tf32 = FALSE;
  g_autofree char *device = NULL, *fallback = NULL, *device_name = NULL;
  gint device_choice;
  EspalierModelInfo info;
  EsModel *model = NULL;
  EsBackend *be;
  EsInfer *one, *big;
  EsError es = { 0 };
  double t0, lat_us, big_ms;
  g_autofree double *rounds = NULL;
  gint64 D;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_STRING, &model_name, _("An untrained template instead of a file (mlp)"), "NAME" },
    { "rows", 'r', 0, G_OPTION_ARG_INT, &rows, _("Rows of the large batch (10000)"), "N" },
    { "reps", 0, 0, G_OPTION_ARG_INT, &reps, _("Batch-1 repetitions (20000)"), "N" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, _("Compute threads (default: all cores)"), "N" },
    DEVICE_ENTRIES (device, tf32),
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, _("JSON output"), NULL },
    { NULL }
  };

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_main_entries (ctx, dentries, NULL);
  g_option_context_set_summary (ctx, _("Batch-1 latency and the time of one large batch on the "
                                       "chosen device (--device),\n"
                                       "with inputs of 0.5 as the ONNX Runtime peer uses."));
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    return usage_error (ctx, _("bench: %s"), error->message);
  if (argc > 2 || (argc == 2 && model_name != NULL))
    return usage_error (ctx, _("bench: name one model file or give --model"));
  if (argc == 2 && d.data != NULL)
    return usage_error (ctx, _("bench: --data only sizes a --model template; a model file has "
                               "its own shape"));
  if (rows <= 0 || reps <= 0 || threads < 0)
    return usage_error (ctx, _("bench: --rows and --reps must be positive"));
  if (!device_arg (device, &device_choice, &error))
    return usage_error (ctx, _("bench: %s"), error->message);
  if (json)
    out_mode = OUT_JSON;

  espalier_model_info_init (&info);
  if (argc == 2)
    model = espalier_model_load (argv[1], &info, &error);
  else
    {
      EsShape in = { .rank = 3, .dims = { 1, 28, 28 } };

      if (d.data != NULL)
        {
          g_autoptr(EspalierDataset) ds = NULL;

          out_mode = json ? OUT_JSON : OUT_PLAIN;
          ds = load_data (&d, NULL, 0.1, 0.2, 0, &error);
          if (ds == NULL)
            return fail (g_steal_pointer (&error), N_("loading the dataset"));
          in = dataset_shape (ds);
        }
      model = espalier_model_from_template (model_name ? model_name : "mlp", &in, 10, NULL, &error);
      if (model != NULL)
        es_model_init (model, 1);
    }
  if (model == NULL)
    {
      espalier_model_info_clear (&info);
      return fail (g_steal_pointer (&error), N_("reading the model"));
    }

  be = espalier_backend_new (device_choice, (guint) threads, NULL, tf32, &fallback, &error);
  if (be == NULL)
    {
      es_model_free (model);
      espalier_model_info_clear (&info);
      return fail (g_steal_pointer (&error), N_("starting the backend"));
    }
  {
    EsShape in = es_model_input_shape (model);
    D = es_shape_size (&in);
  }
  x = g_new (float, (gsize) rows * (gsize) D);
  for (gsize i = 0; i < (gsize) rows * (gsize) D; i++)
    x[i] = 0.5f;
  one = es_infer_new (model, be, 1, &es);
  big = one ? es_infer_new (model, be, rows, &es) : NULL;
  if (big == NULL)
    {
      espalier_error_from_es (&error, &es, NULL);
      es_infer_free (one);
      es_backend_free (be);
      es_model_free (model);
      espalier_model_info_clear (&info);
      return fail (g_steal_pointer (&error), N_("preparing inference"));
    }

  /* Batch 1: the median of 10 rounds of reps/10 calls, after a warm-up. */
  for (int i = 0; i < 2000; i++)
    es_infer_run (one, x, 1);
  rounds = g_new (double, 10);
  for (int r = 0; r < 10; r++)
    {
      int n = MAX (reps / 10, 1);

      t0 = es_now ();
      for (int i = 0; i < n; i++)
        es_infer_run (one, x, 1);
      rounds[r] = (es_now () - t0) / n * 1e6;
    }
  qsort (rounds, 10, sizeof (double), compare_double);
  lat_us = rounds[4];

  es_infer_run (big, x, rows);
  for (int r = 0; r < 10; r++)
    {
      t0 = es_now ();
      es_infer_run (big, x, rows);
      rounds[r] = (es_now () - t0) * 1e3;
    }
  qsort (rounds, 10, sizeof (double), compare_double);
  big_ms = rounds[4];
  if (!espalier_backend_check (be, &error))
    {
      es_infer_free (big);
      es_infer_free (one);
      es_backend_free (be);
      es_model_free (model);
      espalier_model_info_clear (&info);
      return fail (g_steal_pointer (&error), N_("running inference"));
    }

  print_fallback (fallback);
  device_name = espalier_device_describe (espalier_backend_get_device (be));
  if (out_mode == OUT_JSON)
    {
      JsonBuilder *b = json_event ("bench");
      g_autofree char *device_id = espalier_device_to_string (espalier_backend_get_device (be));

      json_str (b, "device", device_id);
      json_str (b, "device_name", device_name);
      json_int (b, "threads", be->n_threads);
      json_double (b, "latency_batch1_us", lat_us);
      json_int (b, "rows", rows);
      json_double (b, "batch_ms", big_ms);
      json_double (b, "rows_per_second", rows / (big_ms / 1e3));
      json_finish (b);
    }
  else
    {
      g_print (_("device %s\n"), device_name);
      g_print (_("threads %d\n"), be->n_threads);
      g_print (_("batch-1 latency: %.2f us (median of 10 rounds)\n"), lat_us);
      g_print (_("%d rows: %.3f ms (%.0f rows/s)\n"), rows, big_ms, rows / (big_ms / 1e3));
    }
  es_infer_free (big);
  es_infer_free (one);
  es_backend_free (be);
  es_model_free (model);
  espalier_model_info_clear (&info);
  return 0;
}

/* ------------------------------------------------------------------------------ */
/* prune, quantize, reduce, sensitivity, compare */

/* An integer option not given (doubles use NaN). */
#define UNSET_INT G_MININT

/* "1,3" (1-based, as `info` numbers layers) into a selection of n_layers; every chosen
 * layer must satisfy weight_only (a Dense or Conv2D layer). */
static gboolean
parse_layer_list (const char     *text,
                  const EsModel  *model,
                  gboolean      **sel,
                  GError        **error)
{
  g_auto(GStrv) parts = g_strsplit (text, ",", -1);
  int n = es_model_n_layers (model);
  g_autofree gboolean *v = g_new0 (gboolean, n);

  if (parts[0] == NULL)
    {
      g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, _("an empty list"));
      return FALSE;
    }
  for (int i = 0; parts[i] != NULL; i++)
    {
      guint64 k;
      char *p = g_strstrip (parts[i]);

      if (!g_ascii_string_to_unsigned (p, 10, 1, (guint64) n, &k, NULL))
        {
          g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                       _("'%s' is not a layer number from 1 to %d"), p, n);
          return FALSE;
        }
      if (!es_prune_layer_is_prunable (model, (int) k - 1))
        {
          g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                       _("layer %s is a %s layer, not Dense or Conv2D"), p,
                       es_layer_kind_title (es_model_layer (model, (int) k - 1)->spec.kind));
          return FALSE;
        }
      v[k - 1] = TRUE;
    }
  *sel = g_steal_pointer (&v);
  return TRUE;
}

/* "0.5,0.7,0.9" into an array of doubles in [0, 1). */
static gboolean
parse_levels (const char *text, GArray **levels)
{
  g_auto(GStrv) parts = g_strsplit (text, ",", -1);
  g_autoptr(GArray) a = g_array_new (FALSE, FALSE, sizeof (double));

  for (int i = 0; parts[i] != NULL; i++)
    {
      char *p = g_strstrip (parts[i]), *end;
      double v = g_ascii_strtod (p, &end);

      if (end == p || *end != '\0' || !(v >= 0 && v < 1))
        return FALSE;
      g_array_append_val (a, v);
    }
  if (a->len == 0)
    return FALSE;
  *levels = g_steal_pointer (&a);
  return TRUE;
}

/* A model file with everything loading it brought. */
typedef struct {
  EspalierModelInfo info;
  EsModel          *model;
  EsQuant          *quant;
} LoadedModel;

static void
loaded_model_clear (LoadedModel *lm)
{
  espalier_model_info_clear (&lm->info);
  g_clear_pointer (&lm->model, es_model_free);
  g_clear_pointer (&lm->quant, es_quant_free);
}

static gboolean
load_model_file (const char *path, LoadedModel *lm, GError **error)
{
  espalier_model_info_init (&lm->info);
  lm->model = espalier_model_load_variant (path, &lm->info, &lm->quant, error);
  return lm->model != NULL;
}

/* The name a model file goes by: its saved name, or its base name. */
static char *
model_file_name (const char *path, const EspalierModelInfo *info)
{
  g_autofree char *base = g_path_get_basename (path);

  if (info->name != NULL && info->name[0] != '\0')
    return g_strdup (info->name);
  if (g_str_has_suffix (base, ".json"))
    base[strlen (base) - 5] = '\0';
  return g_steal_pointer (&base);
}

/* The dataset a saved model was trained on, split and preprocessed the same way. */
static EspalierDataset *
load_model_data (DataOpts *d, const EspalierModelInfo *info, GError **error)
{
  data_opts_from_json (d, info->preprocessing);
  return load_data (d, info->dataset_source, info->train.val_fraction,
                    info->train.test_fraction, info->train.seed, error);
}

/* "dir/mlp.json" + "-pruned" -> "dir/mlp-pruned.json". */
static char *
derived_output (const char *input, const char *suffix)
{
  g_autofree char *json = NULL;

  espalier_model_paths (input, &json, NULL);
  if (g_str_has_suffix (json, ".json"))
    json[strlen (json) - 5] = '\0';
  return g_strconcat (json, suffix, ".json", NULL);
}

static void
print_variant (EspalierVariant *v, double parent_accuracy, guint64 parent_bytes)
{
  char a[32], b[32];
  double acc = espalier_variant_get_accuracy (v);
  gint64 params = espalier_variant_get_n_params (v);

  if (out_mode == OUT_JSON)
    {
      JsonBuilder *j = json_event ("variant");

      json_str (j, "name", espalier_variant_get_name (v));
      json_str (j, "kind", espalier_variant_get_kind (v));
      json_str (j, "parent", espalier_variant_get_parent (v));
      json_str (j, "description", espalier_variant_get_description (v));
      json_str (j, "format", espalier_variant_get_format (v));
      json_str (j, "exec", espalier_variant_get_exec (v));
      json_double (j, "accuracy", acc);
      json_double (j, "parent_accuracy", parent_accuracy);
      json_double (j, "latency_us", espalier_variant_get_latency_us (v));
      json_double (j, "latency_p95_us", espalier_variant_get_latency_p95_us (v));
      json_double (j, "rows_per_second", espalier_variant_get_rows_per_second (v));
      json_double (j, "dense_latency_us", espalier_variant_get_dense_latency_us (v));
      json_double (j, "sparse_latency_us", espalier_variant_get_sparse_latency_us (v));
      json_int (j, "size_bytes", (gint64) espalier_variant_get_size_bytes (v));
      json_int (j, "n_params", params);
      json_int (j, "nonzeros", espalier_variant_get_nonzeros (v));
      json_double (j, "sparsity", espalier_variant_get_sparsity (v));
      json_int (j, "flops", espalier_variant_get_flops (v));
      json_finish (j);
      return;
    }
  if (out_mode == OUT_TTY)
    fputs ("\r\033[K", stderr);
  g_print (_("Variant “%s” (%s) of “%s”\n"), espalier_variant_get_name (v),
           espalier_variant_get_kind (v),
           espalier_variant_get_parent (v) ? espalier_variant_get_parent (v) : "");
  g_print ("  %s\n", espalier_variant_get_description (v));
  if (isfinite (parent_accuracy))
    g_print (_("  test accuracy    %.2f%% (parent %.2f%%, %+.2f points)\n"), 100 * acc,
             100 * parent_accuracy, 100 * (acc - parent_accuracy));
  else
    g_print (_("  test accuracy    %.2f%%\n"), 100 * acc);
  g_print (_("  latency          %.2f us median, %.2f us 95th percentile at batch 1 (%s "
             "kernels)\n"),
           espalier_variant_get_latency_us (v), espalier_variant_get_latency_p95_us (v),
           espalier_variant_get_exec (v) ? espalier_variant_get_exec (v) : "?");
  if (isfinite (espalier_variant_get_dense_latency_us (v))
      && isfinite (espalier_variant_get_sparse_latency_us (v)))
    g_print (_("  dense / sparse   %.2f us / %.2f us at batch 1\n"),
             espalier_variant_get_dense_latency_us (v),
             espalier_variant_get_sparse_latency_us (v));
  g_print (_("  throughput       %.0f rows/s at a large batch\n"),
           espalier_variant_get_rows_per_second (v));
  if (parent_bytes > 0)
    g_print (_("  size             %s (%s format; parent %s, %.2f× smaller)\n"),
             es_format_bytes (a, sizeof a, (double) espalier_variant_get_size_bytes (v)),
             espalier_variant_get_format (v), es_format_bytes (b, sizeof b, (double) parent_bytes),
             (double) parent_bytes / MAX (espalier_variant_get_size_bytes (v), 1));
  else
    g_print (_("  size             %s (%s format)\n"),
             es_format_bytes (a, sizeof a, (double) espalier_variant_get_size_bytes (v)),
             espalier_variant_get_format (v));
  g_print (_("  parameters       %lld, %lld nonzero (%.1f%% zeros)\n"), (long long) params,
           (long long) espalier_variant_get_nonzeros (v), 100 * espalier_variant_get_sparsity (v));
  g_print (_("  FLOPs            %lld per row forward\n"),
           (long long) espalier_variant_get_flops (v));
}

typedef struct {
  RunState         run;
  EspalierVariant *variant;
} OptimizeState;

static void
on_optimized (GObject *source, GAsyncResult *result, gpointer user_data)
{
  OptimizeState *st = user_data;

  st->variant = espalier_optimize_finish (result, &st->run.error);
  st->run.ok = st->variant != NULL;
  g_main_loop_quit (st->run.loop);
}

/* Run one job on a worker with progress and Ctrl-C, as train does. */
static EspalierVariant *
run_job (EspalierDataset               *ds,
         EspalierVariant               *parent,
         const EspalierTrainOptions    *train,
         const EspalierOptimizeOptions *opts,
         const char * const            *taken,
         GError                       **error)
{
  OptimizeState st = { .variant = NULL };
  guint sigint_id;

  st.run.loop = g_main_loop_new (NULL, FALSE);
  st.run.cancellable = g_cancellable_new ();
  sigint_id = g_unix_signal_add (SIGINT, on_sigint, &st.run);
  espalier_optimize_async (ds, parent, train, opts, taken, st.run.cancellable, on_progress,
                           &st.run, NULL, on_optimized, &st);
  g_main_loop_run (st.run.loop);
  g_source_remove (sigint_id);
  g_main_loop_unref (st.run.loop);
  g_object_unref (st.run.cancellable);
  if (out_mode == OUT_TTY)
    fputs ("\r\033[K", stderr);
  if (!st.run.ok)
    {
      if (st.run.interrupted)
        {
          g_clear_error (&st.run.error);
          g_set_error (&st.run.error, G_IO_ERROR, G_IO_ERROR_CANCELLED,
                       _("stopped by Ctrl-C; nothing was saved"));
        }
      g_propagate_error (error, st.run.error);
      return NULL;
    }
  return st.variant;
}

/* Save v as path with the parent file's information (training options, so eval splits
 * the same way) and the variant's own test metrics. */
static gboolean
save_variant (EspalierVariant         *v,
              EspalierDataset         *ds,
              const EspalierModelInfo *parent_info,
              const char              *path,
              GError                 **error)
{
  EspalierModelInfo info = *parent_info;
  g_autoptr(EspalierSplit) split = NULL;
  EspalierMetrics m = { 0 };
  gboolean ok;

  split = espalier_split_new (ds, parent_info->train.val_fraction,
                              parent_info->train.test_fraction, parent_info->train.seed, error);
  if (split == NULL)
    return FALSE;
  if (split->test->len > 0
      && !espalier_evaluate_exec (espalier_variant_get_model (v), espalier_variant_get_quant (v),
                                  NULL, ds, (const guint32 *) split->test->data,
                                  split->test->len, 1, &m, error))
    return FALSE;
  /* Borrowed strings from the parent's info; only name and test are the variant's. */
  info.name = NULL;
  info.created = NULL;
  info.producer = NULL;
  info.test = m;
  ok = espalier_model_save_variant (espalier_variant_get_model (v), espalier_variant_get_quant (v),
                                    &info, path, error);
  espalier_metrics_clear (&m);
  if (ok)
    {
      if (out_mode == OUT_JSON)
        {
          JsonBuilder *b = json_event ("saved");
          json_str (b, "path", path);
          json_finish (b);
        }
      else
        g_print (_("Saved %s\n"), path);
    }
  return ok;
}

/* What prune, quantize and reduce share after parsing: load, run, print, save. */
typedef struct {
  const char              *command;
  const char              *input;
  const char              *output;      /* NULL: derived with suffix */
  const char              *suffix;
  const char              *layers;      /* --layers text, or NULL */
  const char              *keep_float;  /* --keep-float text, or NULL */
  int                      epochs;      /* -1: default */
  double                   lr;          /* -1: default */
  int                      threads;
  double                   seconds;
  gboolean                 compare;     /* reduce: the other recovery too */
} OptimizeRun;

static int
optimize_command (GOptionContext          *ctx,
                  DataOpts                *d,
                  const OptimizeRun       *run,
                  EspalierOptimizeOptions *opts)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(EspalierVariant) parent = NULL, variant = NULL, other = NULL;
  g_autofree char *output = NULL, *parent_name = NULL;
  LoadedModel lm = { 0 };
  double parent_acc;
  guint64 parent_bytes;
  int status = 1;

  if (load_model_file (run->input, &lm, &error) == FALSE)
    return fail (g_steal_pointer (&error), N_("loading the model"));
  if (run->layers != NULL && !parse_layer_list (run->layers, lm.model, &opts->layers, &error))
    {
      loaded_model_clear (&lm);
      return usage_error (ctx, _("%s: --layers %s: %s"), run->command, run->layers,
                          error->message);
    }
  if (run->keep_float != NULL
      && !parse_layer_list (run->keep_float, lm.model, &opts->keep_float, &error))
    {
      loaded_model_clear (&lm);
      return usage_error (ctx, _("%s: --keep-float %s: %s"), run->command, run->keep_float,
                          error->message);
    }
  if (opts->kind == ESPALIER_OPTIMIZE_REDUCE && opts->remove_layer >= 0
      && (opts->remove_layer >= es_model_n_layers (lm.model)
          || !es_prune_layer_is_prunable (lm.model, opts->remove_layer)))
    {
      int n = es_model_n_layers (lm.model);

      status = opts->remove_layer >= n
                 ? usage_error (ctx, _("%s: --layer %d: the model has %d layers"), run->command,
                                opts->remove_layer + 1, n)
                 : usage_error (ctx, _("%s: --layer %d is a %s layer, not Dense or Conv2D"),
                                run->command, opts->remove_layer + 1,
                                es_layer_kind_title (es_model_layer (lm.model, opts->remove_layer)->spec.kind));
      loaded_model_clear (&lm);
      return status;
    }
  if (run->epochs != UNSET_INT)
    opts->epochs = (guint) run->epochs;
  if (!isnan (run->lr))
    opts->lr = run->lr;
  opts->threads = (guint) MAX (run->threads, 1);
  if (run->seconds > 0)
    opts->latency_seconds = run->seconds;

  ds = load_model_data (d, &lm.info, &error);
  if (ds == NULL)
    {
      loaded_model_clear (&lm);
      return fail (g_steal_pointer (&error), N_("loading the dataset"));
    }
  parent_name = model_file_name (run->input, &lm.info);
  parent = espalier_variant_new (parent_name, "baseline", g_steal_pointer (&lm.model));
  if (lm.quant != NULL)
    espalier_variant_set_quant (parent, g_steal_pointer (&lm.quant));
  parent_acc = lm.info.test.rows > 0 ? lm.info.test.accuracy : NAN;
  parent_bytes = espalier_variant_get_size_bytes (parent);

  variant = run_job (ds, parent, &lm.info.train, opts, NULL, &error);
  if (variant == NULL)
    {
      status = fail (g_steal_pointer (&error), N_("optimizing"));
      goto out;
    }
  print_variant (variant, parent_acc, parent_bytes);
  output = run->output ? g_strdup (run->output) : derived_output (run->input, run->suffix);
  if (!save_variant (variant, ds, &lm.info, output, &error))
    {
      status = fail (g_steal_pointer (&error), N_("saving the variant"));
      goto out;
    }

  if (run->compare)
    {
      /* The other way of recovering, from the same start: what distillation is worth. */
      const char *taken[] = { espalier_variant_get_name (variant), NULL };
      g_autofree char *other_out = NULL, *base = NULL;
      double kd, ft;

      opts->distill = !opts->distill;
      if (out_mode != OUT_JSON)
        g_print (opts->distill ? _("For comparison: the same recovery by distillation\n")
                               : _("For comparison: the same recovery by plain fine-tuning\n"));
      other = run_job (ds, parent, &lm.info.train, opts, taken, &error);
      if (other == NULL)
        {
          status = fail (g_steal_pointer (&error), N_("optimizing"));
          goto out;
        }
      print_variant (other, parent_acc, parent_bytes);
      base = g_strdup (output);
      if (g_str_has_suffix (base, ".json"))
        base[strlen (base) - 5] = '\0';
      other_out = g_strconcat (base, opts->distill ? "-distilled" : "-finetuned", ".json", NULL);
      if (!save_variant (other, ds, &lm.info, other_out, &error))
        {
          status = fail (g_steal_pointer (&error), N_("saving the variant"));
          goto out;
        }
      kd = espalier_variant_get_accuracy (opts->distill ? other : variant);
      ft = espalier_variant_get_accuracy (opts->distill ? variant : other);
      if (out_mode == OUT_JSON)
        {
          JsonBuilder *b = json_event ("comparison");
          json_double (b, "parent_accuracy", parent_acc);
          json_double (b, "distilled_accuracy", kd);
          json_double (b, "finetuned_accuracy", ft);
          json_double (b, "recovered_fraction",
                       isfinite (parent_acc) && parent_acc > ft ? (kd - ft) / (parent_acc - ft) : NAN);
          json_finish (b);
        }
      else
        {
          g_print (_("Distillation %.2f%%, plain fine-tuning %.2f%%"), 100 * kd, 100 * ft);
          if (isfinite (parent_acc) && parent_acc > ft)
            g_print (_(", parent %.2f%%: distillation recovered %.0f%% of the %.2f points "
                       "fine-tuning alone left lost\n"),
                     100 * parent_acc, 100 * (kd - ft) / (parent_acc - ft), 100 * (parent_acc - ft));
          else
            g_print ("\n");
        }
    }
  if (out_mode == OUT_JSON)
    {
      JsonBuilder *b = json_event ("done");
      json_finish (b);
    }
  status = 0;

out:
  loaded_model_clear (&lm);
  return status;
}

/* Options every optimize command takes, beside the data options. */
#define OPTIMIZE_ENTRIES(r, json) \
  { "epochs", 'e', 0, G_OPTION_ARG_INT, &(r).epochs, _("Fine-tuning epochs (2)"), "N" }, \
  { "lr", 0, 0, G_OPTION_ARG_DOUBLE, &(r).lr, _("Fine-tuning learning rate (the training rate)"), "LR" }, \
  { "output", 'o', 0, G_OPTION_ARG_FILENAME, &(r).output, _("Save the variant as NAME.json + NAME.safetensors (default: next to the input)"), "NAME" }, \
  { "threads", 't', 0, G_OPTION_ARG_INT, &(r).threads, _("Threads for the latency measurement (1)"), "N" }, \
  { "seconds", 0, 0, G_OPTION_ARG_DOUBLE, &(r).seconds, _("Seconds spent measuring latency (1)"), "S" }, \
  { "json", 0, 0, G_OPTION_ARG_NONE, &(json), _("One JSON object per event on standard output"), NULL }

/* Common checks after parsing; 0 when fine. */
static int
check_optimize_args (GOptionContext *ctx, const char *cmd, int argc, char **argv,
                     OptimizeRun *r)
{
  if (argc != 2)
    return usage_error (ctx, _("%s: name one model file (NAME.json)"), cmd);
  if (r->epochs != UNSET_INT && r->epochs < 0)
    return usage_error (ctx, _("%s: --epochs cannot be negative"), cmd);
  if (!isnan (r->lr) && !(r->lr > 0 && isfinite (r->lr)))
    return usage_error (ctx, _("%s: --lr must be positive, not %g"), cmd, r->lr);
  if (r->threads < 0)
    return usage_error (ctx, _("%s: --threads cannot be negative"), cmd);
  if (r->seconds < 0 || !isfinite (r->seconds))
    return usage_error (ctx, _("%s: --seconds cannot be negative"), cmd);
  r->command = cmd;
  r->input = argv[1];
  return 0;
}

static int
cmd_prune (int argc, char **argv)
{
  g_auto(DataOpts) d = { 0 };
  g_autofree GOptionEntry *dentries = data_entries (&d);
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("MODEL.json - prune a saved model"));
  g_autoptr(GError) error = NULL;
  g_autofree char *scope = NULL, *method = NULL, *norm = NULL, *layers = NULL;
  double sparsity = NAN, keep = NAN, initial = NAN;
  int events = UNSET_INT;
  gboolean json = FALSE;
  OptimizeRun r = { .epochs = UNSET_INT, .lr = NAN };
  EspalierOptimizeOptions opts;
  int status;
  GOptionEntry entries[] = {
    { "sparsity", 's', 0, G_OPTION_ARG_DOUBLE, &sparsity, _("Fraction of weights to prune, from 0 to below 1 (0.9)"), "F" },
    { "scope", 0, 0, G_OPTION_ARG_STRING, &scope, _("layer: each layer reaches the sparsity; global: one threshold over all (global)"), "layer|global" },
    { "method", 0, 0, G_OPTION_ARG_STRING, &method, _("magnitude (one shot), gradual (cubic schedule while fine-tuning), structured (whole neurons and channels), 2:4 (magnitude)"), "NAME" },
    { "initial-sparsity", 0, 0, G_OPTION_ARG_DOUBLE, &initial, _("gradual: the sparsity the schedule starts from (0)"), "F" },
    { "events", 0, 0, G_OPTION_ARG_INT, &events, _("gradual: pruning steps of the schedule (10)"), "N" },
    { "keep", 0, 0, G_OPTION_ARG_DOUBLE, &keep, _("structured: fraction of the units each layer keeps (0.5)"), "F" },
    { "norm", 0, 0, G_OPTION_ARG_STRING, &norm, _("structured: rank units by the l1 or l2 norm of their weights (l1)"), "l1|l2" },
    { "layers", 0, 0, G_OPTION_ARG_STRING, &layers, _("Only these layers, numbered as `espalier-cli info` does (default: all that apply)"), "LIST" },
    OPTIMIZE_ENTRIES (r, json),
    { NULL }
  };

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_main_entries (ctx, dentries, NULL);
  g_option_context_set_summary (ctx, _("Prunes a saved model, fine-tunes it with the pruned weights "
                                       "held at zero, measures\n"
                                       "the variant (test accuracy, latency, size) and saves it."));
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    return usage_error (ctx, _("prune: %s"), error->message);
  if ((status = check_optimize_args (ctx, "prune", argc, argv, &r)) != 0)
    return status;
  if (json)
    out_mode = OUT_JSON;

  espalier_optimize_options_init (&opts);
  if (method == NULL || g_str_equal (method, "magnitude"))
    opts.kind = ESPALIER_OPTIMIZE_PRUNE;
  else if (g_str_equal (method, "gradual"))
    opts.kind = ESPALIER_OPTIMIZE_PRUNE_GRADUAL;
  else if (g_str_equal (method, "structured"))
    opts.kind = ESPALIER_OPTIMIZE_PRUNE_STRUCTURED;
  else if (g_str_equal (method, "2:4"))
    opts.kind = ESPALIER_OPTIMIZE_PRUNE_2_4;
  else
    return usage_error (ctx, _("prune: unknown --method '%s' (magnitude, gradual, structured, "
                               "2:4)"), method);
  if (!isnan (sparsity))
    {
      if (!(sparsity >= 0 && sparsity < 1))
        return usage_error (ctx, _("prune: --sparsity must be at least 0 and below 1, not %g"),
                            sparsity);
      if (opts.kind == ESPALIER_OPTIMIZE_PRUNE_STRUCTURED || opts.kind == ESPALIER_OPTIMIZE_PRUNE_2_4)
        return usage_error (ctx, _("prune: --sparsity is for magnitude and gradual pruning; "
                                   "structured pruning takes --keep"));
      opts.sparsity = sparsity;
    }
  if (scope != NULL)
    {
      if (g_str_equal (scope, "layer"))
        opts.scope = ES_PRUNE_PER_LAYER;
      else if (g_str_equal (scope, "global"))
        opts.scope = ES_PRUNE_GLOBAL;
      else
        return usage_error (ctx, _("prune: unknown --scope '%s' (layer, global)"), scope);
    }
  if (!isnan (initial))
    {
      if (!(initial >= 0 && initial <= opts.sparsity))
        return usage_error (ctx, _("prune: --initial-sparsity must be between 0 and the "
                                   "sparsity, not %g"), initial);
      opts.initial_sparsity = initial;
    }
  if (events != UNSET_INT)
    {
      if (events < 1)
        return usage_error (ctx, _("prune: --events must be at least 1, not %d"), events);
      opts.prune_events = (guint) events;
    }
  if (!isnan (keep))
    {
      if (!(keep > 0 && keep < 1))
        return usage_error (ctx, _("prune: --keep must be above 0 and below 1, not %g"), keep);
      opts.keep_fraction = keep;
    }
  if (norm != NULL)
    {
      if (g_ascii_strcasecmp (norm, "l1") == 0)
        opts.norm = ES_NORM_L1;
      else if (g_ascii_strcasecmp (norm, "l2") == 0)
        opts.norm = ES_NORM_L2;
      else
        return usage_error (ctx, _("prune: unknown --norm '%s' (l1, l2)"), norm);
    }
  r.layers = layers;
  r.suffix = opts.kind == ESPALIER_OPTIMIZE_PRUNE_STRUCTURED ? "-structured"
             : opts.kind == ESPALIER_OPTIMIZE_PRUNE_2_4 ? "-2of4" : "-pruned";
  status = optimize_command (ctx, &d, &r, &opts);
  espalier_optimize_options_clear (&opts);
  g_free ((char *) r.output);
  return status;
}

static int
cmd_quantize (int argc, char **argv)
{
  g_auto(DataOpts) d = { 0 };
  g_autofree GOptionEntry *dentries = data_entries (&d);
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("MODEL.json - quantize a saved model"));
  g_autoptr(GError) error = NULL;
  g_autofree char *mode = NULL, *calib = NULL, *keep_float = NULL;
  double pct = NAN;
  int batches = UNSET_INT;
  gboolean json = FALSE, reduce_range = FALSE;
  OptimizeRun r = { .epochs = UNSET_INT, .lr = NAN };
  EspalierOptimizeOptions opts;
  int status;
  GOptionEntry entries[] = {
    { "mode", 0, 0, G_OPTION_ARG_STRING, &mode, _("int8-static, int8-dynamic, fp16, bf16 or qat (int8-static)"), "MODE" },
    { "calibration", 0, 0, G_OPTION_ARG_STRING, &calib, _("int8-static: how the activation ranges are chosen: minmax, percentile, mse (minmax)"), "METHOD" },
    { "percentile", 0, 0, G_OPTION_ARG_DOUBLE, &pct, _("percentile calibration: the percentile of |x| kept (99.99)"), "P" },
    { "calib-batches", 0, 0, G_OPTION_ARG_INT, &batches, _("Training batches the calibration observes (8)"), "N" },
    { "keep-float", 0, 0, G_OPTION_ARG_STRING, &keep_float, _("Layers kept in float, numbered as `espalier-cli info` does"), "LIST" },
    { "reduce-range", 0, 0, G_OPTION_ARG_NONE, &reduce_range, _("7-bit activations, for CPUs without VNNI"), NULL },
    OPTIMIZE_ENTRIES (r, json),
    { NULL }
  };

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_main_entries (ctx, dentries, NULL);
  g_option_context_set_summary (ctx, _("Quantizes a saved model (post-training int8, dynamic int8, "
                                       "fp16, bf16, or\n"
                                       "quantization-aware training), measures the variant on the "
                                       "kernels that run it and saves it."));
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    return usage_error (ctx, _("quantize: %s"), error->message);
  if ((status = check_optimize_args (ctx, "quantize", argc, argv, &r)) != 0)
    return status;
  if (json)
    out_mode = OUT_JSON;

  espalier_optimize_options_init (&opts);
  opts.kind = ESPALIER_OPTIMIZE_QUANTIZE;
  if (mode == NULL || g_str_equal (mode, "int8-static") || g_str_equal (mode, "int8"))
    opts.quant_mode = ES_QUANT_INT8_STATIC;
  else if (g_str_equal (mode, "qat"))
    {
      opts.kind = ESPALIER_OPTIMIZE_QAT;
      opts.quant_mode = ES_QUANT_INT8_STATIC;
    }
  else if (!es_quant_mode_from_name (mode, &opts.quant_mode) || opts.quant_mode == ES_QUANT_FP32)
    return usage_error (ctx, _("quantize: unknown --mode '%s' (int8-static, int8-dynamic, fp16, "
                               "bf16, qat)"), mode);
  if (calib != NULL && !es_calib_method_from_name (calib, &opts.calib))
    return usage_error (ctx, _("quantize: unknown --calibration '%s' (minmax, percentile, mse)"),
                        calib);
  if ((calib != NULL || !isnan (pct) || batches != UNSET_INT)
      && !(opts.kind == ESPALIER_OPTIMIZE_QUANTIZE && opts.quant_mode == ES_QUANT_INT8_STATIC))
    return usage_error (ctx, _("quantize: --calibration, --percentile and --calib-batches are "
                               "for --mode int8-static"));
  if (!isnan (pct))
    {
      if (!(pct > 0 && pct <= 100))
        return usage_error (ctx, _("quantize: --percentile must be above 0 and at most 100, not "
                                   "%g"), pct);
      opts.percentile = pct;
    }
  if (batches != UNSET_INT)
    {
      if (batches < 1)
        return usage_error (ctx, _("quantize: --calib-batches must be at least 1, not %d"),
                            batches);
      opts.calib_batches = (guint) batches;
    }
  if (opts.kind == ESPALIER_OPTIMIZE_QAT && r.epochs == 0)
    return usage_error (ctx, _("quantize: --mode qat trains: --epochs must be at least 1"));
  opts.reduce_range = reduce_range;
  r.keep_float = keep_float;
  r.suffix = opts.kind == ESPALIER_OPTIMIZE_QAT ? "-qat"
             : opts.quant_mode == ES_QUANT_INT8_STATIC ? "-int8"
             : opts.quant_mode == ES_QUANT_INT8_DYNAMIC ? "-int8-dynamic"
             : opts.quant_mode == ES_QUANT_FP16 ? "-fp16" : "-bf16";
  status = optimize_command (ctx, &d, &r, &opts);
  espalier_optimize_options_clear (&opts);
  g_free ((char *) r.output);
  return status;
}

static int
cmd_reduce (int argc, char **argv)
{
  g_auto(DataOpts) d = { 0 };
  g_autofree GOptionEntry *dentries = data_entries (&d);
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("MODEL.json - remove a layer"));
  g_autoptr(GError) error = NULL;
  int layer = 0;
  double temperature = NAN, alpha = NAN;
  gboolean json = FALSE, distill = FALSE, no_distill = FALSE, compare = FALSE;
  OptimizeRun r = { .epochs = UNSET_INT, .lr = NAN };
  EspalierOptimizeOptions opts;
  int status;
  GOptionEntry entries[] = {
    { "layer", 'l', 0, G_OPTION_ARG_INT, &layer, _("The Dense or Conv2D layer to remove, numbered as `espalier-cli info` does (default: the last hidden one)"), "N" },
    { "distill", 0, 0, G_OPTION_ARG_NONE, &distill, _("Recover by distillation from the original model (the default)"), NULL },
    { "no-distill", 0, 0, G_OPTION_ARG_NONE, &no_distill, _("Recover by plain fine-tuning"), NULL },
    { "temperature", 'T', 0, G_OPTION_ARG_DOUBLE, &temperature, _("Distillation temperature (4)"), "T" },
    { "alpha", 0, 0, G_OPTION_ARG_DOUBLE, &alpha, _("Weight of the softened targets, 0 to 1 (0.7)"), "A" },
    { "compare", 0, 0, G_OPTION_ARG_NONE, &compare, _("Also recover the other way (plain fine-tuning or distillation), save it, and say how much distillation recovered"), NULL },
    OPTIMIZE_ENTRIES (r, json),
    { NULL }
  };

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_main_entries (ctx, dentries, NULL);
  g_option_context_set_summary (ctx, _("Removes a hidden layer of a saved model, repairs its "
                                       "neighbours' shapes, recovers\n"
                                       "accuracy by distillation from the original or by plain "
                                       "fine-tuning, measures the variant\n"
                                       "and saves it."));
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    return usage_error (ctx, _("reduce: %s"), error->message);
  if ((status = check_optimize_args (ctx, "reduce", argc, argv, &r)) != 0)
    return status;
  if (json)
    out_mode = OUT_JSON;
  if (distill && no_distill)
    return usage_error (ctx, _("reduce: give only one of --distill and --no-distill"));
  if (layer < 0)
    return usage_error (ctx, _("reduce: --layer must be a layer number from 1, not %d"), layer);
  if (!isnan (temperature) && !(temperature > 0 && isfinite (temperature)))
    return usage_error (ctx, _("reduce: --temperature must be positive, not %g"), temperature);
  if (!isnan (alpha) && !(alpha >= 0 && alpha <= 1))
    return usage_error (ctx, _("reduce: --alpha must be between 0 and 1, not %g"), alpha);
  if (compare && r.epochs == 0)
    return usage_error (ctx, _("reduce: --compare compares two ways of recovering, and --epochs 0 "
                               "recovers nothing"));

  espalier_optimize_options_init (&opts);
  opts.kind = ESPALIER_OPTIMIZE_REDUCE;
  opts.remove_layer = layer - 1;   /* 0 (not given) becomes -1: the default */
  opts.distill = !no_distill;
  if (!isnan (temperature))
    opts.temperature = temperature;
  if (!isnan (alpha))
    opts.alpha = alpha;
  r.compare = compare;
  r.suffix = "-reduced";
  status = optimize_command (ctx, &d, &r, &opts);
  espalier_optimize_options_clear (&opts);
  g_free ((char *) r.output);
  return status;
}

static int
cmd_sensitivity (int argc, char **argv)
{
  g_auto(DataOpts) d = { 0 };
  g_autofree GOptionEntry *dentries = data_entries (&d);
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("MODEL.json - accuracy with one layer "
                                                          "at a time pruned or quantized"));
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(EspalierVariant) parent = NULL;
  g_autoptr(GArray) levels = NULL, rows = NULL;
  g_autofree char *kind = NULL, *level_text = NULL, *name = NULL;
  gboolean json = FALSE;
  EspalierSensitivityKind k = ESPALIER_SENSITIVITY_PRUNE;
  LoadedModel lm = { 0 };
  RunState st = { 0 };
  GOptionEntry entries[] = {
    { "kind", 'k', 0, G_OPTION_ARG_STRING, &kind, _("prune (magnitude, no fine-tuning) or quantize (int8) (prune)"), "KIND" },
    { "levels", 0, 0, G_OPTION_ARG_STRING, &level_text, _("prune: the sparsities to try (0.5,0.7,0.9)"), "LIST" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, _("JSON output"), NULL },
    { NULL }
  };

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_main_entries (ctx, dentries, NULL);
  g_option_context_set_summary (ctx, _("Validation accuracy with each Dense and Conv2D layer alone "
                                       "pruned to each level,\n"
                                       "or alone quantized to int8: the layers that can take it "
                                       "and those that cannot."));
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    return usage_error (ctx, _("sensitivity: %s"), error->message);
  if (argc != 2)
    return usage_error (ctx, _("sensitivity: name one model file (NAME.json)"));
  if (kind != NULL && g_str_equal (kind, "quantize"))
    k = ESPALIER_SENSITIVITY_QUANTIZE;
  else if (kind != NULL && !g_str_equal (kind, "prune"))
    return usage_error (ctx, _("sensitivity: unknown --kind '%s' (prune, quantize)"), kind);
  if (level_text != NULL && k == ESPALIER_SENSITIVITY_QUANTIZE)
    return usage_error (ctx, _("sensitivity: --levels is for --kind prune"));
  if (!parse_levels (level_text ? level_text : "0.5,0.7,0.9", &levels))
    return usage_error (ctx, _("sensitivity: --levels %s: give sparsities from 0 to below 1, "
                               "such as 0.5,0.7,0.9"), level_text);
  if (json)
    out_mode = OUT_JSON;

  if (!load_model_file (argv[1], &lm, &error))
    return fail (g_steal_pointer (&error), N_("loading the model"));
  ds = load_model_data (&d, &lm.info, &error);
  if (ds == NULL)
    {
      loaded_model_clear (&lm);
      return fail (g_steal_pointer (&error), N_("loading the dataset"));
    }
  name = model_file_name (argv[1], &lm.info);
  parent = espalier_variant_new (name, "baseline", g_steal_pointer (&lm.model));
  if (out_mode == OUT_TTY)
    out_mode = OUT_PLAIN;   /* steps count evaluations, not batches of an epoch */
  rows = espalier_sensitivity_scan (ds, parent, &lm.info.train, k, (const double *) levels->data,
                                    levels->len, NULL, on_progress, &st, &error);
  if (rows == NULL)
    {
      loaded_model_clear (&lm);
      return fail (g_steal_pointer (&error), N_("scanning"));
    }
  if (out_mode == OUT_JSON)
    {
      JsonBuilder *b = json_event ("sensitivity");

      json_str (b, "kind", k == ESPALIER_SENSITIVITY_PRUNE ? "prune" : "quantize");
      json_builder_set_member_name (b, "rows");
      json_builder_begin_array (b);
      for (guint i = 0; i < rows->len; i++)
        {
          const EspalierSensitivityRow *row = &g_array_index (rows, EspalierSensitivityRow, i);

          json_builder_begin_object (b);
          json_int (b, "layer", row->layer + 1);
          json_str (b, "kind", es_layer_kind_name (es_model_layer (espalier_variant_get_model (parent), (int) row->layer)->spec.kind));
          json_double (b, "level", row->level);
          json_double (b, "accuracy", row->accuracy);
          json_double (b, "baseline", row->baseline);
          json_builder_end_object (b);
        }
      json_builder_end_array (b);
      json_finish (b);
    }
  else
    {
      const char *c_layer = C_("column", "layer"), *c_level = C_("column", "level");
      const char *c_acc = C_("column", "accuracy"), *c_drop = C_("column", "change");

      g_print ("%-*s %*s %*s %*s\n", field_width (c_layer, 14), c_layer, field_width (c_level, 9),
               c_level, field_width (c_acc, 9), c_acc, field_width (c_drop, 9), c_drop);
      for (guint i = 0; i < rows->len; i++)
        {
          const EspalierSensitivityRow *row = &g_array_index (rows, EspalierSensitivityRow, i);
          g_autofree char *lname = g_strdup_printf ("%u %s", row->layer + 1,
                                                    es_layer_kind_title (es_model_layer (espalier_variant_get_model (parent), (int) row->layer)->spec.kind));
          g_autofree char *lvl = row->level < 0 ? g_strdup ("int8")
                                                : g_strdup_printf ("%.0f%%", 100 * row->level);

          g_print ("%-14s %9s %8.2f%% %+9.2f\n", lname, lvl, 100 * row->accuracy,
                   100 * (row->accuracy - row->baseline));
        }
      if (rows->len > 0)
        g_print (_("unmodified: %.2f%% on the same rows; change in points\n"),
                 100 * g_array_index (rows, EspalierSensitivityRow, 0).baseline);
    }
  loaded_model_clear (&lm);
  return 0;
}

static int
cmd_compare (int argc, char **argv)
{
  g_auto(DataOpts) d = { 0 };
  g_autofree GOptionEntry *dentries = data_entries (&d);
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("MODEL.json... - measure saved models "
                                                          "side by side"));
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) variants = g_ptr_array_new_with_free_func (g_object_unref);
  g_autofree char *csv = NULL, *json_path = NULL;
  int threads = 1, large_batch = 256;
  double seconds = 1;
  GOptionEntry entries[] = {
    { "csv", 0, 0, G_OPTION_ARG_FILENAME, &csv, _("Write the table as CSV"), "FILE" },
    { "batch", 'b', 0, G_OPTION_ARG_INT, &large_batch, _("Rows of the batch the throughput is measured at (256)"), "N" },
    { "json", 0, 0, G_OPTION_ARG_FILENAME, &json_path, _("Write the table as a JSON array"), "FILE" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, _("Threads for the latency measurement (1)"), "N" },
    { "seconds", 0, 0, G_OPTION_ARG_DOUBLE, &seconds, _("Seconds spent measuring each model's latency (1)"), "S" },
    { NULL }
  };
  const char *c_name = C_("column", "variant"), *c_fmt = C_("column", "format");
  const char *c_acc = C_("column", "accuracy"), *c_lat = C_("column", "us b=1");
  const char *c_p95 = C_("column", "p95 us"), *c_rps = C_("column", "rows/s");
  const char *c_size = C_("column", "size"), *c_nz = C_("column", "nonzeros");
  const char *c_flops = C_("column", "FLOPs/row");

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_main_entries (ctx, dentries, NULL);
  g_option_context_set_summary (ctx, _("Test accuracy (on each model's own test split), batch-1 "
                                       "latency, throughput, size,\n"
                                       "nonzeros and FLOPs of saved models, as a table; --csv and "
                                       "--json also write it to files."));
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    return usage_error (ctx, _("compare: %s"), error->message);
  if (argc < 2)
    return usage_error (ctx, _("compare: name at least one model file (NAME.json)"));
  if (threads < 1)
    return usage_error (ctx, _("compare: --threads must be at least 1, not %d"), threads);
  if (large_batch < 1 || large_batch > 65536)
    return usage_error (ctx, _("compare: --batch must be between 1 and 65536, not %d"), large_batch);
  if (!(seconds > 0 && isfinite (seconds)))
    return usage_error (ctx, _("compare: --seconds must be positive, not %g"), seconds);
  if (out_mode == OUT_TTY)
    out_mode = OUT_PLAIN;

  for (int i = 1; i < argc; i++)
    {
      g_auto(DataOpts) di = { 0 };
      g_autoptr(EspalierDataset) ds = NULL;
      g_autoptr(EspalierSplit) split = NULL;
      g_autofree char *name = NULL;
      LoadedModel lm = { 0 };
      EspalierMetrics m = { 0 };
      EspalierLatency lat;
      EspalierVariant *v;
      const char *kind;

      di = d;
      di.data = g_strdup (d.data);
      di.label = g_strdup (d.label);
      if (!load_model_file (argv[i], &lm, &error))
        return fail (g_steal_pointer (&error), N_("loading the model"));
      ds = load_model_data (&di, &lm.info, &error);
      if (ds == NULL)
        {
          loaded_model_clear (&lm);
          return fail (g_steal_pointer (&error), N_("loading the dataset"));
        }
      split = espalier_split_new (ds, lm.info.train.val_fraction, lm.info.train.test_fraction,
                                  lm.info.train.seed, &error);
      if (split == NULL
          || !espalier_evaluate_exec (lm.model, lm.quant, NULL, ds,
                                      (const guint32 *) split->test->data, split->test->len,
                                      1, &m, &error)
          || !espalier_measure_variant (lm.model, lm.quant, (guint) threads, (guint) large_batch, seconds, &lat,
                                        &error))
        {
          loaded_model_clear (&lm);
          espalier_metrics_clear (&m);
          return fail (g_steal_pointer (&error), N_("measuring"));
        }
      name = model_file_name (argv[i], &lm.info);
      kind = lm.quant != NULL ? "quantized" : es_prune_model_sparsity (lm.model) > 0 ? "pruned"
                                                                                     : "baseline";
      v = espalier_variant_new (name, kind, g_steal_pointer (&lm.model));
      if (lm.quant != NULL)
        espalier_variant_set_quant (v, g_steal_pointer (&lm.quant));
      espalier_variant_set_description (v, argv[i]);
      espalier_variant_set_accuracy (v, m.rows > 0 ? m.accuracy : NAN);
      espalier_variant_set_latency (v, &lat);
      g_ptr_array_add (variants, v);
      espalier_metrics_clear (&m);
      loaded_model_clear (&lm);
    }

  g_print ("%-*s %-*s %*s %*s %*s %*s %*s %*s %*s\n", field_width (c_name, 24), c_name,
           field_width (c_fmt, 12), c_fmt, field_width (c_acc, 9), c_acc, field_width (c_lat, 9),
           c_lat, field_width (c_p95, 9), c_p95, field_width (c_rps, 11), c_rps,
           field_width (c_size, 10), c_size, field_width (c_nz, 10), c_nz,
           field_width (c_flops, 10), c_flops);
  for (guint i = 0; i < variants->len; i++)
    {
      EspalierVariant *v = g_ptr_array_index (variants, i);
      char size[32];
      g_autofree char *fmt = g_strdup_printf ("%s/%s", espalier_variant_get_format (v),
                                              espalier_variant_get_exec (v) ? espalier_variant_get_exec (v) : "?");

      g_print ("%-24.24s %-12s %8.2f%% %9.2f %9.2f %11.0f %10s %10lld %10lld\n",
               espalier_variant_get_name (v), fmt, 100 * espalier_variant_get_accuracy (v),
               espalier_variant_get_latency_us (v), espalier_variant_get_latency_p95_us (v),
               espalier_variant_get_rows_per_second (v),
               es_format_bytes (size, sizeof size, (double) espalier_variant_get_size_bytes (v)),
               (long long) espalier_variant_get_nonzeros (v),
               (long long) espalier_variant_get_flops (v));
    }
  if ((csv != NULL || json_path != NULL)
      && !espalier_variants_write_table (variants, csv, json_path, &error))
    return fail (g_steal_pointer (&error), N_("writing the table"));
  if (csv != NULL)
    g_print (_("Wrote %s\n"), csv);
  if (json_path != NULL)
    g_print (_("Wrote %s\n"), json_path);
  return 0;
}

/* ------------------------------------------------------------------------------ */
/* export, import */

typedef enum { EXPORT_ONNX, EXPORT_SAFETENSORS, EXPORT_C } ExportFormat;

/* Bytes in the file at path, or -1 when it cannot be read. */
static gint64
file_bytes (const char *path)
{
  GStatBuf st;

  return g_stat (path, &st) == 0 ? (gint64) st.st_size : -1;
}

/* Whether a and b name one file: the same inode when both exist, else the same
 * canonical path. */
static gboolean
same_file (const char *a, const char *b)
{
  GStatBuf sa, sb;
  g_autofree char *ca = NULL, *cb = NULL;

  if (g_stat (a, &sa) == 0 && g_stat (b, &sb) == 0)
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  ca = g_canonicalize_filename (a, NULL);
  cb = g_canonicalize_filename (b, NULL);
  return g_str_equal (ca, cb);
}

/* Whether writing path would replace either file of the model pair at model. */
static gboolean
is_model_file (const char *path, const char *model)
{
  g_autofree char *json = NULL, *st = NULL;

  espalier_model_paths (model, &json, &st);
  return same_file (path, json) || same_file (path, st);
}

/* path without the extension ext: "dir/mlp.json" -> "dir/mlp". */
static char *
strip_ext (const char *path, const char *ext)
{
  char *s = g_strdup (path);

  if (g_str_has_suffix (s, ext) && strlen (s) > strlen (ext))
    s[strlen (s) - strlen (ext)] = '\0';
  return s;
}

/* Whether --output names a directory: one that exists, or any path ending in '/'. */
static gboolean
output_is_dir (const char *output)
{
  return g_str_has_suffix (output, G_DIR_SEPARATOR_S) || g_file_test (output, G_FILE_TEST_IS_DIR);
}

/* Where an export goes, before its extension: --output as given; inside it, named after
 * stem, when it is a directory; stem ("dir/mlp") when there is no --output. */
static char *
export_base (const char *output, const char *stem)
{
  g_autofree char *name = g_path_get_basename (stem);

  if (output == NULL)
    return g_strdup (stem);
  if (output_is_dir (output))
    return g_build_filename (output, name, NULL);
  return g_strdup (output);
}

/* A C identifier made of a model's name: other characters become '_', a name that
 * does not start with a letter gets "model_" before it; at most 48 characters, as
 * espalier_c_export_check_name allows. */
static char *
c_identifier (const char *text)
{
  GString *s = g_string_new (NULL);

  for (const char *p = text; *p != '\0'; p++)
    g_string_append_c (s, g_ascii_isalnum (*p) ? *p : '_');
  if (s->len == 0 || !g_ascii_isalpha (s->str[0]))
    g_string_prepend (s, "model_");
  if (s->len > 48)
    g_string_truncate (s, 48);
  return g_string_free (s, FALSE);
}

/* path as one shell word, quoted only when it needs to be. */
static char *
shell_word (const char *path)
{
  for (const char *p = path; *p != '\0'; p++)
    if (!g_ascii_isalnum (*p) && strchr ("/._-+=:,@%", *p) == NULL)
      return g_shell_quote (path);
  return g_strdup (path);
}

/* How quant's weights are written in ONNX: a key for JSON, a phrase for people. */
static const char *
onnx_form (const EsQuant *q, gboolean for_people)
{
  switch (q != NULL ? q->mode : ES_QUANT_FP32)
    {
    case ES_QUANT_INT8_STATIC:
      return for_people ? _("int8 static, QDQ form (QuantizeLinear/DequantizeLinear around "
                            "int8 weights: ONNX Runtime fuses them into its int8 kernels)")
                        : "qdq";
    case ES_QUANT_INT8_DYNAMIC:
      return for_people ? _("int8 dynamic (DynamicQuantizeLinear, then MatMulInteger or "
                            "ConvInteger on the int8 weights)")
                        : "integer-ops";
    case ES_QUANT_FP16:
    case ES_QUANT_BF16:
      return for_people ? _("the rounded weights of the variant, stored as float32")
                        : "rounded-float32";
    case ES_QUANT_FP32:
    default:
      return for_people ? _("none (float32)") : "float32";
    }
}

/* The "files" member: [{ "path", "bytes" }] for what an export or import wrote. */
static void
json_files (JsonBuilder *b, const char * const *paths, guint n)
{
  json_builder_set_member_name (b, "files");
  json_builder_begin_array (b);
  for (guint i = 0; i < n; i++)
    {
      json_builder_begin_object (b);
      json_str (b, "path", paths[i]);
      json_int (b, "bytes", file_bytes (paths[i]));
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
}

/* "492 bytes", or "12345 bytes (12.3 kB)" where the shorter form helps. */
static char *
size_text (gint64 n)
{
  char human[32];

  if (n < 1000)
    return g_strdup_printf (ngettext ("%lld byte", "%lld bytes", (unsigned long) MAX (n, 0)),
                            (long long) n);
  /* TRANSLATORS: a size in bytes and for people, e.g. "12345 bytes (12.3 kB)" */
  return g_strdup_printf (_("%lld bytes (%s)"), (long long) n,
                          es_format_bytes (human, sizeof human, (double) n));
}

/* "out/mlp.onnx, 12345 bytes (12.3 kB)" */
static char *
describe_file (const char *path)
{
  g_autofree char *size = size_text (file_bytes (path));

  return g_strdup_printf ("%s, %s", path, size);
}

static const char *
quant_name (const EsQuant *q)
{
  return es_quant_mode_name (q != NULL ? q->mode : ES_QUANT_FP32);
}

static int
export_onnx (GOptionContext *ctx, LoadedModel *lm, const char *input, const char *output,
             const char *name)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *stem = strip_ext (input, ".json");
  g_autofree char *base = export_base (output, stem);
  g_autofree char *path = NULL, *ops = NULL;
  EspalierOnnxMeta meta;
  EspalierOnnxSummary sum;
  gboolean ok;

  /* A file named by --output is written as named; a default one gets ".onnx". */
  if (output != NULL && !output_is_dir (output))
    path = g_strdup (output);
  else
    path = g_strconcat (base, ".onnx", NULL);
  if (is_model_file (path, input))
    return usage_error (ctx, _("export: %s is the model file itself; choose another --output"),
                        path);
  espalier_onnx_meta_init (&meta);
  espalier_onnx_meta_from_info (&meta, &lm->info);
  g_free (meta.model_name);
  meta.model_name = name != NULL ? g_strdup (name) : model_file_name (input, &lm->info);
  ok = espalier_onnx_export (lm->model, lm->quant, &meta, path, &sum, &error);
  espalier_onnx_meta_clear (&meta);
  if (!ok)
    return fail (g_steal_pointer (&error), N_("exporting"));
  ops = espalier_onnx_summary_ops (&sum);

  if (out_mode == OUT_JSON)
    {
      JsonBuilder *b = json_event ("exported");
      const char *files[] = { path };

      json_str (b, "format", "onnx");
      json_str (b, "path", path);
      json_int (b, "bytes", sum.file_size);
      json_files (b, files, 1);
      json_int (b, "opset", sum.opset);
      json_int (b, "ir_version", ESPALIER_ONNX_IR_VERSION);
      json_int (b, "nodes", sum.n_nodes);
      json_int (b, "initializers", sum.n_initializers);
      json_int (b, "initializer_bytes", sum.initializer_bytes);
      json_builder_set_member_name (b, "operators");
      json_builder_begin_object (b);
      for (guint k = 0; k < sum.n_op_kinds; k++)
        json_int (b, sum.ops[k].op, sum.ops[k].count);
      json_builder_end_object (b);
      json_int (b, "other_operators", sum.n_other_ops);
      json_str (b, "quantization", quant_name (lm->quant));
      json_str (b, "form", onnx_form (lm->quant, FALSE));
      json_finish (b);
    }
  else
    {
      g_autofree char *file = describe_file (path);
      g_autofree char *init = size_text (sum.initializer_bytes);

      g_print (_("Wrote %s\n"), file);
      g_print (_("  format         ONNX, opset %lld, IR version %d\n"), (long long) sum.opset,
               ESPALIER_ONNX_IR_VERSION);
      g_print (_("  operators      %s (%u nodes)\n"), ops, sum.n_nodes);
      g_print (_("  initializers   %u tensors, %s\n"), sum.n_initializers, init);
      g_print (_("  quantization   %s\n"), onnx_form (lm->quant, TRUE));
      if (lm->quant != NULL && lm->quant->mode == ES_QUANT_INT8_STATIC && lm->quant->reduce_range)
        g_print (_("  note           7-bit activations are written as 8-bit codes: values "
                   "beyond the calibrated range saturate at 255, not 127\n"));
    }
  return 0;
}

static int
export_safetensors (GOptionContext *ctx, LoadedModel *lm, const char *input,
                    const char *output, const char *name)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *stem = strip_ext (input, ".json");
  g_autofree char *copy = g_strconcat (stem, "-copy", NULL);
  g_autofree char *base = export_base (output, output != NULL ? stem : copy);
  g_autofree char *bare = strip_ext (base, ".safetensors");
  g_autofree char *json = NULL, *st = NULL;
  EspalierModelInfo info = lm->info;
  gboolean ok;

  espalier_model_paths (bare, &json, &st);
  if (is_model_file (json, input) || is_model_file (st, input))
    return usage_error (ctx, _("export: %s is the model file itself; choose another --output"),
                        json);
  /* The same model under another name: everything else of its file is kept. The
   * strings are borrowed from lm->info. */
  info.name = (char *) name;
  ok = espalier_model_save_variant (lm->model, lm->quant, &info, json, &error);
  if (!ok)
    return fail (g_steal_pointer (&error), N_("exporting"));

  if (out_mode == OUT_JSON)
    {
      JsonBuilder *b = json_event ("exported");
      const char *files[] = { json, st };

      json_str (b, "format", "safetensors");
      json_str (b, "path", json);
      json_files (b, files, 2);
      json_str (b, "quantization", quant_name (lm->quant));
      json_int (b, "weight_bytes", (gint64) es_quant_weight_bytes (lm->model, lm->quant));
      json_finish (b);
    }
  else
    {
      g_autofree char *a = describe_file (json);
      g_autofree char *b = describe_file (st);
      g_autofree char *wb = size_text ((gint64) es_quant_weight_bytes (lm->model, lm->quant));

      g_print (_("Wrote %s\n  and %s\n"), a, b);
      g_print (_("  quantization   %s, kept\n"), quant_name (lm->quant));
      g_print (_("  weights        %s as stored\n"), wb);
    }
  return 0;
}

static int
export_c (GOptionContext *ctx, LoadedModel *lm, const char *input, const char *output,
          const char *name)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *model_name = model_file_name (input, &lm->info);
  g_autofree char *ident = NULL, *base = NULL, *c_path = NULL, *h_path = NULL;
  g_autofree char *c_word = NULL, *h_name = NULL;
  EspalierCExportSummary sum;
  gboolean libm;

  if (output != NULL && !output_is_dir (output))
    {
      g_autofree char *stripped = g_str_has_suffix (output, ".h") ? strip_ext (output, ".h")
                                                                   : strip_ext (output, ".c");
      g_autofree char *file = g_path_get_basename (stripped);

      ident = name != NULL ? g_strdup (name) : c_identifier (file);
      base = g_steal_pointer (&stripped);
    }
  else
    {
      g_autofree char *dir = output != NULL ? g_strdup (output) : g_path_get_dirname (input);

      ident = name != NULL ? g_strdup (name) : c_identifier (model_name);
      base = g_str_equal (dir, ".") ? g_strdup (ident) : g_build_filename (dir, ident, NULL);
    }
  c_path = g_strconcat (base, ".c", NULL);
  h_path = g_strconcat (base, ".h", NULL);
  if (is_model_file (c_path, input) || is_model_file (h_path, input))
    return usage_error (ctx, _("export: %s is the model file itself; choose another --output"),
                        c_path);
  if (!espalier_c_export (lm->model, lm->quant, &lm->info, ident, c_path, h_path, &sum, &error))
    return fail (g_steal_pointer (&error), N_("exporting"));
  libm = sum.needs_libm;
  c_word = shell_word (c_path);
  h_name = g_path_get_basename (h_path);

  if (out_mode == OUT_JSON)
    {
      JsonBuilder *b = json_event ("exported");
      const char *files[] = { c_path, h_path };
      g_autofree char *compile = g_strdup_printf ("gcc -std=c99 -O2 -c %s", c_word);

      json_str (b, "format", "c");
      json_str (b, "path", c_path);
      json_files (b, files, 2);
      json_str (b, "name", ident);
      json_int (b, "c_bytes", (gint64) sum.c_bytes);
      json_int (b, "h_bytes", (gint64) sum.h_bytes);
      json_int (b, "weight_bytes", (gint64) sum.weight_bytes);
      json_int (b, "scratch_bytes", (gint64) sum.scratch_bytes);
      json_int (b, "operations", sum.n_ops);
      json_str (b, "quantization", quant_name (lm->quant));
      json_int (b, "int8_layers", sum.n_int8_layers);
      json_builder_set_member_name (b, "integer_only");
      json_builder_add_boolean_value (b, sum.integer_only);
      json_builder_set_member_name (b, "needs_libm");
      json_builder_add_boolean_value (b, libm);
      json_str (b, "compile", compile);
      json_finish (b);
    }
  else
    {
      g_autofree char *c_size = size_text ((gint64) sum.c_bytes);
      g_autofree char *h_size = size_text ((gint64) sum.h_bytes);
      g_autofree char *w_size = size_text ((gint64) sum.weight_bytes);
      g_autofree char *s_size = size_text ((gint64) sum.scratch_bytes);

      g_print (_("Wrote %s, %s\n  and %s, %s\n"), c_path, c_size, h_path, h_size);
      g_print (_("  functions      %s_predict, %s_predict_r (declared in %s)\n"), ident, ident,
               h_name);
      g_print (_("  weights        %s of constant data\n"), w_size);
      g_print (_("  scratch        %s of activations; %u operations per row\n"), s_size,
               sum.n_ops);
      if (sum.n_int8_layers == 0)
        g_print (_("  arithmetic     float, every layer\n"));
      else if (sum.integer_only)
        g_print (_("  arithmetic     int8 in %u layers: integer only from the input "
                   "quantization to the last int8 layer\n"), sum.n_int8_layers);
      else
        g_print (_("  arithmetic     int8 in %u layers, not integer-only: some steps between "
                   "them run in float\n"), sum.n_int8_layers);
      if (libm)
        g_print (_("  compile        gcc -std=c99 -O2 -c %s   (link with -lm)\n"), c_word);
      else
        g_print (_("  compile        gcc -std=c99 -O2 -c %s   (no library needed)\n"), c_word);
    }
  return 0;
}

static int
cmd_export (int argc, char **argv)
{
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("MODEL.json - write a model as ONNX, "
                                                          "safetensors or C source"));
  g_autoptr(GError) error = NULL;
  g_autofree char *format = NULL, *output = NULL, *name = NULL;
  gboolean json = FALSE;
  ExportFormat f;
  LoadedModel lm = { 0 };
  int status;
  GOptionEntry entries[] = {
    { "format", 'f', 0, G_OPTION_ARG_STRING, &format, _("onnx, safetensors or c (onnx)"), "FORMAT" },
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output, _("The file to write (c: NAME.c, with NAME.h beside it), or a directory (default: next to the model)"), "PATH" },
    { "name", 'n', 0, G_OPTION_ARG_STRING, &name, _("The model's name in the export: the ONNX graph name, the copy's name, or the prefix of the C identifiers (default: the model's)"), "NAME" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, _("Print what was written as one JSON object"), NULL },
    { NULL }
  };

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_set_summary (ctx, _("Writes a saved model or variant in another format:\n"
                                       "  onnx         a graph ONNX Runtime runs (opset 13); "
                                       "int8 in QDQ form\n"
                                       "  safetensors  a copy of the model files under a new "
                                       "name, quantization kept\n"
                                       "  c            NAME.c and NAME.h: C99 that needs only "
                                       "the C library and\n"
                                       "               never allocates; static int8 variants "
                                       "run in integer arithmetic\n"
                                       "               (dynamic int8 cannot be exported as C)"));
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    return usage_error (ctx, _("export: %s"), error->message);
  if (argc != 2)
    return usage_error (ctx, _("export: name one model file (NAME.json)"));
  if (format == NULL || g_ascii_strcasecmp (format, "onnx") == 0)
    f = EXPORT_ONNX;
  else if (g_ascii_strcasecmp (format, "safetensors") == 0)
    f = EXPORT_SAFETENSORS;
  else if (g_ascii_strcasecmp (format, "c") == 0)
    f = EXPORT_C;
  else
    return usage_error (ctx, _("export: unknown --format '%s' (onnx, safetensors, c)"), format);
  if (name != NULL && f == EXPORT_C && !espalier_c_export_check_name (name, &error))
    return usage_error (ctx, _("export: --name %s: %s"), name, error->message);
  if (name != NULL && name[0] == '\0')
    return usage_error (ctx, _("export: --name cannot be empty"));
  if (output != NULL && output[0] == '\0')
    return usage_error (ctx, _("export: --output cannot be empty"));
  if (json)
    out_mode = OUT_JSON;

  if (!load_model_file (argv[1], &lm, &error))
    return fail (g_steal_pointer (&error), N_("loading the model"));
  switch (f)
    {
    case EXPORT_ONNX:
      status = export_onnx (ctx, &lm, argv[1], output, name);
      break;
    case EXPORT_SAFETENSORS:
      status = export_safetensors (ctx, &lm, argv[1], output, name);
      break;
    case EXPORT_C:
    default:
      status = export_c (ctx, &lm, argv[1], output, name);
      break;
    }
  loaded_model_clear (&lm);
  return status;
}

static int
cmd_import (int argc, char **argv)
{
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("MODEL.onnx - read an ONNX model "
                                                          "into a model file"));
  g_autoptr(GError) error = NULL;
  g_autofree char *output = NULL, *data = NULL, *json_path = NULL, *st_path = NULL;
  gboolean json = FALSE;
  EspalierOnnxMeta meta;
  EspalierModelInfo info;
  EsModel *model;
  GOptionEntry entries[] = {
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output, _("Save as NAME.json + NAME.safetensors (default: beside the ONNX file, named after it, when no such model exists)"), "NAME" },
    { "data", 'd', 0, G_OPTION_ARG_STRING, &data, _("The dataset the model is for (as train's --data), kept in the model file for eval and the optimization commands"), "SPEC" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, _("Print what was read and saved as one JSON object"), NULL },
    { NULL }
  };

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_set_summary (ctx, _("Reads an ONNX model made by Espalier or another tool "
                                       "and saves it as a model file.\n"
                                       "The graph must be a chain from one float input to one "
                                       "output, of Gemm or MatMul,\n"
                                       "Conv, the pools, the activations, Softmax, Flatten, "
                                       "BatchNormalization and\n"
                                       "Dropout; QDQ int8 models come back in float."));
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    return usage_error (ctx, _("import: %s"), error->message);
  if (argc != 2)
    return usage_error (ctx, _("import: name one ONNX file (MODEL.onnx)"));
  if ((output != NULL && output[0] == '\0') || (data != NULL && data[0] == '\0'))
    return usage_error (ctx, _("import: --output and --data cannot be empty"));
  if (output == NULL || output_is_dir (output))
    {
      g_autofree char *stem = strip_ext (argv[1], ".onnx");
      g_autofree char *file = g_path_get_basename (stem);
      g_autofree char *base = output != NULL ? g_build_filename (output, file, NULL)
                                             : g_steal_pointer (&stem);

      espalier_model_paths (base, &json_path, &st_path);
      if (g_file_test (json_path, G_FILE_TEST_EXISTS))
        return usage_error (ctx, _("import: %s exists; give --output NAME.json to replace it or "
                                   "to choose another name"), json_path);
    }
  else
    espalier_model_paths (output, &json_path, &st_path);
  if (same_file (json_path, argv[1]) || same_file (st_path, argv[1]))
    return usage_error (ctx, _("import: %s is the ONNX file itself; choose another --output"),
                        argv[1]);
  if (json)
    out_mode = OUT_JSON;

  espalier_onnx_meta_init (&meta);
  model = espalier_onnx_import (argv[1], &meta, &error);
  if (model == NULL)
    {
      espalier_onnx_meta_clear (&meta);
      return fail (g_steal_pointer (&error), N_("importing"));
    }
  espalier_model_info_init (&info);
  espalier_onnx_meta_to_info (&meta, &info);
  /* Named after its file, as trained models are; the graph's name is reported. */
  g_clear_pointer (&info.name, g_free);
  info.dataset_source = g_strdup (data);
  if (!espalier_model_save (model, &info, json_path, &error))
    {
      es_model_free (model);
      espalier_model_info_clear (&info);
      espalier_onnx_meta_clear (&meta);
      return fail (g_steal_pointer (&error), N_("saving the model"));
    }

  if (out_mode == OUT_JSON)
    {
      JsonBuilder *b = json_event ("imported");
      const char *files[] = { json_path, st_path };

      json_str (b, "source", argv[1]);
      json_int (b, "opset", meta.opset);
      json_str (b, "producer", meta.producer);
      json_str (b, "producer_version", meta.version);
      json_str (b, "graph", meta.model_name);
      json_str (b, "quantization", meta.quantization);
      json_builder_set_member_name (b, "probabilities");
      json_builder_add_boolean_value (b, meta.probabilities);
      json_builder_set_member_name (b, "class_names");
      if (info.class_names != NULL)
        {
          json_builder_begin_array (b);
          for (char **c = info.class_names; *c != NULL; c++)
            json_builder_add_string_value (b, *c);
          json_builder_end_array (b);
        }
      else
        json_builder_add_null_value (b);
      json_int (b, "params", es_model_n_params (model));
      json_int (b, "flops", es_model_flops (model));
      json_layers (b, model);
      json_str (b, "dataset", data);
      json_str (b, "path", json_path);
      json_files (b, files, 2);
      json_finish (b);
    }
  else
    {
      g_print (_("Read %s: ONNX opset %lld"), argv[1], (long long) meta.opset);
      if (meta.producer != NULL)
        g_print (_(", made by %s%s%s"), meta.producer, meta.version ? " " : "",
                 meta.version ? meta.version : "");
      if (meta.model_name != NULL)
        g_print (_(", graph “%s”"), meta.model_name);
      g_print ("\n");
      if (meta.quantization != NULL && !g_str_equal (meta.quantization, "fp32"))
        g_print (_("The file holds a quantized variant (%s): it is imported in float; quantize "
                   "it again with espalier-cli quantize\n"), meta.quantization);
      print_layers (model, &info.train.engine, 0);
      if (info.class_names != NULL)
        {
          guint n = g_strv_length (info.class_names);
          g_autofree char *first = NULL;

          if (n > 12)
            {
              char *keep = info.class_names[10];

              /* The first ten of a long list, and how many there are. */
              info.class_names[10] = NULL;
              first = g_strjoinv (", ", info.class_names);
              info.class_names[10] = keep;
              g_print (_("classes: %s... (%u in all)\n"), first, n);
            }
          else
            {
              first = g_strjoinv (", ", info.class_names);
              g_print (_("classes: %s\n"), first);
            }
        }
      if (data == NULL)
        g_print (_("No dataset recorded: give eval and the optimization commands --data, or "
                   "import again with --data\n"));
      g_print (_("Saved %s\n"), json_path);
    }
  es_model_free (model);
  espalier_model_info_clear (&info);
  espalier_onnx_meta_clear (&meta);
  return 0;
}

/* ------------------------------------------------------------------------------ */
/* profile */

/* Print text wrapped at about 88 columns, every line indented by indent spaces. */
static void
print_wrapped (int indent, const char *text)
{
  g_auto(GStrv) words = g_strsplit (text, " ", -1);
  int col = 0;

  for (int i = 0; words[i] != NULL; i++)
    {
      int w = (int) g_utf8_strlen (words[i], -1);

      if (w == 0)
        continue;
      if (col > 0 && col + 1 + w > 88)
        {
          g_print ("\n");
          col = 0;
        }
      if (col == 0)
        {
          g_print ("%*s%s", indent, "", words[i]);
          col = indent + w;
        }
      else
        {
          g_print (" %s", words[i]);
          col += 1 + w;
        }
    }
  if (col > 0)
    g_print ("\n");
}

static void
print_profile_summary (EspalierProfileReport *report, const EsModel *model)
{
  const EspalierProfileSummary *s = espalier_profile_report_get_summary (report);
  const EspalierProfile *p = s->profile;
  const char *c_stage = C_("column", "stage"), *c_ms = C_("column", "ms/step");
  const char *c_share = C_("column", "share");
  const char *c_layer = C_("column", "layer"), *c_fwd = C_("column", "fwd ms");
  const char *c_bwd = C_("column", "bwd ms"), *c_flops = C_("column", "FLOPs/step");
  const char *c_bytes = C_("column", "bytes/step"), *c_rate = C_("column", "GFLOP/s");
  const char *c_bw = C_("column", "GB/s"), *c_ai = C_("column", "FLOP/B");
  const char *c_roof = C_("column", "roofline"), *c_bound = C_("column", "bound");
  double steps = MAX (s->steps, 1), layers_s = 0.0;
  char a[32], b[32];

  g_print (_("%u steps of %u rows (micro-batch %u): %.3f ms per step, %.0f rows/s\n"),
           s->steps, s->batch, s->micro_batch, 1e3 * s->step_s, s->rows_per_s);
  g_print (_("device: %s"), p->device_name[0] != '\0' ? p->device_name : C_("device", "CPU"));
  if (p->device >= 0)
    {
      g_print (_("; memory %s of %s free"),
               es_format_bytes (a, sizeof a, (double) p->device_mem_free),
               es_format_bytes (b, sizeof b, (double) p->device_mem_total));
      if (p->device_utilization >= 0)
        g_print (_("; utilization %d%%"), p->device_utilization);
      if (p->device_temperature_c >= 0)
        g_print (_("; %d °C"), p->device_temperature_c);
      if (p->device_power_w >= 0)
        g_print (_("; %.0f W"), p->device_power_w);
    }
  g_print ("\n");
  if (s->have_ceilings)
    g_print (_("machine: %.1f GFLOP/s peak (gemm %s, %d threads), %.1f GB/s copy%s; ridge "
               "point %.2f FLOP/B\n"),
             s->ceilings.gemm_gflops, es_cpu_backend_gemm_path (), s->ceilings.n_threads,
             s->ceilings.copy_gbs, s->ceilings.cached ? _(" (cached)") : "",
             s->ceilings.gemm_gflops / s->ceilings.copy_gbs);
  g_print ("\n%-*s %*s %*s\n", field_width (c_stage, 10), c_stage, field_width (c_ms, 10), c_ms,
           field_width (c_share, 7), c_share);
  for (guint i = 0; i < s->n_stages; i++)
    g_print ("%-*s %10.3f %6.1f%%\n", field_width (s->stages[i].label, 10), s->stages[i].label,
             1e3 * s->stages[i].seconds / steps, 100 * s->stages[i].share);
  if (fabs (1.0 - s->coverage) <= 0.05)
    g_print (_("The stages add up to the step time (%.1f%% of it).\n\n"), 100 * s->coverage);
  else
    g_print (_("The stages do not add up to the step time: they cover %.1f%% of it.\n\n"),
             100 * s->coverage);

  g_print ("%-*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %-*s\n", field_width (c_layer, 14), c_layer,
           field_width (c_fwd, 9), c_fwd, field_width (c_bwd, 9), c_bwd,
           field_width (c_share, 7), c_share, field_width (c_flops, 12), c_flops,
           field_width (c_bytes, 12), c_bytes, field_width (c_rate, 8), c_rate,
           field_width (c_bw, 7), c_bw, field_width (c_ai, 7), c_ai,
           field_width (c_roof, 8), c_roof, field_width (c_bound, 7), c_bound);
  for (guint i = 0; i < s->n_layers; i++)
    {
      const EspalierLayerTime *l = &s->layers[i];
      g_autofree char *label = g_strdup_printf ("%u %s", i + 1, l->kind);
      const char *bound = !s->have_ceilings || l->bytes <= 0 ? "-"
                          : l->memory_bound ? C_("bound", "memory") : C_("bound", "compute");

      layers_s += l->forward_s + l->backward_s;
      g_print ("%-14s %9.3f %9.3f %6.1f%% %12.0f %12.0f %8.2f %7.2f %7.2f %7.1f%% %s\n", label,
               1e3 * l->forward_s / steps, 1e3 * l->backward_s / steps, 100 * l->share,
               l->flops, l->bytes, l->gflops, l->gbs, l->intensity, 100 * l->roofline_share,
               bound);
    }
  g_print (_("Layers: %.1f%% of the step time.\n"),
           s->wall_s > 0 ? 100 * layers_s / s->wall_s : 0.0);
  if (s->ceilings_low)
    g_print (_("Some layers ran faster than the measured peak: the ceilings were measured "
               "on a busy machine (run again with --remeasure).\n"));
  g_print ("\n");

  {
    char kind[ES_MEM_N_KINDS][32];

    for (int k = 0; k < ES_MEM_N_KINDS; k++)
      es_format_bytes (kind[k], sizeof kind[k], (double) p->mem_kind[k]);
    g_print (_("memory: engine peak %s of %s; weights %s, gradients %s, optimizer %s, "
               "activations %s, workspace %s, data %s\n"),
             es_format_bytes (a, sizeof a, (double) p->mem_peak),
             p->mem_limit > 0 ? es_format_bytes (b, sizeof b, (double) p->mem_limit)
                              : _("no limit"),
             kind[ES_MEM_WEIGHTS], kind[ES_MEM_GRADIENTS], kind[ES_MEM_OPTIMIZER],
             kind[ES_MEM_ACTIVATIONS], kind[ES_MEM_WORKSPACE], kind[ES_MEM_DATA]);
  }
  g_print (_("        process resident %s, peak %s\n"),
           es_format_bytes (a, sizeof a, (double) p->rss),
           es_format_bytes (b, sizeof b, (double) p->rss_peak));
  g_print (_("threads: pool %d, BLAS %d, OpenMP %d, data %u on %d cores; %.1f involuntary "
             "switches a step; %.3f ms a step waiting for a core (training thread %.3f)\n"),
           p->threads.pool_threads, p->threads.blas_threads, p->threads.omp_threads,
           MAX (p->data_threads, 1), p->threads.cores, p->involuntary_switches / steps,
           1e3 * p->runqueue_wait_s / steps, 1e3 * p->trainer_runqueue_wait_s / steps);
  g_print (_("denormals: %lld of %lld values; flush-to-zero %s\n\n"),
           (long long) (p->denormals.params + p->denormals.gradients + p->denormals.optimizer
                        + p->denormals.activations),
           (long long) p->denormals.total_values, p->ftz ? _("on") : _("off"));
  (void) model;
}

static void
print_profile_advice (EspalierProfileReport *report)
{
  guint nf = espalier_profile_report_n_findings (report);
  guint na = espalier_profile_report_n_advice (report);

  if (nf == 0)
    {
      g_print (_("No bottleneck found: no detector fired.\n"));
      return;
    }
  g_print (_("Findings, most severe first:\n"));
  for (guint i = 0; i < nf; i++)
    {
      const EspalierFinding *f = espalier_profile_report_finding (report, i);
      g_autofree char *head = g_strdup_printf (_("%s (%s, %.0f%% at stake)"), f->title,
                                               f->name, 100 * f->severity);

      g_print ("  - %s\n", head);
      print_wrapped (4, f->evidence);
    }
  if (na == 0)
    return;
  g_print (_("\nAdvice (apply one with --apply N):\n"));
  for (guint i = 0; i < na; i++)
    {
      const EspalierAdvice *a = espalier_profile_report_advice (report, i);
      g_autofree char *head = NULL;

      if (isfinite (a->expected_gain))
        head = g_strdup_printf (_("%u. %s [%s]: %.2f× expected (estimate)"), i + 1, a->title,
                                a->name, a->expected_gain);
      else
        head = g_strdup_printf (_("%u. %s [%s]: no estimate"), i + 1, a->title, a->name);
      g_print ("  %s\n", head);
      print_wrapped (5, a->evidence);
      if (a->can_apply)
        {
          g_autofree char *act = g_strdup_printf (_("Apply: %s"), a->action);

          print_wrapped (5, act);
        }
      else
        {
          g_autofree char *why = g_strdup_printf (_("Cannot apply: %s"), a->cannot_apply);

          print_wrapped (5, why);
        }
    }
}

/* The advice --apply names: a 1-based number or an advice name; 0 when it names none
 * in this report. */
static guint
find_advice (EspalierProfileReport *report, const char *which)
{
  guint na = espalier_profile_report_n_advice (report);
  guint64 n;

  if (g_ascii_string_to_unsigned (which, 10, 1, G_MAXUINT, &n, NULL))
    return n <= na ? (guint) n : 0;
  for (guint i = 0; i < na; i++)
    if (g_str_equal (espalier_profile_report_advice (report, i)->name, which))
      return i + 1;
  return 0;
}

/* Whether --apply's argument can name advice at all. */
static gboolean
apply_arg_valid (const char *which)
{
  guint64 n;

  if (g_ascii_string_to_unsigned (which, 10, 1, G_MAXUINT, &n, NULL))
    return TRUE;
  for (int k = 0; k < ESPALIER_N_ADVICE; k++)
    if (g_str_equal (espalier_advice_kind_name ((EspalierAdviceKind) k), which))
      return TRUE;
  return FALSE;
}

static void
print_apply_result (const EspalierAdvice *a, guint index, const EspalierAdviceResult *res)
{
  const char *c_q = C_("column", "measured"), *c_before = C_("column", "before");
  const char *c_after = C_("column", "after");
  int w = MAX ((int) g_utf8_strlen (res->quantity, -1), 12);

  g_print (_("\nApplied %u. %s: %s\n"), index, a->title, res->change);
  g_print ("%-*s %*s %*s\n", field_width (c_q, w), c_q, field_width (c_before, 14), c_before,
           field_width (c_after, 14), c_after);
  g_print ("%-*s %14.1f %14.1f\n", field_width (res->quantity, w), res->quantity, res->before,
           res->after);
  if (isfinite (a->expected_gain))
    g_print (_("Gain: %.2f×, measured before and after in this run (the estimate was "
               "%.2f×).\n"), res->gain, a->expected_gain);
  else
    g_print (_("Gain: %.2f×, measured before and after in this run.\n"), res->gain);
}

static int
cmd_profile (int argc, char **argv)
{
  g_auto(DataOpts) d = { 0 };
  g_autofree GOptionEntry *dentries = data_entries (&d);
  g_autoptr(GOptionContext) ctx = g_option_context_new (_("[MODEL.json] - where the time of a training step goes, and what to do about it"));
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(EspalierProfileReport) report = NULL;
  g_autofree char *model_name = NULL, *spec = NULL, *trace = NULL, *memory = NULL;
  g_autofree char *augment = NULL, *apply = NULL, *device = NULL;
  int steps = 50, batch = 0, threads = 0;
  gboolean json = FALSE, remeasure = FALSE, tf32 = FALSE;
  gint device_choice;
  EspalierTrainOptions opts;
  EspalierProfileOptions popts;
  EspalierModelInfo info;
  EspalierAdviceResult res = { 0 };
  EsModel *model = NULL;
  int status = 1;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_STRING, &model_name, _("An untrained template instead of a file (default: as train chooses)"), "NAME" },
    { "spec", 0, 0, G_OPTION_ARG_STRING, &spec, _("Layers as a spec string instead of a file"), "LAYERS" },
    { "steps", 'n', 0, G_OPTION_ARG_INT, &steps, _("Training steps to profile (50)"), "N" },
    { "batch", 'b', 0, G_OPTION_ARG_INT, &batch, _("Batch size (the model's)"), "N" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, _("Compute threads (as train chooses)"), "N" },
    { "memory-limit", 0, 0, G_OPTION_ARG_STRING, &memory, _("Engine memory budget, e.g. 64M (on a CUDA device: the GPU pool's)"), "SIZE" },
    DEVICE_ENTRIES (device, tf32),
    { "augment", 0, 0, G_OPTION_ARG_STRING, &augment, _("Image augmentation: shift=K,flip,noise=STD"), "LIST" },
    { "trace", 0, 0, G_OPTION_ARG_FILENAME, &trace, _("Write the steps as Chrome trace-event JSON (Perfetto, chrome://tracing)"), "FILE" },
    { "remeasure", 0, 0, G_OPTION_ARG_NONE, &remeasure, _("Measure the machine's ceilings again instead of reading them from the cache"), NULL },
    { "apply", 0, 0, G_OPTION_ARG_STRING, &apply, _("Apply advice N (or the advice of that name, e.g. larger-batch) and measure before and after"), "N" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, _("JSON output"), NULL },
    { NULL }
  };

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_main_entries (ctx, dentries, NULL);
  g_option_context_set_summary (ctx, _("Trains for a few steps with every stage and layer timed, "
                                       "and prints where the\n"
                                       "time went (data, forward, loss, backward, optimizer, "
                                       "each layer on the\n"
                                       "machine's roofline), memory and threads, what the "
                                       "detectors found and\n"
                                       "the advice, each with its estimated gain. --apply "
                                       "applies one and measures\n"
                                       "before and after."));
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    return usage_error (ctx, _("profile: %s"), error->message);
  if (argc > 2)
    return usage_error (ctx, _("profile: unexpected argument '%s'"), argv[2]);
  if ((argc == 2) + (model_name != NULL) + (spec != NULL) > 1)
    return usage_error (ctx, _("profile: give only one of a model file, --model and --spec"));
  if (steps <= 0 || batch < 0 || threads < 0)
    return usage_error (ctx, _("profile: --steps must be at least 1, and the batch and threads "
                               "cannot be negative"));
  {
    gsize ok_size;
    EspalierAugment ok_aug = { 0 };

    if (memory && !parse_size (memory, &ok_size))
      return usage_error (ctx, _("profile: cannot read the size '%s' (say 64M or 2G)"), memory);
    if (augment && !parse_augment (augment, &ok_aug, &error))
      return usage_error (ctx, _("profile: %s"), error->message);
    if (!device_arg (device, &device_choice, &error))
      return usage_error (ctx, _("profile: %s"), error->message);
    if (apply && !apply_arg_valid (apply))
      return usage_error (ctx, _("profile: --apply takes an advice number (1, 2, ...) or name "
                                 "(larger-batch, prefetch, ...), not '%s'"), apply);
  }
  if (json)
    out_mode = OUT_JSON;

  espalier_model_info_init (&info);
  espalier_train_options_init (&opts);
  if (argc == 2)
    {
      model = espalier_model_load (argv[1], &info, &error);
      if (model == NULL)
        {
          espalier_model_info_clear (&info);
          return fail (g_steal_pointer (&error), N_("loading the model"));
        }
      opts = info.train;
      ds = load_model_data (&d, &info, &error);
    }
  else
    ds = load_data (&d, NULL, opts.val_fraction, opts.test_fraction, opts.seed, &error);
  if (ds == NULL)
    {
      status = fail (g_steal_pointer (&error), N_("loading the dataset"));
      goto out;
    }
  if (model == NULL)
    {
      EsShape in = dataset_shape (ds);

      if (spec != NULL)
        model = espalier_model_from_spec (spec, &in, &error);
      else
        {
          const char *name = model_name ? model_name
                             : espalier_dataset_get_rank (ds) == 3 ? "mlp" : "playground";
          if (espalier_dataset_get_rank (ds) == 1 && espalier_dataset_get_row_size (ds) != 2 && model_name == NULL)
            name = "mlp";
          model = espalier_model_from_template (name, &in, dataset_outputs (ds), &opts, &error);
        }
      if (model == NULL)
        {
          status = fail (g_steal_pointer (&error), N_("building the model"));
          goto out;
        }
      es_model_init (model, opts.seed);
    }
  if (batch) opts.batch_size = (guint) batch;
  if (threads) opts.threads = (guint) threads;
  if (memory) parse_size (memory, &opts.memory_limit);
  if (augment) parse_augment (augment, &opts.augment, NULL);
  opts.device = device_choice;
  opts.tf32 = tf32;

  espalier_profile_options_init (&popts);
  popts.steps = (guint) steps;
  popts.trace = trace != NULL;
  popts.remeasure = remeasure;
  report = espalier_profile_run (ds, model, &opts, &popts, NULL, NULL, NULL, &error);
  if (report == NULL)
    {
      status = fail (g_steal_pointer (&error), N_("profiling"));
      goto out;
    }
  if (trace != NULL
      && !espalier_profile_write_trace (espalier_profile_report_get_summary (report)->profile,
                                        model, trace, &error))
    {
      g_prefix_error (&error, "%s: ", trace);
      status = fail (g_steal_pointer (&error), N_("writing the trace"));
      goto out;
    }

  if (out_mode == OUT_JSON)
    {
      g_autoptr(JsonNode) node = espalier_profile_report_to_json (report);
      JsonObject *o = json_node_get_object (node);
      g_autoptr(JsonGenerator) gen = json_generator_new ();
      g_autofree char *text = NULL;

      /* an event like the others: "event" first */
      {
        g_autoptr(JsonBuilder) b = json_event ("profile");
        g_autoptr(JsonNode) ev = NULL;
        GList *members = json_object_get_members (o);

        for (GList *m = members; m != NULL; m = m->next)
          {
            json_builder_set_member_name (b, m->data);
            json_builder_add_value (b, json_node_copy (json_object_get_member (o, m->data)));
          }
        g_list_free (members);
        if (trace != NULL)
          json_str (b, "trace", trace);
        json_builder_end_object (b);
        ev = json_builder_get_root (b);
        json_generator_set_root (gen, ev);
        text = json_generator_to_data (gen, NULL);
        printf ("%s\n", text);
        fflush (stdout);
      }
    }
  else
    {
      print_profile_summary (report, model);
      print_profile_advice (report);
      if (trace != NULL)
        g_print (_("\nTrace written to %s\n"), trace);
    }

  if (apply != NULL)
    {
      guint index = find_advice (report, apply);
      const EspalierAdvice *a;

      if (index == 0)
        {
          g_set_error (&error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID,
                       _("This profile has no advice '%s' (it gave %u)"), apply,
                       espalier_profile_report_n_advice (report));
          status = fail (g_steal_pointer (&error), N_("applying advice"));
          goto out;
        }
      a = espalier_profile_report_advice (report, index - 1);
      if (out_mode != OUT_JSON)
        g_print (_("\nApplying %u. %s: profiling before and after...\n"), index, a->title);
      if (!espalier_advice_apply (report, index - 1, ds, model, &opts, &popts, NULL, &res,
                                  &error))
        {
          status = fail (g_steal_pointer (&error), N_("applying advice"));
          goto out;
        }
      if (out_mode == OUT_JSON)
        {
          JsonBuilder *b = json_event ("apply");

          json_int (b, "index", index);
          json_str (b, "name", a->name);
          json_str (b, "title", a->title);
          json_str (b, "change", res.change);
          json_str (b, "quantity", res.quantity);
          json_double (b, "before", res.before);
          json_double (b, "after", res.after);
          json_double (b, "gain", res.gain);
          json_double (b, "expected_gain", a->expected_gain);
          json_builder_set_member_name (b, "measured");
          json_builder_add_boolean_value (b, TRUE);
          json_builder_set_member_name (b, "profile");
          if (res.report != NULL)
            json_builder_add_value (b, espalier_profile_report_to_json (res.report));
          else
            json_builder_add_null_value (b);
          json_finish (b);
        }
      else
        print_apply_result (a, index, &res);
    }
  status = 0;

out:
  espalier_advice_result_clear (&res);
  es_model_free (model);
  espalier_model_info_clear (&info);
  return status;
}

/* ------------------------------------------------------------------------------ */

static const struct {
  const char *name;
  int (*run) (int argc, char **argv);
  const char *about;
} commands[] = {
  { "train", cmd_train, N_("train a model on a dataset (default: mlp on Fashion-MNIST)") },
  { "eval", cmd_eval, N_("evaluate a saved model: loss, accuracy, confusion matrix") },
  { "info", cmd_info, N_("layers, shapes, parameters, FLOPs and the memory plan") },
  { "datasets", cmd_datasets, N_("list the datasets known by name") },
  { "bench", cmd_bench, N_("time inference: batch-1 latency and a large batch") },
  { "devices", cmd_devices, N_("the CPU and the CUDA devices, as nvidia-smi shows them") },
  { "profile", cmd_profile, N_("find the bottleneck of a few training steps and advise; --apply, --trace") },
  { "prune", cmd_prune, N_("prune a saved model (magnitude, gradual, structured, 2:4) and measure it") },
  { "quantize", cmd_quantize, N_("quantize a saved model (int8 static or dynamic, fp16, bf16, QAT)") },
  { "reduce", cmd_reduce, N_("remove a layer, recover by distillation or fine-tuning") },
  { "sensitivity", cmd_sensitivity, N_("accuracy with one layer at a time pruned or quantized") },
  { "compare", cmd_compare, N_("measure saved models side by side; write the table as CSV/JSON") },
  { "export", cmd_export, N_("write a model as ONNX, safetensors + JSON, or C source") },
  { "import", cmd_import, N_("read an ONNX model into a model file") },
};

static void
print_usage (FILE *f)
{
  fputs (_("Usage: espalier-cli COMMAND [OPTION...]\n\n"
           "Train, evaluate and measure neural networks without the GUI.\n\nCommands:\n"), f);
  for (guint i = 0; i < G_N_ELEMENTS (commands); i++)
    fprintf (f, "  %-12s %s\n", commands[i].name, _(commands[i].about));
  fputs (_("\nRun 'espalier-cli COMMAND --help' for a command's options.\n"), f);
}

int
main (int argc, char **argv)
{
  setlocale (LC_ALL, "");
  bindtextdomain (GETTEXT_PACKAGE, LOCALEDIR);
  bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
  textdomain (GETTEXT_PACKAGE);
  espalier_i18n_init ();
  /* Numbers in JSON and CSV stay with a dot whatever the locale. */
  setlocale (LC_NUMERIC, "C");
  g_set_prgname ("espalier-cli");
  out_mode = isatty (STDERR_FILENO) ? OUT_TTY : OUT_PLAIN;

  if (argc < 2)
    {
      print_usage (stderr);
      return EXIT_USAGE;
    }
  if (g_str_equal (argv[1], "--help") || g_str_equal (argv[1], "-h") || g_str_equal (argv[1], "help"))
    {
      print_usage (stdout);
      return 0;
    }
  if (g_str_equal (argv[1], "--version"))
    {
      printf ("espalier-cli %s\n", PACKAGE_VERSION);
      return 0;
    }
  for (guint i = 0; i < G_N_ELEMENTS (commands); i++)
    if (g_str_equal (argv[1], commands[i].name))
      {
        g_autofree char *prg = g_strdup_printf ("espalier-cli %s", commands[i].name);

        g_set_prgname (prg);
        return commands[i].run (argc - 1, argv + 1);
      }
  fprintf (stderr, _("espalier-cli: unknown command '%s'\n\n"), argv[1]);
  print_usage (stderr);
  return EXIT_USAGE;
}
