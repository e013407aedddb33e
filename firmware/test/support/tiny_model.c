/* A hand-written two-layer int8 model for the protocol tests: out = relu6-like clamp of (2*x + bias[c]),
 * then a channel swap through the arena. Small enough to reason about, exercises input, arena and output
 * like a generated model does, and fails on demand (input[0] == 127 and input[1] == -128). */
#include <stddef.h>

#include "tk_registry.h"

#define H 4
#define W 4
#define C 2

static int tiny_invoke(const int8_t *in, int8_t *out, uint8_t *arena) {
    static const int8_t bias[C] = {3, -5};
    int8_t *tmp = (int8_t *)arena;
    int i, c;
    if (in[0] == 127 && in[1] == -128) return 7; /* the failure path the tests ask for */
    for (i = 0; i < H * W; i++) {
        for (c = 0; c < C; c++) {
            int v = 2 * in[i * C + c] + bias[c];
            tmp[i * C + c] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
        }
    }
    for (i = 0; i < H * W; i++) {
        out[i * C + 0] = tmp[i * C + 1];
        out[i * C + 1] = tmp[i * C + 0];
    }
    return 0;
}

const tk_model_t tiny_model = {
    "tiny", tiny_invoke, H * W * C, H * W * C, H * W * C, {1, H, W, C}, {1, H, W, C},
    0.5f, -1, 0.25f, 2, sizeof(int8_t) * C, (uint64_t)H * W * C, TK_NO_OFFSET, TK_NO_OFFSET,
};

/* A model bigger than any pool, to test the out-of-memory reply. */
const tk_model_t huge_model = {
    "huge", tiny_invoke, 0xF0000000u, 16, 16, {1, 4, 2, 2}, {1, 4, 2, 2},
    1.0f, 0, 1.0f, 0, 0, 0, TK_NO_OFFSET, TK_NO_OFFSET,
};

const tk_model_t *const tk_models[] = {&tiny_model, &huge_model, NULL};
const uint32_t tk_model_count = 2;
