"""Shared fixtures: the tiny model set is built once per test session in a temp dir."""

from __future__ import annotations

import os

import pytest
import torch

# Tiny models gain nothing from intra-op threads, and 2-core machines running a browser, a studio server
# and trainer processes at once are slowed badly by oversubscription.
torch.set_num_threads(1)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    """A models folder whose ``tiny/`` holds every tiny model (what ModelRegistry(models_dir=...) expects)."""
    from pipelines.core.tiny import build_tiny_model_set

    root = tmp_path_factory.mktemp("models")
    build_tiny_model_set(root / "tiny")
    return root


@pytest.fixture(scope="session")
def tiny_models(models_dir):
    """Path to a folder holding every tiny model in its standard layout (see pipelines/core/tiny.py)."""
    return models_dir / "tiny"


@pytest.fixture(scope="session")
def tiny_registry(models_dir):
    """One shared tiny-preset registry for the session (models load lazily, once)."""
    from pipelines.core.registry import ModelRegistry

    return ModelRegistry("tiny", models_dir=models_dir, device="cpu")
