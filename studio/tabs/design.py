"""The design tab: sketch + colour + logo -> garment (IMAGGarment-1 GAM + LEM).

Components are mapped BY NAME (a dict field -> component, handlers receive a dict) so that reordering
the form can never send a value to the wrong setting.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import gradio as gr
import yaml
from PIL import Image, ImageDraw

from pipelines.preprocess.colors import dominant_color, swatch_from_hex, to_hex
from pipelines.preprocess.images import load_image
from pipelines.types import DESIGN_NEGATIVE
from studio.components import (
    GENERATE,
    GPU_QUEUE,
    Progress,
    StudioContext,
    editor_to_image_and_mask,
    is_blank,
    load_params,
    new_user_id,
    raise_user_error,
    seed_value,
    stream_progress,
    stream_task,
    visitor_id,
    wire_gallery,
    wire_send,
    wire_stop,
)

logger = logging.getLogger(__name__)

PRESETS = Path(__file__).resolve().parents[2] / "presets"
CANVAS = (512, 640)  # (W, H) of the drawing canvas: the garment spec's 4:5 at 512x640
COLOR_SOURCES = ["None", "Picker", "Swatch image"]
MASK_MODES = ["Place logo", "Paint mask"]
DETECTORS = ["lineart", "canny", "hed", "pidinet", "lineart_model"]

def load_yaml(name: str) -> dict:
    return yaml.safe_load((PRESETS / name).read_text()) or {}


# ------------------------------------------------------------------------------------------ pure logic
def logo_box(width: int, height: int, center_x: float, center_y: float, size: float) -> tuple[int, int, int, int]:
    """The logo's square box on a (width, height) canvas: centre in [0, 1] units, size = fraction of width."""
    for label, value in (("logo x", center_x), ("logo y", center_y)):
        if not 0 <= value <= 1:
            raise ValueError(f"{label}={value} must be between 0 and 1")
    if not 0.02 <= size <= 1:
        raise ValueError(f"logo size={size} must be between 0.02 and 1")
    side = max(2, int(round(size * width)))
    left = int(round(center_x * width - side / 2))
    top = int(round(center_y * height - side / 2))
    left = min(max(left, 0), width - side)
    top = min(max(top, 0), max(height - side, 0))
    return left, top, left + side, min(top + side, height)


def placement_mask(width: int, height: int, center_x: float, center_y: float, size: float) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    left, top, right, bottom = logo_box(width, height, center_x, center_y, size)
    ImageDraw.Draw(mask).rectangle((left, top, right - 1, bottom - 1), fill=255)  # PIL boxes are inclusive
    return mask


