"""Fit any photo to the model canvas (3:4 W:H) and put the result back into the original photo.

The geometry of one fit is recorded in :class:`FitInfo`: the original is scaled by ``scale`` to
``resized_size`` and placed with its top-left corner at ``offset`` on the canvas (a negative offset means
the canvas crops it, a positive one means padding). Everything else (masks, mapping back, paste-back)
derives from those three numbers, so a round trip is exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter

from pipelines.preprocess.images import to_rgb
from pipelines.types import FIT_MODES

logger = logging.getLogger(__name__)

FitMode = Literal["crop", "pad", "stretch"]

WHITE = (255, 255, 255)


@dataclass(frozen=True)
class FitInfo:
    """How an original image was placed on a canvas."""

    original_size: tuple[int, int]  # (W, H) of the original photo
    canvas_size: tuple[int, int]  # (W, H) of the model canvas
    mode: str  # one of FIT_MODES
    scale: float  # canvas pixels per original pixel
    resized_size: tuple[int, int]  # (W, H) of the scaled original before cropping/padding
    offset: tuple[int, int]  # canvas position of the scaled original's top-left corner (may be negative)

    @property
    def canvas_box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the canvas area that shows the original."""
        left = max(self.offset[0], 0)
        top = max(self.offset[1], 0)
        right = min(self.offset[0] + self.resized_size[0], self.canvas_size[0])
        bottom = min(self.offset[1] + self.resized_size[1], self.canvas_size[1])
        return left, top, right, bottom

    @property
    def source_box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the original photo visible on the canvas, in original pixels."""
        left, top, right, bottom = self.canvas_box
        scale_x = self.original_size[0] / self.resized_size[0]
        scale_y = self.original_size[1] / self.resized_size[1]
        return (
            int(round((left - self.offset[0]) * scale_x)),
            int(round((top - self.offset[1]) * scale_y)),
            int(round((right - self.offset[0]) * scale_x)),
            int(round((bottom - self.offset[1]) * scale_y)),
        )


def _check_canvas(width: int, height: int) -> None:
    for label, value in (("width", width), ("height", height)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{label} must be an integer number of pixels, got {value!r}")
        if value < 8:
            raise ValueError(f"{label} must be at least 8 px, got {value}")


def compute_fit(original_size: tuple[int, int], width: int, height: int, mode: str = "crop") -> FitInfo:
    """The placement of an image of ``original_size`` (W, H) on a ``width`` x ``height`` canvas."""
    _check_canvas(width, height)
    if mode not in FIT_MODES:
        raise ValueError(f"mode must be one of {FIT_MODES}, got {mode!r}")
    source_width, source_height = int(original_size[0]), int(original_size[1])
    if source_width < 1 or source_height < 1:
        raise ValueError(f"original_size must be positive, got {original_size}")
    ratio_x, ratio_y = width / source_width, height / source_height
    if mode == "stretch":  # scale: the vertical one (the horizontal is width / source width)
        return FitInfo((source_width, source_height), (width, height), mode, ratio_y, (width, height), (0, 0))
    scale = max(ratio_x, ratio_y) if mode == "crop" else min(ratio_x, ratio_y)
    # The side that decides the scale must land exactly on the canvas side (no 1-px slivers).
    if (mode == "crop") == (ratio_x >= ratio_y):
        resized = (width, max(1, int(round(source_height * scale))))
    else:
        resized = (max(1, int(round(source_width * scale))), height)
    if mode == "crop":
        resized = (max(resized[0], width), max(resized[1], height))
    else:
        resized = (min(resized[0], width), min(resized[1], height))
    offset = ((width - resized[0]) // 2, (height - resized[1]) // 2)
    return FitInfo((source_width, source_height), (width, height), mode, scale, resized, offset)


def _place(image: Image.Image, info: FitInfo, resample: int, fill) -> Image.Image:
    resized = image.resize(info.resized_size, resample) if image.size != info.resized_size else image
    canvas = Image.new(image.mode, info.canvas_size, fill)
    canvas.paste(resized, info.offset)  # negative offsets crop, positive ones pad
    return canvas


def fit_to_canvas(
    image: Image.Image, width: int, height: int, mode: FitMode = "crop", fill=WHITE
) -> tuple[Image.Image, FitInfo]:
    """Scale ``image`` onto a ``width`` x ``height`` canvas keeping its aspect ratio.

    ``crop``: cover the canvas and centre-crop the overflow (person photos; the model sees the most
    pixels). ``pad``: fit inside and fill the borders with ``fill`` (garments; nothing is lost).
    Returns the canvas and the :class:`FitInfo` to map results back.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"image: expected a PIL image, got {type(image).__name__}")
    info = compute_fit(image.size, width, height, mode)
    if image.mode == "L" and isinstance(fill, tuple):
        fill = fill[0]
    return _place(image, info, Image.LANCZOS, fill), info


