/* conf/: schema defaults, every class of validation problem with the file,
 * section and key it names, drop-in order, the diff into hot and cold
 * changes, the threshold override, the shipped conf/inspectd.conf, and
 * `inspectd check-config` through the real binary ($INSPECTD).
 * Every test writes its own files into a fresh temporary folder. */
#include "insp-conf.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers -------------------------------------------------------------- */

/* A readable regular file that stands for a model, key or password file:
 * "@FILE@" in a config text is replaced by its path. */
static char *readable_file;

static char *
subst(const char *text)
{
  g_autoptr(GString) s = g_string_new(text);

  if (readable_file)
    g_string_replace(s, "@FILE@", readable_file, 0);
  return g_string_free(g_steal_pointer(&s), FALSE);
}

static char *
make_tmpdir(void)
{
  g_autoptr(GError) error = NULL;
  char *dir = g_dir_make_tmp("test-conf-XXXXXX", &error);

  g_assert_no_error(error);
  return dir;
}

static void
rm_rf(const char *path)
{
  GDir *dir;

  if (g_file_test(path, G_FILE_TEST_IS_DIR) && !g_file_test(path, G_FILE_TEST_IS_SYMLINK)) {
    const char *name;

    dir = g_dir_open(path, 0, NULL);
    while (dir && (name = g_dir_read_name(dir))) {
      g_autofree char *child = g_build_filename(path, name, NULL);
      rm_rf(child);
    }
    if (dir)
      g_dir_close(dir);
    g_rmdir(path);
  } else {
    g_unlink(path);
  }
}

static char *
write_file(const char *dir, const char *name, const char *text)
{
  g_autoptr(GError) error = NULL;
  char *path = g_build_filename(dir, name, NULL);
  g_autofree char *parent = g_path_get_dirname(path);
  g_autofree char *body = subst(text);

  g_assert_cmpint(g_mkdir_with_parents(parent, 0755), ==, 0);
  g_assert_true(g_file_set_contents(path, body, -1, &error));
  g_assert_no_error(error);
  return path;
}

static InspConfig *
load_text(const char *text, GPtrArray **problems)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *body = subst(text);
  InspConfig *cfg = insp_config_load_from_data(body, -1, "test.conf", problems, &error);

  if (cfg)
    g_assert_no_error(error);
  else
    g_assert_error(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_INVALID);
  return cfg;
}

/* A config that must be valid. */
static InspConfig *
load_ok(const char *text)
{
  g_autoptr(GPtrArray) problems = NULL;
  InspConfig *cfg = load_text(text, &problems);

  if (!cfg) {
    for (guint i = 0; i < problems->len; i++)
      g_test_message("unexpected: %s", ((InspConfigProblem *)problems->pdata[i])->text);
  }
  g_assert_nonnull(cfg);
  g_assert_null(problems);
  return cfg;
}

/* The problems of a config that must be invalid. */
static GPtrArray *
load_bad(const char *text)
{
  g_autoptr(GPtrArray) problems = NULL;
  g_autoptr(InspConfig) cfg = load_text(text, &problems);

  g_assert_null(cfg);
  g_assert_nonnull(problems);
  g_assert_cmpuint(problems->len, >, 0);
  return g_steal_pointer(&problems);
}

/* Asserts that @problems holds one with this file, section, key (NULL to
 * not check) and a reason containing @needle; returns it. */
static const InspConfigProblem *
find_problem(GPtrArray *problems, const char *file, const char *section, const char *key,
             const char *needle)
{
  for (guint i = 0; i < problems->len; i++) {
    const InspConfigProblem *p = problems->pdata[i];

    if ((!file || g_strcmp0(p->file, file) == 0) && g_strcmp0(p->section, section) == 0 &&
        g_strcmp0(p->key, key) == 0 && strstr(p->reason, needle)) {
      g_autofree char *prefix = g_strdup_printf("%s: ", p->file);

      g_assert_true(g_str_has_prefix(p->text, prefix) || p->line > 0);
      g_assert_nonnull(strstr(p->text, p->reason));
      return p;
    }
  }
  for (guint i = 0; i < problems->len; i++)
    g_test_message("have: %s", ((InspConfigProblem *)problems->pdata[i])->text);
  g_test_message("wanted: %s [%s] %s: ...%s...", file ? file : "*", section, key, needle);
  g_assert_not_reached();
}

static void
assert_one_problem(const char *text, const char *section, const char *key, const char *needle)
{
  g_autoptr(GPtrArray) problems = load_bad(text);

  find_problem(problems, "test.conf", section, key, needle);
  if (problems->len != 1) {
    for (guint i = 0; i < problems->len; i++)
      g_test_message("have: %s", ((InspConfigProblem *)problems->pdata[i])->text);
  }
  g_assert_cmpuint(problems->len, ==, 1);
}

/* ---- defaults and types ---------------------------------------------------- */

static void
test_defaults(void)
{
  g_autoptr(InspConfig) cfg = insp_config_new_default();
  g_autofree char *client = NULL;

  g_assert_cmpstr(cfg->station.state_dir, ==, "/var/lib/inspectd");
  g_assert_cmpuint(strlen(cfg->station.id), >, 0);
  g_assert_cmpint(cfg->camera.source, ==, INSP_CONFIG_CAMERA_SOURCE_TEST);
  g_assert_cmpstr(cfg->camera.device, ==, "/dev/video0");
  g_assert_cmpstr(cfg->camera.location, ==, "");
  g_assert_false(cfg->camera.loop);
  g_assert_cmpfloat(cfg->camera.fps, ==, 0.0);
  g_assert_cmpuint(cfg->camera.n_controls, ==, 0);
  g_assert_cmpint(cfg->camera.width, ==, 0);
  g_assert_cmpint(cfg->camera.drop, ==, INSP_CONFIG_DROP_NEVER); /* auto, replay source */
  g_assert_cmpint(cfg->trigger.mode, ==, INSP_CONFIG_TRIGGER_MODE_FREE);
  g_assert_cmpint(cfg->trigger.timeout_ms, ==, 1000);
  g_assert_cmpstr(cfg->model.path, ==, "");
  g_assert_cmpint(cfg->model.workers, >=, 1);
  g_assert_cmpint(cfg->model.workers, <=, 64);
  g_assert_cmpint(cfg->model.blas_threads, ==, 1);
  g_assert_cmpfloat(cfg->inspection.threshold, ==, 0.5);
  g_assert_cmpfloat(cfg->inspection.pixel_threshold, ==, 0.5);
  g_assert_cmpfloat(cfg->inspection.configured_threshold, ==, 0.5);
  g_assert_cmpint(cfg->inspection.min_region_area, ==, 16);
  g_assert_cmpint(cfg->inspection.roi.w, ==, 0);
  g_assert_cmpstr(cfg->mqtt.host, ==, "localhost");
  g_assert_cmpint(cfg->mqtt.port, ==, 1883);
  client = g_strconcat("inspectd-", cfg->station.id, NULL);
  g_assert_cmpstr(cfg->mqtt.client_id, ==, client);
  g_assert_cmpstr(cfg->mqtt.tls_ca, ==, "");
  g_assert_cmpint(cfg->mqtt.qos, ==, 1);
  g_assert_cmpint(cfg->mqtt.keepalive, ==, 30);
  g_assert_cmpstr(cfg->mqtt.topic_prefix, ==, "inspectd");
  g_assert_cmpint(cfg->mqtt.masks, ==, INSP_CONFIG_MASKS_FAIL);
  g_assert_cmpint(cfg->mqtt.commands, ==, INSP_CONFIG_COMMANDS_TRIGGER);
  g_assert_false(cfg->mqtt.insecure_commands);
  g_assert_cmpstr(cfg->mqtt.reply_prefix, ==, "");
  g_assert_false(cfg->mqtt.homeassistant);
  g_assert_cmpstr(cfg->mqtt.homeassistant_prefix, ==, "homeassistant");
  g_assert_cmpfloat(cfg->inspection.threshold_min, ==, 0.25);
  g_assert_cmpfloat(cfg->inspection.threshold_max, ==, 1.0);
  g_assert_cmpfloat(cfg->inspection.pixel_threshold_min, ==, 0.25);
  g_assert_cmpfloat(cfg->inspection.pixel_threshold_max, ==, 1.0);
  g_assert_cmpstr(cfg->spool.dir, ==, "/var/lib/inspectd/spool");
  g_assert_cmpint(cfg->spool.max_mb, ==, 256);
  g_assert_cmpint(cfg->log.level, ==, INSP_CONFIG_LOG_LEVEL_INFO);
  g_assert_nonnull(cfg->files);
  g_assert_cmpstr(cfg->files[0], ==, cfg->path);
  g_assert_null(cfg->files[1]);
}

