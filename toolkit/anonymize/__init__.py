"""Face anonymization: replace every detected face with a generated one (or a classical baseline).

Python API:
    from toolkit.anonymize import anonymize_image
    out, faces = anonymize_image(image_uint8, method="ddpm", inpainter=load_inpainter(run), seed=0)

`anonymize_files` is what `toolkit anonymize` runs (files, folders, videos, COCO sets, JSON report).
"""

from toolkit.anonymize.pipeline import (
    METHODS,
    ON_MISS,
    FaceNotAnonymizedError,
    ImageResult,
    Options,
    anonymize_batch,
    anonymize_image,
)

_LAZY = {"anonymize_files": "toolkit.anonymize.runner"}


def __getattr__(name):  # PEP 562: a name loads its module on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["METHODS", "ON_MISS", "FaceNotAnonymizedError", "ImageResult", "Options", "anonymize_batch",
           "anonymize_files", "anonymize_image"]
