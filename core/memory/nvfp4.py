"""NVIDIA's NVFP4 weight format as ComfyUI (through comfy-kitchen) stores it.

A weight ``[out, in]`` is cut into blocks of 16 inputs. Each value is a 4-bit E2M1 float
(±0, 0.5, 1, 1.5, 2, 3, 4, 6), two to a byte, the *first* of each pair in the high nibble:
``weight`` is uint8 ``[rows, cols / 2]`` with ``rows``/``cols`` the shape rounded up to 16
(zero padding). Each block has a float8_e4m3fn scale, stored in cuBLAS's blocked layout
(:mod:`loom.memory.block_scales`: ``[roundup(rows, 128), roundup(cols / 16, 4)]``); a
float32 per-tensor scale multiplies them all. The
real weight is ``e2m1 * (tensor_scale * block_scale)``.

Off Blackwell GPUs ComfyUI computes with the dequantised weight in the layer's compute dtype:
the E2M1 values and both scales are converted to that dtype, the two scales multiplied
there, then the values by the product, and the padding cut off. :func:`dequantize` does
the same operations in the same order, so the weights match bit for bit. When a LoRA patches
such a weight ComfyUI quantises the merged values again with a new per-tensor scale
``amax / (448 * 6)``, rounding to nearest (:func:`quantize`).
"""

from __future__ import annotations

import attrs
import torch

from loom.memory.block_scales import block, blocked_shape, roundup, unblock

#: ComfyUI's name of the format.
NVFP4 = "nvfp4"
#: Inputs per block scale.
BLOCK = 16
#: Largest E2M1 magnitude; largest float8_e4m3fn value.
E2M1_MAX = 6.0
E4M3_MAX = 448.0
#: The 16 E2M1 codes' values (bit 3 is the sign).
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
E2M1_VALUES += tuple(-v for v in E2M1_VALUES)
# Rounding to nearest E2M1 magnitude, ties to the even code: the midpoints between
# neighbours, split by which way a tie goes.
_TIES_DOWN = (0.25, 1.25, 2.5, 5.0)
_TIES_UP = (0.75, 1.75, 3.5)


def packed_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """The uint8 storage shape of an ``[out, in]`` weight (both padded to 16, two per byte)."""
    rows, cols = shape
    return roundup(rows, BLOCK), roundup(cols, BLOCK) // 2


def block_scale_shape(packed: tuple[int, int]) -> tuple[int, int]:
    """The blocked-layout shape of the block scales of a weight stored as ``packed``."""
    rows, half_cols = packed
    return blocked_shape(rows, half_cols * 2 // BLOCK)


_TABLES: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}


