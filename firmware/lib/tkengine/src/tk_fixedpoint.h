/* Fixed-point requantization shared by the kernels (internal header).
 *
 * round(x * multiplier * 2^(shift - 31)) with one rounding, half away from zero, of the exact 64-bit product;
 * multiplier/shift as TFLite's QuantizeMultiplier makes them. (TFLite's default rounds twice, via
 * SaturatingRoundingDoublingHighMul then RoundingDivideByPOT; DESIGN.md "int8 semantics" says why we do not.)
 * The Python twin is toolkit/deploy/int8ref.py: change both or neither.
 * Right shifts here only see non-negative values, so no implementation-defined behaviour is involved. */
#ifndef TK_FIXEDPOINT_H
#define TK_FIXEDPOINT_H

#include <stdint.h>

static inline int32_t tk_mbqm(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t n = 31 - shift; /* 1..62 */
    const int64_t p = (int64_t)x * (int64_t)multiplier;
    const int64_t half = (int64_t)1 << (n - 1);
    const int64_t r = p >= 0 ? ((p + half) >> n) : -((-p + half) >> n);
    return r > INT32_MAX ? INT32_MAX : (r < INT32_MIN ? INT32_MIN : (int32_t)r);
}

static inline int8_t tk_clamp_s8(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

#endif /* TK_FIXEDPOINT_H */
