/* The daemon end to end: `$INSPECTD run -c cfg` replaying synthetic parts
 * (files source) through a model this test trains, publishing to a real
 * mosquitto on a free loopback port, under a NOTIFY_SOCKET this test listens
 * on (PID 1 here need not be systemd).
 *
 * Checked: READY, STATUS, WATCHDOG, RELOADING/READY and STOPPING arrive in
 * that order; a threshold edit in the config file changes the verdicts of
 * later frames with no seq lost; an invalid edit is rejected (event
 * published) and the old threshold stays; a model swap under load loses no
 * frame and later results name the new model; the watchdog stops when the
 * results stop while frames wait; SIGTERM drains and flushes
 * (every printed decision reached the broker) and exits 0; seq carries on in
 * the next run; a missing model fails start-up with exit 1 and one line. */
#include <errno.h>
#include <gio/gio.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "insp-model.h"
#include "insp-spool.h"
#include "mqtt-helpers.h"
#include "insp-synth.h"

#define SIZE 128
#define N_PARTS 10
#define STATION "teststation"

typedef struct {
  char *dir;
  char *images, *cfg_dir, *cfg_path, *state_dir, *model_a, *model_b;
  char *model_a_id, *model_b_id;
  int notify_fd;
  GAsyncQueue *notify_queue; /* datagrams read by the notify thread */
  GThread *notify_thread;
  GMutex wd_lock;
  GArray *wd_times; /* gint64 monotonic time of each WATCHDOG=1 received */
  char *notify_path;
  GPtrArray *notes; /* every datagram received, in order */
  GSubprocess *broker;
  GSubprocess *sub;
  char *sub_out;
  int port;
  gboolean ready;
  gboolean can_mount; /* in a private mount namespace, as root */
  char *skip_reason;
} Fixture;

static Fixture fx;

/* ---- helpers ---------------------------------------------------------------- */

static void
write_file(const char *path, const char *text)
{
  g_autoptr(GError) error = NULL;

  g_assert_true(g_file_set_contents(path, text, -1, &error));
  g_assert_no_error(error);
}

static char *
read_file(const char *path)
{
  char *text = NULL;

  if (!g_file_get_contents(path, &text, NULL, NULL))
    return g_strdup("");
  return text;
}

static InspImage *
train_image(int index, gpointer user_data, GError **error)
{
  InspImage *img = NULL;
  guint64 base = GPOINTER_TO_UINT(user_data);

  if (!insp_synth_part(base + (guint64)index * 7919, INSP_SYNTH_GOOD, SIZE, SIZE, &img, NULL,
                       error))
    return NULL;
  return img;
}

static char *
train_model(const char *path, guint64 seed, double coreset)
{
  InspTrainOptions opt;
  g_autoptr(GError) error = NULL;

  insp_train_options_init(&opt);
  opt.backbone = "builtin";
  opt.coreset_fraction = coreset;
  opt.input_size = 224; /* small and quick: the test is about the daemon */
  opt.seed = seed;
  g_autoptr(InspModel) m = insp_model_train(
      &opt, 12, train_image, GUINT_TO_POINTER((guint)seed * 1000u), NULL, NULL, &error);
  g_assert_no_error(error);
  g_assert_true(insp_model_save(m, path, &error));
  g_assert_no_error(error);
  /* The id names the file's content: take it from the saved file. */
  g_autoptr(InspModel) loaded = insp_model_load(path, &error);
  g_assert_no_error(error);
  return g_strdup(insp_model_get_id(loaded));
}

static char *
config_text(const char *model, const char *threshold)
{
  return g_strdup_printf(
      "[station]\nid = " STATION "\nstate_dir = %s\n"
      "[camera]\nsource = files\nlocation = %s/*.png\nloop = true\nfps = 15\n"
      "drop = never\n"
      "[model]\npath = %s\nworkers = 1\n"
      "[inspection]\nthreshold = %s\n"
      "[mqtt]\nhost = 127.0.0.1\nport = %d\ncommands = all\ninsecure_commands = true\n"
      "[spool]\ndir = %s/spool\n"
      "[log]\nlevel = info\n",
      fx.state_dir, fx.images, model, threshold, fx.port, fx.state_dir);
}

/* ---- notify socket ------------------------------------------------------------- */

/* Reads every datagram as it comes, as systemd does: a unix datagram queue
 * holds only a few, and a full one would block the daemon's sd_notify(). */
static gpointer
notify_reader(gpointer data)
{
  for (;;) {
    char buf[4096];
    ssize_t n = recv(fx.notify_fd, buf, sizeof buf - 1, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return NULL; /* closed at teardown */
    buf[n] = '\0';
    if (strcmp(buf, "WATCHDOG=1") == 0) {
      gint64 now = g_get_monotonic_time();
      g_mutex_lock(&fx.wd_lock);
      g_array_append_val(fx.wd_times, now);
      g_mutex_unlock(&fx.wd_lock);
    }
    g_async_queue_push(fx.notify_queue, g_strdup(buf));
  }
}

static void
notify_open(void)
{
  struct sockaddr_un sa = {.sun_family = AF_UNIX};

  fx.notify_path = g_build_filename(fx.dir, "notify", NULL);
  g_assert_cmpuint(strlen(fx.notify_path), <, sizeof sa.sun_path);
  strcpy(sa.sun_path, fx.notify_path);
  fx.notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint(fx.notify_fd, >=, 0);
  g_assert_cmpint(bind(fx.notify_fd, (struct sockaddr *)&sa, sizeof sa), ==, 0);
  fx.notes = g_ptr_array_new_with_free_func(g_free);
  fx.notify_queue = g_async_queue_new_full(g_free);
  g_mutex_init(&fx.wd_lock);
  fx.wd_times = g_array_new(FALSE, FALSE, sizeof(gint64));
  fx.notify_thread = g_thread_new("notify-reader", notify_reader, NULL);
}

/* Receives datagrams until one starts with @prefix (returns its index in
 * fx.notes), or -1 after @timeout_s. Earlier ones are kept in fx.notes. */
static int
notify_wait(const char *prefix, double timeout_s)
{
  gint64 deadline = g_get_monotonic_time() + (gint64)(timeout_s * G_USEC_PER_SEC);

  for (;;) {
    gint64 left = deadline - g_get_monotonic_time();
    char *note;

    if (left <= 0)
      return -1;
    note = g_async_queue_timeout_pop(fx.notify_queue, (guint64)left);
    if (note == NULL)
      return -1;
    g_ptr_array_add(fx.notes, note);
    if (g_str_has_prefix(note, prefix))
      return (int)fx.notes->len - 1;
  }
}

/* ---- decisions on stdout --------------------------------------------------------- */

typedef struct {
  guint64 seq;
  char part[64];
  gboolean fail;
  double score, threshold;
} Line;

static GArray *
parse_lines(const char *path)
{
  g_autofree char *text = read_file(path);
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  GArray *out = g_array_new(FALSE, TRUE, sizeof(Line));

  for (char **l = lines; *l; l++) {
    Line x = {0};
    char verdict[8] = "";
    unsigned regions = 0;
    if (!g_str_has_prefix(*l, "seq="))
      continue;
    int got = sscanf(
        *l, "seq=%" G_GUINT64_FORMAT " part=%63s verdict=%7s score=%lf threshold=%lf regions=%u",
        &x.seq, x.part, verdict, &x.score, &x.threshold, &regions);
    g_assert_cmpint(got, ==, 6);
    x.fail = g_str_equal(verdict, "fail");
    g_array_append_val(out, x);
  }
  return out;
}

static GArray *
wait_lines(const char *path, guint at_least, double timeout_s)
{
  gint64 deadline = g_get_monotonic_time() + (gint64)(timeout_s * G_USEC_PER_SEC);

  for (;;) {
    GArray *a = parse_lines(path);
    if (a->len >= at_least || g_get_monotonic_time() > deadline)
      return a;
    g_array_unref(a);
    g_usleep(100000);
  }
}

static void
assert_contiguous(GArray *a)
{
  for (guint i = 1; i < a->len; i++)
    g_assert_cmpuint(g_array_index(a, Line, i).seq, ==, g_array_index(a, Line, i - 1).seq + 1);
}

/* How many of the decisions in @all the subscriber has not seen (by seq)
 * after waiting up to @timeout_s for them. */
static guint
missing_on_broker(GArray *all, double timeout_s)
{
  gint64 deadline = g_get_monotonic_time() + (gint64)(timeout_s * G_USEC_PER_SEC);
  guint missing;

  for (;;) {
    g_autofree char *sub = read_file(fx.sub_out);
    missing = 0;
    for (guint i = 0; i < all->len; i++) {
      g_autofree char *needle =
          g_strdup_printf("\"seq\":%" G_GUINT64_FORMAT ",", g_array_index(all, Line, i).seq);
      missing += strstr(sub, needle) == NULL;
    }
    if (missing == 0 || g_get_monotonic_time() > deadline)
      return missing;
    g_usleep(100000);
  }
}

/* ---- set-up --------------------------------------------------------------------- */

static gboolean
fixture_setup(void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *mosquitto = g_find_program_in_path("mosquitto");
  g_autofree char *mosquitto_sub = g_find_program_in_path("mosquitto_sub");

  if (mosquitto == NULL || mosquitto_sub == NULL) {
    fx.skip_reason = g_strdup("mosquitto and mosquitto_sub are needed (apt-get install mosquitto "
                              "mosquitto-clients)");
    return FALSE;
  }
  if (g_getenv("INSPECTD") == NULL) {
    fx.skip_reason = g_strdup("$INSPECTD is not set (run through meson test)");
    return FALSE;
  }
  fx.dir = g_dir_make_tmp("test-daemon-XXXXXX", &error);
  g_assert_no_error(error);
  fx.images = g_build_filename(fx.dir, "images", NULL);
  fx.cfg_dir = g_build_filename(fx.dir, "etc", NULL);
  fx.cfg_path = g_build_filename(fx.cfg_dir, "inspectd.conf", NULL);
  fx.state_dir = g_build_filename(fx.dir, "state", NULL);
  fx.model_a = g_build_filename(fx.dir, "a.safetensors", NULL);
  fx.model_b = g_build_filename(fx.dir, "b.safetensors", NULL);
  g_assert_cmpint(g_mkdir_with_parents(fx.images, 0755), ==, 0);
  g_assert_cmpint(g_mkdir_with_parents(fx.cfg_dir, 0755), ==, 0);

  for (int i = 0; i < N_PARTS; i++) {
    g_autoptr(InspImage) img = NULL;
    InspSynthKind kind = insp_synth_line_kind((guint64)i, 3);
    g_autofree char *name = g_strdup_printf("p%02d-%s.png", i, insp_synth_kind_to_string(kind));
    g_autofree char *path = g_build_filename(fx.images, name, NULL);
    g_assert_true(insp_synth_part(900 + (guint64)i, kind, SIZE, SIZE, &img, NULL, &error));
    g_assert_true(insp_image_save_png(img, path, &error));
    g_assert_no_error(error);
  }
  fx.model_a_id = train_model(fx.model_a, 1, 0.1);
  fx.model_b_id = train_model(fx.model_b, 2, 0.25);
  g_assert_cmpstr(fx.model_a_id, !=, fx.model_b_id);

  /* The broker. */
  fx.port = mqtt_test_free_port();
  g_autofree char *bconf = g_build_filename(fx.dir, "mosquitto.conf", NULL);
  g_autofree char *btext =
      g_strdup_printf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
                      /* Room for the command flood: past 1,000 queued
                       * packets (the default) the broker drops QoS 0
                       * messages to a client that reads slower than they
                       * come, which is MQTT, not the daemon. */
                      "max_queued_messages 100000\n",
                      fx.port);
  write_file(bconf, btext);
  fx.broker =
      g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_SILENCE,
                       &error, mosquitto, "-c", bconf, NULL);
  g_assert_no_error(error);
  for (int i = 0; i < 100 && !mqtt_test_port_accepts(fx.port); i++)
    g_usleep(50000);
  g_assert_true(mqtt_test_port_accepts(fx.port));

  /* A subscriber that records results and events. */
  fx.sub_out = g_build_filename(fx.dir, "sub.txt", NULL);
  g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDERR_SILENCE);
  g_subprocess_launcher_set_stdout_file_path(l, fx.sub_out);
  g_autofree char *port = g_strdup_printf("%d", fx.port);
  fx.sub = g_subprocess_launcher_spawn(l, &error, mosquitto_sub, "-h", "127.0.0.1", "-p", port,
                                       "-q", "1", "-v", "-t", "inspectd/" STATION "/result", "-t",
                                       "inspectd/" STATION "/event", "-t",
                                       "inspectd/" STATION "/cmd/+/reply", NULL);
  g_assert_no_error(error);
  /* Subscribed only once a probe comes back: under load (ASan, tests in
   * parallel) a fixed pause can end before the SUBSCRIBE, and a result the
   * daemon published before it would look lost. */
  g_autofree char *mosquitto_pub = g_find_program_in_path("mosquitto_pub");
  gboolean subscribed = FALSE;
  for (int i = 0; i < 100 && !subscribed; i++) {
    g_autoptr(GSubprocess) probe =
        g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_SILENCE,
                         NULL, mosquitto_pub, "-h", "127.0.0.1", "-p", port, "-t",
                         "inspectd/" STATION "/event", "-m", "fixture-probe", NULL);
    if (probe != NULL)
      g_subprocess_wait(probe, NULL, NULL);
    g_usleep(100000);
    g_autofree char *seen = read_file(fx.sub_out);
    subscribed = seen != NULL && strstr(seen, "fixture-probe") != NULL;
  }
  g_assert_true(subscribed);

  notify_open();
  fx.ready = TRUE;
  return TRUE;
}

static void
fixture_teardown(void)
{
  if (fx.sub) {
    g_subprocess_force_exit(fx.sub);
    g_subprocess_wait(fx.sub, NULL, NULL);
  }
  if (fx.broker) {
    g_subprocess_send_signal(fx.broker, SIGTERM);
    g_subprocess_wait(fx.broker, NULL, NULL);
  }
  g_clear_object(&fx.sub);
  g_clear_object(&fx.broker);
  if (fx.notify_fd > 0) {
    shutdown(fx.notify_fd, SHUT_RDWR);
    close(fx.notify_fd);
  }
  if (fx.notify_thread)
    g_thread_join(fx.notify_thread);
  if (fx.notify_queue)
    g_async_queue_unref(fx.notify_queue);
  if (fx.dir && !g_getenv("INSP_TEST_KEEP")) {
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", fx.dir);
    if (system(cmd) != 0)
      g_printerr("could not remove %s\n", fx.dir);
  }
  if (fx.notes)
    g_ptr_array_unref(fx.notes);
}

