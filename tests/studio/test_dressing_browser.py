"""Headless Chromium drives the dressing tab: two garments, a prompt, the pose of a real photo."""

from __future__ import annotations

import time

import pytest

from tests.studio.browser_helpers import astronaut_png, garment_png, open_tab, wait_status
from tests.studio.conftest import screenshot

pytestmark = pytest.mark.browser


def choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()
    time.sleep(0.3)


def test_dressing_tab_two_garments_pose_from_photo(studio, page, tmp_path):
    from pipelines.preprocess.images import read_png_params

    top = garment_png(tmp_path, "top", "tshirt", (220, 40, 60))
    trousers = garment_png(tmp_path, "trousers", "trousers", (40, 60, 140))
    person = astronaut_png(tmp_path)
    open_tab(page, studio["url"], "Dressing", "#dressing-garment-0")

    # 1. two garment slots: a top (upper) and trousers (lower)
    page.locator("#dressing-garment-0 input[type=file]").set_input_files(str(top))
    page.locator("#dressing-garment-0 img").first.wait_for(timeout=30_000)
    choose(page, "dressing-category-0", "upper")
    page.locator("#dressing-add-slot").click()
    page.locator("#dressing-garment-1").wait_for(state="visible", timeout=10_000)
    page.locator("#dressing-garment-1 input[type=file]").set_input_files(str(trousers))
    page.locator("#dressing-garment-1 img").first.wait_for(timeout=30_000)
    choose(page, "dressing-category-1", "lower")

    # 2. the prompt
    page.locator("#dressing-prompt textarea").fill("a woman in a red top and navy trousers, studio photo")

    # 3. pose from a photo: upload the astronaut, detect, the skeleton preview appears
    page.get_by_text("Pose", exact=True).click()
    page.locator("#dressing-pose-source").get_by_label("Photo").check()
    page.locator("#dressing-pose-photo input[type=file]").set_input_files(str(person))
    page.locator("#dressing-pose-photo img").first.wait_for(timeout=30_000)
    page.locator("#dressing-detect-pose").click()
    page.locator("#dressing-skeleton img").first.wait_for(timeout=90_000)
    assert page.locator("#dressing-skeleton img").first.get_attribute("src")

    # 4. generate: the dressed person appears in the gallery
    page.locator("#dressing-generate").click()
    status = wait_status(page, "dressing-status", "Done")
    assert "2 garment(s)" in status, status
    page.locator("#dressing-gallery img").first.wait_for(timeout=30_000)
    assert page.locator("#dressing-gallery img").count() >= 1
    time.sleep(0.5)
    screenshot(page, "dressing")

    files = list(studio["outputs"].root.glob("*/dressing/*.png"))
    assert len(files) == 1, files
    params = read_png_params(files[0])
    assert params["garment_categories"] == ["upper", "lower"] and params["num_garments"] == 2, params
    assert params["has_pose"] and params["prompt"].startswith("a woman in a red top"), params
