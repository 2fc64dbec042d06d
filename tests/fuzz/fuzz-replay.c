/* Replay driver for the fuzz targets, so every ordinary build runs them as a
 * test (suite 'fuzz') without libFuzzer: each file given on the command line,
 * or each file in a directory given, is fed to LLVMFuzzerTestOneInput, and so
 * is a deterministic set of variants of it (every truncation on a stride, and
 * single-byte changes at every position on a stride). Exit status 0 means no
 * input crashed or tripped an assertion; the count goes to stdout. */
#include <glib.h>
#include <stdio.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

static guint64 n_inputs;

static void
run(const guint8 *data, gsize len)
{
  /* Exact-size heap copy so an overread is caught by ASan builds. */
  guint8 *copy = g_memdup2(data, len);
  LLVMFuzzerTestOneInput(copy, len);
  g_free(copy);
  n_inputs++;
}

static void
run_variants(const guint8 *data, gsize len)
{
  static const guint8 values[] = {0x00, 0xff, '9', '"', '}', 0x80};
  gsize step = MAX(1, len / 256);

  run(data, len);
  for (gsize n = 0; n < len; n += step)
    run(data, n);
  guint8 *m = g_memdup2(data, len);
  for (gsize i = 0; i < len; i += step) {
    guint8 saved = m[i];
    for (gsize v = 0; v < G_N_ELEMENTS(values); v++) {
      if (values[v] == saved)
        continue;
      m[i] = values[v];
      run(m, len);
    }
    m[i] = saved;
  }
  g_free(m);
}

static int
cmp_path(gconstpointer a, gconstpointer b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static gboolean
run_path(const char *path)
{
  g_autoptr(GError) error = NULL;
  if (g_file_test(path, G_FILE_TEST_IS_DIR)) {
    g_autoptr(GDir) dir = g_dir_open(path, 0, &error);
    if (!dir) {
      fprintf(stderr, "%s\n", error->message);
      return FALSE;
    }
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    const char *name;
    while ((name = g_dir_read_name(dir)))
      g_ptr_array_add(names, g_build_filename(path, name, NULL));
    g_ptr_array_sort(names, cmp_path);
    for (guint i = 0; i < names->len; i++)
      if (!run_path(g_ptr_array_index(names, i)))
        return FALSE;
    return TRUE;
  }
  g_autofree char *contents = NULL;
  gsize len;
  if (!g_file_get_contents(path, &contents, &len, &error)) {
    fprintf(stderr, "%s\n", error->message);
    return FALSE;
  }
  run_variants((const guint8 *)contents, len);
  return TRUE;
}

int
main(int argc, char **argv)
{
  if (argc < 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
    return 2;
  }
  /* The empty input and a few one-byte ones. */
  run((const guint8 *)"", 0);
  for (int b = 0; b < 256; b += 51) {
    guint8 c = (guint8)b;
    run(&c, 1);
  }
  for (int i = 1; i < argc; i++)
    if (!run_path(argv[i]))
      return 1;
  printf("%" G_GUINT64_FORMAT " inputs replayed\n", n_inputs);
  return 0;
}
