/* insp-backbone: loading, checking, folding and running CNN backbones.
 *
 * A backbone is a straight list of layers (conv + folded BN, depthwise 3x3,
 * max pool) over numbered values: value 0 is the input, layer i writes value
 * i + 1, and a layer may add an earlier value (residual) before its
 * activation. The architecture files (backbone-*.c) describe their network
 * through the builder, which fetches every tensor with its exact expected
 * shape; after the build, any tensor under the prefix that nobody asked for
 * is rejected. Folded weights live in one arena.
 *
 * Invariants: after construction an InspBackbone is immutable (only its
 * reference count changes, atomically), so any number of threads may run
 * insp_backbone_forward() on it at once, each with its own scratch. A scratch
 * holds every activation buffer and im2col buffer for one input size,
 * planned at creation (buffers reused once their value is dead, the stage
 * outputs it is for kept); forward allocates nothing.
 *
 * Threads: when OpenBLAS is set to 2 or more threads (one worker with the
 * machine's cores), a forward runs each conv, depthwise and max-pool layer
 * over that many threads: the caller and the helpers of its scratch's team
 * (started on the first such forward, stopped by insp_backbone_scratch_free)
 * claim pieces of the layer (pixel ranges of a conv, channel ranges of the
 * others; a 1x1 expand and the depthwise that reads it run as one layer by
 * channel ranges, expanded into a buffer of the thread) and meet after each
 * layer. Every output value is computed the same way whoever computes it,
 * so the results are those of one thread, bit for bit (Winograd layers
 * excepted: they run whole on OpenBLAS's threads).
 * Helpers spin briefly between layers and sleep between forwards. */
#include "insp-backbone-private.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

/* The quark name is dashed; clang-format would split it into "a - b". */
/* clang-format off */
G_DEFINE_QUARK(insp-backbone-error-quark, insp_backbone_error)
/* clang-format on */

#define BB_MIN_INPUT 16
#define BB_MAX_INPUT 4096
#define ALIGN_FLOATS 16 /* 64 bytes */
/* Winograd F(2x2,3x3) beats im2col + sgemm here from 64 input channels and
 * 25 output tiles (measured on resnet shapes, one thread: 1.5-1.7x at 64ch
 * 56x56, 128ch 28x28 and 256ch 14x14; no gain at 512ch 7x7, 16 tiles). */
#define WINOGRAD_MIN_CIN 64
#define WINOGRAD_MIN_TILES 25
/* One image over several threads: at most this many (the caller and its
 * helpers), each layer cut into at most TEAM_CHUNKS pieces that the threads
 * claim one at a time (so a thread the kernel does not schedule only delays
 * the piece it holds), conv pieces at least TEAM_MIN_COLUMNS pixels. A
 * helper waits for the next layer spinning for TEAM_SPIN_US, then sleeps. */
#define TEAM_MAX 8
#define TEAM_CHUNKS 8
#define TEAM_MIN_COLUMNS 32
#define TEAM_SPIN_US 200
/* An expand 1x1 conv and the depthwise that alone reads it run as one
 * layer, by channel ranges of at most FUSE_MAX_FLOATS expanded values (in
 * multiples of 8, the conv kernel's channel tile): each range is expanded
 * into a buffer of its thread, which stays in L2 for the depthwise. */
#define FUSE_MAX_FLOATS (200 * 1024)

static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f};
static const float imagenet_std[3] = {0.229f, 0.224f, 0.225f};

/* ---- construction ------------------------------------------------------ */

static void
bb_tensor_free(gpointer p)
{
  InspBbTensor *t = p;
  g_free(t->name);
  g_free(t->data);
  g_free(t);
}

static InspBackbone *
bb_alloc(const char *arch)
{
  InspBackbone *bb = g_new0(InspBackbone, 1);

  bb->ref_count = 1;
  bb->arch = g_strdup(arch);
  bb->pad_mode = INSP_PAD_SYMMETRIC;
  bb->bn_eps = 1e-5f;
  bb->input_size = 224;
  memcpy(bb->mean, imagenet_mean, sizeof(bb->mean));
  memcpy(bb->std, imagenet_std, sizeof(bb->std));
  bb->layers = g_array_new(FALSE, TRUE, sizeof(InspBbLayer));
  bb->stages = g_array_new(FALSE, TRUE, sizeof(InspBbStage));
  bb->arena = g_array_new(FALSE, TRUE, sizeof(float));
  bb->tensors = g_ptr_array_new_with_free_func(bb_tensor_free);
  return bb;
}

static char *
full_name(InspBbBuilder *b, const char *name)
{
  return g_strconcat(b->prefix ? b->prefix : "", name, NULL);
}

gboolean
insp_bb_has(InspBbBuilder *b, const char *name)
{
  return insp_bb_info(b, name) != NULL;
}

const InspTensorInfo *
insp_bb_info(InspBbBuilder *b, const char *name)
{
  g_autofree char *full = NULL;

  if (b->st == NULL)
    return NULL;
  full = full_name(b, name);
  return insp_safetensors_lookup(b->st, full);
}

static void
shape_string(GString *s, int ndim, const gint64 *shape)
{
  g_string_append_c(s, '[');
  for (int i = 0; i < ndim; i++)
    g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? "," : "", shape[i]);
  g_string_append_c(s, ']');
}

const float *
insp_bb_fetch(InspBbBuilder *b, const char *name, int ndim, const gint64 *shape)
{
  g_autofree char *full = full_name(b, name);
  g_autoptr(GError) local = NULL;
  const float *data;

  if (b->error != NULL)
    return NULL;
  if (b->st == NULL) {
    g_autoptr(GString) s = g_string_new(NULL);
    shape_string(s, ndim, shape);
    g_set_error(&b->error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_WEIGHTS,
                "%s: tensor '%s' is missing, expected shape %s", b->bb->arch, full, s->str);
    return NULL;
  }
  data = insp_safetensors_get_f32(b->st, full, ndim, shape, &local);
  if (data == NULL) {
    g_autoptr(GString) s = g_string_new(NULL);
    shape_string(s, ndim, shape);
    /* The reader's message names the tensor and the expected shape; repeat
     * them in case a reader error did not (dtype). */
    if (strstr(local->message, s->str) != NULL)
      g_set_error(&b->error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_WEIGHTS, "%s weights: %s",
                  b->bb->arch, local->message);
    else
      g_set_error(&b->error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_WEIGHTS,
                  "%s weights: %s (tensor '%s', expected shape %s)", b->bb->arch, local->message,
                  full, s->str);
    return NULL;
  }
  g_hash_table_add(b->consumed, g_steal_pointer(&full));
  return data;
}

void
insp_bb_ignore(InspBbBuilder *b, const char *name)
{
  const InspTensorInfo *info = insp_bb_info(b, name);

  if (info == NULL)
    return;
  if (info->dtype == INSP_DTYPE_F32 || info->dtype == INSP_DTYPE_F16 ||
      info->dtype == INSP_DTYPE_BF16 || info->dtype == INSP_DTYPE_F64) {
    g_autofree char *full = full_name(b, name);
    (void)insp_safetensors_get_f32(b->st, full, 0, NULL, NULL); /* marks it used */
  }
  g_hash_table_add(b->consumed, full_name(b, name));
}

static void
keep_original(InspBbBuilder *b, const char *name, int ndim, const gint64 *shape, const float *data)
{
  InspBbTensor *t = g_new0(InspBbTensor, 1);
  gsize n = 1;

  t->name = g_strdup(name);
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) {
    t->shape[i] = shape[i];
    n *= (gsize)shape[i];
  }
  t->data = g_memdup2(data, n * sizeof(float));
  g_ptr_array_add(b->bb->tensors, t);
}

/* Fetches @name (exact shape) and keeps a copy for writing. */
static const float *
fetch_keep(InspBbBuilder *b, const char *name, int ndim, const gint64 *shape)
{
  const float *d = insp_bb_fetch(b, name, ndim, shape);
  if (d != NULL)
    keep_original(b, name, ndim, shape, d);
  return d;
}

#define MX_MIN_CIN                                                                                 \
  32 /* fewer input channels pad the tiles' 32: slower than fp32 (bench-backbone) */
/* 1x1 stride-1 convs on the matrix unit when the CPU has one, unless
 * INSP_BACKBONE=fp32 (read when a backbone is built). */
