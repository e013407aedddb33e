"""Evaluating a pose model against the teacher (BlazePose via `toolkit.detect`) on ORIGINAL images.

Each labelled person of each image gives `views_per_person` 96x96 views (the centred canonical view plus
seeded random ones drawn like the training augmentation), so the figures are deterministic and also probe
robustness to framing. A keypoint counts where the teacher saw it and it lies inside the view.

  PCK@a     fraction of keypoints within a * person size of the teacher (person size: the larger of face box
            side and shoulder width, see toolkit.pose.data)
  OKS       COCO-style object keypoint similarity, exp(-d^2 / (2 (s k_i)^2)) averaged over keypoints, with
            s = person size and k_i = 2 * COCO sigma_i (an "OKS-like" figure: COCO's s is sqrt(area))
  error     mean distance / person size

With human labels (`evaluate_coco`, `toolkit pose eval --coco ANN --images-root DIR`) the model runs on the
original images the COCO way and pycocotools scores it (see `coco_metrics`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from toolkit.keypoints import NAMES
from toolkit.pose import data as D
from toolkit.pose.model import PoseNet, decode_heatmaps

# COCO keypoint sigmas of nose, eyes, ears, shoulders.
COCO_SIGMAS = np.array([0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079])
PCK_ALPHA = 0.2


def _most_confident_person(out: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Multi-person outputs (n, 22, h, w) -> the keypoints and visibility values of each view's strongest head
    centre (the evaluation views hold one labelled person); a view with no centre at all gets zero confidence."""
    from toolkit.pose.multi import CENTER, OFF0, VIS0, decode

    pts = np.zeros((len(out), 7, 2))
    conf = np.zeros((len(out), 7))
    for j, o in enumerate(out):
        people = decode(o, stride, center_min=-np.inf)
        if people:
            kp, _, _ = max(people, key=lambda p: p[2])
            iy, ix = np.unravel_index(np.argmax(o[CENTER]), o[CENTER].shape)
            pts[j], conf[j] = kp, o[VIS0:OFF0, iy, ix]
    return pts, conf


