/* Tests of the [camera] controls parser (conf/insp-camera-controls.c): typed
 * values, names that keep their case for GenICam, what it refuses (syntax,
 * duplicates, length and count caps), copy and equality; and that every
 * example of pipeline/README.md's "Camera controls" section passes
 * `inspectd check-config`. */
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#include "insp-camera-controls.h"

typedef struct {
  InspCameraControl *c;
  guint n;
} Parsed;

static Parsed
parse_ok(const char *text)
{
  Parsed p = {NULL, 0};
  g_autoptr(GError) err = NULL;
  g_assert_true(insp_camera_controls_parse(text, &p.c, &p.n, &err));
  g_assert_no_error(err);
  return p;
}

static void
parse_bad(const char *text, InspCameraControlsError code, const char *words)
{
  InspCameraControl *c = (InspCameraControl *)(gpointer)0x1;
  guint n = 77;
  g_autoptr(GError) err = NULL;
  g_assert_false(insp_camera_controls_parse(text, &c, &n, &err));
  g_assert_error(err, INSP_CAMERA_CONTROLS_ERROR, (gint)code);
  if (strstr(err->message, words) == NULL)
    g_error("parsing \"%s\": \"%s\" does not say \"%s\"", text, err->message, words);
  /* Out-parameters are written only on success. */
  g_assert_true(c == (InspCameraControl *)(gpointer)0x1);
  g_assert_cmpuint(n, ==, 77);
}

static void
test_typed_values(void)
{
  Parsed p = parse_ok("exposure_time_absolute=200, gain=-3\n  focus_automatic_continuous = 0,"
                      "auto_exposure=manual_mode, exposure_auto=off,TriggerMode=On,Flag=TRUE");
  g_assert_cmpuint(p.n, ==, 7);
  g_assert_cmpstr(p.c[0].name, ==, "exposure_time_absolute");
  g_assert_cmpint(p.c[0].type, ==, INSP_CAMERA_CONTROL_INTEGER);
  g_assert_cmpint(p.c[0].value, ==, 200);
  g_assert_cmpint(p.c[1].value, ==, -3);
  g_assert_cmpstr(p.c[2].name, ==, "focus_automatic_continuous");
  g_assert_cmpstr(p.c[2].text, ==, "0");
  g_assert_cmpint(p.c[2].type, ==, INSP_CAMERA_CONTROL_INTEGER);
  g_assert_cmpint(p.c[3].type, ==, INSP_CAMERA_CONTROL_NAME);
  g_assert_cmpstr(p.c[3].text, ==, "manual_mode");
  g_assert_cmpint(p.c[4].type, ==, INSP_CAMERA_CONTROL_BOOLEAN);
  g_assert_cmpint(p.c[4].value, ==, 0);
  g_assert_cmpstr(p.c[4].text, ==, "off");
  /* GenICam feature names keep their case; the v4l2-style name is lower. */
  g_assert_cmpstr(p.c[5].feature, ==, "TriggerMode");
  g_assert_cmpstr(p.c[5].name, ==, "triggermode");
  g_assert_cmpint(p.c[5].type, ==, INSP_CAMERA_CONTROL_BOOLEAN);
  g_assert_cmpint(p.c[5].value, ==, 1);
  g_assert_cmpstr(p.c[5].text, ==, "On");
  g_assert_cmpint(p.c[6].value, ==, 1);
  insp_camera_controls_free(p.c, p.n);

  Parsed none = parse_ok(" , \n");
  g_assert_cmpuint(none.n, ==, 0);
  g_assert_null(none.c);
  Parsed empty = parse_ok("");
  g_assert_cmpuint(empty.n, ==, 0);

  Parsed big = parse_ok("a=9223372036854775807,b=-9223372036854775808");
  g_assert_cmpint(big.c[0].value, ==, G_MAXINT64);
  g_assert_cmpint(big.c[1].value, ==, G_MININT64);
  insp_camera_controls_free(big.c, big.n);
  insp_camera_controls_free(NULL, 0);
}

