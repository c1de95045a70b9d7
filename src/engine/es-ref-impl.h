/* es-ref-impl.h: the bodies of the reference kernels declared in es-ref.h, written
 * once and generic over the element type. es-ref.c includes it once per type after
 * defining:
 *
 *   T            the element type (float, double)
 *   SFX          the name suffix (f32, f64): es_ref_dense_forward_##SFX
 *   ES_REF_EXP, ES_REF_LOG, ES_REF_LOG1P, ES_REF_SQRT, ES_REF_TANH, ES_REF_FABS
 *                the libm functions of that type (expf or exp, ...)
 *
 * and this file #undefs all of them at its end, so the next inclusion starts clean.
 *
 * What it is: plain loops in the most obvious order, one output element at a time
 * where that reads best ("gather" form), so each line can be checked against the
 * formula. Sums are accumulated in double (ACC) even for T = float: the _f32 kernels
 * are the yardstick the fast kernels are measured against, and a yardstick should not
 * bring its own rounding error of a long float sum.
 * What it deliberately is not: fast, blocked, vectorized or threaded, or defensive
 * (sizes and labels are trusted; checks belong to the callers in es-cpu.c and the
 * model). No include guard: it is meant to be included more than once.
 *
 * Dimension key as in es-ref.h: B = batch, IN/OUT = features, C = channels,
 * H/W = height/width, OC = output channels, K = kernel size, S = stride, P = padding,
 * N = elements, CH = BatchNorm channels, SP = spatial size per channel. Row-major, NCHW. */

#if !defined(T) || !defined(SFX) || !defined(ES_REF_EXP) || !defined(ES_REF_LOG)      \
  || !defined(ES_REF_LOG1P) || !defined(ES_REF_SQRT) || !defined(ES_REF_TANH)        \
  || !defined(ES_REF_FABS)
#error "define T, SFX and the ES_REF_* math macros before including es-ref-impl.h"
#endif

#ifndef ES_REF_CAT
#define ES_REF_CAT_(a, b) a##b
#define ES_REF_CAT(a, b) ES_REF_CAT_ (a, b)
#endif

/* FN(dense_forward) -> es_ref_dense_forward_f32 (or _f64) */
#define FN(name) ES_REF_CAT (es_ref_##name##_, SFX)
/* a file-local helper with the type suffix, so both inclusions can hold one */
#define LOCAL(name) ES_REF_CAT (es_ref_local_##name##_, SFX)
/* the accumulator of every sum (see the top of this file) */
#define ACC double

/* ---- helpers ------------------------------------------------------------------ */

/* 1 / (1 + exp(-x)) without overflow: exp is only ever taken of a non-positive value. */
static inline T
LOCAL (sigmoid) (T x)
{
  if (x >= (T) 0)
    return (T) 1 / ((T) 1 + ES_REF_EXP (-x));
  T e = ES_REF_EXP (x);
  return e / ((T) 1 + e);
}

/* Channel ch's sums of dout and of dout * xhat over (B, SP), xhat = (inp - mu) * rs:
 * what BatchNorm's backward needs (fused, or summed over ranks first). */
static inline void
LOCAL (bn_grad_sums) (const T *dout, const T *inp, ACC mu, ACC rs, int ch, int B, int CH,
                      int SP, ACC *sum_g_out, ACC *sum_gx_out)
{
  ACC sum_g = 0.0, sum_gx = 0.0;

  for (int b = 0; b < B; b++)
    for (int s = 0; s < SP; s++)
      {
        const int64_t j = ((int64_t) b * CH + ch) * SP + s;
        sum_g += (ACC) dout[j];
        sum_gx += (ACC) dout[j] * (((ACC) inp[j] - mu) * rs);
      }
  *sum_g_out = sum_g;
  *sum_gx_out = sum_gx;
}

/* ---- dense -------------------------------------------------------------------- */

/* out (B,OUT) = inp (B,IN) . w^T (OUT,IN) + bias (OUT); bias may be NULL. */
void
FN (dense_forward) (T *out, const T *inp, const T *w, const T *bias,
                    int B, int IN, int OUT)
{
  for (int b = 0; b < B; b++)
    {
      const T *x = inp + (int64_t) b * IN;
      for (int o = 0; o < OUT; o++)
        {
          const T *wrow = w + (int64_t) o * IN;
          ACC acc = bias != NULL ? (ACC) bias[o] : 0.0;
          for (int i = 0; i < IN; i++)
            acc += (ACC) x[i] * (ACC) wrow[i];
          out[(int64_t) b * OUT + o] = (T) acc;
        }
    }
}

/* dinp (B,IN) = dout (B,OUT) . w (OUT,IN)            (overwritten; NULL skips)
 * dw (OUT,IN) += dout^T (OUT,B) . inp (B,IN)
 * db (OUT)    += sum over B of dout                  (NULL skips: a layer without bias) */
