/* es-qgemm.c: the int8 products of es-qgemm.h. A scalar path (row-major weights, plain
 * loops), an AVX2 path (8 outputs a vector; vpmaddubsw + vpmaddwd for activations in
 * 0..127, int16-widened vpmaddwd otherwise) and an AVX-512 VNNI path (16 outputs a
 * vector, vpdpbusd). Not a general GEMM library: no K blocking, no transposes, the
 * caller cuts the batch across threads.
 *
 * Packed layout (VNNI and AVX2): output rows in blocks of L lanes (16 or 8), blocks in
 * panels of up to NB (4 or 2) blocks, K in groups of 4. A panel stores, group by group,
 * its blocks one after another: lane i of block j holds w[o, 4g .. 4g+3] for output
 * o = 16 (or 8) * (panel block j) + i, so one broadcast of four activation bytes meets
 * NB vectors of weights. The widened AVX2 layout stores a block's group as two int16
 * vectors, (w[o,4g], w[o,4g+2]) and (w[o,4g+1], w[o,4g+3]) per lane, matching the even
 * and odd activation bytes. Rows past N and columns past K are zeros.
 *
 * A micro-tile is MR batch rows times one panel, its sums in registers for the whole
 * of K (VNNI: 6 x 4 zmm sums, AVX2: 4 x 2 ymm), then requantized as they leave: the
 * tile functions are instantiated for every MR and NB so the sums stay in registers.
 *
 * Dimension key: B = batch rows, K = inputs, N = outputs, Kp = K rounded up to 4,
 * Kg = Kp / 4 groups, Np = N rounded up to whole blocks. */
#include "es-qgemm.h"
#include "es-quant.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define ES_QGEMM_X86 1
#include <immintrin.h>
#define TARGET_AVX2 __attribute__ ((target ("avx2")))
#define TARGET_VNNI __attribute__ ((target ("avx512f,avx512bw,avx512vl,avx512vnni")))
#define ALWAYS_INLINE inline __attribute__ ((always_inline))
#endif

/* VNNI: 16 outputs a block, 4 blocks a panel, 6 rows a tile. */
#define VN_L  16
#define VN_NB 4
#define VN_MR 6
/* AVX2: 8 outputs a block, 2 blocks a panel, 4 rows a tile. */
#define AV_L  8
#define AV_NB 2
#define AV_MR 4

struct EsQGemmWeights {
  EsQGemmPath path;
  bool        reduce_range;
  int         N, K;
  int         Np, Kp;       /* N in whole blocks, K rounded up to 4 */
  int         lanes, nbmax; /* outputs a block, blocks a panel (1, 1 for scalar) */
  int         group_bytes;  /* bytes of one block's group of 4 (64, 32 or 64 widened) */
  int32_t    *rowsum;       /* (Np) */
  float      *scale;        /* (Np) */
  float      *bias;         /* (Np) */
  int8_t     *data;         /* the packed weights */
};

/* Where a product's results go: requantized through o, or raw sums into acc. */
typedef struct {
  const EsQGemmOut *o;
  int32_t          *acc;
  int64_t           ld_acc;
} Epi;

/* ------------------------------------------------------------------------------ */
/* paths */

static pthread_once_t qgemm_once = PTHREAD_ONCE_INIT;
static bool have_avx2, have_vnni;
static EsQGemmPath default_path = ES_QGEMM_SCALAR;

static bool
path_detected (EsQGemmPath path)
{
  return path == ES_QGEMM_SCALAR || (path == ES_QGEMM_AVX2 && have_avx2)
         || (path == ES_QGEMM_VNNI && have_vnni);
}

static void
qgemm_detect (void)
{
  const char *env = getenv ("ESPALIER_QGEMM");

#ifdef ES_QGEMM_X86
  __builtin_cpu_init ();
  have_avx2 = __builtin_cpu_supports ("avx2");
  have_vnni = __builtin_cpu_supports ("avx512f") && __builtin_cpu_supports ("avx512bw")
              && __builtin_cpu_supports ("avx512vl")
              && __builtin_cpu_supports ("avx512vnni");
#endif
  default_path = have_vnni ? ES_QGEMM_VNNI : have_avx2 ? ES_QGEMM_AVX2 : ES_QGEMM_SCALAR;
  if (env != NULL)
    for (int p = ES_QGEMM_SCALAR; p <= ES_QGEMM_VNNI; p++)
      if (strcmp (env, es_qgemm_path_name ((EsQGemmPath) p)) == 0
          && path_detected ((EsQGemmPath) p))
        default_path = (EsQGemmPath) p;
}

