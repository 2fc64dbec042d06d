/* model/insp-regions (insp_inspect): threshold, 8-connected regions, the
 * minimum area, the ROI, the verdict rule, the upsampling, odd sizes (1x1),
 * random masks against a naive labelling, and the speed on a 12 MP image. */
#include <glib.h>
#include <string.h>

#include "insp-model.h"
#include "insp-ops.h"

typedef struct {
  int w, h;
  float *map;
  float *work;
  guint8 *mask;
  GArray *regions;
} Case;

static Case *
case_new(int w, int h)
{
  Case *c = g_new0(Case, 1);
  c->w = w;
  c->h = h;
  c->map = g_new0(float, (gsize)w *h);
  c->work = g_new(float, (gsize)w *h);
  c->mask = g_new(guint8, (gsize)w * h);
  c->regions = g_array_new(FALSE, FALSE, sizeof(InspRegion));
  return c;
}

static void
case_free(Case *c)
{
  g_free(c->map);
  g_free(c->work);
  g_free(c->mask);
  g_array_unref(c->regions);
  g_free(c);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Case, case_free)

static void
rect(Case *c, int x, int y, int w, int h, float v)
{
  for (int j = y; j < y + h; j++)
    for (int i = x; i < x + w; i++)
      c->map[j * c->w + i] = v;
}

static InspInspectParams
params(float threshold, float pixel_threshold, int min_area)
{
  InspInspectParams p = {threshold, pixel_threshold, min_area, FALSE, {0, 0, 0, 0}};
  return p;
}

/* The mask holds only 0/255 and exactly the pixels of the regions. */
static void
check_mask(const Case *c)
{
  gsize on = 0, area = 0;
  for (gsize i = 0; i < (gsize)c->w * c->h; i++) {
    g_assert_true(c->mask[i] == 0 || c->mask[i] == 255);
    on += c->mask[i] == 255;
  }
  for (guint r = 0; r < c->regions->len; r++)
    area += (gsize)g_array_index(c->regions, InspRegion, r).area;
  g_assert_cmpuint(on, ==, area);
}

static gboolean
run(Case *c, float score, const InspInspectParams *p)
{
  g_array_set_size(c->regions, 0);
  gboolean fail =
      insp_inspect(c->map, c->w, c->h, score, c->w, c->h, p, c->work, c->mask, c->regions);
  check_mask(c);
  return fail;
}

#define REGION(c, i) (&g_array_index((c)->regions, InspRegion, (i)))

static void
test_two_blobs(void)
{
  g_autoptr(Case) c = case_new(40, 30);
  InspInspectParams p = params(0.5f, 0.5f, 1);
  rect(c, 2, 3, 5, 4, 0.7f);
  rect(c, 20, 10, 8, 9, 0.6f);
  c->map[10 * 40 + 25] = 0.9f;
  c->map[0] = 0.49f; /* just under: not a defect */

  g_assert_true(run(c, 0.1f, &p));
  g_assert_cmpuint(c->regions->len, ==, 2);
  InspRegion *a = REGION(c, 0), *b = REGION(c, 1);
  g_assert_cmpint(a->x, ==, 2);
  g_assert_cmpint(a->y, ==, 3);
  g_assert_cmpint(a->w, ==, 5);
  g_assert_cmpint(a->h, ==, 4);
  g_assert_cmpint(a->area, ==, 20);
  g_assert_cmpfloat(a->score, ==, 0.7f);
  g_assert_cmpint(b->x, ==, 20);
  g_assert_cmpint(b->y, ==, 10);
  g_assert_cmpint(b->w, ==, 8);
  g_assert_cmpint(b->h, ==, 9);
  g_assert_cmpint(b->area, ==, 72);
  g_assert_cmpfloat(b->score, ==, 0.9f);
  g_assert_cmpint(c->mask[3 * 40 + 2], ==, 255);
  g_assert_cmpint(c->mask[0], ==, 0);
}

static void
test_threshold_inclusive(void)
{
  g_autoptr(Case) c = case_new(3, 3);
  InspInspectParams p = params(0.5f, 0.5f, 1);
  c->map[4] = 0.5f; /* exactly the pixel threshold: a defect */
  g_assert_true(run(c, 0.0f, &p));
  g_assert_cmpuint(c->regions->len, ==, 1);
  g_assert_cmpint(REGION(c, 0)->area, ==, 1);
}

