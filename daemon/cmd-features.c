/* inspectd features: runs a backbone on one image and writes the input tensor
 * and every stage output, by stage name, to a safetensors file, so that an
 * exported backbone can be checked against PyTorch (same names and NCHW
 * layout as the reference files: `input` [1,3,N,N], `blocks.2` [1,C,H,W], ...).
 * The image goes through the same preprocessing as train, eval and the
 * daemon (bilinear resize of the whole image to N x N, the backbone's
 * mean/std). Main thread only; BLAS threads as OPENBLAS_NUM_THREADS says. */
#include <stdio.h>

#include "insp-backbone.h"
#include "insp-cli.h"
#include "insp-image.h"
#include "insp-safetensors.h"

static int
fail(const GError *error)
{
  fprintf(stderr, "inspectd features: %s\n", error->message);
  return 1;
}

int
insp_cmd_features(int argc, char **argv)
{
  int status, size = 0;
  g_autofree char *backbone = NULL, *image = NULL, *out = NULL;
  gboolean list = FALSE;
  const GOptionEntry entries[] = {
      {"backbone", 'b', 0, G_OPTION_ARG_FILENAME, &backbone,
       "Backbone weights (safetensors) or 'builtin'", "FILE|builtin"},
      {"image", 'i', 0, G_OPTION_ARG_FILENAME, &image, "Input image (PNG or JPEG)", "PNG"},
      {"out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "Output safetensors file", "FILE"},
      {"size", 's', 0, G_OPTION_ARG_INT, &size,
       "Square input size N (default: the backbone's input_size)", "N"},
      {"stages", 0, 0, G_OPTION_ARG_NONE, &list,
       "Print each stage's name, shape and stride (also without --image/--out)", NULL},
      G_OPTION_ENTRY_NULL,
  };
  g_autoptr(GError) error = NULL;

  if (!insp_cli_parse(&argc, &argv, "",
                      "Writes the preprocessed input ('input', [1,3,N,N]) and every stage\n"
                      "output of the backbone ([1,C,H,W] under the stage name, e.g. blocks.0 ...\n"
                      "blocks.6 for mobilenetv2_100) to a safetensors file, with the\n"
                      "architecture, input size and normalisation in its metadata.\n"
                      "Exit status 0 on success, 1 when the work failed, 2 on usage errors.",
                      entries, &status))
    return status;
  if (argc != 1 || backbone == NULL || (!list && (image == NULL || out == NULL)) ||
      (out != NULL && image == NULL)) {
    fprintf(stderr, "inspectd features: --backbone, --image and --out are required\n"
                    "Try 'inspectd features --help'.\n");
    return 2;
  }

  g_autoptr(InspBackbone) bb = insp_backbone_new_from_file(backbone, &error);
  if (bb == NULL)
    return fail(error);
  if (size == 0)
    size = insp_backbone_get_input_size(bb);
  g_autoptr(InspBackboneScratch) s = insp_backbone_scratch_new(bb, size, size, &error);
  if (s == NULL)
    return fail(error);

  float mean[3], std[3];
  g_autofree float *input = g_new(float, 3 * (gsize)size * size);
  insp_backbone_get_normalisation(bb, mean, std);
  if (image != NULL) {
    g_autoptr(InspImage) img = insp_image_load(image, 3, &error);
    if (img == NULL)
      return fail(error);
    insp_image_preprocess(img->data, img->width, img->height, img->stride, size, size, 1.0f, mean,
                          std, input);
  } else {
    for (gsize i = 0; i < 3 * (gsize)size * size; i++)
      input[i] = 0.0f;
  }

  const char *const *names = insp_backbone_get_stage_names(bb);
  guint n_names = g_strv_length((char **)names);
  g_autofree InspFeatureMap *fm = g_new0(InspFeatureMap, n_names);
  int n = insp_backbone_forward(bb, s, input, NULL, fm);

  if (list)
    for (int i = 0; i < n; i++)
      printf("%-10s [1,%d,%d,%d] stride %d\n", fm[i].name, fm[i].channels, fm[i].height,
             fm[i].width, fm[i].stride);
  if (out == NULL)
    return 0;

  g_autoptr(InspSafetensorsWriter) w = insp_safetensors_writer_new();
  gint64 in_shape[4] = {1, 3, size, size};
  insp_safetensors_writer_add_f32(w, "input", 4, in_shape, input);
  g_autoptr(GString) strides = g_string_new("{");
  for (int i = 0; i < n; i++) {
    gint64 shape[4] = {1, fm[i].channels, fm[i].height, fm[i].width};
    insp_safetensors_writer_add_f32(w, fm[i].name, 4, shape, fm[i].data);
    g_string_append_printf(strides, "%s\"%s\": %d", i ? ", " : "", fm[i].name, fm[i].stride);
  }
  g_string_append_c(strides, '}');

  g_autofree char *size_s = g_strdup_printf("%d", size);
  char buf[3][G_ASCII_DTOSTR_BUF_SIZE], sbuf[3][G_ASCII_DTOSTR_BUF_SIZE];
  for (int c = 0; c < 3; c++) {
    g_ascii_formatd(buf[c], sizeof(buf[c]), "%.9g", mean[c]);
    g_ascii_formatd(sbuf[c], sizeof(sbuf[c]), "%.9g", std[c]);
  }
  g_autofree char *mean_s = g_strdup_printf("[%s, %s, %s]", buf[0], buf[1], buf[2]);
  g_autofree char *std_s = g_strdup_printf("[%s, %s, %s]", sbuf[0], sbuf[1], sbuf[2]);
  insp_safetensors_writer_set_metadata(w, "architecture", insp_backbone_get_arch(bb));
  insp_safetensors_writer_set_metadata(w, "backbone", backbone);
  insp_safetensors_writer_set_metadata(w, "image", image);
  insp_safetensors_writer_set_metadata(w, "input_size", size_s);
  insp_safetensors_writer_set_metadata(w, "mean", mean_s);
  insp_safetensors_writer_set_metadata(w, "std", std_s);
  insp_safetensors_writer_set_metadata(w, "stage_strides", strides->str);
  insp_safetensors_writer_set_metadata(
      w, "input",
      "float32 NCHW [1,3,N,N]: bilinear resize (half-pixel, no antialias) of the "
      "whole image to N x N, then (pixel/255 - mean)/std");
  if (!insp_safetensors_writer_save(w, out, &error))
    return fail(error);
  if (!list)
    printf("%s: input [1,3,%d,%d] and %d stages of %s\n", out, size, size, n,
           insp_backbone_get_arch(bb));
  return 0;
}
