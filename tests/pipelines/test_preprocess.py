"""Canvas fitting and paste-back: unmasked pixels of the original come back bit-identical."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines.preprocess.framing import compute_fit, fit_mask, fit_to_canvas, mask_to_original, pad_garment, paste_back


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(300, 400), (640, 360), (360, 640), (501, 333), (96, 97)])
@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
@pytest.mark.parametrize("feather", [0, 4])
def test_paste_back_keeps_unmasked_pixels(size, mode, feather):
    original = _photo(*size)
    canvas, info = fit_to_canvas(original, 96, 128, mode=mode)
    assert canvas.size == (96, 128)
    mask = Image.new("L", size, 0)  # painted on the original photo
    mask.paste(255, (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    generated = Image.new("RGB", (96, 128), (0, 255, 0))
    result = paste_back(original, generated, mask, info, feather=feather)
    assert result.size == original.size
    before, after = np.asarray(original), np.asarray(result)
    keep = np.asarray(mask) == 0
    assert np.array_equal(before[keep], after[keep])
    # Inside the mask the generated green arrives (well inside, away from the resampled edge).
    inner = np.zeros_like(keep)
    inner[size[1] // 4 + 8: size[1] // 2 - 8, size[0] // 4 + 8: size[0] // 2 - 8] = True
    if inner.any():
        assert after[inner][:, 1].mean() > 200 and after[inner][:, 0].mean() < 60


@pytest.mark.parametrize("size", [(640, 360), (360, 640), (501, 333)])
@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_paste_back_with_a_canvas_mask(size, mode):
    original = _photo(*size, seed=1)
    _, info = fit_to_canvas(original, 96, 128, mode=mode)
    canvas_mask = Image.new("L", (96, 128), 0)
    canvas_mask.paste(255, (30, 40, 70, 90))  # an automatic mask made on the canvas
    result = paste_back(original, Image.new("RGB", (96, 128), (0, 255, 0)), canvas_mask, info, feather=3)
    applied = np.asarray(mask_to_original(canvas_mask, info))
    assert applied.shape == (size[1], size[0]) and applied.any()
    keep = applied == 0
    assert np.array_equal(np.asarray(original)[keep], np.asarray(result)[keep])
    assert not np.array_equal(np.asarray(original), np.asarray(result))


def test_original_size_mask_gives_the_same_result():
    original = _photo(400, 300)
    canvas, info = fit_to_canvas(original, 96, 128, mode="crop")
    mask = Image.new("L", (400, 300), 0)
    mask.paste(255, (150, 100, 250, 200))
    result = paste_back(original, Image.new("RGB", (96, 128), (0, 0, 255)), mask, info)
    assert np.array_equal(np.asarray(result)[np.asarray(mask) == 0], np.asarray(original)[np.asarray(mask) == 0])


def test_fit_mask_follows_the_photo():
    original = _photo(400, 300)
    mask = Image.new("L", (400, 300), 0)
    mask.paste(255, (0, 0, 200, 300))  # left half
    canvas_mask, info = fit_mask(mask, 96, 128, mode="pad")
    assert set(np.unique(np.asarray(canvas_mask))) <= {0, 255}
    left, top, right, bottom = info.canvas_box
    assert np.asarray(canvas_mask)[top + 2, left + 2] == 255 and np.asarray(canvas_mask)[0, 0] == 0
    with pytest.raises(ValueError, match="mask is 10x10 px but the image it belongs to is 400x300"):
        fit_mask(Image.new("L", (10, 10)), 96, 128, info=fit_to_canvas(original, 96, 128)[1])


def test_fit_geometry_crop_and_pad():
    crop = compute_fit((400, 300), 96, 128, "crop")
    assert crop.resized_size[1] == 128 and crop.offset[0] < 0
    assert crop.source_box[1] == 0 and crop.source_box[3] == 300  # full height, centre columns
    pad = compute_fit((400, 300), 96, 128, "pad")
    assert pad.resized_size[0] == 96 and pad.offset[1] > 0 and pad.source_box == (0, 0, 400, 300)
    stretch = compute_fit((400, 300), 96, 128, "stretch")  # the TryOffAnyone script's resize: all of it, squashed
    assert stretch.resized_size == (96, 128) and stretch.offset == (0, 0) and stretch.source_box == (0, 0, 400, 300)
    canvas, _ = fit_to_canvas(Image.new("RGB", (400, 300), (10, 20, 30)), 96, 128, "stretch")
    assert canvas.size == (96, 128) and canvas.getpixel((0, 0)) == (10, 20, 30) == canvas.getpixel((95, 127))


def test_pad_garment_is_white_and_complete():
    garment = Image.new("RGBA", (200, 100), (255, 0, 0, 255))
    padded = pad_garment(garment, 96, 128)
    assert padded.size == (96, 128) and padded.mode == "RGB"
    assert padded.getpixel((48, 2)) == (255, 255, 255)
    assert padded.getpixel((48, 64))[0] > 240 and padded.getpixel((48, 64))[1] < 20


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode must be one of"):
        fit_to_canvas(_photo(64, 64), 96, 128, mode="squash")
    with pytest.raises(ValueError, match="width must be at least 8"):
        fit_to_canvas(_photo(64, 64), 4, 128)
    _, info = fit_to_canvas(_photo(64, 64), 96, 128)
    with pytest.raises(ValueError, match="generated image is 64x64 px but the canvas was 96x128"):
        paste_back(_photo(64, 64), _photo(64, 64), Image.new("L", (96, 128)), info)
    with pytest.raises(ValueError, match="mask is 10x10 px"):
        paste_back(_photo(64, 64), _photo(96, 128), Image.new("L", (10, 10)), info)


def test_paste_modes_keep_what_they_promise():
    """hard: outside the mask = the photo, inside = the model; feathered: outside = the photo, a ramp inside the
    edge; none: the raw canvases."""
    from pipelines.preprocess.framing import paste_results

    original = _photo(96, 128, seed=2)
    _, info = fit_to_canvas(original, 96, 128, mode="crop")
    mask = Image.new("L", (96, 128), 0)
    mask.paste(255, (20, 30, 76, 100))
    green = Image.new("RGB", (96, 128), (0, 255, 0))
    inside, outside = np.asarray(mask) > 0, np.asarray(mask) == 0
    photo = np.asarray(original)
    hard = np.asarray(paste_results(original, [green], mask, info, "hard", 21)[0])
    assert np.array_equal(hard[outside], photo[outside]) and (hard[inside] == (0, 255, 0)).all()
    soft = np.asarray(paste_results(original, [green], mask, info, "feathered", 6)[0])
    assert np.array_equal(soft[outside], photo[outside])
    # entering the mask from its left edge: the share of the model's green grows from ~0 to 1 over the feather
    row = soft[60, 20:40].astype(float)
    photo_row, green_px = photo[60, 20:40].astype(float), np.array([0.0, 255.0, 0.0])
    share = 1 - np.abs(row - green_px).sum(axis=1) / np.maximum(np.abs(photo_row - green_px).sum(axis=1), 1)
    assert share[0] < 0.1 and share[-1] == 1.0 and np.all(np.diff(share) > -0.05), share.round(2)
    assert (soft[55:75, 40:56] == (0, 255, 0)).all()  # deep inside: the model's pixels
    assert paste_results(original, [green], mask, info, "none", 21)[0] is green
    with pytest.raises(ValueError, match="paste_mode='blend' must be feathered, hard or none"):
        paste_results(original, [green], mask, info, "blend", 21)


def test_blur_threshold_is_the_official_mask_processing():
    """Gaussian blur radius 9, then >= 128: a 1-px speck goes, a 1-px notch closes, corners round off, the
    straight edges stay where they were; radius 0 changes nothing."""
    from pipelines.preprocess.masks import blur_threshold

    array = np.zeros((128, 96), np.uint8)
    array[30:100, 20:76] = 255
    array[10, 10] = 255  # a speck
    array[60, 20:76] = 0  # a one-pixel notch across the mask
    mask = Image.fromarray(array)
    out = np.asarray(blur_threshold(mask, 9))
    assert set(np.unique(out)) <= {0, 255}
    assert out[10, 10] == 0 and (out[60, 30:66] == 255).all()
    assert out[30, 20] == 0 and out[65, 20] == 255 and out[65, 19] == 0  # corner rounded, edge kept
    assert np.array_equal(np.asarray(blur_threshold(mask, 0)), array)
    with pytest.raises(ValueError, match="mask_blur=-1 must be >= 0"):
        blur_threshold(mask, -1)
