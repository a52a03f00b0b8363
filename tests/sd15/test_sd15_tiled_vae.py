"""Tiled VAE placement against ComfyUI's ``tiled_scale_multidim`` rule, worked by hand:
tiles on the regular ``tile - overlap`` grid, the last one cut at the border (not shifted
back), overlaps blended with the feathered mask."""

from __future__ import annotations

import pytest
import torch
from loom_sd15.vae import feather_mask, tile_starts, tiled_scale


def tile_mean(tile: torch.Tensor) -> torch.Tensor:
    """Not translation-equivariant: each tile becomes its own mean, so placement shows."""
    return tile.mean(dim=(2, 3), keepdim=True).expand_as(tile).clone()


def test_tile_starts_are_the_regular_grid():
    assert tile_starts(11, 4, 2) == [0, 2, 4, 6, 8]  # last tile 8..10, three pixels
    assert tile_starts(11, 4, 1) == [0, 3, 6, 9]  # last tile 9..10, not moved back to 7
    assert tile_starts(4, 4, 1) == [0]


def test_feather_mask_ramps_each_axis_and_skips_short_ones():
    mask = feather_mask((1, 1, 1, 4), 2)
    assert mask.flatten().tolist() == [0.5, 1.0, 1.0, 0.5]  # height 1 <= 2: left flat
    assert feather_mask((1, 1, 1, 3), 2).flatten().tolist() == [0.5, 1.0, 0.5]
    square = feather_mask((1, 1, 3, 3), 1)
    assert torch.equal(square, torch.ones(1, 1, 3, 3))  # a one-pixel ramp is all ones


def test_tiles_blend_as_comfyui_worked_by_hand():
    x = torch.arange(11, dtype=torch.float32).view(1, 1, 1, 11)
    out = tiled_scale(x, tile_mean, (1, 4), 2, 1.0, 1)
    # tiles [0:4] [2:6] [4:8] [6:10] [8:11] have means 1.5 3.5 5.5 7.5 9; masks
    # (.5 1 1 .5) and, for the cut last tile, (.5 1 .5)
    expected = [
        1.5,
        1.5,
        (1.5 + 3.5 * 0.5) / 1.5,
        (1.5 * 0.5 + 3.5) / 1.5,
        (3.5 + 5.5 * 0.5) / 1.5,
        (3.5 * 0.5 + 5.5) / 1.5,
        (5.5 + 7.5 * 0.5) / 1.5,
        (5.5 * 0.5 + 7.5) / 1.5,
        (7.5 + 9 * 0.5) / 1.5,
        (7.5 * 0.5 + 9) / 1.5,
        9.0,
    ]
    assert out.flatten().tolist() == pytest.approx(expected, abs=1e-6)


def test_upscaling_tiles_land_at_scaled_positions():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 7, 9)

    def upscale(tile):
        return torch.nn.functional.interpolate(tile, scale_factor=2, mode="nearest")

    out = tiled_scale(x, upscale, (4, 4), 1, 2.0, 3)
    assert out.shape == (2, 3, 14, 18)
    assert torch.allclose(out, upscale(x), atol=1e-6)  # equivariant fn: tiling is invisible


def test_an_input_that_fits_is_one_call_per_item():
    calls = []

    def fn(tile):
        calls.append(tuple(tile.shape))
        return tile * 2

    x = torch.rand(2, 4, 3, 3)
    assert torch.equal(tiled_scale(x, fn, (4, 4), 1, 1.0, 4), x * 2)
    assert calls == [(1, 4, 3, 3), (1, 4, 3, 3)]


def test_three_tilings_run_in_comfyui_order_and_average():
    from loom_sd15.vae import three_tilings

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