void
FN (dense_backward) (T *dinp, T *dw, T *db, const T *dout, const T *inp, const T *w,
                     int B, int IN, int OUT)
{
  if (dinp != NULL)
    for (int b = 0; b < B; b++)
      {
        const T *g = dout + (int64_t) b * OUT;
        for (int i = 0; i < IN; i++)
          {
            ACC acc = 0.0;
            for (int o = 0; o < OUT; o++)
              acc += (ACC) g[o] * (ACC) w[(int64_t) o * IN + i];
            dinp[(int64_t) b * IN + i] = (T) acc;
          }
      }

  for (int o = 0; o < OUT; o++)
    {
      for (int i = 0; i < IN; i++)
        {
          ACC acc = 0.0;
          for (int b = 0; b < B; b++)
            acc += (ACC) dout[(int64_t) b * OUT + o] * (ACC) inp[(int64_t) b * IN + i];
          dw[(int64_t) o * IN + i] += (T) acc;
        }
      if (db != NULL)
        {
          ACC acc = 0.0;
          for (int b = 0; b < B; b++)
            acc += (ACC) dout[(int64_t) b * OUT + o];
          db[o] += (T) acc;
        }
    }
}

/* ---- conv2d ------------------------------------------------------------------- */

/* out (B,OC,OH,OW) = sum over c, kh, kw of inp (B,C,H,W) at (oh*S - P + kh, ow*S - P + kw)
 * times w (OC,C,K,K), + bias (OC); positions in the zero padding contribute nothing.
 * bias may be NULL. */
void
FN (conv2d_forward) (T *out, const T *inp, const T *w, const T *bias,
                     int B, int C, int H, int W, int OC, int K, int S, int P)
{
  const int OH = ES_CONV_OUT (H, K, S, P);
  const int OW = ES_CONV_OUT (W, K, S, P);

  for (int b = 0; b < B; b++)
    for (int oc = 0; oc < OC; oc++)
      for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++)
          {
            ACC acc = bias != NULL ? (ACC) bias[oc] : 0.0;
            for (int c = 0; c < C; c++)
              {
                const T *plane = inp + ((int64_t) b * C + c) * H * W;
                const T *wk = w + ((int64_t) oc * C + c) * K * K;
                for (int kh = 0; kh < K; kh++)
                  {
                    const int ih = oh * S - P + kh;
                    if (ih < 0 || ih >= H)
                      continue;
                    for (int kw = 0; kw < K; kw++)
                      {
                        const int iw = ow * S - P + kw;
                        if (iw < 0 || iw >= W)
                          continue;
                        acc += (ACC) plane[(int64_t) ih * W + iw] * (ACC) wk[kh * K + kw];
                      }
                  }
              }
            out[(((int64_t) b * OC + oc) * OH + oh) * OW + ow] = (T) acc;
          }
}

/* dinp (B,C,H,W): each input pixel gathers dout * w from every output position whose
 * window covers it, i.e. oh = (ih + P - kh) / S when that divides exactly and is in
 * range (overwritten; NULL skips).
 * dw (OC,C,K,K) += sum over b, oh, ow of dout * the input under that weight.
 * db (OC) += sum over b, oh, ow of dout (NULL skips). */
void
FN (conv2d_backward) (T *dinp, T *dw, T *db, const T *dout, const T *inp, const T *w,
                      int B, int C, int H, int W, int OC, int K, int S, int P)
{
  const int OH = ES_CONV_OUT (H, K, S, P);
  const int OW = ES_CONV_OUT (W, K, S, P);

  if (dinp != NULL)
    for (int b = 0; b < B; b++)
      for (int c = 0; c < C; c++)
        for (int ih = 0; ih < H; ih++)
          for (int iw = 0; iw < W; iw++)
            {
              ACC acc = 0.0;
              for (int oc = 0; oc < OC; oc++)
                {
                  const T *g = dout + ((int64_t) b * OC + oc) * OH * OW;
                  const T *wk = w + ((int64_t) oc * C + c) * K * K;
                  for (int kh = 0; kh < K; kh++)
                    {
                      const int th = ih + P - kh;
                      if (th < 0 || th % S != 0 || th / S >= OH)
                        continue;
                      for (int kw = 0; kw < K; kw++)
                        {
                          const int tw = iw + P - kw;
                          if (tw < 0 || tw % S != 0 || tw / S >= OW)
                            continue;
                          acc += (ACC) g[(int64_t) (th / S) * OW + tw / S]
                                 * (ACC) wk[kh * K + kw];
                        }
                    }
                }
              dinp[(((int64_t) b * C + c) * H + ih) * W + iw] = (T) acc;
            }

  for (int oc = 0; oc < OC; oc++)
    {
      for (int c = 0; c < C; c++)
        for (int kh = 0; kh < K; kh++)
          for (int kw = 0; kw < K; kw++)
            {
              ACC acc = 0.0;
              for (int b = 0; b < B; b++)
                {
                  const T *plane = inp + ((int64_t) b * C + c) * H * W;
                  const T *g = dout + ((int64_t) b * OC + oc) * OH * OW;
                  for (int oh = 0; oh < OH; oh++)
                    {
                      const int ih = oh * S - P + kh;
                      if (ih < 0 || ih >= H)
                        continue;
                      for (int ow = 0; ow < OW; ow++)
                        {
                          const int iw = ow * S - P + kw;
                          if (iw < 0 || iw >= W)
                            continue;
                          acc += (ACC) g[(int64_t) oh * OW + ow]
                                 * (ACC) plane[(int64_t) ih * W + iw];
                        }
                    }
                }
              dw[(((int64_t) oc * C + c) * K + kh) * K + kw] += (T) acc;
            }

      if (db != NULL)
        {
          ACC acc = 0.0;
          for (int b = 0; b < B; b++)
            {
              const T *g = dout + ((int64_t) b * OC + oc) * OH * OW;
              for (int64_t j = 0; j < (int64_t) OH * OW; j++)
                acc += (ACC) g[j];
            }
          db[oc] += (T) acc;
        }
    }
}

