"""The training tab's handlers on plain values: dataset validation, captions, recipes, starting a tiny run."""

from __future__ import annotations

import json
import os
import signal
import zipfile
from pathlib import Path

import gradio as gr
import pytest
import yaml

from pipelines.service import StudioService
from studio.components import StudioContext
from studio.tabs.training import FORM_FIELDS, TrainingHandlers, form_values, loss_frame, run_status_text, shown_fields
from tests.training.test_datasets import make_garment_dataset, zip_folder
from training.api import build_config, default_recipe, load_recipe, method_fields, recipe_names, safe_name
from training.runner import RunManager


@pytest.fixture
def handlers(tmp_path, tiny_models):
    runs = RunManager(tmp_path / "runs" / "jobs.sqlite", tmp_path / "runs")
    service = StudioService("tiny", device="cpu", models_dir=tiny_models.parent)
    yield TrainingHandlers(StudioContext(service=service, outputs=None, runs=runs))
    for record in runs.list_runs():  # trainers are detached: never leave one behind
        if record.pgid and not record.is_final:
            try:
                os.killpg(record.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def assert_no_run(handlers):
    assert handlers.runs.list_runs() == []
    assert [p.name for p in handlers.runs.runs_root.iterdir() if p.name not in ("jobs.sqlite", "datasets")
            and not p.name.startswith("jobs.sqlite")] == []


def test_empty_zip_is_rejected_before_any_run(handlers, tmp_path):
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(gr.Error, match="no images"):
        handlers.load_dataset([str(empty)], None)
    assert_no_run(handlers)
    assert list((handlers.datasets_root).iterdir()) == []  # the rejected upload's folder is removed


def test_non_image_is_named(handlers, tmp_path):
    data = make_garment_dataset(tmp_path / "data", count=2, size=(64, 64))
    (data / "notes.pdf").write_bytes(b"%PDF-1.4")
    with pytest.raises(gr.Error, match=r"notes\.pdf: not an image"):
        handlers.load_dataset([str(zip_folder(data, tmp_path / "garment.zip"))], None)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(gr.Error, match=r"broken\.png: not a readable image"):
        handlers.load_dataset([str(bad)], None)
    with pytest.raises(gr.Error, match=r"notes\.pdf: not an image, mask, caption or zip"):
        handlers.load_dataset([str(data / "notes.pdf")], None)
    assert_no_run(handlers)


def test_zip_traversal_is_rejected(handlers, tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../../escaped.png", b"x")
    with pytest.raises(gr.Error, match=r"points outside the dataset folder"):
        handlers.load_dataset([str(evil)], None)
    assert not (tmp_path / "escaped.png").exists() and not (handlers.datasets_root.parent / "escaped.png").exists()
    assert_no_run(handlers)


def test_upload_is_copied_never_overwritten_and_captions_write_sidecars(handlers, tmp_path):
    data = make_garment_dataset(tmp_path / "data", count=2, size=(64, 64))
    archive = zip_folder(data, tmp_path / "my garment.zip", wrapper="my garment/")
    first, rows, summary = handlers.load_dataset([str(archive)], None)
    second, _, _ = handlers.load_dataset([str(archive)], None)
    assert first != second and Path(first).parent == Path(second).parent == handlers.datasets_root
    assert "2 images" in summary and "2 with masks" in summary
    assert rows == [["my garment/red sweater (1).png", "red sweater"], ["my garment/red sweater (2).png", "red sweater"]]

    rows[1][1] = "red wool sweater, back view"
    assert handlers.save_captions(first, rows) == "Saved 1 caption(s)."
    sidecar = Path(first) / "my garment" / "red sweater (2).txt"
    assert sidecar.read_text().strip() == "red wool sweater, back view"
    assert not (Path(second) / "my garment" / "red sweater (2).txt").exists()
    _, reloaded, _ = handlers.load_dataset(None, first)  # a server folder is read in place
    assert reloaded[1][1] == "red wool sweater, back view"
    with pytest.raises(gr.Error, match="not an image of this dataset"):
        handlers.save_captions(first, [["../../etc/passwd", "x"]])
    with pytest.raises(gr.Error, match="caption must not be empty"):
        handlers.save_captions(first, [["my garment/red sweater (1).png", "  "]])

    # several loose files keep their names (captions come from them), sanitised
    files = [str(p) for p in sorted(data.iterdir())]
    folder, rows, _ = handlers.load_dataset(files, None)
    assert [row[0] for row in rows] == ["red sweater (1).png", "red sweater (2).png"]
    assert safe_name("../a/b\\..\\evil name?.png") == "evil name_.png"


def test_recipes_by_name_and_tiny_substitution(tiny_models):
    assert {"garment_finetune", "garment_finetune_tiny"} <= set(recipe_names("garment_finetune"))
    assert default_recipe("garment_finetune", tiny=True) == "garment_finetune_tiny"
    assert default_recipe("garment_finetune", tiny=False) == "garment_finetune"
    recipe = load_recipe("garment_finetune_tiny", tiny_models)
    assert recipe["pretrained_model"] == f"{tiny_models}/inpaint"
    values = form_values("garment_finetune", recipe)
    assert values["max_train_steps"] == 12 and values["resolution"] == 64 and values["use_lora"] is False
    assert values["resolution"] == 64 and recipe["resolution"] == 64  # the recipe's value, not the default 512
    config = build_config("garment_finetune", yaml.safe_dump(recipe), {**values, "learning_rate": 3e-4}, "/data")
    assert config["learning_rate"] == 3e-4 and config["dataset"] == "/data" and config["instance_prompt"] is None
    with pytest.raises(ValueError, match="Load a dataset first"):
        build_config("garment_finetune", "", values, None)


def test_bad_settings_are_refused_before_any_process(handlers, tmp_path):
    data = make_garment_dataset(tmp_path / "data", count=2, size=(64, 64))
    folder, _, _ = handlers.load_dataset(None, str(data))
    recipe = load_recipe("garment_finetune_tiny", handlers.tiny_root)
    form = form_values("garment_finetune", recipe)
    with pytest.raises(gr.Error, match=r"learning_rate: 9.0 is out of range"):
        handlers.submit("garment_finetune", yaml.safe_dump(recipe), {**form, "learning_rate": 9.0}, folder)
    with pytest.raises(gr.Error, match=r"resolution: 60 is not a multiple of 8"):
        handlers.submit("garment_finetune", yaml.safe_dump(recipe), {**form, "resolution": 60}, folder)
    assert_no_run(handlers)


def test_starting_a_tiny_run_creates_a_run_record(handlers, tmp_path):
    data = make_garment_dataset(tmp_path / "data", count=2, size=(64, 64))
    folder, _, _ = handlers.load_dataset(None, str(data))
    recipe = load_recipe("garment_finetune_tiny", handlers.tiny_root)
    form = {**form_values("garment_finetune", recipe), "resolution": 32, "max_train_steps": 2}
    run_id = handlers.submit("garment_finetune", yaml.safe_dump(recipe), form, folder, name="tiny", start=False)
    record = handlers.runs.get(run_id)
    assert record.status == "queued" and record.name == "tiny" and record.total_steps == 2
    assert record.config["dataset"] == folder and record.config["resolution"] == 32
    assert (handlers.runs.run_dir(run_id) / "config.yaml").is_file()
    # stop/sample on a queued run: stop cancels, sample is refused with a sentence
    with pytest.raises(gr.Error, match="not running"):
        handlers.request(run_id, "sample")
    assert "stopped" in handlers.stop(run_id)
    with pytest.raises(gr.Error, match="has no checkpoint"):
        handlers.resume(run_id)
    with pytest.raises(gr.Error, match="only a finished run"):
        handlers.use_in_studio(run_id)


def test_loss_curve_of_a_resumed_run_includes_its_predecessor(handlers):
    runs = handlers.runs
    store = runs.store
    first = store.create("garment_finetune", runs.runs_root / "a", {}, run_id="a", total_steps=6)
    second = store.create("garment_finetune", runs.runs_root / "b", {}, run_id="b", total_steps=6, resumed_from="a")
    for record, steps in ((first, range(1, 6)), (second, range(4, 7))):  # "a" crashed after its step-3 checkpoint
        Path(record.run_dir).mkdir()
        lines = [json.dumps({"step": step, "loss": step / 10, "eta_s": 1.0, "gpu_mem_mb": None, "run": record.id})
                 for step in steps]
        (Path(record.run_dir) / "metrics.jsonl").write_text("\n".join(lines) + "\n{half a line")
    frame = loss_frame(runs, "b")
    assert frame["step"].tolist() == [1, 2, 3, 4, 5, 6]
    store.update("b", status="running", step=6)
    assert "status: **running** · step 6/6 · ETA 1s · GPU memory n/a (CPU)" in run_status_text(runs, "b")


def test_every_registered_method_has_a_form_and_recipes(handlers):
    from training.runner import METHODS

    for method in METHODS:
        names = recipe_names(method)
        assert all(name == method or name.startswith(f"{method}_") for name in names)
        recipe = load_recipe(default_recipe(method, tiny=True), handlers.tiny_root) if names else {}
        values = form_values(method, recipe)
        fields = method_fields(method)
        shown = shown_fields(method)
        # a field is shown exactly when the method has it; a shown field starts at the recipe's value or the default
        assert shown and shown == [name for name in FORM_FIELDS if name in fields]
        for name in FORM_FIELDS:
            expected = recipe.get(name, fields[name]["default"]) if name in shown else None
            assert values[name] == expected, (method, name)
        config = build_config(method, yaml.safe_dump(recipe), {name: values[name] for name in shown}, "/data")
        assert set(config) <= set(fields), (method, set(config) - set(fields))
    # only the square-crop fine-tune trains at one resolution; the other methods use height x width
    assert [m for m in METHODS if "resolution" in shown_fields(m)] == ["garment_finetune"]


def test_use_in_studio_routes_every_kind_and_survives_a_restart(tmp_path, models_dir):
    """Try-on, try-off and dressing runs swap their weights into the checkpoints those tabs load (the bug:
    their cards named no checkpoint, so nothing was swapped); a new app process swaps them in again."""
    from tests.training.test_models import fake_run
    from training.jobstore import JobStore

    runs_root = tmp_path / "runs"
    runs = RunManager(runs_root / "jobs.sqlite", runs_root)
    store = JobStore(runs_root / "jobs.sqlite")
    kinds = {
        "run-tryon": ("tryon_weights", {"tryon_catvton": "attention/model.safetensors"}),
        "run-tryoff": ("tryoff_weights", {"tryoff_anyone": "model.safetensors"}),
        "run-dress": ("dressing_model", {"dressing_imagdressing": "imagdressing.safetensors",
                                         "dressing_slot_loras": "slot_loras.safetensors"}),
        "run-lem": ("garment_lem", {"garment_lem": "lem.safetensors"}),
    }
    for run_id, (kind, weights) in kinds.items():
        final = fake_run(runs_root, store, run_id, "finished", kind=kind)
        card = json.loads((final / "atelier_model.json").read_text())
        for file in weights.values():
            (final / file).parent.mkdir(parents=True, exist_ok=True)
            (final / file).write_bytes(b"trained weights")
        (final / "atelier_model.json").write_text(json.dumps({**card, "weights": weights}))

    def handlers_of_a_new_app():
        service = StudioService("tiny", device="cpu", models_dir=models_dir)
        return service, TrainingHandlers(StudioContext(service=service, outputs=None, runs=runs))

    service, handlers = handlers_of_a_new_app()
    before = {name: service.weights_in_use(name) for _, weights in kinds.values() for name in weights}
    for run_id, (kind, weights) in kinds.items():
        model, _, swapped = handlers.use_in_studio(run_id)
        assert swapped == list(weights), kind
        for name, file in weights.items():
            assert service.weights_in_use(name) == str((runs_root / run_id / "final" / file).resolve())
            assert service.weights_in_use(name) != before[name]
    restarted, handlers = handlers_of_a_new_app()
    assert restarted.weights_in_use("tryon_catvton") == before["tryon_catvton"]  # a fresh registry: preset values
    handlers.restore_registered()
    for run_id, (_, weights) in kinds.items():
        for name, file in weights.items():
            assert restarted.weights_in_use(name) == str((runs_root / run_id / "final" / file).resolve())
