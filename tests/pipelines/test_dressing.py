"""Multi-garment dressing on the tiny preset: 1/2/4 garments, slots, pose, guidance, restoration, bad inputs, CLI."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.core.sampling import RunControl
from pipelines.types import GenerationCancelled
from pipelines.dressing.pipeline import DressingPipeline, fit_on_white, guidance_weights
from pipelines.dressing.cli import main
from pipelines.types import DressingRequest, Garment, MAX_GARMENTS
from pipelines.dressing.checkpoints import SlotLoRAs
from pipelines.core.registry import ModelRegistry

STEPS = 2
SIZE = dict(height=80, width=64)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny tensors: extra threads only add contention on the 2-core machines (10x slower under load).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def registry(models_dir):
    # Our own registry: the pose test perturbs this registry's ControlNet.
    return ModelRegistry("tiny", device="cpu", dtype="fp32", models_dir=models_dir)


@pytest.fixture(scope="module")
def pipeline(registry):
    return DressingPipeline.from_registry(registry, need_pose=True)


def noise_image(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    channels = 4 if mode == "RGBA" else 3
    array = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    if mode == "RGBA":
        array[..., 3] = 0
        array[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4, 3] = 255
    return Image.fromarray(array, mode)


GARMENTS = [
    Garment(noise_image(48, 96, 1), "upper"),  # tall
    Garment(noise_image(120, 40, 2, "RGBA"), "lower"),  # wide, transparent background
    Garment(noise_image(64, 64, 3), "hat"),
    Garment(noise_image(200, 150, 4), "shoes"),
]


def run(pipeline, garments, **kwargs) -> np.ndarray:
    request = DressingRequest(garments=list(garments), num_inference_steps=STEPS, **{**SIZE, **kwargs})
    result = pipeline(request)
    return np.stack([np.asarray(image, dtype=np.float32) for image in result.images])


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.abs(a - b).mean()) > 0.1


def test_one_two_four_garments_shapes_and_determinism(pipeline):
    outputs = {}
    for count in (1, 2, 4):
        request = DressingRequest(garments=GARMENTS[:count], num_inference_steps=STEPS, num_images=2, seed=7, **SIZE)
        result = pipeline(request)
        assert [image.size for image in result.images] == [(64, 80), (64, 80)]
        assert result.seeds == [7, 8]
        assert result.params["num_garments"] == count and result.params["task"] == "dressing"
        assert [g.size for g in result.garments] == [(64, 80)] * count
        outputs[count] = np.stack([np.asarray(i, dtype=np.float32) for i in result.images])
    again = run(pipeline, GARMENTS[:2], num_images=2, seed=7)
    np.testing.assert_array_equal(again, outputs[2])
    # every added garment changes the result
    assert differs(outputs[1], outputs[2]) and differs(outputs[2], outputs[4])
    # image i of a batch is reproducible alone with seed + i
    np.testing.assert_array_equal(run(pipeline, GARMENTS[:2], seed=8)[0], outputs[2][1])


def test_each_garment_matters_and_lambda_zero_ignores_them(pipeline):
    base = run(pipeline, GARMENTS[:2])
    assert differs(base, run(pipeline, [GARMENTS[0], GARMENTS[2]]))
    assert differs(base, run(pipeline, [GARMENTS[2], GARMENTS[1]]))
    assert differs(base, run(pipeline, GARMENTS[:2], garment_scale=1.2))
    # lambda = 0: the garments have no influence at all
    np.testing.assert_array_equal(run(pipeline, GARMENTS[:1], garment_scale=0.0), run(pipeline, GARMENTS[2:3], garment_scale=0.0))


def test_slot_order_with_and_without_slot_loras(pipeline):
    forward, backward = GARMENTS[:2], GARMENTS[1::-1]
    # Untrained (zero) slot LoRAs: Dressing-Attention over concatenated tokens does not depend on order.
    np.testing.assert_allclose(run(pipeline, forward), run(pipeline, backward), atol=1.0)
    loras = SlotLoRAs.for_unet(pipeline.garment_unet, labels=("0", "1"), rank=4)
    with torch.no_grad():
        for layer in loras.layers.values():
            layer.up.normal_(0, 0.5)
            layer.up[:, 1].mul_(-3.0)  # slot 1 clearly different from slot 0
    assert loras.is_active()
    pipeline.slot_loras = loras
    try:
        with_loras = run(pipeline, forward)
        assert differs(with_loras, run(pipeline, backward))  # slot i uses set i: order now matters
        assert differs(with_loras, run_without(pipeline, forward))  # the LoRAs act
        assert pipeline.slot_ids_for(DressingRequest(garments=forward)) == [0, 1]
        # A set named after a category wins over the position.
        named = SlotLoRAs.for_unet(pipeline.garment_unet, labels=("lower", "upper"), rank=2)
        assert named.slot_for(0, "upper") == 1 and named.slot_for(1, "lower") == 0 and named.slot_for(0, "hat") == -1
    finally:
        pipeline.slot_loras = None


def run_without(pipeline, garments) -> np.ndarray:
    saved, pipeline.slot_loras = pipeline.slot_loras, None
    try:
        return run(pipeline, garments)
    finally:
        pipeline.slot_loras = saved


def test_pose_controlnet_changes_output(pipeline):
    from pipelines.preprocess.pose import draw_openpose, load_pose_preset

    # The tiny ControlNet comes with zero-initialised convolutions (as a fresh ControlNet): give them
    # weights as training would, so the pose has an effect to observe.
    controlnet = pipeline.controlnet
    with torch.no_grad():
        zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
        for conv in [*zero_convs, controlnet.controlnet_cond_embedding.conv_out]:
            conv.weight.normal_(0, 0.3)
    pose = draw_openpose(load_pose_preset("walking").keypoints, 64, 80)
    other = draw_openpose(load_pose_preset("arms_crossed").keypoints, 64, 80)
    plain = run(pipeline, GARMENTS[:2])
    posed = run(pipeline, GARMENTS[:2], pose_image=pose)
    assert differs(plain, posed)
    # A different skeleton gives a different image (weakly in the tiny world: thin limbs at 64x80).
    assert not np.array_equal(posed, run(pipeline, GARMENTS[:2], pose_image=other))
    np.testing.assert_array_equal(plain, run(pipeline, GARMENTS[:2], pose_image=pose, pose_scale=0.0))


def test_joint_guidance_weights_and_branches(pipeline):
    assert guidance_weights(6.5, 6.5) == {"u": -5.5, "tc": 6.5}
    assert guidance_weights(5.0, 2.0) == {"u": -1.0, "c": -3.0, "tc": 5.0}
    assert guidance_weights(1.0, 1.0) == {"tc": 1.0}
    same = run(pipeline, GARMENTS[:1], guidance_scale=5.0, garment_guidance_scale=5.0)
    assert differs(same, run(pipeline, GARMENTS[:1], guidance_scale=5.0, garment_guidance_scale=2.0))
    np.testing.assert_array_equal(same, run(pipeline, GARMENTS[:1], guidance_scale=5.0, garment_guidance_scale=None))


def test_processors_restored_after_call_and_after_stop(pipeline):
    unet_before = dict(pipeline.unet.attn_processors)
    garment_before = dict(pipeline.garment_unet.attn_processors)
    run(pipeline, GARMENTS[:2])
    assert all(unet_before[k] is v for k, v in pipeline.unet.attn_processors.items())
    assert all(garment_before[k] is v for k, v in pipeline.garment_unet.attn_processors.items())
    stop = threading.Event()
    seen = []

    def callback(info):
        seen.append(info.step)
        stop.set()  # Stop pressed during the first step

    request = DressingRequest(garments=GARMENTS[:2], num_inference_steps=4, **SIZE)
    with pytest.raises(GenerationCancelled):
        pipeline(request, RunControl(callback=callback, stop_event=stop))
    assert seen == [1]
    assert all(unet_before[k] is v for k, v in pipeline.unet.attn_processors.items())
    assert all(garment_before[k] is v for k, v in pipeline.garment_unet.attn_processors.items())
    assert all(not p.state.features and not p.state.kv_cache for p in pipeline.dressing_processors.values())


def test_progress_previews(pipeline):
    infos = []
    request = DressingRequest(garments=GARMENTS[:1], num_inference_steps=2, **SIZE)
    pipeline(request, RunControl(callback=infos.append, preview_every=1))
    assert [(i.stage, i.step, i.total) for i in infos] == [("dressing", 1, 2), ("dressing", 2, 2)]
    assert all(i.preview is not None for i in infos)


@pytest.mark.parametrize(
    "garments, message",
    [
        ([], "at least one garment"),
        ([Garment("not/a/file.png")], "garment 1 image: file not found"),
        ([Garment(42)], "garment 1 is not an image"),
        ([Garment(noise_image(64, 64, 1))] * (MAX_GARMENTS + 1), f"at most {MAX_GARMENTS}"),
        ([Garment(noise_image(64, 64, 1), "cape")], "unknown category 'cape'"),
        ([noise_image(64, 64, 1)], "must be a Garment"),
    ],
)
def test_bad_garments(pipeline, garments, message):
    with pytest.raises(ValueError, match=message):
        pipeline(DressingRequest(garments=garments, num_inference_steps=STEPS, **SIZE))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(garment_scale=2.0), "garment_scale=2.0"),
        (dict(guidance_scale=-1.0), "guidance_scale=-1.0"),
        (dict(height=70), "height=70"),
        (dict(num_images=0), "num_images=0"),
        (dict(pose_image="pose.png"), "pose_image is not an image"),
    ],
)
def test_bad_settings(pipeline, kwargs, message):
    request = DressingRequest(garments=GARMENTS[:1], num_inference_steps=STEPS, **{**SIZE, **kwargs})
    with pytest.raises(ValueError, match=message):
        pipeline(request)


def test_fit_on_white_keeps_aspect():
    image = fit_on_white(Image.new("RGB", (100, 50), (0, 0, 0)), 64, 80)
    array = np.asarray(image)
    assert image.size == (64, 80)
    assert (array[0] == 255).all() and (array[40, :] == 0).all()  # white bands above, garment across


def test_cli_with_pose_preset_and_lora(models_dir, tmp_path, registry):
    from pipelines.core.lora import write_tiny_kohya_lora
    from pipelines.preprocess.images import read_png_params

    for index, garment in enumerate(GARMENTS[:2]):
        garment.image.save(tmp_path / f"g{index}.png")
    lora = write_tiny_kohya_lora(tmp_path / "style.safetensors", registry.get("unet"), registry.get("text_encoder"))
    out = tmp_path / "out"
    code = main([
        "--preset", "tiny", "--models_dir", str(models_dir), "--device", "cpu",
        "--garment", str(tmp_path / "g0.png"), "--garment", str(tmp_path / "g1.png"),
        "--category", "upper", "--category", "lower", "--pose_preset", "walking",
        "--lora", f"{lora}:0.8", "--steps", "2", "--seed", "3", "--output_path", str(out),
        "--guidance_scale", "5", "--garment_guidance_scale", "3",
    ])
    assert code == 0
    files = sorted(out.glob("*.png"))
    assert len(files) == 1 and Image.open(files[0]).size == (64, 80)
    params = read_png_params(files[0])
    assert params["garment_categories"] == ["upper", "lower"] and params["has_pose"] is True
    assert params["loras"] == ["style.safetensors:0.8"]


def test_cli_reports_bad_input(models_dir, tmp_path, capsys):
    code = main(["--preset", "tiny", "--models_dir", str(models_dir), "--garment", str(tmp_path / "missing.png")])
    assert code == 2
    assert "file not found" in capsys.readouterr().err
