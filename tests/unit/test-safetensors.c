/* safetensors reader and writer: round trips through a file, F16/BF16/F64
 * conversion from bytes written here by hand, one malformed file per error
 * class (each must fail with its own message, never crash), shape and usage
 * checks, and the real MobileNetV2 weights when INSP_SHARED_DIR is set. */
#include "insp-safetensors.h"
#include "insp-backbone.h"
#include "insp-model.h"
#include "test-tmp.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

/* A safetensors image: u64 LE length of @json, @json, then @data. */
static GBytes *
make_file(const char *json, const void *data, gsize dlen)
{
  GByteArray *a = g_byte_array_new();
  guint64 n = GUINT64_TO_LE((guint64)strlen(json));
  g_byte_array_append(a, (const guint8 *)&n, 8);
  g_byte_array_append(a, (const guint8 *)json, (guint)strlen(json));
  if (dlen)
    g_byte_array_append(a, data, (guint)dlen);
  return g_byte_array_free_to_bytes(a);
}

static void
test_round_trip(void)
{
  g_autofree char *path = test_tmp_path("rt.safetensors");
  float a[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -1e30f};
  guint8 u[5] = {0, 1, 127, 128, 255};
  float s = 42.0f;
  gint64 sa[2] = {2, 3}, su[1] = {5}, sz[2] = {0, 4};

  {
    g_autoptr(InspSafetensorsWriter) w = insp_safetensors_writer_new();
    insp_safetensors_writer_set_metadata(w, "format", "inspectd-model");
    insp_safetensors_writer_set_metadata(w, "quote\"and\\slash\n", "ünïcode \t value");
    insp_safetensors_writer_set_metadata(w, "format", "inspectd-model-v2"); /* replaces */
    insp_safetensors_writer_add_f32(w, "a", 2, sa, a);
    insp_safetensors_writer_add_u8(w, "u", 1, su, u);
    insp_safetensors_writer_add_f32(w, "scalar", 0, NULL, &s);
    insp_safetensors_writer_add_f32(w, "empty", 2, sz, NULL);
    g_autoptr(GError) error = NULL;
    g_assert_true(insp_safetensors_writer_save(w, path, &error));
    g_assert_no_error(error);
  }
  g_autofree char *contents = NULL;
  gsize len;
  g_assert_true(g_file_get_contents(path, &contents, &len, NULL));
  guint64 hlen;
  memcpy(&hlen, contents, 8);
  hlen = GUINT64_FROM_LE(hlen);
  g_assert_cmpuint(hlen % 8, ==, 0);
  g_assert_true(g_str_has_prefix(contents + 8, "{\"__metadata__\":{\"format\":"));
  gsize last = 8 + hlen - 1;
  while (contents[last] == ' ')
    last--;
  g_assert_cmpint(contents[last], ==, '}');
  g_assert_cmpuint(8 + hlen - 1 - last, <, 8);

  g_autoptr(GError) error = NULL;
  g_autoptr(InspSafetensors) st = insp_safetensors_open(path, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(insp_safetensors_get_n_tensors(st), ==, 4);
  g_assert_cmpstr(insp_safetensors_get_info(st, 0)->name, ==, "a");
  g_assert_cmpstr(insp_safetensors_get_info(st, 1)->name, ==, "u");
  const InspTensorInfo *info = insp_safetensors_lookup(st, "a");
  g_assert_nonnull(info);
  g_assert_cmpint(info->dtype, ==, INSP_DTYPE_F32);
  g_assert_cmpint(info->ndim, ==, 2);
  g_assert_cmpint(info->n_elements, ==, 6);
  g_assert_null(insp_safetensors_lookup(st, "nope"));

  const float *ra = insp_safetensors_get_f32(st, "a", 2, sa, &error);
  g_assert_no_error(error);
  g_assert_cmpmem(ra, sizeof a, a, sizeof a);
  /* aligned F32 in the mapping comes back without a copy, same pointer each time */
  g_assert_true(ra == insp_safetensors_get_f32(st, "a", 0, NULL, &error));
  const guint8 *ru = insp_safetensors_get_u8(st, "u", 1, su, &error);
  g_assert_no_error(error);
  g_assert_cmpmem(ru, 5, u, 5);
  const float *rs = insp_safetensors_get_f32(st, "scalar", 0, NULL, &error);
  g_assert_no_error(error);
  g_assert_cmpfloat(*rs, ==, 42.0f);
  g_assert_cmpint(insp_safetensors_lookup(st, "scalar")->ndim, ==, 0);
  g_assert_cmpint(insp_safetensors_lookup(st, "scalar")->n_elements, ==, 1);
  g_assert_nonnull(insp_safetensors_get_f32(st, "empty", 2, sz, &error));
  g_assert_no_error(error);

  g_assert_cmpstr(insp_safetensors_get_metadata(st, "format"), ==, "inspectd-model-v2");
  g_assert_cmpstr(insp_safetensors_get_metadata(st, "quote\"and\\slash\n"), ==, "ünïcode \t value");
  g_assert_null(insp_safetensors_get_metadata(st, "missing"));
  g_autofree const char **keys = insp_safetensors_get_metadata_keys(st);
  g_assert_cmpstr(keys[0], ==, "format");
  g_assert_cmpstr(keys[1], ==, "quote\"and\\slash\n");
  g_assert_null(keys[2]);
  g_assert_true(insp_safetensors_check_all_used(st, NULL, &error));
  g_assert_no_error(error);
  test_tmp_remove(path);
}

/* F16, BF16 and F64 bytes written by hand; F32 at an odd address is copied. */
static void
test_conversion(void)
{
  /* F16: 1.0, -2.0, 0.5, 65504, smallest subnormal 2^-24, inf, -0 */
  const guint16 h[7] = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x7c00, 0x8000};
  const float hf[7] = {1.0f, -2.0f, 0.5f, 65504.0f, 5.9604645e-8f, INFINITY, -0.0f};
  /* BF16: 1.0, -3.0, 3.140625 */
  const guint16 b[3] = {0x3f80, 0xc040, 0x4049};
  const float bf[3] = {1.0f, -3.0f, 3.140625f};
  const double d[2] = {0.1, -1e300};
  guint8 data[14 + 6 + 16];
  for (int i = 0; i < 7; i++) {
    guint16 v = GUINT16_TO_LE(h[i]);
    memcpy(data + 2 * i, &v, 2);
  }
  for (int i = 0; i < 3; i++) {
    guint16 v = GUINT16_TO_LE(b[i]);
    memcpy(data + 14 + 2 * i, &v, 2);
  }
  memcpy(data + 20, d, 16);
  g_autoptr(GBytes) file =
      make_file("{\"h\":{\"dtype\":\"F16\",\"shape\":[7],\"data_offsets\":[0,14]},"
                "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[14,20]},"
                "\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[20,36]}}",
                data, sizeof data);
  g_autoptr(GError) error = NULL;
  g_autoptr(InspSafetensors) st =
      insp_safetensors_new_from_data(g_bytes_get_data(file, NULL), g_bytes_get_size(file), &error);
  g_assert_no_error(error);
  const float *rh = insp_safetensors_get_f32(st, "h", 1, (gint64[]){7}, &error);
  g_assert_no_error(error);
  for (int i = 0; i < 7; i++)
    g_assert_cmpmem(&rh[i], 4, &hf[i], 4);
  g_assert_true(rh == insp_safetensors_get_f32(st, "h", 0, NULL, NULL)); /* converted once */
  const float *rb = insp_safetensors_get_f32(st, "b", 1, (gint64[]){3}, &error);
  g_assert_no_error(error);
  for (int i = 0; i < 3; i++)
    g_assert_cmpfloat(rb[i], ==, bf[i]);
  const float *rd = insp_safetensors_get_f32(st, "d", 0, NULL, &error);
  g_assert_no_error(error);
  g_assert_cmpfloat(rd[0], ==, 0.1f);
  g_assert_true(isinf(rd[1]) && rd[1] < 0);
  /* U8 through get_f32 and F16 through get_u8 are dtype errors */
  g_assert_null(insp_safetensors_get_u8(st, "h", 0, NULL, &error));
  g_assert_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_SHAPE);
  g_assert_nonnull(strstr(error->message, "'h' has dtype F16, expected U8"));
  g_clear_error(&error);

  /* F32 data at an address that is not 4-byte aligned: copied, values intact */
  float f[3] = {1.0f, 2.0f, -7.5f};
  g_autoptr(GBytes) f32 =
      make_file("{\"f\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", f, sizeof f);
  gsize flen = g_bytes_get_size(f32);
  g_autofree guint8 *buf = g_malloc(flen + 1);
  memcpy(buf + 1, g_bytes_get_data(f32, NULL), flen);
  g_autoptr(InspSafetensors) st2 = insp_safetensors_new_from_data(buf + 1, flen, &error);
  g_assert_no_error(error);
  const float *rf = insp_safetensors_get_f32(st2, "f", 1, (gint64[]){3}, &error);
  g_assert_no_error(error);
  g_assert_true(GPOINTER_TO_SIZE(rf) % 4 == 0);
  g_assert_cmpmem(rf, 12, f, 12);
}

