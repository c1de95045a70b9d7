/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-profile-page.c: the Profile page as a user drives it, on a generated spiral set
 * and the playground model: Profile (the action) runs a profile as a job, and the
 * page then shows the report's content: a stacked bar per profiled step whose stages
 * add up to the report's, one table row per layer, the roofline's points, the memory
 * by kind, one card per advice (insensitive, with its reason, where it cannot apply);
 * applying an advice shows the measured before and after, Keep puts the change in the
 * project and Undo takes it out; a training run's profile fed live is drawn, and with
 * "Profile While Training" on, the window passes the Train page's run to the page. The
 * stacked bars layer and the split of a trace into steps are checked on their own.
 * Screenshots go to the screenshot directory. Run under Xvfb. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "espalier-advice-card.h"
#include "espalier-application.h"
#include "espalier-chart-layers.h"
#include "espalier-layer-time-table.h"
#include "espalier-memory-breakdown.h"
#include "espalier-profile-page.h"
#include "espalier-roofline-view.h"
#include "espalier-stage-bars.h"
#include "espalier-train-page.h"
#include "espalier-ui-util.h"
#include "espalier-window.h"
#include "gui-test-util.h"

#define SETTINGS_SCHEMA "io.github.espalier.Espalier"

typedef struct {
  EspalierProject     *project;
  EspalierProfilePage *page;
  GtkWindow           *window;
} Fixture;

static void
fixture_set_up (Fixture       *f,
                gconstpointer  data)
{
  f->project = gui_test_spiral_project ();
  f->page = g_object_ref_sink (g_object_new (ESPALIER_TYPE_PROFILE_PAGE, "project", f->project, NULL));
  f->window = gui_test_window_new (GTK_WIDGET (f->page), 1400, 1000);
}

static void
fixture_tear_down (Fixture       *f,
                   gconstpointer  data)
{
  gui_test_tear_down_page (f->window, f->page, f->project, NULL);
}

static gpointer
child (Fixture    *f,
       const char *name)
{
  GObject *object = gtk_widget_get_template_child (GTK_WIDGET (f->page), ESPALIER_TYPE_PROFILE_PAGE, name);

  g_assert_nonnull (object);
  return object;
}

static gboolean
not_busy (gpointer data)
{
  return !espalier_profile_page_get_busy (data);
}

static void
set_batch (EspalierProject *project,
           guint            batch)
{
  EspalierTrainOptions o = *espalier_project_get_train_options (project);

  o.batch_size = batch;
  espalier_project_set_train_options (project, &o);
}

/* Profile with the page's action, steps steps, and wait for the report. */
static EspalierProfileReport *
run_profile (Fixture *f,
             guint    steps)
{
  gtk_spin_button_set_value (child (f, "steps_spin"), steps);
  g_assert_true (gtk_widget_activate_action (GTK_WIDGET (f->page), "profile.run", NULL));
  g_assert_true (espalier_profile_page_get_busy (f->page));
  g_assert_true (gui_test_wait_until (not_busy, f->page, 120000));
  g_assert_nonnull (espalier_profile_page_get_report (f->page));
  return espalier_profile_page_get_report (f->page);
}

/* The advice cards in the page's advice box, in order. (transfer container) */
static GPtrArray *
advice_cards (Fixture *f)
{
  GPtrArray *cards = g_ptr_array_new ();

  for (GtkWidget *w = gtk_widget_get_first_child (child (f, "advice_box")); w != NULL;
       w = gtk_widget_get_next_sibling (w))
    if (ESPALIER_IS_ADVICE_CARD (w))
      g_ptr_array_add (cards, w);
  return cards;
}

static gpointer
card_child (gpointer    card,
            const char *name)
{
  GObject *object = gtk_widget_get_template_child (card, ESPALIER_TYPE_ADVICE_CARD, name);

  g_assert_nonnull (object);
  return object;
}

