"""The model registry: one place that loads models lazily, shares them between tabs, and reports them.

Every pipeline asks the registry for its parts instead of loading its own copies, so the studio holds
ONE VAE, ONE text encoder, ONE base UNet and ONE 9-channel inpainting UNet (whose attention weight sets
are swapped between garment LEM, try-on and try-off; see ``pipelines/core/concat_inpaint.py``).

Nothing is loaded at import or construction time: the page comes up in seconds, and the first
generation pays the load. A location that cannot be reached offline fails fast with a
:class:`~pipelines.core.checkpoints.ModelUnavailableError` that says how to fix it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from pipelines.core.checkpoints import offline_hint, resolve_file
from pipelines.core.devices import gpu_memory, module_bytes, pick_device, pick_dtype
from pipelines.core.presets import CheckpointLocation, ModelPreset, default_models_dir, load_preset
from pipelines.core.tiny import build_tiny_model_set
from pipelines.types import MEMORY_MODES, ModelUnavailableError

logger = logging.getLogger(__name__)

_HUB_REACHABLE: bool | None = None
SAMPLERS = {"ddim": "DDIM", "dpmpp": "DPM-Solver++ 2M"}
AUTO_RESIDENT_BYTES = 16 * 2**30  # auto memory mode: every SD1.5-family tab resident from 16 GiB free


def _free_device_bytes(device: torch.device) -> int | None:
    """Free memory of a CUDA device (None for the CPU and devices that share the machine's memory)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers on 443 (checked once per process; HF_HUB_OFFLINE=1 forces False)."""
    global _HUB_REACHABLE
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    if _HUB_REACHABLE is None:
        try:
            with socket.create_connection(("huggingface.co", 443), timeout=timeout):
                _HUB_REACHABLE = True
        except OSError:
            _HUB_REACHABLE = False
    return _HUB_REACHABLE


def fetch_file(location: str, filename: str | None = None) -> Path:
    """A local path for ``location`` (a file, a folder holding ``filename``, or a hub repo id): downloaded when
    the Hub answers; when it does not, only the local cache is looked at (never waits on an unreachable Hub)."""
    if not Path(location).expanduser().exists() and not hub_reachable():
        try:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(location, filename, local_files_only=True))
        except Exception as error:
            where = f"{location}/{filename}: " if filename else ""
            raise ModelUnavailableError(where + offline_hint(location)) from error
    return resolve_file(location, filename)


