"""Virtual try-on with CatVTON on the shared concat-inpainting UNet.

CatVTON (Chong et al. 2024) is the SD1.5-inpainting UNet with text/cross-attention removed and only its
self-attention (``attn1``) re-trained; the trained tensors are one swappable weight set of the ONE resident
inpainting UNet that the garment LEM and TryOffAnyone also use (see ``pipelines/core/concat_inpaint.py``).

Stages of one call (numbers match the comments in ``__call__``):
 1. check inputs
 2. fit the person photo to the 3:4 canvas (centre crop by default), the garment resized + padded on white
 3. the mask: a painted mask always wins; otherwise the automatic try-on mask of the category
 4. encode: masked person (pixels under the mask set to 0 = grey) and garment with the VAE; like the
    official code the latents are ``latent_dist.sample()`` (seeded per image) x scaling factor
 5. concat-inpainting: masked person on TOP, garment BELOW, DDIM eta 1.0, CFG with the garment half zeroed
 6. decode the person half; paste it into the ORIGINAL photo at full resolution inside the mask (feathered or
    hard edge) or return the raw canvas (paste mode "none")
    only, so every unmasked pixel is bit-identical to the upload

Command line: ``python -m pipelines.tryon --help``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from pipelines.core.concat_inpaint import (
    ENCODE_SEED_OFFSET,
    ConcatInpaintConfig,
    WeightSetSwitcher,
    check_canvas_size,
    check_common,
    concat_inpaint_denoise,
    concat_inputs,
    encode_latents,
    pixel_masked,
    shared_weight_set,
    weight_set_active,
)
from pipelines.core.sampling import (
    RunControl,
    generators,
    image_to_tensor,
    mask_to_tensor,
    resolve_seed,
    tensor_to_images,
    vae_decode,
)
from pipelines.preprocess.framing import check_paste, fit_mask, fit_to_canvas, pad_garment, paste_results
from pipelines.preprocess.images import check_image, load_image, load_mask, to_rgb
from pipelines.preprocess.masks import SamRefiner, blur_threshold, mask_overlay, masker_factory, resolve_mask
from pipelines.tryon.checkpoints import load_catvton
from pipelines.tryon.garment_model import GarmentModelTryOnPipeline
from pipelines.types import CATVTON_SIZES, TRYON_CATEGORIES, ModelUnavailableError, TaskResult, TryOnRequest, TryOnResult

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- request/result
# ---------------------------------------------------------------------------------------- shared helpers


# ---------------------------------------------------------------------------------------------- loader


# -------------------------------------------------------------------------------------------- pipeline
class CatVTONPipeline:
    """CatVTON try-on on the registry's ONE inpainting UNet (the weight set is swapped in per call)."""

    task = "tryon"

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
        self.masker = masker  # an AutoMasker or a zero-argument factory returning one

    @classmethod
    def from_registry(cls, registry, variant: str = "tryon_catvton", masker=None) -> "CatVTONPipeline":
        """Use the registry's VAE and inpainting UNet; load the ``variant`` weight set on first use."""
        if variant not in registry.preset.checkpoints:
            raise ValueError(
                f"variant={variant!r} is not a checkpoint of preset {registry.preset.name!r}; "
                f"known: {', '.join(k for k in registry.preset.checkpoints if k.startswith('tryon'))}"
            )
        switcher = shared_weight_set(registry, variant, load_catvton)
        return cls(
            vae=registry.get("vae"), switcher=switcher, weight_set=variant, scheduler_factory=registry.scheduler,
            masker=masker if masker is not None else masker_factory(registry),
        )

    @property
    def size_multiple(self) -> int:
        vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return vae_scale * 2 ** (len(self.switcher.unet.config.block_out_channels) - 1)

    def native_size(self) -> tuple[int, int]:
        """(H, W) the active weight set was trained at (CATVTON_SIZES; 1024x768 for weight sets trained here)."""
        return CATVTON_SIZES.get(self.weight_set, CATVTON_SIZES["tryon_catvton"])

    def settle(self, request: TryOnRequest) -> TryOnRequest:
        """The request with the open fields filled: the weights' own canvas, CatVTON's eta 1.0."""
        height, width = self.native_size()
        return dataclasses.replace(request, height=request.height or height, width=request.width or width,
                                   eta=1.0 if request.eta is None else request.eta)

    def check_inputs(self, request: TryOnRequest) -> None:
        request = self.settle(request)
        check_common(request)
        if request.garment is None:
            raise ValueError("garment image is missing: upload a photo of the garment to try on")
        check_image(request.garment, "garment")
        check_canvas_size(request.height, request.width, self.size_multiple)
        check_paste(request.paste_mode, request.feather, request.mask_blur)

    def prepare_mask(self, request: TryOnRequest) -> tuple[Image.Image, str, str]:
        """The mask a call would use (painted or automatic, blurred and re-thresholded) at the person photo's size:
        (mask, source, note)."""
        person = to_rgb(request.person, "person")
        mask, source, note = resolve_mask(person, request.mask, request.auto_mask, request.category, self.masker,
                                          "tryon")
        return blur_threshold(mask, request.mask_blur), source, note

    @torch.no_grad()
    def __call__(self, request: TryOnRequest, control: RunControl | None = None) -> TryOnResult:
        """Dress the person in the garment; ``num_images`` results at the person photo's size (pasted back)."""
        # 1. check inputs
        request = self.settle(request)
        self.check_inputs(request)
        control = control or RunControl()
        control.overall_total = request.num_inference_steps
        control.check()
        seed = resolve_seed(request.seed)
        batch, height, width = int(request.num_images), request.height, request.width
        person = to_rgb(request.person, "person")
        garment = to_rgb(request.garment, "garment")

        # 2. canvases: the person fills the 3:4 canvas, the garment is padded (nothing of it is cut)
        person_canvas, info = fit_to_canvas(person, width, height, request.fit_mode)
        garment_canvas = pad_garment(garment, width, height)

        # 3. mask (original size) -> canvas
        mask, mask_source, note = resolve_mask(
            person, request.mask, request.auto_mask, request.category, self.masker, "tryon"
        )
        mask = blur_threshold(mask, request.mask_blur)
        mask_canvas, _ = fit_mask(mask, width, height, info=info)
        if not np.asarray(mask_canvas).any():
            raise ValueError("the mask lies outside the part of the photo the model sees (fit mode crop)")

        # 4. encode (one VAE pass per image, per-image sampling noise)
        vae = self.vae
        device = self.switcher.unet.device
        pixel_mask = mask_to_tensor(mask_canvas, width, height)  # (1, 1, H, W)
        person_pixels = image_to_tensor(person_canvas, width, height)
        encode_gens = generators(seed + ENCODE_SEED_OFFSET, batch, vae.device)
        top = encode_latents(vae, pixel_masked(person_pixels, pixel_mask), encode_gens)  # (B, 4, h, w)
        bottom = encode_latents(vae, image_to_tensor(garment_canvas, width, height), encode_gens)
        latent_mask = torch.nn.functional.interpolate(pixel_mask, size=top.shape[-2:], mode="nearest")
        latent_mask = latent_mask.expand(batch, -1, -1, -1)

        # 5. concat-inpainting on the shared UNet with the CatVTON weight set live
        gens = generators(seed, batch, device)
        with weight_set_active(self.switcher, self.weight_set) as unet:
            latents = concat_inpaint_denoise(
                unet,
                self.scheduler_factory(),
                concat_inputs(top, latent_mask, bottom),
                ConcatInpaintConfig(request.num_inference_steps, request.guidance_scale, eta=request.eta, stage="try-on"),
                gens,
                control,
            )

        # 6. decode the person half and paste it back into the original photo
        canvas_images = tensor_to_images(vae_decode(vae, latents))
        images = paste_results(person, canvas_images, mask, info, request.paste_mode, request.feather)
        params = dict(request.params(), seed=seed, task=self.task, weights=self.weight_set, mask_source=mask_source)
        return TryOnResult(images, mask, mask_source, [seed + i for i in range(batch)], params, canvas_images, note)


