"""``python -m pipelines.garment``: garment design from the command line (the IMAGGarment-1 arguments plus model
locations and sampling settings); writes PNGs carrying their parameters, exit status 2 with ``error: ...``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipelines.garment.pipeline import GarmentDesignPipeline
from pipelines.preprocess.colors import swatch_from_hex
from pipelines.types import DESIGN_NEGATIVE, GarmentRequest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.garment",
        description="Generate a garment from a sketch, a colour swatch and a logo (IMAGGarment-1 GAM + LEM).",
    )
    parser.add_argument("--preset", default="sd15", help="model preset name or YAML file (sd15, tiny)")
    parser.add_argument("--GAM_model_ckpt", help="GAM checkpoint (.pt) file, overrides the preset")
    parser.add_argument("--LEM_model_ckpt", help="LEM checkpoint (.bin) file, overrides the preset")
    parser.add_argument("--color_ckpt", help="colour adapter (.bin/.safetensors), overrides the preset")
    parser.add_argument("--base_model", help="SD1.5 base (hub id or local folder)")
    parser.add_argument("--vae", help="VAE (hub id or local folder)")
    parser.add_argument("--image_encoder", help="CLIP image encoder (hub id or local folder)")
    parser.add_argument("--inpaint_model", help="SD1.5-inpainting model for the LEM (hub id or local folder)")
    parser.add_argument("--sketch_path")
    parser.add_argument("--logo_path")
    parser.add_argument("--mask_path", help="logo mask: white where the logo goes")
    parser.add_argument("--color_path", help="colour swatch image")
    parser.add_argument("--color", help="a colour as #rrggbb (rendered as a flat swatch) instead of --color_path")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--negative_prompt", default=DESIGN_NEGATIVE)
    parser.add_argument("--output_path", default="outputs/cli", help="output folder (or a .png file for one image)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: best available)")
    parser.add_argument("--dtype", default=None, help="fp16, bf16, fp32 (default: fp16 on GPU, fp32 on CPU)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance_scale", type=float, default=None)
    parser.add_argument("--sketch_scale", type=float, default=None)
    parser.add_argument("--color_scale", type=float, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--num_images", type=int, default=1)
    parser.add_argument("--models_dir", default=None, help="where the tiny preset builds its models")
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipelines.core.presets import CheckpointLocation as Location
    from pipelines.core.presets import load_preset
    from pipelines.core.registry import ModelRegistry
    from pipelines.preprocess.images import load_image, load_mask, save_png_with_params

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        preset = load_preset(args.preset).override(
            base_model=args.base_model, vae=args.vae, image_encoder=args.image_encoder, inpaint_model=args.inpaint_model
        )
        if args.image_encoder:
            preset.image_encoder_subfolder = None
        for key, value in (("garment_gam", args.GAM_model_ckpt), ("garment_lem", args.LEM_model_ckpt), ("garment_color", args.color_ckpt)):
            if value:
                preset.checkpoints[key] = Location(value)
        registry = ModelRegistry(preset, device=args.device, dtype=args.dtype, models_dir=args.models_dir)
        defaults = registry.defaults("garment")
        color = load_image(args.color_path, "color") if args.color_path else None
        if args.color and color is None:
            color = swatch_from_hex(args.color)
        request = GarmentRequest(
            prompt=args.prompt,
            negative_prompt=args.negative_prompt,
            sketch=load_image(args.sketch_path, "sketch") if args.sketch_path else None,
            color=color,
            logo=load_image(args.logo_path, "logo") if args.logo_path else None,
            logo_mask=load_mask(args.mask_path, name="mask") if args.mask_path else None,
            height=args.height or defaults.get("height", 640),
            width=args.width or defaults.get("width", 512),
            num_inference_steps=args.steps or defaults.get("num_inference_steps", 50),
            guidance_scale=args.guidance_scale if args.guidance_scale is not None else defaults.get("guidance_scale", 7.0),
            sketch_scale=args.sketch_scale if args.sketch_scale is not None else defaults.get("sketch_scale", 0.6),
            color_scale=args.color_scale if args.color_scale is not None else defaults.get("color_scale", 1.0),
            seed=args.seed if args.seed is not None else defaults.get("seed", 42),
            num_images=args.num_images,
        )
        pipeline = GarmentDesignPipeline.from_registry(
            registry, need_sketch=request.sketch is not None, need_color=request.color is not None,
            need_logo=request.logo is not None,
        )
        result = pipeline(request)
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = Path(args.output_path)
    written = []
    for index, (image, seed) in enumerate(zip(result.images, result.seeds)):
        if output.suffix.lower() == ".png" and len(result.images) == 1:
            target = output
        else:
            target = output / f"garment_{seed}_{index}.png"
        params = dict(result.params, seed=seed, num_images=1, preset=preset.name)
        written.append(save_png_with_params(image, target, params))
    for path in written:
        print(f"wrote {path}")
    return 0
