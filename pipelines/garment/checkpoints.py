"""Loaders (and tiny writers) for the official IMAGGarment-1 checkpoint layouts: GAM, colour adapter, LEM.

Layouts (see ``shared/specs/garment-design.md``):
- GAM ``mp_rank_00_model_states.pt``: ``{"module": {"ref_unet.*", "adapter_modules.{i}.to_k_ref.weight",
  "adapter_modules.{i}.to_v_ref.weight", "unet.*"}}``; ``i`` indexes ``unet.attn_processors`` (attn1 at
  even i). The ``unet.*`` copy was never loaded by the official code: it is reported as ignored.
- Colour adapter ``.bin``: ``{"image_proj": {proj.weight, proj.bias, norm.weight, norm.bias},
  "color_adapter" | "ip_adapter": {"{odd i}.to_k_ip.weight", "{odd i}.to_v_ip.weight"}}``; the
  ``.safetensors`` form uses flat ``image_proj.`` / ``color_adapter.`` prefixes.
- LEM accelerate ``pytorch_model.bin``: ``unet.*`` (the full 9-channel UNet) and ``attn_block.{8j}.*``,
  optionally under a leading ``module.``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from pipelines.core.attention import (
    ImageTokenAttnProcessor,
    MixedAttnProcessor,
    attn1_modules,
    hidden_size_of,
    processor_names,
)
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
from pipelines.core.concat_inpaint import WeightSet, attn1_set_from_indexed, attn1_set_from_named
from pipelines.core.tiny import IMAGE_EMBED_DIM, tiny_unet
from pipelines.types import CheckpointError

logger = logging.getLogger(__name__)


class ImageProjection(nn.Module):
    """Colour adapter ``image_proj``: CLIP image embedding (B, E) -> (B, T, D) colour tokens."""

    def __init__(self, embed_dim: int, token_dim: int, num_tokens: int = 4) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.token_dim = token_dim
        self.proj = nn.Linear(embed_dim, num_tokens * token_dim)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(embeds).reshape(-1, self.num_tokens, self.token_dim)  # (B, T, D)
        return self.norm(tokens)


def mixed_processors(unet) -> dict[str, MixedAttnProcessor]:
    """A fresh (untrained) mixed-attention processor for every attn1 of ``unet``, keyed by processor name."""
    return {
        name: MixedAttnProcessor(name, hidden_size_of(unet, name))
        for name in processor_names(unet)
        if ".attn1." in name
    }


def color_processors(unet, token_dim: int) -> dict[str, ImageTokenAttnProcessor]:
    return {
        name: ImageTokenAttnProcessor(name, hidden_size_of(unet, name), token_dim)
        for name in processor_names(unet)
        if ".attn2." in name
    }


def load_gam(path: str | Path, ref_unet, unet) -> tuple[dict[str, MixedAttnProcessor], LoadReport]:
    """Load a GAM checkpoint: ``ref_unet.*`` strictly into ``ref_unet``, ``adapter_modules.*`` into new
    mixed-attention processors for ``unet`` (the frozen main UNet). Returns (processors, report)."""
    path = Path(path)
    source = path.name
    state = drop_leading(unwrap(read_state_dict(path), "module"), "module.")
    state = flatten(state)
    report = LoadReport(source)
    ref_state = strip_prefix(state, "ref_unet.")
    if not ref_state:
        raise CheckpointError(f"{source}: no 'ref_unet.*' tensors: not a GAM checkpoint")
    load_strict(ref_unet, ref_state, f"{source} ref_unet.*", report, target_prefix="ref_unet.")

    names = processor_names(unet)
    processors = mixed_processors(unet)
    expected = {}
    for index, name in enumerate(names):
        if name in processors:
            size = processors[name].to_k_ref.weight.shape
            expected[f"{index}.to_k_ref.weight"] = size
            expected[f"{index}.to_v_ref.weight"] = size
    adapters = strip_prefix(state, "adapter_modules.")
    check_shapes(expected, adapters, f"{source} adapter_modules.*")
    for index, name in enumerate(names):
        if name in processors:
            processors[name].to_k_ref.weight.data.copy_(adapters[f"{index}.to_k_ref.weight"])
            processors[name].to_v_ref.weight.data.copy_(adapters[f"{index}.to_v_ref.weight"])
    report.loaded.extend(f"adapter_modules.{key}" for key in sorted(adapters))
    report.num_parameters += sum(t.numel() for t in adapters.values())

    known = ("ref_unet.", "adapter_modules.", "unet.")
    report.ignored.extend(key for key in state if key.startswith("unet."))
    stray = sorted(key for key in state if not key.startswith(known))
    if stray:
        raise CheckpointError(f"{source}: unexpected keys {', '.join(stray[:5])} ({len(stray)} in all)")
    logger.info(report.summary())
    return processors, report


def load_color_adapter(
    path: str | Path, unet, embed_dim: int, num_tokens: int = 4
) -> tuple[ImageProjection, dict[str, ImageTokenAttnProcessor], LoadReport]:
    """Load the colour adapter (``image_proj`` + ``color_adapter``/``ip_adapter``) for ``unet``."""
    path = Path(path)
    source = path.name
    state = flatten(drop_leading(unwrap(read_state_dict(path), "module"), "module."))
    report = LoadReport(source)
    proj_state = strip_prefix(state, "image_proj.")
    adapter_prefix = next((p for p in ("color_adapter.", "ip_adapter.") if any(k.startswith(p) for k in state)), None)
    if not proj_state or adapter_prefix is None:
        raise CheckpointError(
            f"{source}: expected 'image_proj' and 'color_adapter' (or 'ip_adapter') entries; found top-level "
            f"{sorted({k.split('.')[0] for k in state})[:6]}"
        )
    token_dim = unet.config.cross_attention_dim
    projection = ImageProjection(embed_dim, token_dim, num_tokens)
    load_strict(projection, proj_state, f"{source} image_proj", report, target_prefix="image_proj.")
    processors = color_processors(unet, token_dim)
    names = processor_names(unet)
    expected = {}
    for index, name in enumerate(names):
        if name in processors:
            expected[f"{index}.to_k_ip.weight"] = processors[name].to_k_ip.weight.shape
            expected[f"{index}.to_v_ip.weight"] = processors[name].to_v_ip.weight.shape
    adapters = strip_prefix(state, adapter_prefix)
    check_shapes(expected, adapters, f"{source} {adapter_prefix}*")
    for index, name in enumerate(names):
        if name in processors:
            processors[name].to_k_ip.weight.data.copy_(adapters[f"{index}.to_k_ip.weight"])
            processors[name].to_v_ip.weight.data.copy_(adapters[f"{index}.to_v_ip.weight"])
    report.loaded.extend(adapter_prefix + key for key in sorted(adapters))
    report.num_parameters += sum(t.numel() for t in adapters.values())
    stray = sorted(k for k in state if not k.startswith(("image_proj.", adapter_prefix)))
    if stray:
        raise CheckpointError(f"{source}: unexpected keys {', '.join(stray[:5])}")
    logger.info(report.summary())
    return projection, processors, report


def load_lem(path: str | Path, inpaint_unet, name: str = "garment_lem") -> WeightSet:
    """The LEM's attn1 weight set for the shared inpainting UNet (``unet.*`` by name, else ``attn_block.*``)."""
    path = Path(path)
    state = flatten(drop_leading(unwrap(read_state_dict(path), "module"), "module."))
    unet_state = strip_prefix(state, "unet.")
    if unet_state:
        weight_set = attn1_set_from_named(unet_state, inpaint_unet, name, f"{path.name} unet.*")
        weight_set.report.ignored.extend(
            f"unet.{key}" for key in unet_state if f"{key}" not in weight_set.tensors
        )
        weight_set.report.ignored.extend(key for key in state if key.startswith("attn_block."))
    else:
        block_state = strip_prefix(state, "attn_block.")
        if not block_state:
            raise CheckpointError(f"{path.name}: neither 'unet.*' nor 'attn_block.*' tensors: not a LEM checkpoint")
        weight_set = attn1_set_from_indexed(block_state, inpaint_unet, name, f"{path.name} attn_block.*")
    logger.info(weight_set.report.summary())
    return weight_set


