"""TEMU-VTOFF weights: the two transformers of ``davidelobba/TEMU-VTOFF`` and the tiny set in the same layouts.

Official layout (a hub repo or a local folder)::

    transformer/        config.json + diffusion_pytorch_model.safetensors (or shards + .index.json)
                        the garment generator: diffusers SD3Transformer2DModel keys (in_channels 16), plus
                        ``downsampler_cnn.*`` of a training-only aligner (ignored, listed in the report)
    transformer_vton/   the feature extractor: the same SD3 layout with in_channels 33 and NO
                        ``attn.add_{q,k,v}_proj`` in its blocks (it never attends to text)

Both are built on the meta device from their config and filled with :func:`load_state_dict(assign=True)`
after a strict check of every key and shape (from the safetensors headers first, so a wrong file is refused
by name before gigabytes are read). The SD3 parts (VAE, three text encoders and tokenizers, scheduler) and
the two CLIP image encoders load from their own hub layouts.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from diffusers import SD3Transformer2DModel
from safetensors import safe_open
from safetensors.torch import save_file

from pipelines.core.checkpoints import LoadReport, read_state_dict, resolve_file, shape_problems
from pipelines.core.weightfiles import check_weights_file
from pipelines.types import CheckpointError, ModelUnavailableError

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = f"{WEIGHTS_NAME}.index.json"
GENERATOR, EXTRACTOR = "transformer", "transformer_vton"
IGNORED_PREFIXES = {GENERATOR: ("downsampler_cnn.",), EXTRACTOR: ()}
EXTRACTOR_IN_CHANNELS = 33  # person latent (16) + mask (1) + fine-masked person latent (16)


def strip_text_projections(model: SD3Transformer2DModel) -> SD3Transformer2DModel:
    """The extractor's blocks: attention without ``add_{q,k,v}_proj`` (image-only self-attention)."""
    for block in model.transformer_blocks:
        block.attn.add_q_proj = block.attn.add_k_proj = block.attn.add_v_proj = None
    return model


def build_on_meta(config: dict[str, Any], role: str) -> SD3Transformer2DModel:
    """The transformer of ``config`` without memory (parameters on the meta device until loaded)."""
    known = set(inspect.signature(SD3Transformer2DModel.__init__).parameters) - {"self"}
    unknown = sorted(k for k in config if not k.startswith("_") and k not in known)
    if unknown:
        raise CheckpointError(f"{role}/config.json: unknown field(s) {', '.join(unknown)} for SD3Transformer2DModel")
    kwargs = {k: v for k, v in config.items() if k in known}
    with torch.device("meta"):
        model = SD3Transformer2DModel(**kwargs)
    return strip_text_projections(model) if role == EXTRACTOR else model


