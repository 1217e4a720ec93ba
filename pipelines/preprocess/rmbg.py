"""Background removal with BRIA RMBG-1.4: the cut-out TryOffAnyone's post-processing composites on white.

RMBG-1.4 (``briaai/RMBG-1.4``, gated, non-commercial licence) is an IS-Net (DIS) network: U^2-Net-style
residual U-blocks (RSU) in a U-Net of U-Nets. Written here from its published description and module names,
so the official ``model.safetensors`` loads strictly into :class:`RMBGNet`:

- ``conv_in``: 3x3 conv, stride 2 (the whole network works at half the input resolution);
- encoder ``stage1`` RSU7, ``stage2`` RSU6, ``stage3`` RSU5, ``stage4`` RSU4, ``stage5`` and ``stage6`` RSU4F, a 2x2
  max-pool (ceil) between stages; decoder ``stage5d`` RSU4F, ``stage4d`` RSU4, ``stage3d`` RSU5, ``stage2d`` RSU6,
  ``stage1d`` RSU7, each fed [the deeper stage upsampled bilinearly; the encoder stage of its level];
- side outputs ``side1`` .. ``side6`` (3x3 conv to one channel) on stage1d .. stage5d and stage6. The official
  forward returns the sigmoid of every side output upsampled to the input size; its pipeline reads only the
  FIRST (``side1``), so that is all :meth:`RMBGNet.forward` computes (the others are loaded, never run);
- an RSU-L block: ``rebnconvin`` (in -> out), encoder ``rebnconv1`` .. ``rebnconv{L-1}`` with a max-pool after
  each but the last, ``rebnconv{L}`` dilated 2, decoder ``rebnconv{L-1}d`` .. ``rebnconv1d`` on [deeper; skip]
  (upsampled to the skip's size), output ``rebnconv1d + rebnconvin``. RSU4F has no pooling: dilations 1, 2, 4, 8
  down and 4, 2, 1 up. A REBNCONV is ``conv_s1`` (3x3, padding = dilation) -> ``bn_s1`` (BatchNorm) -> ReLU.

Inference as the model card's ``preprocess_image`` / ``postprocess_image``: RGB as float, bilinear resize to
1024x1024, / 255, normalised with mean 0.5 and std 1.0; alpha = the first output resized bilinearly back to the
image size and min-max normalised to [0, 1]. :meth:`BackgroundRemover.on_white` composites the image on white
with that alpha (TryOffAnyone pastes RMBG's cut-out onto a white canvas).

Files: a hub id or a local folder holding ``config.json`` (``in_ch`` 3, ``out_ch`` 1) and ``model.safetensors``
(or the safetensors file itself). :func:`write_tiny_rmbg` writes a random small network in the same layout; its
narrower widths are recorded in config.json under ``atelier_widths`` (absent = the official widths) and its input
size in ``preprocessor_config.json`` (the official one says 1024x1024).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pipelines.core.checkpoints import LoadReport, load_strict, read_state_dict
from pipelines.core.registry import fetch_file
from pipelines.preprocess.images import to_rgb, whiten_background
from pipelines.types import CheckpointError, ModelUnavailableError

logger = logging.getLogger(__name__)

MODEL_KEY = "rmbg"  # the preset's ``models:`` entry naming the weights (sd15: briaai/RMBG-1.4)
OFFICIAL_LOCATION = "briaai/RMBG-1.4"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PREPROCESSOR_NAME = "preprocessor_config.json"
WIDTHS_KEY = "atelier_widths"  # ours, tiny models only: channel widths other than the official ones
INPUT_SIZE = 1024  # the model card's model_input_size (square)
MEAN, STD = 0.5, 1.0  # the model card's normalisation, every channel
ENCODER_HEIGHTS = (7, 6, 5, 4, 0, 0)  # stage1..stage6: RSU7, RSU6, RSU5, RSU4, RSU4F, RSU4F (0 = the F kind)
DECODER_HEIGHTS = (0, 4, 5, 6, 7)  # stage5d..stage1d: RSU4F, RSU4, RSU5, RSU6, RSU7


# ---------------------------------------------------------------------------------------------- network
@dataclass(frozen=True)
class RMBGWidths:
    """Channel widths: ``stem`` out of conv_in, (mid, out) of stage1..stage6 and of stage5d..stage1d.
    The defaults are RMBG-1.4's; a tiny network keeps every key name and only narrows the tensors."""

    stem: int = 64
    encoder: tuple[tuple[int, int], ...] = ((32, 64), (32, 128), (64, 256), (128, 512), (256, 512), (256, 512))
    decoder: tuple[tuple[int, int], ...] = ((256, 512), (128, 256), (64, 128), (32, 64), (16, 64))

    @classmethod
    def from_config(cls, value: Any, source: str = CONFIG_NAME) -> "RMBGWidths":
        if value is None:
            return cls()
        try:
            widths = cls(int(value["stem"]), tuple((int(m), int(o)) for m, o in value["encoder"]),
                         tuple((int(m), int(o)) for m, o in value["decoder"]))
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{source}: {WIDTHS_KEY} must hold stem, encoder and decoder widths ({error})") from None
        if len(widths.encoder) != 6 or len(widths.decoder) != 5:
            raise CheckpointError(f"{source}: {WIDTHS_KEY} needs 6 encoder and 5 decoder (mid, out) pairs")
        return widths

    def to_config(self) -> dict[str, Any]:
        return {key: [list(pair) for pair in value] if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}