static void
test_schema(void)
{
  gsize hot = 0;

  g_assert_cmpuint(insp_config_schema_n_keys(), >=, 37);
  for (gsize i = 0; i < insp_config_schema_n_keys(); i++) {
    const InspConfigKeyInfo *k = insp_config_schema_key(i);

    g_assert_true(insp_config_schema_lookup(k->section, k->key) == k);
    g_assert_cmpuint(strlen(k->doc), >, 0);
    g_assert_true(k->change != 0);
    g_assert_true(!!k->hot == !!(k->change & INSP_CONFIG_CHANGE_HOT));
    if (k->hot) {
      hot++;
      g_assert_true(strcmp(k->section, "inspection") == 0 || strcmp(k->key, "masks") == 0 ||
                    strcmp(k->key, "level") == 0);
    }
  }
  g_assert_cmpuint(hot, ==, 10); /* 8 in [inspection], masks, level */
  g_assert_null(insp_config_schema_lookup("inspection", "treshold"));
  g_assert_true(insp_config_schema_lookup("model", "path")->change == INSP_CONFIG_CHANGE_MODEL);
}

static void
test_values(void)
{
  g_autoptr(InspConfig) cfg = load_ok("[station]\nid = line-3.a_b\n"
                                      "[camera]\nsource = V4L2\nloop = yes\nfps = 12.5\n"
                                      "controls = exposure_time_absolute=300, Gain=-2 ,x=0\n"
                                      "width = 640\nheight = 480\n"
                                      "[model]\npath = @FILE@\nworkers = 3\n"
                                      "[inspection]\nthreshold = 1.25\nroi = 10, 20,300,200\n"
                                      "[mqtt]\nhost =\nqos = 0\nmasks = all\ncommands = off\n"
                                      "topic_prefix = plant/hall-2\n"
                                      "[log]\nlevel = debug\n");

  g_assert_cmpstr(cfg->station.id, ==, "line-3.a_b");
  g_assert_cmpstr(cfg->mqtt.client_id, ==, "inspectd-line-3.a_b");
  g_assert_cmpint(cfg->camera.source, ==, INSP_CONFIG_CAMERA_SOURCE_V4L2);
  g_assert_cmpint(cfg->camera.drop, ==, INSP_CONFIG_DROP_OLDEST); /* auto, live source */
  g_assert_true(cfg->camera.loop);
  g_assert_cmpfloat(cfg->camera.fps, ==, 12.5);
  g_assert_cmpuint(cfg->camera.n_controls, ==, 3);
  g_assert_cmpstr(cfg->camera.controls[0].name, ==, "exposure_time_absolute");
  g_assert_cmpint(cfg->camera.controls[0].value, ==, 300);
  g_assert_cmpstr(cfg->camera.controls[1].name, ==, "gain");
  g_assert_cmpint(cfg->camera.controls[1].value, ==, -2);
  g_assert_cmpint(cfg->camera.width, ==, 640);
  g_assert_cmpint(cfg->model.workers, ==, 3);
  g_assert_cmpfloat(cfg->inspection.threshold, ==, 1.25);
  g_assert_cmpint(cfg->inspection.roi.x, ==, 10);
  g_assert_cmpint(cfg->inspection.roi.y, ==, 20);
  g_assert_cmpint(cfg->inspection.roi.w, ==, 300);
  g_assert_cmpint(cfg->inspection.roi.h, ==, 200);
  g_assert_cmpstr(cfg->mqtt.host, ==, "");
  g_assert_cmpint(cfg->mqtt.qos, ==, 0);
  g_assert_cmpint(cfg->mqtt.masks, ==, INSP_CONFIG_MASKS_ALL);
  g_assert_cmpint(cfg->mqtt.commands, ==, INSP_CONFIG_COMMANDS_NONE); /* old boolean spelling */
  g_assert_cmpstr(cfg->mqtt.topic_prefix, ==, "plant/hall-2");
  g_assert_cmpint(cfg->log.level, ==, INSP_CONFIG_LOG_LEVEL_DEBUG);
}

static void
test_relative_paths(void)
{
  g_autofree char *dir = make_tmpdir();
  g_autofree char *model = write_file(dir, "models/part.safetensors", "x");
  g_autofree char *main = write_file(dir, "inspectd.conf",
                                     "[camera]\nsource = files\nlocation = img/*.png\n"
                                     "[model]\npath = models/part.safetensors\n");
  g_autoptr(GError) error = NULL;
  g_autoptr(InspConfig) cfg = insp_config_load(main, NULL, &error);
  g_autofree char *glob = g_build_filename(dir, "img/*.png", NULL);

  g_assert_no_error(error);
  g_assert_cmpstr(cfg->model.path, ==, model);
  g_assert_cmpstr(cfg->camera.location, ==, glob);
  g_assert_cmpint(cfg->camera.drop, ==, INSP_CONFIG_DROP_NEVER);
  rm_rf(dir);
}

/* ---- every class of problem ------------------------------------------------ */

static void
test_unknown_section(void)
{
  g_autoptr(GPtrArray) problems = load_bad("[mqt]\nhost = a\nport = 1\n[frobnicate]\nx = 1\n");
  const InspConfigProblem *p;

  p = find_problem(problems, "test.conf", "mqt", NULL, "unknown section, did you mean [mqtt]?");
  g_assert_cmpint(p->line, ==, 1);
  g_assert_cmpstr(p->text, ==, "test.conf: [mqt]: unknown section, did you mean [mqtt]?");
  p = find_problem(problems, "test.conf", "frobnicate", NULL, "unknown section (known:");
  g_assert_cmpint(p->line, ==, 4);
  g_assert_cmpuint(problems->len, ==, 2); /* the keys of an unknown section are not repeated */
}

