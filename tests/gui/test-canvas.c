/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-canvas.c: the Model page and its canvas in a real window: adding layers from the
 * page and by a drop, reordering by drag, deleting and moving with the keys' actions,
 * undo/redo, an invalid layer drawn red with its reason, the properties panel writing
 * to the document, templates, and screenshots of the MLP, LeNet and an invalid model.
 * Pointer input and DnD are driven through the functions the gestures call. */
#include "config.h"

#include "espalier-layer-editor.h"
#include "espalier-model-canvas.h"
#include "espalier-model-page.h"
#include "espalier-ui-util.h"
#include "gui-test-util.h"

typedef struct
{
  EspalierProject     *project;
  EspalierModelDoc    *doc;
  EspalierModelPage   *page;
  EspalierModelCanvas *canvas;
  EspalierLayerEditor *editor;
  GtkWindow           *window;
} Fixture;

static const EsShape image_input = { 3, { 1, 28, 28 } };

static void
fixture_setup (Fixture       *f,
               gconstpointer  data)
{
  f->project = espalier_project_new ();
  f->doc = espalier_project_get_model_doc (f->project);
  espalier_model_doc_set_input (f->doc, &image_input, 10);
  f->page = ESPALIER_MODEL_PAGE (espalier_model_page_new ());
  espalier_model_page_set_project (f->page, f->project);
  f->canvas = ESPALIER_MODEL_CANVAS (espalier_model_page_get_canvas (f->page));
  f->editor = ESPALIER_LAYER_EDITOR (espalier_model_page_get_editor (f->page));
  g_object_ref (f->page);
  g_object_ref (f->canvas);
  f->window = gui_test_window_new (GTK_WIDGET (f->page), 1200, 820);
}

static void
fixture_teardown (Fixture       *f,
                  gconstpointer  data)
{
  gui_test_window_destroy (f->window);
  g_assert_finalize_object (f->page);
  g_assert_finalize_object (f->canvas);
  g_assert_finalize_object (f->project);
}

static char *
spec_of (Fixture *f)
{
  return espalier_model_doc_to_spec (f->doc);
}

static void
set_spec (Fixture    *f,
          const char *spec)
{
  g_autoptr(GError) error = NULL;

  g_assert_true (espalier_model_doc_set_spec (f->doc, spec, &error));
  g_assert_no_error (error);
  gui_test_iterate (30);
}

static void
assert_spec (Fixture    *f,
             const char *expected)
{
  g_autofree char *spec = spec_of (f);

  g_assert_cmpstr (spec, ==, expected);
}

/* The y of the middle of gap k (above block k), from the block rects. */
static double
gap_y (Fixture *f,
       guint    k)
{
  graphene_rect_t r;

  g_assert_true (espalier_model_canvas_get_block_rect (f->canvas, k, &r));
  return r.origin.y - 12;
}

static void
screenshot (Fixture    *f,
            const char *name)
{
  /* Long enough for the properties panel's crossfade; the window draws the background. */
  gui_test_save_screenshot (GTK_WIDGET (f->window), name, 400);
}

static void
test_add_from_page (Fixture       *f,
                    gconstpointer  data)
{
  espalier_model_page_append_layer (f->page, ES_LAYER_FLATTEN);
  g_assert_cmpint (espalier_model_canvas_get_selected (f->canvas), ==, 0);
  gtk_widget_activate_action (GTK_WIDGET (f->page), "model.append-layer", "s", "dense");
  gtk_widget_activate_action (GTK_WIDGET (f->page), "model.append-layer", "s", "relu");
  gui_test_iterate (30);
  assert_spec (f, "flatten,dense:128,relu");
  g_assert_cmpint (espalier_model_canvas_get_selected (f->canvas), ==, 2);
  g_assert_cmpint (espalier_layer_editor_get_index (f->editor), ==, 2);
  /* Drawn as three blocks, none invalid: the output mismatch (128 vs 10 classes) is
   * the last layer's. */
  g_assert_cmpuint (espalier_model_canvas_get_n_drawn (f->canvas), ==, 3);
  g_assert_cmpint (espalier_model_canvas_get_drawn_state (f->canvas, 0), ==, ESPALIER_BLOCK_NORMAL);
}