static void
test_refused(void)
{
  parse_bad("gain", INSP_CAMERA_CONTROLS_ERROR_SYNTAX, "item 1 'gain' is not name=value");
  parse_bad("=3", INSP_CAMERA_CONTROLS_ERROR_SYNTAX, "not name=value");
  parse_bad("ga-in=3", INSP_CAMERA_CONTROLS_ERROR_SYNTAX, "item 1 'ga-in=3'");
  parse_bad("1gain=3", INSP_CAMERA_CONTROLS_ERROR_SYNTAX, "not name=value");
  parse_bad("gain=", INSP_CAMERA_CONTROLS_ERROR_SYNTAX, "not name=value");
  parse_bad("gain=1,exposure=1.5", INSP_CAMERA_CONTROLS_ERROR_SYNTAX,
            "item 2 'exposure=1.5': the value is not an integer");
  parse_bad("gain=a b", INSP_CAMERA_CONTROLS_ERROR_SYNTAX, "not an integer, a boolean or a name");
  parse_bad("gain=12abc", INSP_CAMERA_CONTROLS_ERROR_SYNTAX, "not an integer");
  parse_bad("gain=99999999999999999999", INSP_CAMERA_CONTROLS_ERROR_SYNTAX, "not an integer");
  parse_bad("gain=-", INSP_CAMERA_CONTROLS_ERROR_SYNTAX, "not an integer");
  parse_bad("gain=1=2", INSP_CAMERA_CONTROLS_ERROR_SYNTAX, "not an integer");
  parse_bad("gain=\xc3\xa9", INSP_CAMERA_CONTROLS_ERROR_SYNTAX, "not an integer");
}

static void
test_duplicates(void)
{
  parse_bad("gain=1, gain=2", INSP_CAMERA_CONTROLS_ERROR_DUPLICATE, "'gain' is set twice");
  /* The same name in another case is the same control. */
  parse_bad("TriggerMode=On\ntriggermode=Off", INSP_CAMERA_CONTROLS_ERROR_DUPLICATE,
            "'triggermode' is set twice");
}

static void
test_limits(void)
{
  g_autoptr(GString) s = g_string_new(NULL);
  for (int i = 0; i < INSP_CAMERA_CONTROLS_MAX; i++)
    g_string_append_printf(s, "%sc%d=%d", i ? "," : "", i, i);
  Parsed p = parse_ok(s->str);
  g_assert_cmpuint(p.n, ==, INSP_CAMERA_CONTROLS_MAX);
  insp_camera_controls_free(p.c, p.n);
  g_string_append(s, ",one_more=1");
  parse_bad(s->str, INSP_CAMERA_CONTROLS_ERROR_LIMIT, "more than 64 controls");

  g_autofree char *name = g_strnfill(INSP_CAMERA_CONTROL_MAX_LEN, 'n');
  g_autofree char *ok = g_strdup_printf("%s=1", name);
  Parsed q = parse_ok(ok);
  g_assert_cmpuint(q.n, ==, 1);
  insp_camera_controls_free(q.c, q.n);
  g_autofree char *long_name = g_strdup_printf("%sx=1", name);
  parse_bad(long_name, INSP_CAMERA_CONTROLS_ERROR_LIMIT, "longer than 64 characters");
  g_autofree char *long_value = g_strdup_printf("gain=%sx", name);
  parse_bad(long_value, INSP_CAMERA_CONTROLS_ERROR_LIMIT, "longer than 64 characters");
}

static void
test_copy_equal(void)
{
  Parsed a = parse_ok("gain=3, TriggerMode=On, auto_exposure=manual_mode");
  InspCameraControl *b = insp_camera_controls_copy(a.c, a.n);
  g_assert_true(insp_camera_controls_equal(a.c, a.n, b, a.n));
  g_assert_true(b[1].feature != a.c[1].feature);
  g_assert_cmpstr(b[1].feature, ==, "TriggerMode");
  g_assert_false(insp_camera_controls_equal(a.c, a.n, b, a.n - 1));
  Parsed c = parse_ok("gain=3, TriggerMode=Off, auto_exposure=manual_mode");
  g_assert_false(insp_camera_controls_equal(a.c, a.n, c.c, c.n));
  Parsed d = parse_ok("gain=3, triggermode=On, auto_exposure=manual_mode");
  g_assert_false(insp_camera_controls_equal(a.c, a.n, d.c, d.n)); /* GenICam: case matters */
  g_assert_null(insp_camera_controls_copy(NULL, 0));
  insp_camera_controls_free(a.c, a.n);
  insp_camera_controls_free(b, a.n);
  insp_camera_controls_free(c.c, c.n);
  insp_camera_controls_free(d.c, d.n);
}

/* Every `name=value` example of pipeline/README.md's "Camera controls"
 * section (the details beside the capture code; the user's guide links to it), and
 * its `controls = ...` line, make a config that check-config accepts. */