static GSubprocess *
spawn_daemon(const char *stdout_path, const char *stderr_path, const char *const *extra)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_NONE);
  g_autoptr(GPtrArray) argv = g_ptr_array_new();

  g_subprocess_launcher_set_stdout_file_path(l, stdout_path);
  g_subprocess_launcher_set_stderr_file_path(l, stderr_path);
  g_subprocess_launcher_setenv(l, "NOTIFY_SOCKET", fx.notify_path, TRUE);
  g_subprocess_launcher_setenv(l, "WATCHDOG_USEC", "1000000", TRUE);
  g_subprocess_launcher_unsetenv(l, "WATCHDOG_PID");
  g_subprocess_launcher_unsetenv(l, "STATE_DIRECTORY");
  g_ptr_array_add(argv, (gpointer)g_getenv("INSPECTD"));
  g_ptr_array_add(argv, (gpointer) "run");
  g_ptr_array_add(argv, (gpointer) "-c");
  g_ptr_array_add(argv, fx.cfg_path);
  g_ptr_array_add(argv, (gpointer) "-v");
  for (; extra && *extra; extra++)
    g_ptr_array_add(argv, (gpointer)*extra);
  g_ptr_array_add(argv, NULL);
  GSubprocess *p = g_subprocess_launcher_spawnv(l, (const char *const *)argv->pdata, &error);
  g_assert_no_error(error);
  return p;
}

static void
dump_stderr(const char *path)
{
  g_autofree char *text = read_file(path);
  g_test_message("daemon stderr:\n%s", text);
}

/* Forgets every datagram received or waiting. */
static void
notify_drain(void)
{
  char *note;

  while ((note = g_async_queue_try_pop(fx.notify_queue)) != NULL)
    g_free(note);
  g_ptr_array_set_size(fx.notes, 0);
}

/* The index of the first note at or after @from starting with @prefix, or -1. */
static int
note_find(int from, const char *prefix)
{
  for (guint i = (guint)MAX(from, 0); i < fx.notes->len; i++)
    if (g_str_has_prefix(g_ptr_array_index(fx.notes, i), prefix))
      return (int)i;
  return -1;
}

/* Waits for RELOADING=1 and the READY=1 after it; returns that READY note. */
static const char *
wait_reload(void)
{
  int r = notify_wait("RELOADING=1", 20);
  g_assert_cmpint(r, >=, 0);
  g_assert_nonnull(strstr(g_ptr_array_index(fx.notes, r), "MONOTONIC_USEC="));
  int ready = notify_wait("READY=1", 30);
  g_assert_cmpint(ready, >, r);
  return g_ptr_array_index(fx.notes, ready);
}

/* ---- tests ------------------------------------------------------------------------ */

static void
test_lifecycle(void)
{
  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "run1.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "run1.err", NULL);
  g_autofree char *cfg = config_text(fx.model_a, "0.5");
  write_file(fx.cfg_path, cfg);
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);

  int ready = notify_wait("READY=1", 90);
  if (ready < 0)
    dump_stderr(err);
  g_assert_cmpint(ready, ==, 0); /* nothing before READY */
  g_assert_cmpint(notify_wait("WATCHDOG=1", 10), >, ready);
  int status = notify_wait("STATUS=", 10);
  g_assert_cmpint(status, >, ready);
  const char *status_text = g_ptr_array_index(fx.notes, status);
  g_assert_true(g_str_has_prefix(status_text, "STATUS=inspecting: "));
  g_assert_nonnull(strstr(status_text, " fps, latency "));
  g_assert_nonnull(strstr(status_text, " pass, "));
  g_assert_nonnull(strstr(status_text, "broker connected"));
  g_autoptr(GArray) before = wait_lines(out, 8, 30);
  g_assert_cmpuint(before->len, >=, 8);
  for (guint i = 0; i < before->len; i++)
    g_assert_cmpfloat(g_array_index(before, Line, i).threshold, ==, 0.5);

  /* A threshold edit: every later part fails at threshold 0. */
  g_autofree char *cfg0 = config_text(fx.model_a, "0.0");
  write_file(fx.cfg_path, cfg0);
  const char *note = wait_reload();
  g_assert_null(strstr(note, "rejected"));
  g_autoptr(GArray) a = wait_lines(out, before->len + 25, 30);
  assert_contiguous(a);
  gboolean seen_new = FALSE;
  for (guint i = 0; i < a->len; i++) {
    Line *x = &g_array_index(a, Line, i);
    if (x->threshold == 0.0) {
      seen_new = TRUE;
      g_assert_true(x->fail);
    } else {
      /* Once the new threshold holds it stays: no frame goes back. */
      g_assert_false(seen_new);
      g_assert_cmpfloat(x->threshold, ==, 0.5);
    }
  }
  g_assert_true(seen_new);
  g_assert_cmpfloat(g_array_index(a, Line, a->len - 1).threshold, ==, 0.0);

  /* An invalid edit is rejected whole: the old threshold stays, an event says why. */
  g_autofree char *bad = config_text(fx.model_a, "banana");
  write_file(fx.cfg_path, bad);
  note = wait_reload();
  g_assert_nonnull(strstr(note, "rejected"));
  guint mark = a->len;
  g_autoptr(GArray) b = wait_lines(out, mark + 10, 30);
  assert_contiguous(b);
  for (guint i = mark + 3; i < b->len; i++)
    g_assert_cmpfloat(g_array_index(b, Line, i).threshold, ==, 0.0);
  gboolean event = FALSE;
  for (int i = 0; i < 50 && !event; i++) {
    g_autofree char *sub = read_file(fx.sub_out);
    event = strstr(sub, "reload_rejected") != NULL && strstr(sub, "banana") != NULL;
    if (!event)
      g_usleep(100000);
  }
  g_assert_true(event);

  /* A model swap under load: no seq lost, later results name model B. */
  g_autofree char *cfg_b = config_text(fx.model_b, "0.0");
  write_file(fx.cfg_path, cfg_b);
  note = wait_reload();
  g_assert_null(strstr(note, "rejected"));
  mark = b->len;
  g_autoptr(GArray) c = wait_lines(out, mark + 15, 30);
  assert_contiguous(c);
  g_autofree char *model_b_json = g_strdup_printf("\"model\":\"%s\"", fx.model_b_id);
  gboolean swapped = FALSE;
  for (int i = 0; i < 50 && !swapped; i++) {
    g_autofree char *sub = read_file(fx.sub_out);
    swapped = strstr(sub, model_b_json) != NULL;
    if (!swapped)
      g_usleep(100000);
  }
  g_assert_true(swapped);

  /* A camera change (fps, in a drop-in) restarts only the capture: the old
   * pipeline drains, seq stays contiguous, the model stays B. */
  g_autofree char *dropins = g_strconcat(fx.cfg_path, ".d", NULL);
  g_autofree char *dropin = g_build_filename(dropins, "20-fps.conf", NULL);
  g_assert_cmpint(g_mkdir_with_parents(dropins, 0755), ==, 0);
  write_file(dropin, "[camera]\nfps = 25\n");
  note = wait_reload();
  g_assert_null(strstr(note, "rejected"));
  mark = c->len;
  g_autoptr(GArray) d = wait_lines(out, mark + 15, 30);
  g_assert_cmpuint(d->len, >=, mark + 15);
  assert_contiguous(d);

  /* A broker setting changes: only the MQTT client restarts, on the same
   * spool; every decision still reaches the broker (checked at the end). */
  write_file(dropin, "[camera]\nfps = 25\n[mqtt]\nkeepalive = 20\n");
  note = wait_reload();
  g_assert_null(strstr(note, "rejected"));
  mark = d->len;
  g_autoptr(GArray) e = wait_lines(out, mark + 10, 30);
  g_assert_cmpuint(e->len, >=, mark + 10);
  assert_contiguous(e);

  /* SIGHUP reloads too (nothing changed: still RELOADING, then READY). */
  g_subprocess_send_signal(p, SIGHUP);
  note = wait_reload();
  g_assert_null(strstr(note, "rejected"));
  g_unlink(dropin);
  g_assert_cmpint(g_rmdir(dropins), ==, 0);
  note = wait_reload(); /* the drop-in's removal is a change too */

  /* SIGTERM: STOPPING, drain, flush to the broker, exit 0. */
  g_subprocess_send_signal(p, SIGTERM);
  int stopping = notify_wait("STOPPING=1", 30);
  g_assert_cmpint(stopping, >=, 0);
  g_autoptr(GError) error = NULL;
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_no_error(error);
  if (!g_subprocess_get_if_exited(p) || g_subprocess_get_exit_status(p) != 0)
    dump_stderr(err);
  g_assert_true(g_subprocess_get_if_exited(p));
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);

  g_autoptr(GArray) all = parse_lines(out);
  assert_contiguous(all);
  /* Every printed decision reached the broker before exit. */
  guint missing = missing_on_broker(all, 3);
  if (missing != 0) {
    g_autofree char *sub = read_file(fx.sub_out);
    for (guint i = 0; i < all->len; i++) {
      guint64 seq = g_array_index(all, Line, i).seq;
      g_autofree char *needle = g_strdup_printf("\"seq\":%" G_GUINT64_FORMAT ",", seq);
      if (strstr(sub, needle) == NULL)
        g_printerr("seq %" G_GUINT64_FORMAT " printed but not on the broker\n", seq);
    }
    dump_stderr(err);
  }
  g_assert_cmpuint(missing, ==, 0);

  /* The order of the notifications: READY first; each RELOADING answered by
   * a READY before the next one; STOPPING after everything else. */
  g_assert_true(g_str_has_prefix(g_ptr_array_index(fx.notes, 0), "READY=1"));
  int reloads = 0;
  for (int i = note_find(0, "RELOADING=1"); i >= 0; i = note_find(i + 1, "RELOADING=1")) {
    int next_ready = note_find(i + 1, "READY=1");
    int next_reload = note_find(i + 1, "RELOADING=1");
    g_assert_cmpint(next_ready, >, i);
    g_assert_true(next_reload < 0 || next_ready < next_reload);
    reloads++;
  }
  g_assert_cmpint(reloads, >=, 7);
  g_assert_cmpint(note_find(stopping + 1, "READY=1"), <, 0);
  g_assert_cmpint(note_find(stopping + 1, "WATCHDOG=1"), <, 0);

  /* Seq carries on in the next run, exactly after a clean stop. */
  guint64 last = g_array_index(all, Line, all->len - 1).seq;
  g_autofree char *out2 = g_build_filename(fx.dir, "run2.out", NULL);
  g_autofree char *err2 = g_build_filename(fx.dir, "run2.err", NULL);
  const char *count[] = {"--count", "3", NULL};
  notify_drain();
  g_autoptr(GSubprocess) p2 = spawn_daemon(out2, err2, count);
  g_assert_true(g_subprocess_wait(p2, NULL, &error));
  g_assert_cmpint(g_subprocess_get_exit_status(p2), ==, 0);
  g_autoptr(GArray) next = parse_lines(out2);
  g_assert_cmpuint(next->len, ==, 3);
  g_assert_cmpuint(g_array_index(next, Line, 0).seq, ==, last + 1);
  assert_contiguous(next);
}

static void
mqtt_publish(const char *topic, const char *payload)
{
  g_autofree char *pub = g_find_program_in_path("mosquitto_pub");
  g_autofree char *port = g_strdup_printf("%d", fx.port);
  g_autoptr(GError) error = NULL;

  g_assert_nonnull(pub);
  g_autoptr(GSubprocess) p =
      g_subprocess_new(G_SUBPROCESS_FLAGS_NONE, &error, pub, "-h", "127.0.0.1", "-p", port, "-q",
                       "1", "-t", topic, "-m", payload, NULL);
  g_assert_no_error(error);
  g_assert_true(g_subprocess_wait_check(p, NULL, &error));
  g_assert_no_error(error);
}

/* The threshold command applies from the next frames, is answered, and
 * persists across a restart while the config file keeps its value; an edit
 * of the config file then wins over the older command. */
static void
test_threshold_command(void)
{
  g_autoptr(GError) error = NULL;

  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "cmd.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "cmd.err", NULL);
  g_autofree char *cfg = config_text(fx.model_a, "0.5");
  write_file(fx.cfg_path, cfg);
  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  g_autoptr(GArray) first = wait_lines(out, 3, 30);
  g_assert_cmpuint(first->len, >=, 3);

  mqtt_publish("inspectd/" STATION "/cmd/threshold", "0.25");
  gboolean changed = FALSE;
  for (int i = 0; i < 100 && !changed; i++) {
    g_autoptr(GArray) a = parse_lines(out);
    changed = a->len > 0 && g_array_index(a, Line, a->len - 1).threshold == 0.25;
    if (!changed)
      g_usleep(100000);
  }
  g_assert_true(changed);
  g_autofree char *sub = read_file(fx.sub_out);
  g_assert_nonnull(strstr(sub, "inspectd/" STATION "/cmd/threshold/reply {\"ok\":true"));
  /* Out of range: answered with an error, nothing changes. */
  mqtt_publish("inspectd/" STATION "/cmd/threshold", "-3");
  g_usleep(500000);
  g_autoptr(GArray) still = wait_lines(out, 0, 0);
  g_assert_cmpfloat(g_array_index(still, Line, still->len - 1).threshold, ==, 0.25);
  /* Within the syntax but outside [inspection] threshold_min..threshold_max:
   * refused, naming the keys. */
  mqtt_publish("inspectd/" STATION "/cmd/threshold", "0.1");
  gboolean bounded = FALSE;
  for (int i = 0; i < 50 && !bounded; i++) {
    g_autofree char *text = read_file(fx.sub_out);
    bounded = strstr(text, "threshold 0.1 refused: outside [inspection] threshold_min") != NULL;
    if (!bounded)
      g_usleep(100000);
  }
  g_assert_true(bounded);
  g_autoptr(GArray) bounded_lines = wait_lines(out, 0, 0);
  g_assert_cmpfloat(g_array_index(bounded_lines, Line, bounded_lines->len - 1).threshold, ==, 0.25);

  /* Snapshot: the next frame's image and anomaly map as PNGs. */
  {
    g_autofree char *subbin = g_find_program_in_path("mosquitto_sub");
    g_autofree char *port = g_strdup_printf("%d", fx.port);
    g_autofree char *snap_out = NULL;
    g_autoptr(GSubprocess) snap = g_subprocess_new(
        G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error, subbin, "-h", "127.0.0.1", "-p", port, "-t",
        "inspectd/" STATION "/snapshot", "-C", "2", "-W", "20", "-F", "%t %l", NULL);
    g_assert_no_error(error);
    g_usleep(300000);
    mqtt_publish("inspectd/" STATION "/cmd/snapshot", "");
    g_assert_true(g_subprocess_communicate_utf8(snap, NULL, NULL, &snap_out, NULL, &error));
    g_assert_no_error(error);
    g_auto(GStrv) lines = g_strsplit(snap_out, "\n", -1);
    g_assert_cmpuint(g_strv_length(lines), >=, 2);
    for (int i = 0; i < 2; i++) {
      guint64 len = 0;
      g_assert_true(g_str_has_prefix(lines[i], "inspectd/" STATION "/snapshot "));
      g_assert_true(
          g_ascii_string_to_unsigned(strchr(lines[i], ' ') + 1, 10, 100, G_MAXUINT64, &len, NULL));
    }
  }

  /* The reload command reloads (RELOADING, READY) and answers. */
  notify_drain();
  mqtt_publish("inspectd/" STATION "/cmd/reload", "{}");
  g_assert_null(strstr(wait_reload(), "rejected"));
  gboolean replied = FALSE;
  for (int i = 0; i < 50 && !replied; i++) {
    g_autofree char *text = read_file(fx.sub_out);
    replied = strstr(text, "inspectd/" STATION "/cmd/reload/reply {\"ok\":true") != NULL;
    if (!replied)
      g_usleep(100000);
  }
  g_assert_true(replied);

  g_subprocess_send_signal(p, SIGTERM);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);

  /* Restart: the command's threshold is still in force. */
  g_autofree char *out2 = g_build_filename(fx.dir, "cmd2.out", NULL);
  const char *count[] = {"--count", "2", NULL};
  notify_drain();
  g_autoptr(GSubprocess) p2 = spawn_daemon(out2, err, count);
  g_assert_true(g_subprocess_wait(p2, NULL, &error));
  g_assert_cmpint(g_subprocess_get_exit_status(p2), ==, 0);
  g_autoptr(GArray) b = parse_lines(out2);
  g_assert_cmpuint(b->len, ==, 2);
  g_assert_cmpfloat(g_array_index(b, Line, 0).threshold, ==, 0.25);

  /* The config file changes its value: the file wins from then on. */
  g_autofree char *cfg7 = config_text(fx.model_a, "0.7");
  write_file(fx.cfg_path, cfg7);
  g_autofree char *out3 = g_build_filename(fx.dir, "cmd3.out", NULL);
  notify_drain();
  g_autoptr(GSubprocess) p3 = spawn_daemon(out3, err, count);
  g_assert_true(g_subprocess_wait(p3, NULL, &error));
  g_assert_cmpint(g_subprocess_get_exit_status(p3), ==, 0);
  g_autoptr(GArray) c = parse_lines(out3);
  g_assert_cmpuint(c->len, ==, 2);
  g_assert_cmpfloat(g_array_index(c, Line, 0).threshold, ==, 0.7);
}

