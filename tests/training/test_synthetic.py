"""GarmentBench-mini (training.synthetic): deterministic files, drawings that match their masks and ground truth,
and folders the existing readers (GarmentBench, try-on / try-off triplets, dressing) load unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from training.concat_inpaint_finetune import load_triplets
from training.dressing import load_dressing_dataset
from training.garmentbench import load_garmentbench
from training.synthetic import (
    CATEGORIES,
    COLOURS,
    PATTERN_WORDS,
    SyntheticError,
    captions,
    draw_garment,
    generate,
    main,
    sample_garment,
)

ROOT = Path(__file__).resolve().parents[2]
COUNT = 12  # two of each category
SIZE = (64, 80)


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "mini"
    summary = generate(out, count=COUNT, seed=0, size=SIZE)
    assert summary.counts["tryon"] == summary.counts["tryoff"] == summary.counts["dressing"] == COUNT
    return out


def manifest(root: Path, kind: str) -> dict:
    return json.loads((root / f"{kind}.json").read_text())


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int32)


def white(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) > 127


def boundary(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels within ``width`` px of the mask's edge (inside or outside)."""
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    m = mask.astype(np.uint8)
    return (cv2.dilate(m, kernel) > 0) & ~(cv2.erode(m, kernel) > 0)


def garmentbench_samples(root: Path):
    for entry in manifest(root, "garmentbench")["samples"]:
        yield entry, {key: root / "garmentbench" / value for key, value in entry["files"].items() if value}


# -- determinism and the output folder ------------------------------------------------------------------
def test_same_seed_gives_identical_bytes_and_another_seed_differs(mini, tmp_path):
    again = generate(tmp_path / "again", count=COUNT, seed=0, size=SIZE)
    reference, repeated = files(mini), files(again.out)
    assert reference.keys() == repeated.keys()
    assert [name for name in reference if reference[name] != repeated[name]] == []

    other = files(generate(tmp_path / "other", count=COUNT, seed=1, size=SIZE, kinds=["garmentbench"]).out)
    clothes = [name for name in other if name.startswith("garmentbench/cloth/")]
    assert len(clothes) == COUNT
    assert sum(other[name] != reference[name] for name in clothes) >= COUNT - 1


def test_sample_depends_on_its_index_not_on_count_kinds_or_split(mini, tmp_path):
    fewer = files(generate(tmp_path / "fewer", count=4, seed=0, size=SIZE, kinds=["garmentbench"]).out)
    reference = files(mini)
    for name in [n for n in fewer if n.startswith("garmentbench/") and n.endswith(".png")]:
        assert fewer[name] == reference[name], name
    held_out = files(generate(tmp_path / "test", count=4, seed=0, size=SIZE, kinds=["garmentbench"], split="test").out)
    assert all(held_out[f"garmentbench/cloth/{i:04d}.png"] != reference[f"garmentbench/cloth/{i:04d}.png"]
               for i in range(4))


