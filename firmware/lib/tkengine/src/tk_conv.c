/* Convolutions: general, 3x3, 1x1 and depthwise (see tk_kernels.h for the semantics). */
#include "tk_fixedpoint.h"
#include "tk_kernels.h"
#include "tk_simd.h"

int tk_kernels_use_dsp(void)
{
    return TK_USE_DSP;
}

int32_t tk_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift)
{
    return tk_mbqm(x, multiplier, shift);
}

/* acc + sum((x[i] + in_offset) * w[i]) over n contiguous int8 pairs. */
static inline int32_t dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t in_offset, int32_t acc)
{
#if TK_USE_DSP
    /* four products per step: bytes 0/2 and 1/3 sign-extended into int16 pairs, the offset added
     * to the input pairs by SXTAB16, then two dual multiply-accumulates */
    const int32_t off2 = (int32_t)(((uint32_t)(uint16_t)in_offset << 16) | (uint32_t)(uint16_t)in_offset);
    for (; n >= 4; n -= 4) {
        const uint32_t xv = tk_ld32(x), wv = tk_ld32(w);
        x += 4;
        w += 4;
        acc = __smlad(__sxtab16(off2, (int32_t)xv), __sxtb16((int32_t)wv), acc);
        acc = __smlad(__sxtab16(off2, (int32_t)tk_ror8(xv)), __sxtb16((int32_t)tk_ror8(wv)), acc);
    }
#endif
    for (; n > 0; --n) {
        acc += ((int32_t)*x++ + in_offset) * (int32_t)*w++;
    }
    return acc;
}

/* Two output channels at once: the input bytes are loaded and offset once for both weight rows. */
static inline void dot2_s8(const int8_t *x, const int8_t *w0, const int8_t *w1, int32_t n, int32_t in_offset,
                           int32_t *acc0, int32_t *acc1)
{
    int32_t a0 = *acc0, a1 = *acc1;
#if TK_USE_DSP
    const int32_t off2 = (int32_t)(((uint32_t)(uint16_t)in_offset << 16) | (uint32_t)(uint16_t)in_offset);
    for (; n >= 4; n -= 4) {
        const uint32_t xv = tk_ld32(x), v0 = tk_ld32(w0), v1 = tk_ld32(w1);
        int32_t x02, x13;
        x += 4;
        w0 += 4;
        w1 += 4;
        x02 = __sxtab16(off2, (int32_t)xv);
        x13 = __sxtab16(off2, (int32_t)tk_ror8(xv));
        a0 = __smlad(x02, __sxtb16((int32_t)v0), a0);
        a0 = __smlad(x13, __sxtb16((int32_t)tk_ror8(v0)), a0);
        a1 = __smlad(x02, __sxtb16((int32_t)v1), a1);
        a1 = __smlad(x13, __sxtb16((int32_t)tk_ror8(v1)), a1);
    }
#endif
    for (; n > 0; --n) {
        const int32_t xi = (int32_t)*x++ + in_offset;
        a0 += xi * (int32_t)*w0++;
        a1 += xi * (int32_t)*w1++;
    }
    *acc0 = a0;
    *acc1 = a1;
}

static inline int8_t requant_s8(const tk_conv_params_t *p, int32_t oc, int32_t acc)
{
    return tk_clamp_s8(tk_mbqm(acc, p->multiplier[oc], p->shift[oc]) + p->out_zp, p->act_min, p->act_max);
}

static int check(const tk_conv_params_t *p, const int8_t *in, const int8_t *out)
{
    if (!p || !in || !out || !p->weights || !p->bias || !p->multiplier || !p->shift) {
        return TK_ERR_ARG;
    }
    if (p->in.h <= 0 || p->in.w <= 0 || p->in.c <= 0 || p->out.h <= 0 || p->out.w <= 0 || p->out.c <= 0 ||
        p->stride_h <= 0 || p->stride_w <= 0 || p->kernel_h <= 0 || p->kernel_w <= 0) {
        return TK_ERR_ARG;
    }
    return TK_OK;
}

