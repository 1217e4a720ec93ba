"""IMAGGarment-1 LEM (local enhancement model): teach the 9-channel inpainting UNet to place a logo.

Trainable: ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` of every ``attn1`` of the inpainting UNet; every ``attn2``
returns its input (:class:`~pipelines.core.attention.SkipAttnProcessor`, no text), everything else is frozen. The
canvas is built exactly as :func:`pipelines.core.concat_inpaint.concat_inpaint_denoise` builds it at inference::

    top    = cloth latent * (mask_latent < 0.5)         # latent-masked, as the GAM latent is at inference
    X      = concat([top, logo latent], dim=H)           # (B, 4, 2h, w); logo latent zeroed 10% of the time
    M      = concat([mask_latent, zeros], dim=H)         # (B, 1, 2h, w)
    input  = concat([noisy canvas, M, X], dim=C)         # (B, 9, 2h, w)

The denoised canvas is ``concat([cloth latent, logo latent], dim=H)`` and the loss is the MSE on eps over the
whole 2h x w canvas. Conditioning choice: the official training masked the *sketch* in pixel space, but at
inference the top half is the GAM's latent zeroed under the logo mask; we train on what inference feeds (the
garment latent masked in latent space, mask nearest-downsampled exactly like the pipeline) -- the spec's
recommendation. The logo latent is the VAE mean (as inference uses). Data: ``logo_pair.json``.

Output (``final/``): ``lem.safetensors`` with ``unet.<attn1 parameter name>`` keys (the layout
:func:`pipelines.garment.checkpoints.load_lem` loads by name) + ``atelier_model.json``. Checkpoints use the same keys.

Run alone:  python -m training.lem --config cfg.yaml [--run-id ID --store DB]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from pipelines.core.attention import attn1_modules
from pipelines.core.concat_inpaint import (
    ATTN1_PROJECTIONS,
    ConcatInpaintConfig,
    ConcatInpaintInputs,
    concat_inpaint_denoise,
    skip_cross_attention,
)
from pipelines.core.sampling import generators, mask_to_tensor, tensor_to_images, vae_decode, vae_encode
from training.common import TrainerContext, endless, run_cli, write_model_card
from training.config import LemConfig
from training.datasets import load_mask
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

METHOD = "lem"
WEIGHTS_FILE = "lem.safetensors"


# -- data -----------------------------------------------------------------------------------------------
class LogoDataset(Dataset):
    """logo_pair.json records -> garment pixels, logo pixels, latent-size logo mask (as the pipeline makes it)."""

    def __init__(self, records: list[GarmentRecord], width: int, height: int, latent_scale: int) -> None:
        self.records, self.width, self.height, self.latent_scale = records, width, height, latent_scale

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        mask = mask_to_tensor(load_mask(record["mask"]), self.width // self.latent_scale,
                              self.height // self.latent_scale)[0]  # (1, h, w), 1 = logo goes here
        return {"pixel_values": load_rgb_sized(record["cloth"], self.width, self.height),  # (3, H, W)
                "logo_values": load_rgb_sized(record["logo"], self.width, self.height),  # (3, H, W)
                "mask": mask}


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: torch.stack([e[key] for e in examples]) for key in ("pixel_values", "logo_values", "mask")}


def mark_trainable(unet) -> int:
    """Freeze the UNet except attn1 to_q/to_k/to_v/to_out.0; returns the number of trained parameters."""
    unet.requires_grad_(False)
    count = 0
    for _, module in attn1_modules(unet):
        for linear in (module.to_q, module.to_k, module.to_v, module.to_out[0]):
            linear.requires_grad_(True)
            count += sum(p.numel() for p in linear.parameters())
    return count


def lem_canvas(latents: torch.Tensor, logo_latents: torch.Tensor, mask: torch.Tensor,
               keep_logo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(target canvas (B, 4, 2h, w), condition mask (B, 1, 2h, w), condition X (B, 4, 2h, w)) as at inference."""
    masked_top = latents * (mask < 0.5)
    condition = torch.cat([masked_top, logo_latents * keep_logo[:, None, None, None]], dim=2)
    condition_mask = torch.cat([mask, torch.zeros_like(mask)], dim=2)
    canvas = torch.cat([latents, logo_latents], dim=2)
    return canvas, condition_mask, condition