static void
test_drop (Fixture       *f,
           gconstpointer  data)
{
  graphene_rect_t r;

  /* Dropped on the empty model: the first layer. */
  espalier_model_canvas_drop_kind (f->canvas, ES_LAYER_DENSE, 60);
  gui_test_iterate (30);
  assert_spec (f, "dense:128");

  set_spec (f, "flatten,dense:128,dense:10,softmax");
  /* Between Flatten and the first Dense, and below everything. */
  espalier_model_canvas_drop_kind (f->canvas, ES_LAYER_DROPOUT, gap_y (f, 1));
  gui_test_iterate (30);
  assert_spec (f, "flatten,dropout:0.2,dense:128,dense:10,softmax");
  g_assert_cmpint (espalier_model_canvas_get_selected (f->canvas), ==, 1);
  g_assert_true (espalier_model_canvas_get_block_rect (f->canvas, 4, &r));
  espalier_model_canvas_drop_kind (f->canvas, ES_LAYER_RELU, r.origin.y + r.size.height + 20);
  gui_test_iterate (30);
  assert_spec (f, "flatten,dropout:0.2,dense:128,dense:10,softmax,relu");
  /* The insertion index follows the block middles. */
  g_assert_true (espalier_model_canvas_get_block_rect (f->canvas, 2, &r));
  g_assert_cmpuint (espalier_model_canvas_insertion_index (f->canvas, r.origin.y + 2), ==, 2);
  g_assert_cmpuint (espalier_model_canvas_insertion_index (f->canvas, r.origin.y + r.size.height - 2), ==, 3);
  g_assert_cmpint (espalier_model_canvas_layer_at (f->canvas, r.origin.x + 5, r.origin.y + 5), ==, 2);
  g_assert_cmpint (espalier_model_canvas_layer_at (f->canvas, 2, 2), ==, -1);
}

static void
test_drag_reorder (Fixture       *f,
                   gconstpointer  data)
{
  graphene_rect_t r;
  double x, y;

  set_spec (f, "flatten,dense:128,relu,dense:10,softmax");
  /* Dense 10 dragged above Dense 128. */
  g_assert_true (espalier_model_canvas_get_block_rect (f->canvas, 3, &r));
  x = r.origin.x + r.size.width / 2;
  y = r.origin.y + r.size.height / 2;
  g_assert_true (espalier_model_canvas_drag_layer (f->canvas, x, y, x, gap_y (f, 1)));
  gui_test_iterate (30);
  assert_spec (f, "flatten,dense:10,dense:128,relu,softmax");
  g_assert_cmpint (espalier_model_canvas_get_selected (f->canvas), ==, 1);

  /* Back down below ReLU (gap 4). */
  g_assert_true (espalier_model_canvas_get_block_rect (f->canvas, 1, &r));
  g_assert_true (espalier_model_canvas_drag_layer (f->canvas, r.origin.x + 10, r.origin.y + 10,
                                                   r.origin.x + 10, gap_y (f, 4)));
  gui_test_iterate (30);
  assert_spec (f, "flatten,dense:128,relu,dense:10,softmax");
  g_assert_cmpint (espalier_model_canvas_get_selected (f->canvas), ==, 3);

  /* A click (no movement) selects and moves nothing. */
  g_assert_true (espalier_model_canvas_get_block_rect (f->canvas, 0, &r));
  g_assert_false (espalier_model_canvas_drag_layer (f->canvas, r.origin.x + 10, r.origin.y + 10,
                                                    r.origin.x + 11, r.origin.y + 11));
  g_assert_cmpint (espalier_model_canvas_get_selected (f->canvas), ==, 0);
  assert_spec (f, "flatten,dense:128,relu,dense:10,softmax");
  /* A click on empty space unselects. */
  espalier_model_canvas_drag_layer (f->canvas, 1, 1, 1, 1);
  g_assert_cmpint (espalier_model_canvas_get_selected (f->canvas), ==, -1);
}

