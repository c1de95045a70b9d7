/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-model-doc.c: the edited model as a document: the layer list, its check by
 * the engine's shape inference after every change, and undo/redo as snapshots of the
 * layer list. It holds no weights and builds an EsModel only on request.
 *
 * Checking builds each layer alone on the output shape of the one before it, so a doc
 * of n layers costs n small es_model_new calls, and everything up to the first invalid
 * layer gets its EsLayerInfo. The engine's reason is rewritten as a sentence for a
 * student, with a hint where one is obvious. Not here: the canvas (src/app), saving
 * (espalier-project.c). */
#include "config.h"

#include "espalier-model-doc.h"

#include <math.h>
#include <string.h>

#include <glib/gi18n-lib.h>

#include "espalier-error.h"
#include "espalier-json-private.h"
#include "espalier-limits.h"
#include "espalier-templates.h"

/* Undo steps kept; older ones are forgotten. */
#define MAX_UNDO          200
/* Property edits of one layer closer together than this merge into one step. */
#define MERGE_USEC        G_USEC_PER_SEC
/* The ranges a spec string can hold (espalier-templates.c). */
#define SPEC_MAX_INT      (1 << 24)

typedef struct {
  GArray *layers;   /* (EsLayerSpec) the list before the edit (undo) or after it (redo) */
  char   *label;    /* "Add Dense" */
} Step;

typedef struct {
  gboolean     has_info;
  EsLayerInfo  info;
  char        *error;  /* why this layer is invalid, or NULL */
} LayerCheck;

struct _EspalierModelDoc
{
  GObject     parent_instance;

  EsShape     input;
  guint       n_outputs;
  GArray     *layers;        /* (EsLayerSpec) */
  GArray     *checks;        /* (LayerCheck) one per layer */
  int         first_error;   /* -1 when valid or empty */
  char       *error;         /* whole-model reason, NULL when valid */
  gboolean    too_big;       /* the reason is the weights' size, not a shape */

  GPtrArray  *undo;          /* (Step) oldest first */
  GPtrArray  *redo;          /* (Step) next redo last */
  int         merge_layer;   /* the layer the last step edited, -1 */
  gint64      merge_time;    /* monotonic time of that edit */
};

G_DEFINE_FINAL_TYPE (EspalierModelDoc, espalier_model_doc, G_TYPE_OBJECT)

enum {
  PROP_0,
  PROP_N_LAYERS,
  PROP_VALID,
  PROP_CAN_UNDO,
  PROP_CAN_REDO,
  PROP_UNDO_LABEL,
  PROP_REDO_LABEL,
  N_PROPS
};

static GParamSpec *properties[N_PROPS];

enum {
  SIGNAL_CHANGED,
  N_SIGNALS
};

static guint signals[N_SIGNALS];

/* The property values before a change, to notify only what differs after it. */
typedef struct {
  guint     n_layers;
  gboolean  valid;
  char     *undo_label;
  char     *redo_label;
} State;

EspalierModelDoc *
espalier_model_doc_new (const EsShape *input, guint n_outputs)
{
  EspalierModelDoc *self = g_object_new (ESPALIER_TYPE_MODEL_DOC, NULL);

  espalier_model_doc_set_input (self, input, n_outputs);
  return self;
}

/* ------------------------------------------------------------------------------------ */
/* Helpers */

static void
step_free (gpointer data)
{
  Step *step = data;

  g_array_unref (step->layers);
  g_free (step->label);
  g_free (step);
}

static void
layer_check_clear (gpointer data)
{
  LayerCheck *c = data;

  g_clear_pointer (&c->error, g_free);
}

static GArray *
layers_copy (GArray *layers)
{
  GArray *copy = g_array_sized_new (FALSE, TRUE, sizeof (EsLayerSpec), layers->len);

  g_array_append_vals (copy, layers->data, layers->len);
  return copy;
}

