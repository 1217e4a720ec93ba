"""SCHP, CatVTON's human parser: official key layout, strict loading, pre/post-processing values, the AutoMasker
path with its fallbacks, and the official agnostic-mask rules on both label maps (LIP + ATR)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.core.presets import SchpWeights, load_preset
from pipelines.preprocess import mannequin as mq
from pipelines.preprocess.bodyparts import ATR, LIP, LIP_LABELS, SEGFORMER_LABELS, BodyParse, tryon_mask
from pipelines.preprocess.mannequin import Outfit, draw_mannequin
from pipelines.preprocess.masks import AutoMasker, write_tiny_segformer
from pipelines.preprocess.schp import (
    FULL_SIZE,
    MEAN,
    SCHP_FILES,
    STD,
    SchpNetwork,
    SchpParser,
    load_schp,
    save_schp,
    schp_affine,
    schp_box,
    schp_input,
    schp_labels,
    tiny_schp,
    write_tiny_schp,
)
from pipelines.types import TRYON_CATEGORIES, CheckpointError


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("schp")
    return root, write_tiny_schp(root)


def _on(mask) -> np.ndarray:
    return np.asarray(mask) > 0


# ------------------------------------------------------------------------------------------ network layout
def _official_parameter_count(num_classes: int) -> int:
    """AugmentCE2P resnet101's parameters, counted from the official constructor's arguments (not our code)."""

    def conv(cin, cout, k=1, bias=False):
        return cin * cout * k * k + (cout if bias else 0)

    def bn(c):  # InPlace-ABN: weight + bias (running statistics are buffers)
        return 2 * c

    total = conv(3, 64, 3) + bn(64) + conv(64, 64, 3) + bn(64) + conv(64, 128, 3) + bn(128)
    cin = 128
    for planes, blocks in ((64, 3), (128, 4), (256, 23), (512, 3)):
        for block in range(blocks):
            total += conv(cin, planes) + bn(planes) + conv(planes, planes, 3) + bn(planes)
            total += conv(planes, 4 * planes) + bn(4 * planes)
            if block == 0:
                total += conv(cin, 4 * planes) + bn(4 * planes)
            cin = 4 * planes
    total += 4 * (conv(2048, 512) + bn(512)) + conv(2048 + 4 * 512, 512, 3) + bn(512)  # PSP
    total += sum(conv(c, 256) + bn(256) for c in (256, 512, 1024)) + conv(256, 2, 3, True) + conv(6, 2, 1, True)
    total += conv(512, 256) + bn(256) + conv(256, 48) + bn(48) + conv(304, 256) + bn(256) + conv(256, 256) + bn(256)
    total += conv(256, num_classes, 1, True)  # decoder
    total += conv(1024, 256) + bn(256) + conv(256, num_classes, 1, True)  # fushion
    return total


def test_full_size_network_has_the_official_keys_and_shapes():
    with torch.device("meta"):
        lip, atr = SchpNetwork(20, FULL_SIZE), SchpNetwork(18, FULL_SIZE)
    state = lip.state_dict()
    assert sum(p.numel() for p in lip.parameters()) == _official_parameter_count(20) == 66_723_928
    assert sum(p.numel() for p in atr.parameters()) == _official_parameter_count(18)
    # parameters + running statistics in fp32 = 254.97 MiB, the size the released .pth files are listed at
    assert sum(v.numel() for v in state.values()) * 4 / 2**20 == pytest.approx(254.97, abs=0.01)
    shapes = {
        "conv1.weight": (64, 3, 3, 3), "bn1.running_var": (64,), "conv3.weight": (128, 64, 3, 3),
        "layer1.0.conv1.weight": (64, 128, 1, 1), "layer1.0.downsample.0.weight": (256, 128, 1, 1),
        "layer1.0.downsample.1.running_mean": (256,), "layer3.22.conv3.weight": (1024, 256, 1, 1),
        "layer4.2.conv2.weight": (512, 512, 3, 3), "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
        "context_encoding.stages.0.1.weight": (512, 2048, 1, 1), "context_encoding.stages.3.2.running_var": (512,),
        "context_encoding.bottleneck.0.weight": (512, 4096, 3, 3), "edge.conv3.0.weight": (256, 1024, 1, 1),
        "edge.conv4.weight": (2, 256, 3, 3), "edge.conv5.weight": (2, 6, 1, 1),
        "decoder.conv2.0.weight": (48, 256, 1, 1), "decoder.conv3.0.weight": (256, 304, 1, 1),
        "decoder.conv3.3.bias": (256,), "decoder.conv4.weight": (20, 256, 1, 1),
        "fushion.0.weight": (256, 1024, 1, 1), "fushion.1.running_mean": (256,), "fushion.3.weight": (20, 256, 1, 1),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert tuple(atr.state_dict()["fushion.3.weight"].shape) == (18, 256, 1, 1)
    assert "layer3.23.conv1.weight" not in state and "layer4.0.conv2.weight" in state
    assert lip.layer4[0].conv2.dilation == (2, 2) and lip.layer4[0].conv2.stride == (1, 1)
    assert lip.layer3[0].conv2.stride == (2, 2) and lip.conv1.stride == (2, 2)
    assert not any(key.endswith("num_batches_tracked") for key in state)  # InPlace-ABN has none
    assert len(state) == 603


def test_tiny_checkpoints_are_in_the_official_layout_and_round_trip(tiny_files):
    _, files = tiny_files
    with torch.device("meta"):
        official_keys = set(SchpNetwork(20).state_dict())
    for seed, (dataset, path) in enumerate(files.items()):
        raw = torch.load(path, map_location="cpu", weights_only=True)
        assert set(raw) == {"state_dict"}
        keys = list(raw["state_dict"])
        assert all(key.startswith("module.") for key in keys)
        assert {key[len("module."):] for key in keys} == official_keys  # the same names as the real network
        model = load_schp(path, dataset)
        expected = tiny_schp(dataset, seed).state_dict()
        assert all(torch.equal(model.state_dict()[key], value) for key, value in expected.items())
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            outputs = model(x)
        assert outputs[0][1].shape == (1, {"lip": 20, "atr": 18}[dataset], 16, 16) and outputs[1][0].shape[1] == 2
        assert torch.isfinite(outputs[0][1]).all() and outputs[0][1].std() > 0


def test_bad_checkpoints_are_named(tiny_files, tmp_path):
    _, files = tiny_files
    blob = files["lip"].read_bytes()
    truncated = tmp_path / "truncated-lip.pth"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated-lip.pth.*(truncated|damaged)"):
        load_schp(truncated, "lip")

    state = torch.load(files["lip"], weights_only=True)["state_dict"]
    renamed = dict(state)
    renamed["module.layer3.5.conv2.weights"] = renamed.pop("module.layer3.5.conv2.weight")
    mis_keyed = tmp_path / "mis-keyed-lip.pth"
    torch.save({"state_dict": renamed}, mis_keyed)
    with pytest.raises(CheckpointError) as error:
        load_schp(mis_keyed, "lip")
    text = str(error.value)
    assert "mis-keyed-lip.pth" in text and "missing: layer3.5.conv2.weight" in text
    assert "unexpected: layer3.5.conv2.weights" in text

    reshaped = dict(state)
    reshaped["module.decoder.conv2.0.weight"] = torch.zeros(5, 32, 1, 1)
    mis_shaped = tmp_path / "mis-shaped-lip.pth"
    torch.save({"state_dict": reshaped}, mis_shaped)
    with pytest.raises(CheckpointError, match=r"mis-shaped-lip.pth.*decoder.conv2.0.weight \(file \(5, 32, 1, 1\), "
                                              r"model \(4, 32, 1, 1\)\)"):
        load_schp(mis_shaped, "lip")

    bare = tmp_path / "bare.pth"
    torch.save({"model": state}, bare)
    with pytest.raises(CheckpointError, match="bare.pth: not an SCHP checkpoint.*model"):
        load_schp(bare, "lip")
    with pytest.raises(CheckpointError, match="schp_tiny_lip.pth: fushion.3.weight has 20 classes.*LIP checkpoint"):
        load_schp(files["lip"], "atr")
    extra = tmp_path / "with-epoch.pth"
    torch.save({"epoch": 150, "state_dict": state}, extra)  # what SCHP's trainer also stores
    assert load_schp(extra, "lip").num_classes == 20


# ------------------------------------------------------------------------------- pre- and post-processing
def _official_style_affine(centre, scale, input_size, inverse=False):
    """SCHP's three-point construction (no rotation), written out independently of schp_affine."""
    out_h, out_w = input_size
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = centre
    src[1] = centre + np.array([0, -scale[0] * 0.5], np.float32)
    dst[0] = [(out_w - 1) * 0.5, (out_h - 1) * 0.5]
    dst[1] = dst[0] + np.array([0, (out_w - 1) * -0.5], np.float32)
    for points in (src, dst):
        direction = points[0] - points[1]
        points[2] = points[1] + np.array([-direction[1], direction[0]], np.float32)
    return cv2.getAffineTransform(dst, src) if inverse else cv2.getAffineTransform(src, dst)