def placement_preview(
    sketch: Image.Image | None, logo: Image.Image | None, mask: Image.Image | None
) -> Image.Image:
    """The sketch with the logo drawn into the mask's bounding box and the mask outlined in red."""
    canvas = (sketch or Image.new("RGB", CANVAS, "white")).convert("RGB").resize(CANVAS)
    if mask is None:
        return canvas
    mask = mask.convert("L").resize(CANVAS, Image.NEAREST)
    box = mask.getbbox()
    if box is None:
        return canvas
    if logo is not None:
        w, h = box[2] - box[0], box[3] - box[1]
        fitted = logo.convert("RGBA")
        fitted.thumbnail((w, h))
        offset = (box[0] + (w - fitted.width) // 2, box[1] + (h - fitted.height) // 2)
        canvas.paste(fitted, offset, fitted)
    tint = Image.new("RGB", CANVAS, (220, 40, 40))
    canvas = Image.composite(Image.blend(canvas, tint, 0.25), canvas, mask)
    ImageDraw.Draw(canvas).rectangle(box, outline=(220, 40, 40), width=3)
    return canvas


def build_request(values: dict[str, Any], defaults: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Form values (by field name) -> GarmentRequest parameters + notes for the designer.

    Raises ValueError with a designer-readable sentence for bad input.
    """
    notes: list[str] = []
    sketch, _ = editor_to_image_and_mask(values["sketch"], "sketch")
    if is_blank(sketch):
        sketch = None
        notes.append("no sketch drawn: the silhouette comes from the prompt")
    color = None
    source = values["color_source"]
    if source == "Picker":
        color = swatch_from_hex(values["color"])
    elif source == "Swatch image":
        if values["swatch"] is None:
            raise ValueError("Colour source is 'Swatch image' but no swatch was uploaded.")
        color = load_image(values["swatch"], "colour swatch")
    logo = None
    logo_mask = None
    if values["logo"] is not None:
        logo = load_image(values["logo"], "logo", min_side=8)
        if values["mask_mode"] == "Paint mask":
            _, logo_mask = editor_to_image_and_mask(values["mask"], "logo mask")
            if logo_mask is None:
                raise ValueError("Mask mode is 'Paint mask' but nothing is painted: paint where the logo goes.")
        else:
            logo_mask = placement_mask(*CANVAS, values["logo_x"], values["logo_y"], values["logo_size"])
    prompt = (values["prompt"] or "").strip()
    style = load_yaml("styles.yaml").get(values["style"] or "None", "")
    if prompt and style:
        prompt += style
    if not prompt and sketch is None and color is None and logo is None:
        raise ValueError("Nothing to design from: draw a sketch, pick a colour, add a logo or write a prompt.")
    params = dict(
        prompt=prompt,
        negative_prompt=values["negative_prompt"] or "",
        sketch=sketch,
        color=color,
        logo=logo,
        logo_mask=logo_mask,
        height=int(defaults.get("height", 640)),
        width=int(defaults.get("width", 512)),
        num_inference_steps=int(values["steps"]),
        guidance_scale=float(values["guidance_scale"]),
        sketch_scale=float(values["sketch_scale"]),
        color_scale=float(values["color_scale"]),
        seed=seed_value(values["seed"]),
        num_images=int(values["num_images"]),
        keep_outside_logo=bool(values["keep_outside_logo"]),
    )
    return params, notes


# ----------------------------------------------------------------------------------------------- tab
def build_design_tab(ctx: StudioContext) -> dict[str, Any]:
    """Build the tab inside an open ``gr.Blocks``/``gr.Tab``; returns its components by name."""
    defaults = ctx.service.defaults("garment")
    palettes = load_yaml("palettes.yaml")
    styles = list(load_yaml("styles.yaml"))
    f: dict[str, Any] = {}  # field name -> component
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Tab("Sketch"):
                f["sketch"] = gr.ImageEditor(
                    label="Sketch (black lines on white)",
                    value={"background": Image.new("RGB", CANVAS, "white"), "layers": [], "composite": None},
                    type="pil", image_mode="RGBA", canvas_size=CANVAS, fixed_canvas=True, height=520,
                    brush=gr.Brush(default_size=4, colors=["#000000", "#555555", "#999999"], default_color="#000000",
                                   color_mode="defaults"),
                    eraser=gr.Eraser(default_size=16), layers=False, elem_id="design-sketch",
                    sources=("upload", "clipboard"),
                )
                with gr.Accordion("Photo → sketch", open=False):
                    with gr.Row():
                        f["photo"] = gr.Image(label="Photo", type="pil", elem_id="design-photo", height=200)
                        with gr.Column():
                            f["detector"] = gr.Dropdown(DETECTORS, value="lineart", label="Line detector",
                                                        info="lineart/canny need no download; the others use lllyasviel/Annotators")
                            photo_button = gr.Button("Make sketch from photo", elem_id="design-photo-to-sketch")
            with gr.Tab("Colour"):
                f["color_source"] = gr.Radio(COLOR_SOURCES, value="Picker", label="Colour source", elem_id="design-color-source")
                with gr.Row():
                    f["color"] = gr.ColorPicker(value="#1f3b5a", label="Garment colour", elem_id="design-color")
                    f["palette"] = gr.Dropdown(list(palettes), value=None, label="Palette", elem_id="design-palette")
                f["palette_colors"] = gr.Radio([], label="Palette colours (click one)", elem_id="design-palette-colors")
                f["swatch"] = gr.Image(label="…or a fabric swatch photo", type="pil", height=160, elem_id="design-swatch")
            with gr.Tab("Logo & mask"):
                with gr.Row():
                    f["logo"] = gr.Image(label="Logo", type="pil", image_mode="RGBA", height=160, elem_id="design-logo")
                    f["mask_mode"] = gr.Radio(MASK_MODES, value="Place logo", label="Logo region", elem_id="design-mask-mode")
                with gr.Row():
                    f["logo_x"] = gr.Slider(0, 1, value=0.5, step=0.01, label="Logo x", elem_id="design-logo-x")
                    f["logo_y"] = gr.Slider(0, 1, value=0.35, step=0.01, label="Logo y", elem_id="design-logo-y")
                    f["logo_size"] = gr.Slider(0.05, 0.8, value=0.25, step=0.01, label="Logo size", elem_id="design-logo-size")
                f["mask"] = gr.ImageEditor(
                    label="Paint the logo region (Paint mask mode)", type="pil", image_mode="RGBA", canvas_size=CANVAS,
                    fixed_canvas=True, height=420, value={"background": Image.new("RGB", CANVAS, "white"), "layers": [], "composite": None},
                    brush=gr.Brush(default_size=24, colors=["#ff3030"], default_color="#ff3030", color_mode="fixed"),
                    layers=False, elem_id="design-mask", sources=(),
                )
                f["placement_preview"] = gr.Image(label="Logo placement preview", interactive=False, height=320,
                                                  elem_id="design-placement-preview")
        with gr.Column(scale=2):
            f["prompt"] = gr.Textbox(label="Prompt", placeholder="a navy cotton shirt with a chest logo", lines=2,
                                     elem_id="design-prompt")
            f["negative_prompt"] = gr.Textbox(label="Negative prompt", lines=1,
                                              value=defaults.get("negative_prompt", DESIGN_NEGATIVE))
            f["style"] = gr.Dropdown(styles, value="None", label="Style")
            with gr.Row():
                f["seed"] = gr.Number(value=int(defaults.get("seed", 42)), precision=0, label="Seed (-1 = random)",
                                      elem_id="design-seed", minimum=-1)
                random_button = gr.Button("Random", scale=0, min_width=70, elem_id="design-seed-random")
                reuse_button = gr.Button("Reuse last", scale=0, min_width=90, elem_id="design-seed-reuse")
            with gr.Row():
                f["steps"] = gr.Slider(1, 100, value=int(defaults.get("num_inference_steps", 50)), step=1, label="Steps", elem_id="design-steps")
                f["guidance_scale"] = gr.Slider(0, 15, value=float(defaults.get("guidance_scale", 7.0)), step=0.5, label="Guidance")
            with gr.Row():
                f["sketch_scale"] = gr.Slider(0, 1.5, value=float(defaults.get("sketch_scale", 0.6)), step=0.05, label="Sketch strength")
                f["color_scale"] = gr.Slider(0, 1.5, value=float(defaults.get("color_scale", 1.0)), step=0.05, label="Colour strength")
            with gr.Row():
                f["num_images"] = gr.Slider(1, 8, value=1, step=1, label="Images", elem_id="design-num-images")
                f["keep_outside_logo"] = gr.Checkbox(False, label="Keep garment outside the logo region")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="design-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="design-stop")
            status = gr.Markdown("Ready.", elem_id="design-status")
            progress_bar = gr.Slider(0, 1, value=0, label="Progress", interactive=False, elem_id="design-progress")
            preview = gr.Image(label="Live preview", interactive=False, height=160, elem_id="design-preview")
            gallery = gr.Gallery(label="Your designs", columns=3, height=320, elem_id="design-gallery",
                                 interactive=False)
            selected = gr.State(None)
            details = gr.Markdown(elem_id="design-details")
            send_tryon = gr.Button("Send selected to try-on", elem_id="design-send-tryon")
            with gr.Accordion("Load parameters from an image", open=False):
                params_file = gr.File(label="PNG made by Atelier", file_types=[".png"], elem_id="design-params-file")
                load_button = gr.Button("Load parameters")
    last_seed = gr.State(None)

    # ---- handlers
    def on_photo(photo, detector):
        if photo is None:
            raise gr.Error("Upload a photo first.")
        try:
            sketch = ctx.service.sketch_from_photo(load_image(photo, "photo"), detector)
        except Exception as error:  # detector download failures included
            raise_user_error(error if isinstance(error, (ValueError, TypeError)) else error)
        sketch = sketch.resize(CANVAS)
        return {"background": sketch, "layers": [], "composite": None}

    photo_button.click(on_photo, [f["photo"], f["detector"]], f["sketch"], concurrency_id=GPU_QUEUE)

    def on_palette(name):
        colors = palettes.get(name) or []
        return gr.update(choices=colors, value=None)

    f["palette"].change(on_palette, f["palette"], f["palette_colors"], queue=False)
    f["palette_colors"].change(
        lambda c: (gr.update(value=c), gr.update(value="Picker")) if c else (gr.update(), gr.update()),
        f["palette_colors"], [f["color"], f["color_source"]], queue=False,
    )

    def on_swatch(image):
        if image is None:
            return gr.update(), gr.update()
        return to_hex(dominant_color(image)), "Swatch image"

    f["swatch"].upload(on_swatch, f["swatch"], [f["color"], f["color_source"]], queue=False)

    preview_inputs = {f[k] for k in ("sketch", "logo", "mask_mode", "mask", "logo_x", "logo_y", "logo_size")}

    def on_placement(values):
        sketch, _ = editor_to_image_and_mask(values[f["sketch"]], "sketch")
        if values[f["mask_mode"]] == "Paint mask":
            _, mask = editor_to_image_and_mask(values[f["mask"]], "logo mask")
        else:
            mask = placement_mask(*CANVAS, values[f["logo_x"]], values[f["logo_y"]], values[f["logo_size"]])
        return placement_preview(sketch, values[f["logo"]], mask)

    for key in ("logo", "mask_mode", "logo_x", "logo_y", "logo_size"):
        f[key].change(on_placement, preview_inputs, f["placement_preview"], queue=False, show_progress="hidden")

    random_button.click(lambda: -1, None, f["seed"], queue=False)
    reuse_button.click(lambda last: last if last is not None else gr.update(), last_seed, f["seed"], queue=False)

    form = {name: component for name, component in f.items() if name not in ("photo", "detector", "palette",
                                                                               "palette_colors", "placement_preview")}

    def on_generate(values, request: gr.Request):
        user_id = visitor_id(values.get(ctx.user_id), request)
        by_name = {name: values[component] for name, component in form.items()}
        try:
            params, notes = build_request(by_name, ctx.service.defaults("garment"))
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error))
        for note in notes:
            gr.Info(note)
        result = yield from stream_progress(ctx, "garment", params, request, status, progress_bar, preview,
                                            user_id)
        ctx.outputs.save(user_id, "design", result.images, result.params)
        seeds = [p["seed"] for p in result.params]
        yield {
            status: f"Done: {len(result.images)} image(s), seed {seeds[0]}"
                    + (f"–{seeds[-1]}" if len(seeds) > 1 else "") + f" · stages {' → '.join(result.extras.get('stages', []))}",
            progress_bar: 1.0,
            gallery: ctx.outputs.list(user_id, "design"),
            last_seed: seeds[0],
        }

    generate.click(
        on_generate, set(form.values()) | {ctx.user_id},
        [status, progress_bar, preview, gallery, last_seed], **GENERATE,
    )

    wire_stop(stop, status)
    wire_gallery(ctx, gallery, selected, details)

    def on_load(path):
        params = load_params(path.name if hasattr(path, "name") else path)
        updates = {}
        for key in ("prompt", "negative_prompt", "seed", "guidance_scale", "sketch_scale", "color_scale"):
            if key in params:
                updates[f[key]] = params[key]
        if "num_inference_steps" in params:
            updates[f["steps"]] = params["num_inference_steps"]
        gr.Info(f"Loaded {len(updates)} settings (images are not stored in the PNG).")
        return updates

    load_button.click(on_load, params_file, [f[k] for k in ("prompt", "negative_prompt", "seed", "guidance_scale",
                                                            "sketch_scale", "color_scale", "steps")], queue=False)

    wire_send(ctx, send_tryon, selected, "tryon_garment", "try-on")
    ctx.targets["design_photo"] = (f["photo"], "design")  # "Photo -> sketch" input: other tabs can send here

    # ---- API endpoint for scripts (gradio_client): plain values in, saved PNG paths out
    with gr.Group(visible=False):
        api_fields = {
            "prompt": gr.Textbox(), "negative_prompt": gr.Textbox(value=defaults.get("negative_prompt", DESIGN_NEGATIVE)),
            "sketch": gr.Image(type="pil"), "color": gr.Textbox(value=""), "logo": gr.Image(type="pil", image_mode="RGBA"),
            "logo_mask": gr.Image(type="pil", image_mode="L"), "steps": gr.Number(precision=0),
            "guidance_scale": gr.Number(), "sketch_scale": gr.Number(), "color_scale": gr.Number(),
            "seed": gr.Number(precision=0), "num_images": gr.Number(precision=0),
        }
        api_button = gr.Button()
        api_out = gr.Gallery()

    def api_design(prompt, negative_prompt, sketch, color, logo, logo_mask, steps, guidance_scale, sketch_scale,
                   color_scale, seed, num_images):
        defaults = ctx.service.defaults("garment")
        try:
            params = dict(
                prompt=prompt or "", negative_prompt=negative_prompt or "",
                sketch=load_image(sketch, "sketch") if sketch is not None else None,
                color=swatch_from_hex(color) if color else None,
                logo=load_image(logo, "logo", min_side=8) if logo is not None else None,
                logo_mask=logo_mask, height=int(defaults.get("height", 640)), width=int(defaults.get("width", 512)),
                num_inference_steps=int(steps or defaults.get("num_inference_steps", 50)),
                guidance_scale=float(defaults.get("guidance_scale", 7.0) if guidance_scale is None else guidance_scale),
                sketch_scale=float(defaults.get("sketch_scale", 0.6) if sketch_scale is None else sketch_scale),
                color_scale=float(defaults.get("color_scale", 1.0) if color_scale is None else color_scale),
                seed=seed_value(-1 if seed is None else seed), num_images=int(num_images or 1),
            )
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error))
        result = None
        try:
            for item in stream_task(ctx.service, "garment", params, threading.Event()):
                if not isinstance(item, Progress):
                    result = item
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001
            raise_user_error(error)
        return ctx.outputs.save(new_user_id(), "design", result.images, result.params)

    api_button.click(api_design, list(api_fields.values()), api_out, api_name="design", concurrency_id=GPU_QUEUE)

    def refresh_gallery(user_id):
        return ctx.outputs.list(user_id, "design")

    f["gallery"] = gallery
    f["status"] = status
    f["refresh_gallery"] = refresh_gallery
    return f