/* kh, kw are compile-time constants in the 3x3 instance, so the tap loops unroll there. */
static inline void conv_core(const tk_conv_params_t *p, const int8_t *in, int8_t *out, const int32_t kh,
                             const int32_t kw)
{
    const int32_t in_h = p->in.h, in_w = p->in.w, in_c = p->in.c;
    const int32_t out_c = p->out.c;
    const int32_t in_offset = -p->in_zp;
    int32_t oy, ox, oc, ky;
    for (oy = 0; oy < p->out.h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        const int32_t ky_lo = iy0 < 0 ? -iy0 : 0;
        const int32_t ky_hi = (in_h - iy0) < kh ? (in_h - iy0) : kh;
        for (ox = 0; ox < p->out.w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            const int32_t kx_lo = ix0 < 0 ? -ix0 : 0;
            const int32_t kx_hi = (in_w - ix0) < kw ? (in_w - ix0) : kw;
            /* padded taps read in_zp, i.e. contribute 0: they are skipped. In NHWC the taps kx_lo..kx_hi of
             * one kernel row are contiguous in both the input and the [oc][ky][kx][ic] weights, so each row
             * is one dot product of (kx_hi - kx_lo) * in_c pairs. */
            const int32_t row_len = (kx_hi - kx_lo) * in_c;
            const int32_t w_stride = kh * kw * in_c;
            for (oc = 0; oc + 1 < out_c; oc += 2) {
                const int8_t *w0 = p->weights + oc * w_stride;
                int32_t acc0 = p->bias[oc], acc1 = p->bias[oc + 1];
                for (ky = ky_lo; ky < ky_hi; ++ky) {
                    const int8_t *xrow = in + ((iy0 + ky) * in_w + ix0 + kx_lo) * in_c;
                    const int32_t wofs = (ky * kw + kx_lo) * in_c;
                    dot2_s8(xrow, w0 + wofs, w0 + w_stride + wofs, row_len, in_offset, &acc0, &acc1);
                }
                *out++ = requant_s8(p, oc, acc0);
                *out++ = requant_s8(p, oc + 1, acc1);
            }
            if (oc < out_c) {
                const int8_t *wo = p->weights + oc * w_stride;
                int32_t acc = p->bias[oc];
                for (ky = ky_lo; ky < ky_hi; ++ky) {
                    const int8_t *xrow = in + ((iy0 + ky) * in_w + ix0 + kx_lo) * in_c;
                    acc = dot_s8(xrow, wo + (ky * kw + kx_lo) * in_c, row_len, in_offset, acc);
                }
                *out++ = requant_s8(p, oc, acc);
            }
        }
    }
}

int tk_conv2d_s8(const tk_conv_params_t *p, const int8_t *in, int8_t *out)
{
    if (check(p, in, out) != TK_OK) {
        return TK_ERR_ARG;
    }
    conv_core(p, in, out, p->kernel_h, p->kernel_w);
    return TK_OK;
}

int tk_conv2d_3x3_s8(const tk_conv_params_t *p, const int8_t *in, int8_t *out)
{
    if (check(p, in, out) != TK_OK || p->kernel_h != 3 || p->kernel_w != 3) {
        return TK_ERR_ARG;
    }
    conv_core(p, in, out, 3, 3);
    return TK_OK;
}

int tk_conv2d_1x1_s8(const tk_conv_params_t *p, const int8_t *in, int8_t *out)
{
    int32_t pix, oc;
    const int32_t n_pix = p ? p->out.h * p->out.w : 0;
    if (check(p, in, out) != TK_OK || p->kernel_h != 1 || p->kernel_w != 1 || p->stride_h != 1 ||
        p->stride_w != 1 || p->pad_top != 0 || p->pad_left != 0 || p->in.h != p->out.h || p->in.w != p->out.w) {
        return TK_ERR_ARG;
    }
    for (pix = 0; pix < n_pix; ++pix) {
        const int8_t *x = in + pix * p->in.c;
        for (oc = 0; oc + 1 < p->out.c; oc += 2) {
            int32_t acc0 = p->bias[oc], acc1 = p->bias[oc + 1];
            const int8_t *w0 = p->weights + oc * p->in.c;
            dot2_s8(x, w0, w0 + p->in.c, p->in.c, -p->in_zp, &acc0, &acc1);
            *out++ = requant_s8(p, oc, acc0);
            *out++ = requant_s8(p, oc + 1, acc1);
        }
        if (oc < p->out.c) {
            *out++ = requant_s8(p, oc, dot_s8(x, p->weights + oc * p->in.c, p->in.c, -p->in_zp, p->bias[oc]));
        }
    }
    return TK_OK;
}

