"""Random-initialised models from the REAL configs (the compute does not depend on the weight values).

``full``: SD1.5 UNet (859.5M) + 9-channel inpainting UNet + SD VAE + CLIP ViT-L text encoder + ViT-H image
encoder, exactly the shapes of the hub models. ``small``: the same architecture at a quarter of the
widths, for CPU A/B measurements on machines without a GPU.
"""

from __future__ import annotations

import torch

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


def configs(size: str) -> tuple[dict, dict, dict, dict]:
    if size == "full":
        return SD15_UNET, SD_VAE, CLIP_TEXT, VIT_H
    if size == "small":
        unet = dict(SD15_UNET, block_out_channels=(80, 160, 320, 320), cross_attention_dim=192, attention_head_dim=4,
                    norm_num_groups=16)
        vae = dict(SD_VAE, block_out_channels=(32, 64, 128, 128), layers_per_block=1)
        text = dict(CLIP_TEXT, hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4)
        vision = dict(VIT_H, hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4)
        return unet, vae, text, vision
    raise ValueError(f"size={size!r} must be 'full' or 'small'")


def garment_pipeline(size: str, device: str, dtype: torch.dtype):
    """A GarmentDesignPipeline with every part (GAM, colour adapter, LEM weight set) at ``size``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from pipelines.core.concat_inpaint import WeightSetSwitcher, attn1_set_from_named
    from pipelines.garment.pipeline import GarmentDesignPipeline
    from pipelines.garment.checkpoints import ImageProjection, color_processors, mixed_processors
    from pipelines.core.tiny import tiny_scheduler, tiny_tokenizer

    unet_cfg, vae_cfg, text_cfg, vision_cfg = configs(size)
    torch.manual_seed(0)

    def place(module):
        return module.to(device, dtype).eval().requires_grad_(False)

    unet = place(UNet2DConditionModel(**unet_cfg))
    ref_unet = place(UNet2DConditionModel(**unet_cfg))
    inpaint = place(UNet2DConditionModel(**dict(unet_cfg, in_channels=9)))
    vae = place(AutoencoderKL(**vae_cfg))
    tokenizer = tiny_tokenizer()  # tokenisation cost is negligible; the encoder is full size
    text_encoder = place(CLIPTextModel(CLIPTextConfig(**dict(text_cfg, vocab_size=max(len(tokenizer), 512)))))
    image_encoder = place(CLIPVisionModelWithProjection(CLIPVisionConfig(**vision_cfg)))
    image_processor = CLIPImageProcessor()
    mixed = {name: place(proc) for name, proc in mixed_processors(unet).items()}
    colors = {name: place(proc) for name, proc in color_processors(unet, unet_cfg["cross_attention_dim"]).items()}
    projection = place(ImageProjection(vision_cfg["projection_dim"], unet_cfg["cross_attention_dim"]))
    switcher = WeightSetSwitcher(inpaint)
    switcher.register(attn1_set_from_named(
        {k: v.clone() for k, v in inpaint.state_dict().items() if ".attn1." in k}, inpaint, "garment_lem", "bench"
    ))
    return GarmentDesignPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler_factory=tiny_scheduler,
        ref_unet=ref_unet, mixed_processors=mixed, image_encoder=image_encoder, image_processor=image_processor,
        image_projection=projection, color_processors=colors, inpaint_switcher=switcher, lem_set="garment_lem",
    )