static void
test_diagonal_chain(void)
{
  /* A staircase touching only at corners is one 8-connected region; so is
   * an anti-diagonal. */
  g_autoptr(Case) c = case_new(20, 20);
  InspInspectParams p = params(0.5f, 0.5f, 1);
  for (int i = 0; i < 10; i++)
    c->map[i * 20 + i] = 1.0f;
  for (int i = 0; i < 8; i++)
    c->map[(2 + i) * 20 + (19 - i)] = 1.0f;
  g_assert_true(run(c, 0.0f, &p));
  g_assert_cmpuint(c->regions->len, ==, 2);
  g_assert_cmpint(REGION(c, 0)->area, ==, 10);
  g_assert_cmpint(REGION(c, 0)->w, ==, 10);
  g_assert_cmpint(REGION(c, 0)->h, ==, 10);
  g_assert_cmpint(REGION(c, 1)->area, ==, 8);
  g_assert_cmpint(REGION(c, 1)->x, ==, 12);
  g_assert_cmpint(REGION(c, 1)->y, ==, 2);
}

static void
test_u_shape(void)
{
  /* A U opening upwards, met from the top row first: two arms that join
   * below must be one region (the fill has to go back up). */
  g_autoptr(Case) c = case_new(9, 6);
  InspInspectParams p = params(0.5f, 0.5f, 1);
  rect(c, 1, 0, 1, 5, 1.0f);
  rect(c, 7, 0, 1, 5, 1.0f);
  rect(c, 1, 4, 7, 1, 1.0f);
  rect(c, 4, 1, 1, 2, 1.0f); /* an island inside the U */
  g_assert_true(run(c, 0.0f, &p));
  g_assert_cmpuint(c->regions->len, ==, 2);
  g_assert_cmpint(REGION(c, 0)->area, ==, 5 + 5 + 5);
  g_assert_cmpint(REGION(c, 1)->area, ==, 2);
}

static void
test_min_area(void)
{
  g_autoptr(Case) c = case_new(30, 30);
  InspInspectParams p = params(0.5f, 0.5f, 10);
  rect(c, 1, 1, 3, 3, 0.8f);   /* 9 pixels: dropped */
  rect(c, 10, 10, 2, 5, 0.8f); /* 10 pixels: kept */
  g_assert_true(run(c, 0.1f, &p));
  g_assert_cmpuint(c->regions->len, ==, 1);
  g_assert_cmpint(REGION(c, 0)->area, ==, 10);
  g_assert_cmpint(c->mask[2 * 30 + 2], ==, 0); /* cleared from the mask */
  g_assert_cmpint(c->mask[10 * 30 + 10], ==, 255);

  /* both dropped, score under threshold: pass */
  p.min_region_area = 11;
  g_assert_false(run(c, 0.1f, &p));
  g_assert_cmpuint(c->regions->len, ==, 0);
}

static void
test_roi(void)
{
  g_autoptr(Case) c = case_new(20, 10);
  InspInspectParams p = params(0.5f, 0.5f, 1);
  rect(c, 0, 0, 20, 10, 0.1f);
  rect(c, 4, 2, 6, 4, 0.9f); /* x 4..9, y 2..5 */
  rect(c, 15, 7, 2, 2, 0.9f);

  /* ROI x 7..11, y 0..3 cuts the first blob to x 7..9, y 2..3 */
  p.has_roi = TRUE;
  p.roi = (InspRect){7, 0, 5, 4};
  g_assert_true(run(c, 0.0f, &p));
  g_assert_cmpuint(c->regions->len, ==, 1);
  g_assert_cmpint(REGION(c, 0)->x, ==, 7);
  g_assert_cmpint(REGION(c, 0)->y, ==, 2);
  g_assert_cmpint(REGION(c, 0)->w, ==, 3);
  g_assert_cmpint(REGION(c, 0)->h, ==, 2);
  g_assert_cmpint(REGION(c, 0)->area, ==, 6);
  g_assert_cmpint(c->mask[2 * 20 + 5], ==, 0); /* outside the ROI */

  /* ROI reaching past the image is clipped */
  p.roi = (InspRect){12, 5, 100, 100};
  g_assert_true(run(c, 0.0f, &p));
  g_assert_cmpuint(c->regions->len, ==, 1);
  g_assert_cmpint(REGION(c, 0)->x, ==, 15);
  g_assert_cmpint(REGION(c, 0)->area, ==, 4);

  /* ROI outside the image, or empty: nothing; the image score still rules */
  p.roi = (InspRect){-50, -50, 10, 10};
  g_assert_false(run(c, 0.2f, &p));
  g_assert_cmpuint(c->regions->len, ==, 0);
  p.roi = (InspRect){5, 5, 0, 3};
  g_assert_true(run(c, 0.5f, &p));
  g_assert_cmpuint(c->regions->len, ==, 0);

  /* negative origin, reaching in */
  p.roi = (InspRect){-3, -3, 10, 7}; /* x 0..6, y 0..3 */
  g_assert_true(run(c, 0.0f, &p));
  g_assert_cmpuint(c->regions->len, ==, 1);
  g_assert_cmpint(REGION(c, 0)->area, ==, 3 * 2);
}

