/* Camera control and discovery: applying [camera] controls (parsed and typed
 * by conf/insp-camera-controls.c) to a V4L2 device through libv4l2 (with
 * read-back), and the listing behind `inspectd cameras` (V4L2 devices, and GenICam cameras through
 * Aravis when built with it).
 *
 * Invariants: every device fd opened here is closed before return; every
 * value from the driver is treated as untrusted text (names are copied with
 * their length bounded); nothing is cached, so a hot-plugged camera shows up.
 *
 * Threads: any; the functions share no state. */
#include "insp-pipeline-config.h"
#include "insp-camera.h"

#include <errno.h>
#include <fcntl.h>
#include <libv4l2.h>
#include <linux/videodev2.h>
#include <string.h>
#include <sys/ioctl.h>
#ifdef INSP_HAVE_ARAVIS
#include <arv.h>
#endif

char *
insp_v4l2_control_name(const char *name)
{
  GString *s = g_string_new(NULL);
  gboolean sep = FALSE;
  for (const char *c = name; *c; c++) {
    if (g_ascii_isalnum(*c)) {
      if (sep && s->len > 0)
        g_string_append_c(s, '_');
      sep = FALSE;
      g_string_append_c(s, g_ascii_tolower(*c));
    } else {
      sep = TRUE;
    }
  }
  return g_string_free(s, FALSE);
}

/* ---- V4L2 ---------------------------------------------------------------------------- */

static int
xioctl(int fd, unsigned long req, void *arg)
{
  int r;
  do
    r = v4l2_ioctl(fd, req, arg);
  while (r < 0 && errno == EINTR);
  return r;
}

static char *
bounded_name(const char *s, gsize max)
{
  return g_strndup(s, strnlen(s, max));
}

/* Enumerates the controls of @fd (no class headers, no disabled ones). */
static GArray *
query_controls(int fd)
{
  GArray *out = g_array_new(FALSE, TRUE, sizeof(struct v4l2_query_ext_ctrl));
  struct v4l2_query_ext_ctrl q = {0};
  q.id = V4L2_CTRL_FLAG_NEXT_CTRL | V4L2_CTRL_FLAG_NEXT_COMPOUND;
  gboolean ext = TRUE;
  while (out->len < 1024) {
    if (ext) {
      if (xioctl(fd, VIDIOC_QUERY_EXT_CTRL, &q) < 0) {
        if (out->len == 0 && errno == ENOTTY) {
          ext = FALSE; /* an old driver: fall back to VIDIOC_QUERYCTRL */
          q.id = V4L2_CTRL_FLAG_NEXT_CTRL;
          continue;
        }
        break;
      }
    } else {
      struct v4l2_queryctrl qc = {0};
      qc.id = q.id;
      if (xioctl(fd, VIDIOC_QUERYCTRL, &qc) < 0)
        break;
      memset(&q, 0, sizeof q);
      q.id = qc.id;
      q.type = qc.type;
      memcpy(q.name, qc.name, MIN(sizeof q.name, sizeof qc.name));
      q.minimum = qc.minimum;
      q.maximum = qc.maximum;
      q.step = (guint64)qc.step;
      q.default_value = qc.default_value;
      q.flags = qc.flags;
    }
    if (!(q.flags & V4L2_CTRL_FLAG_DISABLED) && q.type != V4L2_CTRL_TYPE_CTRL_CLASS)
      g_array_append_val(out, q);
    q.id |=
        ext ? (V4L2_CTRL_FLAG_NEXT_CTRL | V4L2_CTRL_FLAG_NEXT_COMPOUND) : V4L2_CTRL_FLAG_NEXT_CTRL;
  }
  return out;
}

static gboolean
get_control(int fd, const struct v4l2_query_ext_ctrl *q, gint64 *value)
{
  struct v4l2_ext_control c = {0};
  struct v4l2_ext_controls cs = {0};
  guint32 id = q->id;
  c.id = id;
  cs.which = V4L2_CTRL_WHICH_CUR_VAL;
  cs.count = 1;
  cs.controls = &c;
  if (xioctl(fd, VIDIOC_G_EXT_CTRLS, &cs) == 0) {
    /* value and value64 share a union: read the member of the control's type */
    *value = q->type == V4L2_CTRL_TYPE_INTEGER64 ? c.value64 : c.value;
    return TRUE;
  }
  struct v4l2_control old = {id, 0};
  if (xioctl(fd, VIDIOC_G_CTRL, &old) == 0) {
    *value = old.value;
    return TRUE;
  }
  return FALSE;
}