int tk_depthwise_conv2d_s8(const tk_conv_params_t *p, const int8_t *in, int8_t *out)
{
    int32_t oy, ox, c, ky, kx;
    if (check(p, in, out) != TK_OK || p->in.c != p->out.c) {
        return TK_ERR_ARG;
    }
    for (oy = 0; oy < p->out.h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        const int32_t ky_lo = iy0 < 0 ? -iy0 : 0;
        const int32_t ky_hi = (p->in.h - iy0) < p->kernel_h ? (p->in.h - iy0) : p->kernel_h;
        for (ox = 0; ox < p->out.w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            const int32_t kx_lo = ix0 < 0 ? -ix0 : 0;
            const int32_t kx_hi = (p->in.w - ix0) < p->kernel_w ? (p->in.w - ix0) : p->kernel_w;
            /* one channel at a time: the taps of a channel are strided by C, which SIMD pairs would not
             * help with on M4 (the DSP build uses this loop too) */
            for (c = 0; c < p->out.c; ++c) {
                int32_t acc = p->bias[c];
                for (ky = ky_lo; ky < ky_hi; ++ky) {
                    for (kx = kx_lo; kx < kx_hi; ++kx) {
                        const int32_t x = in[((iy0 + ky) * p->in.w + ix0 + kx) * p->in.c + c];
                        acc += (x - p->in_zp) * (int32_t)p->weights[(ky * p->kernel_w + kx) * p->in.c + c];
                    }
                }
                acc = tk_mbqm(acc, p->multiplier[c], p->shift[c]) + p->out_zp;
                *out++ = tk_clamp_s8(acc, p->act_min, p->act_max);
            }
        }
    }
    return TK_OK;
}

/* ---------------------------------------------------------------------------------------------------------
 * Wide-weight convolution: the patch of two output pixels is expanded once to int16 with the input offset
 * added (zeros where a tap falls in the padding, so borders need no special case), then 2 pixels x 4 output
 * channels accumulate together from int16 weights that `toolkit export` laid out for this loop.
 *
 * Patch index v runs over [ky][kx][ic] (K = kh*kw*in_c values), padded with zeros to KP = K rounded up to 4.
 * Each aligned group of 4 values is stored as the pairs (0, 2) and (1, 3), the order SXTAB16 extracts them
 * from a word, so no repacking is needed; the weights are laid out the same way. Scratch
 * (TK_CONV_WIDE_SCRATCH bytes): the pairs of the two pixels interleaved, word 2j + px holds pixel px's
 * pair j, so one 8-byte load feeds both pixels. Weights: per block of 4 output channels, per pair j, the 4
 * channels' int16 pairs (out_c padded to 4 with zero channels). */

static inline int32_t wide_patch_len(const tk_conv_params_t *p)
{
    return (p->kernel_h * p->kernel_w * p->in.c + 3) & ~3;
}

/* int16 index of patch value v of pixel 0 (pixel 1: +2): pair 2*(v/4) + v%2, half (v/2)%2 */
#define COL_AT(v) ((((v) >> 2) * 2 + ((v) & 1)) * 4 + (((v) >> 1) & 1))

static void col_zero(int16_t *col, int32_t v, int32_t end)
{
    for (; v < end; ++v) {
        col[COL_AT(v)] = 0;
    }
}

#if TK_USE_DSP
/* bytes 1 and 3 of b sign-extended and added to the halves of off2 (SXTAB16 with its rotation folded in) */
static inline uint32_t sxtab16_ror8(int32_t off2, uint32_t b)
{
#if defined(__arm__)
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(off2), "r"(b));
    return r;
#else
    return (uint32_t)__sxtab16(off2, (int32_t)tk_ror8(b));
