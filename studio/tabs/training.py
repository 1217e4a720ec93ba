"""The training tab: datasets, recipes, and the runs of the background trainers.

Nothing here trains: the tab submits runs to the RunManager (``ctx.runs``), which starts detached trainer
processes; every view (status, log, loss, samples, history) is re-read from the job store and the run
folders by a ``gr.Timer``, so runs survive closing the browser and restarting the app. A small app-owned
thread (not a handler) polls the manager so queued runs start and finished trainers are reaped even
with no page open.

Form components are mapped BY NAME to config fields; only fields the chosen method's config class has are
sent, on top of the recipe YAML (presets/training/*.yaml) shown under "Advanced".
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import yaml

from pipelines.types import UserError
from studio.components import StudioContext
from training.api import (
    DATASETS_DIR,
    METHODS,
    UPLOAD_SUFFIXES,
    ConfigError,
    DatasetError,
    build_config,
    caption_rows,
    default_recipe,
    import_dataset,
    list_trained_models,
    load_recipe,
    method_fields,
    recipe_names,
    register_in_studio,
    save_captions,
    start_poller,
    studio_checkpoints,
    uses_image_folder_layout,
)

logger = logging.getLogger(__name__)

# The tab "Use in studio" opens for each kind of trained model (the kinds of training/*.py model cards).
USE_TAB = {
    "garment_model": "tryon", "garment_color": "design", "garment_gam": "design", "garment_lem": "design",
    "tryon_weights": "tryon", "tryoff_weights": "tryoff", "dressing_model": "dressing",
}

POLL_SECONDS = 1.5
HISTORY_COLUMNS = ["id", "name", "method", "status", "step", "created", "config"]
CAPTION_COLUMNS = ["file", "caption"]

# Form fields shown for every method, by config field name: (label, kind). Fields the method lacks are hidden
# from the request (never sent), so a new method with fewer fields still works.
FORM_FIELDS: dict[str, tuple[str, str]] = {
    "pretrained_model": ("Base model (hub id or folder)", "text"),
    "max_train_steps": ("Steps", "int"),
    "learning_rate": ("Learning rate", "float"),
    "lr_scheduler": ("LR schedule", "choice"),
    "train_batch_size": ("Batch size", "int"),
    "gradient_accumulation_steps": ("Gradient accumulation", "int"),
    "resolution": ("Resolution (px)", "int"),
    "mixed_precision": ("Mixed precision", "choice"),
    "device": ("Device", "choice"),
    "save_every": ("Checkpoint every N steps", "int"),
    "sample_every": ("Samples every N steps", "int"),
    "sample_steps": ("Sample denoising steps", "int"),
    "seed": ("Seed", "int"),
    "use_lora": ("LoRA (less memory)", "bool"),
    "lora_rank": ("LoRA rank", "int"),
    "train_text_encoder": ("Train text encoder", "bool"),
    "gradient_checkpointing": ("Gradient checkpointing", "bool"),
    "use_8bit_adam": ("8-bit Adam", "bool"),
    "masked_loss": ("Weight the loss inside the mask", "bool"),
    "instance_prompt": ("One prompt for every image (empty = captions)", "text"),
    "require_masks": ("Require a mask for every image", "bool"),
    "min_image_size": ("Minimum image side (px)", "int"),
}


# ------------------------------------------------------------------------------------------ pure logic


def form_values(method: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """Value for each form field: the recipe's, else the method's default (None for fields it lacks)."""
    fields = method_fields(method)
    return {name: recipe.get(name, fields[name]["default"]) if name in fields else None for name in FORM_FIELDS}


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def run_status_text(runs, run_id: str) -> str:
    """One line a designer reads: status, step/total, ETA, GPU memory (and the error of a failed run)."""
    record = runs.get(run_id)
    metrics = runs.metrics(run_id)
    last = metrics[-1] if metrics else {}
    eta = format_eta(last.get("eta_s")) if record.status == "running" and last else "–"
    gpu = last.get("gpu_mem_mb")
    gpu_text = f"{gpu:.0f} MiB" if isinstance(gpu, (int, float)) else "n/a (CPU)"
    text = (f"**{record.name or record.id}** · status: **{record.status}** · step {record.step}/{record.total_steps}"
            f" · ETA {eta} · GPU memory {gpu_text}")
    if record.status == "running" and not metrics:
        text += " · starting (the trainer loads its libraries first)…"
    if record.status == "queued":
        text += " · waits for the GPU"
    if record.status == "finished" and runs.final_weights(run_id):
        text += " · final model ready: *Use in studio*"
    if record.status == "failed" and record.error:
        text += f"\n\n```\n{record.error[-1500:]}\n```"
    return text


def loss_frame(runs, run_id: str, max_chain: int = 50) -> pd.DataFrame:
    """(step, loss) of a run and of the runs it was resumed from, so a resumed curve starts at step 1.

    Where runs overlap (a crash after the last checkpoint is redone by the resumed run) the newer run wins.
    """
    rows: list[tuple[int, float]] = []
    boundary = None
    current: str | None = run_id
    for _ in range(max_chain):
        if not current:
            break
        try:
            record = runs.get(current)
        except KeyError:
            break
        own = [(row["step"], float(row["loss"])) for row in runs.metrics(current)
               if isinstance(row.get("loss"), (int, float)) and isinstance(row.get("step"), int)
               and (boundary is None or row["step"] < boundary)]
        rows = own + rows
        if own:
            boundary = own[0][0]
        current = record.resumed_from
    return pd.DataFrame(rows, columns=["step", "loss"])


def short_config(config: dict[str, Any]) -> str:
    keys = ("max_train_steps", "learning_rate", "resolution", "train_batch_size", "use_lora")
    parts = [f"{key}={config[key]}" for key in keys if key in config]
    if config.get("dataset"):
        parts.append(f"dataset={Path(config['dataset']).name}")
    return " ".join(parts)


def history_rows(runs) -> list[list[Any]]:
    return [[r.id, r.name or "", r.method, r.status, f"{r.step}/{r.total_steps}",
             time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at)), short_config(r.config)]
            for r in reversed(runs.list_runs())]


def run_details(runs, run_id: str) -> str:
    record = runs.get(run_id)
    lines = [f"### {record.id}", f"- method: `{record.method}`", f"- status: `{record.status}`"
             + (f" (exit code {record.exit_code})" if record.exit_code is not None else ""),
             f"- folder: `{record.run_dir}`"]
    if record.resumed_from:
        lines.append(f"- resumed from: `{record.resumed_from}`")
    checkpoints = runs.checkpoints(run_id)
    lines.append(f"- checkpoints: {', '.join(p.name for p in checkpoints) or 'none'}")
    lines.append("\n```yaml\n" + yaml.safe_dump(record.config, sort_keys=False) + "```")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ handlers
class TrainingHandlers:
    """The tab's actions on plain values (tests call these directly); errors are gr.Error sentences."""

    def __init__(self, ctx: StudioContext):
        self.ctx = ctx
        self.runs = ctx.runs
        self.tiny_root = ctx.service.tiny_root()  # None unless the tiny preset is active
        self.tiny = self.tiny_root is not None

    @property
    def datasets_root(self) -> Path:
        return Path(self.runs.runs_root) / DATASETS_DIR

    def recipe(self, name: str) -> dict[str, Any]:
        try:
            return load_recipe(name, self.tiny_root)
        except ValueError as error:
            raise gr.Error(str(error))

    def load_dataset(self, files, folder, require_masks=False, min_size=64,
                     method: str = "garment_finetune") -> tuple[str, list[list[str]], str]:
        """-> (dataset folder, caption rows, summary); gr.Error naming the bad file."""
        validate = uses_image_folder_layout(method)
        try:
            path, items = import_dataset(files, folder, self.datasets_root, bool(require_masks),
                                         int(min_size or 8), validate=validate)
        except DatasetError as error:
            raise gr.Error(f"Dataset rejected — {error}", title="Dataset problem")
        if not validate:
            return str(path), [], f"Dataset in `{path}`; {method} checks its layout when the run is submitted."
        masks = sum(item.mask_path is not None for item in items)
        summary = f"**{len(items)} images** ({masks} with masks) in `{path}`"
        return str(path), caption_rows(path, items), summary

    def save_captions(self, dataset: str | None, rows: Any) -> str:
        if not dataset:
            raise gr.Error("Load a dataset first.")
        try:
            written = save_captions(dataset, rows.values.tolist() if isinstance(rows, pd.DataFrame) else rows)
        except DatasetError as error:
            raise gr.Error(str(error))
        return f"Saved {written} caption(s)." if written else "No caption changed."

    def submit(self, method: str, advanced_yaml: str, form: dict[str, Any], dataset: str | None,
               name: str | None = None, start: bool = True) -> str:
        """Validate and queue a run (it starts when the GPU is free); returns its id."""
        try:
            config = build_config(method, advanced_yaml, form, dataset)
            self._ensure_tiny_models(config)
            return self.runs.submit(method, config, name=(name or "").strip() or None, start=start)
        except (ConfigError, DatasetError, ValueError) as error:
            raise gr.Error(f"Cannot start: {error}")

    def _ensure_tiny_models(self, config: dict[str, Any]) -> None:
        """The tiny model set is built lazily by the registry; a trainer needs it on disk now."""
        model = str(config.get("pretrained_model") or "")
        if self.tiny_root and model.startswith(str(self.tiny_root)) and not Path(model).exists():
            self.ctx.service.ensure_tiny_models()

    def _require_run(self, run_id: str | None) -> str:
        if not run_id:
            raise gr.Error("Select a run in the history first.")
        try:
            self.runs.get(run_id)
        except KeyError:
            raise gr.Error(f"Unknown run {run_id}.")
        return run_id

    def stop(self, run_id: str | None) -> str:
        record = self.runs.stop(self._require_run(run_id), wait=False)
        return f"{record.id}: {record.status} (the trainer saves a checkpoint and exits at its next step)" \
            if record.status == "stopping" else f"{record.id}: {record.status}"

    def resume(self, run_id: str | None, max_train_steps: Any = None) -> str:
        run_id = self._require_run(run_id)
        record = self.runs.get(run_id)
        target = int(max_train_steps) if max_train_steps else None
        # a stopped/failed run continues towards its own target; a finished one only goes further if asked
        if target is not None and (target <= record.step or record.status != "finished"):
            target = None
        try:
            return self.runs.resume(run_id, max_train_steps=target)
        except (ConfigError, DatasetError, ValueError) as error:
            raise gr.Error(f"Cannot resume: {error}")

    def request(self, run_id: str | None, what: str) -> str:
        run_id = self._require_run(run_id)
        try:
            (self.runs.request_save if what == "save" else self.runs.request_sample)(run_id)
        except ValueError as error:
            raise gr.Error(str(error))
        return f"{'Checkpoint' if what == 'save' else 'Samples'} requested at the next step."

    def use_in_studio(self, run_id: str | None):
        """Register a finished run's model and swap its weights in; returns (TrainedModel, dropdown choices of
        its kind, the preset checkpoint names now served by its weights)."""
        run_id = self._require_run(run_id)
        try:
            model = register_in_studio(self.runs.runs_root, run_id)
        except ValueError as error:
            raise gr.Error(str(error))
        swapped = self.apply_checkpoint(model)
        choices = [(f"{m.name} — “{m.prompt}”", str(m.path))
                   for m in list_trained_models(self.runs.runs_root, kind=model.kind)]
        return model, choices, swapped

    def apply_checkpoint(self, model) -> list[str]:
        """Swap every weights file of ``model`` into the studio (colour adapter / GAM / LEM into design,
        CatVTON into try-on, TryOffAnyone into try-off, IMAGDressing + slot LoRAs into dressing); returns the
        preset checkpoint names swapped (none for a garment model, which the Try-on tab lists instead)."""
        try:
            targets = studio_checkpoints(model)
            for name, path in targets:
                self.ctx.service.use_weights(name, path)
        except (ValueError, UserError) as error:
            raise gr.Error(f"Cannot use {model.name}: {error}")
        return [name for name, _ in targets]

    def restore_registered(self) -> None:
        """At start-up: models chosen with "Use in studio" before a restart are swapped in again."""
        for model in reversed(list_trained_models(self.runs.runs_root, registered_only=True)):  # newest last
            try:
                self.apply_checkpoint(model)
            except gr.Error as error:
                logger.warning("could not restore %s: %s", model.name, error)

    def latest_run(self) -> str | None:
        runs = self.runs.list_runs()
        active = [r for r in runs if r.is_active]
        chosen = (active or runs)[-1:] if runs else []
        return chosen[0].id if chosen else None


