/* Unit tests of the store-and-forward spool (daemon/mqtt/insp-spool.c):
 * replay order, ack and release, persistence across reopen (acks included),
 * the eviction policy (oldest masks first, then oldest results), the disk it
 * takes, damaged and torn records, the old one-file-per-message format. */
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#include "insp-spool.h"

static char *
make_dir(void)
{
  g_autoptr(GError) error = NULL;
  char *dir = g_dir_make_tmp("test-spool-XXXXXX", &error);
  g_assert_no_error(error);
  return dir;
}

static void
rm_rf(const char *dir)
{
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  const char *name;

  if (d == NULL)
    return;
  while ((name = g_dir_read_name(d)) != NULL) {
    g_autofree char *p = g_build_filename(dir, name, NULL);
    g_unlink(p);
  }
  g_rmdir(dir);
}

static guint
count_files(const char *dir, const char *suffix)
{
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  const char *name;
  guint n = 0;

  while ((name = g_dir_read_name(d)) != NULL)
    if (g_str_has_suffix(name, suffix))
      n++;
  return n;
}

/* Pushes a message whose payload is @size bytes of @fill. */
static guint64
push(InspSpool *spool, InspSpoolKind kind, guint64 seq, gsize size, guint8 fill, guint *em,
     guint *er)
{
  g_autofree guint8 *buf = g_malloc(size ? size : 1);
  g_autoptr(GBytes) payload = NULL;
  g_autofree char *part = g_strdup_printf("part-%" G_GUINT64_FORMAT, seq);
  InspSpoolMessage m = {0};
  g_autoptr(GError) error = NULL;
  guint64 id;

  memset(buf, fill, size);
  payload = g_bytes_new(buf, size);
  m.kind = kind;
  m.seq = seq;
  m.qos = 1;
  m.topic = (char *)(kind == INSP_SPOOL_KIND_MASK ? "p/s/mask" : "p/s/result");
  m.part_id = part;
  m.payload = payload;
  id = insp_spool_push(spool, &m, em, er, &error);
  g_assert_no_error(error);
  return id;
}

static void
test_order(void)
{
  g_autofree char *dir = make_dir();
  g_autoptr(GError) error = NULL;
  g_autoptr(InspSpool) spool = insp_spool_open(dir, 1 << 20, INSP_SPOOL_FLAGS_NONE, &error);
  const struct {
    InspSpoolKind kind;
    guint64 seq;
  } in[] = {{INSP_SPOOL_KIND_MASK, 2},  {INSP_SPOOL_KIND_RESULT, 3}, {INSP_SPOOL_KIND_RESULT, 1},
            {INSP_SPOOL_KIND_REPLY, 2}, {INSP_SPOOL_KIND_RESULT, 2}, {INSP_SPOOL_KIND_MASK, 10}},
    want[] = {{INSP_SPOOL_KIND_RESULT, 1}, {INSP_SPOOL_KIND_RESULT, 2}, {INSP_SPOOL_KIND_REPLY, 2},
              {INSP_SPOOL_KIND_MASK, 2},   {INSP_SPOOL_KIND_RESULT, 3}, {INSP_SPOOL_KIND_MASK, 10}};
  InspSpoolStats st;

  g_assert_no_error(error);
  for (gsize i = 0; i < G_N_ELEMENTS(in); i++)
    g_assert_cmpuint(push(spool, in[i].kind, in[i].seq, 10, (guint8)i, NULL, NULL), >, 0);
  for (gsize i = 0; i < G_N_ELEMENTS(want); i++) {
    g_autoptr(InspSpoolMessage) m = insp_spool_claim_next(spool);
    g_assert_nonnull(m);
    g_assert_cmpuint(m->seq, ==, want[i].seq);
    g_assert_cmpint(m->kind, ==, want[i].kind);
  }
  g_assert_null(insp_spool_claim_next(spool));
  g_assert_false(insp_spool_has_unclaimed(spool));
  insp_spool_get_stats(spool, &st);
  g_assert_cmpuint(st.n_messages, ==, 6);
  rm_rf(dir);
}

