/* safetensors reader and writer: the one file format of model/.
 *
 * Format: u64 little-endian header length N, N bytes of JSON (an object whose
 * members are "__metadata__" (string -> string) and tensors
 * {"dtype","shape","data_offsets"}), then the data section; data_offsets are
 * relative to the start of the data section.
 *
 * The header is parsed by a small strict parser of our own (not a general JSON
 * library) so that every rule is ours: duplicate keys are rejected, the header
 * is capped at INSP_ST_MAX_HEADER bytes, tensors at INSP_ST_MAX_TENSORS,
 * metadata entries at INSP_ST_MAX_METADATA, dimensions at
 * INSP_SAFETENSORS_MAX_DIMS; integers are checked for overflow while they are
 * read, the shape product and byte size against overflow, and the data offsets
 * against the data section and each other. Like the reference implementation
 * we are strict about layout: tensors must cover the data section exactly,
 * without overlaps, gaps or trailing bytes.
 *
 * A file is read whole into private memory, not mapped: a model is the
 * daemon's own once loaded, so that a file truncated or copied over in place
 * while it runs changes nothing (a mapping would SIGBUS on a truncated file
 * and show a copy's bytes through untouched pages). The file's identity
 * (device, inode, size, mtime) is kept, so that a caller can tell a replaced
 * file from the one it read; a file that changes while it is read is refused.
 *
 * Invariants of a reader once opened: the tensor table, metadata and bytes
 * never change. The only mutable state is per tensor: the "used" flag (atomic)
 * and the F32 copy made on first access when the stored data is not directly
 * usable (F16/BF16/F64, misaligned F32, big-endian host), created once under
 * g_once_init_enter. So any number of threads may call the get_* functions on
 * one reader; open and free belong to one thread.
 *
 * The writer is single-threaded: it collects copies of tensors and metadata,
 * then writes header (keys in insertion order, __metadata__ first, padded with
 * spaces to a multiple of 8) and data back to back into a temporary file in the
 * destination's folder, fsyncs it and renames it over the destination. */
#include "insp-safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#define INSP_ST_MAX_HEADER ((guint64)100 * 1024 * 1024)
#define INSP_ST_MAX_TENSORS 100000
#define INSP_ST_MAX_METADATA 10000

GQuark
insp_safetensors_error_quark(void)
{
  return g_quark_from_static_string("insp-safetensors-error-quark");
}

typedef struct {
  InspTensorInfo info;
  char *name;
  guint64 begin; /* relative to the data section */
  guint64 end;
  const guint8 *raw;
  gsize f32_once; /* float * converted copy, set once */
  gint used;
} Tensor;

struct _InspSafetensors {
  char *path;
  const guint8 *data; /* whole file */
  gsize len;
  gboolean owned; /* @data is ours (g_free) */
  InspFileId id;
  Tensor *tensors;
  guint n_tensors;
  GHashTable *by_name;  /* name -> index + 1 */
  GHashTable *metadata; /* key -> value, owned */
};

static const struct {
  const char *name;
  InspDtype dtype;
  guint size;
} dtype_table[] = {
    {"F32", INSP_DTYPE_F32, 4}, {"F16", INSP_DTYPE_F16, 2}, {"BF16", INSP_DTYPE_BF16, 2},
    {"F64", INSP_DTYPE_F64, 8}, {"U8", INSP_DTYPE_U8, 1},   {"I32", INSP_DTYPE_I32, 4},
    {"I64", INSP_DTYPE_I64, 8},
};

static guint
dtype_size(InspDtype dtype)
{
  for (gsize i = 0; i < G_N_ELEMENTS(dtype_table); i++)
    if (dtype_table[i].dtype == dtype)
      return dtype_table[i].size;
  g_assert_not_reached();
}

static const char *
dtype_name(InspDtype dtype)
{
  for (gsize i = 0; i < G_N_ELEMENTS(dtype_table); i++)
    if (dtype_table[i].dtype == dtype)
      return dtype_table[i].name;
  g_assert_not_reached();
}

static void
append_shape(GString *s, int ndim, const gint64 *shape)
{
  g_string_append_c(s, '[');
  for (int i = 0; i < ndim; i++)
    g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? "," : "", shape[i]);
  g_string_append_c(s, ']');
}

/* ---- strict header parser ---------------------------------------------- */

typedef struct {
  const char *start;
  const char *p;
  const char *end;
  char *err; /* first error, owned */
} Parser;

static gboolean G_GNUC_PRINTF(2, 3) parse_fail(Parser *ps, const char *fmt, ...)
{
  if (!ps->err) {
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    ps->err = g_strdup_printf("bad JSON header at byte %" G_GSIZE_FORMAT ": %s",
                              (gsize)(ps->p - ps->start), msg);
  }
  return FALSE;
}

static void
skip_ws(Parser *ps)
{
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    ps->p++;
}

static gboolean
expect_char(Parser *ps, char c)
{
  skip_ws(ps);
  if (ps->p >= ps->end)
    return parse_fail(ps, "expected '%c', found the end of the header", c);
  if (*ps->p != c)
    return parse_fail(ps, "expected '%c'", c);
  ps->p++;
  return TRUE;
}

/* TRUE and consumes @c when it is the next non-blank character. */
static gboolean
accept_char(Parser *ps, char c)
{
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == c) {
    ps->p++;
    return TRUE;
  }
  return FALSE;
}

static int
hex4(const char *p)
{
  int v = 0;
  for (int i = 0; i < 4; i++) {
    int d = g_ascii_xdigit_value(p[i]);
    if (d < 0)
      return -1;
    v = v * 16 + d;
  }
  return v;
}

