/* Store-and-forward spool for MQTT results and masks.
 *
 * DESIGN. Messages are records appended to a few segment files in the spool
 * directory, "seg-<10 digits>.log", each with a sidecar "seg-<n>.ack" of the
 * offsets of its records the broker has acknowledged (4 bytes each). A
 * segment is deleted (both files) once none of its records is live. Results
 * and replies go to one stream of segments, masks to another: the head of
 * each (its newest) takes appends until it reaches the size limit
 * (max_bytes / 8, between 64 KiB and 8 MiB), then a new one starts. So the
 * disk holds a few files whatever the number of messages: no 4 KiB block and
 * inode per message (one file per message made a 1 MiB spool take 12.7 MB
 * on disk, and wore out SD cards).
 *
 * Record layout (little-endian, 48-byte header then the parts):
 *   0  u32 0x31525349 ("ISR1")   4  u8 kind, u8 qos, u16 0
 *   8  u32 topic_len  12 u32 part_id_len  16 u32 correlation_len
 *   20 u32 payload_len            24 u64 seq          32 u64 0
 *   40 u32 FNV-1a of the header's other bytes and the parts   44 u32 0
 *   48 topic, part_id, correlation, payload
 * Every length is capped. At open each segment is read record by record; the
 * first record that fails its checks (a torn write at power loss) ends the
 * segment: the file is cut there and the loss counted as corrupt. Acked
 * offsets are removed from the index, segments with nothing live deleted,
 * and appends go to a new head. A spool folder of the one-file-per-message
 * format (*.msg) is imported at open, so an upgrade loses nothing.
 *
 * Durability, [spool] sync: "always" fdatasyncs the head after every append
 * (and the folder when a segment is created): nothing the spool accepted is
 * lost at a power cut. "batch" (the default) fdatasyncs at most once a
 * second (insp_spool_flush, called by the MQTT pump, also does it): a power
 * cut loses at most the last second of messages. "never" leaves it to the
 * kernel (about 30 s). A process crash (SIGKILL) loses nothing in any mode:
 * a record is in the page cache once write() returned. Acks are written
 * without sync: a power cut can only make the spool send a delivered
 * message again (QoS 1 is at least once anyway).
 *
 * Budget: `bytes`, the size on disk of every segment and sidecar, stays <=
 * max_bytes. A push that would exceed it reclaims space: it compacts a
 * segment that is at least half dead (its live records copied to the head,
 * the segment deleted), else evicts the oldest mask, else (only for a result
 * or reply) the oldest result, else compacts whatever is dead; a mask never
 * evicts a result. The same happens when a write fails with ENOSPC or EDQUOT
 * (the disk is full before the budget): whole segments go, without writing,
 * the oldest mask segments first, results only when no mask is left. Every drop is counted and its
 * seq range kept for insp_spool_take_drops(). Acks compact a segment too when the disk exceeds 1.5
 * x the live bytes plus a segment.
 *
 * Messages pushed by this process are also kept in memory (up to 8 MiB), so
 * the usual path, spooled then sent at once, never reads its record back.
 *
 * Invariants: every index entry names one live record (segment, offset,
 * size); the two queues (results and replies; masks) are sorted by (seq,
 * kind); each segment's live count and bytes match the entries in it;
 * `bytes` is the sum of the file sizes. One mutex guards everything; file
 * I/O happens under it (records are small, appends sequential).
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
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#define REC_MAGIC 0x31525349u
#define REC_HEADER 48
#define SPOOL_MAX_TOPIC 65535u
#define SPOOL_MAX_PART_ID 1024u
#define SPOOL_MAX_CORRELATION 65535u
#define SPOOL_MAX_PAYLOAD (256u * 1024u * 1024u - 1u) /* MQTT's own limit */
#define SEG_MIN (16u * 1024u)
#define BLOCK 4096u /* files are counted in the blocks they take */
#define SEG_MAX (8u * 1024u * 1024u)
#define SYNC_BATCH_US G_USEC_PER_SEC
#define OLD_MAGIC "INSPSPL1" /* the one-file-per-message format */
#define OLD_HEADER 40

/* The quark name is dashed; clang-format would split it into "a - b". */
/* clang-format off */
G_DEFINE_QUARK(insp-spool-error-quark, insp_spool_error)
/* clang-format on */

typedef struct {
  guint32 no;
  int stream;         /* STREAM_RESULTS or STREAM_MASKS */
  gboolean dirty;     /* appended since the last sync */
  int fd;             /* the log, O_APPEND */
  int ack_fd;         /* the sidecar, -1 until the first ack */
  guint64 size;       /* of the log */
  guint64 ack_size;   /* of the sidecar */
  guint live;         /* records still indexed */
  guint live_masks;   /* of which masks */
  guint64 live_bytes; /* their sizes */
} Segment;

typedef struct {
  guint64 id;
  guint64 seq;
  InspSpoolKind kind;
  guint64 size; /* of the record */
  Segment *seg;
  guint64 off;
  gboolean claimed;
  GList *link;              /* in its queue */
  InspSpoolMessage *cached; /* the pushed message, while the cache has room */
} SpoolEntry;

