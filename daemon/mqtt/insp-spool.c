/* Store-and-forward spool for MQTT results and masks.
 *
 * DESIGN. One file per message in the spool directory, named
 * "<seq, 20 digits>-<kind>.msg", so the name alone gives the replay order
 * (seq, then kind: result, reply, mask) and a restart rebuilds the index from
 * a directory listing. A file is written to "<name>.tmp" and renamed into
 * place, so a reader (or the next start after SIGKILL) sees either the whole
 * message or nothing; leftover *.tmp files are deleted at open. With
 * INSP_SPOOL_FLAGS_FSYNC the file is fdatasync'ed before the rename and the
 * directory fsync'ed after it, which also survives power loss; without it a
 * process crash loses nothing (the page cache outlives the process) and a
 * power loss can lose the last messages, whose torn files then fail the
 * checks below and are dropped as corrupt.
 *
 * File layout (little-endian, 40-byte header then the parts):
 *   0  "INSPSPL1"         8  u8 kind, u8 qos, u16 0
 *   12 u32 topic_len      16 u32 part_id_len   20 u32 correlation_len
 *   24 u32 payload_len    28 u32 FNV-1a of every byte of the file but these 4
 *   32 u64 seq            40 topic, part_id, correlation, payload
 * The file size must equal 40 + the four lengths; every length is capped.
 *
 * Budget: the sum of the file sizes stays <= max_bytes. When a push would
 * exceed it, the oldest masks go first, then the oldest results/replies (a
 * mask never evicts a result: a mask that does not fit is itself dropped).
 * Every drop is counted.
 *
 * Messages pushed by this process are also kept in memory (up to 8 MiB), so
 * the usual path, spooled then sent at once, never reads its file back; the
 * file is still the only thing that survives the process.
 *
 * Invariants: each index entry has exactly one file; the two queues (results
 * and replies; masks) are sorted by (seq, kind); `bytes` is the sum of the
 * entries' sizes. One mutex guards everything; file I/O happens under it
 * (messages are small, and ordering between push and claim matters more).
 *
 * Threads: any; the MQTT module calls it from the result thread, the main
 * loop, its pump thread and the mosquitto network thread.
 */
#include "insp-spool.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define SPOOL_MAGIC "INSPSPL1"
#define SPOOL_HEADER_SIZE 40
#define SPOOL_MAX_TOPIC 65535u
#define SPOOL_MAX_PART_ID 1024u
#define SPOOL_MAX_CORRELATION 65535u
#define SPOOL_MAX_PAYLOAD (256u * 1024u * 1024u - 1u) /* MQTT's own limit */

/* The quark name is dashed; clang-format would split it into "a - b". */
/* clang-format off */
G_DEFINE_QUARK(insp-spool-error-quark, insp_spool_error)
/* clang-format on */

typedef struct {
  guint64 id;
  guint64 seq;
  InspSpoolKind kind;
  guint64 size;
  gboolean claimed;
  GList *link;              /* in its queue */
  InspSpoolMessage *cached; /* the pushed message, while the cache has room */
} SpoolEntry;

struct _InspSpool {
  GMutex lock;
  char *dir;
  int dir_fd;
  guint64 max_bytes;
  InspSpoolFlags flags;
  GQueue results; /* SpoolEntry*, RESULT and REPLY */
  GQueue masks;   /* SpoolEntry*, MASK */
  GHashTable *by_id;
  guint64 next_id;
  guint64 bytes;
  guint64 dropped_masks;
  guint64 dropped_results;
  guint64 corrupt;
  guint64 cached_bytes; /* sizes of the entries with a cached copy */
};

/* Messages pushed by this process are also kept in memory, up to this much,
 * so that a message sent right after it was spooled is not read back. */
#define SPOOL_CACHE_MAX (8u * 1024u * 1024u)

void
insp_spool_message_free(InspSpoolMessage *msg)
{
  if (msg == NULL)
    return;
  g_free(msg->topic);
  g_free(msg->part_id);
  g_clear_pointer(&msg->correlation, g_bytes_unref);
  g_clear_pointer(&msg->payload, g_bytes_unref);
  g_free(msg);
}

static guint32
fnv1a(guint32 h, const guint8 *p, gsize n)
{
  for (gsize i = 0; i < n; i++) {
    h ^= p[i];
    h *= 16777619u;
  }
  return h;
}

