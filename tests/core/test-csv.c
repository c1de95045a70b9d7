/* SPDX-License-Identifier: GPL-3.0-or-later */
/* test-csv.c: the CSV loader and the preprocessing steps on tables written here: each
 * delimiter, quoted fields, header or not, label columns by name and index, integer,
 * string and float labels, one-hot, missing values (forward-fill, mean-fill), duplicate
 * rows, standardize and min-max with training-split statistics, export; and every
 * error, checked for its code and for naming the file, the line and the column. */
#include "config.h"

#include <math.h>
#include <unistd.h>

#include "espalier-csv.h"
#include "espalier-dataset.h"
#include "espalier-split.h"

#include "data-test-util.h"

static EspalierDataset *
load_text (const char                 *name,
           const char                 *text,
           const EspalierLoadOptions  *options,
           GError                    **error)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *path = dtu_write_text (dir, name, text);
  EspalierLoadOptions defaults;

  if (options == NULL)
    {
      dtu_options_no_cache (&defaults);
      options = &defaults;
    }
  return espalier_dataset_load (path, options, NULL, error);
}

static float
at (EspalierDataset *ds,
    guint            row,
    guint            col)
{
  return espalier_dataset_get_f32 (ds)[row * espalier_dataset_get_row_size (ds) + col];
}

static void
test_comma_header (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load_text ("pets.csv",
                                             "weight,height,kind\n"
                                             "1.5,2,cat\n"
                                             "30,60,dog\n"
                                             "4,25,cat\n", NULL, &error);
  const gint32 *labels;

  g_assert_no_error (error);
  g_assert_cmpstr (espalier_dataset_get_name (ds), ==, "pets.csv");
  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, 3);
  g_assert_cmpuint (espalier_dataset_get_row_size (ds), ==, 2);
  g_assert_cmpuint (espalier_dataset_get_rank (ds), ==, 1);
  g_assert_cmpuint (espalier_dataset_get_dims (ds)[0], ==, 2);
  g_assert_false (espalier_dataset_is_u8 (ds));
  g_assert_cmpfloat (at (ds, 0, 0), ==, 1.5f);
  g_assert_cmpfloat (at (ds, 1, 1), ==, 60.0f);
  g_assert_cmpstr (espalier_dataset_get_feature_name (ds, 0), ==, "weight");
  g_assert_cmpstr (espalier_dataset_get_feature_name (ds, 1), ==, "height");
  g_assert_cmpuint (espalier_dataset_get_n_classes (ds), ==, 2);
  g_assert_cmpstr (espalier_dataset_get_class_name (ds, 0), ==, "cat");
  g_assert_cmpstr (espalier_dataset_get_class_name (ds, 1), ==, "dog");
  labels = espalier_dataset_get_labels (ds);
  g_assert_cmpint (labels[0], ==, 0);
  g_assert_cmpint (labels[1], ==, 1);
  g_assert_cmpint (labels[2], ==, 0);
  g_assert_null (espalier_dataset_get_targets (ds));
  g_assert_cmpuint (espalier_dataset_get_n_predefined_train (ds), ==, 3);
  g_assert_true (dtu_report_has (ds, "read 3 rows"));
  g_assert_true (dtu_report_has (ds, "comma-separated, header"));
}

static void
test_semicolon_no_header (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load_text ("plain.csv",
                                             "1,5;2;0\n"
                                             "3,25;4;1\n"
                                             "5;6;1\n", NULL, &error);
  g_autoptr(EspalierDataset) bad = NULL;

  /* Semicolons split and the commas are decimal marks, as spreadsheets in many locales
   * write them. */
  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, 3);
  g_assert_cmpfloat (at (ds, 0, 0), ==, 1.5f);
  g_assert_cmpfloat (at (ds, 1, 0), ==, 3.25f);
  g_assert_cmpfloat (at (ds, 2, 1), ==, 6.0f);

  /* two commas are no number */
  bad = load_text ("twice.csv", "1;2;0\n1,5,5;2;0\n3;4;1\n", NULL, &error);
  g_assert_null (bad);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_NON_NUMERIC,
                    "twice.csv", "line 2, column 1", "'1,5,5'", NULL);
}

