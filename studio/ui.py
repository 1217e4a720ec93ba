"""Assemble the studio: one ``gr.Blocks`` with a tab per task, a per-visitor id, and shared GPU queue."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import gradio as gr

from studio.components import OutputStore, StudioContext, visitor_id

logger = logging.getLogger(__name__)

# (tab label, tab id, module, builder). Order = order on the page.
TABS = [
    ("Design", "design", "studio.tabs.design", "build_design_tab"),
    ("Pose design", "posedesign", "studio.tabs.posedesign", "build_posedesign_tab"),
    ("Dressing", "dressing", "studio.tabs.dressing", "build_dressing_tab"),
    ("Try-on", "tryon", "studio.tabs.tryon", "build_tryon_tab"),
    ("Try-off", "tryoff", "studio.tabs.tryoff", "build_tryoff_tab"),
    ("Training", "training", "studio.tabs.training", "build_training_tab"),
    ("Gallery", "gallery", "studio.tabs.gallery", "build_gallery_tab"),
    ("Settings", "settings", "studio.tabs.settings", "build_settings_tab"),
]

CSS = """
#design-status, #tryon-status, #tryoff-status, #dressing-status, #posedesign-status {min-height: 2.5em}
footer {visibility: hidden}
"""


def build_ui(service: Any, outputs: OutputStore, runs: Any = None) -> gr.Blocks:
    with gr.Blocks(title="Atelier — fashion design studio") as demo:
        gr.Markdown(
            "# Atelier\nSketch a garment, pick its colours and place a logo; dress a model in several garments; "
            "try garments on a photo and take them back off; fine-tune on your own garments."
        )
        user_id = gr.BrowserState("", storage_key="atelier_user")
        ctx = StudioContext(service=service, outputs=outputs, user_id=user_id, runs=runs)
        banner = service.banner()
        if banner:
            gr.Markdown(f"ℹ️ {banner}", elem_id="preset-banner")
        problem = service.preset_problems()
        if problem:
            gr.Markdown(f"⚠️ **{problem}** Open *Settings* to switch to the tiny preset.", elem_id="preset-warning")
        builders: dict[str, dict] = {}
        with gr.Tabs() as tabs:
            ctx.tabs = tabs
            for label, tab_id, module_name, builder in TABS:
                try:
                    module = importlib.import_module(module_name)
                except ModuleNotFoundError as error:
                    if error.name != module_name:
                        raise
                    logger.warning("tab %s is not available (%s)", label, error)
                    continue
                with gr.Tab(label, id=tab_id, elem_id=f"tab-{tab_id}") as tab:
                    builders[tab_id] = getattr(module, builder)(ctx) or {}
                parts = builders[tab_id]
                if "gallery" in parts and "refresh_gallery" in parts:
                    # opening a tab shows what the visitor made elsewhere meanwhile
                    tab.select(_for_visitor(parts["refresh_gallery"]), user_id, parts["gallery"], queue=False)
        for wire in ctx.deferred:
            wire()

        def on_load(current: str, request: gr.Request):
            uid = visitor_id(current, request)  # a new visitor: derived from the session, as their clicks are
            galleries = [builders[tab]["refresh_gallery"](uid) if "refresh_gallery" in builders[tab]
                         else ctx.outputs.list(uid, tab) for tab in gallery_tabs]
            return [uid, *galleries]

        gallery_tabs = [tab for tab, parts in builders.items() if "gallery" in parts]
        demo.load(on_load, user_id, [user_id, *[builders[tab]["gallery"] for tab in gallery_tabs]], queue=False)
    demo.atelier_context = ctx  # for tests
    return demo


def _for_visitor(refresh):
    """``refresh(visitor id)`` as a handler of (stored id, request): works before the page-load event too."""
    def handler(current: str, request: gr.Request):
        return refresh(visitor_id(current, request))

    return handler
