"""The gallery tab: everything this visitor made, across tabs, with the parameters stored in each PNG."""

from __future__ import annotations

from typing import Any

import gradio as gr

from studio.components import StudioContext, visitor_id, wire_gallery, wire_send

FOLDERS = ["all", "design", "posedesign", "posedesign_edit", "dressing", "tryon", "tryoff"]


def build_gallery_tab(ctx: StudioContext) -> dict[str, Any]:
    with gr.Row():
        folder = gr.Radio(FOLDERS, value="all", label="Made in", elem_id="gallery-folder")
        refresh = gr.Button("Refresh", scale=0, min_width=100, elem_id="gallery-refresh")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Your images (newest first)", columns=5, height=560, elem_id="gallery-all",
                                 interactive=False)
        with gr.Column(scale=2):
            selected = gr.State(None)
            details = gr.Markdown("Select an image to see how it was made.", elem_id="gallery-details")
            send_tryon = gr.Button("Send to try-on (garment)", elem_id="gallery-send-tryon")
            send_person = gr.Button("Send to try-on (person)", elem_id="gallery-send-person")
            send_dressing = gr.Button("Send to dressing (garment slot 1)", elem_id="gallery-send-dressing")
            send_design = gr.Button("Send to design (photo → sketch)", elem_id="gallery-send-design")
            send_edit = gr.Button("Send to attribute editing", elem_id="gallery-send-edit")

    def listing(user_id, which, request: gr.Request):
        return ctx.outputs.list(visitor_id(user_id, request), None if which == "all" else which, limit=200)

    refresh.click(listing, [ctx.user_id, folder], gallery, queue=False)
    folder.change(listing, [ctx.user_id, folder], gallery, queue=False)
    wire_gallery(ctx, gallery, selected, details)
    wire_send(ctx, send_tryon, selected, "tryon_garment", "try-on")
    wire_send(ctx, send_person, selected, "tryon_person", "try-on")
    wire_send(ctx, send_dressing, selected, "dressing_garment", "dressing")
    wire_send(ctx, send_design, selected, "design_photo", "design")
    wire_send(ctx, send_edit, selected, "posedesign_edit", "pose design")
    return {"gallery": gallery,
            "refresh_gallery": lambda user_id: ctx.outputs.list(user_id, None, limit=200)}
