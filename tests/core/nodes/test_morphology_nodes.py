"""Morphology and the YCbCr split/merge: by hand, and against kornia 0.8 (what ComfyUI 0.8
calls) when it is installed (test-only, ``pip install --no-deps kornia==0.8.2 kornia_rs``)."""

from __future__ import annotations

import pytest
import torch
from loom_builtin_harness import execute, object_info_of, run_one

from loom.nodes.builtin.morphology import OPERATIONS


def dot_image(size: int = 7) -> torch.Tensor:
    image = torch.zeros(1, size, size, 3)
    image[0, size // 2, size // 2] = 1.0
    return image


def test_dilate_grows_a_dot_into_a_square_and_erode_removes_it():
    out = run_one("Morphology", None, image=dot_image(), operation="dilate", kernel_size=3)
    expected = torch.zeros(1, 7, 7, 3)
    expected[0, 2:5, 2:5] = 1.0
    assert torch.equal(out, expected)
    assert torch.equal(
        run_one("Morphology", None, image=dot_image(), operation="erode", kernel_size=3),
        torch.zeros(1, 7, 7, 3),
    )
    # the dot is thinner than the footprint: opening removes it, top-hat keeps exactly it
    assert torch.equal(
        run_one("Morphology", None, image=dot_image(), operation="top_hat", kernel_size=3),
        dot_image(),
    )


def test_even_kernels_reach_further_up_and_left_and_borders_are_ignored():
    out = run_one("Morphology", None, image=dot_image(), operation="dilate", kernel_size=4)
    # window of output i covers input [i - 2, i + 1]: the dot at 3 reaches rows/cols 2..5
    expected = torch.zeros(1, 7, 7, 3)
    expected[0, 2:6, 2:6] = 1.0
    assert torch.equal(out, expected)
    full = torch.ones(1, 4, 4, 3)
    # out-of-image pixels take no part, so a white image stays white under erosion
    assert torch.equal(
        run_one("Morphology", None, image=full, operation="erode", kernel_size=5), full
    )


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("kernel_size", [3, 4, 6])
def test_same_output_as_kornia(operation, kernel_size):
    pytest.importorskip("kornia")
    from kornia import morphology as km

    torch.manual_seed(0)
    image = torch.rand(2, 9, 11, 3)
    kernel = torch.ones(kernel_size, kernel_size)
    images = image.movedim(-1, 1)
    reference = {
        "erode": lambda: km.erosion(images, kernel),
        "dilate": lambda: km.dilation(images, kernel),
        "open": lambda: km.opening(images, kernel),
        "close": lambda: km.closing(images, kernel),
        "gradient": lambda: km.gradient(images, kernel),
        "top_hat": lambda: km.top_hat(images, kernel),
        "bottom_hat": lambda: km.bottom_hat(images, kernel),
    }[operation]().movedim(1, -1)
    out = run_one("Morphology", None, image=image, operation=operation, kernel_size=kernel_size)
    assert torch.allclose(out, reference, atol=1e-6)


def test_morphology_object_info():
    info = object_info_of("Morphology")
    assert info["display_name"] == "ImageMorphology"
    assert info["input"]["required"]["kernel_size"] == [
        "INT",
        {"default": 3, "min": 3, "max": 999, "step": 1},
    ]
    assert info["input"]["required"]["operation"][1]["options"] == list(OPERATIONS)


def test_rgb_to_yuv_by_hand_and_back():
    image = torch.tensor([[[[1.0, 0.0, 0.0], [0.2, 0.6, 0.4]]]])
    y, u, v = execute("ImageRGBToYUV", None, image=image).values
    assert y.shape == image.shape and torch.equal(y[..., 0], y[..., 2])
    assert y[0, 0, 0, 0].item() == pytest.approx(0.299)
    assert u[0, 0, 0, 0].item() == pytest.approx((0 - 0.299) * 0.564 + 0.5)
    assert v[0, 0, 0, 0].item() == pytest.approx((1 - 0.299) * 0.713 + 0.5)
    back = run_one("ImageYUVToRGB", None, Y=y, U=u, V=v)
    assert torch.allclose(back, image, atol=2e-3)  # kornia's rounded coefficients
    info = object_info_of("ImageRGBToYUV")
    assert info["output"] == ["IMAGE"] * 3 and info["output_name"] == ["Y", "U", "V"]
    assert object_info_of("ImageYUVToRGB")["input_order"]["required"] == ["Y", "U", "V"]


def test_yuv_conversions_match_kornia():
    pytest.importorskip("kornia")
    import kornia.color

    torch.manual_seed(1)
    image = torch.rand(2, 5, 6, 3)
    y, u, v = execute("ImageRGBToYUV", None, image=image).values
    reference = kornia.color.rgb_to_ycbcr(image.movedim(-1, 1)).movedim(1, -1)
    assert torch.allclose(torch.stack((y[..., 0], u[..., 0], v[..., 0]), -1), reference, atol=1e-6)
    # ImageYUVToRGB averages each input's channels, so grey planes carry the value
    planes = [torch.rand(2, 5, 6, 3) for _ in range(3)]
    merged = torch.stack([p.mean(-1) for p in planes], dim=1)
    expected = kornia.color.ycbcr_to_rgb(merged).movedim(1, -1)
    out = run_one("ImageYUVToRGB", None, Y=planes[0], U=planes[1], V=planes[2])
    assert torch.allclose(out, expected, atol=1e-6)


def test_yuv_to_rgb_of_mismatched_planes_names_the_inputs():
    with pytest.raises(ValueError, match="ImageYUVToRGB: inputs Y, U and V"):
        run_one(
            "ImageYUVToRGB",
            None,
            Y=torch.zeros(1, 2, 2, 3),
            U=torch.zeros(1, 2, 3, 3),
            V=torch.zeros(1, 2, 2, 3),
        )