static gboolean
layers_equal (GArray *a, GArray *b)
{
  return a->len == b->len
         && (a->len == 0 || memcmp (a->data, b->data, a->len * sizeof (EsLayerSpec)) == 0);
}

static int
clamp_int (int v, int min, int max, int fallback)
{
  if (v <= 0 && min > 0)
    return fallback;
  return CLAMP (v, min, max);
}

/* The spec as the document keeps it: the fields its kind uses, defaults where the user
 * left zero (as es_model_new fills them), and values clamped to what a spec string can
 * hold, so that to_spec and set_spec round-trip every document. Fields a kind does not
 * use are zero, so equal layers compare equal bytewise. */
static EsLayerSpec
normalize (const EsLayerSpec *in)
{
  EsLayerSpec def = es_layer_spec_default (in->kind);
  EsLayerSpec s = { .kind = in->kind };

  switch (in->kind)
    {
    case ES_LAYER_DENSE:
      s.units = clamp_int (in->units, 1, SPEC_MAX_INT, def.units);
      break;
    case ES_LAYER_CONV2D:
      s.filters = clamp_int (in->filters, 1, SPEC_MAX_INT, def.filters);
      s.kernel = clamp_int (in->kernel, 1, SPEC_MAX_INT, def.kernel);
      s.stride = clamp_int (in->stride, 1, SPEC_MAX_INT, 1);
      s.padding = CLAMP (in->padding, 0, SPEC_MAX_INT);
      break;
    case ES_LAYER_MAXPOOL2D:
    case ES_LAYER_AVGPOOL2D:
      s.kernel = clamp_int (in->kernel, 1, SPEC_MAX_INT, def.kernel);
      s.stride = clamp_int (in->stride, 1, SPEC_MAX_INT, s.kernel);
      break;
    case ES_LAYER_LEAKY_RELU:
      s.alpha = isfinite (in->alpha) && in->alpha != 0.0f ? CLAMP (in->alpha, -1e30f, 1e30f)
                                                          : def.alpha;
      break;
    case ES_LAYER_DROPOUT:
      s.rate = isfinite (in->rate) ? CLAMP (in->rate, 0.0f, nextafterf (1.0f, 0.0f)) : def.rate;
      break;
    case ES_LAYER_BATCHNORM:
      s.momentum = isfinite (in->momentum) && in->momentum > 0.0f ? MIN (in->momentum, 1.0f)
                                                                  : def.momentum;
      s.eps = isfinite (in->eps) && in->eps > 0.0f ? MIN (in->eps, 1e30f) : def.eps;
      break;
    default:
      break;
    }
  return s;
}

static const char *
kind_title (const EsLayerSpec *s)
{
  return es_layer_kind_title (s->kind);
}

static const char *
template_title (const char *name)
{
  if (g_strcmp0 (name, "mlp") == 0)
    return "MLP";
  if (g_strcmp0 (name, "lenet") == 0)
    return "LeNet";
  if (g_strcmp0 (name, "playground") == 0)
    return C_("template", "Playground");
  return name;
}

static const char *
top_label (GPtrArray *stack)
{
  return stack->len > 0 ? ((Step *) g_ptr_array_index (stack, stack->len - 1))->label : NULL;
}

/* ------------------------------------------------------------------------------------ */
/* Checking */

/* Why layer s (index i) does not accept input `in`, as a sentence for a student; es is
 * the engine's own message, used when no better sentence is known. */