static gboolean
set_control(int fd, const struct v4l2_query_ext_ctrl *q, gint64 value)
{
  struct v4l2_ext_control c = {0};
  struct v4l2_ext_controls cs = {0};
  c.id = q->id;
  if (q->type == V4L2_CTRL_TYPE_INTEGER64)
    c.value64 = value;
  else
    c.value = (gint32)value;
  cs.which = V4L2_CTRL_WHICH_CUR_VAL;
  cs.count = 1;
  cs.controls = &c;
  if (xioctl(fd, VIDIOC_S_EXT_CTRLS, &cs) == 0)
    return TRUE;
  if (q->type == V4L2_CTRL_TYPE_INTEGER64)
    return FALSE;
  struct v4l2_control old = {q->id, (gint32)value};
  return xioctl(fd, VIDIOC_S_CTRL, &old) == 0;
}

/* A control's value: an integer as it is, a boolean for a boolean control,
 * else (a name, or a boolean word such as "off") a menu item by its name. */
static gboolean
parse_value(int fd, const struct v4l2_query_ext_ctrl *q, const InspCameraControl *c, gint64 *out)
{
  if (c->type == INSP_CAMERA_CONTROL_INTEGER ||
      (c->type == INSP_CAMERA_CONTROL_BOOLEAN && q->type == V4L2_CTRL_TYPE_BOOLEAN)) {
    *out = c->value;
    return TRUE;
  }
  if (q->type == V4L2_CTRL_TYPE_MENU) {
    g_autofree char *want = insp_v4l2_control_name(c->text);
    for (gint64 i = q->minimum; i <= q->maximum && i - q->minimum < 256; i++) {
      struct v4l2_querymenu m = {0};
      m.id = q->id;
      m.index = (guint32)i;
      if (xioctl(fd, VIDIOC_QUERYMENU, &m) < 0)
        continue;
      g_autofree char *raw = bounded_name((const char *)m.name, sizeof m.name);
      g_autofree char *item = insp_v4l2_control_name(raw);
      if (g_str_equal(item, want)) {
        *out = i;
        return TRUE;
      }
    }
  }
  return FALSE;
}

gboolean
insp_v4l2_apply_controls(const char *device, const InspCameraControl *controls, guint n_controls,
                         GPtrArray *warnings, GError **error)
{
  g_return_val_if_fail(device != NULL && warnings != NULL, FALSE);
  int fd = v4l2_open(device, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, INSP_PIPELINE_ERROR, INSP_PIPELINE_ERROR_DEVICE,
                "cannot open %s to set its controls: %s", device, g_strerror(e));
    return FALSE;
  }
  g_autoptr(GArray) all = query_controls(fd);
  for (guint i = 0; i < n_controls; i++) {
    g_autofree char *want = insp_v4l2_control_name(controls[i].name);
    const struct v4l2_query_ext_ctrl *q = NULL;
    for (guint k = 0; k < all->len && q == NULL; k++) {
      const struct v4l2_query_ext_ctrl *cand = &g_array_index(all, struct v4l2_query_ext_ctrl, k);
      g_autofree char *raw = bounded_name(cand->name, sizeof cand->name);
      g_autofree char *name = insp_v4l2_control_name(raw);
      if (g_str_equal(name, want))
        q = cand;
    }
    if (q == NULL) {
      g_ptr_array_add(
          warnings, g_strdup_printf("%s has no control %s (see `inspectd cameras`)", device, want));
      continue;
    }
    gint64 value;
    if (!parse_value(fd, q, &controls[i], &value)) {
      g_ptr_array_add(warnings, g_strdup_printf("%s: control %s: \"%s\" is not a valid value",
                                                device, want, controls[i].text));
      continue;
    }
    if (value < q->minimum || value > q->maximum) {
      g_ptr_array_add(warnings,
                      g_strdup_printf("%s: control %s=%" G_GINT64_FORMAT
                                      " is out of range %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT,
                                      device, want, value, (gint64)q->minimum, (gint64)q->maximum));
      continue;
    }
    if (q->flags & (V4L2_CTRL_FLAG_READ_ONLY | V4L2_CTRL_FLAG_GRABBED)) {
      g_ptr_array_add(warnings,
                      g_strdup_printf("%s: control %s is read-only or busy", device, want));
      continue;
    }
    if (!set_control(fd, q, value)) {
      int e = errno;
      g_ptr_array_add(warnings, g_strdup_printf("%s: control %s=%" G_GINT64_FORMAT " failed: %s",
                                                device, want, value, g_strerror(e)));
      continue;
    }
    gint64 back;
    if (!(q->flags & V4L2_CTRL_FLAG_WRITE_ONLY) && get_control(fd, q, &back) && back != value)
      g_ptr_array_add(warnings, g_strdup_printf("%s: control %s=%" G_GINT64_FORMAT
                                                " did not take: it reads %" G_GINT64_FORMAT "%s",
                                                device, want, value, back,
                                                (q->flags & V4L2_CTRL_FLAG_INACTIVE)
                                                    ? " (inactive: an automatic mode may be on)"
                                                    : ""));
  }
  v4l2_close(fd);
  return TRUE;
}

