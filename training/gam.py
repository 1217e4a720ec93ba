"""IMAGGarment-1 GAM (global appearance model): teach a silhouette UNet + mixed attention to follow a sketch.

Trainable: the whole ``ref_unet`` (initialised as a copy of the base UNet) and, on every ``attn1`` of the frozen
main UNet, ``to_k_ref``/``to_v_ref`` (initialised as copies of that layer's ``to_k``/``to_v``). Every step runs
exactly the inference wiring (see ``pipelines/garment/pipeline.py``):

- ``ref_unet`` runs at t=0 on the sketch latent (``latent_dist.mean``) with ``encoder_hidden_states=None``; every
  attn1 records its input hidden states, every attn2 returns its input (``h + norm2(h)``, not a true skip);
- the main UNet denoises the garment latent with :class:`~pipelines.core.attention.MixedAttnProcessor` (alpha 1.0) on
  every attn1, reading the recorded states of the same-named ref_unet layer.

The recorder used here keeps the autograd graph (the inference :class:`~pipelines.core.attention.ReferenceRecorder`
detaches): gradients reach ``ref_unet`` only through the recorded features. Text is dropped 10% of the time,
noise offset 0.05, lr 1e-5 constant. Data: ``sketch_pair.json``.

Output (``final/``): ``gam.safetensors`` in the official GAM key layout (``ref_unet.*``,
``adapter_modules.{i}.to_k_ref.weight``/``to_v_ref.weight`` with ``i`` = the attn1 index in
``unet.attn_processors``; no ``module`` wrapper, no unused ``unet.*`` copy) -- loadable by
:func:`pipelines.garment.checkpoints.load_gam` -- plus ``atelier_model.json``. Checkpoints use the same keys.

Run alone:  python -m training.gam --config cfg.yaml [--run-id ID --store DB]
"""

from __future__ import annotations

import copy
import logging
import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pipelines.core.attention import (
    ReferenceRecorder,
    ReferenceState,
    SkipAttnProcessor,
    processor_names,
    project_out,
    sdpa,
)
from pipelines.core.sampling import encode_prompts
from pipelines.garment.checkpoints import mixed_processors
from pipelines.garment.pipeline import GarmentDesignPipeline
from pipelines.types import GarmentRequest
from training.common import TrainerContext, endless, run_cli, trainable_state, write_model_card
from training.config import GamConfig
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

METHOD = "gam"
WEIGHTS_FILE = "gam.safetensors"


# -- data -----------------------------------------------------------------------------------------------
class SketchDataset(Dataset):
    """sketch_pair.json records -> garment pixels, sketch pixels, one of the record's captions."""

    def __init__(self, records: list[GarmentRecord], width: int, height: int) -> None:
        self.records, self.width, self.height = records, width, height

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        return {"pixel_values": load_rgb_sized(record["cloth"], self.width, self.height),  # (3, H, W)
                "sketch_values": load_rgb_sized(record["sketch"], self.width, self.height),  # (3, H, W)
                "caption": random.choice(record.captions)}


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "sketch_values": torch.stack([e["sketch_values"] for e in examples]),
            "captions": [e["caption"] for e in examples]}


