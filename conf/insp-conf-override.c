/* The threshold override: <state_dir>/threshold-override.conf keeps a
 * threshold set by an MQTT command across restarts.
 *
 * DESIGN: each overridden value is stored with the config files' value at
 * the time it was set (configured_threshold, configured_pixel_threshold). It
 * applies while the config files still give that value; once they give
 * another one the operator has edited the config after the command, the file
 * wins, and the stale entry is deleted (so that it cannot come back if the
 * file later returns to the old value). The file is written atomically
 * (g_file_set_contents_full, durable), so a crash leaves the old or the new
 * file, never half of one.
 *
 * Threads: called from the daemon's main loop only; no shared state. */
#include "insp-conf.h"

#include <errno.h>
#include <math.h>
#include <glib/gstdio.h>
#include <string.h>

#define OVERRIDE_FILE "threshold-override.conf"
#define GROUP "inspection"

typedef struct {
  const char *key;
  const char *base_key;
  gsize value_offset;
  gsize base_offset;
} OverrideKey;

static const OverrideKey override_keys[] = {
    {"threshold", "configured_threshold", G_STRUCT_OFFSET(InspConfig, inspection.threshold),
     G_STRUCT_OFFSET(InspConfig, inspection.configured_threshold)},
    {"pixel_threshold", "configured_pixel_threshold",
     G_STRUCT_OFFSET(InspConfig, inspection.pixel_threshold),
     G_STRUCT_OFFSET(InspConfig, inspection.configured_pixel_threshold)},
};

#define DOUBLE_AT(cfg, off) ((double *)(void *)((char *)(cfg) + (off)))

char *
insp_config_override_path(const InspConfig *config)
{
  g_return_val_if_fail(config != NULL, NULL);
  return g_build_filename(config->station.state_dir, OVERRIDE_FILE, NULL);
}

static gboolean
read_double(GKeyFile *kf, const char *key, double *out, const char *path, GError **error)
{
  g_autofree char *raw = g_key_file_get_value(kf, GROUP, key, NULL);
  char *end = NULL;
  double v;

  if (!raw) {
    g_set_error(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_INVALID, "%s: [" GROUP "] %s: missing",
                path, key);
    return FALSE;
  }
  g_strstrip(raw);
  errno = 0;
  v = g_ascii_strtod(raw, &end);
  if (*raw == '\0' || errno != 0 || *end != '\0' || !isfinite(v) || v < 0 || v > 100) {
    g_set_error(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_INVALID,
                "%s: [" GROUP "] %s: expected a number 0 <= x <= 100, got '%s'", path, key, raw);
    return FALSE;
  }
  *out = v;
  return TRUE;
}

/* Loads the override file; a missing file gives an empty key file. */
static GKeyFile *
load_override(const char *path, GError **error)
{
  g_autoptr(GKeyFile) kf = g_key_file_new();
  g_autoptr(GError) local = NULL;

  if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, &local)) {
    if (g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
      return g_steal_pointer(&kf);
    g_set_error(error, INSP_CONFIG_ERROR,
                local->domain == G_FILE_ERROR ? INSP_CONFIG_ERROR_IO : INSP_CONFIG_ERROR_INVALID,
                "%s: %s", path, local->message);
    return NULL;
  }
  return g_steal_pointer(&kf);
}

static gboolean
write_override(const char *path, const char *dir, GKeyFile *kf, GError **error)
{
  g_autoptr(GError) local = NULL;
  g_auto(GStrv) keys = g_key_file_get_keys(kf, GROUP, NULL, NULL);
  g_autofree char *data = NULL;
  gsize len;

  if (!keys || !keys[0]) {
    if (g_unlink(path) < 0 && errno != ENOENT) {
      int e = errno;

      g_set_error(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_IO, "%s: cannot remove: %s", path,
                  g_strerror(e));
      return FALSE;
    }
    return TRUE;
  }
  if (g_mkdir_with_parents(dir, 0755) < 0) {
    int e = errno;

    g_set_error(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_IO, "%s: cannot create: %s", dir,
                g_strerror(e));
    return FALSE;
  }
  g_key_file_set_comment(kf, NULL, NULL,
                         " Written by inspectd when a threshold is set by an MQTT command.\n"
                         " Applies while the config files still give configured_*; delete this\n"
                         " file to return to the config files' thresholds.",
                         NULL);
  data = g_key_file_to_data(kf, &len, NULL);
  if (!g_file_set_contents_full(path, data, (gssize)len,
                                G_FILE_SET_CONTENTS_CONSISTENT | G_FILE_SET_CONTENTS_DURABLE, 0644,
                                &local)) {
    g_set_error(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_IO, "%s", local->message);
    return FALSE;
  }
  return TRUE;
}

