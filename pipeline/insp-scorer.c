/* Scorers (a reference-counted pair of function table and shared data) and
 * the InspResult record they fill.
 *
 * Invariants: the data is freed once, with the last reference; a result owns
 * everything it points to.
 * Threads: any; the reference count is atomic. */
#include "insp-scorer.h"

struct _InspScorer {
  gint ref_count;
  const InspScorerFuncs *funcs;
  gpointer data;
  GDestroyNotify data_free;
};

InspScorer *
insp_scorer_new(const InspScorerFuncs *funcs, gpointer data, GDestroyNotify data_free)
{
  g_return_val_if_fail(funcs != NULL && funcs->score != NULL, NULL);
  InspScorer *s = g_new0(InspScorer, 1);
  s->ref_count = 1;
  s->funcs = funcs;
  s->data = data;
  s->data_free = data_free;
  return s;
}

InspScorer *
insp_scorer_ref(InspScorer *s)
{
  g_return_val_if_fail(s != NULL, NULL);
  g_atomic_int_inc(&s->ref_count);
  return s;
}

void
insp_scorer_unref(InspScorer *s)
{
  if (s == NULL || !g_atomic_int_dec_and_test(&s->ref_count))
    return;
  if (s->data_free != NULL)
    s->data_free(s->data);
  g_free(s);
}

const InspScorerFuncs *
insp_scorer_get_funcs(InspScorer *s)
{
  g_return_val_if_fail(s != NULL, NULL);
  return s->funcs;
}

gpointer
insp_scorer_get_data(InspScorer *s)
{
  g_return_val_if_fail(s != NULL, NULL);
  return s->data;
}

void
insp_result_free(InspResult *r)
{
  if (r == NULL)
    return;
  insp_frame_unref(r->frame);
  g_clear_error(&r->error);
  if (r->lent_release != NULL) {
    r->lent_release(r->lent);
  } else {
    g_free(r->map);
    g_free(r->mask);
    if (r->regions != NULL)
      g_array_unref(r->regions);
    g_free(r->model_id);
  }
  g_free(r);
}