/* The cards say what the report says, most important first. */
static void
check_cards (Fixture               *f,
             EspalierProfileReport *report)
{
  g_autoptr(GPtrArray) cards = advice_cards (f);
  guint n = espalier_profile_report_n_advice (report);

  g_assert_cmpuint (cards->len, ==, n);
  for (guint i = 0; i < n; i++)
    {
      const EspalierAdvice *a = espalier_profile_report_advice (report, i);
      gpointer card = g_ptr_array_index (cards, i);
      GtkWidget *apply = card_child (card, "apply_button");
      GtkLabel *gain = card_child (card, "gain_label");

      g_assert_cmpuint (espalier_advice_card_get_index (card), ==, i);
      g_assert_cmpstr (gtk_label_get_label (card_child (card, "title_label")), ==, a->title);
      g_assert_cmpstr (gtk_label_get_label (card_child (card, "evidence_label")), ==, a->evidence);
      /* A gain is only ever shown as an estimate. */
      if (isfinite (a->expected_gain))
        g_assert_nonnull (strstr (gtk_label_get_label (gain), "estimate"));
      g_assert_cmpint (gtk_widget_get_sensitive (apply), ==, a->can_apply);
      if (!a->can_apply)
        {
          g_assert_cmpstr (gtk_widget_get_tooltip_text (apply), ==, a->cannot_apply);
          g_assert_cmpstr (gtk_label_get_label (card_child (card, "reason_label")), ==, a->cannot_apply);
          g_assert_true (gtk_widget_get_visible (card_child (card, "reason_label")));
        }
    }
  g_assert_cmpint (gtk_widget_get_visible (child (f, "advice_empty_label")), ==, n == 0);
}

/* The table holds one row per layer with the report's figures. */
static void
check_table (Fixture                      *f,
             const EspalierProfileSummary *s)
{
  GListModel *rows = espalier_layer_time_table_get_rows (child (f, "layer_table"));

  g_assert_cmpuint (g_list_model_get_n_items (rows), ==, s->n_layers);
  g_assert_cmpuint (s->n_layers, ==, 6);
  for (guint i = 0; i < s->n_layers; i++)
    {
      g_autoptr(EspalierLayerTimeRow) row = g_list_model_get_item (rows, i);
      const EspalierLayerTime *l = espalier_layer_time_row_get_layer (row);

      g_assert_cmpuint (l->index, ==, s->layers[i].index);
      g_assert_cmpstr (l->kind, ==, s->layers[i].kind);
      g_assert_cmpfloat (l->flops, ==, s->layers[i].flops);
      g_assert_cmpfloat (l->forward_s, ==, s->layers[i].forward_s);
      g_assert_cmpfloat (l->gflops, ==, s->layers[i].gflops);
      g_assert_cmpuint (espalier_layer_time_row_get_steps (row), ==, s->steps);
    }
}

/* Per-step bars add up, stage by stage, to the report's stage times. */
static void
check_stage_bars (Fixture                      *f,
                  const EspalierProfileSummary *s,
                  gboolean                      traced)
{
  EspalierStageBars *bars = child (f, "stage_bars");

  g_assert_cmpuint (espalier_chart_get_n_layers (espalier_stage_bars_get_chart (bars)), ==, s->n_stages);
  if (!traced)
    {
      g_assert_cmpuint (espalier_stage_bars_get_n_bars (bars), ==, 1);
      for (guint k = 0; k < s->n_stages; k++)
        g_assert_cmpfloat_with_epsilon (espalier_stage_bars_get_seconds (bars, 0, k),
                                        s->stages[k].seconds / s->steps, 1e-12);
      return;
    }
  g_assert_cmpuint (espalier_stage_bars_get_n_bars (bars), ==, s->steps);
  for (guint k = 0; k < s->n_stages; k++)
    {
      double sum = 0;

      if (strcmp (s->stages[k].name, "other") == 0)
        continue;
      for (guint i = 0; i < s->steps; i++)
        sum += espalier_stage_bars_get_seconds (bars, i, k);
      g_assert_cmpfloat_with_epsilon (sum, s->stages[k].seconds, 1e-9 + 1e-9 * s->stages[k].seconds);
    }
}

