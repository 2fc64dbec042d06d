/* Images in memory: PNG (libpng) and JPEG (libjpeg) decoding chosen by the
 * file's magic bytes, PNG encoding, and insp_image_preprocess(), the one path
 * from an RGB8 frame to the model's input tensor.
 *
 * Decoding invariants: the width and height are checked against
 * INSP_IMAGE_MAX_PIXELS before any pixel buffer is allocated; libpng and
 * libjpeg errors come back through setjmp/longjmp into a GError and never
 * print or exit; everything a longjmp may skip is owned by a heap context
 * whose address is fixed before setjmp. Conversions follow PIL's convert():
 * grey is replicated to RGB, alpha is dropped (not composited), palette is
 * expanded, 16-bit samples keep their high byte, and RGB to grey is
 * L = (19595 R + 38470 G + 7471 B + 2^15) >> 16. A truncated file is an error
 * (as in PIL), not a partially grey image.
 *
 * Preprocessing (see insp_image_preprocess below) allocates nothing: index
 * tables live in a bounded stack buffer. All functions are reentrant and
 * entered by any thread (capture, workers, train/eval drivers). */
#include "insp-image.h"

#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include <jerror.h>

GQuark
insp_image_error_quark(void)
{
  return g_quark_from_static_string("insp-image-error-quark");
}

static const guint8 png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

InspImage *
insp_image_new(int width, int height, int channels)
{
  g_return_val_if_fail(width > 0 && height > 0, NULL);
  g_return_val_if_fail(channels == 1 || channels == 3, NULL);
  g_return_val_if_fail((gint64)width * height <= INSP_IMAGE_MAX_PIXELS, NULL);

  InspImage *img = g_new0(InspImage, 1);
  img->width = width;
  img->height = height;
  img->channels = channels;
  img->stride = width * channels;
  img->data = g_malloc0((gsize)img->stride * (gsize)height);
  return img;
}

void
insp_image_free(InspImage *img)
{
  if (!img)
    return;
  g_free(img->data);
  g_free(img);
}

static gboolean
check_size(guint64 w, guint64 h, const char *what, GError **error)
{
  if (w == 0 || h == 0) {
    g_set_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_FORMAT,
                "%s image has size %" G_GUINT64_FORMAT "x%" G_GUINT64_FORMAT, what, w, h);
    return FALSE;
  }
  if (w > INSP_IMAGE_MAX_PIXELS || h > INSP_IMAGE_MAX_PIXELS || w * h > INSP_IMAGE_MAX_PIXELS) {
    g_set_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_TOO_LARGE,
                "%s image of %" G_GUINT64_FORMAT "x%" G_GUINT64_FORMAT
                " is over the limit of %d pixels",
                what, w, h, INSP_IMAGE_MAX_PIXELS);
    return FALSE;
  }
  return TRUE;
}

/* Converts a decoded image with its native channel count to @channels. */
static InspImage *
convert_channels(InspImage *img, int channels)
{
  if (img->channels == channels)
    return img;
  g_autoptr(InspImage) src = img;
  InspImage *dst = insp_image_new(src->width, src->height, channels);
  for (int y = 0; y < src->height; y++) {
    const guint8 *s = src->data + (gsize)y * (gsize)src->stride;
    guint8 *d = dst->data + (gsize)y * (gsize)dst->stride;
    if (channels == 3) {
      for (int x = 0; x < src->width; x++)
        d[3 * x] = d[3 * x + 1] = d[3 * x + 2] = s[x];
    } else {
      for (int x = 0; x < src->width; x++)
        d[x] =
            (guint8)((19595u * s[3 * x] + 38470u * s[3 * x + 1] + 7471u * s[3 * x + 2] + 0x8000u) >>
                     16);
    }
  }
  return dst;
}

/* ---- PNG ----------------------------------------------------------------- */

typedef struct {
  const guint8 *data;
  gsize len;
  gsize pos;
  char msg[200];
  InspImage *img;
  png_bytep *rows;
  GByteArray *out; /* encoding */
} PngCtx;

