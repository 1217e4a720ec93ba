"""Pose-guided design and attribute editing (the EquiFashion method): a ControlNet-OpenPose text-to-image draft,
then masked re-noising edits of one attribute.

Draft (``draft``)::

    prompt "<category>, <concept>, <added prompt>" --CLIP--> context (2B, 77, D)   [negative | positive]
    skeleton (1, 3, H, W) in [0, 1] ------------------------> ControlNet hint
    latents (B, 4, H/8, W/8) ~ N(0, 1)
    for t in DDIM(steps):                     x = [latents, latents]           (2B, 4, h, w)
        residuals = ControlNet(x, t, context, hint) * scales     guess mode: on the positive half only,
        eps = UNet(x, t, context, + residuals)                   scales = strength * 0.825^(12 - i)
        latents = DDIM step(eps_u + g * (eps_c - eps_u))
    VAE decode -> background flood-filled to white (their app: rembg)

Attribute edit (``edit``), on ANY image::

    x0 = VAE(image on the canvas); keep = 1 - region (latent size)
    start at index round(skip * steps) of the schedule (skip: A1 length 0.08 ... A5 hem 0.40)
    latents = q(x0, t_start, noise)
    for t in the remaining steps:
        latents = keep * q(x0, t, fresh noise) + (1 - keep) * latents      (the original's blend, BEFORE each step)
        latents = DDIM step(CFG(UNet + ControlNet(skeleton of the image's pose)))
    VAE decode -> pasted back into the original photo inside the region (feathered | hard | none)

The region is painted, or automatic: :func:`attribute_region` from the 18 OpenPose keypoints (the draft's own,
kept in its PNG parameters, or detected in the image) per category and attribute.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from pipelines.core.sampling import (
    RunControl,
    check_steps,
    encode_prompts,
    generators,
    image_to_tensor,
    mask_to_tensor,
    randn,
    resolve_seed,
    step_kwargs,
    tensor_to_images,
    vae_decode,
    vae_encode,
)
from pipelines.preprocess.framing import check_paste, fit_to_canvas, paste_results
from pipelines.preprocess.images import load_image, whiten_background
from pipelines.preprocess.pose import PoseEstimator, draw_openpose, load_pose_preset
from pipelines.types import (
    ATTRIBUTES,
    CONTROL_STRENGTH_RANGE,
    GUIDANCE_RANGE,
    MAX_IMAGES,
    POSE_DESIGN_CATEGORIES,
    POSE_DESIGN_WEIGHTS,
    RESOLUTION_RANGE,
    AttributeEditRequest,
    ModelUnavailableError,
    PoseDesignRequest,
    TaskResult,
)

logger = logging.getLogger(__name__)

GUESS_DECAY = 0.825  # the cldm app's guess-mode scale per residual: strength * 0.825 ** (12 - i)


# ------------------------------------------------------------------------------------------ geometry
def canvas_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """Their ``resize_image``: the short side scaled to ``resolution``, both sides rounded to multiples of 64."""
    k = resolution / min(width, height)
    return max(64, int(round(width * k / 64.0)) * 64), max(64, int(round(height * k / 64.0)) * 64)


def compose_prompt(category: str, prompt: str, added: str) -> str:
    """The category folded into the prompt, then the fixed added prompt: "dress, <concept>, best quality, ..."."""
    return ", ".join(part for part in (category.lower(), (prompt or "").strip(), (added or "").strip()) if part)


def _points(keypoints: Sequence, width: int, height: int) -> list[Optional[np.ndarray]]:
    if keypoints is None or len(keypoints) != 18:
        raise ValueError("keypoints: 18 OpenPose points (x, y in 0..1, or None) are needed")
    return [None if p is None else np.array([float(p[0]) * width, float(p[1]) * height]) for p in keypoints]


def _capsule(draw: ImageDraw.ImageDraw, a: np.ndarray, b: np.ndarray, radius: float) -> None:
    draw.line([tuple(a), tuple(b)], fill=255, width=max(1, int(round(2 * radius))))
    for point in (a, b):
        draw.ellipse([point[0] - radius, point[1] - radius, point[0] + radius, point[1] + radius], fill=255)


def attribute_region(keypoints: Sequence, size: tuple[int, int], category: str, attribute: str) -> Image.Image:
    """The automatic edit region (white) of ``attribute`` for a ``category`` garment worn in pose ``keypoints``.

    From OpenPose's 18 points (1 neck, 2/5 shoulders, 3/6 elbows, 4/7 wrists, 8/11 hips, 9/12 knees, 10/13
    ankles); ``s`` = shoulder width:
      length        the band from the hips (tops: the waist) down to the ankles (tops: mid-thigh), 1.2 s wide
                    either side of the body centre, so the garment can grow or shrink;
      sleeve_length both arms, shoulder -> wrist and past it, 0.3 s thick;
      sleeve_type   the upper arms and the shoulder caps, 0.35 s thick;
      collar        neck to upper chest, 0.9 s wide;
      hem           a band around the garment's lower edge (tops: hips, skirts/dresses/coats: knees,
                    pants and jumpsuits: ankles).
    Raises ValueError naming the points it needs when they are missing.
    """
    width, height = size
    if attribute not in ATTRIBUTES:
        raise ValueError(f"attribute={attribute!r} must be one of {', '.join(ATTRIBUTES)}")
    if category not in POSE_DESIGN_CATEGORIES:
        raise ValueError(f"category={category!r} must be one of {', '.join(POSE_DESIGN_CATEGORIES)}")
    p = _points(keypoints, width, height)

    def need(*indices: int) -> list[np.ndarray]:
        missing = [i for i in indices if p[i] is None]
        if missing:
            raise ValueError(f"the automatic {ATTRIBUTES[attribute][0]} region needs pose points {missing} "
                             "(not visible in this pose); paint the region instead")
        return [p[i] for i in indices]

    neck, right_shoulder, left_shoulder = need(1, 2, 5)
    s = max(float(np.linalg.norm(right_shoulder - left_shoulder)), 4.0)
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    top_wear = category in ("Blouse", "Sweater")
    if attribute in ("sleeve_length", "sleeve_type"):
        for shoulder, elbow, wrist in ((2, 3, 4), (5, 6, 7)):
            if p[shoulder] is None or p[elbow] is None:
                continue
            if attribute == "sleeve_type":
                _capsule(draw, p[shoulder], p[elbow], 0.35 * s)
            else:
                end = p[wrist] if p[wrist] is not None else p[elbow] + (p[elbow] - p[shoulder])
                beyond = end + 0.25 * (end - p[elbow])
                _capsule(draw, p[shoulder], p[elbow], 0.3 * s)
                _capsule(draw, p[elbow], beyond, 0.3 * s)
        if not np.asarray(mask).any():
            need(3, 6)
        return mask
    if attribute == "collar":
        chin = p[0] if p[0] is not None else neck - np.array([0, 0.5 * s])
        top = (neck + chin) / 2
        bottom = neck + np.array([0, 0.45 * s])
        draw.rectangle([neck[0] - 0.45 * s, top[1], neck[0] + 0.45 * s, bottom[1]], fill=255)
        return mask
    right_hip, left_hip = need(8, 11)
    hip = (right_hip + left_hip) / 2
    knees = [p[i] for i in (9, 12) if p[i] is not None]
    ankles = [p[i] for i in (10, 13) if p[i] is not None]
    knee_y = max(k[1] for k in knees) if knees else hip[1] + 1.3 * s
    ankle_y = max(a[1] for a in ankles) if ankles else knee_y + 1.3 * s
    centre = (neck[0] + hip[0]) / 2
    half = 1.2 * s
    if attribute == "length":
        if top_wear:
            upper, lower = neck[1] + 0.6 * (hip[1] - neck[1]), hip[1] + 0.5 * (knee_y - hip[1])
        else:
            upper, lower = hip[1], ankle_y + 0.15 * s
        draw.rectangle([centre - half, upper, centre + half, lower], fill=255)
        return mask
    # hem
    edge = hip[1] if top_wear else ankle_y if category in ("Pant", "Jumpsuit") else knee_y
    band = 0.35 * s
    draw.rectangle([centre - half, edge - band, centre + half, edge + band], fill=255)
    return mask


# ------------------------------------------------------------------------------------------ pipeline
@dataclass
class PoseDesignResult:
    images: list[Image.Image]
    seeds: list[int]
    params: dict[str, Any]
    pose_image: Image.Image | None = None
    mask: Image.Image | None = None  # edits: the region at the original's size
    raw: list[Image.Image] = field(default_factory=list)  # the canvases before background/paste-back
    latents: Any = None  # the final latents (B, 4, h, w)


class PoseDesignPipeline:
    """ControlNet-OpenPose text-to-image + masked re-noising, on either weight variant (POSE_DESIGN_WEIGHTS)."""

    def __init__(self, tokenizer, text_encoder, unet, controlnet, vae, scheduler_factory, weights: str) -> None:
        self.tokenizer, self.text_encoder, self.unet, self.controlnet, self.vae = tokenizer, text_encoder, unet, controlnet, vae
        self.scheduler_factory = scheduler_factory
        self.weights = weights
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)

    @classmethod
    def from_registry(cls, registry, weights: str) -> "PoseDesignPipeline":
        if weights not in POSE_DESIGN_WEIGHTS:
            raise ValueError(f"weights={weights!r} must be one of {', '.join(POSE_DESIGN_WEIGHTS)}")
        if weights == "sd15_openpose":
            return cls(registry.get("tokenizer"), registry.get("text_encoder"), registry.get("unet"),
                       registry.get("controlnet_openpose"), registry.get("vae"), registry.scheduler, weights)
        parts = registry.shared("equifashion", lambda: load_equifashion(registry), "EquiFashion ControlLDM")

        def eps_ddim():  # the checkpoint is EPS-trained (SD2.1-base), whatever the base model's scheduler says
            scheduler = registry.scheduler()
            return type(scheduler).from_config(scheduler.config, prediction_type="epsilon")

        return cls(parts["tokenizer"], parts["text_encoder"], parts["unet"], parts["controlnet"], parts["vae"],
                   eps_ddim, weights)

    # ------------------------------------------------------------------------------ checks
    def _check_common(self, request) -> None:
        if request.category not in POSE_DESIGN_CATEGORIES:
            raise ValueError(f"category={request.category!r} must be one of {', '.join(POSE_DESIGN_CATEGORIES)}")
        low, high = RESOLUTION_RANGE
        if not isinstance(request.resolution, int) or not low <= request.resolution <= high:
            raise ValueError(f"resolution={request.resolution!r} must be an integer between {low} and {high}")
        low, high = CONTROL_STRENGTH_RANGE
        if not low <= request.control_strength <= high:
            raise ValueError(f"control_strength={request.control_strength!r} must be between {low:g} and {high:g}")
        low, high = GUIDANCE_RANGE
        if not low <= request.guidance_scale <= high:
            raise ValueError(f"guidance_scale={request.guidance_scale!r} must be between {low:g} and {high:g}")
        if not 0.0 <= request.eta <= 1.0:
            raise ValueError(f"eta={request.eta!r} must be between 0 and 1")
        check_steps(request.num_inference_steps)
        if not 1 <= request.num_images <= MAX_IMAGES:
            raise ValueError(f"num_images={request.num_images!r} must be between 1 and {MAX_IMAGES}")

    # ------------------------------------------------------------------------------ shared loop
    def _context(self, request, batch: int) -> torch.Tensor:
        prompt = compose_prompt(request.category, request.prompt, request.added_prompt)
        negative = encode_prompts(self.tokenizer, self.text_encoder, [request.negative_prompt or ""] * batch)
        positive = encode_prompts(self.tokenizer, self.text_encoder, [prompt] * batch)
        return torch.cat([negative, positive]).to(self.unet.device, self.unet.dtype)  # (2B, 77, D)

    def _denoise(self, latents, timesteps, scheduler, context, hint, request, guess_mode: bool, control: RunControl,
                 stage: str, gens, keep=None, x0=None) -> torch.Tensor:
        """The DDIM loop with batched CFG; ``keep``/``x0``: the unmasked region is re-noised from ``x0`` first."""
        batch = latents.shape[0]
        device, dtype = self.unet.device, self.unet.dtype
        use_control = hint is not None and request.control_strength != 0
        if use_control:
            hint = hint.to(device, self.controlnet.dtype).expand(batch if guess_mode else 2 * batch, -1, -1, -1)
        for index, timestep in enumerate(timesteps):
            if keep is not None:
                noised = scheduler.add_noise(x0, randn(x0.shape, gens, device, dtype), timestep.reshape(1))
                latents = keep * noised + (1 - keep) * latents
            model_input = scheduler.scale_model_input(torch.cat([latents, latents]), timestep)
            extra = {}
            if use_control:
                rows = model_input[batch:] if guess_mode else model_input
                down, mid = self.controlnet(
                    rows.to(self.controlnet.dtype), timestep, encoder_hidden_states=context[-rows.shape[0]:].to(self.controlnet.dtype),
                    controlnet_cond=hint, conditioning_scale=1.0, return_dict=False)
                residuals = [*down, mid]
                count = len(residuals)
                scales = ([request.control_strength * GUESS_DECAY ** (count - 1 - i) for i in range(count)] if guess_mode
                          else [request.control_strength] * count)
                residuals = [r.to(dtype) * s for r, s in zip(residuals, scales)]
                if guess_mode:  # the negative half gets no control
                    residuals = [torch.cat([torch.zeros_like(r), r]) for r in residuals]
                extra = {"down_block_additional_residuals": residuals[:-1], "mid_block_additional_residual": residuals[-1]}
            eps = self.unet(model_input, timestep, encoder_hidden_states=context, **extra).sample
            uncond, cond = eps.chunk(2)
            eps = uncond + request.guidance_scale * (cond - uncond)
            latents = scheduler.step(eps, timestep, latents, generator=gens[0],
                                     **step_kwargs(scheduler, request.eta)).prev_sample
            control.step(stage, index + 1, len(timesteps), latents)
        return latents

    # ------------------------------------------------------------------------------ draft
    def draft(self, request: PoseDesignRequest, control: RunControl | None = None) -> PoseDesignResult:
        # 1. check inputs; the canvas follows the skeleton's aspect (their resize_image)
        self._check_common(request)
        if not isinstance(request.pose_image, Image.Image):
            raise ValueError("a pose is needed: a skeleton from a photo of a person or a pose preset")
        width, height = canvas_size(*request.pose_image.size, request.resolution)
        control = control or RunControl()
        control.overall_total = request.num_inference_steps
        seed = resolve_seed(request.seed)
        batch, device, dtype = request.num_images, self.unet.device, self.unet.dtype
        gens = generators(seed, batch, device)
        # 2. prompts, hint, noise
        context = self._context(request, batch)
        hint = image_to_tensor(request.pose_image.convert("RGB"), width, height).add(1).div(2)  # (1, 3, H, W) [0, 1]
        scheduler = self.scheduler_factory()
        scheduler.set_timesteps(request.num_inference_steps, device=device)
        latents = randn((batch, 4, height // self.vae_scale, width // self.vae_scale), gens, device, dtype)
        latents = latents * scheduler.init_noise_sigma
        control.check()
        # 3. denoise, 4. decode, background to white
        latents = self._denoise(latents, scheduler.timesteps, scheduler, context, hint, request, request.guess_mode,
                                control, "draft", gens)
        raw = tensor_to_images(vae_decode(self.vae, latents))
        images = [whiten_background(image) for image in raw] if request.white_background else list(raw)
        params = dict(request.params(), seed=seed, width=width, height=height)
        pose = request.pose_image.convert("RGB").resize((width, height), Image.BILINEAR)
        return PoseDesignResult(images, [seed + i for i in range(batch)], params, pose, raw=raw)

    # ------------------------------------------------------------------------------ attribute edit
    def edit(self, request: AttributeEditRequest, control: RunControl | None = None) -> PoseDesignResult:
        # 1. check inputs; the image on its canvas, the region
        self._check_common(request)
        if request.attribute not in ATTRIBUTES:
            raise ValueError(f"attribute={request.attribute!r} must be one of {', '.join(ATTRIBUTES)}")
        if request.strength is not None and not 0.0 < request.strength <= 1.0:
            raise ValueError(f"strength={request.strength!r} must be in (0, 1]")
        check_paste(request.paste_mode, request.feather, 0)
        image = load_image(request.image, name="image to edit")
        width, height = canvas_size(*image.size, request.resolution)
        if request.mask is not None:
            region = load_image(request.mask, name="edit region").convert("L")
            if region.size != image.size:
                raise ValueError(f"the edit region is {region.size[0]}x{region.size[1]} px but the image is "
                                 f"{image.size[0]}x{image.size[1]} px; paint it on the image itself")
        elif request.keypoints is not None:
            region = attribute_region(request.keypoints, image.size, request.category, request.attribute)
        else:
            raise ValueError("no edit region: paint one, or give the pose keypoints for the automatic region")
        region = region.point(lambda v: 255 if v >= 128 else 0)
        if not np.asarray(region).any():
            raise ValueError("the edit region is empty: paint where the attribute should change")
        canvas, info = fit_to_canvas(image, width, height, mode="stretch")
        control = control or RunControl()
        seed = resolve_seed(request.seed)
        batch, device, dtype = request.num_images, self.unet.device, self.unet.dtype
        gens = generators(seed, batch, device)
        scale = self.vae_scale
        # 2. latents of the original, the keep mask at latent size (any edited pixel makes its latent editable)
        x0 = vae_encode(self.vae, image_to_tensor(canvas, width, height)).to(device, dtype).expand(batch, -1, -1, -1)
        edit = mask_to_tensor(region, width, height)
        edit = torch.nn.functional.max_pool2d(edit, scale).to(device, dtype)  # (1, 1, h, w)
        keep = 1 - edit
        # 3. the attribute's start on the schedule
        scheduler = self.scheduler_factory()
        scheduler.set_timesteps(request.num_inference_steps, device=device)
        skip = ATTRIBUTES[request.attribute][1] if request.strength is None else 1.0 - request.strength
        start = min(int(round(skip * request.num_inference_steps)), request.num_inference_steps - 1)
        timesteps = scheduler.timesteps[start:]
        control.overall_total = len(timesteps)
        context = self._context(request, batch)
        hint = None
        if request.pose_image is not None:
            hint = image_to_tensor(load_image(request.pose_image, "pose skeleton"), width, height).add(1).div(2)
        elif request.keypoints is not None:
            hint = image_to_tensor(draw_openpose(request.keypoints, width, height), width, height).add(1).div(2)
        noise = randn(x0.shape, gens, device, dtype)
        latents = scheduler.add_noise(x0, noise, timesteps[:1])
        control.check()
        # 4. denoise with the blend, 5. decode, paste back inside the region
        latents = self._denoise(latents, timesteps, scheduler, context, hint, request, False, control,
                                ATTRIBUTES[request.attribute][0], gens, keep=keep, x0=x0)
        raw = tensor_to_images(vae_decode(self.vae, latents))
        images = paste_results(image, raw, region, info, request.paste_mode, request.feather)
        params = dict(request.params(), seed=seed, width=width, height=height, start_index=start,
                      start_timestep=int(timesteps[0]))
        return PoseDesignResult(images, [seed + i for i in range(batch)], params, mask=region, raw=raw, latents=latents)


def load_equifashion(registry) -> dict[str, Any]:
    """The EquiFashion ControlLDM of the preset (checkpoint ``equifashion``, original config
    ``models.equifashion_config`` or the shipped cldm_v2.yaml) + the SD2 tokenizer (``models.equifashion_tokenizer``)."""
    from transformers import CLIPTokenizer

    from pipelines.core.registry import from_pretrained
    from pipelines.posedesign.checkpoints import load_controlldm

    models = registry.preset.models
    parts = load_controlldm(registry.checkpoint("equifashion"), models.get("equifashion_config"), registry.dtype)
    tokenizer_location = models.get("equifashion_tokenizer")
    if not tokenizer_location:
        raise ModelUnavailableError(f"preset {registry.preset.name!r} names no models.equifashion_tokenizer "
                                    "(stabilityai/stable-diffusion-2-1-base holds the SD2 tokenizer)")
    modules = {name: getattr(parts, name).to(registry.device) for name in ("unet", "controlnet", "vae", "text_encoder")}
    modules["tokenizer"] = from_pretrained(CLIPTokenizer, tokenizer_location, subfolder="tokenizer")
    modules["report"] = parts.report
    return modules


# ------------------------------------------------------------------------------------ service tasks
def pose_for(registry, params: dict[str, Any], width: int, height: int) -> tuple[Image.Image, Any, str]:
    """(skeleton, keypoints, source) from ``pose_image`` (a skeleton), ``pose_preset`` (a name) or ``pose_photo``."""
    if params.get("pose_preset"):
        keypoints = load_pose_preset(params["pose_preset"]).keypoints
        return draw_openpose(keypoints, width, height), keypoints, f"preset {params['pose_preset']}"
    if params.get("pose_photo") is not None:
        estimator = PoseEstimator.shared(registry)
        result = estimator.estimate(load_image(params["pose_photo"], name="pose photo"), width, height)
        return result.image, result.keypoints, result.source
    if params.get("pose_image") is not None:
        return load_image(params["pose_image"], name="pose skeleton"), params.get("keypoints"), "skeleton"
    raise ValueError("a pose is needed: upload a photo of a person or pick a pose preset")


def _pose_canvas(params: dict[str, Any], resolution: int) -> tuple[int, int]:
    photo = params.get("pose_photo") or params.get("pose_image")
    if isinstance(photo, Image.Image):
        return canvas_size(*photo.size, resolution)
    return canvas_size(3, 4, resolution)  # presets: a 3:4 portrait canvas


def run_task(registry, params: dict[str, Any], control: RunControl) -> TaskResult:
    """The ``pose_design`` task: PoseDesignRequest fields, the pose as ``pose_photo`` | ``pose_preset`` |
    ``pose_image`` (+ ``keypoints``). Every image's params carry the pose keypoints for later edits."""
    params = dict(params)
    sources = {key: params.pop(key, None) for key in ("pose_photo", "pose_preset", "pose_image", "keypoints")}
    request = PoseDesignRequest(**params)
    width, height = _pose_canvas(sources, request.resolution)
    skeleton, keypoints, source = pose_for(registry, sources, width, height)
    request.pose_image = skeleton
    result = PoseDesignPipeline.from_registry(registry, request.weights).draft(request, control)
    points = None if keypoints is None else [None if p is None else [round(float(p[0]), 4), round(float(p[1]), 4)]
                                             for p in keypoints]
    per_image = [dict(result.params, seed=seed, num_images=1, keypoints=points, pose_source=source)
                 for seed in result.seeds]
    return TaskResult(result.images, per_image, {"pose_image": result.pose_image, "keypoints": points,
                                                 "pose_source": source, "raw": result.raw})


