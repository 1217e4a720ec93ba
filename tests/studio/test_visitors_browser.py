"""Eight visitors at once, each clicking Generate the moment the page is up; one more leaves, one more stops.

Every first click makes a result (no "session not initialised"), each gallery holds exactly its visitor's image,
the GPU queue serves them in the order they clicked, a page closed while waiting is never run, and Stop takes a
waiting job out of the queue.
"""

from __future__ import annotations

import time

import pytest

from tests.studio.conftest import screenshot

pytestmark = pytest.mark.browser

VISITORS = 8
SEED = 5100  # visitor i generates with seed SEED + i (seeds end up in the file names)
DONE_TIMEOUT = 300_000  # ms for all of them (tiny preset, 2 CPU cores)


def status(page) -> str:
    return page.locator("#design-status").inner_text()


def gallery_names(page) -> list[str]:
    """The file names of the images this page's gallery shows (``<time>_<seed>.png``)."""
    sources = page.eval_on_selector_all("#design-gallery img", "els => els.map(e => e.src)")
    return [src.rsplit("/", 1)[-1] for src in sources]


def arrive_and_click(browser, url: str, seed: int):
    """A new browser (its own storage) opens the studio and clicks Generate as soon as the button is there."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.goto(url, wait_until="commit")
    seed_box = page.locator("#design-seed input")
    seed_box.fill(str(seed), timeout=90_000)
    seed_box.press("Tab")
    page.locator("#design-generate").click()
    return context, page


def test_eight_visitors_at_once(studio, browser):
    import threading

    queue = studio["demo"].atelier_context.gpu_queue
    # the GPU is busy with someone else's job while the visitors arrive, so every one of them has to queue
    busy = queue.enter("someone-else", "garment")
    list(queue.wait(busy, threading.Event()))
    already = len(queue.order)
    contexts, pages = [], []
    try:
        for index in range(VISITORS):
            context, page = arrive_and_click(browser, studio["url"], SEED + index)
            contexts.append(context)
            pages.append(page)
        # a ninth visitor queues and closes the page while waiting; a tenth queues and presses Stop
        gone_context, gone = arrive_and_click(browser, studio["url"], SEED + 100)
        gone.wait_for_function("() => document.querySelector('#design-status').innerText.includes('Waiting for "
                               "the GPU')", timeout=60_000)
        screenshot(gone, "queue-waiting")
        gone_context.close()
        stop_context, stopper = arrive_and_click(browser, studio["url"], SEED + 101)
        contexts.append(stop_context)
        stopper.wait_for_function("() => document.querySelector('#design-status').innerText.includes('Waiting for "
                                  "the GPU')", timeout=60_000)
        stopper.locator("#design-stop").click()
        first = pages[0]
        assert "Waiting for the GPU: 1 job ahead" in status(first), status(first)
        assert f"Waiting for the GPU: {VISITORS} jobs ahead" in status(pages[-1]), status(pages[-1])
        queue.leave(busy)

        deadline = time.monotonic() + DONE_TIMEOUT / 1000
        for page in pages:
            left = max(1_000, int((deadline - time.monotonic()) * 1000))
            page.wait_for_function("() => /Done:|rror/.test(document.querySelector('#design-status').innerText)",
                                   timeout=left)
            page.wait_for_function("() => document.querySelectorAll('#design-gallery img').length > 0",
                                   timeout=30_000)
        texts = [status(page) for page in pages]
        assert all(text.startswith("Done: 1 image(s)") for text in texts), texts  # 8 results, 0 refusals
        # each gallery shows exactly the one image its visitor made (its seed), nobody else's
        names = [gallery_names(page) for page in pages]
        assert all(len(n) == 1 and n[0].endswith(f"_{SEED + i}.png") for i, n in enumerate(names)), names
        # on disk: one folder per visitor, holding only that visitor's image
        owner = {}
        for folder in studio["outputs"].root.iterdir():
            for png in (folder / "design").glob(f"*_{SEED // 100}??.png"):
                owner.setdefault(int(png.stem.rsplit("_", 1)[1]) - SEED, []).append(folder.name)
        assert sorted(owner) == list(range(VISITORS)) and all(len(v) == 1 for v in owner.values()), owner
        visitors = [owner[i][0] for i in range(VISITORS)]
        assert len(set(visitors)) == VISITORS
        for visitor in visitors:
            assert len(list((studio["outputs"].root / visitor / "design").glob("*.png"))) == 1

        served = queue.order[already:]
        assert [v for v, _ in served] == visitors  # first come, first served: the order they clicked in
        assert [n for _, n in served] == sorted(n for _, n in served)
        assert len(served) == VISITORS  # the closed page and the stopped one never ran
        assert queue.snapshot() == []
        stopper.wait_for_function("() => document.body.innerText.includes('Stopped')", timeout=30_000)
        screenshot(pages[-1], "visitors-done")
    finally:
        queue.leave(busy)
        for context in contexts:
            context.close()
