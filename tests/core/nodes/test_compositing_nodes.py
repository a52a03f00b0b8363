"""Masked compositing, mask arithmetic and RGBA split/join, against hand-computed tensors."""

from __future__ import annotations

import pytest
import torch
from loom_builtin_harness import execute, make_ctx, object_info_of, run_one
from PIL import Image as PILImage


@pytest.fixture
def ctx(tmp_path):
    return make_ctx(tmp_path)


def test_latent_composite_masked_pastes_at_pixel_offset_divided_by_8(ctx):
    destination = {"samples": torch.zeros(1, 4, 4, 6), "batch_index": [3]}
    source = {"samples": torch.ones(1, 4, 2, 2)}
    out = run_one(
        "LatentCompositeMasked",
        ctx,
        destination=destination,
        source=source,
        x=16,
        y=8,
        resize_source=False,
    )
    expected = torch.zeros(1, 4, 4, 6)
    expected[:, :, 1:3, 2:4] = 1.0
    assert torch.equal(out["samples"], expected)
    assert out["batch_index"] == [3]  # other keys travel along
    assert torch.equal(destination["samples"], torch.zeros(1, 4, 4, 6))  # input untouched


def test_latent_composite_masked_clips_at_the_edge_and_blends_by_mask(ctx):
    destination = {"samples": torch.zeros(2, 1, 3, 3)}
    source = {"samples": torch.full((1, 1, 2, 2), 4.0)}  # batch 1 repeats to 2
    mask = torch.tensor([[[0.25, 0.25], [0.25, 0.25]]])
    out = run_one(
        "LatentCompositeMasked",
        ctx,
        destination=destination,
        source=source,
        x=16,
        y=16,
        resize_source=False,
        mask=mask,
    )["samples"]
    expected = torch.zeros(2, 1, 3, 3)
    expected[:, :, 2, 2] = 1.0  # 0.25 * 4 + 0.75 * 0, only the top-left source pixel fits
    assert torch.equal(out, expected)


def test_latent_composite_masked_resize_source_covers_the_destination(ctx):
    out = run_one(
        "LatentCompositeMasked",
        ctx,
        destination={"samples": torch.zeros(1, 2, 4, 4)},
        source={"samples": torch.full((1, 2, 2, 2), 0.5)},
        x=0,
        y=0,
        resize_source=True,
    )["samples"]
    assert torch.allclose(out, torch.full((1, 2, 4, 4), 0.5))


def test_image_composite_masked_pastes_pixels_and_adds_alpha_to_rgb_source(ctx):
    destination = torch.zeros(1, 4, 4, 4)  # RGBA, transparent black
    source = torch.ones(1, 2, 2, 3)  # RGB white
    out = run_one(
        "ImageCompositeMasked",
        ctx,
        destination=destination,
        source=source,
        x=1,
        y=2,
        resize_source=False,
    )
    expected = torch.zeros(1, 4, 4, 4)
    expected[:, 2:4, 1:3, :] = 1.0  # white, opaque
    assert torch.equal(out, expected)
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    masked = run_one(
        "ImageCompositeMasked",
        ctx,
        destination=torch.zeros(1, 2, 2, 3),
        source=torch.ones(1, 2, 2, 3),
        x=0,
        y=0,
        resize_source=False,
        mask=mask,
    )
    assert torch.equal(masked[0, :, :, 0], mask)


def test_mask_composite_operations(ctx):
    destination = torch.tensor([[[0.2, 0.6, 0.9], [0.4, 0.0, 1.0]]])
    source = torch.tensor([[[0.5, 0.7]]])

    def combine(operation, x=1, y=0):
        return run_one(
            "MaskComposite",
            ctx,
            destination=destination,
            source=source,
            x=x,
            y=y,
            operation=operation,
        )

    assert torch.allclose(combine("multiply"), torch.tensor([[[0.2, 0.3, 0.63], [0.4, 0.0, 1.0]]]))
    assert torch.allclose(combine("add"), torch.tensor([[[0.2, 1.0, 1.0], [0.4, 0.0, 1.0]]]))
    assert torch.allclose(combine("subtract"), torch.tensor([[[0.2, 0.1, 0.2], [0.4, 0.0, 1.0]]]))
    # logical ops round first: dst [1, 1] vs src [0 (0.5 rounds to even), 1]
    assert torch.equal(combine("and")[0, 0], torch.tensor([0.2, 0.0, 1.0]))
    assert torch.equal(combine("or")[0, 0], torch.tensor([0.2, 1.0, 1.0]))
    assert torch.equal(combine("xor")[0, 0], torch.tensor([0.2, 1.0, 0.0]))
    # a source reaching past the right edge is cut off
    assert torch.allclose(combine("add", x=2, y=1)[0, 1], torch.tensor([0.4, 0.0, 1.0]))
    assert torch.allclose(combine("add", x=2, y=0)[0, 0], torch.tensor([0.2, 0.6, 1.0]))
    wide = torch.ones(1, 1, 4)
    outside = run_one(
        "MaskComposite", ctx, destination=destination, source=wide, x=5, y=0, operation="add"
    )
    assert torch.equal(outside, destination)