static void
put_u32(guint8 *p, guint32 v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (guint8)(v >> (8 * i));
}

static void
put_u64(guint8 *p, guint64 v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (guint8)(v >> (8 * i));
}

static guint32
get_u32(const guint8 *p)
{
  return (guint32)p[0] | (guint32)p[1] << 8 | (guint32)p[2] << 16 | (guint32)p[3] << 24;
}

static guint64
get_u64(const guint8 *p)
{
  return (guint64)get_u32(p) | (guint64)get_u32(p + 4) << 32;
}

static char *
entry_name(guint64 seq, InspSpoolKind kind)
{
  return g_strdup_printf("%020" G_GUINT64_FORMAT "-%d.msg", seq, (int)kind);
}

static int
key_cmp(guint64 seq_a, InspSpoolKind kind_a, guint64 seq_b, InspSpoolKind kind_b)
{
  if (seq_a != seq_b)
    return seq_a < seq_b ? -1 : 1;
  if (kind_a != kind_b)
    return kind_a < kind_b ? -1 : 1;
  return 0;
}

static GQueue *
queue_for(InspSpool *spool, InspSpoolKind kind)
{
  return kind == INSP_SPOOL_KIND_MASK ? &spool->masks : &spool->results;
}

/* Parses the 40-byte header; checks lengths against caps and @file_size. */
static gboolean
header_parse(const guint8 *h, guint64 file_size, InspSpoolKind *kind, int *qos, guint32 lens[4],
             guint64 *seq)
{
  guint64 total = SPOOL_HEADER_SIZE;

  if (memcmp(h, SPOOL_MAGIC, 8) != 0)
    return FALSE;
  if (h[8] > INSP_SPOOL_KIND_MASK || h[9] > 2 || h[10] != 0 || h[11] != 0)
    return FALSE;
  for (int i = 0; i < 4; i++) {
    lens[i] = get_u32(h + 12 + 4 * i);
    total += lens[i];
  }
  if (lens[0] == 0 || lens[0] > SPOOL_MAX_TOPIC || lens[1] > SPOOL_MAX_PART_ID ||
      lens[2] > SPOOL_MAX_CORRELATION || lens[3] > SPOOL_MAX_PAYLOAD)
    return FALSE;
  if (total != file_size)
    return FALSE;
  *kind = (InspSpoolKind)h[8];
  *qos = h[9];
  *seq = get_u64(h + 32);
  return TRUE;
}

static void
entry_free(gpointer data)
{
  SpoolEntry *e = data;

  insp_spool_message_free(e->cached);
  g_free(e);
}

static InspSpoolMessage *
message_copy(const InspSpoolMessage *m, guint64 id)
{
  InspSpoolMessage *c = g_new0(InspSpoolMessage, 1);

  c->id = id;
  c->kind = m->kind;
  c->seq = m->seq;
  c->qos = m->qos;
  c->topic = g_strdup(m->topic);
  c->part_id = g_strdup(m->part_id);
  c->correlation = m->correlation ? g_bytes_ref(m->correlation) : NULL;
  c->payload = g_bytes_ref(m->payload);
  return c;
}

static void
entry_remove_locked(InspSpool *spool, SpoolEntry *e, gboolean unlink_file)
{
  if (unlink_file) {
    g_autofree char *name = entry_name(e->seq, e->kind);
    if (unlinkat(spool->dir_fd, name, 0) != 0 && errno != ENOENT)
      g_debug("spool: cannot remove %s/%s: %s", spool->dir, name, g_strerror(errno));
  }
  g_queue_delete_link(queue_for(spool, e->kind), e->link);
  spool->bytes -= e->size;
  if (e->cached != NULL)
    spool->cached_bytes -= e->size;
  g_hash_table_remove(spool->by_id, &e->id); /* frees e */
}

static SpoolEntry *
entry_new_locked(InspSpool *spool, guint64 seq, InspSpoolKind kind, guint64 size)
{
  SpoolEntry *e = g_new0(SpoolEntry, 1);

  e->id = spool->next_id++;
  e->seq = seq;
  e->kind = kind;
  e->size = size;
  g_hash_table_insert(spool->by_id, &e->id, e);
  spool->bytes += size;
  return e;
}

