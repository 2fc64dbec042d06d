/* The seq store: blocks reserved ahead, exact carry-on after a clean stop,
 * no seq past what is saved when the state folder goes away. */
#include <glib.h>
#include <glib/gstdio.h>

#include "insp-seq.h"

static guint64
file_value(const char *dir)
{
  g_autofree char *path = g_build_filename(dir, "seq", NULL);
  g_autofree char *text = NULL;

  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  return g_ascii_strtoull(text, NULL, 10);
}

static void
rm_state(const char *dir)
{
  g_autofree char *path = g_build_filename(dir, "seq", NULL);

  g_unlink(path);
  g_assert_cmpint(g_rmdir(dir), ==, 0);
}

static void
test_reserve_and_carry_on(void)
{
  g_autofree char *tmp = g_dir_make_tmp("test-seq-XXXXXX", NULL);
  g_autofree char *dir = g_build_filename(tmp, "state", NULL);
  g_autoptr(GError) error = NULL;
  InspSeq *s = insp_seq_open(dir, 0, &error);
  guint64 seq = 0;

  g_assert_no_error(error);
  g_assert_cmpuint(insp_seq_peek(s), ==, 0);
  g_assert_cmpuint(file_value(dir), ==, INSP_SEQ_BLOCK);
  for (guint64 i = 0; i <= INSP_SEQ_BLOCK / 2; i++) {
    g_assert_true(insp_seq_take(s, &seq, &error));
    g_assert_cmpuint(seq, ==, i);
  }
  /* Half the block used: the next one is reserved ahead. */
  g_assert_cmpuint(file_value(dir), ==, INSP_SEQ_BLOCK / 2 + INSP_SEQ_BLOCK);
  insp_seq_close(s);
  g_assert_cmpuint(file_value(dir), ==, INSP_SEQ_BLOCK / 2 + 1);

  s = insp_seq_open(dir, 0, &error);
  g_assert_no_error(error);
  g_assert_true(insp_seq_take(s, &seq, &error));
  g_assert_cmpuint(seq, ==, INSP_SEQ_BLOCK / 2 + 1);
  /* A crash (no close) leaves the reservation: a restart skips, never
   * repeats. */
  g_assert_cmpuint(file_value(dir), >, seq);
  insp_seq_close(s);
  rm_state(dir);
  g_rmdir(tmp);
}

static void
test_state_folder_gone(void)
{
  g_autofree char *tmp = g_dir_make_tmp("test-seq-XXXXXX", NULL);
  g_autofree char *dir = g_build_filename(tmp, "state", NULL);
  g_autoptr(GError) error = NULL;
  InspSeq *s = insp_seq_open(dir, 0, &error);
  guint64 seq = 0, last = 0, n = 0;

  g_assert_no_error(error);
  rm_state(dir);
  /* The block reserved at open is handed out, not one seq more. */
  while (insp_seq_take(s, &seq, &error)) {
    last = seq;
    n++;
    g_assert_cmpuint(n, <=, INSP_SEQ_BLOCK);
  }
  g_assert_cmpuint(n, ==, INSP_SEQ_BLOCK);
  g_assert_cmpuint(last, ==, INSP_SEQ_BLOCK - 1);
  g_assert_nonnull(error);
  g_assert_nonnull(strstr(error->message, "no sequence number can be reserved"));
  g_clear_error(&error);
  g_assert_false(insp_seq_take(s, &seq, &error));
  g_clear_error(&error);

  /* The folder is back: inspection goes on after the last seq handed out. */
  g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
  g_assert_true(insp_seq_take(s, &seq, &error));
  g_assert_no_error(error);
  g_assert_cmpuint(seq, ==, last + 1);
  g_assert_cmpuint(file_value(dir), >, seq);
  insp_seq_close(s);
  rm_state(dir);
  g_rmdir(tmp);
}

static void
test_damaged_file(void)
{
  g_autofree char *tmp = g_dir_make_tmp("test-seq-XXXXXX", NULL);
  g_autofree char *path = g_build_filename(tmp, "seq", NULL);
  g_autoptr(GError) error = NULL;

  g_assert_true(g_file_set_contents(path, "twelve\n", -1, NULL));
  g_assert_null(insp_seq_open(tmp, 0, &error));
  g_assert_nonnull(error);
  g_assert_nonnull(strstr(error->message, path));
  g_unlink(path);
  g_rmdir(tmp);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/seq/reserve-and-carry-on", test_reserve_and_carry_on);
  g_test_add_func("/seq/state-folder-gone", test_state_folder_gone);
  g_test_add_func("/seq/damaged-file", test_damaged_file);
  return g_test_run();
}
