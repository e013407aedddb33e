/* On-device anonymization pipeline (see tk_frame.h). Integer-only twin of
 * toolkit/onboard/reference.py: keep the two in step, line by line where it matters. Portable C99. */
#include "tk_frame.h"

#include <string.h>

#include "tk_fixedpoint.h"

#define KP TK_FRAME_KEYPOINTS
#define NOSE 0
#define L_EYE 1
#define R_EYE 2
#define L_EAR 3
#define R_EAR 4
#define L_SH 5
#define R_SH 6
#define STUDENT_IN_CH 14

/* ---- integer helpers -------------------------------------------------------------------------------- */

int64_t tk_rshr(int64_t x, int n) {
    const int64_t half = (int64_t)1 << (n - 1);
    /* only non-negative values are shifted: no implementation-defined behaviour */
    return x >= 0 ? (x + half) >> n : -((-x + half) >> n);
}

int64_t tk_div_round(int64_t num, int64_t den) {
    int64_t q = ((num >= 0 ? num : -num) * 2 + den) / (2 * den);
    return num >= 0 ? q : -q;
}

int64_t tk_floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

int64_t tk_ceil_div(int64_t a, int64_t b) { return -tk_floor_div(-a, b); }

uint32_t tk_isqrt(uint64_t n) {
    uint64_t r = 0, bit = (uint64_t)1 << 62;
    while (bit > n) bit >>= 2;
    while (bit) {
        if (n >= r + bit) {
            n -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    return (uint32_t)r;
}

uint32_t tk_xorshift32(uint32_t *state) {
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

uint32_t tk_frame_seed_state(uint32_t seed) {
    uint32_t s = seed ^ 0x9E3779B9u;
    return s ? s : 1u;
}

int32_t tk_gauss12_q16(uint32_t *state) {
    int32_t sum = 0;
    int i;
    for (i = 0; i < 12; i++) sum += (int32_t)(tk_xorshift32(state) >> 16);
    return sum - 6 * 65536;
}

/* ---- memory ----------------------------------------------------------------------------------------- */

static uint32_t align16(uint32_t n) { return (n + 15u) & ~15u; }

uint32_t tk_frame_bytes(const tk_pipeline_t *p) { return (uint32_t)p->frame_h * (uint32_t)p->frame_w * 3u; }

uint32_t tk_frame_arena_bytes(const tk_pipeline_t *p) {
    uint32_t n = p->pose->arena_size, k;
    for (k = 0; k < p->num_steps; k++)
        if (p->steps[k].model->arena_size > n) n = p->steps[k].model->arena_size;
    if (p->verifier && p->verifier->arena_size > n) n = p->verifier->arena_size;
    return n;
}

uint32_t tk_frame_in_bytes(const tk_pipeline_t *p) {
    uint32_t n = p->pose->input_size, k;
    for (k = 0; k < p->num_steps; k++)
        if (p->steps[k].model->input_size > n) n = p->steps[k].model->input_size;
    if (p->verifier && p->verifier->input_size > n) n = p->verifier->input_size;
    return n;
}

uint32_t tk_frame_out_bytes(const tk_pipeline_t *p) {
    uint32_t n = p->pose->output_size, k;
    for (k = 0; k < p->num_steps; k++)
        if (p->steps[k].model->output_size > n) n = p->steps[k].model->output_size;
    if (p->verifier && p->verifier->output_size > n) n = p->verifier->output_size;
    return n;
}

/* x_t (int32 Q16), crop pixels, known mask, per-keypoint Gaussian factors gy/gx (int32 Q15) */
uint32_t tk_frame_scratch_bytes(const tk_pipeline_t *p) {
    uint32_t S = (uint32_t)p->size;
    return align16(S * S * 3u * 4u) + align16(S * S * 3u) + align16(S * S) + align16(KP * 2u * S * 4u);
}

static int shape_is(const int32_t *s, int32_t n, int32_t h, int32_t w, int32_t c) {
    return s[0] == n && s[1] == h && s[2] == w && s[3] == c;
}

int tk_frame_check(const tk_pipeline_t *p) {
    uint32_t k;
    int32_t S;
    if (!p || !p->pose || p->frame_h < 1 || p->frame_w < 1 || p->heatmap_stride < 1) return TK_FRAME_BAD_CONFIG;
    if (!shape_is(p->pose->input_shape, 1, p->frame_h, p->frame_w, 3)) return TK_FRAME_BAD_CONFIG;
    if (!shape_is(p->pose->output_shape, 1, p->frame_h / p->heatmap_stride, p->frame_w / p->heatmap_stride,
                  p->multi_person ? TK_FRAME_MULTI_CHANNELS : KP))
        return TK_FRAME_BAD_CONFIG;
    if (p->multi_person && (!p->offset_q8 || p->max_faces < 1 || p->max_faces > TK_FRAME_MAX_FACES || p->center_min < 1))
        return TK_FRAME_BAD_CONFIG;
    if (p->verifier && (!p->verifier_input_lut || p->verifier_stride < 1 || p->frame_h % p->verifier_stride ||
                        p->frame_w % p->verifier_stride ||
                        !shape_is(p->verifier->input_shape, 1, p->frame_h, p->frame_w, 3) ||
                        !shape_is(p->verifier->output_shape, 1, p->frame_h / p->verifier_stride,
                                  p->frame_w / p->verifier_stride, 1)))
        return TK_FRAME_BAD_CONFIG;
    S = p->size;
    if (S < 1 || S > 1024 || p->num_steps < 1 || p->num_steps > TK_FRAME_MAX_STEPS || !p->gauss_len)
        return TK_FRAME_BAD_CONFIG;
    for (k = 0; k < p->num_steps; k++) {
        const tk_model_t *m = p->steps[k].model;
        if (!m || !shape_is(m->input_shape, 1, S, S, STUDENT_IN_CH) || !shape_is(m->output_shape, 1, S, S, 3))
            return TK_FRAME_BAD_CONFIG;
    }
    return 0;
}

/* ---- stages ----------------------------------------------------------------------------------------- */

/* Twin of toolkit.pose.model.decode_heatmaps_int8 on the NHWC heatmaps. */
static void decode_heatmaps(const tk_pipeline_t *p, const int8_t *hm, tk_frame_face_t *res) {
    const int32_t H = p->pose->output_shape[1], W = p->pose->output_shape[2];
    const int32_t zp = p->heatmap_zero_point, stride = p->heatmap_stride;
    int k;
    for (k = 0; k < KP; k++) {
        int32_t i, best = -129, bi = 0, iy, ix, dy, dx;
        int64_t s = 0, sx = 0, sy = 0, ox = 0, oy = 0;
        for (i = 0; i < H * W; i++) {
            if (hm[i * KP + k] > best) { /* strict: the first maximum in raster order */
                best = hm[i * KP + k];
                bi = i;
            }
        }
        iy = bi / W;
        ix = bi % W;
        for (dy = -1; dy <= 1; dy++) {
            for (dx = -1; dx <= 1; dx++) {
                int32_t y = iy + dy, x = ix + dx, w;
                if (y < 0 || y >= H || x < 0 || x >= W) continue;
                w = hm[(y * W + x) * KP + k] - zp;
                if (w < 0) w = 0;
                s += w;
                sx += (int64_t)w * dx;
                sy += (int64_t)w * dy;
            }
        }
        if (s) {
            ox = tk_div_round(256 * sx, s);
            oy = tk_div_round(256 * sy, s);
        }
        res->peak[k] = (int8_t)best;
        res->visible[k] = (uint8_t)(best - zp >= p->visible_min);
        res->kp_q8[k][0] = (int32_t)((2 * ix + 1) * stride * 128 + ox * stride);
        res->kp_q8[k][1] = (int32_t)((2 * iy + 1) * stride * 128 + oy * stride);
    }
}

/* Twin of reference.decode_centers_int8: the next person at or after cell *cell (raster order), written to
 * f; returns 0 when there is none. A person is a 3x3 local maximum of the centre channel at or above
 * center_min: strictly above its neighbours before it in raster order, at least its neighbours after it. */
static int next_person(const tk_pipeline_t *p, const int8_t *out, int32_t *cell, tk_frame_face_t *f) {
    const int32_t H = p->pose->output_shape[1], W = p->pose->output_shape[2], C = TK_FRAME_MULTI_CHANNELS;
    const int32_t zp = p->heatmap_zero_point, stride = p->heatmap_stride;
    for (; *cell < H * W; (*cell)++) {
        const int32_t iy = *cell / W, ix = *cell % W, v = out[*cell * C];
        int32_t dy, dx, k, peak = 1;
        if (v - zp < p->center_min) continue;
        for (dy = -1; dy <= 1 && peak; dy++) {
            for (dx = -1; dx <= 1; dx++) {
                int32_t y = iy + dy, x = ix + dx, u, before = dy < 0 || (dy == 0 && dx < 0);
                if ((dy == 0 && dx == 0) || y < 0 || y >= H || x < 0 || x >= W) continue;
                u = out[(y * W + x) * C];
                if (u > v || (before && u == v)) {
                    peak = 0;
                    break;
                }
            }
        }
        if (!peak) continue;
        for (k = 0; k < KP; k++) {
            const int8_t *o = out + *cell * C;
            f->peak[k] = o[1 + k];
            f->visible[k] = (uint8_t)(o[1 + k] - zp >= p->visible_min);
            f->kp_q8[k][0] = (2 * ix + 1) * stride * 128 + p->offset_q8[o[1 + KP + 2 * k] + 128];
            f->kp_q8[k][1] = (2 * iy + 1) * stride * 128 + p->offset_q8[o[1 + KP + 2 * k + 1] + 128];
        }
        (*cell)++;
        return 1;
    }
    return 0;
}

static int64_t kp_dist(const tk_frame_face_t *r, int a, int b) {
    int64_t dx = (int64_t)r->kp_q8[a][0] - r->kp_q8[b][0], dy = (int64_t)r->kp_q8[a][1] - r->kp_q8[b][1];
    return tk_isqrt((uint64_t)(dx * dx + dy * dy));
}

/* Twin of reference.head_scale: max(eye dist, ear dist, shoulder dist / 4, 8 px), pairs both visible. */
static int64_t head_scale(const tk_frame_face_t *r) {
    int64_t s = 8 * 256, v;
    if (r->visible[L_EYE] && r->visible[R_EYE] && (v = kp_dist(r, L_EYE, R_EYE)) > s) s = v;
    if (r->visible[L_EAR] && r->visible[R_EAR] && (v = kp_dist(r, L_EAR, R_EAR)) > s) s = v;
    if (r->visible[L_SH] && r->visible[R_SH] && (v = kp_dist(r, L_SH, R_SH) / 4) > s) s = v;
    return s;
}

/* Twin of reference.head_gate: nonzero when the keypoints can be one head (nose and an eye visible, every
 * visible eye / ear / shoulder within 1 / 1.5 / 4 head scales of the nose, compared squared). */
static int head_plausible(const tk_frame_face_t *r) {
    static const int32_t num[KP] = {0, 1, 1, 3, 3, 4, 4}, den[KP] = {1, 1, 1, 2, 2, 1, 1};
    int64_t s, s2;
    int k;
    if (!r->visible[NOSE] || !(r->visible[L_EYE] || r->visible[R_EYE])) return 0;
    s = head_scale(r);
    s2 = s * s;
    for (k = L_EYE; k < KP; k++) {
        int64_t dx = (int64_t)r->kp_q8[k][0] - r->kp_q8[NOSE][0], dy = (int64_t)r->kp_q8[k][1] - r->kp_q8[NOSE][1];
        if (r->visible[k] && (int64_t)den[k] * den[k] * (dx * dx + dy * dy) > (int64_t)num[k] * num[k] * s2) return 0;
    }
    return 1;
}

static int64_t abs64(int64_t v) { return v < 0 ? -v : v; }

/* Twin of reference.face_box (cover_head) and reference.crop_box. */
static void face_and_crop_box(tk_frame_face_t *r) {
    int64_t eye = kp_dist(r, L_EYE, R_EYE);
    int64_t ear = (r->visible[L_EAR] && r->visible[R_EAR]) ? kp_dist(r, L_EAR, R_EAR) : 0;
    int64_t sh = (r->visible[L_SH] && r->visible[R_SH]) ? kp_dist(r, L_SH, R_SH) : 0;
    int64_t side = 4 * 256, v, nx = r->kp_q8[NOSE][0], ny = r->kp_q8[NOSE][1], s, reach = 0;
    int k;
    v = tk_div_round(12 * ear, 10);
    if (v > side) side = v;
    v = tk_div_round(21 * eye, 10);
    if (v > side) side = v;
    v = tk_div_round(45 * sh, 100);
    if (v > side) side = v;
    /* grow (centred on the nose) to hold every visible eye and ear with a quarter head scale of margin */
    for (k = L_EYE; k <= R_EAR; k++) {
        if (!r->visible[k]) continue;
        if ((v = abs64(r->kp_q8[k][0] - nx)) > reach) reach = v;
        if ((v = abs64(r->kp_q8[k][1] - ny)) > reach) reach = v;
    }
    v = 2 * (reach + head_scale(r) / 4);
    if (v > side) side = v;
    r->box[0] = (int32_t)tk_floor_div(2 * nx - side, 512);
    r->box[1] = (int32_t)tk_floor_div(2 * ny - side, 512);
    r->box[2] = (int32_t)tk_ceil_div(2 * nx + side, 512);
    r->box[3] = (int32_t)tk_ceil_div(2 * ny + side, 512);
    s = r->box[2] - r->box[0];
    if (r->box[3] - r->box[1] > s) s = r->box[3] - r->box[1];
    r->crop[0] = (int32_t)tk_floor_div((int64_t)r->box[0] + r->box[2] - 2 * s + 1, 2);
    r->crop[1] = (int32_t)tk_floor_div(5 * ((int64_t)r->box[1] + r->box[3]) - 9 * s + 5, 10);
    r->crop[2] = (int32_t)(2 * s);
}

static int32_t clampi(int64_t v, int32_t lo, int32_t hi) { return (int32_t)(v < lo ? lo : v > hi ? hi : v); }

/* Crop pixel j covers [c0 + j side/S, c0 + (j+1) side/S): unknown when that overlaps [b0, b1). */
static int overlaps(int64_t c0, int64_t side, int64_t S, int64_t j, int64_t b0, int64_t b1) {
    return c0 * S + j * side < b1 * S && c0 * S + (j + 1) * side > b0 * S;
}

static void gauss_1d(const tk_pipeline_t *p, int64_t k_q4, int32_t *g) {
    int32_t j;
    for (j = 0; j < p->size; j++) {
        int64_t d = (2 * (int64_t)j + 1) * 8 - k_q4;
        if (d < 0) d = -d;
        g[j] = d < (int64_t)p->gauss_len ? p->gauss_q15[d] : 0;
    }
}

typedef struct {
    int32_t *x;      /* S*S*3 Q16 */
    uint8_t *img;    /* S*S*3 crop pixels */
    uint8_t *known;  /* S*S */
    int32_t *gy;     /* KP*S */
    int32_t *gx;     /* KP*S */
} scratch_t;

static void layout_scratch(const tk_pipeline_t *p, uint8_t *base, scratch_t *sc) {
    uint32_t S = (uint32_t)p->size;
    sc->x = (int32_t *)(void *)base;
    base += align16(S * S * 3u * 4u);
    sc->img = base;
    base += align16(S * S * 3u);
    sc->known = base;
    base += align16(S * S);
    sc->gy = (int32_t *)(void *)base;
    sc->gx = sc->gy + KP * S;
}

/* ---- colour split (twins of reference.luma_u8, skin_chroma, colour_pixels) ------------------------------ */

static int32_t luma_u8(const uint8_t *px) {
    return (int32_t)((77 * (uint32_t)px[0] + 150 * (uint32_t)px[1] + 29 * (uint32_t)px[2] + 128) >> 8);
}

/* Mean skin chroma of the known crop pixels (default when too few are skin), then the crop in gray. */
static void split_colour(const tk_pipeline_t *p, tk_frame_face_t *r, const scratch_t *sc) {
    const int32_t n = p->size * p->size;
    int64_t sum_cr = 0, sum_cb = 0, skin = 0;
    int32_t i;
    for (i = 0; i < n; i++) {
        const uint8_t *px = sc->img + i * 3;
        int32_t y = luma_u8(px);
        int64_t cr = 128 + tk_rshr(183 * (int64_t)(px[0] - y), 8), cb = 128 + tk_rshr(144 * (int64_t)(px[2] - y), 8);
        if (sc->known[i] && cr >= TK_FRAME_SKIN_CR_MIN && cr <= TK_FRAME_SKIN_CR_MAX && cb >= TK_FRAME_SKIN_CB_MIN &&
            cb <= TK_FRAME_SKIN_CB_MAX) {
            sum_cr += cr;
            sum_cb += cb;
            skin++;
        }
    }
    r->chroma[0] = skin >= TK_FRAME_SKIN_MIN ? (int32_t)tk_div_round(sum_cr, skin) : TK_FRAME_SKIN_DEFAULT_CR;
    r->chroma[1] = skin >= TK_FRAME_SKIN_MIN ? (int32_t)tk_div_round(sum_cb, skin) : TK_FRAME_SKIN_DEFAULT_CB;
    for (i = 0; i < n; i++) {
        uint8_t *px = sc->img + i * 3;
        px[0] = px[1] = px[2] = (uint8_t)luma_u8(px);
    }
}

static uint8_t clamp_u8(int64_t v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

/* Crop, mask, keypoint-map factors and x_init (twin of reference.student_inputs). */
static void prepare_crop(const tk_pipeline_t *p, const uint8_t *frame, uint32_t seed, tk_frame_face_t *r,
                         const scratch_t *sc) {
    const int32_t S = p->size, H = p->frame_h, W = p->frame_w;
    const int64_t cx0 = r->crop[0], cy0 = r->crop[1], side = r->crop[2];
    uint32_t state = tk_frame_seed_state(seed);
    int32_t i, j, c, k;
    for (i = 0; i < S; i++) {
        int32_t fy = clampi(cy0 + ((2 * (int64_t)i + 1) * side) / (2 * S), 0, H - 1);
        int uy = overlaps(cy0, side, S, i, r->box[1], r->box[3]);
        for (j = 0; j < S; j++) {
            int32_t fx = clampi(cx0 + ((2 * (int64_t)j + 1) * side) / (2 * S), 0, W - 1);
            int ux = overlaps(cx0, side, S, j, r->box[0], r->box[2]);
            memcpy(sc->img + (i * S + j) * 3, frame + ((size_t)fy * (size_t)W + (size_t)fx) * 3u, 3);
            sc->known[i * S + j] = (uint8_t)!(uy && ux);
        }
    }
    if (p->luma_student) split_colour(p, r, sc);
    for (k = 0; k < KP; k++) {
        if (!r->visible[k]) {
            memset(sc->gy + k * S, 0, (size_t)S * sizeof(int32_t));
            memset(sc->gx + k * S, 0, (size_t)S * sizeof(int32_t));
            continue;
        }
        gauss_1d(p, tk_div_round(((int64_t)r->kp_q8[k][0] - 256 * cx0) * S, side * 16), sc->gx + k * S);
        gauss_1d(p, tk_div_round(((int64_t)r->kp_q8[k][1] - 256 * cy0) * S, side * 16), sc->gy + k * S);
    }
    for (i = 0; i < S * S; i++) {
        for (c = 0; c < 3; c++) {
            int32_t z = tk_gauss12_q16(&state);
            int32_t *x = &sc->x[i * 3 + c];
            if (sc->known[i]) {
                int64_t img = p->pixel_q16[sc->img[i * 3 + c]];
                *x = (int32_t)tk_rshr((int64_t)p->sqrt_a0_q14 * img + (int64_t)p->sqrt_1ma0_q14 * z, 14);
            } else {
                *x = z;
            }
        }
    }
}

static int8_t to_input(const tk_frame_step_t *st, int32_t v) {
    return tk_clamp_s8(tk_mbqm(v, st->in_multiplier, st->in_shift) + st->in_zero_point, -128, 127);
}

/* One student step: input [x, img*known, known, maps], invoke, DDIM update (twin of reference.run_student). */
static int student_step(const tk_pipeline_t *p, uint32_t k, const tk_frame_mem_t *mem, const tk_frame_face_t *r,
                        const scratch_t *sc) {
    const tk_frame_step_t *st = &p->steps[k];
    const int32_t S = p->size;
    int32_t i, j, c, kk;
    int rc;
    for (i = 0; i < S; i++) {
        for (j = 0; j < S; j++) {
            const int32_t px = i * S + j;
            int8_t *in = mem->model_in + px * STUDENT_IN_CH;
            const int known = sc->known[px];
            for (c = 0; c < 3; c++) {
                in[c] = to_input(st, sc->x[px * 3 + c]);
                in[3 + c] = to_input(st, known ? p->pixel_q16[sc->img[px * 3 + c]] : 0);
            }
            in[6] = to_input(st, known ? 65536 : 0);
            for (kk = 0; kk < KP; kk++) {
                int32_t m = r->visible[kk] ? (int32_t)tk_rshr((int64_t)sc->gy[kk * S + i] * sc->gx[kk * S + j], 15) : 0;
                in[7 + kk] = to_input(st, 2 * m);
            }
        }
    }
    rc = st->model->invoke(mem->model_in, mem->model_out, mem->arena);
    if (rc != 0) return rc;
    if (k + 1 < p->num_steps) {
        for (i = 0; i < S * S; i++) {
            for (c = 0; c < 3; c++) {
                int64_t x0 = sc->known[i] ? p->pixel_q16[sc->img[i * 3 + c]] : st->x0_q16[mem->model_out[i * 3 + c] + 128];
                sc->x[i * 3 + c] = (int32_t)tk_rshr((int64_t)st->c1_q14 * sc->x[i * 3 + c] + (int64_t)st->c2_q14 * x0, 14);
            }
        }
    }
    return 0;
}

/* Face box pixels (clipped) <- nearest generated crop pixel (twin of reference.paste), with luma_student its
 * luma in the face's chroma (twin of reference.colour_pixels). */
static void paste(const tk_pipeline_t *p, uint8_t *frame, const int8_t *gen, const tk_frame_face_t *r) {
    const int32_t S = p->size, H = p->frame_h, W = p->frame_w;
    const int64_t cx0 = r->crop[0], cy0 = r->crop[1], side = r->crop[2];
    int32_t x0 = r->box[0] < 0 ? 0 : r->box[0], y0 = r->box[1] < 0 ? 0 : r->box[1];
    int32_t x1 = r->box[2] > W ? W : r->box[2], y1 = r->box[3] > H ? H : r->box[3];
    const int64_t dr = r->chroma[0] - 128, db = r->chroma[1] - 128;
    int32_t fy, fx, c;
    for (fy = y0; fy < y1; fy++) {
        int32_t iy = clampi(tk_floor_div((2 * (fy - cy0) + 1) * S, 2 * side), 0, S - 1);
        for (fx = x0; fx < x1; fx++) {
            int32_t ix = clampi(tk_floor_div((2 * (fx - cx0) + 1) * S, 2 * side), 0, S - 1);
            uint8_t *out = frame + ((size_t)fy * (size_t)W + (size_t)fx) * 3u;
            for (c = 0; c < 3; c++) out[c] = p->out_pixel_lut[gen[(iy * S + ix) * 3 + c] + 128];
            if (p->luma_student) {
                int64_t y = luma_u8(out);
                out[0] = clamp_u8(y + tk_rshr(359 * dr, 8));
                out[1] = clamp_u8(y - tk_rshr(183 * dr + 88 * db, 8));
                out[2] = clamp_u8(y + tk_rshr(454 * db, 8));
            }
        }
    }
}

/* ---- the pipeline ------------------------------------------------------------------------------------ */

typedef struct {
    tk_clock_t now;
    uint64_t last;
    tk_frame_result_t *res;
} stopwatch_t;

/* Adds the time since the last lap to stage `stage` (stages repeat per face: their ticks add up). */
static void lap(stopwatch_t *sw, uint32_t stage) {
    uint64_t t = sw->now ? sw->now() : 0;
    if (stage < TK_FRAME_MAX_STAGES) {
        sw->res->ticks[stage] += t - sw->last;
        if (sw->res->stages < stage + 1) sw->res->stages = stage + 1;
    }
    sw->last = t;
}

/* The pose input (a copy of the raw frame) and the crop (the raw face) must not outlive the call, whatever
 * reuses this memory next. */
static void scrub(const tk_pipeline_t *p, const tk_frame_mem_t *mem) {
    memset(mem->model_in, 0, tk_frame_in_bytes(p));
    memset(mem->scratch, 0, tk_frame_scratch_bytes(p));
}

static int fail(const tk_pipeline_t *p, uint8_t *frame, const tk_frame_mem_t *mem, tk_frame_result_t *res,
                int status) {
    memset(frame, 0, tk_frame_bytes(p)); /* fail closed: nothing of the input frame stays readable */
    scrub(p, mem);
    res->status = status;
    return status;
}

static int run_pose(const tk_pipeline_t *p, const uint8_t *frame, const tk_frame_mem_t *mem) {
    uint32_t i, n = tk_frame_bytes(p);
    for (i = 0; i < n; i++) mem->model_in[i] = p->pose_input_lut[frame[i]];
    return p->pose->invoke(mem->model_in, mem->model_out, mem->arena);
}

/* People in the pose output -> res->face[] (at most TK_FRAME_MAX_FACES kept), res->people counted. */
static void find_people(const tk_pipeline_t *p, const int8_t *out, tk_frame_result_t *res) {
    tk_frame_face_t f;
    int32_t cell = 0;
    if (!p->multi_person) { /* the single-person net always gives one keypoint set; the gate judges it */
        decode_heatmaps(p, out, &res->face[0]);
        res->people = res->faces = 1;
        return;
    }
    while (next_person(p, out, &cell, &f)) {
        if (res->people < TK_FRAME_MAX_FACES) res->face[res->people] = f;
        res->people++;
    }
    res->faces = res->people < TK_FRAME_MAX_FACES ? res->people : TK_FRAME_MAX_FACES;
}

static int nose_in_box(const tk_frame_face_t *f, const int32_t *box) {
    int32_t x = (int32_t)tk_floor_div(f->kp_q8[NOSE][0], 256), y = (int32_t)tk_floor_div(f->kp_q8[NOSE][1], 256);
    return box[0] <= x && x < box[2] && box[1] <= y && y < box[3];
}

/* Twin of reference.verify_output on the pose output of the anonymized frame: noses outside every box. */
static uint32_t noses_left(const tk_pipeline_t *p, const int8_t *out, const tk_frame_result_t *res) {
    tk_frame_face_t f;
    int32_t cell = 0;
    uint32_t left = 0, i;
    for (;;) {
        int covered = 0;
        if (p->multi_person) {
            if (!next_person(p, out, &cell, &f)) break;
        } else {
            if (cell++) break;
            decode_heatmaps(p, out, &f);
            if (!head_plausible(&f)) break;
        }
        for (i = 0; i < res->faces; i++) covered |= nose_in_box(&f, res->face[i].box);
        left += (uint32_t)!covered;
    }
    return left;
}

/* Twin of reference.verify_heads: the verifier on the anonymized frame; cells lit outside every box. */
static int verifier_cells_left(const tk_pipeline_t *p, const uint8_t *frame, const tk_frame_mem_t *mem,
                               const tk_frame_result_t *res, uint32_t *left) {
    const int32_t s = p->verifier_stride, H = p->frame_h / s, W = p->frame_w / s;
    uint32_t i, n = tk_frame_bytes(p);
    int32_t iy, ix;
    int rc;
    for (i = 0; i < n; i++) mem->model_in[i] = p->verifier_input_lut[frame[i]];
    rc = p->verifier->invoke(mem->model_in, mem->model_out, mem->arena);
    if (rc != 0) return rc;
    *left = 0;
    for (iy = 0; iy < H; iy++) {
        for (ix = 0; ix < W; ix++) {
            int covered = 0;
            if (mem->model_out[iy * W + ix] < p->verifier_min) continue;
            for (i = 0; i < res->faces && !covered; i++) {
                const int32_t *b = res->face[i].box;
                covered = b[0] <= ix * s && ix * s + s <= b[2] && b[1] <= iy * s && iy * s + s <= b[3];
            }
            *left += (uint32_t)!covered;
        }
    }
    return 0;
}

int tk_frame_anonymize(const tk_pipeline_t *p, uint8_t *frame, uint32_t seed, const tk_frame_mem_t *mem,
                       tk_clock_t now, tk_frame_result_t *res) {
    stopwatch_t sw;
    scratch_t sc;
    uint32_t i, k, n;
    const uint32_t st_crop = 3, st_paste = 4 + p->num_steps, st_verify = 5 + p->num_steps, st_heads = 6 + p->num_steps;
    memset(res, 0, sizeof *res);
    sw.now = now;
    sw.res = res;
    sw.last = now ? now() : 0;
    if (tk_frame_check(p) != 0) { /* the buffers cannot be trusted to have the sizes: wipe the frame only */
        memset(frame, 0, (size_t)(p && p->frame_h > 0 && p->frame_w > 0 ? tk_frame_bytes(p) : 0u));
        res->status = TK_FRAME_BAD_CONFIG;
        return TK_FRAME_BAD_CONFIG;
    }
    n = tk_frame_bytes(p);
    for (i = 0; i < n; i++) mem->model_in[i] = p->pose_input_lut[frame[i]];
    lap(&sw, 0);
    if (p->pose->invoke(mem->model_in, mem->model_out, mem->arena) != 0) return fail(p, frame, mem, res, TK_FRAME_MODEL_FAILED);
    lap(&sw, 1);
    find_people(p, mem->model_out, res);
    if (res->people == 0) {
        lap(&sw, 2);
        return fail(p, frame, mem, res, TK_FRAME_NO_FACE);
    }
    if (p->multi_person && res->people > p->max_faces) { /* more heads than the device replaces: fail closed */
        lap(&sw, 2);
        return fail(p, frame, mem, res, TK_FRAME_TOO_MANY_FACES);
    }
    for (i = 0; i < res->faces; i++) {
        if (!head_plausible(&res->face[i])) { /* no nose, no eye, or keypoints that cannot be one head */
            lap(&sw, 2);
            return fail(p, frame, mem, res, TK_FRAME_NO_FACE);
        }
    }
    for (i = 0; i < res->faces; i++) face_and_crop_box(&res->face[i]);
    lap(&sw, 2);
    layout_scratch(p, mem->scratch, &sc);
    for (i = 0; i < res->faces; i++) { /* each face on the frame as the faces before it left it */
        prepare_crop(p, frame, seed + i, &res->face[i], &sc);
        lap(&sw, st_crop);
        for (k = 0; k < p->num_steps; k++) {
            if (student_step(p, k, mem, &res->face[i], &sc) != 0) return fail(p, frame, mem, res, TK_FRAME_MODEL_FAILED);
            lap(&sw, 4 + k);
        }
        paste(p, frame, mem->model_out, &res->face[i]);
        lap(&sw, st_paste);
    }
    scrub(p, mem);
    lap(&sw, st_paste);
    if (p->verify) {
        if (run_pose(p, frame, mem) != 0) return fail(p, frame, mem, res, TK_FRAME_MODEL_FAILED);
        res->verify_left = noses_left(p, mem->model_out, res);
        scrub(p, mem);
        lap(&sw, st_verify);
        if (res->verify_left) return fail(p, frame, mem, res, TK_FRAME_VERIFY_FAILED);
    }
    lap(&sw, st_verify);
    if (p->verifier) {
        if (verifier_cells_left(p, frame, mem, res, &res->verifier_left) != 0)
            return fail(p, frame, mem, res, TK_FRAME_MODEL_FAILED);
        scrub(p, mem);
        lap(&sw, st_heads);
        if (res->verifier_left) return fail(p, frame, mem, res, TK_FRAME_VERIFY_FAILED);
    }
    res->status = TK_FRAME_OK;
    return TK_FRAME_OK;
}
