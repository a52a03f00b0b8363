"""Resident weights kept in the compute dtype where that costs no bytes, and the file pages
under replaced weights released from RAM."""

from __future__ import annotations

import psutil
import pytest
import torch
from memory_helpers import TinyNet, make_input, make_net
from safetensors.torch import save_file

from loom.memory import (
    MemoryManager,
    ModelHandle,
    cpu_device,
    load_module,
    open_safetensors,
    set_compute_dtype,
)
from loom.memory.safetensors_file import release_file_pages


def _loaded(tmp_path, stored: torch.dtype) -> ModelHandle:
    net = make_net(dtype=stored)
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "n.safetensors")
    )
    module, _ = load_module(TinyNet, tmp_path / "n.safetensors")
    return ModelHandle(module)


def _bytes(module: torch.nn.Module) -> dict[str, bytes]:
    return {k: v.view(torch.uint8).clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize(
    ("stored", "compute", "resident"),
    [
        (torch.float16, torch.bfloat16, torch.bfloat16),  # same size: converted once at load
        (torch.float32, torch.bfloat16, torch.bfloat16),  # smaller: converted
        (torch.float16, torch.float32, torch.float16),  # would double: stays, cast per call
    ],
)
def test_resident_dtype_follows_compute_dtype_unless_it_grows(tmp_path, stored, compute, resident):
    handle = _loaded(tmp_path, stored)
    before = _bytes(handle.module)
    set_compute_dtype(handle.module, compute)
    with torch.inference_mode():
        per_call = handle.module(make_input())  # every call casts the stored weights
    manager = MemoryManager(cpu_device(), compute_dtype=compute)
    manager.load([handle])
    assert handle.module.conv.weight.dtype == resident
    assert handle.module.norm.bias.dtype == resident
    with torch.inference_mode():
        assert torch.equal(handle.module(make_input()), per_call)  # same values, cast once
    manager.unload(handle)
    after = _bytes(handle.module)
    assert handle.module.conv.weight.dtype == stored
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("compute", [torch.bfloat16, torch.float32])
def test_patched_weights_are_rounded_once_to_the_compute_dtype(tmp_path, compute):
    """ComfyUI's rule: the merge (in float32) is rounded to the dtype the model computes in,
    not first to the file's dtype (an fp16 file on a float32 CPU keeps a float32 merge)."""
    handle = _loaded(tmp_path, torch.float16)
    reference = handle.module.out.weight.clone()
    diff = torch.full_like(reference, 1e-3, dtype=torch.float32)
    from loom.memory.patches import DiffPatch

    handle.add_patches({"out.weight": DiffPatch(diff)}, strength=1.0)
    manager = MemoryManager(cpu_device(), compute_dtype=compute)
    manager.load([handle])
    expected = (reference.float() + diff).to(compute)
    assert torch.equal(handle.module.out.weight, expected)
    manager.unload(handle)
    assert torch.equal(handle.module.out.weight, reference)


def _rss() -> int:
    return psutil.Process().memory_info().rss


def test_release_file_pages_drops_a_mapped_tensor_from_ram(tmp_path):
    size = 64 * 2**20
    data = torch.arange(size // 4, dtype=torch.float32)
    save_file({"w": data}, str(tmp_path / "big.safetensors"))
    mapped = open_safetensors(tmp_path / "big.safetensors")["w"]
    total = float(mapped.sum())  # fault every page in
    resident = _rss()
    assert release_file_pages(mapped)
    assert _rss() < resident - size // 2
    assert float(mapped.sum()) == total  # still the file's bytes, read back on demand
    assert not release_file_pages(data)  # not a mapped file: left alone
    assert not release_file_pages(mapped[::2])  # not contiguous: left alone


def test_compute_dtype_policy(caplog):
    from loom.memory import DeviceInfo, DtypeChoice, compute_dtype_for

    native = DeviceInfo(type="cpu", name="cpu", supports_bf16=True)
    emulated = DeviceInfo(type="cpu", name="cpu", supports_bf16=False)
    gpu = DeviceInfo(type="cuda", index=0, supports_bf16=True)
    old_gpu = DeviceInfo(type="cuda", index=0, supports_bf16=False)
    assert compute_dtype_for(native) == torch.float32  # default: exact, ComfyUI's CPU images
    assert compute_dtype_for(native, DtypeChoice.AUTO) == torch.bfloat16
    assert compute_dtype_for(emulated, DtypeChoice.AUTO) == torch.float32
    assert compute_dtype_for(gpu) == compute_dtype_for(gpu, DtypeChoice.AUTO) == torch.bfloat16
    assert compute_dtype_for(old_gpu) == torch.float16
    with caplog.at_level("WARNING", logger="loom.memory.compute"):
        assert compute_dtype_for(emulated, torch.bfloat16) == torch.bfloat16
    assert "no bf16 instructions" in caplog.text


def test_compute_dtype_setting_names():
    from loom.errors import LoomError
    from loom.settings import Settings

    manager = MemoryManager.from_settings(Settings(cpu_only=True, compute_dtype="auto"))
    expected = torch.bfloat16 if manager.device.supports_bf16 else torch.float32
    assert manager.compute_dtype == expected
    assert (
        MemoryManager.from_settings(Settings(cpu_only=True, compute_dtype="fp16")).compute_dtype
        == torch.float16
    )
    with pytest.raises(LoomError, match="unknown compute dtype 'fp64'"):
        Settings(cpu_only=True, compute_dtype="fp64")


def test_compute_dtype_text_is_parsed_once_into_a_choice():
    from loom.memory import DtypeChoice, cpu_device
    from loom.settings import Settings

    assert Settings(compute_dtype="bfloat16").compute_dtype is DtypeChoice.BF16
    assert Settings(compute_dtype=" FP32 ").compute_dtype is DtypeChoice.FP32
    assert Settings().compute_dtype is DtypeChoice.DEVICE_DEFAULT
    with pytest.raises(TypeError, match=r"DtypeChoice\.parse"):
        MemoryManager(cpu_device(), compute_dtype="bf16")
