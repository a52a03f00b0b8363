"""Making a module's linear layers the quantised layers a file describes
(:class:`~loom.memory.ScaledView`'s :attr:`layers`), before its weights are loaded."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from loom.memory import mxfp8, nvfp4
from loom.memory.block_layers import MxFp8Linear, NvFp4Linear
from loom.memory.cast import ops
from loom.memory.scaled import TENSOR_SCALE, WEIGHT_SCALE, ScaledLayer, ScaledLinear

#: Block-quantised formats (their layers dequantise per block).
BLOCK_FORMATS = (nvfp4.NVFP4, mxfp8.MXFP8)


class QuantLayoutError(ValueError):
    """A quantised layer's tensors do not have the shapes its format and layer need."""


def _stored_shape(spec: ScaledLayer, layer: nn.Linear) -> tuple[int, int]:
    """The weight's storage shape for block-quantised layer ``spec`` (NVFP4 / MXFP8), checked
    against what the file holds; raises :class:`QuantLayoutError` naming the tensor whose
    shape does not fit ``layer``."""
    shape = (layer.out_features, layer.in_features)
    fmt = spec.quant_format
    if fmt == nvfp4.NVFP4:
        stored, scales = nvfp4.packed_shape(shape), nvfp4.block_scale_shape
    else:
        stored, scales = mxfp8.stored_shape(shape), mxfp8.block_scale_shape
    expected = {
        ".weight": (spec.weight_shape, stored),
        WEIGHT_SCALE: (spec.scale_shape, scales(stored)),
    }
    for suffix, (found, wanted) in expected.items():
        if tuple(found) != wanted:
            raise QuantLayoutError(
                f"{spec.name}{suffix} has shape {list(found)}; an {fmt} layer of "
                f"{shape[1]} inputs and {shape[0]} outputs stores it as {list(wanted)}"
            )
    if fmt == nvfp4.NVFP4 and math.prod(spec.tensor_scale_shape) != 1:
        raise QuantLayoutError(
            f"{spec.name}{TENSOR_SCALE} has shape {list(spec.tensor_scale_shape)}; "
            "an nvfp4 per-tensor scale is one value"
        )
    return stored


def scale_layers(module: nn.Module, layers: Iterable[str | ScaledLayer]) -> int:
    """Make each named cast ``ops.Linear`` of ``module`` a :class:`ScaledLinear` with (meta)
    ``weight_scale`` and, where the layer has one, ``input_scale`` buffers; returns how many.
    Call before loading the weights.

    An ``nvfp4`` layer becomes an :class:`~loom.memory.NvFp4Linear` (a packed uint8 ``weight``,
    ``weight_scale`` / ``weight_scale_2`` buffers), an ``mxfp8`` one an
    :class:`~loom.memory.MxFp8Linear` (a padded float8 ``weight``, an E8M0 ``weight_scale``).

    :raises KeyError: a named layer is missing or not a cast linear layer (the file does not
        fit the architecture).
    :raises QuantLayoutError: a block-quantised layer's tensors have shapes the layer cannot
        hold.
    """
    count = 0
    for spec in layers:
        spec = spec if isinstance(spec, ScaledLayer) else ScaledLayer(spec)
        key = spec.key or spec.name + WEIGHT_SCALE
        try:
            layer = module.get_submodule(spec.name)
        except AttributeError as exc:
            raise KeyError(key) from exc
        if not isinstance(layer, ops.Linear):
            raise KeyError(key)
        if spec.quant_format in BLOCK_FORMATS:
            stored = _stored_shape(spec, layer)
            nv = spec.quant_format == nvfp4.NVFP4
            layer.__class__ = NvFp4Linear if nv else MxFp8Linear
            storage = torch.uint8 if nv else torch.float8_e4m3fn
            meta = torch.empty(stored, dtype=storage, device="meta")
            layer.weight = nn.Parameter(meta, requires_grad=False)
            scale_dtype = torch.float8_e4m3fn if nv else torch.float8_e8m0fnu
            scales = torch.empty(spec.scale_shape, dtype=scale_dtype, device="meta")
            layer.register_buffer("weight_scale", scales)
            if nv:
                tensor_scale = torch.empty(spec.tensor_scale_shape, device="meta")
                layer.register_buffer("weight_scale_2", tensor_scale)
        else:
            if not isinstance(layer, ScaledLinear):
                layer.__class__ = ScaledLinear
            layer.register_buffer("weight_scale", torch.empty(spec.scale_shape, device="meta"))
        if spec.has_input_scale:
            layer.register_buffer("input_scale", torch.empty((), device="meta"))
        layer.quant_format = spec.quant_format
        layer.full_precision_matrix_mult = spec.full_precision_matrix_mult
        count += 1
    return count


__all__ = ["BLOCK_FORMATS", "QuantLayoutError", "scale_layers"]
