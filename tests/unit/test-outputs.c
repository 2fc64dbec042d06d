/* The output list: every output gets every part, status and event in the
 * order they were added; replace closes the old one and no part reaches it
 * afterwards; a part an output keeps outlives the call. */
#include <glib.h>

#include "insp-output.h"

typedef struct {
  InspOutput parent;
  const char *tag;
  GString *log; /* shared, written as "tag:what;" */
  GPtrArray *kept;
  gboolean *closed;
} TestOutput;

static void
t_part(InspOutput *out, InspPart *part)
{
  TestOutput *t = (TestOutput *)out;

  g_string_append_printf(t->log, "%s:part%" G_GUINT64_FORMAT ";", t->tag, part->seq);
  if (t->kept)
    g_ptr_array_add(t->kept, insp_part_ref(part));
}

static void
t_status(InspOutput *out, const InspStatus *status)
{
  TestOutput *t = (TestOutput *)out;

  g_string_append_printf(t->log, "%s:%s;", t->tag, insp_state_to_string(status->state));
}

static void
t_event(InspOutput *out, const InspEvent *ev)
{
  TestOutput *t = (TestOutput *)out;

  g_string_append_printf(t->log, "%s:%s;", t->tag, ev->code);
}

static void
t_close(InspOutput *out)
{
  TestOutput *t = (TestOutput *)out;

  g_string_append_printf(t->log, "%s:close;", t->tag);
  if (t->closed)
    *t->closed = TRUE;
  g_free(t);
}

static const InspOutputClass test_class = {
    .name = "test", .part = t_part, .status = t_status, .event = t_event, .close = t_close};
/* An output with nothing but a part function: the list skips the rest. */
static const InspOutputClass part_only_class = {
    .name = "part-only", .part = t_part, .close = t_close};

static InspOutput *
test_output(const InspOutputClass *klass, const char *tag, GString *log, GPtrArray *kept,
            gboolean *closed)
{
  TestOutput *t = g_new0(TestOutput, 1);

  t->parent.klass = klass;
  t->tag = tag;
  t->log = log;
  t->kept = kept;
  t->closed = closed;
  return &t->parent;
}

static InspPart *
part_new(guint64 seq)
{
  InspPart *p = insp_part_new();

  p->seq = seq;
  p->part_id = g_strdup_printf("p%" G_GUINT64_FORMAT, seq);
  p->model = g_strdup("m");
  p->mask_png = g_bytes_new_static("png", 3);
  return p;
}

static void
test_fan_out(void)
{
  g_autoptr(GString) log = g_string_new(NULL);
  g_autoptr(GPtrArray) kept = g_ptr_array_new_with_free_func((GDestroyNotify)insp_part_unref);
  InspOutputs *outs = insp_outputs_new();
  InspStatus st = {.state = INSP_STATE_DEGRADED};
  InspPart *p = part_new(7);
  gboolean a_closed = FALSE;
  InspOutput *a = test_output(&test_class, "a", log, NULL, &a_closed);

  insp_outputs_add(outs, a);
  insp_outputs_add(outs, test_output(&part_only_class, "b", log, kept, NULL));
  insp_outputs_part(outs, p);
  insp_outputs_status(outs, &st);
  insp_outputs_event_simple(outs, "info", "reloaded", "config reloaded");
  g_assert_cmpstr(log->str, ==, "a:part7;b:part7;a:degraded;a:reloaded;");

  /* b kept a reference: the part outlives the caller's. */
  insp_part_unref(p);
  g_assert_cmpuint(kept->len, ==, 1);
  g_assert_cmpstr(((InspPart *)kept->pdata[0])->part_id, ==, "p7");

  g_string_truncate(log, 0);
  insp_outputs_replace(outs, a, test_output(&test_class, "c", log, NULL, NULL));
  g_assert_true(a_closed);
  p = part_new(8);
  insp_outputs_part(outs, p);
  insp_part_unref(p);
  g_assert_cmpstr(log->str, ==, "a:close;c:part8;b:part8;");

  g_string_truncate(log, 0);
  insp_outputs_free(outs);
  g_assert_cmpstr(log->str, ==, "c:close;b:close;");
}

/* Parts from one thread while another replaces an output: every part
 * reaches exactly one of the two, none a closed one. */
typedef struct {
  InspOutputs *outs;
  guint n;
} Feeder;

static gpointer
feed(gpointer data)
{
  Feeder *f = data;

  for (guint i = 0; i < f->n; i++) {
    InspPart *p = part_new(i);
    insp_outputs_part(f->outs, p);
    insp_part_unref(p);
  }
  return NULL;
}

static void
test_replace_while_parts_flow(void)
{
  g_autoptr(GString) log = g_string_new(NULL);
  g_autoptr(GPtrArray) kept = g_ptr_array_new_with_free_func((GDestroyNotify)insp_part_unref);
  InspOutputs *outs = insp_outputs_new();
  InspOutput *a = test_output(&test_class, "a", log, kept, NULL);
  Feeder f = {outs, 20000};
  GThread *th;

  insp_outputs_add(outs, a);
  th = g_thread_new("feeder", feed, &f);
  g_usleep(2000);
  insp_outputs_replace(outs, a, test_output(&test_class, "b", log, kept, NULL));
  g_thread_join(th);
  g_assert_cmpuint(kept->len, ==, f.n);
  for (guint i = 0; i < kept->len; i++)
    g_assert_cmpuint(((InspPart *)kept->pdata[i])->seq, ==, i);
  /* Nothing reached a after its close. */
  const char *close = strstr(log->str, "a:close;");
  g_assert_nonnull(close);
  g_assert_null(strstr(close, "a:part"));
  insp_outputs_free(outs);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/outputs/fan-out", test_fan_out);
  g_test_add_func("/outputs/replace-while-parts-flow", test_replace_while_parts_flow);
  return g_test_run();
}
