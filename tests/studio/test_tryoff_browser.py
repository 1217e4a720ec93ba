"""Headless Chromium drives the try-off tab: a real photo in, the garment laid out as a product shot."""

from __future__ import annotations

import time

import pytest
from PIL import Image

from tests.studio.browser_helpers import astronaut_png, open_tab, upload_to_editor, wait_status
from tests.studio.conftest import screenshot

pytestmark = pytest.mark.browser


def test_tryoff_tab_photo_to_garment(studio, page, tmp_path):
    from pipelines.preprocess.images import read_png_params

    person_path = astronaut_png(tmp_path)
    open_tab(page, studio["url"], "Try-off", "#tryoff-person")

    # the photo of the worn garment into the editor; the top (upper) on a white background
    upload_to_editor(page, "#tryoff-person", person_path)
    page.locator("#tryoff-category").get_by_label("upper").check()
    assert page.locator("#tryoff-background").get_by_label("remove").is_visible()  # RMBG-1.4 cut-out on white
    page.locator("#tryoff-background").get_by_label("white").check()
    time.sleep(0.5)

    page.locator("#tryoff-generate").click()
    status = wait_status(page, "tryoff-status", "Done")
    assert "mask: mediapipe" in status, status  # nothing painted: the automatic mask of the real photo
    page.locator("#tryoff-gallery img").first.wait_for(timeout=30_000)
    assert page.locator("#tryoff-gallery img").count() >= 1
    time.sleep(0.5)
    screenshot(page, "tryoff")

    # the recovered garment goes on to the dressing tab's first garment slot
    page.locator("#tryoff-gallery img").first.click()
    page.wait_for_function("() => document.querySelector('#tryoff-details') !== null", timeout=30_000)
    time.sleep(1.0)
    page.locator("#tryoff-send-dressing").click()
    page.locator("#dressing-garment-0 img").first.wait_for(state="visible", timeout=30_000)

    files = list(studio["outputs"].root.glob("*/tryoff/*.png"))
    assert len(files) == 1, files
    params = read_png_params(files[0])
    assert params["task"] == "tryoff" and params["category"] == "upper" and params["background"] == "white", params
    assert Image.open(files[0]).size == (96, 128)  # the laid-out garment at the tiny preset's 128x96


def test_tryoff_tab_with_temu_vtoff(studio, page, tmp_path):
    """Choosing TEMU-VTOFF shows its caption and memory settings and its defaults; Generate runs it."""
    from pipelines.preprocess.images import read_png_params

    before = set(studio["outputs"].root.glob("*/tryoff/*.png"))
    person_path = astronaut_png(tmp_path)
    open_tab(page, studio["url"], "Try-off", "#tryoff-person")
    assert not page.locator("#tryoff-caption").is_visible()
    page.locator("#tryoff-model").get_by_label("TEMU-VTOFF — high quality (SD3, needs a big GPU)").check()
    page.locator("#tryoff-caption textarea").wait_for(state="visible", timeout=30_000)
    assert page.locator("#tryoff-caption textarea").input_value().startswith("a t-shirt")
    assert page.locator("#tryoff-memory").is_visible()
    upload_to_editor(page, "#tryoff-person", person_path)
    page.locator("#tryoff-caption textarea").fill("a shirt with long sleeves, a regular fit and a straight hem")
    time.sleep(0.5)

    page.locator("#tryoff-generate").click()
    status = wait_status(page, "tryoff-status", "Done")
    assert "memory: resident" in status, status
    page.locator("#tryoff-gallery img").first.wait_for(timeout=30_000)
    screenshot(page, "tryoff_temu")
    new = sorted(set(studio["outputs"].root.glob("*/tryoff/*.png")) - before)
    assert len(new) == 1, new
    params = read_png_params(new[0])
    assert params["task"] == "tryoff_temu" and params["caption"].startswith("a shirt with long sleeves"), params
    assert params["num_inference_steps"] == 4 and params["guidance_scale"] == 2.0  # the preset's TEMU defaults
    assert Image.open(new[0]).size == (96, 128)
