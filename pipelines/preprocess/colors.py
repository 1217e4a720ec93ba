"""Colours for the colour adapter: hex parsing, flat swatches, and the dominant colour of a swatch photo.

Torch-free (the UI uses it too).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def parse_hex(value: str) -> tuple[int, int, int]:
    """'#rrggbb', 'rrggbb' or '#rgb' -> (r, g, b); ValueError naming the value otherwise."""
    text = str(value).strip()
    if text.startswith("rgb"):
        # Gradio's ColorPicker may hand back 'rgba(r, g, b, a)'.
        numbers = [float(x) for x in text[text.index("(") + 1 : text.index(")")].split(",")[:3]]
        return tuple(int(round(n)) for n in numbers)  # type: ignore[return-value]
    text = text.lstrip("#")
    if len(text) == 3:
        text = "".join(ch * 2 for ch in text)
    if len(text) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in text):
        raise ValueError(f"colour {value!r} is not a #rrggbb hex colour")
    return tuple(int(text[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def to_hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def swatch_from_hex(value: str, size: int = 224) -> Image.Image:
    """A flat colour swatch image (the colour adapter reads an image, not a number)."""
    return Image.new("RGB", (size, size), parse_hex(value))


def dominant_color(image: Image.Image, clusters: int = 4) -> tuple[int, int, int]:
    """The most common colour of a swatch photo (k-means on a thumbnail, near-white background ignored)."""
    thumb = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32).reshape(-1, 3)
    keep = thumb[(thumb < 245).any(axis=1)]
    pixels = keep if len(keep) > 32 else thumb
    rng = np.random.default_rng(0)
    centres = pixels[rng.choice(len(pixels), size=min(clusters, len(pixels)), replace=False)]
    for _ in range(10):
        labels = np.argmin(((pixels[:, None] - centres[None]) ** 2).sum(-1), axis=1)
        centres = np.stack([pixels[labels == k].mean(0) if (labels == k).any() else centres[k] for k in range(len(centres))])
    counts = np.bincount(labels, minlength=len(centres))
    return tuple(int(round(c)) for c in centres[counts.argmax()])  # type: ignore[return-value]
