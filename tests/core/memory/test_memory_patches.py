"""Weight patches: float32 math, cast back, bitwise-exact revert through many cycles."""

from __future__ import annotations

import pytest
import torch
from memory_helpers import bits, make_input, make_net, snapshot

from loom.memory import (
    DiffPatch,
    MemoryManager,
    ModelHandle,
    ReplacePatch,
    ScalePatch,
    simulated_device,
)
from loom.memory.patches import patched_weight


def _assert_bitwise(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("capacity", [2**30, 3000])  # whole, and partially loaded
def test_bitwise_restore_after_cycles(dtype, capacity):
    net = make_net(dtype=dtype)
    before = snapshot(net)
    mm = MemoryManager(simulated_device(capacity), budget_bytes=capacity)
    handle = ModelHandle(net)
    gen = torch.Generator().manual_seed(3)
    for cycle in range(4):
        clone = handle.clone()
        for key in ("blocks.0.weight", "out.weight", "norm.weight", "conv.bias"):
            shape = net.get_parameter(key).shape
            clone.add_patches(
                {key: DiffPatch(torch.randn(shape, generator=gen))}, strength=0.1 * (cycle + 1)
            )
        mm.load([clone])
        net(make_input().to(dtype))
        mm.load([handle]) if cycle % 2 else mm.unload_all()
    mm.unload_all()
    _assert_bitwise(snapshot(net), before)


def test_patch_is_computed_in_float32_and_cast_back():
    weight = torch.randn(8, 8).half()
    diff = torch.randn(8, 8)
    out = patched_weight(weight, [(DiffPatch(diff), 0.3), (DiffPatch(diff), -0.1)])
    expected = ((weight.float() + 0.3 * diff) - 0.1 * diff).half()
    assert out.dtype == torch.float16 and torch.equal(bits(out), bits(expected))
    assert not torch.equal(bits(out), bits(weight))


def test_replace_patch_blends():
    weight = torch.zeros(3)
    out = patched_weight(weight, [(ReplacePatch(torch.ones(3)), 0.25)])
    assert torch.allclose(out, torch.full((3,), 0.25))


def test_scale_patch_scales_after_earlier_patches_and_blends_with_strength():
    weight = torch.full((3,), 2.0)
    diff = torch.ones(3)
    out = patched_weight(weight, [(DiffPatch(diff), 1.0), (ScalePatch(1.5), 1.0)])
    assert torch.equal(out, torch.full((3,), 4.5))  # (2 + 1) * 1.5: the diff is scaled too
    assert torch.equal(patched_weight(weight, [(ScalePatch(3.0), 0.5)]), torch.full((3,), 4.0))


def test_patched_output_matches_manual_patch(x):
    net = make_net()
    diff = torch.randn_like(net.out.weight)
    handle = ModelHandle(net).clone()
    handle.add_patches({"out.weight": DiffPatch(diff)}, strength=0.5)
    mm = MemoryManager(simulated_device(2**20), budget_bytes=2**20)
    mm.load([handle])
    patched = net(x)
    mm.unload_all()
    with torch.no_grad():
        net.out.weight += 0.5 * diff
    assert torch.allclose(patched, net(x))


def test_unpatched_weights_are_not_copied():
    net = make_net()
    ptr = net.blocks[2].weight.data_ptr()
    handle = ModelHandle(net).clone()
    handle.add_patches({"out.weight": DiffPatch(torch.zeros_like(net.out.weight))})
    MemoryManager(simulated_device(2**20), budget_bytes=2**20).load([handle])
    assert net.blocks[2].weight.data_ptr() == ptr
    assert net.out.weight.data_ptr() != 0


def test_changed_patches_are_reapplied(x):
    net = make_net()
    mm = MemoryManager(simulated_device(2**20), budget_bytes=2**20)
    handle = ModelHandle(net).clone()
    mm.load([handle])
    base = net(x)
    handle.add_patches({"out.bias": DiffPatch(torch.ones(4))})
    mm.load([handle])
    assert torch.allclose(net(x), base + 1, atol=1e-6)
    assert mm.evictions[-1].reason == "patches changed"


def test_strength_zero_leaves_weights_bitwise_identical_including_negative_zero():
    import torch

    from loom.memory.patches import DiffPatch, patched_weight

    weight = torch.tensor([-0.0, 1.5, -2.25], dtype=torch.float16)
    out = patched_weight(weight, [(DiffPatch(torch.ones(3)), 0.0)])
    assert torch.equal(out.view(torch.int16), weight.view(torch.int16))
