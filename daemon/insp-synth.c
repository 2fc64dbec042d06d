/* insp-synth: renders synthetic parts (a machined flange) with and without
 * defects, and their ground-truth masks, from a seed.
 *
 * Invariants: every pixel is a pure function of (seed, kind, width, height);
 * the random stream is our own splitmix64, not GRand or rand(), so images do
 * not change with the GLib version or the platform. All geometry scales with
 * min(width, height). A defect's mask is never empty: each defect is placed
 * on solid metal and its mask holds the pixels it changed by more than half.
 * No shared state: any thread may call any function. */
#include "insp-synth.h"

#include <errno.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <math.h>

/* The quark name is dashed; clang-format would split it into "a - b". */
/* clang-format off */
G_DEFINE_QUARK(insp-synth-error-quark, insp_synth_error)
/* clang-format on */

#define N_BOLTS 6

static const char *const kind_names[INSP_SYNTH_N_KINDS] = {"good", "scratch", "spot", "missing"};

const char *
insp_synth_kind_to_string(InspSynthKind kind)
{
  if ((int)kind < 0 || kind >= INSP_SYNTH_N_KINDS)
    return NULL;
  return kind_names[kind];
}

gboolean
insp_synth_kind_from_string(const char *name, InspSynthKind *kind)
{
  g_return_val_if_fail(kind != NULL, FALSE);
  if (name == NULL)
    return FALSE;
  for (int k = 0; k < INSP_SYNTH_N_KINDS; k++) {
    if (g_str_equal(name, kind_names[k])) {
      *kind = (InspSynthKind)k;
      return TRUE;
    }
  }
  return FALSE;
}

