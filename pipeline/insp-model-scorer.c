/* The default InspScorer over an InspModel: insp_model_score() then
 * insp_inspect() with the current InspInspectParams.
 *
 * Invariants: the current model and params change only under the lock, and
 * each frame copies both under it once, so a frame is scored by one model with
 * one set of params; a swap applies from the next frame; a worker's scratch
 * belongs to the model it was made for and is rebuilt when the model changes.
 * A result's mask, regions and map are a set of its worker's recycled
 * buffers, lent until the result is freed; a set is never lent twice at once.
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

/* The buffers one result borrows: its mask, regions and map copy, and the
 * model whose id it names. They go back to the pool of the worker that lent
 * them when the result is freed (on "insp-results"), and are reused by that
 * worker's next frames: no allocation per frame once the pool holds as many
 * sets as the worker has results in flight. */
typedef struct _BufPool BufPool;

typedef struct {
  BufPool *pool; /* a reference */
  guint8 *mask;
  gsize mask_len;
  float *map;
  gsize map_len;
  GArray *regions;  /* of InspRegion */
  InspModel *model; /* a reference while lent: result->model_id is its id */
} Bufs;

#define POOL_KEEP 16 /* sets a pool keeps; more in flight are freed on return */

struct _BufPool {
  gint ref_count;
  GMutex lock;
  GPtrArray *free; /* of Bufs *, ready for reuse */
};

static void
bufs_free(Bufs *b)
{
  g_free(b->mask);
  g_free(b->map);
  g_array_unref(b->regions);
  g_clear_pointer(&b->model, insp_model_unref);
  g_free(b);
}

static BufPool *
pool_new(void)
{
  BufPool *pool = g_new0(BufPool, 1);
  pool->ref_count = 1;
  g_mutex_init(&pool->lock);
  pool->free = g_ptr_array_new_with_free_func((GDestroyNotify)bufs_free);
  return pool;
}

static void
pool_unref(BufPool *pool)
{
  if (pool == NULL || !g_atomic_int_dec_and_test(&pool->ref_count))
    return;
  g_ptr_array_unref(pool->free);
  g_mutex_clear(&pool->lock);
  g_free(pool);
}

/* A set of buffers from @pool (reused, or new when all are lent). */
static Bufs *
pool_take(BufPool *pool)
{
  Bufs *b = NULL;
  g_mutex_lock(&pool->lock);
  if (pool->free->len > 0)
    b = g_ptr_array_steal_index_fast(pool->free, pool->free->len - 1);
  g_mutex_unlock(&pool->lock);
  if (b == NULL) {
    b = g_new0(Bufs, 1);
    b->regions = g_array_new(FALSE, FALSE, sizeof(InspRegion));
  }
  g_atomic_int_inc(&pool->ref_count);
  b->pool = pool;
  return b;
}

/* The result's lent_release: back to the pool (any thread). */
static void
bufs_return(gpointer data)
{
  Bufs *b = data;
  BufPool *pool = g_steal_pointer(&b->pool);
  g_clear_pointer(&b->model, insp_model_unref);
  g_mutex_lock(&pool->lock);
  gboolean keep = pool->free->len < POOL_KEEP;
  if (keep)
    g_ptr_array_add(pool->free, b);
  g_mutex_unlock(&pool->lock);
  if (!keep)
    bufs_free(b);
  pool_unref(pool);
}

typedef struct {
  InspModel *model; /* the model @scratch was made for (a reference) */
  InspModelScratch *scratch;
  float *work;
  gsize work_len;
  BufPool *pool; /* the buffers this worker lends to its results */
} ModelWorker;

static gpointer
model_worker_init(gpointer data, int worker, GError **error)
{
  ModelWorker *w = g_new0(ModelWorker, 1);
  w->pool = pool_new();
  return w;
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
  pool_unref(w->pool); /* results still in flight hold it until they return */
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
  /* Mask, regions and the map copy (the scratch's map is overwritten by the
   * next frame) come from the worker's recycled buffers; model_id is the
   * model's own string, kept alive by the reference the buffers hold. */
  Bufs *b = pool_take(w->pool);
  gsize map_n = (gsize)sr.map_width * (gsize)sr.map_height;
  if (b->mask_len < n) {
    g_free(b->mask);
    b->mask = g_malloc(n);
    b->mask_len = n;
  }
  if (b->map_len < map_n) {
    g_free(b->map);
    b->map = g_new(float, map_n);
    b->map_len = map_n;
  }
  g_array_set_size(b->regions, 0);
  b->model = insp_model_ref(model);
  r->mask = b->mask;
  r->regions = b->regions;
  gint64 t0 = g_get_monotonic_time();
  r->fail = insp_inspect(sr.map, sr.map_width, sr.map_height, sr.score, frame->width, frame->height,
                         &params, w->work, r->mask, r->regions);
  r->stage_ms[INSP_STAGE_PREPROCESS] = sr.ms_preprocess;
  r->stage_ms[INSP_STAGE_BACKBONE] = sr.ms_backbone + sr.ms_features;
  r->stage_ms[INSP_STAGE_SEARCH] = sr.ms_distance;
  r->stage_ms[INSP_STAGE_MAP] = sr.ms_map;
  r->stage_ms[INSP_STAGE_REGIONS] = (double)(g_get_monotonic_time() - t0) / 1000.0;
  r->score = sr.score;
  r->threshold = params.threshold;
  r->map_width = sr.map_width;
  r->map_height = sr.map_height;
  r->aspect_differs =
      insp_model_aspect_differs(model, frame->width, frame->height, &r->aspect_ratio);
  if (map_n > 0)
    memcpy(b->map, sr.map, map_n * sizeof(float));
  r->map = map_n > 0 ? b->map : NULL;
  r->model_id = (char *)insp_model_get_id(model);
  r->lent_release = bufs_return;
  r->lent = b;
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
