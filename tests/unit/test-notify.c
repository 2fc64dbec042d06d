/* The sd_notify glue, byte for byte: the test binds its own AF_UNIX datagram
 * socket, points $NOTIFY_SOCKET at it (PID 1 here need not be systemd) and
 * reads back each message. Also the systemd units as built: `systemd-analyze
 * verify` passes and `systemd-analyze security --offline=true` scores 2.0 or
 * lower (skipped, saying why, without systemd-analyze). And the log writer's
 * plain-stderr mode with its level filter. */
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "insp-log.h"
#include "insp-notify.h"

typedef struct {
  int fd;
  char *dir;
  char *path;
} Listener;

static void
listener_open(Listener *l)
{
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  g_autoptr(GError) error = NULL;

  l->dir = g_dir_make_tmp("test-notify-XXXXXX", &error);
  g_assert_no_error(error);
  l->path = g_build_filename(l->dir, "notify", NULL);
  g_assert_cmpuint(strlen(l->path), <, sizeof sa.sun_path);
  strcpy(sa.sun_path, l->path);
  l->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint(l->fd, >=, 0);
  g_assert_cmpint(bind(l->fd, (struct sockaddr *)&sa, sizeof sa), ==, 0);
  g_setenv("NOTIFY_SOCKET", l->path, TRUE);
}

static void
listener_close(Listener *l)
{
  g_unsetenv("NOTIFY_SOCKET");
  close(l->fd);
  g_unlink(l->path);
  g_rmdir(l->dir);
  g_free(l->path);
  g_free(l->dir);
}

/* The next datagram, or NULL when none is waiting. */
static char *
listener_recv(Listener *l)
{
  char buf[4096];
  ssize_t n = recv(l->fd, buf, sizeof buf - 1, MSG_DONTWAIT);

  if (n < 0) {
    g_assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    return NULL;
  }
  buf[n] = '\0';
  return g_strdup(buf);
}

static void
assert_next(Listener *l, const char *expected)
{
  g_autofree char *got = listener_recv(l);
  g_assert_cmpstr(got, ==, expected);
}

static void
test_messages(void)
{
  Listener l;

  listener_open(&l);
  g_assert_true(insp_notify_available());
  g_assert_true(insp_notify_ready(NULL));
  assert_next(&l, "READY=1");
  g_assert_true(insp_notify_ready("inspecting, model patchcore-builtin-00000000"));
  assert_next(&l, "READY=1\nSTATUS=inspecting, model patchcore-builtin-00000000");
  g_assert_true(insp_notify_status("%.1f fps, %d pass, %d fail", 12.5, 40, 2));
  assert_next(&l, "STATUS=12.5 fps, 40 pass, 2 fail");
  /* A status is one line: an embedded newline must not smuggle in READY=1. */
  g_assert_true(insp_notify_status("evil\nREADY=1"));
  assert_next(&l, "STATUS=evil READY=1");
  g_assert_true(insp_notify_watchdog());
  assert_next(&l, "WATCHDOG=1");
  g_assert_true(insp_notify_stopping("draining"));
  assert_next(&l, "STOPPING=1\nSTATUS=draining");
  g_assert_true(insp_notify_stopping(NULL));
  assert_next(&l, "STOPPING=1");
  g_assert_true(insp_notify_errno(2, "model file missing"));
  assert_next(&l, "STATUS=model file missing\nERRNO=2");
  g_assert_null(listener_recv(&l));
  listener_close(&l);
}

static void
test_reloading(void)
{
  Listener l;
  guint64 usec = 0;

  listener_open(&l);
  gint64 before = g_get_monotonic_time();
  g_assert_true(insp_notify_reloading());
  gint64 after = g_get_monotonic_time();
  g_autofree char *got = listener_recv(&l);
  g_assert_nonnull(got);
  g_assert_true(g_str_has_prefix(got, "RELOADING=1\nMONOTONIC_USEC="));
  const char *num = got + strlen("RELOADING=1\nMONOTONIC_USEC=");
  g_assert_true(g_ascii_string_to_unsigned(num, 10, 0, G_MAXUINT64, &usec, NULL));
  /* CLOCK_MONOTONIC, the clock systemd compares it with. */
  g_assert_cmpuint(usec, >=, (guint64)before);
  g_assert_cmpuint(usec, <=, (guint64)after);
  g_assert_true(insp_notify_ready(NULL));
  assert_next(&l, "READY=1");
  listener_close(&l);
}