typedef struct {
  const char *json;
  gsize data_len;
  const char *fragment;
} Malformed;

static void
test_malformed(void)
{
  static const Malformed cases[] = {
      {"", 0, "too short for a JSON object"},
      {"{ ", 0, "bad JSON header at byte 2: expected a string"},
      {"[]", 0, "expected '{'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "expected '}'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", 4,
       "data after the JSON object"},
      {"{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
       "tensor 'a': unknown dtype 'Q4'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
       "tensor 'a': data_offsets span 4 bytes but F32 shape [2] needs 8"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
       "tensor 'a': data_offsets [0,8] are out of range (data section is 4 bytes)"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4,
       "end before they begin"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
       "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}",
       4, "tensor 'b' (bytes 2..4) overlaps tensor 'a' (bytes 0..4)"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 4,
       "gap of 2 bytes in the data section before tensor 'a'"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 4,
       "2 bytes after the last tensor's data are not used"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4294967296],"
       "\"data_offsets\":[0,4]}}",
       4, "tensor 'a': shape [4294967296,4294967296,4294967296] is too large"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 4,
       "integer too large"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape is negative"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
       "expected an integer"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
       "tensor 'a' has more than 8 dimensions"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
       "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
       2, "duplicate tensor 'a'"},
      {"{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
       "tensor 'a': duplicate key 'dtype'"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "tensor 'a' has no data_offsets"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}", 1,
       "tensor 'a': unknown key 'x'"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1,
       "data_offsets must have 2 entries"},
      {"{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ value of 'k' is not a string"},
      {"{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, "duplicate __metadata__ key 'k'"},
      {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate key '__metadata__'"},
      {"{\"__metadata__\":{\"k\":\"a\\u0000b\"}}", 0, "NUL character in a string"},
      {"{\"__metadata__\":{\"k\":\"\\ud800\"}}", 0, "unpaired surrogate"},
      {"{\"__metadata__\":{\"k\":\"\xff\"}}", 0, "not valid UTF-8"},
      {"{\"__metadata__\":{\"k\":\"a\nb\"}}", 0, "control character in a string"},
  };

  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    guint8 zero[8] = {0};
    g_autoptr(GBytes) f = make_file(cases[i].json, zero, cases[i].data_len);
    g_autoptr(GError) error = NULL;
    g_autoptr(InspSafetensors) st =
        insp_safetensors_new_from_data(g_bytes_get_data(f, NULL), g_bytes_get_size(f), &error);
    if (g_test_verbose())
      g_test_message("case %" G_GSIZE_FORMAT ": %s", i, error ? error->message : "(no error)");
    g_assert_null(st);
    g_assert_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_FORMAT);
    g_assert_true(g_str_has_prefix(error->message, "<memory>: "));
    if (!strstr(error->message, cases[i].fragment))
      g_error("case %" G_GSIZE_FORMAT ": '%s' does not contain '%s'", i, error->message,
              cases[i].fragment);
  }

  /* A JSON header cut short: truncated. Any other header length past the
   * end, or absurdly large: not a safetensors file, said in words (a PNG as
   * one), with no number from the file's first bytes. */
  guint8 buf[16] = {0};
  guint64 n = GUINT64_TO_LE(100);
  memcpy(buf, &n, 8);
  buf[8] = '{';
  g_autoptr(GError) error = NULL;
  g_assert_null(insp_safetensors_new_from_data(buf, sizeof buf, &error));
  g_assert_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_FORMAT);
  g_assert_nonnull(strstr(error->message, "header length 100 is past the end of the file (16 "
                                          "bytes): the file is truncated"));
  g_clear_error(&error);
  buf[8] = 0;
  g_assert_null(insp_safetensors_new_from_data(buf, sizeof buf, &error));
  g_assert_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_NOT_SAFETENSORS);
  g_assert_cmpstr(error->message, ==,
                  "<memory> is not a safetensors file: the header length in its first 8 bytes "
                  "is implausible for a file of 16 bytes");
  g_clear_error(&error);
  n = GUINT64_TO_LE(G_MAXUINT64);
  memcpy(buf, &n, 8);
  g_assert_null(insp_safetensors_new_from_data(buf, sizeof buf, &error));
  g_assert_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_NOT_SAFETENSORS);
  g_assert_null(strstr(error->message, "18446744073709551615"));
  g_clear_error(&error);
  {
    guint8 png[64] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    g_assert_null(insp_safetensors_new_from_data(png, sizeof png, &error));
    g_assert_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_NOT_SAFETENSORS);
    g_assert_nonnull(strstr(error->message, "is not a safetensors file (it is a PNG image)"));
    g_clear_error(&error);
  }
  g_assert_null(insp_safetensors_new_from_data(buf, 5, &error));
  g_assert_nonnull(strstr(error->message, "file is too short (5 bytes)"));
  g_clear_error(&error);

  /* files: missing file, a directory; the message names the path */
  g_assert_null(insp_safetensors_open("/nonexistent/x.safetensors", &error));
  g_assert_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_IO);
  g_assert_true(g_str_has_prefix(error->message, "/nonexistent/x.safetensors: "));
  g_clear_error(&error);
  g_assert_null(insp_safetensors_open("/", &error));
  g_assert_nonnull(strstr(error->message, "not a regular file"));
  g_clear_error(&error);
  g_autofree char *path = test_tmp_path("bad.safetensors");
  g_assert_true(g_file_set_contents(path, "\x07\0\0\0\0\0\0\0{\"a\":1}", 15, NULL));
  g_assert_null(insp_safetensors_open(path, &error));
  g_assert_true(g_str_has_prefix(error->message, path));
  g_assert_nonnull(strstr(error->message, "expected '{'"));
  g_clear_error(&error);
  g_assert_true(g_file_set_contents(path, "", 0, NULL));
  g_assert_null(insp_safetensors_open(path, &error));
  g_assert_nonnull(strstr(error->message, "too short"));
  test_tmp_remove(path);
}

