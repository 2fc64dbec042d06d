/* inspectd run: not built yet. */
#include "insp-cli.h"

int
insp_cmd_run(int argc, char **argv)
{
  int status;
  const GOptionEntry entries[] = { G_OPTION_ENTRY_NULL };

  if (!insp_cli_parse(&argc, &argv, "", "Not built yet.", entries, &status))
    return status;
  return insp_cmd_not_built("run");
}
