/* The contract between generated model code (`toolkit export`) and the firmware.
 *
 * Each exported model `<name>` provides `<name>.h` with a `extern const tk_model_t <name>_model;` and the
 * function `int <name>_invoke(const int8_t *in, int8_t *out, uint8_t *arena)`. The firmware keeps a table
 * of `tk_model_t` pointers and never needs to know a model's layers.
 */
#ifndef TK_MODEL_H
#define TK_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TK_NO_OFFSET 0xFFFFFFFFu

typedef struct {
    const char *name;
    /* Runs the whole network. `in` and `out` are int8 tensors in NHWC order; `arena` is scratch of
     * `arena_size` bytes, aligned to 16. Returns 0 on success. */
    int (*invoke)(const int8_t *in, int8_t *out, uint8_t *arena);
    uint32_t arena_size;   /* bytes of scratch the static memory plan needs */
    uint32_t input_size;   /* bytes (= elements) of the input tensor */
    uint32_t output_size;  /* bytes (= elements) of the output tensor */
    int32_t input_shape[4];  /* N, H, W, C */
    int32_t output_shape[4]; /* N, H, W, C */
    float input_scale;     /* real = scale * (q - zero_point) */
    int32_t input_zero_point;
    float output_scale;
    int32_t output_zero_point;
    uint32_t weight_bytes; /* const data placed in flash */
    uint64_t macs;         /* multiply-accumulates per invoke */
    /* The plan also gives the input and output a place in the arena: with in = arena + input_offset and
     * out = arena + output_offset, invoke needs no RAM beyond the arena (the input is consumed: write it
     * again before the next invoke). Separate buffers work too. TK_NO_OFFSET: keep them outside. */
    uint32_t input_offset;
    uint32_t output_offset;
} tk_model_t;

#ifdef __cplusplus
}
#endif

#endif /* TK_MODEL_H */
