/* inspectd train: fits a PatchCore or PaDiM model on a folder of good images
 * (PNG/JPEG, any size, read in name order) and writes the model file
 * atomically. Progress goes to stderr: a bar with ETA on a terminal, plain
 * lines otherwise. Runs on the main thread only. */
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "insp-cli.h"
#include "insp-model.h"

typedef struct {
  GPtrArray *paths;
} Source;

typedef struct {
  gboolean tty;
  gint64 stage_start;
  char *stage;
  int last_decile;
} Progress;

static InspImage *
source_next(int index, gpointer user_data, GError **error)
{
  Source *src = user_data;

  return insp_image_load(g_ptr_array_index(src->paths, index), 3, error);
}

/* The first pass's sizes from the files' headers: no image decoded twice. */
static gboolean
source_size(int index, gpointer user_data, int *width, int *height, GError **error)
{
  Source *src = user_data;

  return insp_image_read_size(g_ptr_array_index(src->paths, index), width, height, error);
}

static void
progress_cb(const char *stage, int done, int total, gpointer user_data)
{
  Progress *p = user_data;
  gint64 now = g_get_monotonic_time();
  double el;

  if (p->stage == NULL || strcmp(p->stage, stage) != 0) {
    if (p->tty && p->stage != NULL)
      fputc('\n', stderr);
    g_free(p->stage);
    p->stage = g_strdup(stage);
    p->stage_start = now;
    p->last_decile = -1;
  }
  el = (double)(now - p->stage_start) / 1e6;
  if (p->tty) {
    double eta = done > 0 ? el * (total - done) / done : 0.0;
    g_autofree char *head = g_strdup_printf("%-10s [", stage);
    g_autofree char *tail =
        g_strdup_printf("] %d/%d  %.0fs elapsed, ETA %.0fs", done, total, el, eta);
    /* The bar takes what the terminal leaves, 30 at most, 5 at least (a
     * narrower terminal cuts the line's end instead). */
    int width = CLAMP(
        insp_cli_term_columns(fileno(stderr)) - 1 - (int)strlen(head) - (int)strlen(tail), 5, 30);
    int fill = total > 0 ? (int)((double)width * done / total) : 0;
    g_autoptr(GString) line = g_string_new(head);

    for (int i = 0; i < width; i++)
      g_string_append_c(line, i < fill ? '#' : '.');
    g_string_append(line, tail);
    insp_cli_progress_line(stderr, line->str, done == total);
  } else {
    int decile = total > 0 ? 10 * done / total : 10;

    if (decile != p->last_decile || done == total) {
      p->last_decile = decile;
      fprintf(stderr, "train: %s %d/%d (%.1fs)\n", stage, done, total, el);
    }
  }
  fflush(stderr);
}

