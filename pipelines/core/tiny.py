"""Tiny random-weight models in the standard diffusers/transformers layouts.

The studio never fakes a model: the ``tiny`` preset and the test-suite build the REAL classes
(UNet2DConditionModel, AutoencoderKL, CLIPTextModel, ...) at a tiny size, save them with
``save_pretrained`` into folders laid out like the hub repositories, and then load them through the
same ``from_pretrained`` code a real user hits. Official checkpoint files (GAM, colour adapter, LEM,
CatVTON, TryOffAnyone, IMAGDressing) are written in their published key layouts by the writer
functions each method package declares in its ``TINY_CHECKPOINTS``.

Geometry mirrors SD1.5 where it matters: the VAE downsamples by 8 with 4 latent channels, the UNets
have cross-attention blocks at the two highest resolutions plus a cross-attention mid block, and
there is a 9-channel inpainting UNet beside the 4-channel one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from pipelines import declared, resolve

logger = logging.getLogger(__name__)

TEXT_DIM = 32  # hidden size of the tiny text encoder == UNet cross_attention_dim
IMAGE_EMBED_DIM = 32  # projection_dim of the tiny CLIP vision model (colour adapter input)
IMAGE_HIDDEN_DIM = 48  # hidden size of the tiny CLIP vision model (Resampler input)
IMAGE_SIZE = 32  # the tiny CLIP vision model's input resolution

TINY_LAYOUT_VERSION = 2  # bump to force the tiny model folder to be rebuilt


def _byte_chars() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2 convention)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def tiny_tokenizer():
    """A character-level CLIP tokenizer built in memory (no files, no network)."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in _byte_chars():
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    return tokenizer


def tiny_text_encoder(vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=TEXT_DIM,
    )
    return CLIPTextModel(config).eval()


def tiny_unet(in_channels: int = 4, seed: int = 0):
    """SD1.5-shaped (cross-attention at the high resolutions, cross-attention mid block), tiny widths."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
    ).eval()


def tiny_vae(seed: int = 0):
    """Downsamples by 8 (four blocks) like the SD VAE, so image/latent size maths is the real one."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=64,
    ).eval()


def tiny_image_encoder(seed: int = 0):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=IMAGE_HIDDEN_DIM,
        intermediate_size=64,
        projection_dim=IMAGE_EMBED_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    return CLIPVisionModelWithProjection(config).eval()


def tiny_image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )


def tiny_scheduler():
    """The SD1.5 DDIM configuration of the garment spec."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_controlnet(unet):
    from diffusers import ControlNetModel

    torch.manual_seed(1)
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 32, 32))


def _save_sd_folder(root: Path, in_channels: int, seed: int) -> None:
    """An SD1.5-style repository folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/)."""
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(root / "tokenizer")
    tiny_text_encoder(len(tokenizer)).save_pretrained(root / "text_encoder", safe_serialization=True)
    tiny_unet(in_channels, seed=seed).save_pretrained(root / "unet", safe_serialization=True)
    tiny_vae(seed=seed).save_pretrained(root / "vae", safe_serialization=True)
    tiny_scheduler().save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionInpaintPipeline" if in_channels == 9 else "StableDiffusionPipeline",
                "_diffusers_version": "0.42.1",
                "scheduler": ["diffusers", "DDIMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            },
            indent=2,
        )
    )


def build_tiny_model_set(root: str | Path, force: bool = False) -> Path:
    """Write the whole tiny model set to ``root`` (idempotent; ~1-2 s) and return ``root``.

    Layout (each folder in its hub repository's layout):
      base/            SD1.5-style text-to-image repo (4-channel UNet)
      inpaint/         SD1.5-inpainting-style repo (9-channel UNet)
      vae/             a standalone VAE repo (like stabilityai/sd-vae-ft-mse)
      image_encoder/   CLIPVisionModelWithProjection + preprocessor (like h94/IP-Adapter models/image_encoder)
      controlnet_openpose/  ControlNetModel (like lllyasviel/control_v11p_sd15_openpose)
      checkpoints/     official-layout method checkpoints (each method's TINY_CHECKPOINTS)
    """
    root = Path(root)
    marker = root / "tiny_layout.json"
    writers = declared("TINY_CHECKPOINTS")
    wanted = {"version": TINY_LAYOUT_VERSION, "writers": sorted(writers)}
    if not force and marker.exists():
        try:
            if json.loads(marker.read_text()) == wanted:
                return root
        except (OSError, ValueError):
            pass
    logger.info("building tiny model set in %s", root)
    root.mkdir(parents=True, exist_ok=True)
    _save_sd_folder(root / "base", in_channels=4, seed=0)
    _save_sd_folder(root / "inpaint", in_channels=9, seed=1)
    tiny_vae(seed=2).save_pretrained(root / "vae", safe_serialization=True)
    tiny_image_encoder().save_pretrained(root / "image_encoder", safe_serialization=True)
    tiny_image_processor().save_pretrained(root / "image_encoder")
    tiny_controlnet(tiny_unet(4, seed=3)).save_pretrained(root / "controlnet_openpose", safe_serialization=True)
    (root / "checkpoints").mkdir(exist_ok=True)
    for name, spec in writers.items():
        path = resolve(spec)(root)
        logger.info("tiny checkpoint %s -> %s", name, path)
    marker.write_text(json.dumps(wanted))
    return root
