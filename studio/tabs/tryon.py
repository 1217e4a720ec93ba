"""The try-on tab: dress a person photo in a garment photo (CatVTON), or in a fine-tuned garment model.

Components are mapped BY NAME (a dict field -> component; handlers receive a dict). The person photo sits
in an ImageEditor: strokes painted over it are the mask and always override the automatic one; SAM clicks
(when the preset has a SAM checkpoint) make a mask too. "Preview mask" shows the mask that Generate will
use. Never imports torch: the service runs the ``tryon`` / ``tryon_mask`` / ``tryon_sam`` tasks.
"""

from __future__ import annotations

import logging
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from pipelines.preprocess.images import load_image
from pipelines.types import CATVTON_LABELS, FIT_MODES, PASTE_MODES, TRYON_CATEGORIES
from studio.components import (
    GENERATE,
    GPU_QUEUE,
    StudioContext,
    editor_to_image_and_mask,
    form_inputs,
    raise_user_error,
    run_to_gallery,
    seed_value,
    stream_progress,
    visitor_id,
    wire_gallery,
    wire_send,
    wire_stop,
)
from training.api import list_trained_models

logger = logging.getLogger(__name__)

MODES = ["CatVTON", "Garment model"]
STANDARD_SIZES = ("1024x768", "512x384")
NATIVE_SIZE = "weights' own (1024x768 / 512x384)"
MASK_COLOR = "#ff3070"

# ------------------------------------------------------------------------------------------ pure logic
def photo_and_strokes(value: Any, name: str = "person") -> tuple[Image.Image | None, Image.Image | None]:
    """An ImageEditor value -> (the photo WITHOUT the strokes, the painted mask at the photo's size)."""
    if value is None:
        return None, None
    if not isinstance(value, dict):  # a plain image (sent from another tab)
        return load_image(value, name), None
    photo, _ = editor_to_image_and_mask({"background": value.get("background"), "layers": [], "composite": None}, name)
    if photo is None:
        return None, None
    _, mask = editor_to_image_and_mask(value, name)
    if mask is not None and mask.size != photo.size:
        mask = mask.resize(photo.size, Image.NEAREST)
    return photo, mask


def size_choices(defaults: dict[str, Any], native: bool = False) -> list[str]:
    """The canvas choices, the preset's default first; ``native`` adds (and, without a preset size, puts first)
    the weights' own canvas."""
    sizes = list(STANDARD_SIZES)
    if defaults.get("height") and defaults.get("width"):
        default = f"{int(defaults['height'])}x{int(defaults['width'])}"
        sizes = [default] + [size for size in sizes if size != default]
        return sizes + [NATIVE_SIZE] if native else sizes
    return [NATIVE_SIZE] + sizes if native else sizes


def parse_size(text: str) -> tuple[int | None, int | None]:
    """ "1024x768" -> (1024, 768); the weights' own canvas -> (None, None)."""
    if text == NATIVE_SIZE:
        return None, None
    try:
        height, width = (int(part) for part in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"Size {text!r} must look like 1024x768 (height x width).")
    return height, width


def person_mask(values: dict[str, Any], name: str = "person") -> tuple[Image.Image, Image.Image | None]:
    """The person photo and the mask that overrides the automatic one (painted strokes, else the SAM mask)."""
    person, painted = photo_and_strokes(values["person"], name)
    if person is None:
        raise ValueError("Upload a person photo first.")
    person = load_image(person, "person")
    sam_mask = values.get("sam_mask")
    if painted is None and sam_mask is not None and sam_mask.size == person.size:
        painted = sam_mask
    if painted is None and not values["auto_mask"]:
        raise ValueError("No mask: paint over the area to change, click with SAM, or turn on the automatic mask.")
    return person, painted


BATCH_PAIRINGS = ("every person x every garment", "in order (person i with garment i)")
MAX_BATCH_PAIRS = 24