#endif
}
#endif

/* patch values v .. v+n-1 of one pixel from n contiguous input bytes, offset added */
static void col_copy(int16_t *col, int32_t v, const int8_t *x, int32_t n, int32_t in_offset)
{
    for (; n > 0 && (v & 3); --n, ++v) {
        col[COL_AT(v)] = (int16_t)(*x++ + in_offset);
    }
#if TK_USE_DSP
    {
        /* 4 bytes -> pairs (0, 2) and (1, 3) with the offset added, by two SXTAB16; 8 bytes per turn */
        const int32_t off2 = (int32_t)(((uint32_t)(uint16_t)in_offset << 16) | (uint16_t)in_offset);
        int16_t *dst = col + COL_AT(v);
        for (; n >= 8; n -= 8, v += 8, x += 8, dst += 16) {
            const uint32_t b0 = tk_ld32(x), b1 = tk_ld32(x + 4);
            tk_st32(dst, (uint32_t)__sxtab16(off2, (int32_t)b0));
            tk_st32(dst + 4, sxtab16_ror8(off2, b0));
            tk_st32(dst + 8, (uint32_t)__sxtab16(off2, (int32_t)b1));
            tk_st32(dst + 12, sxtab16_ror8(off2, b1));
        }
        if (n >= 4) {
            const uint32_t b = tk_ld32(x);
            tk_st32(dst, (uint32_t)__sxtab16(off2, (int32_t)b));
            tk_st32(dst + 4, sxtab16_ror8(off2, b));
            n -= 4, v += 4, x += 4;
        }
    }
#endif
    for (; n > 0; --n, ++v) {
        col[COL_AT(v)] = (int16_t)(*x++ + in_offset);
    }
}

static void im2col_pixel(const tk_conv_params_t *p, const int8_t *in, int32_t pix, int16_t *col)
{
    const int32_t in_c = p->in.c, kw = p->kernel_w, row = kw * in_c;
    const int32_t oy = pix / p->out.w, ox = pix - oy * p->out.w;
    const int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    const int32_t kx_lo = ix0 < 0 ? -ix0 : 0;
    const int32_t kx_hi = (p->in.w - ix0) < kw ? (p->in.w - ix0) : kw;
    int32_t ky;
    for (ky = 0; ky < p->kernel_h; ++ky) {
        const int32_t iy = iy0 + ky, v0 = ky * row;
        if (iy < 0 || iy >= p->in.h || kx_lo >= kx_hi) {
            col_zero(col, v0, v0 + row);
            continue;
        }
        col_zero(col, v0, v0 + kx_lo * in_c);
        col_copy(col, v0 + kx_lo * in_c, in + (iy * p->in.w + ix0 + kx_lo) * in_c, (kx_hi - kx_lo) * in_c,
                 -p->in_zp);
        col_zero(col, v0 + kx_hi * in_c, v0 + row);
    }
}

/* the block and pixel loops below must be inlined for their constants (small_scales, nc) to specialize them */
#if defined(__GNUC__)
#define TK_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define TK_ALWAYS_INLINE inline
#endif

/* The requantization constants, copied out of the params once: the int8 output stores may alias anything, so
 * the compiler would reload them from the params after every store. */
typedef struct {
    const int32_t *bias, *multiplier, *shift;
    int32_t out_zp, act_min, act_max;
    int32_t small_scales; /* every channel's shift < -1: tk_mbqm_small_scale applies (the usual case) */
} requant_t;

static inline int8_t requant_out(requant_t q, int32_t oc, int32_t acc)
{
    const int32_t v = q.small_scales ? tk_mbqm_small_scale(acc, q.multiplier[oc], q.shift[oc])
                                     : tk_mbqm(acc, q.multiplier[oc], q.shift[oc]);
    return tk_clamp_s8(v + q.out_zp, q.act_min, q.act_max);
}

/* Outputs oc .. oc+nc-1 (nc <= 4) of pixels 0 (o0) and 1 (o1) from the patches in `col` and one block of
 * weights. Plain scalars, not arrays, so the 8 accumulators stay in registers. */