gboolean
insp_backbone_uses_mx(void)
{
  return insp_ops_mx_available() && g_strcmp0(g_getenv("INSP_BACKBONE"), "fp32") != 0;
}

const char *
insp_backbone_describe_kernels(void)
{
  if (insp_backbone_uses_mx())
    return "1x1 convs on the matrix unit (AMX-BF16, three bfloat16 products for fp32 accuracy)";
  return insp_ops_mx_available() ? "fp32 (INSP_BACKBONE=fp32)" : "fp32 (no AMX-BF16)";
}

/* The calling thread's buffer for a fused expand's input packed for the
 * matrix unit, read by every channel range (the team's too, while the
 * layer runs); grown on first use, so a steady forward allocates nothing. */
typedef struct {
  gsize n;
  guint16 *p;
} MxInput;

static void
mx_input_free(gpointer data)
{
  MxInput *in = data;

  g_aligned_free(in->p);
  g_free(in);
}

static GPrivate mx_input = G_PRIVATE_INIT(mx_input_free);

static const guint16 *
mx_packed_input(const float *x, int cin, gsize hw)
{
  MxInput *in = g_private_get(&mx_input);
  gsize n = insp_ops_mx_input_size(cin, hw);

  if (in == NULL) {
    in = g_new0(MxInput, 1);
    g_private_set(&mx_input, in);
  }
  if (in->n < n) {
    g_aligned_free(in->p);
    in->p = g_aligned_alloc(n, sizeof(guint16), 64);
    in->n = n;
  }
  insp_ops_mx_pack_input(x, cin, hw, in->p);
  return in->p;
}

static gsize
arena_append(InspBackbone *bb, const float *data, gsize n)
{
  gsize off = bb->arena->len;

  /* Keep every block 64-byte aligned relative to the arena start. */
  off = (off + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
  g_array_set_size(bb->arena, off + n);
  if (data != NULL)
    memcpy(&g_array_index(bb->arena, float, off), data, n * sizeof(float));
  return off;
}

static int
push_layer(InspBbBuilder *b, InspBbLayer *l)
{
  int nvalues = (int)b->bb->layers->len + 1;

  g_assert(l->src >= 0 && l->src < nvalues);
  g_assert(l->residual < nvalues);
  l->dst = nvalues;
  g_array_append_val(b->bb->layers, *l);
  return l->dst;
}

/* Folds BN @bn_name ([c] x 4) into the arena block at w_off/b_off. */
static gboolean
fold_bn(InspBbBuilder *b, const char *bn_name, int c, gsize per_out, gsize w_off, gsize b_off)
{
  gint64 shape[1] = {c};
  const float *p[4];
  static const char *const parts[4] = {"weight", "bias", "running_mean", "running_var"};

  for (int i = 0; i < 4; i++) {
    g_autofree char *n = g_strdup_printf("%s.%s", bn_name, parts[i]);
    p[i] = fetch_keep(b, n, 1, shape);
    if (p[i] == NULL)
      return FALSE;
  }
  g_autofree char *nbt = g_strdup_printf("%s.num_batches_tracked", bn_name);
  insp_bb_ignore(b, nbt);
  insp_ops_fold_batchnorm(&g_array_index(b->bb->arena, float, w_off),
                          &g_array_index(b->bb->arena, float, b_off), NULL, c, per_out, p[0], p[1],
                          p[2], p[3], b->bb->bn_eps);
  return TRUE;
}

/* Appends a conv or depthwise layer: its weights (@weight, or the tensor
 * @conv_name.weight of the file when @weight is NULL) and bias (@bias, or
 * zeros), BN @bn_name folded in when given, and the Winograd form of a wide
 * 3x3 stride-1 conv when @winograd. */
static int
add_conv(InspBbBuilder *b, InspBbKind kind, int src, int residual, int cin, int cout, int k,
         int stride, int pad, InspActivation act, const char *conv_name, const float *weight,
         const float *bias, const char *bn_name, gboolean winograd)
{
  gsize per_out = kind == INSP_BB_DW3 ? 9 : (gsize)cin * k * k;
  InspBbLayer l = {.kind = kind,
                   .src = src,
                   .residual = residual,
                   .cin = cin,
                   .cout = cout,
                   .k = k,
                   .stride = stride,
                   .pad = pad,
                   .act = act};

  if (b->error != NULL || src < 0)
    return -1;
  if (weight == NULL) {
    gint64 shape[4] = {cout, kind == INSP_BB_DW3 ? 1 : cin, k, k};
    g_autofree char *wname = g_strdup_printf("%s.weight", conv_name);

    weight = fetch_keep(b, wname, 4, shape);
    if (weight == NULL)
      return -1;
  }
  l.w_off = arena_append(b->bb, weight, cout * per_out);
  l.b_off = arena_append(b->bb, bias, cout);
  if (bn_name != NULL && !fold_bn(b, bn_name, cout, per_out, l.w_off, l.b_off))
    return -1;
  if (winograd && kind == INSP_BB_CONV && k == 3 && stride == 1 && cin >= WINOGRAD_MIN_CIN) {
    l.has_winograd = TRUE;
    l.u_off = arena_append(b->bb, NULL, insp_ops_winograd_weight_size(cin, cout));
    insp_ops_winograd_transform_weights(&g_array_index(b->bb->arena, float, l.w_off), cin, cout,
                                        &g_array_index(b->bb->arena, float, l.u_off));
  }
  if (kind == INSP_BB_CONV && k == 1 && stride == 1 && cin >= MX_MIN_CIN &&
      cin <= INSP_OPS_MX_MAX_CIN && insp_backbone_uses_mx()) {
    l.mx = g_aligned_alloc(insp_ops_mx_weights_size(cout, cin), sizeof(guint16), 64);
    insp_ops_mx_pack_weights(&g_array_index(b->bb->arena, float, l.w_off), cout, cin, l.mx);
  }
  return push_layer(b, &l);
}

int
insp_bb_conv_bn(InspBbBuilder *b, int src, const char *conv_name, const char *bn_name, int cin,
                int cout, int k, int stride, int pad, InspActivation act, int residual)
{
  return add_conv(b, INSP_BB_CONV, src, residual, cin, cout, k, stride, pad, act, conv_name, NULL,
                  NULL, bn_name, TRUE);
}

int
insp_bb_dw_bn(InspBbBuilder *b, int src, const char *conv_name, const char *bn_name, int c,
              int stride, InspActivation act)
{
  return add_conv(b, INSP_BB_DW3, src, -1, c, c, 3, stride, 1, act, conv_name, NULL, NULL, bn_name,
                  TRUE);
}

int
insp_bb_conv_raw(InspBbBuilder *b, int src, int cin, int cout, int k, int stride, int pad,
                 InspActivation act, const float *weight, const float *bias)
{
  return add_conv(b, INSP_BB_CONV, src, -1, cin, cout, k, stride, pad, act, NULL, weight, bias,
                  NULL, FALSE);
}

int
insp_bb_dw_raw(InspBbBuilder *b, int src, int c, int stride, InspActivation act,
               const float *weight, const float *bias)
{
  return add_conv(b, INSP_BB_DW3, src, -1, c, c, 3, stride, 1, act, NULL, weight, bias, NULL,
                  FALSE);
}

int
insp_bb_maxpool(InspBbBuilder *b, int src, int c, int k, int stride, int pad)
{
  InspBbLayer l = {.kind = INSP_BB_MAXPOOL,
                   .src = src,
                   .residual = -1,
                   .cin = c,
                   .cout = c,
                   .k = k,
                   .stride = stride,
                   .pad = pad,
                   .act = INSP_ACT_NONE};

  if (b->error != NULL || src < 0)
    return -1;
  return push_layer(b, &l);
}

void
insp_bb_stage(InspBbBuilder *b, const char *name, int value, int stride)
{
  InspBbStage s = {.name = g_strdup(name), .value = value, .stride = stride};

  if (b->error != NULL || value < 0) {
    g_free(s.name);
    return;
  }
  g_array_append_val(b->bb->stages, s);
}

/* ---- metadata ------------------------------------------------------------ */

static const char *
meta(InspSafetensors *st, const char *prefix, const char *key)
{
  g_autofree char *full = g_strconcat(prefix ? prefix : "", key, NULL);
  return st != NULL ? insp_safetensors_get_metadata(st, full) : NULL;
}

/* "[a, b, c]" (or "a,b,c") -> 3 floats. */
static gboolean
parse_triple(const char *s, float v[3])
{
  const char *p = s;
  int n = 0;

  while (*p == ' ' || *p == '[')
    p++;
  while (n < 3) {
    char *end;
    double d = g_ascii_strtod(p, &end);
    if (end == p || !isfinite(d))
      return FALSE;
    v[n++] = (float)d;
    p = end;
    while (*p == ' ')
      p++;
    if (n < 3) {
      if (*p != ',')
        return FALSE;
      p++;
    }
  }
  while (*p == ' ' || *p == ']')
    p++;
  return *p == '\0';
}

static char *
format_triple(const float v[3])
{
  char a[3][G_ASCII_DTOSTR_BUF_SIZE];

  for (int i = 0; i < 3; i++)
    g_ascii_formatd(a[i], sizeof(a[i]), "%.9g", v[i]);
  return g_strdup_printf("[%s, %s, %s]", a[0], a[1], a[2]);
}

static gboolean
read_metadata(InspBackbone *bb, InspSafetensors *st, const char *prefix, GError **error)
{
  const char *v;

  if ((v = meta(st, prefix, "padding")) != NULL) {
    if (g_str_equal(v, "tf_same") || g_str_equal(v, "same"))
      bb->pad_mode = INSP_PAD_TF_SAME;
    else if (g_str_equal(v, "symmetric") || g_str_equal(v, "torch"))
      bb->pad_mode = INSP_PAD_SYMMETRIC;
    else {
      g_set_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_WEIGHTS,
                  "metadata '%spadding' is '%s', expected 'tf_same' or 'symmetric'", prefix, v);
      return FALSE;
    }
  }
  if ((v = meta(st, prefix, "mean")) != NULL && !parse_triple(v, bb->mean)) {
    g_set_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_WEIGHTS,
                "metadata '%smean' is '%s', expected three numbers like [0.5, 0.5, 0.5]", prefix,
                v);
    return FALSE;
  }
  if ((v = meta(st, prefix, "std")) != NULL &&
      (!parse_triple(v, bb->std) || !(bb->std[0] > 0 && bb->std[1] > 0 && bb->std[2] > 0))) {
    g_set_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_WEIGHTS,
                "metadata '%sstd' is '%s', expected three positive numbers", prefix, v);
    return FALSE;
  }
  if ((v = meta(st, prefix, "input_size")) != NULL) {
    gint64 n;
    if (!g_ascii_string_to_signed(v, 10, BB_MIN_INPUT, BB_MAX_INPUT, &n, NULL)) {
      g_set_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_WEIGHTS,
                  "metadata '%sinput_size' is '%s', expected an integer in %d..%d", prefix, v,
                  BB_MIN_INPUT, BB_MAX_INPUT);
      return FALSE;
    }
    bb->input_size = (int)n;
  }
  if ((v = meta(st, prefix, "bn_eps")) != NULL) {
    char *end;
    double e = g_ascii_strtod(v, &end);
    if (*end != '\0' || !(e > 0 && e < 1)) {
      g_set_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_WEIGHTS,
                  "metadata '%sbn_eps' is '%s', expected a number in (0, 1)", prefix, v);
      return FALSE;
    }
    bb->bn_eps = (float)e;
  }
  return TRUE;
}

