"""The GarmentBench-mini command: data -> VAE -> base model from scratch, resumable stage by stage, then the
evaluation with its ablation written as JSON. (The full-length run is the slow test.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.minibench import colour_error, final_dir, garment_mask, iou, main


def test_neutral_caption_and_ncc():
    from training.minibench import ncc, neutral_caption

    garment = {"captions": ["an olive checked t-shirt with a star logo"], "colour": {"name": "olive"},
               "pattern": {"kind": "checks"}, "category": "t-shirt", "logo": {"glyph": "star"}}
    assert neutral_caption(garment) == "a checked t-shirt with a star logo"
    garment = {"colour": {"name": "yellow"}, "pattern": {"kind": "solid"}, "category": "trousers", "logo": None}
    assert neutral_caption(garment) == "a pair of trousers"
    patch = np.arange(30, dtype=float).reshape(5, 6)
    assert ncc(patch, 2 * patch + 7) == pytest.approx(1.0)
    assert ncc(patch, -patch) == pytest.approx(-1.0)
    assert ncc(patch, np.ones_like(patch)) == 0.0


def test_metrics_measure_what_they_say():
    image = np.full((80, 64, 3), 255, np.uint8)
    image[20:60, 16:48] = (214, 40, 40)
    assert colour_error(image, (214, 40, 40)) < 0.01
    assert colour_error(image, (0, 48, 73)) > 30  # red vs navy
    assert colour_error(np.full((80, 64, 3), 255, np.uint8), (214, 40, 40)) == 100.0  # nothing drawn
    region = np.zeros((80, 64), bool)
    region[20:30, 16:48] = True
    assert colour_error(np.full((80, 64, 3), 255, np.uint8), (255, 255, 255), region) < 0.01  # white counts in a mask
    truth = np.zeros((80, 64), bool)
    truth[20:60, 16:48] = True
    assert iou(garment_mask(image), truth) == 1.0
    truth[20:60, 16:32] = False
    assert iou(garment_mask(image), truth) == pytest.approx(0.5)


def test_train_is_resumable_and_evaluate_writes_the_ablation(tmp_path):
    root = tmp_path / "bench"
    quick = ["--steps-scale", "0.004", "--train-count", "12", "--samples", "2"]
    assert main(["train", "--out", str(root), "--stages", "gam", *quick]) == 2  # its base is not trained yet
    assert main(["train", "--out", str(root), "--stages", "everything", *quick]) == 2
    assert not (root / "gam").exists()
    assert main(["train", "--out", str(root), "--jobs", "2", "--stages", "vae", *quick]) == 2  # one or the other
    assert main(["train", "--out", str(root), "--jobs", "2", *quick]) == 0  # two processes, stages as they unblock
    for stage in ("vae", "base", "inpaint", "gam", "colour", "lem", "tryon", "tryoff"):
        assert final_dir(root, stage).exists(), stage
        assert "ended: finished" in (root / "logs" / f"{stage}.log").read_text(), stage
    timings = json.loads((root / "train_timings.json").read_text())
    assert timings["wall_total"] >= timings["wall_lem"] > 0 and timings["lem"] > 0  # the parent's and the child's
    first = final_dir(root, "base")
    assert main(["train", "--out", str(root), "--steps-scale", "0.004", "--train-count", "12"]) == 0
    assert final_dir(root, "base") == first and not (root / "base" / "attempt-2").exists()  # done stages skipped
    assert main(["evaluate", "--out", str(root), "--samples", "2"]) == 0
    result = json.loads((root / "evaluation.json").read_text())
    assert result["samples"] == 2 and len(result["rows"]) == 2
    for key in ("caption_ciede2000", "ablation_ciede2000", "vae_ciede2000", "data_ciede2000", "caption_iou",
                "ablation_iou", "design_gam_iou", "design_gam_ablation_iou", "design_colour_ciede2000",
                "design_colour_ablation_ciede2000", "tryon_ciede2000", "tryon_ablation_ciede2000",
                "tryon_outside_error", "tryoff_iou", "tryoff_ablation_iou", "tryoff_ciede2000"):
        assert np.isfinite(result["summary"][key]), key
    assert (root / "grid.png").is_file()
    # the package is a preset of safetensors the studio loads
    package = root / "package"
    assert (package / "mini.yaml").is_file() and (package / "mini" / "gam.safetensors").is_file()
    assert not [p for p in (package / "mini").rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    from pipelines.core.presets import load_preset

    preset = load_preset(str(package / "mini.yaml"))
    assert preset.base_model == str((package / "mini" / "base").resolve())
    assert preset.defaults["garment"]["negative_prompt"] == ""
    assert main(["evaluate", "--out", str(tmp_path / "nothing")]) == 2


@pytest.mark.slow
def test_full_run_every_pathway_beats_its_ablation(tmp_path):
    """The one training command as the README gives it (~70 min on 2 cores), then the evaluation: every
    pathway that the shipped table says works must beat its ablation again."""
    root = tmp_path / "bench"
    assert main(["train", "--out", str(root), "--jobs", "2", "--vae-width", "16"]) == 0
    assert main(["evaluate", "--out", str(root)]) == 0
    summary = json.loads((root / "evaluation.json").read_text())["summary"]
    assert summary["caption_ciede2000"] < summary["ablation_ciede2000"]
    assert summary["design_gam_iou"] > summary["design_gam_ablation_iou"]
    assert summary["design_colour_ciede2000"] < summary["design_colour_ablation_ciede2000"]
    assert summary["tryoff_iou"] > summary["tryoff_ablation_iou"]
