"""A LoRA merge equals ComfyUI's, bit for bit, for fp16 and bf16 stored weights.

ComfyUI's rule (``patch_weight_to_device`` + ``LoRAAdapter.calculate_weight``), written out
here by hand: the model holds its 16/32-bit weights in the dtype it computes in (converted
at load); the patch copies the weight to float32, computes ``up @ down`` in float32,
multiplies it by ``strength * alpha / rank`` (one Python float), adds it, applies every
further patch the same way, and rounds the result once to the model's dtype.
"""

from __future__ import annotations

import pytest
import torch
from loom_lora.adapters.lora import LoraPatch
from torch import nn

from loom.memory import MemoryManager, ModelHandle, cpu_device, ops

RANK, ALPHA = 8, 4.0


def _handle(stored: torch.dtype) -> ModelHandle:
    g = torch.Generator().manual_seed(0)
    layer = ops.Linear(384, 320, dtype=stored)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(320, 384, generator=g) * 0.05)
        layer.bias.copy_(torch.randn(320, generator=g) * 0.05)
    return ModelHandle(nn.Sequential(layer).requires_grad_(False))


def _lora(seed: int) -> LoraPatch:
    g = torch.Generator().manual_seed(seed)
    up = (torch.randn(320, RANK, generator=g) * 0.05).half()  # files store fp16 factors
    down = (torch.randn(RANK, 384, generator=g) * 0.05).half()
    return LoraPatch(up, down, alpha=ALPHA)


def comfy_merge(
    weight: torch.Tensor, loras: list[tuple[LoraPatch, float]], model_dtype: torch.dtype
) -> torch.Tensor:
    temp = weight.to(model_dtype).to(torch.float32, copy=True)
    for lora, strength in loras:
        diff = torch.mm(lora.up.float(), lora.down.float())
        temp += ((strength * (ALPHA / RANK)) * diff).type(temp.dtype)
    return temp.to(model_dtype)


@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("compute", [torch.float32, "stored"])
def test_patched_weight_equals_comfyui_merge(stored, compute):
    compute = stored if compute == "stored" else compute
    handle = _handle(stored)
    base = handle.module[0].weight.detach().clone()
    loras = [(_lora(1), 0.8), (_lora(2), -0.35)]
    for lora, strength in loras:
        handle.add_patches({"0.weight": lora}, strength)
    manager = MemoryManager(cpu_device(), compute_dtype=compute)
    manager.load([handle])
    got = handle.module[0].weight.detach().clone()
    expected = comfy_merge(base, loras, compute)
    assert got.dtype == compute
    assert torch.equal(got, expected)
    if compute == torch.float32:
        # what rounding to the file's dtype gives instead: visibly not ComfyUI's weight
        assert not torch.equal(got, expected.to(stored).float())
    manager.unload(handle)
    assert torch.equal(handle.module[0].weight, base)  # the stored weight is back
    assert handle.module[0].weight.dtype == stored


def test_scale_then_add_is_not_a_fused_addmm():
    """The order ComfyUI uses differs from ``addmm`` in float32: pin the one Loom uses."""
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(320, 384, generator=g)
    lora = _lora(4)
    merged = lora.apply(weight, 0.8)
    expected = weight + (0.8 * (ALPHA / RANK)) * torch.mm(lora.up.float(), lora.down.float())
    assert torch.equal(merged, expected)


def comfy_dora(weight, lora, magnitude, strength):
    """ComfyUI's ``weight_decompose`` on a float32 weight, written out."""
    diff = torch.mm(lora.up.float(), lora.down.float()) * (ALPHA / RANK)
    calc = weight + diff
    if magnitude.shape[0] == calc.shape[0]:
        norm = weight.norm(dim=1, keepdim=True)  # the unpatched rows
    else:
        norm = calc.norm(dim=0, keepdim=True)
    calc = calc * (magnitude / (norm + torch.finfo(torch.float32).eps))
    return calc if strength == 1.0 else weight + strength * (calc - weight)


@pytest.mark.parametrize("axis", ["input", "output"])
@pytest.mark.parametrize("strength", [1.0, 0.7])
def test_dora_merge_equals_comfyui(axis, strength):
    from loom_lora.adapters.dora import DoraPatch

    g = torch.Generator().manual_seed(9)
    weight = torch.randn(320, 384, generator=g) * 0.05
    shape = (1, 384) if axis == "input" else (320, 1)
    magnitude = torch.rand(shape, generator=g) + 0.5
    lora = _lora(5)
    got = DoraPatch(lora, magnitude).apply(weight, strength)
    assert torch.equal(got, comfy_dora(weight, lora, magnitude, strength))
