"""Built-in image nodes, run through the real registry."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from loom_builtin_harness import builtin_registry, execute, make_ctx, run_one

from loom.nodes.object_info import to_json


@pytest.fixture
def ctx(tmp_path):
    return make_ctx(tmp_path)


def ramp(batch: int, height: int, width: int, channels: int = 3) -> torch.Tensor:
    count = batch * height * width * channels
    return (torch.arange(count, dtype=torch.float32) / count).reshape(
        batch, height, width, channels
    )


def test_image_invert_is_exact(ctx):
    image = ramp(2, 3, 4)
    assert torch.equal(run_one("ImageInvert", ctx, image=image), 1.0 - image)


def test_empty_image_fills_the_color(ctx):
    out = run_one("EmptyImage", ctx, width=5, height=3, batch_size=2, color=0xFF8000)
    assert out.shape == (2, 3, 5, 3)
    assert torch.equal(out[0, 0, 0], torch.tensor([1.0, 128 / 255, 0.0]))
    assert torch.equal(out, out[:1, :1, :1].expand(2, 3, 5, 3))


def test_image_scale_center_crop_takes_the_middle(ctx):
    image = ramp(1, 4, 8)
    out = run_one(
        "ImageScale",
        ctx,
        image=image,
        upscale_method="nearest-exact",
        width=4,
        height=4,
        crop="center",
    )
    assert out.shape == (1, 4, 4, 3)
    assert torch.equal(out, image[:, :, 2:6, :])


def test_image_scale_zero_side_keeps_aspect(ctx):
    image = ramp(1, 4, 8)
    out = run_one(
        "ImageScale",
        ctx,
        image=image,
        upscale_method="bilinear",
        width=0,
        height=8,
        crop="disabled",
    )
    assert out.shape == (1, 8, 16, 3)
    same = run_one(
        "ImageScale",
        ctx,
        image=image,
        upscale_method="bilinear",
        width=0,
        height=0,
        crop="disabled",
    )
    assert same is image


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"])
def test_image_scale_by_every_method(ctx, method):
    out = run_one("ImageScaleBy", ctx, image=ramp(2, 4, 6), upscale_method=method, scale_by=1.5)
    assert out.shape == (2, 6, 9, 3)
    assert out.dtype == torch.float32


def test_lanczos_identity_size_keeps_8bit_values(ctx):
    image = torch.randint(0, 256, (1, 5, 7, 3)).float() / 255
    out = run_one("ImageScaleBy", ctx, image=image, upscale_method="lanczos", scale_by=1.0)
    assert torch.allclose(out, image, atol=1e-6)


def test_scale_to_total_pixels_rounds_to_resolution_steps(ctx):
    out = run_one(
        "ImageScaleToTotalPixels",
        ctx,
        image=ramp(1, 10, 20),
        upscale_method="area",
        megapixels=0.01,
        resolution_steps=8,
    )
    # sqrt(0.01 * 1024 * 1024 / 200) = 7.24: 144.8 -> 144 and 72.4 -> 72 (multiples of 8)
    assert out.shape == (1, 72, 144, 3)


def test_image_batch_resizes_the_second_image(ctx):
    out = run_one("ImageBatch", ctx, image1=ramp(1, 4, 4), image2=ramp(2, 8, 8))
    assert out.shape == (3, 4, 4, 3)


@pytest.mark.parametrize("rgba_first", [True, False])
def test_image_batch_gives_an_rgb_image_an_opaque_alpha_to_meet_an_rgba_one(ctx, rgba_first):
    rgb, rgba = ramp(1, 4, 4), ramp(1, 4, 4, channels=4)
    image1, image2 = (rgba, rgb) if rgba_first else (rgb, rgba)
    out = run_one("ImageBatch", ctx, image1=image1, image2=image2)
    assert out.shape == (2, 4, 4, 4)
    padded = out[1] if rgba_first else out[0]
    assert torch.equal(padded[..., :3], rgb[0]) and torch.all(padded[..., 3] == 1.0)
    assert torch.equal(out[0] if rgba_first else out[1], rgba[0])


def test_object_info_image_batch_is_deprecated_as_in_comfyui():
    registry = builtin_registry()
    info = to_json(registry.get_node("ImageBatch"), registry)
    assert info["deprecated"] is True and info["display_name"] == "Batch Images"


def test_image_crop_clamps_the_origin(ctx):
    image = ramp(1, 6, 6)
    out = run_one("ImageCrop", ctx, image=image, width=3, height=2, x=100, y=1)
    assert torch.equal(out, image[:, 1:3, 5:, :])


def test_pad_for_outpaint_pads_grey_and_feathers_the_mask(ctx):
    image = ramp(1, 10, 10)
    padded, mask = execute(
        "ImagePadForOutpaint", ctx, image=image, left=4, top=0, right=0, bottom=0, feathering=2
    ).values
    assert padded.shape == (1, 10, 14, 3) and mask.shape == (10, 14)
    assert torch.all(padded[:, :, :4] == 0.5)
    assert torch.equal(padded[:, :, 4:], image)
    assert torch.all(mask[:, :4] == 1.0)
    # Only the left edge was padded: column j of the image is j pixels from it.
    assert torch.all(mask[:, 4] == 1.0) and torch.all(mask[:, 5] == 0.25)
    assert torch.all(mask[:, 6:] == 0.0)


def test_pad_without_room_to_feather_gives_a_hard_mask(ctx):
    _, mask = execute(
        "ImagePadForOutpaint",
        ctx,
        image=ramp(1, 4, 4),
        left=0,
        top=2,
        right=0,
        bottom=0,
        feathering=40,
    ).values
    assert torch.equal(mask[:2], torch.ones(2, 4)) and torch.equal(mask[2:], torch.zeros(4, 4))


def test_object_info_empty_image_matches_comfyui():
    registry = builtin_registry()
    info = to_json(registry.get_node("EmptyImage"), registry)
    assert info["input"] == {
        "required": {
            "width": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}],
            "height": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}],
            "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
            "color": [
                "INT",
                {"default": 0, "min": 0, "max": 16777215, "step": 1, "display": "color"},
            ],
        }
    }
    assert info["input_order"] == {"required": ["width", "height", "batch_size", "color"]}
    assert info["output"] == ["IMAGE"] and info["output_name"] == ["IMAGE"]
    assert info["category"] == "image" and info["python_module"] == "nodes"
    assert info["display_name"] == "EmptyImage" and info["output_node"] is False


def test_object_info_image_scale_and_pad():
    registry = builtin_registry()
    scale = to_json(registry.get_node("ImageScale"), registry)
    assert list(scale["input"]["required"]) == [
        "image",
        "upscale_method",
        "width",
        "height",
        "crop",
    ]
    assert scale["input"]["required"]["upscale_method"][0] == [
        "nearest-exact",
        "bilinear",
        "area",
        "bicubic",
        "lanczos",
    ]
    assert scale["input"]["required"]["crop"][0] == ["disabled", "center"]
    assert scale["display_name"] == "Upscale Image" and scale["category"] == "image/upscaling"
    pad = to_json(registry.get_node("ImagePadForOutpaint"), registry)
    assert pad["output"] == ["IMAGE", "MASK"] and pad["output_name"] == ["IMAGE", "MASK"]
    total = to_json(registry.get_node("ImageScaleToTotalPixels"), registry)
    assert total["input_order"]["required"] == [
        "image",
        "upscale_method",
        "megapixels",
        "resolution_steps",
    ]
    assert total["python_module"] == "comfy_extras.nodes_post_processing"


def test_builtin_node_modules_do_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "import loom.nodes.builtin.image, loom.nodes.builtin.image_io, loom.nodes.builtin.latent\n"
        "import loom.nodes.builtin.mask, loom.nodes.builtin.save_paths\n"
        "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