static void
test_keys (Fixture       *f,
           gconstpointer  data)
{
  GtkWidget *canvas = GTK_WIDGET (f->canvas);

  set_spec (f, "flatten,dense:128,relu,dense:10,softmax");
  gtk_widget_grab_focus (canvas);
  g_assert_true (gtk_widget_has_focus (canvas));

  /* Down from nothing selects the first layer; Down again the next. */
  g_assert_true (gtk_widget_activate_action (canvas, "canvas.select-next", NULL));
  g_assert_cmpint (espalier_model_canvas_get_selected (f->canvas), ==, 0);
  gtk_widget_activate_action (canvas, "canvas.select-next", NULL);
  gtk_widget_activate_action (canvas, "canvas.select-next", NULL);
  g_assert_cmpint (espalier_model_canvas_get_selected (f->canvas), ==, 2);
  gtk_widget_activate_action (canvas, "canvas.select-previous", NULL);
  g_assert_cmpint (espalier_model_canvas_get_selected (f->canvas), ==, 1);

  /* Ctrl+Down moves Dense 128 below ReLU, the selection with it. */
  gtk_widget_activate_action (canvas, "canvas.move-down", NULL);
  assert_spec (f, "flatten,relu,dense:128,dense:10,softmax");
  g_assert_cmpint (espalier_model_canvas_get_selected (f->canvas), ==, 2);
  gtk_widget_activate_action (canvas, "canvas.move-up", NULL);
  assert_spec (f, "flatten,dense:128,relu,dense:10,softmax");

  /* Delete removes it; the next layer is selected. */
  gtk_widget_activate_action (canvas, "canvas.delete", NULL);
  gui_test_iterate (30);
  assert_spec (f, "flatten,relu,dense:10,softmax");
  g_assert_cmpint (espalier_model_canvas_get_selected (f->canvas), ==, 1);
  /* The last one deleted: the previous is selected. */
  espalier_model_canvas_select (f->canvas, 3);
  gtk_widget_activate_action (canvas, "canvas.delete", NULL);
  assert_spec (f, "flatten,relu,dense:10");
  g_assert_cmpint (espalier_model_canvas_get_selected (f->canvas), ==, 2);
  /* The page's Remove Layer does the same. */
  gtk_widget_activate_action (GTK_WIDGET (f->page), "model.remove-layer", NULL);
  assert_spec (f, "flatten,relu");
  gtk_widget_activate_action (canvas, "canvas.unselect", NULL);
  g_assert_cmpint (espalier_model_canvas_get_selected (f->canvas), ==, -1);
  gtk_widget_activate_action (canvas, "canvas.delete", NULL);
  assert_spec (f, "flatten,relu");
}

static void
test_undo_redo (Fixture       *f,
                gconstpointer  data)
{
  espalier_model_page_append_layer (f->page, ES_LAYER_FLATTEN);
  espalier_model_page_append_layer (f->page, ES_LAYER_DENSE);
  espalier_model_canvas_select (f->canvas, 0);
  gtk_widget_activate_action (GTK_WIDGET (f->canvas), "canvas.delete", NULL);
  assert_spec (f, "dense:128");

  g_assert_true (gtk_widget_activate_action (GTK_WIDGET (f->page), "model.undo", NULL));
  assert_spec (f, "flatten,dense:128");
  espalier_model_page_undo (f->page);
  assert_spec (f, "flatten");
  g_assert_true (gtk_widget_activate_action (GTK_WIDGET (f->page), "model.redo", NULL));
  assert_spec (f, "flatten,dense:128");
  espalier_model_page_redo (f->page);
  assert_spec (f, "dense:128");
  /* Nothing left to redo: the action is disabled and does nothing. */
  gtk_widget_activate_action (GTK_WIDGET (f->page), "model.redo", NULL);
  assert_spec (f, "dense:128");

  /* A drag is one undo step too. */
  set_spec (f, "flatten,dense:128,relu");
  {
    graphene_rect_t r;

    g_assert_true (espalier_model_canvas_get_block_rect (f->canvas, 2, &r));
    g_assert_true (espalier_model_canvas_drag_layer (f->canvas, r.origin.x + 8, r.origin.y + 8,
                                                     r.origin.x + 8, gap_y (f, 0)));
  }
  assert_spec (f, "relu,flatten,dense:128");
  espalier_model_page_undo (f->page);
  assert_spec (f, "flatten,dense:128,relu");
}