static TK_ALWAYS_INLINE void conv_block_2x4(requant_t q, const int16_t *col, const int16_t *w, int32_t pairs,
                                             int32_t oc, int32_t nc, int8_t *o0, int8_t *o1)
{
    const int32_t *bias = q.bias + oc;
    int32_t a0 = bias[0], a1 = nc > 1 ? bias[1] : 0, a2 = nc > 2 ? bias[2] : 0, a3 = nc > 3 ? bias[3] : 0;
    int32_t b0 = a0, b1 = a1, b2 = a2, b3 = a3;
#if TK_USE_DSP && defined(__arm__) && defined(__OPTIMIZE__)
    /* Four pairs per turn (two first when pairs % 4 == 2; pairs is even): per pair one LDRD of both pixels'
     * values, two LDRD of the 4 channels' weights, 8 SMLAD. Assembly because it needs all 14 free registers
     * (8 accumulators, 4 operands, 2 pointers; the end pointer is read from the stack): GCC 12 spills
     * accumulators in the C form. */
    const int16_t *const col_end = col + 4 * pairs;
    const int32_t two_first = pairs & 2;
    uint32_t x0, x1, wa, wb;
#define TK_PAIR_2X4                                                                                            \
    "ldrd %[x0], %[x1], [%[x]], #8\n\t"                                                                      \
    "ldrd %[wa], %[wb], [%[w]], #8\n\t"                                                                      \
    "smlad %[a0], %[x0], %[wa], %[a0]\n\t"                                                                    \
    "smlad %[b0], %[x1], %[wa], %[b0]\n\t"                                                                    \
    "smlad %[a1], %[x0], %[wb], %[a1]\n\t"                                                                    \
    "smlad %[b1], %[x1], %[wb], %[b1]\n\t"                                                                    \
    "ldrd %[wa], %[wb], [%[w]], #8\n\t"                                                                      \
    "smlad %[a2], %[x0], %[wa], %[a2]\n\t"                                                                    \
    "smlad %[b2], %[x1], %[wa], %[b2]\n\t"                                                                    \
    "smlad %[a3], %[x0], %[wb], %[a3]\n\t"                                                                    \
    "smlad %[b3], %[x1], %[wb], %[b3]\n\t"
    __asm__("ldr %[wa], %[two_first]\n\t"
            "cmp %[wa], #0\n\t"
            "beq 1f\n\t" TK_PAIR_2X4 TK_PAIR_2X4
            "ldr %[wa], %[end]\n\t"
            "cmp %[x], %[wa]\n\t"
            "beq 2f\n\t"
            "1:\n\t" TK_PAIR_2X4 TK_PAIR_2X4 TK_PAIR_2X4 TK_PAIR_2X4
            "ldr %[wa], %[end]\n\t"
            "cmp %[x], %[wa]\n\t"
            "bne 1b\n\t"
            "2:\n\t"
            : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [b0] "+r"(b0), [b1] "+r"(b1),
              [b2] "+r"(b2), [b3] "+r"(b3), [x] "+r"(col), [w] "+r"(w), [x0] "=&r"(x0), [x1] "=&r"(x1),
              [wa] "=&r"(wa), [wb] "=&r"(wb)
            : [end] "m"(col_end), [two_first] "m"(two_first)
            : "cc", "memory");
#undef TK_PAIR_2X4
#elif TK_USE_DSP
    /* the same loop in C (host emulation of the DSP path, unoptimized builds) */
    for (; pairs > 0; --pairs, col += 4, w += 8) {
        const int32_t x0 = (int32_t)tk_ld32(col), x1 = (int32_t)tk_ld32(col + 2);
        a0 = __smlad(x0, (int32_t)tk_ld32(w), a0);
        b0 = __smlad(x1, (int32_t)tk_ld32(w), b0);
        a1 = __smlad(x0, (int32_t)tk_ld32(w + 2), a1);
        b1 = __smlad(x1, (int32_t)tk_ld32(w + 2), b1);
        a2 = __smlad(x0, (int32_t)tk_ld32(w + 4), a2);
        b2 = __smlad(x1, (int32_t)tk_ld32(w + 4), b2);
        a3 = __smlad(x0, (int32_t)tk_ld32(w + 6), a3);
        b3 = __smlad(x1, (int32_t)tk_ld32(w + 6), b3);
    }
#else
    for (; pairs > 0; --pairs, col += 4, w += 8) {
        a0 += col[0] * w[0] + col[1] * w[1];
        b0 += col[2] * w[0] + col[3] * w[1];
        a1 += col[0] * w[2] + col[1] * w[3];
        b1 += col[2] * w[2] + col[3] * w[3];
        a2 += col[0] * w[4] + col[1] * w[5];
        b2 += col[2] * w[4] + col[3] * w[5];
        a3 += col[0] * w[6] + col[1] * w[7];
        b3 += col[2] * w[6] + col[3] * w[7];
    }
#endif
    o0[oc] = requant_out(q, oc, a0);
    o1[oc] = requant_out(q, oc, b0);
    if (nc > 1) {
        o0[oc + 1] = requant_out(q, oc + 1, a1);
        o1[oc + 1] = requant_out(q, oc + 1, b1);
    }
    if (nc > 2) {
        o0[oc + 2] = requant_out(q, oc + 2, a2);
        o1[oc + 2] = requant_out(q, oc + 2, b2);
    }
    if (nc > 3) {
        o0[oc + 3] = requant_out(q, oc + 3, a3);
        o1[oc + 3] = requant_out(q, oc + 3, b3);
    }
}