static void
check_roofline_and_memory (Fixture                      *f,
                           const EspalierProfileSummary *s)
{
  EspalierRooflineView *roofline = child (f, "roofline");
  EspalierMemoryBreakdown *memory = child (f, "memory_breakdown");
  g_autofree char *weights = g_format_size (s->profile->mem_kind[ES_MEM_WEIGHTS]);
  g_autofree char *peak = g_format_size (s->profile->mem_peak);
  guint drawn = 0;

  for (guint i = 0; i < s->n_layers; i++)
    drawn += s->layers[i].gflops > 0 && s->layers[i].intensity > 0;
  g_assert_cmpuint (drawn, >, 0);
  g_assert_cmpuint (espalier_roofline_view_get_n_points (roofline), ==, drawn);
  g_assert_cmpint (espalier_roofline_view_has_roof (roofline), ==, s->have_ceilings);
  g_assert_cmpstr (espalier_memory_breakdown_get_text (memory, "weights"), ==, weights);
  g_assert_cmpstr (espalier_memory_breakdown_get_text (memory, "peak"), ==, peak);
  g_assert_null (espalier_memory_breakdown_get_text (memory, "no-such-row"));
}

/* Hover over a roofline point names its layer. */
static void
check_roofline_hover (Fixture                      *f,
                      const EspalierProfileSummary *s)
{
  EspalierChart *chart = espalier_roofline_view_get_chart (child (f, "roofline"));
  EspalierChartAxis *x_axis = espalier_chart_get_x_axis (chart);
  EspalierChartAxis *y_axis = espalier_chart_get_y_axis (chart);
  int width = gtk_widget_get_width (GTK_WIDGET (chart));
  int height = gtk_widget_get_height (GTK_WIDGET (chart));
  graphene_rect_t area;

  g_assert_cmpint (width, >, 0);
  espalier_chart_get_plot_area (chart, width, height, &area);
  for (guint i = 0; i < s->n_layers; i++)
    {
      const EspalierLayerTime *l = &s->layers[i];
      g_autofree char *name = NULL, *text = NULL;
      double px, py;

      if (!(l->gflops > 0 && l->intensity > 0))
        continue;
      espalier_chart_layer_map (&area, x_axis, y_axis, l->intensity, l->gflops, &px, &py);
      text = espalier_chart_describe_at (chart, px, py);
      name = espalier_layer_time_name (l);
      g_assert_nonnull (text);
      /* Points may overlap: the readout names this layer or one on the same spot. */
      if (strstr (text, name) == NULL)
        g_test_message ("hover at layer %u reads “%s”", i + 1, text);
      g_assert_nonnull (strchr (text, ':'));
      return;
    }
}

static void
test_profile (Fixture       *f,
              gconstpointer  data)
{
  EspalierProfileReport *report;
  const EspalierProfileSummary *s;
  GtkStack *result_stack = child (f, "result_stack");

  g_assert_cmpstr (gtk_stack_get_visible_child_name (result_stack), ==, "none");
  report = run_profile (f, 12);
  s = espalier_profile_report_get_summary (report);
  g_assert_cmpuint (s->steps, ==, 12);
  g_assert_cmpstr (gtk_stack_get_visible_child_name (result_stack), ==, "report");
  gui_test_iterate (50);

  check_table (f, s);
  check_stage_bars (f, s, TRUE);
  check_roofline_and_memory (f, s);
  check_cards (f, report);
  g_assert_cmpuint (espalier_profile_report_n_findings (report), >, 0);
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (f->page),
                                         espalier_profile_report_finding (report, 0)->title));
  g_assert_nonnull (strstr (gtk_label_get_label (child (f, "source_label")), "12 steps"));
  gui_test_save_screenshot (GTK_WIDGET (f->window), "profile-report", 400);
  check_roofline_hover (f, s);

  /* The page scrolled to the charts. */
  {
    GtkWidget *roofline = child (f, "roofline");
    GtkWidget *scroller = gtk_widget_get_ancestor (roofline, GTK_TYPE_SCROLLED_WINDOW);
    GtkAdjustment *adj = gtk_scrolled_window_get_vadjustment (GTK_SCROLLED_WINDOW (scroller));
    graphene_point_t p;

    g_assert_true (gtk_widget_compute_point (roofline, gtk_scrolled_window_get_child (GTK_SCROLLED_WINDOW (scroller)),
                                             &GRAPHENE_POINT_INIT (0, 0), &p));
    gtk_adjustment_set_value (adj, p.y - 400);
    gui_test_save_screenshot (GTK_WIDGET (f->window), "profile-report-charts", 400);
    gtk_adjustment_set_value (adj, 0);
  }

  /* The button is off while a profile runs, and on again after it. */
  g_assert_true (gtk_widget_get_sensitive (child (f, "profile_button")));
  g_assert_true (gtk_widget_activate_action (GTK_WIDGET (f->page), "profile.run", NULL));
  g_assert_true (espalier_profile_page_get_busy (f->page));
  g_assert_false (gtk_widget_get_sensitive (child (f, "profile_button")));
  g_assert_true (gui_test_wait_until (not_busy, f->page, 120000));
  g_assert_true (gtk_widget_get_sensitive (child (f, "profile_button")));
}

