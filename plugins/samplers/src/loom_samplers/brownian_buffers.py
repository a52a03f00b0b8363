"""Spare numpy buffers for the Brownian trees of a process, kept from one tree to the next.

A tree at 4x64x64 works in ~130 latent-sized buffers (its cache of node increments, the
noise drawn into them, spares). Memory that a process has just given back to the system costs
a page fault per page when it is written again, which made the tree's first write to a new
buffer ~5x the price of the write itself; a sampling run makes a new tree, so every run paid
it. Trees take their buffers from :data:`POOL` and give them back when they are done with
them, up to a byte limit, so a second run reuses the first run's memory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

__all__ = ["POOL", "BufferPool"]

_LIMIT_BYTES = 32 * 2**20


class BufferPool:
    """Spare C-contiguous numpy arrays by shape and dtype, at most ``limit_bytes`` in all."""

    def __init__(self, limit_bytes: int = _LIMIT_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self._spare: dict[tuple[tuple[int, ...], np.dtype], list[np.ndarray]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.made = 0  # arrays made because none was spare

    @property
    def nbytes(self) -> int:
        """Bytes held in spare buffers."""
        return self._bytes

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A spare array of ``shape`` and ``dtype`` (contents undefined), or a new one."""
        key = (tuple(shape), np.dtype(dtype))
        with self._lock:
            spare = self._spare.get(key)
            if spare:
                array = spare.pop()
                self._bytes -= array.nbytes
                return array
            self.made += 1
        return np.empty(shape, dtype=dtype)

    def give(self, arrays: Iterable[np.ndarray]) -> None:
        """Keep ``arrays`` (nobody else may use them any more) while there is room."""
        with self._lock:
            for array in arrays:
                if self._bytes + array.nbytes > self.limit_bytes:
                    return
                self._spare.setdefault((array.shape, array.dtype), []).append(array)
                self._bytes += array.nbytes

    def clear(self) -> None:
        """Drop every spare buffer."""
        with self._lock:
            self._spare.clear()
            self._bytes = 0


POOL = BufferPool()
