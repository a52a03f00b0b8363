"""ComfyUI's *scaled fp8* files: fp8 weights with a per-layer weight scale.

Two layouts exist. The old one (T5-XXL, Flux, SD3 ... ``*_fp8_scaled.safetensors``) marks the
file with a ``scaled_fp8`` key and stores, next to each quantised ``<layer>.weight``, a float32
``<layer>.scale_weight`` (a scalar, sometimes shaped ``[1]``) and possibly a
``<layer>.scale_input``. ComfyUI (0.7 on) converts that at load to its quantisation layout,
which newer files use directly and which its save nodes write: ``<layer>.weight_scale``,
``<layer>.input_scale`` (an old file's input scale of exactly 1.0 is dropped) and a
``<layer>.comfy_quant`` uint8 tensor holding the layer's JSON config
(``{"format": "float8_e4m3fn"}``, plus ``"full_precision_matrix_mult": true`` when the old
marker had two elements); the ``scaled_fp8`` marker is gone. The real weight is
``weight * weight_scale``; the input scale only feeds fp8 matmul kernels (ComfyUI uses them on
fp8-capable GPUs; elsewhere it dequantises the weight and ignores the input scale, as here).

:class:`~loom.memory.ScaledView` (:mod:`loom.memory.scaled_view`) shows a file in either
layout as :class:`ScaledLinear` modules name their tensors (ComfyUI's new names);
:func:`~loom.memory.scale_layers` (:mod:`loom.memory.quant_layers`) turns the cast linear
layers the file scales into :class:`ScaledLinear` (on the meta device, before loading);
:func:`quant_config_tensors` gives the ``comfy_quant`` tensors a saved file carries. The weight
stays fp8; each forward casts it to the compute dtype and multiplies by the scale, ComfyUI's
dequantisation. A weight patch (LoRA) is merged into the dequantised weight in the merge dtype
(:func:`loom.memory.compute.merge_dtype_for`) and the result quantised again as ComfyUI 0.7+
does (:meth:`ScaledLinear.requantize`): a new weight scale ``amax(|merged|) / fp8 max`` (the
layer's own format: 448 for e4m3fn, 57344 for e5m2) replaces the file's, and the merged values
times its reciprocal are rounded to fp8 stochastically, seeded by the weight's ComfyUI key (a
key whose CRC-32 is 0 rounds to nearest); unloading puts the file's weight and scale back.
A weight stored in another fp8 dtype than its layer's format declares (an old-layout file of
e5m2 weights: ComfyUI declares every old-layout layer e4m3fn) is cast to it at load.

A layer whose ``comfy_quant`` format is ``nvfp4`` or ``mxfp8`` (:mod:`loom.memory.nvfp4`,
:mod:`loom.memory.mxfp8`) becomes a block-quantised layer (:mod:`loom.memory.block_layers`):
its weight stays as stored next to its block scales (and NVFP4's per-tensor
``weight_scale_2``), dequantised per forward; :mod:`loom.memory.quant_layers` converts the
layers before loading.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import nn

from loom.memory import mxfp8, nvfp4
from loom.memory.cast import ops
from loom.memory.rounding import round_to

#: The marker key of an old-layout scaled-fp8 file.
MARKER = "scaled_fp8"
#: Old-layout per-layer scales.
SCALE_WEIGHT = ".scale_weight"
SCALE_INPUT = ".scale_input"
#: ComfyUI's quantisation layout (what it loads into and saves).
WEIGHT_SCALE = ".weight_scale"
INPUT_SCALE = ".input_scale"
QUANT_CONFIG = ".comfy_quant"
#: An NVFP4 layer's per-tensor scale (its ``weight_scale`` holds the block scales).
TENSOR_SCALE = ".weight_scale_2"
#: A :class:`ScaledLinear`'s scale buffers (quantisation data, not weights to patch or merge).
SCALE_TENSORS = ("weight_scale", "input_scale", "weight_scale_2")
#: Per-tensor-scaled fp8 formats of ComfyUI's layout.
FP8_FORMATS = ("float8_e4m3fn", "float8_e5m2")
#: Every ``comfy_quant`` format Loom loads.
FORMATS = (*FP8_FORMATS, nvfp4.NVFP4, mxfp8.MXFP8)
#: The format ComfyUI gives every layer of an old-layout file.
OLD_LAYOUT_FORMAT = "float8_e4m3fn"


@attrs.frozen
class ScaledLayer:
    """One scaled layer of a file: its module path, the shape its weight scale is stored in,
    whether it keeps an input scale, its ComfyUI quantisation config, and the file's key that
    declares it (for messages); for NVFP4 also the shapes its packed weight and per-tensor
    scale are stored in."""

    name: str
    scale_shape: tuple[int, ...] = ()
    has_input_scale: bool = False
    quant_format: str = OLD_LAYOUT_FORMAT
    full_precision_matrix_mult: bool = False
    key: str = ""
    weight_shape: tuple[int, ...] = ()
    tensor_scale_shape: tuple[int, ...] = ()

    def config(self) -> dict[str, Any]:
        """The layer's ``comfy_quant`` config as ComfyUI writes it."""
        out: dict[str, Any] = {"format": self.quant_format}
        if self.full_precision_matrix_mult:
            out["full_precision_matrix_mult"] = True
        return out


