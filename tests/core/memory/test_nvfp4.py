"""NVFP4 layers (``comfy_quant`` format ``nvfp4``) decode bit for bit as ComfyUI's
comfy-kitchen decodes them, stay packed in memory, and quantise a patched weight as ComfyUI
does; a file whose tensors do not fit the layer is named."""

from __future__ import annotations

import pytest
import torch
from device_params import DEVICES
from torch import nn

from loom.memory import (
    NvFp4Linear,
    QuantLayoutError,
    ScaledView,
    load_into_module,
    nvfp4,
    ops,
    quant_config_tensors,
    scale_layers,
)

ck = pytest.importorskip("comfy_kitchen")
from comfy_kitchen.tensor.nvfp4 import TensorCoreNVFP4Layout  # noqa: E402

#: Rows/columns off the 128-row / 64-column tiles of the blocked scale layout (and, for
#: some, off the 16 of the packing), so every padding rule is exercised.
SHAPES = [(200, 72), (130, 40), (33, 100), (256, 128)]


def _reference(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(packed, block scales, tensor scale)`` as ComfyUI's quantiser stores ``weight``."""
    packed, params = TensorCoreNVFP4Layout.quantize(weight)
    return packed, params.block_scale, params.scale


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view({4: torch.int32, 2: torch.int16}[tensor.element_size()])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dequantize_equals_comfy_kitchen_bitwise(shape, dtype):
    g = torch.Generator().manual_seed(shape[0])
    weight = torch.randn(shape, generator=g) * 0.03
    packed, blocks, scale = _reference(weight.to(torch.bfloat16))
    expected = ck.dequantize_nvfp4(packed, scale, blocks, dtype)[: shape[0], : shape[1]]
    got = nvfp4.dequantize(packed, scale, blocks, shape, dtype)
    assert got.dtype == dtype and got.shape == shape
    assert torch.equal(_bits(got), _bits(expected))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_quantize_equals_comfyuis_requantisation_bitwise(shape, dtype):
    g = torch.Generator().manual_seed(7)
    weight = (torch.randn(shape, generator=g) * 0.05).to(dtype)
    weight[0, :4] = torch.tensor([0.0, -0.0, 1e-4, -1e-4])
    packed, blocks, scale = _reference(weight)
    got = nvfp4.quantize(weight)
    assert torch.equal(got.packed, packed)
    assert torch.equal(got.block_scales.view(torch.uint8), blocks.view(torch.uint8))
    assert torch.equal(got.tensor_scale, scale)


def test_e2m1_rounds_ties_to_the_even_code():
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -5.0, -0.0])
    values = torch.tensor(nvfp4.E2M1_VALUES)[nvfp4.encode_e2m1(ties).long()]
    expected = torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -0.0, -4.0, -0.0])
    assert torch.equal(values, expected)
    assert torch.equal(torch.signbit(values), torch.signbit(expected))


class Layer(nn.Module):
    def __init__(self, out_features: int, in_features: int) -> None:
        super().__init__()
        self.proj = ops.Linear(in_features, out_features)


def _file(shape: tuple[int, int], block_scales_as_bytes: bool = False) -> dict:
    g = torch.Generator().manual_seed(1)
    packed, blocks, scale = _reference(torch.randn(shape, generator=g) * 0.02)
    return {
        "proj.weight": packed,
        "proj.weight_scale": blocks.view(torch.uint8) if block_scales_as_bytes else blocks,
        "proj.weight_scale_2": scale,
        "proj.input_scale": torch.tensor(0.5),
        "proj.bias": torch.randn(shape[0], generator=g),
        "proj.comfy_quant": torch.tensor(list(b'{"format": "nvfp4"}'), dtype=torch.uint8),
    }


def _loaded(file: dict, shape: tuple[int, int]) -> Layer:
    view = ScaledView(file)
    with torch.device("meta"):
        module = Layer(*shape)
    scale_layers(module, view.layers)
    load_into_module(module, view)
    return module