/* ---- finishing ------------------------------------------------------------ */

static void
finish(InspBackbone *bb)
{
  bb->stage_names = g_new0(char *, bb->stages->len + 1);
  for (guint i = 0; i < bb->stages->len; i++)
    bb->stage_names[i] = g_strdup(g_array_index(bb->stages, InspBbStage, i).name);
  if (bb->fine == NULL)
    bb->fine = g_strdup(bb->stage_names[0]);
  if (bb->coarse == NULL)
    bb->coarse = g_strdup(bb->stage_names[bb->stages->len - 1]);
}

/* Rejects tensors under the prefix that the architecture did not ask for
 * (num_batches_tracked counters are expected and ignored). */
static gboolean
check_unexpected(InspBbBuilder *b, GError **error)
{
  guint n = insp_safetensors_get_n_tensors(b->st);
  const char *prefix = b->prefix ? b->prefix : "";

  for (guint i = 0; i < n; i++) {
    const InspTensorInfo *info = insp_safetensors_get_info(b->st, i);
    if (!g_str_has_prefix(info->name, prefix))
      continue;
    if (g_hash_table_contains(b->consumed, info->name) ||
        g_str_has_suffix(info->name, ".num_batches_tracked"))
      continue;
    g_autoptr(GString) s = g_string_new(NULL);
    shape_string(s, info->ndim, info->shape);
    g_set_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_WEIGHTS,
                "%s weights: unexpected tensor '%s' with shape %s: not part of the "
                "architecture",
                b->bb->arch, info->name, s->str);
    return FALSE;
  }
  return TRUE;
}

static gboolean
known_arch(const char *arch)
{
  return g_str_equal(arch, "mobilenetv2_100") || g_str_equal(arch, "builtin") ||
         insp_bb_resnet_known(arch);
}

static const char *
guess_arch(InspBbBuilder *b)
{
  if (insp_bb_has(b, "conv_stem.weight"))
    return "mobilenetv2_100";
  return insp_bb_resnet_guess(b);
}

static gboolean
build(InspBbBuilder *b, const char *arch)
{
  if (g_str_equal(arch, "mobilenetv2_100"))
    return insp_bb_build_mobilenetv2(b);
  if (g_str_equal(arch, "builtin"))
    return insp_bb_build_builtin(b);
  return insp_bb_build_resnet(b, arch);
}

InspBackbone *
insp_backbone_new_from_safetensors(InspSafetensors *st, const char *prefix, const char *arch,
                                   GError **error)
{
  g_autoptr(InspBackbone) bb = NULL;
  InspBbBuilder b = {0};

  g_return_val_if_fail(st != NULL, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  if (prefix == NULL)
    prefix = "";
  b.st = st;
  b.prefix = prefix;
  if (arch == NULL)
    arch = meta(st, prefix, "architecture");
  if (arch == NULL) {
    arch = guess_arch(&b);
    if (arch == NULL) {
      g_set_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_UNKNOWN_ARCH,
                  "%s: no '%sarchitecture' metadata and the tensor names match no known "
                  "backbone (mobilenetv2_100, resnet18/34/50/101, wide_resnet50_2/101_2)",
                  insp_safetensors_get_path(st), prefix);
      return NULL;
    }
  }
  if (!known_arch(arch)) {
    g_set_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_UNKNOWN_ARCH,
                "%s: unknown backbone architecture '%s' (known: mobilenetv2_100, resnet18, "
                "resnet34, resnet50, resnet101, wide_resnet50_2, wide_resnet101_2, builtin)",
                insp_safetensors_get_path(st), arch);
    return NULL;
  }

  if (g_str_equal(arch, "builtin") && meta(st, prefix, "architecture") != NULL) {
    const char *v = meta(st, prefix, "builtin_version");
    if (v == NULL || !g_str_equal(v, INSP_BB_BUILTIN_VERSION)) {
      g_set_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_WEIGHTS,
                  "%s: builtin backbone version '%s', this build has version %s (different "
                  "filters): train the model again",
                  insp_safetensors_get_path(st), v != NULL ? v : "(none)", INSP_BB_BUILTIN_VERSION);
      return NULL;
    }
  }
  bb = bb_alloc(arch);
  if (!g_str_equal(arch, "builtin") && !read_metadata(bb, st, prefix, error))
    return NULL;
  b.bb = bb;
  b.consumed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  if (g_str_equal(arch, "builtin"))
    b.st = NULL; /* generated weights; any tensor under the prefix is unexpected */
  gboolean ok = build(&b, arch);
  b.st = st;
  if (!ok || b.error != NULL) {
    if (b.error != NULL && strstr(b.error->message, insp_safetensors_get_path(st)) != NULL)
      g_propagate_error(error, g_steal_pointer(&b.error));
    else if (b.error != NULL)
      g_propagate_prefixed_error(error, g_steal_pointer(&b.error),
                                 "%s: ", insp_safetensors_get_path(st));
    else
      g_set_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_WEIGHTS, "%s: could not build %s",
                  insp_safetensors_get_path(st), arch);
    g_hash_table_unref(b.consumed);
    return NULL;
  }
  ok = check_unexpected(&b, error);
  g_hash_table_unref(b.consumed);
  if (!ok) {
    g_prefix_error(error, "%s: ", insp_safetensors_get_path(st));
    return NULL;
  }
  finish(bb);
  g_debug("backbone %s: %u layers, %u stages, %" G_GSIZE_FORMAT " folded floats", bb->arch,
          bb->layers->len, bb->stages->len, (gsize)bb->arena->len);
  return g_steal_pointer(&bb);
}