class ScaledLinear(ops.Linear):
    """A cast linear layer whose stored weight is multiplied by ``weight_scale`` after the cast
    (an ``input_scale`` buffer, when the file has one, is kept for saving)."""

    weight_scale: torch.Tensor
    quant_format: str = OLD_LAYOUT_FORMAT
    full_precision_matrix_mult: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, weight, bias, dtype = self.cast_params(x)
        scale = self.weight_scale.to(x.device, dtype)
        return nn.functional.linear(x, weight * scale, bias)

    def quantizes(self, name: str) -> bool:
        """Whether tensor ``name`` is stored quantised (the weight; the bias is not)."""
        return name == "weight"

    def value_shape(self, name: str) -> tuple[int, ...]:
        """The shape of tensor ``name``'s values (as stored: fp8 is not packed)."""
        return tuple(getattr(self, name).shape)

    def dequantize(
        self, name: str, tensor: torch.Tensor, scales: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``tensor`` (this layer's ``name``, in the merge dtype) as the values the layer
        computes with, scaled by ``scales["weight_scale"]`` when given, else by its own."""
        if name != "weight":
            return tensor
        return tensor * self.stored_scale("weight_scale", scales).to(tensor.device, tensor.dtype)

    def stored_scale(
        self, name: str, scales: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Quantisation tensor ``name`` as stored: from ``scales`` (by local name) when it
        holds it, else the layer's own (while a patched clone is loaded: its requantised
        one)."""
        if scales is not None and name in scales:
            return scales[name]
        return getattr(self, name)

    def requantize(self, name: str, merged: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """``merged`` (the weight's float values) stored as ComfyUI 0.7+ stores a patched
        quantised weight: a new scale ``amax(|merged|) / fp8 max``, the values multiplied by
        its reciprocal and rounded stochastically (seeded by ``seed``)."""
        if name != "weight":
            raise KeyError(name)
        dtype = getattr(torch, self.quant_format)
        limit = torch.finfo(dtype).max  # e5m2 keeps its own range (57344), as ComfyUI's layout
        scale = merged.abs().amax().to(torch.float32) / limit
        if merged.dtype not in (torch.float32, torch.bfloat16):
            # a half-precision merge (ComfyUI's fp16 LoRA compute) keeps 1/scale finite
            limits = torch.finfo(merged.dtype)
            scale = 1.0 / torch.clamp(1.0 / scale, min=limits.min, max=limits.max)
        scaled = merged * (1.0 / scale).to(merged.dtype)
        if seed == 0:
            # ComfyUI quantises a layer whose seed is 0 (falsy) without stochastic rounding:
            # clamped to the format's range and cast to nearest
            return {"weight": scaled.clamp(-limit, limit).to(dtype), "weight_scale": scale}
        return {"weight": round_to(scaled, dtype, seed), "weight_scale": scale}


def is_scaled_fp8(keys: Any, prefix: str = "") -> bool:
    """Whether the keys (of a file, under ``prefix``) are a scaled-fp8 model, in either layout."""
    return f"{prefix}{MARKER}" in keys or any(
        k.startswith(prefix) and k.endswith((SCALE_WEIGHT, QUANT_CONFIG)) for k in keys
    )


def quant_config_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<layer>.comfy_quant": <uint8 JSON config>}`` for each :class:`ScaledLinear` of
    ``module``: what ComfyUI writes next to a quantised layer's weight and scales when saving
    (it writes no ``scaled_fp8`` marker)."""
    out = {}
    for name, layer in module.named_modules():
        if isinstance(layer, ScaledLinear):
            spec = ScaledLayer(
                name,
                quant_format=layer.quant_format,
                full_precision_matrix_mult=layer.full_precision_matrix_mult,
            )
            out[name + QUANT_CONFIG] = config_tensor(spec.config())
    return out


def dequantized_weights(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` (a saved state, e.g. ``checkpoint_state()``) with each scaled layer's
    ``<layer>.weight`` replaced by the values it computes with, ``weight * weight_scale`` in
    float32 (the scale and config entries stay); an nvfp4 layer's (``weight_scale_2`` beside
    it) and an mxfp8 one's (E8M0 scales) decoded at their stored, padded shape."""
    out = dict(tensors)
    for key, scale in tensors.items():
        if key.endswith(WEIGHT_SCALE):
            name = key[: -len(WEIGHT_SCALE)]
            weight = name + ".weight"
            if weight not in out:
                continue
            tensor_scale = tensors.get(name + TENSOR_SCALE)
            stored = out[weight]
            if tensor_scale is not None:
                shape = (stored.shape[0], stored.shape[1] * 2)
                out[weight] = nvfp4.dequantize(stored, tensor_scale, scale, shape, torch.float32)
            elif scale.dtype == mxfp8.e8m0_dtype():  # (torch < 2.7 has no E8M0: never)
                shape = tuple(stored.shape)
                out[weight] = mxfp8.dequantize(stored, scale, shape, torch.float32)
            else:
                out[weight] = out[weight].float() * scale.float()
    return out


def config_tensor(config: Mapping[str, Any]) -> torch.Tensor:
    """A ``comfy_quant`` tensor: the config's JSON (Python's default separators) as uint8."""
    return torch.tensor(list(json.dumps(dict(config)).encode("utf-8")), dtype=torch.uint8)


def read_config(tensor: torch.Tensor) -> dict[str, Any]:
    """A ``comfy_quant`` tensor's config.

    :raises ValueError: the bytes are not UTF-8 JSON of an object.
    """
    config = json.loads(bytes(tensor.to(torch.uint8).flatten().tolist()).decode("utf-8"))
    if not isinstance(config, dict):
        raise ValueError(f"a JSON {type(config).__name__}, not an object")
    return config