static void
png_ctx_error(png_structp png, png_const_charp msg)
{
  PngCtx *c = png_get_error_ptr(png);
  g_strlcpy(c->msg, msg ? msg : "error", sizeof c->msg);
  png_longjmp(png, 1);
}

static void
png_ctx_warning(png_structp png, png_const_charp msg)
{
}

static void
png_ctx_read(png_structp png, png_bytep out, size_t n)
{
  PngCtx *c = png_get_io_ptr(png);
  if (n > c->len - c->pos)
    png_error(png, "file is truncated");
  memcpy(out, c->data + c->pos, n);
  c->pos += n;
}

/* With @wh non-NULL only the header is read: the size goes to wh[0] and
 * wh[1], and NULL is returned with no error (likewise decode_jpeg). */
static InspImage *
decode_png(const guint8 *data, gsize len, int channels, int *wh, GError **error)
{
  g_autofree PngCtx *c = g_new0(PngCtx, 1);
  c->data = data;
  c->len = len;
  png_structp png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, c, png_ctx_error, png_ctx_warning);
  if (!png) {
    g_set_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_FORMAT, "PNG: cannot create decoder");
    return NULL;
  }
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, NULL);
    g_free(c->rows);
    insp_image_free(c->img);
    if (c->msg[0] == '\0')
      g_strlcpy(c->msg, "cannot create decoder", sizeof c->msg);
    g_set_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_FORMAT, "PNG: %s", c->msg);
    return NULL;
  }
  png_set_read_fn(png, c, png_ctx_read);
  png_set_user_limits(png, INSP_IMAGE_MAX_PIXELS, INSP_IMAGE_MAX_PIXELS);
  png_set_chunk_malloc_max(png, 16 * 1024 * 1024);
  png_set_chunk_cache_max(png, 1000);
  png_read_info(png, info);

  png_uint_32 w = png_get_image_width(png, info);
  png_uint_32 h = png_get_image_height(png, info);
  int color = png_get_color_type(png, info);
  int depth = png_get_bit_depth(png, info);
  if (!check_size(w, h, "PNG", error) || wh != NULL) {
    png_destroy_read_struct(&png, &info, NULL);
    if (wh != NULL) {
      wh[0] = (int)w;
      wh[1] = (int)h;
    }
    return NULL;
  }
  if (depth == 16)
    png_set_strip_16(png);
  if (color == PNG_COLOR_TYPE_PALETTE)
    png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8)
    png_set_expand_gray_1_2_4_to_8(png);
  /* Alpha, and the alpha libpng makes from tRNS when it expands a palette,
   * are dropped. */
  if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS))
    png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  int native = (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) ? 1 : 3;
  if (png_get_rowbytes(png, info) != (size_t)w * (size_t)native)
    png_error(png, "unexpected row size after conversion");

  c->img = insp_image_new((int)w, (int)h, native);
  c->rows = g_new(png_bytep, h);
  for (png_uint_32 y = 0; y < h; y++)
    c->rows[y] = c->img->data + (gsize)y * (gsize)c->img->stride;
  png_read_image(png, c->rows);
  png_read_end(png, NULL);
  png_destroy_read_struct(&png, &info, NULL);
  g_clear_pointer(&c->rows, g_free);
  return convert_channels(g_steal_pointer(&c->img), channels);
}

static void
png_ctx_write(png_structp png, png_bytep buf, size_t n)
{
  PngCtx *c = png_get_io_ptr(png);
  if (n > G_MAXUINT)
    png_error(png, "write too large");
  g_byte_array_append(c->out, buf, (guint)n);
}

static void
png_ctx_flush(png_structp png)
{
}

