"""A drawn mannequin with known parts: the ground truth for mask tests, previews and small training sets.

One front-facing standing figure, drawn from one skeleton (the 33 mediapipe landmarks, in pixels), dressed in
an outfit of flat-coloured garments. Everything is known exactly because it is drawn::

    draw_mannequin(Outfit(top="tshirt", bottom="shorts"), size=(384, 512))
      -> Mannequin.image   (H, W, 3) RGB photo-like drawing (skin, face, hair, garments, shoes)
         Mannequin.labels  (H, W) ATR clothes labels, the 18 of SegFormer / SCHP-ATR
         Mannequin.parts   {"torso", "big arms", "forearms", "hands", "thighs", "legs", "feet", "face"}
                           (H, W) bool body-surface regions, as DensePose names them (under the clothes)
         Mannequin.pose    BodyLandmarks of the skeleton the figure was drawn from

Garments are drawn over the body in order (bottom, then top or dress, then shoes), so a label is what the
camera sees. ``jitter`` moves the skeleton a little (seeded) for varied samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np
from PIL import Image

from pipelines.preprocess.pose import BodyLandmarks

TOPS = ("none", "tshirt", "longsleeve", "tank")
BOTTOMS = ("none", "shorts", "trousers", "skirt")
DRESSES = ("none", "short", "long")

# ATR label ids (the SegFormer clothes labels)
HAIR, UPPER, SKIRT, PANTS, DRESS, LEFT_SHOE, RIGHT_SHOE, FACE = 2, 4, 5, 6, 7, 9, 10, 11
LEFT_LEG, RIGHT_LEG, LEFT_ARM, RIGHT_ARM = 12, 13, 14, 15

SKIN = (222, 178, 148)
HAIR_COLOUR = (60, 40, 30)
SHOE_COLOUR = (40, 40, 45)
BACKGROUND = (236, 236, 232)

# The skeleton on a 384 x 512 canvas (x, y); person's left = image right, as a camera sees it.
_SKELETON = {
    0: (192, 66), 1: (199, 56), 2: (203, 56), 3: (207, 56), 4: (185, 56), 5: (181, 56), 6: (177, 56),
    7: (214, 60), 8: (170, 60), 9: (198, 80), 10: (186, 80),
    11: (234, 112), 12: (150, 112), 13: (250, 190), 14: (134, 190), 15: (258, 262), 16: (126, 262),
    17: (262, 284), 18: (122, 284), 19: (259, 288), 20: (125, 288), 21: (252, 278), 22: (132, 278),
    23: (214, 262), 24: (170, 262), 25: (216, 362), 26: (168, 362), 27: (218, 462), 28: (166, 462),
    29: (218, 476), 30: (166, 476), 31: (226, 490), 32: (158, 490),
}


@dataclass(frozen=True)
class Outfit:
    top: str = "tshirt"
    bottom: str = "shorts"
    dress: str = "none"  # a dress replaces top and bottom
    top_colour: tuple[int, int, int] = (200, 40, 40)
    bottom_colour: tuple[int, int, int] = (40, 70, 160)
    dress_colour: tuple[int, int, int] = (40, 150, 90)

    def __post_init__(self) -> None:
        for name, value, choices in (("top", self.top, TOPS), ("bottom", self.bottom, BOTTOMS),
                                     ("dress", self.dress, DRESSES)):
            if value not in choices:
                raise ValueError(f"{name}={value!r} must be one of {choices}")


@dataclass
class Mannequin:
    image: Image.Image
    labels: np.ndarray
    parts: dict[str, np.ndarray]
    pose: BodyLandmarks
    outfit: Outfit = field(default_factory=Outfit)


def _skeleton(size: tuple[int, int], jitter: float, seed: int) -> np.ndarray:
    width, height = size
    points = np.array([_SKELETON[index] for index in range(33)], np.float64)
    points *= np.array([width / 384, height / 512])
    if jitter:
        rng = np.random.default_rng(seed)
        points += rng.normal(0.0, jitter * width / 384, points.shape)
    return points


class _Canvas:
    """Boolean shape drawing at one size (cv2 polygons and thick lines)."""

    def __init__(self, size: tuple[int, int], scale: float) -> None:
        self.size = size
        self.scale = scale

    def blank(self) -> np.ndarray:
        return np.zeros((self.size[1], self.size[0]), np.uint8)

    def polygon(self, points) -> np.ndarray:
        canvas = self.blank()
        cv2.fillPoly(canvas, [np.round(np.asarray(points)).astype(np.int32)], 1)
        return canvas > 0

    def limb(self, start, end, width: float) -> np.ndarray:
        canvas = self.blank()
        thickness = max(1, int(round(width * self.scale)))
        a = tuple(int(round(v)) for v in start)
        b = tuple(int(round(v)) for v in end)
        cv2.line(canvas, a, b, 1, thickness)
        cv2.circle(canvas, a, thickness // 2, 1, -1)
        cv2.circle(canvas, b, thickness // 2, 1, -1)
        return canvas > 0

    def ellipse(self, centre, axes, angle: float = 0.0) -> np.ndarray:
        canvas = self.blank()
        cv2.ellipse(canvas, tuple(int(round(v)) for v in centre),
                    tuple(max(1, int(round(v * self.scale))) for v in axes), angle, 0, 360, 1, -1)
        return canvas > 0


def _lerp(a, b, t: float) -> np.ndarray:
    return np.asarray(a) + (np.asarray(b) - np.asarray(a)) * t


def draw_mannequin(outfit: Optional[Outfit] = None, size: tuple[int, int] = (384, 512), jitter: float = 0.0,
                   seed: int = 0) -> Mannequin:
    """Draw the figure in ``outfit`` at ``size`` (W, H); see the module docstring for what comes back."""
    outfit = outfit or Outfit()
    width, height = size
    if width < 48 or height < 64:
        raise ValueError(f"size={size} is too small to draw a mannequin (at least 48 x 64)")
    p = _skeleton(size, jitter, seed)
    draw = _Canvas(size, width / 384)
    s = width / 384

    # 1. the body surface, part by part (DensePose names)
    head_centre = (p[0] + (p[7] + p[8]) / 2) / 2 + np.array([0, -4 * s])
    face = draw.ellipse(head_centre, (24, 30)) | draw.limb(p[0] + [0, 20 * s], _lerp(p[11], p[12], 0.5), 20)
    waist_l, waist_r = p[23] + [-2 * s, -30 * s], p[24] + [2 * s, -30 * s]
    torso = draw.polygon([p[12] + [6 * s, -4 * s], p[11] + [-6 * s, -4 * s], waist_l + [4 * s, 0],
                          p[23] + [20 * s, 10 * s], p[24] + [-20 * s, 10 * s], waist_r + [-4 * s, 0]])
    big_arms = draw.limb(p[11], p[13], 24) | draw.limb(p[12], p[14], 24)
    forearms = draw.limb(p[13], p[15], 20) | draw.limb(p[14], p[16], 20)
    hands = (draw.ellipse((p[17] + p[19] + p[21]) / 3, (10, 13)) | draw.ellipse((p[18] + p[20] + p[22]) / 3, (10, 13)))
    thighs = draw.limb(p[23], p[25], 36) | draw.limb(p[24], p[26], 36)
    legs = draw.limb(p[25], p[27], 26) | draw.limb(p[26], p[28], 26)
    feet = draw.ellipse((p[29] + p[31]) / 2, (14, 9), 20) | draw.ellipse((p[30] + p[32]) / 2, (14, 9), -20)
    # Each pixel belongs to one part (later parts win where the limbs meet, as on a body surface).
    parts: dict[str, np.ndarray] = {}
    taken = np.zeros((height, width), bool)
    for name, region in (("hands", hands), ("feet", feet), ("face", face), ("forearms", forearms),
                         ("big arms", big_arms), ("legs", legs), ("thighs", thighs), ("torso", torso)):
        parts[name] = region & ~taken
        taken |= region
    hair = draw.ellipse(head_centre + [0, -12 * s], (27, 24)) & ~draw.ellipse(head_centre + [0, 6 * s], (23, 26))

    labels = np.zeros((height, width), np.uint8)
    left_side = np.zeros((height, width), bool)
    left_side[:, int(round(p[0][0])):] = True  # person's left = image right
    labels[(parts["thighs"] | parts["legs"]) & left_side] = LEFT_LEG
    labels[(parts["thighs"] | parts["legs"]) & ~left_side] = RIGHT_LEG
    labels[parts["torso"]] = FACE  # bare skin under the clothes: only seen where nothing covers it
    labels[(parts["big arms"] | parts["forearms"] | parts["hands"]) & left_side] = LEFT_ARM
    labels[(parts["big arms"] | parts["forearms"] | parts["hands"]) & ~left_side] = RIGHT_ARM
    labels[parts["face"]] = FACE
    labels[hair] = HAIR

    # 2. the garments, bottom first
    hip_l, hip_r = p[23] + [22 * s, 12 * s], p[24] + [-22 * s, 12 * s]
    garments: list[tuple[np.ndarray, int, tuple]] = []
    if outfit.dress == "none":
        if outfit.bottom != "none":
            depth = {"shorts": 0.45, "trousers": 1.0, "skirt": 0.55}[outfit.bottom]
            top_edge = [waist_r + [-5 * s, 0], waist_l + [5 * s, 0]]
            if outfit.bottom == "skirt":
                hem_y = p[24][1] + (p[26][1] - p[24][1]) * 1.1
                region = draw.polygon(top_edge + [[p[23][0] + 40 * s, hem_y], [p[24][0] - 40 * s, hem_y]])
            else:
                region = draw.polygon(top_edge + [hip_l, hip_r])
                for hip, knee, ankle in ((23, 25, 27), (24, 26, 28)):
                    end = _lerp(p[hip], p[knee], depth * 2) if depth <= 0.5 else _lerp(p[knee], p[ankle], depth)
                    region |= draw.limb(p[hip], end, 44 if depth <= 0.5 else 40)
                    if depth > 0.5:
                        region |= draw.limb(p[hip], p[knee], 42)
            garments.append((region, SKIRT if outfit.bottom == "skirt" else PANTS, outfit.bottom_colour))
        if outfit.top != "none":
            region = torso.copy() | draw.polygon([waist_r + [-6 * s, 0], waist_l + [6 * s, 0], hip_l, hip_r])
            if outfit.top == "tank":
                region &= ~draw.ellipse(_lerp(p[11], p[12], 0.5) + [0, -6 * s], (26, 22))
            else:
                region &= ~draw.ellipse(_lerp(p[11], p[12], 0.5) + [0, -8 * s], (16, 12))
                reach = 0.55 if outfit.top == "tshirt" else 1.0
                for shoulder, elbow, wrist in ((11, 13, 15), (12, 14, 16)):
                    if reach < 1.0:
                        region |= draw.limb(p[shoulder], _lerp(p[shoulder], p[elbow], reach), 30)
                    else:
                        region |= draw.limb(p[shoulder], p[elbow], 29) | draw.limb(p[elbow], p[wrist], 25)
            garments.append((region, UPPER, outfit.top_colour))
    else:
        hem = p[24][1] + (p[26][1] - p[24][1]) * (1.05 if outfit.dress == "short" else 1.9)
        region = torso.copy() | draw.polygon(
            [waist_r, waist_l, [p[23][0] + 46 * s, hem], [p[24][0] - 46 * s, hem]])
        region &= ~draw.ellipse(_lerp(p[11], p[12], 0.5) + [0, -6 * s], (20, 14))
        for shoulder, elbow in ((11, 13), (12, 14)):
            region |= draw.limb(p[shoulder], _lerp(p[shoulder], p[elbow], 0.3), 28)
        garments.append((region, DRESS, outfit.dress_colour))
    shoes = draw.ellipse((p[29] + p[31]) / 2, (16, 10), 20) | draw.ellipse((p[30] + p[32]) / 2, (16, 10), -20)
    left_shoe = shoes & left_side
    garments.append((left_shoe, LEFT_SHOE, SHOE_COLOUR))
    garments.append((shoes & ~left_side, RIGHT_SHOE, SHOE_COLOUR))
    colours = {}
    for region, label, colour in garments:
        labels[region] = label
        colours[label] = colour

    # 3. the picture: flat colours with a little shading, then the face
    rgb = np.empty((height, width, 3), np.float32)
    rgb[:] = BACKGROUND
    skin_labels = [FACE, LEFT_LEG, RIGHT_LEG, LEFT_ARM, RIGHT_ARM]
    rgb[np.isin(labels, skin_labels)] = SKIN
    rgb[labels == HAIR] = HAIR_COLOUR
    for label, colour in colours.items():
        rgb[labels == label] = colour
    person = labels > 0
    edges = cv2.GaussianBlur(person.astype(np.float32), (0, 0), 3 * s)
    rgb[person] *= (0.82 + 0.18 * edges[person])[:, None]  # darker towards the outline: some roundness
    canvas = np.clip(rgb, 0, 255).astype(np.uint8)
    for eye in ((p[2] + p[1] + p[3]) / 3, (p[5] + p[4] + p[6]) / 3):
        cv2.ellipse(canvas, tuple(int(round(v)) for v in eye), (max(1, int(5 * s)), max(1, int(3 * s))),
                    0, 0, 360, (250, 250, 250), -1)
        cv2.circle(canvas, tuple(int(round(v)) for v in eye), max(1, int(2 * s)), (40, 30, 30), -1)
    cv2.line(canvas, tuple(int(round(v)) for v in p[10]), tuple(int(round(v)) for v in p[9]),
             (170, 80, 80), max(1, int(2 * s)))
    nose = p[0]
    cv2.line(canvas, (int(nose[0]), int(nose[1] - 8 * s)), (int(nose[0]), int(nose[1])), (190, 140, 115),
             max(1, int(2 * s)))

    pose = BodyLandmarks(p.astype(np.float32), np.ones(33, np.float32), (width, height))
    return Mannequin(Image.fromarray(canvas), labels, parts, pose, outfit)
