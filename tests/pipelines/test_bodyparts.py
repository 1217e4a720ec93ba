"""CatVTON's agnostic try-on mask rules on drawn mannequins whose parts are known exactly (measured IoU)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.preprocess import mannequin as mq
from pipelines.preprocess.bodyparts import (
    AGNOSTIC_RULES,
    ATR,
    BodyParse,
    dense_parts,
    hull_fill,
    mask_kernels,
    tryon_mask,
)
from pipelines.preprocess.mannequin import Outfit, draw_mannequin
from pipelines.preprocess.pose import detect_body_landmarks
from pipelines.types import TRYON_CATEGORIES

OUTFITS = {
    "tee+shorts": Outfit(),
    "longsleeve+trousers": Outfit(top="longsleeve", bottom="trousers"),
    "dress": Outfit(dress="short"),
    "tank+skirt": Outfit(top="tank", bottom="skirt"),
}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _mask(parse: BodyParse, category: str) -> np.ndarray:
    return np.asarray(tryon_mask(parse, category)) > 0


def _truth(m) -> BodyParse:
    """The parse an ideal parser pair gives: exact ATR labels and exact DensePose parts."""
    return BodyParse(m.image.size, m.labels > 0, m.labels, m.pose, "segformer", m.parts)


def _share(mask: np.ndarray, region: np.ndarray) -> float:
    return float(mask[region].mean()) if region.any() else 0.0


def _kept(mask: np.ndarray, region: np.ndarray, rim: int = 2) -> float:
    """Share of ``region`` repainted, its ``rim`` px edge excepted. The rules' last dilation reaches 1-2 px into
    strongly protected regions (face, hands); the blur reaches ~b/2 = 10 px into weakly protected ones."""
    import cv2

    inner = cv2.erode(region.astype(np.uint8), np.ones((2 * rim + 1, 2 * rim + 1), np.uint8)) > 0
    return _share(mask, inner)


@pytest.fixture(scope="module")
def people():
    return {name: draw_mannequin(outfit) for name, outfit in OUTFITS.items()}


def test_mannequin_is_deterministic_and_its_labels_match_its_drawing(people):
    again = draw_mannequin(OUTFITS["tee+shorts"])
    m = people["tee+shorts"]
    assert np.array_equal(np.asarray(again.image), np.asarray(m.image)) and np.array_equal(again.labels, m.labels)
    top = np.asarray(m.image)[m.labels == mq.UPPER].astype(int)
    assert (top[:, 0] - top[:, 2] > 80).all()  # every pixel labelled upper-clothes is the red top
    assert not (m.labels[np.asarray(m.image).sum(axis=2) == sum(mq.BACKGROUND)] > 0).any()
    parts = np.stack(list(m.parts.values()))
    assert (parts.sum(axis=0) <= 1).all()  # each pixel belongs to one body part
    jittered = draw_mannequin(OUTFITS["tee+shorts"], jitter=3.0, seed=1)
    assert not np.array_equal(jittered.labels, m.labels)


def test_official_rules_on_exact_parts(people):
    """What each category repaints and keeps, on the exact parse of a person in a t-shirt and shorts."""
    m = people["tee+shorts"]
    labels, parts = m.labels, m.parts
    truth = _truth(m)
    tee, shorts, hair = labels == mq.UPPER, labels == mq.PANTS, labels == mq.HAIR
    face = labels == mq.FACE
    shoes = np.isin(labels, [mq.LEFT_SHOE, mq.RIGHT_SHOE])
    arms, hands = parts["big arms"] | parts["forearms"], parts["hands"]
    legs = parts["thighs"] | parts["legs"]
    masks = {category: _mask(truth, category) for category in TRYON_CATEGORIES}

    upper = masks["upper"]
    assert _share(upper, tee) == 1.0 and _share(upper, arms & ~tee) > 0.97  # sleeves may grow to the wrists
    for kept in (face, hair, hands):
        assert _kept(upper, kept) < 0.02
    for kept in (shorts, legs & ~tee):
        assert _kept(upper, kept, rim=10) < 0.02
    assert _share(upper, shoes) == 0
    lower = masks["lower"]
    assert _share(lower, shorts) == 1.0 and _share(lower, legs & ~shorts & ~tee) > 0.97  # trousers may grow to the ankles
    for kept in (face, hair, hands):
        assert _kept(lower, kept) < 0.02
    assert _kept(lower, arms, rim=10) < 0.02 and _share(lower, shoes) < 0.4
    assert _share(lower, tee & (np.arange(labels.shape[0])[:, None] < 220)) < 0.02  # the chest of the tee stays
    for category in ("dress", "full"):
        mask = masks[category]
        assert _share(mask, tee | shorts | legs | arms) > 0.97
        for kept in (face, hair, hands):
            assert _kept(mask, kept) < 0.02
        assert _share(mask, shoes) < 0.4
    # A dress on the same body (same skeleton) lies inside the dress mask of the t-shirt-and-shorts photo:
    # the mask is wide enough to grow the dress, gap between the legs included.
    dress_region = people["dress"].labels == mq.DRESS
    assert _share(masks["dress"], dress_region) > 0.97
    assert _share(masks["dress"], dress_region & (labels == 0)) > 0.9  # where the dress spreads past the body
    assert _share(masks["upper"], dress_region & (np.arange(labels.shape[0])[:, None] > 300)) < 0.02
    assert _share(masks["inner"], tee) == 1.0 and _kept(masks["inner"], shorts, rim=10) < 0.02
    assert _share(masks["outer"], arms) > 0.97 and _kept(masks["outer"], shorts, rim=10) < 0.02


def test_official_category_rules_for_other_garments(people):
    dress_wearer = _truth(people["dress"])
    dress = people["dress"].labels == mq.DRESS
    # upper and lower both repaint a worn dress (it is upper-clothes and skirt at once)
    assert _share(_mask(dress_wearer, "upper"), dress) > 0.5 and _share(_mask(dress_wearer, "lower"), dress) > 0.5
    skirt_wearer = people["tank+skirt"]
    skirt = skirt_wearer.labels == mq.SKIRT
    assert _kept(_mask(_truth(skirt_wearer), "upper"), skirt, rim=10) < 0.02  # upper keeps the skirt
    # overall keeps a scarf: accessories are never repainted
    labels = people["tee+shorts"].labels.copy()
    labels[115:165, 165:220] = ATR["scarf"]
    scarf = labels == ATR["scarf"]
    parse = BodyParse(labels.shape[::-1], labels > 0, labels, people["tee+shorts"].pose, "segformer",
                      people["tee+shorts"].parts)
    assert _kept(_mask(parse, "full"), scarf, rim=10) < 0.02 and _share(_mask(_truth(people["tee+shorts"]), "full"), scarf) > 0.9


def test_kernels_hull_and_blur_values():
    assert mask_kernels((768, 1024)) == (5, 41) and mask_kernels((384, 512)) == (3, 21)
    ring = np.zeros((60, 60), bool)
    ring[10:50, 10:50] = True
    ring[20:40, 20:50] = False  # a C shape
    assert hull_fill(ring)[30, 30] and not hull_fill(ring)[5, 5]
    assert set(AGNOSTIC_RULES) == set(TRYON_CATEGORIES)


@pytest.mark.parametrize("name", list(OUTFITS))
def test_estimated_parts_reproduce_the_exact_rules(people, name):
    """Body parts estimated from the pose (our DensePose substitute) give the mask the exact parts give."""
    m = people[name]
    estimated = dense_parts(m.pose, m.labels > 0)
    assert min(_iou(estimated[part], m.parts[part]) for part in ("torso", "legs")) > 0.8
    parse = BodyParse(m.image.size, m.labels > 0, m.labels, m.pose, "segformer")
    for category in TRYON_CATEGORIES:
        assert _iou(_mask(parse, category), _mask(_truth(m), category)) > 0.88, category


def test_offline_parse_follows_the_rules_where_it_can(people):
    """Mediapipe gives no clothes labels; measured IoU with the exact-parse mask (tee and shorts)."""
    from pipelines.preprocess.masks import AutoMasker

    m = people["tee+shorts"]
    assert detect_body_landmarks(m.image) is not None  # the drawn figure is found as a person
    parse = AutoMasker(segformer_location=None).parse(m.image)
    measured = {category: _iou(_mask(parse, category), _mask(_truth(m), category)) for category in TRYON_CATEGORIES}
    assert min(measured[c] for c in ("upper", "dress", "full", "inner", "outer")) > 0.8, measured
    assert measured["lower"] > 0.65, measured
    face, hands = m.labels == mq.FACE, m.parts["hands"]
    for category in TRYON_CATEGORIES:
        mask = _mask(parse, category)
        assert _share(mask, face & (np.arange(face.shape[0])[:, None] < 90)) < 0.05 and _share(mask, hands) < 0.2
