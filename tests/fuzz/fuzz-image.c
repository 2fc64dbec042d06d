/* libFuzzer target for the image decoders (PNG, JPEG by magic bytes): any
 * byte string either fails with a GError or decodes to an image whose size
 * is within INSP_IMAGE_MAX_PIXELS; a decoded image also goes through PNG
 * encoding and preprocessing. Also linked into the replay program. */
#include "insp-image.h"

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

int
LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
  GError *error = NULL;
  InspImage *img = insp_image_decode(data, size, 3, &error);

  if (!img) {
    g_assert(error != NULL && error->message[0] != '\0');
    g_error_free(error);
    return 0;
  }
  g_assert((gint64)img->width * img->height <= INSP_IMAGE_MAX_PIXELS);
  /* Keep the per-input work small: big images only get decoded. */
  if ((gint64)img->width * img->height <= 256 * 256) {
    const float mean[3] = {0.5f, 0.5f, 0.5f}, std[3] = {0.5f, 0.5f, 0.5f};
    float out[3 * 16 * 16];
    insp_image_preprocess(img->data, img->width, img->height, img->stride, 16, 16, 0.9f, mean, std,
                          out);
    GBytes *png = insp_image_encode_png(img, NULL);
    g_assert(png != NULL);
    g_bytes_unref(png);
  }
  insp_image_free(img);
  /* Grey output exercises the other conversion path. */
  img = insp_image_decode(data, size, 1, NULL);
  insp_image_free(img);
  return 0;
}
