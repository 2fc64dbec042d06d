/* A file in a folder of its own under the temporary folder, for the unit
 * tests that write one (a model, a safetensors file) and remove both. */
#pragma once

#include <glib.h>
#include <glib/gstdio.h>

/* DIR/@name where DIR is a new "test-XXXXXX" folder; free with g_free. */
static inline char *
test_tmp_path(const char *name)
{
  g_autofree char *dir = g_dir_make_tmp("test-XXXXXX", NULL);

  g_assert_nonnull(dir);
  return g_build_filename(dir, name, NULL);
}

/* Removes @path and the folder test_tmp_path() made for it. */
static inline void
test_tmp_remove(const char *path)
{
  g_autofree char *dir = g_path_get_dirname(path);

  g_unlink(path);
  g_rmdir(dir);
}
