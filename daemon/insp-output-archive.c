/* The archive of parts: per archived part, in [archive] dir/<verdict>/,
 *   <seq>-<part id>.jpg          the frame, full resolution
 *   <seq>-<part id>.overlay.jpg  the frame with its heat map and regions
 *   <seq>-<part id>.json         the result, the same JSON as the MQTT result
 * (the seq zero-padded to 12 digits so that names sort by age; the part id
 * with anything but letters, digits, '.', '_' and '-' replaced by '_').
 *
 * Written off the inspection path: part() only queues a reference (at most
 * MAX_QUEUE parts; beyond that a part is not archived and the miss is
 * counted and announced). The writer thread encodes and writes each file
 * atomically (temporary file, rename), then keeps the folder within max_mb
 * and max_age_days by removing the oldest parts whole (by modification
 * time), checked at start, after every write that crosses the bound, and
 * once a minute. A write that fails (disk full, read-only) is announced as
 * an archive_failed event at most once a minute and counted; the archive
 * goes on with the next part.
 *
 * `inspectd train --images` skips *.overlay.jpg, so a folder of archived
 * frames a person judged good trains a model directly.
 *
 * Threads: part() and wants_images() on the results thread, status() on
 * the main thread, the writer on its own; close() joins it after writing
 * what is queued. Events go to the main context (insp_outputs_event_simple
 * runs there), never from the writer while an output list lock may be held. */
#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>

#include "insp-outputs.h"
#include "insp-overlay.h"

#define MAX_QUEUE 32
#define PRUNE_INTERVAL_US (60 * G_USEC_PER_SEC)
#define FAIL_NOTICE_US (60 * G_USEC_PER_SEC)

typedef struct {
  InspOutput parent;
  InspOutputs *outs; /* where events go, on the main context */
  char *dir, *station;
  InspConfigMasks what;
  guint64 max_bytes;
  gint64 max_age_us; /* 0: none */
  int quality;

  GThread *thread;
  GMutex lock;
  GCond cond;
  GQueue queue; /* of InspPart */
  gboolean stopping;
  double pixel_threshold;
  guint64 missed; /* parts not archived: the queue was full */
  guint64 failed; /* parts whose files could not be written */

  /* writer thread only */
  guint64 bytes; /* the folder's size as last counted plus what was written since */
  gint64 pruned_us;
  gint64 fail_said_us;
} ArchiveOutput;

typedef struct {
  InspOutputs *outs;
  char *level, *code, *message;
} EventIdle;

static gboolean
event_idle(gpointer data)
{
  EventIdle *e = data;

  insp_outputs_event_simple(e->outs, e->level, e->code, e->message);
  return G_SOURCE_REMOVE;
}

static void
event_idle_free(gpointer data)
{
  EventIdle *e = data;

  g_free(e->level);
  g_free(e->code);
  g_free(e->message);
  g_free(e);
}

static void
announce(ArchiveOutput *a, const char *level, const char *code, const char *message)
{
  EventIdle *e = g_new0(EventIdle, 1);

  if (g_str_equal(level, "error") || g_str_equal(level, "warning"))
    g_warning("archive: %s", message);
  else
    g_info("archive: %s", message);
  if (a->outs == NULL) {
    event_idle_free(e);
    return;
  }
  e->outs = a->outs;
  e->level = g_strdup(level);
  e->code = g_strdup(code);
  e->message = g_strdup(message);
  g_idle_add_full(G_PRIORITY_DEFAULT, event_idle, e, event_idle_free);
}

/* ---- retention ---- */

typedef struct {
  char *base; /* dir/verdict/<seq>-<id>, without the extension */
  gint64 mtime_us;
  guint64 bytes;
} Entry;

static void
entry_free(gpointer p)
{
  Entry *e = p;

  g_free(e->base);
  g_free(e);
}

static int
entry_cmp(gconstpointer pa, gconstpointer pb)
{
  const Entry *a = *(Entry *const *)pa, *b = *(Entry *const *)pb;

  if (a->mtime_us != b->mtime_us)
    return a->mtime_us < b->mtime_us ? -1 : 1;
  return strcmp(a->base, b->base);
}

