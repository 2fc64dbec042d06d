/* libFuzzer target for the safetensors reader: any byte string either fails
 * with a GError or opens, and then every tensor and metadata entry can be
 * read without touching memory outside the input. Also linked into a replay
 * program (fuzz-replay.c) that runs the seed corpus in every build. */
#include "insp-safetensors.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

int
LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
  /* A private copy: the reader may keep pointers into it, and the fuzzer's
   * buffer has no slack, so overreads show up under ASan. */
  guint8 *copy = g_memdup2(data, size);
  GError *error = NULL;
  InspSafetensors *st = insp_safetensors_new_from_data(copy, size, &error);

  if (!st) {
    g_assert(error != NULL && error->message[0] != '\0');
    g_error_free(error);
    g_free(copy);
    return 0;
  }
  volatile float fsum = 0;
  volatile guint usum = 0;
  for (guint i = 0; i < insp_safetensors_get_n_tensors(st); i++) {
    const InspTensorInfo *info = insp_safetensors_get_info(st, i);
    g_assert(insp_safetensors_lookup(st, info->name) == info);
    if (info->dtype == INSP_DTYPE_U8) {
      const guint8 *u = insp_safetensors_get_u8(st, info->name, info->ndim, info->shape, NULL);
      g_assert(u != NULL);
      for (gint64 k = 0; k < info->n_elements; k++)
        usum += u[k];
    } else {
      const float *f =
        insp_safetensors_get_f32(st, info->name, info->ndim, info->shape, &error);
      if (info->dtype == INSP_DTYPE_I32 || info->dtype == INSP_DTYPE_I64) {
        g_assert(f == NULL);
        g_clear_error(&error);
        continue;
      }
      g_assert(f != NULL);
      for (gint64 k = 0; k < info->n_elements; k++)
        fsum += f[k];
    }
  }
  g_autofree const char **keys = insp_safetensors_get_metadata_keys(st);
  for (const char **k = keys; *k; k++)
    usum += (guint)strlen(insp_safetensors_get_metadata(st, *k));
  g_assert(insp_safetensors_check_all_used(st, NULL, &error) || error != NULL);
  g_clear_error(&error);
  insp_safetensors_free(st);
  g_free(copy);
  return 0;
}
