"""The studio's service layer: the one door from the UI to the models, with plain types.

``StudioService.run(task, params, callback, stop_event)`` runs a task's adapter ``(registry, params, control)
-> TaskResult`` (declared by its method package, see :func:`pipelines.declared`) on the SHARED registry under
ONE GPU lock, and turns every known failure into :class:`~pipelines.types.UserError` with a sentence for a
designer. The other methods answer what the tabs need to know about the preset (defaults, SAM, variants) and
swap trained weights in ("Use in studio").
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from pipelines import declared
from pipelines.core.devices import is_out_of_memory, release_after_oom, spaces_gpu
from pipelines.core.presets import available_presets, load_preset
from pipelines.core.registry import SAMPLERS, ModelRegistry, hub_reachable
from pipelines.core.sampling import RunControl
from pipelines.preprocess.sketch import photo_to_sketch
from pipelines.types import (
    CATVTON_VARIANTS,
    CheckpointError,
    GenerationCancelled,
    ModelUnavailableError,
    StepInfo,
    TaskResult,
    UserError,
    request_defaults,
)

logger = logging.getLogger(__name__)

# task name -> "module:function(registry, params: dict, control: RunControl) -> TaskResult"
TASKS: dict[str, str] = declared("TASKS")


class StudioService:
    """Owns the model registry and serialises GPU work (one queue for every tab)."""

    def __init__(
        self,
        preset: str = "tiny",
        device: str | None = None,
        dtype: str | None = None,
        models_dir: str | Path | None = None,
        memory_mode: str = "auto",
        memory_cap_gb: float | None = None,
        vae_tiling: bool = False,
    ) -> None:
        self._settings = dict(device=device, dtype=dtype, models_dir=models_dir)
        self._memory = dict(mode=memory_mode, cap=memory_cap_gb, tiling=vae_tiling, sampler="ddim")
        self.registry = ModelRegistry(preset, **self._settings)
        self._apply_memory(self.registry)
        self.gpu_lock = threading.Lock()
        self.last_seed: dict[str, int] = {}

    def _apply_memory(self, registry: ModelRegistry) -> str:
        registry.set_sampler(self._memory["sampler"])
        registry.set_vae_tiling(self._memory["tiling"])
        cap = registry.set_memory_cap(self._memory["cap"]) if self._memory["cap"] is not None else ""
        mode = registry.set_memory_mode(self._memory["mode"])
        return (f"Memory: {mode.replace('_', ' ')} ({registry.memory_why})" + (f"; {cap}" if cap else "")
                + ("; VAE tiling on" if self._memory["tiling"] else "") + f"; sampler {SAMPLERS[registry.sampler]}")

    def configure_memory(self, mode: str | None = None, cap_gb: float | None | str = "keep",
                         vae_tiling: bool | None = None, sampler: str | None = None) -> str:
        """Settings: the memory mode (auto | resident | model_offload), a per-process CUDA cap in GiB (None = no
        cap), VAE tiling and the SD1.5-family sampler (ddim | dpmpp), for this and every later preset. Returns a
        sentence saying what is in force."""
        memory = dict(self._memory)
        if sampler is not None:
            memory["sampler"] = sampler
        if mode is not None:
            memory["mode"] = mode
        if cap_gb != "keep":
            memory["cap"] = cap_gb
        if vae_tiling is not None:
            memory["tiling"] = bool(vae_tiling)
        with self.gpu_lock:
            previous, self._memory = self._memory, memory
            try:
                return self._apply_memory(self.registry)
            except ValueError as error:
                self._memory = previous
                raise UserError(str(error)) from error

    # --------------------------------------------------------------------------------------- presets
    @property
    def preset_name(self) -> str:
        return self.registry.preset.name

    @staticmethod
    def presets() -> list[str]:
        return available_presets()

    def switch_preset(self, name: str) -> str:
        """Swap to another model set (frees the current one)."""
        with self.gpu_lock:
            new = ModelRegistry(name, **self._settings)
            self.registry.unload()
            self._apply_memory(new)
            self.registry = new
        return f"Switched to preset '{name}'. Models load on first use."

    def banner(self) -> str:
        """The current preset's notice for the top of the page (empty for none)."""
        return self.registry.preset.banner

    def preset_problems(self, name: str | None = None) -> str | None:
        """None when the preset's models are local, cached or downloadable; else a sentence with the fix."""
        return self.preset_problems_of(name or self.preset_name)

    @staticmethod
    def preset_problems_of(name: str) -> str | None:
        """:meth:`preset_problems` for any preset by name or path (no service needed: app start-up asks it)."""
        preset = load_preset(name)
        if preset.tiny:
            return None
        locations = [preset.base_model, preset.vae, preset.image_encoder, preset.inpaint_model]
        # shipped weights (absolute paths, e.g. "{here}/...") must be on disk: no download can bring them
        files = [c.location for c in preset.checkpoints.values() if Path(c.location).is_absolute()]
        lost = [loc for loc in locations + files if loc and Path(loc).is_absolute() and not Path(loc).exists()]
        if lost:
            return (f"The '{preset.name}' preset's files are missing ({', '.join(lost)}). Fix: restore them (git "
                    f"checkout), or rebuild the mini preset with `python -m training.minibench`.")
        missing = [loc for loc in locations if loc and not _local_or_cached(loc)]
        if missing and not hub_reachable():
            return (
                f"The '{preset.name}' models are not on this machine and the Hugging Face Hub cannot be reached "
                f"(missing: {', '.join(missing)}). Fix: connect once so they download into the cache, or edit "
                f"presets/models/{preset.name}.yaml to point at local folders. The 'tiny' preset works offline."
            )
        return None

    def status(self) -> dict[str, Any]:
        status = self.registry.status()
        return {
            "preset": status.preset,
            "device": status.device,
            "dtype": status.dtype,
            "gpu": status.gpu,
            "total_mib": status.total_bytes / 2**20,
            "memory_mode": status.memory_mode, "memory_why": status.memory_why,
            "memory_cap_gib": status.memory_cap_gib, "vae_tiling": status.vae_tiling, "sampler": status.sampler,
            "loaded": [
                {"name": m.name, "source": m.source, "parameters_m": m.parameters / 1e6, "mib": m.bytes / 2**20,
                 "load_s": m.seconds}
                for m in status.loaded
            ],
        }

    # ------------------------------------------------------------------------------------------- run
    def run(
        self,
        task: str,
        params: dict[str, Any],
        callback: Callable[[StepInfo], None] | None = None,
        stop_event: threading.Event | None = None,
        preview_every: int = 5,
    ) -> TaskResult:
        """Run one task; raises :class:`UserError` with a designer-readable message on known errors."""
        if task not in TASKS:
            raise UserError(f"Unknown task {task!r}.")
        module_name, func_name = TASKS[task].split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        control = RunControl(callback=callback, stop_event=stop_event, preview_every=preview_every)
        oom = False
        with self.gpu_lock:
            try:
                control.check()
                self.registry.sampler_used = None
                result = _gpu_call(func, self.registry, params, control)
                if self.registry.sampler_used:  # the PNG parameters say which sampler really ran
                    for image_params in result.params:
                        if image_params.get("scheduler") in (None, "DDIM"):
                            image_params["scheduler"] = SAMPLERS[self.registry.sampler_used]
                return result
            except GenerationCancelled:
                raise
            except ModelUnavailableError as error:
                raise UserError(f"Model not available: {error}") from error
            except CheckpointError as error:
                raise UserError(f"Checkpoint problem: {error}") from error
            except (ValueError, TypeError) as error:
                raise UserError(str(error)) from error
            except RuntimeError as error:
                if not is_out_of_memory(error):
                    raise
                release_after_oom(error)
                oom = True
            finally:
                self.registry.release()  # model offload: the task's models back to the CPU
        # outside the except block: nothing refers to the failed call's frames (and their tensors) any more
        if oom:
            raise UserError(
                "Out of GPU memory. Lower the resolution or the number of images, or free models in "
                "Settings (switch preset). The memory of this job was released; the next one can run."
            )

    def sketch_from_photo(self, image: Image.Image, detector: str = "lineart") -> Image.Image:
        """Turn a photo into black-on-white line art with a controlnet-aux detector."""
        try:
            return photo_to_sketch(image, detector)
        except (ValueError, TypeError, ModelUnavailableError) as error:
            raise UserError(str(error)) from error

    # ------------------------------------------------------------------------------ what the tabs ask
    def defaults(self, task: str) -> dict[str, Any]:
        """``task``'s request defaults with the preset's (validated) overrides, by request field name."""
        return {**request_defaults(task), **self.registry.preset.defaults.get(task, {})}

    def has_sam(self) -> bool:
        """Whether the preset's SAM checkpoint is on this machine (click-to-refine masks)."""
        sam = self.registry.preset.sam
        return bool(sam) and Path(sam).expanduser().is_file()

    def tryon_variants(self) -> list[str]:
        """The CatVTON weight sets (preset checkpoint names) this preset has, best first."""
        return [name for name in CATVTON_VARIANTS if name in self.registry.preset.checkpoints]

    def tiny_root(self) -> Path | None:
        """The tiny model folder when the tiny preset is active (built on first use), else None."""
        return self.registry.tiny_root if self.registry.preset.tiny else None

    def ensure_tiny_models(self) -> Path | None:
        """Build the tiny model set when the preset is the tiny one (idempotent); its folder, else None."""
        return self.registry.ensure_tiny_models()

    def use_weights(self, checkpoint: str, path: str | Path | None) -> None:
        """Make the studio use ``path`` as preset checkpoint ``checkpoint`` from the next generation on
        (``None``: the preset's own weights again)."""
        with self.gpu_lock:
            try:
                self.registry.use_checkpoint(checkpoint, path)
            except (ValueError, KeyError) as error:
                raise UserError(str(error)) from error

    def weights_in_use(self, checkpoint: str) -> str | None:
        """Where preset checkpoint ``checkpoint`` comes from now (hub id or local file), None if absent."""
        entry = self.registry.preset.checkpoints.get(checkpoint)
        return None if entry is None else entry.location


@spaces_gpu(duration=120)
def _gpu_call(func, registry, params, control):
    return func(registry, params, control)


def _local_or_cached(location: str) -> bool:
    if Path(location).expanduser().exists():
        return True
    try:
        from huggingface_hub import scan_cache_dir

        return any(repo.repo_id == location for repo in scan_cache_dir().repos)
    except Exception:
        return False
