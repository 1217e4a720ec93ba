"""The benchmark harness on the tiny configs: one JSON per run with every figure, ratios computed from the measured
numbers, FLOPs counted (attention included on CPU), and the reference loops shaped as documented."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import run as bench
from benchmarks.measure import matmul_throughput

FIGURES = ("seconds_median", "seconds_min", "denoiser_seconds_per_step", "flops_per_image", "denoiser_flops_per_step",
           "achieved_flops_per_s", "fraction_of_matmul")


def finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "run.json"
    returned = bench.main(["--size", "tiny", "--pipelines", "garment,tryoff_512x384", "--steps", "2",
                           "--repeats", "1", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["cases"][0]["case"] == returned["cases"][0]["case"]
    return written


def test_the_run_json_names_device_versions_and_commit(report):
    for key in ("device", "device_name", "date", "commit", "torch", "diffusers", "transformers", "size", "dtype",
                "threads", "repeats", "matmul", "table_markdown"):
        assert report[key] not in (None, ""), key
    assert report["size"] == "tiny" and report["reduced_size"] is True and report["device"] == "cpu"
    assert finite_positive(report["matmul"]["flops_per_s"])
    assert [c["case"] for c in report["cases"]] == ["garment", "tryoff_512x384"]


def test_every_variant_has_positive_finite_figures(report):
    for case in report["cases"]:
        assert set(case["variants"]) == {"ours", "reference", "plain"}
        for name, figures in case["variants"].items():
            for key in FIGURES:
                assert finite_positive(figures[key]), (case["case"], name, key, figures[key])
            assert math.isfinite(figures["peak_mib"]) and figures["peak_mib"] >= 0
            assert "RSS" in figures["memory_kind"]
            # the encoders / VAE run outside the per-step model: an image costs more than its steps
            assert figures["flops_per_image"] > figures["denoiser_flops_per_step"] * case["denoising_steps"]


def test_ratios_come_from_the_measured_numbers(report):
    for case in report["cases"]:
        v, ratios = case["variants"], case["ratios"]
        assert ratios["speedup_vs_reference"] == pytest.approx(
            v["reference"]["seconds_median"] / v["ours"]["seconds_median"])
        assert ratios["overhead_vs_plain"] == pytest.approx(v["ours"]["seconds_median"] / v["plain"]["seconds_median"] - 1)
        assert v["ours"]["fraction_of_matmul"] == pytest.approx(
            v["ours"]["achieved_flops_per_s"] / report["matmul"]["flops_per_s"])
        assert case["targets_met"]["speedup_vs_reference"] == (ratios["speedup_vs_reference"] >= 2.0)
        assert "fraction_of_matmul" not in case["targets_met"]  # the 40 % target is a GPU target
        assert case["case"] in report["table_markdown"]


def test_the_reference_loops_have_the_published_shape(report):
    garment, tryoff = report["cases"]
    # design: GAM 2 steps + LEM 2 steps; ours batches CFG (1 call a step), the published GAM loop makes 2 calls
    assert garment["denoising_steps"] == 4
    assert garment["variants"]["ours"]["denoiser_calls_per_step"] == 1
    assert garment["variants"]["reference"]["denoiser_calls_per_step"] == 1.5
    # the reference K/V projected in every call costs FLOPs that ours spends once
    assert garment["variants"]["reference"]["flops_per_image"] > garment["variants"]["ours"]["flops_per_image"]
    # try-off: CatVTON's loop batches CFG too, and does the same per-step work as ours
    assert tryoff["variants"]["reference"]["denoiser_calls_per_step"] == 1
    assert tryoff["variants"]["reference"]["denoiser_flops_per_step"] == pytest.approx(
        tryoff["variants"]["ours"]["denoiser_flops_per_step"], rel=0.01)


def test_cpu_attention_flops_are_counted():
    from torch.utils.flop_counter import FlopCounterMode

    q, k = torch.randn(2, 4, 64, 32), torch.randn(2, 4, 100, 32)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.scaled_dot_product_attention(q, k, k)
    assert counter.get_total_flops() == 2 * 2 * (2 * 4 * 64 * 100 * 32)  # QK^T and PV


def test_matmul_throughput_and_case_selection():
    figure = matmul_throughput(torch.device("cpu"), torch.float32, n=128, repeats=2)
    assert figure["n"] == 128 and finite_positive(figure["flops_per_s"])
    assert [c.name for c in bench.select("dressing,temu")] == ["dressing_1", "dressing_3", "temu"]
    assert [c.name for c in bench.select("tryon_1024x768")] == ["tryon_1024x768"]
    with pytest.raises(SystemExit, match="unknown 'nope'"):
        bench.select("nope")
