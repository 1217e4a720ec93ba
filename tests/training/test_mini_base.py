"""GarmentBench-mini base models trained from scratch on the synthetic data: the VAE and the text-to-image UNet
each lower their loss within a few steps, export in the SD layout and load as a diffusers pipeline."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from training.common import read_metrics
from training.config import ConfigError, MiniBaseConfig, load_config
from training.mini_base import main, vae_images
from training.synthetic import main as synthetic_main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini") / "data"
    assert synthetic_main(["--out", str(root), "--count", "12", "--seed", "3", "--size", "64x80",
                           "--kinds", "garmentbench"]) == 0
    return root / "garmentbench"


def write(path, **values):
    path.write_text(yaml.safe_dump({"device": "cpu", "train_batch_size": 4, "learning_rate": 2e-3, "save_every": 0,
                                    "sample_every": 0, "sample_steps": 2, **values}))
    return path


def falling(run) -> tuple[float, float]:
    losses = [row["loss"] for row in read_metrics(run)]
    return sum(losses[:3]) / 3, sum(losses[-3:]) / 3


def test_vae_then_unet_from_scratch_learn_and_export(data, tiny_models, tmp_path):
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    architecture = str(tiny_models / "base")
    assert main(["--config", str(write(tmp_path / "vae.yaml", pretrained_model=architecture, dataset=str(data),
                                       output_dir=str(tmp_path / "vae"), part="vae", max_train_steps=15))]) == 0
    first, last = falling(tmp_path / "vae")
    assert last < 0.7 * first, (first, last)  # reconstruction error falls from the random start
    vae = AutoencoderKL.from_pretrained(tmp_path / "vae" / "final" / "vae")
    assert 0.01 < vae.config.scaling_factor < 100 and vae.config.scaling_factor != 0.18215  # measured on the data
    assert json.loads((tmp_path / "vae" / "final" / "atelier_model.json").read_text())["kind"] == "mini_vae"

    assert main(["--config", str(write(tmp_path / "unet.yaml", pretrained_model=architecture, dataset=str(data),
                                       output_dir=str(tmp_path / "unet"), part="unet", max_train_steps=15,
                                       vae=str(tmp_path / "vae" / "final" / "vae"), sample_every=15))]) == 0
    first, last = falling(tmp_path / "unet")
    assert last < 0.8 * first, (first, last)
    assert list((tmp_path / "unet" / "samples").glob("step-00000015-*.png"))
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "unet" / "final", safety_checker=None)
    image = pipe("a red t-shirt", num_inference_steps=2, height=80, width=64, output_type="pil",
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 80)
    # the exported UNet is the trained one, not the architecture's random start
    trained = pipe.unet.state_dict()
    from diffusers import UNet2DConditionModel

    start = UNet2DConditionModel.from_pretrained(architecture, subfolder="unet").state_dict()
    assert any(not torch.equal(trained[key], start[key]) for key in trained)


def test_config_and_data_refusals(data, tiny_models, tmp_path):
    with pytest.raises(ConfigError, match="vae: part 'unet' trains on a trained VAE"):
        load_config(MiniBaseConfig, {"pretrained_model": "x", "dataset": "d", "part": "unet"})
    with pytest.raises(ConfigError, match="part"):
        load_config(MiniBaseConfig, {"pretrained_model": "x", "dataset": "d", "part": "everything"})
    with pytest.raises(ConfigError, match="vae_width: only part 'vae'"):
        load_config(MiniBaseConfig, {"pretrained_model": "x", "dataset": "d", "part": "unet", "vae": "v", "vae_width": 16})
    with pytest.raises(ConfigError, match="not a multiple of 8"):
        load_config(MiniBaseConfig, {"pretrained_model": "x", "dataset": "d", "vae_width": 12})
    from training.mini_base import fresh_models

    wide = load_config(MiniBaseConfig, {"pretrained_model": str(tiny_models / "base"), "dataset": "d", "vae_width": 16})
    assert list(fresh_models(wide)["vae"].config.block_out_channels) == [16, 32, 32, 32]
    files = vae_images(data)
    assert files and not [f for f in files if {"mask", "silhouette", "color"} & set(f.parts)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no images"):
        vae_images(tmp_path / "empty")


def test_random_masks_keep_to_their_sides_and_full_share():
    import random

    import numpy as np

    from training.garment_finetune import random_mask

    rng = random.Random(0)
    small = [np.asarray(random_mask(80, 64, rng, sides=(0.1, 0.3), full=0.0)) > 127 for _ in range(200)]
    assert all(0 < m.sum() <= (0.3 * 80 + 1) * (0.3 * 64 + 1) for m in small)
    default = [np.asarray(random_mask(80, 64, rng)) > 127 for _ in range(400)]
    assert 0.18 < np.mean([m.all() for m in default]) < 0.32  # the whole image 1 time in 4


def test_inpainting_unet_starts_as_the_base_and_learns(data, tiny_models, tmp_path):
    from diffusers import UNet2DConditionModel

    from training.mini_base import inpainting_unet

    base = UNet2DConditionModel.from_pretrained(tiny_models / "base", subfolder="unet")
    inpaint = inpainting_unet(base)
    assert inpaint.config.in_channels == 9
    torch.manual_seed(0)
    noisy, extra = torch.randn(2, 4, 10, 8), torch.randn(2, 5, 10, 8)
    text = torch.randn(2, 77, base.config.cross_attention_dim)
    with torch.no_grad():
        expected = base(noisy, 500, encoder_hidden_states=text).sample
        got = inpaint(torch.cat([noisy, extra], dim=1), 500, encoder_hidden_states=text).sample
    torch.testing.assert_close(got, expected)  # zero weights on mask + masked latent: exactly the base at start
    with pytest.raises(ConfigError, match="4-channel text-to-image UNet"):
        inpainting_unet(inpaint)

    # part inpaint on a (briefly) trained base: the loss falls and the export is an inpainting UNet
    architecture = str(tiny_models / "base")
    assert main(["--config", str(write(tmp_path / "vae.yaml", pretrained_model=architecture, dataset=str(data),
                                       output_dir=str(tmp_path / "vae"), part="vae", max_train_steps=4))]) == 0
    assert main(["--config", str(write(tmp_path / "unet.yaml", pretrained_model=architecture, dataset=str(data),
                                       output_dir=str(tmp_path / "unet"), part="unet", max_train_steps=4,
                                       vae=str(tmp_path / "vae" / "final" / "vae")))]) == 0
    assert main(["--config", str(write(tmp_path / "inpaint.yaml", pretrained_model=architecture, dataset=str(data),
                                       output_dir=str(tmp_path / "inpaint"), part="inpaint", max_train_steps=15,
                                       base=str(tmp_path / "unet" / "final"), sample_every=15))]) == 0
    first, last = falling(tmp_path / "inpaint")
    assert last < 0.9 * first, (first, last)
    assert list((tmp_path / "inpaint" / "samples").glob("step-00000015-*.png"))
    final = tmp_path / "inpaint" / "final"
    trained = UNet2DConditionModel.from_pretrained(final, subfolder="unet")
    assert trained.config.in_channels == 9
    assert trained.conv_in.weight[:, 4:].abs().sum() > 0  # the mask / masked-image inputs are used now
    assert json.loads((final / "model_index.json").read_text())["_class_name"] == "StableDiffusionInpaintPipeline"
    # the GarmentBench-mini recipe: conv_in at 10x the rate, no text -> the new inputs move much further
    assert main(["--config", str(write(tmp_path / "fast.yaml", pretrained_model=architecture, dataset=str(data),
                                       output_dir=str(tmp_path / "fast"), part="inpaint", max_train_steps=15,
                                       base=str(tmp_path / "unet" / "final"), input_lr_scale=10.0,
                                       skip_cross_attention=True))]) == 0
    fast = UNet2DConditionModel.from_pretrained(tmp_path / "fast" / "final", subfolder="unet")
    moved = lambda unet: float(unet.conv_in.weight[:, 4:].detach().norm())  # noqa: E731
    assert moved(fast) > 3 * moved(trained), (moved(fast), moved(trained))
    with pytest.raises(ConfigError, match=r"mask_sides: \[0.5, 0.2\] must be \[min, max\]"):
        load_config(MiniBaseConfig, {"pretrained_model": "x", "dataset": "d", "part": "inpaint", "base": "b",
                                     "mask_sides": [0.5, 0.2]})
    with pytest.raises(ConfigError, match="input_lr_scale: only part 'inpaint'"):
        load_config(MiniBaseConfig, {"pretrained_model": "x", "dataset": "d", "input_lr_scale": 2.0})
    with pytest.raises(ConfigError, match="skip_cross_attention: only part 'inpaint'"):
        load_config(MiniBaseConfig, {"pretrained_model": "x", "dataset": "d", "part": "unet", "vae": "v",
                                     "skip_cross_attention": True})
    with pytest.raises(ConfigError, match="base: part 'inpaint' starts from a trained base"):
        load_config(MiniBaseConfig, {"pretrained_model": "x", "dataset": "d", "part": "inpaint"})
    with pytest.raises(ConfigError, match="uses the base's own VAE"):
        load_config(MiniBaseConfig, {"pretrained_model": "x", "dataset": "d", "part": "inpaint", "base": "b", "vae": "v"})
