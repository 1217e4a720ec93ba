"""Photo -> sketch with controlnet-aux line detectors (black lines on white, as the GAM expects).

``lineart`` (LineartStandardDetector) and ``canny`` need no weights; ``hed``/``pidinet``/``lineart_model``
load the lllyasviel/Annotators weights from a hub id or a local folder (real users download them).
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

DETECTORS = ("lineart", "canny", "hed", "pidinet", "lineart_model")


def photo_to_sketch(
    image: Image.Image, detector: str = "lineart", resolution: int = 512, annotators: str = "lllyasviel/Annotators"
) -> Image.Image:
    """A black-on-white line drawing of ``image`` at its own size."""
    if detector not in DETECTORS:
        raise ValueError(f"detector={detector!r} is not one of {', '.join(DETECTORS)}")
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image, got {type(image).__name__}")
    rgb = image.convert("RGB")
    size = rgb.size
    if detector == "lineart":
        from controlnet_aux.lineart_standard import LineartStandardDetector

        lines = LineartStandardDetector()(rgb, detect_resolution=resolution, output_type="pil")
    elif detector == "canny":
        from controlnet_aux import CannyDetector

        lines = CannyDetector()(rgb, detect_resolution=resolution, image_resolution=resolution, output_type="pil")
    else:
        from pipelines.core.registry import from_pretrained

        import controlnet_aux

        cls = {"hed": controlnet_aux.HEDdetector, "pidinet": controlnet_aux.PidiNetDetector,
               "lineart_model": controlnet_aux.LineartDetector}[detector]
        lines = from_pretrained(cls, annotators)(rgb, detect_resolution=resolution, output_type="pil")
    lines = lines.convert("L").resize(size, Image.BILINEAR)
    sketch = ImageOps.invert(lines)  # detectors draw white lines on black
    # Clean near-white noise so the sketch reads as lines on paper.
    array = np.asarray(sketch).copy()
    array[array > 235] = 255
    return Image.fromarray(array).convert("RGB")
