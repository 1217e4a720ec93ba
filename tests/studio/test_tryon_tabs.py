"""The try-on and try-off tabs: form logic, building the tabs, and the service tasks they call (tiny preset)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from studio.tabs import tryoff as tryoff_tab
from studio.tabs import tryon as tryon_tab


def photo(width: int = 90, height: int = 120, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def editor(person: Image.Image, stroke: tuple[int, int, int, int] | None = None) -> dict:
    """What gr.ImageEditor(type="pil") sends: background, stroke layers (RGBA), composite."""
    layers = []
    if stroke is not None:
        layer = Image.new("RGBA", person.size, (0, 0, 0, 0))
        layer.paste((255, 48, 112, 255), stroke)
        layers.append(layer)
    composite = person.convert("RGBA")
    for layer in layers:
        composite = Image.alpha_composite(composite, layer)
    return {"background": person.convert("RGBA"), "layers": layers, "composite": composite if layers else None}


def tryon_form(**overrides):
    values = {
        "person": editor(photo()), "garment": photo(60, 80, 1), "category": "upper", "auto_mask": True, "sam_mask": None,
        "mode": "CatVTON", "variant": "tryon_catvton", "garment_model": None, "prompt": "", "size": "64x48",
        "fit_mode": "crop", "paste_mode": "feathered", "seed": 3, "steps": 2, "guidance_scale": 2.5, "num_images": 1,
    }
    values.update(overrides)
    return values


def test_strokes_are_the_mask_and_the_photo_stays_clean():
    person = photo()
    image, mask = tryon_tab.photo_and_strokes(editor(person, (10, 20, 40, 60)))
    assert np.array_equal(np.asarray(image), np.asarray(person))  # strokes are not painted into the photo
    assert mask.size == person.size and np.asarray(mask)[30, 20] == 255 and np.asarray(mask)[5, 5] == 0
    params = tryon_tab.build_request(tryon_form(person=editor(person, (10, 20, 40, 60))), {})
    assert params["mask"] is not None and params["auto_mask"] and params["height"] == 64 and params["width"] == 48
    untouched = tryon_tab.build_request(tryon_form(), {})
    assert untouched["mask"] is None and untouched["variant"] == "tryon_catvton"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"person": None}, "Upload a person photo"),
        ({"garment": None}, "Upload a garment photo"),
        ({"auto_mask": False}, "No mask"),
        ({"mode": "Garment model"}, "none is chosen"),
        ({"size": "big"}, "must look like 1024x768"),
    ],
)
def test_form_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        tryon_tab.build_request(tryon_form(**overrides), {})


@pytest.fixture(scope="module")
def service(models_dir):
    from pipelines.service import TASKS, StudioService

    # Until the lead registers them in pipelines/service.py (see the hand-back report).
    TASKS.setdefault("tryon", "pipelines.tryon.pipeline:run_task")
    TASKS.setdefault("tryon_mask", "pipelines.tryon.pipeline:run_mask_task")
    TASKS.setdefault("tryon_sam", "pipelines.tryon.pipeline:run_sam_task")
    TASKS.setdefault("tryoff", "pipelines.tryoff.pipeline:run_task")
    return StudioService("tiny", device="cpu", dtype="fp32", models_dir=models_dir)


def test_tabs_build_and_the_service_runs(service, tmp_path):
    import gradio as gr

    from pipelines.preprocess.masks import write_tiny_sam
    from studio.components import OutputStore, StudioContext

    registry = service.registry
    registry.preset = dataclasses.replace(registry.preset, sam=str(write_tiny_sam(tmp_path)))
    ctx = StudioContext(service=service, outputs=OutputStore(tmp_path / "outputs"))
    with gr.Blocks():
        tryon_parts = tryon_tab.build_tryon_tab(ctx)
        tryoff_parts = tryoff_tab.build_tryoff_tab(ctx)
        for wire in ctx.deferred:
            wire()
    assert "gallery" in tryon_parts and "sam_image" in tryon_parts and "gallery" in tryoff_parts
    assert ctx.targets["tryon_person"][1] == "tryon" and ctx.targets["tryon_garment"][1] == "tryon"
    assert ctx.targets["tryoff_person"][1] == "tryoff"

    person = photo(90, 120)
    stroke = (20, 40, 70, 110)
    params = tryon_tab.build_request(tryon_form(person=editor(person, stroke)), service.defaults("tryon"))
    preview = service.run("tryon_mask", {"person": person, "mask": params["mask"], "category": "upper"})
    assert preview.extras["mask_source"] == "painted" and preview.images[0].size == person.size
    steps = []
    result = service.run("tryon", params, steps.append)
    assert len(steps) == 2 and result.images[0].size == person.size and result.params[0]["seed"] == 3
    assert result.extras["mask_source"] == "painted"

    sam = service.run("tryon_sam", {"person": person, "points_pos": [(45, 70)], "points_neg": []})
    assert sam.extras["mask"].size == person.size

    off = tryoff_tab.build_request(
        {**tryon_form(person=editor(person, stroke)), "background": "white"}, service.defaults("tryoff")
    )
    result = service.run("tryoff", off)
    assert result.images[0].size == (48, 64) and result.params[0]["task"] == "tryoff"
