"""Plain types shared by pipelines/, studio/ and training/: requests, results, errors, categories, limits.

torch-free (PIL and the standard library only), so the studio and the training runner import the same
definitions the pipelines use instead of mirroring them. A request dataclass holds everything one call of a
method's pipeline takes; its ``params()`` is the JSON-able summary written into every output PNG.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

from PIL import Image

MAX_IMAGES = 8  # images per call, every method


# ----------------------------------------------------------------------------- errors and progress


class GenerationCancelled(Exception):
    """Raised inside a denoising loop when the user pressed Stop."""


@dataclass
class StepInfo:
    """Progress of a running generation, sent to the progress callback after every step."""

    stage: str  # e.g. "GAM", "LEM", "try-on"
    step: int  # 1-based step within the stage
    total: int  # steps in the stage
    overall_step: int  # 1-based across all stages of the call
    overall_total: int
    elapsed_s: float
    eta_s: float
    preview: Image.Image | None = None  # cheap latent preview every few steps

ProgressCallback = Callable[[StepInfo], None]


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or does not fit the model it is loaded into."""


class ModelUnavailableError(RuntimeError):
    """A model location cannot be reached (offline, not cached, wrong id/path)."""


@dataclass
class TaskResult:
    images: list[Image.Image]
    params: list[dict[str, Any]]  # one JSON-able dict per image (seed of that image included)
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. masks, skeletons, stage names


class UserError(Exception):
    """A problem with what the user gave (input, settings, a checkpoint, a model location).

    Its message is written for a designer and shown as-is in the UI; the service raises it for every known
    failure, so the studio recognises user errors by this type alone.
    """

# ---------------------------------------------------------------------------------- garment design
DESIGN_NEGATIVE = " worst quality, low quality"


@dataclass
class GarmentRequest:
    """Everything a designer gives. Every condition is optional."""

    prompt: str = ""
    negative_prompt: str = DESIGN_NEGATIVE
    sketch: Image.Image | None = None  # black lines on white
    color: Image.Image | None = None  # colour swatch image (a picked colour rendered flat)
    logo: Image.Image | None = None
    logo_mask: Image.Image | None = None  # white = where the logo goes; required with a logo
    height: int = 640
    width: int = 512
    num_inference_steps: int = 50
    guidance_scale: float = 7.0
    sketch_scale: float = 0.6  # alpha of the mixed attention
    color_scale: float = 1.0  # scale of the colour adapter's decoupled cross-attention
    seed: int = 42  # -1 = random
    num_images: int = 1
    keep_outside_logo: bool = False  # paste the GAM result back outside the logo mask after the LEM

    def params(self) -> dict[str, Any]:
        """JSON-able parameters (images summarised) for PNG metadata."""
        out = {k: v for k, v in asdict(self).items() if not isinstance(v, Image.Image) and v is not None}
        for key in ("sketch", "color", "logo", "logo_mask"):
            out[f"has_{key}"] = getattr(self, key) is not None
        return out


@dataclass
class GarmentResult:
    images: list[Image.Image]
    seeds: list[int]
    params: dict[str, Any]
    stages: list[str] = field(default_factory=list)

# How a photo is placed on a model canvas: crop = cover it (aspect kept, overflow cut); pad = fit inside (aspect
# kept, borders filled); stretch = resize to it ignoring the aspect ratio (the TryOffAnyone script's geometry).
FIT_MODES = ("crop", "pad", "stretch")

# ------------------------------------------------------------------------------------------ try-on
TRYON_CATEGORIES = ("upper", "lower", "dress", "full", "inner", "outer")
# Preset checkpoint names of the CatVTON weight sets and the official file inside zhengchong/CatVTON.
CATVTON_VARIANTS = {
    "tryon_catvton": "mix-48k-1024/attention/model.safetensors",
    "tryon_catvton_512": "vitonhd-16k-512/attention/model.safetensors",
}
CATVTON_LABELS = {"tryon_catvton": "CatVTON mix 1024 (best)", "tryon_catvton_512": "CatVTON VITON-HD 512 (faster)"}
# The canvas (H, W) each weight set was trained at: its default when a request leaves the size open.
CATVTON_SIZES = {"tryon_catvton": (1024, 768), "tryon_catvton_512": (512, 384)}


