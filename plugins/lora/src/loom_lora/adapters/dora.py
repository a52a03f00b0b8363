"""DoRA: weight-decomposed low-rank adaptation (``.dora_scale``), ComfyUI's semantics.

Liu et al. (2024), "DoRA: Weight-Decomposed Low-Rank Adaptation". The merged weight
``W' = W + scale * delta`` is renormalised to the magnitudes stored in ``dora_scale``, as
ComfyUI's ``weight_decompose`` does:

- a ``dora_scale`` of shape ``[1, in, 1...]`` (LyCORIS' default, ``wd_on_output=False``):
  ``W'`` times ``dora_scale / (norm of each input column of W' + eps)``;
- one whose first dim is the weight's (``[out, 1...]``, ``wd_on_output=True``): ``W'``
  times ``dora_scale / (norm of each output row of W + eps)`` -- the rows of the *unpatched*
  weight, ComfyUI's rule, kept for equal images.

``eps`` is the machine epsilon of the merge dtype (float32, or float16 where ComfyUI
merges in fp16); the scaled difference is computed in float32 and added in the merge dtype.
Strength blends linearly between ``W`` and the renormalised weight: ``W + s * (W'' - W)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from loom_lora.adapters.base import DORA_SCALE, DeltaPatch, f32

if TYPE_CHECKING:
    import torch


def column_norm(weight: torch.Tensor) -> torch.Tensor:
    """The norm of each input column of ``weight``, shaped ``[1, in, 1, ...]``."""
    columns = weight.transpose(0, 1).reshape(weight.shape[1], -1)
    norm = columns.norm(dim=1, keepdim=True)
    return norm.reshape(weight.shape[1], *[1] * (weight.dim() - 1)).transpose(0, 1)


def row_norm(weight: torch.Tensor) -> torch.Tensor:
    """The norm of each output row of ``weight``, shaped ``[out, 1, ...]``."""
    norm = weight.reshape(weight.shape[0], -1).norm(dim=1, keepdim=True)
    return norm.reshape(weight.shape[0], *[1] * (weight.dim() - 1))


@attrs.frozen(eq=False)
class DoraPatch:
    """A low-rank patch whose merge is renormalised to the magnitudes ``dora_scale``."""

    inner: DeltaPatch
    dora_scale: torch.Tensor

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        import torch

        if strength == 0.0:
            return weight
        # the difference in float32, added in the weight's (merge) dtype, renormalised there
        merged = weight + (self.inner.scale * self.inner.delta(weight)).to(weight.dtype)
        magnitude = f32(self.dora_scale, weight)
        if magnitude.shape[0] == weight.shape[0]:  # on the output axis: the base's row norms
            norm = row_norm(weight)
        else:
            norm = column_norm(merged)
        norm = norm + torch.finfo(weight.dtype).eps
        merged = merged * (magnitude / norm).to(weight.dtype)
        if strength == 1.0:
            return merged
        return weight + strength * (merged - weight)


def with_dora(patch: DeltaPatch, parts: Mapping[str, Any]) -> DeltaPatch | DoraPatch:
    """``patch`` wrapped in :class:`DoraPatch` when the layer has a ``.dora_scale``."""
    scale = parts.get(DORA_SCALE)
    return patch if scale is None else DoraPatch(patch, scale)
