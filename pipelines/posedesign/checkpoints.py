"""EquiFashion's ControlLDM checkpoint -> diffusers modules, and a tiny checkpoint in the same layout.

Official layout: ONE PyTorch-Lightning file (``eqf_final.ckpt`` / ``EqF_100epochs.ckpt`` on
``NguyenDinhHieu/EquiFashionModel``) holding the whole ControlLDM of the original ``cldm`` code::

    {"state_dict": {
        "control_model.*"           ControlNet: time_embed, input_blocks, zero_convs, input_hint_block,
                                    middle_block, middle_block_out
        "model.diffusion_model.*"   the SD2.1-base UNet: time_embed, input_blocks, middle_block, output_blocks, out
        "first_stage_model.*"       the KL autoencoder: encoder.down.i.block.j, decoder.up.i..., quant_conv ...
        "cond_stage_model.model.*"  OpenCLIP ViT-H/14 text tower: token_embedding, positional_embedding,
                                    transformer.resblocks.k (in_proj_weight = q|k|v), ln_final, text_projection
        + DDPM buffers (betas, alphas_cumprod, ...) and possibly training-only modules: ignored, reported
    }, "epoch": ..., "global_step": ...}

:func:`load_controlldm` reads it once (``torch.load(weights_only=True)``, or safetensors), keeps the four
prefixes, builds the diffusers configs from the ORIGINAL config (``cldm_v2.yaml`` beside this file: SD2.1-base,
EPS prediction, 512 px; diffusers' own type inference would take SD2.1-768 v-prediction, which is wrong here),
renames keys with diffusers' single-file converters, and loads each module strictly: a missing or mis-shaped
tensor raises :class:`CheckpointError` naming the file, the original key and the diffusers key. The text
encoder keeps the layers up to the penultimate one (the config's ``layer: penultimate``), as the method reads it.

:func:`write_tiny_controlldm` writes tiny random modules in that same original layout (our own
diffusers -> cldm renaming), so the loader is exercised on the official layout offline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from pipelines.core.checkpoints import LoadReport, read_state_dict, unwrap
from pipelines.types import CheckpointError

logger = logging.getLogger(__name__)

ORIGINAL_CONFIG = Path(__file__).resolve().parent / "cldm_v2.yaml"
PREFIXES = {
    "controlnet": "control_model.",
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text_encoder": "cond_stage_model.model.",
}
OPENCLIP_HEAD_WIDTH = 64  # every OpenCLIP text tower (ViT-H/14: width 1024, 16 heads)
TINY_CKPT = "eqf_tiny.ckpt"


# ---------------------------------------------------------------------------------------------- configs
def read_original_config(path: str | Path | None = None) -> dict:
    path = Path(path) if path else ORIGINAL_CONFIG
    try:
        config = yaml.safe_load(path.read_text())
        params = config["model"]["params"]
        for key in ("control_stage_config", "unet_config", "first_stage_config", "cond_stage_config"):
            params[key]["params"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path.name}: not a ControlLDM original config ({type(error).__name__}: {error})") from error
    if params.get("parameterization", "eps") != "eps":
        raise CheckpointError(f"{path.name}: parameterization {params['parameterization']!r}; this pipeline samples EPS")
    return config


def _block_types(unet: Mapping) -> tuple[list[str], list[str]]:
    """Down/up block types: cross-attention at the levels whose downsampling factor is in attention_resolutions."""
    levels = len(unet["channel_mult"])
    factors = [2**level for level in range(levels)]
    down = ["CrossAttnDownBlock2D" if f in unet["attention_resolutions"] else "DownBlock2D" for f in factors]
    up = ["CrossAttnUpBlock2D" if f in unet["attention_resolutions"] else "UpBlock2D" for f in reversed(factors)]
    return down, up


def unet_config(original: dict) -> dict[str, Any]:
    """diffusers UNet2DConditionModel kwargs of the original ``unet_config``."""
    params = original["model"]["params"]
    unet = params["unet_config"]["params"]
    channels = [unet["model_channels"] * mult for mult in unet["channel_mult"]]
    down, up = _block_types(unet)
    heads = unet.get("num_heads", -1)
    head_count = [c // unet["num_head_channels"] for c in channels] if heads in (-1, None) else heads
    return {
        "sample_size": params.get("image_size", 64), "in_channels": unet["in_channels"],
        "out_channels": unet.get("out_channels", unet["in_channels"]), "down_block_types": down, "up_block_types": up,
        "block_out_channels": channels, "layers_per_block": unet["num_res_blocks"],
        "cross_attention_dim": unet["context_dim"], "attention_head_dim": head_count,  # diffusers: heads per level
        "use_linear_projection": bool(unet.get("use_linear_in_transformer", False)),
        "transformer_layers_per_block": unet.get("transformer_depth", 1), "norm_num_groups": 32,
    }


def controlnet_config(original: dict) -> dict[str, Any]:
    base = unet_config(original)
    control = original["model"]["params"]["control_stage_config"]["params"]
    keep = ("in_channels", "down_block_types", "block_out_channels", "layers_per_block", "cross_attention_dim",
            "attention_head_dim", "use_linear_projection", "transformer_layers_per_block", "norm_num_groups")
    return {**{key: base[key] for key in keep}, "conditioning_channels": control["hint_channels"]}


def vae_config(original: dict) -> dict[str, Any]:
    params = original["model"]["params"]
    dd = params["first_stage_config"]["params"]["ddconfig"]
    channels = [dd["ch"] * mult for mult in dd["ch_mult"]]
    return {
        "in_channels": dd["in_channels"], "out_channels": dd["out_ch"], "latent_channels": dd["z_channels"],
        "block_out_channels": channels, "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(channels), "layers_per_block": dd["num_res_blocks"],
        "sample_size": dd.get("resolution", 256), "scaling_factor": params.get("scale_factor", 0.18215),
        "norm_num_groups": 32,
    }


def text_config(original: dict, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """CLIPTextConfig kwargs read from the OpenCLIP tensors (their shapes ARE the architecture)."""
    prefix = "transformer.resblocks."
    layers = len({key[len(prefix):].split(".")[0] for key in state if key.startswith(prefix)})
    if not layers or "token_embedding.weight" not in state or "positional_embedding" not in state:
        raise CheckpointError("cond_stage_model.model: no OpenCLIP text tower (token_embedding, positional_embedding, "
                              "transformer.resblocks.*) in the checkpoint")
    layer = original["model"]["params"]["cond_stage_config"]["params"].get("layer", "last")
    vocab, width = state["token_embedding.weight"].shape
    # OpenCLIP's vocabulary: <start_of_text> 49406, <end_of_text> 49407, pad 0; a smaller (tiny) one: 0, 1, 1
    bos, eos, pad = (49406, 49407, 0) if vocab >= 49408 else (0, 1, 1)
    return {
        "vocab_size": int(vocab), "hidden_size": int(width),
        "intermediate_size": int(state[f"{prefix}0.mlp.c_fc.weight"].shape[0]),
        "num_hidden_layers": layers - (1 if layer == "penultimate" else 0),
        "num_attention_heads": max(1, int(width) // OPENCLIP_HEAD_WIDTH),
        "max_position_embeddings": int(state["positional_embedding"].shape[0]), "hidden_act": "gelu",
        "layer_norm_eps": 1e-5, "projection_dim": int(state["text_projection"].shape[1]) if "text_projection" in state
        else int(width), "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad,
    }


# ---------------------------------------------------------------------------------------------- loading
@dataclass
class ControlLDM:
    """The four diffusers modules of one ControlLDM checkpoint, plus what was loaded and ignored."""

    unet: Any
    controlnet: Any
    vae: Any
    text_encoder: Any
    report: LoadReport


def _converted(component: str, part: dict[str, torch.Tensor], config: dict, text_model=None) -> dict:
    """diffusers keys for one component's original keys (diffusers' single-file renaming)."""
    from diffusers.loaders import single_file_utils as sf

    if component == "unet":
        return sf.convert_ldm_unet_checkpoint({PREFIXES["unet"] + k: v for k, v in part.items()}, config)
    if component == "controlnet":
        return sf.convert_controlnet_checkpoint({PREFIXES["controlnet"] + k: v for k, v in part.items()}, config)
    if component == "vae":
        return sf.convert_ldm_vae_checkpoint({PREFIXES["vae"] + k: v for k, v in part.items()}, config)
    return sf.convert_open_clip_checkpoint(text_model, {PREFIXES["text_encoder"] + k: v for k, v in part.items()})


def _load(module: torch.nn.Module, converted: dict, origin: dict[int, str], source: str, component: str,
          dtype: torch.dtype) -> list[str]:
    """Strict, named load of ``converted`` (diffusers keys) into ``module`` (parameters on meta until assigned)."""
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    state = {key: value for key, value in converted.items() if isinstance(value, torch.Tensor)}

    def name(key: str) -> str:
        original = origin.get(state[key].data_ptr()) if key in state else None
        return f"{original} (diffusers {component} {key})" if original else f"{component} {key}"

    mis_shaped = [f"{name(key)}: file {tuple(state[key].shape)}, model {expected[key]}"
                  for key in sorted(set(expected) & set(state)) if tuple(state[key].shape) != expected[key]]
    missing = sorted(set(expected) - set(state))
    problems = []
    if mis_shaped:
        problems.append("mis-shaped " + "; ".join(mis_shaped[:4]) + (f" ({len(mis_shaped)} in all)" if len(mis_shaped) > 4 else ""))
    if missing:
        problems.append(f"missing {', '.join(missing[:4])} ({len(missing)} in all)")
    if problems:
        raise CheckpointError(f"{source} does not fit the ControlLDM {component} of its config: " + "; ".join(problems))
    unexpected = sorted(set(state) - set(expected))
    module.load_state_dict({key: state[key].to(dtype) for key in expected}, strict=True, assign=True)
    module.requires_grad_(False).eval()
    return unexpected


def load_controlldm(path: str | Path, original_config: str | Path | None = None,
                    dtype: torch.dtype = torch.float32) -> ControlLDM:
    """UNet, ControlNet, VAE and text encoder of a ControlLDM checkpoint (see the module docstring)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    original = read_original_config(original_config)
    state = unwrap(read_state_dict(path), "state_dict")
    if not any(isinstance(value, torch.Tensor) and key.startswith(PREFIXES["unet"]) for key, value in state.items()):
        raise CheckpointError(f"{path.name}: no 'model.diffusion_model.*' tensors; not a ControlLDM checkpoint "
                              "(expected the Lightning file of the cldm code, weights under 'state_dict')")
    parts = {component: {key[len(prefix):]: value for key, value in state.items()
                         if key.startswith(prefix) and isinstance(value, torch.Tensor)}
             for component, prefix in PREFIXES.items()}
    report = LoadReport(path.name)
    report.ignored = sorted(key for key in state if not any(key.startswith(p) for p in PREFIXES.values()))
    configs = {"unet": unet_config(original), "controlnet": controlnet_config(original), "vae": vae_config(original)}
    text = text_config(original, parts["text_encoder"])
    if text["num_hidden_layers"] < len({k.split(".")[2] for k in parts["text_encoder"] if k.startswith("transformer.resblocks.")}):
        last = f"transformer.resblocks.{text['num_hidden_layers']}."
        report.ignored += sorted(PREFIXES["text_encoder"] + k for k in parts["text_encoder"] if k.startswith(last))
        parts["text_encoder"] = {k: v for k, v in parts["text_encoder"].items() if not k.startswith(last)}
    with init_empty_weights(include_buffers=False):
        modules = {
            "unet": UNet2DConditionModel(**configs["unet"]),
            "controlnet": ControlNetModel(**configs["controlnet"]),
            "vae": AutoencoderKL(**configs["vae"]),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**text)),
        }
    for component, module in modules.items():
        part = parts[component]
        origin = {value.data_ptr(): PREFIXES[component] + key for key, value in part.items()}
        converted = _converted(component, part, configs.get(component, {}), modules["text_encoder"])
        if component == "text_encoder":  # transformers 5 names CLIPTextModel's tensors without "text_model."
            own = set(module.state_dict())
            converted = {(key.removeprefix("text_model.") if key.removeprefix("text_model.") in own else key): value
                         for key, value in converted.items()}
        unexpected = _load(module, converted, origin, path.name, component, dtype)
        used = {value.data_ptr() for value in converted.values() if isinstance(value, torch.Tensor)}
        report.ignored += [PREFIXES[component] + key for key, value in part.items()  # in_proj: split into copies
                           if value.data_ptr() not in used and not key.endswith(("in_proj_weight", "in_proj_bias"))]
        report.ignored += [f"{component}:{key}" for key in unexpected]
        report.loaded += [f"{component}.{key}" for key in module.state_dict()]
        report.num_parameters += sum(p.numel() for p in module.parameters())
    logger.info(report.summary())
    return ControlLDM(modules["unet"], modules["controlnet"], modules["vae"], modules["text_encoder"], report)


