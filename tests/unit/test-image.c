/* Image decoding, encoding and preprocessing. PNGs of every colour type and
 * JPEGs are written here with libpng/libjpeg directly, so the decoder is
 * checked against files it did not produce; preprocessing is checked against
 * a naive double-precision implementation of its definition (tolerance
 * PRE_TOL) and, when INSP_SHARED_DIR is set, against the PyTorch reference
 * input of MobileNetV2 (tolerance 1e-6). */
#include "insp-image.h"
#include "insp-safetensors.h"

#include <glib/gstdio.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

#define PRE_TOL 1e-4

/* ---- writers used only by the tests ------------------------------------- */

static void
png_append(png_structp png, png_bytep buf, size_t n)
{
  g_byte_array_append(png_get_io_ptr(png), buf, (guint)n);
}

static void
png_noflush(png_structp png)
{
}

/* Writes rows of @bpr bytes; @palette (n entries) for palette images. */
static GBytes *
write_png_trns(int w, int h, int color, int depth, int interlace, const guint8 *data, int bpr,
               const png_color *palette, int n_palette, const png_byte *trans, int n_trans,
               const png_color_16 *trans_color)
{
  GByteArray *out = g_byte_array_new();
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  g_assert_true(setjmp(png_jmpbuf(png)) == 0);
  png_set_write_fn(png, out, png_append, png_noflush);
  png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color, interlace,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (palette)
    png_set_PLTE(png, info, palette, n_palette);
  if (trans || trans_color)
    png_set_tRNS(png, info, trans, n_trans, trans_color);
  png_write_info(png, info);
  png_bytep *rows = g_new(png_bytep, h);
  for (int y = 0; y < h; y++)
    rows[y] = (png_bytep)data + (gsize)y * (gsize)bpr;
  png_write_image(png, rows);
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  g_free(rows);
  return g_byte_array_free_to_bytes(out);
}

static GBytes *
write_png(int w, int h, int color, int depth, int interlace, const guint8 *data, int bpr,
          const png_color *palette, int n_palette)
{
  return write_png_trns(w, h, color, depth, interlace, data, bpr, palette, n_palette, NULL, 0,
                        NULL);
}

static GBytes *
write_jpeg(int w, int h, int components, const guint8 *data, int quality)
{
  struct jpeg_compress_struct c;
  struct jpeg_error_mgr err;
  unsigned char *buf = NULL;
  unsigned long len = 0;

  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  jpeg_mem_dest(&c, &buf, &len);
  c.image_width = (JDIMENSION)w;
  c.image_height = (JDIMENSION)h;
  c.input_components = components;
  c.in_color_space = components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = (JSAMPROW)data + (gsize)c.next_scanline * (gsize)w * (gsize)components;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  GBytes *b = g_bytes_new(buf, len);
  free(buf);
  return b;
}

static InspImage *
decode_bytes(GBytes *b, int channels, GError **error)
{
  return insp_image_decode(g_bytes_get_data(b, NULL), g_bytes_get_size(b), channels, error);
}

static guint32
crc32_png(const guint8 *p, gsize n)
{
  guint32 c = 0xffffffffu;
  for (gsize i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++)
      c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return c ^ 0xffffffffu;
}

static void
fill_random(guint8 *p, gsize n, guint32 seed)
{
  GRand *r = g_rand_new_with_seed(seed);
  for (gsize i = 0; i < n; i++)
    p[i] = (guint8)g_rand_int_range(r, 0, 256);
  g_rand_free(r);
}

/* ---- PNG ------------------------------------------------------------------ */

