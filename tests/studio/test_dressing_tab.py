"""The dressing tab: form logic, building the tab, and the service tasks it calls (tiny preset)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studio.tabs import dressing as tab

DEFAULTS = {"height": 80, "width": 64}


def form(**overrides):
    values = {
        "slot_count": 2, "prompt": "a woman", "negative_prompt": "nude", "pose_source": "None", "skeleton": None,
        "pose_scale": 1.0, "lora_file": None, "lora_weight": 0.8, "garment_scale": 0.85, "steps": 2,
        "guidance_scale": 6.5, "garment_guidance_scale": 4.0, "seed": 5, "num_images": 1,
    }
    for index in range(tab.MAX_GARMENTS):
        values[f"garment_{index}"] = None
        values[f"category_{index}"] = tab.SLOT_DEFAULTS[index]
    values.update(overrides)
    return values


def garment(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (90, 60, 4), dtype=np.uint8), "RGBA")


def test_form_needs_a_garment_and_ignores_hidden_slots():
    with pytest.raises(ValueError, match="at least one garment"):
        tab.build_request(form(), DEFAULTS)
    with pytest.raises(ValueError, match="at least one garment"):
        tab.build_request(form(slot_count=1, garment_2=garment(1)), DEFAULTS)  # slot 3 is hidden
    params = tab.build_request(form(garment_0=garment(1), garment_1=garment(2), category_1="dress"), DEFAULTS)
    assert [g["category"] for g in params["garments"]] == ["upper", "dress"]
    assert params["garments"][0]["image"].mode == "RGB"  # transparency flattened onto white
    assert params["height"] == 80 and params["garment_guidance_scale"] == 4.0 and params["pose_image"] is None


def test_form_pose_and_lora_rules(tmp_path):
    with pytest.raises(ValueError, match="no skeleton yet: pick a pose preset"):
        tab.build_request(form(garment_0=garment(1), pose_source="Preset"), DEFAULTS)
    with pytest.raises(ValueError, match=".safetensors"):
        tab.build_request(form(garment_0=garment(1), lora_file=str(tmp_path / "x.ckpt")), DEFAULTS)
    skeleton = Image.new("RGB", (64, 80))
    params = tab.build_request(
        form(garment_0=garment(1), pose_source="Preset", skeleton=skeleton, lora_file=str(tmp_path / "s.safetensors")),
        DEFAULTS,
    )
    assert params["pose_image"].size == (64, 80) and params["loras"] == [(str(tmp_path / "s.safetensors"), 0.8)]


@pytest.fixture(scope="module")
def service(models_dir):
    from pipelines.service import StudioService, TASKS

    # Until the lead registers them in pipelines/service.py (see the hand-back report).
    TASKS.setdefault("dressing", "pipelines.dressing.pipeline:run_task")
    TASKS.setdefault("dressing_pose", "pipelines.dressing.pipeline:run_pose_task")
    return StudioService("tiny", device="cpu", dtype="fp32", models_dir=models_dir)


def test_tab_builds_and_the_service_dresses(service, tmp_path):
    import gradio as gr
    import torch

    from studio.components import OutputStore, StudioContext

    ctx = StudioContext(service=service, outputs=OutputStore(tmp_path / "outputs"))
    with gr.Blocks():
        parts = tab.build_dressing_tab(ctx)
    assert "gallery" in parts and "garment_3" in parts and ctx.targets["dressing_garment"][1] == "dressing"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pose = service.run("dressing_pose", {"preset": "walking", "width": 64, "height": 80})
        assert pose.images[0].size == (64, 80) and "preset" in pose.extras["source"]
        params = tab.build_request(
            form(garment_0=garment(1), garment_1=garment(2), pose_source="Preset", skeleton=pose.images[0]),
            service.defaults("dressing"),
        )
        params["num_inference_steps"] = 2
        steps = []
        result = service.run("dressing", params, steps.append)
    finally:
        torch.set_num_threads(threads)
    assert len(result.images) == 1 and result.images[0].size == (64, 80)
    assert result.params[0]["garment_categories"] == ["upper", "lower"] and result.params[0]["has_pose"]
    assert len(steps) == 2 and len(result.extras["garments"]) == 2
