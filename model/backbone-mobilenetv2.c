/* backbone-mobilenetv2: MobileNetV2 1.0 in timm's tensor names
 * (conv_stem/bn1, blocks.S.I.{conv_pw,conv_dw,conv_pwl,bn1..3}, conv_head/bn2).
 * Stages: stem, blocks.0 ... blocks.6 (outputs of each block group after the
 * residual add), and head when conv_head is present; the classifier is
 * accepted and ignored. Default stages blocks.2 (stride 8) and blocks.4
 * (stride 16). Called only while a backbone is being built (one thread). */
#include "insp-backbone-private.h"

typedef struct {
  int expand, out, n, stride;
} StageSpec;

/* (t, c, n, s) of the MobileNetV2 paper, width multiplier 1.0. */
static const StageSpec spec[7] = {
    {1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2},  {6, 64, 4, 2},
    {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1},
};

gboolean
insp_bb_build_mobilenetv2(InspBbBuilder *b)
{
  int v, cin = 32, total_stride = 2;

  v = insp_bb_conv_bn(b, 0, "conv_stem", "bn1", 3, 32, 3, 2, 1, INSP_ACT_RELU6, -1);
  insp_bb_stage(b, "stem", v, 2);

  for (int s = 0; s < 7; s++) {
    for (int i = 0; i < spec[s].n; i++) {
      int stride = i == 0 ? spec[s].stride : 1;
      int out = spec[s].out;
      int residual = stride == 1 && cin == out ? v : -1;
      g_autofree char *p = g_strdup_printf("blocks.%d.%d", s, i);
      g_autofree char *pw = g_strconcat(p, ".conv_pw", NULL);
      g_autofree char *dw = g_strconcat(p, ".conv_dw", NULL);
      g_autofree char *pwl = g_strconcat(p, ".conv_pwl", NULL);
      g_autofree char *bn1 = g_strconcat(p, ".bn1", NULL);
      g_autofree char *bn2 = g_strconcat(p, ".bn2", NULL);
      g_autofree char *bn3 = g_strconcat(p, ".bn3", NULL);

      if (spec[s].expand == 1) {
        /* Depthwise-separable block: dw -> bn1 -> relu6 -> pw -> bn2. */
        int t = insp_bb_dw_bn(b, v, dw, bn1, cin, stride, INSP_ACT_RELU6);
        v = insp_bb_conv_bn(b, t, pw, bn2, cin, out, 1, 1, 0, INSP_ACT_NONE, residual);
      } else {
        int mid = cin * spec[s].expand;
        int t = insp_bb_conv_bn(b, v, pw, bn1, cin, mid, 1, 1, 0, INSP_ACT_RELU6, -1);
        t = insp_bb_dw_bn(b, t, dw, bn2, mid, stride, INSP_ACT_RELU6);
        v = insp_bb_conv_bn(b, t, pwl, bn3, mid, out, 1, 1, 0, INSP_ACT_NONE, residual);
      }
      cin = out;
    }
    total_stride *= spec[s].stride;
    g_autofree char *name = g_strdup_printf("blocks.%d", s);
    insp_bb_stage(b, name, v, total_stride);
  }

  if (insp_bb_has(b, "conv_head.weight")) {
    const InspTensorInfo *info = insp_bb_info(b, "conv_head.weight");
    int head = info->ndim == 4 && info->shape[0] > 0 && info->shape[0] <= 65536
                   ? (int)info->shape[0]
                   : 1280;
    v = insp_bb_conv_bn(b, v, "conv_head", "bn2", cin, head, 1, 1, 0, INSP_ACT_RELU6, -1);
    insp_bb_stage(b, "head", v, total_stride);
  }
  insp_bb_ignore(b, "classifier.weight");
  insp_bb_ignore(b, "classifier.bias");

  b->bb->fine = g_strdup("blocks.2");
  b->bb->coarse = g_strdup("blocks.4");
  return b->error == NULL;
}