static void
test_png_round_trip(void)
{
  for (int ch = 1; ch <= 3; ch += 2) {
    g_autoptr(InspImage) img = insp_image_new(37, 23, ch);
    fill_random(img->data, (gsize)img->stride * 23, 7u + (guint)ch);
    g_autoptr(GError) error = NULL;
    g_autoptr(GBytes) png = insp_image_encode_png(img, &error);
    g_assert_no_error(error);
    g_autoptr(InspImage) back = decode_bytes(png, ch, &error);
    g_assert_no_error(error);
    g_assert_cmpint(back->width, ==, 37);
    g_assert_cmpint(back->height, ==, 23);
    g_assert_cmpint(back->channels, ==, ch);
    g_assert_cmpint(back->stride, ==, 37 * ch);
    g_assert_cmpmem(back->data, 37 * 23 * ch, img->data, 37 * 23 * ch);

    /* the same through a file */
    g_autofree char *dir = g_dir_make_tmp("test-image-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "x.png", NULL);
    g_assert_true(insp_image_save_png(img, path, &error));
    g_assert_no_error(error);
    g_autoptr(InspImage) loaded = insp_image_load(path, ch, &error);
    g_assert_no_error(error);
    g_assert_cmpmem(loaded->data, 37 * 23 * ch, img->data, 37 * 23 * ch);
    g_unlink(path);
    g_rmdir(dir);
  }

  /* grey decoded as RGB is replicated; RGB decoded as grey uses PIL's luma */
  g_autoptr(InspImage) rgb = insp_image_new(2, 1, 3);
  const guint8 px[6] = {255, 0, 0, 10, 200, 30};
  memcpy(rgb->data, px, 6);
  g_autoptr(GBytes) png = insp_image_encode_png(rgb, NULL);
  g_autoptr(InspImage) grey = decode_bytes(png, 1, NULL);
  g_assert_nonnull(grey);
  g_assert_cmpint(grey->data[0], ==, 76);  /* PIL: L of (255,0,0) */
  g_assert_cmpint(grey->data[1], ==, 124); /* (10*299 + 200*587 + 30*114)/1000 = 123.8 */
  g_autoptr(GBytes) gpng = insp_image_encode_png(grey, NULL);
  g_autoptr(InspImage) rep = decode_bytes(gpng, 3, NULL);
  g_assert_cmpint(rep->data[3], ==, 124);
  g_assert_cmpint(rep->data[4], ==, 124);
  g_assert_cmpint(rep->data[5], ==, 124);
}

/* 16-bit, palette, low bit depth, alpha and interlaced PNGs written here. */
static void
test_png_color_types(void)
{
  g_autoptr(GError) error = NULL;
  const int w = 5, h = 3;

  /* RGB 16-bit: the high byte is kept */
  guint8 d16[5 * 3 * 6];
  for (int i = 0; i < w * h * 3; i++) {
    d16[2 * i] = (guint8)(i * 7);       /* MSB */
    d16[2 * i + 1] = (guint8)(255 - i); /* LSB */
  }
  g_autoptr(GBytes) p16 =
      write_png(w, h, PNG_COLOR_TYPE_RGB, 16, PNG_INTERLACE_NONE, d16, w * 6, NULL, 0);
  g_autoptr(InspImage) i16 = decode_bytes(p16, 3, &error);
  g_assert_no_error(error);
  for (int i = 0; i < w * h * 3; i++)
    g_assert_cmpint(i16->data[i], ==, (guint8)(i * 7));

  /* grey 16-bit */
  guint8 g16[5 * 3 * 2];
  for (int i = 0; i < w * h; i++) {
    g16[2 * i] = (guint8)(200 + i);
    g16[2 * i + 1] = 0xff;
  }
  g_autoptr(GBytes) pg16 =
      write_png(w, h, PNG_COLOR_TYPE_GRAY, 16, PNG_INTERLACE_NONE, g16, w * 2, NULL, 0);
  g_autoptr(InspImage) ig16 = decode_bytes(pg16, 1, &error);
  g_assert_no_error(error);
  for (int i = 0; i < w * h; i++)
    g_assert_cmpint(ig16->data[i], ==, 200 + i);

  /* palette, 4 bits per index */
  const png_color pal[3] = {{255, 0, 0}, {0, 255, 0}, {10, 20, 30}};
  guint8 idx[3 * 3] = {0x01, 0x20, 0x10, 0x22, 0x22, 0x00, 0x00, 0x11, 0x20};
  g_autoptr(GBytes) ppal =
      write_png(w, h, PNG_COLOR_TYPE_PALETTE, 4, PNG_INTERLACE_NONE, idx, 3, pal, 3);
  g_autoptr(InspImage) ipal = decode_bytes(ppal, 3, &error);
  g_assert_no_error(error);
  const int expect_idx[15] = {0, 1, 2, 0, 1, 2, 2, 2, 2, 0, 0, 0, 1, 1, 2};
  for (int i = 0; i < w * h; i++) {
    const png_color *pc = &pal[expect_idx[i]];
    g_assert_cmpint(ipal->data[3 * i], ==, pc->red);
    g_assert_cmpint(ipal->data[3 * i + 1], ==, pc->green);
    g_assert_cmpint(ipal->data[3 * i + 2], ==, pc->blue);
  }

  /* the same palette with transparency (tRNS): still plain RGB */
  const png_byte alpha[2] = {0, 128};
  g_autoptr(GBytes) ptr = write_png_trns(w, h, PNG_COLOR_TYPE_PALETTE, 4, PNG_INTERLACE_NONE, idx,
                                         3, pal, 3, alpha, 2, NULL);
  g_autoptr(InspImage) itr = decode_bytes(ptr, 3, &error);
  g_assert_no_error(error);
  g_assert_cmpmem(itr->data, 45, ipal->data, 45);
  /* RGB and grey with a transparent colour */
  const png_color_16 tc = {0, 1, 2, 3, 4};
  g_autoptr(GBytes) prt = write_png_trns(w, h, PNG_COLOR_TYPE_RGB, 16, PNG_INTERLACE_NONE, d16,
                                         w * 6, NULL, 0, NULL, 0, &tc);
  g_autoptr(InspImage) irt = decode_bytes(prt, 3, &error);
  g_assert_no_error(error);
  g_assert_cmpmem(irt->data, 45, i16->data, 45);
  g_autoptr(GBytes) pgt = write_png_trns(w, h, PNG_COLOR_TYPE_GRAY, 16, PNG_INTERLACE_NONE, g16,
                                         w * 2, NULL, 0, NULL, 0, &tc);
  g_autoptr(InspImage) igt = decode_bytes(pgt, 1, &error);
  g_assert_no_error(error);
  g_assert_cmpmem(igt->data, 15, ig16->data, 15);

  /* 1-bit grey: 0 -> 0, 1 -> 255 */
  guint8 bits[3] = {0xa0, 0x50, 0xf8};
  g_autoptr(GBytes) p1 =
      write_png(w, h, PNG_COLOR_TYPE_GRAY, 1, PNG_INTERLACE_NONE, bits, 1, NULL, 0);
  g_autoptr(InspImage) i1 = decode_bytes(p1, 1, &error);
  g_assert_no_error(error);
  const guint8 e1[15] = {255, 0, 255, 0, 0, 0, 255, 0, 255, 0, 255, 255, 255, 255, 255};
  g_assert_cmpmem(i1->data, 15, e1, 15);

  /* RGBA and grey+alpha: alpha dropped, not composited */
  guint8 rgba[5 * 3 * 4], ga[5 * 3 * 2];
  fill_random(rgba, sizeof rgba, 11);
  fill_random(ga, sizeof ga, 12);
  g_autoptr(GBytes) prgba =
      write_png(w, h, PNG_COLOR_TYPE_RGBA, 8, PNG_INTERLACE_NONE, rgba, w * 4, NULL, 0);
  g_autoptr(InspImage) irgba = decode_bytes(prgba, 3, &error);
  g_assert_no_error(error);
  for (int i = 0; i < w * h; i++)
    g_assert_cmpmem(irgba->data + 3 * i, 3, rgba + 4 * i, 3);
  g_autoptr(GBytes) pga =
      write_png(w, h, PNG_COLOR_TYPE_GRAY_ALPHA, 8, PNG_INTERLACE_NONE, ga, w * 2, NULL, 0);
  g_autoptr(InspImage) iga = decode_bytes(pga, 3, &error);
  g_assert_no_error(error);
  for (int i = 0; i < w * h; i++)
    for (int c = 0; c < 3; c++)
      g_assert_cmpint(iga->data[3 * i + c], ==, ga[2 * i]);

  /* Adam7 interlaced RGB */
  guint8 big[31 * 17 * 3];
  fill_random(big, sizeof big, 13);
  g_autoptr(GBytes) pil =
      write_png(31, 17, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_ADAM7, big, 31 * 3, NULL, 0);
  g_autoptr(InspImage) iil = decode_bytes(pil, 3, &error);
  g_assert_no_error(error);
  g_assert_cmpmem(iil->data, sizeof big, big, sizeof big);
}

static void
test_corrupt(void)
{
  g_autoptr(InspImage) img = insp_image_new(64, 48, 3);
  fill_random(img->data, 64 * 48 * 3, 3);
  g_autoptr(GBytes) png = insp_image_encode_png(img, NULL);
  gsize len;
  const guint8 *d = g_bytes_get_data(png, &len);
  g_autoptr(GError) error = NULL;

  /* truncated at every 97th length: an error each time, never a crash */
  for (gsize n = 0; n < len; n += 97) {
    g_assert_null(insp_image_decode(d, n, 3, &error));
    g_assert_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_FORMAT);
    g_clear_error(&error);
  }
  g_assert_null(insp_image_decode(d, len / 2, 3, &error));
  g_assert_nonnull(strstr(error->message, "PNG: "));
  g_assert_nonnull(strstr(error->message, "truncated"));
  g_clear_error(&error);

  /* a flipped byte in the image data: CRC error */
  g_autofree guint8 *bad = g_memdup2(d, len);
  bad[len / 2] ^= 0x55;
  g_assert_null(insp_image_decode(bad, len, 3, &error));
  g_assert_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_FORMAT);
  g_clear_error(&error);

  /* a PNG header claiming 100000 x 100000 pixels: refused before allocating */
  g_autofree guint8 *huge = g_memdup2(d, len);
  huge[16] = 0x00, huge[17] = 0x01, huge[18] = 0x86, huge[19] = 0xa0;
  huge[20] = 0x00, huge[21] = 0x01, huge[22] = 0x86, huge[23] = 0xa0;
  guint32 crc = crc32_png(huge + 12, 17);
  huge[29] = (guint8)(crc >> 24), huge[30] = (guint8)(crc >> 16);
  huge[31] = (guint8)(crc >> 8), huge[32] = (guint8)crc;
  g_assert_null(insp_image_decode(huge, len, 3, &error));
  g_assert_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_TOO_LARGE);
  g_assert_nonnull(strstr(error->message, "100000x100000"));
  g_clear_error(&error);

  /* not an image at all */
  g_assert_null(insp_image_decode((const guint8 *)"GIF89a......", 12, 3, &error));
  g_assert_cmpstr(error->message, ==, "not a PNG or JPEG image (12 bytes)");
  g_clear_error(&error);
  g_assert_null(insp_image_decode(NULL, 0, 3, &error));
  g_assert_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_FORMAT);
  g_clear_error(&error);

  /* JPEG: truncated, and a bare SOI */
  g_autoptr(GBytes) jpg = write_jpeg(64, 48, 3, img->data, 90);
  const guint8 *j = g_bytes_get_data(jpg, &len);
  for (gsize n = 3; n < len; n += 211) {
    g_assert_null(insp_image_decode(j, n, 3, &error));
    g_assert_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_FORMAT);
    g_assert_true(g_str_has_prefix(error->message, "JPEG: "));
    g_clear_error(&error);
  }
  g_assert_null(insp_image_decode(j, len - 10, 3, &error));
  g_assert_cmpstr(error->message, ==, "JPEG: file is truncated");
  g_clear_error(&error);

  /* a missing file names the path */
  g_assert_null(insp_image_load("/nonexistent/a.png", 3, &error));
  g_assert_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_IO);
  g_assert_nonnull(strstr(error->message, "/nonexistent/a.png"));
}

