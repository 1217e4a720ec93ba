"""The body parts of a parsed person photo, and the try-on / try-off mask rules built from them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import cv2
import numpy as np
from PIL import Image

from pipelines.preprocess.pose import BodyLandmarks
from pipelines.types import TRYON_CATEGORIES

SEGFORMER_LABELS = {
    0: "background", 1: "hat", 2: "hair", 3: "sunglasses", 4: "upper-clothes", 5: "skirt", 6: "pants",
    7: "dress", 8: "belt", 9: "left-shoe", 10: "right-shoe", 11: "face", 12: "left-leg", 13: "right-leg",
    14: "left-arm", 15: "right-arm", 16: "bag", 17: "scarf",
}
# SCHP-LIP's 20 labels (CatVTON's second parser; glove, coat, socks and jumpsuits only it has)
LIP_LABELS = {
    0: "background", 1: "hat", 2: "hair", 3: "glove", 4: "sunglasses", 5: "upper-clothes", 6: "dress", 7: "coat",
    8: "socks", 9: "pants", 10: "jumpsuits", 11: "scarf", 12: "skirt", 13: "face", 14: "left-arm", 15: "right-arm",
    16: "left-leg", 17: "right-leg", 18: "left-shoe", 19: "right-shoe",
}

# Try-off extracts the garment itself; TryOffAnyone treats tops as upper-clothes + dress.
TRYOFF_LABELS = {"upper": {4, 7}, "lower": {5, 6}, "dress": {7}, "full": {4, 5, 6, 7, 8, 17}}
# mediapipe pose landmark indices
NOSE, LEFT_EAR, RIGHT_EAR = 0, 7, 8
LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_ELBOW, RIGHT_ELBOW, LEFT_WRIST, RIGHT_WRIST = 11, 12, 13, 14, 15, 16
LEFT_HIP, RIGHT_HIP, LEFT_KNEE, RIGHT_KNEE, LEFT_ANKLE, RIGHT_ANKLE = 23, 24, 25, 26, 27, 28
HAND_LANDMARKS = {"left": (15, 17, 19, 21), "right": (16, 18, 20, 22)}  # wrist, pinky, index, thumb
FACE_LANDMARKS = tuple(range(11))

MaskLike = Union[Image.Image, np.ndarray]


def check_category(category: str, choices: tuple[str, ...] = TRYON_CATEGORIES) -> str:
    if category not in choices:
        raise ValueError(f"category must be one of {choices}, got {category!r}")
    return category


def to_mask_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))


def as_bool_mask(mask: MaskLike, name: str) -> np.ndarray:
    if isinstance(mask, Image.Image):
        return np.asarray(mask.convert("L")) >= 128
    if isinstance(mask, np.ndarray):
        if mask.ndim != 2:
            raise ValueError(f"{name} must be a 2-D mask, got shape {mask.shape}")
        return mask >= 128 if mask.dtype == np.uint8 else mask.astype(bool)
    raise TypeError(f"{name}: expected a PIL image or numpy array, got {type(mask).__name__}")


def _kernel(radius: int) -> np.ndarray:
    size = 2 * radius + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by ``radius`` px (elliptical structuring element)."""
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
    labels: Optional[np.ndarray] = None  # (H, W) uint8 ATR labels: SegFormer or SCHP-ATR (None for mediapipe)
    pose: Optional[BodyLandmarks] = None  # mediapipe landmarks in pixels when available
    source: str = "segformer"  # "schp", "segformer" or "mediapipe"
    parts: Optional[dict[str, np.ndarray]] = None  # DensePose-named body parts when a parser gives them
    lip_labels: Optional[np.ndarray] = None  # (H, W) uint8 SCHP-LIP labels (the SCHP parse has both maps)


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
        parse = dataclasses.replace(parse, pose=pose)
    return parse


# ------------------------------------------------------------------------------ geometric body regions
def _fill_polygon(canvas: np.ndarray, points: Sequence) -> None:
    hull = cv2.convexHull(np.round(np.asarray(points, dtype=np.float64)).astype(np.int32))
    cv2.fillConvexPoly(canvas, hull, 1)


def _capsule(canvas: np.ndarray, chain: Sequence, thickness: float) -> None:
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
    check_category(category, tuple(TRYOFF_LABELS))
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
    width, height = pose.image_size
    canvas = np.zeros((height, width), np.uint8)
    for indices in HAND_LANDMARKS.values():
        hand = pose.points[list(indices)].astype(np.float64)
        centre = hand[1:].mean(axis=0) * 0.7 + hand[0] * 0.3
        reach = float(np.max(np.linalg.norm(hand - centre, axis=1)))
        radius = max(reach * 1.4, 0.12 * _shoulder_width(pose))
        cv2.circle(canvas, (int(round(centre[0])), int(round(centre[1]))), int(round(radius)), 1, -1)
    return canvas > 0


