"""Data-parallel runs: the launcher command, and a real 2-process run on CPU (torch's launcher, gloo)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.training.test_datasets import make_garment_dataset
from tests.training.test_runner import START_TIMEOUT, tiny_config
from training.config import ConfigError, LemConfig, load_config
from training.runner import RunManager, launch_command


def test_launch_commands():
    args = ["--config", "c.yaml"]
    assert launch_command("py", "training.gam", {}, args) == ["py", "-m", "training.gam", "--config", "c.yaml"]
    gpu = launch_command("py", "training.garment_finetune", {"num_processes": 4, "device": "auto"}, args)
    assert gpu[:6] == ["py", "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "4"]
    assert gpu[-4:] == ["-m", "training.garment_finetune", "--config", "c.yaml"]
    cpu = launch_command("py", "training.garment_finetune", {"num_processes": 2, "device": "cpu"}, args)
    assert cpu[:3] == ["py", "-m", "torch.distributed.run"] and "--nproc_per_node" in cpu


def test_methods_without_multi_process_support_refuse_it():
    with pytest.raises(ConfigError, match="num_processes: 2 -- this method trains in one process only"):
        load_config(LemConfig, {"pretrained_model": "x", "dataset": "y", "num_processes": 2})


def test_two_process_run_writes_each_step_and_file_once(tiny_models, tmp_path):
    data = make_garment_dataset(tmp_path / "data")
    manager = RunManager(tmp_path / "jobs.db", tmp_path / "runs")
    run_id = manager.submit("garment_finetune", tiny_config(tiny_models, data, max_train_steps=4, save_every=2,
                                                            num_processes=2, save_optimizer_state=False))
    try:
        record = manager.wait(run_id, START_TIMEOUT + 120, until=lambda r: r.is_final)
        assert record.status == "finished", manager.log_tail(run_id, 40)
        assert record.step == 4
        steps = [json.loads(line)["step"] for line in (manager.run_dir(run_id) / "metrics.jsonl").read_text().splitlines()]
        assert steps == [1, 2, 3, 4]  # rank 0 alone writes metrics
        assert [p.name for p in manager.checkpoints(run_id)] == ["step-00000002", "step-00000004"]
        assert manager.final_weights(run_id) is not None
        log = manager.log_tail(run_id, 400)
        assert log.count(f"run {run_id} (garment_finetune) in") == 2, log  # both ranks really ran
    finally:
        record = manager.get(run_id)
        if record.pgid and not record.is_final:
            os.killpg(record.pgid, signal.SIGKILL)


def test_two_process_stop_is_taken_by_both_ranks_at_the_same_step(tiny_models, tmp_path):
    """The stop flag is read by rank 0 and shared: both ranks save and exit cleanly (no deadlock, no kill)."""
    data = make_garment_dataset(tmp_path / "data")
    manager = RunManager(tmp_path / "jobs.db", tmp_path / "runs")
    run_id = manager.submit("garment_finetune", tiny_config(tiny_models, data, max_train_steps=100_000,
                                                            num_processes=2, save_optimizer_state=False))
    try:
        record = manager.wait(run_id, START_TIMEOUT + 60, until=lambda r: r.step >= 2 or r.is_final)
        assert record.status == "running", manager.log_tail(run_id, 40)
        record = manager.stop(run_id, timeout=30, grace=30)
        assert record.status == "stopped" and record.exit_code == 0, (record, manager.log_tail(run_id, 40))
        assert manager.checkpoints(run_id), "the final checkpoint at the stop step was written"
    finally:
        record = manager.get(run_id)
        if record.pgid and not record.is_final:
            os.killpg(record.pgid, signal.SIGKILL)
