/* A hand-written pipeline for the protocol tests and the fuzzer: 16x16 frames, a "pose model" whose heatmaps
 * are the red channel sampled on a 4x4 grid (a bright frame has a face, a dark one has none) and a
 * two-step "student" at S = 8 that mixes its input channels (tests/test_sensor.py has the Python twin). Exercises every stage of tk_frame.c, the
 * shared buffers and the fail-closed path without a generated model. */
#include <stddef.h>

#include "tk_registry.h"

#define FH 16
#define HM 4
#define S 8

static int pose_invoke(const int8_t *in, int8_t *out, uint8_t *arena) {
    int cy, cx, k;
    (void)arena;
    for (cy = 0; cy < HM; cy++)
        for (cx = 0; cx < HM; cx++)
            for (k = 0; k < 7; k++) /* keypoint k looks at its own pixel of the 4x4 cell */
                out[(cy * HM + cx) * 7 + k] = in[((4 * cy + k % 4) * FH + 4 * cx + k / 4) * 3];
    return 0;
}

/* Mixes every input group into the output (x_t, the known mask, a keypoint map and the right-hand
 * neighbour's x_t), so a wrong mask, map or noise anywhere in the crop shows in the pasted pixels. */
static int step_invoke(const int8_t *in, int8_t *out, uint8_t *arena) {
    int i, c;
    arena[0] = 1; /* touch the arena: it must be there */
    for (i = 0; i < S * S; i++) {
        for (c = 0; c < 3; c++) {
            int v = in[i * 14 + c] + in[i * 14 + 6] + in[i * 14 + 7 + c] - in[((i + 1) % (S * S)) * 14 + c];
            out[i * 3 + c] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
        }
    }
    return 0;
}

static const tk_model_t pose_model = {
    "tiny_pose", pose_invoke, 16, FH * FH * 3, HM * HM * 7, {1, FH, FH, 3}, {1, HM, HM, 7},
    1.0f / 128, 0, 1.0f / 256, -128, 0, 0, TK_NO_OFFSET, TK_NO_OFFSET,
};
static const tk_model_t step_model = {
    "tiny_step", step_invoke, 16, S * S * 14, S * S * 3, {1, S, S, 14}, {1, S, S, 3},
    1.0f / 64, 0, 1.0f / 64, 0, 0, 0, TK_NO_OFFSET, TK_NO_OFFSET,
};

/* The tables a host would generate, spelled out by the preprocessor (no float math, as on the device). */
#define R4(F, b) F(b), F(b + 1), F(b + 2), F(b + 3)
#define R16(F, b) R4(F, b), R4(F, b + 4), R4(F, b + 8), R4(F, b + 12)
#define R256(F)                                                                                             \
    R16(F, 0), R16(F, 16), R16(F, 32), R16(F, 48), R16(F, 64), R16(F, 80), R16(F, 96), R16(F, 112),         \
        R16(F, 128), R16(F, 144), R16(F, 160), R16(F, 176), R16(F, 192), R16(F, 208), R16(F, 224), R16(F, 240)
#define POSE(i) (int8_t)((i)-128)
#define PIX(i) (int32_t)(((2 * (i)-255) * 65536LL) / 255)
#define X0(i) (int32_t)(((i)-128) * 1024)
#define OUT(i) (uint8_t)(255 - (i))

static const int8_t pose_lut[256] = {R256(POSE)};
static const int32_t pixel_q16[256] = {R256(PIX)};
static const int32_t x0_q16[256] = {R256(X0)};
static const uint8_t out_lut[256] = {R256(OUT)};
static const uint16_t gauss[24] = {32768, 32704, 32514, 32199, 31764, 31214, 30555, 29794, 28942, 28007, 27000,
                                   25933, 24818, 23665, 22486, 21293, 20096, 18906, 17731, 16581, 15464, 14385,
                                   13351, 12365};
static const tk_frame_step_t steps[2] = {
    {&step_model, 1 << 30, -9, 0, x0_q16, 9000, 9000},
    {&step_model, 1 << 30, -9, 0, x0_q16, 0, 0},
};
/* TINY_LUMA 1 (default): the colour split of a gray-trained student (tests/test_sensor.py builds both). */
#ifndef TINY_LUMA
#define TINY_LUMA 1
#endif
static const tk_pipeline_t pipe = {
    FH, FH, &pose_model, pose_lut, -128, 4, 100, S, 2, steps, pixel_q16, 3000, 16000, gauss, 24, out_lut,
    0, 0, NULL, 0, 0, NULL, NULL, 0, 0, TINY_LUMA,
};

const tk_pipeline_t *const tk_pipeline = &pipe;
