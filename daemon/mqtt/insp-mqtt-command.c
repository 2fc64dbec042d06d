/* The command protocol: a command topic's payload parsed and validated into an
 * InspMqttCommand, and the policy that refuses a valid command (commands
 * level, rate, response topic). Bounded, no I/O, no libmosquitto:
 * insp_mqtt_parse_command() is the fuzzer's entry point.
 * Threads: any; the rate bucket belongs to its caller (the net thread). */
#include "insp-mqtt-private.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#define JSON_MAX_DEPTH 4

/* ---------- command parsing (no I/O; fuzz entry point) ---------- */

InspMqttCommand *
insp_mqtt_command_ref(InspMqttCommand *cmd)
{
  g_return_val_if_fail(cmd != NULL, NULL);
  g_atomic_int_inc(&cmd->ref);
  return cmd;
}

void
insp_mqtt_command_unref(InspMqttCommand *cmd)
{
  if (cmd == NULL || !g_atomic_int_dec_and_test(&cmd->ref))
    return;
  g_free(cmd->name);
  g_free(cmd->part_id);
  g_free(cmd->response_topic);
  g_clear_pointer(&cmd->correlation, g_bytes_unref);
  g_free(cmd);
}

InspMqttCommandKind
insp_mqtt_command_get_kind(const InspMqttCommand *cmd)
{
  g_return_val_if_fail(cmd != NULL, INSP_MQTT_COMMAND_TRIGGER);
  return cmd->kind;
}

const char *
insp_mqtt_command_get_name(const InspMqttCommand *cmd)
{
  g_return_val_if_fail(cmd != NULL, NULL);
  return cmd->name;
}

const char *
insp_mqtt_command_get_part_id(const InspMqttCommand *cmd)
{
  g_return_val_if_fail(cmd != NULL, NULL);
  return cmd->part_id;
}

gboolean
insp_mqtt_command_get_threshold(const InspMqttCommand *cmd, double *value)
{
  g_return_val_if_fail(cmd != NULL, FALSE);
  if (cmd->has_threshold && value != NULL)
    *value = cmd->threshold;
  return cmd->has_threshold;
}

gboolean
insp_mqtt_command_get_pixel_threshold(const InspMqttCommand *cmd, double *value)
{
  g_return_val_if_fail(cmd != NULL, FALSE);
  if (cmd->has_pixel_threshold && value != NULL)
    *value = cmd->pixel_threshold;
  return cmd->has_pixel_threshold;
}

static gboolean G_GNUC_PRINTF(2, 3) cmd_fail(GError **error, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  g_set_error_literal(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_COMMAND, "");
  if (error != NULL && *error != NULL) {
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);

    /* the reply carries it in JSON: keys and values quoted from a payload
     * may be anything, the reply must stay UTF-8 */
    g_free((*error)->message);
    (*error)->message = g_utf8_make_valid(msg, -1);
  }
  va_end(ap);
  return FALSE;
}

/* Nesting depth of [ and { outside strings: json-glib recurses, so deep
 * nesting is refused before it parses. */
static int
json_depth(const char *s, gsize n)
{
  int depth = 0, max = 0;
  gboolean in_str = FALSE;

  for (gsize i = 0; i < n; i++) {
    char c = s[i];
    if (in_str) {
      if (c == '\\')
        i++;
      else if (c == '"')
        in_str = FALSE;
    } else if (c == '"') {
      in_str = TRUE;
    } else if (c == '{' || c == '[') {
      if (++depth > max)
        max = depth;
    } else if (c == '}' || c == ']') {
      depth--;
    }
  }
  return max;
}

static void
count_member(JsonParser *parser, JsonObject *object, char *name, gpointer data)
{
  (*(guint *)data)++;
}

