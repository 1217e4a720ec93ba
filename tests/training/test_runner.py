"""The run manager with REAL trainer processes: progress, stop, queue, crash + reconcile, resume."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.training.test_datasets import make_garment_dataset
from training.config import ConfigError
from training.runner import MethodSpec, RunManager

START_TIMEOUT = 90.0  # a trainer imports torch/diffusers first (~10 s here, more on a busy machine)


def tiny_config(tiny_models: Path, data: Path, **values) -> dict:
    return {"pretrained_model": str(tiny_models / "inpaint"), "dataset": str(data), "device": "cpu",
            "resolution": 32, "min_image_size": 16, "learning_rate": 1e-4, "sample_steps": 2,
            "save_every": 0, "sample_every": 0, **values}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_garment_dataset(tmp_path_factory.mktemp("garment") / "data")


@pytest.fixture
def cleanup():
    """Kill any trainer a failing test leaves behind (they are detached, so nothing else would)."""
    managers: list[RunManager] = []
    yield managers.append
    for manager in managers:
        for record in manager.list_runs():
            if record.pgid and not record.is_final:
                try:
                    os.killpg(record.pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def test_submit_rejects_bad_config_before_any_process(tmp_path, data):
    manager = RunManager(tmp_path / "jobs.db", tmp_path / "runs")
    with pytest.raises(ConfigError, match="learning_rate: 9.0 is out of range"):
        manager.submit("garment_finetune", {"dataset": str(data), "learning_rate": 9.0})
    with pytest.raises(ValueError, match="unknown training method 'nope'"):
        manager.submit("nope", {})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        manager.submit("garment_finetune", {"dataset": str(empty)})
    assert manager.list_runs() == [] and list((tmp_path / "runs").iterdir()) == []


def test_progress_stop_queue_crash_reconcile_resume(tiny_models, data, tmp_path, cleanup):
    """One scenario with two real trainers (each start-up imports torch + diffusers, ~10 s of CPU)."""
    manager = RunManager(tmp_path / "jobs.db", tmp_path / "runs", python=sys.executable, max_concurrent=1)
    cleanup(manager)
    long_id = manager.submit("garment_finetune", tiny_config(tiny_models, data, max_train_steps=100_000,
                                                             save_every=5), name="long")
    second_id = manager.submit("garment_finetune", tiny_config(tiny_models, data, max_train_steps=100_000,
                                                               save_every=3), name="second")
    assert manager.get(long_id).status == "running" and manager.get(second_id).status == "queued"
    assert (manager.run_dir(long_id) / "config.yaml").is_file()

    # progress is visible in the store while the trainer runs; sample on request
    record = manager.wait(long_id, START_TIMEOUT, until=lambda r: r.step >= 3 or r.is_final)
    assert record.status == "running" and record.step >= 3, manager.log_tail(long_id)
    manager.request_sample(long_id)
    manager.wait(long_id, 30, until=lambda r: bool(manager.samples(long_id)) or r.is_final)
    assert manager.samples(long_id)
    assert manager.get(second_id).status == "queued"  # one GPU job at a time

    # stop: the flag makes the trainer save a final checkpoint and exit within seconds
    began = time.monotonic()
    record = manager.stop(long_id, timeout=15)
    assert record.status == "stopped" and time.monotonic() - began < 15, manager.log_tail(long_id)
    stopped_at = record.step
    assert manager.checkpoints(long_id)[-1].name == f"step-{stopped_at:08d}"
    rows = manager.metrics(long_id)
    assert rows[-1]["step"] == stopped_at and {"loss", "lr", "eta_s", "gpu_mem_mb", "time"} <= set(rows[0])

    # the queued run starts once the GPU is free
    record = manager.wait(second_id, START_TIMEOUT,
                          until=lambda r: (r.step >= 4 and bool(manager.checkpoints(second_id))) or r.is_final)
    assert record.status == "running", manager.log_tail(second_id)
    assert record.started_at >= manager.get(long_id).ended_at

    # the trainer dies hard (kill -9, OOM killer); a restarted app reconciles it as failed with the log tail
    os.kill(record.pid, signal.SIGKILL)
    time.sleep(0.3)
    checkpoints = manager.checkpoints(second_id)
    restarted = RunManager(manager.store_path, manager.runs_root)  # a new app process: no child handles
    assert restarted.reconcile() == [second_id]
    record = restarted.get(second_id)
    assert record.status == "failed" and record.ended_at is not None
    assert "last log lines" in record.error and "step" in record.error
    assert restarted.checkpoints(second_id) == checkpoints and checkpoints
    assert restarted.reconcile() == []

    # resume = a new run from the latest checkpoint (the trainer side is tested in test_garment_finetune)
    resumed_id = restarted.resume(long_id, max_train_steps=stopped_at + 10, start=False)
    resumed = restarted.get(resumed_id)
    assert resumed.resumed_from == long_id and resumed.status == "queued" and resumed.run_dir != record.run_dir
    assert resumed.config["resume_from"] == str(restarted.checkpoints(long_id)[-1])
    assert restarted.stop(resumed_id).status == "stopped"  # cancelling a queued run needs no process
    never_ran = restarted.submit("garment_finetune", tiny_config(tiny_models, data), start=False)
    with pytest.raises(ValueError, match="stop it before resuming"):
        restarted.resume(never_ran)
    restarted.stop(never_ran)
    with pytest.raises(ValueError, match="no checkpoint"):
        restarted.resume(never_ran)


def test_stop_escalates_to_kill_when_the_trainer_ignores_it(tmp_path, data, cleanup):
    """A trainer deaf to the flag, SIGINT and SIGTERM still ends 'stopped' (blocking and polled stops)."""
    methods = {"stubborn": MethodSpec("tests.training.test_runner", "training.config:GarmentFinetuneConfig")}
    manager = RunManager(tmp_path / "jobs.db", tmp_path / "runs", methods=methods, max_concurrent=2)
    cleanup(manager)
    config = {"dataset": str(data), "pretrained_model": "unused"}
    blocking, polled = manager.submit("stubborn", config), manager.submit("stubborn", config)
    deaf = lambda r: b"ready" in (Path(r.run_dir) / "train.log").read_bytes()  # noqa: E731
    manager.wait(blocking, 30, until=deaf)
    manager.wait(polled, 30, until=deaf)

    record = manager.stop(blocking, timeout=0.5, grace=0.5)
    assert record.status == "stopped" and record.exit_code == -signal.SIGKILL and "stopped by signal" in record.error

    manager.stop_timeout = 0.3
    assert manager.stop(polled, wait=False).status == "stopping"
    record = manager.wait(polled, 10)
    assert record.status == "stopped" and record.exit_code == -signal.SIGKILL


if __name__ == "__main__":  # the "stubborn" trainer used above: ignores every polite way to stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    while True:
        time.sleep(0.1)
