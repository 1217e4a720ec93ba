"""The garment fine-tune script on the tiny inpainting model, in-process, on CPU."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import yaml

from tests.training.test_datasets import make_garment_dataset
from training.common import list_checkpoints, read_metrics
from training.garment_finetune import main
from training.jobstore import JobStore


def write_config(path: Path, **values) -> Path:
    base = {"device": "cpu", "resolution": 32, "min_image_size": 16, "learning_rate": 1e-4, "sample_steps": 2,
            "save_every": 2, "sample_every": 0, "gradient_checkpointing": False}
    path.write_text(yaml.safe_dump({**base, **values}))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_full_finetune_resume_and_export(tiny_models, tmp_path):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    data = make_garment_dataset(tmp_path / "data")
    first = tmp_path / "run1"
    config = write_config(tmp_path / "c1.yaml", pretrained_model=str(tiny_models / "inpaint"), dataset=str(data),
                          output_dir=str(first), max_train_steps=4, sample_every=3, train_text_encoder=True,
                          gradient_checkpointing=True)
    store = JobStore(tmp_path / "jobs.db")
    run = store.create("garment_finetune", first, status="running")
    assert main(["--config", str(config), "--run-id", run.id, "--store", str(store.path)]) == 0
    record = store.get(run.id)
    assert (record.status, record.step, record.total_steps, record.exit_code) == ("finished", 4, 4, 0)
    metrics = read_metrics(first)
    assert [row["step"] for row in metrics] == [1, 2, 3, 4]
    assert all(math.isfinite(row["loss"]) and row["eta_s"] >= 0 for row in metrics)
    checkpoints = list_checkpoints(first)
    assert [path.name for path in checkpoints] == ["step-00000002", "step-00000004"]
    tensors = load_file(str(checkpoints[-1] / "model.safetensors"))
    assert any(key.startswith("unet.") for key in tensors) and any(key.startswith("text_encoder.") for key in tensors)
    assert json.loads((checkpoints[-1] / "state.json").read_text())["step"] == 4
    assert len(list((first / "samples").glob("step-00000003-*.png"))) == 1
    unet = UNet2DConditionModel.from_pretrained(first / "final", subfolder="unet")
    assert unet.config.in_channels == 9
    card = json.loads((first / "final" / "atelier_model.json").read_text())
    assert card["method"] == "garment_finetune" and card["prompt"] == "red sweater" and card["steps"] == 4
    assert card["masks"] == {"given": 3, "random": 0} and card["resolution"] == 32
    before = {path.name: digest(path / "model.safetensors") for path in checkpoints}

    # resume from the first run's folder in a new folder: steps continue 5, 6; nothing of run 1 changes
    second = tmp_path / "run2"
    config2 = write_config(tmp_path / "c2.yaml", pretrained_model=str(tiny_models / "inpaint"), dataset=str(data),
                           output_dir=str(second), max_train_steps=6, train_text_encoder=True,
                           resume_from=str(first))
    assert main(["--config", str(config2)]) == 0
    assert [row["step"] for row in read_metrics(second)] == [5, 6]
    assert [path.name for path in list_checkpoints(second)] == ["step-00000006"]
    assert {path.name: digest(path / "model.safetensors") for path in list_checkpoints(first)} == before
    assert json.loads((second / "final" / "atelier_model.json").read_text())["steps"] == 6


def test_lora_masked_loss_prior_preservation_loads_as_pipeline(tiny_models, tmp_path):
    import torch
    from diffusers import StableDiffusionInpaintPipeline
    from PIL import Image

    data = make_garment_dataset(tmp_path / "data", count=2, masks="dir")
    classes = make_garment_dataset(tmp_path / "classes", count=2, masks="none", name="sweater")
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", pretrained_model=str(tiny_models / "inpaint"), dataset=str(data),
                          output_dir=str(run), max_train_steps=3, use_lora=True, lora_rank=4, masked_loss=True,
                          with_prior_preservation=True, class_data_dir=str(classes), class_prompt="a sweater",
                          require_masks=True, instance_prompt="atelier red sweater")
    assert main(["--config", str(config)]) == 0
    final = run / "final"
    assert (final / "pytorch_lora_weights.safetensors").is_file()
    card = json.loads((final / "atelier_model.json").read_text())
    assert card["lora"] and card["prompt"] == "atelier red sweater"
    pipeline = StableDiffusionInpaintPipeline.from_pretrained(final, safety_checker=None)
    assert not any("lora" in name for name, _ in pipeline.unet.named_parameters())  # merged
    image = Image.new("RGB", (32, 32), "white")
    mask = Image.new("L", (32, 32), 255)
    result = pipeline("atelier red sweater", image=image, mask_image=mask, height=32, width=32,
                      num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert result.size == (32, 32)


def test_bad_model_and_stop_before_training(tiny_models, tmp_path):
    data = make_garment_dataset(tmp_path / "data")
    config = write_config(tmp_path / "c.yaml", pretrained_model=str(tiny_models / "base"), dataset=str(data),
                          output_dir=str(tmp_path / "run"), max_train_steps=2)
    assert main(["--config", str(config)]) == 1
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "failed" and "9 channels" in result["error"]
    bad = write_config(tmp_path / "bad.yaml", dataset=str(data), learning_rate=7.0)
    assert main(["--config", str(bad)]) == 2
