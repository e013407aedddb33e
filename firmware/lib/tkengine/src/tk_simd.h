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

#endif /* TK_SIMD_H */
