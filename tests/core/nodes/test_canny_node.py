"""Canny: kornia 0.8's algorithm (what ComfyUI 0.8 calls) in plain torch, checked by hand and
against kornia itself when it is installed (test-only, ``pip install --no-deps kornia==0.8.2
kornia_rs``)."""

from __future__ import annotations

import math

import pytest
import torch
from loom_builtin_harness import object_info_of, run_one

from loom.nodes.builtin.canny import gaussian_blur, hysteresis, sobel


def ramp_step(height: int = 8, width: int = 12, column: int = 6) -> torch.Tensor:
    """Black left of ``column``, white right of it, mid grey on it: the edge is on a pixel."""
    profile = torch.ones(width)
    profile[:column] = 0.0
    profile[column] = 0.5
    return profile.expand(1, height, width).unsqueeze(-1).expand(1, height, width, 3).clone()


def test_the_edge_of_a_step_is_its_middle_column():
    image = ramp_step()
    out = run_one("Canny", None, image=image, low_threshold=0.4, high_threshold=0.8)
    expected = torch.zeros(1, 8, 12, 3)
    expected[:, :, 6] = 1.0
    assert torch.equal(out, expected)


def test_gradient_magnitude_is_the_unnormalised_sobel_of_the_blur_by_hand():
    grey = ramp_step()[..., 0].unsqueeze(1)
    gx, gy = sobel(gaussian_blur(grey))
    taps = [math.exp(-(x * x) / 2) for x in (-2, -1, 0, 1, 2)]
    t1, t2 = taps[1] / sum(taps), taps[2] / sum(taps)
    # rows are constant: gx = (1 + 2 + 1) * (b[7] - b[5]), b the blurred row
    assert gx[0, 0, 3, 6].item() == pytest.approx(4 * (t1 + t2), rel=1e-6)
    assert gy.abs().max().item() < 1e-6  # blur rounding only


def test_hysteresis_keeps_weak_pixels_connected_to_strong_ones():
    weak = torch.zeros(1, 1, 5, 7)
    strong = torch.zeros(1, 1, 5, 7)
    weak[0, 0, 1, 0:4] = 1.0  # a weak chain ...
    strong[0, 0, 1, 0] = 1.0  # ... with one strong end
    weak[0, 0, 2, 4] = 1.0  # diagonal neighbour of the chain's end: connected
    weak[0, 0, 4, 6] = 1.0  # isolated
    strong = strong * weak
    edges = hysteresis(weak, strong)
    expected = weak.clone()
    expected[0, 0, 4, 6] = 0.0
    assert torch.equal(edges, expected)


def test_canny_schema():
    info = object_info_of("Canny")
    assert info["input"]["required"] == {
        "image": ["IMAGE", {}],
        "low_threshold": ["FLOAT", {"default": 0.4, "min": 0.01, "max": 0.99, "step": 0.01}],
        "high_threshold": ["FLOAT", {"default": 0.8, "min": 0.01, "max": 0.99, "step": 0.01}],
    }
    assert (info["category"], info["output"]) == ("image/preprocessors", ["IMAGE"])


def _kornia_canny():
    kornia = pytest.importorskip("kornia")
    version = tuple(int(part) for part in kornia.__version__.split(".")[:2])
    if version >= (0, 9):
        pytest.skip(f"kornia {kornia.__version__} changed Canny; ComfyUI 0.8 ran 0.7-0.8")
    from kornia.filters import canny

    return canny


@pytest.mark.parametrize(("low", "high"), [(0.2, 0.3), (0.1, 0.2), (0.05, 0.5)])
def test_same_edges_as_kornia(low, high):
    canny = _kornia_canny()
    generator = torch.Generator().manual_seed(7)
    coarse = torch.rand(2, 3, 8, 8, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(48, 56), mode="bilinear")
    image = (smooth * 0.8 + torch.rand(2, 3, 48, 56, generator=generator) * 0.2).movedim(1, -1)
    _, reference = canny(image.movedim(-1, 1), low, high)
    out = run_one("Canny", None, image=image, low_threshold=low, high_threshold=high)
    assert reference.sum() > 0
    assert torch.equal(out, reference.repeat(1, 3, 1, 1).movedim(1, -1))
