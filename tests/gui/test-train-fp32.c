/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-train-fp32.c: the Train page tells when mixed precision fell back to fp32. On
 * the CUDA emulation's module (tests/cuda/emu, opened as core opens the real one), an
 * fp16 run under the Preferences' memory limit of 1 MiB, with a model sized so that the
 * trainer fits at one row but the 16-bit copies of its matrix products do not: the
 * memory plan's row says how many products ran in fp32 and what to do, in a whole
 * sentence; the Done line says the run trained on the GPU. Screenshots of the page go
 * to the screenshot directory. */
#include "config.h"

#include <string.h>

#include "espalier-device.h"
#include "espalier-generate.h"
#include "espalier-train-page.h"
#include "gui-test-util.h"

#define SPIRAL "spiral:n=300,arms=3,noise=0.2,seed=1"
#define LIMIT ((gsize) 1 << 20)          /* the Preferences' 1 MiB */
/* the CUDA backend's own buffers under it: 16 KiB of reductions ((2 x 1024 + 8)
 * doubles), no cuBLAS workspace (4 MiB would not fit) */
#define BACKEND_OWN ((gsize) (2 * 1024 + 8) * sizeof (double))

static gboolean
fallback_shown (gpointer page)
{
  return gui_test_find_label (page, "ran in fp32") != NULL;
}

static gboolean
not_training (gpointer page)
{
  return !espalier_train_page_get_training (page);
}

/* The width W of "dense:W,relu,dense:W,relu,dense:3,softmax" for which, at one row,
 * what the trainer allocates fits in the limit but not with the largest product's
 * 16-bit copies: the plan at one row as the trainer plans it on this backend (uploads
 * ahead, the resident rows' indices for the whole batch) less the copies (the fp16
 * plan's bytes over the fp32 one's but the 32 of fp16's scaler) and the uint8 staging
 * and argmax rows of one row must be within the limit, the plan less only those last
 * two above it. 0 when no width between 16 and 1024 does. */
static guint
pick_width (EspalierModelDoc *doc, const EspalierTrainOptions *opts, char **spec)
{
  for (guint w = 16; w <= 1024; w++)
    {
      g_autoptr(GError) error = NULL;
      g_autofree char *s = g_strdup_printf ("dense:%u,relu,dense:%u,relu,dense:3,softmax", w, w);
      EsTrainConfig cfg = opts->engine;
      EsMemPlan p16, p32;
      EsModel *m;
      gsize need, half, avail = LIMIT - BACKEND_OWN, lazy;

      g_assert_true (espalier_model_doc_set_spec (doc, s, &error));
      m = espalier_model_doc_build (doc, 1, &error);
      g_assert_no_error (error);
      cfg.plan_cuda = TRUE;
      cfg.plan_prefetch = TRUE;
      cfg.precision = ES_PRECISION_FP16;
      es_mem_plan (m, &cfg, 1, TRUE, &p16);
      cfg.precision = ES_PRECISION_FP32;
      es_mem_plan (m, &cfg, 1, TRUE, &p32);
      es_model_free (m);
      half = p16.total - p32.total - 4 * sizeof (double);
      need = p16.total + 2 * (opts->batch_size - 1) * sizeof (gint32);
      lazy = 2 + sizeof (gint32);   /* staging (D = 2 bytes) and argmax rows */
      if (need - half - lazy <= avail && avail < need - lazy)
        {
          *spec = g_steal_pointer (&s);
          return w;
        }
    }
  return 0;
}

static void
test_fp32_fallbacks (void)
{
  g_autoptr(GSettings) settings = g_settings_new ("io.github.espalier.Espalier");
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = espalier_generate_from_spec (SPIRAL, &error);
  g_autofree char *spec = NULL;
  EspalierProject *project = espalier_project_new ();
  EspalierTrainPage *page;
  EspalierTrainOptions opts;
  GtkWindow *window;
  GtkWidget *row, *done;
  guint width;

  if (espalier_cuda_device_count () == 0)
    {
      g_test_skip ("the CUDA emulation's module did not load");
      g_object_unref (project);
      return;
    }
  g_assert_no_error (error);
  espalier_project_set_dataset (project, ds, NULL);
  espalier_train_options_init (&opts);
  g_assert_true (espalier_model_doc_apply_template (espalier_project_get_model_doc (project),
                                                    "playground", &opts, &error));
  opts.epochs = 1;
  opts.engine.precision = ES_PRECISION_FP16;
  width = pick_width (espalier_project_get_model_doc (project), &opts, &spec);
  g_assert_cmpuint (width, >, 0);
  g_test_message ("%s at batch %u under 1 MiB", spec, opts.batch_size);
  g_assert_true (espalier_model_doc_set_spec (espalier_project_get_model_doc (project), spec,
                                              &error));
  espalier_project_set_train_options (project, &opts);

  g_settings_set_string (settings, "device", "cuda");
  g_settings_set_uint (settings, "memory-limit", 1);
  page = ESPALIER_TRAIN_PAGE (g_object_ref_sink (espalier_train_page_new ()));
  espalier_train_page_set_project (page, project);
  window = gui_test_window_new (GTK_WIDGET (page), 1500, 950);
  gui_test_iterate (100);
  g_assert_null (gui_test_find_label (GTK_WIDGET (page), "ran in fp32"));
  espalier_train_page_start (page);
  g_assert_true (gui_test_wait_until (not_training, page, 120000));
  g_assert_true (gui_test_wait_until (fallback_shown, page, 5000));
  g_assert_nonnull (gui_test_find_label (GTK_WIDGET (page), "raise the limit or lower the batch"));
  row = gtk_widget_get_ancestor (gui_test_find_label (GTK_WIDGET (page), "ran in fp32"),
                                 ADW_TYPE_EXPANDER_ROW);
  g_assert_nonnull (row);
  gui_test_save_screenshot (row, "train-fp32-fallbacks", 100);
  /* the Done line says the run trained on the GPU, and that the latency after it is
   * the trained model's on the CPU */
  done = gui_test_find_label (GTK_WIDGET (page), "Done: trained on the GPU; ");
  g_assert_nonnull (done);
  g_test_message ("the Done line: %s", gtk_label_get_label (GTK_LABEL (done)));
  g_assert_nonnull (strstr (gtk_label_get_label (GTK_LABEL (done)),
                            ". Inference latency of the trained model on the CPU: "));
  gui_test_save_screenshot (GTK_WIDGET (page), "train-fp32-done", 100);
  g_settings_reset (settings, "device");
  g_settings_reset (settings, "memory-limit");
  gui_test_tear_down_page (window, page, project, NULL);
}

int
main (int argc, char **argv)
{
  g_setenv ("ESPALIER_CUDA_MODULE", TEST_CUDA_MODULE, FALSE);
  gui_test_init (&argc, &argv);
  g_test_add_func ("/train-fp32/fallbacks", test_fp32_fallbacks);
  return g_test_run ();
}
