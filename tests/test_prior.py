"""The face prior (toolkit.diffusion.prior): mean face, its warp onto a face's keypoints, colour from context,
and the SDEdit start in both samplers."""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from toolkit.diffusion.prior import (
    FacePrior,
    build_face_prior,
    colour_from_context,
    load_prior,
    skin_tone,
    start_index,
    structure_init,
)

S = 32


def _dot_prior(kp):
    """A prior whose mean face is black with one white pixel at its nose keypoint."""
    face = np.full((S, S, 3), -1.0, np.float32)
    x, y = (np.asarray(kp[0]) * S).astype(int)
    face[y, x] = 1.0
    return FacePrior(face, np.asarray(kp, np.float32), np.array([0.25, 0.2, 0.75, 0.75], np.float32), "rgb", 1)


def test_mean_face_of_a_real_dataset(fdf_dir):
    prior = build_face_prior(fdf_dir, S)
    assert prior.mean_face.shape == (S, S, 3) and prior.faces >= 3 and prior.colour == "rgb"
    nose, left_eye, right_eye = prior.keypoints[:3]
    # person's left eye is on the image's right; eyes above the nose; all inside the crop
    assert left_eye[0] > nose[0] > right_eye[0] and nose[1] > max(left_eye[1], right_eye[1])
    assert ((prior.keypoints[:3] > 0) & (prior.keypoints[:3] < 1)).all()


def test_gray_training_faces_give_a_luma_prior(fdf_dir, tmp_path):
    gray = tmp_path / "gray"
    shutil.copytree(fdf_dir, gray)
    for png in gray.rglob("images/*.png"):
        img = cv2.imread(str(png))
        cv2.imwrite(str(png), cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR))
    prior = build_face_prior(gray, S)
    assert prior.colour == "luma"
    prior.save(tmp_path)
    again = load_prior(tmp_path)
    assert again.colour == "luma" and np.array_equal(again.mean_face, prior.mean_face)


@pytest.mark.parametrize("visible_eyes", [(True, True), (True, False)])
def test_structure_init_puts_the_prior_nose_on_the_face_nose(visible_eyes):
    src = np.array([[0.5, 0.5], [0.6, 0.4], [0.4, 0.4]] + [[0.5, 0.5]] * 4)
    prior = _dot_prior(src)
    # the target face: shifted, larger and turned a little
    dst = src.copy()
    dst[:3] = [[0.55, 0.6], [0.7, 0.45], [0.42, 0.5]]
    visible = np.array([True, *visible_eyes, False, False, False, False])
    mask = np.ones((S, S), np.float32)
    mask[6:28, 6:28] = 0
    crop = np.full((S, S, 3), 90, np.uint8)
    init = structure_init(prior, crop, mask, dst, visible)
    y, x = np.unravel_index(np.argmax(init[..., 0] * (1 - mask)), (S, S))
    assert abs(x + 0.5 - dst[0, 0] * S) <= 1.0 and abs(y + 0.5 - dst[0, 1] * S) <= 1.0
    # known pixels are the crop's own
    assert np.allclose(init[mask > 0], 90 / 127.5 - 1)


def test_face_colour_comes_from_the_context_never_from_the_face():
    crop = np.zeros((S, S, 3), np.uint8)
    crop[...] = (224, 172, 140)  # skin around the face
    crop[:4] = (30, 60, 200)  # some sky
    mask = np.ones((S, S), np.float32)
    mask[8:24, 8:24] = 0
    found = skin_tone(crop, mask)
    crop2 = crop.copy()
    crop2[8:24, 8:24] = (10, 250, 10)  # whatever the replaced face looked like
    assert skin_tone(crop2, mask) == found and found[3]
    generated = np.full((S, S, 3), 128.0, np.float32)
    out = colour_from_context(generated, crop2, mask, np.full((7, 2), 0.5), np.ones(7, bool))
    assert np.array_equal(out[mask > 0], crop2[mask > 0].astype(np.float32))  # known pixels untouched
    ycc = cv2.cvtColor(np.clip(np.rint(out), 0, 255).astype(np.uint8), cv2.COLOR_RGB2YCrCb)[8:24, 8:24]
    assert abs(float(np.median(ycc[..., 1])) - found[1]) <= 2 and abs(float(np.median(ycc[..., 2])) - found[2]) <= 2
    # no skin in the context: a default tone, and it says so
    assert not skin_tone(np.full((S, S, 3), (30, 60, 200), np.uint8), mask)[3]


