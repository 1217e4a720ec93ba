"""GarmentBench-mini base models: a small VAE and a small text-to-image UNet trained FROM SCRATCH on synthetic data.

The first two stages of the mini stack (issue #10); every later method (colour adapter, GAM, LEM, try-on,
try-off, dressing) trains with its own trainer on top of what these write. One part per run::

    part vae    every image of the dataset (garments, sketches, logos, people; not masks)   -> final/vae/
                loss = MSE(decode(z), x) + kl_weight * KL(q(z|x) || N(0, 1)),  z ~ q(z|x)
    part unet   GarmentBench captions -> garments, on the frozen trained VAE                 -> final/ (SD layout)
                the text encoder of ``pretrained_model``'s architecture, fresh, trained with the UNet
                (``train_text_encoder``) or frozen
                loss = MSE(eps_theta(z_t, t, text), eps), captions dropped with drop_text_prob (CFG)
    part inpaint  the same captions and garments with a random mask (a box or ellipse, the whole image 1 in 4)
                -> final/ (SD-inpainting layout). The 9-channel UNet starts as the trained ``base`` UNet with
                zero weights on the 5 new input channels (how SD-inpainting started from SD); the base's VAE,
                text encoder and tokenizer stay frozen.
                input = [z_t (4), mask at latent size (1), z of image * (mask < 0.5) (4)]
                loss = MSE(eps_theta(input, t, text), eps)

``pretrained_model`` only gives the architecture (its configs; every weight is re-initialised from
``seed``). Output of part unet: ``final/{unet,vae,text_encoder,tokenizer,scheduler}/`` + ``model_index.json``,
a StableDiffusionPipeline folder the studio's presets and the other trainers load like any SD1.5 model.
The VAE's ``scaling_factor`` is measured on the data (1 / std of the latents) when part vae exports.

Run alone:  python -m training.mini_base --config cfg.yaml [--run-id ID --store DB]
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from pipelines.core.concat_inpaint import skip_cross_attention
from pipelines.core.sampling import encode_prompts
from training.common import TrainerContext, endless, run_cli, write_model_card
from training.config import ConfigError, MiniBaseConfig
from training.garment_finetune import random_mask, to_tensor
from training.garmentbench import load_garmentbench, load_rgb_sized
from training.toolkit import (
    checkpoint_saver,
    export_on_main,
    make_optimizer,
    noisy_latents,
    resume,
    save_sample,
    setup_accelerator,
    train_loop,
)

logger = logging.getLogger(__name__)

METHOD = "mini_base"
SKIPPED_FOLDERS = {"mask", "masks", "silhouette", "color"}  # not pictures the VAE must draw (swatches go to CLIP)


# -- data -----------------------------------------------------------------------------------------------
def vae_images(root: str | Path) -> list[Path]:
    """Every PNG/JPEG under ``root`` except masks, silhouettes and colour swatches (sorted)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")
                   and not SKIPPED_FOLDERS & {part.lower() for part in p.relative_to(root).parts[:-1]})
    if not files:
        raise ConfigError(f"dataset: {root} holds no images for the VAE")
    return files


class ImageDataset(Dataset):
    def __init__(self, files: list[Path], width: int, height: int) -> None:
        self.files, self.width, self.height = files, width, height

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"pixel_values": load_rgb_sized(self.files[index], self.width, self.height), "caption": ""}


class CaptionDataset(Dataset):
    """Garments with one of their captions; ``masks``: also a random inpainting mask (1 = repaint)."""

    def __init__(self, records, width: int, height: int, masks: bool = False, seed: int = 0,
                 mask_sides: tuple[float, float] = (0.25, 1.0), full_mask_prob: float = 0.25) -> None:
        self.records, self.width, self.height, self.masks = records, width, height, masks
        self.rng = random.Random(seed)
        self.mask_sides, self.full_mask_prob = mask_sides, full_mask_prob

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        example = {"pixel_values": load_rgb_sized(record["cloth"], self.width, self.height),
                   "caption": random.choice(record.captions)}
        if self.masks:
            mask = random_mask(self.height, self.width, self.rng, self.mask_sides, self.full_mask_prob)
            example["mask"] = to_tensor(mask)  # (1, H, W)
        return example


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    batch = {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
             "captions": [e["caption"] for e in examples]}
    if "mask" in examples[0]:
        batch["mask"] = torch.stack([e["mask"] for e in examples])
    return batch