static void
test_verdict(void)
{
  g_autoptr(Case) c = case_new(8, 8);
  InspInspectParams p = params(0.5f, 0.5f, 1);

  /* no region: the image score decides, at or above the threshold fails */
  g_assert_false(run(c, 0.49f, &p));
  g_assert_true(run(c, 0.5f, &p));
  g_assert_true(run(c, 0.9f, &p));
  /* a region fails the part even with a low image score */
  c->map[9] = 0.7f;
  g_assert_true(run(c, 0.0f, &p));
  g_assert_cmpuint(c->regions->len, ==, 1);
  /* unless it is dropped by the minimum area */
  p.min_region_area = 2;
  g_assert_false(run(c, 0.0f, &p));
  /* NULL regions: only the verdict and mask */
  p.min_region_area = 1;
  g_assert_true(insp_inspect(c->map, 8, 8, 0.0f, 8, 8, &p, c->work, c->mask, NULL));
  g_assert_cmpint(c->mask[9], ==, 255);
}

static void
test_one_pixel(void)
{
  float map = 0.8f, work;
  guint8 mask = 7;
  InspInspectParams p = params(0.5f, 0.5f, 1);
  g_autoptr(GArray) regions = g_array_new(FALSE, FALSE, sizeof(InspRegion));

  g_assert_true(insp_inspect(&map, 1, 1, 0.0f, 1, 1, &p, &work, &mask, regions));
  g_assert_cmpint(mask, ==, 255);
  g_assert_cmpuint(regions->len, ==, 1);
  g_assert_cmpint(g_array_index(regions, InspRegion, 0).area, ==, 1);
  map = 0.2f;
  g_array_set_size(regions, 0);
  g_assert_false(insp_inspect(&map, 1, 1, 0.0f, 1, 1, &p, &work, &mask, regions));
  g_assert_cmpint(mask, ==, 0);
  g_assert_cmpuint(regions->len, ==, 0);

  /* a 1x1 map onto a 5x3 image: the whole image is one region */
  g_autofree float *w = g_new(float, 15);
  g_autofree guint8 *m = g_new(guint8, 15);
  map = 0.8f;
  g_assert_true(insp_inspect(&map, 1, 1, 0.0f, 5, 3, &p, w, m, regions));
  g_assert_cmpuint(regions->len, ==, 1);
  g_assert_cmpint(g_array_index(regions, InspRegion, 0).area, ==, 15);
}