# ------------------------------------------------------------------------- body parts (DensePose names)
DENSE_PARTS = ("torso", "big arms", "forearms", "hands", "thighs", "legs", "feet", "face")
LEFT_HEEL, RIGHT_HEEL, LEFT_FOOT, RIGHT_FOOT = 29, 30, 31, 32
WAIST = 0.8  # the waist line lies this far down the torso axis, shoulders (0) to hip joints (1)


def _disc(canvas: np.ndarray, centre: np.ndarray, radius: float) -> None:
    cv2.circle(canvas, (int(round(centre[0])), int(round(centre[1]))), max(1, int(round(radius))), 1, -1)


def along_torso(pose: BodyLandmarks) -> np.ndarray:
    """(H, W) float: each pixel's position along the shoulders-to-hips axis (shoulders 0, hip joints 1)."""
    width, height = pose.image_size
    points = pose.points.astype(np.float64)
    shoulders = (points[LEFT_SHOULDER] + points[RIGHT_SHOULDER]) / 2
    axis = (points[LEFT_HIP] + points[RIGHT_HIP]) / 2 - shoulders
    length_squared = max(float(axis @ axis), 1e-6)
    ys, xs = np.mgrid[0:height, 0:width]
    return ((xs - shoulders[0]) * axis[0] + (ys - shoulders[1]) * axis[1]) / length_squared