const char *
es_qgemm_path_name (EsQGemmPath path)
{
  switch (path)
    {
    case ES_QGEMM_SCALAR: return "scalar";
    case ES_QGEMM_AVX2: return "avx2";
    case ES_QGEMM_VNNI: return "vnni";
    default: return "unknown";
    }
}

bool
es_qgemm_path_available (EsQGemmPath path)
{
  pthread_once (&qgemm_once, qgemm_detect);
  return path_detected (path);
}

EsQGemmPath
es_qgemm_default_path (void)
{
  pthread_once (&qgemm_once, qgemm_detect);
  return default_path;
}

/* ------------------------------------------------------------------------------ */
/* scalar: the reference and the scalar path */

static inline float
relu_f (float y)
{
  return y > 0.0f ? y : 0.0f;
}

/* One result of row b, output o, from its sum. */
static inline void
store_one (const Epi *e, int64_t b, int o, int32_t acc, int32_t rowsum, float w_scale,
           float bias)
{
  const EsQGemmOut *q = e->o;
  float y;

  if (e->acc != NULL)
    {
      e->acc[b * e->ld_acc + o] = acc;
      return;
    }
  y = es_qgemm_requant (acc, q->x_zero * rowsum, q->x_scale * w_scale, bias);
  if (q->relu)
    y = relu_f (y);
  if (q->out != NULL)
    {
      if (q->transposed)
        q->out[(int64_t) o * q->ld_out + b] = y;
      else
        q->out[b * q->ld_out + o] = y;
    }
  if (q->out_q != NULL)
    q->out_q[b * q->ld_q + o] = (uint8_t) es_quant_act (y, q->q_inv_scale, q->q_zero,
                                                        q->q_qmax);
}

static inline int32_t
dot_u8s8 (const uint8_t *x, const int8_t *w, int K)
{
  int32_t s = 0;

  for (int k = 0; k < K; k++)
    s += (int32_t) x[k] * (int32_t) w[k];
  return s;
}

void
es_qgemm_ref_s32 (int32_t *acc, int64_t ld_acc, const uint8_t *x, int64_t ldx,
                  const int8_t *w, int B, int K, int N)
{
  for (int b = 0; b < B; b++)
    for (int o = 0; o < N; o++)
      acc[(int64_t) b * ld_acc + o] = dot_u8s8 (x + (int64_t) b * ldx, w + (int64_t) o * K, K);
}

void
es_qgemm_ref_forward (const uint8_t *x, int64_t ldx, const int8_t *w, const float *w_scale,
                      const float *bias, int B, int K, int N, const EsQGemmOut *o)
{
  Epi e = { o, NULL, 0 };

  for (int n = 0; n < N; n++)
    {
      const int8_t *wr = w + (int64_t) n * K;
      int32_t rowsum = 0;

      for (int k = 0; k < K; k++)
        rowsum += wr[k];
      for (int b = 0; b < B; b++)
        store_one (&e, b, n, dot_u8s8 (x + (int64_t) b * ldx, wr, K), rowsum, w_scale[n],
                   bias != NULL ? bias[n] : 0.0f);
    }
}

/* The scalar path: w (N, Kp) row-major. */
static void
scalar_run (const EsQGemmWeights *pw, const uint8_t *x, int64_t ldx, int B, const Epi *e)
{
  for (int b = 0; b < B; b++)
    for (int o = 0; o < pw->N; o++)
      store_one (e, b, o, dot_u8s8 (x + (int64_t) b * ldx, pw->data + (int64_t) o * pw->Kp,
                                    pw->K),
                 pw->rowsum[o], pw->scale[o], pw->bias[o]);
}

static void
scalar_quantize (uint8_t *xq, const float *x, int K, float inv, int32_t zero, int qmax)
{
  for (int k = 0; k < K; k++)
    xq[k] = (uint8_t) es_quant_act (x[k], inv, zero, qmax);
}

static void
scalar_minmax (const float *x, int64_t N, float *lo, float *hi)
{
  float l = INFINITY, h = -INFINITY;

  for (int64_t i = 0; i < N; i++)
    {
      if (x[i] < l)
        l = x[i];
      if (x[i] > h)
        h = x[i];
    }
  *lo = l;
  *hi = h;
}

#ifdef ES_QGEMM_X86
/* ------------------------------------------------------------------------------ */
/* AVX-512 VNNI */

/* es_quant_act on 16 lanes, bit for bit. lo = -zero and hi = qmax - zero as floats:
 * clamp (lrintf (v) + zero, 0, qmax) is lrintf (clamp (v, lo, hi)) + zero, since rounding
 * is monotonic and the bounds are integers. lrintf of a value at or past 2^63, of +inf
 * or of NaN is LONG_MIN on x86-64, which clamps to 0: those lanes take lo. */
