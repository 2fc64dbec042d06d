/* insp-log: the GLib log writer of the inspectd process.
 *
 * Invariants: the writer is installed once (g_log_set_writer_func allows one);
 * the level is an atomic int, the station a reference-counted string swapped
 * under a mutex (a writer takes a reference and sends outside the lock, so a
 * slow journal holds up the thread that logs and no other), so any
 * thread (workers, the MQTT thread, GStreamer's streaming threads) may log
 * while the main loop changes either. Journal entries carry PRIORITY (from
 * the GLib level: g_message() is notice, 5; g_info() is info, 6), GLIB_DOMAIN, MESSAGE,
 * INSPECTD_STATION and whatever fields the caller gave (INSPECTD_SEQ, INSPECTD_PART_ID). The writer
 * never calls back into GLib logging. */
#define G_LOG_DOMAIN "inspectd"
#include "insp-log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static gint log_level = INSP_LOG_LEVEL_INFO;
static gboolean to_journal;
static GMutex station_lock;
static char *station; /* GRefString */

void
insp_log_set_level(InspLogLevel level)
{
  g_atomic_int_set(&log_level, (gint)level);
}

InspLogLevel
insp_log_get_level(void)
{
  return (InspLogLevel)g_atomic_int_get(&log_level);
}

void
insp_log_set_station(const char *id)
{
  char *fresh = id ? g_ref_string_new(id) : NULL, *old;

  g_mutex_lock(&station_lock);
  old = station;
  station = fresh;
  g_mutex_unlock(&station_lock);
  if (old)
    g_ref_string_release(old);
}

gboolean
insp_log_is_journal(void)
{
  return to_journal;
}

static gboolean
level_enabled(GLogLevelFlags flags)
{
  InspLogLevel lvl = insp_log_get_level();

  if (flags & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
    return TRUE;
  if (flags & G_LOG_LEVEL_WARNING)
    return lvl >= INSP_LOG_LEVEL_WARNING;
  if (flags & G_LOG_LEVEL_MESSAGE)
    return lvl >= INSP_LOG_LEVEL_NOTICE;
  if (flags & G_LOG_LEVEL_INFO)
    return lvl >= INSP_LOG_LEVEL_INFO;
  return lvl >= INSP_LOG_LEVEL_DEBUG;
}

static const char *
level_label(GLogLevelFlags flags)
{
  if (flags & G_LOG_LEVEL_ERROR)
    return "error";
  if (flags & G_LOG_LEVEL_CRITICAL)
    return "critical";
  if (flags & G_LOG_LEVEL_WARNING)
    return "warning";
  if (flags & G_LOG_LEVEL_MESSAGE)
    return "notice";
  if (flags & G_LOG_LEVEL_INFO)
    return "info";
  return "debug";
}

static const char *
field_string(const GLogField *f)
{
  return f->length < 0 ? (const char *)f->value : NULL;
}

static GLogWriterOutput
write_stderr(GLogLevelFlags flags, const GLogField *fields, gsize n_fields)
{
  const char *message = NULL, *domain = NULL;
  GString *extra = g_string_new(NULL);

  for (gsize i = 0; i < n_fields; i++) {
    const char *v = NULL;
    if (g_strcmp0(fields[i].key, "MESSAGE") == 0)
      message = field_string(&fields[i]);
    else if (g_strcmp0(fields[i].key, "GLIB_DOMAIN") == 0)
      domain = field_string(&fields[i]);
    else if (g_strcmp0(fields[i].key, "INSPECTD_SEQ") == 0 && (v = field_string(&fields[i])))
      g_string_append_printf(extra, "%sseq=%s", extra->len ? " " : "", v);
    else if (g_strcmp0(fields[i].key, "INSPECTD_PART_ID") == 0 && (v = field_string(&fields[i])))
      g_string_append_printf(extra, "%spart=%s", extra->len ? " " : "", v);
  }
  /* One fprintf per message, so lines from several threads do not interleave. */
  fprintf(stderr, "inspectd: %s: %s%s%s%s%s%s\n", level_label(flags),
          domain && g_strcmp0(domain, G_LOG_DOMAIN) != 0 ? domain : "",
          domain && g_strcmp0(domain, G_LOG_DOMAIN) != 0 ? ": " : "", message ? message : "",
          extra->len ? " [" : "", extra->str, extra->len ? "]" : "");
  fflush(stderr);
  g_string_free(extra, TRUE);
  return G_LOG_WRITER_HANDLED;
}

static GLogWriterOutput
writer(GLogLevelFlags flags, const GLogField *fields, gsize n_fields, gpointer user_data)
{
  if (!level_enabled(flags))
    return G_LOG_WRITER_HANDLED;
  if (to_journal) {
    GLogField *all = g_newa(GLogField, n_fields + 1);
    GLogWriterOutput out;
    char *st;

    memcpy(all, fields, n_fields * sizeof *fields);
    g_mutex_lock(&station_lock);
    st = station ? g_ref_string_acquire(station) : NULL;
    g_mutex_unlock(&station_lock);
    all[n_fields] = (GLogField){"INSPECTD_STATION", st ? st : "", -1};
    out = g_log_writer_journald(flags, all, st ? n_fields + 1 : n_fields, NULL);
    if (st)
      g_ref_string_release(st);
    if (out == G_LOG_WRITER_HANDLED)
      return out;
  }
  return write_stderr(flags, fields, n_fields);
}

void
insp_log_init(void)
{
  static gsize once;

  if (g_once_init_enter(&once)) {
    to_journal = g_log_writer_is_journald(fileno(stderr));
    g_log_set_writer_func(writer, NULL, NULL);
    g_once_init_leave(&once, 1);
  }
}

static const char *
priority_of(GLogLevelFlags level)
{
  if (level & G_LOG_LEVEL_ERROR)
    return "3";
  if (level & G_LOG_LEVEL_CRITICAL)
    return "4";
  if (level & G_LOG_LEVEL_WARNING)
    return "4";
  if (level & G_LOG_LEVEL_MESSAGE)
    return "5";
  if (level & G_LOG_LEVEL_INFO)
    return "6";
  return "7";
}

void
insp_log_part(GLogLevelFlags level, guint64 seq, const char *part_id, const char *format, ...)
{
  va_list ap;
  char seq_text[24];

  g_return_if_fail(format != NULL);
  if (!level_enabled(level))
    return;
  va_start(ap, format);
  g_autofree char *message = g_strdup_vprintf(format, ap);
  va_end(ap);
  g_snprintf(seq_text, sizeof seq_text, "%" G_GUINT64_FORMAT, seq);
  GLogField fields[] = {
      {"PRIORITY", priority_of(level), -1},
      {"GLIB_DOMAIN", G_LOG_DOMAIN, -1},
      {"MESSAGE", message, -1},
      {"INSPECTD_SEQ", seq_text, -1},
      {"INSPECTD_PART_ID", part_id, -1},
  };
  g_log_structured_array(level, fields, part_id ? G_N_ELEMENTS(fields) : G_N_ELEMENTS(fields) - 1);
}