GBytes *
insp_image_encode_png(const InspImage *img, GError **error)
{
  g_return_val_if_fail(img != NULL, NULL);
  g_return_val_if_fail(img->channels == 1 || img->channels == 3, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  g_autofree PngCtx *c = g_new0(PngCtx, 1);
  c->out = g_byte_array_new();
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, c, png_ctx_error, png_ctx_warning);
  if (!png) {
    g_byte_array_unref(c->out);
    g_set_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_IO, "PNG: cannot create encoder");
    return NULL;
  }
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    g_free(c->rows);
    g_byte_array_unref(c->out);
    g_set_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_IO, "PNG encoding: %s",
                c->msg[0] ? c->msg : "cannot create encoder");
    return NULL;
  }
  png_set_write_fn(png, c, png_ctx_write, png_ctx_flush);
  /* Masks and frames: fast compression, the data is mostly flat. */
  png_set_compression_level(png, 2);
  png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, 8,
               img->channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  c->rows = g_new(png_bytep, (gsize)img->height);
  for (int y = 0; y < img->height; y++)
    c->rows[y] = img->data + (gsize)y * (gsize)img->stride;
  png_write_image(png, c->rows);
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  g_free(c->rows);
  c->rows = NULL;
  return g_byte_array_free_to_bytes(c->out);
}

gboolean
insp_image_save_png(const InspImage *img, const char *path, GError **error)
{
  g_return_val_if_fail(img != NULL, FALSE);
  g_return_val_if_fail(path != NULL, FALSE);
  g_return_val_if_fail(error == NULL || *error == NULL, FALSE);

  g_autoptr(GBytes) png = insp_image_encode_png(img, error);
  if (!png)
    return FALSE;
  gsize len;
  const char *d = g_bytes_get_data(png, &len);
  g_autoptr(GError) local = NULL;
  if (!g_file_set_contents(path, d, (gssize)len, &local)) {
    g_set_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_IO, "%s", local->message);
    return FALSE;
  }
  return TRUE;
}

/* ---- JPEG ---------------------------------------------------------------- */

#define JPEG_MAX_SCANS 1000

typedef struct {
  struct jpeg_error_mgr mgr; /* first: libjpeg casts cinfo->err to this */
  jmp_buf jmp;
  gboolean truncated;
  char msg[JMSG_LENGTH_MAX];
  struct jpeg_progress_mgr progress;
  InspImage *img;
} JpegCtx;

static void
jpeg_ctx_error_exit(j_common_ptr cinfo)
{
  JpegCtx *c = (JpegCtx *)(void *)cinfo->err;
  cinfo->err->format_message(cinfo, c->msg);
  longjmp(c->jmp, 1);
}

static void
jpeg_ctx_emit_message(j_common_ptr cinfo, int level)
{
  JpegCtx *c = (JpegCtx *)(void *)cinfo->err;
  if (level < 0) {
    cinfo->err->num_warnings++;
    if (cinfo->err->msg_code == JWRN_JPEG_EOF)
      c->truncated = TRUE;
  }
}

/* Bounds the work a hostile progressive file can cause (thousands of scans). */
static void
jpeg_ctx_progress(j_common_ptr cinfo)
{
  if (cinfo->is_decompressor) {
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > JPEG_MAX_SCANS) {
      JpegCtx *c = (JpegCtx *)(void *)cinfo->err;
      g_snprintf(c->msg, sizeof c->msg, "more than %d scans", JPEG_MAX_SCANS);
      longjmp(c->jmp, 1);
    }
  }
}