static void
test_semicolon (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load_text ("semi.csv",
                                             "1.5;2;0\n"
                                             "3;4;1\n"
                                             "5;6;1\n", NULL, &error);

  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, 3);   /* no header */
  g_assert_cmpuint (espalier_dataset_get_row_size (ds), ==, 2);
  g_assert_cmpfloat (at (ds, 0, 0), ==, 1.5f);
  g_assert_cmpstr (espalier_dataset_get_class_name (ds, 1), ==, "1");
  g_assert_cmpstr (espalier_dataset_get_feature_name (ds, 0), ==, "column 1");
  g_assert_true (dtu_report_has (ds, "semicolon-separated, no header"));
}

static void
test_tab (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load_text ("t.tsv",
                                             "a b\tc\ty\n"
                                             "1\t2\t0.5\n"
                                             "3\t 4 \t1.25\n", NULL, &error);

  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, 2);
  g_assert_cmpstr (espalier_dataset_get_feature_name (ds, 0), ==, "a b");
  g_assert_cmpfloat (at (ds, 1, 1), ==, 4.0f);
  /* Non-integer labels: regression. */
  g_assert_cmpuint (espalier_dataset_get_n_classes (ds), ==, 0);
  g_assert_null (espalier_dataset_get_labels (ds));
  g_assert_cmpuint (espalier_dataset_get_n_targets (ds), ==, 1);
  g_assert_cmpfloat (espalier_dataset_get_targets (ds)[1], ==, 1.25f);
}

static void
test_detect_delimiter (void)
{
  const struct { const char *text; char delim; } cases[] = {
    { "a,b,c\n1,2,3\n", ',' },
    { "a;b;c\n1;2;3\n", ';' },
    { "a\tb\tc\n1\t2\t3\n", '\t' },
    { "1,5;2,3\n4,5;6,7\n", ';' },                  /* decimal commas */
    { "\"x;y\",1\n\"z;w\",2\n", ',' },              /* delimiters inside quotes */
    { "a\tb,c\n1\t2,3\n", '\t' },                   /* equal counts: tab first */
    { "a,b;c,d,e\n1,2\n", ',' },                    /* inconsistent: most in line 1 */
    { "one\ntwo\n", ',' },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    g_assert_cmpint (espalier_csv_detect_delimiter (cases[i].text, strlen (cases[i].text)),
                     ==, cases[i].delim);
}

static void
test_quoted (void)
{
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions options;
  g_autoptr(EspalierDataset) ds = NULL;

  dtu_options_no_cache (&options);
  options.one_hot = TRUE;
  ds = load_text ("quoted.csv",
                  "\"name, full\",x,label\n"
                  "\"a,b\",1,\"yes\"\n"
                  "\"say \"\"hi\"\"\",2,no\n"
                  "\"two\nlines\",3,yes\n"
                  "\"a,b\",4,no\n", &options, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, 4);
  /* Categories sorted by byte value: 'a,b' < 'say "hi"' < 'two\nlines'. */
  g_assert_cmpuint (espalier_dataset_get_row_size (ds), ==, 4);
  g_assert_cmpstr (espalier_dataset_get_feature_name (ds, 0), ==, "name, full=a,b");
  g_assert_cmpstr (espalier_dataset_get_feature_name (ds, 1), ==, "name, full=say \"hi\"");
  g_assert_cmpstr (espalier_dataset_get_feature_name (ds, 2), ==, "name, full=two\nlines");
  g_assert_cmpstr (espalier_dataset_get_feature_name (ds, 3), ==, "x");
  g_assert_cmpfloat (at (ds, 1, 1), ==, 1.0f);
  g_assert_cmpfloat (at (ds, 1, 0), ==, 0.0f);
  g_assert_cmpfloat (at (ds, 3, 0), ==, 1.0f);
  g_assert_cmpfloat (at (ds, 3, 3), ==, 4.0f);
  g_assert_cmpstr (espalier_dataset_get_class_name (ds, 0), ==, "no");
  g_assert_cmpuint (espalier_dataset_get_preprocess_report (ds)->one_hot_columns, ==, 1);
  g_assert_cmpuint (espalier_dataset_get_preprocess_report (ds)->one_hot_features, ==, 3);
  g_assert_true (dtu_report_has (ds, "one-hot: column 1 ('name, full') became 3 features"));
}

/* Lines are counted through quoted line breaks. */
static void
test_quoted_line_numbers (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load_text ("lines.csv",
                                             "x,note,y\n"
                                             "1,\"a\nb\nc\",0\n"
                                             "2,plain,1\n"
                                             "3,x,y,z\n", NULL, &error);

  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_RAGGED,
                    "lines.csv", "line 6, column 4", "4 fields", "line 1 has 3", NULL);
}

