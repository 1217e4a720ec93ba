"""Headless Chromium drives the training tab: upload a zip, start a tiny fine-tune, stop, resume, finish."""

from __future__ import annotations

import os
import re
import signal
import zipfile

import pytest
from PIL import Image, ImageDraw

from tests.studio.conftest import screenshot

pytestmark = pytest.mark.browser

STEPS = 200
FINISH_TIMEOUT = 600_000  # ms: the resumed run's remaining steps (seconds when idle, minutes on a crowded machine)
START_TIMEOUT = 120_000  # ms: the trainer imports torch + diffusers before its first step (~10 s, more when busy)


def tiny_dataset_zip(folder, count: int = 3):
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "blue shirt.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for index in range(1, count + 1):
            image = Image.new("RGB", (64, 64), (30 * index, 60, 200))
            mask = Image.new("L", (64, 64), 0)
            ImageDraw.Draw(mask).rectangle((12, 12, 52, 52), fill=255)
            for name, picture in ((f"blue shirt ({index}).png", image), (f"blue shirt ({index})_mask.png", mask)):
                path = folder / name
                picture.save(path)
                zipped.write(path, name)
    return archive


def status_text(page) -> str:
    return page.locator("#training-status").inner_text()


def wait_status(page, pattern: str, timeout: int) -> str:
    page.wait_for_function(
        "(pattern) => new RegExp(pattern).test(document.querySelector('#training-status').innerText)",
        arg=pattern, timeout=timeout,
    )
    return status_text(page)


RUN_ID_JS = "() => { const e = document.querySelector('#training-run-id textarea, #training-run-id input'); return e ? e.value : '' }"


def selected_run(page) -> str:
    return page.evaluate(RUN_ID_JS)


def history_cell(page, text: str):
    """A cell of the runs table (Gradio 6 renders a virtual grid; hidden <td>s only measure the columns)."""
    return page.locator("#training-history [role=gridcell]", has_text=text).first


def set_number(page, elem_id: str, value: int) -> None:
    field = page.locator(f"#{elem_id} input[type=number]")
    field.fill(str(value))
    field.press("Tab")