struct _InspSpool {
  GMutex lock;
  char *dir;
  int dir_fd;
  guint64 max_bytes;
  guint64 budget; /* max_bytes, or less when the filesystem has less room */
  guint64 seg_max;
  InspSpoolFlags flags;
  GQueue results; /* SpoolEntry*, RESULT and REPLY */
  GQueue masks;   /* SpoolEntry*, MASK */
  GHashTable *by_id;
  GPtrArray *segments; /* Segment*, by number */
  Segment *heads[2];   /* where each stream appends; NULL until needed */
  guint32 next_no;
  guint64 next_id;
  guint64 bytes;      /* on disk: every log and sidecar */
  guint64 live_bytes; /* the live records */
  guint64 dropped_masks;
  guint64 dropped_results;
  guint64 corrupt;
  guint64 cached_bytes; /* sizes of the entries with a cached copy */
  gint64 synced_us;
  InspSpoolDrops drops; /* since the last insp_spool_take_drops() */
  int drops_fd;         /* "drops": the same, kept across restarts; -1 if none */
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

static void
put_u16(guint8 *p, guint16 v)
{
  p[0] = (guint8)v;
  p[1] = (guint8)(v >> 8);
}

static char *
seg_name(guint32 no, const char *ext)
{
  return g_strdup_printf("seg-%010u.%s", no, ext);
}

static void
io_error(GError **error, InspSpool *spool, const char *what, const char *name, int e)
{
  g_set_error(error, INSP_SPOOL_ERROR, INSP_SPOOL_ERROR_IO, "cannot %s spool file '%s/%s': %s",
              what, spool->dir, name, g_strerror(e));
}

/* ---- segments ---- */

static guint64
disk_of(guint64 n)
{
  return (n + BLOCK - 1) / BLOCK * BLOCK;
}

/* The budget: max_bytes, or what the filesystem can still give the spool
 * (its free space and the spool's own files, less a sixteenth for the
 * filesystem's blocks), whichever is less; segments an eighth of it. Run at
 * open, on every flush (once a second) and when a write fails for room. */
static void
learn_room_locked(InspSpool *spool)
{
  struct statvfs v;
  guint64 room = G_MAXUINT64;

  if (fstatvfs(spool->dir_fd, &v) == 0 && v.f_frsize > 0) {
    room = spool->bytes + (guint64)v.f_bavail * v.f_frsize;
    room -= room / 16;
  }
  spool->budget = MIN(spool->max_bytes, room);
  spool->seg_max = CLAMP(spool->budget / 8, SEG_MIN, SEG_MAX);
}

/* Results and replies, and masks, append to segments of their own: on a
 * full disk a mask segment can go whole, without writing, before any
 * result has to. */
enum { STREAM_RESULTS, STREAM_MASKS };

static int
stream_of(InspSpoolKind kind)
{
  return kind == INSP_SPOOL_KIND_MASK ? STREAM_MASKS : STREAM_RESULTS;
}

static void
segment_close(Segment *s)
{
  if (s->fd >= 0)
    close(s->fd);
  if (s->ack_fd >= 0)
    close(s->ack_fd);
  g_free(s);
}

/* Deletes @s with both files. */
static void
segment_drop_locked(InspSpool *spool, Segment *s)
{
  g_autofree char *log = seg_name(s->no, "log");
  g_autofree char *ack = seg_name(s->no, "ack");

  if (unlinkat(spool->dir_fd, log, 0) != 0 && errno != ENOENT)
    g_debug("spool: cannot remove %s/%s: %s", spool->dir, log, g_strerror(errno));
  if (unlinkat(spool->dir_fd, ack, 0) != 0 && errno != ENOENT)
    g_debug("spool: cannot remove %s/%s: %s", spool->dir, ack, g_strerror(errno));
  spool->bytes -= disk_of(s->size) + disk_of(s->ack_size);
  if (spool->heads[s->stream] == s)
    spool->heads[s->stream] = NULL;
  g_ptr_array_remove(spool->segments, s);
  segment_close(s);
}

static Segment *
segment_new_locked(InspSpool *spool, int stream, GError **error)
{
  g_autofree char *log = seg_name(spool->next_no, "log");
  Segment *s;
  int fd = openat(spool->dir_fd, log, O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);

  if (fd < 0) {
    io_error(error, spool, "create", log, errno);
    return NULL;
  }
  if ((spool->flags & INSP_SPOOL_FLAGS_FSYNC) && fsync(spool->dir_fd) != 0) {
    io_error(error, spool, "sync the folder of", log, errno);
    close(fd);
    (void)unlinkat(spool->dir_fd, log, 0);
    return NULL;
  }
  s = g_new0(Segment, 1);
  s->no = spool->next_no++;
  s->stream = stream;
  s->fd = fd;
  s->ack_fd = -1;
  g_ptr_array_add(spool->segments, s);
  spool->heads[stream] = s;
  return s;
}

/* The segment appends go to, a new one when the head is full. */
static Segment *
head_locked(InspSpool *spool, int stream, GError **error)
{
  Segment *h = spool->heads[stream];

  if (h != NULL && h->size < spool->seg_max)
    return h;
  return segment_new_locked(spool, stream, error);
}

static void
sync_locked(InspSpool *spool, gboolean force)
{
  gint64 now = g_get_monotonic_time();

  if (!force && now - spool->synced_us < SYNC_BATCH_US)
    return;
  for (guint i = 0; i < spool->segments->len; i++) {
    Segment *s = g_ptr_array_index(spool->segments, i);
    if (s->dirty && fdatasync(s->fd) != 0)
      g_debug("spool: fdatasync: %s", g_strerror(errno));
    s->dirty = FALSE;
  }
  spool->synced_us = now;
}

/* Appends one record (@iov, @total bytes) to the head; on failure the head
 * is cut back to where it was and errno says why. */
static gboolean
append_locked(InspSpool *spool, int stream, struct iovec *iov, int n, guint64 total, Segment **seg,
              guint64 *off, GError **error)
{
  Segment *h = head_locked(spool, stream, error);
  g_autofree char *log = NULL;

  if (h == NULL)
    return FALSE;
  if (!write_all(h->fd, iov, n)) {
    int e = errno;
    if (ftruncate(h->fd, (off_t)h->size) != 0)
      g_debug("spool: cannot cut segment %u back: %s", h->no, g_strerror(errno));
    log = seg_name(h->no, "log");
    io_error(error, spool, "write", log, e);
    errno = e;
    return FALSE;
  }
  *seg = h;
  *off = h->size;
  spool->bytes += disk_of(h->size + total) - disk_of(h->size);
  h->size += total;
  h->dirty = TRUE;
  if (spool->flags & INSP_SPOOL_FLAGS_FSYNC)
    sync_locked(spool, TRUE);
  else if (spool->flags & INSP_SPOOL_FLAGS_SYNC_BATCH)
    sync_locked(spool, FALSE);
  return TRUE;
}

/* ---- records ---- */

static void
header_fill(guint8 *h, const InspSpoolMessage *msg, gsize tl, gsize pl, gsize cl, gsize yl)
{
  memset(h, 0, REC_HEADER);
  put_u32(h, REC_MAGIC);
  h[4] = (guint8)msg->kind;
  h[5] = (guint8)msg->qos;
  put_u16(h + 6, 0);
  put_u32(h + 8, (guint32)tl);
  put_u32(h + 12, (guint32)pl);
  put_u32(h + 16, (guint32)cl);
  put_u32(h + 20, (guint32)yl);
  put_u64(h + 24, msg->seq);
}

static guint32
record_sum(const guint8 *h, const guint8 *data, gsize n)
{
  guint32 sum = fnv1a(2166136261u, h, 40);
  sum = fnv1a(sum, h + 44, 4);
  return fnv1a(sum, data, n);
}

/* Checks a header; the record's total size in *@total. */
static gboolean
header_ok(const guint8 *h, guint64 avail, guint32 lens[4], guint64 *total)
{
  guint64 t = REC_HEADER;

  if (avail < REC_HEADER || get_u32(h) != REC_MAGIC || h[4] > INSP_SPOOL_KIND_MASK || h[5] > 2 ||
      h[6] != 0 || h[7] != 0 || get_u64(h + 32) != 0 || get_u32(h + 44) != 0)
    return FALSE;
  for (int i = 0; i < 4; i++) {
    lens[i] = get_u32(h + 8 + 4 * i);
    t += lens[i];
  }
  if (lens[0] == 0 || lens[0] > SPOOL_MAX_TOPIC || lens[1] > SPOOL_MAX_PART_ID ||
      lens[2] > SPOOL_MAX_CORRELATION || lens[3] > SPOOL_MAX_PAYLOAD || t > avail)
    return FALSE;
  *total = t;
  return TRUE;
}

/* A whole record (header and parts) -> message; NULL when it fails a check. */
static InspSpoolMessage *
record_parse(const guint8 *p, guint64 avail, guint64 *total)
{
  guint32 lens[4];
  InspSpoolMessage *msg;
  const guint8 *d;

  if (!header_ok(p, avail, lens, total))
    return NULL;
  if (record_sum(p, p + REC_HEADER, *total - REC_HEADER) != get_u32(p + 40))
    return NULL;
  d = p + REC_HEADER;
  if (memchr(d, '\0', lens[0] + lens[1]) != NULL)
    return NULL;
  msg = g_new0(InspSpoolMessage, 1);
  msg->kind = (InspSpoolKind)p[4];
  msg->qos = p[5];
  msg->seq = get_u64(p + 24);
  msg->topic = g_strndup((const char *)d, lens[0]);
  d += lens[0];
  msg->part_id = lens[1] ? g_strndup((const char *)d, lens[1]) : NULL;
  d += lens[1];
  msg->correlation = lens[2] ? g_bytes_new(d, lens[2]) : NULL;
  d += lens[2];
  msg->payload = g_bytes_new(d, lens[3]);
  return msg;
}

static InspSpoolMessage *
record_read_locked(InspSpool *spool, SpoolEntry *e)
{
  g_autofree guint8 *buf = g_try_malloc(e->size);
  guint64 total = 0, got = 0;
  InspSpoolMessage *msg;

  if (buf == NULL)
    return NULL;
  while (got < e->size) {
    ssize_t n = pread(e->seg->fd, buf + got, e->size - got, (off_t)(e->off + got));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return NULL;
    got += (guint64)n;
  }
  msg = record_parse(buf, e->size, &total);
  if (msg != NULL && (total != e->size || msg->seq != e->seq || msg->kind != e->kind))
    g_clear_pointer(&msg, insp_spool_message_free);
  if (msg != NULL)
    msg->id = e->id;
  return msg;
}

/* ---- the index ---- */

static void
entry_free(gpointer data)
{
  SpoolEntry *e = data;

  insp_spool_message_free(e->cached);
  g_free(e);
}

static void
entry_place(InspSpool *spool, SpoolEntry *e, Segment *seg, guint64 off)
{
  e->seg = seg;
  e->off = off;
  seg->live++;
  seg->live_bytes += e->size;
  if (e->kind == INSP_SPOOL_KIND_MASK)
    seg->live_masks++;
}

static void
entry_unplace(InspSpool *spool, SpoolEntry *e)
{
  Segment *s = e->seg;

  s->live--;
  s->live_bytes -= e->size;
  if (e->kind == INSP_SPOOL_KIND_MASK)
    s->live_masks--;
  e->seg = NULL;
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
  spool->live_bytes += size;
  return e;
}

/* A segment with nothing live goes; the head, when it is the only one, is
 * emptied instead (it takes the next appends). */
static void
segment_settle_locked(InspSpool *spool, Segment *s)
{
  if (s->live > 0)
    return;
  if (s != spool->heads[s->stream]) {
    segment_drop_locked(spool, s);
    return;
  }
  if (s->size + s->ack_size == 0)
    return;
  if (ftruncate(s->fd, 0) == 0) {
    spool->bytes -= disk_of(s->size);
    s->size = 0;
  }
  if (s->ack_fd >= 0 && ftruncate(s->ack_fd, 0) == 0) {
    spool->bytes -= disk_of(s->ack_size);
    s->ack_size = 0;
  }
}

/* Notes in the sidecar that @e was delivered (or evicted): a restart must
 * not send it again. Not needed when the segment goes anyway. */
static void
ack_write_locked(InspSpool *spool, SpoolEntry *e)
{
  Segment *s = e->seg;
  guint8 b[4];
  struct iovec iov = {b, 4};

  if (s->live == 1)
    return; /* the segment is deleted or emptied right after */
  if (s->ack_fd < 0) {
    g_autofree char *name = seg_name(s->no, "ack");
    s->ack_fd = openat(spool->dir_fd, name, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (s->ack_fd < 0) {
      g_debug("spool: cannot open %s: %s", name, g_strerror(errno));
      return;
    }
  }
  put_u32(b, (guint32)e->off);
  if (write_all(s->ack_fd, &iov, 1)) {
    spool->bytes += disk_of(s->ack_size + 4) - disk_of(s->ack_size);
    s->ack_size += 4;
  } else if (ftruncate(s->ack_fd, (off_t)s->ack_size) != 0) {
    g_debug("spool: cannot cut the sidecar of segment %u back", s->no);
  }
}

static void
entry_remove_locked(InspSpool *spool, SpoolEntry *e, gboolean durable)
{
  Segment *s = e->seg;

  if (durable)
    ack_write_locked(spool, e);
  g_queue_delete_link(queue_for(spool, e->kind), e->link);
  spool->live_bytes -= e->size;
  if (e->cached != NULL)
    spool->cached_bytes -= e->size;
  entry_unplace(spool, e);
  g_hash_table_remove(spool->by_id, &e->id); /* frees e */
  segment_settle_locked(spool, s);
}

/* "drops" holds the drops not yet announced, so that a restart (or a new
 * MQTT client after a reload) still announces them. 64 bytes written in
 * place (no new block: it works on a full disk): "ISD1", u32 n_ranges | merged << 31,
 * the six u64 of InspSpoolDrops, then the ranges. */
#define DROPS_FILE "drops"
#define DROPS_SIZE (64 + 16 * INSP_SPOOL_DROP_RANGES)

static void
drops_save_locked(InspSpool *spool)
{
  guint8 b[DROPS_SIZE] = {0};
  const InspSpoolDrops *d = &spool->drops;

  if (spool->drops_fd < 0)
    return;
  put_u32(b, 0x31445349u);
  put_u32(b + 4, d->n_ranges | (d->ranges_merged ? 1u << 31 : 0));
  for (guint i = 0; i < d->n_ranges; i++) {
    put_u64(b + 64 + 16 * i, d->ranges[i][0]);
    put_u64(b + 72 + 16 * i, d->ranges[i][1]);
  }
  put_u64(b + 8, d->masks);
  put_u64(b + 16, d->results);
  put_u64(b + 24, d->first_mask_seq);
  put_u64(b + 32, d->last_mask_seq);
  put_u64(b + 40, d->first_result_seq);
  put_u64(b + 48, d->last_result_seq);
  if (pwrite(spool->drops_fd, b, sizeof b, 0) != (ssize_t)sizeof b)
    g_debug("spool: cannot save the drops: %s", g_strerror(errno));
}

static void
drops_open_locked(InspSpool *spool)
{
  guint8 b[DROPS_SIZE];

  spool->drops_fd = openat(spool->dir_fd, DROPS_FILE, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (spool->drops_fd < 0)
    return;
  if (pread(spool->drops_fd, b, sizeof b, 0) == (ssize_t)sizeof b && get_u32(b) == 0x31445349u) {
    InspSpoolDrops *d = &spool->drops;
    d->masks = get_u64(b + 8);
    d->results = get_u64(b + 16);
    d->first_mask_seq = get_u64(b + 24);
    d->last_mask_seq = get_u64(b + 32);
    d->first_result_seq = get_u64(b + 40);
    d->last_result_seq = get_u64(b + 48);
    d->n_ranges = MIN(get_u32(b + 4) & 0x7fffffffu, INSP_SPOOL_DROP_RANGES);
    d->ranges_merged = (get_u32(b + 4) >> 31) != 0;
    for (guint i = 0; i < d->n_ranges; i++) {
      d->ranges[i][0] = get_u64(b + 64 + 16 * i);
      d->ranges[i][1] = get_u64(b + 72 + 16 * i);
    }
  }
  drops_save_locked(spool); /* the file has its size, and its block */
  spool->bytes += BLOCK;
}

static void
add_range(InspSpoolDrops *d, guint64 from, guint64 to)
{
  for (guint i = 0; i < d->n_ranges; i++) {
    guint64 *r = d->ranges[i];
    if (from <= r[1] + 1 && to + 1 >= r[0]) { /* touches or overlaps */
      r[0] = MIN(r[0], from);
      r[1] = MAX(r[1], to);
      return;
    }
  }
  if (d->n_ranges < INSP_SPOOL_DROP_RANGES) {
    d->ranges[d->n_ranges][0] = from;
    d->ranges[d->n_ranges][1] = to;
    d->n_ranges++;
    return;
  }
  d->ranges_merged = TRUE;
  d->ranges[d->n_ranges - 1][0] = MIN(d->ranges[d->n_ranges - 1][0], from);
  d->ranges[d->n_ranges - 1][1] = MAX(d->ranges[d->n_ranges - 1][1], to);
}

static void
note_drop(InspSpool *spool, SpoolEntry *e)
{
  InspSpoolDrops *d = &spool->drops;

  if (e->kind == INSP_SPOOL_KIND_MASK) {
    spool->dropped_masks++;
    if (d->masks++ == 0 || e->seq < d->first_mask_seq)
      d->first_mask_seq = e->seq;
    d->last_mask_seq = MAX(d->last_mask_seq, e->seq);
  } else {
    spool->dropped_results++;
    if (d->results++ == 0 || e->seq < d->first_result_seq)
      d->first_result_seq = e->seq;
    d->last_result_seq = MAX(d->last_result_seq, e->seq);
    add_range(d, e->seq, e->seq);
  }
  drops_save_locked(spool);
}

/* Evicts the oldest message of @q that is not being sent (a claimed one may
 * be delivered: it is not announced as dropped). FALSE when there is none. */
static gboolean
evict_locked(InspSpool *spool, GQueue *q)
{
  SpoolEntry *e = first_unclaimed(q);

  if (e == NULL)
    return FALSE;
  note_drop(spool, e);
  entry_remove_locked(spool, e, TRUE);
  return TRUE;
}

/* Moves the live records of @s to the head and deletes @s. */
static gboolean
compact_locked(InspSpool *spool, Segment *s)
{
  g_autoptr(GPtrArray) moving = g_ptr_array_new();
  GQueue *qs[2] = {&spool->results, &spool->masks};

  for (int q = 0; q < 2; q++)
    for (GList *l = qs[q]->head; l != NULL; l = l->next)
      if (((SpoolEntry *)l->data)->seg == s)
        g_ptr_array_add(moving, l->data);
  if (s == spool->heads[s->stream] && segment_new_locked(spool, s->stream, NULL) == NULL)
    return FALSE;
  for (guint i = 0; i < moving->len; i++) {
    SpoolEntry *e = moving->pdata[i];
    g_autofree guint8 *buf = g_try_malloc(e->size);
    guint64 got = 0, off;
    Segment *to;
    struct iovec iov;

    if (buf == NULL)
      return FALSE;
    while (got < e->size) {
      ssize_t n = pread(s->fd, buf + got, e->size - got, (off_t)(e->off + got));
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return FALSE;
      got += (guint64)n;
    }
    iov = (struct iovec){buf, e->size};
    if (!append_locked(spool, s->stream, &iov, 1, e->size, &to, &off, NULL))
      return FALSE;
    entry_unplace(spool, e);
    entry_place(spool, e, to, off);
  }
  segment_settle_locked(spool, s); /* nothing live: deleted */
  return TRUE;
}

static Segment *
most_dead(InspSpool *spool, gboolean half)
{
  Segment *best = NULL;
  guint64 best_dead = 0;

  for (guint i = 0; i < spool->segments->len; i++) {
    Segment *s = g_ptr_array_index(spool->segments, i);
    guint64 dead = s->size + s->ack_size - s->live_bytes;
    if (s->live == 0 || dead == 0 || (half && dead * 2 < s->size))
      continue;
    if (dead > best_dead) {
      best = s;
      best_dead = dead;
    }
  }
  return best;
}

/* Makes room for @size bytes within the budget (see the header). What is
 * kept must fit with a margin (@hyst: an eighth of the budget, at most half
 * a segment): past max_bytes - hyst the oldest masks go, then (only for a
 * result or reply) the oldest results, down to max_bytes - 2 hyst, so that
 * evicting and compacting happen once per margin, not once per message.
 * Then dead records go, the most dead segment first. FALSE when there is no
 * room to make. */
static gboolean
reclaim_locked(InspSpool *spool, guint64 size, gboolean is_mask)
{
  guint64 hyst = MIN(spool->seg_max / 2, spool->budget / 8);

  if (spool->live_bytes + size + hyst > spool->budget) {
    guint64 target = spool->budget > 2 * hyst ? spool->budget - 2 * hyst : 0;
    while (spool->live_bytes + size > target) {
      if (evict_locked(spool, &spool->masks))
        continue;
      if (is_mask || !evict_locked(spool, &spool->results))
        break;
    }
    if (spool->live_bytes + size > spool->budget)
      return FALSE;
  }
  while (spool->bytes + disk_of(size) > spool->budget) {
    Segment *s = most_dead(spool, FALSE);
    if (s == NULL || !compact_locked(spool, s))
      return FALSE;
  }
  return TRUE;
}

/* Whether a message of @s is being sent (it may be delivered). */
static gboolean
segment_busy(InspSpool *spool, Segment *s)
{
  GQueue *qs[2] = {&spool->results, &spool->masks};

  for (int q = 0; q < 2; q++)
    for (GList *l = qs[q]->head; l != NULL; l = l->next) {
      SpoolEntry *e = l->data;
      if (e->seg == s && e->claimed)
        return TRUE;
    }
  return FALSE;
}

/* The disk is full before the budget: frees whole segments without writing,
 * the oldest holding only masks first, then the oldest. FALSE when nothing
 * is left to free. */
static gboolean
free_segment_locked(InspSpool *spool, gboolean is_mask)
{
  Segment *victim = NULL;
  GQueue *qs[2] = {&spool->masks, &spool->results};

  for (guint i = 0; i < spool->segments->len && victim == NULL; i++) {
    Segment *s = g_ptr_array_index(spool->segments, i);
    if (s->live > 0 && s->stream == STREAM_MASKS && !segment_busy(spool, s))
      victim = s;
  }
  if (victim == NULL && !is_mask)
    for (guint i = 0; i < spool->segments->len && victim == NULL; i++) {
      Segment *s = g_ptr_array_index(spool->segments, i);
      if (s->live > 0 && !segment_busy(spool, s))
        victim = s;
    }
  if (victim == NULL)
    return FALSE;
  for (int q = 0; q < 2; q++) {
    GList *l = qs[q]->head;
    while (l != NULL) {
      SpoolEntry *e = l->data;
      l = l->next;
      if (e->seg == victim) {
        note_drop(spool, e);
        if (victim->live == 1) {
          entry_remove_locked(spool, e, FALSE); /* the segment goes with it */
          return TRUE;
        }
        entry_remove_locked(spool, e, FALSE);
      }
    }
  }
  return TRUE;
}

/* ---- the one-file-per-message format, imported at open ---- */

static InspSpoolMessage *
old_file_read(InspSpool *spool, const char *name)
{
  g_autofree char *path = g_build_filename(spool->dir, name, NULL);
  g_autofree char *data = NULL;
  gsize len = 0;
  const guint8 *p;
  guint32 lens[4], sum;
  guint64 total = OLD_HEADER;
  InspSpoolMessage *msg;

  if (!g_file_get_contents(path, &data, &len, NULL) || len < OLD_HEADER)
    return NULL;
  p = (const guint8 *)data;
  if (memcmp(p, OLD_MAGIC, 8) != 0 || p[8] > INSP_SPOOL_KIND_MASK || p[9] > 2)
    return NULL;
  for (int i = 0; i < 4; i++) {
    lens[i] = get_u32(p + 12 + 4 * i);
    total += lens[i];
  }
  if (lens[0] == 0 || lens[0] > SPOOL_MAX_TOPIC || lens[1] > SPOOL_MAX_PART_ID ||
      lens[2] > SPOOL_MAX_CORRELATION || lens[3] > SPOOL_MAX_PAYLOAD || total != len)
    return NULL;
  sum = fnv1a(2166136261u, p, 28);
  sum = fnv1a(sum, p + 32, len - 32);
  if (sum != get_u32(p + 28) || memchr(p + OLD_HEADER, '\0', lens[0] + lens[1]) != NULL)
    return NULL;
  msg = g_new0(InspSpoolMessage, 1);
  msg->kind = (InspSpoolKind)p[8];
  msg->qos = p[9];
  msg->seq = get_u64(p + 32);
  p += OLD_HEADER;
  msg->topic = g_strndup((const char *)p, lens[0]);
  p += lens[0];
  msg->part_id = lens[1] ? g_strndup((const char *)p, lens[1]) : NULL;
  p += lens[1];
  msg->correlation = lens[2] ? g_bytes_new(p, lens[2]) : NULL;
  p += lens[2];
  msg->payload = g_bytes_new(p, lens[3]);
  return msg;
}

static guint64 push_locked(InspSpool *spool, const InspSpoolMessage *msg, GError **error);

/* ---- open ---- */

/* Reads segment @no: its records into the index, its sidecar's acks out of
 * it. A torn or damaged tail is cut off. */
static void
segment_load_locked(InspSpool *spool, guint32 no, GHashTable *by_loc)
{
  g_autofree char *log = seg_name(no, "log");
  g_autofree char *ack = seg_name(no, "ack");
  g_autofree char *path = g_build_filename(spool->dir, log, NULL);
  g_autofree char *apath = g_build_filename(spool->dir, ack, NULL);
  g_autofree char *data = NULL, *adata = NULL;
  gsize len = 0, alen = 0;
  guint64 off = 0;
  Segment *s;
  int fd = openat(spool->dir_fd, log, O_RDWR | O_APPEND | O_CLOEXEC);

  if (fd < 0 || !g_file_get_contents(path, &data, &len, NULL)) {
    if (fd >= 0)
      close(fd);
    spool->corrupt++;
    (void)unlinkat(spool->dir_fd, log, 0);
    (void)unlinkat(spool->dir_fd, ack, 0);
    return;
  }
  s = g_new0(Segment, 1);
  s->no = no;
  s->fd = fd;
  s->ack_fd = -1;
  g_ptr_array_add(spool->segments, s);
  while (off < len) {
    guint64 total = 0;
    g_autoptr(InspSpoolMessage) msg = record_parse((const guint8 *)data + off, len - off, &total);
    SpoolEntry *e, *old;

    if (msg == NULL) {
      guint32 lens[4];
      if (header_ok((const guint8 *)data + off, len - off, lens, &total)) {
        /* A damaged record with a sound header: skipped, the rest kept. */
        spool->corrupt++;
        off += total;
        continue;
      }
      /* A torn write (power cut) or damage: the rest of the segment goes. */
      spool->corrupt++;
      if (ftruncate(fd, (off_t)off) != 0)
        g_debug("spool: cannot cut %s: %s", log, g_strerror(errno));
      break;
    }
    if (off == 0)
      s->stream = stream_of(msg->kind);
    e = entry_new_locked(spool, msg->seq, msg->kind, total);
    entry_place(spool, e, s, off);
    old = entry_link_locked(spool, e);
    if (old != NULL) {
      /* Pushed again (same seq and kind): the later record wins. */
      g_hash_table_remove(by_loc, old);
      g_queue_delete_link(queue_for(spool, old->kind), old->link);
      spool->live_bytes -= old->size;
      entry_unplace(spool, old);
      g_hash_table_remove(spool->by_id, &old->id);
      old = entry_link_locked(spool, e);
      g_assert(old == NULL);
    }
    g_hash_table_insert(by_loc, e, e);
    off += total;
  }
  s->size = off;
  spool->bytes += disk_of(off);
  if (g_file_get_contents(apath, &adata, &alen, NULL)) {
    alen -= alen % 4; /* a torn last offset */
    for (gsize i = 0; i < alen; i += 4) {
      guint64 at = get_u32((const guint8 *)adata + i);
      /* Linear in the segment's records; acks are few at open (segments
       * whose records were all acked are already gone). */
      GHashTableIter it;
      gpointer k;
      g_hash_table_iter_init(&it, by_loc);
      while (g_hash_table_iter_next(&it, &k, NULL)) {
        SpoolEntry *e = k;
        if (e->seg == s && e->off == at) {
          g_hash_table_iter_remove(&it);
          g_queue_delete_link(queue_for(spool, e->kind), e->link);
          spool->live_bytes -= e->size;
          entry_unplace(spool, e);
          g_hash_table_remove(spool->by_id, &e->id);
          break;
        }
      }
    }
    s->ack_fd = openat(spool->dir_fd, ack, O_RDWR | O_APPEND | O_CLOEXEC);
    if (s->ack_fd >= 0 && ftruncate(s->ack_fd, (off_t)alen) == 0)
      s->ack_size = alen;
    spool->bytes += disk_of(s->ack_size);
  }
}

static int
cmp_names(gconstpointer a, gconstpointer b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static gboolean
spool_scan(InspSpool *spool, GError **error)
{
  g_autoptr(GError) local = NULL;
  g_autoptr(GDir) d = g_dir_open(spool->dir, 0, &local);
  g_autoptr(GArray) nos = g_array_new(FALSE, FALSE, sizeof(guint32));
  g_autoptr(GPtrArray) old_files = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GHashTable) by_loc = g_hash_table_new(NULL, NULL);
  const char *name;

  if (d == NULL) {
    g_set_error(error, INSP_SPOOL_ERROR, INSP_SPOOL_ERROR_IO, "cannot list spool directory: %s",
                local->message);
    return FALSE;
  }
  while ((name = g_dir_read_name(d)) != NULL) {
    gsize len = strlen(name);
    if (g_str_has_suffix(name, ".tmp")) {
      (void)unlinkat(spool->dir_fd, name, 0);
    } else if (len == 18 && g_str_has_prefix(name, "seg-") && g_str_has_suffix(name, ".log")) {
      char *end = NULL;
      guint64 no = g_ascii_strtoull(name + 4, &end, 10);
      if (end == name + 14 && no < G_MAXUINT32) {
        guint32 n = (guint32)no;
        g_array_append_val(nos, n);
      }
    } else if (len == 26 && g_str_has_suffix(name, ".msg")) {
      g_ptr_array_add(old_files, g_strdup(name));
    }
  }
  {
    /* numeric order */
    guint32 *v = (guint32 *)(void *)nos->data;
    for (guint i = 1; i < nos->len; i++)
      for (guint j = i; j > 0 && v[j - 1] > v[j]; j--) {
        guint32 t = v[j];
        v[j] = v[j - 1];
        v[j - 1] = t;
      }
  }
  for (guint i = 0; i < nos->len; i++) {
    guint32 no = g_array_index(nos, guint32, i);
    segment_load_locked(spool, no, by_loc);
    spool->next_no = MAX(spool->next_no, no + 1);
  }
  /* Segments with nothing live go; appends start a new head. */
  for (guint i = spool->segments->len; i-- > 0;) {
    Segment *s = g_ptr_array_index(spool->segments, i);
    if (s->live == 0)
      segment_drop_locked(spool, s);
  }
  /* The old format, imported in seq order (its names sort so). */
  g_ptr_array_sort(old_files, cmp_names);
  for (guint i = 0; i < old_files->len; i++) {
    const char *f = old_files->pdata[i];
    g_autoptr(InspSpoolMessage) msg = old_file_read(spool, f);
    if (msg == NULL)
      spool->corrupt++;
    else if (push_locked(spool, msg, error) == 0 && error != NULL && *error != NULL)
      return FALSE;
    (void)unlinkat(spool->dir_fd, f, 0);
  }
  if (!reclaim_locked(spool, 0, FALSE))
    g_debug("spool: over its budget after open");
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
  spool->drops_fd = -1;
  spool->dir_fd = -1;
  g_mutex_init(&spool->lock);
  spool->dir = g_strdup(dir);
  spool->max_bytes = max_bytes;
  spool->budget = max_bytes;
  spool->seg_max = CLAMP(max_bytes / 8, SEG_MIN, SEG_MAX);
  spool->flags = flags;
  spool->next_id = 1;
  spool->next_no = 1;
  spool->by_id = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, entry_free);
  spool->segments = g_ptr_array_new();
  spool->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (spool->dir_fd < 0) {
    int e = errno;
    g_set_error(error, INSP_SPOOL_ERROR, INSP_SPOOL_ERROR_IO,
                "cannot open spool directory '%s': %s", dir, g_strerror(e));
    return NULL;
  }
  learn_room_locked(spool);
  if (!spool_scan(spool, error))
    return NULL;
  /* What was dropped and not yet announced, by this open or an earlier
   * process, stays to be announced. */
  {
    InspSpoolDrops now = spool->drops;
    memset(&spool->drops, 0, sizeof spool->drops);
    drops_open_locked(spool);
    spool->drops.masks += now.masks;
    spool->drops.results += now.results;
    if (now.masks > 0) {
      spool->drops.first_mask_seq = spool->drops.masks == now.masks
                                        ? now.first_mask_seq
                                        : MIN(spool->drops.first_mask_seq, now.first_mask_seq);
      spool->drops.last_mask_seq = MAX(spool->drops.last_mask_seq, now.last_mask_seq);
    }
    for (guint i = 0; i < now.n_ranges; i++)
      add_range(&spool->drops, now.ranges[i][0], now.ranges[i][1]);
    spool->drops.ranges_merged |= now.ranges_merged;
    if (now.results > 0) {
      spool->drops.first_result_seq =
          spool->drops.results == now.results
              ? now.first_result_seq
              : MIN(spool->drops.first_result_seq, now.first_result_seq);
      spool->drops.last_result_seq = MAX(spool->drops.last_result_seq, now.last_result_seq);
    }
    drops_save_locked(spool);
  }
  return g_steal_pointer(&spool);
}

void
insp_spool_free(InspSpool *spool)
{
  if (spool == NULL)
    return;
  if (spool->segments != NULL) {
    if (spool->flags & (INSP_SPOOL_FLAGS_FSYNC | INSP_SPOOL_FLAGS_SYNC_BATCH))
      sync_locked(spool, TRUE);
    for (guint i = 0; i < spool->segments->len; i++)
      segment_close(g_ptr_array_index(spool->segments, i));
    g_ptr_array_unref(spool->segments);
  }
  if (spool->drops_fd >= 0)
    close(spool->drops_fd);
  if (spool->dir_fd >= 0)
    close(spool->dir_fd);
  g_queue_clear(&spool->results);
  g_queue_clear(&spool->masks);
  g_clear_pointer(&spool->by_id, g_hash_table_unref);
  g_free(spool->dir);
  g_mutex_clear(&spool->lock);
  g_free(spool);
}

/* ---- push ---- */

static guint64
push_locked(InspSpool *spool, const InspSpoolMessage *msg, GError **error)
{
  guint8 h[REC_HEADER];
  gsize tl = strlen(msg->topic), pl = msg->part_id ? strlen(msg->part_id) : 0, cl = 0, yl = 0;
  const guint8 *cp = NULL, *yp;
  struct iovec iov[5];
  guint64 size, off;
  guint32 sum;
  gboolean is_mask = msg->kind == INSP_SPOOL_KIND_MASK;
  Segment *seg;
  SpoolEntry *e, *old;
  g_autoptr(GError) local = NULL;
  int tries = 0;

  if (msg->correlation)
    cp = g_bytes_get_data(msg->correlation, &cl);
  yp = g_bytes_get_data(msg->payload, &yl);
  size = REC_HEADER + tl + pl + cl + yl;
  if (size > spool->max_bytes) {
    SpoolEntry fake = {.seq = msg->seq, .kind = msg->kind};
    note_drop(spool, &fake);
    g_set_error(error, INSP_SPOOL_ERROR, INSP_SPOOL_ERROR_TOO_LARGE,
                "message of %" G_GUINT64_FORMAT
                " bytes is larger than the spool (%" G_GUINT64_FORMAT " bytes)",
                size, spool->max_bytes);
    return 0;
  }
  if (!reclaim_locked(spool, size, is_mask)) {
    SpoolEntry fake = {.seq = msg->seq, .kind = msg->kind};
    note_drop(spool, &fake);
    return 0;
  }
  header_fill(h, msg, tl, pl, cl, yl);
  {
    guint32 s0 = fnv1a(2166136261u, h, 40);
    s0 = fnv1a(s0, h + 44, 4);
    s0 = fnv1a(s0, (const guint8 *)msg->topic, tl);
    s0 = fnv1a(s0, (const guint8 *)msg->part_id, pl);
    s0 = fnv1a(s0, cp, cl);
    sum = fnv1a(s0, yp, yl);
  }
  put_u32(h + 40, sum);
  for (;;) {
    iov[0] = (struct iovec){h, sizeof h};
    iov[1] = (struct iovec){(void *)msg->topic, tl};
    iov[2] = (struct iovec){(void *)msg->part_id, pl};
    iov[3] = (struct iovec){(void *)cp, cl};
    iov[4] = (struct iovec){(void *)yp, yl};
    g_clear_error(&local);
    if (append_locked(spool, stream_of(msg->kind), iov, 5, size, &seg, &off, &local))
      break;
    if (errno == ENOSPC || errno == EDQUOT) {
      /* The filesystem is fuller than the budget thought: learn its room,
       * make that much (masks first), else free whole segments. */
      learn_room_locked(spool);
      if (++tries <= 2 && reclaim_locked(spool, size, is_mask))
        continue;
      if (free_segment_locked(spool, is_mask))
        continue;
    }
    /* Nothing left to free, or another error: this message is dropped. */
    {
      SpoolEntry fake = {.seq = msg->seq, .kind = msg->kind};
      note_drop(spool, &fake);
    }
    g_propagate_error(error, g_steal_pointer(&local));
    return 0;
  }
  e = entry_new_locked(spool, msg->seq, msg->kind, size);
  entry_place(spool, e, seg, off);
  old = entry_link_locked(spool, e);
  if (old != NULL) {
    /* The same (seq, kind) again: the new record replaces the old one. */
    entry_remove_locked(spool, old, TRUE);
    old = entry_link_locked(spool, e);
    g_assert(old == NULL);
  }
  if (spool->cached_bytes + size <= SPOOL_CACHE_MAX) {
    e->cached = message_copy(msg, e->id);
    spool->cached_bytes += size;
  }
  return e->id;
}

guint64
insp_spool_push(InspSpool *spool, const InspSpoolMessage *msg, guint *evicted_masks,
                guint *evicted_results, GError **error)
{
  gsize tl, pl, cl = 0, yl;
  guint64 id, dm, dr;

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
  g_mutex_lock(&spool->lock);
  dm = spool->dropped_masks;
  dr = spool->dropped_results;
  id = push_locked(spool, msg, error);
  dm = spool->dropped_masks - dm;
  dr = spool->dropped_results - dr;
  g_mutex_unlock(&spool->lock);
  if (evicted_masks)
    *evicted_masks = (guint)dm;
  if (evicted_results)
    *evicted_results = (guint)dr;
  return id;
}

InspSpoolMessage *
insp_spool_claim_next(InspSpool *spool)
{
  InspSpoolMessage *msg = NULL;
  SpoolEntry *e;

  g_return_val_if_fail(spool != NULL, NULL);

  g_mutex_lock(&spool->lock);
  while ((e = next_unclaimed_locked(spool)) != NULL) {
    msg = e->cached ? message_copy(e->cached, e->id) : record_read_locked(spool, e);
    if (msg != NULL) {
      e->claimed = TRUE;
      break;
    }
    spool->corrupt++;
    note_drop(spool, e); /* its seq is known: announced like any drop */
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
  if (e != NULL) {
    entry_remove_locked(spool, e, TRUE);
    /* Out-of-order acks leave dead records behind: keep the disk within
     * 1.5 x what is live (plus a segment). */
    if (spool->bytes > spool->live_bytes + spool->live_bytes / 2 + spool->seg_max) {
      Segment *s = most_dead(spool, FALSE);
      if (s != NULL)
        (void)compact_locked(spool, s);
    }
  }
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
insp_spool_flush(InspSpool *spool)
{
  g_return_if_fail(spool != NULL);
  g_mutex_lock(&spool->lock);
  if (spool->flags & (INSP_SPOOL_FLAGS_FSYNC | INSP_SPOOL_FLAGS_SYNC_BATCH))
    sync_locked(spool, FALSE);
  learn_room_locked(spool);
  g_mutex_unlock(&spool->lock);
}

void
insp_spool_take_drops(InspSpool *spool, InspSpoolDrops *drops)
{
  g_return_if_fail(spool != NULL && drops != NULL);
  g_mutex_lock(&spool->lock);
  *drops = spool->drops;
  memset(&spool->drops, 0, sizeof spool->drops);
  drops_save_locked(spool);
  g_mutex_unlock(&spool->lock);
}

void
insp_spool_get_stats(InspSpool *spool, InspSpoolStats *stats)
{
  g_return_if_fail(spool != NULL && stats != NULL);
  g_mutex_lock(&spool->lock);
  stats->n_messages = spool->results.length + spool->masks.length;
  stats->bytes = spool->bytes;
  stats->live_bytes = spool->live_bytes;
  stats->n_segments = spool->segments->len;
  stats->dropped_masks = spool->dropped_masks;
  stats->dropped_results = spool->dropped_results;
  stats->corrupt = spool->corrupt;
  g_mutex_unlock(&spool->lock);
}