def fit_mask(mask: Image.Image, width: int, height: int, mode: FitMode = "crop",
             info: FitInfo | None = None) -> tuple[Image.Image, FitInfo]:
    """The same placement for a binary ``L`` mask (nearest neighbour, padding = 0 = keep).

    Pass the photo's ``info`` to guarantee the mask lands exactly where the photo did.
    """
    if not isinstance(mask, Image.Image):
        raise TypeError(f"mask: expected a PIL image, got {type(mask).__name__}")
    if info is None:
        info = compute_fit(mask.size, width, height, mode)
    elif mask.size != info.original_size:
        raise ValueError(
            f"mask is {mask.size[0]}x{mask.size[1]} px but the image it belongs to is "
            f"{info.original_size[0]}x{info.original_size[1]} px"
        )
    return _place(mask.convert("L"), info, Image.NEAREST, 0), info


def canvas_to_original(
    canvas: Image.Image, info: FitInfo, resample: int = Image.LANCZOS
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Map a canvas-sized image back to original pixels.

    Returns the patch covering :attr:`FitInfo.source_box` (original resolution) and that box.
    """
    if canvas.size != info.canvas_size:
        raise ValueError(
            f"generated image is {canvas.size[0]}x{canvas.size[1]} px but the canvas was "
            f"{info.canvas_size[0]}x{info.canvas_size[1]} px"
        )
    box = info.source_box
    patch = canvas.crop(info.canvas_box)
    size = (box[2] - box[0], box[3] - box[1])
    if patch.size != size:
        patch = patch.resize(size, resample)
    return patch, box


def mask_to_original(mask: Image.Image, info: FitInfo) -> Image.Image:
    """The binary ``L`` mask :func:`paste_back` applies, at the original size (canvas or original input)."""
    return Image.fromarray(_mask_in_original(mask, info))


def _mask_in_original(mask: Image.Image, info: FitInfo) -> np.ndarray:
    """A uint8 0/255 mask at the original size; accepts canvas-sized or original-sized masks."""
    mask = mask.convert("L")
    if mask.size == info.original_size:
        values = np.asarray(mask)
    elif mask.size == info.canvas_size:
        patch, box = canvas_to_original(mask, info, Image.NEAREST)
        values = np.zeros((info.original_size[1], info.original_size[0]), np.uint8)
        values[box[1]:box[3], box[0]:box[2]] = np.asarray(patch)
    else:
        raise ValueError(
            f"mask is {mask.size[0]}x{mask.size[1]} px; expected the original size "
            f"{info.original_size[0]}x{info.original_size[1]} or the canvas size "
            f"{info.canvas_size[0]}x{info.canvas_size[1]}"
        )
    values = np.where(values >= 128, 255, 0).astype(np.uint8)
    # Outside the area the canvas saw there is nothing generated to paste.
    visible = np.zeros_like(values)
    left, top, right, bottom = info.source_box
    visible[top:bottom, left:right] = 255
    return np.minimum(values, visible)


def paste_back(
    original: Image.Image, generated: Image.Image, mask: Image.Image, info: FitInfo, feather: int = 0
) -> Image.Image:
    """Put the generated canvas into the ORIGINAL full-resolution photo, only inside ``mask``.

    ``mask`` (white = generated) may be original-sized (exact edges; preferred) or canvas-sized (mapped
    back with nearest neighbour, see :func:`mask_to_original`). ``feather`` (px, original scale)
    softens the edge INWARDS only, so every pixel outside the mask is bit-identical to ``original``.
    """
    if not isinstance(original, Image.Image) or not isinstance(generated, Image.Image):
        raise TypeError("original and generated must be PIL images")
    if original.size != info.original_size:
        raise ValueError(
            f"original image is {original.size[0]}x{original.size[1]} px but info describes "
            f"{info.original_size[0]}x{info.original_size[1]} px"
        )
    if feather < 0:
        raise ValueError(f"feather must be >= 0 px, got {feather}")
    original_rgb = original.convert("RGB")
    alpha = _mask_in_original(mask, info)  # (H, W) 0/255
    patch, box = canvas_to_original(generated.convert("RGB"), info)
    if feather > 0 and alpha.any():
        blurred = np.asarray(Image.fromarray(alpha).filter(ImageFilter.GaussianBlur(feather)))
        # Rescale so the ramp reaches full strength inside and multiply by the hard mask: zero outside.
        ramp = np.clip(blurred.astype(np.int32) * 2 - 255, 0, 255)
        alpha = np.where(alpha > 0, np.maximum(ramp, 1), 0).astype(np.uint8)
    result = np.array(original_rgb)  # (H, W, 3) uint8 copy
    left, top, right, bottom = box
    region_alpha = alpha[top:bottom, left:right].astype(np.int32)[:, :, None]
    if region_alpha.any():
        base = result[top:bottom, left:right].astype(np.int32)
        new = np.asarray(patch).astype(np.int32)
        mixed = (base * (255 - region_alpha) + new * region_alpha + 127) // 255
        result[top:bottom, left:right] = mixed.astype(np.uint8)
    return Image.fromarray(result)


def check_paste(mode: str, feather: int, mask_blur: int) -> None:
    """A try-on request's paste-back settings, with a sentence naming the bad one."""
    if mode not in ("feathered", "hard", "none"):
        raise ValueError(f"paste_mode={mode!r} must be feathered, hard or none")
    if not 0 <= feather <= 256:
        raise ValueError(f"feather={feather!r} must be between 0 and 256 px")
    if not 0 <= mask_blur <= 64:
        raise ValueError(f"mask_blur={mask_blur!r} must be between 0 and 64 px")


def paste_results(original: Image.Image, canvases: list[Image.Image], mask: Image.Image, info: FitInfo,
                  mode: str, feather: int) -> list[Image.Image]:
    """Each generated canvas back into ``original`` by paste mode: "feathered" (``feather`` px inward ramp),
    "hard" (the mask's own edge) -- both keep every pixel outside the mask bit-identical -- or "none" (the
    canvases as they are)."""
    if mode == "none":
        return list(canvases)
    if mode not in ("feathered", "hard"):
        raise ValueError(f"paste_mode={mode!r} must be feathered, hard or none")
    width = feather if mode == "feathered" else 0
    return [paste_back(original, canvas, mask, info, feather=width) for canvas in canvases]


def pad_garment(image: Image.Image, width: int, height: int, fill=WHITE) -> Image.Image:
    """Resize a garment photo to fit ``width`` x ``height`` and pad it on white (nothing cropped)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"garment image: expected a PIL image, got {type(image).__name__}")
    if image.mode != "RGB":

        image = to_rgb(image, "garment")
    canvas, _ = fit_to_canvas(image, width, height, mode="pad", fill=fill)
    return canvas
