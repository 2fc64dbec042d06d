/* The synthetic-part generator: seeded images of a machined metal flange (a
 * grey disc with a centre bore and six bolt holes on a dark background, with
 * lathe texture, sensor noise and a little position and lighting jitter),
 * good or with a defect, together with the ground-truth defect mask.
 *
 * The demo line of `inspectd run` (no -c) replays these parts, and the tests
 * train and evaluate on them, so a fresh machine needs no data set. The same
 * (seed, kind, size) always gives the same pixels, on every machine. */
#pragma once

#include <glib.h>
#include "insp-image.h"

G_BEGIN_DECLS

#define INSP_SYNTH_ERROR (insp_synth_error_quark())
GQuark insp_synth_error_quark(void);

typedef enum {
  INSP_SYNTH_ERROR_SIZE, /* width or height out of [INSP_SYNTH_MIN_SIZE, INSP_SYNTH_MAX_SIZE] */
  INSP_SYNTH_ERROR_IO,   /* writing a data set failed */
} InspSynthError;

#define INSP_SYNTH_MIN_SIZE 32
#define INSP_SYNTH_MAX_SIZE 4096

typedef enum {
  INSP_SYNTH_GOOD,
  INSP_SYNTH_SCRATCH, /* a thin dark or bright line across the face */
  INSP_SYNTH_SPOT,    /* a stain: an irregular dark, rust-tinted blob */
  INSP_SYNTH_MISSING, /* a bolt hole not drilled, or a notch cut out of the rim */
  INSP_SYNTH_N_KINDS
} InspSynthKind;

/* "good", "scratch", "spot", "missing"; NULL for an invalid kind. */
const char *insp_synth_kind_to_string(InspSynthKind kind);
/* Returns FALSE (and leaves *kind alone) for an unknown name. */
gboolean insp_synth_kind_from_string(const char *name, InspSynthKind *kind);

/* Renders one part of @kind, @width x @height, from @seed. On success
 * *img receives a new RGB image and, when @mask is not NULL, *mask a new
 * 1-channel image of the same size with 255 on defect pixels and 0 elsewhere
 * (all 0 for INSP_SYNTH_GOOD; never all 0 for a defect). The caller owns both.
 * Out-parameters are written only on success. Any thread. */
gboolean insp_synth_part(guint64 seed, InspSynthKind kind, int width, int height, InspImage **img,
                         InspImage **mask, GError **error);

/* The demo line's sequence: part @index (0, 1, 2, ...) is good except every
 * @defect_every-th one (index % defect_every == defect_every - 1), whose kind
 * cycles scratch, spot, missing. @defect_every 0 means all good. */
InspSynthKind insp_synth_line_kind(guint64 index, guint defect_every);
/* The seed of part @index of a line started from @line_seed. */
guint64 insp_synth_line_seed(guint64 line_seed, guint64 index);

/* Writes a data set in MVTec AD layout under @dir (created):
 * train/good/NNN.png (@n_train), test/good/NNN.png (@n_test_good),
 * test/<kind>/NNN.png and ground_truth/<kind>/NNN_mask.png (@n_test_defect
 * for each of scratch, spot, missing), all @size x @size, from @seed. */
gboolean insp_synth_write_dataset(const char *dir, int size, int n_train, int n_test_good,
                                  int n_test_defect, guint64 seed, GError **error);

G_END_DECLS
