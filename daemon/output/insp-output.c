/* InspOutputs: a list of outputs behind one lock (see insp-output.h). */
#include "insp-output.h"

struct _InspOutputs {
  GRecMutex lock;     /* recursive: insp_outputs_hold() spans calls */
  GPtrArray *outputs; /* InspOutput*, owned */
};

InspOutputs *
insp_outputs_new(void)
{
  InspOutputs *outs = g_new0(InspOutputs, 1);

  g_rec_mutex_init(&outs->lock);
  outs->outputs = g_ptr_array_new();
  return outs;
}

static void
output_close(InspOutput *out)
{
  if (out != NULL && out->klass->close != NULL)
    out->klass->close(out);
}

void
insp_outputs_free(InspOutputs *outs)
{
  if (outs == NULL)
    return;
  g_rec_mutex_lock(&outs->lock);
  for (guint i = 0; i < outs->outputs->len; i++)
    output_close(g_ptr_array_index(outs->outputs, i));
  g_ptr_array_set_size(outs->outputs, 0);
  g_rec_mutex_unlock(&outs->lock);
  g_ptr_array_unref(outs->outputs);
  g_rec_mutex_clear(&outs->lock);
  g_free(outs);
}

void
insp_outputs_add(InspOutputs *outs, InspOutput *out)
{
  g_return_if_fail(outs != NULL && out != NULL && out->klass != NULL);
  g_rec_mutex_lock(&outs->lock);
  g_ptr_array_add(outs->outputs, out);
  g_rec_mutex_unlock(&outs->lock);
}

void
insp_outputs_replace(InspOutputs *outs, InspOutput *old, InspOutput *fresh)
{
  guint index;

  g_return_if_fail(outs != NULL && old != NULL);
  g_rec_mutex_lock(&outs->lock);
  if (!g_ptr_array_find(outs->outputs, old, &index)) {
    g_rec_mutex_unlock(&outs->lock);
    g_critical("insp_outputs_replace: output %s is not in the list", old->klass->name);
    return;
  }
  output_close(old);
  if (fresh != NULL)
    outs->outputs->pdata[index] = fresh;
  else
    g_ptr_array_remove_index(outs->outputs, index);
  g_rec_mutex_unlock(&outs->lock);
}

void
insp_outputs_hold(InspOutputs *outs)
{
  g_return_if_fail(outs != NULL);
  g_rec_mutex_lock(&outs->lock);
}

void
insp_outputs_release(InspOutputs *outs)
{
  g_return_if_fail(outs != NULL);
  g_rec_mutex_unlock(&outs->lock);
}

gboolean
insp_outputs_wants_images(InspOutputs *outs, gboolean fail)
{
  gboolean want = FALSE;

  g_return_val_if_fail(outs != NULL, FALSE);
  g_rec_mutex_lock(&outs->lock);
  for (guint i = 0; i < outs->outputs->len && !want; i++) {
    InspOutput *out = g_ptr_array_index(outs->outputs, i);
    if (out->klass->wants_images)
      want = out->klass->wants_images(out, fail);
  }
  g_rec_mutex_unlock(&outs->lock);
  return want;
}

void
insp_outputs_part(InspOutputs *outs, InspPart *part)
{
  g_return_if_fail(outs != NULL && part != NULL);
  g_rec_mutex_lock(&outs->lock);
  for (guint i = 0; i < outs->outputs->len; i++) {
    InspOutput *out = g_ptr_array_index(outs->outputs, i);
    if (out->klass->part)
      out->klass->part(out, part);
  }
  g_rec_mutex_unlock(&outs->lock);
}

void
insp_outputs_status(InspOutputs *outs, const InspStatus *status)
{
  g_return_if_fail(outs != NULL && status != NULL);
  g_rec_mutex_lock(&outs->lock);
  for (guint i = 0; i < outs->outputs->len; i++) {
    InspOutput *out = g_ptr_array_index(outs->outputs, i);
    if (out->klass->status)
      out->klass->status(out, status);
  }
  g_rec_mutex_unlock(&outs->lock);
}

void
insp_outputs_event(InspOutputs *outs, const InspEvent *event)
{
  g_return_if_fail(outs != NULL && event != NULL);
  g_rec_mutex_lock(&outs->lock);
  for (guint i = 0; i < outs->outputs->len; i++) {
    InspOutput *out = g_ptr_array_index(outs->outputs, i);
    if (out->klass->event)
      out->klass->event(out, event);
  }
  g_rec_mutex_unlock(&outs->lock);
}

void
insp_outputs_trigger_failed(InspOutputs *outs, guint64 trigger_id, const char *message)
{
  g_return_if_fail(outs != NULL && message != NULL);
  g_rec_mutex_lock(&outs->lock);
  for (guint i = 0; i < outs->outputs->len; i++) {
    InspOutput *out = g_ptr_array_index(outs->outputs, i);
    if (out->klass->trigger_failed)
      out->klass->trigger_failed(out, trigger_id, message);
  }
  g_rec_mutex_unlock(&outs->lock);
}

void
insp_outputs_event_simple(InspOutputs *outs, const char *level, const char *code,
                          const char *message)
{
  InspEvent ev = {.level = level, .code = code, .message = message};

  insp_outputs_event(outs, &ev);
}
