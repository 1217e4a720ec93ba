"""The concat-inpainting core shared by the garment LEM, CatVTON try-on and TryOffAnyone try-off.

All three run the SD1.5-inpainting 9-channel UNet on a canvas made of two images stacked along the
HEIGHT axis: a masked TOP half that is generated, and a BOTTOM condition half that is given.

    X   = concat([top * (mask < 0.5), bottom], dim=H)          # (B, 4, 2h, w)
    M   = concat([mask, zeros], dim=H)                          # (B, 1, 2h, w)
    in  = concat([x_t, M, X], dim=C)                            # (B, 9, 2h, w)

Cross-attention is replaced by the "return input" processor (no text), and the unconditional CFG
branch zeroes the bottom (condition) half. The methods differ only in their trained attention weights,
so ONE resident inpainting UNet serves them all: :class:`WeightSetSwitcher` copies a method's weight set
into the UNet's parameters in place (no second UNet) and can restore the base weights.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from pipelines.core.attention import (
    PlainAttnProcessor,
    SkipAttnProcessor,
    attn1_modules,
    processor_names,
    swapped_processors,
)
from pipelines.core.checkpoints import LoadReport, key_problems
from pipelines.core.sampling import RunControl, check_steps, randn, step_kwargs
from pipelines.preprocess.images import check_image, load_mask
from pipelines.types import FIT_MODES, MAX_IMAGES, TRYON_CATEGORIES, CheckpointError

logger = logging.getLogger(__name__)


@dataclass
class WeightSet:
    """Trained tensors keyed by the UNet's own ``state_dict`` names, with the report of how they loaded."""

    name: str
    tensors: dict[str, torch.Tensor]
    report: LoadReport
    cross_attention: str = "skip"  # "skip": attn2 returns its input (all three methods)

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    @property
    def num_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


