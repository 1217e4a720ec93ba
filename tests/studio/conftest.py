"""A real studio server (tiny preset) and a headless Chromium page for the UI tests."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ATELIER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
    "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def studio(models_dir, tmp_path_factory):
    """(url, demo, service, outputs root) of a running studio on the tiny preset."""
    import app

    work = tmp_path_factory.mktemp("studio")
    args = app.parse_args([
        "--preset", "tiny", "--outputs", str(work / "outputs"), "--runs", str(work / "runs"),
        "--models_dir", str(models_dir), "--device", "cpu",
    ])
    demo, outputs, runs = app.build(args)
    port = free_port()
    demo.queue(default_concurrency_limit=1).launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
        allowed_paths=[str(outputs.root), str(Path(args.runs).resolve())],
    )
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "demo": demo, "outputs": outputs, "runs": runs,
               "service": demo.atelier_context.service, "work": work}
    finally:
        demo.close()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail(f"headless Chromium not found at {CHROMIUM}: run `make test` (it installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    page = context.new_page()
    yield page
    context.close()


def screenshot(page, name: str) -> Path:
    """Save a screenshot to $ATELIER_SCREENSHOT_DIR (docs/screenshots via `make screenshots`) or a temp dir."""
    folder = Path(os.environ.get("ATELIER_SCREENSHOT_DIR", "/tmp/atelier-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
