"""Model handles: cheap clones of the same class with their own patches and object patches."""

from __future__ import annotations

import torch
from memory_helpers import make_net, snapshot

from loom.memory import DiffPatch, MemoryManager, ModelHandle, simulated_device


def manager(capacity: int = 2**30) -> MemoryManager:
    return MemoryManager(simulated_device(capacity), budget_bytes=capacity)


def test_clone_shares_weights_but_not_patches(net):
    base = ModelHandle(net, name="net")
    clone = base.clone()
    assert clone.module is base.module and clone.is_clone(base)
    clone.add_patches({"out.weight": DiffPatch(torch.ones_like(net.out.weight))})
    assert "out.weight" in clone.weight_patches
    assert base.weight_patches == {}


def test_patching_a_clone_leaves_original_outputs_unchanged(net, x):
    mm = manager()
    base = ModelHandle(net)
    before = snapshot(net)
    reference = net(x)
    clone = base.clone()
    clone.add_patches({"out.weight": DiffPatch(torch.full_like(net.out.weight, 0.5))}, strength=0.8)
    mm.load([clone])
    assert not torch.allclose(net(x), reference)
    mm.load([base])  # reverts the clone's patches first
    assert torch.equal(net(x), reference)
    mm.unload_all()
    after = snapshot(net)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_two_clones_with_different_patches(net, x):
    mm = manager()
    a = ModelHandle(net).clone()
    b = a.clone()
    a.add_patches({"blocks.0.weight": DiffPatch(torch.ones_like(net.blocks[0].weight))})
    b.add_patches({"blocks.1.weight": DiffPatch(torch.ones_like(net.blocks[1].weight))})
    mm.load([a])
    out_a = net(x)
    mm.load([b])
    out_b = net(x)
    mm.load([a])
    assert torch.equal(net(x), out_a) and not torch.allclose(out_a, out_b)
    assert a.is_loaded and not b.is_loaded


def test_add_patches_ignores_unknown_keys(net):
    handle = ModelHandle(net)
    used = handle.add_patches(
        {"out.weight": DiffPatch(torch.zeros(4, 16)), "nope.weight": DiffPatch(torch.zeros(1))}
    )
    assert used == ["out.weight"]


def test_clone_keeps_the_subclass_and_its_attributes(net):
    class FamilyHandle(ModelHandle):
        def __init__(self, module, *, label):
            super().__init__(module)
            self.label = label

    base = FamilyHandle(net, label="sd15")
    base.add_object_patch("ln", torch.nn.Identity())
    clone = base.clone()
    assert type(clone) is FamilyHandle and clone.label == "sd15" and clone.is_clone(base)
    clone.add_object_patch("out", torch.nn.Identity())
    assert set(base.object_patches) == {"ln"} and set(clone.object_patches) == {"ln", "out"}


def test_object_patches_apply_while_loaded(net, x):
    mm = manager()
    handle = ModelHandle(net).clone()
    original_ln = net.ln
    handle.add_object_patch("ln", torch.nn.Identity())
    assert isinstance(handle.get_model_object("ln"), torch.nn.Identity)
    assert ModelHandle(net).get_model_object("ln") is original_ln
    mm.load([handle])
    assert isinstance(net.ln, torch.nn.Identity)
    mm.unload_all()
    assert net.ln is original_ln


def test_memory_estimate_default_and_custom():
    handle = ModelHandle(make_net())
    assert handle.memory_estimate((2, 4, 8, 8), torch.float32) > 2 * 4 * 8 * 8 * 4
    handle.memory_estimator = lambda shape, dtype: 1234
    assert handle.clone().memory_estimate((1, 4, 64, 64), torch.float16) == 1234
    assert handle.size_bytes() == sum(p.numel() * 4 for p in handle.module.parameters())
