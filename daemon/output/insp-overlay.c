/* The picture of a part for a person (the live page, the archive): the
 * frame, with the anomaly map blended in as a heat map and the defect
 * regions boxed.
 *
 * The map is normalised (the pixel threshold is on its scale, 0.5 by
 * default). Below 0.6 of the pixel threshold the frame shows as it is; from
 * there the heat colour (blue, green, yellow, red at twice the threshold)
 * fades in, to 60 % opacity at the threshold and above, so that what the
 * mask calls defect is plainly coloured and the part stays visible under it.
 * Boxes are drawn in magenta, 2 pixels wide at the output's scale. */
#include "insp-overlay.h"

#include <math.h>
#include <string.h>

static void
heat_colour(float t, guint8 rgb[3])
{
  /* t in [0, 1]: blue -> cyan -> green -> yellow -> red. */
  static const float stops[5][3] = {
      {0, 0, 255}, {0, 255, 255}, {0, 255, 0}, {255, 255, 0}, {255, 0, 0},
  };
  float f = CLAMP(t, 0.0f, 1.0f) * 4.0f;
  int i = MIN((int)f, 3);
  float u = f - (float)i;

  for (int c = 0; c < 3; c++)
    rgb[c] = (guint8)lrintf(stops[i][c] + (stops[i + 1][c] - stops[i][c]) * u);
}

static void
draw_box(InspImage *img, int x0, int y0, int x1, int y1, int thick)
{
  static const guint8 colour[3] = {255, 0, 255};

  x0 = CLAMP(x0, 0, img->width - 1);
  x1 = CLAMP(x1, 0, img->width - 1);
  y0 = CLAMP(y0, 0, img->height - 1);
  y1 = CLAMP(y1, 0, img->height - 1);
  for (int y = y0; y <= y1; y++) {
    guint8 *row = img->data + (gsize)y * (gsize)img->stride;
    for (int x = x0; x <= x1; x++) {
      gboolean edge = x < x0 + thick || x > x1 - thick || y < y0 + thick || y > y1 - thick;
      if (edge)
        memcpy(row + 3 * x, colour, 3);
    }
  }
}

InspImage *
insp_overlay_render(const guint8 *rgb, int width, int height, int stride, const float *map,
                    int map_width, int map_height, float pixel_threshold, const InspRegion *regions,
                    gsize n_regions, int max_width)
{
  g_return_val_if_fail(rgb != NULL && width > 0 && height > 0 && stride >= 3 * width, NULL);
  int ow = width, oh = height;
  if (max_width > 0 && width > max_width) {
    ow = max_width;
    oh = MAX(1, (int)((gint64)height * max_width / width));
  }
  InspImage *img = insp_image_new(ow, oh, 3);
  float thr = pixel_threshold > 0.0f ? pixel_threshold : 0.5f;
  gboolean have_map = map != NULL && map_width > 0 && map_height > 0;

  for (int y = 0; y < oh; y++) {
    int sy = (int)((gint64)y * height / oh);
    int my = have_map ? MIN((int)((gint64)y * map_height / oh), map_height - 1) : 0;
    const guint8 *src = rgb + (gsize)sy * (gsize)stride;
    guint8 *dst = img->data + (gsize)y * (gsize)img->stride;
    for (int x = 0; x < ow; x++) {
      int sx = (int)((gint64)x * width / ow);
      const guint8 *p = src + 3 * sx;
      float a = 0.0f;
      guint8 heat[3] = {0, 0, 0};
      if (have_map) {
        float m = map[(gsize)my * (gsize)map_width +
                      (gsize)MIN((int)((gint64)x * map_width / ow), map_width - 1)];
        /* 0 at 0.6 thr, 0.6 at thr and above */
        a = CLAMP((m / thr - 0.6f) * 1.5f, 0.0f, 0.6f);
        heat_colour(m / (2.0f * thr), heat);
      }
      for (int c = 0; c < 3; c++)
        dst[3 * x + c] = (guint8)lrintf((1.0f - a) * (float)p[c] + a * (float)heat[c]);
    }
  }
  int thick = MAX(2, ow / 320);
  for (gsize i = 0; i < n_regions; i++) {
    const InspRegion *r = &regions[i];
    draw_box(img, (int)((gint64)r->x * ow / width), (int)((gint64)r->y * oh / height),
             (int)((gint64)(r->x + r->w) * ow / width), (int)((gint64)(r->y + r->h) * oh / height),
             thick);
  }
  return img;
}
