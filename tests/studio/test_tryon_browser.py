"""Headless Chromium drives the try-on tab the way a designer does: a real photo, the automatic mask, a stroke."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.studio.browser_helpers import (
    astronaut_png, draw_stroke, garment_png, open_tab, upload_to_editor, wait_status,
)
from tests.studio.conftest import screenshot

pytestmark = pytest.mark.browser


def test_tryon_tab_auto_mask_stroke_generate(studio, page, tmp_path):
    from pipelines.preprocess.images import read_png_params

    person_path = astronaut_png(tmp_path)
    garment_path = garment_png(tmp_path, "tshirt", "tshirt")
    open_tab(page, studio["url"], "Try-on", "#tryon-person")

    # 1. the person photo into the editor, the garment photo beside it, category upper
    upload_to_editor(page, "#tryon-person", person_path)
    page.locator("#tryon-garment input[type=file]").set_input_files(str(garment_path))
    page.locator("#tryon-garment img").first.wait_for(timeout=30_000)
    page.locator("#tryon-category").get_by_label("lower").check()
    page.locator("#tryon-category").get_by_label("upper").check()
    time.sleep(0.8)  # the editor lays the photo out on its canvas

    # 2. "Preview mask": the automatic upper-body mask of the real photo (mediapipe), shown as an overlay
    page.locator("#tryon-preview-mask").click()
    page.locator("#tryon-mask-preview img").first.wait_for(timeout=90_000)
    info = wait_status(page, "tryon-mask-info", "Mask from")
    assert "mediapipe" in info, info  # nothing painted: the automatic mask, from the real photo's landmarks
    page.locator("#tryon-mask-preview").scroll_into_view_if_needed()
    time.sleep(0.5)
    screenshot(page, "tryon_mask")

    # the overlay the page shows tints the mask: a sensible upper-body region of the astronaut
    person = Image.open(person_path).convert("RGB")
    src = page.locator("#tryon-mask-preview img").first.get_attribute("src")
    overlay = Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")
    assert overlay.size == person.size, overlay.size
    tinted = np.abs(np.asarray(overlay, np.int16) - np.asarray(person, np.int16)).sum(axis=-1) > 40
    height = tinted.shape[0]
    rows = np.nonzero(tinted.mean(axis=1) > 0.05)[0]
    assert 0.08 < tinted.mean() < 0.6, tinted.mean()  # a region, neither empty nor the whole photo
    assert rows.min() > 0.2 * height, rows.min()  # starts below the face (the head is in the top fifth)
    assert tinted[int(0.3 * height):].mean() > 4 * tinted[: int(0.2 * height)].mean()  # torso, not head/sky

    # 3. a stroke over the chest: painted strokes override the automatic mask
    draw_stroke(page, "#tryon-person", [(0.35, 0.65), (0.5, 0.7), (0.65, 0.65)])
    time.sleep(0.5)
    page.locator("#tryon-preview-mask").click()
    wait_status(page, "tryon-mask-info", "painted", timeout=60_000)

    # 4. generate: the result appears in the gallery; the status says which mask was used
    page.locator("#tryon-generate").click()
    status = wait_status(page, "tryon-status", "Done")
    assert "mask: painted" in status, status
    page.locator("#tryon-gallery img").first.wait_for(timeout=30_000)
    assert page.locator("#tryon-gallery img").count() >= 1
    time.sleep(0.5)
    screenshot(page, "tryon")

    files = list(studio["outputs"].root.glob("*/tryon/*.png"))
    assert len(files) == 1, files
    params = read_png_params(files[0])
    assert params["category"] == "upper" and params["task"] == "tryon", params
    assert Image.open(files[0]).size == person.size  # "keep everything outside the mask": the photo's own size

    # 5. try-on and try-off (and design) share ONE inpainting UNet in the registry
    service = studio["service"]
    service.run("tryoff", {"person": person, "category": "upper", "height": 128, "width": 96,
                           "num_inference_steps": 1, "seed": 1})
    loaded = [m.name for m in service.registry.status().loaded]
    assert loaded.count("inpaint_unet") == 1, loaded


def test_mask_preview_follows_the_official_rules_per_category(studio, page, tmp_path):
    """A drawn person in a t-shirt and shorts: the page's preview for each category is the agnostic mask the
    pipeline uses, and the dress preview is wide enough to grow a dress (its region on the same body)."""
    from pipelines.preprocess import mannequin as mq
    from pipelines.preprocess.bodyparts import tryon_mask
    from pipelines.preprocess.masks import AutoMasker, blur_threshold
    from pipelines.types import TRYON_CATEGORIES, TryOnRequest

    person = mq.draw_mannequin(mq.Outfit())
    path = tmp_path / "mannequin.png"
    person.image.save(path)
    parse = AutoMasker(segformer_location=None).parse(person.image)
    open_tab(page, studio["url"], "Try-on", "#tryon-person")
    upload_to_editor(page, "#tryon-person", path)
    time.sleep(0.8)
    tiles = []
    for category in TRYON_CATEGORIES:
        page.locator("#tryon-category").get_by_label(category, exact=True).check()
        page.locator("#tryon-preview-mask").click()
        wait_status(page, "tryon-mask-info", f"mediapipe, {category}", timeout=90_000)
        time.sleep(0.5)
        src = page.locator("#tryon-mask-preview img").first.get_attribute("src")
        overlay = Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")
        tinted = np.abs(np.asarray(overlay, np.int16) - np.asarray(person.image, np.int16)).sum(axis=-1) > 40
        expected = np.asarray(blur_threshold(tryon_mask(parse, category), TryOnRequest().mask_blur)) > 0
        iou = (tinted & expected).sum() / max(1, (tinted | expected).sum())
        assert iou > 0.9, (category, iou)
        if category == "dress":
            dress = mq.draw_mannequin(mq.Outfit(dress="short")).labels == mq.DRESS
            assert tinted[dress].mean() > 0.9, tinted[dress].mean()
        if category == "upper":
            assert tinted[person.labels == mq.PANTS].mean() < 0.1  # the shorts stay
        tiles.append(overlay)
    page.locator("#tryon-mask-preview").scroll_into_view_if_needed()
    grid = Image.new("RGB", (person.image.width * len(tiles) // 2, person.image.height // 2), "white")
    for index, tile in enumerate(tiles):
        grid.paste(tile.resize((tile.width // 2, tile.height // 2)), (index * tile.width // 2, 0))
    screenshot_dir = Path(os.environ.get("ATELIER_SCREENSHOT_DIR", "/tmp/atelier-screenshots"))
    screenshot_dir.mkdir(parents=True, exist_ok=True)
    grid.save(screenshot_dir / "tryon_mask_categories.png")


def test_batch_of_people_and_garments_to_a_zip(studio, page, tmp_path):
    """Two people x two garments from the tab: four try-ons in the gallery and a zip holding exactly them."""
    import zipfile

    from pipelines.preprocess import mannequin as mq

    people = []
    for index, outfit in enumerate((mq.Outfit(), mq.Outfit(top="longsleeve", bottom="trousers"))):
        path = tmp_path / f"model {index}.png"
        mq.draw_mannequin(outfit).image.save(path)
        people.append(path)
    garments = [garment_png(tmp_path, "tee", "tshirt"), garment_png(tmp_path, "red tee", "tshirt", (220, 30, 30))]
    open_tab(page, studio["url"], "Try-on", "#tryon-person")
    page.get_by_text("Batch: several people x several garments").click()
    page.locator("#tryon-batch-people").wait_for(timeout=30_000)
    page.locator("#tryon-batch-people input[type=file]").set_input_files([str(p) for p in people])
    page.locator("#tryon-batch-garments input[type=file]").set_input_files([str(g) for g in garments])
    time.sleep(1.5)
    page.locator("#tryon-batch-run").click()
    status = wait_status(page, "tryon-status", "Batch done", timeout=240_000)
    assert "4 pair(s), 4 image(s)" in status, status
    link = page.locator("#tryon-batch-zip a").first
    link.wait_for(timeout=30_000)
    archive = zipfile.ZipFile(io.BytesIO(page.request.get(link.get_attribute("href")).body()))
    names = sorted(archive.namelist())
    assert len(names) == 4 and names[0].startswith("01_model_0__tee_") and names[-1].startswith("04_model_1__red_tee_")
    images = [Image.open(io.BytesIO(archive.read(name))) for name in names]
    assert all(image.size == (384, 512) for image in images)  # pasted back at each photo's size
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))  # the garment changes the result
    page.locator("#tryon-batch-zip").scroll_into_view_if_needed()
    screenshot(page, "tryon_batch")
