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
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import yaml

from studio.components import StudioContext
from training.config import ConfigError, field_help
from training.datasets import IMAGE_SUFFIXES, DatasetError, load_dataset, safe_extract_zip, write_caption
from training.models import list_trained_models, register_in_studio, studio_checkpoint
from training.runner import METHODS

logger = logging.getLogger(__name__)

RECIPES = Path(__file__).resolve().parents[2] / "presets" / "training"
TINY_PLACEHOLDER = "{tiny_models}"
POLL_SECONDS = 1.5
DATASETS_DIR = "datasets"
HISTORY_COLUMNS = ["id", "name", "method", "status", "step", "created", "config"]
CAPTION_COLUMNS = ["file", "caption"]
UPLOAD_SUFFIXES = (".zip", ".txt", *IMAGE_SUFFIXES)

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
def method_fields(method: str) -> dict[str, dict[str, Any]]:
    """The config fields of ``method`` with default/help/range/choices (read from METHODS each time)."""
    if method not in METHODS:
        raise ValueError(f"unknown training method {method!r}")
    return field_help(METHODS[method].load_config_class())


def recipe_names(method: str) -> list[str]:
    """Recipe files for ``method``: presets/training/<method>*.yaml, by stem."""
    return sorted(path.stem for path in RECIPES.glob("*.yaml")
                  if path.stem == method or path.stem.startswith(f"{method}_"))


def default_recipe(method: str, tiny: bool) -> str | None:
    """The tiny recipe when the tiny model preset is active, else the method's main recipe."""
    names = recipe_names(method)
    preferred = [f"{method}_tiny"] if tiny else [method]
    for name in preferred + [n for n in names if tiny == n.endswith("_tiny")] + names:
        if name in names:
            return name
    return None


def load_recipe(name: str, tiny_root: str | Path | None) -> dict[str, Any]:
    """A recipe as a dict, with the ``{tiny_models}`` placeholder replaced by the tiny model root."""
    path = RECIPES / f"{name}.yaml"
    if not re.fullmatch(r"[\w.-]+", name) or not path.is_file():
        raise ValueError(f"unknown training recipe {name!r}")
    data = yaml.safe_load(path.read_text()) or {}
    for key, value in data.items():
        if isinstance(value, str) and TINY_PLACEHOLDER in value:
            if tiny_root is None:
                raise ValueError(f"recipe {name}: {key} needs the tiny model folder, which this studio lacks")
            data[key] = value.replace(TINY_PLACEHOLDER, str(tiny_root))
    return data