/* Inserts @e in its queue, scanning from the tail (new seqs are the largest).
 * Returns an existing entry with the same key instead, untouched. */
static SpoolEntry *
entry_link_locked(InspSpool *spool, SpoolEntry *e)
{
  GQueue *q = queue_for(spool, e->kind);
  GList *l;

  for (l = q->tail; l != NULL; l = l->prev) {
    SpoolEntry *o = l->data;
    int c = key_cmp(o->seq, o->kind, e->seq, e->kind);
    if (c == 0)
      return o;
    if (c < 0)
      break;
  }
  if (l == NULL) {
    g_queue_push_head(q, e);
    e->link = q->head;
  } else {
    g_queue_insert_after(q, l, e);
    e->link = l->next;
  }
  return NULL;
}

static void
evict_locked(InspSpool *spool, GQueue *q, gboolean is_mask)
{
  SpoolEntry *e = g_queue_peek_head(q);

  if (is_mask)
    spool->dropped_masks++;
  else
    spool->dropped_results++;
  entry_remove_locked(spool, e, TRUE);
}

static int
entry_sort_cmp(gconstpointer a, gconstpointer b)
{
  const SpoolEntry *x = *(SpoolEntry *const *)a, *y = *(SpoolEntry *const *)b;
  return key_cmp(x->seq, x->kind, y->seq, y->kind);
}

static gboolean
spool_scan(InspSpool *spool, GError **error)
{
  g_autoptr(GError) local = NULL;
  g_autoptr(GDir) d = g_dir_open(spool->dir, 0, &local);
  g_autoptr(GPtrArray) found = g_ptr_array_new();
  const char *name;

  if (d == NULL) {
    g_set_error(error, INSP_SPOOL_ERROR, INSP_SPOOL_ERROR_IO, "cannot list spool directory: %s",
                local->message);
    return FALSE;
  }
  while ((name = g_dir_read_name(d)) != NULL) {
    gsize len = strlen(name);
    guint64 seq;
    int kind;
    struct stat st;
    guint8 h[SPOOL_HEADER_SIZE];
    guint32 lens[4];
    InspSpoolKind hk;
    int hq;
    guint64 hseq;
    int fd;
    gboolean ok = FALSE;
    char *end = NULL;

    if (g_str_has_suffix(name, ".tmp")) {
      (void)unlinkat(spool->dir_fd, name, 0);
      continue;
    }
    if (len != 26 || !g_str_has_suffix(name, ".msg") || name[20] != '-' ||
        !g_ascii_isdigit(name[21]))
      continue;
    for (int i = 0; i < 20; i++)
      if (!g_ascii_isdigit(name[i]))
        goto next;
    seq = g_ascii_strtoull(name, &end, 10);
    kind = name[21] - '0';
    if (end != name + 20 || kind > INSP_SPOOL_KIND_MASK)
      continue;
    fd = openat(spool->dir_fd, name, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= SPOOL_HEADER_SIZE &&
          pread(fd, h, sizeof h, 0) == (ssize_t)sizeof h &&
          header_parse(h, (guint64)st.st_size, &hk, &hq, lens, &hseq) && hseq == seq &&
          (int)hk == kind)
        ok = TRUE;
      close(fd);
    }
    if (!ok) {
      spool->corrupt++;
      (void)unlinkat(spool->dir_fd, name, 0);
      continue;
    }
    g_ptr_array_add(found, entry_new_locked(spool, seq, (InspSpoolKind)kind, (guint64)st.st_size));
  next:;
  }
  g_ptr_array_sort(found, entry_sort_cmp);
  for (guint i = 0; i < found->len; i++) {
    SpoolEntry *e = found->pdata[i];
    GQueue *q = queue_for(spool, e->kind);
    g_queue_push_tail(q, e);
    e->link = q->tail;
  }
  while (spool->bytes > spool->max_bytes && spool->masks.length > 0)
    evict_locked(spool, &spool->masks, TRUE);
  while (spool->bytes > spool->max_bytes && spool->results.length > 0)
    evict_locked(spool, &spool->results, FALSE);
  return TRUE;
}

