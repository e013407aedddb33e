"""Host reference of the on-device pipeline `anonymize_frame`: the definition the firmware mirrors bit for bit
(firmware/src/app/tk_frame.c). Integers only after the constants (`toolkit.onboard.config`).

    frame (HxWx3 uint8, H = W = pose input)
      1. pose input = LUT[pixel]; pose network (int8 reference); `decode_heatmaps_int8` -> Q8 keypoints, peaks;
         visible = peak - zp >= visible_min. FAIL CLOSED (status "no_face", no frame) unless the head gate
         passes: nose visible, an eye visible, every visible eye / ear / shoulder within 1 / 1.5 / 4 head
         scales of the nose (scale = max(eye dist, ear dist, shoulder dist // 4, 8 px), pairs both visible).
      2. face box: square centred on the nose, side_q8 = max(1.2 ear dist (both ears visible), 2.1 eye dist,
         0.45 shoulder dist (both shoulders visible), 4 px, 2 (reach + scale // 4)) with reach the largest
         |dx| or |dy| of a visible eye/ear from the nose; distances = floor(sqrt) of Q8 squared sums; each
         term rounded half away from zero; box corners rounded outward to whole pixels.
         crop box = `expanded_crop_box` of that integer box, in exact integer arithmetic.
      3. crop: S x S nearest-neighbour samples of the crop box (edge replication outside the frame):
         source = crop0 + floor((2j + 1) * side / (2S)), clamped to the frame. Unknown (to generate) = crop
         pixels that overlap the face box at all (rounded outward). Keypoint maps: separable Q15 Gaussians
         from a LUT indexed by |distance| in 1/16 crop px (keypoints mapped to Q4 crop coordinates).
         Colour split (pipe.luma_student: a student trained on gray faces, `toolkit.diffusion.prior`): the
         skin chroma of the crop's known pixels is kept (`skin_chroma`) and the student sees the crop in gray.
      4. noise: xorshift32 seeded with seed ^ 0x9E3779B9 (0 -> 1); z = sum of 12 draws' top 16 bits
         - 6 * 2^16 (Irwin-Hall, Q16, unit variance). x = known ? rshr(sqrt(a0) img + sqrt(1-a0) z, 14) : z.
         Step k: int8 input [x, img*known, known, maps] with the step's own scale (Q16 -> int8 by a Q31
         multiplier), the step network, x0 = LUT[out]; k < N-1: x = rshr(c1 x + c2 (known ? img : x0), 14);
         the last step's int8 output -> uint8 pixel by LUT.
      5. paste: every frame pixel of the face box (clipped to the frame) takes the nearest crop pixel
         (index floor((2 (f - crop0) + 1) S / (2 side))), which the outward mask makes a generated one; with
         the colour split, in the skin chroma of step 3 (`colour_pixels`: the generated luma kept).
      6. verify (`verify_output`): the pose net on the output; a nose outside every box fails the frame.
      7. verifier (`verify_heads`, when the pipeline has one): the independent face-presence net
         (toolkit.pose.heads) on the output: input = its own LUT[pixel]; a cell whose int8 output >= min_value
         and whose stride x stride pixels are not all inside one box fails the frame.
    rshr = round half away from zero of x / 2^n; all products in int64.
"""

from __future__ import annotations

import zlib

import numpy as np

from toolkit.diffusion.prior import DEFAULT_SKIN_CRCB, MIN_SKIN_PIXELS, SKIN_CB, SKIN_CR
from toolkit.pose.model import div_round_away as div_round  # the heatmap decode's rounding, one rule
from toolkit.onboard.config import NOSE, Pipeline

SEED_MIX = 0x9E3779B9
STATUS_OK, STATUS_NO_FACE, STATUS_TOO_MANY, STATUS_VERIFY_FAILED = "ok", "no_face", "too_many_faces", "verify_failed"
L_EYE, R_EYE, L_EAR, R_EAR, L_SH, R_SH = 1, 2, 3, 4, 5, 6


# ------------------------------------------------------------------------------ integer helpers (C twins)

def rshr(x, n: int):
    """round(x / 2^n), half away from zero (int64 arrays or ints)."""
    x = np.asarray(x, np.int64)
    half = np.int64(1) << (n - 1)
    return np.where(x >= 0, (x + half) >> n, -((-x + half) >> n))


def floor_div(a: int, b: int) -> int:
    return a // b  # Python floors; C needs the explicit form (tk_floor_div)


def ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def isqrt(n: int) -> int:
    import math

    return math.isqrt(int(n))


