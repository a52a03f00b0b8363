"""ComfyUI's image preprocessing for CLIP vision towers.

In order: drop an alpha channel; unless the image already is ``size`` x ``size``, resize it
(bicubic, antialiased) so the shorter side is ``size`` and crop the centre (``crop``), or
squash it to ``size`` x ``size`` (no crop); quantise to 8-bit levels (``round(255 x) / 255``,
clipped); normalise with the tower's mean and std.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def clip_preprocess(
    image: torch.Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    crop: bool = True,
) -> torch.Tensor:
    """IMAGE ``[B, H, W, C]`` in [0, 1] -> pixel values ``[B, 3, size, size]`` (float32)."""
    pixels = image[..., :3].movedim(-1, 1)
    height, width = pixels.shape[-2:]
    if (height, width) != (size, size):
        if crop:
            scale = size / min(height, width)
            target = (round(scale * height), round(scale * width))
        else:
            target = (size, size)
        pixels = F.interpolate(pixels, size=target, mode="bicubic", antialias=True)
        top = (pixels.shape[-2] - size) // 2
        left = (pixels.shape[-1] - size) // 2
        pixels = pixels[..., top : top + size, left : left + size]
    pixels = torch.clip(255.0 * pixels, 0, 255).round() / 255.0
    mean_t = torch.tensor(mean, device=pixels.device, dtype=pixels.dtype).view(3, 1, 1)
    std_t = torch.tensor(std, device=pixels.device, dtype=pixels.dtype).view(3, 1, 1)
    return ((pixels - mean_t) / std_t).float()
