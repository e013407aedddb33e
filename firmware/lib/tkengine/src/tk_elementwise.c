/* Add, requantize, concat, nearest upsample and pad (see tk_kernels.h for the semantics). */
#include <string.h>

#include "tk_fixedpoint.h"
#include "tk_kernels.h"

int tk_add_s8(const tk_add_params_t *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    /* an int8 input takes 256 values: each input's rescaled value is tabulated once (2 x 1 KB of stack)
     * instead of costing two fixed-point multiplies per element */
    int32_t table1[256], table2[256];
    const int32_t *const t1 = table1 + 128, *const t2 = table2 + 128; /* indexed by the int8 value */
    int32_t i;
    if (!p || !in1 || !in2 || !out || p->size < 0 || p->left_shift < 0 || p->left_shift > 22) {
        return TK_ERR_ARG;
    }
    for (i = -128; i < 128; ++i) {
        table1[i + 128] = tk_mbqm((i - p->in1_zp) * (1 << p->left_shift), p->in1_multiplier, p->in1_shift);
        table2[i + 128] = tk_mbqm((i - p->in2_zp) * (1 << p->left_shift), p->in2_multiplier, p->in2_shift);
    }
    {
        /* locals, not p->...: the int8 stores may alias the params, which would force a reload per element */
        const int32_t size = p->size, out_multiplier = p->out_multiplier, out_shift = p->out_shift;
        const int32_t out_zp = p->out_zp, act_min = p->act_min, act_max = p->act_max;
        for (i = 0; i < size; ++i) {
            /* read both inputs before writing: out may alias in1 or in2 */
            const int32_t sum = t1[in1[i]] + t2[in2[i]];
            out[i] = tk_clamp_s8(tk_mbqm(sum, out_multiplier, out_shift) + out_zp, act_min, act_max);
        }
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

/* rescale_one of all 256 int8 values, into table[0..255]; returns table + 128, indexed by the int8 value: per
 * element a table load instead of the arithmetic */
static const int8_t *rescale_table(const tk_rescale_t *r, int32_t act_min, int32_t act_max, int8_t *table)
{
    int32_t q;
    for (q = -128; q < 128; ++q) {
        table[q + 128] = rescale_one(r, q, act_min, act_max);
    }
    return table + 128;
}

int tk_requantize_s8(const tk_rescale_t *r, int32_t act_min, int32_t act_max, const int8_t *in, int32_t size,
                     int8_t *out)
{
    int8_t table[256];
    const int8_t *t;
    int32_t i;
    if (!r || !in || !out || size < 0) {
        return TK_ERR_ARG;
    }
    t = rescale_table(r, act_min, act_max, table);
    for (i = 0; i < size; ++i) {
        out[i] = t[in[i]];
    }
    return TK_OK;
}

int tk_concat_s8(const int8_t *const *inputs, const int32_t *channels, const int32_t *factors, const int8_t *tables,
                 int32_t n_inputs, int32_t out_h, int32_t out_w, int32_t row0, int32_t n_rows, int8_t *out)
{
    int32_t y, x, i, c, out_c = 0, c0 = 0;
    if (!inputs || !channels || !tables || !out || n_inputs <= 0 || out_h <= 0 || out_w <= 0 || row0 < 0 ||
        n_rows < 0 || row0 + n_rows > out_h) {
        return TK_ERR_ARG;
    }
    for (i = 0; i < n_inputs; ++i) {
        if (!inputs[i] || channels[i] <= 0 ||
            (factors && (factors[2 * i] <= 0 || factors[2 * i + 1] <= 0 || out_h % factors[2 * i] != 0 ||
                         out_w % factors[2 * i + 1] != 0))) {
            return TK_ERR_ARG;
        }
        out_c += channels[i];
    }
    /* one input at a time, into its channel range of every output pixel */
    for (i = 0; i < n_inputs; c0 += channels[i], ++i) {
        const int32_t fh = factors ? factors[2 * i] : 1, fw = factors ? factors[2 * i + 1] : 1, n = channels[i];
        const int8_t *const t = tables + i * 256 + 128; /* indexed by the int8 value */
        for (y = row0; y < row0 + n_rows; ++y) {
            for (x = 0; x < out_w; ++x) {
                const int8_t *src = inputs[i] + ((y / fh) * (out_w / fw) + x / fw) * n;
                int8_t *dst = out + ((y - row0) * out_w + x) * out_c + c0;
                for (c = 0; c < n; ++c) {
                    dst[c] = t[src[c]];
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
