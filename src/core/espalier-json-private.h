/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-json-private.h: what the model file (espalier-model-file.c) and the project
 * file (espalier-project.c) share: JSON text with shortest round-trip numbers, builder
 * shorthands, the training options, history and metrics in JSON, atomic file writes
 * (espalier-save.h), and a validating reader that names the file and the field of the first problem.
 * Internal to core; not installed, not for the app. */
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

#include "es-model.h"
#include "espalier-save.h"
#include "espalier-trainer.h"

G_BEGIN_DECLS

/* Ceilings that keep a corrupt architecture from overflowing the engine's int and
 * int64 shape arithmetic: no real model comes near them. */
#define ESPALIER_ARCH_MAX_FIELD   (1 << 24)     /* units, filters, kernel, stride, padding, dims */
#define ESPALIER_ARCH_MAX_FLOATS  2147483647.0  /* one activation, per sample */
#define ESPALIER_ARCH_MAX_FLOPS   1e18          /* one layer, per sample */

/* ------------------------------------------------------------------------------------ */
/* Writing */

/* JSON text of node: pretty (two-space indent, arrays of scalars and small objects
 * inside arrays on one line, a final newline) or compact. Numbers are the shortest text
 * that reads back exactly; non-finite doubles become null. json-glib's own generator
 * prints 1e-300 as "1e-300.0" and floats with 17 digits, hence this one. */
char    *espalier_json_to_text        (JsonNode                   *node,
                                       gboolean                    pretty);

/* Builder shorthands: member name, then value. Doubles that are not finite become
 * null; floats are written with the fewest digits that read back as the same float;
 * u64 above G_MAXINT64 becomes a decimal string; a NULL string becomes null. */
void     espalier_json_add_int        (JsonBuilder *b, const char *key, gint64 v);
void     espalier_json_add_double     (JsonBuilder *b, const char *key, double v);
void     espalier_json_add_float      (JsonBuilder *b, const char *key, float v);
void     espalier_json_add_u64        (JsonBuilder *b, const char *key, guint64 v);
void     espalier_json_add_string     (JsonBuilder *b, const char *key, const char *v);
void     espalier_json_add_bool       (JsonBuilder *b, const char *key, gboolean v);
void     espalier_json_add_shape      (JsonBuilder *b, const char *key, const EsShape *shape);

/* Values (not members): an object of every training option, an array of epoch
 * objects, an object of test metrics with the confusion matrix (or null). */
void     espalier_json_build_training (JsonBuilder                *b,
                                       const EspalierTrainOptions *o);
void     espalier_json_build_history  (JsonBuilder                *b,
                                       GArray                     *history);
void     espalier_json_build_metrics  (JsonBuilder                *b,
                                       const EspalierMetrics      *m);

/* ------------------------------------------------------------------------------------ */
/* Reading with validation. A reader keeps the first problem as ESPALIER_ERROR_FORMAT
 * ("FILE: the field “where.key” is ..."); every getter does nothing once one is
 * recorded, so a parse reads as a list of fields with one check at the end. `where`
 * names the enclosing object ("training", "runs[2].history[4]"; "" for the root). */

typedef struct {
  const char *file;
  GError     *error;
} EspalierReader;

/* The JSON object that text (len bytes) holds, parsed by parser (which owns it), or
 * NULL with the problem recorded: not UTF-8, not JSON (with the line), not an object. */
JsonObject  *espalier_reader_parse      (EspalierReader *r,
                                         JsonParser     *parser,
                                         const char     *text,
                                         gsize           len);
/* The root's "format" must be format and its "version" from 1 to max_version. */
void         espalier_reader_format     (EspalierReader *r,
                                         JsonObject     *root,
                                         const char     *format,
                                         gint64          max_version);
gboolean     espalier_reader_fail       (EspalierReader *r,
                                         const char     *fmt,
                                         ...) G_GNUC_PRINTF (2, 3);