static void
test_invalid (Fixture       *f,
              gconstpointer  data)
{
  const char *drawn;
  int index = -1;

  /* Dense straight on an image: layer 0 invalid, the rest greyed. */
  set_spec (f, "dense:128,relu,dense:10,softmax");
  gui_test_iterate (100);
  g_assert_cmpint (espalier_model_doc_get_first_error (f->doc), ==, 0);
  g_assert_cmpuint (espalier_model_canvas_get_n_drawn (f->canvas), ==, 4);
  g_assert_cmpint (espalier_model_canvas_get_drawn_state (f->canvas, 0), ==, ESPALIER_BLOCK_INVALID);
  for (guint i = 1; i < 4; i++)
    g_assert_cmpint (espalier_model_canvas_get_drawn_state (f->canvas, i), ==, ESPALIER_BLOCK_DISABLED);
  drawn = espalier_model_canvas_get_drawn_error (f->canvas, &index);
  g_assert_nonnull (drawn);
  g_assert_cmpint (index, ==, 0);
  g_assert_cmpstr (drawn, ==, espalier_model_doc_get_layer_error (f->doc, 0));
  espalier_model_canvas_select (f->canvas, 0);
  screenshot (f, "model-invalid");

  /* Fixed by a Flatten dropped above it: nothing red any more. */
  espalier_model_canvas_drop_kind (f->canvas, ES_LAYER_FLATTEN, gap_y (f, 0));
  gui_test_iterate (100);
  g_assert_true (espalier_model_doc_is_valid (f->doc));
  for (guint i = 0; i < 5; i++)
    g_assert_cmpint (espalier_model_canvas_get_drawn_state (f->canvas, i), ==, ESPALIER_BLOCK_NORMAL);
  g_assert_null (espalier_model_canvas_get_drawn_error (f->canvas, NULL));

  /* An output that does not match the classes: the last layer is red. */
  set_spec (f, "flatten,dense:64");
  gui_test_iterate (100);
  g_assert_cmpint (espalier_model_canvas_get_drawn_state (f->canvas, 0), ==, ESPALIER_BLOCK_NORMAL);
  g_assert_cmpint (espalier_model_canvas_get_drawn_state (f->canvas, 1), ==, ESPALIER_BLOCK_INVALID);
  g_assert_nonnull (espalier_model_canvas_get_drawn_error (f->canvas, &index));
  g_assert_cmpint (index, ==, 1);
}

/* A width typed in the properties panel that would take more memory than there is:
 * the layer is red with the size it needs and what is available, nothing allocated. */
static void
test_too_large (Fixture       *f,
                gconstpointer  data)
{
  GtkSpinButton *units;
  const char *drawn;
  int index = -1;

  g_setenv ("ESPALIER_MEMORY_AVAILABLE", "200000000", TRUE);   /* 200 MB */
  set_spec (f, "flatten,dense:128,relu,dense:10,softmax");
  espalier_model_canvas_select (f->canvas, 1);
  gui_test_iterate (30);
  units = espalier_layer_editor_get_field (f->editor, "units");
  gtk_spin_button_set_value (units, 100000);   /* 784 × 100 000 weights: 314 MB */
  gui_test_iterate (100);
  g_assert_cmpint (espalier_model_doc_get_first_error (f->doc), ==, 1);
  g_assert_cmpint (espalier_model_canvas_get_drawn_state (f->canvas, 1), ==, ESPALIER_BLOCK_INVALID);
  drawn = espalier_model_canvas_get_drawn_error (f->canvas, &index);
  g_assert_cmpint (index, ==, 1);
  g_test_message ("drawn: %s", drawn);
  g_assert_nonnull (strstr (drawn, "200.0"));
  screenshot (f, "model-too-large");

  /* Undo brings back the 128 units and a valid model. */
  espalier_model_page_undo (f->page);
  gui_test_iterate (30);
  g_assert_true (espalier_model_doc_is_valid (f->doc));
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");
}

