"""The official checkpoint indices against the REAL SD1.5 UNet shapes (built on the meta device: no memory)."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from benchmarks.models import SD15_UNET
from pipelines.core.attention import processor_names
from pipelines.garment.checkpoints import color_processors, mixed_processors

# From the spec: attn1 processor index -> hidden size of the GAM's to_k_ref/to_v_ref.
SPEC_GAM_SIZES = {0: 320, 2: 320, 4: 640, 6: 640, 8: 1280, 10: 1280, 12: 1280, 14: 1280, 16: 1280,
                  18: 640, 20: 640, 22: 640, 24: 320, 26: 320, 28: 320, 30: 1280}


@pytest.fixture(scope="module")
def sd15_unet():
    with torch.device("meta"):
        return UNet2DConditionModel(**SD15_UNET)


def test_gam_adapter_indices_match_the_official_layout(sd15_unet):
    names = processor_names(sd15_unet)
    assert len(names) == 32
    processors = mixed_processors(sd15_unet)
    sizes = {names.index(name): proc.to_k_ref.weight.shape[0] for name, proc in processors.items()}
    assert sizes == SPEC_GAM_SIZES
    assert names[30].startswith("mid_block.")


def test_colour_adapter_indices_match_ip_adapter_sd15(sd15_unet):
    names = processor_names(sd15_unet)
    processors = color_processors(sd15_unet, 768)
    shapes = {names.index(name): tuple(proc.to_k_ip.weight.shape) for name, proc in processors.items()}
    assert sorted(shapes) == list(range(1, 32, 2))
    assert shapes[1] == (320, 768) and shapes[31] == (1280, 768)
    assert sum(p.numel() for proc in processors.values() for p in proc.parameters()) > 0


@pytest.mark.slow
def test_full_size_gam_forward_on_cpu():
    """One full-size mixed-attention UNet forward at a 64x64 latent (slow: ~10-30 s on CPU)."""
    from benchmarks.models import garment_pipeline
    from pipelines.types import GarmentRequest

    pipe = garment_pipeline("full", "cpu", torch.float32)
    from PIL import Image

    result = pipe(GarmentRequest(prompt="x", sketch=Image.new("RGB", (512, 512), "white"), height=512, width=512,
                                 num_inference_steps=1, guidance_scale=1.0))
    assert result.images[0].size == (512, 512)