static void
test_ack_release(void)
{
  g_autofree char *dir = make_dir();
  g_autoptr(GError) error = NULL;
  g_autoptr(InspSpool) spool = insp_spool_open(dir, 1 << 20, INSP_SPOOL_FLAGS_FSYNC, &error);
  g_autoptr(InspSpoolMessage) a = NULL;
  g_autoptr(InspSpoolMessage) b = NULL;
  g_autoptr(InspSpoolMessage) again = NULL;
  InspSpoolStats st;

  g_assert_no_error(error);
  push(spool, INSP_SPOOL_KIND_RESULT, 1, 100, 1, NULL, NULL);
  push(spool, INSP_SPOOL_KIND_RESULT, 2, 100, 2, NULL, NULL);
  g_assert_cmpuint(count_files(dir, ".log"), ==, 1); /* one segment */
  a = insp_spool_claim_next(spool);
  b = insp_spool_claim_next(spool);
  g_assert_cmpuint(a->seq, ==, 1);
  g_assert_cmpuint(b->seq, ==, 2);
  g_assert_true(insp_spool_ack(spool, a->id));
  g_assert_false(insp_spool_ack(spool, a->id)); /* already gone */
  insp_spool_get_stats(spool, &st);
  g_assert_cmpuint(st.n_messages, ==, 1);
  insp_spool_release(spool, b->id);
  again = insp_spool_claim_next(spool);
  g_assert_nonnull(again);
  g_assert_cmpuint(again->seq, ==, 2);
  g_assert_cmpuint(again->id, ==, b->id);
  g_assert_true(insp_spool_ack(spool, again->id));
  insp_spool_get_stats(spool, &st);
  g_assert_cmpuint(st.n_messages, ==, 0);
  g_assert_cmpuint(st.bytes, ==, 4096); /* the head is emptied; the drops file's block */
  rm_rf(dir);
}

static void
test_reopen(void)
{
  g_autofree char *dir = make_dir();
  g_autoptr(GError) error = NULL;
  InspSpool *spool = insp_spool_open(dir, 1 << 20, INSP_SPOOL_FLAGS_NONE, &error);
  static const guint8 corr[] = {0, 1, 2, 0xff};
  g_autoptr(GBytes) payload = g_bytes_new_static("{\"seq\":7}", 9);
  g_autoptr(GBytes) correlation = g_bytes_new_static(corr, sizeof corr);
  InspSpoolMessage m = {.kind = INSP_SPOOL_KIND_REPLY,
                        .seq = 7,
                        .qos = 2,
                        .topic = (char *)"plc/resp/1",
                        .part_id = (char *)"A-17",
                        .correlation = correlation,
                        .payload = payload};
  g_autoptr(InspSpoolMessage) got = NULL;
  g_autofree char *stray = g_build_filename(dir, "00000000000000000009-0.msg.tmp", NULL);

  g_assert_no_error(error);
  g_assert_cmpuint(insp_spool_push(spool, &m, NULL, NULL, &error), >, 0);
  g_assert_no_error(error);
  push(spool, INSP_SPOOL_KIND_RESULT, 3, 50, 3, NULL, NULL);
  /* Claimed but never acked: still there after a restart. */
  insp_spool_message_free(insp_spool_claim_next(spool));
  insp_spool_free(spool);
  g_assert_true(g_file_set_contents(stray, "half a mess", -1, NULL));

  spool = insp_spool_open(dir, 1 << 20, INSP_SPOOL_FLAGS_NONE, &error);
  g_assert_no_error(error);
  g_assert_false(g_file_test(stray, G_FILE_TEST_EXISTS));
  insp_spool_message_free(insp_spool_claim_next(spool)); /* seq 3 */
  got = insp_spool_claim_next(spool);
  g_assert_nonnull(got);
  g_assert_cmpuint(got->seq, ==, 7);
  g_assert_cmpint(got->kind, ==, INSP_SPOOL_KIND_REPLY);
  g_assert_cmpint(got->qos, ==, 2);
  g_assert_cmpstr(got->topic, ==, "plc/resp/1");
  g_assert_cmpstr(got->part_id, ==, "A-17");
  g_assert_true(g_bytes_equal(got->payload, payload));
  g_assert_true(g_bytes_equal(got->correlation, correlation));
  insp_spool_free(spool);
  rm_rf(dir);
}

