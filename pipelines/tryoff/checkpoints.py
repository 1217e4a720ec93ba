"""TryOffAnyone weights: the loader for the official ``model.safetensors`` (``{i}.{j}.<param>`` over the
transformer blocks of down, MID and up blocks) and the tiny writer in the same layout."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipelines.core.checkpoints import drop_leading, key_problems, read_state_dict
from pipelines.core.concat_inpaint import WeightSet, weight_set_of
from pipelines.core.tiny import tiny_unet
from pipelines.types import CheckpointError

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "tryoff_anyone"
OFFICIAL_FILENAME = "model.safetensors"


def transformer_groups(unet) -> list[str]:
    """Module names of the ``attentions`` ModuleLists in TryOffAnyone's order: down blocks, MID, up blocks."""
    groups = [f"down_blocks.{i}.attentions" for i, block in enumerate(unet.down_blocks) if getattr(block, "attentions", None)]
    if getattr(unet.mid_block, "attentions", None):
        groups.append("mid_block.attentions")
    groups += [f"up_blocks.{i}.attentions" for i, block in enumerate(unet.up_blocks) if getattr(block, "attentions", None)]
    return groups


def tryoff_key_map(unet) -> dict[str, str]:
    """Official key ``{i}.{j}.param`` -> the UNet parameter name ``<group i>.{j}.param``."""
    mapping: dict[str, str] = {}
    for i, group in enumerate(transformer_groups(unet)):
        for j, block in enumerate(unet.get_submodule(group)):
            for name, _ in block.named_parameters():
                mapping[f"{i}.{j}.{name}"] = f"{group}.{j}.{name}"
    return mapping


def load_tryoffanyone(path: str | Path, inpaint_unet, name: str = CHECKPOINT_NAME) -> WeightSet:
    """The TryOffAnyone weight set (whole transformer blocks minus the unused attn2) for the inpainting UNet.

    Raises :class:`CheckpointError` naming the file and the first missing / unexpected / mis-shaped keys.
    """
    path = Path(path)
    state = drop_leading(read_state_dict(path), "module.")
    bad = sorted(key for key, value in state.items() if not isinstance(value, torch.Tensor))
    if bad:
        raise CheckpointError(f"{path.name}: non-tensor entries {', '.join(bad[:5])}")
    mapping = tryoff_key_map(inpaint_unet)
    parts = key_problems(mapping, state)
    if parts:
        raise CheckpointError(
            f"{path.name}: not a TryOffAnyone weight set for this UNet "
            f"({len(transformer_groups(inpaint_unet))} transformer groups): " + "; ".join(parts)
        )
    tensors = {mapping[key]: value for key, value in state.items()}
    skipped = sorted(key for key in tensors if ".attn2." in key)
    # Shape-check everything (attn2 included) so a wrong file fails loudly, then drop attn2.
    weight_set_of(name, {key: tensors[key] for key in skipped}, inpaint_unet, f"{path.name} (attn2)")
    weight_set = weight_set_of(name, {k: v for k, v in tensors.items() if k not in skipped}, inpaint_unet, path.name)
    weight_set.report.ignored.extend(skipped)
    logger.info(weight_set.report.summary())
    return weight_set


def write_tiny_tryoffanyone(root: str | Path) -> Path:
    """A tiny TryOffAnyone file in the official ``{i}.{j}.param`` layout for the tiny inpainting UNet."""
    from safetensors.torch import save_file


    unet = tiny_unet(9, seed=1)  # the same base as the tiny inpaint model
    params = dict(unet.named_parameters())
    torch.manual_seed(23)
    state = {
        key: (params[target] + 0.2 * torch.randn_like(params[target])).detach().contiguous()
        for key, target in tryoff_key_map(unet).items()
    }
    path = Path(root) / "checkpoints" / "tryoffanyone" / OFFICIAL_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


