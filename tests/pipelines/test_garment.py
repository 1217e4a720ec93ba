"""The garment design pipeline (GAM + LEM) end to end on tiny real models."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from pipelines.preprocess.colors import swatch_from_hex
from pipelines.core.sampling import RunControl
from pipelines.types import GenerationCancelled
from pipelines.garment.pipeline import GarmentDesignPipeline
from pipelines.types import GarmentRequest

H, W = 80, 64


@pytest.fixture(scope="module")
def pipe(tiny_registry):
    return GarmentDesignPipeline.from_registry(tiny_registry)


def sketch() -> Image.Image:
    image = Image.new("RGB", (W, H), "white")
    ImageDraw.Draw(image).polygon([(20, 8), (44, 8), (56, 70), (8, 70)], outline="black", width=3)
    return image


def logo_and_mask() -> tuple[Image.Image, Image.Image]:
    logo = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    ImageDraw.Draw(logo).ellipse([4, 4, 36, 36], fill=(230, 30, 30, 255))
    mask = Image.new("L", (W, H), 0)
    ImageDraw.Draw(mask).rectangle([24, 24, 40, 40], fill=255)
    return logo, mask


def request(**kwargs) -> GarmentRequest:
    base = dict(prompt="a shirt", height=H, width=W, num_inference_steps=3, seed=7)
    base.update(kwargs)
    return GarmentRequest(**base)


def array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_shapes_and_seed_determinism(pipe):
    logo, mask = logo_and_mask()
    full = dict(sketch=sketch(), color=swatch_from_hex("#2050c0"), logo=logo, logo_mask=mask)
    first = pipe(request(**full))
    again = pipe(request(**full))
    other = pipe(request(seed=8, **full))
    assert first.stages == ["GAM", "LEM"]
    assert first.images[0].size == (W, H) and first.images[0].mode == "RGB"
    assert np.array_equal(array(first.images[0]), array(again.images[0]))
    assert not np.array_equal(array(first.images[0]), array(other.images[0]))


def test_each_image_of_a_batch_reproduces_alone_with_its_seed(pipe):
    batch = pipe(request(num_images=3, sketch=sketch()))
    assert batch.seeds == [7, 8, 9]
    single = pipe(request(seed=9, sketch=sketch()))
    assert np.abs(array(batch.images[2]) - array(single.images[0])).max() <= 1


@pytest.mark.parametrize("condition", ["sketch", "color", "logo"])
def test_each_condition_changes_the_output(pipe, condition):
    logo, mask = logo_and_mask()
    extra = {"sketch": {"sketch": sketch()}, "color": {"color": swatch_from_hex("#e02020")},
             "logo": {"logo": logo, "logo_mask": mask}}[condition]
    plain = pipe(request())
    conditioned = pipe(request(**extra))
    assert not np.array_equal(array(plain.images[0]), array(conditioned.images[0]))


def test_no_condition_at_all_still_works(pipe):
    result = pipe(request(prompt=""))
    assert result.stages == ["GAM"] and len(result.images) == 1


def test_zero_strength_equals_no_condition(pipe):
    plain = pipe(request())
    zero_sketch = pipe(request(sketch=sketch(), sketch_scale=0.0))
    assert np.array_equal(array(plain.images[0]), array(zero_sketch.images[0]))


def test_rgba_and_greyscale_inputs(pipe):
    """A greyscale sketch, an opaque RGBA swatch and an RGB mask make exactly the image their RGB / L forms make;
    a transparent logo is the logo composited on white."""
    logo, mask = logo_and_mask()
    grey_sketch = sketch().convert("L")
    color = swatch_from_hex("#30a030")
    plain = pipe(request(sketch=grey_sketch.convert("RGB"), color=color, logo=logo, logo_mask=mask))
    mixed = pipe(request(sketch=grey_sketch, color=color.convert("RGBA"), logo=logo, logo_mask=mask.convert("RGB")))
    assert mixed.images[0].size == (W, H)
    assert np.array_equal(array(plain.images[0]), array(mixed.images[0]))
    clear = logo.convert("RGBA")
    clear.putalpha(Image.new("L", logo.size, 0).point(lambda _: 0))
    clear.paste((0, 0, 0, 255), (0, 0, logo.size[0] // 2, logo.size[1]))  # left half opaque black, right clear
    on_white = Image.new("RGB", logo.size, "white")
    on_white.paste((0, 0, 0), (0, 0, logo.size[0] // 2, logo.size[1]))
    transparent = pipe(request(sketch=grey_sketch, color=color, logo=clear, logo_mask=mask))
    composited = pipe(request(sketch=grey_sketch, color=color, logo=on_white, logo_mask=mask))
    assert np.array_equal(array(transparent.images[0]), array(composited.images[0]))
    assert not np.array_equal(array(transparent.images[0]), array(plain.images[0]))  # the logo pathway is live


def test_processors_restored_after_call_and_after_stop(pipe):
    before = {name: type(p) for name, p in pipe.unet.attn_processors.items()}
    inpaint_before = {name: type(p) for name, p in pipe.inpaint_switcher.unet.attn_processors.items()}
    logo, mask = logo_and_mask()
    pipe(request(sketch=sketch(), color=swatch_from_hex("#000000"), logo=logo, logo_mask=mask))
    assert {n: type(p) for n, p in pipe.unet.attn_processors.items()} == before
    assert {n: type(p) for n, p in pipe.inpaint_switcher.unet.attn_processors.items()} == inpaint_before

    stop = threading.Event()

    def press_stop(info):
        stop.set()

    with pytest.raises(GenerationCancelled):
        pipe(request(sketch=sketch(), num_inference_steps=5), RunControl(callback=press_stop, stop_event=stop))
    assert {n: type(p) for n, p in pipe.unet.attn_processors.items()} == before
    assert not any(isinstance(m, torch.nn.Module) for m in pipe.unet.attn_processors.values())


def test_progress_reports_every_step_with_eta_and_previews(pipe):
    seen = []
    logo, mask = logo_and_mask()
    pipe(request(logo=logo, logo_mask=mask, num_inference_steps=4), RunControl(callback=seen.append, preview_every=2))
    assert [s.overall_step for s in seen] == list(range(1, 9))
    assert {s.stage for s in seen} == {"GAM", "LEM"}
    assert seen[-1].overall_total == 8 and seen[-1].eta_s == pytest.approx(0.0, abs=1e-6)
    assert any(s.preview is not None for s in seen)


def test_reference_keys_values_computed_once_per_generation(pipe):
    calls = []
    processor = next(iter(pipe.mixed_processors.values()))
    handle = processor.to_k_ref.register_forward_hook(lambda *a: calls.append(1))
    try:
        pipe(request(sketch=sketch(), num_inference_steps=4))
    finally:
        handle.remove()
    assert len(calls) == 1  # constant across the 4 steps: computed once and cached


def test_lem_uses_the_shared_inpainting_unet(tiny_registry, pipe):
    assert pipe.inpaint_switcher.unet is tiny_registry.get("inpaint_unet")
    names = [m.name for m in tiny_registry.status().loaded]
    assert names.count("inpaint_unet") == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"height": 70}, "height=70"),
        ({"num_images": 0}, "num_images=0"),
        ({"num_inference_steps": 0}, "num_inference_steps=0"),
        ({"sketch_scale": 5.0}, "sketch_scale=5.0"),
        ({"logo": Image.new("RGB", (32, 32))}, "logo_mask is required"),
        ({"logo": Image.new("RGB", (32, 32)), "logo_mask": Image.new("L", (W, H), 0)}, "logo_mask is empty"),
        ({"logo_mask": Image.new("L", (W, H), 255)}, "without a logo"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        pipe(request(**kwargs))


def test_sketch_that_is_not_an_image(pipe):
    with pytest.raises(TypeError, match="sketch must be a PIL image"):
        pipe(request(sketch=np.zeros((80, 64, 3))))


def test_batched_and_sequential_cfg_agree(pipe):
    """The batched-CFG optimisation computes the same thing as two separate UNet calls."""
    kwargs = dict(sketch=sketch(), color=swatch_from_hex("#2050c0"))
    batched = pipe(request(**kwargs))
    pipe.batch_cfg = False
    try:
        sequential = pipe(request(**kwargs))
    finally:
        pipe.batch_cfg = True
    assert np.abs(array(batched.images[0]) - array(sequential.images[0])).max() <= 2
