"""The studio's service layer: the only thing the UI talks to, with plain types.

``StudioService.run(task, params, callback, stop_event)`` builds the task's request dataclass from a
plain dict, runs the task's pipeline (built from the SHARED registry) under ONE GPU lock, and returns a
:class:`TaskResult` of PIL images and JSON-able parameters. Tasks register in :data:`TASKS` as
``"module:function"`` strings taking ``(registry, params, control)`` so that importing this module stays
cheap and tabs can be added with one line.
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from pipelines.types import CheckpointError, ModelUnavailableError
from pipelines.core.sampling import RunControl
from pipelines.types import GenerationCancelled, StepInfo
from pipelines.core.devices import empty_cache, is_out_of_memory, spaces_gpu
from pipelines.core.presets import available_presets, load_preset
from pipelines.core.registry import ModelRegistry, hub_reachable
from pipelines.types import TaskResult, UserError

logger = logging.getLogger(__name__)


# task name -> "module:function(registry, params: dict, control: RunControl) -> TaskResult"
TASKS: dict[str, str] = {
    "garment": "pipelines.service:run_garment",
    "dressing": "pipelines.dressing.pipeline:run_task",
    "dressing_pose": "pipelines.dressing.pipeline:run_pose_task",
    "tryon": "pipelines.tryon.pipeline:run_task",
    "tryon_mask": "pipelines.tryon.pipeline:run_mask_task",
    "tryon_sam": "pipelines.tryon.pipeline:run_sam_task",
    "tryoff": "pipelines.tryoff.pipeline:run_task",
}


def run_garment(registry: ModelRegistry, params: dict[str, Any], control: RunControl) -> TaskResult:
    from pipelines.garment.pipeline import GarmentDesignPipeline
    from pipelines.types import GarmentRequest

    request = GarmentRequest(**params)
    pipeline = GarmentDesignPipeline.from_registry(
        registry,
        need_sketch=request.sketch is not None,
        need_color=request.color is not None,
        need_logo=request.logo is not None,
    )
    result = pipeline(request, control)
    per_image = [dict(result.params, seed=seed, num_images=1) for seed in result.seeds]
    return TaskResult(result.images, per_image, {"stages": result.stages})


class StudioService:
    """Owns the model registry and serialises GPU work (one queue for every tab)."""

    def __init__(
        self,
        preset: str = "tiny",
        device: str | None = None,
        dtype: str | None = None,
        models_dir: str | Path | None = None,
    ) -> None:
        self._settings = dict(device=device, dtype=dtype, models_dir=models_dir)
        self.registry = ModelRegistry(preset, **self._settings)
        self.gpu_lock = threading.Lock()
        self.last_seed: dict[str, int] = {}

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
            self.registry = new
        return f"Switched to preset '{name}'. Models load on first use."

    def preset_problems(self, name: str | None = None) -> str | None:
        """None when the preset's models are local, cached or downloadable; else a sentence with the fix."""
        preset = load_preset(name or self.preset_name)
        if preset.tiny:
            return None
        locations = [preset.base_model, preset.vae, preset.image_encoder, preset.inpaint_model]
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
        with self.gpu_lock:
            try:
                control.check()
                return _gpu_call(func, self.registry, params, control)
            except GenerationCancelled:
                raise
            except ModelUnavailableError as error:
                raise UserError(f"Model not available: {error}") from error
            except CheckpointError as error:
                raise UserError(f"Checkpoint problem: {error}") from error
            except (ValueError, TypeError) as error:
                raise UserError(str(error)) from error
            except RuntimeError as error:
                if is_out_of_memory(error):
                    empty_cache()
                    raise UserError(
                        "Out of GPU memory. Lower the resolution or the number of images, or free models in "
                        "Settings (switch preset)."
                    ) from error
                raise

    def sketch_from_photo(self, image: Image.Image, detector: str = "lineart") -> Image.Image:
        """Turn a photo into black-on-white line art with a controlnet-aux detector (no weights needed)."""
        from pipelines.preprocess.sketch import photo_to_sketch

        return photo_to_sketch(image, detector)


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
