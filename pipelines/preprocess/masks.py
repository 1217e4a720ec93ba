"""Automatic garment masks for try-on / try-off, SAM click-to-refine, and mask utilities.

Two parsers produce a :class:`BodyParse` of a person photo:

* :class:`ClothesParser`: a SegFormer clothes model (``mattmdjaga/segformer_b2_clothes``, 18 labels) giving
  a per-pixel label map;
* :class:`MediapipeBodyParser`: the offline fallback from the legacy mediapipe selfie segmentation
  (person silhouette) and pose (33 landmarks), whose category regions are built geometrically.

:func:`tryon_mask` shapes a mask for where the NEW garment may go (dilated, sleeves, body-shaped extension
from the pose, face/hair/hands protected); :func:`tryoff_mask` is the worn garment itself.
:class:`AutoMasker` picks SegFormer when it loads, otherwise mediapipe, and reports which it used.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageFilter

from pipelines.core.checkpoints import load_strict, offline_hint, read_state_dict
from pipelines.preprocess.images import load_mask
from pipelines.preprocess.pose import BodyLandmarks, detect_body_landmarks
from pipelines.types import CheckpointError, ModelUnavailableError

logger = logging.getLogger(__name__)

DEFAULT_SEGFORMER = "mattmdjaga/segformer_b2_clothes"
SEGFORMER_LABELS = {
    0: "background", 1: "hat", 2: "hair", 3: "sunglasses", 4: "upper-clothes", 5: "skirt", 6: "pants",
    7: "dress", 8: "belt", 9: "left-shoe", 10: "right-shoe", 11: "face", 12: "left-leg", 13: "right-leg",
    14: "left-arm", 15: "right-arm", 16: "bag", 17: "scarf",
}
CATEGORIES = ("upper", "lower", "dress", "full")

# Try-off extracts the garment itself; TryOffAnyone treats tops as upper-clothes + dress.
TRYOFF_LABELS = {"upper": {4, 7}, "lower": {5, 6}, "dress": {7}, "full": {4, 5, 6, 7, 8, 17}}
ARMS, LEGS = {14, 15}, {12, 13}
# Try-on may repaint: the old garment(s) the new one replaces + skin it may cover (sleeves, hems).
TRYON_LABELS = {
    "upper": {4} | ARMS,
    "lower": {5, 6} | LEGS,
    "dress": {4, 5, 6, 7, 8} | ARMS | LEGS,
    "full": {4, 5, 6, 7, 8, 17} | ARMS | LEGS,
}
HEAD = {1, 2, 3, 11}
# Never repainted by a try-on of that category.
TRYON_PROTECTED = {
    "upper": HEAD | {9, 10, 16},
    "lower": HEAD | {4, 9, 10, 16},
    "dress": HEAD | {9, 10, 16},
    "full": HEAD | {9, 10, 16},
}

# mediapipe pose landmark indices
NOSE, LEFT_EAR, RIGHT_EAR = 0, 7, 8
LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_ELBOW, RIGHT_ELBOW, LEFT_WRIST, RIGHT_WRIST = 11, 12, 13, 14, 15, 16
LEFT_HIP, RIGHT_HIP, LEFT_KNEE, RIGHT_KNEE, LEFT_ANKLE, RIGHT_ANKLE = 23, 24, 25, 26, 27, 28
HAND_LANDMARKS = {"left": (15, 17, 19, 21), "right": (16, 18, 20, 22)}  # wrist, pinky, index, thumb
FACE_LANDMARKS = tuple(range(11))

MaskLike = Union[Image.Image, np.ndarray]


def _check_category(category: str) -> str:
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")
    return category


def _to_pil(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))


def _as_bool(mask: MaskLike, name: str) -> np.ndarray:
    if isinstance(mask, Image.Image):
        return np.asarray(mask.convert("L")) >= 128
    if isinstance(mask, np.ndarray):
        if mask.ndim != 2:
            raise ValueError(f"{name} must be a 2-D mask, got shape {mask.shape}")
        return mask >= 128 if mask.dtype == np.uint8 else mask.astype(bool)
    raise TypeError(f"{name}: expected a PIL image or numpy array, got {type(mask).__name__}")


def _kernel(radius: int) -> np.ndarray:
    import cv2

    size = 2 * radius + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by ``radius`` px (elliptical structuring element)."""
    import cv2

    if radius <= 0:
        return mask.copy()
    return cv2.dilate(mask.astype(np.uint8), _kernel(radius)) > 0


