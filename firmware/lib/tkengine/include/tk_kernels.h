/* tkengine: int8 kernels called by code that `toolkit export` generates.
 *
 * Semantics (docs/architecture.md "int8 semantics", the Python oracle is toolkit/deploy/int8ref.py): tensors are int8
 * NHWC, batch 1; real = scale * (q - zero_point). Convolutions accumulate (x - in_zp) * w in int32, add an
 * int32 bias and requantize per output channel with a Q31 multiplier and a shift (TFLite's
 * MultiplyByQuantizedMultiplier: rounding half away from zero), add out_zp and clamp to [act_min, act_max]
 * (which also implements fused ReLU / ReLU6). Every kernel is bit-exact with the Python reference.
 *
 * Two builds of the same kernels: portable C99, and a Cortex-M4/M7 DSP path (ACLE __smlad/__sxtb16) chosen
 * when the compiler defines __ARM_FEATURE_DSP (disable with -DTK_NO_DSP). Integer sums do not depend on
 * order, so both give identical bytes.
 *
 * Kernels return 0, or TK_ERR_ARG for a NULL pointer or an impossible shape.
 */
#ifndef TK_KERNELS_H
#define TK_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TK_OK 0
#define TK_ERR_ARG (-1)

#if defined(__GNUC__) || defined(__clang__)
#define TK_ALIGN(n) __attribute__((aligned(n)))
#else
#define TK_ALIGN(n)
#endif

typedef struct {
    int32_t h, w, c;
} tk_shape_t;

/* Fixed-point move of an int8 tensor from one quantization to another; identity != 0: plain copy+clamp. */
typedef struct {
    int32_t identity;
    int32_t in_zp;
    int32_t multiplier;
    int32_t shift;
    int32_t out_zp;
} tk_rescale_t;

typedef struct {
    tk_shape_t in, out;
    int32_t kernel_h, kernel_w;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left; /* bottom/right padding follows from the shapes */
    int32_t in_zp, out_zp;
    int32_t act_min, act_max;
    const int8_t *weights;     /* conv: [out_c][kh][kw][in_c]; depthwise: [kh][kw][c] */
    const int32_t *bias;       /* [out_c] at scale in_scale * w_scale[c] */
    const int32_t *multiplier; /* [out_c] Q31 */
    const int32_t *shift;      /* [out_c] */
    const int16_t *weights_wide; /* tk_conv2d_wide_s8 only: int16 weights in its loop order (see tk_conv.c) */
} tk_conv_params_t;

/* Bytes of scratch tk_conv2d_wide_s8 needs: two pixels' int16 patches, K = kh*kw*in_c rounded up to 4. */
#define TK_CONV_WIDE_SCRATCH(kh, kw, in_c) (4 * (((kh) * (kw) * (in_c) + 3) / 4 * 4))

typedef struct {
    int32_t size;
    int32_t in1_zp, in1_multiplier, in1_shift;
    int32_t in2_zp, in2_multiplier, in2_shift;
    int32_t left_shift;
    int32_t out_zp, out_multiplier, out_shift;
    int32_t act_min, act_max;
} tk_add_params_t;

/* Any kernel size, stride and padding. */
int tk_conv2d_s8(const tk_conv_params_t *p, const int8_t *in, int8_t *out);
/* 3x3 kernels, any stride/padding (unrolled taps). */
int tk_conv2d_3x3_s8(const tk_conv_params_t *p, const int8_t *in, int8_t *out);
/* 1x1 kernels, stride 1, no padding: a matrix product over pixels. */
int tk_conv2d_1x1_s8(const tk_conv_params_t *p, const int8_t *in, int8_t *out);
/* Any kernel size, stride and padding, from int16 weights laid out by `toolkit export` (p->weights_wide;
 * p->weights unused): the fast path. `scratch`: TK_CONV_WIDE_SCRATCH bytes, 4-aligned. */
int tk_conv2d_wide_s8(const tk_conv_params_t *p, const int8_t *in, int8_t *out, int16_t *scratch);
/* Depthwise (channel multiplier 1), any kernel size, stride and padding. */
int tk_depthwise_conv2d_s8(const tk_conv_params_t *p, const int8_t *in, int8_t *out);

/* Elementwise add of two tensors of `size` elements (TFLite's quantized ADD). `out` may alias an input. */
int tk_add_s8(const tk_add_params_t *p, const int8_t *in1, const int8_t *in2, int8_t *out);

/* Elementwise requantization of `size` elements; `out` may alias `in`. */
int tk_requantize_s8(const tk_rescale_t *r, int32_t act_min, int32_t act_max, const int8_t *in, int32_t size,
                     int8_t *out);

/* Channel concatenation of n tensors into an out_h x out_w output, each input requantized to the output.
 * factors (2 per input: fh, fw; NULL = all 1) upsample an input on the fly (nearest): input i is
 * (out_h / fh) x (out_w / fw) x channels[i] and pixel (y, x) reads it at (y / fh, x / fw). */
int tk_concat_s8(const int8_t *const *inputs, const int32_t *channels, const int32_t *factors,
                 const tk_rescale_t *rescale, int32_t n_inputs, int32_t out_h, int32_t out_w, int32_t act_min,
                 int32_t act_max, int8_t *out);

/* Nearest-neighbour upsampling by integer factors: out[y][x] = in[y / fh][x / fw]. */
int tk_upsample_nearest_s8(const int8_t *in, tk_shape_t in_shape, int32_t factor_h, int32_t factor_w, int8_t *out);

/* Constant spatial padding with the int8 value `value` (the quantized pad constant). */
int tk_pad_s8(const int8_t *in, tk_shape_t in_shape, int32_t top, int32_t left, int32_t bottom, int32_t right,
              int8_t value, int8_t *out);

/* The fixed-point primitive (exposed for tests): round(x * multiplier * 2^(shift - 31)), TFLite's way. */
int32_t tk_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift);

/* Per-layer profiling: generated code calls TK_LAYER_DONE(i) after layer i. Built with -DTK_PROFILE_LAYERS it
 * calls tk_profile_layer_done(i), which the program defines (benchmarks/engine_table.py's harness does). */
#ifdef TK_PROFILE_LAYERS
void tk_profile_layer_done(int layer);
#define TK_LAYER_DONE(i) tk_profile_layer_done(i)
#else
#define TK_LAYER_DONE(i)
#endif

/* 1 when the DSP (SIMD) path was compiled in, else 0. */
int tk_kernels_use_dsp(void);

#ifdef __cplusplus
}
#endif

#endif /* TK_KERNELS_H */
