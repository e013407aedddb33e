"""Tiny heatmap pose estimator for microcontrollers, distilled from BlazePose on anonymized images.

    toolkit pose train --images DIR --out RUN --model TEACHER_RUN     # trains on ddpm-anonymized images
    toolkit pose eval  --images DIR --model RUN                       # PCK / OKS vs the teacher, originals
    toolkit pose train --coco ANN.json --images-root DIR --out RUN ... # human COCO keypoint labels instead
    toolkit pose eval  --coco ANN.json --images-root DIR --model RUN  # OKS / AP (pycocotools) and PCK

Python API:
    from toolkit.pose import PoseNet, train_pose, evaluate_pose, predict_keypoints, load_pose
"""

from toolkit.pose.model import (PRESETS, PoseNet, budget, decode_heatmaps, decode_heatmaps_int8, disallowed_modules,
                                get_preset)

_LAZY = {"train_pose": "toolkit.pose.train", "evaluate_pose": "toolkit.pose.evaluate",
         "predict_keypoints": "toolkit.pose.evaluate", "load_pose": "toolkit.pose.evaluate"}


def __getattr__(name):  # PEP 562: a name loads its module on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PRESETS", "PoseNet", "budget", "decode_heatmaps", "decode_heatmaps_int8", "disallowed_modules",
           "evaluate_pose", "get_preset", "load_pose", "predict_keypoints", "train_pose"]