/* ---- pooling (no padding) ----------------------------------------------------- */

/* out (B,C,OH,OW) = the largest value of each K x K window (stride S); argmax (B,C,OH,OW)
 * = its index h*W + w within the (b,c) input plane. Windows are scanned row by row and
 * the first maximum wins; a NaN in the window wins (the first one), so NaNs propagate. */
void
FN (maxpool2d_forward) (T *out, int32_t *argmax, const T *inp,
                        int B, int C, int H, int W, int K, int S)
{
  const int OH = ES_CONV_OUT (H, K, S, 0);
  const int OW = ES_CONV_OUT (W, K, S, 0);

  for (int64_t bc = 0; bc < (int64_t) B * C; bc++)
    {
      const T *plane = inp + bc * H * W;
      for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++)
          {
            int32_t best_i = (int32_t) (oh * S * W + ow * S);
            T best = plane[best_i];
            for (int kh = 0; kh < K; kh++)
              for (int kw = 0; kw < K; kw++)
                {
                  const int32_t i = (int32_t) ((oh * S + kh) * W + ow * S + kw);
                  const T v = plane[i];
                  if (v > best || (v != v && best == best))
                    {
                      best = v;
                      best_i = i;
                    }
                }
            const int64_t o = (bc * OH + oh) * OW + ow;
            out[o] = best;
            argmax[o] = best_i;
          }
    }
}

/* dinp (B,C,H,W) = dout routed to the argmax of each window, summed where windows
 * overlap (S < K); zero elsewhere (overwritten; NULL does nothing). */
void
FN (maxpool2d_backward) (T *dinp, const T *dout, const int32_t *argmax,
                         int B, int C, int H, int W, int K, int S)
{
  const int OH = ES_CONV_OUT (H, K, S, 0);
  const int OW = ES_CONV_OUT (W, K, S, 0);

  if (dinp == NULL)
    return;
  for (int64_t bc = 0; bc < (int64_t) B * C; bc++)
    {
      T *plane = dinp + bc * H * W;
      for (int64_t j = 0; j < (int64_t) H * W; j++)
        plane[j] = (T) 0;
      for (int64_t j = 0; j < (int64_t) OH * OW; j++)
        plane[argmax[bc * OH * OW + j]] += dout[bc * OH * OW + j];
    }
}

/* out (B,C,OH,OW) = the mean of each K x K window (stride S). */
void
FN (avgpool2d_forward) (T *out, const T *inp, int B, int C, int H, int W, int K, int S)
{
  const int OH = ES_CONV_OUT (H, K, S, 0);
  const int OW = ES_CONV_OUT (W, K, S, 0);

  for (int64_t bc = 0; bc < (int64_t) B * C; bc++)
    {
      const T *plane = inp + bc * H * W;
      for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++)
          {
            ACC acc = 0.0;
            for (int kh = 0; kh < K; kh++)
              for (int kw = 0; kw < K; kw++)
                acc += (ACC) plane[(int64_t) (oh * S + kh) * W + ow * S + kw];
            out[(bc * OH + oh) * OW + ow] = (T) (acc / ((ACC) K * K));
          }
    }
}

/* dinp (B,C,H,W) = each pixel gathers dout / (K*K) from every window that covers it
 * (overwritten; NULL does nothing). */
void
FN (avgpool2d_backward) (T *dinp, const T *dout, int B, int C, int H, int W, int K, int S)
{
  const int OH = ES_CONV_OUT (H, K, S, 0);
  const int OW = ES_CONV_OUT (W, K, S, 0);

  if (dinp == NULL)
    return;
  for (int64_t bc = 0; bc < (int64_t) B * C; bc++)
    {
      const T *g = dout + bc * OH * OW;
      for (int ih = 0; ih < H; ih++)
        for (int iw = 0; iw < W; iw++)
          {
            ACC acc = 0.0;
            for (int kh = 0; kh < K; kh++)
              {
                const int th = ih - kh;
                if (th < 0 || th % S != 0 || th / S >= OH)
                  continue;
                for (int kw = 0; kw < K; kw++)
                  {
                    const int tw = iw - kw;
                    if (tw < 0 || tw % S != 0 || tw / S >= OW)
                      continue;
                    acc += (ACC) g[(int64_t) (th / S) * OW + tw / S];
                  }
              }
            dinp[(bc * H + ih) * W + iw] = (T) (acc / ((ACC) K * K));
          }
    }
}