def _files(location: str, role: str) -> tuple[dict[str, Any], list[Path]]:
    """(config, weight files) of ``role`` in ``location`` (a local folder or a hub id)."""
    config_path = resolve_file(location, "config.json", role)
    try:
        config = json.loads(Path(config_path).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{role}/config.json: not readable JSON ({error})") from error
    try:
        index = json.loads(Path(resolve_file(location, INDEX_NAME, role)).read_text())
        names = sorted(set(index["weight_map"].values()))
        files = [Path(resolve_file(location, name, role)) for name in names]
    except ModelUnavailableError:
        files = [Path(resolve_file(location, WEIGHTS_NAME, role))]
    return config, files


def _header_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        check_weights_file(path)
        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    shapes[key] = tuple(handle.get_slice(key).get_shape())
        except Exception as error:  # noqa: BLE001 - a damaged header raises several types
            raise CheckpointError(f"{path.name}: not a readable safetensors file ({error})") from error
    return shapes


def load_transformer(location: str, role: str, dtype: torch.dtype = torch.float32,
                     ) -> tuple[SD3Transformer2DModel, LoadReport]:
    """The generator (``role="transformer"``) or the extractor (``"transformer_vton"``) of TEMU-VTOFF.

    Strict: a missing, unexpected or mis-shaped tensor raises CheckpointError naming the file and the tensor.
    """
    if role not in IGNORED_PREFIXES:
        raise ValueError(f"role must be {GENERATOR!r} or {EXTRACTOR!r}, got {role!r}")
    config, files = _files(location, role)
    if role == EXTRACTOR and config.get("in_channels") != EXTRACTOR_IN_CHANNELS:
        raise CheckpointError(f"{role}/config.json: in_channels={config.get('in_channels')}, the extractor takes "
                              f"{EXTRACTOR_IN_CHANNELS} (person latent + mask + fine-masked person latent)")
    model = build_on_meta(config, role)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = _header_shapes(files)
    ignored = sorted(key for key in found if key.startswith(IGNORED_PREFIXES[role]))
    kept = {key: shape for key, shape in found.items() if key not in ignored}
    problems = shape_problems(expected, {key: SimpleNamespace(shape=shape) for key, shape in kept.items()})
    source = f"{role}/{files[0].name}" + (f" (+{len(files) - 1} shards)" if len(files) > 1 else "")
    if problems:
        raise CheckpointError(f"{source} does not fit the TEMU-VTOFF {role}: " + "; ".join(problems))
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update({key: value for key, value in read_state_dict(path).items() if key in kept})
    model.load_state_dict({key: value.to(dtype) for key, value in state.items()}, strict=True, assign=True)
    leftover = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if leftover:
        raise CheckpointError(f"{source}: {', '.join(leftover[:4])} were not filled by the file")
    model.requires_grad_(False).eval()
    report = LoadReport(source, loaded=sorted(state), ignored=ignored,
                        num_parameters=sum(value.numel() for value in state.values()))
    logger.info(report.summary())
    return model, report


# ------------------------------------------------------------------------------------------- tiny set
@dataclass(frozen=True)
class TinySD3:
    """Widths of the tiny SD3 family: every shape relation of the real one (pooled = CLIP-L + CLIP-G
    projections, prompt tokens = both CLIPs' hidden states padded to the T5 width, 16 latent channels)."""

    clip_hidden: int = 32
    clip_projection: int = 16  # x2 = pooled_projection_dim (text), and the image encoders' too
    t5_width: int = 64  # = joint_attention_dim >= 2 x clip_hidden
    heads: int = 4
    head_dim: int = 8
    layers: int = 2

    @property
    def pooled(self) -> int:
        return 2 * self.clip_projection


def tiny_transformer_config(size: TinySD3, in_channels: int) -> dict[str, Any]:
    return {"sample_size": 32, "patch_size": 2, "in_channels": in_channels, "num_layers": size.layers,
            "attention_head_dim": size.head_dim, "num_attention_heads": size.heads,
            "joint_attention_dim": size.t5_width, "caption_projection_dim": size.heads * size.head_dim,
            "pooled_projection_dim": size.pooled, "out_channels": 16, "pos_embed_max_size": 32}


def _tiny_t5_tokenizer():
    """A character-level T5 tokenizer built in memory (Unigram over single characters; no files, no network)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    from pipelines.core.tiny import _byte_chars

    vocab = ["<pad>", "</s>", "<unk>", "▁"] + [c for c in dict.fromkeys(_byte_chars() + [chr(c) for c in range(32, 127)])]
    tokenizer = Tokenizer(models.Unigram([(token, 0.0 if i < 3 else -1.0) for i, token in enumerate(vocab)], unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(pattern=Regex("."), behavior="isolated")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                           extra_ids=0, model_max_length=77)


def _write_transformer(folder: Path, config: dict[str, Any], role: str, seed: int) -> None:
    torch.manual_seed(seed)
    model = SD3Transformer2DModel(**config)
    if role == EXTRACTOR:
        strip_text_projections(model)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    if role == GENERATOR:  # the official file also carries the training-only aligner
        state["downsampler_cnn.0.weight"] = torch.randn(8, 16, 3, 3) * 0.02
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "SD3Transformer2DModel", **config}, indent=2))
    save_file(state, str(folder / WEIGHTS_NAME))


def write_tiny_temu(root: str | Path, size: TinySD3 = TinySD3()) -> Path:
    """Write ``sd3/`` (SD3-medium layout), ``temu/`` (TEMU-VTOFF layout) and ``clip_vision_l/``,
    ``clip_vision_bigg/`` (CLIPVisionModelWithProjection + processor) under ``root``; returns ``root/temu``."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        T5Config,
        T5EncoderModel,
    )

    from pipelines.core.tiny import IMAGE_SIZE, tiny_tokenizer

    root = Path(root)
    sd3 = root / "sd3"
    clip_tokenizer = tiny_tokenizer()
    for index, name in enumerate(("text_encoder", "text_encoder_2")):
        torch.manual_seed(20 + index)
        CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=len(clip_tokenizer), hidden_size=size.clip_hidden, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
            projection_dim=size.clip_projection)).save_pretrained(sd3 / name, safe_serialization=True)
        clip_tokenizer.save_pretrained(sd3 / ("tokenizer" if index == 0 else "tokenizer_2"))
    t5_tokenizer = _tiny_t5_tokenizer()
    torch.manual_seed(22)
    T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=size.t5_width, d_kv=16, d_ff=64, num_layers=1,
                            num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
                   ).save_pretrained(sd3 / "text_encoder_3", safe_serialization=True)
    t5_tokenizer.save_pretrained(sd3 / "tokenizer_3")
    torch.manual_seed(23)
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 16, 16, 16), layers_per_block=1,
                  norm_num_groups=8, latent_channels=16, sample_size=64, scaling_factor=1.5305, shift_factor=0.0609,
                  use_quant_conv=False, use_post_quant_conv=False).save_pretrained(sd3 / "vae", safe_serialization=True)
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(sd3 / "scheduler")
    temu = root / "temu"
    _write_transformer(temu / GENERATOR, tiny_transformer_config(size, 16), GENERATOR, seed=24)
    _write_transformer(temu / EXTRACTOR, tiny_transformer_config(size, EXTRACTOR_IN_CHANNELS), EXTRACTOR, seed=25)
    for index, name in enumerate(("clip_vision_l", "clip_vision_bigg")):
        torch.manual_seed(26 + index)
        CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, projection_dim=size.clip_projection, num_hidden_layers=2,
            num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=8)).save_pretrained(root / name,
                                                                                           safe_serialization=True)
        CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                           crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(root / name)
    return temu
