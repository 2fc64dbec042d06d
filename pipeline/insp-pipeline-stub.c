/* Placeholder until the capture pipeline lands. */
#include <glib.h>
int insp_pipeline_placeholder(void);
int insp_pipeline_placeholder(void) { return 0; }
