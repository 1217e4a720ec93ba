"""The pose design tab (the EquiFashion method): a draft from words + a pose, then attribute edits, in one place.

Left: the draft — a design concept, a category, a pose (a preset or a photo of a person), the weights, and their
app's advanced options; "Draft" runs the ``pose_design`` task. Right: attribute editing on ANY image (a draft sent
over with "Send to attribute editing", or an upload) — the five attribute buttons (A1 length ... A5 hem) run the
``attribute_edit`` task inside the automatic region (from the draft's pose, or the pose detected in the image) or
a painted one; "Preview region" shows the automatic region first. Results go on to try-on and dressing.
Never imports torch.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import gradio as gr
from PIL import Image

from pipelines.types import (
    ATTRIBUTES,
    POSE_DESIGN_ADDED_PROMPT,
    POSE_DESIGN_CATEGORIES,
    POSE_DESIGN_NEGATIVE,
    POSE_DESIGN_WEIGHTS,
)
from studio.components import (
    GENERATE,
    GPU_QUEUE,
    StudioContext,
    form_inputs,
    load_params,
    raise_user_error,
    seed_value,
    stream_progress,
    visitor_id,
    wire_gallery,
    wire_send,
    wire_stop,
)
from studio.tabs.dressing import pose_presets
from studio.tabs.tryon import person_editor, photo_and_strokes

logger = logging.getLogger(__name__)

POSE_SOURCES = ["Preset", "Photo"]
REGION_SOURCES = ["Automatic", "Painted"]
DRAFTS, EDITS = "posedesign", "posedesign_edit"  # output folders (one gallery each)


# ------------------------------------------------------------------------------------------ pure logic
def sampler_params(values: dict[str, Any]) -> dict[str, Any]:
    """The options drafts and edits share (form values by field name)."""
    return dict(
        prompt=(values["prompt"] or "").strip(), category=values["category"], weights=values["weights"],
        added_prompt=values["added_prompt"] or "", negative_prompt=values["negative_prompt"] or "",
        resolution=int(values["resolution"]), control_strength=float(values["control_strength"]),
        num_inference_steps=int(values["steps"]), guidance_scale=float(values["guidance_scale"]),
        eta=float(values["eta"]), seed=seed_value(values["seed"]), num_images=int(values["num_images"]),
    )


def draft_request(values: dict[str, Any]) -> dict[str, Any]:
    """Form values -> ``pose_design`` task parameters. Raises ValueError with a sentence."""
    params = sampler_params(values)
    if not params["prompt"]:
        raise ValueError("Describe the design first (e.g. 'a red silk evening dress with a flared skirt').")
    if values["pose_source"] == "Preset":
        if not values["pose_preset"]:
            raise ValueError("Pick a pose preset, or choose 'Photo' and upload a photo of a person.")
        params["pose_preset"] = values["pose_preset"]
    else:
        if values["pose_photo"] is None:
            raise ValueError("Upload a photo of a person to take the pose from, or choose a preset.")
        params["pose_photo"] = values["pose_photo"]
    params.update(guess_mode=bool(values["guess_mode"]), white_background=bool(values["white_background"]))
    return params


def edit_request(values: dict[str, Any], attribute: str) -> dict[str, Any]:
    """Form values + the pressed attribute -> ``attribute_edit`` task parameters. Raises ValueError."""
    image, painted = photo_and_strokes(values["edit_image"], "image to edit")
    if image is None:
        raise ValueError("Put an image to edit first: send a draft over, or upload any image.")
    params = sampler_params(values)
    params["prompt"] = (values["edit_prompt"] or "").strip()
    params["num_inference_steps"] = int(values["edit_steps"])
    if not params["prompt"]:
        raise ValueError(f"Say what the {ATTRIBUTES[attribute][0].split(' ', 1)[1]} should become "
                         "(e.g. 'long puffed sleeves').")
    params.update(image=image, attribute=attribute, paste_mode=values["paste_mode"],
                  strength=float(values["edit_strength"]) or None)
    if values["region_source"] == "Painted":
        if painted is None:
            raise ValueError("Region is 'Painted' but nothing is painted: paint over the part to change.")
        params["mask"] = painted
    elif (keypoints := remembered_keypoints(values["keypoints"], image)) is not None:
        params["keypoints"] = keypoints
    return params


def fingerprint(image: Image.Image) -> str:
    """A short digest of an image's pixels (to tell whether the editor still shows the image a pose came with)."""
    return hashlib.sha1(image.convert("RGB").resize((16, 16), Image.BILINEAR).tobytes()).hexdigest()


