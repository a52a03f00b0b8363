"""The Flux diffusion transformer in ComfyUI's (Black Forest Labs') key layout.

``img_in``, ``txt_in``, ``time_in``, ``vector_in``, optional ``guidance_in`` (dev-style
models), ``double_blocks.N`` (separate image and text streams, joint attention),
``single_blocks.N`` (one fused stream) and ``final_layer``. Widths, head count, block counts
and input channels come from :class:`FluxConfig`, which :mod:`loom_flux.detect` reads off
the weights, so full-size, Fill (384 input channels), Canny/Depth (128) and tiny test models
share this code. Attention is ``scaled_dot_product_attention`` with rotary embeddings over
``(t, h, w)`` position ids. Layers come from :data:`loom.memory.ops`: weights stay in their
stored dtype (fp8 included) and are cast per layer to the compute dtype.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from loom.errors import LoomError
from loom.memory import ops
from loom.types import ControlResiduals

PATCH = 2

#: ComfyUI's ``reference_latents_method`` values (``"uxo/uno"`` in the node is ``"uxo"``).
REFERENCE_METHODS = ("offset", "index", "uxo", "index_timestep_zero")
DEFAULT_REFERENCE_METHOD = "offset"


def default_axes(head_dim: int) -> tuple[int, int, int]:
    """Rotary channels per (t, h, w) axis: Flux's (16, 56, 56) at head width 128, and the
    same proportions (rounded to even) for other widths."""
    side = (head_dim * 7 // 16) // 2 * 2
    return (head_dim - 2 * side, side, side)


@attrs.frozen
class FluxConfig:
    """What the weights say about a Flux DiT (defaults: Flux.1 dev at full size)."""

    in_channels: int = 64
    out_channels: int = 64
    hidden_size: int = 3072
    num_heads: int = 24
    context_dim: int = 4096
    vec_dim: int = 768
    mlp_ratio: float = 4.0
    depth: int = 19
    depth_single: int = 38
    guidance_embed: bool = True
    qkv_bias: bool = True
    theta: int = 10_000
    axes_dim: tuple[int, ...] = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )

    def __attrs_post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden size {self.hidden_size} is not a multiple of {self.num_heads} heads"
            )
        if self.axes_dim is None:
            object.__setattr__(self, "axes_dim", default_axes(self.head_dim))
        if sum(self.axes_dim) != self.head_dim:
            raise ValueError(
                f"rotary axes {self.axes_dim} do not sum to head width {self.head_dim}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def latent_channels(self) -> int:
        """Channels of the noisy latent (the rest of ``in_channels`` is concat conditioning)."""
        return self.out_channels // (PATCH * PATCH)


FLUX_DEV = FluxConfig()
FLUX_SCHNELL = FluxConfig(guidance_embed=False)


# --- embeddings ------------------------------------------------------------------------


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


def image_ids(batch: int, h_len: int, w_len: int, device: torch.device) -> torch.Tensor:
    """``[B, h*w, 3]`` ids: t = 0, row, column of each 2x2 patch."""
    ids = torch.zeros(h_len, w_len, 3, device=device)
    ids[..., 1] = torch.arange(h_len, device=device, dtype=torch.float32)[:, None]
    ids[..., 2] = torch.arange(w_len, device=device, dtype=torch.float32)[None, :]
    return ids.reshape(1, h_len * w_len, 3).expand(batch, -1, -1)


def patchify(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` (H, W even) -> ``[B, H/2 * W/2, C*4]``."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // PATCH, PATCH, w // PATCH, PATCH)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // PATCH) * (w // PATCH), c * PATCH * PATCH)


def unpatchify(x: torch.Tensor, h_len: int, w_len: int) -> torch.Tensor:
    b = x.shape[0]
    c = x.shape[-1] // (PATCH * PATCH)
    x = x.reshape(b, h_len, w_len, c, PATCH, PATCH)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, c, h_len * PATCH, w_len * PATCH)


class FluxTransformer(nn.Module):
    """``forward(x, timestep, context, y, guidance)``: latent ``[B, C, H, W]`` -> velocity.

    ``timestep`` is sigma (0..1); ``context`` the T5 tokens ``[B, T, 4096]``; ``y`` the CLIP-L
    pooled vector ``[B, 768]``; ``guidance`` (dev-style models) the distilled guidance scale.
    ``ref_latents`` (Kontext) are extra image tokens the image attends to, placed by
    ``ref_method``; only the image's own tokens come out.
    """

    def __init__(self, config: FluxConfig = FLUX_DEV) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.img_in = ops.Linear(config.in_channels, dim)
        self.time_in = MLPEmbedder(256, dim)
        self.vector_in = MLPEmbedder(config.vec_dim, dim)
        if config.guidance_embed:
            self.guidance_in = MLPEmbedder(256, dim)
        self.txt_in = ops.Linear(config.context_dim, dim)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(config) for _ in range(config.depth))
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(config) for _ in range(config.depth_single)
        )
        self.final_layer = LastLayer(dim, config.out_channels)

    def forward_tokens(
        self,
        img: torch.Tensor,
        img_ids: torch.Tensor,
        txt: torch.Tensor,
        txt_ids: torch.Tensor,
        timestep: torch.Tensor,
        y: torch.Tensor,
        guidance: torch.Tensor | None = None,
        zero_from: int | None = None,
        mask: torch.Tensor | None = None,
        control: ControlResiduals | None = None,
        txt_prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The transformer on packed tokens (diffusers' ``FluxTransformer2DModel`` shape).

        ``zero_from``: image tokens from this index on (references) are modulated with the
        vector of timestep 0 (:class:`SplitVec`); None: every token sees ``timestep``.
        ``mask``: an additive attention bias over text + image tokens.
        ``control``: ControlNet residuals, as ComfyUI adds them: ``input[i]`` to the image
        tokens after double block ``i``, ``output[i]`` to the image tokens after single
        block ``i`` (each to the first tokens it covers: reference tokens get none).
        ``txt_prefix``: DiT-width tokens put before the text tokens after ``txt_in``, with
        position ids of zero (ComfyUI's ``post_input`` patch: USO's style tokens).
        """
        img = self.img_in(img)
        vec = self._vec(timestep, y, guidance, img.dtype)
        img_vec: Vec = vec
        if zero_from is not None:
            zero = self._vec(timestep * 0, y, guidance, img.dtype)
            img_vec = SplitVec(vec, zero, zero_from, img.shape[1])
        txt = self.txt_in(txt.to(img.dtype))
        if txt_prefix is not None:
            txt = torch.cat((txt_prefix.to(txt), txt), dim=1)
            txt_ids = torch.cat((txt_ids.new_zeros(*txt_prefix.shape[:2], 3), txt_ids), dim=1)
        pe = position_embedding(
            torch.cat((txt_ids, img_ids), dim=1), self.config.axes_dim, self.config.theta
        )
        for i, block in enumerate(self.double_blocks):
            img, txt = block(img, txt, vec, pe, img_vec, mask)
            if control is not None:
                img = add_residual(img, control.input, i, 0)
        x = torch.cat((txt, img), dim=1)
        joint_vec = img_vec.shifted(txt.shape[1]) if isinstance(img_vec, SplitVec) else vec
        for i, block in enumerate(self.single_blocks):
            x = block(x, joint_vec, pe, mask)
            if control is not None:
                x = add_residual(x, control.output, i, txt.shape[1])
        return self.final_layer(x[:, txt.shape[1] :], vec)

    def _vec(
        self,
        timestep: torch.Tensor,
        y: torch.Tensor,
        guidance: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """The conditioning vector: timestep, guidance (dev-style) and pooled-text embeddings."""
        vec = self.time_in(timestep_embedding(timestep, 256).to(dtype))
        if self.config.guidance_embed and guidance is not None:
            vec = vec + self.guidance_in(timestep_embedding(guidance, 256).to(dtype))
        return vec + self.vector_in(y[:, : self.config.vec_dim].to(dtype))

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        y: torch.Tensor,
        guidance: torch.Tensor | None = None,
        ref_latents: list[torch.Tensor] | None = None,
        ref_method: str = DEFAULT_REFERENCE_METHOD,
        attention_mask: torch.Tensor | None = None,
        control: ControlResiduals | None = None,
        txt_prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``ref_method``: how reference latents are placed (:func:`reference_positions`);
        ``control``: ControlNet residuals, ``txt_prefix``: tokens before the text
        (:meth:`forward_tokens`)."""
        b, _, h, w = x.shape
        pad_h, pad_w = (-h) % PATCH, (-w) % PATCH
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
        h_len, w_len = (h + pad_h) // PATCH, (w + pad_w) // PATCH
        img = patchify(x)
        img_ids = image_ids(b, h_len, w_len, x.device)
        tokens = img.shape[1]
        refs = list(ref_latents or ())
        shapes = [tuple(ref.shape[-2:]) for ref in refs]
        for ref, place in zip(
            refs, reference_positions(ref_method, shapes, h_len, w_len), strict=True
        ):
            img, img_ids = _append_reference(img, img_ids, ref.to(x), place)
        zero_from = tokens if refs and ref_method == "index_timestep_zero" else None
        txt_ids = torch.zeros(b, context.shape[1], 3, device=x.device)
        if attention_mask is not None and attention_mask.shape[-1] != context.shape[1] + len(
            img_ids[0]
        ):
            raise LoomError(
                f"Flux: the conditioning's attention mask covers {attention_mask.shape[-1]} "
                f"tokens, but the model attends over {context.shape[1]} text and "
                f"{len(img_ids[0])} image tokens",
                hint="an attention mask (StyleModelApply attn_bias) cannot be combined with "
                "reference latents",
            )
        out = self.forward_tokens(
            img,
            img_ids,
            context,
            txt_ids,
            timestep,
            y,
            guidance,
            zero_from,
            attention_mask,
            control,
            txt_prefix,
        )
        return unpatchify(out[:, :tokens], h_len, w_len)[:, :, :h, :w]


@attrs.frozen
class ReferencePlace:
    """Where a reference latent's tokens go: time id ``index``, and its rows and columns
    shifted by ``h_offset`` / ``w_offset`` latent pixels (rounded to patches)."""

    index: int
    h_offset: int = 0
    w_offset: int = 0


def reference_positions(
    method: str, shapes: list[tuple[int, int]], h_len: int, w_len: int
) -> list[ReferencePlace]:
    """ComfyUI's placement of reference latents of ``shapes`` (latent ``(h, w)``) beside an
    image of ``h_len x w_len`` patches, for each ``reference_latents_method``:

    - ``offset`` (Kontext's default): all at time 1; each new one beside or below those
      already placed, along the side that keeps the placed block squarer;
    - ``index`` / ``index_timestep_zero``: the n-th at time n, unshifted;
    - ``uxo`` (UNO / USO): all at time 0, each shifted diagonally past the image and the
      references before it.

    An unknown method places as ``offset``, as ComfyUI does.
    """
    places = []
    placed_h = placed_w = index = 0
    for ref_h, ref_w in shapes:
        if method in ("index", "index_timestep_zero"):
            index += 1
            places.append(ReferencePlace(index))
        elif method == "uxo":
            places.append(ReferencePlace(0, h_len * PATCH + placed_h, w_len * PATCH + placed_w))
            placed_h += ref_h
            placed_w += ref_w
        else:
            h_offset = w_offset = 0
            if ref_h + placed_h > ref_w + placed_w:
                w_offset = placed_w
            else:
                h_offset = placed_h
            placed_h = max(placed_h, ref_h + h_offset)
            placed_w = max(placed_w, ref_w + w_offset)
            places.append(ReferencePlace(1, h_offset, w_offset))
    return places


def _append_reference(
    img: torch.Tensor, img_ids: torch.Tensor, ref: torch.Tensor, place: ReferencePlace
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kontext: a reference latent's tokens after the image's, at ``place``."""
    h, w = ref.shape[-2:]
    pad_h, pad_w = (-h) % PATCH, (-w) % PATCH
    if pad_h or pad_w:
        ref = F.pad(ref, (0, pad_w, 0, pad_h), mode="circular")
    ids = image_ids(img.shape[0], (h + pad_h) // PATCH, (w + pad_w) // PATCH, img.device).clone()
    ids[..., 0] = place.index
    ids[..., 1] += (place.h_offset + PATCH // 2) // PATCH
    ids[..., 2] += (place.w_offset + PATCH // 2) // PATCH
    tokens = patchify(ref).expand(img.shape[0], -1, -1)
    return torch.cat((img, tokens), dim=1), torch.cat((img_ids, ids), dim=1)
