/* Cameras: [camera] controls applied to a V4L2 device through libv4l2 (with
 * read-back; the controls come parsed and typed from conf/'s parser), and
 * the listing behind `inspectd cameras`.
 *
 * Ownership: strings returned are owned by the caller. Threads: any; nothing
 * is shared or cached (a hot-plugged camera shows up). */
#pragma once

#include <glib.h>

#include "insp-camera-controls.h"
#include "insp-pipeline-error.h"

G_BEGIN_DECLS

/* Applies @controls to the V4L2 device @device through libv4l2, reads each one
 * back, and appends a message to @warnings (of char *) for every control that
 * is unknown, out of range, failed, or read back different. Returns FALSE with
 * @error only when the device cannot be opened. */
gboolean insp_v4l2_apply_controls(const char *device, const InspCameraControl *controls,
                                  guint n_controls, GPtrArray *warnings, GError **error);

/* Normalises a control name the v4l2-ctl way: lower case, every run of
 * characters other than [a-z0-9] becomes one '_', no '_' at either end.
 * The caller owns the result. */
char *insp_v4l2_control_name(const char *name);

/* A human-readable listing for `inspectd cameras` (owned by the caller):
 * every /dev/video* device with its capabilities, formats, frame sizes and
 * controls (range, step, default, current), then the GenICam cameras Aravis
 * finds (when built with Aravis). With no device it says "no V4L2 devices". */
char *insp_cameras_describe(void);

G_END_DECLS