static void
test_shape_and_usage(void)
{
  float w[6] = {0};
  g_autoptr(InspSafetensorsWriter) wr = insp_safetensors_writer_new();
  insp_safetensors_writer_add_f32(wr, "conv.weight", 4, (gint64[]){1, 2, 3, 1}, w);
  insp_safetensors_writer_add_f32(wr, "conv.bias", 1, (gint64[]){1}, w);
  insp_safetensors_writer_add_f32(wr, "head.weight", 1, (gint64[]){2}, w);
  g_autoptr(GBytes) b = insp_safetensors_writer_to_bytes(wr);
  g_assert_cmpuint((g_bytes_get_size(b) - 36) % 8, ==, 0);
  g_autoptr(GError) error = NULL;
  g_autoptr(InspSafetensors) st =
      insp_safetensors_new_from_data(g_bytes_get_data(b, NULL), g_bytes_get_size(b), &error);
  g_assert_no_error(error);

  g_assert_null(insp_safetensors_get_f32(st, "conv.weight", 4, (gint64[]){1, 2, 1, 3}, &error));
  g_assert_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_SHAPE);
  g_assert_cmpstr(error->message, ==,
                  "<memory>: tensor 'conv.weight' has shape [1,2,3,1], expected [1,2,1,3]");
  g_clear_error(&error);
  g_assert_null(insp_safetensors_get_f32(st, "conv.weight", 2, (gint64[]){2, 3}, &error));
  g_assert_nonnull(strstr(error->message, "has shape [1,2,3,1], expected [2,3]"));
  g_clear_error(&error);
  g_assert_null(insp_safetensors_get_f32(st, "conv.gamma", 1, (gint64[]){7}, &error));
  g_assert_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_MISSING);
  g_assert_cmpstr(error->message, ==,
                  "<memory>: tensor 'conv.gamma' is missing, expected shape [7]");
  g_clear_error(&error);

  /* a failed get does not mark the tensor used */
  g_assert_false(insp_safetensors_check_all_used(st, NULL, &error));
  g_assert_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_UNEXPECTED);
  g_assert_nonnull(strstr(error->message, "unexpected tensor 'conv.weight' (F32 [1,2,3,1])"));
  g_clear_error(&error);
  g_assert_nonnull(insp_safetensors_get_f32(st, "conv.weight", 4, (gint64[]){1, 2, 3, 1}, &error));
  g_assert_nonnull(insp_safetensors_get_f32(st, "conv.bias", 1, (gint64[]){1}, &error));
  g_assert_true(insp_safetensors_check_all_used(st, "conv.", &error));
  g_assert_false(insp_safetensors_check_all_used(st, NULL, &error));
  g_assert_nonnull(strstr(error->message, "'head.weight'"));
}

