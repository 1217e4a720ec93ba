"""Automatic garment masks for try-on / try-off, SAM click-to-refine, and mask utilities.

Three parsers produce a :class:`BodyParse` of a person photo:

* SCHP (:mod:`pipelines.preprocess.schp`), CatVTON's own parser: an ATR (18 labels) and a LIP (20 labels)
  label map, used when the preset names its weights (``schp:``);
* :class:`ClothesParser`: a SegFormer clothes model (``mattmdjaga/segformer_b2_clothes``, 18 labels) giving
  a per-pixel label map;
* :class:`MediapipeBodyParser`: the offline fallback from the legacy mediapipe selfie segmentation
  (person silhouette) and pose (33 landmarks), whose category regions are built geometrically.

:func:`~pipelines.preprocess.bodyparts.tryon_mask` is CatVTON's broad agnostic mask for where the NEW garment
may go (the official rules per category); :func:`~pipelines.preprocess.bodyparts.tryoff_mask` is the worn
garment itself.
:class:`AutoMasker` picks SCHP when configured and available, else SegFormer when it loads, otherwise mediapipe,
and reports which it used (and why the better ones were not).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from PIL import Image, ImageFilter

from pipelines.core.checkpoints import load_strict, offline_hint, read_state_dict
from pipelines.core.presets import SchpWeights
from pipelines.preprocess.bodyparts import (
    SEGFORMER_LABELS,
    TRYOFF_LABELS,
    BodyParse,
    MaskLike,
    as_bool_mask,
    check_category,
    default_dilation,
    dilate,
    to_mask_image,
    tryoff_mask,
    tryon_mask,
)
from pipelines.preprocess.images import load_mask
from pipelines.preprocess.pose import detect_body_landmarks
from pipelines.types import CheckpointError, ModelUnavailableError

logger = logging.getLogger(__name__)

DEFAULT_SEGFORMER = "mattmdjaga/segformer_b2_clothes"
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
    auto = None if auto_mask is None else as_bool_mask(auto_mask, "auto_mask")
    painted = None if painted_mask is None else as_bool_mask(painted_mask, "painted_mask")
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
        return to_mask_image(auto)
    if auto is None or mode == "replace":
        return to_mask_image(painted)
    if mode == "add":
        return to_mask_image(auto | painted)
    return to_mask_image(auto & ~painted)


def mask_overlay(
    image: Image.Image, mask: MaskLike, color: tuple[int, int, int] = (255, 40, 120), alpha: float = 0.5
) -> Image.Image:
    """``image`` with ``mask`` tinted in ``color`` at ``alpha`` opacity (for previews)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    selected = as_bool_mask(mask, "mask")
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
    source: str  # "schp", "segformer" or "mediapipe"
    note: str = ""  # why the fallback was used, if it was


