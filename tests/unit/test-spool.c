/* Unit tests of the store-and-forward spool (daemon/insp-spool.c): replay
 * order, ack and release, persistence across reopen, the eviction policy
 * (oldest masks first, then oldest results), corrupt and torn files. */
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
  g_assert_cmpuint(count_files(dir, ".msg"), ==, 2);
  a = insp_spool_claim_next(spool);
  b = insp_spool_claim_next(spool);
  g_assert_cmpuint(a->seq, ==, 1);
  g_assert_cmpuint(b->seq, ==, 2);
  g_assert_true(insp_spool_ack(spool, a->id));
  g_assert_false(insp_spool_ack(spool, a->id)); /* already gone */
  g_assert_cmpuint(count_files(dir, ".msg"), ==, 1);
  insp_spool_release(spool, b->id);
  again = insp_spool_claim_next(spool);
  g_assert_nonnull(again);
  g_assert_cmpuint(again->seq, ==, 2);
  g_assert_cmpuint(again->id, ==, b->id);
  g_assert_true(insp_spool_ack(spool, again->id));
  insp_spool_get_stats(spool, &st);
  g_assert_cmpuint(st.n_messages, ==, 0);
  g_assert_cmpuint(st.bytes, ==, 0);
  g_assert_cmpuint(count_files(dir, ".msg"), ==, 0);
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

static void
test_evict(void)
{
  g_autofree char *dir = make_dir();
  g_autoptr(GError) error = NULL;
  /* Each message is 40 + 10 (topic) + 6 (part id) + 944 = 1000 bytes: the
   * budget holds exactly five. */
  g_autoptr(InspSpool) spool = insp_spool_open(dir, 5000, INSP_SPOOL_FLAGS_NONE, &error);
  guint em = 0, er = 0;
  InspSpoolStats st;
  guint64 seqs[8];
  gsize n = 0;
  InspSpoolMessage *m;

  g_assert_no_error(error);
  push(spool, INSP_SPOOL_KIND_RESULT, 1, 944, 0, &em, &er);
  push(spool, INSP_SPOOL_KIND_MASK, 1, 946, 0, &em, &er); /* "p/s/mask" is 2 bytes shorter */
  push(spool, INSP_SPOOL_KIND_RESULT, 2, 944, 0, &em, &er);
  push(spool, INSP_SPOOL_KIND_MASK, 2, 946, 0, &em, &er);
  push(spool, INSP_SPOOL_KIND_RESULT, 3, 944, 0, &em, &er);
  g_assert_cmpuint(em + er, ==, 0);
  insp_spool_get_stats(spool, &st);
  g_assert_cmpuint(st.bytes, ==, 5000);

  /* Full: a new result evicts the oldest mask (seq 1), not a result. */
  push(spool, INSP_SPOOL_KIND_RESULT, 4, 944, 0, &em, &er);
  g_assert_cmpuint(em, ==, 1);
  g_assert_cmpuint(er, ==, 0);
  /* Then the other mask (seq 2). */
  push(spool, INSP_SPOOL_KIND_RESULT, 5, 944, 0, &em, &er);
  g_assert_cmpuint(em, ==, 1);
  /* No masks left: the oldest result (seq 1) goes. */
  push(spool, INSP_SPOOL_KIND_RESULT, 6, 944, 0, &em, &er);
  g_assert_cmpuint(em, ==, 0);
  g_assert_cmpuint(er, ==, 1);
  /* A mask never evicts a result: it is dropped itself. */
  g_assert_cmpuint(push(spool, INSP_SPOOL_KIND_MASK, 7, 946, 0, &em, &er), ==, 0);
  g_assert_cmpuint(em, ==, 1);
  g_assert_cmpuint(er, ==, 0);

  insp_spool_get_stats(spool, &st);
  g_assert_cmpuint(st.dropped_masks, ==, 3);
  g_assert_cmpuint(st.dropped_results, ==, 1);
  g_assert_cmpuint(st.n_messages, ==, 5);
  g_assert_cmpuint(st.bytes, <=, 5000);
  while ((m = insp_spool_claim_next(spool)) != NULL) {
    g_assert_cmpint(m->kind, ==, INSP_SPOOL_KIND_RESULT);
    seqs[n++] = m->seq;
    insp_spool_message_free(m);
  }
  g_assert_cmpuint(n, ==, 5);
  for (gsize i = 0; i < n; i++)
    g_assert_cmpuint(seqs[i], ==, i + 2);
  g_assert_cmpuint(count_files(dir, ".msg"), ==, 5);
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
  g_assert_cmpuint(count_files(dir, ".msg"), ==, 1);
  rm_rf(dir);
}

static void
test_corrupt(void)
{
  g_autofree char *dir = make_dir();
  g_autoptr(GError) error = NULL;
  InspSpool *spool = insp_spool_open(dir, 1 << 20, INSP_SPOOL_FLAGS_NONE, &error);
  g_autofree char *bad_size = g_build_filename(dir, "00000000000000000001-0.msg", NULL);
  g_autofree char *flipped = g_build_filename(dir, "00000000000000000002-0.msg", NULL);
  g_autofree char *ignored = g_build_filename(dir, "README", NULL);
  g_autofree char *data = NULL;
  gsize len = 0;
  InspSpoolStats st;
  g_autoptr(InspSpoolMessage) m = NULL;

  g_assert_no_error(error);
  push(spool, INSP_SPOOL_KIND_RESULT, 1, 64, 'x', NULL, NULL);
  push(spool, INSP_SPOOL_KIND_RESULT, 2, 64, 'y', NULL, NULL);
  push(spool, INSP_SPOOL_KIND_RESULT, 3, 64, 'z', NULL, NULL);
  insp_spool_free(spool);

  /* Torn write: the file is shorter than its header says. */
  g_assert_true(g_file_get_contents(bad_size, &data, &len, NULL));
  g_assert_true(g_file_set_contents(bad_size, data, (gssize)len - 5, NULL));
  g_clear_pointer(&data, g_free);
  /* A flipped payload byte: the size is right, the checksum is not. */
  g_assert_true(g_file_get_contents(flipped, &data, &len, NULL));
  data[len - 1] ^= 0x40;
  g_assert_true(g_file_set_contents(flipped, data, (gssize)len, NULL));
  g_assert_true(g_file_set_contents(ignored, "not a spool file", -1, NULL));

  spool = insp_spool_open(dir, 1 << 20, INSP_SPOOL_FLAGS_NONE, &error);
  g_assert_no_error(error);
  insp_spool_get_stats(spool, &st);
  g_assert_cmpuint(st.corrupt, ==, 1); /* the short one, found at open */
  g_assert_cmpuint(st.n_messages, ==, 2);
  m = insp_spool_claim_next(spool); /* skips the flipped one */
  g_assert_nonnull(m);
  g_assert_cmpuint(m->seq, ==, 3);
  insp_spool_get_stats(spool, &st);
  g_assert_cmpuint(st.corrupt, ==, 2);
  g_assert_cmpuint(st.n_messages, ==, 1);
  g_assert_false(g_file_test(flipped, G_FILE_TEST_EXISTS));
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
  g_test_add_func("/spool/too-large", test_too_large);
  g_test_add_func("/spool/replace", test_replace);
  g_test_add_func("/spool/corrupt", test_corrupt);
  g_test_add_func("/spool/bad-dir", test_bad_dir);
  return g_test_run();
}
