"""LyCORIS LoHa: a Hadamard product of two low-rank products (Hyeon-Woo et al. 2022, FedPara).

``delta = (w1_a @ w1_b) * (w2_a @ w2_b)``, scaled by ``alpha / rank`` (rank = rows of
``hada_w1_b``). With ``hada_t1`` / ``hada_t2`` (CP / Tucker form for convolutions) each
factor is rebuilt as ``einsum("ijkl,jr,ip->prkl", t, w_b, w_a)``, where ``w_a`` is
``[rank, out]`` and ``w_b`` ``[rank, in]``, as LyCORIS and ComfyUI do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from loom_lora.adapters.base import SHARED_SUFFIXES, DeltaPatch, alpha_of, alpha_scale, f32
from loom_lora.adapters.dora import with_dora

if TYPE_CHECKING:
    import torch

W1_A, W1_B, W2_A, W2_B = ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b"
T1, T2 = ".hada_t1", ".hada_t2"


def tucker(t: torch.Tensor, w_b: torch.Tensor, w_a: torch.Tensor) -> torch.Tensor:
    """Rebuild a conv factor ``[out, in, kh, kw]`` from its Tucker core and two matrices."""
    import torch

    return torch.einsum("ijkl,jr,ip->prkl", t, w_b, w_a)


@attrs.frozen(eq=False)
class LohaPatch(DeltaPatch):
    w1_a: torch.Tensor
    w1_b: torch.Tensor
    w2_a: torch.Tensor
    w2_b: torch.Tensor
    t1: torch.Tensor | None = None
    t2: torch.Tensor | None = None
    alpha: float | None = None

    @property
    def scale(self) -> float:  # type: ignore[override]
        return alpha_scale(self.alpha, int(self.w1_b.shape[0]))

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        w1_a, w1_b = f32(self.w1_a, weight), f32(self.w1_b, weight)
        w2_a, w2_b = f32(self.w2_a, weight), f32(self.w2_b, weight)
        if self.t1 is not None and self.t2 is not None:
            m1 = tucker(f32(self.t1, weight), w1_b, w1_a)
            m2 = tucker(f32(self.t2, weight), w2_b, w2_a)
        else:
            m1, m2 = w1_a @ w1_b, w2_a @ w2_b
        return (m1 * m2).reshape(weight.shape)


class LohaAdapter:
    name = "loha"
    suffixes = (W1_A, W1_B, W2_A, W2_B, T1, T2, *SHARED_SUFFIXES)

    def patches(self, parts: Mapping[str, Any], weight_key: str) -> dict[str, Any]:
        if not all(name in parts for name in (W1_A, W1_B, W2_A, W2_B)):
            return {}
        t1, t2 = parts.get(T1), parts.get(T2)
        if t1 is None or t2 is None:
            t1 = t2 = None
        patch = LohaPatch(
            parts[W1_A], parts[W1_B], parts[W2_A], parts[W2_B], t1, t2, alpha_of(parts)
        )
        return {weight_key: with_dora(patch, parts)}
