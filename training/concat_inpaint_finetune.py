"""Fine-tune the concat-inpainting family: CatVTON try-on (``mode: tryon``) or TryOffAnyone try-off (``mode: tryoff``).

Both train the SD1.5-inpainting 9-channel UNet on a canvas of two images stacked along the HEIGHT axis,
with every cross-attention returning its input (no text), exactly as ``pipelines/core/concat_inpaint.py`` samples:

    mode     TOP (generated; mask channel = garment mask)   BOTTOM (given; zero mask)   target canvas x0
    tryon    person * (mask < 0.5)                           garment                     [person; garment]
    tryoff   person * (mask < 0.5)                           full person                 [garment; person]
    UNet input = [noisy x0 (4), [mask; 0] (1), [TOP; BOTTOM] (4)]  -> predicts the noise of the whole canvas

Trained weights: ``tryon`` = attn1 only (to_q, to_k, to_v, to_out.0: CatVTON's 49.57M); ``tryoff`` = the
whole Transformer2DModel blocks (TryOffAnyone), minus attn2 which never influences the output (the skip
processor returns its input) and is exported unchanged. Condition dropout zeroes the BOTTOM latent of a
row with probability ``condition_dropout`` (the unconditional branch of CFG at inference).

Start: the official weights when ``init_weights`` is given (loaded with ``load_catvton`` /
``load_tryoffanyone``, so a wrong file fails with their messages), else the base inpainting UNet.

Dataset (folder or .zip; file stems must match across the three folders, any image suffix)::

    person/<name>.jpg     the person wearing the garment
    garment/<name>.jpg    the garment product photo (in-shop cloth)
    mask/<name>.png       white = the garment region on the person (try-on: where the new garment may go)

or the VITON-HD layout (optionally under ``train/``): ``image/<name>.jpg``, ``cloth/<name>.jpg``,
``agnostic-mask/<name>_mask.png`` (or ``<name>.png``). Any other file, a person without its garment or mask,
an unreadable image or a mask of another size is an error naming the file.

Output ``final/``: ``tryon`` -> ``attention/model.safetensors`` in CatVTON's ``{8k}.to_q.weight`` layout;
``tryoff`` -> ``model.safetensors`` in TryOffAnyone's ``{i}.{j}.<param>`` layout (every key, attn2 included);
so ``python -m pipelines.tryon --weights final/`` / ``python -m pipelines.tryoff --weights final/`` load them;
plus ``atelier_model.json``.

Run alone:  python -m training.concat_inpaint_finetune --config cfg.yaml [--run-id ID --store DB]
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pipelines.core.attention import attn1_modules
from pipelines.core.checkpoints import drop_leading, offline_hint, read_state_dict
from pipelines.core.concat_inpaint import (
    ATTN1_PROJECTIONS,
    ConcatInpaintConfig,
    ConcatInpaintInputs,
    concat_inpaint_denoise,
    encode_latents,
    skip_cross_attention,
)
from pipelines.core.sampling import generators, image_to_tensor, mask_to_tensor, tensor_to_images, vae_decode
from pipelines.preprocess.framing import fit_mask, fit_to_canvas, pad_garment
from pipelines.tryoff.checkpoints import load_tryoffanyone, tryoff_key_map
from pipelines.tryon.checkpoints import load_catvton
from pipelines.types import ModelUnavailableError
from training.common import TrainerContext, endless, run_cli, write_model_card
from training.config import ConcatFinetuneConfig, ConfigError
from training.datasets import IMAGE_SUFFIXES, DatasetError, load_mask, load_rgb, prepare_dataset_dir
from training.toolkit import (
    checkpoint_saver,
    export_on_main,
    make_optimizer,
    resume,
    setup_accelerator,
    shard,
    train_loop,
)

logger = logging.getLogger(__name__)

METHOD = "concat_inpaint_finetune"
CATVTON_FILE = "attention/model.safetensors"
TRYOFF_FILE = "model.safetensors"
# (person, garment, mask) folder names of the two accepted layouts
LAYOUTS = {"atelier": ("person", "garment", "mask"), "viton-hd": ("image", "cloth", "agnostic-mask")}


# -- model parts (the dressing trainer loads its parts with this too) ---------------------------------------
def load_model_part(loader, location: str, subfolder: str | None, key: str):
    """``loader.from_pretrained`` with a ModelUnavailableError naming the config key when it cannot be found."""
    try:
        return loader.from_pretrained(location, **({"subfolder": subfolder} if subfolder else {}))
    except OSError as error:

        raise ModelUnavailableError(f"{key}: {offline_hint(location)} ({error})") from error


# -- data -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Triplet:
    person: Path
    garment: Path
    mask: Path


def _images_by_stem(folder: Path, root: Path, strip: str = "") -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetError(f"{path.relative_to(root)}: not an image (allowed: {', '.join(IMAGE_SUFFIXES)})")
        stem = path.stem[: -len(strip)] if strip and path.stem.endswith(strip) else path.stem
        if stem in found:
            raise DatasetError(f"{path.relative_to(root)}: two files for '{stem}' ({found[stem].name} too)")
        found[stem] = path
    return found


def find_layout(root: Path) -> tuple[Path, str]:
    """The folder holding the three sub-folders and the layout name; DatasetError saying what is expected."""
    candidates = [root] + [path for path in (root / "train",) if path.is_dir()]
    entries = [p for p in root.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():  # a zip's wrapper folder
        candidates += [entries[0], entries[0] / "train"]
    for folder in candidates:
        for name, parts in LAYOUTS.items():
            if all((folder / part).is_dir() for part in parts):
                return folder, name
    raise DatasetError(
        f"dataset {root.name}: expected person/, garment/ and mask/ folders (or VITON-HD image/, cloth/, "
        "agnostic-mask/) with matching file names"
    )


def load_triplets(source: str | Path, min_size: int = 64, extract_to: str | Path | None = None) -> list[Triplet]:
    """Validate and pair the dataset; DatasetError naming the first bad file."""
    root = prepare_dataset_dir(source, extract_to)
    folder, layout = find_layout(root)
    person_dir, garment_dir, mask_dir = (folder / part for part in LAYOUTS[layout])
    people = _images_by_stem(person_dir, folder)
    garments = _images_by_stem(garment_dir, folder)
    masks = _images_by_stem(mask_dir, folder, strip="_mask")
    if not people:
        raise DatasetError(f"{person_dir.relative_to(folder)}/: no person images")
    triplets = []
    for stem, person_path in people.items():
        relative = person_path.relative_to(folder)
        if stem not in garments:
            raise DatasetError(f"{relative}: no garment image {garment_dir.name}/{stem}.<png|jpg> for this person")
        if stem not in masks:
            raise DatasetError(f"{relative}: no mask {mask_dir.name}/{stem}.png for this person")
        person = load_rgb(person_path)
        garment = load_rgb(garments[stem])
        mask = load_mask(masks[stem])
        for path, image in ((person_path, person), (garments[stem], garment)):
            if min(image.size) < min_size:
                raise DatasetError(f"{path.relative_to(folder)}: {image.size[0]}x{image.size[1]} px is too small "
                                   f"(shorter side must be >= {min_size})")
        if mask.size != person.size:
            raise DatasetError(f"{masks[stem].relative_to(folder)}: mask is {mask.size[0]}x{mask.size[1]} but "
                               f"{relative} is {person.size[0]}x{person.size[1]}")
        if mask.getextrema()[1] == 0:
            raise DatasetError(f"{masks[stem].relative_to(folder)}: mask is empty (all black)")
        triplets.append(Triplet(person_path, garments[stem], masks[stem]))
    for stem in sorted(set(garments) - set(people)):
        logger.warning("%s has no person image; ignored", garments[stem].relative_to(folder))
    logger.info("dataset %s (%s layout): %d triplets", folder, layout, len(triplets))
    return triplets


class TripletDataset(Dataset):
    """-> person (3, H, W), garment (3, H, W) in [-1, 1]; mask (1, H, W) in {0, 1}; placed as at inference
    (person and mask centre-cropped to the canvas, garment padded on white)."""

    def __init__(self, triplets: list[Triplet], height: int, width: int):
        self.triplets, self.height, self.width = triplets, height, width

    def __len__(self) -> int:
        return len(self.triplets)

    def images(self, index: int) -> tuple[Image.Image, Image.Image, Image.Image]:

        triplet = self.triplets[index]
        person, info = fit_to_canvas(load_rgb(triplet.person), self.width, self.height, "crop")
        mask, _ = fit_mask(load_mask(triplet.mask), self.width, self.height, info=info)
        garment = pad_garment(load_rgb(triplet.garment), self.width, self.height)
        return person, garment, mask

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:

        person, garment, mask = self.images(index)
        return {
            "person": image_to_tensor(person, self.width, self.height)[0],
            "garment": image_to_tensor(garment, self.width, self.height)[0],
            "mask": mask_to_tensor(mask, self.width, self.height)[0],
        }


# -- model ----------------------------------------------------------------------------------------------
def trainable_names(unet, mode: str) -> list[str]:
    """Parameter names trained in ``mode``: attn1 projections (tryon) or whole transformer blocks minus attn2."""
    if mode == "tryon":

        prefixes = tuple(f"{name}." for name, _ in attn1_modules(unet))
        return [name for name, _ in unet.named_parameters() if name.startswith(prefixes)]

    return [name for name in tryoff_key_map(unet).values() if ".attn2." not in name]


@torch.no_grad()
def apply_init_weights(unet, config: ConcatFinetuneConfig) -> None:
    """Copy the official weights into the UNet, validated by the pipeline loaders."""
    path = Path(config.init_weights).expanduser()
    params = dict(unet.named_parameters())
    if config.mode == "tryon":

        weight_set = load_catvton(path, unet)
        tensors = weight_set.tensors
    else:

        load_tryoffanyone(path, unet)  # validates every key and shape (attn2 included)
        mapping = tryoff_key_map(unet)
        tensors = {mapping[key]: value for key, value in drop_leading(read_state_dict(path), "module.").items()}
    for key, value in tensors.items():
        params[key].copy_(value.to(params[key].dtype))
    logger.info("started from %s (%d tensors)", path, len(tensors))


def load_components(config: ConcatFinetuneConfig) -> dict[str, Any]:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    unet = load_model_part(UNet2DConditionModel, config.pretrained_model, "unet", "pretrained_model")
    if unet.config.in_channels != 9:
        raise ConfigError(
            f"pretrained_model: {config.pretrained_model} has a {unet.config.in_channels}-channel UNet; try-on/try-off "
            "need an inpainting model (9 channels), e.g. stable-diffusion-v1-5/stable-diffusion-inpainting"
        )
    if config.vae:
        vae = load_model_part(AutoencoderKL, config.vae, None, "vae")
    else:
        vae = load_model_part(AutoencoderKL, config.pretrained_model, "vae", "pretrained_model")
    scheduler = load_model_part(DDPMScheduler, config.pretrained_model, "scheduler", "pretrained_model")
    return {"unet": unet, "vae": vae, "noise_scheduler": scheduler}


def canvas_parts(batch: dict[str, torch.Tensor], mode: str, vae, device, dtype) -> tuple[torch.Tensor, ...]:
    """Latents (B, 4, h, w) of TOP (masked person), BOTTOM (condition), the target canvas x0 (B, 4, 2h, w) and
    the latent mask (B, 1, h, w). Latents are ``latent_dist.sample()`` x scaling factor, as at inference."""
    person = batch["person"].to(device, dtype)
    garment = batch["garment"].to(device, dtype)
    mask = batch["mask"].to(device, dtype)
    scaling = vae.config.scaling_factor
    with torch.no_grad():
        pixels = torch.cat([person * (mask < 0.5), person, garment])  # one VAE pass for the three
        masked_latent, person_latent, garment_latent = (vae.encode(pixels).latent_dist.sample() * scaling).chunk(3)
    if mode == "tryon":
        bottom, target = garment_latent, torch.cat([person_latent, garment_latent], dim=2)
    else:
        bottom, target = person_latent, torch.cat([garment_latent, person_latent], dim=2)
    latent_mask = F.interpolate(mask, size=masked_latent.shape[-2:], mode="nearest")
    return masked_latent, bottom, target, latent_mask


def training_loss(batch, config: ConcatFinetuneConfig, vae, unet, noise_scheduler, weight_dtype, device,
                  generator: torch.Generator) -> torch.Tensor:
    """Denoising MSE over the concat canvas (or its top half)."""
    top, bottom, target, latent_mask = canvas_parts(batch, config.mode, vae, device, weight_dtype)
    drop = (torch.rand(top.shape[0], generator=generator) < config.condition_dropout).to(device)
    bottom = bottom * (~drop).to(bottom.dtype)[:, None, None, None]  # CFG's unconditional branch
    condition = torch.cat([top, bottom], dim=2)  # (B, 4, 2h, w)
    condition_mask = torch.cat([latent_mask, torch.zeros_like(latent_mask)], dim=2)  # (B, 1, 2h, w)
    noise = torch.randn_like(target)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (target.shape[0],), device=device)
    noisy = noise_scheduler.add_noise(target, noise, timesteps)
    model_input = torch.cat([noisy, condition_mask, condition], dim=1)  # (B, 9, 2h, w)
    context_dim = getattr(unet, "module", unet).config.cross_attention_dim  # ``unet`` is DDP-wrapped in multi-process runs
    context = torch.zeros((target.shape[0], 1, context_dim), device=device, dtype=model_input.dtype)
    prediction = unet(model_input, timesteps, context).sample
    if noise_scheduler.config.prediction_type == "v_prediction":
        goal = noise_scheduler.get_velocity(target, noise, timesteps)
    else:
        goal = noise
    error = (prediction.float() - goal.float()) ** 2  # (B, 4, 2h, w)
    if config.loss_on_top_only:
        error = error[:, :, : top.shape[2]]
    return error.mean()


# -- training -------------------------------------------------------------------------------------------
def train(context: TrainerContext) -> None:
    """The whole fine-tune, top to bottom."""

    config: ConcatFinetuneConfig = context.config  # type: ignore[assignment]

    # 1. device and precision
    accelerator, weight_dtype = setup_accelerator(config)

    # 2. data
    with accelerator.main_process_first():  # a zip is extracted once, by the main process
        triplets = load_triplets(config.dataset, config.min_image_size, context.run_dir / "dataset")
    dataset = TripletDataset(triplets, config.height, config.width)
    loader = DataLoader(dataset, batch_size=config.train_batch_size, shuffle=True, num_workers=config.dataloader_workers,
                        generator=torch.Generator().manual_seed(config.seed))
    loader = shard(accelerator, loader)  # num_processes > 1: each process trains on its own shard

    # 3. models: frozen VAE; the UNet with cross-attention skipped and only the method's weights trainable
    components = load_components(config)
    unet, vae, noise_scheduler = components["unet"], components["vae"], components["noise_scheduler"]
    vae.requires_grad_(False).eval()
    if config.init_weights:
        apply_init_weights(unet, config)
    unet.set_attn_processor(skip_cross_attention(unet))
    unet.requires_grad_(False)
    names = set(trainable_names(unet, config.mode))
    for name, parameter in unet.named_parameters():
        parameter.requires_grad_(name in names)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    vae.to(accelerator.device, **({"dtype": weight_dtype} if weight_dtype != torch.float32 else {}))
    parameters = [p for p in unet.parameters() if p.requires_grad]
    logger.info("mode %s: %d trainable tensors, %.2fM of %.2fM parameters", config.mode, len(parameters),
                sum(p.numel() for p in parameters) / 1e6, sum(p.numel() for p in unet.parameters()) / 1e6)

    # 4. resume: weights before the optimizer sees them
    def check_mode(state: dict[str, Any]) -> None:
        if state.get("mode", config.mode) != config.mode:
            raise ConfigError(f"resume_from: the checkpoint was trained in mode {state['mode']!r}")

    checkpoint, start_step = resume(config, {"unet": unet}, check_mode)

    # 5. optimizer and schedule
    optimizer, lr_scheduler = make_optimizer(config, parameters, checkpoint)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    save = checkpoint_saver(context, config, optimizer, lr_scheduler,
                            lambda: {"unet": accelerator.unwrap_model(unet)},
                            {"base_model": config.pretrained_model, "mode": config.mode})
    # per rank (rank 0 = the 1-process run): each shard gets its own condition dropout
    dropout_generator = torch.Generator().manual_seed(config.seed + start_step + 1_000_003 * accelerator.process_index)

    def compute_loss(batch: dict[str, Any]) -> torch.Tensor:
        with accelerator.autocast():
            return training_loss(batch, config, vae, unet, noise_scheduler, weight_dtype, accelerator.device,
                                 dropout_generator)

    def sample(step: int) -> list[Path]:
        return write_samples(context, config, accelerator.unwrap_model(unet), vae, noise_scheduler, dataset, step)

    # 6. the loop
    unet.train()
    step = train_loop(context, config, accelerator, unet, optimizer, lr_scheduler, parameters, endless(loader),
                      compute_loss, save, sample, start_step)

    # 7. export on the main process once every rank is done (also when a resumed run had nothing left to do)
    export_on_main(context, accelerator, export_final, context, config, accelerator.unwrap_model(unet), step)


# -- samples and export ---------------------------------------------------------------------------------
@torch.no_grad()
def write_samples(context: TrainerContext, config: ConcatFinetuneConfig, unet, vae, noise_scheduler,
                  dataset: TripletDataset, step: int) -> list[Path]:
    """The first training triplet through the inference sampler (fixed seed): [person | condition | result]."""
    from diffusers import DDIMScheduler
    from PIL.PngImagePlugin import PngInfo


    was_training = unet.training
    unet.eval()
    try:
        example = dataset[0]
        person, garment, mask = (example[key][None] for key in ("person", "garment", "mask"))
        gens = generators(config.sample_seed, 1, vae.device)
        top = encode_latents(vae, person * (mask < 0.5), gens)
        condition = garment if config.mode == "tryon" else person
        bottom = encode_latents(vae, condition, gens)
        latent_mask = F.interpolate(mask, size=top.shape[-2:], mode="nearest")
        latents = concat_inpaint_denoise(
            unet, DDIMScheduler.from_config(noise_scheduler.config),
            ConcatInpaintInputs(top=top, mask=latent_mask, bottom=bottom, premasked=True),
            ConcatInpaintConfig(config.sample_steps, config.sample_guidance_scale, eta=1.0, stage="sample"),
            generators(config.sample_seed, 1, unet.device),
        )
        result = tensor_to_images(vae_decode(vae, latents))[0]
        strip = Image.new("RGB", (config.width * 3, config.height), "white")
        for index, image in enumerate(tensor_to_images(torch.cat([person, condition])) + [result]):
            strip.paste(image, (index * config.width, 0))
        info = PngInfo()
        info.add_text("parameters", json.dumps({"mode": config.mode, "seed": config.sample_seed, "step": step,
                                                "run_id": context.run_id}))
        path = context.samples_dir / f"step-{step:08d}-0.png"
        strip.save(path, pnginfo=info)
        logger.info("sample at step %d: %s", step, path.name)
        return [path]
    finally:
        if was_training:
            unet.train()


def official_state(unet, mode: str) -> dict[str, torch.Tensor]:
    """The UNet's trained weights under the official key names (CatVTON ``{8k}.*`` / TryOffAnyone ``{i}.{j}.*``)."""
    params = dict(unet.named_parameters())
    if mode == "tryon":

        keys = {f"{8 * k}.{proj}": f"{name}.{proj}"
                for k, (name, _) in enumerate(attn1_modules(unet)) for proj in ATTN1_PROJECTIONS}
    else:

        keys = tryoff_key_map(unet)
    return {key: params[name].detach().float().cpu().contiguous() for key, name in keys.items()}


