/* Private to the backbone files (insp-backbone.c, backbone-*.c): a backbone is
 * a straight list of layers over numbered values (value 0 = the input), with
 * named stages pointing at values. The architecture files describe their
 * network with the builder below; insp-backbone.c loads, folds, plans the
 * scratch and runs it. */
#pragma once

#include "insp-backbone.h"
#include "insp-ops.h"

G_BEGIN_DECLS

typedef enum {
  INSP_BB_CONV,    /* conv2d (groups 1) + folded BN + activation */
  INSP_BB_DW3,     /* depthwise 3x3 + folded BN + activation */
  INSP_BB_MAXPOOL, /* max pool k, stride, symmetric pad */
} InspBbKind;

typedef struct {
  InspBbKind kind;
  int src;                       /* value read */
  int dst;                       /* value written (= layer index + 1) */
  int residual;                  /* value added before the activation, or -1 */
  int cin, cout, k, stride, pad; /* pad: symmetric padding (TF SAME computes its own) */
  InspActivation act;
  gsize w_off, b_off;    /* folded weights and bias in the arena */
  gboolean has_winograd; /* 3x3 stride 1 with enough channels: u_off valid */
  gsize u_off;           /* Winograd-transformed folded weights [16,cout,cin] */
  guint16 *mx;           /* 1x1 stride 1 on the matrix unit: packed folded weights, or NULL */
} InspBbLayer;

typedef struct {
  char *name;
  int value;
  int stride;
} InspBbStage;

/* A weight tensor as it was loaded, before folding (for insp_backbone_write). */
typedef struct {
  char *name; /* without prefix */
  int ndim;
  gint64 shape[4];
  float *data;
} InspBbTensor;

struct _InspBackbone {
  gint ref_count;
  char *arch;
  InspPadMode pad_mode;
  float bn_eps;
  int input_size;
  float mean[3], std[3];
  GArray *layers;     /* InspBbLayer */
  GArray *stages;     /* InspBbStage, forward order */
  char **stage_names; /* NULL-terminated */
  char *fine, *coarse;
  GArray *arena;         /* float: folded weights, read-only after construction */
  GPtrArray *tensors;    /* InspBbTensor *, originals for writing */
  gboolean forward_only; /* insp_backbone_new_forward_copy: no originals */
};

/* Construction state: the backbone being built, where weights come from, and
 * the first error (after which every call is a no-op returning -1). */
typedef struct {
  InspBackbone *bb;
  InspSafetensors *st; /* NULL for generated weights */
  const char *prefix;
  GHashTable *consumed; /* full tensor names fetched */
  GError *error;
} InspBbBuilder;

/* conv @conv_name.weight [cout,cin,k,k] (+ optional conv bias when @with_bias)
 * followed by BN @bn_name (NULL: none); returns the new value or -1. */
int insp_bb_conv_bn(InspBbBuilder *b, int src, const char *conv_name, const char *bn_name, int cin,
                    int cout, int k, int stride, int pad, InspActivation act, int residual);
/* depthwise @conv_name.weight [c,1,3,3] + BN @bn_name. */
int insp_bb_dw_bn(InspBbBuilder *b, int src, const char *conv_name, const char *bn_name, int c,
                  int stride, InspActivation act);
/* conv with given weights [cout,cin,k,k] and bias [cout] (generated; not written out). */
int insp_bb_conv_raw(InspBbBuilder *b, int src, int cin, int cout, int k, int stride, int pad,
                     InspActivation act, const float *weight, const float *bias);
int insp_bb_dw_raw(InspBbBuilder *b, int src, int c, int stride, InspActivation act,
                   const float *weight, const float *bias);
int insp_bb_maxpool(InspBbBuilder *b, int src, int c, int k, int stride, int pad);
void insp_bb_stage(InspBbBuilder *b, const char *name, int value, int stride);
/* Marks an optional tensor (classifier) as expected when present. */
void insp_bb_ignore(InspBbBuilder *b, const char *name);
/* Fetches an F32 tensor of exact shape (marking it consumed); NULL + error on failure. */
const float *insp_bb_fetch(InspBbBuilder *b, const char *name, int ndim, const gint64 *shape);
gboolean insp_bb_has(InspBbBuilder *b, const char *name);
/* Shape of an existing tensor, or NULL. */
const InspTensorInfo *insp_bb_info(InspBbBuilder *b, const char *name);

/* Multiply-adds x 2 of the conv and depthwise layers run by a forward up to
 * stage @last (NULL: all) on a @height x @width input; 0 if the input is too
 * small. For benchmarks. */
double insp_bb_count_flops(const InspBackbone *bb, int height, int width, const char *last);

/* Architecture files. */
gboolean insp_bb_build_mobilenetv2(InspBbBuilder *b);
gboolean insp_bb_build_resnet(InspBbBuilder *b, const char *arch);
gboolean insp_bb_build_builtin(InspBbBuilder *b);
/* Written as "builtin_version" with a builtin backbone and required equal at
 * load: bump it whenever the generated filters change, so that a model
 * trained on other filters is refused instead of scoring garbage. */
#define INSP_BB_BUILTIN_VERSION "2"
/* resnet18/34/50/101, wide_resnet50_2/101_2 */
gboolean insp_bb_resnet_known(const char *arch);
/* Architecture guessed from the tensor names under the builder's prefix, or NULL. */
const char *insp_bb_resnet_guess(InspBbBuilder *b);

G_END_DECLS