def default_dilation(size: tuple[int, int]) -> int:
    """2 % of the longer side: enough room for a looser cut, small enough to keep the background."""
    return max(2, int(round(0.02 * max(size))))


# -------------------------------------------------------------------------------------- the parse
@dataclass
class BodyParse:
    """What a parser found in one person photo."""

    size: tuple[int, int]  # (W, H) of the photo
    silhouette: np.ndarray  # (H, W) bool, the person
    labels: Optional[np.ndarray] = None  # (H, W) uint8 SegFormer labels (None for the mediapipe parse)
    pose: Optional[BodyLandmarks] = None  # mediapipe landmarks in pixels when available
    source: str = "segformer"  # "segformer" or "mediapipe"


def _as_parse(parse: Union[BodyParse, np.ndarray], pose: Optional[BodyLandmarks]) -> BodyParse:
    if isinstance(parse, np.ndarray):
        if parse.ndim != 2:
            raise ValueError(f"parse label map must be 2-D (H, W), got shape {parse.shape}")
        labels = parse.astype(np.uint8)
        parse = BodyParse((labels.shape[1], labels.shape[0]), labels != 0, labels, None, "segformer")
    elif not isinstance(parse, BodyParse):
        raise TypeError(f"parse: expected a BodyParse or a label map array, got {type(parse).__name__}")
    if pose is not None:
        if tuple(pose.image_size) != tuple(parse.size):
            raise ValueError(f"pose was found on a {pose.image_size} image but the parse is {parse.size}")
        parse = BodyParse(parse.size, parse.silhouette, parse.labels, pose, parse.source)
    return parse


# ------------------------------------------------------------------------------ geometric body regions
def _fill_polygon(canvas: np.ndarray, points: Sequence) -> None:
    import cv2

    hull = cv2.convexHull(np.round(np.asarray(points, dtype=np.float64)).astype(np.int32))
    cv2.fillConvexPoly(canvas, hull, 1)


def _capsule(canvas: np.ndarray, chain: Sequence, thickness: float) -> None:
    import cv2

    points = [tuple(int(round(v)) for v in point) for point in chain]
    for start, end in zip(points[:-1], points[1:]):
        cv2.line(canvas, start, end, 1, max(1, int(round(thickness))))
    for point in points:
        cv2.circle(canvas, point, max(1, int(round(thickness / 2))), 1, -1)


