"""AnyDressing training: per-slot garment LoRAs + Dressing-Attention K'/V', bootstrapped from IMAGDressing-v1.

What trains (everything else frozen, as in the paper):
- GarmentsNet (the garment UNet, run once at t=0 over the N garments): one LoRA set per garment CATEGORY
  (``slot_labels``, default: the categories found in the dataset) on every self-attention Q, K, V;
- DressingNet (the frozen base UNet): the Dressing-Attention K'/V' (``to_k_ref``/``to_v_ref``) of every attn1,
  from the IMAGDressing checkpoint (``init_checkpoint``) or initialised from the frozen W_k/W_v.

Loss (``L = L_ldm + (loc_weight / m) L_loc + texture_weight L_texture``, m = garments in the sample):
- L_ldm: the usual noise MSE.
- L_loc (Instance-Level Garment Localization): per DA layer, A_k = the attention mass a pixel's query puts on
  garment k's tokens; ``mean_k ||A_k - M_k||^2`` with M_k the garment's mask in the target area-resized to the
  layer; averaged over the DA layers whose query count is <= ``loc_max_tokens`` (the full-resolution layers
  would materialise (HW x N*HW) maps per head).
  **Background remedy** (the paper's open question: with a softmax over garment tokens only, sum_k A_k = 1,
  so background pixels can never reach their all-zero target). ``loc_normalization: joint`` (default)
  computes the SUPERVISED probabilities jointly over the layer's own self-attention keys and the garment
  keys: softmax(Q [K; K']^T / sqrt d) restricted to the garment columns. A background pixel can then put its
  mass on the person's own tokens and reach A_k = 0, while the ratio between garments (which garment a pixel
  belongs to) is exactly the ratio of the separate softmax. The FORWARD pass is unchanged (two separate
  softmaxes), so the trained weights mean the same thing in the pipeline and IMAGDressing weights stay
  valid; a null key would have changed the forward (a new parameter the pipeline and the released weights
  do not have). ``loc_normalization: garments`` is the paper-literal form, kept for comparison.
- L_texture (Garment-Enhanced Texture Learning), only for rows with t <= ``texture_max_timestep`` (350):
  x0 predicted in one step and decoded; ``L_hf = mean_k ||I_hat*M'_k - I*M'_k||^2`` with M'_k = M_k * Canny(I)
  (always on); ``L_perc = mean_k DISTS(I_hat*M_k, I*M_k)`` only when ``perceptual_weights`` names a
  TorchScript distance module (DISTS weights are not available offline; without it the log says L_perc is
  skipped and L_texture = L_hf).

Dataset (a folder or .zip; one sub-folder per sample)::

    <sample>/target.png                  the dressed person (png/jpg/jpeg/webp)
    <sample>/garment_<k>_<category>.png  garment k = 0..N-1 (N <= 4), category in pipelines.dressing.pipeline.GARMENT_CATEGORIES
    <sample>/mask_<k>.png                white = where garment k is in the target (the target's size)
    <sample>/prompt.txt                  optional caption (default: ``default_prompt``)

Output ``final/``: ``slot_loras.safetensors`` (:func:`save_slot_loras`; ``DressingPipeline(slot_loras_path=...)``),
``imagdressing.safetensors`` in the IMAGDressing layout (``ref_unet.*``, ``proj.*``,
``adapter_modules.<i>.to_k_ref/to_v_ref.weight``; :func:`load_imagdressing` loads it), ``atelier_model.json``.

Run alone:  python -m training.dressing --config cfg.yaml [--run-id ID --store DB]
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pipelines.core.attention import (
    MixedAttnProcessor,
    PlainAttnProcessor,
    merge_heads,
    processor_names,
    project_out,
    split_heads,
)
from pipelines.core.sampling import encode_prompts, image_to_tensor, mask_to_tensor
from pipelines.dressing.checkpoints import SlotLoRAs, dressing_processors, load_imagdressing, save_slot_loras
from pipelines.dressing.pipeline import DressingPipeline, GarmentEncoderState, GarmentSelfAttnProcessor, fit_on_white
from pipelines.dressing.resampler import Resampler, ResamplerConfig
from pipelines.preprocess.framing import fit_mask, fit_to_canvas
from pipelines.types import GARMENT_CATEGORIES, MAX_GARMENTS, DressingRequest, Garment
from training.common import TrainerContext, endless, run_cli, write_model_card
from training.concat_inpaint_finetune import load_model_part
from training.config import ConfigError, DressingConfig
from training.datasets import IMAGE_SUFFIXES, DatasetError, load_mask, load_rgb, prepare_dataset_dir
from training.toolkit import (
    checkpoint_saver,
    export_on_main,
    make_optimizer,
    resume,
    setup_accelerator,
    train_loop,
)

logger = logging.getLogger(__name__)

METHOD = "dressing"
SLOT_LORA_FILE = "slot_loras.safetensors"
CHECKPOINT_FILE = "imagdressing.safetensors"
_GARMENT = re.compile(r"^garment_(\d+)_([a-z]+)$")
_MASK = re.compile(r"^mask_(\d+)$")


# -- data -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DressingSample:
    target: Path
    garments: tuple[Path, ...]
    categories: tuple[str, ...]
    masks: tuple[Path, ...]
    prompt: str | None


def _sample_root(folder: Path) -> Path:
    entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir() and not any(p.name.startswith("target.") for p in entries[0].iterdir()):
        return _sample_root(entries[0])  # a zip's wrapper folder
    return folder


def _read_sample(folder: Path, root: Path, min_size: int) -> DressingSample:
    target, prompt = None, None
    garments: dict[int, tuple[Path, str]] = {}
    masks: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        relative = path.relative_to(root)
        if path.name.startswith("."):
            continue
        if path.is_dir():
            raise DatasetError(f"{relative}: unexpected folder inside a sample")
        stem, suffix = path.stem, path.suffix.lower()
        if path.name == "prompt.txt":
            prompt = path.read_text(encoding="utf-8").strip() or None
            continue
        if suffix not in IMAGE_SUFFIXES:
            raise DatasetError(f"{relative}: not an image (allowed: {', '.join(IMAGE_SUFFIXES)}; prompt.txt)")
        if stem == "target":
            if target is not None:
                raise DatasetError(f"{relative}: a second target image ({target.name} too)")
            target = path
        elif match := _GARMENT.match(stem):
            index, category = int(match.group(1)), match.group(2)
            if category not in GARMENT_CATEGORIES:
                raise DatasetError(f"{relative}: unknown category {category!r} (use {', '.join(GARMENT_CATEGORIES)})")
            if index in garments:
                raise DatasetError(f"{relative}: a second garment {index} ({garments[index][0].name} too)")
            garments[index] = (path, category)
        elif match := _MASK.match(stem):
            masks[int(match.group(1))] = path
        else:
            raise DatasetError(f"{relative}: unexpected file name (expected target.png, garment_<k>_<category>.png, "
                               "mask_<k>.png or prompt.txt)")
    name = folder.relative_to(root)
    if target is None:
        raise DatasetError(f"{name}/: no target image (target.png)")
    if not garments:
        raise DatasetError(f"{name}/: no garment images (garment_0_<category>.png ...)")
    if sorted(garments) != list(range(len(garments))):
        raise DatasetError(f"{name}/: garments must be numbered 0..{len(garments) - 1}, found {sorted(garments)}")
    if len(garments) > MAX_GARMENTS:
        raise DatasetError(f"{name}/: {len(garments)} garments; at most {MAX_GARMENTS}")
    for index in sorted(set(masks) - set(garments)):
        raise DatasetError(f"{masks[index].relative_to(root)}: no garment {index} for this mask")
    image = load_rgb(target)
    if min(image.size) < min_size:
        raise DatasetError(f"{target.relative_to(root)}: {image.size[0]}x{image.size[1]} px is too small "
                           f"(shorter side must be >= {min_size})")
    for index, (garment, _) in garments.items():
        load_rgb(garment)
        if index not in masks:
            raise DatasetError(f"{garment.relative_to(root)}: no mask_{index}.png for this garment")
        mask = load_mask(masks[index])
        if mask.size != image.size:
            raise DatasetError(f"{masks[index].relative_to(root)}: mask is {mask.size[0]}x{mask.size[1]} but "
                               f"{target.name} is {image.size[0]}x{image.size[1]}")
        if mask.getextrema()[1] == 0:
            raise DatasetError(f"{masks[index].relative_to(root)}: mask is empty (all black)")
    order = sorted(garments)
    return DressingSample(target, tuple(garments[i][0] for i in order), tuple(garments[i][1] for i in order),
                          tuple(masks[i] for i in order), prompt)


def load_dressing_dataset(source: str | Path, min_size: int = 32, extract_to: str | Path | None = None) -> list[DressingSample]:
    """Validate and list the samples; DatasetError naming the first bad file."""
    root = _sample_root(prepare_dataset_dir(source, extract_to))
    samples = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or path.name == "__MACOSX" or path.name == ".atelier_extracted":
            continue
        if not path.is_dir():
            raise DatasetError(f"{path.relative_to(root)}: expected one folder per sample "
                               "(<sample>/target.png, garment_<k>_<category>.png, mask_<k>.png)")
        samples.append(_read_sample(path, root, min_size))
    if not samples:
        raise DatasetError(f"dataset {Path(source).name}: no sample folders")
    logger.info("dataset %s: %d samples, %d garments", root, len(samples), sum(len(s.garments) for s in samples))
    return samples


def write_tiny_dressing_dataset(folder: str | Path, count: int = 2, size: tuple[int, int] = (48, 64),
                                categories: tuple[str, ...] = ("upper", "lower")) -> Path:
    """A tiny valid dataset (random textures, rectangle garments) for tests and the tiny preset."""
    folder = Path(folder)
    rng = np.random.default_rng(0)
    width, height = size
    for sample in range(count):
        directory = folder / f"sample_{sample:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        target = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        bands = len(categories)
        for k, category in enumerate(categories):
            garment = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
            garment.save(directory / f"garment_{k}_{category}.png")
            mask = Image.new("L", size, 0)
            top, bottom = k * height // bands, (k + 1) * height // bands - 1
            ImageDraw.Draw(mask).rectangle((width // 6, top, width * 5 // 6, bottom), fill=255)
            mask.save(directory / f"mask_{k}.png")
            target.paste(garment.crop((0, 0, width, bottom - top + 1)), (0, top), mask.crop((0, top, width, bottom + 1)))
        target.save(directory / "target.png")
        (directory / "prompt.txt").write_text("a woman in a studio")
    return folder


class DressingDataset(Dataset):
    """-> target (3, H, W) in [-1, 1], masks (N, 1, H, W), edges (1, H, W) in {0, 1}, prepared garments (PIL),
    categories, prompt. Target and masks are centre-cropped to the canvas; garments fitted on white as in the
    pipeline."""

    def __init__(self, samples: list[DressingSample], config: DressingConfig):
        self.samples, self.config = samples, config

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import cv2


        config, sample = self.config, self.samples[index]
        width, height = config.width, config.height
        target, info = fit_to_canvas(load_rgb(sample.target), width, height, "crop")
        masks = [fit_mask(load_mask(path), width, height, info=info)[0] for path in sample.masks]
        grey = cv2.cvtColor(np.asarray(target), cv2.COLOR_RGB2GRAY)
        edges = torch.from_numpy((cv2.Canny(grey, config.canny_low, config.canny_high) > 0).astype(np.float32))
        return {
            "target": image_to_tensor(target, width, height)[0],
            "masks": torch.cat([mask_to_tensor(mask, width, height)[0] for mask in masks])[:, None],
            "edges": edges[None],
            "garments": [fit_on_white(load_rgb(path), width, height) for path in sample.garments],
            "categories": list(sample.categories),
            "prompt": sample.prompt or config.default_prompt,
        }


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "target": torch.stack([e["target"] for e in examples]),  # (B, 3, H, W)
        "edges": torch.stack([e["edges"] for e in examples]),  # (B, 1, H, W)
        "masks": [e["masks"] for e in examples],  # per sample (N_b, 1, H, W)
        "garments": [e["garments"] for e in examples],
        "categories": [e["categories"] for e in examples],
        "prompts": [e["prompt"] for e in examples],
    }


# -- Dressing-Attention with the localization loss (training only) --------------------------------------
@dataclass
class DressingTrainState:
    """Per-step inputs and outputs of every :class:`DressingTrainProcessor`."""

    references: dict[str, torch.Tensor]  # name -> (B, L_ref, C) padded F_all with gradient to the slot LoRAs
    token_owner: torch.Tensor  # (B, L_ref) garment index of each reference token, -1 = padding
    row_gate: torch.Tensor  # (B,) 0 for rows whose condition is dropped
    masks: torch.Tensor  # (B, N_max, 1, H, W) garment masks (zeros for padding garments)
    garment_valid: torch.Tensor  # (B, N_max) bool
    latent_size: tuple[int, int]
    scale: float
    normalization: str
    loc_max_tokens: int
    loc_losses: list  # per DA layer used: (B,) localization loss


class DressingTrainProcessor:
    """Self-attention + scale * softmax(Q K'^T) V' over the padded F_all; records L_loc on the small layers.

    The forward is exactly :class:`MixedAttnProcessor`'s (two separate softmaxes) so what trains is what the
    pipeline runs; only the supervised probabilities of L_loc are normalised as ``loc_normalization`` says.
    A plain object (not an nn.Module) so the frozen UNet's parameters stay its own.
    """

    def __init__(self, name: str, weights: MixedAttnProcessor, state: DressingTrainState | None = None) -> None:
        self.name, self.weights, self.state = name, weights, state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        state = self.state
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        out = F.scaled_dot_product_attention(*(split_heads(x, attn.heads) for x in (query, key, value)))
        reference = state.references.get(self.name) if state is not None else None
        if reference is None or state.scale == 0:
            return project_out(attn, merge_heads(out))
        q = split_heads(query, attn.heads)  # (B, h, L, d)
        k_ref = split_heads(self.weights.to_k_ref(reference.to(query.dtype)), attn.heads)  # (B, h, L_ref, d)
        v_ref = split_heads(self.weights.to_v_ref(reference.to(query.dtype)), attn.heads)
        valid = state.token_owner >= 0  # (B, L_ref)
        tokens = q.shape[2]
        if tokens <= state.loc_max_tokens:
            scale = q.shape[-1] ** -0.5
            logits = (q @ k_ref.transpose(-1, -2)) * scale  # (B, h, L, L_ref)
            logits = logits.masked_fill(~valid[:, None, None, :], float("-inf"))
            probabilities = logits.softmax(-1)
            extra = probabilities @ v_ref
            if state.normalization == "joint":
                self_logits = (q @ split_heads(key, attn.heads).transpose(-1, -2)) * scale  # (B, h, L, L)
                supervised = torch.cat([self_logits, logits], dim=-1).softmax(-1)[..., self_logits.shape[-1]:]
            else:
                supervised = probabilities
            state.loc_losses.append(self.localization_loss(supervised.float().mean(1), tokens))
        else:
            extra = F.scaled_dot_product_attention(q, k_ref, v_ref, attn_mask=valid[:, None, None, :])
        gate = state.row_gate.to(out.dtype)[:, None, None, None]
        return project_out(attn, merge_heads(out + state.scale * gate * extra))

    def localization_loss(self, probabilities: torch.Tensor, tokens: int) -> torch.Tensor:
        """(B, L, L_ref) head-averaged probabilities -> (B,) mean_k ||A_k - M_k||^2 over the valid garments."""
        state = self.state
        height, width = state.latent_size
        factor = 1
        while math.ceil(height / factor) * math.ceil(width / factor) > tokens:
            factor *= 2
        size = (math.ceil(height / factor), math.ceil(width / factor))
        if size[0] * size[1] != tokens:
            raise ValueError(f"{self.name}: cannot map {tokens} query tokens onto the {height}x{width} latent")
        owners = state.token_owner  # (B, L_ref)
        count = state.garment_valid.shape[1]
        one_hot = (owners[..., None] == torch.arange(count, device=owners.device)).to(probabilities.dtype)
        mass = probabilities @ one_hot  # (B, L, N_max): A_k per pixel
        batch = state.masks.shape[0]
        targets = F.interpolate(state.masks.flatten(0, 1).float(), size=size, mode="area")  # (B*N, 1, h, w)
        targets = targets.view(batch, count, -1).transpose(1, 2)  # (B, L, N_max)
        error = ((mass - targets) ** 2).mean(1)  # (B, N_max)
        garment_valid = state.garment_valid.to(error.dtype)
        return (error * garment_valid).sum(1) / garment_valid.sum(1).clamp(min=1)


# -- models ---------------------------------------------------------------------------------------------
def load_components(config: DressingConfig) -> dict[str, Any]:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    base = config.pretrained_model
    unet = load_model_part(UNet2DConditionModel, base, "unet", "pretrained_model")
    if unet.config.in_channels != 4:
        raise ConfigError(f"pretrained_model: {base} has a {unet.config.in_channels}-channel UNet; dressing needs a "
                          "text-to-image SD1.5 model (4 channels)")
    vae = load_model_part(AutoencoderKL, config.vae, None, "vae") if config.vae \
        else load_model_part(AutoencoderKL, base, "vae", "pretrained_model")
    subfolder = config.image_encoder_subfolder
    return {
        "unet": unet, "vae": vae,
        "tokenizer": load_model_part(CLIPTokenizer, base, "tokenizer", "pretrained_model"),
        "text_encoder": load_model_part(CLIPTextModel, base, "text_encoder", "pretrained_model"),
        "noise_scheduler": load_model_part(DDPMScheduler, base, "scheduler", "pretrained_model"),
        "image_encoder": load_model_part(CLIPVisionModelWithProjection, config.image_encoder, subfolder, "image_encoder"),
        "image_processor": load_model_part(CLIPImageProcessor, config.image_encoder, subfolder, "image_encoder"),
    }


def dressing_parts(config: DressingConfig, unet, image_encoder):
    """(garment UNet, Resampler, DA processors) from the IMAGDressing checkpoint or initialised from the base."""
    from diffusers import UNet2DConditionModel


    garment_unet = UNet2DConditionModel.from_config(unet.config)
    if config.init_checkpoint:
        resampler, processors, _ = load_imagdressing(Path(config.init_checkpoint).expanduser(), garment_unet, unet)
        return garment_unet, resampler, processors
    garment_unet.load_state_dict(unet.state_dict())
    dim = unet.config.cross_attention_dim
    resampler = Resampler(ResamplerConfig(dim=dim, depth=4, heads=max(1, dim // 64), dim_head=64, num_queries=16,
                                          embedding_dim=image_encoder.config.hidden_size, output_dim=dim, ff_mult=4))
    logger.warning("no init_checkpoint: the Resampler is untrained (frozen) -- start from IMAGDressing weights for "
                   "useful garment tokens")
    processors = dressing_processors(unet)
    for name, processor in processors.items():
        processor.init_from(unet.get_submodule(name.rsplit(".processor", 1)[0]))
    return garment_unet, resampler, processors


def load_perceptual(config: DressingConfig):
    if not config.perceptual_weights:
        logger.info("L_perc skipped: no perceptual weights configured (perceptual_weights: null; DISTS weights are "
                    "not available offline) -- L_texture = L_hf only")
        return None
    module = torch.jit.load(str(Path(config.perceptual_weights).expanduser()), map_location="cpu").eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    logger.info("L_perc on: %s", config.perceptual_weights)
    return module


@torch.no_grad()
def garment_inputs(batch, components, resampler, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """All garments of the batch (G = sum N_b): VAE latents (G, 4, h, w) (mean, as the pipeline) and Resampler
    tokens (G, 16, D) from CLIP ``hidden_states[-2]`` of the garments padded to squares."""

    garments = [g for row in batch["garments"] for g in row]
    vae, encoder = components["vae"], components["image_encoder"]
    pixels = torch.cat([image_to_tensor(g, g.width, g.height) for g in garments]).to(device, vae.dtype)
    latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
    squares = [fit_on_white(g, max(g.size), max(g.size)) for g in garments]
    clip_pixels = components["image_processor"](images=squares, return_tensors="pt").pixel_values
    hidden = encoder(clip_pixels.to(device, encoder.dtype), output_hidden_states=True).hidden_states[-2]
    return latents.to(dtype), resampler(hidden.to(dtype))


def training_losses(batch, config: DressingConfig, parts: dict[str, Any], device, dtype,
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One forward: {"loss", "ldm", "loc", "hf", "perc"} (scalars)."""

    components, loras = parts["components"], parts["slot_loras"]
    vae, unet, noise_scheduler = components["vae"], components["unet"], components["noise_scheduler"]
    target = batch["target"].to(device, dtype)  # (B, 3, H, W)
    rows = target.shape[0]
    counts = [len(row) for row in batch["garments"]]
    dropped = torch.rand(rows, generator=generator) < config.drop_condition_prob  # (B,)
    with torch.no_grad():
        latents = vae.encode(target).latent_dist.sample() * vae.config.scaling_factor  # (B, 4, h, w)
        garment_latents, tokens = garment_inputs(batch, components, parts["resampler"], device, dtype)
        prompts = ["" if drop else prompt for drop, prompt in zip(dropped.tolist(), batch["prompts"])]
        context = encode_prompts(components["tokenizer"], components["text_encoder"], prompts).to(dtype)

    # GarmentsNet at t=0 with each garment's slot LoRA; every attn1 records its (G, HW, C) input with gradient
    garment_state = parts["garment_state"]
    garment_state.store = {}
    slot_ids = [loras.slot_for(i, category) for row in batch["categories"] for i, category in enumerate(row)]
    garment_state.slot_ids = torch.tensor(slot_ids, device=device)
    parts["garment_unet"](garment_latents, torch.zeros(len(slot_ids), dtype=torch.long, device=device), tokens)

    # F_all per row: its garments' tokens concatenated, padded to the longest row
    count_max = max(counts)
    starts = np.cumsum([0] + counts)
    references = {}
    for name, recorded in garment_state.store.items():
        hw, channels = recorded.shape[1], recorded.shape[2]
        padded = recorded.new_zeros(rows, count_max * hw, channels)
        for row in range(rows):
            padded[row, : counts[row] * hw] = recorded[starts[row]: starts[row + 1]].reshape(-1, channels)
        references[name] = padded
    masks = torch.zeros(rows, count_max, *batch["masks"][0].shape[1:], device=device)
    valid = torch.zeros(rows, count_max, dtype=torch.bool, device=device)
    for row, row_masks in enumerate(batch["masks"]):
        masks[row, : counts[row]] = row_masks.to(device)
        valid[row, : counts[row]] = not bool(dropped[row])
    state: DressingTrainState = parts["train_state"]
    state.references, state.masks, state.garment_valid = references, masks, valid
    state.row_gate = (~dropped).to(device)
    state.latent_size = tuple(latents.shape[-2:])
    state.loc_losses = []
    owners_by_hw: dict[int, torch.Tensor] = {}

    def owners(hw: int) -> torch.Tensor:
        if hw not in owners_by_hw:
            table = torch.full((rows, count_max * hw), -1, dtype=torch.long, device=device)
            for row in range(rows):
                table[row, : counts[row] * hw] = torch.arange(counts[row], device=device).repeat_interleave(hw)
            owners_by_hw[hw] = table
        return owners_by_hw[hw]

    # each resolution has its own token count per garment, hence its own owner table
    per_layer = {name: owners(ref.shape[1] // count_max) for name, ref in references.items()}

    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (rows,), device=device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    with owner_tables(parts["train_processors"], per_layer, state):
        prediction = unet(noisy, timesteps, context).sample
    if noise_scheduler.config.prediction_type == "v_prediction":
        goal = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        goal = noise
    ldm = F.mse_loss(prediction.float(), goal.float())
    zero = ldm.new_zeros(())
    m = torch.tensor(counts, dtype=torch.float32, device=device)
    keep = (~dropped).to(device, torch.float32)
    loc = torch.stack(state.loc_losses).mean(0) if state.loc_losses else torch.zeros(rows, device=device)
    loc_term = (config.loc_weight / m * loc * keep).sum() / keep.sum().clamp(min=1)

    # texture: one-step x0 for rows with t <= texture_max_timestep, decoded and compared on the garments
    hf, perc = zero, zero
    texture_rows = (timesteps <= config.texture_max_timestep) & (~dropped).to(device)
    if config.texture_weight > 0 and bool(texture_rows.any()):
        index = texture_rows.nonzero().flatten()
        alpha = noise_scheduler.alphas_cumprod.to(device)[timesteps[index]].float()[:, None, None, None]
        x_t, predicted = noisy[index].float(), prediction[index].float()
        if noise_scheduler.config.prediction_type == "v_prediction":
            x0 = alpha.sqrt() * x_t - (1 - alpha).sqrt() * predicted
        else:
            x0 = (x_t - (1 - alpha).sqrt() * predicted) / alpha.sqrt()
        decoded = vae.decode((x0 / vae.config.scaling_factor).to(vae.dtype)).sample.float()  # (b, 3, H, W)
        real = target[index].float()
        garment_masks = masks[index].float()  # (b, N, 1, H, W)
        high = garment_masks * batch["edges"].to(device)[index][:, None].float()
        weight = valid[index].float()
        per_garment = (((decoded[:, None] - real[:, None]) * high) ** 2).flatten(2).mean(-1)  # (b, N)
        hf = ((per_garment * weight).sum(1) / weight.sum(1).clamp(min=1)).mean()
        perceptual = parts.get("perceptual")
        if perceptual is not None:
            b, n = garment_masks.shape[:2]
            fake = ((decoded[:, None] * garment_masks + 1) / 2).clamp(0, 1).flatten(0, 1)
            true = ((real[:, None] * garment_masks + 1) / 2).clamp(0, 1).flatten(0, 1)
            distance = perceptual(fake, true).float().view(b, n)
            perc = ((distance * weight).sum(1) / weight.sum(1).clamp(min=1)).mean()
    loss = ldm + loc_term + config.texture_weight * (hf + perc)
    return {"loss": loss, "ldm": ldm.detach(), "loc": (loc * keep).sum().detach() / keep.sum().clamp(min=1),
            "hf": hf.detach(), "perc": perc.detach()}


class owner_tables:
    """Give each DA processor the token-owner table of its own layer for one UNet call."""

    def __init__(self, processors: dict[str, DressingTrainProcessor], tables: dict[str, torch.Tensor],
                 state: DressingTrainState):
        self.processors, self.tables, self.state = processors, tables, state

    def __enter__(self):
        # the states stay installed after the call: gradient checkpointing re-runs the forward in backward
        for processor in self.processors.values():
            processor.state = None
        for name, table in self.tables.items():
            layer_state = DressingTrainState(**{**self.state.__dict__, "token_owner": table})
            layer_state.loc_losses = self.state.loc_losses  # shared list
            self.processors[name].state = layer_state
        return self

    def __exit__(self, *exc):
        return False


# -- training -------------------------------------------------------------------------------------------
def train(context: TrainerContext) -> None:
    """The whole training, top to bottom."""

    config: DressingConfig = context.config  # type: ignore[assignment]

    # 1. device and precision
    accelerator, weight_dtype = setup_accelerator(config)
    device = accelerator.device

    # 2. data
    samples = load_dressing_dataset(config.dataset, config.min_image_size, context.run_dir / "dataset")
    dataset = DressingDataset(samples, config)
    loader = DataLoader(dataset, batch_size=config.train_batch_size, shuffle=True, collate_fn=collate,
                        num_workers=config.dataloader_workers, generator=torch.Generator().manual_seed(config.seed))
    labels = list(config.slot_labels) or sorted({c for s in samples for c in s.categories})
    unknown = sorted({c for s in samples for c in s.categories} - set(labels))
    if unknown:
        logger.warning("garments of categories %s get no slot LoRA (slot_labels: %s)", unknown, labels)

    # 3. models: everything frozen except the slot LoRAs and K'/V'
    components = load_components(config)
    unet = components["unet"]
    garment_unet, resampler, processors = dressing_parts(config, unet, components["image_encoder"])
    for module in (unet, garment_unet, resampler, components["vae"], components["text_encoder"],
                   components["image_encoder"]):
        module.requires_grad_(False)
        module.to(device, **({"dtype": weight_dtype} if weight_dtype != torch.float32 else {}))
    slot_loras = SlotLoRAs.for_unet(garment_unet, labels, config.lora_rank, config.lora_alpha).to(device)
    dressing = nn.ModuleDict({name.replace(".", "__"): p for name, p in processors.items()}).to(device)
    dressing.requires_grad_(True)
    slot_loras.requires_grad_(True)
    garment_state = GarmentEncoderState(loras=slot_loras)
    garment_unet.set_attn_processor({
        name: GarmentSelfAttnProcessor(name, garment_state) if ".attn1." in name else PlainAttnProcessor()
        for name in processor_names(garment_unet)
    })
    train_processors = {name: DressingTrainProcessor(name, processor) for name, processor in processors.items()}
    unet.set_attn_processor({name: train_processors.get(name, PlainAttnProcessor()) for name in processor_names(unet)})
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        garment_unet.enable_gradient_checkpointing()
    unet.train()
    garment_unet.train()
    train_state = DressingTrainState({}, torch.empty(0), torch.empty(0), torch.empty(0), torch.empty(0), (0, 0),
                                     config.garment_scale, config.loc_normalization, config.loc_max_tokens, [])
    parts = {"components": components, "garment_unet": garment_unet, "resampler": resampler,
             "slot_loras": slot_loras, "garment_state": garment_state, "train_state": train_state,
             "train_processors": train_processors, "perceptual": load_perceptual(config)}
    if parts["perceptual"] is not None:
        parts["perceptual"].to(device)
    trained = {"slot_loras": slot_loras, "dressing": dressing}
    parameters = [p for model in trained.values() for p in model.parameters()]
    logger.info("slot LoRAs %s (rank %d) + Dressing-Attention K'/V': %.2fM trainable parameters", labels,
                config.lora_rank, sum(p.numel() for p in parameters) / 1e6)

    # 4. resume: weights before the optimizer sees them
    def check_labels(state: dict[str, Any]) -> None:
        saved_labels = state.get("slot_labels")
        if saved_labels is not None and saved_labels != labels:
            raise ConfigError(f"resume_from: the checkpoint has slot LoRAs {saved_labels}, this run {labels}")

    checkpoint, start_step = resume(config, trained, check_labels)

    # 5. optimizer and schedule
    optimizer, lr_scheduler = make_optimizer(config, parameters, checkpoint)
    optimizer, lr_scheduler = accelerator.prepare(optimizer, lr_scheduler)
    save = checkpoint_saver(context, config, optimizer, lr_scheduler, lambda: trained,
                            {"base_model": config.pretrained_model, "slot_labels": labels})
    generator = torch.Generator().manual_seed(config.seed + start_step)

    def compute_loss(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with accelerator.autocast():
            losses = training_losses(batch, config, parts, device, weight_dtype, generator)
        return {"loss": losses["loss"], **{f"loss_{name}": losses[name] for name in ("ldm", "loc", "hf", "perc")}}

    def sample(step: int) -> list[Path]:
        return write_samples(context, config, parts, processors, dataset, step)

    # 6. the loop
    step = train_loop(context, config, accelerator, slot_loras, optimizer, lr_scheduler, parameters, endless(loader),
                      compute_loss, save, sample, start_step)

    # 7. export on the main process once every rank is done (also when a resumed run had nothing left to do)
    export_on_main(context, accelerator, export_final, context, config, parts, processors, labels, step)


# -- samples and export ---------------------------------------------------------------------------------
def build_pipeline(config: DressingConfig, parts: dict[str, Any], processors: dict[str, MixedAttnProcessor]):
    """The studio's DressingPipeline over the training modules (it swaps its own processors in and back)."""
    from diffusers import DDIMScheduler


    components = parts["components"]
    scheduler_config = components["noise_scheduler"].config
    return DressingPipeline(
        vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=components["tokenizer"],
        unet=components["unet"], scheduler_factory=lambda: DDIMScheduler.from_config(scheduler_config),
        garment_unet=parts["garment_unet"], resampler=parts["resampler"], dressing_processors=processors,
        image_encoder=components["image_encoder"], image_processor=components["image_processor"],
        slot_loras=parts["slot_loras"],
    )


@torch.no_grad()
def write_samples(context: TrainerContext, config: DressingConfig, parts: dict[str, Any],
                  processors: dict[str, MixedAttnProcessor], dataset: DressingDataset, step: int) -> list[Path]:
    """Dress the first sample's garments with each sample prompt (fixed seeds); a PNG per prompt."""
    from PIL.PngImagePlugin import PngInfo


    sample = dataset.samples[0]
    pipeline = build_pipeline(config, parts, processors)
    garments = [Garment(load_rgb(path), category) for path, category in zip(sample.garments, sample.categories)]
    prompts = config.sample_prompts or [sample.prompt or config.default_prompt]
    paths = []
    for index, prompt in enumerate(prompts):
        request = DressingRequest(garments=garments, prompt=prompt, height=config.height, width=config.width,
                                  num_inference_steps=config.sample_steps, guidance_scale=config.sample_guidance_scale,
                                  garment_scale=config.sample_garment_scale, seed=config.sample_seed + index)
        image = pipeline(request).images[0]
        info = PngInfo()
        info.add_text("parameters", json.dumps({"prompt": prompt, "seed": config.sample_seed + index, "step": step,
                                                "run_id": context.run_id}))
        path = context.samples_dir / f"step-{step:08d}-{index}.png"
        image.save(path, pnginfo=info)
        paths.append(path)
    logger.info("samples at step %d: %s", step, ", ".join(p.name for p in paths))
    return paths


def imagdressing_state(parts: dict[str, Any], processors: dict[str, MixedAttnProcessor]) -> dict[str, torch.Tensor]:
    """``ref_unet.*``, ``proj.*`` and ``adapter_modules.<i>.to_k_ref/to_v_ref.weight`` (i over the denoising
    UNet's processors in diffusers order), as IMAGDressing-v1 stores them."""
    state = {f"ref_unet.{k}": v for k, v in parts["garment_unet"].state_dict().items()}
    state.update({f"proj.{k}": v for k, v in parts["resampler"].state_dict().items()})
    for index, name in enumerate(processor_names(parts["components"]["unet"])):
        if name in processors:
            state[f"adapter_modules.{index}.to_k_ref.weight"] = processors[name].to_k_ref.weight
            state[f"adapter_modules.{index}.to_v_ref.weight"] = processors[name].to_v_ref.weight
    return {key: value.detach().float().cpu().contiguous() for key, value in state.items()}


def export_final(context: TrainerContext, config: DressingConfig, parts: dict[str, Any],
                 processors: dict[str, MixedAttnProcessor], labels: list[str], step: int) -> Path:
    from safetensors.torch import save_file


    final = context.final_dir
    final.mkdir(parents=True, exist_ok=True)
    save_slot_loras(parts["slot_loras"], final / SLOT_LORA_FILE)
    save_file(imagdressing_state(parts, processors), str(final / CHECKPOINT_FILE), metadata={"format": "imagdressing"})
    card = {
        "kind": "dressing_model",
        "method": METHOD,
        "base_model": config.pretrained_model,
        "vae": config.vae,
        "image_encoder": config.image_encoder,
        "init_checkpoint": config.init_checkpoint,
        "weights": {"dressing_imagdressing": CHECKPOINT_FILE, "dressing_slot_loras": SLOT_LORA_FILE},
        "slot_labels": labels,
        "lora_rank": config.lora_rank,
        "loc_normalization": config.loc_normalization,
        "perceptual_loss": bool(config.perceptual_weights),
        "prompt": config.default_prompt,
        "height": config.height,
        "width": config.width,
        "steps": step,
        "run_id": context.run_id,
    }
    write_model_card(final, card)
    logger.info("final dressing model written to %s", final)
    return final


def preflight(config: DressingConfig, run_dir: Path) -> None:
    """Runner preflight: validate the dataset before the trainer starts."""
    load_dressing_dataset(config.dataset, config.min_image_size, run_dir / "dataset")


def main(argv: list[str] | None = None) -> int:
    return run_cli(METHOD, DressingConfig, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
