"""Model code: one package per method, shared building blocks in ``core`` and ``preprocess``.

Registering a method is ONE line: its package name in :data:`METHODS`. Each method package's torch-free
``__init__`` declares ``TASKS`` (service task name -> ``"module:function"`` taking ``(registry, params,
control)``) and ``TINY_CHECKPOINTS`` (preset checkpoint name -> ``"module:function"`` writing it in the
official layout for the tiny preset); :func:`declared` collects them, so nothing here imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

METHODS = ("garment", "tryon", "tryoff", "temu", "dressing", "posedesign")


def declared(table: str) -> dict[str, str]:
    """The union of every method package's ``table`` ("TASKS" or "TINY_CHECKPOINTS"); a name declared by two
    methods is refused, naming both."""
    merged: dict[str, str] = {}
    owner: dict[str, str] = {}
    for method in METHODS:
        for name, spec in getattr(importlib.import_module(f"pipelines.{method}"), table).items():
            if name in merged:
                raise ValueError(f"{table} entry {name!r} is declared by both {owner[name]} and {method}")
            merged[name], owner[name] = spec, method
    return merged


def resolve(spec: str) -> Any:
    """``"package.module:function"`` -> the function (imported on first use)."""
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