/* the pixel loop of tk_conv2d_wide_s8; inlined twice so that q.small_scales is a constant in each copy */
static TK_ALWAYS_INLINE void conv_wide_pixels(const tk_conv_params_t *p, const int8_t *in, int8_t *out,
                                               int16_t *scratch, requant_t q)
{
    const int32_t kp = wide_patch_len(p), n_pix = p->out.h * p->out.w, out_c = p->out.c;
    const int16_t *const weights = p->weights_wide;
    int32_t pix, oc;
    for (pix = 0; pix < n_pix; pix += 2) {
        /* an odd last pixel is computed twice, as both halves of the pair */
        const int32_t pix1 = pix + 1 < n_pix ? pix + 1 : pix;
        int8_t *o0 = out + pix * out_c, *o1 = out + pix1 * out_c;
        im2col_pixel(p, in, pix, scratch);
        im2col_pixel(p, in, pix1, scratch + 2);
        for (oc = 0; oc < out_c; oc += 4) {
            conv_block_2x4(q, scratch, weights + oc * kp, kp / 2, oc, out_c - oc < 4 ? out_c - oc : 4, o0, o1);
        }
    }
}

int tk_conv2d_wide_s8(const tk_conv_params_t *p, const int8_t *in, int8_t *out, int16_t *scratch)
{
    int32_t oc, small_scales;
    requant_t q;
    if (!p || !in || !out || !scratch || !p->weights_wide || !p->bias || !p->multiplier || !p->shift ||
        p->in.h <= 0 || p->in.w <= 0 || p->in.c <= 0 || p->out.h <= 0 || p->out.w <= 0 || p->out.c <= 0 ||
        p->stride_h <= 0 || p->stride_w <= 0 || p->kernel_h <= 0 || p->kernel_w <= 0) {
        return TK_ERR_ARG;
    }
    q.bias = p->bias, q.multiplier = p->multiplier, q.shift = p->shift;
    q.out_zp = p->out_zp, q.act_min = p->act_min, q.act_max = p->act_max;
    small_scales = 1;
    for (oc = 0; oc < p->out.c; ++oc) {
        small_scales &= p->shift[oc] < -1;
    }
    col_zero(scratch, p->kernel_h * p->kernel_w * p->in.c, wide_patch_len(p)); /* the patch padding, both pixels */
    col_zero(scratch + 2, p->kernel_h * p->kernel_w * p->in.c, wide_patch_len(p));
    if (small_scales) {
        q.small_scales = 1;
        conv_wide_pixels(p, in, out, scratch, q);
    } else {
        q.small_scales = 0;
        conv_wide_pixels(p, in, out, scratch, q);
    }
    return TK_OK;
}
