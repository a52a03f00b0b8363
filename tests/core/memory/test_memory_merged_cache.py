"""The merged-weights cache: switching between a patched clone and its plain MODEL merges
each weight once, the weights are bitwise those of a fresh merge, the kept copies count
against the budget (not kept when they do not fit: merged again), and go before models."""

from __future__ import annotations

import pytest
import torch
from memory_helpers import bits, make_input, make_net, snapshot

import loom.memory.placement as placement
from loom.memory import DiffPatch, MemoryManager, MergedWeightCache, ModelHandle, simulated_device

PATCHED = ("blocks.0.weight", "blocks.2.weight", "out.bias")


@pytest.fixture
def merges(monkeypatch):
    counted = []
    original = placement.patched_weight

    def counting(*args, **kwargs):
        counted.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(placement, "patched_weight", counting)
    return counted


def weights(module):
    return {k: bits(v) for k, v in module.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def patched_pair(cache, strength=0.7):
    """A plain clone and a patched clone of one net, sharing ``cache``."""
    net = make_net()
    state = net.state_dict()
    gen = torch.Generator().manual_seed(5)
    patches = {k: DiffPatch(torch.randn(state[k].shape, generator=gen)) for k in PATCHED}
    base = ModelHandle(net, name="net")
    plain, hooked = base.clone(), base.clone()
    plain.merged_cache = hooked.merged_cache = cache
    hooked.add_patches(patches, strength)
    return net, plain, hooked


def manager(capacity):
    return MemoryManager(simulated_device(capacity), budget_bytes=capacity)


def test_switching_clones_merges_each_weight_once_and_gives_the_same_bits(merges):
    net, plain, hooked = patched_pair(MergedWeightCache())
    stored = snapshot(net)
    mm = manager(100 * plain.size_bytes())
    x = make_input()
    mm.load([hooked])
    first = weights(net)
    first_out = net(x)
    for _ in range(3):
        mm.load([plain])
        assert same(weights(net), stored)
        mm.load([hooked])
        assert same(weights(net), first)
        assert torch.equal(net(x), first_out)
    assert len(merges) == len(PATCHED)  # once each, then found again
    assert hooked.merged_cache.reused == 3 * len(PATCHED)


def test_without_a_cache_every_load_merges_again_to_the_same_bits(merges):
    _, cached_plain, cached_hooked = patched_pair(MergedWeightCache())
    net, plain, hooked = patched_pair(None)
    mm = manager(100 * plain.size_bytes())
    for _ in range(3):
        mm.load([hooked])
        mm.load([plain])
    assert len(merges) == 3 * len(PATCHED)
    mm.load([hooked])
    uncached = weights(net)
    mm.load([cached_hooked])
    mm.load([cached_plain])
    mm.load([cached_hooked])
    assert same(weights(cached_hooked.module), uncached)


def test_kept_copies_count_against_the_budget_and_go_first(merges):
    cache = MergedWeightCache()
    _, plain, hooked = patched_pair(cache)
    size = plain.size_bytes()
    mm = manager(4 * size)
    mm.load([hooked])
    assert mm.cached_bytes() == 0  # the loaded clone holds the kept tensors themselves
    mm.load([plain])
    kept = cache.held_bytes
    assert kept > 0 and mm.cached_bytes() == kept
    assert mm.used_bytes == size + kept
    # room asked for: the kept copies go before any model does
    mm.load([plain], extra_memory=4 * size - size - kept // 2)
    assert mm.cached_bytes() == 0 and len(cache) == 0 and plain.is_loaded
    assert {e.reason for e in mm.evictions} == {"another clone requested"}  # no model evicted


def test_copies_that_do_not_fit_are_merged_again(merges):
    cache = MergedWeightCache()
    _, plain, hooked = patched_pair(cache)
    size = plain.size_bytes()
    mm = manager(size + 8)  # room for the model, not for any of its merged copies
    for _ in range(2):
        mm.load([hooked])
        mm.load([plain])
        assert mm.used_bytes <= size + 8
    assert len(cache) == 0 and len(merges) == 2 * len(PATCHED)


def test_other_strengths_are_other_merges(merges):
    cache = MergedWeightCache()
    _, plain, hooked = patched_pair(cache, strength=1.0)
    weaker = plain.clone()
    weaker.weight_patches = {k: [(p, 0.5) for p, _ in v] for k, v in hooked.weight_patches.items()}
    mm = manager(100 * plain.size_bytes())
    for _ in range(2):
        for handle in (hooked, plain, weaker, plain):
            mm.load([handle])
    assert len(merges) == 2 * len(PATCHED)
    mm.unload_all()
    assert len(cache) == 0  # unloading everything lets go of the copies too


def test_a_partial_load_keeps_no_copies(merges):
    """The room beside a partially loaded model is its streaming room: nothing is kept, every
    load merges again, and the outputs stay the same."""
    cache = MergedWeightCache()
    net, plain, hooked = patched_pair(cache)
    size = plain.size_bytes()
    mm = manager(size // 2)
    x = make_input()
    outputs = []
    for _ in range(3):
        mm.load([hooked])
        assert hooked.shared.placement.is_partial
        outputs.append(net(x))
        mm.load([plain])
        assert mm.used_bytes <= size // 2
    assert len(cache) == 0 and len(merges) == 3 * len(PATCHED)
    assert all(torch.equal(out, outputs[0]) for out in outputs)


def test_only_resident_weights_are_kept(merges):
    """A weight merged for a streamed unit lives off the compute device: not kept."""
    from loom.memory.compute import ComputeTarget
    from loom.memory.placement import StreamMeter, place

    cache = MergedWeightCache()
    _, _, hooked = patched_pair(cache)
    limit = hooked.module.conv.weight.numel() * 4  # a few small units fit, the rest stream
    target = ComputeTarget(torch.device("cpu"), torch.float32)
    placement = place(hooked, target, limit, StreamMeter(), cache_room=10**9)
    try:
        resident = {unit.path for unit in placement.resident}
        on_device = {k for k in PATCHED if k.rpartition(".")[0] in resident}
        assert on_device and on_device != set(PATCHED) and len(merges) == len(PATCHED)
        assert cache.tensor_keys() == on_device
    finally:
        placement.revert()
