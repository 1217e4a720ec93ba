"""Community LoRAs (kohya / A1111 or diffusers ``.safetensors``) on the SHARED base UNet and text encoder.

diffusers' own LoRA machinery (peft) does the work: a ``StableDiffusionPipeline`` is wrapped around the
shared components only to reach ``load_lora_weights`` (which converts the kohya naming) and
``set_adapters`` (per-LoRA weights). peft wraps the ``Linear`` layers (``to_q``, ``to_k``, ...); it does not
touch attention processors, so the dressing attention (which replaces processors and calls
``attn.to_q`` etc.) sees the LoRA-modified projections.

The base UNet is shared by every tab, so LoRAs are applied only for the duration of one call by
:meth:`LoraPlugins.applied` and always removed afterwards (``unload_lora_weights`` puts the original
``Linear`` modules back; nothing is fused, so the base weights are never changed). The file contents are
cached in memory, so a re-used LoRA costs only the layer injection.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Iterator, Sequence

import torch

from pipelines.core.checkpoints import read_state_dict
from pipelines.types import CheckpointError
from pipelines.types import LoraSpec

logger = logging.getLogger(__name__)

MAX_LORAS = 4
WEIGHT_RANGE = (-2.0, 2.0)


def check_lora_specs(specs: Sequence[LoraSpec]) -> None:
    """Raise ``ValueError`` naming the LoRA when a file is missing or a weight is out of range."""
    if len(specs) > MAX_LORAS:
        raise ValueError(f"{len(specs)} LoRAs were given; at most {MAX_LORAS} can be combined")
    for spec in specs:
        if not isinstance(spec, LoraSpec):
            raise ValueError(f"LoRA entries must be LoraSpec(path, weight), got {type(spec).__name__}")
        if not Path(spec.path).expanduser().is_file():
            raise ValueError(f"LoRA file not found: {spec.path}")
        low, high = WEIGHT_RANGE
        if not low <= float(spec.weight) <= high:
            raise ValueError(f"LoRA {Path(spec.path).name}: weight={spec.weight!r} must be between {low} and {high}")


class LoraPlugins:
    """Applies community LoRAs to the shared ``unet`` (and ``text_encoder``) for one call at a time."""

    def __init__(self, unet, text_encoder=None, tokenizer=None, vae=None) -> None:
        self.unet, self.text_encoder, self.tokenizer, self.vae = unet, text_encoder, tokenizer, vae
        self._pipeline = None
        self._cache: dict[tuple, dict[str, torch.Tensor]] = {}
        # One call at a time may change the shared modules' layers.
        self._lock = threading.Lock()

    def _holder(self):
        if self._pipeline is None:
            from diffusers import DDIMScheduler, StableDiffusionPipeline

            self._pipeline = StableDiffusionPipeline(
                vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
                scheduler=DDIMScheduler(steps_offset=1, clip_sample=False), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
        return self._pipeline

    def _read(self, path: str) -> dict[str, torch.Tensor]:
        file = Path(path).expanduser()
        stat = file.stat()
        key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size)
        if key not in self._cache:
            state = read_state_dict(file)
            if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise CheckpointError(f"{file.name}: not a LoRA file (expected a flat dict of tensors)")
            self._cache = {key: state}  # keep only the latest few files' tensors in memory
        return self._cache[key]

    @contextlib.contextmanager
    def applied(self, specs: Sequence[LoraSpec]) -> Iterator[list[str]]:
        """Load ``specs`` into the shared modules with their weights for the block; always unloaded after.

        Yields the adapter names. Raises ``ValueError`` naming a file that is unreadable, has no layer that
        fits this base model, or whose shapes do not fit (e.g. an SDXL LoRA on SD1.5).
        """
        specs = list(specs or [])
        if not specs:
            yield []
            return
        check_lora_specs(specs)
        with self._lock:
            pipe = self._holder()
            names: list[str] = []
            try:
                for index, spec in enumerate(specs):
                    name = f"atelier_lora_{index}"
                    state = dict(self._read(spec.path))  # diffusers pops keys: give it a copy
                    try:
                        pipe.load_lora_weights(state, adapter_name=name)
                    except (ValueError, RuntimeError, KeyError) as error:
                        raise ValueError(
                            f"LoRA {Path(spec.path).name} does not fit this base model ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:300]})"
                        ) from error
                    adapters = pipe.get_list_adapters()
                    if not any(name in found for found in adapters.values()):
                        raise ValueError(f"LoRA {Path(spec.path).name}: none of its layers match this base model")
                    names.append(name)
                pipe.set_adapters(names, adapter_weights=[float(spec.weight) for spec in specs])
                logger.info("applied LoRAs %s", ", ".join(f"{Path(s.path).name}:{s.weight:g}" for s in specs))
                yield names
            finally:
                # Also after a half-loaded file: puts the original Linear modules back in every case.
                pipe.unload_lora_weights()


def write_tiny_kohya_lora(path: str | Path, unet, text_encoder=None, rank: int = 4, seed: int = 0, strength: float = 0.5) -> Path:
    """A LoRA in the kohya / A1111 layout (``lora_unet_*`` / ``lora_te_*`` with ``lora_down``, ``lora_up``,
    ``alpha``) for the attention projections of ``unet`` (and ``text_encoder``), with random non-zero
    factors: what community files look like, at the size of the given (tiny) models."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def add(prefix: str, module_path: str, linear) -> None:
        key = f"{prefix}_{module_path.replace('.', '_')}"
        state[f"{key}.lora_down.weight"] = torch.randn(rank, linear.in_features, generator=generator) * strength
        state[f"{key}.lora_up.weight"] = torch.randn(linear.out_features, rank, generator=generator) * strength
        state[f"{key}.alpha"] = torch.tensor(float(rank))

    for name, module in unet.named_modules():
        if name.endswith(("attn1", "attn2")):
            for projection in ("to_q", "to_k", "to_v"):
                add("lora_unet", f"{name}.{projection}", getattr(module, projection))
            add("lora_unet", f"{name}.to_out.0", module.to_out[0])
    if text_encoder is not None:
        for name, module in text_encoder.named_modules():
            if name.endswith("self_attn"):
                for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    add("lora_te", f"{name}.{projection}", getattr(module, projection))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path