/* The advice on a tiny batch: apply, before/after, keep, undo. */
static void
test_apply (Fixture       *f,
            gconstpointer  data)
{
  EspalierProfileReport *report, *first;
  const EspalierAdviceResult *res;
  guint n, pick = G_MAXUINT;
  g_autofree char *before = NULL, *after = NULL, *gain = NULL;
  g_autoptr(GPtrArray) cards = NULL;

  set_batch (f->project, 4);
  report = first = run_profile (f, 12);
  check_cards (f, report);
  n = espalier_profile_report_n_advice (report);
  for (guint i = 0; i < n && pick == G_MAXUINT; i++)
    if (espalier_profile_report_advice (report, i)->kind == ESPALIER_ADVICE_LARGER_BATCH)
      pick = i;
  for (guint i = 0; i < n && pick == G_MAXUINT; i++)
    if (espalier_profile_report_advice (report, i)->can_apply)
      pick = i;
  if (pick == G_MAXUINT)
    {
      g_test_skip ("the advisor gave no advice that applies to this profile");
      return;
    }
  g_test_message ("applying advice %u: %s", pick, espalier_profile_report_advice (report, pick)->title);

  /* Apply through the card's button, as a user does. */
  cards = advice_cards (f);
  g_signal_emit_by_name (card_child (g_ptr_array_index (cards, pick), "apply_button"), "clicked");
  g_assert_true (espalier_profile_page_get_busy (f->page));
  /* While one applies, no Apply is sensitive. */
  for (guint i = 0; i < cards->len; i++)
    g_assert_false (gtk_widget_get_sensitive (card_child (g_ptr_array_index (cards, i), "apply_button")));
  g_assert_true (gui_test_wait_until (not_busy, f->page, 180000));

  res = espalier_profile_page_get_result (f->page);
  g_assert_nonnull (res);
  g_assert_true (gtk_revealer_get_reveal_child (child (f, "compare_revealer")));
  g_assert_cmpfloat (res->before, >, 0);
  g_assert_cmpfloat (res->after, >, 0);
  if (res->kind == ESPALIER_ADVICE_LARGER_BATCH)
    {
      g_assert_cmpuint (res->opts.batch_size, >, 4);
      before = espalier_format_si (res->before);
      after = espalier_format_si (res->after);
      g_assert_nonnull (strstr (gtk_label_get_label (child (f, "before_label")), before));
      g_assert_nonnull (strstr (gtk_label_get_label (child (f, "after_label")), after));
    }
  gain = g_strdup_printf ("%.2f×", res->gain);
  g_assert_nonnull (strstr (gtk_label_get_label (child (f, "gain_label")), gain));
  g_assert_cmpstr (gtk_label_get_label (child (f, "compare_change_label")), ==, res->change);
  gui_test_save_screenshot (GTK_WIDGET (f->window), "profile-applied", 400);

  if (res->kind != ESPALIER_ADVICE_LARGER_BATCH)
    return;

  /* Keep: the project trains on the bigger batch, and the page shows its profile. */
  g_assert_true (gtk_widget_activate_action (GTK_WIDGET (f->page), "profile.keep", NULL));
  g_assert_cmpuint (espalier_project_get_train_options (f->project)->batch_size, ==, res->opts.batch_size);
  g_assert_true (espalier_profile_page_get_report (f->page) == res->report);
  g_assert_true (gtk_widget_get_visible (child (f, "undo_button")));
  g_assert_false (gtk_widget_get_visible (child (f, "keep_button")));
  gui_test_save_screenshot (GTK_WIDGET (f->window), "profile-kept", 400);

  /* Undo: back to batches of 4 and the first profile. */
  g_assert_true (gtk_widget_activate_action (GTK_WIDGET (f->page), "profile.undo", NULL));
  g_assert_cmpuint (espalier_project_get_train_options (f->project)->batch_size, ==, 4);
  g_assert_true (espalier_profile_page_get_report (f->page) == first);
  g_assert_true (gtk_widget_get_visible (child (f, "keep_button")));

  /* Dismiss hides the comparison. */
  g_assert_true (gtk_widget_activate_action (GTK_WIDGET (f->page), "profile.dismiss", NULL));
  g_assert_null (espalier_profile_page_get_result (f->page));
  g_assert_false (gtk_revealer_get_reveal_child (child (f, "compare_revealer")));
}