# -- models ---------------------------------------------------------------------------------------------
def fresh_models(config: MiniBaseConfig) -> dict[str, Any]:
    """The architecture of ``pretrained_model`` with fresh weights (seeded); part unet loads the trained VAE."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    location = Path(config.pretrained_model)
    torch.manual_seed(config.seed)
    models: dict[str, Any] = {"noise_scheduler": DDPMScheduler.from_pretrained(location, subfolder="scheduler")}
    if config.part == "vae":
        vae_config = dict(AutoencoderKL.load_config(location, subfolder="vae"))
        if config.vae_width:
            levels = len(vae_config["block_out_channels"])
            vae_config["block_out_channels"] = [config.vae_width] + [2 * config.vae_width] * (levels - 1)
        models["vae"] = AutoencoderKL.from_config(vae_config)
        return models
    if config.part == "inpaint":
        base = Path(config.base)
        models["vae"] = AutoencoderKL.from_pretrained(base, subfolder="vae")
        models["tokenizer"] = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
        models["text_encoder"] = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
        models["unet"] = inpainting_unet(UNet2DConditionModel.from_pretrained(base, subfolder="unet"))
        return models
    models["vae"] = AutoencoderKL.from_pretrained(config.vae)
    models["unet"] = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(location, subfolder="unet"))
    models["tokenizer"] = CLIPTokenizer.from_pretrained(location, subfolder="tokenizer")
    models["text_encoder"] = CLIPTextModel(CLIPTextConfig.from_pretrained(location, subfolder="text_encoder"))
    if models["unet"].config.cross_attention_dim != models["text_encoder"].config.hidden_size:
        raise ConfigError("pretrained_model: the UNet's cross_attention_dim differs from the text encoder's width")
    return models


def inpainting_unet(unet):
    """A 9-channel copy of a trained 4-channel UNet: the same weights, zeros on the mask and masked-image inputs
    (so it starts out as exactly the text-to-image model)."""
    from diffusers import UNet2DConditionModel

    if unet.config.in_channels != 4:
        raise ConfigError(f"base: its UNet has {unet.config.in_channels} input channels; part inpaint starts "
                          "from a 4-channel text-to-image UNet")
    inpaint = UNet2DConditionModel.from_config({**dict(unet.config), "in_channels": 9})
    state = unet.state_dict()
    weight = state["conv_in.weight"]  # (C, 4, 3, 3)
    state["conv_in.weight"] = torch.cat([weight, weight.new_zeros(weight.shape[0], 5, *weight.shape[2:])], dim=1)
    inpaint.load_state_dict(state)
    return inpaint


def inpaint_input(vae, noisy: torch.Tensor, pixels: torch.Tensor, mask: torch.Tensor, scaling: float) -> torch.Tensor:
    """[z_t, mask at latent size, z of the masked image] -- the input order of diffusers' inpainting pipeline."""
    masked = vae.encode(pixels * (mask < 0.5)).latent_dist.sample() * scaling  # (B, 4, h, w)
    return torch.cat([noisy, F.interpolate(mask, size=noisy.shape[-2:]), masked], dim=1)  # (B, 9, h, w)


