"""T2I-Adapters (Mou et al. 2023, arXiv:2302.08453): full, full XL and light, in the
original TencentARC layout (``conv_in``, ``body.N.*``) and diffusers' (``adapter.*``).

An adapter turns the hint image into one feature map per UNet level, computed once per hint
(not per step); the features are added to the UNet's encoder after the last residual block
of each level (ComfyUI's placement; XL's last feature goes to the middle block). Shapes are
read from the file: the first convolution's input width gives the hint channels and whether
the adapter is XL (pixel-unshuffle by 16 instead of 8), as ComfyUI decides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs
import torch
from torch import nn

from loom.memory import ops

#: residual blocks per level of a full adapter in the original layout (ComfyUI's value;
#: the layout does not say)
ORIGINAL_BLOCKS = 2
#: ComfyUI's rule: an adapter whose first convolution takes 256 or 768 channels is SDXL's
XL_INPUT_WIDTHS = (256, 768)


@attrs.frozen
class AdapterConfig:
    """``kind``: ``"full"``, ``"full_xl"`` or ``"light"``; ``channels`` per level;
    ``blocks``: residual blocks per level; ``in_width``: channels after pixel-unshuffle."""

    kind: str
    channels: tuple[int, ...]
    blocks: int
    in_width: int
    kernel: int = 1  # of block2 / in_conv (full adapters)
    conv_down: bool = False  # stride-2 convolutions instead of average pooling (full)

    @property
    def unshuffle(self) -> int:
        return 16 if self.kind == "full_xl" else 8

    @property
    def hint_channels(self) -> int:
        return self.in_width // (self.unshuffle**2)


class Downsample(nn.Module):
    """``op``: a stride-2 3x3 convolution or a 2x2 average pool."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.op = (
            ops.Conv2d(channels, channels, 3, stride=2, padding=1)
            if use_conv
            else nn.AvgPool2d(2, stride=2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Full adapter block: optional downsample, a width change (``in_conv``), then
    ``x + conv(relu(conv3x3(x)))``."""

    def __init__(self, cin: int, cout: int, down: bool, kernel: int, use_conv: bool) -> None:
        super().__init__()
        pad = kernel // 2
        self.down_opt = Downsample(cin, use_conv) if down else None
        self.in_conv = ops.Conv2d(cin, cout, kernel, 1, pad) if cin != cout else None
        self.block1 = ops.Conv2d(cout, cout, 3, 1, 1)
        self.act = nn.ReLU()
        self.block2 = ops.Conv2d(cout, cout, kernel, 1, pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down_opt is not None:
            x = self.down_opt(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        return x + self.block2(self.act(self.block1(x)))


class LightResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block1 = ops.Conv2d(channels, channels, 3, 1, 1)
        self.act = nn.ReLU()
        self.block2 = ops.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block2(self.act(self.block1(x)))


class Extractor(nn.Module):
    """Light adapter level: optional pooling, 1x1 in, residual blocks at a quarter width, 1x1 out."""

    def __init__(self, cin: int, inner: int, cout: int, blocks: int, down: bool) -> None:
        super().__init__()
        self.down_opt = Downsample(cin, False) if down else None
        self.in_conv = ops.Conv2d(cin, inner, 1)
        self.body = nn.Sequential(*(LightResBlock(inner) for _ in range(blocks)))
        self.out_conv = ops.Conv2d(inner, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down_opt is not None:
            x = self.down_opt(x)
        return self.out_conv(self.body(self.in_conv(x)))


class T2IAdapter(nn.Module):
    """``forward(hint) -> [feature per level]`` (hint ``[B, C, H, W]`` at image size)."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.unshuffle = nn.PixelUnshuffle(config.unshuffle)
        ch = config.channels
        if config.kind == "light":
            self.body = nn.ModuleList(
                Extractor(
                    config.in_width if i == 0 else ch[i - 1],
                    ch[i] // 4,
                    ch[i],
                    config.blocks,
                    i > 0,
                )
                for i in range(len(ch))
            )
            return
        self.conv_in = ops.Conv2d(config.in_width, ch[0], 3, 1, 1)
        downsampled = (2,) if config.kind == "full_xl" else (1, 2, 3)
        body = []
        for i in range(len(ch)):
            for j in range(config.blocks):
                first = j == 0 and i > 0
                cin = ch[i - 1] if first else ch[i]
                down = first and i in downsampled
                body.append(ResBlock(cin, ch[i], down, config.kernel, config.conv_down))
        self.body = nn.ModuleList(body)

    def forward(self, hint: torch.Tensor) -> list[torch.Tensor]:
        x = self.unshuffle(hint)
        features = []
        if self.config.kind == "light":
            for level in self.body:
                x = level(x)
                features.append(x)
            return features
        x = self.conv_in(x)
        for i in range(len(self.config.channels)):
            for j in range(self.config.blocks):
                x = self.body[i * self.config.blocks + j](x)
            features.append(x)
        return features


# --- layouts ------------------------------------------------------------------------------

_DIFFUSERS_FULL = re.compile(r"adapter\.body\.(\d+)\.resnets\.(\d+)\.(.*)")
_DIFFUSERS_LEVEL = re.compile(r"adapter\.body\.(\d+)\.(.*)")


def is_adapter(keys: Mapping[str, tuple[int, ...]]) -> bool:
    return (
        ("conv_in.weight" in keys and "body.0.block1.weight" in keys)
        or ("body.0.in_conv.weight" in keys and "body.0.out_conv.weight" in keys)
        or "adapter.body.0.resnets.0.block1.weight" in keys
    )


def original_keys(keys: Mapping[str, tuple[int, ...]]) -> dict[str, str]:
    """Original-layout key -> the file's key (identity for original files)."""
    if not any(k.startswith("adapter.") for k in keys):
        return {k: k for k in keys}
    light = any(k.endswith("out_conv.weight") for k in keys)
    blocks = diffusers_blocks(keys)
    out = {}
    for key in keys:
        if (m := _DIFFUSERS_FULL.fullmatch(key)) is not None:
            level, block, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            name = (
                f"body.{level}.body.{block}.{rest}"
                if light
                else f"body.{level * blocks + block}.{rest}"
            )
        elif (m := _DIFFUSERS_LEVEL.fullmatch(key)) is not None:
            level, rest = int(m.group(1)), m.group(2)
            name = f"body.{level}.{rest}" if light else f"body.{level * blocks}.{rest}"
        else:
            name = key.removeprefix("adapter.")
        out[name] = key
    return out


def diffusers_blocks(keys: Mapping[str, tuple[int, ...]]) -> int:
    """Residual blocks per level of a diffusers-layout full adapter (original: ComfyUI's 2)."""
    found = [int(m.group(2)) for k in keys if (m := _DIFFUSERS_FULL.fullmatch(k))]
    return 1 + max(found) if found else ORIGINAL_BLOCKS


def adapter_config(
    shapes: Mapping[str, tuple[int, ...]], blocks: int = ORIGINAL_BLOCKS
) -> AdapterConfig:
    """The adapter's kind and widths, from original-layout key shapes; ``blocks``: residual
    blocks per level of a full adapter (:func:`diffusers_blocks`)."""
    if "body.0.out_conv.weight" in shapes:
        levels = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("body."))
        channels = tuple(shapes[f"body.{i}.out_conv.weight"][0] for i in range(levels))
        blocks = len({k.split(".")[3] for k in shapes if k.startswith("body.0.body.")})
        return AdapterConfig("light", channels, blocks, shapes["body.0.in_conv.weight"][1])
    first = shapes["conv_in.weight"]
    count = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("body."))
    levels = count // blocks
    channels = tuple(shapes[f"body.{i * blocks}.block1.weight"][0] for i in range(levels))
    return AdapterConfig(
        "full_xl" if first[1] in XL_INPUT_WIDTHS else "full",
        channels,
        blocks,
        first[1],
        kernel=shapes["body.0.block2.weight"][2],
        conv_down=any(k.endswith("down_opt.op.weight") for k in shapes),
    )


def block_placement(kind: str, levels: int, res_blocks: int) -> tuple[list[int | None], bool]:
    """For each adapter feature, the UNet input block it is added after (None: the middle
    block), and whether the placement is XL's. SD: the last residual block of each level
    (blocks 2, 5, 8, 11 for SD1.5); XL (ComfyUI's fixed layout): blocks 3 and 5 for the
    first two features, 8 for the third, the middle block for the last."""
    if kind == "full_xl":
        return [3, 5, 8, None], True
    return [level * (res_blocks + 1) + res_blocks for level in range(levels)], False
