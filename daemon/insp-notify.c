/* insp-notify: the daemon's messages to the service manager, through
 * libsystemd's sd_notify(). Each message is one datagram built whole here, so
 * the test can compare them byte for byte. libsystemd returns 0 without
 * $NOTIFY_SOCKET; a send error is logged at debug and reported as FALSE: the
 * caller decides whether it matters (it rarely does: systemd kills a daemon
 * whose watchdog pings stop, which is the point).
 * Threads: the main thread only (NotifyAccess=main). */
#include "insp-notify.h"

#include <stdarg.h>
#include <systemd/sd-daemon.h>

static gboolean
send_message(const char *msg)
{
  int r = sd_notify(0, msg);

  if (r < 0) {
    g_debug("sd_notify(\"%s\") failed: %s", msg, g_strerror(-r));
    return FALSE;
  }
  return r > 0;
}

/* STATUS= is one line; keep the message one datagram of sane size. */
static char *
status_line(const char *text)
{
  char *s = g_strndup(text, 1024);

  g_strdelimit(s, "\n\r", ' ');
  return s;
}

gboolean
insp_notify_available(void)
{
  const char *e = g_getenv("NOTIFY_SOCKET");

  return e != NULL && e[0] != '\0';
}

gboolean
insp_notify_ready(const char *status)
{
  if (status == NULL)
    return send_message("READY=1");
  g_autofree char *line = status_line(status);
  g_autofree char *msg = g_strdup_printf("READY=1\nSTATUS=%s", line);
  return send_message(msg);
}

gboolean
insp_notify_status(const char *format, ...)
{
  va_list ap;

  g_return_val_if_fail(format != NULL, FALSE);
  if (!insp_notify_available())
    return FALSE;
  va_start(ap, format);
  g_autofree char *text = g_strdup_vprintf(format, ap);
  va_end(ap);
  g_autofree char *line = status_line(text);
  g_autofree char *msg = g_strdup_printf("STATUS=%s", line);
  return send_message(msg);
}

gboolean
insp_notify_watchdog(void)
{
  return send_message("WATCHDOG=1");
}

gboolean
insp_notify_reloading(void)
{
  g_autofree char *msg =
      g_strdup_printf("RELOADING=1\nMONOTONIC_USEC=%" G_GINT64_FORMAT, g_get_monotonic_time());
  return send_message(msg);
}

gboolean
insp_notify_stopping(const char *status)
{
  if (status == NULL)
    return send_message("STOPPING=1");
  g_autofree char *line = status_line(status);
  g_autofree char *msg = g_strdup_printf("STOPPING=1\nSTATUS=%s", line);
  return send_message(msg);
}

gboolean
insp_notify_errno(int errnum, const char *status)
{
  g_autofree char *line = status_line(status ? status : "failed");
  g_autofree char *msg = g_strdup_printf("STATUS=%s\nERRNO=%d", line, errnum);
  return send_message(msg);
}

guint64
insp_notify_watchdog_usec(void)
{
  uint64_t usec = 0;

  if (sd_watchdog_enabled(0, &usec) <= 0)
    return 0;
  return usec;
}