InspBackbone *
insp_backbone_new_builtin(void)
{
  InspBackbone *bb = bb_alloc("builtin");
  InspBbBuilder b = {.bb = bb, .prefix = ""};

  b.consumed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  if (!insp_bb_build_builtin(&b) || b.error != NULL)
    g_error("builtin backbone failed to build: %s", b.error ? b.error->message : "?");
  g_hash_table_unref(b.consumed);
  finish(bb);
  return bb;
}

InspBackbone *
insp_backbone_new_from_file(const char *path_or_builtin, GError **error)
{
  g_autoptr(InspSafetensors) st = NULL;

  g_return_val_if_fail(path_or_builtin != NULL, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  if (g_str_equal(path_or_builtin, "builtin"))
    return insp_backbone_new_builtin();
  st = insp_safetensors_open(path_or_builtin, error);
  if (st == NULL)
    return NULL;
  return insp_backbone_new_from_safetensors(st, "", NULL, error);
}

InspBackbone *
insp_backbone_ref(InspBackbone *bb)
{
  g_return_val_if_fail(bb != NULL, NULL);
  g_atomic_int_inc(&bb->ref_count);
  return bb;
}

void
insp_backbone_unref(InspBackbone *bb)
{
  if (bb == NULL || !g_atomic_int_dec_and_test(&bb->ref_count))
    return;
  g_free(bb->arch);
  for (guint i = 0; i < bb->layers->len; i++)
    g_aligned_free(g_array_index(bb->layers, InspBbLayer, i).mx);
  g_array_unref(bb->layers);
  for (guint i = 0; i < bb->stages->len; i++)
    g_free(g_array_index(bb->stages, InspBbStage, i).name);
  g_array_unref(bb->stages);
  g_strfreev(bb->stage_names);
  g_free(bb->fine);
  g_free(bb->coarse);
  g_array_unref(bb->arena);
  g_ptr_array_unref(bb->tensors);
  g_free(bb);
}

/* The value stage @name of @bb points at, or -1. */
static int
stage_value(const InspBackbone *bb, const char *name)
{
  for (guint i = 0; i < bb->stages->len; i++) {
    const InspBbStage *st = &g_array_index(bb->stages, InspBbStage, i);

    if (g_str_equal(st->name, name))
      return st->value;
  }
  return -1;
}

/* Where layer @l's blocks in the arena end (0: it has none). */
static gsize
layer_arena_end(const InspBbLayer *l)
{
  gsize per_out = l->kind == INSP_BB_DW3 ? 9 : (gsize)l->cin * l->k * l->k;
  gsize end;

  if (l->kind == INSP_BB_MAXPOOL)
    return 0;
  end = MAX(l->w_off + per_out * l->cout, l->b_off + l->cout);
  if (l->has_winograd)
    end = MAX(end, l->u_off + insp_ops_winograd_weight_size(l->cin, l->cout));
  return end;
}

InspBackbone *
insp_backbone_new_forward_copy(const InspBackbone *bb, const char *last)
{
  InspBackbone *c;
  int last_value;
  gsize end = 0;

  g_return_val_if_fail(bb != NULL && last != NULL, NULL);
  last_value = stage_value(bb, last);
  g_return_val_if_fail(last_value >= 0, NULL);

  c = bb_alloc(bb->arch);
  c->pad_mode = bb->pad_mode;
  c->bn_eps = bb->bn_eps;
  c->input_size = bb->input_size;
  memcpy(c->mean, bb->mean, sizeof(c->mean));
  memcpy(c->std, bb->std, sizeof(c->std));
  c->forward_only = TRUE;
  for (int i = 0; i < last_value; i++) {
    const InspBbLayer *l = &g_array_index(bb->layers, InspBbLayer, i);
    InspBbLayer cl = *l;

    if (l->mx != NULL) { /* the copy owns its packed weights */
      gsize n = insp_ops_mx_weights_size(l->cout, l->cin);

      cl.mx = g_aligned_alloc(n, sizeof(guint16), 64);
      memcpy(cl.mx, l->mx, n * sizeof(guint16));
    }
    g_array_append_val(c->layers, cl);
    end = MAX(end, layer_arena_end(l));
  }
  for (guint i = 0; i < bb->stages->len; i++) {
    const InspBbStage *st = &g_array_index(bb->stages, InspBbStage, i);
    InspBbStage cs = {.name = g_strdup(st->name), .value = st->value, .stride = st->stride};

    if (st->value <= last_value)
      g_array_append_val(c->stages, cs);
    else
      g_free(cs.name);
  }
  g_array_unref(c->arena); /* one of the exact size */
  c->arena = g_array_sized_new(FALSE, FALSE, sizeof(float), (guint)MAX(end, 1));
  g_array_append_vals(c->arena, bb->arena->data, (guint)end);
  if (stage_value(c, bb->fine) >= 0)
    c->fine = g_strdup(bb->fine);
  if (stage_value(c, bb->coarse) >= 0)
    c->coarse = g_strdup(bb->coarse);
  finish(c);
  return c;
}

gboolean
insp_backbone_equal_to_stage(const InspBackbone *a, const InspBackbone *b, const char *last)
{
  int last_value;

  g_return_val_if_fail(a != NULL && b != NULL && last != NULL, FALSE);
  last_value = stage_value(a, last);
  if (last_value < 0 || stage_value(b, last) != last_value || !g_str_equal(a->arch, b->arch) ||
      a->pad_mode != b->pad_mode || memcmp(&a->bn_eps, &b->bn_eps, sizeof(float)) != 0 ||
      memcmp(a->mean, b->mean, sizeof(a->mean)) != 0 ||
      memcmp(a->std, b->std, sizeof(a->std)) != 0 || a->layers->len < (guint)last_value ||
      b->layers->len < (guint)last_value)
    return FALSE;
  for (guint i = 0; i < a->stages->len && i < b->stages->len; i++) {
    const InspBbStage *sa = &g_array_index(a->stages, InspBbStage, i);
    const InspBbStage *sb = &g_array_index(b->stages, InspBbStage, i);

    if (sa->value > last_value && sb->value > last_value)
      break;
    if (!g_str_equal(sa->name, sb->name) || sa->value != sb->value || sa->stride != sb->stride)
      return FALSE;
  }
  for (int i = 0; i < last_value; i++) {
    const InspBbLayer *la = &g_array_index(a->layers, InspBbLayer, i);
    const InspBbLayer *lb = &g_array_index(b->layers, InspBbLayer, i);
    const float *wa = (const float *)(const void *)a->arena->data;
    const float *wb = (const float *)(const void *)b->arena->data;
    gsize per_out = la->kind == INSP_BB_DW3 ? 9 : (gsize)la->cin * la->k * la->k;

    if (la->kind != lb->kind || la->src != lb->src || la->dst != lb->dst ||
        la->residual != lb->residual || la->cin != lb->cin || la->cout != lb->cout ||
        la->k != lb->k || la->stride != lb->stride || la->pad != lb->pad || la->act != lb->act ||
        la->has_winograd != lb->has_winograd)
      return FALSE;
    if (la->kind == INSP_BB_MAXPOOL)
      continue;
    if (memcmp(wa + la->w_off, wb + lb->w_off, per_out * la->cout * sizeof(float)) != 0 ||
        memcmp(wa + la->b_off, wb + lb->b_off, (gsize)la->cout * sizeof(float)) != 0 ||
        (la->has_winograd &&
         memcmp(wa + la->u_off, wb + lb->u_off,
                insp_ops_winograd_weight_size(la->cin, la->cout) * sizeof(float)) != 0))
      return FALSE;
  }
  return TRUE;
}

void
insp_backbone_write(const InspBackbone *bb, InspSafetensorsWriter *w, const char *prefix)
{
  g_return_if_fail(bb != NULL && w != NULL);
  g_return_if_fail(!bb->forward_only);
  if (prefix == NULL)
    prefix = "";

  for (guint i = 0; i < bb->tensors->len; i++) {
    const InspBbTensor *t = g_ptr_array_index(bb->tensors, i);
    g_autofree char *name = g_strconcat(prefix, t->name, NULL);
    insp_safetensors_writer_add_f32(w, name, t->ndim, t->shape, t->data);
  }

  g_autofree char *k_arch = g_strconcat(prefix, "architecture", NULL);
  g_autofree char *k_pad = g_strconcat(prefix, "padding", NULL);
  g_autofree char *k_mean = g_strconcat(prefix, "mean", NULL);
  g_autofree char *k_std = g_strconcat(prefix, "std", NULL);
  g_autofree char *k_size = g_strconcat(prefix, "input_size", NULL);
  g_autofree char *k_eps = g_strconcat(prefix, "bn_eps", NULL);
  g_autofree char *mean = format_triple(bb->mean);
  g_autofree char *std = format_triple(bb->std);
  g_autofree char *size = g_strdup_printf("%d", bb->input_size);
  char eps[G_ASCII_DTOSTR_BUF_SIZE];

  g_ascii_formatd(eps, sizeof(eps), "%.9g", bb->bn_eps);
  insp_safetensors_writer_set_metadata(w, k_arch, bb->arch);
  insp_safetensors_writer_set_metadata(w, k_pad,
                                       bb->pad_mode == INSP_PAD_TF_SAME ? "tf_same" : "symmetric");
  insp_safetensors_writer_set_metadata(w, k_mean, mean);
  insp_safetensors_writer_set_metadata(w, k_std, std);
  insp_safetensors_writer_set_metadata(w, k_size, size);
  insp_safetensors_writer_set_metadata(w, k_eps, eps);
  if (g_str_equal(bb->arch, "builtin")) {
    g_autofree char *k_ver = g_strconcat(prefix, "builtin_version", NULL);
    insp_safetensors_writer_set_metadata(w, k_ver, INSP_BB_BUILTIN_VERSION);
  }
}

const char *
insp_backbone_get_arch(const InspBackbone *bb)
{
  g_return_val_if_fail(bb != NULL, NULL);
  return bb->arch;
}

int
insp_backbone_get_input_size(const InspBackbone *bb)
{
  g_return_val_if_fail(bb != NULL, 0);
  return bb->input_size;
}

void
insp_backbone_get_normalisation(const InspBackbone *bb, float mean[3], float std[3])
{
  g_return_if_fail(bb != NULL);
  if (mean != NULL)
    memcpy(mean, bb->mean, sizeof(bb->mean));
  if (std != NULL)
    memcpy(std, bb->std, sizeof(bb->std));
}

const char *const *
insp_backbone_get_stage_names(const InspBackbone *bb)
{
  g_return_val_if_fail(bb != NULL, NULL);
  return (const char *const *)bb->stage_names;
}

gboolean
insp_backbone_get_stage_info(const InspBackbone *bb, const char *name, int *channels, int *stride)
{
  g_return_val_if_fail(bb != NULL && name != NULL, FALSE);

  for (guint i = 0; i < bb->stages->len; i++) {
    const InspBbStage *st = &g_array_index(bb->stages, InspBbStage, i);
    if (!g_str_equal(st->name, name))
      continue;
    if (channels != NULL)
      *channels = g_array_index(bb->layers, InspBbLayer, st->value - 1).cout;
    if (stride != NULL)
      *stride = st->stride;
    return TRUE;
  }
  return FALSE;
}

void
insp_backbone_get_default_stages(const InspBackbone *bb, const char **fine, const char **coarse)
{
  g_return_if_fail(bb != NULL);
  if (fine != NULL)
    *fine = bb->fine;
  if (coarse != NULL)
    *coarse = bb->coarse;
}

/* ---- scratch and forward -------------------------------------------------- */

typedef struct {
  int oh, ow, pt, pl;
  gboolean winograd;
  int n_chunks;     /* pieces for the team: 1 = the calling thread runs it whole */
  int chunk;        /* conv: pixels per piece; depthwise, max pool, fused: channels */
  gboolean fused;   /* a 1x1 expand run with the next layer, a depthwise */
  gboolean skipped; /* that depthwise */
  gsize col_floats; /* im2col or Winograd scratch, 0 = none */
  float *col;       /* in a slot no value of the layer is in */
} LayerGeom;

/* The helpers of one scratch: they run pieces of the layer the caller
 * publishes in @word (generation << 32 | pieces << 16 | next piece to
 * claim; 0 pieces = parked: sleep until the next layer). The job fields are
 * written before @word and read after a successful claim; the caller moves
 * on only when @done counts every piece, so they stay valid meanwhile. */
typedef struct _Team Team;

typedef struct {
  Team *team;
  float *buf; /* the helper's expand buffer (fuse_floats), or NULL */
} TeamSeat;

struct _Team {
  InspBackboneScratch *s;
  GThread *threads[TEAM_MAX - 1];
  TeamSeat seats[TEAM_MAX - 1];
  int n_threads; /* helpers started */
  GMutex lock;
  GCond cond;
  _Atomic guint64 word;
  _Atomic int done;
  _Atomic int sleepers;
  _Atomic int stop;
  int layer; /* job */
};

struct _InspBackboneScratch {
  InspBackbone *bb; /* a reference */
  int height, width;
  int n_values;
  int *vc, *vh, *vw; /* per value */
  float **vptr;      /* per value; vptr[0] is set per forward */
  LayerGeom *geom;   /* per layer */
  float *mem;
  gsize mem_floats;
  int n_layers;         /* planned: the layers up to the last stage kept */
  gboolean *kept;       /* per stage: its output is kept */
  float *fuse_buf;      /* the caller's expand buffer */
  gsize fuse_floats;    /* per thread */
  Team *team;           /* NULL until a forward runs with 2+ threads */
  gboolean team_error;  /* a helper could not be started: stay on one thread */
  const guint16 *mx_in; /* a fused expand's input packed for the matrix unit, for the layer run */
};

static void team_free(Team *t);

void
insp_backbone_scratch_free(InspBackboneScratch *s)
{
  if (s == NULL)
    return;
  g_free(s->vc);
  g_free(s->vh);
  g_free(s->vw);
  g_free(s->vptr);
  team_free(s->team);
  g_aligned_free(s->fuse_buf);
  g_free(s->geom);
  g_free(s->kept);
  g_aligned_free(s->mem);
  insp_backbone_unref(s->bb);
  g_free(s);
}

static gsize
align_up(gsize n)
{
  return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

/* How a layer is cut for the team: conv pixels in multiples of 32 (the
 * kernel's tile), depthwise and max pool by channels; Winograd (OpenBLAS's
 * sgemm, with OpenBLAS's own threads) runs whole on the calling thread. The
 * pieces do not change the values: every output is computed the same way
 * whoever computes it. */
static void
team_plan(const InspBbLayer *l, LayerGeom *g)
{
  gsize ohw = (gsize)g->oh * g->ow;

  g->n_chunks = 1;
  g->chunk = 0;
  if (l->kind == INSP_BB_CONV && !g->winograd) {
    gsize per = (ohw + TEAM_CHUNKS - 1) / TEAM_CHUNKS;
    per = MAX((per + 31) / 32 * 32, TEAM_MIN_COLUMNS);
    g->chunk = (int)MIN(per, ohw);
    g->n_chunks = (int)((ohw + g->chunk - 1) / g->chunk);
    /* The kernel's last tile reads the 16 columns before the end of its
     * range: a last piece that short joins the one before it, so that no
     * thread reads im2col columns another one is writing. */
    if (g->n_chunks > 1 && ohw - (gsize)(g->n_chunks - 1) * g->chunk < 16)
      g->n_chunks--;
  } else if (l->kind == INSP_BB_DW3 || l->kind == INSP_BB_MAXPOOL) {
    g->chunk = (l->cout + TEAM_CHUNKS - 1) / TEAM_CHUNKS;
    g->n_chunks = (l->cout + g->chunk - 1) / g->chunk;
  }
}

/* Layer @i, a 1x1 stride-1 conv whose output only layer i + 1, a depthwise,
 * reads: run them together by channel ranges (the same values, computed in
 * cache). */
static void
fuse_plan(const InspBackbone *bb, InspBackboneScratch *s, const int *last_use, guint i)
{
  const InspBbLayer *l = &g_array_index(bb->layers, InspBbLayer, i);
  const InspBbLayer *d = &g_array_index(bb->layers, InspBbLayer, i + 1);
  LayerGeom *g = &s->geom[i];
  gsize hw = (gsize)s->vh[l->dst] * s->vw[l->dst];
  int chunk;

  if (l->kind != INSP_BB_CONV || l->k != 1 || l->stride != 1 || l->residual >= 0 ||
      d->kind != INSP_BB_DW3 || d->src != l->dst || d->residual >= 0 ||
      last_use[l->dst] != (int)i + 1 || s->geom[i].fused || s->geom[i].skipped)
    return;
  chunk = (l->cout + TEAM_CHUNKS - 1) / TEAM_CHUNKS;
  chunk = (chunk + 7) / 8 * 8;
  while (chunk > 8 && (gsize)chunk * hw > FUSE_MAX_FLOATS)
    chunk -= 8;
  chunk = MIN(chunk, l->cout);
  g->fused = TRUE;
  g->chunk = chunk;
  g->n_chunks = (l->cout + chunk - 1) / chunk;
  s->geom[i + 1].skipped = TRUE;
  s->fuse_floats = MAX(s->fuse_floats, align_up((gsize)chunk * hw));
}

/* The slot for @need floats at layer @i, not @busy (best fit among the free
 * ones, else the largest free one grown, else a new one); a slot is free
 * when the value it last held has no reader at or after @i. */
static int
take_slot(gsize *slot_size, const int *slot_value, int *n_slots, const int *last_use, int i,
          int busy, gsize need)
{
  int best = -1, largest = -1;

  for (int k = 0; k < *n_slots; k++) {
    int held = slot_value[k];

    if (k == busy || (held >= 0 && last_use[held] >= i))
      continue;
    if (slot_size[k] >= need && (best < 0 || slot_size[k] < slot_size[best]))
      best = k;
    if (largest < 0 || slot_size[k] > slot_size[largest])
      largest = k;
  }
  if (best < 0 && largest >= 0) {
    best = largest;
    slot_size[best] = need;
  }
  if (best < 0) {
    best = (*n_slots)++;
    slot_size[best] = need;
  }
  return best;
}

static InspBackboneScratch *
scratch_new(const InspBackbone *bb, int height, int width, const char *const *stages,
            GError **error)
{
  g_autoptr(InspBackboneScratch) s = NULL;
  guint nl;
  int nv;

  if (height < BB_MIN_INPUT || width < BB_MIN_INPUT || height > BB_MAX_INPUT ||
      width > BB_MAX_INPUT) {
    g_set_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_INPUT,
                "input %dx%d is out of range: each side must be %d..%d pixels", width, height,
                BB_MIN_INPUT, BB_MAX_INPUT);
    return NULL;
  }
  s = g_new0(InspBackboneScratch, 1);
  s->kept = g_new0(gboolean, MAX(bb->stages->len, 1));
  nl = 0;
  for (guint i = 0; i < bb->stages->len; i++) {
    const InspBbStage *st = &g_array_index(bb->stages, InspBbStage, i);

    s->kept[i] = stages == NULL || g_strv_contains(stages, st->name);
    if (s->kept[i])
      nl = MAX(nl, (guint)st->value);
  }
  if (stages == NULL)
    nl = bb->layers->len;
  nv = (int)nl + 1;
  s->n_layers = (int)nl;
  s->bb = insp_backbone_ref((InspBackbone *)bb);
  s->height = height;
  s->width = width;
  s->n_values = nv;
  s->vc = g_new0(int, nv);
  s->vh = g_new0(int, nv);
  s->vw = g_new0(int, nv);
  s->vptr = g_new0(float *, nv);
  s->geom = g_new0(LayerGeom, MAX(nl, 1));
  s->vc[0] = 3;
  s->vh[0] = height;
  s->vw[0] = width;

  /* Shapes. */
  for (guint i = 0; i < nl; i++) {
    const InspBbLayer *l = &g_array_index(bb->layers, InspBbLayer, i);
    LayerGeom *g = &s->geom[i];
    int ih = s->vh[l->src], iw = s->vw[l->src];

    if (l->kind == INSP_BB_MAXPOOL) {
      g->oh = (ih + 2 * l->pad - l->k) / l->stride + 1;
      g->ow = (iw + 2 * l->pad - l->k) / l->stride + 1;
      g->pt = g->pl = l->pad;
    } else {
      insp_ops_conv_geometry(bb->pad_mode, ih, l->k, l->stride, l->pad, &g->oh, &g->pt);
      insp_ops_conv_geometry(bb->pad_mode, iw, l->k, l->stride, l->pad, &g->ow, &g->pl);
    }
    if (g->oh <= 0 || g->ow <= 0 || ih + 2 * l->pad < l->k || iw + 2 * l->pad < l->k) {
      g_set_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_INPUT,
                  "input %dx%d is too small for %s (layer %u sees %dx%d)", width, height, bb->arch,
                  i, iw, ih);
      return NULL;
    }
    if (l->residual >= 0 && (s->vc[l->residual] != l->cout || s->vh[l->residual] != g->oh ||
                             s->vw[l->residual] != g->ow)) {
      g_set_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_INPUT,
                  "input %dx%d gives mismatched residual shapes in %s (layer %u)", width, height,
                  bb->arch, i);
      return NULL;
    }
    s->vc[l->dst] = l->cout;
    s->vh[l->dst] = g->oh;
    s->vw[l->dst] = g->ow;
    g->winograd = l->has_winograd && ((g->oh + 1) / 2) * ((g->ow + 1) / 2) >= WINOGRAD_MIN_TILES &&
                  (g->ow + 1) / 2 <= INSP_OPS_WINOGRAD_MAX_TILES_X;
    team_plan(l, g);
    if (g->winograd)
      g->col_floats = insp_ops_winograd_scratch_size(l->cin, l->cout, g->oh, g->ow);
    else if (l->kind == INSP_BB_CONV)
      g->col_floats = insp_ops_conv2d_scratch_size(l->cin, l->k, l->k, g->oh, g->ow, l->stride);
  }

  /* Liveness: last layer reading each value; stage outputs live forever. */
  g_autofree int *last_use = g_new(int, nv);
  for (int v = 0; v < nv; v++)
    last_use[v] = -1;
  for (guint i = 0; i < nl; i++) {
    const InspBbLayer *l = &g_array_index(bb->layers, InspBbLayer, i);
    last_use[l->src] = (int)i;
    if (l->residual >= 0)
      last_use[l->residual] = (int)i;
  }
  for (guint i = 0; i < bb->stages->len; i++)
    if (s->kept[i])
      last_use[g_array_index(bb->stages, InspBbStage, i).value] = G_MAXINT;
  for (guint i = 0; i + 1 < nl; i++)
    fuse_plan(bb, s, last_use, i);
  /* a fused pair reads the expand's input while it writes the depthwise's
   * output: that input lives through both */
  for (guint i = 0; i + 1 < nl; i++)
    if (s->geom[i].fused) {
      const InspBbLayer *l = &g_array_index(bb->layers, InspBbLayer, i);

      last_use[l->src] = MAX(last_use[l->src], (int)i + 1);
    }

  /* Slots: a value takes the best-fitting free slot (growing the largest free
   * one if none fits); a slot frees when its value's last reader has run. A
   * fused expand's value is never written (its pieces go to the threads'
   * expand buffers), so it takes none: at 320 px mobilenetv2's blocks.1
   * expand alone would be 9.8 MB. A layer's im2col (or Winograd) scratch is
   * a value read by that layer alone, in a slot other than its output's. */
  g_autofree gsize *slot_size = g_new0(gsize, 2 * (gsize)nv);
  g_autofree int *slot_value = g_new(int, 2 * (gsize)nv);
  g_autofree int *value_slot = g_new(int, nv);
  g_autofree int *col_slot = g_new(int, MAX(nl, 1));
  int n_slots = 0;
  for (int v = 0; v < nv; v++)
    value_slot[v] = -1;
  for (int k = 0; k < 2 * nv; k++)
    slot_value[k] = -1;
  for (guint i = 0; i < nl; i++) {
    const InspBbLayer *l = &g_array_index(bb->layers, InspBbLayer, i);
    gsize need = align_up((gsize)s->vc[l->dst] * s->vh[l->dst] * s->vw[l->dst]);
    int k = -1;

    col_slot[i] = -1;
    if (s->geom[i].fused)
      continue;
    k = take_slot(slot_size, slot_value, &n_slots, last_use, (int)i, -1, need);
    slot_value[k] = l->dst;
    value_slot[l->dst] = k;
    if (s->geom[i].col_floats > 0)
      col_slot[i] = take_slot(slot_size, slot_value, &n_slots, last_use, (int)i, k,
                              align_up(s->geom[i].col_floats));
  }

  gsize total = 0;
  g_autofree gsize *slot_off = g_new(gsize, MAX(n_slots, 1));
  for (int k = 0; k < n_slots; k++) {
    slot_off[k] = total;
    total += slot_size[k];
  }
  if (total > (gsize)G_MAXSIZE / sizeof(float) / 2) {
    g_set_error(error, INSP_BACKBONE_ERROR, INSP_BACKBONE_ERROR_INPUT,
                "input %dx%d needs too much scratch memory", width, height);
    return NULL;
  }
  s->mem_floats = total;
  s->mem = g_aligned_alloc0(MAX(total, 1), sizeof(float), 64);
  if (s->fuse_floats > 0)
    s->fuse_buf = g_aligned_alloc(s->fuse_floats, sizeof(float), 64);
  for (guint i = 0; i < nl; i++)
    s->geom[i].col = col_slot[i] >= 0 ? s->mem + slot_off[col_slot[i]] : NULL;
  for (int v = 1; v < nv; v++)
    s->vptr[v] = value_slot[v] >= 0 ? s->mem + slot_off[value_slot[v]] : NULL;
  g_debug("backbone %s scratch %dx%d: %d layers, %d slots, %.1f MB", bb->arch, width, height,
          (int)nl, n_slots, (double)total * sizeof(float) / 1e6);
  return g_steal_pointer(&s);
}

