/* inspectd: one binary, several subcommands. main() only dispatches; each
 * subcommand lives in daemon/cmd-*.c. Runs on the main thread only. */
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "insp-blas.h"
#include "insp-cli.h"
#include "insp-conf.h"
#include "insp-daemon-config.h"
#include "insp-backbone.h"
#include "insp-model.h"

typedef struct {
  const char *name;
  int (*func)(int argc, char **argv);
  const char *summary;
} InspCommand;

static const InspCommand commands[] = {
    {"run", insp_cmd_run, "run the inspection daemon in the foreground (no -c: the demo line)"},
    {"train", insp_cmd_train, "fit a model on a folder of good images"},
    {"eval", insp_cmd_eval, "measure a model on a dataset in MVTec AD layout"},
    {"check-config", insp_cmd_check_config, "validate a config file and its drop-ins"},
    {"cameras", insp_cmd_cameras, "list V4L2 and GenICam cameras with formats and controls"},
    {"features", insp_cmd_features, "dump a backbone's stage outputs for an image"},
};

static void
print_usage(FILE *out)
{
  fprintf(out, "Usage: inspectd COMMAND [OPTION...]\n\n"
               "Inspects parts on a production line with an anomaly detector and\n"
               "publishes pass/fail, defect masks and regions over MQTT.\n\n"
               "Commands:\n");
  for (gsize i = 0; i < G_N_ELEMENTS(commands); i++)
    fprintf(out, "  %-14s %s\n", commands[i].name, commands[i].summary);
  fprintf(out, "\nOptions:\n"
               "  -h, --help     show this help\n"
               "  -V, --version  show the version\n\n"
               "'inspectd COMMAND --help' documents each command's flags.\n");
}

gboolean
insp_cli_parse(int *argc, char ***argv, const char *parameter_string, const char *summary,
               const GOptionEntry *entries, int *exit_status)
{
  g_autoptr(GOptionContext) ctx = g_option_context_new(parameter_string);
  g_autoptr(GError) error = NULL;

  g_option_context_set_summary(ctx, summary);
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_option_context_set_help_enabled(ctx, TRUE);
  /* GOption prints --help itself and calls exit(0); that is the one exit()
   * outside main and acceptable for a help page. */
  if (!g_option_context_parse(ctx, argc, argv, &error)) {
    fprintf(stderr, "inspectd: %s\nTry 'inspectd %s --help'.\n", error->message,
            (*argc > 0 && (*argv)[0]) ? (*argv)[0] : "COMMAND");
    *exit_status = 2;
    return FALSE;
  }
  *exit_status = 0;
  return TRUE;
}

int
insp_cli_term_columns(int fd)
{
  struct winsize ws;
  const char *env = g_getenv("COLUMNS");
  gint64 n;

  if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    return ws.ws_col;
  if (env != NULL && (n = g_ascii_strtoll(env, NULL, 10)) > 0 && n <= 10000)
    return (int)n;
  return 80;
}

void
insp_cli_progress_line(FILE *out, const char *text, gboolean end)
{
  int room = MAX(insp_cli_term_columns(fileno(out)) - 1, 1);
  const char *cut = text;

  /* One column per character: the lines are ASCII but for file names. */
  for (int n = 0; *cut && n < room; n++)
    cut = g_utf8_next_char(cut);
  /* ESC [ K erases what the previous, longer line left. */
  fprintf(out, "\r%.*s\033[K%s", (int)(cut - text), text, end ? "\n" : "");
  fflush(out);
}

/* OpenBLAS chose its kernels when it was loaded; when it fell back to an
 * older instruction set than this CPU has (a CPU newer than the library),
 * run again with OPENBLAS_CORETYPE set to the core that uses it, once: a
 * value the user set is never overridden, and the exec keeps the pid, the
 * open descriptors and the rest of the environment (NOTIFY_SOCKET...). If
 * the exec fails, inspectd runs on with OpenBLAS's own choice. */
static void
blas_core_reexec(char **argv)
{
  const char *want;

  if (g_getenv("OPENBLAS_CORETYPE") != NULL || (want = insp_blas_core_to_request()) == NULL)
    return;
  if (!g_setenv(INSP_BLAS_REPLACED_ENV, insp_blas_core(), TRUE) ||
      !g_setenv("OPENBLAS_CORETYPE", want, TRUE))
    return;
  execv("/proc/self/exe", argv);
  g_unsetenv("OPENBLAS_CORETYPE");
  g_unsetenv(INSP_BLAS_REPLACED_ENV);
}

int
main(int argc, char **argv)
{
  blas_core_reexec(argv);
  setlocale(LC_ALL, "");
  setlocale(LC_NUMERIC, "C");

  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    print_usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
    const char *replaced = g_getenv(INSP_BLAS_REPLACED_ENV);

    printf("inspectd %s\n", INSP_VERSION);
    if (replaced != NULL)
      printf("OpenBLAS core: %s (set by inspectd: OpenBLAS chose %s, which does not use this "
             "CPU's widest instructions)\n",
             insp_blas_core(), replaced);
    else
      printf("OpenBLAS core: %s%s\n", insp_blas_core(),
             g_getenv("OPENBLAS_CORETYPE") ? " (OPENBLAS_CORETYPE)" : "");
    printf("PatchCore nearest-neighbour search: %s\n", insp_nn_search_describe());
    printf("Backbone: %s\n", insp_backbone_describe_kernels());
    return 0;
  }
  for (gsize i = 0; i < G_N_ELEMENTS(commands); i++) {
    if (strcmp(argv[1], commands[i].name) == 0) {
      g_set_prgname(commands[i].name);
      return commands[i].func(argc - 1, argv + 1);
    }
  }
  {
    const char *names[G_N_ELEMENTS(commands) + 1];
    const char *close;

    for (gsize i = 0; i < G_N_ELEMENTS(commands); i++)
      names[i] = commands[i].name;
    names[G_N_ELEMENTS(commands)] = NULL;
    close = insp_config_suggest(argv[1], names);
    if (close != NULL) {
      /* A near miss: the one line that fixes it, not the whole usage. */
      fprintf(stderr, "inspectd: unknown command '%s'; did you mean '%s'?\n", argv[1], close);
      fprintf(stderr, "Try 'inspectd --help' for the list of commands.\n");
      return 2;
    }
  }
  fprintf(stderr, "inspectd: unknown command '%s'\n\n", argv[1]);
  print_usage(stderr);
  return 2;
}