def batch_pairs(people: list[str], garments: list[str], pairing: str) -> list[tuple[str, str]]:
    """The (person file, garment file) pairs of a batch; ValueError with a sentence when there are none or too
    many, or "in order" gets lists of different lengths."""
    if not people or not garments:
        raise ValueError("Batch: upload at least one person photo and one garment photo.")
    if pairing == BATCH_PAIRINGS[1]:
        if len(people) != len(garments):
            raise ValueError(f"Batch 'in order' needs as many garments as people ({len(people)} people, "
                             f"{len(garments)} garments).")
        pairs = list(zip(people, garments))
    else:
        pairs = [(person, garment) for person in people for garment in garments]
    if len(pairs) > MAX_BATCH_PAIRS:
        raise ValueError(f"Batch: {len(pairs)} pairs is more than {MAX_BATCH_PAIRS}; split it into smaller batches.")
    return pairs


def safe_stem(path: str) -> str:
    """An uploaded file's name, reduced to letters, digits, - and _ (for names inside the zip)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path).stem).strip("_")[:40] or "image"


def write_batch_zip(folder: Path, entries: list[tuple[str, str]]) -> Path:
    """(archive name, file) entries -> a new zip in ``folder`` (never overwriting an earlier one)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, index = folder / f"batch-{stamp}.zip", 1
    while path.exists():
        path, index = folder / f"batch-{stamp}-{index}.zip", index + 1
    with zipfile.ZipFile(path, "x", compression=zipfile.ZIP_STORED) as archive:
        for name, file in entries:
            archive.write(file, name)
    return path