# ------------------------------------------------------------------------------------ studio service tasks
# Registered in pipelines/service.py TASKS as "tryon": "pipelines.tryon.pipeline:run_task",
# "tryon_mask": "pipelines.tryon.pipeline:run_mask_task", "tryon_sam": "pipelines.tryon.pipeline:run_sam_task".
def run_task(registry, params: dict[str, Any], control: RunControl):
    """The ``tryon`` task: TryOnRequest fields + optional ``variant`` (CatVTON weights) or ``garment_model``
    (a fine-tuned garment model folder). Extras: the mask used, its source and any note."""

    params = dict(params)
    garment_model = params.pop("garment_model", None)
    variant = params.pop("variant", "tryon_catvton")
    request = TryOnRequest(**params)
    if garment_model:

        pipeline = GarmentModelTryOnPipeline.from_registry(registry, garment_model)
    else:
        pipeline = CatVTONPipeline.from_registry(registry, variant)
    result = pipeline(request, control)
    per_image = [dict(result.params, seed=seed, num_images=1) for seed in result.seeds]
    return TaskResult(result.images, per_image, {"mask": result.mask, "mask_source": result.mask_source, "note": result.note})


def run_mask_task(registry, params: dict[str, Any], control: RunControl | None = None):
    """Preview the mask a generation would use: ``person``, ``category``, ``mask`` (painted), ``auto_mask``,
    ``kind`` ("tryon" | "tryoff"), ``mask_blur`` (try-on; the request's default). Returns the overlay image;
    extras carry the mask, source and note."""

    person = load_image(params.get("person"), "person")
    kind = params.get("kind", "tryon")
    if kind not in ("tryon", "tryoff"):
        raise ValueError(f"kind={kind!r} must be 'tryon' or 'tryoff'")
    category = params.get("category", "upper")
    if category not in TRYON_CATEGORIES:
        raise ValueError(f"category={category!r} must be one of {', '.join(TRYON_CATEGORIES)}")
    mask, source, note = resolve_mask(
        person, params.get("mask"), bool(params.get("auto_mask", True)), category, masker_factory(registry, kind), kind
    )
    if kind == "tryon":
        mask = blur_threshold(mask, int(params.get("mask_blur", TryOnRequest.mask_blur)))
    overlay = mask_overlay(person, mask)
    return TaskResult([overlay], [{"task": f"{kind}_mask", "mask_source": source}], {"mask": mask, "mask_source": source, "note": note})