static InspImage *
decode_jpeg(const guint8 *data, gsize len, int channels, int *wh, GError **error)
{
  g_autofree JpegCtx *c = g_new0(JpegCtx, 1);
  g_autofree struct jpeg_decompress_struct *cinfo = g_new0(struct jpeg_decompress_struct, 1);

  cinfo->err = jpeg_std_error(&c->mgr);
  c->mgr.error_exit = jpeg_ctx_error_exit;
  c->mgr.emit_message = jpeg_ctx_emit_message;
  if (setjmp(c->jmp)) {
    jpeg_destroy_decompress(cinfo);
    insp_image_free(c->img);
    g_set_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_FORMAT, "JPEG: %s", c->msg);
    return NULL;
  }
  jpeg_create_decompress(cinfo);
  c->progress.progress_monitor = jpeg_ctx_progress;
  cinfo->progress = &c->progress;
  cinfo->mem->max_memory_to_use = 1024L * 1024 * 1024;
  jpeg_mem_src(cinfo, data, (unsigned long)len);
  if (jpeg_read_header(cinfo, TRUE) != JPEG_HEADER_OK) {
    g_strlcpy(c->msg, "no image in the file", sizeof c->msg);
    longjmp(c->jmp, 1);
  }
  if (!check_size(cinfo->image_width, cinfo->image_height, "JPEG", error) || wh != NULL) {
    if (wh != NULL) {
      wh[0] = (int)cinfo->image_width;
      wh[1] = (int)cinfo->image_height;
    }
    jpeg_destroy_decompress(cinfo);
    return NULL;
  }
  int native;
  switch (cinfo->jpeg_color_space) {
  case JCS_GRAYSCALE:
    cinfo->out_color_space = JCS_GRAYSCALE;
    native = 1;
    break;
  case JCS_CMYK:
  case JCS_YCCK:
    g_strlcpy(c->msg, "CMYK images are not supported", sizeof c->msg);
    longjmp(c->jmp, 1);
  default:
    cinfo->out_color_space = JCS_RGB;
    native = 3;
  }
  jpeg_start_decompress(cinfo);
  if ((int)cinfo->output_components != native || cinfo->output_width != cinfo->image_width ||
      cinfo->output_height != cinfo->image_height) {
    g_strlcpy(c->msg, "unexpected output format", sizeof c->msg);
    longjmp(c->jmp, 1);
  }
  c->img = insp_image_new((int)cinfo->output_width, (int)cinfo->output_height, native);
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW row = c->img->data + (gsize)cinfo->output_scanline * (gsize)c->img->stride;
    if (jpeg_read_scanlines(cinfo, &row, 1) != 1 || c->truncated) {
      g_strlcpy(c->msg, "file is truncated", sizeof c->msg);
      longjmp(c->jmp, 1);
    }
  }
  jpeg_finish_decompress(cinfo);
  if (c->truncated) {
    g_strlcpy(c->msg, "file is truncated", sizeof c->msg);
    longjmp(c->jmp, 1);
  }
  jpeg_destroy_decompress(cinfo);
  return convert_channels(g_steal_pointer(&c->img), channels);
}

/* ---- decode entry points ------------------------------------------------- */

GBytes *
insp_image_encode_jpeg(const InspImage *img, int quality, GError **error)
{
  g_return_val_if_fail(img != NULL, NULL);
  g_return_val_if_fail(img->channels == 1 || img->channels == 3, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  g_autofree JpegCtx *c = g_new0(JpegCtx, 1);
  g_autofree struct jpeg_compress_struct *cinfo = g_new0(struct jpeg_compress_struct, 1);
  unsigned char *buf = NULL;
  unsigned long len = 0;

  cinfo->err = jpeg_std_error(&c->mgr);
  c->mgr.error_exit = jpeg_ctx_error_exit;
  c->mgr.emit_message = jpeg_ctx_emit_message;
  if (setjmp(c->jmp)) {
    jpeg_destroy_compress(cinfo);
    free(buf);
    g_set_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_IO, "JPEG encoding: %s", c->msg);
    return NULL;
  }
  jpeg_create_compress(cinfo);
  jpeg_mem_dest(cinfo, &buf, &len);
  cinfo->image_width = (JDIMENSION)img->width;
  cinfo->image_height = (JDIMENSION)img->height;
  cinfo->input_components = img->channels;
  cinfo->in_color_space = img->channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(cinfo);
  jpeg_set_quality(cinfo, CLAMP(quality, 1, 100), TRUE);
  jpeg_start_compress(cinfo, TRUE);
  while (cinfo->next_scanline < cinfo->image_height) {
    JSAMPROW row = img->data + (gsize)cinfo->next_scanline * (gsize)img->stride;
    jpeg_write_scanlines(cinfo, &row, 1);
  }
  jpeg_finish_compress(cinfo);
  jpeg_destroy_compress(cinfo);
  /* jpeg_mem_dest's buffer comes from malloc; hand it to GBytes as is. */
  return g_bytes_new_with_free_func(buf, len, free, buf);
}

/* The decoder by content; @wh as decode_png's. */
static InspImage *
decode(const guint8 *data, gsize len, int channels, int *wh, GError **error)
{
  if (len >= sizeof png_magic && memcmp(data, png_magic, sizeof png_magic) == 0)
    return decode_png(data, len, channels, wh, error);
  if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
    return decode_jpeg(data, len, channels, wh, error);
  g_set_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_FORMAT,
              "not a PNG or JPEG image (%" G_GSIZE_FORMAT " bytes)", len);
  return NULL;
}