static guint64
mix64(guint64 z)
{
  z = (z ^ (z >> 30)) * G_GUINT64_CONSTANT(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * G_GUINT64_CONSTANT(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

typedef struct {
  guint64 state;
} Rng;

static guint64
rng_next(Rng *r)
{
  r->state += G_GUINT64_CONSTANT(0x9e3779b97f4a7c15);
  return mix64(r->state);
}

/* Uniform in [lo, hi). */
static double
rng_range(Rng *r, double lo, double hi)
{
  return lo + (hi - lo) * ((double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0));
}

/* Per-pixel noise in [-1, 1), triangular: a hash of (seed, x, y, channel). */
static double
pixel_noise(guint64 seed, int x, int y, int c)
{
  guint64 h = mix64(seed ^ ((guint64)(guint32)x << 32 | (guint32)y) ^ ((guint64)c << 61));
  double a = (double)(h & 0xffffffu) / 16777216.0;
  double b = (double)((h >> 32) & 0xffffffu) / 16777216.0;
  return a + b - 1.0;
}

static double
clamp01(double v)
{
  return v < 0.0 ? 0.0 : (v > 1.0 ? 1.0 : v);
}

/* Coverage of a pixel centre at signed distance @d (negative inside). */
static double
coverage(double d)
{
  return clamp01(0.5 - d);
}

static double
segment_distance(double px, double py, double ax, double ay, double bx, double by)
{
  double vx = bx - ax, vy = by - ay;
  double len2 = vx * vx + vy * vy;
  double t = len2 > 0.0 ? ((px - ax) * vx + (py - ay) * vy) / len2 : 0.0;
  t = t < 0.0 ? 0.0 : (t > 1.0 ? 1.0 : t);
  double dx = px - (ax + t * vx), dy = py - (ay + t * vy);
  return sqrt(dx * dx + dy * dy);
}

typedef struct {
  double cx, cy, radius, bore, bolt_ring, bolt_r, bolt_phase;
  double gain, light_x, light_y, ring_period;
  int missing_bolt; /* -1: all drilled */
  gboolean notch;
  double notch_x, notch_y, notch_r;
  gboolean scratch;
  double sx0, sy0, sx1, sy1, sx2, sy2, s_half_width, s_delta;
  gboolean spot;
  double spot_x, spot_y, spot_a, spot_b, spot_angle, spot_wobble, spot_phase, spot_dark;
  guint64 noise_seed;
} Part;

/* A point on solid metal between the bore and the bolt ring, away from holes. */
static void
pick_face_point(Rng *r, const Part *p, double *x, double *y)
{
  double rad =
      rng_range(r, p->bore + 0.35 * (p->bolt_ring - p->bore), p->bolt_ring - 1.6 * p->bolt_r);
  double ang = rng_range(r, 0.0, 2.0 * G_PI);
  *x = p->cx + rad * cos(ang);
  *y = p->cy + rad * sin(ang);
}

static void
part_plan(Part *p, guint64 seed, InspSynthKind kind, int width, int height)
{
  Rng r = {mix64(seed ^ G_GUINT64_CONSTANT(0x5eed5eed5eed5eed))};
  double s = MIN(width, height);

  p->cx = width / 2.0 + rng_range(&r, -0.03, 0.03) * s;
  p->cy = height / 2.0 + rng_range(&r, -0.03, 0.03) * s;
  p->radius = s * 0.38 * rng_range(&r, 0.99, 1.01);
  p->bore = s * 0.10;
  p->bolt_ring = s * 0.27;
  p->bolt_r = MAX(s * 0.035, 1.5);
  p->bolt_phase = rng_range(&r, -0.05, 0.05);
  p->gain = rng_range(&r, 0.94, 1.06);
  double la = rng_range(&r, -2.6, -2.0);
  p->light_x = cos(la);
  p->light_y = sin(la);
  p->ring_period = MAX(s * 0.014, 1.7);
  p->noise_seed = mix64(seed ^ G_GUINT64_CONSTANT(0xa5a5a5a5deadbeef));
  p->missing_bolt = -1;

  /* A defect's own draws come after the common ones, so a good part and a
   * defective part of the same seed share position and lighting. */
  switch (kind) {
  case INSP_SYNTH_SCRATCH: {
    p->scratch = TRUE;
    pick_face_point(&r, p, &p->sx0, &p->sy0);
    double ang = rng_range(&r, 0.0, 2.0 * G_PI);
    double len = s * rng_range(&r, 0.10, 0.18);
    double bend = rng_range(&r, -0.35, 0.35);
    p->sx1 = p->sx0 + len * cos(ang);
    p->sy1 = p->sy0 + len * sin(ang);
    p->sx2 = p->sx1 + len * 0.6 * cos(ang + bend);
    p->sy2 = p->sy1 + len * 0.6 * sin(ang + bend);
    p->s_half_width = MAX(s * 0.008, 1.0);
    p->s_delta = (rng_next(&r) & 1) ? rng_range(&r, 70, 95) : -rng_range(&r, 75, 100);
    break;
  }
  case INSP_SYNTH_SPOT:
    p->spot = TRUE;
    pick_face_point(&r, p, &p->spot_x, &p->spot_y);
    p->spot_a = MAX(s * rng_range(&r, 0.035, 0.06), 2.0);
    p->spot_b = p->spot_a * rng_range(&r, 0.55, 0.95);
    p->spot_angle = rng_range(&r, 0.0, G_PI);
    p->spot_wobble = rng_range(&r, 0.10, 0.25);
    p->spot_phase = rng_range(&r, 0.0, 2.0 * G_PI);
    p->spot_dark = rng_range(&r, 0.40, 0.55);
    break;
  case INSP_SYNTH_MISSING:
    if (rng_next(&r) & 1) {
      p->missing_bolt = (int)(rng_next(&r) % N_BOLTS);
    } else {
      double ang = rng_range(&r, 0.0, 2.0 * G_PI);
      p->notch = TRUE;
      p->notch_r = MAX(s * rng_range(&r, 0.06, 0.08), 2.5);
      p->notch_x = p->cx + p->radius * cos(ang);
      p->notch_y = p->cy + p->radius * sin(ang);
    }
    break;
  case INSP_SYNTH_GOOD:
  case INSP_SYNTH_N_KINDS:
  default:
    break;
  }
}

/* Metal coverage of the pixel centre (px, py): the disc minus the bore and the
 * drilled holes, and minus the notch when @with_defect. */
static double
metal_coverage(const Part *p, double px, double py, gboolean with_defect, double *r_out)
{
  double dx = px - p->cx, dy = py - p->cy;
  double r = sqrt(dx * dx + dy * dy);
  double a = coverage(r - p->radius) * (1.0 - coverage(r - p->bore));

  *r_out = r;
  if (a <= 0.0)
    return 0.0;
  for (int b = 0; b < N_BOLTS; b++) {
    if (with_defect && b == p->missing_bolt)
      continue;
    double ang = p->bolt_phase + b * (2.0 * G_PI / N_BOLTS);
    double hx = p->cx + p->bolt_ring * cos(ang), hy = p->cy + p->bolt_ring * sin(ang);
    double hd = sqrt((px - hx) * (px - hx) + (py - hy) * (py - hy));
    a *= 1.0 - coverage(hd - p->bolt_r);
  }
  if (with_defect && p->notch) {
    double nd = sqrt((px - p->notch_x) * (px - p->notch_x) + (py - p->notch_y) * (py - p->notch_y));
    a *= 1.0 - coverage(nd - p->notch_r);
  }
  return a;
}

static double
spot_weight(const Part *p, double px, double py)
{
  double dx = px - p->spot_x, dy = py - p->spot_y;
  double c = cos(p->spot_angle), sn = sin(p->spot_angle);
  double u = dx * c + dy * sn, v = -dx * sn + dy * c;
  double theta = atan2(v, u);
  double edge = 1.0 + p->spot_wobble * sin(3.0 * theta + p->spot_phase) +
                0.5 * p->spot_wobble * sin(5.0 * theta + 2.0 * p->spot_phase);
  double q = sqrt((u / p->spot_a) * (u / p->spot_a) + (v / p->spot_b) * (v / p->spot_b));
  /* Signed distance in pixels, roughly: (q - edge) times the mean radius. */
  return coverage((q - edge) * 0.5 * (p->spot_a + p->spot_b));
}

static void
render(const Part *p, InspImage *img, InspImage *mask)
{
  const double bg[3] = {38.0, 42.0, 48.0};
  const double tint[3] = {1.0, 1.0, 1.04};
  const double rust[3] = {18.0, -4.0, -22.0};
  double s = MIN(img->width, img->height);

  for (int y = 0; y < img->height; y++) {
    guint8 *row = img->data + (gsize)y * img->stride;
    guint8 *mrow = mask ? mask->data + (gsize)y * mask->stride : NULL;
    for (int x = 0; x < img->width; x++) {
      double px = x + 0.5, py = y + 0.5, r;
      double clean = metal_coverage(p, px, py, FALSE, &r);
      double metal =
          (p->missing_bolt >= 0 || p->notch) ? metal_coverage(p, px, py, TRUE, &r) : clean;
      double dx = px - p->cx, dy = py - p->cy;
      double shade = 0.0, scratch = 0.0, spot = 0.0;
      gboolean defect = fabs(metal - clean) > 0.5;

      if (metal > 0.0) {
        double lit = (dx * p->light_x + dy * p->light_y) / p->radius;
        double chamfer = clamp01(1.0 - (p->radius - r) / (0.03 * s));
        double bore_edge = clamp01(1.0 - (r - p->bore) / (0.02 * s));
        shade = 158.0 * p->gain + 26.0 * lit + 5.0 * sin(2.0 * G_PI * r / p->ring_period) -
                30.0 * chamfer - 22.0 * bore_edge;
        if (p->scratch) {
          double d = MIN(segment_distance(px, py, p->sx0, p->sy0, p->sx1, p->sy1),
                         segment_distance(px, py, p->sx1, p->sy1, p->sx2, p->sy2));
          scratch = coverage(d - p->s_half_width) * metal;
          defect = defect || scratch > 0.5;
        }
        if (p->spot) {
          spot = spot_weight(p, px, py) * metal;
          defect = defect || spot > 0.5;
        }
      }
      double vignette = 1.0 - 0.12 * (dx * dx + dy * dy) / (s * s);
      for (int c = 0; c < 3; c++) {
        double back = bg[c] * vignette + 3.0 * pixel_noise(p->noise_seed, x, y, c);
        double m = shade * tint[c] + 7.0 * pixel_noise(p->noise_seed, x, y, 3) +
                   2.0 * pixel_noise(p->noise_seed, x, y, c);
        m += scratch * p->s_delta;
        m = m * (1.0 - spot * (1.0 - p->spot_dark)) + spot * rust[c];
        double v = metal * m + (1.0 - metal) * back;
        row[x * 3 + c] = (guint8)CLAMP(lround(v), 0, 255);
      }
      if (mrow)
        mrow[x] = defect ? 255 : 0;
    }
  }
}

gboolean
insp_synth_part(guint64 seed, InspSynthKind kind, int width, int height, InspImage **img,
                InspImage **mask, GError **error)
{
  g_return_val_if_fail(img != NULL, FALSE);
  g_return_val_if_fail((int)kind >= 0 && kind < INSP_SYNTH_N_KINDS, FALSE);
  g_return_val_if_fail(error == NULL || *error == NULL, FALSE);

  if (width < INSP_SYNTH_MIN_SIZE || height < INSP_SYNTH_MIN_SIZE || width > INSP_SYNTH_MAX_SIZE ||
      height > INSP_SYNTH_MAX_SIZE) {
    g_set_error(error, INSP_SYNTH_ERROR, INSP_SYNTH_ERROR_SIZE,
                "synthetic part size %dx%d is outside %d..%d pixels", width, height,
                INSP_SYNTH_MIN_SIZE, INSP_SYNTH_MAX_SIZE);
    return FALSE;
  }

  Part p = {0};
  part_plan(&p, seed, kind, width, height);
  g_autoptr(InspImage) out = insp_image_new(width, height, 3);
  g_autoptr(InspImage) m = insp_image_new(width, height, 1);
  render(&p, out, m);

  *img = g_steal_pointer(&out);
  if (mask)
    *mask = g_steal_pointer(&m);
  return TRUE;
}

InspSynthKind
insp_synth_line_kind(guint64 index, guint defect_every)
{
  if (defect_every == 0 || index % defect_every != defect_every - 1)
    return INSP_SYNTH_GOOD;
  return (InspSynthKind)(INSP_SYNTH_SCRATCH + (index / defect_every) % 3);
}

guint64
insp_synth_line_seed(guint64 line_seed, guint64 index)
{
  return mix64(line_seed * G_GUINT64_CONSTANT(0x100000001b3) + index);
}

static gboolean
make_dir(const char *path, GError **error)
{
  if (g_mkdir_with_parents(path, 0755) != 0) {
    int e = errno;
    g_set_error(error, INSP_SYNTH_ERROR, INSP_SYNTH_ERROR_IO, "cannot create %s: %s", path,
                g_strerror(e));
    return FALSE;
  }
  return TRUE;
}

static gboolean
write_set(const char *dir, const char *split, InspSynthKind kind, int n, int size, guint64 seed,
          GError **error)
{
  const char *name = insp_synth_kind_to_string(kind);
  g_autofree char *img_dir = g_build_filename(dir, split, name, NULL);
  g_autofree char *gt_dir = g_build_filename(dir, "ground_truth", name, NULL);

  if (!make_dir(img_dir, error))
    return FALSE;
  if (kind != INSP_SYNTH_GOOD && !make_dir(gt_dir, error))
    return FALSE;
  for (int i = 0; i < n; i++) {
    g_autoptr(InspImage) img = NULL;
    g_autoptr(InspImage) mask = NULL;
    g_autofree char *stem = g_strdup_printf("%03d", i);
    g_autofree char *file = g_strdup_printf("%s.png", stem);
    g_autofree char *img_path = g_build_filename(img_dir, file, NULL);
    guint64 part_seed = mix64(
        seed ^ mix64(((guint64)kind << 40) ^ ((guint64)(split[1] == 'r') << 32) ^ (guint64)i));

    if (!insp_synth_part(part_seed, kind, size, size, &img, &mask, error))
      return FALSE;
    if (!insp_image_save_png(img, img_path, error))
      return FALSE;
    if (kind != INSP_SYNTH_GOOD) {
      g_autofree char *mfile = g_strdup_printf("%s_mask.png", stem);
      g_autofree char *mask_path = g_build_filename(gt_dir, mfile, NULL);
      if (!insp_image_save_png(mask, mask_path, error))
        return FALSE;
    }
  }
  return TRUE;
}

gboolean
insp_synth_write_dataset(const char *dir, int size, int n_train, int n_test_good, int n_test_defect,
                         guint64 seed, GError **error)
{
  g_return_val_if_fail(dir != NULL, FALSE);
  g_return_val_if_fail(n_train >= 0 && n_test_good >= 0 && n_test_defect >= 0, FALSE);

  if (!write_set(dir, "train", INSP_SYNTH_GOOD, n_train, size, seed, error))
    return FALSE;
  if (!write_set(dir, "test", INSP_SYNTH_GOOD, n_test_good, size, seed, error))
    return FALSE;
  for (int k = INSP_SYNTH_SCRATCH; k < INSP_SYNTH_N_KINDS; k++) {
    if (!write_set(dir, "test", (InspSynthKind)k, n_test_defect, size, seed, error))
      return FALSE;
  }
  return TRUE;
}
