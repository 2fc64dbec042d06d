/* The inspectd binary's command line: help, version, unknown commands, and
 * subcommands that exist. Runs the real binary (path in $INSPECTD). */
#include <glib.h>
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
  return g_test_run();
}