def from_pretrained(cls: Any, location: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` that never hangs offline: local folders and cached hub files load directly;
    an uncached hub id is only downloaded when the Hub is reachable, else ModelUnavailableError."""
    if Path(location).expanduser().exists():
        return cls.from_pretrained(str(Path(location).expanduser()), **kwargs)
    try:
        return cls.from_pretrained(location, local_files_only=True, **kwargs)
    except (OSError, ValueError, EnvironmentError) as cached_error:
        if not hub_reachable():
            raise ModelUnavailableError(offline_hint(location)) from cached_error
    logger.info("downloading %s (%s)", location, kwargs.get("subfolder") or "")
    try:
        return cls.from_pretrained(location, **kwargs)
    except Exception as error:
        raise ModelUnavailableError(f"cannot load {location}: {type(error).__name__}: {error}") from error


@dataclass
class LoadedModel:
    name: str
    kind: str
    source: str
    parameters: int
    bytes: int
    seconds: float


@dataclass
class RegistryStatus:
    preset: str
    device: str
    dtype: str
    loaded: list[LoadedModel] = field(default_factory=list)
    gpu: dict | None = None
    memory_mode: str = "resident"
    memory_why: str = ""
    memory_cap_gib: float | None = None
    vae_tiling: bool = False
    sampler: str = "DDIM"

    @property
    def total_bytes(self) -> int:
        return sum(m.bytes for m in self.loaded)


class ModelRegistry:
    """Lazily loaded, shared model components for one preset on one device.

    ``get(name)`` returns a component (tokenizer, text_encoder, vae, unet, inpaint_unet, image_encoder,
    image_processor, controlnet_openpose); ``shared(key, factory)`` caches anything a pipeline builds from
    them (the GAM reference UNet, weight sets, whole pipelines) so that every tab reuses it.
    """

    COMPONENTS = (
        "tokenizer", "text_encoder", "vae", "unet", "inpaint_unet", "image_encoder", "image_processor",
        "controlnet_openpose",
    )

    def __init__(
        self,
        preset: ModelPreset | str,
        device: str | None = None,
        dtype: str | None = None,
        models_dir: str | Path | None = None,
    ) -> None:
        if isinstance(preset, str):
            preset = load_preset(preset)
        self.models_dir = Path(models_dir) if models_dir else default_models_dir()
        self.tiny_root = self.models_dir / "tiny"
        self.preset = preset.resolved(self.tiny_root)
        self._preset_checkpoints = dict(self.preset.checkpoints)  # what use_checkpoint(name, None) goes back to
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self._objects: dict[str, Any] = {}
        self._info: dict[str, LoadedModel] = {}
        self._lock = threading.RLock()
        self._scheduler_config: dict | None = None
        self.memory_mode, self.memory_why = "resident", "default"
        self.memory_cap_gib: float | None = None
        self.vae_tiling = False
        self.sampler = "ddim"
        self.sampler_used: str | None = None  # what scheduler() last handed out (the service labels PNGs with it)
        self._on_device: set[str] = set()  # model_offload: what the running task has on the device
        self.offload_log: list[tuple[str, str]] = []  # (name, "in" | "out"), model_offload moves

    # ----------------------------------------------------------------------------------------- loading
    def ensure_tiny_models(self) -> Path | None:
        """Build the tiny model set when this is the tiny preset (idempotent); its folder, else None."""
        if not self.preset.tiny:
            return None
        return build_tiny_model_set(self.tiny_root)

    def _place(self, module: torch.nn.Module) -> torch.nn.Module:
        module.requires_grad_(False).eval()
        # dtype is set by from_pretrained (casting afterwards makes diffusers warn); only move the device.
        module = module.to(self.device)
        if getattr(module, "dtype", self.dtype) != self.dtype:
            module = module.to(dtype=self.dtype)
        if self.device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in module.modules()):
            module = module.to(memory_format=torch.channels_last)  # the convolutions' fast layout on GPUs
        return module

    def _load_component(self, name: str) -> Any:
        from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
        from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

        p = self.preset
        if name == "tokenizer":
            return from_pretrained(CLIPTokenizer, p.base_model, subfolder="tokenizer"), p.base_model
        if name == "text_encoder":
            return self._place(from_pretrained(CLIPTextModel, p.base_model, subfolder="text_encoder", dtype=self.dtype)), p.base_model
        if name == "vae":
            return self._place(from_pretrained(AutoencoderKL, p.vae, torch_dtype=self.dtype)), p.vae
        if name == "unet":
            return self._place(from_pretrained(UNet2DConditionModel, p.base_model, subfolder="unet", torch_dtype=self.dtype)), p.base_model
        if name == "inpaint_unet":
            unet = from_pretrained(UNet2DConditionModel, p.inpaint_model, subfolder="unet", torch_dtype=self.dtype)
            if unet.config.in_channels != 9:
                raise ValueError(
                    f"inpaint_model {p.inpaint_model!r} has a {unet.config.in_channels}-channel UNet; "
                    "an inpainting model (9 input channels) is required"
                )
            return self._place(unet), p.inpaint_model
        kwargs = {"subfolder": p.image_encoder_subfolder} if p.image_encoder_subfolder else {}
        if name == "image_encoder":
            return self._place(from_pretrained(CLIPVisionModelWithProjection, p.image_encoder, dtype=self.dtype, **kwargs)), p.image_encoder
        if name == "image_processor":
            try:
                return from_pretrained(CLIPImageProcessor, p.image_encoder, **kwargs), p.image_encoder
            except (ModelUnavailableError, OSError):
                # h94/IP-Adapter ships no preprocessor config: the method uses the default processor.
                return CLIPImageProcessor(), "CLIPImageProcessor() defaults"
        if name == "controlnet_openpose":
            if not p.controlnet_openpose:
                raise ModelUnavailableError(f"preset {p.name!r} has no controlnet_openpose")
            return self._place(from_pretrained(ControlNetModel, p.controlnet_openpose, torch_dtype=self.dtype)), p.controlnet_openpose
        raise KeyError(f"unknown component {name!r}; known: {', '.join(self.COMPONENTS)}")

    def get(self, name: str) -> Any:
        """A shared component, loaded on first use."""
        with self._lock:
            if name not in self._objects:
                self.ensure_tiny_models()
                start = time.perf_counter()
                obj, source = self._load_component(name)
                self._remember(name, obj, "component", source, time.perf_counter() - start)
                if name == "vae":
                    self._apply_tiling(obj)
            self._acquire(name)
            return self._objects[name]

    def shared(self, key: str, factory: Callable[[], Any], source: str = "") -> Any:
        """Build ``factory()`` once per registry and share it (pipelines, reference UNets, weight sets)."""
        with self._lock:
            if key not in self._objects:
                self.ensure_tiny_models()
                start = time.perf_counter()
                obj = factory()
                self._remember(key, obj, "shared", source or key, time.perf_counter() - start)
            self._acquire(key)
            return self._objects[key]

    def _remember(self, name: str, obj: Any, kind: str, source: str, seconds: float) -> None:
        self._objects[name] = obj
        if isinstance(obj, torch.nn.Module):
            params, size = sum(p.numel() for p in obj.parameters()), module_bytes(obj)
        else:
            params, size = getattr(obj, "num_parameters", 0), getattr(obj, "num_bytes", 0)
        self._info[name] = LoadedModel(name, kind, str(source), int(params), int(size), seconds)
        logger.info("loaded %s from %s in %.1f s (%.1f MiB)", name, source, seconds, size / 2**20)

    def is_loaded(self, name: str) -> bool:
        return name in self._objects

    def checkpoint(self, name: str) -> Path:
        """Local path of a method checkpoint named in the preset (downloading it if needed and possible)."""
        self.ensure_tiny_models()
        if name not in self.preset.checkpoints:
            raise ModelUnavailableError(f"preset {self.preset.name!r} has no checkpoint {name!r}")
        entry = self.preset.checkpoints[name]
        return fetch_file(entry.location, entry.filename)

    def use_checkpoint(self, name: str, path: str | Path | None) -> None:
        """Point checkpoint ``name`` at a local file (e.g. a fine-tune's output), or back at the preset's own
        weights with ``None``, and drop what was built from the old one, so the next generation loads the new
        weights ("Use in studio")."""
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ValueError(f"{path} is not a checkpoint file")
        with self._lock:
            if path is not None:
                self.preset.checkpoints[name] = CheckpointLocation(str(path))
            elif name in self._preset_checkpoints:
                self.preset.checkpoints[name] = self._preset_checkpoints[name]
            else:
                self.preset.checkpoints.pop(name, None)
            self._objects.pop(name, None)
            self._info.pop(name, None)
            self._objects.pop(f"weight_set:{name}", None)
            self._info.pop(f"weight_set:{name}", None)
            switcher = self._objects.get("inpaint_weight_sets")
            if switcher is not None and name in switcher.sets:
                if switcher.active == name:
                    switcher.activate(None)
                switcher.sets.pop(name)
        logger.info("checkpoint %s -> %s", name, path)

    def scheduler(self):
        """A fresh scheduler per call (schedulers are stateful) with the spec's SD1.5 settings: DDIM, or
        DPM-Solver++ when :meth:`set_sampler` chose it (the SD1.5-family tabs)."""
        from diffusers import DDIMScheduler

        with self._lock:
            if self._scheduler_config is None:
                self.ensure_tiny_models()
                try:
                    base = from_pretrained(DDIMScheduler, self.preset.base_model, subfolder="scheduler").config
                except (ModelUnavailableError, OSError, ValueError):
                    base = {}
                config = dict(base)
                config.update(
                    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                )
                self._scheduler_config = config
        self.sampler_used = self.sampler
        if self.sampler == "dpmpp":
            from diffusers import DPMSolverMultistepScheduler

            return DPMSolverMultistepScheduler.from_config(self._scheduler_config, algorithm_type="dpmsolver++",
                                                           solver_order=2)
        return DDIMScheduler.from_config(self._scheduler_config)

    def set_sampler(self, name: str) -> None:
        """``ddim`` (every method's own sampler) or ``dpmpp`` (DPM-Solver++ 2M: ~20 steps for what DDIM does in
        ~50, same model calls per step; deterministic, so a method's DDIM eta is not used)."""
        if name not in SAMPLERS:
            raise ValueError(f"sampler {name!r} must be one of {', '.join(SAMPLERS)}")
        self.sampler = name

    # ------------------------------------------------------------------------------------------ memory
    @staticmethod
    def _modules(obj: Any) -> list[torch.nn.Module]:
        """The modules ``obj`` holds: itself, or the values of a dict / items of a list or tuple."""
        if isinstance(obj, torch.nn.Module):
            return [obj]
        items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
        return [item for item in items if isinstance(item, torch.nn.Module)]

    def _acquire(self, name: str) -> None:
        """model_offload: put what a task asks for on the device (it stays there until :meth:`release`)."""
        if self.memory_mode != "model_offload" or name in self._on_device:
            return
        modules = self._modules(self._objects[name])
        if modules:
            for module in modules:
                module.to(self.device)
            self._on_device.add(name)
            self.offload_log.append((name, "in"))

    def release(self) -> None:
        """model_offload: after a task, move every model it used back to the CPU and free the cache."""
        with self._lock:
            if self.memory_mode != "model_offload" or not self._on_device:
                return
            for name in sorted(self._on_device):
                for module in self._modules(self._objects.get(name)):
                    module.to("cpu")
                self.offload_log.append((name, "out"))
            self._on_device.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def set_memory_mode(self, mode: str) -> str:
        """resident (every loaded model stays on the device, shared by all tabs), model_offload (only the running
        task's models are on the device; the rest wait in CPU memory) or auto (resident when the device has
        at least 16 GiB free or is the CPU, else model offload). Returns the mode in force."""
        if mode not in MEMORY_MODES:
            raise ValueError(f"memory mode {mode!r} must be one of {', '.join(MEMORY_MODES)}")
        if mode == "sequential_offload":
            raise ValueError("sequential offload is offered by the TEMU-VTOFF try-off only; the SD1.5 tabs offer "
                             "resident or model_offload")
        with self._lock:
            why = "chosen"
            if mode == "auto":
                free = _free_device_bytes(self.device)
                if free is None:
                    mode, why = "resident", f"auto: {self.device.type} memory is the machine's"
                else:
                    mode = "resident" if free >= AUTO_RESIDENT_BYTES else "model_offload"
                    why = f"auto: {free / 2**30:.1f} GiB free on {self.device}"
            if mode == "resident":
                for name in list(self._objects):
                    for module in self._modules(self._objects[name]):
                        module.to(self.device)
                self._on_device.clear()
            else:
                self.memory_mode = "model_offload"
                self._on_device = {name for name in self._objects if self._modules(self._objects[name])}
                self.release()
            self.memory_mode, self.memory_why = mode, why
        logger.info("memory mode %s (%s)", mode, why)
        return mode

    def set_memory_cap(self, gib: float | None) -> str:
        """Cap this process's CUDA memory at ``gib`` GiB (to try a small GPU on a big one); None removes it."""
        if gib is not None and gib <= 0:
            raise ValueError(f"memory cap {gib!r} GiB must be positive")
        self.memory_cap_gib = gib
        if self.device.type != "cuda":
            return f"memory cap {gib} GiB noted; it applies to CUDA devices only (this is {self.device.type})"
        total = torch.cuda.get_device_properties(self.device).total_memory
        fraction = 1.0 if gib is None else min(1.0, gib * 2**30 / total)
        torch.cuda.set_per_process_memory_fraction(fraction, self.device)
        return f"CUDA memory capped at {fraction * total / 2**30:.1f} GiB of {total / 2**30:.1f} GiB"

    def set_vae_tiling(self, enabled: bool) -> None:
        """Decode/encode large images in overlapping tiles (less memory, for 1024 px and up)."""
        with self._lock:
            self.vae_tiling = bool(enabled)
            if "vae" in self._objects:
                self._apply_tiling(self._objects["vae"])

    def _apply_tiling(self, vae) -> None:
        if hasattr(vae, "enable_tiling"):
            vae.enable_tiling() if self.vae_tiling else vae.disable_tiling()

    def unload(self, name: str | None = None) -> None:
        """Free one shared object (or all with None)."""
        with self._lock:
            names = [name] if name else list(self._objects)
            for key in names:
                self._objects.pop(key, None)
                self._info.pop(key, None)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def status(self) -> RegistryStatus:
        with self._lock:
            loaded = list(self._info.values())
        return RegistryStatus(
            preset=self.preset.name, device=str(self.device), dtype=str(self.dtype).replace("torch.", ""),
            loaded=loaded, gpu=gpu_memory(), memory_mode=self.memory_mode, memory_why=self.memory_why,
            memory_cap_gib=self.memory_cap_gib, vae_tiling=self.vae_tiling, sampler=SAMPLERS[self.sampler],
        )

    def defaults(self, task: str) -> dict[str, Any]:
        return dict(self.preset.defaults.get(task, {}))