/* A JSON string, decoded, valid UTF-8 without NUL. */
static char *
parse_string(Parser *ps)
{
  skip_ws(ps);
  if (ps->p >= ps->end || *ps->p != '"') {
    parse_fail(ps, "expected a string");
    return NULL;
  }
  ps->p++;
  g_autoptr(GString) s = g_string_new(NULL);
  for (;;) {
    if (ps->p >= ps->end) {
      parse_fail(ps, "unterminated string");
      return NULL;
    }
    guchar c = (guchar)*ps->p;
    if (c == '"') {
      ps->p++;
      break;
    }
    if (c < 0x20) {
      parse_fail(ps, "control character in a string");
      return NULL;
    }
    if (c != '\\') {
      g_string_append_c(s, (char)c);
      ps->p++;
      continue;
    }
    if (ps->end - ps->p < 2) {
      parse_fail(ps, "unterminated escape");
      return NULL;
    }
    char e = ps->p[1];
    ps->p += 2;
    switch (e) {
    case '"':
      g_string_append_c(s, '"');
      break;
    case '\\':
      g_string_append_c(s, '\\');
      break;
    case '/':
      g_string_append_c(s, '/');
      break;
    case 'b':
      g_string_append_c(s, '\b');
      break;
    case 'f':
      g_string_append_c(s, '\f');
      break;
    case 'n':
      g_string_append_c(s, '\n');
      break;
    case 'r':
      g_string_append_c(s, '\r');
      break;
    case 't':
      g_string_append_c(s, '\t');
      break;
    case 'u': {
      int u = ps->end - ps->p >= 4 ? hex4(ps->p) : -1;
      if (u < 0) {
        parse_fail(ps, "bad \\u escape");
        return NULL;
      }
      ps->p += 4;
      gunichar cp = (gunichar)u;
      if (u >= 0xD800 && u <= 0xDBFF) {
        int lo = ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u' ? hex4(ps->p + 2) : -1;
        if (lo < 0xDC00 || lo > 0xDFFF) {
          parse_fail(ps, "unpaired surrogate in \\u escape");
          return NULL;
        }
        ps->p += 6;
        cp = 0x10000 + (((gunichar)u - 0xD800) << 10) + ((gunichar)lo - 0xDC00);
      } else if (u >= 0xDC00 && u <= 0xDFFF) {
        parse_fail(ps, "unpaired surrogate in \\u escape");
        return NULL;
      } else if (u == 0) {
        parse_fail(ps, "NUL character in a string");
        return NULL;
      }
      g_string_append_unichar(s, cp);
      break;
    }
    default:
      parse_fail(ps, "bad escape '\\%c'", g_ascii_isprint(e) ? e : '?');
      return NULL;
    }
  }
  if (!g_utf8_validate_len(s->str, s->len, NULL)) {
    parse_fail(ps, "string is not valid UTF-8");
    return NULL;
  }
  return g_string_free(g_steal_pointer(&s), FALSE);
}

/* A non-negative JSON integer up to G_MAXINT64 (no sign, fraction or exponent). */
static gboolean
parse_uint(Parser *ps, const char *what, guint64 *out)
{
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == '-')
    return parse_fail(ps, "%s is negative", what);
  if (ps->p >= ps->end || !g_ascii_isdigit(*ps->p))
    return parse_fail(ps, "%s: expected a non-negative integer", what);
  if (*ps->p == '0' && ps->end - ps->p > 1 && g_ascii_isdigit(ps->p[1]))
    return parse_fail(ps, "%s: leading zero", what);
  guint64 v = 0;
  while (ps->p < ps->end && g_ascii_isdigit(*ps->p)) {
    guint d = (guint)(*ps->p - '0');
    if (v > ((guint64)G_MAXINT64 - d) / 10)
      return parse_fail(ps, "%s: integer too large", what);
    v = v * 10 + d;
    ps->p++;
  }
  if (ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E'))
    return parse_fail(ps, "%s: expected an integer", what);
  *out = v;
  return TRUE;
}

static gboolean
parse_metadata(Parser *ps, GHashTable *metadata)
{
  if (!expect_char(ps, '{'))
    return FALSE;
  if (accept_char(ps, '}'))
    return TRUE;
  do {
    g_autofree char *key = parse_string(ps);
    if (!key)
      return FALSE;
    if (!expect_char(ps, ':'))
      return FALSE;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p != '"')
      return parse_fail(ps, "__metadata__ value of '%s' is not a string", key);
    g_autofree char *value = parse_string(ps);
    if (!value)
      return FALSE;
    if (g_hash_table_contains(metadata, key))
      return parse_fail(ps, "duplicate __metadata__ key '%s'", key);
    if (g_hash_table_size(metadata) >= INSP_ST_MAX_METADATA)
      return parse_fail(ps, "more than %d __metadata__ entries", INSP_ST_MAX_METADATA);
    g_hash_table_insert(metadata, g_steal_pointer(&key), g_steal_pointer(&value));
  } while (accept_char(ps, ','));
  return expect_char(ps, '}');
}

