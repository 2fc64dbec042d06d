/* libFuzzer target for the MQTT command parser (daemon/insp-mqtt.c,
 * insp_mqtt_parse_command): the first byte picks the command name (trigger,
 * threshold, reload, snapshot, or an unknown one), the rest is the payload.
 * Every input either yields a command whose values respect the documented
 * limits, or is rejected with a non-empty UTF-8 message in
 * INSP_MQTT_ERROR_COMMAND.
 * Also linked into the replay program. */
#include <math.h>
#include <string.h>

#include "insp-mqtt.h"

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

int
LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
  static const char *const names[] = {"trigger", "threshold", "reload", "snapshot", "bogus"};
  GError *error = NULL;
  InspMqttCommand *cmd;
  const char *name;
  double v;

  if (size == 0)
    return 0;
  name = names[data[0] % G_N_ELEMENTS(names)];
  cmd = insp_mqtt_parse_command(name, data + 1, size - 1, &error);
  if (cmd == NULL) {
    g_assert(error != NULL && error->domain == INSP_MQTT_ERROR &&
             error->code == INSP_MQTT_ERROR_COMMAND && error->message[0] != '\0' &&
             g_utf8_validate(error->message, -1, NULL));
    g_error_free(error);
    return 0;
  }
  g_assert(error == NULL);
  g_assert(strcmp(insp_mqtt_command_get_name(cmd), name) == 0);
  if (insp_mqtt_command_get_part_id(cmd) != NULL) {
    const char *p = insp_mqtt_command_get_part_id(cmd);
    g_assert(strlen(p) >= 1 && strlen(p) <= INSP_MQTT_PART_ID_MAX);
    g_assert(g_utf8_validate(p, -1, NULL));
  }
  if (insp_mqtt_command_get_threshold(cmd, &v))
    g_assert(isfinite(v) && v >= INSP_MQTT_THRESHOLD_MIN && v <= INSP_MQTT_THRESHOLD_MAX);
  if (insp_mqtt_command_get_pixel_threshold(cmd, &v))
    g_assert(isfinite(v) && v >= INSP_MQTT_THRESHOLD_MIN && v <= INSP_MQTT_THRESHOLD_MAX);
  if (insp_mqtt_command_get_kind(cmd) == INSP_MQTT_COMMAND_THRESHOLD) {
    double a, b;
    g_assert(insp_mqtt_command_get_threshold(cmd, &a) ||
             insp_mqtt_command_get_pixel_threshold(cmd, &b));
  }
  insp_mqtt_command_unref(cmd);
  return 0;
}
