/* SPDX-License-Identifier: GPL-3.0-or-later */
/* espalier-generate.h: generated 2-D teaching sets, the ones a first network is drawn
 * on: spiral (k arms), moons, circles, xor and gaussian blobs (k centers). Two float
 * features ("x0", "x1"), class labels named "class 0", "class 1", ...; rows grouped by
 * class with counts differing by at most one. Deterministic in the seed. A spec is
 * "NAME[:key=value,...]", e.g. "spiral:n=300,arms=3,noise=0.2,seed=1". */
#pragma once

#include "espalier-dataset.h"

G_BEGIN_DECLS

typedef enum {
  ESPALIER_GENERATOR_SPIRAL,
  ESPALIER_GENERATOR_MOONS,
  ESPALIER_GENERATOR_CIRCLES,
  ESPALIER_GENERATOR_XOR,
  ESPALIER_GENERATOR_BLOBS,
} EspalierGenerator;

typedef struct {
  EspalierGenerator kind;
  guint             n;        /* rows (300); 1..10000000 */
  guint             k;        /* classes: spiral arms (3), blob centers (3); 2 otherwise */
  double            noise;    /* gaussian std: spiral 0.2 (radians), moons 0.1, circles
                               * 0.05, xor 0.1, blobs 0.5 (cluster std) */
  double            factor;   /* circles: inner radius / outer (0.5) */
  guint64           seed;     /* 1 */
} EspalierGenerateParams;

/* Defaults of a generator. */
void             espalier_generate_params_init (EspalierGenerateParams       *params,
                                                EspalierGenerator             kind);
/* Whether spec names a generator (before any ':'): spiral, moons, circles, xor, blobs
 * (also "gaussian"). */
gboolean         espalier_generate_is_spec     (const char                   *spec);
/* Parse a spec. Keys: n, noise, seed; arms (spiral), centers (blobs), k for either;
 * factor (circles). Errors are ESPALIER_DATA_ERROR_SPEC naming the key. */
gboolean         espalier_generate_parse_spec  (const char                   *spec,
                                                EspalierGenerateParams       *params,
                                                GError                      **error);
/* The full spec, every key written: "spiral:n=300,arms=3,noise=0.2,seed=1". */
char            *espalier_generate_params_to_spec (const EspalierGenerateParams *params);
/* Names of the generators, NULL-terminated. */
const char * const *espalier_generate_list     (void);

EspalierDataset *espalier_generate             (const EspalierGenerateParams *params,
                                                GError                      **error);
EspalierDataset *espalier_generate_from_spec   (const char                   *spec,
                                                GError                      **error);

G_END_DECLS