int
insp_cmd_train(int argc, char **argv)
{
  g_autofree char *images = NULL, *out = NULL, *backbone = NULL, *detector = NULL, *stages = NULL,
                  *aspect = NULL, *image_score = NULL;
  double coreset = -1.0;
  int size = 0, channels = -1, dim = 0, patch = 0, tiles = 0, neighbours = G_MININT;
  double overlap = -1.0;
  gint64 seed = 0;
  int status;
  const GOptionEntry entries[] = {
      {"images", 'i', 0, G_OPTION_ARG_FILENAME, &images, "folder of good images (PNG/JPEG)", "DIR"},
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "model file to write", "MODEL"},
      {"backbone", 'b', 0, G_OPTION_ARG_FILENAME, &backbone,
       "backbone safetensors file, or builtin (default)", "FILE|builtin"},
      {"detector", 'd', 0, G_OPTION_ARG_STRING, &detector, "patchcore (default) or padim", "NAME"},
      {"coreset", 0, 0, G_OPTION_ARG_DOUBLE, &coreset,
       "PatchCore memory-bank fraction kept by coreset selection (default 0.01)", "F"},
      {"size", 0, 0, G_OPTION_ARG_INT, &size,
       "model input size in pixels, the longer side (default: 320 for PatchCore, the backbone's "
       "224 for PaDiM)",
       "N"},
      {"aspect", 0, 0, G_OPTION_ARG_STRING, &aspect,
       "native (default): the images' own aspect, the longer side --size; square: every image "
       "squashed to N x N",
       "native|square"},
      {"tile", 0, 0, G_OPTION_ARG_INT, &tiles,
       "cut every image into N overlapping tiles across its longer side (and as many across "
       "as that takes), each at --size, for small defects on large frames (default: 1, none)",
       "N"},
      {"overlap", 0, 0, G_OPTION_ARG_DOUBLE, &overlap,
       "with --tile: the fraction of a tile its neighbour shares, 0 to 0.5 (default 0.25)", "P"},
      {"channels", 0, 0, G_OPTION_ARG_INT, &channels,
       "PaDiM: random subset of N feature channels (default: all)", "N"},
      {"dim", 0, 0, G_OPTION_ARG_INT, &dim,
       "PatchCore: reduce features to N dims by channel averaging (default: off)", "N"},
      {"stages", 0, 0, G_OPTION_ARG_STRING, &stages,
       "the two backbone stages, finer first (default: mobilenetv2 blocks.2,blocks.4; "
       "resnets layer2,layer3; builtin s8,s16)",
       "FINE,COARSE"},
      {"patch", 0, 0, G_OPTION_ARG_INT, &patch,
       "PatchCore: neighbourhood averaged around each patch, odd (default 3)", "N"},
      {"image-score", 0, 0, G_OPTION_ARG_STRING, &image_score,
       "PatchCore: the image score from the patch scores: reweighted (default: the highest "
       "patch distance reweighted by its nearest bank row's neighbours, as anomalib), max (the "
       "highest patch distance), map-max (the highest value of the blurred anomaly map)",
       "RULE"},
      {"neighbours", 0, 0, G_OPTION_ARG_INT, &neighbours,
       "PatchCore, --image-score reweighted: the k bank rows of the reweighting, 2 to 64 "
       "(default 9)",
       "K"},
      {"seed", 0, 0, G_OPTION_ARG_INT64, &seed, "seed for hold-out, coreset, channels (default 0)",
       "N"},
      G_OPTION_ENTRY_NULL};
  InspTrainOptions opt;
  g_autoptr(GPtrArray) paths = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(InspModel) model = NULL;
  Source src;
  Progress prog = {0};
  gint64 t0;
  double secs;
  GStatBuf sb;
  InspModelInfo info;
  int in_w, in_h;

  if (!insp_cli_parse(&argc, &argv, "", "Fits a model on a folder of good images.", entries,
                      &status))
    return status;
  if (images == NULL || out == NULL) {
    fprintf(stderr, "inspectd train: --images DIR and --out MODEL are required\n");
    return 2;
  }
  insp_train_options_init(&opt);
  if (backbone != NULL)
    opt.backbone = backbone;
  if (detector != NULL && !insp_detector_kind_from_string(detector, &opt.detector)) {
    fprintf(stderr, "inspectd train: --detector must be %s, not '%s'\n", insp_detector_kind_list(),
            detector);
    return 2;
  }
  if (coreset != -1.0) {
    if (!(coreset > 0.0 && coreset <= 1.0)) {
      fprintf(stderr, "inspectd train: --coreset must be in (0, 1], got %g\n", coreset);
      return 2;
    }
    opt.coreset_fraction = coreset;
  }
  if (size != 0 && (size < 32 || size > 1024)) {
    fprintf(stderr, "inspectd train: --size must be in [32, 1024], got %d\n", size);
    return 2;
  }
  opt.input_size = size;
  if (aspect != NULL && strcmp(aspect, "native") == 0)
    opt.aspect = INSP_TRAIN_ASPECT_NATIVE;
  else if (aspect != NULL && strcmp(aspect, "square") == 0)
    opt.aspect = INSP_TRAIN_ASPECT_SQUARE;
  else if (aspect != NULL) {
    fprintf(stderr, "inspectd train: --aspect must be native or square, not '%s'\n", aspect);
    return 2;
  }
  if (tiles < 0 || tiles > INSP_MODEL_MAX_TILES) {
    fprintf(stderr, "inspectd train: --tile must be in [1, %d], got %d\n", INSP_MODEL_MAX_TILES,
            tiles);
    return 2;
  }
  opt.tiles = tiles;
  if (overlap != -1.0) {
    if (!(overlap >= 0.0 && overlap <= INSP_MODEL_MAX_TILE_OVERLAP)) {
      fprintf(stderr, "inspectd train: --overlap must be in [0, %g], got %g\n",
              INSP_MODEL_MAX_TILE_OVERLAP, overlap);
      return 2;
    }
    if (tiles <= 1) {
      fprintf(stderr, "inspectd train: --overlap goes with --tile N (N >= 2)\n");
      return 2;
    }
    opt.tile_overlap = overlap;
  }
  if (channels != -1) {
    if (channels < 1) {
      fprintf(stderr, "inspectd train: --channels must be at least 1, got %d\n", channels);
      return 2;
    }
    opt.padim_channels = channels;
  }
  if (dim < 0) {
    fprintf(stderr, "inspectd train: --dim must be positive, got %d\n", dim);
    return 2;
  }
  opt.patchcore_dim = dim;
  if (patch != 0 && (patch < 1 || patch > 9 || patch % 2 == 0)) {
    fprintf(stderr, "inspectd train: --patch must be an odd number in [1, 9], got %d\n", patch);
    return 2;
  }
  opt.patch_size = patch;
  if (image_score != NULL && !insp_image_score_rule_from_string(image_score, &opt.image_score)) {
    fprintf(stderr, "inspectd train: --image-score must be %s, not '%s'\n",
            insp_image_score_rule_list(), image_score);
    return 2;
  }
  if (neighbours != G_MININT) {
    if (neighbours < INSP_MODEL_NEIGHBOURS_MIN || neighbours > INSP_MODEL_NEIGHBOURS_MAX) {
      fprintf(stderr, "inspectd train: --neighbours must be in [%d, %d], got %d%s\n",
              INSP_MODEL_NEIGHBOURS_MIN, INSP_MODEL_NEIGHBOURS_MAX, neighbours,
              neighbours == 1 ? " (one neighbour reweights by nothing: that is --image-score max)"
                              : "");
      return 2;
    }
    if (opt.image_score != INSP_IMAGE_SCORE_DEFAULT &&
        opt.image_score != INSP_IMAGE_SCORE_REWEIGHTED) {
      fprintf(stderr, "inspectd train: --neighbours goes with --image-score reweighted, not %s\n",
              image_score);
      return 2;
    }
    opt.neighbours = neighbours;
  }
  if (opt.detector == INSP_DETECTOR_PADIM && ((opt.image_score != INSP_IMAGE_SCORE_DEFAULT &&
                                               opt.image_score != INSP_IMAGE_SCORE_MAP_MAX) ||
                                              opt.neighbours != 0)) {
    fprintf(stderr, "inspectd train: --image-score and --neighbours are PatchCore's: PaDiM's "
                    "image score is the maximum of its blurred map (map-max)\n");
    return 2;
  }
  opt.stages = stages;
  opt.seed = (guint64)seed;
  opt.size_of = source_size;

  paths = insp_image_list_folder(images, &error);
  if (paths == NULL) {
    fprintf(stderr, "inspectd train: %s\n", error->message);
    return 1;
  }
  if (paths->len == 0) {
    fprintf(stderr, "inspectd train: no *.png, *.jpg or *.jpeg files in %s\n", images);
    return 1;
  }
  src.paths = paths;
  prog.tty = isatty(fileno(stderr));