InspSpool *
insp_spool_open(const char *dir, guint64 max_bytes, InspSpoolFlags flags, GError **error)
{
  g_autoptr(InspSpool) spool = NULL;

  g_return_val_if_fail(dir != NULL && *dir != '\0', NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  if (g_mkdir_with_parents(dir, 0700) != 0) {
    int e = errno;
    g_set_error(error, INSP_SPOOL_ERROR, INSP_SPOOL_ERROR_IO,
                "cannot create spool directory '%s': %s", dir, g_strerror(e));
    return NULL;
  }
  spool = g_new0(InspSpool, 1);
  g_mutex_init(&spool->lock);
  spool->dir = g_strdup(dir);
  spool->max_bytes = max_bytes;
  spool->flags = flags;
  spool->next_id = 1;
  spool->by_id = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, entry_free);
  spool->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (spool->dir_fd < 0) {
    int e = errno;
    g_set_error(error, INSP_SPOOL_ERROR, INSP_SPOOL_ERROR_IO,
                "cannot open spool directory '%s': %s", dir, g_strerror(e));
    return NULL;
  }
  if (!spool_scan(spool, error))
    return NULL;
  return g_steal_pointer(&spool);
}

void
insp_spool_free(InspSpool *spool)
{
  if (spool == NULL)
    return;
  if (spool->dir_fd >= 0)
    close(spool->dir_fd);
  g_queue_clear(&spool->results);
  g_queue_clear(&spool->masks);
  g_clear_pointer(&spool->by_id, g_hash_table_unref);
  g_free(spool->dir);
  g_mutex_clear(&spool->lock);
  g_free(spool);
}

static gboolean
write_all(int fd, struct iovec *iov, int n)
{
  while (n > 0) {
    ssize_t w = writev(fd, iov, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return FALSE;
    }
    while (n > 0 && (size_t)w >= iov->iov_len) {
      w -= (ssize_t)iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0) {
      iov->iov_base = (char *)iov->iov_base + w;
      iov->iov_len -= (size_t)w;
    }
  }
  return TRUE;
}

