"""``python -m pipelines.posedesign``: pose-guided drafts, attribute edits, and ControlLDM -> diffusers conversion.

    draft    --prompt "a red silk evening dress" --pose_photo person.jpg | --pose_preset walking [--category Dress]
    edit     --image draft.png --attribute sleeve_length --prompt "long sleeves" [--mask region.png]
    convert  --checkpoint eqf_final.ckpt --output_path models/equifashion-diffusers

Every model is a hub id or a local file/folder: --checkpoint (the EquiFashion ControlLDM .ckpt/.safetensors),
--original_config (its cldm yaml), --tokenizer (a folder or repo holding tokenizer/), --base_model and
--controlnet for the SD1.5 OpenPose variant. Drafts and edits go through the studio's own task functions, so the
command line and the tab give the same images for the same settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipelines.types import ATTRIBUTES, PASTE_MODES, POSE_DESIGN_CATEGORIES, POSE_DESIGN_WEIGHTS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.posedesign",
                                     description="Pose-guided design and attribute editing (EquiFashion).")
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--preset", default="sd15", help="model preset name or YAML file (sd15, tiny)")
    common.add_argument("--weights", default="equifashion", choices=list(POSE_DESIGN_WEIGHTS))
    common.add_argument("--checkpoint", help="EquiFashion ControlLDM checkpoint: local file or hub id/file.ckpt")
    common.add_argument("--original_config", help="its original cldm yaml (default: the shipped cldm_v2.yaml)")
    common.add_argument("--tokenizer", help="SD2 tokenizer: hub id or local folder holding tokenizer/")
    common.add_argument("--base_model", help="SD1.5 base for --weights sd15_openpose (hub id or local folder)")
    common.add_argument("--controlnet", help="SD1.5 OpenPose ControlNet (hub id or local folder)")
    common.add_argument("--prompt", default="")
    common.add_argument("--category", default="Dress", choices=POSE_DESIGN_CATEGORIES)
    common.add_argument("--negative_prompt", default=None)
    common.add_argument("--resolution", type=int, default=None, help="short side, multiple of 64 (default 512)")
    common.add_argument("--control_strength", type=float, default=None)
    common.add_argument("--steps", type=int, default=None)
    common.add_argument("--guidance_scale", type=float, default=None)
    common.add_argument("--eta", type=float, default=None)
    common.add_argument("--seed", type=int, default=None, help="-1 = random")
    common.add_argument("--num_images", type=int, default=1)
    common.add_argument("--output_path", default="outputs/cli", help="output folder (or a .png file for one image)")
    common.add_argument("--device", default=None)
    common.add_argument("--dtype", default=None, help="fp16, bf16, fp32 (default: bf16/fp16 on GPU, fp32 on CPU)")
    common.add_argument("--models_dir", default=None, help="where the tiny preset builds its models")
    draft = commands.add_parser("draft", parents=[common], help="text + pose -> a draft design on a body")
    pose = draft.add_mutually_exclusive_group(required=True)
    pose.add_argument("--pose_photo", help="photo of a person to take the pose from")
    pose.add_argument("--pose_preset", help="a pose preset name from presets/poses")
    pose.add_argument("--pose_image", help="an OpenPose skeleton image")
    draft.add_argument("--guess_mode", action="store_true")
    draft.add_argument("--keep_background", action="store_true", help="do not composite on white")
    edit = commands.add_parser("edit", parents=[common], help="change one attribute of an image inside a region")
    edit.add_argument("--image", required=True)
    edit.add_argument("--attribute", required=True, choices=list(ATTRIBUTES))
    edit.add_argument("--mask", help="painted region (white = edit); default: the automatic region from the pose")
    edit.add_argument("--strength", type=float, default=None, help="fraction of the schedule re-run (default: the attribute's)")
    edit.add_argument("--paste_mode", default="feathered", choices=PASTE_MODES)
    convert = commands.add_parser("convert", help="ControlLDM checkpoint -> a diffusers StableDiffusionControlNetPipeline folder")
    convert.add_argument("--checkpoint", required=True, help="local .ckpt / .safetensors")
    convert.add_argument("--original_config", default=None)
    convert.add_argument("--tokenizer", default=None, help="folder or hub id holding tokenizer/ (copied in)")
    convert.add_argument("--output_path", required=True)
    return parser


def _registry(args):
    from pipelines.core.presets import CheckpointLocation, load_preset
    from pipelines.core.registry import ModelRegistry

    preset = load_preset(args.preset).override(base_model=args.base_model, controlnet_openpose=args.controlnet)
    if args.checkpoint:
        path, parts = Path(args.checkpoint).expanduser(), args.checkpoint.split("/")
        if path.exists():
            preset.checkpoints["equifashion"] = CheckpointLocation(str(path))
        elif len(parts) > 2:  # owner/repo/path/inside.ckpt
            preset.checkpoints["equifashion"] = CheckpointLocation("/".join(parts[:2]), "/".join(parts[2:]))
        else:
            preset.checkpoints["equifashion"] = CheckpointLocation(args.checkpoint, "eqf_final.ckpt")
    preset.models.update({key: value for key, value in (("equifashion_config", args.original_config),
                                                        ("equifashion_tokenizer", args.tokenizer)) if value})
    return ModelRegistry(preset, device=args.device, dtype=args.dtype, models_dir=args.models_dir)


def _common_params(args, defaults: dict) -> dict:
    params = {"prompt": args.prompt, "category": args.category, "weights": args.weights,
              "num_images": args.num_images}
    for key, value in (("negative_prompt", args.negative_prompt), ("resolution", args.resolution),
                       ("control_strength", args.control_strength), ("num_inference_steps", args.steps),
                       ("guidance_scale", args.guidance_scale), ("eta", args.eta), ("seed", args.seed)):
        params[key] = value if value is not None else defaults.get(key)
    return {key: value for key, value in params.items() if value is not None}


def _convert(args) -> list[Path]:
    """Write unet/, controlnet/, vae/, text_encoder/, scheduler/ (+ tokenizer/) and model_index.json."""
    from diffusers import DDIMScheduler

    from pipelines.posedesign.checkpoints import load_controlldm, read_original_config

    output = Path(args.output_path)
    if output.exists() and any(output.iterdir()):
        raise ValueError(f"{output} exists and is not empty; choose a new folder (nothing is overwritten)")
    parts = load_controlldm(args.checkpoint, args.original_config)
    original = read_original_config(args.original_config)["model"]["params"]
    for name in ("unet", "controlnet", "vae", "text_encoder"):
        getattr(parts, name).save_pretrained(output / name, safe_serialization=True)
    DDIMScheduler(num_train_timesteps=original.get("timesteps", 1000), beta_start=original.get("linear_start", 0.00085),
                  beta_end=original.get("linear_end", 0.012), beta_schedule="scaled_linear", clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon").save_pretrained(output / "scheduler")
    index = {"_class_name": "StableDiffusionControlNetPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "controlnet": ["diffusers", "ControlNetModel"], "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": ["transformers", "CLIPTextModel"], "scheduler": ["diffusers", "DDIMScheduler"],
             "safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False}
    if args.tokenizer:
        from transformers import CLIPTokenizer

        from pipelines.core.registry import from_pretrained

        from_pretrained(CLIPTokenizer, args.tokenizer, subfolder="tokenizer").save_pretrained(output / "tokenizer")
        index["tokenizer"] = ["transformers", "CLIPTokenizer"]
    (output / "model_index.json").write_text(json.dumps(index, indent=2))
    print(parts.report.summary())
    return [output]


def main(argv: list[str] | None = None) -> int:
    from pipelines.core.cli import save_results
    from pipelines.core.sampling import RunControl
    from pipelines.posedesign.pipeline import PoseDesignResult, run_edit_task, run_task
    from pipelines.preprocess.images import load_image, read_png_params
    from pipelines.types import CheckpointError, ModelUnavailableError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "convert":
            for path in _convert(args):
                print(f"wrote {path}")
            return 0
        registry = _registry(args)
        if args.command == "draft":
            params = _common_params(args, registry.defaults("pose_design"))
            params.update(guess_mode=args.guess_mode, white_background=not args.keep_background)
            if args.pose_preset:
                params["pose_preset"] = args.pose_preset
            elif args.pose_photo:
                params["pose_photo"] = load_image(args.pose_photo, "pose photo")
            else:
                params["pose_image"] = load_image(args.pose_image, "pose skeleton")
            task = run_task(registry, params, RunControl())
        else:
            params = _common_params(args, registry.defaults("attribute_edit"))
            image = load_image(args.image, "image to edit")
            params.update(image=image, attribute=args.attribute, strength=args.strength, paste_mode=args.paste_mode)
            if args.mask:
                params["mask"] = load_image(args.mask, "edit region")
            else:
                try:  # a draft of ours carries its pose
                    params["keypoints"] = read_png_params(args.image).get("keypoints")
                except ValueError:
                    pass
            task = run_edit_task(registry, params, RunControl())
    except (ValueError, TypeError, OSError, CheckpointError, ModelUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = PoseDesignResult(task.images, [p["seed"] for p in task.params], {k: v for k, v in task.params[0].items()
                                                                           if k != "seed"})
    for path in save_results(result, Path(args.output_path), args.command, single=True, preset_name=registry.preset.name):
        print(f"wrote {path}")
    return 0