/* Writes @b to @dir/@name and returns the path. */
static char *
write_file(const char *dir, const char *name, const void *data, gsize len)
{
  char *path = g_build_filename(dir, name, NULL);
  g_autoptr(GError) error = NULL;

  g_assert_true(g_file_set_contents(path, data, (gssize)len, &error));
  g_assert_no_error(error);
  return path;
}

/* insp_image_read_size gives insp_image_load's size from the header alone:
 * every kind of file above, a file damaged past its header (a size here, an
 * error from load), and the header's own errors, each naming the path. */
static void
test_read_size(void)
{
  g_autofree char *dir = g_dir_make_tmp("test-image-XXXXXX", NULL);
  g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GError) error = NULL;
  guint8 rgb[31 * 17 * 3], g16[5 * 3 * 2];
  int w = -1, h = -1;

  fill_random(rgb, sizeof rgb, 21);
  fill_random(g16, sizeof g16, 22);
  {
    g_autoptr(GBytes) a =
        write_png(31, 17, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE, rgb, 31 * 3, NULL, 0);
    g_autoptr(GBytes) b =
        write_png(31, 17, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_ADAM7, rgb, 31 * 3, NULL, 0);
    g_autoptr(GBytes) c =
        write_png(5, 3, PNG_COLOR_TYPE_GRAY, 16, PNG_INTERLACE_NONE, g16, 5 * 2, NULL, 0);
    g_autoptr(GBytes) d = write_jpeg(31, 17, 3, rgb, 90);
    g_autoptr(GBytes) e = write_jpeg(17, 31, 1, rgb, 90);
    GBytes *all[] = {a, b, c, d, e};
    const char *names[] = {"rgb.png", "adam7.png", "grey16.png", "rgb.jpg", "grey.jpg"};

    for (gsize i = 0; i < G_N_ELEMENTS(all); i++)
      g_ptr_array_add(paths, write_file(dir, names[i], g_bytes_get_data(all[i], NULL),
                                        g_bytes_get_size(all[i])));
  }
  for (guint i = 0; i < paths->len; i++) {
    const char *path = g_ptr_array_index(paths, i);
    g_autoptr(InspImage) img = insp_image_load(path, 3, &error);

    g_assert_no_error(error);
    g_assert_true(insp_image_read_size(path, &w, &h, &error));
    g_assert_no_error(error);
    g_assert_cmpint(w, ==, img->width);
    g_assert_cmpint(h, ==, img->height);
  }

  /* the pixels cut off: the header still tells the size; load fails */
  {
    g_autoptr(InspImage) img = insp_image_new(64, 48, 3);
    gsize len;

    fill_random(img->data, 64 * 48 * 3, 23);
    g_autoptr(GBytes) png = insp_image_encode_png(img, NULL);
    const guint8 *d = g_bytes_get_data(png, &len);
    g_autofree char *cut = write_file(dir, "cut.png", d, len / 2);
    g_autofree char *head = write_file(dir, "head.png", d, 20); /* inside IHDR */
    g_autofree guint8 *huge = g_memdup2(d, len);
    guint32 crc;

    g_assert_true(insp_image_read_size(cut, &w, &h, &error));
    g_assert_no_error(error);
    g_assert_cmpint(w, ==, 64);
    g_assert_cmpint(h, ==, 48);
    g_assert_null(insp_image_load(cut, 3, &error));
    g_assert_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_FORMAT);
    g_clear_error(&error);

    g_assert_false(insp_image_read_size(head, &w, &h, &error));
    g_assert_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_FORMAT);
    g_assert_true(g_str_has_prefix(error->message, head));
    g_assert_nonnull(strstr(error->message, "PNG: "));
    g_clear_error(&error);

    huge[16] = 0x00, huge[17] = 0x01, huge[18] = 0x86, huge[19] = 0xa0;
    huge[20] = 0x00, huge[21] = 0x01, huge[22] = 0x86, huge[23] = 0xa0;
    crc = crc32_png(huge + 12, 17);
    huge[29] = (guint8)(crc >> 24), huge[30] = (guint8)(crc >> 16);
    huge[31] = (guint8)(crc >> 8), huge[32] = (guint8)crc;
    g_autofree char *big = write_file(dir, "huge.png", huge, len);
    g_assert_false(insp_image_read_size(big, &w, &h, &error));
    g_assert_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_TOO_LARGE);
    g_assert_nonnull(strstr(error->message, "100000x100000"));
    g_clear_error(&error);
    g_unlink(cut);
    g_unlink(head);
    g_unlink(big);
  }
  {
    g_autofree char *gif = write_file(dir, "x.gif", "GIF89a......", 12);
    g_autoptr(GBytes) jpg = write_jpeg(31, 17, 3, rgb, 90);
    g_autofree char *soi = write_file(dir, "soi.jpg", g_bytes_get_data(jpg, NULL), 3);

    g_assert_false(insp_image_read_size(gif, &w, &h, &error));
    g_assert_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_FORMAT);
    g_assert_nonnull(strstr(error->message, "not a PNG or JPEG image"));
    g_clear_error(&error);
    g_assert_false(insp_image_read_size(soi, &w, &h, &error));
    g_assert_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_FORMAT);
    g_assert_nonnull(strstr(error->message, "JPEG: "));
    g_clear_error(&error);
    g_unlink(gif);
    g_unlink(soi);
  }
  g_assert_false(insp_image_read_size("/nonexistent/a.png", &w, &h, &error));
  g_assert_error(error, INSP_IMAGE_ERROR, INSP_IMAGE_ERROR_IO);
  g_clear_error(&error);
  for (guint i = 0; i < paths->len; i++)
    g_unlink(g_ptr_array_index(paths, i));
  g_rmdir(dir);
}

