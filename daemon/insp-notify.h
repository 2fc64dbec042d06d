/* sd_notify glue: tells the service manager where the daemon is in its life.
 * Every call is a no-op (returning FALSE) when $NOTIFY_SOCKET is unset, so the
 * daemon runs the same in a terminal, under a test and under systemd.
 * systemd 252 has no Type=notify-reload, so a reload is announced by the
 * daemon itself: RELOADING=1 with MONOTONIC_USEC, then READY=1.
 * Main thread only (systemd checks the sender's PID with NotifyAccess=main). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* TRUE when $NOTIFY_SOCKET is set. */
gboolean insp_notify_available(void);

/* "READY=1", followed by "\nSTATUS=@status" when @status is not NULL. */
gboolean insp_notify_ready(const char *status);
/* "STATUS=..." (one line: newlines in the text become spaces). */
gboolean insp_notify_status(const char *format, ...) G_GNUC_PRINTF(1, 2);
/* "WATCHDOG=1". */
gboolean insp_notify_watchdog(void);
/* "RELOADING=1\nMONOTONIC_USEC=<CLOCK_MONOTONIC now in µs>". */
gboolean insp_notify_reloading(void);
/* "STOPPING=1", followed by "\nSTATUS=@status" when @status is not NULL. */
gboolean insp_notify_stopping(const char *status);
/* "ERRNO=@errnum" with a STATUS line, for a start-up failure. */
gboolean insp_notify_errno(int errnum, const char *status);

/* The watchdog period systemd expects pings within (WatchdogSec=, from
 * $WATCHDOG_USEC when $WATCHDOG_PID is ours or unset), or 0 when the watchdog
 * is off. */
guint64 insp_notify_watchdog_usec(void);

G_END_DECLS