# ------------------------------------------------------------------------- diffusers -> original (tiny)
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
           "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_resnet(rest: str, table: Mapping[str, str]) -> str:
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}"


def unet_to_original(state: Mapping[str, torch.Tensor], layers_per_block: int, up_attention: list[bool],
                     controlnet: bool = False) -> dict[str, torch.Tensor]:
    """A diffusers UNet2DConditionModel / ControlNetModel state dict in the original ``openaimodel`` key layout."""
    per_level = layers_per_block + 1  # input and output blocks per level (the down/upsampler rides in the last)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "conv_in":
            new = "input_blocks.0.0." + parts[1]
        elif parts[0] == "time_embedding":
            new = {"linear_1": "time_embed.0", "linear_2": "time_embed.2"}[parts[1]] + "." + parts[2]
        elif parts[0] == "down_blocks":
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"input_blocks.{1 + i * per_level + j}.0.{_rename_resnet(rest, _RESNET)}"
            elif kind == "attentions":
                new = f"input_blocks.{1 + i * per_level + j}.1.{rest}"
            else:  # downsamplers.0.conv.*
                new = f"input_blocks.{(i + 1) * per_level}.0.op.{parts[-1]}"
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = (f"middle_block.{2 * j}.{_rename_resnet(rest, _RESNET)}" if kind == "resnets"
                   else f"middle_block.1.{rest}")
        elif parts[0] == "up_blocks":
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"output_blocks.{i * per_level + j}.0.{_rename_resnet(rest, _RESNET)}"
            elif kind == "attentions":
                new = f"output_blocks.{i * per_level + j}.1.{rest}"
            else:  # upsamplers.0.conv.*
                new = f"output_blocks.{i * per_level + layers_per_block}.{2 if up_attention[i] else 1}.conv.{parts[-1]}"
        elif parts[0] == "conv_norm_out":
            new = "out.0." + parts[1]
        elif parts[0] == "conv_out":
            new = "out.2." + parts[1]
        elif controlnet and parts[0] == "controlnet_down_blocks":
            new = f"zero_convs.{parts[1]}.0.{parts[2]}"
        elif controlnet and parts[0] == "controlnet_mid_block":
            new = f"middle_block_out.0.{parts[1]}"
        elif controlnet and parts[0] == "controlnet_cond_embedding":
            if parts[1] == "conv_in":
                new = f"input_hint_block.0.{parts[2]}"
            elif parts[1] == "conv_out":
                new = f"input_hint_block.14.{parts[2]}"
            else:
                new = f"input_hint_block.{2 * (int(parts[2]) + 1)}.{parts[3]}"
        else:
            raise KeyError(f"no original name for {key}")
        out[new] = value
    return out


