/* Generated parts for the benchmarks (bench-detector, bench-coreset) when
 * ../shared is absent: a 256x256 disc with 12 radial stripes and noise on a
 * dark background, reproducible from @seed. */
#pragma once

#include "insp-image.h"

InspImage *bench_make_part(guint64 seed);
