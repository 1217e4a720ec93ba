"""Shared pieces of every pipeline: progress/stop plumbing, seeds, VAE and text encoding helpers."""

from __future__ import annotations

import inspect
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from pipelines.types import GenerationCancelled, ProgressCallback, StepInfo


@dataclass
class RunControl:
    """Passed into a pipeline call: a progress callback, a stop event, and how often to make previews."""

    callback: ProgressCallback | None = None
    stop_event: threading.Event | None = None
    preview_every: int = 5
    overall_total: int = 0
    _done: int = 0
    _start: float = field(default_factory=time.perf_counter)

    def check(self) -> None:
        if self.stop_event is not None and self.stop_event.is_set():
            raise GenerationCancelled("stopped by the user")

    def step(self, stage: str, step: int, total: int, latents: torch.Tensor | None = None) -> None:
        self._done += 1
        self.check()
        if self.callback is None:
            return
        elapsed = time.perf_counter() - self._start
        overall_total = max(self.overall_total, self._done)
        eta = elapsed / self._done * (overall_total - self._done)
        preview = None
        if latents is not None and self.preview_every and (step % self.preview_every == 0 or step == total):
            preview = latents_to_preview(latents[:1])
        self.callback(StepInfo(stage, step, total, self._done, overall_total, elapsed, eta, preview))


# Linear map from SD1.x latents to RGB (a cheap, decoder-free preview).
_LATENT_RGB = torch.tensor(
    [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]]
)


def latents_to_preview(latents: torch.Tensor) -> Image.Image:
    """(1, 4, h, w) latents -> a small RGB preview without running the VAE decoder."""
    rgb = torch.einsum("chw,cr->rhw", latents[0].float().cpu(), _LATENT_RGB)  # (3, h, w)
    rgb = ((rgb + 1) / 2).clamp(0, 1).mul(255).byte().permute(1, 2, 0).numpy()
    image = Image.fromarray(rgb)
    return image.resize((image.width * 4, image.height * 4), Image.NEAREST)


def resolve_seed(seed: int | None) -> int:
    """-1 or None = a fresh random seed (returned so it can be saved and reused)."""
    if seed is None or seed < 0:
        return random.randint(0, 2**31 - 1)
    if seed >= 2**63:
        raise ValueError(f"seed={seed} is too large")
    return int(seed)


def generators(seed: int, count: int, device: torch.device) -> list[torch.Generator]:
    """One generator per image (seed, seed+1, ...) so image i can be reproduced alone with seed+i."""
    gen_device = "cpu" if device.type == "mps" else device
    return [torch.Generator(device=gen_device).manual_seed(seed + i) for i in range(count)]


def randn(shape: Sequence[int], gens: list[torch.Generator], device, dtype) -> torch.Tensor:
    """Per-row noise from per-image generators: (B, ...) with row i from gens[i]."""
    rows = [torch.randn(tuple(shape[1:]), generator=g, device=g.device, dtype=torch.float32) for g in gens]
    return torch.stack(rows).to(device=device, dtype=dtype)


def image_to_tensor(image: Image.Image, width: int, height: int, resample=Image.BICUBIC) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) in [-1, 1] at the given size."""
    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), resample)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def mask_to_tensor(mask: Image.Image, width: int, height: int) -> torch.Tensor:
    """PIL mask (white = 1) -> (1, 1, H, W) binary float, resized with nearest."""
    mask = mask.convert("L")
    if mask.size != (width, height):
        mask = mask.resize((width, height), Image.NEAREST)
    array = (np.asarray(mask, dtype=np.float32) > 127.5).astype(np.float32)
    return torch.from_numpy(array)[None, None]


def tensor_to_images(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> PIL images."""
    array = ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(row) for row in array]


def vae_encode(vae, pixels: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False) -> torch.Tensor:
    """Pixels (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/8, W/8); the mean unless ``sample``."""
    pixels = pixels.to(device=vae.device, dtype=vae.dtype)
    dist = vae.encode(pixels).latent_dist
    latents = dist.sample(generator) if sample else dist.mean
    return latents * vae.config.scaling_factor


def vae_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> pixels in [-1, 1]."""
    latents = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
    return vae.decode(latents).sample


def encode_prompts(tokenizer, text_encoder, prompts: list[str], device=None) -> torch.Tensor:
    """Prompts -> (B, 77, D) last hidden states of the CLIP text encoder.

    ``device``: where the token ids go (default: the encoder's; pass it for a DDP-wrapped encoder).
    """
    tokens = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return text_encoder(tokens.input_ids.to(device if device is not None else text_encoder.device))[0]


def step_kwargs(scheduler, eta: float) -> dict:
    """DDIM's ``eta`` for schedulers whose step takes one (DPM-Solver++ has none: it is deterministic)."""
    return {"eta": eta} if "eta" in inspect.signature(scheduler.step).parameters else {}


def check_steps(steps: int, low: int = 1, high: int = 500) -> None:
    if not isinstance(steps, int) or not low <= steps <= high:
        raise ValueError(f"num_inference_steps={steps!r} must be an integer between {low} and {high}")
