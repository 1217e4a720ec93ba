"""GarmentBench-layout datasets for the IMAGGarment-1 trainers (colour adapter, GAM, LEM).

Layout (a folder, or a .zip holding it)::

    cloth/  sketch/  logo/  mask/  color/      images
    color_pair.json    colour adapter: [{"caption": str, "color": "color/1.png", "cloth": "cloth/1.jpg"}, ...]
    sketch_pair.json   GAM:            [{"cloth": ..., "sketch": ..., "caption": str | [str, ...]}, ...]
    logo_pair.json     LEM:            [{"logo": ..., "sketch": ..., "mask": ..., "cloth": ...}, ...]

A path in a record is relative to the dataset root (``"cloth/1.jpg"``); a bare file name is looked up in the
folder named after its field (``"1.jpg"`` in ``cloth`` -> ``cloth/1.jpg``; ``color`` -> ``color/``). Masks: white =
where the logo goes. Every record is checked before training starts: a missing key, a missing or unreadable file
raises :class:`DatasetError` naming the pair file, the record index and the file.

This module imports no torch at import time: the runner's preflight (UI process) validates datasets with it.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, UnidentifiedImageError

from training.datasets import DatasetError, prepare_dataset_dir

logger = logging.getLogger(__name__)

# task -> (pair file, image fields every record needs, whether a caption is required)
TASKS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "color": ("color_pair.json", ("color", "cloth"), True),
    "gam": ("sketch_pair.json", ("cloth", "sketch"), True),
    "lem": ("logo_pair.json", ("logo", "sketch", "mask", "cloth"), False),
}
FOLDERS = ("cloth", "sketch", "logo", "mask", "color")


@dataclass(frozen=True)
class GarmentRecord:
    """One validated record: absolute image paths by field and its captions (empty for the LEM)."""

    index: int
    files: dict[str, Path]
    captions: tuple[str, ...] = ()

    def __getitem__(self, field: str) -> Path:
        return self.files[field]


def _find_root(folder: Path, pair_file: str) -> Path:
    """The folder holding the pair file (descending into one wrapper folder, as zips often have)."""
    if (folder / pair_file).is_file():
        return folder
    entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return _find_root(entries[0], pair_file)
    return folder


def _resolve(root: Path, field: str, value: str) -> Path | None:
    for candidate in (root / value, root / field / value):
        if candidate.is_file():
            return candidate
    return None


def _check_image(path: Path, where: str) -> None:
    """Header check only (fast enough for a large dataset in the UI process); truncated pixel data surfaces
    as an error naming the file when the trainer loads it."""
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018  (the header is parsed on open)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"{where}: {path.name} is not a readable image ({error})") from error


def load_garmentbench(source: str | Path, task: str, extract_to: str | Path | None = None,
                      check_images: bool = True) -> list[GarmentRecord]:
    """Validate and list the records of ``task`` ("color", "gam" or "lem"); raises :class:`DatasetError`."""
    if task not in TASKS:
        raise ValueError(f"task={task!r} must be one of {', '.join(TASKS)}")
    pair_file, fields, needs_caption = TASKS[task]
    root = _find_root(prepare_dataset_dir(source, extract_to), pair_file)
    pair_path = root / pair_file
    if not pair_path.is_file():
        raise DatasetError(
            f"dataset {Path(source).name}: {pair_file} is missing (the {task} trainer reads it; GarmentBench layout: "
            f"{'/ '.join(FOLDERS)}/ + {', '.join(spec[0] for spec in TASKS.values())})"
        )
    try:
        entries = json.loads(pair_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatasetError(f"{pair_file}: not valid JSON ({error})") from error
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f"{pair_file}: expected a non-empty list of records, got {type(entries).__name__}")

    records = []
    for index, entry in enumerate(entries):
        where = f"{pair_file} record {index}"
        if not isinstance(entry, dict):
            raise DatasetError(f"{where}: expected an object with keys {', '.join(fields)}, got {entry!r:.80}")
        files: dict[str, Path] = {}
        for field in fields:
            value = entry.get(field)
            if not isinstance(value, str) or not value:
                raise DatasetError(f"{where}: '{field}' is missing or not a file name (record: {entry!r:.120})")
            path = _resolve(root, field, value)
            if path is None:
                raise DatasetError(f"{where}: {field} file '{value}' not found (looked in {root.name}/ and {field}/)")
            if check_images:
                _check_image(path, f"{where} ({field})")
            files[field] = path
        captions: tuple[str, ...] = ()
        if needs_caption:
            caption = entry.get("caption")
            captions = tuple(caption) if isinstance(caption, list) else (caption,)
            if not captions or not all(isinstance(text, str) for text in captions):
                raise DatasetError(f"{where}: 'caption' must be a string or a non-empty list of strings, got {caption!r:.80}")
        records.append(GarmentRecord(index, files, captions))
    logger.info("GarmentBench %s: %d %s records", root, len(records), task)
    return records


def preflight(config: Any, run_dir: Path) -> None:
    """Runner preflight (``training.garmentbench:preflight``): validate the dataset before a trainer starts."""
    load_garmentbench(config.dataset, type(config).garmentbench_task, extract_to=Path(run_dir) / "dataset")


# -- tiny generated dataset (tests, demos) --------------------------------------------------------------
def make_tiny_garmentbench(root: str | Path, n: int = 4, width: int = 64, height: int = 80, seed: int = 0) -> Path:
    """Write ``n`` simple garments (t-shirt silhouettes) with sketches, logos, logo masks, colour swatches and the
    three pair files to ``root``; returns ``root``."""
    root = Path(root)
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    palette = [("red", (200, 30, 40)), ("navy", (20, 30, 110)), ("green", (30, 140, 60)), ("yellow", (230, 200, 40)),
               ("black", (20, 20, 20)), ("pink", (230, 130, 170))]
    color_pairs, sketch_pairs, logo_pairs = [], [], []
    for index in range(n):
        name, rgb = palette[index % len(palette)]
        kind = "t-shirt" if index % 2 == 0 else "dress"
        w, h = width, height
        if kind == "t-shirt":
            outline = [(0.3, 0.1), (0.7, 0.1), (0.95, 0.3), (0.8, 0.4), (0.75, 0.35), (0.75, 0.9), (0.25, 0.9),
                       (0.25, 0.35), (0.2, 0.4), (0.05, 0.3)]
        else:
            outline = [(0.35, 0.08), (0.65, 0.08), (0.68, 0.4), (0.9, 0.92), (0.1, 0.92), (0.32, 0.4)]
        jitter = rng.uniform(-0.03, 0.03)
        points = [((x + jitter) * w, y * h) for x, y in outline]
        cloth = Image.new("RGB", (w, h), "white")
        ImageDraw.Draw(cloth).polygon(points, fill=rgb)
        sketch = Image.new("RGB", (w, h), "white")
        ImageDraw.Draw(sketch).line(points + points[:1], fill="black", width=1)
        box = (int(0.4 * w), int(0.3 * h), int(0.6 * w), int(0.45 * h))
        mask = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask).rectangle(box, fill=255)
        logo = Image.new("RGB", (w, h), "white")
        logo_draw = ImageDraw.Draw(logo)
        logo_colour = tuple(255 - c for c in rgb)
        (logo_draw.ellipse if index % 3 else logo_draw.rectangle)((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=logo_colour)
        cloth_with_logo = cloth.copy()
        cloth_with_logo.paste(logo.resize((box[2] - box[0], box[3] - box[1])), box[:2])
        swatch = Image.new("RGB", (32, 32), rgb)
        stem = f"{index:04d}"
        cloth_with_logo.save(root / "cloth" / f"{stem}.png")
        sketch.save(root / "sketch" / f"{stem}.png")
        logo.save(root / "logo" / f"{stem}.png")
        mask.save(root / "mask" / f"{stem}.png")
        swatch.save(root / "color" / f"{stem}.png")
        caption = f"a {name} {kind}"
        color_pairs.append({"caption": caption, "color": f"color/{stem}.png", "cloth": f"cloth/{stem}.png"})
        captions: str | list[str] = [caption, f"{kind}, {name}"] if index % 2 else caption
        sketch_pairs.append({"cloth": f"cloth/{stem}.png", "sketch": f"sketch/{stem}.png", "caption": captions})
        logo_pairs.append({"logo": f"{stem}.png", "sketch": f"{stem}.png", "mask": f"{stem}.png", "cloth": f"{stem}.png"})
    for file_name, pairs in (("color_pair.json", color_pairs), ("sketch_pair.json", sketch_pairs),
                             ("logo_pair.json", logo_pairs)):
        (root / file_name).write_text(json.dumps(pairs, indent=1))
    return root


# -- shared by the three trainers (torch imported lazily) -----------------------------------------------
def load_rgb_sized(path: Path, width: int, height: int):
    """RGB (RGBA on white) resized to (width, height) -> (3, H, W) tensor in [-1, 1]."""
    from pipelines.core.sampling import image_to_tensor
    from training.datasets import load_rgb

    return image_to_tensor(load_rgb(path), width, height)[0]


def load_mask_sized(path: Path, width: int, height: int):
    """Binary mask (white = 1) resized with nearest -> (1, H, W) tensor."""
    from pipelines.core.sampling import mask_to_tensor
    from training.datasets import load_mask

    return mask_to_tensor(load_mask(path), width, height)[0]


def load_sd_parts(config, text: bool = True) -> dict[str, Any]:
    """tokenizer, text_encoder (when ``text``), vae (``config.vae`` or ``<model>/vae``), unet, noise_scheduler."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    location = config.pretrained_model
    try:
        parts: dict[str, Any] = {
            "unet": UNet2DConditionModel.from_pretrained(location, subfolder="unet"),
            "noise_scheduler": DDPMScheduler.from_pretrained(location, subfolder="scheduler"),
            "vae": AutoencoderKL.from_pretrained(config.vae) if config.vae
            else AutoencoderKL.from_pretrained(location, subfolder="vae"),
        }
        if text:
            parts["tokenizer"] = CLIPTokenizer.from_pretrained(location, subfolder="tokenizer")
            parts["text_encoder"] = CLIPTextModel.from_pretrained(location, subfolder="text_encoder")
    except OSError as error:
        from pipelines.core.checkpoints import offline_hint
        from pipelines.types import ModelUnavailableError

        raise ModelUnavailableError(f"pretrained_model/vae: {offline_hint(config.vae or location)} ({error})") from error
    return parts


def check_unet(unet, config, in_channels: int) -> None:
    """The UNet's input channels and that height/width fit its downsampling."""
    from training.config import ConfigError

    if unet.config.in_channels != in_channels:
        kind = "an inpainting model (9 channels)" if in_channels == 9 else "a text-to-image model (4 channels)"
        raise ConfigError(f"pretrained_model: {config.pretrained_model} has a {unet.config.in_channels}-channel "
                          f"UNet; this method needs {kind}")
    multiple = 8 * 2 ** (len(unet.config.block_out_channels) - 1)
    for key in ("height", "width"):
        if getattr(config, key) % multiple:
            raise ConfigError(f"{key}: {getattr(config, key)} must be a multiple of {multiple} for this UNet")


def ddim_factory(noise_scheduler):
    """A callable returning a fresh DDIM scheduler with the spec's SD1.5 settings (as the registry's)."""
    from diffusers import DDIMScheduler

    config = dict(noise_scheduler.config)
    config.update(clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return lambda: DDIMScheduler.from_config(config)


