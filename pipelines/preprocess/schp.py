"""SCHP (Self-Correction Human Parsing): the human parser CatVTON's AutoMasker runs, LIP (20 labels) + ATR (18).

CatVTON parses every person photo twice, with the two SCHP checkpoints in its hub repository
(``zhengchong/CatVTON``: ``SCHP/exp-schp-201908261155-lip.pth`` and ``SCHP/exp-schp-201908301523-atr.pth``),
and applies its agnostic-mask rules to both maps (:func:`pipelines.preprocess.bodyparts.tryon_mask`).

The network is SCHP's "AugmentCE2P" ``resnet101``, written here as plain torch modules whose state-dict keys are
the official ones (the checkpoints hold ``{"state_dict": {"module." + key: tensor}}``):

* a ResNet-101 backbone with a three-convolution stem (``conv1/bn1/relu1``, ``conv2/...``, ``conv3/...``;
  64-64-128 channels), bottleneck ``layer1``..``layer4`` (3, 4, 23, 3 blocks; ``layer4`` dilated 2, stride 1);
* ``context_encoding``: a pyramid pooling module (bins 1, 2, 3, 6) on ``layer4``;
* ``edge``: an edge branch on ``layer1``..``layer3``;
* ``decoder``: the parsing decoder (context + ``layer1``);
* ``fushion`` (sic): the head over decoder + edge features whose output is the parse used.

The official batch norms are InPlace-ABN modules: at inference a batch norm (eps 1e-5; weight, bias,
running_mean and running_var, no ``num_batches_tracked``) followed by leaky-relu 0.01 inside the heads, and no
activation in the backbone (which applies its own ReLUs). :class:`ActivatedBatchNorm` is that, inference only.

Pre/post-processing (SCHP's simple extractor): the whole image box, widened to the input's aspect ratio
(:func:`schp_box`), is affine-warped (no rotation; :func:`schp_affine`) to 473x473 (LIP) or 512x512 (ATR) with
bilinear sampling and black borders; channels in cv2's BGR order; /255 then normalised with mean
(0.406, 0.456, 0.485) and std (0.225, 0.224, 0.229). The fusion output (``model(x)[0][-1]``) is upsampled
bilinearly (corners aligned) to the input size, each channel warped back to the image with the inverse affine,
and the argmax is the label map (:func:`schp_labels`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pipelines.core.checkpoints import (
    drop_leading,
    load_strict,
    read_state_dict,
    unwrap,
)
from pipelines.preprocess.bodyparts import LIP_LABELS, SEGFORMER_LABELS
from pipelines.types import CheckpointError

logger = logging.getLogger(__name__)

SCHP_REPO = "zhengchong/CatVTON"
SCHP_FILES = {"lip": "SCHP/exp-schp-201908261155-lip.pth", "atr": "SCHP/exp-schp-201908301523-atr.pth"}
MEAN = (0.406, 0.456, 0.485)  # per channel of the BGR input (ImageNet's RGB statistics reversed)
STD = (0.225, 0.224, 0.229)
CHANNEL_ORDERS = ("bgr", "rgb")


@dataclass(frozen=True)
class SchpDataset:
    name: str
    labels: dict[int, str]
    input_size: tuple[int, int]  # (height, width) the image is warped to

    @property
    def num_classes(self) -> int:
        return len(self.labels)


DATASETS = {
    "lip": SchpDataset("lip", LIP_LABELS, (473, 473)),
    "atr": SchpDataset("atr", SEGFORMER_LABELS, (512, 512)),  # ATR = the SegFormer clothes labels, same order
}


def check_dataset(dataset: str) -> SchpDataset:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {tuple(DATASETS)}, got {dataset!r}")
    return DATASETS[dataset]


# ------------------------------------------------------------------------------------------ the network
@dataclass(frozen=True)
class SchpSize:
    """Depth and channel widths. The official ``resnet101`` is the default; the tiny test network keeps its
    depth (so its keys are exactly the official ones) at narrow widths."""

    blocks: tuple[int, int, int, int] = (3, 4, 23, 3)
    width: int = 64  # stem 64-64-128; the bottlenecks' planes are width x 1, 2, 4, 8 (outputs x4)
    context: int = 512  # pyramid pooling channels
    head: int = 256  # decoder / edge / fusion channels
    skip: int = 48  # the decoder's reduction of layer1


FULL_SIZE = SchpSize()
TINY_SIZE = SchpSize(width=8, context=16, head=8, skip=4)


class ActivatedBatchNorm(nn.Module):
    """InPlace-ABN at inference: batch norm with running statistics, then leaky-relu 0.01 when ``leaky``."""

    def __init__(self, channels: int, leaky: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.leaky, self.eps = leaky, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return F.leaky_relu(x, 0.01) if self.leaky else x


def _conv(cin: int, cout: int, kernel: int = 1, stride: int = 1, dilation: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=dilation * (kernel // 2), dilation=dilation, bias=bias)


def _conv_abn(cin: int, cout: int, kernel: int = 1) -> list[nn.Module]:
    return [_conv(cin, cout, kernel), ActivatedBatchNorm(cout)]


class ResidualBlock(nn.Module):
    """ResNet bottleneck: 1x1 -> 3x3 (stride, dilation) -> 1x1 (x4 channels), ReLUs, projected shortcut."""

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        cout = planes * 4
        self.conv1, self.bn1 = _conv(cin, planes), ActivatedBatchNorm(planes, leaky=False)
        self.conv2 = _conv(planes, planes, 3, stride, dilation)
        self.bn2 = ActivatedBatchNorm(planes, leaky=False)
        self.conv3, self.bn3 = _conv(planes, cout), ActivatedBatchNorm(cout, leaky=False)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(_conv(cin, cout, stride=stride), ActivatedBatchNorm(cout, leaky=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class PyramidPooling(nn.Module):
    """``context_encoding``: average-pool to 1, 2, 3, 6 bins, 1x1 conv each, upsample, concat with the input,
    3x3 conv."""

    def __init__(self, cin: int, cout: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.stages = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(size), *_conv_abn(cin, cout)) for size in bins)
        self.bottleneck = nn.Sequential(*_conv_abn(cin + len(bins) * cout, cout, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pooled = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=True) for stage in self.stages]
        return self.bottleneck(torch.cat(pooled + [x], dim=1))


class EdgeBranch(nn.Module):
    """``edge``: 1x1 reductions of layer1..3 (``conv1..3``), one shared 3x3 edge classifier (``conv4``) on each,
    fused by ``conv5``; returns (edge logits, the three reduced features concatenated)."""

    def __init__(self, cins: tuple[int, int, int], mid: int, classes: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(*_conv_abn(cins[0], mid))
        self.conv2 = nn.Sequential(*_conv_abn(cins[1], mid))
        self.conv3 = nn.Sequential(*_conv_abn(cins[2], mid))
        self.conv4 = _conv(mid, classes, 3, bias=True)
        self.conv5 = _conv(classes * 3, classes, bias=True)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor):
        size = x1.shape[2:]
        features = [self.conv1(x1), self.conv2(x2), self.conv3(x3)]
        edges = [self.conv4(feature) for feature in features]

        def up(t: torch.Tensor) -> torch.Tensor:
            return t if t.shape[2:] == size else F.interpolate(t, size=size, mode="bilinear", align_corners=True)

        edge = self.conv5(torch.cat([up(e) for e in edges], dim=1))
        return edge, torch.cat([up(f) for f in features], dim=1)


class ParsingDecoder(nn.Module):
    """``decoder``: the context reduced and upsampled to layer1's size, concatenated with layer1 reduced to
    ``skip`` channels, two 1x1 conv-ABNs, a 1x1 classifier; returns (parsing logits, its features)."""

    def __init__(self, context: int, low: int, head: int, skip: int, classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(*_conv_abn(context, head))
        self.conv2 = nn.Sequential(*_conv_abn(low, skip))
        self.conv3 = nn.Sequential(*_conv_abn(head + skip, head), *_conv_abn(head, head))
        self.conv4 = _conv(head, classes, bias=True)

    def forward(self, context: torch.Tensor, low: torch.Tensor):
        context = F.interpolate(self.conv1(context), size=low.shape[2:], mode="bilinear", align_corners=True)
        features = self.conv3(torch.cat([context, self.conv2(low)], dim=1))
        return self.conv4(features), features


class SchpNetwork(nn.Module):
    """AugmentCE2P ``resnet101``. ``forward`` returns ``[[parsing, fusion], [edge]]`` at 1/4 of the input size
    (119x119 for 473, 128x128 for 512), as the original; the parse used is ``[0][-1]``."""

    def __init__(self, num_classes: int, size: SchpSize = FULL_SIZE) -> None:
        super().__init__()
        self.num_classes, self.size = num_classes, size
        w = size.width
        self.conv1, self.bn1, self.relu1 = _conv(3, w, 3, stride=2), ActivatedBatchNorm(w, leaky=False), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = _conv(w, w, 3), ActivatedBatchNorm(w, leaky=False), nn.ReLU()
        self.conv3, self.bn3, self.relu3 = _conv(w, 2 * w, 3), ActivatedBatchNorm(2 * w, leaky=False), nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 2 * w
        for index, (blocks, planes, stride, dilation) in enumerate(
            zip(size.blocks, (w, 2 * w, 4 * w, 8 * w), (1, 2, 2, 1), (1, 1, 1, 2)), start=1
        ):
            layer = []
            for block in range(blocks):
                layer.append(ResidualBlock(cin, planes, stride if block == 0 else 1, dilation))
                cin = planes * 4
            setattr(self, f"layer{index}", nn.Sequential(*layer))
        self.context_encoding = PyramidPooling(32 * w, size.context)
        self.edge = EdgeBranch((4 * w, 8 * w, 16 * w), size.head)
        self.decoder = ParsingDecoder(size.context, 4 * w, size.head, size.skip, num_classes)
        self.fushion = nn.Sequential(  # the official spelling (it is in the checkpoint keys)
            *_conv_abn(4 * size.head, size.head), nn.Dropout2d(0.1), _conv(size.head, num_classes, bias=True)
        )

    def forward(self, x: torch.Tensor):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.maxpool(self.relu3(self.bn3(self.conv3(x))))
        x2 = self.layer1(x)
        x3 = self.layer2(x2)
        x4 = self.layer3(x3)
        context = self.context_encoding(self.layer4(x4))
        parsing, parsing_features = self.decoder(context, x2)
        edge, edge_features = self.edge(x2, x3, x4)
        fusion = self.fushion(torch.cat([parsing_features, edge_features], dim=1))
        return [[parsing, fusion], [edge]]


# --------------------------------------------------------------------------------------- checkpoint IO
def load_schp(path: str | Path, dataset: str, device: str = "cpu") -> SchpNetwork:
    """The official SCHP checkpoint (or a tiny one from :func:`write_tiny_schp`) at ``path`` as an eval-mode
    :class:`SchpNetwork` on ``device``. Read with ``torch.load(weights_only=True)``; strict: a wrong file, a
    damaged one, or missing / unexpected / mis-shaped tensors raise :class:`CheckpointError` naming the file and
    the tensors."""
    spec = check_dataset(dataset)
    path = Path(path).expanduser()
    raw = read_state_dict(path)
    if "state_dict" not in raw:
        shown = ", ".join(sorted(map(str, raw))[:5])
        raise CheckpointError(f"{path.name}: not an SCHP checkpoint (no 'state_dict' entry; it holds {shown})")
    state = drop_leading(unwrap(raw, "state_dict"), "module.")
    state = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    head = state.get("fushion.3.weight")
    if head is not None and head.ndim == 4 and head.shape[0] != spec.num_classes:
        other = next((d.name for d in DATASETS.values() if d.num_classes == head.shape[0]), None)
        raise CheckpointError(
            f"{path.name}: fushion.3.weight has {head.shape[0]} classes, SCHP {dataset.upper()} has "
            f"{spec.num_classes}" + (f": it is an {other.upper()} checkpoint" if other else "")
        )
    stem = state.get("conv1.weight")
    size = TINY_SIZE if stem is not None and stem.shape[0] == TINY_SIZE.width else FULL_SIZE
    model = SchpNetwork(spec.num_classes, size)
    load_strict(model, state, f"{path.name} (SCHP {dataset.upper()})")
    return model.to(device).eval()


def save_schp(model: SchpNetwork, path: str | Path) -> Path:
    """Save ``model`` in the official layout: ``torch.save({"state_dict": {"module." + key: tensor}})``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"module.{key}": value.detach().cpu().clone() for key, value in model.state_dict().items()}
    torch.save({"state_dict": state}, path)
    return path


