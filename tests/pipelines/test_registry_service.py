"""The registry (lazy, shared, reported) and the service (one GPU lock, designer-readable errors)."""

from __future__ import annotations

import gc
import weakref

import threading
import time

import pytest

from pipelines.types import GenerationCancelled
from pipelines.core.presets import load_preset
from pipelines.core.registry import ModelRegistry
from pipelines.service import StudioService
from pipelines.types import UserError


def test_registry_loads_nothing_until_asked(models_dir):
    registry = ModelRegistry("tiny", models_dir=models_dir, device="cpu")
    assert registry.status().loaded == []
    vae = registry.get("vae")
    assert registry.get("vae") is vae  # shared, loaded once
    status = registry.status()
    assert [m.name for m in status.loaded] == ["vae"] and status.loaded[0].bytes > 0
    assert status.device == "cpu" and status.dtype == "float32"


def test_presets_are_validated(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nbase_modle: x\n")
    with pytest.raises(ValueError, match="unknown key\\(s\\) base_modle"):
        load_preset(str(bad))
    with pytest.raises(ValueError, match="available: .*sd15, tiny"):
        load_preset("nope")
    real = load_preset("sd15")
    assert real.base_model == "SG161222/Realistic_Vision_V4.0_noVAE"
    assert real.checkpoints["tryon_catvton"].location == "zhengchong/CatVTON"


def test_a_preset_beside_its_weights_and_its_banner(tmp_path, monkeypatch):
    folder = tmp_path / "shipped"
    (folder / "mini" / "base").mkdir(parents=True)
    (folder / "mini.yaml").write_text('name: mini\nbanner: "trained **here**"\nbase_model: "{here}/mini/base"\n'
                                      'checkpoints:\n  garment_gam: {location: "{here}/mini/gam.safetensors"}\n')
    preset = load_preset(str(folder / "mini.yaml"))
    assert preset.base_model == str((folder / "mini" / "base").resolve()) and preset.banner == "trained **here**"
    # a shipped file that is gone is named, with the fix (no download can bring it back)
    problem = StudioService.preset_problems_of(str(folder / "mini.yaml"))
    assert "gam.safetensors" in problem and "missing" in problem
    (folder / "mini" / "gam.safetensors").write_bytes(b"")
    assert StudioService.preset_problems_of(str(folder / "mini.yaml")) is None
    assert "random weights" in load_preset("tiny").banner

    import app

    import pipelines.core.presets as presets

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert app.choose_preset("tiny") == "tiny"
    monkeypatch.setattr(presets, "available_presets", lambda: ["sd15", "tiny"])
    assert app.choose_preset("auto") == "tiny"  # no GPU, no mini: the random set
    monkeypatch.setattr(presets, "available_presets", lambda: ["mini", "sd15", "tiny"])
    monkeypatch.setattr(StudioService, "preset_problems_of", staticmethod(lambda name: None))
    assert app.choose_preset("auto") == "mini"  # no GPU: the shipped mini models
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert app.choose_preset("auto") == "sd15"  # a GPU that can get the real weights


def test_unreachable_preset_is_explained_and_never_hangs(models_dir):
    service = StudioService("sd15", models_dir=models_dir, device="cpu")
    problem = service.preset_problems()
    assert "Hub cannot be reached" in problem and "tiny" in problem
    start = time.perf_counter()
    with pytest.raises(UserError, match="Model not available.*tiny"):
        service.run("garment", {"prompt": "x", "height": 64, "width": 64, "num_inference_steps": 1})
    assert time.perf_counter() - start < 30


def test_service_turns_bad_input_into_a_sentence(models_dir):
    service = StudioService("tiny", models_dir=models_dir, device="cpu")
    with pytest.raises(UserError, match="height=70"):
        service.run("garment", {"prompt": "x", "height": 70, "width": 64})
    with pytest.raises(UserError, match="Unknown task"):
        service.run("nope", {})


def test_service_stop_before_start(models_dir):
    service = StudioService("tiny", models_dir=models_dir, device="cpu")
    stop = threading.Event()
    stop.set()
    with pytest.raises(GenerationCancelled):
        service.run("garment", {"prompt": "x", "height": 80, "width": 64, "num_inference_steps": 2}, stop_event=stop)


def test_switch_preset_frees_models(models_dir):
    service = StudioService("tiny", models_dir=models_dir, device="cpu")
    service.run("garment", {"prompt": "x", "height": 80, "width": 64, "num_inference_steps": 1})
    old = service.registry
    assert service.status()["loaded"] and old.is_loaded("unet")
    unet = weakref.ref(old.get("unet"))
    service.switch_preset("tiny")
    # the OLD registry let go of every model (a new registry is empty whatever happened to the old one)
    assert old.status().loaded == [] and not old.is_loaded("unet")
    gc.collect()
    assert unet() is None, "the old UNet is still referenced after switching presets"
    assert service.registry is not old and service.status()["loaded"] == []


def test_use_checkpoint_swaps_in_new_weights(models_dir, tmp_path):
    """'Use in studio': a trained colour adapter replaces the preset's, and the next call uses it."""
    import numpy as np
    import torch

    from pipelines.preprocess.colors import swatch_from_hex

    service = StudioService("tiny", models_dir=models_dir, device="cpu")
    params = {"prompt": "x", "color": swatch_from_hex("#ff0000"), "height": 80, "width": 64, "num_inference_steps": 2}
    before = np.asarray(service.run("garment", dict(params)).images[0])
    original = models_dir / "tiny" / "checkpoints" / "color_adapter.bin"
    data = torch.load(original, weights_only=True)
    data["color_adapter"] = {k: v * 3 for k, v in data["color_adapter"].items()}
    trained = tmp_path / "trained_color.bin"
    torch.save(data, trained)
    service.registry.use_checkpoint("garment_color", trained)
    after = np.asarray(service.run("garment", dict(params)).images[0])
    assert not np.array_equal(before, after)
    with pytest.raises(ValueError, match="not a checkpoint file"):
        service.registry.use_checkpoint("garment_color", tmp_path / "missing.bin")
    # None: back to the preset's own weights, and the next call makes the first image again
    service.use_weights("garment_color", None)
    assert service.weights_in_use("garment_color") == str(original)
    assert np.array_equal(np.asarray(service.run("garment", dict(params)).images[0]), before)


def test_out_of_memory_inside_the_loop_is_one_sentence_frees_the_job_and_the_next_job_runs(models_dir):
    """A simulated CUDA OOM at step 2 of 3: a UserError saying so, nothing of the failed job kept alive (the
    loop's frames are cleared), and the next job makes exactly the image it makes on a fresh start."""
    import gc
    import weakref

    import numpy as np
    import torch

    from pipelines.types import UserError

    service = StudioService("tiny", models_dir=models_dir, device="cpu")
    params = {"prompt": "a red dress", "height": 80, "width": 64, "num_inference_steps": 3, "seed": 7}
    expected = np.asarray(service.run("garment", dict(params)).images[0])
    alive = []

    def out_of_memory_at_step_2(info):
        if info.overall_step == 2:
            activations = torch.zeros(16, 1024, 1024)  # 64 MB only the failing frames refer to
            alive.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(UserError, match=r"^Out of GPU memory\. .*the next one can run\.$") as caught:
        service.run("garment", dict(params), out_of_memory_at_step_2)
    gc.collect()
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert alive and alive[0]() is None  # released although the error is still held
    assert np.array_equal(np.asarray(service.run("garment", dict(params)).images[0]), expected)
