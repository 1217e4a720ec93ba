"""(a) Reference loops shaped like each method's PUBLISHED inference code, written by us on the same modules, and
(b) the plain diffusers pipelines doing the same denoising work without our added conditioning.

Reference shapes (``REFERENCE_SHAPES``; what each loop does and whether its shape was checked against the code):

- design (IMAGGarment-1 ``pipelines/IMAGGarment_pipeline.py``): prompt and colour embeddings once, the silhouette UNet
  once at t=0, then CFG as TWO UNet calls per step (the conditional one with the reference), the reference K/V
  projected again in every call; LEM as a CatVTON-style batched loop. fp16.
- dressing (IMAGDressing-v1 ``IMAGDressing_v1_pipeline.py``): the image encoder on the garments AND on zeros, the
  Resampler on both, the garment UNet once at t=0 on the CFG-doubled batch, then CFG as TWO UNet calls per step with
  the reference K/V projected again in the conditional one. fp16.
- try-on (CatVTON ``model/pipeline.py``): the two VAE encodings once, CFG BATCHED in one UNet call (as ours), attn2
  skipped, diffusers' SDPA processor on attn1. bf16.
- try-off (TryOffAnyone): not in the reference index here; assumed CatVTON's loop (it is built on CatVTON). bf16.
- TEMU-VTOFF: not in the reference index here; from its documented differences (our README): encoders and extractor
  once per call on SAMPLED latents, CFG batched; so the reference differs from ours only by the cross-call cache,
  which the benchmark switches off for ours anyway. bf16.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from pipelines.core.attention import (
    PlainAttnProcessor,
    ReferenceState,
    SkipAttnProcessor,
    processor_names,
    swapped_processors,
)
from pipelines.core.sampling import (
    encode_prompts,
    generators,
    image_to_tensor,
    mask_to_tensor,
    randn,
    tensor_to_images,
    vae_decode,
    vae_encode,
)

REFERENCE_SHAPES = {
    "garment": dict(code="IMAGGarment-1 pipelines/IMAGGarment_pipeline.py", verified=True, cfg="two calls",
                    once="prompt, colour embeddings, silhouette UNet", every_step="reference K/V projections",
                    dtype="fp16"),
    "dressing": dict(code="IMAGDressing-v1 dressing_sd/pipelines/IMAGDressing_v1_pipeline.py", verified=True,
                     cfg="two calls", once="prompt, image encoder x2 (garments + zeros), Resampler, garment UNet on "
                     "the CFG-doubled batch", every_step="reference K/V projections", dtype="fp16"),
    "tryon": dict(code="CatVTON model/pipeline.py", verified=True, cfg="batched", once="VAE encodings",
                  every_step="-", dtype="bf16"),
    "tryoff": dict(code="TryOffAnyone (assumed CatVTON's loop; not checked)", verified=False, cfg="batched",
                   once="VAE encodings", every_step="-", dtype="bf16"),
    "temu": dict(code="TEMU-VTOFF (from its documented differences; not checked)", verified=False, cfg="batched",
                 once="text + image encoders, extractor (sampled latents)", every_step="-", dtype="bf16"),
}
REFERENCE_DTYPES = {"garment": torch.float16, "dressing": torch.float16, "tryon": torch.bfloat16,
                    "tryoff": torch.bfloat16, "temu": torch.bfloat16}


# --------------------------------------------------------------------------------------------- (a) design
@torch.no_grad()
def garment_reference(bundle, request) -> list[Image.Image]:
    """Our GAM+LEM pipeline switched to the published loop's shape: CFG as two calls, reference K/V per call."""
    pipe = bundle.pipeline
    pipe.batch_cfg, pipe.reference_state.cache_kv = False, False
    try:
        return pipe(request).images
    finally:
        pipe.batch_cfg, pipe.reference_state.cache_kv = True, True


