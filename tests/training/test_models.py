"""Listing and registering trained models (run folders' final/atelier_model.json) without training."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from training.jobstore import JobStore
from training.models import (
    REGISTRY_FILE, list_trained_models, read_trained_model, register_in_studio, studio_checkpoints,
)


def fake_run(runs_root: Path, store: JobStore, run_id: str, status: str, kind: str = "garment_model",
             prompt: str = "red sweater", created: str = "2026-01-01T10:00:00", name: str | None = None) -> Path:
    run_dir = runs_root / run_id
    final = run_dir / "final"
    final.mkdir(parents=True)
    card = {"kind": kind, "method": "garment_finetune", "base_model": "tiny/inpaint", "prompt": prompt,
            "run_id": run_id, "created_at": created}
    (final / "atelier_model.json").write_text(json.dumps(card))
    record = store.create("garment_finetune", run_dir, {}, name=name, run_id=run_id)
    if status != "queued":
        store.update(record.id, status=status, ended_at=time.time())
    return final


def test_lists_only_finished_runs_newest_first_and_filters_kind(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    old = fake_run(tmp_path, store, "run-a", "finished", created="2026-01-01T10:00:00", name="first sweater")
    new = fake_run(tmp_path, store, "run-b", "finished", prompt="blue dress", created="2026-02-01T10:00:00")
    fake_run(tmp_path, store, "run-c", "failed")  # half-exported folder of a crashed run: never listed
    fake_run(tmp_path, store, "run-d", "finished", kind="colour_adapter")
    (tmp_path / "run-e" / "final").mkdir(parents=True)
    (tmp_path / "run-e" / "final" / "atelier_model.json").write_text("{not json")

    models = list_trained_models(tmp_path, kind="garment_model")
    assert [m.path for m in models] == [new, old]
    assert models[0].prompt == "blue dress" and models[0].run_id == "run-b" and models[0].name == "run-b"
    assert models[1].name == "first sweater" and models[1].base_model == "tiny/inpaint"
    assert {m.kind for m in list_trained_models(tmp_path)} == {"garment_model", "colour_adapter"}
    assert list_trained_models(tmp_path / "missing") == []


def test_register_in_studio(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    final = fake_run(tmp_path, store, "run-a", "finished")
    fake_run(tmp_path, store, "run-b", "stopped")
    store.create("garment_finetune", tmp_path / "run-c", {}, run_id="run-c")

    assert list_trained_models(tmp_path, registered_only=True) == []
    model = register_in_studio(tmp_path, "run-a", name="Red sweater v1")
    assert model.registered and model.name == "Red sweater v1" and model.path == final
    listed = list_trained_models(tmp_path, kind="garment_model", registered_only=True)
    assert [(m.run_id, m.name, m.registered) for m in listed] == [("run-a", "Red sweater v1", True)]
    assert json.loads((tmp_path / REGISTRY_FILE).read_text())["run-a"]["kind"] == "garment_model"
    register_in_studio(tmp_path, "run-a")  # idempotent; keeps working without a new name
    assert len(json.loads((tmp_path / REGISTRY_FILE).read_text())) == 1

    with pytest.raises(ValueError, match="run-b is stopped"):
        register_in_studio(tmp_path, "run-b")
    with pytest.raises(ValueError, match="run-c is queued"):
        register_in_studio(tmp_path, "run-c")
    with pytest.raises(ValueError, match="not valid"):
        register_in_studio(tmp_path, "../run-a")


def test_without_a_store_cards_are_read_directly(tmp_path):
    final = tmp_path / "some-run" / "final"
    final.mkdir(parents=True)
    (final / "atelier_model.json").write_text(json.dumps({"kind": "garment_model", "trigger": "coat"}))
    (model,) = list_trained_models(tmp_path)
    assert model.prompt == "coat" and model.run_id == "some-run" and model.created_at
    with pytest.raises(ValueError, match="no atelier_model.json"):
        read_trained_model(tmp_path / "nothing")


def test_studio_checkpoints_of_every_kind(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    final = fake_run(tmp_path, store, "run-a", "finished", kind="garment_color")
    card = json.loads((final / "atelier_model.json").read_text())
    for name in ("color_adapter.safetensors", "model.safetensors", "imagdressing.safetensors", "slots.safetensors"):
        (final / name).write_bytes(b"weights")

    def swapped(**fields):
        (final / "atelier_model.json").write_text(json.dumps({**card, **fields}))
        return studio_checkpoints(list_trained_models(tmp_path, kind=fields.get("kind", card["kind"]))[0])

    path = lambda name: (final / name).resolve()  # noqa: E731
    # the one schema: preset checkpoint name -> file
    assert swapped(weights={"garment_color": "color_adapter.safetensors"}) == [("garment_color", path("color_adapter.safetensors"))]
    assert swapped(kind="tryon_weights", weights={"tryon_catvton": "model.safetensors"}) == [("tryon_catvton", path("model.safetensors"))]
    assert swapped(kind="dressing_model", weights={"dressing_imagdressing": "imagdressing.safetensors",
                                                   "dressing_slot_loras": "slots.safetensors"}) == [
        ("dressing_imagdressing", path("imagdressing.safetensors")), ("dressing_slot_loras", path("slots.safetensors"))]
    # cards written before it keep working
    assert swapped(checkpoint_key="garment_color", weights="color_adapter.safetensors") == [("garment_color", path("color_adapter.safetensors"))]
    assert swapped(kind="tryoff_weights", weights_file="model.safetensors", weights=None) == [("tryoff_anyone", path("model.safetensors"))]
    assert swapped(kind="dressing_model", checkpoint="imagdressing.safetensors", slot_loras="slots.safetensors",
                   weights=None) == [("dressing_imagdressing", path("imagdressing.safetensors")),
                                     ("dressing_slot_loras", path("slots.safetensors"))]
    fake_run(tmp_path, store, "run-b", "finished")
    garment = [m for m in list_trained_models(tmp_path) if m.kind == "garment_model"][0]
    assert studio_checkpoints(garment) == []  # a whole pipeline: listed by the try-on tab instead
    with pytest.raises(ValueError, match="outside its folder"):
        swapped(weights={"x": "../../evil"})
    with pytest.raises(ValueError, match="not there"):
        swapped(weights={"garment_color": "gone.safetensors"})