static ALWAYS_INLINE TARGET_VNNI __m512i
vn_quant (__m512 y, __m512 inv, __m512 lo, __m512 hi, __m512i zero)
{
  __m512 v = _mm512_mul_ps (y, inv);
  __mmask16 ok = _mm512_cmp_ps_mask (v, _mm512_set1_ps (0x1p63f), _CMP_LT_OQ);

  v = _mm512_min_ps (_mm512_max_ps (v, lo), hi);
  v = _mm512_mask_blend_ps (ok, lo, v);
  return _mm512_add_epi32 (_mm512_cvtps_epi32 (v), zero);
}

typedef struct {
  const EsQGemmWeights *pw;
  const uint8_t        *x;    /* the tile's first row */
  int64_t               ldx;
  const int8_t         *wp;   /* the panel */
  int64_t               b0;   /* the tile's first row index */
  int                   o0;   /* the panel's first output */
  const Epi            *e;
} Tile;

/* Requantize and store the 16 sums of row b, outputs o.. (masked past N). */
static ALWAYS_INLINE TARGET_VNNI void
vn_store (const Tile *t, __m512i acc, int64_t b, int o, __m512i zr, __m512 m, __m512 bias)
{
  const Epi *e = t->e;
  const EsQGemmOut *q = e->o;
  int valid = ES_MIN (t->pw->N - o, VN_L);
  __mmask16 mk = (__mmask16) (valid >= 16 ? 0xffff : (1u << valid) - 1);
  __m512 y;

  if (e->acc != NULL)
    {
      _mm512_mask_storeu_epi32 (e->acc + b * e->ld_acc + o, mk, acc);
      return;
    }
  y = _mm512_add_ps (_mm512_mul_ps (m, _mm512_cvtepi32_ps (_mm512_sub_epi32 (acc, zr))), bias);
  if (q->relu)
    y = _mm512_max_ps (y, _mm512_setzero_ps ());
  if (q->out != NULL)
    {
      if (!q->transposed)
        _mm512_mask_storeu_ps (q->out + b * q->ld_out + o, mk, y);
      else
        {
          float tmp[VN_L];

          _mm512_storeu_ps (tmp, y);
          for (int i = 0; i < valid; i++)
            q->out[(int64_t) (o + i) * q->ld_out + b] = tmp[i];
        }
    }
  if (q->out_q != NULL)
    {
      __m512i qi = vn_quant (y, _mm512_set1_ps (q->q_inv_scale), _mm512_set1_ps ((float) -q->q_zero),
                             _mm512_set1_ps ((float) (q->q_qmax - q->q_zero)),
                             _mm512_set1_epi32 (q->q_zero));

      _mm_mask_storeu_epi8 (q->out_q + b * q->ld_q + o, mk, _mm512_cvtepi32_epi8 (qi));
    }
}

/* MR rows times NB blocks: the sums over all of K in registers, then stored. */
static ALWAYS_INLINE TARGET_VNNI void
vn_tile (const Tile *t, const int MR, const int NB)
{
  const EsQGemmWeights *pw = t->pw;
  const int Kg = pw->Kp / 4;
  const int8_t *wp = t->wp;
  const uint8_t *x = t->x;
  const int64_t ldx = t->ldx;
  __m512i acc[VN_MR][VN_NB];

#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
    for (int j = 0; j < NB; j++)
      acc[r][j] = _mm512_setzero_si512 ();
  for (int g = 0; g < Kg; g++, wp += NB * 64)
    {
      __m512i w[VN_NB];

#pragma GCC unroll 8
      for (int j = 0; j < NB; j++)
        w[j] = _mm512_load_si512 ((const void *) (wp + j * 64));
#pragma GCC unroll 8
      for (int r = 0; r < MR; r++)
        {
          int32_t v;
          __m512i xb;

          memcpy (&v, x + r * ldx + 4 * g, 4);
          xb = _mm512_set1_epi32 (v);
#pragma GCC unroll 8
          for (int j = 0; j < NB; j++)
            acc[r][j] = _mm512_dpbusd_epi32 (acc[r][j], xb, w[j]);
        }
    }
#pragma GCC unroll 8
  for (int j = 0; j < NB; j++)
    {
      const int o = t->o0 + j * VN_L;
      __m512i zr = _mm512_setzero_si512 ();
      __m512 m = _mm512_setzero_ps (), bias = _mm512_setzero_ps ();

      if (t->e->acc == NULL)
        {
          zr = _mm512_mullo_epi32 (_mm512_set1_epi32 (t->e->o->x_zero),
                                   _mm512_load_si512 ((const void *) (pw->rowsum + o)));
          m = _mm512_mul_ps (_mm512_set1_ps (t->e->o->x_scale), _mm512_load_ps (pw->scale + o));
          bias = _mm512_load_ps (pw->bias + o);
        }
#pragma GCC unroll 8
      for (int r = 0; r < MR; r++)
        vn_store (t, acc[r][j], t->b0 + r, o, zr, m, bias);
    }
}

