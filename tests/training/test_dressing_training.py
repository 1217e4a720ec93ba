"""The AnyDressing trainer on the tiny models, in-process on CPU; its output loads in DressingPipeline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from training.common import list_checkpoints, read_metrics
from training.datasets import DatasetError
from training.dressing import load_dressing_dataset, main, write_tiny_dressing_dataset


def write_config(path: Path, tiny: Path, **values) -> Path:
    base = {
        "device": "cpu", "pretrained_model": str(tiny / "base"), "vae": str(tiny / "vae"),
        "image_encoder": str(tiny / "image_encoder"), "image_encoder_subfolder": None,
        "init_checkpoint": str(tiny / "checkpoints" / "IMAGDressing-v1_tiny.pt"),
        "height": 64, "width": 48, "min_image_size": 16, "lora_rank": 4, "learning_rate": 1e-3,
        "sample_steps": 2, "save_every": 2, "sample_every": 0, "train_batch_size": 2,
        # every row gets the texture loss, so L_hf is exercised on every step
        "texture_max_timestep": 1000, "drop_condition_prob": 0.0,
    }
    path.write_text(yaml.safe_dump({**base, **values}))
    return path


def test_train_resume_and_dress_with_the_output(tiny_models, models_dir, tmp_path, caplog):
    from safetensors.torch import load_file

    from pipelines.dressing.cli import main as dressing_main

    data = write_tiny_dressing_dataset(tmp_path / "data", count=2)
    # a third sample with ONE garment: rows with different garment counts share a batch (padding)
    single = write_tiny_dressing_dataset(tmp_path / "single", count=1, categories=("upper",))
    (single / "sample_000").rename(data / "sample_999")
    first = tmp_path / "run1"
    config = write_config(tmp_path / "c1.yaml", tiny_models, dataset=str(data), output_dir=str(first),
                          max_train_steps=2, sample_every=2, gradient_checkpointing=True)
    with caplog.at_level("INFO"):
        assert main(["--config", str(config)]) == 0
    assert "L_perc skipped: no perceptual weights configured" in caplog.text
    metrics = read_metrics(first)
    assert [row["step"] for row in metrics] == [1, 2]
    for row in metrics:
        assert all(math.isfinite(row[key]) for key in ("loss", "loss_ldm", "loss_loc", "loss_hf"))
        assert row["loss_loc"] > 0 and row["loss_hf"] > 0
    checkpoint = list_checkpoints(first)[-1]
    tensors = load_file(str(checkpoint / "model.safetensors"))
    assert any(key.startswith("slot_loras.") for key in tensors) and any(".to_k_ref." in key for key in tensors)
    assert (first / "samples" / "step-00000002-0.png").is_file()
    final = first / "final"
    card = json.loads((final / "atelier_model.json").read_text())
    assert card["kind"] == "dressing_model" and card["slot_labels"] == ["lower", "upper"] and card["steps"] == 2

    # resume in a new folder: the step count continues
    second = tmp_path / "run2"
    config2 = write_config(tmp_path / "c2.yaml", tiny_models, dataset=str(data), output_dir=str(second),
                           max_train_steps=3, resume_from=str(first), loc_normalization="garments")
    assert main(["--config", str(config2)]) == 0
    assert [row["step"] for row in read_metrics(second)] == [3]

    # both files load with the pipeline's own loaders; the trained K'/V' and LoRAs are what got saved
    from diffusers import UNet2DConditionModel

    from pipelines.dressing.checkpoints import load_imagdressing, load_slot_loras

    unet = UNet2DConditionModel.from_pretrained(tiny_models / "base", subfolder="unet")
    garment_unet = UNet2DConditionModel.from_config(unet.config)
    _, processors, _ = load_imagdressing(second / "final" / "imagdressing.safetensors", garment_unet, unet)
    loras, _ = load_slot_loras(second / "final" / "slot_loras.safetensors", garment_unet)
    assert loras.labels == ["lower", "upper"] and loras.is_active()
    latest = load_file(str(list_checkpoints(second)[-1] / "model.safetensors"))
    name = next(iter(processors))
    assert torch.equal(processors[name].to_k_ref.weight, latest[f"dressing.{name.replace('.', '__')}.to_k_ref.weight"])

    # and the studio's dressing CLI dresses a person with them (the tiny preset + our two files)
    sample = data / "sample_000"
    out = tmp_path / "dressed.png"
    assert dressing_main([
        "--preset", "tiny", "--models_dir", str(models_dir), "--device", "cpu",
        "--checkpoint", str(second / "final" / "imagdressing.safetensors"),
        "--slot_loras", str(second / "final" / "slot_loras.safetensors"),
        "--garment", str(sample / "garment_0_upper.png"), "--category", "upper",
        "--garment", str(sample / "garment_1_lower.png"), "--category", "lower",
        "--steps", "2", "--height", "64", "--width", "48", "--output_path", str(out),
    ]) == 0
    assert Image.open(out).size == (48, 64)


def test_perceptual_module_and_no_init_checkpoint(tiny_models, tmp_path):
    class Distance(torch.nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (x - y).abs().flatten(1).mean(1)

    scripted = tmp_path / "dists.pt"
    torch.jit.script(Distance()).save(str(scripted))
    data = write_tiny_dressing_dataset(tmp_path / "data", count=1)
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", tiny_models, dataset=str(data), output_dir=str(run), max_train_steps=1,
                          init_checkpoint=None, perceptual_weights=str(scripted), train_batch_size=1)
    assert main(["--config", str(config)]) == 0
    row = read_metrics(run)[0]
    assert math.isfinite(row["loss"]) and row["loss_perc"] > 0
    assert (run / "final" / "imagdressing.safetensors").is_file()


def test_bad_datasets_name_the_file(tiny_models, tmp_path):
    data = write_tiny_dressing_dataset(tmp_path / "data", count=2)
    (data / "sample_001" / "mask_1.png").unlink()
    with pytest.raises(DatasetError, match="sample_001/garment_1_lower.png: no mask_1.png"):
        load_dressing_dataset(data, min_size=16)
    Image.new("L", (10, 10), 255).save(data / "sample_001" / "mask_1.png")
    with pytest.raises(DatasetError, match="sample_001/mask_1.png: mask is 10x10"):
        load_dressing_dataset(data, min_size=16)
    (data / "sample_001" / "garment_1_lower.png").rename(data / "sample_001" / "garment_1_socks.png")
    with pytest.raises(DatasetError, match="garment_1_socks.png: unknown category 'socks'"):
        load_dressing_dataset(data, min_size=16)
    (data / "sample_001" / "garment_1_socks.png").rename(data / "sample_001" / "cloth.png")
    with pytest.raises(DatasetError, match="sample_001/cloth.png: unexpected file name"):
        load_dressing_dataset(data, min_size=16)

    # the trainer fails with the file name in result.json
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", tiny_models, dataset=str(data), output_dir=str(run), max_train_steps=1)
    assert main(["--config", str(config)]) == 1
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "failed" and "cloth.png: unexpected file name" in result["error"]


def test_tiny_recipe_validates_for_the_runner(tiny_models, tmp_path):
    from training.runner import RunManager

    recipe = yaml.safe_load((Path(__file__).parents[2] / "presets" / "training" / "dressing_tiny.yaml").read_text())
    recipe = {k: v.replace("{tiny_models}", str(tiny_models)) if isinstance(v, str) else v for k, v in recipe.items()}
    recipe["dataset"] = str(write_tiny_dressing_dataset(tmp_path / "data", count=1))
    manager = RunManager(tmp_path / "jobs.db", tmp_path / "runs")
    run_id = manager.submit("dressing", recipe, start=False)  # runs the preflight (dataset validation)
    assert manager.store.get(run_id).status == "queued"