class AutoMasker:
    """Automatic masks: SCHP (LIP + ATR) when configured and available, else SegFormer when it loads, otherwise
    the mediapipe fallback (reported in the result).

    ``schp``: the SCHP weights (:class:`SchpWeights`; None skips SCHP). ``segformer_location=None`` skips
    SegFormer. A failed load is remembered, so the (slow) offline attempt happens once per masker; a damaged
    or wrong checkpoint file raises :class:`CheckpointError` naming it.
    """

    def __init__(self, segformer_location: str | Path | None = DEFAULT_SEGFORMER, device: str = "cpu",
                 use_pose: bool = True, schp: SchpWeights | None = None) -> None:
        self.clothes_parser = None if segformer_location is None else ClothesParser(segformer_location, device)
        self.fallback = MediapipeBodyParser()
        self.use_pose = use_pose
        self.device = device
        self.schp = schp
        self.schp_parsers: Optional[tuple] = None  # (LIP, ATR) SchpParser once their files are found
        self.schp_unavailable_reason: Optional[str] = None
        self.unavailable_reason: Optional[str] = None if segformer_location else "no SegFormer location configured"
        self.last_source: Optional[str] = None

    def _pose(self, image: Image.Image):
        if not self.use_pose:
            return None
        try:
            return detect_body_landmarks(image)
        except ModelUnavailableError as error:
            logger.info("no pose for the try-on mask extension: %s", error)
            return None

    def _schp_parse(self, image: Image.Image) -> Optional[BodyParse]:
        """The SCHP parse (ATR labels + LIP labels), or None when its weights cannot be had (remembered)."""
        from pipelines.core.registry import fetch_file
        from pipelines.preprocess.schp import SchpParser

        try:
            if self.schp_parsers is None:
                self.schp_parsers = tuple(
                    SchpParser(fetch_file(self.schp.location, filename), dataset, self.device)
                    for dataset, filename in (("lip", self.schp.lip), ("atr", self.schp.atr))
                )
            lip, atr = (parser.parse(image) for parser in self.schp_parsers)
        except ModelUnavailableError as error:
            self.schp_unavailable_reason = str(error)
            logger.warning("SCHP unavailable, using the next parser: %s", error)
            return None
        return BodyParse(image.size, (atr != 0) | (lip != 0), atr, self._pose(image), "schp", lip_labels=lip)

    def parse(self, image: Image.Image) -> BodyParse:
        """Parse ``image`` with the best available parser."""
        if self.schp is not None and self.schp_unavailable_reason is None:
            parse = self._schp_parse(image)
            if parse is not None:
                self.last_source = "schp"
                return parse
        if self.clothes_parser is not None and self.unavailable_reason is None:
            try:
                labels = self.clothes_parser.parse(image)
            except ModelUnavailableError as error:
                self.unavailable_reason = str(error)
                logger.warning("SegFormer unavailable, using the mediapipe fallback: %s", error)
            else:
                self.last_source = "segformer"
                return BodyParse(image.size, labels != 0, labels, self._pose(image), "segformer")
        parse = self.fallback.parse(image)
        self.last_source = parse.source
        return parse

    def _result(self, mask: Image.Image, parse: BodyParse) -> MaskResult:
        notes = []
        if self.schp is not None and parse.source != "schp":
            notes.append(f"SCHP not used: {self.schp_unavailable_reason}")
        if parse.source == "mediapipe":
            notes.append(f"SegFormer not used: {self.unavailable_reason}")
        return MaskResult(mask, parse.source, "; ".join(notes))

    def tryon_mask(self, image: Image.Image, category: str) -> MaskResult:
        """Try-on mask for ``image`` (see :func:`tryon_mask`)."""
        check_category(category)
        parse = self.parse(image)
        return self._result(tryon_mask(parse, category), parse)

    def tryoff_mask(self, image: Image.Image, category: str) -> MaskResult:
        """Try-off mask for ``image`` (see :func:`tryoff_mask`)."""
        check_category(category, tuple(TRYOFF_LABELS))
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
            prior = as_bool_mask(base_mask, "base_mask")
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
        return to_mask_image(masks[int(np.argmax(scores))])


def masker_factory(registry, kind: str = "tryon") -> Callable[[], Any]:
    """A lazy, registry-shared AutoMasker (try-on: SCHP when the preset names it, then SegFormer from the
    preset, mediapipe fallback). ``kind="tryoff"`` uses the preset's ``tryoff_segformer`` when it names one
    (TryOffAnyone parses with segformer_b3) and no SCHP (its script does not)."""
    location = registry.preset.segformer
    schp = registry.preset.schp if kind == "tryon" else None
    if kind == "tryoff" and registry.preset.tryoff_segformer:
        location = registry.preset.tryoff_segformer
    key = f"auto_masker:{location}" + (f"|schp:{schp.location}:{schp.lip}:{schp.atr}" if schp else "")

    def build():
        return registry.shared(
            key, lambda: AutoMasker(location, device=str(registry.device), schp=schp), "auto masker"
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