#define VN_TILE(MR, NB) \
  static TARGET_VNNI void vn_tile_##MR##_##NB (const Tile *t) { vn_tile (t, MR, NB); }
#define VN_TILES(MR) VN_TILE (MR, 1) VN_TILE (MR, 2) VN_TILE (MR, 3) VN_TILE (MR, 4)
VN_TILES (1) VN_TILES (2) VN_TILES (3) VN_TILES (4) VN_TILES (5) VN_TILES (6)

typedef void (*TileFn) (const Tile *t);

static const TileFn vn_tiles[VN_MR][VN_NB] = {
#define VN_ROW(MR) { vn_tile_##MR##_1, vn_tile_##MR##_2, vn_tile_##MR##_3, vn_tile_##MR##_4 }
  VN_ROW (1), VN_ROW (2), VN_ROW (3), VN_ROW (4), VN_ROW (5), VN_ROW (6),
#undef VN_ROW
};

/* Panel by panel, tiles of VN_MR rows down the batch. */
static TARGET_VNNI void
vn_run (const EsQGemmWeights *pw, const uint8_t *x, int64_t ldx, int B, const Epi *e)
{
  const int nblocks = pw->Np / VN_L, Kg = pw->Kp / 4;

  for (int p = 0; p * VN_NB < nblocks; p++)
    {
      const int nb = ES_MIN (VN_NB, nblocks - p * VN_NB);
      Tile t = { pw, NULL, ldx, pw->data + (int64_t) p * VN_NB * Kg * 64, 0, p * VN_NB * VN_L, e };

      for (int b = 0; b < B; b += VN_MR)
        {
          const int mr = ES_MIN (VN_MR, B - b);

          t.x = x + (int64_t) b * ldx;
          t.b0 = b;
          vn_tiles[mr - 1][nb - 1] (&t);
        }
    }
}

static TARGET_VNNI void
vn_quantize (uint8_t *xq, const float *x, int K, float inv, int32_t zero, int qmax)
{
  const __m512 vinv = _mm512_set1_ps (inv), lo = _mm512_set1_ps ((float) -zero);
  const __m512 hi = _mm512_set1_ps ((float) (qmax - zero));
  const __m512i vz = _mm512_set1_epi32 (zero);
  int k = 0;

  for (; k + 16 <= K; k += 16)
    _mm_storeu_si128 ((__m128i *) (xq + k),
                      _mm512_cvtepi32_epi8 (vn_quant (_mm512_loadu_ps (x + k), vinv, lo, hi, vz)));
  if (k < K)
    {
      __mmask16 mk = (__mmask16) ((1u << (K - k)) - 1);

      _mm_mask_storeu_epi8 (xq + k, mk,
                            _mm512_cvtepi32_epi8 (vn_quant (_mm512_maskz_loadu_ps (mk, x + k),
                                                            vinv, lo, hi, vz)));
    }
}

static TARGET_VNNI void
vn_minmax (const float *x, int64_t N, float *lo, float *hi)
{
  __m512 l = _mm512_set1_ps (INFINITY), h = _mm512_set1_ps (-INFINITY);
  int64_t i = 0;

  /* min/max return their second operand when the first is NaN: NaNs are skipped */
  for (; i + 16 <= N; i += 16)
    {
      __m512 v = _mm512_loadu_ps (x + i);

      l = _mm512_min_ps (v, l);
      h = _mm512_max_ps (v, h);
    }
  if (i < N)
    {
      __mmask16 mk = (__mmask16) ((1u << (N - i)) - 1);
      __m512 v = _mm512_maskz_loadu_ps (mk, x + i);

      l = _mm512_mask_min_ps (l, mk, v, l);
      h = _mm512_mask_max_ps (h, mk, v, h);
    }
  *lo = _mm512_reduce_min_ps (l);
  *hi = _mm512_reduce_max_ps (h);
}

/* ------------------------------------------------------------------------------ */
/* AVX2 */

/* es_quant_act on 8 lanes (see vn_quant). */
static ALWAYS_INLINE TARGET_AVX2 __m256i
av_quant (__m256 y, __m256 inv, __m256 lo, __m256 hi, __m256i zero)
{
  __m256 v = _mm256_mul_ps (y, inv);
  __m256 ok = _mm256_cmp_ps (v, _mm256_set1_ps (0x1p63f), _CMP_LT_OQ);

  v = _mm256_min_ps (_mm256_max_ps (v, lo), hi);
  v = _mm256_blendv_ps (lo, v, ok);
  return _mm256_add_epi32 (_mm256_cvtps_epi32 (v), zero);
}