def test_affine_box_and_warp_values():
    centre, scale = schp_box(384, 512, (473, 473))  # portrait: the box is widened to a square
    assert np.allclose(centre, [191.5, 255.5]) and np.allclose(scale, [511, 511])
    forward = schp_affine(centre, scale, (473, 473))
    corners = np.array([[0, 0, 1], [383, 511, 1]], np.float64) @ forward.T
    assert np.allclose(corners, [[236 - 191.5 * 472 / 511, 0], [236 + 191.5 * 472 / 511, 472]])
    centre, scale = schp_box(640, 360, (512, 512))  # landscape: widened in height
    assert np.allclose(centre, [319.5, 179.5]) and np.allclose(scale, [639, 639])
    for size, input_size in (((384, 512), (473, 473)), ((640, 360), (512, 512)), ((97, 131), (473, 473))):
        box = schp_box(*size, input_size)
        assert np.allclose(schp_affine(*box, input_size), _official_style_affine(*box, input_size), atol=1e-4)
        assert np.allclose(schp_affine(*box, input_size, inverse=True),
                           _official_style_affine(*box, input_size, inverse=True), atol=1e-4)


def test_normalisation_of_a_known_pixel():
    image = Image.new("RGB", (40, 60), (255, 128, 0))
    tensor, _ = schp_input(image, (473, 473))
    assert tensor.shape == (1, 3, 473, 473) and tensor.dtype == torch.float32
    blue, green, red = (0 - MEAN[0]) / STD[0], (128 / 255 - MEAN[1]) / STD[1], (1 - MEAN[2]) / STD[2]
    assert tensor[0, :, 236, 236].tolist() == pytest.approx([blue, green, red], abs=1e-5)  # BGR, as cv2 reads
    assert tensor[0, :, 236, 236].tolist() == pytest.approx([-1.80444, 0.20519, 2.24891], abs=1e-4)
    black = [-m / s for m, s in zip(MEAN, STD)]
    assert tensor[0, :, 236, 5].tolist() == pytest.approx(black, abs=1e-5)  # left of the portrait: the border
    rgb, _ = schp_input(image, (473, 473), channel_order="rgb")  # what CatVTON's AutoMasker feeds
    assert rgb[0, 0, 236, 236].item() == pytest.approx((1 - MEAN[0]) / STD[0], abs=1e-5)


