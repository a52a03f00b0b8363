"""Tile placement and blending: ComfyUI's ``tiled_scale`` rules, hand-computed."""

from __future__ import annotations

import pytest
import torch
from loom_upscale.tiling import Tiling, tiled_scale


def nearest(scale: int):
    def fn(piece: torch.Tensor) -> torch.Tensor:
        return piece.repeat_interleave(scale, 2).repeat_interleave(scale, 3)

    return fn


def test_tiles_start_every_tile_minus_overlap_and_the_last_is_cut_short_not_shifted():
    tiling = Tiling(512, 32, 4.0)
    assert tiling.starts(1100) == [0, 480, 960]
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
    assert tiling.starts(512) == [0] and tiling.steps(512, 513) == 2


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


def test_overlap_must_be_smaller_than_the_tile():
    with pytest.raises(ValueError, match="overlap"):
        Tiling(32, 32, 2.0)
