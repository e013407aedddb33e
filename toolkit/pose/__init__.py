"""Tiny heatmap pose estimator for microcontrollers, distilled from BlazePose on anonymized images.

    toolkit pose train --images DIR --out RUN --model TEACHER_RUN     # trains on ddpm-anonymized images
    toolkit pose eval  --images DIR --model RUN                       # PCK / OKS vs the teacher, originals

Python API:
    from toolkit.pose import PoseNet, train_pose, evaluate_pose, predict_keypoints
"""

from toolkit.pose.model import (PRESETS, PoseNet, budget, decode_heatmaps, decode_heatmaps_int8, disallowed_modules,
                                get_preset)


def train_pose(*args, **kwargs):
    """See `toolkit.pose.train.train_pose`."""
    from toolkit.pose.train import train_pose as _impl

    return _impl(*args, **kwargs)


def evaluate_pose(*args, **kwargs):
    """See `toolkit.pose.evaluate.evaluate_pose`."""
    from toolkit.pose.evaluate import evaluate_pose as _impl

    return _impl(*args, **kwargs)


def predict_keypoints(net: PoseNet, image_uint8):
    """(7, 2) keypoints in pixels of `image_uint8` and (7,) confidences; the image is resized to the model's
    input (use a frame roughly framed on one person's head and shoulders, as in training)."""
    import cv2
    import numpy as np

    from toolkit.images import load_rgb
    from toolkit.pose.evaluate import predict

    img = load_rgb(image_uint8)
    h, w = img.shape[:2]
    S = net.resolution
    view = cv2.resize(img, (S, S), interpolation=cv2.INTER_AREA if min(h, w) > S else cv2.INTER_LINEAR)
    pts, conf = predict(net, view[None])
    return pts[0] * np.array([w / S, h / S]), conf[0]


__all__ = ["PRESETS", "PoseNet", "budget", "decode_heatmaps", "decode_heatmaps_int8", "disallowed_modules",
           "evaluate_pose", "get_preset", "predict_keypoints", "train_pose"]
