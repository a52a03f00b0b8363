"""The parts a union ControlNet (xinsir's ControlNet++ / "promax") adds to a ControlNet.

One network serves several control types. The chosen type is embedded like a timestep
(one-hot over the types, each value given a 256-wide sinusoidal embedding) and added to the
time embedding; with a type chosen, the encoded hint's spatial mean plus the type's learned
embedding goes through one transformer block, and its projection is added to the encoded hint
(ComfyUI's ``union_controlnet_merge``, one hint image). "auto" (no type) uses the plain hint
path with the all-zero one-hot embedding.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from loom_sd15.unet import timestep_embedding
from torch import nn

from loom.memory import ops

#: width of each type's sinusoidal embedding, and heads of the transformer block
TYPE_EMBED_DIM = 256
HEADS = 8


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused ``in_proj`` (q, k, v) and ``out_proj``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj = ops.Linear(width, width * 3)
        self.out_proj = ops.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, width = x.shape
        q, k, v = (
            t.view(b, n, self.heads, -1).transpose(1, 2) for t in self.in_proj(x).split(width, -1)
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, width))


class UnionBlock(nn.Module):
    """Pre-norm transformer block (CLIP's residual attention block)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.ln_1 = ops.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", ops.Linear(width, width * 4)),
                    ("gelu", QuickGELU()),
                    ("c_proj", ops.Linear(width * 4, width)),
                ]
            )
        )
        self.ln_2 = ops.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ControlTypeEmbedding(nn.Module):
    """One-hot control type -> sinusoidal embeddings -> two linear layers (SiLU between)."""

    def __init__(self, types: int, out_dim: int) -> None:
        super().__init__()
        self.types = types
        self.linear_1 = ops.Linear(TYPE_EMBED_DIM * types, out_dim)
        self.linear_2 = ops.Linear(out_dim, out_dim)

    def forward(
        self, control_type: list[int], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        one_hot = torch.zeros(self.types, device=device)
        one_hot[control_type] = 1.0
        embedded = timestep_embedding(one_hot, TYPE_EMBED_DIM).to(dtype).reshape(1, -1)
        return self.linear_2(F.silu(self.linear_1(embedded)))


def union_hint(
    encoded: torch.Tensor,
    control_type: int,
    task_embedding: torch.Tensor,
    transformer: nn.Module,
    projection: nn.Module,
) -> torch.Tensor:
    """The encoded hint plus the transformer's projection of (its mean + the type's embedding)."""
    tokens = encoded.mean(dim=(2, 3)) + task_embedding[control_type].to(encoded.dtype)
    mixed = transformer(tokens.unsqueeze(1))
    return encoded + projection(mixed[:, 0])[:, :, None, None]