def sam_model_type(path: str | Path) -> str:
    """The SAM model type from the official file name (sam_vit_h_4b8939.pth -> vit_h); vit_b by default."""
    name = Path(path).name.lower()
    for model_type in ("vit_h", "vit_l", "vit_b", "tiny"):
        if model_type in name:
            return model_type
    return "vit_b"


def run_sam_task(registry, params: dict[str, Any], control: RunControl | None = None):
    """Click-to-refine with SAM: ``person``, ``points_pos``/``points_neg`` [(x, y) in photo pixels],
    optional ``base_mask``. Needs the preset's ``sam`` checkpoint. Returns the overlay; extras the mask."""

    location = registry.preset.sam
    if not location:
        raise ModelUnavailableError(f"preset {registry.preset.name!r} has no SAM checkpoint (set 'sam' in its YAML)")
    refiner = registry.shared(
        "sam_refiner", lambda: SamRefiner(location, sam_model_type(location), str(registry.device)), f"SAM {location}"
    )
    person = load_image(params.get("person"), "person")
    base = params.get("base_mask")
    if base is not None:
        base = load_mask(base, size=person.size, name="mask", reference_name="person image")
        if not np.asarray(base).any():
            base = None
    refiner.set_image(person)
    mask = refiner.refine(params.get("points_pos") or (), params.get("points_neg") or (), base_mask=base)
    return TaskResult([mask_overlay(person, mask)], [{"task": "sam"}], {"mask": mask, "mask_source": "sam"})
