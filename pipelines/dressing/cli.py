"""``python -m pipelines.dressing``: multi-garment dressing from the command line (repeatable --garment /
--category, pose image or preset, checkpoints as hub ids or local files, --lora file:weight)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipelines.dressing.pipeline import DressingPipeline
from pipelines.types import (
    DRESSING_NEGATIVE,
    DRESSING_PROMPT,
    GARMENT_CATEGORIES,
    MAX_GARMENTS,
    DressingRequest,
    Garment,
    LoraSpec,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.dressing",
        description="Dress a generated person in 1 to %d garments (AnyDressing architecture, IMAGDressing-v1 weights)." % MAX_GARMENTS,
    )
    parser.add_argument("--garment", action="append", default=[], required=True, help="garment image; repeat for each garment")
    parser.add_argument("--category", action="append", default=[], help=f"category per --garment, in order ({', '.join(GARMENT_CATEGORIES)})")
    parser.add_argument("--prompt", default=DRESSING_PROMPT)
    parser.add_argument("--negative_prompt", default=DRESSING_NEGATIVE)
    pose = parser.add_mutually_exclusive_group()
    pose.add_argument("--pose_image", help="an OpenPose skeleton image, or a photo of a person (--pose_from_photo)")
    pose.add_argument("--pose_preset", help="a pose preset name from presets/poses")
    parser.add_argument("--pose_from_photo", action="store_true", help="--pose_image is a photo: estimate its skeleton first")
    parser.add_argument("--pose_scale", type=float, default=1.0, help="ControlNet conditioning scale (0-2)")
    parser.add_argument("--preset", default="sd15", help="model preset name or YAML file (sd15, tiny)")
    parser.add_argument("--checkpoint", help="IMAGDressing checkpoint: local .pt file or hub id (repo/file.pt)")
    parser.add_argument("--slot_loras", help="our slot-LoRA .safetensors for the garment encoder")
    parser.add_argument("--base_model", help="SD1.5 base (hub id or local folder)")
    parser.add_argument("--vae", help="VAE (hub id or local folder)")
    parser.add_argument("--image_encoder", help="CLIP ViT-H image encoder (hub id or local folder)")
    parser.add_argument("--controlnet", help="ControlNet OpenPose (hub id or local folder)")
    parser.add_argument("--lora", action="append", default=[], help="community LoRA file[:weight]; repeatable")
    parser.add_argument("--guidance_scale", type=float, default=None, help="text guidance s_T")
    parser.add_argument("--garment_guidance_scale", type=float, default=None, help="garment guidance s_G")
    parser.add_argument("--garment_scale", type=float, default=None, help="Dressing-Attention lambda (0-1.5)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--num_images", type=int, default=1)
    parser.add_argument("--output_path", default="outputs/cli", help="output folder (or a .png file for one image)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: best available)")
    parser.add_argument("--dtype", default=None, help="fp16, bf16, fp32 (default: fp16 on GPU, fp32 on CPU)")
    parser.add_argument("--models_dir", default=None, help="where the tiny preset builds its models")
    return parser


def _checkpoint_location(value: str):
    from pipelines.core.presets import CheckpointLocation

    path = Path(value).expanduser()
    if path.exists():
        return CheckpointLocation(str(path))
    parts = value.split("/")
    if len(parts) > 2:  # owner/repo/path/inside.pt
        return CheckpointLocation("/".join(parts[:2]), "/".join(parts[2:]))
    return CheckpointLocation(value, "IMAGDressing-v1_512.pt")


def main(argv: list[str] | None = None) -> int:
    from pipelines.core.presets import load_preset
    from pipelines.core.registry import ModelRegistry
    from pipelines.preprocess.images import load_image, save_png_with_params
    from pipelines.types import ModelUnavailableError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.category and len(args.category) != len(args.garment):
        parser.error(f"{len(args.category)} --category for {len(args.garment)} --garment: give one per garment or none")
    try:
        preset = load_preset(args.preset).override(
            base_model=args.base_model, vae=args.vae, image_encoder=args.image_encoder, controlnet_openpose=args.controlnet
        )
        if args.image_encoder:
            preset.image_encoder_subfolder = None
        if args.checkpoint:
            preset.checkpoints["dressing_imagdressing"] = _checkpoint_location(args.checkpoint)
        registry = ModelRegistry(preset, device=args.device, dtype=args.dtype, models_dir=args.models_dir)
        defaults = registry.defaults("dressing")
        height = args.height or defaults.get("height", 640)
        width = args.width or defaults.get("width", 512)
        pose = None
        if args.pose_preset:
            from pipelines.preprocess.pose import draw_openpose, load_pose_preset

            pose = draw_openpose(load_pose_preset(args.pose_preset).keypoints, width, height)
        elif args.pose_image:
            pose = load_image(args.pose_image, "pose")
            if args.pose_from_photo:
                from pipelines.preprocess.pose import PoseEstimator

                pose = PoseEstimator(preset.openpose_annotator).estimate(pose, width, height).image
        categories = args.category or ["upper"] * len(args.garment)
        guidance = args.guidance_scale if args.guidance_scale is not None else defaults.get("guidance_scale", 6.5)
        request = DressingRequest(
            garments=[Garment(load_image(path, f"garment {i + 1}"), cat) for i, (path, cat) in enumerate(zip(args.garment, categories))],
            prompt=args.prompt,
            negative_prompt=args.negative_prompt,
            pose_image=pose,
            pose_scale=args.pose_scale,
            height=height,
            width=width,
            num_inference_steps=args.steps or defaults.get("num_inference_steps", 30),
            guidance_scale=guidance,
            garment_guidance_scale=(
                args.garment_guidance_scale if args.garment_guidance_scale is not None
                else defaults.get("garment_guidance_scale", guidance)
            ),
            garment_scale=args.garment_scale if args.garment_scale is not None else defaults.get("garment_scale", 0.85),
            seed=args.seed if args.seed is not None else defaults.get("seed", 42),
            num_images=args.num_images,
            loras=[LoraSpec.parse(text) for text in args.lora],
        )
        pipeline = DressingPipeline.from_registry(registry, need_pose=pose is not None, slot_loras_path=args.slot_loras)
        result = pipeline(request)
    except (ValueError, TypeError, OSError, ModelUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = Path(args.output_path)
    for index, (image, seed) in enumerate(zip(result.images, result.seeds)):
        if output.suffix.lower() == ".png" and len(result.images) == 1:
            target = output
        else:
            target = output / f"dressing_{seed}_{index}.png"
        params = dict(result.params, seed=seed, num_images=1, preset=preset.name)
        print(f"wrote {save_png_with_params(image, target, params)}")
    return 0