/* 8 int32 lanes in 0..255 to 8 bytes. */
static ALWAYS_INLINE TARGET_AVX2 __m128i
av_bytes (__m256i q)
{
  __m128i w16 = _mm_packus_epi32 (_mm256_castsi256_si128 (q), _mm256_extracti128_si256 (q, 1));

  return _mm_packus_epi16 (w16, w16);
}

static ALWAYS_INLINE TARGET_AVX2 void
av_store (const Tile *t, __m256i acc, int64_t b, int o, __m256i zr, __m256 m, __m256 bias)
{
  const Epi *e = t->e;
  const EsQGemmOut *q = e->o;
  const int valid = ES_MIN (t->pw->N - o, AV_L);
  __m256 y;

  if (e->acc != NULL)
    {
      if (valid == AV_L)
        _mm256_storeu_si256 ((__m256i *) (e->acc + b * e->ld_acc + o), acc);
      else
        {
          int32_t tmp[AV_L];

          _mm256_storeu_si256 ((__m256i *) tmp, acc);
          memcpy (e->acc + b * e->ld_acc + o, tmp, (size_t) valid * sizeof (int32_t));
        }
      return;
    }
  y = _mm256_add_ps (_mm256_mul_ps (m, _mm256_cvtepi32_ps (_mm256_sub_epi32 (acc, zr))), bias);
  if (q->relu)
    y = _mm256_max_ps (y, _mm256_setzero_ps ());
  if (q->out != NULL)
    {
      if (!q->transposed && valid == AV_L)
        _mm256_storeu_ps (q->out + b * q->ld_out + o, y);
      else
        {
          float tmp[AV_L];

          _mm256_storeu_ps (tmp, y);
          for (int i = 0; i < valid; i++)
            {
              if (q->transposed)
                q->out[(int64_t) (o + i) * q->ld_out + b] = tmp[i];
              else
                q->out[b * q->ld_out + o + i] = tmp[i];
            }
        }
    }
  if (q->out_q != NULL)
    {
      __m128i qb = av_bytes (av_quant (y, _mm256_set1_ps (q->q_inv_scale),
                                       _mm256_set1_ps ((float) -q->q_zero),
                                       _mm256_set1_ps ((float) (q->q_qmax - q->q_zero)),
                                       _mm256_set1_epi32 (q->q_zero)));
      uint8_t tmp[16];

      if (valid == AV_L)
        _mm_storel_epi64 ((__m128i *) (q->out_q + b * q->ld_q + o), qb);
      else
        {
          _mm_storeu_si128 ((__m128i *) tmp, qb);
          memcpy (q->out_q + b * q->ld_q + o, tmp, (size_t) valid);
        }
    }
}

/* MR rows times NB blocks of 8. reduce_range: maddubs (exact for activations 0..127)
 * then madd with ones; else the activations' even and odd bytes widened to int16 against
 * the widened weights with madd. */
