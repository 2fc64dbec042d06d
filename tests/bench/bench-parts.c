/* A generated part for the benchmarks when the shared data sets are absent:
 * see bench-parts.h. */
#include "bench-parts.h"

#include <math.h>
#include <string.h>

InspImage *
bench_make_part(guint64 seed)
{
  InspImage *img = insp_image_new(256, 256, 3);
  guint64 st = seed * 2654435761u + 1;

  for (int y = 0; y < 256; y++)
    for (int x = 0; x < 256; x++) {
      double dx = x - 128.0, dy = y - 128.0, r = sqrt(dx * dx + dy * dy);
      double v = r < 90 ? 150 + 40 * sin(atan2(dy, dx) * 12) : 30;

      st = st * 6364136223846793005u + 1442695040888963407u;
      v += (double)(st >> 58) - 32.0;
      memset(img->data + (gsize)y * img->stride + 3 * x, (int)CLAMP(v, 0, 255), 3);
    }
  return img;
}
