/* The default InspScorer over an InspModel: insp_model_score() then
 * insp_inspect() with the current InspInspectParams.
 *
 * Invariants: the current model and params change only under the lock, and
 * each frame copies both under it once, so a frame is scored by one model with
 * one set of params; a swap applies from the next frame; a worker's scratch
 * belongs to the model it was made for and is rebuilt when the model changes.
 *
 * Threads: score()/worker_*() from "insp-worker-N"; the setters from any
 * thread. Kept in a file of its own so that programs which never use the
 * model scorer do not link the model code. */
#include "insp-model-scorer.h"

#include <string.h>

typedef struct {
  GMutex lock;
  InspModel *model;
  InspInspectParams params;
} ModelScorer;

typedef struct {
  InspModel *model; /* the model @scratch was made for (a reference) */
  InspModelScratch *scratch;
  float *work;
  gsize work_len;
} ModelWorker;

static gpointer
model_worker_init(gpointer data, int worker, GError **error)
{
  return g_new0(ModelWorker, 1);
}

static void
model_worker_finalize(gpointer data, gpointer state)
{
  ModelWorker *w = state;
  if (w == NULL)
    return;
  insp_model_scratch_free(w->scratch);
  if (w->model != NULL)
    insp_model_unref(w->model);
  g_free(w->work);
  g_free(w);
}

static gboolean
model_score(gpointer data, gpointer state, const InspFrame *frame, InspResult *r, GError **error)
{
  ModelScorer *ms = data;
  ModelWorker *w = state;

  g_mutex_lock(&ms->lock);
  g_autoptr(InspModel) model = insp_model_ref(ms->model);
  InspInspectParams params = ms->params;
  g_mutex_unlock(&ms->lock);

  if (w->model != model) {
    InspModelScratch *scratch = insp_model_scratch_new(model, error);
    if (scratch == NULL)
      return FALSE;
    insp_model_scratch_free(w->scratch);
    if (w->model != NULL)
      insp_model_unref(w->model);
    w->scratch = scratch;
    w->model = insp_model_ref(model);
  }

  InspScoreResult sr;
  if (!insp_model_score(model, w->scratch, frame->data, frame->width, frame->height, frame->stride,
                        &sr, error))
    return FALSE;

  gsize n = (gsize)frame->width * (gsize)frame->height;
  if (w->work_len < n) {
    g_free(w->work);
    w->work = g_new(float, n);
    w->work_len = n;
  }
  r->mask = g_malloc(n);
  r->regions = g_array_new(FALSE, FALSE, sizeof(InspRegion));
  r->fail = insp_inspect(sr.map, sr.map_width, sr.map_height, sr.score, frame->width, frame->height,
                         &params, w->work, r->mask, r->regions);
  r->score = sr.score;
  r->threshold = params.threshold;
  r->map_width = sr.map_width;
  r->map_height = sr.map_height;
  r->map = g_memdup2(sr.map, (gsize)sr.map_width * (gsize)sr.map_height * sizeof(float));
  r->model_id = g_strdup(insp_model_get_id(model));
  return TRUE;
}

static const InspScorerFuncs model_scorer_funcs = {
    .worker_init = model_worker_init,
    .worker_finalize = model_worker_finalize,
    .score = model_score,
};

static void
model_scorer_free(gpointer data)
{
  ModelScorer *ms = data;
  insp_model_unref(ms->model);
  g_mutex_clear(&ms->lock);
  g_free(ms);
}

InspScorer *
insp_model_scorer_new(InspModel *model, const InspInspectParams *params)
{
  g_return_val_if_fail(model != NULL && params != NULL, NULL);
  ModelScorer *ms = g_new0(ModelScorer, 1);
  g_mutex_init(&ms->lock);
  ms->model = insp_model_ref(model);
  ms->params = *params;
  return insp_scorer_new(&model_scorer_funcs, ms, model_scorer_free);
}

static ModelScorer *
get_model_scorer(InspScorer *s)
{
  return insp_scorer_get_data(s);
}

void
insp_model_scorer_set_model(InspScorer *s, InspModel *model)
{
  g_return_if_fail(s != NULL && model != NULL);
  ModelScorer *ms = get_model_scorer(s);
  insp_model_ref(model);
  g_mutex_lock(&ms->lock);
  InspModel *old = ms->model;
  ms->model = model;
  g_mutex_unlock(&ms->lock);
  insp_model_unref(old);
}

void
insp_model_scorer_set_params(InspScorer *s, const InspInspectParams *params)
{
  g_return_if_fail(s != NULL && params != NULL);
  ModelScorer *ms = get_model_scorer(s);
  g_mutex_lock(&ms->lock);
  ms->params = *params;
  g_mutex_unlock(&ms->lock);
}

InspModel *
insp_model_scorer_get_model(InspScorer *s)
{
  g_return_val_if_fail(s != NULL, NULL);
  ModelScorer *ms = get_model_scorer(s);
  g_mutex_lock(&ms->lock);
  InspModel *m = insp_model_ref(ms->model);
  g_mutex_unlock(&ms->lock);
  return m;
}
