"""Every pipeline measured side by side, in ONE run on one device.  ``python -m benchmarks.run --help``

For each case (design GAM+LEM, dressing with 1 and 3 garments, try-on and try-off at 512x384 and 1024x768, TEMU
try-off) the models are built from configs (``benchmarks/models.py``; random weights, no Hub) and three variants run
the same request:

- ``ours``: the studio's pipeline;
- ``reference`` (a): a loop shaped like the method's published code (``benchmarks/baselines.py``: its CFG, what it
  recomputes, its dtype on GPU);
- ``plain`` (b): the plain diffusers pipeline doing the same denoising work without our added conditioning.

Each variant: one warm-up under FlopCounterMode (the counted FLOPs of one whole image), then ``--repeats`` timed runs
(median); UNet/transformer time per step from forward hooks; peak memory (CUDA max allocated, or the CPU process RSS
peak); achieved FLOP/s as a fraction of the measured dense matmul throughput. A markdown table is printed and every
figure is written to ``benchmarks/results/<device>_<size>_<date>.json``.

``--size full`` (the real shapes; for a GPU), ``small`` (the same architectures at reduced widths, for a CPU),
``tiny`` (the test-suite's widths: a smoke test of the harness only).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import math
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from benchmarks.baselines import REFERENCE_DTYPES, REFERENCE_SHAPES, plain_runner, reference_runner
from benchmarks.measure import matmul_throughput, summarise, timed_run, warm_up
from benchmarks.models import BUILDERS, SIZES
from pipelines.core.devices import pick_dtype

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("ours", "reference", "plain")
TARGETS = {"speedup_vs_reference_min": 2.0, "overhead_vs_plain_max": 0.15, "fraction_of_matmul_min_gpu": 0.40}


@dataclass(frozen=True)
class Case:
    name: str
    family: str  # which bundle builds it (models.BUILDERS)
    kind: str  # garment | dressing | tryon | tryoff | temu
    label: str
    full: tuple[int, int]  # (height, width) at --size full
    small: tuple[int, int]
    steps: int  # the method's default steps
    garments: int = 0
    stages: int = 1  # denoising loops per image (design: GAM + LEM)


TINY = (64, 48)
CASES = [
    Case("garment", "garment", "garment", "design GAM+LEM (sketch, colour, logo)", (640, 512), (256, 192), 50, stages=2),
    Case("dressing_1", "dressing", "dressing", "dressing, 1 garment", (640, 512), (256, 192), 30, garments=1),
    Case("dressing_3", "dressing", "dressing", "dressing, 3 garments", (640, 512), (256, 192), 30, garments=3),
    Case("tryon_512x384", "inpaint", "tryon", "try-on CatVTON 512x384", (512, 384), (256, 192), 50),
    Case("tryon_1024x768", "inpaint", "tryon", "try-on CatVTON 1024x768", (1024, 768), (512, 384), 50),
    Case("tryoff_512x384", "inpaint", "tryoff", "try-off TryOffAnyone 512x384", (512, 384), (256, 192), 50),
    Case("tryoff_1024x768", "inpaint", "tryoff", "try-off TryOffAnyone 1024x768", (1024, 768), (512, 384), 50),
    Case("temu", "temu", "temu", "try-off TEMU-VTOFF (SD3-Medium x2)", (1024, 768), (512, 384), 28),
]
CASE_NAMES = [case.name for case in CASES]


def select(spec: str | None) -> list[Case]:
    """``garment,dressing,tryon_512x384``: a name picks one case, a prefix (``dressing``, ``tryon``) all of its kind."""
    if not spec or spec == "all":
        return list(CASES)
    chosen = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        hits = [case for case in CASES if case.name == token or case.name.startswith(token + "_") or case.kind == token]
        if not hits:
            raise SystemExit(f"--pipelines: unknown {token!r}; choose from {', '.join(CASE_NAMES)} (or a prefix)")
        chosen += [case for case in hits if case not in chosen]
    return sorted(chosen, key=CASES.index)


# ---------------------------------------------------------------------------------------------- requests
def _person(height: int, width: int) -> tuple[Image.Image, Image.Image]:
    person = Image.new("RGB", (width, height), (225, 220, 215))
    draw = ImageDraw.Draw(person)
    draw.ellipse((width * 0.4, height * 0.05, width * 0.6, height * 0.2), fill=(230, 190, 160))
    shirt = (int(width * 0.25), int(height * 0.22), int(width * 0.75), int(height * 0.6))
    draw.rectangle(shirt, fill=(200, 30, 30))
    draw.rectangle((width * 0.3, height * 0.6, width * 0.7, height * 0.95), fill=(40, 40, 90))
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rectangle(shirt, fill=255)
    return person, mask


def make_request(case: Case, height: int, width: int, steps: int):
    from pipelines.preprocess.colors import swatch_from_hex
    from pipelines.types import (
        DressingRequest,
        Garment,
        GarmentRequest,
        TemuTryOffRequest,
        TryOffRequest,
        TryOnRequest,
    )

    person, mask = _person(height, width)
    garment = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(garment).rectangle((width // 5, height // 6, 4 * width // 5, 5 * height // 6), fill=(30, 90, 200))
    if case.kind == "garment":
        sketch = Image.new("RGB", (width, height), "white")
        ImageDraw.Draw(sketch).rectangle([width // 5, height // 8, 4 * width // 5, 7 * height // 8], outline="black",
                                         width=4)
        logo_mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(logo_mask).rectangle([width // 3, height // 4, 2 * width // 3, height // 2], fill=255)
        return GarmentRequest(prompt="a shirt", sketch=sketch, color=swatch_from_hex("#336699"),
                              logo=Image.new("RGB", (64, 64), "red"), logo_mask=logo_mask, height=height, width=width,
                              num_inference_steps=steps, seed=1)
    if case.kind == "dressing":
        categories = ["upper", "lower", "hat", "shoes"]
        return DressingRequest(garments=[Garment(garment, categories[i]) for i in range(case.garments)],
                               height=height, width=width, num_inference_steps=steps, seed=1)
    if case.kind == "tryon":
        return TryOnRequest(person=person, garment=garment, mask=mask, auto_mask=False, height=height, width=width,
                            num_inference_steps=steps, seed=1, paste_mode="none")
    if case.kind == "tryoff":
        return TryOffRequest(person=person, mask=mask, auto_mask=False, height=height, width=width,
                             num_inference_steps=steps, seed=1, background="keep")
    if case.kind == "temu":
        return TemuTryOffRequest(person=person, mask=mask, auto_mask=False, height=height, width=width,
                                 num_inference_steps=steps, seed=1, background="keep", memory_mode="resident",
                                 caption="a t-shirt with a crew neckline, short sleeves, a regular fit")
    raise ValueError(case.kind)


def ours_runner(case: Case, bundle):
    pipe = bundle.pipeline[case.kind] if case.family == "inpaint" else bundle.pipeline
    if case.kind == "temu":
        def run(request):
            pipe._cache.clear()  # a new photo every image: the extractor runs (re-rolls of one photo skip it)
            return pipe(request).images

        return run
    return lambda request: pipe(request).images


# ---------------------------------------------------------------------------------------------- the run
def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return name


def run_case(case: Case, bundle, size: str, device: torch.device, dtype: torch.dtype, steps: int | None,
             repeats: int, variants: tuple[str, ...], log=print) -> dict:
    height, width = {"full": case.full, "small": case.small, "tiny": TINY}[size]
    steps = steps or (case.steps if size == "full" else 3 if size == "small" else 2)
    request = make_request(case, height, width, steps)
    denoising_steps = steps * case.stages
    ref_dtype = REFERENCE_DTYPES[case.kind] if device.type == "cuda" else torch.float32
    runners = {"ours": ours_runner(case, bundle), "reference": reference_runner(case.family, case.kind, bundle),
               "plain": plain_runner(case.family, case.kind, bundle)}
    result = {"case": case.name, "label": case.label, "kind": case.kind, "height": height, "width": width,
              "steps": steps, "denoising_steps": denoising_steps, "cfg_scale": request.guidance_scale,
              "model_parameters": bundle.num_parameters, "model_mib": bundle.num_bytes / 2**20,
              "reference_shape": REFERENCE_SHAPES[case.kind], "variants": {}}
    # Warm-ups (with the FLOP count) first, then the timed runs INTERLEAVED (ours, reference, plain, ours, ...): on a
    # shared machine a burst of load then falls on every variant alike instead of on one.
    warm, runs = {}, {variant: [] for variant in variants}
    for round_ in range(-1, repeats):
        for variant in variants:
            variant_dtype = ref_dtype if variant == "reference" else dtype
            if variant_dtype != dtype:
                bundle.cast(variant_dtype)
            try:
                def call():
                    return runners[variant](request)

                if round_ < 0:
                    warm[variant] = warm_up(call, bundle.denoisers, device, denoising_steps)
                else:
                    runs[variant].append(timed_run(call, bundle.denoisers, device))
            finally:
                if variant_dtype != dtype:
                    bundle.cast(dtype)
    for variant in variants:
        figures = summarise(warm[variant], runs[variant], device)
        figures["dtype"] = str(ref_dtype if variant == "reference" else dtype).replace("torch.", "")
        result["variants"][variant] = figures
        log(f"  {case.name:16s} {variant:9s} {figures['seconds_median']:8.3f} s/image  "
            f"{figures['denoiser_seconds_per_step'] * 1000:8.1f} ms/step  {figures['flops_per_image'] / 1e9:9.1f} GFLOP")
    return result


def add_ratios(result: dict, matmul: dict, device: torch.device) -> None:
    peak = matmul["flops_per_s"]
    for figures in result["variants"].values():
        figures["fraction_of_matmul"] = figures["achieved_flops_per_s"] / peak
    variants, ratios = result["variants"], {}
    if "ours" in variants and "reference" in variants:
        ratios["speedup_vs_reference"] = variants["reference"]["seconds_median"] / variants["ours"]["seconds_median"]
        ratios["denoiser_step_speedup_vs_reference"] = (variants["reference"]["denoiser_seconds_per_step"]
                                                        / variants["ours"]["denoiser_seconds_per_step"])
    if "ours" in variants and "plain" in variants:
        ratios["overhead_vs_plain"] = variants["ours"]["seconds_median"] / variants["plain"]["seconds_median"] - 1
        ratios["flops_overhead_vs_plain"] = variants["ours"]["flops_per_image"] / variants["plain"]["flops_per_image"] - 1
    targets = {}
    if "speedup_vs_reference" in ratios:
        targets["speedup_vs_reference"] = ratios["speedup_vs_reference"] >= TARGETS["speedup_vs_reference_min"]
    if "overhead_vs_plain" in ratios:
        targets["overhead_vs_plain"] = ratios["overhead_vs_plain"] <= TARGETS["overhead_vs_plain_max"]
    if device.type == "cuda" and "ours" in variants:
        targets["fraction_of_matmul"] = variants["ours"]["fraction_of_matmul"] >= TARGETS["fraction_of_matmul_min_gpu"]
    result["ratios"], result["targets_met"] = ratios, targets


def markdown_table(report: dict) -> str:
    memory = "peak MiB" + (" (CUDA)" if report["device"] == "cuda" else " (RSS delta)")
    lines = [
        f"| case | H x W | steps | ours s/img | UNet/DiT ms/step | {memory} | GFLOP/img | % of matmul | "
        "reference s/img | ours vs ref | plain s/img | ours over plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    for row in report["cases"]:
        v, r = row["variants"], row.get("ratios", {})
        ours, ref, plain = v.get("ours", {}), v.get("reference", {}), v.get("plain", {})
        lines.append(
            f"| {row['case']} | {row['height']}x{row['width']} | {row['denoising_steps']} | "
            f"{fmt(ours.get('seconds_median'), '.2f')} | {fmt(ours.get('denoiser_seconds_per_step', 0) * 1000, '.0f')} | "
            f"{fmt(ours.get('peak_mib'), '.0f')} | {fmt(ours.get('flops_per_image', 0) / 1e9, '.0f')} | "
            f"{fmt(ours.get('fraction_of_matmul', 0) * 100, '.0f')} % | {fmt(ref.get('seconds_median'), '.2f')} | "
            f"{fmt(r.get('speedup_vs_reference'), '.2f')}x | {fmt(plain.get('seconds_median'), '.2f')} | "
            + (f"{r['overhead_vs_plain'] * 100:+.0f} % |" if "overhead_vs_plain" in r else "- |")
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipelines", default="all",
                        help=f"comma-separated cases or prefixes (default all): {', '.join(CASE_NAMES)}")
    parser.add_argument("--size", choices=SIZES, default="full" if torch.cuda.is_available() else "small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="fp16/bf16/fp32 for ours and plain (default: the studio's "
                        "choice, bf16 on recent GPUs, fp32 on CPU); the reference runs in its method's dtype on GPU")
    parser.add_argument("--steps", type=int, default=None,
                        help="denoising steps per loop (default: each method's at --size full, 3 small, 2 tiny)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per variant after the warm-up "
                        "(default 3; 2 at --size tiny)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="subset of ours,reference,plain")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<device>_<size>_<date>.json)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]

    from pipelines.core.devices import pick_device

    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    variants = tuple(v for v in VARIANTS if v in {x.strip() for x in args.variants.split(",")})
    if not variants:
        raise SystemExit(f"--variants: choose from {', '.join(VARIANTS)}")
    repeats = args.repeats or (2 if args.size == "tiny" else 3)
    cases = select(args.pipelines)
    if args.threads:
        torch.set_num_threads(args.threads)
    with quiet_libraries(), torch.no_grad():
        report = run(cases, args, device, dtype, variants, repeats)
    return report


def run(cases: list[Case], args, device: torch.device, dtype: torch.dtype, variants: tuple[str, ...],
        repeats: int) -> dict:
    started = dt.datetime.now(dt.timezone.utc)
    print(f"device {device} ({device_name(device)}), size {args.size}, {dtype}, {torch.get_num_threads()} threads",
          flush=True)
    matmul = matmul_throughput(device, dtype)
    print(f"dense matmul {matmul['n']}^3 {matmul['dtype']}: {matmul['flops_per_s'] / 1e12:.3f} TFLOP/s", flush=True)
    report = {
        "benchmark": "every pipeline side by side (ours / reference loop / plain diffusers)",
        "device": device.type, "device_name": device_name(device), "size": args.size,
        "reduced_size": args.size != "full", "dtype": str(dtype).replace("torch.", ""),
        "date": started.isoformat(timespec="seconds"), "commit": _git("rev-parse", "HEAD"),
        "worktree_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "repeats": repeats, "matmul": matmul, "targets": TARGETS, "command": " ".join(["python -m benchmarks.run", *args.argv]),
        "cases": [],
    }
    for module in ("diffusers", "transformers"):
        report[module] = __import__(module).__version__
    if device.type == "cuda":
        report["cuda"] = torch.version.cuda
        report["gpu_total_mib"] = torch.cuda.get_device_properties(device).total_memory / 2**20
    bundle, family = None, None
    for case in cases:
        if case.family != family:
            bundle = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            family = case.family
            print(f"building {family} models ({args.size})", flush=True)
            bundle = BUILDERS[family](args.size, str(device), dtype)
        result = run_case(case, bundle, args.size, device, dtype, args.steps, repeats, variants)
        add_ratios(result, matmul, device)
        report["cases"].append(result)
    bundle = None
    report["seconds_total"] = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    table = markdown_table(report)
    report["table_markdown"] = table
    slug = "cpu" if device.type != "cuda" else re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    out = Path(args.out) if args.out else RESULTS / f"{slug}_{args.size}_{started.date().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=_jsonable))
    print()
    print(table)
    print(f"\nwrote {out}")
    return report


@contextlib.contextmanager
def quiet_libraries():
    """The random-weight models trip warnings that say nothing here (fp32 casts, the char-level tokenizer's length)."""
    import diffusers
    import transformers

    levels = diffusers.utils.logging.get_verbosity(), transformers.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers.utils.logging.set_verbosity(levels[0])
        transformers.logging.set_verbosity(levels[1])


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    raise TypeError(f"not JSON-able: {type(value).__name__}")


if __name__ == "__main__":
    main()