static void
test_no_socket(void)
{
  g_unsetenv("NOTIFY_SOCKET");
  g_assert_false(insp_notify_available());
  g_assert_false(insp_notify_ready("x"));
  g_assert_false(insp_notify_status("x %d", 1));
  g_assert_false(insp_notify_watchdog());
  g_assert_false(insp_notify_reloading());
  g_assert_false(insp_notify_stopping(NULL));
}

static void
test_watchdog_usec(void)
{
  g_autofree char *pid = g_strdup_printf("%d", (int)getpid());

  g_unsetenv("WATCHDOG_USEC");
  g_unsetenv("WATCHDOG_PID");
  g_assert_cmpuint(insp_notify_watchdog_usec(), ==, 0);
  g_setenv("WATCHDOG_USEC", "30000000", TRUE);
  g_setenv("WATCHDOG_PID", pid, TRUE);
  g_assert_cmpuint(insp_notify_watchdog_usec(), ==, 30000000);
  /* Meant for another process (e.g. inherited by a child): not ours. */
  g_setenv("WATCHDOG_PID", "1", TRUE);
  g_assert_cmpuint(insp_notify_watchdog_usec(), ==, 0);
  g_unsetenv("WATCHDOG_USEC");
  g_unsetenv("WATCHDOG_PID");
}

static char *
built_unit(const char *name)
{
  const char *exe = g_getenv("INSPECTD");
  g_assert_nonnull(exe);
  g_autofree char *daemon_dir = g_path_get_dirname(exe);
  g_autofree char *build_dir = g_path_get_dirname(daemon_dir);
  return g_build_filename(build_dir, "systemd", name, NULL);
}

