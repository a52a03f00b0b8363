"""Rounding a merged weight to its storage dtype the way ComfyUI does.

16- and 32-bit dtypes round to nearest. fp8 (``float8_e4m3fn`` / ``float8_e5m2``) rounds
*stochastically* (ComfyUI's ``stochastic_rounding``): seeded per weight by the CRC-32 of the
weight's key in ComfyUI's model (``diffusion_model.double_blocks.0.img_attn.qkv.weight``),
each value is rounded down or up to a neighbouring fp8 value with odds given by its
distance to them, so LoRA deltas far below one fp8 step still move the weight on average.
The arithmetic is done in float16 and rows are processed in slices of about 4096² values,
drawing the uniform numbers from one generator in slice order, which is what makes the bits
equal ComfyUI's on the same device.
"""

from __future__ import annotations

import zlib

import torch

from loom.memory.cast import FLOAT8_DTYPES

#: (exponent bits, mantissa bits, exponent bias) of each fp8 format.
_FORMATS = {
    name: layout
    for name, layout in (("float8_e4m3fn", (4, 3, 7)), ("float8_e5m2", (5, 2, 15)))
    if hasattr(torch, name)
}
_SLICE_VALUES = 4096 * 4096


def key_seed(key: str) -> int:
    """The rounding seed of the weight ComfyUI names ``key`` (CRC-32 of its characters)."""
    return zlib.crc32(key.encode("utf-8"))


def round_to(value: torch.Tensor, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """``value`` in ``dtype``: stochastic for fp8 (seeded by ``seed``), nearest otherwise."""
    if dtype not in FLOAT8_DTYPES:
        return value.to(dtype)
    generator = torch.Generator(device=value.device)
    generator.manual_seed(seed)
    out = torch.empty_like(value, dtype=dtype)
    slices = max(1, value.numel() / _SLICE_VALUES)
    step = max(1, round(value.shape[0] / slices))
    for start in range(0, value.shape[0], step):
        part = _stochastic_fp8(value[start : start + step], dtype, generator)
        out[start : start + step].copy_(part)
    return out


def _stochastic_fp8(
    x: torch.Tensor, dtype: torch.dtype, generator: torch.Generator
) -> torch.Tensor:
    """One slice, as float16 values that are exactly representable in ``dtype``."""
    exp_bits, man_bits, bias = _FORMATS[str(dtype).removeprefix("torch.")]
    half = x.half()
    magnitude = half.abs()
    sign = torch.where(magnitude == 0, 0, torch.sign(half))
    exponent = torch.clamp(torch.floor(torch.log2(magnitude)) + bias, 0, 2**exp_bits - 1)
    normal = exponent != 0
    # the mantissa in units of its last bit, plus a uniform draw, floored
    units = torch.where(
        normal,
        (magnitude / (2.0 ** (exponent - bias)) - 1.0) * (2**man_bits),
        magnitude / (2.0 ** (-bias + 1 - man_bits)),
    )
    units += torch.rand(
        units.size(),
        dtype=units.dtype,
        layout=units.layout,
        device=units.device,
        generator=generator,
    )
    mantissa = units.floor() / (2**man_bits)
    sign *= torch.where(
        normal, (2.0 ** (exponent - bias)) * (1.0 + mantissa), (2.0 ** (-bias + 1)) * mantissa
    )
    limits = torch.finfo(dtype)
    return torch.clamp(sign, min=limits.min, max=limits.max)