static void
test_editor (Fixture       *f,
             gconstpointer  data)
{
  GtkSpinButton *units, *filters, *kernel;
  const EsLayerSpec *spec;

  set_spec (f, "flatten,dense:128,relu,dense:10,softmax");
  g_assert_false (espalier_layer_editor_field_visible (f->editor, "units"));
  espalier_model_canvas_select (f->canvas, 1);
  gui_test_iterate (30);
  g_assert_cmpint (espalier_layer_editor_get_index (f->editor), ==, 1);

  /* Only the fields a Dense layer uses. */
  g_assert_true (espalier_layer_editor_field_visible (f->editor, "units"));
  g_assert_false (espalier_layer_editor_field_visible (f->editor, "filters"));
  g_assert_false (espalier_layer_editor_field_visible (f->editor, "rate"));
  units = espalier_layer_editor_get_field (f->editor, "units");
  g_assert_cmpfloat (gtk_spin_button_get_value (units), ==, 128);

  /* Two edits in a row are one undo step. */
  gtk_spin_button_set_value (units, 64);
  gtk_spin_button_set_value (units, 32);
  gui_test_iterate (30);
  spec = espalier_model_doc_get_layer (f->doc, 1);
  g_assert_cmpint (spec->units, ==, 32);
  espalier_model_page_undo (f->page);
  assert_spec (f, "flatten,dense:128,relu,dense:10,softmax");
  g_assert_cmpfloat (gtk_spin_button_get_value (units), ==, 128);

  /* An activation has nothing to set. */
  espalier_model_canvas_select (f->canvas, 2);
  g_assert_false (espalier_layer_editor_field_visible (f->editor, "units"));
  g_assert_false (espalier_layer_editor_field_visible (f->editor, "alpha"));

  /* Changing the kind replaces the layer: ReLU becomes LeakyReLU, then its slope. */
  adw_combo_row_set_selected (espalier_layer_editor_get_kind_row (f->editor), ES_LAYER_LEAKY_RELU);
  gui_test_iterate (30);
  g_assert_cmpint (espalier_model_doc_get_layer (f->doc, 2)->kind, ==, ES_LAYER_LEAKY_RELU);
  g_assert_true (espalier_layer_editor_field_visible (f->editor, "alpha"));
  gtk_spin_button_set_value (espalier_layer_editor_get_field (f->editor, "alpha"), 0.1);
  assert_spec (f, "flatten,dense:128,leaky_relu:0.1,dense:10,softmax");

  /* Conv2D on an image: filters, kernel, stride, padding. */
  set_spec (f, "conv2d:6:5:1:2,relu,flatten,dense:10,softmax");
  espalier_model_canvas_select (f->canvas, 0);
  gui_test_iterate (30);
  filters = espalier_layer_editor_get_field (f->editor, "filters");
  kernel = espalier_layer_editor_get_field (f->editor, "kernel");
  g_assert_true (espalier_layer_editor_field_visible (f->editor, "padding"));
  g_assert_false (espalier_layer_editor_field_visible (f->editor, "units"));
  g_assert_cmpfloat (gtk_spin_button_get_value (filters), ==, 6);
  gtk_spin_button_set_value (filters, 8);
  gtk_spin_button_set_value (kernel, 3);
  gui_test_iterate (30);
  spec = espalier_model_doc_get_layer (f->doc, 0);
  g_assert_cmpint (spec->filters, ==, 8);
  g_assert_cmpint (spec->kernel, ==, 3);
}

static void
test_templates (Fixture       *f,
                gconstpointer  data)
{
  guint n;

  gtk_widget_activate_action (GTK_WIDGET (f->page), "model.template", "s", "mlp");
  gui_test_iterate (50);
  assert_spec (f, "flatten,dense:128,relu,dense:10,softmax");
  g_assert_true (espalier_model_doc_is_valid (f->doc));
  espalier_model_canvas_select (f->canvas, 1);
  screenshot (f, "model-mlp");

  g_assert_true (espalier_model_page_apply_template (f->page, "lenet"));
  gui_test_iterate (50);
  g_assert_true (espalier_model_doc_is_valid (f->doc));
  g_assert_cmpint (espalier_model_doc_get_layer (f->doc, 0)->kind, ==, ES_LAYER_CONV2D);
  espalier_model_canvas_select (f->canvas, 0);
  screenshot (f, "model-lenet");
  espalier_model_page_undo (f->page);
  assert_spec (f, "flatten,dense:128,relu,dense:10,softmax");

  /* LeNet on a 2-D set fails with a message and changes nothing. */
  espalier_model_doc_set_input (f->doc, &(EsShape) { 1, { 2 } }, 3);
  espalier_model_doc_set_spec (f->doc, "dense:8,relu,dense:3,softmax", NULL);
  n = espalier_model_doc_get_n_layers (f->doc);
  g_test_expect_message ("Espalier", G_LOG_LEVEL_MESSAGE, "*");
  g_assert_false (espalier_model_page_apply_template (f->page, "lenet"));
  g_test_assert_expected_messages ();
  g_assert_cmpuint (espalier_model_doc_get_n_layers (f->doc), ==, n);
  g_assert_true (espalier_model_page_apply_template (f->page, "playground"));
  g_assert_true (espalier_model_doc_is_valid (f->doc));
  screenshot (f, "model-playground");
}

