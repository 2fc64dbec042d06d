/* safetensors I/O: the one file format of model/ (backbone weights, model files,
 * feature dumps).
 *
 * Reading maps the file, checks the header (length, JSON, dtypes, shapes, data
 * offsets against the file and each other, duplicates) before anything is used,
 * and converts F16/BF16 to F32 once, on first access of a tensor. A reader is
 * immutable once opened except for the "used" marks and the lazily converted
 * buffers, which are guarded, so it may be read from several threads.
 * Writing collects tensors and metadata and writes the file atomically
 * (temporary file + rename). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define INSP_SAFETENSORS_ERROR (insp_safetensors_error_quark())
GQuark insp_safetensors_error_quark(void);

typedef enum {
  INSP_SAFETENSORS_ERROR_IO,             /* the file could not be read or written */
  INSP_SAFETENSORS_ERROR_FORMAT,         /* malformed header, offsets, dtype */
  INSP_SAFETENSORS_ERROR_MISSING,        /* a tensor the architecture needs is absent */
  INSP_SAFETENSORS_ERROR_SHAPE,          /* present with the wrong shape or dtype */
  INSP_SAFETENSORS_ERROR_UNEXPECTED,     /* a tensor nobody asked for */
  INSP_SAFETENSORS_ERROR_NOT_SAFETENSORS /* not a safetensors file at all (an image, random
                                          * bytes): its header length cannot be right */
} InspSafetensorsError;

typedef enum {
  INSP_DTYPE_F32,
  INSP_DTYPE_F16,
  INSP_DTYPE_BF16,
  INSP_DTYPE_F64,
  INSP_DTYPE_U8,
  INSP_DTYPE_I32,
  INSP_DTYPE_I64,
} InspDtype;

#define INSP_SAFETENSORS_MAX_DIMS 8

typedef struct {
  const char *name; /* owned by the reader */
  InspDtype dtype;
  int ndim;
  gint64 shape[INSP_SAFETENSORS_MAX_DIMS];
  gint64 n_elements;
} InspTensorInfo;

typedef struct _InspSafetensors InspSafetensors;

/* Which file a path names, and which version of it: a file replaced by a
 * rename has another inode, one written in place another size or mtime. */
typedef struct {
  guint64 dev, ino, size;
  gint64 mtime_ns;
} InspFileId;
/* FALSE when @path cannot be stat'ed. */
gboolean insp_file_id_from_path(const char *path, InspFileId *id);
gboolean insp_file_id_equal(const InspFileId *a, const InspFileId *b);

/* Reads @path whole into private memory and validates it. Returns NULL with
 * @error set on any problem (also when the file changes while it is read);
 * the message names the file and what is wrong. */
InspSafetensors *insp_safetensors_open(const char *path, GError **error);
/* Same checks on a buffer in memory; @data must outlive the reader (fuzzing,
 * tests). */
InspSafetensors *insp_safetensors_new_from_data(const guint8 *data, gsize len, GError **error);
void insp_safetensors_free(InspSafetensors *st);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspSafetensors, insp_safetensors_free)

const char *insp_safetensors_get_path(const InspSafetensors *st); /* "<memory>" for data */
/* The identity of the file as read (zeros for data in memory), and its bytes. */
const InspFileId *insp_safetensors_get_file_id(const InspSafetensors *st);
const guint8 *insp_safetensors_get_bytes(const InspSafetensors *st, gsize *len);
guint insp_safetensors_get_n_tensors(const InspSafetensors *st);
/* Tensor infos in file order; @index < n_tensors. */
const InspTensorInfo *insp_safetensors_get_info(const InspSafetensors *st, guint index);
/* NULL when absent. */
const InspTensorInfo *insp_safetensors_lookup(const InspSafetensors *st, const char *name);

/* The tensor @name as F32 (converted from F16/BF16/F64 once, owned by the reader),
 * after checking that its shape is exactly @shape[0..ndim-1] (ndim 0 = any shape).
 * Marks the tensor used. Errors: MISSING ("tensor 'x' is missing, expected shape
 * [a,b]"), SHAPE ("tensor 'x' has shape [..], expected [..]"). */
const float *insp_safetensors_get_f32(InspSafetensors *st, const char *name, int ndim,
                                      const gint64 *shape, GError **error);
/* Raw bytes of a U8 tensor, same checks. */
const guint8 *insp_safetensors_get_u8(InspSafetensors *st, const char *name, int ndim,
                                      const gint64 *shape, GError **error);
/* Fails with UNEXPECTED naming the first tensor whose name starts with @prefix
 * (NULL: any) that no get_* call has used. */
gboolean insp_safetensors_check_all_used(const InspSafetensors *st, const char *prefix,
                                         GError **error);

/* __metadata__ (string to string). NULL when absent. */
const char *insp_safetensors_get_metadata(const InspSafetensors *st, const char *key);
/* NULL-terminated array of keys, sorted; free with g_free (strings are borrowed). */
const char **insp_safetensors_get_metadata_keys(const InspSafetensors *st);

typedef struct _InspSafetensorsWriter InspSafetensorsWriter;

InspSafetensorsWriter *insp_safetensors_writer_new(void);
void insp_safetensors_writer_free(InspSafetensorsWriter *w);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspSafetensorsWriter, insp_safetensors_writer_free)
/* Copies @data (n = product of @shape). A repeated name is a programming error. */
void insp_safetensors_writer_add_f32(InspSafetensorsWriter *w, const char *name, int ndim,
                                     const gint64 *shape, const float *data);
void insp_safetensors_writer_add_u8(InspSafetensorsWriter *w, const char *name, int ndim,
                                    const gint64 *shape, const guint8 *data);
void insp_safetensors_writer_set_metadata(InspSafetensorsWriter *w, const char *key,
                                          const char *value);
/* The whole file as bytes (header + data), for tests and fuzz seeds. */
GBytes *insp_safetensors_writer_to_bytes(InspSafetensorsWriter *w);
/* Writes atomically (tmp + fsync + rename). */
gboolean insp_safetensors_writer_save(InspSafetensorsWriter *w, const char *path, GError **error);

G_END_DECLS
