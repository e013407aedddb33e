/* Fixed-point requantization shared by the kernels and the frame pipeline app (firmware/src/app/).
 *
 * round(x * multiplier * 2^(shift - 31)) with one rounding, half away from zero, of the exact 64-bit product;
 * multiplier/shift as TFLite's QuantizeMultiplier makes them. (TFLite's default rounds twice, via
 * SaturatingRoundingDoublingHighMul then RoundingDivideByPOT; docs/architecture.md "int8 semantics" says why we do not.)
 * The Python twin is toolkit/deploy/int8ref.py: change both or neither.
 * The rounding shift is branch-free: floor((p + half - [p < 0]) / 2^n) rounds half away from zero for both
 * signs. It shifts a negative int64 right, which C leaves to the compiler; GCC, Clang and MSVC shift
 * arithmetically (the host tests check the result against the Python reference bit for bit). */
#ifndef TK_FIXEDPOINT_H
#define TK_FIXEDPOINT_H

#include <stdint.h>

/* tk_mbqm for shift < -1 (n = 31 - shift > 32: scales below 1/2, the usual case): the rounding add and the
 * result lie in the product's high word, so the 64-bit add and shift become 32-bit ones: hi + 2^(n-33),
 * minus the borrow of lo - [p < 0]. */
static inline int32_t tk_mbqm_small_scale(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t n = 31 - shift; /* 33..62 */
    const int64_t p = (int64_t)x * (int64_t)multiplier;
    const int32_t hi = (int32_t)(p >> 32);
    const int32_t borrow = (uint32_t)p == 0u && hi < 0;
    return (hi + (1 << (n - 33)) - borrow) >> (n - 32);
}

static inline int32_t tk_mbqm(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t n = 31 - shift; /* 1..62 */
    int64_t p, r;
    if (n > 32) {
        return tk_mbqm_small_scale(x, multiplier, shift);
    }
    p = (int64_t)x * (int64_t)multiplier;
    r = (p + ((int64_t)1 << (n - 1)) - (p < 0)) >> n;
    return r > INT32_MAX ? INT32_MAX : (r < INT32_MIN ? INT32_MIN : (int32_t)r);
}

static inline int8_t tk_clamp_s8(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

#endif /* TK_FIXEDPOINT_H */
