"""The try-off tab: a photo of someone wearing a garment -> the garment as a product photo (TryOffAnyone).

Same pattern as the try-on tab (studio/tabs/tryon.py): components by name, painted strokes over the photo mark the
garment and override the automatic mask, "Preview mask", SAM clicks when the preset has SAM. Never imports
torch: the service runs the ``tryoff`` and ``tryon_mask`` (kind="tryoff") tasks.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from pipelines.types import BACKGROUNDS, TRYOFF_CATEGORIES
from studio.components import (
    GENERATE,
    StudioContext,
    form_inputs,
    run_to_gallery,
    seed_value,
    visitor_id,
    wire_gallery,
    wire_send,
)
from studio.tabs.tryon import (
    mask_section,
    output_section,
    parse_size,
    person_editor,
    person_mask,
    sampler_section,
    size_choices,
    wire_mask_tools,
    wire_stop_and_seed,
)

logger = logging.getLogger(__name__)



def build_request(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Form values (by field name) -> ``tryoff`` task parameters. Raises ValueError with a sentence."""
    person, painted = person_mask(values)
    height, width = parse_size(values["size"])
    return dict(
        person=person,
        category=values["category"],
        mask=painted,
        auto_mask=bool(values["auto_mask"]),
        height=height,
        width=width,
        num_inference_steps=int(values["steps"]),
        guidance_scale=float(values["guidance_scale"]),
        seed=seed_value(values["seed"]),
        num_images=int(values["num_images"]),
        fit_mode=values["fit_mode"],
        background=values["background"],
    )


def build_tryoff_tab(ctx: StudioContext) -> dict[str, Any]:
    """Build the tab inside an open ``gr.Blocks``/``gr.Tab``; returns its components by name."""
    defaults = ctx.service.defaults("tryoff")
    f: dict[str, Any] = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            f["person"] = person_editor("tryoff-person", "Photo of the garment being worn — paint over it (optional)")
            f["category"] = gr.Radio(list(TRYOFF_CATEGORIES), value="upper", label="Garment to take off",
                                     info="The TryOffAnyone weights were trained on tops", elem_id="tryoff-category")
            mask_section(ctx, f, "tryoff")
        with gr.Column(scale=2):
            with gr.Row():
                sizes = size_choices(defaults)
                f["size"] = gr.Dropdown(sizes, value=sizes[0], label="Output (H x W)", elem_id="tryoff-size")
                f["fit_mode"] = gr.Radio(["crop", "pad"], value="crop", label="Fit photo", elem_id="tryoff-fit")
                f["background"] = gr.Radio(list(BACKGROUNDS), value="white", label="Background", elem_id="tryoff-background")
            random_button, reuse_button = sampler_section(f, defaults, "tryoff")
            out = output_section("tryoff", "Recovered garments")
            send_tryon = gr.Button("Send selected to try-on as the garment", elem_id="tryoff-send-tryon")
            with gr.Row():
                send_dressing = gr.Button("Send to dressing (garment slot 1)", elem_id="tryoff-send-dressing")
                send_design = gr.Button("Send to design (photo → sketch)", elem_id="tryoff-send-design")
    ctx.targets["tryoff_person"] = (f["person"], "tryoff")
    wire_mask_tools(ctx, f, "tryoff", "tryoff")
    wire_stop_and_seed(out, random_button, reuse_button, f["seed"])

    form = {name: component for name, component in f.items()
            if name not in ("preview_mask_button", "mask_info", "mask_preview", "sam_image", "sam_points",
                            "sam_polarity", "sam_clear")}

    def on_generate(values, request: gr.Request):
        user_id = visitor_id(values.get(ctx.user_id), request)
        by_name = {name: values[component] for name, component in form.items()}
        try:
            params = build_request(by_name, ctx.service.defaults("tryoff"))
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error))
        yield from run_to_gallery(ctx, "tryoff", params, request, user_id, out, "tryoff")

    out["generate"].click(
        on_generate, form_inputs(ctx, form),
        [out[k] for k in ("status", "progress", "preview", "gallery", "last_seed")], **GENERATE,
    )
    wire_gallery(ctx, out["gallery"], out["selected"], out["details"])
    wire_send(ctx, send_tryon, out["selected"], "tryon_garment", "try-on")
    wire_send(ctx, send_dressing, out["selected"], "dressing_garment", "dressing")
    wire_send(ctx, send_design, out["selected"], "design_photo", "design")

    def refresh_gallery(user_id):
        return ctx.outputs.list(user_id, "tryoff")

    f.update(gallery=out["gallery"], status=out["status"], refresh_gallery=refresh_gallery)
    return f