/* The part a file belongs to: its name without .overlay.jpg / .jpg / .json. */
static char *
part_base(const char *name)
{
  static const char *const exts[] = {".overlay.jpg", ".jpg", ".json"};

  for (gsize i = 0; i < G_N_ELEMENTS(exts); i++)
    if (g_str_has_suffix(name, exts[i]))
      return g_strndup(name, strlen(name) - strlen(exts[i]));
  return NULL;
}

/* Every archived part, oldest first, and the folder's total size. */
static GPtrArray *
scan(ArchiveOutput *a, guint64 *total)
{
  static const char *const verdicts[] = {"fail", "pass"};
  GPtrArray *entries = g_ptr_array_new_with_free_func(entry_free);
  g_autoptr(GHashTable) by_base = g_hash_table_new(g_str_hash, g_str_equal);

  *total = 0;
  for (gsize v = 0; v < G_N_ELEMENTS(verdicts); v++) {
    g_autofree char *sub = g_build_filename(a->dir, verdicts[v], NULL);
    g_autoptr(GDir) d = g_dir_open(sub, 0, NULL);
    const char *name;

    while (d != NULL && (name = g_dir_read_name(d)) != NULL) {
      g_autofree char *path = g_build_filename(sub, name, NULL);
      g_autofree char *b = part_base(name);
      struct stat st;

      if (b == NULL || name[0] == '.' || g_stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        continue;
      g_autofree char *base = g_build_filename(sub, b, NULL);
      Entry *e = g_hash_table_lookup(by_base, base);
      if (e == NULL) {
        e = g_new0(Entry, 1);
        e->base = g_steal_pointer(&base);
        g_ptr_array_add(entries, e);
        g_hash_table_insert(by_base, e->base, e);
      }
      e->bytes += (guint64)st.st_size;
      e->mtime_us =
          MAX(e->mtime_us, (gint64)st.st_mtim.tv_sec * G_USEC_PER_SEC + st.st_mtim.tv_nsec / 1000);
      *total += (guint64)st.st_size;
    }
  }
  g_ptr_array_sort(entries, entry_cmp);
  return entries;
}

static void
remove_part(const Entry *e)
{
  static const char *const exts[] = {".jpg", ".overlay.jpg", ".json"};

  for (gsize i = 0; i < G_N_ELEMENTS(exts); i++) {
    g_autofree char *path = g_strconcat(e->base, exts[i], NULL);
    g_unlink(path);
  }
}

/* Removes the oldest parts until the folder is within 90 % of max_mb and no
 * part is older than max_age_days. */
static void
prune(ArchiveOutput *a)
{
  guint64 total = 0, removed = 0, removed_bytes = 0;
  g_autoptr(GPtrArray) entries = scan(a, &total);
  gint64 now = g_get_real_time();
  guint64 goal = a->max_bytes / 10 * 9;

  for (guint i = 0; i < entries->len; i++) {
    const Entry *e = g_ptr_array_index(entries, i);
    gboolean too_old = a->max_age_us > 0 && now - e->mtime_us > a->max_age_us;
    if (!too_old && total - removed_bytes <= (removed ? goal : a->max_bytes))
      break;
    remove_part(e);
    removed++;
    removed_bytes += e->bytes;
  }
  a->bytes = total - removed_bytes;
  a->pruned_us = g_get_monotonic_time();
  if (removed > 0)
    g_info("archive: removed the %" G_GUINT64_FORMAT " oldest parts (%.1f MiB); %s holds %.1f MiB",
           removed, (double)removed_bytes / 1048576.0, a->dir, (double)a->bytes / 1048576.0);
}

/* ---- writing ---- */

static char *
safe_id(const char *id)
{
  char *s = g_strndup(id ? id : "", 64);

  for (char *c = s; *c; c++)
    if (!g_ascii_isalnum(*c) && *c != '.' && *c != '_' && *c != '-')
      *c = '_';
  if (s[0] == '.')
    s[0] = '_';
  return s;
}

static gboolean
write_bytes(const char *path, GBytes *bytes, GError **error)
{
  gsize len = 0;
  const char *data = g_bytes_get_data(bytes, &len);

  return g_file_set_contents_full(path, data, (gssize)len, G_FILE_SET_CONTENTS_CONSISTENT, 0644,
                                  error);
}

static gboolean
write_part(ArchiveOutput *a, InspPart *part, double pixel_threshold, GError **error)
{
  const char *verdict = part->fail ? "fail" : "pass";
  g_autofree char *sub = g_build_filename(a->dir, verdict, NULL);
  g_autofree char *id = safe_id(part->part_id);
  g_autofree char *name = g_strdup_printf("%012" G_GUINT64_FORMAT "-%s", part->seq, id);
  g_autofree char *base = g_build_filename(sub, name, NULL);
  g_autofree char *jpg = g_strconcat(base, ".jpg", NULL);
  g_autofree char *ovl = g_strconcat(base, ".overlay.jpg", NULL);
  g_autofree char *json_path = g_strconcat(base, ".json", NULL);
  InspImage frame = {part->width, part->height, 3, part->rgb_stride, (guint8 *)part->rgb};

  if (g_mkdir_with_parents(sub, 0755) != 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "cannot make %s: %s", sub,
                g_strerror(e));
    return FALSE;
  }
  g_autoptr(GBytes) frame_jpeg = insp_image_encode_jpeg(&frame, a->quality, error);
  if (frame_jpeg == NULL)
    return FALSE;
  g_autoptr(InspImage) overlay = insp_overlay_render(
      part->rgb, part->width, part->height, part->rgb_stride, part->map, part->map_width,
      part->map_height, (float)pixel_threshold, part->regions, part->n_regions, 0);
  g_autoptr(GBytes) overlay_jpeg = insp_image_encode_jpeg(overlay, a->quality, error);
  if (overlay_jpeg == NULL)
    return FALSE;
  g_autoptr(GBytes) json = insp_mqtt_result_payload(part, a->station);
  /* The JSON last: a part with its JSON is complete. */
  if (!write_bytes(jpg, frame_jpeg, error) || !write_bytes(ovl, overlay_jpeg, error) ||
      !write_bytes(json_path, json, error)) {
    g_unlink(jpg);
    g_unlink(ovl);
    g_unlink(json_path);
    return FALSE;
  }
  a->bytes +=
      g_bytes_get_size(frame_jpeg) + g_bytes_get_size(overlay_jpeg) + g_bytes_get_size(json);
  return TRUE;
}

