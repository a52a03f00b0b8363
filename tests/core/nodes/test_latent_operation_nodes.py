"""Latent operations: Reinhard tone mapping and sharpening by hand, applied to a latent."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from loom_builtin_harness import make_ctx, object_info_of, run_one

from loom.nodes.builtin.latent_operations import Sharpen, TonemapReinhard


@pytest.fixture
def ctx(tmp_path):
    return make_ctx(tmp_path)


def test_tonemap_reinhard_by_hand(ctx):
    # two pixels, two channels: vectors (3, 4) |5| and (0, 1) |1|
    latent = torch.tensor([[[[3.0, 0.0]], [[4.0, 1.0]]]])
    operation = run_one("LatentOperationTonemapReinhard", ctx, multiplier=0.5)
    assert operation == TonemapReinhard(0.5)
    out = operation(latent)
    top = (math.sqrt(8.0) * 5 + 3.0) * 0.5  # std of (5, 1) is sqrt(8) (unbiased), mean 3
    for pixel, magnitude in ((0, 5.0), (1, 1.0)):
        new = (magnitude / top) / (magnitude / top + 1) * top
        expected = latent[0, :, 0, pixel] / magnitude * new
        assert torch.allclose(out[0, :, 0, pixel], expected, atol=1e-6)


def comfy_style_sharpen(latent, radius, sigma, alpha):
    """ComfyUI's steps spelt out: reflect-pad, convolve with zero padding, crop."""
    luminance = latent.norm(dim=1, keepdim=True) + 1e-6
    unit = latent / luminance
    size = 2 * radius + 1
    axis = torch.linspace(-1, 1, size)
    grid_x, grid_y = torch.meshgrid(axis, axis, indexing="ij")
    gauss = torch.exp(-(grid_x**2 + grid_y**2) / (2 * sigma**2))
    kernel = gauss / gauss.sum() * (-10 * alpha)
    kernel[radius, radius] += 1.0 - kernel.sum()
    channels = latent.shape[1]
    padded = F.pad(unit, (radius,) * 4, mode="reflect")
    weights = kernel.repeat(channels, 1, 1).unsqueeze(1)
    out = F.conv2d(padded, weights, padding=radius, groups=channels)
    return luminance * out[:, :, radius:-radius, radius:-radius]


def test_sharpen_matches_comfyuis_steps_and_keeps_flat_latents(ctx):
    torch.manual_seed(0)
    latent = torch.randn(2, 4, 7, 6)
    operation = run_one("LatentOperationSharpen", ctx, sharpen_radius=2, sigma=0.8, alpha=0.3)
    assert operation == Sharpen(2, 0.8, 0.3)
    expected = comfy_style_sharpen(latent, 2, 0.8, 0.3)
    assert torch.allclose(operation(latent), expected, atol=1e-5)
    flat = torch.ones(1, 4, 5, 5) * torch.tensor([1.0, -2.0, 0.5, 3.0]).view(1, 4, 1, 1)
    assert torch.allclose(operation(flat), flat, atol=1e-5)  # the kernel sums to 1


def test_apply_operation_rewrites_samples_and_keeps_the_rest(ctx):
    latent = {"samples": torch.tensor([[[[3.0, 0.0]], [[4.0, 1.0]]]]), "noise_mask": "kept"}
    operation = TonemapReinhard(1.0)
    out = run_one("LatentApplyOperation", ctx, samples=latent, operation=operation)
    assert out["noise_mask"] == "kept"
    assert torch.equal(out["samples"], operation(latent["samples"]))
    assert not torch.allclose(out["samples"], latent["samples"])


def test_object_info_of_the_operation_nodes():
    sharpen = object_info_of("LatentOperationSharpen")
    assert sharpen["output"] == ["LATENT_OPERATION"] and sharpen["experimental"] is True
    assert sharpen["input"]["required"]["sharpen_radius"] == [
        "INT",
        {"default": 9, "min": 1, "max": 31, "step": 1},
    ]
    assert object_info_of("LatentOperationTonemapReinhard")["input"]["required"]["multiplier"] == [
        "FLOAT",
        {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.01},
    ]
    apply_cfg = object_info_of("LatentApplyOperationCFG")
    assert apply_cfg["input"]["required"] == {
        "model": ["MODEL", {}],
        "operation": ["LATENT_OPERATION", {}],
    }
    assert apply_cfg["output"] == ["MODEL"]