/* A profile of a real training run, as the Train page's run delivers it. */
static EspalierProfile *
train_profile (EspalierProject *project,
               guint            steps)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierTrainer) trainer = NULL;
  EspalierTrainOptions o = *espalier_project_get_train_options (project);
  EsModel *model = espalier_model_doc_build (espalier_project_get_model_doc (project), 1, &error);
  EspalierProfile *prof;

  g_assert_no_error (error);
  o.epochs = 100;
  trainer = espalier_trainer_new (espalier_project_get_dataset (project), model, &o);
  espalier_trainer_set_profiling (trainer, TRUE, steps, FALSE);
  g_assert_true (espalier_trainer_run (trainer, NULL, NULL, NULL, &error));
  g_assert_no_error (error);
  prof = espalier_profile_copy (espalier_trainer_get_profile (trainer));
  g_clear_object (&trainer);
  es_model_free (model);
  return prof;
}

static gboolean
live_drawn (gpointer data)
{
  gpointer *args = data;

  return espalier_profile_page_get_live_count (args[0]) >= GPOINTER_TO_UINT (args[1]);
}

/* The page shows a live report of args[1] steps. */
static gboolean
live_steps (gpointer data)
{
  gpointer *args = data;
  EspalierProfileReport *report = espalier_profile_page_get_report (args[0]);

  return report != NULL && espalier_profile_report_get_summary (report)->steps == GPOINTER_TO_UINT (args[1]);
}

static gboolean
has_roof (gpointer data)
{
  return espalier_roofline_view_has_roof (data);
}

static void
test_live (Fixture       *f,
           gconstpointer  data)
{
  EspalierProfile *prof = train_profile (f->project, 12);
  EspalierProfile *later = train_profile (f->project, 24);
  const EspalierProfileSummary *s;
  gpointer args[2] = { f->page, GUINT_TO_POINTER (1) };
  EspalierStageBars *bars = child (f, "stage_bars");
  g_autofree double *first = NULL;

  g_assert_cmpuint (prof->steps, ==, 12);
  espalier_profile_page_update_live (f->page, prof);
  espalier_profile_free (prof);   /* the page keeps a copy */
  g_assert_true (gui_test_wait_until (live_drawn, args, 10000));
  s = espalier_profile_report_get_summary (espalier_profile_page_get_report (f->page));
  g_assert_cmpuint (s->steps, ==, 12);
  check_table (f, s);
  check_stage_bars (f, s, FALSE);
  g_assert_true (g_str_has_prefix (gtk_label_get_label (child (f, "source_label")), "Live"));
  first = g_new (double, s->n_stages);
  for (guint k = 0; k < s->n_stages; k++)
    first[k] = s->stages[k].seconds;

  /* A later record of the same run refreshes the page (the ceilings may have redrawn
   * the first one meanwhile). */
  espalier_profile_page_update_live (f->page, later);
  espalier_profile_free (later);
  args[1] = GUINT_TO_POINTER (24);
  g_assert_true (gui_test_wait_until (live_steps, args, 10000));
  s = espalier_profile_report_get_summary (espalier_profile_page_get_report (f->page));
  g_assert_cmpuint (s->steps, ==, 24);
  check_cards (f, espalier_profile_page_get_report (f->page));
  /* A bar per stretch of the run: the second is the mean step of steps 13 to 24. */
  g_assert_cmpuint (espalier_stage_bars_get_n_bars (bars), ==, 2);
  for (guint k = 0; k < s->n_stages; k++)
    g_assert_cmpfloat_with_epsilon (espalier_stage_bars_get_seconds (bars, 1, k),
                                    MAX (s->stages[k].seconds - first[k], 0.0) / 12, 1e-12);

  /* The ceilings are read off the main thread; the roofline follows. */
  g_assert_true (gui_test_wait_until (has_roof, child (f, "roofline"), 30000));
  s = espalier_profile_report_get_summary (espalier_profile_page_get_report (f->page));
  g_assert_true (s->have_ceilings);
  check_roofline_and_memory (f, s);
  /* Redrawn for the roofline, not trained further: no new bar. */
  g_assert_cmpuint (espalier_stage_bars_get_n_bars (bars), ==, 2);
  gui_test_save_screenshot (GTK_WIDGET (f->window), "profile-live", 400);
}

