"""The evaluation figures behave as the literature says on a real photo."""

import numpy as np
import pytest
from skimage import data
from skimage.filters import gaussian

from toolkit.eval import metrics

# Astronaut's face box (x0, y0, x1, y1), as dlib's own frontal detector finds it.
FACE = (175, 76, 265, 166)


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


def _replace_box(image, box, fill):
    out = image.copy()
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = fill[y0:y1, x0:x1]
    return out


def test_light_blur_leaks_identity_and_mask_does_not(astronaut):
    blurred = (gaussian(astronaut, sigma=1, channel_axis=2) * 255).round().astype(np.uint8)
    light_blur = _replace_box(astronaut, FACE, blurred)
    masked = _replace_box(astronaut, FACE, np.zeros_like(astronaut))
    assert metrics.identity_distance(astronaut, astronaut, FACE) < 1e-6
    assert metrics.identity_distance(astronaut, light_blur, FACE) < metrics.SAME_PERSON_THRESHOLD
    assert metrics.identity_distance(astronaut, masked, FACE) >= metrics.SAME_PERSON_THRESHOLD


def test_outside_region_quality_sees_only_outside(astronaut):
    masked = _replace_box(astronaut, FACE, np.zeros_like(astronaut))
    inside_only = metrics.outside_region_quality(astronaut, masked, FACE)
    assert inside_only["psnr_outside"] == float("inf")
    assert inside_only["ssim_outside"] == pytest.approx(1.0, abs=1e-9)  # windows wholly outside the box only
    noisy = np.clip(astronaut.astype(int) + np.random.default_rng(0).integers(-20, 21, astronaut.shape), 0, 255)
    everywhere = metrics.outside_region_quality(astronaut, noisy.astype(np.uint8), FACE)
    assert everywhere["psnr_outside"] < 30 and everywhere["ssim_outside"] < inside_only["ssim_outside"]


def test_keypoint_error_is_scale_free():
    kp = np.array([[10.0, 10.0], [20.0, 10.0]])
    moved = kp + [3.0, 4.0]
    vis = np.array([True, True])
    small = metrics.keypoint_error(kp, vis, moved, vis, (0, 0, 30, 40))
    large = metrics.keypoint_error(kp * 2, vis, moved * 2, vis, (0, 0, 60, 80))
    assert small == pytest.approx(5 / 50)
    assert np.isnan(metrics.keypoint_error(kp, ~vis, moved, vis, (0, 0, 30, 40)))
    assert large == pytest.approx(small)


def test_fid_orders_real_against_destroyed(astronaut):
    fid = metrics.FID()
    crops = [astronaut[y:y + 128, x:x + 128] for y in (0, 128, 256) for x in (0, 128, 256)]
    shifted = [astronaut[y + 8:y + 136, x + 8:x + 136] for y in (0, 128, 256) for x in (0, 128, 256)]
    noise = [np.random.default_rng(i).integers(0, 256, (128, 128, 3), dtype=np.uint8) for i in range(9)]
    assert fid(crops, shifted) < fid(crops, noise)


def test_kid_is_the_unbiased_mmd_and_fid_is_not():
    """KID = the U-statistic written out with loops; at 10 faces whose anonymized crops resemble their
    originals but come from the same distribution, KID averages 0 while FID stays far above 0 (its bias at
    small n); a real difference gives an interval above 0."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 8)), rng.normal(size=(6, 8)) + 0.2
    k = lambda a, b: (a @ b / 8 + 1) ** 3  # noqa: E731
    n = 6
    u = sum(k(x[i], x[j]) + k(y[i], y[j]) - k(x[i], y[j]) - k(x[j], y[i])
            for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    assert metrics.kernel_inception_distance(x, y, bootstrap=2)["kid"] == pytest.approx(u)

    def paired(n):  # y_i resembles x_i (correlation 0.5), same distribution
        x = rng.normal(size=(n, 16))
        return x, 0.5 * x + np.sqrt(0.75) * rng.normal(size=(n, 16))

    same = [paired(10) for _ in range(300)]
    kids = np.array([metrics.kernel_inception_distance(a, b, bootstrap=1)["kid"] for a, b in same])
    fids = np.array([metrics.frechet_distance(a, b) for a, b in same])
    assert abs(kids.mean()) < 3 * kids.std() / np.sqrt(len(kids))  # zero within its standard error
    assert fids.mean() > 10 * fids.std() / np.sqrt(len(fids))

    a, b = rng.normal(size=(35, 16)), rng.normal(size=(35, 16)) + 1.0
    got = metrics.kernel_inception_distance(a, b)
    assert got["n"] == 35 and 0 < got["ci"][0] <= got["kid"] <= got["ci"][1]
    with pytest.raises(ValueError, match="same number"):
        metrics.kernel_inception_distance(a, b[:10])


def test_report_notes_overlapping_kid_and_faces_not_generated():
    from toolkit.eval.report import markdown_table, summary_notes

    summary = {"ddpm": {"faces": 35, "kid_faces": 0.010, "kid_faces_ci": [0.004, 0.018]},
               "blur": {"faces": 35, "kid_faces": 0.015, "kid_faces_ci": [0.012, 0.030]},
               "mask": {"faces": 35, "kid_faces": 0.200, "kid_faces_ci": [0.150, 0.260]}}
    assert summary_notes(summary) == ("KID intervals overlap, so these faces do not tell the methods apart: "
                                      "ddpm / blur.")
    assert "| 10.0 [4.0, 18.0] |" in markdown_table(summary)
    summary["blur"]["kid_faces_ci"] = [0.02, 0.03]
    assert summary_notes(summary) == "KID: no two methods' 95% intervals overlap."
    summary["ddpm"]["replaced_by"] = {"ddpm": 20, "blur": 10, "pixelate": 5}
    summary["blur"]["replaced_by"] = {"blur": 35}
    assert summary_notes(summary).startswith("ddpm: of 35 faces, 10 blur (heads seen from behind, `--facing-away`), "
                                             "5 pixelate (faces too small, `--min-generate`); no face generated")


def test_low_rank_frechet_distance_matches_scipy_sqrtm():
    import scipy.linalg

    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(40, 16)), rng.normal(size=(30, 16)) + 0.3
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    expected = ((f1.mean(0) - f2.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) \
        - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
    assert metrics.frechet_distance(f1, f2) == pytest.approx(expected, rel=1e-6)