/* ---- element-wise activations (N) --------------------------------------------- */

void
FN (relu_forward) (T *out, const T *inp, int64_t N)
{
  for (int64_t i = 0; i < N; i++)
    out[i] = inp[i] > (T) 0 ? inp[i] : (T) 0;
}

/* dinp = dout where inp > 0, else 0 (the derivative at 0 is taken as 0). */
void
FN (relu_backward) (T *dinp, const T *dout, const T *inp, int64_t N)
{
  if (dinp == NULL)
    return;
  for (int64_t i = 0; i < N; i++)
    dinp[i] = inp[i] > (T) 0 ? dout[i] : (T) 0;
}

void
FN (leaky_relu_forward) (T *out, const T *inp, T alpha, int64_t N)
{
  for (int64_t i = 0; i < N; i++)
    out[i] = inp[i] > (T) 0 ? inp[i] : alpha * inp[i];
}

/* dinp = dout where inp > 0, else alpha * dout. */
void
FN (leaky_relu_backward) (T *dinp, const T *dout, const T *inp, T alpha, int64_t N)
{
  if (dinp == NULL)
    return;
  for (int64_t i = 0; i < N; i++)
    dinp[i] = inp[i] > (T) 0 ? dout[i] : alpha * dout[i];
}

void
FN (sigmoid_forward) (T *out, const T *inp, int64_t N)
{
  for (int64_t i = 0; i < N; i++)
    out[i] = LOCAL (sigmoid) (inp[i]);
}

/* dinp = dout * y * (1 - y), y = the forward output. */
void
FN (sigmoid_backward) (T *dinp, const T *dout, const T *out, int64_t N)
{
  if (dinp == NULL)
    return;
  for (int64_t i = 0; i < N; i++)
    dinp[i] = dout[i] * out[i] * ((T) 1 - out[i]);
}

void
FN (tanh_forward) (T *out, const T *inp, int64_t N)
{
  for (int64_t i = 0; i < N; i++)
    out[i] = ES_REF_TANH (inp[i]);
}

/* dinp = dout * (1 - y^2), y = the forward output. */
void
FN (tanh_backward) (T *dinp, const T *dout, const T *out, int64_t N)
{
  if (dinp == NULL)
    return;
  for (int64_t i = 0; i < N; i++)
    dinp[i] = dout[i] * ((T) 1 - out[i] * out[i]);
}

/* ---- softmax over the last dimension of (B,C) --------------------------------- */

/* out = exp(x - max) / sum exp(x - max), row by row: the max keeps exp from overflowing. */
void
FN (softmax_forward) (T *out, const T *inp, int B, int C)
{
  for (int b = 0; b < B; b++)
    {
      const T *x = inp + (int64_t) b * C;
      T *y = out + (int64_t) b * C;
      T m = x[0];
      for (int c = 1; c < C; c++)
        m = x[c] > m ? x[c] : m;
      ACC sum = 0.0;
      for (int c = 0; c < C; c++)
        {
          y[c] = ES_REF_EXP (x[c] - m);
          sum += (ACC) y[c];
        }
      for (int c = 0; c < C; c++)
        y[c] = (T) ((ACC) y[c] / sum);
    }
}

/* dinp = y * (dout - sum_c dout_c y_c), row by row, y = the forward output. */
void
FN (softmax_backward) (T *dinp, const T *dout, const T *out, int B, int C)
{
  if (dinp == NULL)
    return;
  for (int b = 0; b < B; b++)
    {
      const T *g = dout + (int64_t) b * C;
      const T *y = out + (int64_t) b * C;
      ACC dot = 0.0;
      for (int c = 0; c < C; c++)
        dot += (ACC) g[c] * (ACC) y[c];
      for (int c = 0; c < C; c++)
        dinp[(int64_t) b * C + c] = (T) ((ACC) y[c] * ((ACC) g[c] - dot));
    }
}

/* ---- losses ------------------------------------------------------------------- */

/* probs (B,C) = softmax(logits); losses (B) = logsumexp(logits) - logits[label], which
 * stays finite where log(p[label]) would be log(0). Returns the mean loss over B.
 * losses may be NULL when only the mean is wanted. */
T
FN (softmax_xent_forward) (T *probs, T *losses, const T *logits, const int32_t *labels,
                           int B, int C)
{
  ACC total = 0.0;

  for (int b = 0; b < B; b++)
    {
      const T *x = logits + (int64_t) b * C;
      T *p = probs + (int64_t) b * C;
      T m = x[0];
      for (int c = 1; c < C; c++)
        m = x[c] > m ? x[c] : m;
      ACC sum = 0.0;
      for (int c = 0; c < C; c++)
        {
          p[c] = ES_REF_EXP (x[c] - m);
          sum += (ACC) p[c];
        }
      for (int c = 0; c < C; c++)
        p[c] = (T) ((ACC) p[c] / sum);
      const T lse = m + ES_REF_LOG ((T) sum);
      const T loss = lse - x[labels[b]];
      if (losses != NULL)
        losses[b] = loss;
      total += (ACC) loss;
    }
  return B > 0 ? (T) (total / B) : (T) 0;
}

