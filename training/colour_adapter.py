"""IMAGGarment-1 colour adapter: teach a frozen SD1.5 UNet to follow a colour swatch.

Trainable: ``image_proj`` (Linear(E, 4*D) + LayerNorm(D): the CLIP image embedding of the swatch -> 4 colour
tokens appended after the 77 text tokens) and ``to_k_ip``/``to_v_ip`` (Linear(D, hidden, bias=False)) in a
decoupled cross-attention on every ``attn2`` -- the processors the garment pipeline uses at inference
(:class:`pipelines.core.attention.ImageTokenAttnProcessor`). Everything else is frozen. Condition dropout (5% colour,
5% text, 5% both) teaches the unconditional branch used by CFG: a dropped colour is a zero image embedding, as
the pipeline's unconditional tokens are ``image_proj(zeros)``. Loss: MSE on eps. Data: ``color_pair.json``.

Output (``final/``): ``color_adapter.safetensors`` in the official flat layout (``image_proj.*``,
``color_adapter.{i}.to_k_ip.weight`` with ``i`` = the attn2 index in ``unet.attn_processors``) -- loadable by
:func:`pipelines.garment.checkpoints.load_color_adapter` -- plus ``atelier_model.json``. Checkpoint files use
the same key names.

Run alone:  python -m training.colour_adapter --config cfg.yaml [--run-id ID --store DB]
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pipelines.core.attention import processor_names
from pipelines.core.checkpoints import offline_hint
from pipelines.core.sampling import encode_prompts
from pipelines.garment.checkpoints import ImageProjection, color_processors
from pipelines.garment.pipeline import GarmentDesignPipeline
from pipelines.types import GarmentRequest, ModelUnavailableError
from training.common import TrainerContext, endless, run_cli, trainable_state, write_model_card
from training.config import ColourAdapterConfig
from training.datasets import load_rgb
from training.garmentbench import (
    GarmentRecord,
    check_unet,
    ddim_factory,
    load_garmentbench,
    load_rgb_sized,
    load_sd_parts,
)
from training.toolkit import (
    checkpoint_saver,
    export_on_main,
    make_optimizer,
    noisy_latents,
    resume,
    save_sample,
    setup_accelerator,
    shard,
    train_loop,
)

logger = logging.getLogger(__name__)

METHOD = "colour_adapter"
WEIGHTS_FILE = "color_adapter.safetensors"


# -- data -----------------------------------------------------------------------------------------------
class ColourDataset(Dataset):
    """color_pair.json records -> garment pixels, CLIP pixels of the swatch, caption."""

    def __init__(self, records: list[GarmentRecord], width: int, height: int, image_processor) -> None:
        self.records, self.width, self.height = records, width, height
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        swatch = load_rgb(record["color"])
        clip_pixels = self.image_processor(images=swatch, return_tensors="pt").pixel_values[0]  # (3, S, S)
        return {"pixel_values": load_rgb_sized(record["cloth"], self.width, self.height),  # (3, H, W)
                "clip_pixels": clip_pixels, "caption": random.choice(record.captions)}


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "clip_pixels": torch.stack([e["clip_pixels"] for e in examples]),
            "captions": [e["caption"] for e in examples]}


# -- the trained module ---------------------------------------------------------------------------------
class ColourAdapter(nn.Module):
    """``image_proj`` + ``color_adapter`` (ModuleDict keyed by the attn2 index in ``unet.attn_processors``) around
    a frozen UNet that is held, not registered: ``parameters()`` are exactly the trained ones and
    ``trainable_state({"image_proj": ..., "color_adapter": ...})`` yields the official key names."""

    def __init__(self, unet, embed_dim: int, num_tokens: int) -> None:
        super().__init__()
        token_dim = unet.config.cross_attention_dim
        self.image_proj = ImageProjection(embed_dim, token_dim, num_tokens)
        self.processors = color_processors(unet, token_dim)  # name -> processor (shared with the ModuleDict)
        names = processor_names(unet)
        self.color_adapter = nn.ModuleDict({str(names.index(name)): proc for name, proc in self.processors.items()})
        for proc in self.processors.values():
            proc.state.num_tokens = num_tokens
        object.__setattr__(self, "unet", unet)

    @torch.no_grad()
    def init_from_unet(self) -> None:
        """to_k_ip/to_v_ip start as copies of the layer's to_k/to_v (as IP-Adapter training does)."""
        for name, proc in self.processors.items():
            attn = self.unet.get_submodule(name.rsplit(".processor", 1)[0])
            proc.to_k_ip.weight.copy_(attn.to_k.weight)
            proc.to_v_ip.weight.copy_(attn.to_v.weight)

    def install(self) -> None:
        """Put the colour processors on every attn2 of the UNet (attn1 keeps its processor)."""
        merged = dict(self.unet.attn_processors)
        merged.update(self.processors)
        self.unet.set_attn_processor(merged)

    def state_modules(self) -> dict[str, nn.Module]:
        return {"image_proj": self.image_proj, "color_adapter": self.color_adapter}

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor,
                image_embeds: torch.Tensor) -> torch.Tensor:
        tokens = self.image_proj(image_embeds)  # (B, T, D)
        context = torch.cat([text, tokens.to(text.dtype)], dim=1)  # (B, 77 + T, D)
        return self.unet(noisy, timesteps, encoder_hidden_states=context).sample


