/* insp-regions: from an anomaly map to the defect mask, the defect regions
 * and the verdict (insp_inspect, documented in insp-model.h).
 *
 * Steps: nothing but a cleared mask when the map stays under the pixel
 * threshold (below), else bilinear upsample of the map to the image into
 * @work (the same kernel as the anomaly map), threshold inside the ROI into
 * @mask, then
 * 8-connected components by an iterative scanline flood fill. While a
 * component is being collected its pixels carry MARK_FILL; once its size is
 * known a second fill turns them into 255 (kept) or 0 (dropped), so the mask
 * is final without another pass over the image. The fill stack holds runs
 * (one seed per run of a neighbouring row); it lives on the C stack up to
 * STACK_INLINE entries and only grows on the heap for pathological masks.
 *
 * Invariant on return: @mask holds only 0 and 255, every 255 pixel belongs
 * to exactly one appended region, and regions are in raster order of their
 * first pixel. Any thread may enter; @work and @mask are the caller's. */
#include "insp-model.h"
#include "insp-ops.h"

#include <math.h>
#include <string.h>

enum {
  MARK_NONE = 0,
  MARK_FG = 1,   /* above threshold, not yet visited */
  MARK_FILL = 2, /* in the component being collected */
  MARK_KEEP = 255,
};

#define STACK_INLINE 4096

typedef struct {
  int x, y;
} Seed;

typedef struct {
  Seed *items;
  gsize len, cap;
  Seed *heap; /* non-NULL once grown past the inline array */
} SeedStack;

static inline void
stack_push(SeedStack *s, int x, int y)
{
  if (G_UNLIKELY(s->len == s->cap)) {
    gsize cap = s->cap * 2;
    Seed *n = g_new(Seed, cap);
    memcpy(n, s->items, s->len * sizeof(Seed));
    g_free(s->heap);
    s->heap = s->items = n;
    s->cap = cap;
  }
  s->items[s->len].x = x;
  s->items[s->len].y = y;
  s->len++;
}

typedef struct {
  guint8 *mask;
  const float *value;
  int w, h;
  int x0, y0, x1, y1; /* bounding box, inclusive */
  int area;
  float max;
} Fill;

/* Runs are scanned 8 pixels at a time: a word of 8 mask bytes XOR @v
 * repeated is zero while the run goes on, and its lowest (or, going left,
 * highest) nonzero byte is where the run ends. */
#define BYTES8(v) (G_GUINT64_CONSTANT(0x0101010101010101) * (v))

/* The first x in [x, end) whose pixel is not @v; end when there is none. */
static inline int
run_end(const guint8 *row, int x, int end, guint8 v)
{
  for (; x + 8 <= end; x += 8) {
    guint64 d;

    memcpy(&d, row + x, 8);
    d ^= BYTES8(v);
    if (d != 0)
      return x + (G_BYTE_ORDER == G_LITTLE_ENDIAN ? __builtin_ctzll(d) : __builtin_clzll(d)) / 8;
  }
  while (x < end && row[x] == v)
    x++;
  return x;
}

/* The lowest a <= x with every pixel of [a, x) @v. */
static inline int
run_start(const guint8 *row, int x, guint8 v)
{
  for (; x >= 8; x -= 8) {
    guint64 d;

    memcpy(&d, row + x - 8, 8);
    d ^= BYTES8(v);
    if (d != 0)
      return x - (G_BYTE_ORDER == G_LITTLE_ENDIAN ? __builtin_clzll(d) : __builtin_ctzll(d)) / 8;
  }
  while (x > 0 && row[x - 1] == v)
    x--;
  return x;
}

/* The first x in [x, end) whose pixel is @v; end when there is none. A byte
 * of d = word ^ v is zero where the pixel is v: (d - 0x01..) & ~d & 0x80..
 * marks the lowest such byte exactly (those above it may be marked falsely,
 * which the lowest mark does not see). */
static inline int
run_find(const guint8 *row, int x, int end, guint8 v)
{
  if (G_BYTE_ORDER == G_LITTLE_ENDIAN)
    for (; x + 8 <= end; x += 8) {
      guint64 d, z;

      memcpy(&d, row + x, 8);
      d ^= BYTES8(v);
      z = (d - BYTES8(0x01)) & ~d & BYTES8(0x80);
      if (z != 0)
        return x + __builtin_ctzll(z) / 8;
    }
  while (x < end && row[x] != v)
    x++;
  return x;
}

/* Pushes one seed for each run of @from pixels of row @y within [xa, xb]. */
static inline void
push_runs(SeedStack *st, const guint8 *row, int y, int xa, int xb, guint8 from)
{
  int x = xa;
  while (x <= xb) {
    x = run_find(row, x, xb + 1, from);
    if (x > xb)
      break;
    stack_push(st, x, y);
    x = run_end(row, x, xb + 1, from);
  }
}

/* The largest of @m and v[a..b] (no NaN: only pixels at or above the
 * threshold are in a run), in 16 lanes. */
typedef float MaxVec __attribute__((vector_size(64), aligned(4), may_alias));
typedef gint32 MaxIvec __attribute__((vector_size(64), aligned(4), may_alias));

static inline float
run_max(const float *v, int a, int b, float m)
{
  int x = a;

  if (b - a + 1 >= 16) {
    MaxVec acc = *(const MaxVec *)(v + a);

    for (x = a + 16; x + 16 <= b + 1; x += 16) {
      MaxVec t = *(const MaxVec *)(v + x);
      MaxIvec gt = acc > t;

      acc = (MaxVec)(((MaxIvec)acc & gt) | ((MaxIvec)t & ~gt));
    }
    for (int l = 0; l < 16; l++)
      m = MAX(m, acc[l]);
  }
  for (; x <= b; x++)
    m = MAX(m, v[x]);
  return m;
}