static void
test_unknown_key(void)
{
  g_autoptr(GPtrArray) problems =
      load_bad("[inspection]\ntreshold = 0.4\n[camera]\nthreshold = 1\nzzzz = 2\nFPS = 3\n");
  const InspConfigProblem *p;

  p = find_problem(problems, "test.conf", "inspection", "treshold",
                   "unknown key, did you mean 'threshold'?");
  g_assert_cmpint(p->line, ==, 2);
  g_assert_cmpstr(p->text, ==,
                  "test.conf: [inspection] treshold: unknown key, did you mean 'threshold'?");
  find_problem(problems, "test.conf", "camera", "threshold", "belongs in [inspection]");
  find_problem(problems, "test.conf", "camera", "zzzz", "unknown key");
  find_problem(problems, "test.conf", "camera", "FPS", "did you mean 'fps'?");
  g_assert_cmpuint(problems->len, ==, 4);
}

static void
test_wrong_type(void)
{
  g_autoptr(GPtrArray) problems =
      load_bad("[inspection]\nthreshold = abc\nmin_region_area = 1.5\nroi = 1,2,3\n"
               "[camera]\nloop = maybe\ncontrols = gain=10,exposure=1.5\nfps = nan\n"
               "[mqtt]\nport = 18 83\n");

  find_problem(problems, "test.conf", "inspection", "threshold", "expected a number, got 'abc'");
  find_problem(problems, "test.conf", "inspection", "min_region_area",
               "expected an integer, got '1.5'");
  find_problem(problems, "test.conf", "inspection", "roi", "expected x,y,w,h");
  find_problem(problems, "test.conf", "camera", "loop", "expected true or false, got 'maybe'");
  find_problem(problems, "test.conf", "camera", "controls", "item 2 'exposure=1.5'");
  find_problem(problems, "test.conf", "camera", "fps", "expected a number, got 'nan'");
  find_problem(problems, "test.conf", "mqtt", "port", "expected an integer, got '18 83'");
  g_assert_cmpuint(problems->len, ==, 7);
}

static void
test_out_of_range(void)
{
  g_autoptr(GPtrArray) problems =
      load_bad("[mqtt]\nport = 0\nqos = 3\nkeepalive = 4\n[inspection]\nthreshold = 100.5\n"
               "pixel_threshold = -0.1\n[model]\nworkers = 65\n[spool]\nmax_mb = 0\n"
               "[inspection]\nroi = 0,0,0,10\n");

  find_problem(problems, "test.conf", "mqtt", "port",
               "out of range, expected 1 <= x <= 65535, got 0");
  find_problem(problems, "test.conf", "mqtt", "qos", "expected 0 <= x <= 2, got 3");
  find_problem(problems, "test.conf", "mqtt", "keepalive", "expected 5 <= x <= 3600, got 4");
  find_problem(problems, "test.conf", "inspection", "threshold",
               "expected 0 <= x <= 100, got 100.5");
  find_problem(problems, "test.conf", "inspection", "pixel_threshold", "got -0.1");
  find_problem(problems, "test.conf", "model", "workers", "0 <= x <= 64, got 65");
  find_problem(problems, "test.conf", "spool", "max_mb", "1 <= x <= 1000000, got 0");
  find_problem(problems, "test.conf", "inspection", "roi", "w and h > 0");
  g_assert_cmpuint(problems->len, ==, 8);
}

static void
test_not_allowed(void)
{
  g_autoptr(GPtrArray) problems = load_bad(
      "[camera]\nsource = v4l3\ndrop = newest\n[mqtt]\nmasks = some\n[log]\nlevel = loud\n");

  find_problem(problems, "test.conf", "camera", "source",
               "'v4l3' is not one of the allowed values: v4l2, aravis, rtsp, files, test, "
               "pipeline (did you mean 'v4l2'?)");
  find_problem(problems, "test.conf", "camera", "drop", "never, oldest, auto");
  find_problem(problems, "test.conf", "mqtt", "masks", "fail, all, none");
  find_problem(problems, "test.conf", "log", "level", "error, warning, notice, info, debug");
  g_assert_cmpuint(problems->len, ==, 4);
}

static void
test_strings(void)
{
  assert_one_problem("[mqtt]\ntopic_prefix = a/#\n", "mqtt", "topic_prefix", "wildcard");
  assert_one_problem("[mqtt]\ntopic_prefix = a/+/b\n", "mqtt", "topic_prefix", "wildcard");
  assert_one_problem("[mqtt]\ntopic_prefix = /a\n", "mqtt", "topic_prefix", "empty topic level");
  assert_one_problem("[mqtt]\ntopic_prefix = a/\n", "mqtt", "topic_prefix", "empty topic level");
  assert_one_problem("[mqtt]\ntopic_prefix = a//b\n", "mqtt", "topic_prefix", "empty topic level");
  assert_one_problem("[mqtt]\ntopic_prefix = $SYS/x\n", "mqtt", "topic_prefix", "starts with '$'");
  assert_one_problem("[mqtt]\ntopic_prefix = $share/g/x\n", "mqtt", "topic_prefix",
                     "starts with '$'");
  assert_one_problem("[station]\nid = line/3\n", "station", "id", "has the character '/'");
  assert_one_problem("[station]\nid = a+b\n", "station", "id", "has the character '+'");
  assert_one_problem("[mqtt]\nhost = my broker\n", "mqtt", "host", "white space");
  assert_one_problem("[camera]\nsource = rtsp\nuri = http://cam/x\n[model]\npath = @FILE@\n",
                     "camera", "uri", "not an rtsp:// URI");
  assert_one_problem("[camera]\ncontrols = gain=1,gain=2\n", "camera", "controls",
                     "'gain' is set twice");
  assert_one_problem("[camera]\ncontrols = gain\n", "camera", "controls", "not name=value");
  assert_one_problem("[camera]\ncontrols = =3\n", "camera", "controls", "not name=value");
  assert_one_problem("[camera]\ncontrols = ga-in=3\n", "camera", "controls", "not name=value");
}

static void
test_limits(void)
{
  g_autoptr(GString) text = g_string_new("[camera]\ncontrols = ");

  for (int i = 0; i < INSP_CONFIG_MAX_CONTROLS + 1; i++)
    g_string_append_printf(text, "%sc%d=%d", i ? "," : "", i, i);
  g_string_append_c(text, '\n');
  assert_one_problem(text->str, "camera", "controls", "more than 64 controls");

  {
    g_autoptr(GPtrArray) problems = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(InspConfig) cfg =
        insp_config_load_from_data("[log]\nlevel=info\n\0junk", 22, "nul.conf", &problems, &error);

    g_assert_null(cfg);
    find_problem(problems, "nul.conf", NULL, NULL, "NUL byte");
  }
}

