"""CatVTON try-on on the tiny preset: end to end, masks, paste-back, loader, bad inputs, CLI, garment models."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.core.registry import ModelRegistry
from pipelines.core.sampling import RunControl
from pipelines.tryon.checkpoints import load_catvton
from pipelines.tryon.pipeline import CatVTONPipeline
from pipelines.tryon.cli import main
from pipelines.tryon.checkpoints import write_tiny_catvton
from pipelines.types import CheckpointError, GenerationCancelled, TryOnRequest

STEPS = 3


def fresh_registry(models_dir: Path) -> ModelRegistry:
    """A registry of its own over the session's tiny models (nothing loaded or swapped yet)."""
    return ModelRegistry("tiny", device="cpu", dtype="fp32", models_dir=models_dir)


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


@pytest.fixture(scope="module")
def registry(models_dir):
    return fresh_registry(models_dir)


@pytest.fixture(scope="module")
def pipeline(registry):
    return CatVTONPipeline.from_registry(registry)


@pytest.fixture(scope="module")
def person():
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((150, 140))  # a real photo, deliberately not 3:4


def request_for(person, garment, **overrides) -> TryOnRequest:
    values = dict(
        person=person, garment=garment, mask=box_mask(person.size, (30, 60, 120, 140)), auto_mask=False,
        height=64, width=48, num_inference_steps=STEPS, seed=7,
    )
    values.update(overrides)
    return TryOnRequest(**values)


def test_tryon_end_to_end(pipeline, person):
    garment = noise_image(60, 80, 1)
    result = pipeline(request_for(person, garment, num_images=2))
    assert [image.size for image in result.images] == [person.size] * 2  # pasted back at the photo's size
    assert [image.size for image in result.canvas_images] == [(48, 64)] * 2
    assert result.seeds == [7, 8] and result.mask_source == "painted"
    assert result.params["task"] == "tryon" and result.params["seed"] == 7
    json.dumps(result.params)  # PNG-embeddable

    # Repaint keeps every pixel outside the mask bit-identical on a non-3:4 photo.
    original, mask = np.asarray(person), np.asarray(result.mask) > 0
    for image in result.images:
        output = np.asarray(image)
        assert np.array_equal(output[~mask], original[~mask])
        assert not np.array_equal(output[mask], original[mask])

    # Same seed -> same images; image i alone with seed + i -> image i of the batch.
    again = pipeline(request_for(person, garment, num_images=2))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(result.images, again.images))
    second = pipeline(request_for(person, garment, seed=8))  # batched kernels differ in the last bits only
    difference = np.abs(np.asarray(second.images[0]).astype(int) - np.asarray(result.images[1]).astype(int))
    assert difference.max() <= 3

    # The garment is a condition: another garment changes the output; another seed too.
    other = pipeline(request_for(person, noise_image(60, 80, 2)))
    assert not np.array_equal(np.asarray(other.canvas_images[0]), np.asarray(result.canvas_images[0]))

    raw = pipeline(request_for(person, garment, paste_mode="none", fit_mode="pad"))
    assert raw.images[0].size == (48, 64)


def test_progress_and_stop(pipeline, person):
    seen = []
    pipeline(request_for(person, noise_image(60, 80, 1)), RunControl(callback=seen.append, preview_every=1))
    assert [info.step for info in seen] == list(range(1, STEPS + 1))
    assert seen[-1].stage == "try-on" and seen[-1].preview is not None
    stop = threading.Event()
    stop.set()
    with pytest.raises(GenerationCancelled):
        pipeline(request_for(person, noise_image(60, 80, 1)), RunControl(stop_event=stop))


