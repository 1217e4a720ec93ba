"""Random-initialised models from the REAL configs (the compute does not depend on the weight values).

Every model family a pipeline uses, as config dicts (no Hub, no files):

- SD1.5 family (design, dressing, try-on, try-off): the SD1.5 UNet (859.5M), the 9-channel inpainting UNet, the SD
  VAE, the CLIP ViT-L text encoder, the IP-Adapter ViT-H image encoder and IMAGDressing's Resampler;
- SD3-Medium family (TEMU-VTOFF): the MMDiT transformer (2B; the garment generator with 16 input channels and the
  feature extractor with 33 and no text projections), the 16-channel SD3 VAE, CLIP-L + CLIP-G + T5-XXL text
  encoders and the CLIP ViT-L/14 + ViT-bigG-14 image encoders.

``full``: exactly the shapes of the hub models. ``small``: the same architectures at a quarter of the widths (and
fewer layers in the encoders / transformer), for CPU measurements. ``tiny``: the test-suite's widths (a smoke test of
the harness). The pipelines are assembled with the same constructors and processor builders their loaders use
(``mixed_processors``/``color_processors``/``dressing_processors``, ``WeightSetSwitcher``, ``TemuParts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

SIZES = ("full", "small", "tiny")

# ------------------------------------------------------------------------------------------- SD1.5 family
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
)
CLIP_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, projection_dim=768)
VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
             image_size=224, patch_size=14, projection_dim=1024)
# IMAGDressing-v1's Resampler (IP-Adapter-Plus): ViT-H penultimate features (1280) -> 16 tokens of 768
RESAMPLER = dict(dim=768, depth=4, heads=12, dim_head=64, num_queries=16, embedding_dim=1280, output_dim=768, ff_mult=4)

# ------------------------------------------------------------------------------------------ SD3-Medium family
SD3_TRANSFORMER = dict(
    sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64, num_attention_heads=24,
    joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
    pos_embed_max_size=192,
)
SD3_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024,
    scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False,
)
SD3_CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")
SD3_CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                  max_position_embeddings=77, projection_dim=1280, hidden_act="gelu")
T5_XXL = dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, feed_forward_proj="gated-gelu")
VISION_L14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
VISION_BIGG14 = dict(hidden_size=1664, intermediate_size=8192, num_hidden_layers=48, num_attention_heads=16,
                     image_size=224, patch_size=14, projection_dim=1280, hidden_act="gelu")


def configs(size: str) -> tuple[dict, dict, dict, dict]:
    """(UNet, VAE, CLIP text, ViT-H image encoder) configs of the SD1.5 family at ``size``."""
    if size == "full":
        return SD15_UNET, SD_VAE, CLIP_TEXT, VIT_H
    if size == "small":
        unet = dict(SD15_UNET, block_out_channels=(80, 160, 320, 320), cross_attention_dim=192, attention_head_dim=4,
                    norm_num_groups=16)
        vae = dict(SD_VAE, block_out_channels=(32, 64, 128, 128), layers_per_block=1)
        text = dict(CLIP_TEXT, hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4)
        vision = dict(VIT_H, hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4)
        return unet, vae, text, vision
    if size == "tiny":  # the test-suite's geometry (pipelines/core/tiny.py)
        unet = dict(SD15_UNET, sample_size=8, layers_per_block=1, block_out_channels=(32, 64), norm_num_groups=8,
                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8)
        vae = dict(SD_VAE, block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8)
        text = dict(CLIP_TEXT, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    projection_dim=32)
        vision = dict(VIT_H, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      image_size=32, patch_size=8, projection_dim=32)
        return unet, vae, text, vision
    raise ValueError(f"size={size!r} must be one of {', '.join(SIZES)}")


def resampler_config(size: str) -> dict:
    unet, _, _, vision = configs(size)
    if size == "full":
        return RESAMPLER
    heads = 3 if size == "small" else 2
    return dict(RESAMPLER, dim=64 * heads, heads=heads, depth=4 if size == "small" else 2,
                embedding_dim=vision["hidden_size"], output_dim=unet["cross_attention_dim"])


def sd3_configs(size: str) -> dict[str, dict]:
    """The TEMU-VTOFF / SD3-Medium family at ``size``: transformer, vae, clip_l, clip_g, t5, vision_l, vision_g."""
    if size == "full":
        return dict(transformer=SD3_TRANSFORMER, vae=SD3_VAE, clip_l=SD3_CLIP_L, clip_g=SD3_CLIP_G, t5=T5_XXL,
                    vision_l=VISION_L14, vision_g=VISION_BIGG14)
    if size == "small":
        proj = 128  # x2 = pooled_projection_dim (text and image pooled features)
        return dict(
            transformer=dict(SD3_TRANSFORMER, num_layers=6, num_attention_heads=6, joint_attention_dim=512,
                             caption_projection_dim=384, pooled_projection_dim=2 * proj),
            vae=dict(SD3_VAE, block_out_channels=(32, 64, 128, 128), layers_per_block=1),
            clip_l=dict(SD3_CLIP_L, hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                        projection_dim=proj),
            clip_g=dict(SD3_CLIP_G, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                        num_attention_heads=4, projection_dim=proj),
            t5=dict(T5_XXL, d_model=512, d_ff=1024, num_layers=4, num_heads=8),
            vision_l=dict(VISION_L14, hidden_size=192, intermediate_size=768, num_hidden_layers=4,
                          num_attention_heads=4, projection_dim=proj),
            vision_g=dict(VISION_BIGG14, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                          num_attention_heads=4, projection_dim=proj),
        )
    if size == "tiny":  # pipelines/temu/checkpoints.py TinySD3
        proj = 16
        clip = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=77, projection_dim=proj)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                      patch_size=8, projection_dim=proj)
        return dict(
            transformer=dict(SD3_TRANSFORMER, sample_size=32, num_layers=2, attention_head_dim=8, num_attention_heads=4,
                             joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=2 * proj,
                             pos_embed_max_size=32),
            vae=dict(SD3_VAE, block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8),
            clip_l=clip, clip_g=clip, t5=dict(d_model=64, d_kv=16, d_ff=64, num_layers=1, num_heads=4),
            vision_l=vision, vision_g=vision,
        )
    raise ValueError(f"size={size!r} must be one of {', '.join(SIZES)}")


# -------------------------------------------------------------------------------------------- bundles
@dataclass
class Bundle:
    """A pipeline built at one size plus every module it holds (to cast, size and free them together)."""

    pipeline: Any
    modules: dict[str, torch.nn.Module]
    denoisers: list[torch.nn.Module]  # the per-step model(s): timed per call
    parts: dict[str, Any] = field(default_factory=dict)  # what the reference / plain loops need besides modules

    def cast(self, dtype: torch.dtype) -> None:
        for module in self.modules.values():
            module.to(dtype=dtype)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for m in self.modules.values() for p in m.parameters())

    @property
    def num_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for m in self.modules.values() for p in m.parameters())


def _builder(device: str, dtype: torch.dtype):
    def place(module):
        return module.to(device=device, dtype=dtype).eval().requires_grad_(False)

    return place


def _image_processor(vision_cfg: dict):
    from transformers import CLIPImageProcessor

    side = vision_cfg["image_size"]
    return CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})


def _sd15_common(size: str, device: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from pipelines.core.tiny import tiny_tokenizer

    unet_cfg, vae_cfg, text_cfg, vision_cfg = configs(size)
    place = _builder(device, dtype)
    tokenizer = tiny_tokenizer()  # tokenisation cost is negligible; the encoder is full size
    with torch.device(device):
        vae = place(AutoencoderKL(**vae_cfg))
        text_encoder = place(CLIPTextModel(CLIPTextConfig(**dict(
            text_cfg, vocab_size=max(len(tokenizer), 512), bos_token_id=0, eos_token_id=1, pad_token_id=1))))
    return unet_cfg, vision_cfg, place, tokenizer, vae, text_encoder


def garment_bundle(size: str, device: str, dtype: torch.dtype) -> Bundle:
    """A GarmentDesignPipeline with every part (GAM, colour adapter, LEM weight set) at ``size``."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from pipelines.core.concat_inpaint import WeightSetSwitcher, attn1_set_from_named
    from pipelines.core.tiny import tiny_scheduler
    from pipelines.garment.checkpoints import ImageProjection, color_processors, mixed_processors
    from pipelines.garment.pipeline import GarmentDesignPipeline

    torch.manual_seed(0)
    unet_cfg, vision_cfg, place, tokenizer, vae, text_encoder = _sd15_common(size, device, dtype)
    with torch.device(device):
        unet = place(UNet2DConditionModel(**unet_cfg))
        ref_unet = place(UNet2DConditionModel(**unet_cfg))
        inpaint = place(UNet2DConditionModel(**dict(unet_cfg, in_channels=9)))
        image_encoder = place(CLIPVisionModelWithProjection(CLIPVisionConfig(**vision_cfg)))
        mixed = {name: place(proc) for name, proc in mixed_processors(unet).items()}
        colors = {name: place(proc) for name, proc in color_processors(unet, unet_cfg["cross_attention_dim"]).items()}
        projection = place(ImageProjection(vision_cfg["projection_dim"], unet_cfg["cross_attention_dim"]))
    switcher = WeightSetSwitcher(inpaint)
    switcher.register(attn1_set_from_named(
        {k: v.clone() for k, v in inpaint.state_dict().items() if ".attn1." in k}, inpaint, "garment_lem", "bench"
    ))
    pipeline = GarmentDesignPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler_factory=tiny_scheduler,
        ref_unet=ref_unet, mixed_processors=mixed, image_encoder=image_encoder, image_processor=_image_processor(vision_cfg),
        image_projection=projection, color_processors=colors, inpaint_switcher=switcher, lem_set="garment_lem",
    )
    modules = dict(unet=unet, ref_unet=ref_unet, inpaint_unet=inpaint, vae=vae, text_encoder=text_encoder,
                   image_encoder=image_encoder, image_projection=projection,
                   mixed=torch.nn.ModuleList(mixed.values()), colors=torch.nn.ModuleList(colors.values()))
    return Bundle(pipeline, modules, [unet, inpaint], dict(tokenizer=tokenizer, scheduler_factory=tiny_scheduler))


