"""Compute devices for tests that run on each one: parameters, skips, and exact fp32.

``@pytest.mark.parametrize("device", DEVICES)`` runs a test on the CPU everywhere and on
CUDA / MPS where torch sees one; elsewhere those ids are skipped with the reason. A module
of its own (tests/ is put on ``sys.path`` by tests/conftest.py): importing from ``conftest``
by name picks whichever conftest module was imported first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


#: The device ids a test runs on: ``"cpu"`` always, the others where present.
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ],
    ),
    pytest.param(
        "mps",
        id="mps",
        marks=pytest.mark.skipif(not _mps_available(), reason="needs an Apple MPS device"),
    ),
]


def device_info(device: str, budget_bytes: int | None = None):
    """The :class:`loom.memory.DeviceInfo` a memory manager computes on for ``device``.

    On the CPU a ``budget_bytes`` gives a *simulated* device of that size, as ``--cpu
    --vram-budget`` does: a real CPU device never streams, so partial loading needs one.
    """
    from loom.memory import cpu_device, discover_devices, simulated_device

    if device == "cpu":
        return cpu_device() if budget_bytes is None else simulated_device(budget_bytes)
    for info in discover_devices():
        if info.type == device:
            return info
    pytest.skip(f"loom found no {device} device")


def memory_manager(device: str, budget_bytes: int | None = None, **options):
    """A :class:`loom.memory.MemoryManager` computing on ``device`` (see :func:`device_info`)."""
    from loom.memory import MemoryManager

    return MemoryManager(device_info(device, budget_bytes), budget_bytes=budget_bytes, **options)


@contextlib.contextmanager
def ieee_fp32() -> Iterator[None]:
    """float32 matmuls and convolutions in full precision on CUDA (no TF32), restored after.

    cuDNN convolutions use TF32 by default on Ampere and later, enough to fail a 1e-4
    comparison with the CPU (the SD1.5 VAE parity: 1.3e-4 on an H200). The ``allow_tf32``
    flags are used because their setters also set torch's newer ``fp32_precision`` values
    consistently; setting only the newer ones makes a later read of the flags an error.
    """
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = False
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved
