"""IMAGDressing-v1 loader (official layout), the Resampler's real shapes, slot-LoRA files, community LoRAs."""

from __future__ import annotations

import pytest
import torch

from pipelines.core.attention import processor_names
from pipelines.types import CheckpointError
from pipelines.core.sampling import encode_prompts
from pipelines.dressing.checkpoints import (
    SlotLoRAs,
    load_imagdressing,
    load_slot_loras,
    save_slot_loras,
    write_tiny_imagdressing,
)
from pipelines.core.lora import LoraPlugins, write_tiny_kohya_lora
from pipelines.types import LoraSpec
from pipelines.dressing.resampler import Resampler, ResamplerConfig
from pipelines.core.tiny import tiny_unet


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    return write_tiny_imagdressing(tmp_path_factory.mktemp("imagdressing"))


def rewrite(path, tmp_path, change) -> str:
    data = torch.load(path, weights_only=True)
    change(data["module"])
    target = tmp_path / "IMAGDressing-v1_512.pt"
    torch.save(data, target)
    return target


def test_loads_official_layout(official):
    unet, garment_unet = tiny_unet(4, seed=0), tiny_unet(4, seed=5)
    resampler, processors, report = load_imagdressing(official, garment_unet, unet)
    data = torch.load(official, weights_only=True)["module"]
    # every ref_unet / proj / adapter tensor is reported loaded, unet.* reported ignored
    placed = {k for k in data if not k.startswith("unet.")}
    assert set(report.loaded) == placed
    assert report.ignored and all(k.startswith("unet.") for k in report.ignored)
    first = next(k for k in data if k.startswith("ref_unet."))
    torch.testing.assert_close(garment_unet.state_dict()[first[len("ref_unet."):]], data[first].float())
    torch.testing.assert_close(resampler.latents.data, data["proj.latents"].float())
    assert resampler.config.num_queries == 16 and resampler.config.embedding_dim == 48
    names = processor_names(unet)
    attn1 = [i for i, n in enumerate(names) if ".attn1." in n]
    assert attn1 == list(range(0, len(names), 2))  # attn1 at even indices, as the official files assume
    torch.testing.assert_close(processors[names[2]].to_k_ref.weight.data, data["adapter_modules.2.to_k_ref.weight"].float())
    assert set(processors) == {names[i] for i in attn1}


def test_missing_key_is_named(official, tmp_path):
    path = rewrite(official, tmp_path, lambda s: s.pop("adapter_modules.2.to_v_ref.weight"))
    with pytest.raises(CheckpointError, match=r"missing: 2\.to_v_ref\.weight"):
        load_imagdressing(path, tiny_unet(4), tiny_unet(4))
    path = rewrite(official, tmp_path, lambda s: s.pop("proj.layers.1.0.to_kv.weight"))
    with pytest.raises(CheckpointError, match=r"layers\.1\.0\.to_kv\.weight"):
        load_imagdressing(path, tiny_unet(4), tiny_unet(4))


def test_mis_shaped_key_names_both_shapes(official, tmp_path):
    def change(state):
        state["adapter_modules.0.to_k_ref.weight"] = torch.zeros(32, 16)

    path = rewrite(official, tmp_path, change)
    with pytest.raises(CheckpointError, match=r"0\.to_k_ref\.weight \(file \(32, 16\), model \(32, 32\)\)"):
        load_imagdressing(path, tiny_unet(4), tiny_unet(4))

    def change_unet(state):
        state["ref_unet.conv_in.weight"] = torch.zeros(32, 9, 3, 3)

    path = rewrite(official, tmp_path, change_unet)
    with pytest.raises(CheckpointError, match=r"conv_in\.weight \(file \(32, 9, 3, 3\), model \(32, 4, 3, 3\)\)"):
        load_imagdressing(path, tiny_unet(4), tiny_unet(4))