def load_image_encoder(config: ColourAdapterConfig):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    kwargs = {"subfolder": config.image_encoder_subfolder} if config.image_encoder_subfolder else {}
    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(config.image_encoder, **kwargs)
    except OSError as error:

        raise ModelUnavailableError(f"image_encoder: {offline_hint(config.image_encoder)} ({error})") from error
    try:
        processor = CLIPImageProcessor.from_pretrained(config.image_encoder, **kwargs)
    except OSError:  # h94/IP-Adapter ships no preprocessor config: the method uses the default processor
        processor = CLIPImageProcessor()
    return encoder, processor


# -- training -------------------------------------------------------------------------------------------
def train(context: TrainerContext) -> None:
    """The whole colour-adapter training, top to bottom."""
    config: ColourAdapterConfig = context.config  # type: ignore[assignment]

    # 1. device and precision
    accelerator, weight_dtype = setup_accelerator(config)
    device = accelerator.device

    # 2. models: everything frozen in the autocast dtype; the adapter trains in fp32
    parts = load_sd_parts(config)
    tokenizer, text_encoder, vae, unet = parts["tokenizer"], parts["text_encoder"], parts["vae"], parts["unet"]
    noise_scheduler = parts["noise_scheduler"]
    check_unet(unet, config, 4)
    image_encoder, image_processor = load_image_encoder(config)
    cast = {"dtype": weight_dtype} if weight_dtype != torch.float32 else {}
    for model in (vae, text_encoder, unet, image_encoder):
        model.requires_grad_(False).eval().to(device, **cast)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    adapter = ColourAdapter(unet, image_encoder.config.projection_dim, config.num_tokens)
    adapter.init_from_unet()
    adapter.to(device)
    adapter.install()

    # 3. data
    with accelerator.main_process_first():  # a zip is extracted once, by the main process
        records = load_garmentbench(config.dataset, "color", extract_to=context.run_dir / "dataset")
    dataset = ColourDataset(records, config.width, config.height, image_processor)
    loader = DataLoader(dataset, batch_size=config.train_batch_size, shuffle=True, collate_fn=collate,
                        num_workers=config.dataloader_workers, generator=torch.Generator().manual_seed(config.seed))
    loader = shard(accelerator, loader)  # num_processes > 1: each process trains on its own shard

    # 4. resume: weights before the optimizer sees them
    checkpoint, start_step = resume(config, adapter.state_modules())

    # 5. optimizer and schedule
    parameters = [p for p in adapter.parameters() if p.requires_grad]
    optimizer, lr_scheduler = make_optimizer(config, parameters, checkpoint)
    model, optimizer, lr_scheduler = accelerator.prepare(adapter, optimizer, lr_scheduler)
    logger.info("trainable parameters: %.2fM", sum(p.numel() for p in parameters) / 1e6)

    scaling = vae.config.scaling_factor
    drop_image, drop_text, drop_both = config.drop_image_prob, config.drop_text_prob, config.drop_both_prob

    def compute_loss(batch: dict[str, Any]) -> torch.Tensor:
        pixels = batch["pixel_values"].to(device, weight_dtype)  # (B, 3, H, W)
        count = pixels.shape[0]
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * scaling  # (B, 4, H/8, W/8)
            embeds = image_encoder(batch["clip_pixels"].to(device, weight_dtype)).image_embeds  # (B, E)
            draw = torch.rand(count).tolist()
            # [0, a) colour only, [a, a+b) text only, [a+b, a+b+c) both: one draw per example
            no_image = [r < drop_image or drop_image + drop_text <= r < drop_image + drop_text + drop_both
                        for r in draw]
            no_text = [drop_image <= r < drop_image + drop_text + drop_both for r in draw]
            keep = torch.tensor([0.0 if flag else 1.0 for flag in no_image], device=device, dtype=embeds.dtype)
            embeds = embeds * keep[:, None]
            captions = ["" if flag else caption for flag, caption in zip(no_text, batch["captions"])]
            text = encode_prompts(tokenizer, text_encoder, captions, device)  # (B, 77, D)
        _, timesteps, noisy, target = noisy_latents(latents.float(), noise_scheduler)
        prediction = model(noisy.to(weight_dtype), timesteps, text, embeds.float())
        return F.mse_loss(prediction.float(), target.float())

    save = checkpoint_saver(context, config, optimizer, lr_scheduler,
                            lambda: accelerator.unwrap_model(model).state_modules(),
                            {"base_model": config.pretrained_model, "layout": "imaggarment_color_adapter"})

    def sample(step: int) -> list[Path]:
        return write_samples(context, config, parts, image_encoder, image_processor,
                             accelerator.unwrap_model(model), accelerator, records, step)

    # 6. the loop
    model.train()
    step = train_loop(context, config, accelerator, model, optimizer, lr_scheduler, parameters, endless(loader),
                      compute_loss, save, sample, start_step)

    # 7. export on the main process once every rank is done (also when a resumed run had nothing left to do)
    export_on_main(context, accelerator, export_final, context, config, accelerator.unwrap_model(model), step)


