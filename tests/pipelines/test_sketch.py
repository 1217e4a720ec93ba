"""Photo -> sketch with the controlnet-aux detectors that need no weights."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from pipelines.preprocess.sketch import photo_to_sketch


@pytest.mark.parametrize("detector", ["lineart", "canny"])
def test_real_photo_becomes_black_lines_on_white(detector):
    photo = Image.fromarray(data.astronaut()).resize((256, 256))
    sketch = photo_to_sketch(photo, detector, resolution=256)
    grey = np.asarray(sketch.convert("L"))
    assert sketch.size == photo.size and sketch.mode == "RGB"
    assert np.median(grey) > 200  # mostly paper
    assert (grey < 100).mean() > 0.01  # and some dark lines


def test_unknown_detector_and_bad_input():
    with pytest.raises(ValueError, match="detector='pencil'"):
        photo_to_sketch(Image.new("RGB", (64, 64)), "pencil")
    with pytest.raises(TypeError, match="PIL image"):
        photo_to_sketch(np.zeros((64, 64, 3)), "canny")