/* One tensor entry; @t->name is set. Fills dtype, shape, offsets. */
static gboolean
parse_tensor(Parser *ps, Tensor *t)
{
  gboolean have_dtype = FALSE, have_shape = FALSE, have_offsets = FALSE;

  if (!expect_char(ps, '{'))
    return FALSE;
  if (accept_char(ps, '}'))
    return parse_fail(ps, "tensor '%s' has no dtype, shape or data_offsets", t->name);
  do {
    g_autofree char *key = parse_string(ps);
    if (!key)
      return FALSE;
    if (!expect_char(ps, ':'))
      return FALSE;
    if (strcmp(key, "dtype") == 0) {
      if (have_dtype)
        return parse_fail(ps, "tensor '%s': duplicate key 'dtype'", t->name);
      have_dtype = TRUE;
      g_autofree char *d = parse_string(ps);
      if (!d)
        return FALSE;
      gsize i;
      for (i = 0; i < G_N_ELEMENTS(dtype_table); i++)
        if (strcmp(d, dtype_table[i].name) == 0)
          break;
      if (i == G_N_ELEMENTS(dtype_table))
        return parse_fail(ps, "tensor '%s': unknown dtype '%s'", t->name, d);
      t->info.dtype = dtype_table[i].dtype;
    } else if (strcmp(key, "shape") == 0) {
      if (have_shape)
        return parse_fail(ps, "tensor '%s': duplicate key 'shape'", t->name);
      have_shape = TRUE;
      if (!expect_char(ps, '['))
        return FALSE;
      if (!accept_char(ps, ']')) {
        do {
          guint64 v;
          if (t->info.ndim >= INSP_SAFETENSORS_MAX_DIMS)
            return parse_fail(ps, "tensor '%s' has more than %d dimensions", t->name,
                              INSP_SAFETENSORS_MAX_DIMS);
          if (!parse_uint(ps, "shape", &v))
            return FALSE;
          t->info.shape[t->info.ndim++] = (gint64)v;
        } while (accept_char(ps, ','));
        if (!expect_char(ps, ']'))
          return FALSE;
      }
    } else if (strcmp(key, "data_offsets") == 0) {
      if (have_offsets)
        return parse_fail(ps, "tensor '%s': duplicate key 'data_offsets'", t->name);
      have_offsets = TRUE;
      if (!expect_char(ps, '[') || !parse_uint(ps, "data_offsets", &t->begin) ||
          !expect_char(ps, ',') || !parse_uint(ps, "data_offsets", &t->end))
        return FALSE;
      if (!accept_char(ps, ']'))
        return parse_fail(ps, "tensor '%s': data_offsets must have 2 entries", t->name);
    } else {
      return parse_fail(ps, "tensor '%s': unknown key '%s'", t->name, key);
    }
  } while (accept_char(ps, ','));
  if (!expect_char(ps, '}'))
    return FALSE;
  if (!have_dtype)
    return parse_fail(ps, "tensor '%s' has no dtype", t->name);
  if (!have_shape)
    return parse_fail(ps, "tensor '%s' has no shape", t->name);
  if (!have_offsets)
    return parse_fail(ps, "tensor '%s' has no data_offsets", t->name);
  return TRUE;
}

/* ---- reader ------------------------------------------------------------ */

static void G_GNUC_PRINTF(4, 5) set_error(GError **error, const InspSafetensors *st,
                                          InspSafetensorsError code, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, INSP_SAFETENSORS_ERROR, code, "%s: %s", st->path, msg);
}

static int
cmp_tensor_ptr_by_offset(gconstpointer a, gconstpointer b)
{
  const Tensor *x = *(const Tensor *const *)a, *y = *(const Tensor *const *)b;
  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end)
    return x->end < y->end ? -1 : 1;
  return 0;
}

static gboolean
check_layout(InspSafetensors *st, guint64 data_len, GError **error)
{
  g_autofree Tensor **order = g_new(Tensor *, st->n_tensors + 1);

  for (guint i = 0; i < st->n_tensors; i++) {
    Tensor *t = &st->tensors[i];
    guint64 size = dtype_size(t->info.dtype);
    guint64 n = 1;
    for (int d = 0; d < t->info.ndim; d++) {
      guint64 dim = (guint64)t->info.shape[d];
      if (dim != 0 && n > (guint64)G_MAXINT64 / size / dim) {
        g_autoptr(GString) s = g_string_new(NULL);
        append_shape(s, t->info.ndim, t->info.shape);
        set_error(error, st, INSP_SAFETENSORS_ERROR_FORMAT,
                  "tensor '%s': shape %s is too large (element count overflows)", t->name, s->str);
        return FALSE;
      }
      n *= dim;
    }
    t->info.n_elements = (gint64)n;
    if (t->begin > t->end) {
      set_error(error, st, INSP_SAFETENSORS_ERROR_FORMAT,
                "tensor '%s': data_offsets [%" G_GUINT64_FORMAT ",%" G_GUINT64_FORMAT
                "] end before they begin",
                t->name, t->begin, t->end);
      return FALSE;
    }
    if (t->end > data_len) {
      set_error(error, st, INSP_SAFETENSORS_ERROR_FORMAT,
                "tensor '%s': data_offsets [%" G_GUINT64_FORMAT ",%" G_GUINT64_FORMAT
                "] are out of range (data section is %" G_GUINT64_FORMAT " bytes)",
                t->name, t->begin, t->end, data_len);
      return FALSE;
    }
    if (t->end - t->begin != n * size) {
      g_autoptr(GString) s = g_string_new(NULL);
      append_shape(s, t->info.ndim, t->info.shape);
      set_error(error, st, INSP_SAFETENSORS_ERROR_FORMAT,
                "tensor '%s': data_offsets span %" G_GUINT64_FORMAT
                " bytes but %s shape %s needs %" G_GUINT64_FORMAT,
                t->name, t->end - t->begin, dtype_name(t->info.dtype), s->str, n * size);
      return FALSE;
    }
    order[i] = t;
  }
  qsort(order, st->n_tensors, sizeof *order, cmp_tensor_ptr_by_offset);
  guint64 pos = 0;
  const Tensor *prev = NULL;
  for (guint i = 0; i < st->n_tensors; i++) {
    const Tensor *t = order[i];
    if (t->begin < pos) {
      set_error(error, st, INSP_SAFETENSORS_ERROR_FORMAT,
                "tensor '%s' (bytes %" G_GUINT64_FORMAT "..%" G_GUINT64_FORMAT
                ") overlaps tensor '%s' (bytes %" G_GUINT64_FORMAT "..%" G_GUINT64_FORMAT ")",
                t->name, t->begin, t->end, prev->name, prev->begin, prev->end);
      return FALSE;
    }
    if (t->begin > pos) {
      set_error(error, st, INSP_SAFETENSORS_ERROR_FORMAT,
                "gap of %" G_GUINT64_FORMAT " bytes in the data section before tensor '%s'"
                " (tensors must be stored back to back)",
                t->begin - pos, t->name);
      return FALSE;
    }
    if (t->end > pos) {
      pos = t->end;
      prev = t;
    } else if (!prev) {
      prev = t;
    }
  }
  if (pos != data_len) {
    set_error(error, st, INSP_SAFETENSORS_ERROR_FORMAT,
              "%" G_GUINT64_FORMAT " bytes after the last tensor's data are not used by any tensor",
              data_len - pos);
    return FALSE;
  }
  return TRUE;
}