static void
test_jpeg(void)
{
  /* four flat 16x16 quadrants of known colour */
  const guint8 colours[4][3] = {{200, 30, 40}, {20, 180, 60}, {30, 40, 220}, {128, 128, 128}};
  guint8 data[32 * 32 * 3];
  for (int y = 0; y < 32; y++)
    for (int x = 0; x < 32; x++)
      memcpy(data + 3 * (y * 32 + x), colours[(y / 16) * 2 + x / 16], 3);
  g_autoptr(GBytes) jpg = write_jpeg(32, 32, 3, data, 95);
  g_autoptr(GError) error = NULL;
  g_autoptr(InspImage) img = decode_bytes(jpg, 3, &error);
  g_assert_no_error(error);
  g_assert_cmpint(img->width, ==, 32);
  g_assert_cmpint(img->height, ==, 32);
  for (int q = 0; q < 4; q++) {
    int x = (q % 2) * 16 + 8, y = (q / 2) * 16 + 8;
    for (int c = 0; c < 3; c++)
      g_assert_cmpint(abs(img->data[3 * (y * 32 + x) + c] - colours[q][c]), <=, 6);
  }
  /* grey JPEG, decoded as RGB and as grey */
  guint8 g[24 * 8];
  for (int i = 0; i < 24 * 8; i++)
    g[i] = (guint8)(i % 24 < 12 ? 60 : 190);
  g_autoptr(GBytes) gj = write_jpeg(24, 8, 1, g, 95);
  g_autoptr(InspImage) g3 = decode_bytes(gj, 3, &error);
  g_assert_no_error(error);
  g_assert_cmpint(abs(g3->data[3 * (4 * 24 + 4)] - 60), <=, 4);
  g_assert_cmpint(g3->data[3 * (4 * 24 + 20)], ==, g3->data[3 * (4 * 24 + 20) + 2]);
  g_autoptr(InspImage) g1 = decode_bytes(gj, 1, &error);
  g_assert_no_error(error);
  g_assert_cmpint(abs(g1->data[4 * 24 + 20] - 190), <=, 4);
}