static char *
layer_reason (const EsLayerSpec *s, const EsShape *in, const EsError *es)
{
  char shape[64];
  const char *msg = es->message;

  es_shape_format (in, shape, sizeof shape);
  switch (s->kind)
    {
    case ES_LAYER_DENSE:
      if (in->rank != 1)
        return g_strdup_printf (_("expects flat features (F) but gets %s: add a Flatten before it"),
                                shape);
      break;
    case ES_LAYER_CONV2D:
    case ES_LAYER_MAXPOOL2D:
    case ES_LAYER_AVGPOOL2D:
      {
        int pad = s->kind == ES_LAYER_CONV2D ? s->padding : 0;

        if (in->rank != 3)
          return g_strdup_printf (_("expects an image (C, H, W) but gets flat features %s: "
                                    "move it before the Flatten"), shape);
        if (in->dims[1] + 2 * pad < s->kernel || in->dims[2] + 2 * pad < s->kernel)
          return g_strdup_printf (_("has a %d×%d window but its input %s is only %d×%d: use a "
                                    "smaller kernel%s"), s->kernel, s->kernel, shape,
                                  in->dims[1], in->dims[2],
                                  s->kind == ES_LAYER_CONV2D ? _(" or more padding") : "");
      }
      break;
    case ES_LAYER_SOFTMAX:
      if (in->rank != 1)
        return g_strdup_printf (_("turns class scores (F) into probabilities but gets an image "
                                  "%s: add a Flatten and a Dense before it"), shape);
      break;
    default:
      break;
    }

  /* The engine writes "Layer 3 (Dense) needs ..., but its input ...": drop the
   * subject, which the caller names itself. */
  if (g_str_has_prefix (msg, "Layer "))
    {
      const char *end = strstr (msg, ") ");

      if (end != NULL)
        msg = end + 2;
    }
  return g_strdup (msg);
}

/* The output check: why the last layer's output `out` does not suit n_outputs. */
static char *
output_reason (EspalierModelDoc *self, const EsShape *out)
{
  char shape[64];

  if (self->n_outputs == 0)
    return NULL;
  if (out->rank != 1)
    return g_strdup_printf (_("gives an image %s, but the dataset needs %u outputs: end the model "
                              "with a Flatten and a Dense of %u units"),
                            es_shape_format (out, shape, sizeof shape), self->n_outputs,
                            self->n_outputs);
  if ((guint) out->dims[0] != self->n_outputs)
    return g_strdup_printf (_("gives %d outputs, but the dataset needs %u (one per class): "
                              "give the last Dense layer %u units"), out->dims[0],
                            self->n_outputs, self->n_outputs);
  return NULL;
}

/* Whether a model whose weights (parameters and buffers) reach `floats` values with layer
 * s on input `in` can still be built; when not, why, as layer_reason's sentences. Asked
 * before es_model_new allocates the layer, so a layer typed with a billion units is
 * refused with the memory it would need instead of taking the machine's. */
static char *
size_reason (const EsLayerSpec *s, const EsShape *in, double *floats, guint64 avail)
{
  double own = 0.0;
  double bytes;
  g_autofree char *need = NULL, *have = NULL;

  if (espalier_arch_check_size (in, s, 1, &own) >= 0)
    return g_strdup (_("is too large to be a real model: use fewer units or filters, or a "
                       "larger stride"));
  *floats += own;
  bytes = *floats * sizeof (float);
  if (bytes <= (double) avail)
    return NULL;
  need = g_format_size (bytes >= 0x1p63 ? G_MAXUINT64 : (guint64) bytes);
  have = g_format_size (avail);
  /* TRANSLATORS: after "Layer 3 (Dense): "; the sizes are "52.0 GB" and "15.2 GB" */
  return g_strdup_printf (_("brings the model's weights to %s, more than the %s of memory "
                            "available: use fewer units or filters"), need, have);
}

