"""Weights of the dressing pipeline: the IMAGDressing-v1 checkpoint and our per-slot garment LoRAs.

IMAGDressing-v1 ``IMAGDressing-v1_512.pt`` (HF ``feishen29/IMAGDressing``): a torch dict with the weights
under ``["module"]``:

- ``ref_unet.*``  the full garment UNet (diffusers naming; the base SD1.5 UNet config), loaded strictly;
- ``proj.*``      the IP-Adapter-Plus Resampler (see :mod:`pipelines.dressing.resampler`), loaded strictly;
- ``adapter_modules.<i>.to_k_ref.weight`` / ``.to_v_ref.weight``: Dressing-Attention K'/V' of the
  denoising UNet, ``i`` indexing ``unet.attn_processors`` in diffusers order (the attn1 layers sit at
  even ``i``); loaded into :class:`~pipelines.core.attention.MixedAttnProcessor` objects kept OUTSIDE the
  shared UNet;
- ``unet.*``      a copy of the denoising UNet the official code never used: reported as ignored.

Anything else is named in a :class:`~pipelines.core.checkpoints.CheckpointError`.

Slot LoRAs (AnyDressing's Garment-Specific Feature Extractor): one LoRA set per garment slot (or per
garment type) on the garment UNet's self-attention Q, K, V. Ours are saved as safetensors::

    {label}.{attn1 module path}.to_q.lora_A.weight   (rank, C)
    {label}.{attn1 module path}.to_q.lora_B.weight   (C, rank)      ... to_k, to_v likewise

with metadata ``format=atelier-slot-lora``, ``rank``, ``alpha`` and ``labels`` (JSON list).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from pipelines.core.attention import MixedAttnProcessor, hidden_size_of, processor_names
from pipelines.core.checkpoints import (
    LoadReport,
    check_shapes,
    drop_leading,
    flatten,
    load_strict,
    read_state_dict,
    strip_prefix,
    unwrap,
)
from pipelines.core.tiny import IMAGE_HIDDEN_DIM, TEXT_DIM, tiny_unet
from pipelines.dressing.resampler import Resampler, ResamplerConfig
from pipelines.types import CheckpointError

logger = logging.getLogger(__name__)

SLOT_LORA_FORMAT = "atelier-slot-lora"
PROJECTIONS = ("to_q", "to_k", "to_v")
# The tiny world's Resampler: CLIP hidden 48 in, cross_attention_dim 32 out, two 64-wide heads.
TINY_RESAMPLER = ResamplerConfig(
    dim=128, depth=2, heads=2, dim_head=64, num_queries=16, embedding_dim=IMAGE_HIDDEN_DIM, output_dim=TEXT_DIM, ff_mult=4
)


# ------------------------------------------------------------------------------------------ slot LoRAs
def _attn1_names(unet) -> list[str]:
    return [name for name in processor_names(unet) if ".attn1." in name]


def _module_path(processor_name: str) -> str:
    return processor_name.rsplit(".processor", 1)[0]


class SlotLoRALayer(nn.Module):
    """LoRA factors of one attn1 layer for every slot: ``down`` (3, S, r, C) and ``up`` (3, S, C, r) for Q, K, V."""

    def __init__(self, num_slots: int, width: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.empty(3, num_slots, rank, width))
        self.up = nn.Parameter(torch.zeros(3, num_slots, width, rank))  # zero: a no-op until trained
        nn.init.kaiming_uniform_(self.down.view(-1, width), a=math.sqrt(5))

    def delta(self, projection: int, hidden: torch.Tensor, slot_ids: torch.Tensor, scale: float) -> torch.Tensor:
        """Per-row LoRA update for (N, L, C) ``hidden``; row n uses slot ``slot_ids[n]`` (-1 = none)."""
        valid = slot_ids >= 0
        index = slot_ids.clamp(min=0)
        down = self.down[projection, index].to(hidden.dtype)  # (N, r, C)
        up = self.up[projection, index].to(hidden.dtype)  # (N, C, r)
        low = torch.einsum("nlc,nrc->nlr", hidden, down)
        out = torch.einsum("nlr,ncr->nlc", low, up) * scale
        return out * valid.to(out.dtype)[:, None, None]


class SlotLoRAs(nn.Module):
    """Per-slot LoRA sets on the garment UNet's self-attention Q/K/V.

    ``labels``: the name of each set, e.g. ("0", "1", "2", "3") for positional slots or
    ("upper", "lower", "hat") for per-garment-type sets (AnyDressing trains one set per type).
    """

    def __init__(self, layer_widths: Mapping[str, int], labels: Sequence[str], rank: int = 16, alpha: float | None = None) -> None:
        super().__init__()
        labels = [str(label) for label in labels]
        if not labels or len(set(labels)) != len(labels) or any(not l or "." in l for l in labels):
            raise ValueError(f"slot LoRA labels must be distinct non-empty names without dots, got {labels!r}")
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"slot LoRA rank={rank!r} must be a positive integer")
        self.labels = labels
        self.rank = rank
        self.alpha = float(alpha if alpha is not None else rank)
        self.names = list(layer_widths)
        self.layers = nn.ModuleDict(
            {name.replace(".", "__"): SlotLoRALayer(len(labels), width, rank) for name, width in layer_widths.items()}
        )

    @classmethod
    def for_unet(cls, garment_unet, labels: Sequence[str] = ("0", "1", "2", "3"), rank: int = 16, alpha: float | None = None) -> "SlotLoRAs":
        widths = {name: hidden_size_of(garment_unet, name) for name in _attn1_names(garment_unet)}
        return cls(widths, labels, rank, alpha)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def layer(self, processor_name: str) -> SlotLoRALayer | None:
        return self.layers[processor_name.replace(".", "__")] if processor_name.replace(".", "__") in self.layers else None

    def is_active(self) -> bool:
        """False while every ``up`` factor is zero (untrained): the pipeline then skips the LoRA maths."""
        return any(bool(layer.up.detach().abs().sum() > 0) for layer in self.layers.values())

    def slot_for(self, position: int, category: str | None) -> int:
        """The set used by the garment at ``position``: the set named after its category, else the set
        named after its position ("0", "1", ...), else -1 (no LoRA)."""
        if category and category in self.labels:
            return self.labels.index(category)
        if str(position) in self.labels:
            return self.labels.index(str(position))
        return -1

    def state_for_file(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name in self.names:
            layer = self.layer(name)
            for slot, label in enumerate(self.labels):
                for p, projection in enumerate(PROJECTIONS):
                    prefix = f"{label}.{_module_path(name)}.{projection}"
                    out[f"{prefix}.lora_A.weight"] = layer.down[p, slot].detach().float().contiguous().cpu()
                    out[f"{prefix}.lora_B.weight"] = layer.up[p, slot].detach().float().contiguous().cpu()
        return out


def save_slot_loras(loras: SlotLoRAs, path: str | Path) -> Path:
    """Write ``loras`` as safetensors (layout in the module docstring)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": SLOT_LORA_FORMAT, "rank": str(loras.rank), "alpha": str(loras.alpha), "labels": json.dumps(loras.labels)}
    save_file(loras.state_for_file(), str(path), metadata=metadata)
    return path


