/* The seq store: the per-station sequence number of inspected parts, kept
 * in <state_dir>/seq so that no seq ever names two parts, across restarts,
 * crashes and a state folder that stops being writable.
 *
 * Blocks of INSP_SEQ_BLOCK seqs are reserved on disk ahead of use (the file
 * holds the first seq not reserved); a crash skips at most the rest of a
 * block, a clean stop writes the exact next seq. A new block is reserved
 * when half of the current one is used, so a short write failure costs
 * nothing; when the reservation cannot be saved and the block is used up,
 * insp_seq_take() hands out nothing until a save succeeds again.
 * Threads: any; calls are serialised inside. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define INSP_SEQ_BLOCK 1000

typedef struct _InspSeq InspSeq;

/* Creates @state_dir if needed, reads the next seq and reserves a block of
 * @block seqs (0: INSP_SEQ_BLOCK; tests use small ones).
 * NULL with @error naming the file when the folder or file cannot be
 * written, or the file does not hold a seq. */
InspSeq *insp_seq_open(const char *state_dir, guint block, GError **error);
/* Takes the next seq into @seq. FALSE with @error (the save that failed)
 * when no reserved seq is left and no new block could be saved: the part
 * must not be published under any seq. */
gboolean insp_seq_take(InspSeq *store, guint64 *seq, GError **error);
/* The next seq insp_seq_take() would hand out. */
guint64 insp_seq_peek(InspSeq *store);
const char *insp_seq_get_path(InspSeq *store);
/* Saves the exact next seq (a warning when it cannot) and frees. NULL is
 * fine. */
void insp_seq_close(InspSeq *store);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(InspSeq, insp_seq_close)

G_END_DECLS
