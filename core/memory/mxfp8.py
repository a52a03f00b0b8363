"""The MXFP8 weight format as ComfyUI (through comfy-kitchen) stores it.

A weight ``[out, in]`` is padded to multiples of 32 and stored float8_e4m3fn as it is; each
block of 32 inputs has a power-of-two scale stored as an E8M0 byte (``2 ** (byte - 127)``;
comfy-kitchen reads byte 0 as 0) in cuBLAS's blocked layout (:mod:`loom.memory.block_scales`),
saved as ``float8_e8m0fnu`` (ComfyUI reads the bytes whatever the file's dtype). No
per-tensor scale. Off Blackwell GPUs ComfyUI dequantises in float32 (``fp8 * scale``) and
then casts to the compute dtype, the padding cut off; :func:`dequantize` does the same. A
patched weight is quantised again with per-block scales ``2 ** ceil(log2(amax / 448))``, the
values rounded to nearest (:func:`quantize`).
"""

from __future__ import annotations

import attrs
import torch

from loom.memory.block_scales import block, blocked_shape, roundup, unblock

#: ComfyUI's name of the format.
MXFP8 = "mxfp8"
#: Inputs per block scale.
BLOCK = 32
E4M3_MAX = 448.0
_BIAS = 127


def e8m0_dtype() -> torch.dtype | None:
    """torch's E8M0 dtype (``float8_e8m0fnu``, torch 2.7 on); ``None`` where torch lacks it."""
    return getattr(torch, "float8_e8m0fnu", None)


def stored_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """The float8 storage shape of an ``[out, in]`` weight (both padded to 32)."""
    return roundup(shape[0], BLOCK), roundup(shape[1], BLOCK)


def block_scale_shape(stored: tuple[int, int]) -> tuple[int, int]:
    """The blocked-layout shape of the block scales of a weight stored as ``stored``."""
    return blocked_shape(stored[0], stored[1] // BLOCK)


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype == torch.uint8 else tensor.view(torch.uint8)


def _e8m0_values(scale_bytes: torch.Tensor) -> torch.Tensor:
    """float32 ``2 ** (byte - 127)``, with byte 0 as 0 (comfy-kitchen's reading)."""
    exponent = scale_bytes.to(torch.int32)
    bits = torch.where(exponent == 0, torch.zeros_like(exponent), exponent << 23)
    return bits.view(torch.float32)


def dequantize(
    weight: torch.Tensor, block_scales: torch.Tensor, shape: tuple[int, int], dtype: torch.dtype
) -> torch.Tensor:
    """The ``[out, in]`` weight ``shape`` stored as float8 ``weight`` with E8M0
    ``block_scales`` (blocked layout, any 1-byte dtype), in ``dtype`` on ``weight``'s device
    (ComfyUI's arithmetic: float32 products, then one cast)."""
    rows, cols = weight.shape
    blocks = cols // BLOCK
    scale_bytes = unblock(_bytes(block_scales).to(weight.device), rows, blocks)
    values = weight.to(torch.float32).reshape(rows, blocks, BLOCK)
    out = (values * _e8m0_values(scale_bytes).unsqueeze(-1)).reshape(rows, cols)
    return out.to(dtype)[: shape[0], : shape[1]]


@attrs.frozen
class MxFp8Weight:
    """A weight quantised to MXFP8: float8 values and blocked E8M0 block scales, as ComfyUI
    stores them (``weight``, ``weight_scale``)."""

    values: torch.Tensor
    block_scales: torch.Tensor


def quantize(weight: torch.Tensor) -> MxFp8Weight:
    """``weight`` ``[out, in]`` quantised as ComfyUI quantises a patched MXFP8 weight:
    padded to 32, each block's scale the power of two at or above ``amax / 448`` (at least
    ``2 ** -127``; an all-zero block's byte is 0), values divided by it, clamped to ±448 and
    rounded to float8_e4m3fn."""
    rows, cols = weight.shape
    padded_rows, padded_cols = stored_shape((rows, cols))
    if (padded_rows, padded_cols) != (rows, cols):
        weight = torch.nn.functional.pad(weight, (0, padded_cols - cols, 0, padded_rows - rows))
    blocks = weight.reshape(padded_rows, padded_cols // BLOCK, BLOCK)
    block_max = blocks.abs().amax(dim=-1)
    needed = torch.clamp(block_max.float() / E4M3_MAX, min=2.0**-127)
    exponent = torch.ceil(torch.log2(needed)).to(torch.int32) + _BIAS
    scale_bytes = torch.clamp(exponent, 0, 254).to(torch.uint8)
    empty = block_max == 0
    scales = torch.where(empty, torch.ones(()), _e8m0_values(scale_bytes))
    scaled = blocks.float() / scales.unsqueeze(-1)
    scaled = torch.where(empty.unsqueeze(-1), torch.zeros_like(scaled), scaled)
    values = scaled.clamp(-E4M3_MAX, E4M3_MAX).reshape(padded_rows, padded_cols)
    scale_bytes = torch.where(empty, torch.zeros_like(scale_bytes), scale_bytes)
    blocked = block(scale_bytes).view(torch.float8_e8m0fnu)
    return MxFp8Weight(values.to(torch.float8_e4m3fn), blocked)


__all__ = [
    "MXFP8",
    "MxFp8Weight",
    "block_scale_shape",
    "dequantize",
    "e8m0_dtype",
    "quantize",
    "stored_shape",
]