def pose_memory(path: str | None) -> dict | None:
    """The pose keypoints a draft stored in its PNG parameters, tied to that image's pixels (None otherwise)."""
    try:
        keypoints = load_params(path).get("keypoints")
    except gr.Error:
        return None
    if not keypoints:
        return None
    with Image.open(path) as image:
        return {"keypoints": keypoints, "image": fingerprint(image)}


def remembered_keypoints(memory: dict | None, image: Image.Image) -> list | None:
    """The remembered pose when the editor still shows its image; None for any other image (detected then)."""
    if memory and memory.get("image") == fingerprint(image):
        return memory["keypoints"]
    return None


# ----------------------------------------------------------------------------------------------- tab
def build_posedesign_tab(ctx: StudioContext) -> dict[str, Any]:
    defaults = ctx.service.defaults("pose_design")
    edit_defaults = ctx.service.defaults("attribute_edit")
    f: dict[str, Any] = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            gr.Markdown("**Draft** — a design from words and a pose.")
            f["prompt"] = gr.Textbox(label="Design concept", lines=2, elem_id="posedesign-prompt",
                                     placeholder="a red silk evening dress with a flared skirt")
            f["category"] = gr.Radio(list(POSE_DESIGN_CATEGORIES), value="Dress", label="Category",
                                     elem_id="posedesign-category")
            f["pose_source"] = gr.Radio(POSE_SOURCES, value="Preset", label="Pose from", elem_id="posedesign-pose-source")
            with gr.Row():
                presets = pose_presets()
                f["pose_preset"] = gr.Dropdown(presets, value=presets[0] if presets else None, label="Pose preset",
                                               elem_id="posedesign-pose-preset")
                f["pose_photo"] = gr.Image(label="Photo of a person (its pose is used)", type="pil", height=200,
                                           elem_id="posedesign-pose-photo")
            f["weights"] = gr.Dropdown([(label, key) for key, label in POSE_DESIGN_WEIGHTS.items()],
                                       value="equifashion", label="Weights", elem_id="posedesign-weights")
            with gr.Accordion("Advanced", open=False):
                with gr.Row():
                    f["resolution"] = gr.Slider(64, 1024, value=int(defaults.get("resolution", 512)), step=64,
                                                label="Resolution (short side)", elem_id="posedesign-resolution")
                    f["control_strength"] = gr.Slider(0, 2, value=float(defaults.get("control_strength", 1.0)),
                                                      step=0.05, label="Control strength",
                                                      elem_id="posedesign-control-strength")
                with gr.Row():
                    f["steps"] = gr.Slider(1, 150, value=int(defaults.get("num_inference_steps", 100)), step=1,
                                           label="DDIM steps", elem_id="posedesign-steps")
                    f["guidance_scale"] = gr.Slider(0.1, 30, value=float(defaults.get("guidance_scale", 9.0)),
                                                    step=0.1, label="Guidance", elem_id="posedesign-guidance")
                with gr.Row():
                    f["eta"] = gr.Slider(0, 1, value=float(defaults.get("eta", 0.0)), step=0.05, label="DDIM eta",
                                         elem_id="posedesign-eta")
                    f["seed"] = gr.Number(value=int(defaults.get("seed", 42)), precision=0, minimum=-1,
                                          label="Seed (-1 = random)", elem_id="posedesign-seed")
                    f["num_images"] = gr.Slider(1, 8, value=1, step=1, label="Images", elem_id="posedesign-num-images")
                with gr.Row():
                    f["guess_mode"] = gr.Checkbox(value=False, label="Guess mode", elem_id="posedesign-guess-mode")
                    f["white_background"] = gr.Checkbox(value=True, label="Background to white",
                                                        elem_id="posedesign-white-background")
                f["added_prompt"] = gr.Textbox(label="Added prompt", value=POSE_DESIGN_ADDED_PROMPT,
                                               elem_id="posedesign-added-prompt")
                f["negative_prompt"] = gr.Textbox(label="Negative prompt", value=POSE_DESIGN_NEGATIVE, lines=2,
                                                  elem_id="posedesign-negative")
            with gr.Row():
                draft = gr.Button("Draft", variant="primary", elem_id="posedesign-draft")
                stop = gr.Button("Stop", variant="stop", elem_id="posedesign-stop")
            status = gr.Markdown("Ready.", elem_id="posedesign-status")
            progress_bar = gr.Slider(0, 1, value=0, label="Progress", interactive=False, elem_id="posedesign-progress")
            preview = gr.Image(label="Live preview", interactive=False, height=140, elem_id="posedesign-preview")
            skeleton = gr.Image(label="Pose used", interactive=False, height=160, elem_id="posedesign-skeleton")
            gallery = gr.Gallery(label="Drafts", columns=3, height=260, elem_id="posedesign-gallery", interactive=False)
            selected = gr.State(None)
            details = gr.Markdown(elem_id="posedesign-details")
            send_edit = gr.Button("Send to attribute editing", elem_id="posedesign-send-edit")
        with gr.Column(scale=1):
            gr.Markdown("**Attribute editing** — any image; the rest of it is kept.")
            f["edit_image"] = person_editor("posedesign-edit-image", "Image to edit — paint the region (optional)")
            f["keypoints"] = gr.State(None)  # {"keypoints", "image"}: a draft's pose and the pixels it belongs to
            f["edit_prompt"] = gr.Textbox(label="The attribute as words", elem_id="posedesign-edit-prompt",
                                          placeholder="long puffed sleeves")
            with gr.Row():
                f["region_source"] = gr.Radio(REGION_SOURCES, value="Automatic", label="Region",
                                              elem_id="posedesign-region-source")
                f["paste_mode"] = gr.Radio(["feathered", "hard", "none"], value="feathered", label="Paste back",
                                           elem_id="posedesign-paste-mode")
            with gr.Row():
                f["edit_strength"] = gr.Slider(0, 1, value=0, step=0.05, label="Re-noise strength (0 = the attribute's own)",
                                               elem_id="posedesign-edit-strength")
                f["edit_steps"] = gr.Slider(1, 150, value=int(edit_defaults.get("num_inference_steps", 100)), step=1,
                                            label="DDIM steps (edit)", elem_id="posedesign-edit-steps")
            buttons = {}
            with gr.Row():
                for attribute, (label, _) in ATTRIBUTES.items():
                    buttons[attribute] = gr.Button(label, elem_id=f"posedesign-attr-{attribute}", size="sm")
            with gr.Row():
                preview_attribute = gr.Dropdown([(label, key) for key, (label, _) in ATTRIBUTES.items()],
                                                value="length", label="Region of", elem_id="posedesign-region-attribute")
                preview_region = gr.Button("Preview region", elem_id="posedesign-preview-region")
            region = gr.Image(label="Automatic region", interactive=False, height=200, elem_id="posedesign-region")
            edit_status = gr.Markdown("", elem_id="posedesign-edit-status")
            edit_progress = gr.Slider(0, 1, value=0, label="Progress", interactive=False,
                                      elem_id="posedesign-edit-progress")
            edit_stop = gr.Button("Stop", variant="stop", elem_id="posedesign-edit-stop", size="sm")
            edit_preview = gr.Image(label="Live preview", interactive=False, height=140, elem_id="posedesign-edit-preview")
            edits = gr.Gallery(label="Edits", columns=3, height=260, elem_id="posedesign-edit-gallery", interactive=False)
            edit_selected = gr.State(None)
            edit_details = gr.Markdown(elem_id="posedesign-edit-details")
            with gr.Row():
                edit_again = gr.Button("Edit this one further", elem_id="posedesign-edit-again")
                send_tryon = gr.Button("Send to try-on (garment)", elem_id="posedesign-send-tryon")
                send_dressing = gr.Button("Send to dressing (garment)", elem_id="posedesign-send-dressing")
    ctx.targets["posedesign_edit"] = (f["edit_image"], "posedesign")
    draft_form = {name: f[name] for name in ("prompt", "category", "pose_source", "pose_preset", "pose_photo",
                                             "weights", "resolution", "control_strength", "steps", "guidance_scale",
                                             "eta", "seed", "num_images", "guess_mode", "white_background",
                                             "added_prompt", "negative_prompt")}
    edit_form = {**{k: v for k, v in draft_form.items() if k not in ("pose_source", "pose_preset", "pose_photo",
                                                                    "guess_mode", "white_background")},
                 **{name: f[name] for name in ("edit_image", "keypoints", "edit_prompt", "region_source",
                                               "paste_mode", "edit_strength", "edit_steps")}}

    # ---- draft
    def on_draft(values, request: gr.Request):
        user_id = visitor_id(values.get(ctx.user_id), request)
        try:
            params = draft_request({name: values[c] for name, c in draft_form.items()})
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error))
        result = yield from stream_progress(ctx, "pose_design", params, request, status, progress_bar, preview, user_id)
        ctx.outputs.save(user_id, DRAFTS, result.images, result.params)
        yield {status: f"Done: {len(result.images)} draft(s), pose from {result.extras.get('pose_source')}, "
                       f"seed {result.params[0]['seed']}.",
               progress_bar: 1.0, skeleton: result.extras.get("pose_image"), gallery: ctx.outputs.list(user_id, DRAFTS)}

    draft.click(on_draft, form_inputs(ctx, draft_form), [status, progress_bar, preview, skeleton, gallery],
                **GENERATE)
    f["pose_preset"].change(lambda name: "Preset" if name else gr.update(), f["pose_preset"], f["pose_source"], queue=False)
    f["pose_photo"].upload(lambda photo: "Photo", f["pose_photo"], f["pose_source"], queue=False)
    wire_stop(stop, status)
    wire_gallery(ctx, gallery, selected, details)

    # ---- send a draft (or an edit) to attribute editing, with its pose
    def on_send_edit(path):
        if not path:
            raise gr.Error("Select an image in the gallery first.")
        memory = pose_memory(path)
        note = "its pose came along (automatic regions)" if memory else "no stored pose: it will be detected"
        return path, memory, f"Ready to edit; {note}."

    send_edit.click(on_send_edit, selected, [f["edit_image"], f["keypoints"], edit_status], queue=False)
    edit_again.click(on_send_edit, edit_selected, [f["edit_image"], f["keypoints"], edit_status], queue=False)

    # ---- region preview
    def on_preview_region(editor_value, memory, category, attribute):
        image, _ = photo_and_strokes(editor_value, "image to edit")
        if image is None:
            raise gr.Error("Put an image to edit first.")
        keypoints = remembered_keypoints(memory, image)
        try:
            result = ctx.service.run("attribute_region", {"image": image, "keypoints": keypoints,
                                                          "category": category, "attribute": attribute})
        except Exception as error:  # noqa: BLE001 - a sentence for the designer
            raise_user_error(error)
        tinted = Image.blend(image.convert("RGB"), Image.new("RGB", image.size, (255, 48, 112)), 0.55)
        shown = Image.composite(tinted, image.convert("RGB"), result.images[0])
        return shown, f"Region of **{ATTRIBUTES[attribute][0]}** from {result.extras['source']}."

    preview_region.click(on_preview_region, [f["edit_image"], f["keypoints"], f["category"], preview_attribute],
                         [region, edit_status], concurrency_id=GPU_QUEUE)

    # ---- the five attribute buttons
    def editor_for(attribute):
        def on_edit(values, request: gr.Request):
            user_id = visitor_id(values.get(ctx.user_id), request)
            try:
                params = edit_request({name: values[c] for name, c in edit_form.items()}, attribute)
            except (ValueError, TypeError) as error:
                raise gr.Error(str(error))
            result = yield from stream_progress(ctx, "attribute_edit", params, request, edit_status, edit_progress,
                                                edit_preview, user_id)
            ctx.outputs.save(user_id, EDITS, result.images, result.params)
            first = result.params[0]
            yield {edit_status: f"Done: {ATTRIBUTES[attribute][0]}, re-noised from step {first['start_index'] + 1} "
                                f"(t={first['start_timestep']}), seed {first['seed']}.",
                   edit_progress: 1.0, edits: ctx.outputs.list(user_id, EDITS)}

        return on_edit

    for attribute, button in buttons.items():
        button.click(editor_for(attribute), form_inputs(ctx, edit_form),
                     [edit_status, edit_progress, edit_preview, edits], **GENERATE)
    wire_stop(edit_stop, edit_status)
    wire_gallery(ctx, edits, edit_selected, edit_details)
    wire_send(ctx, send_tryon, edit_selected, "tryon_garment", "try-on")
    wire_send(ctx, send_dressing, edit_selected, "dressing_garment", "dressing")

    def refresh_gallery(user_id):
        return ctx.outputs.list(user_id, DRAFTS)

    f.update(gallery=gallery, edits=edits, status=status, edit_status=edit_status, refresh_gallery=refresh_gallery,
             buttons=buttons)
    return f