/* Parses a flat JSON object: no duplicate keys, scalar values only. */
static JsonObject *
parse_flat_object(const char *text, gsize n, GError **error)
{
  g_autoptr(JsonParser) parser = NULL;
  g_autoptr(GError) local = NULL;
  JsonNode *root;
  JsonObject *obj;
  g_autoptr(GList) members = NULL;
  guint n_members = 0;

  if (json_depth(text, n) > JSON_MAX_DEPTH) {
    cmd_fail(error, "payload nests too deeply");
    return NULL;
  }
  parser = json_parser_new_immutable();
  g_signal_connect(parser, "object-member", G_CALLBACK(count_member), &n_members);
  if (!json_parser_load_from_data(parser, text, (gssize)n, &local)) {
    cmd_fail(error, "payload is not valid JSON: %s", local->message);
    return NULL;
  }
  root = json_parser_get_root(parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT(root)) {
    cmd_fail(error, "payload must be a JSON object");
    return NULL;
  }
  obj = json_node_get_object(root);
  if (n_members != json_object_get_size(obj)) {
    cmd_fail(error, "payload has a duplicate key");
    return NULL;
  }
  members = json_object_get_members(obj);
  for (GList *l = members; l != NULL; l = l->next) {
    JsonNode *v = json_object_get_member(obj, l->data);
    if (!JSON_NODE_HOLDS_VALUE(v) && !JSON_NODE_HOLDS_NULL(v)) {
      cmd_fail(error, "key '%s' must hold a number or a string", (const char *)l->data);
      return NULL;
    }
  }
  return json_object_ref(obj);
}

static gboolean
part_id_ok(const char *s, GError **error)
{
  gsize n = strlen(s);

  if (n == 0 || n > INSP_MQTT_PART_ID_MAX)
    return cmd_fail(error, "part_id must be 1 to %d bytes", INSP_MQTT_PART_ID_MAX);
  /* It goes back out in JSON and in MQTT v5 user properties, both UTF-8
   * only. Checked here, whatever produced the string: json-glib's string
   * unescaping returns invalid UTF-8 for some long runs of backslashes
   * (found by fuzz-mqtt-command; the input is in its corpus). */
  if (!g_utf8_validate(s, (gssize)n, NULL))
    return cmd_fail(error, "part_id is not valid UTF-8");
  for (gsize i = 0; i < n; i++)
    if ((guchar)s[i] < 0x20 || s[i] == 0x7f)
      return cmd_fail(error, "part_id contains a control character");
  return TRUE;
}

/* TRUE when a JSON string in @text escapes a NUL (\u0000): json-glib would
 * cut the string there ("a\u0000b" would become "a"). */
static gboolean
json_has_nul_escape(const char *s, gsize n)
{
  for (gsize i = 0; i + 5 < n; i++) {
    if (s[i] != '\\')
      continue;
    if (s[i + 1] == 'u' && s[i + 2] == '0' && s[i + 3] == '0' && s[i + 4] == '0' && s[i + 5] == '0')
      return TRUE;
    i++; /* skip the escaped character, so "\\u0000" is text */
  }
  return FALSE;
}

/* The first number token outside strings in @s (the trigger object holds one
 * value only), as written; NULL when there is none. */
static char *
json_first_number(const char *s, gsize n)
{
  gboolean in_str = FALSE;

  for (gsize i = 0; i < n; i++) {
    char c = s[i];
    if (in_str) {
      if (c == '\\')
        i++;
      else if (c == '"')
        in_str = FALSE;
    } else if (c == '"') {
      in_str = TRUE;
    } else if (c == '-' || g_ascii_isdigit(c)) {
      gsize j = i;
      while (j < n && (g_ascii_isdigit(s[j]) || strchr("+-.eE", s[j]) != NULL))
        j++;
      return g_strndup(s + i, j - i);
    }
  }
  return NULL;
}

/* A part id given as a JSON number: an integer JSON carries exactly
 * (|n| <= 2^53), written in decimal; anything else is refused rather than
 * rounded or wrapped. */
