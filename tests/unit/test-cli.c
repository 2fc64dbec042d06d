/* The inspectd binary's command line: help, version, unknown commands, and
 * subcommands that exist. Runs the real binary (path in $INSPECTD). */
#include <glib.h>
#include <glib/gstdio.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

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

/* The OpenBLAS core line of --version, from a run with OPENBLAS_CORETYPE
 * = @coretype (NULL: unset). */
static char *
blas_core_line(const char *coretype)
{
  const char *argv[] = {g_getenv("INSPECTD"), "--version", NULL};
  g_auto(GStrv) env = g_get_environ();
  g_autofree char *out = NULL;
  g_autoptr(GError) error = NULL;
  int status = -1;
  const char *line;

  env = coretype ? g_environ_setenv(env, "OPENBLAS_CORETYPE", coretype, TRUE)
                 : g_environ_unsetenv(env, "OPENBLAS_CORETYPE");
  env = g_environ_unsetenv(env, "INSP_OPENBLAS_REPLACED_CORE");
  g_assert_true(g_spawn_sync(NULL, (char **)argv, env, G_SPAWN_DEFAULT, NULL, NULL, &out, NULL,
                             &status, &error));
  g_assert_no_error(error);
  g_assert_true(g_spawn_check_wait_status(status, NULL));
  line = strstr(out, "OpenBLAS core: ");
  g_assert_nonnull(line);
  return g_strndup(line, strcspn(line, "\n"));
}

/* OpenBLAS gets the kernels of the widest instruction set this CPU has:
 * when its own choice (by CPU model, once, at load) is an older one,
 * inspectd runs again with OPENBLAS_CORETYPE set; a value the user set
 * stands. */
static void
test_blas_core(void)
{
  g_autofree char *user = blas_core_line("Prescott");
  g_autofree char *chosen = blas_core_line(NULL);
  const char *core = chosen + strlen("OpenBLAS core: ");

  g_test_message("%s", chosen);
  g_assert_cmpstr(user, ==, "OpenBLAS core: Prescott (OPENBLAS_CORETYPE)");
  /* a replacement is another core than OpenBLAS's own choice */
  if (strstr(core, "OpenBLAS chose ") != NULL) {
    const char *was = strstr(core, "OpenBLAS chose ") + strlen("OpenBLAS chose ");

    g_assert_false(strncmp(was, core, strcspn(core, " ")) == 0 && was[strcspn(core, " ")] == ',');
  }
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    g_assert_true(g_str_has_prefix(core, "SkylakeX") || g_str_has_prefix(core, "Cooperlake") ||
                  g_str_has_prefix(core, "SapphireRapids"));
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    for (const char *const *old =
             (const char *const[]){"Prescott", "Core2", "Penryn", "Nehalem", "Sandybridge", NULL};
         *old; old++)
      g_assert_false(g_str_has_prefix(core, *old));
  }
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

/* check-config loads the model as run does: a readable file that is not a
 * model is a problem that names the file setting the key (here a drop-in),
 * the section, the key and why, in one line, and exits 1. */
static void
test_check_config_model(void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp("test-cli-XXXXXX", &error);
  g_autofree char *conf = g_build_filename(dir, "inspectd.conf", NULL);
  g_autofree char *dropins = g_build_filename(dir, "inspectd.conf.d", NULL);
  g_autofree char *dropin = g_build_filename(dropins, "50-model.conf", NULL);
  g_autofree char *junk = g_build_filename(dir, "model.safetensors", NULL);
  g_autofree char *body = g_strdup_printf("[model]\npath = %s\n", junk);
  g_autofree char *args = g_strdup_printf("check-config %s", conf);
  g_autofree char *out = NULL, *err = NULL;
  g_autofree char *want = g_strdup_printf("%s: [model] path: ", dropin);

  g_assert_no_error(error);
  g_assert_cmpint(g_mkdir(dropins, 0755), ==, 0);
  g_assert_true(g_file_set_contents(junk, "this is a text file, not weights\n", -1, NULL));
  g_assert_true(g_file_set_contents(conf, "[station]\nid = line1\n", -1, NULL));
  g_assert_true(g_file_set_contents(dropin, body, -1, NULL));
  g_assert_cmpint(run_inspectd(args, &out, &err), ==, 1);
  g_test_message("%s", err);
  g_assert_true(g_str_has_prefix(err, want));
  g_assert_nonnull(strstr(err, "not an inspectd model"));
  g_assert_nonnull(strstr(err, ": 1 problem\n"));
  g_assert_null(strstr(out, "OK"));
  g_unlink(junk);
  g_unlink(dropin);
  g_rmdir(dropins);
  g_unlink(conf);
  g_rmdir(dir);
}

/* Runs inspectd with @args (a vector) with stderr on a new pseudo-terminal
 * of @cols columns (0: the kernel's 0, unknown) and $COLUMNS = @columns_env
 * (NULL: unset); returns what the terminal received. */