/* " (it is a PNG image)" and the like for a file that is clearly something
 * else, or "". */
static const char *
file_kind(const guint8 *data, gsize len)
{
  if (len >= 8 && memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0)
    return " (it is a PNG image)";
  if (len >= 3 && memcmp(data, "\xff\xd8\xff", 3) == 0)
    return " (it is a JPEG image)";
  return "";
}

static gboolean
parse_file(InspSafetensors *st, GError **error)
{
  if (st->len < 8) {
    set_error(error, st, INSP_SAFETENSORS_ERROR_FORMAT,
              "file is too short (%" G_GSIZE_FORMAT " bytes) for a safetensors header", st->len);
    return FALSE;
  }
  guint64 hlen;
  memcpy(&hlen, st->data, 8);
  hlen = GUINT64_FROM_LE(hlen);
  if (hlen > st->len - 8 && hlen <= INSP_ST_MAX_HEADER && st->len > 8 && st->data[8] == '{') {
    /* A JSON header cut short: a safetensors file, truncated. */
    set_error(error, st, INSP_SAFETENSORS_ERROR_FORMAT,
              "header length %" G_GUINT64_FORMAT " is past the end of the file (%" G_GSIZE_FORMAT
              " bytes): the file is truncated",
              hlen, st->len);
    return FALSE;
  }
  if (hlen > INSP_ST_MAX_HEADER || hlen > st->len - 8) {
    /* Any other file read as safetensors: its first 8 bytes, as a length,
     * are nonsense. Said as what it is, not as a number. */
    g_set_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_NOT_SAFETENSORS,
                "%s is not a safetensors file%s: the header length in its first 8 bytes is "
                "implausible for a file of %" G_GSIZE_FORMAT " bytes",
                st->path, file_kind(st->data, st->len), st->len);
    return FALSE;
  }
  if (hlen < 2) {
    set_error(error, st, INSP_SAFETENSORS_ERROR_FORMAT,
              "header length %" G_GUINT64_FORMAT " is too short for a JSON object", hlen);
    return FALSE;
  }

  Parser ps = {(const char *)st->data + 8, (const char *)st->data + 8,
               (const char *)st->data + 8 + hlen, NULL};
  g_autoptr(GArray) tensors = g_array_new(FALSE, TRUE, sizeof(Tensor));
  gboolean ok = FALSE, have_meta = FALSE;

  if (!expect_char(&ps, '{'))
    goto out;
  if (!accept_char(&ps, '}')) {
    do {
      g_autofree char *key = parse_string(&ps);
      if (!key || !expect_char(&ps, ':'))
        goto out;
      if (strcmp(key, "__metadata__") == 0) {
        if (have_meta) {
          parse_fail(&ps, "duplicate key '__metadata__'");
          goto out;
        }
        have_meta = TRUE;
        if (!parse_metadata(&ps, st->metadata))
          goto out;
        continue;
      }
      if (g_hash_table_contains(st->by_name, key)) {
        parse_fail(&ps, "duplicate tensor '%s'", key);
        goto out;
      }
      if (tensors->len >= INSP_ST_MAX_TENSORS) {
        parse_fail(&ps, "more than %d tensors", INSP_ST_MAX_TENSORS);
        goto out;
      }
      Tensor t = {0};
      t.name = g_steal_pointer(&key);
      g_array_append_val(tensors, t);
      Tensor *tp = &g_array_index(tensors, Tensor, tensors->len - 1);
      g_hash_table_insert(st->by_name, tp->name, GUINT_TO_POINTER(tensors->len));
      if (!parse_tensor(&ps, tp))
        goto out;
    } while (accept_char(&ps, ','));
    if (!expect_char(&ps, '}'))
      goto out;
  }
  skip_ws(&ps);
  if (ps.p != ps.end) {
    parse_fail(&ps, "data after the JSON object");
    goto out;
  }
  ok = TRUE;

out:
  st->n_tensors = tensors->len;
  st->tensors = (Tensor *)(void *)g_array_free(g_steal_pointer(&tensors), FALSE);
  if (!ok) {
    set_error(error, st, INSP_SAFETENSORS_ERROR_FORMAT, "%s", ps.err);
    g_free(ps.err);
    return FALSE;
  }
  /* The hash table pointed into the array, which may have moved: rebuild. */
  for (guint i = 0; i < st->n_tensors; i++) {
    st->tensors[i].info.name = st->tensors[i].name;
    g_hash_table_insert(st->by_name, st->tensors[i].name, GUINT_TO_POINTER(i + 1));
  }
  guint64 data_off = 8 + hlen;
  if (!check_layout(st, st->len - data_off, error))
    return FALSE;
  for (guint i = 0; i < st->n_tensors; i++)
    st->tensors[i].raw = st->data + data_off + st->tensors[i].begin;
  return TRUE;
}

static InspSafetensors *
reader_new(const char *path)
{
  InspSafetensors *st = g_new0(InspSafetensors, 1);
  st->path = g_strdup(path);
  st->by_name = g_hash_table_new(g_str_hash, g_str_equal);
  st->metadata = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  return st;
}

