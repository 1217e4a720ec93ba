"""The one trainer toolkit: every method's ``train()`` is its own numbered stages around these calls.

::

    accelerator, weight_dtype = setup_accelerator(config)                 # 1. device and precision
    loader = shard(accelerator, DataLoader(...))                          # 2./3. data (a shard per process)
    checkpoint, start_step = resume(config, trained)                      # 4. weights before the optimizer
    optimizer, lr_scheduler = make_optimizer(config, parameters, checkpoint)   # 5. (its state restored)
    save = checkpoint_saver(context, config, optimizer, lr_scheduler, modules, extra_state)
    step = train_loop(context, config, accelerator, models, optimizer, lr_scheduler, parameters,
                      endless(loader), compute_loss, save, sample, start_step)  # 6. stop/save/sample flags
    export_on_main(context, accelerator, export_final, ...)               # 7. once every rank is done

The run folder, checkpoint files, metrics and the model card (one schema) live in :mod:`training.common`.
torch and accelerate are imported inside the functions: the UI process imports the trainers' configs only.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Mapping

from training.common import Checkpoint, load_checkpoint, load_trainable_state, resolve_resume, trainable_state
from training.config import ConfigError

logger = logging.getLogger(__name__)


def setup_accelerator(config, find_unused_parameters: bool = False):
    """(accelerator, weight_dtype) with the checks every trainer shares (CPU needs mixed_precision 'no').
    ``find_unused_parameters``: for multi-GPU runs whose trained module has parameters outside the loss path
    (the GAM ref_unet's layers after its last recorded attn1)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    if config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)  # small models on a CPU: extra threads mostly add contention
    cuda = torch.cuda.is_available() and config.device != "cpu"
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but no CUDA GPU is available")
    if not cuda and config.mixed_precision != "no":
        raise ConfigError(f"mixed_precision: {config.mixed_precision!r} needs a CUDA GPU; set it to 'no' on CPU")
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else None
    accelerator = Accelerator(cpu=not cuda, mixed_precision=config.mixed_precision,
                              gradient_accumulation_steps=config.gradient_accumulation_steps, kwargs_handlers=handlers)
    # device_specific: each rank draws its own noise/timesteps/dropout (seed + rank; rank 0 = the 1-process run)
    set_seed(config.seed, device_specific=True)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)
    return accelerator, weight_dtype


def shard(accelerator, loader):
    """Multi-process runs: each process gets its own shard of every epoch (a 1-process run keeps ``loader``)."""
    return accelerator.prepare(loader) if accelerator.num_processes > 1 else loader


def resume(config, trained: Mapping[str, Any],
           check_state: Callable[[dict[str, Any]], None] | None = None) -> tuple[Checkpoint | None, int]:
    """``config.resume_from`` (a checkpoint folder or a run folder = its latest) loaded into ``trained`` (strict,
    by name) -> (checkpoint, its step); (None, 0) without one. ``check_state(state)`` refuses an incompatible
    checkpoint (another mode, other slot labels) before any weight is touched."""
    if not config.resume_from:
        return None, 0
    checkpoint = load_checkpoint(resolve_resume(config.resume_from))
    if check_state is not None:
        check_state(checkpoint.state)
    load_trainable_state(trained, checkpoint.tensors, str(checkpoint.path))
    logger.info("resumed from %s at step %d", checkpoint.path, checkpoint.step)
    return checkpoint, checkpoint.step


def make_optimizer(config, parameters: list, checkpoint: Checkpoint | None = None):
    """AdamW (or bitsandbytes AdamW8bit) + the configured schedule, restored from ``checkpoint`` when it holds
    their state. ``parameters``: tensors, or param-group dicts (a group may set its own ``lr``)."""
    import torch
    from diffusers.optimization import get_scheduler

    if config.use_8bit_adam:
        import bitsandbytes

        optimizer_class = bitsandbytes.optim.AdamW8bit
    else:
        optimizer_class = torch.optim.AdamW
    optimizer = optimizer_class(parameters, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer, num_warmup_steps=config.lr_warmup_steps,
                                 num_training_steps=config.max_train_steps)
    if checkpoint is not None and checkpoint.optimizer_state is not None:
        optimizer.load_state_dict(checkpoint.optimizer_state["optimizer"])
        lr_scheduler.load_state_dict(checkpoint.optimizer_state["scheduler"])
    elif checkpoint is not None:
        logger.warning("checkpoint has no optimizer state; the optimizer starts fresh")
    return optimizer, lr_scheduler