static void
test_crlf_bom_gzip (void)
{
  const char *text = "\xEF\xBB\xBF" "f1,f2,c\r\n1,2,0\r\n3,4,1\r\n\r\n";
  g_autofree char *dir = dtu_tmpdir ();
  g_autoptr(GByteArray) gz = dtu_gzip (text, strlen (text));
  g_autofree char *path = dtu_write (dir, "packed.csv.gz", gz->data, gz->len);
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(GError) error = NULL;
  EspalierLoadOptions options;

  dtu_options_no_cache (&options);
  ds = espalier_dataset_load (path, &options, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, 2);
  g_assert_cmpstr (espalier_dataset_get_feature_name (ds, 0), ==, "f1");
  g_assert_cmpfloat (at (ds, 1, 1), ==, 4.0f);
}

static void
test_label_by_name_and_index (void)
{
  const char *text = "id,target,a,b\n1,x,0.5,7\n2,y,1.5,8\n3,x,2.5,9\n";
  const char *specs[] = { "target", "1", "-3" };

  for (guint i = 0; i < G_N_ELEMENTS (specs); i++)
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(EspalierDataset) ds = NULL;
      EspalierLoadOptions options;

      dtu_options_no_cache (&options);
      options.label_column = specs[i];
      ds = load_text ("named.csv", text, &options, &error);
      g_assert_no_error (error);
      g_assert_cmpuint (espalier_dataset_get_row_size (ds), ==, 3);
      g_assert_cmpstr (espalier_dataset_get_feature_name (ds, 0), ==, "id");
      g_assert_cmpstr (espalier_dataset_get_feature_name (ds, 1), ==, "a");
      g_assert_cmpuint (espalier_dataset_get_n_classes (ds), ==, 2);
      g_assert_cmpint (espalier_dataset_get_labels (ds)[1], ==, 1);
      g_assert_cmpfloat (at (ds, 2, 2), ==, 9.0f);
    }
}

static void
test_integer_labels (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load_text ("ints.csv",
                                             "0.1,3\n0.2,1\n0.3,2\n0.4,3\n0.5,-1\n",
                                             NULL, &error);
  const gint32 *labels;

  g_assert_no_error (error);
  /* Sorted numerically: -1, 1, 2, 3. */
  g_assert_cmpuint (espalier_dataset_get_n_classes (ds), ==, 4);
  g_assert_cmpstr (espalier_dataset_get_class_name (ds, 0), ==, "-1");
  g_assert_cmpstr (espalier_dataset_get_class_name (ds, 3), ==, "3");
  labels = espalier_dataset_get_labels (ds);
  g_assert_cmpint (labels[0], ==, 3);
  g_assert_cmpint (labels[1], ==, 1);
  g_assert_cmpint (labels[4], ==, 0);
}

/* 0..9 stay 0..9, whatever order they come in. */
static void
test_digit_labels (void)
{
  g_autoptr(GString) text = g_string_new ("a,digit\n");
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;

  for (guint i = 0; i < 30; i++)
    g_string_append_printf (text, "%u,%u\n", i, (i * 7) % 10);
  ds = load_text ("digits.csv", text->str, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_n_classes (ds), ==, 10);
  for (guint i = 0; i < 30; i++)
    g_assert_cmpint (espalier_dataset_get_labels (ds)[i], ==, (i * 7) % 10);
  g_assert_cmpstr (espalier_dataset_get_class_name (ds, 7), ==, "7");
}

/* Too many distinct integers for classes: a regression target. */
static void
test_many_integers (void)
{
  g_autoptr(GString) text = g_string_new ("x,price\n");
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;

  for (guint i = 0; i < ESPALIER_CSV_MAX_INT_CLASSES + 5; i++)
    g_string_append_printf (text, "%u,%u\n", i, 1000 + 3 * i);
  ds = load_text ("prices.csv", text->str, NULL, &error);
  g_assert_no_error (error);
  g_assert_null (espalier_dataset_get_labels (ds));
  g_assert_cmpuint (espalier_dataset_get_n_targets (ds), ==, 1);
  g_assert_cmpfloat (espalier_dataset_get_targets (ds)[2], ==, 1006.0f);
  g_assert_true (dtu_report_has (ds, "read as a regression target"));
}

static void
test_cancelled (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *path = dtu_write_text (dir, "c.csv", "a,y\n1,0\n");
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;

  g_cancellable_cancel (cancellable);
  ds = espalier_dataset_load (path, NULL, cancellable, &error);
  g_assert_null (ds);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
}

