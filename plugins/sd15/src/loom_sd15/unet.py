"""The latent-diffusion UNet in the original checkpoint layout (``model.diffusion_model.*``).

Module names follow CompVis' ``openaimodel.py`` (``input_blocks``, ``middle_block``,
``output_blocks``, ``time_embed``, ``out``; ``ResBlock`` with ``in_layers`` / ``emb_layers`` /
``out_layers``; ``SpatialTransformer`` with ``transformer_blocks``), so a checkpoint's state
dict loads with no renaming. Widths, depth, heads and context size come from
:class:`UNetConfig`: the same code builds full-size SD1.5 (:data:`SD15_UNET`), SD2.x and the
tiny models the tests use. Layers are built from :data:`loom.memory.ops`, so weights keep
their stored dtype and are cast to the compute dtype on the fly; attention goes through
``torch.nn.functional.scaled_dot_product_attention``.

One hook reaches inside the transformer blocks: a :class:`SelfAttentionPatch` given to
:meth:`UNetModel.forward` runs on each block's tokens right after its self-attention
(ComfyUI's ``middle_patch``; GLIGEN's gated layers use it, :mod:`loom_sd15.gligen`).
Another sits between the decoder and its skip connections: the :class:`OutputBlockPatch`
functions given to :meth:`UNetModel.forward` rewrite both before each output block joins them
(ComfyUI's ``output_block_patch``; FreeU uses it, :mod:`loom_sd15.freeu`; SDXL's UNet too).
A :class:`SelfAttentionReplacement` chosen per block (``("middle", 0)``, ``("input", 4)``...)
or per transformer block (``("middle", 0, 0)``) computes the self-attention of that block's
transformers in place of SDPA (ComfyUI's ``attn1`` patch replace; PerturbedAttentionGuidance
and SelfAttentionGuidance use it, :mod:`loom_sd15.pag`, :mod:`loom_sd15.sag`).
:class:`SelfAttentionTokenPatch` functions rewrite every self-attention's tokens before the
projections and after ``to_out`` (``attn1_patch`` / ``attn1_output_patch``: HyperTile, ToMe),
and :class:`InputBlockPatch` functions each input block's output before or after the skip
connection keeps it (``input_block_patch`` / ``..._after_skip``: deep shrink). These typed
contracts, and the :class:`UNetCall` they are given, live in :mod:`loom_sd15.unet_hooks`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from loom.memory import ops
from loom.types import ControlResiduals
from loom_sd15.unet_hooks import (
    NO_INPUT_PATCHES,
    AttentionInputPatch,
    AttentionInputPatches,
    AttentionSite,
    BlockAttention,
    BlockSite,
    InputBlockPatch,
    SelfAttentionReplacement,
    SelfAttentionReplacements,
    SelfAttentionTokenPatch,
    UNetCall,
)

__all__ = [
    "NO_INPUT_PATCHES",
    "AttentionInputPatch",
    "AttentionInputPatches",
    "AttentionSite",
    "BlockAttention",
    "BlockSite",
    "InputBlockPatch",
    "SelfAttentionReplacement",
    "SelfAttentionReplacements",
    "SelfAttentionTokenPatch",
    "UNetCall",
]


@attrs.frozen
class UNetConfig:
    """Shape of an LDM UNet. ``attention_levels`` are the levels (0 = full resolution)
    whose blocks carry a transformer; ``num_heads`` or ``head_channels`` fixes the heads."""

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = attrs.field(default=(1, 2, 4, 4), converter=tuple)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = attrs.field(default=(0, 1, 2), converter=tuple)
    num_heads: int = 8
    head_channels: int | None = None  # SD2.x: 64 channels per head, heads vary per level
    transformer_depth: int = 1
    context_dim: int = 768
    use_linear_in_transformer: bool = False  # SD2.x projects with Linear, SD1.x with 1x1 conv
    norm_groups: int = 32

    def heads_for(self, channels: int) -> tuple[int, int]:
        """``(heads, head_dim)`` of a transformer with ``channels`` channels."""
        if self.head_channels is not None:
            return channels // self.head_channels, self.head_channels
        return self.num_heads, channels // self.num_heads

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4


SD15_UNET = UNetConfig()
SD2_UNET = UNetConfig(head_channels=64, context_dim=1024, use_linear_in_transformer=True)


class SelfAttentionPatch(Protocol):
    """Runs on a transformer block's tokens ``[B, H*W, C]`` right after its self-attention
    (residual added) and before its cross-attention; returns the new tokens.

    ``transformer_index`` numbers the UNet's spatial transformers in order (input blocks,
    middle block, output blocks), as ComfyUI's ``transformer_index``.
    """

    def __call__(self, x: torch.Tensor, transformer_index: int) -> torch.Tensor: ...


def timestep_embedding(
    timesteps: torch.Tensor, dim: int, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal embedding ``[cos, sin]`` of (possibly fractional) timesteps (DDPM / LDM)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(
        half, dtype=torch.float32, device=timesteps.device
    )
    freqs = torch.exp(exponent / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


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


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the timestep embedding added in between, plus a skip."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            ops.GroupNorm(groups, channels),
            nn.SiLU(),
            ops.Conv2d(channels, out_channels, 3, padding=1),
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), ops.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            ops.GroupNorm(groups, out_channels),
            nn.SiLU(),
            nn.Dropout(0.0),
            ops.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else ops.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)
        h = h + emb_out[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = ops.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = ops.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


class TimestepBlock(nn.ModuleList):
    """A sequence of layers; each gets what it needs (embedding, context, output size)."""

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor,
        size: tuple[int, int] | None = None,
        patch: SelfAttentionPatch | None = None,
        attention: BlockAttention | None = None,
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, patch, attention)
            elif isinstance(layer, Upsample):
                x = layer(x, size)
            else:
                x = layer(x)
        return x


class OutputBlockPatch(Protocol):
    """``patch(h, skip) -> (h, skip)``: the decoder features and the skip connection an
    output block is about to concatenate, rewritten (after any control residual is added)."""

    def __call__(
        self, h: torch.Tensor, skip: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def patch_output_block(
    patches: Sequence[OutputBlockPatch], h: torch.Tensor, skip: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h, skip)`` through each patch in order."""
    for patch in patches:
        h, skip = patch(h, skip)
    return h, skip


