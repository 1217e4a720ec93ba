"""Multi-garment dressing: the AnyDressing architecture, running on IMAGDressing-v1 weights.

Stages of one call (numbers match the comments in ``__call__``):
 1. check inputs; prepare garments (RGBA onto white, fitted on a white model-size canvas) and the pose
 2. community LoRAs on (shared base UNet / text encoder), for the whole call
 3. encode prompt and negative prompt
 4. garment encoding (GarmentsNet / GFE), ONCE at t=0: CLIP ``hidden_states[-2]`` of every garment ->
    Resampler -> 16 tokens for the garment UNet's cross-attention; the garment UNet runs over the N
    garments as a batch of N (garment i attends only within garment i), slot i's LoRA on its attn1
    Q/K/V, and every attn1 records its input by processor name
 5. denoising (DressingNet): the frozen shared UNet, attn1 = Dressing-Attention with the reference =
    the N garments' recorded tokens concatenated along the token axis (F_all) and scale lambda, attn2 =
    text; the guidance branches (neither / garment-only / text+garment) batched in ONE UNet call;
    optional ControlNet OpenPose residuals
 6. decode

Joint guidance (text scale s_T, garment scale s_G):
    eps = eps_u + s_T (eps_tc - eps_c) + s_G (eps_c - eps_u)
        = (1 - s_G) eps_u + (s_G - s_T) eps_c + s_T eps_tc
so only the branches with a non-zero weight are computed: s_T == s_G is ordinary CFG (2 branches), as
in IMAGDressing and the AnyDressing paper.

Command line: ``python -m pipelines.dressing --help``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from pipelines.core.attention import (
    MixedAttnProcessor,
    PlainAttnProcessor,
    ReferenceState,
    processor_names,
    project_out,
    sdpa,
    swapped_processors,
)
from pipelines.core.lora import LoraPlugins, check_lora_specs
from pipelines.core.sampling import (
    RunControl,
    check_steps,
    encode_prompts,
    generators,
    image_to_tensor,
    randn,
    resolve_seed,
    tensor_to_images,
    vae_decode,
    vae_encode,
)
from pipelines.dressing.checkpoints import SlotLoRAs, load_imagdressing, load_slot_loras
from pipelines.dressing.resampler import Resampler
from pipelines.preprocess.images import load_image
from pipelines.preprocess.pose import PoseEstimator, draw_openpose, load_pose_preset
from pipelines.types import (
    GARMENT_CATEGORIES,
    GARMENT_SCALE_RANGE,
    GUIDANCE_RANGE,
    MAX_GARMENTS,
    MAX_IMAGES,
    POSE_SCALE_RANGE,
    DressingRequest,
    DressingResult,
    Garment,
    LoraSpec,
    TaskResult,
)

logger = logging.getLogger(__name__)

# Blocks nudity (the IMAGDressing demo's negative prompt family) and the usual quality failures.
# --------------------------------------------------------------------------------------- processors
@dataclass
class GarmentEncoderState:
    """Per-call state of the garment UNet's self-attention processors."""

    store: dict[str, torch.Tensor] = field(default_factory=dict)  # processor name -> (N, HW, C) inputs
    loras: SlotLoRAs | None = None
    slot_ids: torch.Tensor | None = None  # (N,) LoRA set per garment row; -1 = none


class GarmentSelfAttnProcessor:
    """GFE self-attention: records its input (for Dressing-Attention) and adds the slot LoRA of each row.

    Row n of the batch is garment n, so attention never mixes garments; its Q/K/V get
    ``W x + scale * B_s A_s x`` with ``s = slot_ids[n]``.
    """

    def __init__(self, name: str, state: GarmentEncoderState) -> None:
        self.name = name
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        state = self.state
        state.store[self.name] = hidden_states if torch.is_grad_enabled() else hidden_states.detach()
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        layer = state.loras.layer(self.name) if state.loras is not None and state.slot_ids is not None else None
        if layer is not None:
            scale, ids = state.loras.scale, state.slot_ids
            query = query + layer.delta(0, hidden_states, ids, scale)
            key = key + layer.delta(1, hidden_states, ids, scale)
            value = value + layer.delta(2, hidden_states, ids, scale)
        return project_out(attn, sdpa(query, key, value, attn.heads))


