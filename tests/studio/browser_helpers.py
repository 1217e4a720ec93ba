"""Images and page helpers shared by the try-on / try-off / dressing browser tests."""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image, ImageDraw


def astronaut_png(folder: Path) -> Path:
    """skimage's astronaut (a real person photo, 512x512) as a PNG: real mediapipe masks and poses."""
    from skimage import data

    path = Path(folder) / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def garment_png(folder: Path, name: str, kind: str = "tshirt", color=(30, 110, 220)) -> Path:
    """A flat product shot on white: a T-shirt silhouette (``tshirt``) or a pair of trousers (``trousers``)."""
    image = Image.new("RGB", (192, 256), "white")
    draw = ImageDraw.Draw(image)
    if kind == "tshirt":
        draw.polygon([(60, 30), (132, 30), (180, 70), (160, 100), (140, 85), (140, 230), (52, 230), (52, 85),
                      (32, 100), (12, 70)], fill=color)
        draw.ellipse((80, 20, 112, 44), fill="white")  # neckline
    else:
        draw.polygon([(50, 20), (142, 20), (160, 240), (108, 240), (96, 90), (84, 240), (32, 240)], fill=color)
    path = Path(folder) / f"{name}.png"
    image.save(path)
    return path


def open_tab(page, url: str, tab: str, ready_selector: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name=tab).click()
    page.wait_for_selector(ready_selector, timeout=60_000)
    time.sleep(0.5)


def draw_stroke(page, selector: str, points: list[tuple[float, float]]) -> None:
    """Press the editor's Brush tool and drag through ``points`` (fractions of the canvas box)."""
    page.locator(f"{selector} button[aria-label='Brush']").first.click()
    time.sleep(0.3)
    canvas = page.locator(f"{selector} canvas").first
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + points[0][0] * box["width"], box["y"] + points[0][1] * box["height"])
    page.mouse.down()
    for fx, fy in points[1:]:
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"], steps=8)
    page.mouse.up()


def wait_status(page, elem_id: str, text: str = "Done", timeout: float = 120_000) -> str:
    """Wait until the Markdown ``#elem_id`` contains ``text``; fail at once, with its message, on an error toast."""
    page.wait_for_function(
        """([sel, text]) => {
            const el = document.querySelector(sel);
            return (el && el.innerText.includes(text)) || document.querySelector('.toast-body.error') !== null;
        }""",
        arg=[f"#{elem_id}", text], timeout=timeout,
    )
    error = page.locator(".toast-body.error")
    assert error.count() == 0, f"error shown: {error.first.inner_text()}"
    return page.locator(f"#{elem_id}").inner_text()


def drop_file(page, selector: str, path: Path, mime: str = "image/png") -> None:
    """Drag a file from the desktop onto a drop zone inside ``selector`` (how a photo gets into a gr.ImageEditor:
    its hidden file input ignores ``set_input_files``)."""
    import base64

    data = base64.b64encode(Path(path).read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([b64, name, mime]) => {
            const bin = atob(b64); const bytes = new Uint8Array(bin.length);
            for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: mime}));
            return transfer;
        }""",
        [data, Path(path).name, mime],
    )
    target = f"{selector} [aria-dropeffect]"
    for event in ("dragenter", "dragover", "drop"):
        page.dispatch_event(target, event, {"dataTransfer": transfer})


def upload_to_editor(page, selector: str, path: Path) -> None:
    """Put a photo into a gr.ImageEditor: choose its Upload tool, then drop the file on it."""
    for _ in range(3):
        page.locator(f"{selector} button[aria-label='Upload']").first.click()
        time.sleep(0.5)
        drop_file(page, selector, path)
        try:
            page.locator(f"{selector} .empty").wait_for(state="detached", timeout=15_000)
            return
        except Exception:  # noqa: BLE001 - the editor was still initialising: try again
            continue
    raise AssertionError(f"the photo never appeared in {selector}")
