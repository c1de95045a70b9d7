/* test-device.c: the device choice and the CPU fallback (espalier-device.h) on any
 * machine: "auto", "cpu", "cuda", "cuda:N" parsed and bad values refused; the list
 * always starts with the CPU; and where no CUDA device can be used (this machine, CI,
 * a build without CUDA) a CUDA device asked for by index gives the CPU backend with a
 * message saying why, in the backend, in evaluation and in a training run, while the
 * automatic choice falls back without a word. test-trainer-cuda.c covers the device. */
#include <math.h>

#include "espalier-device.h"
#include "espalier-error.h"
#include "espalier-generate.h"
#include "espalier-templates.h"
#include "espalier-trainer.h"

static gboolean
no_device (void)
{
  if (espalier_cuda_device_count () == 0)
    return TRUE;
  g_test_skip ("a CUDA device is present: the fallback is not taken");
  return FALSE;
}

static void
test_parse (void)
{
  static const struct { const char *text; gint device; } good[] = {
    { "auto", ESPALIER_DEVICE_AUTO }, { "cpu", ESPALIER_DEVICE_CPU }, { "CPU", ESPALIER_DEVICE_CPU },
    { "cuda", 0 }, { "cuda:0", 0 },
  };
  static const char *const bad[] = { "", "gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:0x", "cuda:99",
                                     "cuda:99999999999", "cpu:0" };

  for (guint i = 0; i < G_N_ELEMENTS (good); i++)
    {
      g_autoptr(GError) error = NULL;
      g_autofree char *text = NULL;
      gint device = 42;

      g_assert_true (espalier_device_parse (good[i].text, &device, &error));
      g_assert_no_error (error);
      g_assert_cmpint (device, ==, good[i].device);
      /* and back */
      text = espalier_device_to_string (device);
      g_assert_true (espalier_device_parse (text, &device, NULL));
      g_assert_cmpint (device, ==, good[i].device);
    }
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr(GError) error = NULL;
      gint device = 42;

      if (g_str_equal (bad[i], "cuda:99") && espalier_cuda_device_count () > 99)
        continue;
      g_assert_false (espalier_device_parse (bad[i], &device, &error));
      g_assert_error (error, ESPALIER_ERROR, ESPALIER_ERROR_INVALID);
      g_assert_cmpint (device, ==, 42);
      g_test_message ("%s: %s", bad[i], error->message);
    }
}

static void
test_list (void)
{
  g_autofree char *no_cuda = NULL;
  g_autoptr(GArray) list = espalier_devices_list (&no_cuda);
  const EspalierDevice *cpu = &g_array_index (list, EspalierDevice, 0);
  g_autofree char *cpu_text = espalier_device_describe (ESPALIER_DEVICE_CPU);

  g_assert_cmpuint (list->len, >=, 1);
  g_assert_cmpint (cpu->device, ==, ESPALIER_DEVICE_CPU);
  g_assert_nonnull (cpu->name);
  g_assert_cmpstr (cpu->name, !=, "");
  g_assert_cmpuint (cpu->cores, ==, g_get_num_processors ());
  g_assert_cmpstr (cpu_text, ==, "CPU");
  if (list->len == 1)
    {
      g_autofree char *reason = espalier_cuda_unavailable_reason ();

      g_assert_cmpuint (espalier_cuda_device_count (), ==, 0);
      g_assert_nonnull (no_cuda);
      g_assert_cmpstr (no_cuda, ==, reason);
      g_test_message ("no CUDA device: %s", no_cuda);
    }
  else
    g_assert_null (no_cuda);
}