/* ---- preprocessing -------------------------------------------------------- */

/* The definition, in double, written as plainly as possible. */
static void
naive_preprocess(const guint8 *rgb, int w, int h, int stride, int ow, int oh, double crop,
                 const float mean[3], const float std[3], double *out)
{
  int cw = MAX(1, (int)lround(w * crop)), chh = MAX(1, (int)lround(h * crop));
  cw = MIN(cw, w);
  chh = MIN(chh, h);
  int x0 = (w - cw) / 2, y0 = (h - chh) / 2;
  for (int c = 0; c < 3; c++)
    for (int y = 0; y < oh; y++)
      for (int x = 0; x < ow; x++) {
        double sy = (y + 0.5) * chh / oh - 0.5, sx = (x + 0.5) * cw / ow - 0.5;
        if (sy < 0)
          sy = 0;
        if (sx < 0)
          sx = 0;
        int iy = (int)floor(sy), ix = (int)floor(sx);
        int iy1 = MIN(iy + 1, chh - 1), ix1 = MIN(ix + 1, cw - 1);
        double fy = sy - iy, fx = sx - ix;
#define P(yy, xx) ((double)rgb[(gsize)(y0 + (yy)) * stride + (gsize)(x0 + (xx)) * 3 + c])
        double v = (1 - fy) * ((1 - fx) * P(iy, ix) + fx * P(iy, ix1)) +
                   fy * ((1 - fx) * P(iy1, ix) + fx * P(iy1, ix1));
#undef P
        out[((gsize)c * oh + y) * ow + x] = (v / 255.0 - mean[c]) / std[c];
      }
}