def export_final(context: TrainerContext, config: ConcatFinetuneConfig, unet, step: int) -> Path:
    from safetensors.torch import save_file

    final = context.final_dir
    relative = CATVTON_FILE if config.mode == "tryon" else TRYOFF_FILE
    path = final / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    state = official_state(unet, config.mode)
    save_file(state, str(path), metadata={"format": "catvton" if config.mode == "tryon" else "tryoffanyone"})
    card = {
        "kind": "tryon_weights" if config.mode == "tryon" else "tryoff_weights",
        "method": METHOD,
        "mode": config.mode,
        "base_model": config.pretrained_model,
        "vae": config.vae,
        "init_weights": config.init_weights,
        "weights": {"tryon_catvton" if config.mode == "tryon" else "tryoff_anyone": relative},
        "layout": "catvton-attn1" if config.mode == "tryon" else "tryoffanyone-blocks",
        "num_tensors": len(state),
        "height": config.height,
        "width": config.width,
        "steps": step,
        "run_id": context.run_id,
    }
    write_model_card(final, card)
    logger.info("final %s weights written to %s", config.mode, path)
    return final


def preflight(config: ConcatFinetuneConfig, run_dir: Path) -> None:
    """Runner preflight: validate the dataset before the trainer starts."""
    load_triplets(config.dataset, config.min_image_size, run_dir / "dataset")


def main(argv: list[str] | None = None) -> int:
    return run_cli(METHOD, ConcatFinetuneConfig, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