/* The eviction policy, whatever the margins: fails with their masks until
 * the budget (1 MiB) is reached, then only results. Every push keeps the
 * disk within the budget; the oldest masks go first, and no result goes
 * while a mask is left; then the oldest results; a mask never evicts a
 * result. */
static void
test_evict(void)
{
  g_autofree char *dir = make_dir();
  g_autoptr(GError) error = NULL;
  g_autoptr(InspSpool) spool = insp_spool_open(dir, 1 << 20, INSP_SPOOL_FLAGS_NONE, &error);
  guint em = 0, er = 0;
  InspSpoolStats st;
  InspSpoolDrops drops = {0};
  guint64 seq = 0, masks_dropped = 0, results_dropped = 0, next_mask = 1, next_result = 1;
  InspSpoolMessage *m;

  g_assert_no_error(error);
  /* Records of 48 + 10 + 8 + 9934 = 10000 bytes. Fails with their masks
   * until a mask goes; then results only, until a result goes. */
  while (results_dropped == 0) {
    seq++;
    g_assert_cmpuint(seq, <, 1000);
    push(spool, INSP_SPOOL_KIND_RESULT, seq, 9934, 0, &em, &er);
    masks_dropped += em;
    results_dropped += er;
    if (masks_dropped == 0) {
      push(spool, INSP_SPOOL_KIND_MASK, seq, 9936, 0, &em, &er);
      masks_dropped += em;
      g_assert_cmpuint(er, ==, 0); /* a mask never evicts a result */
    }
    insp_spool_get_stats(spool, &st);
    g_assert_cmpuint(st.bytes, <=, 1 << 20);
    insp_spool_take_drops(spool, &drops);
    if (drops.masks > 0) {
      g_assert_cmpuint(drops.first_mask_seq, ==, next_mask); /* oldest first */
      next_mask = drops.last_mask_seq + 1;
    }
    if (drops.results > 0) {
      g_assert_cmpuint(drops.first_result_seq, ==, next_result);
      next_result = drops.last_result_seq + 1;
    }
  }
  g_assert_cmpuint(masks_dropped, >, 0);
  insp_spool_get_stats(spool, &st);
  g_test_message("%" G_GUINT64_FORMAT " fails pushed, %" G_GUINT64_FORMAT
                 " masks and %" G_GUINT64_FORMAT " results dropped, %u kept in %" G_GUINT64_FORMAT
                 " bytes",
                 seq, masks_dropped, results_dropped, st.n_messages, st.bytes);
  /* A mask that does not fit beside the results is dropped itself. */
  g_assert_cmpuint(push(spool, INSP_SPOOL_KIND_MASK, seq + 1, 900000, 0, &em, &er), ==, 0);
  g_assert_cmpuint(em, ==, 1);
  g_assert_cmpuint(er, ==, 0);
  /* What is left is in order, masks after results of the same seq. */
  {
    guint64 last_seq = 0;
    int last_kind = -1;
    guint n_masks = 0;
    while ((m = insp_spool_claim_next(spool)) != NULL) {
      g_assert_true(m->seq > last_seq || (m->seq == last_seq && (int)m->kind > last_kind));
      last_seq = m->seq;
      last_kind = (int)m->kind;
      n_masks += m->kind == INSP_SPOOL_KIND_MASK;
      insp_spool_message_free(m);
    }
    g_assert_cmpuint(n_masks, ==, 0); /* results went only when no mask was left */
  }
  rm_rf(dir);
}

/* 10,000 small results in a 8 MiB spool: a few files, and the disk it takes
 * (file sizes and the blocks the filesystem gave them) within 1.5 x the
 * payload records, also after half of them were acknowledged out of order. */
