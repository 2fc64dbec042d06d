/* The seeded generators of model/ (insp-random.c). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* splitmix64: the documented generator (stable across platforms and GLib
 * versions) of the hold-out split. */
guint64 insp_detector_rand_next(guint64 *state);
double insp_detector_rand_uniform(guint64 *state); /* [0, 1) */

/* MT19937 (Matsumoto & Nishimura 1998), 32-bit, seeded by init_genrand:
 * the generator of PyTorch's CPU torch.Generator. */
typedef struct {
  guint32 state[624];
  int next; /* index of the next untempered word; 624 = regenerate */
} InspMt19937;
void insp_mt19937_init(InspMt19937 *mt, guint32 seed);
guint32 insp_mt19937_next(InspMt19937 *mt);
G_END_DECLS