def xorshift32(state: int) -> int:
    state ^= (state << 13) & 0xFFFFFFFF
    state ^= state >> 17
    state ^= (state << 5) & 0xFFFFFFFF
    return state


def noise_q16(seed: int, n: int) -> np.ndarray:
    """n Irwin-Hall (12 uniforms) approximately unit Gaussians in Q16 from the on-device PRNG."""
    s = (int(seed) ^ SEED_MIX) & 0xFFFFFFFF or 1
    draws = np.empty(12 * n, np.int64)
    for i in range(12 * n):
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        draws[i] = s >> 16
    return (draws.reshape(n, 12).sum(1) - 6 * 65536).astype(np.int64)


# ------------------------------------------------------------------------------ geometry

# Head-consistency gate (fail closed on keypoints that cannot be one head). A confident but misplaced nose
# (e.g. on the neck) otherwise moves the box off the face and the face leaves the device "ok".
# Every visible head/shoulder keypoint within num/den head scales of the nose, compared as (num/den)^2 on
# squared Q8 distances. The BlazePose teacher on the bundled photos' 96 px frames reaches at most 0.49 (eyes),
# 0.89 (ears), 2.09 (shoulders): about 2x, 1.7x and 1.9x room.
GATE_RATIO = {L_EYE: (1, 1), R_EYE: (1, 1), L_EAR: (3, 2), R_EAR: (3, 2), L_SH: (4, 1), R_SH: (4, 1)}
# Head scale floor: 8 px. Real eye-nose distances on those frames are 4.5-9.4 px, so a lone eye with no pair
# to measure the head by is still admitted (bar a turned head's far eye).
GATE_SCALE_FLOOR_Q8 = 8 * 256
GATE_OK, GATE_NO_NOSE, GATE_NO_EYE, GATE_IMPLAUSIBLE = "ok", "nose_not_visible", "no_eye_visible", "implausible_head"
GATE_NO_PERSON = "no_person"  # the multi-person net found no head centre


def _dist(kp_q8, a: int, b: int) -> int:
    dx, dy = int(kp_q8[a, 0] - kp_q8[b, 0]), int(kp_q8[a, 1] - kp_q8[b, 1])
    return isqrt(dx * dx + dy * dy)


