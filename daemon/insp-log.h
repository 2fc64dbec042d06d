/* Logging for the daemon: GLib structured logging, to the journal (with
 * priorities and INSPECTD_* fields) when stderr is connected to it, else one
 * plain line per message on stderr. The level comes from [log] level and can
 * change at any time (a hot config key). g_message() is notice (journal
 * priority 5), g_info() info (6). Libraries log with g_debug() only; those
 * lines show at level "debug". */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  INSP_LOG_LEVEL_ERROR,
  INSP_LOG_LEVEL_WARNING,
  INSP_LOG_LEVEL_NOTICE, /* g_message(), journal priority 5: ready, stop, reload, model swap */
  INSP_LOG_LEVEL_INFO,   /* the default: also g_info(), priority 6 (camera and broker states) */
  INSP_LOG_LEVEL_DEBUG,
} InspLogLevel;

/* Installs the writer (once per process; later calls do nothing). Any thread
 * may log from then on. */
void insp_log_init(void);
/* TRUE when messages go to the journal (stderr is the journal's stream). */
gboolean insp_log_is_journal(void);

void insp_log_set_level(InspLogLevel level);
InspLogLevel insp_log_get_level(void);

/* The station id added to every journal entry as INSPECTD_STATION (copied). */
void insp_log_set_station(const char *station);

/* A message about one part: INSPECTD_SEQ and INSPECTD_PART_ID (when not NULL)
 * ride along in the journal and in brackets on stderr. @level is one of
 * G_LOG_LEVEL_{CRITICAL,WARNING,MESSAGE,INFO,DEBUG}. */
void insp_log_part(GLogLevelFlags level, guint64 seq, const char *part_id, const char *format, ...)
    G_GNUC_PRINTF(4, 5);

G_END_DECLS
