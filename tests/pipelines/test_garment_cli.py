"""``python -m pipelines.garment`` on local folders of tiny models + official-layout checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from pipelines.preprocess.images import read_png_params

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.garment", *args], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
    )


def inputs(tmp_path: Path) -> dict[str, Path]:
    sketch = Image.new("RGB", (64, 80), "white")
    ImageDraw.Draw(sketch).rectangle([10, 10, 54, 70], outline="black", width=2)
    logo = Image.new("RGBA", (32, 32), (200, 0, 0, 255))
    mask = Image.new("L", (64, 80), 0)
    ImageDraw.Draw(mask).rectangle([20, 20, 44, 44], fill=255)
    paths = {"sketch": tmp_path / "sketch.png", "logo": tmp_path / "logo.png", "mask": tmp_path / "mask.png"}
    sketch.save(paths["sketch"]), logo.save(paths["logo"]), mask.save(paths["mask"])
    return paths


def local_args(tiny: Path) -> list[str]:
    """Every model as a local folder/file, exactly the flags a workstation user passes."""
    return [
        "--preset", "sd15", "--device", "cpu",
        "--base_model", str(tiny / "base"), "--vae", str(tiny / "vae"), "--image_encoder", str(tiny / "image_encoder"),
        "--inpaint_model", str(tiny / "inpaint"),
        "--GAM_model_ckpt", str(tiny / "checkpoints" / "gam_mp_rank_00_model_states.pt"),
        "--LEM_model_ckpt", str(tiny / "checkpoints" / "lem_pytorch_model.bin"),
        "--color_ckpt", str(tiny / "checkpoints" / "color_adapter.bin"),
        "--height", "80", "--width", "64", "--steps", "2",
    ]


def test_cli_writes_images_with_parameters(tiny_models, tmp_path):
    paths = inputs(tmp_path)
    out = tmp_path / "out"
    result = run_cli(
        *local_args(tiny_models), "--sketch_path", str(paths["sketch"]), "--logo_path", str(paths["logo"]),
        "--mask_path", str(paths["mask"]), "--color", "#1040a0", "--prompt", "a denim jacket",
        "--seed", "5", "--num_images", "2", "--output_path", str(out),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = sorted(out.glob("*.png"))
    assert len(written) == 2
    assert f"wrote {written[0]}" in result.stdout
    params = read_png_params(written[0])
    assert params["prompt"] == "a denim jacket" and params["seed"] in (5, 6) and params["has_logo"]


def test_cli_refuses_a_mis_shaped_checkpoint_naming_the_tensor(tiny_models, tmp_path):
    data = torch.load(tiny_models / "checkpoints" / "gam_mp_rank_00_model_states.pt", weights_only=True)
    data["module"]["adapter_modules.0.to_v_ref.weight"] = torch.zeros(7, 7, dtype=torch.float16)
    bad = tmp_path / "bad_gam.pt"
    torch.save(data, bad)
    paths = inputs(tmp_path)
    args = local_args(tiny_models)
    args[args.index("--GAM_model_ckpt") + 1] = str(bad)
    result = run_cli(*args, "--sketch_path", str(paths["sketch"]), "--output_path", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "0.to_v_ref.weight (file (7, 7)" in result.stderr
    assert "bad_gam.pt" in result.stderr


def test_cli_reports_an_unreachable_model_with_the_fix(tmp_path):
    result = run_cli("--preset", "sd15", "--device", "cpu", "--prompt", "x", "--output_path", str(tmp_path))
    assert result.returncode == 2
    assert "tiny" in result.stderr and "Hub cannot be reached" in result.stderr
