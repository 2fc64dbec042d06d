/* JSON writer for the MQTT payloads: json-glib's tree, written compactly with
 * shortest numbers (see insp-json.h). Pure functions, any thread. */
#include "insp-json.h"

#include <math.h>
#include <stdlib.h>

void
insp_json_append_number(GString *out, double v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  gboolean as_float = (double)(float)v == v;

  if (!isfinite(v)) {
    g_string_append(out, "null");
    return;
  }
  if (v == 0) {
    g_string_append(out, "0");
    return;
  }
  for (int digits = 1; digits <= 17; digits++) {
    char fmt[8];

    g_snprintf(fmt, sizeof fmt, "%%.%dg", digits);
    g_ascii_formatd(buf, sizeof buf, fmt, v);
    double back = g_ascii_strtod(buf, NULL);
    if (as_float ? (float)back == (float)v : back == v)
      break;
  }
  g_string_append(out, buf);
}

static void
append_string(GString *out, const char *s)
{
  g_string_append_c(out, '"');
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"':
      g_string_append(out, "\\\"");
      break;
    case '\\':
      g_string_append(out, "\\\\");
      break;
    case '\n':
      g_string_append(out, "\\n");
      break;
    case '\r':
      g_string_append(out, "\\r");
      break;
    case '\t':
      g_string_append(out, "\\t");
      break;
    default:
      if (*p < 0x20 || *p == 0x7f)
        g_string_append_printf(out, "\\u%04x", *p);
      else
        g_string_append_c(out, (char)*p);
    }
  }
  g_string_append_c(out, '"');
}

static void
append_node(GString *out, JsonNode *node)
{
  switch (json_node_get_node_type(node)) {
  case JSON_NODE_OBJECT: {
    JsonObject *o = json_node_get_object(node);
    g_autoptr(GList) members = json_object_get_members(o);
    gboolean first = TRUE;

    g_string_append_c(out, '{');
    for (GList *l = members; l; l = l->next) {
      if (!first)
        g_string_append_c(out, ',');
      first = FALSE;
      append_string(out, l->data);
      g_string_append_c(out, ':');
      append_node(out, json_object_get_member(o, l->data));
    }
    g_string_append_c(out, '}');
    break;
  }
  case JSON_NODE_ARRAY: {
    JsonArray *a = json_node_get_array(node);

    g_string_append_c(out, '[');
    for (guint i = 0; i < json_array_get_length(a); i++) {
      if (i)
        g_string_append_c(out, ',');
      append_node(out, json_array_get_element(a, i));
    }
    g_string_append_c(out, ']');
    break;
  }
  case JSON_NODE_NULL:
    g_string_append(out, "null");
    break;
  case JSON_NODE_VALUE:
    switch (json_node_get_value_type(node)) {
    case G_TYPE_INT64:
      g_string_append_printf(out, "%" G_GINT64_FORMAT, json_node_get_int(node));
      break;
    case G_TYPE_DOUBLE:
      insp_json_append_number(out, json_node_get_double(node));
      break;
    case G_TYPE_BOOLEAN:
      g_string_append(out, json_node_get_boolean(node) ? "true" : "false");
      break;
    case G_TYPE_STRING:
      append_string(out, json_node_get_string(node));
      break;
    default:
      g_string_append(out, "null");
    }
    break;
  }
}

char *
insp_json_to_data(JsonNode *root, gsize *length)
{
  GString *out = g_string_new(NULL);

  g_return_val_if_fail(root != NULL, NULL);
  append_node(out, root);
  if (length)
    *length = out->len;
  return g_string_free(out, FALSE);
}