static gboolean
part_id_from_number(InspMqttCommand *cmd, const char *text, gsize n, GError **error)
{
  g_autofree char *token = json_first_number(text, n);
  gint64 v = 0;

  if (token == NULL || strpbrk(token, ".eE+") != NULL ||
      !g_ascii_string_to_signed(token, 10, -(G_GINT64_CONSTANT(1) << 53),
                                G_GINT64_CONSTANT(1) << 53, &v, NULL))
    return cmd_fail(error,
                    "part_id must be a string of 1 to %d bytes or an integer of at most "
                    "2^53 in magnitude",
                    INSP_MQTT_PART_ID_MAX);
  cmd->part_id = g_strdup_printf("%" G_GINT64_FORMAT, v);
  return TRUE;
}

static gboolean
parse_trigger(InspMqttCommand *cmd, const char *text, gsize n, GError **error)
{
  if (n == 0)
    return TRUE;
  if ((text[0] == '{' || text[0] == '"') && json_has_nul_escape(text, n))
    return cmd_fail(error, "part_id contains a NUL character");
  if (text[0] == '{') {
    g_autoptr(JsonObject) obj = parse_flat_object(text, n, error);
    g_autoptr(GList) members = NULL;
    if (obj == NULL)
      return FALSE;
    members = json_object_get_members(obj);
    for (GList *l = members; l != NULL; l = l->next)
      if (strcmp(l->data, "part_id") != 0)
        return cmd_fail(error, "unknown key '%s'", (const char *)l->data);
    if (json_object_has_member(obj, "part_id")) {
      JsonNode *v = json_object_get_member(obj, "part_id");
      GType t = json_node_get_value_type(v);
      if (JSON_NODE_HOLDS_NULL(v))
        return TRUE;
      if (t == G_TYPE_STRING)
        cmd->part_id = g_strdup(json_node_get_string(v));
      else if (t == G_TYPE_INT64 || t == G_TYPE_DOUBLE)
        return part_id_from_number(cmd, text, n, error);
      else
        return cmd_fail(error, "part_id must be a string or an integer");
      return part_id_ok(cmd->part_id, error);
    }
    return TRUE;
  }
  if (text[0] == '"') {
    g_autoptr(JsonParser) parser = json_parser_new_immutable();
    JsonNode *root;
    if (!json_parser_load_from_data(parser, text, (gssize)n, NULL) ||
        (root = json_parser_get_root(parser)) == NULL || !JSON_NODE_HOLDS_VALUE(root) ||
        json_node_get_value_type(root) != G_TYPE_STRING)
      return cmd_fail(error, "part_id is not a valid JSON string");
    cmd->part_id = g_strdup(json_node_get_string(root));
    return part_id_ok(cmd->part_id, error);
  }
  cmd->part_id = g_strndup(text, n);
  return part_id_ok(cmd->part_id, error);
}

static gboolean
threshold_value(const char *key, JsonNode *v, double *out, GError **error)
{
  GType t;

  if (!JSON_NODE_HOLDS_VALUE(v))
    return cmd_fail(error, "%s must be a number", key);
  t = json_node_get_value_type(v);
  if (t == G_TYPE_INT64)
    *out = (double)json_node_get_int(v);
  else if (t == G_TYPE_DOUBLE)
    *out = json_node_get_double(v);
  else
    return cmd_fail(error, "%s must be a number", key);
  if (!isfinite(*out) || *out < INSP_MQTT_THRESHOLD_MIN || *out > INSP_MQTT_THRESHOLD_MAX)
    return cmd_fail(error, "%s %g is out of range [%g, %g]", key, *out, INSP_MQTT_THRESHOLD_MIN,
                    INSP_MQTT_THRESHOLD_MAX);
  return TRUE;
}

