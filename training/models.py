"""Trained models the studio can use: the ``final/`` folders of finished training runs.

A finished run exports ``<runs root>/<run id>/final/`` with an ``atelier_model.json`` card (``kind``,
``base_model``, ``prompt``, ...). This module lists them for other tabs (try-on lists ``kind="garment_model"``)
and keeps the studio's small registry of models a designer chose with "Use in studio"
(``<runs root>/registered_models.json``: run id -> display name). No torch, no gradio.

    from training.models import list_trained_models
    models = list_trained_models(runs.runs_root, kind="garment_model")   # newest first
    choices = [(f"{m.name} — {m.prompt}", str(m.path)) for m in models]
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.common import FINAL_DIR, MODEL_CARD

logger = logging.getLogger(__name__)

STORE_FILE = "jobs.sqlite"  # the job store app.py keeps in the runs root
REGISTRY_FILE = "registered_models.json"


@dataclass(frozen=True)
class TrainedModel:
    """One exported model (a run's ``final/`` folder) as described by its model card."""

    name: str  # display name: the name given in "Use in studio", else the run's name, else the run id
    path: Path  # the model folder (holds atelier_model.json)
    kind: str  # e.g. "garment_model"
    base_model: str  # what it was fine-tuned from
    prompt: str  # the prompt/trigger it was trained with
    run_id: str
    created_at: str  # from the card (ISO 8601), else the card file's time
    method: str = ""
    registered: bool = False  # chosen with "Use in studio"
    card: dict[str, Any] | None = None


def read_trained_model(folder: str | Path, name: str | None = None, registered: bool = False) -> TrainedModel:
    """The model in ``folder`` (a run's final/ or any folder with a card); ValueError naming the problem."""
    folder = Path(folder)
    card_path = folder / MODEL_CARD
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ValueError(f"{folder}: no {MODEL_CARD} (the run has not exported a model)") from error
    except (OSError, ValueError) as error:
        raise ValueError(f"{card_path}: unreadable model card ({error})") from error
    if not isinstance(card, dict) or not card.get("kind"):
        raise ValueError(f"{card_path}: the model card has no 'kind'")
    run_id = str(card.get("run_id") or (folder.parent.name if folder.name == FINAL_DIR else folder.name))
    created = card.get("created_at") or time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(card_path.stat().st_mtime))
    return TrainedModel(
        name=name or run_id, path=folder, kind=str(card["kind"]), base_model=str(card.get("base_model") or ""),
        prompt=str(card.get("prompt") or card.get("trigger") or ""), run_id=run_id, created_at=str(created),
        method=str(card.get("method") or ""), registered=registered, card=card,
    )


def _registry(runs_root: Path) -> dict[str, dict[str, Any]]:
    path = runs_root / REGISTRY_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logger.warning("ignoring unreadable %s: %s", path, error)
        return {}
    return data if isinstance(data, dict) else {}


def _run_statuses(runs_root: Path) -> dict[str, tuple[str, str | None]] | None:
    """run id -> (status, name) from the job store, or None when there is no store."""
    if not (runs_root / STORE_FILE).is_file():
        return None
    from training.jobstore import JobStore

    return {record.id: (record.status, record.name) for record in JobStore(runs_root / STORE_FILE).list()}


def list_trained_models(runs_root: str | Path, kind: str | None = None,
                        registered_only: bool = False) -> list[TrainedModel]:
    """Models exported by finished runs under ``runs_root`` (newest first), optionally of one ``kind``.

    When the runs root holds the job store, only runs whose status is ``finished`` count (a half-exported
    folder of a crashed run is never listed). Unreadable cards are skipped with a log line.
    """
    runs_root = Path(runs_root)
    if not runs_root.is_dir():
        return []
    statuses = _run_statuses(runs_root)
    registry = _registry(runs_root)
    found = []
    for card in runs_root.glob(f"*/{FINAL_DIR}/{MODEL_CARD}"):
        run_id = card.parent.parent.name
        if statuses is not None and statuses.get(run_id, ("",))[0] != "finished":
            continue
        entry = registry.get(run_id)
        if registered_only and entry is None:
            continue
        store_name = statuses.get(run_id, ("", None))[1] if statuses else None
        try:
            model = read_trained_model(card.parent, name=(entry or {}).get("name") or store_name,
                                       registered=entry is not None)
        except ValueError as error:
            logger.warning("skipping %s: %s", card.parent, error)
            continue
        if kind is None or model.kind == kind:
            found.append(model)
    return sorted(found, key=lambda model: (model.created_at, model.run_id), reverse=True)


def register_in_studio(runs_root: str | Path, run_id: str, name: str | None = None) -> TrainedModel:
    """Mark a finished run's exported model as chosen for the studio ("Use in studio") and return it.

    ValueError when the run has no exported model (still running, stopped or failed). Idempotent; a new
    ``name`` renames it. The registry file is replaced atomically.
    """
    runs_root = Path(runs_root)
    if "/" in run_id or "\\" in run_id or run_id in ("", ".", ".."):
        raise ValueError(f"run id {run_id!r} is not valid")
    statuses = _run_statuses(runs_root)
    if statuses is not None and run_id in statuses and statuses[run_id][0] != "finished":
        raise ValueError(f"run {run_id} is {statuses[run_id][0]}: only a finished run has final weights to use")
    folder = runs_root / run_id / FINAL_DIR
    display = name or (statuses or {}).get(run_id, ("", None))[1] or run_id
    model = read_trained_model(folder, name=display, registered=True)
    registry = _registry(runs_root)
    registry[run_id] = {"name": display, "path": str(folder.resolve()), "kind": model.kind,
                        "registered_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    handle, temporary = tempfile.mkstemp(dir=runs_root, prefix=".registry-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(registry, stream, indent=2)
    os.replace(temporary, runs_root / REGISTRY_FILE)
    logger.info("registered %s (%s) for the studio", run_id, model.kind)
    return model


# Cards written before the one model-card schema: kind -> (preset checkpoint, card key of its file).
_LEGACY_WEIGHTS = {
    "tryon_weights": (("tryon_catvton", "weights_file"),),
    "tryoff_weights": (("tryoff_anyone", "weights_file"),),
    "dressing_model": (("dressing_imagdressing", "checkpoint"), ("dressing_slot_loras", "slot_loras")),
}


def studio_checkpoints(model: TrainedModel) -> list[tuple[str, Path]]:
    """``[(preset checkpoint name, weights file), ...]`` that "Use in studio" swaps in for ``model``.

    Read from the card's ``weights`` mapping (older cards: ``checkpoint_key`` + ``weights``, or the per-kind
    keys of :data:`_LEGACY_WEIGHTS`). Empty for a whole-folder model (a garment model, listed by the Try-on
    tab instead). ValueError when a file is missing or points outside the model folder.
    """
    card = model.card or {}
    weights = card.get("weights")
    if isinstance(weights, dict):
        pairs = list(weights.items())
    elif card.get("checkpoint_key") and weights:
        pairs = [(card["checkpoint_key"], weights)]
    else:
        pairs = [(name, card[key]) for name, key in _LEGACY_WEIGHTS.get(model.kind, ()) if card.get(key)]
    found = []
    root = model.path.resolve()
    for name, file in pairs:
        path = (model.path / str(file)).resolve()
        if root not in path.parents:
            raise ValueError(f"{model.path}: the model card points outside its folder ({file})")
        if not path.is_file():
            raise ValueError(f"{model.path}: the model card names {file}, which is not there")
        found.append((str(name), path))
    return found
