"""GetImageSize, RepeatImageBatch, ImageAddNoise, ResizeAndPadImage and ImageColorToMask,
against hand-computed tensors and ComfyUI 0.8's /object_info entries."""

from __future__ import annotations

import pytest
import torch
from loom_builtin_harness import execute, make_ctx, object_info_of, run_one


@pytest.fixture
def ctx(tmp_path):
    return make_ctx(tmp_path)


def test_get_image_size_reads_width_height_and_batch(ctx):
    out = execute("GetImageSize", ctx, image=torch.zeros(3, 5, 7, 3))
    assert tuple(out.values) == (7, 5, 3)
    info = object_info_of("GetImageSize")
    assert info["output"] == ["INT", "INT", "INT"]
    assert info["output_name"] == ["width", "height", "batch_size"]
    assert info["input"]["hidden"] == {"unique_id": ["UNIQUE_ID"]}
    assert info["display_name"] == "Get Image Size"


def test_repeat_image_batch_tiles_the_whole_batch(ctx):
    image = torch.arange(2.0).reshape(2, 1, 1, 1).expand(2, 1, 1, 3)
    out = run_one("RepeatImageBatch", ctx, image=image, amount=3)
    assert out[:, 0, 0, 0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert object_info_of("RepeatImageBatch")["input"]["required"]["amount"] == [
        "INT",
        {"default": 1, "min": 1, "max": 4096},
    ]


def test_image_add_noise_adds_seeded_normal_noise_and_clips(ctx):
    image = torch.full((1, 4, 4, 3), 0.5)
    out = run_one("ImageAddNoise", ctx, image=image, seed=42, strength=0.25)
    expected = torch.clip(
        0.5 + 0.25 * torch.randn((1, 4, 4, 3), generator=torch.manual_seed(42)), 0, 1
    )
    assert torch.equal(out, expected)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out, run_one("ImageAddNoise", ctx, image=image, seed=43, strength=0.25))
    top = run_one("ImageAddNoise", ctx, image=image, seed=2**64 - 1, strength=0.25)
    noise = torch.randn((1, 4, 4, 3), generator=torch.manual_seed(2**64 - 1))
    assert torch.equal(top, torch.clip(0.5 + 0.25 * noise, 0, 1))  # the widest seed works
    seed = object_info_of("ImageAddNoise")["input"]["required"]["seed"][1]
    assert seed["max"] == 0xFFFFFFFFFFFFFFFF and seed["control_after_generate"] is True


def test_resize_and_pad_fits_and_centres_on_the_padding_colour(ctx):
    image = torch.zeros(1, 2, 4, 3)  # 4 wide, 2 high -> 8x4 inside 8x8
    out = run_one(
        "ResizeAndPadImage",
        ctx,
        image=image,
        target_width=8,
        target_height=8,
        padding_color="white",
        interpolation="nearest-exact",
    )
    assert out.shape == (1, 8, 8, 3)
    expected = torch.ones(1, 8, 8, 3)
    expected[:, 2:6] = 0.0
    assert torch.equal(out, expected)
    black = run_one(
        "ResizeAndPadImage",
        ctx,
        image=torch.ones(1, 4, 2, 3),
        target_width=3,
        target_height=4,
        padding_color="black",
        interpolation="bilinear",
    )
    # scale min(3/2, 4/4) = 1: the 2-wide image sits at column 0 (offset (3 - 2) // 2)
    assert torch.equal(black[0, :, :, 0], torch.tensor([[1.0, 1.0, 0.0]] * 4))


def test_image_color_to_mask_matches_the_packed_rgb_value(ctx):
    image = torch.zeros(1, 1, 3, 3)
    image[0, 0, 0] = torch.tensor([1.0, 0.0, 0.0])  # 0xFF0000
    image[0, 0, 1] = torch.tensor([1.0, 128 / 255, 1 / 255])  # 0xFF8001
    image[0, 0, 2] = torch.tensor([1.2, 128.4 / 255, 0.6 / 255])  # clamps and rounds to 0xFF8001
    mask = run_one("ImageColorToMask", ctx, image=image, color=0xFF8001)
    assert mask.shape == (1, 1, 3) and mask.tolist() == [[[0.0, 1.0, 1.0]]]
    assert run_one("ImageColorToMask", ctx, image=image, color=0xFF0000).tolist() == [
        [[1.0, 0.0, 0.0]]
    ]
    assert object_info_of("ImageColorToMask")["input"]["required"]["color"] == [
        "INT",
        {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "number"},
    ]