def _table(kind: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A lookup table of values in ``dtype``: ``e2m1``, a packed byte's two E2M1 values
    (``[256, 2]``, high nibble first); ``e4m3``, a float8_e4m3fn byte's value (``[256]``).
    Every value is exact in float16/bfloat16/float32, and decoding bytes through a table
    needs no float8 support on the device (MPS has none)."""
    key = (kind, device, dtype)
    table = _TABLES.get(key)
    if table is None:
        byte = torch.arange(256)
        if kind == "e2m1":
            e2m1 = torch.tensor(E2M1_VALUES, dtype=torch.float32)
            values = torch.stack((e2m1[byte >> 4], e2m1[byte & 0x0F]), dim=-1)
        else:
            values = byte.to(torch.uint8).view(torch.float8_e4m3fn).float()
        table = _TABLES[key] = values.to(device=device, dtype=dtype)
    return table


def _as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype == torch.uint8:
        return tensor
    if tensor.element_size() == 1:
        return tensor.view(torch.uint8)
    # a packed weight handed over cast to a float dtype (a LoRA merge casts it first):
    # bytes 0..255 survive that cast exactly
    return tensor.to(torch.uint8)


def dequantize(
    packed: torch.Tensor,
    tensor_scale: torch.Tensor,
    block_scales: torch.Tensor,
    shape: tuple[int, int],
    dtype: torch.dtype,
) -> torch.Tensor:
    """The ``[out, in]`` weight ``shape`` stored as ``packed`` (uint8, two E2M1 codes per
    byte, high nibble first) with float8_e4m3fn ``block_scales`` (blocked layout) and a
    per-tensor ``tensor_scale``, in ``dtype`` on ``packed``'s device (ComfyUI's arithmetic)."""
    packed = _as_bytes(packed)
    device = packed.device
    rows, half_cols = packed.shape
    # one lookup per byte gives both of its values (int32 indices: half the memory of int64)
    values = torch.nn.functional.embedding(packed.int(), _table("e2m1", device, dtype))
    blocks = half_cols * 2 // BLOCK
    scale_bytes = unblock(_as_bytes(block_scales).to(device), rows, blocks)
    scales = _table("e4m3", device, dtype)[scale_bytes.long()]
    total = tensor_scale.to(device, torch.float32).to(dtype) * scales
    weight = values.reshape(rows, blocks, BLOCK) * total.unsqueeze(-1)
    return weight.reshape(rows, half_cols * 2)[: shape[0], : shape[1]]


@attrs.frozen
class NvFp4Weight:
    """A weight quantised to NVFP4: the packed codes, the blocked block scales and the
    per-tensor scale, as ComfyUI stores them (``weight``, ``weight_scale``,
    ``weight_scale_2``)."""

    packed: torch.Tensor
    block_scales: torch.Tensor
    tensor_scale: torch.Tensor


def encode_e2m1(values: torch.Tensor) -> torch.Tensor:
    """The E2M1 codes (uint8, 0..15) nearest to float32 ``values`` (already within ±6), ties
    to the even code; the sign bit kept for zero."""
    magnitude = values.abs()
    code = torch.zeros(values.shape, dtype=torch.uint8, device=values.device)
    for edge in _TIES_DOWN:
        code += (magnitude > edge).to(torch.uint8)
    for edge in _TIES_UP:
        code += (magnitude >= edge).to(torch.uint8)
    return code | (torch.signbit(values).to(torch.uint8) << 3)


def quantize(weight: torch.Tensor) -> NvFp4Weight:
    """``weight`` ``[out, in]`` (float, any float dtype) quantised as ComfyUI quantises a
    patched NVFP4 weight: per-tensor scale ``amax / (448 * 6)`` (computed in the weight's
    dtype), padding to 16, block scales ``amax(block) / 6 / tensor_scale`` clamped to 448 and
    rounded to float8_e4m3fn, values divided by their total scale and rounded to nearest."""
    tensor_scale = (weight.abs().amax() / (E4M3_MAX * E2M1_MAX)).to(torch.float32)
    rows, cols = weight.shape
    padded_rows, padded_cols = roundup(rows, BLOCK), roundup(cols, BLOCK)
    if (padded_rows, padded_cols) != (rows, cols):
        weight = torch.nn.functional.pad(weight, (0, padded_cols - cols, 0, padded_rows - rows))
    blocks = weight.reshape(padded_rows, padded_cols // BLOCK, BLOCK)
    block_max = blocks.abs().amax(dim=-1).to(torch.float32)
    wanted = torch.clamp(block_max / E2M1_MAX / tensor_scale, max=E4M3_MAX)
    block_scales = wanted.to(torch.float8_e4m3fn)
    total = tensor_scale * block_scales.float()
    empty = total == 0  # an all-zero (padding) block: zeros, not 0/0
    scaled = blocks.float() / torch.where(empty, torch.ones_like(total), total).unsqueeze(-1)
    scaled = torch.where(empty.unsqueeze(-1), torch.zeros_like(scaled), scaled)
    codes = encode_e2m1(scaled.clamp(-E2M1_MAX, E2M1_MAX)).reshape(padded_rows, padded_cols)
    packed = (codes[:, 0::2] << 4) | codes[:, 1::2]
    return NvFp4Weight(packed, block(block_scales), tensor_scale)


__all__ = [
    "NVFP4",
    "NvFp4Weight",
    "block_scale_shape",
    "dequantize",
    "encode_e2m1",
    "packed_shape",
    "quantize",
]
