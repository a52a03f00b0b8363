"""Tiled image-to-image scaling with feathered overlaps, placed the way ComfyUI places tiles.

ComfyUI's ``tiled_scale`` (what ``ImageUpscaleWithModel`` calls) works one batch element at
a time. An element that fits one tile is scaled whole. Otherwise tiles start every
``tile - overlap`` pixels from 0 up to (not including) ``size - overlap``, per axis; a tile
that would cross the border is cut short there (never shifted back). Each scaled tile is
weighted by a mask that ramps linearly, ``(t + 1) / feather`` for ``t < feather`` with
``feather = round(overlap * scale)``, at all four edges (the image border included), and the
weighted sum is divided by the summed weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import attrs
import torch

#: ``fn(piece) -> scaled piece``: one ``[1, C, h, w]`` tile to ``[1, C_out, h*s, w*s]``.
ScaleFn = Callable[[torch.Tensor], torch.Tensor]
#: ``on_tile()``: called after each tile (or whole element) is scaled.
TileCallback = Callable[[], None]


@attrs.frozen
class Tiling:
    """Square tiles of ``tile`` pixels overlapping by ``overlap``, scaled by ``scale``."""

    tile: int
    overlap: int
    scale: float

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap {self.overlap} must be in [0, tile={self.tile})")

    def starts(self, size: int) -> list[int]:
        """Where tiles begin along an axis of ``size`` pixels."""
        if size <= self.tile:
            return [0]
        return list(range(0, size - self.overlap, self.tile - self.overlap))

    def steps(self, height: int, width: int) -> int:
        """Tiles one element of ``height`` x ``width`` needs (ComfyUI's progress total)."""
        rows = (
            1
            if height <= self.tile
            else math.ceil((height - self.overlap) / (self.tile - self.overlap))
        )
        cols = (
            1
            if width <= self.tile
            else math.ceil((width - self.overlap) / (self.tile - self.overlap))
        )
        return rows * cols

    def windows(self, height: int, width: int) -> Iterator[tuple[int, int, int, int]]:
        """``(y, x, h, w)`` of each tile, rows first; tiles at the border are cut short."""
        for y in self.starts(height):
            y = max(0, min(height - self.overlap, y))
            for x in self.starts(width):
                x = max(0, min(width - self.overlap, x))
                yield y, x, min(self.tile, height - y), min(self.tile, width - x)

    def feather_mask(self, height: int, width: int) -> torch.Tensor:
        """The ``[height, width]`` weight of one scaled tile: linear ramps at every edge."""
        feather = round(self.overlap * self.scale)
        mask = torch.ones(height, width)
        for dim, length in ((0, height), (1, width)):
            if feather >= length:
                continue
            ramp = torch.arange(1, feather + 1, dtype=torch.float32) / feather
            shape = (-1, 1) if dim == 0 else (1, -1)
            mask.narrow(dim, 0, feather).mul_(ramp.view(shape))
            mask.narrow(dim, length - feather, feather).mul_(ramp.flip(0).view(shape))
        return mask


def tiled_scale(
    images: torch.Tensor,
    fn: ScaleFn,
    tiling: Tiling,
    out_channels: int,
    on_tile: TileCallback | None = None,
) -> torch.Tensor:
    """Scale ``images`` ``[B, C, H, W]`` by ``tiling.scale`` with ``fn``, tile by tile.

    The result is float32 on the CPU (as ComfyUI's), whatever device ``fn`` computes on.
    """
    batch, _, height, width = images.shape
    out_h, out_w = round(height * tiling.scale), round(width * tiling.scale)
    output = torch.empty(batch, out_channels, out_h, out_w)
    for b in range(batch):
        element = images[b : b + 1]
        if height <= tiling.tile and width <= tiling.tile:
            output[b : b + 1] = fn(element).float().cpu()
            if on_tile is not None:
                on_tile()
            continue
        total = torch.zeros(1, out_channels, out_h, out_w)
        weight = torch.zeros(1, 1, out_h, out_w)
        for y, x, h, w in tiling.windows(height, width):
            scaled = fn(element[:, :, y : y + h, x : x + w]).float().cpu()
            mask = tiling.feather_mask(scaled.shape[2], scaled.shape[3])
            oy, ox = round(y * tiling.scale), round(x * tiling.scale)
            sh, sw = scaled.shape[2], scaled.shape[3]
            total[:, :, oy : oy + sh, ox : ox + sw] += scaled * mask
            weight[:, :, oy : oy + sh, ox : ox + sw] += mask
            if on_tile is not None:
                on_tile()
        output[b : b + 1] = total / weight
    return output
