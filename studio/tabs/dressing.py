"""The dressing tab: dress a generated person in 1..4 garments (AnyDressing architecture, IMAGDressing weights).

Components are mapped BY NAME (a dict field -> component; handlers receive a dict). Garment slots are a
fixed set of MAX_GARMENTS rows shown/hidden by "Add garment" / "Remove last". The pose comes from a
preset or a photo (via the service's ``dressing_pose`` task) and is previewed as a skeleton before
generating. Never imports torch: the service runs the ``dressing`` task with plain values.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from pipelines.preprocess.images import load_image
from pipelines.types import DRESSING_NEGATIVE, DRESSING_PROMPT, GARMENT_CATEGORIES, MAX_GARMENTS
from studio.components import (
    GENERATE,
    GPU_QUEUE,
    StudioContext,
    raise_user_error,
    seed_value,
    stream_progress,
    visitor_id,
    wire_gallery,
    wire_send,
    wire_stop,
)

logger = logging.getLogger(__name__)

SLOT_DEFAULTS = ("upper", "lower", "hat", "shoes")
POSE_SOURCES = ["None", "Preset", "Photo"]
POSE_DIR = Path(__file__).resolve().parents[2] / "presets" / "poses"

def pose_presets() -> list[str]:
    return sorted(path.stem for path in POSE_DIR.glob("*.json"))


# ------------------------------------------------------------------------------------------ pure logic
def build_request(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Form values (by field name) -> ``dressing`` task parameters. Raises ValueError with a sentence."""
    count = int(values["slot_count"])
    garments = []
    for index in range(count):
        image = values[f"garment_{index}"]
        if image is None:
            continue
        garments.append({"image": load_image(image, f"garment {index + 1}"), "category": values[f"category_{index}"]})
    if not garments:
        raise ValueError("Add at least one garment image to a slot.")
    pose = None
    if values["pose_source"] != "None":
        pose = values["skeleton"]
        if pose is None:
            hint = "pick a pose preset" if values["pose_source"] == "Preset" else "upload a photo and press 'Detect pose'"
            raise ValueError(f"Pose source is '{values['pose_source']}' but there is no skeleton yet: {hint}.")
        pose = load_image(pose, "pose skeleton")
    loras = []
    if values.get("lora_file"):
        path = values["lora_file"]
        path = getattr(path, "name", path)
        if not str(path).endswith(".safetensors"):
            raise ValueError("LoRA files must be .safetensors.")
        loras.append((str(path), float(values["lora_weight"])))
    return dict(
        garments=garments,
        prompt=(values["prompt"] or "").strip(),
        negative_prompt=values["negative_prompt"] or "",
        pose_image=pose,
        pose_scale=float(values["pose_scale"]),
        height=int(defaults.get("height", 640)),
        width=int(defaults.get("width", 512)),
        num_inference_steps=int(values["steps"]),
        guidance_scale=float(values["guidance_scale"]),
        garment_guidance_scale=float(values["garment_guidance_scale"]),
        garment_scale=float(values["garment_scale"]),
        seed=seed_value(values["seed"]),
        num_images=int(values["num_images"]),
        loras=loras,
    )


def slot_updates(count: int) -> list[Any]:
    """Visibility of the MAX_GARMENTS slot rows for ``count`` shown slots."""
    return [gr.update(visible=index < count) for index in range(MAX_GARMENTS)]