static void
test_upsample(void)
{
  /* A 4x4 map with one hot cell onto 16x16: bilinear with half-pixel
   * centres spreads it over the cell's 4x4 block and its neighbours. */
  float map[16] = {0};
  map[1 * 4 + 2] = 1.0f;
  g_autofree float *work = g_new(float, 256);
  g_autofree guint8 *mask = g_new(guint8, 256);
  g_autoptr(GArray) regions = g_array_new(FALSE, FALSE, sizeof(InspRegion));
  InspInspectParams p = params(0.5f, 0.5f, 1);

  g_assert_true(insp_inspect(map, 4, 4, 0.0f, 16, 16, &p, work, mask, regions));
  g_assert_cmpuint(regions->len, ==, 1);
  InspRegion *r = &g_array_index(regions, InspRegion, 0);
  /* Source x = (x + .5)/4 - .5: pixels 8..11 weigh the hot column by .625,
   * .875, .875, .625 (rows 4..7 alike). Products >= .5: the 4x4 block minus
   * its corners (.625^2 < .5); the maximum is .875^2. */
  g_assert_cmpint(r->x, ==, 8);
  g_assert_cmpint(r->w, ==, 4);
  g_assert_cmpint(r->y, ==, 4);
  g_assert_cmpint(r->h, ==, 4);
  g_assert_cmpint(r->area, ==, 12);
  g_assert_cmpfloat(r->score, ==, 0.765625f);
  g_assert_cmpint(mask[4 * 16 + 8], ==, 0);
  g_assert_cmpint(mask[4 * 16 + 9], ==, 255);
  g_assert_cmpfloat(work[5 * 16 + 9], ==, r->score);
}

/* Naive labelling: repeated min-propagation over the 8 neighbours. */
static int
naive_count(const guint8 *on, int w, int h, int min_area, int *kept_pixels)
{
  int n = w * h;
  g_autofree int *lab = g_new(int, n);
  for (int i = 0; i < n; i++)
    lab[i] = on[i] ? i + 1 : 0;
  for (gboolean changed = TRUE; changed;) {
    changed = FALSE;
    for (int i = 0; i < n; i++) {
      if (!lab[i])
        continue;
      int x = i % w, y = i / w;
      for (int dy = -1; dy <= 1; dy++)
        for (int dx = -1; dx <= 1; dx++) {
          int xx = x + dx, yy = y + dy;
          if (xx >= 0 && yy >= 0 && xx < w && yy < h && lab[yy * w + xx] &&
              lab[yy * w + xx] < lab[i]) {
            lab[i] = lab[yy * w + xx];
            changed = TRUE;
          }
        }
    }
  }
  g_autofree int *size = g_new0(int, n + 1);
  for (int i = 0; i < n; i++)
    size[lab[i]]++;
  int count = 0;
  *kept_pixels = 0;
  for (int l = 1; l <= n; l++)
    if (size[l] >= min_area && size[l] > 0) {
      count++;
      *kept_pixels += size[l];
    }
  return count;
}

/* Each region's box, area and maximum against the naive labelling (labels
 * are the component's first pixel in raster order, the order regions come
 * in), on masks of long horizontal runs across the 8-pixel words the fill
 * scans by: every row a random sequence of runs and gaps of 1..40 pixels,
 * widths 1..200, values over the threshold random. */
static void
test_runs_vs_naive(void)
{
  g_autoptr(GRand) rng = g_rand_new_with_seed(33);

  for (int round = 0; round < 80; round++) {
    int w = g_rand_int_range(rng, 1, 201), h = g_rand_int_range(rng, 1, 31), n = w * h;
    int min_area = g_rand_int_range(rng, 0, 12), want = 0, kept = 0;
    g_autoptr(Case) c = case_new(w, h);
    g_autofree guint8 *on = g_new0(guint8, n);
    g_autofree int *lab = g_new(int, n);
    InspInspectParams p = params(2.0f, 0.5f, min_area);
    guint r = 0;

    for (int y = 0; y < h; y++) {
      gboolean fg = g_rand_boolean(rng);
      for (int x = 0; x < w;) {
        int len = g_rand_int_range(rng, 1, 41);
        for (int k = 0; k < len && x < w; k++, x++) {
          c->map[y * w + x] = fg ? (float)g_rand_double_range(rng, 0.5, 1.0) : 0.1f;
          on[y * w + x] = fg;
        }
        fg = !fg;
      }
    }
    want = naive_count(on, w, h, min_area, &kept);
    run(c, 0.0f, &p);
    g_assert_cmpuint(c->regions->len, ==, (guint)want);
    /* the labels again (naive_count keeps them to itself) */
    for (int i = 0; i < n; i++)
      lab[i] = on[i] ? i + 1 : 0;
    for (gboolean changed = TRUE; changed;) {
      changed = FALSE;
      for (int i = 0; i < n; i++)
        for (int dy = -1; lab[i] && dy <= 1; dy++)
          for (int dx = -1; dx <= 1; dx++) {
            int xx = i % w + dx, yy = i / w + dy;
            if (xx >= 0 && yy >= 0 && xx < w && yy < h && lab[yy * w + xx] &&
                lab[yy * w + xx] < lab[i]) {
              lab[i] = lab[yy * w + xx];
              changed = TRUE;
            }
          }
    }
    for (int l = 1; l <= n; l++) {
      int x0 = w, y0 = h, x1 = -1, y1 = -1, area = 0;
      float max = -1.0f;

      if (lab[l - 1] != l)
        continue; /* not a component's first pixel */
      for (int i = l - 1; i < n; i++)
        if (lab[i] == l) {
          x0 = MIN(x0, i % w), x1 = MAX(x1, i % w);
          y0 = MIN(y0, i / w), y1 = MAX(y1, i / w);
          area++;
          max = MAX(max, c->work[i]);
        }
      if (area < min_area)
        continue;
      g_assert_cmpuint(r, <, c->regions->len);
      g_assert_cmpint(REGION(c, r)->x, ==, x0);
      g_assert_cmpint(REGION(c, r)->y, ==, y0);
      g_assert_cmpint(REGION(c, r)->w, ==, x1 - x0 + 1);
      g_assert_cmpint(REGION(c, r)->h, ==, y1 - y0 + 1);
      g_assert_cmpint(REGION(c, r)->area, ==, area);
      g_assert_cmpfloat(REGION(c, r)->score, ==, max);
      r++;
    }
    g_assert_cmpuint(r, ==, c->regions->len);
  }
}