class ConvBNReLU(nn.Module):
    """The official REBNCONV: 3x3 conv (padding = dilation) -> BatchNorm -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn_s1(self.conv_s1(x)))


def _resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear (align_corners False) to ``like``'s height and width, as the official ``_upsample_like``."""
    return x if x.shape[-2:] == like.shape[-2:] else F.interpolate(x, size=like.shape[-2:], mode="bilinear")


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class RSU(nn.Module):
    """A residual U-block of ``height`` levels (RSU4..RSU7); ``height=0`` = RSU4F (dilations, no pooling)."""

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        self.dilated = height == 0
        self.depth = 4 if self.dilated else height
        down = (1, 2, 4, 8) if self.dilated else (1,) * (self.depth - 1) + (2,)
        up = (4, 2, 1) if self.dilated else (1,) * (self.depth - 1)
        self.rebnconvin = ConvBNReLU(in_ch, out_ch)
        for level in range(1, self.depth + 1):
            self.add_module(f"rebnconv{level}", ConvBNReLU(out_ch if level == 1 else mid_ch, mid_ch, down[level - 1]))
        for level in range(self.depth - 1, 0, -1):
            self.add_module(f"rebnconv{level}d", ConvBNReLU(2 * mid_ch, out_ch if level == 1 else mid_ch,
                                                           up[self.depth - 1 - level]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = self.rebnconvin(x)
        skips, h = [], top
        for level in range(1, self.depth):
            h = getattr(self, f"rebnconv{level}")(h)
            skips.append(h)
            if not self.dilated and level < self.depth - 1:
                h = _pool(h)
        h = getattr(self, f"rebnconv{self.depth}")(h)  # the bottom, dilated 2 (or 8)
        for level in range(self.depth - 1, 0, -1):
            skip = skips[level - 1]
            h = getattr(self, f"rebnconv{level}d")(torch.cat([_resize_to(h, skip), skip], dim=1))
        return h + top


class RMBGNet(nn.Module):
    """RMBG-1.4 (IS-Net): image normalised as :func:`preprocess` -> foreground probability (B, 1, H, W)."""

    def __init__(self, widths: RMBGWidths = RMBGWidths(), in_ch: int = 3, out_ch: int = 1) -> None:
        super().__init__()
        self.widths = widths
        self.input_size = INPUT_SIZE
        self.conv_in = nn.Conv2d(in_ch, widths.stem, 3, stride=2, padding=1)
        channels = widths.stem
        outs = []
        for index, (height, (mid, out)) in enumerate(zip(ENCODER_HEIGHTS, widths.encoder), start=1):
            self.add_module(f"stage{index}", RSU(height, channels, mid, out))
            channels = out
            outs.append(out)
        deeper = outs[-1]  # stage6
        decoder_outs = []
        for level, height, (mid, out) in zip(range(5, 0, -1), DECODER_HEIGHTS, widths.decoder):
            self.add_module(f"stage{level}d", RSU(height, deeper + outs[level - 1], mid, out))
            deeper = out
            decoder_outs.append(out)
        side_inputs = decoder_outs[::-1] + [outs[-1]]  # side1..side5 on stage1d..stage5d, side6 on stage6
        for index, channels in enumerate(side_inputs, start=1):
            self.add_module(f"side{index}", nn.Conv2d(channels, out_ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # half resolution; the official pool_in is never applied
        encoded = []
        for index in range(1, 7):
            h = getattr(self, f"stage{index}")(h if index == 1 else _pool(h))
            encoded.append(h)
        for level in range(5, 0, -1):
            skip = encoded[level - 1]
            h = getattr(self, f"stage{level}d")(torch.cat([_resize_to(h, skip), skip], dim=1))
        logits = F.interpolate(self.side1(h), size=x.shape[-2:], mode="bilinear")  # upsampled, then the sigmoid
        return torch.sigmoid(logits)


# --------------------------------------------------------------------------------- pre/post-processing
def preprocess(rgb: np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, size, size): bilinear resize of the float image, / 255, (x - 0.5) / 1.0."""
    pixels = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    pixels = F.interpolate(pixels, size=(size, size), mode="bilinear")
    return (pixels / 255.0 - MEAN) / STD


def postprocess(probability: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(1, 1, h, w) network output -> (height, width) float32 alpha: bilinear resize, then min-max to [0, 1].
    A constant map (range < 1e-6, i.e. rounding noise of the resize; the official code divides by zero or
    stretches that noise to 0/1) is returned as its value, clipped."""
    alpha = F.interpolate(probability.float(), size=(height, width), mode="bilinear")[0, 0]
    low, high = alpha.min(), alpha.max()
    if float(high - low) < 1e-6:
        return np.full((height, width), float(low.clamp(0, 1)), np.float32)
    return ((alpha - low) / (high - low)).cpu().numpy().astype(np.float32)


def composite_on_white(image: Image.Image, alpha: np.ndarray) -> Image.Image:
    """``alpha * image + (1 - alpha) * white``: alpha 1 keeps the pixel exactly, alpha 0 makes it white."""
    rgb = np.asarray(to_rgb(image)).astype(np.float32)
    if alpha.shape != rgb.shape[:2]:
        raise ValueError(f"alpha is {alpha.shape[1]}x{alpha.shape[0]} but the image is {rgb.shape[1]}x{rgb.shape[0]}")
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    return Image.fromarray(np.round(rgb * a + 255.0 * (1.0 - a)).clip(0, 255).astype(np.uint8))


class BackgroundRemover:
    """RMBG-1.4 on one image at a time: :meth:`alpha` (the cut-out's alpha) and :meth:`on_white`."""

    def __init__(self, network: RMBGNet, source: str = "") -> None:
        self.network, self.source = network, source

    @classmethod
    def shared(cls, registry) -> "BackgroundRemover":
        """The registry's one RMBG network for its preset's ``models: rmbg`` (loaded on first use).
        Raises ModelUnavailableError when the preset names none or it cannot be reached; CheckpointError
        naming the file and tensor when the file is not RMBG-1.4's."""
        location = registry.preset.models.get(MODEL_KEY)
        if not location:
            raise ModelUnavailableError(f"the {registry.preset.name} preset names no background-removal weights "
                                        f"(models: {MODEL_KEY}: {OFFICIAL_LOCATION})")
        network = registry.shared(f"{MODEL_KEY}:{location}", lambda: load_rmbg(location, registry.device)[0],
                                  str(location))
        return cls(network, str(location))

    @torch.no_grad()
    def alpha(self, image: Image.Image) -> np.ndarray:
        """(H, W) float32 in [0, 1]: 1 = foreground (the garment), 0 = background."""
        rgb = np.asarray(to_rgb(image, "image"))
        parameter = next(self.network.parameters())
        pixels = preprocess(rgb, self.network.input_size).to(parameter.device, parameter.dtype)
        return postprocess(self.network(pixels), rgb.shape[0], rgb.shape[1])

    def on_white(self, image: Image.Image) -> Image.Image:
        """The image cut out by its alpha and composited on white (same size, RGB)."""
        return composite_on_white(image, self.alpha(image))


def finish_background(images: Sequence[Image.Image], background: str, tolerance: int,
                      remover: Callable[[], BackgroundRemover] | None) -> tuple[list[Image.Image], str, str]:
    """A try-off's background step: ``(images, note, used)``. ``remove`` = RMBG cut-out on white (``remover()``
    builds it); when it cannot be loaded the flood fill (:func:`whiten_background`) is used and the note says
    why; ``white`` = the flood fill; ``keep`` = the raw outputs. ``used``: remove | white | keep."""
    note = ""
    if background == "keep":
        return list(images), note, "keep"
    if background == "remove":
        try:
            if remover is None:
                raise ModelUnavailableError("no background-removal model was given to this pipeline")
            model = remover()
            return [model.on_white(image) for image in images], note, "remove"
        except (ModelUnavailableError, CheckpointError, OSError) as error:
            note = f"background removal (RMBG-1.4) unavailable, whitened by flood fill instead: {error}"
            logger.warning(note)
    return [whiten_background(image, tolerance) for image in images], note, "white"


# ---------------------------------------------------------------------------------------------- loading
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(f"{path.name}: not readable JSON ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path.name}: expected a JSON object")
    return data


def load_rmbg(location: str | Path, device: torch.device | str = "cpu") -> tuple[RMBGNet, LoadReport]:
    """RMBG-1.4 from a hub id, a folder (config.json + model.safetensors) or the safetensors file; fp32, eval.

    Strict: a missing, unexpected or mis-shaped tensor raises CheckpointError naming the file and the tensor.
    """
    location = str(location)
    local = Path(location).expanduser()
    if local.is_file():
        weights, config_path = local, local.with_name(CONFIG_NAME)
        config = _read_json(config_path) if config_path.is_file() else {}
        preprocessor = local.with_name(PREPROCESSOR_NAME)
    else:
        config = _read_json(fetch_file(location, CONFIG_NAME))
        weights = fetch_file(location, WEIGHTS_NAME)
        try:
            preprocessor = fetch_file(location, PREPROCESSOR_NAME)
        except ModelUnavailableError:
            preprocessor = None
    if config.get("in_ch", 3) != 3 or config.get("out_ch", 1) != 1:
        raise CheckpointError(f"{CONFIG_NAME}: in_ch={config.get('in_ch')}, out_ch={config.get('out_ch')}; "
                              "RMBG-1.4 takes 3 (RGB) and gives 1 (alpha)")
    network = RMBGNet(RMBGWidths.from_config(config.get(WIDTHS_KEY)))
    if preprocessor is not None and Path(preprocessor).is_file():
        size = _read_json(Path(preprocessor)).get("size", {})
        if isinstance(size, dict) and size.get("height") == size.get("width") and isinstance(size.get("height"), int):
            network.input_size = size["height"]
    source = f"{local.parent.name if local.is_file() else local.name}/{weights.name}"
    state = read_state_dict(weights)
    report = load_strict(network, state, source)
    network.requires_grad_(False).eval().to(device)
    logger.info(report.summary())
    return network, report


# ------------------------------------------------------------------------------------------ tiny model
TINY_WIDTHS = RMBGWidths(stem=8, encoder=((4, 8),) * 6, decoder=((4, 8),) * 5)
TINY_INPUT_SIZE = 64


def write_tiny_rmbg(root: str | Path, widths: RMBGWidths = TINY_WIDTHS, input_size: int = TINY_INPUT_SIZE) -> Path:
    """A random RMBG network in the official layout under ``root/rmbg``: model.safetensors (the official key
    names), config.json (in_ch 3, out_ch 1, + our ``atelier_widths``), preprocessor_config.json (its input size)."""
    from safetensors.torch import save_file

    folder = Path(root) / "rmbg"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(31)
    network = RMBGNet(widths)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a mis-loaded buffer changes the output
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    save_file({key: value.contiguous() for key, value in network.state_dict().items()}, str(folder / WEIGHTS_NAME),
              metadata={"format": "pt"})
    config = {"architectures": ["BriaRMBG"], "in_ch": 3, "out_ch": 1, "torch_dtype": "float32"}
    if widths != RMBGWidths():
        config[WIDTHS_KEY] = widths.to_config()
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    (folder / PREPROCESSOR_NAME).write_text(json.dumps({
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [MEAN] * 3, "image_std": [STD] * 3,
        "rescale_factor": 1 / 255, "size": {"height": input_size, "width": input_size},
    }, indent=2))
    return folder
