"""NVFP4 and MXFP8 test files as ComfyUI writes them, quantised by comfy-kitchen (a
test-only dependency: imported when a helper is called)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import torch


def _config(fmt: str) -> torch.Tensor:
    return torch.tensor(list(json.dumps({"format": fmt}).encode()), dtype=torch.uint8)


#: A layer quantiser: ``weight`` -> (its stored tensors by suffix, its float32 dequantisation
#: at the stored, padded shape).
LayerQuantizer = Callable[[torch.Tensor], tuple[dict[str, torch.Tensor], torch.Tensor]]


def _quantized_state(
    state: Mapping[str, torch.Tensor],
    quantized: Callable[[str], bool],
    fmt: str,
    quantize: LayerQuantizer,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(stored, dequantized)`` with each 2-D ``<layer>.weight`` that ``quantized(key)`` picks
    stored by ``quantize`` under ``<layer>`` plus a ``comfy_quant`` config of ``fmt``."""
    config = _config(fmt)
    stored: dict[str, torch.Tensor] = {}
    dequantized: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if tensor.ndim != 2 or not key.endswith(".weight") or not quantized(key):
            stored[key] = dequantized[key] = tensor
            continue
        layer = key.removesuffix(".weight")
        tensors, values = quantize(tensor)
        stored.update({layer + suffix: value for suffix, value in tensors.items()})
        stored[f"{layer}.comfy_quant"] = config.clone()
        rows, cols = tensor.shape
        dequantized[key] = values[:rows, :cols].contiguous()
    return stored, dequantized


def nvfp4_state(
    state: Mapping[str, torch.Tensor], quantized: Callable[[str], bool]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(stored, dequantized)``: ``state`` with each 2-D ``<layer>.weight`` that
    ``quantized(key)`` picks quantised by comfy-kitchen's NVFP4 layout (``weight``,
    ``weight_scale``, ``weight_scale_2``, ``comfy_quant``), and the same state with those
    weights replaced by comfy-kitchen's float32 dequantisation of what is stored."""
    import comfy_kitchen as ck
    from comfy_kitchen.tensor.nvfp4 import TensorCoreNVFP4Layout

    def quantize(weight: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        packed, params = TensorCoreNVFP4Layout.quantize(weight)
        tensors = {
            ".weight": packed,
            ".weight_scale": params.block_scale,
            ".weight_scale_2": params.scale,
        }
        values = ck.dequantize_nvfp4(packed, params.scale, params.block_scale, torch.float32)
        return tensors, values

    return _quantized_state(state, quantized, "nvfp4", quantize)


def mxfp8_state(
    state: Mapping[str, torch.Tensor], quantized: Callable[[str], bool]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(stored, dequantized)`` as :func:`nvfp4_state`, in comfy-kitchen's MXFP8 layout
    (float8 ``weight`` padded to 32, E8M0 ``weight_scale``, ``comfy_quant``)."""
    import comfy_kitchen as ck
    from comfy_kitchen.tensor.mxfp8 import TensorCoreMXFP8Layout

    def quantize(weight: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        values, params = TensorCoreMXFP8Layout.quantize(weight)
        tensors = {".weight": values, ".weight_scale": params.scale}
        return tensors, ck.dequantize_mxfp8(values, params.scale, torch.float32)

    return _quantized_state(state, quantized, "mxfp8", quantize)


def as_quantization_metadata(
    stored: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``stored`` (with ``comfy_quant`` tensors) re-laid as newer ComfyUI files are: no
    config tensors, the layers described in the header's ``_quantization_metadata``."""
    layers = {
        key.removesuffix(".comfy_quant"): json.loads(bytes(value.tolist()))
        for key, value in stored.items()
        if key.endswith(".comfy_quant")
    }
    tensors = {k: v for k, v in stored.items() if not k.endswith(".comfy_quant")}
    header = {"format_version": "1.0", "layers": layers}
    return tensors, {"_quantization_metadata": json.dumps(header)}
