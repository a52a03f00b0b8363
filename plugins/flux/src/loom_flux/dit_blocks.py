"""The layers of the Flux DiT: embeddings, rotary attention and the double / single blocks.

Layers come from :data:`loom.memory.ops`: weights stay in their stored dtype (fp8 included)
and are cast per layer to the compute dtype. Attention is ``scaled_dot_product_attention``
with rotary embeddings over ``(t, h, w)`` position ids.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from loom.memory import ops
from loom_flux.dit_config import FluxConfig


def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10_000) -> torch.Tensor:
    """Sinusoidal embedding ``[cos, sin]`` of ``1000 t`` (Flux feeds sigma in 0..1)."""
    t = 1000.0 * t
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope(pos: torch.Tensor, dim: int, theta: int) -> torch.Tensor:
    """Rotation matrices ``[..., n, dim/2, 2, 2]`` for positions ``pos`` ``[..., n]``.

    Computed in float64 as the reference does; on devices without float64 (MPS) on the CPU.
    """
    device = pos.device
    if device.type == "mps":
        pos = pos.cpu()
    scale = torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim
    omega = 1.0 / (theta**scale)
    out = pos.to(torch.float64)[..., None] * omega
    out = torch.stack([torch.cos(out), -torch.sin(out), torch.sin(out), torch.cos(out)], dim=-1)
    return out.reshape(*out.shape[:-1], 2, 2).float().to(device)


def position_embedding(ids: torch.Tensor, axes_dim: tuple[int, ...], theta: int) -> torch.Tensor:
    """``[B, 1, L, head_dim/2, 2, 2]`` rotary table for ids ``[B, L, axes]``."""
    return torch.cat(
        [rope(ids[..., i], axes_dim[i], theta) for i in range(len(axes_dim))], dim=-3
    ).unsqueeze(1)


def apply_rope(x: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    x_ = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    out = pe[..., 0] * x_[..., 0] + pe[..., 1] * x_[..., 1]
    return out.reshape(*x.shape).type_as(x)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pe: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Joint attention with rotary ids: ``[B, H, L, D]`` in, ``[B, L, H*D]`` out.

    ``mask`` is an additive bias ``[B, L, L]`` over the joint sequence (text first), as
    ComfyUI's ``attention_mask`` (``StyleModelApply``'s ``attn_bias``)."""
    q, k = apply_rope(q, pe), apply_rope(k, pe)
    bias = None if mask is None else mask[:, None].to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


class MLPEmbedder(nn.Module):
    """``out_layer(silu(in_layer(x)))``: the time, guidance and pooled-vector embedders."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.in_layer = ops.Linear(in_dim, hidden)
        self.out_layer = ops.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    """RMS norm with a learned ``scale`` (computed in float32, as the reference does)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)
        return (normed * self.scale.to(x.device, torch.float32)).to(x.dtype)


class QKNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.query_norm(q).to(v), self.key_norm(k).to(v)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = ops.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm = QKNorm(dim // heads)
        self.proj = ops.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised ``q, k`` and ``v``, each ``[B, H, L, D]``, of the modulated input."""
        b, length, _ = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = self.norm(q, k, v)
        return q, k, v


@attrs.frozen
class SplitVec:
    """Two conditioning vectors over one token sequence: ``main`` for tokens before
    ``split``, ``zero`` (the timestep-0 vector) for the ``length - split`` after them.

    ComfyUI's ``index_timestep_zero`` reference method: reference tokens are modulated as if
    clean (timestep 0) while the image's own tokens see the sampling timestep.
    """

    main: torch.Tensor
    zero: torch.Tensor
    split: int
    length: int

    def shifted(self, tokens: int) -> SplitVec:
        """The same split with ``tokens`` more ``main`` tokens in front (the text's)."""
        return SplitVec(self.main, self.zero, self.split + tokens, self.length + tokens)


Vec = torch.Tensor | SplitVec


class Modulation(nn.Module):
    """``lin(silu(vec))`` split into ``(shift, scale, gate)`` once or twice; per token
    (``[B, L, D]``) for a :class:`SplitVec`, else broadcast (``[B, 1, D]``)."""

    def __init__(self, dim: int, double: bool) -> None:
        super().__init__()
        self.multiplier = 6 if double else 3
        self.lin = ops.Linear(dim, self.multiplier * dim)

    def forward(self, vec: Vec) -> list[torch.Tensor]:
        if isinstance(vec, SplitVec):
            main, zero = self.forward(vec.main), self.forward(vec.zero)
            rest = vec.length - vec.split
            return [
                torch.cat((a.expand(-1, vec.split, -1), b.expand(-1, rest, -1)), dim=1)
                for a, b in zip(main, zero, strict=True)
            ]
        return self.lin(F.silu(vec))[:, None, :].chunk(self.multiplier, dim=-1)


def _layer_norm(dim: int) -> nn.Module:
    return nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        ops.Linear(dim, hidden), nn.GELU(approximate="tanh"), ops.Linear(hidden, dim)
    )


class DoubleStreamBlock(nn.Module):
    """Image and text streams with their own weights, attending jointly (text first)."""

    def __init__(self, config: FluxConfig) -> None:
        super().__init__()
        dim, hidden = config.hidden_size, config.mlp_hidden
        for stream in ("img", "txt"):
            setattr(self, f"{stream}_mod", Modulation(dim, double=True))
            setattr(self, f"{stream}_norm1", _layer_norm(dim))
            setattr(self, f"{stream}_attn", SelfAttention(dim, config.num_heads, config.qkv_bias))
            setattr(self, f"{stream}_norm2", _layer_norm(dim))
            setattr(self, f"{stream}_mlp", _mlp(dim, hidden))

    def forward(
        self,
        img: torch.Tensor,
        txt: torch.Tensor,
        vec: torch.Tensor,
        pe: torch.Tensor,
        img_vec: Vec | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``img_vec``: the image stream's own vector when it differs (a :class:`SplitVec`)."""
        img_mod = self.img_mod(vec if img_vec is None else img_vec)
        txt_mod = self.txt_mod(vec)
        img_q, img_k, img_v = self.img_attn.split_heads(
            (1 + img_mod[1]) * self.img_norm1(img) + img_mod[0]
        )
        txt_q, txt_k, txt_v = self.txt_attn.split_heads(
            (1 + txt_mod[1]) * self.txt_norm1(txt) + txt_mod[0]
        )
        attn = attention(
            torch.cat((txt_q, img_q), dim=2),
            torch.cat((txt_k, img_k), dim=2),
            torch.cat((txt_v, img_v), dim=2),
            pe,
            mask,
        )
        txt_attn, img_attn = attn[:, : txt.shape[1]], attn[:, txt.shape[1] :]
        img = img + img_mod[2] * self.img_attn.proj(img_attn)
        img = img + img_mod[5] * self.img_mlp((1 + img_mod[4]) * self.img_norm2(img) + img_mod[3])
        txt = txt + txt_mod[2] * self.txt_attn.proj(txt_attn)
        txt = txt + txt_mod[5] * self.txt_mlp((1 + txt_mod[4]) * self.txt_norm2(txt) + txt_mod[3])
        return img, txt


class SingleStreamBlock(nn.Module):
    """One stream: fused qkv + MLP input (``linear1``), fused output (``linear2``)."""

    def __init__(self, config: FluxConfig) -> None:
        super().__init__()
        dim = config.hidden_size
        self.heads = config.num_heads
        self.mlp_hidden = config.mlp_hidden
        self.linear1 = ops.Linear(dim, dim * 3 + self.mlp_hidden)
        self.linear2 = ops.Linear(dim + self.mlp_hidden, dim)
        self.norm = QKNorm(config.head_dim)
        self.pre_norm = _layer_norm(dim)
        self.modulation = Modulation(dim, double=False)

    def forward(
        self,
        x: torch.Tensor,
        vec: Vec,
        pe: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        shift, scale, gate = self.modulation(vec)
        hidden = (1 + scale) * self.pre_norm(x) + shift
        qkv, mlp = torch.split(self.linear1(hidden), [3 * x.shape[-1], self.mlp_hidden], dim=-1)
        b, length, _ = x.shape
        q, k, v = qkv.view(b, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = self.norm(q, k, v)
        attn = attention(q, k, v, pe, mask)
        out = self.linear2(torch.cat((attn, F.gelu(mlp, approximate="tanh")), dim=2))
        return x + gate * out


class LastLayer(nn.Module):
    def __init__(self, dim: int, out_features: int) -> None:
        super().__init__()
        self.norm_final = _layer_norm(dim)
        self.linear = ops.Linear(dim, out_features)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=1)
        x = (1 + scale[:, None, :]) * self.norm_final(x) + shift[:, None, :]
        return self.linear(x)


def add_residual(
    tokens: torch.Tensor, residuals: tuple[Any, ...], index: int, start: int
) -> torch.Tensor:
    """``tokens`` plus ``residuals[index]`` on the tokens from ``start`` on that it covers
    (unchanged when the list is shorter or the entry is None)."""
    if index >= len(residuals) or residuals[index] is None:
        return tokens
    add = residuals[index].to(tokens)
    end = start + add.shape[1]
    return torch.cat((tokens[:, :start], tokens[:, start:end] + add, tokens[:, end:]), dim=1)
