/* Images in memory, decoding (PNG through libpng, JPEG through libjpeg), PNG
 * encoding, and the one preprocessing path from an RGB8 image of any size to
 * the model's input tensor. train, eval and the live daemon all go through
 * insp_image_preprocess(), so a part scores the same live as offline. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define INSP_IMAGE_ERROR (insp_image_error_quark())
GQuark insp_image_error_quark(void);

typedef enum {
  INSP_IMAGE_ERROR_IO,
  INSP_IMAGE_ERROR_FORMAT,   /* not a PNG/JPEG, corrupt, or unsupported */
  INSP_IMAGE_ERROR_TOO_LARGE /* over INSP_IMAGE_MAX_PIXELS */
} InspImageError;

#define INSP_IMAGE_MAX_PIXELS (64 * 1024 * 1024)

/* Packed 8-bit pixels, @channels 1 (grey) or 3 (RGB), rows @stride bytes apart. */
typedef struct {
  int width;
  int height;
  int channels;
  int stride;
  guint8 *data; /* owned */
} InspImage;

InspImage *insp_image_new(int width, int height, int channels); /* zeroed, stride = w*channels */
void insp_image_free(InspImage *img);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspImage, insp_image_free)

/* Decodes PNG or JPEG (by content, not extension) to RGB (grey replicated,
 * alpha dropped, 16-bit reduced to 8) or, with @channels = 1, to grey.
 * Every size is checked before allocation. */
InspImage *insp_image_load(const char *path, int channels, GError **error);
InspImage *insp_image_decode(const guint8 *data, gsize len, int channels, GError **error);
/* The size insp_image_load would give @path, from the file's header alone (no
 * pixels decoded); the same errors for what the header shows (not a PNG/JPEG,
 * a corrupt header, over INSP_IMAGE_MAX_PIXELS). A file whose pixels are
 * damaged past the header has a size here and fails insp_image_load. */
gboolean insp_image_read_size(const char *path, int *width, int *height, GError **error);
/* PNG encoding of a 1- or 3-channel image to memory / file. */
GBytes *insp_image_encode_png(const InspImage *img, GError **error);
gboolean insp_image_save_png(const InspImage *img, const char *path, GError **error);
/* Baseline JPEG of a 1- or 3-channel image, @quality 1..100 (clamped). */
GBytes *insp_image_encode_jpeg(const InspImage *img, int quality, GError **error);

/* TRUE when @name ends in .png, .jpg or .jpeg, in any case, and not in
 * .overlay.jpg (the archive's heat-map pictures): the files that train and
 * eval take from a folder. */
gboolean insp_image_has_image_name(const char *name);
/* The image files directly in @dir (by name as above; hidden entries and
 * folders skipped), as full paths sorted bytewise; a new array that frees its
 * strings. NULL with @error when @dir cannot be read. */
GPtrArray *insp_image_list_folder(const char *dir, GError **error);

/* RGB8 (@rgb, @width x @height, rows @stride bytes apart) -> float CHW
 * [3, out_h, out_w]: bilinear resize with half-pixel centres (align_corners =
 * False, no antialias, no rounding back to 8 bits) of the whole image, or of its
 * centred crop of @crop_fraction (1.0 = no crop), then x = (p/255 - mean)/std.
 * @out holds 3*out_h*out_w floats. */
void insp_image_preprocess(const guint8 *rgb, int width, int height, int stride, int out_w,
                           int out_h, float crop_fraction, const float mean[3], const float std[3],
                           float *out);

G_END_DECLS