static int
run(const char *cmd, char **out)
{
  int status = -1;
  g_autofree char *err = NULL;
  g_autoptr(GError) error = NULL;

  g_assert_true(g_spawn_command_line_sync(cmd, out, &err, &status, &error));
  g_assert_no_error(error);
  if (err && *err)
    g_test_message("%s: %s", cmd, err);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Copies the built unit to @dir/@as with ExecStart and ExecReload pointing
 * at the built binary (verify checks that the command exists). */
static char *
unit_copy(const char *src, const char *dir, const char *as)
{
  g_autofree char *text = NULL;
  g_autoptr(GError) error = NULL;

  g_assert_true(g_file_get_contents(src, &text, NULL, &error));
  g_assert_no_error(error);
  g_assert_nonnull(strstr(text, "Type=notify\n"));
  g_assert_nonnull(strstr(text, "WatchdogSec="));
  g_assert_null(strstr(text, "@bindir@"));
  /* A reload validates the config first, so that a bad one fails it. */
  {
    const char *check = strstr(text, "/inspectd check-config ");
    const char *hup = strstr(text, "ExecReload=/bin/kill -HUP $MAINPID");

    g_assert_nonnull(check);
    g_assert_nonnull(hup);
    g_assert_true(check < hup);
  }
  char *exec = strstr(text, "ExecStart=");
  g_assert_nonnull(exec);
  char *args = strstr(exec, "/inspectd run");
  g_assert_nonnull(args);
  /* Every command line of the unit (ExecStart, ExecReload) runs the
   * installed binary: point them all at the built one. */
  g_autofree char *installed =
      g_strndup(exec + strlen("ExecStart="), (gsize)(args - exec) - strlen("ExecStart="));
  g_autofree char *installed_bin = g_strconcat(installed, "/inspectd ", NULL);
  g_autofree char *built_bin = g_strconcat(g_getenv("INSPECTD"), " ", NULL);
  g_autoptr(GString) patched = g_string_new(text);
  g_assert_cmpuint(g_string_replace(patched, installed_bin, built_bin, 0), >=, 1);
  char *dst = g_build_filename(dir, as, NULL);
  g_assert_true(g_file_set_contents(dst, patched->str, -1, &error));
  g_assert_no_error(error);
  return dst;
}

static void
test_units(void)
{
  g_autofree char *sa = g_find_program_in_path("systemd-analyze");
  g_autoptr(GError) error = NULL;
  struct {
    const char *built, *as;
  } units[] = {{"inspectd.service", "inspectd.service"},
               {"inspectd@.service", "inspectd@cam1.service"}};

  if (sa == NULL) {
    g_test_skip("systemd-analyze is not installed (apt-get install systemd)");
    return;
  }
  g_autofree char *dir = g_dir_make_tmp("test-units-XXXXXX", &error);
  g_assert_no_error(error);
  for (gsize i = 0; i < G_N_ELEMENTS(units); i++) {
    g_autofree char *src = built_unit(units[i].built);
    g_autofree char *unit = unit_copy(src, dir, units[i].as);
    g_autofree char *verify = g_strdup_printf("%s verify '%s'", sa, unit);
    g_autofree char *out = NULL;

    g_assert_cmpint(run(verify, NULL), ==, 0);
    /* The exposure score, 0.0 (best) .. 10.0: at most 2.0. */
    g_autofree char *security =
        g_strdup_printf("%s security --offline=true --no-pager '%s'", sa, unit);
    run(security, &out);
    const char *at = out ? strstr(out, "Overall exposure level for ") : NULL;
    g_assert_nonnull(at);
    at = strstr(at, ": ");
    g_assert_nonnull(at);
    double score = g_ascii_strtod(at + 2, NULL);
    g_test_message("%s: exposure %.1f", units[i].as, score);
    g_assert_cmpfloat(score, >, 0.0);
    g_assert_cmpfloat(score, <=, 2.0);
    g_autofree char *threshold =
        g_strdup_printf("%s security --offline=true --threshold=20 '%s'", sa, unit);
    g_autofree char *ignored = NULL;
    g_assert_cmpint(run(threshold, &ignored), ==, 0);
    g_unlink(unit);
  }
  g_rmdir(dir);
}

/* Outside the journal: one plain line per message on stderr, filtered by
 * the level, which can change at any time; part fields ride along. */
static void
test_log_stderr(void)
{
  if (g_test_subprocess()) {
    insp_log_init();
    g_assert_false(insp_log_is_journal());
    insp_log_set_level(INSP_LOG_LEVEL_WARNING);
    insp_log_set_station("st1");
    g_info("hidden info");
    g_debug("hidden debug");
    g_warning("shown warning %d", 1);
    insp_log_part(G_LOG_LEVEL_WARNING, 42, "part-7", "part %s", "rejected");
    insp_log_part(G_LOG_LEVEL_INFO, 43, NULL, "hidden part info");
    insp_log_set_level(INSP_LOG_LEVEL_DEBUG);
    g_debug("shown debug");
    return;
  }
  g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_passed();
  g_test_trap_assert_stderr("*warning: shown warning 1\n*");
  g_test_trap_assert_stderr("*warning: part rejected [seq=42 part=part-7]\n*");
  g_test_trap_assert_stderr("*debug: shown debug\n*");
  g_test_trap_assert_stderr_unmatched("*hidden*");
}

/* Level notice: g_message() is shown (labelled notice), g_info() is not. */
static void
test_log_notice(void)
{
  if (g_test_subprocess()) {
    insp_log_init();
    insp_log_set_level(INSP_LOG_LEVEL_NOTICE);
    g_message("shown notice");
    g_info("hidden info");
    insp_log_part(G_LOG_LEVEL_MESSAGE, 7, NULL, "shown part notice");
    insp_log_part(G_LOG_LEVEL_INFO, 8, NULL, "hidden part info");
    insp_log_set_level(INSP_LOG_LEVEL_WARNING);
    g_message("hidden notice");
    return;
  }
  g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_passed();
  g_test_trap_assert_stderr("*notice: shown notice\n*");
  g_test_trap_assert_stderr("*notice: shown part notice [seq=7]\n*");
  g_test_trap_assert_stderr_unmatched("*hidden*");
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/notify/messages", test_messages);
  g_test_add_func("/notify/reloading", test_reloading);
  g_test_add_func("/notify/no-socket", test_no_socket);
  g_test_add_func("/notify/watchdog-usec", test_watchdog_usec);
  g_test_add_func("/log/notice", test_log_notice);
  g_test_add_func("/systemd/units", test_units);
  g_test_add_func("/log/stderr", test_log_stderr);
  return g_test_run();
}
