"""Patched weights kept between loads of a model's clones (ComfyUI's hook mode "MaxSpeed",
which keeps each hook group's patched weights).

Loading a clone computes each patched weight from the stored one and its patches; loading
another clone of the same module puts the stored weights back, so switching between two
clones at every step (a hook group's clone and the plain MODEL, as hooked sampling does)
merges the same weights again each time. A :class:`MergedWeightCache` set on the clones
(their ``merged_cache`` attribute) keeps each merged weight, found again by the exact patches
and strengths that made it and the device and dtype it was made for, so it is computed once.

The copies count against the memory manager's budget: while a clone using one is loaded it
costs nothing extra (the module holds that very tensor); once reverted it is an extra copy
(:meth:`MergedWeightCache.idle_bytes`), which :meth:`loom.memory.MemoryManager.load` makes
room for and :meth:`~loom.memory.MemoryManager.free` drops before evicting models. A weight
that does not fit is not kept: it is merged again next time (the behaviour without a cache).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import torch

    from loom.memory.patches import PatchEntries


def entries_key(entries: PatchEntries) -> tuple[tuple[int, float], ...]:
    """The patches (by identity) and strengths of one weight, in order."""
    return tuple((id(patch), float(strength)) for patch, strength in entries)


@attrs.define(eq=False)
class _Kept:
    #: the stored tensor and the patch objects: held so that their ids in the key stay theirs
    held: tuple[Any, ...]
    tensor: torch.Tensor
    applied: int = 0  # placements holding this tensor in their module now


@attrs.define(eq=False)
class MergedWeightCache:
    """Merged weights by (tensor key, patches and strengths, device, dtype).

    Shared by the clones that set it (one per sampling run, usually); :meth:`clear` lets go
    of every copy.
    """

    _kept: dict[Hashable, _Kept] = attrs.field(factory=dict, init=False)
    held_bytes: int = attrs.field(default=0, init=False)
    #: how many weights were merged for this cache / found in it (for logs and tests)
    merged: int = attrs.field(default=0, init=False)
    reused: int = attrs.field(default=0, init=False)

    @staticmethod
    def key(
        tensor_key: str,
        original: torch.Tensor,
        entries: PatchEntries,
        device: torch.device,
        dtype: torch.dtype,
        merge_dtype: torch.dtype,
    ) -> Hashable:
        """What makes a merged weight: the stored tensor (by identity), its patches and
        strengths, the device and dtype it is made for, and the dtype it was merged in."""
        return (
            tensor_key,
            id(original),
            entries_key(entries),
            str(device),
            str(dtype),
            str(merge_dtype),
        )

    def get(self, key: Hashable) -> torch.Tensor | None:
        """The kept tensor for ``key``, marked applied; None when there is none."""
        found = self._kept.get(key)
        if found is None:
            return None
        found.applied += 1
        self.reused += 1
        return found.tensor

    def put(
        self,
        key: Hashable,
        original: torch.Tensor,
        entries: PatchEntries,
        tensor: torch.Tensor,
        room: int,
    ) -> bool:
        """Keep ``tensor`` (applied now), merged from ``original`` and ``entries``, if the
        cache then holds at most ``room`` bytes."""
        self.merged += 1
        size = tensor.numel() * tensor.element_size()
        if key in self._kept or self.held_bytes + size > room:
            return False
        held = (original, *(patch for patch, _ in entries))
        self._kept[key] = _Kept(held, tensor, 1)
        self.held_bytes += size
        return True

    def release(self, key: Hashable) -> None:
        """A placement holding the tensor of ``key`` was reverted."""
        found = self._kept.get(key)
        if found is not None and found.applied > 0:
            found.applied -= 1

    def idle_bytes(self) -> int:
        """Bytes of kept tensors no loaded clone holds: the copies the cache costs now."""
        return sum(k.tensor.numel() * k.tensor.element_size() for k in self._idle())

    def drop_idle(self) -> int:
        """Let go of the tensors no loaded clone holds; returns the bytes freed."""
        freed = 0
        for key, kept in list(self._kept.items()):
            if kept.applied == 0:
                size = kept.tensor.numel() * kept.tensor.element_size()
                del self._kept[key]
                self.held_bytes -= size
                freed += size
        return freed

    def clear(self) -> None:
        """Let go of every kept tensor (a clone still loaded keeps its own)."""
        self._kept.clear()
        self.held_bytes = 0

    def _idle(self) -> list[_Kept]:
        # a snapshot: the manager's books may read this while a run clears it
        return [k for k in list(self._kept.values()) if k.applied == 0]

    def tensor_keys(self) -> set[str]:
        """The module tensor keys some kept merge is for."""
        return {key[0] for key in self._kept}

    def __len__(self) -> int:
        return len(self._kept)