def dense_parts(pose: BodyLandmarks, silhouette: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """The body surface split into DensePose's coarse parts, estimated from the 33 pose landmarks.

    Limbs are capsules along their bones, the torso the shoulders-to-hips quadrilateral, hands, feet and face
    discs/ellipses. Each pixel belongs to one part (hands, feet, face, forearms, big arms, legs, thighs, torso:
    the first wins where they meet) and, given ``silhouette``, only pixels of the person count.
    """
    width, height = pose.image_size
    points = pose.points.astype(np.float64)
    shoulder_width = _shoulder_width(pose)
    blank = lambda: np.zeros((height, width), np.uint8)  # noqa: E731
    regions: dict[str, np.ndarray] = {}
    torso = blank()
    left_shoulder, right_shoulder = _widen(points[LEFT_SHOULDER], points[RIGHT_SHOULDER], 0.1)
    left_hip, right_hip = _widen(points[LEFT_HIP], points[RIGHT_HIP], 0.3)
    _fill_polygon(torso, [left_shoulder, right_shoulder, right_hip, left_hip])
    regions["torso"] = torso > 0
    for name, bones, thickness in (
        ("big arms", ((LEFT_SHOULDER, LEFT_ELBOW), (RIGHT_SHOULDER, RIGHT_ELBOW)), 0.34),
        ("forearms", ((LEFT_ELBOW, LEFT_WRIST), (RIGHT_ELBOW, RIGHT_WRIST)), 0.28),
        ("thighs", ((LEFT_HIP, LEFT_KNEE), (RIGHT_HIP, RIGHT_KNEE)), 0.5),
        ("legs", ((LEFT_KNEE, LEFT_ANKLE), (RIGHT_KNEE, RIGHT_ANKLE)), 0.36),
    ):
        canvas = blank()
        for start, end in bones:
            _capsule(canvas, [points[start], points[end]], thickness * shoulder_width)
        regions[name] = canvas > 0
    regions["hands"] = hands_region(pose)
    feet = blank()
    for heel, toe in ((LEFT_HEEL, LEFT_FOOT), (RIGHT_HEEL, RIGHT_FOOT)):
        span = float(np.linalg.norm(points[toe] - points[heel]))
        _disc(feet, (points[heel] + points[toe]) / 2, max(0.9 * span, 0.2 * shoulder_width))
    regions["feet"] = feet > 0
    regions["face"] = face_region(pose)
    parts, taken = {}, np.zeros((height, width), bool)
    for name in ("hands", "feet", "face", "forearms", "big arms", "legs", "thighs", "torso"):
        region = regions[name] & ~taken
        taken |= region
        parts[name] = region if silhouette is None else region & silhouette
    return {name: parts[name] for name in DENSE_PARTS}


# ------------------------------------------------------------------------ CatVTON's agnostic mask rules
ATR = {name: index for index, name in SEGFORMER_LABELS.items()}
LIP = {name: index for index, name in LIP_LABELS.items()}
# Kept by every category, on both maps (glove and socks exist on the LIP map only).
ACCESSORIES = ("hat", "glove", "sunglasses", "bag", "left-shoe", "right-shoe", "scarf", "socks")


@dataclass(frozen=True)
class MaskRule:
    """What a try-on of one category repaints and keeps (names: ATR / LIP labels and DensePose parts).

    Label lists apply to every label map the parse has (a name a map lacks is skipped there, as officially);
    only the protected garments differ per map (``protect_clothes`` on ATR, ``protect_clothes_lip`` on LIP).
    """

    mask_clothes: tuple[str, ...]  # worn garments always repainted (the ones the new garment replaces)
    mask_parts: tuple[str, ...]  # body parts the new garment may cover, whatever is worn there now
    protect_body: tuple[str, ...]  # skin that stays
    protect_clothes: tuple[str, ...]  # other garments that stay (ATR map)
    protect_clothes_lip: tuple[str, ...] = ()  # other garments that stay (LIP map)


_OVERALL = MaskRule(("upper-clothes", "dress", "pants", "skirt", "coat", "jumpsuits"),
                    ("torso", "thighs", "legs", "big arms", "forearms"), (), (), ())
# The official rules per category (CatVTON's cloth masker); dress and full follow "overall".
AGNOSTIC_RULES = {
    "upper": MaskRule(("upper-clothes", "coat", "dress", "jumpsuits"), ("torso", "big arms", "forearms"),
                      ("left-leg", "right-leg"), ("skirt", "pants"), ("skirt", "pants")),
    "lower": MaskRule(("pants", "skirt", "dress", "jumpsuits"), ("thighs", "legs"),
                      ("left-arm", "right-arm", "face"), ("upper-clothes",), ("upper-clothes", "coat")),
    "dress": _OVERALL,
    "full": _OVERALL,
    "inner": MaskRule(("upper-clothes",), ("torso",), ("left-leg", "right-leg"), ("dress", "coat", "skirt", "pants"),
                      ("dress", "coat", "skirt", "pants", "jumpsuits")),
    "outer": MaskRule(("coat",), ("torso", "big arms", "forearms"), ("left-leg", "right-leg"),
                      ("dress", "pants", "skirt"), ("upper-clothes", "dress", "pants", "skirt", "jumpsuits")),
}


def odd(value: int) -> int:
    return value if value % 2 == 1 else value + 1


def mask_kernels(size: tuple[int, int]) -> tuple[int, int]:
    """(dilation kernel, blur kernel) in px for a photo of ``size``: longer side / 250 and / 25, made odd."""
    return odd(max(size) // 250), odd(max(size) // 25)


def hull_fill(mask: np.ndarray) -> np.ndarray:
    """Each connected region replaced by its filled convex hull."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    canvas = np.zeros(mask.shape, np.uint8)
    for contour in contours:
        cv2.fillPoly(canvas, [cv2.convexHull(contour)], 1)
    return canvas > 0


class _Named:
    """Label and part lookups by name for one parse (ATR and/or LIP maps); the mediapipe parse answers from
    geometry."""

    def __init__(self, parse: BodyParse) -> None:
        self.parse = parse
        self.has_labels = parse.labels is not None or parse.lip_labels is not None
        if parse.parts is not None:
            self.parts = parse.parts
        else:
            self.parts = dense_parts(parse.pose, parse.silhouette) if parse.pose is not None else {}
        self.empty = np.zeros((parse.size[1], parse.size[0]), bool)
        if not self.has_labels:
            # No clothes labels: skin and garments are told apart only by where they sit on the body.
            along = along_torso(parse.pose)
            arms = self.parts_of(("big arms", "forearms", "hands"))
            head = (face_region(parse.pose) | (along < -0.12)) & parse.silhouette & ~arms
            below_hips = parse.silhouette & (along > 1.0) & ~arms
            self.guess = {
                "face": head, "hair": head, "left-shoe": self.part("feet"), "right-shoe": self.part("feet"),
                "left-arm": arms, "right-arm": arms,
                "left-leg": self.parts_of(("thighs", "legs")), "right-leg": self.parts_of(("thighs", "legs")),
                "upper-clothes": parse.silhouette & (along <= WAIST) & ~head & ~arms,
                "pants": below_hips, "skirt": below_hips,
            }

    def part(self, name: str) -> np.ndarray:
        return self.parts.get(name, self.empty)

    def parts_of(self, names) -> np.ndarray:
        return np.logical_or.reduce([self.empty] + [self.part(name) for name in names])

    def labels_of(self, names, lip_names=None) -> np.ndarray:
        """Where any map says one of ``names`` (``lip_names``: another list for the LIP map)."""
        if not self.has_labels:
            return np.logical_or.reduce([self.empty] + [self.guess.get(name, self.empty) for name in names])
        found = self.empty
        if self.parse.labels is not None:
            found = found | np.isin(self.parse.labels, [ATR[name] for name in names if name in ATR])
        if self.parse.lip_labels is not None:
            lip_names = names if lip_names is None else lip_names
            found = found | np.isin(self.parse.lip_labels, [LIP[name] for name in lip_names if name in LIP])
        return found

    def face(self) -> np.ndarray:
        """The strongly protected face: the LIP map's when there is one (as officially), else the ATR map's."""
        if self.parse.lip_labels is not None:
            return self.parse.lip_labels == LIP["face"]
        return self.labels_of(("face",))

    def background(self) -> np.ndarray:
        """Where every map says background (the silhouette's outside for the mediapipe parse)."""
        if not self.has_labels:
            return ~self.parse.silhouette
        maps = [labels for labels in (self.parse.labels, self.parse.lip_labels) if labels is not None]
        return np.logical_and.reduce([labels == 0 for labels in maps])


def tryon_mask(parse: Union[BodyParse, np.ndarray], category: str, pose: Optional[BodyLandmarks] = None) -> Image.Image:
    """Where the NEW garment of ``category`` may go: CatVTON's broad agnostic mask on our parse (255 = repaint).

    The official steps, with k = longer side / 250 and b = longer side / 25 (both odd)::

        strong protect = (hands | feet, dilated k) & arm/leg skin  |  face
        weak protect   = strong | hair | accessories | the rule's protected skin and garments
        area  = (person - weak - background)  |  the rule's body parts (dilated 2k at quarter scale)
        area  = convex hull of each region - weak, Gaussian blur b, >= 25/255
        mask  = (area | the rule's worn garments) - strong, dilated k

    Labels come from the clothes parsers: SegFormer (ATR), or SCHP's ATR and LIP maps, where a label counts
    when either map has it (background: both say so; the face: the LIP map's); body parts from the parse when
    it has them, else from the pose (:func:`dense_parts`), so a parse without either keeps to the labels. The
    mediapipe parse has no labels: skin and worn garments are guessed from where they sit on the body (arms,
    legs, the torso above the waist).
    """
    rule = AGNOSTIC_RULES[check_category(category, tuple(AGNOSTIC_RULES))]
    parse = _as_parse(parse, pose)
    if parse.labels is None and parse.lip_labels is None and parse.pose is None:
        raise ValueError("a parse without clothes labels needs pose landmarks to build garment regions")
    named = _Named(parse)
    width, height = parse.size
    dilate_size, blur_size = mask_kernels(parse.size)
    square = np.ones((dilate_size, dilate_size), np.uint8)

    skin = named.labels_of(("left-arm", "right-arm", "left-leg", "right-leg"))
    if not named.has_labels:
        skin = parse.silhouette
    hands_feet = cv2.dilate(named.parts_of(("hands", "feet")).astype(np.uint8), square) > 0
    strong_protect = (hands_feet & skin) | named.face()
    weak_protect = (strong_protect | named.labels_of(("hair",)) | named.labels_of(ACCESSORIES)
                    | named.labels_of(rule.protect_body)
                    | named.labels_of(rule.protect_clothes, rule.protect_clothes_lip))
    background = named.background()

    parts = named.parts_of(rule.mask_parts).astype(np.uint8)
    quarter = cv2.resize(parts, (max(1, width // 4), max(1, height // 4)), interpolation=cv2.INTER_NEAREST)
    quarter = cv2.dilate(quarter, square, iterations=2)
    parts = cv2.resize(quarter, (width, height), interpolation=cv2.INTER_NEAREST) > 0

    area = (~weak_protect & ~background) | parts
    area = hull_fill(area) & ~weak_protect
    blurred = cv2.GaussianBlur(np.where(area, 255, 0).astype(np.uint8), (blur_size, blur_size), 0)
    area = blurred >= 25
    area = (area | named.labels_of(rule.mask_clothes)) & ~strong_protect
    return to_mask_image(cv2.dilate(area.astype(np.uint8), square) > 0)


def tryoff_mask(parse: Union[BodyParse, np.ndarray], category: str, pose: Optional[BodyLandmarks] = None) -> Image.Image:
    """The worn garment of ``category`` itself (no dilation) as a binary ``L`` mask.

    SegFormer labels: tops (``upper``) = upper-clothes + dress {4, 7} as TryOffAnyone does. Mediapipe parse:
    the body region (with sleeves) inside the silhouette, undilated, face and hands removed.
    """
    check_category(category, tuple(TRYOFF_LABELS))
    parse = _as_parse(parse, pose)
    if parse.labels is not None:
        return to_mask_image(np.isin(parse.labels, list(TRYOFF_LABELS[category])))
    if parse.pose is None:
        raise ValueError("a mediapipe parse needs pose landmarks to build garment regions")
    region = body_region(parse.pose, category) & parse.silhouette
    region &= ~(face_region(parse.pose) | hands_region(parse.pose))
    return to_mask_image(region)
