/* Placeholder until the daemon library lands. */
#include <glib.h>
int insp_daemon_placeholder(void);
int insp_daemon_placeholder(void) { return 0; }
