"""Face + 7-keypoint detection (BlazeFace / BlazePose .tflite models run with ai-edge-litert).

    from toolkit.detect import detect, draw
    people = detect("photo.jpg")            # list[Person], best first
    people[0].face_box, people[0].keypoints  # (4,), (7, 2) pixels, COCO order (toolkit.keypoints.NAMES)
    people[0].face_box_unclipped             # (4,) the whole face, may run past the image border
    preview = draw("photo.jpg", people)      # HxWx3 uint8 with boxes and keypoints

`face_box` is always inside the image (clipped, non-empty); see toolkit.detect.pipeline for the contract.
"""

from toolkit.detect.preview import draw
from toolkit.detect.pipeline import Person, detect

__all__ = ["Person", "detect", "draw"]

