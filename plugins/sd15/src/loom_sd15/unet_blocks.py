"""The blocks of an LDM-layout UNet and the loop that runs them, shared by every UNet in
the original checkpoint layout (SD1.x/2.x's :class:`loom_sd15.unet.UNetModel`, SDXL's).

:func:`build_unet_blocks` gives a UNet its ``input_blocks``, ``middle_block``,
``output_blocks`` and ``out`` (module names as in CompVis' ``openaimodel.py``: ``ResBlock``
with ``in_layers`` / ``emb_layers`` / ``out_layers``, ``Downsample``, ``Upsample``), each
level's transformer chosen by the caller; :func:`run_unet_blocks` is the block loop (SDXL's
adds its class embedding to ``emb`` first), applying the hooks of
:mod:`loom_sd15.unet_patching` where they belong. Layers are built from
:data:`loom.memory.ops`, so weights keep their stored dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from loom.memory import ops
from loom.types import ControlResiduals
from loom_sd15.unet_hooks import (
    AttentionInputPatches,
    BlockAttention,
    BlockSite,
    InputBlockPatch,
    SelfAttentionReplacements,
    SelfAttentionTokenPatch,
    UNetCall,
)
from loom_sd15.unet_patching import (
    OutputBlockPatch,
    SelfAttentionPatch,
    add_control,
    block_attention,
    patch_input_block,
    patch_output_block,
)
from loom_sd15.unet_transformer import SpatialTransformer


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


class UNetShape(Protocol):
    """What :func:`build_unet_blocks` reads of a UNet's config (:class:`UNetConfig`, SDXL's)."""

    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    norm_groups: int

    @property
    def time_embed_dim(self) -> int: ...


#: ``transformer_for(channels, level)``: the spatial transformer a block of ``level`` (None:
#: the middle block) carries after its ResBlock, or None for none.
TransformerFor = Callable[[int, "int | None"], "nn.Module | None"]


def time_embed_layers(config: UNetShape) -> nn.Sequential:
    """``time_embed``: the MLP over the sinusoidal timestep embedding."""
    mc, emb_dim = config.model_channels, config.time_embed_dim
    return nn.Sequential(ops.Linear(mc, emb_dim), nn.SiLU(), ops.Linear(emb_dim, emb_dim))


def build_unet_blocks(unet: nn.Module, config: UNetShape, transformer_for: TransformerFor) -> None:
    """Give ``unet`` the LDM layout's ``input_blocks``, ``middle_block``, ``output_blocks`` and
    ``out`` (in that order): ResBlocks per level, each followed by the level's transformer,
    down- and upsampling between levels, the decoder joining the encoder's skips."""
    mc, emb_dim, groups = config.model_channels, config.time_embed_dim, config.norm_groups

    def with_transformer(layers: list[nn.Module], channels: int, level: int | None) -> None:
        transformer = transformer_for(channels, level)
        if transformer is not None:
            layers.append(transformer)

    unet.input_blocks = nn.ModuleList(
        [TimestepBlock([ops.Conv2d(config.in_channels, mc, 3, padding=1)])]
    )
    skip_channels = [mc]
    ch = mc
    last = len(config.channel_mult) - 1
    for level, mult in enumerate(config.channel_mult):
        for _ in range(config.num_res_blocks):
            layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * mc, groups)]
            ch = mult * mc
            with_transformer(layers, ch, level)
            unet.input_blocks.append(TimestepBlock(layers))
            skip_channels.append(ch)
        if level != last:
            unet.input_blocks.append(TimestepBlock([Downsample(ch)]))
            skip_channels.append(ch)
    middle: list[nn.Module] = [ResBlock(ch, emb_dim, ch, groups)]
    with_transformer(middle, ch, None)
    middle.append(ResBlock(ch, emb_dim, ch, groups))
    unet.middle_block = TimestepBlock(middle)
    unet.output_blocks = nn.ModuleList()
    for level, mult in reversed(list(enumerate(config.channel_mult))):
        for i in range(config.num_res_blocks + 1):
            layers = [ResBlock(ch + skip_channels.pop(), emb_dim, mc * mult, groups)]
            ch = mc * mult
            with_transformer(layers, ch, level)
            if level and i == config.num_res_blocks:
                layers.append(Upsample(ch))
            unet.output_blocks.append(TimestepBlock(layers))
    unet.out = nn.Sequential(
        ops.GroupNorm(groups, ch), nn.SiLU(), ops.Conv2d(mc, config.out_channels, 3, padding=1)
    )


class UNetBlocks(Protocol):
    """The blocks of an LDM-layout UNet (:class:`UNetModel`, SDXL's) that
    :func:`run_unet_blocks` runs."""

    input_blocks: nn.ModuleList
    middle_block: TimestepBlock
    output_blocks: nn.ModuleList
    out: nn.Sequential


def run_unet_blocks(
    unet: UNetBlocks,
    x: torch.Tensor,
    emb: torch.Tensor,
    context: torch.Tensor,
    *,
    self_attention_patch: SelfAttentionPatch | None = None,
    control: ControlResiduals | None = None,
    output_block_patches: Sequence[OutputBlockPatch] = (),
    self_attention_replacements: SelfAttentionReplacements | None = None,
    attention_input_patches: AttentionInputPatches | None = None,
    input_block_patches: Sequence[InputBlockPatch] = (),
    input_block_patches_after_skip: Sequence[InputBlockPatch] = (),
    self_attention_token_patches: Sequence[SelfAttentionTokenPatch] = (),
    call: UNetCall | None = None,
) -> torch.Tensor:
    """The UNet's block loop on ``x`` given the embedding ``emb`` (timestep, plus a class
    embedding where the model has one): input blocks keeping their skips, the middle block,
    output blocks joining them, then ``out``; every patch applied where it belongs."""
    call = attrs.evolve(call or UNetCall(), latent_shape=tuple(x.shape))
    replaced = self_attention_replacements
    tokens = self_attention_token_patches
    inputs = attention_input_patches
    skips = []
    h = x
    for i, block in enumerate(unet.input_blocks):
        attention = block_attention(call, ("input", i), replaced, tokens, inputs)
        h = block(h, emb, context, None, self_attention_patch, attention)
        h = add_control(h, control, "input", i)
        site = BlockSite(call, ("input", i))
        h = patch_input_block(input_block_patches, h, site)
        skips.append(h)
        h = patch_input_block(input_block_patches_after_skip, h, site)
    attention = block_attention(call, ("middle", 0), replaced, tokens, inputs)
    h = unet.middle_block(h, emb, context, None, self_attention_patch, attention)
    h = add_control(h, control, "middle", 0)
    for index, block in enumerate(unet.output_blocks):
        skip = add_control(skips.pop(), control, "output", len(skips))
        h, skip = patch_output_block(output_block_patches, h, skip)
        h = torch.cat([h, skip], dim=1)
        # Odd latent sizes: upsample to the size of the next skip, not blindly 2x.
        size = tuple(skips[-1].shape[-2:]) if skips else None
        attention = block_attention(call, ("output", index), replaced, tokens, inputs)
        h = block(h, emb, context, size, self_attention_patch, attention)
    return unet.out(h)
