"""The shipped GarmentBench-mini preset in the browser, as a new user meets it offline: a dress sketch, the colour
red and a logo in a painted box come out as a reddish dress of that silhouette; the logo in its box is what the mini LEM does not reach yet
(measured and printed, not asserted; issue #10 stays open on it)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.studio.browser_helpers import draw_stroke, drop_file
from tests.studio.conftest import free_port, screenshot

pytestmark = pytest.mark.browser

RED = (214, 40, 40)  # "Bold primaries" first colour, #d62828


@pytest.fixture(scope="module")
def mini_studio(models_dir, tmp_path_factory):
    import app

    work = tmp_path_factory.mktemp("mini_studio")
    args = app.parse_args(["--preset", "mini", "--outputs", str(work / "outputs"), "--runs", str(work / "runs"),
                           "--models_dir", str(models_dir), "--device", "cpu"])
    demo, outputs, runs = app.build(args)
    port = free_port()
    demo.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1", server_port=port,
                                                   prevent_thread_lock=True, quiet=True,
                                                   allowed_paths=[str(outputs.root)])
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "outputs": outputs, "service": demo.atelier_context.service,
               "demo": demo}
    finally:
        demo.close()


@pytest.fixture(scope="module")
def dress(tmp_path_factory):
    """A held-out dress with a logo (a seed the mini models never saw): its sketch, logo, box and silhouette."""
    from training.synthetic import main as synthetic_main

    root = tmp_path_factory.mktemp("dress") / "data"
    assert synthetic_main(["--out", str(root), "--count", "60", "--seed", "97", "--size", "64x80",
                           "--kinds", "garmentbench", "--split", "test"]) == 0
    manifest = json.loads((root / "garmentbench.json").read_text())
    record = next(s for s in manifest["samples"] if s["garment"]["category"] == "dress" and s["garment"]["logo"]
                  and s["garment"]["logo"]["colour"]["name"] in ("navy", "teal", "blue", "black", "yellow"))
    folder = root / "garmentbench"
    sketch = root / "sketch_512.png"
    Image.open(folder / record["files"]["sketch"]).convert("RGB").resize((512, 640), Image.NEAREST).save(sketch)
    return {"sketch": sketch, "logo": folder / record["files"]["logo"], "box": record["garment"]["logo"]["box"],
            "cloth": np.asarray(Image.open(folder / record["files"]["cloth"]).convert("L")).astype(float),
            "silhouette": np.asarray(Image.open(folder / record["files"]["silhouette"]).convert("L")) > 127}


def test_the_tabs_start_from_the_mini_presets_defaults(mini_studio):
    by_id = {block.elem_id: block for block in mini_studio["demo"].blocks.values() if getattr(block, "elem_id", None)}
    assert by_id["tryon-fit"].value == "stretch" and by_id["tryoff-fit"].value == "stretch"  # mini.yaml defaults
    assert by_id["design-steps"].value == 20


def test_mini_preset_draws_a_red_dress_with_the_logo_in_the_painted_box(mini_studio, dress, page):
    from training.minibench import colour_error, garment_mask, iou, ncc

    page.goto(mini_studio["url"])
    page.wait_for_selector("#design-sketch canvas", timeout=60_000)
    page.set_viewport_size({"width": 1400, "height": 1250})
    assert "GarmentBench-mini" in page.locator("#preset-banner").inner_text()
    time.sleep(0.8)

    # 1. the dress sketch, 2. red from a palette
    drop_file(page, "#design-sketch", dress["sketch"])  # the editor already holds a white page: dropped on it
    time.sleep(1.5)
    page.get_by_role("tab", name="Colour").click()
    page.locator("#design-palette input").click()
    page.get_by_role("option", name="Bold primaries").click()
    page.locator("#design-palette-colors label").first.wait_for(timeout=10_000)
    page.locator("#design-palette-colors label").first.click()
    time.sleep(0.5)

    # 3. the logo, and its box painted on the mask canvas (horizontal strokes inside the box)
    page.get_by_role("tab", name="Logo & mask").click()
    page.locator("#design-logo input[type=file]").set_input_files(str(dress["logo"]))
    page.locator("#design-placement-preview img").wait_for(timeout=20_000)
    page.locator("#design-mask-mode label", has_text="Paint mask").click()
    x0, y0, x1, y1 = (v / s for v, s in zip(dress["box"], (64, 80, 64, 80)))
    inset_x, inset_y = 12 / 512, 12 / 640  # half the 24 px brush: the paint stays inside the box
    for fy in np.linspace(y0 + inset_y, y1 - inset_y, 4):
        draw_stroke(page, "#design-mask", [(x0 + inset_x, fy), (x1 - inset_x, fy)])
    time.sleep(0.5)

    # 4. a colour-free prompt: the colour has to come from the picked swatch
    page.locator("#design-prompt textarea").fill("a dress with a logo")
    page.locator("#design-generate").click()
    page.wait_for_function("() => document.querySelector('#design-status').innerText.includes('Done')",
                           timeout=180_000)
    try:  # back to the sketch for the README screenshot (cosmetic: the checks below read the saved PNG)
        page.get_by_role("tab", name="Sketch", exact=True).first.click(timeout=15_000)
    except PlaywrightTimeout:
        print("mini browser: the Sketch tab did not take the click; screenshot of the current tab")
    time.sleep(0.5)
    screenshot(page, "mini_design")

    from pipelines.preprocess.images import read_png_params

    [path] = [p for p in mini_studio["outputs"].root.glob("*/design/*.png")
              if read_png_params(p)["prompt"] == "a dress with a logo"]
    params = read_png_params(path)
    assert params["has_sketch"] and params["has_color"] and params["has_logo"], params
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (80, 64, 3)
    # the silhouette of the sketch, in red, with the logo's pixels inside the box and not around it
    silhouette_iou = iou(garment_mask(image), dress["silhouette"])
    red_error = colour_error(image, RED)
    x0, y0, x1, y1 = dress["box"]
    box = np.zeros((80, 64), bool)
    box[y0:y1, x0:x1] = True
    logo_ncc = ncc(image.astype(float).mean(axis=2)[box], dress["cloth"][box])  # vs the held-out logo in its box
    print(f"mini browser: IoU {silhouette_iou:.3f}, red CIEDE2000 {red_error:.1f}, logo NCC {logo_ncc:.2f}")
    # measured 2026-12-08 (the stack of the clean 59-min run): IoU 0.71, CIEDE2000 31.2 -- an orange-red: the mini
    # colour adapter's held-out mean is 28.8 with the swatch, 39.5 without it (README)
    assert silhouette_iou > 0.5, silhouette_iou
    assert red_error < 35, red_error
    # the mini LEM does not place the logo yet (README, GarmentBench-mini): its NCC is printed, not asserted