# How a try-on result goes back into the photo: inside the mask with a feathered edge (the official script),
# inside the mask with a hard edge, or not at all (the raw model canvas, as the official app shows it).
PASTE_MODES = ("feathered", "hard", "none")


@dataclass
class TryOnRequest:
    """One person photo and one garment photo (plus the mask choice and sampler settings)."""

    person: Image.Image | None = None  # any size; the result keeps its size
    garment: Image.Image | None = None  # product photo (garment model mode: optional)
    category: str = "upper"  # upper | lower | dress | full
    mask: Image.Image | None = None  # painted mask, white = repaint, same size as ``person``; overrides auto
    auto_mask: bool = True  # build the mask from the clothes parser when none is painted
    height: Optional[int] = None  # model canvas; None = the weights' own (CATVTON_SIZES; a garment model's
    width: Optional[int] = None  # training resolution)
    num_inference_steps: int = 50
    guidance_scale: float = 2.5
    seed: int = 42  # -1 = random; image i uses seed + i
    num_images: int = 1
    eta: Optional[float] = None  # DDIM eta; None = the method's (CatVTON 1.0, garment models 0.0 as diffusers)
    paste_mode: str = "feathered"  # feathered | hard | none (see PASTE_MODES)
    fit_mode: str = "crop"  # how the person photo is placed on the canvas: crop (cover) | pad
    feather: int = 21  # px (original scale) of inward edge softening in "feathered" (the official script's ~21)
    mask_blur: int = 9  # px Gaussian blur of the mask, re-thresholded at 128 (the official app: 9); 0 = off
    prompt: str = ""  # garment model mode only (CatVTON reads no text)
    negative_prompt: str = ""  # garment model mode only

    def params(self) -> dict[str, Any]:
        """JSON-able parameters (images summarised) for PNG metadata."""
        out = {k: v for k, v in asdict(self).items() if not isinstance(v, Image.Image) and v is not None}
        for key in ("person", "garment", "mask"):
            image = getattr(self, key)
            out[f"has_{key}"] = image is not None
            if image is not None:
                out[f"{key}_size"] = list(image.size)
        return out


@dataclass
class TryOnResult:
    images: list[Image.Image]  # the original photo's size when pasted back, else the canvas size
    mask: Image.Image  # the mask used (binary L, original photo size)
    mask_source: str  # "painted", "segformer" or "mediapipe"
    seeds: list[int]
    params: dict[str, Any]
    canvas_images: list[Image.Image] = field(default_factory=list)  # raw model outputs (H x W)
    note: str = ""  # e.g. why the automatic mask fell back to mediapipe

# ----------------------------------------------------------------------------------------- try-off
TRYOFF_CATEGORIES = ("upper", "lower", "dress")  # the official weights were trained on tops only
# white: flood fill from the border colour (offline); remove: RMBG-1.4 cut-out on white (TryOffAnyone's own
# post-processing; needs the preset's models: rmbg, else the flood fill with a note); keep: the raw output
BACKGROUNDS = ("white", "remove", "keep")


def _person_params(request: Any) -> dict[str, Any]:
    """A try-off request's JSON-able parameters (the person photo and mask summarised) for PNG metadata."""
    out = {k: v for k, v in asdict(request).items() if not isinstance(v, Image.Image) and v is not None}
    out["has_person"], out["has_mask"] = request.person is not None, request.mask is not None
    if request.person is not None:
        out["person_size"] = list(request.person.size)
    return out


@dataclass
class TryOffRequest:
    person: Image.Image | None = None  # a photo of someone wearing the garment
    category: str = "upper"  # upper (official) | lower | dress
    mask: Image.Image | None = None  # painted garment mask, white = the garment, person's size; overrides auto
    auto_mask: bool = True
    height: int = 512
    width: int = 384
    num_inference_steps: int = 50
    guidance_scale: float = 2.5
    seed: int = 36  # -1 = random; image i uses seed + i
    num_images: int = 1
    eta: float = 1.0
    fit_mode: str = "crop"
    background: str = "white"  # one of BACKGROUNDS: white (flood fill) | remove (RMBG-1.4) | keep (raw)
    background_tolerance: int = 40  # max RGB distance from the border colour that counts as background

    def params(self) -> dict[str, Any]:
        return _person_params(self)