class WeightSetSwitcher:
    """Swaps weight sets into one shared UNet in place; remembers the base values of every touched tensor."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet
        self.sets: dict[str, WeightSet] = {}
        self.active: str | None = None
        self._base: dict[str, torch.Tensor] = {}
        self._lock = threading.RLock()

    @property
    def num_parameters(self) -> int:
        return sum(ws.num_parameters for ws in self.sets.values())

    @property
    def num_bytes(self) -> int:
        return sum(ws.num_bytes for ws in self.sets.values())

    def register(self, weight_set: WeightSet) -> None:
        params = dict(self.unet.named_parameters())
        for key, tensor in weight_set.tensors.items():
            if key not in params:
                raise CheckpointError(f"{weight_set.name}: {key} is not a parameter of the inpainting UNet")
            if tuple(params[key].shape) != tuple(tensor.shape):
                raise CheckpointError(
                    f"{weight_set.name}: {key} has shape {tuple(tensor.shape)}, the UNet needs {tuple(params[key].shape)}"
                )
        with self._lock:
            if self.active == weight_set.name:
                self.activate(None)
            self.sets[weight_set.name] = weight_set

    @torch.no_grad()
    def activate(self, name: str | None) -> None:
        """Make ``name`` the live weight set (None = the base inpainting weights)."""
        with self._lock:
            if name == self.active:
                return
            if name is not None and name not in self.sets:
                raise KeyError(f"weight set {name!r} is not registered; have {sorted(self.sets)}")
            params = dict(self.unet.named_parameters())
            if self.active is not None:  # restore base values for what the current set touched
                for key in self.sets[self.active].tensors:
                    params[key].copy_(self._base[key])
            if name is not None:
                for key, tensor in self.sets[name].tensors.items():
                    if key not in self._base:
                        self._base[key] = params[key].detach().to("cpu", copy=True)
                    params[key].copy_(tensor.to(params[key].device, params[key].dtype))
            self.active = name
            logger.info("inpainting UNet weight set: %s", name or "base")


def skip_cross_attention(unet) -> dict[str, object]:
    """Processor map: plain SDPA self-attention, "return input" cross-attention."""
    mapping: dict[str, object] = {}
    for name in processor_names(unet):
        mapping[name] = SkipAttnProcessor() if ".attn2." in name else PlainAttnProcessor()
    return mapping


@dataclass
class ConcatInpaintInputs:
    top: torch.Tensor  # (B, 4, h, w) latent of the image to regenerate (masked inside this call)
    mask: torch.Tensor  # (B, 1, h, w) binary latent-size mask of the region to generate (1 = generate)
    bottom: torch.Tensor  # (B, 4, h, w) condition latent (garment / logo / worn person)
    bottom_mask: torch.Tensor | None = None  # (B, 1, h, w) mask channel under the bottom half (zeros)
    # True when ``top`` is already the latent of the pixel-masked image (CatVTON, TryOffAnyone encode
    # ``image * (mask < 0.5)``); False zeroes the latent under the mask (the LEM's conditioning).
    premasked: bool = False


@dataclass
class ConcatInpaintConfig:
    num_inference_steps: int = 50
    guidance_scale: float = 2.5
    eta: float = 0.0  # DDIM eta (CatVTON/TryOffAnyone use 1.0, the LEM 0.0)
    stage: str = "inpaint"
    extra: dict = field(default_factory=dict)


@torch.no_grad()
def concat_inpaint_denoise(
    unet,
    scheduler,
    inputs: ConcatInpaintInputs,
    config: ConcatInpaintConfig,
    gens: list[torch.Generator],
    control: RunControl | None = None,
) -> torch.Tensor:
    """Run the concat-inpainting sampler and return the generated TOP-half latents (B, 4, h, w).

    CFG batches the two branches in one UNet call: rows [0:B] unconditional (bottom zeroed), [B:2B]
    conditional.
    """
    top, mask, bottom = inputs.top, inputs.mask, inputs.bottom
    if top.shape != bottom.shape:
        raise ValueError(f"top latent {tuple(top.shape)} and bottom latent {tuple(bottom.shape)} differ")
    if mask.shape[0] != top.shape[0] or mask.shape[-2:] != top.shape[-2:] or mask.shape[1] != 1:
        raise ValueError(f"mask {tuple(mask.shape)} does not fit latent {tuple(top.shape)}")
    batch, channels, height, width = top.shape
    device, dtype = unet.device, unet.dtype
    top, mask, bottom = top.to(device, dtype), mask.to(device, dtype), bottom.to(device, dtype)
    bottom_mask = inputs.bottom_mask.to(device, dtype) if inputs.bottom_mask is not None else torch.zeros_like(mask)

    masked_top = top if inputs.premasked else top * (mask < 0.5)
    condition = torch.cat([masked_top, bottom], dim=2)  # (B, 4, 2h, w)
    condition_mask = torch.cat([mask, bottom_mask], dim=2)  # (B, 1, 2h, w)
    use_cfg = config.guidance_scale > 1.0
    if use_cfg:
        uncond = torch.cat([masked_top, torch.zeros_like(bottom)], dim=2)
        condition = torch.cat([uncond, condition])
        condition_mask = torch.cat([condition_mask, condition_mask])

    scheduler.set_timesteps(config.num_inference_steps, device=device)
    latents = randn((batch, channels, 2 * height, width), gens, device, dtype) * scheduler.init_noise_sigma
    kwargs = step_kwargs(scheduler, config.eta)
    # The UNet reads no text: attn2 returns its input. A tiny dummy context satisfies the signature.
    context = torch.zeros((condition.shape[0], 1, unet.config.cross_attention_dim), device=device, dtype=dtype)
    timesteps = scheduler.timesteps
    with swapped_processors(unet, skip_cross_attention(unet)):
        for index, timestep in enumerate(timesteps):
            model_latents = torch.cat([latents, latents]) if use_cfg else latents
            model_latents = scheduler.scale_model_input(model_latents, timestep)
            model_input = torch.cat([model_latents, condition_mask, condition], dim=1)  # (2B, 9, 2h, w)
            noise = unet(model_input, timestep, encoder_hidden_states=context).sample
            if use_cfg:
                noise_uncond, noise_cond = noise.chunk(2)
                noise = noise_uncond + config.guidance_scale * (noise_cond - noise_uncond)
            if config.eta > 0 and kwargs:  # per-image noise keeps image i reproducible on its own seed
                kwargs["variance_noise"] = randn(latents.shape, gens, device, dtype)
            latents = scheduler.step(noise, timestep, latents, **kwargs).prev_sample
            if control is not None:
                control.step(config.stage, index + 1, len(timesteps), latents[:, :, :height])
    return latents[:, :, :height]


ATTN1_PROJECTIONS = ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias")


def attn1_set_from_named(state: dict[str, torch.Tensor], unet, name: str, source: str) -> WeightSet:
    """An attn1 weight set from full UNet-named keys (``down_blocks.0...attn1.to_q.weight``)."""

    wanted = [f"{module}.{proj}" for module, _ in attn1_modules(unet) for proj in ATTN1_PROJECTIONS]
    missing = [key for key in wanted if key not in state]
    if missing:
        raise CheckpointError(f"{source}: missing attn1 tensors: {', '.join(missing[:5])} ({len(missing)} in all)")
    return weight_set_of(name, {key: state[key] for key in wanted}, unet, source)


def attn1_set_from_indexed(state: dict[str, torch.Tensor], unet, name: str, source: str) -> WeightSet:
    """An attn1 weight set from the ModuleList numbering CatVTON and the LEM's ``attn_block.*`` use.

    Their loaders gathered every module whose ``named_modules`` name contains "attn1": each attn1
    contributes 8 entries (attn1, to_q, to_k, to_v, to_out, to_out.0, to_out.1, processor), so the k-th
    attn1 layer's weights sit at index 8k: ``{8k}.to_q.weight`` ... ``{8k}.to_out.0.bias``.
    """

    modules = attn1_modules(unet)
    expected: dict[str, str] = {}
    for k, (module_name, _) in enumerate(modules):
        for proj in ATTN1_PROJECTIONS:
            expected[f"{8 * k}.{proj}"] = f"{module_name}.{proj}"
    parts = key_problems(expected, state, order=lambda s: (int(s.split(".")[0]), s))
    if parts:
        raise CheckpointError(
            f"{source}: not an attn1 weight set for this UNet ({len(modules)} attn1 layers): " + "; ".join(parts)
        )
    return weight_set_of(name, {expected[key]: value for key, value in state.items()}, unet, source)


def weight_set_of(name: str, tensors: dict[str, torch.Tensor], unet, source: str) -> WeightSet:
    """``tensors`` (UNet parameter name -> tensor) as a :class:`WeightSet` on the UNet's device and dtype; a name
    the UNet lacks or a shape that differs raises CheckpointError naming ``source`` and the tensors."""
    params = dict(unet.named_parameters())
    bad = [
        f"{key} (file {tuple(t.shape)}, model {tuple(params[key].shape)})"
        for key, t in tensors.items()
        if key not in params or tuple(params[key].shape) != tuple(t.shape)
    ]
    if bad:
        raise CheckpointError(f"{source}: mis-shaped: {', '.join(bad[:5])}" + (f" ({len(bad)} in all)" if len(bad) > 5 else ""))
    report = LoadReport(source, loaded=sorted(tensors), num_parameters=sum(t.numel() for t in tensors.values()))
    tensors = {key: t.to(device=params[key].device, dtype=params[key].dtype) for key, t in tensors.items()}
    return WeightSet(name, tensors, report)


def inpaint_switcher(registry) -> WeightSetSwitcher:
    """The ONE weight-set switcher around the registry's ONE inpainting UNet (LEM, try-on, try-off)."""
    return registry.shared("inpaint_weight_sets", lambda: WeightSetSwitcher(registry.get("inpaint_unet")), "weight sets")


