"""Speed and memory of the garment pipeline, with A/B of the optimisations.  ``python -m benchmarks.run --help``

Prints a table and writes JSON to benchmarks/results/<name>.json. On a GPU use ``--size full`` (the real
SD1.5 shapes, fp16); on a CPU-only machine ``--size small`` gives A/B ratios in minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from benchmarks.models import garment_pipeline
from pipelines.preprocess.colors import swatch_from_hex
from pipelines.types import GarmentRequest

RESULTS = Path(__file__).resolve().parent / "results"


def request(height: int, width: int, steps: int, logo: bool) -> GarmentRequest:
    sketch = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(sketch).rectangle([width // 5, height // 8, 4 * width // 5, 7 * height // 8], outline="black", width=4)
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rectangle([width // 3, height // 4, 2 * width // 3, height // 2], fill=255)
    return GarmentRequest(
        prompt="a shirt", sketch=sketch, color=swatch_from_hex("#336699"),
        logo=Image.new("RGB", (64, 64), "red") if logo else None, logo_mask=mask if logo else None,
        height=height, width=width, num_inference_steps=steps, seed=1,
    )


def measure(pipe, req, device: str, repeats: int) -> dict:
    pipe(req)  # warm-up (kernels, allocator)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipe(req)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    out = {"seconds": min(times), "seconds_all": times}
    if device.startswith("cuda"):
        out["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=["full", "small"], default="full" if torch.cuda.is_available() else "small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="fp16/bf16/fp32 (default fp16 on GPU, fp32 on CPU)")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[
        args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")]
    height = args.height or (640 if args.size == "full" else 256)
    width = args.width or (512 if args.size == "full" else 192)
    steps = args.steps or (50 if args.size == "full" else 6)
    torch.set_grad_enabled(False)
    pipe = garment_pipeline(args.size, args.device, dtype)
    rows = []
    variants = [
        ("optimised (batched CFG, cached ref K/V)", True, True),
        ("sequential CFG", False, True),
        ("no ref K/V cache", True, False),
        ("neither (official-code shape)", False, False),
    ]
    for label, batch_cfg, cache_kv in variants:
        pipe.batch_cfg = batch_cfg
        pipe.reference_state.cache_kv = cache_kv
        result = measure(pipe, request(height, width, steps, logo=True), args.device, args.repeats)
        result.update(variant=label, batch_cfg=batch_cfg, cache_kv=cache_kv)
        rows.append(result)
        print(f"{label:45s} {result['seconds']:8.2f} s" + (f"  peak {result['peak_mib']:.0f} MiB" if "peak_mib" in result else ""), flush=True)
    base = rows[-1]["seconds"]
    for row in rows:
        row["speedup_vs_unoptimised"] = base / row["seconds"]
    report = {
        "benchmark": "garment GAM+LEM, one image", "size": args.size, "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine(),
        "dtype": str(dtype), "height": height, "width": width, "steps": steps, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    name = args.name or f"garment_{args.size}_{args.device.split(':')[0]}"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2))
    print("\n| variant | s/image | speed-up |" + (" peak MiB |" if "peak_mib" in rows[0] else ""))
    print("|---|---|---|" + ("---|" if "peak_mib" in rows[0] else ""))
    for row in rows:
        print(f"| {row['variant']} | {row['seconds']:.2f} | {row['speedup_vs_unoptimised']:.2f}x |"
              + (f" {row['peak_mib']:.0f} |" if "peak_mib" in row else ""))
    print(f"\nwrote {RESULTS / (name + '.json')}")


if __name__ == "__main__":
    main()
