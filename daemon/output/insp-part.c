/* InspPart: reference counting only; the fields are the record. */
#include "insp-part.h"

const char *const insp_part_stage_names[INSP_PART_N_STAGES] = {
    "preprocess", "backbone", "search", "map", "regions",
};

InspPart *
insp_part_new(void)
{
  InspPart *part = g_new0(InspPart, 1);

  part->ref_count = 1;
  return part;
}

InspPart *
insp_part_ref(InspPart *part)
{
  g_return_val_if_fail(part != NULL, NULL);
  g_atomic_int_inc(&part->ref_count);
  return part;
}

void
insp_part_unref(InspPart *part)
{
  if (part == NULL || !g_atomic_int_dec_and_test(&part->ref_count))
    return;
  g_free(part->part_id);
  g_free(part->model);
  g_free(part->regions);
  g_clear_pointer(&part->mask_png, g_bytes_unref);
  g_clear_pointer(&part->image_png, g_bytes_unref);
  g_clear_pointer(&part->map_png, g_bytes_unref);
  if (part->rgb_release != NULL)
    part->rgb_release(part->rgb_owner);
  g_free(part->map);
  g_free(part);
}

const char *
insp_state_to_string(InspState state)
{
  static const char *const names[] = {"online", "degraded", "offline"};

  g_return_val_if_fail(state <= INSP_STATE_OFFLINE, "offline");
  return names[state];
}
