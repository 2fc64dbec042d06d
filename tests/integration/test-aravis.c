/* Captures from a real GigE Vision camera, loses it and gets it back: arv-fake-gv-camera-0.8
 * (aravis-tools) runs in a network namespace of its own, reached over a veth pair (on loopback it
 * is discovered but streams nothing; ../shared/NOTES.md), and pipeline/'s aravis source takes its
 * Bayer frames through aravissrc and bayer2rgb. Names (insp-ns-<pid>, veth ihv<pid>/icv<pid>) and
 * the subnet 10.77.<100 + pid % 100>.0/24 are this test's own; everything is torn down at the end,
 * also when an assertion fails (g_test_add with a teardown, and an atexit handler). Skips, saying
 * why, when not root, without `ip`, without the fake camera, or without the aravissrc/bayer2rgb
 * elements. */
#include <glib.h>
#include <gst/gst.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "insp-pipeline.h"

typedef struct {
  char *ns, *host_if, *cam_if, *host_ip, *cam_ip, *serial, *camera_name;
  GPid camera_pid;
  gboolean made;
} Net;

static Net net;

static gboolean
run(const char *cmdline, char **err_out)
{
  g_auto(GStrv) argv = NULL;
  if (!g_shell_parse_argv(cmdline, NULL, &argv, NULL))
    return FALSE;
  int status = 0;
  g_autofree char *out = NULL, *err = NULL;
  if (!g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, NULL))
    return FALSE;
  if (!g_spawn_check_wait_status(status, NULL)) {
    if (err_out != NULL)
      *err_out = g_strdup_printf("`%s` failed: %s", cmdline, err ? err : "");
    return FALSE;
  }
  return TRUE;
}

static void camera_kill(void);

static void
net_teardown(void)
{
  camera_kill();
  if (net.made) {
    g_autofree char *del_ns = g_strdup_printf("ip netns del %s", net.ns);
    g_autofree char *del_if = g_strdup_printf("ip link del %s", net.host_if);
    run(del_ns, NULL);
    run(del_if, NULL); /* usually gone with the namespace already */
    net.made = FALSE;
  }
}

static void
on_abort(int sig)
{
  net_teardown();
  signal(sig, SIG_DFL);
  raise(sig);
}

/* Starts the fake camera in the namespace; NULL on success, else why not. */
static char *
camera_start(void)
{
  const char *argv[] = {"ip", "netns",    "exec", net.ns,     "arv-fake-gv-camera-0.8",
                        "-i", net.cam_ip, "-s",   net.serial, NULL};
  GError *gerr = NULL;
  if (!g_spawn_async(NULL, (char **)argv, NULL,
                     G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL |
                         G_SPAWN_STDERR_TO_DEV_NULL,
                     NULL, NULL, &net.camera_pid, &gerr)) {
    char *m = g_strdup(gerr->message);
    g_error_free(gerr);
    return m;
  }
  return NULL;
}

static void
camera_kill(void)
{
  if (net.camera_pid > 0) {
    kill(net.camera_pid, SIGTERM);
    waitpid(net.camera_pid, NULL, 0);
    g_spawn_close_pid(net.camera_pid);
    net.camera_pid = 0;
  }
}

