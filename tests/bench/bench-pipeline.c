/* Benchmark of the whole capture-to-result path: a 640x480 `test` source
 * (videotestsrc) through the pipeline, the frame queue and N inspector
 * workers scoring with the default model scorer (PatchCore on the builtin
 * backbone, and on mobilenetv2_100 when INSP_SHARED_DIR holds its weights).
 * Models are trained here on a few synthetic good images.
 *
 * Two runs per configuration:
 *   - throughput: fps = 0 (the source goes as fast as the workers take
 *     frames), drop = never; frames per second of results, and latency,
 *     which then includes the time a frame waits in the queue;
 *   - latency: a live source at about 70 % of that throughput, drop = oldest,
 *     queue 2; capture-to-result latency p50/p99 without a standing queue.
 * Workers x 1 BLAS thread each (NOTES.md: one level of parallelism).
 * Prints numbers, never fails. */
#include <glib.h>
#include <gst/gst.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "insp-image.h"
#include "insp-model.h"
#include "insp-ops.h"
#include "insp-model-scorer.h"
#include "insp-pipeline.h"

typedef struct {
  GMutex lock;
  GArray *latency; /* double ms */
  gint64 first_us, last_us;
  guint warmup;
  guint seen;
} Acc;

static void
on_result(InspPipeline *p, const InspResult *r, gpointer data)
{
  Acc *a = data;
  g_mutex_lock(&a->lock);
  a->seen++;
  if (a->seen > a->warmup) {
    if (a->first_us == 0)
      a->first_us = r->done_mono_us;
    a->last_us = r->done_mono_us;
    if (a->seen > a->warmup + 1)
      g_array_append_val(a->latency, r->latency_ms);
  }
  g_mutex_unlock(&a->lock);
}

static int
cmp_double(const void *x, const void *y)
{
  double a = *(const double *)x, b = *(const double *)y;
  return a < b ? -1 : a > b;
}

static double
quantile(GArray *v, double q)
{
  if (v->len == 0)
    return NAN;
  qsort(v->data, v->len, sizeof(double), cmp_double);
  guint i = (guint)floor(q * (v->len - 1) + 0.5);
  return g_array_index(v, double, i);
}

/* Runs for @seconds after a warm-up; returns results per second. */
static double
run(InspScorer *scorer, guint workers, double fps, InspDropPolicy drop, double seconds, double *p50,
    double *p99, guint64 *dropped)
{
  InspCaptureOptions opt;
  insp_capture_options_init(&opt);
  opt.source = "test";
  opt.width = 640;
  opt.height = 480;
  opt.fps = fps;
  opt.drop = drop;
  opt.queue_size = 2;
  opt.workers = workers;
  Acc a = {0};
  g_mutex_init(&a.lock);
  a.latency = g_array_new(FALSE, FALSE, sizeof(double));
  a.warmup = 3 * workers;
  InspPipelineCallbacks cb = {on_result, NULL, NULL, &a, NULL};
  g_autoptr(GError) err = NULL;
  InspPipeline *p = insp_pipeline_new(&opt, scorer, &cb, &err);
  if (p == NULL || !insp_pipeline_start(p, &err)) {
    printf("  cannot run: %s\n", err ? err->message : "?");
    insp_pipeline_free(p);
    return 0;
  }
  g_usleep((gulong)(seconds * G_USEC_PER_SEC));
  InspPipelineStats st;
  insp_pipeline_get_stats(p, &st);
  insp_pipeline_free(p);
  g_mutex_lock(&a.lock);
  double rate = 0;
  if (a.latency->len > 0 && a.last_us > a.first_us)
    rate = (double)a.latency->len * G_USEC_PER_SEC / (double)(a.last_us - a.first_us);
  *p50 = quantile(a.latency, 0.5);
  *p99 = quantile(a.latency, 0.99);
  *dropped = st.frames_dropped;
  g_mutex_unlock(&a.lock);
  g_array_unref(a.latency);
  g_mutex_clear(&a.lock);
  return rate;
}

