"""Image post-processing and transforms, against hand-computed tensors."""

from __future__ import annotations

import math

import pytest
import torch
from loom_builtin_harness import make_ctx, object_info_of, run_one

from loom.nodes.builtin.image_ops import bayer_matrix


@pytest.fixture
def ctx(tmp_path):
    return make_ctx(tmp_path)


def pixel(value: float) -> torch.Tensor:
    return torch.full((1, 1, 1, 3), value)


@pytest.mark.parametrize(
    ("mode", "a", "b", "expected"),
    [
        ("normal", 0.2, 0.6, 0.6),
        ("multiply", 0.2, 0.6, 0.12),
        ("screen", 0.2, 0.6, 1 - 0.8 * 0.4),
        ("overlay", 0.2, 0.6, 2 * 0.2 * 0.6),
        ("overlay", 0.8, 0.6, 1 - 2 * 0.2 * 0.4),
        ("soft_light", 0.2, 0.4, 0.2 - 0.2 * 0.2 * 0.8),
        ("soft_light", 0.16, 0.75, 0.16 + 0.5 * (((16 * 0.16 - 12) * 0.16 + 4) * 0.16 - 0.16)),
        ("soft_light", 0.64, 0.75, 0.64 + 0.5 * (0.8 - 0.64)),
        ("difference", 0.7, 0.2, 0.5),
        ("difference", 0.2, 0.7, 0.0),  # clamped
    ],
)
def test_image_blend_modes_at_full_factor(ctx, mode, a, b, expected):
    out = run_one(
        "ImageBlend", ctx, image1=pixel(a), image2=pixel(b), blend_factor=1.0, blend_mode=mode
    )
    assert torch.allclose(out, pixel(expected), atol=1e-6)


def test_image_blend_factor_mixes_and_resizes_image2(ctx):
    out = run_one(
        "ImageBlend",
        ctx,
        image1=torch.zeros(1, 4, 4, 3),
        image2=torch.ones(1, 2, 2, 3),
        blend_factor=0.25,
        blend_mode="normal",
    )
    assert out.shape == (1, 4, 4, 3) and torch.allclose(out, torch.full((1, 4, 4, 3), 0.25))


def impulse(size: int = 5, value: float = 1.0) -> torch.Tensor:
    image = torch.zeros(1, size, size, 3)
    image[0, size // 2, size // 2, :] = value
    return image


def test_image_blur_spreads_an_impulse_by_the_gaussian_on_minus_one_to_one():
    ctx = None
    out = run_one("ImageBlur", ctx, image=impulse(), blur_radius=1, sigma=1.0)
    # kernel on the grid {-1, 0, 1}^2: exp(-d^2 / 2), normalised
    total = 1 + 4 * math.exp(-0.5) + 4 * math.exp(-1)
    assert out[0, 2, 2, 0].item() == pytest.approx(1 / total, rel=1e-6)
    assert out[0, 1, 2, 1].item() == pytest.approx(math.exp(-0.5) / total, rel=1e-6)
    assert out[0, 1, 1, 2].item() == pytest.approx(math.exp(-1) / total, rel=1e-6)
    assert out[0, 0].abs().max() == 0  # radius 1 reaches one pixel only
    flat = torch.full((2, 4, 6, 3), 0.3)
    assert torch.allclose(run_one("ImageBlur", ctx, image=flat, blur_radius=3, sigma=2.0), flat)


def test_image_sharpen_kernel_sums_to_one_and_boosts_the_centre():
    ctx = None
    flat = torch.full((1, 5, 5, 3), 0.4)
    assert torch.allclose(
        run_one("ImageSharpen", ctx, image=flat, sharpen_radius=2, sigma=1.0, alpha=1.0), flat
    )
    out = run_one(
        "ImageSharpen", ctx, image=impulse(value=0.25), sharpen_radius=1, sigma=1.0, alpha=0.1
    )
    centre_weight = 1 / (1 + 4 * math.exp(-0.5) + 4 * math.exp(-1))
    # centre tap = 1 + 10*alpha*(1 - g_centre) with alpha 0.1; neighbours negative -> clamped to 0
    assert out[0, 2, 2, 0].item() == pytest.approx(0.25 * (2 - centre_weight), rel=1e-6)
    assert out[0, 1, 2, 0].item() == 0.0


def test_bayer_matrix_is_the_recursive_ordered_dither():
    assert torch.equal(
        bayer_matrix(2), torch.tensor([[-1.5, 0.5], [1.5, -0.5]], dtype=torch.float64) / 4
    )
    four = bayer_matrix(4)
    assert four.shape == (4, 4)
    # level 2: 16 * M2 tiled with the offsets -1.5, +0.5 / +1.5, -0.5, over 16
    assert four[0].tolist() == [-7.5 / 16, 0.5 / 16, -5.5 / 16, 2.5 / 16]
    assert len(set(four.flatten().tolist())) == 16 and four.sum().item() == 0.0


def test_image_quantize_keeps_a_two_colour_image_and_reduces_to_one_colour(ctx):
    image = torch.zeros(1, 4, 4, 3)
    image[:, :, 2:, 0] = 1.0  # black | red halves
    for dither in ("none", "floyd-steinberg", "bayer-4"):
        assert torch.equal(
            run_one("ImageQuantize", ctx, image=image, colors=2, dither=dither), image
        ), dither
    one = run_one("ImageQuantize", ctx, image=image, colors=1, dither="none")
    assert torch.equal(one, one[:, :1, :1].expand_as(one))


def test_image_flip_and_rotate(ctx):
    image = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).reshape(1, 2, 3, 1)
    vertical = run_one("ImageFlip", ctx, image=image, flip_method="x-axis: vertically")
    assert vertical[0, :, :, 0].tolist() == [[4, 5, 6], [1, 2, 3]]
    horizontal = run_one("ImageFlip", ctx, image=image, flip_method="y-axis: horizontally")
    assert horizontal[0, :, :, 0].tolist() == [[3, 2, 1], [6, 5, 4]]
    quarter = run_one("ImageRotate", ctx, image=image, rotation="90 degrees")
    assert quarter[0, :, :, 0].tolist() == [[4, 1], [5, 2], [6, 3]]  # clockwise
    half = run_one("ImageRotate", ctx, image=image, rotation="180 degrees")
    assert half[0, :, :, 0].tolist() == [[6, 5, 4], [3, 2, 1]]
    three = run_one("ImageRotate", ctx, image=image, rotation="270 degrees")
    assert three[0, :, :, 0].tolist() == [[3, 6], [2, 5], [1, 4]]
    assert torch.equal(run_one("ImageRotate", ctx, image=image, rotation="none"), image)


