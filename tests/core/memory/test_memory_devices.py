"""The memory manager on each compute device (CPU here; CUDA / MPS where present): load, run,
unload; bitwise restore with patches; partial loading; compute dtypes against a CPU fp32
reference. Weights always start and end on the CPU."""

from __future__ import annotations

import pytest
import torch
from device_params import DEVICES, memory_manager
from memory_helpers import make_input, make_net, snapshot

from loom.memory import DiffPatch, ModelHandle, cast_to
from loom.memory.placement import units_of

pytestmark = [pytest.mark.parametrize("device", DEVICES), pytest.mark.usefixtures("no_tf32")]

PATCHED = ("conv.weight", "norm.bias", "blocks.0.weight", "out.weight")


def _devices(module: torch.nn.Module) -> set[str]:
    return {t.device.type for t in (*module.parameters(), *module.buffers())}


def test_load_run_unload(device):
    net, x = make_net(), make_input()
    expected = net(x)
    handle = ModelHandle(net, compute_dtype=torch.float32)
    mm = memory_manager(device)
    mm.load([handle])
    assert handle.is_loaded and _devices(net) == {device}
    target = handle.compute_target
    assert target == mm.target_for(handle)
    assert (target.device.type, target.dtype) == (device, torch.float32)
    out = net(x.to(device))
    assert out.device.type == device
    torch.testing.assert_close(out.cpu(), expected, atol=1e-5, rtol=1e-5)
    assert mm.unload_all() == handle.size_bytes()
    assert not handle.is_loaded and _devices(net) == {"cpu"}
    assert handle.compute_target.device.type == "cpu"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_patches_and_bitwise_restore_over_cycles(device, dtype):
    net, x = make_net(dtype=dtype), make_input()
    before = snapshot(net)
    originals = {key: net.get_parameter(key) for key in PATCHED}
    handle = ModelHandle(net, compute_dtype=torch.float32)
    mm = memory_manager(device)
    gen = torch.Generator().manual_seed(3)
    for cycle in range(3):
        clone = handle.clone()
        diffs = {key: torch.randn(originals[key].shape, generator=gen) for key in PATCHED}
        strength = 0.1 * (cycle + 1)
        clone.add_patches({key: DiffPatch(d) for key, d in diffs.items()}, strength)
        mm.load([clone])
        for key, diff in diffs.items():
            weight = net.get_parameter(key)
            # cast layers' merges are rounded to the compute dtype (ComfyUI's rule), after
            # adding in the device's merge dtype (float16 on most GPUs, as ComfyUI does)
            assert weight.device.type == device and weight.dtype == torch.float32
            merged = originals[key].to(device, mm.merge_dtype, copy=True)
            merged += strength * diff.to(device, mm.merge_dtype)
            torch.testing.assert_close(weight.cpu(), merged.float().cpu(), atol=0, rtol=0)
        patched = net(x.to(device)).cpu()
        mm.load([handle])  # the bare handle: patches reverted, still on the device
        assert _devices(net) == {device}
        assert not torch.equal(net(x.to(device)).cpu(), patched)
        mm.unload_all()
    assert _devices(net) == {"cpu"}
    assert all(net.get_parameter(key) is tensor for key, tensor in originals.items())
    after = snapshot(net)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def _first_unit_streamed_budget(net: torch.nn.Module) -> int:
    """A budget whose resident share is half the first unit, so that unit streams."""
    units = units_of(net)
    return max(u.size_bytes for u in units) + units[0].size_bytes // 2


@pytest.mark.parametrize("budget", ["first-unit-streamed", "third"])
def test_partial_load_matches_full_load(device, budget):
    net, x = make_net(width=64, depth=6), make_input()
    handle = ModelHandle(net, compute_dtype=torch.float32)
    full = memory_manager(device)
    full.load([handle])
    expected = net(x.to(device)).cpu()
    full.unload_all()

    size = _first_unit_streamed_budget(net) if budget != "third" else handle.size_bytes() // 3
    mm = memory_manager(device, budget_bytes=size)
    mm.load([handle])
    (account,) = mm.accounting().models
    assert account.partial and account.resident_bytes > 0
    assert handle.compute_target.device.type == device
    if budget == "first-unit-streamed":
        # the first weight stays on the CPU: its device is not where the forward runs
        assert net.conv.weight.device.type == "cpu"
    out = net(x.to(device))
    assert out.device.type == device
    torch.testing.assert_close(out.cpu(), expected, atol=1e-6, rtol=0)
    assert mm.meter.current_bytes == 0  # streamed copies dropped after the forward
    mm.unload_all()
    assert _devices(net) == {"cpu"}


@pytest.mark.parametrize(
    ("dtype", "atol"),
    [(torch.float32, 1e-5), (torch.bfloat16, 5e-2), (torch.float16, 1e-2)],
    ids=["fp32", "bf16", "fp16"],
)
def test_compute_dtype_close_to_cpu_fp32(device, dtype, atol):
    net, x = make_net(width=32), make_input()
    expected = net(x)
    mm = memory_manager(device)
    mm.load([ModelHandle(net, compute_dtype=dtype)])
    out = net(x.to(device))
    assert out.dtype == dtype and out.device.type == device
    torch.testing.assert_close(out.float().cpu(), expected, atol=atol, rtol=0)
    mm.unload_all()
    assert {p.dtype for p in net.parameters()} == {torch.float32}  # the stored weights
    assert net.out.compute_dtype is None  # unloading clears the cast layers' dtype too


def test_fp8_storage_computes_in_bf16(device):
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8_e4m3fn")
    net, x = cast_to(make_net(width=32), torch.float8_e4m3fn), make_input()
    # the same fp8-rounded weights in float32 on the CPU: only bf16 compute differs
    reference = cast_to(cast_to(make_net(width=32), torch.float8_e4m3fn), torch.float32)
    mm = memory_manager(device, compute_dtype=torch.bfloat16)
    handle = ModelHandle(net)
    mm.load([handle])
    assert mm.target_for(handle).dtype == handle.compute_target.dtype == torch.bfloat16
    assert net.out.weight.dtype == torch.float8_e4m3fn and net.out.weight.device.type == device
    out = net(x.to(device))
    assert out.dtype == torch.bfloat16 and out.device.type == device
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float().cpu(), reference(x), atol=5e-2, rtol=0)
    mm.unload_all()
    assert net.out.weight.dtype == torch.float8_e4m3fn and _devices(net) == {"cpu"}