# Preset checkpoint names of the CatVTON weight sets and the official file inside zhengchong/CatVTON.
# The VAE's sampling noise uses its own generators (seed + offset + i), so it is not the same random stream
# as the initial latent noise of the same image.
ENCODE_SEED_OFFSET = 7919


def check_canvas_size(height: int, width: int, multiple: int) -> None:
    """Both sides multiples of ``multiple`` (64 for SD1.5), at most 2048, in the 3:4 (W:H) ratio."""
    for label, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value % multiple or not multiple <= value <= 2048:
            raise ValueError(f"{label}={value!r} must be a multiple of {multiple} between {multiple} and 2048")
    if width * 4 != height * 3:
        raise ValueError(
            f"width x height = {width}x{height} is not 3:4; the try-on/try-off models were trained on 3:4 "
            "portraits (e.g. 768x1024 or 384x512)"
        )


def check_common(request, categories: tuple[str, ...] = TRYON_CATEGORIES) -> None:
    """Checks shared by try-on and try-off requests (person, category, sampler settings, mask size)."""
    if request.person is None:
        raise ValueError("person image is missing: upload a photo of a person")
    check_image(request.person, "person")
    if request.category not in categories:
        raise ValueError(f"category={request.category!r} must be one of {', '.join(categories)}")
    check_steps(request.num_inference_steps)
    if not 1 <= int(request.num_images) <= MAX_IMAGES:
        raise ValueError(f"num_images={request.num_images!r} must be between 1 and {MAX_IMAGES}")
    if not 0 <= request.guidance_scale <= 30:
        raise ValueError(f"guidance_scale={request.guidance_scale!r} must be between 0 and 30")
    if not 0 <= request.eta <= 1:
        raise ValueError(f"eta={request.eta!r} must be between 0 and 1")
    if request.fit_mode not in FIT_MODES:
        raise ValueError(f"fit_mode={request.fit_mode!r} must be one of {', '.join(FIT_MODES)}")
    if request.mask is not None:
        # Raises "mask is AxB px but the person image is CxD px" on a mismatch.
        load_mask(request.mask, size=request.person.size, name="mask", reference_name="person image")
    elif not request.auto_mask:
        raise ValueError("no mask: paint the area to change or turn on the automatic mask")