static void
test_one_hot_refused (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load_text ("colors.csv",
                                             "size,color,y\n"
                                             "1,2,0\n"
                                             "2,red,1\n", NULL, &error);

  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_NON_NUMERIC,
                    "colors.csv", "line 3, column 2 ('color')", "'red'", "one-hot", NULL);
}

static void
test_one_hot (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  EspalierLoadOptions options;

  dtu_options_no_cache (&options);
  options.one_hot = TRUE;
  ds = load_text ("colors.csv",
                  "size,color,y\n"
                  "1,red,0\n"
                  "2,blue,1\n"
                  "3,red,1\n", &options, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_row_size (ds), ==, 3);
  g_assert_cmpstr (espalier_dataset_get_feature_name (ds, 1), ==, "color=blue");
  g_assert_cmpstr (espalier_dataset_get_feature_name (ds, 2), ==, "color=red");
  g_assert_cmpfloat (at (ds, 0, 1), ==, 0.0f);
  g_assert_cmpfloat (at (ds, 0, 2), ==, 1.0f);
  g_assert_cmpfloat (at (ds, 1, 1), ==, 1.0f);
}

static void
test_missing_kinds (void)
{
  const char *cells[] = { "", "NA", "na", "NaN", "N/A", "null" };

  for (guint i = 0; i < G_N_ELEMENTS (cells); i++)
    g_assert_true (espalier_csv_is_missing (cells[i]));
  g_assert_false (espalier_csv_is_missing ("0"));
  g_assert_false (espalier_csv_is_missing ("nap"));
}

static const char *missing_text =
  "a,b,y\n"
  "1,10,0\n"     /* line 2 */
  "NA,20,1\n"    /* line 3 */
  ",NaN,0\n"     /* line 4 */
  "4,40,1\n";    /* line 5 */

static void
test_missing_refused (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load_text ("holes.csv", missing_text, NULL, &error);

  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISSING_VALUE,
                    "holes.csv", "line 3, column 1 ('a')", "forward-fill or mean-fill", NULL);
}

static void
test_ffill (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  EspalierLoadOptions options;

  dtu_options_no_cache (&options);
  options.ffill = TRUE;
  ds = load_text ("holes.csv", missing_text, &options, &error);
  g_assert_no_error (error);
  g_assert_cmpfloat (at (ds, 1, 0), ==, 1.0f);
  g_assert_cmpfloat (at (ds, 2, 0), ==, 1.0f);
  g_assert_cmpfloat (at (ds, 2, 1), ==, 20.0f);
  g_assert_cmpfloat (at (ds, 3, 0), ==, 4.0f);
  g_assert_cmpuint (espalier_dataset_get_preprocess_report (ds)->ffilled_cells, ==, 3);
  g_assert_true (dtu_report_has (ds, "forward-fill: 3 cells filled"));
}

/* Nothing above the first row's hole: an error unless mean-fill follows. */
static void
test_ffill_first_row (void)
{
  const char *text = "a,b,y\nNA,1,0\n2,2,1\n";
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  EspalierLoadOptions options;

  dtu_options_no_cache (&options);
  options.ffill = TRUE;
  ds = load_text ("top.csv", text, &options, &error);
  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISSING_VALUE,
                    "top.csv", "line 2, column 1 ('a')", "nothing above", NULL);
}

static void
test_mean_fill (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  EspalierLoadOptions options;

  dtu_options_no_cache (&options);
  options.mean_fill = TRUE;
  options.val_fraction = 0;      /* every row is a training row */
  options.test_fraction = 0;
  ds = load_text ("holes.csv", missing_text, &options, &error);
  g_assert_no_error (error);
  g_assert_cmpfloat (at (ds, 1, 0), ==, 2.5f);                    /* (1 + 4) / 2 */
  g_assert_cmpfloat (at (ds, 2, 0), ==, 2.5f);
  g_assert_cmpfloat_with_epsilon (at (ds, 2, 1), 70.0f / 3.0f, 1e-4);
  g_assert_cmpuint (espalier_dataset_get_preprocess_report (ds)->mean_filled_cells, ==, 3);
  g_assert_true (dtu_report_has (ds, "mean-fill: 3 cells in 2 columns"));
}

