/* The inspectd binary's command line: help, version, unknown commands, and
 * subcommands that exist. Runs the real binary (path in $INSPECTD). */
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/wait.h>

static int
run_inspectd(const char *args, char **out, char **err)
{
  const char *exe = g_getenv("INSPECTD");
  g_autofree char *cmd = g_strdup_printf("%s %s", exe, args);
  int status = -1;
  g_autoptr(GError) error = NULL;

  g_assert_nonnull(exe);
  g_assert_true(g_spawn_command_line_sync(cmd, out, err, &status, &error));
  g_assert_no_error(error);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void
test_help(void)
{
  g_autofree char *out = NULL, *err = NULL;

  g_assert_cmpint(run_inspectd("--help", &out, &err), ==, 0);
  for (const char *const *c = (const char *const[]){"run", "train", "eval", "check-config",
                                                    "cameras", "features", NULL};
       *c; c++)
    g_assert_nonnull(strstr(out, *c));
}

static void
test_version(void)
{
  g_autofree char *out = NULL, *err = NULL;

  g_assert_cmpint(run_inspectd("--version", &out, &err), ==, 0);
  g_assert_true(g_str_has_prefix(out, "inspectd "));
}

static void
test_unknown(void)
{
  g_autofree char *out = NULL, *err = NULL;

  g_assert_cmpint(run_inspectd("frobnicate", &out, &err), ==, 2);
  g_assert_nonnull(strstr(err, "unknown command 'frobnicate'"));
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  g_assert_cmpint(run_inspectd("", &out, &err), ==, 2);
}

/* A near miss names the command meant; something far from every command
 * gets the usage and no guess. */
static void
test_did_you_mean(void)
{
  static const char *const cases[][2] = {
      {"rnu", "run"},
      {"trian", "train"},
      {"evl", "eval"},
      {"camera", "cameras"},
      {"check-conf", "check-config"},
      {"featurs", "features"},
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *out = NULL, *err = NULL;
    g_autofree char *want = g_strdup_printf("did you mean '%s'?", cases[i][1]);

    g_assert_cmpint(run_inspectd(cases[i][0], &out, &err), ==, 2);
    g_test_message("%s: %s", cases[i][0], err);
    g_assert_nonnull(strstr(err, want));
  }
  g_autofree char *out = NULL, *err = NULL;
  g_assert_cmpint(run_inspectd("frobnicate", &out, &err), ==, 2);
  g_assert_null(strstr(err, "did you mean"));
  g_assert_nonnull(strstr(err, "Commands:"));
}

static void
test_subcommand_help(void)
{
  const char *cmds[] = {"run", "train", "eval", "check-config", "cameras", "features"};

  for (gsize i = 0; i < G_N_ELEMENTS(cmds); i++) {
    g_autofree char *out = NULL, *err = NULL;
    g_autofree char *args = g_strdup_printf("%s --help", cmds[i]);

    g_assert_cmpint(run_inspectd(args, &out, &err), ==, 0);
    g_assert_nonnull(strstr(out, "Usage:"));
  }
}

/* Every flag the README gives for `inspectd run` (in the demo line's section
 * or on a line that runs `inspectd run`) is listed by `inspectd run --help`:
 * a newcomer who read one finds it in the other. */
static void
test_run_help_lists_readme_flags(void)
{
  const char *srcdir = g_getenv("INSP_TEST_SRCDIR");
  g_autofree char *readme_path = NULL, *readme = NULL, *out = NULL, *err = NULL;
  g_autoptr(GRegex) flag = g_regex_new("--[a-z][a-z0-9-]*", 0, 0, NULL);
  g_auto(GStrv) lines = NULL;
  gboolean in_demo = FALSE;
  guint checked = 0;

  if (srcdir == NULL) {
    g_test_skip("$INSP_TEST_SRCDIR is not set (run through meson test)");
    return;
  }
  readme_path = g_build_filename(srcdir, "..", "README.md", NULL);
  g_assert_true(g_file_get_contents(readme_path, &readme, NULL, NULL));
  g_assert_cmpint(run_inspectd("run --help", &out, &err), ==, 0);
  lines = g_strsplit(readme, "\n", -1);
  for (char **l = lines; *l; l++) {
    g_autoptr(GMatchInfo) m = NULL;

    if (g_str_has_prefix(*l, "## "))
      in_demo = g_str_has_prefix(*l, "## The demo line");
    if (!in_demo && strstr(*l, "inspectd run") == NULL)
      continue;
    for (g_regex_match(flag, *l, 0, &m); g_match_info_matches(m); g_match_info_next(m, NULL)) {
      g_autofree char *f = g_match_info_fetch(m, 0);
      g_autofree char *shown = g_strconcat(f, "=", NULL);
      g_autofree char *bare = g_strconcat(f, " ", NULL);

      if (strstr(out, shown) == NULL && strstr(out, bare) == NULL)
        g_error("the README documents 'inspectd run %s' but 'inspectd run --help' does not list "
                "it",
                f);
      checked++;
    }
  }
  g_assert_cmpuint(checked, >=, 6);
}

/* A file that is not a model (a PNG, random bytes) given as --model: one
 * sentence that names the file once and says what it is not. */
static void
test_not_a_model(void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp("test-cli-XXXXXX", &error);
  g_autofree char *png = g_build_filename(dir, "part.png", NULL);
  g_autofree char *junk = g_build_filename(dir, "junk.bin", NULL);
  guint8 bytes[4096] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
                        0,    0,   0,   13,  'I',  'H',  'D',  'R'};
  g_autoptr(GRand) rand = g_rand_new_with_seed(17);

  g_assert_no_error(error);
  for (gsize i = 16; i < sizeof bytes; i++)
    bytes[i] = (guint8)g_rand_int(rand);
  g_assert_true(g_file_set_contents(png, (const char *)bytes, sizeof bytes, NULL));
  g_assert_true(g_file_set_contents(junk, (const char *)bytes + 16, sizeof bytes - 16, NULL));
  for (const char *const *f = (const char *const[]){png, junk, NULL}; *f; f++) {
    g_autofree char *out = NULL, *err = NULL;
    g_autofree char *args = g_strdup_printf("eval --model %s --dataset %s", *f, dir);
    const char *at;

    g_assert_cmpint(run_inspectd(args, &out, &err), ==, 1);
    g_test_message("%s", err);
    at = strstr(err, *f);
    g_assert_nonnull(at);
    g_assert_null(strstr(at + 1, *f)); /* named once */
    g_assert_nonnull(strstr(err, "is not a safetensors file"));
    g_assert_nonnull(strstr(err, "not an inspectd model"));
    g_assert_null(strstr(err, "header length 7")); /* no number read from the file's bytes */
    g_assert_cmpint(strchr(err, '\n') - err, ==, (gssize)strlen(err) - 1); /* one line */
  }
  g_unlink(png);
  g_unlink(junk);
  g_rmdir(dir);
}

static void
test_bad_flag(void)
{
  g_autofree char *out = NULL, *err = NULL;

  g_assert_cmpint(run_inspectd("train --no-such-flag", &out, &err), ==, 2);
  g_assert_nonnull(strstr(err, "no-such-flag"));
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/cli/help", test_help);
  g_test_add_func("/cli/version", test_version);
  g_test_add_func("/cli/unknown", test_unknown);
  g_test_add_func("/cli/did-you-mean", test_did_you_mean);
  g_test_add_func("/cli/subcommand-help", test_subcommand_help);
  g_test_add_func("/cli/bad-flag", test_bad_flag);
  g_test_add_func("/cli/not-a-model", test_not_a_model);
  g_test_add_func("/cli/run-help-lists-readme-flags", test_run_help_lists_readme_flags);
  return g_test_run();
}
