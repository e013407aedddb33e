/* Selection of the DSP (SIMD) path (internal header).
 *
 * Cortex-M4/M7 (and any core whose compiler defines __ARM_FEATURE_DSP) use the ACLE intrinsics __sxtb16,
 * __sxtab16 and __smlad from <arm_acle.h>. Host tests can compile the same path with
 * -DTK_DSP_EMULATE and an include path holding a test-only `tk_acle_emul.h` (tests/ provides one). */
#ifndef TK_SIMD_H
#define TK_SIMD_H

#if defined(TK_DSP_EMULATE)
#include "tk_acle_emul.h"
#define TK_USE_DSP 1
#elif defined(__ARM_FEATURE_DSP) && (__ARM_FEATURE_DSP == 1) && !defined(TK_NO_DSP)
#include <arm_acle.h>
#define TK_USE_DSP 1
#else
#define TK_USE_DSP 0
#endif

#if TK_USE_DSP
#include <stdint.h>

/* 4-byte loads/stores at any alignment (Cortex-M4/M7 LDR/STR allow it). __builtin_memcpy stays inline even
 * under -ffreestanding / -fno-builtin, where a plain memcpy becomes a call into the C library. */
static inline uint32_t tk_ld32(const void *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

static inline void tk_st32(void *p, uint32_t v)
{
    __builtin_memcpy(p, &v, 4);
}

/* GCC 12's arm_acle.h has no __ror; this pattern compiles to one ROR (often folded into SXTB16). */
static inline uint32_t tk_ror8(uint32_t v)
{
    return (v >> 8) | (v << 24);
}
#endif

#endif /* TK_SIMD_H */