static void
test_readme_examples_pass_check_config(void)
{
  const char *inspectd = g_getenv("INSPECTD");
  const char *srcdir = g_getenv("INSP_TEST_SRCDIR");
  if (inspectd == NULL || srcdir == NULL) {
    g_test_skip("INSPECTD or INSP_TEST_SRCDIR is not set (run through meson test)");
    return;
  }
  g_autofree char *readme_path = g_build_filename(srcdir, "..", "pipeline", "README.md", NULL);
  g_autofree char *readme = NULL;
  g_autoptr(GError) err = NULL;
  g_assert_true(g_file_get_contents(readme_path, &readme, NULL, &err));
  g_assert_no_error(err);
  const char *start = strstr(readme, "### Camera controls");
  g_assert_nonnull(start);
  const char *end = strstr(start + 4, "\n### ");
  g_assert_nonnull(end);
  g_autofree char *section = g_strndup(start, (gsize)(end - start));

  g_autoptr(GPtrArray) items = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GRegex) line_re = g_regex_new("`controls = ([^`]*)`", 0, 0, NULL);
  g_autoptr(GRegex) item_re = g_regex_new("`([A-Za-z][A-Za-z0-9_]*=[^`\\s,]+)`", 0, 0, NULL);
  g_autoptr(GMatchInfo) m = NULL;
  guint n_lines = 0;
  for (g_regex_match(line_re, section, 0, &m); g_match_info_matches(m);
       g_match_info_next(m, NULL), n_lines++)
    g_ptr_array_add(items, g_match_info_fetch(m, 1));
  g_clear_pointer(&m, g_match_info_free);
  guint n_items = 0;
  for (g_regex_match(item_re, section, 0, &m); g_match_info_matches(m);
       g_match_info_next(m, NULL), n_items++)
    g_ptr_array_add(items, g_match_info_fetch(m, 1));
  /* The section's examples today: one list, and auto_exposure=manual_mode,
   * exposure_auto=off... and TriggerMode=On; at least those. */
  g_assert_cmpuint(n_lines, >=, 1);
  g_assert_cmpuint(n_items, >=, 2);

  g_autofree char *dir = g_dir_make_tmp("insp-controls-XXXXXX", &err);
  g_assert_no_error(err);
  /* check-config loads the model: a tiny real one, trained on the demo's
   * synthetic parts (64 px, builtin backbone: a fraction of a second). */
  g_autofree char *parts = g_build_filename(dir, "parts", NULL);
  g_autofree char *good = g_build_filename(parts, "train", "good", NULL);
  g_autofree char *model = g_build_filename(dir, "model.safetensors", NULL);
  {
    const char *write[] = {
        inspectd,          "run", "--demo-write-dataset", parts, "--demo-size", "64",
        "--dataset-train", "4",   "--dataset-test",       "1",   NULL};
    const char *train[] = {inspectd, "train", "-i", good, "-o", model, "--size", "64", NULL};
    const char *const *steps[] = {write, train};
    for (guint i = 0; i < G_N_ELEMENTS(steps); i++) {
      g_autofree char *errout = NULL;
      int status = -1;
      g_assert_true(g_spawn_sync(NULL, (char **)steps[i], NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL,
                                 NULL, NULL, &errout, &status, &err));
      g_assert_no_error(err);
      if (!g_spawn_check_wait_status(status, NULL))
        g_error("%s %s failed: %s", inspectd, steps[i][1], errout);
    }
  }
  for (guint i = 0; i < items->len; i++) {
    const char *example = g_ptr_array_index(items, i);
    const char *sources[] = {"v4l2", "aravis"};
    for (guint s = 0; s < G_N_ELEMENTS(sources); s++) {
      g_autofree char *conf = g_build_filename(dir, "inspectd.conf", NULL);
      g_autofree char *text = g_strdup_printf(
          "[camera]\nsource = %s\ncontrols = %s\n[model]\npath = %s\n", sources[s], example, model);
      g_assert_true(g_file_set_contents(conf, text, -1, &err));
      const char *argv[] = {inspectd, "check-config", conf, NULL};
      g_autofree char *out = NULL, *errout = NULL;
      int status = -1;
      g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out,
                                 &errout, &status, &err));
      g_assert_no_error(err);
      if (!g_spawn_check_wait_status(status, NULL))
        g_error("pipeline/README.md example `%s` (source %s) fails check-config: %s", example,
                sources[s], errout);
      g_remove(conf);
    }
  }
  g_remove(model);
  {
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", parts);
    g_assert_true(g_spawn_command_line_sync(cmd, NULL, NULL, NULL, NULL));
  }
  g_rmdir(dir);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/camera-controls/typed-values", test_typed_values);
  g_test_add_func("/camera-controls/refused", test_refused);
  g_test_add_func("/camera-controls/duplicates", test_duplicates);
  g_test_add_func("/camera-controls/limits", test_limits);
  g_test_add_func("/camera-controls/copy-equal", test_copy_equal);
  g_test_add_func("/camera-controls/readme-examples-pass-check-config",
                  test_readme_examples_pass_check_config);
  return g_test_run();
}