# -- training -------------------------------------------------------------------------------------------
def train(context: TrainerContext) -> None:
    """One part of the mini base model, top to bottom."""
    config: MiniBaseConfig = context.config  # type: ignore[assignment]

    # 1. device and precision (one process: the mini models train on a CPU in minutes)
    accelerator, weight_dtype = setup_accelerator(config)
    device = accelerator.device

    # 2. models: the trained part in fp32; for part unet the VAE and text encoder frozen
    models = fresh_models(config)
    vae, noise_scheduler = models["vae"].to(device), models["noise_scheduler"]
    if config.part == "vae":
        trained = {"vae": vae}
    else:
        vae.requires_grad_(False).eval()
        text_encoder = models["text_encoder"].to(device)
        train_text = config.train_text_encoder and config.part == "unet"  # inpaint: the base's, frozen
        text_encoder.requires_grad_(train_text)
        trained = {"unet": models["unet"].to(device)}
        if config.skip_cross_attention:  # set once: training, samples and checks all run text-free
            trained["unet"].set_attn_processor(skip_cross_attention(trained["unet"]))
        if train_text:
            trained["text_encoder"] = text_encoder

    # 3. data
    if config.part == "vae":
        dataset: Dataset = ImageDataset(vae_images(config.dataset), config.width, config.height)
    else:
        dataset = CaptionDataset(load_garmentbench(config.dataset, "gam", extract_to=context.run_dir / "dataset"),
                                 config.width, config.height, masks=config.part == "inpaint", seed=config.seed,
                                 mask_sides=tuple(float(v) for v in config.mask_sides),
                                 full_mask_prob=config.full_mask_prob)
    loader = DataLoader(dataset, batch_size=config.train_batch_size, shuffle=True, collate_fn=collate,
                        num_workers=config.dataloader_workers, generator=torch.Generator().manual_seed(config.seed))
    logger.info("part %s: %d training images", config.part, len(dataset))

    # 4. resume, 5. optimizer
    checkpoint, start_step = resume(config, trained)
    parameters = [p for m in trained.values() for p in m.parameters() if p.requires_grad]
    groups: list = parameters
    if config.part == "inpaint":  # conv_in (with the new masked-image channels) in a group of its own
        conv_in = {id(p) for p in trained["unet"].conv_in.parameters()}
        groups = [{"params": [p for p in parameters if id(p) in conv_in],
                   "lr": config.learning_rate * config.input_lr_scale},
                  {"params": [p for p in parameters if id(p) not in conv_in]}]
    optimizer, lr_scheduler = make_optimizer(config, groups, checkpoint)
    optimizer, lr_scheduler = accelerator.prepare(optimizer, lr_scheduler)
    module = next(iter(trained.values()))  # the VAE or the UNet (one process: no wrapping needed)
    logger.info("trainable parameters: %.2fM (%s)", sum(p.numel() for p in parameters) / 1e6, ", ".join(trained))

    def vae_loss(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        pixels = batch["pixel_values"].to(device)  # (B, 3, H, W) in [-1, 1]
        posterior = module.encode(pixels).latent_dist
        reconstruction = module.decode(posterior.sample()).sample
        mse = F.mse_loss(reconstruction, pixels)
        kl = posterior.kl().mean() / pixels[0].numel()
        return {"loss": mse + config.kl_weight * kl, "mse": mse.detach(), "kl": kl.detach()}

    scaling = vae.config.scaling_factor

    def unet_loss(batch: dict[str, Any]) -> torch.Tensor:
        pixels = batch["pixel_values"].to(device)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * scaling  # (B, 4, H/8, W/8)
        if config.skip_cross_attention:  # attn2 returns its input: a tiny dummy context, no text encoding
            text = torch.zeros((pixels.shape[0], 1, module.config.cross_attention_dim), device=device)
        else:
            captions = ["" if random.random() < config.drop_text_prob else c for c in batch["captions"]]
            with torch.set_grad_enabled("text_encoder" in trained):
                text = encode_prompts(models["tokenizer"], models["text_encoder"], captions, device)  # (B, 77, D)
        _, timesteps, noisy, target = noisy_latents(latents, noise_scheduler)
        if config.part == "inpaint":
            with torch.no_grad():
                noisy = inpaint_input(vae, noisy, pixels, batch["mask"].to(device), scaling)
        prediction = module(noisy, timesteps, encoder_hidden_states=text).sample
        return F.mse_loss(prediction, target)

    save = checkpoint_saver(context, config, optimizer, lr_scheduler, lambda: dict(trained),
                            {"part": config.part, "architecture": config.pretrained_model})

    def sample(step: int) -> list[Path]:
        return write_samples(context, config, models, module, dataset, step)

    # 6. the loop
    for part in trained.values():
        part.train()
    loss = vae_loss if config.part == "vae" else unet_loss
    step = train_loop(context, config, accelerator, tuple(trained.values()), optimizer, lr_scheduler, parameters,
                      endless(loader), loss, save, sample, start_step)

    # 7. export
    models["text_encoder"] = trained.get("text_encoder", models.get("text_encoder"))
    export_on_main(context, accelerator, export_final, context, config, models, module, dataset, step)


# -- samples and export ---------------------------------------------------------------------------------
@torch.no_grad()
def write_samples(context: TrainerContext, config: MiniBaseConfig, models: dict[str, Any], module, dataset,
                  step: int) -> list[Path]:
    """part vae: originals | reconstructions of the first images; part unet: text-to-image from the captions;
    part inpaint: the first garment, masked | inpainted from its caption."""
    from PIL import Image

    from pipelines.core.sampling import tensor_to_images

    was_training = module.training
    module.eval()
    try:
        if config.part == "vae":
            pixels = torch.stack([dataset[i]["pixel_values"] for i in range(min(4, len(dataset)))])
            pixels = pixels.to(next(module.parameters()).device)
            images = tensor_to_images(torch.cat([pixels, module.decode(module.encode(pixels).latent_dist.mode()).sample]))
            strip = Image.new("RGB", (config.width * len(pixels), config.height * 2), "white")
            for index, image in enumerate(images):
                strip.paste(image, ((index % len(pixels)) * config.width, (index // len(pixels)) * config.height))
            return [save_sample(context, strip, 0, step, {"part": "vae", "rows": "originals / reconstructions"})]
        prompts = config.sample_prompts or [dataset.records[0].captions[0]]
        if config.part == "inpaint":
            example = dataset[0]
            pixels, mask = example["pixel_values"][None], example["mask"][None]
            images = generate(models, module, prompts, config, inpaint=(pixels, mask))
            masked = tensor_to_images(pixels * (mask < 0.5))[0]
            strips = []
            for image in images:
                strip = Image.new("RGB", (config.width * 2, config.height), "white")
                strip.paste(masked, (0, 0))
                strip.paste(image, (config.width, 0))
                strips.append(strip)
            images = strips
        else:
            images = generate(models, module, prompts, config)
        return [save_sample(context, image, index, step, {"prompt": prompt, "part": config.part})
                for index, (prompt, image) in enumerate(zip(prompts, images))]
    finally:
        if was_training:
            module.train()


@torch.no_grad()
def generate(models: dict[str, Any], unet, prompts: list[str], config: MiniBaseConfig, seed: int | None = None,
             inpaint: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Text-to-image with DDIM + CFG on the mini models (samples and the learning checks); ``inpaint`` =
    (pixels (1, 3, H, W) in [-1, 1], mask (1, 1, H, W), 1 = repaint) for the 9-channel UNet."""
    from pipelines.core.sampling import tensor_to_images, vae_decode
    from training.garmentbench import ddim_factory

    device = next(unet.parameters()).device
    scheduler = ddim_factory(models["noise_scheduler"])()
    scheduler.set_timesteps(config.sample_steps, device=device)
    generator = torch.Generator().manual_seed(config.sample_seed if seed is None else seed)
    latents = torch.randn((len(prompts), 4, config.height // 8, config.width // 8), generator=generator).to(device)
    text = encode_prompts(models["tokenizer"], models["text_encoder"], [""] * len(prompts) + list(prompts), device)
    if inpaint is not None:
        pixels, mask = (t.to(device).expand(2 * len(prompts), -1, -1, -1) for t in inpaint)
        scaling = models["vae"].config.scaling_factor
        condition = inpaint_input(models["vae"], torch.zeros_like(torch.cat([latents, latents])), pixels, mask,
                                  scaling)[:, 4:]  # (2B, 5, h, w): mask + masked-image latent, constant per step
    for timestep in scheduler.timesteps:
        model_input = torch.cat([latents, latents])
        if inpaint is not None:
            model_input = torch.cat([model_input, condition], dim=1)
        eps = unet(model_input, timestep, encoder_hidden_states=text).sample
        uncond, cond = eps.chunk(2)
        latents = scheduler.step(uncond + config.sample_guidance_scale * (cond - uncond), timestep, latents).prev_sample
    return tensor_to_images(vae_decode(models["vae"], latents))


@torch.no_grad()
def measured_scaling(vae, dataset, count: int = 64) -> float:
    """1 / std of the VAE's latents over the first ``count`` images (what SD's 0.18215 is for its VAE)."""
    device = next(vae.parameters()).device
    pixels = torch.stack([dataset[i]["pixel_values"] for i in range(min(count, len(dataset)))]).to(device)
    return float(1.0 / vae.encode(pixels).latent_dist.mode().std().clamp_min(1e-6))


def export_final(context: TrainerContext, config: MiniBaseConfig, models: dict[str, Any], module, dataset,
                 step: int) -> Path:
    final = context.final_dir
    final.mkdir(parents=True, exist_ok=True)
    if config.part == "vae":
        module.register_to_config(scaling_factor=measured_scaling(module, dataset))
        module.save_pretrained(final / "vae", safe_serialization=True)
        weights: dict[str, str] = {}  # a whole-folder model
    else:
        module.save_pretrained(final / "unet", safe_serialization=True)
        models["vae"].save_pretrained(final / "vae", safe_serialization=True)
        models["text_encoder"].save_pretrained(final / "text_encoder", safe_serialization=True)
        models["tokenizer"].save_pretrained(final / "tokenizer")
        scheduler_dir = Path(config.pretrained_model) / "scheduler"
        shutil.copytree(scheduler_dir, final / "scheduler", dirs_exist_ok=True)
        pipeline_class = "StableDiffusionInpaintPipeline" if config.part == "inpaint" else "StableDiffusionPipeline"
        (final / "model_index.json").write_text(json.dumps({
            "_class_name": pipeline_class, "scheduler": ["diffusers", "DDIMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}, indent=2))
        weights = {}
    write_model_card(final, {"kind": f"mini_{config.part}", "method": METHOD, "weights": weights,
                             "format": "diffusers", "base_model": config.pretrained_model, "height": config.height,
                             "width": config.width, "steps": step, "run_id": context.run_id})
    logger.info("final %s written to %s", config.part, final)
    return final


def main(argv: list[str] | None = None) -> int:
    return run_cli(METHOD, MiniBaseConfig, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
