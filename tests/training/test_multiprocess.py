"""Data-parallel runs: the launcher command, and a real 2-process run on CPU (torch's launcher, gloo)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.training.test_datasets import make_garment_dataset
from tests.training.test_runner import START_TIMEOUT, tiny_config
from training.config import ConfigError, load_config
from training.config import DressingConfig
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
        load_config(DressingConfig, {"pretrained_model": "x", "dataset": "y", "num_processes": 2})


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


# -- the IMAGGarment-1 methods (colour adapter, GAM, LEM): same guarantees, final weights load ----------------
@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from training.garmentbench import make_tiny_garmentbench

    return make_tiny_garmentbench(tmp_path_factory.mktemp("garmentbench") / "data", n=3)  # odd: uneven shards


def _garment_config(tiny_models, bench, base: str, **values) -> dict:
    return {"pretrained_model": str(tiny_models / base), "vae": None, "dataset": str(bench), "device": "cpu",
            "height": 80, "width": 64, "learning_rate": 1e-3, "sample_steps": 2, "save_every": 2, "sample_every": 2,
            "max_train_steps": 4, "num_processes": 2, "save_optimizer_state": False, **values}


def _two_process_garment_run(tmp_path, method: str, config: dict) -> Path:
    """Submit a 2-process run, wait for it, check metrics/checkpoints/samples/final are written once by rank 0;
    returns the final folder."""
    manager = RunManager(tmp_path / "jobs.db", tmp_path / "runs")
    run_id = manager.submit(method, config)
    try:
        record = manager.wait(run_id, START_TIMEOUT + 120, until=lambda r: r.is_final)
        assert record.status == "finished" and record.exit_code == 0, manager.log_tail(run_id, 60)
        assert record.step == 4
        run_dir = manager.run_dir(run_id)
        steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert steps == [1, 2, 3, 4]  # rank 0 alone writes metrics
        assert [p.name for p in manager.checkpoints(run_id)] == ["step-00000002", "step-00000004"]
        samples = sorted(p.name for p in (run_dir / "samples").glob("*.png"))
        assert samples == ["step-00000002-0.png", "step-00000004-0.png"]  # sampled once (rank 0), not per rank
        log = manager.log_tail(run_id, 400)
        assert log.count(f"run {run_id} ({method}) in") == 2, log  # both ranks really ran
        card = json.loads((run_dir / "final" / "atelier_model.json").read_text())
        assert card["method"] == method and card["steps"] == 4
        final = manager.final_weights(run_id)
        assert final is not None
        return run_dir / "final"
    finally:
        record = manager.get(run_id)
        if record.pgid and not record.is_final:
            os.killpg(record.pgid, signal.SIGKILL)


def _no_ddp_prefix(weights) -> dict:
    from safetensors.torch import load_file

    tensors = load_file(str(weights))
    assert tensors and not any(key.startswith("module.") or ".module." in key for key in tensors), list(tensors)[:5]
    return tensors


def test_two_process_lem_run(tiny_models, bench, tmp_path):
    import torch
    from diffusers import UNet2DConditionModel

    from pipelines.garment.checkpoints import load_lem

    final = _two_process_garment_run(tmp_path, "lem", _garment_config(tiny_models, bench, "inpaint"))
    tensors = _no_ddp_prefix(final / "lem.safetensors")
    inpaint = UNet2DConditionModel.from_pretrained(tiny_models / "inpaint", subfolder="unet")
    weight_set = load_lem(final / "lem.safetensors", inpaint)
    assert len(weight_set.tensors) == len(tensors)
    key = next(iter(weight_set.tensors))
    assert not torch.equal(weight_set.tensors[key], inpaint.state_dict()[key])  # trained


def test_two_process_colour_adapter_run(tiny_models, bench, tmp_path):
    from pipelines.core.tiny import IMAGE_EMBED_DIM, tiny_unet
    from pipelines.garment.checkpoints import load_color_adapter

    final = _two_process_garment_run(tmp_path, "colour_adapter", _garment_config(
        tiny_models, bench, "base", image_encoder=str(tiny_models / "image_encoder"), image_encoder_subfolder=None))
    tensors = _no_ddp_prefix(final / "color_adapter.safetensors")
    assert {key.split(".")[0] for key in tensors} == {"image_proj", "color_adapter"}
    _, _, report = load_color_adapter(final / "color_adapter.safetensors", tiny_unet(4), IMAGE_EMBED_DIM)
    assert report.num_parameters == sum(t.numel() for t in tensors.values())


def test_two_process_gam_run(tiny_models, bench, tmp_path):
    """ref_unet has parameters outside the loss path (find_unused_parameters) and runs under checkpointing."""
    import torch
    from diffusers import UNet2DConditionModel

    from pipelines.garment.checkpoints import load_gam

    final = _two_process_garment_run(tmp_path, "gam", _garment_config(tiny_models, bench, "base",
                                                                      gradient_checkpointing=True))
    tensors = _no_ddp_prefix(final / "gam.safetensors")
    base = UNet2DConditionModel.from_pretrained(tiny_models / "base", subfolder="unet")
    assert not torch.equal(tensors["ref_unet.conv_in.weight"], base.state_dict()["conv_in.weight"])
    processors, report = load_gam(final / "gam.safetensors", UNet2DConditionModel.from_config(base.config), base)
    assert len(processors) == sum(".attn1." in name for name in base.attn_processors)
    assert report.num_parameters == sum(t.numel() for t in tensors.values())


# -- try-on / try-off (training/concat_inpaint_finetune.py) ------------------------------------------------------
@pytest.mark.parametrize("method", ["tryon", "tryoff"])
def test_two_process_concat_finetune_run(tiny_models, tmp_path, method):
    from diffusers import UNet2DConditionModel

    from pipelines.tryoff.checkpoints import load_tryoffanyone
    from pipelines.tryon.checkpoints import load_catvton
    from tests.training.test_concat_finetune import make_triplet_dataset

    data = make_triplet_dataset(tmp_path / "data", count=3)  # odd: uneven shards
    config = {"pretrained_model": str(tiny_models / "inpaint"), "vae": None, "dataset": str(data), "device": "cpu",
              "mode": method, "height": 64, "width": 48, "min_image_size": 16, "learning_rate": 1e-4,
              "sample_steps": 2, "save_every": 2, "sample_every": 2, "max_train_steps": 4, "num_processes": 2,
              "save_optimizer_state": False, "condition_dropout": 0.5}
    manager = RunManager(tmp_path / "jobs.db", tmp_path / "runs")
    run_id = manager.submit(method, config)
    try:
        record = manager.wait(run_id, START_TIMEOUT + 120, until=lambda r: r.is_final)
        assert record.status == "finished" and record.exit_code == 0, manager.log_tail(run_id, 60)
        run_dir = manager.run_dir(run_id)
        steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert steps == [1, 2, 3, 4]
        assert [p.name for p in manager.checkpoints(run_id)] == ["step-00000002", "step-00000004"]
        assert sorted(p.name for p in (run_dir / "samples").glob("*.png")) == ["step-00000002-0.png",
                                                                                "step-00000004-0.png"]
        log = manager.log_tail(run_id, 400)
        assert log.count(f"run {run_id} (") == 2, log  # both ranks really ran
        assert manager.final_weights(run_id) is not None
        unet = UNet2DConditionModel.from_pretrained(tiny_models / "inpaint", subfolder="unet")
        if method == "tryon":
            weights = run_dir / "final" / "attention" / "model.safetensors"
            _no_ddp_prefix(weights)
            assert load_catvton(weights, unet).tensors
        else:
            weights = run_dir / "final" / "model.safetensors"
            _no_ddp_prefix(weights)
            assert load_tryoffanyone(weights, unet).num_parameters > 0
    finally:
        record = manager.get(run_id)
        if record.pgid and not record.is_final:
            os.killpg(record.pgid, signal.SIGKILL)
