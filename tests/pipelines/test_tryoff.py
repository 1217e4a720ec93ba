"""TryOffAnyone try-off on the tiny preset: end to end, loader layout and errors, background, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.tryoff.checkpoints import load_tryoffanyone
from pipelines.preprocess.images import whiten_background
from pipelines.tryoff.pipeline import TryOffAnyonePipeline
from pipelines.tryoff.cli import main
from pipelines.tryoff.checkpoints import transformer_groups, write_tiny_tryoffanyone
from pipelines.types import CheckpointError, TryOffRequest
from tests.pipelines.test_tryon import box_mask, fresh_registry, noise_image


@pytest.fixture(scope="module")
def registry(models_dir):
    return fresh_registry(models_dir)


@pytest.fixture(scope="module")
def pipeline(registry):
    return TryOffAnyonePipeline.from_registry(registry)


@pytest.fixture(scope="module")
def person():
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((120, 130))


def request_for(person=None, **overrides) -> TryOffRequest:
    values = dict(person=person, mask=box_mask((120, 130), (30, 60, 100, 130)), auto_mask=False,
                  height=64, width=48, num_inference_steps=3)
    values.update(overrides)
    return TryOffRequest(**values)


def test_tryoff_end_to_end(pipeline, person):
    result = pipeline(request_for(person))
    assert [image.size for image in result.images] == [(48, 64)]
    assert result.seeds == [36] and result.mask_source == "painted"
    assert result.params["task"] == "tryoff" and result.params["seed"] == 36
    json.dumps(result.params)
    again = pipeline(request_for(person))
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(again.images[0]))
    # The worn person is the condition: another photo gives another garment.
    other = pipeline(request_for(noise_image(*person.size, 4)))
    assert not np.array_equal(np.asarray(other.raw_images[0]), np.asarray(result.raw_images[0]))
    keep = pipeline(request_for(person, background="keep"))
    assert np.array_equal(np.asarray(keep.images[0]), np.asarray(result.raw_images[0]))
    # tops only in the released weights: a lower-body garment is made, with a warning saying so
    assert "trained on tops only" not in result.note
    lower = pipeline(request_for(person, category="lower"))
    assert "trained on tops only: a lower garment is outside what they learned" in lower.note


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"category": "full"}, "category='full'"),
        ({"person": Image.new("RGB", (10, 10))}, "person image is 10x10 px"),
        ({"person": None}, "person image is missing"),
        ({"mask": Image.new("L", (30, 30), 255)}, "mask is 30x30 px but the person image is 120x130"),
        ({"background": "blue"}, "background='blue'"),
        ({"height": 64, "width": 64}, "not 3:4"),
    ],
)
def test_bad_inputs(pipeline, person, overrides, message):
    with pytest.raises(ValueError, match=message):
        pipeline(request_for(**{"person": person, **overrides}))


def test_loader_official_layout_and_errors(registry, tmp_path):
    from safetensors.torch import load_file, save_file

    unet = registry.get("inpaint_unet")
    path = write_tiny_tryoffanyone(tmp_path)
    assert path.relative_to(tmp_path).as_posix() == "checkpoints/tryoffanyone/model.safetensors"
    groups = transformer_groups(unet)
    assert groups == ["down_blocks.0.attentions", "mid_block.attentions", "up_blocks.1.attentions"]
    state = load_file(str(path))
    assert "1.0.transformer_blocks.0.attn2.to_k.weight" in state and "2.1.proj_out.bias" in state
    weight_set = load_tryoffanyone(path, unet, "check")
    # Whole blocks except attn2 (returns its input; loaded, shape-checked, reported as ignored).
    assert "mid_block.attentions.0.proj_in.weight" in weight_set.tensors
    assert "mid_block.attentions.0.transformer_blocks.0.norm2.weight" in weight_set.tensors
    assert not any(".attn2." in key for key in weight_set.tensors)
    assert weight_set.report.ignored and all(".attn2." in key for key in weight_set.report.ignored)
    assert len(weight_set.tensors) + len(weight_set.report.ignored) == len(state)

    missing = dict(state)
    del missing["1.0.proj_in.weight"]
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing.safetensors.*missing 1\.0\.proj_in\.weight"):
        load_tryoffanyone(tmp_path / "missing.safetensors", unet)
    extra = dict(state, **{"7.0.proj_in.weight": torch.zeros(1)})
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected 7\.0\.proj_in\.weight"):
        load_tryoffanyone(tmp_path / "extra.safetensors", unet)
    shaped = dict(state, **{"0.0.transformer_blocks.0.attn2.to_k.weight": torch.zeros(32, 768)})
    save_file(shaped, str(tmp_path / "shape.safetensors"))
    with pytest.raises(CheckpointError, match=r"shape.safetensors.*attn2\.to_k\.weight"):
        load_tryoffanyone(tmp_path / "shape.safetensors", unet)
    (tmp_path / "corrupt.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.safetensors"):
        load_tryoffanyone(tmp_path / "corrupt.safetensors", unet)


def test_whiten_background_keeps_light_garment_parts():
    image = np.full((60, 40, 3), 235, np.uint8)  # off-white studio background
    image[10:50, 8:32] = (40, 60, 140)  # a blue garment ...
    image[25:35, 16:24] = 240  # ... with a light print inside it
    out = np.asarray(whiten_background(Image.fromarray(image)))
    assert (out[0, 0] == 255).all() and (out[59, 39] == 255).all()
    assert (out[30, 20] == 240).all()  # not connected to the border: stays
    assert (out[12, 10] == (40, 60, 140)).all()


def test_cli_tryoff(models_dir, person, tmp_path):
    from pipelines.preprocess.images import read_png_params

    person.save(tmp_path / "worn.png")
    box_mask(person.size, (30, 60, 100, 130)).save(tmp_path / "mask.png")
    out = tmp_path / "garment.png"
    code = main([
        "--person", str(tmp_path / "worn.png"), "--mask", str(tmp_path / "mask.png"), "--preset", "tiny",
        "--models_dir", str(models_dir), "--steps", "2", "--height", "64", "--width", "48", "--output_path", str(out),
    ])
    assert code == 0 and out.is_file()
    params = read_png_params(out)
    assert params["task"] == "tryoff" and params["seed"] == 36 and Image.open(out).size == (48, 64)
    with pytest.raises(SystemExit):  # argparse rejects a category the weights were not trained for
        main(["--person", str(tmp_path / "worn.png"), "--category", "full", "--preset", "tiny"])
