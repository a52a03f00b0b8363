"""The memory manager's books: what it reports (:class:`Accounting`, one
:class:`ModelAccount` per loaded model, the :class:`Eviction` log) and the merged-weight
copies it counts as used (:class:`MergedCacheBooks`).

Kept apart from :mod:`loom.memory.manager`, which decides what to load and evict; these
only record and add up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from loom.memory.merged_cache import MergedWeightCache


@attrs.frozen
class Eviction:
    """One model taken off the compute device, and why."""

    name: str
    freed_bytes: int
    reason: str


@attrs.frozen
class ModelAccount:
    """One loaded model as the accounting sees it."""

    name: str
    total_bytes: int
    resident_bytes: int
    streamed_bytes: int
    patched_keys: int
    last_used: int

    @property
    def partial(self) -> bool:
        return self.streamed_bytes > 0


@attrs.frozen
class Accounting:
    """A snapshot of the manager's books (bytes)."""

    device: str
    budget_bytes: int
    used_bytes: int
    peak_bytes: int
    models: tuple[ModelAccount, ...]
    evictions: tuple[Eviction, ...]


class MergedCacheBooks:
    """The merged-weight caches (:mod:`loom.memory.merged_cache`) of the clones a manager
    placed, and the bytes they keep for clones not loaded now.

    Not thread-safe on its own: the manager calls it under its lock.
    """

    def __init__(self) -> None:
        self._caches: dict[int, MergedWeightCache] = {}

    def track(self, cache: MergedWeightCache) -> None:
        """Count ``cache``'s kept copies from now on."""
        self._caches[id(cache)] = cache

    def idle_bytes(self) -> int:
        """Bytes kept for clones not loaded now; an emptied cache (its run is over) is
        forgotten."""
        for key in [k for k, c in self._caches.items() if len(c) == 0]:
            del self._caches[key]
        return sum(cache.idle_bytes() for cache in self._caches.values())

    def drop_idle(self) -> int:
        """Let go of every copy kept for a clone not loaded now; returns the bytes."""
        return sum(cache.drop_idle() for cache in list(self._caches.values()))

    def room_for(
        self, cache: MergedWeightCache, *, used: int, budget: int, size: int, extra: int
    ) -> int:
        """Bytes ``cache`` may keep for a model of ``size`` bytes loaded whole: what is left
        beside everything else in use (``used``, less ``cache``'s own idle copies) and the
        ``extra`` activations."""
        others = used - cache.idle_bytes()
        return max(0, budget - others - size - extra)