static gpointer
writer_main(gpointer data)
{
  ArchiveOutput *a = data;

  prune(a);
  for (;;) {
    g_mutex_lock(&a->lock);
    gint64 wake = g_get_monotonic_time() + PRUNE_INTERVAL_US;
    while (g_queue_is_empty(&a->queue) && !a->stopping) {
      if (!g_cond_wait_until(&a->cond, &a->lock, wake))
        break;
    }
    InspPart *part = g_queue_pop_head(&a->queue);
    gboolean stop = part == NULL && a->stopping;
    double pthr = a->pixel_threshold;
    g_mutex_unlock(&a->lock);
    if (stop)
      break;
    if (part != NULL) {
      g_autoptr(GError) error = NULL;
      if (!write_part(a, part, pthr, &error)) {
        gint64 now = g_get_monotonic_time();
        g_mutex_lock(&a->lock);
        guint64 failed = ++a->failed;
        g_mutex_unlock(&a->lock);
        if (a->fail_said_us == 0 || now - a->fail_said_us > FAIL_NOTICE_US) {
          g_autofree char *msg = g_strdup_printf(
              "part seq %" G_GUINT64_FORMAT " not archived in %s: %s (%" G_GUINT64_FORMAT
              " parts not archived since start; inspection goes on)",
              part->seq, a->dir, error->message, failed);
          announce(a, "error", "archive_failed", msg);
          a->fail_said_us = now;
        }
      }
      insp_part_unref(part);
    }
    if (a->bytes > a->max_bytes || g_get_monotonic_time() - a->pruned_us > PRUNE_INTERVAL_US)
      prune(a);
  }
  return NULL;
}

/* ---- the output ---- */