def run_edit_task(registry, params: dict[str, Any], control: RunControl) -> TaskResult:
    """The ``attribute_edit`` task: AttributeEditRequest fields; without a painted ``mask`` and ``keypoints``
    the pose is detected in the image (or taken from ``pose_photo``) for the automatic region."""
    params = dict(params)
    photo = params.pop("pose_photo", None)
    request = AttributeEditRequest(**params)
    if request.mask is None and request.keypoints is None:
        image = load_image(request.image, name="image to edit")
        estimator = PoseEstimator.shared(registry)
        try:
            request.keypoints = estimator.estimate(photo if photo is not None else image).keypoints
        except ValueError as error:
            raise ValueError("no person was found in the image for the automatic region; paint the region "
                             "to edit instead") from error
    result = PoseDesignPipeline.from_registry(registry, request.weights).edit(request, control)
    per_image = [dict(result.params, seed=seed, num_images=1) for seed in result.seeds]
    return TaskResult(result.images, per_image, {"mask": result.mask, "raw": result.raw})


def run_region_task(registry, params: dict[str, Any], control: RunControl) -> TaskResult:
    """The ``attribute_region`` task (preview): ``image``, ``attribute``, ``category``, optional ``keypoints``
    -> the automatic region as a white-on-black image the size of ``image``."""
    image = load_image(params["image"], name="image to edit")
    keypoints = params.get("keypoints")
    source = "the draft's pose"
    if keypoints is None:
        estimator = PoseEstimator.shared(registry)
        result = estimator.estimate(image)
        keypoints, source = result.keypoints, result.source
    region = attribute_region(keypoints, image.size, params.get("category", "Dress"), params.get("attribute", "length"))
    return TaskResult([region], [{"task": "attribute_region", "source": source}], {"source": source})