/* Scanline fill of the 8-connected component of (sx, sy) from value @from to
 * @to; with @f->value set, collects bbox, area and max of the component. */
static void
fill(Fill *f, SeedStack *st, int sx, int sy, guint8 from, guint8 to, gboolean collect)
{
  const int w = f->w, h = f->h;
  st->len = 0;
  stack_push(st, sx, sy);
  while (st->len > 0) {
    Seed s = st->items[--st->len];
    guint8 *row = f->mask + (gsize)s.y * w;
    if (row[s.x] != from)
      continue;
    int a = run_start(row, s.x, from), b = run_end(row, s.x + 1, w, from) - 1;

    memset(row + a, to, (gsize)(b - a + 1));
    if (collect) {
      f->max = run_max(f->value + (gsize)s.y * w, a, b, f->max);
      f->area += b - a + 1;
      f->x0 = MIN(f->x0, a);
      f->x1 = MAX(f->x1, b);
      f->y0 = MIN(f->y0, s.y);
      f->y1 = MAX(f->y1, s.y);
    }
    /* 8-connectivity: the neighbouring rows from a-1 to b+1 */
    int xa = MAX(a - 1, 0), xb = MIN(b + 1, w - 1);
    if (s.y > 0)
      push_runs(st, row - w, s.y - 1, xa, xb, from);
    if (s.y < h - 1)
      push_runs(st, row + w, s.y + 1, xa, xb, from);
  }
}

gboolean
insp_inspect(const float *map, int map_w, int map_h, float score, int width, int height,
             const InspInspectParams *params, float *work, guint8 *mask, GArray *regions)
{
  g_return_val_if_fail(map != NULL && map_w > 0 && map_h > 0, TRUE);
  g_return_val_if_fail(width > 0 && height > 0 && params != NULL, TRUE);
  g_return_val_if_fail(work != NULL && mask != NULL, TRUE);
  g_return_val_if_fail(regions == NULL || g_array_get_element_size(regions) == sizeof(InspRegion),
                       TRUE);

  /* A part whose map stays under the pixel threshold everywhere (most of a
   * line's parts) has no region, whatever the ROI: the upsampled values are
   * convex combinations of the map's, so none exceeds its maximum by more
   * than rounding (a few ulps; 1e-5 relative here). The upsampling and the
   * threshold pass, the per-part cost that grows with the camera's pixels,
   * are then skipped. */
  {
    float top = -INFINITY;
    for (gsize i = 0; i < (gsize)map_w * map_h; i++)
      top = map[i] > top ? map[i] : top;
    if (top + fabsf(top) * 1e-5f < params->pixel_threshold) {
      memset(mask, MARK_NONE, (gsize)width * height);
      return score >= params->threshold;
    }
  }

  insp_ops_resize_bilinear(map, 1, map_h, map_w, height, width, work);

  /* ROI clipped to the image; empty when it misses the image. */
  int rx0 = 0, ry0 = 0, rx1 = width, ry1 = height; /* half-open */
  if (params->has_roi) {
    gint64 ax = params->roi.x, ay = params->roi.y;
    gint64 bx = ax + MAX(params->roi.w, 0), by = ay + MAX(params->roi.h, 0);
    rx0 = (int)CLAMP(ax, 0, width);
    ry0 = (int)CLAMP(ay, 0, height);
    rx1 = (int)CLAMP(bx, 0, width);
    ry1 = (int)CLAMP(by, 0, height);
  }

  const float pt = params->pixel_threshold;
  gboolean any = FALSE;
  for (int y = 0; y < height; y++) {
    guint8 *m = mask + (gsize)y * width;
    if (y < ry0 || y >= ry1 || rx0 >= rx1) {
      memset(m, MARK_NONE, (gsize)width);
      continue;
    }
    const float *v = work + (gsize)y * width;
    guint8 acc = 0;
    memset(m, MARK_NONE, (gsize)rx0);
    for (int x = rx0; x < rx1; x++) {
      m[x] = v[x] >= pt ? MARK_FG : MARK_NONE;
      acc |= m[x];
    }
    memset(m + rx1, MARK_NONE, (gsize)(width - rx1));
    any |= acc != 0;
  }

  int kept = 0;
  if (any) {
    Seed inline_items[STACK_INLINE];
    SeedStack st = {inline_items, 0, STACK_INLINE, NULL};
    Fill f = {mask, work, width, height, 0, 0, 0, 0, 0, 0.0f};
    for (int y = ry0; y < ry1; y++) {
      const guint8 *m = mask + (gsize)y * width;
      for (int x = rx0; x < rx1; x++) {
        const guint8 *hit = memchr(m + x, MARK_FG, (gsize)(rx1 - x));
        if (!hit)
          break;
        x = (int)(hit - m);
        f.x0 = f.x1 = x;
        f.y0 = f.y1 = y;
        f.area = 0;
        f.max = work[(gsize)y * width + x];
        fill(&f, &st, x, y, MARK_FG, MARK_FILL, TRUE);
        gboolean keep = f.area >= params->min_region_area;
        fill(&f, &st, x, y, MARK_FILL, keep ? MARK_KEEP : MARK_NONE, FALSE);
        if (!keep)
          continue;
        kept++;
        if (regions) {
          InspRegion r = {f.x0, f.y0, f.x1 - f.x0 + 1, f.y1 - f.y0 + 1, f.area, f.max};
          g_array_append_val(regions, r);
        }
      }
    }
    g_free(st.heap);
  }
  return score >= params->threshold || kept > 0;
}