@pytest.mark.parametrize(
    ("height", "width", "expected"), [(4, 8, (2, 4)), (8, 4, (4, 2)), (3, 3, (4, 4))]
)
def test_image_scale_to_max_dimension(ctx, height, width, expected):
    out = run_one(
        "ImageScaleToMaxDimension",
        ctx,
        image=torch.rand(2, height, width, 3),
        upscale_method="area",
        largest_size=4,
    )
    assert out.shape == (2, *expected, 3)


def test_image_scale_to_max_dimension_area_averages(ctx):
    image = torch.arange(8, dtype=torch.float32).reshape(1, 2, 4, 1).expand(1, 2, 4, 3)
    out = run_one(
        "ImageScaleToMaxDimension", ctx, image=image, upscale_method="area", largest_size=2
    )
    assert out[0, :, :, 0].tolist() == [[2.5, 4.5]]


def test_image_from_batch_clamps_start_and_length(ctx):
    batch = torch.arange(5, dtype=torch.float32).reshape(5, 1, 1, 1)
    assert run_one(
        "ImageFromBatch", ctx, image=batch, batch_index=1, length=2
    ).flatten().tolist() == [1, 2]
    assert run_one(
        "ImageFromBatch", ctx, image=batch, batch_index=9, length=3
    ).flatten().tolist() == [4]
    assert run_one(
        "ImageFromBatch", ctx, image=batch, batch_index=3, length=9
    ).flatten().tolist() == [3, 4]


def test_object_info_matches_comfyui_schemas():
    blend = object_info_of("ImageBlend")
    assert blend["input"]["required"] == {
        "image1": ["IMAGE", {}],
        "image2": ["IMAGE", {}],
        "blend_factor": ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}],
        "blend_mode": [
            "COMBO",
            {
                "multiselect": False,
                "options": ["normal", "multiply", "screen", "overlay", "soft_light", "difference"],
            },
        ],
    }
    assert blend["category"] == "image/postprocessing"
    assert blend["python_module"] == "comfy_extras.nodes_post_processing"
    assert object_info_of("ImageBlur")["input"]["required"]["blur_radius"] == [
        "INT",
        {"default": 1, "min": 1, "max": 31, "step": 1},
    ]
    sharpen = object_info_of("ImageSharpen")
    assert sharpen["input_order"]["required"] == ["image", "sharpen_radius", "sigma", "alpha"]
    assert sharpen["input"]["required"]["alpha"] == [
        "FLOAT",
        {"default": 1.0, "min": 0.0, "max": 5.0, "step": 0.01},
    ]
    assert object_info_of("ImageQuantize")["input"]["required"]["dither"] == [
        "COMBO",
        {
            "multiselect": False,
            "options": ["none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"],
        },
    ]
    flip = object_info_of("ImageFlip")
    assert flip["category"] == "image/transform"
    assert flip["input"]["required"]["flip_method"] == [
        "COMBO",
        {"multiselect": False, "options": ["x-axis: vertically", "y-axis: horizontally"]},
    ]
    assert object_info_of("ImageRotate")["input"]["required"]["rotation"] == [
        "COMBO",
        {"multiselect": False, "options": ["none", "90 degrees", "180 degrees", "270 degrees"]},
    ]
    scale = object_info_of("ImageScaleToMaxDimension")
    assert scale["input"]["required"]["upscale_method"] == [
        "COMBO",
        {
            "multiselect": False,
            "options": ["area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic"],
        },
    ]
    assert scale["category"] == "image/upscaling"
    from_batch = object_info_of("ImageFromBatch")
    assert from_batch["category"] == "image/batch"
    assert from_batch["input"]["required"]["batch_index"] == [
        "INT",
        {"default": 0, "min": 0, "max": 4095},
    ]
    assert from_batch["python_module"] == "comfy_extras.nodes_images"


