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
 6. decode the top half = the garment; its background: ``white`` flood fill (:func:`whiten_background`),
    ``remove`` the official RMBG-1.4 cut-out on white (pipelines/preprocess/rmbg.py; the flood fill, with a
    note, when the preset names no RMBG weights or they cannot be loaded) or ``keep`` (raw)

Command line: ``python -m pipelines.tryoff --help``.
"""

from __future__ import annotations

import logging
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
from pipelines.preprocess.framing import fit_mask, fit_to_canvas
from pipelines.preprocess.images import check_background, to_rgb
from pipelines.preprocess.masks import masker_factory, resolve_mask
from pipelines.preprocess.rmbg import BackgroundRemover, finish_background
from pipelines.tryoff.checkpoints import CHECKPOINT_NAME, load_tryoffanyone
from pipelines.types import TRYOFF_CATEGORIES, TaskResult, TryOffRequest, TryOffResult

logger = logging.getLogger(__name__)

TRAINED_CATEGORIES = ("upper",)  # what the released TryOffAnyone weights were trained on (VITON-HD tops)

# --------------------------------------------------------------------------------------------- loader


# ------------------------------------------------------------------------------------- post-processing


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
        background_remover: Callable[[], BackgroundRemover] | None = None,
    ) -> None:
        if weight_set not in switcher.sets:
            raise KeyError(f"weight set {weight_set!r} is not registered with the inpainting UNet")
        self.vae, self.switcher, self.weight_set = vae, switcher, weight_set
        self.scheduler_factory = scheduler_factory
        self.masker = masker
        self.background_remover = background_remover  # () -> BackgroundRemover, for background="remove"

    @classmethod
    def from_registry(cls, registry, masker=None) -> "TryOffAnyonePipeline":
        switcher = shared_weight_set(registry, CHECKPOINT_NAME, load_tryoffanyone)
        return cls(
            vae=registry.get("vae"), switcher=switcher, weight_set=CHECKPOINT_NAME,
            scheduler_factory=registry.scheduler, masker=masker if masker is not None else masker_factory(registry, "tryoff"),
            background_remover=lambda: BackgroundRemover.shared(registry),
        )

    @property
    def size_multiple(self) -> int:
        vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return vae_scale * 2 ** (len(self.switcher.unet.config.block_out_channels) - 1)

    def check_inputs(self, request: TryOffRequest) -> None:
        check_common(request, TRYOFF_CATEGORIES)
        check_canvas_size(request.height, request.width, self.size_multiple)
        check_background(request.background, request.background_tolerance)

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

        # 6. decode the garment half; its background (RMBG cut-out, flood fill or raw)
        raw = tensor_to_images(vae_decode(vae, latents))
        images, background_note, background_used = finish_background(
            raw, request.background, request.background_tolerance, self.background_remover)
        note = "; ".join(x for x in (note, background_note) if x)
        params = dict(request.params(), seed=seed, task=self.task, weights=self.weight_set, mask_source=mask_source,
                      background_used=background_used)
        if request.category not in TRAINED_CATEGORIES:
            warning = (f"the TryOffAnyone weights were trained on tops only: a {request.category} garment is outside "
                       "what they learned (TEMU-VTOFF covers upper, lower and dress)")
            logger.warning(warning)
            note = "; ".join(x for x in (note, warning) if x)
        return TryOffResult(images, mask, mask_source, [seed + i for i in range(batch)], params, raw, note)


# ------------------------------------------------------------------------------------ studio service task
# Registered in pipelines/service.py TASKS as "tryoff": "pipelines.tryoff.pipeline:run_task" (mask previews use
# "tryon_mask" with kind="tryoff").
def run_task(registry, params: dict[str, Any], control: RunControl):
    """The ``tryoff`` task: TryOffRequest fields in, garments out; extras: the mask used and the raw outputs."""

    request = TryOffRequest(**params)
    result = TryOffAnyonePipeline.from_registry(registry)(request, control)
    per_image = [dict(result.params, seed=seed, num_images=1) for seed in result.seeds]
    return TaskResult(result.images, per_image, {"mask": result.mask, "mask_source": result.mask_source,
                                                 "note": result.note, "raw_images": result.raw_images})