static void
test_files(void)
{
  g_autofree char *dir = make_tmpdir();
  g_autofree char *missing = g_build_filename(dir, "nope.safetensors", NULL);
  g_autofree char *text =
      g_strdup_printf("[camera]\nsource = v4l2\n[model]\npath = %s\n[mqtt]\npassword_file = %s\n"
                      "tls_ca = %s/ca.pem\n",
                      missing, dir, dir);
  g_autoptr(GPtrArray) problems = load_bad(text);
  g_autofree char *want_missing =
      g_strdup_printf("cannot read '%s': No such file or directory", missing);
  g_autofree char *want_dir = g_strdup_printf("'%s' is not a regular file", dir);

  find_problem(problems, "test.conf", "model", "path", want_missing);
  find_problem(problems, "test.conf", "mqtt", "password_file", want_dir);
  find_problem(problems, "test.conf", "mqtt", "tls_ca", "No such file or directory");
  g_assert_cmpuint(problems->len, ==, 3);

  if (geteuid() != 0) {
    g_autofree char *secret = write_file(dir, "secret", "pw\n");
    g_autofree char *t2 = g_strdup_printf("[mqtt]\npassword_file = %s\n", secret);

    g_assert_cmpint(g_chmod(secret, 0), ==, 0);
    assert_one_problem(t2, "mqtt", "password_file", "Permission denied");
  }
  rm_rf(dir);
}

static void
test_cross_key(void)
{
  assert_one_problem("[mqtt]\ntls_cert = @FILE@\n", "mqtt", "tls_key",
                     "required when [mqtt] tls_cert is set");
  assert_one_problem("[mqtt]\ntls_key = @FILE@\n", "mqtt", "tls_cert",
                     "required when [mqtt] tls_key is set");
  assert_one_problem("[camera]\nsource = files\n[model]\npath = @FILE@\n", "camera", "location",
                     "required when [camera] source = files");
  assert_one_problem("[camera]\nsource = pipeline\n[model]\npath = @FILE@\n", "camera", "pipeline",
                     "required when [camera] source = pipeline");
  assert_one_problem("[camera]\nsource = rtsp\n[model]\npath = @FILE@\n", "camera", "uri",
                     "required when [camera] source = rtsp");
  assert_one_problem("[camera]\nsource = aravis\n", "model", "path",
                     "required when [camera] source = aravis");
  assert_one_problem("[camera]\nwidth = 640\n", "camera", "height",
                     "required when [camera] width is set");
  assert_one_problem("[trigger]\nmode = mqtt\n[mqtt]\nhost =\n", "trigger", "mode",
                     "needs MQTT enabled");
  assert_one_problem("[trigger]\nmode = mqtt\n[mqtt]\ncommands = false\n", "trigger", "mode",
                     "commands = trigger or all");
  g_autoptr(InspConfig) ok =
      load_ok("[trigger]\nmode = mqtt\n[camera]\nsource = pipeline\npipeline = videotestsrc\n"
              "[model]\npath = @FILE@\n[mqtt]\ntls_cert = @FILE@\ntls_key = @FILE@\n");
  g_assert_cmpstr(ok->camera.pipeline, ==, "videotestsrc");
}

static void
test_syntax(void)
{
  g_autoptr(GPtrArray) problems =
      load_bad("threshold = 0.7\n[inspection]\nthreshold = 0.2\nthis is not a key\n"
               "[camera\nfps = x\n[mqtt]\nport = 1\nport = 2\n");
  const InspConfigProblem *p;

  p = find_problem(problems, "test.conf", NULL, NULL, "comes before any [section] line");
  g_assert_cmpint(p->line, ==, 1);
  g_assert_nonnull(strstr(p->reason, "belongs in [inspection]"));
  g_assert_true(g_str_has_prefix(p->text, "test.conf:1: key 'threshold'"));
  p = find_problem(problems, "test.conf", NULL, NULL, "this is not a key");
  g_assert_cmpint(p->line, ==, 4);
  g_assert_true(g_str_has_prefix(p->text, "test.conf:4: syntax error: "));
  p = find_problem(problems, "test.conf", NULL, NULL, "syntax error");
  g_assert_cmpint(p->line, ==, 4);
  /* the rest of the file is still checked: fps now lies in [inspection] */
  find_problem(problems, "test.conf", "inspection", "fps", "unknown key");
  p = find_problem(problems, "test.conf", "mqtt", "port", "set twice in this file (lines 8 and 9)");
  g_assert_cmpint(p->line, ==, 9);
  g_assert_cmpuint(problems->len, ==, 5);
  for (guint i = 1; i < problems->len; i++) { /* in line order, line-less last */
    int a = ((InspConfigProblem *)problems->pdata[i - 1])->line;
    int b = ((InspConfigProblem *)problems->pdata[i])->line;

    g_assert_true(b == 0 || (a > 0 && a <= b));
  }
}

static void
test_many_problems(void)
{
  g_autoptr(GPtrArray) problems =
      load_bad("[station]\nid = a b\n[camera]\nsource = files\nfps = fast\n"
               "[inspection]\ntreshold = 0.4\n[mqtt]\nport = 70000\ntls_key = @FILE@\n"
               "[spol]\ndir = /x\n");

  find_problem(problems, "test.conf", "station", "id", "'a b' has the character ' '");
  find_problem(problems, "test.conf", "camera", "fps", "expected a number");
  find_problem(problems, "test.conf", "inspection", "treshold", "did you mean 'threshold'");
  find_problem(problems, "test.conf", "mqtt", "port", "out of range");
  find_problem(problems, "test.conf", "spol", NULL, "did you mean [spool]?");
  find_problem(problems, "test.conf", "camera", "location",
               "required when [camera] source = files");
  find_problem(problems, "test.conf", "model", "path", "required when [camera] source = files");
  find_problem(problems, "test.conf", "mqtt", "tls_cert", "required when [mqtt] tls_key is set");
  g_assert_cmpuint(problems->len, ==, 8);
  for (guint i = 0; i < problems->len; i++) {
    const InspConfigProblem *p = problems->pdata[i];

    g_assert_cmpstr(p->file, ==, "test.conf");
    g_assert_nonnull(p->section);
  }
}

/* ---- files and drop-ins ---------------------------------------------------- */

static void
test_missing_main(void)
{
  g_autofree char *dir = make_tmpdir();
  g_autofree char *path = g_build_filename(dir, "none.conf", NULL);
  g_autoptr(GPtrArray) problems = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(InspConfig) cfg = insp_config_load(path, &problems, &error);
  g_autofree char *want = g_strdup_printf("%s: cannot read: No such file or directory", path);

  g_assert_null(cfg);
  g_assert_error(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_INVALID);
  g_assert_cmpuint(problems->len, ==, 1);
  g_assert_cmpstr(((InspConfigProblem *)problems->pdata[0])->text, ==, want);
  g_clear_pointer(&problems, g_ptr_array_unref);
  g_clear_error(&error);
  g_assert_null(insp_config_load(dir, &problems, &error));
  find_problem(problems, dir, NULL, NULL, "not a regular file");
  rm_rf(dir);
}

