"""The IMAGGarment-1 trainers (colour adapter, GAM, LEM) on tiny models + a generated GarmentBench dataset.

Each trainer runs a few steps in-process on CPU, resumes in a new run folder, and its final weights are loaded
by the garment pipeline's CLI (``python -m pipelines.garment``) the way a user would, generating one tiny image.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from training.common import list_checkpoints, read_metrics
from training.config import ColourAdapterConfig, ConfigError, GamConfig, LemConfig, load_config
from training.datasets import DatasetError
from training.garmentbench import load_garmentbench, make_tiny_garmentbench

PRESETS = Path(__file__).resolve().parents[2] / "presets" / "training"


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return make_tiny_garmentbench(tmp_path_factory.mktemp("garmentbench") / "data", n=3)


def write_config(path: Path, tiny_models: Path, base: str, **values) -> Path:
    config = {"pretrained_model": str(tiny_models / base), "vae": None, "device": "cpu", "height": 80, "width": 64,
              "sample_steps": 2, "save_every": 2, "sample_every": 0, "learning_rate": 1e-3, **values}
    path.write_text(yaml.safe_dump(config))
    return path


def digests(run: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest() for p in list_checkpoints(run)}


def train_and_resume(main, tmp_path: Path, make_config) -> tuple[Path, Path]:
    """Run 2 steps (sample at 2), then resume from that run's folder in a new folder to step 3."""
    first, second = tmp_path / "run1", tmp_path / "run2"
    assert main(["--config", str(make_config(tmp_path / "c1.yaml", output_dir=str(first), max_train_steps=2,
                                              sample_every=2))]) == 0
    metrics = read_metrics(first)
    assert [row["step"] for row in metrics] == [1, 2]
    assert all(math.isfinite(row["loss"]) for row in metrics)
    assert [p.name for p in list_checkpoints(first)] == ["step-00000002"]
    assert len(list((first / "samples").glob("step-00000002-*.png"))) == 1
    before = digests(first)
    assert main(["--config", str(make_config(tmp_path / "c2.yaml", output_dir=str(second), max_train_steps=3,
                                              resume_from=str(first)))]) == 0
    assert [row["step"] for row in read_metrics(second)] == [3]
    assert [p.name for p in list_checkpoints(second)] == ["step-00000003"]
    assert digests(first) == before  # resuming never touches the source run
    assert json.loads((second / "result.json").read_text())["status"] == "finished"
    return first, second


def generate(models_dir: Path, out: Path, *args: str) -> None:
    """The garment pipeline CLI on the tiny preset with a trained file swapped in."""
    from PIL import Image

    from pipelines.garment.cli import main as garment_main

    assert garment_main(["--preset", "tiny", "--models_dir", str(models_dir), "--device", "cpu", "--steps", "2",
                         "--prompt", "a red t-shirt", "--output_path", str(out), *args]) == 0
    assert Image.open(out).size == (64, 80)


# -- dataset --------------------------------------------------------------------------------------------
def test_garmentbench_reads_all_three_pair_files(bench):
    colour = load_garmentbench(bench, "color")
    gam = load_garmentbench(bench, "gam")
    lem = load_garmentbench(bench, "lem")
    assert len(colour) == len(gam) == len(lem) == 3
    assert colour[0]["color"].parent.name == "color" and colour[0].captions == ("a red t-shirt",)
    assert gam[1].captions == ("a navy dress", "dress, navy")  # caption as a list
    assert lem[0]["mask"] == bench / "mask" / "0000.png"  # bare file names resolve in their field's folder
    assert lem[0].captions == ()


