"""Device and dtype choice, memory reporting, and the Hugging Face Spaces GPU decorator."""

from __future__ import annotations

import functools
import gc
import logging
import traceback
from typing import Callable, TypeVar

import torch

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable)


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` ("cuda", "cuda:1", "cpu", "mps" or None = best available)."""
    if requested and requested != "auto":
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={requested!r} but CUDA is not available on this machine; use --device cpu")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device={requested!r} but MPS is not available on this machine; use --device cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, requested: str | None = None) -> torch.dtype:
    """fp16/bf16 on accelerators (bf16 where supported), fp32 on CPU."""
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if requested and requested != "auto":
        if requested not in names:
            raise ValueError(f"dtype={requested!r} is not one of {sorted(names)}")
        return names[requested]
    if device.type == "cuda":
        # bf16 where the card has it (Ampere and later), as the CatVTON, TryOffAnyone and TEMU-VTOFF code runs;
        # fp16 on older cards.
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def module_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(
        b.numel() * b.element_size() for b in module.buffers()
    )


def gpu_memory() -> dict | None:
    """Current/peak allocated and total memory of the current CUDA device in MiB (None without CUDA)."""
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    return {
        "device": torch.cuda.get_device_name(index),
        "allocated_mib": torch.cuda.memory_allocated(index) / 2**20,
        "peak_mib": torch.cuda.max_memory_allocated(index) / 2**20,
        "total_mib": torch.cuda.get_device_properties(index).total_memory / 2**20,
    }


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def release_after_oom(error: BaseException) -> None:
    """Free what an out-of-memory failure left behind: the frames of its traceback hold the loop's tensors
    (latents, activations); clear them, collect, and hand the cached blocks back to the driver."""
    traceback.clear_frames(error.__traceback__)
    error.__traceback__ = None
    gc.collect()
    empty_cache()


def spaces_gpu(duration: int = 120) -> Callable[[F], F]:
    """``@spaces.GPU(duration=...)`` on Hugging Face ZeroGPU Spaces; a no-op everywhere else."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        spaces = None

    def decorate(func: F) -> F:
        if spaces is None:
            return func
        wrapped = spaces.GPU(duration=duration)(func)
        return functools.wraps(func)(wrapped)  # type: ignore[return-value]

    return decorate