static void
test_dropins(void)
{
  g_autofree char *dir = make_tmpdir();
  g_autofree char *main = write_file(dir, "inspectd.conf",
                                     "[inspection]\nthreshold = 0.3\npixel_threshold = 0.4\n"
                                     "[camera]\nfps = 5\n");
  g_autofree char *d10 = write_file(dir, "inspectd.conf.d/10-line.conf",
                                    "[inspection]\nthreshold = 0.6\n[camera]\nfps = 7\n");
  g_autofree char *d20 =
      write_file(dir, "inspectd.conf.d/20-override.conf", "[inspection]\nthreshold = 0.8\n");
  g_autofree char *d9 = write_file(dir, "inspectd.conf.d/09-first.conf", "[camera]\nfps = 1\n");
  g_autofree char *ignored =
      write_file(dir, "inspectd.conf.d/99-last.conf.disabled", "[camera]\nfps = 99\n");
  g_autofree char *hidden = write_file(dir, "inspectd.conf.d/.hidden.conf", "[camera]\nfps = 98\n");
  g_autoptr(GError) error = NULL;
  g_autoptr(InspConfig) cfg = insp_config_load(main, NULL, &error);

  g_assert_no_error(error);
  g_assert_cmpfloat(cfg->inspection.threshold, ==, 0.8);       /* 20- beats 10- beats main */
  g_assert_cmpfloat(cfg->inspection.pixel_threshold, ==, 0.4); /* only main sets it */
  g_assert_cmpfloat(cfg->camera.fps, ==, 7);                   /* 10- beats 09- and main */
  g_assert_cmpuint(g_strv_length(cfg->files), ==, 4);
  g_assert_false(g_strv_contains((const char *const *)cfg->files, ignored));
  g_assert_false(g_strv_contains((const char *const *)cfg->files, hidden));
  g_assert_cmpstr(cfg->files[0], ==, main);
  g_assert_cmpstr(cfg->files[1], ==, d9);
  g_assert_cmpstr(cfg->files[2], ==, d10);
  g_assert_cmpstr(cfg->files[3], ==, d20);

  /* A problem names the drop-in that holds it, also for rules on the merge. */
  {
    g_autofree char *bad = write_file(dir, "inspectd.conf.d/30-typo.conf",
                                      "[inspection]\ntreshold = 0.4\n[mqtt]\ntls_cert = @FILE@\n");
    g_autofree char *bad2 =
        write_file(dir, "inspectd.conf.d/15-bad.conf", "[camera]\nfps = quick\n[mqt]\nx = 1\n");
    g_autoptr(GPtrArray) problems = NULL;
    g_autoptr(GError) error2 = NULL;
    g_autoptr(InspConfig) cfg2 = insp_config_load(main, &problems, &error2);
    const InspConfigProblem *p;
    g_autofree char *want = NULL;

    g_assert_null(cfg2);
    p = find_problem(problems, bad, "inspection", "treshold", "did you mean 'threshold'?");
    want =
        g_strdup_printf("%s: [inspection] treshold: unknown key, did you mean 'threshold'?", bad);
    g_assert_cmpstr(p->text, ==, want);
    find_problem(problems, bad, "mqtt", "tls_key", "required when [mqtt] tls_cert is set");
    /* reported although 10- and 20- files' fps would win anyway */
    find_problem(problems, bad2, "camera", "fps", "expected a number, got 'quick'");
    find_problem(problems, bad2, "mqt", NULL, "did you mean [mqtt]?");
    g_assert_cmpuint(problems->len, ==, 4);
    /* problems come in file order: 15- before 30- */
    g_assert_cmpstr(((InspConfigProblem *)problems->pdata[0])->file, ==, bad2);
  }
  rm_rf(dir);
}

/* [mqtt] commands: three levels, the old boolean spellings, and the rules on
 * bounds and reply topics. */
static void
test_commands(void)
{
  static const struct {
    const char *value;
    InspConfigCommands want;
  } cases[] = {
      {"none", INSP_CONFIG_COMMANDS_NONE}, {"trigger", INSP_CONFIG_COMMANDS_TRIGGER},
      {"all", INSP_CONFIG_COMMANDS_ALL},   {"true", INSP_CONFIG_COMMANDS_ALL},
      {"yes", INSP_CONFIG_COMMANDS_ALL},   {"false", INSP_CONFIG_COMMANDS_NONE},
      {"off", INSP_CONFIG_COMMANDS_NONE},
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *text =
        g_strdup_printf("[mqtt]\ncommands = %s\ninsecure_commands = true\n", cases[i].value);
    g_autoptr(InspConfig) cfg = load_ok(text);

    g_assert_cmpint(cfg->mqtt.commands, ==, cases[i].want);
  }
  assert_one_problem("[mqtt]\ncommands = all\n", "mqtt", "commands",
                     "needs an authenticated connection");
  assert_one_problem("[mqtt]\ncommands = true\nusername = line\n", "mqtt", "commands",
                     "set [mqtt] insecure_commands = true");
  {
    g_autoptr(InspConfig) off = load_ok("[mqtt]\nhost =\ncommands = all\n");

    g_assert_cmpint(off->mqtt.commands, ==, INSP_CONFIG_COMMANDS_ALL); /* MQTT off: no risk */
  }
  {
    g_autoptr(InspConfig) user =
        load_ok("[mqtt]\ncommands = all\nusername = line\npassword_file = @FILE@\n");
    g_autoptr(InspConfig) cert =
        load_ok("[mqtt]\ncommands = all\ntls_ca = @FILE@\ntls_cert = @FILE@\ntls_key = @FILE@\n");

    g_assert_cmpint(user->mqtt.commands, ==, INSP_CONFIG_COMMANDS_ALL);
    g_assert_cmpint(cert->mqtt.commands, ==, INSP_CONFIG_COMMANDS_ALL);
  }
  assert_one_problem("[mqtt]\ncommands = some\n", "mqtt", "commands",
                     "not one of the allowed values");
  assert_one_problem("[trigger]\nmode = mqtt\n[mqtt]\ncommands = none\n", "trigger", "mode",
                     "commands = trigger or all");
  assert_one_problem("[camera]\nwidth = 4000\nheight = 3000\nmax_pixels = 1000000\n", "camera",
                     "width", "4000x3000 is over [camera] max_pixels = 1000000");
  assert_one_problem("[inspection]\nthreshold_min = 0.6\nthreshold_max = 0.5\n", "inspection",
                     "threshold_min", "above [inspection] threshold_max");
  assert_one_problem("[inspection]\npixel_threshold_max = 0.1\n", "inspection",
                     "pixel_threshold_min", "above [inspection] pixel_threshold_max");
  assert_one_problem("[mqtt]\nreply_prefix = inspectd/plc\n", "mqtt", "reply_prefix",
                     "lies under [mqtt] topic_prefix");
  assert_one_problem("[mqtt]\nreply_prefix = inspectd\n", "mqtt", "reply_prefix",
                     "lies under [mqtt] topic_prefix");
  assert_one_problem("[mqtt]\nreply_prefix = plc/#\n", "mqtt", "reply_prefix", "wildcard");
  {
    g_autoptr(InspConfig) cfg = load_ok("[mqtt]\nreply_prefix = inspectd-replies/plc1\n");

    g_assert_cmpstr(cfg->mqtt.reply_prefix, ==, "inspectd-replies/plc1");
  }
  assert_one_problem("[mqtt]\nhomeassistant = true\nhomeassistant_prefix =\n", "mqtt",
                     "homeassistant_prefix", "required when [mqtt] homeassistant = true");
  assert_one_problem("[mqtt]\nhomeassistant_prefix = ha/#\n", "mqtt", "homeassistant_prefix",
                     "wildcard");
  {
    g_autoptr(InspConfig) cfg =
        load_ok("[mqtt]\nhomeassistant = true\nhomeassistant_prefix = ha/discovery\n");

    g_assert_true(cfg->mqtt.homeassistant);
    g_assert_cmpstr(cfg->mqtt.homeassistant_prefix, ==, "ha/discovery");
  }
}

