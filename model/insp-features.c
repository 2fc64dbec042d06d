/* insp-features: turns two backbone stage outputs into the patch-feature
 * matrix the detectors work on, [P, D] with P = h*w positions of the finer
 * stage in row-major (y, x) order and D channels, one row per patch.
 *
 * PatchCore (Roth et al.; anomalib): 3x3 average pool (stride 1, pad 1, border
 * cells divide by 9) on each stage, coarser stage bilinearly upsampled
 * (align_corners False) to the finer grid, channels concatenated [fine,
 * coarse], optionally reduced to reduce_dim by adaptive averaging over the
 * channel axis (torch adaptive_avg_pool1d windows). PaDiM (Defard et al.): no
 * averaging, nearest upsampling, concatenation, optional sorted channel subset.

 *
 * Invariants: pure functions of their inputs; no allocation; any thread. */
#include "insp-kernels.h"
#include "insp-ops.h"

#include <string.h>

int
insp_features_get_dim(const InspFeatureSpec *spec)
{
  int c = spec->fine_c + spec->coarse_c;

  if (spec->patchcore && spec->reduce_dim > 0 && spec->reduce_dim < c)
    return spec->reduce_dim;
  if (!spec->patchcore && spec->n_channels > 0)
    return spec->n_channels;
  return c;
}

gsize
insp_features_scratch_size(const InspFeatureSpec *spec)
{
  gsize p = (gsize)spec->h * spec->w;
  gsize c = (gsize)(spec->fine_c + spec->coarse_c);

  /* [coarse pooled at its grid | concatenation CHW] */
  return (gsize)spec->coarse_c * spec->ch * spec->cw + c * p;
}

/* Transposes cat [c, p] into out [p, dim] with the reduction or subset. */
static void
to_patch_rows(const InspFeatureSpec *spec, const float *cat, int c, int p, float *out)
{
  int dim = insp_features_get_dim(spec);

  if (spec->patchcore && dim < c) {
    /* adaptive_avg_pool1d over channels: window [floor(i*c/dim), ceil((i+1)*c/dim)) */
    for (int i = 0; i < dim; i++) {
      int lo = (int)(((gint64)i * c) / dim);
      int hi = (int)((((gint64)i + 1) * c + dim - 1) / dim);
      float inv = 1.0f / (float)(hi - lo);

      for (int q = 0; q < p; q++)
        out[(gsize)q * dim + i] = 0.0f;
      for (int ch = lo; ch < hi; ch++) {
        const float *src = cat + (gsize)ch * p;

        for (int q = 0; q < p; q++)
          out[(gsize)q * dim + i] += src[q];
      }
      for (int q = 0; q < p; q++)
        out[(gsize)q * dim + i] *= inv;
    }
    return;
  }
  /* Blocked transpose: 32 positions at a time keep the writes in cache. */
  for (int q0 = 0; q0 < p; q0 += 32) {
    int q1 = MIN(q0 + 32, p);

    for (int i = 0; i < dim; i++) {
      int ch = (!spec->patchcore && spec->n_channels > 0) ? spec->channels[i] : i;
      const float *src = cat + (gsize)ch * p;

      for (int q = q0; q < q1; q++)
        out[(gsize)q * dim + i] = src[q];
    }
  }
}

void
insp_features_extract(const InspFeatureSpec *spec, const float *fine, const float *coarse,
                      float *scratch, float *out)
{
  int p = spec->h * spec->w;
  int c = spec->fine_c + spec->coarse_c;
  float *coarse_pool = scratch;
  float *cat = coarse_pool + (gsize)spec->coarse_c * spec->ch * spec->cw;

  if (spec->patchcore) {
    int k = spec->patch_size > 0 ? spec->patch_size : INSP_PATCHCORE_PATCH_SIZE;

    insp_ops_avgpool_same(fine, spec->fine_c, spec->h, spec->w, k, cat);
    insp_ops_avgpool_same(coarse, spec->coarse_c, spec->ch, spec->cw, k, coarse_pool);
    insp_ops_resize_bilinear(coarse_pool, spec->coarse_c, spec->ch, spec->cw, spec->h, spec->w,
                             cat + (gsize)spec->fine_c * p);
  } else {
    memcpy(cat, fine, sizeof(float) * (gsize)spec->fine_c * p);
    insp_ops_resize_nearest(coarse, spec->coarse_c, spec->ch, spec->cw, spec->h, spec->w,
                            cat + (gsize)spec->fine_c * p);
  }
  to_patch_rows(spec, cat, c, p, out);
}
