"""Headless Chromium drives the design tab the way a designer does."""

from __future__ import annotations

import time

import pytest
from PIL import Image

from tests.studio.conftest import screenshot

pytestmark = pytest.mark.browser


def draw_stroke(page, selector: str, points: list[tuple[float, float]]) -> None:
    """Press the editor's Brush tool and drag through ``points`` (fractions of the canvas box)."""
    page.locator(f"{selector} button[aria-label='Brush']").first.click()
    time.sleep(0.3)
    canvas = page.locator(f"{selector} canvas").first
    box = canvas.bounding_box()
    x0, y0 = box["x"] + points[0][0] * box["width"], box["y"] + points[0][1] * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for fx, fy in points[1:]:
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"], steps=8)
    page.mouse.up()


def test_design_tab_draw_colour_logo_generate(studio, page, tmp_path):
    page.goto(studio["url"])
    page.wait_for_selector("#design-sketch canvas", timeout=60_000)
    page.set_viewport_size({"width": 1400, "height": 1250})
    time.sleep(0.8)

    # 1. a stroke on the sketch canvas
    draw_stroke(page, "#design-sketch", [(0.3, 0.2), (0.3, 0.8), (0.7, 0.8), (0.7, 0.2)])

    # 2. pick a colour from a palette
    page.get_by_role("tab", name="Colour").click()
    page.locator("#design-palette input").click()
    page.get_by_role("option", name="Bold primaries").click()
    page.locator("#design-palette-colors label").first.wait_for(timeout=10_000)
    page.locator("#design-palette-colors label").first.click()
    time.sleep(0.5)

    # 3. upload a logo and place it
    logo = tmp_path / "logo.png"
    Image.new("RGBA", (64, 64), (250, 200, 0, 255)).save(logo)
    page.get_by_role("tab", name="Logo & mask").click()
    page.locator("#design-logo input[type=file]").set_input_files(str(logo))
    page.locator("#design-placement-preview img").wait_for(timeout=20_000)
    x_input = page.locator("#design-logo-x input[type=number]")
    x_input.fill("0.4")
    x_input.press("Enter")
    time.sleep(0.5)

    # 4. prompt + generate 2 images
    page.locator("#design-prompt textarea").fill("a cotton shirt with a chest logo")
    n_input = page.locator("#design-num-images input[type=number]")
    n_input.fill("2")
    n_input.press("Enter")
    page.locator("#design-generate").click()

    # 5. the result appears in the gallery; the status reports both stages
    page.locator("#design-gallery img").first.wait_for(timeout=90_000)
    page.wait_for_function(
        "() => document.querySelector('#design-status').innerText.includes('Done')", timeout=30_000
    )
    status = page.locator("#design-status").inner_text()
    assert "GAM → LEM" in status, status
    assert page.locator("#design-gallery img").count() >= 2
    page.get_by_role("tab", name="Sketch").click()
    time.sleep(0.5)
    screenshot(page, "design")

    # "send to": select a design and send it to the try-on tab as the garment
    page.locator("#design-gallery img").first.click()
    page.wait_for_function(
        "() => document.querySelector('#design-details').innerText.includes('prompt')", timeout=30_000
    )
    page.locator("#design-send-tryon").click()
    page.locator("#tryon-garment img").first.wait_for(state="visible", timeout=30_000)

    # the saved PNGs carry their parameters, including that a sketch, colour and logo were used
    from pipelines.preprocess.images import read_png_params

    files = [p for p in studio["outputs"].root.glob("*/design/*.png")
             if read_png_params(p)["prompt"].startswith("a cotton shirt")]
    assert len(files) == 2  # saved in this visitor's folder only
    assert len({p.parent.parent for p in files}) == 1
    params = read_png_params(files[0])
    assert params["has_sketch"] and params["has_color"] and params["has_logo"], params
    assert params["prompt"].startswith("a cotton shirt")



def test_gallery_tab_lists_this_visitors_images_with_parameters(studio, page):
    """Everything a visitor made shows in the Gallery tab; another visitor's images do not."""
    from studio.components import new_user_id

    page.goto(studio["url"])
    page.wait_for_selector("#design-sketch canvas", timeout=60_000)
    before = {p.parent.parent.name for p in studio["outputs"].root.glob("*/*/*.png")}
    page.locator("#design-prompt textarea").fill("gallery check")
    page.locator("#design-generate").click()
    page.wait_for_function(
        "() => document.querySelector('#design-status').innerText.includes('Done')", timeout=90_000
    )
    mine = max(studio["outputs"].root.glob("*/design/*.png"), key=lambda p: p.stat().st_mtime)
    uid = mine.parent.parent.name
    assert uid not in before  # a fresh visitor got a fresh folder
    result = studio["service"].run("garment", {"prompt": "someone else", "height": 80, "width": 64,
                                               "num_inference_steps": 1})
    studio["outputs"].save(new_user_id(), "design", result.images, result.params)

    page.get_by_role("tab", name="Gallery").click()
    page.locator("#gallery-all img").first.wait_for(timeout=30_000)
    assert page.locator("#gallery-all img").count() == len(studio["outputs"].list(uid)) == 1
    page.locator("#gallery-all img").first.click()
    page.wait_for_function(
        "() => document.querySelector('#gallery-details').innerText.includes('gallery check')", timeout=30_000
    )
