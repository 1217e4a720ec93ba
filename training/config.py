"""Typed training configs loaded from YAML files or dicts.

Every field is a dataclass field whose ``metadata`` may carry ``range=(low, high)`` (inclusive, either end
``None`` for open), ``choices=(...)`` and ``help``. :func:`load_config` rejects unknown keys (naming the key),
wrong types and out-of-range values (naming the key and the value) -- never a silent fix-up. The one exception
is :data:`RETIRED_KEYS`: keys older versions wrote into every run's config, dropped with a logged warning so
those runs can still be resumed.

This module imports no torch: the UI process validates configs with it before any trainer process starts.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from pipelines.types import GARMENT_CATEGORIES

logger = logging.getLogger(__name__)

# key -> why it is gone; only dropped from configs of classes that do not declare it
RETIRED_KEYS = {"resolution": "only garment_finetune trains at a square resolution; the others use height x width"}


class ConfigError(ValueError):
    """A training config is invalid; the message names the key (and the value)."""


def _f(default: Any, help: str, range: tuple | None = None, choices: tuple | None = None) -> Any:
    """A dataclass field with its help text and limits in ``metadata``."""
    metadata: dict[str, Any] = {"help": help}
    if range is not None:
        metadata["range"] = range
    if choices is not None:
        metadata["choices"] = choices
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def check_multiple_of_8(config: Any, *keys: str) -> None:
    """The pixel sizes ``keys`` of ``config`` must be multiples of 8 (the VAE downsamples by 8)."""
    for key in keys:
        if getattr(config, key) % 8:
            raise ConfigError(f"{key}: {getattr(config, key)} is not a multiple of 8 (the VAE downsamples by 8)")


@dataclass
class TrainConfig:
    """Settings every training method shares (the runner and TrainerContext rely on these)."""

    pretrained_model: str = _f("", "hub id or local folder of the base model (diffusers layout, subfolders)")
    dataset: str = _f("", "dataset folder or .zip (see training/datasets.py for the layout)")
    output_dir: str = _f("", "run folder: checkpoints/, samples/, metrics.jsonl, final/ (the runner sets it)")
    max_train_steps: int = _f(1000, "optimizer steps in total (a resumed run continues towards this)", (1, 10_000_000))
    learning_rate: float = _f(5e-6, "peak learning rate", (1e-10, 1.0))
    lr_scheduler: str = _f(
        "constant", "learning-rate schedule",
        choices=("constant", "constant_with_warmup", "linear", "cosine"),
    )
    lr_warmup_steps: int = _f(0, "warm-up steps of the schedule", (0, 10_000_000))
    train_batch_size: int = _f(1, "images per step per device", (1, 256))
    gradient_accumulation_steps: int = _f(1, "micro-batches per optimizer step", (1, 1024))
    mixed_precision: str = _f("no", "autocast precision; must be 'no' on CPU", choices=("no", "fp16", "bf16"))
    gradient_checkpointing: bool = _f(False, "trade compute for activation memory")
    use_8bit_adam: bool = _f(False, "bitsandbytes AdamW8bit (needs bitsandbytes and a CUDA GPU)")
    adam_beta1: float = _f(0.9, "AdamW beta1", (0.0, 0.999999))
    adam_beta2: float = _f(0.999, "AdamW beta2", (0.0, 0.999999))
    adam_weight_decay: float = _f(1e-2, "AdamW weight decay", (0.0, 1.0))
    adam_epsilon: float = _f(1e-8, "AdamW epsilon", (1e-12, 1e-2))
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 = off)", (0.0, 1e6))
    seed: int = _f(0, "random seed (data order, noise, random masks)", (0, 2**32 - 1))
    save_optimizer_state: bool = _f(True, "store optimizer state in checkpoints (exact resume; 2x the weights)")
    save_every: int = _f(500, "write a step-numbered checkpoint every N steps (0 = only at the end)", (0, 10_000_000))
    sample_every: int = _f(0, "write sample images every N steps (0 = only on request)", (0, 10_000_000))
    sample_prompts: list = _f([], "prompts for samples (empty = the first training caption)")
    sample_steps: int = _f(20, "denoising steps per sample", (1, 1000))
    sample_seed: int = _f(1234, "fixed seed so samples are comparable across steps", (0, 2**32 - 1))
    resume_from: str | None = _f(None, "checkpoint folder (checkpoints/step-N) or a run folder (its latest)")
    device: str = _f("auto", "compute device", choices=("auto", "cpu", "cuda"))
    dataloader_workers: int = _f(0, "DataLoader worker processes", (0, 64))
    cpu_threads: int = _f(0, "torch CPU threads (0 = torch's default; 1 avoids oversubscribed small models)", (0, 256))
    num_processes: int = _f(
        1, "data-parallel processes, one per GPU (>1: the runner starts `accelerate launch --multi_gpu`)", (1, 64)
    )

    # Methods whose script shards data, syncs flags and writes only from rank 0 set this to True.
    SUPPORTS_MULTI_PROCESS = False

    def validate(self) -> None:
        """Cross-field checks; subclasses extend (call super)."""
        if self.num_processes > 1 and not self.SUPPORTS_MULTI_PROCESS:
            raise ConfigError(
                f"num_processes: {self.num_processes} -- this method trains in one process only; set it to 1"
            )
        if not self.pretrained_model:
            raise ConfigError("pretrained_model: required (a hub id or a local model folder)")
        if not self.dataset:
            raise ConfigError("dataset: required (a folder or a .zip of images)")
        if self.use_8bit_adam and importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError(
                "use_8bit_adam: true needs the 'bitsandbytes' package, which is not installed "
                "(pip install bitsandbytes, on a CUDA machine) -- or set use_8bit_adam: false"
            )
        if self.device == "cpu" and self.mixed_precision != "no":
            raise ConfigError(f"mixed_precision: {self.mixed_precision!r} needs a GPU; use 'no' with device: cpu")
        if not all(isinstance(prompt, str) for prompt in self.sample_prompts):
            raise ConfigError("sample_prompts: must be a list of strings")


@dataclass
class GarmentFinetuneConfig(TrainConfig):
    """DreamBooth-inpaint garment fine-tune (seed 003): one garment's photos + cloth masks."""

    SUPPORTS_MULTI_PROCESS = True

    pretrained_model: str = _f(
        "stable-diffusion-v1-5/stable-diffusion-inpainting",
        "SD 1.5/2 inpainting model (9-channel UNet): hub id or local folder",
    )
    resolution: int = _f(512, "square training resolution in pixels (multiple of 8)", (32, 4096))
    instance_prompt: str | None = _f(None, "one prompt for every image (default: captions from file names)")
    require_masks: bool = _f(False, "fail when an image has no mask instead of drawing random masks")
    random_masks: bool = _f(True, "draw random masks for images without one (the diffusers example's scheme)")
    masked_loss: bool = _f(False, "weight the MSE inside the mask by masked_loss_weight (outside: 1)")
    masked_loss_weight: float = _f(5.0, "loss weight inside the mask when masked_loss is on", (0.0, 1000.0))
    train_text_encoder: bool = _f(False, "also train the text encoder (the seed did; use lr 2e-6)")
    text_encoder_lr: float | None = _f(None, "text-encoder learning rate (default: learning_rate)", (1e-10, 1.0))
    use_lora: bool = _f(False, "train LoRA adapters (peft) instead of the full UNet")
    lora_rank: int = _f(8, "LoRA rank", (1, 1024))
    lora_alpha: float | None = _f(None, "LoRA alpha (default: the rank)", (1e-6, 1e6))
    lora_dropout: float = _f(0.0, "LoRA dropout", (0.0, 0.99))
    with_prior_preservation: bool = _f(False, "add a prior-preservation loss on class images")
    class_data_dir: str | None = _f(None, "folder of class images (prior preservation)")
    class_prompt: str | None = _f(None, "prompt for the class images, e.g. 'a sweater'")
    prior_loss_weight: float = _f(1.0, "weight of the prior-preservation loss", (0.0, 1000.0))
    center_crop: bool = _f(True, "centre crop (else random crop) after resizing the short side")
    min_image_size: int = _f(64, "reject images whose shorter side is below this (pixels)", (8, 8192))

    def validate(self) -> None:
        super().validate()
        check_multiple_of_8(self, "resolution")
        if self.with_prior_preservation:
            if not self.class_data_dir:
                raise ConfigError("class_data_dir: required when with_prior_preservation is true")
            if not self.class_prompt:
                raise ConfigError("class_prompt: required when with_prior_preservation is true")