static void
check (EspalierModelDoc *self)
{
  EsShape cur = self->input;
  int n_tensors = 0;
  double floats = 0.0;   /* weights of the layers so far */
  guint64 avail = espalier_memory_available ();

  g_array_set_size (self->checks, 0);
  g_array_set_size (self->checks, self->layers->len);
  self->first_error = -1;
  self->too_big = FALSE;
  g_clear_pointer (&self->error, g_free);

  if (self->layers->len == 0)
    {
      self->error = g_strdup (_("The model has no layers"));
      return;
    }

  for (guint i = 0; i < self->layers->len; i++)
    {
      const EsLayerSpec *s = &g_array_index (self->layers, EsLayerSpec, i);
      LayerCheck *c = &g_array_index (self->checks, LayerCheck, i);
      EsError es = { 0 };
      EsModel *one;

      c->error = size_reason (s, &cur, &floats, avail);
      if (c->error != NULL)
        {
          self->first_error = (int) i;
          self->too_big = TRUE;
          break;
        }
      one = es_model_new (&cur, s, 1, &es);
      if (one == NULL)
        {
          c->error = layer_reason (s, &cur, &es);
          self->first_error = (int) i;
          break;
        }
      c->has_info = TRUE;
      c->info = *es_model_layer (one, 0);
      c->info.first_tensor = n_tensors;
      n_tensors += c->info.n_tensors;
      cur = c->info.out;
      es_model_free (one);
    }

  if (self->first_error < 0)
    {
      guint last = self->layers->len - 1;
      char *reason = output_reason (self, &cur);

      if (reason != NULL)
        {
          /* The last layer is shape-valid: it keeps its info, for the canvas to draw. */
          g_array_index (self->checks, LayerCheck, last).error = reason;
          self->first_error = (int) last;
        }
    }

  if (self->first_error >= 0)
    {
      const EsLayerSpec *s = &g_array_index (self->layers, EsLayerSpec, self->first_error);
      const LayerCheck *c = &g_array_index (self->checks, LayerCheck, self->first_error);

      /* TRANSLATORS: "Layer 3 (Dense): expects flat features ..." */
      self->error = g_strdup_printf (_("Layer %d (%s): %s"), self->first_error + 1,
                                     kind_title (s), c->error);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Changes */

static void
state_save (EspalierModelDoc *self, State *st)
{
  st->n_layers = self->layers->len;
  st->valid = self->error == NULL;
  st->undo_label = g_strdup (top_label (self->undo));
  st->redo_label = g_strdup (top_label (self->redo));
}

/* Check again, notify what changed since st, emit "changed". */
static void
finish_change (EspalierModelDoc *self, State *st)
{
  GObject *obj = G_OBJECT (self);

  check (self);
  g_object_freeze_notify (obj);
  if (st->n_layers != self->layers->len)
    g_object_notify_by_pspec (obj, properties[PROP_N_LAYERS]);
  if (st->valid != (self->error == NULL))
    g_object_notify_by_pspec (obj, properties[PROP_VALID]);
  if ((st->undo_label != NULL) != (self->undo->len > 0))
    g_object_notify_by_pspec (obj, properties[PROP_CAN_UNDO]);
  if ((st->redo_label != NULL) != (self->redo->len > 0))
    g_object_notify_by_pspec (obj, properties[PROP_CAN_REDO]);
  if (g_strcmp0 (st->undo_label, top_label (self->undo)) != 0)
    g_object_notify_by_pspec (obj, properties[PROP_UNDO_LABEL]);
  if (g_strcmp0 (st->redo_label, top_label (self->redo)) != 0)
    g_object_notify_by_pspec (obj, properties[PROP_REDO_LABEL]);
  g_clear_pointer (&st->undo_label, g_free);
  g_clear_pointer (&st->redo_label, g_free);
  g_signal_emit (self, signals[SIGNAL_CHANGED], 0);
  g_object_thaw_notify (obj);
}

static void
push_step (GPtrArray *stack, GArray *layers, char *label)
{
  Step *step = g_new0 (Step, 1);

  step->layers = layers;
  step->label = label;
  g_ptr_array_add (stack, step);
  if (stack->len > MAX_UNDO)
    g_ptr_array_remove_index (stack, 0);
}

/* Record the current layers as one undo step named label (taken over), before an edit
 * changes them; the redo list is dropped. */
static void
begin_edit (EspalierModelDoc *self, State *st, char *label)
{
  state_save (self, st);
  push_step (self->undo, layers_copy (self->layers), label);
  g_ptr_array_set_size (self->redo, 0);
  self->merge_layer = -1;
}

/* ------------------------------------------------------------------------------------ */
/* GObject */

static void
espalier_model_doc_finalize (GObject *object)
{
  EspalierModelDoc *self = ESPALIER_MODEL_DOC (object);

  g_clear_pointer (&self->layers, g_array_unref);
  g_clear_pointer (&self->checks, g_array_unref);
  g_clear_pointer (&self->error, g_free);
  g_clear_pointer (&self->undo, g_ptr_array_unref);
  g_clear_pointer (&self->redo, g_ptr_array_unref);
  G_OBJECT_CLASS (espalier_model_doc_parent_class)->finalize (object);
}

static void
espalier_model_doc_get_property (GObject *object, guint prop_id, GValue *value, GParamSpec *pspec)
{
  EspalierModelDoc *self = ESPALIER_MODEL_DOC (object);

  switch (prop_id)
    {
    case PROP_N_LAYERS:
      g_value_set_uint (value, self->layers->len);
      break;
    case PROP_VALID:
      g_value_set_boolean (value, espalier_model_doc_is_valid (self));
      break;
    case PROP_CAN_UNDO:
      g_value_set_boolean (value, espalier_model_doc_can_undo (self));
      break;
    case PROP_CAN_REDO:
      g_value_set_boolean (value, espalier_model_doc_can_redo (self));
      break;
    case PROP_UNDO_LABEL:
      g_value_set_string (value, top_label (self->undo));
      break;
    case PROP_REDO_LABEL:
      g_value_set_string (value, top_label (self->redo));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
espalier_model_doc_class_init (EspalierModelDocClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GParamFlags flags = G_PARAM_READABLE | G_PARAM_EXPLICIT_NOTIFY | G_PARAM_STATIC_STRINGS;

  object_class->finalize = espalier_model_doc_finalize;
  object_class->get_property = espalier_model_doc_get_property;

  properties[PROP_N_LAYERS] = g_param_spec_uint ("n-layers", NULL, NULL, 0, G_MAXUINT, 0, flags);
  properties[PROP_VALID] = g_param_spec_boolean ("valid", NULL, NULL, FALSE, flags);
  properties[PROP_CAN_UNDO] = g_param_spec_boolean ("can-undo", NULL, NULL, FALSE, flags);
  properties[PROP_CAN_REDO] = g_param_spec_boolean ("can-redo", NULL, NULL, FALSE, flags);
  properties[PROP_UNDO_LABEL] = g_param_spec_string ("undo-label", NULL, NULL, NULL, flags);
  properties[PROP_REDO_LABEL] = g_param_spec_string ("redo-label", NULL, NULL, NULL, flags);
  g_object_class_install_properties (object_class, N_PROPS, properties);

  signals[SIGNAL_CHANGED] = g_signal_new ("changed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                                          0, NULL, NULL, NULL, G_TYPE_NONE, 0);
}

static void
espalier_model_doc_init (EspalierModelDoc *self)
{
  self->input = (EsShape) { .rank = 1, .dims = { 2 } };
  self->layers = g_array_new (FALSE, TRUE, sizeof (EsLayerSpec));
  self->checks = g_array_new (FALSE, TRUE, sizeof (LayerCheck));
  g_array_set_clear_func (self->checks, layer_check_clear);
  self->undo = g_ptr_array_new_with_free_func (step_free);
  self->redo = g_ptr_array_new_with_free_func (step_free);
  self->merge_layer = -1;
  check (self);
}

/* ------------------------------------------------------------------------------------ */
/* Public API */

void
espalier_model_doc_set_input (EspalierModelDoc *self, const EsShape *input, guint n_outputs)
{
  EsShape in = { .rank = 1, .dims = { 2 } };
  State st;

  g_return_if_fail (ESPALIER_IS_MODEL_DOC (self));
  g_return_if_fail (input == NULL || (input->rank >= 1 && input->rank <= ES_MAX_RANK));

  if (input != NULL)
    {
      in.rank = input->rank;
      for (int k = 0; k < input->rank; k++)
        in.dims[k] = input->dims[k];
    }
  if (es_shape_equal (&in, &self->input) && n_outputs == self->n_outputs)
    return;
  state_save (self, &st);
  self->input = in;
  self->n_outputs = n_outputs;
  finish_change (self, &st);
}

const EsShape *
espalier_model_doc_get_input (EspalierModelDoc *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), NULL);

  return &self->input;
}

guint
espalier_model_doc_get_n_outputs (EspalierModelDoc *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), 0);

  return self->n_outputs;
}

guint
espalier_model_doc_get_n_layers (EspalierModelDoc *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), 0);

  return self->layers->len;
}