static void
test_disk_use(void)
{
  g_autofree char *dir = make_dir();
  g_autoptr(GError) error = NULL;
  g_autoptr(InspSpool) spool = insp_spool_open(dir, 8u << 20, INSP_SPOOL_FLAGS_NONE, &error);
  g_autoptr(GArray) ids = g_array_new(FALSE, FALSE, sizeof(guint64));
  InspSpoolStats st;
  gint64 t0 = g_get_monotonic_time();
  guint64 blocks = 0;

  g_assert_no_error(error);
  for (guint64 seq = 1; seq <= 10000; seq++) {
    guint64 id = push(spool, INSP_SPOOL_KIND_RESULT, seq, 300, 'r', NULL, NULL);
    g_assert_cmpuint(id, >, 0);
    g_array_append_val(ids, id);
  }
  double secs = (double)(g_get_monotonic_time() - t0) / G_USEC_PER_SEC;
  g_test_message("10000 pushes in %.3f s (%.0f/s)", secs, 10000 / secs);
  insp_spool_get_stats(spool, &st);
  g_assert_cmpuint(st.n_messages, ==, 10000);
  g_assert_cmpuint(st.bytes, <=, st.live_bytes + st.live_bytes / 2); /* counted in blocks */
  g_assert_cmpuint(count_files(dir, ".log"), <=, 4);
  {
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *name;
    while ((name = g_dir_read_name(d)) != NULL) {
      g_autofree char *path = g_build_filename(dir, name, NULL);
      GStatBuf sb;
      g_assert_cmpint(g_stat(path, &sb), ==, 0);
      blocks += (guint64)sb.st_blocks * 512;
    }
  }
  g_test_message("%" G_GUINT64_FORMAT " bytes of records, %" G_GUINT64_FORMAT
                 " in files, %" G_GUINT64_FORMAT " in blocks",
                 st.live_bytes, st.bytes, blocks);
  g_assert_cmpuint(blocks, <=, st.live_bytes + st.live_bytes / 2);
  /* Every other one acknowledged: dead records are reclaimed as the disk
   * passes 1.5 x what is live plus a segment. */
  for (guint i = 0; i < ids->len; i += 2)
    g_assert_true(insp_spool_ack(spool, g_array_index(ids, guint64, i)));
  insp_spool_get_stats(spool, &st);
  g_assert_cmpuint(st.n_messages, ==, 5000);
  g_assert_cmpuint(st.bytes, <=, st.live_bytes + st.live_bytes / 2 + (1u << 20));
  rm_rf(dir);
}

/* Acks outlive the process: an acknowledged message is not sent again
 * after a restart, although its segment still holds others. */
static void
test_acks_persist(void)
{
  g_autofree char *dir = make_dir();
  g_autoptr(GError) error = NULL;
  InspSpool *spool = insp_spool_open(dir, 1 << 20, INSP_SPOOL_FLAGS_NONE, &error);
  guint64 mid;
  InspSpoolMessage *m;
  guint64 got[3];
  guint n = 0;

  g_assert_no_error(error);
  push(spool, INSP_SPOOL_KIND_RESULT, 1, 50, 1, NULL, NULL);
  mid = push(spool, INSP_SPOOL_KIND_RESULT, 2, 50, 2, NULL, NULL);
  push(spool, INSP_SPOOL_KIND_RESULT, 3, 50, 3, NULL, NULL);
  g_assert_true(insp_spool_ack(spool, mid));
  insp_spool_free(spool);
  g_assert_cmpuint(count_files(dir, ".ack"), ==, 1);

  spool = insp_spool_open(dir, 1 << 20, INSP_SPOOL_FLAGS_NONE, &error);
  g_assert_no_error(error);
  while ((m = insp_spool_claim_next(spool)) != NULL) {
    g_assert_cmpuint(n, <, 3);
    got[n++] = m->seq;
    insp_spool_message_free(m);
  }
  g_assert_cmpuint(n, ==, 2);
  g_assert_cmpuint(got[0], ==, 1);
  g_assert_cmpuint(got[1], ==, 3);
  insp_spool_free(spool);
  rm_rf(dir);
}

