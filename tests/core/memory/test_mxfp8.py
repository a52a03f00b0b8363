"""MXFP8 layers (``comfy_quant`` format ``mxfp8``) decode bit for bit as ComfyUI's
comfy-kitchen decodes them, stay float8 in memory, and quantise a patched weight as ComfyUI
does; a file whose tensors do not fit the layer is named."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from loom.memory import (
    MxFp8Linear,
    QuantLayoutError,
    ScaledView,
    load_into_module,
    mxfp8,
    ops,
    quant_config_tensors,
    scale_layers,
)

ck = pytest.importorskip("comfy_kitchen")
from comfy_kitchen.tensor.mxfp8 import TensorCoreMXFP8Layout  # noqa: E402

#: Off the 32-padding and the 128-row / 4-block tiles of the scale layout.
SHAPES = [(200, 72), (130, 40), (33, 100), (256, 256)]


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view({4: torch.int32, 2: torch.int16}[tensor.element_size()])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dequantize_equals_comfy_kitchen_bitwise(shape, dtype):
    g = torch.Generator().manual_seed(shape[0])
    weight = torch.randn(shape, generator=g) * 0.03
    weight[0, :32] = 0  # an all-zero block (scale byte 0)
    values, params = TensorCoreMXFP8Layout.quantize(weight.to(torch.bfloat16))
    expected = ck.dequantize_mxfp8(values, params.scale, dtype)[: shape[0], : shape[1]]
    got = mxfp8.dequantize(values, params.scale, shape, dtype)
    assert got.dtype == dtype and got.shape == shape
    assert torch.equal(_bits(got), _bits(expected))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_quantize_equals_comfyuis_requantisation_bitwise(shape, dtype):
    weight = (torch.randn(shape, generator=torch.Generator().manual_seed(7)) * 0.05).to(dtype)
    weight[1, :32] = 0
    values, params = TensorCoreMXFP8Layout.quantize(weight)
    got = mxfp8.quantize(weight)
    assert torch.equal(got.values.view(torch.uint8), values.view(torch.uint8))
    assert got.block_scales.dtype == params.scale.dtype
    assert torch.equal(got.block_scales.view(torch.uint8), params.scale.view(torch.uint8))


class Layer(nn.Module):
    def __init__(self, out_features: int, in_features: int) -> None:
        super().__init__()
        self.proj = ops.Linear(in_features, out_features)


def _file(shape: tuple[int, int], scales_as_bytes: bool = False) -> dict:
    g = torch.Generator().manual_seed(1)
    values, params = TensorCoreMXFP8Layout.quantize(torch.randn(shape, generator=g) * 0.02)
    return {
        "proj.weight": values,
        "proj.weight_scale": params.scale.view(torch.uint8) if scales_as_bytes else params.scale,
        "proj.bias": torch.randn(shape[0], generator=g),
        "proj.comfy_quant": torch.tensor(list(b'{"format": "mxfp8"}'), dtype=torch.uint8),
    }


def _loaded(file: dict, shape: tuple[int, int]) -> Layer:
    view = ScaledView(file)
    with torch.device("meta"):
        module = Layer(*shape)
    scale_layers(module, view.layers)
    load_into_module(module, view)
    return module


@pytest.mark.parametrize("as_bytes", [False, True])
def test_a_loaded_mxfp8_layer_stays_float8_and_computes_with_comfyuis_weight(as_bytes):
    shape = (200, 72)
    file = _file(shape, scales_as_bytes=as_bytes)
    module = _loaded(file, shape)
    layer = module.proj
    assert isinstance(layer, MxFp8Linear)
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.weight.shape == (224, 96)
    assert layer.weight_scale.dtype == torch.float8_e8m0fnu
    x = torch.randn(3, shape[1], dtype=torch.bfloat16)
    scales = file["proj.weight_scale"].view(torch.float8_e8m0fnu)
    weight = ck.dequantize_mxfp8(file["proj.weight"], scales, x.dtype)
    expected = nn.functional.linear(x, weight[:200, :72], file["proj.bias"].to(x.dtype))
    assert torch.equal(layer(x), expected)
    saved = module.state_dict() | quant_config_tensors(module)
    assert set(saved) == set(file)
    assert bytes(saved["proj.comfy_quant"].tolist()) == b'{"format": "mxfp8"}'
    stored = layer.weight.numel() + layer.weight_scale.numel()
    assert stored / (shape[0] * shape[1]) < 1.6  # 1 byte a value (padded), not a float copy


def test_a_patched_mxfp8_weight_is_requantised_as_comfyui_does():
    shape = (130, 40)
    layer = _loaded(_file(shape), shape).proj
    values = layer.dequantize("weight", layer.weight.to(torch.float32))
    assert torch.equal(values, layer.dequantized(torch.device("cpu"), torch.float32))
    merged = values + 0.01
    new = layer.requantize("weight", merged, seed=5)
    expected, params = TensorCoreMXFP8Layout.quantize(merged)
    assert torch.equal(new["weight"].view(torch.uint8), expected.view(torch.uint8))
    assert torch.equal(new["weight_scale"].view(torch.uint8), params.scale.view(torch.uint8))


def test_a_block_scale_of_the_wrong_shape_is_named():
    file = _file((200, 72))
    file["proj.weight_scale"] = file["proj.weight_scale"][:128]
    with torch.device("meta"):
        module = Layer(200, 72)
    with pytest.raises(QuantLayoutError, match=r"proj\.weight_scale has shape \[128, 4\].*mxfp8"):
        scale_layers(module, ScaledView(file).layers)