/* A drop-in name that is not a regular file is reported, not skipped; only a
 * link to /dev/null masks it. */
static void
test_dropin_not_regular(void)
{
  g_autofree char *dir = make_tmpdir();
  g_autofree char *main = write_file(dir, "inspectd.conf", "[camera]\nfps = 5\n");
  g_autofree char *d10 = write_file(dir, "inspectd.conf.d/10-line.conf", "[camera]\nfps = 7\n");
  g_autofree char *masked = g_build_filename(dir, "inspectd.conf.d/20-masked.conf", NULL);
  g_autofree char *dangling = g_build_filename(dir, "inspectd.conf.d/30-dangling.conf", NULL);
  g_autofree char *folder = g_build_filename(dir, "inspectd.conf.d/40-folder.conf", NULL);
  g_autofree char *fifo = g_build_filename(dir, "inspectd.conf.d/50-fifo.conf", NULL);

  g_assert_cmpint(symlink("/dev/null", masked), ==, 0);
  {
    g_autoptr(GError) error = NULL;
    g_autoptr(InspConfig) cfg = insp_config_load(main, NULL, &error);

    g_assert_no_error(error);
    g_assert_cmpfloat(cfg->camera.fps, ==, 7);
    g_assert_cmpuint(g_strv_length(cfg->files), ==, 2);
    g_assert_cmpstr(cfg->files[1], ==, d10); /* the masked name is not read */
  }
  g_assert_cmpint(symlink("/nonexistent/80-line.conf", dangling), ==, 0);
  g_assert_cmpint(g_mkdir(folder, 0755), ==, 0);
  g_assert_cmpint(mkfifo(fifo, 0644), ==, 0);
  {
    g_autoptr(GPtrArray) problems = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(InspConfig) cfg = insp_config_load(main, &problems, &error);

    g_assert_null(cfg);
    g_assert_error(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_INVALID);
    find_problem(problems, dangling, NULL, NULL, "a symbolic link to nothing");
    find_problem(problems, folder, NULL, NULL, "a folder, not a file");
    find_problem(problems, fifo, NULL, NULL, "not a regular file");
    g_assert_cmpuint(problems->len, ==, 3);
  }
  g_unlink(dangling);
  g_unlink(fifo);
  g_rmdir(folder);
  g_unlink(masked);
  rm_rf(dir);
}

static void
test_dropin_origin_of_file_check(void)
{
  g_autofree char *dir = make_tmpdir();
  g_autofree char *main = write_file(dir, "inspectd.conf", "[model]\npath = @FILE@\n");
  g_autofree char *drop =
      write_file(dir, "inspectd.conf.d/50-model.conf", "[model]\npath = missing.safetensors\n");
  g_autoptr(GPtrArray) problems = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(InspConfig) cfg = insp_config_load(main, &problems, &error);
  g_autofree char *missing = g_build_filename(dir, "inspectd.conf.d/missing.safetensors", NULL);
  g_autofree char *want = g_strdup_printf("cannot read '%s'", missing);

  g_assert_null(cfg);
  find_problem(problems, drop, "model", "path", want);
  g_assert_cmpuint(problems->len, ==, 1);
  rm_rf(dir);
}

/* ---- diff ------------------------------------------------------------------ */

static InspConfigChange
diff_text(const char *a, const char *b)
{
  g_autoptr(InspConfig) ca = load_ok(a);
  g_autoptr(InspConfig) cb = load_ok(b);

  return insp_config_diff(ca, cb);
}

static void
test_diff(void)
{
  const char *base = "[station]\nid = s1\n";
  g_autofree char *s = NULL;
  struct {
    const char *text;
    InspConfigChange want;
  } cases[] = {
      {"[station]\nid = s1\n", INSP_CONFIG_CHANGE_NONE},
      {"[station]\nid = s1\n[inspection]\nthreshold = 0.7\n", INSP_CONFIG_CHANGE_INSPECTION},
      {"[station]\nid = s1\n[inspection]\nroi = 1,2,3,4\npixel_threshold = 0.9\n"
       "min_region_area = 3\n",
       INSP_CONFIG_CHANGE_INSPECTION},
      {"[station]\nid = s1\n[mqtt]\nmasks = all\n", INSP_CONFIG_CHANGE_MASKS},
      {"[station]\nid = s1\n[log]\nlevel = debug\n", INSP_CONFIG_CHANGE_LOG},
      {"[station]\nid = s1\n[model]\npath = @FILE@\n", INSP_CONFIG_CHANGE_MODEL},
      {"[station]\nid = s1\n[model]\nworkers = 7\nblas_threads = 2\n", INSP_CONFIG_CHANGE_WORKERS},
      {"[station]\nid = s1\n[camera]\nfps = 3\n", INSP_CONFIG_CHANGE_CAMERA},
      {"[station]\nid = s1\n[camera]\ncontrols = gain=1\n", INSP_CONFIG_CHANGE_CAMERA},
      {"[station]\nid = s1\n[trigger]\ntimeout_ms = 5\n", INSP_CONFIG_CHANGE_TRIGGER},
      {"[station]\nid = s1\n[mqtt]\nport = 1884\n", INSP_CONFIG_CHANGE_MQTT},
      {"[station]\nid = s1\n[mqtt]\ncommands = false\n", INSP_CONFIG_CHANGE_MQTT},
      {"[station]\nid = s1\n[spool]\nmax_mb = 9\n", INSP_CONFIG_CHANGE_SPOOL},
      {"[station]\nid = s1\nstate_dir = /tmp/x\n", INSP_CONFIG_CHANGE_STATION},
      {"[station]\nid = s2\n", INSP_CONFIG_CHANGE_STATION | INSP_CONFIG_CHANGE_MQTT},
      {"[station]\nid = s1\n[inspection]\nthreshold = 0.1\n[camera]\nloop = true\n[log]\n"
       "level = error\n",
       INSP_CONFIG_CHANGE_INSPECTION | INSP_CONFIG_CHANGE_CAMERA | INSP_CONFIG_CHANGE_LOG},
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    InspConfigChange got = diff_text(base, cases[i].text);

    g_test_message("case %" G_GSIZE_FORMAT ": %s", i, cases[i].text);
    g_assert_cmphex(got, ==, cases[i].want);
    g_assert_cmphex(diff_text(cases[i].text, base), ==, cases[i].want); /* symmetric */
    if (got) {
      g_assert_true((got & INSP_CONFIG_CHANGE_HOT) == (cases[i].want & INSP_CONFIG_CHANGE_HOT));
      g_assert_true((got & INSP_CONFIG_CHANGE_COLD) == (cases[i].want & INSP_CONFIG_CHANGE_COLD));
    }
  }
  g_assert_cmphex(INSP_CONFIG_CHANGE_HOT & INSP_CONFIG_CHANGE_COLD, ==, 0);

  {
    g_autoptr(InspConfig) a = load_ok(base);
    g_autoptr(InspConfig) b =
        load_ok("[station]\nid = s1\n[inspection]\nthreshold = 0.1\n[camera]\nfps = 2\n");
    g_auto(GStrv) keys = insp_config_diff_keys(a, b);

    g_assert_cmpuint(g_strv_length(keys), ==, 2);
    g_assert_cmpstr(keys[0], ==, "[camera] fps");
    g_assert_cmpstr(keys[1], ==, "[inspection] threshold");
  }
  s = insp_config_change_to_string(INSP_CONFIG_CHANGE_INSPECTION | INSP_CONFIG_CHANGE_CAMERA);
  g_assert_cmpstr(s, ==, "inspection, camera");
  g_free(g_steal_pointer(&s));
  s = insp_config_change_to_string(INSP_CONFIG_CHANGE_NONE);
  g_assert_cmpstr(s, ==, "none");
}