/* A spool folder written by the one-file-per-message format is imported. */
static void
test_import_old(void)
{
  g_autofree char *dir = make_dir();
  g_autoptr(GError) error = NULL;
  const char *topic = "p/s/result", *part = "A-1", *payload = "{\"seq\":42}";
  gsize tl = strlen(topic), pl = strlen(part), yl = strlen(payload);
  gsize len = 40 + tl + pl + yl;
  g_autofree guint8 *f = g_malloc0(len);
  guint32 h = 2166136261u;
  g_autofree char *name = g_build_filename(dir, "00000000000000000042-0.msg", NULL);
  g_autoptr(InspSpool) spool = NULL;
  g_autoptr(InspSpoolMessage) m = NULL;

  memcpy(f, "INSPSPL1", 8);
  f[8] = INSP_SPOOL_KIND_RESULT;
  f[9] = 1;
  for (int i = 0; i < 4; i++)
    f[12 + i] = (guint8)(tl >> (8 * i)), f[16 + i] = (guint8)(pl >> (8 * i)),
           f[24 + i] = (guint8)(yl >> (8 * i));
  f[32] = 42;
  memcpy(f + 40, topic, tl);
  memcpy(f + 40 + tl, part, pl);
  memcpy(f + 40 + tl + pl, payload, yl);
  for (gsize i = 0; i < len; i++)
    if (i < 28 || i >= 32) {
      h ^= f[i];
      h *= 16777619u;
    }
  for (int i = 0; i < 4; i++)
    f[28 + i] = (guint8)(h >> (8 * i));
  g_assert_true(g_file_set_contents(name, (const char *)f, (gssize)len, NULL));

  spool = insp_spool_open(dir, 1 << 20, INSP_SPOOL_FLAGS_NONE, &error);
  g_assert_no_error(error);
  g_assert_false(g_file_test(name, G_FILE_TEST_EXISTS));
  m = insp_spool_claim_next(spool);
  g_assert_nonnull(m);
  g_assert_cmpuint(m->seq, ==, 42);
  g_assert_cmpstr(m->part_id, ==, "A-1");
  g_assert_cmpmem(g_bytes_get_data(m->payload, NULL), g_bytes_get_size(m->payload), payload, yl);
  rm_rf(dir);
}

static void
test_too_large(void)
{
  g_autofree char *dir = make_dir();
  g_autoptr(GError) error = NULL;
  g_autoptr(InspSpool) spool = insp_spool_open(dir, 500, INSP_SPOOL_FLAGS_NONE, &error);
  g_autoptr(GBytes) payload = g_bytes_new_take(g_malloc0(1000), 1000);
  InspSpoolMessage m = {
      .kind = INSP_SPOOL_KIND_RESULT, .seq = 1, .topic = (char *)"t", .payload = payload};
  guint em = 9, er = 9;
  InspSpoolStats st;

  g_assert_no_error(error);
  g_assert_cmpuint(insp_spool_push(spool, &m, &em, &er, &error), ==, 0);
  g_assert_error(error, INSP_SPOOL_ERROR, INSP_SPOOL_ERROR_TOO_LARGE);
  g_assert_cmpuint(em, ==, 0);
  g_assert_cmpuint(er, ==, 1);
  insp_spool_get_stats(spool, &st);
  g_assert_cmpuint(st.dropped_results, ==, 1);
  g_assert_cmpuint(st.n_messages, ==, 0);
  rm_rf(dir);
}