@pytest.mark.parametrize("as_bytes", [False, True])
def test_a_loaded_nvfp4_layer_stays_packed_and_computes_with_comfyuis_weight(as_bytes):
    shape = (200, 72)
    file = _file(shape, block_scales_as_bytes=as_bytes)
    module = _loaded(file, shape)
    layer = module.proj
    assert isinstance(layer, NvFp4Linear)
    assert layer.weight.dtype == torch.uint8 and layer.weight.shape == (208, 40)
    assert layer.weight_scale.dtype == torch.float8_e4m3fn
    blocks = file["proj.weight_scale"].view(torch.float8_e4m3fn)
    x = torch.randn(3, shape[1], dtype=torch.bfloat16)
    weight = ck.dequantize_nvfp4(file["proj.weight"], file["proj.weight_scale_2"], blocks, x.dtype)
    expected = nn.functional.linear(x, weight[:200, :72], file["proj.bias"].to(x.dtype))
    assert torch.equal(layer(x), expected)
    # saved back as ComfyUI saves it: packed weight, both scales, the input scale, the config
    saved = module.state_dict() | quant_config_tensors(module)
    assert set(saved) == set(file)
    assert bytes(saved["proj.comfy_quant"].tolist()) == b'{"format": "nvfp4"}'
    assert torch.equal(saved["proj.weight"], file["proj.weight"])


def test_an_nvfp4_layer_holds_about_half_a_byte_per_parameter():
    shape = (1024, 512)
    module = _loaded(_file(shape), shape)
    layer = module.proj
    stored = sum(
        t.numel() * t.element_size()
        for t in (layer.weight, layer.weight_scale, layer.weight_scale_2)
    )
    per_parameter = stored / (shape[0] * shape[1])
    assert 0.56 <= per_parameter < 0.57  # 4 bits + one float8 per 16, not a dequantised copy


def test_a_patched_weight_is_requantised_and_dequantised_in_the_merge_dtype():
    shape = (130, 40)
    layer = _loaded(_file(shape), shape).proj
    packed = layer.weight.to(torch.float32)  # how a merge hands the stored weight over
    values = layer.dequantize("weight", packed)
    assert torch.equal(values, layer.dequantized(torch.device("cpu"), torch.float32))
    merged = values + 0.01
    new = layer.requantize("weight", merged, seed=123)
    packed_ref, blocks_ref, scale_ref = _reference(merged)
    assert torch.equal(new["weight"], packed_ref)
    assert torch.equal(new["weight_scale"].view(torch.uint8), blocks_ref.view(torch.uint8))
    assert torch.equal(new["weight_scale_2"], scale_ref)


def test_a_block_scale_of_the_wrong_shape_is_named():
    shape = (200, 72)
    file = _file(shape)
    file["proj.weight_scale"] = file["proj.weight_scale"][:128]
    view = ScaledView(file)
    with torch.device("meta"):
        module = Layer(*shape)
    with pytest.raises(
        QuantLayoutError, match=r"proj\.weight_scale has shape \[128, 8\].*\[256, 8\]"
    ):
        scale_layers(module, view.layers)


def test_a_packed_weight_for_another_layer_size_is_named():
    file = _file((200, 72))
    with torch.device("meta"):
        module = Layer(200, 64)
    with pytest.raises(QuantLayoutError, match=r"proj\.weight has shape \[208, 40\].*64 inputs"):
        scale_layers(module, ScaledView(file).layers)


def test_an_nvfp4_layer_without_its_tensor_scale_is_named():
    file = _file((200, 72))
    del file["proj.weight_scale_2"]
    with pytest.raises(ValueError, match=r"proj\.comfy_quant.*proj\.weight_scale_2"):
        ScaledView(file)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dequantize_on_each_device_equals_comfy_kitchen_there(device, dtype):
    # ComfyUI off Blackwell dequantises on the compute device with whichever comfy-kitchen
    # backend serves it there (its CUDA kernels on a GPU; the eager one on the CPU and MPS,
    # where the eager result is taken on the CPU: MPS has no float8)
    shape = (200, 72)
    g = torch.Generator().manual_seed(9)
    packed, blocks, scale = _reference(torch.randn(shape, generator=g) * 0.03)
    there = device if device == "cuda" else "cpu"
    expected = ck.dequantize_nvfp4(packed.to(there), scale.to(there), blocks.to(there), dtype)
    got = nvfp4.dequantize(packed.to(device), scale, blocks, shape, dtype)
    assert got.device.type == device
    assert torch.equal(_bits(got.cpu()), _bits(expected[: shape[0], : shape[1]].cpu()))