const EsLayerSpec *
espalier_model_doc_get_layer (EspalierModelDoc *self, guint i)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), NULL);
  g_return_val_if_fail (i < self->layers->len, NULL);

  return &g_array_index (self->layers, EsLayerSpec, i);
}

const EsLayerInfo *
espalier_model_doc_get_layer_info (EspalierModelDoc *self, guint i)
{
  const LayerCheck *c;

  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), NULL);
  g_return_val_if_fail (i < self->layers->len, NULL);

  c = &g_array_index (self->checks, LayerCheck, i);
  return c->has_info ? &c->info : NULL;
}

const char *
espalier_model_doc_get_layer_error (EspalierModelDoc *self, guint i)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), NULL);
  g_return_val_if_fail (i < self->layers->len, NULL);

  return g_array_index (self->checks, LayerCheck, i).error;
}

int
espalier_model_doc_get_first_error (EspalierModelDoc *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), -1);

  return self->first_error;
}

gboolean
espalier_model_doc_is_valid (EspalierModelDoc *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), FALSE);

  return self->error == NULL;
}

const char *
espalier_model_doc_get_error (EspalierModelDoc *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), NULL);

  return self->error;
}

void
espalier_model_doc_get_totals (EspalierModelDoc *self, gint64 *n_params, gint64 *flops,
                               gint64 *activations)
{
  gint64 p = 0, f = 0, a = 0;

  g_return_if_fail (ESPALIER_IS_MODEL_DOC (self));

  for (guint i = 0; i < self->checks->len; i++)
    {
      const LayerCheck *c = &g_array_index (self->checks, LayerCheck, i);

      if (!c->has_info)
        continue;
      p += c->info.n_params;
      f += c->info.flops;
      a += c->info.out_floats;
    }
  if (n_params != NULL)
    *n_params = p;
  if (flops != NULL)
    *flops = f;
  if (activations != NULL)
    *activations = a;
}

