"""Virtual try-on with CatVTON on the shared concat-inpainting UNet.

CatVTON (Chong et al. 2024) is the SD1.5-inpainting UNet with text/cross-attention removed and only its
self-attention (``attn1``) re-trained; the trained tensors are one swappable weight set of the ONE resident
inpainting UNet that the garment LEM and TryOffAnyone also use (see ``pipelines/concat_inpaint.py``).

Stages of one call (numbers match the comments in ``__call__``):
 1. check inputs
 2. fit the person photo to the 3:4 canvas (centre crop by default), the garment resized + padded on white
 3. the mask: a painted mask always wins; otherwise the automatic try-on mask of the category
 4. encode: masked person (pixels under the mask set to 0 = grey) and garment with the VAE; like the
    official code the latents are ``latent_dist.sample()`` (seeded per image) x scaling factor
 5. concat-inpainting: masked person on TOP, garment BELOW, DDIM eta 1.0, CFG with the garment half zeroed
 6. decode the person half; "repaint" pastes it into the ORIGINAL photo at full resolution inside the mask
    only, so every unmasked pixel is bit-identical to the upload

Command line: ``python -m pipelines.tryon --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from pipelines.core.checkpoints import read_state_dict
from pipelines.types import CheckpointError, ModelUnavailableError
from pipelines.core.sampling import (
    RunControl,
    check_steps,
    generators,
    image_to_tensor,
    mask_to_tensor,
    resolve_seed,
    tensor_to_images,
    vae_decode,
)
from pipelines.core.concat_inpaint import (
    ConcatInpaintConfig,
    ConcatInpaintInputs,
    WeightSet,
    WeightSetSwitcher,
    attn1_set_from_indexed,
    concat_inpaint_denoise,
)
from pipelines.preprocess.images import check_image, load_image, load_mask, to_rgb
from pipelines.preprocess.framing import FIT_MODES, fit_mask, fit_to_canvas, pad_garment, paste_back
from pipelines.types import CATVTON_VARIANTS, MAX_IMAGES, TRYON_CATEGORIES, TryOnRequest, TryOnResult

logger = logging.getLogger(__name__)

# Preset checkpoint names of the CatVTON weight sets and the official file inside zhengchong/CatVTON.
# The VAE's sampling noise uses its own generators (seed + offset + i), so it is not the same random stream
# as the initial latent noise of the same image.
ENCODE_SEED_OFFSET = 7919


# ---------------------------------------------------------------------------------------- request/result
# ---------------------------------------------------------------------------------------- shared helpers
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


def masker_factory(registry) -> Callable[[], Any]:
    """A lazy, registry-shared AutoMasker (SegFormer from the preset, mediapipe fallback)."""

    def build():
        from pipelines.preprocess.masks import AutoMasker

        return registry.shared(
            "auto_masker", lambda: AutoMasker(registry.preset.segformer, device=str(registry.device)), "auto masker"
        )

    return build


def resolve_mask(
    person: Image.Image,
    painted: Image.Image | None,
    auto_mask: bool,
    category: str,
    masker: Callable[[], Any] | Any | None,
    kind: str = "tryon",
) -> tuple[Image.Image, str, str]:
    """(mask at the person's size, source, note). A non-empty painted mask always overrides the automatic one."""
    if painted is not None:
        mask = load_mask(painted, size=person.size, name="mask", reference_name="person image")
        if np.asarray(mask).any():
            return mask, "painted", ""
        if not auto_mask:
            raise ValueError("the painted mask is empty: paint the area to change or turn on the automatic mask")
    if not auto_mask:
        raise ValueError("no mask: paint the area to change or turn on the automatic mask")
    if masker is None:
        raise ValueError("no automatic masker is available: paint the area to change")
    if callable(masker) and not hasattr(masker, "tryon_mask"):
        masker = masker()
    result = masker.tryon_mask(person, category) if kind == "tryon" else masker.tryoff_mask(person, category)
    if not np.asarray(result.mask).any():
        raise ValueError(
            f"the automatic mask found no {category} garment in the person image; paint the mask by hand"
        )
    return result.mask.convert("L"), result.source, result.note


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
    from pipelines.garment.pipeline import inpaint_switcher

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


# ---------------------------------------------------------------------------------------------- loader
def load_catvton(path: str | Path, inpaint_unet, name: str = "tryon_catvton") -> WeightSet:
    """The CatVTON attn1 weight set from ``<variant>/attention/model.safetensors``.

    The file holds ``{8k}.to_q.weight``, ``.to_k.weight``, ``.to_v.weight``, ``.to_out.0.weight``,
    ``.to_out.0.bias`` for the k-th attn1 layer in ``named_modules`` order (80 tensors for SD1.5).
    Raises :class:`CheckpointError` naming the file and the missing/unexpected/mis-shaped keys.
    """
    path = Path(path)
    state = read_state_dict(path)
    bad = sorted(key for key, value in state.items() if not isinstance(value, torch.Tensor))
    if bad:
        raise CheckpointError(f"{path.name}: non-tensor entries {', '.join(bad[:5])}")
    weight_set = attn1_set_from_indexed(state, inpaint_unet, name, path.name)
    logger.info(weight_set.report.summary())
    return weight_set


def write_tiny_catvton(root: str | Path) -> Path:
    """A tiny CatVTON file in the official layout (``{8k}.to_q.weight`` ...) for the tiny inpainting UNet."""
    from safetensors.torch import save_file

    from pipelines.core.attention import attn1_modules
    from pipelines.core.tiny import tiny_unet

    unet = tiny_unet(9, seed=1)  # the same base as the tiny inpaint model
    torch.manual_seed(21)
    state: dict[str, torch.Tensor] = {}
    for k, (_, module) in enumerate(attn1_modules(unet)):
        for proj, tensor in (
            ("to_q.weight", module.to_q.weight), ("to_k.weight", module.to_k.weight),
            ("to_v.weight", module.to_v.weight), ("to_out.0.weight", module.to_out[0].weight),
            ("to_out.0.bias", module.to_out[0].bias),
        ):
            # A clear change from the base so a test can tell the weight sets apart.
            state[f"{8 * k}.{proj}"] = (tensor + 0.2 * torch.randn_like(tensor)).detach().contiguous()
    path = Path(root) / "checkpoints" / "catvton" / "attention" / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


# -------------------------------------------------------------------------------------------- pipeline
class CatVTONPipeline:
    """CatVTON try-on on the registry's ONE inpainting UNet (the weight set is swapped in per call)."""

    task = "tryon"

    def __init__(
        self,
        *,
        vae,
        switcher: WeightSetSwitcher,
        weight_set: str,
        scheduler_factory: Callable[[], Any],
        masker: Callable[[], Any] | Any | None = None,
    ) -> None:
        if weight_set not in switcher.sets:
            raise KeyError(f"weight set {weight_set!r} is not registered with the inpainting UNet")
        self.vae, self.switcher, self.weight_set = vae, switcher, weight_set
        self.scheduler_factory = scheduler_factory
        self.masker = masker  # an AutoMasker or a zero-argument factory returning one

    @classmethod
    def from_registry(cls, registry, variant: str = "tryon_catvton", masker=None) -> "CatVTONPipeline":
        """Use the registry's VAE and inpainting UNet; load the ``variant`` weight set on first use."""
        if variant not in registry.preset.checkpoints:
            raise ValueError(
                f"variant={variant!r} is not a checkpoint of preset {registry.preset.name!r}; "
                f"known: {', '.join(k for k in registry.preset.checkpoints if k.startswith('tryon'))}"
            )
        switcher = shared_weight_set(registry, variant, load_catvton)
        return cls(
            vae=registry.get("vae"), switcher=switcher, weight_set=variant, scheduler_factory=registry.scheduler,
            masker=masker if masker is not None else masker_factory(registry),
        )

    @property
    def size_multiple(self) -> int:
        vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return vae_scale * 2 ** (len(self.switcher.unet.config.block_out_channels) - 1)

    def check_inputs(self, request: TryOnRequest) -> None:
        check_common(request)
        if request.garment is None:
            raise ValueError("garment image is missing: upload a photo of the garment to try on")
        check_image(request.garment, "garment")
        check_canvas_size(request.height, request.width, self.size_multiple)
        if request.feather < 0:
            raise ValueError(f"feather={request.feather!r} must be >= 0 px")

    def prepare_mask(self, request: TryOnRequest) -> tuple[Image.Image, str, str]:
        """The mask a call would use (painted or automatic) at the person photo's size: (mask, source, note)."""
        person = to_rgb(request.person, "person")
        return resolve_mask(person, request.mask, request.auto_mask, request.category, self.masker, "tryon")

    @torch.no_grad()
    def __call__(self, request: TryOnRequest, control: RunControl | None = None) -> TryOnResult:
        """Dress the person in the garment; ``num_images`` results at the person photo's size (with repaint)."""
        # 1. check inputs
        self.check_inputs(request)
        control = control or RunControl()
        control.overall_total = request.num_inference_steps
        control.check()
        seed = resolve_seed(request.seed)
        batch, height, width = int(request.num_images), request.height, request.width
        person = to_rgb(request.person, "person")
        garment = to_rgb(request.garment, "garment")

        # 2. canvases: the person fills the 3:4 canvas, the garment is padded (nothing of it is cut)
        person_canvas, info = fit_to_canvas(person, width, height, request.fit_mode)
        garment_canvas = pad_garment(garment, width, height)

        # 3. mask (original size) -> canvas
        mask, mask_source, note = resolve_mask(
            person, request.mask, request.auto_mask, request.category, self.masker, "tryon"
        )
        mask_canvas, _ = fit_mask(mask, width, height, info=info)
        if not np.asarray(mask_canvas).any():
            raise ValueError("the mask lies outside the part of the photo the model sees (fit mode crop)")

        # 4. encode (one VAE pass per image, per-image sampling noise)
        vae = self.vae
        device = self.switcher.unet.device
        pixel_mask = mask_to_tensor(mask_canvas, width, height)  # (1, 1, H, W)
        person_pixels = image_to_tensor(person_canvas, width, height)
        encode_gens = generators(seed + ENCODE_SEED_OFFSET, batch, vae.device)
        top = encode_latents(vae, pixel_masked(person_pixels, pixel_mask), encode_gens)  # (B, 4, h, w)
        bottom = encode_latents(vae, image_to_tensor(garment_canvas, width, height), encode_gens)
        latent_mask = torch.nn.functional.interpolate(pixel_mask, size=top.shape[-2:], mode="nearest")
        latent_mask = latent_mask.expand(batch, -1, -1, -1)

        # 5. concat-inpainting on the shared UNet with the CatVTON weight set live
        gens = generators(seed, batch, device)
        with weight_set_active(self.switcher, self.weight_set) as unet:
            latents = concat_inpaint_denoise(
                unet,
                self.scheduler_factory(),
                concat_inputs(top, latent_mask, bottom),
                ConcatInpaintConfig(request.num_inference_steps, request.guidance_scale, eta=request.eta, stage="try-on"),
                gens,
                control,
            )

        # 6. decode the person half and paste it back into the original photo
        canvas_images = tensor_to_images(vae_decode(vae, latents))
        if request.repaint:
            images = [paste_back(person, image, mask, info, feather=request.feather) for image in canvas_images]
        else:
            images = canvas_images
        params = dict(request.params(), seed=seed, task=self.task, weights=self.weight_set, mask_source=mask_source)
        return TryOnResult(images, mask, mask_source, [seed + i for i in range(batch)], params, canvas_images, note)


# ------------------------------------------------------------------------------------ studio service tasks
# Registered in pipelines/service.py TASKS as "tryon": "pipelines.tryon.pipeline:run_task",
# "tryon_mask": "pipelines.tryon.pipeline:run_mask_task", "tryon_sam": "pipelines.tryon.pipeline:run_sam_task".
def run_task(registry, params: dict[str, Any], control: RunControl):
    """The ``tryon`` task: TryOnRequest fields + optional ``variant`` (CatVTON weights) or ``garment_model``
    (a fine-tuned garment model folder). Extras: the mask used, its source and any note."""
    from pipelines.types import TaskResult

    params = dict(params)
    garment_model = params.pop("garment_model", None)
    variant = params.pop("variant", "tryon_catvton")
    request = TryOnRequest(**params)
    if garment_model:
        from pipelines.tryon.garment_model import GarmentModelTryOnPipeline

        pipeline = GarmentModelTryOnPipeline.from_registry(registry, garment_model)
    else:
        pipeline = CatVTONPipeline.from_registry(registry, variant)
    result = pipeline(request, control)
    per_image = [dict(result.params, seed=seed, num_images=1) for seed in result.seeds]
    return TaskResult(result.images, per_image, {"mask": result.mask, "mask_source": result.mask_source, "note": result.note})


def run_mask_task(registry, params: dict[str, Any], control: RunControl | None = None):
    """Preview the mask a generation would use: ``person``, ``category``, ``mask`` (painted), ``auto_mask``,
    ``kind`` ("tryon" | "tryoff"). Returns the overlay image; extras carry the mask, source and note."""
    from pipelines.preprocess.masks import mask_overlay
    from pipelines.types import TaskResult

    person = load_image(params.get("person"), "person")
    kind = params.get("kind", "tryon")
    if kind not in ("tryon", "tryoff"):
        raise ValueError(f"kind={kind!r} must be 'tryon' or 'tryoff'")
    category = params.get("category", "upper")
    if category not in TRYON_CATEGORIES:
        raise ValueError(f"category={category!r} must be one of {', '.join(TRYON_CATEGORIES)}")
    mask, source, note = resolve_mask(
        person, params.get("mask"), bool(params.get("auto_mask", True)), category, masker_factory(registry), kind
    )
    overlay = mask_overlay(person, mask)
    return TaskResult([overlay], [{"task": f"{kind}_mask", "mask_source": source}], {"mask": mask, "mask_source": source, "note": note})


def sam_model_type(path: str | Path) -> str:
    """The SAM model type from the official file name (sam_vit_h_4b8939.pth -> vit_h); vit_b by default."""
    name = Path(path).name.lower()
    for model_type in ("vit_h", "vit_l", "vit_b", "tiny"):
        if model_type in name:
            return model_type
    return "vit_b"


def run_sam_task(registry, params: dict[str, Any], control: RunControl | None = None):
    """Click-to-refine with SAM: ``person``, ``points_pos``/``points_neg`` [(x, y) in photo pixels],
    optional ``base_mask``. Needs the preset's ``sam`` checkpoint. Returns the overlay; extras the mask."""
    from pipelines.preprocess.masks import SamRefiner, mask_overlay
    from pipelines.types import TaskResult

    location = registry.preset.sam
    if not location:
        raise ModelUnavailableError(f"preset {registry.preset.name!r} has no SAM checkpoint (set 'sam' in its YAML)")
    refiner = registry.shared(
        "sam_refiner", lambda: SamRefiner(location, sam_model_type(location), str(registry.device)), f"SAM {location}"
    )
    person = load_image(params.get("person"), "person")
    base = params.get("base_mask")
    if base is not None:
        base = load_mask(base, size=person.size, name="mask", reference_name="person image")
        if not np.asarray(base).any():
            base = None
    refiner.set_image(person)
    mask = refiner.refine(params.get("points_pos") or (), params.get("points_neg") or (), base_mask=base)
    return TaskResult([mask_overlay(person, mask)], [{"task": "sam"}], {"mask": mask, "mask_source": "sam"})


# ------------------------------------------------------------------------------------------------- CLI
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def image_files(path: str | Path, what: str) -> list[Path]:
    """One image file, or every image in a folder (sorted); ValueError when there is none."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise ValueError(f"{what} folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return files
    if not path.exists():
        raise ValueError(f"{what}: {path} does not exist")
    return [path]


def pair_people_with_garments(people: list[Path], garments: list[Path]) -> list[tuple[Path, Path]]:
    """Pairs to run: one garment -> every person; folders with the same file stems -> paired by name
    (the VITON-HD "paired" layout); otherwise every person with every garment."""
    if len(garments) == 1:
        return [(person, garments[0]) for person in people]
    by_stem = {garment.stem: garment for garment in garments}
    if all(person.stem in by_stem for person in people):
        return [(person, by_stem[person.stem]) for person in people]
    return [(person, garment) for person in people for garment in garments]


def mask_for(mask_arg: str | None, person: Path, many: bool) -> Path | None:
    """``--mask``: a file (one person) or a folder holding ``<person stem>.png`` (or any image suffix)."""
    if not mask_arg:
        return None
    path = Path(mask_arg).expanduser()
    if path.is_dir():
        for suffix in IMAGE_SUFFIXES:
            candidate = path / f"{person.stem}{suffix}"
            if candidate.exists():
                return candidate
        raise ValueError(f"mask folder {path} has no mask named {person.stem}.png for {person.name}")
    if many:
        raise ValueError("--mask must be a folder of masks named like the person images when --person is a folder")
    return path


def weights_location(weights: str, default_filename: str):
    """``--weights``: a local file, a local folder (the file inside it) or a hub id (+ the official filename)."""
    from pipelines.core.presets import CheckpointLocation

    path = Path(weights).expanduser()
    if path.is_file():
        return CheckpointLocation(str(path))
    if path.is_dir():
        for candidate in (path / default_filename, path / "attention" / "model.safetensors", path / "model.safetensors"):
            if candidate.is_file():
                return CheckpointLocation(str(candidate))
        raise ValueError(f"--weights folder {path} holds neither {default_filename} nor model.safetensors")
    return CheckpointLocation(weights, default_filename)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--person", required=True, help="person photo, or a folder of person photos")
    parser.add_argument("--category", default="upper", choices=TRYON_CATEGORIES)
    parser.add_argument("--mask", help="painted mask (white = change), or a folder of masks named like the photos")
    parser.add_argument("--auto_mask", action="store_true", help="build masks automatically (default without --mask)")
    parser.add_argument("--preset", default="sd15", help="model preset name or YAML file (sd15, tiny)")
    parser.add_argument("--inpaint_model", help="SD1.5-inpainting model (hub id or local folder)")
    parser.add_argument("--vae", help="VAE (hub id or local folder); the methods were trained with sd-vae-ft-mse")
    parser.add_argument("--segformer", help="clothes parser for automatic masks (hub id or local folder)")
    parser.add_argument("--output_path", default="outputs/cli", help="output folder (or a .png file for one image)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: best available)")
    parser.add_argument("--dtype", default=None, help="fp16, bf16, fp32 (default: fp16 on GPU, fp32 on CPU)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance_scale", type=float, default=None)
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None, help="-1 = random")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--num_images", type=int, default=1)
    parser.add_argument("--fit_mode", default="crop", choices=FIT_MODES)
    parser.add_argument("--models_dir", default=None, help="where the tiny preset builds its models")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.tryon",
        description="Virtual try-on (CatVTON): dress the person(s) in the garment(s). PNGs carry their parameters.",
    )
    add_common_arguments(parser)
    parser.add_argument("--garment", help="garment photo, or a folder of garment photos")
    parser.add_argument("--variant", default="tryon_catvton", choices=sorted(CATVTON_VARIANTS),
                        help="tryon_catvton = mix-48k-1024, tryon_catvton_512 = vitonhd-16k-512")
    parser.add_argument("--weights", help="CatVTON attention weights: local file/folder or hub id (zhengchong/CatVTON)")
    parser.add_argument("--no_repaint", action="store_true", help="return the raw canvas instead of pasting back")
    parser.add_argument("--garment_model", help="a fine-tuned garment model folder (atelier_model.json) instead of CatVTON")
    parser.add_argument("--prompt", default=None, help="garment model mode: the prompt (default: the model's own)")
    return parser


def make_registry(args, checkpoint: str | None = None, default_filename: str = ""):
    from pipelines.core.presets import load_preset
    from pipelines.core.registry import ModelRegistry

    preset = load_preset(args.preset).override(inpaint_model=args.inpaint_model, vae=args.vae, segformer=args.segformer)
    if checkpoint and getattr(args, "weights", None):
        preset.checkpoints[checkpoint] = weights_location(args.weights, default_filename)
    return ModelRegistry(preset, device=args.device, dtype=args.dtype, models_dir=args.models_dir)


def save_results(result, output: Path, stem: str, single: bool, preset_name: str) -> list[Path]:
    from pipelines.preprocess.images import save_png_with_params

    written = []
    for index, (image, seed) in enumerate(zip(result.images, result.seeds)):
        if single and output.suffix.lower() == ".png" and len(result.images) == 1:
            target = output
        else:
            target = output / f"{stem}_{seed}_{index}.png"
        params = dict(result.params, seed=seed, num_images=1, preset=preset_name)
        written.append(save_png_with_params(image, target, params))
    return written


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    written: list[Path] = []
    try:
        if args.mask and args.auto_mask:
            raise ValueError("give either --mask or --auto_mask, not both")
        registry = make_registry(args, args.variant, CATVTON_VARIANTS[args.variant])
        defaults = registry.defaults("tryon")
        people = image_files(args.person, "person")
        if args.garment_model:
            from pipelines.tryon.garment_model import GarmentModelTryOnPipeline

            pipeline = GarmentModelTryOnPipeline.from_registry(registry, args.garment_model)
            pairs = [(person, None) for person in people]
            if args.garment:
                raise ValueError("--garment_model works from the prompt; leave out --garment")
        else:
            if not args.garment:
                raise ValueError("--garment is required (a garment photo or a folder of them)")
            pipeline = CatVTONPipeline.from_registry(registry, args.variant)
            pairs = pair_people_with_garments(people, image_files(args.garment, "garment"))
        output = Path(args.output_path)
        for person_path, garment_path in pairs:
            mask_path = mask_for(args.mask, person_path, len(people) > 1)
            request = TryOnRequest(
                person=load_image(person_path, "person"),
                garment=load_image(garment_path, "garment") if garment_path else None,
                category=args.category,
                mask=load_mask(mask_path, name="mask") if mask_path else None,
                auto_mask=mask_path is None,
                height=args.height or defaults.get("height", 1024),
                width=args.width or defaults.get("width", 768),
                num_inference_steps=args.steps or defaults.get("steps", 50),
                guidance_scale=args.guidance_scale if args.guidance_scale is not None
                else (7.5 if args.garment_model else defaults.get("guidance_scale", 2.5)),
                seed=args.seed if args.seed is not None else defaults.get("seed", 42),
                num_images=args.num_images,
                eta=args.eta,
                repaint=not args.no_repaint,
                fit_mode=args.fit_mode,
                prompt=args.prompt or "",
            )
            result = pipeline(request)
            stem = person_path.stem + (f"__{garment_path.stem}" if garment_path else "")
            written += save_results(result, output, stem, len(pairs) == 1, registry.preset.name)
            for path in written[-len(result.images):]:
                print(f"wrote {path}")
    except (ValueError, TypeError, OSError, RuntimeError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