/* The watchdog follows the inspector, not the main loop: when results stop
 * while frames wait, WATCHDOG=1 stops (systemd would restart the service);
 * the stop still drains and exits 0. */
static void
test_watchdog_stall(void)
{
  g_autoptr(GError) error = NULL;

  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "stall.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "stall.err", NULL);
  g_autofree char *cfg = config_text(fx.model_a, "0.5");
  const char *stall[] = {"--debug-stall-after", "4", NULL};
  write_file(fx.cfg_path, cfg);
  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, stall);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  g_assert_cmpint(notify_wait("WATCHDOG=1", 5), >=, 0);
  g_autoptr(GArray) a = wait_lines(out, 4, 30);
  g_assert_cmpuint(a->len, ==, 4);
  /* WATCHDOG_USEC is 1 s: after it, no more pings. */
  g_usleep(2200000);
  notify_drain();
  g_assert_cmpint(notify_wait("WATCHDOG=1", 2.5), <, 0);
  g_autoptr(GArray) b = parse_lines(out);
  g_assert_cmpuint(b->len, ==, 4);

  g_subprocess_send_signal(p, SIGTERM);
  g_assert_cmpint(notify_wait("STOPPING=1", 20), >=, 0);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
  g_autoptr(GArray) c = parse_lines(out);
  g_assert_cmpuint(c->len, >, 4);
  assert_contiguous(c);
}

/* Trigger mode: only triggered parts are inspected, each with its part id;
 * the acknowledgement names the part id its result will carry. */
static void
test_trigger(void)
{
  g_autoptr(GError) error = NULL;

  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "trig.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "trig.err", NULL);
  g_autofree char *base = config_text(fx.model_a, "0.5");
  g_autofree char *cfg = g_strconcat(base, "[trigger]\nmode = mqtt\ntimeout_ms = 5000\n", NULL);
  write_file(fx.cfg_path, cfg);
  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  g_usleep(700000);
  g_autoptr(GArray) none = parse_lines(out);
  g_assert_cmpuint(none->len, ==, 0);

  mqtt_publish("inspectd/" STATION "/cmd/trigger", "plc-0001");
  g_autoptr(GArray) a = wait_lines(out, 1, 20);
  g_assert_cmpuint(a->len, ==, 1);
  g_assert_cmpstr(g_array_index(a, Line, 0).part, ==, "plc-0001");
  mqtt_publish("inspectd/" STATION "/cmd/trigger", "{\"part_id\":\"plc-0002\"}");
  g_autoptr(GArray) b = wait_lines(out, 2, 20);
  g_assert_cmpuint(b->len, ==, 2);
  g_assert_cmpstr(g_array_index(b, Line, 1).part, ==, "plc-0002");
  assert_contiguous(b);
  g_usleep(500000);
  g_autoptr(GArray) c = parse_lines(out);
  g_assert_cmpuint(c->len, ==, 2);
  g_autofree char *sub = read_file(fx.sub_out);
  g_assert_nonnull(strstr(sub, "cmd/trigger/reply {\"ok\":true"));
  g_assert_nonnull(strstr(sub, "\"part_id\":\"plc-0002\""));

  g_subprocess_send_signal(p, SIGTERM);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
}

/* The embedded demo line: no config, a model trained at start, one line per
 * decision, seq kept in the user's state folder. Needs no broker. */
static void
test_demo(void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *tmp = g_dir_make_tmp("test-demo-XXXXXX", &error);
  g_autofree char *state = g_build_filename(tmp, "state", NULL);
  g_autofree char *out = g_build_filename(tmp, "demo.out", NULL);
  g_autofree char *err = g_build_filename(tmp, "demo.err", NULL);
  guint64 first_seq = 0;

  g_assert_no_error(error);
  if (g_getenv("INSPECTD") == NULL) {
    g_test_skip("$INSPECTD is not set (run through meson test)");
    return;
  }
  for (int run = 0; run < 2; run++) {
    g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_NONE);
    g_subprocess_launcher_set_stdout_file_path(l, out);
    g_subprocess_launcher_set_stderr_file_path(l, err);
    g_subprocess_launcher_setenv(l, "XDG_STATE_HOME", state, TRUE);
    g_subprocess_launcher_unsetenv(l, "NOTIFY_SOCKET");
    g_subprocess_launcher_unsetenv(l, "STATE_DIRECTORY");
    g_autoptr(GSubprocess) p =
        g_subprocess_launcher_spawn(l, &error, g_getenv("INSPECTD"), "run", "--count", "6",
                                    "--demo-fps", "0", "--demo-size", "128", NULL);
    g_assert_no_error(error);
    g_assert_true(g_subprocess_wait(p, NULL, &error));
    if (!g_subprocess_get_if_exited(p) || g_subprocess_get_exit_status(p) != 0)
      dump_stderr(err);
    g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
    g_autoptr(GArray) a = parse_lines(out);
    g_assert_cmpuint(a->len, ==, 6);
    assert_contiguous(a);
    g_assert_cmpstr(g_array_index(a, Line, 0).part, ==, "part0001-good");
    g_assert_cmpstr(g_array_index(a, Line, 4).part, ==, "part0005-scratch");
    g_assert_cmpfloat(g_array_index(a, Line, 0).threshold, ==, 0.5);
    if (run == 0)
      first_seq = g_array_index(a, Line, 0).seq;
    else
      g_assert_cmpuint(g_array_index(a, Line, 0).seq, ==, first_seq + 6);
  }
  g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmp);
  g_assert_cmpint(system(cmd), ==, 0);
}

static void
test_start_failure(void)
{
  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "fail.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "fail.err", NULL);
  g_autofree char *missing = g_build_filename(fx.dir, "no-such-model.safetensors", NULL);
  g_autofree char *cfg = config_text(missing, "0.5");
  g_autoptr(GError) error = NULL;

  write_file(fx.cfg_path, cfg);
  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_true(g_subprocess_get_if_exited(p));
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 1);
  g_autofree char *text = read_file(err);
  g_test_message("stderr: %s", text);
  g_assert_nonnull(strstr(text, "no-such-model.safetensors"));
  g_assert_null(strstr(text, "critical"));
  /* Never READY. */
  g_assert_cmpint(notify_wait("READY=1", 0.5), <, 0);

  /* An image given as the model: one sentence naming it once, saying it is
   * not a safetensors file, not an inspectd model. */
  {
    g_autofree char *png = g_build_filename(fx.dir, "not-a-model.png", NULL);
    g_autofree char *first = g_build_filename(fx.images, "p00-good.png", NULL);
    g_autofree char *bytes = NULL;
    gsize len = 0;

    g_assert_true(g_file_get_contents(first, &bytes, &len, NULL));
    g_assert_true(g_file_set_contents(png, bytes, (gssize)len, NULL));
    g_autofree char *cfg_png = config_text(png, "0.5");
    write_file(fx.cfg_path, cfg_png);
    g_autoptr(GSubprocess) pp = spawn_daemon(out, err, NULL);
    g_assert_true(g_subprocess_wait(pp, NULL, &error));
    g_assert_cmpint(g_subprocess_get_exit_status(pp), ==, 1);
    g_autofree char *said = read_file(err);
    g_test_message("stderr: %s", said);
    const char *at = strstr(said, png);
    g_assert_nonnull(at);
    g_assert_null(strstr(at + 1, png));
    g_assert_nonnull(strstr(said, "is not a safetensors file (it is a PNG image)"));
    g_assert_nonnull(strstr(said, "not an inspectd model"));
    g_assert_null(strstr(said, "header length 7"));
  }

  /* A camera that cannot be opened (set in a drop-in): exit 1, one line,
   * never READY. */
  g_autofree char *good = config_text(fx.model_a, "0.5");
  g_autofree char *dropins = g_strconcat(fx.cfg_path, ".d", NULL);
  g_autofree char *dropin = g_build_filename(dropins, "10-camera.conf", NULL);
  write_file(fx.cfg_path, good);
  g_assert_cmpint(g_mkdir_with_parents(dropins, 0755), ==, 0);
  write_file(dropin, "[camera]\nsource = v4l2\ndevice = /dev/video-inspectd-none\n");
  notify_drain();
  g_autoptr(GSubprocess) p2 = spawn_daemon(out, err, NULL);
  g_assert_true(g_subprocess_wait(p2, NULL, &error));
  g_assert_true(g_subprocess_get_if_exited(p2));
  g_assert_cmpint(g_subprocess_get_exit_status(p2), ==, 1);
  g_autofree char *text2 = read_file(err);
  g_test_message("stderr: %s", text2);
  g_assert_nonnull(strstr(text2, "cannot start the capture"));
  g_assert_nonnull(strstr(text2, "/dev/video-inspectd-none"));
  g_assert_null(strstr(text2, "warning"));
  g_assert_cmpint(notify_wait("READY=1", 0.5), <, 0);
  g_unlink(dropin);
  g_rmdir(dropins);
}

/* A state or spool folder that cannot be made (a normal user with the
 * packaged /var/lib/inspectd gets "Permission denied"; as root here, a
 * folder under a regular file gets "Not a directory"): exit 1, one line that
 * names the key to change, the folder and the reason, never READY. */
static void
test_state_dir_unusable(void)
{
  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *file = g_build_filename(fx.dir, "a-file", NULL);
  g_autofree char *bad = g_build_filename(file, "state", NULL);
  g_autofree char *base = config_text(fx.model_a, "0.5");
  /* The state folder; then the spool folder alone (its own key). */
  const char *keys[] = {"[station] state_dir", "[spool] dir"};
  g_autofree char *state_from = g_strdup_printf("state_dir = %s\n", fx.state_dir);
  g_autofree char *state_to = g_strdup_printf("state_dir = %s\n", bad);
  g_autofree char *spool_from = g_strdup_printf("dir = %s/spool\n", fx.state_dir);
  g_autofree char *spool_to = g_strdup_printf("dir = %s/spool\n", bad);
  const char *from[] = {state_from, spool_from}, *to[] = {state_to, spool_to};

  write_file(file, "not a folder\n");
  for (int k = 0; k < 2; k++) {
    g_autofree char *out = g_strdup_printf("%s/sd%d.out", fx.dir, k);
    g_autofree char *err = g_strdup_printf("%s/sd%d.err", fx.dir, k);
    g_autoptr(GString) cfg = g_string_new(base);
    g_autoptr(GError) error = NULL;

    g_assert_cmpuint(g_string_replace(cfg, from[k], to[k], 1), ==, 1);
    write_file(fx.cfg_path, cfg->str);
    notify_drain();
    g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
    g_assert_true(g_subprocess_wait(p, NULL, &error));
    g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 1);
    g_autofree char *said = read_file(err);
    g_test_message("stderr: %s", said);
    g_assert_nonnull(strstr(said, keys[k]));
    g_assert_null(strstr(said, keys[1 - k]));
    g_assert_nonnull(strstr(said, bad));
    g_assert_nonnull(strstr(said, g_strerror(ENOTDIR)));
    g_assert_cmpint(notify_wait("READY=1", 0.5), <, 0);
  }
  g_unlink(file);
}

/* A files replay with loop = false: once every file is inspected the daemon
 * says so, flushes MQTT (every result on the broker) and exits 0 on its own,
 * where it used to idle until a signal. */
static void
test_replay_done(void)
{
  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "once.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "once.err", NULL);
  g_autofree char *base = config_text(fx.model_a, "0.5");
  g_autoptr(GString) cfg = g_string_new(base);
  g_autoptr(GError) error = NULL;
  g_autofree char *want = g_strdup_printf("all %d files were inspected", N_PARTS);

  g_assert_cmpuint(g_string_replace(cfg, "loop = true\n", "loop = false\n", 1), ==, 1);
  write_file(fx.cfg_path, cfg->str);
  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  int stopping = notify_wait("STOPPING=1", 60);
  if (stopping < 0) {
    dump_stderr(err);
    g_subprocess_force_exit(p);
  }
  g_assert_cmpint(stopping, >=, 0);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_true(g_subprocess_get_if_exited(p));
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
  g_autofree char *said = read_file(err);
  g_test_message("stderr: %s", said);
  g_assert_nonnull(strstr(said, want));

  g_autoptr(GArray) all = parse_lines(out);
  g_assert_cmpuint(all->len, ==, N_PARTS);
  assert_contiguous(all);
  for (guint i = 0; i < all->len; i++) {
    g_autofree char *part = g_strdup_printf("p%02u-", i);
    g_assert_true(g_str_has_prefix(g_array_index(all, Line, i).part, part));
  }
  /* Flushed before the exit: every result is on the broker. */
  g_assert_cmpuint(missing_on_broker(all, 3), ==, 0);
}

/* [log] level = notice: the notice lines (ready, stopping) are logged, the
 * info ones (capture running, broker connected) are not; at info both. */
static void
test_log_notice(void)
{
  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  const char *const extra[] = {"-n", "3", NULL};
  g_autofree char *base = config_text(fx.model_a, "0.5");
  g_autoptr(GString) cfg = g_string_new(base);
  g_autoptr(GError) error = NULL;

  g_assert_cmpuint(g_string_replace(cfg, "level = info\n", "level = notice\n", 1), ==, 1);
  for (int run = 0; run < 2; run++) {
    g_autofree char *out = g_strdup_printf("%s/notice%d.out", fx.dir, run);
    g_autofree char *err = g_strdup_printf("%s/notice%d.err", fx.dir, run);
    write_file(fx.cfg_path, run == 0 ? cfg->str : base);
    g_autoptr(GSubprocess) p = spawn_daemon(out, err, extra);
    g_assert_true(g_subprocess_wait(p, NULL, &error));
    g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
    g_autofree char *said = read_file(err);
    g_test_message("level %s:\n%s", run == 0 ? "notice" : "info", said);
    g_assert_nonnull(strstr(said, "inspectd: notice: inspecting with "));
    g_assert_nonnull(strstr(said, "inspectd: notice: stopping (count reached)"));
    if (run == 0)
      g_assert_null(strstr(said, "info:"));
    else
      g_assert_nonnull(strstr(said, "inspectd: info: broker 127.0.0.1:"));
    /* which kernels run, at info */
    g_assert_true((strstr(said, "PatchCore nearest-neighbour search: ") != NULL) == (run == 1));
  }
}