def flat(batch: int, height: int, width: int, value: float, channels: int = 3) -> torch.Tensor:
    return torch.full((batch, height, width, channels), value)


def test_image_stitch_pads_centred_and_inserts_even_spacing():
    ctx = None
    out = run_one(
        "ImageStitch",
        ctx,
        image1=flat(1, 2, 3, 0.2),
        image2=flat(1, 5, 1, 0.7),
        direction="right",
        match_image_size=False,
        spacing_width=1,  # rounded up to 2
        spacing_color="white",
    )
    expected = torch.ones(1, 5, 3 + 2 + 1, 3)  # white pad and spacing
    expected[:, 1:3, :3] = 0.2  # 3 rows of padding: 1 above, 2 below
    expected[:, :, 5:] = 0.7
    assert torch.equal(out, expected)
    left = run_one(
        "ImageStitch",
        ctx,
        image1=flat(1, 2, 3, 0.2),
        image2=flat(1, 2, 1, 0.7),
        direction="left",
        match_image_size=False,
        spacing_width=0,
        spacing_color="black",
    )
    assert left[0, 0, :, 0].tolist() == pytest.approx([0.7, 0.2, 0.2, 0.2])


def test_image_stitch_up_pads_width_black_for_colours_and_spaces_in_colour():
    out = run_one(
        "ImageStitch",
        None,
        image1=flat(1, 1, 2, 0.5),
        image2=flat(1, 1, 4, 0.25),
        direction="up",
        match_image_size=False,
        spacing_width=2,
        spacing_color="red",
    )
    assert out.shape == (1, 1 + 2 + 1, 4, 3)
    assert torch.equal(out[0, 0], torch.full((4, 3), 0.25))  # image2 on top
    assert torch.equal(out[0, 1:3], torch.tensor([1.0, 0.0, 0.0]).expand(2, 4, 3))
    assert out[0, 3, :, 0].tolist() == [0.0, 0.5, 0.5, 0.0]  # a colour pads with black


def test_image_stitch_matches_size_repeats_batch_and_adds_alpha():
    image1 = torch.rand(2, 4, 6, 4)
    out = run_one(
        "ImageStitch",
        None,
        image1=image1,
        image2=flat(1, 2, 3, 0.6),
        direction="down",
        match_image_size=True,
        spacing_width=2,
        spacing_color="blue",
    )
    # image2 scaled to image1's width 6, height int(6 / 1.5) = 4; its last item repeated
    assert out.shape == (2, 4 + 2 + 4, 6, 4)
    assert torch.equal(out[:, :4], image1)
    assert torch.equal(out[:, 4:6], torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(2, 2, 6, 4))
    assert torch.allclose(out[:, 6:, :, :3], torch.full((2, 4, 6, 3), 0.6), atol=1e-2)
    assert torch.equal(out[:, 6:, :, 3], torch.ones(2, 4, 6))  # alpha added to image2
    sideways = run_one(
        "ImageStitch",
        None,
        image1=flat(1, 4, 2, 0.1),
        image2=flat(1, 2, 3, 0.6),
        direction="right",
        match_image_size=True,
        spacing_width=0,
        spacing_color="white",
    )
    assert sideways.shape == (1, 4, 2 + 6, 3)  # image2 to height 4, width int(4 * 1.5)


def test_image_stitch_without_image2_returns_image1():
    image1 = torch.rand(1, 3, 3, 3)
    out = run_one(
        "ImageStitch",
        None,
        image1=image1,
        direction="right",
        match_image_size=True,
        spacing_width=0,
        spacing_color="white",
    )
    assert out is image1
    info = object_info_of("ImageStitch")
    assert info["input"]["optional"] == {"image2": ["IMAGE", {}]}
    assert info["input"]["required"]["spacing_width"] == [
        "INT",
        {"default": 0, "min": 0, "max": 1024, "step": 2},
    ]