# ----------------------------------------------------------------------------------------------- tab
def build_dressing_tab(ctx: StudioContext) -> dict[str, Any]:
    """Build the tab inside an open ``gr.Blocks``/``gr.Tab``; returns its components by name."""
    defaults = ctx.service.defaults("dressing")
    f: dict[str, Any] = {}
    rows = []
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gr.Markdown(f"**Garments** — up to {MAX_GARMENTS}, any size; transparent backgrounds are fine.")
            f["slot_count"] = gr.State(1)
            for index in range(MAX_GARMENTS):
                with gr.Row(visible=index == 0, elem_id=f"dressing-slot-{index}") as row:
                    f[f"garment_{index}"] = gr.Image(
                        label=f"Garment {index + 1}", type="pil", image_mode="RGBA", height=180,
                        elem_id=f"dressing-garment-{index}",
                    )
                    f[f"category_{index}"] = gr.Dropdown(
                        list(GARMENT_CATEGORIES), value=SLOT_DEFAULTS[index % len(SLOT_DEFAULTS)],
                        label="Category", elem_id=f"dressing-category-{index}", scale=0, min_width=140,
                    )
                rows.append(row)
            with gr.Row():
                add_slot = gr.Button("Add garment", elem_id="dressing-add-slot")
                remove_slot = gr.Button("Remove last", elem_id="dressing-remove-slot")
            with gr.Accordion("Pose", open=False):
                f["pose_source"] = gr.Radio(POSE_SOURCES, value="None", label="Pose from", elem_id="dressing-pose-source")
                with gr.Row():
                    f["pose_preset"] = gr.Dropdown(pose_presets(), value=None, label="Pose preset", elem_id="dressing-pose-preset")
                    f["pose_photo"] = gr.Image(label="Photo of a person", type="pil", height=180, elem_id="dressing-pose-photo")
                detect = gr.Button("Detect pose", elem_id="dressing-detect-pose")
                f["skeleton"] = gr.Image(label="Skeleton (used for generation)", type="pil", height=240,
                                         elem_id="dressing-skeleton")
                f["pose_scale"] = gr.Slider(0, 2, value=1.0, step=0.05, label="Pose strength", elem_id="dressing-pose-scale")
            with gr.Accordion("Style LoRA", open=False):
                f["lora_file"] = gr.File(label="Community LoRA (.safetensors)", file_types=[".safetensors"],
                                         type="filepath", elem_id="dressing-lora-file")
                f["lora_weight"] = gr.Slider(-1, 2, value=0.8, step=0.05, label="LoRA weight", elem_id="dressing-lora-weight")
        with gr.Column(scale=2):
            f["prompt"] = gr.Textbox(label="Prompt", value=DRESSING_PROMPT, lines=2, elem_id="dressing-prompt")
            f["negative_prompt"] = gr.Textbox(label="Negative prompt", value=DRESSING_NEGATIVE, lines=2,
                                              elem_id="dressing-negative")
            with gr.Row():
                f["garment_scale"] = gr.Slider(0, 1.5, value=float(defaults.get("garment_scale", 0.85)), step=0.05,
                                               label="Garment strength (λ)", elem_id="dressing-garment-scale")
                f["steps"] = gr.Slider(1, 100, value=int(defaults.get("num_inference_steps", 30)), step=1, label="Steps",
                                       elem_id="dressing-steps")
            with gr.Row():
                f["guidance_scale"] = gr.Slider(0, 15, value=float(defaults.get("guidance_scale", 6.5)), step=0.5,
                                                label="Text guidance", elem_id="dressing-guidance")
                f["garment_guidance_scale"] = gr.Slider(
                    0, 15, value=float(defaults.get("garment_guidance_scale") or defaults.get("guidance_scale", 6.5)),
                    step=0.5, label="Garment guidance", elem_id="dressing-garment-guidance",
                )
            with gr.Row():
                f["seed"] = gr.Number(value=int(defaults.get("seed", 42)), precision=0, label="Seed (-1 = random)",
                                      elem_id="dressing-seed", minimum=-1)
                f["num_images"] = gr.Slider(1, 8, value=1, step=1, label="Images", elem_id="dressing-num-images")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="dressing-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="dressing-stop")
            status = gr.Markdown("Ready.", elem_id="dressing-status")
            progress_bar = gr.Slider(0, 1, value=0, label="Progress", interactive=False, elem_id="dressing-progress")
            preview = gr.Image(label="Live preview", interactive=False, height=160, elem_id="dressing-preview")
            gallery = gr.Gallery(label="Dressed", columns=3, height=320, elem_id="dressing-gallery", interactive=False)
            selected = gr.State(None)
            details = gr.Markdown(elem_id="dressing-details")
            send_tryon = gr.Button("Send selected to try-on", elem_id="dressing-send-tryon")

    # ---- garment slots
    def on_add(count):
        count = min(int(count) + 1, MAX_GARMENTS)
        if count == MAX_GARMENTS:
            gr.Info(f"{MAX_GARMENTS} garments is the most that can be dressed at once.")
        return [count, *slot_updates(count)]

    def on_remove(count):
        count = max(int(count) - 1, 1)
        return [count, *slot_updates(count)]

    add_slot.click(on_add, f["slot_count"], [f["slot_count"], *rows], queue=False)
    remove_slot.click(on_remove, f["slot_count"], [f["slot_count"], *rows], queue=False)
    ctx.targets["dressing_garment"] = (f["garment_0"], "dressing")

    # ---- pose: preset or photo -> skeleton preview (through the service, on the GPU queue)
    def skeleton(params):
        defaults_now = ctx.service.defaults("dressing")
        params = dict(params, width=int(defaults_now.get("width", 512)), height=int(defaults_now.get("height", 640)))
        try:
            result = ctx.service.run("dressing_pose", params)
        except Exception as error:  # noqa: BLE001 - turned into a designer-readable message
            raise_user_error(error)
        gr.Info(f"Pose from {result.extras.get('source', 'pose')}.")
        return result.images[0]

    def on_preset(name):
        if not name:
            return gr.update(), gr.update()
        return skeleton({"preset": name}), "Preset"

    def on_detect(photo):
        if photo is None:
            raise gr.Error("Upload a photo of a person first.")
        return skeleton({"photo": load_image(photo, "pose photo")}), "Photo"

    f["pose_preset"].change(on_preset, f["pose_preset"], [f["skeleton"], f["pose_source"]], concurrency_id=GPU_QUEUE)
    detect.click(on_detect, f["pose_photo"], [f["skeleton"], f["pose_source"]], concurrency_id=GPU_QUEUE)

    # ---- generate
    form = {name: component for name, component in f.items() if name not in ("pose_preset", "pose_photo")}

    def on_generate(values, request: gr.Request):
        user_id = visitor_id(values.get(ctx.user_id), request)
        by_name = {name: values[component] for name, component in form.items()}
        try:
            params = build_request(by_name, ctx.service.defaults("dressing"))
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error))
        result = yield from stream_progress(ctx, "dressing", params, request, status, progress_bar, preview,
                                            user_id)
        ctx.outputs.save(user_id, "dressing", result.images, result.params)
        seeds = [p["seed"] for p in result.params]
        yield {
            status: f"Done: {len(result.images)} image(s) with {len(params['garments'])} garment(s), seed {seeds[0]}"
                    + (f"–{seeds[-1]}" if len(seeds) > 1 else ""),
            progress_bar: 1.0,
            gallery: ctx.outputs.list(user_id, "dressing"),
        }

    inputs = set(form.values()) | ({ctx.user_id} if ctx.user_id is not None else set())
    generate.click(on_generate, inputs, [status, progress_bar, preview, gallery], **GENERATE)

    wire_stop(stop, status)
    wire_gallery(ctx, gallery, selected, details)

    wire_send(ctx, send_tryon, selected, "tryon_person", "try-on")

    def refresh_gallery(user_id):
        return ctx.outputs.list(user_id, "dressing")

    f["gallery"] = gallery
    f["status"] = status
    f["refresh_gallery"] = refresh_gallery
    return f
