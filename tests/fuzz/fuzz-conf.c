/* libFuzzer target for the config parser (conf/): any byte string either
 * loads to a config whose copy diffs as equal, or is rejected with at least
 * one problem, each naming the file and carrying a non-empty reason. Paths in
 * values are only opened (never read) by the loader. Also linked into the
 * replay program. */
#include "insp-conf.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

int
LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
  GPtrArray *problems = NULL;
  GError *error = NULL;
  InspConfig *cfg =
      insp_config_load_from_data((const char *)data, (gssize)size, "fuzz.conf", &problems, &error);

  if (!cfg) {
    g_assert(error != NULL && problems != NULL && problems->len > 0);
    for (guint i = 0; i < problems->len; i++) {
      const InspConfigProblem *p = problems->pdata[i];

      g_assert(p->file != NULL && p->reason[0] != '\0');
      g_assert(strncmp(p->text, p->file, strlen(p->file)) == 0);
    }
    g_ptr_array_unref(problems);
    g_error_free(error);
    return 0;
  }
  g_assert(error == NULL && problems == NULL);
  {
    InspConfig *copy = insp_config_copy(cfg);
    char **keys = insp_config_diff_keys(cfg, copy);

    g_assert(insp_config_diff(cfg, copy) == INSP_CONFIG_CHANGE_NONE);
    g_assert(keys[0] == NULL);
    g_strfreev(keys);
    insp_config_free(copy);
  }
  insp_config_free(cfg);
  return 0;
}
