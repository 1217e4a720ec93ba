"""How one variant of one pipeline is measured: latency, denoiser time per step, peak memory, counted FLOPs, and the
device's dense matmul throughput they are compared with."""

from __future__ import annotations

import gc
import os
import statistics
import threading
import time
from typing import Callable, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula, sdpa_flop_count

# PyTorch counts SDPA's CUDA kernels (flash / efficient / cuDNN) but not the CPU flash kernel that
# F.scaled_dot_product_attention takes on CPU: without this, attention would count 0 FLOPs on CPU.
_CPU_SDPA = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
if _CPU_SDPA is not None and _CPU_SDPA.default not in flop_registry:

    @register_flop_formula(_CPU_SDPA)
    def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DenoiserProbe:
    """Forward hooks on the per-step model(s): number of calls, time inside them, and (while a FlopCounterMode is
    set as ``counter``) the FLOPs counted inside them. CUDA time comes from events (no synchronisation per call)."""

    def __init__(self, modules: Sequence[torch.nn.Module], device: torch.device) -> None:
        self.device = device
        self.counter: FlopCounterMode | None = None
        self.handles = []
        for module in dict.fromkeys(modules):  # a module listed twice is hooked once
            self.handles.append(module.register_forward_pre_hook(self._before))
            self.handles.append(module.register_forward_hook(self._after))
        self.reset()

    def reset(self) -> None:
        self.calls, self.flops, self._seconds = 0, 0, 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._open: list[tuple] = []

    def _before(self, module, args):
        flops = self.counter.get_total_flops() if self.counter is not None else 0
        if self.device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            self._open.append((start, flops))
        else:
            self._open.append((time.perf_counter(), flops))

    def _after(self, module, args, output):
        start, flops = self._open.pop()
        self.calls += 1
        if self.counter is not None:
            self.flops += self.counter.get_total_flops() - flops
        if self.device.type == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((start, end))
        else:
            self._seconds += time.perf_counter() - start

    @property
    def seconds(self) -> float:
        if self._events:
            synchronize(self.device)
            self._seconds += sum(start.elapsed_time(end) for start, end in self._events) / 1000
            self._events = []
        return self._seconds

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


class RssPeak:
    """CPU memory: the peak of the process RSS (sampled every ``interval`` s from /proc/self/statm) above its value
    when started. Not a per-tensor figure: it includes the allocator's caching and everything else the process does."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._stop = threading.Event()
        self.base = self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * self.page
        except (OSError, ValueError, IndexError):
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> "RssPeak":
        gc.collect()
        self.base = self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def trim_malloc() -> None:
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def matmul_throughput(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 5) -> dict:
    """Dense ``n x n @ n x n`` matmul FLOP/s in ``dtype`` on ``device``: the best of ``repeats`` timed runs after one
    warm-up (the reference every pipeline's achieved FLOP/s is divided by)."""
    if n is None:
        n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    inner = 10 if device.type == "cuda" else 1
    torch.matmul(a, b)
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            torch.matmul(a, b)
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / inner)
    flops = 2 * n**3
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "seconds": best, "flops_per_s": flops / best,
            "threads": torch.get_num_threads()}


def warm_up(call: Callable[[], object], denoisers: Sequence[torch.nn.Module], device: torch.device,
            denoising_steps: int) -> dict:
    """The first call, under FlopCounterMode: the warm-up (kernels, allocator, lazy set-up) and the counted FLOPs of
    one whole image, with the part counted inside the per-step model(s)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    probe = DenoiserProbe(denoisers, device)
    try:
        with FlopCounterMode(display=False) as counter:
            probe.counter = counter
            call()
        probe.counter = None
        figures = {"flops_per_image": counter.get_total_flops(), "denoiser_flops_per_step": probe.flops / denoising_steps,
                   "denoiser_calls_per_step": probe.calls / denoising_steps, "denoising_steps": denoising_steps}
        if device.type == "cuda":  # one more warm-up outside the dispatch mode (cuDNN/cuBLAS heuristics)
            call()
    finally:
        probe.close()
    return figures


def timed_run(call: Callable[[], object], denoisers: Sequence[torch.nn.Module], device: torch.device) -> dict:
    """One timed call: seconds, seconds inside the per-step model(s), and the memory peak of the call."""
    probe = DenoiserProbe(denoisers, device)
    rss = None
    try:
        if device.type == "cuda":
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        else:
            trim_malloc()  # freed blocks back to the OS, so the RSS peak above the start is this call's
            rss = RssPeak().__enter__()
        try:
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            seconds = time.perf_counter() - start
        finally:
            if rss is not None:
                rss.__exit__(None, None, None)
        out = {"seconds": seconds, "denoiser_seconds": probe.seconds, "denoiser_calls": probe.calls}
    finally:
        probe.close()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        out.update(peak_bytes=peak, peak_over_resident_bytes=peak - before)
    else:
        out.update(peak_bytes=rss.peak - rss.base, rss_before_bytes=rss.base)
    return out


def summarise(warm: dict, runs: list[dict], device: torch.device) -> dict:
    """Every figure of one variant from its warm-up and its timed runs."""
    times = [run["seconds"] for run in runs]
    median = statistics.median(times)
    steps = warm["denoising_steps"]
    out = {
        "seconds_median": median, "seconds_min": min(times), "seconds_all": times, **warm,
        # medians like the latency, so one run slowed by outside load does not skew them
        "denoiser_seconds_per_step": statistics.median(run["denoiser_seconds"] for run in runs) / steps,
        "denoiser_seconds_all": [run["denoiser_seconds"] for run in runs],
        "denoiser_share_of_latency": statistics.median(run["denoiser_seconds"] / run["seconds"] for run in runs),
        "achieved_flops_per_s": warm["flops_per_image"] / median,
        "peak_mib": max(run["peak_bytes"] for run in runs) / 2**20,
    }
    if device.type == "cuda":
        out.update(memory_kind="cuda max_memory_allocated during the call (the resident weights included)",
                   peak_over_resident_mib=max(run["peak_over_resident_bytes"] for run in runs) / 2**20)
    else:
        out.update(memory_kind="cpu: process RSS peak above its value at the start of the call (malloc_trim first; "
                               "sampled every 5 ms from /proc/self/statm); the resident weights are not in it",
                   rss_before_mib=runs[0]["rss_before_bytes"] / 2**20)
    return out
