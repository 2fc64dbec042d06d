/* backbone-resnet: torchvision/timm ResNets (v1.5: the stride sits on the 3x3
 * conv of a bottleneck) in their tensor names: conv1, bn1, layerL.B.conv1..3,
 * bn1..3, layerL.B.downsample.0 (1x1 conv) / .1 (BN); fc is accepted and
 * ignored. BasicBlock for resnet18/34, Bottleneck for resnet50/101 and the
 * wide variants (bottleneck width doubled). Stages: stem (after the max pool,
 * stride 4), layer1 ... layer4; defaults layer2 (stride 8) and layer3
 * (stride 16). Called only while a backbone is being built (one thread). */
#include "insp-backbone-private.h"

typedef struct {
  const char *name;
  gboolean bottleneck;
  int width_factor; /* bottleneck width = planes * factor */
  int blocks[4];
} ResnetSpec;

static const ResnetSpec specs[] = {
    {"resnet18", FALSE, 1, {2, 2, 2, 2}},       {"resnet34", FALSE, 1, {3, 4, 6, 3}},
    {"resnet50", TRUE, 1, {3, 4, 6, 3}},        {"resnet101", TRUE, 1, {3, 4, 23, 3}},
    {"wide_resnet50_2", TRUE, 2, {3, 4, 6, 3}}, {"wide_resnet101_2", TRUE, 2, {3, 4, 23, 3}},
};

static const ResnetSpec *
find_spec(const char *arch)
{
  for (guint i = 0; i < G_N_ELEMENTS(specs); i++)
    if (g_str_equal(specs[i].name, arch))
      return &specs[i];
  return NULL;
}

gboolean
insp_bb_resnet_known(const char *arch)
{
  return find_spec(arch) != NULL;
}

const char *
insp_bb_resnet_guess(InspBbBuilder *b)
{
  const InspTensorInfo *c1 = insp_bb_info(b, "layer1.0.conv1.weight");
  int n3 = 0;

  if (c1 == NULL || c1->ndim != 4)
    return NULL;
  while (n3 < 64) {
    g_autofree char *n = g_strdup_printf("layer3.%d.conv1.weight", n3);
    if (!insp_bb_has(b, n))
      break;
    n3++;
  }
  if (!insp_bb_has(b, "layer1.0.conv3.weight"))
    return n3 >= 6 ? "resnet34" : "resnet18";
  if (c1->shape[0] == 128)
    return n3 >= 23 ? "wide_resnet101_2" : "wide_resnet50_2";
  return n3 >= 23 ? "resnet101" : "resnet50";
}

gboolean
insp_bb_build_resnet(InspBbBuilder *b, const char *arch)
{
  const ResnetSpec *sp = find_spec(arch);
  int v, inplanes = 64, total_stride = 4;

  g_return_val_if_fail(sp != NULL, FALSE);

  v = insp_bb_conv_bn(b, 0, "conv1", "bn1", 3, 64, 7, 2, 3, INSP_ACT_RELU, -1);
  v = insp_bb_maxpool(b, v, 64, 3, 2, 1);
  insp_bb_stage(b, "stem", v, 4);

  for (int L = 0; L < 4; L++) {
    int planes = 64 << L;
    int out = sp->bottleneck ? planes * 4 : planes;

    for (int i = 0; i < sp->blocks[L]; i++) {
      int stride = i == 0 && L > 0 ? 2 : 1;
      int identity = v;
      g_autofree char *p = g_strdup_printf("layer%d.%d", L + 1, i);
      g_autofree char *c1 = g_strconcat(p, ".conv1", NULL);
      g_autofree char *c2 = g_strconcat(p, ".conv2", NULL);
      g_autofree char *c3 = g_strconcat(p, ".conv3", NULL);
      g_autofree char *b1 = g_strconcat(p, ".bn1", NULL);
      g_autofree char *b2 = g_strconcat(p, ".bn2", NULL);
      g_autofree char *b3 = g_strconcat(p, ".bn3", NULL);

      if (stride != 1 || inplanes != out) {
        g_autofree char *d0 = g_strconcat(p, ".downsample.0", NULL);
        g_autofree char *d1 = g_strconcat(p, ".downsample.1", NULL);
        identity = insp_bb_conv_bn(b, v, d0, d1, inplanes, out, 1, stride, 0, INSP_ACT_NONE, -1);
      }
      if (sp->bottleneck) {
        int width = planes * sp->width_factor;
        int t = insp_bb_conv_bn(b, v, c1, b1, inplanes, width, 1, 1, 0, INSP_ACT_RELU, -1);
        t = insp_bb_conv_bn(b, t, c2, b2, width, width, 3, stride, 1, INSP_ACT_RELU, -1);
        v = insp_bb_conv_bn(b, t, c3, b3, width, out, 1, 1, 0, INSP_ACT_RELU, identity);
      } else {
        int t = insp_bb_conv_bn(b, v, c1, b1, inplanes, planes, 3, stride, 1, INSP_ACT_RELU, -1);
        v = insp_bb_conv_bn(b, t, c2, b2, planes, planes, 3, 1, 1, INSP_ACT_RELU, identity);
      }
      inplanes = out;
    }
    if (L > 0)
      total_stride *= 2;
    g_autofree char *name = g_strdup_printf("layer%d", L + 1);
    insp_bb_stage(b, name, v, total_stride);
  }
  insp_bb_ignore(b, "fc.weight");
  insp_bb_ignore(b, "fc.bias");

  b->bb->fine = g_strdup("layer2");
  b->bb->coarse = g_strdup("layer3");
  return b->error == NULL;
}
