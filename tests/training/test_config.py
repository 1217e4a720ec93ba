"""Config loading: unknown keys and out-of-range values are rejected by name; presets load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from training.config import ConfigError, GarmentFinetuneConfig, field_help, load_config

PRESETS = Path(__file__).resolve().parents[2] / "presets" / "training"


def test_defaults_follow_the_spec():
    config = load_config(GarmentFinetuneConfig, {"dataset": "x"})
    assert config.learning_rate == 5e-6 and config.lr_scheduler == "constant"
    assert config.train_batch_size == 1 and config.max_train_steps == 1000
    assert config.save_every == 500 and config.resolution == 512
    assert config.pretrained_model == "stable-diffusion-v1-5/stable-diffusion-inpainting"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"lr": 1e-5}, "lr: unknown key"),
        ({"learning_rate": 3.0}, r"learning_rate: 3.0 is out of range"),
        ({"max_train_steps": 0}, "max_train_steps: 0 is out of range"),
        ({"mixed_precision": "fp8"}, "mixed_precision: 'fp8' is not one of"),
        ({"resolution": 100}, "resolution: 100 is not a multiple of 8"),
        ({"train_batch_size": "two"}, "train_batch_size: expected an integer"),
        ({"use_lora": "yes"}, "use_lora: expected true/false"),
        ({"device": "cpu", "mixed_precision": "fp16"}, "mixed_precision"),
        ({"with_prior_preservation": True}, "class_data_dir"),
    ],
)
def test_bad_values_are_named(values, message):
    with pytest.raises(ConfigError, match=message):
        load_config(GarmentFinetuneConfig, {"dataset": "x", **values})


def test_8bit_adam_needs_bitsandbytes():
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    with pytest.raises(ConfigError, match="use_8bit_adam.*bitsandbytes"):
        load_config(GarmentFinetuneConfig, {"dataset": "x", "use_8bit_adam": True})


def test_yaml_scientific_notation_and_presets(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: d\nlearning_rate: 2e-6\n")  # YAML 1.1 reads 2e-6 as a string
    assert load_config(GarmentFinetuneConfig, path).learning_rate == 2e-6
    real = yaml.safe_load((PRESETS / "garment_finetune.yaml").read_text())
    real.pop("use_8bit_adam", None)  # needs bitsandbytes (GPU machines)
    load_config(GarmentFinetuneConfig, {**real, "dataset": "d"})
    tiny = yaml.safe_load((PRESETS / "garment_finetune_tiny.yaml").read_text())
    config = load_config(GarmentFinetuneConfig, {**tiny, "pretrained_model": "m", "dataset": "d"})
    assert config.resolution <= 64 and config.max_train_steps <= 20
    assert field_help(GarmentFinetuneConfig)["learning_rate"]["range"] == (1e-10, 1.0)


def test_a_retired_key_is_dropped_only_where_the_method_lacks_it(caplog):
    """Runs saved before `resolution` left the shared config still resume; garment_finetune still checks it."""
    from training.config import ConcatFinetuneConfig

    config = load_config(ConcatFinetuneConfig, {"dataset": "x", "pretrained_model": "m", "resolution": 512})
    assert not hasattr(config, "resolution") and "resolution: ignored for ConcatFinetuneConfig" in caplog.text
    with pytest.raises(ConfigError, match="resolution: 100 is not a multiple of 8"):
        load_config(GarmentFinetuneConfig, {"dataset": "x", "resolution": 100})
    with pytest.raises(ConfigError, match="lr: unknown key"):  # any other unknown key is still refused
        load_config(ConcatFinetuneConfig, {"dataset": "x", "pretrained_model": "m", "lr": 1})
