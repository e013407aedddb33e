/* Convolutions: general, 3x3, 1x1 and depthwise (see tk_kernels.h for the semantics). */
#include <string.h>

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

#if TK_USE_DSP
/* GCC 12's arm_acle.h has no __ror; this pattern compiles to one ROR (often folded into SXTB16). */
static inline uint32_t ror8(uint32_t v)
{
    return (v >> 8) | (v << 24);
}
#endif

/* acc + sum((x[i] + in_offset) * w[i]) over n contiguous int8 pairs. */
static inline int32_t dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t in_offset, int32_t acc)
{
#if TK_USE_DSP
    /* four products per step: bytes 0/2 and 1/3 sign-extended into int16 pairs, the offset added
     * to the input pairs by SXTAB16, then two dual multiply-accumulates */
    const int32_t off2 = (int32_t)(((uint32_t)(uint16_t)in_offset << 16) | (uint32_t)(uint16_t)in_offset);
    for (; n >= 4; n -= 4) {
        uint32_t xv, wv;
        memcpy(&xv, x, 4);
        memcpy(&wv, w, 4);
        x += 4;
        w += 4;
        acc = __smlad(__sxtab16(off2, (int32_t)xv), __sxtb16((int32_t)wv), acc);
        acc = __smlad(__sxtab16(off2, (int32_t)ror8(xv)), __sxtb16((int32_t)ror8(wv)), acc);
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
        uint32_t xv, v0, v1;
        int32_t x02, x13;
        memcpy(&xv, x, 4);
        memcpy(&v0, w0, 4);
        memcpy(&v1, w1, 4);
        x += 4;
        w0 += 4;
        w1 += 4;
        x02 = __sxtab16(off2, (int32_t)xv);
        x13 = __sxtab16(off2, (int32_t)ror8(xv));
        a0 = __smlad(x02, __sxtb16((int32_t)v0), a0);
        a0 = __smlad(x13, __sxtb16((int32_t)ror8(v0)), a0);
        a1 = __smlad(x02, __sxtb16((int32_t)v1), a1);
        a1 = __smlad(x13, __sxtb16((int32_t)ror8(v1)), a1);
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
