"""The try-off tab: a photo of someone wearing a garment -> the garment as a product photo.

Two models: TryOffAnyone (fast, SD1.5 concat-inpainting; task ``tryoff``) and TEMU-VTOFF (high quality, two SD3
transformers; task ``tryoff_temu``), which also takes a caption of the garment's attributes and a memory mode.

Same pattern as the try-on tab (studio/tabs/tryon.py): components by name, painted strokes over the photo mark the
garment and override the automatic mask, "Preview mask", SAM clicks when the preset has SAM. Never imports
torch: the service runs the ``tryoff`` and ``tryon_mask`` (kind="tryoff") tasks.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from pipelines.types import BACKGROUNDS, FIT_MODES, MEMORY_MODES, TEMU_CAPTIONS, TRYOFF_CATEGORIES
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



MODELS = [("TryOffAnyone — fast (SD1.5)", "tryoff"), ("TEMU-VTOFF — high quality (SD3, needs a big GPU)", "tryoff_temu")]
BACKGROUND_INFO = ("white: flood fill from the border (offline) · remove: RMBG-1.4 cut-out on white, the official "
                   "TryOffAnyone post-processing (falls back to the flood fill, and says so, without its weights) · "
                   "keep: the raw output")


def build_request(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Form values (by field name) -> parameters of the chosen model's task. Raises ValueError with a sentence."""
    person, painted = person_mask(values)
    height, width = parse_size(values["size"])
    extra = {}
    if values.get("model") == "tryoff_temu":
        extra = {"caption": str(values.get("caption") or "").strip(), "memory_mode": values.get("memory_mode") or "auto"}
    return dict(
        **extra,
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
            f["model"] = gr.Radio(MODELS, value="tryoff", label="Model", elem_id="tryoff-model")
            f["person"] = person_editor("tryoff-person", "Photo of the garment being worn — paint over it (optional)")
            f["category"] = gr.Radio(list(TRYOFF_CATEGORIES), value="upper", label="Garment to take off",
                                     info="The TryOffAnyone weights were trained on tops", elem_id="tryoff-category")
            f["caption"] = gr.Textbox(TEMU_CAPTIONS["upper"], label="Garment caption (TEMU-VTOFF)", visible=False,
                                      info="Its attributes: type, neckline, sleeves, fit, length — no colours",
                                      elem_id="tryoff-caption")
            mask_section(ctx, f, "tryoff")
        with gr.Column(scale=2):
            with gr.Row():
                sizes = size_choices(defaults)
                f["size"] = gr.Dropdown(sizes, value=sizes[0], label="Output (H x W)", elem_id="tryoff-size")
                f["fit_mode"] = gr.Radio(list(FIT_MODES), value=defaults.get("fit_mode", "crop"), label="Fit photo",
                                    elem_id="tryoff-fit",
                                    info="stretch: the official TryOffAnyone geometry (aspect not kept)")
                f["background"] = gr.Radio(list(BACKGROUNDS), value="white", label="Background", elem_id="tryoff-background",
                                           info=BACKGROUND_INFO)
            f["memory_mode"] = gr.Dropdown(list(MEMORY_MODES), value="auto", label="GPU memory (TEMU-VTOFF)",
                                           info="auto: everything resident when it fits, else offload", visible=False,
                                           elem_id="tryoff-memory")
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

    def on_model(model, category):
        """Show the TEMU-only settings and the chosen model's default size, steps, guidance and seed."""
        chosen = ctx.service.defaults(model)
        temu = model == "tryoff_temu"
        sizes = size_choices(chosen)
        info = ("TEMU-VTOFF was trained on upper-body, lower-body garments and dresses" if temu
                else "The TryOffAnyone weights were trained on tops")
        return (gr.update(visible=temu, value=TEMU_CAPTIONS[category]), gr.update(visible=temu),
                gr.update(choices=sizes, value=sizes[0]), int(chosen.get("num_inference_steps", 50)),
                float(chosen.get("guidance_scale", 2.5)), int(chosen.get("seed", 42)), gr.update(info=info))

    f["model"].change(on_model, [f["model"], f["category"]],
                      [f["caption"], f["memory_mode"], f["size"], f["steps"], f["guidance_scale"], f["seed"],
                       f["category"]], queue=False)

    def on_category(category, caption):  # a caption still at a category default follows the category
        return TEMU_CAPTIONS[category] if caption.strip() in TEMU_CAPTIONS.values() or not caption.strip() \
            else gr.update()

    f["category"].change(on_category, [f["category"], f["caption"]], f["caption"], queue=False)

    def on_generate(values, request: gr.Request):
        user_id = visitor_id(values.get(ctx.user_id), request)
        by_name = {name: values[component] for name, component in form.items()}
        task = by_name.get("model") or "tryoff"
        try:
            params = build_request(by_name, ctx.service.defaults(task))
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error))
        yield from run_to_gallery(ctx, task, params, request, user_id, out, "tryoff")

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