def vae_to_original(state: Mapping[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL state dict in the original ``first_stage_model`` layout (1x1 conv attention)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        side = parts[0]
        if side in ("quant_conv", "post_quant_conv"):
            out[key] = value
            continue
        name, rest = parts[1], parts[2:]
        if name in ("conv_in", "conv_out"):
            new = f"{side}.{name}.{rest[0]}"
        elif name == "conv_norm_out":
            new = f"{side}.norm_out.{rest[0]}"
        elif name == "mid_block":
            kind, j, tail = rest[0], int(rest[1]), ".".join(rest[2:])
            if kind == "resnets":
                new = f"{side}.mid.block_{j + 1}.{_rename_resnet(tail, {'conv_shortcut': 'nin_shortcut'})}"
            else:
                head = next(h for h in _VAE_ATTENTION if tail.startswith(h + "."))
                new = f"{side}.mid.attn_1.{_VAE_ATTENTION[head]}{tail[len(head):]}"
                if value.ndim == 2:
                    value = value[:, :, None, None]
        elif name in ("down_blocks", "up_blocks"):
            i, kind = int(rest[0]), rest[1]
            level, block = (i, "down") if name == "down_blocks" else (levels - 1 - i, "up")
            if kind == "resnets":
                tail = _rename_resnet(".".join(rest[3:]), {"conv_shortcut": "nin_shortcut"})
                new = f"{side}.{block}.{level}.block.{rest[2]}.{tail}"
            else:
                new = f"{side}.{block}.{level}.{'downsample' if block == 'down' else 'upsample'}.conv.{rest[-1]}"
        else:
            raise KeyError(f"no original name for {key}")
        out[new] = value
    return out


def text_to_original(text_model, extra_layer: Mapping[str, torch.Tensor], projection: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """A CLIPTextModel (+ the unused last OpenCLIP block) in the OpenCLIP ``cond_stage_model.model`` layout."""
    state = {key.removeprefix("text_model."): value for key, value in text_model.state_dict().items()}
    out = {"token_embedding.weight": state["embeddings.token_embedding.weight"],
           "positional_embedding": state["embeddings.position_embedding.weight"],
           "ln_final.weight": state["final_layer_norm.weight"],
           "ln_final.bias": state["final_layer_norm.bias"],
           "text_projection": projection, "logit_scale": torch.tensor(4.6052)}
    layers = text_model.config.num_hidden_layers
    for index in range(layers + 1):
        block = f"transformer.resblocks.{index}."
        if index == layers:
            out.update({block + key: value for key, value in extra_layer.items()})
            continue
        src = f"encoder.layers.{index}."
        attn = src + "self_attn."
        out[block + "attn.in_proj_weight"] = torch.cat([state[attn + f"{p}_proj.weight"] for p in "qkv"])
        out[block + "attn.in_proj_bias"] = torch.cat([state[attn + f"{p}_proj.bias"] for p in "qkv"])
        for ours, theirs in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                             ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
            for kind in ("weight", "bias"):
                out[block + f"{theirs}.{kind}"] = state[src + f"{ours}.{kind}"]
    return out


def tiny_original_config() -> dict:
    """``cldm_v2.yaml`` at tiny widths (GroupNorm 32 everywhere, as the original code): 2 UNet levels of 32/64
    channels, head width 32, context 64; a 4-level VAE of 32 channels (downsamples by 8)."""
    config = read_original_config()
    params = config["model"]["params"]
    for key in ("control_stage_config", "unet_config"):
        params[key]["params"].update(model_channels=32, channel_mult=[1, 2], attention_resolutions=[1],
                                     num_res_blocks=1, num_head_channels=32, context_dim=64)
    params["image_size"] = 8
    params["first_stage_config"]["params"]["ddconfig"].update(ch=32, ch_mult=[1, 1, 1, 1], num_res_blocks=1,
                                                              resolution=64)
    return config


def tiny_modules(original: dict, vocab_size: int) -> dict[str, Any]:
    """Seeded random diffusers modules of ``original`` (the tiny config): unet, controlnet, vae, text_encoder,
    plus the OpenCLIP parts CLIPTextModel has no place for (the last block, read past; the projection)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(40)
    modules: dict[str, Any] = {"unet": UNet2DConditionModel(**unet_config(original))}
    torch.manual_seed(41)
    modules["controlnet"] = ControlNetModel(**controlnet_config(original))
    with torch.no_grad():  # trained: the zero convolutions are no longer zero, the hint encoder passes the pose on
        for name, parameter in modules["controlnet"].named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block")):
                parameter.normal_(0.0, 0.2)
            elif name.startswith("controlnet_cond_embedding") and parameter.ndim == 4:
                parameter.normal_(0.0, (2.0 / parameter[0].numel()) ** 0.5)  # He init keeps the lines' contrast
    torch.manual_seed(42)
    modules["vae"] = AutoencoderKL(**vae_config(original))
    torch.manual_seed(43)
    width, inner = 64, 128
    modules["text_encoder"] = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=inner, num_hidden_layers=2, num_attention_heads=1,
        max_position_embeddings=77, hidden_act="gelu", bos_token_id=0, eos_token_id=1, pad_token_id=1))
    modules["last_block"] = {
        "ln_1.weight": torch.ones(width), "ln_1.bias": torch.zeros(width),
        "attn.in_proj_weight": torch.randn(3 * width, width) * 0.02, "attn.in_proj_bias": torch.zeros(3 * width),
        "attn.out_proj.weight": torch.randn(width, width) * 0.02, "attn.out_proj.bias": torch.zeros(width),
        "ln_2.weight": torch.ones(width), "ln_2.bias": torch.zeros(width),
        "mlp.c_fc.weight": torch.randn(inner, width) * 0.02, "mlp.c_fc.bias": torch.zeros(inner),
        "mlp.c_proj.weight": torch.randn(width, inner) * 0.02, "mlp.c_proj.bias": torch.zeros(width)}
    modules["text_projection"] = torch.randn(width, 32) * 0.02
    return {name: module.eval() if isinstance(module, torch.nn.Module) else module for name, module in modules.items()}


def controlldm_state(modules: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The diffusers modules of :func:`tiny_modules` as ONE state dict in the original ControlLDM layout."""
    unet, vae = modules["unet"], modules["vae"]
    up_attention = [kind.startswith("CrossAttn") for kind in unet.config.up_block_types]
    lpb = unet.config.layers_per_block
    state: dict[str, torch.Tensor] = {}
    for prefix, part in (
        (PREFIXES["unet"], unet_to_original(unet.state_dict(), lpb, up_attention)),
        (PREFIXES["controlnet"], unet_to_original(modules["controlnet"].state_dict(), lpb, up_attention, controlnet=True)),
        (PREFIXES["vae"], vae_to_original(vae.state_dict(), len(vae.config.block_out_channels))),
        (PREFIXES["text_encoder"], text_to_original(modules["text_encoder"], modules["last_block"],
                                                    modules["text_projection"])),
    ):
        state.update({prefix + key: value.clone().contiguous() for key, value in part.items()})
    return state


def write_tiny_controlldm(root: str | Path) -> Path:
    """``root/checkpoints/equifashion/``: ``eqf_tiny.ckpt`` (Lightning ControlLDM layout), ``cldm_tiny.yaml`` (its
    original config) and ``tokenizer/`` (the SD2 tokenizer's role). Returns the checkpoint path."""
    from pipelines.core.tiny import tiny_tokenizer

    folder = Path(root) / "checkpoints" / "equifashion"
    folder.mkdir(parents=True, exist_ok=True)
    original = tiny_original_config()
    (folder / "cldm_tiny.yaml").write_text(yaml.safe_dump(original, sort_keys=False))
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(folder / "tokenizer")
    state = controlldm_state(tiny_modules(original, len(tokenizer)))
    # what the Lightning file also holds: the DDPM schedule buffers and a training-only module
    state["alphas_cumprod"] = torch.linspace(0.999, 0.01, 1000)
    state["betas"] = torch.linspace(0.00085, 0.012, 1000)
    state["semantic_bundle.proj.weight"] = torch.randn(4, 4)
    path = folder / TINY_CKPT
    torch.save({"state_dict": state, "epoch": 100, "global_step": 1234}, path)
    return path
