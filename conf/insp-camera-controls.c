/* The "[camera] controls" parser (grammar in insp-camera-controls.h).
 *
 * Invariants: every length is checked before a copy is made; a parse either
 * returns every item or nothing; names in a result are unique without case.
 * Threads: any; no shared state. */
#include "insp-camera-controls.h"

#include <string.h>

/* The quark name is dashed; clang-format would split it into "a - b". */
/* clang-format off */
G_DEFINE_QUARK(insp-camera-controls-error-quark, insp_camera_controls_error)
/* clang-format on */

static gboolean
is_identifier(const char *s)
{
  if (!g_ascii_isalpha(*s))
    return FALSE;
  for (const char *p = s; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '_')
      return FALSE;
  return TRUE;
}

static gboolean
parse_boolean(const char *s, gint64 *out)
{
  static const char *const yes[] = {"true", "yes", "on"};
  static const char *const no[] = {"false", "no", "off"};
  for (guint i = 0; i < G_N_ELEMENTS(yes); i++) {
    if (g_ascii_strcasecmp(s, yes[i]) == 0) {
      *out = 1;
      return TRUE;
    }
    if (g_ascii_strcasecmp(s, no[i]) == 0) {
      *out = 0;
      return TRUE;
    }
  }
  return FALSE;
}

static gboolean
parse_integer(const char *s, gint64 *out)
{
  const char *digits = (*s == '-' || *s == '+') ? s + 1 : s;
  if (*digits == '\0')
    return FALSE;
  for (const char *p = digits; *p; p++)
    if (!g_ascii_isdigit(*p))
      return FALSE;
  return g_ascii_string_to_signed(s, 10, G_MININT64, G_MAXINT64, out, NULL);
}

static void
control_clear(InspCameraControl *c)
{
  g_free(c->name);
  g_free(c->feature);
  g_free(c->text);
}

void
insp_camera_controls_free(InspCameraControl *controls, guint n)
{
  if (controls == NULL)
    return;
  for (guint i = 0; i < n; i++)
    control_clear(&controls[i]);
  g_free(controls);
}

/* Parses one item (stripped, non-empty, writable) into @c. */
static gboolean
parse_item(char *item, guint index, InspCameraControl *c, GError **error)
{
  char *eq = strchr(item, '=');
  if (eq == NULL || eq == item) {
    g_set_error(error, INSP_CAMERA_CONTROLS_ERROR, INSP_CAMERA_CONTROLS_ERROR_SYNTAX,
                "item %u '%s' is not name=value (names are letters, digits, '_')", index, item);
    return FALSE;
  }
  *eq = '\0';
  char *name = g_strstrip(item);
  char *value = g_strstrip(eq + 1);
  if (strlen(name) > INSP_CAMERA_CONTROL_MAX_LEN || strlen(value) > INSP_CAMERA_CONTROL_MAX_LEN) {
    g_set_error(error, INSP_CAMERA_CONTROLS_ERROR, INSP_CAMERA_CONTROLS_ERROR_LIMIT,
                "item %u: a name or value is longer than %d characters", index,
                INSP_CAMERA_CONTROL_MAX_LEN);
    return FALSE;
  }
  if (!is_identifier(name) || *value == '\0') {
    g_set_error(error, INSP_CAMERA_CONTROLS_ERROR, INSP_CAMERA_CONTROLS_ERROR_SYNTAX,
                "item %u '%s=%s' is not name=value (names are letters, digits, '_')", index, name,
                value);
    return FALSE;
  }
  gint64 v = 0;
  InspCameraControlType type;
  if (parse_integer(value, &v))
    type = INSP_CAMERA_CONTROL_INTEGER;
  else if (parse_boolean(value, &v))
    type = INSP_CAMERA_CONTROL_BOOLEAN;
  else if (is_identifier(value))
    type = INSP_CAMERA_CONTROL_NAME;
  else {
    g_set_error(error, INSP_CAMERA_CONTROLS_ERROR, INSP_CAMERA_CONTROLS_ERROR_SYNTAX,
                "item %u '%s=%s': the value is not an integer, a boolean or a name (letters, "
                "digits, '_')",
                index, name, value);
    return FALSE;
  }
  c->name = g_ascii_strdown(name, -1);
  c->feature = g_strdup(name);
  c->type = type;
  c->value = v;
  c->text = g_strdup(value);
  return TRUE;
}

gboolean
insp_camera_controls_parse(const char *text, InspCameraControl **out, guint *n_out, GError **error)
{
  g_return_val_if_fail(text != NULL && out != NULL && n_out != NULL, FALSE);
  g_return_val_if_fail(error == NULL || *error == NULL, FALSE);

  GArray *controls = g_array_new(FALSE, TRUE, sizeof(InspCameraControl));
  g_autofree char *copy = g_strdup(text);
  char *rest = copy;
  guint index = 0;
  gboolean ok = TRUE;
  while (ok && rest != NULL) {
    char *item = rest;
    rest = strpbrk(rest, ",\n");
    if (rest != NULL)
      *rest++ = '\0';
    index++;
    g_strstrip(item);
    if (*item == '\0')
      continue;
    if (controls->len >= INSP_CAMERA_CONTROLS_MAX) {
      g_set_error(error, INSP_CAMERA_CONTROLS_ERROR, INSP_CAMERA_CONTROLS_ERROR_LIMIT,
                  "more than %d controls", INSP_CAMERA_CONTROLS_MAX);
      ok = FALSE;
      break;
    }
    InspCameraControl c = {0};
    ok = parse_item(item, index, &c, error);
    for (guint j = 0; ok && j < controls->len; j++) {
      if (g_str_equal(g_array_index(controls, InspCameraControl, j).name, c.name)) {
        g_set_error(error, INSP_CAMERA_CONTROLS_ERROR, INSP_CAMERA_CONTROLS_ERROR_DUPLICATE,
                    "control '%s' is set twice", c.feature);
        control_clear(&c);
        ok = FALSE;
      }
    }
    if (ok)
      g_array_append_val(controls, c);
  }
  guint n = controls->len;
  InspCameraControl *items = (InspCameraControl *)(void *)g_array_free(controls, FALSE);
  if (!ok) {
    insp_camera_controls_free(items, n);
    return FALSE;
  }
  if (n == 0)
    g_clear_pointer(&items, g_free);
  *out = items;
  *n_out = n;
  return TRUE;
}

InspCameraControl *
insp_camera_controls_copy(const InspCameraControl *controls, guint n)
{
  g_return_val_if_fail(n == 0 || controls != NULL, NULL);
  if (n == 0)
    return NULL;
  InspCameraControl *copy = g_new0(InspCameraControl, n);
  for (guint i = 0; i < n; i++) {
    copy[i] = controls[i];
    copy[i].name = g_strdup(controls[i].name);
    copy[i].feature = g_strdup(controls[i].feature);
    copy[i].text = g_strdup(controls[i].text);
  }
  return copy;
}

gboolean
insp_camera_controls_equal(const InspCameraControl *a, guint n_a, const InspCameraControl *b,
                           guint n_b)
{
  if (n_a != n_b)
    return FALSE;
  for (guint i = 0; i < n_a; i++)
    if (g_strcmp0(a[i].feature, b[i].feature) != 0 || a[i].type != b[i].type ||
        a[i].value != b[i].value || g_strcmp0(a[i].text, b[i].text) != 0)
      return FALSE;
  return TRUE;
}
