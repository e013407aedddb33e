/* On-device anonymization of a camera frame ("anonymize at the sensor"):
 *
 *   frame (H x W x 3 uint8 RGB) -> pose model -> 7 keypoints per person -> for every person: face box ->
 *   crop to the student's S x S -> student steps (noise from a seeded PRNG) -> paste back into the face box
 *   -> verify: the pose model again on the output, no nose outside the replaced boxes
 *   -> verifier (when configured): an independent face-presence net on the output, no face cell outside the
 *      replaced boxes -> frame.
 *
 * Integer arithmetic only. The host reference `toolkit/onboard/reference.py` defines every step; every
 * constant that needs floats (LUTs, multipliers, coefficients) is computed on the host and emitted as C data
 * (`generated/pipeline_config.c`, written by `toolkit bench --pipeline`), so both agree bit for bit.
 * docs/firmware.md ("On-device pipeline") gives the arithmetic in full. Change both or neither.
 *
 * Fail closed: when no face is found (the head gate: nose and an eye visible, every visible eye / ear /
 * shoulder within 1 / 1.5 / 4 head scales of the nose), a person fails the gate, there are more people than
 * max_faces, the verify pass or the verifier sees a face left, or anything fails, the frame buffer is zeroed. The
 * copies of raw pixels it makes (the pose input, the crop) are zeroed before it returns, in every case. */
#ifndef TK_FRAME_H
#define TK_FRAME_H

#include <stdint.h>

#include "tk_model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TK_FRAME_KEYPOINTS 7
#define TK_FRAME_MAX_STEPS 8
/* Faces replaced per frame at most (toolkit.sensor.config.MAX_FACES): more people -> fail closed. */
#define TK_FRAME_MAX_FACES 4
/* Multi-person pose output: head centre, 7 visibilities, 14 offsets per cell (toolkit.pose.multi). */
#define TK_FRAME_MULTI_CHANNELS 22
/* Stages timed by tk_frame_anonymize, in this order: preprocess, pose, decode (+ face boxes), crop (+ maps,
 * noise), one per student step (input build + invoke + update), paste (+ scrubbing the raw copies), verify
 * (the pose net again on the output), heads (the independent verifier, when configured). crop, steps and
 * paste add up over the faces of the frame. */
#define TK_FRAME_MAX_STAGES (7 + TK_FRAME_MAX_STEPS)
/* Colour split of a gray-trained student (luma_student): skin = the context pixels whose YCrCb chroma lies in
 * these ranges; their mean chroma colours the face when at least TK_FRAME_SKIN_MIN of them are, else the
 * default. Twins of toolkit.diffusion.prior SKIN_CR, SKIN_CB, MIN_SKIN_PIXELS, DEFAULT_SKIN_CRCB. */
#define TK_FRAME_SKIN_CR_MIN 133
#define TK_FRAME_SKIN_CR_MAX 173
#define TK_FRAME_SKIN_CB_MIN 77
#define TK_FRAME_SKIN_CB_MAX 127
#define TK_FRAME_SKIN_MIN 12
#define TK_FRAME_SKIN_DEFAULT_CR 150
#define TK_FRAME_SKIN_DEFAULT_CB 112

enum {
    TK_FRAME_OK = 0,
    TK_FRAME_NO_FACE = 1,      /* no person, or the head gate refused one (no nose/eye, implausible head) */
    TK_FRAME_TOO_MANY_FACES = 2, /* more people than max_faces: frame wiped */
    TK_FRAME_VERIFY_FAILED = 3,  /* the pose net still finds a nose, or the verifier a face, outside the
                                    replaced boxes: frame wiped */
    TK_FRAME_BAD_CONFIG = -1,  /* shapes of the models do not fit the pipeline */
    TK_FRAME_MODEL_FAILED = -2 /* a network's invoke returned nonzero: frame wiped */
};

typedef struct {
    const tk_model_t *model;         /* `<student>_step<k>`: in (1,S,S,14), out (1,S,S,3) */
    int32_t in_multiplier, in_shift; /* Q16 value -> input LSB: in_zp + mbqm(v, multiplier, shift) */
    int32_t in_zero_point;
    const int32_t *x0_q16;           /* [256]: int8 output q (index q + 128) -> Q16 value */
    int32_t c1_q14, c2_q14;          /* DDIM update x' = c1 x + c2 x0 (unused on the last step) */
} tk_frame_step_t;

