/* inspectd eval: measures a model on a dataset in MVTec AD layout (see
 * model/insp-eval.h) and prints the table of metrics on stdout, optionally
 * also as JSON. Progress goes to stderr, one line per image (a single
 * rewritten line on a terminal). Runs on the main thread only. */
#include <stdio.h>
#include <unistd.h>

#include "insp-cli.h"
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
    fprintf(stderr, "\reval: %d/%d %-48s score %.3f  %.1f ms   ", done, total, path, score, ms);
    if (done == total)
      fputc('\n', stderr);
  } else {
    fprintf(stderr, "eval: %d/%d %s score %.4f %.2f ms\n", done, total, path, score, ms);
  }
  fflush(stderr);
}

int
insp_cmd_eval(int argc, char **argv)
{
  g_autofree char *model_path = NULL, *dataset = NULL, *json = NULL;
  int limit = 0, threads = 0, status;
  gboolean quiet = FALSE;
  const GOptionEntry entries[] = {
      {"model", 'm', 0, G_OPTION_ARG_FILENAME, &model_path, "model file (from inspectd train)",
       "FILE"},
      {"dataset", 'd', 0, G_OPTION_ARG_FILENAME, &dataset,
       "dataset folder: test/<type>/*.png, ground_truth/<type>/<stem>_mask.png", "DIR"},
      {"json", 'j', 0, G_OPTION_ARG_FILENAME, &json, "also write the metrics to FILE as JSON",
       "FILE"},
      {"limit", 'n', 0, G_OPTION_ARG_INT, &limit, "at most N images of each type (0: all)", "N"},
      {"threads", 't', 0, G_OPTION_ARG_INT, &threads,
       "OpenBLAS threads (0: leave as configured, e.g. OPENBLAS_NUM_THREADS)", "N"},
      {"quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "no progress lines", NULL},
      G_OPTION_ENTRY_NULL};

  if (!insp_cli_parse(&argc, &argv, "",
                      "Scores every image under DIR/test with the model and prints image AUROC,\n"
                      "pixel AUROC, AUPRO up to FPR 0.3, F1-max with its threshold, image AUROC\n"
                      "per defect type and latency (decode excluded).",
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
  if (limit < 0 || threads < 0) {
    fprintf(stderr, "inspectd eval: --limit and --threads take a count >= 0\n");
    return 2;
  }
  if (threads > 0)
    insp_ops_set_blas_threads(threads);

  g_autoptr(GError) error = NULL;
  g_autoptr(InspModel) model = insp_model_load(model_path, &error);
  if (!model) {
    fprintf(stderr, "inspectd eval: %s: %s\n", model_path, error->message);
    return 1;
  }
  Progress progress = {isatty(STDERR_FILENO)};
  g_autoptr(InspEvalReport) report =
      insp_eval_run(model, dataset, limit, quiet ? NULL : progress_cb, &progress, &error);
  if (!report) {
    fprintf(stderr, "inspectd eval: %s\n", error->message);
    return 1;
  }
  g_autofree char *table = insp_eval_report_format(report);
  fputs(table, stdout);
  fflush(stdout);
  if (json && !insp_eval_report_write_json(report, json, &error)) {
    fprintf(stderr, "inspectd eval: %s\n", error->message);
    return 1;
  }
  return 0;
}
