"""The IP-Adapter-Plus Resampler (a Perceiver): CLIP patch features -> a few image tokens.

IMAGDressing-v1 feeds its garment UNet's cross-attention with 16 tokens made by this module from the
penultimate hidden states of the ViT-H image encoder. Parameter names follow the released checkpoint
(``proj.*`` there), so a state dict loads with ``load_state_dict(strict=True)``:

    latents                      (1, num_queries, dim)
    proj_in / proj_out / norm_out
    layers.N.0.{norm1,norm2,to_q,to_kv,to_out}   attention of the queries over [features; queries]
    layers.N.1.{0,1,3}                           LayerNorm, Linear(dim, dim*ff_mult), GELU, Linear back

The real configuration is dim 768, depth 4, 12 heads of 64, 16 queries, input 1280, output 768, ff_mult 4.
:meth:`ResamplerConfig.from_state_dict` recovers it from the tensors (the head count from the
IP-Adapter convention of 64-wide heads, which the shapes alone cannot tell).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

HEAD_WIDTH = 64  # every released IP-Adapter-Plus Resampler uses 64-wide heads


@dataclass(frozen=True)
class ResamplerConfig:
    dim: int = 768  # width of the query tokens inside the Perceiver
    depth: int = 4  # number of (attention, feed-forward) layer pairs
    heads: int = 12  # attention heads
    dim_head: int = 64  # width of one head (heads * dim_head = inner width of to_q)
    num_queries: int = 16  # output tokens
    embedding_dim: int = 1280  # CLIP hidden size of the input features
    output_dim: int = 768  # UNet cross_attention_dim
    ff_mult: int = 4  # feed-forward expansion

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> "ResamplerConfig":
        """Recover the configuration from Resampler tensors (keys without the ``proj.`` prefix)."""
        for key in ("latents", "proj_in.weight", "proj_out.weight", "layers.0.0.to_q.weight", "layers.0.1.1.weight"):
            if key not in state:
                raise KeyError(key)
        _, num_queries, dim = state["latents"].shape
        inner = state["layers.0.0.to_q.weight"].shape[0]
        depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k)))
        dim_head = HEAD_WIDTH if inner % HEAD_WIDTH == 0 else inner
        return cls(
            dim=dim,
            depth=depth,
            heads=inner // dim_head,
            dim_head=dim_head,
            num_queries=num_queries,
            embedding_dim=state["proj_in.weight"].shape[1],
            output_dim=state["proj_out.weight"].shape[0],
            ff_mult=state["layers.0.1.1.weight"].shape[0] // dim,
        )


class PerceiverAttention(nn.Module):
    """Queries attend over the concatenation of the image features and themselves."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)  # image features
        self.norm2 = nn.LayerNorm(dim)  # queries
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, features: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        features = self.norm1(features)  # (B, N_img, dim)
        queries = self.norm2(queries)  # (B, Q, dim)
        key, value = self.to_kv(torch.cat([features, queries], dim=1)).chunk(2, dim=-1)  # (B, N_img + Q, inner)
        query = self.to_q(queries)

        def heads(x: torch.Tensor) -> torch.Tensor:
            batch, tokens, width = x.shape
            return x.view(batch, tokens, self.heads, width // self.heads).transpose(1, 2)

        # The reference scales q and k by dim_head^-1/4 each: the same as SDPA's dim_head^-1/2.
        out = F.scaled_dot_product_attention(heads(query), heads(key), heads(value))  # (B, h, Q, d)
        out = out.transpose(1, 2).reshape(queries.shape[0], queries.shape[1], -1)
        return self.to_out(out)


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    inner = dim * mult
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(), nn.Linear(inner, dim, bias=False))


class Resampler(nn.Module):
    """(B, N_img, embedding_dim) CLIP hidden states -> (B, num_queries, output_dim) image tokens."""

    def __init__(self, config: ResamplerConfig = ResamplerConfig()) -> None:
        super().__init__()
        self.config = config
        c = config
        self.latents = nn.Parameter(torch.randn(1, c.num_queries, c.dim) / c.dim**0.5)
        self.proj_in = nn.Linear(c.embedding_dim, c.dim)
        self.proj_out = nn.Linear(c.dim, c.output_dim)
        self.norm_out = nn.LayerNorm(c.output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(c.dim, c.dim_head, c.heads), feed_forward(c.dim, c.ff_mult)])
            for _ in range(c.depth)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 3 or features.shape[-1] != self.config.embedding_dim:
            raise ValueError(
                f"Resampler expects (B, N, {self.config.embedding_dim}) features, got {tuple(features.shape)}"
            )
        queries = self.latents.expand(features.shape[0], -1, -1)  # (B, Q, dim)
        features = self.proj_in(features)  # (B, N_img, dim)
        for attention, ff in self.layers:
            queries = attention(features, queries) + queries
            queries = ff(queries) + queries
        return self.norm_out(self.proj_out(queries))  # (B, Q, output_dim)
