"""GarmentBench-mini: train the small stack on synthetic data with our own trainers, then measure what it learnt.

::

    python -m training.minibench train    --out runs/minibench [--jobs 2] [--steps-scale 1.0] [--vae-width 16]
    python -m training.minibench evaluate --out runs/minibench [--samples 48]
    python -m training.minibench package  --out runs/minibench --to presets/models

``train`` runs the stages top to bottom; a stage whose ``final/`` exists is skipped and a stage that was
interrupted resumes from its latest checkpoint (a new ``attempt-N`` folder, the old one untouched), so the one
command is resumable; ``--jobs 2`` runs independent stages side by side (one process each, logs in ``logs/``)::

    runs/minibench/
      data/train/  data/test/          1. training.synthetic (the held-out split for evaluation)
      vae/attempt-N/final/vae          2. training.mini_base part vae  (the architecture of the tiny preset)
      base/attempt-N/final/            3. training.mini_base part unet (an SD-layout text-to-image folder)
      inpaint/attempt-N/final/         4. training.mini_base part inpaint (the 9-channel UNet, from the base)
      gam/  colour/  lem/              5-7. training.gam, training.colour_adapter, training.lem on those
      tryon/  tryoff/                  8-9. training.concat_inpaint_finetune (CatVTON, TryOffAnyone)
      logs/<stage>.log                 --jobs: each stage's output
      package/mini.yaml + mini/        evaluate/package: the stack as a studio preset (safetensors only)
      evaluation.json                  evaluate: every measured figure, with its ablation

Still to come (issue #10): dressing weights (the base has never drawn a person).

``evaluate`` measures every pathway WITH its condition and with only that condition removed (same seed):
the base model's caption (colour error = CIEDE2000 between the requested colour and the median colour of the
generated garment pixels; silhouette IoU = generated non-white pixels vs the held-out garment's mask), with the
ceilings beside it (the held-out garment itself, patterns and logos move its median, and that garment through
the trained VAE); then, through the studio's own garment pipeline on the packaged preset, the GAM's sketch
(silhouette IoU), the colour adapter's swatch (colour error with a colour-free caption) and the LEM's logo (NCC
inside its box, change outside it) -- see :func:`evaluate_design`.
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
PORTRAIT = {"height": 64, "width": 48}  # try-on / try-off canvas: the 3:4 the pipelines expect (people: stretched)
KINDS = "garmentbench,tryon,tryoff"  # the VAE learns all of them: garments, sketches, logos, dressed mannequins
WHITE_THRESHOLD = 24  # a pixel is garment when some channel is this far below white


@dataclass(frozen=True)
class Stage:
    name: str
    trainer: str  # the module whose main(["--config", file]) trains it
    values: dict[str, Any]  # the trainer config (paths filled in by train())
    steps: int


def stages(root: Path, architecture: Path, vae_width: int = 0) -> list[Stage]:
    """The stack, bottom up; each stage trains on what the earlier ones wrote. The method stages keep their
    official recipes except the learning rates (small models from scratch: 10-100x the fine-tuning rates) and
    the colour adapter's caption dropout (half the captions empty, so the colour must come through the swatch)."""
    data = root / "data" / "train" / "garmentbench"
    common = {"dataset": str(data), "device": "cpu", "height": SIZE[1], "width": SIZE[0], "train_batch_size": 16,
              "save_every": 200, "sample_every": 0, "sample_steps": 20, "learning_rate": 1e-3,
              "lr_scheduler": "cosine", "lr_warmup_steps": 20, "cpu_threads": 1}
    base = str(final_dir(root, "base"))
    return [
        Stage("vae", "training.mini_base", {**common, "pretrained_model": str(architecture), "part": "vae",
                                            "vae_width": vae_width, "dataset": str(data.parent)}, 1200),
        Stage("base", "training.mini_base", {**common, "pretrained_model": str(architecture), "part": "unet",
                                             "vae": str(final_dir(root, "vae") / "vae")}, 3000),
        Stage("inpaint", "training.mini_base", {**common, "pretrained_model": str(architecture), "part": "inpaint",
                                                "base": base, "learning_rate": 1e-3, "input_lr_scale": 10.0,
                                                "skip_cross_attention": True, "mask_sides": [0.1, 0.6],
                                                "full_mask_prob": 0.1}, 4000),
        Stage("gam", "training.gam", {**common, "pretrained_model": base, "vae": None, "learning_rate": 3e-4}, 1500),
        Stage("colour", "training.colour_adapter",
              {**common, "pretrained_model": base, "vae": None, "image_encoder": str(architecture.parent / "image_encoder"),
               "image_encoder_subfolder": None, "drop_text_prob": 0.5, "drop_image_prob": 0.05,
               "drop_both_prob": 0.05}, 1500),
        Stage("lem", "training.lem", {**common, "pretrained_model": str(final_dir(root, "inpaint")), "vae": None,
                                      "learning_rate": 1e-3}, 3000),
        Stage("tryon", "training.concat_inpaint_finetune",
              {**common, "mode": "tryon", "pretrained_model": str(final_dir(root, "inpaint")), "vae": None,
               "dataset": str(data.parent / "tryon"), "learning_rate": 1e-3, **PORTRAIT}, 1200),
        Stage("tryoff", "training.concat_inpaint_finetune",
              {**common, "mode": "tryoff", "pretrained_model": str(final_dir(root, "inpaint")), "vae": None,
               "dataset": str(data.parent / "tryoff"), "learning_rate": 5e-4, **PORTRAIT}, 1200),
    ]


