"""Patches on part of a fused weight: an adapter layer mapped to a :class:`~loom.types.WeightSlice`.

ComfyUI's rule (``calculate_weight`` on a ``narrow`` of the weight): the adapter computes its
patch on the slice's rows alone, as if the slice were the whole layer; the other rows are
untouched. The bias patch of such a layer (``.diff_b``) lands on the same rows of the bias.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from loom.types import WeightSlice

if TYPE_CHECKING:
    import torch


def _swap(tensor: torch.Tensor) -> torch.Tensor:
    import torch

    first, second = tensor.chunk(2, dim=0)
    return torch.cat((second, first), dim=0)


@attrs.frozen(eq=False)
class SlicePatch:
    """``inner`` applied to rows ``offset .. offset + length`` of the weight (out of place)."""

    inner: Any
    offset: int
    length: int
    swap_halves: bool = False

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        import torch

        if strength == 0.0:
            return weight
        end = self.offset + self.length
        part = weight[self.offset : end]
        if self.swap_halves:
            part = _swap(self.inner.apply(_swap(part), strength))
        else:
            part = self.inner.apply(part, strength)
        return torch.cat((weight[: self.offset], part, weight[end:]), dim=0)


def sliced(found: Mapping[str, Any], target: WeightSlice) -> dict[str, Any]:
    """An adapter's patches for a sliced layer, each narrowed to the slice's rows."""
    return {
        key: SlicePatch(patch, target.offset, target.length, target.swap_halves)
        for key, patch in found.items()
    }
