/* The demo line (see insp-demo.h). */
#define G_LOG_DOMAIN "inspectd"
#include "insp-demo.h"

#include <glib/gstdio.h>

#include "insp-image.h"
#include "insp-synth.h"

#define DEMO_TRAIN_PARTS 20
#define DEMO_LINE_PARTS 40

struct _InspDemo {
  int size;
  guint defect_every;
  double fps;
  char *dir;
};

static InspImage *
train_image(int index, gpointer user_data, GError **error)
{
  const int *size = user_data;
  InspImage *img = NULL;

  /* Seeds apart from the line's, so the model never saw a replayed part. */
  if (!insp_synth_part(insp_synth_line_seed(0x7ea1u, (guint64)index), INSP_SYNTH_GOOD, *size, *size,
                       &img, NULL, error))
    return NULL;
  return img;
}

InspModel *
insp_demo_train_model(int size, GError **error)
{
  InspTrainOptions topt;
  gint64 t0 = g_get_monotonic_time();

  if (size <= 0)
    size = 256;
  insp_train_options_init(&topt);
  topt.backbone = "builtin";
  topt.detector = INSP_DETECTOR_PATCHCORE;
  topt.seed = 1;
  /* the synthetic parts are 256 px with coarse defects: the builtin
   * backbone's 224 px and a 10 % bank, as measured for the demo */
  topt.input_size = 224;
  topt.coreset_fraction = 0.1;
  InspModel *m = insp_model_train(&topt, DEMO_TRAIN_PARTS, train_image, &size, NULL, NULL, error);
  if (m)
    g_info("demo model %s trained on %d good synthetic parts in %.1f s", insp_model_get_id(m),
           DEMO_TRAIN_PARTS, (double)(g_get_monotonic_time() - t0) / G_USEC_PER_SEC);
  return m;
}

/* Part NNNN-KIND.png, every Nth one defective. */
InspDemo *
insp_demo_new(int size, guint defect_every, double fps, GError **error)
{
  g_autoptr(InspDemo) demo = g_new0(InspDemo, 1);

  demo->size = size > 0 ? size : 256;
  demo->defect_every = defect_every;
  demo->fps = fps;
  demo->dir = g_dir_make_tmp("inspectd-demo-XXXXXX", error);
  if (demo->dir == NULL)
    return NULL;
  for (guint64 i = 0; i < DEMO_LINE_PARTS; i++) {
    g_autoptr(InspImage) img = NULL;
    InspSynthKind kind = insp_synth_line_kind(i, demo->defect_every);
    g_autofree char *name = g_strdup_printf("part%04" G_GUINT64_FORMAT "-%s.png", i + 1,
                                            insp_synth_kind_to_string(kind));
    g_autofree char *path = g_build_filename(demo->dir, name, NULL);

    if (!insp_synth_part(insp_synth_line_seed(0x11e5u, i), kind, demo->size, demo->size, &img, NULL,
                         error) ||
        !insp_image_save_png(img, path, error))
      return NULL;
  }
  return g_steal_pointer(&demo);
}

void
insp_demo_free(InspDemo *demo)
{
  if (demo == NULL)
    return;
  if (demo->dir != NULL) {
    g_autoptr(GDir) dir = g_dir_open(demo->dir, 0, NULL);
    const char *name;
    while (dir && (name = g_dir_read_name(dir))) {
      g_autofree char *p = g_build_filename(demo->dir, name, NULL);
      g_unlink(p);
    }
    g_rmdir(demo->dir);
    g_free(demo->dir);
  }
  g_free(demo);
}

static void
replace_string(char **field, const char *value)
{
  char *old = *field;
  *field = g_strdup(value);
  g_free(old);
}

void
insp_demo_fixup_config(InspDemo *demo, InspConfig *cfg)
{
  const char *state_env = g_getenv("STATE_DIRECTORY");
  g_autofree char *dir = state_env && *state_env
                             ? g_strdup(state_env)
                             : g_build_filename(g_get_user_state_dir(), "inspectd", NULL);
  g_autofree char *spool = g_build_filename(dir, "spool", NULL);
  g_autofree char *glob = g_build_filename(demo->dir, "*.png", NULL);

  g_return_if_fail(demo != NULL && cfg != NULL);
  replace_string(&cfg->station.state_dir, dir);
  replace_string(&cfg->spool.dir, spool);
  cfg->camera.source = INSP_CONFIG_CAMERA_SOURCE_FILES;
  replace_string(&cfg->camera.location, glob);
  cfg->camera.loop = TRUE;
  cfg->camera.fps = demo->fps;
  cfg->camera.drop = INSP_CONFIG_DROP_NEVER;
}