def test_training_tab_start_stop_resume(studio, page, tmp_path):
    runs = studio["runs"]
    try:
        page.goto(studio["url"])
        page.get_by_role("tab", name="Training").click()
        page.locator("#training-upload").wait_for(timeout=90_000)

        # 1. upload a zip: validated at once, the caption table fills
        page.locator("#training-upload input[type=file]").set_input_files(str(tiny_dataset_zip(tmp_path)))
        page.wait_for_function(
            "() => document.querySelector('#training-dataset-summary').innerText.includes('3 images')",
            timeout=90_000,
        )
        assert "blue shirt" in page.locator("#training-captions").inner_text()

        # 2. the tiny recipe is pre-selected on the tiny preset; make the run long enough to stop mid-way (an idle
        # 2-core machine trains the tiny model at ~30 ms a step: 200 steps stay visible for several polls)
        assert "tiny" in page.locator("#training-recipe input").input_value()
        set_number(page, "training-max-train-steps", STEPS)
        set_number(page, "training-resolution", 32)
        page.locator("#training-start").click()

        # 3. live progress: the step count rises in the page
        first = wait_status(page, rf"status: running · step [1-9]\d*/{STEPS}", START_TIMEOUT)
        step = int(re.search(rf"step (\d+)/{STEPS}", first).group(1))
        page.wait_for_function(
            "(n) => { const m = /step (\\d+)\\//.exec(document.querySelector('#training-status').innerText);"
            " return m && Number(m[1]) > n }", arg=step, timeout=90_000,
        )

        # 4. Stop always ends in a final state, with a checkpoint to resume from
        page.locator("#training-stop").click()
        stopped = wait_status(page, r"status: (stopped|finished)", 60_000)
        first_id = selected_run(page)
        assert runs.get(first_id).status in ("stopped", "finished"), stopped

        # 5. Resume continues the step count in a new run and finishes
        if "stopped" in stopped:
            page.locator("#training-resume").click()
            page.wait_for_function(f"(old) => {{ const v = ({RUN_ID_JS})(); return v && v !== old }}",
                                   arg=first_id, timeout=60_000)
            wait_status(page, rf"status: finished · step {STEPS}/{STEPS}", FINISH_TIMEOUT)
            resumed = runs.get(selected_run(page))
            assert resumed.resumed_from == first_id and resumed.status == "finished"

        # 6. the loss curve and the run history are on the page
        page.locator("#training-loss canvas, #training-loss svg").first.wait_for(timeout=60_000)
        history = page.locator("#training-history").inner_text()
        assert first_id in history and "finished" in history
        screenshot(page, "training")
        final_id = selected_run(page)

        # 7. clicking a run in the history shows its details and config; then back to the finished one
        history_cell(page, first_id).click()
        page.wait_for_function(
            "(id) => document.querySelector('#training-details').innerText.includes(id)", arg=first_id, timeout=60_000
        )
        assert f"max_train_steps: {STEPS}" in page.locator("#training-details").inner_text()
        history_cell(page, final_id).click()
        page.wait_for_function(f"(id) => ({RUN_ID_JS})() === id", arg=final_id, timeout=60_000)

        # 8. "Use in studio" registers the model and opens the try-on tab when it is there
        page.locator("#training-use").click()
        page.wait_for_function(
            "() => document.querySelector('#training-message').innerText.includes('Registered')", timeout=60_000
        )
        assert "tryon_garment_model" in studio["demo"].atelier_context.targets
        page.wait_for_selector("#tab-tryon", state="visible", timeout=60_000)
        # ... where the trained garment model is now the selected "garment model"
        page.wait_for_function(
            "() => document.querySelector('#tryon-garment-model input').value.length > 0", timeout=60_000
        )
        selected = page.locator("#tryon-garment-model input").input_value()
        assert "garment" in selected.lower() or final_id in selected or "shirt" in selected.lower(), selected
    finally:
        for record in runs.list_runs():  # shown by pytest only when the test fails
            print(record.id, record.status, record.step, record.total_steps, record.error)
            print(runs.log_tail(record.id, 15))
        print("page status:", status_text(page))
        for record in runs.list_runs():  # trainers are detached: never leave one behind
            if record.pgid and not record.is_final:
                try:
                    os.killpg(record.pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


USE_KINDS = {  # run kind -> (its card's weights: preset checkpoint -> file, the tab "Use in studio" opens)
    "garment_color": ({"garment_color": "color_adapter.safetensors"}, "design"),
    "garment_gam": ({"garment_gam": "gam.safetensors"}, "design"),
    "garment_lem": ({"garment_lem": "lem.safetensors"}, "design"),
    "tryon_weights": ({"tryon_catvton": "attention/model.safetensors"}, "tryon"),
    "tryoff_weights": ({"tryoff_anyone": "model.safetensors"}, "tryoff"),
    "dressing_model": ({"dressing_imagdressing": "imagdressing.safetensors",
                        "dressing_slot_loras": "slot_loras.safetensors"}, "dressing"),
}


def test_use_in_studio_opens_the_tab_of_every_kind(studio, page):
    """For each run kind: select the finished run in the history, click "Use in studio" -> the page says which
    checkpoints its weights now serve, the tab that uses them opens, and the service serves the run's files."""
    from training.common import write_model_card

    runs, service = studio["runs"], studio["service"]
    names = [name for weights, _ in USE_KINDS.values() for name in weights]
    before = {name: service.weights_in_use(name) for name in names}
    run_ids = {}
    for kind, (weights, _) in USE_KINDS.items():
        run_id = f"use-{kind.replace('_', '-')}"
        final = runs.runs_root / run_id / "final"
        for file in weights.values():
            (final / file).parent.mkdir(parents=True, exist_ok=True)
            (final / file).write_bytes(b"weights of " + kind.encode())
        write_model_card(final, {"kind": kind, "method": "test", "weights": weights, "base_model": "tiny",
                                 "steps": 1, "run_id": run_id})
        runs.store.create("test", runs.runs_root / run_id, {}, name=f"{kind} run", run_id=run_id)
        runs.store.update(run_id, status="finished")
        run_ids[kind] = run_id
    try:
        page.goto(studio["url"])
        for kind, (weights, tab) in USE_KINDS.items():
            page.get_by_role("tab", name="Training").click()
            cell = history_cell(page, run_ids[kind])
            cell.wait_for(timeout=60_000)
            cell.click()
            page.wait_for_function(f"(id) => ({RUN_ID_JS})() === id", arg=run_ids[kind], timeout=60_000)
            page.locator("#training-use").click()
            page.wait_for_function(
                "(id) => document.querySelector('#training-message').innerText.includes(id)",
                arg=run_ids[kind], timeout=60_000,
            )
            message = page.locator("#training-message").inner_text()
            assert f"{kind} run" in message and all(name in message for name in weights), message
            page.wait_for_selector(f"#tab-{tab}", state="visible", timeout=60_000)
            for other in {t for _, t in USE_KINDS.values()} - {tab}:
                assert not page.locator(f"#tab-{other}").is_visible(), (kind, other)
            for name, file in weights.items():
                assert service.weights_in_use(name) == str((runs.runs_root / run_ids[kind] / "final" / file).resolve())
        screenshot(page, "use-in-studio")
    finally:  # later tests generate with the preset's weights again
        for name in names:
            service.use_weights(name, None)
        assert {name: service.weights_in_use(name) for name in names} == before
        registered = runs.runs_root / "registered_models.json"
        if registered.exists():
            registered.unlink()