/* "where.key", or "key" when where is "". */
char        *espalier_reader_path       (const char     *where,
                                         const char     *key);
/* The member, or NULL with an error when it is missing. */
JsonNode    *espalier_reader_member     (EspalierReader *r, JsonObject *obj, const char *where,
                                         const char *key);
gboolean     espalier_reader_wrong_type (EspalierReader *r, const char *where, const char *key,
                                         const char *expected);
JsonObject  *espalier_reader_object     (EspalierReader *r, JsonObject *obj, const char *where,
                                         const char *key);
/* An array, or NULL; with nullable, a JSON null is NULL without an error. */
JsonArray   *espalier_reader_array      (EspalierReader *r, JsonObject *obj, const char *where,
                                         const char *key, gboolean nullable);
/* A newly allocated string; with nullable, null gives NULL. */
char        *espalier_reader_string     (EspalierReader *r, JsonObject *obj, const char *where,
                                         const char *key, gboolean nullable);
gboolean     espalier_reader_int        (EspalierReader *r, JsonObject *obj, const char *where,
                                         const char *key, gint64 min, gint64 max, gint64 *out);
gboolean     espalier_reader_int32      (EspalierReader *r, JsonObject *obj, const char *where,
                                         const char *key, gint64 min, gint64 max, int *out);
gboolean     espalier_reader_uint       (EspalierReader *r, JsonObject *obj, const char *where,
                                         const char *key, guint *out);
/* An integer >= 0, or a decimal string for values above G_MAXINT64. */
gboolean     espalier_reader_u64        (EspalierReader *r, JsonObject *obj, const char *where,
                                         const char *key, guint64 *out);
/* A finite number in [min, max]; with nullable, null reads as NaN. */
gboolean     espalier_reader_double     (EspalierReader *r, JsonObject *obj, const char *where,
                                         const char *key, gboolean nullable, double min,
                                         double max, double *out);
gboolean     espalier_reader_float      (EspalierReader *r, JsonObject *obj, const char *where,
                                         const char *key, double min, double max, float *out);
gboolean     espalier_reader_bool       (EspalierReader *r, JsonObject *obj, const char *where,
                                         const char *key, gboolean *out);
/* A shape: [F] or [C, H, W], every dimension in [1, ESPALIER_ARCH_MAX_FIELD]. */
gboolean     espalier_reader_shape      (EspalierReader *r, JsonObject *obj, const char *where,
                                         const char *key, EsShape *shape);

/* The member `key` of obj, written by the espalier_json_build_* of the same name. */
void         espalier_reader_training   (EspalierReader *r, JsonObject *obj, const char *where,
                                         const char *key, EspalierTrainOptions *o);
/* Appends the records to history. */
void         espalier_reader_history    (EspalierReader *r, JsonObject *obj, const char *where,
                                         const char *key, GArray *history);
void         espalier_reader_metrics    (EspalierReader *r, JsonObject *obj, const char *where,
                                         const char *key, EspalierMetrics *m);

/* ------------------------------------------------------------------------------------ */
/* Architectures and weights read from files */

/* Shape inference in double precision as a ceiling, before es_model_new sees layers read
 * from a file, so that a corrupt architecture cannot overflow the engine's int
 * arithmetic nor make it allocate what the file's weights cannot fill. floats (n, may be
 * NULL) receives the parameter and buffer floats of layers 0..i summed, up to the layer
 * returned. Returns the index of the first layer too large to be a real model, or -1. */
int      espalier_arch_check_size     (const EsShape     *input,
                                       const EsLayerSpec *specs,
                                       int                n,
                                       double            *floats);
/* n floats from and to little-endian bytes (4 n), whatever the host order. */
void     espalier_floats_from_le      (float             *dst,
                                       const guint8      *src,
                                       gint64             n);
void     espalier_floats_to_le        (guint8            *dst,
                                       const float       *src,
                                       gint64             n);

G_END_DECLS
