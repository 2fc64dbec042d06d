/* Frames: reference-counted packed RGB8 images with their capture metadata.
 *
 * Invariants: the pixels stay valid while a reference is held; the last unref
 * calls data_free(data_owner) exactly once.
 * Threads: any; the reference count is atomic. */
#include "insp-frame.h"

static void
frame_free_pixels(gpointer data)
{
  g_free(data);
}

InspFrame *
insp_frame_new(int width, int height)
{
  g_return_val_if_fail(width > 0 && height > 0, NULL);
  g_return_val_if_fail((gsize)width * (gsize)height <= G_MAXSIZE / 3, NULL);
  guint8 *pixels = g_malloc0((gsize)width * (gsize)height * 3);
  return insp_frame_new_wrapped(pixels, width, height, width * 3, frame_free_pixels, pixels);
}

InspFrame *
insp_frame_new_wrapped(const guint8 *data, int width, int height, int stride,
                       GDestroyNotify data_free, gpointer data_owner)
{
  g_return_val_if_fail(data != NULL, NULL);
  g_return_val_if_fail(width > 0 && height > 0 && stride >= width * 3, NULL);
  InspFrame *f = g_new0(InspFrame, 1);
  f->data = data;
  f->width = width;
  f->height = height;
  f->stride = stride;
  f->ref_count = 1;
  f->data_free = data_free;
  f->data_owner = data_owner;
  f->mono_us = g_get_monotonic_time();
  f->wall_us = g_get_real_time();
  return f;
}

InspFrame *
insp_frame_ref(InspFrame *frame)
{
  g_return_val_if_fail(frame != NULL, NULL);
  g_atomic_int_inc(&frame->ref_count);
  return frame;
}

void
insp_frame_unref(InspFrame *frame)
{
  if (frame == NULL)
    return;
  if (!g_atomic_int_dec_and_test(&frame->ref_count))
    return;
  if (frame->data_free != NULL)
    frame->data_free(frame->data_owner);
  g_free(frame->part_id);
  g_free(frame);
}