static ALWAYS_INLINE TARGET_AVX2 void
av_tile (const Tile *t, const int MR, const int NB, const bool widened)
{
  const EsQGemmWeights *pw = t->pw;
  const int Kg = pw->Kp / 4;
  const int8_t *wp = t->wp;
  const uint8_t *x = t->x;
  const int64_t ldx = t->ldx;
  const __m256i ones = _mm256_set1_epi16 (1), lo_bytes = _mm256_set1_epi16 (0x00ff);
  __m256i acc[AV_MR][AV_NB];

#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
    for (int j = 0; j < NB; j++)
      acc[r][j] = _mm256_setzero_si256 ();
  for (int g = 0; g < Kg; g++)
    {
      __m256i w[AV_NB], w2[AV_NB];

#pragma GCC unroll 8
      for (int j = 0; j < NB; j++)
        {
          if (widened)
            {
              w[j] = _mm256_load_si256 ((const __m256i *) (wp + (g * NB + j) * 64));
              w2[j] = _mm256_load_si256 ((const __m256i *) (wp + (g * NB + j) * 64 + 32));
            }
          else
            w[j] = _mm256_load_si256 ((const __m256i *) (wp + (g * NB + j) * 32));
        }
#pragma GCC unroll 8
      for (int r = 0; r < MR; r++)
        {
          int32_t v;
          __m256i xb;

          memcpy (&v, x + r * ldx + 4 * g, 4);
          xb = _mm256_set1_epi32 (v);
          if (widened)
            {
              __m256i xe = _mm256_and_si256 (xb, lo_bytes), xo = _mm256_srli_epi16 (xb, 8);

#pragma GCC unroll 8
              for (int j = 0; j < NB; j++)
                acc[r][j] = _mm256_add_epi32 (acc[r][j],
                                              _mm256_add_epi32 (_mm256_madd_epi16 (xe, w[j]),
                                                                _mm256_madd_epi16 (xo, w2[j])));
            }
          else
#pragma GCC unroll 8
            for (int j = 0; j < NB; j++)
              acc[r][j] = _mm256_add_epi32 (acc[r][j],
                                            _mm256_madd_epi16 (_mm256_maddubs_epi16 (xb, w[j]),
                                                               ones));
        }
    }
#pragma GCC unroll 8
  for (int j = 0; j < NB; j++)
    {
      const int o = t->o0 + j * AV_L;
      __m256i zr = _mm256_setzero_si256 ();
      __m256 m = _mm256_setzero_ps (), bias = _mm256_setzero_ps ();

      if (t->e->acc == NULL)
        {
          zr = _mm256_mullo_epi32 (_mm256_set1_epi32 (t->e->o->x_zero),
                                   _mm256_load_si256 ((const __m256i *) (pw->rowsum + o)));
          m = _mm256_mul_ps (_mm256_set1_ps (t->e->o->x_scale), _mm256_load_ps (pw->scale + o));
          bias = _mm256_load_ps (pw->bias + o);
        }
#pragma GCC unroll 8
      for (int r = 0; r < MR; r++)
        av_store (t, acc[r][j], t->b0 + r, o, zr, m, bias);
    }
}

#define AV_TILE(MR, NB)                                                                  \
  static TARGET_AVX2 void av_tile_##MR##_##NB (const Tile *t) { av_tile (t, MR, NB, false); } \
  static TARGET_AVX2 void aw_tile_##MR##_##NB (const Tile *t) { av_tile (t, MR, NB, true); }
#define AV_TILES(MR) AV_TILE (MR, 1) AV_TILE (MR, 2)
AV_TILES (1) AV_TILES (2) AV_TILES (3) AV_TILES (4)

static const TileFn av_tiles[2][AV_MR][AV_NB] = {
  { { av_tile_1_1, av_tile_1_2 }, { av_tile_2_1, av_tile_2_2 },
    { av_tile_3_1, av_tile_3_2 }, { av_tile_4_1, av_tile_4_2 } },
  { { aw_tile_1_1, aw_tile_1_2 }, { aw_tile_2_1, aw_tile_2_2 },
    { aw_tile_3_1, aw_tile_3_2 }, { aw_tile_4_1, aw_tile_4_2 } },
};

static TARGET_AVX2 void
av_run (const EsQGemmWeights *pw, const uint8_t *x, int64_t ldx, int B, const Epi *e)
{
  const int nblocks = pw->Np / AV_L, Kg = pw->Kp / 4;
  const int widened = pw->reduce_range ? 0 : 1;

  for (int p = 0; p * AV_NB < nblocks; p++)
    {
      const int nb = ES_MIN (AV_NB, nblocks - p * AV_NB);
      Tile t = { pw, NULL, ldx, pw->data + (int64_t) p * AV_NB * Kg * pw->group_bytes, 0,
                 p * AV_NB * AV_L, e };

      for (int b = 0; b < B; b += AV_MR)
        {
          const int mr = ES_MIN (AV_MR, B - b);

          t.x = x + (int64_t) b * ldx;
          t.b0 = b;
          av_tiles[widened][mr - 1][nb - 1] (&t);
        }
    }
}

static TARGET_AVX2 void
av_quantize (uint8_t *xq, const float *x, int K, float inv, int32_t zero, int qmax)
{
  const __m256 vinv = _mm256_set1_ps (inv), lo = _mm256_set1_ps ((float) -zero);
  const __m256 hi = _mm256_set1_ps ((float) (qmax - zero));
  const __m256i vz = _mm256_set1_epi32 (zero);
  int k = 0;

  for (; k + 8 <= K; k += 8)
    _mm_storel_epi64 ((__m128i *) (xq + k),
                      av_bytes (av_quant (_mm256_loadu_ps (x + k), vinv, lo, hi, vz)));
  scalar_quantize (xq + k, x + k, K - k, inv, zero, qmax);
}