InspSafetensors *
insp_safetensors_new_from_data(const guint8 *data, gsize len, GError **error)
{
  g_return_val_if_fail(data != NULL || len == 0, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  g_autoptr(InspSafetensors) st = reader_new("<memory>");
  st->data = data;
  st->len = len;
  if (!parse_file(st, error))
    return NULL;
  return g_steal_pointer(&st);
}

InspSafetensors *
insp_safetensors_open(const char *path, GError **error)
{
  g_return_val_if_fail(path != NULL, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  g_autoptr(InspSafetensors) st = reader_new(path);
  int fd = g_open(path, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_IO, "%s: cannot open: %s",
                path, g_strerror(e));
    return NULL;
  }
  struct stat sb;
  if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
    int e = errno;
    g_set_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_IO, "%s: %s", path,
                S_ISREG(sb.st_mode) ? g_strerror(e) : "not a regular file");
    close(fd);
    return NULL;
  }
  if ((guint64)sb.st_size > G_MAXSIZE) {
    g_set_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_IO, "%s: file too large",
                path);
    close(fd);
    return NULL;
  }
  st->len = (gsize)sb.st_size;
  if (st->len > 0) {
    guint8 *buf = g_try_malloc(st->len + 1);
    gsize got = 0;
    struct stat after;

    if (buf == NULL) {
      g_set_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_IO,
                  "%s: cannot allocate %" G_GSIZE_FORMAT " bytes to read it", path, st->len);
      close(fd);
      st->len = 0;
      return NULL;
    }
    st->data = buf;
    st->owned = TRUE;
    /* One byte more than the size: a file that grew is caught too. */
    while (got < st->len + 1) {
      ssize_t n = read(fd, buf + got, st->len + 1 - got);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0) {
        int e = errno;
        g_set_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_IO, "%s: cannot read: %s",
                    path, g_strerror(e));
        close(fd);
        return NULL;
      }
      if (n == 0)
        break;
      got += (gsize)n;
    }
    if (got != st->len || fstat(fd, &after) < 0 || after.st_size != sb.st_size ||
        after.st_mtim.tv_sec != sb.st_mtim.tv_sec || after.st_mtim.tv_nsec != sb.st_mtim.tv_nsec) {
      g_set_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_IO,
                  "%s: the file changed while it was read (%" G_GSIZE_FORMAT
                  " bytes expected, %" G_GSIZE_FORMAT " read): write a new file and rename it "
                  "over the old one instead of writing in place",
                  path, st->len, got);
      close(fd);
      return NULL;
    }
  }
  st->id =
      (InspFileId){(guint64)sb.st_dev, (guint64)sb.st_ino, (guint64)sb.st_size,
                   (gint64)sb.st_mtim.tv_sec * G_GINT64_CONSTANT(1000000000) + sb.st_mtim.tv_nsec};
  close(fd);
  if (!parse_file(st, error))
    return NULL;
  return g_steal_pointer(&st);
}

void
insp_safetensors_free(InspSafetensors *st)
{
  if (!st)
    return;
  for (guint i = 0; i < st->n_tensors; i++) {
    g_free(st->tensors[i].name);
    g_free(GSIZE_TO_POINTER(st->tensors[i].f32_once));
  }
  g_free(st->tensors);
  g_hash_table_unref(st->by_name);
  g_hash_table_unref(st->metadata);
  if (st->owned)
    g_free((gpointer)st->data);
  g_free(st->path);
  g_free(st);
}

const InspFileId *
insp_safetensors_get_file_id(const InspSafetensors *st)
{
  g_return_val_if_fail(st != NULL, NULL);
  return &st->id;
}

const guint8 *
insp_safetensors_get_bytes(const InspSafetensors *st, gsize *len)
{
  g_return_val_if_fail(st != NULL && len != NULL, NULL);
  *len = st->len;
  return st->data;
}

gboolean
insp_file_id_from_path(const char *path, InspFileId *id)
{
  struct stat sb;

  g_return_val_if_fail(path != NULL && id != NULL, FALSE);
  if (g_stat(path, &sb) != 0)
    return FALSE;
  *id =
      (InspFileId){(guint64)sb.st_dev, (guint64)sb.st_ino, (guint64)sb.st_size,
                   (gint64)sb.st_mtim.tv_sec * G_GINT64_CONSTANT(1000000000) + sb.st_mtim.tv_nsec};
  return TRUE;
}

gboolean
insp_file_id_equal(const InspFileId *a, const InspFileId *b)
{
  return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns;
}

const char *
insp_safetensors_get_path(const InspSafetensors *st)
{
  g_return_val_if_fail(st != NULL, NULL);
  return st->path;
}

guint
insp_safetensors_get_n_tensors(const InspSafetensors *st)
{
  g_return_val_if_fail(st != NULL, 0);
  return st->n_tensors;
}

const InspTensorInfo *
insp_safetensors_get_info(const InspSafetensors *st, guint index)
{
  g_return_val_if_fail(st != NULL, NULL);
  g_return_val_if_fail(index < st->n_tensors, NULL);
  return &st->tensors[index].info;
}

static Tensor *
find(const InspSafetensors *st, const char *name)
{
  guint idx = GPOINTER_TO_UINT(g_hash_table_lookup(st->by_name, name));
  return idx ? &st->tensors[idx - 1] : NULL;
}

const InspTensorInfo *
insp_safetensors_lookup(const InspSafetensors *st, const char *name)
{
  g_return_val_if_fail(st != NULL, NULL);
  g_return_val_if_fail(name != NULL, NULL);
  Tensor *t = find(st, name);
  return t ? &t->info : NULL;
}

