"""Built-in mask nodes, run through the real registry."""

from __future__ import annotations

import pytest
import torch
from loom_builtin_harness import builtin_registry, make_ctx, run_one

from loom.nodes.object_info import to_json


@pytest.fixture
def ctx(tmp_path):
    return make_ctx(tmp_path)


def test_solid_and_invert_mask(ctx):
    solid = run_one("SolidMask", ctx, value=0.25, width=3, height=2)
    assert solid.shape == (1, 2, 3) and torch.all(solid == 0.25)
    assert torch.all(run_one("InvertMask", ctx, mask=solid) == 0.75)


def test_mask_image_conversions(ctx):
    mask = torch.rand(2, 3, 4)
    image = run_one("MaskToImage", ctx, mask=mask)
    assert image.shape == (2, 3, 4, 3) and torch.equal(image[..., 1], mask)
    assert run_one("MaskToImage", ctx, mask=mask[0]).shape == (1, 3, 4, 3)
    rgba = torch.rand(2, 3, 4, 4)
    assert torch.equal(run_one("ImageToMask", ctx, image=rgba, channel="green"), rgba[..., 1])
    assert torch.equal(run_one("ImageToMask", ctx, image=rgba, channel="alpha"), rgba[..., 3])


def dot(size: int = 7) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    mask[0, size // 2, size // 2] = 1.0
    return mask


def grid(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[float(c == "#") for c in row] for row in rows])[None]


def test_grow_mask_tapered_is_a_diamond(ctx):
    out = run_one("GrowMask", ctx, mask=dot(), expand=2, tapered_corners=True)
    assert torch.equal(
        out,
        grid(
            [
                ".......",
                "...#...",
                "..###..",
                ".#####.",
                "..###..",
                "...#...",
                ".......",
            ]
        ),
    )


def test_grow_mask_square_and_shrink(ctx):
    square = run_one("GrowMask", ctx, mask=dot(), expand=2, tapered_corners=False)
    assert torch.equal(
        square, grid([".......", ".#####.", ".#####.", ".#####.", ".#####.", ".#####.", "......."])
    )
    shrunk = run_one("GrowMask", ctx, mask=square, expand=-1, tapered_corners=True)
    assert torch.equal(
        shrunk, grid([".......", ".......", "..###..", "..###..", "..###..", ".......", "......."])
    )
    assert torch.equal(
        run_one("GrowMask", ctx, mask=square, expand=0, tapered_corners=True), square
    )


def test_grow_mask_edges_repeat_border_pixels(ctx):
    full = torch.ones(1, 3, 3)
    assert torch.equal(run_one("GrowMask", ctx, mask=full, expand=-1, tapered_corners=False), full)
    grey = torch.tensor([[[0.2, 0.6], [0.4, 0.0]]])
    grown = run_one("GrowMask", ctx, mask=grey[0], expand=1, tapered_corners=True)
    assert torch.allclose(grown, torch.tensor([[[0.6, 0.6], [0.4, 0.6]]]))


def test_feather_mask_ramps(ctx):
    ones = torch.ones(1, 2, 4)
    left = run_one("FeatherMask", ctx, mask=ones, left=2, top=0, right=0, bottom=0)
    assert torch.allclose(left[0, 0], torch.tensor([0.5, 1.0, 1.0, 1.0]))
    # ComfyUI indexes the right ramp with -i, so its first step lands on column 0.
    right = run_one("FeatherMask", ctx, mask=ones, left=0, top=0, right=4, bottom=0)
    assert torch.allclose(right[0, 0], torch.tensor([0.25, 1.0, 0.75, 0.5]))
    top = run_one("FeatherMask", ctx, mask=torch.ones(1, 4, 1), left=0, top=4, right=0, bottom=0)
    assert torch.allclose(top[0, :, 0], torch.tensor([0.25, 0.5, 0.75, 1.0]))
    assert torch.equal(ones, torch.ones(1, 2, 4))


def test_object_info_mask_nodes():
    registry = builtin_registry()
    grow = to_json(registry.get_node("GrowMask"), registry)
    assert grow["input"]["required"] == {
        "mask": ["MASK", {}],
        "expand": ["INT", {"default": 0, "min": -16384, "max": 16384, "step": 1}],
        "tapered_corners": ["BOOLEAN", {"default": True}],
    }
    assert grow["category"] == "mask" and grow["python_module"] == "comfy_extras.nodes_mask"
    to_mask = to_json(registry.get_node("ImageToMask"), registry)
    assert to_mask["display_name"] == "Convert Image to Mask"
    assert to_mask["input"]["required"]["channel"] == [
        "COMBO",
        {"multiselect": False, "options": ["red", "green", "blue", "alpha"]},
    ]
    assert to_mask["output"] == ["MASK"]
