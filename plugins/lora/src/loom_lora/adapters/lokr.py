"""LyCORIS LoKr: a Kronecker product ``kron(w1, w2)`` (Yeh et al. 2023, LyCORIS).

Either factor is stored whole (``lokr_w1``, ``lokr_w2``) or as a low-rank product
(``lokr_w1_a @ lokr_w1_b``; ``lokr_w2_a @ lokr_w2_b``, or with ``lokr_t2`` the Tucker form
for convolutions). A 4-d ``w2`` makes ``w1`` ``[a, b, 1, 1]``. ``alpha / rank`` applies only
when a factor is low-rank; rank is the rows of ``lokr_w2_b`` if ``w2`` is factorised, else of
``lokr_w1_b`` (ComfyUI's rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from loom_lora.adapters.base import SHARED_SUFFIXES, DeltaPatch, alpha_of, alpha_scale, f32
from loom_lora.adapters.dora import with_dora
from loom_lora.adapters.loha import tucker

if TYPE_CHECKING:
    import torch

W1, W2 = ".lokr_w1", ".lokr_w2"
W1_A, W1_B, W2_A, W2_B, T2 = ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2_a", ".lokr_w2_b", ".lokr_t2"


@attrs.frozen(eq=False)
class LokrPatch(DeltaPatch):
    w1: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    w1_a: torch.Tensor | None = None
    w1_b: torch.Tensor | None = None
    w2_a: torch.Tensor | None = None
    w2_b: torch.Tensor | None = None
    t2: torch.Tensor | None = None
    alpha: float | None = None

    @property
    def scale(self) -> float:  # type: ignore[override]
        if self.w2 is None and self.w2_b is not None:
            return alpha_scale(self.alpha, int(self.w2_b.shape[0]))
        if self.w1 is None and self.w1_b is not None:
            return alpha_scale(self.alpha, int(self.w1_b.shape[0]))
        return 1.0

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        import torch

        if self.w1 is not None:
            w1 = f32(self.w1, weight)
        else:
            w1 = f32(self.w1_a, weight) @ f32(self.w1_b, weight)
        if self.w2 is not None:
            w2 = f32(self.w2, weight)
        elif self.t2 is not None:
            w2 = tucker(f32(self.t2, weight), f32(self.w2_b, weight), f32(self.w2_a, weight))
        else:
            w2 = f32(self.w2_a, weight) @ f32(self.w2_b, weight)
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        # contiguous: torch.kron of an einsum output fails to reshape on some builds
        return torch.kron(w1.contiguous(), w2.contiguous()).reshape(weight.shape)


class LokrAdapter:
    name = "lokr"
    suffixes = (W1, W2, W1_A, W1_B, W2_A, W2_B, T2, *SHARED_SUFFIXES)

    def patches(self, parts: Mapping[str, Any], weight_key: str) -> dict[str, Any]:
        has_w1 = W1 in parts or (W1_A in parts and W1_B in parts)
        has_w2 = W2 in parts or (W2_A in parts and W2_B in parts)
        if not (has_w1 and has_w2):
            return {}
        patch = LokrPatch(
            parts.get(W1),
            parts.get(W2),
            parts.get(W1_A),
            parts.get(W1_B),
            parts.get(W2_A),
            parts.get(W2_B),
            parts.get(T2),
            alpha_of(parts),
        )
        return {weight_key: with_dora(patch, parts)}
