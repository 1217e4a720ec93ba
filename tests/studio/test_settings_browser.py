"""Headless Chromium in the Settings tab: the memory mode is changed and the status says what is in force."""

from __future__ import annotations

import pytest

from tests.studio.browser_helpers import open_tab
from tests.studio.conftest import screenshot

pytestmark = pytest.mark.browser


def test_memory_mode_applied_from_settings(studio, page):
    service = studio["service"]
    open_tab(page, studio["url"], "Settings", "#settings-memory-mode")
    page.locator("#settings-memory-mode input").click()
    page.get_by_role("option", name="model_offload", exact=True).click()
    page.locator("#settings-vae-tiling input").check()
    page.locator("#settings-memory-apply").click()
    page.wait_for_function("() => document.querySelector('#settings-status').innerText.includes('model offload')",
                           timeout=30_000)
    assert "VAE tiling on" in page.locator("#settings-status").inner_text()
    assert service.registry.memory_mode == "model_offload" and service.registry.vae_tiling
    screenshot(page, "settings_memory")
    service.configure_memory("auto", None, False)  # the session's studio is shared with other tests
    assert service.registry.memory_mode == "resident"
