"""Human keypoint labels from a COCO person-keypoints file (`toolkit pose train|eval --coco ANN --images-root DIR`).

A COCO file becomes what the BlazePose teacher path produces (`toolkit.pose.data.PersonLabel` per usable person),
so single- and multi-person training, anonymization and evaluation reuse the same code. What is read:

- the person category: the one whose `keypoints` are COCO's 17 names in COCO order (the 7 points are its first 7,
  `toolkit.keypoints.COCO17_INDICES`); annotations of other categories are not read.
- images: `id`, `file_name` (under --images-root), `width` / `height` (checked against the file on disk).
  Images listed but missing on disk are skipped and counted (`missing`); none left is an error.
- each person annotation: a keypoint with v=0 is not labelled, v=1 (labelled, occluded) and v=2 are labelled;
  a labelled point outside the image is treated as not labelled. A person is a training target when
  `labels_from_persons` accepts it (>= 3 of the 7 points labelled, person size >= 8 px).
- ignore regions, where no loss applies (neither a target nor "background"): every `iscrowd` annotation (its
  segmentation, RLE or polygons; its bbox without one) and the bbox of every person who is not a target
  (`num_keypoints == 0`, only other body parts labelled, too small). In evaluation those people are COCO
  "ignore" ground truth, so a detection on them is not a false positive.

Person size (`ref`, the unit of crops and PCK) needs a face box, which COCO does not have: it is estimated from
the labelled face points (`face_box_from_labels`), calibrated on the teacher's face boxes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.keypoints import COCO17_INDICES, NAMES, NUM_KEYPOINTS
from toolkit.pose import data as D

COCO17_NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                "right_knee", "left_ankle", "right_ankle")
FACE_POINTS = (0, 1, 2, 3, 4)  # nose, eyes, ears (indices into the 7)
# Face box side from labelled face points. Measured on the BlazeFace boxes of the bundled portraits
# (astronaut, obama*, biden, messi5; 2026-12-06): box side / ear-to-ear distance 0.70-0.80, / eye distance
# 0.37-0.44, / farthest face point from the nose (Chebyshev) 0.31-0.52.
SIDE_PER_EAR_DISTANCE = 1.0 / 0.75
SIDE_PER_EYE_DISTANCE = 1.0 / 0.40
SIDE_PER_REACH = 1.0 / 0.42
PYCOCOTOOLS_HINT = "pycocotools is needed for --coco: pip install pycocotools (the project's 'coco' extra)"


def face_box_from_labels(keypoints: np.ndarray, labelled: np.ndarray) -> np.ndarray | None:
    """A square head box (x0, y0, x1, y1) from labelled face points, or None when no face point is labelled.

    Side: the largest of what the ear distance, the eye distance and the farthest face point from the centre
    imply (so profiles, with one eye and one ear, still get a head-sized box); centre: the nose, or the mean of
    the labelled face points."""
    face = [k for k in FACE_POINTS if labelled[k]]
    if not face:
        return None
    centre = keypoints[0] if labelled[0] else keypoints[face].mean(axis=0)
    side = 0.0
    if labelled[3] and labelled[4]:
        side = max(side, SIDE_PER_EAR_DISTANCE * float(np.linalg.norm(keypoints[3] - keypoints[4])))
    if labelled[1] and labelled[2]:
        side = max(side, SIDE_PER_EYE_DISTANCE * float(np.linalg.norm(keypoints[1] - keypoints[2])))
    reach = max(float(np.abs(keypoints[k] - centre).max()) for k in face)
    side = max(side, SIDE_PER_REACH * reach)
    return np.array([centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2])


@dataclass
class CocoPerson:
    """One person annotation: its 7 points (image px) and which are labelled, and what it becomes."""

    ann_id: object
    keypoints: np.ndarray  # (7, 2)
    visible: np.ndarray  # (7,) bool: labelled (v > 0) and inside the image
    bbox: list  # COCO [x, y, w, h]
    area: float
    iscrowd: bool
    segmentation: object
    face_box: np.ndarray | None = None  # estimated from the labelled face points
    label: D.PersonLabel | None = None  # set when the person is a training / evaluation target


@dataclass
class CocoImage:
    id: object
    path: Path
    width: int
    height: int
    persons: list = field(default_factory=list)

    @property
    def labels(self) -> list[D.PersonLabel]:
        return [p.label for p in self.persons if p.label is not None]

    def face_points(self) -> list[np.ndarray]:
        """The labelled face points (nose, eyes, ears) of every person: faces the anonymizer must cover."""
        out = []
        for p in self.persons:
            pts = p.keypoints[[k for k in FACE_POINTS if p.visible[k]]]
            if len(pts):
                out.append(pts)
        return out

    def ignore_mask(self) -> np.ndarray | None:
        """HxW bool of the ignore regions (crowd segmentations, bboxes of non-target people); None if none."""
        ignored = [p for p in self.persons if p.label is None]
        if not ignored:
            return None
        mask = np.zeros((self.height, self.width), bool)
        for p in ignored:
            if p.iscrowd and p.segmentation:
                mask |= _segmentation_mask(p.segmentation, self.height, self.width)
            else:
                x, y, w, h = p.bbox
                x0, y0 = max(int(np.floor(x)), 0), max(int(np.floor(y)), 0)
                mask[y0:max(int(np.ceil(y + h)), y0), x0:max(int(np.ceil(x + w)), x0)] = True
        return mask


@dataclass
class CocoSet:
    annotation: Path
    images_root: Path
    images: list  # CocoImage, the ones present on disk
    missing: list  # file_name of images listed but not on disk

    def paths(self) -> list[str]:
        return [str(im.path) for im in self.images]

    def labels(self) -> dict[str, list[D.PersonLabel]]:
        return {str(im.path): im.labels for im in self.images}

    def ignore_masks(self) -> dict[str, np.ndarray]:
        return {str(im.path): m for im in self.images if (m := im.ignore_mask()) is not None}

    def face_points(self) -> dict[str, list[np.ndarray]]:
        return {str(im.path): im.face_points() for im in self.images}

    def counts(self) -> dict:
        persons = [p for im in self.images for p in im.persons]
        return {"annotation": str(self.annotation.resolve()), "images_root": str(self.images_root.resolve()),
                "images": len(self.images), "images_missing": len(self.missing),
                "missing_examples": self.missing[:5], "people": len(persons),
                "targets": sum(p.label is not None for p in persons),
                "crowd_regions": sum(p.iscrowd for p in persons),
                "ignored_people": sum(p.label is None and not p.iscrowd for p in persons)}

    def ground_truth(self) -> dict:
        """The set as a COCO keypoint dataset of the 7 points, for pycocotools: targets keep their labelled
        points (v=2), every other person becomes ignore ground truth (num_keypoints 0), crowds stay crowds."""
        images, anns = [], []
        for im in self.images:
            images.append({"id": im.id, "width": im.width, "height": im.height, "file_name": str(im.path)})
            for p in im.persons:
                target = p.label is not None
                kp = np.zeros((NUM_KEYPOINTS, 3))
                if target:
                    kp[:, :2] = np.where(p.visible[:, None], p.keypoints, 0.0)
                    kp[:, 2] = np.where(p.visible, 2, 0)
                anns.append({"id": len(anns) + 1, "image_id": im.id, "category_id": 1, "iscrowd": int(p.iscrowd),
                             "bbox": [float(v) for v in p.bbox], "area": float(p.area),
                             "keypoints": kp.reshape(-1).tolist(),
                             "num_keypoints": int(p.visible.sum()) if target else 0,
                             "source_annotation_id": p.ann_id, "person_size": p.label.ref if target else None})
        return {"images": images, "annotations": anns,
                "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(NAMES),
                                "skeleton": []}]}


def teacher_to_coco(images_root, people: dict | None = None, progress: bool = True) -> dict:
    """The BlazePose teacher's labels of every image under `images_root` as a COCO person-keypoints dict (17
    keypoints, the 7 labelled where the teacher saw them with v=2, the other 10 unlabelled; bbox: head,
    shoulders and the torso below; area: the bbox's): to check or correct by hand in a COCO annotation tool and
    train with --coco. `people` (str(path) -> detections) reuses detections already made."""
    from toolkit.pose.data import list_image_files, people_for

    root = Path(images_root)
    paths = list_image_files(root)
    people = people_for(paths, people, progress)
    data = {"info": {"description": f"BlazePose teacher labels (toolkit.detect) of {root}"}, "images": [],
            "annotations": [], "categories": [{"id": 1, "name": "person", "supercategory": "person",
                                               "keypoints": list(COCO17_NAMES), "skeleton": []}]}
    for image_id, path in enumerate(paths, start=1):
        w, h = _image_size(Path(path))
        data["images"].append({"id": image_id, "file_name": Path(path).relative_to(root).as_posix(),
                               "width": w, "height": h})
        for person in people[str(path)]:
            kp = np.zeros((len(COCO17_NAMES), 3))
            kp[list(COCO17_INDICES), :2] = np.where(person.visible[:, None], person.keypoints, 0.0)
            kp[list(COCO17_INDICES), 2] = np.where(person.visible, 2, 0)
            pts = np.vstack([person.keypoints[person.visible], np.asarray(person.face_box).reshape(2, 2)])
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            span = float((hi - lo).max())
            x0, y0 = max(lo[0] - span / 4, 0.0), max(lo[1] - span / 4, 0.0)
            x1, y1 = min(hi[0] + span / 4, w), min(hi[1] + 2 * span, h)
            data["annotations"].append({
                "id": len(data["annotations"]) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "keypoints": [round(float(v), 2) for v in kp.reshape(-1)], "num_keypoints": int(person.visible.sum()),
                "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                "area": round(float((x1 - x0) * (y1 - y0)), 2), "segmentation": []})
    return data


def _segmentation_mask(seg, height: int, width: int) -> np.ndarray:
    import warnings

    from pycocotools import mask as mask_utils

    if isinstance(seg, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = seg
    with warnings.catch_warnings():  # pycocotools 2.0.11's decoder warns about numpy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def require_pycocotools() -> None:
    try:
        import pycocotools  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(PYCOCOTOOLS_HINT) from exc


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) as `toolkit.images.load_rgb` returns the image (EXIF rotation applied)."""
    from PIL import Image

    from toolkit.images import ImageReadError

    try:
        with Image.open(path) as img:
            w, h = img.size
            if img.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientation: rotated by 90 degrees
                w, h = h, w
    except OSError as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc})") from exc
    return w, h