@dataclass
class TryOffResult:
    images: list[Image.Image]  # garments, width x height
    mask: Image.Image  # the garment mask used (binary L, person photo size)
    mask_source: str  # "painted", "segformer" or "mediapipe"
    seeds: list[int]
    params: dict[str, Any]
    raw_images: list[Image.Image] = field(default_factory=list)  # before background whitening
    note: str = ""

# ------------------------------------------------------------------------- TEMU-VTOFF (high-quality try-off)
TEMU_CATEGORIES = {"upper": "upper_body", "lower": "lower_body", "dress": "dresses"}  # ours -> the method's names
# The method's captions (Qwen2.5-VL in its repository): attributes only, no colour/texture/background,
# "a <cloth type> with ...". Offered as the starting caption of each category, to be edited.
TEMU_CAPTIONS = {
    "upper": "a t-shirt with a crew neckline, short sleeves, a regular fit and a straight hem",
    "lower": "a pair of trousers with a regular waist, a straight fit and full length",
    "dress": "a dress with a round neckline, short sleeves, a fitted waist and knee length",
}
MEMORY_MODES = ("auto", "resident", "model_offload", "sequential_offload")


@dataclass
class TemuTryOffRequest:
    person: Image.Image | None = None  # a photo of someone wearing the garment
    category: str = "upper"  # upper | lower | dress (the method's upper_body | lower_body | dresses)
    caption: str = ""  # the garment's attributes; "" = the category's TEMU_CAPTIONS entry
    mask: Image.Image | None = None  # painted garment mask (white = garment), person's size; overrides auto
    auto_mask: bool = True
    height: int = 1024
    width: int = 768
    num_inference_steps: int = 28
    guidance_scale: float = 2.0
    seed: int = 42  # -1 = random; image i uses seed + i
    num_images: int = 1
    fit_mode: str = "crop"
    background: str = "white"  # one of BACKGROUNDS: white (flood fill) | remove (RMBG-1.4) | keep (raw)
    background_tolerance: int = 40
    memory_mode: str = "auto"  # auto | resident | model_offload | sequential_offload

    def params(self) -> dict[str, Any]:
        return _person_params(self)


# ---------------------------------------------------------------------------------------- dressing
MAX_GARMENTS = 4
GARMENT_CATEGORIES = ("upper", "lower", "dress", "outerwear", "hat", "shoes", "bag", "accessory")
DRESSING_PROMPT = "A beautiful woman, best quality, high quality"
# Blocks nudity (the IMAGDressing demo's negative prompt family) and the usual quality failures.
DRESSING_NEGATIVE = (
    "bare, naked, nude, nsfw, undressed, topless, monochrome, lowres, bad anatomy, worst quality, low quality"
)
GARMENT_SCALE_RANGE = (0.0, 1.5)
GUIDANCE_RANGE = (0.0, 30.0)
POSE_SCALE_RANGE = (0.0, 2.0)


@dataclass(frozen=True)
class LoraSpec:
    """One community LoRA file and the weight it is applied with."""

    path: str
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "LoraSpec":
        """``file.safetensors`` or ``file.safetensors:0.8`` (the CLI form)."""
        head, sep, tail = str(text).rpartition(":")
        if sep and head:
            try:
                return cls(head, float(tail))
            except ValueError:
                pass  # a colon inside the path (C:\\...) with no weight
        return cls(str(text), 1.0)


@dataclass
class Garment:
    """One garment slot: a product photo (any size/aspect, RGBA allowed) and its category."""

    image: Any  # PIL image, numpy array or file path
    category: str = "upper"