InspImage *
insp_image_decode(const guint8 *data, gsize len, int channels, GError **error)
{
  g_return_val_if_fail(data != NULL || len == 0, NULL);
  g_return_val_if_fail(channels == 1 || channels == 3, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  return decode(data, len, channels, NULL, error);
}

/* insp_image_load, or with @wh its size only; errors name @path. */
static InspImage *
load(const char *path, int channels, int *wh, GError **error)
{
  g_autoptr(GMappedFile) f = NULL;
  g_autoptr(GError) local = NULL;
  f = g_mapped_file_new(path, FALSE, &local);
  if (!f) {
    g_set_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_IO, "%s", local->message);
    return NULL;
  }
  const guint8 *d = (const guint8 *)g_mapped_file_get_contents(f);
  gsize len = g_mapped_file_get_length(f);
  InspImage *img = decode(d, len, channels, wh, &local);
  if (local != NULL) {
    g_set_error(error, INSP_IMAGE_ERROR, local->code, "%s: %s", path, local->message);
    return NULL;
  }
  return img;
}

InspImage *
insp_image_load(const char *path, int channels, GError **error)
{
  g_return_val_if_fail(path != NULL, NULL);
  g_return_val_if_fail(channels == 1 || channels == 3, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  return load(path, channels, NULL, error);
}

gboolean
insp_image_read_size(const char *path, int *width, int *height, GError **error)
{
  int wh[2] = {0, 0};
  GError *local = NULL;

  g_return_val_if_fail(path != NULL && width != NULL && height != NULL, FALSE);
  g_return_val_if_fail(error == NULL || *error == NULL, FALSE);

  load(path, 3, wh, &local);
  if (local != NULL) {
    g_propagate_error(error, local);
    return FALSE;
  }
  *width = wh[0];
  *height = wh[1];
  return TRUE;
}

/* ---- preprocessing -------------------------------------------------------
 *
 * Definition (BENCHMARKS.md "input", PyTorch interpolate(mode="bilinear",
 * align_corners=False, antialias=False) on float 0..255):
 *   source region: centred crop cw = max(1, round(W * f)), x0 = (W - cw) / 2
 *   (integer division), likewise in y; f = 1 covers the whole image.
 *   scale = cw / out_w; sx = (x + 0.5) * scale - 0.5, clamped to >= 0;
 *   i0 = floor(sx), i1 = min(i0 + 1, cw - 1), wx1 = sx - i0, wx0 = 1 - wx1;
 *   likewise in y; v = wy0 (wx0 p00 + wx1 p01) + wy1 (wx0 p10 + wx1 p11);
 *   out[c, y, x] = (v / 255 - mean[c]) / std[c], computed as v * a[c] + b[c].
 * Output: CHW float [3, out_h, out_w]. */

#define PRE_TABLE 1024

typedef struct {
  int i0, i1;
  float w0, w1;
} Tap;

/* Source coordinates in double: PyTorch uses float here, which at 640 -> 224
 * moves a weight by up to ~6e-5 (a few ulps of the coordinate); double keeps
 * us within 1e-6 of the exact definition. */
static inline Tap
bilinear_tap(int dst, double scale, int in)
{
  Tap t;
  double s = ((double)dst + 0.5) * scale - 0.5;
  if (s < 0.0)
    s = 0.0;
  t.i0 = (int)s;
  if (t.i0 > in - 1)
    t.i0 = in - 1;
  t.i1 = t.i0 + (t.i0 < in - 1 ? 1 : 0);
  t.w1 = (float)(s - (double)t.i0);
  t.w0 = (float)(1.0 - (s - (double)t.i0));
  return t;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define PRE_AVX512 1
#include <immintrin.h>
#ifdef __clang__
#define PRE_TARGET __attribute__((target("avx512f")))
#else
#define PRE_TARGET __attribute__((target("avx512f"), optimize("fp-contract=off")))
#endif

/* Output columns [0, n) of one row, n a multiple of 16, 16 at a time: one
 * gather of 4 bytes per tap and row brings a pixel's R, G and B. The same
 * products and sums in the same order as the scalar loop, none fused (the
 * model's files are built with -ffp-contract=fast; this one is not
 * contracted), so every value is the scalar loop's bit for bit. Every tap
 * read here has a pixel after it in the row (its 4th byte). */
PRE_TARGET static void
preprocess_row_avx512(const guint8 *r0, const guint8 *r1, const gint32 *o0, const gint32 *o1,
                      const float *w0, const float *w1, float wy0, float wy1, const float a[3],
                      const float b[3], int n, float *out0, float *out1, float *out2)
{
#ifdef __clang__
#pragma clang fp contract(off)
#endif
  const __m512i lo = _mm512_set1_epi32(0xff);
  const __m512 vy0 = _mm512_set1_ps(wy0), vy1 = _mm512_set1_ps(wy1);
  float *outs[3] = {out0, out1, out2};

  for (int x = 0; x + 16 <= n; x += 16) {
    __m512i i0 = _mm512_loadu_si512(o0 + x), i1 = _mm512_loadu_si512(o1 + x);
    __m512 x0 = _mm512_loadu_ps(w0 + x), x1 = _mm512_loadu_ps(w1 + x);
    __m512i g00 = _mm512_i32gather_epi32(i0, r0, 1), g01 = _mm512_i32gather_epi32(i1, r0, 1);
    __m512i g10 = _mm512_i32gather_epi32(i0, r1, 1), g11 = _mm512_i32gather_epi32(i1, r1, 1);

    for (int c = 0; c < 3; c++) {
      __m512 p00 = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(g00, 8 * c), lo));
      __m512 p01 = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(g01, 8 * c), lo));
      __m512 p10 = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(g10, 8 * c), lo));
      __m512 p11 = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(g11, 8 * c), lo));
      __m512 top = _mm512_add_ps(_mm512_mul_ps(x0, p00), _mm512_mul_ps(x1, p01));
      __m512 bot = _mm512_add_ps(_mm512_mul_ps(x0, p10), _mm512_mul_ps(x1, p11));
      __m512 v = _mm512_add_ps(_mm512_mul_ps(vy0, top), _mm512_mul_ps(vy1, bot));

      _mm512_storeu_ps(outs[c] + x,
                       _mm512_add_ps(_mm512_mul_ps(v, _mm512_set1_ps(a[c])), _mm512_set1_ps(b[c])));
    }
  }
}
#endif