def _widen(left: np.ndarray, right: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Move two points apart along their joining line by ``factor`` of their distance each."""
    offset = (left - right) * factor
    return left + offset, right - offset


def _shoulder_width(pose: BodyLandmarks) -> float:
    points = pose.points
    width = float(np.linalg.norm(points[LEFT_SHOULDER] - points[RIGHT_SHOULDER]))
    return max(width, 0.08 * max(pose.image_size))


def body_region(pose: BodyLandmarks, category: str, sleeves: bool = True) -> np.ndarray:
    """A body-shaped (H, W) bool region for ``category`` built from the pose landmarks.

    upper = torso between shoulders and hips (+ arms for sleeves), lower = waist to ankles,
    dress = shoulders to knees (A-line), full = shoulders to ankles (+ arms).
    """
    _check_category(category)
    width, height = pose.image_size
    canvas = np.zeros((height, width), np.uint8)
    points = pose.points.astype(np.float64)
    shoulder_width = _shoulder_width(pose)
    left_shoulder, right_shoulder = _widen(points[LEFT_SHOULDER], points[RIGHT_SHOULDER], 0.12)
    up = np.array([0.0, -0.08 * shoulder_width])
    left_hip, right_hip = _widen(points[LEFT_HIP], points[RIGHT_HIP], 0.35)
    hip_mid = (points[LEFT_HIP] + points[RIGHT_HIP]) / 2
    shoulder_mid = (points[LEFT_SHOULDER] + points[RIGHT_SHOULDER]) / 2
    torso_down = hip_mid - shoulder_mid
    below_hips = torso_down * 0.15  # tops end a little below the hip joints
    waist = torso_down * -0.2  # trousers and skirts start a little above them

    def limb_end(index: int, hip: np.ndarray, spread: float) -> np.ndarray:
        return points[index] + (points[index] - hip_mid) * np.array([spread, 0.0])

    if category == "upper":
        _fill_polygon(canvas, [left_shoulder + up, right_shoulder + up, right_hip + below_hips, left_hip + below_hips])
    elif category == "lower":
        _fill_polygon(
            canvas,
            [left_hip + waist, right_hip + waist, limb_end(RIGHT_KNEE, hip_mid, 0.2), limb_end(LEFT_KNEE, hip_mid, 0.2)],
        )
        for hip, knee, ankle in ((LEFT_HIP, LEFT_KNEE, LEFT_ANKLE), (RIGHT_HIP, RIGHT_KNEE, RIGHT_ANKLE)):
            _capsule(canvas, [points[hip] + waist, points[knee], points[ankle]], 0.55 * shoulder_width)
    elif category == "dress":
        _fill_polygon(
            canvas,
            [left_shoulder + up, right_shoulder + up, right_hip, left_hip,
             limb_end(RIGHT_KNEE, hip_mid, 0.5), limb_end(LEFT_KNEE, hip_mid, 0.5)],
        )
    else:  # full outfit
        _fill_polygon(
            canvas,
            [left_shoulder + up, right_shoulder + up, right_hip, left_hip,
             limb_end(RIGHT_KNEE, hip_mid, 0.3), limb_end(LEFT_KNEE, hip_mid, 0.3)],
        )
        for hip, knee, ankle in ((LEFT_HIP, LEFT_KNEE, LEFT_ANKLE), (RIGHT_HIP, RIGHT_KNEE, RIGHT_ANKLE)):
            _capsule(canvas, [points[hip], points[knee], points[ankle]], 0.6 * shoulder_width)
    if sleeves and category in ("upper", "dress", "full"):
        for shoulder, elbow, wrist in ((LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST), (RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST)):
            _capsule(canvas, [points[shoulder], points[elbow], points[wrist]], 0.4 * shoulder_width)
    return canvas > 0


def face_region(pose: BodyLandmarks) -> np.ndarray:
    """An ellipse over the face and hair from the face landmarks (nose, eyes, ears, mouth)."""
    import cv2

    width, height = pose.image_size
    canvas = np.zeros((height, width), np.uint8)
    face = pose.points[list(FACE_LANDMARKS)].astype(np.float64)
    centre = face.mean(axis=0)
    ear_span = float(np.linalg.norm(pose.points[LEFT_EAR] - pose.points[RIGHT_EAR]))
    radius = max(ear_span, 0.35 * _shoulder_width(pose)) * 0.75
    # The ellipse reaches higher than low (hair above the eyes; the chin sits just under the mouth).
    centre = centre + np.array([0.0, -0.15 * radius])
    cv2.ellipse(canvas, (int(round(centre[0])), int(round(centre[1]))),
                (int(round(radius)), int(round(radius * 1.3))), 0, 0, 360, 1, -1)
    return canvas > 0


def hands_region(pose: BodyLandmarks) -> np.ndarray:
    """Discs over both hands (wrist, pinky, index and thumb landmarks)."""
    import cv2

    width, height = pose.image_size
    canvas = np.zeros((height, width), np.uint8)
    for indices in HAND_LANDMARKS.values():
        hand = pose.points[list(indices)].astype(np.float64)
        centre = hand[1:].mean(axis=0) * 0.7 + hand[0] * 0.3
        reach = float(np.max(np.linalg.norm(hand - centre, axis=1)))
        radius = max(reach * 1.4, 0.12 * _shoulder_width(pose))
        cv2.circle(canvas, (int(round(centre[0])), int(round(centre[1]))), int(round(radius)), 1, -1)
    return canvas > 0


# ------------------------------------------------------------------------------------- mask shaping
def tryon_mask(
    parse: Union[BodyParse, np.ndarray],
    category: str,
    pose: Optional[BodyLandmarks] = None,
    dilation: Optional[int] = None,
) -> Image.Image:
    """Where the NEW garment of ``category`` may go, as a binary ``L`` mask (255 = repaint).

    With a SegFormer label map: the old garment(s) + arms (sleeves) / legs (hems), dilated, extended by the
    body-shaped pose region (when a pose is known) inside the dilated silhouette. With the mediapipe parse:
    the pose region clipped to the silhouette, then dilated. Face, hair, hat, shoes, bag and hands (pose)
    are always subtracted.
    """
    _check_category(category)
    parse = _as_parse(parse, pose)
    pose = parse.pose
    radius = default_dilation(parse.size) if dilation is None else int(dilation)
    if radius < 0:
        raise ValueError(f"dilation must be >= 0 px, got {dilation}")
    silhouette = dilate(parse.silhouette, radius)
    if parse.labels is not None:
        region = dilate(np.isin(parse.labels, list(TRYON_LABELS[category])), radius)
        if pose is not None:
            region |= body_region(pose, category) & silhouette
        protected = np.isin(parse.labels, list(TRYON_PROTECTED[category]))
    else:
        if pose is None:
            raise ValueError("a mediapipe parse needs pose landmarks to build garment regions")
        region = dilate(body_region(pose, category) & parse.silhouette, radius)
        protected = face_region(pose)
    if pose is not None:
        # SegFormer has no hand label (hands are "arm"), so hands come from the pose for both parsers.
        protected = protected | hands_region(pose)
    return _to_pil(region & ~protected)


def tryoff_mask(parse: Union[BodyParse, np.ndarray], category: str, pose: Optional[BodyLandmarks] = None) -> Image.Image:
    """The worn garment of ``category`` itself (no dilation) as a binary ``L`` mask.

    SegFormer labels: tops (``upper``) = upper-clothes + dress {4, 7} as TryOffAnyone does. Mediapipe parse:
    the body region (with sleeves) inside the silhouette, undilated, face and hands removed.
    """
    _check_category(category)
    parse = _as_parse(parse, pose)
    if parse.labels is not None:
        return _to_pil(np.isin(parse.labels, list(TRYOFF_LABELS[category])))
    if parse.pose is None:
        raise ValueError("a mediapipe parse needs pose landmarks to build garment regions")
    region = body_region(parse.pose, category) & parse.silhouette
    region &= ~(face_region(parse.pose) | hands_region(parse.pose))
    return _to_pil(region)


def combine(
    auto_mask: Optional[MaskLike], painted_mask: Optional[MaskLike], mode: str = "replace"
) -> Image.Image:
    """Merge the automatic mask with the user's painted strokes.

    ``replace`` (default): a non-empty painted mask wins outright; ``add``: union; ``subtract``: the
    automatic mask minus the strokes. Returns a binary ``L`` mask; raises if neither mask is given.
    """
    modes = ("replace", "add", "subtract")
    if mode not in modes:
        raise ValueError(f"mode must be one of {modes}, got {mode!r}")
    auto = None if auto_mask is None else _as_bool(auto_mask, "auto_mask")
    painted = None if painted_mask is None else _as_bool(painted_mask, "painted_mask")
    if auto is None and painted is None:
        raise ValueError("no mask: paint the area to change or use an automatic mask")
    if auto is not None and painted is not None and auto.shape != painted.shape:
        raise ValueError(
            f"painted_mask is {painted.shape[1]}x{painted.shape[0]} px but auto_mask is "
            f"{auto.shape[1]}x{auto.shape[0]} px"
        )
    if painted is None or not painted.any():
        if auto is None:
            raise ValueError("painted_mask is empty and there is no automatic mask")
        return _to_pil(auto)
    if auto is None or mode == "replace":
        return _to_pil(painted)
    if mode == "add":
        return _to_pil(auto | painted)
    return _to_pil(auto & ~painted)


def mask_overlay(
    image: Image.Image, mask: MaskLike, color: tuple[int, int, int] = (255, 40, 120), alpha: float = 0.5
) -> Image.Image:
    """``image`` with ``mask`` tinted in ``color`` at ``alpha`` opacity (for previews)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    selected = _as_bool(mask, "mask")
    rgb = np.asarray(image.convert("RGB")).astype(np.float32)
    if selected.shape != rgb.shape[:2]:
        raise ValueError(
            f"mask is {selected.shape[1]}x{selected.shape[0]} px but the image is {image.width}x{image.height} px"
        )
    tint = np.asarray(color, np.float32)
    rgb[selected] = rgb[selected] * (1 - alpha) + tint * alpha
    return Image.fromarray(np.round(rgb).astype(np.uint8))


# --------------------------------------------------------------------------------------- SegFormer
class ClothesParser:
    """SegFormer clothes segmentation (18 labels). ``location`` = hub id or local folder; loads lazily."""

    def __init__(self, location: str | Path = DEFAULT_SEGFORMER, device: str = "cpu", max_side: int = 1024) -> None:
        self.location = str(location)
        self.device = device
        self.max_side = max_side  # logits are upsampled to at most this side, then labels resized (memory)
        self._model = None
        self._processor = None

    def load(self) -> "ClothesParser":
        """Load model and processor now; :class:`ModelUnavailableError` when they cannot be found."""
        if self._model is not None:
            return self
        from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor

        location = str(Path(self.location).expanduser()) if Path(self.location).expanduser().exists() else self.location
        try:
            processor = SegformerImageProcessor.from_pretrained(location)
            model = SegformerForSemanticSegmentation.from_pretrained(location)
        except (OSError, ValueError) as error:  # transformers reports missing files/offline as OSError
            if Path(self.location).expanduser().exists():
                raise ModelUnavailableError(f"{self.location}: not a SegFormer model folder ({error})") from error
            raise ModelUnavailableError(offline_hint(self.location) + f" ({type(error).__name__})") from error
        if model.config.num_labels != len(SEGFORMER_LABELS):
            raise CheckpointError(
                f"{self.location}: a clothes parser needs the 18 ATR clothes labels, this model has "
                f"{model.config.num_labels}"
            )
        self._model = model.to(self.device).eval()
        self._processor = processor
        logger.info("loaded SegFormer clothes parser from %s", self.location)
        return self

    def parse(self, image: Image.Image) -> np.ndarray:
        """(H, W) uint8 label map at the image's size (labels in :data:`SEGFORMER_LABELS`)."""
        import torch

        self.load()
        image = image.convert("RGB")
        inputs = self._processor(images=image, return_tensors="pt")
        with torch.no_grad():
            logits = self._model(pixel_values=inputs["pixel_values"].to(self.device)).logits  # (1, 18, h/4, w/4)
        width, height = image.size
        scale = min(1.0, self.max_side / max(width, height))
        work_size = (max(1, round(height * scale)), max(1, round(width * scale)))
        logits = torch.nn.functional.interpolate(logits.float(), size=work_size, mode="bilinear", align_corners=False)
        labels = logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
        if labels.shape != (height, width):
            labels = np.asarray(Image.fromarray(labels).resize((width, height), Image.NEAREST))
        return labels


def write_tiny_segformer(root: str | Path) -> Path:
    """Write a tiny random-weight SegFormer clothes model (+ processor) to ``root/segformer``."""
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    folder = Path(root) / "segformer"
    torch.manual_seed(0)
    config = SegformerConfig(
        num_channels=3,
        num_encoder_blocks=4,
        depths=[1, 1, 1, 1],
        sr_ratios=[8, 4, 2, 1],
        hidden_sizes=[8, 16, 24, 32],
        patch_sizes=[7, 3, 3, 3],
        strides=[4, 2, 2, 2],
        num_attention_heads=[1, 1, 1, 1],
        mlp_ratios=[2, 2, 2, 2],
        decoder_hidden_size=16,
        num_labels=len(SEGFORMER_LABELS),
        id2label={str(k): v for k, v in SEGFORMER_LABELS.items()},
        label2id={v: k for k, v in SEGFORMER_LABELS.items()},
    )
    SegformerForSemanticSegmentation(config).eval().save_pretrained(folder, safe_serialization=True)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------- mediapipe fallback
_SELFIE_LOCK = threading.Lock()
_SELFIE = None


def _selfie_segmenter():
    global _SELFIE
    if _SELFIE is None:
        try:
            import mediapipe as mp

            _SELFIE = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        except (ImportError, AttributeError) as error:
            raise ModelUnavailableError(
                f"the offline mask fallback needs mediapipe 0.10.x legacy solutions ({type(error).__name__}: {error})"
            ) from error
    return _SELFIE


class MediapipeBodyParser:
    """Offline person parse: selfie-segmentation silhouette + pose landmarks (models bundled in the wheel)."""

    source = "mediapipe"

    def parse(self, image: Image.Image) -> BodyParse:
        """Silhouette and landmarks; ``ValueError`` when no person is found."""
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        with _SELFIE_LOCK:
            probability = np.array(_selfie_segmenter().process(rgb).segmentation_mask, dtype=np.float32)
        silhouette = probability > 0.5
        pose = detect_body_landmarks(image)
        if pose is None or not silhouette.any():
            raise ValueError("person image: no person was found; paint the mask by hand or use another photo")
        if pose.segmentation is not None:
            # Selfie segmentation also keeps objects held near the body (helmets, bags); the pose model's
            # own person mask is tighter, so keep what both agree on (with a little slack for edges).
            silhouette &= dilate(pose.segmentation > 0.5, default_dilation(image.size))
        return BodyParse(image.size, silhouette, None, pose, self.source)


# --------------------------------------------------------------------------------------- auto masker
@dataclass
class MaskResult:
    mask: Image.Image  # binary L, 255 = region
    source: str  # "segformer" or "mediapipe"
    note: str = ""  # why the fallback was used, if it was


class AutoMasker:
    """Automatic masks: SegFormer when it loads, otherwise the mediapipe fallback (reported in the result).

    ``segformer_location=None`` skips SegFormer. A failed load is remembered, so the (slow) offline
    attempt happens once per masker.
    """

    def __init__(self, segformer_location: str | Path | None = DEFAULT_SEGFORMER, device: str = "cpu",
                 use_pose: bool = True) -> None:
        self.clothes_parser = None if segformer_location is None else ClothesParser(segformer_location, device)
        self.fallback = MediapipeBodyParser()
        self.use_pose = use_pose
        self.unavailable_reason: Optional[str] = None if segformer_location else "no SegFormer location configured"
        self.last_source: Optional[str] = None

    def parse(self, image: Image.Image) -> BodyParse:
        """Parse ``image`` with the best available parser."""
        if self.clothes_parser is not None and self.unavailable_reason is None:
            try:
                labels = self.clothes_parser.parse(image)
            except ModelUnavailableError as error:
                self.unavailable_reason = str(error)
                logger.warning("SegFormer unavailable, using the mediapipe fallback: %s", error)
            else:
                pose = None
                if self.use_pose:
                    try:
                        pose = detect_body_landmarks(image)
                    except ModelUnavailableError as error:
                        logger.info("no pose for the try-on mask extension: %s", error)
                self.last_source = "segformer"
                return BodyParse(image.size, labels != 0, labels, pose, "segformer")
        parse = self.fallback.parse(image)
        self.last_source = parse.source
        return parse

    def _result(self, mask: Image.Image, parse: BodyParse) -> MaskResult:
        note = "" if parse.source == "segformer" else f"SegFormer not used: {self.unavailable_reason}"
        return MaskResult(mask, parse.source, note)

    def tryon_mask(self, image: Image.Image, category: str) -> MaskResult:
        """Try-on mask for ``image`` (see :func:`tryon_mask`)."""
        _check_category(category)
        parse = self.parse(image)
        return self._result(tryon_mask(parse, category), parse)

    def tryoff_mask(self, image: Image.Image, category: str) -> MaskResult:
        """Try-off mask for ``image`` (see :func:`tryoff_mask`)."""
        _check_category(category)
        parse = self.parse(image)
        return self._result(tryoff_mask(parse, category), parse)


# ---------------------------------------------------------------------------------------------- SAM
SAM_MODEL_TYPES = ("vit_b", "vit_l", "vit_h", "tiny")
_SAM_ENCODER_WIDTH = {768: "vit_b", 1024: "vit_l", 1280: "vit_h", 32: "tiny"}


def tiny_sam():
    """A real ``segment_anything.Sam`` at toy size (256 px input, 2-block ViT, 32-wide) for tests."""
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    image_size, patch_size, width = 256, 16, 32
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size, patch_size=patch_size, embed_dim=width, depth=2, num_heads=2, mlp_ratio=2,
            out_chans=width, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, window_size=4, global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=width, image_embedding_size=(image_size // patch_size,) * 2,
            input_image_size=(image_size, image_size), mask_in_chans=8,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=width, mlp_dim=64, num_heads=2),
            transformer_dim=width, iou_head_depth=3, iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def write_tiny_sam(root: str | Path) -> Path:
    """Write the tiny SAM's weights to ``root/sam/sam_tiny.safetensors`` (load with model_type="tiny")."""
    from safetensors.torch import save_file

    path = Path(root) / "sam" / "sam_tiny.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().contiguous().clone() for key, value in tiny_sam().state_dict().items()}
    save_file(state, str(path))
    return path


def build_sam(model_type: str):
    """An untrained SAM of ``model_type`` (vit_b / vit_l / vit_h / tiny), built offline."""
    if model_type not in SAM_MODEL_TYPES:
        raise ValueError(f"model_type must be one of {SAM_MODEL_TYPES}, got {model_type!r}")
    if model_type == "tiny":
        return tiny_sam()
    from segment_anything import sam_model_registry

    return sam_model_registry[model_type](checkpoint=None)


def load_sam(checkpoint: str | Path, model_type: str = "vit_b", device: str = "cpu"):
    """Build SAM and load the official ``sam_vit_*.pth`` (torch.load weights_only) or a safetensors file."""
    if model_type not in SAM_MODEL_TYPES:
        raise ValueError(f"model_type must be one of {SAM_MODEL_TYPES}, got {model_type!r}")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ModelUnavailableError(
            f"SAM checkpoint {path} not found; download sam_vit_b_01ec64.pth from the segment-anything "
            "release page and point the settings at it"
        )
    state = read_state_dict(path)
    state = {key: value for key, value in state.items() if hasattr(value, "shape")}
    model = build_sam(model_type)
    try:
        load_strict(model, state, path.name)
    except CheckpointError as error:
        width_key = "image_encoder.patch_embed.proj.weight"
        guess = _SAM_ENCODER_WIDTH.get(int(state[width_key].shape[0])) if width_key in state else None
        if guess and guess != model_type:
            raise CheckpointError(f"{path.name} is a {guess} checkpoint, not {model_type}; set model_type={guess!r}") from error
        raise
    return model.to(device).eval()


def _image_key(image: Image.Image) -> str:
    digest = hashlib.sha1(image.tobytes())
    digest.update(f"{image.mode}{image.size}".encode())
    return digest.hexdigest()


class SamRefiner:
    """Click-to-refine masks with segment-anything, caching the image embedding per image (LRU).

    ``checkpoint``: path to an official ``sam_vit_*.pth`` / our safetensors, or a built ``Sam`` module.
    The encoder (8-16 s on CPU for vit_b) runs once per distinct image; clicks then cost milliseconds.
    """

    def __init__(self, checkpoint, model_type: str = "vit_b", device: str = "cpu", cache_size: int = 4) -> None:
        if model_type not in SAM_MODEL_TYPES:
            raise ValueError(f"model_type must be one of {SAM_MODEL_TYPES}, got {model_type!r}")
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.checkpoint = checkpoint
        self.model_type = model_type
        self.device = device
        self.cache_size = cache_size
        self.encoder_runs = 0  # how many times the image encoder actually ran
        self._predictor = None
        self._cache: OrderedDict[str, tuple] = OrderedDict()
        self._current: Optional[str] = None
        # The predictor holds ONE current image; concurrent UI callers pass image= to refine() so the
        # select-then-predict pair runs atomically under this lock.
        self._lock = threading.RLock()

    def _get_predictor(self):
        if self._predictor is None:
            import torch
            from segment_anything import SamPredictor

            model = self.checkpoint
            if not isinstance(model, torch.nn.Module):
                model = load_sam(self.checkpoint, self.model_type, self.device)
            self._predictor = SamPredictor(model.to(self.device).eval())
        return self._predictor

    def set_image(self, image: Image.Image) -> bool:
        """Select ``image`` for the next clicks; returns True if the encoder ran, False on a cache hit."""
        with self._lock:
            return self._set_image(image)

    def _set_image(self, image: Image.Image) -> bool:
        predictor = self._get_predictor()
        image = image.convert("RGB")
        key = _image_key(image)
        if key in self._cache:
            self._cache.move_to_end(key)
            features, original_size, input_size = self._cache[key]
            predictor.reset_image()
            predictor.features, predictor.original_size, predictor.input_size = features, original_size, input_size
            predictor.is_image_set = True
            self._current = key
            return False
        predictor.set_image(np.asarray(image), image_format="RGB")
        self.encoder_runs += 1
        self._cache[key] = (predictor.features, predictor.original_size, predictor.input_size)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        self._current = key
        return True

    def _mask_prompt(self, base_mask: np.ndarray) -> np.ndarray:
        """A binary mask -> SAM's low-resolution logit prompt (1, S/4, S/4) in the padded input frame."""
        predictor = self._predictor
        size = predictor.model.image_encoder.img_size
        height, width = predictor.input_size
        resized = np.asarray(Image.fromarray(base_mask.astype(np.uint8) * 255).resize((width, height), Image.BILINEAR))
        padded = np.zeros((size, size), np.float32)
        padded[:height, :width] = resized / 255.0
        low = np.asarray(Image.fromarray(padded).resize((size // 4, size // 4), Image.BILINEAR))
        return ((low > 0.5).astype(np.float32) * 2 - 1)[None] * 8.0  # strong +/- logits

    def refine(
        self,
        points_pos: Sequence[tuple[float, float]] = (),
        points_neg: Sequence[tuple[float, float]] = (),
        box: Optional[Sequence[float]] = None,
        base_mask: Optional[MaskLike] = None,
        image: Optional[Image.Image] = None,
    ) -> Image.Image:
        """A binary ``L`` mask from clicks (x, y in image pixels), an optional box (x0, y0, x1, y1) and an
        optional starting mask (used as SAM's mask prompt; its bounding box is used when no box is given).

        Pass ``image`` to select it first (cached) in the same atomic step: safe with concurrent users.
        """
        with self._lock:
            if image is not None:
                self._set_image(image)
            return self._refine(points_pos, points_neg, box, base_mask)

    def _refine(self, points_pos, points_neg, box, base_mask) -> Image.Image:
        if self._current is None:
            raise ValueError("call set_image(image) before refine()")
        predictor = self._predictor
        height, width = predictor.original_size
        points = [(float(x), float(y), 1) for x, y in points_pos] + [(float(x), float(y), 0) for x, y in points_neg]
        prior = None
        if base_mask is not None:
            prior = _as_bool(base_mask, "base_mask")
            if prior.shape != (height, width):
                raise ValueError(
                    f"base_mask is {prior.shape[1]}x{prior.shape[0]} px but the image is {width}x{height} px"
                )
            if box is None and prior.any():
                rows, cols = np.nonzero(prior)
                box = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        if not points and box is None:
            raise ValueError("refine needs at least one click, a box or a non-empty base_mask")
        if box is not None:
            box = np.asarray(box, dtype=np.float32)
            if box.shape != (4,) or box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"box must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {box.tolist()}")
        masks, scores, _ = predictor.predict(
            point_coords=np.array([p[:2] for p in points], np.float32) if points else None,
            point_labels=np.array([p[2] for p in points], np.int32) if points else None,
            box=box,
            mask_input=None if prior is None else self._mask_prompt(prior),
            multimask_output=False,
        )
        return _to_pil(masks[int(np.argmax(scores))])


def masker_factory(registry) -> Callable[[], Any]:
    """A lazy, registry-shared AutoMasker (SegFormer from the preset, mediapipe fallback)."""

    def build():

        return registry.shared(
            "auto_masker", lambda: AutoMasker(registry.preset.segformer, device=str(registry.device)), "auto masker"
        )

    return build


def blur_threshold(mask: Image.Image, radius: int) -> Image.Image:
    """The official CatVTON app's mask processing: Gaussian blur of ``radius`` px, then >= 128 -> 255, else 0.
    Rounds jagged parser edges and removes specks; ``radius`` 0 returns the mask unchanged."""
    if radius < 0:
        raise ValueError(f"mask_blur={radius!r} must be >= 0 px")
    mask = mask.convert("L")
    if radius == 0:
        return mask
    return mask.filter(ImageFilter.GaussianBlur(radius)).point(lambda value: 255 if value >= 128 else 0)


def resolve_mask(
    person: Image.Image,
    painted: Image.Image | None,
    auto_mask: bool,
    category: str,
    masker: Callable[[], Any] | Any | None,
    kind: str = "tryon",
) -> tuple[Image.Image, str, str]:
    """(mask at the person's size, source, note). A non-empty painted mask always overrides the automatic one."""
    if painted is not None:
        mask = load_mask(painted, size=person.size, name="mask", reference_name="person image")
        if np.asarray(mask).any():
            return mask, "painted", ""
        if not auto_mask:
            raise ValueError("the painted mask is empty: paint the area to change or turn on the automatic mask")
    if not auto_mask:
        raise ValueError("no mask: paint the area to change or turn on the automatic mask")
    if masker is None:
        raise ValueError("no automatic masker is available: paint the area to change")
    if callable(masker) and not hasattr(masker, "tryon_mask"):
        masker = masker()
    result = masker.tryon_mask(person, category) if kind == "tryon" else masker.tryoff_mask(person, category)
    if not np.asarray(result.mask).any():
        raise ValueError(
            f"the automatic mask found no {category} garment in the person image; paint the mask by hand"
        )
    return result.mask.convert("L"), result.source, result.note
