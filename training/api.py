"""The studio's one door to training (torch-free): methods and their fields, recipes, datasets (upload, zip
extraction, validation, captions), building a run's config, the runs themselves (through
:class:`training.runner.RunManager`) and the trained models they export ("Use in studio").

Everything here works on plain values and raises ConfigError / DatasetError / ValueError with a sentence; the
Training tab turns those into messages. Nothing here imports torch or gradio.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from training.config import ConfigError, field_help
from training.datasets import IMAGE_SUFFIXES, DatasetError, load_dataset, safe_extract_zip, write_caption
from training.models import TrainedModel, list_trained_models, register_in_studio, studio_checkpoints
from training.runner import METHODS, RunManager

logger = logging.getLogger(__name__)


RECIPES = Path(__file__).resolve().parents[1] / "presets" / "training"


TINY_PLACEHOLDER = "{tiny_models}"


DATASETS_DIR = "datasets"


UPLOAD_SUFFIXES = (".zip", ".txt", *IMAGE_SUFFIXES)


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
        default = fields[name]["default"]
        if isinstance(value, float) and value.is_integer() and isinstance(default, int) and not isinstance(default, bool):
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


__all__ = [
    "METHODS", "ConfigError", "DatasetError", "IMAGE_SUFFIXES", "RunManager", "TrainedModel", "build_config",
    "caption_rows", "default_recipe", "import_dataset", "list_trained_models", "load_recipe", "method_fields",
    "recipe_names", "register_in_studio", "safe_name", "save_captions", "start_poller", "studio_checkpoints",
    "uses_image_folder_layout",
]
