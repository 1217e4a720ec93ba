"""The GAM / colour adapter / LEM loaders against files in the official layouts (tiny shapes)."""

from __future__ import annotations

import pickle

import pytest
import torch
from diffusers import UNet2DConditionModel

from pipelines.core.attention import attn1_modules, processor_names
from pipelines.core.checkpoints import flatten
from pipelines.types import CheckpointError
from pipelines.garment.checkpoints import (
    load_color_adapter,
    load_gam,
    load_lem,
    write_tiny_color_checkpoint,
    write_tiny_gam_checkpoint,
    write_tiny_lem_checkpoint,
)
from pipelines.core.tiny import IMAGE_EMBED_DIM, tiny_unet


@pytest.fixture
def unet():
    return tiny_unet(4)


def gam_file(tmp_path):
    return write_tiny_gam_checkpoint(tmp_path)


def test_gam_loads_and_reports_everything(tmp_path, unet):
    path = gam_file(tmp_path)
    ref_unet = UNet2DConditionModel.from_config(unet.config)
    processors, report = load_gam(path, ref_unet, unet)
    attn1 = [n for n in processor_names(unet) if ".attn1." in n]
    assert sorted(processors) == sorted(attn1)
    assert len([k for k in report.loaded if k.startswith("adapter_modules.")]) == 2 * len(attn1)
    assert len([k for k in report.loaded if k.startswith("ref_unet.")]) == len(ref_unet.state_dict())
    assert report.ignored and all(k.startswith("unet.") for k in report.ignored)
    stored = torch.load(path, weights_only=True)["module"]
    first_index = processor_names(unet).index(attn1[0])
    assert torch.equal(processors[attn1[0]].to_k_ref.weight, stored[f"adapter_modules.{first_index}.to_k_ref.weight"].float())
    assert torch.equal(ref_unet.conv_in.weight, stored["ref_unet.conv_in.weight"].float())


def test_gam_with_a_mis_shaped_tensor_names_it(tmp_path, unet):
    path = gam_file(tmp_path)
    data = torch.load(path, weights_only=True)
    data["module"]["adapter_modules.0.to_k_ref.weight"] = torch.zeros(3, 3, dtype=torch.float16)
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"adapter_modules.*0\.to_k_ref\.weight \(file \(3, 3\)"):
        load_gam(path, UNet2DConditionModel.from_config(unet.config), unet)


def test_gam_with_a_missing_ref_unet_tensor_names_it(tmp_path, unet):
    path = gam_file(tmp_path)
    data = torch.load(path, weights_only=True)
    del data["module"]["ref_unet.conv_in.weight"]
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="missing: conv_in.weight"):
        load_gam(path, UNet2DConditionModel.from_config(unet.config), unet)


def test_corrupt_file_is_a_clear_error(tmp_path, unet):
    path = tmp_path / "mp_rank_00_model_states.pt"
    path.write_bytes(b"\x80\x04not really a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="mp_rank_00_model_states.pt: the file is damaged or not a checkpoint"):
        load_gam(path, UNet2DConditionModel.from_config(unet.config), unet)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_never_executed(tmp_path, unet):
    path = tmp_path / "evil.bin"
    with open(path, "wb") as handle:
        pickle.dump({"module": Evil()}, handle)
    with pytest.raises(CheckpointError, match=r"evil.bin: refused: the file holds Python objects \(builtins.print\)"):
        load_gam(path, UNet2DConditionModel.from_config(unet.config), unet)


@pytest.mark.parametrize(
    "key, name", [("color_adapter", "color.bin"), ("ip_adapter", "old.bin"), ("color_adapter", "color.safetensors")]
)
def test_color_adapter_layouts_all_load_the_same_weights(tmp_path, unet, key, name):
    reference = write_tiny_color_checkpoint(tmp_path / "ref")
    path = write_tiny_color_checkpoint(tmp_path, adapter_key=key, name=name)
    projection, processors, report = load_color_adapter(path, unet, IMAGE_EMBED_DIM)
    ref_projection, ref_processors, _ = load_color_adapter(reference, unet, IMAGE_EMBED_DIM)
    assert torch.equal(projection.proj.weight, ref_projection.proj.weight)
    name0 = next(iter(processors))
    assert torch.equal(processors[name0].to_v_ip.weight, ref_processors[name0].to_v_ip.weight)
    attn2 = [n for n in processor_names(unet) if ".attn2." in n]
    assert len(report.loaded) == 4 + 2 * len(attn2)


def test_color_adapter_mis_shaped_names_key(tmp_path, unet):
    path = write_tiny_color_checkpoint(tmp_path)
    data = torch.load(path, weights_only=True)
    data["image_proj"]["proj.weight"] = torch.zeros(5, 5)
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"proj.weight \(file \(5, 5\)"):
        load_color_adapter(path, unet, IMAGE_EMBED_DIM)


def test_color_adapter_wrong_file_is_named(tmp_path, unet):
    path = gam_file(tmp_path)
    with pytest.raises(CheckpointError, match="expected 'image_proj' and 'color_adapter'"):
        load_color_adapter(path, unet, IMAGE_EMBED_DIM)


def test_lem_unet_and_attn_block_layouts_agree(tmp_path):
    inpaint = tiny_unet(9, seed=1)
    path = write_tiny_lem_checkpoint(tmp_path)
    by_name = load_lem(path, inpaint)
    data = torch.load(path, weights_only=True)
    blocks_only = {f"module.{k}": v for k, v in data.items() if k.startswith("attn_block.")}
    other = tmp_path / "lem_blocks.bin"
    torch.save(blocks_only, other)
    by_index = load_lem(other, inpaint)
    assert by_name.tensors.keys() == by_index.tensors.keys()
    assert all(torch.equal(by_name.tensors[k], by_index.tensors[k]) for k in by_name.tensors)
    assert len(by_name.tensors) == 5 * len(attn1_modules(inpaint))
    assert by_name.report.ignored  # the untrained rest of unet.* is reported, not silently dropped


def test_lem_wrong_attn_block_count_is_named(tmp_path):
    inpaint = tiny_unet(9, seed=1)
    data = torch.load(write_tiny_lem_checkpoint(tmp_path), weights_only=True)
    blocks = {k: v for k, v in data.items() if k.startswith("attn_block.") and not k.startswith("attn_block.0.")}
    path = tmp_path / "lem_missing.bin"
    torch.save(blocks, path)
    with pytest.raises(CheckpointError, match=r"4 attn1 layers\): missing 0\.to_k\.weight"):
        load_lem(path, inpaint)


def test_flatten_nested_dicts():
    flat = flatten({"a": {"b": torch.zeros(1), "c": {"d": torch.ones(1)}}})
    assert sorted(flat) == ["a.b", "a.c.d"]
