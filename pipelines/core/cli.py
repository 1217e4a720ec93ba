"""What the command lines share: image files or folders in, person/garment pairing, mask files, weight
locations, the common sampler arguments, building a registry from a preset, writing results with parameters."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.types import FIT_MODES, TRYON_CATEGORIES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def image_files(path: str | Path, what: str) -> list[Path]:
    """One image file, or every image in a folder (sorted); ValueError when there is none."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise ValueError(f"{what} folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not path.exists():
        raise ValueError(f"{what}: {path} does not exist")
    return [path]


def pair_people_with_garments(people: list[Path], garments: list[Path]) -> list[tuple[Path, Path]]:
    """Pairs to run: one garment -> every person; folders with the same file stems -> paired by name
    (the VITON-HD "paired" layout); otherwise every person with every garment."""
    if len(garments) == 1:
        return [(person, garments[0]) for person in people]
    by_stem = {garment.stem: garment for garment in garments}
    if all(person.stem in by_stem for person in people):
        return [(person, by_stem[person.stem]) for person in people]
    return [(person, garment) for person in people for garment in garments]


def mask_for(mask_arg: str | None, person: Path, many: bool) -> Path | None:
    """``--mask``: a file (one person) or a folder holding ``<person stem>.png`` (or any image suffix)."""
    if not mask_arg:
        return None
    path = Path(mask_arg).expanduser()
    if path.is_dir():
        for suffix in IMAGE_SUFFIXES:
            candidate = path / f"{person.stem}{suffix}"
            if candidate.exists():
                return candidate
        raise ValueError(f"mask folder {path} has no mask named {person.stem}.png for {person.name}")
    if many:
        raise ValueError("--mask must be a folder of masks named like the person images when --person is a folder")
    return path


def weights_location(weights: str, default_filename: str):
    """``--weights``: a local file, a local folder (the file inside it) or a hub id (+ the official filename)."""
    from pipelines.core.presets import CheckpointLocation

    path = Path(weights).expanduser()
    if path.is_file():
        return CheckpointLocation(str(path))
    if path.is_dir():
        for candidate in (path / default_filename, path / "attention" / "model.safetensors", path / "model.safetensors"):
            if candidate.is_file():
                return CheckpointLocation(str(candidate))
        raise ValueError(f"--weights folder {path} holds neither {default_filename} nor model.safetensors")
    return CheckpointLocation(weights, default_filename)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--person", required=True, help="person photo, or a folder of person photos")
    parser.add_argument("--category", default="upper", choices=TRYON_CATEGORIES)
    parser.add_argument("--mask", help="painted mask (white = change), or a folder of masks named like the photos")
    parser.add_argument("--auto_mask", action="store_true", help="build masks automatically (default without --mask)")
    parser.add_argument("--preset", default="sd15", help="model preset name or YAML file (sd15, tiny)")
    parser.add_argument("--inpaint_model", help="SD1.5-inpainting model (hub id or local folder)")
    parser.add_argument("--vae", help="VAE (hub id or local folder); the methods were trained with sd-vae-ft-mse")
    parser.add_argument("--segformer", help="clothes parser for automatic masks (hub id or local folder)")
    parser.add_argument("--output_path", default="outputs/cli", help="output folder (or a .png file for one image)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: best available)")
    parser.add_argument("--dtype", default=None, help="fp16, bf16, fp32 (default: fp16 on GPU, fp32 on CPU)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance_scale", type=float, default=None)
    parser.add_argument("--eta", type=float, default=None, help="DDIM eta (default: the method's own)")
    parser.add_argument("--seed", type=int, default=None, help="-1 = random")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--num_images", type=int, default=1)
    parser.add_argument("--fit_mode", default="crop", choices=FIT_MODES)
    parser.add_argument("--models_dir", default=None, help="where the tiny preset builds its models")


def make_registry(args, checkpoint: str | None = None, default_filename: str = ""):
    from pipelines.core.presets import load_preset
    from pipelines.core.registry import ModelRegistry

    preset = load_preset(args.preset).override(inpaint_model=args.inpaint_model, vae=args.vae, segformer=args.segformer)
    if checkpoint and getattr(args, "weights", None):
        preset.checkpoints[checkpoint] = weights_location(args.weights, default_filename)
    return ModelRegistry(preset, device=args.device, dtype=args.dtype, models_dir=args.models_dir)


def save_results(result, output: Path, stem: str, single: bool, preset_name: str) -> list[Path]:
    from pipelines.preprocess.images import save_png_with_params

    written = []
    for index, (image, seed) in enumerate(zip(result.images, result.seeds)):
        if single and output.suffix.lower() == ".png" and len(result.images) == 1:
            target = output
        else:
            target = output / f"{stem}_{seed}_{index}.png"
        params = dict(result.params, seed=seed, num_images=1, preset=preset_name)
        written.append(save_png_with_params(image, target, params))
    return written