static void
test_copy(void)
{
  g_autoptr(InspConfig) a =
      load_ok("[camera]\ncontrols = gain=3,brightness=4\n[mqtt]\nusername = u\n");
  g_autoptr(InspConfig) b = insp_config_copy(a);

  g_assert_cmphex(insp_config_diff(a, b), ==, 0);
  g_assert_true(b->camera.controls != a->camera.controls);
  g_assert_true(b->mqtt.username != a->mqtt.username);
  b->inspection.threshold = 0.9;
  g_assert_cmphex(insp_config_diff(a, b), ==, INSP_CONFIG_CHANGE_INSPECTION);
  g_clear_pointer(&a, insp_config_free);
  g_assert_cmpstr(b->camera.controls[1].name, ==, "brightness");
  g_assert_cmpstr(b->files[0], ==, "test.conf");
  insp_config_free(NULL);
  insp_config_problem_free(NULL);
}

/* ---- threshold override ---------------------------------------------------- */

static InspConfig *
load_state(const char *state_dir, double threshold)
{
  g_autofree char *text = g_strdup_printf(
      "[station]\nstate_dir = %s\n[inspection]\nthreshold = %g\n", state_dir, threshold);

  return load_ok(text);
}

static void
test_override(void)
{
  g_autofree char *dir = make_tmpdir();
  g_autofree char *state = g_build_filename(dir, "state", NULL);
  g_autoptr(GError) error = NULL;
  InspConfigChange applied = 1234;

  {
    g_autoptr(InspConfig) cfg = load_state(state, 0.5);
    g_autofree char *path = insp_config_override_path(cfg);
    g_autofree char *want = g_build_filename(state, "threshold-override.conf", NULL);

    g_assert_cmpstr(path, ==, want);
    /* nothing to apply yet: not an error */
    g_assert_true(insp_config_override_apply(cfg, &applied, &error));
    g_assert_no_error(error);
    g_assert_cmphex(applied, ==, 0);
    /* the command sets the threshold: the folder is created */
    g_assert_true(insp_config_override_save(cfg, 0.62, NAN, &error));
    g_assert_no_error(error);
    g_assert_true(g_file_test(path, G_FILE_TEST_IS_REGULAR));
    g_assert_cmpfloat(cfg->inspection.threshold, ==, 0.5); /* caller swaps a copy */
    g_assert_false(insp_config_override_save(cfg, 101, NAN, &error));
    g_assert_error(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_INVALID);
    g_clear_error(&error);
  }
  {
    /* restart, same config file: the override wins */
    g_autoptr(InspConfig) cfg = load_state(state, 0.5);

    g_assert_true(insp_config_override_apply(cfg, &applied, &error));
    g_assert_cmphex(applied, ==, INSP_CONFIG_CHANGE_INSPECTION);
    g_assert_cmpfloat(cfg->inspection.threshold, ==, 0.62);
    g_assert_cmpfloat(cfg->inspection.configured_threshold, ==, 0.5);
    g_assert_cmpfloat(cfg->inspection.pixel_threshold, ==, 0.5);
    /* a later command sets the pixel threshold only; the first stays */
    g_assert_true(insp_config_override_save(cfg, NAN, 0.33, &error));
  }
  {
    g_autoptr(InspConfig) cfg = load_state(state, 0.5);

    g_assert_true(insp_config_override_apply(cfg, NULL, &error));
    g_assert_cmpfloat(cfg->inspection.threshold, ==, 0.62);
    g_assert_cmpfloat(cfg->inspection.pixel_threshold, ==, 0.33);
  }
  {
    /* the operator edits the threshold in the config file: the file wins, the
     * stale threshold override is dropped, the pixel one stays */
    g_autoptr(InspConfig) cfg = load_state(state, 0.55);
    g_autoptr(InspConfig) back = NULL;

    g_assert_true(insp_config_override_apply(cfg, &applied, &error));
    g_assert_cmpfloat(cfg->inspection.threshold, ==, 0.55);
    g_assert_cmpfloat(cfg->inspection.pixel_threshold, ==, 0.33);
    g_assert_cmphex(applied, ==, INSP_CONFIG_CHANGE_INSPECTION);
    /* and it does not come back when the file returns to 0.5 */
    back = load_state(state, 0.5);
    g_assert_true(insp_config_override_apply(back, NULL, &error));
    g_assert_cmpfloat(back->inspection.threshold, ==, 0.5);
    g_assert_true(insp_config_override_clear(back, &error));
    g_assert_true(insp_config_override_clear(back, &error)); /* missing: fine */
    g_assert_no_error(error);
  }
  {
    /* a damaged file is an error and leaves the config alone */
    g_autoptr(InspConfig) cfg = load_state(state, 0.5);
    g_autofree char *path = insp_config_override_path(cfg);

    g_assert_true(g_file_set_contents(path,
                                      "[inspection]\nthreshold = lots\n"
                                      "configured_threshold = 0.5\n",
                                      -1, NULL));
    g_assert_false(insp_config_override_apply(cfg, NULL, &error));
    g_assert_error(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_INVALID);
    g_clear_error(&error);
    g_assert_cmpfloat(cfg->inspection.threshold, ==, 0.5);
    g_assert_true(g_file_set_contents(path, "not a key file\n", -1, NULL));
    g_assert_false(insp_config_override_apply(cfg, NULL, &error));
    g_assert_nonnull(strstr(error->message, path));
    g_clear_error(&error);
    /* saving replaces it */
    g_assert_true(insp_config_override_save(cfg, 0.7, NAN, &error));
    g_assert_true(insp_config_override_apply(cfg, NULL, &error));
    g_assert_cmpfloat(cfg->inspection.threshold, ==, 0.7);
  }
  rm_rf(dir);
}

/* ---- the shipped file ------------------------------------------------------ */

static char *
shipped_conf(void)
{
  const char *srcdir = g_getenv("INSP_TEST_SRCDIR");

  if (!srcdir)
    return NULL;
  return g_build_filename(srcdir, "..", "conf", "inspectd.conf", NULL);
}

