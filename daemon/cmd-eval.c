/* inspectd eval: measures a model on a dataset in MVTec AD layout (see
 * model/insp-eval.h) and prints the table of metrics and the threshold
 * summary on stdout, ending with the config lines of the recommended
 * threshold; optionally also the metrics as JSON and every image's score as
 * CSV (`--scores -`: the CSV on stdout, the table then on stderr). Progress
 * goes to stderr, one line per image (a single rewritten line on a
 * terminal). Runs on the main thread only. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "insp-cli.h"
#include "insp-conf.h"
#include "insp-eval.h"
#include "insp-model.h"
#include "insp-ops.h"

typedef struct {
  gboolean tty;
} Progress;

static void
progress_cb(int done, int total, const char *path, float score, double ms, gpointer user_data)
{
  Progress *p = user_data;
  if (p->tty) {
    g_autofree char *head = g_strdup_printf("eval: %d/%d ", done, total);
    g_autofree char *tail = g_strdup_printf(" score %.3f  %.1f ms", score, ms);
    /* The path gives way first, keeping its end (the file name); the
     * line is cut to the terminal's width after that. */
    glong room =
        insp_cli_term_columns(fileno(stderr)) - 1 - (glong)strlen(head) - (glong)strlen(tail);
    glong len = g_utf8_strlen(path, -1);
    g_autofree char *shown =
        len <= room || room < 8
            ? g_strdup(path)
            : g_strconcat("...", g_utf8_offset_to_pointer(path, len - room + 3), NULL);
    g_autofree char *line = g_strconcat(head, shown, tail, NULL);

    insp_cli_progress_line(stderr, line, done == total);
  } else {
    fprintf(stderr, "eval: %d/%d %s score %.4f %.2f ms\n", done, total, path, score, ms);
  }
  fflush(stderr);
}

/* The recommended threshold as config lines to paste, and whether a
 * threshold command could set it too (the default bounds). */
static void
append_config(GString *s, const InspEvalReport *r)
{
  const InspMetricsRecommendation *rec = &r->recommended;
  if (!isfinite(rec->threshold))
    return;
  g_autoptr(InspConfig) defaults = insp_config_new_default();
  const double lo = defaults->inspection.threshold_min, hi = defaults->inspection.threshold_max;
  g_string_append(s, "config for the recommended threshold (e.g. as "
                     "/etc/inspectd/inspectd.conf.d/50-threshold.conf):\n");
  g_string_append_printf(s, "[inspection]\nthreshold = %.*f\n", rec->decimals, rec->threshold);
  if (rec->threshold > 100.0)
    g_string_append(s, "(above 100, the highest [inspection] threshold a config takes: this "
                       "model's scores do not suit it)\n");
  else if (rec->threshold < lo || rec->threshold > hi)
    g_string_append_printf(s,
                           "(outside %g..%g, what a threshold command may set under the default "
                           "[inspection] threshold_min and threshold_max: set it in a file, or "
                           "widen them)\n",
                           lo, hi);
}

static gboolean
write_scores(const InspEvalReport *r, const char *path, GError **error)
{
  g_autofree char *csv = insp_eval_report_format_scores(r);
  if (strcmp(path, "-") == 0) {
    fputs(csv, stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
      g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_IO, "cannot write the scores to stdout");
      return FALSE;
    }
    return TRUE;
  }
  return g_file_set_contents(path, csv, -1, error);
}