static gboolean
archive_wants_images(InspOutput *out, gboolean fail)
{
  ArchiveOutput *a = (ArchiveOutput *)out;

  return a->what == INSP_CONFIG_MASKS_ALL || (a->what == INSP_CONFIG_MASKS_FAIL && fail);
}

static void
archive_part(InspOutput *out, InspPart *part)
{
  ArchiveOutput *a = (ArchiveOutput *)out;
  guint64 missed = 0;

  if (part->rgb == NULL || !archive_wants_images(out, part->fail))
    return;
  g_mutex_lock(&a->lock);
  if (g_queue_get_length(&a->queue) >= MAX_QUEUE) {
    missed = ++a->missed;
  } else {
    g_queue_push_tail(&a->queue, insp_part_ref(part));
    g_cond_signal(&a->cond);
  }
  g_mutex_unlock(&a->lock);
  /* The first miss, then every 100th: the disk is slower than the line. */
  if (missed == 1 || (missed > 0 && missed % 100 == 0)) {
    g_autofree char *msg =
        g_strdup_printf("part seq %" G_GUINT64_FORMAT
                        " not archived: %d parts wait for the disk already (%" G_GUINT64_FORMAT
                        " missed since start)",
                        part->seq, MAX_QUEUE, missed);
    announce(a, "warning", "archive_behind", msg);
  }
}

static void
archive_status(InspOutput *out, const InspStatus *status)
{
  ArchiveOutput *a = (ArchiveOutput *)out;

  g_mutex_lock(&a->lock);
  a->pixel_threshold = status->pixel_threshold;
  g_mutex_unlock(&a->lock);
}

static void
archive_close(InspOutput *out)
{
  ArchiveOutput *a = (ArchiveOutput *)out;

  if (a->thread != NULL) {
    g_mutex_lock(&a->lock);
    a->stopping = TRUE;
    g_cond_signal(&a->cond);
    g_mutex_unlock(&a->lock);
    g_thread_join(a->thread);
  }
  g_queue_clear_full(&a->queue, (GDestroyNotify)insp_part_unref);
  g_mutex_clear(&a->lock);
  g_cond_clear(&a->cond);
  g_free(a->dir);
  g_free(a->station);
  g_free(a);
}

static const InspOutputClass archive_class = {
    .name = "archive",
    .part = archive_part,
    .wants_images = archive_wants_images,
    .status = archive_status,
    .close = archive_close,
};

InspOutput *
insp_output_archive_new(const InspConfig *config, const char *station, InspOutputs *outs,
                        GError **error)
{
  ArchiveOutput *a;

  g_return_val_if_fail(config != NULL && config->archive.dir[0] != '\0', NULL);
  if (g_mkdir_with_parents(config->archive.dir, 0755) != 0 ||
      g_access(config->archive.dir, W_OK) != 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "[archive] dir %s: %s",
                config->archive.dir, g_strerror(e));
    return NULL;
  }
  a = g_new0(ArchiveOutput, 1);
  a->parent.klass = &archive_class;
  a->outs = outs;
  a->dir = g_strdup(config->archive.dir);
  a->station = g_strdup(station ? station : "");
  a->what = config->archive.what;
  a->max_bytes = (guint64)config->archive.max_mb * 1048576u;
  a->max_age_us = (gint64)config->archive.max_age_days * 86400 * G_USEC_PER_SEC;
  a->quality = config->archive.jpeg_quality;
  a->pixel_threshold = config->inspection.pixel_threshold;
  g_mutex_init(&a->lock);
  g_cond_init(&a->cond);
  g_queue_init(&a->queue);
  a->thread = g_thread_new("insp-archive", writer_main, a);
  g_autofree char *age = config->archive.max_age_days
                             ? g_strdup_printf(", %d days", config->archive.max_age_days)
                             : g_strdup("");
  g_info("archive: %s parts to %s (at most %d MiB%s)",
         a->what == INSP_CONFIG_MASKS_ALL    ? "all"
         : a->what == INSP_CONFIG_MASKS_FAIL ? "failed"
                                             : "no",
         a->dir, config->archive.max_mb, age);
  return &a->parent;
}
