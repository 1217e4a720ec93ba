"""Headless Chromium drives the pose design tab: a draft from text + a photo's pose, an attribute edit of it
(automatic region from the draft's own pose), and the edit sent to try-on."""

from __future__ import annotations

import time

import pytest

from tests.studio.browser_helpers import astronaut_png, open_tab, wait_status
from tests.studio.conftest import screenshot

pytestmark = pytest.mark.browser


def test_draft_from_photo_pose_then_edit_then_send_to_tryon(studio, page, tmp_path):
    from pipelines.preprocess.images import read_png_params

    person = astronaut_png(tmp_path)
    open_tab(page, studio["url"], "Pose design", "#posedesign-prompt")

    # 1. the draft: words, a category, the pose of a photo
    page.locator("#posedesign-prompt textarea").fill("a red silk evening dress with a flared skirt")
    page.locator("#posedesign-category").get_by_label("Coat").check()
    page.locator("#posedesign-pose-photo input[type=file]").set_input_files(str(person))
    page.locator("#posedesign-pose-photo img").first.wait_for(timeout=30_000)
    page.wait_for_function("() => document.querySelector('#posedesign-pose-source input[value=Photo]').checked",
                           timeout=10_000)
    page.locator("#posedesign-draft").click()
    status = wait_status(page, "posedesign-status", "Done", timeout=180_000)
    assert "pose from mediapipe" in status, status
    page.locator("#posedesign-skeleton img").first.wait_for(timeout=30_000)
    page.locator("#posedesign-gallery img").first.wait_for(timeout=30_000)
    [draft_file] = list(studio["outputs"].root.glob("*/posedesign/*.png"))  # this test runs first in its file
    draft = read_png_params(draft_file)
    assert draft["category"] == "Coat" and draft["prompt"].startswith("a red silk"), draft
    assert draft["keypoints"][1] is not None and draft["pose_source"].startswith("mediapipe"), draft

    # 2. send to attribute editing: the draft's pose comes along, the automatic sleeve region is previewed
    page.locator("#posedesign-gallery img").first.click()
    page.wait_for_function("() => document.querySelector('#posedesign-details').innerText.includes('keypoints')",
                           timeout=30_000)
    page.locator("#posedesign-send-edit").click()
    wait_status(page, "posedesign-edit-status", "its pose came along", timeout=30_000)
    page.locator("#posedesign-edit-image img, #posedesign-edit-image canvas").first.wait_for(timeout=30_000)
    page.locator("#posedesign-region-attribute input").click()
    page.get_by_role("option", name="A2 sleeve length", exact=True).click()
    page.locator("#posedesign-preview-region").click()
    wait_status(page, "posedesign-edit-status", "Region of", timeout=60_000)
    assert "the draft's pose" in page.locator("#posedesign-edit-status").inner_text()
    page.locator("#posedesign-region img").first.wait_for(timeout=30_000)

    # 3. the A2 button edits the sleeves of that draft
    page.locator("#posedesign-edit-prompt textarea").fill("long puffed sleeves")
    page.locator("#posedesign-attr-sleeve_length").click()
    status = wait_status(page, "posedesign-edit-status", "Done", timeout=180_000)
    assert "A2 sleeve length" in status, status
    page.locator("#posedesign-edit-gallery img").first.wait_for(timeout=30_000)
    time.sleep(0.5)
    screenshot(page, "posedesign")
    [edit_file] = list(studio["outputs"].root.glob("*/posedesign_edit/*.png"))
    edit = read_png_params(edit_file)
    assert edit["attribute"] == "sleeve_length" and not edit["painted_mask"], edit
    assert edit["prompt"] == "long puffed sleeves" and edit["category"] == "Coat", edit

    # 4. the edit goes on to try-on as the garment
    page.locator("#posedesign-edit-gallery img").first.click()
    page.wait_for_function("() => document.querySelector('#posedesign-edit-details').innerText.includes('attribute')",
                           timeout=30_000)
    page.locator("#posedesign-send-tryon").click()
    page.locator("#tryon-garment img").first.wait_for(state="visible", timeout=30_000)


def test_painted_region_required_when_chosen(studio, page, tmp_path):
    """'Painted' with nothing painted is refused with a sentence; nothing is written."""
    person = astronaut_png(tmp_path)
    open_tab(page, studio["url"], "Pose design", "#posedesign-prompt")
    from tests.studio.browser_helpers import upload_to_editor

    before = set(studio["outputs"].root.glob("*/posedesign_edit/*.png"))
    upload_to_editor(page, "#posedesign-edit-image", person)
    page.locator("#posedesign-edit-prompt textarea").fill("a mandarin collar")
    page.locator("#posedesign-region-source").get_by_label("Painted").check()
    page.locator("#posedesign-attr-collar").click()
    page.locator(".toast-body.error").first.wait_for(timeout=30_000)
    assert "nothing is painted" in page.locator(".toast-body.error").first.inner_text()
    assert set(studio["outputs"].root.glob("*/posedesign_edit/*.png")) == before
