"""Training datasets: a folder or a .zip of images, optional masks, captions from file names.

Layout convention (documented for users in the training tab):

    my_garment/                       (or my_garment.zip; one top-level folder inside the zip is fine)
        sweater (1).jpg               image; caption from the file name -> "sweater"
        sweater (1).txt               optional caption sidecar; overrides the file-name caption
        sweater (1)_mask.png          optional mask next to the image: <stem>_mask.<png|jpg|jpeg|webp>
        masks/sweater (2).png         ... or in a masks/ sub-folder: masks/<stem>.<png|jpg|jpeg|webp>
        images/...                    images may also live in an images/ sub-folder

Masks: white (> 127) = the region to inpaint (the garment), black = keep. A mask must have its image's size.
Captions from file names follow the seed: "t-shirt (1).jpg" -> "t-shirt" (a trailing " (N)" is dropped,
underscores become spaces). Hidden files and __MACOSX are ignored; any other file is an error naming it.
"""

from __future__ import annotations

import logging
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CAPTION_SUFFIX = ".txt"
MASK_SUFFIX = "_mask"
MASK_DIR = "masks"
IMAGE_DIR = "images"
MAX_ZIP_BYTES = 4 * 1024**3  # uncompressed total
MAX_ZIP_FILES = 20_000
EXTRACTED_MARKER = ".atelier_extracted"


class DatasetError(ValueError):
    """The dataset is unusable; the message names the offending file."""


@dataclass(frozen=True)
class DatasetItem:
    """One training example: an image, its optional mask, and its caption."""

    image_path: Path
    mask_path: Path | None
    caption: str
    width: int
    height: int
    caption_from_file: bool = False  # True when a .txt sidecar supplied the caption


def caption_from_filename(filename: str) -> str:
    """The seed's convention: ``"t-shirt (1).jpg" -> "t-shirt"``; underscores become spaces."""
    stem = Path(filename).stem
    stem = re.sub(r"\s*\(\d+\)\s*$", "", stem)
    stem = stem.replace("_", " ")
    return re.sub(r"\s+", " ", stem).strip()


def caption_path(image_path: str | Path) -> Path:
    return Path(image_path).with_suffix(CAPTION_SUFFIX)


def write_caption(image_path: str | Path, caption: str) -> Path:
    """Per-image caption editing: write the ``<stem>.txt`` sidecar that overrides the file-name caption."""
    caption = caption.strip()
    if not caption:
        raise DatasetError(f"{Path(image_path).name}: caption must not be empty")
    path = caption_path(image_path)
    path.write_text(caption + "\n", encoding="utf-8")
    return path