static gboolean
file_write_locked(InspSpool *spool, const InspSpoolMessage *msg, const char *name, GError **error)
{
  g_autofree char *tmp = g_strconcat(name, ".tmp", NULL);
  guint8 h[SPOOL_HEADER_SIZE] = {0};
  gsize tl = strlen(msg->topic), pl = msg->part_id ? strlen(msg->part_id) : 0, cl = 0, yl = 0;
  const guint8 *cp = NULL, *yp = NULL;
  struct iovec iov[5];
  guint32 sum;
  int fd;

  if (msg->correlation)
    cp = g_bytes_get_data(msg->correlation, &cl);
  yp = g_bytes_get_data(msg->payload, &yl);
  memcpy(h, SPOOL_MAGIC, 8);
  h[8] = (guint8)msg->kind;
  h[9] = (guint8)msg->qos;
  put_u32(h + 12, (guint32)tl);
  put_u32(h + 16, (guint32)pl);
  put_u32(h + 20, (guint32)cl);
  put_u32(h + 24, (guint32)yl);
  put_u64(h + 32, msg->seq);
  sum = fnv1a(2166136261u, h, 28);
  sum = fnv1a(sum, h + 32, 8);
  sum = fnv1a(sum, (const guint8 *)msg->topic, tl);
  sum = fnv1a(sum, (const guint8 *)msg->part_id, pl);
  sum = fnv1a(sum, cp, cl);
  sum = fnv1a(sum, yp, yl);
  put_u32(h + 28, sum);

  iov[0] = (struct iovec){h, sizeof h};
  iov[1] = (struct iovec){(void *)msg->topic, tl};
  iov[2] = (struct iovec){(void *)msg->part_id, pl};
  iov[3] = (struct iovec){(void *)cp, cl};
  iov[4] = (struct iovec){(void *)yp, yl};

  fd = openat(spool->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    goto fail;
  if (!write_all(fd, iov, 5) || ((spool->flags & INSP_SPOOL_FLAGS_FSYNC) && fdatasync(fd) != 0)) {
    int e = errno;
    close(fd);
    (void)unlinkat(spool->dir_fd, tmp, 0);
    errno = e;
    goto fail;
  }
  if (close(fd) != 0 || renameat(spool->dir_fd, tmp, spool->dir_fd, name) != 0) {
    int e = errno;
    (void)unlinkat(spool->dir_fd, tmp, 0);
    errno = e;
    goto fail;
  }
  if ((spool->flags & INSP_SPOOL_FLAGS_FSYNC) && fsync(spool->dir_fd) != 0)
    goto fail;
  return TRUE;

fail : {
  int e = errno;
  g_set_error(error, INSP_SPOOL_ERROR, INSP_SPOOL_ERROR_IO, "cannot write spool file '%s/%s': %s",
              spool->dir, name, g_strerror(e));
  return FALSE;
}
}

guint64
insp_spool_push(InspSpool *spool, const InspSpoolMessage *msg, guint *evicted_masks,
                guint *evicted_results, GError **error)
{
  g_autofree char *name = NULL;
  guint64 size;
  gsize tl, pl, cl = 0, yl;
  guint em = 0, er = 0;
  gboolean is_mask;
  SpoolEntry *e, *old;
  guint64 id = 0;

  g_return_val_if_fail(spool != NULL && msg != NULL, 0);
  g_return_val_if_fail(msg->topic != NULL && msg->payload != NULL, 0);
  g_return_val_if_fail(msg->kind <= INSP_SPOOL_KIND_MASK && msg->qos >= 0 && msg->qos <= 2, 0);
  g_return_val_if_fail(error == NULL || *error == NULL, 0);

  tl = strlen(msg->topic);
  pl = msg->part_id ? strlen(msg->part_id) : 0;
  if (msg->correlation)
    cl = g_bytes_get_size(msg->correlation);
  yl = g_bytes_get_size(msg->payload);
  g_return_val_if_fail(tl > 0 && tl <= SPOOL_MAX_TOPIC && pl <= SPOOL_MAX_PART_ID &&
                           cl <= SPOOL_MAX_CORRELATION && yl <= SPOOL_MAX_PAYLOAD,
                       0);
  size = SPOOL_HEADER_SIZE + tl + pl + cl + yl;
  is_mask = msg->kind == INSP_SPOOL_KIND_MASK;
  name = entry_name(msg->seq, msg->kind);

  g_mutex_lock(&spool->lock);
  if (size > spool->max_bytes) {
    if (is_mask) {
      spool->dropped_masks++;
      em++;
    } else {
      spool->dropped_results++;
      er++;
    }
    g_set_error(error, INSP_SPOOL_ERROR, INSP_SPOOL_ERROR_TOO_LARGE,
                "message of %" G_GUINT64_FORMAT
                " bytes is larger than the spool (%" G_GUINT64_FORMAT " bytes)",
                size, spool->max_bytes);
    goto out;
  }
  while (spool->bytes + size > spool->max_bytes) {
    if (spool->masks.length > 0) {
      evict_locked(spool, &spool->masks, TRUE);
      em++;
    } else if (!is_mask && spool->results.length > 0) {
      evict_locked(spool, &spool->results, FALSE);
      er++;
    } else {
      spool->dropped_masks++;
      em++;
      goto out;
    }
  }
  if (!file_write_locked(spool, msg, name, error))
    goto out;
  e = entry_new_locked(spool, msg->seq, msg->kind, size);
  old = entry_link_locked(spool, e);
  if (old != NULL) {
    /* The rename replaced the old file: drop its index entry, keep the file. */
    entry_remove_locked(spool, old, FALSE);
    old = entry_link_locked(spool, e);
    g_assert(old == NULL);
  }
  if (spool->cached_bytes + size <= SPOOL_CACHE_MAX) {
    e->cached = message_copy(msg, e->id);
    spool->cached_bytes += size;
  }
  id = e->id;
out:
  g_mutex_unlock(&spool->lock);
  if (evicted_masks)
    *evicted_masks = em;
  if (evicted_results)
    *evicted_results = er;
  return id;
}

static SpoolEntry *
first_unclaimed(GQueue *q)
{
  for (GList *l = q->head; l != NULL; l = l->next) {
    SpoolEntry *e = l->data;
    if (!e->claimed)
      return e;
  }
  return NULL;
}

static SpoolEntry *
next_unclaimed_locked(InspSpool *spool)
{
  SpoolEntry *r = first_unclaimed(&spool->results), *m = first_unclaimed(&spool->masks);

  if (r == NULL)
    return m;
  if (m == NULL)
    return r;
  return key_cmp(r->seq, r->kind, m->seq, m->kind) <= 0 ? r : m;
}

static InspSpoolMessage *
file_read_locked(InspSpool *spool, SpoolEntry *e)
{
  g_autofree char *name = entry_name(e->seq, e->kind);
  g_autofree char *path = g_build_filename(spool->dir, name, NULL);
  g_autofree char *data = NULL;
  gsize len = 0;
  guint32 lens[4];
  InspSpoolKind kind;
  int qos;
  guint64 seq;
  guint32 sum;
  const guint8 *p;
  InspSpoolMessage *msg;

  if (!g_file_get_contents(path, &data, &len, NULL) || len < SPOOL_HEADER_SIZE)
    return NULL;
  p = (const guint8 *)data;
  if (!header_parse(p, len, &kind, &qos, lens, &seq) || seq != e->seq || kind != e->kind)
    return NULL;
  sum = fnv1a(2166136261u, p, 28);
  sum = fnv1a(sum, p + 32, len - 32);
  if (sum != get_u32(p + 28))
    return NULL;
  if (memchr(p + SPOOL_HEADER_SIZE, '\0', lens[0] + lens[1]) != NULL)
    return NULL;
  p += SPOOL_HEADER_SIZE;
  msg = g_new0(InspSpoolMessage, 1);
  msg->id = e->id;
  msg->kind = kind;
  msg->seq = seq;
  msg->qos = qos;
  msg->topic = g_strndup((const char *)p, lens[0]);
  p += lens[0];
  msg->part_id = lens[1] ? g_strndup((const char *)p, lens[1]) : NULL;
  p += lens[1];
  msg->correlation = lens[2] ? g_bytes_new(p, lens[2]) : NULL;
  p += lens[2];
  msg->payload = g_bytes_new(p, lens[3]);
  return msg;
}

InspSpoolMessage *
insp_spool_claim_next(InspSpool *spool)
{
  InspSpoolMessage *msg = NULL;
  SpoolEntry *e;

  g_return_val_if_fail(spool != NULL, NULL);

  g_mutex_lock(&spool->lock);
  while ((e = next_unclaimed_locked(spool)) != NULL) {
    msg = e->cached ? message_copy(e->cached, e->id) : file_read_locked(spool, e);
    if (msg != NULL) {
      e->claimed = TRUE;
      break;
    }
    spool->corrupt++;
    entry_remove_locked(spool, e, TRUE);
  }
  g_mutex_unlock(&spool->lock);
  return msg;
}

gboolean
insp_spool_has_unclaimed(InspSpool *spool)
{
  gboolean r;

  g_return_val_if_fail(spool != NULL, FALSE);
  g_mutex_lock(&spool->lock);
  r = next_unclaimed_locked(spool) != NULL;
  g_mutex_unlock(&spool->lock);
  return r;
}

gboolean
insp_spool_ack(InspSpool *spool, guint64 id)
{
  SpoolEntry *e;

  g_return_val_if_fail(spool != NULL, FALSE);
  g_mutex_lock(&spool->lock);
  e = g_hash_table_lookup(spool->by_id, &id);
  if (e != NULL)
    entry_remove_locked(spool, e, TRUE);
  g_mutex_unlock(&spool->lock);
  return e != NULL;
}

void
insp_spool_release(InspSpool *spool, guint64 id)
{
  SpoolEntry *e;

  g_return_if_fail(spool != NULL);
  g_mutex_lock(&spool->lock);
  e = g_hash_table_lookup(spool->by_id, &id);
  if (e != NULL)
    e->claimed = FALSE;
  g_mutex_unlock(&spool->lock);
}

void
insp_spool_get_stats(InspSpool *spool, InspSpoolStats *stats)
{
  g_return_if_fail(spool != NULL && stats != NULL);
  g_mutex_lock(&spool->lock);
  stats->n_messages = spool->results.length + spool->masks.length;
  stats->bytes = spool->bytes;
  stats->dropped_masks = spool->dropped_masks;
  stats->dropped_results = spool->dropped_results;
  stats->corrupt = spool->corrupt;
  g_mutex_unlock(&spool->lock);
}