static gboolean
parse_threshold(InspMqttCommand *cmd, const char *text, gsize n, GError **error)
{
  if (n == 0)
    return cmd_fail(error, "threshold needs a number or {\"threshold\":…, \"pixel_threshold\":…}");
  if (text[0] == '{') {
    g_autoptr(JsonObject) obj = parse_flat_object(text, n, error);
    g_autoptr(GList) members = NULL;
    if (obj == NULL)
      return FALSE;
    members = json_object_get_members(obj);
    for (GList *l = members; l != NULL; l = l->next)
      if (strcmp(l->data, "threshold") != 0 && strcmp(l->data, "pixel_threshold") != 0)
        return cmd_fail(error, "unknown key '%s'", (const char *)l->data);
    if (json_object_has_member(obj, "threshold")) {
      if (!threshold_value("threshold", json_object_get_member(obj, "threshold"), &cmd->threshold,
                           error))
        return FALSE;
      cmd->has_threshold = TRUE;
    }
    if (json_object_has_member(obj, "pixel_threshold")) {
      if (!threshold_value("pixel_threshold", json_object_get_member(obj, "pixel_threshold"),
                           &cmd->pixel_threshold, error))
        return FALSE;
      cmd->has_pixel_threshold = TRUE;
    }
    if (!cmd->has_threshold && !cmd->has_pixel_threshold)
      return cmd_fail(error, "threshold needs \"threshold\" or \"pixel_threshold\"");
    return TRUE;
  } else {
    g_autofree char *s = g_strndup(text, n);
    char *end = NULL;
    double v;
    if (!(g_ascii_isdigit(s[0]) || s[0] == '-' || s[0] == '+' || s[0] == '.'))
      return cmd_fail(error, "threshold must be a number");
    errno = 0;
    v = g_ascii_strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE)
      return cmd_fail(error, "threshold must be a number");
    if (!isfinite(v) || v < INSP_MQTT_THRESHOLD_MIN || v > INSP_MQTT_THRESHOLD_MAX)
      return cmd_fail(error, "threshold %g is out of range [%g, %g]", v, INSP_MQTT_THRESHOLD_MIN,
                      INSP_MQTT_THRESHOLD_MAX);
    cmd->threshold = v;
    cmd->has_threshold = TRUE;
    return TRUE;
  }
}

InspMqttCommand *
insp_mqtt_parse_command(const char *name, const guint8 *payload, gsize length, GError **error)
{
  g_autoptr(InspMqttCommand) cmd = NULL;
  const char *text = (const char *)payload;
  gsize n = length;

  g_return_val_if_fail(name != NULL, NULL);
  g_return_val_if_fail(payload != NULL || length == 0, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);

  cmd = g_new0(InspMqttCommand, 1);
  cmd->ref = 1;
  if (strcmp(name, "trigger") == 0)
    cmd->kind = INSP_MQTT_COMMAND_TRIGGER;
  else if (strcmp(name, "threshold") == 0)
    cmd->kind = INSP_MQTT_COMMAND_THRESHOLD;
  else if (strcmp(name, "reload") == 0)
    cmd->kind = INSP_MQTT_COMMAND_RELOAD;
  else if (strcmp(name, "snapshot") == 0)
    cmd->kind = INSP_MQTT_COMMAND_SNAPSHOT;
  else {
    if (strlen(name) <= INSP_MQTT_COMMAND_NAME_MAX && g_utf8_validate(name, -1, NULL))
      cmd_fail(error, "unknown command '%s' (trigger, threshold, reload, snapshot)", name);
    else
      cmd_fail(error, "unknown command (trigger, threshold, reload, snapshot)");
    return NULL;
  }
  cmd->name = g_strdup(name);
  if (length > INSP_MQTT_COMMAND_MAX_PAYLOAD) {
    cmd_fail(error, "payload of %" G_GSIZE_FORMAT " bytes is too large (at most %d)", length,
             INSP_MQTT_COMMAND_MAX_PAYLOAD);
    return NULL;
  }
  /* reload and snapshot take no arguments; their payload is ignored. */
  if (cmd->kind == INSP_MQTT_COMMAND_RELOAD || cmd->kind == INSP_MQTT_COMMAND_SNAPSHOT)
    return g_steal_pointer(&cmd);
  if (!g_utf8_validate_len(text, n, NULL)) {
    cmd_fail(error, "payload is not UTF-8 text");
    return NULL;
  }
  while (n > 0 && g_ascii_isspace(text[0])) {
    text++;
    n--;
  }
  while (n > 0 && g_ascii_isspace(text[n - 1]))
    n--;
  if (memchr(text, '\0', n) != NULL) {
    cmd_fail(error, "payload contains a NUL byte");
    return NULL;
  }
  if (cmd->kind == INSP_MQTT_COMMAND_TRIGGER ? !parse_trigger(cmd, text, n, error)
                                             : !parse_threshold(cmd, text, n, error))
    return NULL;
  return g_steal_pointer(&cmd);
}