/* dlogits (B,C) = (probs - onehot(label)) * scale: the gradient of scale * sum(losses),
 * so scale = 1/B gives the gradient of the mean. Overwritten. */
void
FN (softmax_xent_backward) (T *dlogits, const T *probs, const int32_t *labels, T scale,
                            int B, int C)
{
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++)
      {
        const int64_t j = (int64_t) b * C + c;
        const T onehot = c == labels[b] ? (T) 1 : (T) 0;
        dlogits[j] = (probs[j] - onehot) * scale;
      }
}

/* probs (N) = sigmoid(logits); losses (N) = max(x,0) - x*t + log1p(exp(-|x|)), the
 * overflow-free form of -(t log p + (1-t) log(1-p)). Returns the mean over N.
 * losses may be NULL. */
T
FN (bce_forward) (T *probs, T *losses, const T *logits, const T *targets, int64_t N)
{
  ACC total = 0.0;

  for (int64_t i = 0; i < N; i++)
    {
      const T x = logits[i];
      const T t = targets[i];
      probs[i] = LOCAL (sigmoid) (x);
      const T loss = (x > (T) 0 ? x : (T) 0) - x * t + ES_REF_LOG1P (ES_REF_EXP (-ES_REF_FABS (x)));
      if (losses != NULL)
        losses[i] = loss;
      total += (ACC) loss;
    }
  return N > 0 ? (T) (total / (ACC) N) : (T) 0;
}

/* dlogits (N) = (probs - targets) * scale; scale = 1/N for the mean. Overwritten. */
void
FN (bce_backward) (T *dlogits, const T *probs, const T *targets, T scale, int64_t N)
{
  for (int64_t i = 0; i < N; i++)
    dlogits[i] = (probs[i] - targets[i]) * scale;
}

/* losses (B) = mean over D of (pred - target)^2 for each row of (B,D); returns the mean
 * over B. losses may be NULL. */
T
FN (mse_forward) (T *losses, const T *pred, const T *target, int B, int D)
{
  ACC total = 0.0;

  for (int b = 0; b < B; b++)
    {
      ACC acc = 0.0;
      for (int d = 0; d < D; d++)
        {
          const ACC e = (ACC) pred[(int64_t) b * D + d] - (ACC) target[(int64_t) b * D + d];
          acc += e * e;
        }
      const T loss = D > 0 ? (T) (acc / D) : (T) 0;
      if (losses != NULL)
        losses[b] = loss;
      total += (ACC) loss;
    }
  return B > 0 ? (T) (total / B) : (T) 0;
}

/* dpred (B,D) = 2 (pred - target) / D * scale: the gradient of scale * sum(losses);
 * scale = 1/B for the mean. Overwritten. */
void
FN (mse_backward) (T *dpred, const T *pred, const T *target, T scale, int B, int D)
{
  const int64_t n = (int64_t) B * D;

  for (int64_t j = 0; j < n; j++)
    dpred[j] = (T) (2.0 * ((ACC) pred[j] - (ACC) target[j]) / D * (ACC) scale);
}

/* ---- dropout (N) -------------------------------------------------------------- */

/* mask[i] = es_rand_uniform(seed, i) >= rate (compared in double, so a float rate is
 * the float's exact value); out = inp * mask / (1 - rate). rate 0 keeps everything;
 * rate >= 1 drops everything (out = 0, never 0 * inf). */
void
FN (dropout_forward) (T *out, uint8_t *mask, const T *inp, T rate, uint64_t seed,
                      int64_t N)
{
  const T keep_scale = rate < (T) 1 ? (T) 1 / ((T) 1 - rate) : (T) 0;

  for (int64_t i = 0; i < N; i++)
    {
      mask[i] = es_rand_uniform (seed, (uint64_t) i) >= (double) rate ? 1 : 0;
      out[i] = mask[i] ? inp[i] * keep_scale : (T) 0;
    }
}

/* dinp = dout * mask / (1 - rate) (overwritten; NULL does nothing). */
void
FN (dropout_backward) (T *dinp, const T *dout, const uint8_t *mask, T rate, int64_t N)
{
  const T keep_scale = rate < (T) 1 ? (T) 1 / ((T) 1 - rate) : (T) 0;

  if (dinp == NULL)
    return;
  for (int64_t i = 0; i < N; i++)
    dinp[i] = mask[i] ? dout[i] * keep_scale : (T) 0;
}

/* ---- BatchNorm over (B,CH,SP) ------------------------------------------------- */

