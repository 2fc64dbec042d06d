/* Tensor kernels on OpenBLAS. All tensors are single images in CHW layout
 * (float32, C-contiguous, no batch dimension). Each kernel states its shape
 * contract; outputs never alias inputs unless a kernel says so. Kernels are
 * pure: no allocation, no logging, no global state, safe from any thread. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  INSP_PAD_SYMMETRIC, /* PyTorch: pad = given value on every side */
  INSP_PAD_TF_SAME,   /* TensorFlow SAME: computed per dim, extra on bottom/right */
} InspPadMode;

typedef enum {
  INSP_ACT_NONE,
  INSP_ACT_RELU,
  INSP_ACT_RELU6,
} InspActivation;

/* Output size and leading (top/left) padding of a conv/pool along one dim.
 * SYMMETRIC: out = (in + 2*pad - k)/stride + 1, before = pad.
 * TF_SAME:   out = ceil(in/stride), total = max((out-1)*stride + k - in, 0),
 *            before = total/2 (pad is ignored). */
void insp_ops_conv_geometry(InspPadMode mode, int in, int k, int stride, int pad, int *out,
                            int *pad_before);

/* Convolution with folded batch norm, bias and activation (groups = 1).
 * x [cin,h,w] -> y [cout,oh,ow]; w [cout,cin,kh,kw]; bias [cout] or NULL.
 * A matrix product of our own (not sgemm: no OpenBLAS thread, and fast on
 * the small K of MobileNetV2's 1x1 convs), the bias and activation applied
 * from registers. 1x1 stride 1 reads x directly; otherwise im2col into
 * @scratch, which holds at least insp_ops_conv2d_scratch_size() floats (0
 * for 1x1 s1). Each output is the sum over cin*kh*kw in order, whatever its
 * position: single-threaded, compiled for AVX-512, AVX2 and the baseline. */
gsize insp_ops_conv2d_scratch_size(int cin, int kh, int kw, int oh, int ow, int stride);
void insp_ops_conv2d(const float *x, int cin, int h, int w, const float *weight, const float *bias,
                     int cout, int kh, int kw, int stride, int pad_top, int pad_left, int oh,
                     int ow, InspActivation act, float *scratch, float *y);
/* A 1x1 stride-1 conv on the matrix unit (insp-ops-mx.c: AMX, each fp32
 * product as three bfloat16 ones, about 4e-5 relative of sum |w x|; fp32
 * is about 1e-6). insp_ops_mx_available: the CPU and kernel have AMX-BF16.
 * Weights [cout, cin] (cin <= INSP_OPS_MX_MAX_CIN) packed once into
 * insp_ops_mx_weights_size guint16s. The part: output channels [o_lo, o_hi)
 * of the packed weights (y, @bias and @residual start at channel o_lo,
 * rows @hw apart) for pixels [p0, p1); the values do not depend on the
 * ranges. */
#define INSP_OPS_MX_MAX_CIN 640
gboolean insp_ops_mx_available(void);
gsize insp_ops_mx_weights_size(int cout, int cin);
void insp_ops_mx_pack_weights(const float *w, int cout, int cin, guint16 *out);
/* @x [cin, hw], or NULL and @xp: the whole input packed once by
 * insp_ops_mx_pack_input (insp_ops_mx_input_size guint16s), for several
 * channel ranges of one input without splitting it again for each. */
void insp_ops_conv1x1_mx_part(const float *x, const guint16 *xp, int cin, gsize hw,
                              const guint16 *wp, int o_lo, int o_hi, const float *bias,
                              const float *residual, InspActivation act, gsize p0, gsize p1,
                              float *y);
gsize insp_ops_mx_input_size(int cin, gsize hw);
void insp_ops_mx_pack_input(const float *x, int cin, gsize hw, guint16 *xp);
/* The same for the output pixels [p0, p1) (flattened oy*ow + ox) of every
 * channel only, writing only those of y (and of the full-size @scratch), so
 * that threads may compute disjoint ranges of one output at once; the
 * values are those insp_ops_conv2d writes, bit for bit. @residual NULL or
 * [cout,oh,ow], added before the activation (y = act(conv + bias + r)); it
 * may not alias y. A range shorter than 16 pixels reads (and drops) up to
 * 15 im2col columns of @scratch before p0: threads that share @scratch cut
 * ranges of 16 pixels or more. */
void insp_ops_conv2d_part(const float *x, int cin, int h, int w, const float *weight,
                          const float *bias, int cout, int kh, int kw, int stride, int pad_top,
                          int pad_left, int oh, int ow, const float *residual, InspActivation act,
                          gsize p0, gsize p1, float *scratch, float *y);

/* 3x3 stride-1 convolution by Winograd F(2x2,3x3): 16 sgemms of
 * [cout,cin] x [cin,tiles] on transformed 4x4 input tiles (2.25x fewer
 * multiplies than im2col). Weights are transformed once:
 * w [cout,cin,3,3] -> u [16,cout,cin] (insp_ops_winograd_weight_size floats).
 * x [cin,h,w] -> y [cout,oh,ow] with zero padding pad_top/pad_left; @scratch
 * holds insp_ops_winograd_scratch_size() floats. Output widths up to
 * 2 * INSP_OPS_WINOGRAD_MAX_TILES_X. */