static char *
run_on_pty(const char *const *args, int cols, const char *columns_env, int *exit_status)
{
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC), slave, devnull, status = -1;
  struct winsize ws = {.ws_row = 24, .ws_col = (unsigned short)cols};
  g_autoptr(GPtrArray) argv = g_ptr_array_new();
  g_auto(GStrv) env = g_get_environ();
  g_autoptr(GString) got = g_string_new(NULL);
  g_autoptr(GError) error = NULL;
  GPid pid;

  g_assert_cmpint(master, >=, 0);
  g_assert_cmpint(grantpt(master), ==, 0);
  g_assert_cmpint(unlockpt(master), ==, 0);
  slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
  g_assert_cmpint(slave, >=, 0);
  g_assert_cmpint(ioctl(slave, TIOCSWINSZ, &ws), ==, 0);
  devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  env = columns_env ? g_environ_setenv(env, "COLUMNS", columns_env, TRUE)
                    : g_environ_unsetenv(env, "COLUMNS");
  g_ptr_array_add(argv, (gpointer)g_getenv("INSPECTD"));
  for (; *args; args++)
    g_ptr_array_add(argv, (gpointer)*args);
  g_ptr_array_add(argv, NULL);
  g_assert_true(g_spawn_async_with_fds(NULL, (char **)argv->pdata, env, G_SPAWN_DO_NOT_REAP_CHILD,
                                       NULL, NULL, &pid, devnull, devnull, slave, &error));
  g_assert_no_error(error);
  close(slave);
  close(devnull);
  for (;;) {
    char buf[4096];
    ssize_t n = read(master, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break; /* EIO: the child, the last holder of the terminal, is gone */
    g_string_append_len(got, buf, n);
  }
  close(master);
  g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
  *exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return g_strdup(got->str);
}

/* The longest stretch between line starts (\r, \n) of @text, in
 * characters, escape sequences (ESC [ ... letter) not counted; and how many
 * stretches hold @needle. */
static glong
widest_line(const char *text, const char *needle, guint *n_with)
{
  glong widest = 0, cur = 0;
  g_autoptr(GString) line = g_string_new(NULL);

  *n_with = 0;
  for (const char *c = text;; c = g_utf8_next_char(c)) {
    if (*c == '\033' && c[1] == '[') {
      for (c += 2; *c && !g_ascii_isalpha(*c); c++)
        ;
      if (!*c)
        break;
      continue;
    }
    if (*c == '\0' || *c == '\r' || *c == '\n') {
      widest = MAX(widest, cur);
      if (strstr(line->str, needle))
        (*n_with)++;
      g_string_truncate(line, 0);
      cur = 0;
      if (*c == '\0')
        break;
      continue;
    }
    g_string_append_unichar(line, g_utf8_get_char(c));
    cur++;
  }
  return widest;
}

/* train's and eval's progress on a terminal fits its width (from the
 * terminal, else $COLUMNS), so the rewritten line never wraps; off a
 * terminal it is plain lines. */
static void
test_progress_fits_terminal(void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp("test-cli-progress-XXXXXX", &error);
  g_autofree char *ds = g_build_filename(dir, "ds", NULL);
  g_autofree char *images = g_build_filename(ds, "train", "good", NULL);
  g_autofree char *model = g_build_filename(dir, "m.safetensors", NULL);
  g_autofree char *out = NULL, *err = NULL;
  g_autofree char *write_args = g_strdup_printf(
      "run --demo-write-dataset %s --demo-size 64 --dataset-train 6 --dataset-test 2", ds);
  const char *const train[] = {"train", "--images", images, "--out", model, "--size", "64", NULL};
  const char *const eval[] = {"eval", "--model", model, "--dataset", ds, NULL};
  struct {
    const char *const *args;
    const char *needle;
    int cols;
    const char *env;
    glong limit;
  } runs[] = {
      {train, "ETA", 40, "200", 39}, /* the terminal's width wins over $COLUMNS */
      {train, "ETA", 0, "50", 49},   /* a terminal that gives none: $COLUMNS */
      {train, "ETA", 0, NULL, 79},   /* neither: 80 */
      {eval, "score", 40, NULL, 39},
      /* the path shortened to its end */ {eval, "eval: ", 0, "30", 29}, /* too narrow for all: cut
                                                                            at the end */
  };

  g_assert_no_error(error);
  g_assert_cmpint(run_inspectd(write_args, &out, &err), ==, 0);
  for (gsize i = 0; i < G_N_ELEMENTS(runs); i++) {
    int status;
    guint n_with;
    g_autofree char *tty = run_on_pty(runs[i].args, runs[i].cols, runs[i].env, &status);
    glong widest = widest_line(tty, runs[i].needle, &n_with);

    g_test_message("%s on %d columns, COLUMNS=%s: widest line %ld\n%s", runs[i].args[0],
                   runs[i].cols, runs[i].env ? runs[i].env : "(unset)", widest, tty);
    g_assert_cmpint(status, ==, 0);
    g_assert_cmpuint(n_with, >, 0);
    /* Every line on the terminal (eval's table goes to stdout). */
    g_assert_cmpint(widest, <=, runs[i].limit);
  }

  /* Not a terminal: plain lines, nothing rewritten. */
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);
  g_autofree char *plain = g_strdup_printf("eval --model %s --dataset %s", model, ds);
  g_assert_cmpint(run_inspectd(plain, &out, &err), ==, 0);
  g_assert_null(strchr(err, '\r'));
  g_assert_nonnull(strstr(err, "eval: 1/"));
  g_autofree char *rm = g_strdup_printf("rm -rf '%s'", dir);
  g_assert_cmpint(system(rm), ==, 0);
}

