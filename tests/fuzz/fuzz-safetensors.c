/* libFuzzer target for the safetensors reader: any byte string either fails
 * with a GError or opens, and then every tensor and metadata entry can be
 * read without touching memory outside the input. Also linked into a replay
 * program (fuzz-replay.c) that runs the seed corpus in every build. */
#include "insp-safetensors.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

/* Where the sums of all values go, so reading them cannot be optimised away. */
static volatile double fuzz_sink;

/* Writes every float/U8 tensor (as F32/U8) and the metadata of @st with the
 * writer, reads the result back, and checks it holds the same names, shapes,
 * bits and metadata: the writer's output must always satisfy the reader. */
static void
rewrite_and_compare(InspSafetensors *st)
{
  g_autoptr(InspSafetensorsWriter) w = insp_safetensors_writer_new();
  g_autofree const char **keys = insp_safetensors_get_metadata_keys(st);
  for (const char **k = keys; *k; k++)
    insp_safetensors_writer_set_metadata(w, *k, insp_safetensors_get_metadata(st, *k));
  guint n = insp_safetensors_get_n_tensors(st);
  for (guint i = 0; i < n; i++) {
    const InspTensorInfo *info = insp_safetensors_get_info(st, i);
    if (info->dtype == INSP_DTYPE_U8)
      insp_safetensors_writer_add_u8(w, info->name, info->ndim, info->shape,
                                     insp_safetensors_get_u8(st, info->name, 0, NULL, NULL));
    else if (info->dtype != INSP_DTYPE_I32 && info->dtype != INSP_DTYPE_I64)
      insp_safetensors_writer_add_f32(w, info->name, info->ndim, info->shape,
                                      insp_safetensors_get_f32(st, info->name, 0, NULL, NULL));
  }
  g_autoptr(GBytes) bytes = insp_safetensors_writer_to_bytes(w);
  gsize len;
  const guint8 *d = g_bytes_get_data(bytes, &len);
  guint64 hlen;
  memcpy(&hlen, d, 8);
  g_assert(GUINT64_FROM_LE(hlen) % 8 == 0);
  GError *error = NULL;
  g_autoptr(InspSafetensors) back = insp_safetensors_new_from_data(d, len, &error);
  if (!back)
    g_error("re-reading the writer's output failed: %s", error->message);
  for (const char **k = keys; *k; k++)
    g_assert(g_strcmp0(insp_safetensors_get_metadata(back, *k),
                       insp_safetensors_get_metadata(st, *k)) == 0);
  for (guint i = 0; i < n; i++) {
    const InspTensorInfo *a = insp_safetensors_get_info(st, i);
    if (a->dtype == INSP_DTYPE_I32 || a->dtype == INSP_DTYPE_I64)
      continue;
    const InspTensorInfo *b = insp_safetensors_lookup(back, a->name);
    g_assert(b != NULL && b->ndim == a->ndim && b->n_elements == a->n_elements);
    g_assert(memcmp(a->shape, b->shape, sizeof(gint64) * (gsize)a->ndim) == 0);
    if (a->dtype == INSP_DTYPE_U8) {
      g_assert(memcmp(insp_safetensors_get_u8(st, a->name, 0, NULL, NULL),
                      insp_safetensors_get_u8(back, a->name, 0, NULL, NULL),
                      (gsize)a->n_elements) == 0);
    } else {
      g_assert(b->dtype == INSP_DTYPE_F32);
      g_assert(memcmp(insp_safetensors_get_f32(st, a->name, 0, NULL, NULL),
                      insp_safetensors_get_f32(back, a->name, 0, NULL, NULL),
                      4 * (gsize)a->n_elements) == 0);
    }
  }
}

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
  double fsum = 0;
  guint usum = 0;
  for (guint i = 0; i < insp_safetensors_get_n_tensors(st); i++) {
    const InspTensorInfo *info = insp_safetensors_get_info(st, i);
    g_assert(insp_safetensors_lookup(st, info->name) == info);
    if (info->dtype == INSP_DTYPE_U8) {
      const guint8 *u = insp_safetensors_get_u8(st, info->name, info->ndim, info->shape, NULL);
      g_assert(u != NULL);
      for (gint64 k = 0; k < info->n_elements; k++)
        usum += u[k];
    } else {
      const float *f = insp_safetensors_get_f32(st, info->name, info->ndim, info->shape, &error);
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
  fuzz_sink = fsum + usum;
  g_assert(insp_safetensors_check_all_used(st, NULL, &error) || error != NULL);
  g_clear_error(&error);
  rewrite_and_compare(st);
  insp_safetensors_free(st);
  g_free(copy);
  return 0;
}
