/* One inspected part as published on {prefix}/{station}/result, and its JSON. */
#pragma once

#include <glib.h>

#include "insp-model.h"

G_BEGIN_DECLS

/* Borrowed view: the caller owns every pointer for the duration of a call. */
typedef struct {
  guint64 seq;               /* per station, +1 per part, kept across restarts */
  const char *part_id;       /* NULL: the seq in decimal */
  gint64 capture_time_us;    /* g_get_real_time() when the frame was captured */
  gboolean fail;             /* the verdict */
  double score;              /* normalised: 0.5 is the default threshold */
  double threshold;          /* the threshold in force for this part */
  const char *model;         /* model name (file stem or metadata name); NULL: "" */
  double latency_ms;         /* capture to verdict */
  const InspRegion *regions; /* n_regions entries; may be NULL when 0 */
  gsize n_regions;
} InspPartResult;

/* RFC 3339 UTC with milliseconds, e.g. "2026-11-28T20:44:13.123Z". */
char *insp_result_format_time(gint64 unix_us);

/* {"v":1,"station","seq","part_id","ts","verdict","score","threshold","model",
 * "latency_ms","regions":[{"x","y","w","h","area","score"}]}; caller frees. */
char *insp_result_to_json(const InspPartResult *result, const char *station, gsize *length);

G_END_DECLS
