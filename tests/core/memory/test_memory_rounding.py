"""ComfyUI's rounding of merged weights: nearest for 16/32-bit, stochastic for fp8."""

from __future__ import annotations

import pytest
import torch

from loom.memory.rounding import key_seed, round_to

FP8 = [d for d in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)) if d]


def _neighbours(value: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The fp8 values just below and just above each value (equal where it is one)."""
    grid = torch.arange(256, dtype=torch.uint8).view(dtype).float()
    grid = torch.unique(grid[torch.isfinite(grid)])
    index = torch.searchsorted(grid, value.float().clamp(grid[0], grid[-1]))
    upper = grid[index.clamp(max=len(grid) - 1)]
    lower = torch.where(upper == value, upper, grid[(index - 1).clamp(min=0)])
    return lower, upper


def test_key_seed_is_the_crc32_of_comfyuis_key_name():
    # ComfyUI's string_to_seed: the reflected CRC-32 (poly 0xEDB88320) of the characters
    key = "diffusion_model.double_blocks.0.img_attn.qkv.weight"
    crc = 0xFFFFFFFF
    for byte in key.encode():
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    assert key_seed(key) == crc ^ 0xFFFFFFFF


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_16_and_32_bit_round_to_nearest(dtype):
    value = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(round_to(value, dtype, seed=5), value.to(dtype))


@pytest.mark.parametrize("dtype", FP8, ids=str)
def test_fp8_rounds_to_a_neighbour_deterministically_and_without_bias(dtype):
    g = torch.Generator().manual_seed(0)
    value = (torch.randn(512, 64, generator=g) * 0.5).half().float()  # float16 values, as used
    out = round_to(value, dtype, seed=7)
    assert out.dtype == dtype
    lower, upper = _neighbours(value, dtype)
    got = out.float()
    assert torch.all((got == lower) | (got == upper))
    assert torch.equal(round_to(value, dtype, seed=7).view(torch.uint8), out.view(torch.uint8))
    assert not torch.equal(round_to(value, dtype, seed=8).view(torch.uint8), out.view(torch.uint8))
    # values already on the fp8 grid stay, except where the float16 sum of mantissa and a
    # draw just below 1 rounds up to the next unit (ComfyUI's arithmetic, kept as it is)
    exact = value.to(dtype).float()
    moved = (round_to(exact, dtype, seed=3).float() != exact).float().mean().item()
    assert moved < 0.01
    # one value rounded many times: on average the value itself (nearest rounding is biased)
    x = torch.full((20000, 1), 0.3)
    mean = round_to(x, dtype, seed=1).float().mean().item()
    assert abs(mean - 0.3) < 0.003
    assert abs(x.to(dtype).float().mean().item() - 0.3) > 0.005
