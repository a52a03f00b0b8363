"""The memory manager on simulated devices: eviction, partial loading, accounting."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from memory_helpers import make_input, make_net

from loom.errors import LoomError
from loom.memory import DtypeChoice, MemoryManager, ModelHandle, cpu_device, simulated_device
from loom.memory.placement import units_of
from loom.settings import Settings


def manager(capacity: int, **kwargs) -> MemoryManager:
    return MemoryManager(simulated_device(capacity), budget_bytes=capacity, **kwargs)


def test_loading_b_evicts_a_when_only_one_fits():
    a, b = ModelHandle(make_net(0), name="A"), ModelHandle(make_net(1), name="B")
    mm = manager(int(a.size_bytes() * 1.5))
    mm.load([a])
    assert mm.loaded_handles() == [a]
    mm.load([b])
    assert mm.loaded_handles() == [b]
    assert not a.is_loaded and b.is_loaded
    (eviction,) = mm.accounting().evictions
    assert eviction.name == "A" and eviction.freed_bytes == a.size_bytes()
    assert "make room for B" in eviction.reason


def test_least_recently_used_is_evicted_first():
    a, b, c = (ModelHandle(make_net(i), name=n) for i, n in enumerate("ABC"))
    mm = manager(int(a.size_bytes() * 2.5))
    mm.load([a])
    mm.load([b])
    mm.load([a])  # touch A: B is now least recently used
    mm.load([c])
    assert {h.name for h in mm.loaded_handles()} == {"A", "C"}
    assert [e.name for e in mm.evictions] == ["B"]


def test_reloading_the_same_handle_is_free():
    a = ModelHandle(make_net())
    mm = manager(10 * a.size_bytes())
    mm.load([a])
    mm.load([a])
    assert not mm.evictions and a.is_loaded


@pytest.mark.parametrize("fraction", [0.25, 0.6])
def test_model_larger_than_budget_runs_partially_with_same_output(fraction):
    net, x = make_net(width=32, depth=6), make_input()
    full = net(x)
    handle = ModelHandle(net, name="big")
    budget = int(handle.size_bytes() * fraction)
    mm = manager(budget)
    mm.load([handle], extra_memory=budget // 10)
    (account,) = mm.accounting().models
    assert account.partial and 0 < account.streamed_bytes
    assert account.resident_bytes + budget // 10 <= budget
    partial = net(x)
    assert torch.allclose(partial, full, atol=1e-6)
    books = mm.accounting()
    assert books.peak_bytes <= books.budget_bytes
    assert mm.meter.current_bytes == 0  # streamed copies dropped after the forward


def test_partial_model_grows_to_full_when_room_appears():
    a, b = ModelHandle(make_net(0), name="A"), ModelHandle(make_net(1), name="B")
    mm = manager(int(a.size_bytes() * 1.5))
    mm.load([a])
    mm.load([b], extra_memory=a.size_bytes())  # B partial: activations need room
    assert mm.accounting().models[-1].partial
    mm.load([b])
    assert not mm.accounting().models[-1].partial
    assert mm.evictions[-1].reason == "grow to full load"


def test_extra_memory_shrinks_resident_models():
    a = ModelHandle(make_net())
    mm = manager(int(a.size_bytes() * 1.2))
    mm.load([a])
    mm.load([a], extra_memory=a.size_bytes() // 2)
    books = mm.accounting()
    assert books.models[0].partial and books.used_bytes + a.size_bytes() // 2 <= books.budget_bytes


def test_real_cpu_device_never_streams():
    handle = ModelHandle(make_net())
    mm = MemoryManager(cpu_device(), budget_bytes=100)
    mm.load([handle])
    assert not mm.accounting().models[0].partial and handle.is_loaded


def test_two_clones_at_once_is_an_error():
    a = ModelHandle(make_net())
    with pytest.raises(LoomError, match="clones"):
        manager(2**20).load([a, a.clone()])


def test_vram_modes():
    net = make_net(width=32)
    size = ModelHandle(net).size_bytes()
    low = manager(size * 4, vram_mode="low")
    low.load([ModelHandle(net)])
    assert low.used_bytes <= size * 2
    low.unload_all()
    high = manager(size // 4, vram_mode="high")
    high.load([ModelHandle(net)])
    assert not high.accounting().models[0].partial
    with pytest.raises(LoomError):
        manager(1, vram_mode="turbo")


def test_free_and_unload_all():
    a, b = ModelHandle(make_net(0), name="A"), ModelHandle(make_net(1), name="B")
    mm = manager(10 * a.size_bytes())
    mm.load([a, b])
    assert mm.free(10 * a.size_bytes() - a.size_bytes(), keep=[b]) == a.size_bytes()
    assert mm.loaded_handles() == [b]
    assert mm.unload_all() == b.size_bytes()
    assert mm.used_bytes == 0 and mm.accounting().models == ()


def test_target_for_decides_device_and_dtype_per_handle():
    bf16, fp16, fp32 = torch.bfloat16, torch.float16, torch.float32
    half_safe = ModelHandle(make_net())
    no_fp16 = ModelHandle(make_net(), supported_dtypes=(bf16, fp32))
    pinned = ModelHandle(make_net(), compute_dtype=fp16, supported_dtypes=(bf16, fp32))
    for policy, expected in [(fp16, (fp16, fp32, fp16)), (bf16, (bf16, bf16, fp16))]:
        mm = MemoryManager(simulated_device(2**30), compute_dtype=policy)
        targets = [mm.target_for(h) for h in (half_safe, no_fp16, pinned)]
        assert tuple(t.dtype for t in targets) == expected, policy
        assert {t.device for t in targets} == {torch.device("cpu")}
        mm.load([no_fp16])
        assert no_fp16.compute_target == targets[1]
        assert no_fp16.module.out.compute_dtype == expected[1]  # what its layers compute in
        mm.unload_all()


def test_memory_view_and_from_settings(tmp_path):
    chosen = Settings(
        base_directory=tmp_path,
        vram_budget_bytes=10_000,
        reserved_bytes=1_000,
        vram_mode="normal",
        cpu_only=True,
        compute_dtype=DtypeChoice.BF16,
    )
    mm = MemoryManager.from_settings(chosen)
    assert mm.device.simulated and mm.budget_bytes() == 9_000
    assert mm.compute_dtype == torch.bfloat16
    view = mm.memory_view()
    assert view.total_bytes == 10_000 and view.used_by_models_bytes == 0
    plain = MemoryManager.from_settings(Settings(base_directory=tmp_path, cpu_only=True))
    assert plain.device.type == "cpu" and plain.compute_dtype == torch.float32


def test_memory_view_reads_the_device_once_and_its_budget_agrees(monkeypatch):
    """Samplers read a view before every model call: one free-memory query (a driver call
    on accelerators) per view, and the budget computed from the same free and used bytes."""
    import loom.memory.manager as manager_module

    handle = ModelHandle(make_net(0), name="A")
    mm = MemoryManager(simulated_device(10 * handle.size_bytes()), reserved_bytes=100)
    mm.load([handle])
    readings = iter(range(50_000, 0, -7_000))  # free memory moving while sampling runs
    calls = []

    def moving_free_bytes(device):
        calls.append(device)
        return next(readings)

    monkeypatch.setattr(manager_module, "free_bytes", moving_free_bytes)
    view = mm.memory_view()
    assert len(calls) == 1
    assert view.used_by_models_bytes == handle.size_bytes()
    assert view.budget_bytes == view.free_bytes + view.used_by_models_bytes - 100
    assert mm.budget_bytes() == 43_000 + handle.size_bytes() - 100  # a fresh reading


@settings(max_examples=25, deadline=None)
@given(
    ops=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3000)), min_size=1, max_size=8),
    capacity=st.integers(500, 40_000),
)
def test_budget_is_never_exceeded(ops, capacity):
    handles = [ModelHandle(make_net(i, width=8 * (i + 1), depth=2), name=f"m{i}") for i in range(4)]
    x = make_input()
    mm = manager(capacity)
    for index, extra in ops:
        handle = handles[index]
        mm.load([handle], extra_memory=extra)
        mm.reset_peak()  # measure the forward: resident plus streamed bytes
        handle.module(x)
        books = mm.accounting()
        largest_unit = max(u.size_bytes for u in units_of(handle.module))
        if extra + largest_unit <= capacity:  # otherwise nothing can fit; a warning is logged
            assert books.used_bytes + extra <= capacity
            assert books.peak_bytes + extra <= capacity


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_partial_load_matches_cpu():
    net, x = make_net(width=64, depth=6), make_input()
    expected = net(x)
    handle = ModelHandle(net, compute_dtype=torch.float32)
    mm = MemoryManager(budget_bytes=handle.size_bytes() // 3)
    assert mm.device.type == "cuda"
    mm.load([handle])
    assert mm.accounting().models[0].partial
    out = net(x.cuda())
    assert torch.allclose(out.cpu(), expected, atol=1e-4)
    assert torch.cuda.memory_allocated() > 0
    mm.unload_all()
    assert all(p.device.type == "cpu" for p in net.parameters())