typedef struct {
    int32_t frame_h, frame_w;       /* frames are frame_h x frame_w x 3, HWC uint8 */
    const tk_model_t *pose;         /* in (1,H,W,3), out (1,H/stride,W/stride,7) heatmaps */
    const int8_t *pose_input_lut;   /* [256] uint8 pixel -> pose input */
    int32_t heatmap_zero_point;
    int32_t heatmap_stride;
    int32_t visible_min;            /* keypoint visible when peak - zero point >= visible_min */
    int32_t size;                   /* student crop side S */
    uint32_t num_steps;
    const tk_frame_step_t *steps;
    const int32_t *pixel_q16;       /* [256] uint8 pixel -> Q16 value in [-1, 1] */
    int32_t sqrt_a0_q14, sqrt_1ma0_q14;
    const uint16_t *gauss_q15;      /* exp(-d^2 / (2 sigma^2)) in Q15, d = index / 16 crop px */
    uint32_t gauss_len;
    const uint8_t *out_pixel_lut;   /* [256] last step's int8 output -> uint8 pixel */
    int32_t multi_person;           /* 0: 7 heatmaps, one person; 1: centres + offsets, up to max_faces */
    int32_t center_min;             /* multi: head centre when value - zero point >= center_min */
    const int32_t *offset_q8;       /* multi: [256] int8 offset (index q + 128) -> Q8 px */
    uint32_t max_faces;             /* multi: 1..TK_FRAME_MAX_FACES */
    int32_t verify;                 /* nonzero: pose net again on the output, no nose outside the boxes */
    /* The independent verifier (toolkit.pose.heads), NULL for none: in (1,H,W,3), out (1,H/s,W/s,1) with
     * s = verifier_stride; a cell whose output >= verifier_min and whose s x s pixels are not all inside one
     * replaced box is a face left: the frame fails closed. */
    const tk_model_t *verifier;
    const int8_t *verifier_input_lut; /* [256] uint8 pixel -> verifier input */
    int32_t verifier_stride;
    int32_t verifier_min;
    /* Nonzero: the student was trained on gray faces: it sees the crop in gray (Y of BT.601) and the face is
     * pasted with its own luma in the chroma of the context's skin (toolkit.onboard.reference.skin_chroma). */
    int32_t luma_student;
} tk_pipeline_t;

/* Buffers the caller provides (16-byte aligned): the models share one arena, one input and one output
 * buffer, sized by the tk_frame_*_bytes functions; scratch holds the crop, mask, maps and x_t. */
typedef struct {
    uint8_t *arena;
    int8_t *model_in;
    int8_t *model_out;
    uint8_t *scratch;
} tk_frame_mem_t;

typedef struct {
    int32_t kp_q8[TK_FRAME_KEYPOINTS][2];        /* keypoints, frame px * 256 */
    int8_t peak[TK_FRAME_KEYPOINTS];
    uint8_t visible[TK_FRAME_KEYPOINTS];
    int32_t box[4];                              /* face box x0, y0, x1, y1 (x1/y1 exclusive) */
    int32_t crop[3];                             /* crop box x0, y0, side */
    int32_t chroma[2];                           /* luma_student: Cr, Cb the face is pasted in */
} tk_frame_face_t;

typedef struct {
    int32_t status;                              /* TK_FRAME_* */
    uint32_t people;                             /* people the pose net found (may exceed the faces kept) */
    uint32_t faces;                              /* entries of face[] filled (keypoints; boxes when OK) */
    tk_frame_face_t face[TK_FRAME_MAX_FACES];
    uint32_t verify_left;                        /* noses found on the output outside every box */
    uint32_t verifier_left;                      /* verifier cells lit on the output outside every box */
    uint32_t stages;                             /* entries of ticks[] filled */
    uint64_t ticks[TK_FRAME_MAX_STAGES];
} tk_frame_result_t;

typedef uint64_t (*tk_clock_t)(void);

/* 0 when the models' shapes and the constants make a valid pipeline, else TK_FRAME_BAD_CONFIG. */
int tk_frame_check(const tk_pipeline_t *p);
uint32_t tk_frame_bytes(const tk_pipeline_t *p);
uint32_t tk_frame_arena_bytes(const tk_pipeline_t *p);
uint32_t tk_frame_in_bytes(const tk_pipeline_t *p);
uint32_t tk_frame_out_bytes(const tk_pipeline_t *p);
uint32_t tk_frame_scratch_bytes(const tk_pipeline_t *p);

/* Anonymizes `frame` in place with the noise of `seed`; `now` (may be NULL) times the stages.
 * Returns res->status. On anything but TK_FRAME_OK the frame is zeroed. */
int tk_frame_anonymize(const tk_pipeline_t *p, uint8_t *frame, uint32_t seed, const tk_frame_mem_t *mem,
                       tk_clock_t now, tk_frame_result_t *res);

/* Integer helpers (exposed for the unit tests; twins in toolkit/onboard/reference.py). */
int64_t tk_rshr(int64_t x, int n);            /* round(x / 2^n), half away from zero */
int64_t tk_div_round(int64_t num, int64_t den); /* num / den, half away from zero, den > 0 */
int64_t tk_floor_div(int64_t a, int64_t b);   /* b > 0 */
int64_t tk_ceil_div(int64_t a, int64_t b);    /* b > 0 */
uint32_t tk_isqrt(uint64_t n);                /* floor(sqrt(n)) */
uint32_t tk_xorshift32(uint32_t *state);
uint32_t tk_frame_seed_state(uint32_t seed);  /* PRNG state for a seed (never 0) */
int32_t tk_gauss12_q16(uint32_t *state);      /* Irwin-Hall(12) - 6 in Q16 */

#ifdef __cplusplus
}
#endif

#endif /* TK_FRAME_H */
