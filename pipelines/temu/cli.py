"""``python -m pipelines.temu``: person photo(s) -> flat garment(s) with TEMU-VTOFF.

The arguments of the method's ``inference.py`` (``--pretrained_model_name_or_path`` = the SD3-Medium folder or
hub id, ``--pretrained_model_name_or_path_sd3_tryoff`` = the TEMU-VTOFF folder or hub id, ``--example_image``,
``--output_dir``, ``--width``, ``--height``, ``--guidance_scale``, ``--num_inference_steps``, ``--category``
upper_body | lower_body | dresses) plus the caption (written, or the category's default), a mask, seeds and the
memory mode. Unlike the published single-image script, one photo is all it needs. Exit status 2 with
``error: ...`` on bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipelines.core.cli import image_files, mask_for, save_results
from pipelines.types import BACKGROUNDS, MEMORY_MODES, TEMU_CATEGORIES, TemuTryOffRequest

METHOD_CATEGORIES = {theirs: ours for ours, theirs in TEMU_CATEGORIES.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.temu",
        description="High-quality virtual try-off (TEMU-VTOFF, SD3): the worn garment as a product photo.",
    )
    parser.add_argument("--example_image", required=True, help="person photo, or a folder of person photos")
    parser.add_argument("--category", default="upper_body", choices=sorted(METHOD_CATEGORIES))
    parser.add_argument("--caption", default="", help="the garment's attributes (default: the category's caption)")
    parser.add_argument("--mask", help="painted garment mask (white = garment), or a folder named like the photos")
    parser.add_argument("--pretrained_model_name_or_path", help="SD3-Medium (diffusers layout): hub id or folder")
    parser.add_argument("--pretrained_model_name_or_path_sd3_tryoff",
                        help="TEMU-VTOFF (transformer/ + transformer_vton/): hub id or folder")
    parser.add_argument("--clip_vision_l", help="CLIP ViT-L/14 image encoder: hub id or folder")
    parser.add_argument("--clip_vision_bigg", help="CLIP ViT-bigG-14 image encoder: hub id or folder")
    parser.add_argument("--preset", default="sd15", help="model preset name or YAML file (sd15, tiny)")
    parser.add_argument("--models_dir", default=None, help="where the tiny preset builds its models")
    parser.add_argument("--output_dir", default="outputs/cli", help="output folder (or a .png file for one image)")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--guidance_scale", type=float, default=None)
    parser.add_argument("--num_inference_steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None, help="-1 = random")
    parser.add_argument("--num_images", type=int, default=1)
    parser.add_argument("--background", default="white", choices=BACKGROUNDS,
                        help="white: flood fill (offline); remove: RMBG-1.4 cut-out on white; keep: raw")
    parser.add_argument("--rmbg", help="RMBG-1.4 for --background remove: hub id or folder (default: the preset's)")
    parser.add_argument("--memory_mode", default="auto", choices=MEMORY_MODES)
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: best available)")
    parser.add_argument("--dtype", default=None, help="fp16, bf16, fp32 (default: bf16 on GPU, fp32 on CPU)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from pipelines.core.presets import load_preset
        from pipelines.core.registry import ModelRegistry
        from pipelines.preprocess.images import load_image, load_mask
        from pipelines.temu.pipeline import TemuTryOffPipeline

        preset = load_preset(args.preset)
        overrides = {"sd3": args.pretrained_model_name_or_path, "temu_vtoff": args.pretrained_model_name_or_path_sd3_tryoff,
                     "clip_vision_l": args.clip_vision_l, "clip_vision_bigg": args.clip_vision_bigg, "rmbg": args.rmbg}
        preset.models.update({key: value for key, value in overrides.items() if value})
        registry = ModelRegistry(preset, device=args.device, dtype=args.dtype, models_dir=args.models_dir)
        defaults = registry.defaults("tryoff_temu")
        people = image_files(args.example_image, "person")
        pipeline = TemuTryOffPipeline.from_registry(registry)
        output = Path(args.output_dir)
        for person_path in people:
            mask_path = mask_for(args.mask, person_path, len(people) > 1)
            request = TemuTryOffRequest(
                person=load_image(person_path, "person"), category=METHOD_CATEGORIES[args.category],
                caption=args.caption, mask=load_mask(mask_path, name="mask") if mask_path else None,
                auto_mask=mask_path is None, height=args.height or defaults.get("height", 1024),
                width=args.width or defaults.get("width", 768),
                num_inference_steps=args.num_inference_steps or defaults.get("num_inference_steps", 28),
                guidance_scale=args.guidance_scale if args.guidance_scale is not None
                else defaults.get("guidance_scale", 2.0),
                seed=args.seed if args.seed is not None else defaults.get("seed", 42), num_images=args.num_images,
                background=args.background, memory_mode=args.memory_mode,
            )
            result = pipeline(request)
            for path in save_results(result, output, person_path.stem, len(people) == 1, preset.name):
                print(f"wrote {path}")
        print(f"extractor runs: {pipeline.extractor_runs} for {len(people)} photo(s)", file=sys.stderr)
    except (ValueError, TypeError, OSError, RuntimeError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