InspBackboneScratch *
insp_backbone_scratch_new(const InspBackbone *bb, int height, int width, GError **error)
{
  g_return_val_if_fail(bb != NULL, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);
  return scratch_new(bb, height, width, NULL, error);
}

InspBackboneScratch *
insp_backbone_scratch_new_for_stages(const InspBackbone *bb, int height, int width,
                                     const char *const *stages, GError **error)
{
  g_return_val_if_fail(bb != NULL && stages != NULL && stages[0] != NULL, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);
  for (int i = 0; stages[i] != NULL; i++)
    g_return_val_if_fail(insp_backbone_get_stage_info(bb, stages[i], NULL, NULL), NULL);
  return scratch_new(bb, height, width, stages, error);
}

static void
add_act(float *restrict y, const float *restrict r, gsize n, InspActivation act)
{
  switch (act) {
  case INSP_ACT_NONE:
    for (gsize i = 0; i < n; i++)
      y[i] += r[i];
    break;
  case INSP_ACT_RELU:
    for (gsize i = 0; i < n; i++) {
      float v = y[i] + r[i];
      y[i] = v > 0.0f ? v : 0.0f;
    }
    break;
  case INSP_ACT_RELU6:
    for (gsize i = 0; i < n; i++) {
      float v = y[i] + r[i];
      v = v > 0.0f ? v : 0.0f;
      y[i] = v < 6.0f ? v : 6.0f;
    }
    break;
  }
}

