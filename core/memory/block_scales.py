"""Block scales in cuBLAS's blocked ("swizzled") layout, as NVFP4 and MXFP8 files store them.

A ``[rows, blocks]`` matrix of per-block scales is padded to ``[roundup(rows, 128),
roundup(blocks, 4)]`` and cut into tiles of 128 rows x 4 blocks, stored one after another
(row tiles outer); inside a tile the rows are taken as 4 groups of 32, and the tile's 512
bytes run over (row within group, group, block). See cuBLAS's block-scaling-factors layout.
"""

from __future__ import annotations

import torch


def roundup(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    return -(-value // multiple) * multiple


def blocked_shape(rows: int, blocks: int) -> tuple[int, int]:
    """The blocked layout's shape for ``[rows, blocks]`` scales."""
    return roundup(rows, 128), roundup(blocks, 4)


def unblock(blocked: torch.Tensor, rows: int, blocks: int) -> torch.Tensor:
    """The ``[rows, blocks]`` scales held in cuBLAS's blocked layout ``blocked``."""
    row_tiles, col_tiles = -(-rows // 128), -(-blocks // 4)
    # a tile is [32 rows, 4 row groups, 4 blocks]: row = group * 32 + row-in-group
    tiles = blocked.reshape(row_tiles, col_tiles, 32, 4, 4).permute(0, 3, 2, 1, 4)
    return tiles.reshape(row_tiles * 128, col_tiles * 4)[:rows, :blocks]


def block(scales: torch.Tensor) -> torch.Tensor:
    """``[rows, blocks]`` scales in cuBLAS's blocked layout (zero padded)."""
    rows, blocks = scales.shape
    row_tiles, col_tiles = -(-rows // 128), -(-blocks // 4)
    padded = scales.new_zeros((row_tiles * 128, col_tiles * 4))
    padded[:rows, :blocks] = scales
    tiles = padded.reshape(row_tiles, 4, 32, col_tiles, 4).permute(0, 3, 2, 1, 4)
    return tiles.reshape(row_tiles * 128, col_tiles * 4)


__all__ = ["block", "blocked_shape", "roundup", "unblock"]
