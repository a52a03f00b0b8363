"""Tile-by-tile scaling with feathered overlaps, placed the way ComfyUI places tiles.

Tiled VAE encode/decode and model upscaling share one rule (ComfyUI's ``tiled_scale``): each
batch element is processed on its own, and an element that fits one tile goes through whole.
Otherwise tiles start every ``tile - overlap`` pixels from 0 up to (not including)
``size - overlap`` along each axis, and a tile that would cross the border is cut short there,
never shifted back. Each scaled tile is weighted by a mask that ramps ``1/f, 2/f, ..., 1`` over
``f = round(overlap * scale)`` pixels in from each of its edges (the image border included;
an axis no longer than ``f`` stays flat), and the weighted sum is divided by the summed weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import attrs
import torch

#: ``fn(piece) -> scaled piece``: one ``[1, C, h, w]`` tile to ``[1, C_out, h*s, w*s]``.
ScaleFn = Callable[[torch.Tensor], torch.Tensor]
#: ``on_tile()``: called after each tile (or whole element) is scaled.
TileCallback = Callable[[], None]


def _pair(tile: int | tuple[int, int]) -> tuple[int, int]:
    return (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where tiles begin along an axis of ``size`` pixels: the regular grid of
    ``tile - overlap`` strides below ``size - overlap`` (one tile when ``size <= tile``)."""
    if size <= tile:
        return [0]
    return list(range(0, size - overlap, max(1, tile - overlap)))


@attrs.frozen
class Tiling:
    """Tiles of ``tile`` pixels (an int for square tiles, or ``(height, width)``) overlapping
    by ``overlap`` input pixels, each scaled by ``scale`` (below 1 for a VAE encode)."""

    tile: tuple[int, int] = attrs.field(converter=_pair)
    overlap: int
    scale: float

    def __attrs_post_init__(self) -> None:
        if self.overlap < 0 or min(self.tile) < 1:
            raise ValueError(f"tile {self.tile} must be positive and overlap {self.overlap} >= 0")

    def steps(self, height: int, width: int) -> int:
        """Tiles one element of ``height`` x ``width`` needs (the progress total)."""
        if height <= self.tile[0] and width <= self.tile[1]:
            return 1
        rows = len(tile_starts(height, self.tile[0], self.overlap))
        return rows * len(tile_starts(width, self.tile[1], self.overlap))

    def windows(self, height: int, width: int) -> Iterator[tuple[int, int, int, int]]:
        """``(y, x, h, w)`` of each tile, rows first; tiles at the border are cut short."""
        for y in tile_starts(height, self.tile[0], self.overlap):
            for x in tile_starts(width, self.tile[1], self.overlap):
                yield y, x, min(self.tile[0], height - y), min(self.tile[1], width - x)

    def feather_mask(self, height: int, width: int) -> torch.Tensor:
        """The ``[height, width]`` weight of one scaled tile: linear ramps at every edge."""
        feather = round(self.overlap * self.scale)
        mask = torch.ones(height, width)
        if feather < 1:
            return mask
        # (1/f)·(t+1) in double, then float32: the values ComfyUI's mask multiplies by
        ramp = torch.tensor([(1.0 / feather) * (t + 1) for t in range(feather)]).float()
        for dim, length in ((0, height), (1, width)):
            if feather >= length:
                continue
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
    whole = height <= tiling.tile[0] and width <= tiling.tile[1]
    for b in range(batch):
        element = images[b : b + 1]
        if whole:
            output[b : b + 1] = fn(element).float().cpu()
            if on_tile is not None:
                on_tile()
            continue
        total = torch.zeros(1, out_channels, out_h, out_w)
        weight = torch.zeros(1, 1, out_h, out_w)
        for y, x, h, w in tiling.windows(height, width):
            scaled = fn(element[:, :, y : y + h, x : x + w]).float().cpu()
            sh, sw = scaled.shape[2], scaled.shape[3]
            mask = tiling.feather_mask(sh, sw)
            oy, ox = round(y * tiling.scale), round(x * tiling.scale)
            total[:, :, oy : oy + sh, ox : ox + sw] += scaled * mask
            weight[:, :, oy : oy + sh, ox : ox + sw] += mask
            if on_tile is not None:
                on_tile()
        output[b : b + 1] = total / weight
    return output


__all__ = ["ScaleFn", "TileCallback", "Tiling", "tile_starts", "tiled_scale"]
