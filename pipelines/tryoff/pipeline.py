"""Virtual try-off with TryOffAnyone: recover the laid-out garment from a photo of a person wearing it.

TryOffAnyone (Xarchakos & Koukopoulos 2024) re-trains the WHOLE transformer blocks (norm, proj_in,
attn1, norm1-3, attn2, ff, proj_out) of the SD1.5-inpainting UNet; every cross-attention returns its
input, exactly as in CatVTON. So it is one more swappable weight set of the ONE shared inpainting UNet.

Official file ``ixarchakos/tryOffAnyone/model.safetensors``: keys ``{i}.{j}.<Transformer2DModel param>``
over the ModuleList ``[down blocks with attentions..., mid_block.attentions, up blocks with attentions...]``
(order down, MID, up). The list is derived from the UNet, so any UNet of the SD family (and the tiny one)
maps the same way. attn2 tensors are read and shape-checked but NOT swapped in: cross-attention returns
its input, so they never influence the output, and leaving them out saves memory and swap time (they
are listed in the load report's ``ignored``).

Stages of one call:
 1. check inputs
 2. fit the person photo to the 3:4 canvas (384x512 W x H by default)
 3. the garment mask: a painted mask wins, else the masker's try-off mask (tops = upper-clothes + dress)
 4. encode TOP = masked person ``image * (mask < 0.5)``, BOTTOM = the full person (``latent_dist.sample()``)
 5. concat-inpainting with the TryOffAnyone set (garment mask under TOP, zero mask under BOTTOM; the
    unconditional branch zeroes the bottom), DDIM eta 1.0, seed 36
 6. decode the top half = the garment; whiten its background (see :func:`whiten_background`)

Command line: ``python -m pipelines.tryoff --help``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from pipelines.core.checkpoints import drop_leading, read_state_dict
from pipelines.types import CheckpointError
from pipelines.core.sampling import RunControl, generators, image_to_tensor, mask_to_tensor, resolve_seed, tensor_to_images, vae_decode
from pipelines.core.concat_inpaint import ConcatInpaintConfig, WeightSet, WeightSetSwitcher, _finish_set, concat_inpaint_denoise
from pipelines.preprocess.images import to_rgb
from pipelines.preprocess.framing import fit_mask, fit_to_canvas
from pipelines.tryon.pipeline import (
    ENCODE_SEED_OFFSET,
    add_common_arguments,
    check_canvas_size,
    check_common,
    concat_inputs,
    encode_latents,
    image_files,
    make_registry,
    mask_for,
    masker_factory,
    pixel_masked,
    resolve_mask,
    save_results,
    shared_weight_set,
    weight_set_active,
)
from pipelines.types import BACKGROUNDS, TRYOFF_CATEGORIES, TryOffRequest, TryOffResult

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "tryoff_anyone"
OFFICIAL_FILENAME = "model.safetensors"
# --------------------------------------------------------------------------------------------- loader
def transformer_groups(unet) -> list[str]:
    """Module names of the ``attentions`` ModuleLists in TryOffAnyone's order: down blocks, MID, up blocks."""
    groups = [f"down_blocks.{i}.attentions" for i, block in enumerate(unet.down_blocks) if getattr(block, "attentions", None)]
    if getattr(unet.mid_block, "attentions", None):
        groups.append("mid_block.attentions")
    groups += [f"up_blocks.{i}.attentions" for i, block in enumerate(unet.up_blocks) if getattr(block, "attentions", None)]
    return groups


def tryoff_key_map(unet) -> dict[str, str]:
    """Official key ``{i}.{j}.param`` -> the UNet parameter name ``<group i>.{j}.param``."""
    mapping: dict[str, str] = {}
    for i, group in enumerate(transformer_groups(unet)):
        for j, block in enumerate(unet.get_submodule(group)):
            for name, _ in block.named_parameters():
                mapping[f"{i}.{j}.{name}"] = f"{group}.{j}.{name}"
    return mapping


