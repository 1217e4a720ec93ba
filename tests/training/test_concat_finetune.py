"""The try-on / try-off fine-tune on the tiny inpainting model, in-process on CPU; outputs load in their pipelines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

from training.common import list_checkpoints, read_metrics
from training.concat_inpaint_finetune import load_triplets, main
from training.datasets import DatasetError


def make_triplet_dataset(folder: Path, count: int = 2, size: tuple[int, int] = (48, 64), layout: str = "atelier") -> Path:
    """``count`` (person, garment, mask) triplets of random pixels in the atelier or VITON-HD layout."""
    names = {"atelier": ("person", "garment", "mask", ""), "viton-hd": ("image", "cloth", "agnostic-mask", "_mask")}
    person_dir, garment_dir, mask_dir, mask_suffix = names[layout]
    rng = np.random.default_rng(0)
    for part in (person_dir, garment_dir, mask_dir):
        (folder / part).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        stem = f"{index:05d}_00"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / person_dir / f"{stem}.jpg")
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / garment_dir / f"{stem}.jpg")
        mask = Image.new("L", size, 0)
        ImageDraw.Draw(mask).rectangle((size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4), fill=255)
        mask.save(folder / mask_dir / f"{stem}{mask_suffix}.png")
    return folder


def write_config(path: Path, **values) -> Path:
    base = {"device": "cpu", "height": 64, "width": 48, "min_image_size": 16, "learning_rate": 1e-4,
            "sample_steps": 2, "save_every": 2, "sample_every": 0, "vae": None}
    path.write_text(yaml.safe_dump({**base, **values}))
    return path


def run_cli_tool(module_main, argv: list[str]) -> None:
    assert module_main(argv) == 0


def test_tryon_train_resume_and_load_in_catvton(tiny_models, models_dir, tmp_path):
    from safetensors.torch import load_file

    from pipelines.tryon.cli import main as tryon_main

    data = make_triplet_dataset(tmp_path / "data")
    first = tmp_path / "run1"
    config = write_config(tmp_path / "c1.yaml", mode="tryon", pretrained_model=str(tiny_models / "inpaint"),
                          dataset=str(data), output_dir=str(first), max_train_steps=2, sample_every=2,
                          init_weights=str(tiny_models / "checkpoints" / "catvton" / "attention" / "model.safetensors"),
                          gradient_checkpointing=True)
    assert main(["--config", str(config)]) == 0
    metrics = read_metrics(first)
    assert [row["step"] for row in metrics] == [1, 2] and all(math.isfinite(row["loss"]) for row in metrics)
    checkpoints = list_checkpoints(first)
    assert [path.name for path in checkpoints] == ["step-00000002"]
    tensors = load_file(str(checkpoints[0] / "model.safetensors"))
    assert tensors and all(".attn1." in key for key in tensors)  # attn1 only
    assert (first / "samples" / "step-00000002-0.png").is_file()
    weights = first / "final" / "attention" / "model.safetensors"
    state = load_file(str(weights))
    assert len(state) == 4 * 5 and "0.to_q.weight" in state and "24.to_out.0.bias" in state  # 4 tiny attn1 layers
    card = json.loads((first / "final" / "atelier_model.json").read_text())
    assert card["kind"] == "tryon_weights" and card["steps"] == 2

    # resume in a new folder: the step count continues
    second = tmp_path / "run2"
    config2 = write_config(tmp_path / "c2.yaml", mode="tryon", pretrained_model=str(tiny_models / "inpaint"),
                           dataset=str(data), output_dir=str(second), max_train_steps=3, resume_from=str(first))
    assert main(["--config", str(config2)]) == 0
    assert [row["step"] for row in read_metrics(second)] == [3]

    # the trained file loads through load_catvton in the try-on CLI and generates an image
    person = data / "person" / "00000_00.jpg"
    out = tmp_path / "tryon.png"
    run_cli_tool(tryon_main, ["--preset", "tiny", "--models_dir", str(models_dir), "--device", "cpu",
                              "--person", str(person), "--garment", str(data / "garment" / "00000_00.jpg"),
                              "--mask", str(data / "mask" / "00000_00.png"), "--weights", str(second / "final"),
                              "--steps", "2", "--output_path", str(out)])
    assert Image.open(out).size == (48, 64)


def test_tryoff_viton_layout_and_load_in_tryoffanyone(tiny_models, models_dir, tmp_path):
    from safetensors.torch import load_file

    from pipelines.tryoff.checkpoints import load_tryoffanyone
    from pipelines.tryoff.cli import main as tryoff_main
    from pipelines.tryoff.checkpoints import tryoff_key_map

    data = make_triplet_dataset(tmp_path / "data" / "train", layout="viton-hd")
    run = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", mode="tryoff", pretrained_model=str(tiny_models / "inpaint"),
                          dataset=str(tmp_path / "data"), output_dir=str(run), max_train_steps=2,
                          vae=str(tiny_models / "vae"), condition_dropout=0.5)
    assert main(["--config", str(config)]) == 0
    assert all(math.isfinite(row["loss"]) for row in read_metrics(run))
    tensors = load_file(str(list_checkpoints(run)[-1] / "model.safetensors"))
    assert any(".ff." in key for key in tensors) and any("proj_in" in key for key in tensors)
    assert not any(".attn2." in key for key in tensors)
    weights = run / "final" / "model.safetensors"
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_models / "inpaint", subfolder="unet")
    assert set(load_file(str(weights))) == set(tryoff_key_map(unet))
    assert load_tryoffanyone(weights, unet).num_parameters > 0
    out = tmp_path / "tryoff.png"
    run_cli_tool(tryoff_main, ["--preset", "tiny", "--models_dir", str(models_dir), "--device", "cpu",
                               "--person", str(data / "image" / "00000_00.jpg"),
                               "--mask", str(data / "agnostic-mask" / "00000_00_mask.png"),
                               "--weights", str(run / "final"), "--steps", "2", "--output_path", str(out)])
    assert Image.open(out).size == (96, 128)  # the tiny preset's try-off canvas


def test_bad_datasets_name_the_file(tmp_path):
    data = make_triplet_dataset(tmp_path / "data")
    (data / "mask" / "00001_00.png").unlink()
    with pytest.raises(DatasetError, match="person/00001_00.jpg: no mask"):
        load_triplets(data, min_size=16)
    Image.new("L", (10, 10), 255).save(data / "mask" / "00001_00.png")
    with pytest.raises(DatasetError, match="mask/00001_00.png: mask is 10x10"):
        load_triplets(data, min_size=16)
    (data / "mask" / "00001_00.png").unlink()
    (data / "person" / "notes.docx").write_text("x")
    with pytest.raises(DatasetError, match="person/notes.docx: not an image"):
        load_triplets(data, min_size=16)
    with pytest.raises(DatasetError, match="expected person/, garment/ and mask/"):
        load_triplets(make_triplet_dataset(tmp_path / "other") / "person", min_size=16)


def test_bad_dataset_fails_the_run_with_the_file_name(tiny_models, tmp_path):
    data = make_triplet_dataset(tmp_path / "data")
    (data / "garment" / "00000_00.jpg").write_bytes(b"not a jpeg")
    config = write_config(tmp_path / "c.yaml", mode="tryon", pretrained_model=str(tiny_models / "inpaint"),
                          dataset=str(data), output_dir=str(tmp_path / "run"), max_train_steps=1)
    assert main(["--config", str(config)]) == 1
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "failed" and "00000_00.jpg: not a readable image" in result["error"]


@pytest.mark.parametrize("method", ["tryon", "tryoff"])
def test_tiny_recipe_runs_as_the_runner_method(tiny_models, tmp_path, method):
    from training.config import save_config
    from training.runner import METHODS, RunManager

    recipe = yaml.safe_load((Path(__file__).parents[2] / "presets" / "training" / f"{method}_tiny.yaml").read_text())
    recipe = {k: v.replace("{tiny_models}", str(tiny_models)) if isinstance(v, str) else v for k, v in recipe.items()}
    recipe.update(dataset=str(make_triplet_dataset(tmp_path / "data")), max_train_steps=1, sample_every=1)
    manager = RunManager(tmp_path / "jobs.db", tmp_path / "runs")
    typed = manager.validate(method, recipe)
    assert typed.mode == method and METHODS[method].module == "training.concat_inpaint_finetune"
    typed.output_dir = str(tmp_path / "run")
    config = save_config(typed, tmp_path / "config.yaml")
    assert main(["--config", str(config)]) == 0
    assert (tmp_path / "run" / "samples" / "step-00000001-0.png").is_file()
    with pytest.raises(Exception, match="mode"):
        manager.validate(method, {**recipe, "mode": "tryoff" if method == "tryon" else "tryon"})