void
insp_image_preprocess(const guint8 *rgb, int width, int height, int stride, int out_w, int out_h,
                      float crop_fraction, const float mean[3], const float std[3], float *out)
{
  g_return_if_fail(rgb != NULL && out != NULL && mean != NULL && std != NULL);
  g_return_if_fail(width > 0 && height > 0 && stride >= 3 * width);
  g_return_if_fail(out_w > 0 && out_h > 0);
  g_return_if_fail(crop_fraction > 0.0f && crop_fraction <= 1.0f);
  g_return_if_fail(std[0] != 0.0f && std[1] != 0.0f && std[2] != 0.0f);

  int cw = MAX(1, (int)lround((double)width * crop_fraction));
  int ch = MAX(1, (int)lround((double)height * crop_fraction));
  cw = MIN(cw, width);
  ch = MIN(ch, height);
  const guint8 *src =
      rgb + (gsize)((height - ch) / 2) * (gsize)stride + (gsize)((width - cw) / 2) * 3;
  double sx = (double)cw / out_w, sy = (double)ch / out_h;
  float a[3], b[3];
  for (int c = 0; c < 3; c++) {
    a[c] = 1.0f / (255.0f * std[c]);
    b[c] = -mean[c] / std[c];
  }
  gsize plane = (gsize)out_w * (gsize)out_h;
  Tap xt[PRE_TABLE];
  gboolean tabled = out_w <= PRE_TABLE;
  int n_vec = 0; /* leading columns the AVX-512 row takes: whole 16s whose taps are not the last */
#ifdef PRE_AVX512
  gint32 xo0[PRE_TABLE], xo1[PRE_TABLE];
  float xw0[PRE_TABLE], xw1[PRE_TABLE];
#endif
  if (tabled)
    for (int x = 0; x < out_w; x++)
      xt[x] = bilinear_tap(x, sx, cw);
#ifdef PRE_AVX512
  if (tabled && __builtin_cpu_supports("avx512f")) {
    while (n_vec < out_w && xt[n_vec].i1 <= cw - 2) {
      xo0[n_vec] = 3 * xt[n_vec].i0;
      xo1[n_vec] = 3 * xt[n_vec].i1;
      xw0[n_vec] = xt[n_vec].w0;
      xw1[n_vec] = xt[n_vec].w1;
      n_vec++;
    }
    n_vec -= n_vec % 16;
  }
#endif

  for (int y = 0; y < out_h; y++) {
    Tap ty = bilinear_tap(y, sy, ch);
    const guint8 *r0 = src + (gsize)ty.i0 * (gsize)stride;
    const guint8 *r1 = src + (gsize)ty.i1 * (gsize)stride;
    float *o0 = out + (gsize)y * (gsize)out_w;
    float *o1 = o0 + plane, *o2 = o1 + plane;
#ifdef PRE_AVX512
    if (n_vec > 0)
      preprocess_row_avx512(r0, r1, xo0, xo1, xw0, xw1, ty.w0, ty.w1, a, b, n_vec, o0, o1, o2);
#endif
    for (int x = n_vec; x < out_w; x++) {
      Tap tx = tabled ? xt[x] : bilinear_tap(x, sx, cw);
      const guint8 *p00 = r0 + 3 * tx.i0, *p01 = r0 + 3 * tx.i1;
      const guint8 *p10 = r1 + 3 * tx.i0, *p11 = r1 + 3 * tx.i1;
      float v0 =
          ty.w0 * (tx.w0 * p00[0] + tx.w1 * p01[0]) + ty.w1 * (tx.w0 * p10[0] + tx.w1 * p11[0]);
      float v1 =
          ty.w0 * (tx.w0 * p00[1] + tx.w1 * p01[1]) + ty.w1 * (tx.w0 * p10[1] + tx.w1 * p11[1]);
      float v2 =
          ty.w0 * (tx.w0 * p00[2] + tx.w1 * p01[2]) + ty.w1 * (tx.w0 * p10[2] + tx.w1 * p11[2]);
      o0[x] = v0 * a[0] + b[0];
      o1[x] = v1 * a[1] + b[1];
      o2[x] = v2 * a[2] + b[2];
    }
  }
}