@torch.no_grad()
def predict(net: PoseNet, images_uint8: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (n, 7, 2) in view px and peak confidences (n, 7) for (n, S, S, 3) uint8 views."""
    net.eval()
    pts, peaks = [], []
    for i in range(0, len(images_uint8), batch_size):
        out = net(D.to_model_input(images_uint8[i:i + batch_size]))
        if net.multi_person:
            p, c = _most_confident_person(out.numpy(), net.stride)
        else:
            p, c = decode_heatmaps(out, net.stride)
        pts.append(p), peaks.append(c)
    return np.concatenate(pts), np.concatenate(peaks)


def keypoint_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, ref: np.ndarray,
                     alpha: float = PCK_ALPHA) -> dict:
    """PCK@alpha, OKS-like score and normalized error over the keypoints where `mask` (n, 7) is True."""
    d = np.linalg.norm(pred - target, axis=-1) / ref[:, None]  # distance in person sizes
    n = int(mask.sum())
    if n == 0:
        raise ValueError("no teacher keypoints to evaluate against (no usable person in the images?)")
    oks = np.exp(-(d**2) / (2 * (2 * COCO_SIGMAS[None, :]) ** 2))
    per_kp = {name: (float((d[:, k] <= alpha)[mask[:, k]].mean()) if mask[:, k].any() else None)
              for k, name in enumerate(NAMES)}
    return {
        f"pck@{alpha:g}": float((d <= alpha)[mask].mean()),
        "pck@0.1": float((d <= 0.1)[mask].mean()),
        "oks": float(oks[mask].mean()),
        "mean_error": float(d[mask].mean()),
        "keypoints": n,
        "per_keypoint_pck": per_kp,
    }


def person_hits(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, ref: np.ndarray, owner: np.ndarray,
                people: int, alpha: float = PCK_ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Per person and keypoint, summed over the person's views: keypoints within alpha person sizes (people, 7)
    and keypoints evaluated (people, 7). The unit a bootstrap over people resamples (`bootstrap_people`)."""
    d = np.linalg.norm(pred - target, axis=-1) / ref[:, None]
    hits, counts = np.zeros((people, 7), np.int64), np.zeros((people, 7), np.int64)
    np.add.at(hits, owner, (d <= alpha) & mask)
    np.add.at(counts, owner, mask)
    return hits, counts


def evaluate_regions(net: PoseNet, regions: D.Regions, views_per_person: int = 4, seed: int = 0) -> dict:
    """Metrics over all views, plus `per_person` PCK@0.2 hits and counts per keypoint (lists, people x 7)."""
    imgs, kps, vis, refs, owner = D.eval_views(regions, views_per_person, seed, net.resolution)
    inside = (kps[..., 0] >= 0) & (kps[..., 0] < net.resolution) & (kps[..., 1] >= 0) & (kps[..., 1] < net.resolution)
    pred, _ = predict(net, imgs)
    hits, counts = person_hits(pred, kps, vis & inside, refs, owner, len(regions))
    return {**keypoint_metrics(pred, kps, vis & inside, refs), "people": len(regions), "views": len(imgs),
            "per_person": {"source": list(regions.source), f"hits@{PCK_ALPHA:g}": hits.tolist(),
                           "keypoints": counts.tolist()}}


def bootstrap_people(hits, counts, baseline_hits=None, resamples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Pooled PCK over training seeds with a percentile bootstrap interval over held-out PEOPLE.

    hits (seeds, people): keypoints within the PCK threshold per training seed and person (all the person's
    views summed, so they move together); counts (people,): keypoints evaluated per person (the same for every
    seed and method: the views and teacher labels do not depend on the model). Figure: sum of hits / (seeds *
    sum of counts). Each draw resamples people with replacement and, independently, the training seeds (a
    two-way bootstrap: both the people and the training run are noise). With `baseline_hits` (same shape, same
    people, seed k trained like the method's seed k) the difference figure - baseline is bootstrapped paired:
    one draw uses the same people and seeds for both, and `verdict` says "within noise" when its interval
    contains 0, else "better" or "worse". Deterministic for a given `seed`.
    """
    hits = np.atleast_2d(np.asarray(hits, dtype=float))
    counts = np.asarray(counts, dtype=float)
    n_seeds, n_people = hits.shape
    if counts.shape != (n_people,):
        raise ValueError(f"counts has shape {counts.shape}; expected ({n_people},), one per person")
    if counts.sum() <= 0 or (hits < 0).any() or (hits > counts).any():
        raise ValueError("need 0 <= hits <= counts per person and at least one evaluated keypoint")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError("resamples must be >= 1 and level in (0, 1)")
    rng = np.random.default_rng(seed)
    # multiplicity of each person / seed in each draw
    w_people = np.stack([np.bincount(rng.integers(0, n_people, n_people), minlength=n_people) for _ in range(resamples)])
    w_seeds = np.stack([np.bincount(rng.integers(0, n_seeds, n_seeds), minlength=n_seeds) for _ in range(resamples)])
    tail = 100 * (1 - level) / 2

    def figure(h):
        return h.sum() / (n_seeds * counts.sum())

    def draws(h):
        return np.einsum("bs,sp,bp->b", w_seeds, h, w_people) / (n_seeds * (w_people @ counts))

    def interval(x):
        lo, hi = np.percentile(x, [tail, 100 - tail])
        return [float(lo), float(hi)]

    out = {"value": float(figure(hits)), "ci": interval(draws(hits)),
           "seed_values": [float(v) for v in hits.sum(axis=1) / counts.sum()],
           "level": level, "resamples": resamples, "people": n_people, "seeds": n_seeds}
    if baseline_hits is not None:
        base = np.atleast_2d(np.asarray(baseline_hits, dtype=float))
        if base.shape != hits.shape or (base < 0).any() or (base > counts).any():
            raise ValueError(f"baseline_hits has shape {base.shape}; expected {hits.shape} within the counts")
        lo, hi = interval(draws(hits) - draws(base))
        out.update(diff=float(figure(hits) - figure(base)), diff_ci=[lo, hi],
                   verdict="within noise" if lo <= 0 <= hi else ("better" if lo > 0 else "worse"))
    return out


def original_regions(paths, people: dict | None = None, progress: bool = True) -> tuple[D.Regions, dict]:
    """Regions of the teacher-labelled people of the ORIGINAL images (and the detections, for reuse)."""
    from toolkit.images import load_rgb

    people = D.people_for(paths, people, progress)
    labels = D.teacher_labels(people)
    images = {k: load_rgb(k) for k, v in labels.items() if v}
    return D.build_regions(images, labels), people


def load_pose_model(run) -> tuple[PoseNet, dict]:
    """The PoseNet of a `toolkit pose train` run and its manifest (any other artifact is refused clearly)."""
    from toolkit.artifacts import read_manifest
    from toolkit.pose.train import STAGE

    manifest = read_manifest(run, expect_stage=STAGE)
    net = PoseNet.from_pretrained(run)
    if net.verifier:
        raise ValueError(f"--model {run}: a face-presence verifier (preset {net.preset.name}), not a keypoint "
                         "model; it is evaluated inside the frame pipeline (benchmarks/multi_person_frames.py)")
    return net, manifest


def load_pose(run_dir, device=None) -> PoseNet:
    """The PoseNet of a `pose` run, in eval mode (`toolkit.artifacts.LOADERS["pose"]`; runs on the CPU)."""
    return load_pose_model(run_dir)[0].eval()


def evaluate_pose(images, model_run, views_per_person: int = 4, seed: int = 0, people: dict | None = None,
                  progress: bool = True) -> dict:
    """`toolkit pose eval`: the metrics of `model_run` on the original images of `images` (a folder or file)."""
    net, manifest = load_pose_model(model_run)
    paths = D.list_image_files(images)
    regions, _ = original_regions(paths, people, progress)
    if len(regions) == 0:
        raise ValueError(f"--images {images}: the teacher found no usable person to evaluate against "
                         f"({len(paths)} image(s))")
    metrics = evaluate_regions(net, regions, views_per_person, seed)
    return {"model": str(Path(model_run)), "method": manifest.get("method"), "images": len(paths),
            "views_per_person": views_per_person, "seed": seed, **metrics}


def format_report(r: dict) -> str:
    lines = [f"pose model {r['model']} (trained on {r.get('method')} images) vs the BlazePose teacher",
             f"  {r['images']} original image(s), {r['people']} people, {r['views']} views, {r['keypoints']} keypoints",
             f"  PCK@0.2 {r['pck@0.2']:.3f}   PCK@0.1 {r['pck@0.1']:.3f}   OKS {r['oks']:.3f}   "
             f"mean error {r['mean_error']:.3f} person sizes"]
    lines.append("  per keypoint PCK@0.2: " + ", ".join(
        f"{k} {v:.2f}" if v is not None else f"{k} n/a" for k, v in r["per_keypoint_pck"].items()))
    return "\n".join(lines)


def predict_keypoints(net, image_uint8):
    """(7, 2) keypoints in pixels of `image_uint8` and (7,) confidences; the image is resized to the model's
    input (use a frame roughly framed on one person's head and shoulders, as in training)."""
    import cv2

    from toolkit.images import load_rgb

    img = load_rgb(image_uint8)
    h, w = img.shape[:2]
    S = net.resolution
    view = cv2.resize(img, (S, S), interpolation=cv2.INTER_AREA if min(h, w) > S else cv2.INTER_LINEAR)
    pts, conf = predict(net, view[None])
    return pts[0] * np.array([w / S, h / S]), conf[0]


# ---------------------------------------------------------------------------------------------- COCO labels


def _result(image_id, keypoints: np.ndarray, score: float) -> dict:
    kp = np.concatenate([keypoints, np.ones((len(keypoints), 1))], axis=1)
    return {"image_id": image_id, "category_id": 1, "keypoints": kp.reshape(-1).tolist(), "score": float(score)}


@torch.no_grad()
def coco_predictions(net: PoseNet, coco_set, progress: bool = True) -> list[dict]:
    """COCO keypoint results (image px, the 7 points) of `net` on the ORIGINAL images of `coco_set`.

    Single-person (heatmap) nets run top-down like COCO's top-down baselines: one centred view per labelled
    person (the evaluation view of `pose eval --images`), score = mean heatmap peak. Multi-person nets see the
    whole image, letterboxed to their input, and report every head they find, score = its centre value."""
    import cv2
    from tqdm.auto import tqdm

    from toolkit.images import letterbox, load_rgb
    from toolkit.pose.multi import decode

    S = net.resolution
    dets = []
    for im in tqdm(coco_set.images, desc="predict (COCO images)", disable=not progress, leave=False):
        image = load_rgb(im.path)
        if net.multi_person:
            frame, scale, offset = letterbox(image, S)
            out = net(D.to_model_input(frame[None]))[0].numpy()
            dets += [_result(im.id, (kp - offset) / scale, score) for kp, _, score in decode(out, net.stride)]
            continue
        labels = im.labels
        if not labels:
            continue
        views, back = [], []
        for lab in labels:
            region, kp, ref = D.cut_region(image, lab)
            Mv = D.view_transform(D.REGION_PX, kp[lab.visible].mean(axis=0), ref, S, D.EVAL_CROP_SCALE)
            views.append(D.warp(region, Mv, S))
            # view px -> region px -> image px
            back.append((cv2.invertAffineTransform(Mv), cv2.invertAffineTransform(D.region_transform(lab))))
        pts, peaks = predict(net, np.stack(views))
        for (to_region, to_image), p, c in zip(back, pts, peaks):
            q = p @ to_region[:, :2].T + to_region[:, 2]
            dets.append(_result(im.id, q @ to_image[:, :2].T + to_image[:, 2], float(np.mean(c))))
    return dets


def coco_metrics(coco_set, detections: list[dict]) -> dict:
    """pycocotools' keypoint evaluation of `detections` (COCO results of the 7 points, image px) against the
    labels of `coco_set` (toolkit.pose.coco), with COCO's sigmas of those 7 points.

    - AP / AP50 / AP75 / AP medium / AP large / AR: COCOeval, iouType "keypoints" (crowds and people who are
      no target are ignore ground truth: a detection on them is no false positive).
    - OKS: per target person, the best OKS of any detection (pycocotools' computeOks; 0 if none), averaged;
      people_found: how many have one of OKS >= 0.5.
    - PCK@0.2 / @0.1, per keypoint: that best detection's labelled points within 0.2 / 0.1 person sizes
      (person size as in training: max(face box side, shoulder width)); a person nobody detected counts as
      missed.
    """
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_data = coco_set.ground_truth()
    targets = [a for a in gt_data["annotations"] if a["num_keypoints"] > 0]
    if not targets:
        raise ValueError(f"{coco_set.annotation}: no person to evaluate against (people need >= {D.MIN_VISIBLE} "
                         f"of the 7 points labelled and >= {D.MIN_PERSON_PX:.0f} px)")
    names = ("ap", "ap50", "ap75", "ap_medium", "ap_large", "ar", "ar50", "ar75", "ar_medium", "ar_large")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and tables
        gt = COCO()
        gt.dataset = gt_data
        gt.createIndex()
        E = None
        if detections:
            E = COCOeval(gt, gt.loadRes([dict(d) for d in detections]), iouType="keypoints")
            E.params.kpt_oks_sigmas = COCO_SIGMAS.copy()
            E.evaluate()
            E.accumulate()
            E.summarize()
    stats = {n: (float(v) if v >= 0 else None) for n, v in zip(names, E.stats)} if E else dict.fromkeys(names, 0.0)

    best_oks, pred, people = [], [], []
    for im in gt_data["images"]:
        gts = E._gts[im["id"], 1] if E else gt.loadAnns(gt.getAnnIds(imgIds=[im["id"]]))
        dts, ious = [], []
        if E:  # computeOks' row order: detections by decreasing score, at most maxDets
            dts = E._dts[im["id"], 1]
            dts = [dts[i] for i in np.argsort([-d["score"] for d in dts], kind="mergesort")][:E.params.maxDets[-1]]
            ious = E.ious[im["id"], 1]
        for j, g in enumerate(gts):
            if g["num_keypoints"] == 0 or g["iscrowd"]:
                continue
            people.append(g)
            if len(dts):
                i = int(np.argmax(ious[:, j]))
                best_oks.append(float(ious[i, j]))
                pred.append(np.asarray(dts[i]["keypoints"], np.float64).reshape(-1, 3)[:, :2])
            else:
                best_oks.append(0.0)
                pred.append(np.full((len(NAMES), 2), np.inf))  # missed: never within a threshold
    target_kp = np.stack([np.asarray(g["keypoints"], np.float64).reshape(-1, 3) for g in people])
    ref = np.asarray([g["person_size"] for g in people])
    pck = keypoint_metrics(np.stack(pred), target_kp[..., :2], target_kp[..., 2] > 0, ref)
    pck.pop("oks"), pck.pop("mean_error")  # the OKS here is COCO's; a missed person has no error to average
    return {**stats, "oks": float(np.mean(best_oks)), **pck, "people": len(targets),
            "people_found": int(sum(o >= 0.5 for o in best_oks)), "detections": len(detections)}


def evaluate_coco(annotation, images_root, model_run, progress: bool = True) -> dict:
    """`toolkit pose eval --coco`: `model_run` on the original images of a COCO person-keypoints file."""
    from toolkit.pose.coco import load_coco

    coco_set = load_coco(annotation, images_root)
    net, manifest = load_pose_model(model_run)
    metrics = coco_metrics(coco_set, coco_predictions(net, coco_set, progress))
    return {"model": str(Path(model_run)), "method": manifest.get("method"), "labels": "coco",
            "multi_person": net.multi_person, **coco_set.counts(), **metrics}


def format_coco_report(r: dict) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    how = "whole images, letterboxed" if r["multi_person"] else "one centred view per labelled person"
    lines = [f"pose model {r['model']} (trained on {r.get('method')} images) vs COCO labels {r['annotation']}",
             f"  {r['images']} image(s) ({r['images_missing']} listed but missing), {r['people']} labelled people "
             f"({r['crowd_regions']} crowd region(s), {r['ignored_people']} other people ignored), "
             f"{r['keypoints']} labelled keypoints; {how}",
             f"  OKS {f(r['oks'])} (mean over people, COCO sigmas)   AP {f(r['ap'])}   AP50 {f(r['ap50'])}   "
             f"AP75 {f(r['ap75'])}   AR {f(r['ar'])}   ({r['people_found']}/{r['people']} people found at OKS >= 0.5)",
             f"  PCK@0.2 {r['pck@0.2']:.3f}   PCK@0.1 {r['pck@0.1']:.3f} (person sizes)"]
    lines.append("  per keypoint PCK@0.2: " + ", ".join(
        f"{k} {v:.2f}" if v is not None else f"{k} n/a" for k, v in r["per_keypoint_pck"].items()))
    return "\n".join(lines)
