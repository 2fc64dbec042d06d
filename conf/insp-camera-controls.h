/* Camera controls: the one parser of "[camera] controls", with typed values,
 * used by conf/ (validation at load and check-config) and by pipeline/
 * (applying them to a V4L2 device or to aravissrc). Links GLib only, so that
 * pipeline/ may link it without linking the rest of conf/.
 *
 * Grammar: items "name=value" separated by commas or new lines, spaces around
 * either side ignored, empty items skipped. A name is [A-Za-z][A-Za-z0-9_]*
 * (v4l2-ctl names, GenICam feature names); a value is an integer (decimal,
 * signed 64-bit), a boolean (true/false, yes/no, on/off: any case), or a name
 * [A-Za-z][A-Za-z0-9_]* (a V4L2 menu item such as manual_mode, a GenICam
 * enumeration entry such as On). Limits: INSP_CAMERA_CONTROLS_MAX items, names
 * and values of at most INSP_CAMERA_CONTROL_MAX_LEN bytes; the same name twice
 * (compared without case) is refused.
 *
 * Ownership: arrays returned are owned by the caller (free with
 * insp_camera_controls_free()). Threads: any; no shared state. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define INSP_CAMERA_CONTROLS_ERROR (insp_camera_controls_error_quark())
GQuark insp_camera_controls_error_quark(void);

typedef enum {
  INSP_CAMERA_CONTROLS_ERROR_SYNTAX,    /* an item is not name=value, or a value has no type */
  INSP_CAMERA_CONTROLS_ERROR_DUPLICATE, /* a name is given twice */
  INSP_CAMERA_CONTROLS_ERROR_LIMIT,     /* too many items, or a name/value too long */
} InspCameraControlsError;

#define INSP_CAMERA_CONTROLS_MAX 64
#define INSP_CAMERA_CONTROL_MAX_LEN 64

typedef enum {
  INSP_CAMERA_CONTROL_INTEGER, /* @value is the number */
  INSP_CAMERA_CONTROL_BOOLEAN, /* @value is 0 or 1; @text the word as written ("off") */
  INSP_CAMERA_CONTROL_NAME,    /* a menu item or enumeration entry: @text; @value 0 */
} InspCameraControlType;

typedef struct {
  char *name;    /* lower case, as v4l2-ctl prints it: "gain", "triggermode" */
  char *feature; /* as written, case kept: the GenICam feature name ("TriggerMode") */
  InspCameraControlType type;
  gint64 value; /* INTEGER: the number; BOOLEAN: 0 or 1; NAME: 0 */
  char *text;   /* the value as written ("300", "off", "manual_mode", "On") */
} InspCameraControl;

/* Parses @text (NUL-terminated) into *@out (n_out entries, in order; NULL
 * when there are none). On failure *@out and *@n_out are untouched and @error
 * says which item and why. */
gboolean insp_camera_controls_parse(const char *text, InspCameraControl **out, guint *n_out,
                                    GError **error);
/* A deep copy of @n controls (NULL when @n is 0), owned by the caller. */
InspCameraControl *insp_camera_controls_copy(const InspCameraControl *controls, guint n);
/* Frees @n controls and the array; accepts NULL. */
void insp_camera_controls_free(InspCameraControl *controls, guint n);
/* Whether two lists set the same names, in the same order, to the same values. */
gboolean insp_camera_controls_equal(const InspCameraControl *a, guint n_a,
                                    const InspCameraControl *b, guint n_b);

G_END_DECLS