def tiny_schp(dataset: str, seed: int = 0) -> SchpNetwork:
    """A random tiny SCHP network (official depth and keys, narrow widths). Its batch-norm statistics are
    estimated on two drawn people (as SCHP re-estimates them after each training cycle) and its classifiers'
    logits centred on them, so the parse of a person photo varies over the picture instead of one class winning
    everywhere."""
    spec = check_dataset(dataset)
    generator = torch.Generator().manual_seed(seed)
    model = SchpNetwork(spec.num_classes, TINY_SIZE)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, ActivatedBatchNorm):
                channels = module.weight.shape[0]
                module.weight.copy_(1 + 0.1 * torch.randn(channels, generator=generator))
                module.bias.copy_(0.1 * torch.randn(channels, generator=generator))

        def estimate(module, inputs):  # in forward order: each sees its calibrated predecessors' output
            x = inputs[0]
            module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
            module.running_var.copy_(x.var(dim=(0, 2, 3)) + 1e-3)

        hooks = [m.register_forward_pre_hook(estimate) for m in model.modules() if isinstance(m, ActivatedBatchNorm)]
        from pipelines.preprocess.mannequin import Outfit, draw_mannequin

        people = (draw_mannequin(Outfit(), size=(192, 256)), draw_mannequin(Outfit(dress="long"), size=(192, 256)))
        picture = torch.cat([schp_input(person.image, spec.input_size)[0] for person in people])
        try:
            model.eval()(picture)
        finally:
            for hook in hooks:
                hook.remove()
        (parsing, fusion), _ = model(picture)  # and centre the classifiers' logits on it
        model.decoder.conv4.bias.sub_(parsing.mean(dim=(0, 2, 3)))
        model.fushion[3].bias.sub_(fusion.mean(dim=(0, 2, 3)))
    return model


