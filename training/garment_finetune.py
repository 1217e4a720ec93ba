"""DreamBooth-inpaint garment fine-tune (seed 003): teach an SD inpainting model one garment.

Input: photos of one garment (worn), with cloth masks where available; prompts from file names
("t-shirt (1).jpg" -> "t-shirt") or one ``instance_prompt``. The 9-channel inpainting UNet sees
``[noisy latents (4), mask (1), masked-image latents (4)]`` exactly as at inference, so the trained model drops
into the try-on tab as a "garment model". Full UNet fine-tune or LoRA (peft), optional text encoder, optional
masked-loss weighting and prior preservation.

Run alone:  python -m training.garment_finetune --config cfg.yaml [--run-id ID --store DB]
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset

from pipelines.core.checkpoints import offline_hint
from pipelines.core.sampling import encode_prompts
from pipelines.types import ModelUnavailableError
from training.common import TrainerContext, endless, run_cli, write_model_card
from training.config import ConfigError, GarmentFinetuneConfig
from training.datasets import DatasetItem, load_dataset, load_mask, load_rgb
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

METHOD = "garment_finetune"
LORA_TARGETS_UNET = ["to_q", "to_k", "to_v", "to_out.0"]
LORA_TARGETS_TEXT = ["q_proj", "k_proj", "v_proj", "out_proj"]
LORA_WEIGHTS_FILE = "pytorch_lora_weights.safetensors"


# -- data -----------------------------------------------------------------------------------------------
def random_mask(height: int, width: int, rng: random.Random, sides: tuple[float, float] = (0.25, 1.0),
                full: float = 0.25) -> Image.Image:
    """A random rectangle or ellipse (``sides``: 25%..100% of each side), or the full image with probability
    ``full`` (1 time in 4: diffusers-like)."""
    mask = Image.new("L", (width, height), 0)
    if rng.random() < full:
        mask.paste(255, (0, 0, width, height))
        return mask
    box_w = max(1, int(width * rng.uniform(*sides)))
    box_h = max(1, int(height * rng.uniform(*sides)))
    left = rng.randint(0, width - box_w)
    top = rng.randint(0, height - box_h)
    draw = ImageDraw.Draw(mask)
    shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
    shape((left, top, left + box_w, top + box_h), fill=255)
    return mask


def square_crop(image: Image.Image, resolution: int, center: bool, rng: random.Random,
                resample: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Resize the short side to ``resolution`` and crop a square; returns the crop box for the mask."""
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(size, resample)
    if center:
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    else:
        left, top = rng.randint(0, size[0] - resolution), rng.randint(0, size[1] - resolution)
    box = (left, top, left + resolution, top + resolution)
    return image.crop(box), box


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL -> (3, H, W) in [-1, 1]; L PIL -> (1, H, W) in {0, 1}."""
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    channels = len(image.getbands())
    data = data.view(image.size[1], image.size[0], channels).permute(2, 0, 1).float()
    return data / 127.5 - 1.0 if channels == 3 else (data > 127).float()


class InpaintDataset(Dataset):
    """Items -> {"pixel_values": (3, R, R) in [-1, 1], "mask": (1, R, R) 1 = inpaint, "caption": str}."""

    def __init__(self, items: list[DatasetItem], resolution: int, center_crop: bool, random_masks: bool,
                 seed: int, prompt: str | None = None):
        self.items = items
        self.resolution = resolution
        self.center_crop = center_crop
        self.random_masks = random_masks
        self.prompt = prompt
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.items)

    def example(self, index: int, rng: random.Random | None = None) -> tuple[Image.Image, Image.Image, str]:
        """The cropped image, its mask (user mask preferred, else random) and the caption."""
        rng = rng or self.rng
        item = self.items[index]
        image, box = square_crop(load_rgb(item.image_path), self.resolution, self.center_crop, rng, Image.BICUBIC)
        if item.mask_path is not None:
            full_mask = load_mask(item.mask_path)
            scaled = full_mask.resize(
                (round(full_mask.size[0] * self.resolution / min(full_mask.size)),
                 round(full_mask.size[1] * self.resolution / min(full_mask.size))), Image.NEAREST)
            scaled = scaled.resize((max(self.resolution, scaled.size[0]), max(self.resolution, scaled.size[1])),
                                   Image.NEAREST)
            mask = scaled.crop(box)
        elif self.random_masks:
            mask = random_mask(self.resolution, self.resolution, rng)
        else:
            raise ConfigError(f"{item.image_path.name}: no mask and random_masks is false")
        return image, mask, self.prompt or item.caption

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask, caption = self.example(index)
        return {"pixel_values": to_tensor(image), "mask": to_tensor(mask), "caption": caption}


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),  # (B, 3, R, R)
        "mask": torch.stack([e["mask"] for e in examples]),  # (B, 1, R, R)
        "captions": [e["caption"] for e in examples],
    }


# -- models ---------------------------------------------------------------------------------------------
def load_components(config: GarmentFinetuneConfig) -> dict[str, Any]:
    """tokenizer, text_encoder, vae, unet, noise_scheduler from a hub id or local folder (diffusers layout)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    location = config.pretrained_model
    try:
        components = {
            "tokenizer": CLIPTokenizer.from_pretrained(location, subfolder="tokenizer"),
            "text_encoder": CLIPTextModel.from_pretrained(location, subfolder="text_encoder"),
            "vae": AutoencoderKL.from_pretrained(location, subfolder="vae"),
            "unet": UNet2DConditionModel.from_pretrained(location, subfolder="unet"),
            "noise_scheduler": DDPMScheduler.from_pretrained(location, subfolder="scheduler"),
        }
    except OSError as error:

        raise ModelUnavailableError(f"pretrained_model: {offline_hint(location)} ({error})") from error
    in_channels = components["unet"].config.in_channels
    if in_channels != 9:
        raise ConfigError(
            f"pretrained_model: {location} has a {in_channels}-channel UNet; the garment fine-tune needs an "
            f"inpainting model (9 channels), e.g. stable-diffusion-v1-5/stable-diffusion-inpainting"
        )
    return components