/* A broker that is not there at the start is said at once, with its address
 * and the reason, and the parts go on being inspected (results spooled). */
static void
test_broker_unreachable_at_start(void)
{
  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "dead.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "dead.err", NULL);
  g_autofree char *cfg = config_text(fx.model_a, "0.5");
  g_autofree char *live = g_strdup_printf("port = %d\n", fx.port);
  int dead_port = mqtt_test_free_port();
  g_autofree char *dead = g_strdup_printf("port = %d\n", dead_port);
  g_autoptr(GString) text = g_string_new(cfg);
  g_autoptr(GError) error = NULL;
  const char *const extra[] = {"-n", "3", NULL};

  g_assert_cmpuint(g_string_replace(text, live, dead, 1), ==, 1);
  write_file(fx.cfg_path, text->str);
  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, extra);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_autofree char *log = read_file(err);
  g_autofree char *want = g_strdup_printf(
      "broker 127.0.0.1:%d unreachable, results are spooled: Connection refused", dead_port);
  g_test_message("stderr: %s", log);
  g_assert_nonnull(strstr(log, want));
  g_assert_null(strstr(strstr(log, want) + 1, want)); /* once, not per attempt */
}

/* A damaged threshold override does not keep the daemon from starting: it
 * is ignored with a warning, and the config file's threshold applies. */
static void
test_damaged_override(void)
{
  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "ovr.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "ovr.err", NULL);
  g_autofree char *ovr = g_build_filename(fx.state_dir, "threshold-override.conf", NULL);
  g_autofree char *cfg = config_text(fx.model_a, "0.5");
  g_autoptr(GError) error = NULL;

  write_file(fx.cfg_path, cfg);
  write_file(ovr, "[inspection]\nthreshold=0.3\nconfigured_threshold=\x01garbage\n");
  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  g_autoptr(GArray) lines = wait_lines(out, 2, 30);
  g_assert_cmpuint(lines->len, >=, 2);
  g_assert_cmpfloat(g_array_index(lines, Line, lines->len - 1).threshold, ==, 0.5);
  g_subprocess_send_signal(p, SIGTERM);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_autofree char *text = read_file(err);
  g_test_message("stderr: %s", text);
  g_assert_nonnull(strstr(text, "threshold override ignored, the config files' thresholds apply"));
  g_assert_nonnull(strstr(text, "threshold-override.conf"));
  g_unlink(ovr);
}

/* Every trigger is answered on its reply topic, once, finally: with the
 * result (two triggers with one part id each get theirs), with
 * {"ok":false,"error":"timeout"} when no frame comes, and with an error when
 * the daemon stops first; the retained status counts them, and the timeout
 * event names the part. */
static gsize sub_mark; /* count_lines_with() looks past this offset only */

static guint
count_lines_with(const char *path, const char *a, const char *b)
{
  g_autofree char *text = read_file(path);
  g_auto(GStrv) lines = g_strsplit(text + MIN(sub_mark, strlen(text)), "\n", -1);
  guint n = 0;

  for (char **l = lines; *l; l++)
    if (strstr(*l, a) && (b == NULL || strstr(*l, b)))
      n++;
  return n;
}

static gboolean
wait_lines_with(const char *path, const char *a, const char *b, guint n, double timeout_s)
{
  gint64 deadline = g_get_monotonic_time() + (gint64)(timeout_s * G_USEC_PER_SEC);

  while (count_lines_with(path, a, b) < n)
    if (g_get_monotonic_time() > deadline)
      return FALSE;
    else
      g_usleep(50000);
  return TRUE;
}

static char *
retained_status(void)
{
  g_autofree char *sub = g_find_program_in_path("mosquitto_sub");
  g_autofree char *port = g_strdup_printf("%d", fx.port);
  g_autoptr(GError) error = NULL;
  char *out = NULL;
  g_autoptr(GSubprocess) p =
      g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error, sub, "-h", "127.0.0.1", "-p", port,
                       "-C", "1", "-W", "10", "-t", "inspectd/" STATION "/status", NULL);
  g_assert_no_error(error);
  g_assert_true(g_subprocess_communicate_utf8(p, NULL, NULL, &out, NULL, &error));
  return out;
}

static void
test_trigger_outcomes(void)
{
  g_autoptr(GError) error = NULL;

  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  const char *reply = "inspectd/" STATION "/cmd/trigger/reply ";
  g_autofree char *out = g_build_filename(fx.dir, "outcome.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "outcome.err", NULL);
  g_autofree char *base = config_text(fx.model_a, "0.5");
  g_autoptr(GString) cfg = g_string_new(base);

  /* What earlier tests left in the subscriber's file does not count. */
  g_autofree char *before = read_file(fx.sub_out);
  sub_mark = strlen(before);
  /* The files are replayed once: after that no frame comes. */
  g_string_replace(cfg, "loop = true", "loop = false", 1);
  g_string_append(cfg, "[trigger]\nmode = mqtt\ntimeout_ms = 800\n");
  write_file(fx.cfg_path, cfg->str);
  notify_drain();
  gint64 spawned_s = g_get_real_time() / G_USEC_PER_SEC;
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  gint64 ready_s = g_get_real_time() / G_USEC_PER_SEC;

  /* Two triggers with one part id while frames come: two results. */
  mqtt_publish("inspectd/" STATION "/cmd/trigger", "dup-1");
  mqtt_publish("inspectd/" STATION "/cmd/trigger", "dup-1");
  gboolean two = wait_lines_with(fx.sub_out, reply, "\"verdict\"", 2, 10);
  g_autofree char *sub = read_file(fx.sub_out);
  if (!two)
    g_test_message("subscriber saw:\n%s", sub);
  g_assert_true(two);
  g_assert_cmpuint(count_lines_with(fx.sub_out, reply, "\"part_id\":\"dup-1\""), ==, 4);

  /* The replay is over: a trigger times out, and says so. */
  g_usleep(1500000);
  mqtt_publish("inspectd/" STATION "/cmd/trigger", "{\"part_id\":\"late-1\"}");
  g_assert_true(wait_lines_with(fx.sub_out, reply, "\"error\":\"timeout\"", 1, 10));
  g_assert_cmpuint(count_lines_with(fx.sub_out,
                                    "{\"ok\":false,\"error\":\"timeout\",\"part_id\":\"late-1\"}",
                                    NULL),
                   ==, 1);
  g_assert_true(
      wait_lines_with(fx.sub_out, "\"code\":\"trigger_timeout\"", "\"part_id\":\"late-1\"", 1, 5));
  g_assert_cmpuint(count_lines_with(fx.sub_out, "\"code\":\"trigger_timeout\"", "\"seq\":null"), ==,
                   1);

  /* The retained status counts them (it goes out every few seconds). */
  g_usleep(5500000);
  g_autofree char *status = retained_status();
  g_test_message("status: %s", status);
  g_assert_nonnull(strstr(status, "\"triggers\":3"));
  g_assert_nonnull(strstr(status, "\"trigger_timeouts\":1"));
  /* The counters count from the daemon's start. */
  {
    g_autoptr(JsonParser) jp = json_parser_new();
    g_assert_true(json_parser_load_from_data(jp, status, -1, NULL));
    JsonObject *so = json_node_get_object(json_parser_get_root(jp));
    g_autoptr(GDateTime) since =
        g_date_time_new_from_iso8601(json_object_get_string_member(so, "since"), NULL);
    g_assert_nonnull(since);
    g_assert_cmpint(g_date_time_to_unix(since), >=, spawned_s - 1);
    g_assert_cmpint(g_date_time_to_unix(since), <=, ready_s);
  }

  /* A trigger still waiting when the daemon stops is answered too. */
  mqtt_publish("inspectd/" STATION "/cmd/trigger", "last-1");
  g_assert_true(wait_lines_with(fx.sub_out, reply, "\"ok\":true,\"part_id\":\"last-1\"", 1, 5));
  g_subprocess_send_signal(p, SIGTERM);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
  g_assert_true(wait_lines_with(fx.sub_out, reply, "\"error\":\"the daemon is stopping\"", 1, 5));
  /* Once each: nothing more came for the timed-out trigger. */
  g_assert_cmpuint(count_lines_with(fx.sub_out, reply, "late-1"), ==, 2);
}

/* On a broker with users and an ACL (mosquitto password_file + acl_file, as
 * daemon/README.md shows): the daemon logs in with its own user (commands = all
 * needs no insecure_commands then), warns about a password file others can
 * read, an outsider's threshold is refused by the broker and never reaches
 * the daemon, the PLC's is accepted. */
static void
passwd_add(const char *file, const char *user, const char *password, gboolean create)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocess) p =
      g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_SILENCE,
                       &error, "mosquitto_passwd", "-b", create ? "-c" : file, create ? file : user,
                       create ? user : password, create ? password : NULL, NULL);
  g_assert_no_error(error);
  g_assert_true(g_subprocess_wait_check(p, NULL, &error));
}

static void
test_broker_acl(void)
{
  g_autoptr(GError) error = NULL;

  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *mp = g_find_program_in_path("mosquitto_passwd");
  if (mp == NULL) {
    g_test_skip("mosquitto_passwd is needed (apt-get install mosquitto)");
    return;
  }
  g_autofree char *dir = g_build_filename(fx.dir, "acl", NULL);
  g_autofree char *users = g_build_filename(dir, "users", NULL);
  g_autofree char *acl = g_build_filename(dir, "acl", NULL);
  g_autofree char *daemon_pw = g_build_filename(dir, "inspectd.pw", NULL);
  g_autofree char *out = g_build_filename(fx.dir, "acl.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "acl.err", NULL);
  g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
  passwd_add(users, "inspectd", "d-pass", TRUE);
  passwd_add(users, "plc", "p-pass", FALSE);
  passwd_add(users, "outsider", "o-pass", FALSE);
  write_file(acl, "user inspectd\n"
                  "topic readwrite inspectd/" STATION "/#\n"
                  "user plc\n"
                  "topic write inspectd/" STATION "/cmd/#\n"
                  "topic read inspectd/" STATION "/#\n"
                  "user outsider\n"
                  "topic read inspectd/" STATION "/#\n");
  write_file(daemon_pw, "d-pass\n");
  g_assert_cmpint(g_chmod(daemon_pw, 0644), ==, 0); /* too open: warned about */
  MqttBrokerOptions bo = {.password_file = users, .acl_file = acl};
  g_autoptr(MqttBroker) broker = mqtt_broker_start(&bo, &error);
  g_assert_no_error(error);
  int port = mqtt_broker_get_port(broker);

  g_autofree char *base = config_text(fx.model_a, "0.5");
  g_autoptr(GString) cfg = g_string_new(base);
  g_autofree char *from =
      g_strdup_printf("port = %d\ncommands = all\ninsecure_commands = true\n", fx.port);
  g_autofree char *to = g_strdup_printf("port = %d\ncommands = all\nusername = inspectd\n"
                                        "password_file = %s\n",
                                        port, daemon_pw);
  g_assert_cmpuint(g_string_replace(cfg, from, to, 1), ==, 1);
  write_file(fx.cfg_path, cfg->str);
  /* check-config agrees: an authenticated connection may take commands. */
  {
    g_autoptr(GSubprocess) c =
        g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_SILENCE, &error, g_getenv("INSPECTD"),
                         "check-config", fx.cfg_path, NULL);
    g_assert_no_error(error);
    g_assert_true(g_subprocess_wait_check(c, NULL, &error));
  }

  const char *replies[] = {"inspectd/" STATION "/cmd/threshold/reply", NULL};
  g_autoptr(MqttClient) plc =
      mqtt_client_new(port, &(MqttClientOptions){.username = "plc", .password = "p-pass"}, replies);
  g_autoptr(MqttClient) outsider = mqtt_client_new(
      port, &(MqttClientOptions){.username = "outsider", .password = "o-pass"}, replies);
  g_assert_true(mqtt_client_wait_connected(plc, 5000));
  g_assert_true(mqtt_client_wait_connected(outsider, 5000));

  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  g_autoptr(GArray) first = wait_lines(out, 2, 30);
  g_assert_cmpuint(first->len, >=, 2);

  /* The outsider may read, not write: the broker drops its command. */
  mqtt_client_publish(outsider, "inspectd/" STATION "/cmd/threshold", "0.9", 3, NULL, NULL, 0,
                      FALSE);
  g_assert_null(mqtt_client_wait(outsider, replies[0], 1500, NULL));
  g_assert_cmpuint(mqtt_client_count(plc, replies[0]), ==, 0);
  g_autoptr(GArray) mid = parse_lines(out);
  g_assert_cmpfloat(g_array_index(mid, Line, mid->len - 1).threshold, ==, 0.5);

  /* The PLC's is taken, answered, and holds for later parts. */
  mqtt_client_publish(plc, "inspectd/" STATION "/cmd/threshold", "0.6", 3, NULL, NULL, 0, FALSE);
  g_autoptr(MqttMsg) ok = mqtt_client_wait(plc, replies[0], 5000, NULL);
  g_assert_nonnull(ok);
  g_autofree char *text =
      g_strndup(g_bytes_get_data(ok->payload, NULL), g_bytes_get_size(ok->payload));
  g_assert_cmpstr(text, ==, "{\"ok\":true,\"threshold\":0.6}");
  g_autoptr(GArray) later = wait_lines(out, mid->len + 3, 30);
  g_assert_cmpfloat(g_array_index(later, Line, later->len - 1).threshold, ==, 0.6);

  g_subprocess_send_signal(p, SIGTERM);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
  g_autofree char *log = read_file(err);
  g_assert_nonnull(strstr(log, "can be read by its group or by others (mode 0644)"));
  g_autofree char *ovr = g_build_filename(fx.state_dir, "threshold-override.conf", NULL);
  g_unlink(ovr);
}

/* 16,000 commands in about a second do not starve the main loop: the
 * watchdog ping keeps its period (half of WATCHDOG_USEC = 1 s) within 1 s,
 * the excess is refused with a reply, and inspection goes on. */