@dataclass
class DressingRequest:
    """Everything a designer gives the dressing tab."""

    garments: list[Garment] = field(default_factory=list)
    prompt: str = DRESSING_PROMPT
    negative_prompt: str = DRESSING_NEGATIVE
    pose_image: Image.Image | None = None  # an OpenPose skeleton (coloured limbs on black)
    pose_scale: float = 1.0  # ControlNet conditioning scale
    height: int = 640
    width: int = 512
    num_inference_steps: int = 30
    guidance_scale: float = 6.5  # text guidance s_T
    garment_guidance_scale: float | None = None  # garment guidance s_G (None = same as guidance_scale)
    garment_scale: float = 0.85  # lambda of the Dressing-Attention (0.7 in the paper), 0..1.5
    seed: int = 42  # -1 = random
    num_images: int = 1
    loras: list[LoraSpec] = field(default_factory=list)  # community LoRAs on the base model

    @property
    def garment_guidance(self) -> float:
        return self.guidance_scale if self.garment_guidance_scale is None else self.garment_guidance_scale

    def params(self) -> dict[str, Any]:
        """JSON-able parameters (images summarised) for PNG metadata."""
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "garment_categories": [getattr(g, "category", None) for g in self.garments],
            "num_garments": len(self.garments),
            "has_pose": self.pose_image is not None,
            "pose_scale": self.pose_scale,
            "height": self.height,
            "width": self.width,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "garment_guidance_scale": self.garment_guidance,
            "garment_scale": self.garment_scale,
            "seed": self.seed,
            "num_images": self.num_images,
            "scheduler": "DDIM",
            "loras": [f"{Path(s.path).name}:{s.weight:g}" for s in self.loras],
        }


@dataclass
class DressingResult:
    images: list[Image.Image]
    seeds: list[int]
    params: dict[str, Any]
    garments: list[Image.Image] = field(default_factory=list)  # the prepared (padded) garment images
    pose_image: Image.Image | None = None


# ------------------------------------------------------------------------------ pose design (EquiFashion)
POSE_DESIGN_CATEGORIES = ("Dress", "Blouse", "Sweater", "Coat", "Jumpsuit", "Pant", "Skirt")  # their app's radio
POSE_DESIGN_WEIGHTS = {  # variant -> label; "equifashion" = the SD2.1-base ControlLDM checkpoint of the method
    "equifashion": "EquiFashion ControlNet (SD2.1-base, the method's weights)",
    "sd15_openpose": "SD1.5 OpenPose ControlNet on the studio's base model",
}
POSE_DESIGN_ADDED_PROMPT = "best quality, extremely detailed, white background"
POSE_DESIGN_NEGATIVE = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality"
)
# attribute -> (label, fraction of the DDIM schedule skipped before editing starts: their A1 starts at index 8
# of 100 steps (t~911) and A5 at index 40 (t~591); A2..A4 are spaced evenly between them)
ATTRIBUTES = {
    "length": ("A1 clothing length", 0.08),
    "sleeve_length": ("A2 sleeve length", 0.16),
    "sleeve_type": ("A3 sleeve type", 0.24),
    "collar": ("A4 collar", 0.32),
    "hem": ("A5 hem", 0.40),
}
RESOLUTION_RANGE = (64, 1024)  # short side; their app offers 256..768
CONTROL_STRENGTH_RANGE = (0.0, 2.0)


@dataclass
class PoseDesignRequest:
    """A draft design on a body: a text concept + an OpenPose skeleton (from a photo or a preset)."""

    prompt: str = ""
    pose_image: Image.Image | None = None  # OpenPose skeleton (coloured limbs on black); its aspect sets the canvas
    category: str = "Dress"
    weights: str = "equifashion"  # see POSE_DESIGN_WEIGHTS
    added_prompt: str = POSE_DESIGN_ADDED_PROMPT
    negative_prompt: str = POSE_DESIGN_NEGATIVE
    resolution: int = 512  # short side (multiples of 64, like their resize_image)
    control_strength: float = 1.0
    guess_mode: bool = False
    num_inference_steps: int = 100
    guidance_scale: float = 9.0
    eta: float = 0.0
    seed: int = 42  # -1 = random
    num_images: int = 1
    white_background: bool = True  # background removed and composited on white

    def params(self) -> dict[str, Any]:
        return {
            "task": "pose_design", "prompt": self.prompt, "category": self.category, "weights": self.weights,
            "added_prompt": self.added_prompt, "negative_prompt": self.negative_prompt,
            "resolution": self.resolution, "control_strength": self.control_strength, "guess_mode": self.guess_mode,
            "num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale, "eta": self.eta,
            "seed": self.seed, "num_images": self.num_images, "white_background": self.white_background,
            "scheduler": "DDIM",
        }


