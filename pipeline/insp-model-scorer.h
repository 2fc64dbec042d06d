/* The default scorer over an InspModel: insp_model_score(), then
 * insp_inspect() with the current InspInspectParams. Model and params swap
 * atomically, from any thread; a frame is scored by one model with one set of
 * params. */
#pragma once

#include <glib.h>

#include "insp-model.h"
#include "insp-scorer.h"

G_BEGIN_DECLS

/* Takes its own reference of @model and copies @params; the caller owns the
 * returned scorer reference. */
InspScorer *insp_model_scorer_new(InspModel *model, const InspInspectParams *params);
/* Swaps the model atomically: each frame takes a reference of the model
 * current when its scoring starts, so frames in flight finish on the old one;
 * a worker rebuilds its scratch on its next frame. Any thread. */
void insp_model_scorer_set_model(InspScorer *s, InspModel *model);
/* Sets thresholds/ROI atomically; they apply from the next frame. Any thread. */
void insp_model_scorer_set_params(InspScorer *s, const InspInspectParams *params);
/* Returns a new reference of the current model (owned by the caller). */
InspModel *insp_model_scorer_get_model(InspScorer *s);

G_END_DECLS
