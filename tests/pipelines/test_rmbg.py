"""RMBG-1.4 background removal: the official key layout (tiny round trip, full-size shapes on the meta device, the
official file's byte size), loader errors, pre/post-processing values, compositing on white, and the try-off's
``background="remove"`` with its flood-fill fallback."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.preprocess.images import whiten_background
from pipelines.preprocess.rmbg import (
    TINY_INPUT_SIZE,
    TINY_WIDTHS,
    BackgroundRemover,
    RMBGNet,
    composite_on_white,
    finish_background,
    load_rmbg,
    postprocess,
    preprocess,
    write_tiny_rmbg,
)
from pipelines.tryoff.pipeline import TryOffAnyonePipeline
from pipelines.types import CheckpointError, ModelUnavailableError, TryOffRequest
from tests.pipelines.test_tryon import box_mask, fresh_registry, noise_image

# briaai/RMBG-1.4: model.safetensors is 176,381,984 bytes (its git-LFS pointer); IS-Net with 44.05M parameters.
OFFICIAL_BYTES = 176_381_984
OFFICIAL_PARAMETERS = 44_046_790
OFFICIAL_TENSORS = 798  # 690 parameters + 3 buffers (running_mean, running_var, num_batches_tracked) x 112 BatchNorms


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_tiny_rmbg(tmp_path_factory.mktemp("rmbg"))


# ------------------------------------------------------------------------------------------ key layout
def test_tiny_writer_round_trip_in_the_official_layout(tiny_folder):
    from safetensors.torch import load_file

    assert sorted(p.name for p in tiny_folder.iterdir()) == ["config.json", "model.safetensors",
                                                             "preprocessor_config.json"]
    config = json.loads((tiny_folder / "config.json").read_text())
    assert config["in_ch"] == 3 and config["out_ch"] == 1
    state = load_file(str(tiny_folder / "model.safetensors"))
    with torch.device("meta"):
        official = RMBGNet()
    assert set(state) == set(official.state_dict())  # the same names as the full-size network
    for key in ("conv_in.weight", "stage1.rebnconv7.conv_s1.weight", "stage5.rebnconv4.bn_s1.running_var",
                "stage1d.rebnconv1d.conv_s1.weight", "stage6.rebnconv3d.bn_s1.num_batches_tracked", "side6.bias"):
        assert key in state, key
    network, report = load_rmbg(tiny_folder)
    assert len(report.loaded) == OFFICIAL_TENSORS and network.input_size == TINY_INPUT_SIZE
    loaded = network.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())
    assert network.widths == TINY_WIDTHS and not network.training
    # the safetensors file itself is accepted too (config.json beside it)
    again, _ = load_rmbg(tiny_folder / "model.safetensors")
    assert torch.equal(again.side1.weight, network.side1.weight)


def test_full_size_architecture_matches_rmbg_1_4(tmp_path):
    with torch.device("meta"):
        network = RMBGNet()
    state = network.state_dict()
    assert sum(p.numel() for p in network.parameters()) == OFFICIAL_PARAMETERS
    assert len(state) == OFFICIAL_TENSORS
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules()) == 112
    shapes = {
        "conv_in.weight": (64, 3, 3, 3),
        "stage1.rebnconvin.conv_s1.weight": (64, 64, 3, 3),
        "stage1.rebnconv1.conv_s1.weight": (32, 64, 3, 3),
        "stage1.rebnconv6d.conv_s1.weight": (32, 64, 3, 3),
        "stage2.rebnconvin.conv_s1.weight": (128, 64, 3, 3),
        "stage4.rebnconv4.conv_s1.weight": (128, 128, 3, 3),
        "stage6.rebnconv1d.conv_s1.weight": (512, 512, 3, 3),
        "stage5d.rebnconvin.conv_s1.weight": (512, 1024, 3, 3),
        "stage4d.rebnconvin.conv_s1.weight": (256, 1024, 3, 3),
        "stage3d.rebnconvin.conv_s1.weight": (128, 512, 3, 3),
        "stage2d.rebnconvin.conv_s1.weight": (64, 256, 3, 3),
        "stage1d.rebnconvin.conv_s1.weight": (64, 128, 3, 3),
        "stage1d.rebnconv1.conv_s1.weight": (16, 64, 3, 3),
        "side1.weight": (1, 64, 3, 3), "side2.weight": (1, 64, 3, 3), "side3.weight": (1, 128, 3, 3),
        "side4.weight": (1, 256, 3, 3), "side5.weight": (1, 512, 3, 3), "side6.weight": (1, 512, 3, 3),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert network.conv_in.stride == (2, 2)
    assert network.stage1.rebnconv7.conv_s1.dilation == (2, 2) and network.stage1.rebnconv6.conv_s1.dilation == (1, 1)
    assert [getattr(network.stage5, f"rebnconv{i}").conv_s1.dilation[0] for i in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert [getattr(network.stage5d, f"rebnconv{i}d").conv_s1.dilation[0] for i in (3, 2, 1)] == [4, 2, 1]


def test_full_size_file_has_the_official_byte_size(tmp_path):
    """Names, shapes and dtypes (num_batches_tracked as int64) decide the safetensors header and data size:
    the full-size state dict written like the hub's file is exactly as long as briaai/RMBG-1.4's."""
    from safetensors.torch import save_file

    with torch.device("meta"):
        state = RMBGNet().state_dict()
    zeros = {key: torch.zeros(value.shape, dtype=value.dtype) for key, value in state.items()}
    save_file(zeros, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    assert (tmp_path / "model.safetensors").stat().st_size == OFFICIAL_BYTES


# -------------------------------------------------------------------------------------- loader errors
def _folder_with(tmp_path, name, tiny_folder, state=None, raw: bytes | None = None, config=None):
    from safetensors.torch import save_file

    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config) if config is not None
                                        else (tiny_folder / "config.json").read_text())
    if raw is not None:
        (folder / "model.safetensors").write_bytes(raw)
    else:
        save_file(state, str(folder / "model.safetensors"))
    return folder


def test_bad_files_are_named_with_the_tensor(tmp_path, tiny_folder):
    from safetensors.torch import load_file

    state = load_file(str(tiny_folder / "model.safetensors"))
    missing = {k: v for k, v in state.items() if k != "stage3.rebnconv2.conv_s1.weight"}
    with pytest.raises(CheckpointError, match=r"missing/model\.safetensors .*missing: stage3\.rebnconv2\.conv_s1\.weight"):
        load_rmbg(_folder_with(tmp_path, "missing", tiny_folder, missing))
    extra = dict(state, **{"side7.weight": torch.zeros(1, 8, 3, 3)})
    with pytest.raises(CheckpointError, match=r"extra/model\.safetensors .*unexpected: side7\.weight"):
        load_rmbg(_folder_with(tmp_path, "extra", tiny_folder, extra))
    shaped = dict(state, **{"side1.weight": torch.zeros(1, 4, 3, 3)})
    with pytest.raises(CheckpointError, match=r"mis-shaped: side1\.weight \(file \(1, 4, 3, 3\), model \(1, 8, 3, 3\)\)"):
        load_rmbg(_folder_with(tmp_path, "shaped", tiny_folder, shaped))
    # a stock u2net-style file (other names) is refused by name too
    renamed = {k.replace("conv_s1", "conv"): v for k, v in state.items()}
    with pytest.raises(CheckpointError,
                       match=r"missing: stage1\.rebnconv1\.conv_s1\.bias.*unexpected: stage1\.rebnconv1\.conv\.bias"):
        load_rmbg(_folder_with(tmp_path, "renamed", tiny_folder, renamed))
    with pytest.raises(CheckpointError, match=r"^model\.safetensors"):
        load_rmbg(_folder_with(tmp_path, "corrupt", tiny_folder, raw=b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}"))
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:46ef7fe46f2a\nsize 176381984\n"
    with pytest.raises(CheckpointError, match="model.safetensors: the file is a git-LFS pointer"):
        load_rmbg(_folder_with(tmp_path, "pointer", tiny_folder, raw=pointer))
    with pytest.raises(CheckpointError, match="out_ch=2"):
        load_rmbg(_folder_with(tmp_path, "twochannels", tiny_folder, state, config={"in_ch": 3, "out_ch": 2}))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelUnavailableError, match="config.json does not exist"):
        load_rmbg(empty)
    with pytest.raises(ModelUnavailableError, match="is not available locally"):
        load_rmbg(tmp_path / "absent")  # neither a folder nor a cached hub repo (the tests run offline)


# ------------------------------------------------------------------------------- pre/post-processing
def test_preprocess_normalises_rgb_with_mean_half_std_one():
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 0, 51
    pixels = preprocess(rgb, 16)
    assert pixels.shape == (1, 3, 16, 16) and pixels.dtype == torch.float32
    assert torch.allclose(pixels[0, :, 3, 3], torch.tensor([0.5, -0.5, -0.3]), atol=1e-6)
    # the resize is bilinear on the float image (align_corners False), as the model card's F.interpolate
    ramp = np.repeat(np.repeat(np.array([[0, 255]], np.uint8), 3, axis=0)[..., None], 3, axis=2)  # (3, 2, 3)
    row = preprocess(ramp, 4)[0, 0, 0]
    assert torch.allclose(row, torch.tensor([0.0, 0.25, 0.75, 1.0]) - 0.5, atol=1e-6)


def test_postprocess_resizes_back_and_min_max_normalises():
    probability = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]]])
    alpha = postprocess(probability, 2, 2)
    assert np.allclose(alpha, [[0.0, 1 / 3], [2 / 3, 1.0]], atol=1e-6) and alpha.dtype == np.float32
    big = postprocess(probability, 30, 20)
    assert big.shape == (30, 20) and big.min() == 0.0 and big.max() == 1.0
    assert big[0, 0] == 0.0 and big[-1, -1] == pytest.approx(1.0)  # bilinear: the corners keep the corner values
    flat = postprocess(torch.full((1, 1, 4, 4), 0.9), 3, 3)  # constant: no 0/0, no resize noise stretched to 0/1
    assert np.allclose(flat, 0.9, atol=1e-6)


def test_composite_on_white_alpha_one_keeps_alpha_zero_whitens():
    image = noise_image(6, 4, 1)
    alpha = np.zeros((4, 6), np.float32)
    alpha[:, :3] = 1.0
    alpha[0, 5] = 0.5
    out, rgb = np.asarray(composite_on_white(image, alpha)), np.asarray(image)
    assert np.array_equal(out[:, :3], rgb[:, :3])
    assert (out[1:, 3:] == 255).all() and (out[0, 3:5] == 255).all()
    assert np.array_equal(out[0, 5], np.round((rgb[0, 5].astype(np.float32) + 255) / 2).astype(np.uint8))
    with pytest.raises(ValueError, match="alpha is 3x4 but the image is 6x4"):
        composite_on_white(image, np.ones((4, 3), np.float32))


def test_remover_with_a_stub_network_output(tiny_folder, monkeypatch):
    network, _ = load_rmbg(tiny_folder)
    remover = BackgroundRemover(network)
    size = network.input_size
    stub = torch.zeros(1, 1, size, size)
    stub[..., : size // 2] = 1.0  # foreground = the left half
    seen = []

    def forward(pixels):
        seen.append(pixels)
        return stub

    monkeypatch.setattr(network, "forward", forward)
    garment = noise_image(32, 40, 2)
    alpha = remover.alpha(garment)
    assert alpha.shape == (40, 32) and seen[0].shape == (1, 3, size, size)
    assert (alpha[:, :16] == 1.0).all() and (alpha[:, 16:] == 0.0).all()
    out, rgb = np.asarray(remover.on_white(garment)), np.asarray(garment)
    assert np.array_equal(out[:, :16], rgb[:, :16])  # the garment, exactly
    assert (out[:, 16:] == 255).all()  # the background, white


def test_real_tiny_network_gives_a_full_range_alpha(tiny_folder):
    network, _ = load_rmbg(tiny_folder)
    alpha = BackgroundRemover(network).alpha(noise_image(30, 40, 3))
    assert alpha.shape == (40, 30) and alpha.min() == 0.0 and alpha.max() == 1.0
    assert 0.0 < float(alpha.mean()) < 1.0


# ---------------------------------------------------------------------------------- try-off integration
@pytest.fixture(scope="module")
def person():
    return noise_image(60, 80, 5)


def tryoff_request(person, **overrides) -> TryOffRequest:
    values = dict(person=person, mask=box_mask(person.size, (10, 20, 50, 70)), auto_mask=False, height=64, width=48,
                  num_inference_steps=2, background="remove")
    values.update(overrides)
    return TryOffRequest(**values)


def test_tryoff_remove_uses_the_presets_rmbg_shared_in_the_registry(models_dir, person):
    registry = fresh_registry(models_dir)
    result = TryOffAnyonePipeline.from_registry(registry)(tryoff_request(person))
    assert result.params["background"] == "remove" and result.params["background_used"] == "remove"
    assert "unavailable" not in result.note
    remover = BackgroundRemover.shared(registry)
    assert remover.network is BackgroundRemover.shared(registry).network  # loaded once, shared
    assert any(m.name.startswith("rmbg:") for m in registry.status().loaded)
    expected = remover.on_white(result.raw_images[0])
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(expected))
    assert not np.array_equal(np.asarray(expected), np.asarray(whiten_background(result.raw_images[0])))


@pytest.mark.parametrize("location", [None, "missing_folder", "corrupt"])
def test_tryoff_remove_falls_back_to_the_flood_fill_with_a_note(models_dir, person, tmp_path, location):
    registry = fresh_registry(models_dir)
    if location is None:
        registry.preset.models.pop("rmbg")
        said = "the tiny preset names no background-removal weights"
    elif location == "missing_folder":
        registry.preset.models["rmbg"] = str(tmp_path / "nowhere")
        said = "nowhere"
    else:
        folder = tmp_path / "corrupt"
        folder.mkdir()
        (folder / "config.json").write_text('{"in_ch": 3, "out_ch": 1}')
        (folder / "model.safetensors").write_bytes(b"")
        registry.preset.models["rmbg"] = str(folder)
        said = "model.safetensors: the file is empty"
    result = TryOffAnyonePipeline.from_registry(registry)(tryoff_request(person))
    assert result.params["background_used"] == "white"
    assert "background removal (RMBG-1.4) unavailable, whitened by flood fill instead" in result.note
    assert said in result.note, result.note
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(whiten_background(result.raw_images[0])))


def test_finish_background_contract():
    images = [noise_image(8, 8, 7)]
    kept, note, used = finish_background(images, "keep", 40, None)
    assert kept[0] is images[0] and note == "" and used == "keep"
    white, note, used = finish_background(images, "white", 40, lambda: pytest.fail("not asked for"))
    assert used == "white" and note == ""
    fallback, note, used = finish_background(images, "remove", 40, None)
    assert used == "white" and "no background-removal model was given" in note
    assert np.array_equal(np.asarray(fallback[0]), np.asarray(white[0]))


def test_temu_remove_uses_the_same_background_step(tiny_registry):
    from pipelines.temu.pipeline import TemuTryOffPipeline
    from tests.pipelines.test_temu import request as temu_request

    result = TemuTryOffPipeline.from_registry(tiny_registry)(temu_request(background="remove"))
    assert result.params["background_used"] == "remove" and "unavailable" not in result.note
    expected = BackgroundRemover.shared(tiny_registry).on_white(result.raw_images[0])
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(expected))


def test_cli_background_remove_with_a_local_rmbg_folder(models_dir, tiny_folder, person, tmp_path):
    from pipelines.preprocess.images import read_png_params
    from pipelines.tryoff.cli import main

    person.save(tmp_path / "worn.png")
    box_mask(person.size, (10, 20, 50, 70)).save(tmp_path / "mask.png")
    out = tmp_path / "garment.png"
    code = main(["--person", str(tmp_path / "worn.png"), "--mask", str(tmp_path / "mask.png"), "--preset", "tiny",
                 "--models_dir", str(models_dir), "--steps", "2", "--height", "64", "--width", "48",
                 "--background", "remove", "--rmbg", str(tiny_folder), "--output_path", str(out)])
    assert code == 0
    params = read_png_params(out)
    assert params["background"] == "remove" and params["background_used"] == "remove"
