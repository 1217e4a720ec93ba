"""CatVTON weights: the loader for the official ``<variant>/attention/model.safetensors`` (80 attn1 tensors
``{8k}.to_q...`` for SD1.5) and the tiny writer in the same layout."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipelines.core.attention import attn1_modules
from pipelines.core.checkpoints import read_state_dict
from pipelines.core.concat_inpaint import WeightSet, attn1_set_from_indexed
from pipelines.core.tiny import tiny_unet
from pipelines.types import CheckpointError

logger = logging.getLogger(__name__)


def load_catvton(path: str | Path, inpaint_unet, name: str = "tryon_catvton") -> WeightSet:
    """The CatVTON attn1 weight set from ``<variant>/attention/model.safetensors``.

    The file holds ``{8k}.to_q.weight``, ``.to_k.weight``, ``.to_v.weight``, ``.to_out.0.weight``,
    ``.to_out.0.bias`` for the k-th attn1 layer in ``named_modules`` order (80 tensors for SD1.5).
    Raises :class:`CheckpointError` naming the file and the missing/unexpected/mis-shaped keys.
    """
    path = Path(path)
    state = read_state_dict(path)
    bad = sorted(key for key, value in state.items() if not isinstance(value, torch.Tensor))
    if bad:
        raise CheckpointError(f"{path.name}: non-tensor entries {', '.join(bad[:5])}")
    weight_set = attn1_set_from_indexed(state, inpaint_unet, name, path.name)
    logger.info(weight_set.report.summary())
    return weight_set


def write_tiny_catvton(root: str | Path) -> Path:
    """A tiny CatVTON file in the official layout (``{8k}.to_q.weight`` ...) for the tiny inpainting UNet."""
    from safetensors.torch import save_file


    unet = tiny_unet(9, seed=1)  # the same base as the tiny inpaint model
    torch.manual_seed(21)
    state: dict[str, torch.Tensor] = {}
    for k, (_, module) in enumerate(attn1_modules(unet)):
        for proj, tensor in (
            ("to_q.weight", module.to_q.weight), ("to_k.weight", module.to_k.weight),
            ("to_v.weight", module.to_v.weight), ("to_out.0.weight", module.to_out[0].weight),
            ("to_out.0.bias", module.to_out[0].bias),
        ):
            # A clear change from the base so a test can tell the weight sets apart.
            state[f"{8 * k}.{proj}"] = (tensor + 0.2 * torch.randn_like(tensor)).detach().contiguous()
    path = Path(root) / "checkpoints" / "catvton" / "attention" / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