static void
test_empty_and_dark (Fixture       *f,
                     gconstpointer  data)
{
  AdwStyleManager *style = adw_style_manager_get_default ();

  screenshot (f, "model-empty");
  set_spec (f, "conv2d:6:5:1:2,batchnorm,relu,maxpool2d:2,dropout:0.25,flatten,dense:10,softmax");
  espalier_model_canvas_select (f->canvas, 1);
  adw_style_manager_set_color_scheme (style, ADW_COLOR_SCHEME_FORCE_DARK);
  gui_test_iterate (200);
  screenshot (f, "model-dark");
  adw_style_manager_set_color_scheme (style, ADW_COLOR_SCHEME_DEFAULT);
  gui_test_iterate (50);
}

static void
test_no_project (void)
{
  EspalierModelPage *page = ESPALIER_MODEL_PAGE (espalier_model_page_new ());
  GtkWindow *window;

  g_object_ref (page);
  window = gui_test_window_new (GTK_WIDGET (page), 900, 600);
  /* Without a document everything is inert. */
  espalier_model_page_append_layer (page, ES_LAYER_DENSE);
  espalier_model_page_undo (page);
  g_assert_false (espalier_model_page_apply_template (page, "mlp"));
  g_assert_cmpint (espalier_model_canvas_layer_at (ESPALIER_MODEL_CANVAS (espalier_model_page_get_canvas (page)), 100, 100), ==, -1);
  gui_test_window_destroy (window);
  g_assert_finalize_object (page);
}

static void
test_format (void)
{
  g_autofree char *a = espalier_format_count (101770);
  g_autofree char *b = espalier_format_flops (200704);
  g_autofree char *c = espalier_format_count (156);
  g_autofree char *d = espalier_format_flops (1500000);
  EsLayerSpec conv = es_layer_spec_default (ES_LAYER_CONV2D);
  g_autofree char *e = NULL;

  g_assert_cmpstr (a, ==, "101.8k");
  g_assert_cmpstr (b, ==, "200.7 kFLOPs");
  g_assert_cmpstr (c, ==, "156");
  g_assert_cmpstr (d, ==, "1.5 MFLOPs");
  {
    g_autofree char *si = espalier_format_si (1234567);
    g_autofree char *small = espalier_format_si (950);
    g_autofree char *negative = espalier_format_si (-25300);

    g_assert_cmpstr (si, ==, "1.23 M");
    g_assert_cmpstr (small, ==, "950");
    g_assert_cmpstr (negative, ==, "-25.3 k");
  }
  conv.filters = 6;
  conv.kernel = 5;
  e = espalier_layer_spec_title (&conv);
  g_assert_cmpstr (e, ==, "Conv2D 6 5×5");
}

#define ADD(name, func) \
  g_test_add (name, Fixture, NULL, fixture_setup, func, fixture_teardown)

int
main (int    argc,
      char **argv)
{
  gui_test_init (&argc, &argv);

  g_test_add_func ("/canvas/format", test_format);
  g_test_add_func ("/canvas/no-project", test_no_project);
  ADD ("/canvas/add-from-page", test_add_from_page);
  ADD ("/canvas/drop", test_drop);
  ADD ("/canvas/drag-reorder", test_drag_reorder);
  ADD ("/canvas/keys", test_keys);
  ADD ("/canvas/undo-redo", test_undo_redo);
  ADD ("/canvas/invalid", test_invalid);
  ADD ("/canvas/too-large", test_too_large);
  ADD ("/canvas/editor", test_editor);
  ADD ("/canvas/templates", test_templates);
  ADD ("/canvas/empty-and-dark", test_empty_and_dark);
  return g_test_run ();
}