C = TypeVar("C", bound=TrainConfig)


def _check_type(key: str, annotation: Any, value: Any) -> Any:
    """Coerce ``value`` to ``annotation`` where lossless (int -> float, '5e-6' -> float); else raise."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        inner = [arg for arg in args if arg is not type(None)]
        return _check_type(key, inner[0], value)
    if value is None:
        raise ConfigError(f"{key}: must not be empty (null)")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "5e-6" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if annotation is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    return value


TINY_PLACEHOLDER = "{tiny_models}"


def resolve_tiny_placeholder(data: Mapping[str, Any]) -> dict[str, Any]:
    """Replace ``{tiny_models}`` (the tiny recipes' model location) with the studio's tiny model folder,
    building the tiny models there first if they are missing, so a tiny recipe also runs from the CLI."""
    if not any(isinstance(v, str) and TINY_PLACEHOLDER in v for v in data.values()):
        return dict(data)
    from pipelines.core.presets import default_models_dir

    root = default_models_dir() / "tiny"
    if not (root / "tiny_layout.json").exists():
        from pipelines.core.tiny import build_tiny_model_set

        build_tiny_model_set(root)
    return {k: v.replace(TINY_PLACEHOLDER, str(root)) if isinstance(v, str) else v for k, v in data.items()}


def load_config(cls: type[C], source: Mapping[str, Any] | str | Path) -> C:
    """Build ``cls`` from a dict or a YAML file, rejecting unknown keys and out-of-range values."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read config {path}: {error}") from error
    else:
        data = dict(source)
    if not isinstance(data, Mapping):
        raise ConfigError(f"config must be a mapping of keys to values, got {type(data).__name__}")
    data = resolve_tiny_placeholder(data)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in [key for key in data if key in RETIRED_KEYS and key not in fields]:
        logger.warning("%s: ignored for %s (%s)", key, cls.__name__, RETIRED_KEYS[key])
        del data[key]
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key for {cls.__name__} (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in data.items():
        spec = fields[key]
        value = _check_type(key, hints[key], value)
        if value is not None:
            limits = spec.metadata.get("range")
            if limits is not None:
                low, high = limits
                if (low is not None and value < low) or (high is not None and value > high):
                    raise ConfigError(f"{key}: {value!r} is out of range [{low}, {high}]")
            choices = spec.metadata.get("choices")
            if choices is not None and value not in choices:
                raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
        values[key] = value
    config = cls(**values)
    config.validate()
    return config


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain dict (YAML/JSON-safe) of every field, defaults included."""
    return dataclasses.asdict(config)


def save_config(config: TrainConfig, path: str | Path) -> Path:
    """Write the resolved config (every field) as YAML."""
    path = Path(path)
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return path


def field_help(cls: type[TrainConfig]) -> dict[str, dict[str, Any]]:
    """``{name: {"default", "help", "range", "choices"}}`` for building forms (by name, never by position)."""
    out: dict[str, dict[str, Any]] = {}
    for spec in dataclasses.fields(cls):
        default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
        out[spec.name] = {"default": default, **dict(spec.metadata)}
    return out


# -- the IMAGGarment-1 garment methods (training/colour_adapter.py, training/gam.py, training/lem.py) ----------
@dataclass
class GarmentMethodConfig(TrainConfig):
    """Settings shared by the colour adapter, GAM and LEM trainers (GarmentBench data, 640x512 garments)."""

    garmentbench_task: typing.ClassVar[str] = ""  # which pair file the method reads (see training/garmentbench.py)
    SUPPORTS_MULTI_PROCESS = True  # data-parallel: sharded loader, rank 0 writes (training/garmentbench.py)

    vae: str | None = _f(None, "separate VAE (hub id or folder, e.g. stabilityai/sd-vae-ft-mse); null = <model>/vae")
    height: int = _f(640, "training height in pixels (multiple of 8; 640 in the official recipes)", (32, 4096))
    width: int = _f(512, "training width in pixels (multiple of 8; 512 in the official recipes)", (32, 4096))
    min_image_size: int = _f(32, "reject dataset images whose shorter side is below this (pixels)", (8, 8192))
    sample_guidance_scale: float = _f(7.0, "CFG scale of the sample images", (0.0, 30.0))

    def validate(self) -> None:
        super().validate()
        check_multiple_of_8(self, "height", "width")


@dataclass
class MiniBaseConfig(TrainConfig):
    """GarmentBench-mini: train a small base model FROM SCRATCH on synthetic data (training/synthetic.py), one
    part per run: ``vae`` (the autoencoder, on every image of the dataset), ``unet`` (text-to-image on the
    GarmentBench captions, on the trained ``vae``) or ``inpaint`` (the 9-channel inpainting UNet, started from
    the trained ``base``). The architecture comes from ``pretrained_model``'s configs (its weights are not used)."""

    pretrained_model: str = _f("", "SD-layout folder whose unet/ vae/ text_encoder/ tokenizer/ configs set the "
                                   "architecture (weights re-initialised)")
    part: str = _f("vae", "what this run trains", choices=("vae", "unet", "inpaint"))
    vae: str | None = _f(None, "part unet: the trained VAE folder (a part-vae run's final/vae)")
    base: str | None = _f(None, "part inpaint: the part-unet run's final/ folder (its UNet starts the 9-channel "
                                "UNet; its VAE, text encoder and tokenizer stay frozen)")
    height: int = _f(80, "training height in pixels (multiple of 8)", (32, 1024))
    width: int = _f(64, "training width in pixels (multiple of 8)", (32, 1024))
    learning_rate: float = _f(5e-4, "peak learning rate (from scratch: high)", (1e-10, 1.0))
    adam_weight_decay: float = _f(0.0, "AdamW weight decay", (0.0, 1.0))
    kl_weight: float = _f(1e-6, "part vae: weight of the KL term", (0.0, 1.0))
    drop_text_prob: float = _f(0.1, "parts unet, inpaint: probability of an empty caption (the CFG branch)",
                               (0.0, 1.0))
    input_lr_scale: float = _f(1.0, "part inpaint: conv_in learns at this x learning_rate (its 5 new input "
                                    "channels start at zero and otherwise stay near it)", (0.01, 1000.0))
    mask_sides: list = _f([0.25, 1.0], "part inpaint: a random box / ellipse spans this fraction of each side "
                                       "(min, max)")
    full_mask_prob: float = _f(0.25, "part inpaint: probability of masking the whole image", (0.0, 1.0))
    skip_cross_attention: bool = _f(False, "part inpaint: every attn2 returns its input (no text), as the LEM, "
                                           "CatVTON and TryOffAnyone run this UNet; the masked image is then "
                                           "all it has to go on")
    train_text_encoder: bool = _f(True, "part unet: train the (small, from scratch) text encoder with the UNet")
    vae_width: int = _f(0, "part vae: channels of the VAE's first level, the others 2x (0 = the architecture's)",
                        (0, 512))
    sample_guidance_scale: float = _f(5.0, "CFG scale of the sample images", (0.0, 30.0))

    def validate(self) -> None:
        super().validate()
        check_multiple_of_8(self, "height", "width")
        if self.part == "unet" and not self.vae:
            raise ConfigError("vae: part 'unet' trains on a trained VAE; give the part-vae run's final/vae folder")
        if self.part == "inpaint" and not self.base:
            raise ConfigError("base: part 'inpaint' starts from a trained base; give the part-unet run's final folder")
        if self.part == "inpaint" and self.vae:
            raise ConfigError("vae: part 'inpaint' uses the base's own VAE (<base>/vae); leave vae empty")
        if self.part != "inpaint" and self.input_lr_scale != 1.0:
            raise ConfigError("input_lr_scale: only part 'inpaint' adds input channels; leave it at 1")
        if len(self.mask_sides) != 2 or not 0 < float(self.mask_sides[0]) <= float(self.mask_sides[1]) <= 1:
            raise ConfigError(f"mask_sides: {self.mask_sides} must be [min, max] with 0 < min <= max <= 1")
        if self.part != "inpaint" and self.skip_cross_attention:
            raise ConfigError("skip_cross_attention: only part 'inpaint' trains without text; leave it false")
        if self.part != "vae" and self.vae_width:
            raise ConfigError("vae_width: only part 'vae' builds a VAE; the UNet trains on the given one")
        if self.vae_width % 8:
            raise ConfigError(f"vae_width: {self.vae_width} is not a multiple of 8 (GroupNorm groups)")


@dataclass
class ColourAdapterConfig(GarmentMethodConfig):
    """IMAGGarment colour adapter: image_proj + to_k_ip/to_v_ip on a frozen SD1.5 UNet (color_pair.json)."""

    garmentbench_task: typing.ClassVar[str] = "color"

    pretrained_model: str = _f(
        "stable-diffusion-v1-5/stable-diffusion-v1-5", "SD1.5 text-to-image model (4-channel UNet): hub id or folder",
    )
    learning_rate: float = _f(1e-4, "peak learning rate (official: 1e-4)", (1e-10, 1.0))
    image_encoder: str = _f("h94/IP-Adapter", "CLIPVisionModelWithProjection (hub id or folder) for the swatch")
    image_encoder_subfolder: str | None = _f("models/image_encoder", "subfolder of image_encoder (null = none)")
    num_tokens: int = _f(4, "colour tokens appended after the text (4 in the official layout)", (1, 64))
    drop_image_prob: float = _f(0.05, "probability of dropping only the colour (zero image embedding)", (0.0, 1.0))
    drop_text_prob: float = _f(0.05, "probability of dropping only the caption (empty prompt)", (0.0, 1.0))
    drop_both_prob: float = _f(0.05, "probability of dropping both conditions", (0.0, 1.0))

    def validate(self) -> None:
        super().validate()
        total = self.drop_image_prob + self.drop_text_prob + self.drop_both_prob
        if total > 1.0:
            raise ConfigError(f"drop_image_prob + drop_text_prob + drop_both_prob: {total:g} is more than 1")


@dataclass
class GamConfig(GarmentMethodConfig):
    """IMAGGarment GAM: trainable silhouette ref_unet + to_k_ref/to_v_ref on a frozen SD1.5 UNet (sketch_pair.json)."""

    garmentbench_task: typing.ClassVar[str] = "gam"

    pretrained_model: str = _f(
        "SG161222/Realistic_Vision_V4.0_noVAE",
        "SD1.5 model whose UNet stays frozen as the main UNet and initialises ref_unet (hub id or folder)",
    )
    vae: str | None = _f("stabilityai/sd-vae-ft-mse", "separate VAE (Realistic Vision ships none); null = <model>/vae")
    learning_rate: float = _f(1e-5, "peak learning rate (official: 1e-5 constant)", (1e-10, 1.0))
    drop_text_prob: float = _f(0.1, "probability of training with an empty prompt", (0.0, 1.0))
    noise_offset: float = _f(0.05, "per-channel noise offset (official: 0.05; 0 = off)", (0.0, 1.0))
    sketch_scale: float = _f(1.0, "alpha of the mixed attention while training (official: 1.0)", (0.0, 2.0))
    sample_sketch_scale: float = _f(0.6, "alpha used for the sample images (the inference default)", (0.0, 2.0))


@dataclass
class LemConfig(GarmentMethodConfig):
    """IMAGGarment LEM: attn1 of the 9-channel inpainting UNet on the concat canvas (logo_pair.json)."""

    garmentbench_task: typing.ClassVar[str] = "lem"

    pretrained_model: str = _f(
        "stable-diffusion-v1-5/stable-diffusion-inpainting", "SD1.5 inpainting model (9-channel UNet): hub id or folder",
    )
    vae: str | None = _f("stabilityai/sd-vae-ft-mse", "separate VAE (the one inference uses); null = <model>/vae")
    learning_rate: float = _f(1e-4, "peak learning rate (official: 1e-4)", (1e-10, 1.0))
    drop_logo_prob: float = _f(0.1, "probability of zeroing the logo latent (CFG's unconditional branch)", (0.0, 1.0))


# -- try-on / try-off (training/concat_inpaint_finetune.py) -------------------------------------------------
MODES = ("tryon", "tryoff")


@dataclass
class ConcatFinetuneConfig(TrainConfig):
    """CatVTON (try-on) / TryOffAnyone (try-off) fine-tune on (person, garment, mask) triplets."""

    SUPPORTS_MULTI_PROCESS = True  # data-parallel: sharded loader, rank 0 writes samples/checkpoints/final

    mode: str = _f("tryon", "tryon: CatVTON layout, attn1 trained; tryoff: TryOffAnyone layout, whole blocks",
                   choices=MODES)
    pretrained_model: str = _f(
        "stable-diffusion-v1-5/stable-diffusion-inpainting", "SD1.5 inpainting model (9-channel UNet): hub id or folder",
    )
    vae: str | None = _f("stabilityai/sd-vae-ft-mse", "VAE (hub id or folder; both methods use sd-vae-ft-mse); "
                         "null = <pretrained_model>/vae")
    init_weights: str | None = _f(None, "official weights to start from: CatVTON <variant>/attention/model.safetensors "
                                  "(tryon) or TryOffAnyone model.safetensors (tryoff); null = the base UNet")
    learning_rate: float = _f(1e-5, "peak learning rate (CatVTON: 1e-5)", (1e-10, 1.0))
    height: int = _f(1024, "person/garment canvas height in pixels (3:4 portraits; 1024 or 512)", (32, 4096))
    width: int = _f(768, "canvas width in pixels (768 or 384)", (32, 4096))
    condition_dropout: float = _f(0.1, "probability of zeroing the bottom (condition) latent, for CFG", (0.0, 1.0))
    loss_on_top_only: bool = _f(False, "MSE on the generated top half only (default: the whole canvas)")
    min_image_size: int = _f(64, "reject images whose shorter side is below this (pixels)", (8, 8192))
    sample_guidance_scale: float = _f(2.5, "CFG scale of the sample images (both methods: 2.5)", (0.0, 30.0))

    def validate(self) -> None:
        super().validate()
        check_multiple_of_8(self, "height", "width")
        if self.init_weights and not Path(self.init_weights).expanduser().is_file():
            raise ConfigError(f"init_weights: {self.init_weights} is not a file (give the official .safetensors)")


@dataclass
class TryOnFinetuneConfig(ConcatFinetuneConfig):
    """The runner's ``tryon`` method: CatVTON layout (mode fixed to tryon)."""

    def validate(self) -> None:
        super().validate()
        if self.mode != "tryon":
            raise ConfigError("mode: the tryon method trains the CatVTON layout; use the tryoff method for try-off")


@dataclass
class TryOffFinetuneConfig(ConcatFinetuneConfig):
    """The runner's ``tryoff`` method: TryOffAnyone layout (mode fixed to tryoff, 384x512, seed 36)."""

    mode: str = _f("tryoff", "tryoff: TryOffAnyone layout, whole transformer blocks trained", choices=MODES)
    height: int = _f(512, "canvas height in pixels (TryOffAnyone: 512)", (32, 4096))
    width: int = _f(384, "canvas width in pixels (TryOffAnyone: 384)", (32, 4096))
    seed: int = _f(36, "random seed (TryOffAnyone samples with 36)", (0, 2**32 - 1))

    def validate(self) -> None:
        super().validate()
        if self.mode != "tryoff":
            raise ConfigError("mode: the tryoff method trains the TryOffAnyone layout; use the tryon method for try-on")


# -- AnyDressing (training/dressing.py) -------------------------------------------------------------------
DEFAULT_PROMPT = "A beautiful woman, best quality, high quality"


@dataclass
class DressingConfig(TrainConfig):
    """AnyDressing: slot LoRAs on the garment UNet + Dressing-Attention K'/V' on a frozen SD1.5 UNet."""

    pretrained_model: str = _f("SG161222/Realistic_Vision_V4.0_noVAE",
                               "SD1.5 model (4-channel UNet, frozen denoiser; the garment UNet's config)")
    vae: str | None = _f("stabilityai/sd-vae-ft-mse", "separate VAE (hub id or folder); null = <pretrained_model>/vae")
    image_encoder: str = _f("h94/IP-Adapter", "CLIP ViT-H image encoder of the Resampler (hub id or folder)")
    image_encoder_subfolder: str | None = _f("models/image_encoder", "subfolder of image_encoder (null = none)")
    init_checkpoint: str | None = _f(None, "IMAGDressing-v1_512.pt (or one of our imagdressing.safetensors) to "
                                     "start from; null = garment UNet copied from the base, fresh Resampler, K'/V' = W_k/W_v")
    slot_labels: list = _f([], "LoRA sets by garment category (empty = the categories in the dataset)")
    lora_rank: int = _f(16, "rank of the slot LoRAs (the paper gives none)", (1, 1024))
    lora_alpha: float | None = _f(None, "LoRA alpha (default: the rank)", (1e-6, 1e6))
    learning_rate: float = _f(5e-5, "peak learning rate (AnyDressing: 5e-5 AdamW)", (1e-10, 1.0))
    height: int = _f(768, "training height in pixels (the paper: 768)", (32, 4096))
    width: int = _f(576, "training width in pixels (the paper: 576)", (32, 4096))
    default_prompt: str = _f(DEFAULT_PROMPT, "caption of samples without prompt.txt")
    drop_condition_prob: float = _f(0.1, "probability of dropping text AND garments of a row (CFG's unconditional "
                                    "branch = neither)", (0.0, 1.0))
    garment_scale: float = _f(1.0, "Dressing-Attention lambda while training (IMAGDressing trained with 1.0)", (0.0, 2.0))
    loc_weight: float = _f(0.01, "weight of L_loc, divided by the sample's garment count m", (0.0, 100.0))
    loc_normalization: str = _f("joint", "L_loc probabilities: joint (with the self-attention keys; background "
                                "can reach 0) or garments (paper-literal)", choices=("joint", "garments"))
    loc_max_tokens: int = _f(4096, "DA layers with more query tokens than this are left out of L_loc (memory)",
                             (1, 10_000_000))
    texture_weight: float = _f(0.001, "weight of L_texture = L_hf (+ L_perc)", (0.0, 100.0))
    texture_max_timestep: int = _f(350, "texture loss only for rows with t <= this", (0, 1000))
    canny_low: int = _f(100, "Canny lower threshold for the high-frequency mask", (0, 1000))
    canny_high: int = _f(200, "Canny upper threshold", (0, 1000))
    perceptual_weights: str | None = _f(None, "TorchScript file computing DISTS(x, y) -> (B,) on [0, 1] images; "
                                        "null = L_perc skipped")
    min_image_size: int = _f(32, "reject images whose shorter side is below this (pixels)", (8, 8192))
    sample_guidance_scale: float = _f(6.5, "CFG scale of the sample images", (0.0, 30.0))
    sample_garment_scale: float = _f(0.85, "Dressing-Attention lambda of the samples", (0.0, 1.5))

    def validate(self) -> None:
        super().validate()
        check_multiple_of_8(self, "height", "width")
        for label in self.slot_labels:
            if label not in GARMENT_CATEGORIES:
                raise ConfigError(f"slot_labels: {label!r} is not a garment category ({', '.join(GARMENT_CATEGORIES)})")
        if self.init_checkpoint and not Path(self.init_checkpoint).expanduser().is_file():
            raise ConfigError(f"init_checkpoint: {self.init_checkpoint} is not a file")
        if self.perceptual_weights and not Path(self.perceptual_weights).expanduser().is_file():
            raise ConfigError(f"perceptual_weights: {self.perceptual_weights} is not a file")