def _person_category(data: dict, where: str) -> int:
    cats = [c for c in data["categories"] if isinstance(c, dict) and isinstance(c.get("keypoints"), list)]
    if not cats:
        raise ValueError(f"{where}: not a COCO person-keypoints file: no category has a 'keypoints' list "
                         f"(COCO's 'person' category lists its 17 keypoint names)")
    cat = next((c for c in cats if c.get("name") == "person"), cats[0])
    names = tuple(cat["keypoints"])
    if names != COCO17_NAMES or tuple(names[i] for i in COCO17_INDICES) != NAMES:
        raise ValueError(f"{where}: category {cat.get('name')!r} has keypoints {list(names)[:8]}...; expected "
                         f"COCO's 17 person keypoints in COCO order ({', '.join(COCO17_NAMES)})")
    if "id" not in cat:
        raise ValueError(f"{where}: category {cat.get('name')!r} has no 'id'")
    return cat["id"]


def _person(ann: dict, width: int, height: int, where: str) -> CocoPerson:
    ann_id = ann.get("id")
    for key in ("bbox", "area"):
        if key not in ann:
            raise ValueError(f"{where}: annotation {ann_id!r} has no {key!r}")
    iscrowd = bool(ann.get("iscrowd", 0))
    raw = ann.get("keypoints")
    if raw is None and iscrowd:
        raw = [0] * 3 * len(COCO17_NAMES)
    if not isinstance(raw, list) or len(raw) != 3 * len(COCO17_NAMES):
        raise ValueError(f"{where}: annotation {ann_id!r}: 'keypoints' must be {3 * len(COCO17_NAMES)} numbers "
                         f"(x, y, v for COCO's 17 keypoints), got "
                         f"{'none' if raw is None else (len(raw) if isinstance(raw, list) else type(raw).__name__)}")
    kp3 = np.asarray(raw, np.float64).reshape(-1, 3)[list(COCO17_INDICES)]
    kp = kp3[:, :2].copy()
    inside = (kp[:, 0] >= 0) & (kp[:, 0] <= width) & (kp[:, 1] >= 0) & (kp[:, 1] <= height)
    visible = (kp3[:, 2] > 0) & inside & np.isfinite(kp).all(axis=1) & (not iscrowd)
    bbox = ann["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4):
        raise ValueError(f"{where}: annotation {ann_id!r}: 'bbox' must be [x, y, width, height]")
    p = CocoPerson(ann_id, kp, visible, [float(v) for v in bbox], float(ann["area"]), iscrowd,
                   ann.get("segmentation"))
    p.face_box = face_box_from_labels(kp, visible)
    if p.face_box is not None:
        labels = D.labels_from_persons([p])
        p.label = labels[0] if labels else None
    return p


def load_coco(annotation, images_root) -> CocoSet:
    """Read and check a COCO person-keypoints file; every problem is a ValueError / FileNotFoundError that names
    the file and what is wrong or missing."""
    from toolkit.anonymize.media import read_coco_file

    require_pycocotools()
    data, annotation, images_root = read_coco_file(annotation, images_root)
    where = str(annotation)
    if not isinstance(data, dict):
        raise ValueError(f"{where}: not a COCO annotation file (a JSON object with 'images', 'annotations' and "
                         f"'categories' expected)")
    absent = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if absent:
        raise ValueError(f"{where}: not a COCO person-keypoints file: no {', '.join(repr(k) for k in absent)} list")
    cat_id = _person_category(data, where)

    images, missing, by_id = [], [], {}
    root = images_root.resolve()
    for entry in data["images"]:
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("file_name"), str):
            raise ValueError(f"{where}: image entry without 'id' and 'file_name': {str(entry)[:120]}")
        if entry["id"] in by_id:
            raise ValueError(f"{where}: image id {entry['id']!r} is listed twice")
        rel = Path(entry["file_name"])
        path = images_root / rel
        if rel.is_absolute() or ".." in rel.parts or not path.resolve().is_relative_to(root):
            raise ValueError(f"{where}: file_name {entry['file_name']!r} points outside --images-root")
        by_id[entry["id"]] = None
        if not path.is_file():
            missing.append(entry["file_name"])
            continue
        w, h = _image_size(path)
        if ("width" in entry and entry["width"] != w) or ("height" in entry and entry["height"] != h):
            raise ValueError(f"{where}: image {entry['file_name']!r} is listed as {entry.get('width')}x"
                             f"{entry.get('height')} but {path} is {w}x{h}: the keypoints would not match it")
        by_id[entry["id"]] = CocoImage(entry["id"], path, w, h)
        images.append(by_id[entry["id"]])
    if missing:
        print(f"toolkit pose: {len(missing)} image(s) listed in {where} are not under --images-root {images_root}; "
              f"skipped (first: {missing[:3]})", file=sys.stderr)
    if not images:
        raise ValueError(f"{where}: none of its {len(data['images'])} image(s) is under --images-root {images_root} "
                         f"(first missing: {missing[:3]})")

    for ann in data["annotations"]:
        if not isinstance(ann, dict) or ann.get("category_id") != cat_id:
            continue
        if ann.get("image_id") not in by_id:
            raise ValueError(f"{where}: annotation {ann.get('id')!r} refers to image_id {ann.get('image_id')!r}, "
                             f"which is not in 'images'")
        im = by_id[ann["image_id"]]
        if im is not None:
            im.persons.append(_person(ann, im.width, im.height, where))
    return CocoSet(annotation, images_root, images, missing)
