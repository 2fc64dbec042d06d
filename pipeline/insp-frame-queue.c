/* The bounded frame queue between the capture streaming thread and
 * the inspector workers, modelled on GstQueue: one mutex, two condition
 * variables (item_add wakes poppers, item_del wakes pushers), a flushing flag
 * re-checked after every wake-up, an explicit leak policy.
 *
 * Invariants: depth <= capacity; frames leave in the order they came in;
 * index is assigned at pop, under the lock, so indices are dense (0, 1, 2...)
 * in pop order even when frames were dropped; every frame dropped under
 * INSP_DROP_OLDEST is counted once and recorded in dropped_before of the frame
 * that followed it. No callback is called; frames are unreffed outside the lock
 * where they may be the last reference (their data_free may do anything).
 *
 * Threads: any number of pushers and poppers. */
#include "insp-frame-queue.h"

struct _InspFrameQueue {
  GMutex lock;
  GCond item_add; /* a frame was pushed, or flushing changed */
  GCond item_del; /* a frame was popped or dropped, or flushing changed */
  GQueue frames;
  guint capacity;
  InspDropPolicy policy;
  gboolean flushing;       /* pushes and pops fail */
  gboolean input_flushing; /* pushes fail */
  gboolean closed;         /* pushes fail; pops return NULL once empty */
  guint64 dropped;
  guint64 next_index;
};

InspFrameQueue *
insp_frame_queue_new(guint capacity, InspDropPolicy policy)
{
  g_return_val_if_fail(capacity >= 1, NULL);
  g_return_val_if_fail(policy == INSP_DROP_NEVER || policy == INSP_DROP_OLDEST, NULL);
  InspFrameQueue *q = g_new0(InspFrameQueue, 1);
  g_mutex_init(&q->lock);
  g_cond_init(&q->item_add);
  g_cond_init(&q->item_del);
  g_queue_init(&q->frames);
  q->capacity = capacity;
  q->policy = policy;
  return q;
}

void
insp_frame_queue_free(InspFrameQueue *q)
{
  if (q == NULL)
    return;
  g_queue_clear_full(&q->frames, (GDestroyNotify)insp_frame_unref);
  g_cond_clear(&q->item_add);
  g_cond_clear(&q->item_del);
  g_mutex_clear(&q->lock);
  g_free(q);
}

gboolean
insp_frame_queue_push(InspFrameQueue *q, InspFrame *frame)
{
  g_return_val_if_fail(q != NULL, FALSE);
  g_return_val_if_fail(frame != NULL, FALSE);
  InspFrame *leaked = NULL;

  g_mutex_lock(&q->lock);
  for (;;) {
    if (q->flushing || q->input_flushing || q->closed) {
      g_mutex_unlock(&q->lock);
      insp_frame_unref(frame);
      return FALSE;
    }
    if (q->frames.length < q->capacity)
      break;
    if (q->policy == INSP_DROP_OLDEST) {
      leaked = g_queue_pop_head(&q->frames);
      q->dropped++;
      /* The frame right after the dropped one inherits the count: it is the
       * new head, or the frame being pushed when the capacity is 1. */
      InspFrame *next = g_queue_peek_head(&q->frames);
      if (next == NULL)
        next = frame;
      next->dropped_before += leaked->dropped_before + 1;
      break;
    }
    g_cond_wait(&q->item_del, &q->lock);
  }
  g_queue_push_tail(&q->frames, frame);
  g_cond_signal(&q->item_add);
  g_mutex_unlock(&q->lock);
  insp_frame_unref(leaked);
  return TRUE;
}

InspFrame *
insp_frame_queue_pop(InspFrameQueue *q)
{
  g_return_val_if_fail(q != NULL, NULL);
  g_mutex_lock(&q->lock);
  for (;;) {
    if (q->flushing) {
      g_mutex_unlock(&q->lock);
      return NULL;
    }
    if (q->frames.length > 0)
      break;
    if (q->closed) {
      g_mutex_unlock(&q->lock);
      return NULL;
    }
    g_cond_wait(&q->item_add, &q->lock);
  }
  InspFrame *f = g_queue_pop_head(&q->frames);
  f->index = q->next_index++;
  g_cond_signal(&q->item_del);
  g_mutex_unlock(&q->lock);
  return f;
}

void
insp_frame_queue_set_flushing(InspFrameQueue *q, gboolean flushing)
{
  g_return_if_fail(q != NULL);
  GQueue old = G_QUEUE_INIT;
  g_mutex_lock(&q->lock);
  q->flushing = flushing;
  if (flushing) {
    old = q->frames;
    g_queue_init(&q->frames);
  }
  g_cond_broadcast(&q->item_add);
  g_cond_broadcast(&q->item_del);
  g_mutex_unlock(&q->lock);
  g_queue_clear_full(&old, (GDestroyNotify)insp_frame_unref);
}

void
insp_frame_queue_set_input_flushing(InspFrameQueue *q, gboolean flushing)
{
  g_return_if_fail(q != NULL);
  g_mutex_lock(&q->lock);
  q->input_flushing = flushing;
  g_cond_broadcast(&q->item_del);
  g_mutex_unlock(&q->lock);
}

void
insp_frame_queue_close(InspFrameQueue *q)
{
  g_return_if_fail(q != NULL);
  g_mutex_lock(&q->lock);
  q->closed = TRUE;
  g_cond_broadcast(&q->item_add);
  g_cond_broadcast(&q->item_del);
  g_mutex_unlock(&q->lock);
}

guint
insp_frame_queue_get_depth(InspFrameQueue *q)
{
  g_return_val_if_fail(q != NULL, 0);
  g_mutex_lock(&q->lock);
  guint d = q->frames.length;
  g_mutex_unlock(&q->lock);
  return d;
}

guint64
insp_frame_queue_get_dropped(InspFrameQueue *q)
{
  g_return_val_if_fail(q != NULL, 0);
  g_mutex_lock(&q->lock);
  guint64 d = q->dropped;
  g_mutex_unlock(&q->lock);
  return d;
}