def test_stray_and_corrupt_files(official, tmp_path):
    path = rewrite(official, tmp_path, lambda s: s.__setitem__("image_proj.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match="unexpected keys image_proj.weight"):
        load_imagdressing(path, tiny_unet(4), tiny_unet(4))
    corrupt = tmp_path / "broken.pt"
    corrupt.write_bytes(official.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="broken.pt: the file is truncated or damaged"):
        load_imagdressing(corrupt, tiny_unet(4), tiny_unet(4))
    path = rewrite(official, tmp_path, lambda s: [s.pop(k) for k in list(s) if k.startswith("ref_unet.")])
    with pytest.raises(CheckpointError, match="no 'ref_unet"):
        load_imagdressing(path, tiny_unet(4), tiny_unet(4))


def test_resampler_real_layout_and_config_recovery():
    resampler = Resampler(ResamplerConfig())
    shapes = {k: tuple(v.shape) for k, v in resampler.state_dict().items()}
    assert shapes["latents"] == (1, 16, 768)
    assert shapes["proj_in.weight"] == (768, 1280) and shapes["proj_out.weight"] == (768, 768)
    assert shapes["norm_out.weight"] == (768,) and shapes["norm_out.bias"] == (768,)
    for n in range(4):
        assert shapes[f"layers.{n}.0.to_kv.weight"] == (1536, 768)
        assert shapes[f"layers.{n}.0.to_q.weight"] == (768, 768) and shapes[f"layers.{n}.0.to_out.weight"] == (768, 768)
        assert shapes[f"layers.{n}.0.norm1.bias"] == (768,) and shapes[f"layers.{n}.0.norm2.weight"] == (768,)
        assert shapes[f"layers.{n}.1.0.weight"] == (768,)
        assert shapes[f"layers.{n}.1.1.weight"] == (3072, 768) and shapes[f"layers.{n}.1.3.weight"] == (768, 3072)
    assert not any(k.endswith(("to_q.bias", "to_kv.bias", "to_out.bias", "1.1.bias", "1.3.bias")) for k in shapes)
    assert len(shapes) == 7 + 4 * 11  # latents, proj_in, proj_out, norm_out; 7 attention + 4 feed-forward per layer
    assert ResamplerConfig.from_state_dict(resampler.state_dict()) == ResamplerConfig()
    with torch.no_grad():
        tokens = resampler(torch.randn(2, 257, 1280))
    assert tokens.shape == (2, 16, 768)


def test_slot_lora_roundtrip_and_errors(tmp_path):
    garment_unet = tiny_unet(4, seed=3)
    loras = SlotLoRAs.for_unet(garment_unet, labels=("upper", "lower", "hat"), rank=4, alpha=2.0)
    assert not loras.is_active()  # zero-initialised B: a no-op until trained
    with torch.no_grad():
        for layer in loras.layers.values():
            layer.up.normal_()
    path = save_slot_loras(loras, tmp_path / "slots.safetensors")
    loaded, report = load_slot_loras(path, garment_unet)
    assert loaded.labels == ["upper", "lower", "hat"] and loaded.rank == 4 and loaded.scale == 0.5
    assert len(report.loaded) == len(loras.names) * 3 * 3 * 2
    for name in loras.names:
        torch.testing.assert_close(loaded.layer(name).up, loras.layer(name).up)
        torch.testing.assert_close(loaded.layer(name).down, loras.layer(name).down)
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    state.pop(next(iter(state)))
    broken = tmp_path / "broken.safetensors"
    save_file(state, str(broken), metadata={"format": "atelier-slot-lora", "rank": "4", "alpha": "2", "labels": '["upper", "lower", "hat"]'})
    with pytest.raises(CheckpointError, match="missing"):
        load_slot_loras(broken, garment_unet)
    save_file(state, str(broken))
    with pytest.raises(CheckpointError, match="not a slot-LoRA file"):
        load_slot_loras(broken, garment_unet)
    with pytest.raises(ValueError, match="labels"):
        SlotLoRAs.for_unet(garment_unet, labels=("a.b",))


def test_community_lora_weight_zero_is_identity_and_restores(tiny_registry, tmp_path):
    unet, text_encoder = tiny_registry.get("unet"), tiny_registry.get("text_encoder")
    tokenizer, vae = tiny_registry.get("tokenizer"), tiny_registry.get("vae")
    path = write_tiny_kohya_lora(tmp_path / "style.safetensors", unet, text_encoder)
    plugins = LoraPlugins(unet, text_encoder, tokenizer, vae)
    processors = dict(unet.attn_processors)
    modules = {name: type(m) for name, m in unet.named_modules()}
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def forward():
        with torch.no_grad():
            context = encode_prompts(tokenizer, text_encoder, ["a red dress"])
            return context, unet(sample, 10, encoder_hidden_states=context).sample

    base_context, base = forward()
    with plugins.applied([LoraSpec(str(path), 0.0)]):
        context, out = forward()
    assert torch.equal(out, base) and torch.equal(context, base_context)
    with plugins.applied([LoraSpec(str(path), 0.8)]) as names:
        assert names == ["atelier_lora_0"]
        context, out = forward()
    assert not torch.allclose(out, base) and not torch.allclose(context, base_context)  # UNet and text encoder
    # everything is back: same processors, original Linear modules, same outputs
    assert all(processors[k] is v for k, v in unet.attn_processors.items())
    assert {name: type(m) for name, m in unet.named_modules()} == modules
    assert torch.equal(forward()[1], base)


def test_community_lora_errors(tiny_registry, tmp_path):
    unet = tiny_registry.get("unet")
    plugins = LoraPlugins(unet, tiny_registry.get("text_encoder"), tiny_registry.get("tokenizer"), tiny_registry.get("vae"))
    assert LoraSpec.parse("a/b.safetensors:0.5") == LoraSpec("a/b.safetensors", 0.5)
    assert LoraSpec.parse("C:/loras/b.safetensors") == LoraSpec("C:/loras/b.safetensors", 1.0)
    with pytest.raises(ValueError, match="LoRA file not found"):
        with plugins.applied([LoraSpec(str(tmp_path / "none.safetensors"))]):
            pass
    path = write_tiny_kohya_lora(tmp_path / "x.safetensors", unet)
    with pytest.raises(ValueError, match="weight=5.0"):
        with plugins.applied([LoraSpec(str(path), 5.0)]):
            pass
    # An SD-XL-sized LoRA does not fit the tiny SD1.5-shaped UNet: named, and the UNet is left clean.
    from safetensors.torch import save_file

    wide = tmp_path / "sdxl.safetensors"
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{key}.lora_down.weight": torch.ones(4, 640), f"{key}.lora_up.weight": torch.ones(640, 4), f"{key}.alpha": torch.tensor(4.0)}, str(wide))
    modules = {name: type(m) for name, m in unet.named_modules()}
    with pytest.raises(ValueError, match="sdxl.safetensors"):
        with plugins.applied([LoraSpec(str(wide), 1.0)]):
            pass
    assert {name: type(m) for name, m in unet.named_modules()} == modules


@pytest.mark.slow
def test_full_size_sd15_indexing():
    """The real SD1.5 UNet: 32 processors, the 16 attn1 at even indices, K'/V' widths 320/640/1280."""
    from diffusers import UNet2DConditionModel

    from pipelines.dressing.checkpoints import dressing_processors

    unet = UNet2DConditionModel(cross_attention_dim=768)  # the library defaults are SD1.5's geometry
    names = processor_names(unet)
    processors = dressing_processors(unet)
    assert len(names) == 32 and len(processors) == 16
    assert [i for i, n in enumerate(names) if n in processors] == list(range(0, 32, 2))
    widths = sorted({p.to_k_ref.weight.shape[0] for p in processors.values()})
    assert widths == [320, 640, 1280]