/* NULL on success, else why the namespace could not be made. */
static char *
net_setup(void)
{
  guint pid = (guint)getpid();
  net.ns = g_strdup_printf("insp-ns-%u", pid);
  net.host_if = g_strdup_printf("ihv%u", pid % 1000000);
  net.cam_if = g_strdup_printf("icv%u", pid % 1000000);
  guint subnet = 100 + pid % 100;
  net.host_ip = g_strdup_printf("10.77.%u.1", subnet);
  net.cam_ip = g_strdup_printf("10.77.%u.2", subnet);
  net.serial = g_strdup_printf("INSP%u", pid);
  net.camera_name = g_strdup_printf("Aravis-Fake-%s", net.serial);

  atexit(net_teardown);
  signal(SIGABRT, on_abort);
  signal(SIGTERM, on_abort);
  signal(SIGINT, on_abort);

  char *err = NULL;
  g_autofree char *c1 = g_strdup_printf("ip netns add %s", net.ns);
  if (!run(c1, &err))
    return err ? err : g_strdup("ip netns add failed");
  net.made = TRUE;
  char *cmds[] = {
      g_strdup_printf("ip link add %s type veth peer name %s", net.host_if, net.cam_if),
      g_strdup_printf("ip link set %s netns %s", net.cam_if, net.ns),
      g_strdup_printf("ip addr add %s/24 dev %s", net.host_ip, net.host_if),
      g_strdup_printf("ip link set %s up", net.host_if),
      g_strdup_printf("ip netns exec %s ip addr add %s/24 dev %s", net.ns, net.cam_ip, net.cam_if),
      g_strdup_printf("ip netns exec %s ip link set %s up", net.ns, net.cam_if),
      g_strdup_printf("ip netns exec %s ip link set lo up", net.ns),
  };
  for (guint i = 0; i < G_N_ELEMENTS(cmds); i++) {
    gboolean ok = err == NULL && run(cmds[i], &err);
    if (!ok && err == NULL)
      err = g_strdup_printf("`%s` failed", cmds[i]);
  }
  for (guint i = 0; i < G_N_ELEMENTS(cmds); i++)
    g_free(cmds[i]);
  if (err != NULL)
    return err;
  return camera_start();
}

typedef struct {
  GMutex lock;
  GCond cond;
  guint n;
  int width, height;
  guint64 last_seq;
  gboolean ordered;
  guint control_warnings;
  guint restarting;
} Got;

static void
on_result(InspPipeline *p, const InspResult *r, gpointer data)
{
  Got *g = data;
  g_mutex_lock(&g->lock);
  if (g->n > 0 && r->frame->seq <= g->last_seq)
    g->ordered = FALSE;
  g->last_seq = r->frame->seq;
  g->width = r->frame->width;
  g->height = r->frame->height;
  g->n++;
  g_cond_broadcast(&g->cond);
  g_mutex_unlock(&g->lock);
}

static void
on_event(InspPipeline *p, const InspPipelineEvent *ev, gpointer data)
{
  Got *g = data;
  g_test_message("event %d: %s %s", ev->kind, ev->message, ev->detail ? ev->detail : "");
  g_mutex_lock(&g->lock);
  if (ev->kind == INSP_PIPELINE_EVENT_CONTROL)
    g->control_warnings++;
  if (ev->kind == INSP_PIPELINE_EVENT_RESTARTING)
    g->restarting++;
  g_cond_broadcast(&g->cond);
  g_mutex_unlock(&g->lock);
}

static gboolean
noop_score(gpointer data, gpointer state, const InspFrame *f, InspResult *r, GError **error)
{
  r->score = f->data[0] / 255.0f;
  return TRUE;
}

static const InspScorerFuncs noop_funcs = {NULL, NULL, noop_score};

