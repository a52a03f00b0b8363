"""The latent-diffusion UNet in the original checkpoint layout (``model.diffusion_model.*``).

Module names follow CompVis' ``openaimodel.py`` (``input_blocks``, ``middle_block``,
``output_blocks``, ``time_embed``, ``out``; ``ResBlock`` with ``in_layers`` / ``emb_layers`` /
``out_layers``; ``SpatialTransformer`` with ``transformer_blocks``), so a checkpoint's state
dict loads with no renaming. Widths, depth, heads and context size come from
:class:`UNetConfig`: the same code builds full-size SD1.5 (:data:`SD15_UNET`), SD2.x and the
tiny models the tests use. Layers are built from :data:`loom.memory.ops`, so weights keep
their stored dtype and are cast to the compute dtype on the fly; attention goes through
``torch.nn.functional.scaled_dot_product_attention``.

The hooks its forward takes (self-attention patches and replacements, token patches,
input- and output-block patches, control residuals) are applied by
:mod:`loom_sd15.unet_patching`; their typed contracts, and the :class:`UNetCall` they are
given, live in :mod:`loom_sd15.unet_hooks`. The spatial transformer's modules are in
:mod:`loom_sd15.unet_transformer`; the blocks (``ResBlock``, ``Downsample``, ``Upsample``,
``TimestepBlock``), their assembly and the block loop every LDM-layout UNet shares, in
:mod:`loom_sd15.unet_blocks`. This module holds SD1.x/2.x's configuration and assembly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import nn

from loom.types import ControlResiduals
from loom_sd15.unet_blocks import (
    Downsample,
    ResBlock,
    TimestepBlock,
    TransformerFor,
    UNetBlocks,
    UNetShape,
    Upsample,
    build_unet_blocks,
    run_unet_blocks,
    time_embed_layers,
    timestep_embedding,
)
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
from loom_sd15.unet_patching import (
    OutputBlockPatch,
    SelfAttentionPatch,
    add_control,
    block_attention,
    patch_input_block,
    patch_output_block,
)
from loom_sd15.unet_transformer import (
    GEGLU,
    BasicTransformerBlock,
    CrossAttention,
    FeedForward,
    SpatialTransformer,
    attention,
)

__all__ = [
    "GEGLU",
    "NO_INPUT_PATCHES",
    "AttentionInputPatch",
    "AttentionInputPatches",
    "AttentionSite",
    "BasicTransformerBlock",
    "BlockAttention",
    "BlockSite",
    "CrossAttention",
    "Downsample",
    "FeedForward",
    "InputBlockPatch",
    "OutputBlockPatch",
    "ResBlock",
    "SelfAttentionPatch",
    "SelfAttentionReplacement",
    "SelfAttentionReplacements",
    "SelfAttentionTokenPatch",
    "SpatialTransformer",
    "TimestepBlock",
    "TransformerFor",
    "UNetBlocks",
    "UNetCall",
    "UNetShape",
    "Upsample",
    "add_control",
    "attention",
    "block_attention",
    "build_unet_blocks",
    "patch_input_block",
    "patch_output_block",
    "run_unet_blocks",
    "time_embed_layers",
    "timestep_embedding",
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


class UNetModel(nn.Module):
    """``forward(x, timesteps, context) -> eps`` (or ``v``), LDM checkpoint layout."""

    def __init__(self, config: UNetConfig = SD15_UNET) -> None:
        super().__init__()
        self.config = config
        self.time_embed = time_embed_layers(config)
        build_unet_blocks(self, config, self._transformer)
        transformers = [m for m in self.modules() if isinstance(m, SpatialTransformer)]
        for index, transformer in enumerate(transformers):
            transformer.transformer_index = index

    def _transformer(self, channels: int, level: int | None) -> SpatialTransformer | None:
        if level is None or level in self.config.attention_levels:
            return SpatialTransformer(channels, self.config)
        return None

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
        return run_unet_blocks(
            self,
            x,
            emb,
            context,
            self_attention_patch=self_attention_patch,
            control=control,
            output_block_patches=output_block_patches,
            self_attention_replacements=self_attention_replacements,
            attention_input_patches=attention_input_patches,
            input_block_patches=input_block_patches,
            input_block_patches_after_skip=input_block_patches_after_skip,
            self_attention_token_patches=self_attention_token_patches,
            call=call,
        )


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
