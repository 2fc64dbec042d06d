/* Internals shared between the files of pipeline/; not installed, not used
 * outside pipeline/. */
#pragma once

#include "insp-pipeline.h"

G_BEGIN_DECLS

/* Applies @controls to the V4L2 device @device through libv4l2, reads each one
 * back, and appends a message to @warnings (of char *) for every control that
 * is unknown, out of range, failed, or read back different. Returns FALSE with
 * @error only when the device cannot be opened. Any thread. */
gboolean insp_v4l2_apply_controls(const char *device, const InspCameraControl *controls,
                                  guint n_controls, GPtrArray *warnings, GError **error);

/* Normalises a control name the v4l2-ctl way: lower case, every run of
 * characters other than [a-z0-9] becomes one '_', no '_' at either end. */
char *insp_v4l2_control_name(const char *name);

/* The data given to insp_scorer_new(). */
gpointer insp_scorer_get_data(InspScorer *s);

/* Blocks every signal in the calling thread (threads we create call it first). */
void insp_pipeline_block_signals(void);

G_END_DECLS