def patch_input_block(
    patches: Sequence[InputBlockPatch], h: torch.Tensor, site: BlockSite
) -> torch.Tensor:
    """``h`` through each input-block patch in order."""
    for patch in patches:
        h = patch(h, site)
    return h


def block_attention(
    call: UNetCall,
    block: tuple[str, int],
    replacements: SelfAttentionReplacements | None,
    token_patches: Sequence[SelfAttentionTokenPatch],
    input_patches: AttentionInputPatches | None = None,
) -> BlockAttention | None:
    """What the transformers of ``block`` apply to their attentions (None: nothing)."""
    inputs = input_patches or NO_INPUT_PATCHES
    if not replacements and not token_patches and inputs == NO_INPUT_PATCHES:
        return None
    return BlockAttention(BlockSite(call, block), replacements or {}, tuple(token_patches), inputs)


def add_control(
    h: torch.Tensor, control: ControlResiduals | None, where: str, index: int
) -> torch.Tensor:
    """``h`` plus the control residual at ``where`` (``input`` / ``middle`` / ``output``)
    ``index``, if the control signal has one there."""
    if control is None:
        return h
    residuals = getattr(control, where)
    if index >= len(residuals) or residuals[index] is None:
        return h
    return h + residuals[index].to(h.device, h.dtype)