#ifdef __GLIBC__
  /* Every block of 1 MiB or more in a mapping of its own, returned to the
   * system when freed. glibc's threshold otherwise rises to the largest
   * block freed (the backbone as loaded, a decoded image), and training's
   * big buffers, one phase's after another's (the backbone scratch, each
   * coreset's arrays, the banks), come from the heap, where a freed one
   * stays resident under the next beside the features: 7 MB of bench-train's
   * peak (model/README.md, "Speed and memory"). */
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
  t0 = g_get_monotonic_time();
  model = insp_model_train(&opt, (int)paths->len, source_next, &src, progress_cb, &prog, &error);
  g_free(prog.stage);
  if (model == NULL) {
    fprintf(stderr, "inspectd train: %s\n", error->message);
    return 1;
  }
  if (!insp_model_save(model, out, &error)) {
    fprintf(stderr, "inspectd train: %s\n", error->message);
    return 1;
  }
  secs = (double)(g_get_monotonic_time() - t0) / 1e6;
  insp_model_get_info(model, &info);
  insp_model_get_input_shape(model, &in_w, &in_h);
  printf("model      %s\n", out);
  printf("id         %s\n", insp_model_get_id(model));
  printf("detector   %s on %s, input %dx%d px (%s), features %d x %d\n",
         insp_detector_kind_to_string(insp_model_get_detector(model)),
         insp_model_get_backbone_arch(model), in_w, in_h,
         opt.aspect == INSP_TRAIN_ASPECT_SQUARE ? "square" : "the images' aspect", info.n_patches,
         info.feature_dim);
  printf("images     %d (%d held out for score normalisation, then added back)\n",
         info.train_images, info.held_out_images);
  if (insp_model_get_tiles(model, NULL) > 1) {
    double ov;
    int nt = insp_model_get_tiles(model, &ov);

    printf("tiles      %d across the longer side of each image, overlap %.2f, every tile at "
           "%dx%d (%d tiles from %d images); scoring tiles every frame the same way\n",
           nt, ov, in_w, in_h, info.train_units, info.train_images);
  }
  if (info.aspect_differ > 0)
    printf("aspect     %d of %d images differ from the median aspect by more than %.0f %%: they "
           "are stretched to %dx%d\n",
           info.aspect_differ, info.train_images, 100 * INSP_MODEL_ASPECT_TOLERANCE, in_w, in_h);
  {
    g_autofree char *state = insp_model_describe(model);
    printf("%s\n", state);
  }
  switch (info.image_score) {
  case INSP_IMAGE_SCORE_REWEIGHTED:
    printf("score      reweighted, k = %d: the highest patch distance x (1 - softmax(d)[0]), d "
           "its distances to its nearest bank row and that row's %d nearest (anomalib)\n",
           info.neighbours, info.neighbours - 1);
    break;
  case INSP_IMAGE_SCORE_MAX:
    printf("score      max: the highest patch distance, not reweighted\n");
    break;
  case INSP_IMAGE_SCORE_MAP_MAX:
  case INSP_IMAGE_SCORE_DEFAULT:
    printf("score      map-max: the highest value of the blurred anomaly map\n");
    break;
  }
  /* the rule, and examples computed by the model's own normalisation */
  printf("normalise  score = 0.5 x raw / threshold (not clamped: 0 -> 0)\n");
  printf("           image: threshold %.4g: raw %.4g -> %.3g, %.4g -> %.3g; held-out good median "
         "%.4g -> %.4f\n",
         info.image_threshold, info.image_threshold,
         insp_model_normalise_image_score(model, info.image_threshold), 2 * info.image_threshold,
         insp_model_normalise_image_score(model, 2 * info.image_threshold), info.image_base,
         insp_model_normalise_image_score(model, info.image_base));
  printf("           map:   threshold %.4g: raw %.4g -> %.3g, %.4g -> %.3g; held-out good median "
         "map maximum %.4g -> %.4f\n",
         info.pixel_threshold, info.pixel_threshold,
         (double)insp_model_normalise_map_value(model, (float)info.pixel_threshold),
         2 * info.pixel_threshold,
         (double)insp_model_normalise_map_value(model, (float)(2 * info.pixel_threshold)),
         info.pixel_base, (double)insp_model_normalise_map_value(model, (float)info.pixel_base));
  if (g_stat(out, &sb) == 0)
    printf("size       %.1f MB\n", (double)sb.st_size / 1e6);
  printf("time       %.1f s\n", secs);
  return 0;
}
