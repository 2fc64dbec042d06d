/* Unit tests of the bounded frame queue (pipeline/insp-frame-queue.c): which
 * frame is dropped under drop = oldest and how the drop is recorded, reference
 * counts of dropped and flushed frames, pushes that never block under
 * drop = oldest, backpressure under drop = never,
 * flushing and close wake-ups, pop indices. */
#include <glib.h>

#include "insp-frame-queue.h"

static InspFrame *
frame_with_seq(guint64 seq)
{
  InspFrame *f = insp_frame_new(4, 2);
  f->seq = seq;
  return f;
}

static void
test_fifo_order(void)
{
  g_autoptr(InspFrameQueue) q = insp_frame_queue_new(4, INSP_DROP_NEVER);
  for (guint64 i = 0; i < 4; i++)
    g_assert_true(insp_frame_queue_push(q, frame_with_seq(i)));
  g_assert_cmpuint(insp_frame_queue_get_depth(q), ==, 4);
  for (guint64 i = 0; i < 4; i++) {
    g_autoptr(InspFrame) f = insp_frame_queue_pop(q);
    g_assert_nonnull(f);
    g_assert_cmpuint(f->seq, ==, i);
    g_assert_cmpuint(f->index, ==, i);
    g_assert_cmpuint(f->dropped_before, ==, 0);
  }
  g_assert_cmpuint(insp_frame_queue_get_dropped(q), ==, 0);
}

static void
test_drop_oldest(void)
{
  g_autoptr(InspFrameQueue) q = insp_frame_queue_new(2, INSP_DROP_OLDEST);
  InspFrame *f0 = frame_with_seq(0);
  insp_frame_ref(f0); /* watch its reference count */
  g_assert_true(insp_frame_queue_push(q, f0));
  g_assert_true(insp_frame_queue_push(q, frame_with_seq(1)));
  g_assert_cmpint(f0->ref_count, ==, 2);
  /* Full: pushing 2 drops 0 (the oldest), and 1 is flagged. */
  g_assert_true(insp_frame_queue_push(q, frame_with_seq(2)));
  g_assert_cmpint(f0->ref_count, ==, 1); /* the queue let go of the dropped frame */
  g_assert_cmpuint(insp_frame_queue_get_dropped(q), ==, 1);
  /* Pushing 3 drops 1, which carried one drop: 2 now says two were lost. */
  g_assert_true(insp_frame_queue_push(q, frame_with_seq(3)));
  g_assert_cmpuint(insp_frame_queue_get_dropped(q), ==, 2);
  g_assert_cmpuint(insp_frame_queue_get_depth(q), ==, 2);

  g_autoptr(InspFrame) a = insp_frame_queue_pop(q);
  g_autoptr(InspFrame) b = insp_frame_queue_pop(q);
  g_assert_cmpuint(a->seq, ==, 2);
  g_assert_cmpuint(a->dropped_before, ==, 2);
  g_assert_cmpuint(b->seq, ==, 3);
  g_assert_cmpuint(b->dropped_before, ==, 0);
  g_assert_cmpuint(a->index, ==, 0);
  g_assert_cmpuint(b->index, ==, 1);
  insp_frame_unref(f0);
}

static void
test_drop_oldest_capacity_one(void)
{
  g_autoptr(InspFrameQueue) q = insp_frame_queue_new(1, INSP_DROP_OLDEST);
  for (guint64 i = 0; i < 5; i++)
    g_assert_true(insp_frame_queue_push(q, frame_with_seq(i)));
  g_autoptr(InspFrame) f = insp_frame_queue_pop(q);
  g_assert_cmpuint(f->seq, ==, 4); /* the newest wins */
  g_assert_cmpuint(f->dropped_before, ==, 4);
  g_assert_cmpuint(insp_frame_queue_get_dropped(q), ==, 4);
}

typedef struct {
  InspFrameQueue *q;
  gint pushed;
  guint n;
} Pusher;

static gpointer
pusher_main(gpointer data)
{
  Pusher *p = data;
  for (guint i = 0; i < p->n; i++) {
    if (!insp_frame_queue_push(p->q, frame_with_seq(i)))
      break;
    g_atomic_int_inc(&p->pushed);
  }
  return NULL;
}

/* drop = oldest: a push never blocks, however full the queue is and with no
 * one popping; every frame beyond the capacity is a counted drop. */
static void
test_never_blocks(void)
{
  g_autoptr(InspFrameQueue) q = insp_frame_queue_new(2, INSP_DROP_OLDEST);
  Pusher p = {q, 0, 1000};
  GThread *t = g_thread_new("pusher", pusher_main, &p);
  gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
  while (g_atomic_int_get(&p.pushed) < 1000 && g_get_monotonic_time() < deadline)
    g_usleep(1000);
  /* All 1000 pushes returned with nobody popping: none waited for room. */
  g_assert_cmpint(g_atomic_int_get(&p.pushed), ==, 1000);
  g_thread_join(t);
  g_assert_cmpuint(insp_frame_queue_get_depth(q), ==, 2);
  g_assert_cmpuint(insp_frame_queue_get_dropped(q), ==, 998);
  g_autoptr(InspFrame) a = insp_frame_queue_pop(q);
  g_autoptr(InspFrame) b = insp_frame_queue_pop(q);
  g_assert_cmpuint(a->seq, ==, 998);
  g_assert_cmpuint(a->dropped_before, ==, 998);
  g_assert_cmpuint(b->seq, ==, 999);
  g_assert_cmpuint(b->dropped_before, ==, 0);
}