/* Maps whose maximum lies just under, at or just over the pixel threshold
 * (where insp_inspect skips the upsampling when no pixel can reach it): the
 * mask has exactly the pixels of the upsampled map at or over it, the
 * verdict follows the regions, and a map just under gives a cleared mask. */
static void
test_near_threshold(void)
{
  g_autoptr(GRand) rng = g_rand_new_with_seed(44);
  const int mw = 7, mh = 5, w = 61, h = 43;
  g_autofree float *map = g_new(float, mw *mh);
  g_autofree float *up = g_new(float, w *h);
  g_autofree float *work = g_new(float, w *h);
  g_autofree guint8 *mask = g_new(guint8, w * h);
  g_autoptr(GArray) regions = g_array_new(FALSE, FALSE, sizeof(InspRegion));
  const float pt = 0.5f;
  int under = 0;

  for (int round = 0; round < 300; round++) {
    float top = pt + (float)g_rand_int_range(rng, -3, 4) * 1e-7f * (round % 2 ? 1.0f : 1e3f);
    InspInspectParams p = params(2.0f, pt, 1);
    int on = 0, want = 0;
    gboolean fail;

    for (int i = 0; i < mw * mh; i++)
      map[i] = (float)g_rand_double_range(rng, 0.0, top);
    map[g_rand_int_range(rng, 0, mw * mh)] = top;
    insp_ops_resize_bilinear(map, 1, mh, mw, h, w, up);
    for (int i = 0; i < w * h; i++)
      want += up[i] >= pt;
    memset(mask, 77, (gsize)w * h);
    g_array_set_size(regions, 0);
    fail = insp_inspect(map, mw, mh, 0.0f, w, h, &p, work, mask, regions);
    for (int i = 0; i < w * h; i++) {
      g_assert_true(mask[i] == 0 || mask[i] == 255);
      on += mask[i] == 255;
    }
    g_assert_cmpint(on, ==, want);
    g_assert_true(fail == (regions->len > 0));
    g_assert_true(fail == (want > 0));
    under += top < pt;
  }
  g_assert_cmpint(under, >, 50);
}