def test_crop_and_threshold_mask(ctx):
    mask = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 12
    crop = run_one("CropMask", ctx, mask=mask, x=1, y=1, width=2, height=5)
    assert crop.shape == (1, 2, 2) and torch.equal(crop[0], mask[1:3, 1:3])
    threshold = run_one("ThresholdMask", ctx, mask=mask, value=0.5)
    assert torch.equal(threshold, (mask > 0.5).float())
    assert threshold.sum() == 5  # 7/12 .. 11/12; exactly 0.5 stays 0


def test_split_and_join_image_with_alpha_round_trip(ctx):
    rgba = torch.rand(2, 3, 5, 4)
    split = execute("SplitImageWithAlpha", ctx, image=rgba).values
    image, mask = split
    assert torch.equal(image, rgba[..., :3])
    assert torch.allclose(mask, 1.0 - rgba[..., 3])  # ComfyUI's masks are 1 - alpha
    joined = run_one("JoinImageWithAlpha", ctx, image=image, alpha=mask)
    assert torch.allclose(joined, rgba)
    _, opaque = execute("SplitImageWithAlpha", ctx, image=rgba[..., :3]).values
    assert torch.equal(opaque, torch.zeros(2, 3, 5))


def test_join_image_with_alpha_resizes_the_mask_and_uses_the_shorter_batch(ctx):
    image = torch.rand(3, 4, 4, 3)
    alpha = torch.zeros(2, 2, 2)
    joined = run_one("JoinImageWithAlpha", ctx, image=image, alpha=alpha)
    assert joined.shape == (2, 4, 4, 4)
    assert torch.equal(joined[..., 3], torch.ones(2, 4, 4))


def test_mask_preview_writes_a_grey_png_to_temp(tmp_path):
    ctx = make_ctx(tmp_path, node_id="7")
    mask = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    output = execute("MaskPreview", ctx, mask=mask)
    (entry,) = output.ui["images"]
    assert output.ui["animated"] == [False]  # ComfyUI's PreviewMask UI shape
    assert entry["type"] == "temp" and entry["filename"].startswith("ComfyUI_temp_")
    picture = PILImage.open(tmp_path / "temp" / entry["subfolder"] / entry["filename"])
    assert picture.mode == "RGB" and picture.size == (2, 2)
    assert picture.getpixel((1, 0)) == (255, 255, 255) and picture.getpixel((0, 0)) == (0, 0, 0)


def test_object_info_matches_comfyui_schemas():
    composite = object_info_of("LatentCompositeMasked")
    assert composite["input"] == {
        "required": {
            "destination": ["LATENT", {}],
            "source": ["LATENT", {}],
            "x": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}],
            "y": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}],
            "resize_source": ["BOOLEAN", {"default": False}],
        },
        "optional": {"mask": ["MASK", {}]},
    }
    assert composite["category"] == "latent" and composite["output"] == ["LATENT"]
    image = object_info_of("ImageCompositeMasked")
    assert image["input_order"] == {
        "required": ["destination", "source", "x", "y", "resize_source"],
        "optional": ["mask"],
    }
    assert image["input"]["required"]["x"][1]["step"] == 1 and image["category"] == "image"
    mask_composite = object_info_of("MaskComposite")
    assert mask_composite["input"]["required"]["operation"] == [
        "COMBO",
        {"multiselect": False, "options": ["multiply", "add", "subtract", "and", "or", "xor"]},
    ]
    crop = object_info_of("CropMask")
    assert crop["input_order"]["required"] == ["mask", "x", "y", "width", "height"]
    assert crop["input"]["required"]["width"] == [
        "INT",
        {"default": 512, "min": 1, "max": 16384, "step": 1},
    ]
    threshold = object_info_of("ThresholdMask")
    assert threshold["input"]["required"]["value"] == [
        "FLOAT",
        {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01},
    ]
    preview = object_info_of("MaskPreview")
    assert preview["output_node"] is True and preview["display_name"] == "Preview Mask"
    assert preview["input"]["hidden"] == {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}
    split = object_info_of("SplitImageWithAlpha")
    assert split["output"] == ["IMAGE", "MASK"] and split["category"] == "mask/compositing"
    assert split["python_module"] == "comfy_extras.nodes_compositing"
    join = object_info_of("JoinImageWithAlpha")
    assert join["input_order"]["required"] == ["image", "alpha"]
    assert join["display_name"] == "Join Image with Alpha"
    assert threshold["python_module"] == "comfy_extras.nodes_mask"