static void
test_command_flood(void)
{
  g_autoptr(GError) error = NULL;

  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "flood.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "flood.err", NULL);
  g_autofree char *cfg = config_text(fx.model_a, "0.5");
  write_file(fx.cfg_path, cfg);
  const char *replies[] = {"inspectd/" STATION "/cmd/threshold/reply", NULL};
  g_autoptr(MqttClient) c = mqtt_client_new(fx.port, NULL, replies);
  g_assert_true(mqtt_client_wait_connected(c, 5000));

  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  g_autoptr(GArray) before = wait_lines(out, 2, 30);
  g_assert_cmpuint(before->len, >=, 2);

  g_mutex_lock(&fx.wd_lock);
  g_array_set_size(fx.wd_times, 0);
  g_mutex_unlock(&fx.wd_lock);
  gint64 t0 = g_get_monotonic_time();
  for (int i = 0; i < 16000; i++) {
    char v[16];
    int n = g_snprintf(v, sizeof v, "0.%d", 5 + i % 3);
    mqtt_client_publish(c, "inspectd/" STATION "/cmd/threshold", v, n, NULL, NULL, 0, FALSE);
  }
  double flood_s = (double)(g_get_monotonic_time() - t0) / G_USEC_PER_SEC;
  /* Pings for a while after the flood: every command is answered
   * meanwhile, the excess with a refusal naming the rate. */
  guint n_replies = 0, n_refused = 0;
  /* At least 6 s of pings; then until every reply is in, or none came for
   * 10 s (a sanitizer build answers several times slower). */
  for (int i = 0, idle = 0; i < 1800 && (i < 60 || (n_replies < 16000 && idle < 100));
       i++, idle++) {
    g_autoptr(GPtrArray) got = mqtt_client_take(c, replies[0]);
    if (got->len > 0)
      idle = 0;
    for (guint k = 0; k < got->len; k++) {
      MqttMsg *m = g_ptr_array_index(got, k);
      n_replies++;
      if (g_strstr_len(g_bytes_get_data(m->payload, NULL), (gssize)g_bytes_get_size(m->payload),
                       "too many commands") != NULL)
        n_refused++;
    }
    g_usleep(100000);
  }
  g_mutex_lock(&fx.wd_lock);
  gint64 max_gap = 0;
  guint n_pings = fx.wd_times->len;
  for (guint i = 1; i < fx.wd_times->len; i++)
    max_gap = MAX(max_gap, g_array_index(fx.wd_times, gint64, i) -
                               g_array_index(fx.wd_times, gint64, i - 1));
  g_mutex_unlock(&fx.wd_lock);
  g_test_message("16000 commands sent in %.2f s, %u answered (%u refused over the rate); %u "
                 "watchdog pings, largest gap %.3f s",
                 flood_s, n_replies, n_refused, n_pings, (double)max_gap / G_USEC_PER_SEC);
  g_assert_cmpuint(n_replies, ==, 16000);
  g_assert_cmpuint(n_refused, >, 10000);
  g_assert_cmpuint(n_pings, >=, 8);
  g_assert_cmpint(max_gap, <=, 500000 + G_USEC_PER_SEC);
  g_autoptr(GArray) after = wait_lines(out, before->len + 5, 30);
  g_assert_cmpuint(after->len, >=, before->len + 5); /* inspection went on */

  g_subprocess_send_signal(p, SIGTERM);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
  g_autofree char *ovr = g_build_filename(fx.state_dir, "threshold-override.conf", NULL);
  g_unlink(ovr);
}

/* The state folder turns read-only while inspecting (a real read-only
 * remount of a tmpfs): results stop being published, and the operator hears
 * it (journal line, event, STATUS=degraded); writable again, publishing goes
 * on after the last seq handed out. Read-only again, SIGKILL, restart: the
 * daemon refuses to start while the folder is read-only, and once it is
 * writable no seq names two parts. */
static guint
count_in(const char *path, const char *needle)
{
  g_autofree char *text = read_file(path);
  guint n = 0;

  for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
    n++;
  return n;
}

static gboolean
wait_count(const char *path, const char *needle, guint at_least, double timeout_s)
{
  gint64 deadline = g_get_monotonic_time() + (gint64)(timeout_s * G_USEC_PER_SEC);

  while (count_in(path, needle) < at_least) {
    if (g_get_monotonic_time() > deadline)
      return FALSE;
    g_usleep(50000);
  }
  return TRUE;
}

static void
remount(const char *dir, gboolean read_only)
{
  g_assert_cmpint(mount(NULL, dir, NULL, MS_REMOUNT | (read_only ? MS_RDONLY : 0), "size=1m"), ==,
                  0);
}

static guint64
max_seq(GArray *a)
{
  guint64 m = 0;

  for (guint i = 0; i < a->len; i++)
    m = MAX(m, g_array_index(a, Line, i).seq);
  return m;
}

static void
test_state_read_only(void)
{
  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  if (!fx.can_mount) {
    g_test_skip("a private mount namespace is needed to remount a tmpfs read-only (run as root)");
    return;
  }
  g_autofree char *state = g_build_filename(fx.dir, "ro-state", NULL);
  g_autofree char *out1 = g_build_filename(fx.dir, "ro1.out", NULL);
  g_autofree char *err1 = g_build_filename(fx.dir, "ro1.err", NULL);
  g_autofree char *out2 = g_build_filename(fx.dir, "ro2.out", NULL);
  g_autofree char *err2 = g_build_filename(fx.dir, "ro2.err", NULL);
  g_autofree char *out3 = g_build_filename(fx.dir, "ro3.out", NULL);
  g_autofree char *err3 = g_build_filename(fx.dir, "ro3.err", NULL);
  g_autofree char *base = config_text(fx.model_a, "0.5");
  g_autoptr(GError) error = NULL;
  /* The state folder on its own tmpfs; the spool stays where it was. */
  g_autofree char *from = g_strdup_printf("state_dir = %s\n", fx.state_dir);
  g_autofree char *to = g_strdup_printf("state_dir = %s\n", state);
  g_autoptr(GString) cfg = g_string_new(base);
  const char *const extra[] = {"--debug-seq-block", "20", NULL};

  g_string_replace(cfg, from, to, 1);
  write_file(fx.cfg_path, cfg->str);
  g_assert_cmpint(g_mkdir_with_parents(state, 0755), ==, 0);
  g_assert_cmpint(mount("none", state, "tmpfs", 0, "size=1m"), ==, 0);

  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out1, err1, extra);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  g_autoptr(GArray) before = wait_lines(out1, 3, 30);
  g_assert_cmpuint(before->len, >=, 3);

  /* Read-only while running: within seconds the operator is told. */
  remount(state, TRUE);
  gint64 t0 = g_get_monotonic_time();
  g_assert_true(wait_count(err1, "results are not published", 1, 15));
  g_test_message("not published announced %.1f s after the remount",
                 (double)(g_get_monotonic_time() - t0) / G_USEC_PER_SEC);
  g_assert_cmpint(notify_wait("STATUS=degraded", 10), >=, 0);
  g_assert_true(wait_count(fx.sub_out, "\"code\":\"seq_not_saved\"", 1, 10));
  g_autoptr(GArray) stopped = parse_lines(out1);
  g_usleep(1500000);
  g_autoptr(GArray) still = parse_lines(out1);
  g_assert_cmpuint(still->len, ==, stopped->len); /* nothing published meanwhile */

  /* Writable again: publishing goes on right after the last seq. */
  remount(state, FALSE);
  g_assert_true(wait_count(err1, "sequence numbers are saved again", 1, 15));
  g_assert_true(wait_count(fx.sub_out, "\"code\":\"seq_saved\"", 1, 10));
  g_autoptr(GArray) again = wait_lines(out1, still->len + 3, 30);
  g_assert_cmpuint(again->len, >=, still->len + 3);
  assert_contiguous(again);
  g_assert_cmpint(notify_wait("STATUS=inspecting", 10), >=, 0);

  /* Read-only again, then a crash. */
  remount(state, TRUE);
  g_assert_true(wait_count(err1, "results are not published", 2, 15));
  g_subprocess_force_exit(p);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_autoptr(GArray) run1 = parse_lines(out1);
  guint64 last = max_seq(run1);

  /* Restart while read-only: refused, saying why. */
  g_autoptr(GSubprocess) q = spawn_daemon(out2, err2, extra);
  g_assert_true(g_subprocess_wait(q, NULL, &error));
  g_assert_cmpint(g_subprocess_get_exit_status(q), ==, 1);
  g_autofree char *why = read_file(err2);
  g_test_message("restart while read-only: %s", why);
  g_assert_nonnull(strstr(why, "state folder"));

  /* Writable: the seq carries on past every seq handed out. */
  remount(state, FALSE);
  notify_drain();
  g_autoptr(GSubprocess) r = spawn_daemon(out3, err3, extra);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  g_autoptr(GArray) run3 = wait_lines(out3, 3, 30);
  g_assert_cmpuint(run3->len, >=, 3);
  g_assert_cmpuint(g_array_index(run3, Line, 0).seq, >, last);
  g_subprocess_send_signal(r, SIGTERM);
  g_assert_true(g_subprocess_wait(r, NULL, &error));
  g_assert_cmpint(g_subprocess_get_exit_status(r), ==, 0);
  g_assert_cmpint(umount2(state, MNT_DETACH), ==, 0);
}

/* A config without [model] path (the packaged default outside demo mode)
 * inspects with a model trained on synthetic parts at start. */
static void
test_no_model_path(void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_autofree char *path = g_build_filename(fx.dir, "no-model.conf", NULL);
  g_autofree char *cfg =
      g_strdup_printf("[station]\nid = nomodel\nstate_dir = %s/nomodel-state\n"
                      "[camera]\nsource = test\nloop = true\nfps = 20\n[model]\nworkers = 1\n"
                      "[mqtt]\nhost = 127.0.0.1\nport = %d\n[spool]\ndir = %s/nomodel-spool\n",
                      fx.dir, mqtt_test_free_port(), fx.dir);

  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  write_file(path, cfg);
  g_autoptr(GSubprocess) p =
      g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error,
                       g_getenv("INSPECTD"), "run", "-c", path, "-n", "3", "-v", NULL);
  g_assert_no_error(error);
  g_assert_true(g_subprocess_communicate_utf8(p, NULL, NULL, &out, &err, &error));
  g_assert_no_error(error);
  g_assert_true(g_subprocess_get_if_exited(p));
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
  g_assert_nonnull(strstr(err, "trained on 20 good synthetic parts"));
  g_assert_nonnull(strstr(out, "seq=2 part=2 verdict="));
}

/* Another client connects with the daemon's client id (a copied config, a
 * second instance): the broker kicks one off whenever the other connects.
 * The daemon says so once in the journal, raises session_taken_over once
 * it is back, and the retained status never reads "offline" meanwhile (the
 * will is delayed; a reload that restarts the client leaves it too). Killed,
 * the daemon's will does read "offline", after the delay. */
static gboolean
has_offline(GPtrArray *msgs)
{
  for (guint i = 0; i < msgs->len; i++) {
    MqttMsg *m = g_ptr_array_index(msgs, i);
    if (g_strstr_len(g_bytes_get_data(m->payload, NULL), (gssize)g_bytes_get_size(m->payload),
                     "\"offline\"") != NULL)
      return TRUE;
  }
  return FALSE;
}

static void
test_session_takeover(void)
{
  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "takeover.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "takeover.err", NULL);
  g_autofree char *cfg = config_text(fx.model_a, "0.5");
  const char *status_topic = "inspectd/" STATION "/status";
  const char *const status[] = {status_topic, NULL};
  write_file(fx.cfg_path, cfg);
  sub_mark = 0;

  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  g_autoptr(GArray) before = wait_lines(out, 2, 30);
  g_assert_cmpuint(before->len, >=, 2);
  g_autoptr(MqttClient) watcher = mqtt_client_new(fx.port, NULL, status);
  g_assert_true(mqtt_client_wait_connected(watcher, 5000));
  g_autoptr(MqttMsg) first = mqtt_client_wait(watcher, status_topic, 5000, NULL);
  g_assert_nonnull(first);
  g_assert_nonnull(g_strstr_len(g_bytes_get_data(first->payload, NULL),
                                (gssize)g_bytes_get_size(first->payload), "\"online\""));
  g_autoptr(GPtrArray) seen = g_ptr_array_new_with_free_func((GDestroyNotify)mqtt_msg_free);

  /* The intruder, reconnecting by itself, for at least 4 s and until the
   * daemon has said so (a loaded machine flaps slower). */
  MqttClientOptions intruder_opts = {.client_id = "inspectd-" STATION};
  MqttClient *intruder = mqtt_client_new(fx.port, &intruder_opts, NULL);
  g_usleep(4 * G_USEC_PER_SEC);
  for (int i = 0; i < 200 && count_lines_with(err, "took over its session", NULL) == 0; i++)
    g_usleep(100000);
  mqtt_client_free(intruder);

  g_assert_true(wait_lines_with(fx.sub_out, "session_taken_over", "inspectd-" STATION, 1, 20));
  /* One line says what happened (mosquitto 2.0 gives no reason code: the
   * daemon infers it); the first kick may read as an outage, the flapping
   * after it does not. */
  g_assert_cmpuint(count_lines_with(err, "took over its session", "client_id"), ==, 1);
  g_assert_cmpuint(count_lines_with(err, "unreachable", NULL), <=, 1);
  g_autoptr(GArray) now = parse_lines(out);
  guint mark = now->len;
  g_autoptr(GArray) after = wait_lines(out, mark + 5, 30);
  g_assert_cmpuint(after->len, >=, mark + 5); /* inspection went on */

  /* A reload that restarts the MQTT client: the old one leaves without a
   * word, the new one says "online". */
  g_autoptr(GPtrArray) so_far = mqtt_client_take(watcher, status_topic);
  g_ptr_array_extend_and_steal(seen, g_steal_pointer(&so_far));
  g_autofree char *cfg2 = g_strconcat(cfg, "[mqtt]\nkeepalive = 25\n", NULL);
  write_file(fx.cfg_path, cfg2);
  const char *note = wait_reload();
  g_assert_null(strstr(note, "rejected"));
  g_autoptr(MqttMsg) again = mqtt_client_wait(watcher, status_topic, 10000, NULL);
  g_assert_nonnull(again); /* the new client's "online" */
  g_ptr_array_add(seen, g_steal_pointer(&again));
  /* ... and past the will delay too: the new connection cancelled the
   * old client's armed will. */
  g_usleep(12 * G_USEC_PER_SEC); /* the will delay is 10 s */
  g_autoptr(GPtrArray) rest = mqtt_client_take(watcher, status_topic);
  g_ptr_array_extend_and_steal(seen, g_steal_pointer(&rest));
  g_assert_false(has_offline(seen));

  /* Killed just after another such reload, whether or not the new client
   * got to connect: nobody says goodbye, the will does, after its delay. */
  g_autofree char *cfg3 = g_strconcat(cfg, "[mqtt]\nkeepalive = 20\n", NULL);
  write_file(fx.cfg_path, cfg3);
  note = wait_reload();
  g_assert_null(strstr(note, "rejected"));
  gint64 killed = g_get_monotonic_time();
  g_subprocess_send_signal(p, SIGKILL);
  g_assert_true(g_subprocess_wait(p, NULL, NULL));
  MqttMsg *offline = NULL;
  while (offline == NULL && g_get_monotonic_time() - killed < 20 * G_USEC_PER_SEC) {
    MqttMsg *m = mqtt_client_wait(watcher, status_topic, 500, NULL);
    if (m == NULL)
      continue;
    if (g_strstr_len(g_bytes_get_data(m->payload, NULL), (gssize)g_bytes_get_size(m->payload),
                     "\"offline\"") != NULL)
      offline = m;
    else
      mqtt_msg_free(m);
  }
  double after_s = (double)(g_get_monotonic_time() - killed) / G_USEC_PER_SEC;
  g_test_message("the will came %.1f s after SIGKILL", after_s);
  g_assert_nonnull(offline);
  g_assert_cmpfloat(after_s, >=, 8.0);
  mqtt_msg_free(offline);
}

