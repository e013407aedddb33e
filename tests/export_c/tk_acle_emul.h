/* TEST ONLY: C emulation of the ACLE DSP intrinsics used by tkengine, so the DSP code path can run (and be
 * compared bit for bit) on the build machine. Semantics per the Arm ARM: SXTB16 sign-extends bytes 0 and 2
 * into two int16 halves; SXTAB16 adds them to the halves of its first operand (mod 2^16 per half); SMLAD
 * adds the two signed 16x16 products to the accumulator. Never used in firmware builds. */
#ifndef TK_ACLE_EMUL_H
#define TK_ACLE_EMUL_H

#include <stdint.h>

static inline int32_t tk_emul_pack(int32_t lo, int32_t hi)
{
    return (int32_t)(((uint32_t)(uint16_t)hi << 16) | (uint32_t)(uint16_t)lo);
}

static inline int32_t __sxtb16(int32_t x)
{
    const uint32_t u = (uint32_t)x;
    return tk_emul_pack((int8_t)(u & 0xffu), (int8_t)((u >> 16) & 0xffu));
}

static inline int32_t __sxtab16(int32_t a, int32_t x)
{
    const uint32_t u = (uint32_t)x, ua = (uint32_t)a;
    const int32_t lo = (int16_t)(ua & 0xffffu) + (int8_t)(u & 0xffu);
    const int32_t hi = (int16_t)(ua >> 16) + (int8_t)((u >> 16) & 0xffu);
    return tk_emul_pack(lo, hi);
}

static inline int32_t __smlad(int32_t a, int32_t b, int32_t acc)
{
    const uint32_t ua = (uint32_t)a, ub = (uint32_t)b;
    const int32_t p0 = (int32_t)(int16_t)(ua & 0xffffu) * (int32_t)(int16_t)(ub & 0xffffu);
    const int32_t p1 = (int32_t)(int16_t)(ua >> 16) * (int32_t)(int16_t)(ub >> 16);
    return (int32_t)((uint32_t)acc + (uint32_t)p0 + (uint32_t)p1);
}

#endif /* TK_ACLE_EMUL_H */