def build_request(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Form values (by field name) -> ``tryon`` task parameters. Raises ValueError with a sentence."""
    person, painted = person_mask(values)
    height, width = parse_size(values["size"])
    params: dict[str, Any] = dict(
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
        paste_mode=values["paste_mode"],
        fit_mode=values["fit_mode"],
    )
    if values["mode"] == "Garment model":
        if not values.get("garment_model"):
            raise ValueError("Mode is 'Garment model' but none is chosen: train one in the Training tab or pick one.")
        params.update(garment_model=values["garment_model"], prompt=(values.get("prompt") or "").strip())
        if values.get("garment") is not None:
            params["garment"] = load_image(values["garment"], "garment")
    else:
        if values.get("garment") is None:
            raise ValueError("Upload a garment photo to try on.")
        params.update(garment=load_image(values["garment"], "garment"), variant=values["variant"])
    return params


def garment_model_choices(runs_root: str | Path | None) -> list[tuple[str, str]]:
    """(label, folder) of the garment models trained in this studio."""
    if not runs_root:
        return []
    # Finished runs only (a failed or half-written final/ folder is never offered), newest first.
    return [(f"{m.name} — “{m.prompt}”", str(m.path)) for m in list_trained_models(runs_root, kind="garment_model")]


# ----------------------------------------------------------------------------------------- shared UI
def person_editor(elem_id: str, label: str) -> gr.ImageEditor:
    return gr.ImageEditor(
        label=label, type="pil", image_mode="RGBA", height=480, layers=False, elem_id=elem_id,
        sources=("upload", "clipboard"),
        brush=gr.Brush(default_size=28, colors=[MASK_COLOR], default_color=MASK_COLOR, color_mode="fixed"),
        eraser=gr.Eraser(default_size=28),
    )


def wire_mask_tools(ctx: StudioContext, f: dict[str, Any], kind: str, prefix: str) -> None:
    """"Preview mask" and SAM clicks for a tab whose form has person/category/auto_mask/sam_* fields."""
    def on_preview(person_value, category, auto_mask, sam_mask):
        try:
            person, painted = person_mask({"person": person_value, "auto_mask": auto_mask, "sam_mask": sam_mask})
        except ValueError as error:  # "Upload a person photo first." etc.: a sentence for the designer
            raise gr.Error(str(error))
        try:
            result = ctx.service.run("tryon_mask", {"person": person, "mask": painted, "auto_mask": auto_mask,
                                                    "category": category, "kind": kind})
        except gr.Error:
            raise
        except Exception as error:  # noqa: BLE001
            raise_user_error(error)
        note = result.extras.get("note") or ""
        source = "painted" if result.extras["mask_source"] == "painted" else f"{result.extras['mask_source']}, {category}"
        return result.images[0], f"Mask from **{source}**" + (f" — {note}" if note else "")

    f["preview_mask_button"].click(
        on_preview, [f["person"], f["category"], f["auto_mask"], f["sam_mask"]], [f["mask_preview"], f["mask_info"]],
        concurrency_id=GPU_QUEUE,
    )
    if "sam_image" not in f:
        return

    def on_person_change(person_value):
        person, _ = photo_and_strokes(person_value)
        return person, [], None

    f["person"].upload(on_person_change, f["person"], [f["sam_image"], f["sam_points"], f["sam_mask"]], queue=False)

    def on_click(person_value, points, polarity, evt: gr.SelectData):
        person, _ = photo_and_strokes(person_value)
        if person is None:
            raise gr.Error("Upload a person photo first.")
        points = list(points or []) + [(float(evt.index[0]), float(evt.index[1]), polarity == "Add")]
        params = {"person": person, "points_pos": [(x, y) for x, y, add in points if add],
                  "points_neg": [(x, y) for x, y, add in points if not add]}
        try:
            result = ctx.service.run("tryon_sam", params)
        except Exception as error:  # noqa: BLE001
            raise_user_error(error)
        return result.images[0], points, result.extras["mask"], f"SAM mask from {len(points)} click(s)."

    f["sam_image"].select(on_click, [f["person"], f["sam_points"], f["sam_polarity"]],
                          [f["sam_image"], f["sam_points"], f["sam_mask"], f["mask_info"]], concurrency_id=GPU_QUEUE)

    def on_clear(person_value):
        person, _ = photo_and_strokes(person_value)
        return person, [], None, "SAM clicks cleared."

    f["sam_clear"].click(on_clear, f["person"], [f["sam_image"], f["sam_points"], f["sam_mask"], f["mask_info"]],
                         queue=False)


def mask_section(ctx: StudioContext, f: dict[str, Any], prefix: str) -> None:
    """Auto-mask toggle, Preview mask, and (with a SAM checkpoint in the preset) click-to-segment."""
    with gr.Row():
        f["auto_mask"] = gr.Checkbox(True, label="Automatic mask (painted strokes override it)", elem_id=f"{prefix}-auto-mask")
        f["preview_mask_button"] = gr.Button("Preview mask", elem_id=f"{prefix}-preview-mask")
    f["mask_info"] = gr.Markdown(elem_id=f"{prefix}-mask-info")
    f["mask_preview"] = gr.Image(label="Mask that Generate will use", interactive=False, height=240,
                                 elem_id=f"{prefix}-mask-preview")
    f["sam_mask"] = gr.State(None)
    if ctx.service.has_sam():  # users download SAM; no checkpoint, no clicks
        with gr.Accordion("Click to segment (SAM)", open=False):
            f["sam_polarity"] = gr.Radio(["Add", "Remove"], value="Add", label="Click adds or removes",
                                         elem_id=f"{prefix}-sam-polarity")
            f["sam_image"] = gr.Image(label="Click on the garment", type="pil", interactive=False, height=360,
                                      elem_id=f"{prefix}-sam-image")
            f["sam_points"] = gr.State([])
            f["sam_clear"] = gr.Button("Clear clicks", elem_id=f"{prefix}-sam-clear")


def sampler_section(f: dict[str, Any], defaults: dict[str, Any], prefix: str):
    with gr.Row():
        f["seed"] = gr.Number(value=int(defaults.get("seed", 42)), precision=0, label="Seed (-1 = random)",
                              elem_id=f"{prefix}-seed", minimum=-1)
        random_button = gr.Button("Random", scale=0, min_width=70, elem_id=f"{prefix}-seed-random")
        reuse_button = gr.Button("Reuse last", scale=0, min_width=90, elem_id=f"{prefix}-seed-reuse")
    with gr.Row():
        f["steps"] = gr.Slider(1, 100, value=int(defaults.get("num_inference_steps", 50)), step=1, label="Steps", elem_id=f"{prefix}-steps")
        f["guidance_scale"] = gr.Slider(0, 10, value=float(defaults.get("guidance_scale", 2.5)), step=0.1,
                                        label="Guidance", elem_id=f"{prefix}-guidance")
        f["num_images"] = gr.Slider(1, 8, value=1, step=1, label="Images", elem_id=f"{prefix}-num-images")
    return random_button, reuse_button


def output_section(prefix: str, label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with gr.Row():
        out["generate"] = gr.Button("Generate", variant="primary", elem_id=f"{prefix}-generate")
        out["stop"] = gr.Button("Stop", variant="stop", elem_id=f"{prefix}-stop")
    out["status"] = gr.Markdown("Ready.", elem_id=f"{prefix}-status")
    out["progress"] = gr.Slider(0, 1, value=0, label="Progress", interactive=False, elem_id=f"{prefix}-progress")
    out["preview"] = gr.Image(label="Live preview", interactive=False, height=160, elem_id=f"{prefix}-preview")
    out["gallery"] = gr.Gallery(label=label, columns=3, height=360, elem_id=f"{prefix}-gallery", interactive=False)
    out["selected"] = gr.State(None)
    out["details"] = gr.Markdown(elem_id=f"{prefix}-details")
    out["last_seed"] = gr.State(None)
    return out


def wire_stop_and_seed(out: dict[str, Any], random_button, reuse_button, seed) -> None:
    wire_stop(out["stop"], out["status"])
    random_button.click(lambda: -1, None, seed, queue=False)
    reuse_button.click(lambda last: last if last is not None else gr.update(), out["last_seed"], seed, queue=False)


# ----------------------------------------------------------------------------------------------- tab
def build_tryon_tab(ctx: StudioContext) -> dict[str, Any]:
    """Build the tab inside an open ``gr.Blocks``/``gr.Tab``; returns its components by name."""
    defaults = ctx.service.defaults("tryon")
    variants = [(CATVTON_LABELS[key], key) for key in ctx.service.tryon_variants()]
    runs_root = getattr(ctx.runs, "runs_root", None)
    f: dict[str, Any] = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row():
                f["person"] = person_editor("tryon-person", "Person photo — paint over the area to change (optional)")
                f["garment"] = gr.Image(label="Garment photo", type="pil", height=480, elem_id="tryon-garment")
            f["category"] = gr.Radio(list(TRYON_CATEGORIES), value="upper", label="Garment category", elem_id="tryon-category")
            mask_section(ctx, f, "tryon")
        with gr.Column(scale=2):
            f["mode"] = gr.Radio(MODES, value="CatVTON", label="Method", elem_id="tryon-mode")
            f["variant"] = gr.Dropdown(variants, value=variants[0][1] if variants else None, label="CatVTON weights",
                                       elem_id="tryon-variant")
            with gr.Group(visible=False) as garment_model_group:
                with gr.Row():
                    f["garment_model"] = gr.Dropdown(garment_model_choices(runs_root), value=None,
                                                     label="Garment model (trained in the Training tab)",
                                                     elem_id="tryon-garment-model", allow_custom_value=True)
                    refresh_models = gr.Button("↻", scale=0, min_width=40, elem_id="tryon-garment-model-refresh")
                f["prompt"] = gr.Textbox(label="Prompt (empty = the model's own)", elem_id="tryon-prompt")
            with gr.Row():
                sizes = size_choices(defaults, native=True)
                f["size"] = gr.Dropdown(sizes, value=sizes[0], label="Canvas (H x W)", elem_id="tryon-size")
                f["fit_mode"] = gr.Radio(list(FIT_MODES), value=defaults.get("fit_mode", "crop"), label="Fit photo",
                                    elem_id="tryon-fit")
                f["paste_mode"] = gr.Radio(list(PASTE_MODES), value="feathered", label="Paste back into the photo",
                                           info="feathered / hard: everything outside the mask is kept; none: the "
                                                "raw model canvas", elem_id="tryon-paste-mode")
            random_button, reuse_button = sampler_section(f, defaults, "tryon")
            out = output_section("tryon", "Your try-ons")
            with gr.Accordion("Batch: several people x several garments", open=False):
                with gr.Row():
                    batch_people = gr.File(file_count="multiple", file_types=["image"], label="Person photos",
                                           elem_id="tryon-batch-people")
                    batch_garments = gr.File(file_count="multiple", file_types=["image"], label="Garment photos",
                                             elem_id="tryon-batch-garments")
                batch_pairing = gr.Radio(list(BATCH_PAIRINGS), value=BATCH_PAIRINGS[0], label="Pairs",
                                         elem_id="tryon-batch-pairing")
                batch_button = gr.Button("Run batch (automatic masks, the settings above)", elem_id="tryon-batch-run")
                batch_zip = gr.File(label="All results of the batch (zip)", interactive=False,
                                    elem_id="tryon-batch-zip")
            with gr.Row():
                send_tryoff = gr.Button("Send selected to try-off", elem_id="tryon-send-tryoff")
                use_as_person = gr.Button("Use selected as the person (layer another garment)", elem_id="tryon-reuse")
    ctx.targets["tryon_person"] = (f["person"], "tryon")
    ctx.targets["tryon_garment"] = (f["garment"], "tryon")
    ctx.targets["tryon_garment_model"] = (f["garment_model"], "tryon")

    f["mode"].change(lambda mode: (gr.update(visible=mode == "Garment model"), gr.update(visible=mode == "CatVTON")),
                     f["mode"], [garment_model_group, f["variant"]], queue=False)
    refresh_models.click(lambda: gr.update(choices=garment_model_choices(runs_root)), None, f["garment_model"], queue=False)
    f["garment_model"].change(lambda path: "Garment model" if path else gr.update(), f["garment_model"], f["mode"], queue=False)
    wire_mask_tools(ctx, f, "tryon", "tryon")
    wire_stop_and_seed(out, random_button, reuse_button, f["seed"])

    form = {name: component for name, component in f.items()
            if name not in ("preview_mask_button", "mask_info", "mask_preview", "sam_image", "sam_points",
                            "sam_polarity", "sam_clear")}

    def on_generate(values, request: gr.Request):
        user_id = visitor_id(values.get(ctx.user_id), request)
        by_name = {name: values[component] for name, component in form.items()}
        try:
            params = build_request(by_name, ctx.service.defaults("tryon"))
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error))
        yield from run_to_gallery(ctx, "tryon", params, request, user_id, out, "tryon")

    out["generate"].click(
        on_generate, form_inputs(ctx, form),
        [out[k] for k in ("status", "progress", "preview", "gallery", "last_seed")], **GENERATE,
    )

    def on_batch(values, request: gr.Request):
        user_id = visitor_id(values.get(ctx.user_id), request)
        by_name = {name: values[component] for name, component in form.items()}
        people, garments = values[batch_people] or [], values[batch_garments] or []
        try:
            pairs = batch_pairs([str(p) for p in people], [str(g) for g in garments], values[batch_pairing])
            jobs = []
            for person_file, garment_file in pairs:
                person = load_image(person_file, "person")
                job = dict(by_name, person={"background": person, "layers": [], "composite": None},
                           garment=garment_file, sam_mask=None, auto_mask=True, mode="CatVTON")
                jobs.append((person_file, garment_file, build_request(job, ctx.service.defaults("tryon"))))
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error))
        entries = []
        for index, (person_file, garment_file, params) in enumerate(jobs, 1):
            yield {out["status"]: f"Batch: pair {index}/{len(jobs)}", out["progress"]: (index - 1) / len(jobs)}
            result = yield from stream_progress(ctx, "tryon", params, request, out["status"], out["progress"],
                                                out["preview"], user_id)
            saved = ctx.outputs.save(user_id, "tryon", result.images, result.params)
            stem = f"{index:02d}_{safe_stem(person_file)}__{safe_stem(garment_file)}"
            entries += [(f"{stem}_{p['seed']}.png", path) for p, path in zip(result.params, saved)]
        archive = write_batch_zip(ctx.outputs.user_dir(user_id) / "tryon-batch", entries)
        yield {out["status"]: f"Batch done: {len(jobs)} pair(s), {len(entries)} image(s) in {archive.name}",
               out["progress"]: 1.0, out["gallery"]: ctx.outputs.list(user_id, "tryon"), batch_zip: str(archive)}

    batch_button.click(
        on_batch, form_inputs(ctx, form) | {batch_people, batch_garments, batch_pairing},
        [out[k] for k in ("status", "progress", "preview", "gallery")] + [batch_zip], **GENERATE,
    )
    wire_gallery(ctx, out["gallery"], out["selected"], out["details"])
    wire_send(ctx, send_tryoff, out["selected"], "tryoff_person", "try-off")

    def on_reuse(path):
        if not path:
            raise gr.Error("Select an image in the gallery first.")
        return path

    use_as_person.click(on_reuse, out["selected"], f["person"], queue=False)

    def refresh_gallery(user_id):
        return ctx.outputs.list(user_id, "tryon")

    f.update(gallery=out["gallery"], status=out["status"], refresh_gallery=refresh_gallery)
    return f