int
insp_cmd_eval(int argc, char **argv)
{
  g_autofree char *model_path = NULL, *dataset = NULL, *json = NULL, *scores = NULL, *nn = NULL;
  InspNnSearch nn_search = INSP_NN_SEARCH_AUTO;
  int limit = 0, threads = 0, status;
  gboolean quiet = FALSE;
  const GOptionEntry entries[] = {
      {"model", 'm', 0, G_OPTION_ARG_FILENAME, &model_path, "model file (from inspectd train)",
       "FILE"},
      {"dataset", 'd', 0, G_OPTION_ARG_FILENAME, &dataset,
       "dataset folder: test/<type>/*.png, ground_truth/<type>/<stem>_mask.png", "DIR"},
      {"json", 'j', 0, G_OPTION_ARG_FILENAME, &json, "also write the metrics to FILE as JSON",
       "FILE"},
      {"scores", 's', 0, G_OPTION_ARG_FILENAME, &scores,
       "also write every image's path, type, label, score and raw score to FILE as CSV "
       "(-: to stdout, the table then goes to stderr)",
       "FILE.csv"},
      {"limit", 'n', 0, G_OPTION_ARG_INT, &limit, "at most N images of each type (0: all)", "N"},
      {"threads", 't', 0, G_OPTION_ARG_INT, &threads,
       "OpenBLAS threads (0: leave as configured, e.g. OPENBLAS_NUM_THREADS)", "N"},
      {"nn", 0, 0, G_OPTION_ARG_STRING, &nn,
       "PatchCore nearest-neighbour search: auto (default: exact on a CPU with AMX-BF16, else "
       "approximate for banks of 2048 rows or more), exact, "
       "approx, fp32 (the plain search)",
       "MODE"},
      {"quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "no progress lines", NULL},
      G_OPTION_ENTRY_NULL};

  if (!insp_cli_parse(&argc, &argv, "",
                      "Scores every image under DIR/test with the model and prints image AUROC,\n"
                      "pixel AUROC, AUPRO up to FPR 0.3, F1-max with its threshold, image AUROC\n"
                      "per defect type and latency (decode excluded); then, in normalised score\n"
                      "units (0.5 = the model's threshold), the highest good and lowest defect\n"
                      "score and the gap between them, recall and false rejects at 0.5, at the\n"
                      "F1-max threshold and at a recommended threshold, and the config lines\n"
                      "that set it.",
                      entries, &status))
    return status;
  if (argc > 1) {
    fprintf(stderr, "inspectd eval: unexpected argument '%s'\n", argv[1]);
    return 2;
  }
  if (!model_path || !dataset) {
    fprintf(stderr, "inspectd eval: --model and --dataset are required\n"
                    "Try 'inspectd eval --help'.\n");
    return 2;
  }
  if (json && strcmp(json, "-") == 0) {
    fprintf(stderr, "inspectd eval: --json takes a file; only --scores writes to stdout (-)\n");
    return 2;
  }
  if (limit < 0 || threads < 0) {
    fprintf(stderr, "inspectd eval: --limit and --threads take a count >= 0\n");
    return 2;
  }
  if (nn != NULL && !insp_nn_search_from_string(nn, &nn_search)) {
    fprintf(stderr, "inspectd eval: --nn takes auto, exact, approx or fp32, not '%s'\n", nn);
    return 2;
  }
  if (threads > 0)
    insp_ops_set_blas_threads(threads);

  g_autoptr(GError) error = NULL;
  g_autoptr(InspModel) model = insp_model_load(model_path, &error);
  if (!model) {
    /* The message names the file already. */
    fprintf(stderr, "inspectd eval: %s\n", error->message);
    return 1;
  }
  if (nn != NULL)
    insp_model_set_nn_search(model, nn_search);
  Progress progress = {isatty(STDERR_FILENO)};
  g_autoptr(InspEvalReport) report =
      insp_eval_run(model, dataset, limit, quiet ? NULL : progress_cb, &progress, &error);
  if (!report) {
    fprintf(stderr, "inspectd eval: %s\n", error->message);
    return 1;
  }
  g_autofree char *formatted = insp_eval_report_format(report);
  g_autoptr(GString) table = g_string_new(formatted);
  append_config(table, report);
  /* stdout carries the CSV alone with --scores - */
  FILE *table_out = scores && strcmp(scores, "-") == 0 ? stderr : stdout;
  fputs(table->str, table_out);
  fflush(table_out);
  if (json && !insp_eval_report_write_json(report, json, &error)) {
    fprintf(stderr, "inspectd eval: %s\n", error->message);
    return 1;
  }
  if (scores && !write_scores(report, scores, &error)) {
    fprintf(stderr, "inspectd eval: %s\n", error->message);
    return 1;
  }
  return 0;
}