/* save replaces an existing file whole, leaves no temporary behind, and
 * reports a folder it cannot write to with the path. */
static void
test_save_atomic(void)
{
  g_autofree char *path = test_tmp_path("atomic.safetensors");
  g_autofree char *dir = g_path_get_dirname(path);
  float v[2] = {1.0f, 2.0f};
  g_autoptr(GError) error = NULL;

  g_assert_true(g_file_set_contents(path, "old contents", -1, NULL));
  g_autoptr(InspSafetensorsWriter) w = insp_safetensors_writer_new();
  insp_safetensors_writer_add_f32(w, "v", 1, (gint64[]){2}, v);
  g_assert_true(insp_safetensors_writer_save(w, path, &error));
  g_assert_no_error(error);
  g_autoptr(InspSafetensors) st = insp_safetensors_open(path, &error);
  g_assert_no_error(error);
  g_assert_cmpfloat(insp_safetensors_get_f32(st, "v", 1, (gint64[]){2}, &error)[1], ==, 2.0f);
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  int n = 0;
  while (g_dir_read_name(d))
    n++;
  g_assert_cmpint(n, ==, 1);

  g_autofree char *bad = g_build_filename(dir, "missing", "x.safetensors", NULL);
  g_assert_false(insp_safetensors_writer_save(w, bad, &error));
  g_assert_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_IO);
  g_assert_true(g_str_has_prefix(error->message, bad));
  test_tmp_remove(path);
}

