"""Pose skeletons: mediapipe fallback on a real photo, OpenPose drawing and presets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines.preprocess.pose import (
    OPENPOSE_COLORS,
    OPENPOSE_NAMES,
    PoseEstimator,
    draw_openpose,
    list_pose_presets,
    load_pose_preset,
)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def test_mediapipe_skeleton_from_a_real_photo(astronaut):
    result = PoseEstimator(location=None).estimate(astronaut, 384, 512)
    skeleton, keypoints, source = result  # unpacks like a tuple
    assert source == "mediapipe" and skeleton.size == (384, 512) and len(keypoints) == 18
    named = dict(zip(OPENPOSE_NAMES, keypoints))
    for part in ("nose", "neck", "right_shoulder", "left_shoulder"):
        assert named[part] is not None, part
    # The subject faces the camera: her right shoulder is on the image's left.
    assert named["right_shoulder"][0] < named["neck"][0] < named["left_shoulder"][0]
    assert abs(named["neck"][0] - (named["right_shoulder"][0] + named["left_shoulder"][0]) / 2) < 1e-6
    assert named["nose"][1] < named["neck"][1]
    assert 0.35 < named["neck"][1] < 0.6 and 0.1 < named["nose"][1] < 0.35
    pixels = np.asarray(skeleton)
    assert (pixels.sum(axis=2) > 0).mean() > 0.005  # something drawn ...
    neck = (int(named["neck"][0] * 384), int(named["neck"][1] * 512))
    assert tuple(pixels[neck[1], neck[0]]) == OPENPOSE_COLORS[1]  # ... with OpenPose colours


def test_unavailable_openpose_falls_back_and_says_why(astronaut):
    estimator = PoseEstimator()  # lllyasviel/Annotators: not reachable in tests
    result = estimator.estimate(astronaut)
    assert result.source.startswith("mediapipe (OpenPose unavailable")
    assert estimator.openpose_error and result.image.size == astronaut.size


def test_no_person_is_a_clear_error():
    with pytest.raises(ValueError, match="no person was found"):
        PoseEstimator(location=None).estimate(Image.new("RGB", (256, 256), (90, 90, 90)))


def test_presets_load_and_draw():
    names = list_pose_presets()
    assert {"standing_front", "walking", "hands_on_hips", "three_quarter"} <= set(names)
    for name in names:
        preset = load_pose_preset(name)
        assert len(preset.keypoints) == 18 and preset.title
        image = draw_openpose(preset.keypoints, 384, 512)
        assert image.size == (384, 512) and np.asarray(image).any()
    with pytest.raises(ValueError, match="pose preset 'moonwalk' does not exist"):
        load_pose_preset("moonwalk")


def test_draw_openpose_layout_and_errors():
    keypoints = [None] * 18
    keypoints[1] = (0.5, 0.3)
    keypoints[2] = (0.3, 0.3)
    image = np.asarray(draw_openpose(keypoints, 100, 100))
    assert tuple(image[30, 50]) == OPENPOSE_COLORS[1] and tuple(image[30, 30]) == OPENPOSE_COLORS[2]
    assert image[30, 40].any() and not image[80, 80].any()  # the neck-shoulder limb, black elsewhere
    two_people = draw_openpose([keypoints, [None] * 18], 100, 100)
    assert np.array_equal(np.asarray(two_people), image)
    with pytest.raises(ValueError, match="18 OpenPose body points"):
        draw_openpose([(0.5, 0.5)] * 5, 100, 100)


def _write_random_openpose_folder(folder):
    """The three files lllyasviel/Annotators holds, with random weights in their published key layouts."""
    import torch
    from controlnet_aux.open_pose.face import FaceNet
    from controlnet_aux.open_pose.model import bodypose_model, handpose_model

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    for model, filename in ((bodypose_model(), "body_pose_model.pth"), (handpose_model(), "hand_pose_model.pth")):
        # The published files name tensors without the top-level block prefix (controlnet-aux's transfer()).
        state = {key.split(".", 1)[1]: value for key, value in model.state_dict().items()}
        torch.save(state, folder / filename)
    torch.save(FaceNet().state_dict(), folder / "facenet.pth")


@pytest.mark.slow
def test_openpose_loads_from_a_local_annotators_folder(tmp_path, astronaut):
    folder = tmp_path / "Annotators"
    _write_random_openpose_folder(folder)
    estimator = PoseEstimator(location=folder)
    result = estimator.estimate(astronaut, 384, 512)
    assert estimator.openpose_error is None, estimator.openpose_error
    # Random weights rarely find a body; either way the real detector ran and the result is reported.
    assert result.source in ("openpose", "mediapipe (OpenPose found no person)")
    assert result.image.size == (384, 512)