def head_scale(kp_q8: np.ndarray, visible) -> int:
    """Q8 head scale: max(eye distance, ear distance, shoulder distance // 4, 8 px), each pair only when both
    of its keypoints are visible."""
    s = GATE_SCALE_FLOOR_Q8
    if visible[L_EYE] and visible[R_EYE]:
        s = max(s, _dist(kp_q8, L_EYE, R_EYE))
    if visible[L_EAR] and visible[R_EAR]:
        s = max(s, _dist(kp_q8, L_EAR, R_EAR))
    if visible[L_SH] and visible[R_SH]:
        s = max(s, _dist(kp_q8, L_SH, R_SH) // 4)
    return s


def head_gate(kp_q8: np.ndarray, visible) -> str:
    """GATE_OK when the keypoints can be one head, else why not: the nose and at least one eye visible, and
    every visible eye within 1, ear within 1.5 and shoulder within 4 head scales of the nose (squared
    integer comparisons: d^2 <= s^2, 4 d^2 <= 9 s^2, d^2 <= 16 s^2)."""
    if not visible[NOSE]:
        return GATE_NO_NOSE
    if not (visible[L_EYE] or visible[R_EYE]):
        return GATE_NO_EYE
    s = head_scale(kp_q8, visible)
    for k, (num, den) in GATE_RATIO.items():
        if not visible[k]:
            continue
        dx, dy = int(kp_q8[k, 0] - kp_q8[NOSE, 0]), int(kp_q8[k, 1] - kp_q8[NOSE, 1])
        if den * den * (dx * dx + dy * dy) > num * num * s * s:
            return GATE_IMPLAUSIBLE
    return GATE_OK


def face_box(kp_q8: np.ndarray, visible, cover_head: bool = True) -> tuple[int, int, int, int]:
    """Integer twin of toolkit.detect.pipeline._box_from_keypoints, corners rounded outward; with cover_head
    the side also grows (still centred on the nose) until the square holds every visible head keypoint (nose,
    eyes, ears) with a margin of a quarter head scale, so that a partly wrong keypoint set still covers the
    face where the others are."""
    eye = _dist(kp_q8, L_EYE, R_EYE)
    ear = _dist(kp_q8, L_EAR, R_EAR) if visible[L_EAR] and visible[R_EAR] else 0
    sh = _dist(kp_q8, L_SH, R_SH) if visible[L_SH] and visible[R_SH] else 0
    side = max(div_round(12 * ear, 10), div_round(21 * eye, 10), div_round(45 * sh, 100), 4 * 256)
    nx, ny = int(kp_q8[NOSE, 0]), int(kp_q8[NOSE, 1])
    if cover_head:
        reach = 0  # Chebyshev distance of the farthest visible head keypoint from the nose, Q8
        for k in (L_EYE, R_EYE, L_EAR, R_EAR):
            if visible[k]:
                reach = max(reach, abs(int(kp_q8[k, 0]) - nx), abs(int(kp_q8[k, 1]) - ny))
        side = max(side, 2 * (reach + head_scale(kp_q8, visible) // 4))
    return (floor_div(2 * nx - side, 512), floor_div(2 * ny - side, 512),
            ceil_div(2 * nx + side, 512), ceil_div(2 * ny + side, 512))


def crop_box(box) -> tuple[int, int, int]:
    """(x0, y0, side): `toolkit.crop.expanded_crop_box` of an integer box, in exact integers."""
    bx0, by0, bx1, by1 = (int(v) for v in box)
    s = max(bx1 - bx0, by1 - by0)
    side = 2 * s
    return floor_div(bx0 + bx1 - 2 * s + 1, 2), floor_div(5 * (by0 + by1) - 9 * s + 5, 10), side


def crop_indices(c0: int, side: int, S: int, limit: int) -> np.ndarray:
    j = np.arange(S, dtype=np.int64)
    return np.clip(c0 + ((2 * j + 1) * side) // (2 * S), 0, limit - 1)


def unknown_1d(c0: int, side: int, S: int, b0: int, b1: int) -> np.ndarray:
    """Crop pixels (one axis) that overlap [b0, b1): pixel j covers [c0 + j side/S, c0 + (j+1) side/S)."""
    j = np.arange(S, dtype=np.int64)
    return (c0 * S + j * side < b1 * S) & (c0 * S + (j + 1) * side > b0 * S)


def gauss_1d(pipe: Pipeline, k_q4: int, S: int) -> np.ndarray:
    d = np.abs((2 * np.arange(S, dtype=np.int64) + 1) * 8 - k_q4)
    lut = pipe.gauss_q15.astype(np.int64)
    return np.where(d < lut.size, lut[np.minimum(d, lut.size - 1)], 0)


# ------------------------------------------------------------------------------ colour split (integer YCrCb)

# A student trained on gray faces (prior colour "luma") draws gray faces: on the host the face then takes its
# chroma from the skin around it (toolkit.diffusion.prior.colour_from_context); this is the device's integer
# form of that rule. BT.601 full range (OpenCV's YCrCb) in Q8; skin = the prior's YCrCb range (Chai & Ngan).
# tk_frame.h holds the same numbers (TK_FRAME_SKIN_*; tests/test_sensor.py checks they agree).
DEFAULT_CHROMA = tuple(int(round(v)) for v in DEFAULT_SKIN_CRCB)


def luma_u8(px: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) int64 Y = (77 R + 150 G + 29 B + 128) >> 8."""
    p = np.asarray(px, np.int64)
    return (77 * p[..., 0] + 150 * p[..., 1] + 29 * p[..., 2] + 128) >> 8


def chroma_u8(px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3) uint8 RGB -> (Cr, Cb), int64 each: 128 + rshr(183 (R - Y), 8), 128 + rshr(144 (B - Y), 8)."""
    p = np.asarray(px, np.int64)
    y = luma_u8(p)
    return 128 + rshr(183 * (p[..., 0] - y), 8), 128 + rshr(144 * (p[..., 2] - y), 8)


def skin_chroma(img: np.ndarray, known: np.ndarray) -> tuple[int, int]:
    """(Cr, Cb) of a face's context: the rounded mean over the known crop pixels whose chroma is skin's, when
    at least MIN_SKIN_PIXELS are; DEFAULT_CHROMA otherwise. The face being replaced never gives its colour."""
    cr, cb = chroma_u8(np.asarray(img)[known])
    skin = (cr >= SKIN_CR[0]) & (cr <= SKIN_CR[1]) & (cb >= SKIN_CB[0]) & (cb <= SKIN_CB[1])
    n = int(skin.sum())
    if n < MIN_SKIN_PIXELS:
        return DEFAULT_CHROMA
    return div_round(int(cr[skin].sum()), n), div_round(int(cb[skin].sum()), n)


def colour_pixels(px: np.ndarray, chroma) -> np.ndarray:
    """(..., 3) uint8: each pixel's own luma in the chroma (Cr, Cb)."""
    y = luma_u8(px)
    dr, db = int(chroma[0]) - 128, int(chroma[1]) - 128
    rgb = np.stack([y + rshr(359 * dr, 8), y - rshr(183 * dr + 88 * db, 8), y + rshr(454 * db, 8)], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ the pipeline

def run_network(graph, q: np.ndarray) -> np.ndarray:
    """int8 NHWC in -> int8 NHWC out through a lowered graph (int8ref), or through a callable standing in for
    a network (the tests' twin of the firmware's hand-written test pipeline)."""
    from toolkit.deploy import int8ref

    return graph(q) if callable(graph) else int8ref.run(graph, q)


def pose_keypoints(frame: np.ndarray, pipe: Pipeline):
    """(keypoints Q8 (7, 2) int64, peaks (7,) int8, visible (7,) bool) of a frame (single-person pose net)."""
    from toolkit.pose.model import decode_heatmaps_int8

    q = pipe.pose_input_lut[frame.astype(np.int64)][None]
    hm = run_network(pipe.pose_graph, q)[0]
    kp, peaks = decode_heatmaps_int8(hm, pipe.heatmap_zero_point, pipe.heatmap_stride)
    visible = (peaks.astype(np.int64) - pipe.heatmap_zero_point) >= pipe.visible_min
    return kp, peaks, visible


def decode_centers_int8(out: np.ndarray, pipe: Pipeline) -> list:
    """People of one int8 multi-person output (H, W, 22) NHWC (toolkit.pose.multi's layout), in raster order:
    [(keypoints Q8 (7, 2), peaks (7,) int8 = visibility outputs, visible (7,) bool)].

    A person is a cell whose centre value - zp >= center_min that is a 3x3 local maximum: strictly above the
    neighbours before it in raster order, at least the ones after it (a plateau counts once). Keypoint k =
    cell centre + offset_q8[q + 128] of its (dx, dy) outputs; visible when its visibility - zp >= visible_min."""
    from toolkit.pose.multi import CENTER, OFF0, VIS0

    q = np.asarray(out).astype(np.int64)
    H, W, _ = q.shape
    zp, stride = pipe.heatmap_zero_point, pipe.heatmap_stride
    c = q[..., CENTER]
    people = []
    for iy in range(H):
        for ix in range(W):
            v = int(c[iy, ix])
            if v - zp < pipe.center_min:
                continue
            peak = True
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    y, x = iy + dy, ix + dx
                    if (dy, dx) == (0, 0) or not (0 <= y < H and 0 <= x < W):
                        continue
                    before = dy < 0 or (dy == 0 and dx < 0)
                    if c[y, x] > v or (before and c[y, x] == v):
                        peak = False
            if not peak:
                continue
            cell = q[iy, ix]
            off = pipe.offset_q8[cell[OFF0:] + 128].astype(np.int64).reshape(7, 2)
            kp = off + np.array([(2 * ix + 1) * stride * 128, (2 * iy + 1) * stride * 128], np.int64)
            peaks = cell[VIS0:OFF0].astype(np.int8)
            people.append((kp, peaks, (cell[VIS0:OFF0] - zp) >= pipe.visible_min))
    return people


def find_people(frame: np.ndarray, pipe: Pipeline) -> list:
    """[(keypoints Q8, peaks, visible)] of a frame: every person for a multi-person net; the single-person net's
    one keypoint set otherwise (always one entry: the head gate judges it)."""
    if not pipe.multi_person:
        return [pose_keypoints(frame, pipe)]
    q = pipe.pose_input_lut[frame.astype(np.int64)][None]
    return decode_centers_int8(run_network(pipe.pose_graph, q)[0], pipe)


def in_box(kp_q8, box) -> bool:
    """Whether a Q8 point's pixel lies in a box [x0, x1) x [y0, y1)."""
    x, y = int(kp_q8[0]) >> 8, int(kp_q8[1]) >> 8  # floor, also for negative coordinates
    return box[0] <= x < box[2] and box[1] <= y < box[3]


def verify_output(out: np.ndarray, pipe: Pipeline, boxes) -> list:
    """Noses (Q8) the pose net finds on the OUTPUT frame outside every replaced box: must be empty for the
    frame to leave. Multi-person net: every detected head counts, gate or not; single-person net: its keypoint
    set when the head gate accepts it."""
    left = []
    for kp, _, visible in find_people(out, pipe):
        if not pipe.multi_person and head_gate(kp, visible) != GATE_OK:
            continue
        if not any(in_box(kp[NOSE], b) for b in boxes):
            left.append([int(kp[NOSE, 0]), int(kp[NOSE, 1])])
    return left


def verify_heads(out: np.ndarray, pipe: Pipeline, boxes) -> list:
    """Cells [ix, iy] where the independent verifier (toolkit.pose.heads) sees a face on the OUTPUT frame
    outside the replaced boxes (a cell straddling a box edge counts): must be empty for the frame to leave."""
    from toolkit.pose.heads import cells_left

    v = pipe.verifier
    q = v.input_lut[out.astype(np.int64)][None]
    lit = run_network(v.graph, q)[0][..., 0].astype(np.int64)
    return [[ix, iy] for ix, iy in cells_left(lit, v.min_value, boxes, v.stride)]


def check_frame(frame, pipe: Pipeline) -> np.ndarray:
    frame = np.asarray(frame)
    n = pipe.frame_size
    if frame.shape != (n, n, 3) or frame.dtype != np.uint8:
        raise ValueError(f"frame must be {n}x{n}x3 uint8 (the pose model's input), got {frame.shape} {frame.dtype}")
    return frame


def student_inputs(frame: np.ndarray, pipe: Pipeline, kp_q8, visible, box, crop, seed: int):
    """(crop pixels the student sees (S,S,3) uint8, known (S,S) bool, maps Q15 (S,S,7), x_init Q16 (S,S,3),
    chroma) for a face: with pipe.luma_student the pixels are gray and chroma the context's skin (Cr, Cb),
    else the pixels are the crop's and chroma None."""
    S, H = pipe.size, pipe.frame_size
    cx0, cy0, side = crop
    ys, xs = crop_indices(cy0, side, S, H), crop_indices(cx0, side, S, H)
    img = frame[ys[:, None], xs[None, :]]
    unknown = unknown_1d(cy0, side, S, box[1], box[3])[:, None] & unknown_1d(cx0, side, S, box[0], box[2])[None, :]
    known = ~unknown
    chroma = None
    if pipe.luma_student:
        chroma = skin_chroma(img, known)
        img = np.repeat(luma_u8(img)[..., None], 3, axis=-1).astype(np.uint8)
    maps = np.zeros((S, S, 7), np.int64)
    for k in range(7):
        if not visible[k]:
            continue
        kx = div_round((int(kp_q8[k, 0]) - 256 * cx0) * S, side * 16)
        ky = div_round((int(kp_q8[k, 1]) - 256 * cy0) * S, side * 16)
        maps[..., k] = rshr(gauss_1d(pipe, ky, S)[:, None] * gauss_1d(pipe, kx, S)[None, :], 15)
    z = noise_q16(seed, S * S * 3).reshape(S, S, 3)
    img_q16 = pipe.pixel_q16[img].astype(np.int64)
    x = np.where(known[..., None], rshr(pipe.sqrt_a0_q14 * img_q16 + pipe.sqrt_1ma0_q14 * z, 14), z)
    return img, known, maps, x, chroma


def run_student(pipe: Pipeline, img: np.ndarray, known: np.ndarray, maps: np.ndarray, x: np.ndarray,
                keep_steps: bool = False):
    """All student steps in integers; returns the generated crop (S,S,3) uint8 (and per-step int8 outputs)."""
    from toolkit.deploy.int8ref import multiply_by_quantized_multiplier as mbqm

    S = pipe.size
    img_q16 = pipe.pixel_q16[img].astype(np.int64)
    k3 = known[..., None]
    ctx = np.where(k3, img_q16, 0)
    mask = np.where(known, 65536, 0)[..., None]
    outs = []
    for i, st in enumerate(pipe.steps):
        v = np.concatenate([x, ctx, mask, maps * 2], axis=2)  # Q16, NHWC channel order of student_input
        q = np.clip(mbqm(v, st.in_multiplier, st.in_shift) + st.in_zero_point, -128, 127).astype(np.int8)
        out = run_network(st.graph, q.reshape(1, S, S, 14))[0]
        outs.append(out)
        if i + 1 < len(pipe.steps):
            x0 = st.x0_q16[out.astype(np.int64) + 128].astype(np.int64)
            x = rshr(st.c1_q14 * x + st.c2_q14 * np.where(k3, img_q16, x0), 14)
    pix = pipe.out_pixel_lut[outs[-1].astype(np.int64) + 128]
    return (pix, outs) if keep_steps else pix


def paste(frame: np.ndarray, gen: np.ndarray, box, crop, S: int) -> np.ndarray:
    """Frame with every pixel of the face box (clipped) replaced by its nearest generated crop pixel."""
    H, W = frame.shape[:2]
    cx0, cy0, side = crop
    x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], W), min(box[3], H)
    out = frame.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    fy, fx = np.arange(y0, y1, dtype=np.int64), np.arange(x0, x1, dtype=np.int64)
    iy = np.clip(((2 * (fy - cy0) + 1) * S) // (2 * side), 0, S - 1)
    ix = np.clip(((2 * (fx - cx0) + 1) * S) // (2 * side), 0, S - 1)
    out[y0:y1, x0:x1] = gen[iy[:, None], ix[None, :]]
    return out


def anonymize_frame(frame, pipe: Pipeline, seed: int):
    """(anonymized frame or None, info). Every face the pose net finds is replaced (face i with the noise of
    seed + i), or the frame fails closed (None, frame wiped on the device):
      "no_face"         no person, or a person whose keypoints fail the head gate (info["gate"] says why)
      "too_many_faces"  more people than pipe.max_faces
      "verify_failed"   the pose net, run again on the output, still finds a nose outside every replaced box,
                        or the independent verifier sees a face outside them (info["verifier_left"]: its cells)

    info: status, gate, faces (per face: keypoints_q8, peaks, visible, box, crop, chroma), people (detected), the first
    face's keypoints_q8 / peaks / visible (also for a refused frame) and box / crop at the top level, crc of
    the output frame, verify_left (noses found outside the boxes), and the last face's crop (as the student saw
    it), mask and generated crop (the student's pixels, before the colour split) for reports."""
    frame = check_frame(frame, pipe)
    seed = int(seed)
    if not 0 <= seed <= 0xFFFFFFFF:
        raise ValueError(f"seed must be a 32-bit unsigned integer, got {seed}")
    people = find_people(frame, pipe)
    first = people[0] if people else (np.zeros((7, 2), np.int64), np.zeros(7, np.int8),
                                      np.zeros(7, bool))
    info = {"status": STATUS_NO_FACE, "keypoints_q8": first[0].tolist(), "peaks": [int(p) for p in first[1]],
            "visible": [bool(v) for v in first[2]], "seed": seed, "people": len(people), "faces": []}
    if not people:
        info["gate"] = GATE_NO_PERSON
        return None, info
    if len(people) > pipe.max_faces:  # more heads than the device replaces per frame: fail closed
        info.update(status=STATUS_TOO_MANY, gate=GATE_OK)
        return None, info
    gates = [head_gate(kp, vis) for kp, _, vis in people]
    info["gate"] = next((g for g in gates if g != GATE_OK), GATE_OK)
    if info["gate"] != GATE_OK:  # no nose, no eye, or keypoints that cannot be one head: fail closed
        return None, info
    out = frame.copy()
    for i, (kp, peaks, visible) in enumerate(people):
        box = face_box(kp, visible)
        crop = crop_box(box)
        img, known, maps, x, chroma = student_inputs(out, pipe, kp, visible, box, crop, (seed + i) & 0xFFFFFFFF)
        gen = run_student(pipe, img, known, maps, x)
        out = paste(out, gen if chroma is None else colour_pixels(gen, chroma), box, crop, pipe.size)
        info["faces"].append({"keypoints_q8": kp.tolist(), "peaks": [int(p) for p in peaks],
                              "visible": [bool(v) for v in visible], "box": list(box), "crop": list(crop),
                              "chroma": None if chroma is None else list(chroma)})
    boxes = [f["box"] for f in info["faces"]]
    info.update(box=boxes[0], crop=info["faces"][0]["crop"], crop_pixels=img, known=known, generated=gen)
    if pipe.verify:
        info["verify_left"] = verify_output(out, pipe, boxes)
        if info["verify_left"]:
            info["status"] = STATUS_VERIFY_FAILED
            return None, info
    if pipe.verifier is not None:
        info["verifier_left"] = verify_heads(out, pipe, boxes)
        if info["verifier_left"]:
            info["status"] = STATUS_VERIFY_FAILED
            return None, info
    info.update(status=STATUS_OK, crc=zlib.crc32(out.tobytes()) & 0xFFFFFFFF)
    return out, info
