/* The seq store (see insp-seq.h). */
#define G_LOG_DOMAIN "inspectd"
#include "insp-seq.h"

#include <errno.h>
#include <glib/gstdio.h>

struct _InspSeq {
  GMutex lock;
  char *path;
  guint64 block;          /* seqs reserved at a time */
  guint64 next;           /* the next seq to hand out */
  guint64 reserved_until; /* seqs below this are reserved on disk */
};

static gboolean
seq_write(const char *path, guint64 value, GError **error)
{
  char text[32];

  g_snprintf(text, sizeof text, "%" G_GUINT64_FORMAT "\n", value);
  if (g_file_set_contents_full(path, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, error))
    return TRUE;
  g_prefix_error(error, "cannot save %s: ", path);
  return FALSE;
}

InspSeq *
insp_seq_open(const char *state_dir, guint block, GError **error)
{
  g_autofree char *text = NULL;
  g_autofree char *path = NULL;
  g_autoptr(GError) local = NULL;
  guint64 next = 0;
  InspSeq *store;

  g_return_val_if_fail(state_dir != NULL, NULL);
  if (block == 0)
    block = INSP_SEQ_BLOCK;
  if (g_mkdir_with_parents(state_dir, 0750) != 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                "cannot create the state folder %s: %s", state_dir, g_strerror(e));
    return NULL;
  }
  path = g_build_filename(state_dir, "seq", NULL);
  if (g_file_get_contents(path, &text, NULL, &local)) {
    g_strstrip(text);
    if (!g_ascii_string_to_unsigned(text, 10, 0, G_MAXUINT64 - 2 * (guint64)block, &next, NULL)) {
      g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                  "%s does not hold a sequence number (remove it to start again at 0)", path);
      return NULL;
    }
  } else if (!g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
    g_propagate_error(error, g_steal_pointer(&local));
    return NULL;
  }
  if (!seq_write(path, next + block, error))
    return NULL;
  store = g_new0(InspSeq, 1);
  g_mutex_init(&store->lock);
  store->path = g_steal_pointer(&path);
  store->next = next;
  store->block = block;
  store->reserved_until = next + block;
  return store;
}

gboolean
insp_seq_take(InspSeq *store, guint64 *seq, GError **error)
{
  g_autoptr(GError) local = NULL;
  gboolean ok = TRUE;

  g_return_val_if_fail(store != NULL && seq != NULL, FALSE);
  g_mutex_lock(&store->lock);
  /* Reserve the next block once half of this one is used: before any seq
   * past what is saved is handed out, with room for failed attempts. */
  if (store->reserved_until - store->next <= store->block / 2) {
    guint64 until = store->next + store->block;
    if (seq_write(store->path, until, &local))
      store->reserved_until = until;
  }
  if (store->next < store->reserved_until) {
    *seq = store->next++;
  } else {
    ok = FALSE;
    g_propagate_prefixed_error(error, g_steal_pointer(&local),
                               "no sequence number can be reserved: ");
  }
  g_mutex_unlock(&store->lock);
  return ok;
}

guint64
insp_seq_peek(InspSeq *store)
{
  guint64 next;

  g_return_val_if_fail(store != NULL, 0);
  g_mutex_lock(&store->lock);
  next = store->next;
  g_mutex_unlock(&store->lock);
  return next;
}

const char *
insp_seq_get_path(InspSeq *store)
{
  g_return_val_if_fail(store != NULL, NULL);
  return store->path;
}

void
insp_seq_close(InspSeq *store)
{
  g_autoptr(GError) error = NULL;

  if (store == NULL)
    return;
  g_mutex_lock(&store->lock);
  if (!seq_write(store->path, store->next, &error))
    g_warning("cannot save the sequence number in %s: %s", store->path, error->message);
  g_mutex_unlock(&store->lock);
  g_mutex_clear(&store->lock);
  g_free(store->path);
  g_free(store);
}
