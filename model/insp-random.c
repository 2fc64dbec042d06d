/* insp-random: the seeded generators of model/, each in one place.
 *
 * splitmix64 (Steele, Lea, Flood 2014) draws the hold-out split and whatever
 * else needs a documented generator that gives the same numbers on every
 * platform and GLib version. MT19937 (Matsumoto & Nishimura 1998) is there
 * to reproduce PyTorch's and numpy's streams bit for bit: PaDiM's channel
 * subset (torch.randperm), the coreset's start row (torch.randint) and
 * sklearn's sparse random projection (numpy's legacy RandomState).
 *
 * Invariants: pure functions of the state; no allocation; any thread (one
 * state per thread). */
#include "insp-random.h"

guint64
insp_detector_rand_next(guint64 *state)
{
  guint64 z = (*state += G_GUINT64_CONSTANT(0x9E3779B97F4A7C15));

  z = (z ^ (z >> 30)) * G_GUINT64_CONSTANT(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * G_GUINT64_CONSTANT(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

double
insp_detector_rand_uniform(guint64 *state)
{
  return (double)(insp_detector_rand_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

#define MT_N 624
#define MT_M 397
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu
#define MT_MATRIX_A 0x9908b0dfu

void
insp_mt19937_init(InspMt19937 *mt, guint32 seed)
{
  g_return_if_fail(mt != NULL);
  mt->state[0] = seed;
  for (guint32 i = 1; i < MT_N; i++) {
    guint32 prev = mt->state[i - 1];

    mt->state[i] = 1812433253u * (prev ^ (prev >> 30)) + i;
  }
  mt->next = MT_N;
}

/* Regenerates all MT_N words: each is the twist of its upper bit and the next
 * word's lower 31 bits, xored with the word MT_M places on (mod MT_N). */
static void
mt_regenerate(InspMt19937 *mt)
{
  for (int i = 0; i < MT_N; i++) {
    guint32 y = (mt->state[i] & MT_UPPER) | (mt->state[(i + 1) % MT_N] & MT_LOWER);

    mt->state[i] = mt->state[(i + MT_M) % MT_N] ^ (y >> 1) ^ ((y & 1u) ? MT_MATRIX_A : 0u);
  }
  mt->next = 0;
}

guint32
insp_mt19937_next(InspMt19937 *mt)
{
  guint32 y;

  g_return_val_if_fail(mt != NULL, 0);
  if (mt->next >= MT_N)
    mt_regenerate(mt);
  y = mt->state[mt->next++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}
