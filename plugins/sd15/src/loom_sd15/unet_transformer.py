"""The UNet's spatial transformer: SDPA attention, the transformer block and its GEGLU
feed-forward, in CompVis' module layout (``transformer_blocks``, ``attn1`` / ``attn2``, ``ff``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from loom.memory import ops
from loom_sd15.unet_hooks import (
    AttentionInputPatch,
    AttentionSite,
    BlockAttention,
    SelfAttentionReplacement,
)

if TYPE_CHECKING:
    from loom_sd15.unet import UNetConfig
    from loom_sd15.unet_patching import SelfAttentionPatch


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention of ``[B, N, heads*d]`` tensors through SDPA."""
    b, n, inner = q.shape
    d = inner // heads
    q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, n, inner)


class CrossAttention(nn.Module):
    def __init__(self, dim: int, context_dim: int | None, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        context_dim = context_dim or dim
        self.heads = heads
        self.to_q = ops.Linear(dim, inner, bias=False)
        self.to_k = ops.Linear(context_dim, inner, bias=False)
        self.to_v = ops.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(ops.Linear(inner, dim), nn.Dropout(0.0))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        replacement: SelfAttentionReplacement | None = None,
        site: AttentionSite | None = None,
        input_patches: Sequence[AttentionInputPatch] = (),
    ) -> torch.Tensor:
        context = x if context is None else context
        value = context
        for patch in input_patches:
            x, context, value = patch(x, context, value)
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(value)
        if replacement is None or site is None:
            out = attention(q, k, v, self.heads)
        else:
            out = replacement(q, k, v, self.heads, site)
        return self.to_out(out)


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = ops.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(0.0), ops.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int) -> None:
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, head_dim)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, head_dim)
        self.norm1 = ops.LayerNorm(dim)
        self.norm2 = ops.LayerNorm(dim)
        self.norm3 = ops.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        after_self_attention: Callable[[torch.Tensor], torch.Tensor] | None = None,
        attention: BlockAttention | None = None,
        site: AttentionSite | None = None,
    ) -> torch.Tensor:
        x = self.self_attention(self.norm1(x), attention, site) + x
        if after_self_attention is not None:
            x = after_self_attention(x)
        cross = () if attention is None else attention.input_patches.cross_attention
        x = self.attn2(self.norm2(x), context, input_patches=cross) + x
        return self.ff(self.norm3(x)) + x

    def self_attention(
        self, tokens: torch.Tensor, attention: BlockAttention | None, site: AttentionSite | None
    ) -> torch.Tensor:
        """``attn1`` on the normed tokens, through the block's token patches and replacement."""
        if attention is None or site is None:
            return self.attn1(tokens)
        query, context = tokens, tokens
        restores = []
        for patch in attention.token_patches:
            rewrite = patch(query, context, site)
            query, context = rewrite.query, rewrite.context
            restores.append(rewrite.restore)
        replacement = attention.replacement(site.block_index)
        out = self.attn1(query, context, replacement, site, attention.input_patches.self_attention)
        for restore in restores:
            out = restore(out)
        return out


class SpatialTransformer(nn.Module):
    """Norm, project in, ``depth`` transformer blocks over the ``H*W`` tokens, project out."""

    #: position among the UNet's spatial transformers (set by :class:`UNetModel`)
    transformer_index: int = 0

    def __init__(self, channels: int, config: UNetConfig) -> None:
        super().__init__()
        heads, head_dim = config.heads_for(channels)
        inner = heads * head_dim
        self.linear = config.use_linear_in_transformer
        self.norm = ops.GroupNorm(config.norm_groups, channels, eps=1e-6)
        if self.linear:
            self.proj_in = ops.Linear(channels, inner)
            self.proj_out = ops.Linear(inner, channels)
        else:
            self.proj_in = ops.Conv2d(channels, inner, 1)
            self.proj_out = ops.Conv2d(inner, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, head_dim, config.context_dim)
            for _ in range(config.transformer_depth)
        )

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        patch: SelfAttentionPatch | None = None,
        attention: BlockAttention | None = None,
    ) -> torch.Tensor:
        b, _, h, w = x.shape
        index = self.transformer_index
        after = None if patch is None else (lambda tokens: patch(tokens, index))
        residual = x
        x = self.norm(x)
        if not self.linear:
            x = self.proj_in(x)
        x = x.flatten(2).transpose(1, 2)
        if self.linear:
            x = self.proj_in(x)
        for block_index, block in enumerate(self.transformer_blocks):
            site = None
            if attention is not None:
                heads = block.attn1.heads
                site = AttentionSite(attention.site, block_index, index, heads)
            x = block(x, context, after, attention, site)
        if self.linear:
            x = self.proj_out(x)
        # contiguous: the transposed view is channels-last strided, and a channels-last input
        # makes every following convolution re-layout its weights (a copy per call).
        x = x.transpose(1, 2).reshape(b, -1, h, w).contiguous()
        if not self.linear:
            x = self.proj_out(x)
        return x + residual
