"""Automatic garment masks (mediapipe on a real photo, tiny SegFormer), mask rules and SAM refinement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.types import TRYOFF_CATEGORIES, TRYON_CATEGORIES, CheckpointError
from pipelines.preprocess.masks import (
    AutoMasker,
    BodyParse,
    ClothesParser,
    SamRefiner,
    combine,
    mask_overlay,
    tiny_sam,
    tryoff_mask,
    tryon_mask,
    write_tiny_sam,
    write_tiny_segformer,
)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def mediapipe_parse(astronaut) -> BodyParse:
    masker = AutoMasker(segformer_location=None)
    parse = masker.parse(astronaut)
    assert masker.last_source == "mediapipe"
    return parse


def _on(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask) > 0


# ------------------------------------------------------------------------------ real photo, offline
def test_mediapipe_upper_mask_is_the_jacket_not_face_or_background(astronaut, mediapipe_parse):
    mask = _on(tryon_mask(mediapipe_parse, "upper"))
    assert mask.shape == (512, 512)
    assert 0.15 < mask.mean() < 0.7
    silhouette = mediapipe_parse.silhouette
    assert (mask & ~silhouette).sum() < 0.1 * mask.sum()  # only the dilation margin leaves the person
    assert not mask[95:165, 185:265].any()  # the face (eyes at y~105-115, mouth at y~150)
    assert mask[330:420, 120:280].mean() > 0.95  # the jacket's chest and mission patch
    assert not mask[:200, 380:].any() and not mask[:200, :60].any()  # shuttle model / flag
    # The jacket is orange: the masked pixels are mostly orange, unlike the image as a whole.
    pixels = np.asarray(astronaut)[mask].astype(int)
    assert ((pixels[:, 0] - pixels[:, 2]) > 80).mean() > 0.5


def test_mediapipe_categories_change_the_region(mediapipe_parse):
    masks = {category: _on(tryon_mask(mediapipe_parse, category)) for category in TRYON_CATEGORIES}
    assert masks["upper"].sum() > 0 and masks["dress"].sum() > 0
    assert not np.array_equal(masks["upper"], masks["lower"])
    # Hips are at the bottom edge of this half-length portrait: lower-body garments start there.
    lower_rows = np.nonzero(masks["lower"].any(axis=1))[0]
    assert lower_rows.size == 0 or lower_rows.min() > 380
    assert masks["full"].sum() >= masks["upper"].sum() * 0.9
    for category in TRYOFF_CATEGORIES:
        off = _on(tryoff_mask(mediapipe_parse, category))
        assert not (off & ~mediapipe_parse.silhouette).any()  # the worn garment lies on the person
        assert not off[95:165, 185:265].any()


def test_masker_falls_back_and_reports(astronaut):
    masker = AutoMasker(segformer_location="mattmdjaga/segformer_b2_clothes")  # hub unreachable in tests
    result = masker.tryon_mask(astronaut, "upper")
    assert result.source == "mediapipe" and "segformer_b2_clothes" in result.note
    assert _on(result.mask).any()


# ---------------------------------------------------------------------------------- tiny SegFormer
def test_tiny_segformer_end_to_end(tmp_path, astronaut):
    folder = write_tiny_segformer(tmp_path)
    assert (folder / "config.json").exists() and (folder / "preprocessor_config.json").exists()
    labels = ClothesParser(folder).parse(astronaut.resize((96, 128)))
    assert labels.shape == (128, 96) and labels.dtype == np.uint8 and labels.max() < 18
    masker = AutoMasker(segformer_location=folder)
    result = masker.tryoff_mask(astronaut, "upper")
    assert result.source == "segformer" and result.note == "" and result.mask.size == astronaut.size
    # Try-on with SegFormer also uses the pose: its body parts widen the mask, hands are protected.
    parse = masker.parse(astronaut)
    assert parse.pose is not None and parse.labels.shape == (512, 512)
    tryon = _on(masker.tryon_mask(astronaut, "upper").mask)
    labels_only = BodyParse(parse.size, parse.silhouette, parse.labels, None, "segformer")
    assert tryon.sum() != _on(tryon_mask(labels_only, "upper")).sum()  # the pose's parts changed the mask


def test_tryoff_label_rules():
    labels = np.zeros((200, 120), np.uint8)
    labels[45:110, 30:90] = 4  # upper clothes
    labels[110:190, 35:85] = 6  # pants
    assert np.array_equal(_on(tryoff_mask(labels, "upper")), labels == 4)
    labels[100:140, 40:80] = 7
    assert _on(tryoff_mask(labels, "upper"))[120, 60]  # tops = {4, 7}, as TryOffAnyone
    with pytest.raises(ValueError, match="category must be one of"):
        tryon_mask(labels, "hat")
    with pytest.raises(ValueError, match="category must be one of"):
        tryoff_mask(labels, "inner")


# ---------------------------------------------------------------------------------- combine, overlay
def test_painted_mask_overrides_and_strokes():
    auto = np.zeros((40, 40), bool)
    auto[10:30, 10:30] = True
    painted = np.zeros((40, 40), bool)
    painted[0:5, 0:5] = True
    assert np.array_equal(_on(combine(auto, painted)), painted)
    assert np.array_equal(_on(combine(auto, np.zeros((40, 40), bool))), auto)
    assert np.array_equal(_on(combine(auto, painted, "add")), auto | painted)
    cut = np.zeros((40, 40), bool)
    cut[10:20, 10:30] = True
    assert np.array_equal(_on(combine(auto, cut, "subtract")), auto & ~cut)
    assert np.array_equal(_on(combine(None, Image.fromarray(painted.astype(np.uint8) * 255))), painted)
    with pytest.raises(ValueError, match="painted_mask is 20x20 px but auto_mask is 40x40 px"):
        combine(auto, np.ones((20, 20), bool))
    with pytest.raises(ValueError, match="no mask"):
        combine(None, None)
    with pytest.raises(ValueError, match="mode must be one of"):
        combine(auto, painted, "xor")


def test_mask_overlay():
    image = Image.new("RGB", (40, 40), (0, 0, 0))
    mask = np.zeros((40, 40), bool)
    mask[:, :20] = True
    shown = mask_overlay(image, mask, color=(255, 0, 0), alpha=0.5)
    assert shown.getpixel((5, 5)) == (128, 0, 0) and shown.getpixel((30, 5)) == (0, 0, 0)
    with pytest.raises(ValueError, match="mask is 10x10 px but the image is 40x40 px"):
        mask_overlay(image, np.zeros((10, 10), bool))


# -------------------------------------------------------------------------------------------- SAM
def test_tiny_sam_refine_and_embedding_cache(tmp_path):
    """Values, not shapes: the mask is binary and follows the clicks, the box and the image; the embedding cache
    gives exactly the masks a fresh encoding gives (and is keyed by the pixels)."""
    path = write_tiny_sam(tmp_path)
    refiner = SamRefiner(path, model_type="tiny", cache_size=2)
    with pytest.raises(ValueError, match="set_image"):
        refiner.refine([(10, 10)])
    rng = np.random.default_rng(0)
    first = Image.fromarray(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8))
    other = Image.fromarray(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8))  # same size, other pixels
    second = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    third = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    assert refiner.set_image(first) is True
    mask = np.asarray(refiner.refine([(40, 60)], [(5, 5)]))
    assert mask.shape == (120, 90) and set(np.unique(mask)) <= {0, 255} and 0 < (mask > 0).mean() < 1
    assert refiner.set_image(first.copy()) is False and refiner.encoder_runs == 1  # same pixels: cached
    assert np.array_equal(np.asarray(refiner.refine([(40, 60)], [(5, 5)])), mask)  # deterministic
    moved = np.asarray(refiner.refine([(10, 10)], [(5, 5)]))
    boxed = np.asarray(refiner.refine(box=(10, 10, 60, 80)))
    assert (moved != mask).any() and (boxed != mask).any()  # the prompt steers the mask (random weights: a little)
    base = np.zeros((120, 90), bool)
    base[30:90, 20:70] = True
    from_base = np.asarray(refiner.refine(base_mask=base))
    assert (from_base != mask).any()
    with pytest.raises(ValueError, match="base_mask is 10x10 px but the image is 90x120 px"):
        refiner.refine([(1, 1)], base_mask=np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="at least one click"):
        refiner.refine()
    # other pixels of the same size: encoded anew, another mask for the same click
    assert refiner.set_image(other) is True and refiner.encoder_runs == 2
    assert (np.asarray(refiner.refine([(40, 60)], [(5, 5)])) != mask).any()
    refiner.set_image(second)
    refiner.set_image(third)  # evicts `first` and `other` (cache of 2)
    assert refiner.encoder_runs == 4
    assert refiner.set_image(first) is True and refiner.encoder_runs == 5
    assert np.array_equal(np.asarray(refiner.refine([(40, 60)], [(5, 5)])), mask)  # re-encoded: the same mask
    # The one-call form used by the UI selects the image (from the cache) and refines atomically.
    one_call = np.asarray(refiner.refine([(30, 30)], image=third))
    assert one_call.shape == (50, 70) and refiner.encoder_runs == 5
    fresh = SamRefiner(path, model_type="tiny", cache_size=2)
    assert np.array_equal(np.asarray(fresh.refine([(30, 30)], image=third)), one_call)


def test_sam_loads_official_pth_layout_with_weights_only(tmp_path):
    path = tmp_path / "sam_tiny.pth"
    model = tiny_sam()
    torch.save(model.state_dict(), path)  # the official files are plain pickled state dicts
    refiner = SamRefiner(path, model_type="tiny")
    refiner.set_image(Image.new("RGB", (64, 48), (120, 30, 30)))
    assert refiner.refine([(32, 24)]).size == (64, 48)
    loaded = refiner._predictor.model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in model.state_dict().items())


def test_sam_wrong_type_and_missing_file(tmp_path):
    from pipelines.types import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match="sam_vit_b_01ec64.pth"):
        SamRefiner(tmp_path / "missing.pth").set_image(Image.new("RGB", (40, 40)))
    with pytest.raises(ValueError, match="model_type must be one of"):
        SamRefiner(tmp_path / "x.pth", model_type="vit_z")
    bad = tmp_path / "bad.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, bad)
    from pipelines.preprocess.masks import load_sam

    with pytest.raises(CheckpointError, match="bad.pth is a vit_b checkpoint, not tiny"):
        load_sam(bad, model_type="tiny")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(b"\x80\x02not really a pickle")
    with pytest.raises(CheckpointError, match="truncated.pth"):
        load_sam(truncated, model_type="tiny")
