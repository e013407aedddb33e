/* The table of models built into this firmware. `firmware/generated/models.c` defines it; it is written
 * by `toolkit export`/`toolkit bench` (unit tests link their own table with a hand-written test model). */
#ifndef TK_REGISTRY_H
#define TK_REGISTRY_H

#include <stdint.h>

#include "tk_model.h"

#ifdef __cplusplus
extern "C" {
#endif

extern const tk_model_t *const tk_models[]; /* tk_model_count entries (then a NULL) */
extern const uint32_t tk_model_count;

#ifdef __cplusplus
}
#endif

#endif /* TK_REGISTRY_H */
