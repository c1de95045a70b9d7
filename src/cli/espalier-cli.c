/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-cli.c: the headless front end over core: train, eval, info, datasets and
 * bench. Output is a progress bar with ETA on a terminal, plain lines otherwise, or
 * one JSON object per event with --json. Exit status: 0 success, 1 failure, 2 bad
 * usage. Ctrl-C stops training at the end of the current step and writes nothing. */
#include "config.h"

#include <glib-unix.h>
#include <glib/gi18n.h>
#include <json-glib/json-glib.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "es-backend.h"
#include "es-train.h"
#include "espalier-dataset.h"
#include "espalier-error.h"
#include "espalier-model-file.h"
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
    { "memory-limit", 0, 0, G_OPTION_ARG_STRING, &memory, _("Engine memory budget, e.g. 64M"), "SIZE" },
    { "augment", 0, 0, G_OPTION_ARG_STRING, &augment, _("Image augmentation: shift=K,flip,noise=STD"), "LIST" },
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &output, _("Save the trained model as NAME.json + NAME.safetensors"), "NAME" },
    { "plan", 0, 0, G_OPTION_ARG_NONE, &plan, _("Print the layers and the memory plan before training"), NULL },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, _("One JSON object per event on standard output"), NULL },
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
        return fail (g_steal_pointer (&error), N_("loading the model"));
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
      return fail (g_steal_pointer (&error), N_("loading the dataset"));
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
          return fail (g_steal_pointer (&error), N_("building the model"));
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
          return fail (g_steal_pointer (&error), N_("loading the dataset"));
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

  if (plan && out_mode != OUT_JSON)
    print_layers (model, &opts.engine, opts.batch_size);

  trainer = espalier_trainer_new (ds, model, &opts);
  st.loop = g_main_loop_new (NULL, FALSE);
  st.cancellable = g_cancellable_new ();
  sigint_id = g_unix_signal_add (SIGINT, on_sigint, &st);
  espalier_trainer_run_async (trainer, st.cancellable, on_progress, &st, NULL, on_trained, &st);
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
      status = fail (st.error, N_("training"));
      goto out;
    }

  split = espalier_trainer_get_split (trainer);
  if (split->test->len > 0)
    {
      if (!espalier_evaluate (model, ds, (const guint32 *) split->test->data, split->test->len,
                              opts.engine.loss, opts.threads, &test_metrics, &error))
        {
          status = fail (g_steal_pointer (&error), N_("evaluating"));
          goto out;
        }
      print_metrics (&test_metrics, ds, "test");
    }

  if (output != NULL)
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
          status = fail (g_steal_pointer (&error), N_("saving the model"));
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
  if (out_mode == OUT_JSON)
    {
      JsonBuilder *b = json_event ("done");
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
  g_autofree char *which = NULL;
  gboolean json = FALSE;
  int threads = 0;
  EspalierModelInfo info;
  EspalierMetrics m = { 0 };
  EsModel *model;
  int status = 1;
  GOptionEntry entries[] = {
    { "split", 's', 0, G_OPTION_ARG_STRING, &which, _("Rows to use: test (default), val, train or all"), "PART" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, _("Compute threads"), "N" },
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
      if (!espalier_evaluate (model, ds, (const guint32 *) rows->data, rows->len,
                              info.train.engine.loss, (guint) threads, &m, &error))
        {
          status = fail (g_steal_pointer (&error), N_("evaluating"));
          goto out;
        }
    }
  else if (!espalier_evaluate (model, ds, NULL, 0, info.train.engine.loss, (guint) threads, &m, &error))
    {
      status = fail (g_steal_pointer (&error), N_("evaluating"));
      goto out;
    }
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
      char shape[64];

      json_int (b, "params", es_model_n_params (model));
      json_int (b, "flops", es_model_flops (model));
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
  gboolean json = FALSE;
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
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, _("JSON output"), NULL },
    { NULL }
  };

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_add_main_entries (ctx, dentries, NULL);
  g_option_context_set_summary (ctx, _("Batch-1 latency and the time of one large batch on the "
                                       "CPU backend,\n"
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

  be = es_cpu_backend_new (threads, NULL, &es);
  if (be == NULL)
    {
      espalier_error_from_es (&error, &es, NULL);
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

  if (out_mode == OUT_JSON)
    {
      JsonBuilder *b = json_event ("bench");
      json_int (b, "threads", be->n_threads);
      json_double (b, "latency_batch1_us", lat_us);
      json_int (b, "rows", rows);
      json_double (b, "batch_ms", big_ms);
      json_double (b, "rows_per_second", rows / (big_ms / 1e3));
      json_finish (b);
    }
  else
    {
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
};

static void
print_usage (FILE *f)
{
  fputs (_("Usage: espalier-cli COMMAND [OPTION...]\n\n"
           "Train, evaluate and measure neural networks without the GUI.\n\nCommands:\n"), f);
  for (guint i = 0; i < G_N_ELEMENTS (commands); i++)
    fprintf (f, "  %-10s %s\n", commands[i].name, _(commands[i].about));
  fputs (_("\nRun 'espalier-cli COMMAND --help' for a command's options.\n"), f);
}

int
main (int argc, char **argv)
{
  setlocale (LC_ALL, "");
  bindtextdomain (GETTEXT_PACKAGE, LOCALEDIR);
  bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
  textdomain (GETTEXT_PACKAGE);
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
