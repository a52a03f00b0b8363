"""Tile placement and blending (loom.tiling, shared by tiled VAE and model upscaling):
ComfyUI's ``tiled_scale`` rule worked by hand: tiles on the regular ``tile - overlap`` grid,
the last one cut at the border (not shifted back), overlaps blended with the feathered mask."""

from __future__ import annotations

import pytest
import torch

from loom.tiling import Tiling, tile_starts, tiled_scale


def test_negative_overlap_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        Tiling(32, -1, 2.0)


def nearest(scale: int):
    def fn(piece: torch.Tensor) -> torch.Tensor:
        return piece.repeat_interleave(scale, 2).repeat_interleave(scale, 3)

    return fn


def test_tiles_start_every_tile_minus_overlap_and_the_last_is_cut_short_not_shifted():
    tiling = Tiling(512, 32, 4.0)
    assert tile_starts(1100, 512, 32) == [0, 480, 960]
    windows = list(tiling.windows(600, 1100))
    # rows: 0 (512 high) and 480 (120 high, cut at the border); columns likewise
    assert [(y, x, h, w) for y, x, h, w in windows] == [
        (0, 0, 512, 512),
        (0, 480, 512, 512),
        (0, 960, 512, 140),
        (480, 0, 120, 512),
        (480, 480, 120, 512),
        (480, 960, 120, 140),
    ]
    assert tiling.steps(600, 1100) == len(windows) == 6
    # an axis that fits one tile has one start; the progress total counts whole elements
    assert tile_starts(512, 512, 32) == [0] and tiling.steps(512, 513) == 2


def test_feather_mask_ramps_linearly_at_every_edge():
    assert Tiling(8, 2, 1.0).feather_mask(1, 6)[0].tolist() == [0.5, 1, 1, 1, 1, 0.5]
    # overlapping ramps multiply (feather 3 on 5 pixels)
    third = Tiling(8, 3, 1.0).feather_mask(5, 1)[:, 0]
    assert torch.allclose(third, torch.tensor([1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3]))
    # feather = round(overlap * scale); no ramp along an axis shorter than the feather
    mask = Tiling(8, 2, 2.0).feather_mask(4, 10)
    assert torch.equal(mask[:, 0], torch.full((4,), 0.25))
    assert torch.allclose(mask[0, :5], torch.tensor([0.25, 0.5, 0.75, 1.0, 1.0]))


def test_tiles_land_where_an_untiled_call_puts_them():
    images = torch.rand(2, 3, 37, 50, generator=torch.Generator().manual_seed(0))
    calls = []

    def fn(piece: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(piece.shape[2:]))
        return nearest(2)(piece)

    out = tiled_scale(images, fn, Tiling(16, 4, 2.0), out_channels=3)
    assert torch.allclose(out, nearest(2)(images), atol=1e-6)
    assert len(calls) == 2 * Tiling(16, 4, 2.0).steps(37, 50)


def test_an_element_that_fits_one_tile_is_scaled_whole():
    images = torch.rand(3, 3, 16, 12)
    calls = []
    ticks = []

    def fn(piece: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(piece.shape))
        return nearest(3)(piece)

    out = tiled_scale(images, fn, Tiling(16, 4, 3.0), 3, on_tile=lambda: ticks.append(1))
    assert calls == [(1, 3, 16, 12)] * 3 and len(ticks) == 3
    assert torch.equal(out, nearest(3)(images))


def tile_mean(tile: torch.Tensor) -> torch.Tensor:
    """Not translation-equivariant: each tile becomes its own mean, so placement shows."""
    return tile.mean(dim=(2, 3), keepdim=True).expand_as(tile).clone()


def test_tile_starts_are_the_regular_grid():
    assert tile_starts(11, 4, 2) == [0, 2, 4, 6, 8]  # last tile 8..10, three pixels
    assert tile_starts(11, 4, 1) == [0, 3, 6, 9]  # last tile 9..10, not moved back to 7
    assert tile_starts(4, 4, 1) == [0]


def test_feather_mask_ramps_each_axis_and_skips_short_ones():
    mask = Tiling(8, 2, 1.0).feather_mask(1, 4)
    assert mask.flatten().tolist() == [0.5, 1.0, 1.0, 0.5]  # height 1 <= 2: left flat
    assert Tiling(8, 2, 1.0).feather_mask(1, 3).flatten().tolist() == [0.5, 1.0, 0.5]
    square = Tiling(8, 1, 1.0).feather_mask(3, 3)
    assert torch.equal(square, torch.ones(3, 3))  # a one-pixel ramp is all ones


def test_tiles_blend_as_comfyui_worked_by_hand():
    x = torch.arange(11, dtype=torch.float32).view(1, 1, 1, 11)
    out = tiled_scale(x, tile_mean, Tiling((1, 4), 2, 1.0), 1)
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

    out = tiled_scale(x, upscale, Tiling((4, 4), 1, 2.0), 3)
    assert out.shape == (2, 3, 14, 18)
    assert torch.allclose(out, upscale(x), atol=1e-6)  # equivariant fn: tiling is invisible


def test_an_input_that_fits_is_one_call_per_item():
    calls = []

    def fn(tile):
        calls.append(tuple(tile.shape))
        return tile * 2

    x = torch.rand(2, 4, 3, 3)
    assert torch.equal(tiled_scale(x, fn, Tiling((4, 4), 1, 1.0), 4), x * 2)
    assert calls == [(1, 4, 3, 3), (1, 4, 3, 3)]
