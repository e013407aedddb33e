/* Add, requantize, concat, nearest upsample and pad (see tk_kernels.h for the semantics). */
#include <string.h>

#include "tk_fixedpoint.h"
#include "tk_kernels.h"

int tk_add_s8(const tk_add_params_t *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    int32_t i;
    if (!p || !in1 || !in2 || !out || p->size < 0 || p->left_shift < 0 || p->left_shift > 22) {
        return TK_ERR_ARG;
    }
    for (i = 0; i < p->size; ++i) {
        /* read both inputs before writing: out may alias in1 or in2 */
        const int32_t a = ((int32_t)in1[i] - p->in1_zp) * (1 << p->left_shift);
        const int32_t b = ((int32_t)in2[i] - p->in2_zp) * (1 << p->left_shift);
        const int32_t sum = tk_mbqm(a, p->in1_multiplier, p->in1_shift) + tk_mbqm(b, p->in2_multiplier, p->in2_shift);
        out[i] = tk_clamp_s8(tk_mbqm(sum, p->out_multiplier, p->out_shift) + p->out_zp, p->act_min, p->act_max);
    }
    return TK_OK;
}

static inline int8_t rescale_one(const tk_rescale_t *r, int32_t q, int32_t act_min, int32_t act_max)
{
    if (r->identity) {
        return tk_clamp_s8(q, act_min, act_max);
    }
    return tk_clamp_s8(tk_mbqm(q - r->in_zp, r->multiplier, r->shift) + r->out_zp, act_min, act_max);
}

int tk_requantize_s8(const tk_rescale_t *r, int32_t act_min, int32_t act_max, const int8_t *in, int32_t size,
                     int8_t *out)
{
    int32_t i;
    if (!r || !in || !out || size < 0) {
        return TK_ERR_ARG;
    }
    for (i = 0; i < size; ++i) {
        out[i] = rescale_one(r, in[i], act_min, act_max);
    }
    return TK_OK;
}

int tk_concat_s8(const int8_t *const *inputs, const int32_t *channels, const int32_t *factors,
                 const tk_rescale_t *rescale, int32_t n_inputs, int32_t out_h, int32_t out_w, int32_t act_min,
                 int32_t act_max, int8_t *out)
{
    int32_t y, x, i, c;
    if (!inputs || !channels || !rescale || !out || n_inputs <= 0 || out_h <= 0 || out_w <= 0) {
        return TK_ERR_ARG;
    }
    for (i = 0; i < n_inputs; ++i) {
        if (!inputs[i] || channels[i] <= 0 ||
            (factors && (factors[2 * i] <= 0 || factors[2 * i + 1] <= 0 || out_h % factors[2 * i] != 0 ||
                         out_w % factors[2 * i + 1] != 0))) {
            return TK_ERR_ARG;
        }
    }
    for (y = 0; y < out_h; ++y) {
        for (x = 0; x < out_w; ++x) {
            for (i = 0; i < n_inputs; ++i) {
                const int32_t fh = factors ? factors[2 * i] : 1, fw = factors ? factors[2 * i + 1] : 1;
                const int8_t *src = inputs[i] + ((y / fh) * (out_w / fw) + x / fw) * channels[i];
                const tk_rescale_t *r = &rescale[i];
                for (c = 0; c < channels[i]; ++c) {
                    *out++ = rescale_one(r, src[c], act_min, act_max);
                }
            }
        }
    }
    return TK_OK;
}

int tk_upsample_nearest_s8(const int8_t *in, tk_shape_t s, int32_t factor_h, int32_t factor_w, int8_t *out)
{
    int32_t oy, ox;
    if (!in || !out || factor_h <= 0 || factor_w <= 0 || s.h <= 0 || s.w <= 0 || s.c <= 0) {
        return TK_ERR_ARG;
    }
    for (oy = 0; oy < s.h * factor_h; ++oy) {
        const int8_t *row = in + (oy / factor_h) * s.w * s.c;
        for (ox = 0; ox < s.w * factor_w; ++ox) {
            memcpy(out, row + (ox / factor_w) * s.c, (size_t)s.c);
            out += s.c;
        }
    }
    return TK_OK;
}

int tk_pad_s8(const int8_t *in, tk_shape_t s, int32_t top, int32_t left, int32_t bottom, int32_t right, int8_t value,
              int8_t *out)
{
    int32_t y;
    const int32_t out_w = s.w + left + right;
    if (!in || !out || top < 0 || left < 0 || bottom < 0 || right < 0 || s.h <= 0 || s.w <= 0 || s.c <= 0) {
        return TK_ERR_ARG;
    }
    memset(out, value, (size_t)(top * out_w * s.c));
    out += top * out_w * s.c;
    for (y = 0; y < s.h; ++y) {
        memset(out, value, (size_t)(left * s.c));
        out += left * s.c;
        memcpy(out, in + y * s.w * s.c, (size_t)(s.w * s.c));
        out += s.w * s.c;
        memset(out, value, (size_t)(right * s.c));
        out += right * s.c;
    }
    memset(out, value, (size_t)(bottom * out_w * s.c));
    return TK_OK;
}
