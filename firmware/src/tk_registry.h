/* The table of models built into this firmware, and its on-device pipeline (or NULL).
 * `firmware/generated/models.c` defines both; it is written by `toolkit export`/`toolkit bench` (unit tests
 * link their own table with hand-written test models). */
#ifndef TK_REGISTRY_H
#define TK_REGISTRY_H

#include <stdint.h>

#include "tk_frame.h"
#include "tk_model.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const tk_model_t *const tk_models[]; /* tk_model_count entries (then a NULL) */
extern const uint32_t tk_model_count;
/* The anonymization pipeline (generated/pipeline_config.c, `toolkit bench --pipeline`), NULL when none. */
extern const tk_pipeline_t *const tk_pipeline;

#ifdef __cplusplus
}
#endif

#endif /* TK_REGISTRY_H */