# ------------------------------------------------------------------------------------------- helpers
def fit_on_white(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale ``image`` to fit inside (width, height) keeping its aspect, centred on white."""
    scale = min(width / image.width, height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(image.resize(size, Image.BICUBIC), ((width - size[0]) // 2, (height - size[1]) // 2))
    return canvas


def guidance_weights(text_scale: float, garment_scale: float) -> dict[str, float]:
    """Non-zero weights of the branches u (neither), c (garment only), tc (text + garment)."""
    weights = {"u": 1.0 - garment_scale, "c": garment_scale - text_scale, "tc": text_scale}
    return {branch: w for branch, w in weights.items() if w != 0.0}


def _bundle_size(modules: Sequence[torch.nn.Module]) -> tuple[int, int]:
    params = [p for m in modules for p in m.parameters()]
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


class DressingWeights:
    """The IMAGDressing-derived parts, shared through the registry: garment UNet, Resampler, DA processors,
    slot LoRAs. (``num_parameters``/``num_bytes`` let the registry report its size.)"""

    def __init__(self, garment_unet, resampler: Resampler, processors: dict[str, MixedAttnProcessor], slot_loras: SlotLoRAs | None, report=None) -> None:
        self.garment_unet, self.resampler, self.processors = garment_unet, resampler, processors
        self.slot_loras, self.report = slot_loras, report
        modules = [garment_unet, resampler, *processors.values()] + ([slot_loras] if slot_loras is not None else [])
        self.num_parameters, self.num_bytes = _bundle_size(modules)


# ------------------------------------------------------------------------------------------ pipeline
class DressingPipeline:
    """GarmentsNet (garment UNet + Resampler + slot LoRAs) and DressingNet (the shared frozen base UNet
    with Dressing-Attention). Built from shared components; see :meth:`from_registry`."""

    def __init__(
        self,
        *,
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler_factory,
        garment_unet,
        resampler: Resampler,
        dressing_processors: dict[str, MixedAttnProcessor],
        image_encoder,
        image_processor,
        slot_loras: SlotLoRAs | None = None,
        controlnet=None,
        lora_plugins: LoraPlugins | None = None,
    ) -> None:
        self.vae, self.text_encoder, self.tokenizer, self.unet = vae, text_encoder, tokenizer, unet
        self.scheduler_factory = scheduler_factory
        self.garment_unet, self.resampler = garment_unet, resampler
        self.dressing_processors = dressing_processors
        self.image_encoder, self.image_processor = image_encoder, image_processor
        self.slot_loras, self.controlnet = slot_loras, controlnet
        self.lora_plugins = lora_plugins or LoraPlugins(unet, text_encoder, tokenizer, vae)
        hidden = image_encoder.config.hidden_size
        if resampler.config.embedding_dim != hidden:
            raise ValueError(
                f"the Resampler expects {resampler.config.embedding_dim}-wide CLIP features but the image "
                f"encoder gives {hidden}: use the encoder the checkpoint was trained with (h94/IP-Adapter ViT-H)"
            )
        missing = sorted(n for n in processor_names(unet) if ".attn1." in n and n not in dressing_processors)
        if missing:
            raise ValueError(f"no Dressing-Attention weights for {missing[0]} ({len(missing)} layers)")

    # ------------------------------------------------------------------------------------ construction
    @classmethod
    def from_registry(cls, registry, need_pose: bool = False, slot_loras_path: str | Path | None = None) -> "DressingPipeline":
        """Assemble from the shared registry; IMAGDressing loads once per registry (and slot LoRAs if given)."""
        device, dtype = registry.device, registry.dtype
        unet = registry.get("unet")

        def build() -> DressingWeights:
            from diffusers import UNet2DConditionModel

            garment_unet = UNet2DConditionModel.from_config(unet.config)
            resampler, processors, report = load_imagdressing(registry.checkpoint("dressing_imagdressing"), garment_unet, unet)
            for module in (garment_unet, resampler, *processors.values()):
                module.to(device, dtype).requires_grad_(False).eval()
            return DressingWeights(garment_unet, resampler, processors, None, report)

        weights = registry.shared("dressing_imagdressing", build, "IMAGDressing checkpoint")
        slot_loras = None
        if slot_loras_path:
            def build_loras() -> SlotLoRAs:
                loras, _ = load_slot_loras(slot_loras_path, weights.garment_unet)
                return loras.to(device, dtype).requires_grad_(False)

            slot_loras = registry.shared(f"dressing_slot_loras:{Path(slot_loras_path).resolve()}", build_loras, str(slot_loras_path))
        text_encoder, tokenizer, vae = registry.get("text_encoder"), registry.get("tokenizer"), registry.get("vae")
        plugins = registry.shared("lora_plugins", lambda: LoraPlugins(unet, text_encoder, tokenizer, vae), "LoRA plug-ins")
        return cls(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            scheduler_factory=registry.scheduler, garment_unet=weights.garment_unet, resampler=weights.resampler,
            dressing_processors=weights.processors, image_encoder=registry.get("image_encoder"),
            image_processor=registry.get("image_processor"), slot_loras=slot_loras,
            controlnet=registry.get("controlnet_openpose") if need_pose else None, lora_plugins=plugins,
        )

    # ---------------------------------------------------------------------------------------- checks
    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def check_inputs(self, request: DressingRequest) -> None:
        """Raise ValueError with a sentence naming the bad argument."""
        garments = request.garments
        if not isinstance(garments, (list, tuple)) or len(garments) == 0:
            raise ValueError("at least one garment image is required: add a garment to a slot")
        if len(garments) > MAX_GARMENTS:
            raise ValueError(f"{len(garments)} garments were given; at most {MAX_GARMENTS} can be dressed at once")
        for index, garment in enumerate(garments):
            if not isinstance(garment, Garment):
                raise ValueError(f"garment {index + 1} must be a Garment(image, category), got {type(garment).__name__}")
            if not isinstance(garment.image, (Image.Image, np.ndarray, str, Path)):
                raise ValueError(f"garment {index + 1} is not an image (got {type(garment.image).__name__})")
            if garment.category not in GARMENT_CATEGORIES:
                raise ValueError(
                    f"garment {index + 1}: unknown category {garment.category!r}; use one of {', '.join(GARMENT_CATEGORIES)}"
                )
        multiple = self.vae_scale * 2 ** (len(self.unet.config.block_out_channels) - 1)
        for label, value in (("height", request.height), ("width", request.width)):
            if not isinstance(value, int) or value % multiple or not multiple <= value <= 2048:
                raise ValueError(f"{label}={value!r} must be a multiple of {multiple} between {multiple} and 2048")
        check_steps(request.num_inference_steps)
        if not isinstance(request.num_images, int) or not 1 <= request.num_images <= MAX_IMAGES:
            raise ValueError(f"num_images={request.num_images!r} must be between 1 and {MAX_IMAGES}")
        low, high = GUIDANCE_RANGE
        for label, value in (("guidance_scale", request.guidance_scale), ("garment_guidance_scale", request.garment_guidance)):
            if not low <= value <= high:
                raise ValueError(f"{label}={value!r} must be between {low:g} and {high:g}")
        low, high = GARMENT_SCALE_RANGE
        if not low <= request.garment_scale <= high:
            raise ValueError(f"garment_scale={request.garment_scale!r} must be between {low:g} and {high:g}")
        low, high = POSE_SCALE_RANGE
        if not low <= request.pose_scale <= high:
            raise ValueError(f"pose_scale={request.pose_scale!r} must be between {low:g} and {high:g}")
        if request.pose_image is not None:
            if not isinstance(request.pose_image, Image.Image):
                raise ValueError(f"pose_image is not an image (got {type(request.pose_image).__name__})")
            if self.controlnet is None:
                raise ValueError("a pose was given but the OpenPose ControlNet is not loaded")
        check_lora_specs(request.loras)

    def prepare_garments(self, request: DressingRequest) -> list[Image.Image]:
        """Each garment as RGB (alpha onto white) fitted on a white (width, height) canvas."""

        prepared = []
        for index, garment in enumerate(request.garments):
            try:
                image = load_image(garment.image, name=f"garment {index + 1}")
            except TypeError as error:
                raise ValueError(str(error)) from error
            prepared.append(fit_on_white(image, request.width, request.height))
        return prepared

    # ----------------------------------------------------------------------------------- garment stage
    def clip_features(self, garments: list[Image.Image]) -> torch.Tensor:
        """Penultimate CLIP hidden states (N, 1 + patches, hidden) of each garment, padded to square."""
        squares = [fit_on_white(g, max(g.size), max(g.size)) for g in garments]
        pixels = self.image_processor(images=squares, return_tensors="pt").pixel_values
        encoder = self.image_encoder
        out = encoder(pixels.to(encoder.device, encoder.dtype), output_hidden_states=True)
        return out.hidden_states[-2]

    def encode_garments(self, garments: list[Image.Image], slot_ids: list[int] | None = None) -> dict[str, torch.Tensor]:
        """Run the garment UNet once at t=0 over all N garments (batch N).

        Returns ``{attn1 processor name: (1, N * HW, C)}``: each layer's recorded inputs, the garments
        concatenated along the token axis (AnyDressing's F_all).
        """
        device, dtype = self.garment_unet.device, self.garment_unet.dtype
        count = len(garments)
        tokens = self.resampler(self.clip_features(garments).to(device, dtype))  # (N, 16, D)
        pixels = torch.cat([image_to_tensor(g, g.width, g.height) for g in garments])  # (N, 3, H, W)
        latents = vae_encode(self.vae, pixels).to(device, dtype)  # (N, 4, h, w)
        state = GarmentEncoderState()
        loras = self.slot_loras
        if loras is not None and slot_ids is not None and loras.is_active():
            state.loras, state.slot_ids = loras, torch.tensor(slot_ids, device=device)
        processors = {
            name: GarmentSelfAttnProcessor(name, state) if ".attn1." in name else PlainAttnProcessor()
            for name in processor_names(self.garment_unet)
        }
        timestep = torch.zeros(count, device=device, dtype=torch.long)
        with swapped_processors(self.garment_unet, processors):
            self.garment_unet(latents, timestep, encoder_hidden_states=tokens)
        return {name: h.reshape(1, -1, h.shape[-1]) for name, h in state.store.items()}  # (1, N*HW, C)

    def slot_ids_for(self, request: DressingRequest) -> list[int] | None:
        if self.slot_loras is None:
            return None
        return [self.slot_loras.slot_for(i, g.category) for i, g in enumerate(request.garments)]

    # ------------------------------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(self, request: DressingRequest, control: RunControl | None = None) -> DressingResult:
        """Dress a person in the request's 1..MAX_GARMENTS garments.

        Returns ``num_images`` PIL images of (H, W) = (height, width); image i uses seed + i.
        ``garment_scale`` (lambda) in [0, 1.5], guidance scales in [0, 30], ``pose_scale`` in [0, 2].
        """
        # 1. check inputs, prepare garments and pose
        self.check_inputs(request)
        garments = self.prepare_garments(request)
        control = control or RunControl()
        control.overall_total = request.num_inference_steps
        seed = resolve_seed(request.seed)
        batch, height, width = request.num_images, request.height, request.width
        device, dtype = self.unet.device, self.unet.dtype
        gens = generators(seed, batch, device)
        weights = guidance_weights(request.guidance_scale, request.garment_guidance)
        branches = list(weights)  # order u, c, tc: garment rows are contiguous at the end
        garment_rows = [i for i, b in enumerate(branches) if b != "u"]
        use_garments = bool(garment_rows) and request.garment_scale != 0
        pose = request.pose_image
        control.check()

        # 2. community LoRAs (text encoder and UNet) for the whole call
        with self.lora_plugins.applied(request.loras):
            # 3. prompts: one block of B rows per branch
            negative = encode_prompts(self.tokenizer, self.text_encoder, [request.negative_prompt or ""] * batch)
            positive = encode_prompts(self.tokenizer, self.text_encoder, [request.prompt or ""] * batch)
            context = torch.cat([positive if b == "tc" else negative for b in branches]).to(device, dtype)  # (nB, 77, D)

            # 4. garment features, once
            state = ReferenceState()
            if use_garments:
                state.features = self.encode_garments(garments, self.slot_ids_for(request))
                control.check()
            state.scale = request.garment_scale
            state.enabled = use_garments
            state.rows = slice(garment_rows[0] * batch, len(branches) * batch) if use_garments else None

            # 5. denoising
            processors: dict[str, Any] = {}
            for name in processor_names(self.unet):
                if ".attn1." in name:
                    processor = self.dressing_processors[name]
                    processor.state = state
                    processors[name] = processor
                else:
                    processors[name] = PlainAttnProcessor()
            pose_tensor = None
            if pose is not None:
                pose_tensor = image_to_tensor(pose.convert("RGB"), width, height).add(1).div(2)  # (1, 3, H, W) in [0, 1]
                pose_tensor = pose_tensor.to(device, self.controlnet.dtype).expand(len(branches) * batch, -1, -1, -1)
            scheduler = self.scheduler_factory()
            scheduler.set_timesteps(request.num_inference_steps, device=device)
            scale = self.vae_scale
            latents = randn((batch, 4, height // scale, width // scale), gens, device, dtype) * scheduler.init_noise_sigma
            try:
                with swapped_processors(self.unet, processors):
                    for index, timestep in enumerate(scheduler.timesteps):
                        model_input = scheduler.scale_model_input(torch.cat([latents] * len(branches)), timestep)
                        extra = {}
                        if pose_tensor is not None and request.pose_scale != 0:
                            down, mid = self.controlnet(
                                model_input.to(self.controlnet.dtype), timestep,
                                encoder_hidden_states=context.to(self.controlnet.dtype), controlnet_cond=pose_tensor,
                                conditioning_scale=request.pose_scale, return_dict=False,
                            )
                            extra = {
                                "down_block_additional_residuals": [r.to(dtype) for r in down],
                                "mid_block_additional_residual": mid.to(dtype),
                            }
                        noise = self.unet(model_input, timestep, encoder_hidden_states=context, **extra).sample
                        parts = noise.chunk(len(branches))
                        noise = sum(weights[b] * part for b, part in zip(branches, parts))
                        latents = scheduler.step(noise, timestep, latents).prev_sample
                        control.step("dressing", index + 1, len(scheduler.timesteps), latents)
            finally:
                state.features, state.kv_cache = {}, {}

        # 6. decode
        images = tensor_to_images(vae_decode(self.vae, latents))
        params = dict(request.params(), seed=seed, task="dressing")
        return DressingResult(images, [seed + i for i in range(batch)], params, garments, pose)


# ------------------------------------------------------------------------------------ service tasks
def run_task(registry, params: dict[str, Any], control: RunControl):
    """The studio service's ``dressing`` task: plain params in, a TaskResult out.

    ``params``: DressingRequest fields, with ``garments`` as ``[{"image": PIL, "category": str}, ...]``
    and ``loras`` as ``[(path, weight), ...]``; optional ``slot_loras`` (a slot-LoRA file).
    """

    params = dict(params)
    garments = []
    for index, item in enumerate(params.pop("garments", None) or []):
        if isinstance(item, Garment):
            garments.append(item)
        elif isinstance(item, dict) and set(item) <= {"image", "category"}:
            garments.append(Garment(item.get("image"), item.get("category") or "upper"))
        else:
            raise ValueError(f"garment {index + 1}: expected {{'image': ..., 'category': ...}}, got {type(item).__name__}")
    loras = [spec if isinstance(spec, LoraSpec) else LoraSpec(str(spec[0]), float(spec[1])) for spec in params.pop("loras", None) or []]
    slot_loras = params.pop("slot_loras", None)
    if slot_loras is None and "dressing_slot_loras" in registry.preset.checkpoints:  # "Use in studio" of a dressing run
        slot_loras = registry.checkpoint("dressing_slot_loras")
    request = DressingRequest(garments=garments, loras=loras, **params)
    pipeline = DressingPipeline.from_registry(registry, need_pose=request.pose_image is not None, slot_loras_path=slot_loras)
    result = pipeline(request, control)
    per_image = [dict(result.params, seed=seed, num_images=1) for seed in result.seeds]
    return TaskResult(result.images, per_image, {"garments": result.garments, "pose_image": result.pose_image})


def run_pose_task(registry, params: dict[str, Any], control: RunControl):
    """The service's ``dressing_pose`` task: ``{"photo": PIL}`` or ``{"preset": name}`` plus ``width``,
    ``height`` -> a TaskResult whose one image is the OpenPose skeleton (``extras["source"]`` says how)."""

    width, height = int(params["width"]), int(params["height"])
    if params.get("preset"):
        image, source = draw_openpose(load_pose_preset(params["preset"]).keypoints, width, height), f"preset {params['preset']}"
    elif params.get("photo") is not None:
        estimator = PoseEstimator.shared(registry)
        result = estimator.estimate(params["photo"], width, height)
        image, source = result.image, result.source
    else:
        raise ValueError("choose a pose preset or upload a photo of a person to take the pose from")
    return TaskResult([image], [{"task": "pose", "source": source}], {"source": source})