def test_teacher_sdedit_start(tiny_teacher_run):
    from toolkit.artifacts import load_inpainter

    model = load_inpainter(tiny_teacher_run)
    assert model.face_prior is not None and model.face_prior.resolution == model.resolution
    s = model.resolution
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, s, s, generator=g) * 2 - 1
    masks = torch.ones(2, 1, s, s)
    masks[..., s // 4: 3 * s // 4, s // 4: 3 * s // 4] = 0
    kps, vis = torch.full((2, 7, 2), 0.5), torch.ones(2, 7, dtype=torch.bool)
    init = torch.rand(2, 3, s, s, generator=g) * 2 - 1
    plain = model.inpaint(images, masks, kps, vis, seed=3, steps=10)
    full = model.inpaint(images, masks, kps, vis, seed=3, steps=10, init_image=init, strength=1.0)
    assert torch.equal(plain, full)  # strength 1 = pure noise, as without a start image
    near = model.inpaint(images, masks, kps, vis, seed=3, steps=10, init_image=init, strength=0.05)
    hole = masks.expand_as(init) == 0
    assert (near - init)[hole].abs().mean() < 0.5 * (plain - init)[hole].abs().mean()


def test_prior_travels_teacher_student_and_student_start(tiny_student_run):
    from toolkit.artifacts import load_inpainter

    student = load_inpainter(tiny_student_run)
    assert student.face_prior is not None
    t = student.student.timesteps
    assert start_index(t, 1.0) == 0 and start_index(t, 0.0) == len(t) - 1
    manifest = json.loads((tiny_student_run / "toolkit.json").read_text())
    assert manifest["stage"] == "student"


def test_gray_model_sees_gray_crops_and_paints_the_context_skin(tiny_teacher_run, tmp_path, astronaut_rgb,
                                                                 astronaut_persons):
    """A "luma" model (trained on gray faces) gets its crops in gray (and, when asked, a start from the mean
    face); the face it draws gets the context's skin chroma; nothing outside the crop box changes."""
    from toolkit.anonymize import anonymize_image
    from toolkit.artifacts import load_inpainter

    run = tmp_path / "gray-teacher"
    shutil.copytree(tiny_teacher_run, run)
    prior = load_prior(run)
    prior.colour = "luma"
    prior.save(run)
    model = load_inpainter(run)
    calls = []
    real_inpaint = model.inpaint

    def spy(images, *args, **kwargs):
        calls.append((images.clone(), kwargs))
        return real_inpaint(images, *args, **kwargs)

    model.inpaint = spy
    anonymize_image(astronaut_rgb, inpainter=model, persons=astronaut_persons, steps=5)  # default: from noise
    out, faces = anonymize_image(astronaut_rgb, inpainter=model, persons=astronaut_persons, steps=5,
                                 prior_strength=0.6)
    (plain, plain_kwargs), (images, kwargs) = calls
    for crops in (plain, images):
        assert torch.equal(crops[:, 0], crops[:, 1]) and torch.equal(crops[:, 1], crops[:, 2])
    assert "init_image" not in plain_kwargs
    assert kwargs["strength"] == pytest.approx(0.6) and kwargs["init_image"].shape == images.shape
    x0, y0, x1, y1 = faces[0]["crop_box"]
    outside = np.ones(astronaut_rgb.shape[:2], bool)
    outside[max(0, y0):y1, max(0, x0):x1] = False
    assert np.array_equal(out[outside], astronaut_rgb[outside])
    # the face centre carries the chroma of the skin around it (astronaut: neck), not gray
    fx0, fy0, fx1, fy1 = (int(v) for v in faces[0]["face_box"])
    centre = out[(fy0 + fy1) // 2 - 4:(fy0 + fy1) // 2 + 4, (fx0 + fx1) // 2 - 4:(fx0 + fx1) // 2 + 4]
    cr_cb = cv2.cvtColor(centre, cv2.COLOR_RGB2YCrCb)[..., 1:].reshape(-1, 2).mean(0)
    assert cr_cb[0] > 135 and cr_cb[1] < 125  # skin (Cr high, Cb low); gray would be 128, 128
