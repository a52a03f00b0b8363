"""Tiny models and helpers for the memory tests (imported by them; pytest puts this folder
on ``sys.path``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from loom.memory import ops


class TinyNet(nn.Module):
    """Conv -> GroupNorm -> residual Linear blocks -> LayerNorm -> Linear; ~1-20 KB of weights."""

    def __init__(self, width: int = 16, depth: int = 4) -> None:
        super().__init__()
        self.conv = ops.Conv2d(4, width, 3, padding=1)
        self.norm = ops.GroupNorm(4, width)
        self.blocks = nn.ModuleList([ops.Linear(width, width) for _ in range(depth)])
        self.ln = ops.LayerNorm(width)
        self.out = ops.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.conv(x)).permute(0, 2, 3, 1)
        for block in self.blocks:
            h = h + F.silu(block(h))
        return self.out(self.ln(h)).permute(0, 3, 1, 2)


def make_net(
    seed: int = 0, width: int = 16, depth: int = 4, dtype: torch.dtype = torch.float32
) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet(width, depth).eval().requires_grad_(False)
    return net.to(dtype)


def make_input(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor, for bitwise comparisons in any dtype."""
    return tensor.detach().contiguous().view(torch.uint8).clone()


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: bits(v) for k, v in module.state_dict().items()}