def test_garmentbench_errors_name_the_file_and_record(bench, tmp_path):
    broken = shutil.copytree(bench, tmp_path / "broken")
    (broken / "logo_pair.json").unlink()
    with pytest.raises(DatasetError, match="logo_pair.json is missing"):
        load_garmentbench(broken, "lem")
    records = json.loads((broken / "sketch_pair.json").read_text())
    records[1]["sketch"] = "sketch/nope.png"
    (broken / "sketch_pair.json").write_text(json.dumps(records))
    with pytest.raises(DatasetError, match=r"sketch_pair.json record 1: sketch file 'sketch/nope.png' not found"):
        load_garmentbench(broken, "gam")
    records[1]["sketch"] = "sketch/0001.png"
    (broken / "sketch_pair.json").write_text(json.dumps(records))
    records = json.loads((broken / "color_pair.json").read_text())
    del records[2]["caption"]
    (broken / "color_pair.json").write_text(json.dumps(records))
    with pytest.raises(DatasetError, match="color_pair.json record 2: 'caption'"):
        load_garmentbench(broken, "color")
    (broken / "cloth" / "0000.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"sketch_pair.json record 0 \(cloth\): 0000.png is not a readable image"):
        load_garmentbench(broken, "gam")


def test_methods_registered_presets_valid_and_preflight_rejects_bad_data(bench, tiny_models, tmp_path):
    from training.runner import METHODS, RunManager

    for method, config_cls in (("colour_adapter", ColourAdapterConfig), ("gam", GamConfig), ("lem", LemConfig)):
        assert METHODS[method].load_config_class() is config_cls
        real = yaml.safe_load((PRESETS / f"{method}.yaml").read_text())
        real.pop("use_8bit_adam", None)  # needs bitsandbytes (GPU machines)
        config = load_config(config_cls, {**real, "dataset": "d"})
        assert (config.height, config.width) == (640, 512)
        tiny = (PRESETS / f"{method}_tiny.yaml").read_text().replace("{tiny_models}", str(tiny_models))
        assert load_config(config_cls, {**yaml.safe_load(tiny), "dataset": "d"}).max_train_steps <= 20
    assert load_config(GamConfig, {"dataset": "d"}).learning_rate == 1e-5
    with pytest.raises(ConfigError, match="height: 81"):
        load_config(LemConfig, {"dataset": "d", "height": 81})
    with pytest.raises(ConfigError, match="drop_image_prob"):
        load_config(ColourAdapterConfig, {"dataset": "d", "drop_image_prob": 0.5, "drop_text_prob": 0.6})

    broken = shutil.copytree(bench, tmp_path / "broken")
    (broken / "color_pair.json").unlink()
    manager = RunManager(tmp_path / "jobs.db", tmp_path / "runs")
    with pytest.raises(DatasetError, match="color_pair.json is missing"):
        manager.submit("colour_adapter", {"pretrained_model": str(tiny_models / "base"), "dataset": str(broken),
                                          "device": "cpu"}, start=False)
    assert manager.list_runs() == []


# -- trainers -------------------------------------------------------------------------------------------
def test_colour_adapter_trains_resumes_and_loads_in_pipeline(bench, tiny_models, models_dir, tmp_path):
    from safetensors.torch import load_file

    from pipelines.garment.checkpoints import load_color_adapter
    from pipelines.core.tiny import IMAGE_EMBED_DIM, tiny_unet
    from training.colour_adapter import main

    def make_config(path, **values):
        return write_config(path, tiny_models, "base", dataset=str(bench), image_encoder=str(tiny_models / "image_encoder"),
                            image_encoder_subfolder=None, drop_both_prob=0.5, **values)

    first, second = train_and_resume(main, tmp_path, make_config)
    weights = second / "final" / "color_adapter.safetensors"
    tensors = load_file(str(weights))
    assert {key.split(".")[0] for key in tensors} == {"image_proj", "color_adapter"}
    assert "color_adapter.1.to_k_ip.weight" in tensors  # attn2 = odd processor indices
    projection, processors, report = load_color_adapter(weights, tiny_unet(4), IMAGE_EMBED_DIM)
    assert report.num_parameters == sum(t.numel() for t in tensors.values())
    card = json.loads((second / "final" / "atelier_model.json").read_text())
    assert card["method"] == "colour_adapter" and card["steps"] == 3 and card["weights"] == {"garment_color": weights.name}
    generate(models_dir, tmp_path / "out.png", "--color_ckpt", str(weights), "--color", "#c81e28")


def test_gam_trains_ref_unet_through_recorded_features_and_loads_in_pipeline(bench, tiny_models, models_dir, tmp_path):
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    from pipelines.garment.checkpoints import load_gam
    from training.gam import main

    def make_config(path, **values):
        return write_config(path, tiny_models, "base", dataset=str(bench), gradient_checkpointing=True, **values)

    first, second = train_and_resume(main, tmp_path, make_config)
    weights = second / "final" / "gam.safetensors"
    tensors = load_file(str(weights))
    base = UNet2DConditionModel.from_pretrained(tiny_models / "base", subfolder="unet")
    base_state = base.state_dict()
    # gradients reached ref_unet only through the recorded attn1 inputs: conv_in moved, conv_out (after the last
    # recorded layer) did not
    assert not torch.equal(tensors["ref_unet.conv_in.weight"], base_state["conv_in.weight"])
    assert torch.equal(tensors["ref_unet.conv_out.weight"], base_state["conv_out.weight"])
    attn = base.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1")
    assert not torch.equal(tensors["adapter_modules.0.to_k_ref.weight"], attn.to_k.weight)  # trained from the copy
    ref_unet = UNet2DConditionModel.from_config(base.config)
    processors, report = load_gam(weights, ref_unet, base)
    assert len(processors) == sum(".attn1." in name for name in base.attn_processors)
    assert report.num_parameters == sum(t.numel() for t in tensors.values())
    generate(models_dir, tmp_path / "out.png", "--GAM_model_ckpt", str(weights),
             "--sketch_path", str(bench / "sketch" / "0000.png"))


def test_lem_trains_attn1_and_loads_in_pipeline(bench, tiny_models, models_dir, tmp_path):
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    from pipelines.garment.checkpoints import load_lem
    from training.lem import lem_canvas, main

    # the canvas is the inference one: top latent zeroed under the mask, logo below, mask channel on top only
    latents, logo = torch.ones(1, 4, 10, 8), torch.full((1, 4, 10, 8), 2.0)
    mask = torch.zeros(1, 1, 10, 8)
    mask[..., 2:4, 3:5] = 1
    canvas, condition_mask, condition = lem_canvas(latents, logo, mask, torch.tensor([0.0]))
    assert canvas.shape == (1, 4, 20, 8) and condition_mask[:, :, 10:].abs().sum() == 0
    assert condition[:, :, 2:4, 3:5].abs().sum() == 0 and condition[:, :, 10:].abs().sum() == 0  # logo dropped

    def make_config(path, **values):
        return write_config(path, tiny_models, "inpaint", dataset=str(bench), **values)

    first, second = train_and_resume(main, tmp_path, make_config)
    weights = second / "final" / "lem.safetensors"
    tensors = load_file(str(weights))
    assert tensors and all(key.startswith("unet.") and ".attn1." in key for key in tensors)
    inpaint = UNet2DConditionModel.from_pretrained(tiny_models / "inpaint", subfolder="unet")
    weight_set = load_lem(weights, inpaint)
    assert len(weight_set.tensors) == len(tensors)
    key = next(iter(weight_set.tensors))
    assert not torch.equal(weight_set.tensors[key], inpaint.state_dict()[key])  # trained
    generate(models_dir, tmp_path / "out.png", "--LEM_model_ckpt", str(weights),
             "--logo_path", str(bench / "logo" / "0001.png"), "--mask_path", str(bench / "mask" / "0001.png"))


def test_trainer_fails_cleanly_on_wrong_base_model(bench, tiny_models, tmp_path):
    from training.lem import main

    config = write_config(tmp_path / "c.yaml", tiny_models, "base", dataset=str(bench), output_dir=str(tmp_path / "r"),
                          max_train_steps=1)
    assert main(["--config", str(config)]) == 1
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["status"] == "failed" and "9 channels" in result["error"]
