"""GarmentBench-mini: train the small stack on synthetic data with our own trainers, then measure what it learnt.

::

    python -m training.minibench train    --out runs/minibench [--steps-scale 1.0]
    python -m training.minibench evaluate --out runs/minibench [--samples 48]

``train`` runs the stages top to bottom; a stage whose ``final/`` exists is skipped and a stage that was
interrupted resumes from its latest checkpoint (a new ``attempt-N`` folder, the old one untouched), so the one
command is resumable::

    runs/minibench/
      data/train/  data/test/          1. training.synthetic (the held-out split for evaluation)
      vae/attempt-N/final/vae          2. training.mini_base part vae  (the architecture of the tiny preset)
      base/attempt-N/final/            3. training.mini_base part unet (an SD-layout text-to-image folder)
      evaluation.json                  evaluate: every measured figure, with its ablation

Stages still to come (issue #10): the 9-channel inpainting UNet, colour adapter, GAM, LEM, try-on, try-off and
dressing weights on top of these.

``evaluate`` generates one garment per held-out caption (fixed seeds) WITH the caption and WITHOUT it (the
ablation: the same seed, an empty prompt) and measures, against the held-out ground truth: the colour error
(CIEDE2000 between the requested colour and the median colour of the generated garment pixels) and the
silhouette IoU (generated non-white pixels vs the held-out garment's silhouette mask); beside them the ceilings:
the same colour error of the held-out garment itself (patterns and logos move its median) and of that garment
passed through the trained VAE (what the base model can reach at best).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

logger = logging.getLogger(__name__)

SIZE = (64, 80)  # width, height: the tiny preset's garment canvas
WHITE_THRESHOLD = 24  # a pixel is garment when some channel is this far below white


@dataclass(frozen=True)
class Stage:
    name: str
    values: dict[str, Any]  # the trainer config (paths filled in by train())
    steps: int


def stages(root: Path, architecture: Path, vae_width: int = 0) -> list[Stage]:
    data = root / "data" / "train" / "garmentbench"
    common = {"pretrained_model": str(architecture), "dataset": str(data), "device": "cpu", "height": SIZE[1],
              "width": SIZE[0], "train_batch_size": 16, "save_every": 200, "sample_every": 0, "sample_steps": 20,
              "learning_rate": 1e-3, "lr_scheduler": "cosine", "lr_warmup_steps": 20, "cpu_threads": 1}
    return [
        Stage("vae", {**common, "part": "vae", "vae_width": vae_width}, 1200),
        Stage("base", {**common, "part": "unet", "vae": str(final_dir(root, "vae") / "vae")}, 3000),
    ]


def final_dir(root: Path, stage: str) -> Path:
    """The stage's finished output (``final/`` of its latest attempt); a path that does not exist when unfinished."""
    attempts = attempts_of(root / stage)
    return (attempts[-1] if attempts else root / stage / "attempt-1") / "final"