# -- the trained module ---------------------------------------------------------------------------------
class TrainingReferenceRecorder(ReferenceRecorder):
    """:class:`ReferenceRecorder` that keeps the graph: the training signal of ref_unet flows through it."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if hidden_states.ndim != 3:
            raise ValueError(f"{self.name}: expected (B, N, C) hidden states, got {tuple(hidden_states.shape)}")
        self.store[self.name] = hidden_states  # (B, HW, C), NOT detached
        out = sdpa(attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states), attn.heads)
        return project_out(attn, out)


class GarmentAppearanceModel(nn.Module):
    """``ref_unet`` + ``adapter_modules`` (ModuleDict of mixed processors keyed by the attn1 index in
    ``unet.attn_processors``) around the frozen main UNet, which is held, not registered."""

    def __init__(self, unet, ref_unet, sketch_scale: float) -> None:
        super().__init__()
        self.ref_unet = ref_unet
        self.processors = mixed_processors(unet)  # name -> MixedAttnProcessor
        names = processor_names(unet)
        self.adapter_modules = nn.ModuleDict({str(names.index(n)): proc for n, proc in self.processors.items()})
        self.state = ReferenceState(scale=sketch_scale, cache_kv=False)
        self.recorded: dict[str, torch.Tensor] = {}
        object.__setattr__(self, "unet", unet)

    @torch.no_grad()
    def init_from_unet(self) -> None:
        for name, proc in self.processors.items():
            proc.init_from(self.unet.get_submodule(name.rsplit(".processor", 1)[0]))

    def install(self) -> None:
        """Training processors on both UNets (also after a sample pipeline re-wired them)."""
        self.ref_unet.set_attn_processor({
            name: TrainingReferenceRecorder(name, self.recorded) if ".attn1." in name else SkipAttnProcessor()
            for name in processor_names(self.ref_unet)
        })
        merged = dict(self.unet.attn_processors)
        merged.update(self.processors)
        self.unet.set_attn_processor(merged)
        for proc in self.processors.values():
            proc.state = self.state

    def state_modules(self) -> dict[str, nn.Module]:
        return {"ref_unet": self.ref_unet, "adapter_modules": self.adapter_modules}

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor,
                sketch_latents: torch.Tensor) -> torch.Tensor:
        # the features of the previous step may still be needed by a checkpointed backward until now
        self.recorded.clear()
        zero = torch.zeros(sketch_latents.shape[0], device=sketch_latents.device, dtype=torch.long)
        self.ref_unet(sketch_latents, zero, encoder_hidden_states=None)  # records every attn1 input
        self.state.features = dict(self.recorded)  # name -> (B, HW, C)
        self.state.rows, self.state.enabled = None, True
        return self.unet(noisy, timesteps, encoder_hidden_states=text).sample


# -- training -------------------------------------------------------------------------------------------
def train(context: TrainerContext) -> None:
    """The whole GAM training, top to bottom."""
    config: GamConfig = context.config  # type: ignore[assignment]

    # 1. device and precision
    accelerator, weight_dtype = setup_accelerator(config, find_unused_parameters=True)
    device = accelerator.device

    # 2. models: ref_unet = a trainable copy of the base UNet; the main UNet, VAE and text encoder frozen
    parts = load_sd_parts(config)
    tokenizer, text_encoder, vae, unet = parts["tokenizer"], parts["text_encoder"], parts["vae"], parts["unet"]
    noise_scheduler = parts["noise_scheduler"]
    check_unet(unet, config, 4)
    ref_unet = copy.deepcopy(unet)
    cast = {"dtype": weight_dtype} if weight_dtype != torch.float32 else {}
    for model in (vae, text_encoder, unet):
        model.requires_grad_(False).eval().to(device, **cast)
    ref_unet.requires_grad_(True).train().to(device)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        ref_unet.enable_gradient_checkpointing()
    gam = GarmentAppearanceModel(unet, ref_unet, config.sketch_scale)
    gam.init_from_unet()
    gam.adapter_modules.to(device)
    gam.install()

    # 3. data
    with accelerator.main_process_first():  # a zip is extracted once, by the main process
        records = load_garmentbench(config.dataset, "gam", extract_to=context.run_dir / "dataset")
    dataset = SketchDataset(records, config.width, config.height)
    loader = DataLoader(dataset, batch_size=config.train_batch_size, shuffle=True, collate_fn=collate,
                        num_workers=config.dataloader_workers, generator=torch.Generator().manual_seed(config.seed))
    loader = shard(accelerator, loader)  # num_processes > 1: each process trains on its own shard

    # 4. resume: weights before the optimizer sees them
    checkpoint, start_step = resume(config, gam.state_modules())

    # 5. optimizer and schedule
    parameters = [p for p in gam.parameters() if p.requires_grad]
    optimizer, lr_scheduler = make_optimizer(config, parameters, checkpoint)
    model, optimizer, lr_scheduler = accelerator.prepare(gam, optimizer, lr_scheduler)
    logger.info("trainable parameters: %.2fM", sum(p.numel() for p in parameters) / 1e6)

    scaling = vae.config.scaling_factor

    def compute_loss(batch: dict[str, Any]) -> torch.Tensor:
        with torch.no_grad():
            latents = vae.encode(batch["pixel_values"].to(device, weight_dtype)).latent_dist.sample() * scaling
            # the sketch latent as at inference: the distribution mean
            sketch = vae.encode(batch["sketch_values"].to(device, weight_dtype)).latent_dist.mean * scaling
            captions = ["" if random.random() < config.drop_text_prob else c for c in batch["captions"]]
            text = encode_prompts(tokenizer, text_encoder, captions, device)  # (B, 77, D)
        _, timesteps, noisy, target = noisy_latents(latents.float(), noise_scheduler, config.noise_offset)
        prediction = model(noisy.to(weight_dtype), timesteps, text, sketch.float())
        return F.mse_loss(prediction.float(), target.float())

    save = checkpoint_saver(context, config, optimizer, lr_scheduler,
                            lambda: accelerator.unwrap_model(model).state_modules(),
                            {"base_model": config.pretrained_model, "layout": "imaggarment_gam"})

    def sample(step: int) -> list[Path]:
        return write_samples(context, config, parts, accelerator.unwrap_model(model), accelerator, records, step)

    # 6. the loop
    model.train()
    step = train_loop(context, config, accelerator, model, optimizer, lr_scheduler, parameters, endless(loader),
                      compute_loss, save, sample, start_step)
    gam.state.features = {}
    gam.recorded.clear()

    # 7. export on the main process once every rank is done (also when a resumed run had nothing left to do)
    export_on_main(context, accelerator, export_final, context, config, accelerator.unwrap_model(model), step)


# -- samples and export ---------------------------------------------------------------------------------
@torch.no_grad()
def write_samples(context: TrainerContext, config: GamConfig, parts: dict[str, Any], gam: GarmentAppearanceModel,
                  accelerator, records: list[GarmentRecord], step: int) -> list[Path]:
    """Generate with the garment pipeline (sketch only) from the first record's sketch; fixed seeds."""

    was_training = gam.training
    gam.eval()
    try:
        pipeline = GarmentDesignPipeline(
            vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"], unet=gam.unet,
            scheduler_factory=ddim_factory(parts["noise_scheduler"]), ref_unet=gam.ref_unet,
            mixed_processors=gam.processors,
        )
        sketch = load_rgb(records[0]["sketch"])
        paths = []
        for index, prompt in enumerate(config.sample_prompts or [records[0].captions[0]]):
            request = GarmentRequest(prompt=prompt, sketch=sketch, height=config.height, width=config.width,
                                     num_inference_steps=config.sample_steps, sketch_scale=config.sample_sketch_scale,
                                     guidance_scale=config.sample_guidance_scale, seed=config.sample_seed + index)
            with accelerator.autocast():
                image = pipeline(request).images[0]
            paths.append(save_sample(context, image, index, step, request.params()))
        logger.info("samples at step %d: %s", step, ", ".join(p.name for p in paths))
        return paths
    finally:
        gam.install()  # the pipeline re-wired ref_unet and the processors' state
        if was_training:
            gam.train()


def export_final(context: TrainerContext, config: GamConfig, gam: GarmentAppearanceModel, step: int) -> Path:
    """``final/gam.safetensors`` (official GAM keys; fp16 for fp16 runs) + atelier_model.json."""
    from safetensors.torch import save_file

    final = context.final_dir
    final.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if config.mixed_precision == "fp16" else torch.float32
    tensors = {key: value.detach().to("cpu", dtype).contiguous()
               for key, value in trainable_state(gam.state_modules()).items()}
    save_file(tensors, str(final / WEIGHTS_FILE), metadata={"format": "imaggarment_gam", "step": str(step)})
    card = {
        "kind": "garment_gam",
        "method": METHOD,
        "weights": {"garment_gam": WEIGHTS_FILE},
        "format": "imaggarment_gam",
        "base_model": config.pretrained_model,
        "vae": config.vae,
        "height": config.height,
        "width": config.width,
        "steps": step,
        "run_id": context.run_id,
    }
    write_model_card(final, card)
    logger.info("final GAM written to %s", final / WEIGHTS_FILE)
    return final


def main(argv: list[str] | None = None) -> int:
    return run_cli(METHOD, GamConfig, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