static TARGET_AVX2 void
av_minmax (const float *x, int64_t N, float *lo, float *hi)
{
  __m256 l = _mm256_set1_ps (INFINITY), h = _mm256_set1_ps (-INFINITY);
  float lv[8], hv[8], tl, th;
  int64_t i = 0;

  for (; i + 8 <= N; i += 8)
    {
      __m256 v = _mm256_loadu_ps (x + i);

      l = _mm256_min_ps (v, l);
      h = _mm256_max_ps (v, h);
    }
  _mm256_storeu_ps (lv, l);
  _mm256_storeu_ps (hv, h);
  scalar_minmax (x + i, N - i, &tl, &th);
  for (int k = 0; k < 8; k++)
    {
      tl = lv[k] < tl ? lv[k] : tl;
      th = hv[k] > th ? hv[k] : th;
    }
  *lo = tl;
  *hi = th;
}
#endif /* ES_QGEMM_X86 */

/* ------------------------------------------------------------------------------ */
/* packing */

static void *
alloc64 (size_t bytes)
{
  void *p = aligned_alloc (64, ES_CEIL_DIV (ES_MAX (bytes, 1), 64) * 64);

  if (p != NULL)
    memset (p, 0, ES_CEIL_DIV (ES_MAX (bytes, 1), 64) * 64);
  return p;
}

void
es_qgemm_free (EsQGemmWeights *pw)
{
  if (pw == NULL)
    return;
  free (pw->rowsum);
  free (pw->scale);
  free (pw->bias);
  free (pw->data);
  free (pw);
}

static inline int8_t
w_at (const int8_t *w, int N, int K, int o, int k)
{
  return o < N && k < K ? w[(int64_t) o * K + k] : 0;
}

EsQGemmWeights *
es_qgemm_pack (const int8_t *w, const float *w_scale, const float *bias, int N, int K,
               bool reduce_range, EsQGemmPath path, EsError *err)
{
  EsQGemmWeights *pw;
  int Kg;
  size_t data_bytes;

  if (N < 1 || K < 1 || K > ES_QGEMM_MAX_K)
    {
      es_error_set (err, ES_ERR_INVALID,
                    "An int8 product needs 1 to %d inputs and at least 1 output (got %d and %d)",
                    ES_QGEMM_MAX_K, K, N);
      return NULL;
    }
  if (!es_qgemm_path_available (path))
    {
      es_error_set (err, ES_ERR_UNSUPPORTED, "This CPU cannot run the %s int8 kernels",
                    es_qgemm_path_name (path));
      return NULL;
    }
  pw = calloc (1, sizeof *pw);
  if (pw == NULL)
    goto nomem;
  pw->path = path;
  pw->reduce_range = reduce_range;
  pw->N = N;
  pw->K = K;
  pw->Kp = (int) es_qgemm_row_bytes (K);
  Kg = pw->Kp / 4;
  switch (path)
    {
    case ES_QGEMM_VNNI:
      pw->lanes = VN_L, pw->nbmax = VN_NB, pw->group_bytes = 64;
      break;
    case ES_QGEMM_AVX2:
      pw->lanes = AV_L, pw->nbmax = AV_NB, pw->group_bytes = reduce_range ? 32 : 64;
      break;
    default:
      pw->lanes = 1, pw->nbmax = 1, pw->group_bytes = 4;
      break;
    }
  pw->Np = ES_CEIL_DIV (N, pw->lanes) * pw->lanes;
  data_bytes = (size_t) pw->Np * (size_t) Kg * (size_t) pw->group_bytes / (size_t) pw->lanes;
  pw->rowsum = alloc64 ((size_t) pw->Np * sizeof (int32_t));
  pw->scale = alloc64 ((size_t) pw->Np * sizeof (float));
  pw->bias = alloc64 ((size_t) pw->Np * sizeof (float));
  pw->data = alloc64 (data_bytes);
  if (pw->rowsum == NULL || pw->scale == NULL || pw->bias == NULL || pw->data == NULL)
    goto nomem;
  for (int o = 0; o < pw->Np; o++)
    {
      int32_t s = 0;

      for (int k = 0; k < K && o < N; k++)
        s += w[(int64_t) o * K + k];
      pw->rowsum[o] = s;
      pw->scale[o] = o < N ? w_scale[o] : 1.0f;
      pw->bias[o] = o < N && bias != NULL ? bias[o] : 0.0f;
    }
  if (path == ES_QGEMM_SCALAR)
    {
      for (int o = 0; o < N; o++)
        memcpy (pw->data + (int64_t) o * pw->Kp, w + (int64_t) o * K, (size_t) K);
      return pw;
    }
  for (int blk = 0; blk < pw->Np / pw->lanes; blk++)
    {
      const int p = blk / pw->nbmax, j = blk % pw->nbmax;
      const int nb = ES_MIN (pw->nbmax, pw->Np / pw->lanes - p * pw->nbmax);
      int8_t *panel = pw->data + (int64_t) p * pw->nbmax * Kg * pw->group_bytes;

      for (int g = 0; g < Kg; g++)
        {
          int8_t *dst = panel + (int64_t) (g * nb + j) * pw->group_bytes;

          for (int i = 0; i < pw->lanes; i++)
            {
              const int o = blk * pw->lanes + i;

              if (pw->group_bytes == 64 && path == ES_QGEMM_AVX2)
                {
                  /* widened: (4g, 4g+2) in the first vector, (4g+1, 4g+3) in the second */
                  int16_t *lo = (int16_t *) (void *) dst, *hi = lo + 2 * AV_L;

                  lo[2 * i] = w_at (w, N, K, o, 4 * g);
                  lo[2 * i + 1] = w_at (w, N, K, o, 4 * g + 2);
                  hi[2 * i] = w_at (w, N, K, o, 4 * g + 1);
                  hi[2 * i + 1] = w_at (w, N, K, o, 4 * g + 3);
                }
              else
                for (int t = 0; t < 4; t++)
                  dst[4 * i + t] = w_at (w, N, K, o, 4 * g + t);
            }
        }
    }
  return pw;

nomem:
  es_qgemm_free (pw);
  es_error_set (err, ES_ERR_NOMEM, "Out of memory packing int8 weights");
  return NULL;
}