/* The model is the daemon's own once loaded. Its file truncated in place
 * while the daemon runs changes nothing (it was mapped once: SIGBUS); the
 * change is reported within a status period, a reload refuses the damaged
 * file and keeps the running model, and a new file renamed over the path is
 * loaded by a reload although the config did not change. */
static gboolean
wait_file_contains(const char *path, const char *needle, double timeout_s)
{
  gint64 deadline = g_get_monotonic_time() + (gint64)(timeout_s * G_USEC_PER_SEC);

  for (;;) {
    g_autofree char *text = read_file(path);
    if (strstr(text, needle) != NULL)
      return TRUE;
    if (g_get_monotonic_time() > deadline)
      return FALSE;
    g_usleep(100000);
  }
}

static void
test_model_file_changed(void)
{
  g_autoptr(GError) error = NULL;

  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "own.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "own.err", NULL);
  g_autofree char *own = g_build_filename(fx.dir, "own.safetensors", NULL);
  g_autofree char *bytes_a = NULL, *bytes_b = NULL;
  gsize len_a = 0, len_b = 0;
  g_assert_true(g_file_get_contents(fx.model_a, &bytes_a, &len_a, NULL));
  g_assert_true(g_file_get_contents(fx.model_b, &bytes_b, &len_b, NULL));
  g_assert_true(g_file_set_contents(own, bytes_a, (gssize)len_a, NULL));
  g_autofree char *cfg = config_text(own, "0.5");
  write_file(fx.cfg_path, cfg);
  {
    g_autofree char *text = read_file(fx.sub_out);
    sub_mark = strlen(text);
  }

  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  g_autoptr(GArray) before = wait_lines(out, 3, 30);
  g_assert_cmpuint(before->len, >=, 3);

  /* Truncated in place, as a careless copy does first. */
  g_assert_cmpint(truncate(own, (off_t)(len_a / 2)), ==, 0);
  gint64 t0 = g_get_monotonic_time();
  g_assert_true(wait_file_contains(err, "changed on disk", 15));
  g_test_message("the truncated model file was reported %.1f s after the truncate",
                 (double)(g_get_monotonic_time() - t0) / G_USEC_PER_SEC);
  g_assert_true(wait_lines_with(fx.sub_out, "model_file_changed", "written in place", 1, 10));
  g_autoptr(GArray) mid = parse_lines(out);
  g_autoptr(GArray) after = wait_lines(out, mid->len + 5, 30);
  g_assert_cmpuint(after->len, >=, mid->len + 5);   /* inspection went on, no SIGBUS */
  g_assert_nonnull(g_subprocess_get_identifier(p)); /* still running */

  /* A reload refuses the half file, with the reason, and keeps the model. */
  g_subprocess_send_signal(p, SIGHUP);
  const char *note = wait_reload();
  g_assert_nonnull(strstr(note, "rejected"));
  g_assert_true(wait_file_contains(err, "reload rejected", 10));
  g_assert_true(wait_file_contains(err, "own.safetensors", 1));
  g_autofree char *a_json = g_strdup_printf("\"model\":\"%s\"", fx.model_a_id);
  g_autofree char *b_json = g_strdup_printf("\"model\":\"%s\"", fx.model_b_id);
  guint n_a = count_lines_with(fx.sub_out, "/result", a_json);
  g_assert_true(wait_lines_with(fx.sub_out, "/result", a_json, n_a + 3, 20));

  /* Another model written beside it and renamed over the path (what
   * g_file_set_contents does): the config is the same, a reload loads it. */
  g_assert_true(g_file_set_contents(own, bytes_b, (gssize)len_b, NULL));
  g_subprocess_send_signal(p, SIGHUP);
  note = wait_reload();
  g_assert_null(strstr(note, "rejected"));
  g_autofree char *swapped = g_strdup_printf("model swapped: now %s", fx.model_b_id);
  g_assert_true(wait_file_contains(err, swapped, 10));
  g_assert_true(wait_file_contains(err, "[model] path (the file changed)", 1));
  g_assert_true(wait_lines_with(fx.sub_out, "/result", b_json, 3, 20));

  g_subprocess_send_signal(p, SIGTERM);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_no_error(error);
  g_assert_true(g_subprocess_get_if_exited(p));
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
  sub_mark = 0;
}

/* Images a files replay cannot use (a truncated PNG, text named .png, a
 * zero-byte file) are skipped: each is logged and raised as the event
 * image_rejected (REJECT_BURST a minute, then a count), and counted in the
 * status as "rejected"; inspection of the good ones goes on. */
static void
test_images_rejected(void)
{
  g_autoptr(GError) error = NULL;

  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "rej.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "rej.err", NULL);
  g_autofree char *dir = g_build_filename(fx.dir, "rej-images", NULL);
  g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
  const char *good[] = {"p00-good.png", "p01-good.png"};
  for (gsize i = 0; i < G_N_ELEMENTS(good); i++) {
    g_autofree char *from = g_build_filename(fx.images, good[i], NULL);
    g_autofree char *to = g_build_filename(dir, good[i], NULL);
    g_autofree char *bytes = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(from, &bytes, &len, NULL));
    g_assert_true(g_file_set_contents(to, bytes, (gssize)len, NULL));
    if (i == 0) {
      g_autofree char *cut = g_build_filename(dir, "p00-truncated.png", NULL);
      g_assert_true(g_file_set_contents(cut, bytes, (gssize)(len / 2), NULL));
    }
  }
  g_autofree char *text = g_build_filename(dir, "p03-text.png", NULL);
  write_file(text, "this is not an image\n");
  g_autofree char *empty = g_build_filename(dir, "p04-empty.png", NULL);
  write_file(empty, "");

  g_autofree char *base = config_text(fx.model_a, "0.5");
  g_autofree char *from_loc = g_strdup_printf("location = %s/*.png", fx.images);
  g_autofree char *to_loc = g_strdup_printf("location = %s/*.png", dir);
  g_auto(GStrv) parts = g_strsplit(base, from_loc, 2);
  g_assert_cmpuint(g_strv_length(parts), ==, 2);
  g_autofree char *cfg = g_strjoin(to_loc, parts[0], parts[1], NULL);
  write_file(fx.cfg_path, cfg);
  {
    g_autofree char *sub = read_file(fx.sub_out);
    sub_mark = strlen(sub);
  }

  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  g_autoptr(GArray) lines = wait_lines(out, 6, 30);
  g_assert_cmpuint(lines->len, >=, 6); /* the good ones, again and again */
  g_assert_true(wait_lines_with(fx.sub_out, "image_rejected", "p03-text.png", 1, 10));
  g_assert_true(wait_lines_with(fx.sub_out, "image_rejected", "p00-truncated.png", 1, 10));
  g_assert_true(wait_lines_with(fx.sub_out, "image_rejected", "p04-empty.png", 1, 10));
  g_assert_true(wait_file_contains(err, "p03-text.png", 5));
  /* The status counts them (every pass of the loop rejects the three). */
  g_autoptr(GRegex) re = g_regex_new("\"rejected\":([0-9]+)", 0, 0, NULL);
  guint64 rejected = 0;
  for (int i = 0; i < 30 && rejected < 3; i++) {
    g_autofree char *status = retained_status();
    g_autoptr(GMatchInfo) mi = NULL;
    if (status != NULL && g_regex_match(re, status, 0, &mi)) {
      g_autofree char *n = g_match_info_fetch(mi, 1);
      rejected = g_ascii_strtoull(n, NULL, 10);
    }
    if (rejected < 3)
      g_usleep(500000);
  }
  g_test_message("status: %" G_GUINT64_FORMAT " images rejected", rejected);
  g_assert_cmpuint(rejected, >=, 3);
  /* Told one by one only REJECT_BURST (5) times a minute. */
  g_assert_cmpuint(count_lines_with(fx.sub_out, "image_rejected", NULL), <=, 5);
  /* STATUS= says it too. */
  gboolean in_status = FALSE;
  for (int i = 0; i < 3 && !in_status; i++) {
    int r = notify_wait("STATUS=", 10);
    g_assert_cmpint(r, >=, 0);
    const char *note = g_ptr_array_index(fx.notes, r);
    in_status = strstr(note, " rejected") != NULL && strstr(note, ", 0 rejected") == NULL;
  }
  g_assert_true(in_status);

  g_subprocess_send_signal(p, SIGTERM);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_no_error(error);
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
  sub_mark = 0;
}

/* The spool on a 256 KiB filesystem, the broker out of reach: the spool
 * learns the room it has, masks go first, then the oldest results; the
 * operator hears of it within seconds (journal, STATUS=degraded), and once
 * the broker is back every seq is accounted for: delivered, or inside a
 * range a spool_full event announced. */
static void
test_spool_disk_full(void)
{
  g_autoptr(GError) error = NULL;

  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  if (!fx.can_mount) {
    g_test_skip("a private mount namespace is needed to mount a small tmpfs (run as root)");
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "full.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "full.err", NULL);
  g_autofree char *spool = g_build_filename(fx.dir, "full-spool", NULL);
  g_assert_cmpint(g_mkdir_with_parents(spool, 0700), ==, 0);
  g_assert_cmpint(mount("none", spool, "tmpfs", 0, "size=256k,mode=0700"), ==, 0);

  g_autofree char *base = config_text(fx.model_a, "0.5");
  g_autofree char *real_port = g_strdup_printf("port = %d\n", fx.port);
  g_autofree char *dead_port = g_strdup_printf("port = %d\n", mqtt_test_free_port());
  g_autofree char *from_spool = g_strdup_printf("dir = %s/spool\n", fx.state_dir);
  g_autofree char *to_spool = g_strdup_printf("dir = %s\n", spool);
  g_autoptr(GString) cfg = g_string_new(base);
  g_assert_cmpuint(g_string_replace(cfg, from_spool, to_spool, 1), ==, 1);
  g_string_replace(cfg, "fps = 15\n", "fps = 40\n", 1);
  g_autoptr(GString) down = g_string_new(cfg->str);
  g_assert_cmpuint(g_string_replace(down, real_port, dead_port, 1), ==, 1);
  g_string_append(down, "[mqtt]\nmasks = all\n");
  g_string_append(cfg, "[mqtt]\nmasks = all\n");
  write_file(fx.cfg_path, down->str);
  {
    g_autofree char *sub = read_file(fx.sub_out);
    sub_mark = strlen(sub);
  }

  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  /* Masks go first, then results: said in the journal and in STATUS=. */
  gint64 t0 = g_get_monotonic_time();
  g_assert_true(wait_file_contains(err, "results are being dropped", 120));
  double said_s = (double)(g_get_monotonic_time() - t0) / G_USEC_PER_SEC;
  g_assert_cmpint(notify_wait("STATUS=degraded", 15), >=, 0);
  g_autoptr(GArray) at_drop = parse_lines(out);
  g_test_message("results dropped after %u parts, said %.1f s after the start", at_drop->len,
                 said_s);

  /* The broker back (a reload to the real port): the spool drains and the
   * drops are announced with their seqs. */
  write_file(fx.cfg_path, cfg->str);
  const char *note = wait_reload();
  g_assert_null(strstr(note, "rejected"));
  g_assert_true(wait_lines_with(fx.sub_out, "spool_full", "dropped_result_seqs", 1, 30));
  g_usleep(3 * G_USEC_PER_SEC);
  {
    /* ... and counted in the status. */
    g_autofree char *status = NULL;
    for (int i = 0; i < 20; i++) {
      g_free(status);
      status = retained_status();
      if (status != NULL && strstr(status, "\"spool_dropped_results\":") != NULL &&
          strstr(status, "\"spool_dropped_results\":0,") == NULL)
        break;
      g_usleep(500000);
    }
    g_assert_nonnull(status);
    g_assert_null(strstr(status, "\"spool_dropped_results\":0,"));
    g_assert_nonnull(strstr(status, "\"spool_dropped_results\":"));
  }
  g_subprocess_send_signal(p, SIGTERM);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_no_error(error);
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
  g_usleep(500000);

  /* Every seq the daemon decided: delivered, or announced as dropped. */
  g_autoptr(GArray) all = parse_lines(out);
  g_autofree char *sub = read_file(fx.sub_out);
  g_auto(GStrv) lines = g_strsplit(sub + MIN(sub_mark, strlen(sub)), "\n", -1);
  g_autoptr(GHashTable) got = g_hash_table_new(g_int64_hash, g_int64_equal);
  g_autoptr(GArray) ranges = g_array_new(FALSE, FALSE, sizeof(gint64));
  g_autoptr(GRegex) seq_re = g_regex_new("\"seq\":([0-9]+)", 0, 0, NULL);
  static gint64 keys[100000];
  guint n_keys = 0;
  for (char **l = lines; *l; l++) {
    g_autoptr(GMatchInfo) mi = NULL;
    if (strstr(*l, "/result ") != NULL && g_regex_match(seq_re, *l, 0, &mi)) {
      g_autofree char *n = g_match_info_fetch(mi, 1);
      if (n_keys < G_N_ELEMENTS(keys)) {
        keys[n_keys] = (gint64)g_ascii_strtoull(n, NULL, 10);
        g_hash_table_add(got, &keys[n_keys++]);
      }
    } else if (strstr(*l, "\"spool_full\"") != NULL && strchr(*l, ' ') != NULL) {
      g_autoptr(JsonNode) node = json_from_string(strchr(*l, ' ') + 1, NULL);
      g_assert_nonnull(node);
      JsonObject *o = json_node_get_object(node);
      g_assert_false(json_object_has_member(o, "dropped_result_seqs_merged"));
      if (!json_object_has_member(o, "dropped_result_seqs"))
        continue;
      JsonArray *rs = json_object_get_array_member(o, "dropped_result_seqs");
      for (guint r = 0; r < json_array_get_length(rs); r++) {
        JsonArray *pair = json_array_get_array_element(rs, r);
        gint64 v[2] = {json_array_get_int_element(pair, 0), json_array_get_int_element(pair, 1)};
        g_array_append_vals(ranges, v, 2);
      }
    }
  }
  /* What the stop left in the spool goes out at the next start. */
  g_autoptr(GHashTable) kept = g_hash_table_new(g_int64_hash, g_int64_equal);
  static gint64 kept_keys[100000];
  guint n_kept = 0;
  {
    g_autoptr(InspSpool) sp = insp_spool_open(spool, 1 << 30, INSP_SPOOL_FLAGS_NONE, &error);
    InspSpoolMessage *m;
    g_assert_no_error(error);
    while ((m = insp_spool_claim_next(sp)) != NULL) {
      if (m->kind == INSP_SPOOL_KIND_RESULT && n_kept < G_N_ELEMENTS(kept_keys)) {
        kept_keys[n_kept] = (gint64)m->seq;
        g_hash_table_add(kept, &kept_keys[n_kept++]);
      }
      insp_spool_message_free(m);
    }
  }
  guint delivered = 0, dropped = 0, missing = 0;
  for (guint i = 0; i < all->len; i++) {
    gint64 seq = (gint64)g_array_index(all, Line, i).seq;
    gboolean in_range = FALSE;
    for (guint r = 0; r + 1 < ranges->len; r += 2)
      if (seq >= g_array_index(ranges, gint64, r) && seq <= g_array_index(ranges, gint64, r + 1))
        in_range = TRUE;
    if (g_hash_table_contains(got, &seq)) {
      delivered++;
      g_assert_false(in_range); /* announced as dropped, yet delivered: a lie */
    } else if (in_range) {
      dropped++;
    } else if (g_hash_table_contains(kept, &seq)) {
      continue; /* spooled for the next start */
    } else {
      missing++;
      g_test_message("seq %" G_GINT64_FORMAT " neither delivered nor announced", seq);
    }
  }
  g_test_message("%u parts: %u delivered, %u dropped and announced in %u range(s), %u spooled for "
                 "the next start, %u missing",
                 all->len, delivered, dropped, ranges->len / 2, n_kept, missing);
  g_assert_cmpuint(dropped, >, 0);
  g_assert_cmpuint(missing, ==, 0);
  g_assert_cmpint(umount2(spool, MNT_DETACH), ==, 0);
  sub_mark = 0;
}

/* The HTTP output: /metrics in the Prometheus text format (read back by the
 * real parser, python3-prometheus-client), counters that agree with the
 * decisions, /healthz, basic auth, and check-config refusing a listen
 * address beyond loopback without a password. */
static char *
http_get(SoupSession *session, const char *url, const char *user, const char *password,
         guint *status)
{
  g_autoptr(SoupMessage) msg = soup_message_new("GET", url);
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) body = NULL;

  if (user != NULL) {
    g_autofree char *pair = g_strdup_printf("%s:%s", user, password);
    g_autofree char *b64 = g_base64_encode((const guchar *)pair, strlen(pair));
    g_autofree char *value = g_strdup_printf("Basic %s", b64);
    soup_message_headers_replace(soup_message_get_request_headers(msg), "Authorization", value);
  }
  body = soup_session_send_and_read(session, msg, NULL, &error);
  g_assert_no_error(error);
  *status = soup_message_get_status(msg);
  return g_strndup(g_bytes_get_data(body, NULL), g_bytes_get_size(body));
}

