"""ComfyUI's *scaled fp8* files: fp8 weights with a per-layer ``scale_weight``.

Such a file (T5-XXL, Flux, SD3 ... ``*_fp8_scaled.safetensors``) marks itself with a
``scaled_fp8`` key and stores, next to each quantised ``<layer>.weight``, a float32
``<layer>.scale_weight`` (a scalar, sometimes shaped ``[1]``) and possibly a
``<layer>.scale_input`` that only fp8 matmul kernels use. The real weight is
``weight * scale_weight``. Layers without a scale are ordinary ones (often kept in bf16).

:func:`scale_layers` turns the cast linear layers the file scales into
:class:`ScaledLinear` (on the meta device, before loading); :class:`ScaledView` shows the
file's tensors as those modules name them. The weight stays fp8; each forward casts it to
the compute dtype and multiplies by the scale, ComfyUI's dequantisation. A weight patch
(LoRA) is merged into the dequantised weight and the result quantised back with the same
scale (:meth:`ScaledLinear.dequantize` / :meth:`ScaledLinear.quantize`), as ComfyUI's
``convert_func`` / ``set_func`` do.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from loom.memory.cast import ops

#: The marker key of a scaled-fp8 file.
MARKER = "scaled_fp8"
SCALE_WEIGHT = ".scale_weight"
#: Per-layer input scales: used only by fp8 matmul kernels, not by a cast-and-multiply.
SCALE_INPUT = ".scale_input"


class ScaledLinear(ops.Linear):
    """A cast linear layer whose stored weight is multiplied by ``scale_weight`` after the cast."""

    scale_weight: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, weight, bias, dtype = self.cast_params(x)
        scale = self.scale_weight.to(x.device, dtype)
        return nn.functional.linear(x, weight * scale, bias)

    def dequantize(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` (this layer's ``name``, in float32) as the values the layer computes with."""
        if name != "weight":
            return tensor
        return tensor * self.scale_weight.to(tensor.device, tensor.dtype)

    def quantize(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`dequantize` (still float32: the caller rounds)."""
        if name != "weight":
            return tensor
        return tensor / self.scale_weight.to(tensor.device, tensor.dtype)


def is_scaled_fp8(keys: Any, prefix: str = "") -> bool:
    """Whether the keys (of a file, under ``prefix``) are a scaled-fp8 model."""
    return f"{prefix}{MARKER}" in keys or any(
        k.startswith(prefix) and k.endswith(SCALE_WEIGHT) for k in keys
    )


def scaled_layer_names(keys: Any, prefix: str = "") -> list[str]:
    """The layers (module paths, ``prefix`` removed) the file stores a weight scale for."""
    return [
        k[len(prefix) : -len(SCALE_WEIGHT)]
        for k in keys
        if k.startswith(prefix) and k.endswith(SCALE_WEIGHT)
    ]


def scale_layers(module: nn.Module, layers: list[str]) -> int:
    """Make each named cast ``ops.Linear`` of ``module`` a :class:`ScaledLinear` with a
    (meta) ``scale_weight`` buffer; returns how many. Call before loading the weights.

    :raises KeyError: a named layer is missing or not a cast linear layer (the file does not
        fit the architecture).
    """
    for name in layers:
        try:
            layer = module.get_submodule(name)
        except AttributeError as exc:
            raise KeyError(f"{name}{SCALE_WEIGHT}") from exc
        if not isinstance(layer, ops.Linear):
            raise KeyError(f"{name}{SCALE_WEIGHT}")
        if not isinstance(layer, ScaledLinear):
            layer.__class__ = ScaledLinear
            layer.register_buffer("scale_weight", torch.empty((), device="meta"))
    return len(layers)


def scaled_marker(module: nn.Module) -> dict[str, torch.Tensor]:
    """``{"scaled_fp8": <empty tensor of the scaled weights' dtype>}`` when ``module`` has
    :class:`ScaledLinear` layers, else ``{}``: the marker a saved scaled-fp8 file carries next
    to its weights and ``scale_weight`` tensors (ComfyUI writes it when saving such a model)."""
    for layer in module.modules():
        if isinstance(layer, ScaledLinear):
            return {MARKER: torch.tensor([], dtype=layer.weight.dtype)}
    return {}


class ScaledView(Mapping[str, Any]):
    """A scaled-fp8 state dict as :class:`ScaledLinear` modules name it: the marker and the
    input scales dropped, each weight scale a scalar."""

    def __init__(self, source: Mapping[str, Any]) -> None:
        self.source = source
        self._keys = [k for k in source if k != MARKER and not k.endswith(SCALE_INPUT)]
        self._set = set(self._keys)

    def __getitem__(self, key: str) -> Any:
        if key not in self._set:
            raise KeyError(key)
        tensor = self.source[key]
        return tensor.reshape(()) if key.endswith(SCALE_WEIGHT) else tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
