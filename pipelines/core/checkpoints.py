"""Checkpoint files: safe reading, hub/local resolution and strict, reported loading.

Every loader in the studio goes through here so that
- pickled ``.pt``/``.bin`` files are only ever read with ``torch.load(weights_only=True)``;
- a model location is either a local file/folder or a hub id, resolved without ever hanging offline;
- loading is strict and reported: the caller gets a :class:`LoadReport` listing every tensor placed, and
  a :class:`CheckpointError` naming the first offending keys on missing, unexpected or mis-shaped tensors.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch
from safetensors.torch import load_file

from pipelines.core.weightfiles import check_weights_file, explain_load_error
from pipelines.types import CheckpointError, ModelUnavailableError

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}


@dataclass
class LoadReport:
    """What a loader placed: ``loaded`` target names, plus ``ignored`` source keys it skipped on purpose."""

    source: str
    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    num_parameters: int = 0

    def summary(self) -> str:
        return (
            f"{self.source}: loaded {len(self.loaded)} tensors ({self.num_parameters / 1e6:.2f}M parameters)"
            + (f", ignored {len(self.ignored)} keys by design" if self.ignored else "")
        )


def _short_list(keys: Iterable[str], limit: int = 6) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def read_state_dict(path: str | os.PathLike) -> dict:
    """Read a checkpoint file into a (possibly nested) dict of tensors.

    The file is first named for what it is (:func:`~pipelines.core.weightfiles.check_weights_file`: git-LFS
    pointer, HTML page, empty, truncated); ``.safetensors`` is then read with safetensors, pickled formats only
    with ``weights_only=True`` (no code execution; a pickle holding Python objects is refused in one sentence).
    Every failure is a :class:`CheckpointError` starting with the file name.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix != ".safetensors" and path.suffix not in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path.name}: unsupported checkpoint type {path.suffix!r} (use .safetensors, .pt, .pth, .bin)"
        )
    check_weights_file(path)
    try:
        if path.suffix == ".safetensors":
            data = dict(load_file(str(path), device="cpu"))
        else:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt files raise many different types
        raise explain_load_error(path, error) from None
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path.name}: expected a dict of tensors, found {type(data).__name__}")
    return dict(data)


def unwrap(state: Mapping, *wrappers: str) -> dict:
    """Descend into wrapper keys such as ``module`` (DeepSpeed) or ``state_dict`` (Lightning) if present."""
    state = dict(state)
    for wrapper in wrappers:
        if wrapper in state and isinstance(state[wrapper], Mapping):
            state = dict(state[wrapper])
    return state


def flatten(state: Mapping, prefix: str = "") -> dict[str, torch.Tensor]:
    """``{"a": {"b": t}}`` -> ``{"a.b": t}`` (the colour adapter ``.bin`` nests by sub-module)."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, torch.Tensor):
            flat[name] = value
    return flat


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys starting with ``prefix``, with it removed (other keys dropped)."""
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def drop_leading(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Remove a leading wrapper prefix (``module.`` from DDP/DeepSpeed) where present."""
    return {(key[len(prefix):] if key.startswith(prefix) else key): value for key, value in state.items()}


def key_problems(expected: Iterable[str], found: Iterable[str], order=None) -> list[str]:
    """"missing a, b (N in all)" / "unexpected c (M in all)" for two key sets (``order``: sort key of missing)."""
    expected, found = set(expected), set(found)
    missing, unexpected = sorted(expected - found, key=order), sorted(found - expected)
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:5])} ({len(missing)} in all)")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:5])} ({len(unexpected)} in all)")
    return parts


def shape_problems(expected: Mapping[str, tuple], state: Mapping[str, torch.Tensor]) -> list[str]:
    """Mis-shaped, missing and unexpected keys of ``state`` against ``{key: shape}``, as sentences."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = [
        f"{key} (file {tuple(state[key].shape)}, model {tuple(expected[key])})"
        for key in sorted(set(expected) & set(state))
        if tuple(state[key].shape) != tuple(expected[key])
    ]
    problems = []
    if mis_shaped:
        problems.append("mis-shaped: " + _short_list(mis_shaped))
    if missing:
        problems.append("missing: " + _short_list(missing))
    if unexpected:
        problems.append("unexpected: " + _short_list(unexpected))
    return problems


def load_strict(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    report: LoadReport | None = None,
    target_prefix: str = "",
) -> LoadReport:
    """Copy ``state`` into ``module`` requiring an exact key and shape match.

    Raises :class:`CheckpointError` naming missing, unexpected and mis-shaped keys.
    """
    report = report or LoadReport(source)
    own = module.state_dict()
    problems = shape_problems({key: tuple(value.shape) for key, value in own.items()}, state)
    if problems:
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict({key: value.to(own[key].dtype) for key, value in state.items()}, strict=True)
    report.loaded.extend(target_prefix + key for key in state)
    report.num_parameters += sum(value.numel() for value in state.values())
    return report


def check_shapes(expected: Mapping[str, tuple], state: Mapping[str, torch.Tensor], source: str) -> None:
    """Validate a flat state dict against ``{key: shape}``; raise naming every problem kind."""
    problems = shape_problems(expected, state)
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))


def offline_hint(location: str) -> str:
    return (
        f"'{location}' is not available locally and the Hugging Face Hub cannot be reached. "
        f"Fix: connect to the internet once (the files are cached), or run "
        f"`huggingface-cli download {location}` on a connected machine and copy the cache, or point the "
        f"preset/CLI at a local folder; the 'tiny' preset works offline."
    )


def resolve_file(location: str, filename: str | None = None, subfolder: str | None = None) -> Path:
    """A local path for ``location`` (a file, a folder, or a hub repo id) + optional ``subfolder/filename``.

    Hub downloads are attempted only when HF_HUB_OFFLINE is not set; failures raise
    :class:`ModelUnavailableError` with how to fix it, never hang forever (huggingface-hub's own timeout).
    """
    local = Path(location).expanduser()
    if local.is_file():
        return local
    if local.is_dir():
        candidate = local
        if subfolder:
            candidate = candidate / subfolder
        if filename:
            candidate = candidate / filename
        if not candidate.exists():
            raise ModelUnavailableError(f"{candidate} does not exist (looked inside local folder {local})")
        return candidate
    if filename is None:
        raise ModelUnavailableError(f"{location}: not a local file or folder")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(location, filename, subfolder=subfolder))
    except Exception as error:
        raise ModelUnavailableError(offline_hint(location) + f" ({type(error).__name__})") from error