/* Finds @name and checks its shape; sets MISSING / SHAPE errors. */
static Tensor *
find_checked(InspSafetensors *st, const char *name, int ndim, const gint64 *shape, GError **error)
{
  Tensor *t = find(st, name);
  if (!t) {
    if (ndim > 0) {
      g_autoptr(GString) s = g_string_new(NULL);
      append_shape(s, ndim, shape);
      set_error(error, st, INSP_SAFETENSORS_ERROR_MISSING,
                "tensor '%s' is missing, expected shape %s", name, s->str);
    } else {
      set_error(error, st, INSP_SAFETENSORS_ERROR_MISSING, "tensor '%s' is missing", name);
    }
    return NULL;
  }
  gboolean same = ndim == 0 || ndim == t->info.ndim;
  for (int i = 0; same && ndim > 0 && i < ndim; i++)
    same = shape[i] == t->info.shape[i];
  if (!same) {
    g_autoptr(GString) a = g_string_new(NULL), e = g_string_new(NULL);
    append_shape(a, t->info.ndim, t->info.shape);
    append_shape(e, ndim, shape);
    set_error(error, st, INSP_SAFETENSORS_ERROR_SHAPE, "tensor '%s' has shape %s, expected %s",
              name, a->str, e->str);
    return NULL;
  }
  return t;
}