static void
test_http(void)
{
  g_autoptr(GError) error = NULL;

  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  const char *python =
      g_file_test("/usr/bin/python3", G_FILE_TEST_IS_EXECUTABLE) ? "/usr/bin/python3" : "python3";
  g_autofree char *out = g_build_filename(fx.dir, "http.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "http.err", NULL);
  g_autofree char *pw = g_build_filename(fx.dir, "http-users", NULL);
  write_file(pw, "# who may read the line\nops:s3cret\n");
  int port = mqtt_test_free_port();
  g_autofree char *base = config_text(fx.model_a, "0.5");

  /* Beyond loopback without a password: check-config says which key. */
  {
    g_autofree char *open_cfg = g_strdup_printf("%s[http]\nlisten = 0.0.0.0:%d\n", base, port);
    g_autofree char *path = g_build_filename(fx.dir, "http-open.conf", NULL);
    g_autofree char *o = NULL, *e = NULL;
    int code = -1;
    write_file(path, open_cfg);
    const char *argv[] = {g_getenv("INSPECTD"), "check-config", path, NULL};
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &o, &e,
                               &code, &error));
    g_assert_no_error(error);
    g_assert_false(g_spawn_check_wait_status(code, NULL));
    g_assert_nonnull(strstr(e, "[http] listen"));
    g_assert_nonnull(strstr(e, "password_file"));
  }

  g_autofree char *cfg =
      g_strdup_printf("%s[http]\nlisten = 127.0.0.1:%d\npassword_file = %s\n", base, port, pw);
  write_file(fx.cfg_path, cfg);
  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  g_autoptr(GArray) first = wait_lines(out, 5, 30);
  g_assert_cmpuint(first->len, >=, 5);

  g_autoptr(SoupSession) session = soup_session_new();
  g_autofree char *metrics_url = g_strdup_printf("http://127.0.0.1:%d/metrics", port);
  g_autofree char *health_url = g_strdup_printf("http://127.0.0.1:%d/healthz", port);
  guint status = 0;
  g_free(http_get(session, metrics_url, NULL, NULL, &status));
  g_assert_cmpuint(status, ==, 401);
  g_free(http_get(session, metrics_url, "ops", "wrong", &status));
  g_assert_cmpuint(status, ==, 401);

  /* Healthy once the first status is out. */
  g_autofree char *health = NULL;
  for (int i = 0; i < 100; i++) {
    g_free(health);
    health = http_get(session, health_url, "ops", "s3cret", &status);
    if (status == 200)
      break;
    g_usleep(100000);
  }
  g_assert_cmpuint(status, ==, 200);
  g_assert_nonnull(strstr(health, "\"state\":\"online\""));

  g_autoptr(GArray) before = parse_lines(out);
  g_autofree char *metrics = http_get(session, metrics_url, "ops", "s3cret", &status);
  g_autoptr(GArray) after = parse_lines(out);
  g_assert_cmpuint(status, ==, 200);
  g_autofree char *mpath = g_build_filename(fx.dir, "metrics.txt", NULL);
  write_file(mpath, metrics);
  /* The real parser: every family, and the parts counter. */
  const char *script =
      "import sys\n"
      "from prometheus_client.parser import text_string_to_metric_families as f\n"
      "fam = {m.name: m for m in f(open(sys.argv[1]).read())}\n"
      "need = ['inspectd_parts', 'inspectd_inspection_seconds', 'inspectd_score',\n"
      "        'inspectd_frames_dropped', 'inspectd_threshold', 'inspectd_model_info',\n"
      "        'process_resident_memory_bytes', 'inspectd_stage_seconds', 'inspectd_frames',\n"
      "        'inspectd_queue_frames', 'inspectd_fps']\n"
      "missing = [n for n in need if n not in fam]\n"
      "assert not missing, missing\n"
      "stages = {s.labels['stage'] for s in fam['inspectd_stage_seconds'].samples}\n"
      "assert stages == {'preprocess', 'backbone', 'search', 'map', 'regions'}, stages\n"
      "kinds = {s.labels['kind']: s.value for s in fam['inspectd_threshold'].samples}\n"
      "assert kinds['image'] == 0.5 and 'pixel' in kinds, kinds\n"
      "info = fam['inspectd_model_info'].samples[0].labels\n"
      "assert info['detector'] == 'patchcore' and int(info['input_size']) > 0, info\n"
      "frames = fam['inspectd_frames'].samples[0].value\n"
      /* The shipped Grafana dashboard asks only for series that exist. */
      "import json, re\n"
      "names = {x.name for m in fam.values() for x in m.samples}\n"
      "dash = json.load(open(sys.argv[2]))\n"
      "exprs = [t['expr'] for p in dash['panels'] for t in p.get('targets', [])]\n"
      "used = {n for e in exprs for n in re.findall(r'\\b((?:inspectd|process)_[a-z_]+)', e)}\n"
      "unknown = sorted(used - names)\n"
      "assert exprs and not unknown, unknown\n"
      "parts = sum(s.value for s in fam['inspectd_parts'].samples)\n"
      "count = [s.value for s in fam['inspectd_inspection_seconds'].samples\n"
      "         if s.name.endswith('_count')][0]\n"
      "assert count == parts == frames, (count, parts, frames)\n"
      "print(int(parts), len(fam))\n";
  g_autofree char *py_out = NULL, *py_err = NULL;
  int py_status = -1;
  g_autofree char *dashboard = g_build_filename(g_getenv("INSP_TEST_SRCDIR"), "..", "contrib",
                                                "grafana", "inspectd.json", NULL);
  const char *py_argv[] = {python, "-c", script, mpath, dashboard, NULL};
  g_assert_true(g_spawn_sync(NULL, (char **)py_argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &py_out,
                             &py_err, &py_status, &error));
  g_assert_no_error(error);
  if (!g_spawn_check_wait_status(py_status, NULL)) {
    if (strstr(py_err, "No module named 'prometheus_client'") != NULL) {
      g_test_skip("python3-prometheus-client is needed to parse /metrics");
      g_subprocess_send_signal(p, SIGTERM);
      g_subprocess_wait(p, NULL, NULL);
      return;
    }
    g_test_message("parser: %s", py_err);
  }
  g_assert_true(g_spawn_check_wait_status(py_status, NULL));
  guint64 parts = g_ascii_strtoull(py_out, NULL, 10);
  g_test_message("/metrics: %s parts and families; %u..%u decision lines around the request",
                 g_strstrip(py_out), before->len, after->len);
  /* The counter agrees with the decisions (taken between the two reads). */
  g_assert_cmpuint(parts, >=, before->len);
  g_assert_cmpuint(parts, <=, after->len);

  g_autofree char *nothing_url = g_strdup_printf("http://127.0.0.1:%d/nothing", port);
  g_free(http_get(session, nothing_url, "ops", "s3cret", &status));
  g_assert_cmpuint(status, ==, 404);

  g_subprocess_send_signal(p, SIGTERM);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_no_error(error);
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
}

/* [archive]: every failed part's frame, overlay and result JSON in
 * dir/fail/, the folder kept within max_mb by removing the oldest parts
 * whole; train --images reads the archived frames (not the overlays). Then
 * a full disk (a tiny tmpfs): archive_failed on the event topic and in the
 * journal, and inspection goes on. */
static void
test_archive(void)
{
  g_autoptr(GError) error = NULL;

  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "archive.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "archive.err", NULL);
  g_autofree char *dir = g_build_filename(fx.dir, "archive", NULL);
  g_autofree char *fail_dir = g_build_filename(dir, "fail", NULL);
  g_autofree char *base = config_text(fx.model_a, "0.05"); /* every part fails */
  g_autoptr(GString) cfg = g_string_new(base);
  g_string_replace(cfg, "fps = 15\n", "fps = 40\n", 1);
  g_string_append_printf(cfg, "[archive]\ndir = %s\nwhat = fail\nmax_mb = 1\n", dir);
  write_file(fx.cfg_path, cfg->str);
  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  g_autoptr(GArray) lines = wait_lines(out, 200, 60);
  g_assert_cmpuint(lines->len, >=, 200);
  g_subprocess_send_signal(p, SIGTERM);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
  g_autoptr(GArray) all = parse_lines(out);
  guint64 last_seq = g_array_index(all, Line, all->len - 1).seq;

  /* Complete parts, each JSON the result of its seq. */
  g_autoptr(GDir) d = g_dir_open(fail_dir, 0, &error);
  g_assert_no_error(error);
  const char *name;
  guint64 total = 0, n_parts = 0, n_jpg = 0, min_seq = G_MAXUINT64, max_seq = 0;
  while ((name = g_dir_read_name(d)) != NULL) {
    g_autofree char *path = g_build_filename(fail_dir, name, NULL);
    GStatBuf st;
    g_assert_cmpint(g_stat(path, &st), ==, 0);
    total += (guint64)st.st_size;
    if (g_str_has_suffix(name, ".jpg") && !g_str_has_suffix(name, ".overlay.jpg"))
      n_jpg++;
    if (!g_str_has_suffix(name, ".json"))
      continue;
    n_parts++;
    g_autofree char *stem = g_strndup(name, strlen(name) - 5);
    g_autofree char *jpg = g_strdup_printf("%s/%s.jpg", fail_dir, stem);
    g_autofree char *ovl = g_strdup_printf("%s/%s.overlay.jpg", fail_dir, stem);
    g_assert_true(g_file_test(jpg, G_FILE_TEST_IS_REGULAR));
    g_assert_true(g_file_test(ovl, G_FILE_TEST_IS_REGULAR));
    g_autoptr(InspImage) img = insp_image_load(ovl, 3, &error);
    g_assert_no_error(error);
    g_assert_cmpint(img->width, ==, SIZE);
    g_autoptr(JsonParser) parser = json_parser_new();
    g_assert_true(json_parser_load_from_file(parser, path, &error));
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    guint64 seq = (guint64)json_object_get_int_member(o, "seq");
    g_assert_cmpuint(seq, ==, g_ascii_strtoull(stem, NULL, 10));
    g_assert_cmpstr(json_object_get_string_member(o, "verdict"), ==, "fail");
    min_seq = MIN(min_seq, seq);
    max_seq = MAX(max_seq, seq);
  }
  g_test_message("archive: %" G_GUINT64_FORMAT " parts, seq %" G_GUINT64_FORMAT
                 "..%" G_GUINT64_FORMAT ", %.2f MiB; last decision seq %" G_GUINT64_FORMAT,
                 n_parts, min_seq, max_seq, (double)total / 1048576.0, last_seq);
  g_assert_cmpuint(n_parts, >=, 20);
  g_assert_cmpuint(n_jpg, ==, n_parts);
  /* Within max_mb (one part of slack: the bound is checked after a write),
   * the oldest removed, the newest kept (all queued parts are written at stop). */
  g_assert_cmpuint(total, <=, 1048576 + 64 * 1024);
  g_assert_cmpuint(min_seq, >, 0);
  g_assert_cmpuint(max_seq, ==, last_seq);

  /* The archived frames train a model; the overlays are not read. */
  {
    g_autofree char *model = g_build_filename(fx.dir, "from-archive.safetensors", NULL);
    g_autofree char *o = NULL, *e = NULL;
    int code = -1;
    const char *argv[] = {g_getenv("INSPECTD"), "train",   "--images", fail_dir, "--out", model,
                          "--backbone",         "builtin", "--size",   "64",     NULL};
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &o, &e,
                               &code, &error));
    g_assert_no_error(error);
    if (!g_spawn_check_wait_status(code, NULL))
      g_test_message("train: %s%s", o, e);
    g_assert_true(g_spawn_check_wait_status(code, NULL));
    g_autofree char *count = g_strdup_printf("%" G_GUINT64_FORMAT " ", n_parts);
    g_autofree char *both = g_strconcat(o, e, NULL);
    if (strstr(both, count) == NULL)
      g_test_message("train said: %s", both);
    g_assert_nonnull(strstr(both, count));
  }

  if (!fx.can_mount) {
    g_test_message("no private mount namespace: the full-disk half is not run");
    return;
  }
  /* A disk too small for one part. */
  g_autofree char *tiny = g_build_filename(fx.dir, "archive-tiny", NULL);
  g_assert_cmpint(g_mkdir_with_parents(tiny, 0755), ==, 0);
  g_assert_cmpint(mount("none", tiny, "tmpfs", 0, "size=8k,mode=0755"), ==, 0);
  g_autofree char *out2 = g_build_filename(fx.dir, "archive-full.out", NULL);
  g_autofree char *err2 = g_build_filename(fx.dir, "archive-full.err", NULL);
  g_autoptr(GString) cfg2 = g_string_new(base);
  g_string_append_printf(cfg2, "[archive]\ndir = %s\n", tiny);
  write_file(fx.cfg_path, cfg2->str);
  {
    g_autofree char *sub = read_file(fx.sub_out);
    sub_mark = strlen(sub);
  }
  notify_drain();
  g_autoptr(GSubprocess) p2 = spawn_daemon(out2, err2, NULL);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  g_assert_true(wait_file_contains(err2, "not archived", 30));
  g_assert_cmpuint(wait_lines_with(fx.sub_out, "/event ", "archive_failed", 1, 15), >=, 1);
  g_autoptr(GArray) at_fail = parse_lines(out2);
  g_autoptr(GArray) later = wait_lines(out2, at_fail->len + 20, 30);
  g_assert_cmpuint(later->len, >=, at_fail->len + 20);
  sub_mark = 0;
  g_subprocess_send_signal(p2, SIGTERM);
  g_assert_true(g_subprocess_wait(p2, NULL, &error));
  g_assert_cmpint(g_subprocess_get_exit_status(p2), ==, 0);
  umount2(tiny, MNT_DETACH);
}

