"""Try-on with a "garment model": an SD-inpainting pipeline fine-tuned on ONE garment (the seed-003 method).

The training tab (``training/garment_finetune.py``) exports ``final/``: a diffusers
``StableDiffusionInpaintPipeline`` folder (LoRA already merged) plus ``atelier_model.json`` with
``"kind": "garment_model"`` and the ``prompt`` it was trained with. Trying it on = inpainting the person's
garment region with that prompt; the mask, canvas fitting and paste-back are the same as CatVTON's, so the
result keeps every unmasked pixel of the original photo.

A garment model is a whole SD pipeline (its own UNet and text encoder), so it is NOT a weight set of the
shared inpainting UNet; the registry keeps at most one resident (``garment_model``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily: the studio lists garment models without loading it
    import torch

    from pipelines.core.sampling import RunControl
    from pipelines.types import TryOnRequest, TryOnResult

logger = logging.getLogger(__name__)

MODEL_CARD = "atelier_model.json"  # the training module's MODEL_CARD (not imported: pipelines never import training)
KIND = "garment_model"
DEFAULT_GUIDANCE = 7.5


@dataclass
class GarmentModelInfo:
    path: Path  # the pipeline folder (holds atelier_model.json, model_index.json, unet/, ...)
    name: str  # display name: the run folder name when the card sits in <run>/final
    prompt: str  # the prompt it was trained with
    card: dict[str, Any]


def read_garment_model(folder: str | Path) -> GarmentModelInfo:
    """Read and check one garment model folder; ValueError naming the folder when it is not one."""
    folder = Path(folder).expanduser()
    card_path = folder / MODEL_CARD
    if not card_path.is_file():
        raise ValueError(f"{folder} is not a garment model: it has no {MODEL_CARD}")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{card_path}: unreadable model card ({error})") from error
    if not isinstance(card, dict) or card.get("kind") != KIND:
        raise ValueError(f"{card_path}: kind is {card.get('kind') if isinstance(card, dict) else None!r}, not {KIND!r}")
    if not (folder / "model_index.json").is_file() or not (folder / "unet").is_dir():
        raise ValueError(f"{folder}: the model card is there but the pipeline (model_index.json, unet/) is missing")
    name = folder.parent.name if folder.name == "final" else folder.name
    return GarmentModelInfo(folder, name, str(card.get("prompt") or card.get("trigger") or ""), card)


def list_garment_models(directory: str | Path) -> list[GarmentModelInfo]:
    """Garment models under ``directory``: ``<dir>/<name>/`` or a training run's ``<dir>/<run>/final/``.

    Folders that are not valid garment models are skipped with a log line (one bad run must not hide the
    others). A missing directory gives an empty list.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        return []
    found = []
    for card in sorted(list(directory.glob(f"*/{MODEL_CARD}")) + list(directory.glob(f"*/final/{MODEL_CARD}"))):
        try:
            found.append(read_garment_model(card.parent))
        except ValueError as error:
            logger.warning("skipping %s: %s", card.parent, error)
    return found