class UNetModel(nn.Module):
    """``forward(x, timesteps, context) -> eps`` (or ``v``), LDM checkpoint layout."""

    def __init__(self, config: UNetConfig = SD15_UNET) -> None:
        super().__init__()
        self.config = config
        mc, emb_dim, groups = config.model_channels, config.time_embed_dim, config.norm_groups
        self.time_embed = nn.Sequential(
            ops.Linear(mc, emb_dim), nn.SiLU(), ops.Linear(emb_dim, emb_dim)
        )
        self.input_blocks = nn.ModuleList(
            [TimestepBlock([ops.Conv2d(config.in_channels, mc, 3, padding=1)])]
        )
        skip_channels = [mc]
        ch = mc
        last = len(config.channel_mult) - 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * mc, groups)]
                ch = mult * mc
                if level in config.attention_levels:
                    layers.append(SpatialTransformer(ch, config))
                self.input_blocks.append(TimestepBlock(layers))
                skip_channels.append(ch)
            if level != last:
                self.input_blocks.append(TimestepBlock([Downsample(ch)]))
                skip_channels.append(ch)
        self.middle_block = TimestepBlock(
            [
                ResBlock(ch, emb_dim, ch, groups),
                SpatialTransformer(ch, config),
                ResBlock(ch, emb_dim, ch, groups),
            ]
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_dim, mc * mult, groups)]
                ch = mc * mult
                if level in config.attention_levels:
                    layers.append(SpatialTransformer(ch, config))
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepBlock(layers))
        self.out = nn.Sequential(
            ops.GroupNorm(groups, ch), nn.SiLU(), ops.Conv2d(mc, config.out_channels, 3, padding=1)
        )
        transformers = [m for m in self.modules() if isinstance(m, SpatialTransformer)]
        for index, transformer in enumerate(transformers):
            transformer.transformer_index = index

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        self_attention_patch: SelfAttentionPatch | None = None,
        control: ControlResiduals | None = None,
        output_block_patches: Sequence[OutputBlockPatch] = (),
        self_attention_replacements: SelfAttentionReplacements | None = None,
        attention_input_patches: AttentionInputPatches | None = None,
        input_block_patches: Sequence[InputBlockPatch] = (),
        input_block_patches_after_skip: Sequence[InputBlockPatch] = (),
        self_attention_token_patches: Sequence[SelfAttentionTokenPatch] = (),
        call: UNetCall | None = None,
        **_: Any,
    ) -> torch.Tensor:
        t_emb = timestep_embedding(timesteps, self.config.model_channels).to(x.dtype)
        emb = self.time_embed(t_emb)
        call = attrs.evolve(call or UNetCall(), latent_shape=tuple(x.shape))
        replaced = self_attention_replacements
        tokens = self_attention_token_patches
        inputs = attention_input_patches
        skips = []
        h = x
        for i, block in enumerate(self.input_blocks):
            attention = block_attention(call, ("input", i), replaced, tokens, inputs)
            h = block(h, emb, context, None, self_attention_patch, attention)
            h = add_control(h, control, "input", i)
            site = BlockSite(call, ("input", i))
            h = patch_input_block(input_block_patches, h, site)
            skips.append(h)
            h = patch_input_block(input_block_patches_after_skip, h, site)
        attention = block_attention(call, ("middle", 0), replaced, tokens, inputs)
        h = self.middle_block(h, emb, context, None, self_attention_patch, attention)
        h = add_control(h, control, "middle", 0)
        for index, block in enumerate(self.output_blocks):
            skip = add_control(skips.pop(), control, "output", len(skips))
            h, skip = patch_output_block(output_block_patches, h, skip)
            h = torch.cat([h, skip], dim=1)
            # Odd latent sizes: upsample to the size of the next skip, not blindly 2x.
            size = tuple(skips[-1].shape[-2:]) if skips else None
            attention = block_attention(call, ("output", index), replaced, tokens, inputs)
            h = block(h, emb, context, size, self_attention_patch, attention)
        return self.out(h)


def unet_flops(config: UNetConfig, batch: int, height: int, width: int, tokens: int = 77) -> float:
    """Approximate multiply-add FLOPs (x2) of one forward, from a meta-device trace."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = UNetModel(config)
        x = torch.zeros(batch, config.in_channels, height, width)
        t = torch.zeros(batch)
        c = torch.zeros(batch, tokens, config.context_dim)
        with FlopCounterMode(display=False) as counter:
            model(x, t, c)
    return float(counter.get_total_flops())
