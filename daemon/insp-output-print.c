/* The print output: one line per decision on a stream (`run -v`, the demo
 * line). Threads: part() on the results thread only. */
#include "insp-outputs.h"

typedef struct {
  InspOutput parent;
  FILE *stream;
} OutputPrint;

static void
print_part(InspOutput *out, InspPart *p)
{
  OutputPrint *o = (OutputPrint *)out;

  fprintf(o->stream,
          "seq=%" G_GUINT64_FORMAT
          " part=%s verdict=%s score=%.2f threshold=%.2f regions=%" G_GSIZE_FORMAT
          " latency=%.1fms\n",
          p->seq, p->part_id, p->fail ? "fail" : "pass", p->score, p->threshold, p->n_regions,
          p->latency_ms);
  fflush(o->stream);
}

static void
print_close(InspOutput *out)
{
  g_free(out);
}

static const InspOutputClass print_class = {
    .name = "print",
    .part = print_part,
    .close = print_close,
};

InspOutput *
insp_output_print_new(FILE *stream)
{
  OutputPrint *o = g_new0(OutputPrint, 1);

  o->parent.klass = &print_class;
  o->stream = stream;
  return &o->parent;
}
