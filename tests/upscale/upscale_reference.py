"""The loom-upscale tests' reference: a tiny Real-ESRGAN RRDBNet written here from the
paper's formulation (what the nodes are compared against), its weights in the real key
layouts, and test images. Its own module (not conftest) so test files can import it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from loom.memory import write_safetensors

#: spandrel's RRDBNet has a fixed growth width of 32 channels.
GROWTH = 32


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier output; scaled residual."""

    def __init__(self, features: int) -> None:
        super().__init__()
        for index in range(4):
            setattr(self, f"conv{index + 1}", nn.Conv2d(features + index * GROWTH, GROWTH, 3, 1, 1))
        self.conv5 = nn.Conv2d(features + 4 * GROWTH, features, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = [x]
        for index in range(4):
            conv = getattr(self, f"conv{index + 1}")
            seen.append(F.leaky_relu(conv(torch.cat(seen, 1)), 0.2))
        return self.conv5(torch.cat(seen, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Three dense blocks in a scaled residual."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(features)
        self.rdb2 = ResidualDenseBlock(features)
        self.rdb3 = ResidualDenseBlock(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """Real-ESRGAN's generator (``RealESRGAN_x4plus`` layout); ``scale=2`` pixel-unshuffles
    the input by 2 first, as ``RealESRGAN_x2plus`` does."""

    def __init__(self, features: int = 8, blocks: int = 1, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale
        in_channels = 3 * (4 if scale == 2 else 1)
        self.conv_first = nn.Conv2d(in_channels, features, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(features) for _ in range(blocks)))
        self.conv_body = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_hr = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_last = nn.Conv2d(features, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.pixel_unshuffle(x, 2) if self.scale == 2 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def tiny_rrdbnet(seed: int = 0, scale: int = 4) -> RRDBNet:
    """A seeded RRDBNet whose outputs mostly fall inside [0, 1] (so clamping hides little)."""
    torch.manual_seed(seed)
    net = RRDBNet(scale=scale).eval().requires_grad_(False)
    with torch.no_grad():  # centred on grey, spread enough that tiles and seams show
        net.conv_last.weight.mul_(6.0)
        net.conv_last.bias.fill_(0.5)
    return net


def old_esrgan_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights in the original ESRGAN layout (``model.N``; one block)."""
    renamed = {}
    for key, value in state.items():
        head, _, kind = key.rpartition(".")
        if head.startswith("body."):
            _, block, rdb, conv = head.split(".")
            new = f"model.1.sub.{block}.{rdb.upper()}.{conv}.0.{kind}"
        else:
            blocks = 1
            index = {
                "conv_first": "model.0",
                "conv_body": f"model.1.sub.{blocks}",
                "conv_up1": "model.3",
                "conv_up2": "model.6",
                "conv_hr": "model.8",
                "conv_last": "model.10",
            }[head]
            new = f"{index}.{kind}"
        renamed[new] = value
    return renamed


def write_model(folder: Path, name: str, tensors: dict[str, torch.Tensor]) -> Path:
    return write_safetensors(folder / name, {k: v.contiguous() for k, v in tensors.items()})


def image_batch(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """An IMAGE ``[B, H, W, 3]`` of smooth random colours in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(2, height // 8), max(2, width // 8), generator=generator)
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return smooth.movedim(1, -1).contiguous()