def form_values(method: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """Value for each form field: the recipe's, else the method's default (None for fields it lacks)."""
    fields = method_fields(method)
    return {name: recipe.get(name, fields[name]["default"]) if name in fields else None for name in FORM_FIELDS}


def build_config(method: str, advanced_yaml: str, form: dict[str, Any], dataset: str | None) -> dict[str, Any]:
    """Advanced YAML + form fields (by name, only those the method has) + the dataset -> a config dict."""
    try:
        config = yaml.safe_load(advanced_yaml or "") or {}
    except yaml.YAMLError as error:
        raise ValueError(f"Advanced settings are not valid YAML: {error}") from error
    if not isinstance(config, dict):
        raise ValueError("Advanced settings must be 'key: value' lines.")
    fields = method_fields(method)
    for name, value in form.items():
        if name not in fields:
            continue
        if isinstance(value, str):
            value = value.strip()
        if name == "instance_prompt" and not value:
            value = None
        if isinstance(value, float) and value.is_integer() and FORM_FIELDS.get(name, ("", ""))[1] == "int":
            value = int(value)
        config[name] = value
    if not dataset:
        raise ValueError("Load a dataset first (upload a zip or images, or give a server folder).")
    config["dataset"] = str(dataset)
    config.pop("output_dir", None)
    return config


def safe_name(name: str, fallback: str = "file") -> str:
    """A file name that keeps what captions come from ("red sweater (1).png") but no path tricks."""
    name = Path(str(name).replace("\\", "/")).name
    name = re.sub(r"[^\w .()+,-]", "_", name).strip(" .")
    return name[:120] or fallback


def new_dataset_dir(datasets_root: Path, label: str) -> Path:
    """A fresh folder ``<root>/<label>-<time>[-N]``: an upload never overwrites an earlier one."""
    datasets_root.mkdir(parents=True, exist_ok=True)
    base = f"{safe_name(label, 'dataset').replace(' ', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
    for attempt in range(1000):
        folder = datasets_root / (base if attempt == 0 else f"{base}-{attempt}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise OSError(f"could not create a new dataset folder under {datasets_root}")


def uses_image_folder_layout(method: str) -> bool:
    """True for methods reading the training.datasets layout (images + masks + captions); others (e.g. the
    GarmentBench or dressing layouts) are checked by their own preflight when the run is submitted."""
    return METHODS[method].preflight in (None, "training.runner:preflight_dataset")


def import_dataset(files: list[str] | None, folder: str | None, datasets_root: str | Path,
                   require_masks: bool = False, min_size: int = 64, validate: bool = True) -> tuple[Path, list]:
    """Uploaded files (a zip and/or images, masks, .txt captions) or a server folder -> a validated dataset.

    Uploads are copied into a new folder under ``datasets_root`` (zips safely extracted); nothing starts
    until :func:`training.datasets.load_dataset` accepts it. Raises DatasetError naming the bad file; a
    rejected upload's folder is removed.
    """
    files = [f for f in (files or []) if f]
    if not files and not (folder or "").strip():
        raise DatasetError("Upload a .zip or some images, or type a folder on the server.")
    if not files:
        source = Path(folder.strip()).expanduser()
        if not source.is_dir():
            raise DatasetError(f"{source}: not a folder on the server")
        return source, load_dataset(source, require_masks=require_masks, min_size=min_size) if validate else []
    for path in files:
        if Path(path).suffix.lower() not in UPLOAD_SUFFIXES:
            raise DatasetError(f"{Path(path).name}: not an image, mask, caption or zip "
                               f"(allowed: {', '.join(UPLOAD_SUFFIXES)})")
    first = Path(files[0])
    target = new_dataset_dir(Path(datasets_root), first.stem if len(files) == 1 else "upload")
    try:
        for path in map(Path, files):
            if path.suffix.lower() == ".zip":
                safe_extract_zip(path, target / safe_name(path.stem, "zip") if len(files) > 1 else target)
            else:
                destination = target / safe_name(path.name)
                if destination.exists():
                    raise DatasetError(f"{path.name}: two uploaded files have the same name")
                shutil.copyfile(path, destination)
        return target, load_dataset(target, require_masks=require_masks, min_size=min_size) if validate else []
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def caption_rows(dataset: Path, items: list) -> list[list[str]]:
    return [[str(Path(item.image_path).relative_to(dataset)), item.caption] for item in items]


def save_captions(dataset: str | Path, rows: Any) -> int:
    """Write the ``.txt`` sidecar of every row whose caption changed; returns how many were written.

    Only images of the dataset can be named (a row cannot point outside it); empty captions are refused.
    """
    dataset = Path(dataset)
    if isinstance(rows, pd.DataFrame):
        rows = rows.values.tolist()
    items = {str(Path(item.image_path).relative_to(dataset)): item for item in load_dataset(dataset, min_size=1)}
    written = 0
    for row in rows or []:
        if not row or not str(row[0]).strip():
            continue
        file, caption = str(row[0]).strip(), str(row[1] if len(row) > 1 and row[1] is not None else "")
        if file not in items:
            raise DatasetError(f"{file}: not an image of this dataset")
        if caption.strip() != items[file].caption:
            write_caption(items[file].image_path, caption)
            written += 1
    return written


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


_POLLERS: dict[int, threading.Thread] = {}


def start_poller(runs, interval: float = 2.0) -> threading.Thread:
    """One app-owned daemon thread per RunManager: reap exited trainers, escalate stops, start queued runs."""
    thread = _POLLERS.get(id(runs))
    if thread is not None and thread.is_alive():
        return thread

    def loop() -> None:
        while True:
            try:
                runs.poll()
            except Exception:  # noqa: BLE001 - a store hiccup must not end the poller
                logger.exception("training poller")
            time.sleep(interval)

    thread = threading.Thread(target=loop, name="training-poller", daemon=True)
    thread.start()
    _POLLERS[id(runs)] = thread
    return thread


# ------------------------------------------------------------------------------------------ handlers
class TrainingHandlers:
    """The tab's actions on plain values (tests call these directly); errors are gr.Error sentences."""

    def __init__(self, ctx: StudioContext):
        self.ctx = ctx
        self.runs = ctx.runs
        registry = getattr(ctx.service, "registry", None)
        preset = getattr(registry, "preset", None)
        self.tiny = bool(getattr(preset, "tiny", False))
        self.tiny_root = getattr(registry, "tiny_root", None)

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
            written = save_captions(dataset, rows)
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
            ensure = getattr(self.ctx.service.registry, "_ensure_tiny", None)
            if ensure is not None:
                ensure()

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
        """Register a finished run's model; returns (TrainedModel, dropdown choices of its kind)."""
        run_id = self._require_run(run_id)
        try:
            model = register_in_studio(self.runs.runs_root, run_id)
        except ValueError as error:
            raise gr.Error(str(error))
        self.apply_checkpoint(model)
        choices = [(f"{m.name} — “{m.prompt}”", str(m.path))
                   for m in list_trained_models(self.runs.runs_root, kind=model.kind)]
        return model, choices

    def apply_checkpoint(self, model) -> bool:
        """Swap a trained checkpoint (colour adapter, GAM, LEM, ...) into the model registry; True if done."""
        use = getattr(getattr(self.ctx.service, "registry", None), "use_checkpoint", None)
        try:
            target = studio_checkpoint(model)
            if target is None or use is None:
                return False
            use(*target)
        except ValueError as error:
            raise gr.Error(f"Cannot use {model.name}: {error}")
        return True

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
def _component(name: str, info: dict[str, Any], value: Any) -> Any:
    label, kind = FORM_FIELDS[name]
    elem_id = f"training-{name.replace('_', '-')}"
    help_text = info.get("help")
    if kind == "bool":
        return gr.Checkbox(value=bool(value), label=label, info=help_text, elem_id=elem_id)
    if kind == "choice":
        return gr.Dropdown(list(info.get("choices") or []), value=value, label=label, elem_id=elem_id)
    if kind == "int":
        low, high = info.get("range") or (None, None)
        return gr.Number(value=value, precision=0, minimum=low, maximum=high, label=label, info=help_text,
                         elem_id=elem_id)
    if kind == "float":
        return gr.Number(value=value, label=label, info=help_text, elem_id=elem_id)
    return gr.Textbox(value=value or "", label=label, info=help_text, elem_id=elem_id)


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
                    f[name] = _component(name, fields0.get(name, {}), values0[name])
            with gr.Accordion("More settings", open=False):
                with gr.Row():
                    for name in FORM_FIELDS:
                        if name not in f and FORM_FIELDS[name][1] != "bool":
                            f[name] = _component(name, fields0.get(name, {}), values0[name])
                with gr.Row():
                    for name in FORM_FIELDS:
                        if name not in f:
                            f[name] = _component(name, fields0.get(name, {}), values0[name])
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
        fields = method_fields(method_name)
        updates = [gr.update(value=values[name], visible=name in fields) for name in FORM_FIELDS]
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
    def on_use(run_id):
        model, choices = handlers.use_in_studio(run_id)
        gr.Info(f"“{model.name}” is now listed as a {model.kind.replace('_', ' ')}.")
        return f"Registered `{model.name}` ({model.kind}) from `{model.path}`."

    use_event = use_button.click(on_use, selected, message, queue=False)

    def wire_tryon() -> None:
        target = ctx.targets.get("tryon_garment_model")
        if target is None or ctx.tabs is None:
            return

        def to_tryon(run_id):
            model, choices = handlers.use_in_studio(run_id)
            return gr.update(choices=choices, value=str(model.path)), gr.Tabs(selected=target[1])

        use_event.success(to_tryon, selected, [target[0], ctx.tabs], queue=False)

    ctx.deferred.append(wire_tryon)

    f.update(method=method, recipe=recipe, advanced=advanced, upload=upload, server_folder=server_folder,
             captions=captions, dataset_path=dataset_path, selected=selected, status=status, log=log,
             loss_plot=loss_plot, samples=samples, history=history, details=details, message=message,
             timer=timer, handlers=handlers)
    return f