def test_refuses_a_non_empty_output_folder(mini, tmp_path, capsys):
    before = files(mini)
    with pytest.raises(SyntheticError, match="not an empty folder"):
        generate(mini, count=2, seed=5, size=SIZE)
    assert main(["--out", str(mini), "--count", "2"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert files(mini) == before
    (tmp_path / "empty").mkdir()
    assert generate(tmp_path / "empty", count=1, size=SIZE, kinds=["garmentbench"]).counts["garmentbench/color"] == 1


@pytest.mark.parametrize("arguments, message", [
    (dict(size=(40, 60)), "at least 48x64"),
    (dict(kinds=["garmentbench", "pose"]), "kind 'pose'"),
    (dict(split="val"), "split 'val'"),
    (dict(count=0), "at least 1"),
])
def test_bad_arguments_are_refused_by_name(tmp_path, arguments, message):
    with pytest.raises(SyntheticError, match=message):
        generate(tmp_path / "out", **{"count": 1, **arguments})
    assert not (tmp_path / "out").exists()


def test_command_line(tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run([sys.executable, "-m", "training.synthetic", "--out", str(out), "--count", "3",
                             "--seed", "2", "--size", "96x128", "--kinds", "garmentbench,dressing"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "garmentbench/color 3" in result.stdout and "dressing 3" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["dressing", "dressing.json", "garmentbench", "garmentbench.json"]
    assert Image.open(out / "garmentbench" / "cloth" / "0000.png").size == (96, 128)
    assert manifest(out, "dressing")["seed"] == 2


# -- the drawings match their masks and ground truth ----------------------------------------------------
def test_silhouette_is_exactly_the_non_white_pixels_of_the_flat_garment(mini):
    for entry, paths in garmentbench_samples(mini):
        cloth = rgb(paths["cloth"])
        garment = (cloth != 255).any(-1)
        silhouette = white(paths["silhouette"])
        wrong = garment ^ silhouette
        assert not (wrong & ~boundary(silhouette)).any(), entry["id"]  # only ever at the edge
        assert wrong.sum() <= 0.02 * silhouette.sum(), entry["id"]
        truth = entry["garment"]
        ys, xs = np.nonzero(silhouette)
        assert truth["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert truth["area"] == silhouette.sum()
        assert silhouette.mean() > 0.08  # a garment, not a speck


def test_garment_pixels_are_their_named_colours(mini):
    solid = 0
    for entry, paths in garmentbench_samples(mini):
        truth = entry["garment"]
        cloth, silhouette = rgb(paths["cloth"]), white(paths["silhouette"])
        assert truth["colour"]["rgb"] == list(COLOURS[truth["colour"]["name"]])
        assert (rgb(paths["color"]) == truth["colour"]["rgb"]).all()  # the colour adapter's swatch
        outside_logo = silhouette.copy()
        if truth["logo"]:
            x0, y0, x1, y1 = truth["logo"]["box"]
            outside_logo[y0:y1, x0:x1] = False
        pixels = cloth[outside_logo]
        main_colour = (pixels == truth["colour"]["rgb"]).all(-1)
        if truth["pattern"]["kind"] == "solid":
            solid += 1
            assert main_colour.all(), entry["id"]
        else:
            second = (pixels == truth["pattern"]["colour"]["rgb"]).all(-1)
            assert (main_colour | second).all(), entry["id"]
            assert 0.1 < second.mean() < 0.9, entry["id"]  # the pattern is visible
    assert solid >= 2


def test_logo_pixels_lie_inside_the_logo_mask(mini):
    logos = 0
    for entry, paths in garmentbench_samples(mini):
        truth = entry["garment"]
        if not truth["logo"]:
            assert "mask" not in paths and "logo" not in paths
            continue
        logos += 1
        cloth, box_mask = rgb(paths["cloth"]), white(paths["mask"])
        x0, y0, x1, y1 = truth["logo"]["box"]
        expected = np.zeros_like(box_mask)
        expected[y0:y1, x0:x1] = True
        assert (box_mask == expected).all()
        assert not (box_mask & ~white(paths["silhouette"])).any()  # the box lies on the garment
        glyph = (cloth == truth["logo"]["colour"]["rgb"]).all(-1)
        assert not (glyph & ~box_mask).any(), entry["id"]
        assert glyph.sum() >= 0.2 * box_mask.sum(), entry["id"]
        logo_image = rgb(paths["logo"])  # the LEM's logo input: the same glyph alone on white
        assert set(map(tuple, logo_image.reshape(-1, 3))) == {(255, 255, 255), tuple(truth["logo"]["colour"]["rgb"])}
    assert logos >= 2


def test_sketch_lines_lie_on_the_outline_and_seams(mini):
    for entry, paths in garmentbench_samples(mini):
        silhouette = white(paths["silhouette"])
        dark = np.asarray(Image.open(paths["sketch"]).convert("L")) < 128
        seams = np.zeros(silhouette.shape, np.uint8)
        for line in entry["garment"]["seams"]:
            cv2.polylines(seams, [np.asarray(line, np.int32)], False, 1, 3)  # 1 px either side
        outline = np.zeros(silhouette.shape, np.uint8)
        cv2.polylines(outline, [np.asarray(entry["garment"]["outline"], np.int32)], True, 1, 3)
        # the polygon's own outline may run inside the raster mask where two edges meet (an armpit's wedge)
        allowed = boundary(silhouette) | (seams > 0) | (outline > 0)
        assert not (dark & ~allowed).any(), entry["id"]  # nothing inside the flat areas
        assert not (dark & ~(cv2.dilate(silhouette.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)).any()
        assert (dark & ~boundary(silhouette) & ~(seams > 0)).sum() <= 0.06 * dark.sum(), entry["id"]
        edge = silhouette & ~(cv2.erode(silhouette.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
        near_dark = cv2.dilate(dark.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert (near_dark[edge]).mean() > 0.95, entry["id"]  # the outline is drawn all round
        assert dark[silhouette].mean() < 0.4, entry["id"]  # lines, not a fill
        assert (dark & (seams > 0) & ~boundary(silhouette, 2)).any() or not entry["garment"]["seams"], entry["id"]


def test_captions_name_category_colour_pattern_and_logo(mini):
    records = manifest(mini, "garmentbench")["samples"]
    pairs = json.loads((mini / "garmentbench" / "color_pair.json").read_text())
    sketch_pairs = json.loads((mini / "garmentbench" / "sketch_pair.json").read_text())
    assert [e["garment"]["category"] for e in records] == [CATEGORIES[i % 6] for i in range(COUNT)]
    for entry, pair, sketch_pair in zip(records, pairs, sketch_pairs):
        truth = entry["garment"]
        caption = pair["caption"]
        assert caption == truth["captions"][0] == sketch_pair["caption"][0]
        assert truth["category"] in caption and truth["colour"]["name"] in caption
        if truth["pattern"]["kind"] != "solid":
            assert PATTERN_WORDS[truth["pattern"]["kind"]] in caption
        if truth["logo"]:
            assert caption.endswith(f"{truth['logo']['glyph']} logo")
        else:
            assert "logo" not in caption


def test_a_red_tshirt_with_a_star_logo():
    rng = np.random.default_rng(0)
    spec = replace(sample_garment(rng, "t-shirt"), colour="red", pattern="solid", pattern_colour=None, glyph="star",
                   logo_colour="yellow")
    drawing = draw_garment(spec, (96, 128))
    assert captions(drawing.spec)[0] == "a red t-shirt with a star logo"
    flat = np.asarray(drawing.flat)
    assert drawing.logo_box is not None
    assert (flat[drawing.mask] == COLOURS["red"]).all(-1).mean() > 0.9


# -- people ---------------------------------------------------------------------------------------------
def test_person_masks_cover_the_worn_garment(mini):
    tryon, tryoff = manifest(mini, "tryon")["samples"], manifest(mini, "tryoff")["samples"]
    for on, off in zip(tryon, tryoff):
        root_on, root_off = mini / "tryon", mini / "tryoff"
        assert (root_on / on["files"]["person"]).read_bytes() == (root_off / off["files"]["person"]).read_bytes()
        flat = mini / "garmentbench" / "cloth" / f"{on['id']}.png"
        assert (root_on / on["files"]["garment"]).read_bytes() == flat.read_bytes()
        exact, dilated = white(root_off / off["files"]["mask"]), white(root_on / on["files"]["mask"])
        assert exact.sum() == off["worn"]["area"] > 0
        assert not (exact & ~dilated).any() and dilated.sum() > exact.sum()  # try-on: where the new garment may go
        person, truth = rgb(root_off / off["files"]["person"]), off["garment"]
        if truth["pattern"]["kind"] == "solid":
            shown = person[exact]
            if off["worn"]["logo_box"]:
                x0, y0, x1, y1 = off["worn"]["logo_box"]
                inside = np.zeros_like(exact)
                inside[y0:y1, x0:x1] = True
                shown = person[exact & ~inside]
            colour = np.array(truth["colour"]["rgb"])
            channel = colour.argmax()
            ratio = shown[:, channel] / max(1, colour[channel])
            assert ((ratio > 0.8) & (ratio < 1.01)).all(), off["id"]  # the named colour, shaded
            expected = np.outer(ratio, colour)
            assert np.abs(shown - expected).max() <= 3, off["id"]
        assert not (exact & (person == (236, 236, 232)).all(-1)).any()  # never on the background


def test_dressing_slots(mini):
    samples = load_dressing_dataset(mini / "dressing")
    entries = manifest(mini, "dressing")["samples"]
    assert len(samples) == len(entries) == COUNT
    for sample, entry in zip(samples, entries):
        assert sample.prompt == entry["prompt"] and sample.prompt.startswith("a mannequin wearing ")
        assert list(sample.categories) == [slot["category"] for slot in entry["garments"]]
        if entry["garments"][0]["garment"]["category"] == "dress":
            assert sample.categories == ("dress",)
        else:
            assert sample.categories[0] in ("upper", "outerwear") and sample.categories[1] == "lower"
        masks = [white(path) for path in sample.masks]
        assert all(mask.any() for mask in masks)
        if len(masks) == 2:
            assert not (masks[0] & masks[1]).any()  # each pixel shows one garment
        for slot, path in zip(entry["garments"], sample.garments):
            assert slot["garment"]["captions"][0] in sample.prompt
            assert (path.parent / slot["garment_file"]) == path


# -- the existing readers load it unchanged --------------------------------------------------------------
def test_existing_readers_load_every_kind(mini):
    entries = manifest(mini, "garmentbench")["samples"]
    with_logo = sum(1 for entry in entries if entry["garment"]["logo"])
    assert 0 < with_logo < COUNT
    for task, expected in (("color", COUNT), ("gam", COUNT), ("lem", with_logo)):
        records = load_garmentbench(mini / "garmentbench", task)
        assert len(records) == expected, task
    gam = load_garmentbench(mini / "garmentbench", "gam")
    assert gam[0].captions == tuple(entries[0]["garment"]["captions"])
    for kind in ("tryon", "tryoff"):
        triplets = load_triplets(mini / kind)
        assert len(triplets) == COUNT
        assert [t.person.stem for t in triplets] == [e["id"] for e in manifest(mini, kind)["samples"]]
    assert len(load_dressing_dataset(mini / "dressing")) == COUNT


def test_manifest_holds_the_ground_truth(mini):
    for kind in ("garmentbench", "tryon", "tryoff", "dressing"):
        data = manifest(mini, kind)
        header = (data["kind"], data["seed"], data["split"], data["size"], data["count"])
        assert header == (kind, 0, "train", [64, 80], COUNT)
        assert len(data["samples"]) == COUNT
    for entry in manifest(mini, "tryon")["samples"]:
        truth = entry["garment"]
        assert set(truth) >= {"category", "colour", "pattern", "logo", "bbox", "captions", "shape"}
        assert truth["category"] in CATEGORIES and truth["colour"]["name"] in COLOURS
        assert (entry["partner"] is None) == (truth["category"] == "dress")
