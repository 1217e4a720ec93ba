"""GarmentBench-mini: a seeded procedural dataset, any size, in the layouts our trainers already read.

Every sample is drawn, so everything about it is known exactly: the garment's category, shape, colour,
pattern and logo, its silhouette, and where it sits on a person. Sample ``<id>`` is the SAME garment in every
kind (garment ``i`` is the flat product of GarmentBench record ``i`` and the garment worn in try-on / try-off /
dressing sample ``i``), so an evaluation can cross-reference them::

    python -m training.synthetic --out data/mini --count 200 --seed 0 --size 64x80 \\
        [--kinds garmentbench,tryon,tryoff,dressing] [--split train|test]

    data/mini/
      garmentbench/                  training.garmentbench.load_garmentbench (colour adapter, GAM, LEM)
        cloth/<id>.png                 the flat product image: the garment (pattern, logo) on white
        sketch/<id>.png                black outline + seam lines on white, the same geometry
        color/<id>.png                 a 32 x 32 swatch of the garment's named colour
        logo/<id>.png  mask/<id>.png   (garments with a logo) the glyph on white; white = the logo box on the cloth
        silhouette/<id>.png            white = the garment (not read by the trainers: ground truth for evaluation)
        color_pair.json  sketch_pair.json  logo_pair.json   (logo_pair: the garments with a logo only)
      tryon/   person/ garment/ mask/<id>.png    training.concat_inpaint_finetune.load_triplets (mode: tryon);
                                                 mask = the garment's region on the person, dilated (where the
                                                 new garment may go)
      tryoff/  person/ garment/ mask/<id>.png    the same reader (mode: tryoff); mask = the exact garment region
      dressing/sample_<id>/                      training.dressing.load_dressing_dataset
        target.png  garment_<k>_<category>.png  mask_<k>.png  prompt.txt      (top + bottom, or a dress)
      garmentbench.json  tryon.json  tryoff.json  dressing.json     the ground truth of every sample (manifests)

Manifests sit beside the datasets (the dressing reader refuses stray files in its folder). Boxes are
``[x0, y0, x1, y1]`` in pixels, x1 / y1 exclusive. Colours come from a fixed list of 12 named colours
(:data:`COLOURS`, values taken from ``presets/palettes.yaml``); patterns are solid, stripes, dots and checks
in a second named colour; logos are one of six glyphs in a contrasting named colour, drawn inside a box on the
chest / front that lies wholly inside the silhouette. On the flat image every garment pixel is exactly its named
colour, its pattern colour or its logo colour and every other pixel is white; the silhouette mask is exactly the
non-white pixels. People are :func:`pipelines.preprocess.mannequin.draw_mannequin` figures (exact ATR labels)
whose garment regions are repainted with the garment's colour, pattern and logo times the mannequin's shading
(0.82 - 1.0); the worn SHAPE is the mannequin's (t-shirt, long sleeves, skirt, trousers, short or long dress).

Determinism: sample ``i`` depends only on (seed, split, i) — never on ``--count`` or ``--kinds`` — through
``numpy.random.SeedSequence([seed, split, i])``; PNGs carry no timestamps, so the same arguments give
byte-identical files. ``--split test`` draws from its own seed stream (a held-out set: for the same ``--seed``
no test sample repeats a train sample's random draws). The output folder must be new or empty.

Torch-free (numpy, OpenCV, Pillow).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np
from PIL import Image

from pipelines.preprocess.mannequin import DRESS, PANTS, SKIRT, UPPER, Outfit, draw_mannequin

# -- 1. the vocabulary ----------------------------------------------------------------------------------
CATEGORIES = ("t-shirt", "shirt", "dress", "skirt", "trousers", "jacket")
TOPS = ("t-shirt", "shirt", "jacket")
BOTTOMS = ("skirt", "trousers")
# name -> RGB; hex values from presets/palettes.yaml (Bold primaries, Earth tones, Classic neutrals, Denim,
# Spring pastels, Evening). None is near white: the flat image's background is white.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40),  # d62828
    "navy": (0, 48, 73),  # 003049
    "yellow": (252, 191, 73),  # fcbf49
    "teal": (42, 157, 143),  # 2a9d8f
    "orange": (247, 127, 0),  # f77f00
    "brown": (107, 66, 38),  # 6b4226
    "olive": (173, 193, 120),  # adc178
    "black": (28, 28, 28),  # 1c1c1c
    "grey": (138, 129, 120),  # 8a8178
    "blue": (61, 90, 128),  # 3d5a80
    "pink": (247, 198, 199),  # f7c6c7
    "maroon": (102, 7, 8),  # 660708
}
PATTERNS = ("solid", "stripes", "dots", "checks")
PATTERN_WORDS = {"solid": "", "stripes": "striped", "dots": "polka-dot", "checks": "checked"}
GLYPHS = ("star", "circle", "triangle", "square", "cross", "heart")
NECKLINES = ("crew", "round", "v", "square", "boat")
KINDS = ("garmentbench", "tryon", "tryoff", "dressing")
SPLITS = {"train": 0, "test": 1}
# our category -> the dressing trainer's slot category (pipelines.types.GARMENT_CATEGORIES)
DRESSING_CATEGORY = {"t-shirt": "upper", "shirt": "upper", "jacket": "outerwear", "dress": "dress",
                     "skirt": "lower", "trousers": "lower"}
WHITE = (255, 255, 255)
VERSION = 1
MIN_SIZE = (48, 64)  # the mannequin's smallest canvas; the try-on reader wants a shorter side >= 64 by default


class SyntheticError(ValueError):
    """The generator cannot run with these arguments (the message says why)."""


def _distance(a: Sequence[int], b: Sequence[int]) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def _contrasting(rng: np.random.Generator, avoid: Sequence[str], minimum: float) -> str:
    """A named colour at least ``minimum`` (RGB distance) from every colour in ``avoid`` (else the farthest)."""
    names = [name for name in COLOURS if name not in avoid]
    good = [name for name in names if all(_distance(COLOURS[name], COLOURS[other]) >= minimum for other in avoid)]
    if good:
        return str(good[rng.integers(len(good))])
    return max(names, key=lambda name: min(_distance(COLOURS[name], COLOURS[other]) for other in avoid))


# -- 2. garment specs and geometry (normalised: x in [0, 1] of the width, y of the height) ------------------
@dataclass(frozen=True)
class GarmentSpec:
    """Everything random about one garment; :func:`draw_garment` turns it into pixels."""

    category: str
    colour: str
    pattern: str = "solid"
    pattern_colour: Optional[str] = None
    pattern_period: float = 0.1  # of the width
    pattern_vertical: bool = False  # stripes only
    glyph: Optional[str] = None
    logo_colour: Optional[str] = None
    neckline: Optional[str] = None  # tops and dresses
    shape: dict[str, float] = field(default_factory=dict)


@dataclass
class Geometry:
    outline: list[tuple[float, float]]  # the silhouette polygon
    seams: list[list[tuple[float, float]]]  # open polylines inside it (sketch only)
    logo_anchor: tuple[float, float, float]  # centre x, centre y, side (of the width)


def sample_garment(rng: np.random.Generator, category: str) -> GarmentSpec:
    """Draw a garment of ``category``: colour, pattern (half solid), logo (about half) and shape parameters."""
    if category not in CATEGORIES:
        raise ValueError(f"category={category!r} must be one of {CATEGORIES}")
    u = rng.uniform
    colour = str(rng.choice(list(COLOURS)))
    pattern = "solid" if rng.random() < 0.5 else str(rng.choice(PATTERNS[1:]))
    pattern_colour = _contrasting(rng, [colour], 90.0) if pattern != "solid" else None
    glyph = str(rng.choice(GLYPHS)) if rng.random() < 0.55 else None
    logo_colour = _contrasting(rng, [c for c in (colour, pattern_colour) if c], 120.0) if glyph else None
    neckline = str(rng.choice(NECKLINES)) if category in TOPS + ("dress",) else None
    if category in TOPS:
        long_sleeves = category == "jacket" or (category == "shirt" and rng.random() < 0.6)
        shape = {
            "y0": u(0.08, 0.12), "shoulder": u(0.20, 0.26), "body": u(0.18, 0.23), "flare": u(-0.01, 0.04),
            "armpit": u(0.16, 0.22),
            "hem": {"t-shirt": u(0.78, 0.9), "shirt": u(0.82, 0.92), "jacket": u(0.84, 0.94)}[category],
            "sleeve": u(0.30, 0.36) if long_sleeves else u(0.10, 0.18),
            "sleeve_angle": u(52, 62) if long_sleeves else u(30, 45), "sleeve_width": u(0.08, 0.11),
        }
        if category == "jacket":
            shape["body"] += 0.02
    elif category == "dress":
        shape = {"y0": u(0.06, 0.1), "shoulder": u(0.11, 0.15), "body": u(0.16, 0.21), "armpit": u(0.15, 0.2),
                 "waist": u(0.34, 0.44), "waist_width": u(0.13, 0.17), "hem": u(0.72, 0.94), "hem_width": u(0.26, 0.44)}
    elif category == "skirt":
        waist_width = u(0.17, 0.23)
        shape = {"waist": u(0.10, 0.18), "waist_width": waist_width, "hem": u(0.55, 0.92),
                 "hem_width": waist_width + u(0.03, 0.22), "pleats": float(rng.integers(0, 4))}
    else:  # trousers
        shape = {"waist": u(0.06, 0.10), "waist_width": u(0.18, 0.24), "crotch": u(0.30, 0.38), "hem": u(0.84, 0.95),
                 "flare": u(-0.03, 0.04), "leg": u(0.10, 0.14)}
    if neckline:
        half, depth = {"crew": (u(0.07, 0.1), u(0.03, 0.05)), "round": (u(0.07, 0.1), u(0.06, 0.09)),
                       "v": (u(0.07, 0.1), u(0.10, 0.18)), "square": (u(0.07, 0.1), u(0.05, 0.08)),
                       "boat": (u(0.12, 0.15), u(0.02, 0.04))}[neckline]
        shape.update(neck=min(half, shape["shoulder"] - 0.03), neck_depth=depth)
    shape["logo_scale"] = u(0.8, 1.2)
    return GarmentSpec(category, colour, pattern, pattern_colour, u(0.08, 0.15), bool(rng.random() < 0.5), glyph,
                       logo_colour, neckline, {key: round(float(value), 4) for key, value in shape.items()})


def _neckline(kind: str, half: float, depth: float, y0: float) -> list[tuple[float, float]]:
    """Left neck point -> right neck point, dipping into the garment."""
    if kind == "v":
        return [(0.5 - half, y0), (0.5, y0 + depth), (0.5 + half, y0)]
    if kind == "square":
        return [(0.5 - half, y0), (0.5 - half, y0 + depth), (0.5 + half, y0 + depth), (0.5 + half, y0)]
    return [(0.5 - half * math.cos(t), y0 + depth * math.sin(t)) for t in np.linspace(0, math.pi, 9)]


def _mirror(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(1.0 - x, y) for x, y in reversed(points)]


def garment_geometry(spec: GarmentSpec) -> Geometry:
    """The silhouette polygon, seam lines and logo anchor of ``spec`` (normalised coordinates)."""
    s, category = spec.shape, spec.category
    seams: list[list[tuple[float, float]]] = []
    if category in TOPS:
        y0, drop = s["y0"], 0.03
        angle = math.radians(s["sleeve_angle"])
        direction, normal = np.array([math.cos(angle), math.sin(angle)]), np.array([-math.sin(angle), math.cos(angle)])
        shoulder = np.array([0.5 + s["shoulder"], y0 + drop])
        cuff_out = shoulder + s["sleeve"] * direction
        cuff_in = cuff_out + s["sleeve_width"] * normal
        armpit = (0.5 + s["body"], y0 + s["armpit"])
        hem = (0.5 + s["body"] + s["flare"], s["hem"])
        right = [tuple(shoulder), tuple(cuff_out), tuple(cuff_in), armpit, hem]
        neck = _neckline(spec.neckline or "crew", s["neck"], s["neck_depth"], y0)
        outline = neck + right + _mirror(right)
        seams += [[tuple(shoulder), armpit], _mirror([tuple(shoulder), armpit])]  # armholes
        seams.append([(x, y + 0.025) for x, y in neck[1:-1]] or [(0.5, y0 + 0.025)])  # neck rib
        seams.append([(1.0 - hem[0] + 0.02, hem[1] - 0.035), (hem[0] - 0.02, hem[1] - 0.035)])  # hem stitch
        if s["sleeve"] > 0.25:  # cuffs
            back = 0.05 * direction
            cuff = [tuple(cuff_out - back + 0.01 * normal), tuple(cuff_in - back - 0.01 * normal)]
            seams += [cuff, _mirror(cuff)]
        if category in ("shirt", "jacket"):  # placket / zip
            seams.append([(0.5, y0 + s["neck_depth"] + 0.02), (0.5, s["hem"] - 0.045)])
        if category == "jacket":  # pockets
            y = s["hem"] - 0.14
            pocket = [(0.5 + 0.05, y), (0.5 + s["body"] - 0.04, y)]
            seams += [pocket, _mirror(pocket)]
        centre_x = 0.5 if category == "t-shirt" else 0.5 + s["body"] * 0.5
        anchor = (centre_x, y0 + s["armpit"] + 0.03, 0.2 if category == "t-shirt" else 0.15)
    elif category == "dress":
        y0 = s["y0"]
        right = [(0.5 + s["shoulder"], y0), (0.5 + s["shoulder"] + 0.01, y0 + s["armpit"] * 0.6),
                 (0.5 + s["body"], y0 + s["armpit"]), (0.5 + s["waist_width"], s["waist"]),
                 (0.5 + s["hem_width"], s["hem"]), (0.5 + s["hem_width"] / 2, s["hem"] + 0.02)]
        neck = _neckline(spec.neckline or "crew", s["neck"], s["neck_depth"], y0)
        outline = neck + right + [(0.5, s["hem"] + 0.025)] + _mirror(right)
        seams.append([(0.5 - s["waist_width"] + 0.01, s["waist"]), (0.5 + s["waist_width"] - 0.01, s["waist"])])
        seams.append([(x, y + 0.025) for x, y in neck[1:-1]] or [(0.5, y0 + 0.025)])
        anchor = (0.5, (y0 + s["armpit"] + s["waist"]) / 2 + 0.02, 0.17)
    elif category == "skirt":
        waist, hem = s["waist"], s["hem"]
        right = [(0.5 + s["waist_width"], waist), (0.5 + s["hem_width"], hem), (0.5 + s["hem_width"] / 2, hem + 0.02)]
        outline = right + [(0.5, hem + 0.025)] + _mirror(right)
        band = waist + 0.05
        seams.append([(0.5 - s["waist_width"] + 0.01, band), (0.5 + s["waist_width"] - 0.01, band)])
        pleats = int(s["pleats"])
        for k in range(1, pleats + 1):
            t = k / (pleats + 1) * 2 - 1  # -1..1 across the skirt
            seams.append([(0.5 + t * s["waist_width"] * 0.8, band + 0.03),
                          (0.5 + t * s["hem_width"] * 0.8, hem - 0.03)])
        anchor = (0.5 + s["waist_width"] * 0.45, band + 0.1, 0.16)
    else:  # trousers
        waist, crotch, hem = s["waist"], s["crotch"], s["hem"]
        outer = s["waist_width"] + s["flare"]
        right = [(0.5 + s["waist_width"] + 0.01, crotch), (0.5 + outer, hem), (0.5 + max(0.05, outer - s["leg"]), hem),
                 (0.525, crotch)]  # the legs part from the crotch down (visible at 64 px)
        outline = [(0.5 - s["waist_width"], waist), (0.5 + s["waist_width"], waist)] + right + _mirror(right)
        band = waist + 0.045
        seams.append([(0.5 - s["waist_width"] + 0.01, band), (0.5 + s["waist_width"] - 0.01, band)])
        seams.append([(0.5, band + 0.02), (0.5, crotch - 0.04)])  # fly
        anchor = (0.5 + s["waist_width"] * 0.5, crotch - 0.04, 0.13)
    clipped = [(min(0.98, max(0.02, x)), min(0.98, max(0.02, y))) for x, y in outline]
    return Geometry(clipped, seams, (anchor[0], anchor[1], anchor[2] * s.get("logo_scale", 1.0)))


# -- 3. drawing: flat image, sketch, masks, logo --------------------------------------------------------
@dataclass
class GarmentDrawing:
    spec: GarmentSpec
    flat: Image.Image  # (W, H) RGB, the garment on white
    sketch: Image.Image  # (W, H) RGB, black lines on white
    mask: np.ndarray  # (H, W) bool silhouette
    logo_box: Optional[tuple[int, int, int, int]]  # x0, y0, x1, y1 (exclusive) on the flat image
    logo: Optional[Image.Image]  # (W, H) RGB, the glyph on white (the LEM's logo input)
    seams: list[list[tuple[int, int]]]  # in pixels, as drawn on the sketch
    outline: list[tuple[int, int]]  # the silhouette polygon in pixels

    def logo_mask(self) -> Image.Image:
        """White = the logo box (the LEM's mask), at the flat image's size."""
        mask = np.zeros(self.mask.shape, np.uint8)
        if self.logo_box:
            x0, y0, x1, y1 = self.logo_box
            mask[y0:y1, x0:x1] = 255
        return Image.fromarray(mask, "L")


def _pixels(points, size: tuple[int, int]) -> list[tuple[int, int]]:
    width, height = size
    return [(int(round(x * (width - 1))), int(round(y * (height - 1)))) for x, y in points]


def pattern_mask(spec: GarmentSpec, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: where the pattern colour goes (anywhere on the canvas; cut to the garment by the caller)."""
    width, height = size
    period = max(4, int(round(spec.pattern_period * width)))
    ys, xs = np.mgrid[0:height, 0:width]
    if spec.pattern == "stripes":
        return ((xs if spec.pattern_vertical else ys) % period) < max(2, period // 2)
    if spec.pattern == "checks":
        half = max(2, period // 2)
        return ((xs // half) + (ys // half)) % 2 == 1
    if spec.pattern == "dots":
        radius = max(1.0, period * 0.3)
        dx = (xs % period) - (period - 1) / 2
        dy = (ys % period) - (period - 1) / 2
        return dx * dx + dy * dy <= radius * radius
    return np.zeros((height, width), bool)


def glyph_mask(glyph: str, side: int) -> np.ndarray:
    """(side, side) bool: ``glyph`` filling a square box."""
    canvas = np.zeros((side, side), np.uint8)
    scale = side - 1

    def poly(points) -> None:
        cv2.fillPoly(canvas, [np.round(np.asarray(points, np.float64) * scale).astype(np.int32)], 1)

    if glyph == "star":
        angles = -math.pi / 2 + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 0.5, 0.21)
        poly(np.stack([0.5 + radii * np.cos(angles), 0.53 + radii * np.sin(angles)], 1))
    elif glyph == "circle":
        cv2.circle(canvas, (scale // 2, scale // 2), max(1, int(round(0.45 * scale))), 1, -1)
    elif glyph == "triangle":
        poly([(0.5, 0.06), (0.94, 0.9), (0.06, 0.9)])
    elif glyph == "square":
        poly([(0.12, 0.12), (0.88, 0.12), (0.88, 0.88), (0.12, 0.88)])
    elif glyph == "cross":
        poly([(0.35, 0.06), (0.65, 0.06), (0.65, 0.94), (0.35, 0.94)])
        poly([(0.06, 0.35), (0.94, 0.35), (0.94, 0.65), (0.06, 0.65)])
    elif glyph == "heart":
        t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        poly(np.stack([0.5 + x / 36, 0.45 + y / 36], 1))
    else:
        raise ValueError(f"glyph={glyph!r} must be one of {GLYPHS}")
    return canvas > 0


def fit_box(region: np.ndarray, centre: tuple[float, float], side: int,
            min_side: int) -> Optional[tuple[int, int, int, int]]:
    """The largest square box (side <= ``side``) wholly inside ``region``, near ``centre`` (moving down first)."""
    height, width = region.shape
    inside = cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # a 1 px margin
    # integral image: a box is inside when its pixel count equals its area
    integral = cv2.integral(inside.astype(np.uint8))
    for current in range(side, min_side - 1, -1):
        for dy in [0, 1, 2, 3, -1, -2, 4, 5, 6, -3, 7, 8]:
            for dx in (0, -1, 1, -2, 2):
                x0 = int(round(centre[0] - current / 2)) + dx
                y0 = int(round(centre[1] - current / 2)) + dy
                x1, y1 = x0 + current, y0 + current
                if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                    continue
                count = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
                if count == current * current:
                    return x0, y0, x1, y1
    return None


def paint(canvas: np.ndarray, region: np.ndarray, spec: GarmentSpec, size: tuple[int, int]) -> None:
    """Fill ``region`` of ``canvas`` (H, W, 3) with the garment's colour and pattern (in place)."""
    canvas[region] = COLOURS[spec.colour]
    if spec.pattern_colour:
        canvas[region & pattern_mask(spec, size)] = COLOURS[spec.pattern_colour]


def draw_logo(canvas: np.ndarray, box: tuple[int, int, int, int], spec: GarmentSpec) -> np.ndarray:
    """Draw the glyph into ``box`` of ``canvas`` in the logo colour; -> its (H, W) bool pixels."""
    x0, y0, x1, y1 = box
    pixels = np.zeros(canvas.shape[:2], bool)
    pixels[y0:y1, x0:x1] = glyph_mask(spec.glyph or "circle", x1 - x0)
    canvas[pixels] = COLOURS[spec.logo_colour or "black"]
    return pixels


def draw_garment(spec: GarmentSpec, size: tuple[int, int]) -> GarmentDrawing:
    """The flat product image, sketch, silhouette and logo of ``spec`` at ``size`` (W, H)."""
    width, height = size
    geometry = garment_geometry(spec)
    outline = _pixels(geometry.outline, size)
    silhouette = np.zeros((height, width), np.uint8)
    cv2.fillPoly(silhouette, [np.asarray(outline, np.int32)], 1)
    mask = silhouette > 0

    # 3a. the flat product image
    flat = np.full((height, width, 3), 255, np.uint8)
    paint(flat, mask, spec, size)
    logo_box, logo = None, None
    if spec.glyph:
        cx, cy, side = geometry.logo_anchor
        logo_box = fit_box(mask, (cx * (width - 1), cy * (height - 1)), max(6, int(round(side * width))),
                           max(5, width // 12))
    if logo_box:
        draw_logo(flat, logo_box, spec)
        # the LEM's logo input: the glyph alone on white, large
        logo_canvas = np.full((height, width, 3), 255, np.uint8)
        side = int(min(width, height) * 0.8)
        x0, y0 = (width - side) // 2, (height - side) // 2
        draw_logo(logo_canvas, (x0, y0, x0 + side, y0 + side), spec)
        logo = Image.fromarray(logo_canvas)
    else:
        spec = replace(spec, glyph=None, logo_colour=None)  # no room for it

    # 3b. the sketch: outline + seams, 1 px black lines
    sketch = np.full((height, width, 3), 255, np.uint8)
    cv2.polylines(sketch, [np.asarray(outline, np.int32)], True, (0, 0, 0), 1)
    seams = [_pixels(line, size) for line in geometry.seams]
    for line in seams:
        cv2.polylines(sketch, [np.asarray(line, np.int32)], False, (0, 0, 0), 1)
    sketch[~(cv2.dilate(silhouette, np.ones((3, 3), np.uint8)) > 0)] = 255  # nothing outside the garment
    return GarmentDrawing(spec, Image.fromarray(flat), Image.fromarray(sketch), mask, logo_box, logo, seams, outline)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def captions(spec: GarmentSpec) -> list[str]:
    """``["a red t-shirt with a star logo", "t-shirt, red, solid, star logo"]`` (trousers: "a pair of ...")."""
    words = " ".join(w for w in (spec.colour, PATTERN_WORDS[spec.pattern], spec.category) if w)
    text = f"a pair of {words}" if spec.category == "trousers" else f"{_article(words)} {words}"
    tags = [spec.category, spec.colour, spec.pattern]
    if spec.glyph:
        text += f" with {_article(spec.glyph)} {spec.glyph} logo"
        tags.append(f"{spec.glyph} logo")
    return [text, ", ".join(tags)]


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _named(name: Optional[str]) -> Optional[dict[str, Any]]:
    return {"name": name, "rgb": list(COLOURS[name])} if name else None


def garment_truth(drawing: GarmentDrawing) -> dict[str, Any]:
    """The manifest entry of one garment (everything an evaluation compares against)."""
    spec = drawing.spec
    return {
        "category": spec.category,
        "colour": _named(spec.colour),
        "pattern": {"kind": spec.pattern, "colour": _named(spec.pattern_colour),
                    "period_px": max(4, int(round(spec.pattern_period * drawing.mask.shape[1]))) if spec.pattern_colour
                    else None, "vertical": spec.pattern_vertical if spec.pattern == "stripes" else None},
        "logo": {"glyph": spec.glyph, "colour": _named(spec.logo_colour), "box": list(drawing.logo_box)}
        if drawing.logo_box else None,
        "neckline": spec.neckline,
        "shape": spec.shape,
        "bbox": _bbox(drawing.mask),
        "area": int(drawing.mask.sum()),
        "outline": [list(point) for point in drawing.outline],
        "seams": [[list(point) for point in line] for line in drawing.seams],
        "captions": captions(spec),
    }


# -- 4. people: the mannequin wearing the garments -------------------------------------------------------
@dataclass
class Worn:
    drawing: GarmentDrawing
    label: int  # ATR label of its region
    region: np.ndarray  # (H, W) bool: where the garment is seen on the person
    logo_box: Optional[tuple[int, int, int, int]]


@dataclass
class Scene:
    """One person: the image and each worn garment (top first, then bottom; or one dress)."""

    image: Image.Image
    garments: list[Worn]


def _outfit(drawings: list[GarmentDrawing]) -> Outfit:
    values: dict[str, Any] = {"top": "none", "bottom": "none", "dress": "none",
                              "top_colour": WHITE, "bottom_colour": WHITE, "dress_colour": WHITE}
    for drawing in drawings:
        spec = drawing.spec
        if spec.category == "dress":
            values["dress"] = "long" if spec.shape["hem"] > 0.86 else "short"
        elif spec.category in TOPS:
            values["top"] = "longsleeve" if spec.shape["sleeve"] > 0.25 else "tshirt"
        else:
            values["bottom"] = spec.category
    return Outfit(**values)


def _worn_logo_anchor(points: np.ndarray, category: str) -> tuple[tuple[float, float], float]:
    shoulders, hips = (points[11] + points[12]) / 2, (points[23] + points[24]) / 2
    shoulder_width = abs(points[11][0] - points[12][0])
    if category in TOPS + ("dress",):
        return tuple(shoulders + 0.32 * (hips - shoulders)), 0.3 * shoulder_width
    if category == "skirt":
        return tuple(hips + np.array([0.0, 0.1 * (hips[1] - shoulders[1])])), 0.25 * shoulder_width
    return tuple(points[23] + 0.3 * (points[25] - points[23])), 0.2 * shoulder_width


def dress_mannequin(drawings: list[GarmentDrawing], size: tuple[int, int], seed: int) -> Scene:
    """Draw a (slightly jittered) mannequin wearing ``drawings`` (a top and/or a bottom, or a dress)."""
    width, height = size
    mannequin = draw_mannequin(_outfit(drawings), size=size, jitter=5.0, seed=seed)
    image = np.asarray(mannequin.image).copy()
    # garments were drawn white: the red channel / 255 is the mannequin's shading there
    shade = image[..., 0].astype(np.float32) / 255.0
    worn = []
    for drawing in drawings:
        category = drawing.spec.category
        label = DRESS if category == "dress" else UPPER if category in TOPS else SKIRT if category == "skirt" else PANTS
        region = mannequin.labels == label
        if not region.any():
            raise SyntheticError(f"size {width}x{height}: the {category} is not visible on the mannequin")
        texture = np.full((height, width, 3), 255, np.uint8)
        paint(texture, region, drawing.spec, size)
        box = None
        if drawing.spec.glyph:
            centre, side = _worn_logo_anchor(mannequin.pose.points, category)
            box = fit_box(region, centre, int(round(side)), 3)
            if box:
                draw_logo(texture, box, drawing.spec)
        image[region] = np.clip(np.round(texture[region] * shade[region][:, None]), 0, 255).astype(np.uint8)
        worn.append(Worn(drawing, label, region, box))
    return Scene(Image.fromarray(image), worn)


# -- 5. one sample: garment i, its partner and the person wearing both ----------------------------------
@dataclass
class Sample:
    id: str
    garment: GarmentDrawing
    partner: Optional[GarmentDrawing]  # the other half of the outfit (None for a dress)
    scene: Optional[Scene]  # drawn only when a person kind is asked for


def make_sample(index: int, seed: int, split: str, size: tuple[int, int], people: bool, digits: int = 4) -> Sample:
    """Sample ``index`` (depends only on seed, split and index): category = CATEGORIES[index % 6]."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], index]))
    category = CATEGORIES[index % len(CATEGORIES)]
    garment = draw_garment(sample_garment(rng, category), size)
    partner = None
    if category in TOPS:
        partner = draw_garment(sample_garment(rng, str(rng.choice(BOTTOMS))), size)
    elif category in BOTTOMS:
        partner = draw_garment(sample_garment(rng, str(rng.choice(TOPS))), size)
    person_seed = int(rng.integers(2**31))
    scene = None
    if people:
        order = [d for d in (garment, partner) if d is not None]
        order.sort(key=lambda d: 0 if d.spec.category in TOPS + ("dress",) else 1)  # top first
        scene = dress_mannequin(order, size, person_seed)
    return Sample(f"{index:0{digits}d}", garment, partner, scene)


def _worn_of(sample: Sample, drawing: GarmentDrawing) -> Worn:
    assert sample.scene is not None
    return next(w for w in sample.scene.garments if w.drawing is drawing)


def _worn_truth(worn: Worn) -> dict[str, Any]:
    return {"label": worn.label, "bbox": _bbox(worn.region), "area": int(worn.region.sum()),
            "logo_box": list(worn.logo_box) if worn.logo_box else None}


def outfit_prompt(sample: Sample) -> str:
    """'a mannequin wearing a red t-shirt with a star logo and a pair of blue trousers'."""
    assert sample.scene is not None
    return "a mannequin wearing " + " and ".join(captions(w.drawing.spec)[0] for w in sample.scene.garments)


# -- 6. writers -----------------------------------------------------------------------------------------
def save_png(image: Image.Image, path: Path) -> str:
    """PNG without metadata (no timestamps: the same pixels give the same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", compress_level=6)
    return path.name


def _mask_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L")


def write_garmentbench(root: Path, samples: list[Sample]) -> list[dict[str, Any]]:
    color_pairs, sketch_pairs, logo_pairs, entries = [], [], [], []
    for sample in samples:
        drawing, name = sample.garment, f"{sample.id}.png"
        save_png(drawing.flat, root / "cloth" / name)
        save_png(drawing.sketch, root / "sketch" / name)
        save_png(Image.new("RGB", (32, 32), COLOURS[drawing.spec.colour]), root / "color" / name)
        save_png(_mask_image(drawing.mask), root / "silhouette" / name)
        files = {"cloth": f"cloth/{name}", "sketch": f"sketch/{name}", "color": f"color/{name}",
                 "silhouette": f"silhouette/{name}", "logo": None, "mask": None}
        text = captions(drawing.spec)
        color_pairs.append({"caption": text[0], "color": files["color"], "cloth": files["cloth"]})
        sketch_pairs.append({"cloth": files["cloth"], "sketch": files["sketch"], "caption": text})
        if drawing.logo is not None:
            save_png(drawing.logo, root / "logo" / name)
            save_png(drawing.logo_mask(), root / "mask" / name)
            files.update(logo=f"logo/{name}", mask=f"mask/{name}")
            logo_pairs.append({"logo": files["logo"], "sketch": files["sketch"], "mask": files["mask"],
                               "cloth": files["cloth"]})
        entries.append({"id": sample.id, "files": files, "garment": garment_truth(drawing)})
    for folder in ("logo", "mask"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for file_name, pairs in (("color_pair.json", color_pairs), ("sketch_pair.json", sketch_pairs),
                             ("logo_pair.json", logo_pairs)):
        (root / file_name).write_text(json.dumps(pairs, indent=1) + "\n", encoding="utf-8")
    return entries


def tryon_mask(region: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Where the new garment may go: the worn region dilated by ~W/32 px (a simple agnostic mask)."""
    radius = max(1, size[0] // 32)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(region.astype(np.uint8), kernel) > 0


def write_triplets(root: Path, samples: list[Sample], mode: str, size: tuple[int, int]) -> list[dict[str, Any]]:
    """person/ garment/ mask/ (the atelier layout of load_triplets); ``mode`` "tryon" dilates the mask."""
    entries = []
    for sample in samples:
        assert sample.scene is not None
        worn, name = _worn_of(sample, sample.garment), f"{sample.id}.png"
        mask = tryon_mask(worn.region, size) if mode == "tryon" else worn.region
        save_png(sample.scene.image, root / "person" / name)
        save_png(sample.garment.flat, root / "garment" / name)
        save_png(_mask_image(mask), root / "mask" / name)
        entries.append({
            "id": sample.id,
            "files": {"person": f"person/{name}", "garment": f"garment/{name}", "mask": f"mask/{name}"},
            "garment": garment_truth(sample.garment), "worn": _worn_truth(worn), "mask_bbox": _bbox(mask),
            "partner": garment_truth(sample.partner) if sample.partner else None,
            "partner_worn": _worn_truth(_worn_of(sample, sample.partner)) if sample.partner else None,
            "prompt": outfit_prompt(sample),
        })
    return entries


def write_dressing(root: Path, samples: list[Sample]) -> list[dict[str, Any]]:
    """sample_<id>/target.png, garment_<k>_<category>.png, mask_<k>.png, prompt.txt."""
    entries = []
    for sample in samples:
        assert sample.scene is not None
        folder = root / f"sample_{sample.id}"
        save_png(sample.scene.image, folder / "target.png")
        prompt = outfit_prompt(sample)
        (folder / "prompt.txt").write_text(prompt + "\n", encoding="utf-8")
        slots = []
        for k, worn in enumerate(sample.scene.garments):
            category = DRESSING_CATEGORY[worn.drawing.spec.category]
            garment_file = save_png(worn.drawing.flat, folder / f"garment_{k}_{category}.png")
            mask_file = save_png(_mask_image(worn.region), folder / f"mask_{k}.png")
            slots.append({"slot": k, "category": category, "garment_file": garment_file, "mask_file": mask_file,
                          "garment": garment_truth(worn.drawing), "worn": _worn_truth(worn)})
        entries.append({"id": sample.id, "folder": folder.name, "target": "target.png", "prompt": prompt,
                        "garments": slots})
    return entries


def write_manifest(path: Path, header: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    """One JSON object: the header's keys, then ``"samples"`` with one sample per line (compact, diffable)."""
    lines = ["{"] + [f" {json.dumps(key)}: {json.dumps(value, separators=(', ', ': '))},"
                     for key, value in header.items()]
    lines.append(' "samples": [')
    lines += [json.dumps(entry, separators=(",", ":")) + ("," if k < len(entries) - 1 else "")
              for k, entry in enumerate(entries)]
    path.write_text("\n".join(lines) + "\n ]\n}\n", encoding="utf-8")


# -- 7. the whole dataset -------------------------------------------------------------------------------
@dataclass
class Summary:
    out: Path
    counts: dict[str, int]  # "garmentbench/color", ".../gam", ".../lem", "tryon", "tryoff", "dressing"
    seconds: float

    def describe(self) -> str:
        parts = ", ".join(f"{key} {value}" for key, value in self.counts.items())
        return f"wrote {self.out}: {parts} ({self.seconds:.1f} s)"


def parse_size(text: str) -> tuple[int, int]:
    """'64x80' -> (64, 80) = (W, H)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise SyntheticError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 64x80") from None
    return width, height


def generate(out: str | Path, count: int = 200, seed: int = 0, size: tuple[int, int] = (64, 80),
             kinds: Sequence[str] = KINDS, split: str = "train") -> Summary:
    """Write ``count`` samples of each of ``kinds`` to ``out`` (a new or empty folder); see the module docstring."""
    start = time.perf_counter()
    out = Path(out)
    kinds = tuple(dict.fromkeys(kinds))
    for kind in kinds:
        if kind not in KINDS:
            raise SyntheticError(f"kind {kind!r}: must be one of {', '.join(KINDS)}")
    if not kinds:
        raise SyntheticError("no kinds to write")
    if split not in SPLITS:
        raise SyntheticError(f"split {split!r}: must be one of {', '.join(SPLITS)}")
    if count < 1:
        raise SyntheticError(f"count {count}: must be at least 1")
    if size[0] < MIN_SIZE[0] or size[1] < MIN_SIZE[1]:
        raise SyntheticError(f"size {size[0]}x{size[1]}: at least {MIN_SIZE[0]}x{MIN_SIZE[1]} "
                             "(the mannequin's smallest)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SyntheticError(f"{out} exists and is not an empty folder: refusing to overwrite it "
                             "(choose a new --out or remove it first)")
    people = any(kind != "garmentbench" for kind in kinds)
    digits = max(4, len(str(count - 1)))
    samples = [make_sample(index, seed, split, size, people, digits) for index in range(count)]

    out.mkdir(parents=True, exist_ok=True)
    header = {"generator": "training.synthetic", "version": VERSION, "seed": seed, "split": split,
              "size": list(size), "count": count, "boxes": "[x0, y0, x1, y1] pixels, x1/y1 exclusive",
              "colours": {name: list(rgb) for name, rgb in COLOURS.items()}}
    counts: dict[str, int] = {}
    for kind in kinds:
        root = out / kind
        if kind == "garmentbench":
            entries = write_garmentbench(root, samples)
            lem = sum(1 for entry in entries if entry["files"]["logo"])
            counts.update({"garmentbench/color": len(entries), "garmentbench/gam": len(entries),
                           "garmentbench/lem": lem})
        elif kind == "dressing":
            entries = write_dressing(root, samples)
            counts[kind] = len(entries)
        else:
            entries = write_triplets(root, samples, kind, size)
            counts[kind] = len(entries)
        write_manifest(out / f"{kind}.json", {**header, "kind": kind, "dataset": f"{kind}/"}, entries)
    return Summary(out, counts, time.perf_counter() - start)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="a new or empty folder")
    parser.add_argument("--count", type=int, default=200, help="samples per kind (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="64x80", help="WIDTHxHEIGHT of every image (default 64x80)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {','.join(KINDS)}")
    parser.add_argument("--split", default="train", choices=tuple(SPLITS),
                        help="test = a held-out seed stream (never the train samples of the same --seed)")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.out, args.count, args.seed, parse_size(args.size),
                           [kind.strip() for kind in args.kinds.split(",") if kind.strip()], args.split)
    except SyntheticError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary.describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