gboolean
insp_config_override_apply(InspConfig *config, InspConfigChange *out_applied, GError **error)
{
  g_autofree char *path = NULL;
  g_autoptr(GKeyFile) kf = NULL;
  double values[G_N_ELEMENTS(override_keys)];
  gboolean use[G_N_ELEMENTS(override_keys)] = {FALSE};
  gboolean stale = FALSE, applied = FALSE;

  g_return_val_if_fail(config != NULL, FALSE);
  g_return_val_if_fail(error == NULL || *error == NULL, FALSE);

  path = insp_config_override_path(config);
  kf = load_override(path, error);
  if (!kf)
    return FALSE;
  for (gsize i = 0; i < G_N_ELEMENTS(override_keys); i++) {
    const OverrideKey *o = &override_keys[i];
    double base;

    if (!g_key_file_has_key(kf, GROUP, o->key, NULL))
      continue;
    if (!read_double(kf, o->key, &values[i], path, error) ||
        !read_double(kf, o->base_key, &base, path, error))
      return FALSE;
    if (base == *DOUBLE_AT(config, o->base_offset)) {
      use[i] = TRUE;
    } else {
      g_key_file_remove_key(kf, GROUP, o->key, NULL);
      g_key_file_remove_key(kf, GROUP, o->base_key, NULL);
      stale = TRUE;
    }
  }
  if (stale && !write_override(path, config->station.state_dir, kf, error))
    return FALSE;
  for (gsize i = 0; i < G_N_ELEMENTS(override_keys); i++) {
    if (use[i]) {
      *DOUBLE_AT(config, override_keys[i].value_offset) = values[i];
      applied = TRUE;
    }
  }
  if (out_applied)
    *out_applied = applied ? INSP_CONFIG_CHANGE_INSPECTION : INSP_CONFIG_CHANGE_NONE;
  return TRUE;
}

gboolean
insp_config_override_save(const InspConfig *config, double threshold, double pixel_threshold,
                          GError **error)
{
  g_autofree char *path = NULL;
  g_autoptr(GKeyFile) kf = NULL;
  const double values[] = {threshold, pixel_threshold};

  g_return_val_if_fail(config != NULL, FALSE);
  g_return_val_if_fail(error == NULL || *error == NULL, FALSE);

  for (gsize i = 0; i < G_N_ELEMENTS(values); i++) {
    if (!isnan(values[i]) && !(values[i] >= 0 && values[i] <= 100)) {
      g_set_error(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_INVALID,
                  "%s: out of range, expected 0 <= x <= 100, got %g", override_keys[i].key,
                  values[i]);
      return FALSE;
    }
  }
  path = insp_config_override_path(config);
  kf = load_override(path, NULL);
  if (!kf)
    kf = g_key_file_new(); /* a damaged file is replaced */
  for (gsize i = 0; i < G_N_ELEMENTS(values); i++) {
    const OverrideKey *o = &override_keys[i];

    if (isnan(values[i]))
      continue;
    g_key_file_set_double(kf, GROUP, o->key, values[i]);
    g_key_file_set_double(kf, GROUP, o->base_key, *DOUBLE_AT(config, o->base_offset));
  }
  return write_override(path, config->station.state_dir, kf, error);
}

gboolean
insp_config_override_clear(const InspConfig *config, GError **error)
{
  g_autofree char *path = NULL;

  g_return_val_if_fail(config != NULL, FALSE);
  g_return_val_if_fail(error == NULL || *error == NULL, FALSE);

  path = insp_config_override_path(config);
  if (g_unlink(path) < 0 && errno != ENOENT) {
    int e = errno;

    g_set_error(error, INSP_CONFIG_ERROR, INSP_CONFIG_ERROR_IO, "%s: cannot remove: %s", path,
                g_strerror(e));
    return FALSE;
  }
  return TRUE;
}