/* The window: "Profile While Training" on, the Train page's run shows on the page. */

static gboolean
has_dataset (gpointer data)
{
  return espalier_project_get_dataset (espalier_window_get_project (data)) != NULL;
}

static gboolean
not_training (gpointer data)
{
  return !espalier_train_page_get_training (data);
}

static void
test_window_live (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierApplication) app = espalier_application_new ();
  g_autoptr(EspalierProject) project = gui_test_spiral_project ();
  GSettingsSchemaSource *source = g_settings_schema_source_get_default ();
  g_autoptr(GSettingsSchema) schema = source != NULL
    ? g_settings_schema_source_lookup (source, SETTINGS_SCHEMA, TRUE) : NULL;
  g_autoptr(GSettings) settings = NULL;
  EspalierWindow *window;
  EspalierTrainPage *train;
  EspalierProfilePage *profile;
  EspalierTrainOptions o;
  gpointer args[2];

  if (schema == NULL)
    {
      g_test_skip ("the settings schema is not installed");
      return;
    }
  settings = g_settings_new_full (schema, NULL, NULL);
  g_application_set_flags (G_APPLICATION (app), G_APPLICATION_NON_UNIQUE);
  g_application_register (G_APPLICATION (app), NULL, &error);
  g_assert_no_error (error);
  window = espalier_window_new (ADW_APPLICATION (app));
  gtk_window_set_default_size (GTK_WINDOW (window), 1400, 1000);
  gtk_window_present (GTK_WINDOW (window));
  while (!gtk_widget_get_mapped (GTK_WIDGET (window)))
    g_main_context_iteration (NULL, TRUE);
  /* The default project's set loads first; then ours replaces it. */
  g_assert_true (gui_test_wait_until (has_dataset, window, 120000));
  o = *espalier_project_get_train_options (project);
  o.epochs = 3;
  espalier_project_set_train_options (project, &o);
  espalier_window_set_project (window, project);

  profile = ESPALIER_PROFILE_PAGE (espalier_window_get_page_widget (window, "profile"));
  train = ESPALIER_TRAIN_PAGE (espalier_window_get_page_widget (window, "train"));
  g_settings_set_boolean (settings, "profiling", TRUE);
  g_assert_true (gtk_switch_get_active (GTK_SWITCH (gtk_widget_get_template_child (GTK_WIDGET (profile),
                                                                                   ESPALIER_TYPE_PROFILE_PAGE,
                                                                                   "live_switch"))));
  espalier_train_page_start (train);
  g_assert_true (espalier_train_page_get_training (train));
  g_assert_true (gui_test_wait_until (not_training, train, 120000));
  args[0] = profile;
  args[1] = GUINT_TO_POINTER (1);
  g_assert_true (gui_test_wait_until (live_drawn, args, 10000));
  {
    GtkLabel *label = GTK_LABEL (gtk_widget_get_template_child (GTK_WIDGET (profile),
                                                                ESPALIER_TYPE_PROFILE_PAGE,
                                                                "source_label"));

    g_assert_true (g_str_has_prefix (gtk_label_get_label (label), "Live"));
  }
  espalier_window_show_page (window, "profile");
  gui_test_save_screenshot (GTK_WIDGET (window), "profile-window-live", 400);

  g_settings_set_boolean (settings, "profiling", FALSE);
  espalier_project_set_modified (espalier_window_get_project (window), FALSE);
  gtk_window_destroy (GTK_WINDOW (window));
  gui_test_iterate (50);
  g_application_quit (G_APPLICATION (app));
}