# ----------------------------------------------------------------------------------------------- tab
def shown_fields(method: str) -> list[str]:
    """The form fields ``method`` has, in form order; the others are hidden and never sent."""
    fields = method_fields(method)
    return [name for name in FORM_FIELDS if name in fields]


def _component(name: str, info: dict[str, Any], value: Any, visible: bool) -> Any:
    label, kind = FORM_FIELDS[name]
    elem_id = f"training-{name.replace('_', '-')}"
    help_text = info.get("help")
    common = {"label": label, "elem_id": elem_id, "visible": visible}
    if kind == "bool":
        return gr.Checkbox(value=bool(value), info=help_text, **common)
    if kind == "choice":
        return gr.Dropdown(list(info.get("choices") or []), value=value, **common)
    if kind == "int":
        low, high = info.get("range") or (None, None)
        return gr.Number(value=value, precision=0, minimum=low, maximum=high, info=help_text, **common)
    if kind == "float":
        return gr.Number(value=value, info=help_text, **common)
    return gr.Textbox(value=value or "", info=help_text, **common)


def build_training_tab(ctx: StudioContext) -> dict[str, Any]:
    """Build the tab inside an open ``gr.Blocks``/``gr.Tab``; returns its components by name."""
    if ctx.runs is None:
        gr.Markdown("Training is not available: the training runner could not be started (see the log).")
        return {}
    handlers = TrainingHandlers(ctx)
    handlers.restore_registered()
    start_poller(ctx.runs)
    methods = list(METHODS)
    method0 = methods[0]
    recipe0 = default_recipe(method0, handlers.tiny)
    recipe_values = handlers.recipe(recipe0) if recipe0 else {}
    values0 = form_values(method0, recipe_values)
    fields0 = method_fields(method0)
    f: dict[str, Any] = {}  # config field name -> component
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            with gr.Row():
                method = gr.Dropdown(methods, value=method0, label="Method", elem_id="training-method")
                recipe = gr.Dropdown(recipe_names(method0), value=recipe0, label="Recipe",
                                     elem_id="training-recipe")
            gr.Markdown("### 1 · Dataset\nA zip or several images of **one garment**; masks as "
                        "`<name>_mask.png` (white = garment); captions come from file names "
                        "(`red sweater (1).jpg` → “red sweater”) or `.txt` files.")
            upload = gr.File(label="Upload a .zip or images (+ masks, .txt)", file_count="multiple",
                             file_types=list(UPLOAD_SUFFIXES), type="filepath", elem_id="training-upload")
            with gr.Row():
                server_folder = gr.Textbox(label="…or a folder on the server", scale=3, elem_id="training-folder",
                                           visible=not os.environ.get("SPACE_ID"))
                load_folder = gr.Button("Load folder", scale=1, elem_id="training-load-folder",
                                        visible=not os.environ.get("SPACE_ID"))
            dataset_path = gr.State(None)
            dataset_summary = gr.Markdown("No dataset loaded.", elem_id="training-dataset-summary")
            captions = gr.Dataframe(headers=CAPTION_COLUMNS, datatype=["str", "str"], column_count=2,
                                    interactive=True, label="Images and captions (edit, then Save captions)",
                                    elem_id="training-captions", max_height=260)
            save_captions_button = gr.Button("Save captions", elem_id="training-save-captions")
            gr.Markdown("### 2 · Settings")
            run_name = gr.Textbox(label="Run name (optional)", elem_id="training-run-name")
            with gr.Row():
                for name in ("max_train_steps", "learning_rate", "resolution"):
                    f[name] = _component(name, fields0.get(name, {}), values0[name], name in fields0)
            with gr.Accordion("More settings", open=False):
                with gr.Row():
                    for name in FORM_FIELDS:
                        if name not in f and FORM_FIELDS[name][1] != "bool":
                            f[name] = _component(name, fields0.get(name, {}), values0[name], name in fields0)
                with gr.Row():
                    for name in FORM_FIELDS:
                        if name not in f:
                            f[name] = _component(name, fields0.get(name, {}), values0[name], name in fields0)
                advanced = gr.Code(yaml.safe_dump(recipe_values, sort_keys=False), language="yaml",
                                   label="Advanced: the recipe (form fields above override these keys)",
                                   elem_id="training-advanced")
        with gr.Column(scale=3):
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="training-start")
                queue = gr.Button("Add to queue", elem_id="training-queue")
                stop = gr.Button("Stop", variant="stop", elem_id="training-stop")
                resume = gr.Button("Resume", elem_id="training-resume")
            with gr.Row():
                save_now = gr.Button("Save checkpoint now", size="sm", elem_id="training-save-now")
                sample_now = gr.Button("Sample now", size="sm", elem_id="training-sample-now")
                use_button = gr.Button("Use in studio", size="sm", elem_id="training-use")
            selected = gr.Textbox(label="Selected run", interactive=False, elem_id="training-run-id")
            status = gr.Markdown("No run yet.", elem_id="training-status")
            message = gr.Markdown("", elem_id="training-message")
            loss_plot = gr.LinePlot(pd.DataFrame({"step": [], "loss": []}), x="step", y="loss", title="Loss",
                                    height=220, elem_id="training-loss")
            samples = gr.Gallery(label="Samples", columns=4, height=200, elem_id="training-samples",
                                 interactive=False)
            log = gr.Textbox(label="Log (tail)", lines=10, max_lines=10, interactive=False, autoscroll=True,
                             elem_id="training-log")
            history = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, label="Runs (click one)",
                                   elem_id="training-history", max_height=260)
            details = gr.Markdown(elem_id="training-details")
    seen = gr.State({})  # per page: what the timer last sent, so unchanged views are skipped
    timer = gr.Timer(POLL_SECONDS)
    form_components = [f[name] for name in FORM_FIELDS]

    def form_dict(*values) -> dict[str, Any]:
        return dict(zip(FORM_FIELDS, values))

    # ---- dataset
    def on_upload(files, require_masks, min_size, method_name):
        if not files:
            return gr.skip(), gr.skip(), gr.skip()
        return handlers.load_dataset(files, None, require_masks, min_size, method_name)

    upload.upload(on_upload, [upload, f["require_masks"], f["min_image_size"], method],
                  [dataset_path, captions, dataset_summary])
    load_folder.click(lambda folder, masks, size, name: handlers.load_dataset(None, folder, masks, size, name),
                      [server_folder, f["require_masks"], f["min_image_size"], method],
                      [dataset_path, captions, dataset_summary])
    save_captions_button.click(handlers.save_captions, [dataset_path, captions], message)

    # ---- recipes (form fields by name)
    def on_recipe(method_name, recipe_name):
        data = handlers.recipe(recipe_name) if recipe_name else {}
        values = form_values(method_name, data)
        shown = shown_fields(method_name)
        updates = [gr.update(value=values[name], visible=name in shown) for name in FORM_FIELDS]
        return [yaml.safe_dump(data, sort_keys=False), *updates]

    recipe.change(on_recipe, [method, recipe], [advanced, *form_components], queue=False)

    def on_method(method_name):
        name = default_recipe(method_name, handlers.tiny)
        return gr.update(choices=recipe_names(method_name), value=name)

    method.change(on_method, method, recipe, queue=False)

    # ---- run control
    def on_submit(start_now: bool):
        def handler(method_name, advanced_yaml, dataset, name, *values):
            run_id = handlers.submit(method_name, advanced_yaml, form_dict(*values), dataset, name, start=start_now)
            record = ctx.runs.get(run_id)
            return run_id, f"Run `{run_id}` {record.status}." + (
                " It starts when the GPU is free." if record.status == "queued" else "")
        return handler

    submit_inputs = [method, advanced, dataset_path, run_name, *form_components]
    start.click(on_submit(True), submit_inputs, [selected, message])
    queue.click(on_submit(False), submit_inputs, [selected, message])
    stop.click(handlers.stop, selected, message, queue=False)

    def on_resume(run_id, steps):
        new_id = handlers.resume(run_id, steps)
        return new_id, f"Resuming `{run_id}` as `{new_id}` from its latest checkpoint."

    resume.click(on_resume, [selected, f["max_train_steps"]], [selected, message])
    save_now.click(lambda run_id: handlers.request(run_id, "save"), selected, message, queue=False)
    sample_now.click(lambda run_id: handlers.request(run_id, "sample"), selected, message, queue=False)

    # ---- live view: reads the store and the run folder only
    def on_tick(run_id, last):
        last = dict(last or {})
        out: dict[Any, Any] = {}
        if not run_id:
            run_id = handlers.latest_run()
            if run_id:
                out[selected] = run_id
        records = ctx.runs.list_runs()
        history_key = [(r.id, r.status, r.step) for r in records]
        if history_key != last.get("history"):
            last["history"] = history_key
            out[history] = pd.DataFrame(history_rows(ctx.runs), columns=HISTORY_COLUMNS)
        if run_id:
            try:
                record = ctx.runs.get(run_id)
            except KeyError:
                record = None
            if record is not None:
                metrics_path = Path(record.run_dir) / "metrics.jsonl"
                log_path = Path(record.run_dir) / "train.log"
                key = (run_id, record.updated_at, record.status,
                       metrics_path.stat().st_size if metrics_path.exists() else 0,
                       log_path.stat().st_size if log_path.exists() else 0)
                if key != last.get("run"):
                    last["run"] = key
                    out[status] = run_status_text(ctx.runs, run_id)
                    out[log] = ctx.runs.log_tail(run_id, 40)
                    out[loss_plot] = loss_frame(ctx.runs, run_id)
                    if (run_id, record.status) != last.get("details"):
                        last["details"] = (run_id, record.status)
                        out[details] = run_details(ctx.runs, run_id)
                sample_paths = [str(p) for p in ctx.runs.samples(run_id)]
                if (run_id, sample_paths) != last.get("samples"):
                    last["samples"] = (run_id, sample_paths)
                    out[samples] = [(p, Path(p).stem) for p in sample_paths[-12:]]
        out[seen] = last
        return out

    timer.tick(on_tick, [selected, seen], [selected, history, status, log, loss_plot, samples, details, seen],
               show_progress="hidden", concurrency_limit=None)

    def on_history_select(evt: gr.SelectData):
        row = evt.row_value if evt.row_value else None
        if not row:
            return gr.skip(), gr.skip()
        run_id = str(row[0])
        return run_id, run_details(ctx.runs, run_id)

    history.select(on_history_select, None, [selected, details], queue=False)
    selected.change(lambda run_id: run_details(ctx.runs, run_id) if run_id else "", selected, details, queue=False)

    # ---- "Use in studio": register, then show it in the try-on tab if there is one
    def wire_use() -> None:
        """Register the run's model, swap its weights in, and open the tab that uses it (a garment model
        becomes the selected one of the Try-on tab's garment-model list)."""
        garment_target = ctx.targets.get("tryon_garment_model")
        outputs = [message] + ([ctx.tabs] if ctx.tabs is not None else []) + ([garment_target[0]] if garment_target else [])

        def on_use(run_id):
            model, choices, swapped = handlers.use_in_studio(run_id)
            tab = USE_TAB.get(model.kind)
            what = (f"its weights now serve {', '.join(f'`{name}`' for name in swapped)}" if swapped
                    else f"listed as a {model.kind.replace('_', ' ')}")
            gr.Info(f"“{model.name}”: {what}.")
            updates = [f"Registered `{model.name}` ({model.kind}) from `{model.path}`: {what}."]
            if ctx.tabs is not None:
                updates.append(gr.Tabs(selected=tab) if tab else gr.update())
            if garment_target:
                updates.append(gr.update(choices=choices, value=str(model.path)) if model.kind == "garment_model"
                               else gr.update())
            return updates

        use_button.click(on_use, selected, outputs, queue=False)

    ctx.deferred.append(wire_use)

    f.update(method=method, recipe=recipe, advanced=advanced, upload=upload, server_folder=server_folder,
             captions=captions, dataset_path=dataset_path, selected=selected, status=status, log=log,
             loss_plot=loss_plot, samples=samples, history=history, details=details, message=message,
             timer=timer, handlers=handlers)
    return f
