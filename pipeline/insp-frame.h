/* Frames: one captured image, packed RGB8, reference-counted, shared by the
 * capture thread, the frame queue, a worker and the result consumer.
 *
 * Ownership: whoever holds a reference may read the pixels and the metadata;
 * nobody writes them once the frame is in the frame queue, except the two
 * fields the queue itself writes (dropped_before at push, index at pop).
 * Threads: any; ref/unref are atomic. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  const guint8 *data; /* width*height RGB pixels, rows @stride bytes apart */
  int width;
  int height;
  int stride;
  guint64 seq;          /* capture sequence, +1 per frame taken into the queue, across restarts */
  gint64 mono_us;       /* capture time, g_get_monotonic_time() clock */
  gint64 wall_us;       /* capture time, g_get_real_time() clock */
  char *part_id;        /* trigger part id, file stem, or the decimal seq (owned by the frame) */
  guint64 trigger_id;   /* the trigger this frame answers (insp_pipeline_trigger), 0: none */
  guint dropped_before; /* frames the queue dropped right before this one (written by the queue) */
  guint64 index;        /* pop order, 0, 1, 2... (written by the queue at pop) */
  /* private */
  gint ref_count;
  GDestroyNotify data_free;
  gpointer data_owner;
} InspFrame;

/* A new frame of @width x @height with its own zeroed pixels (stride = 3*width),
 * capture times set to now. The caller owns the returned reference. */
InspFrame *insp_frame_new(int width, int height);
/* A frame over pixels the caller keeps alive until @data_free(@data_owner) is
 * called when the last reference goes. The caller owns the returned reference. */
InspFrame *insp_frame_new_wrapped(const guint8 *data, int width, int height, int stride,
                                  GDestroyNotify data_free, gpointer data_owner);
/* Returns @frame with one more reference, owned by the caller. */
InspFrame *insp_frame_ref(InspFrame *frame);
/* Drops one reference; the last frees the pixels (data_free) and part_id.
 * Accepts NULL. */
void insp_frame_unref(InspFrame *frame);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspFrame, insp_frame_unref)

G_END_DECLS
