/* inspectd cameras: lists the V4L2 devices (capabilities, formats with frame
 * sizes, controls with their ranges and current values) and, when built with
 * Aravis, the GenICam cameras it finds. A machine without cameras is not an
 * error: it says so and exits 0. Main thread only. */
#include <stdio.h>

#include "insp-cli.h"
#include "insp-camera.h"

int
insp_cmd_cameras(int argc, char **argv)
{
  int status;
  const GOptionEntry entries[] = {G_OPTION_ENTRY_NULL};

  if (!insp_cli_parse(&argc, &argv, "",
                      "Lists V4L2 devices with their formats and controls (names as\n"
                      "[camera] controls takes them), and GenICam cameras through Aravis.",
                      entries, &status))
    return status;
  g_autofree char *text = insp_cameras_describe();
  fputs(text, stdout);
  return 0;
}
