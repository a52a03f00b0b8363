"""Cast-on-the-fly layers: weights stored in fp16/bf16/fp8, compute in fp32 (or bf16)."""

from __future__ import annotations

import copy

import pytest
import torch
from memory_helpers import make_input, make_net

from loom.memory import (
    MemoryManager,
    ModelHandle,
    cast_to,
    ops,
    set_compute_dtype,
    simulated_device,
)

STORAGE = [
    (torch.float32, 1e-6),
    (torch.float16, 5e-3),
    (torch.bfloat16, 3e-2),
    (torch.float8_e4m3fn, 1.5e-1),
    (torch.float8_e5m2, 3e-1),
]


def rounded(net: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """An fp32 copy whose weights went through ``dtype`` (what the cast layers compute with)."""
    return cast_to(cast_to(copy.deepcopy(net), dtype), torch.float32)


@pytest.mark.parametrize(("dtype", "tolerance"), STORAGE)
def test_storage_dtype_with_fp32_compute_matches_reference(dtype, tolerance):
    reference, x = make_net(), make_input()
    expected = reference(x)
    stored = cast_to(copy.deepcopy(reference), dtype)
    assert all(p.dtype == dtype for p in stored.parameters())
    out = stored(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, rounded(reference, dtype)(x), atol=1e-5, rtol=1e-5)
    scale = expected.abs().max()
    assert (out - expected).abs().max() <= tolerance * scale


def test_compute_dtype_overrides_input_dtype():
    net = cast_to(make_net(), torch.float16)
    assert set_compute_dtype(net, torch.bfloat16) == 8
    out = net(make_input())
    assert out.dtype == torch.bfloat16


def test_manager_sets_compute_dtype_and_keeps_storage():
    net = cast_to(make_net(), torch.float8_e4m3fn)
    handle = ModelHandle(net, compute_dtype=torch.bfloat16)
    MemoryManager(simulated_device(2**20), budget_bytes=2**20).load([handle])
    assert net.out.compute_dtype == torch.bfloat16
    assert net.out.weight.dtype == torch.float8_e4m3fn


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float8_e4m3fn])
def test_embedding(dtype):
    torch.manual_seed(0)
    emb = ops.Embedding(10, 6)
    reference = emb.weight.detach().clone()
    cast_to(emb, dtype)
    ids = torch.tensor([[1, 2, 9]])
    out = emb(ids)
    assert out.dtype == (torch.float32 if dtype != torch.float16 else torch.float16)
    assert torch.allclose(out.float(), reference.to(dtype).float()[ids])


@pytest.mark.parametrize(
    "layer",
    [
        lambda: ops.Conv1d(3, 5, 3),
        lambda: ops.Conv3d(3, 5, 3, padding=1),
        lambda: ops.GroupNorm(1, 3, affine=False),
        lambda: ops.LayerNorm(3, elementwise_affine=False),
        lambda: ops.Linear(3, 5, bias=False),
    ],
)
def test_other_layers_match_torch(layer):
    torch.manual_seed(0)
    module = layer()
    shapes = {
        ops.Conv1d: (2, 3, 8),
        ops.Conv3d: (1, 3, 4, 4, 4),
        ops.GroupNorm: (2, 3, 4),
        ops.LayerNorm: (2, 4, 3),
        ops.Linear: (2, 3),
    }
    x = torch.randn(shapes[type(module)])
    expected = super(type(module), module).forward(x)  # the plain torch layer
    half = cast_to(copy.deepcopy(module), torch.float16)
    assert torch.allclose(half(x), expected, atol=1e-2)
    assert torch.allclose(module(x), expected)