/* For each channel, over its n = B*SP values: mean, biased variance var (two passes),
 * rstd = 1 / sqrt(var + eps); out = gamma * (x - mean) * rstd + beta. mean and rstd (CH)
 * are saved for backward. running_mean / running_var (CH) may each be NULL; otherwise
 * r = (1 - momentum) r + momentum * batch value, the variance taken unbiased,
 * var * n / (n - 1) (as is, when n == 1). */
void
FN (batchnorm_forward_train) (T *out, T *mean, T *rstd, T *running_mean, T *running_var,
                              const T *inp, const T *gamma, const T *beta, T momentum,
                              T eps, int B, int CH, int SP)
{
  const int64_t n = (int64_t) B * SP;

  for (int ch = 0; ch < CH; ch++)
    {
      ACC sum = 0.0;
      for (int b = 0; b < B; b++)
        for (int s = 0; s < SP; s++)
          sum += (ACC) inp[((int64_t) b * CH + ch) * SP + s];
      const ACC mu = n > 0 ? sum / (ACC) n : 0.0;

      ACC sq = 0.0;
      for (int b = 0; b < B; b++)
        for (int s = 0; s < SP; s++)
          {
            const ACC d = (ACC) inp[((int64_t) b * CH + ch) * SP + s] - mu;
            sq += d * d;
          }
      const ACC var = n > 0 ? sq / (ACC) n : 0.0;
      const T rs = (T) 1 / ES_REF_SQRT ((T) var + eps);

      mean[ch] = (T) mu;
      rstd[ch] = rs;
      if (running_mean != NULL)
        running_mean[ch] = ((T) 1 - momentum) * running_mean[ch] + momentum * (T) mu;
      if (running_var != NULL)
        {
          const ACC unbiased = n > 1 ? sq / (ACC) (n - 1) : var;
          running_var[ch] = ((T) 1 - momentum) * running_var[ch] + momentum * (T) unbiased;
        }

      for (int b = 0; b < B; b++)
        for (int s = 0; s < SP; s++)
          {
            const int64_t j = ((int64_t) b * CH + ch) * SP + s;
            out[j] = gamma[ch] * ((inp[j] - (T) mu) * rs) + beta[ch];
          }
    }
}

/* out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta. */
void
FN (batchnorm_forward_infer) (T *out, const T *inp, const T *gamma, const T *beta,
                              const T *running_mean, const T *running_var, T eps,
                              int B, int CH, int SP)
{
  for (int ch = 0; ch < CH; ch++)
    {
      const T rs = (T) 1 / ES_REF_SQRT (running_var[ch] + eps);
      for (int b = 0; b < B; b++)
        for (int s = 0; s < SP; s++)
          {
            const int64_t j = ((int64_t) b * CH + ch) * SP + s;
            out[j] = gamma[ch] * ((inp[j] - running_mean[ch]) * rs) + beta[ch];
          }
    }
}

/* With xhat = (x - mean) * rstd and sums over the channel's n = B*SP values:
 * dbeta (CH)  += sum dout
 * dgamma (CH) += sum dout * xhat
 * dinp        = gamma * rstd / n * (n * dout - sum dout - xhat * sum dout * xhat)
 * (the batch statistics depend on every input: training-mode gradient; overwritten,
 * NULL skips). dgamma / dbeta may be NULL too. */
void
FN (batchnorm_backward) (T *dinp, T *dgamma, T *dbeta, const T *dout, const T *inp,
                         const T *gamma, const T *mean, const T *rstd,
                         int B, int CH, int SP)
{
  const int64_t n = (int64_t) B * SP;

  for (int ch = 0; ch < CH; ch++)
    {
      const ACC mu = (ACC) mean[ch];
      const ACC rs = (ACC) rstd[ch];
      ACC sum_g, sum_gx;

      LOCAL (bn_grad_sums) (dout, inp, mu, rs, ch, B, CH, SP, &sum_g, &sum_gx);
      if (dbeta != NULL)
        dbeta[ch] += (T) sum_g;
      if (dgamma != NULL)
        dgamma[ch] += (T) sum_gx;
      if (dinp == NULL || n == 0)
        continue;

      const ACC k = (ACC) gamma[ch] * rs / (ACC) n;
      for (int b = 0; b < B; b++)
        for (int s = 0; s < SP; s++)
          {
            const int64_t j = ((int64_t) b * CH + ch) * SP + s;
            const ACC xhat = ((ACC) inp[j] - mu) * rs;
            dinp[j] = (T) (k * ((ACC) n * (ACC) dout[j] - sum_g - xhat * sum_gx));
          }
    }
}

/* Synchronized BatchNorm, cut in four (es-backend.h): the statistics of this process'
 * values, the forward with statistics given, the sums backward needs, and dinp with
 * the global sums given. */

/* part (3, CH): mean as T, (mean - part[ch]) as T, sum of squared deviations (two
 * passes), over each channel's n = B*SP values; zeros when n is 0. */