/* The mean comes from the training split only. */
static void
test_mean_fill_training_split (void)
{
  g_autoptr(GString) text = g_string_new ("a,y\n");
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) raw = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(EspalierSplit) split = NULL;
  EspalierLoadOptions options;
  double sum = 0;
  guint n = 0;

  for (guint i = 0; i < 40; i++)
    {
      if (i == 5)
        g_string_append_printf (text, "NA,%u\n", i % 2);
      else
        g_string_append_printf (text, "%u,%u\n", i * i, i % 2);
    }
  dtu_options_no_cache (&options);
  options.ffill = TRUE;                 /* a raw copy, only to compute the split */
  raw = load_text ("train.csv", text->str, &options, &error);
  g_assert_no_error (error);
  split = espalier_split_new (raw, options.val_fraction, options.test_fraction,
                              options.split_seed, &error);
  g_assert_no_error (error);
  for (guint k = 0; k < split->train->len; k++)
    {
      guint32 r = g_array_index (split->train, guint32, k);

      if (r != 5)
        {
          sum += (double) r * r;
          n++;
        }
    }

  dtu_options_no_cache (&options);
  options.mean_fill = TRUE;
  ds = load_text ("train.csv", text->str, &options, &error);
  g_assert_no_error (error);
  g_assert_cmpfloat_with_epsilon (at (ds, 5, 0), sum / n, 1e-3);
}

static void
test_drop_duplicates (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  EspalierLoadOptions options;

  dtu_options_no_cache (&options);
  options.drop_duplicates = TRUE;
  ds = load_text ("dups.csv",
                  "a,b,y\n"
                  "1,2,0\n"
                  "1,2,0\n"      /* duplicate */
                  "1,2,1\n"      /* other label: kept */
                  "3,NA,1\n"
                  "3,NA,1\n"     /* duplicate, missing included */
                  "5,6,0\n"
                  "1,2,0\n",     /* duplicate */
                  &options, &error);
  /* The missing value is left: an error, on the kept row's line. */
  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISSING_VALUE,
                    "dups.csv", "line 5, column 2 ('b')", NULL);
  g_clear_error (&error);

  options.ffill = TRUE;
  ds = load_text ("dups.csv",
                  "a,b,y\n1,2,0\n1,2,0\n1,2,1\n3,NA,1\n3,NA,1\n5,6,0\n1,2,0\n",
                  &options, &error);
  g_assert_no_error (error);
  /* Forward-fill runs first: both "3,NA,1" become "3,2,1", still duplicates. */
  g_assert_cmpuint (espalier_dataset_get_n_rows (ds), ==, 4);
  g_assert_cmpuint (espalier_dataset_get_n_predefined_train (ds), ==, 4);
  g_assert_cmpuint (espalier_dataset_get_preprocess_report (ds)->duplicate_rows, ==, 3);
  g_assert_true (dtu_report_has (ds, "drop duplicates: 3 rows dropped, 4 left"));
  g_assert_cmpfloat (at (ds, 1, 0), ==, 1.0f);
  g_assert_cmpint (espalier_dataset_get_labels (ds)[1], ==, 1);
  g_assert_cmpfloat (at (ds, 3, 0), ==, 5.0f);
}

static GString *
numeric_table (guint n)
{
  GString *text = g_string_new ("a,b,c,y\n");

  for (guint i = 0; i < n; i++)
    g_string_append_printf (text, "%u,%g,7,%u\n", i, 100.0 + 3.0 * sin (i), i % 3);
  return text;
}

