"""High-quality try-off with TEMU-VTOFF (Lobba et al. 2025): two SD3-Medium transformers, one idea.

The feature EXTRACTOR (``transformer_vton``) reads the person once; the garment GENERATOR (``transformer``)
denoises the flat garment from its caption and, in every block, also attends to the extractor's keys and
values of that block ("multimodal hybrid attention")::

    person (3, H, W) ──VAE──► z_p (16, h, w)        mask ──nearest /8──► m (1, h, w)
    fine-masked person ──VAE──► z_f (16, h, w)      (the garment greyed out)
    extractor( cat[z_p, m, z_f] (33, h, w), t = 0, pooled = [CLIP-L ⊕ CLIP-bigG](person) or 0 for CFG's
               unconditional branch )  ──► per block i: ref_k[i], ref_v[i] = to_k(x), to_v(x)   (2, N_img, D)
    generator block i:  Q = [img_q; txt_q]   K = [img_k; ref_k[i]; txt_k]   V = [img_v; ref_v[i]; txt_v]
                        output split at N_img (image part; the text part goes on as in SD3)

Stages of one call:
 1. check inputs; the memory mode (resident / model offload / sequential offload) from free GPU memory
 2. fit the person photo to the canvas; the garment mask (painted, else the clothes parser for the category)
    and the fine mask (the person with the garment greyed out)
 3. the caption through CLIP-L + CLIP-G + T5 (77 tokens); the negative prompt "" encoded, not zeros
 4. the extractor's keys/values: ONCE per (photo, mask, size), cached across seed re-rolls
 5. flow-matching Euler sampling with batched CFG, the hybrid attention processors installed (and restored)
 6. decode ``latents / scaling + shift``; the background as asked (flood fill, RMBG-1.4 cut-out, or raw)

Deliberate differences from the published code (also in the README): the extractor's input latents are the
VAE distribution MEANS (the photo's keys/values then do not depend on the seed, so they can be cached); a
caption is written in the tab (the category's default offered) instead of by Qwen2.5-VL; the photo is fitted
to the canvas (crop or pad) like the other tabs instead of stretched.

Command line: ``python -m pipelines.temu --help``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipelines.core.attention import swapped_processors
from pipelines.core.checkpoints import offline_hint
from pipelines.core.concat_inpaint import check_canvas_size
from pipelines.core.registry import from_pretrained
from pipelines.core.sampling import (
    RunControl,
    check_steps,
    generators,
    image_to_tensor,
    mask_to_tensor,
    randn,
    resolve_seed,
    tensor_to_images,
)
from pipelines.preprocess.framing import fit_mask, fit_to_canvas
from pipelines.preprocess.images import check_background, to_rgb
from pipelines.preprocess.masks import masker_factory, resolve_mask
from pipelines.preprocess.rmbg import BackgroundRemover, finish_background
from pipelines.temu.checkpoints import EXTRACTOR, GENERATOR, load_transformer
from pipelines.types import (
    MAX_IMAGES,
    MEMORY_MODES,
    TEMU_CAPTIONS,
    TEMU_CATEGORIES,
    ModelUnavailableError,
    TaskResult,
    TemuTryOffRequest,
    TryOffResult,
)

logger = logging.getLogger(__name__)

MAX_SEQUENCE_LENGTH = 77  # T5 truncated to 77 tokens, as the method was trained
GIB = 2**30
ACTIVATIONS_MARGIN = 3 * GIB  # attention over ~3k image + 3k reference + 154 text tokens at 1024x768, bf16


# --------------------------------------------------------------------------------------- attention
class ReferenceKV:
    """The extractor's per-block keys/values of one photo: [unconditional, conditional], each (1, N, D)."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        self.keys, self.values = keys, values
        self.batch = 1  # images per branch of the current call

    def pair(self, index: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Block ``index``'s (K, V) for the CFG batch ``[uncond x B; cond x B]`` (``batch`` = 2B)."""
        if batch != 2 * self.batch:
            raise ValueError(f"the generator batch is {batch}; the reference serves [uncond; cond] x {self.batch}")
        key, value = self.keys[index], self.values[index]  # (2, N, D)
        return key.repeat_interleave(self.batch, dim=0), value.repeat_interleave(self.batch, dim=0)


class HybridAttnProcessor:
    """Generator block ``index``: SD3 joint attention whose keys/values also hold the extractor's::

        Q = [img_q; txt_q]     K = [img_k; ref_k; txt_k]     V = [img_v; ref_v; txt_v]     (B, heads, L, d)

    The image part of the output (the first N_img rows) goes through ``to_out``, the text part through
    ``to_add_out`` (absent in the last block, whose text stream ends there).
    """

    def __init__(self, reference: ReferenceKV, index: int) -> None:
        self.reference, self.index = reference, index

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        batch, tokens = hidden_states.shape[:2]
        ref_key, ref_value = self.reference.pair(self.index, batch)
        query = torch.cat([attn.to_q(hidden_states), attn.add_q_proj(encoder_hidden_states)], dim=1)
        key = torch.cat([attn.to_k(hidden_states), ref_key.to(hidden_states.dtype),
                         attn.add_k_proj(encoder_hidden_states)], dim=1)
        value = torch.cat([attn.to_v(hidden_states), ref_value.to(hidden_states.dtype),
                           attn.add_v_proj(encoder_hidden_states)], dim=1)
        out = _attend(query, key, value, attn.heads)
        image, text = out[:, :tokens], out[:, tokens:]
        image = attn.to_out[1](attn.to_out[0](image))
        if not attn.context_pre_only:
            text = attn.to_add_out(text)
        return image, text


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int) -> torch.Tensor:
    """SDPA over (B, L, heads * d) projections -> (B, L_q, heads * d)."""
    batch, dim = query.shape[0], query.shape[-1]

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(batch, -1, heads, dim // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(query), split(key), split(value))
    return out.transpose(1, 2).reshape(batch, -1, dim).to(query.dtype)


def hybrid_processors(generator, reference: ReferenceKV) -> dict[str, HybridAttnProcessor]:
    for block in generator.transformer_blocks:
        if block.attn.norm_q is not None or getattr(block, "attn2", None) is not None:
            raise ValueError("the generator has qk-norm or dual attention: TEMU-VTOFF's transformers have neither")
    return {f"transformer_blocks.{i}.attn.processor": HybridAttnProcessor(reference, i)
            for i in range(len(generator.transformer_blocks))}


@torch.no_grad()
def extract_reference(extractor, latents: torch.Tensor, pooled: torch.Tensor) -> ReferenceKV:
    """Run the extractor once at t = 0 on ``latents`` (2, 33, h, w) with ``pooled`` (2, P) -> every block's
    ``to_k(x)``, ``to_v(x)`` (before the head split). Image-only self-attention: the extractor never sees text.
    The last block's keys/values are all that is read from it, so its attention output and MLP are skipped."""
    hidden = extractor.pos_embed(latents)  # (2, N, D)
    temb = extractor.time_text_embed(torch.zeros(latents.shape[0], device=latents.device, dtype=latents.dtype),
                                     pooled)
    keys, values = [], []
    last = len(extractor.transformer_blocks) - 1
    for index, block in enumerate(extractor.transformer_blocks):
        normed, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.norm1(hidden, emb=temb)
        attn = block.attn
        key, value = attn.to_k(normed), attn.to_v(normed)
        keys.append(key)
        values.append(value)
        if index == last:
            break
        attended = attn.to_out[0](_attend(attn.to_q(normed), key, value, attn.heads))
        hidden = hidden + gate_msa.unsqueeze(1) * attended
        mlp_in = block.norm2(hidden) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        hidden = hidden + gate_mlp.unsqueeze(1) * block.ff(mlp_in)
    return ReferenceKV(keys, values)


# ----------------------------------------------------------------------------------------- memory
def choose_memory_mode(requested: str, device: torch.device, sizes: dict[str, int],
                       free_bytes: int | None = None) -> tuple[str, str]:
    """(mode, why): ``requested`` unless "auto"; auto = everything resident when it fits in free GPU memory,
    else one model at a time on the GPU (model offload) when the largest fits, else sequential offload."""
    if requested not in MEMORY_MODES:
        raise ValueError(f"memory_mode={requested!r} must be one of {', '.join(MEMORY_MODES)}")
    if requested != "auto":
        return requested, "chosen"
    if device.type != "cuda":
        return "resident", f"on {device.type}"
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    total, largest = sum(sizes.values()), max(sizes.values())
    why = f"{free_bytes / GIB:.1f} GiB free; models {total / GIB:.1f} GiB, largest {largest / GIB:.1f} GiB"
    if free_bytes >= total + ACTIVATIONS_MARGIN:
        return "resident", why
    if free_bytes >= largest + ACTIVATIONS_MARGIN:
        return "model_offload", why
    return "sequential_offload", why


class Placement:
    """Where the models live during a call. resident: all on the device; model_offload: each model moves to
    the device only while it runs (one at a time); sequential_offload: the big ones stream their weights in
    per layer (accelerate hooks), the small ones as model offload. ``log`` records (model, "in"/"out")."""

    BIG = ("text_encoder_3", GENERATOR, EXTRACTOR)

    def __init__(self, models: dict[str, torch.nn.Module], device: torch.device) -> None:
        self.models, self.device, self.mode = models, device, "resident"
        self.log: list[tuple[str, str]] = []
        self._hooked: set[str] = set()

    def set_mode(self, mode: str) -> None:
        if mode == self.mode:
            return
        from accelerate.hooks import remove_hook_from_module

        for name in list(self._hooked):
            remove_hook_from_module(self.models[name], recurse=True)
            self._hooked.discard(name)
        self.mode = mode
        target = self.device if mode == "resident" else torch.device("cpu")
        for model in self.models.values():
            model.to(target)

    @contextlib.contextmanager
    def use(self, *names: str) -> Iterator[None]:
        streamed = [n for n in names if self.mode == "sequential_offload" and n in self.BIG]
        moved = [n for n in names if self.mode != "resident" and n not in streamed]
        for name in streamed:
            if name not in self._hooked:
                from accelerate import cpu_offload

                cpu_offload(self.models[name], execution_device=self.device)
                self._hooked.add(name)
        for name in moved:
            self.models[name].to(self.device)
            self.log.append((name, "in"))
        try:
            yield
        finally:
            for name in moved:
                self.models[name].to("cpu")
                self.log.append((name, "out"))
            if moved and self.device.type == "cuda":
                torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------- pipeline
@dataclass
class TemuParts:
    vae: Any
    text_encoder: Any
    text_encoder_2: Any
    text_encoder_3: Any
    tokenizer: Any
    tokenizer_2: Any
    tokenizer_3: Any
    scheduler_config: dict
    image_encoder_l: Any
    image_encoder_g: Any
    image_processor_l: Any
    image_processor_g: Any
    generator: Any
    extractor: Any


def load_parts(models: dict[str, str], dtype: torch.dtype) -> TemuParts:
    """Every TEMU-VTOFF part from the preset's ``models`` (hub ids or local folders), on the CPU."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
    from transformers import (
        CLIPImageProcessor,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionModelWithProjection,
        T5EncoderModel,
        T5TokenizerFast,
    )

    missing = [name for name in ("sd3", "temu_vtoff", "clip_vision_l", "clip_vision_bigg") if not models.get(name)]
    if missing:
        raise ModelUnavailableError(f"the model preset names no {', '.join(missing)} (its models: section)")
    sd3, temu = models["sd3"], models["temu_vtoff"]
    generator, _ = load_transformer(temu, GENERATOR, dtype)  # the reports are logged by the loader
    extractor, _ = load_transformer(temu, EXTRACTOR, dtype)
    scheduler = from_pretrained(FlowMatchEulerDiscreteScheduler, sd3, subfolder="scheduler")
    if scheduler.config.get("use_dynamic_shifting"):
        raise ModelUnavailableError(f"{sd3}: its scheduler shifts dynamically; TEMU-VTOFF samples with SD3-Medium's")
    parts = TemuParts(
        vae=from_pretrained(AutoencoderKL, sd3, subfolder="vae", torch_dtype=dtype),
        text_encoder=from_pretrained(CLIPTextModelWithProjection, sd3, subfolder="text_encoder", dtype=dtype),
        text_encoder_2=from_pretrained(CLIPTextModelWithProjection, sd3, subfolder="text_encoder_2", dtype=dtype),
        text_encoder_3=from_pretrained(T5EncoderModel, sd3, subfolder="text_encoder_3", dtype=dtype),
        tokenizer=from_pretrained(CLIPTokenizer, sd3, subfolder="tokenizer"),
        tokenizer_2=from_pretrained(CLIPTokenizer, sd3, subfolder="tokenizer_2"),
        tokenizer_3=from_pretrained(T5TokenizerFast, sd3, subfolder="tokenizer_3"),
        scheduler_config=dict(scheduler.config),
        image_encoder_l=from_pretrained(CLIPVisionModelWithProjection, models["clip_vision_l"], dtype=dtype),
        image_encoder_g=from_pretrained(CLIPVisionModelWithProjection, models["clip_vision_bigg"], dtype=dtype),
        image_processor_l=from_pretrained(CLIPImageProcessor, models["clip_vision_l"]),
        image_processor_g=from_pretrained(CLIPImageProcessor, models["clip_vision_bigg"]),
        generator=generator, extractor=extractor,
    )
    pooled = parts.image_encoder_l.config.projection_dim + parts.image_encoder_g.config.projection_dim
    if pooled != extractor.config.pooled_projection_dim:
        raise ModelUnavailableError(f"the image encoders give {pooled} pooled features; the extractor takes "
                                    f"{extractor.config.pooled_projection_dim} (CLIP ViT-L/14 + ViT-bigG-14)")
    for module in (parts.vae, parts.text_encoder, parts.text_encoder_2, parts.text_encoder_3, parts.image_encoder_l,
                   parts.image_encoder_g):
        module.requires_grad_(False).eval()
    return parts


class TemuTryOffPipeline:
    """TEMU-VTOFF: the garment a person wears, laid out flat, from a caption of its attributes."""

    task = "tryoff_temu"

    def __init__(self, parts: TemuParts, device: torch.device | str, dtype: torch.dtype, masker=None,
                 cache_size: int = 1, background_remover: Callable[[], BackgroundRemover] | None = None) -> None:
        self.parts, self.device, self.dtype, self.masker = parts, torch.device(device), dtype, masker
        self.background_remover = background_remover  # () -> BackgroundRemover, for background="remove"
        self.placement = Placement({
            "vae": parts.vae, "text_encoder": parts.text_encoder, "text_encoder_2": parts.text_encoder_2,
            "text_encoder_3": parts.text_encoder_3, "image_encoder_l": parts.image_encoder_l,
            "image_encoder_g": parts.image_encoder_g, GENERATOR: parts.generator, EXTRACTOR: parts.extractor,
        }, self.device)
        self.placement.set_mode("model_offload")  # loaded on the CPU; the first call places them
        self.extractor_runs = 0
        self._cache: OrderedDict[str, ReferenceKV] = OrderedDict()
        self.cache_size = cache_size

    @classmethod
    def from_registry(cls, registry) -> "TemuTryOffPipeline":
        """The registry's one TEMU-VTOFF pipeline (shared, so its keys/values cache outlives a call)."""
        dtype = registry.dtype
        if registry.device.type == "cuda" and torch.cuda.is_bf16_supported():
            dtype = torch.bfloat16  # the method runs bf16
        models = dict(registry.preset.models)

        def build() -> "TemuTryOffPipeline":
            return cls(load_parts(models, dtype), registry.device, dtype, masker_factory(registry, "tryoff"),
                       background_remover=lambda: BackgroundRemover.shared(registry))

        return registry.shared("temu_pipeline", build, models.get("temu_vtoff", "TEMU-VTOFF"))

    @property
    def size_multiple(self) -> int:
        vae_scale = 2 ** (len(self.parts.vae.config.block_out_channels) - 1)
        return vae_scale * self.parts.generator.config.patch_size

    def check_inputs(self, request: TemuTryOffRequest) -> None:
        if request.person is None:
            raise ValueError("person: upload a photo of someone wearing the garment")
        if request.category not in TEMU_CATEGORIES:
            raise ValueError(f"category={request.category!r} must be one of {', '.join(TEMU_CATEGORIES)}")
        check_canvas_size(request.height, request.width, self.size_multiple)
        check_background(request.background, request.background_tolerance)
        check_steps(request.num_inference_steps, high=200)
        if not 1 <= request.num_images <= MAX_IMAGES:
            raise ValueError(f"num_images={request.num_images} must be between 1 and {MAX_IMAGES}")
        if request.memory_mode not in MEMORY_MODES:
            raise ValueError(f"memory_mode={request.memory_mode!r} must be one of {', '.join(MEMORY_MODES)}")

    # -- the stages' parts ---------------------------------------------------------------------------
    def _latents(self, pixels: torch.Tensor) -> torch.Tensor:
        vae = self.parts.vae
        with self.placement.use("vae"):
            mean = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist.mean
        return (mean - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor

    def _image_embeds(self, person: Image.Image) -> torch.Tensor:
        out = []
        for encoder, processor, name in ((self.parts.image_encoder_l, self.parts.image_processor_l, "image_encoder_l"),
                                         (self.parts.image_encoder_g, self.parts.image_processor_g, "image_encoder_g")):
            pixels = processor(images=person, return_tensors="pt").pixel_values
            with self.placement.use(name):
                out.append(encoder(pixels.to(self.device, encoder.dtype)).image_embeds)
        return torch.cat(out, dim=-1)  # (1, 768 + 1280)

    def reference(self, person: Image.Image, mask: Image.Image, width: int, height: int) -> ReferenceKV:
        """The extractor's keys/values of this photo + mask at this size: computed once, then from the cache."""
        digest = hashlib.sha1(person.tobytes() + mask.tobytes() + f"{width}x{height}{self.dtype}".encode())
        key = digest.hexdigest()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        pixels = image_to_tensor(person, width, height)  # (1, 3, H, W) in [-1, 1]
        pixel_mask = mask_to_tensor(mask, width, height)  # (1, 1, H, W), 1 = garment
        fine = pixels * (pixel_mask < 0.5)  # the garment greyed out (0 = mid grey in [-1, 1])
        person_latent, fine_latent = self._latents(pixels), self._latents(fine)
        latent_mask = F.interpolate(pixel_mask, size=person_latent.shape[-2:], mode="nearest").to(person_latent)
        inputs = torch.cat([person_latent, latent_mask, fine_latent], dim=1)  # (1, 33, h, w)
        embeds = self._image_embeds(person)
        pooled = torch.cat([torch.zeros_like(embeds), embeds])  # [uncond = zeros, cond]
        with self.placement.use(EXTRACTOR):
            extractor = self.parts.extractor
            reference = extract_reference(extractor, inputs.repeat(2, 1, 1, 1).to(extractor.dtype),
                                          pooled.to(extractor.dtype))
        self.extractor_runs += 1
        self._cache[key] = reference
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return reference

    def encode_caption(self, caption: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """([negative; caption] prompt embeddings (2B, 154, T5 width), pooled (2B, P)) via diffusers' SD3 encoder."""
        from diffusers import StableDiffusion3Pipeline

        parts = self.parts
        encoder = StableDiffusion3Pipeline(
            transformer=None, scheduler=None, vae=None, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
            text_encoder_2=parts.text_encoder_2, tokenizer_2=parts.tokenizer_2, text_encoder_3=parts.text_encoder_3,
            tokenizer_3=parts.tokenizer_3,
        )
        with self.placement.use("text_encoder", "text_encoder_2", "text_encoder_3"):
            embeds, negative, pooled, negative_pooled = encoder.encode_prompt(
                prompt=caption, prompt_2=caption, prompt_3=caption, negative_prompt="", device=self.device,
                num_images_per_prompt=batch, do_classifier_free_guidance=True, max_sequence_length=MAX_SEQUENCE_LENGTH,
            )
        return torch.cat([negative, embeds]), torch.cat([negative_pooled, pooled])

    # -- the call ----------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, request: TemuTryOffRequest, control: RunControl | None = None) -> TryOffResult:
        """``num_images`` flat garments of (H, W) = (height, width)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        # 1. inputs and memory mode
        self.check_inputs(request)
        control = control or RunControl()
        control.overall_total = request.num_inference_steps
        control.check()
        sizes = {name: sum(p.numel() * p.element_size() for p in model.parameters())
                 for name, model in self.placement.models.items()}
        mode, why = choose_memory_mode(request.memory_mode, self.device, sizes)
        self.placement.set_mode(mode)
        seed, batch = resolve_seed(request.seed), int(request.num_images)
        height, width = request.height, request.width
        caption = request.caption.strip() or TEMU_CAPTIONS[request.category]

        # 2. canvas, garment mask
        person = to_rgb(request.person, "person")
        person_canvas, info = fit_to_canvas(person, width, height, request.fit_mode)
        mask, mask_source, note = resolve_mask(person, request.mask, request.auto_mask, request.category,
                                               self.masker, "tryoff")
        mask_canvas, _ = fit_mask(mask, width, height, info=info)
        if not np.asarray(mask_canvas).any():
            raise ValueError("the garment mask lies outside the part of the photo the model sees (fit mode crop)")

        # 3.-4. caption, the extractor's keys/values (once per photo)
        prompt, pooled = self.encode_caption(caption, batch)
        reference = self.reference(person_canvas, mask_canvas, width, height)
        reference.batch = batch
        control.check()

        # 5. flow-matching Euler with batched CFG and the hybrid attention
        generator = self.parts.generator
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.parts.scheduler_config)
        scheduler.set_timesteps(request.num_inference_steps, device=self.device)
        vae_scale = 2 ** (len(self.parts.vae.config.block_out_channels) - 1)
        shape = (batch, generator.config.in_channels, height // vae_scale, width // vae_scale)
        latents = randn(shape, generators(seed, batch, self.device), self.device, torch.float32)
        prompt, pooled = prompt.to(generator.dtype), pooled.to(generator.dtype)
        total = len(scheduler.timesteps)
        with self.placement.use(GENERATOR), swapped_processors(generator, hybrid_processors(generator, reference)):
            for index, t in enumerate(scheduler.timesteps):
                control.check()
                model_in = torch.cat([latents, latents]).to(generator.dtype)
                velocity = generator(hidden_states=model_in, timestep=t.expand(model_in.shape[0]),
                                     encoder_hidden_states=prompt, pooled_projections=pooled,
                                     return_dict=False)[0].float()
                uncond, cond = velocity.chunk(2)
                velocity = uncond + request.guidance_scale * (cond - uncond)
                latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
                control.step("try-off (TEMU-VTOFF)", index + 1, total, latents[:, :4])

        # 6. decode, whiten
        vae = self.parts.vae
        with self.placement.use("vae"):
            decoded = vae.decode((latents / vae.config.scaling_factor + (vae.config.shift_factor or 0.0))
                                 .to(vae.dtype)).sample
        raw = tensor_to_images(decoded.float())
        images, background_note, background_used = finish_background(
            raw, request.background, request.background_tolerance, self.background_remover)
        note = "; ".join(x for x in (note, f"memory: {mode.replace('_', ' ')} ({why})", background_note) if x)
        params = dict(request.params(), seed=seed, task=self.task, caption=caption, memory_mode=mode,
                      mask_source=mask_source, background_used=background_used)
        return TryOffResult(images, mask, mask_source, [seed + i for i in range(batch)], params, raw, note)


# ------------------------------------------------------------------------------------ studio service task
def run_task(registry, params: dict[str, Any], control: RunControl):
    """The ``tryoff_temu`` task: TemuTryOffRequest fields in, garments out; extras: mask, memory mode, and how
    often the extractor has run in this process (once per photo, not per seed)."""
    try:
        pipeline = TemuTryOffPipeline.from_registry(registry)
    except OSError as error:
        raise ModelUnavailableError(offline_hint(str(registry.preset.models.get("temu_vtoff", "")))) from error
    result = pipeline(TemuTryOffRequest(**params), control)
    per_image = [dict(result.params, seed=seed, num_images=1) for seed in result.seeds]
    return TaskResult(result.images, per_image, {
        "mask": result.mask, "mask_source": result.mask_source, "note": result.note, "raw_images": result.raw_images,
        "memory_mode": result.params["memory_mode"], "extractor_runs": pipeline.extractor_runs,
    })