static float
half_to_float(guint16 h)
{
  guint32 sign = (guint32)(h & 0x8000) << 16;
  guint32 exp = (h >> 10) & 0x1f;
  guint32 mant = h & 0x3ff;
  guint32 bits;

  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    /* subnormal: normalise */
    int e = -1;
    do {
      mant <<= 1;
      e++;
    } while (!(mant & 0x400));
    bits = sign | ((guint32)(112 - e) << 23) | ((mant & 0x3ff) << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static float *
convert_to_f32(const Tensor *t)
{
  gsize n = (gsize)t->info.n_elements;
  float *out = g_new(float, MAX(n, 1));
  const guint8 *r = t->raw;

  switch (t->info.dtype) {
  case INSP_DTYPE_F32:
    for (gsize i = 0; i < n; i++) {
      guint32 v;
      memcpy(&v, r + 4 * i, 4);
      v = GUINT32_FROM_LE(v);
      memcpy(&out[i], &v, 4);
    }
    break;
  case INSP_DTYPE_F16:
    for (gsize i = 0; i < n; i++) {
      guint16 v;
      memcpy(&v, r + 2 * i, 2);
      out[i] = half_to_float(GUINT16_FROM_LE(v));
    }
    break;
  case INSP_DTYPE_BF16:
    for (gsize i = 0; i < n; i++) {
      guint16 v;
      memcpy(&v, r + 2 * i, 2);
      guint32 bits = (guint32)GUINT16_FROM_LE(v) << 16;
      memcpy(&out[i], &bits, 4);
    }
    break;
  case INSP_DTYPE_F64:
    for (gsize i = 0; i < n; i++) {
      guint64 v;
      double d;
      memcpy(&v, r + 8 * i, 8);
      v = GUINT64_FROM_LE(v);
      memcpy(&d, &v, 8);
      out[i] = (float)d;
    }
    break;
  default:
    g_assert_not_reached();
  }
  return out;
}

const float *
insp_safetensors_get_f32(InspSafetensors *st, const char *name, int ndim, const gint64 *shape,
                         GError **error)
{
  g_return_val_if_fail(st != NULL, NULL);
  g_return_val_if_fail(name != NULL, NULL);
  g_return_val_if_fail(ndim >= 0 && ndim <= INSP_SAFETENSORS_MAX_DIMS, NULL);
  g_return_val_if_fail(ndim == 0 || shape != NULL, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  Tensor *t = find_checked(st, name, ndim, shape, error);
  if (!t)
    return NULL;
  switch (t->info.dtype) {
  case INSP_DTYPE_F32:
  case INSP_DTYPE_F16:
  case INSP_DTYPE_BF16:
  case INSP_DTYPE_F64:
    break;
  default:
    set_error(error, st, INSP_SAFETENSORS_ERROR_SHAPE,
              "tensor '%s' has dtype %s, expected a float type (F32, F16, BF16 or F64)", name,
              dtype_name(t->info.dtype));
    return NULL;
  }
  g_atomic_int_set(&t->used, 1);
  if (t->info.dtype == INSP_DTYPE_F32 && G_BYTE_ORDER == G_LITTLE_ENDIAN &&
      (GPOINTER_TO_SIZE(t->raw) % G_ALIGNOF(float)) == 0 && t->info.n_elements > 0)
    return (const float *)(const void *)t->raw;
  if (g_once_init_enter(&t->f32_once))
    g_once_init_leave(&t->f32_once, GPOINTER_TO_SIZE(convert_to_f32(t)));
  return GSIZE_TO_POINTER(t->f32_once);
}

const guint8 *
insp_safetensors_get_u8(InspSafetensors *st, const char *name, int ndim, const gint64 *shape,
                        GError **error)
{
  g_return_val_if_fail(st != NULL, NULL);
  g_return_val_if_fail(name != NULL, NULL);
  g_return_val_if_fail(ndim >= 0 && ndim <= INSP_SAFETENSORS_MAX_DIMS, NULL);
  g_return_val_if_fail(ndim == 0 || shape != NULL, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  Tensor *t = find_checked(st, name, ndim, shape, error);
  if (!t)
    return NULL;
  if (t->info.dtype != INSP_DTYPE_U8) {
    set_error(error, st, INSP_SAFETENSORS_ERROR_SHAPE, "tensor '%s' has dtype %s, expected U8",
              name, dtype_name(t->info.dtype));
    return NULL;
  }
  g_atomic_int_set(&t->used, 1);
  /* A zero-size tensor still returns a non-NULL pointer (the data section). */
  return t->raw;
}

gboolean
insp_safetensors_check_all_used(const InspSafetensors *st, const char *prefix, GError **error)
{
  g_return_val_if_fail(st != NULL, FALSE);
  g_return_val_if_fail(error == NULL || *error == NULL, FALSE);

  for (guint i = 0; i < st->n_tensors; i++) {
    Tensor *t = &st->tensors[i];
    if (prefix && !g_str_has_prefix(t->name, prefix))
      continue;
    if (!g_atomic_int_get(&t->used)) {
      g_autoptr(GString) s = g_string_new(NULL);
      append_shape(s, t->info.ndim, t->info.shape);
      set_error(error, st, INSP_SAFETENSORS_ERROR_UNEXPECTED,
                "unexpected tensor '%s' (%s %s): not used by the architecture", t->name,
                dtype_name(t->info.dtype), s->str);
      return FALSE;
    }
  }
  return TRUE;
}

const char *
insp_safetensors_get_metadata(const InspSafetensors *st, const char *key)
{
  g_return_val_if_fail(st != NULL, NULL);
  g_return_val_if_fail(key != NULL, NULL);
  return g_hash_table_lookup(st->metadata, key);
}

static int
cmp_str_ptr(gconstpointer a, gconstpointer b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

const char **
insp_safetensors_get_metadata_keys(const InspSafetensors *st)
{
  g_return_val_if_fail(st != NULL, NULL);
  guint n = 0;
  const char **keys = (const char **)g_hash_table_get_keys_as_array(st->metadata, &n);
  qsort(keys, n, sizeof *keys, cmp_str_ptr);
  return keys;
}

/* ---- writer ------------------------------------------------------------ */

typedef struct {
  char *name;
  InspDtype dtype;
  int ndim;
  gint64 shape[INSP_SAFETENSORS_MAX_DIMS];
  GBytes *bytes; /* little-endian */
} WEntry;

struct _InspSafetensorsWriter {
  GPtrArray *entries;   /* WEntry */
  GHashTable *names;    /* borrowed names of entries */
  GPtrArray *meta_keys; /* insertion order */
  GHashTable *meta;     /* key -> value, owned (key shared with meta_keys) */
};

static void
wentry_free(gpointer p)
{
  WEntry *e = p;
  g_free(e->name);
  g_bytes_unref(e->bytes);
  g_free(e);
}

InspSafetensorsWriter *
insp_safetensors_writer_new(void)
{
  InspSafetensorsWriter *w = g_new0(InspSafetensorsWriter, 1);
  w->entries = g_ptr_array_new_with_free_func(wentry_free);
  w->names = g_hash_table_new(g_str_hash, g_str_equal);
  w->meta_keys = g_ptr_array_new_with_free_func(g_free);
  w->meta = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
  return w;
}

void
insp_safetensors_writer_free(InspSafetensorsWriter *w)
{
  if (!w)
    return;
  g_hash_table_unref(w->names);
  g_ptr_array_unref(w->entries);
  g_hash_table_unref(w->meta);
  g_ptr_array_unref(w->meta_keys);
  g_free(w);
}

static gboolean
shape_elements(int ndim, const gint64 *shape, gsize elem_size, gsize *n_out)
{
  gsize n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return FALSE;
    if (shape[i] != 0 && n > G_MAXSIZE / elem_size / (gsize)shape[i])
      return FALSE;
    n *= (gsize)shape[i];
  }
  *n_out = n;
  return TRUE;
}

static void
writer_add(InspSafetensorsWriter *w, const char *name, InspDtype dtype, int ndim,
           const gint64 *shape, GBytes *bytes)
{
  WEntry *e = g_new0(WEntry, 1);
  e->name = g_strdup(name);
  e->dtype = dtype;
  e->ndim = ndim;
  if (ndim > 0)
    memcpy(e->shape, shape, sizeof(gint64) * (gsize)ndim);
  e->bytes = bytes;
  g_ptr_array_add(w->entries, e);
  g_hash_table_add(w->names, e->name);
}

#define WRITER_ADD_CHECKS(w, name, ndim, shape)                                                    \
  g_return_if_fail(w != NULL);                                                                     \
  g_return_if_fail(name != NULL && g_utf8_validate(name, -1, NULL));                               \
  g_return_if_fail(strcmp(name, "__metadata__") != 0);                                             \
  g_return_if_fail(!g_hash_table_contains(w->names, name));                                        \
  g_return_if_fail(ndim >= 0 && ndim <= INSP_SAFETENSORS_MAX_DIMS);                                \
  g_return_if_fail(ndim == 0 || shape != NULL)

void
insp_safetensors_writer_add_f32(InspSafetensorsWriter *w, const char *name, int ndim,
                                const gint64 *shape, const float *data)
{
  gsize n;
  WRITER_ADD_CHECKS(w, name, ndim, shape);
  g_return_if_fail(shape_elements(ndim, shape, 4, &n));
  g_return_if_fail(data != NULL || n == 0);

  GBytes *b;
  if (G_BYTE_ORDER == G_LITTLE_ENDIAN) {
    b = g_bytes_new(data, n * 4);
  } else {
    guint32 *le = g_new(guint32, MAX(n, 1));
    for (gsize i = 0; i < n; i++) {
      guint32 v;
      memcpy(&v, &data[i], 4);
      le[i] = GUINT32_TO_LE(v);
    }
    b = g_bytes_new_take(le, n * 4);
  }
  writer_add(w, name, INSP_DTYPE_F32, ndim, shape, b);
}

void
insp_safetensors_writer_add_u8(InspSafetensorsWriter *w, const char *name, int ndim,
                               const gint64 *shape, const guint8 *data)
{
  gsize n;
  WRITER_ADD_CHECKS(w, name, ndim, shape);
  g_return_if_fail(shape_elements(ndim, shape, 1, &n));
  g_return_if_fail(data != NULL || n == 0);
  writer_add(w, name, INSP_DTYPE_U8, ndim, shape, g_bytes_new(data, n));
}

void
insp_safetensors_writer_set_metadata(InspSafetensorsWriter *w, const char *key, const char *value)
{
  g_return_if_fail(w != NULL);
  g_return_if_fail(key != NULL && g_utf8_validate(key, -1, NULL));
  g_return_if_fail(value != NULL && g_utf8_validate(value, -1, NULL));

  if (!g_hash_table_contains(w->meta, key)) {
    char *k = g_strdup(key);
    g_ptr_array_add(w->meta_keys, k);
    g_hash_table_insert(w->meta, k, g_strdup(value));
  } else {
    /* insert keeps the existing key (shared with meta_keys), replaces the value */
    g_hash_table_insert(w->meta, (gpointer)key, g_strdup(value));
  }
}

static void
append_json_string(GString *s, const char *str)
{
  g_string_append_c(s, '"');
  for (const guchar *p = (const guchar *)str; *p; p++) {
    switch (*p) {
    case '"':
      g_string_append(s, "\\\"");
      break;
    case '\\':
      g_string_append(s, "\\\\");
      break;
    case '\n':
      g_string_append(s, "\\n");
      break;
    case '\t':
      g_string_append(s, "\\t");
      break;
    case '\r':
      g_string_append(s, "\\r");
      break;
    default:
      if (*p < 0x20)
        g_string_append_printf(s, "\\u%04x", *p);
      else
        g_string_append_c(s, (char)*p);
    }
  }
  g_string_append_c(s, '"');
}

/* The header JSON with its u64 length prefix, padded to a multiple of 8. */
static GString *
writer_header(InspSafetensorsWriter *w)
{
  GString *s = g_string_new(NULL);
  g_string_append_len(s, "\0\0\0\0\0\0\0\0", 8);
  g_string_append_c(s, '{');
  gboolean first = TRUE;
  if (w->meta_keys->len > 0) {
    g_string_append(s, "\"__metadata__\":{");
    for (guint i = 0; i < w->meta_keys->len; i++) {
      const char *k = g_ptr_array_index(w->meta_keys, i);
      if (i)
        g_string_append_c(s, ',');
      append_json_string(s, k);
      g_string_append_c(s, ':');
      append_json_string(s, g_hash_table_lookup(w->meta, k));
    }
    g_string_append_c(s, '}');
    first = FALSE;
  }
  guint64 off = 0;
  for (guint i = 0; i < w->entries->len; i++) {
    const WEntry *e = g_ptr_array_index(w->entries, i);
    gsize sz = g_bytes_get_size(e->bytes);
    if (!first)
      g_string_append_c(s, ',');
    first = FALSE;
    append_json_string(s, e->name);
    g_string_append_printf(s, ":{\"dtype\":\"%s\",\"shape\":", dtype_name(e->dtype));
    append_shape(s, e->ndim, e->shape);
    g_string_append_printf(s, ",\"data_offsets\":[%" G_GUINT64_FORMAT ",%" G_GUINT64_FORMAT "]}",
                           off, off + sz);
    off += sz;
  }
  g_string_append_c(s, '}');
  while (s->len % 8)
    g_string_append_c(s, ' ');
  guint64 hlen = GUINT64_TO_LE((guint64)(s->len - 8));
  memcpy(s->str, &hlen, 8);
  return s;
}

GBytes *
insp_safetensors_writer_to_bytes(InspSafetensorsWriter *w)
{
  g_return_val_if_fail(w != NULL, NULL);
  GString *s = writer_header(w);
  for (guint i = 0; i < w->entries->len; i++) {
    const WEntry *e = g_ptr_array_index(w->entries, i);
    gsize sz;
    const char *d = g_bytes_get_data(e->bytes, &sz);
    g_string_append_len(s, d, (gssize)sz);
  }
  return g_string_free_to_bytes(s);
}

static gboolean
write_all(int fd, const void *buf, gsize len)
{
  const guint8 *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, MIN(len, (gsize)1 << 30));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return FALSE;
    }
    p += n;
    len -= (gsize)n;
  }
  return TRUE;
}

gboolean
insp_safetensors_writer_save(InspSafetensorsWriter *w, const char *path, GError **error)
{
  g_return_val_if_fail(w != NULL, FALSE);
  g_return_val_if_fail(path != NULL, FALSE);
  g_return_val_if_fail(error == NULL || *error == NULL, FALSE);

  g_autofree char *tmp = g_strconcat(path, ".tmp-XXXXXX", NULL);
  int fd = g_mkstemp_full(tmp, O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_IO,
                "%s: cannot create a temporary file beside it: %s", path, g_strerror(e));
    return FALSE;
  }
  g_autoptr(GString) header = writer_header(w);
  gboolean ok = write_all(fd, header->str, header->len);
  for (guint i = 0; ok && i < w->entries->len; i++) {
    const WEntry *e = g_ptr_array_index(w->entries, i);
    gsize sz;
    const void *d = g_bytes_get_data(e->bytes, &sz);
    ok = write_all(fd, d, sz);
  }
  if (ok)
    ok = fsync(fd) == 0;
  int e = errno;
  if (close(fd) != 0 && ok) {
    ok = FALSE;
    e = errno;
  }
  if (ok && g_rename(tmp, path) != 0) {
    ok = FALSE;
    e = errno;
  }
  if (!ok) {
    g_unlink(tmp);
    g_set_error(error, INSP_SAFETENSORS_ERROR, INSP_SAFETENSORS_ERROR_IO, "%s: cannot write: %s",
                path, g_strerror(e));
    return FALSE;
  }
  /* Make the rename itself durable; failure here does not lose the data. */
  g_autofree char *dir = g_path_get_dirname(path);
  int dfd = g_open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
  return TRUE;
}