# ------------------------------------------------------------------------------------------- (a) dressing
@torch.no_grad()
def dressing_reference(bundle, request) -> list[Image.Image]:
    from pipelines.core.sampling import resolve_seed
    from pipelines.dressing.pipeline import GarmentEncoderState, GarmentSelfAttnProcessor, fit_on_white

    pipe = bundle.pipeline
    unet, garment_unet, vae = pipe.unet, pipe.garment_unet, pipe.vae
    device, dtype = unet.device, unet.dtype
    garments = pipe.prepare_garments(request)
    count = len(garments)
    gens = generators(resolve_seed(request.seed), 1, device)
    cond = encode_prompts(pipe.tokenizer, pipe.text_encoder, [request.prompt]).to(device, dtype)
    uncond = encode_prompts(pipe.tokenizer, pipe.text_encoder, [request.negative_prompt]).to(device, dtype)
    # image encoder on the garments and on zeros (the null image), Resampler on both
    squares = [fit_on_white(g, max(g.size), max(g.size)) for g in garments]
    pixels = pipe.image_processor(images=squares, return_tensors="pt").pixel_values.to(device, pipe.image_encoder.dtype)
    feats = pipe.image_encoder(pixels, output_hidden_states=True).hidden_states[-2]
    null = pipe.image_encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
    tokens = pipe.resampler(torch.cat([null, feats]).to(dtype))  # (2N, 16, D)
    latents_ref = vae_encode(vae, torch.cat([image_to_tensor(g, g.width, g.height) for g in garments])).to(dtype)
    # the garment UNet once at t=0 on the CFG-doubled batch; the conditional rows are kept
    store = GarmentEncoderState()
    recorders = {name: GarmentSelfAttnProcessor(name, store) if ".attn1." in name else PlainAttnProcessor()
                 for name in processor_names(garment_unet)}
    with swapped_processors(garment_unet, recorders):
        garment_unet(torch.cat([latents_ref, latents_ref]), torch.zeros(2 * count, device=device, dtype=torch.long),
                     encoder_hidden_states=tokens)
    features = {name: h[count:].reshape(1, -1, h.shape[-1]) for name, h in store.store.items()}
    state = ReferenceState(features=features, scale=request.garment_scale, cache_kv=False)
    processors: dict[str, Any] = {}
    for name in processor_names(unet):
        if ".attn1." in name:
            processor = pipe.dressing_processors[name]
            processor.state = state
            processors[name] = processor
        else:
            processors[name] = PlainAttnProcessor()
    scheduler = pipe.scheduler_factory()
    scheduler.set_timesteps(request.num_inference_steps, device=device)
    scale = pipe.vae_scale
    latents = randn((1, 4, request.height // scale, request.width // scale), gens, device, dtype)
    latents = latents * scheduler.init_noise_sigma
    with swapped_processors(unet, processors):
        for timestep in scheduler.timesteps:
            model_input = scheduler.scale_model_input(latents, timestep)
            state.enabled = True
            noise_cond = unet(model_input, timestep, encoder_hidden_states=cond).sample
            state.enabled = False  # the published unconditional call passes no reference
            noise_uncond = unet(model_input, timestep, encoder_hidden_states=uncond).sample
            noise = noise_uncond + request.guidance_scale * (noise_cond - noise_uncond)
            latents = scheduler.step(noise, timestep, latents).prev_sample
    state.features = {}
    return tensor_to_images(vae_decode(vae, latents))


# ---------------------------------------------------------------------------------- (a) try-on / try-off
def _catvton_processors(unet) -> dict[str, Any]:
    from diffusers.models.attention_processor import AttnProcessor2_0

    return {name: SkipAttnProcessor() if ".attn2." in name else AttnProcessor2_0() for name in processor_names(unet)}


@torch.no_grad()
def concat_reference(bundle, request, kind: str) -> list[Image.Image]:
    """CatVTON's published loop (TryOffAnyone assumed the same): TOP = masked person, BOTTOM = garment (try-on) or
    the person (try-off); CFG batched with the bottom zeroed in the unconditional row; DDIM eta 1."""
    from pipelines.core.concat_inpaint import weight_set_active

    pipe = bundle.pipeline[kind]
    vae = pipe.vae
    height, width = request.height, request.width
    with weight_set_active(pipe.switcher, pipe.weight_set) as unet:
        device, dtype = unet.device, unet.dtype
        generator = torch.Generator(device).manual_seed(request.seed)
        image = image_to_tensor(request.person, width, height).to(device, dtype)
        condition = image_to_tensor(request.garment if kind == "tryon" else request.person, width, height)
        mask = mask_to_tensor(request.mask, width, height).to(device, dtype)
        sf = vae.config.scaling_factor
        masked_latent = vae.encode((image * (mask < 0.5)).to(vae.dtype)).latent_dist.sample(generator) * sf
        condition_latent = vae.encode(condition.to(device, vae.dtype)).latent_dist.sample(generator) * sf
        masked_latent, condition_latent = masked_latent.to(dtype), condition_latent.to(dtype)
        mask_latent = F.interpolate(mask, size=masked_latent.shape[-2:], mode="nearest")
        masked_concat = torch.cat([masked_latent, condition_latent], dim=-2)
        mask_concat = torch.cat([mask_latent, torch.zeros_like(mask_latent)], dim=-2)
        scheduler = pipe.scheduler_factory()
        latents = torch.randn(masked_concat.shape, generator=generator, device=device, dtype=dtype)
        scheduler.set_timesteps(request.num_inference_steps, device=device)
        latents = latents * scheduler.init_noise_sigma
        use_cfg = request.guidance_scale > 1.0
        if use_cfg:
            masked_concat = torch.cat([torch.cat([masked_latent, torch.zeros_like(condition_latent)], dim=-2),
                                       masked_concat])
            mask_concat = torch.cat([mask_concat] * 2)
        with swapped_processors(unet, _catvton_processors(unet)):
            for timestep in scheduler.timesteps:
                model_input = torch.cat([latents] * 2) if use_cfg else latents
                model_input = scheduler.scale_model_input(model_input, timestep)
                model_input = torch.cat([model_input, mask_concat, masked_concat], dim=1)
                noise = unet(model_input, timestep, encoder_hidden_states=None, return_dict=False)[0]
                if use_cfg:
                    noise_uncond, noise_cond = noise.chunk(2)
                    noise = noise_uncond + request.guidance_scale * (noise_cond - noise_uncond)
                latents = scheduler.step(noise, timestep, latents, eta=1.0, generator=generator).prev_sample
    latents = latents.split(latents.shape[-2] // 2, dim=-2)[0]
    return tensor_to_images(vae_decode(vae, latents))


# ---------------------------------------------------------------------------------------------- (a) TEMU
@torch.no_grad()
def temu_reference(bundle, request) -> list[Image.Image]:
    from diffusers import FlowMatchEulerDiscreteScheduler

    from pipelines.core.attention import swapped_processors as swapped
    from pipelines.temu.pipeline import extract_reference, hybrid_processors

    pipe = bundle.pipeline
    parts = pipe.parts
    vae, generator_model, device = parts.vae, parts.generator, pipe.device
    height, width = request.height, request.width
    gen = torch.Generator(device).manual_seed(request.seed)
    prompt, pooled = pipe.encode_caption(request.caption or "a t-shirt", 1)
    pixels = image_to_tensor(request.person, width, height).to(device, vae.dtype)
    mask = mask_to_tensor(request.mask, width, height).to(device, vae.dtype)
    shift, sf = vae.config.shift_factor or 0.0, vae.config.scaling_factor
    person_latent = (vae.encode(pixels).latent_dist.sample(gen) - shift) * sf  # sampled, as published
    fine_latent = (vae.encode(pixels * (mask < 0.5)).latent_dist.sample(gen) - shift) * sf
    latent_mask = F.interpolate(mask, size=person_latent.shape[-2:], mode="nearest")
    inputs = torch.cat([person_latent, latent_mask, fine_latent], dim=1)
    embeds = pipe._image_embeds(request.person)
    extractor = parts.extractor
    reference = extract_reference(extractor, inputs.repeat(2, 1, 1, 1).to(extractor.dtype),
                                  torch.cat([torch.zeros_like(embeds), embeds]).to(extractor.dtype))
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(parts.scheduler_config)
    scheduler.set_timesteps(request.num_inference_steps, device=device)
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    latents = torch.randn((1, generator_model.config.in_channels, height // scale, width // scale), generator=gen,
                          device=device, dtype=torch.float32)
    prompt, pooled = prompt.to(generator_model.dtype), pooled.to(generator_model.dtype)
    with swapped(generator_model, hybrid_processors(generator_model, reference)):
        for t in scheduler.timesteps:
            model_in = torch.cat([latents, latents]).to(generator_model.dtype)
            velocity = generator_model(hidden_states=model_in, timestep=t.expand(2), encoder_hidden_states=prompt,
                                       pooled_projections=pooled, return_dict=False)[0].float()
            uncond, cond = velocity.chunk(2)
            latents = scheduler.step(uncond + request.guidance_scale * (cond - uncond), t, latents,
                                     return_dict=False)[0]
    decoded = vae.decode((latents / sf + shift).to(vae.dtype)).sample
    return tensor_to_images(decoded.float())


# ------------------------------------------------------------------------------------- (b) plain diffusers
def _sd(bundle, unet, inpaint: bool):
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    modules = bundle.modules
    pipe = cls(vae=modules["vae"], text_encoder=modules["text_encoder"], tokenizer=bundle.parts["tokenizer"],
               unet=unet, scheduler=bundle.parts["scheduler_factory"](), safety_checker=None, feature_extractor=None,
               requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _stacked(top: Image.Image, bottom: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (top.width, top.height + bottom.height))
    canvas.paste(top.convert("RGB"), (0, 0))
    canvas.paste(bottom.convert("RGB"), (0, top.height))
    return canvas


def _stacked_mask(mask: Image.Image) -> Image.Image:
    canvas = Image.new("L", (mask.width, 2 * mask.height), 0)
    canvas.paste(mask.convert("L"), (0, 0))
    return canvas


def plain_runner(family: str, kind: str, bundle):
    """A callable(request) running the plain diffusers pipeline(s) for the same work as ours (built once)."""
    cache = bundle.parts.setdefault("plain", {})
    if family == "garment":
        if "txt2img" not in cache:
            cache["txt2img"] = _sd(bundle, bundle.modules["unet"], inpaint=False)
            cache["inpaint"] = _sd(bundle, bundle.modules["inpaint_unet"], inpaint=True)

        def run(request):
            device = bundle.modules["unet"].device
            kwargs = dict(num_inference_steps=request.num_inference_steps, guidance_scale=request.guidance_scale,
                          negative_prompt=request.negative_prompt)
            design = cache["txt2img"](request.prompt, height=request.height, width=request.width,
                                      generator=torch.Generator(device).manual_seed(1), **kwargs).images[0]
            # the LEM's work: the 9-channel UNet on the 2h x w canvas (design on top, logo below)
            logo = request.logo.resize((request.width, request.height))
            return cache["inpaint"](request.prompt, image=_stacked(design, logo), mask_image=_stacked_mask(
                request.logo_mask), height=2 * request.height, width=request.width, strength=1.0,
                generator=torch.Generator(device).manual_seed(1), **kwargs).images

        return run
    if family == "dressing":
        if "txt2img" not in cache:
            cache["txt2img"] = _sd(bundle, bundle.modules["unet"], inpaint=False)

        def run(request):
            return cache["txt2img"](request.prompt, negative_prompt=request.negative_prompt, height=request.height,
                                    width=request.width, num_inference_steps=request.num_inference_steps,
                                    guidance_scale=request.guidance_scale,
                                    generator=torch.Generator(bundle.modules["unet"].device).manual_seed(1)).images

        return run
    if family == "inpaint":
        if "inpaint" not in cache:
            cache["inpaint"] = _sd(bundle, bundle.modules["inpaint_unet"], inpaint=True)

        def run(request):
            bottom = request.garment if kind == "tryon" else request.person
            return cache["inpaint"]("", image=_stacked(request.person, bottom), mask_image=_stacked_mask(request.mask),
                                    height=2 * request.height, width=request.width, strength=1.0, eta=1.0,
                                    num_inference_steps=request.num_inference_steps,
                                    guidance_scale=request.guidance_scale,
                                    generator=torch.Generator(bundle.modules["inpaint_unet"].device).manual_seed(1)
                                    ).images

        return run
    if family == "temu":
        if "sd3" not in cache:
            from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

            parts = bundle.parts["parts"]
            pipe = StableDiffusion3Pipeline(
                transformer=parts.generator, scheduler=FlowMatchEulerDiscreteScheduler.from_config(
                    parts.scheduler_config), vae=parts.vae, text_encoder=parts.text_encoder,
                tokenizer=parts.tokenizer, text_encoder_2=parts.text_encoder_2, tokenizer_2=parts.tokenizer_2,
                text_encoder_3=parts.text_encoder_3, tokenizer_3=parts.tokenizer_3)
            pipe.set_progress_bar_config(disable=True)
            cache["sd3"] = pipe

        def run(request):
            return cache["sd3"](request.caption or "a t-shirt", negative_prompt="", height=request.height,
                                width=request.width, num_inference_steps=request.num_inference_steps,
                                guidance_scale=request.guidance_scale, max_sequence_length=77,
                                generator=torch.Generator(bundle.pipeline.device).manual_seed(1)).images

        return run
    raise ValueError(f"no plain pipeline for {family!r}")


def reference_runner(family: str, kind: str, bundle):
    if family == "garment":
        return lambda request: garment_reference(bundle, request)
    if family == "dressing":
        return lambda request: dressing_reference(bundle, request)
    if family == "inpaint":
        return lambda request: concat_reference(bundle, request, kind)
    if family == "temu":
        return lambda request: temu_reference(bundle, request)
    raise ValueError(f"no reference loop for {family!r}")