static void
test_aravis_capture(void)
{
  g_autoptr(GError) not_built = NULL;
  if (insp_capture_source_lookup("aravis", &not_built) == NULL) {
    /* -Daravis=disabled: the source is left out of the table on purpose
     * (test-capture checks that asking for it is an error). */
    g_assert_error(not_built, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_NOT_BUILT);
    g_test_skip_printf("%s", not_built->message);
    return;
  }
  if (geteuid() != 0) {
    g_test_skip("not root: cannot make a network namespace for the fake GigE camera");
    return;
  }
  g_autofree char *ip = g_find_program_in_path("ip");
  if (ip == NULL) {
    g_test_skip("no `ip` command (iproute2): cannot make a network namespace");
    return;
  }
  g_autofree char *fake = g_find_program_in_path("arv-fake-gv-camera-0.8");
  if (fake == NULL) {
    g_test_skip("arv-fake-gv-camera-0.8 missing (apt-get install aravis-tools)");
    return;
  }
  GstElementFactory *f1 = gst_element_factory_find("aravissrc");
  GstElementFactory *f2 = gst_element_factory_find("bayer2rgb");
  gboolean have = f1 != NULL && f2 != NULL;
  g_clear_object(&f1);
  g_clear_object(&f2);
  if (!have) {
    g_test_skip("GStreamer elements aravissrc/bayer2rgb missing "
                "(gstreamer1.0-plugins-bad and the Aravis GStreamer plugin)");
    return;
  }
  g_autofree char *why = net_setup();
  if (why != NULL) {
    net_teardown();
    g_test_skip_printf("cannot make the network namespace: %s", why);
    return;
  }
  g_usleep(500 * 1000); /* let the fake camera bind */

  InspCameraControl *controls = NULL;
  guint n_controls = 0;
  g_assert_true(insp_camera_controls_parse("Gain=2, exposure=10000", &controls, &n_controls, NULL));
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "aravis";
  opt.camera = net.camera_name;
  opt.drop = INSP_DROP_OLDEST;
  opt.controls = controls;
  opt.n_controls = n_controls;
  opt.backoff_initial_ms = 200;
  opt.backoff_max_ms = 1000;
  Got g = {0};
  g_mutex_init(&g.lock);
  g_cond_init(&g.cond);
  g.ordered = TRUE;
  g_autoptr(InspScorer) scorer = insp_scorer_new(&noop_funcs, NULL, NULL);
  InspPipelineCallbacks cb = {on_result, on_event, NULL, &g, NULL};
  g_autoptr(GError) err = NULL;
  InspPipeline *p = insp_pipeline_new(&opt, scorer, &cb, &err);
  g_assert_no_error(err);
  gboolean started = insp_pipeline_start(p, &err);
  g_assert_no_error(err);
  g_assert_true(started);

  gint64 end = g_get_monotonic_time() + 15 * G_USEC_PER_SEC;
  g_mutex_lock(&g.lock);
  while (g.n < 10 && g_cond_wait_until(&g.cond, &g.lock, end))
    ;
  guint n = g.n;
  g_mutex_unlock(&g.lock);
  g_assert_cmpuint(n, >=, 10);

  /* The camera goes away: the capture fails and is retried with backoff;
   * when the camera is back, frames flow again. */
  camera_kill();
  end = g_get_monotonic_time() + 15 * G_USEC_PER_SEC;
  g_mutex_lock(&g.lock);
  while (g.restarting < 1 && g_cond_wait_until(&g.cond, &g.lock, end))
    ;
  guint restarting = g.restarting;
  g_mutex_unlock(&g.lock);
  g_assert_cmpuint(restarting, >=, 1);
  g_autofree char *again = camera_start();
  g_assert_null(again);
  end = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
  g_mutex_lock(&g.lock);
  guint n_lost = g.n;
  while (g.n < n_lost + 10 && g_cond_wait_until(&g.cond, &g.lock, end))
    ;
  guint n_after = g.n - n_lost;
  g_mutex_unlock(&g.lock);
  InspPipelineStats st;
  insp_pipeline_get_stats(p, &st);
  insp_pipeline_free(p);
  insp_camera_controls_free(controls, n_controls);
  net_teardown();

  g_test_message("aravis: %u frames, %dx%d, captured %" G_GUINT64_FORMAT
                 ", restarts %" G_GUINT64_FORMAT ", control warnings %u",
                 n, g.width, g.height, st.frames_captured, st.restarts, g.control_warnings);
  g_assert_cmpuint(n_after, >=, 10);
  g_assert_cmpuint(st.restarts, >=, 1);
  g_assert_cmpint(g.width, ==, 512); /* the fake camera's Bayer 512x512, now RGB */
  g_assert_cmpint(g.height, ==, 512);
  g_assert_true(g.ordered);
  g_assert_cmpuint(st.rejected_format + st.rejected_size, ==, 0);
  g_mutex_clear(&g.lock);
  g_cond_clear(&g.cond);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  gst_init(&argc, &argv);
  g_test_add_func("/aravis/capture-from-fake-gige-camera", test_aravis_capture);
  return g_test_run();
}
