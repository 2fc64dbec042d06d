/* The PatchCore coreset by its definition: see coreset-reference.h. */
#include "coreset-reference.h"

#include <math.h>

#include "insp-detector-private.h"

void
insp_test_greedy_coreset(const float *x, gsize n, int d, gsize k, gsize start, gsize *out)
{
  g_autofree double *md = g_new(double, n);
  gsize last = start;

  for (gsize i = 0; i < n; i++)
    md[i] = G_MAXDOUBLE;
  for (gsize t = 0; t < k; t++) {
    gsize best = 0;

    for (gsize i = 0; i < n; i++) {
      double s = 0;

      for (int j = 0; j < d; j++) {
        double v = (double)x[i * d + j] - x[last * d + j];

        s += v * v;
      }
      md[i] = MIN(md[i], sqrt(s));
      if (md[i] > md[best])
        best = i;
    }
    out[t] = best;
    md[best] = 0.0;
    last = best;
  }
}

float *
insp_test_project(const float *x, gsize n, int d, guint32 seed)
{
  g_autofree float *r = g_new(float, (gsize)d *d);
  float *xp = g_new(float, n *d);

  insp_sklearn_sparse_random_matrix(d, d, seed, r);
  for (gsize i = 0; i < n; i++)
    for (int oc = 0; oc < d; oc++) {
      double acc = 0;

      for (int j = 0; j < d; j++)
        acc += (double)x[i * d + j] * r[(gsize)j * d + oc];
      xp[i * d + oc] = (float)acc;
    }
  return xp;
}

gsize
insp_test_torch_start(guint32 seed, gsize n)
{
  InspMt19937 mt;

  insp_mt19937_init(&mt, seed);
  return (gsize)(insp_mt19937_next(&mt) % (guint64)n);
}
