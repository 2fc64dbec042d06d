/* The error domain of pipeline/: one domain for the folder's modules (frame
 * queue, scorers, workers, camera, pipeline), so that a caller tells a
 * capture failure from a scoring failure by code, not by module. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define INSP_PIPELINE_ERROR (insp_pipeline_error_quark())
GQuark insp_pipeline_error_quark(void);

typedef enum {
  INSP_PIPELINE_ERROR_OPTIONS,   /* an option is missing or invalid (named) */
  INSP_PIPELINE_ERROR_GRAPH,     /* the capture graph cannot be built (missing element...) */
  INSP_PIPELINE_ERROR_DEVICE,    /* a camera device cannot be opened or queried */
  INSP_PIPELINE_ERROR_CONTROL,   /* a control is unknown, out of range, or did not take */
  INSP_PIPELINE_ERROR_TRIGGER,   /* trigger queue full, or not in trigger mode */
  INSP_PIPELINE_ERROR_NOT_BUILT, /* the capture source is known but was not compiled in */
  INSP_PIPELINE_ERROR_SCORE,     /* a scorer failed on a frame */
} InspPipelineError;

G_END_DECLS
