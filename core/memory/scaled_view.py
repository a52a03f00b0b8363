"""A quantised file (ComfyUI's scaled-fp8 layouts, old and new; NVFP4; MXFP8) seen as
:class:`loom.memory.ScaledLinear` / ``NvFp4Linear`` / ``MxFp8Linear`` modules name their
tensors, each quantised tensor in the dtype ComfyUI loads it as (:mod:`loom.memory.scaled`
describes the layouts)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

from loom.memory import mxfp8, nvfp4
from loom.memory.scaled import (
    FORMATS,
    INPUT_SCALE,
    MARKER,
    QUANT_CONFIG,
    SCALE_INPUT,
    SCALE_WEIGHT,
    TENSOR_SCALE,
    WEIGHT_SCALE,
    ScaledLayer,
    read_config,
)


class ScaledView(Mapping[str, Any]):
    """A quantised state dict (scaled fp8 in either layout, NVFP4, MXFP8) as
    :class:`ScaledLinear` modules name it: scales under ComfyUI's new names, the marker, the
    configs and an old file's input scales of 1.0 dropped. :attr:`layers` describes each
    quantised layer.

    :raises ValueError: a layer's ``comfy_quant`` names a format Loom does not load (not one
        of :data:`loom.memory.scaled.FORMATS`), or an nvfp4 / mxfp8 layer lacks a tensor its
        format needs.
    """

    def __init__(self, source: Mapping[str, Any]) -> None:
        self.source = source
        keys = list(source)
        present = set(keys)
        marker = source[MARKER] if MARKER in present else None
        full_precision = marker is not None and marker.numel() == 2
        #: module key -> source key
        self._names: dict[str, str] = {}
        self.layers: list[ScaledLayer] = []
        for key in keys:
            if key.endswith(SCALE_WEIGHT):
                name = key[: -len(SCALE_WEIGHT)]
                scale_input = self._kept_old_input_scale(name, present)
                self.layers.append(
                    ScaledLayer(
                        name,
                        tuple(source[key].shape),
                        scale_input,
                        full_precision_matrix_mult=full_precision,
                        key=key,
                    )
                )
            elif key.endswith(QUANT_CONFIG):
                name = key[: -len(QUANT_CONFIG)]
                try:
                    config = read_config(source[key])
                except ValueError as exc:
                    raise ValueError(f"{key}: not a quantisation config ({exc})") from exc
                fmt = config.get("format")
                if fmt not in FORMATS:
                    raise ValueError(
                        f"{key}: quantisation format {fmt!r} is not supported "
                        f"(supported: {', '.join(FORMATS)})"
                    )
                if fmt == mxfp8.MXFP8 and mxfp8.e8m0_dtype() is None:
                    raise ValueError(
                        f"{key}: an mxfp8 layer needs torch 2.7 or later (float8_e8m0fnu); "
                        f"this is torch {torch.__version__}"
                    )
                if fmt in (nvfp4.NVFP4, mxfp8.MXFP8):
                    self.layers.append(self._block_layer(name, fmt, config, key, present))
                    continue
                scale = name + WEIGHT_SCALE
                self.layers.append(
                    ScaledLayer(
                        name,
                        tuple(source[scale].shape) if scale in present else (),
                        name + INPUT_SCALE in present,
                        fmt,
                        bool(config.get("full_precision_matrix_mult", False)),
                        key,
                    )
                )
        kept_inputs = {layer.name for layer in self.layers if layer.has_input_scale}
        #: each scaled weight's storage dtype: ComfyUI casts a weight stored otherwise (an
        #: old-layout file of e5m2 weights, whose layers it declares e4m3fn) at load
        self._storage: dict[str, torch.dtype] = {}
        #: an nvfp4 layer's block scales: ComfyUI reads their bytes as float8_e4m3fn
        self._viewed: dict[str, torch.dtype] = {}
        for layer in self.layers:
            if layer.quant_format == nvfp4.NVFP4:
                self._storage[layer.name + ".weight"] = torch.uint8
                self._storage[layer.name + TENSOR_SCALE] = torch.float32
                self._viewed[layer.name + WEIGHT_SCALE] = torch.float8_e4m3fn
            elif layer.quant_format == mxfp8.MXFP8:
                self._storage[layer.name + ".weight"] = torch.float8_e4m3fn
                self._viewed[layer.name + WEIGHT_SCALE] = torch.float8_e8m0fnu
            else:
                self._storage[layer.name + ".weight"] = getattr(torch, layer.quant_format)
        for key in keys:
            if key == MARKER or key.endswith(QUANT_CONFIG):
                continue
            if key.endswith(SCALE_WEIGHT):
                self._names[key[: -len(SCALE_WEIGHT)] + WEIGHT_SCALE] = key
            elif key.endswith(SCALE_INPUT):
                name = key[: -len(SCALE_INPUT)]
                if name in kept_inputs:
                    self._names[name + INPUT_SCALE] = key
            else:
                self._names[key] = key

    def _block_layer(
        self, name: str, fmt: str, config: Mapping[str, Any], key: str, present: set[str]
    ) -> ScaledLayer:
        needed = [name + ".weight", name + WEIGHT_SCALE]
        if fmt == nvfp4.NVFP4:
            needed.append(name + TENSOR_SCALE)
        missing = [k for k in needed if k not in present]
        if missing:
            raise ValueError(f"{key}: an {fmt} layer without {', '.join(missing)}")
        weight, scales = self.source[needed[0]], self.source[needed[1]]
        tensor_scale = self.source[needed[2]] if len(needed) == 3 else None
        return ScaledLayer(
            name,
            tuple(scales.shape),
            name + INPUT_SCALE in present,
            fmt,
            bool(config.get("full_precision_matrix_mult", False)),
            key,
            weight_shape=tuple(weight.shape),
            tensor_scale_shape=() if tensor_scale is None else tuple(tensor_scale.shape),
        )

    def _kept_old_input_scale(self, name: str, present: set[str]) -> bool:
        # ComfyUI drops an old-layout input scale of exactly 1.0 when converting
        key = name + SCALE_INPUT
        return key in present and float(self.source[key].float().flatten()[0]) != 1.0

    def __getitem__(self, key: str) -> Any:
        tensor = self.source[self._names[key]]
        storage = self._storage.get(key)
        if storage is not None and tensor.dtype != storage:
            return tensor.to(storage)
        viewed = self._viewed.get(key)
        if viewed is not None and tensor.dtype != viewed and tensor.element_size() == 1:
            return tensor.view(viewed)
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