typedef struct {
  InspSafetensors *st;
  const float *seen[8];
} ThreadCtx;

static gpointer
convert_thread(gpointer data)
{
  ThreadCtx *c = data;
  const float *p = insp_safetensors_get_f32(c->st, "h", 0, NULL, NULL);
  return (gpointer)p;
}

/* Several threads converting the same F16 tensor get one and the same buffer. */
static void
test_threads(void)
{
  guint16 h[1024];
  for (int i = 0; i < 1024; i++)
    h[i] = GUINT16_TO_LE(0x3c00);
  g_autoptr(GBytes) f = make_file(
      "{\"h\":{\"dtype\":\"F16\",\"shape\":[1024],\"data_offsets\":[0,2048]}}", h, sizeof h);
  g_autoptr(InspSafetensors) st =
      insp_safetensors_new_from_data(g_bytes_get_data(f, NULL), g_bytes_get_size(f), NULL);
  g_assert_nonnull(st);
  ThreadCtx c = {st, {0}};
  GThread *t[8];
  for (int i = 0; i < 8; i++)
    t[i] = g_thread_new("conv", convert_thread, &c);
  for (int i = 0; i < 8; i++)
    c.seen[i] = g_thread_join(t[i]);
  for (int i = 0; i < 8; i++)
    g_assert_true(c.seen[i] == c.seen[0]);
  g_assert_cmpfloat(c.seen[0][1023], ==, 1.0f);
}