static void
check_preprocess(int w, int h, int ow, int oh, float crop, guint32 seed)
{
  const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
  int stride = w * 3 + 5; /* rows not packed */
  g_autofree guint8 *rgb = g_malloc((gsize)stride * h);
  fill_random(rgb, (gsize)stride * h, seed);
  gsize n = (gsize)3 * ow * oh;
  g_autofree float *out = g_new(float, n);
  g_autofree double *ref = g_new(double, n);
  insp_image_preprocess(rgb, w, h, stride, ow, oh, crop, mean, std, out);
  naive_preprocess(rgb, w, h, stride, ow, oh, crop, mean, std, ref);
  double worst = 0;
  for (gsize i = 0; i < n; i++)
    worst = MAX(worst, fabs(out[i] - ref[i]));
  if (g_test_verbose())
    g_test_message("%dx%d -> %dx%d crop %.3f: max |c - ref| = %.3g", w, h, ow, oh, crop, worst);
  g_assert_cmpfloat(worst, <=, PRE_TOL);
}

static void
test_preprocess(void)
{
  check_preprocess(37, 23, 224, 224, 1.0f, 1);
  check_preprocess(640, 480, 224, 224, 1.0f, 2);
  check_preprocess(640, 480, 224, 224, 0.875f, 3);
  check_preprocess(1, 1, 7, 5, 1.0f, 4);
  check_preprocess(224, 224, 224, 224, 1.0f, 5);
  check_preprocess(1000, 3, 33, 17, 0.5f, 6);
  check_preprocess(300, 200, 1500, 9, 1.0f, 7); /* wider than the tap table */

  /* identity size: exactly the pixels, normalised */
  guint8 px[2 * 2 * 3] = {0, 255, 51, 102, 153, 204, 10, 20, 30, 40, 50, 60};
  const float half[3] = {0.5f, 0.5f, 0.5f};
  float out[12];
  insp_image_preprocess(px, 2, 2, 6, 2, 2, 1.0f, half, half, out);
  g_assert_cmpfloat_with_epsilon(out[0], -1.0f, 1e-7); /* R of (0,0) */
  g_assert_cmpfloat_with_epsilon(out[4], 1.0f, 1e-7);  /* G of (0,0) */
  g_assert_cmpfloat_with_epsilon(out[8], 51 / 127.5f - 1.0f, 1e-7);
  g_assert_cmpfloat_with_epsilon(out[3], 40 / 127.5f - 1.0f, 1e-7); /* R of (1,1) */
}

