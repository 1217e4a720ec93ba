"""Attention processors shared by the garment, dressing and concat-inpainting pipelines.

They are small swappable objects installed on a UNet for the duration of one call with
:func:`swapped_processors`, which always restores the UNet's previous processors (the base UNet is
shared between tabs). All attention runs through ``F.scaled_dot_product_attention`` (SDPA).

Processors that own trained weights (``to_k_ref``/``to_v_ref``, ``to_k_ip``/``to_v_ip``) are
``nn.Module``s; the pipelines keep them outside the UNet between calls so a shared UNet stays clean.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C // heads)."""
    batch, tokens, channels = x.shape
    return x.view(batch, tokens, heads, channels // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, D) -> (B, N, heads * D)."""
    batch, heads, tokens, dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * dim)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head SDPA on (B, N, C) projections; returns (B, Nq, C)."""
    out = F.scaled_dot_product_attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads))
    return merge_heads(out)


def project_out(attn, hidden_states: torch.Tensor) -> torch.Tensor:
    hidden_states = attn.to_out[0](hidden_states)
    return attn.to_out[1](hidden_states)


def _check_3d(hidden_states: torch.Tensor) -> None:
    if hidden_states.ndim != 3:
        raise ValueError(f"attention processors expect (B, N, C) hidden states, got shape {tuple(hidden_states.shape)}")


class SkipAttnProcessor:
    """Returns its input: with the block residual the transformer block computes ``h + norm(h)`` there.

    This is what the IMAGGarment reference UNet, the LEM, CatVTON and TryOffAnyone do to every cross
    attention; it is NOT a true skip, and reproducing it exactly is what makes their weights fit.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        return hidden_states


