"""Privacy-friendly image preparation for TinyML.

The chain (each stage a sub-package and a CLI verb, each writing a self-describing artifact directory):
assets → detect → data → diffusion (train / sample) → anonymize → distill / pose → deploy (quantize, export) →
bench → onboard, and eval; docs/architecture.md is the map. Faces in one image: `from toolkit.detect import detect`.
"""

__version__ = "0.1.0"
