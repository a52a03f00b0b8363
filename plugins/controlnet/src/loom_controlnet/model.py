"""The ControlNet module in the original layout (``control_model.*`` without the prefix).

A ControlNet is a trainable copy of a UNet's encoder (``time_embed``, ``input_blocks``,
``middle_block``; SDXL's ``label_emb`` too) plus a small convolutional encoder of the hint
image (``input_hint_block``, added after the first input block) and one zero-initialised
1x1 convolution per skip connection (``zero_convs``) and for the middle block
(``middle_block_out``) (Zhang et al. 2023, arXiv:2302.05543). The encoder is loom-sd15's
(or loom-sdxl's) own UNet code: the ControlNet builds the UNet for its config and keeps the
encoder half, so the module names, and therefore the file's keys, are the UNet's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import attrs
import torch
from loom_sd15.unet import Downsample, ResBlock, UNetConfig, UNetModel, timestep_embedding
from torch import nn

from loom.memory import ops
from loom.types import ControlResiduals
from loom_controlnet.union import HEADS, ControlTypeEmbedding, UnionBlock, union_hint

#: channels of the hint encoder's convolutions (ControlNet 1.0 / 1.1, SD1.x and SDXL)
HINT_CHANNELS = (16, 16, 32, 32, 96, 96, 256)


@attrs.frozen
class ControlNetConfig:
    """A ControlNet: the UNet config its encoder copies, the hint image's channels, and the
    UNet class (loom-sd15's ``UNetModel`` or loom-sdxl's ``SDXLUNetModel``)."""

    unet: Any = attrs.field(factory=UNetConfig)
    hint_channels: int = 3
    unet_class: Callable[[Any], nn.Module] = UNetModel
    #: union ControlNets: how many control types, and the width of the type tokens
    union_types: int | None = None
    union_width: int = 320

    @property
    def family(self) -> str:
        """``"sdxl"`` when the encoder has SDXL's class embedding, else ``"sd15"``."""
        return "sdxl" if getattr(self.unet, "adm_in_channels", None) else "sd15"


def hint_encoder(hint_channels: int, model_channels: int) -> nn.Sequential:
    """Conv-SiLU pairs taking the hint image down 8x to ``model_channels`` channels."""
    layers: list[nn.Module] = []
    channels = (hint_channels, *HINT_CHANNELS)
    for i, (cin, cout) in enumerate(itertools.pairwise(channels)):
        stride = 2 if i in (2, 4, 6) else 1
        layers += [ops.Conv2d(cin, cout, 3, padding=1, stride=stride), nn.SiLU()]
    layers.append(ops.Conv2d(HINT_CHANNELS[-1], model_channels, 3, padding=1))
    return nn.Sequential(*layers)


def _block_channels(block: nn.Module) -> int:
    """Output channels of one UNet input block (its last channel-changing layer)."""
    channels = 0
    for layer in block:
        if isinstance(layer, ResBlock):
            channels = layer.out_layers[3].out_channels
        elif isinstance(layer, Downsample):
            channels = layer.op.out_channels
        elif isinstance(layer, nn.Conv2d):
            channels = layer.out_channels
    return channels


class ControlNet(nn.Module):
    """``forward(x, hint, timesteps, context, y=None) -> ControlResiduals`` (unscaled)."""

    def __init__(self, config: ControlNetConfig) -> None:
        super().__init__()
        self.config = config
        unet = config.unet_class(config.unet)  # on meta when built by build_on_meta
        self.time_embed = unet.time_embed
        if hasattr(unet, "label_emb"):
            self.label_emb = unet.label_emb
        self.input_blocks = unet.input_blocks
        self.middle_block = unet.middle_block
        self.model_channels = config.unet.model_channels
        self.input_hint_block = hint_encoder(config.hint_channels, self.model_channels)
        widths = [_block_channels(block) for block in self.input_blocks]
        self.zero_convs = nn.ModuleList(nn.Sequential(ops.Conv2d(c, c, 1)) for c in widths)
        self.middle_block_out = nn.Sequential(ops.Conv2d(widths[-1], widths[-1], 1))
        if config.union_types is not None:
            width = config.union_width
            self.task_embedding = nn.Parameter(torch.empty(config.union_types, width))
            self.transformer_layes = nn.Sequential(UnionBlock(width, HEADS))  # the file's spelling
            self.spatial_ch_projs = ops.Linear(width, width)
            self.control_add_embedding = ControlTypeEmbedding(
                config.union_types, config.unet.time_embed_dim
            )

    def forward(
        self,
        x: torch.Tensor,
        hint: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
        control_type: int | None = None,
    ) -> ControlResiduals:
        """``control_type``: a union ControlNet's type (None: auto); others ignore it."""
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(x.dtype))
        union = self.config.union_types is not None
        types = [] if control_type is None else [control_type]
        if union:
            emb = emb + self.control_add_embedding(types, emb.dtype, emb.device)
        if hasattr(self, "label_emb"):
            if y is None:
                raise ValueError("an SDXL ControlNet needs the model's ADM vector y")
            emb = emb + self.label_emb(y.to(x.dtype))
        guided_hint: torch.Tensor | None = self.input_hint_block(hint)
        if union and types:
            guided_hint = union_hint(
                guided_hint,
                types[0],
                self.task_embedding,
                self.transformer_layes,
                self.spatial_ch_projs,
            )
        outs = []
        h = x
        for block, zero_conv in zip(self.input_blocks, self.zero_convs, strict=True):
            h = block(h, emb, context)
            if guided_hint is not None:
                h = h + guided_hint
                guided_hint = None
            outs.append(zero_conv(h))
        h = self.middle_block(h, emb, context)
        return ControlResiduals(middle=(self.middle_block_out(h),), output=tuple(outs))