void
FN (batchnorm_stats) (T *part, const T *inp, int B, int CH, int SP)
{
  const int64_t n = (int64_t) B * SP;

  for (int ch = 0; ch < CH; ch++)
    {
      ACC sum = 0.0, sq = 0.0;

      for (int b = 0; b < B; b++)
        for (int s = 0; s < SP; s++)
          sum += (ACC) inp[((int64_t) b * CH + ch) * SP + s];
      const ACC mu = n > 0 ? sum / (ACC) n : 0.0;
      for (int b = 0; b < B; b++)
        for (int s = 0; s < SP; s++)
          {
            const ACC d = (ACC) inp[((int64_t) b * CH + ch) * SP + s] - mu;
            sq += d * d;
          }
      part[ch] = (T) mu;
      part[CH + ch] = (T) (mu - (ACC) part[ch]);
      part[2 * CH + ch] = (T) sq;
    }
}

/* out = gamma * (x - mean) * rstd + beta, the statistics given (CH each). */
void
FN (batchnorm_forward_apply) (T *out, const T *inp, const T *gamma, const T *beta,
                              const T *mean, const T *rstd, int B, int CH, int SP)
{
  for (int ch = 0; ch < CH; ch++)
    for (int b = 0; b < B; b++)
      for (int s = 0; s < SP; s++)
        {
          const int64_t j = ((int64_t) b * CH + ch) * SP + s;
          out[j] = gamma[ch] * ((inp[j] - mean[ch]) * rstd[ch]) + beta[ch];
        }
}

/* part (2, CH) = sum dout, sum dout * xhat; dbeta += the first, dgamma += the second. */
void
FN (batchnorm_backward_stats) (T *part, T *dgamma, T *dbeta, const T *dout, const T *inp,
                               const T *mean, const T *rstd, int B, int CH, int SP)
{
  for (int ch = 0; ch < CH; ch++)
    {
      ACC sum_g, sum_gx;

      LOCAL (bn_grad_sums) (dout, inp, (ACC) mean[ch], (ACC) rstd[ch], ch, B, CH, SP, &sum_g,
                            &sum_gx);
      part[ch] = (T) sum_g;
      part[CH + ch] = (T) sum_gx;
      if (dbeta != NULL)
        dbeta[ch] += (T) sum_g;
      if (dgamma != NULL)
        dgamma[ch] += (T) sum_gx;
    }
}

/* dinp = gamma * rstd * (dout - coef[ch] - xhat * coef[CH + ch]). */
void
FN (batchnorm_backward_apply) (T *dinp, const T *dout, const T *inp, const T *gamma,
                               const T *mean, const T *rstd, const T *coef, int B, int CH,
                               int SP)
{
  for (int ch = 0; ch < CH; ch++)
    {
      const ACC mu = (ACC) mean[ch];
      const ACC rs = (ACC) rstd[ch];
      const ACC k = (ACC) gamma[ch] * rs;
      for (int b = 0; b < B; b++)
        for (int s = 0; s < SP; s++)
          {
            const int64_t j = ((int64_t) b * CH + ch) * SP + s;
            const ACC xhat = ((ACC) inp[j] - mu) * rs;
            dinp[j] = (T) (k * ((ACC) dout[j] - (ACC) coef[ch] - xhat * (ACC) coef[CH + ch]));
          }
    }
}

/* ---- pruning, fake quantization, distillation ---------------------------------- */

/* x (N) = mask ? x : 0: a select, not a product, so a pruned inf or NaN becomes 0 too. */
void
FN (mask_apply) (T *x, const uint8_t *mask, int64_t N)
{
  for (int64_t i = 0; i < N; i++)
    x[i] = mask[i] ? x[i] : (T) 0;
}

/* lo, hi = the smallest and largest of x (N), NaN skipped: +inf and -inf when every
 * value is NaN. */
void
FN (min_max) (T *lo, T *hi, const T *x, int64_t N)
{
  T l = (T) INFINITY, h = (T) -INFINITY;

  for (int64_t i = 0; i < N; i++)
    {
      l = x[i] < l ? x[i] : l;
      h = x[i] > h ? x[i] : h;
    }
  *lo = l;
  *hi = h;
}

/* Each row of w (rows, cols) through int8 and back, in float whatever T is (es-quant.h
 * is the definition): s = es_quant_weight_scale (max |w_row|), q = es_quant_weight
 * (w, 1/s), out = q * s. NaN weights do not count towards the maximum. */
void
FN (fake_quant_weights) (T *out, const T *w, int rows, int cols)
{
  for (int r = 0; r < rows; r++)
    {
      const T *wr = w + (int64_t) r * cols;
      T *o = out + (int64_t) r * cols;
      float m = 0.0f;
      for (int c = 0; c < cols; c++)
        {
          const float a = fabsf ((float) wr[c]);
          m = a > m ? a : m;
        }
      const float s = es_quant_weight_scale (m);
      const float inv = 1.0f / s;
      for (int c = 0; c < cols; c++)
        o[c] = (T) ((float) es_quant_weight ((float) wr[c], inv) * s);
    }
}

/* out (N) = (es_quant_act (x, 1/s, z, qmax) - z) * s with s, z = es_quant_act_params
 * (lo, hi, qmax): the value an int8 layer's uint8 input code stands for. */