void
espalier_model_doc_insert (EspalierModelDoc *self, guint position, const EsLayerSpec *spec)
{
  EsLayerSpec s;
  State st;

  g_return_if_fail (ESPALIER_IS_MODEL_DOC (self));
  g_return_if_fail (spec != NULL);
  g_return_if_fail (spec->kind >= 0 && spec->kind < ES_LAYER_N_KINDS);

  s = normalize (spec);
  position = MIN (position, self->layers->len);
  /* TRANSLATORS: an undo step, "Add Dense" */
  begin_edit (self, &st, g_strdup_printf (_("Add %s"), kind_title (&s)));
  g_array_insert_val (self->layers, position, s);
  finish_change (self, &st);
}

void
espalier_model_doc_remove (EspalierModelDoc *self, guint position)
{
  State st;

  g_return_if_fail (ESPALIER_IS_MODEL_DOC (self));
  g_return_if_fail (position < self->layers->len);

  /* TRANSLATORS: an undo step, "Remove ReLU" */
  begin_edit (self, &st, g_strdup_printf (_("Remove %s"),
                                          kind_title (&g_array_index (self->layers, EsLayerSpec,
                                                                      position))));
  g_array_remove_index (self->layers, position);
  finish_change (self, &st);
}

void
espalier_model_doc_move (EspalierModelDoc *self, guint from, guint to)
{
  EsLayerSpec s;
  State st;

  g_return_if_fail (ESPALIER_IS_MODEL_DOC (self));
  g_return_if_fail (from < self->layers->len);

  to = MIN (to, self->layers->len - 1);
  if (from == to)
    return;
  s = g_array_index (self->layers, EsLayerSpec, from);
  /* TRANSLATORS: an undo step, "Move Dense" */
  begin_edit (self, &st, g_strdup_printf (_("Move %s"), kind_title (&s)));
  g_array_remove_index (self->layers, from);
  g_array_insert_val (self->layers, to, s);
  finish_change (self, &st);
}