static void
test_standardize (void)
{
  g_autoptr(GString) text = numeric_table (60);
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(EspalierSplit) split = NULL;
  EspalierLoadOptions options;

  dtu_options_no_cache (&options);
  options.standardize = TRUE;
  options.split_seed = 5;
  ds = load_text ("std.csv", text->str, &options, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_preprocess_report (ds)->standardized_columns, ==, 3);
  g_assert_true (dtu_report_has (ds, "standardize: 3 columns"));
  g_assert_true (dtu_report_has (ds, "42 training rows"));

  /* Over the training rows of the same split: mean 0, std 1; the constant column 0. */
  split = espalier_split_new (ds, options.val_fraction, options.test_fraction, 5, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (split->train->len, ==, 42);
  for (guint j = 0; j < 3; j++)
    {
      double sum = 0, sq = 0, all = 0;
      guint n = split->train->len;

      for (guint k = 0; k < n; k++)
        sum += at (ds, g_array_index (split->train, guint32, k), j);
      for (guint k = 0; k < n; k++)
        {
          double d = at (ds, g_array_index (split->train, guint32, k), j) - sum / n;

          sq += d * d;
        }
      for (guint i = 0; i < 60; i++)
        all += at (ds, i, j);
      g_assert_cmpfloat_with_epsilon (sum / n, 0.0, 1e-5);
      if (j < 2)
        {
          g_assert_cmpfloat_with_epsilon (sqrt (sq / n), 1.0, 1e-4);
          /* Not the statistics of all rows. */
          g_assert_cmpfloat (fabs (all / 60), >, 1e-4);
        }
      else
        g_assert_cmpfloat (at (ds, 0, j), ==, 0.0f);
    }
}

static void
test_minmax (void)
{
  g_autoptr(GString) text = numeric_table (50);
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(EspalierSplit) split = NULL;
  EspalierLoadOptions options;

  dtu_options_no_cache (&options);
  options.minmax = TRUE;
  ds = load_text ("mm.csv", text->str, &options, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_preprocess_report (ds)->minmax_columns, ==, 3);
  split = espalier_split_new (ds, options.val_fraction, options.test_fraction,
                              options.split_seed, &error);
  g_assert_no_error (error);
  for (guint j = 0; j < 2; j++)
    {
      float lo = INFINITY, hi = -INFINITY;

      for (guint k = 0; k < split->train->len; k++)
        {
          float v = at (ds, g_array_index (split->train, guint32, k), j);

          lo = MIN (lo, v);
          hi = MAX (hi, v);
        }
      g_assert_cmpfloat_with_epsilon (lo, 0.0f, 1e-6);
      g_assert_cmpfloat_with_epsilon (hi, 1.0f, 1e-6);
    }
}

static void
test_standardize_and_minmax (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  EspalierLoadOptions options;

  dtu_options_no_cache (&options);
  options.standardize = TRUE;
  options.minmax = TRUE;
  ds = load_text ("both.csv", "1,2,0\n3,4,1\n", &options, &error);
  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_INVALID, "not both", NULL);
}

static void
test_export (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *out = g_build_filename (dir, "out.csv", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autoptr(EspalierDataset) back = NULL;
  g_autofree char *contents = NULL;
  EspalierLoadOptions options;

  dtu_options_no_cache (&options);
  options.one_hot = TRUE;
  options.ffill = TRUE;
  ds = load_text ("exp.csv",
                  "x,\"c,d\",kind\n"
                  "0.1,u,\"big, red\"\n"
                  "NA,v,small\n"
                  "0.3,u,small\n", &options, &error);
  g_assert_no_error (error);
  g_assert_true (espalier_dataset_export_csv (ds, out, &error));
  g_assert_no_error (error);
  g_assert_true (g_file_get_contents (out, &contents, NULL, NULL));
  g_test_message ("exported:\n%s", contents);
  g_assert_true (g_str_has_prefix (contents, "x,\"c,d=u\",\"c,d=v\",kind\n"
                                             "0.1,1,0,\"big, red\"\n"
                                             "0.1,0,1,small\n"));

  dtu_options_no_cache (&options);
  back = espalier_dataset_load (out, &options, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (espalier_dataset_get_n_rows (back), ==, 3);
  g_assert_cmpuint (espalier_dataset_get_row_size (back), ==, 3);
  for (guint i = 0; i < 3; i++)
    for (guint j = 0; j < 3; j++)
      g_assert_cmpfloat (at (back, i, j), ==, at (ds, i, j));
  g_assert_cmpstr (espalier_dataset_get_class_name (back, 0), ==, "big, red");
  g_assert_cmpmem (espalier_dataset_get_labels (back), 3 * sizeof (gint32),
                   espalier_dataset_get_labels (ds), 3 * sizeof (gint32));

  /* The export is atomic: over an existing file it leaves only the new file (no
   * temporary beside it), and where it cannot write the old file stays whole. */
  {
    g_autoptr(GDir) d = NULL;
    g_autofree char *missing = g_build_filename (dir, "no-such-dir", "out.csv", NULL);
    g_autofree char *again = NULL;
    const char *name;
    guint n = 0;

    g_assert_true (espalier_dataset_export_csv (back, out, &error));
    g_assert_no_error (error);
    d = g_dir_open (dir, 0, NULL);
    while ((name = g_dir_read_name (d)) != NULL)
      n += g_str_has_prefix (name, ".out.csv") ? 1000 : 1;
    g_assert_cmpuint (n, ==, 1);  /* out.csv alone */
    g_assert_true (g_file_get_contents (out, &again, NULL, NULL));
    g_assert_cmpstr (again, ==, contents);

    g_assert_false (espalier_dataset_export_csv (back, missing, &error));
    dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO, "out.csv", NULL);
    g_clear_error (&error);
  }
}

/* Errors */

static void
test_error_empty (void)
{
  const char *texts[] = { "", "\n\n  \n" };

  for (guint i = 0; i < G_N_ELEMENTS (texts); i++)
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(EspalierDataset) ds = load_text ("nothing.csv", texts[i], NULL, &error);

      g_assert_null (ds);
      dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_EMPTY,
                        "nothing.csv", "empty file", NULL);
    }

  /* Empty bytes from memory (their data pointer is NULL): found by fuzz-csv, whose
   * memory estimate once did arithmetic on that pointer. */
  {
    g_autoptr(GBytes) empty = g_bytes_new (NULL, 0);
    g_autoptr(GError) error = NULL;
    g_autoptr(EspalierDataset) ds = espalier_csv_load_bytes (empty, "nothing.csv", NULL, NULL,
                                                             &error);

    g_assert_null (ds);
    dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_EMPTY, "nothing.csv",
                      "empty file", NULL);
  }
}