def checkpoint_saver(context, config, optimizer, lr_scheduler, modules: Callable[[], Mapping[str, Any]],
                     extra_state: Mapping[str, Any]) -> Callable[[int], Path]:
    """``save(step)``: the trainable tensors of ``modules()`` (unwrapped models, read at save time), the optimizer
    and schedule state when ``save_optimizer_state``, and ``extra_state`` (what resume checks) as ``step-N``."""

    def save(step: int) -> Path:
        state = {"optimizer": optimizer.state_dict(), "scheduler": lr_scheduler.state_dict()} \
            if config.save_optimizer_state else None
        return context.save_checkpoint(step, trainable_state(modules()), state, dict(extra_state))

    return save


def train_loop(context, config, accelerator, models, optimizer, lr_scheduler, parameters: list, batches,
               compute_loss, save, sample, start_step: int) -> int:
    """The optimizer-step loop of every trainer; returns the last step (the run is marked stopped on a stop).

    ``models``: the module, or a tuple of modules, gradients accumulate on. ``compute_loss(batch)`` returns the
    micro-batch loss, or a dict with ``"loss"`` and more named terms (averaged and written to the metrics).
    ``save(step)`` writes a checkpoint (every rank calls it; only rank 0's context writes), ``sample(step)`` writes
    sample images (main process only). A stop flag or signal saves, then leaves; the last step is always saved.
    """
    models = models if isinstance(models, tuple) else (models,)
    context.begin(start_step, config.max_train_steps)
    step = start_step
    accumulation = config.gradient_accumulation_steps
    while step < config.max_train_steps:
        sums: dict[str, float] = {}
        for _ in range(accumulation):
            batch = next(batches)
            with accelerator.accumulate(*models):
                terms = compute_loss(batch)
                terms = terms if isinstance(terms, Mapping) else {"loss": terms}
                accelerator.backward(terms["loss"])
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) / accumulation
        step += 1
        if not all(math.isfinite(value) for value in sums.values()):
            raise FloatingPointError(f"loss became non-finite at step {step} ({sums}); lower learning_rate or use "
                                     "fp32")
        loss = sums.pop("loss")
        actions = context.after_step(step, loss, lr_scheduler.get_last_lr()[0], **sums)
        if actions.sample and accelerator.is_main_process:  # the flag is shared; rank 0 alone writes samples
            sample(step)
        if actions.save:
            save(step)
        if actions.stop:
            context.finish("stopped", error="stopped by signal" if context.stopped_by_signal else "stop requested")
            return step
    if context.last_saved_step != step and step > start_step:
        save(step)
    return step


def export_on_main(context, accelerator, export, *args) -> None:
    """``export(*args)`` on the main process only, once every rank has finished training (skipped when the run
    already ended, e.g. stopped)."""
    if context.status is not None:
        return
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        export(*args)


def noisy_latents(latents, noise_scheduler, noise_offset: float = 0.0):
    """(noise, timesteps, noisy latents, target) for one denoising-MSE step on ``latents`` (B, 4, h, w)."""
    import torch

    noise = torch.randn_like(latents)
    if noise_offset > 0:  # per (image, channel) offset: lets the model learn very dark/bright images
        noise = noise + noise_offset * torch.randn(latents.shape[0], latents.shape[1], 1, 1, device=latents.device,
                                                   dtype=latents.dtype)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                              device=latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    return noise, timesteps, noisy, target


def save_sample(context, image, index: int, step: int, params: dict[str, Any]) -> Path:
    """``samples/step-N-i.png`` with the sample's parameters in the PNG metadata."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", json.dumps({**params, "step": step, "run_id": context.run_id}, default=str))
    path = context.samples_dir / f"step-{step:08d}-{index}.png"
    image.save(path, pnginfo=info)
    return path
