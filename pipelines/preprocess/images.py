"""Input image hygiene shared by every tab: loading, checking, masks, and PNGs that carry their settings.

Everything a user hands the studio (an upload path, a PIL image from the editor, a numpy array) goes
through :func:`load_image` / :func:`load_mask` so the pipelines only ever see 8-bit RGB images and binary
``L`` masks. Bad input raises ``ValueError``/``TypeError`` with a sentence naming the argument; nothing is
silently "fixed" except the documented conversions (transparency onto white, 16-bit to 8-bit, EXIF rotation).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from pipelines.types import BACKGROUNDS

logger = logging.getLogger(__name__)

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray]

MIN_SIDE = 32
MAX_PIXELS = 40_000_000
PARAMS_CHUNK = "atelier"  # PNG text chunk holding the JSON parameters
A1111_CHUNK = "parameters"  # PNG text chunk other tools (A1111, ComfyUI readers) understand
WHITE = (255, 255, 255)

# A1111 names for our argument vocabulary, in the order that tool writes them.
_A1111_NAMES = {
    "num_inference_steps": "Steps",
    "scheduler": "Sampler",
    "guidance_scale": "CFG scale",
    "seed": "Seed",
    "size": "Size",
    "model": "Model",
}


# --------------------------------------------------------------------------------------------- images
def _open_file(path: Path, name: str, max_pixels: int) -> Image.Image:
    if not path.exists():
        raise ValueError(f"{name} image: file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{name} image: {path} is a folder, not an image file")
    try:
        with warnings.catch_warnings():
            # The size check below replaces PIL's decompression-bomb warning with our own error.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except UnidentifiedImageError as error:
        raise ValueError(f"{name} image: {path.name} is not an image file PIL can read") from error
    except Image.DecompressionBombError as error:
        raise ValueError(f"{name} image: {path.name} is far too large ({error})") from error
    except OSError as error:
        raise ValueError(f"{name} image: cannot read {path.name} ({error})") from error
    # Check the header size BEFORE decoding so a huge file never allocates its pixels.
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ValueError(
            f"{name} image is {width}x{height} px ({width * height / 1e6:.1f} MP); "
            f"the largest accepted image is {max_pixels / 1e6:.0f} MP"
        )
    try:
        image.load()
    except (OSError, SyntaxError) as error:  # truncated / corrupt data
        raise ValueError(f"{name} image: {path.name} is truncated or corrupt ({error})") from error
    return image


def _array_to_pil(array: np.ndarray, name: str) -> Image.Image:
    """HxW, HxWx1, HxWx3 or HxWx4 arrays of bool, uint8, uint16 or float in [0, 1] -> PIL."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} image: expected a numpy array, got {type(array).__name__}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(
            f"{name} image: array of shape {array.shape} is not an image (expected HxW, HxWx3 or HxWx4)"
        )
    if array.size == 0:
        raise ValueError(f"{name} image: array of shape {array.shape} is empty")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = _scale_16bit(array)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{name} image: float array contains NaN or infinity")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{name} image: float arrays must hold values in [0, 1]; this one spans [{low:.3g}, {high:.3g}]"
            )
        array = np.round(array * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise TypeError(
            f"{name} image: array dtype {array.dtype} is not supported (use uint8, uint16, bool or float in [0, 1])"
        )
    return Image.fromarray(np.ascontiguousarray(array))


def _scale_16bit(array: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 (x/257 maps 65535 to exactly 255 and keeps 0 at 0)."""
    return np.round(array.astype(np.float64) / 257.0).clip(0, 255).astype(np.uint8)


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Scale ``I;16*``/``I``/``F`` single-channel images to 8-bit ``L`` by their nominal range.

    ``I;16`` is 16-bit by definition. ``I`` (32-bit int; Pillow also opens some 16-bit PNGs this way) is
    read as 8-bit when every value fits in 0..255, as 16-bit when it fits in 0..65535, otherwise its
    own min..max is stretched. ``F`` is read as 0..1 when it fits, else like ``I``.
    """
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        return Image.fromarray(_scale_16bit(array.astype(np.uint16)))
    values = array.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if image.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif low >= 0 and high <= 255:
        scaled = values
    elif low >= 0 and high <= 65535:
        scaled = values / 257.0
    else:
        scaled = (values - low) / max(high - low, 1e-12) * 255.0
    return Image.fromarray(np.round(scaled).clip(0, 255).astype(np.uint8))


def _flatten_on_white(image: Image.Image) -> Image.Image:
    """Composite anything with an alpha channel onto white (transparent cut-outs are garments on white)."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha onto white, CMYK via PIL, 16-bit/float scaled)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        return _flatten_on_white(image)
    if mode == "P":
        if "transparency" in image.info:
            return _flatten_on_white(image)
        return image.convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_l(image).convert("RGB")
    if mode in ("L", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    raise ValueError(f"{name} image: unsupported image mode {mode!r}")


def load_image(
    source: ImageSource,
    name: str = "person",
    min_side: int = MIN_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> Image.Image:
    """Load ``source`` (path, PIL image or numpy array) as an 8-bit RGB PIL image and check its size.

    EXIF orientation is applied; alpha is composited onto white; CMYK, palette, 16-bit and float images
    are converted. ``name`` names the argument in error messages ("person image is 12x12 px; ...").
    """
    if source is None:
        raise ValueError(f"{name} image is missing")
    if isinstance(source, (str, os.PathLike)):
        image = _open_file(Path(source), name, max_pixels)
    elif isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _array_to_pil(source, name)
    else:
        raise TypeError(
            f"{name} image: expected a file path, PIL image or numpy array, got {type(source).__name__}"
        )
    check_image(image, name, min_side=min_side, max_pixels=max_pixels)
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as error:  # broken EXIF blocks raise assorted errors; orientation is then unknown
        logger.warning("%s image: ignoring unreadable EXIF orientation (%s)", name, error)
    return to_rgb(image, name)


def check_image(
    image: Image.Image, name: str = "image", min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Raise ``ValueError`` naming ``name`` if ``image`` is too small or too large; return it unchanged."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"{name} image: expected a PIL image, got {type(image).__name__}")
    width, height = image.size
    if min(width, height) < min_side:
        raise ValueError(
            f"{name} image is {width}x{height} px; the smallest accepted side is {min_side} px"
        )
    if width * height > max_pixels:
        raise ValueError(
            f"{name} image is {width}x{height} px ({width * height / 1e6:.1f} MP); "
            f"the largest accepted image is {max_pixels / 1e6:.0f} MP"
        )
    return image


# ---------------------------------------------------------------------------------------------- masks
def _mask_values(image: Image.Image) -> np.ndarray:
    """One 8-bit channel that means 'selected': alpha when it carries information, else the brightest channel.

    Editor layers are RGBA strokes on transparency, so a non-constant-opaque alpha IS the mask. For opaque
    images the per-pixel maximum over channels is used, so coloured strokes on black count as painted.
    """
    mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba)[:, :, 3]
        if not (alpha == 255).all():
            return alpha
        return np.asarray(rgba)[:, :, :3].max(axis=2)
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode.startswith("I") or mode == "F":
        return np.asarray(_high_depth_to_l(image))
    if mode == "L":
        return np.asarray(image)
    return np.asarray(image.convert("RGB")).max(axis=2)


def load_mask(
    source: ImageSource,
    *,
    size: tuple[int, int] | None = None,
    name: str = "mask",
    resize: bool = False,
    threshold: int = 128,
    reference_name: str = "person image",
) -> Image.Image:
    """Load a mask as a binary ``L`` image (0 or 255; 255 = region to change).

    ``source`` may be a path, PIL image (L, RGB, RGBA: alpha if present and not fully opaque) or array
    (bool, uint8, float in [0, 1]). If ``size`` (W, H) is given and differs, raise ``ValueError`` naming
    both sizes unless ``resize`` is True (then nearest-neighbour resize).
    """
    if not 0 <= threshold <= 255:
        raise ValueError(f"threshold must be in 0..255, got {threshold}")
    if source is None:
        raise ValueError(f"{name} is missing")
    if isinstance(source, (str, os.PathLike)):
        image = _open_file(Path(source), name, MAX_PIXELS)
        image = ImageOps.exif_transpose(image)
    elif isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        array = source[:, :, 0] if source.ndim == 3 and source.shape[2] == 1 else source
        if array.dtype == bool and array.ndim == 2:
            image = Image.fromarray(array.astype(np.uint8) * 255)
        else:
            image = _array_to_pil(array, name)
    else:
        raise TypeError(f"{name}: expected a file path, PIL image or numpy array, got {type(source).__name__}")
    values = _mask_values(image)
    mask = Image.fromarray(np.where(values >= threshold, 255, 0).astype(np.uint8))
    if size is not None:
        if (
            not isinstance(size, (tuple, list))
            or len(size) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
        ):
            raise TypeError(f"size must be (width, height) in pixels, got {size!r}")
        size = (int(size[0]), int(size[1]))
        if mask.size != size:
            if not resize:
                raise ValueError(
                    f"{name} is {mask.size[0]}x{mask.size[1]} px but the {reference_name} is "
                    f"{size[0]}x{size[1]} px; paint the mask on the same image or allow resizing"
                )
            mask = mask.resize(size, Image.NEAREST)
    return mask


# ------------------------------------------------------------------------------------- PNG parameters
def _json_ready(value: Any, key: str) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_json_ready(item, key) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"params[{key!r}]: {type(value).__name__} cannot be stored in a PNG (use plain values)")


def _a1111_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    # A1111 quotes values containing its separators.
    return json.dumps(text) if ("," in text or ":" in text or "\n" in text) else text


def format_parameters(params: Mapping[str, Any]) -> str:
    """An A1111-style 'parameters' text: prompt, 'Negative prompt: ...', then 'Key: value, ...'."""
    params = dict(params)
    lines = [str(params.pop("prompt", "") or "")]
    negative = params.pop("negative_prompt", None)
    if negative:
        lines.append(f"Negative prompt: {negative}")
    if "width" in params and "height" in params:
        params["size"] = f"{params.pop('width')}x{params.pop('height')}"
    fields = []
    for key in _A1111_NAMES:
        if key in params:
            fields.append(f"{_A1111_NAMES[key]}: {_a1111_value(params.pop(key))}")
    for key, value in params.items():
        label = key.replace("_", " ").capitalize()
        fields.append(f"{label}: {_a1111_value(value)}")
    if fields:
        lines.append(", ".join(fields))
    return "\n".join(lines)


def _unique_path(path: Path) -> Path:
    if not path.exists():
        return path
    index = 1
    while True:
        candidate = path.with_name(f"{path.stem}-{index}{path.suffix}")
        if not candidate.exists():
            return candidate
        index += 1


def save_png_with_params(image: Image.Image, path: str | os.PathLike, params: Mapping[str, Any]) -> Path:
    """Write ``image`` as a PNG carrying ``params`` (JSON chunk 'atelier' + A1111-style 'parameters').

    The write is atomic (temporary file in the same folder, then linked/renamed into place) and never
    overwrites: if ``path`` exists a suffix ``-1``, ``-2``, ... is added. Returns the path written.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"image: expected a PIL image, got {type(image).__name__}")
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a dict, got {type(params).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {path.name!r}")
    clean = {str(key): _json_ready(value, str(key)) for key, value in params.items()}
    info = PngImagePlugin.PngInfo()
    info.add_itxt(PARAMS_CHUNK, json.dumps(clean, ensure_ascii=False, sort_keys=True))
    info.add_itxt(A1111_CHUNK, format_parameters(clean))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            image.save(stream, format="PNG", pnginfo=info)
            stream.flush()
            os.fsync(stream.fileno())
        while True:
            target = _unique_path(path)
            try:
                # link() fails if the target appeared meanwhile, so a concurrent writer is never overwritten.
                os.link(temporary, target)
                break
            except FileExistsError:
                continue
            except OSError:  # filesystems without hard links
                if target.exists():
                    continue
                os.replace(temporary, target)
                break
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    logger.info("saved %s", target)
    return target


def parse_a1111_parameters(text: str) -> dict[str, Any]:
    """Best-effort parse of an A1111 'parameters' text into our argument names."""
    lines = text.strip("\n").split("\n")
    result: dict[str, Any] = {}
    settings_line = ""
    if len(lines) > 1 and ": " in lines[-1] and not lines[-1].startswith("Negative prompt:"):
        settings_line = lines.pop()
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    result["prompt"] = "\n".join(prompt_lines)
    if negative_lines:
        result["negative_prompt"] = "\n".join(negative_lines)
    reverse = {label: key for key, label in _A1111_NAMES.items()}
    for label, raw in _split_settings(settings_line):
        key = reverse.get(label, label.lower().replace(" ", "_"))
        value: Any = raw
        if raw.startswith('"'):
            try:
                value = json.loads(raw)
            except ValueError:
                pass
        else:
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        if key == "size" and isinstance(value, str) and "x" in value:
            width, _, height = value.partition("x")
            if width.isdigit() and height.isdigit():
                result["width"], result["height"] = int(width), int(height)
                continue
        result[key] = value
    return result


def _split_settings(line: str) -> list[tuple[str, str]]:
    """'A: 1, B: "x, y", C: z' -> [(A, 1), (B, "x, y"), (C, z)] respecting quotes."""
    pairs, buffer, quoted, escaped = [], "", False, False
    parts: list[str] = []
    for char in line:
        if escaped:
            buffer += char
            escaped = False
            continue
        if char == "\\" and quoted:
            buffer += char
            escaped = True
            continue
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(buffer)
            buffer = ""
            continue
        buffer += char
    if buffer.strip():
        parts.append(buffer)
    for part in parts:
        label, sep, value = part.strip().partition(": ")
        if sep:
            pairs.append((label.strip(), value.strip()))
    return pairs


def read_png_params(source: str | os.PathLike | Image.Image) -> dict[str, Any]:
    """The parameters stored by :func:`save_png_with_params` (or parsed from an A1111 'parameters' chunk).

    Raises ``ValueError`` when the image carries neither.
    """
    if isinstance(source, Image.Image):
        image, label = source, "image"
    elif isinstance(source, (str, os.PathLike)):
        label = Path(source).name
        image = _open_file(Path(source), "parameters source", MAX_PIXELS)
    else:
        raise TypeError(f"source: expected a PNG path or PIL image, got {type(source).__name__}")
    text = dict(getattr(image, "text", {}) or {})
    text.update({k: v for k, v in image.info.items() if isinstance(v, str)})
    if PARAMS_CHUNK in text:
        try:
            data = json.loads(text[PARAMS_CHUNK])
        except ValueError as error:
            raise ValueError(f"{label}: the '{PARAMS_CHUNK}' PNG chunk is not valid JSON ({error})") from error
        if not isinstance(data, dict):
            raise ValueError(f"{label}: the '{PARAMS_CHUNK}' PNG chunk holds {type(data).__name__}, not a dict")
        return data
    if A1111_CHUNK in text:
        return parse_a1111_parameters(text[A1111_CHUNK])
    raise ValueError(
        f"{label} carries no generation parameters (no '{PARAMS_CHUNK}' or '{A1111_CHUNK}' PNG text chunk); "
        "only PNGs saved by Atelier (or A1111-style tools) keep their settings"
    )


def check_background(background: str, tolerance: int) -> None:
    """A try-off request's background settings (see :func:`whiten_background`, pipelines/preprocess/rmbg.py)."""
    if background not in BACKGROUNDS:
        raise ValueError(f"background={background!r} must be one of {', '.join(BACKGROUNDS)}")
    if not 0 <= tolerance <= 255:
        raise ValueError(f"background_tolerance={tolerance!r} must be between 0 and 255")


def whiten_background(image: Image.Image, tolerance: int = 40) -> Image.Image:
    """Paint the background around the garment pure white.

    TryOffAnyone's outputs are garments on a near-white studio background (it was trained on VITON-HD
    product photos); the official demo removes it with RMBG-1.4 and whitens it (``background="remove"``,
    pipelines/preprocess/rmbg.py). This is the offline way, without another model: the background colour is
    the median of the image border, and every pixel within ``tolerance`` (max RGB channel difference) of it
    that is CONNECTED to the border becomes white, so light areas inside the garment stay. A garment touching
    the whole border is left as it is.
    """
    import cv2

    rgb = np.asarray(image.convert("RGB"))
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    reference = np.median(border, axis=0)
    near = (np.abs(rgb.astype(np.int16) - reference.astype(np.int16)).max(axis=2) <= tolerance).astype(np.uint8)
    count, labels = cv2.connectedComponents(near, connectivity=4)
    edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge_labels = edge_labels[edge_labels != 0]
    background = np.isin(labels, edge_labels) & (near > 0)
    out = rgb.copy()
    out[background] = 255
    return Image.fromarray(out)
