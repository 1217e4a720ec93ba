"""Pose design and attribute editing (EquiFashion): the ControlLDM converter on a tiny checkpoint in the original
layout (exact round trip, refusals naming the tensor), drafts that follow the pose, edits that keep the rest."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.core.registry import ModelRegistry
from pipelines.core.sampling import RunControl
from pipelines.core.tiny import tiny_tokenizer
from pipelines.posedesign.checkpoints import (
    PREFIXES,
    controlldm_state,
    load_controlldm,
    read_original_config,
    tiny_modules,
    tiny_original_config,
)
from pipelines.posedesign.cli import main
from pipelines.posedesign.pipeline import (
    PoseDesignPipeline,
    attribute_region,
    canvas_size,
    compose_prompt,
    run_edit_task,
    run_task,
)
from pipelines.preprocess.pose import draw_openpose, load_pose_preset
from pipelines.types import AttributeEditRequest, CheckpointError, GenerationCancelled, PoseDesignRequest

STEPS = 3


@pytest.fixture(scope="module")
def registry(models_dir):
    return ModelRegistry("tiny", device="cpu", dtype="fp32", models_dir=models_dir)


@pytest.fixture(scope="module")
def pipeline(registry):
    return PoseDesignPipeline.from_registry(registry, "equifashion")


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_models):
    folder = tiny_models / "checkpoints" / "equifashion"
    return folder / "eqf_tiny.ckpt", folder / "cldm_tiny.yaml"


def skeleton(name: str, size=(64, 64)) -> Image.Image:
    return draw_openpose(load_pose_preset(name).keypoints, *size)


# ------------------------------------------------------------------------------------------ converter
def test_controlldm_checkpoint_converts_exactly(tiny_ckpt):
    """Every module loaded from the original layout computes exactly what the modules it was written from do."""
    path, config = tiny_ckpt
    loaded = load_controlldm(path, config)
    reference = tiny_modules(tiny_original_config(), len(tiny_tokenizer()))
    torch.manual_seed(0)
    x, t, context = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, 64)
    hint = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.unet(x, t, context).sample, reference["unet"](x, t, context).sample)
        ours = loaded.controlnet(x, t, context, controlnet_cond=hint, return_dict=False)
        theirs = reference["controlnet"](x, t, context, controlnet_cond=hint, return_dict=False)
        for a, b in zip([*ours[0], ours[1]], [*theirs[0], theirs[1]]):
            assert torch.equal(a, b)
        assert ours[1].abs().max() > 0  # the tiny ControlNet's zero convolutions carry signal
        image = torch.rand(1, 3, 64, 64) * 2 - 1
        assert torch.equal(loaded.vae.encode(image).latent_dist.mean, reference["vae"].encode(image).latent_dist.mean)
        ids = torch.randint(0, 100, (1, 77))
        assert torch.equal(loaded.text_encoder(ids)[0], reference["text_encoder"](ids)[0])
    # the penultimate OpenCLIP layer: the file's 3 blocks -> 2 used; the last one, the schedule buffers and a
    # training-only module are reported as ignored
    assert loaded.text_encoder.config.num_hidden_layers == 2
    assert "cond_stage_model.model.transformer.resblocks.2.attn.in_proj_weight" in loaded.report.ignored
    assert {"alphas_cumprod", "betas", "semantic_bundle.proj.weight"} <= set(loaded.report.ignored)


def test_sd21_base_config_is_eps_at_512():
    original = read_original_config()
    params = original["model"]["params"]
    assert "parameterization" not in params and params["image_size"] == 64
    from pipelines.posedesign.checkpoints import controlnet_config, unet_config

    unet = unet_config(original)
    assert unet["cross_attention_dim"] == 1024 and unet["use_linear_projection"]
    assert unet["attention_head_dim"] == [5, 10, 20, 20]  # 64-channel heads per level, as SD2.1
    assert unet["down_block_types"] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert controlnet_config(original)["conditioning_channels"] == 3


def test_shipped_config_builds_the_real_sd21_base_shapes():
    """On the meta device (no memory): the modules our configs build have the parameter counts of SD2.1-base's
    UNet, VAE and (23-layer, penultimate) OpenCLIP ViT-H text encoder in diffusers, and of an SD2.1 ControlNet."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from pipelines.posedesign.checkpoints import controlnet_config, text_config, unet_config, vae_config

    original = read_original_config()
    openclip = {"token_embedding.weight": torch.empty(49408, 1024, device="meta"),
                "positional_embedding": torch.empty(77, 1024, device="meta"),
                "text_projection": torch.empty(1024, 1024, device="meta"),
                **{f"transformer.resblocks.{i}.mlp.c_fc.weight": torch.empty(4096, 1024, device="meta") for i in range(24)}}
    with init_empty_weights():
        modules = [UNet2DConditionModel(**unet_config(original)), ControlNetModel(**controlnet_config(original)),
                   AutoencoderKL(**vae_config(original)), CLIPTextModel(CLIPTextConfig(**text_config(original, openclip)))]
    counts = [sum(p.numel() for p in module.parameters()) for module in modules]
    assert counts == [865_910_724, 364_228_240, 83_653_863, 340_387_840]


