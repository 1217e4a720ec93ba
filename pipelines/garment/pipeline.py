"""Garment design from sketch + colour + logo: the IMAGGarment-1 GAM + LEM method.

Stages of one call (numbers match the comments in ``__call__``):
 1. check inputs            2. encode prompt / negative prompt        3. colour tokens (optional)
 4. sketch reference: the silhouette UNet runs ONCE at t=0 and records every attn1 input (optional)
 5. GAM denoising: mixed attention on every attn1 of the frozen main UNet, colour adapter on every
    attn2, CFG batched in one UNet call (reference and colour ON only in the conditional rows)
 6. LEM (only with a logo): concat-inpainting on the shared 9-channel UNet with the LEM attn1 weight set,
    the GAM latent on top (zeroed under the logo mask), the logo latent below
 7. decode (optionally paste the GAM image back outside the logo mask)

Command line: ``python -m pipelines.garment --help``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from PIL import Image

from pipelines.core.attention import (
    PlainAttnProcessor,
    ReferenceRecorder,
    ReferenceState,
    SkipAttnProcessor,
    processor_names,
    swapped_processors,
)
from pipelines.core.concat_inpaint import (
    ConcatInpaintConfig,
    ConcatInpaintInputs,
    WeightSetSwitcher,
    concat_inpaint_denoise,
    inpaint_switcher,
)
from pipelines.core.registry import ModelRegistry
from pipelines.core.sampling import (
    RunControl,
    check_steps,
    encode_prompts,
    generators,
    image_to_tensor,
    mask_to_tensor,
    randn,
    resolve_seed,
    tensor_to_images,
    vae_decode,
    vae_encode,
)
from pipelines.garment.checkpoints import ImageProjection, load_color_adapter, load_gam, load_lem
from pipelines.types import MAX_IMAGES, GarmentRequest, GarmentResult, TaskResult

logger = logging.getLogger(__name__)

def _rgb(image: Image.Image, name: str) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"{name} must be a PIL image, got {type(image).__name__}")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


class GarmentDesignPipeline:
    """GAM (+ colour adapter) then LEM. Built from shared components; see :meth:`from_registry`."""

    def __init__(
        self,
        *,
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler_factory,
        ref_unet=None,
        mixed_processors: dict | None = None,
        image_encoder=None,
        image_processor=None,
        image_projection: ImageProjection | None = None,
        color_processors: dict | None = None,
        inpaint_switcher: WeightSetSwitcher | None = None,
        lem_set: str | None = None,
    ) -> None:
        self.vae, self.text_encoder, self.tokenizer, self.unet = vae, text_encoder, tokenizer, unet
        self.scheduler_factory = scheduler_factory
        self.ref_unet, self.mixed_processors = ref_unet, mixed_processors or {}
        self.image_encoder, self.image_processor = image_encoder, image_processor
        self.image_projection, self.color_processors = image_projection, color_processors or {}
        self.inpaint_switcher, self.lem_set = inpaint_switcher, lem_set
        self.reference_state = ReferenceState()
        self.batch_cfg = True  # one UNet call for both CFG branches (False only for benchmarks)
        for processor in self.mixed_processors.values():
            processor.state = self.reference_state
        if self.ref_unet is not None:
            self._recorded: dict[str, torch.Tensor] = {}
            self.ref_unet.set_attn_processor(
                {
                    name: ReferenceRecorder(name, self._recorded) if ".attn1." in name else SkipAttnProcessor()
                    for name in processor_names(self.ref_unet)
                }
            )

    # ------------------------------------------------------------------------------------ construction
    @classmethod
    def from_registry(cls, registry, need_sketch: bool = True, need_color: bool = True, need_logo: bool = True):
        """Assemble from the shared registry; the method-specific weights load on first need."""
        device, dtype = registry.device, registry.dtype
        unet = registry.get("unet")
        parts: dict[str, Any] = {}
        if need_sketch:
            def build_gam():
                from diffusers import UNet2DConditionModel

                ref_unet = UNet2DConditionModel.from_config(unet.config)
                processors, report = load_gam(registry.checkpoint("garment_gam"), ref_unet, unet)
                ref_unet.to(device, dtype).requires_grad_(False).eval()
                for proc in processors.values():
                    proc.to(device, dtype).requires_grad_(False)
                return _Bundle(ref_unet=ref_unet, processors=processors, report=report)

            gam = registry.shared("garment_gam", build_gam, "GAM checkpoint")
            parts.update(ref_unet=gam.ref_unet, mixed_processors=gam.processors)
        if need_color:
            encoder = registry.get("image_encoder")

            def build_color():
                projection, processors, report = load_color_adapter(
                    registry.checkpoint("garment_color"), unet, encoder.config.projection_dim
                )
                projection.to(device, dtype).requires_grad_(False).eval()
                for proc in processors.values():
                    proc.to(device, dtype).requires_grad_(False)
                return _Bundle(projection=projection, processors=processors, report=report)

            color = registry.shared("garment_color", build_color, "colour adapter")
            parts.update(
                image_encoder=encoder, image_processor=registry.get("image_processor"),
                image_projection=color.projection, color_processors=color.processors,
            )
        if need_logo:
            switcher = inpaint_switcher(registry)
            if "garment_lem" not in switcher.sets:
                switcher.register(load_lem(registry.checkpoint("garment_lem"), switcher.unet))
            parts.update(inpaint_switcher=switcher, lem_set="garment_lem")
        return cls(
            vae=registry.get("vae"), text_encoder=registry.get("text_encoder"), tokenizer=registry.get("tokenizer"),
            unet=unet, scheduler_factory=registry.scheduler, **parts,
        )

    # --------------------------------------------------------------------------------------- checks
    def check_inputs(self, request: GarmentRequest) -> None:
        multiple = 8 * 2 ** (len(self.unet.config.block_out_channels) - 1)
        for label, value in (("height", request.height), ("width", request.width)):
            if not isinstance(value, int) or value % multiple or not multiple <= value <= 2048:
                raise ValueError(f"{label}={value!r} must be a multiple of {multiple} between {multiple} and 2048")
        check_steps(request.num_inference_steps)
        if not 1 <= int(request.num_images) <= MAX_IMAGES:
            raise ValueError(f"num_images={request.num_images!r} must be between 1 and {MAX_IMAGES}")
        if not 0 <= request.guidance_scale <= 30:
            raise ValueError(f"guidance_scale={request.guidance_scale!r} must be between 0 and 30")
        for label, value in (("sketch_scale", request.sketch_scale), ("color_scale", request.color_scale)):
            if not 0 <= value <= 2:
                raise ValueError(f"{label}={value!r} must be between 0 and 2")
        if request.logo is not None and request.logo_mask is None:
            raise ValueError("logo_mask is required with a logo: place the logo or paint where it goes")
        if request.logo_mask is not None and request.logo is None:
            raise ValueError("logo_mask was given without a logo image")
        if request.sketch is not None and self.ref_unet is None:
            raise ValueError("a sketch was given but the GAM weights are not loaded")
        if request.color is not None and self.image_projection is None:
            raise ValueError("a colour was given but the colour adapter is not loaded")
        if request.logo is not None and self.inpaint_switcher is None:
            raise ValueError("a logo was given but the LEM weights are not loaded")
        if request.logo_mask is not None:
            mask = mask_to_tensor(request.logo_mask, request.width, request.height)
            if mask.sum() == 0:
                raise ValueError("logo_mask is empty: paint or place where the logo goes")

    # ----------------------------------------------------------------------------------------- call
    @torch.no_grad()
    def __call__(self, request: GarmentRequest, control: RunControl | None = None) -> GarmentResult:
        """Generate ``num_images`` garments, (H, W) = (height, width), returned as PIL images."""
        # 1. check inputs
        self.check_inputs(request)
        control = control or RunControl()
        seed = resolve_seed(request.seed)
        batch, height, width = int(request.num_images), request.height, request.width
        device, dtype = self.unet.device, self.unet.dtype
        gens = generators(seed, batch, device)
        use_cfg = request.guidance_scale > 1.0
        stages = ["GAM"] + (["LEM"] if request.logo is not None else [])
        control.overall_total = request.num_inference_steps * len(stages)
        control.check()

        # 2. prompts: rows [0:B] unconditional, [B:2B] conditional when CFG is on
        cond = encode_prompts(self.tokenizer, self.text_encoder, [request.prompt] * batch)
        context = cond
        if use_cfg:
            uncond = encode_prompts(self.tokenizer, self.text_encoder, [request.negative_prompt or ""] * batch)
            context = torch.cat([uncond, cond])
        context = context.to(device, dtype)

        # 3. colour tokens: the conditional rows get image_proj(embeds), the unconditional image_proj(0)
        color_active = request.color is not None and request.color_scale != 0
        if color_active:
            pixels = self.image_processor(images=_rgb(request.color, "color"), return_tensors="pt").pixel_values
            embeds = self.image_encoder(pixels.to(self.image_encoder.device, self.image_encoder.dtype)).image_embeds
            tokens = self.image_projection(embeds.to(dtype)).expand(batch, -1, -1)  # (B, T, D)
            if use_cfg:
                tokens = torch.cat([self.image_projection(torch.zeros_like(embeds).to(dtype)).expand(batch, -1, -1), tokens])
            context = torch.cat([context, tokens], dim=1)  # (nB, 77 + T, D)

        # 4. sketch reference: the silhouette UNet runs once at t=0
        state = self.reference_state
        state.features, state.kv_cache = {}, {}
        sketch_active = request.sketch is not None and request.sketch_scale != 0
        if sketch_active:
            sketch = image_to_tensor(_rgb(request.sketch, "sketch"), width, height)
            sketch_latent = vae_encode(self.vae, sketch).to(device, dtype)  # (1, 4, h, w)
            self._recorded.clear()
            timestep = torch.zeros(1, device=device, dtype=torch.long)
            self.ref_unet(sketch_latent, timestep, encoder_hidden_states=None)
            state.features = dict(self._recorded)
            self._recorded.clear()
        state.scale = request.sketch_scale
        state.rows = slice(batch, 2 * batch) if use_cfg else None
        state.enabled = sketch_active

        # 5. GAM denoising
        processors: dict[str, Any] = {}
        for name in processor_names(self.unet):
            if ".attn1." in name:
                processors[name] = self.mixed_processors.get(name, PlainAttnProcessor()) if sketch_active else PlainAttnProcessor()
            elif color_active:
                proc = self.color_processors[name]
                proc.state.scale, proc.state.num_tokens, proc.state.enabled = request.color_scale, tokens.shape[1], True
                processors[name] = proc
            else:
                processors[name] = PlainAttnProcessor()
        scheduler = self.scheduler_factory()
        scheduler.set_timesteps(request.num_inference_steps, device=device)
        scale = self.vae_scale
        latents = randn((batch, 4, height // scale, width // scale), gens, device, dtype) * scheduler.init_noise_sigma
        try:
            with swapped_processors(self.unet, processors):
                for index, timestep in enumerate(scheduler.timesteps):
                    if use_cfg and self.batch_cfg:
                        model_input = scheduler.scale_model_input(torch.cat([latents, latents]), timestep)
                        noise = self.unet(model_input, timestep, encoder_hidden_states=context).sample
                        noise_uncond, noise_cond = noise.chunk(2)
                    elif use_cfg:  # two calls: the reference is on only in the conditional one
                        model_input = scheduler.scale_model_input(latents, timestep)
                        state.enabled, state.rows = False, None
                        noise_uncond = self.unet(model_input, timestep, encoder_hidden_states=context[:batch]).sample
                        state.enabled = sketch_active
                        noise_cond = self.unet(model_input, timestep, encoder_hidden_states=context[batch:]).sample
                    else:
                        model_input = scheduler.scale_model_input(latents, timestep)
                        noise_cond = self.unet(model_input, timestep, encoder_hidden_states=context).sample
                    noise = noise_cond
                    if use_cfg:
                        noise = noise_uncond + request.guidance_scale * (noise_cond - noise_uncond)
                    latents = scheduler.step(noise, timestep, latents).prev_sample
                    control.step("GAM", index + 1, len(scheduler.timesteps), latents)
        finally:
            state.features, state.kv_cache = {}, {}

        # 6. LEM: logo detail on the shared inpainting UNet
        gam_latents = latents
        if request.logo is not None:
            logo = image_to_tensor(_rgb(request.logo, "logo"), width, height)
            logo_latent = vae_encode(self.vae, logo).to(device, dtype).expand(batch, -1, -1, -1)
            mask = mask_to_tensor(request.logo_mask, width // scale, height // scale).to(device, dtype)
            self.inpaint_switcher.activate(self.lem_set)
            latents = concat_inpaint_denoise(
                self.inpaint_switcher.unet,
                self.scheduler_factory(),
                ConcatInpaintInputs(top=gam_latents, mask=mask.expand(batch, -1, -1, -1), bottom=logo_latent),
                ConcatInpaintConfig(request.num_inference_steps, request.guidance_scale, eta=0.0, stage="LEM"),
                gens,
                control,
            )

        # 7. decode
        images = tensor_to_images(vae_decode(self.vae, latents))
        if request.logo is not None and request.keep_outside_logo:
            base = tensor_to_images(vae_decode(self.vae, gam_latents))
            pixel_mask = request.logo_mask.convert("L").resize((width, height), Image.NEAREST)
            images = [Image.composite(detail, plain, pixel_mask) for detail, plain in zip(images, base)]
        params = dict(request.params(), seed=seed, task="garment")
        return GarmentResult(images, [seed + i for i in range(batch)], params, stages)

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


class _Bundle:
    """A small holder the registry can size (``num_parameters``/``num_bytes``) and share."""

    def __init__(self, **parts: Any) -> None:
        self.__dict__.update(parts)
        modules = [v for v in parts.values() if isinstance(v, torch.nn.Module)]
        modules += [p for v in parts.values() if isinstance(v, dict) for p in v.values() if isinstance(p, torch.nn.Module)]
        self.num_parameters = sum(p.numel() for m in modules for p in m.parameters())
        self.num_bytes = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def run_task(registry: ModelRegistry, params: dict[str, Any], control: RunControl) -> TaskResult:

    request = GarmentRequest(**params)
    pipeline = GarmentDesignPipeline.from_registry(
        registry,
        need_sketch=request.sketch is not None,
        need_color=request.color is not None,
        need_logo=request.logo is not None,
    )
    result = pipeline(request, control)
    per_image = [dict(result.params, seed=seed, num_images=1) for seed in result.seeds]
    return TaskResult(result.images, per_image, {"stages": result.stages})