InspMqttCommand *
insp_mqtt_command_new_unparsed(const char *name)
{
  InspMqttCommand *cmd = g_new0(InspMqttCommand, 1);

  g_return_val_if_fail(name != NULL, NULL);
  cmd->ref = 1;
  cmd->name = g_strdup(name);
  return cmd;
}

/* ---------- the policy ---------- */

void
insp_mqtt_rate_init(InspMqttRate *rate)
{
  rate->tokens = INSP_MQTT_COMMANDS_PER_S;
  rate->time_us = g_get_monotonic_time();
}

gboolean
insp_mqtt_topic_at_or_below(const char *topic, const char *prefix)
{
  gsize n = strlen(prefix);

  return strncmp(topic, prefix, n) == 0 && (topic[n] == '\0' || topic[n] == '/');
}

/* A topic one may publish to (MQTT 5 4.7): not empty, no wildcard, UTF-8,
 * at most 65535 bytes. */
static gboolean
publish_topic_ok(const char *topic)
{
  gsize n = strlen(topic);

  return n > 0 && n <= 65535 && strpbrk(topic, "+#") == NULL &&
         g_utf8_validate(topic, (gssize)n, NULL);
}

gboolean
insp_mqtt_command_check(InspMqttRate *rate, InspMqttCommands commands, const char *topic_prefix,
                        const char *reply_prefix, const InspMqttCommand *cmd,
                        const char *response_topic, GError **error)
{
  gint64 now = g_get_monotonic_time();

  g_return_val_if_fail(rate != NULL && topic_prefix != NULL && cmd != NULL, FALSE);
  rate->tokens =
      MIN((double)INSP_MQTT_COMMANDS_PER_S,
          rate->tokens + (double)(now - rate->time_us) * INSP_MQTT_COMMANDS_PER_S / G_USEC_PER_SEC);
  rate->time_us = now;
  if (rate->tokens < 1.0) {
    g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_COMMAND,
                "too many commands: at most %d per second are accepted, this one is refused",
                INSP_MQTT_COMMANDS_PER_S);
    return FALSE;
  }
  rate->tokens -= 1.0;
  if (commands == INSP_MQTT_COMMANDS_TRIGGER && cmd->kind != INSP_MQTT_COMMAND_TRIGGER) {
    g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_COMMAND,
                "command '%s' is not enabled: [mqtt] commands = all enables it (on an "
                "authenticated connection)",
                cmd->name);
    return FALSE;
  }
  if (response_topic == NULL)
    return TRUE;
  if (!publish_topic_ok(response_topic)) {
    g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_RESPONSE_TOPIC,
                "response topic refused: not a topic one may publish to (wildcard or empty)");
    return FALSE;
  }
  if (response_topic[0] == '$' || insp_mqtt_topic_at_or_below(response_topic, topic_prefix)) {
    g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_RESPONSE_TOPIC,
                "response topic refused: '%s' lies under '%s/' (the stations' own topics) or "
                "starts with '$'",
                response_topic, topic_prefix);
    return FALSE;
  }
  if (reply_prefix != NULL && !insp_mqtt_topic_at_or_below(response_topic, reply_prefix)) {
    g_set_error(error, INSP_MQTT_ERROR, INSP_MQTT_ERROR_RESPONSE_TOPIC,
                "response topic refused: '%s' is not under [mqtt] reply_prefix '%s'",
                response_topic, reply_prefix);
    return FALSE;
  }
  return TRUE;
}
