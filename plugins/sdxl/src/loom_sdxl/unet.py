"""The SDXL UNet in the original single-file layout (``model.diffusion_model.*``).

Built from loom-sd15's blocks (``ResBlock``, ``Downsample``, ``Upsample``, ``TimestepBlock``
of :mod:`loom_sd15.unet_blocks`, ``SpatialTransformer``) with what SDXL changes: a transformer
depth per level (base 0/2/10, refiner 0/4/4/0), 64 channels per attention head, linear
``proj_in``/``proj_out``, a 2048- (base) or 1280-wide (refiner) context, and the ADM class
embedding ``label_emb`` (2816 inputs for base, 2560 for refiner) added to the timestep
embedding. Module names match the checkpoint, so its state dict loads with no renaming.
Its forward is loom-sd15's block loop (:func:`loom_sd15.unet_blocks.run_unet_blocks`) given
the timestep embedding plus the class embedding; it takes no self-attention patch (GLIGEN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from loom_sd15.unet import (
    AttentionInputPatches,
    InputBlockPatch,
    OutputBlockPatch,
    SelfAttentionReplacements,
    SelfAttentionTokenPatch,
    SpatialTransformer,
    UNetCall,
    UNetConfig,
)
from loom_sd15.unet_blocks import (
    build_unet_blocks,
    run_unet_blocks,
    time_embed_layers,
    timestep_embedding,
)
from torch import nn

from loom.memory import ops
from loom.types import ControlResiduals


@attrs.frozen
class SDXLUNetConfig:
    """Shape of an SDXL UNet. ``transformer_depths[level]`` is 0 where a level has no
    attention; ``adm_in_channels`` is the width of the ``y`` vector (pooled text + sizes)."""

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = attrs.field(default=(1, 2, 4), converter=tuple)
    num_res_blocks: int = 2
    transformer_depths: tuple[int, ...] = attrs.field(default=(0, 2, 10), converter=tuple)
    middle_depth: int = 10
    head_channels: int = 64
    context_dim: int = 2048
    adm_in_channels: int = 2816
    norm_groups: int = 32

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4

    def level_config(self, depth: int) -> UNetConfig:
        """The sd15 block config of one level (what ``SpatialTransformer`` reads)."""
        return UNetConfig(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            model_channels=self.model_channels,
            channel_mult=self.channel_mult,
            num_res_blocks=self.num_res_blocks,
            attention_levels=(),
            head_channels=self.head_channels,
            transformer_depth=depth,
            context_dim=self.context_dim,
            use_linear_in_transformer=True,
            norm_groups=self.norm_groups,
        )


SDXL_BASE_UNET = SDXLUNetConfig()
SDXL_REFINER_UNET = SDXLUNetConfig(
    model_channels=384,
    channel_mult=(1, 2, 4, 4),
    transformer_depths=(0, 4, 4, 0),
    middle_depth=4,
    context_dim=1280,
    adm_in_channels=2560,
)


class SDXLUNetModel(nn.Module):
    """``forward(x, timesteps, context, y) -> eps``: the LDM UNet with SDXL's class embedding."""

    def __init__(self, config: SDXLUNetConfig = SDXL_BASE_UNET) -> None:
        super().__init__()
        self.config = config
        emb_dim = config.time_embed_dim
        self.time_embed = time_embed_layers(config)
        self.label_emb = nn.Sequential(
            nn.Sequential(
                ops.Linear(config.adm_in_channels, emb_dim), nn.SiLU(), ops.Linear(emb_dim, emb_dim)
            )
        )
        build_unet_blocks(self, config, self._transformer)

    def _transformer(self, channels: int, level: int | None) -> SpatialTransformer | None:
        config = self.config
        depth = config.middle_depth if level is None else config.transformer_depths[level]
        return SpatialTransformer(channels, config.level_config(depth)) if depth else None

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
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
        if y is None:
            raise ValueError("the SDXL UNet needs its ADM vector y (pooled text + sizes)")
        t_emb = timestep_embedding(timesteps, self.config.model_channels).to(x.dtype)
        emb = self.time_embed(t_emb) + self.label_emb(y.to(x.dtype))
        return run_unet_blocks(
            self,
            x,
            emb,
            context,
            control=control,
            output_block_patches=output_block_patches,
            self_attention_replacements=self_attention_replacements,
            attention_input_patches=attention_input_patches,
            input_block_patches=input_block_patches,
            input_block_patches_after_skip=input_block_patches_after_skip,
            self_attention_token_patches=self_attention_token_patches,
            call=call,
        )


def unet_flops(
    config: SDXLUNetConfig, batch: int, height: int, width: int, tokens: int = 77
) -> float:
    """Approximate multiply-add FLOPs (x2) of one forward, from a meta-device trace."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = SDXLUNetModel(config)
        x = torch.zeros(batch, config.in_channels, height, width)
        t = torch.zeros(batch)
        c = torch.zeros(batch, tokens, config.context_dim)
        y = torch.zeros(batch, config.adm_in_channels)
        with FlopCounterMode(display=False) as counter:
            model(x, t, c, y)
    return float(counter.get_total_flops())