# -- training -------------------------------------------------------------------------------------------
def train(context: TrainerContext) -> None:
    """The whole LEM training, top to bottom."""
    config: LemConfig = context.config  # type: ignore[assignment]

    # 1. device and precision
    accelerator, weight_dtype = setup_accelerator(config)
    device = accelerator.device

    # 2. models: the inpainting UNet with attn1 trainable (fp32), the rest frozen in the autocast dtype
    parts = load_sd_parts(config, text=False)
    vae, unet, noise_scheduler = parts["vae"], parts["unet"], parts["noise_scheduler"]
    check_unet(unet, config, 9)
    vae.requires_grad_(False).eval().to(device, **({"dtype": weight_dtype} if weight_dtype != torch.float32 else {}))
    count = mark_trainable(unet)
    unet.to(device)
    if weight_dtype != torch.float32:
        for parameter in unet.parameters():
            if not parameter.requires_grad:
                parameter.data = parameter.data.to(weight_dtype)
    unet.set_attn_processor(skip_cross_attention(unet))  # attn2 returns its input, as at inference
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    latent_scale = 2 ** (len(vae.config.block_out_channels) - 1)

    # 3. data
    with accelerator.main_process_first():  # a zip is extracted once, by the main process
        records = load_garmentbench(config.dataset, "lem", extract_to=context.run_dir / "dataset")
    dataset = LogoDataset(records, config.width, config.height, latent_scale)
    loader = DataLoader(dataset, batch_size=config.train_batch_size, shuffle=True, collate_fn=collate,
                        num_workers=config.dataloader_workers, generator=torch.Generator().manual_seed(config.seed))
    loader = shard(accelerator, loader)  # num_processes > 1: each process trains on its own shard

    # 4. resume: weights before the optimizer sees them
    checkpoint, start_step = resume(config, {"unet": unet})

    # 5. optimizer and schedule
    parameters = [p for p in unet.parameters() if p.requires_grad]
    optimizer, lr_scheduler = make_optimizer(config, parameters, checkpoint)
    model, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    logger.info("trainable parameters: %.2fM", count / 1e6)

    scaling = vae.config.scaling_factor
    context_dim = unet.config.cross_attention_dim

    def compute_loss(batch: dict[str, Any]) -> torch.Tensor:
        with torch.no_grad():
            latents = vae.encode(batch["pixel_values"].to(device, weight_dtype)).latent_dist.sample() * scaling
            logo = vae.encode(batch["logo_values"].to(device, weight_dtype)).latent_dist.mean * scaling
            mask = batch["mask"].to(device, latents.dtype)  # (B, 1, h, w)
            keep = (torch.rand(latents.shape[0], device=device) >= config.drop_logo_prob).to(latents.dtype)
            canvas, condition_mask, condition = lem_canvas(latents.float(), logo.float(), mask.float(), keep.float())
        _, timesteps, noisy, target = noisy_latents(canvas, noise_scheduler)
        model_input = torch.cat([noisy, condition_mask, condition], dim=1)  # (B, 9, 2h, w)
        # attn2 reads no text; a tiny dummy context satisfies the signature (as at inference)
        dummy = torch.zeros((model_input.shape[0], 1, context_dim), device=device, dtype=model_input.dtype)
        prediction = model(model_input, timesteps, encoder_hidden_states=dummy).sample
        return F.mse_loss(prediction.float(), target.float())  # the whole 2h x w canvas

    save = checkpoint_saver(context, config, optimizer, lr_scheduler,
                            lambda: {"unet": accelerator.unwrap_model(model)},
                            {"base_model": config.pretrained_model, "layout": "imaggarment_lem"})

    def sample(step: int) -> list[Path]:
        return write_samples(context, config, parts, accelerator.unwrap_model(model), accelerator, dataset, step)

    # 6. the loop
    model.train()
    step = train_loop(context, config, accelerator, model, optimizer, lr_scheduler, parameters, endless(loader),
                      compute_loss, save, sample, start_step)

    # 7. export on the main process once every rank is done (also when a resumed run had nothing left to do)
    export_on_main(context, accelerator, export_final, context, config, accelerator.unwrap_model(model), step)


# -- samples and export ---------------------------------------------------------------------------------
@torch.no_grad()
def write_samples(context: TrainerContext, config: LemConfig, parts: dict[str, Any], unet, accelerator,
                  dataset: LogoDataset, step: int) -> list[Path]:
    """Place the first record's logo on its own garment with the inference sampler; fixed seed."""

    vae = parts["vae"]
    was_training = unet.training
    unet.eval()
    try:
        example = dataset[0]
        with accelerator.autocast():
            top = vae_encode(vae, example["pixel_values"][None])  # (1, 4, h, w)
            logo = vae_encode(vae, example["logo_values"][None])
            latents = concat_inpaint_denoise(
                unet, ddim_factory(parts["noise_scheduler"])(),
                ConcatInpaintInputs(top=top, mask=example["mask"][None], bottom=logo),
                ConcatInpaintConfig(config.sample_steps, config.sample_guidance_scale, eta=0.0, stage="LEM"),
                generators(config.sample_seed, 1, unet.device),
            )
            image = tensor_to_images(vae_decode(vae, latents))[0]
        path = save_sample(context, image, 0, step, {"seed": config.sample_seed, "steps": config.sample_steps,
                                                     "guidance_scale": config.sample_guidance_scale})
        logger.info("sample at step %d: %s", step, path.name)
        return [path]
    finally:
        if was_training:
            unet.train()


def export_final(context: TrainerContext, config: LemConfig, unet, step: int) -> Path:
    """``final/lem.safetensors`` (``unet.<attn1 name>`` keys; fp16 for fp16 runs) + atelier_model.json."""
    from safetensors.torch import save_file

    final = context.final_dir
    final.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if config.mixed_precision == "fp16" else torch.float32
    params = dict(unet.named_parameters())
    tensors = {f"unet.{name}.{proj}": params[f"{name}.{proj}"].detach().to("cpu", dtype).contiguous()
               for name, _ in attn1_modules(unet) for proj in ATTN1_PROJECTIONS}
    save_file(tensors, str(final / WEIGHTS_FILE), metadata={"format": "imaggarment_lem", "step": str(step)})
    card = {
        "kind": "garment_lem",
        "method": METHOD,
        "weights": {"garment_lem": WEIGHTS_FILE},
        "format": "imaggarment_lem",
        "base_model": config.pretrained_model,
        "vae": config.vae,
        "conditioning": "latent-masked garment (inference conditioning), logo latent = VAE mean",
        "height": config.height,
        "width": config.width,
        "steps": step,
        "run_id": context.run_id,
    }
    write_model_card(final, card)
    logger.info("final LEM written to %s", final / WEIGHTS_FILE)
    return final


def main(argv: list[str] | None = None) -> int:
    return run_cli(METHOD, LemConfig, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
