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


def anonymize_files(*args, **kwargs):
    """See `toolkit.anonymize.runner.anonymize_files`."""
    from toolkit.anonymize.runner import anonymize_files as _impl

    return _impl(*args, **kwargs)


__all__ = ["METHODS", "ON_MISS", "FaceNotAnonymizedError", "ImageResult", "Options", "anonymize_batch",
           "anonymize_files", "anonymize_image"]