class GarmentModelTryOnPipeline:
    """Inpaint the person's garment region with a fine-tuned garment model and its prompt."""

    task = "tryon_garment_model"

    def __init__(self, pipe, info: GarmentModelInfo, masker: Callable[[], Any] | Any | None = None) -> None:
        self.pipe, self.info, self.masker = pipe, info, masker

    @classmethod
    def from_folder(cls, folder: str | Path, device: "torch.device | str" = "cpu", dtype: "torch.dtype | None" = None,
                    masker=None) -> "GarmentModelTryOnPipeline":
        import torch
        from diffusers import StableDiffusionInpaintPipeline

        info = read_garment_model(folder)
        pipe = StableDiffusionInpaintPipeline.from_pretrained(
            str(info.path), torch_dtype=dtype or torch.float32, safety_checker=None, requires_safety_checker=False
        )
        if pipe.unet.config.in_channels != 9:
            raise ValueError(f"{info.path}: the UNet has {pipe.unet.config.in_channels} input channels; need 9 (inpainting)")
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, info, masker)

    @classmethod
    def from_registry(cls, registry, folder: str | Path) -> "GarmentModelTryOnPipeline":
        """Keep ONE garment model resident in the registry; loading another replaces it."""
        from pipelines.preprocess.masks import masker_factory

        info = read_garment_model(folder)
        if registry.is_loaded("garment_model"):
            current = registry.shared("garment_model", lambda: None)
            if current is not None and current.info.path.resolve() == info.path.resolve():
                return current
            registry.unload("garment_model")
        return registry.shared(
            "garment_model",
            lambda: cls.from_folder(info.path, registry.device, registry.dtype, masker_factory(registry)),
            f"garment model {info.name}",
        )

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for m in (self.pipe.unet, self.pipe.text_encoder, self.pipe.vae) for p in m.parameters())

    @property
    def num_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for m in (self.pipe.unet, self.pipe.text_encoder, self.pipe.vae)
                   for p in m.parameters())

    @property
    def size_multiple(self) -> int:
        return self.pipe.vae_scale_factor * 2 ** (len(self.pipe.unet.config.block_out_channels) - 1)

    def native_size(self) -> tuple[int, int]:
        """(H, W): the training resolution as the height of a 3:4 canvas (seed-003 trains 512 px squares)."""
        resolution = int(self.info.card.get("resolution") or 512)
        multiple = self.size_multiple
        height = max(multiple, resolution // multiple * multiple)
        return height, max(multiple, round(height * 3 / 4 / multiple) * multiple)

    def settle(self, request: TryOnRequest) -> TryOnRequest:
        """The request with the open fields filled: the training resolution, eta 0 (the diffusers default the
        method sampled with)."""
        import dataclasses

        height, width = self.native_size()
        return dataclasses.replace(request, height=request.height or height, width=request.width or width,
                                   eta=0.0 if request.eta is None else request.eta)

    def check_inputs(self, request: TryOnRequest) -> None:
        from pipelines.core.concat_inpaint import check_canvas_size, check_common
        from pipelines.preprocess.framing import check_paste
        from pipelines.preprocess.images import check_image

        request = self.settle(request)
        check_common(request)
        check_paste(request.paste_mode, request.feather, request.mask_blur)
        check_canvas_size(request.height, request.width, self.size_multiple)
        if request.garment is not None:
            check_image(request.garment, "garment")  # unused by this mode but must still be an image

    def __call__(self, request: TryOnRequest, control: RunControl | None = None) -> TryOnResult:
        """Inpaint the mask region with ``request.prompt`` (default: the model's own prompt)."""
        import torch

        with torch.no_grad():
            return self._generate(request, control)

    def _generate(self, request: TryOnRequest, control: RunControl | None) -> TryOnResult:
        from pipelines.core.sampling import RunControl, generators, resolve_seed
        from pipelines.preprocess.framing import fit_mask, fit_to_canvas, paste_results
        from pipelines.preprocess.images import to_rgb
        from pipelines.preprocess.masks import blur_threshold, resolve_mask
        from pipelines.types import TryOnResult

        request = self.settle(request)
        self.check_inputs(request)
        control = control or RunControl()
        control.overall_total = request.num_inference_steps
        control.check()
        seed = resolve_seed(request.seed)
        batch, height, width = int(request.num_images), request.height, request.width
        person = to_rgb(request.person, "person")
        canvas, info = fit_to_canvas(person, width, height, request.fit_mode)
        mask, mask_source, note = resolve_mask(person, request.mask, request.auto_mask, request.category, self.masker)
        mask = blur_threshold(mask, request.mask_blur)
        mask_canvas, _ = fit_mask(mask, width, height, info=info)
        if not np.asarray(mask_canvas).any():
            raise ValueError("the mask lies outside the part of the photo the model sees (fit mode crop)")
        prompt = request.prompt or self.info.prompt
        total = request.num_inference_steps

        def on_step(pipe, step, timestep, kwargs):
            control.step("garment model", step + 1, total, kwargs.get("latents"))
            return {}

        output = self.pipe(
            prompt=[prompt] * batch,
            negative_prompt=[request.negative_prompt] * batch if request.negative_prompt else None,
            image=canvas,
            mask_image=mask_canvas,
            height=height,
            width=width,
            num_inference_steps=total,
            guidance_scale=request.guidance_scale,
            eta=request.eta,
            generator=generators(seed, batch, self.pipe.device),
            callback_on_step_end=on_step,
            callback_on_step_end_tensor_inputs=["latents"],
        )
        canvas_images = list(output.images)
        images = paste_results(person, canvas_images, mask, info, request.paste_mode, request.feather)
        params = dict(request.params(), prompt=prompt, seed=seed, task=self.task, weights=str(self.info.path),
                      garment_model=self.info.name, mask_source=mask_source)
        return TryOnResult(images, mask, mask_source, [seed + i for i in range(batch)], params, canvas_images, note)