def attempts_of(folder: Path) -> list[Path]:
    """``attempt-N`` run folders of a stage, oldest first."""
    found = [p for p in folder.glob("attempt-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


# ----------------------------------------------------------------------------------------------- train
def train(root: Path, steps_scale: float = 1.0, train_count: int = 600, test_count: int = 48,
          vae_width: int = 0) -> dict[str, Any]:
    from pipelines.core.tiny import build_tiny_model_set
    from training.mini_base import main as mini_base_main
    from training.synthetic import main as synthetic_main

    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    # 1. data (train + held-out test split)
    for split, count in (("train", train_count), ("test", test_count)):
        folder = root / "data" / split
        if not (folder / "garmentbench.json").exists():
            start = time.perf_counter()
            args = ["--out", str(folder), "--count", str(count), "--seed", "0", "--size", f"{SIZE[0]}x{SIZE[1]}",
                    "--kinds", "garmentbench", "--split", split]
            if synthetic_main(args) != 0:
                raise RuntimeError(f"synthetic data ({split}) failed")
            timings[f"data_{split}"] = time.perf_counter() - start
    architecture = build_tiny_model_set(root / "architecture") / "base"
    # 2.. the trained stages, each resumable
    for stage in stages(root, architecture, vae_width):
        if final_dir(root, stage.name).exists():
            logger.info("stage %s: done (%s)", stage.name, final_dir(root, stage.name))
            continue
        attempts = attempts_of(root / stage.name)
        run = root / stage.name / f"attempt-{len(attempts) + 1}"
        values = {**stage.values, "output_dir": str(run), "max_train_steps": max(2, int(stage.steps * steps_scale))}
        if attempts and list((attempts[-1] / "checkpoints").glob("step-*")):
            values["resume_from"] = str(attempts[-1])
        run.mkdir(parents=True)
        config = run.parent / f"{run.name}.yaml"
        config.write_text(yaml.safe_dump(values))
        start = time.perf_counter()
        if mini_base_main(["--config", str(config)]) != 0:
            raise RuntimeError(f"stage {stage.name} failed: see {run}/log.txt")
        timings[stage.name] = time.perf_counter() - start
    (root / "train_timings.json").write_text(json.dumps(timings, indent=2))
    return timings


# -------------------------------------------------------------------------------------------- evaluate
def garment_mask(image: np.ndarray) -> np.ndarray:
    return (255 - image.astype(int)).max(axis=2) > WHITE_THRESHOLD


def colour_error(image: np.ndarray, rgb: tuple[int, int, int]) -> float:
    """CIEDE2000 between ``rgb`` and the median colour of the garment pixels (100 when there are none)."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    mask = garment_mask(image)
    if mask.sum() < 10:
        return 100.0
    median = np.median(image[mask].astype(float), axis=0) / 255.0
    return float(deltaE_ciede2000(rgb2lab(median[None, None]), rgb2lab(np.array(rgb, float)[None, None] / 255.0))[0, 0])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def evaluate(root: Path, samples: int = 48, steps: int = 20, guidance: float = 5.0) -> dict[str, Any]:
    import torch
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    base = final_dir(root, "base")
    if not base.exists():
        raise FileNotFoundError(f"{base} does not exist: run `python -m training.minibench train` first")
    test = root / "data" / "test"
    manifest = json.loads((test / "garmentbench.json").read_text())
    records = manifest["samples"][:samples]
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for index, record in enumerate(records):
        truth = np.asarray(Image.open(test / "garmentbench" / "silhouette" / f"{record['id']}.png").convert("L")) > 127
        garment = record["garment"]
        row = {"id": record["id"], "caption": garment["captions"][0], "colour": garment["colour"]["name"],
               "category": garment["category"]}
        for name, prompt in (("caption", garment["captions"][0]), ("ablation", "")):
            image = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, height=SIZE[1], width=SIZE[0],
                         generator=torch.Generator().manual_seed(1000 + index)).images[0]
            pixels = np.asarray(image)
            row[f"{name}_ciede2000"] = colour_error(pixels, tuple(garment["colour"]["rgb"]))
            row[f"{name}_iou"] = iou(garment_mask(pixels), truth)
            if index < 8:
                image.save(root / f"eval_{index}_{name}.png")
        # the ceiling: the held-out garment itself through the VAE (what any generation can reach at best)
        cloth = np.asarray(Image.open(test / "garmentbench" / record["files"]["cloth"]).convert("RGB"))
        with torch.no_grad():
            pixels = torch.from_numpy(cloth.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
            decoded = pipe.vae.decode(pipe.vae.encode(pixels).latent_dist.mode()).sample
        decoded = ((decoded[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        row["vae_ciede2000"] = colour_error(decoded, tuple(garment["colour"]["rgb"]))
        row["data_ciede2000"] = colour_error(cloth, tuple(garment["colour"]["rgb"]))  # patterns, logos: not 0
        rows.append(row)
    summary = {key: float(np.mean([row[key] for row in rows]))
               for key in ("caption_ciede2000", "ablation_ciede2000", "vae_ciede2000", "data_ciede2000",
                           "caption_iou", "ablation_iou")}
    result = {"model": str(base), "samples": len(rows), "steps": steps, "guidance": guidance, "size": SIZE,
              "summary": summary, "rows": rows}
    (root / "evaluation.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.minibench", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("train", "evaluate"))
    parser.add_argument("--out", default="runs/minibench")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's steps (quick runs)")
    parser.add_argument("--train-count", type=int, default=600)
    parser.add_argument("--samples", type=int, default=48, help="held-out captions to evaluate")
    parser.add_argument("--vae-width", type=int, default=0, help="the VAE's first-level channels (0 = the tiny 8)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = Path(args.out)
    try:
        if args.command == "train":
            print(json.dumps(train(root, args.steps_scale, args.train_count, max(args.samples, 8), args.vae_width),
                             indent=2))
        else:
            print(json.dumps(evaluate(root, args.samples)["summary"], indent=2))
    except (RuntimeError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