def load_slot_loras(path: str | Path, garment_unet) -> tuple[SlotLoRAs, LoadReport]:
    """Read a slot-LoRA safetensors file for ``garment_unet``; every layer/slot/projection must be present."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path.name}: slot LoRAs are stored as .safetensors")
    state = read_state_dict(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:
        raise CheckpointError(f"{path.name}: cannot read metadata ({error})") from error
    if metadata.get("format") != SLOT_LORA_FORMAT:
        raise CheckpointError(f"{path.name}: not a slot-LoRA file (metadata format={metadata.get('format')!r})")
    try:
        labels = json.loads(metadata["labels"])
        rank, alpha = int(metadata["rank"]), float(metadata["alpha"])
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path.name}: bad slot-LoRA metadata ({error})") from error
    loras = SlotLoRAs.for_unet(garment_unet, labels, rank, alpha)
    expected = {key: tuple(value.shape) for key, value in loras.state_for_file().items()}
    check_shapes(expected, state, f"{path.name}")
    with torch.no_grad():
        for name in loras.names:
            layer = loras.layer(name)
            for slot, label in enumerate(labels):
                for p, projection in enumerate(PROJECTIONS):
                    prefix = f"{label}.{_module_path(name)}.{projection}"
                    layer.down[p, slot].copy_(state[f"{prefix}.lora_A.weight"])
                    layer.up[p, slot].copy_(state[f"{prefix}.lora_B.weight"])
    report = LoadReport(path.name, loaded=sorted(state), num_parameters=sum(t.numel() for t in state.values()))
    logger.info(report.summary())
    return loras, report


# ------------------------------------------------------------------------------------ IMAGDressing-v1
def dressing_processors(unet) -> dict[str, MixedAttnProcessor]:
    """An untrained Dressing-Attention processor for every attn1 of ``unet`` (by processor name)."""
    return {name: MixedAttnProcessor(name, hidden_size_of(unet, name)) for name in _attn1_names(unet)}


def load_imagdressing(path: str | Path, garment_unet, unet) -> tuple[Resampler, dict[str, MixedAttnProcessor], LoadReport]:
    """Load ``IMAGDressing-v1_512.pt``: ``ref_unet.*`` strictly into ``garment_unet`` (a UNet of the base
    config), ``proj.*`` into a new :class:`Resampler` sized from the tensors, ``adapter_modules.*`` into
    new Dressing-Attention processors for ``unet`` (the frozen denoising UNet). ``unet.*`` is ignored.

    Returns (resampler, processors, report); raises :class:`CheckpointError` naming missing, unexpected
    and mis-shaped keys (with both shapes).
    """
    path = Path(path)
    source = path.name
    state = flatten(drop_leading(unwrap(read_state_dict(path), "module", "state_dict"), "module."))
    report = LoadReport(source)

    known = ("ref_unet.", "proj.", "adapter_modules.", "unet.")
    stray = sorted(key for key in state if not key.startswith(known))
    if stray:
        shown = ", ".join(stray[:6])
        raise CheckpointError(f"{source}: unexpected keys {shown} ({len(stray)} in all): not an IMAGDressing checkpoint?")

    # 1. garment UNet
    garment_state = strip_prefix(state, "ref_unet.")
    if not garment_state:
        raise CheckpointError(f"{source}: no 'ref_unet.*' tensors: not an IMAGDressing checkpoint")
    load_strict(garment_unet, garment_state, f"{source} ref_unet.*", report, target_prefix="ref_unet.")

    # 2. Resampler
    proj_state = strip_prefix(state, "proj.")
    try:
        config = ResamplerConfig.from_state_dict(proj_state)
    except KeyError as error:
        raise CheckpointError(f"{source}: Resampler tensor 'proj.{error.args[0]}' is missing") from error
    if config.output_dim != garment_unet.config.cross_attention_dim:
        raise CheckpointError(
            f"{source}: proj.proj_out.weight gives {config.output_dim}-wide image tokens but the garment UNet's "
            f"cross_attention_dim is {garment_unet.config.cross_attention_dim}"
        )
    resampler = Resampler(config)
    load_strict(resampler, proj_state, f"{source} proj.*", report, target_prefix="proj.")

    # 3. Dressing-Attention K'/V' of the denoising UNet
    names = processor_names(unet)
    processors = dressing_processors(unet)
    expected = {}
    for index, name in enumerate(names):
        if name in processors:
            shape = tuple(processors[name].to_k_ref.weight.shape)
            expected[f"{index}.to_k_ref.weight"] = shape
            expected[f"{index}.to_v_ref.weight"] = shape
    adapters = strip_prefix(state, "adapter_modules.")
    check_shapes(expected, adapters, f"{source} adapter_modules.*")
    with torch.no_grad():
        for index, name in enumerate(names):
            if name in processors:
                processors[name].to_k_ref.weight.copy_(adapters[f"{index}.to_k_ref.weight"])
                processors[name].to_v_ref.weight.copy_(adapters[f"{index}.to_v_ref.weight"])
    report.loaded.extend(f"adapter_modules.{key}" for key in sorted(adapters))
    report.num_parameters += sum(t.numel() for t in adapters.values())

    # 4. the unused denoising-UNet copy
    report.ignored.extend(key for key in state if key.startswith("unet."))
    logger.info(report.summary())
    return resampler, processors, report


def write_tiny_imagdressing(root: Path) -> Path:
    """A tiny ``IMAGDressing-v1`` file in the official layout (fp16 under ``["module"]``)."""

    unet = tiny_unet(4, seed=0)  # the tiny base UNet (the denoising UNet)
    garment_unet = tiny_unet(4, seed=21)
    torch.manual_seed(22)
    resampler = Resampler(TINY_RESAMPLER)
    state = {f"ref_unet.{k}": v for k, v in garment_unet.state_dict().items()}
    state.update({f"proj.{k}": v for k, v in resampler.state_dict().items()})
    for index, name in enumerate(processor_names(unet)):
        if ".attn1." in name:
            attn = unet.get_submodule(_module_path(name))
            # Initialised from to_k/to_v as in training, plus a perturbation so "loaded" is observable.
            state[f"adapter_modules.{index}.to_k_ref.weight"] = attn.to_k.weight + 0.05 * torch.randn_like(attn.to_k.weight)
            state[f"adapter_modules.{index}.to_v_ref.weight"] = attn.to_v.weight + 0.05 * torch.randn_like(attn.to_v.weight)
    state.update({f"unet.{k}": v for k, v in list(unet.state_dict().items())[:4]})
    path = Path(root) / "checkpoints" / "IMAGDressing-v1_tiny.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"module": {k: v.detach().half().contiguous() for k, v in state.items()}}, path)
    return path
