"""Memory modes of the shared registry: resident, model offload (only the running task's models on the device),
auto; the CUDA memory cap and VAE tiling. On CPU the moves are checked by the registry's offload log."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.service import StudioService
from pipelines.types import UserError

DRAFT = {"prompt": "a coat", "pose_preset": "walking", "resolution": 64, "num_inference_steps": 2,
         "weights": "sd15_openpose"}


@pytest.fixture()
def service(models_dir):
    return StudioService("tiny", device="cpu", dtype="fp32", models_dir=models_dir, memory_mode="model_offload")


def test_model_offload_moves_only_the_tasks_models_in_and_out(service, models_dir):
    registry = service.registry
    first = service.run("pose_design", DRAFT)
    moved_in = {name for name, way in registry.offload_log if way == "in"}
    assert {"unet", "vae", "text_encoder", "controlnet_openpose"} <= moved_in
    assert "inpaint_unet" not in moved_in  # a task that never asks for a model never moves it
    assert {name for name, way in registry.offload_log if way == "out"} == moved_in  # all back after the task
    assert not registry._on_device
    registry.offload_log.clear()
    second = service.run("pose_design", DRAFT)
    assert ("unet", "in") in registry.offload_log and ("unet", "out") in registry.offload_log
    resident = StudioService("tiny", device="cpu", dtype="fp32", models_dir=models_dir, memory_mode="resident")
    third = resident.run("pose_design", DRAFT)
    assert not resident.registry.offload_log
    for a, b in ((first, second), (first, third)):  # where the weights wait changes nothing in the result
        assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))


def test_offload_also_follows_a_failed_task(service):
    with pytest.raises(UserError):
        service.run("pose_design", dict(DRAFT, control_strength=5.0))
    assert not service.registry._on_device


def test_auto_mode_and_refusals(service):
    message = service.configure_memory("auto")
    assert service.registry.memory_mode == "resident" and "cpu memory is the machine's" in message
    assert service.status()["memory_mode"] == "resident"
    with pytest.raises(UserError, match="sequential offload is offered by the TEMU-VTOFF try-off only"):
        service.configure_memory("sequential_offload")
    with pytest.raises(UserError, match="must be one of"):
        service.configure_memory("everything")
    assert service.registry.memory_mode == "resident"  # a refused change keeps what was in force
    with pytest.raises(UserError, match="must be positive"):
        service.configure_memory(cap_gb=-1.0)
    assert "applies to CUDA devices only" in service.configure_memory(cap_gb=6.0)
    assert service.status()["memory_cap_gib"] == 6.0


def test_vae_tiling_and_settings_survive_a_preset_switch(service):
    service.configure_memory(vae_tiling=True)
    service.run("pose_design", DRAFT)
    assert service.registry.get("vae").use_tiling
    service.switch_preset("tiny")
    assert service.registry.vae_tiling and service.registry.memory_mode == "model_offload"
    service.configure_memory(vae_tiling=False)
    assert not service.registry.get("vae").use_tiling


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_model_offload_frees_the_gpu_after_a_task(models_dir):
    service = StudioService("tiny", models_dir=models_dir, memory_mode="model_offload")
    service.run("pose_design", DRAFT)
    held = torch.cuda.memory_allocated()
    resident = StudioService("tiny", models_dir=models_dir, memory_mode="resident")
    resident.run("pose_design", DRAFT)
    assert held < torch.cuda.memory_allocated() - held


def test_dpm_solver_sampler_runs_every_sd15_task_and_is_recorded(service, tmp_path):
    from PIL import Image

    ddim = service.run("pose_design", DRAFT)
    assert ddim.params[0]["scheduler"] == "DDIM"
    assert "sampler DPM-Solver++ 2M" in service.configure_memory(sampler="dpmpp")
    dpm = service.run("pose_design", DRAFT)
    assert dpm.params[0]["scheduler"] == "DPM-Solver++ 2M"
    assert not np.array_equal(np.asarray(dpm.images[0]), np.asarray(ddim.images[0]))
    person = Image.new("RGB", (96, 128), (200, 180, 160))
    garment = Image.new("RGB", (96, 128), (30, 60, 200))
    mask = Image.new("L", (96, 128), 0)
    mask.paste(255, (20, 30, 76, 90))
    steps = []
    tryon = service.run("tryon", {"person": person, "garment": garment, "mask": mask, "num_inference_steps": 3,
                                  "eta": 1.0}, callback=steps.append)  # CatVTON's DDIM eta 1: unused by DPM-Solver++
    assert tryon.images and steps[-1].total == 3 and tryon.params[0]["scheduler"] == "DPM-Solver++ 2M"
    with pytest.raises(UserError, match="sampler 'euler' must be one of ddim, dpmpp"):
        service.configure_memory(sampler="euler")
    assert service.registry.sampler == "dpmpp"