void
espalier_model_doc_set_layer (EspalierModelDoc *self, guint i, const EsLayerSpec *spec)
{
  EsLayerSpec s, *cur;
  gint64 now = g_get_monotonic_time ();
  State st;

  g_return_if_fail (ESPALIER_IS_MODEL_DOC (self));
  g_return_if_fail (i < self->layers->len);
  g_return_if_fail (spec != NULL);
  g_return_if_fail (spec->kind >= 0 && spec->kind < ES_LAYER_N_KINDS);

  s = normalize (spec);
  cur = &g_array_index (self->layers, EsLayerSpec, i);
  if (memcmp (cur, &s, sizeof s) == 0)
    return;
  if (self->merge_layer == (int) i && now - self->merge_time < MERGE_USEC
      && self->undo->len > 0 && self->redo->len == 0)
    state_save (self, &st);   /* the same step goes on */
  else
    {
      /* TRANSLATORS: an undo step, "Edit Dense" */
      begin_edit (self, &st, g_strdup_printf (_("Edit %s"), kind_title (cur)));
      self->merge_layer = (int) i;
    }
  self->merge_time = now;
  *cur = s;
  finish_change (self, &st);
}

/* Replace all layers by specs (n) as one step named label (taken over). */
static void
replace_layers (EspalierModelDoc *self, const EsLayerSpec *specs, int n, char *label)
{
  g_autoptr(GArray) layers = g_array_sized_new (FALSE, TRUE, sizeof (EsLayerSpec), (guint) n);
  State st;

  for (int i = 0; i < n; i++)
    {
      EsLayerSpec s = normalize (&specs[i]);

      g_array_append_val (layers, s);
    }
  if (layers_equal (layers, self->layers))
    {
      g_free (label);
      return;
    }
  begin_edit (self, &st, label);
  g_array_unref (self->layers);
  self->layers = g_steal_pointer (&layers);
  finish_change (self, &st);
}

gboolean
espalier_model_doc_set_spec (EspalierModelDoc *self, const char *spec, GError **error)
{
  g_autofree EsLayerSpec *specs = NULL;
  int n = 0;

  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), FALSE);
  g_return_val_if_fail (spec != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  /* "" is the empty model (what to_spec gives for it); the parser refuses it. */
  if (spec[strspn (spec, " \t\n")] != '\0')
    {
      specs = espalier_spec_parse (spec, &n, error);
      if (specs == NULL)
        return FALSE;
    }
  replace_layers (self, specs, n, g_strdup (_("Replace model")));
  return TRUE;
}