def _within(predicted: np.ndarray, truth: np.ndarray, radius: int) -> bool:
    """Every pixel's predicted label occurs in the true map within ``radius`` px (labels move, never appear)."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    for label in np.unique(predicted):
        near = cv2.dilate((truth == label).astype(np.uint8), kernel) > 0
        if not near[predicted == label].all():
            return False
    return True


@pytest.mark.parametrize("transpose", [False, True])
def test_label_map_survives_warp_and_unwarp(transpose):
    truth = draw_mannequin(Outfit(top="tank", bottom="skirt")).labels
    if transpose:  # a landscape picture: the box is widened the other way
        truth = np.ascontiguousarray(truth.T)
    height, width = truth.shape
    input_size = (473, 473)
    box = schp_box(width, height, input_size)
    forward = schp_affine(*box, input_size)
    planes = [cv2.warpAffine((truth == label).astype(np.float32), forward, (473, 473), flags=cv2.INTER_LINEAR)
              for label in range(18)]
    labels = schp_labels(torch.from_numpy(np.stack(planes)), box, (width, height), input_size)
    assert labels.shape == truth.shape and labels.dtype == np.uint8
    assert (labels != truth).mean() < 0.01 and _within(labels, truth, 2) and _within(truth, labels, 2)
    # at the network's own resolution (1/4 of the input) the result is 4x coarser, still in place
    quarter = torch.nn.functional.interpolate(torch.from_numpy(np.stack(planes))[None], size=(119, 119),
                                              mode="bilinear", align_corners=True)[0]
    coarse = schp_labels(quarter, box, (width, height), input_size)
    assert (coarse != truth).mean() < 0.04 and _within(coarse, truth, 5)
    small = schp_labels(torch.from_numpy(np.stack(planes)), box, (width, height), input_size, max_side=256)
    assert small.shape == truth.shape and _within(small, truth, 3)


def _reference_input(image: Image.Image, input_size) -> tuple[torch.Tensor, tuple]:
    """SCHP's extractor input written out: the box, the three-point affine, cv2 warp of BGR, ToTensor,
    Normalize."""
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    w, h = image.size
    box_w, box_h = w - 1.0, h - 1.0
    centre = np.array([box_w / 2, box_h / 2], np.float32)
    side = max(box_w, box_h)  # square inputs: aspect ratio 1
    scale = np.array([side, side], np.float32)
    warped = cv2.warpAffine(bgr, _official_style_affine(centre, scale, input_size), (input_size[1], input_size[0]),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    x = (torch.from_numpy(warped).permute(2, 0, 1).float() / 255 - torch.tensor(MEAN)[:, None, None]) \
        / torch.tensor(STD)[:, None, None]
    return x[None], (centre, scale)


def _reference_labels(model, x: torch.Tensor, box, image_size, input_size) -> np.ndarray:
    """... and its output: fusion, Upsample(align_corners=True), per-channel inverse warp, argmax."""
    with torch.no_grad():
        fusion = model(x)[0][-1]
    up = torch.nn.Upsample(size=input_size, mode="bilinear", align_corners=True)(fusion)[0].permute(1, 2, 0).numpy()
    back = _official_style_affine(*box, input_size, inverse=True)
    logits = np.stack([cv2.warpAffine(up[:, :, c], back, image_size, flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=0) for c in range(up.shape[2])], 2)
    return np.argmax(logits, axis=2).astype(np.uint8)


@pytest.mark.parametrize("dataset", ["lip", "atr"])
def test_parser_matches_the_official_steps(tiny_files, dataset):
    _, files = tiny_files
    input_size = {"lip": (473, 473), "atr": (512, 512)}[dataset]
    image = draw_mannequin(Outfit(top="longsleeve", bottom="trousers"), size=(192, 256)).image
    ours, _ = schp_input(image, input_size)
    reference, box = _reference_input(image, input_size)
    # the same input up to cv2's fixed-point rounding (the affines differ in the 7th digit: float32 points)
    difference = (ours - reference).abs()
    assert difference.max() <= 1.01 / 255 / min(STD) and (difference > 1e-6).float().mean() < 0.01
    # A random network amplifies those one-grey-level differences, so the output steps are compared on our
    # input: the parse is the fusion output, upsampled, warped back and argmaxed as the original does.
    model = load_schp(files[dataset], dataset)
    expected = _reference_labels(model, ours, box, image.size, input_size)
    labels = SchpParser(files[dataset], dataset).parse(image)
    assert labels.shape == (256, 192) and len(np.unique(expected)) > 5
    assert (labels == expected).mean() > 0.999  # float rounding may flip a near-tie


def test_parser_reads_the_fusion_output(tmp_path):
    model = tiny_schp("lip")
    with torch.no_grad():
        model.decoder.conv4.weight.zero_()
        model.decoder.conv4.bias.copy_(torch.nn.functional.one_hot(torch.tensor(3), 20) * 100.0)  # parsing branch
        model.fushion[3].weight.zero_()
        model.fushion[3].bias.copy_(torch.nn.functional.one_hot(torch.tensor(LIP["coat"]), 20) * 100.0)
    path = save_schp(model, tmp_path / "rigged-lip.pth")
    labels = SchpParser(path, "lip").parse(Image.new("RGB", (60, 80), (90, 90, 90)))
    assert (labels == LIP["coat"]).all()


# ---------------------------------------------------------------------------------------- the auto masker
def _rigged_files(tmp_path, lip_label: int, atr_label: int) -> SchpWeights:
    for dataset, label, classes in (("lip", lip_label, 20), ("atr", atr_label, 18)):
        model = tiny_schp(dataset)
        with torch.no_grad():
            model.fushion[3].weight.zero_()
            model.fushion[3].bias.copy_(torch.nn.functional.one_hot(torch.tensor(label), classes) * 100.0)
        save_schp(model, tmp_path / "SCHP" / f"{dataset}.pth")
    return SchpWeights(str(tmp_path), "SCHP/lip.pth", "SCHP/atr.pth")


def test_automasker_parses_with_schp_when_configured(tiny_files):
    root, files = tiny_files
    image = draw_mannequin().image
    weights = SchpWeights(str(root), "SCHP/schp_tiny_lip.pth", "SCHP/schp_tiny_atr.pth")
    masker = AutoMasker(segformer_location=None, schp=weights)
    parse = masker.parse(image)
    assert masker.last_source == "schp" and parse.source == "schp" and parse.pose is not None
    assert np.array_equal(parse.lip_labels, SchpParser(files["lip"], "lip").parse(image))
    assert np.array_equal(parse.labels, SchpParser(files["atr"], "atr").parse(image))
    assert np.array_equal(parse.silhouette, (parse.labels > 0) | (parse.lip_labels > 0))
    result = masker.tryon_mask(image, "upper")
    assert result.source == "schp" and result.note == ""


def test_schp_falls_back_and_says_why(tmp_path):
    image = draw_mannequin().image
    hub = SchpWeights("zhengchong/CatVTON", SCHP_FILES["lip"], SCHP_FILES["atr"])  # the Hub is unreachable here
    masker = AutoMasker(segformer_location=write_tiny_segformer(tmp_path), schp=hub)
    result = masker.tryon_mask(image, "upper")
    assert result.source == "segformer"
    assert result.note.startswith("SCHP not used: zhengchong/CatVTON/SCHP/exp-schp-201908261155-lip.pth")
    assert "SegFormer" not in result.note
    offline = AutoMasker(segformer_location=None, schp=hub).tryon_mask(image, "lower")
    assert offline.source == "mediapipe" and "SCHP not used" in offline.note and "SegFormer not used" in offline.note
    missing = SchpWeights(str(tmp_path), "SCHP/nope-lip.pth", "SCHP/nope-atr.pth")
    result = AutoMasker(segformer_location=None, schp=missing).tryon_mask(image, "upper")
    assert result.source == "mediapipe" and "nope-lip.pth does not exist" in result.note
    broken = tmp_path / "broken"
    (broken / "SCHP").mkdir(parents=True)
    (broken / "SCHP" / "lip.pth").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
    (broken / "SCHP" / "atr.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="lip.pth: the file is a git-LFS pointer"):
        AutoMasker(segformer_location=None, schp=SchpWeights(str(broken), "SCHP/lip.pth", "SCHP/atr.pth")).parse(image)


def test_presets_name_schp_and_the_mask_preview_says_schp(tmp_path):
    from pipelines.core.registry import ModelRegistry
    from pipelines.preprocess.masks import masker_factory
    from pipelines.tryon.pipeline import run_mask_task

    assert load_preset("sd15").schp == SchpWeights(
        "zhengchong/CatVTON", "SCHP/exp-schp-201908261155-lip.pth", "SCHP/exp-schp-201908301523-atr.pth")
    assert load_preset("tiny").schp is None  # random SCHP weights would give random masks; mediapipe gives real ones
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nschp: {location: zhengchong/CatVTON, lip: a.pth}\n")
    with pytest.raises(ValueError, match="bad.yaml: schp needs exactly 'location', 'lip' and 'atr'"):
        load_preset(str(bad))
    good = tmp_path / "good.yaml"
    good.write_text("name: good\nschp: {location: '{tiny}/parsers', lip: l.pth, atr: a.pth}\n")
    assert load_preset(str(good)).resolved(tmp_path).schp.location == f"{tmp_path}/parsers"

    registry = ModelRegistry("sd15", models_dir=tmp_path, device="cpu")
    registry.preset = dataclasses.replace(registry.preset, segformer=None,
                                          schp=_rigged_files(tmp_path, LIP["upper-clothes"], ATR["upper-clothes"]))
    assert masker_factory(registry)().schp == registry.preset.schp
    assert masker_factory(registry, "tryoff")().schp is None  # TryOffAnyone parses with SegFormer only
    person = draw_mannequin().image
    result = run_mask_task(registry, {"person": person, "category": "upper", "kind": "tryon", "mask_blur": 0})
    assert result.extras["mask_source"] == "schp" and result.extras["note"] == ""
    assert _on(result.extras["mask"]).mean() > 0.5  # everything is a top: the upper mask covers the picture


# --------------------------------------------------------------------------- the rules on both label maps
ATR_TO_LIP = {index: LIP.get(name, 0) for index, name in SEGFORMER_LABELS.items()}


def _lip_of(atr: np.ndarray) -> np.ndarray:
    lut = np.array([ATR_TO_LIP[i] for i in range(18)], np.uint8)
    return lut[atr]


def _both(m, atr: np.ndarray, lip: np.ndarray) -> BodyParse:
    return BodyParse(m.image.size, (atr > 0) | (lip > 0), atr, m.pose, "schp", m.parts, lip_labels=lip)


def _atr_only(m, atr: np.ndarray) -> BodyParse:
    return BodyParse(m.image.size, atr > 0, atr, m.pose, "segformer", m.parts)


def _mask(parse: BodyParse, category: str) -> np.ndarray:
    return _on(tryon_mask(parse, category))


def _share(mask: np.ndarray, region: np.ndarray) -> float:
    assert region.any()
    return float(mask[region].mean())


def _kept(mask: np.ndarray, region: np.ndarray, rim: int = 8) -> float:
    inner = cv2.erode(region.astype(np.uint8), np.ones((2 * rim + 1, 2 * rim + 1), np.uint8)) > 0
    return _share(mask, inner)


@pytest.fixture(scope="module")
def people():
    return {"tee+shorts": draw_mannequin(Outfit()), "tank+skirt": draw_mannequin(Outfit(top="tank", bottom="skirt")),
            "dress": draw_mannequin(Outfit(dress="short"))}


def test_lip_labels_cover_the_official_names():
    assert LIP_LABELS[7] == "coat" and LIP_LABELS[10] == "jumpsuits" and LIP_LABELS[13] == "face"
    assert len(LIP_LABELS) == 20 and set(SEGFORMER_LABELS.values()) - set(LIP_LABELS.values()) == {"belt", "bag"}


@pytest.mark.parametrize("name", ["tee+shorts", "tank+skirt", "dress"])
def test_two_agreeing_maps_give_the_one_map_mask(people, name):
    """Where LIP says what ATR says, the two-map rules are the one-map rules -- except that the official
    ``outer`` protects the upper-clothes LIP finds (the new outer garment goes over the worn top)."""
    m = people[name]
    lip = _lip_of(m.labels)
    for category in TRYON_CATEGORIES:
        both, atr_only = _mask(_both(m, m.labels, lip), category), _mask(_atr_only(m, m.labels), category)
        if category != "outer" or not (m.labels == mq.UPPER).any():
            assert np.array_equal(both, atr_only), category
    if name != "dress":
        top = m.labels == mq.UPPER
        both, atr_only = _mask(_both(m, m.labels, lip), "outer"), _mask(_atr_only(m, m.labels), "outer")
        assert _kept(both, top) < 0.02 and _share(atr_only, top) > 0.97
        arms = (m.parts["big arms"] | m.parts["forearms"]) & ~top
        assert _share(both, arms) > 0.97  # the sleeves' room is still repainted


def test_a_lip_coat_follows_the_official_rules(people):
    """A long coat over the bare shins (LIP: coat; ATR, which has no coat: the legs)."""
    m = people["tank+skirt"]
    rows = np.arange(m.labels.shape[0])[:, None]
    coat = np.isin(m.labels, [mq.LEFT_LEG, mq.RIGHT_LEG]) & (rows >= 380) & (rows < 430)
    lip = _lip_of(m.labels)
    lip[coat] = LIP["coat"]
    with_coat, without = _both(m, m.labels, lip), _atr_only(m, m.labels)
    for category in ("upper", "outer", "dress", "full"):  # the coat is a garment these repaint
        assert _share(_mask(with_coat, category), coat) == 1.0, category
    for category in ("lower", "inner"):  # lower and inner protect a LIP coat
        assert _kept(_mask(with_coat, category), coat) < 0.02, category
    # ... where the legs alone are kept by upper / outer and repainted by lower
    assert _kept(_mask(without, "upper"), coat) < 0.02 and _kept(_mask(without, "outer"), coat) < 0.02
    assert _share(_mask(without, "lower"), coat) > 0.97


def test_lip_jumpsuits_socks_gloves_and_face(people):
    m = people["tee+shorts"]
    shorts = m.labels == mq.PANTS
    lip = _lip_of(m.labels)
    lip[shorts] = LIP["jumpsuits"]
    jumpsuit = _both(m, m.labels, lip)
    assert _share(_mask(jumpsuit, "upper"), shorts) == 1.0  # upper repaints jumpsuits...
    assert _kept(_mask(_atr_only(m, m.labels), "upper"), shorts) < 0.02  # ... but keeps shorts
    for category in ("inner", "outer"):
        assert _kept(_mask(jumpsuit, category), shorts) < 0.02, category
    assert _share(_mask(jumpsuit, "lower"), shorts) == 1.0

    s = people["tank+skirt"]
    rows = np.arange(s.labels.shape[0])[:, None]
    socks = np.isin(s.labels, [mq.LEFT_LEG, mq.RIGHT_LEG]) & (rows >= 400)
    lip = _lip_of(s.labels)
    lip[socks] = LIP["socks"]
    for category in ("lower", "dress", "full"):  # accessories stay: the socks are kept, bare shins repainted
        assert _kept(_mask(_both(s, s.labels, lip), category), socks) < 0.02, category
        assert _share(_mask(_atr_only(s, s.labels), category), socks) > 0.97, category

    forearm_ends = m.parts["forearms"] & (rows >= 200)
    lip = _lip_of(m.labels)
    lip[forearm_ends] = LIP["glove"]
    # long gloves stay (the forearm is 20 px wide: the blur reaches ~6 px in from each side)
    assert _kept(_mask(_both(m, m.labels, lip), "upper"), forearm_ends, rim=7) < 0.02
    assert _share(_mask(_atr_only(m, m.labels), "upper"), forearm_ends) > 0.97

    # the strongly protected face is the LIP map's: an ATR-only "face" patch on the top is repainted
    patch = np.zeros(m.labels.shape, bool)
    patch[180:200, 180:205] = True
    assert (m.labels[patch] == mq.UPPER).all()
    atr = m.labels.copy()
    atr[patch] = ATR["face"]
    assert _share(_mask(_both(m, atr, _lip_of(m.labels)), "upper"), patch) == 1.0
    assert _kept(_mask(_atr_only(m, atr), "upper"), patch, rim=2) == 0.0  # the last dilation reaches 1 px in