static void
test_shipped(void)
{
  g_autofree char *path = shipped_conf();
  g_autofree char *text = NULL;
  g_autoptr(GPtrArray) problems = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(InspConfig) cfg = NULL;
  g_autoptr(InspConfig) def = insp_config_new_default();
  g_auto(GStrv) lines = NULL;
  g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  g_autofree char *section = NULL;

  if (!path) {
    g_test_skip("INSP_TEST_SRCDIR is not set");
    return;
  }
  cfg = insp_config_load(path, &problems, &error);
  for (guint i = 0; problems && i < problems->len; i++)
    g_test_message("%s", ((InspConfigProblem *)problems->pdata[i])->text);
  g_assert_no_error(error);
  g_assert_cmphex(insp_config_diff(def, cfg), ==, 0); /* everything commented out */

  /* every key is listed, commented out, with its default, in its section */
  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  lines = g_strsplit(text, "\n", -1);
  for (gsize i = 0; lines[i]; i++) {
    const char *l = lines[i];

    if (l[0] == '[') {
      g_free(section);
      section = g_strndup(l + 1, strcspn(l + 1, "]"));
    } else if (l[0] == '#' && g_ascii_isalpha(l[1]) && strstr(l, " =")) {
      g_autofree char *key = g_strndup(l + 1, strcspn(l + 1, " ="));
      const char *value = strstr(l, " =") + 2;
      const InspConfigKeyInfo *k;

      while (*value == ' ')
        value++;
      g_assert_nonnull(section);
      k = insp_config_schema_lookup(section, key);
      if (!k)
        g_test_message("line %" G_GSIZE_FORMAT ": [%s] %s is not in the schema", i + 1, section,
                       key);
      g_assert_nonnull(k);
      g_assert_cmpstr(value, ==, k->default_value);
      g_assert_true(g_hash_table_add(seen, g_strdup_printf("%s/%s", section, key)));
      g_assert_true(g_str_has_prefix(lines[i - 1], "# ")); /* explanation above */
    }
  }
  for (gsize i = 0; i < insp_config_schema_n_keys(); i++) {
    const InspConfigKeyInfo *k = insp_config_schema_key(i);
    g_autofree char *id = g_strdup_printf("%s/%s", k->section, k->key);

    if (!g_hash_table_contains(seen, id))
      g_test_message("[%s] %s missing from conf/inspectd.conf", k->section, k->key);
    g_assert_true(g_hash_table_contains(seen, id));
  }
}

/* ---- through the binary ---------------------------------------------------- */

static int
run_check_config(const char *arg, char **out, char **err)
{
  const char *exe = g_getenv("INSPECTD");
  const char *argv[] = {exe, "check-config", arg, NULL};
  g_autoptr(GError) error = NULL;
  int status = -1;

  g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, out, err,
                             &status, &error));
  g_assert_no_error(error);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void
test_binary(void)
{
  g_autofree char *dir = NULL;
  g_autofree char *main = NULL, *drop = NULL, *out = NULL, *err = NULL;
  g_autofree char *want_key = NULL, *want_type = NULL, *want_section = NULL;
  g_autofree char *nosection = NULL, *want_nosection = NULL;

  if (!g_getenv("INSPECTD")) {
    g_test_skip("INSPECTD is not set");
    return;
  }
  dir = make_tmpdir();
  main = write_file(dir, "inspectd.conf", "[inspection]\nthreshold = 0.5\n[mqt]\nhost = b\n");
  drop = write_file(dir, "inspectd.conf.d/10-line.conf",
                    "[inspection]\ntreshold = 0.4\n[camera]\nfps = fast\n");

  nosection =
      write_file(dir, "inspectd.conf.d/20-more.conf", "min_region_area = 3\n[log]\nlevel = info\n");
  g_assert_cmpint(run_check_config(main, &out, &err), ==, 1);
  want_key =
      g_strdup_printf("%s: [inspection] treshold: unknown key, did you mean 'threshold'?\n", drop);
  want_type = g_strdup_printf("%s: [camera] fps: expected a number, got 'fast'\n", drop);
  want_section = g_strdup_printf("%s: [mqt]: unknown section, did you mean [mqtt]?\n", main);
  g_test_message("stderr: %s", err);
  g_assert_nonnull(strstr(err, want_key));
  g_assert_nonnull(strstr(err, want_type));
  g_assert_nonnull(strstr(err, want_section));
  want_nosection = g_strdup_printf("%s:1: key 'min_region_area' comes before any [section] line; "
                                   "it belongs in [inspection]\n",
                                   nosection);
  g_assert_nonnull(strstr(err, want_nosection));
  g_assert_nonnull(strstr(err, "4 problems"));
  g_assert_cmpstr(out, ==, "");

  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  g_assert_true(g_file_set_contents(drop, "[inspection]\nthreshold = 0.4\n", -1, NULL));
  g_assert_true(g_file_set_contents(main, "[inspection]\nthreshold = 0.5\n", -1, NULL));
  g_assert_cmpint(g_unlink(nosection), ==, 0);
  g_assert_cmpint(run_check_config(main, &out, &err), ==, 0);
  g_assert_true(g_str_has_prefix(out, main));
  g_assert_nonnull(strstr(out, ": OK\n"));
  g_assert_nonnull(strstr(out, drop));

  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  g_assert_cmpint(run_check_config("--bogus", &out, &err), ==, 2);

  {
    g_autofree char *shipped = shipped_conf();

    if (shipped) {
      g_clear_pointer(&out, g_free);
      g_clear_pointer(&err, g_free);
      g_assert_cmpint(run_check_config(shipped, &out, &err), ==, 0);
    }
  }
  rm_rf(dir);
}

/* The error domain's name is what a GError prints in debug output. */
static void
test_error_quark(void)
{
  g_assert_cmpstr(g_quark_to_string(INSP_CONFIG_ERROR), ==, "insp-config-error-quark");
}

int
main(int argc, char **argv)
{
  g_autofree char *tmp = NULL;
  int status;

  g_test_init(&argc, &argv, NULL);
  tmp = make_tmpdir();
  readable_file = write_file(tmp, "readable.bin", "0123");
  g_test_add_func("/conf/error-quark", test_error_quark);
  g_test_add_func("/conf/defaults", test_defaults);
  g_test_add_func("/conf/schema", test_schema);
  g_test_add_func("/conf/values", test_values);
  g_test_add_func("/conf/relative-paths", test_relative_paths);
  g_test_add_func("/conf/problem/unknown-section", test_unknown_section);
  g_test_add_func("/conf/problem/unknown-key", test_unknown_key);
  g_test_add_func("/conf/problem/wrong-type", test_wrong_type);
  g_test_add_func("/conf/problem/out-of-range", test_out_of_range);
  g_test_add_func("/conf/problem/not-allowed", test_not_allowed);
  g_test_add_func("/conf/problem/strings", test_strings);
  g_test_add_func("/conf/problem/limits", test_limits);
  g_test_add_func("/conf/problem/files", test_files);
  g_test_add_func("/conf/problem/cross-key", test_cross_key);
  g_test_add_func("/conf/problem/syntax", test_syntax);
  g_test_add_func("/conf/problem/many", test_many_problems);
  g_test_add_func("/conf/load/missing-main", test_missing_main);
  g_test_add_func("/conf/load/dropins", test_dropins);
  g_test_add_func("/conf/load/dropin-file-check", test_dropin_origin_of_file_check);
  g_test_add_func("/conf/load/dropin-not-regular", test_dropin_not_regular);
  g_test_add_func("/conf/mqtt-commands", test_commands);
  g_test_add_func("/conf/diff", test_diff);
  g_test_add_func("/conf/copy", test_copy);
  g_test_add_func("/conf/override", test_override);
  g_test_add_func("/conf/shipped", test_shipped);
  g_test_add_func("/conf/check-config", test_binary);
  status = g_test_run();
  rm_rf(tmp);
  g_free(readable_file);
  return status;
}
