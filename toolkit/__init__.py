"""Privacy-friendly image preparation for TinyML.

The chain (each stage a sub-package and a CLI verb, each writing a self-describing artifact directory):
assets → detect → data → diffusion (train / sample) → anonymize → distill → deploy (quantize, export) → bench → eval
"""

__version__ = "0.1.0"


def detect(image, **kwargs):
    """Every person's face box and 7 FDF keypoints in `image` (path, PIL image or HxWx3 uint8 array).

    Thin lazy wrapper so `import toolkit` stays cheap; see `toolkit.detect.detect`.
    """
    from toolkit.detect import detect as _detect

    return _detect(image, **kwargs)