void
FN (fake_quant_act) (T *out, const T *inp, T lo, T hi, int qmax, int64_t N)
{
  float s;
  int32_t z;

  es_quant_act_params ((float) lo, (float) hi, qmax, &s, &z);
  const float inv = 1.0f / s;
  for (int64_t i = 0; i < N; i++)
    out[i] = (T) ((float) (es_quant_act ((float) inp[i], inv, z, qmax) - z) * s);
}

/* The straight-through estimator of fake_quant_act: the rounding counts as the
 * identity, the clipping does not: dinp = dout inside [min(lo,0), max(hi,0)], the range
 * es_quant_act_params quantizes over, and 0 outside (NaN inputs too). */
void
FN (fake_quant_act_backward) (T *dinp, const T *dout, const T *inp, T lo, T hi, int64_t N)
{
  const T l = lo < (T) 0 ? lo : (T) 0;
  const T h = hi > (T) 0 ? hi : (T) 0;

  if (dinp == NULL)
    return;
  for (int64_t i = 0; i < N; i++)
    dinp[i] = inp[i] >= l && inp[i] <= h ? dout[i] : (T) 0;
}

/* softmax (C) of x / temp into p; returns logsumexp(x / temp). */
static inline T
LOCAL (soft_row) (T *p, const T *x, T temp, int C)
{
  T m = x[0];
  for (int c = 1; c < C; c++)
    m = x[c] > m ? x[c] : m;
  const T mt = m / temp;
  ACC sum = 0.0;
  for (int c = 0; c < C; c++)
    {
      p[c] = ES_REF_EXP (x[c] / temp - mt);
      sum += (ACC) p[c];
    }
  for (int c = 0; c < C; c++)
    p[c] = (T) ((ACC) p[c] / sum);
  return mt + ES_REF_LOG ((T) sum);
}

/* Per row: the hard part is softmax_xent_forward's computation, step for step (so
 * alpha = 0 gives its loss and probabilities bit for bit); the soft part is
 * KL = sum_c pt_c (log pt_c - log ps_c), both logs taken as x/temp - logsumexp(x/temp)
 * so they stay finite where a probability underflows (its term is then 0). */
T
FN (distill_forward) (T *probs, T *soft_s, T *soft_t, T *losses, const T *logits,
                      const T *teacher, const int32_t *labels, T temp, T alpha, int B, int C)
{
  ACC total = 0.0;

  for (int b = 0; b < B; b++)
    {
      const T *x = logits + (int64_t) b * C;
      const T *t = teacher + (int64_t) b * C;
      T *p = probs + (int64_t) b * C;
      T *ps = soft_s + (int64_t) b * C;
      T *pt = soft_t + (int64_t) b * C;

      /* hard: as softmax_xent_forward */
      T m = x[0];
      for (int c = 1; c < C; c++)
        m = x[c] > m ? x[c] : m;
      ACC sum = 0.0;
      for (int c = 0; c < C; c++)
        {
          p[c] = ES_REF_EXP (x[c] - m);
          sum += (ACC) p[c];
        }
      for (int c = 0; c < C; c++)
        p[c] = (T) ((ACC) p[c] / sum);
      const T lse = m + ES_REF_LOG ((T) sum);
      const T ce = lse - x[labels[b]];

      /* soft */
      const T lse_s = LOCAL (soft_row) (ps, x, temp, C);
      const T lse_t = LOCAL (soft_row) (pt, t, temp, C);
      ACC kl = 0.0;
      for (int c = 0; c < C; c++)
        kl += (ACC) pt[c] * (((ACC) t[c] / temp - (ACC) lse_t) - ((ACC) x[c] / temp - (ACC) lse_s));

      const T loss = ((T) 1 - alpha) * ce + alpha * temp * temp * (T) kl;
      if (losses != NULL)
        losses[b] = loss;
      total += (ACC) loss;
    }
  return B > 0 ? (T) (total / B) : (T) 0;
}

/* dlogits (B,C) = ((1 - alpha)(probs - onehot) + alpha temp (soft_s - soft_t)) * scale:
 * d KL / d logits = (soft_s - soft_t) / temp, times the temp^2 of the loss. */
void
FN (distill_backward) (T *dlogits, const T *probs, const T *soft_s, const T *soft_t,
                       const int32_t *labels, T temp, T alpha, T scale, int B, int C)
{
  for (int b = 0; b < B; b++)
    for (int c = 0; c < C; c++)
      {
        const int64_t j = (int64_t) b * C + c;
        const T onehot = c == labels[b] ? (T) 1 : (T) 0;
        dlogits[j] = (((T) 1 - alpha) * (probs[j] - onehot)
                      + alpha * temp * (soft_s[j] - soft_t[j])) * scale;
      }
}

#undef FN
#undef LOCAL
#undef ACC
#undef T
#undef SFX
#undef ES_REF_EXP
#undef ES_REF_LOG
#undef ES_REF_LOG1P
#undef ES_REF_SQRT
#undef ES_REF_TANH
#undef ES_REF_FABS
