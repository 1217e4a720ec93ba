"""Shared fixtures: the tiny model set is built once per test session in a temp dir."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Path to a folder holding every tiny model in its standard layout (see pipelines/tiny.py)."""
    from pipelines.tiny import build_tiny_model_set

    return build_tiny_model_set(tmp_path_factory.mktemp("tiny_models"))
