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
from training.runner import RunManager

START_TIMEOUT = 90.0  # a trainer imports torch/diffusers first (~10 s here, more on a busy machine)


def tiny_config(tiny_models: Path, data: Path, **values) -> dict:
    return {"pretrained_model": str(tiny_models / "inpaint"), "dataset": str(data), "device": "cpu",
            "resolution": 32, "min_image_size": 16, "learning_rate": 1e-4, "sample_steps": 2,
            "save_every": 0, "sample_every": 0, **values}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_garment_dataset(tmp_path_factory.mktemp("garment") / "data")


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


def test_progress_stop_queue_resume_crash_reconcile(tiny_models, data, tmp_path):
    manager = RunManager(tmp_path / "jobs.db", tmp_path / "runs", python=sys.executable, max_concurrent=1)
    long_id = manager.submit("garment_finetune", tiny_config(tiny_models, data, max_train_steps=100_000,
                                                             save_every=5), name="long")
    short_id = manager.submit("garment_finetune", tiny_config(tiny_models, data, max_train_steps=3))
    assert manager.get(long_id).status == "running" and manager.get(short_id).status == "queued"
    (Path(manager.get(long_id).run_dir) / "config.yaml").is_file()

    record = manager.wait(long_id, START_TIMEOUT, until=lambda r: r.step >= 3 or r.is_final)
    assert record.status == "running" and record.step >= 3, manager.log_tail(long_id)
    manager.request_sample(long_id)
    manager.wait(long_id, 30, until=lambda r: bool(manager.samples(long_id)) or r.is_final)
    assert manager.samples(long_id)
    assert manager.get(short_id).status == "queued"  # one GPU job at a time

    began = time.monotonic()
    record = manager.stop(long_id, timeout=15)
    assert record.status == "stopped" and time.monotonic() - began < 15, manager.log_tail(long_id)
    stopped_at = record.step
    assert manager.checkpoints(long_id)[-1].name == f"step-{stopped_at:08d}"  # final checkpoint on stop
    rows = manager.metrics(long_id)
    assert rows[-1]["step"] == stopped_at and {"loss", "lr", "eta_s", "gpu_mem_mb", "time"} <= set(rows[0])

    record = manager.wait(short_id, START_TIMEOUT)  # the queued run started when the GPU freed
    assert record.status == "finished" and record.step == 3, manager.log_tail(short_id)
    assert record.started_at >= manager.get(long_id).ended_at
    assert manager.final_weights(short_id) is not None

    # resume: a new run continues the step count in its own folder; the old files stay as they were
    old_checkpoints = [path.name for path in manager.checkpoints(long_id)]
    resumed_id = manager.resume(long_id, max_train_steps=100_000)
    assert manager.get(resumed_id).resumed_from == long_id
    record = manager.wait(resumed_id, START_TIMEOUT, until=lambda r: r.step >= stopped_at + 6 or r.is_final)
    assert record.status == "running", manager.log_tail(resumed_id)
    assert manager.metrics(resumed_id)[0]["step"] == stopped_at + 1
    assert [path.name for path in manager.checkpoints(long_id)] == old_checkpoints

    # the trainer dies hard (kill -9, OOM killer); a restarted app reconciles it as failed with the log tail
    record = manager.wait(resumed_id, 30, until=lambda r: bool(manager.checkpoints(resumed_id)) or r.is_final)
    assert record.status == "running"
    os.kill(record.pid, signal.SIGKILL)
    time.sleep(0.3)
    checkpoints = manager.checkpoints(resumed_id)
    assert checkpoints and int(checkpoints[0].name.split("-")[1]) > stopped_at  # numbered after the old ones
    restarted = RunManager(manager.store_path, manager.runs_root)  # a new app process: no child handles
    assert restarted.reconcile() == [resumed_id]
    record = restarted.get(resumed_id)
    assert record.status == "failed" and record.ended_at is not None
    assert "last log lines" in record.error and "step" in record.error
    assert restarted.checkpoints(resumed_id) == checkpoints
    assert restarted.reconcile() == []