@dataclass
class AttributeEditRequest:
    """Edit one attribute of any image inside a region: masked re-noising from the attribute's start step."""

    image: Image.Image | None = None
    prompt: str = ""  # the attribute as words ("long sleeves", "a V-neck collar")
    attribute: str = "length"  # see ATTRIBUTES
    mask: Image.Image | None = None  # white = edit; None = the automatic region from the pose
    keypoints: Optional[list] = None  # 18 normalised OpenPose points; None = detected in ``image``
    category: str = "Dress"
    weights: str = "equifashion"
    pose_image: Image.Image | None = None  # skeleton for the ControlNet; None = drawn from the keypoints
    added_prompt: str = POSE_DESIGN_ADDED_PROMPT
    negative_prompt: str = POSE_DESIGN_NEGATIVE
    resolution: int = 512
    control_strength: float = 1.0
    num_inference_steps: int = 100
    guidance_scale: float = 9.0
    eta: float = 0.0
    seed: int = 42
    num_images: int = 1
    strength: Optional[float] = None  # fraction of the schedule re-run; None = the attribute's own start
    paste_mode: str = "feathered"  # feathered | hard | none (see PASTE_MODES)
    feather: int = 8

    def params(self) -> dict[str, Any]:
        return {
            "task": "attribute_edit", "prompt": self.prompt, "attribute": self.attribute, "category": self.category,
            "weights": self.weights, "painted_mask": self.mask is not None, "added_prompt": self.added_prompt,
            "negative_prompt": self.negative_prompt, "resolution": self.resolution,
            "control_strength": self.control_strength, "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale, "eta": self.eta, "seed": self.seed, "num_images": self.num_images,
            "strength": self.strength, "paste_mode": self.paste_mode, "feather": self.feather, "scheduler": "DDIM",
        }


# ------------------------------------------------------------------------------------------ task defaults
# The request each task's preset ``defaults:`` are checked against (one vocabulary: the request's field names).
DEFAULTS_REQUEST: dict[str, type] = {
    "garment": GarmentRequest, "tryon": TryOnRequest, "tryoff": TryOffRequest, "dressing": DressingRequest,
    "tryoff_temu": TemuTryOffRequest, "pose_design": PoseDesignRequest, "attribute_edit": AttributeEditRequest,
}


def request_defaults(task: str) -> dict[str, Any]:
    """The scalar (number / text / flag) fields of ``task``'s request with their dataclass defaults
    (None for an optional number such as the dressing garment guidance or the try-on canvas)."""
    return {
        f.name: f.default for f in fields(DEFAULTS_REQUEST[task])
        if isinstance(f.default, (bool, int, float, str)) or (f.default is None and _optional_number(f) is not None)
    }


def _optional_number(f) -> type | None:
    """int / float for a field annotated Optional[int] / Optional[float] (annotations are strings here)."""
    text = str(f.type)
    return float if "float" in text else int if "int" in text else None


def check_task_defaults(task: str, values: Any, source: str) -> dict[str, Any]:
    """Validate one task's preset defaults: known task, known field, the field's type; ValueError naming them."""
    if task not in DEFAULTS_REQUEST:
        raise ValueError(f"{source}: defaults.{task}: unknown task (known: {', '.join(DEFAULTS_REQUEST)})")
    if not isinstance(values, dict):
        raise ValueError(f"{source}: defaults.{task} must be a mapping of request fields")
    allowed = request_defaults(task)
    checked = {}
    for key, value in values.items():
        if key not in allowed:
            raise ValueError(
                f"{source}: defaults.{task}.{key} is not a field of {DEFAULTS_REQUEST[task].__name__} "
                f"(fields: {', '.join(sorted(allowed))})"
            )
        if allowed[key] is None:
            want = _optional_number(next(f for f in fields(DEFAULTS_REQUEST[task]) if f.name == key))
        else:
            want = type(allowed[key])
        ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ValueError(f"{source}: defaults.{task}.{key}={value!r} must be a {want.__name__}")
        checked[key] = value
    return checked
