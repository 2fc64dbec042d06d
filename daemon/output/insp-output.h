/* Outputs: where inspected parts, the status and events go (MQTT, the
 * decision lines on stdout, later HTTP, an archive...). An output is one
 * struct whose first member is InspOutput, and one InspOutputClass; adding
 * one is one new file and a line where the daemon builds its list.
 *
 * InspOutputs is the daemon's list of them. It fans each call out to every
 * output in the order they were added, holding its lock, so that a reload
 * can replace an output between two parts and no part is given to an output
 * being closed. Threads: part() on the results thread (one part at a time,
 * in seq order); status() on the main thread; event() on any thread. An
 * output must not block in them for long: what is slow (network, disk) it
 * queues or does on its own thread. */
#pragma once

#include <glib.h>

#include "insp-part.h"

G_BEGIN_DECLS

typedef struct _InspOutput InspOutput;

typedef struct {
  const char *name; /* "mqtt", "print"... for logs */
  /* Each may be NULL when the output has nothing to do with it. */
  void (*part)(InspOutput *out, InspPart *part);
  /* Asked on the results thread before a part is built: TRUE when the next
   * part (a failed one when @fail) should carry its frame and anomaly map
   * (InspPart.rgb, .map), which cost a copy of the map. */
  gboolean (*wants_images)(InspOutput *out, gboolean fail);
  void (*status)(InspOutput *out, const InspStatus *status);
  void (*event)(InspOutput *out, const InspEvent *event);
  /* The trigger @trigger_id (InspPart.trigger_id) gets no part: no frame came
   * ("timeout"), scoring failed, or the capture stopped. Any thread. */
  void (*trigger_failed)(InspOutput *out, guint64 trigger_id, const char *message);
  /* Flushes what can be flushed quickly and frees the output. */
  void (*close)(InspOutput *out);
} InspOutputClass;

struct _InspOutput {
  const InspOutputClass *klass;
};

typedef struct _InspOutputs InspOutputs;

InspOutputs *insp_outputs_new(void);
/* Closes every output, then frees the list. NULL is fine. */
void insp_outputs_free(InspOutputs *outs);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspOutputs, insp_outputs_free)

/* Takes ownership of @out. */
void insp_outputs_add(InspOutputs *outs, InspOutput *out);
/* Closes @old (which must be in the list) and puts @fresh (owned; NULL:
 * nothing) in its place, with no part given to either in between. */
void insp_outputs_replace(InspOutputs *outs, InspOutput *old, InspOutput *fresh);
/* Holds the list (the results thread's next part waits) across several
 * calls, e.g. while an output is closed and its successor created: no part
 * passes between the two. Same thread only; pairs with release. */
void insp_outputs_hold(InspOutputs *outs);
void insp_outputs_release(InspOutputs *outs);

/* TRUE when any output wants the images of the next part (wants_images). */
gboolean insp_outputs_wants_images(InspOutputs *outs, gboolean fail);
void insp_outputs_part(InspOutputs *outs, InspPart *part);
void insp_outputs_status(InspOutputs *outs, const InspStatus *status);
void insp_outputs_event(InspOutputs *outs, const InspEvent *event);
void insp_outputs_trigger_failed(InspOutputs *outs, guint64 trigger_id, const char *message);
/* Shorthand for an event that concerns no particular part. */
void insp_outputs_event_simple(InspOutputs *outs, const char *level, const char *code,
                               const char *message);

G_END_DECLS