static const char *
control_type_name(guint32 type)
{
  switch (type) {
  case V4L2_CTRL_TYPE_INTEGER:
    return "int";
  case V4L2_CTRL_TYPE_BOOLEAN:
    return "bool";
  case V4L2_CTRL_TYPE_MENU:
    return "menu";
  case V4L2_CTRL_TYPE_INTEGER_MENU:
    return "intmenu";
  case V4L2_CTRL_TYPE_BUTTON:
    return "button";
  case V4L2_CTRL_TYPE_INTEGER64:
    return "int64";
  case V4L2_CTRL_TYPE_BITMASK:
    return "bitmask";
  case V4L2_CTRL_TYPE_STRING:
    return "string";
  default:
    return "compound";
  }
}

static void
describe_v4l2(GString *s, const char *path)
{
  int fd = v4l2_open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    g_string_append_printf(s, "%s: cannot open: %s\n", path, g_strerror(e));
    return;
  }
  struct v4l2_capability cap = {0};
  if (xioctl(fd, VIDIOC_QUERYCAP, &cap) < 0) {
    g_string_append_printf(s, "%s: not a V4L2 device\n", path);
    v4l2_close(fd);
    return;
  }
  g_autofree char *card = bounded_name((const char *)cap.card, sizeof cap.card);
  g_autofree char *driver = bounded_name((const char *)cap.driver, sizeof cap.driver);
  g_autofree char *bus = bounded_name((const char *)cap.bus_info, sizeof cap.bus_info);
  guint32 caps = (cap.capabilities & V4L2_CAP_DEVICE_CAPS) ? cap.device_caps : cap.capabilities;
  gboolean capture = (caps & V4L2_CAP_VIDEO_CAPTURE) != 0;
  g_string_append_printf(s, "%s: %s (driver %s, %s)\n  capabilities:%s%s%s%s\n", path, card, driver,
                         bus, capture ? " video-capture" : "",
                         (caps & V4L2_CAP_VIDEO_CAPTURE_MPLANE) ? " video-capture-mplane" : "",
                         (caps & V4L2_CAP_STREAMING) ? " streaming" : "",
                         (caps & V4L2_CAP_META_CAPTURE) ? " metadata" : "");
  if (capture) {
    g_string_append(s, "  formats:\n");
    for (guint32 i = 0; i < 64; i++) {
      struct v4l2_fmtdesc f = {0};
      f.index = i;
      f.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
      if (xioctl(fd, VIDIOC_ENUM_FMT, &f) < 0)
        break;
      g_autofree char *desc = bounded_name((const char *)f.description, sizeof f.description);
      g_string_append_printf(s, "    %c%c%c%c %s:", f.pixelformat & 0xff,
                             (f.pixelformat >> 8) & 0xff, (f.pixelformat >> 16) & 0xff,
                             (f.pixelformat >> 24) & 0xff, desc);
      for (guint32 k = 0; k < 64; k++) {
        struct v4l2_frmsizeenum fs = {0};
        fs.index = k;
        fs.pixel_format = f.pixelformat;
        if (xioctl(fd, VIDIOC_ENUM_FRAMESIZES, &fs) < 0)
          break;
        if (fs.type == V4L2_FRMSIZE_TYPE_DISCRETE) {
          g_string_append_printf(s, " %ux%u", fs.discrete.width, fs.discrete.height);
        } else {
          g_string_append_printf(s, " %ux%u..%ux%u step %ux%u", fs.stepwise.min_width,
                                 fs.stepwise.min_height, fs.stepwise.max_width,
                                 fs.stepwise.max_height, fs.stepwise.step_width,
                                 fs.stepwise.step_height);
          break;
        }
      }
      g_string_append_c(s, '\n');
    }
  }
  g_autoptr(GArray) ctrls = query_controls(fd);
  g_string_append_printf(s, "  controls:%s\n", ctrls->len ? "" : " none");
  for (guint i = 0; i < ctrls->len; i++) {
    const struct v4l2_query_ext_ctrl *q = &g_array_index(ctrls, struct v4l2_query_ext_ctrl, i);
    g_autofree char *raw = bounded_name(q->name, sizeof q->name);
    g_autofree char *name = insp_v4l2_control_name(raw);
    gint64 cur = 0;
    gboolean have = !(q->flags & V4L2_CTRL_FLAG_WRITE_ONLY) && q->type != V4L2_CTRL_TYPE_BUTTON &&
                    !(q->flags & V4L2_CTRL_FLAG_HAS_PAYLOAD) && get_control(fd, q, &cur);
    g_string_append_printf(s,
                           "    %-32s %-7s min=%" G_GINT64_FORMAT " max=%" G_GINT64_FORMAT
                           " step=%" G_GUINT64_FORMAT " default=%" G_GINT64_FORMAT,
                           name, control_type_name(q->type), (gint64)q->minimum, (gint64)q->maximum,
                           (guint64)q->step, (gint64)q->default_value);
    if (have)
      g_string_append_printf(s, " value=%" G_GINT64_FORMAT, cur);
    if (q->flags & V4L2_CTRL_FLAG_INACTIVE)
      g_string_append(s, " (inactive)");
    if (q->flags & V4L2_CTRL_FLAG_READ_ONLY)
      g_string_append(s, " (read-only)");
    g_string_append_c(s, '\n');
    if (q->type == V4L2_CTRL_TYPE_MENU || q->type == V4L2_CTRL_TYPE_INTEGER_MENU) {
      for (gint64 m = q->minimum; m <= q->maximum && m - q->minimum < 64; m++) {
        struct v4l2_querymenu qm = {0};
        qm.id = q->id;
        qm.index = (guint32)m;
        if (xioctl(fd, VIDIOC_QUERYMENU, &qm) < 0)
          continue;
        if (q->type == V4L2_CTRL_TYPE_MENU) {
          g_autofree char *item = bounded_name((const char *)qm.name, sizeof qm.name);
          g_string_append_printf(s, "      %" G_GINT64_FORMAT ": %s\n", m, item);
        } else {
          g_string_append_printf(s, "      %" G_GINT64_FORMAT ": %lld\n", m, (long long)qm.value);
        }
      }
    }
  }
  v4l2_close(fd);
}