def add_lora(model: torch.nn.Module, config: GarmentFinetuneConfig, targets: list[str]) -> None:
    from peft import LoraConfig

    model.add_adapter(LoraConfig(
        r=config.lora_rank, lora_alpha=config.lora_alpha or config.lora_rank, lora_dropout=config.lora_dropout,
        init_lora_weights="gaussian", target_modules=targets,
    ))


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every LoRA layer into its base layer and remove the adapters (in place)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    if hasattr(model, "_hf_peft_config_loaded"):
        model._hf_peft_config_loaded = False
    return model


def build_pipeline(components: dict[str, Any], unet, text_encoder):
    from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline

    pipeline = StableDiffusionInpaintPipeline(
        vae=components["vae"], text_encoder=text_encoder, tokenizer=components["tokenizer"], unet=unet,
        scheduler=DDIMScheduler.from_config(components["noise_scheduler"].config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


# -- training -------------------------------------------------------------------------------------------
def train(context: TrainerContext) -> None:
    """The whole fine-tune, top to bottom."""
    config: GarmentFinetuneConfig = context.config  # type: ignore[assignment]

    # 1. device and precision
    accelerator, weight_dtype = setup_accelerator(config)

    # 2. data
    items = load_dataset(config.dataset, require_masks=config.require_masks, min_size=config.min_image_size,
                         extract_to=context.run_dir / "dataset")
    dataset = InpaintDataset(items, config.resolution, config.center_crop, config.random_masks, config.seed,
                             config.instance_prompt)
    unmasked = sorted(item.image_path.name for item in items if item.mask_path is None)
    if unmasked:
        if not config.random_masks:
            raise ConfigError(f"{len(unmasked)} image(s) have no mask and random_masks is false: "
                              f"{', '.join(unmasked[:5])}")
        logger.warning("%d of %d images have no mask: each gets a new random mask per step (set require_masks to "
                       "refuse them): %s", len(unmasked), len(items), ", ".join(unmasked[:10]))
    class_dataset = None
    if config.with_prior_preservation:
        class_items = load_dataset(config.class_data_dir, min_size=config.min_image_size)
        class_dataset = InpaintDataset(class_items, config.resolution, config.center_crop, True, config.seed + 1,
                                       config.class_prompt)
    loader = DataLoader(dataset, batch_size=config.train_batch_size, shuffle=True, collate_fn=collate,
                        num_workers=config.dataloader_workers,
                        generator=torch.Generator().manual_seed(config.seed))
    loader = shard(accelerator, loader)  # num_processes > 1: each process trains on its own shard

    # 3. models
    components = load_components(config)
    tokenizer, text_encoder = components["tokenizer"], components["text_encoder"]
    vae, unet, noise_scheduler = components["vae"], components["unet"], components["noise_scheduler"]
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.requires_grad_(not config.use_lora)
    if config.use_lora:
        add_lora(unet, config, LORA_TARGETS_UNET)
        if config.train_text_encoder:
            add_lora(text_encoder, config, LORA_TARGETS_TEXT)
    elif config.train_text_encoder:
        text_encoder.requires_grad_(True)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if config.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    trained = {"unet": unet, **({"text_encoder": text_encoder} if config.train_text_encoder else {})}
    # frozen parts in the autocast dtype (memory); trained weights stay fp32 for stable updates
    vae.to(accelerator.device, **({"dtype": weight_dtype} if weight_dtype != torch.float32 else {}))
    if not config.train_text_encoder:
        text_encoder.to(accelerator.device, dtype=weight_dtype)

    # 4. resume: weights before the optimizer sees them
    checkpoint, start_step = resume(config, trained)

    # 5. optimizer and schedule (the text encoder may have its own learning rate)
    groups = [{"params": [p for p in unet.parameters() if p.requires_grad], "lr": config.learning_rate}]
    if config.train_text_encoder:
        groups.append({"params": [p for p in text_encoder.parameters() if p.requires_grad],
                       "lr": config.text_encoder_lr or config.learning_rate})
    parameters = [p for group in groups for p in group["params"]]
    optimizer, lr_scheduler = make_optimizer(config, groups, checkpoint)
    if config.train_text_encoder:
        unet, text_encoder, optimizer, lr_scheduler = accelerator.prepare(unet, text_encoder, optimizer, lr_scheduler)
    else:
        unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)

    def modules() -> dict[str, Any]:
        found = {"unet": accelerator.unwrap_model(unet)}
        if config.train_text_encoder:
            found["text_encoder"] = accelerator.unwrap_model(text_encoder)
        return found

    save = checkpoint_saver(context, config, optimizer, lr_scheduler, modules,
                            {"base_model": config.pretrained_model, "use_lora": config.use_lora})
    class_rng = random.Random(config.seed + start_step)
    scaling = vae.config.scaling_factor

    def compute_loss(batch: dict[str, Any]) -> torch.Tensor:
        if class_dataset is not None:  # prior preservation: as many class images as instance images
            extra = collate([class_dataset[class_rng.randrange(len(class_dataset))] for _ in batch["captions"]])
            batch = {key: (torch.cat([batch[key], extra[key]]) if key != "captions" else batch[key] + extra[key])
                     for key in batch}
        return training_loss(batch, config, vae, unet, text_encoder, tokenizer, noise_scheduler, scaling,
                             weight_dtype, accelerator.device, class_dataset is not None)

    def sample(step: int) -> list[Path]:
        return write_samples(context, config, components, accelerator, unet, text_encoder, dataset, step)

    # 6. the loop
    unet.train()
    models = (unet, text_encoder) if config.train_text_encoder else unet
    step = train_loop(context, config, accelerator, models, optimizer, lr_scheduler, parameters, endless(loader),
                      compute_loss, save, sample, start_step)

    # 7. export on the main process once every rank is done (also when a resumed run had nothing left to do)
    export_on_main(context, accelerator, export_final, context, config, components, accelerator.unwrap_model(unet),
                   accelerator.unwrap_model(text_encoder), items, step)


def training_loss(batch, config: GarmentFinetuneConfig, vae, unet, text_encoder, tokenizer, noise_scheduler,
                  scaling: float, weight_dtype, device, with_prior: bool) -> torch.Tensor:
    """Denoising MSE on the 9-channel inpainting input; optional mask weighting and prior split."""
    pixels = batch["pixel_values"].to(device, weight_dtype)  # (B, 3, R, R)
    mask = batch["mask"].to(device, weight_dtype)  # (B, 1, R, R), 1 = inpaint
    masked_pixels = pixels * (mask < 0.5)  # what the pipeline feeds at inference
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.sample() * scaling  # (B, 4, R/8, R/8)
        masked_latents = vae.encode(masked_pixels).latent_dist.sample() * scaling  # (B, 4, R/8, R/8)
    latent_mask = F.interpolate(mask, size=latents.shape[-2:])  # (B, 1, R/8, R/8)
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    model_input = torch.cat([noisy, latent_mask, masked_latents], dim=1)  # (B, 9, R/8, R/8)
    text_context = encode_prompts(tokenizer, text_encoder, batch["captions"], device)
    prediction = unet(model_input.float() if weight_dtype == torch.float32 else model_input, timesteps,
                      text_context).sample
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    error = (prediction.float() - target.float()) ** 2  # (B, 4, R/8, R/8)
    if config.masked_loss:
        error = error * (1.0 + (config.masked_loss_weight - 1.0) * latent_mask.float())
    if with_prior:
        instance_error, prior_error = error.chunk(2)
        return instance_error.mean() + config.prior_loss_weight * prior_error.mean()
    return error.mean()


# -- samples and export ---------------------------------------------------------------------------------
@torch.no_grad()
def write_samples(context: TrainerContext, config: GarmentFinetuneConfig, components: dict[str, Any],
                  accelerator, unet, text_encoder, dataset: InpaintDataset, step: int) -> list[Path]:
    """Inpaint the first training image's mask with each sample prompt, fixed seeds; PNG per prompt."""
    from PIL.PngImagePlugin import PngInfo

    plain_unet = accelerator.unwrap_model(unet)
    plain_text = accelerator.unwrap_model(text_encoder)
    was_training = plain_unet.training
    plain_unet.eval()
    plain_text.eval()
    try:
        pipeline = build_pipeline(components, plain_unet, plain_text)
        image, mask, caption = dataset.example(0, random.Random(config.sample_seed))
        prompts = config.sample_prompts or [caption]
        paths = []
        for index, prompt in enumerate(prompts):
            generator = torch.Generator(device="cpu").manual_seed(config.sample_seed + index)
            with accelerator.autocast():
                result = pipeline(prompt=prompt, image=image, mask_image=mask, height=config.resolution,
                                  width=config.resolution, num_inference_steps=config.sample_steps,
                                  guidance_scale=7.5, generator=generator).images[0]
            info = PngInfo()
            info.add_text("parameters", json.dumps({"prompt": prompt, "seed": config.sample_seed + index,
                                                    "step": step, "run_id": context.run_id}))
            path = context.samples_dir / f"step-{step:08d}-{index}.png"
            result.save(path, pnginfo=info)
            paths.append(path)
        logger.info("samples at step %d: %s", step, ", ".join(p.name for p in paths))
        return paths
    finally:
        if was_training:
            plain_unet.train()
        if config.train_text_encoder:
            plain_text.train()


def export_final(context: TrainerContext, config: GarmentFinetuneConfig, components: dict[str, Any], unet,
                 text_encoder, items: list[DatasetItem], step: int) -> Path:
    """``final/``: an inpainting pipeline folder (safetensors) + LoRA adapter (if any) + atelier_model.json."""
    final = context.final_dir
    final.mkdir(parents=True, exist_ok=True)
    for model in (unet, text_encoder, components["vae"]):
        if model.dtype != torch.float32:
            model.to(torch.float32)
    if config.use_lora:
        from diffusers import StableDiffusionInpaintPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        unet_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        text_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder)) \
            if config.train_text_encoder else None
        StableDiffusionInpaintPipeline.save_lora_weights(
            final, unet_lora_layers=unet_layers, text_encoder_lora_layers=text_layers,
            weight_name=LORA_WEIGHTS_FILE, safe_serialization=True,
        )
        merge_lora(unet)
        if config.train_text_encoder:
            merge_lora(text_encoder)
    pipeline = build_pipeline(components, unet, text_encoder)
    pipeline.save_pretrained(final, safe_serialization=True)
    captions = Counter(config.instance_prompt or item.caption for item in items)
    prompt = captions.most_common(1)[0][0]
    card = {
        "kind": "garment_model",
        "method": METHOD,
        "base_model": config.pretrained_model,
        "prompt": prompt,
        "trigger": prompt,
        "captions": sorted(captions),
        "pipeline_class": "StableDiffusionInpaintPipeline",
        "format": "diffusers",
        "weights": {},  # the whole folder is the model (listed in the Try-on tab)
        "lora": config.use_lora,
        "lora_weights": LORA_WEIGHTS_FILE if config.use_lora else None,
        "train_text_encoder": config.train_text_encoder,
        "resolution": config.resolution,
        "masks": {"given": sum(item.mask_path is not None for item in items),
                  "random": sum(item.mask_path is None for item in items)},
        "steps": step,
        "run_id": context.run_id,
    }
    write_model_card(final, card)
    logger.info("final model written to %s", final)
    return final


def main(argv: list[str] | None = None) -> int:
    return run_cli(METHOD, GarmentFinetuneConfig, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
