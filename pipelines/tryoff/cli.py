"""``python -m pipelines.tryoff``: person photo(s) -> flat product shot(s) with TryOffAnyone; file or folder in,
folder out; exit status 2 with ``error: ...`` on bad input."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipelines.core.cli import add_common_arguments, image_files, make_registry, mask_for, save_results
from pipelines.tryoff.checkpoints import CHECKPOINT_NAME, OFFICIAL_FILENAME
from pipelines.tryoff.pipeline import TryOffAnyonePipeline
from pipelines.types import BACKGROUNDS, TRYOFF_CATEGORIES, TryOffRequest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.tryoff",
        description="Virtual try-off (TryOffAnyone): the worn garment as a product photo. PNGs carry their parameters.",
    )
    add_common_arguments(parser)
    parser.set_defaults(category="upper")
    for action in parser._actions:
        if action.dest == "category":
            action.choices = TRYOFF_CATEGORIES
    parser.add_argument("--weights", help="TryOffAnyone weights: local file/folder or hub id (ixarchakos/tryOffAnyone)")
    parser.add_argument("--background", default="white", choices=BACKGROUNDS,
                        help="white: flood fill from the border (offline); remove: RMBG-1.4 cut-out on white (the "
                             "official post-processing; the flood fill, with a warning, when RMBG cannot be loaded); "
                             "keep: the raw output")
    parser.add_argument("--rmbg", help="RMBG-1.4 weights for --background remove: hub id or local folder "
                                       "(config.json + model.safetensors); default: the preset's models: rmbg")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from pipelines.preprocess.images import load_image, load_mask

        if args.mask and args.auto_mask:
            raise ValueError("give either --mask or --auto_mask, not both")
        registry = make_registry(args, CHECKPOINT_NAME, OFFICIAL_FILENAME)
        if args.rmbg:
            registry.preset.models["rmbg"] = args.rmbg
        defaults = registry.defaults("tryoff")
        people = image_files(args.person, "person")
        pipeline = TryOffAnyonePipeline.from_registry(registry)
        output = Path(args.output_path)
        for person_path in people:
            mask_path = mask_for(args.mask, person_path, len(people) > 1)
            request = TryOffRequest(
                person=load_image(person_path, "person"),
                category=args.category,
                mask=load_mask(mask_path, name="mask") if mask_path else None,
                auto_mask=mask_path is None,
                height=args.height or defaults.get("height", 512),
                width=args.width or defaults.get("width", 384),
                num_inference_steps=args.steps or defaults.get("num_inference_steps", 50),
                guidance_scale=args.guidance_scale if args.guidance_scale is not None else defaults.get("guidance_scale", 2.5),
                seed=args.seed if args.seed is not None else defaults.get("seed", 36),
                num_images=args.num_images,
                eta=1.0 if args.eta is None else args.eta,
                fit_mode=args.fit_mode,
                background=args.background,
            )
            result = pipeline(request)
            for path in save_results(result, output, f"{person_path.stem}__tryoff", len(people) == 1, registry.preset.name):
                print(f"wrote {path}")
    except (ValueError, TypeError, OSError, RuntimeError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