# --------------------------------------------------------------------------------------- tiny writers
def _tiny_main_unet():

    return tiny_unet(4, seed=0)


def write_tiny_gam_checkpoint(root: Path) -> Path:
    """A GAM file in the official DeepSpeed layout, with tiny shapes (fp16, under ``["module"]``)."""

    torch.manual_seed(10)
    unet = _tiny_main_unet()
    ref_unet = tiny_unet(4, seed=11)
    state = {f"ref_unet.{k}": v for k, v in ref_unet.state_dict().items()}
    for index, name in enumerate(processor_names(unet)):
        if ".attn1." in name:
            attn = unet.get_submodule(name.rsplit(".processor", 1)[0])
            # initialised from to_k/to_v as in training, plus a perturbation so "loaded" is observable
            state[f"adapter_modules.{index}.to_k_ref.weight"] = attn.to_k.weight + 0.05 * torch.randn_like(attn.to_k.weight)
            state[f"adapter_modules.{index}.to_v_ref.weight"] = attn.to_v.weight + 0.05 * torch.randn_like(attn.to_v.weight)
    state.update({f"unet.{k}": v for k, v in list(unet.state_dict().items())[:4]})
    path = Path(root) / "checkpoints" / "gam_mp_rank_00_model_states.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"module": {k: v.detach().half() for k, v in state.items()}}, path)
    return path