def load_tryoffanyone(path: str | Path, inpaint_unet, name: str = CHECKPOINT_NAME) -> WeightSet:
    """The TryOffAnyone weight set (whole transformer blocks minus the unused attn2) for the inpainting UNet.

    Raises :class:`CheckpointError` naming the file and the first missing / unexpected / mis-shaped keys.
    """
    path = Path(path)
    state = drop_leading(read_state_dict(path), "module.")
    bad = sorted(key for key, value in state.items() if not isinstance(value, torch.Tensor))
    if bad:
        raise CheckpointError(f"{path.name}: non-tensor entries {', '.join(bad[:5])}")
    mapping = tryoff_key_map(inpaint_unet)
    missing = sorted(set(mapping) - set(state))
    unexpected = sorted(set(state) - set(mapping))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])} ({len(missing)} in all)")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])} ({len(unexpected)} in all)")
        raise CheckpointError(
            f"{path.name}: not a TryOffAnyone weight set for this UNet "
            f"({len(transformer_groups(inpaint_unet))} transformer groups): " + "; ".join(parts)
        )
    tensors = {mapping[key]: value for key, value in state.items()}
    skipped = sorted(key for key in tensors if ".attn2." in key)
    # Shape-check everything (attn2 included) so a wrong file fails loudly, then drop attn2.
    _finish_set(name, {key: tensors[key] for key in skipped}, inpaint_unet, f"{path.name} (attn2)")
    weight_set = _finish_set(name, {k: v for k, v in tensors.items() if k not in skipped}, inpaint_unet, path.name)
    weight_set.report.ignored.extend(skipped)
    logger.info(weight_set.report.summary())
    return weight_set


def write_tiny_tryoffanyone(root: str | Path) -> Path:
    """A tiny TryOffAnyone file in the official ``{i}.{j}.param`` layout for the tiny inpainting UNet."""
    from safetensors.torch import save_file

    from pipelines.core.tiny import tiny_unet

    unet = tiny_unet(9, seed=1)  # the same base as the tiny inpaint model
    params = dict(unet.named_parameters())
    torch.manual_seed(23)
    state = {
        key: (params[target] + 0.2 * torch.randn_like(params[target])).detach().contiguous()
        for key, target in tryoff_key_map(unet).items()
    }
    path = Path(root) / "checkpoints" / "tryoffanyone" / OFFICIAL_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