static void
test_random_vs_naive(void)
{
  g_autoptr(GRand) rng = g_rand_new_with_seed(21);
  for (int round = 0; round < 60; round++) {
    int w = g_rand_int_range(rng, 1, 50), h = g_rand_int_range(rng, 1, 40);
    double density = g_rand_double_range(rng, 0.05, 0.7);
    int min_area = g_rand_int_range(rng, 0, 6);
    g_autoptr(Case) c = case_new(w, h);
    g_autofree guint8 *on = g_new(guint8, w * h);
    for (int i = 0; i < w * h; i++) {
      c->map[i] = g_rand_double(rng) < density ? 0.9f : 0.1f;
      on[i] = c->map[i] >= 0.5f;
    }
    InspInspectParams p = params(2.0f, 0.5f, min_area);
    int kept = 0, want = naive_count(on, w, h, min_area, &kept);
    gboolean fail = run(c, 0.0f, &p);
    g_assert_cmpuint(c->regions->len, ==, (guint)want);
    g_assert_true(fail == (want > 0));
    int on_pixels = 0;
    for (int i = 0; i < w * h; i++)
      on_pixels += c->mask[i] == 255;
    g_assert_cmpint(on_pixels, ==, kept);
    for (guint r = 0; r < c->regions->len; r++) {
      InspRegion *g = REGION(c, r);
      g_assert_cmpint(g->area, >=, MAX(min_area, 1));
      g_assert_cmpint(g->area, <=, g->w * g->h);
      g_assert_cmpint(g->x + g->w, <=, w);
      g_assert_cmpint(g->y + g->h, <=, h);
    }
  }
}

static void
test_comb_stack_growth(void)
{
  /* 1500 teeth joined by one bottom row: the fill pushes a seed per tooth,
   * past the inline stack. One region. */
  g_autoptr(Case) c = case_new(3001, 50);
  InspInspectParams p = params(2.0f, 0.5f, 1);
  for (int x = 0; x < 3001; x += 2)
    rect(c, x, 0, 1, 50, 1.0f);
  rect(c, 0, 49, 3001, 1, 1.0f);
  g_assert_true(run(c, 0.0f, &p));
  g_assert_cmpuint(c->regions->len, ==, 1);
  g_assert_cmpint(REGION(c, 0)->area, ==, 1501 * 49 + 3001);
}

static void
test_large_image_speed(void)
{
  /* 4000x3000 from a 224x224 map with three blobs. */
  const int W = 4000, H = 3000, M = 224;
  g_autofree float *map = g_new0(float, M *M);
  g_autofree float *work = g_new(float, (gsize)W *H);
  g_autofree guint8 *mask = g_new(guint8, (gsize)W * H);
  g_autoptr(GArray) regions = g_array_new(FALSE, FALSE, sizeof(InspRegion));
  InspInspectParams p = params(0.5f, 0.5f, 100);
  for (int y = 20; y < 40; y++)
    for (int x = 30; x < 60; x++)
      map[y * M + x] = 0.9f;
  for (int y = 100; y < 180; y++)
    for (int x = 150; x < 160; x++)
      map[y * M + x] = 0.7f;
  map[200 * M + 10] = 0.95f;

  double best = G_MAXDOUBLE;
  for (int rep = 0; rep < 3; rep++) {
    g_array_set_size(regions, 0);
    gint64 t0 = g_get_monotonic_time();
    g_assert_true(insp_inspect(map, M, M, 0.0f, W, H, &p, work, mask, regions));
    best = MIN(best, (g_get_monotonic_time() - t0) / 1000.0);
  }
  g_assert_cmpuint(regions->len, ==, 3);
  g_test_message("insp_inspect 4000x3000: %.1f ms (%.2f ms/MP)", best, best / 12.0);
  /* a sanity bound far above the expected few ms per MP */
  g_assert_cmpfloat(best, <, 3000.0);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/regions/two-blobs", test_two_blobs);
  g_test_add_func("/regions/threshold-inclusive", test_threshold_inclusive);
  g_test_add_func("/regions/diagonal-chain", test_diagonal_chain);
  g_test_add_func("/regions/u-shape", test_u_shape);
  g_test_add_func("/regions/min-area", test_min_area);
  g_test_add_func("/regions/roi", test_roi);
  g_test_add_func("/regions/verdict", test_verdict);
  g_test_add_func("/regions/one-pixel", test_one_pixel);
  g_test_add_func("/regions/upsample", test_upsample);
  g_test_add_func("/regions/random-vs-naive", test_random_vs_naive);
  g_test_add_func("/regions/runs-vs-naive", test_runs_vs_naive);
  g_test_add_func("/regions/near-threshold", test_near_threshold);
  g_test_add_func("/regions/comb-stack-growth", test_comb_stack_growth);
  g_test_add_func("/regions/large-image-speed", test_large_image_speed);
  return g_test_run();
}
