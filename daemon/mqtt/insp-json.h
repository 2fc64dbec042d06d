/* JSON text of the MQTT payloads, with numbers in their shortest form.
 *
 * json-glib prints every double with 17 significant digits, so a threshold
 * configured as 0.93 went out as 0.93000000000000005 (or, through a float,
 * 0.9300000071525574). Here a number is written with the fewest digits that
 * read back to the same value: a double that is exactly a float (the
 * detector's scores and thresholds) with the fewest that read back to that
 * float, so 0.93f prints 0.93. Non-finite numbers print null. */
#pragma once

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* Compact JSON text of @root (an object, array or value), NUL-terminated;
 * @length (nullable) receives its length. Free with g_free(). */
char *insp_json_to_data(JsonNode *root, gsize *length);

/* Appends the shortest text of @v to @out ("null" when not finite). */
void insp_json_append_number(GString *out, double v);

G_END_DECLS