/* Piece @chunk of layer @i (the whole layer when its plan has one piece or
 * @whole). */
static void
run_layer(const InspBackbone *bb, InspBackboneScratch *s, int i, int chunk, gboolean whole,
          float *buf)
{
  const float *arena = (const float *)(const void *)bb->arena->data;
  const InspBbLayer *l = &g_array_index(bb->layers, InspBbLayer, i);
  const LayerGeom *g = &s->geom[i];
  const float *x = s->vptr[l->src];
  float *y = s->vptr[l->dst];
  int ih = s->vh[l->src], iw = s->vw[l->src];
  gsize ohw = (gsize)g->oh * g->ow, ihw = (gsize)ih * iw;
  int c0 = 0, c1 = l->cout;

  if (g->fused) {
    /* Expand channels [c0, c1) into @buf, then their depthwise. */
    const InspBbLayer *d = l + 1;
    const LayerGeom *dg = g + 1;
    gsize dhw = (gsize)dg->oh * dg->ow;
    for (int c = whole ? 0 : chunk; c < (whole ? g->n_chunks : chunk + 1); c++) {
      c0 = c * g->chunk;
      c1 = MIN(l->cout, c0 + g->chunk);
      if (l->mx != NULL) /* the input packed once by the forward, for every range */
        insp_ops_conv1x1_mx_part(NULL, s->mx_in, l->cin, ohw, l->mx, c0, c1, arena + l->b_off + c0,
                                 NULL, l->act, 0, ohw, buf);
      else
        insp_ops_conv2d_part(x, l->cin, ih, iw, arena + l->w_off + (gsize)c0 * l->cin,
                             arena + l->b_off + c0, c1 - c0, 1, 1, 1, 0, 0, g->oh, g->ow, NULL,
                             l->act, 0, ohw, NULL, buf);
      insp_ops_depthwise3x3(buf, c1 - c0, g->oh, g->ow, arena + d->w_off + (gsize)c0 * 9,
                            arena + d->b_off + c0, d->stride, dg->pt, dg->pl, dg->oh, dg->ow,
                            d->act, s->vptr[d->dst] + c0 * dhw);
    }
    return;
  }
  if (!whole && g->n_chunks > 1 && l->kind != INSP_BB_CONV) {
    c0 = chunk * g->chunk;
    c1 = MIN(l->cout, c0 + g->chunk);
  }
  switch (l->kind) {
  case INSP_BB_CONV:
    if (g->winograd) {
      insp_ops_conv3x3_winograd(x, l->cin, ih, iw, arena + l->u_off, arena + l->b_off, l->cout,
                                g->pt, g->pl, g->oh, g->ow,
                                l->residual >= 0 ? INSP_ACT_NONE : l->act, g->col, y);
      if (l->residual >= 0)
        add_act(y, s->vptr[l->residual], (gsize)l->cout * ohw, l->act);
    } else {
      gsize p0 = whole ? 0 : (gsize)chunk * g->chunk;
      gsize p1 = whole || chunk == g->n_chunks - 1 ? ohw : p0 + (gsize)g->chunk;
      if (l->mx != NULL) {
        insp_ops_conv1x1_mx_part(x, NULL, l->cin, ohw, l->mx, 0, l->cout, arena + l->b_off,
                                 l->residual >= 0 ? s->vptr[l->residual] : NULL, l->act, p0, p1, y);
        break;
      }
      insp_ops_conv2d_part(x, l->cin, ih, iw, arena + l->w_off, arena + l->b_off, l->cout, l->k,
                           l->k, l->stride, g->pt, g->pl, g->oh, g->ow,
                           l->residual >= 0 ? s->vptr[l->residual] : NULL, l->act, p0, p1, g->col,
                           y);
    }
    break;
  case INSP_BB_DW3:
    insp_ops_depthwise3x3(x + c0 * ihw, c1 - c0, ih, iw, arena + l->w_off + (gsize)c0 * 9,
                          arena + l->b_off + c0, l->stride, g->pt, g->pl, g->oh, g->ow,
                          l->residual >= 0 ? INSP_ACT_NONE : l->act, y + c0 * ohw);
    if (l->residual >= 0)
      add_act(y + c0 * ohw, s->vptr[l->residual] + c0 * ohw, (gsize)(c1 - c0) * ohw, l->act);
    break;
  case INSP_BB_MAXPOOL:
    insp_ops_maxpool(x + c0 * ihw, c1 - c0, ih, iw, l->k, l->stride, l->pad, y + c0 * ohw);
    break;
  }
}