/* train's image-score options: a bad value is refused before any image is
 * read (exit 2), in one line naming the option and what it takes; good ones
 * are shown by the summary, kept in the model, and the model evaluates. */
static void
test_train_image_score(void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp("test-cli-score-XXXXXX", &error);
  g_autofree char *ds = g_build_filename(dir, "ds", NULL);
  g_autofree char *images = g_build_filename(ds, "train", "good", NULL);
  g_autofree char *model = g_build_filename(dir, "m.safetensors", NULL);
  g_autofree char *write_args = g_strdup_printf(
      "run --demo-write-dataset %s --demo-size 64 --dataset-train 6 --dataset-test 2", ds);
  const struct {
    const char *args;
    const char *needle;
  } bad[] = {
      {"--neighbours 1", "--neighbours must be in [2, 64], got 1 (one neighbour reweights by "
                         "nothing: that is --image-score max)"},
      {"--neighbours 0", "--neighbours must be in [2, 64], got 0\n"},
      {"--neighbours 65", "--neighbours must be in [2, 64], got 65\n"},
      {"--neighbours -3", "--neighbours must be in [2, 64], got -3"},
      {"--image-score top", "--image-score must be reweighted, max or map-max, not 'top'"},
      {"--image-score max --neighbours 3", "--neighbours goes with --image-score reweighted"},
      {"--detector padim --image-score max", "--image-score and --neighbours are PatchCore's"},
  };
  const struct {
    const char *args;
    const char *summary;
  } good[] = {
      {"", "score      reweighted, k = 9: "},
      {"--image-score reweighted --neighbours 3", "score      reweighted, k = 3: "},
      {"--image-score max", "score      max: the highest patch distance"},
      {"--image-score map-max", "score      map-max: the highest value of the blurred"},
  };

  g_assert_no_error(error);
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autofree char *out = NULL, *err = NULL;
    g_autofree char *args =
        g_strdup_printf("train --images %s/none --out %s %s", dir, model, bad[i].args);

    g_assert_cmpint(run_inspectd(args, &out, &err), ==, 2);
    g_test_message("%s: %s", bad[i].args, err);
    g_assert_nonnull(strstr(err, bad[i].needle));
    g_assert_cmpint(strchr(err, '\n') - err, ==, (gssize)strlen(err) - 1); /* one line */
    g_assert_false(g_file_test(model, G_FILE_TEST_EXISTS));
  }
  {
    g_autofree char *out = NULL, *err = NULL;

    g_assert_cmpint(run_inspectd(write_args, &out, &err), ==, 0);
  }
  for (gsize i = 0; i < G_N_ELEMENTS(good); i++) {
    g_autofree char *out = NULL, *err = NULL, *eout = NULL, *eerr = NULL;
    g_autofree char *args =
        g_strdup_printf("train --images %s --out %s --size 64 %s", images, model, good[i].args);
    g_autofree char *eval = g_strdup_printf("eval -q --model %s --dataset %s", model, ds);

    g_assert_cmpint(run_inspectd(args, &out, &err), ==, 0);
    if (strstr(out, good[i].summary) == NULL)
      g_error("train %s: no '%s' in the summary:\n%s", good[i].args, good[i].summary, out);
    g_assert_cmpint(run_inspectd(eval, &eout, &eerr), ==, 0);
    g_assert_nonnull(strstr(eout, "image AUROC"));
    g_unlink(model);
  }
  g_autofree char *rm = g_strdup_printf("rm -rf '%s'", dir);
  g_assert_cmpint(system(rm), ==, 0);
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
  g_test_add_func("/cli/blas-core", test_blas_core);
  g_test_add_func("/cli/unknown", test_unknown);
  g_test_add_func("/cli/did-you-mean", test_did_you_mean);
  g_test_add_func("/cli/subcommand-help", test_subcommand_help);
  g_test_add_func("/cli/bad-flag", test_bad_flag);
  g_test_add_func("/cli/train-image-score", test_train_image_score);
  g_test_add_func("/cli/not-a-model", test_not_a_model);
  g_test_add_func("/cli/check-config-model", test_check_config_model);
  g_test_add_func("/cli/progress-fits-terminal", test_progress_fits_terminal);
  g_test_add_func("/cli/run-help-lists-readme-flags", test_run_help_lists_readme_flags);
  return g_test_run();
}