static void
test_error_header_only (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load_text ("head.csv", "a,b,label\n", NULL, &error);

  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_EMPTY,
                    "head.csv", "line 1", "no data rows", NULL);
}

static void
test_error_ragged (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load_text ("ragged.csv",
                                             "a,b,y\n1,2,0\n\n3,1\n", NULL, &error);

  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_RAGGED,
                    "ragged.csv", "line 4, column 3", "2 fields", NULL);
}

static void
test_error_missing_label (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load_text ("nolabel.csv",
                                             "a,b,y\n1,2,0\n3,4,\n", NULL, &error);

  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_MISSING_VALUE,
                    "nolabel.csv", "line 3, column 3 ('y')", "missing label", NULL);
}

static void
test_error_unknown_column (void)
{
  const char *specs[] = { "colour", "7" };

  for (guint i = 0; i < G_N_ELEMENTS (specs); i++)
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(EspalierDataset) ds = NULL;
      EspalierLoadOptions options;

      dtu_options_no_cache (&options);
      options.label_column = specs[i];
      ds = load_text ("cols.csv", "a,b,y\n1,2,0\n", &options, &error);
      g_assert_null (ds);
      dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_UNKNOWN_COLUMN,
                        "cols.csv", specs[i], NULL);
    }
}

static void
test_error_unclosed_quote (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = load_text ("quote.csv",
                                             "a,b,y\n1,2,0\n3,\"oops,1\n", NULL, &error);

  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_CORRUPT,
                    "quote.csv", "line 3, column 2", "never closed", NULL);
}

static void
test_error_no_file (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = espalier_dataset_load ("/nonexistent/x.csv", NULL, NULL,
                                                         &error);

  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_NOT_FOUND,
                    "/nonexistent/x.csv", NULL);
}

/* Limits: ESPALIER_MEMORY_AVAILABLE makes the machine small. A file larger than the
 * memory is refused before it is read, a table that would not fit before it is
 * parsed; both name the sizes. */

static void
test_limit_file (void)
{
  g_autoptr(GString) text = g_string_new ("a,b,label\n");
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autofree char *size = NULL, *have = g_format_size (1000), *field = NULL;

  while (text->len < 2000)
    g_string_append (text, "1,2,0\n");
  size = g_format_size (text->len);
  field = g_strdup_printf ("reading this %s file needs %s of memory, more than the %s available",
                           size, size, have);
  g_setenv ("ESPALIER_MEMORY_AVAILABLE", "1000", TRUE);
  ds = load_text ("big.csv", text->str, NULL, &error);
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");
  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO, "big.csv", field, NULL);
}

static void
test_limit_table (void)
{
  g_autoptr(GString) text = g_string_new (NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autofree char *have = g_format_size (50000), *cells = NULL, *why = NULL;
  guint n_cells = 1;

  for (guint i = 0; i < 5000; i++)
    g_string_append (text, "1,2\n");
  for (gsize i = 0; i < text->len; i++)
    n_cells += text->str[i] == ',' || text->str[i] == '\n';
  cells = g_strdup_printf ("(about %u cells)", n_cells);
  why = g_strdup_printf ("more than the %s available", have);
  g_assert_cmpuint (text->len, <, 50000);
  g_setenv ("ESPALIER_MEMORY_AVAILABLE", "50000", TRUE);
  ds = load_text ("cells.csv", text->str, NULL, &error);
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");
  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO, "cells.csv", cells, why,
                    NULL);
}

