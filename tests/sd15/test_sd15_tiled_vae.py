"""ComfyUI's tiled VAE: three tilings (tall, wide, square) averaged, in ComfyUI's order; the
placement rule itself is loom.tiling's (tests/core/test_tiling.py)."""

from __future__ import annotations

import torch
from loom_sd15.vae import three_tilings


def test_three_tilings_run_in_comfyui_order_and_average():
    shapes = []

    def identity(tile):
        shapes.append(tuple(tile.shape[2:]))
        return tile.clone()

    x = torch.rand(1, 1, 8, 8)
    out = three_tilings(x, identity, 4, 1, 1.0, 1)
    assert torch.allclose(out, x, atol=1e-6)
    # decode: 7 tall (8 x 2) tiles (stride 1), 7 wide (2 x 8) ones, then the square tiling
    # at 0, 3, 6, whose last tile is cut to 2 x 2 at the corner
    assert shapes[:7] == [(8, 2)] * 7 and shapes[7:14] == [(2, 8)] * 7
    assert shapes[14:] == [(4, 4), (4, 4), (4, 2), (4, 4), (4, 4), (4, 2), (2, 4), (2, 4), (2, 2)]
    shapes.clear()

    def halve(tile):
        shapes.append(tuple(tile.shape[2:]))
        return torch.nn.functional.avg_pool2d(tile, 2)

    three_tilings(x, halve, 4, 2, 0.5, 1)
    # encode: square first, then wide, then tall
    assert shapes[0] == (4, 4) and shapes[-1] == (8, 2)
