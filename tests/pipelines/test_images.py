"""Input hygiene: every odd file a designer might upload becomes 8-bit RGB or a clear error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipelines.preprocess.images import check_image, load_image, load_mask, read_png_params, save_png_with_params


def test_rgba_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 20, 40))
    path = tmp_path / "cutout.png"
    rgba.save(path)
    image = load_image(path, name="garment")
    assert image.mode == "RGB"
    assert image.getpixel((30, 5)) == (255, 255, 255)  # transparent -> white, not red or black
    assert image.getpixel((5, 5)) == (0, 0, 255)


def test_la_and_palette_with_transparency():
    la = Image.new("LA", (40, 40), (0, 0))
    assert load_image(la).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert load_image(palette).getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg_converts(tmp_path):
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (48, 48), (0, 255, 255, 0)).save(path)  # red in CMYK
    image = load_image(path)
    red, green, blue = image.getpixel((10, 10))
    assert image.mode == "RGB" and red > 200 and green < 60 and blue < 60


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "scan16.png"
    values = np.full((40, 40), 32768, dtype=np.uint16)
    values[:, :20] = 65535
    Image.fromarray(values).save(path)
    image = load_image(path)
    assert image.getpixel((5, 5)) == (255, 255, 255)
    assert image.getpixel((30, 5)) == (128, 128, 128)  # mid-grey, not saturated white


def test_float_and_uint16_arrays():
    assert load_image(np.full((32, 32, 3), 0.5, np.float32)).getpixel((0, 0)) == (128, 128, 128)
    assert load_image(np.full((32, 32), 65535, np.uint16)).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_image(np.full((32, 32, 3), 200.0, np.float32))
    with pytest.raises(ValueError, match="shape"):
        load_image(np.zeros((32, 32, 5), np.uint8))


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (60, 40), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, quality=100)
    loaded = load_image(path)
    assert loaded.size == (40, 60)
    assert loaded.getpixel((35, 4))[0] > 200  # the red corner moved to the top right


def test_tiny_image_error_names_argument():
    with pytest.raises(ValueError, match=r"person image is 10x10 px; the smallest accepted side is 32 px"):
        load_image(Image.new("RGB", (10, 10)), name="person")
    with pytest.raises(ValueError, match="garment image is 12x12"):
        check_image(Image.new("RGB", (12, 12)), "garment")


def test_huge_image_rejected_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("L", (9000, 5000)).save(path)  # 45 MP, tiny file
    with pytest.raises(ValueError, match=r"person image is 9000x5000 px .*largest accepted image is 40 MP"):
        load_image(path)


def test_non_image_file_and_missing_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a picture")
    with pytest.raises(ValueError, match="garment image: notes.png is not an image file"):
        load_image(path, name="garment")
    with pytest.raises(ValueError, match="file not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(TypeError, match="person image"):
        load_image(12345)


def test_truncated_file(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[:300])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_image(path)


def test_mask_from_rgba_alpha_rgb_and_l():
    layer = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    layer.paste((255, 0, 0, 255), (0, 0, 10, 30))  # a red editor stroke
    mask = load_mask(layer)
    assert mask.mode == "L" and set(np.unique(np.asarray(mask))) == {0, 255}
    assert np.asarray(mask)[:, :10].all() and not np.asarray(mask)[:, 10:].any()
    opaque = Image.new("RGB", (40, 30), (0, 0, 0))
    opaque.paste((0, 200, 0), (30, 0, 40, 30))  # coloured strokes on black still count
    assert np.asarray(load_mask(opaque))[:, 30:].all()
    grey = Image.new("L", (40, 30), 100)
    assert not np.asarray(load_mask(grey)).any()
    assert np.asarray(load_mask(np.ones((30, 40), bool))).all()


def test_mask_size_mismatch_names_both_sizes():
    with pytest.raises(ValueError, match=r"mask is 40x30 px but the person image is 80x60 px"):
        load_mask(Image.new("L", (40, 30), 255), size=(80, 60))
    with pytest.raises(TypeError, match="size must be"):
        load_mask(Image.new("L", (40, 30)), size="mask")
    resized = load_mask(Image.new("L", (40, 30), 255), size=(80, 60), resize=True)
    assert resized.size == (80, 60) and np.asarray(resized).all()


def test_png_params_round_trip_and_never_overwrite(tmp_path):
    params = {"prompt": "a linen shirt, studio light", "negative_prompt": "blurry", "num_inference_steps": 30,
              "guidance_scale": 2.5, "seed": np.int64(42), "width": 384, "height": 512, "mode": "try-on"}
    image = Image.new("RGB", (32, 32), (10, 20, 30))
    first = save_png_with_params(image, tmp_path / "out.png", params)
    second = save_png_with_params(image, tmp_path / "out.png", params)
    assert first.name == "out.png" and second.name == "out-1.png"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    stored = read_png_params(second)
    assert stored["seed"] == 42 and stored["prompt"] == params["prompt"] and stored["mode"] == "try-on"
    text = Image.open(first).text["parameters"]
    assert text.startswith("a linen shirt, studio light\nNegative prompt: blurry\n")
    assert "Steps: 30" in text and "CFG scale: 2.5" in text and "Seed: 42" in text and "Size: 384x512" in text
    assert np.array_equal(np.asarray(load_image(first)), np.asarray(image))


def test_read_params_errors_and_a1111(tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (32, 32)).save(plain)
    with pytest.raises(ValueError, match="plain.png carries no generation parameters"):
        read_png_params(plain)
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", 'red dress\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x768, Lora: "a, b"')
    other = tmp_path / "a1111.png"
    Image.new("RGB", (32, 32)).save(other, pnginfo=info)
    parsed = read_png_params(other)
    assert parsed["prompt"] == "red dress" and parsed["negative_prompt"] == "ugly"
    assert parsed["num_inference_steps"] == 20 and parsed["seed"] == 5 and parsed["width"] == 512
    assert parsed["scheduler"] == "Euler a" and parsed["lora"] == "a, b"


def test_save_rejects_bad_params(tmp_path):
    with pytest.raises(TypeError, match=r"params\['generator'\]"):
        save_png_with_params(Image.new("RGB", (32, 32)), tmp_path / "x.png", {"generator": object()})
    with pytest.raises(ValueError, match=r"\.png"):
        save_png_with_params(Image.new("RGB", (32, 32)), tmp_path / "x.jpg", {})
