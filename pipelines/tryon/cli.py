"""``python -m pipelines.tryon``: CatVTON try-on (or a trained garment model) from the command line; a person (or
a folder) + a garment (or a folder) -> a folder of results; exit status 2 with ``error: ...`` on bad input."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipelines.core.cli import (
    add_common_arguments,
    image_files,
    make_registry,
    mask_for,
    pair_people_with_garments,
    save_results,
)
from pipelines.preprocess.images import load_image, load_mask
from pipelines.tryon.pipeline import CatVTONPipeline
from pipelines.types import CATVTON_VARIANTS, PASTE_MODES, TryOnRequest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.tryon",
        description="Virtual try-on (CatVTON): dress the person(s) in the garment(s). PNGs carry their parameters.",
    )
    add_common_arguments(parser)
    parser.add_argument("--garment", help="garment photo, or a folder of garment photos")
    parser.add_argument("--variant", default="tryon_catvton", choices=sorted(CATVTON_VARIANTS),
                        help="tryon_catvton = mix-48k-1024, tryon_catvton_512 = vitonhd-16k-512")
    parser.add_argument("--weights", help="CatVTON attention weights: local file/folder or hub id (zhengchong/CatVTON)")
    parser.add_argument("--paste_mode", default="feathered", choices=PASTE_MODES,
                        help="feathered (default) / hard: pasted into the photo inside the mask; none: the raw canvas")
    parser.add_argument("--feather", type=int, default=21, help="feathered edge width in px (the official ~21)")
    parser.add_argument("--mask_blur", type=int, default=9, help="mask blur radius before re-thresholding at 128")
    parser.add_argument("--garment_model", help="a fine-tuned garment model folder (atelier_model.json) instead of CatVTON")
    parser.add_argument("--prompt", default=None, help="garment model mode: the prompt (default: the model's own)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    written: list[Path] = []
    try:
        if args.mask and args.auto_mask:
            raise ValueError("give either --mask or --auto_mask, not both")
        registry = make_registry(args, args.variant, CATVTON_VARIANTS[args.variant])
        defaults = registry.defaults("tryon")
        people = image_files(args.person, "person")
        if args.garment_model:
            from pipelines.tryon.garment_model import GarmentModelTryOnPipeline

            pipeline = GarmentModelTryOnPipeline.from_registry(registry, args.garment_model)
            pairs = [(person, None) for person in people]
            if args.garment:
                raise ValueError("--garment_model works from the prompt; leave out --garment")
        else:
            if not args.garment:
                raise ValueError("--garment is required (a garment photo or a folder of them)")
            pipeline = CatVTONPipeline.from_registry(registry, args.variant)
            pairs = pair_people_with_garments(people, image_files(args.garment, "garment"))
        output = Path(args.output_path)
        for person_path, garment_path in pairs:
            mask_path = mask_for(args.mask, person_path, len(people) > 1)
            request = TryOnRequest(
                person=load_image(person_path, "person"),
                garment=load_image(garment_path, "garment") if garment_path else None,
                category=args.category,
                mask=load_mask(mask_path, name="mask") if mask_path else None,
                auto_mask=mask_path is None,
                height=args.height or defaults.get("height"),  # None: the weights' own canvas
                width=args.width or defaults.get("width"),
                num_inference_steps=args.steps or defaults.get("num_inference_steps", 50),
                guidance_scale=args.guidance_scale if args.guidance_scale is not None
                else (7.5 if args.garment_model else defaults.get("guidance_scale", 2.5)),
                seed=args.seed if args.seed is not None else defaults.get("seed", 42),
                num_images=args.num_images,
                eta=args.eta,
                paste_mode=args.paste_mode, feather=args.feather, mask_blur=args.mask_blur,
                fit_mode=args.fit_mode,
                prompt=args.prompt or "",
            )
            result = pipeline(request)
            stem = person_path.stem + (f"__{garment_path.stem}" if garment_path else "")
            written += save_results(result, output, stem, len(pairs) == 1, registry.preset.name)
            for path in written[-len(result.images):]:
                print(f"wrote {path}")
    except (ValueError, TypeError, OSError, RuntimeError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
