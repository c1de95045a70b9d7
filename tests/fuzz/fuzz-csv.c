/* SPDX-License-Identifier: GPL-3.0-or-later */
/* fuzz-csv.c: the CSV loader (espalier-csv.h) on arbitrary bytes, followed by the
 * preprocessing a load runs, as espalier_dataset_load does.
 *
 * Input: an options byte, then the file (raw or gzip). Options: bits 0-1 the header
 * (auto, present, absent), bit 2 one-hot, bits 3-4 the label column (the last, the
 * first, "label", "2"), bit 5 forward-fill, bit 6 mean-fill then standardize (else
 * min-max), bit 7 drop duplicates. The split is the default 0.1 / 0.2. */
#include "config.h"

#include "espalier-csv.h"
#include "espalier-dataset-private.h"
#include "fuzz-common.h"

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_init ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const char *const label_columns[4] = { NULL, "0", "label", "2" };
  g_autoptr(GBytes) raw = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  EspalierLoadOptions o;
  guint8 flags;

  fuzz_init ();
  if (size < 1)
    return 0;
  flags = data[0];
  espalier_load_options_init (&o);
  o.csv_header = (EspalierCsvHeader) ((flags & 3) % 3);
  o.one_hot = (flags & 4) != 0;
  o.label_column = label_columns[(flags >> 3) & 3];
  o.ffill = (flags & 32) != 0;
  o.mean_fill = o.standardize = (flags & 64) != 0;
  o.minmax = !o.standardize;
  o.drop_duplicates = (flags & 128) != 0;
  o.use_cache = FALSE;

  raw = g_bytes_new (data + 1, size - 1);
  (void) espalier_csv_detect_delimiter ((const char *) data + 1, size - 1);
  ds = espalier_csv_load_bytes (raw, "fuzz.csv", &o, NULL, &error);
  g_assert ((ds == NULL) != (error == NULL));
  if (ds == NULL)
    return 0;
  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), >, 0);
  g_assert_cmpuint (espalier_dataset_get_row_size (ds), >, 0);
  if (!_espalier_dataset_preprocess (ds, &o, NULL, &error))
    {
      g_assert_nonnull (error);
      return 0;
    }
  _espalier_dataset_forget_origin (ds);
  {
    const gint32 *labels = espalier_dataset_get_labels (ds);
    guint N = espalier_dataset_get_n_rows (ds);

    for (guint i = 0; labels != NULL && i < N; i++)
      g_assert_cmpint (labels[i], >=, 0);
  }
  return 0;
}