gboolean
espalier_model_doc_apply_template (EspalierModelDoc *self, const char *name,
                                   EspalierTrainOptions *opts, GError **error)
{
  g_autofree EsLayerSpec *specs = NULL;
  EsModel *model;
  int n;

  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), FALSE);
  g_return_val_if_fail (name != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  /* Without a class count to check against, build for two classes, like the 2-D sets. */
  model = espalier_model_from_template (name, &self->input, self->n_outputs ? self->n_outputs : 2,
                                        opts, error);
  if (model == NULL)
    return FALSE;
  n = es_model_n_layers (model);
  specs = g_new (EsLayerSpec, n);
  for (int i = 0; i < n; i++)
    specs[i] = es_model_layer (model, i)->spec;
  es_model_free (model);
  /* TRANSLATORS: an undo step, "Apply template MLP" */
  replace_layers (self, specs, n, g_strdup_printf (_("Apply template %s"), template_title (name)));
  return TRUE;
}

char *
espalier_model_doc_to_spec (EspalierModelDoc *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), NULL);

  return espalier_spec_format ((const EsLayerSpec *) self->layers->data, (int) self->layers->len);
}

gboolean
espalier_model_doc_can_undo (EspalierModelDoc *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), FALSE);

  return self->undo->len > 0;
}

gboolean
espalier_model_doc_can_redo (EspalierModelDoc *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), FALSE);

  return self->redo->len > 0;
}

/* Pop the top step of `from`, push the current layers onto `to` under the same label,
 * and restore the step's layers. */
static gboolean
swap_step (EspalierModelDoc *self, GPtrArray *from, GPtrArray *to)
{
  Step *step;
  State st;

  if (from->len == 0)
    return FALSE;
  state_save (self, &st);
  step = g_ptr_array_steal_index (from, from->len - 1);
  push_step (to, self->layers, g_steal_pointer (&step->label));
  self->layers = g_steal_pointer (&step->layers);
  g_free (step);
  self->merge_layer = -1;
  finish_change (self, &st);
  return TRUE;
}

gboolean
espalier_model_doc_undo (EspalierModelDoc *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), FALSE);

  return swap_step (self, self->undo, self->redo);
}

gboolean
espalier_model_doc_redo (EspalierModelDoc *self)
{
  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), FALSE);

  return swap_step (self, self->redo, self->undo);
}

void
espalier_model_doc_clear_history (EspalierModelDoc *self)
{
  GObject *obj = G_OBJECT (self);
  gboolean had_undo, had_redo;

  g_return_if_fail (ESPALIER_IS_MODEL_DOC (self));

  had_undo = self->undo->len > 0;
  had_redo = self->redo->len > 0;
  g_ptr_array_set_size (self->undo, 0);
  g_ptr_array_set_size (self->redo, 0);
  self->merge_layer = -1;
  g_object_freeze_notify (obj);
  if (had_undo)
    {
      g_object_notify_by_pspec (obj, properties[PROP_CAN_UNDO]);
      g_object_notify_by_pspec (obj, properties[PROP_UNDO_LABEL]);
    }
  if (had_redo)
    {
      g_object_notify_by_pspec (obj, properties[PROP_CAN_REDO]);
      g_object_notify_by_pspec (obj, properties[PROP_REDO_LABEL]);
    }
  g_object_thaw_notify (obj);
}

EsModel *
espalier_model_doc_build (EspalierModelDoc *self, guint64 seed, GError **error)
{
  EsError es = { 0 };
  EsModel *model;

  g_return_val_if_fail (ESPALIER_IS_MODEL_DOC (self), NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  if (self->error != NULL)
    {
      g_set_error_literal (error, ESPALIER_ERROR,
                           self->too_big ? ESPALIER_ERROR_MEMORY : ESPALIER_ERROR_SHAPE,
                           self->error);
      return NULL;
    }
  model = es_model_new (&self->input, (const EsLayerSpec *) self->layers->data,
                        (int) self->layers->len, &es);
  if (model == NULL)
    {
      espalier_error_from_es (error, &es, NULL);
      return NULL;
    }
  es_model_init (model, seed);
  return model;
}