/* A CSV file of 1 TB (sparse: holes take no disk) on a machine of 1 GB: refused before
 * anything of it is read. Skipped where the file system cannot make such a file. */
static void
test_limit_sparse_terabyte (void)
{
  g_autofree char *dir = dtu_tmpdir ();
  g_autofree char *path = dtu_write_text (dir, "huge.csv", "a,b,label\n1,2,0\n");
  g_autoptr(GError) error = NULL;
  g_autoptr(EspalierDataset) ds = NULL;
  g_autofree char *size = g_format_size (1000000000000);
  g_autofree char *field = g_strdup_printf ("reading this %s file needs %s of memory", size, size);
  EspalierLoadOptions options;

  if (truncate (path, (off_t) 1000000000000) != 0)
    {
      g_test_skip ("the file system cannot hold a sparse file of 1 TB");
      return;
    }
  dtu_options_no_cache (&options);
  g_setenv ("ESPALIER_MEMORY_AVAILABLE", "1000000000", TRUE);
  ds = espalier_dataset_load (path, &options, NULL, &error);
  g_unsetenv ("ESPALIER_MEMORY_AVAILABLE");
  g_unlink (path);
  g_assert_null (ds);
  dtu_assert_error (error, ESPALIER_DATA_ERROR, ESPALIER_DATA_ERROR_IO, "huge.csv", field, NULL);
}

int
main (int   argc,
      char *argv[])
{
  dtu_init (&argc, &argv);

  g_test_add_func ("/csv/comma-header", test_comma_header);
  g_test_add_func ("/csv/semicolon", test_semicolon);
  g_test_add_func ("/csv/semicolon-decimal-comma", test_semicolon_no_header);
  g_test_add_func ("/csv/tab-regression", test_tab);
  g_test_add_func ("/csv/detect-delimiter", test_detect_delimiter);
  g_test_add_func ("/csv/quoted", test_quoted);
  g_test_add_func ("/csv/quoted-line-numbers", test_quoted_line_numbers);
  g_test_add_func ("/csv/crlf-bom-gzip", test_crlf_bom_gzip);
  g_test_add_func ("/csv/label-by-name-and-index", test_label_by_name_and_index);
  g_test_add_func ("/csv/integer-labels", test_integer_labels);
  g_test_add_func ("/csv/digit-labels", test_digit_labels);
  g_test_add_func ("/csv/one-hot", test_one_hot);
  g_test_add_func ("/csv/many-integers", test_many_integers);
  g_test_add_func ("/csv/cancelled", test_cancelled);
  g_test_add_func ("/csv/missing-kinds", test_missing_kinds);
  g_test_add_func ("/csv/ffill", test_ffill);
  g_test_add_func ("/csv/ffill-first-row", test_ffill_first_row);
  g_test_add_func ("/csv/mean-fill", test_mean_fill);
  g_test_add_func ("/csv/mean-fill-training-split", test_mean_fill_training_split);
  g_test_add_func ("/csv/drop-duplicates", test_drop_duplicates);
  g_test_add_func ("/csv/standardize", test_standardize);
  g_test_add_func ("/csv/minmax", test_minmax);
  g_test_add_func ("/csv/export", test_export);
  g_test_add_func ("/csv/error/standardize-and-minmax", test_standardize_and_minmax);
  g_test_add_func ("/csv/error/empty", test_error_empty);
  g_test_add_func ("/csv/error/header-only", test_error_header_only);
  g_test_add_func ("/csv/error/ragged", test_error_ragged);
  g_test_add_func ("/csv/error/non-numeric", test_one_hot_refused);
  g_test_add_func ("/csv/error/missing-value", test_missing_refused);
  g_test_add_func ("/csv/error/missing-label", test_error_missing_label);
  g_test_add_func ("/csv/error/unknown-column", test_error_unknown_column);
  g_test_add_func ("/csv/error/unclosed-quote", test_error_unclosed_quote);
  g_test_add_func ("/csv/error/no-file", test_error_no_file);
  g_test_add_func ("/csv/limit/file", test_limit_file);
  g_test_add_func ("/csv/limit/table", test_limit_table);
  g_test_add_func ("/csv/limit/sparse-terabyte", test_limit_sparse_terabyte);

  return dtu_finish (g_test_run ());
}
