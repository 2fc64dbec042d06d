/* The bounded frame queue between the capture streaming thread and the
 * inspector workers (modelled on GstQueue): a capacity, an explicit policy
 * when full, flushing, and drop accounting on the frame that follows a drop.
 *
 * Ownership: a push takes the caller's reference, a pop hands one out; the
 * queue unrefs what it drops or flushes. Threads: any number of pushers and
 * poppers. */
#pragma once

#include <glib.h>

#include "insp-frame.h"

G_BEGIN_DECLS

typedef enum {
  INSP_DROP_NEVER,  /* full queue: the pusher blocks (backpressure), nothing is lost */
  INSP_DROP_OLDEST, /* full queue: the oldest queued frame is dropped, the newest wins */
} InspDropPolicy;

typedef struct _InspFrameQueue InspFrameQueue;

/* A queue of at most @capacity (>= 1) frames, owned by the caller. */
InspFrameQueue *insp_frame_queue_new(guint capacity, InspDropPolicy policy);
void insp_frame_queue_free(InspFrameQueue *q); /* accepts NULL; unrefs queued frames */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspFrameQueue, insp_frame_queue_free)

/* Takes @frame (transfer full). When full: INSP_DROP_OLDEST unrefs the oldest
 * queued frame, counts it, and adds it (and the drops before it) to the
 * dropped_before of the frame that followed it; INSP_DROP_NEVER blocks until
 * there is room. Returns FALSE (and unrefs @frame) when the queue or its input
 * is flushing. */
gboolean insp_frame_queue_push(InspFrameQueue *q, InspFrame *frame);
/* Blocks for the oldest frame (transfer full, its index set) or returns NULL
 * when the queue is flushing. */
InspFrame *insp_frame_queue_pop(InspFrameQueue *q);
/* Flushing: every blocked push and pop returns at once, queued frames are
 * dropped (not counted), new pushes and pops fail until unset. */
void insp_frame_queue_set_flushing(InspFrameQueue *q, gboolean flushing);
/* Input flushing: only pushes fail (blocked ones return); pops go on draining. */
void insp_frame_queue_set_input_flushing(InspFrameQueue *q, gboolean flushing);
/* Closes the input for good: pushes fail, pops drain what is queued, then
 * return NULL. */
void insp_frame_queue_close(InspFrameQueue *q);
guint insp_frame_queue_get_depth(InspFrameQueue *q);
guint64 insp_frame_queue_get_dropped(InspFrameQueue *q);

G_END_DECLS
