/* Store-and-forward spool: MQTT messages kept on disk until the broker
 * acknowledged them (see insp-spool.c for the on-disk format). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define INSP_SPOOL_ERROR (insp_spool_error_quark())
GQuark insp_spool_error_quark(void);

typedef enum {
  INSP_SPOOL_ERROR_IO,       /* the directory or a file could not be written or read */
  INSP_SPOOL_ERROR_CORRUPT,  /* a spool file failed its length or checksum checks */
  INSP_SPOOL_ERROR_TOO_LARGE /* the message alone is larger than the spool budget */
} InspSpoolError;

/* Replay order within one seq is the numeric order of the kind. Eviction
 * under pressure takes masks first, then results and replies. */
typedef enum {
  INSP_SPOOL_KIND_RESULT = 0, /* {prefix}/{station}/result */
  INSP_SPOOL_KIND_REPLY = 1,  /* a result sent to a trigger's v5 response topic */
  INSP_SPOOL_KIND_MASK = 2,   /* {prefix}/{station}/mask (PNG) */
} InspSpoolKind;

typedef enum {
  INSP_SPOOL_FLAGS_NONE = 0,
  INSP_SPOOL_FLAGS_FSYNC = 1 << 0,      /* [spool] sync = always: fdatasync every append */
  INSP_SPOOL_FLAGS_SYNC_BATCH = 1 << 1, /* sync = batch: at most once a second */
} InspSpoolFlags;

/* One message; every field is owned by the struct (insp_spool_message_free). */
typedef struct {
  guint64 id; /* spool-assigned handle for ack/release; 0 before push */
  InspSpoolKind kind;
  guint64 seq;
  int qos;             /* 0..2 */
  char *topic;         /* never NULL */
  char *part_id;       /* may be NULL */
  GBytes *correlation; /* v5 correlation data, may be NULL */
  GBytes *payload;     /* never NULL (may be empty) */
} InspSpoolMessage;

void insp_spool_message_free(InspSpoolMessage *msg);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspSpoolMessage, insp_spool_message_free)

typedef struct _InspSpool InspSpool;

typedef struct {
  guint n_messages;   /* on disk now */
  guint64 bytes;      /* the spool's files on disk (segments and their ack sidecars) */
  guint64 live_bytes; /* the records of those messages */
  guint n_segments;
  guint64 dropped_masks; /* evicted since open because the spool was full */
  guint64 dropped_results;
  guint64 corrupt; /* unreadable files found (and removed) since open */
} InspSpoolStats;

/* Opens (creating it, mode 0700) the spool in @dir, removes leftover *.tmp
 * files, indexes the existing messages and evicts down to @max_bytes.
 * Thread-safe: every function below may be called from any thread. */
InspSpool *insp_spool_open(const char *dir, guint64 max_bytes, InspSpoolFlags flags,
                           GError **error);
void insp_spool_free(InspSpool *spool);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspSpool, insp_spool_free)

/* Appends @msg (see insp-spool.c for durability). When the budget would be
 * exceeded it first evicts the oldest masks, then (only for a result or reply)
 * the oldest results; a mask that still does not fit is not stored and counted
 * as dropped. *@evicted_masks / *@evicted_results (nullable) receive what this
 * call dropped, including @msg itself. A message with the same (seq, kind) as
 * a stored one replaces it. Returns the new id (> 0), or 0 when @msg was
 * dropped or on error (@error set only on I/O failure or TOO_LARGE). */
guint64 insp_spool_push(InspSpool *spool, const InspSpoolMessage *msg, guint *evicted_masks,
                        guint *evicted_results, GError **error);

/* The oldest message in (seq, kind) order not yet claimed, read back from
 * disk and marked claimed; NULL when there is none. A file that fails its
 * checks is removed, counted as corrupt and skipped. Caller owns the result. */
InspSpoolMessage *insp_spool_claim_next(InspSpool *spool);

/* Whether an unclaimed message is waiting. */
gboolean insp_spool_has_unclaimed(InspSpool *spool);

/* Deletes a claimed (or unclaimed) message: it was delivered. Unknown ids
 * (already evicted) are ignored; returns whether it was there. */
gboolean insp_spool_ack(InspSpool *spool, guint64 id);

/* Makes a claimed message available to insp_spool_claim_next again. */
void insp_spool_release(InspSpool *spool, guint64 id);

void insp_spool_get_stats(InspSpool *spool, InspSpoolStats *stats);

/* What was dropped (evicted, or refused for want of room) since the last
 * call, with the seq ranges, for the event that announces it. */
#define INSP_SPOOL_DROP_RANGES 64
typedef struct {
  guint64 masks, results;
  guint64 first_mask_seq, last_mask_seq;     /* valid when masks > 0 */
  guint64 first_result_seq, last_result_seq; /* valid when results > 0 */
  /* The dropped results exactly, as ranges of seqs [from, to] (the oldest
   * unsent go first, but one being sent is never dropped: a range can have
   * gaps a delivered result fills). Past INSP_SPOOL_DROP_RANGES the last one
   * grows, and @ranges_merged says a gap may hide in it. */
  guint n_ranges;
  gboolean ranges_merged;
  guint64 ranges[INSP_SPOOL_DROP_RANGES][2];
} InspSpoolDrops;
void insp_spool_take_drops(InspSpool *spool, InspSpoolDrops *drops);

/* With sync = batch, syncs what the last second appended (the MQTT pump
 * calls it on every tick). */
void insp_spool_flush(InspSpool *spool);

G_END_DECLS
