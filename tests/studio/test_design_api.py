"""The design tab's form logic and its API endpoint through gradio_client."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from studio.components import editor_to_image_and_mask, is_blank
from studio.tabs.design import CANVAS, build_request, logo_box, placement_mask, placement_preview

DEFAULTS = {"height": 80, "width": 64}


def form(**overrides):
    values = {
        "sketch": {"background": Image.new("RGB", CANVAS, "white"), "layers": [], "composite": None},
        "color_source": "None", "color": "#112233", "swatch": None, "logo": None, "mask_mode": "Place logo",
        "mask": None, "logo_x": 0.5, "logo_y": 0.4, "logo_size": 0.25, "prompt": "", "negative_prompt": "",
        "style": "None", "steps": 2, "guidance_scale": 7.0, "sketch_scale": 0.6, "color_scale": 1.0, "seed": 3,
        "num_images": 1, "keep_outside_logo": False,
    }
    values.update(overrides)
    return values


def stroke_layer() -> Image.Image:
    layer = Image.new("RGBA", CANVAS, (0, 0, 0, 0))
    ImageDraw.Draw(layer).line([(100, 100), (400, 500)], fill=(0, 0, 0, 255), width=6)
    return layer


def test_empty_form_is_refused():
    with pytest.raises(ValueError, match="Nothing to design from"):
        build_request(form(), DEFAULTS)


def test_blank_canvas_means_no_sketch_with_a_note():
    params, notes = build_request(form(prompt="a coat"), DEFAULTS)
    assert params["sketch"] is None and any("no sketch" in n for n in notes)


def test_strokes_become_the_sketch():
    layer = stroke_layer()
    composite = Image.alpha_composite(Image.new("RGBA", CANVAS, "white"), layer)
    params, _ = build_request(form(sketch={"background": None, "layers": [layer], "composite": composite}), DEFAULTS)
    assert params["sketch"] is not None and not is_blank(params["sketch"])


def test_paint_mode_without_paint_is_a_clear_error():
    logo = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    with pytest.raises(ValueError, match="nothing is painted"):
        build_request(form(logo=logo, mask_mode="Paint mask", mask={"background": None, "layers": [], "composite": None}), DEFAULTS)


def test_painted_mask_is_used():
    logo = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    mask_value = {"background": Image.new("RGB", CANVAS, "white"), "layers": [stroke_layer()], "composite": None}
    params, _ = build_request(form(logo=logo, mask_mode="Paint mask", mask=mask_value), DEFAULTS)
    assert np.asarray(params["logo_mask"]).max() == 255


def test_swatch_source_needs_a_swatch():
    with pytest.raises(ValueError, match="no swatch was uploaded"):
        build_request(form(color_source="Swatch image"), DEFAULTS)


def test_picker_colour_becomes_a_flat_swatch():
    params, _ = build_request(form(color_source="Picker", color="#ff8000"), DEFAULTS)
    assert params["color"].getpixel((5, 5)) == (255, 128, 0)


def test_bad_seed_is_refused():
    import gradio as gr

    with pytest.raises(gr.Error):
        build_request(form(prompt="x", seed="abc"), DEFAULTS)


def test_logo_placement_geometry():
    box = logo_box(512, 640, 0.5, 0.5, 0.25)
    assert box == (192, 256, 320, 384)
    assert logo_box(512, 640, 0.0, 0.0, 0.25)[:2] == (0, 0)  # clamped inside the canvas
    mask = placement_mask(512, 640, 0.5, 0.5, 0.25)
    assert mask.getbbox() == (192, 256, 320, 384)
    with pytest.raises(ValueError, match="logo x=1.5"):
        logo_box(512, 640, 1.5, 0.5, 0.2)
    preview = placement_preview(None, Image.new("RGBA", (10, 10), (0, 255, 0, 255)), mask)
    assert preview.size == CANVAS and preview.getpixel((256, 320))[1] > 150


def test_editor_value_conversion():
    assert editor_to_image_and_mask(None) == (None, None)
    image, mask = editor_to_image_and_mask({"background": np.full((8, 8, 4), 255, np.uint8), "layers": [], "composite": None})
    assert image.size == (8, 8) and mask is None


def test_api_design_through_gradio_client(studio, tmp_path):
    from gradio_client import Client, handle_file

    sketch = tmp_path / "sketch.png"
    image = Image.new("RGB", (64, 80), "white")
    ImageDraw.Draw(image).rectangle([8, 8, 56, 72], outline="black", width=2)
    image.save(sketch)
    client = Client(studio["url"], verbose=False)
    result = client.predict(
        "a linen dress", "", handle_file(str(sketch)), "#aa2233", None, None, 2, 7.0, 0.6, 1.0, 11, 2,
        api_name="/design",
    )
    assert len(result) == 2
    from pipelines.preprocess.images import read_png_params

    saved = sorted(studio["outputs"].root.glob("*/design/*_11.png"))
    assert saved, "the API call saved its images under the outputs folder"
    assert read_png_params(saved[0])["prompt"] == "a linen dress"