# -- samples and export ---------------------------------------------------------------------------------
@torch.no_grad()
def write_samples(context: TrainerContext, config: ColourAdapterConfig, parts: dict[str, Any], image_encoder,
                  image_processor, adapter: ColourAdapter, accelerator, records: list[GarmentRecord],
                  step: int) -> list[Path]:
    """Generate with the garment pipeline (colour only) from the first record's swatch; fixed seeds."""

    was_training = adapter.training
    adapter.eval()
    try:
        pipeline = GarmentDesignPipeline(
            vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"], unet=adapter.unet,
            scheduler_factory=ddim_factory(parts["noise_scheduler"]), image_encoder=image_encoder,
            image_processor=image_processor, image_projection=adapter.image_proj, color_processors=adapter.processors,
        )
        swatch = load_rgb(records[0]["color"])
        paths = []
        for index, prompt in enumerate(config.sample_prompts or [records[0].captions[0]]):
            request = GarmentRequest(prompt=prompt, color=swatch, height=config.height, width=config.width,
                                     num_inference_steps=config.sample_steps,
                                     guidance_scale=config.sample_guidance_scale, seed=config.sample_seed + index)
            with accelerator.autocast():
                image = pipeline(request).images[0]
            paths.append(save_sample(context, image, index, step, request.params()))
        logger.info("samples at step %d: %s", step, ", ".join(p.name for p in paths))
        return paths
    finally:
        adapter.install()  # the pipeline restores the processors it found; make sure ours are on
        if was_training:
            adapter.train()


def export_final(context: TrainerContext, config: ColourAdapterConfig, adapter: ColourAdapter, step: int) -> Path:
    """``final/color_adapter.safetensors`` (official flat layout, fp16 on GPU runs) + atelier_model.json."""
    from safetensors.torch import save_file

    final = context.final_dir
    final.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if config.mixed_precision == "fp16" else torch.float32
    tensors = {key: value.detach().to("cpu", dtype).contiguous()
               for key, value in trainable_state(adapter.state_modules()).items()}
    save_file(tensors, str(final / WEIGHTS_FILE), metadata={"format": "imaggarment_color_adapter", "step": str(step)})
    card = {
        "kind": "garment_color",
        "method": METHOD,
        "weights": {"garment_color": WEIGHTS_FILE},
        "format": "imaggarment_color_adapter",
        "base_model": config.pretrained_model,
        "image_encoder": config.image_encoder,
        "image_encoder_subfolder": config.image_encoder_subfolder,
        "num_tokens": config.num_tokens,
        "height": config.height,
        "width": config.width,
        "steps": step,
        "run_id": context.run_id,
    }
    write_model_card(final, card)
    logger.info("final colour adapter written to %s", final / WEIGHTS_FILE)
    return final


def main(argv: list[str] | None = None) -> int:
    return run_cli(METHOD, ColourAdapterConfig, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