def encode_latents(vae, pixels: torch.Tensor, gens: list[torch.Generator] | None) -> torch.Tensor:
    """(1, 3, H, W) pixels in [-1, 1] -> (B, 4, H/8, W/8) scaled latents.

    With ``gens`` each row is ``latent_dist.sample(gens[i])`` (the official CatVTON encoding, reproducible
    per image); with None the distribution mean for all rows. The encoder runs once either way.
    """
    pixels = pixels.to(device=vae.device, dtype=vae.dtype)
    dist = vae.encode(pixels).latent_dist
    if gens is None:
        latents = dist.mean
    else:
        latents = torch.cat([dist.sample(generator) for generator in gens])
    return latents * vae.config.scaling_factor


def pixel_masked(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``image * (mask < 0.5)``: masked pixels become 0 (mid grey in [-1, 1])."""
    return pixels * (mask < 0.5)


@contextlib.contextmanager
def weight_set_active(switcher: WeightSetSwitcher, name: str) -> Iterator[Any]:
    """Hold the shared UNet with ``name`` live for one whole run (other tabs wait rather than swap mid-run)."""
    with switcher._lock:  # the switcher's own re-entrant lock: activate() takes it too
        switcher.activate(name)
        yield switcher.unet


def shared_weight_set(registry, name: str, loader: Callable[[Path, Any, str], WeightSet]) -> WeightSetSwitcher:
    """Register the weight set ``name`` (preset checkpoint ``name``) once per registry; return the switcher."""

    switcher = inpaint_switcher(registry)

    def build() -> WeightSet:
        weight_set = loader(registry.checkpoint(name), switcher.unet, name)
        switcher.register(weight_set)
        return weight_set

    registry.shared(f"weight_set:{name}", build, f"{name} weight set")
    return switcher


def concat_inputs(top: torch.Tensor, mask: torch.Tensor, bottom: torch.Tensor) -> ConcatInpaintInputs:
    # CatVTON/TryOffAnyone mask in PIXEL space before encoding (``image * (mask < 0.5)``): the core must not
    # zero the latent again, or the masked area would hold zeros instead of the VAE latent of grey.
    return ConcatInpaintInputs(top=top, mask=mask, bottom=bottom, premasked=True)