static void
test_mobilenetv2(void)
{
  const char *shared = g_getenv("INSP_SHARED_DIR");
  g_autofree char *path =
      shared ? g_build_filename(shared, "models", "mobilenetv2_100.safetensors", NULL) : NULL;
  if (!path || !g_file_test(path, G_FILE_TEST_EXISTS)) {
    g_test_skip("INSP_SHARED_DIR/models/mobilenetv2_100.safetensors is absent");
    return;
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(InspSafetensors) st = insp_safetensors_open(path, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(insp_safetensors_get_n_tensors(st), ==, 262);
  g_assert_cmpstr(insp_safetensors_get_metadata(st, "padding"), ==, "tf_same");
  g_assert_cmpstr(insp_safetensors_get_metadata(st, "architecture"), ==, "mobilenetv2_100");
  gint64 n = 0;
  for (guint i = 0; i < insp_safetensors_get_n_tensors(st); i++)
    n += insp_safetensors_get_info(st, i)->n_elements;
  g_assert_cmpint(n, ==, 3540265);
  const float *w =
      insp_safetensors_get_f32(st, "conv_stem.weight", 4, (gint64[]){32, 3, 3, 3}, &error);
  g_assert_no_error(error);
  g_assert_true(isfinite(w[0]));
  const float *bw = insp_safetensors_get_f32(st, "bn1.weight", 1, (gint64[]){32}, &error);
  g_assert_no_error(error);
  g_assert_cmpfloat_with_epsilon(bw[0], 1.000005f, 1e-7);
}

/* The error domains' names are what a GError prints in debug output. */
static void
test_error_quarks(void)
{
  g_assert_cmpstr(g_quark_to_string(INSP_MODEL_ERROR), ==, "insp-model-error-quark");
  g_assert_cmpstr(g_quark_to_string(INSP_BACKBONE_ERROR), ==, "insp-backbone-error-quark");
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/safetensors/error-quarks", test_error_quarks);
  g_test_add_func("/safetensors/round-trip", test_round_trip);
  g_test_add_func("/safetensors/conversion", test_conversion);
  g_test_add_func("/safetensors/malformed", test_malformed);
  g_test_add_func("/safetensors/shape-and-usage", test_shape_and_usage);
  g_test_add_func("/safetensors/save-atomic", test_save_atomic);
  g_test_add_func("/safetensors/threads", test_threads);
  g_test_add_func("/safetensors/mobilenetv2", test_mobilenetv2);
  return g_test_run();
}
