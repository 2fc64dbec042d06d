/* The PatchCore coreset by its definition, for test-detector and
 * bench-coreset to check the fast selection against: anomalib's
 * KCenterGreedy as a brute-force loop in double precision, sklearn's sparse
 * projection applied naively, and torch.randint's start row. Slow on
 * purpose (O(k N d)). */
#pragma once

#include <glib.h>

/* k selections from start (a centre, not selected) over x [n, d] into out [k]. */
void insp_test_greedy_coreset(const float *x, gsize n, int d, gsize k, gsize start, gsize *out);
/* x [n, d] times sklearn's sparse random matrix for @seed (d -> d dims),
 * accumulated in double: a new array [n, d]. */
float *insp_test_project(const float *x, gsize n, int d, guint32 seed);
/* torch.randint(n, (1,)) from a generator seeded with @seed. */
gsize insp_test_torch_start(guint32 seed, gsize n);