/* ---- the team ------------------------------------------------------------ */

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

#define WORD_PIECES(w) ((int)(((w) >> 16) & 0xffff))
#define WORD_NEXT(w) ((int)((w)&0xffff))

/* Claims and runs pieces of the published layer until none is left. */
static void
team_work(Team *t, float *buf)
{
  guint64 w = atomic_load(&t->word);

  while (WORD_NEXT(w) < WORD_PIECES(w)) {
    if (!atomic_compare_exchange_weak(&t->word, &w, w + 1))
      continue; /* w reloaded */
    run_layer(t->s->bb, t->s, t->layer, WORD_NEXT(w), FALSE, buf);
    atomic_fetch_add(&t->done, 1);
    w = atomic_load(&t->word);
  }
}

static gpointer
team_main(gpointer data)
{
  TeamSeat *seat = data;
  Team *t = seat->team;
  sigset_t all;

  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  while (!atomic_load(&t->stop)) {
    gint64 since;
    guint64 w;

    team_work(t, seat->buf);
    since = g_get_monotonic_time();
    /* Spin for the next layer, then sleep until one comes (at once when
     * parked: the forward is over). */
    for (int n = 1;; n++) {
      w = atomic_load(&t->word);
      if (WORD_NEXT(w) < WORD_PIECES(w) || WORD_PIECES(w) == 0 || atomic_load(&t->stop))
        break;
      cpu_relax();
      if (n % 64 == 0 && g_get_monotonic_time() - since > TEAM_SPIN_US)
        break;
    }
    if (WORD_NEXT(w) < WORD_PIECES(w))
      continue;
    g_mutex_lock(&t->lock);
    atomic_fetch_add(&t->sleepers, 1);
    for (;;) {
      w = atomic_load(&t->word);
      if (WORD_NEXT(w) < WORD_PIECES(w) || atomic_load(&t->stop))
        break;
      g_cond_wait(&t->cond, &t->lock);
    }
    atomic_fetch_sub(&t->sleepers, 1);
    g_mutex_unlock(&t->lock);
  }
  return NULL;
}