# -- zip input ------------------------------------------------------------------------------------------
def _check_zip_entry(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename
    if "\\" in name:
        name = name.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise DatasetError(f"zip entry {info.filename!r}: absolute paths are not allowed")
    if any(part == ".." for part in path.parts):
        raise DatasetError(f"zip entry {info.filename!r}: points outside the dataset folder ('..')")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DatasetError(f"zip entry {info.filename!r}: symbolic links are not allowed")
    return path


def safe_extract_zip(
    zip_path: str | Path, destination: str | Path, max_total_bytes: int = MAX_ZIP_BYTES,
    max_files: int = MAX_ZIP_FILES,
) -> Path:
    """Extract ``zip_path`` into ``destination`` refusing path traversal, links and zip bombs.

    Every entry is checked before anything is written; sizes are enforced both from the directory and
    while streaming (a lying header cannot exceed ``max_total_bytes``).
    """
    zip_path, destination = Path(zip_path), Path(destination)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DatasetError(f"{zip_path.name}: not a readable zip file ({error})") from error
    with archive:
        infos = archive.infolist()
        if len(infos) > max_files:
            raise DatasetError(f"{zip_path.name}: {len(infos)} entries (more than {max_files})")
        checked = [(info, _check_zip_entry(info)) for info in infos]
        declared = sum(info.file_size for info in infos)
        if declared > max_total_bytes:
            raise DatasetError(
                f"{zip_path.name}: uncompressed size {declared / 2**20:.0f} MiB exceeds the "
                f"{max_total_bytes / 2**20:.0f} MiB limit (zip bomb?)"
            )
        destination.mkdir(parents=True, exist_ok=True)
        root = destination.resolve()
        written = 0
        for info, relative in checked:
            target = (root / Path(*relative.parts)).resolve() if relative.parts else root
            if root != target and root not in target.parents:
                raise DatasetError(f"zip entry {info.filename!r}: points outside the dataset folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "wb") as sink:
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    if written > max_total_bytes:
                        raise DatasetError(
                            f"zip entry {info.filename!r}: archive expands beyond "
                            f"{max_total_bytes / 2**20:.0f} MiB (zip bomb?)"
                        )
                    sink.write(chunk)
    (destination / EXTRACTED_MARKER).write_text(str(zip_path))
    return destination


def prepare_dataset_dir(source: str | Path, extract_to: str | Path | None = None) -> Path:
    """A folder holding the dataset: ``source`` itself, or ``source`` (.zip) safely extracted to ``extract_to``."""
    source = Path(source).expanduser()
    if not source.exists():
        raise DatasetError(f"dataset {source} does not exist")
    if source.is_dir():
        return source
    if source.suffix.lower() != ".zip":
        raise DatasetError(f"dataset {source.name}: expected a folder or a .zip file")
    if extract_to is None:
        raise DatasetError(f"dataset {source.name}: a zip needs a folder to extract into")
    extract_to = Path(extract_to)
    if (extract_to / EXTRACTED_MARKER).exists():
        return extract_to
    if extract_to.exists():
        shutil.rmtree(extract_to)
    return safe_extract_zip(source, extract_to)


# -- images ---------------------------------------------------------------------------------------------
def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as 8-bit RGB: CMYK, 16-bit, palette, greyscale and RGBA (on white) are converted."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"{path.name}: not a readable image ({error})") from error
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping at 255
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray((array / peak * 255).round().clip(0, 255).astype("uint8"), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_mask(path: str | Path) -> Image.Image:
    """Open a mask as binary ``L`` (0 / 255); alpha-only masks use their alpha channel."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"{path.name}: not a readable mask image ({error})") from error
    if image.mode in ("RGBA", "LA"):
        alpha = image.getchannel("A")
        # A painted layer (transparent background) carries the mask in alpha; an opaque image in its colour.
        if alpha.getextrema()[0] < 255:
            image = alpha
    grey = image.convert("L")
    return grey.point(lambda value: 255 if value > 127 else 0)


def _is_ignored(path: Path, root: Path) -> bool:
    relative = path.relative_to(root)
    return any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)


def _find_mask(image_path: Path, root: Path) -> Path | None:
    stem = image_path.stem
    for suffix in IMAGE_SUFFIXES:
        for candidate in (
            image_path.with_name(f"{stem}{MASK_SUFFIX}{suffix}"),
            root / MASK_DIR / f"{stem}{suffix}",
        ):
            if candidate.is_file():
                return candidate
    return None


def _dataset_root(folder: Path) -> Path:
    """Descend into a single wrapper folder (zips often hold ``my_garment/...``)."""
    entries = [path for path in folder.iterdir() if not path.name.startswith(".") and path.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in (MASK_DIR, IMAGE_DIR):
        return _dataset_root(entries[0])
    return folder


def load_dataset(
    source: str | Path,
    require_masks: bool = False,
    min_size: int = 64,
    extract_to: str | Path | None = None,
) -> list[DatasetItem]:
    """Validate and list a dataset folder or zip; raise :class:`DatasetError` naming the first bad file."""
    folder = _dataset_root(prepare_dataset_dir(source, extract_to))
    images: list[Path] = []
    masks: set[Path] = set()
    for path in sorted(folder.rglob("*")):
        if path.is_dir() or _is_ignored(path, folder) or path.name == EXTRACTED_MARKER:
            continue
        suffix = path.suffix.lower()
        relative = path.relative_to(folder)
        if suffix == CAPTION_SUFFIX:
            continue
        if suffix not in IMAGE_SUFFIXES:
            raise DatasetError(
                f"{relative}: not an image (allowed: {', '.join(IMAGE_SUFFIXES)}; captions as .txt)"
            )
        if relative.parts[0] == MASK_DIR or path.stem.endswith(MASK_SUFFIX):
            masks.add(path)
        else:
            images.append(path)
    if not images:
        raise DatasetError(f"dataset {Path(source).name}: no images found ({', '.join(IMAGE_SUFFIXES)})")

    items: list[DatasetItem] = []
    used_masks: set[Path] = set()
    for image_path in images:
        relative = image_path.relative_to(folder)
        image = load_rgb(image_path)
        width, height = image.size
        if min(width, height) < min_size:
            raise DatasetError(f"{relative}: {width}x{height} px is too small (shorter side must be >= {min_size})")
        mask_path = _find_mask(image_path, folder)
        if mask_path is None and require_masks:
            raise DatasetError(
                f"{relative}: no mask found (expected {image_path.stem}{MASK_SUFFIX}.png next to it "
                f"or {MASK_DIR}/{image_path.stem}.png)"
            )
        if mask_path is not None:
            used_masks.add(mask_path)
            mask = load_mask(mask_path)
            if mask.size != image.size:
                raise DatasetError(
                    f"{mask_path.relative_to(folder)}: mask is {mask.size[0]}x{mask.size[1]} but its image "
                    f"{relative} is {width}x{height}"
                )
            if mask.getextrema()[1] == 0:
                raise DatasetError(f"{mask_path.relative_to(folder)}: mask is empty (all black)")
        sidecar = caption_path(image_path)
        caption_text = sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else ""
        caption = caption_text or caption_from_filename(image_path.name)
        if not caption:
            raise DatasetError(f"{relative}: empty caption (rename the file or add {sidecar.name})")
        items.append(DatasetItem(image_path, mask_path, caption, width, height, bool(caption_text)))
    for orphan in sorted(masks - used_masks):
        logger.warning("mask %s has no matching image; ignored", orphan.relative_to(folder))
    logger.info("dataset %s: %d images, %d with masks", folder, len(items), len(used_masks))
    return items
