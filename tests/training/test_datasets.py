"""Dataset input: captions, masks, conversions and clear errors naming the bad file; safe zips."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from training.datasets import (
    DatasetError, caption_from_filename, load_dataset, load_rgb, safe_extract_zip, write_caption,
)


def make_garment_dataset(folder: Path, count: int = 3, size: tuple[int, int] = (40, 48), masks: str = "next",
                         name: str = "red sweater") -> Path:
    """``count`` random photos ``"<name> (i).png"``; masks next to them ("next"), in masks/ ("dir") or none."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(1, count + 1):
        image_path = folder / f"{name} ({index}).png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(image_path)
        mask = Image.new("L", size, 0)
        ImageDraw.Draw(mask).rectangle((size[0] // 5, size[1] // 5, size[0] * 4 // 5, size[1] * 4 // 5), fill=255)
        if masks == "next":
            mask.save(folder / f"{name} ({index})_mask.png")
        elif masks == "dir":
            (folder / "masks").mkdir(exist_ok=True)
            mask.save(folder / "masks" / f"{name} ({index}).png")
    return folder


def zip_folder(folder: Path, zip_path: Path, wrapper: str = "") -> Path:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{wrapper}{path.relative_to(folder)}")
    return zip_path


def test_captions_from_file_names():
    assert caption_from_filename("t-shirt (1).jpg") == "t-shirt"
    assert caption_from_filename("gray_zip-neck sweater (12).png") == "gray zip-neck sweater"
    assert caption_from_filename("dress.webp") == "dress"


@pytest.mark.parametrize("masks", ["next", "dir"])
def test_folder_with_masks_and_caption_override(tmp_path, masks):
    folder = make_garment_dataset(tmp_path / "data", masks=masks)
    write_caption(folder / "red sweater (2).png", "a red wool sweater, cable knit")
    items = load_dataset(folder, require_masks=True, min_size=16)
    assert [item.caption for item in items] == ["red sweater", "a red wool sweater, cable knit", "red sweater"]
    assert all(item.mask_path is not None for item in items)
    assert (items[0].width, items[0].height) == (40, 48)


def test_zip_with_wrapper_folder(tmp_path):
    folder = make_garment_dataset(tmp_path / "data", masks="none")
    archive = zip_folder(folder, tmp_path / "garment.zip", wrapper="my_garment/")
    items = load_dataset(archive, min_size=16, extract_to=tmp_path / "extracted")
    assert len(items) == 3 and all(item.mask_path is None for item in items)


def test_empty_zip(tmp_path):
    archive = tmp_path / "empty.zip"
    zipfile.ZipFile(archive, "w").close()
    with pytest.raises(DatasetError, match="empty.zip: no images"):
        load_dataset(archive, extract_to=tmp_path / "x")


def test_non_image_file_is_named(tmp_path):
    folder = make_garment_dataset(tmp_path / "data")
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4")
    with pytest.raises(DatasetError, match=r"notes\.pdf: not an image"):
        load_dataset(folder, min_size=16)


def test_corrupt_image_is_named(tmp_path):
    folder = make_garment_dataset(tmp_path / "data")
    (folder / "broken (1).jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DatasetError, match=r"broken \(1\)\.jpg: not a readable image"):
        load_dataset(folder, min_size=16)


def test_missing_mask_when_required(tmp_path):
    folder = make_garment_dataset(tmp_path / "data")
    (folder / "red sweater (3)_mask.png").unlink()
    assert load_dataset(folder, min_size=16)[2].mask_path is None  # fine unless masks are required
    with pytest.raises(DatasetError, match=r"red sweater \(3\)\.png: no mask found"):
        load_dataset(folder, require_masks=True, min_size=16)


def test_mask_size_mismatch(tmp_path):
    folder = make_garment_dataset(tmp_path / "data")
    Image.new("L", (20, 20), 255).save(folder / "red sweater (2)_mask.png")
    with pytest.raises(DatasetError, match=r"red sweater \(2\)_mask\.png: mask is 20x20 but its image"):
        load_dataset(folder, min_size=16)


def test_too_small_image(tmp_path):
    folder = make_garment_dataset(tmp_path / "data", size=(40, 48))
    with pytest.raises(DatasetError, match=r"red sweater \(1\)\.png: 40x48 px is too small"):
        load_dataset(folder, min_size=64)


def test_mode_conversions(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.save(tmp_path / "a.png")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "b.jpg")
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(tmp_path / "c.png")
    assert load_rgb(tmp_path / "a.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert load_rgb(tmp_path / "b.jpg").mode == "RGB"
    assert load_rgb(tmp_path / "c.png").getpixel((0, 0)) == (255, 255, 255)  # 16-bit scaled, not clipped


@pytest.mark.parametrize("entry", ["../evil.png", "/etc/evil.png", "ok/../../evil.png"])
def test_zip_traversal_is_rejected(tmp_path, entry):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("fine.png", b"x")
        handle.writestr(entry, b"x")
    with pytest.raises(DatasetError, match="evil.png"):
        load_dataset(archive, extract_to=tmp_path / "out" / "x")
    assert not (tmp_path / "out" / "evil.png").exists() and not (tmp_path / "evil.png").exists()


def test_zip_symlink_and_bomb_are_rejected(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        info = zipfile.ZipInfo("link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        handle.writestr(info, "/etc/passwd")
    with pytest.raises(DatasetError, match="link.png.*symbolic link"):
        safe_extract_zip(archive, tmp_path / "a")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("zeros.png", b"\0" * (2 * 1024 * 1024))
    with pytest.raises(DatasetError, match="zip bomb"):
        safe_extract_zip(bomb, tmp_path / "b", max_total_bytes=1024 * 1024)