/* [http] tls_cert/tls_key: HTTPS with a certificate made here by openssl;
 * plain HTTP on that port gets nothing; a large request body is refused
 * (413) before it is read. */
static void
test_http_tls(void)
{
  g_autoptr(GError) error = NULL;

  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *openssl = g_find_program_in_path("openssl");
  if (openssl == NULL) {
    g_test_skip("openssl is needed to make a certificate");
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "https.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "https.err", NULL);
  g_autofree char *crt = g_build_filename(fx.dir, "http.crt", NULL);
  g_autofree char *key = g_build_filename(fx.dir, "http.key", NULL);
  {
    const char *argv[] = {"openssl",  "req",
                          "-x509",    "-newkey",
                          "rsa:2048", "-nodes",
                          "-keyout",  key,
                          "-out",     crt,
                          "-days",    "2",
                          "-subj",    "/CN=127.0.0.1",
                          "-addext",  "subjectAltName=IP:127.0.0.1",
                          NULL};
    int code = -1;
    g_assert_true(
        g_spawn_sync(NULL, (char **)argv, NULL,
                     G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                     NULL, NULL, NULL, NULL, &code, &error));
    g_assert_no_error(error);
    g_assert_true(g_spawn_check_wait_status(code, NULL));
  }
  int port = mqtt_test_free_port();
  g_autofree char *base = config_text(fx.model_a, "0.5");
  g_autofree char *cfg = g_strdup_printf("%s[http]\nlisten = 127.0.0.1:%d\ntls_cert = %s\n"
                                         "tls_key = %s\n",
                                         base, port, crt, key);
  write_file(fx.cfg_path, cfg);
  notify_drain();
  /* Under ASan, LeakSanitizer's tracer itself crashes (signal 11) at the
   * exit of a process that loaded GnuTLS through glib-networking: leak
   * detection is off for this one daemon (every other test keeps it). */
  g_autofree char *asan = g_strdup(g_getenv("ASAN_OPTIONS"));
  if (asan != NULL && strstr(asan, "detect_leaks=1") != NULL) {
    g_autofree char *no_leaks = g_strconcat(asan, ":detect_leaks=0", NULL);
    g_setenv("ASAN_OPTIONS", no_leaks, TRUE);
  }
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  if (asan != NULL)
    g_setenv("ASAN_OPTIONS", asan, TRUE);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  g_autoptr(GArray) first = wait_lines(out, 3, 30);
  g_assert_cmpuint(first->len, >=, 3);

  /* Python's client, verifying against the certificate made above. */
  const char *script =
      "import ssl, sys, http.client, urllib.request, urllib.error\n"
      "port, crt = int(sys.argv[1]), sys.argv[2]\n"
      "ctx = ssl.create_default_context(cafile=crt)\n"
      "body = urllib.request.urlopen(f'https://127.0.0.1:{port}/metrics', context=ctx).read()\n"
      "assert b'inspectd_parts_total' in body, body[:200]\n"
      "page = urllib.request.urlopen(f'https://127.0.0.1:{port}/', context=ctx).read()\n"
      "assert b'EventSource' in page\n"
      "try:\n"
      "    urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5).read()\n"
      "    raise SystemExit('plain HTTP answered on the HTTPS port')\n"
      "except (urllib.error.URLError, ConnectionError, http.client.HTTPException):\n"
      "    pass\n"
      "c = http.client.HTTPSConnection('127.0.0.1', port, context=ctx, timeout=10)\n"
      "c.putrequest('POST', '/metrics')\n"
      "c.putheader('Content-Length', str(10 * 1024 * 1024))\n"
      "c.putheader('Expect', '100-continue')\n"
      "c.endheaders()\n"
      "r = c.getresponse()\n"
      "assert r.status == 413, r.status\n"
      "print('ok')\n";
  g_autofree char *port_s = g_strdup_printf("%d", port);
  g_autofree char *py_out = NULL, *py_err = NULL;
  int py_status = -1;
  const char *py_argv[] = {"/usr/bin/python3", "-c", script, port_s, crt, NULL};
  g_assert_true(g_spawn_sync(NULL, (char **)py_argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &py_out,
                             &py_err, &py_status, &error));
  g_assert_no_error(error);
  if (!g_spawn_check_wait_status(py_status, NULL))
    g_test_message("client: %s", py_err);
  g_assert_true(g_spawn_check_wait_status(py_status, NULL));
  g_assert_true(wait_file_contains(err, "https://127.0.0.1", 5));

  g_subprocess_send_signal(p, SIGTERM);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_no_error(error);
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
}

/* The retained Home Assistant configs a fresh subscriber gets, as topic ->
 * payload length; waits for the retained status (subscribed after). */
static GHashTable *
ha_retained_configs(void)
{
  const char *filters[] = {"homeassistant/#", "inspectd/" STATION "/status", NULL};
  g_autoptr(MqttClient) c = mqtt_client_new(fx.port, NULL, filters);
  GHashTable *out = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);

  g_assert_true(mqtt_client_wait_connected(c, 5000));
  g_autoptr(MqttMsg) st = mqtt_client_wait(c, filters[1], 5000, NULL);
  g_assert_nonnull(st);
  g_usleep(300000);
  g_autoptr(GPtrArray) all = mqtt_client_take(c, NULL);
  for (guint i = 0; i < all->len; i++) {
    MqttMsg *m = g_ptr_array_index(all, i);
    if (g_str_has_prefix(m->topic, "homeassistant/") && m->retain)
      g_hash_table_insert(out, g_strdup(m->topic), GSIZE_TO_POINTER(g_bytes_get_size(m->payload)));
  }
  return out;
}

/* [mqtt] homeassistant through the daemon: on at start, the device's seven
 * entities are retained (the threshold too, commands = all, with
 * [inspection]'s bounds); turned off by a reload, they are removed, and a
 * Home Assistant that subscribes afterwards finds none. */
static void
test_homeassistant_reload(void)
{
  g_autoptr(GError) error = NULL;

  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  g_autofree char *out = g_build_filename(fx.dir, "ha.out", NULL);
  g_autofree char *err = g_build_filename(fx.dir, "ha.err", NULL);
  g_autofree char *base = config_text(fx.model_a, "0.5");
  g_autofree char *on = g_strdup_printf("%s[inspection]\nthreshold_min = 0.35\n"
                                        "[mqtt]\nhomeassistant = true\n",
                                        base);
  const char *number = "homeassistant/number/inspectd_" STATION "/threshold/config";
  write_file(fx.cfg_path, on);
  notify_drain();
  g_autoptr(GSubprocess) p = spawn_daemon(out, err, NULL);
  g_assert_cmpint(notify_wait("READY=1", 90), >=, 0);
  const gint64 ready_s = g_get_real_time() / G_USEC_PER_SEC;
  {
    g_autoptr(GHashTable) r = ha_retained_configs();
    g_assert_cmpuint(g_hash_table_size(r), ==, 7);
    g_assert_true(g_hash_table_contains(r, number));
    g_assert_true(g_hash_table_contains(r, "homeassistant/binary_sensor/inspectd_" STATION
                                           "/verdict/config"));
  }
  {
    const char *filters[] = {number, NULL};
    g_autoptr(MqttClient) c = mqtt_client_new(fx.port, NULL, filters);
    g_autoptr(MqttMsg) m = mqtt_client_wait(c, number, 5000, NULL);
    g_assert_nonnull(m);
    g_autofree char *text =
        g_strndup(g_bytes_get_data(m->payload, NULL), g_bytes_get_size(m->payload));
    g_test_message("%s", text);
    g_assert_nonnull(strstr(text, "\"min\":0.35,\"max\":1,"));
    g_assert_nonnull(strstr(text, "\"command_topic\":\"inspectd/" STATION "/cmd/threshold\""));
    g_assert_nonnull(strstr(text, "\"sw_version\":\""));
  }

  /* Off by a reload: removed before the client goes. (After a while, so
   * that an uptime restarted by the new client would show.) */
  g_usleep(2500000);
  write_file(fx.cfg_path, base);
  notify_drain();
  g_subprocess_send_signal(p, SIGHUP);
  const char *note = wait_reload();
  g_assert_null(strstr(note, "rejected"));
  g_assert_true(wait_file_contains(err, "Home Assistant discovery: the entities of station", 5));
  g_assert_true(wait_file_contains(err, "were removed", 1));
  {
    g_autoptr(GHashTable) r = ha_retained_configs();
    g_assert_cmpuint(g_hash_table_size(r), ==, 0);
  }
  /* The reload started a new MQTT client; the status it retains still
   * counts uptime from the daemon's start (its `since`). */
  {
    const gint64 reload_s = g_get_real_time() / G_USEC_PER_SEC;
    gint64 ts_s = 0, uptime = -1, since_s = 0;

    for (int i = 0; i < 20 && ts_s < reload_s; i++) {
      g_autofree char *status = retained_status();
      g_autoptr(JsonParser) jp = json_parser_new();
      if (status && json_parser_load_from_data(jp, status, -1, NULL)) {
        JsonObject *so = json_node_get_object(json_parser_get_root(jp));
        g_autoptr(GDateTime) ts =
            g_date_time_new_from_iso8601(json_object_get_string_member(so, "ts"), NULL);
        g_autoptr(GDateTime) since =
            g_date_time_new_from_iso8601(json_object_get_string_member(so, "since"), NULL);
        ts_s = ts ? g_date_time_to_unix(ts) : 0;
        since_s = since ? g_date_time_to_unix(since) : 0;
        uptime = json_object_get_int_member(so, "uptime");
      }
      if (ts_s < reload_s)
        g_usleep(500000);
    }
    g_test_message("status after the reload: ts %" G_GINT64_FORMAT ", uptime %" G_GINT64_FORMAT
                   ", since %" G_GINT64_FORMAT ", ready at %" G_GINT64_FORMAT,
                   ts_s, uptime, since_s, ready_s);
    g_assert_cmpint(ts_s, >=, reload_s);
    g_assert_cmpint(uptime, >=, ts_s - ready_s - 1);
    g_assert_cmpint(uptime, <=, ts_s - since_s + 1);
  }

  g_subprocess_send_signal(p, SIGTERM);
  g_assert_true(g_subprocess_wait(p, NULL, &error));
  g_assert_no_error(error);
  g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 0);
}

/* Last: every JSON payload the daemon published to the fixture's subscriber
 * during the tests above (results, events, command replies, a trigger's
 * result) and the retained status, against doc/asyncapi.yaml's schemas. */
static void
test_asyncapi(void)
{
  g_autoptr(GError) error = NULL;

  if (!fx.ready) {
    g_test_skip(fx.skip_reason);
    return;
  }
  const char *srcdir = g_getenv("INSP_TEST_SRCDIR");
  g_autofree char *doc = g_build_filename(srcdir, "..", "doc", "asyncapi.yaml", NULL);
  g_autofree char *script = g_build_filename(srcdir, "integration", "validate-asyncapi.py", NULL);
  g_autofree char *status_path = g_build_filename(fx.dir, "status.json", NULL);
  g_autofree char *port = g_strdup_printf("%d", fx.port);
  g_autofree char *status = NULL;
  int code = -1;
  const char *sub_argv[] = {"mosquitto_sub",
                            "-h",
                            "127.0.0.1",
                            "-p",
                            port,
                            "-C",
                            "1",
                            "-W",
                            "5",
                            "-t",
                            "inspectd/" STATION "/status",
                            NULL};
  g_assert_true(g_spawn_sync(NULL, (char **)sub_argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                             &status, NULL, &code, &error));
  g_assert_no_error(error);
  g_assert_true(g_spawn_check_wait_status(code, NULL));
  write_file(status_path, status);

  g_autofree char *out = NULL, *err = NULL;
  const char *argv[] = {"/usr/bin/python3", script, doc, fx.sub_out, status_path, NULL};
  g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
                             &code, &error));
  g_assert_no_error(error);
  if (strstr(err, "No module named 'jsonschema'") != NULL ||
      strstr(err, "No module named 'yaml'") != NULL) {
    g_test_skip("python3-jsonschema and python3-yaml are needed to validate against AsyncAPI");
    return;
  }
  g_test_message("%s%s", out, err);
  g_assert_true(g_spawn_check_wait_status(code, NULL));
}

int
main(int argc, char **argv)
{
  int status;

  /* Before any thread: a mount namespace of our own, so that a tmpfs can be
   * remounted read-only under the daemon without touching the machine. */
  fx.can_mount = geteuid() == 0 && unshare(CLONE_NEWNS) == 0 &&
                 mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0;
  g_test_init(&argc, &argv, NULL);
  signal(SIGPIPE, SIG_IGN);
  fixture_setup();
  g_test_add_func("/daemon/lifecycle", test_lifecycle);
  g_test_add_func("/daemon/no-model-path", test_no_model_path);
  g_test_add_func("/daemon/threshold-command", test_threshold_command);
  g_test_add_func("/daemon/watchdog-stall", test_watchdog_stall);
  g_test_add_func("/daemon/trigger", test_trigger);
  g_test_add_func("/daemon/trigger-outcomes", test_trigger_outcomes);
  g_test_add_func("/daemon/demo", test_demo);
  g_test_add_func("/daemon/start-failure", test_start_failure);
  g_test_add_func("/daemon/state-dir-unusable", test_state_dir_unusable);
  g_test_add_func("/daemon/log-notice", test_log_notice);
  g_test_add_func("/daemon/replay-done", test_replay_done);
  g_test_add_func("/daemon/damaged-override", test_damaged_override);
  g_test_add_func("/daemon/broker-unreachable-at-start", test_broker_unreachable_at_start);
  g_test_add_func("/daemon/state-read-only", test_state_read_only);
  g_test_add_func("/daemon/broker-acl", test_broker_acl);
  g_test_add_func("/daemon/command-flood", test_command_flood);
  g_test_add_func("/daemon/model-file-changed", test_model_file_changed);
  g_test_add_func("/daemon/images-rejected", test_images_rejected);
  g_test_add_func("/daemon/spool-disk-full", test_spool_disk_full);
  g_test_add_func("/daemon/http", test_http);
  g_test_add_func("/daemon/http-tls", test_http_tls);
  g_test_add_func("/daemon/archive", test_archive);
  g_test_add_func("/daemon/session-takeover", test_session_takeover);
  g_test_add_func("/daemon/homeassistant-reload", test_homeassistant_reload);
  g_test_add_func("/daemon/asyncapi", test_asyncapi); /* last: it reads what the others published */
  status = g_test_run();
  fixture_teardown();
  return status;
}