NEEDS = {"base": ("vae",), "inpaint": ("base",), "gam": ("base",), "colour": ("base",), "lem": ("inpaint",),
         "tryon": ("inpaint",), "tryoff": ("inpaint",)}  # stage -> the stages whose output it trains on


def final_dir(root: Path, stage: str) -> Path:
    """The stage's finished output (``final/`` of its latest attempt); a path that does not exist when unfinished."""
    attempts = attempts_of(root / stage)
    return (attempts[-1] if attempts else root / stage / "attempt-1") / "final"


def attempts_of(folder: Path) -> list[Path]:
    """``attempt-N`` run folders of a stage, oldest first."""
    found = [p for p in folder.glob("attempt-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


# ----------------------------------------------------------------------------------------------- train
def prepare(root: Path, train_count: int = 600, test_count: int = 48) -> tuple[Path, dict[str, float]]:
    """1. the data (train + held-out test split, each made once) and the architecture folder the stages read;
    -> (the architecture's base folder, seconds spent on data)."""
    from pipelines.core.tiny import build_tiny_model_set
    from training.synthetic import main as synthetic_main

    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    for split, count in (("train", train_count), ("test", test_count)):
        folder = root / "data" / split
        if not (folder / "garmentbench.json").exists():
            start = time.perf_counter()
            args = ["--out", str(folder), "--count", str(count), "--seed", "0", "--size", f"{SIZE[0]}x{SIZE[1]}",
                    "--kinds", KINDS, "--split", split]
            if synthetic_main(args) != 0:
                raise RuntimeError(f"synthetic data ({split}) failed")
            timings[f"data_{split}"] = time.perf_counter() - start
    return build_tiny_model_set(root / "architecture") / "base", timings


def train(root: Path, steps_scale: float = 1.0, train_count: int = 600, test_count: int = 48,
          vae_width: int = 0, only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every stage not finished yet, in order; ``only``: just those stages (e.g. two processes on two cores
    training independent stages side by side), each refusing to start before the stages it reads are done."""
    import importlib

    architecture, timings = prepare(root, train_count, test_count)
    # 2.. the trained stages, each resumable
    planned = stages(root, architecture, vae_width)
    unknown = set(only) - {stage.name for stage in planned}
    if unknown:
        raise ValueError(f"--stages: unknown {', '.join(sorted(unknown))} (stages: {', '.join(s.name for s in planned)})")
    for stage in planned:
        if only and stage.name not in only:
            continue
        missing = [name for name in NEEDS.get(stage.name, ()) if not final_dir(root, name).exists()]
        if missing:
            raise RuntimeError(f"stage {stage.name} trains on {', '.join(missing)}, which is not finished yet")
        if final_dir(root, stage.name).exists():
            logger.info("stage %s: done (%s)", stage.name, final_dir(root, stage.name))
            continue
        # planned again now: the folders it reads are those of the attempts that finished meanwhile
        stage = next(s for s in stages(root, architecture, vae_width) if s.name == stage.name)
        attempts = attempts_of(root / stage.name)
        run = root / stage.name / f"attempt-{len(attempts) + 1}"
        values = {**stage.values, "output_dir": str(run), "max_train_steps": max(2, int(stage.steps * steps_scale))}
        if attempts and list((attempts[-1] / "checkpoints").glob("step-*")):
            values["resume_from"] = str(attempts[-1])
        run.mkdir(parents=True)
        config = run.parent / f"{run.name}.yaml"
        config.write_text(yaml.safe_dump(values))
        start = time.perf_counter()
        if importlib.import_module(stage.trainer).main(["--config", str(config)]) != 0:
            raise RuntimeError(f"stage {stage.name} failed: see the log above and {run}/result.json")
        timings[stage.name] = time.perf_counter() - start
    record_timings(root, timings)
    return timings


def record_timings(root: Path, timings: dict[str, float]) -> None:
    """Merge ``timings`` into ``train_timings.json`` (seconds per stage, over runs and side-by-side processes;
    a lock file keeps two processes from losing each other's update)."""
    import fcntl

    with open(root / "train_timings.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = root / "train_timings.json"
        earlier = json.loads(record.read_text()) if record.exists() else {}
        record.write_text(json.dumps({**earlier, **timings}, indent=2))


def train_parallel(root: Path, jobs: int, steps_scale: float = 1.0, train_count: int = 600, test_count: int = 48,
                   vae_width: int = 0, poll_s: float = 2.0) -> dict[str, float]:
    """Every unfinished stage, ``jobs`` at a time: a stage starts (as ``train --stages <it>`` in its own process,
    log in ``logs/<stage>.log``) as soon as the stages it reads are finished. The data and architecture come
    first, in this process. A failed stage stops the others (each resumes from its last checkpoint next time).
    Returns the wall-clock seconds of each stage and of the whole run."""
    import subprocess

    start = time.perf_counter()
    architecture, _ = prepare(root, train_count, test_count)
    stage_args = ["--steps-scale", str(steps_scale), "--train-count", str(train_count), "--samples", str(test_count),
                  "--vae-width", str(vae_width)]
    names = [stage.name for stage in stages(root, architecture)]
    pending = [name for name in names if not final_dir(root, name).exists()]
    (root / "logs").mkdir(exist_ok=True)
    running: dict[str, tuple[subprocess.Popen, float, Any]] = {}
    wall: dict[str, float] = {}
    try:
        while pending or running:
            for name, (process, began, log) in list(running.items()):
                if process.poll() is None:
                    continue
                log.close()
                del running[name]
                if process.returncode != 0:
                    raise RuntimeError(f"stage {name} failed (exit {process.returncode}): see {root / 'logs' / name}.log")
                wall[name] = time.perf_counter() - began
                logger.info("stage %s: done in %.1f min", name, wall[name] / 60)
            for name in list(pending):
                ready = all(final_dir(root, need).exists() for need in NEEDS.get(name, ()))
                if ready and len(running) < jobs:
                    log = open(root / "logs" / f"{name}.log", "a")
                    command = [sys.executable, "-m", "training.minibench", "train", "--out", str(root),
                               "--stages", name, *stage_args]
                    running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), time.perf_counter(), log)
                    pending.remove(name)
                    logger.info("stage %s: started (log %s)", name, log.name)
            if pending and not running:
                blocked = {name: NEEDS.get(name, ()) for name in pending}
                raise RuntimeError(f"stages cannot start, what they read is missing: {blocked}")
            time.sleep(poll_s)
    finally:
        for process, _, log in running.values():
            process.terminate()
            process.wait()
            log.close()
    wall["total"] = time.perf_counter() - start
    record_timings(root, {f"wall_{name}": seconds for name, seconds in wall.items()})
    return wall


# --------------------------------------------------------------------------------------------- package
PRESET = """\
# GarmentBench-mini: small models trained FROM SCRATCH on synthetic garments by `python -m training.minibench`
# (64x80 px, CPU-sized). Garment design only (GAM sketch, colour adapter, LEM logo); see README "GarmentBench-mini".
name: mini
description: "GarmentBench-mini: small models trained here on synthetic garments (offline, 64x80, design only)"
banner: >-
  **GarmentBench-mini preset**: small models trained on this machine from synthetic garments (64x80 px, see the
  README). *Design* follows a sketch and a colour at that scale (a logo pass keeps the garment but does not draw
  the logo yet), *Try-on* and *Try-off* run on mannequin-sized photos; the other tabs need real weights and say so. Real models: `python app.py --preset sd15` on a GPU with the Hugging Face Hub reachable.
base_model: "{here}/mini/base"
vae: "{here}/mini/base/vae"
image_encoder: "{here}/mini/image_encoder"
image_encoder_subfolder: null
inpaint_model: "{here}/mini/inpaint"
checkpoints:
  garment_gam: {location: "{here}/mini/gam.safetensors"}
  garment_color: {location: "{here}/mini/color_adapter.safetensors"}
  garment_lem: {location: "{here}/mini/lem.safetensors"}
  tryon_catvton: {location: "{here}/mini/catvton/attention/model.safetensors"}
  tryoff_anyone: {location: "{here}/mini/tryoffanyone/model.safetensors"}
defaults:
  garment: {height: 80, width: 64, num_inference_steps: 20, guidance_scale: 5.0, sketch_scale: 1.0, color_scale: 1.0, seed: 42, negative_prompt: ""}
  tryon: {height: 64, width: 48, num_inference_steps: 20, guidance_scale: 2.5, seed: 42, feather: 2, mask_blur: 0, fit_mode: stretch}
  tryoff: {height: 64, width: 48, num_inference_steps: 20, guidance_scale: 2.5, seed: 36, fit_mode: stretch}
"""
PACKAGE_FILES = {  # package path -> (stage, path inside its final/)
    "base": ("base", "."), "inpaint/unet": ("inpaint", "unet"), "gam.safetensors": ("gam", "gam.safetensors"),
    "color_adapter.safetensors": ("colour", "color_adapter.safetensors"), "lem.safetensors": ("lem", "lem.safetensors"),
    "catvton/attention/model.safetensors": ("tryon", "attention/model.safetensors"),
    "tryoffanyone/model.safetensors": ("tryoff", "model.safetensors"),
}


def package(root: Path, dest: Path) -> Path:
    """The trained stack as a studio preset: ``dest/mini.yaml`` + ``dest/mini/`` (weights as safetensors only);
    an existing ``dest/mini/`` is replaced only after the new copy is complete."""
    import shutil

    missing = [stage for stage, _ in PACKAGE_FILES.values() if not final_dir(root, stage).exists()]
    if missing:
        raise FileNotFoundError(f"stages not trained yet: {', '.join(sorted(set(missing)))} (run train first)")
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / "mini.partial"
    shutil.rmtree(staging, ignore_errors=True)
    for target, (stage, source) in PACKAGE_FILES.items():
        origin = final_dir(root, stage) / source
        (staging / target).parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, staging / target, ignore=shutil.ignore_patterns("atelier_model.json", "samples"))
        else:
            shutil.copy2(origin, staging / target)
    shutil.copytree(root / "architecture" / "image_encoder", staging / "image_encoder")  # the colour adapter's
    pickled = [p for p in staging.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    if pickled:
        raise RuntimeError(f"the package must hold safetensors only: {', '.join(p.name for p in pickled)}")
    if (dest / "mini").exists():
        shutil.rmtree(dest / "mini")
    staging.rename(dest / "mini")
    (dest / "mini.yaml").write_text(PRESET)
    return dest / "mini.yaml"


# -------------------------------------------------------------------------------------------- evaluate
def garment_mask(image: np.ndarray) -> np.ndarray:
    return (255 - image.astype(int)).max(axis=2) > WHITE_THRESHOLD


def colour_error(image: np.ndarray, rgb: tuple[int, int, int], mask: np.ndarray | None = None) -> float:
    """CIEDE2000 between ``rgb`` and the median colour of the garment pixels (``mask``, default the non-white
    pixels; 100 when there are none)."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    mask = garment_mask(image) if mask is None else mask
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
    if all(final_dir(root, stage).exists() for stage, _ in PACKAGE_FILES.values()):
        preset = package(root, root / "package")
        result["design"] = evaluate_design(root, preset, samples, steps)
        result["summary"].update({f"design_{key}": value for key, value in result["design"]["summary"].items()})
        result["tryon_tryoff"] = evaluate_tryon_tryoff(root, preset, samples, steps)
        result["summary"].update(result["tryon_tryoff"]["summary"])
        evaluation_grid(root, min(6, samples))
    (root / "evaluation.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.minibench", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("train", "evaluate", "package"))
    parser.add_argument("--out", default="runs/minibench")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's steps (quick runs)")
    parser.add_argument("--train-count", type=int, default=600)
    parser.add_argument("--samples", type=int, default=48, help="held-out captions to evaluate")
    parser.add_argument("--vae-width", type=int, default=0, help="the VAE's first-level channels (0 = the tiny 8)")
    parser.add_argument("--stages", default="", help="train: only these stages, comma-separated (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="train: stages run side by side, each in its own "
                                                            "process, as soon as what they read is done (2 on 2 cores)")
    parser.add_argument("--to", default=None, help="package: the folder receiving mini.yaml + mini/ "
                                                   "(default <out>/package; presets/models ships it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = Path(args.out)
    try:
        if args.command == "train":
            only = tuple(name for name in (args.stages or "").split(",") if name)
            if args.jobs < 1:
                raise ValueError(f"--jobs {args.jobs}: at least 1")
            if args.jobs > 1 and only:
                raise ValueError("--jobs schedules every stage; --stages picks some for this one process: give one")
            if args.jobs > 1:
                result = train_parallel(root, args.jobs, args.steps_scale, args.train_count, max(args.samples, 8),
                                        args.vae_width)
            else:
                result = train(root, args.steps_scale, args.train_count, max(args.samples, 8), args.vae_width, only)
            print(json.dumps(result, indent=2))
        elif args.command == "package":
            print(package(root, Path(args.to) if args.to else root / "package"))
        else:
            print(json.dumps(evaluate(root, args.samples)["summary"], indent=2))
    except (RuntimeError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0



# ------------------------------------------------------------------------------ design methods (the package)
def means(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The mean of every numeric field over the rows that have it (sorted by name)."""
    keys = sorted({key for row in rows for key, value in row.items() if isinstance(value, float)})
    return {key: float(np.mean([row[key] for row in rows if key in row])) for key in keys}


def neutral_caption(garment: dict[str, Any]) -> str:
    """The held-out garment's caption without its colour word: the colour has to come through the swatch."""
    from types import SimpleNamespace

    from training.synthetic import captions

    logo = garment.get("logo") or {}
    return captions(SimpleNamespace(colour="", pattern=garment["pattern"]["kind"], category=garment["category"],
                                    glyph=logo.get("glyph")))[0]


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two equal-size greyscale patches (0 when either is flat)."""
    a, b = a.astype(float).ravel(), b.astype(float).ravel()
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 1e-9 else 0.0


def evaluate_design(root: Path, preset: Path, samples: int = 48, steps: int = 20) -> dict[str, Any]:
    """Each design pathway WITH its condition and with only that condition removed (same seed), through the
    studio's own pipeline loading the packaged preset:

    - GAM: prompt + sketch vs prompt alone -> silhouette IoU against the held-out garment's mask;
    - colour adapter: sketch + colour-free prompt + swatch vs without the swatch -> CIEDE2000 to the colour;
    - LEM: sketch + prompt + logo in its box vs no logo -> NCC of the box against the held-out garment's logo,
      CIEDE2000 to the logo's colour on the glyph's own pixels, and the mean change outside the box (0 = the
      logo stays in its box).
    """
    import torch
    from PIL import Image

    from pipelines.core.presets import load_preset
    from pipelines.core.registry import ModelRegistry
    from pipelines.garment.pipeline import GarmentDesignPipeline
    from pipelines.types import GarmentRequest

    test = root / "data" / "test"
    manifest = json.loads((test / "garmentbench.json").read_text())
    registry = ModelRegistry(load_preset(str(preset)), device="cpu", dtype="fp32", models_dir=root / "models")
    pipeline = GarmentDesignPipeline.from_registry(registry)
    folder = test / "garmentbench"
    torch.manual_seed(0)

    def run(record_index: int, **conditions) -> np.ndarray:
        request = GarmentRequest(height=SIZE[1], width=SIZE[0], num_inference_steps=steps, guidance_scale=5.0,
                                 sketch_scale=1.0, negative_prompt="", seed=2000 + record_index, **conditions)
        return np.asarray(pipeline(request).images[0])

    rows = []
    for index, record in enumerate(manifest["samples"][:samples]):
        garment, files = record["garment"], record["files"]
        sketch = Image.open(folder / files["sketch"]).convert("RGB")
        swatch = Image.open(folder / files["color"]).convert("RGB")
        truth = np.asarray(Image.open(folder / files["silhouette"]).convert("L")) > 127
        rgb = tuple(garment["colour"]["rgb"])
        caption = garment["captions"][0]
        row: dict[str, Any] = {"id": record["id"], "caption": caption, "category": garment["category"]}
        with_sketch = run(index, prompt=caption, sketch=sketch)
        without_sketch = run(index, prompt=caption)
        row["gam_iou"], row["gam_ablation_iou"] = iou(garment_mask(with_sketch), truth), iou(garment_mask(without_sketch), truth)
        neutral = neutral_caption(garment)
        with_colour = run(index, prompt=neutral, sketch=sketch, color=swatch)
        without_colour = run(index, prompt=neutral, sketch=sketch)
        row["colour_ciede2000"] = colour_error(with_colour, rgb)
        row["colour_ablation_ciede2000"] = colour_error(without_colour, rgb)
        row["colour_iou"] = iou(garment_mask(with_colour), truth)
        images = {"sketch": with_sketch, "no_sketch": without_sketch, "colour": with_colour, "no_colour": without_colour}
        if garment.get("logo") and files.get("logo"):
            x0, y0, x1, y1 = garment["logo"]["box"]
            box = np.zeros(truth.shape, bool)
            box[y0:y1, x0:x1] = True
            logo = Image.open(folder / files["logo"]).convert("RGB")
            mask = Image.fromarray(np.where(box, 255, 0).astype(np.uint8))
            with_logo = run(index, prompt=caption, sketch=sketch, color=swatch, logo=logo, logo_mask=mask)
            cloth_rgb = np.asarray(Image.open(folder / files["cloth"]).convert("RGB")).astype(float)
            cloth = cloth_rgb.mean(axis=2)
            grey = lambda image: image.astype(float).mean(axis=2)  # noqa: E731
            row["logo_ncc"] = ncc(grey(with_logo)[box], cloth[box])
            row["logo_ablation_ncc"] = ncc(grey(with_colour)[box], cloth[box])
            # the glyph's own pixels: is the logo's colour where the logo is (its shape needs more latent pixels)
            logo_rgb = tuple(garment["logo"]["colour"]["rgb"])
            glyph = box & (np.abs(cloth_rgb - np.array(logo_rgb, float)).sum(axis=2) < 30)
            row["logo_ciede2000"] = colour_error(with_logo, logo_rgb, glyph)
            row["logo_ablation_ciede2000"] = colour_error(with_colour, logo_rgb, glyph)
            row["logo_outside_change"] = float(np.abs(with_logo.astype(float) - with_colour.astype(float))[~box].mean())
            images["logo"] = with_logo
        if index < 8:
            for name, image in images.items():
                Image.fromarray(image).save(root / f"design_{index}_{name}.png")
        rows.append(row)
    summary = means(rows)
    return {"preset": str(preset), "samples": len(rows), "logo_samples": sum("logo_ncc" in row for row in rows),
            "steps": steps, "guidance": 5.0, "summary": summary, "rows": rows}


def evaluate_tryon_tryoff(root: Path, preset: Path, samples: int = 48, steps: int = 20) -> dict[str, Any]:
    """Try-on and try-off through the studio's pipelines on the packaged preset, paired held-out mannequins:

    - try-on: the worn garment masked out of the person and tried back on from its product image -> CIEDE2000
      of the garment region to the garment's colour, and the mean RGB error outside the mask (body and
      background must stay); ablation: a blank white garment image (the garment pathway carries nothing);
    - try-off: the flat garment recovered from the dressed person -> silhouette IoU and CIEDE2000 against the
      held-out product image; ablation: the person image blanked (white) under the same mask.
    """
    from PIL import Image

    from pipelines.core.presets import load_preset
    from pipelines.core.registry import ModelRegistry
    from pipelines.tryoff.pipeline import TryOffAnyonePipeline
    from pipelines.tryon.pipeline import CatVTONPipeline
    from pipelines.types import TryOffRequest, TryOnRequest

    test = root / "data" / "test"
    registry = ModelRegistry(load_preset(str(preset)), device="cpu", dtype="fp32", models_dir=root / "models")
    tryon, tryoff = CatVTONPipeline.from_registry(registry), TryOffAnyonePipeline.from_registry(registry)
    common = {**PORTRAIT, "num_inference_steps": steps, "guidance_scale": 2.5, "fit_mode": "stretch"}
    rows = []
    for kind in ("tryon", "tryoff"):
        manifest = json.loads((test / f"{kind}.json").read_text())
        for index, record in enumerate(manifest["samples"][:samples]):
            files, garment = record["files"], record["garment"]
            person = Image.open(test / kind / files["person"]).convert("RGB")
            product = Image.open(test / kind / files["garment"]).convert("RGB")
            mask = Image.open(test / kind / files["mask"]).convert("L")
            region = np.asarray(mask) > 127
            rgb = tuple(garment["colour"]["rgb"])
            blank = Image.new("RGB", person.size, "white")
            row: dict[str, Any] = {"kind": kind, "id": record["id"], "category": garment["category"]}
            if kind == "tryon":
                outputs = {}
                for name, image in (("tryon", product), ("tryon_ablation", blank)):
                    request = TryOnRequest(person=person, garment=image, mask=mask, auto_mask=False, seed=3000 + index,
                                           paste_mode="hard", mask_blur=0, **common)
                    out = np.asarray(tryon(request).images[0].convert("RGB"))
                    row[f"{name}_ciede2000"] = colour_error(out, rgb, region)  # median over where it goes
                    row[f"{name}_outside_error"] = float(np.abs(out.astype(float) - np.asarray(person, float))[~region].mean())
                    outputs[name] = out
            else:
                truth = garment_mask(np.asarray(product))
                outputs = {}
                for name, image in (("tryoff", person), ("tryoff_ablation", blank)):
                    request = TryOffRequest(person=image, mask=mask, auto_mask=False, seed=4000 + index, **common)
                    out = np.asarray(tryoff(request).images[0].convert("RGB").resize(product.size))
                    row[f"{name}_iou"] = iou(garment_mask(out), truth)
                    row[f"{name}_ciede2000"] = colour_error(out, rgb)
                    outputs[name] = out
            if index < 8:
                for name, out in outputs.items():
                    Image.fromarray(out).save(root / f"{name}_{index}.png")
            rows.append(row)
    return {"preset": str(preset), "samples": len(rows), "steps": steps, "summary": means(rows), "rows": rows}


def evaluation_grid(root: Path, rows: int = 6, scale: int = 3) -> Path:
    """``root/grid.png``: for the first held-out samples, each pathway with and without its condition, next to
    the inputs (design: sketch | +sketch | -sketch | +colour | -colour | +logo; try-on: person | garment |
    try-on | blank garment; try-off: person | garment | try-off | blank person), upscaled for reading."""
    from PIL import Image, ImageDraw

    test = root / "data" / "test"
    design = json.loads((test / "garmentbench.json").read_text())["samples"]
    tryon = json.loads((test / "tryon.json").read_text())["samples"]
    tryoff = json.loads((test / "tryoff.json").read_text())["samples"]
    columns = ["sketch", "+sketch", "-sketch", "+colour", "-colour", "+logo", "", "person", "garment", "try-on",
               "-garment", "", "person", "truth", "try-off", "-person"]
    width, height = SIZE
    header = 14
    grid = Image.new("RGB", (len(columns) * width * scale, header + rows * height * scale), "white")
    draw = ImageDraw.Draw(grid)
    for column, name in enumerate(columns):
        draw.text((column * width * scale + 4, 2), name, fill="black")

    def tile(path: Path | None) -> Image.Image | None:
        if path is None or not path.exists():
            return None
        return Image.open(path).convert("RGB").resize((width * scale, height * scale), Image.NEAREST)

    for index in range(rows):
        files = [test / "garmentbench" / design[index]["files"]["sketch"]]
        files += [root / f"design_{index}_{name}.png" for name in ("sketch", "no_sketch", "colour", "no_colour", "logo")]
        files += [None, test / "tryon" / tryon[index]["files"]["person"], test / "tryon" / tryon[index]["files"]["garment"],
                  root / f"tryon_{index}.png", root / f"tryon_ablation_{index}.png", None,
                  test / "tryoff" / tryoff[index]["files"]["person"], test / "tryoff" / tryoff[index]["files"]["garment"],
                  root / f"tryoff_{index}.png", root / f"tryoff_ablation_{index}.png"]
        for column, path in enumerate(files):
            image = tile(path)
            if image is not None:
                grid.paste(image, (column * width * scale, header + index * height * scale))
    path = root / "grid.png"
    grid.save(path)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