/* drop = never: a full queue blocks the pusher (backpressure) until a pop
 * makes room, and nothing is lost. */
static void
test_drop_never_blocks_the_pusher(void)
{
  g_autoptr(InspFrameQueue) q = insp_frame_queue_new(2, INSP_DROP_NEVER);
  Pusher p = {q, 0, 50};
  GThread *t = g_thread_new("pusher", pusher_main, &p);
  /* The pusher fills the queue and then waits for room. */
  while (g_atomic_int_get(&p.pushed) < 2)
    g_usleep(1000);
  g_usleep(50 * 1000);
  g_assert_cmpint(g_atomic_int_get(&p.pushed), ==, 2);
  for (guint64 i = 0; i < 50; i++) {
    g_autoptr(InspFrame) f = insp_frame_queue_pop(q);
    g_assert_cmpuint(f->seq, ==, i);
    g_assert_cmpuint(f->dropped_before, ==, 0);
  }
  g_thread_join(t);
  g_assert_cmpint(p.pushed, ==, 50);
  g_assert_cmpuint(insp_frame_queue_get_dropped(q), ==, 0);
}

static void
test_flushing_wakes_pusher(void)
{
  g_autoptr(InspFrameQueue) q = insp_frame_queue_new(1, INSP_DROP_NEVER);
  Pusher p = {q, 0, 10};
  GThread *t = g_thread_new("pusher", pusher_main, &p);
  while (g_atomic_int_get(&p.pushed) < 1)
    g_usleep(1000);
  insp_frame_queue_set_input_flushing(q, TRUE);
  g_thread_join(t); /* returns: the blocked push failed */
  g_assert_cmpint(p.pushed, ==, 1);
  /* Pops still drain under input flushing. */
  g_autoptr(InspFrame) f = insp_frame_queue_pop(q);
  g_assert_cmpuint(f->seq, ==, 0);
  insp_frame_queue_set_input_flushing(q, FALSE);
  g_assert_true(insp_frame_queue_push(q, frame_with_seq(7)));
  insp_frame_queue_set_flushing(q, TRUE);
  g_assert_cmpuint(insp_frame_queue_get_depth(q), ==, 0);
  g_assert_null(insp_frame_queue_pop(q));
  g_assert_false(insp_frame_queue_push(q, frame_with_seq(8)));
}

static gpointer
popper_main(gpointer data)
{
  return insp_frame_queue_pop(data);
}

static void
test_close_drains(void)
{
  g_autoptr(InspFrameQueue) q = insp_frame_queue_new(4, INSP_DROP_NEVER);
  GThread *t = g_thread_new("popper", popper_main, q);
  g_usleep(20 * 1000);
  insp_frame_queue_close(q);
  g_assert_null(g_thread_join(t)); /* a blocked pop wakes with NULL */

  g_autoptr(InspFrameQueue) q2 = insp_frame_queue_new(4, INSP_DROP_NEVER);
  g_assert_true(insp_frame_queue_push(q2, frame_with_seq(0)));
  insp_frame_queue_close(q2);
  g_assert_false(insp_frame_queue_push(q2, frame_with_seq(1)));
  g_autoptr(InspFrame) f = insp_frame_queue_pop(q2);
  g_assert_nonnull(f);
  g_assert_null(insp_frame_queue_pop(q2));
}

static gboolean wrapped_freed;

static void
wrapped_free(gpointer data)
{
  wrapped_freed = TRUE;
  g_free(data);
}

static void
test_frame_wrapped(void)
{
  guint8 *px = g_malloc0(10 * 3 * 4);
  InspFrame *f = insp_frame_new_wrapped(px, 3, 4, 10, wrapped_free, px);
  g_assert_cmpint(f->stride, ==, 10);
  insp_frame_ref(f);
  insp_frame_unref(f);
  g_assert_false(wrapped_freed);
  insp_frame_unref(f);
  g_assert_true(wrapped_freed);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/frame-queue/fifo-order", test_fifo_order);
  g_test_add_func("/frame-queue/drop-oldest", test_drop_oldest);
  g_test_add_func("/frame-queue/drop-oldest-capacity-one", test_drop_oldest_capacity_one);
  g_test_add_func("/frame-queue/never-blocks", test_never_blocks);
  g_test_add_func("/frame-queue/drop-never-blocks-the-pusher", test_drop_never_blocks_the_pusher);
  g_test_add_func("/frame-queue/flushing-wakes-pusher", test_flushing_wakes_pusher);
  g_test_add_func("/frame-queue/close-drains", test_close_drains);
  g_test_add_func("/frame-queue/frame-wrapped", test_frame_wrapped);
  return g_test_run();
}