def test_v_prediction_config_is_refused(tmp_path):
    original = read_original_config()
    original["model"]["params"]["parameterization"] = "v"
    path = tmp_path / "v.yaml"
    path.write_text(json.dumps(original))
    with pytest.raises(CheckpointError, match="parameterization 'v'"):
        read_original_config(path)


def test_mis_shaped_tensor_is_named(tmp_path, tiny_ckpt):
    path, config = tiny_ckpt
    checkpoint = torch.load(path, weights_only=True)
    key = PREFIXES["controlnet"] + "input_blocks.1.1.proj_in.weight"
    checkpoint["state_dict"][key] = checkpoint["state_dict"][key][:, :16].clone()
    bad = tmp_path / "bad.ckpt"
    torch.save(checkpoint, bad)
    with pytest.raises(CheckpointError) as error:
        load_controlldm(bad, config)
    message = str(error.value)
    assert "bad.ckpt" in message and key in message and "down_blocks.0.attentions.0.proj_in.weight" in message
    assert "file (32, 16), model (32, 32)" in message


def test_missing_tensor_and_wrong_files_are_refused(tmp_path, tiny_ckpt):
    path, config = tiny_ckpt
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["state_dict"][PREFIXES["unet"] + "out.2.weight"]
    torch.save(checkpoint, tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="unet of its config: missing conv_out.weight"):
        load_controlldm(tmp_path / "missing.ckpt", config)
    torch.save({"state_dict": {"foo.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a ControlLDM checkpoint"):
        load_controlldm(tmp_path / "other.ckpt", config)
    (tmp_path / "cut.ckpt").write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.ckpt"):
        load_controlldm(tmp_path / "cut.ckpt", config)


def test_safetensors_file_of_the_same_layout_loads(tmp_path, tiny_ckpt):
    from safetensors.torch import save_file

    _, config = tiny_ckpt
    state = controlldm_state(tiny_modules(tiny_original_config(), len(tiny_tokenizer())))
    save_file(state, str(tmp_path / "eqf.safetensors"))
    loaded = load_controlldm(tmp_path / "eqf.safetensors", config)
    assert loaded.report.num_parameters > 0 and not [k for k in loaded.report.ignored if "diffusion_model" in k]


# ------------------------------------------------------------------------------------------ drafts
def test_canvas_follows_their_resize_image():
    assert canvas_size(512, 768, 512) == (512, 768)
    assert canvas_size(300, 400, 512) == (512, 704)
    assert canvas_size(1000, 1000, 256) == (256, 256)
    assert compose_prompt("Dress", " a red dress ", "best quality") == "dress, a red dress, best quality"


def test_the_pose_steers_the_draft_and_strength_zero_removes_it(pipeline):
    def draft(pose, strength=1.0, guess=False):
        request = PoseDesignRequest(prompt="a red dress", pose_image=skeleton(pose), resolution=64,
                                    num_inference_steps=STEPS, control_strength=strength, guess_mode=guess,
                                    white_background=False, seed=3)
        return np.asarray(pipeline.draft(request).images[0]).astype(int)

    walking, crossed = draft("walking"), draft("arms_crossed")
    # another pose, another image (the tiny random VAE flattens every difference: ~0.3 grey levels here)
    assert np.abs(walking - crossed).mean() > 0.1
    assert np.array_equal(draft("walking", 0.0), draft("arms_crossed", 0.0))  # ablation: no control, no pose
    assert np.abs(draft("walking", guess=True) - walking).mean() > 0.1  # guess mode: control on the positive half
    assert np.array_equal(draft("walking"), walking)  # same seed, same image


def test_draft_task_keeps_the_pose_keypoints_and_whitens(registry):
    result = run_task(registry, {"prompt": "a coat", "category": "Coat", "pose_preset": "walking", "resolution": 64,
                                 "num_inference_steps": 2, "num_images": 2}, RunControl())
    assert len(result.images) == 2 and result.params[1]["seed"] == result.params[0]["seed"] + 1
    assert result.params[0]["keypoints"] == [None if p is None else [round(p[0], 4), round(p[1], 4)]
                                             for p in load_pose_preset("walking").keypoints]
    assert result.params[0]["pose_source"] == "preset walking"
    raw, white = np.asarray(result.extras["raw"][0]), np.asarray(result.images[0])
    changed = np.any(raw != white, axis=2)
    assert np.all(white[changed] == 255)  # the background flood fill only ever paints white


def test_sd15_openpose_variant_runs_on_the_base_model(registry):
    result = run_task(registry, {"prompt": "a skirt", "category": "Skirt", "weights": "sd15_openpose",
                                 "pose_preset": "walking", "resolution": 64, "num_inference_steps": 2}, RunControl())
    assert result.images[0].size == (64, 64) and result.params[0]["weights"] == "sd15_openpose"


@pytest.mark.parametrize("change, message", [
    ({"category": "Hat"}, "category='Hat'"),
    ({"resolution": 2048}, "resolution=2048"),
    ({"control_strength": 3.0}, "control_strength=3.0"),
    ({"pose_image": None}, "a pose is needed"),
    ({"num_images": 9}, "num_images=9"),
])
def test_bad_draft_requests(pipeline, change, message):
    request = PoseDesignRequest(prompt="x", pose_image=skeleton("walking"), resolution=64, num_inference_steps=2)
    for key, value in change.items():
        setattr(request, key, value)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        pipeline.draft(request)


# ------------------------------------------------------------------------------------------ regions
def test_automatic_regions_follow_the_pose():
    keypoints = load_pose_preset("standing_front").keypoints
    size = (96, 128)

    def covers(mask, index):
        x, y = keypoints[index]
        return np.asarray(mask)[int(y * size[1]), int(x * size[0])] > 0

    sleeves = attribute_region(keypoints, size, "Dress", "sleeve_length")
    assert covers(sleeves, 3) and covers(sleeves, 6) and covers(sleeves, 4)  # elbows, wrist
    assert not covers(sleeves, 9) and not covers(sleeves, 0)  # not the knee, not the face
    length = attribute_region(keypoints, size, "Dress", "length")
    assert covers(length, 9) and covers(length, 12) and not covers(length, 1)
    collar = attribute_region(keypoints, size, "Blouse", "collar")
    assert covers(collar, 1) and not covers(collar, 8)
    hem_pants = np.asarray(attribute_region(keypoints, size, "Pant", "hem")) > 0
    hem_blouse = np.asarray(attribute_region(keypoints, size, "Blouse", "hem")) > 0
    assert np.nonzero(hem_pants)[0].mean() > np.nonzero(hem_blouse)[0].mean() + 20  # ankles below hips
    cut = list(keypoints)
    cut[8] = cut[11] = None
    with pytest.raises(ValueError, match=r"pose points \[8, 11\].*paint the region"):
        attribute_region(cut, size, "Dress", "length")


# ------------------------------------------------------------------------------------------ edits
def photo(seed=0, size=(96, 128)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.full((size[1], size[0], 3), 200, np.uint8)
    base[20:110, 25:70] = rng.integers(0, 255, (90, 45, 3))
    return Image.fromarray(base)


def box_mask(size=(96, 128), box=(20, 40, 76, 100)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def test_edit_keeps_the_unmasked_region_and_changes_the_masked_one(pipeline):
    image, mask = photo(), box_mask()
    inside = np.asarray(mask) > 0

    def edit(region, paste):
        request = AttributeEditRequest(image=image, prompt="long sleeves", attribute="sleeve_length", mask=region,
                                       resolution=64, num_inference_steps=8, paste_mode=paste, seed=5)
        return pipeline.edit(request)

    # latents outside the region are re-noised from the original's before every step: at the end they are the
    # original's up to the last step's noise; with the whole image editable (ablation) they are not
    from pipelines.core.sampling import image_to_tensor, vae_encode
    from pipelines.preprocess.framing import fit_to_canvas

    result = edit(mask, "none")
    width, height = result.params["width"], result.params["height"]
    with torch.no_grad():
        x0 = vae_encode(pipeline.vae, image_to_tensor(fit_to_canvas(image, width, height, "stretch")[0], width, height))
    cells = torch.nn.functional.max_pool2d(
        torch.nn.functional.interpolate(torch.from_numpy(inside[None, None].astype(np.float32)), size=(height, width)), 8)
    keep = cells[0, 0] == 0
    kept = (result.latents - x0).abs()[0].mean(0)
    free = (edit(Image.new("L", image.size, 255), "none").latents - x0).abs()[0].mean(0)
    assert keep.any() and (~keep).any()
    assert kept[keep].mean() < 0.05 * kept[~keep].mean(), (kept[keep].mean(), kept[~keep].mean())
    assert kept[keep].mean() < 0.05 * free[keep].mean(), (kept[keep].mean(), free[keep].mean())
    # pasted back (feathered, the default): every pixel outside the region is the original's, inside changes
    pasted = np.asarray(edit(mask, "feathered").images[0]).astype(int)
    original = np.asarray(image).astype(int)
    assert np.array_equal(pasted[~inside], original[~inside])
    assert np.abs(pasted[inside] - original[inside]).mean() > 10


def test_attribute_sets_the_start_step(pipeline):
    """A1 length re-runs 92 of 100 DDIM steps (from t=911), A5 hem 60 (from t=591): stopped after the first step."""
    for attribute, start, timestep in (("length", 8, 911), ("hem", 40, 591)):
        request = AttributeEditRequest(image=photo(), prompt="x", attribute=attribute, mask=box_mask(), resolution=64,
                                       num_inference_steps=100)
        steps: list = []
        control = RunControl(stop_event=threading.Event())

        def first_step(info, sink=steps, stop=control.stop_event):
            sink.append(info)
            stop.set()

        control.callback = first_step
        with pytest.raises(GenerationCancelled):
            pipeline.edit(request, control)
        assert steps[0].total == 100 - start
        scheduler = pipeline.scheduler_factory()
        scheduler.set_timesteps(100)
        assert int(scheduler.timesteps[start]) == timestep


def test_edit_task_finds_the_region_or_says_to_paint(registry):
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="paint the region"):
        run_edit_task(registry, {"image": noise, "prompt": "x", "attribute": "collar", "resolution": 64,
                                 "num_inference_steps": 2}, RunControl())
    result = run_edit_task(registry, {"image": noise, "prompt": "x", "attribute": "collar", "resolution": 64,
                                      "num_inference_steps": 2, "keypoints": load_pose_preset("walking").keypoints},
                           RunControl())
    assert np.asarray(result.extras["mask"]).any() and result.images[0].size == noise.size


@pytest.mark.parametrize("change, message", [
    ({"mask": Image.new("L", (10, 10), 255)}, "edit region"),
    ({"mask": Image.new("L", (96, 128), 0)}, "the edit region is empty"),
    ({"mask": None}, "no edit region"),
    ({"attribute": "pockets"}, "attribute='pockets'"),
    ({"strength": 1.5}, "strength=1.5"),
    ({"paste_mode": "glue"}, "paste_mode='glue'"),
    ({"image": None}, "image to edit image is missing"),
])
def test_bad_edit_requests(pipeline, change, message):
    request = AttributeEditRequest(image=photo(), prompt="x", mask=box_mask(), resolution=64, num_inference_steps=2)
    for key, value in change.items():
        setattr(request, key, value)
    with pytest.raises(ValueError, match=message):
        pipeline.edit(request)


# ------------------------------------------------------------------------------------------ command line
def test_cli_draft_edit_and_convert(tmp_path, models_dir, tiny_ckpt, capsys):
    from diffusers import StableDiffusionControlNetPipeline

    from pipelines.preprocess.images import read_png_params

    common = ["--preset", "tiny", "--models_dir", str(models_dir), "--steps", "2", "--resolution", "64"]
    assert main(["draft", *common, "--prompt", "a dress", "--pose_preset", "walking",
                 "--output_path", str(tmp_path / "out")]) == 0
    [draft] = list((tmp_path / "out").glob("draft_*.png"))
    assert read_png_params(draft)["keypoints"] is not None
    assert main(["edit", *common, "--image", str(draft), "--attribute", "hem", "--prompt", "a ruffled hem",
                 "--output_path", str(tmp_path / "out")]) == 0  # the automatic region from the draft's stored pose
    [edit] = list((tmp_path / "out").glob("edit_*.png"))
    assert read_png_params(edit)["attribute"] == "hem"
    path, config = tiny_ckpt
    target = tmp_path / "converted"
    assert main(["convert", "--checkpoint", str(path), "--original_config", str(config),
                 "--tokenizer", str(path.parent), "--output_path", str(target)]) == 0
    converted = StableDiffusionControlNetPipeline.from_pretrained(str(target), safety_checker=None)
    assert converted.scheduler.config.prediction_type == "epsilon"
    assert main(["convert", "--checkpoint", str(path), "--output_path", str(target)]) == 2  # never overwritten
    assert "not empty" in capsys.readouterr().err
    assert main(["draft", *common, "--prompt", "x", "--pose_preset", "walking", "--checkpoint",
                 str(tmp_path / "nope.ckpt")]) == 2