static void
test_replace(void)
{
  g_autofree char *dir = make_dir();
  g_autoptr(GError) error = NULL;
  g_autoptr(InspSpool) spool = insp_spool_open(dir, 1 << 20, INSP_SPOOL_FLAGS_NONE, &error);
  g_autoptr(InspSpoolMessage) m = NULL;
  InspSpoolStats st;

  g_assert_no_error(error);
  push(spool, INSP_SPOOL_KIND_RESULT, 5, 10, 'a', NULL, NULL);
  push(spool, INSP_SPOOL_KIND_RESULT, 5, 20, 'b', NULL, NULL);
  insp_spool_get_stats(spool, &st);
  g_assert_cmpuint(st.n_messages, ==, 1);
  m = insp_spool_claim_next(spool);
  g_assert_cmpuint(g_bytes_get_size(m->payload), ==, 20);
  g_assert_cmpint(((const char *)g_bytes_get_data(m->payload, NULL))[0], ==, 'b');
  rm_rf(dir);
}

static void
test_corrupt(void)
{
  g_autofree char *dir = make_dir();
  g_autoptr(GError) error = NULL;
  InspSpool *spool = insp_spool_open(dir, 1 << 20, INSP_SPOOL_FLAGS_NONE, &error);
  g_autofree char *seg = g_build_filename(dir, "seg-0000000001.log", NULL);
  g_autofree char *ignored = g_build_filename(dir, "README", NULL);
  g_autofree char *data = NULL;
  gsize len = 0;
  InspSpoolStats st;
  g_autoptr(InspSpoolMessage) m = NULL;

  g_assert_no_error(error);
  /* Records of 48 + 10 + 6 + 64 = 128 bytes. */
  for (guint64 seq = 1; seq <= 4; seq++)
    push(spool, INSP_SPOOL_KIND_RESULT, seq, 64, 'x', NULL, NULL);
  insp_spool_free(spool);

  g_assert_true(g_file_get_contents(seg, &data, &len, NULL));
  g_assert_cmpuint(len, ==, 4 * 128);
  /* A flipped payload byte in record 2: its checksum fails, the rest holds. */
  data[2 * 128 - 1] ^= 0x40;
  /* A torn last write: record 4 is cut short. */
  g_assert_true(g_file_set_contents(seg, data, (gssize)len - 5, NULL));
  g_assert_true(g_file_set_contents(ignored, "not a spool file", -1, NULL));

  spool = insp_spool_open(dir, 1 << 20, INSP_SPOOL_FLAGS_NONE, &error);
  g_assert_no_error(error);
  insp_spool_get_stats(spool, &st);
  g_assert_cmpuint(st.corrupt, ==, 2);
  g_assert_cmpuint(st.n_messages, ==, 2);
  m = insp_spool_claim_next(spool);
  g_assert_nonnull(m);
  g_assert_cmpuint(m->seq, ==, 1);
  g_clear_pointer(&m, insp_spool_message_free);
  m = insp_spool_claim_next(spool);
  g_assert_nonnull(m);
  g_assert_cmpuint(m->seq, ==, 3);
  g_assert_true(g_file_test(ignored, G_FILE_TEST_EXISTS));
  insp_spool_free(spool);
  rm_rf(dir);
}

static void
test_bad_dir(void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = make_dir();
  g_autofree char *file = g_build_filename(dir, "plain-file", NULL);
  InspSpool *spool;

  g_assert_true(g_file_set_contents(file, "x", -1, NULL));
  spool = insp_spool_open(file, 1000, INSP_SPOOL_FLAGS_NONE, &error);
  g_assert_null(spool);
  g_assert_error(error, INSP_SPOOL_ERROR, INSP_SPOOL_ERROR_IO);
  g_assert_nonnull(strstr(error->message, "plain-file"));
  rm_rf(dir);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/spool/order", test_order);
  g_test_add_func("/spool/ack-release", test_ack_release);
  g_test_add_func("/spool/reopen", test_reopen);
  g_test_add_func("/spool/evict", test_evict);
  g_test_add_func("/spool/disk-use", test_disk_use);
  g_test_add_func("/spool/acks-persist", test_acks_persist);
  g_test_add_func("/spool/import-old", test_import_old);
  g_test_add_func("/spool/too-large", test_too_large);
  g_test_add_func("/spool/replace", test_replace);
  g_test_add_func("/spool/corrupt", test_corrupt);
  g_test_add_func("/spool/bad-dir", test_bad_dir);
  return g_test_run();
}
