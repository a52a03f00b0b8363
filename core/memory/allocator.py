"""Host allocator policy: keep glibc from returning activation buffers to the OS every op.

By default glibc serves large blocks with ``mmap`` and gives them back on ``free``; a UNet
forward allocates and frees hundreds of such buffers per step, so every step page-faults
its activations back in (measured: 1.4x per step on a 2-core CPU). Raising the mmap and
trim thresholds, disabling mmap for big blocks, and bounding the number of arenas (worker
threads) keeps the memory in the process for reuse. :func:`configure_host_allocator` is
called once by the ``loom`` command line at startup (never by ``Runtime()``: embedding Loom
changes no process-wide setting); it is a no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

import attrs

log = logging.getLogger(__name__)

# glibc malloc.h parameter numbers
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
M_ARENA_MAX = -8

#: glibc refuses mmap thresholds above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit).
MAX_MMAP_THRESHOLD_BYTES = 32 * 2**20


@attrs.frozen
class AllocatorPolicy:
    """The mallopt settings applied (bytes; ``None`` leaves glibc's default).

    :param mmap_threshold_bytes: blocks at least this big are mmapped (capped at 32 MiB).
    :param trim_threshold_bytes: free memory at the heap top kept before trimming.
    :param mmap_max: most simultaneous mmapped blocks; 0 serves every block from the heap.
    :param arena_max: most malloc arenas (bounds per-thread heaps).
    """

    mmap_threshold_bytes: int | None = MAX_MMAP_THRESHOLD_BYTES
    trim_threshold_bytes: int | None = 2**30
    mmap_max: int | None = None
    arena_max: int | None = 4


@attrs.frozen
class AllocatorResult:
    """What :func:`configure_host_allocator` did: ``applied`` names each setting that took."""

    libc: str | None
    applied: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError as exc:
        log.debug("libc not loadable: %s", exc)
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None  # musl and others
    return libc


def glibc_version() -> str | None:
    """The running glibc version, or None when the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return None
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    return libc.gnu_get_libc_version().decode()


def configure_host_allocator(policy: AllocatorPolicy = AllocatorPolicy()) -> AllocatorResult:
    """Apply ``policy`` through glibc's ``mallopt``; a no-op (``libc=None``) elsewhere.

    Call it once at startup, before worker threads exist (the arena limit only binds
    arenas created afterwards). ``LOOM_MALLOC=0`` in the environment turns it off.
    """
    libc = _glibc()
    if libc is None or os.environ.get("LOOM_MALLOC") == "0":
        return AllocatorResult(libc=None)
    settings = {
        "mmap_threshold": (M_MMAP_THRESHOLD, policy.mmap_threshold_bytes),
        "trim_threshold": (M_TRIM_THRESHOLD, policy.trim_threshold_bytes),
        "mmap_max": (M_MMAP_MAX, policy.mmap_max),
        "arena_max": (M_ARENA_MAX, policy.arena_max),
    }
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    applied, failed = [], []
    for name, (param, value) in settings.items():
        if value is None:
            continue
        value = min(int(value), 2**31 - 1)
        (applied if libc.mallopt(param, value) == 1 else failed).append(f"{name}={value}")
    version = glibc_version()
    log.debug("host allocator (glibc %s): applied %s; failed %s", version, applied, failed)
    return AllocatorResult(libc=f"glibc {version}", applied=tuple(applied), failed=tuple(failed))


def trim_host_memory() -> bool:
    """Return free heap memory to the OS (``malloc_trim(0)``), e.g. after unloading models."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    return bool(libc.malloc_trim(0))