static InspImage *
synth_good(int index, gpointer data, GError **error)
{
  /* A textured "part": the same pattern with a small shift and noise. */
  GRand *rng = g_rand_new_with_seed((guint32)index + 7);
  InspImage *img = insp_image_new(320, 240, 3);
  for (int y = 0; y < img->height; y++)
    for (int x = 0; x < img->width; x++) {
      int v = ((x + index) / 16 + y / 16) % 2 ? 170 : 80;
      for (int c = 0; c < 3; c++)
        img->data[y * img->stride + x * 3 + c] =
            (guint8)CLAMP(v + c * 10 + g_rand_int_range(rng, -8, 9), 0, 255);
    }
  g_rand_free(rng);
  return img;
}

static void
bench_model(const char *label, const char *backbone)
{
  InspTrainOptions topt;
  insp_train_options_init(&topt);
  topt.backbone = backbone;
  topt.detector = INSP_DETECTOR_PATCHCORE;
  topt.coreset_fraction = 0.1;
  topt.input_size = 224; /* the numbers in the README are at 224 px */
  g_autoptr(GError) err = NULL;
  gint64 t0 = g_get_monotonic_time();
  g_autoptr(InspModel) model = insp_model_train(&topt, 12, synth_good, NULL, NULL, NULL, &err);
  if (model == NULL) {
    printf("%s: cannot train: %s\n", label, err->message);
    return;
  }
  printf("%s: trained on 12 synthetic images in %.1f s (%s, input %d)\n", label,
         (double)(g_get_monotonic_time() - t0) / 1e6, insp_model_get_id(model),
         insp_model_get_input_size(model));
  InspInspectParams params = {0.5f, 0.5f, 16, FALSE, {0, 0, 0, 0}};
  g_autoptr(InspScorer) scorer = insp_model_scorer_new(model, &params);
  for (guint workers = 1; workers <= 2; workers++) {
    double p50, p99;
    guint64 dropped;
    double rate = run(scorer, workers, 0, INSP_DROP_NEVER, 4.0, &p50, &p99, &dropped);
    printf("  %u worker%s  throughput %6.1f fps   latency p50 %7.1f ms  p99 %7.1f ms "
           "(fps=0, drop=never, queue 2: includes queueing)\n",
           workers, workers > 1 ? "s" : " ", rate, p50, p99);
    if (rate <= 0)
      continue;
    double live = MAX(1.0, floor(rate * 0.7));
    double r2 = run(scorer, workers, live, INSP_DROP_OLDEST, 4.0, &p50, &p99, &dropped);
    printf("  %u worker%s  live %4.0f fps -> %6.1f fps   latency p50 %7.1f ms  p99 %7.1f ms "
           "(drop=oldest, %" G_GUINT64_FORMAT " dropped)\n",
           workers, workers > 1 ? "s" : " ", live, r2, p50, p99, dropped);
  }
}

int
main(int argc, char **argv)
{
  gst_init(&argc, &argv);
  insp_ops_set_blas_threads(1);
  printf("bench-pipeline: 640x480 videotestsrc -> RGB -> queue -> workers -> in-order results\n");
  bench_model("patchcore/builtin", "builtin");
  const char *shared = g_getenv("INSP_SHARED_DIR");
  g_autofree char *mnv2 =
      shared ? g_build_filename(shared, "models", "mobilenetv2_100.safetensors", NULL) : NULL;
  if (mnv2 != NULL && g_file_test(mnv2, G_FILE_TEST_EXISTS))
    bench_model("patchcore/mobilenetv2_100", mnv2);
  else
    printf("patchcore/mobilenetv2_100: skipped (no "
           "INSP_SHARED_DIR/models/mobilenetv2_100.safetensors)\n");
  return 0;
}