def test_auto_mask_and_painted_override(registry, person):
    from pipelines.preprocess.masks import AutoMasker

    # SegFormer off: the offline mediapipe fallback finds the astronaut and builds an upper-body mask.
    masked = CatVTONPipeline.from_registry(registry, masker=AutoMasker(None))
    request = request_for(person, noise_image(60, 80, 1), mask=None, auto_mask=True)
    mask, source, note = masked.prepare_mask(request)
    assert source == "mediapipe" and mask.size == person.size and np.asarray(mask).any() and note
    result = masked(request)
    assert result.mask_source == "mediapipe" and result.images[0].size == person.size
    # A painted mask always wins over the automatic one.
    painted = box_mask(person.size, (10, 10, 40, 40))
    mask, source, _ = masked.prepare_mask(request_for(person, None, mask=painted, auto_mask=True, mask_blur=0))
    assert source == "painted" and np.array_equal(np.asarray(mask), np.asarray(painted))
    # by default every mask is blurred (radius 9) and re-thresholded at 128, as the official app does
    from pipelines.preprocess.masks import blur_threshold

    mask, _, _ = masked.prepare_mask(request_for(person, None, mask=painted, auto_mask=True))
    assert np.array_equal(np.asarray(mask), np.asarray(blur_threshold(painted, 9)))
    assert not np.array_equal(np.asarray(mask), np.asarray(painted))  # its corners are rounded


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"garment": None}, "garment image is missing"),
        ({"category": "hat"}, "category='hat'"),
        ({"mask": Image.new("L", (20, 20), 255)}, "mask is 20x20 px but the person image is 150x140"),
        ({"person": Image.new("RGB", (10, 10))}, "person image is 10x10 px"),
        ({"garment": Image.new("RGB", (10, 10))}, "garment image is 10x10 px"),
        ({"height": 64, "width": 64}, "not 3:4"),
        ({"height": 100, "width": 75}, "height=100 must be a multiple"),
        ({"mask": None, "auto_mask": False}, "no mask"),
        ({"mask": Image.new("L", (150, 140), 0), "auto_mask": False}, "painted mask is empty"),
        ({"num_images": 0}, "num_images=0"),
        ({"num_inference_steps": 0}, "num_inference_steps=0"),
        ({"fit_mode": "squash"}, "fit_mode='squash'"),
    ],
)
def test_bad_inputs(pipeline, person, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        pipeline(request_for(**{"person": person, "garment": noise_image(60, 80, 1), **overrides}))


def test_catvton_loader_official_layout(registry, tmp_path):
    from safetensors.torch import save_file

    unet = registry.get("inpaint_unet")
    path = write_tiny_catvton(tmp_path)
    assert path.relative_to(tmp_path).as_posix() == "checkpoints/catvton/attention/model.safetensors"
    weight_set = load_catvton(path, unet, "check")
    attn1 = [name for name, _ in unet.named_modules() if name.endswith("attn1")]
    assert len(weight_set.tensors) == 5 * len(attn1) and all(".attn1." in key for key in weight_set.tensors)

    from safetensors.torch import load_file

    state = load_file(str(path))
    assert "0.to_q.weight" in state and "8.to_out.0.bias" in state
    broken = dict(state)
    del broken["8.to_k.weight"]
    save_file(broken, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing.safetensors.*8\.to_k\.weight"):
        load_catvton(tmp_path / "missing.safetensors", unet)
    broken = dict(state)
    broken["0.to_q.weight"] = torch.zeros(3, 3)
    save_file(broken, str(tmp_path / "shape.safetensors"))
    with pytest.raises(CheckpointError, match=r"shape.safetensors.*attn1\.to_q\.weight"):
        load_catvton(tmp_path / "shape.safetensors", unet)
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt.safetensors"):
        load_catvton(tmp_path / "corrupt.safetensors", unet)


def test_full_size_layouts_match_official_counts():
    """The real SD1.5-inpainting UNet (built on the meta device): 16 attn1 -> 80 CatVTON tensors;
    TryOffAnyone keys run down (0-2), MID (3), up (4-6)."""
    from diffusers import UNet2DConditionModel

    from pipelines.core.attention import attn1_modules
    from pipelines.tryoff.checkpoints import tryoff_key_map

    with torch.device("meta"):
        unet = UNet2DConditionModel(in_channels=9, cross_attention_dim=768)
    assert 5 * len(attn1_modules(unet)) == 80
    mapping = tryoff_key_map(unet)
    assert mapping["3.0.transformer_blocks.0.attn2.to_k.weight"] == "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    assert mapping["6.2.proj_out.bias"] == "up_blocks.3.attentions.2.proj_out.bias"
    assert mapping["0.1.proj_in.weight"] == "down_blocks.0.attentions.1.proj_in.weight"


def test_cli_folder_of_people(models_dir, person, tmp_path):
    from pipelines.preprocess.images import read_png_params

    people, masks = tmp_path / "people", tmp_path / "masks"
    people.mkdir(), masks.mkdir()
    for name in ("a", "b"):
        person.save(people / f"{name}.jpg")
        box_mask(person.size, (30, 60, 120, 140)).save(masks / f"{name}.png")
    noise_image(60, 80, 1).save(tmp_path / "garment.png")
    out = tmp_path / "out"
    code = main([
        "--person", str(people), "--garment", str(tmp_path / "garment.png"), "--mask", str(masks),
        "--preset", "tiny", "--models_dir", str(models_dir), "--steps", "2", "--seed", "5",
        "--output_path", str(out),
    ])
    assert code == 0
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == ["a__garment_5_0.png", "b__garment_5_0.png"]
    params = read_png_params(written[0])
    assert params["seed"] == 5 and params["task"] == "tryon" and params["num_inference_steps"] == 2
    assert Image.open(written[0]).size == person.size
    # A bad argument is an error message and exit code 2, not a traceback.
    assert main(["--person", str(people), "--preset", "tiny", "--models_dir", str(models_dir)]) == 2


def test_garment_model_tryon(tiny_models, registry, person, tmp_path):
    from pipelines.tryon.garment_model import GarmentModelTryOnPipeline, list_garment_models

    final = tmp_path / "runs" / "red-shirt" / "final"
    shutil.copytree(tiny_models / "inpaint", final)
    (final / "atelier_model.json").write_text(json.dumps({"kind": "garment_model", "prompt": "red shirt"}))
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "atelier_model.json").write_text("{not json")
    found = list_garment_models(tmp_path / "runs")
    assert [(m.name, m.prompt) for m in found] == [("red-shirt", "red shirt")]

    pipeline = GarmentModelTryOnPipeline.from_registry(registry, found[0].path)
    assert GarmentModelTryOnPipeline.from_registry(registry, found[0].path) is pipeline
    result = pipeline(request_for(person, None, guidance_scale=7.5))
    assert result.images[0].size == person.size and result.params["prompt"] == "red shirt"
    original, mask = np.asarray(person), np.asarray(result.mask) > 0
    assert np.array_equal(np.asarray(result.images[0])[~mask], original[~mask])
    with pytest.raises(ValueError, match="no atelier_model.json"):
        GarmentModelTryOnPipeline.from_registry(registry, tmp_path)
    # Open size and eta: the training resolution (the card's, else 512) as a 3:4 canvas, eta 0 as diffusers.
    settled = pipeline.settle(TryOnRequest(person=person))
    assert (settled.height, settled.width, settled.eta) == (512, 384, 0.0)
    pipeline.info.card["resolution"] = 64
    assert pipeline.native_size() == (64, 48)
    assert pipeline.settle(TryOnRequest(person=person, eta=0.5)).eta == 0.5


def test_each_weight_set_at_its_own_canvas(registry):
    """CatVTON: a request without a size runs each weight set at the canvas it was trained at, eta 1.0."""
    mix = CatVTONPipeline.from_registry(registry, "tryon_catvton")
    vitonhd = CatVTONPipeline.from_registry(registry, "tryon_catvton_512")
    assert (mix.settle(TryOnRequest()).height, mix.settle(TryOnRequest()).width) == (1024, 768)
    settled = vitonhd.settle(TryOnRequest())
    assert (settled.height, settled.width, settled.eta) == (512, 384, 1.0)
    chosen = vitonhd.settle(TryOnRequest(height=64, width=48, eta=0.0))
    assert (chosen.height, chosen.width, chosen.eta) == (64, 48, 0.0)


def test_bf16_where_the_gpu_has_it(monkeypatch):
    import torch

    from pipelines.core.devices import pick_dtype

    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype(cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype(cuda) == torch.float16
    assert pick_dtype(torch.device("cpu")) == torch.float32 and pick_dtype(cuda, "fp16") == torch.float16