/* The pieces on their own */

/* A summary of two steps with known intervals: data, forward (two layers), loss,
 * backward, optimizer; "other" is what the intervals leave of each step. */
static void
test_split_events (void)
{
  static const EspalierTraceEvent ev[] = {
    { ESPALIER_STAGE_DATA, -1, 0.000, 0.010 },
    { ES_STAGE_LOAD, -1, 0.010, 0.011 },
    { ES_STAGE_FORWARD, 0, 0.011, 0.020 },
    { ES_STAGE_FORWARD, 1, 0.020, 0.025 },
    { ES_STAGE_LOSS, -1, 0.025, 0.026 },
    { ES_STAGE_BACKWARD, 1, 0.026, 0.030 },
    { ES_STAGE_OPTIMIZER, -1, 0.030, 0.032 },
    /* 3 ms of reporting, then the next step */
    { ESPALIER_STAGE_DATA, -1, 0.035, 0.036 },
    { ES_STAGE_FORWARD, 0, 0.036, 0.040 },
    { ES_STAGE_OPTIMIZER, -1, 0.040, 0.041 },
  };
  const char *names[] = { "data", "load", "forward", "loss", "metrics", "backward", "optimizer", "other" };
  EspalierStageTime stages[G_N_ELEMENTS (names)] = { { 0 } };
  EspalierProfile prof = { 0 };
  EspalierProfileSummary s = { 0 };
  g_autofree double *sec = NULL;
  EspalierStageBars *bars;
  guint n;

  prof.steps = 2;
  prof.events = g_array_new (FALSE, FALSE, sizeof (EspalierTraceEvent));
  g_array_append_vals (prof.events, ev, G_N_ELEMENTS (ev));
  for (guint k = 0; k < G_N_ELEMENTS (names); k++)
    {
      stages[k].name = names[k];
      stages[k].label = names[k];
    }
  s.steps = 2;
  s.n_stages = G_N_ELEMENTS (names);
  s.stages = stages;
  s.profile = &prof;

  n = espalier_stage_bars_split_events (&s, &sec);
  g_assert_cmpuint (n, ==, 2);
  /* (steps, stages) */
  g_assert_cmpfloat_with_epsilon (sec[0 * 8 + 0], 0.010, 1e-12);
  g_assert_cmpfloat_with_epsilon (sec[0 * 8 + 1], 0.001, 1e-12);
  g_assert_cmpfloat_with_epsilon (sec[0 * 8 + 2], 0.014, 1e-12);
  g_assert_cmpfloat_with_epsilon (sec[0 * 8 + 3], 0.001, 1e-12);
  g_assert_cmpfloat_with_epsilon (sec[0 * 8 + 4], 0.000, 1e-12);
  g_assert_cmpfloat_with_epsilon (sec[0 * 8 + 5], 0.004, 1e-12);
  g_assert_cmpfloat_with_epsilon (sec[0 * 8 + 6], 0.002, 1e-12);
  g_assert_cmpfloat_with_epsilon (sec[0 * 8 + 7], 0.003, 1e-12);   /* 35 ms - 32 ms */
  g_assert_cmpfloat_with_epsilon (sec[1 * 8 + 0], 0.001, 1e-12);
  g_assert_cmpfloat_with_epsilon (sec[1 * 8 + 2], 0.004, 1e-12);
  g_assert_cmpfloat_with_epsilon (sec[1 * 8 + 6], 0.001, 1e-12);
  g_assert_cmpfloat_with_epsilon (sec[1 * 8 + 7], 0.000, 1e-12);   /* ends at its last interval */

  /* The widget draws them: a bar per step, a layer per stage, the readout names the
   * stage of the segment under the pointer. */
  bars = g_object_ref_sink (ESPALIER_STAGE_BARS (espalier_stage_bars_new ()));
  {
    GtkWindow *window = gui_test_window_new (GTK_WIDGET (bars), 700, 400);
    EspalierChart *chart = espalier_stage_bars_get_chart (bars);
    int width = gtk_widget_get_width (GTK_WIDGET (chart)), height = gtk_widget_get_height (GTK_WIDGET (chart));
    graphene_rect_t area;
    g_autofree char *text = NULL;
    double px, py;

    espalier_stage_bars_set_summary (bars, &s);
    gui_test_iterate (50);
    g_assert_cmpuint (espalier_stage_bars_get_n_bars (bars), ==, 2);
    g_assert_cmpuint (espalier_chart_get_n_layers (chart), ==, 8);
    g_assert_cmpfloat_with_epsilon (espalier_stage_bars_get_seconds (bars, 0, 2), 0.014, 1e-12);
    g_assert_true (isnan (espalier_stage_bars_get_seconds (bars, 2, 0)));
    /* Forward of step 1 spans 11..25 ms (in ms on the axis): its middle. */
    espalier_chart_get_plot_area (chart, width, height, &area);
    espalier_chart_layer_map (&area, espalier_chart_get_x_axis (chart), espalier_chart_get_y_axis (chart),
                              0, 18.0, &px, &py);
    text = espalier_chart_describe_at (chart, px, py);
    g_assert_cmpstr (text, ==, "1 · forward: 14");
    gui_test_save_screenshot (GTK_WIDGET (window), "profile-stage-bars", 100);

    /* One step far longer than the others (a pause): cut off at the top, marked, told
     * of under the chart; the scale is the other steps'. */
    {
      const char *labels[] = { "1", "2", "3", "4", "5", "6", "7", "8", NULL };
      double per[8 * 8] = { 0 };   /* (steps, stages) */
      double lo, hi, others = 0;

      for (guint i = 0; i < 8; i++)
        {
          per[i * 8 + 2] = 20e-6 + 1e-6 * i;   /* forward */
          per[i * 8 + 5] = 10e-6;              /* backward */
          if (i != 6)
            others = MAX (others, per[i * 8 + 2] + per[i * 8 + 5]);
        }
      per[6 * 8 + 7] = 1e-3;                  /* step 7's "other": 30 times the rest */
      espalier_stage_bars_set_bars (bars, &s, per, labels, 8, "Profiled step");
      gui_test_iterate (50);
      g_assert_cmpuint (espalier_stage_bars_get_n_clipped (bars), ==, 1);
      g_assert_false (espalier_chart_axis_get_auto_range (espalier_chart_get_y_axis (chart)));
      espalier_chart_axis_get_range (espalier_chart_get_y_axis (chart), &lo, &hi);
      g_assert_cmpfloat (hi, >=, others * 1e6);        /* in µs, the others' unit */
      g_assert_cmpfloat (hi, <, (1e-3 + 36e-6) * 1e6);
      {
        GtkWidget *told = gui_test_find_label (GTK_WIDGET (bars), "↑");

        g_assert_nonnull (told);
        g_assert_nonnull (strstr (gtk_label_get_label (GTK_LABEL (told)), "median step"));
      }
      gui_test_save_screenshot (GTK_WIDGET (window), "profile-stage-bars-clipped", 100);

      /* without the pause nothing is cut and the scale follows the data again */
      per[6 * 8 + 7] = 0;
      espalier_stage_bars_set_bars (bars, &s, per, labels, 8, "Profiled step");
      g_assert_cmpuint (espalier_stage_bars_get_n_clipped (bars), ==, 0);
      g_assert_true (espalier_chart_axis_get_auto_range (espalier_chart_get_y_axis (chart)));
    }

    espalier_stage_bars_set_summary (bars, NULL);
    g_assert_cmpuint (espalier_stage_bars_get_n_bars (bars), ==, 0);
    gui_test_window_destroy (window);
  }
  g_assert_finalize_object (bars);
  g_array_unref (prof.events);
}

int
main (int    argc,
      char **argv)
{
  gui_test_init (&argc, &argv);

  g_test_add_func ("/profile-page/split-events", test_split_events);
  g_test_add ("/profile-page/profile", Fixture, NULL, fixture_set_up, test_profile, fixture_tear_down);
  g_test_add ("/profile-page/apply", Fixture, NULL, fixture_set_up, test_apply, fixture_tear_down);
  g_test_add ("/profile-page/live", Fixture, NULL, fixture_set_up, test_live, fixture_tear_down);
  g_test_add_func ("/profile-page/window-live", test_window_live);
  return g_test_run ();
}