#define INSP_OPS_WINOGRAD_MAX_TILES_X 512
gsize insp_ops_winograd_weight_size(int cin, int cout);
void insp_ops_winograd_transform_weights(const float *weight, int cin, int cout, float *u);
gsize insp_ops_winograd_scratch_size(int cin, int cout, int oh, int ow);
void insp_ops_conv3x3_winograd(const float *x, int cin, int h, int w, const float *u,
                               const float *bias, int cout, int pad_top, int pad_left, int oh,
                               int ow, InspActivation act, float *scratch, float *y);

/* Depthwise 3x3 (groups = channels) with bias and activation.
 * x [c,h,w] -> y [c,oh,ow]; weight [c,1,3,3]; bias [c] or NULL. */
void insp_ops_depthwise3x3(const float *x, int c, int h, int w, const float *weight,
                           const float *bias, int stride, int pad_top, int pad_left, int oh, int ow,
                           InspActivation act, float *y);

/* Folds y = (conv(x) - mean)/sqrt(var + eps)*gamma + beta into the conv:
 * weight [cout, k] scaled per output channel in place, bias [cout] written
 * (conv_bias may be NULL). */
void insp_ops_fold_batchnorm(float *weight, float *bias, const float *conv_bias, int cout,
                             gsize per_out, const float *gamma, const float *beta,
                             const float *mean, const float *var, float eps);

/* In place, n elements. */
void insp_ops_activation(float *x, gsize n, InspActivation act);
/* y[i] += x[i], n elements (y may be the output of the block). */
void insp_ops_add(float *y, const float *x, gsize n);

/* Max pool k x k, stride, symmetric padding (padded cells are ignored).
 * x [c,h,w] -> y [c,oh,ow], oh = (h + 2*pad - k)/stride + 1. */
void insp_ops_maxpool(const float *x, int c, int h, int w, int k, int stride, int pad, float *y);
/* Average pool k x k, stride 1, pad k/2, count_include_pad (border cells
 * divide by k*k, as torch avg_pool2d's default). x [c,h,w] -> y [c,h,w]. */
void insp_ops_avgpool_same(const float *x, int c, int h, int w, int k, float *y);
/* Global average over h*w: x [c,h,w] -> y [c]. */
void insp_ops_global_avgpool(const float *x, int c, int h, int w, float *y);

/* Bilinear resize, align_corners = False (half-pixel centres, source
 * coordinates clamped at 0), no antialias. x [c,h,w] -> y [c,oh,ow]. */
void insp_ops_resize_bilinear(const float *x, int c, int h, int w, int oh, int ow, float *y);
/* Nearest resize as torch 'nearest': src = min(floor(dst*in/out), in-1). */
void insp_ops_resize_nearest(const float *x, int c, int h, int w, int oh, int ow, float *y);

/* Gaussian taps for sigma: n = 2*(int)(4*sigma + 0.5) + 1, exp(-x^2/(2 sigma^2))
 * normalised to sum 1. Returns n; @taps must hold n floats (n <= 2*(4*sigma+0.5)+1). */
int insp_ops_gaussian_kernel(float sigma, float *taps);
/* Separable Gaussian blur of one plane x [h,w] -> y [h,w], torch 'reflect'
 * borders (mirror without repeating the edge: d c b | a b c d; clamped for
 * kernels wider than the plane). @scratch holds h*w floats. x may equal y. */
void insp_ops_gaussian_blur(const float *x, int h, int w, const float *taps, int n_taps,
                            float *scratch, float *y);

/* Squared Euclidean distance from each query row to its nearest bank row:
 * q [nq,d] against a bank of nb rows [nb,d] packed by insp_ops_nn_pack
 * (panels of INSP_OPS_NN_PANEL rows, each [d, INSP_OPS_NN_PANEL], the last
 * one padded; insp_ops_nn_packed_size(nb, d) floats), bank_sqnorm [nb]
 * (precomputed |b|^2), computed as |q|^2 + |b|^2 - 2 q.b in float, blocked
 * so that no [nq, nb] matrix is ever written: the row minimum is kept per
 * query while the products are made; clamped at 0. Writes min_d2 [nq] and,
 * when non-NULL, argmin [nq] (ties: the lowest bank index). @scratch holds
 * insp_ops_nn_scratch_size(nq) floats (bounded whatever nq). Single-
 * threaded; compiled for AVX-512, AVX2 and the baseline. */
#define INSP_OPS_NN_PANEL 16
gsize insp_ops_nn_packed_size(int nb, int d);
void insp_ops_nn_pack(const float *bank, int nb, int d, float *packed);
gsize insp_ops_nn_scratch_size(int nq);
void insp_ops_nearest_neighbour(const float *q, int nq, const float *packed,
                                const float *bank_sqnorm, int nb, int d, float *scratch,
                                float *min_d2, int *argmin);
/* The same with |q|^2 given (q_sqnorm [nq]; NULL: computed from q), for a
 * metric other than the rows' own (the coreset's projected distances). */
void insp_ops_nearest_neighbour_with_norms(const float *q, int nq, const float *q_sqnorm,
                                           const float *packed, const float *bank_sqnorm, int nb,
                                           int d, float *scratch, float *min_d2, int *argmin);

/* OpenBLAS threads for this process (1 when workers parallelise across frames). */
void insp_ops_set_blas_threads(int n);
int insp_ops_get_blas_threads(void);

G_END_DECLS
