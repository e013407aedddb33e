"""FDF-format face datasets: the torch Dataset, `data check` and `data build`.

The crop geometry lives in `toolkit.crop` (shared with anonymize, bench and the on-device pipeline); it is
light (numpy + OpenCV) and re-exported here eagerly; the torch-based parts load on first use.
"""

from toolkit.crop import (
    crop_and_resize,
    expanded_crop_box,
    face_box_in_crop,
    face_mask,
    from_crop_coords,
    to_crop_coords,
)

_LAZY = {
    "FDFDataset": "toolkit.data.fdf",
    "keypoint_maps": "toolkit.data.fdf",
    "check_dataset": "toolkit.data.check",
    "build_dataset": "toolkit.data.build",
}


def __getattr__(name):  # PEP 562: a name loads its module on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "crop_and_resize",
    "expanded_crop_box",
    "face_box_in_crop",
    "face_mask",
    "from_crop_coords",
    "to_crop_coords",
    *_LAZY,
]