class PlainAttnProcessor:
    """Ordinary (self- or cross-) attention through SDPA."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        _check_3d(hidden_states)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        out = sdpa(attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context), attn.heads)
        return project_out(attn, out)


class ReferenceRecorder:
    """Self-attention that also records its input hidden states (B, HW, C) under its processor name.

    Installed on every ``attn1`` of a reference UNet (the GAM "silhouette" UNet, the dressing garment
    UNet): the denoising UNet's mixed attention later reads the recorded states by the same name.
    """

    def __init__(self, name: str, store: dict[str, torch.Tensor]) -> None:
        self.name = name
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        _check_3d(hidden_states)
        self.store[self.name] = hidden_states.detach()
        out = sdpa(attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states), attn.heads)
        return project_out(attn, out)


@dataclass
class ReferenceState:
    """Per-call state read by every :class:`MixedAttnProcessor` of a UNet.

    ``features[name]``: (R, N_ref, C) reference hidden states for the layer ``name`` (R = 1 broadcasts
    to all rows). ``rows``: which batch rows get the reference (the conditional half of a batched CFG
    call); None = all rows. ``scale``: alpha (sketch scale) / lambda (garment strength).
    """

    features: dict[str, torch.Tensor] = field(default_factory=dict)
    scale: float = 1.0
    rows: slice | None = None
    enabled: bool = True
    cache_kv: bool = True  # False only for benchmarks (measures what the cache saves)
    # K/V of the reference are constant across denoising steps: computed once per call and cached here.
    kv_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


class MixedAttnProcessor(nn.Module):
    """``SDPA(Q, K, V) + scale * SDPA(Q, to_k_ref(ref), to_v_ref(ref))`` then the frozen ``to_out``.

    The IMAGGarment GAM mixed attention and the IMAGDressing/AnyDressing Dressing-Attention (with the
    reference = the concatenation of all garments' tokens at this layer). Two separate softmaxes whose
    outputs are ADDED. ``to_k_ref``/``to_v_ref`` are Linear(hidden, hidden, bias=False).
    """

    def __init__(self, name: str, hidden_size: int, state: ReferenceState | None = None) -> None:
        super().__init__()
        self.name = name
        self.to_k_ref = nn.Linear(hidden_size, hidden_size, bias=False)
        self.to_v_ref = nn.Linear(hidden_size, hidden_size, bias=False)
        self.state = state or ReferenceState()

    @torch.no_grad()
    def init_from(self, attn) -> None:
        """Initialise (for training) as copies of the layer's frozen ``to_k``/``to_v``."""
        self.to_k_ref.weight.copy_(attn.to_k.weight)
        self.to_v_ref.weight.copy_(attn.to_v.weight)

    def reference_kv(self, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self.state.kv_cache.get(self.name)
        if cached is not None and self.state.cache_kv and not torch.is_grad_enabled():
            return cached
        kv = (self.to_k_ref(reference), self.to_v_ref(reference))
        if self.state.cache_kv and not torch.is_grad_enabled():
            self.state.kv_cache[self.name] = kv
        return kv

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        _check_3d(hidden_states)
        query = attn.to_q(hidden_states)
        out = sdpa(query, attn.to_k(hidden_states), attn.to_v(hidden_states), attn.heads)  # (B, HW, C)
        state = self.state
        reference = state.features.get(self.name) if state.enabled else None
        if reference is not None and state.scale != 0:
            rows = state.rows if state.rows is not None else slice(0, out.shape[0])
            query_rows = query[rows]  # (b, HW, C)
            key_ref, value_ref = self.reference_kv(reference.to(query.dtype))  # (R, N_ref, C)
            if key_ref.shape[0] != query_rows.shape[0]:
                if key_ref.shape[0] != 1:
                    raise ValueError(
                        f"{self.name}: reference batch {key_ref.shape[0]} does not match {query_rows.shape[0]} rows"
                    )
                key_ref = key_ref.expand(query_rows.shape[0], -1, -1)
                value_ref = value_ref.expand(query_rows.shape[0], -1, -1)
            extra = sdpa(query_rows, key_ref, value_ref, attn.heads)
            out = out.clone()
            out[rows] = out[rows] + state.scale * extra
        return project_out(attn, out)


@dataclass
class ImageTokenState:
    """Per-call state of the colour adapter: number of image tokens appended after the text, and scale."""

    num_tokens: int = 4
    scale: float = 1.0
    enabled: bool = True


class ImageTokenAttnProcessor(nn.Module):
    """Decoupled cross-attention (IP-Adapter layout) used by the IMAGGarment colour adapter.

    ``encoder_hidden_states`` = (B, 77 + T, D): text tokens then T image tokens.
    ``out = SDPA(Q, K_text, V_text) + scale * SDPA(Q, to_k_ip(c), to_v_ip(c))``.
    """

    def __init__(self, name: str, hidden_size: int, token_dim: int, state: ImageTokenState | None = None) -> None:
        super().__init__()
        self.name = name
        self.to_k_ip = nn.Linear(token_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(token_dim, hidden_size, bias=False)
        self.state = state or ImageTokenState()

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        _check_3d(hidden_states)
        if encoder_hidden_states is None:
            raise ValueError(f"{self.name}: cross-attention needs encoder_hidden_states")
        state = self.state
        query = attn.to_q(hidden_states)
        if state.enabled:
            text, tokens = encoder_hidden_states[:, : -state.num_tokens], encoder_hidden_states[:, -state.num_tokens :]
        else:
            text, tokens = encoder_hidden_states, None
        out = sdpa(query, attn.to_k(text), attn.to_v(text), attn.heads)
        if tokens is not None and state.scale != 0:
            out = out + state.scale * sdpa(query, self.to_k_ip(tokens), self.to_v_ip(tokens), attn.heads)
        return project_out(attn, out)


def processor_names(unet) -> list[str]:
    """Processor names in ``unet.attn_processors`` order (the index the official checkpoints use)."""
    return list(unet.attn_processors.keys())


def hidden_size_of(unet, processor_name: str) -> int:
    """The channel width of the attention layer a processor belongs to."""
    module = unet.get_submodule(processor_name.rsplit(".processor", 1)[0])
    return module.to_q.out_features


def attn1_modules(unet) -> list[tuple[str, nn.Module]]:
    """Every self-attention module in ``named_modules`` order (down, up, mid in diffusers' UNet)."""
    return [(name, module) for name, module in unet.named_modules() if name.endswith("attn1")]


@contextlib.contextmanager
def swapped_processors(unet, processors: Mapping[str, object]) -> Iterator[None]:
    """Install ``processors`` (by name; others untouched) for the block and always restore the originals."""
    original = dict(unet.attn_processors)
    unknown = sorted(set(processors) - set(original))
    if unknown:
        raise KeyError(f"unknown attention processor name(s): {', '.join(unknown[:4])}")
    merged = dict(original)
    merged.update(processors)
    unet.set_attn_processor(merged)
    try:
        yield
    finally:
        unet.set_attn_processor(original)