# ------------------------------------------------------------------------------------- post-processing
def whiten_background(image: Image.Image, tolerance: int = 40) -> Image.Image:
    """Paint the background around the garment pure white.

    TryOffAnyone's outputs are garments on a near-white studio background (it was trained on VITON-HD
    product photos); the official demo removes it with RMBG-1.4 and whitens it. We do the same without
    another model: the background colour is the median of the image border, and every pixel within
    ``tolerance`` (max RGB channel difference) of it that is CONNECTED to the border becomes white, so
    light areas inside the garment stay. A garment touching the whole border is left as it is.
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


# ------------------------------------------------------------------------------------------- pipeline
class TryOffAnyonePipeline:
    """TryOffAnyone on the registry's ONE inpainting UNet (weight set swapped in per call)."""

    task = "tryoff"

    def __init__(
        self,
        *,
        vae,
        switcher: WeightSetSwitcher,
        weight_set: str,
        scheduler_factory: Callable[[], Any],
        masker: Callable[[], Any] | Any | None = None,
    ) -> None:
        if weight_set not in switcher.sets:
            raise KeyError(f"weight set {weight_set!r} is not registered with the inpainting UNet")
        self.vae, self.switcher, self.weight_set = vae, switcher, weight_set
        self.scheduler_factory = scheduler_factory
        self.masker = masker

    @classmethod
    def from_registry(cls, registry, masker=None) -> "TryOffAnyonePipeline":
        switcher = shared_weight_set(registry, CHECKPOINT_NAME, load_tryoffanyone)
        return cls(
            vae=registry.get("vae"), switcher=switcher, weight_set=CHECKPOINT_NAME,
            scheduler_factory=registry.scheduler, masker=masker if masker is not None else masker_factory(registry),
        )

    @property
    def size_multiple(self) -> int:
        vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return vae_scale * 2 ** (len(self.switcher.unet.config.block_out_channels) - 1)

    def check_inputs(self, request: TryOffRequest) -> None:
        check_common(request, TRYOFF_CATEGORIES)
        check_canvas_size(request.height, request.width, self.size_multiple)
        if request.background not in BACKGROUNDS:
            raise ValueError(f"background={request.background!r} must be one of {', '.join(BACKGROUNDS)}")
        if not 0 <= request.background_tolerance <= 255:
            raise ValueError(f"background_tolerance={request.background_tolerance!r} must be between 0 and 255")

    def prepare_mask(self, request: TryOffRequest) -> tuple[Image.Image, str, str]:
        person = to_rgb(request.person, "person")
        return resolve_mask(person, request.mask, request.auto_mask, request.category, self.masker, "tryoff")

    @torch.no_grad()
    def __call__(self, request: TryOffRequest, control: RunControl | None = None) -> TryOffResult:
        """The worn garment laid out flat: ``num_images`` images of (H, W) = (height, width)."""
        # 1. check inputs
        self.check_inputs(request)
        control = control or RunControl()
        control.overall_total = request.num_inference_steps
        control.check()
        seed = resolve_seed(request.seed)
        batch, height, width = int(request.num_images), request.height, request.width
        person = to_rgb(request.person, "person")

        # 2.-3. canvas and garment mask
        person_canvas, info = fit_to_canvas(person, width, height, request.fit_mode)
        mask, mask_source, note = resolve_mask(
            person, request.mask, request.auto_mask, request.category, self.masker, "tryoff"
        )
        mask_canvas, _ = fit_mask(mask, width, height, info=info)
        if not np.asarray(mask_canvas).any():
            raise ValueError("the garment mask lies outside the part of the photo the model sees (fit mode crop)")

        # 4. encode: TOP = masked person, BOTTOM = the whole person
        vae = self.vae
        pixel_mask = mask_to_tensor(mask_canvas, width, height)  # (1, 1, H, W)
        person_pixels = image_to_tensor(person_canvas, width, height)
        encode_gens = generators(seed + ENCODE_SEED_OFFSET, batch, vae.device)
        top = encode_latents(vae, pixel_masked(person_pixels, pixel_mask), encode_gens)  # (B, 4, h, w)
        bottom = encode_latents(vae, person_pixels, encode_gens)
        latent_mask = torch.nn.functional.interpolate(pixel_mask, size=top.shape[-2:], mode="nearest")
        latent_mask = latent_mask.expand(batch, -1, -1, -1)

        # 5. concat-inpainting with the TryOffAnyone weight set live
        gens = generators(seed, batch, self.switcher.unet.device)
        with weight_set_active(self.switcher, self.weight_set) as unet:
            latents = concat_inpaint_denoise(
                unet,
                self.scheduler_factory(),
                concat_inputs(top, latent_mask, bottom),
                ConcatInpaintConfig(request.num_inference_steps, request.guidance_scale, eta=request.eta, stage="try-off"),
                gens,
                control,
            )

        # 6. decode the garment half, whiten the background
        raw = tensor_to_images(vae_decode(vae, latents))
        if request.background == "white":
            images = [whiten_background(image, request.background_tolerance) for image in raw]
        else:
            images = list(raw)
        params = dict(request.params(), seed=seed, task=self.task, weights=self.weight_set, mask_source=mask_source)
        return TryOffResult(images, mask, mask_source, [seed + i for i in range(batch)], params, raw, note)


# ------------------------------------------------------------------------------------ studio service task
# Registered in pipelines/service.py TASKS as "tryoff": "pipelines.tryoff.pipeline:run_task" (mask previews use
# "tryon_mask" with kind="tryoff").
def run_task(registry, params: dict[str, Any], control: RunControl):
    """The ``tryoff`` task: TryOffRequest fields in, garments out; extras: the mask used and the raw outputs."""
    from pipelines.types import TaskResult

    request = TryOffRequest(**params)
    result = TryOffAnyonePipeline.from_registry(registry)(request, control)
    per_image = [dict(result.params, seed=seed, num_images=1) for seed in result.seeds]
    return TaskResult(result.images, per_image, {"mask": result.mask, "mask_source": result.mask_source,
                                                 "note": result.note, "raw_images": result.raw_images})


# ------------------------------------------------------------------------------------------------ CLI
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
    parser.add_argument("--background", default="white", choices=BACKGROUNDS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from pipelines.preprocess.images import load_image, load_mask

        if args.mask and args.auto_mask:
            raise ValueError("give either --mask or --auto_mask, not both")
        registry = make_registry(args, CHECKPOINT_NAME, OFFICIAL_FILENAME)
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
                num_inference_steps=args.steps or defaults.get("steps", 50),
                guidance_scale=args.guidance_scale if args.guidance_scale is not None else defaults.get("guidance_scale", 2.5),
                seed=args.seed if args.seed is not None else defaults.get("seed", 36),
                num_images=args.num_images,
                eta=args.eta,
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


if __name__ == "__main__":
    sys.exit(main())
