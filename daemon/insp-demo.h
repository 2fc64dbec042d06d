/* The demo line: what `inspectd run` does with no config file. A replayed
 * line of synthetic parts (every Nth one defective) written to a temporary
 * folder, a model trained at start on other good synthetic parts, and the
 * config that replays them. */
#pragma once

#include <glib.h>

#include "insp-conf.h"
#include "insp-model.h"

G_BEGIN_DECLS

typedef struct _InspDemo InspDemo;

/* Writes the line's parts: @size px square (0: 256), every @defect_every th
 * defective (0: 5), replayed at @fps (0: as fast as the workers go). */
InspDemo *insp_demo_new(int size, guint defect_every, double fps, GError **error);
/* Removes the line's files and frees. NULL is fine. */
void insp_demo_free(InspDemo *demo);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspDemo, insp_demo_free)

/* Points @cfg at the line: files source looping over its parts, state and
 * spool in $STATE_DIRECTORY or the user's state folder. */
void insp_demo_fixup_config(InspDemo *demo, InspConfig *cfg);
/* A model trained on good synthetic parts of @size px (<= 0: 256) that the
 * demo line never replays; also the model of a config without [model] path. */
InspModel *insp_demo_train_model(int size, GError **error);

G_END_DECLS