static gint
compare_video_names(gconstpointer a, gconstpointer b)
{
  const char *x = *(char *const *)a, *y = *(char *const *)b;
  /* video2 before video10 */
  gsize lx = strlen(x), ly = strlen(y);
  if (lx != ly)
    return lx < ly ? -1 : 1;
  return strcmp(x, y);
}

char *
insp_cameras_describe(void)
{
  GString *s = g_string_new(NULL);
  g_autoptr(GPtrArray) devs = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GDir) dir = g_dir_open("/dev", 0, NULL);
  const char *name;
  while (dir != NULL && (name = g_dir_read_name(dir)) != NULL)
    if (g_str_has_prefix(name, "video"))
      g_ptr_array_add(devs, g_strdup_printf("/dev/%s", name));
  g_ptr_array_sort(devs, compare_video_names);
  if (devs->len == 0)
    g_string_append(s, "no V4L2 devices\n");
  for (guint i = 0; i < devs->len; i++)
    describe_v4l2(s, g_ptr_array_index(devs, i));

#ifdef INSP_HAVE_ARAVIS
  arv_update_device_list();
  guint n = arv_get_n_devices();
  if (n == 0)
    g_string_append(s, "no GenICam cameras (Aravis)\n");
  for (guint i = 0; i < n; i++) {
    const char *id = arv_get_device_id(i);
    const char *vendor = arv_get_device_vendor(i);
    const char *model = arv_get_device_model(i);
    const char *serial = arv_get_device_serial_nbr(i);
    const char *address = arv_get_device_address(i);
    const char *protocol = arv_get_device_protocol(i);
    g_string_append_printf(s, "GenICam %s: %s %s (serial %s, %s %s) camera=%s\n", id ? id : "?",
                           vendor ? vendor : "?", model ? model : "?", serial ? serial : "?",
                           protocol ? protocol : "?", address ? address : "?", id ? id : "?");
  }
#else
  g_string_append(s,
                  "GenICam cameras: not built with Aravis (install libaravis-dev and rebuild)\n");
#endif
  return g_string_free(s, FALSE);
}