gboolean
insp_image_has_image_name(const char *name)
{
  g_autofree char *lower = NULL;

  g_return_val_if_fail(name != NULL, FALSE);
  lower = g_ascii_strdown(name, -1);
  /* The archive's heat-map overlays are pictures for people, not parts. */
  if (g_str_has_suffix(lower, ".overlay.jpg"))
    return FALSE;
  return g_str_has_suffix(lower, ".png") || g_str_has_suffix(lower, ".jpg") ||
         g_str_has_suffix(lower, ".jpeg");
}

static gint
compare_paths(gconstpointer a, gconstpointer b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

GPtrArray *
insp_image_list_folder(const char *dir, GError **error)
{
  g_autoptr(GDir) d = NULL;
  g_autoptr(GPtrArray) paths = NULL;
  const char *name;

  g_return_val_if_fail(dir != NULL, NULL);
  d = g_dir_open(dir, 0, error);
  if (d == NULL)
    return NULL;
  paths = g_ptr_array_new_with_free_func(g_free);
  while ((name = g_dir_read_name(d)) != NULL) {
    g_autofree char *full = NULL;

    if (name[0] == '.' || !insp_image_has_image_name(name))
      continue;
    full = g_build_filename(dir, name, NULL);
    if (g_file_test(full, G_FILE_TEST_IS_DIR))
      continue;
    g_ptr_array_add(paths, g_steal_pointer(&full));
  }
  g_ptr_array_sort(paths, compare_paths);
  return g_steal_pointer(&paths);
}
