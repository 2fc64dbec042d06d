/* The picture of a part for a person: the frame with its anomaly map as a
 * heat map and its defect regions boxed (the live page and the archive). */
#pragma once

#include "insp-image.h"
#include "insp-model.h"

G_BEGIN_DECLS

/* A new RGB image of the frame @rgb (@width x @height, rows @stride apart)
 * scaled down to at most @max_width pixels wide (0: full size), with the
 * normalised anomaly @map (NULL: none) blended in on the scale of
 * @pixel_threshold and the @regions (frame pixels) boxed. */
InspImage *insp_overlay_render(const guint8 *rgb, int width, int height, int stride,
                               const float *map, int map_width, int map_height,
                               float pixel_threshold, const InspRegion *regions, gsize n_regions,
                               int max_width);

G_END_DECLS
