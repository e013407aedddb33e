/* Model registry of the benchmark firmware, written by toolkit.bench.firmware (`toolkit bench`).
 * Do not edit: regenerate with `python -m toolkit.bench.firmware registry`. */
#include <stddef.h>

#include "tk_registry.h"

const tk_model_t *const tk_models[] = {NULL};
const uint32_t tk_model_count = 0;
const tk_pipeline_t *const tk_pipeline = NULL;
