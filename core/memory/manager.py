"""The memory manager: which models sit on the compute device, within a byte budget.

``load(handles, extra_memory=...)`` makes room by unloading least-recently-used models,
then places the requested ones. A model that still does not fit is loaded *partially*: as
many of its units as fit stay resident and the rest are streamed per forward (see
:mod:`loom.memory.placement`). Room for one streamed unit and for ``extra_memory`` (the
activations the caller's forward needs) is always kept, so the accounted bytes on the
device never exceed the budget. :meth:`MemoryManager.accounting` shows what is resident,
what was evicted and why (the records and their sums: :mod:`loom.memory.books`); the same
is logged at debug level.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import attrs
import torch

from loom.errors import LoomError
from loom.memory.books import Accounting, Eviction, MergedCacheBooks, ModelAccount
from loom.memory.compute import ComputeTarget, DtypeChoice, compute_dtype_for, merge_dtype_for
from loom.memory.devices import (
    DeviceInfo,
    MemoryView,
    cpu_device,
    discover_devices,
    free_bytes,
    simulated_device,
)
from loom.memory.handle import ModelHandle, SharedModel
from loom.memory.placement import StreamMeter, place, units_of

if TYPE_CHECKING:
    from loom.settings import Settings

log = logging.getLogger(__name__)

VRAM_MODES = ("low", "normal", "high")


@attrs.define(eq=False)
class _Entry:
    shared: SharedModel
    last_used: int


class MemoryManager:
    """Loads model handles onto the compute device within a budget; built once per runtime.

    :param device: the compute device (default: the first accelerator, else the CPU).
    :param budget_bytes: bytes models and activations may use there; default: what the
        device reports free plus what loaded models hold.
    :param reserved_bytes: bytes always left free (for other programs, the display, ...).
    :param vram_mode: ``"normal"`` (evict, then partial-load what does not fit), ``"low"``
        (additionally keep at most half the budget resident per model) or ``"high"``
        (never stream: a model too big is loaded whole, over budget, with a warning).
    :param compute_dtype: a dtype cast layers compute in, or a :class:`DtypeChoice` policy
        resolved against ``device`` by :func:`compute_dtype_for` (``None``: the device's
        default).
    """

    def __init__(
        self,
        device: DeviceInfo | None = None,
        *,
        budget_bytes: int | None = None,
        reserved_bytes: int = 0,
        vram_mode: str = "normal",
        compute_dtype: torch.dtype | DtypeChoice | None = None,
    ) -> None:
        if vram_mode not in VRAM_MODES:
            raise LoomError(f"unknown vram mode {vram_mode!r}", hint=f"use one of {VRAM_MODES}")
        self.device = device or discover_devices()[0]
        self.explicit_budget_bytes = budget_bytes
        self.reserved_bytes = int(reserved_bytes)
        self.vram_mode = vram_mode
        self.compute_dtype = compute_dtype_for(self.device, compute_dtype)
        #: the dtype weight patches are merged in here (ComfyUI's LoRA compute dtype)
        self.merge_dtype = merge_dtype_for(self.device, compute_dtype)
        self.meter = StreamMeter()
        self.evictions: deque[Eviction] = deque(maxlen=256)
        self._loaded: dict[int, _Entry] = {}
        self._cache_books = MergedCacheBooks()
        self._clock = 0
        self._lock = threading.RLock()

    @classmethod
    def from_settings(cls, settings: Settings) -> MemoryManager:
        """Build from the settings' ``cpu_only``, ``vram_budget_bytes``, ``reserved_bytes``,
        ``vram_mode`` and ``compute_dtype`` (a :class:`DtypeChoice`)."""
        budget = settings.vram_budget_bytes
        device = cpu_device() if settings.cpu_only else discover_devices()[0]
        if budget is not None and not device.is_accelerator:
            device = simulated_device(budget)
        return cls(
            device,
            budget_bytes=budget,
            reserved_bytes=settings.reserved_bytes,
            vram_mode=settings.vram_mode,
            compute_dtype=settings.compute_dtype,
        )

    # --- books -------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """Bytes of loaded models resident on the compute device, and of merged weights
        kept for clones not loaded now (:mod:`loom.memory.merged_cache`)."""
        models = sum(
            e.shared.placement.resident_bytes
            for e in self._loaded.values()
            if e.shared.placement is not None
        )
        return models + self.cached_bytes()

    def cached_bytes(self) -> int:
        """Bytes of merged weights kept by caches whose clones are not loaded now."""
        with self._lock:  # the books are read from other threads (system stats)
            return self._cache_books.idle_bytes()

    def drop_cached(self, reason: str = "free") -> int:
        """Let go of every merged weight kept for a clone not loaded now; returns the bytes."""
        with self._lock:
            freed = self._cache_books.drop_idle()
        if freed:
            log.debug("dropped %d bytes of kept merged weights: %s", freed, reason)
        return freed

    def budget_bytes(self) -> int:
        """Bytes models plus activations may occupy on the compute device now."""
        if self.explicit_budget_bytes is not None:
            return self._budget(0, 0)
        return self._budget(free_bytes(self.device), self.used_bytes)

    def _budget(self, free: int, used: int) -> int:
        """:meth:`budget_bytes` from the device's free bytes and the models' used bytes
        (read by the caller, once)."""
        total = self.explicit_budget_bytes
        if total is None:
            total = free + used
        return max(0, total - self.reserved_bytes)

    def accounting(self) -> Accounting:
        """What is resident, streamed and evicted, and the peak bytes ever on the device."""
        models = []
        for entry in sorted(self._loaded.values(), key=lambda e: e.last_used):
            placement = entry.shared.placement
            assert placement is not None
            models.append(
                ModelAccount(
                    entry.shared.name,
                    placement.resident_bytes + placement.streamed_bytes,
                    placement.resident_bytes,
                    placement.streamed_bytes,
                    len(placement.handle.weight_patches),
                    entry.last_used,
                )
            )
        return Accounting(
            str(self.device),
            self.budget_bytes(),
            self.used_bytes,
            self.meter.peak_bytes,
            tuple(models),
            tuple(self.evictions),
        )

    def reset_peak(self) -> None:
        """Start measuring ``peak_bytes`` again from what is on the device now."""
        self.meter.peak_bytes = 0
        self.meter.resident_bytes = self.used_bytes
        self.meter.observe()

    def memory_view(self) -> MemoryView:
        """Total, free and model-held bytes of the compute device, and the budget they give.

        The device's free memory and the models' bytes are read once each: samplers ask for
        a view before every model call (``batch_fits``), and each read is a driver query (or
        ``/proc/meminfo``) and a walk over every loaded unit.
        """
        free, used = free_bytes(self.device), self.used_bytes
        return MemoryView(
            str(self.device), self.device.total_bytes, free, used, self._budget(free, used)
        )

    def loaded_handles(self) -> list[ModelHandle]:
        """Handles currently applied, least recently used first."""
        entries = sorted(self._loaded.values(), key=lambda e: e.last_used)
        return [e.shared.placement.handle for e in entries if e.shared.placement is not None]

    def target_for(self, handle: ModelHandle) -> ComputeTarget:
        """Where and in which dtype ``handle`` computes once loaded here: the compute device,
        and the dtype the handle asks for (``handle.compute_dtype``), else the manager's if
        the handle supports it (``handle.supported_dtypes``), else float32.

        The one place device and dtype are decided; after :meth:`load` the same answer is
        ``handle.compute_target``.
        """
        dtype = handle.compute_dtype or self.compute_dtype
        if handle.compute_dtype is None and handle.supported_dtypes:
            dtype = dtype if dtype in handle.supported_dtypes else torch.float32
        return ComputeTarget(self.device.torch_device, dtype, self.merge_dtype)

    def merging_for_save(self) -> AbstractContextManager[None]:
        """A context in which saving a handle (:func:`loom.memory.patched_tensors`) merges its
        patches on this manager's device in its merge dtype, as loading it would, whether or
        not it is loaded: ComfyUI loads a model onto its device before saving it, so the
        saved bytes follow that device's LoRA compute dtype."""
        from loom.memory.merge import MergeSite, merging_at

        return merging_at(MergeSite(self.device.torch_device, self.merge_dtype))

    # --- loading -----------------------------------------------------------------------

    def load(self, handles: Iterable[ModelHandle], extra_memory: int = 0) -> None:
        """Make ``handles`` ready to run on the compute device, leaving ``extra_memory`` free.

        Models already loaded with the same patches are only marked as used. Others are
        placed after evicting least-recently-used models that were not asked for; what
        still does not fit is loaded partially.
        """
        wanted = list(dict.fromkeys(handles))
        shared_ids = [id(h.shared) for h in wanted]
        if len(set(shared_ids)) != len(shared_ids):
            raise LoomError(
                "two clones of the same model cannot be loaded at once",
                hint="load them one after the other",
            )
        with self._lock:
            self._clock += 1
            to_place = [h for h in wanted if not self._reuse(h, extra_memory)]
            streaming = self._streaming_room(h for h in wanted if h not in to_place)
            need = sum(h.size_bytes() for h in to_place) + int(extra_memory) + streaming
            names = ", ".join(h.name for h in to_place) or "activations"
            self.free(need, keep=wanted, reason=f"make room for {names} ({need} bytes)")
            if self.used_bytes + extra_memory + streaming > self.budget_bytes():
                for handle in wanted:
                    if handle not in to_place:  # shrink resident models to fit activations
                        self._unload(handle.shared, "re-placed to fit activations")
                        to_place.append(handle)
            for handle in to_place:
                self._place(handle, int(extra_memory))
            self.meter.resident_bytes = self.used_bytes
            self.meter.observe()
            self._log_books()

    @staticmethod
    def _streaming_room(handles: Iterable[ModelHandle]) -> int:
        placements = [h.shared.placement for h in handles if h.shared.placement is not None]
        return max((p.largest_streamed_bytes for p in placements), default=0)

    def _reuse(self, handle: ModelHandle, extra_memory: int) -> bool:
        entry = self._loaded.get(id(handle.shared))
        placement = handle.shared.placement
        if entry is None or placement is None:
            return False
        same = placement.handle is handle and placement.signature == handle.patch_signature()
        room = self.budget_bytes() - self.used_bytes - extra_memory
        grow = placement.is_partial and placement.streamed_bytes <= room
        if same and not grow:
            entry.last_used = self._clock
            return True
        if same:
            reason = "grow to full load"
        elif placement.handle is handle:
            reason = "patches changed"
        else:
            reason = "another clone requested"
        self._unload(handle.shared, reason)
        return False

    def _place(self, handle: ModelHandle, extra_memory: int) -> None:
        size = handle.size_bytes()
        budget = self.budget_bytes()
        available = budget - self.used_bytes - extra_memory
        if not self.device.is_accelerator:  # weights already live where they compute
            limit = size
        elif size <= available or self.vram_mode == "high":
            limit = size
            if size > available:
                log.warning(
                    "%s (%d bytes) loaded whole over budget (vram_mode=high)", handle.name, size
                )
        else:
            largest = max((u.size_bytes for u in units_of(handle.module)), default=0)
            limit = max(0, available - largest)
            if self.vram_mode == "low":
                limit = min(limit, budget // 2)
            if available < largest:
                log.warning(
                    "%s: a %d-byte unit does not fit the %d bytes left; budget may be "
                    "exceeded while it streams",
                    handle.name,
                    largest,
                    available,
                )
        cache = handle.merged_cache
        room = 0
        if cache is not None:
            self._cache_books.track(cache)
        if cache is not None and limit >= size:  # a partial load keeps none: room is streaming's
            room = self._cache_books.room_for(
                cache, used=self.used_bytes, budget=budget, size=size, extra=extra_memory
            )
        placement = place(handle, self.target_for(handle), limit, self.meter, room)
        handle.shared.placement = placement
        self._loaded[id(handle.shared)] = _Entry(handle.shared, self._clock)
        self.meter.resident_bytes = self.used_bytes
        self.meter.observe()
        log.debug(
            "loaded %s on %s: %d resident, %d streamed (%d units), %d patched keys",
            handle.name,
            self.device,
            placement.resident_bytes,
            placement.streamed_bytes,
            len(placement.streamed),
            len(handle.weight_patches),
        )

    # --- unloading ---------------------------------------------------------------------

    def _unload(self, shared: SharedModel, reason: str) -> int:
        entry = self._loaded.pop(id(shared), None)
        placement = shared.placement
        if entry is None or placement is None:
            return 0
        freed = placement.resident_bytes
        placement.revert()
        shared.placement = None
        self.evictions.append(Eviction(shared.name, freed, reason))
        self.meter.resident_bytes = self.used_bytes
        log.debug("unloaded %s (%d bytes): %s", shared.name, freed, reason)
        return freed

    def free(
        self, bytes_needed: int, *, keep: Iterable[ModelHandle] = (), reason: str = "free"
    ) -> int:
        """Unload least-recently-used models (except ``keep``) until ``bytes_needed`` are free.

        Returns the bytes freed. Stops early when enough is free or nothing is left to evict.
        """
        keep_ids = {id(h.shared) for h in keep}
        freed = 0
        with self._lock:
            if self.budget_bytes() - self.used_bytes < bytes_needed:
                freed += self.drop_cached(reason)  # copies go before models do
            for entry in sorted(self._loaded.values(), key=lambda e: e.last_used):
                if self.budget_bytes() - self.used_bytes >= bytes_needed:
                    break
                if id(entry.shared) not in keep_ids:
                    freed += self._unload(entry.shared, reason)
            if freed:
                self._empty_cache()
        return freed

    def unload(self, handle: ModelHandle, reason: str = "requested") -> int:
        """Take ``handle``'s module off the device (whichever clone is applied)."""
        with self._lock:
            freed = self._unload(handle.shared, reason)
            freed += self.drop_cached(reason)
            self._empty_cache()
            return freed

    def unload_all(self, reason: str = "unload all") -> int:
        """Unload every model; returns the bytes freed."""
        with self._lock:
            freed = sum(self._unload(e.shared, reason) for e in list(self._loaded.values()))
            freed += self.drop_cached(reason)
            self._empty_cache()
            return freed

    def _empty_cache(self) -> None:
        if self.device.type == "cuda" and not self.device.simulated:
            torch.cuda.empty_cache()

    def _log_books(self) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        books = self.accounting()
        log.debug(
            "memory on %s: %d of %d bytes used, peak %d; %s",
            books.device,
            books.used_bytes,
            books.budget_bytes,
            books.peak_bytes,
            "; ".join(
                f"{m.name}: {m.resident_bytes} resident, {m.streamed_bytes} streamed"
                for m in books.models
            )
            or "no models",
        )