def write_tiny_schp(root: str | Path) -> dict[str, Path]:
    """Write random tiny LIP and ATR checkpoints in the official layout to ``root/SCHP/schp_tiny_{lip,atr}.pth``
    (point an SCHP preset entry at ``root`` with ``lip: SCHP/schp_tiny_lip.pth``, ``atr: ...``)."""
    root = Path(root)
    return {name: save_schp(tiny_schp(name, seed), root / "SCHP" / f"schp_tiny_{name}.pth")
            for seed, name in enumerate(DATASETS)}


# ------------------------------------------------------------------------------ pre- and post-processing
def schp_box(width: int, height: int, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(centre, scale) of the whole image's box (0, 0, W-1, H-1), widened to the input's aspect ratio."""
    aspect = input_size[1] / input_size[0]
    box_w, box_h = float(width - 1), float(height - 1)
    centre = np.array([box_w * 0.5, box_h * 0.5], np.float32)
    if box_w > aspect * box_h:
        box_h = box_w / aspect
    elif box_w < aspect * box_h:
        box_w = box_h * aspect
    return centre, np.array([box_w, box_h], np.float32)


def schp_affine(centre: np.ndarray, scale: np.ndarray, input_size: tuple[int, int],
                inverse: bool = False) -> np.ndarray:
    """The 2x3 image -> input warp of SCHP (no rotation): the box centre to the input centre ((size-1)/2) and
    the box width to (input width - 1), the same factor on both axes. ``inverse``: input -> image."""
    in_h, in_w = input_size
    factor = (in_w - 1) / float(scale[0])
    forward = np.array([[factor, 0.0, (in_w - 1) * 0.5 - factor * centre[0]],
                        [0.0, factor, (in_h - 1) * 0.5 - factor * centre[1]]], np.float64)
    return cv2.invertAffineTransform(forward) if inverse else forward


def schp_input(image: Image.Image, input_size: tuple[int, int], channel_order: str = "bgr"):
    """(1, 3, H, W) float tensor of ``image`` warped and normalised as SCHP expects, and its (centre, scale)."""
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    pixels = np.asarray(image.convert("RGB"))
    if channel_order == "bgr":
        pixels = pixels[:, :, ::-1]
    centre, scale = schp_box(image.width, image.height, input_size)
    warped = cv2.warpAffine(np.ascontiguousarray(pixels), schp_affine(centre, scale, input_size),
                            (input_size[1], input_size[0]), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    values = (warped.astype(np.float32) / 255.0 - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(values.transpose(2, 0, 1)))[None], (centre, scale)


def schp_labels(logits: torch.Tensor, box, image_size: tuple[int, int], input_size: tuple[int, int],
                max_side: Optional[int] = None) -> np.ndarray:
    """(H, W) uint8 labels from (C, h, w) network logits: bilinear (corners aligned) to the input size, each
    channel warped back to the image with the inverse affine (bilinear, zero outside), argmax.

    ``max_side``: warp back to at most this longer side and resize the labels (nearest) to the image (memory:
    the C logit planes exist at the working size only); None = the image's own size, as the original.
    """
    width, height = image_size
    scale_down = 1.0 if not max_side else min(1.0, max_side / max(width, height))
    work = (max(1, round(width * scale_down)), max(1, round(height * scale_down)))
    logits = F.interpolate(logits[None].float(), size=tuple(input_size), mode="bilinear", align_corners=True)[0]
    planes = logits.cpu().numpy()
    back = schp_affine(*box, input_size, inverse=True) * scale_down
    best, labels = None, np.zeros((work[1], work[0]), np.uint8)
    for index, plane in enumerate(planes):  # running argmax: one plane at the image size at a time
        warped = cv2.warpAffine(np.ascontiguousarray(plane), back, work, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if best is None:
            best = warped
            continue
        better = warped > best  # ties keep the lower label, as argmax does
        labels[better] = index
        best = np.maximum(best, warped)
    if work != (width, height):
        labels = np.asarray(Image.fromarray(labels).resize((width, height), Image.NEAREST))
    return labels


# ------------------------------------------------------------------------------------------ the parser
_MODELS: dict[tuple, SchpNetwork] = {}
_MODELS_LOCK = threading.Lock()


def cached_schp(path: str | Path, dataset: str, device: str = "cpu") -> SchpNetwork:
    """:func:`load_schp`, once per (file, its size and time, dataset, device) in this process."""
    path = Path(path).expanduser().resolve()
    stat = path.stat() if path.is_file() else None
    key = (str(path), stat and (stat.st_size, stat.st_mtime_ns), dataset, str(device))
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_schp(path, dataset, device)
            logger.info("loaded SCHP %s from %s", dataset.upper(), path)
        return _MODELS[key]


class SchpParser:
    """One SCHP checkpoint (``dataset`` "lip" or "atr") as a parser: :meth:`parse` gives the (H, W) uint8 label
    map of a photo with the official pre/post-processing. The model loads on first use and is cached per file
    and device.

    ``channel_order``: "bgr" (SCHP's own extractor reads images with cv2, and the normalisation is in BGR
    order) or "rgb" (what CatVTON's AutoMasker feeds, passing PIL images through ``np.array``).
    """

    def __init__(self, checkpoint: str | Path, dataset: str, device: str = "cpu", channel_order: str = "bgr",
                 max_side: Optional[int] = 1024) -> None:
        self.spec = check_dataset(dataset)
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
        self.checkpoint, self.dataset, self.device = Path(checkpoint), dataset, str(device)
        self.channel_order, self.max_side = channel_order, max_side

    def load(self) -> SchpNetwork:
        return cached_schp(self.checkpoint, self.dataset, self.device)

    def parse(self, image: Image.Image) -> np.ndarray:
        """(H, W) uint8 labels of ``image`` (keys of ``DATASETS[dataset].labels``)."""
        model = self.load()
        tensor, box = schp_input(image, self.spec.input_size, self.channel_order)
        with torch.inference_mode():
            fusion = model(tensor.to(self.device))[0][-1][0]
        return schp_labels(fusion, box, image.size, self.spec.input_size, self.max_side)