static void
test_preprocess_reference(void)
{
  const char *shared = g_getenv("INSP_SHARED_DIR");
  g_autofree char *path = shared ? g_build_filename(shared, "models", "reference",
                                                    "mobilenetv2_100_features.safetensors", NULL)
                                 : NULL;
  if (!path || !g_file_test(path, G_FILE_TEST_EXISTS)) {
    g_test_skip("INSP_SHARED_DIR/models/reference/mobilenetv2_100_features.safetensors is absent");
    return;
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(InspSafetensors) st = insp_safetensors_open(path, &error);
  g_assert_no_error(error);
  const guint8 *hwc =
      insp_safetensors_get_u8(st, "input_uint8_hwc", 4, (gint64[]){1, 224, 224, 3}, &error);
  g_assert_no_error(error);
  const float *ref = insp_safetensors_get_f32(st, "input", 4, (gint64[]){1, 3, 224, 224}, &error);
  g_assert_no_error(error);
  const float half[3] = {0.5f, 0.5f, 0.5f};
  g_autofree float *out = g_new(float, 3 * 224 * 224);
  insp_image_preprocess(hwc, 224, 224, 224 * 3, 224, 224, 1.0f, half, half, out);
  double worst = 0;
  for (int i = 0; i < 3 * 224 * 224; i++)
    worst = MAX(worst, fabs((double)out[i] - ref[i]));
  g_assert_cmpfloat(worst, <=, 1e-6);
  g_assert_cmpfloat_with_epsilon(out[0], 0.670588f, 1e-6);

  /* the PNG the reference came from decodes to the same pixels */
  g_autofree char *png = g_build_filename(shared, "models", "reference", "input_224.png", NULL);
  g_autoptr(InspImage) img = insp_image_load(png, 3, &error);
  g_assert_no_error(error);
  g_assert_cmpmem(img->data, 224 * 224 * 3, hwc, 224 * 224 * 3);
}

/* insp_image_list_folder: image names only, any case, no hidden files or
 * folders, full paths in bytewise order. */
static void
test_list_folder(void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp("insp-list-XXXXXX", &error);
  const char *files[] = {"b.png", "A.JPG", "c.jpeg", ".hidden.png", "notes.txt", "d.png.bak"};
  g_autoptr(GPtrArray) paths = NULL;
  g_autofree char *sub = NULL;

  g_assert_no_error(error);
  for (gsize i = 0; i < G_N_ELEMENTS(files); i++) {
    g_autofree char *p = g_build_filename(dir, files[i], NULL);
    g_assert_true(g_file_set_contents(p, "x", 1, NULL));
  }
  sub = g_build_filename(dir, "folder.png", NULL);
  g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);

  paths = insp_image_list_folder(dir, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(paths->len, ==, 3);
  g_assert_true(g_str_has_suffix(g_ptr_array_index(paths, 0), "/A.JPG"));
  g_assert_true(g_str_has_suffix(g_ptr_array_index(paths, 1), "/b.png"));
  g_assert_true(g_str_has_suffix(g_ptr_array_index(paths, 2), "/c.jpeg"));

  g_assert_null(insp_image_list_folder("/nonexistent/insp-folder", &error));
  g_assert_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT);

  g_rmdir(sub);
  for (gsize i = 0; i < G_N_ELEMENTS(files); i++) {
    g_autofree char *p = g_build_filename(dir, files[i], NULL);
    g_unlink(p);
  }
  g_rmdir(dir);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/image/png-round-trip", test_png_round_trip);
  g_test_add_func("/image/png-color-types", test_png_color_types);
  g_test_add_func("/image/jpeg", test_jpeg);
  g_test_add_func("/image/corrupt", test_corrupt);
  g_test_add_func("/image/read-size", test_read_size);
  g_test_add_func("/image/preprocess", test_preprocess);
  g_test_add_func("/image/preprocess-reference", test_preprocess_reference);
  g_test_add_func("/image/list-folder", test_list_folder);
  return g_test_run();
}