static void
test_backend_fallback (void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *fallback = NULL, *reason = NULL;
  EsBackend *be;

  if (!no_device ())
    return;
  reason = espalier_cuda_unavailable_reason ();
  be = espalier_backend_new (0, 1, NULL, TRUE, &fallback, &error);
  g_assert_no_error (error);
  g_assert_nonnull (be);
  g_assert_cmpint (espalier_backend_get_device (be), ==, ESPALIER_DEVICE_CPU);
  g_assert_true (espalier_backend_check (be, &error));
  g_assert_nonnull (fallback);
  g_assert_nonnull (strstr (fallback, "CUDA device 0"));
  g_assert_nonnull (strstr (fallback, reason));
  g_assert_nonnull (strstr (fallback, "CPU"));
  es_backend_free (be);
  g_clear_pointer (&fallback, g_free);

  /* the automatic choice says nothing */
  be = espalier_backend_new (ESPALIER_DEVICE_AUTO, 1, NULL, FALSE, &fallback, &error);
  g_assert_no_error (error);
  g_assert_cmpint (espalier_backend_get_device (be), ==, ESPALIER_DEVICE_CPU);
  g_assert_null (fallback);
  es_backend_free (be);
}

typedef struct {
  GString *messages;
} Seen;

static void
on_progress (const EspalierProgress *p, gpointer data)
{
  Seen *seen = data;

  if (p->kind == ESPALIER_PROGRESS_MESSAGE)
    g_string_append_printf (seen->messages, "%s\n", p->message);
}

/* A run asked to train on cuda:0 trains on the CPU, says why, and gives the CPU run's
 * results exactly. */
static void
test_train_fallback (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GString) messages = g_string_new (NULL);
  g_autofree char *reason = NULL, *fallback = NULL;
  EspalierTrainOptions opts;
  EspalierMetrics m = { 0 };
  EsShape in = { 1, { 2 } };
  EsModel *model, *copy;
  double loss[2];
  Seen seen = { messages };

  if (!no_device ())
    return;
  reason = espalier_cuda_unavailable_reason ();
  ds = espalier_generate_from_spec ("spiral:n=120,arms=3,noise=0.2,seed=3", &error);
  g_assert_no_error (error);
  espalier_train_options_init (&opts);
  g_assert_cmpint (opts.device, ==, ESPALIER_DEVICE_AUTO);
  g_assert_false (opts.tf32);
  model = espalier_model_from_template ("playground", &in, 3, &opts, &error);
  g_assert_no_error (error);
  es_model_init (model, 1);
  opts.epochs = 2;
  opts.threads = 1;
  copy = es_model_copy (model);
  for (int i = 0; i < 2; i++)
    {
      g_autoptr(EspalierTrainer) tr = NULL;

      opts.device = i == 0 ? 0 : ESPALIER_DEVICE_CPU;
      tr = espalier_trainer_new (ds, i == 0 ? model : copy, &opts);
      espalier_trainer_set_profiling (tr, TRUE, 0, FALSE);
      g_assert_true (espalier_trainer_run (tr, NULL, on_progress, &seen, &error));
      g_assert_no_error (error);
      g_assert_cmpint (espalier_trainer_get_profile (tr)->device, ==, ESPALIER_DEVICE_CPU);
      g_assert_cmpstr (espalier_trainer_get_profile (tr)->device_name, ==, "CPU");
      loss[i] = g_array_index (espalier_trainer_get_history (tr), EspalierEpochRecord, 1).train_loss;
      if (i == 0)
        {
          g_test_message ("%s", messages->str);
          g_assert_nonnull (strstr (messages->str, "CUDA device 0 cannot be used"));
          g_assert_nonnull (strstr (messages->str, reason));
          g_string_truncate (messages, 0);
        }
    }
  g_assert_cmpstr (messages->str, ==, "");
  g_assert_cmpfloat (loss[0], ==, loss[1]);

  /* evaluation too */
  g_assert_true (espalier_evaluate_device (model, ds, NULL, 0, opts.engine.loss, 1, 0, FALSE,
                                           &fallback, &m, &error));
  g_assert_no_error (error);
  g_assert_nonnull (fallback);
  g_assert_nonnull (strstr (fallback, reason));
  g_assert_true (isfinite (m.loss));
  espalier_metrics_clear (&m);
  es_model_free (model);
  es_model_free (copy);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/device/parse", test_parse);
  g_test_add_func ("/device/list", test_list);
  g_test_add_func ("/device/backend-fallback", test_backend_fallback);
  g_test_add_func ("/device/train-fallback", test_train_fallback);
  return g_test_run ();
}