EsQGemmPath
es_qgemm_weights_path (const EsQGemmWeights *pw)
{
  return pw->path;
}

int
es_qgemm_weights_n (const EsQGemmWeights *pw)
{
  return pw->N;
}

int
es_qgemm_weights_k (const EsQGemmWeights *pw)
{
  return pw->K;
}

const int32_t *
es_qgemm_weights_rowsum (const EsQGemmWeights *pw)
{
  return pw->rowsum;
}

/* ------------------------------------------------------------------------------ */
/* dispatch */

static void
qgemm_run (const EsQGemmWeights *pw, const uint8_t *x, int64_t ldx, int B, const Epi *e)
{
  if (B <= 0)
    return;
  switch (pw->path)
    {
#ifdef ES_QGEMM_X86
    case ES_QGEMM_VNNI:
      vn_run (pw, x, ldx, B, e);
      break;
    case ES_QGEMM_AVX2:
      av_run (pw, x, ldx, B, e);
      break;
#endif
    default:
      scalar_run (pw, x, ldx, B, e);
      break;
    }
}

void
es_qgemm_forward (const EsQGemmWeights *pw, const uint8_t *x, int64_t ldx, int B,
                  const EsQGemmOut *o)
{
  Epi e = { o, NULL, 0 };

  qgemm_run (pw, x, ldx, B, &e);
}

void
es_qgemm_s32 (const EsQGemmWeights *pw, int32_t *acc, int64_t ld_acc, const uint8_t *x,
              int64_t ldx, int B)
{
  Epi e = { NULL, acc, ld_acc };

  qgemm_run (pw, x, ldx, B, &e);
}

void
es_qgemm_quantize (EsQGemmPath path, uint8_t *xq, int64_t ldq, const float *x, int64_t ldx,
                   int B, int K, float inv_scale, int32_t zero, int qmax)
{
  const int64_t Kp = es_qgemm_row_bytes (K);

  if (!es_qgemm_path_available (path))
    path = ES_QGEMM_SCALAR;
  for (int b = 0; b < B; b++)
    {
      uint8_t *q = xq + (int64_t) b * ldq;
      const float *r = x + (int64_t) b * ldx;

      switch (path)
        {
#ifdef ES_QGEMM_X86
        case ES_QGEMM_VNNI:
          vn_quantize (q, r, K, inv_scale, zero, qmax);
          break;
        case ES_QGEMM_AVX2:
          av_quantize (q, r, K, inv_scale, zero, qmax);
          break;
#endif
        default:
          scalar_quantize (q, r, K, inv_scale, zero, qmax);
          break;
        }
      for (int64_t k = K; k < Kp; k++)
        q[k] = 0;
    }
}

void
es_qgemm_minmax (EsQGemmPath path, const float *x, int64_t N, float *lo, float *hi)
{
  if (!es_qgemm_path_available (path))
    path = ES_QGEMM_SCALAR;
  switch (path)
    {
#ifdef ES_QGEMM_X86
    case ES_QGEMM_VNNI:
      vn_minmax (x, N, lo, hi);
      break;
    case ES_QGEMM_AVX2:
      av_minmax (x, N, lo, hi);
      break;
#endif
    default:
      scalar_minmax (x, N, lo, hi);
      break;
    }
  if (!(*lo <= *hi))
    *lo = *hi = 0.0f;
}