def garment_pipeline(size: str, device: str, dtype: torch.dtype):
    """A GarmentDesignPipeline with every part (GAM, colour adapter, LEM weight set) at ``size``."""
    return garment_bundle(size, device, dtype).pipeline


def dressing_bundle(size: str, device: str, dtype: torch.dtype) -> Bundle:
    """A DressingPipeline (IMAGDressing garment UNet + Resampler + Dressing-Attention on the base UNet) at ``size``."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from pipelines.core.tiny import tiny_scheduler
    from pipelines.dressing.checkpoints import dressing_processors
    from pipelines.dressing.pipeline import DressingPipeline
    from pipelines.dressing.resampler import Resampler, ResamplerConfig

    torch.manual_seed(0)
    unet_cfg, vision_cfg, place, tokenizer, vae, text_encoder = _sd15_common(size, device, dtype)
    with torch.device(device):
        unet = place(UNet2DConditionModel(**unet_cfg))
        garment_unet = place(UNet2DConditionModel(**unet_cfg))
        image_encoder = place(CLIPVisionModelWithProjection(CLIPVisionConfig(**vision_cfg)))
        resampler = place(Resampler(ResamplerConfig(**resampler_config(size))))
        processors = {name: place(proc) for name, proc in dressing_processors(unet).items()}
    pipeline = DressingPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler_factory=tiny_scheduler,
        garment_unet=garment_unet, resampler=resampler, dressing_processors=processors, image_encoder=image_encoder,
        image_processor=_image_processor(vision_cfg),
    )
    modules = dict(unet=unet, garment_unet=garment_unet, vae=vae, text_encoder=text_encoder,
                   image_encoder=image_encoder, resampler=resampler,
                   processors=torch.nn.ModuleList(processors.values()))
    return Bundle(pipeline, modules, [unet], dict(tokenizer=tokenizer, scheduler_factory=tiny_scheduler))


def inpaint_bundle(size: str, device: str, dtype: torch.dtype) -> Bundle:
    """CatVTON try-on and TryOffAnyone try-off on ONE 9-channel inpainting UNet (two weight sets), at ``size``.

    ``pipeline`` is a dict {"tryon": CatVTONPipeline, "tryoff": TryOffAnyonePipeline}."""
    from diffusers import UNet2DConditionModel

    from pipelines.core.concat_inpaint import WeightSetSwitcher, attn1_set_from_named
    from pipelines.core.tiny import tiny_scheduler
    from pipelines.tryoff.pipeline import TryOffAnyonePipeline
    from pipelines.tryon.pipeline import CatVTONPipeline

    torch.manual_seed(0)
    unet_cfg, _, place, tokenizer, vae, text_encoder = _sd15_common(size, device, dtype)
    with torch.device(device):
        inpaint = place(UNet2DConditionModel(**dict(unet_cfg, in_channels=9)))
    switcher = WeightSetSwitcher(inpaint)
    attn1 = {k: v.clone() for k, v in inpaint.state_dict().items() if ".attn1." in k}
    # The weight VALUES do not change the compute; each method gets its own registered set as in the studio.
    switcher.register(attn1_set_from_named(attn1, inpaint, "tryon_catvton", "bench"))
    switcher.register(attn1_set_from_named(attn1, inpaint, "tryoff_tryoffanyone", "bench"))
    pipelines = {
        "tryon": CatVTONPipeline(vae=vae, switcher=switcher, weight_set="tryon_catvton", scheduler_factory=tiny_scheduler),
        "tryoff": TryOffAnyonePipeline(vae=vae, switcher=switcher, weight_set="tryoff_tryoffanyone",
                                       scheduler_factory=tiny_scheduler),
    }
    # the text encoder is used only by the plain diffusers inpainting pipeline (CatVTON / TryOffAnyone read no text)
    modules = dict(inpaint_unet=inpaint, vae=vae, text_encoder=text_encoder)
    return Bundle(pipelines, modules, [inpaint], dict(tokenizer=tokenizer, scheduler_factory=tiny_scheduler,
                                                      switcher=switcher))


def temu_bundle(size: str, device: str, dtype: torch.dtype) -> Bundle:
    """TEMU-VTOFF (generator + extractor on SD3-Medium, three text and two image encoders) at ``size``."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        T5Config,
        T5EncoderModel,
    )

    from pipelines.core.tiny import tiny_tokenizer
    from pipelines.temu.checkpoints import EXTRACTOR_IN_CHANNELS, _tiny_t5_tokenizer, strip_text_projections
    from pipelines.temu.pipeline import TemuParts, TemuTryOffPipeline

    cfg = sd3_configs(size)
    place = _builder(device, dtype)
    torch.manual_seed(0)
    clip_tokenizer, t5_tokenizer = tiny_tokenizer(), _tiny_t5_tokenizer()
    special = dict(bos_token_id=0, eos_token_id=1, pad_token_id=1, vocab_size=max(len(clip_tokenizer), 512))
    with torch.device(device):  # built where they run: T5-XXL alone is 4.7B parameters
        generator = place(SD3Transformer2DModel(**cfg["transformer"]))
        extractor = place(strip_text_projections(SD3Transformer2DModel(**dict(cfg["transformer"],
                                                                               in_channels=EXTRACTOR_IN_CHANNELS))))
        vae = place(AutoencoderKL(**cfg["vae"]))
        text_encoder = place(CLIPTextModelWithProjection(CLIPTextConfig(**dict(cfg["clip_l"], **special))))
        text_encoder_2 = place(CLIPTextModelWithProjection(CLIPTextConfig(**dict(cfg["clip_g"], **special))))
        text_encoder_3 = place(T5EncoderModel(T5Config(**dict(cfg["t5"], vocab_size=max(len(t5_tokenizer), 512),
                                                              decoder_start_token_id=0, pad_token_id=0,
                                                              eos_token_id=1))))
        image_encoder_l = place(CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg["vision_l"])))
        image_encoder_g = place(CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg["vision_g"])))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    parts = TemuParts(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, text_encoder_3=text_encoder_3,
        tokenizer=clip_tokenizer, tokenizer_2=clip_tokenizer, tokenizer_3=t5_tokenizer,
        scheduler_config=dict(scheduler.config), image_encoder_l=image_encoder_l, image_encoder_g=image_encoder_g,
        image_processor_l=_image_processor(cfg["vision_l"]), image_processor_g=_image_processor(cfg["vision_g"]),
        generator=generator, extractor=extractor,
    )
    pipeline = TemuTryOffPipeline(parts, device, dtype)
    pipeline.placement.set_mode("resident")  # the constructor parks the models on the CPU until the first call
    modules = dict(generator=generator, extractor=extractor, vae=vae, text_encoder=text_encoder,
                   text_encoder_2=text_encoder_2, text_encoder_3=text_encoder_3, image_encoder_l=image_encoder_l,
                   image_encoder_g=image_encoder_g)
    return Bundle(pipeline, modules, [generator], dict(parts=parts))


BUILDERS = {"garment": garment_bundle, "dressing": dressing_bundle, "inpaint": inpaint_bundle, "temu": temu_bundle}
