"""Real benchmark inputs: face crops from real photos, laid out as the model's input tensor.

Sources (all offline, from scikit-image): `astronaut()` (a head-and-shoulders photo with reference
keypoints), its mirror image (keypoints flipped with left/right swapped), and the real LFW faces of
`lfw_subset()`. Each crop is FDF-style: a square crop around the face box, the face box masked out.

For the distilled student (14 channels: x_t, masked context, mask, 7 keypoint maps — see
toolkit.distill.inpainter.student_input) the first step's x_t is seeded Gaussian noise, as in sampling.
Other channel counts get the RGB crop (3), its grey level (1), or RGB followed by the mask and grey
copies, so any image model can be benchmarked on real pixels.
"""

from __future__ import annotations

import numpy as np

from toolkit.assets import ASTRONAUT_KEYPOINTS
from toolkit.keypoints import flip_keypoints

# LFW crops are aligned faces filling the frame: eyes, nose and ears sit at this canonical layout (fractions
# of the crop); the shoulders are below the frame (invisible).
_LFW_KP = np.array([[0.50, 0.60], [0.66, 0.42], [0.34, 0.42], [0.90, 0.50], [0.10, 0.50], [np.nan, np.nan],
                    [np.nan, np.nan]])
STUDENT_CHANNELS = 14


def _face_box_from_keypoints(kp: np.ndarray) -> tuple[float, float, float, float]:
    """A face box around the five head points (nose, eyes, ears), padded to cover forehead and chin."""
    head = kp[:5][np.isfinite(kp[:5]).all(1)]
    x0, y0 = head.min(0)
    x1, y1 = head.max(0)
    w = max(x1 - x0, 1.0)
    return (x0 - 0.15 * w, y0 - 0.6 * w, x1 + 0.15 * w, y1 + 0.75 * w)


def real_photos(count: int) -> list[tuple[str, np.ndarray, np.ndarray, tuple]]:
    """`count` real (label, HxWx3 uint8 image, (7,2) keypoints in px (NaN = invisible), face box)."""
    from skimage import data

    astro = np.ascontiguousarray(data.astronaut())
    w = astro.shape[1]
    photos = [("astronaut", astro, ASTRONAUT_KEYPOINTS, _face_box_from_keypoints(ASTRONAUT_KEYPOINTS))]
    flip_kp = flip_keypoints(ASTRONAUT_KEYPOINTS, width=w)
    photos.append(("astronaut_mirrored", np.ascontiguousarray(astro[:, ::-1]), flip_kp,
                   _face_box_from_keypoints(flip_kp)))
    if count > len(photos):
        faces = data.lfw_subset()[:100]  # the first 100 are faces (the rest are non-faces)
        for i in range(count - len(photos)):
            g = (np.clip(faces[i % len(faces)], 0, 1) * 255).round().astype(np.uint8)
            rgb = np.repeat(g[..., None], 3, axis=2)
            h, wf = g.shape
            kp = _LFW_KP * np.array([wf, h])
            # the face proper (brows to chin, cheek to cheek) is the middle of the aligned LFW frame
            box = (0.18 * wf, 0.22 * h, 0.82 * wf, 0.9 * h)
            photos.append((f"lfw_{i % len(faces):03d}", rgb, kp, box))
    return photos[:count]


def model_inputs(shape_nchw, count: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """`count` float32 (1, C, H, W) inputs in the model's value range ([-1, 1] images, {0,1} mask, [0,1]
    keypoint maps) built from real face crops."""
    from toolkit.crop import crop_and_resize, expanded_crop_box, face_box_in_crop, face_mask, to_crop_coords

    _, c, h, w = (int(v) for v in shape_nchw)
    if h != w:
        raise ValueError(f"expected a square image input, got {h}x{w}")
    rng = np.random.default_rng(seed)
    out = []
    for label, image, kp, box in real_photos(count):
        crop_box = expanded_crop_box(box, image.shape)
        crop, _valid = crop_and_resize(image, crop_box, h)
        img = crop.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0  # (3, H, W) in [-1, 1]
        mask = face_mask(face_box_in_crop(box, crop_box, h), h)[None].astype(np.float32)  # 1 = known
        grey = img.mean(0, keepdims=True)
        if c == STUDENT_CHANNELS:
            from toolkit.data import keypoint_maps

            kp_crop = to_crop_coords(kp, crop_box, h) / h  # normalized, NaN stays NaN (invisible)
            maps = keypoint_maps(kp_crop[None], None, h).numpy()[0].astype(np.float32)
            noise = rng.standard_normal((3, h, w)).astype(np.float32)
            x = np.concatenate([noise, img * mask, mask, maps], 0)
        elif c == 3:
            x = img
        elif c == 1:
            x = grey
        else:
            extra = [mask] + [grey] * max(0, c - 4)
            x = np.concatenate([img] + extra, 0)[:c]
        out.append((label, x[None].astype(np.float32)))
    return out
