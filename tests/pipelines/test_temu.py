"""TEMU-VTOFF on the tiny SD3 family: official layouts load strictly, the extractor runs once per photo, its
keys/values steer the garment, and the caption does too."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from pipelines.temu.checkpoints import EXTRACTOR, GENERATOR, WEIGHTS_NAME, load_transformer
from pipelines.temu.pipeline import (
    ReferenceKV,
    TemuTryOffPipeline,
    choose_memory_mode,
    extract_reference,
    hybrid_processors,
)
from pipelines.types import CheckpointError, TemuTryOffRequest

H, W = 128, 96


def person_photo(shirt=(200, 30, 30), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(200, 240, (H, W, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((38, 8, 58, 30), fill=(230, 190, 160))  # head
    draw.rectangle((28, 32, 68, 80), fill=shirt)  # the shirt
    draw.rectangle((32, 80, 64, 124), fill=(40, 40, 90))  # trousers
    return image


def shirt_mask() -> Image.Image:
    mask = Image.new("L", (W, H), 0)
    ImageDraw.Draw(mask).rectangle((28, 32, 68, 80), fill=255)
    return mask


@pytest.fixture(scope="module")
def temu(tiny_registry):
    return TemuTryOffPipeline.from_registry(tiny_registry)


def request(**values) -> TemuTryOffRequest:
    return TemuTryOffRequest(**{"person": person_photo(), "mask": shirt_mask(), "height": H, "width": W,
                                "num_inference_steps": 3, "seed": 5, "background": "keep", **values})


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.float32)


def test_end_to_end_and_the_extractor_runs_once_across_seeds(temu):
    temu._cache.clear()  # the registry shares this pipeline: another test may have extracted this photo already
    before = temu.extractor_runs
    first = temu(request(seed=1))
    assert first.images[0].size == (W, H) and first.params["memory_mode"] == "resident"
    assert first.params["caption"].startswith("a t-shirt")  # the category's caption when none is written
    again = [temu(request(seed=seed)) for seed in (1, 2, 3)]
    assert temu.extractor_runs == before + 1  # one photo, four calls: the keys/values came from the cache
    assert np.array_equal(pixels(first), pixels(again[0]))  # same seed, same garment
    assert not np.array_equal(pixels(again[0]), pixels(again[1]))  # another seed, another garment
    temu(request(person=person_photo(shirt=(30, 160, 40))))
    assert temu.extractor_runs == before + 2  # another photo: extracted anew


def test_the_reference_and_the_caption_steer_the_garment(temu):
    base = pixels(temu(request()))
    other_person = pixels(temu(request(person=person_photo(shirt=(20, 20, 220), seed=3))))
    other_caption = pixels(temu(request(caption="a coat with long sleeves and a high collar")))
    # random tiny weights: small effects, but the person reaches the garment ONLY through the extractor's K/V
    # (same seed, same caption), and the caption only through the text stream
    assert np.abs(base - other_person).mean() > 0.01
    assert np.abs(base - other_caption).mean() > 0.01


def test_hybrid_attention_reads_the_reference_and_is_restored(temu):
    """Zeroing the extractor's keys/values changes the generator's prediction; the processors come back."""
    generator = temu.parts.generator
    before = {name: type(p) for name, p in generator.attn_processors.items()}
    torch.manual_seed(0)
    latents = torch.randn(2, 16, H // 8, W // 8)
    prompt, pooled = temu.encode_caption("a shirt", 1)
    reference = temu.reference(person_photo(), shirt_mask(), W, H)
    zero = ReferenceKV([torch.zeros_like(k) for k in reference.keys], [torch.zeros_like(v) for v in reference.values])
    outputs = []
    for kv in (reference, zero):
        from pipelines.core.attention import swapped_processors

        with swapped_processors(generator, hybrid_processors(generator, kv)):
            outputs.append(generator(hidden_states=latents, timestep=torch.tensor([500.0, 500.0]),
                                     encoder_hidden_states=prompt, pooled_projections=pooled).sample)
    assert (outputs[0] - outputs[1]).abs().mean() > 1e-4
    assert {name: type(p) for name, p in generator.attn_processors.items()} == before
    # the extractor's keys/values: one per block, (uncond, cond) x tokens x width, the two branches differ
    blocks = len(temu.parts.extractor.transformer_blocks)
    assert len(reference.keys) == blocks and reference.keys[0].shape == (2, (H // 16) * (W // 16), 32)
    assert not torch.equal(reference.keys[0][0], reference.keys[0][1])  # zeros vs the person's image embeds


def test_extractor_matches_a_plain_forward_of_its_blocks(temu):
    """Our extractor loop computes exactly the to_k/to_v a full forward of each block would see."""
    extractor = temu.parts.extractor
    torch.manual_seed(1)
    inputs, pooled = torch.randn(2, 33, H // 8, W // 8), torch.randn(2, 32)
    reference = extract_reference(extractor, inputs, pooled)
    seen = []
    hooks = [block.attn.to_k.register_forward_hook(lambda m, i, o: seen.append(o)) for block in extractor.transformer_blocks]
    try:
        hidden = extractor.pos_embed(inputs)
        temb = extractor.time_text_embed(torch.zeros(2), pooled)
        for block in extractor.transformer_blocks:
            normed, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.norm1(hidden, emb=temb)
            q, k, v = block.attn.to_q(normed), block.attn.to_k(normed), block.attn.to_v(normed)
            heads = block.attn.heads
            split = lambda x: x.view(2, -1, heads, x.shape[-1] // heads).transpose(1, 2)  # noqa: E731
            attended = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
            attended = block.attn.to_out[0](attended.transpose(1, 2).reshape(2, -1, q.shape[-1]))
            hidden = hidden + gate_msa.unsqueeze(1) * attended
            hidden = hidden + gate_mlp.unsqueeze(1) * block.ff(block.norm2(hidden) * (1 + scale_mlp[:, None])
                                                               + shift_mlp[:, None])
    finally:
        for hook in hooks:
            hook.remove()
    for ours, plain in zip(reference.keys, seen):
        assert torch.allclose(ours, plain, atol=1e-6)


def test_official_layout_loads_and_a_wrong_file_is_refused_by_tensor(tiny_models, tmp_path):
    temu_dir = tiny_models / "temu"
    generator, report = load_transformer(str(temu_dir), GENERATOR)
    assert report.ignored == ["downsampler_cnn.0.weight"] and generator.config.in_channels == 16
    extractor, _ = load_transformer(str(temu_dir), EXTRACTOR)
    assert extractor.transformer_blocks[0].attn.add_q_proj is None and extractor.config.in_channels == 33
    # a stock SD3 transformer given as the extractor: its text projections are named
    bad = tmp_path / "bad"
    (bad / EXTRACTOR).mkdir(parents=True)
    config = json.loads((temu_dir / EXTRACTOR / "config.json").read_text())
    (bad / EXTRACTOR / "config.json").write_text(json.dumps(config))
    state = load_file(str(temu_dir / GENERATOR / WEIGHTS_NAME))
    state = {k: v for k, v in state.items() if not k.startswith("downsampler")}
    state["pos_embed.proj.weight"] = torch.zeros(32, 33, 2, 2)
    save_file(state, str(bad / EXTRACTOR / WEIGHTS_NAME))
    with pytest.raises(CheckpointError, match=r"transformer_vton/diffusion_pytorch_model.safetensors does not fit .*"
                                              r"unexpected: transformer_blocks.0.attn.add_k_proj.bias"):
        load_transformer(str(bad), EXTRACTOR)
    # a mis-shaped tensor is named with both shapes
    state = load_file(str(temu_dir / EXTRACTOR / WEIGHTS_NAME))
    state["transformer_blocks.1.attn.to_k.weight"] = torch.zeros(16, 32)
    save_file(state, str(bad / EXTRACTOR / WEIGHTS_NAME))
    with pytest.raises(CheckpointError, match=r"mis-shaped: transformer_blocks.1.attn.to_k.weight \(file \(16, 32\), "
                                              r"model \(32, 32\)\)"):
        load_transformer(str(bad), EXTRACTOR)
    config["in_channels"] = 16
    (bad / EXTRACTOR / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="in_channels=16, the extractor takes 33"):
        load_transformer(str(bad), EXTRACTOR)


def test_memory_mode_follows_free_memory():
    gib = 2**30
    sizes = {"text_encoder_3": 9 * gib, "transformer": 4 * gib, "transformer_vton": 4 * gib, "vae": gib // 6}
    cuda = torch.device("cuda")
    assert choose_memory_mode("auto", cuda, sizes, free_bytes=40 * gib)[0] == "resident"
    assert choose_memory_mode("auto", cuda, sizes, free_bytes=20 * gib)[0] == "model_offload"
    assert choose_memory_mode("auto", cuda, sizes, free_bytes=8 * gib)[0] == "sequential_offload"
    assert choose_memory_mode("auto", torch.device("cpu"), sizes)[0] == "resident"
    assert choose_memory_mode("model_offload", cuda, sizes, free_bytes=80 * gib) == ("model_offload", "chosen")
    with pytest.raises(ValueError, match="memory_mode='fast' must be one of"):
        choose_memory_mode("fast", cuda, sizes)


def test_model_offload_keeps_one_model_on_the_device_at_a_time(temu):
    temu.placement.log.clear()
    result = temu(request(memory_mode="model_offload", seed=9))
    try:
        assert result.params["memory_mode"] == "model_offload"
        on, most = set(), 0
        for name, what in temu.placement.log:
            on = on | {name} if what == "in" else on - {name}
            most = max(most, len({n for n in on if n in ("text_encoder_3", GENERATOR, EXTRACTOR)}))
        assert most == 1 and not on  # the big models one at a time, everything back on the CPU after
        assert (GENERATOR, "in") in temu.placement.log
        same = temu(request(memory_mode="resident", seed=9))
        assert np.allclose(pixels(result), pixels(same), atol=1)  # the same garment either way
    finally:
        temu.placement.set_mode("resident")


def test_bad_inputs(temu):
    with pytest.raises(ValueError, match="person: upload a photo"):
        temu(request(person=None))
    with pytest.raises(ValueError, match="category='shoes' must be one of upper, lower, dress"):
        temu(request(category="shoes"))
    with pytest.raises(ValueError, match="height=120 must be a multiple of 16"):
        temu(request(height=120))


def test_command_line_like_the_methods_inference_script(models_dir, tiny_models, tmp_path, capsys):
    from pipelines.preprocess.images import read_png_params
    from pipelines.temu.cli import main

    photo = tmp_path / "example1.jpg"
    person_photo().save(photo)
    shirt_mask().save(tmp_path / "mask.png")
    out = tmp_path / "out"
    code = main(["--example_image", str(photo), "--mask", str(tmp_path / "mask.png"), "--category", "upper_body",
                 "--pretrained_model_name_or_path", str(tiny_models / "sd3"),
                 "--pretrained_model_name_or_path_sd3_tryoff", str(tiny_models / "temu"),
                 "--preset", "tiny", "--models_dir", str(models_dir), "--output_dir", str(out),
                 "--width", "96", "--height", "128", "--guidance_scale", "2.0", "--num_inference_steps", "2",
                 "--seed", "7", "--num_images", "2"])
    assert code == 0
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == ["example1_7_0.png", "example1_8_1.png"]
    params = read_png_params(written[0])
    assert params["task"] == "tryoff_temu" and params["num_inference_steps"] == 2 and params["category"] == "upper"
    assert "extractor runs: 1 for 1 photo(s)" in capsys.readouterr().err
    # a wrong-layout folder given as the TEMU weights: one line naming what is wrong
    code = main(["--example_image", str(photo), "--preset", "tiny", "--models_dir", str(models_dir),
                 "--pretrained_model_name_or_path_sd3_tryoff", str(tmp_path), "--output_dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "transformer" in err and "does not exist" in err, err