def write_tiny_color_checkpoint(root: Path, adapter_key: str = "color_adapter", name: str = "color_adapter.bin") -> Path:

    torch.manual_seed(12)
    unet = _tiny_main_unet()
    projection = ImageProjection(IMAGE_EMBED_DIM, unet.config.cross_attention_dim)
    adapter = {}
    for index, proc_name in enumerate(processor_names(unet)):
        if ".attn2." in proc_name:
            hidden = hidden_size_of(unet, proc_name)
            adapter[f"{index}.to_k_ip.weight"] = torch.randn(hidden, unet.config.cross_attention_dim) * 0.2
            adapter[f"{index}.to_v_ip.weight"] = torch.randn(hidden, unet.config.cross_attention_dim) * 0.2
    path = Path(root) / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"image_proj": projection.state_dict(), adapter_key: adapter}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in flatten(data).items()}, str(path))
    else:
        torch.save(data, path)
    return path


def write_tiny_lem_checkpoint(root: Path) -> Path:
    """An accelerate ``pytorch_model.bin`` of the LEM: ``unet.*`` (9-ch, trained attn1) + ``attn_block.*``."""

    torch.manual_seed(13)
    unet = tiny_unet(9, seed=1)  # the same base as the tiny inpaint model
    with torch.no_grad():
        for _, module in attn1_modules(unet):
            for linear in (module.to_q, module.to_k, module.to_v, module.to_out[0]):
                linear.weight.add_(0.05 * torch.randn_like(linear.weight))
    state = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    for k, (_, module) in enumerate(attn1_modules(unet)):
        for proj, tensor in (
            ("to_q.weight", module.to_q.weight), ("to_k.weight", module.to_k.weight), ("to_v.weight", module.to_v.weight),
            ("to_out.0.weight", module.to_out[0].weight), ("to_out.0.bias", module.to_out[0].bias),
        ):
            state[f"attn_block.{8 * k}.{proj}"] = tensor
    path = Path(root) / "checkpoints" / "lem_pytorch_model.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in state.items()}, path)
    return path
