"""What saving a handle writes: ``patched_tensors`` (patches applied; a scaled-fp8 layer's
patched weight requantised with its scale and rounded with the seed loading uses, so the file
holds exactly the weights the handle computes with) and ``quant_config_tensors``."""

from __future__ import annotations

import torch
from torch import nn

from loom.memory import (
    DiffPatch,
    ModelHandle,
    ScaledLinear,
    ops,
    patched_tensors,
    quant_config_tensors,
    scale_layers,
)
from loom.memory.rounding import key_seed, round_to

FP8 = torch.float8_e4m3fn


class Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = ops.Linear(4, 3)
        self.b = ops.Linear(3, 2)


def _scaled_pair() -> nn.Module:
    torch.manual_seed(0)
    module = Pair().eval().requires_grad_(False)
    scale_layers(module, ["a"])
    module.a.weight = nn.Parameter((torch.randn(3, 4) * 4).to(FP8), requires_grad=False)
    module.a.weight_scale = torch.tensor(0.05)
    return module


def test_patched_tensors_requantise_a_scaled_weight_with_a_new_scale_and_the_load_seed():
    module = _scaled_pair()
    stored_b = module.b.weight.clone()
    handle = ModelHandle(module, name="pair")
    handle.comfy_prefix = "diffusion_model."
    diff = torch.randn(3, 4) * 0.1
    handle.add_patches({"a.weight": DiffPatch(diff), "b.weight": DiffPatch(torch.ones(2, 3))})
    tensors = patched_tensors(handle)
    merged = module.a.weight.float() * 0.05 + diff
    # ComfyUI 0.7+: the scale is recalculated from the merged weight
    scale = merged.abs().max() / 448.0
    expected = round_to(merged * (1.0 / scale), FP8, key_seed("diffusion_model.a.weight"))
    assert tensors["a.weight"].dtype == FP8
    assert torch.equal(tensors["a.weight"].view(torch.uint8), expected.view(torch.uint8))
    assert torch.equal(tensors["b.weight"], stored_b + 1)
    assert torch.equal(tensors["a.weight_scale"], scale)
    assert torch.equal(module.a.weight_scale, torch.tensor(0.05))
    assert torch.equal(module.b.weight, stored_b)  # the module itself stays unpatched


def test_quant_config_tensors_give_each_scaled_layer_comfyuis_config():
    configs = quant_config_tensors(_scaled_pair())
    assert list(configs) == ["a.comfy_quant"]
    assert configs["a.comfy_quant"].dtype == torch.uint8
    assert bytes(configs["a.comfy_quant"].tolist()) == b'{"format": "float8_e4m3fn"}'
    assert quant_config_tensors(Pair()) == {}
    assert isinstance(_scaled_pair().a, ScaledLinear)
