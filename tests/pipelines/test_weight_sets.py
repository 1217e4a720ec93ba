"""One inpainting UNet serves the garment LEM, CatVTON try-on and TryOffAnyone try-off by swapping weight sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.core.concat_inpaint import inpaint_switcher
from pipelines.garment.pipeline import GarmentDesignPipeline
from pipelines.tryoff.pipeline import TryOffAnyonePipeline
from pipelines.tryon.pipeline import CatVTONPipeline
from pipelines.types import GarmentRequest, TryOffRequest, TryOnRequest
from tests.pipelines.test_tryon import box_mask, fresh_registry, noise_image


@pytest.fixture(scope="module")
def person():
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((96, 110))


def tryon_request(person) -> TryOnRequest:
    return TryOnRequest(person=person, garment=noise_image(40, 50, 3), mask=box_mask(person.size, (20, 40, 80, 110)),
                        auto_mask=False, height=64, width=48, num_inference_steps=2, seed=11)


def tryoff_request(person) -> TryOffRequest:
    return TryOffRequest(person=person, mask=box_mask(person.size, (20, 40, 80, 110)), auto_mask=False,
                         height=64, width=48, num_inference_steps=2)


def same(a: Image.Image, b: Image.Image) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_one_unet_serves_lem_tryon_tryoff(models_dir, person):
    registry = fresh_registry(models_dir)
    unet = registry.get("inpaint_unet")
    base = {key: value.clone() for key, value in unet.state_dict().items()}

    garment = GarmentDesignPipeline.from_registry(registry, need_sketch=False, need_color=False, need_logo=True)
    tryon = CatVTONPipeline.from_registry(registry)
    tryoff = TryOffAnyonePipeline.from_registry(registry)
    switcher = inpaint_switcher(registry)
    assert garment.inpaint_switcher is switcher and tryon.switcher is switcher and tryoff.switcher is switcher
    assert switcher.unet is unet
    assert set(switcher.sets) == {"garment_lem", "tryon_catvton", "tryoff_anyone"}
    assert [m.name for m in registry.status().loaded].count("inpaint_unet") == 1

    first_tryon = tryon(tryon_request(person)).images[0]
    logo_request = GarmentRequest(prompt="a shirt", logo=noise_image(32, 32, 5), logo_mask=box_mask((64, 80), (16, 16, 48, 48)),
                                  height=80, width=64, num_inference_steps=2)
    garment(logo_request)  # LEM
    assert switcher.active == "garment_lem"
    after_lem = tryon(tryon_request(person)).images[0]
    tryoff_output = tryoff(tryoff_request(person)).images[0]
    assert switcher.active == "tryoff_anyone"
    after_all = tryon(tryon_request(person)).images[0]
    assert same(first_tryon, after_lem) and same(first_tryon, after_all)

    # The weight sets differ (otherwise the swaps would prove nothing).
    switcher.activate("tryon_catvton")
    tryon_q = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight.clone()
    switcher.activate("tryoff_anyone")
    assert not torch.equal(tryon_q, unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight)

    # Base weights come back exactly.
    switcher.activate(None)
    assert all(torch.equal(value, base[key]) for key, value in unet.state_dict().items())

    # A freshly loaded studio gives the very same pixels.
    fresh = fresh_registry(models_dir)
    assert same(CatVTONPipeline.from_registry(fresh)(tryon_request(person)).images[0], after_all)
    assert same(TryOffAnyonePipeline.from_registry(fresh)(tryoff_request(person)).images[0], tryoff_output)