static void
team_wake(Team *t)
{
  if (atomic_load(&t->sleepers) > 0) {
    g_mutex_lock(&t->lock);
    g_cond_broadcast(&t->cond);
    g_mutex_unlock(&t->lock);
  }
}

/* Publishes @pieces of layer @layer (0: park the helpers). */
static void
team_publish(Team *t, int layer, int pieces)
{
  guint64 w = atomic_load(&t->word);

  t->layer = layer;
  atomic_store(&t->done, 0);
  atomic_store(&t->word, ((w >> 32) + 1) << 32 | (guint64)pieces << 16);
  if (pieces > 0)
    team_wake(t);
}

/* Runs layer @i with the helpers: the caller claims pieces like them, then
 * waits for the ones they hold. */
static void
team_run(Team *t, int i, int pieces)
{
  team_publish(t, i, pieces);
  team_work(t, t->s->fuse_buf);
  for (int n = 1; atomic_load(&t->done) < pieces; n++) {
    cpu_relax();
    if (n % 4096 == 0)
      g_thread_yield(); /* a helper preempted in its piece: let it finish */
  }
}

static void
team_free(Team *t)
{
  if (t == NULL)
    return;
  g_mutex_lock(&t->lock);
  atomic_store(&t->stop, 1);
  g_cond_broadcast(&t->cond);
  g_mutex_unlock(&t->lock);
  for (int i = 0; i < t->n_threads; i++)
    g_thread_join(t->threads[i]);
  for (int i = 0; i < TEAM_MAX - 1; i++)
    g_aligned_free(t->seats[i].buf);
  g_mutex_clear(&t->lock);
  g_cond_clear(&t->cond);
  g_free(t);
}

/* The team of @s for @n threads in all (created on the first forward that
 * has 2 or more: started once, reused by every later forward), or NULL when
 * a helper cannot be started (the forward then runs on one thread). */
static Team *
team_get(InspBackboneScratch *s, int n)
{
  Team *t;

  if (s->team != NULL || s->team_error)
    return s->team;
  t = g_new0(Team, 1);
  t->s = s;
  g_mutex_init(&t->lock);
  g_cond_init(&t->cond);
  atomic_init(&t->word, 0);
  atomic_init(&t->done, 0);
  atomic_init(&t->sleepers, 0);
  atomic_init(&t->stop, 0);
  for (int i = 0; i < n - 1; i++) {
    g_autoptr(GError) error = NULL;
    t->seats[i].team = t;
    if (s->fuse_floats > 0)
      t->seats[i].buf = g_aligned_alloc(s->fuse_floats, sizeof(float), 64);
    t->threads[i] = g_thread_try_new("insp-bb-team", team_main, &t->seats[i], &error);
    if (t->threads[i] == NULL) {
      g_debug("backbone: no helper thread (%s): one thread", error->message);
      team_free(t);
      s->team_error = TRUE;
      return NULL;
    }
    t->n_threads++;
  }
  s->team = t;
  return t;
}

int
insp_backbone_forward(const InspBackbone *bb, InspBackboneScratch *s, const float *input,
                      const char *last, InspFeatureMap *out)
{
  int last_stage = -1, threads;
  Team *team = NULL;

  g_return_val_if_fail(bb != NULL && s != NULL && input != NULL && out != NULL, 0);
  g_return_val_if_fail(s->bb == bb, 0);

  if (last == NULL) {
    last_stage = (int)bb->stages->len - 1;
  } else {
    for (guint i = 0; i < bb->stages->len; i++)
      if (g_str_equal(g_array_index(bb->stages, InspBbStage, i).name, last)) {
        last_stage = (int)i;
        break;
      }
  }
  g_return_val_if_fail(last_stage >= 0, 0);
  g_return_val_if_fail(g_array_index(bb->stages, InspBbStage, last_stage).value <= s->n_layers, 0);

  /* As many threads as OpenBLAS has (the worker's share of the machine,
   * README "Threads"). */
  threads = MIN(insp_ops_get_blas_threads(), TEAM_MAX);
  if (threads >= 2)
    team = team_get(s, threads);
  s->vptr[0] = (float *)input; /* read only: no layer writes value 0 */
  int last_value = g_array_index(bb->stages, InspBbStage, last_stage).value;
  gboolean parked = TRUE;
  for (int i = 0; i < last_value; i++) {
    int pieces = s->geom[i].n_chunks;

    if (s->geom[i].skipped)
      continue; /* run with the layer before */
    if (s->geom[i].fused) {
      const InspBbLayer *l = &g_array_index(bb->layers, InspBbLayer, i);

      if (l->mx != NULL)
        s->mx_in = mx_packed_input(s->vptr[l->src], l->cin, (gsize)s->vh[l->src] * s->vw[l->src]);
    }
    if (team == NULL || pieces < 2) {
      if (team != NULL && !parked)
        team_publish(team, i, 0); /* OpenBLAS's threads may run this one */
      parked = TRUE;
      run_layer(bb, s, i, 0, TRUE, s->fuse_buf);
    } else {
      team_run(team, i, pieces);
      parked = FALSE;
    }
  }
  if (team != NULL && !parked)
    team_publish(team, 0, 0);

  for (int i = 0; i <= last_stage; i++) {
    const InspBbStage *st = &g_array_index(bb->stages, InspBbStage, i);
    out[i].name = st->name;
    out[i].channels = s->vc[st->value];
    out[i].height = s->vh[st->value];
    out[i].width = s->vw[st->value];
    out[i].stride = st->stride;
    out[i].data = s->kept[i] ? s->vptr[st->value] : NULL;
  }
  return last_stage + 1;
}

double
insp_bb_count_flops(const InspBackbone *bb, int height, int width, const char *last)
{
  g_autoptr(InspBackboneScratch) s = insp_backbone_scratch_new(bb, height, width, NULL);
  int last_value = -1;
  double flops = 0;

  if (s == NULL)
    return 0;
  for (guint i = 0; i < bb->stages->len; i++) {
    const InspBbStage *st = &g_array_index(bb->stages, InspBbStage, i);
    last_value = st->value;
    if (last != NULL && g_str_equal(st->name, last))
      break;
  }
  for (int i = 0; i < last_value; i++) {
    const InspBbLayer *l = &g_array_index(bb->layers, InspBbLayer, i);
    double out = (double)s->geom[i].oh * s->geom[i].ow;
    if (l->kind == INSP_BB_CONV)
      flops += 2.0 * l->cin * l->k * l->k * l->cout * out;
    else if (l->kind == INSP_BB_DW3)
      flops += 2.0 * 9 * l->cin * out;
  }
  return flops;
}
