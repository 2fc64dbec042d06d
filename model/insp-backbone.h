/* CNN backbones: loaded from safetensors (checked name by name and shape by
 * shape), batch norm folded at load, immutable afterwards and shared by all
 * worker threads. Each worker runs forward passes with its own
 * InspBackboneScratch, so the hot path allocates nothing.
 *
 * Architectures: mobilenetv2_100 (timm names), resnet18/34/50,
 * wide_resnet50_2 (torchvision/timm names), and "builtin", a fixed filter bank
 * that needs no weights. */
#pragma once

#include <glib.h>
#include "insp-safetensors.h"

G_BEGIN_DECLS

#define INSP_BACKBONE_ERROR (insp_backbone_error_quark())
GQuark insp_backbone_error_quark(void);

typedef enum {
  INSP_BACKBONE_ERROR_UNKNOWN_ARCH, /* metadata names no architecture we know */
  INSP_BACKBONE_ERROR_WEIGHTS,      /* a weight is missing, misshapen or unexpected */
  INSP_BACKBONE_ERROR_INPUT,        /* input size out of range */
} InspBackboneError;

typedef struct _InspBackbone InspBackbone;
typedef struct _InspBackboneScratch InspBackboneScratch;

/* One stage output, CHW, owned by the scratch it came from; valid until the
 * next forward pass with that scratch. */
typedef struct {
  const char *name; /* "blocks.2", "layer3", ... */
  int channels;
  int height;
  int width;
  int stride; /* total stride from the input */
  const float *data;
} InspFeatureMap;

/* @path_or_builtin: a safetensors file (architecture from its metadata
 * "architecture", or guessed from tensor names), or the string "builtin". */
InspBackbone *insp_backbone_new_from_file(const char *path_or_builtin, GError **error);
/* Loads the tensors under @prefix ("" or e.g. "backbone.") of @st, with the
 * metadata keys under the same prefix; @arch NULL = from metadata. */
InspBackbone *insp_backbone_new_from_safetensors(InspSafetensors *st, const char *prefix,
                                                 const char *arch, GError **error);
InspBackbone *insp_backbone_new_builtin(void);
InspBackbone *insp_backbone_ref(InspBackbone *bb);
void insp_backbone_unref(InspBackbone *bb);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspBackbone, insp_backbone_unref)

/* Writes the weights (as loaded, unfolded, F32) and metadata under @prefix so
 * that insp_backbone_new_from_safetensors(st, prefix, NULL) restores it. */
void insp_backbone_write(const InspBackbone *bb, InspSafetensorsWriter *w, const char *prefix);

/* A copy of @bb that runs it up to stage @last (one of its stages) and no
 * further: the later layers and stages, and the weights as loaded, left out
 * (insp_backbone_write refuses it). For training, which needs the network
 * for the features and the weights as loaded only to write the model:
 * mobilenetv2 to blocks.4 holds 2.1 of the 17.6 MB. The caller owns it. */
InspBackbone *insp_backbone_new_forward_copy(const InspBackbone *bb, const char *last);
/* TRUE when @a and @b compute the same values up to stage @last (a stage of
 * both): same architecture, padding, normalisation, layers, stages and
 * folded weights, bit for bit. */
gboolean insp_backbone_equal_to_stage(const InspBackbone *a, const InspBackbone *b,
                                      const char *last);

const char *insp_backbone_get_arch(const InspBackbone *bb);
int insp_backbone_get_input_size(const InspBackbone *bb); /* default square input, e.g. 224 */
void insp_backbone_get_normalisation(const InspBackbone *bb, float mean[3], float std[3]);
/* All stage names in forward order (NULL-terminated, owned by @bb). */
const char *const *insp_backbone_get_stage_names(const InspBackbone *bb);
/* Channels and nominal total stride of stage @name without running the
 * network; FALSE (outputs untouched) when @bb has no such stage. */
gboolean insp_backbone_get_stage_info(const InspBackbone *bb, const char *name, int *channels,
                                      int *stride);
/* The two stages PatchCore/PaDiM use by default (stride 8 and 16). */
void insp_backbone_get_default_stages(const InspBackbone *bb, const char **fine,
                                      const char **coarse);

/* Scratch for inputs of @height x @width (per worker). */
InspBackboneScratch *insp_backbone_scratch_new(const InspBackbone *bb, int height, int width,
                                               GError **error);
/* Scratch that keeps only the outputs of @stages (NULL-terminated names,
 * each one of @bb's) and holds the layers up to the last of them: a forward
 * with it runs to one of those stages at most and gives the other stages'
 * maps NULL data. Smaller: at 320 px mobilenetv2 for blocks.2 + blocks.4
 * needs 7.7 MB, a whole scratch 10.4 MB. */
InspBackboneScratch *insp_backbone_scratch_new_for_stages(const InspBackbone *bb, int height,
                                                          int width, const char *const *stages,
                                                          GError **error);
void insp_backbone_scratch_free(InspBackboneScratch *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspBackboneScratch, insp_backbone_scratch_free)

/* Runs @input [3,height,width] (normalised) up to and including stage @last
 * (NULL = all stages). Fills @out[i] for every stage up to @last in order and
 * returns how many; @out holds at least as many entries as stage names. */
int insp_backbone_forward(const InspBackbone *bb, InspBackboneScratch *s, const float *input,
                          const char *last, InspFeatureMap *out);

/* Whether backbones built now run their 1x1 stride-1 convs on the matrix
 * unit (insp_ops_conv1x1_mx_part): the CPU has AMX-BF16 and INSP_BACKBONE
 * is not "fp32"; and that in a few words, for --version and the journal. */
gboolean insp_backbone_uses_mx(void);
const char *insp_backbone_describe_kernels(void);

G_END_DECLS
