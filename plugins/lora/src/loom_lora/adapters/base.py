"""What the low-rank formats share: ``weight + strength * scale * delta``, and alpha.

A :class:`DeltaPatch` computes its unscaled difference ``delta`` (float32, the weight's
shape) and its ``scale`` (``alpha / rank``, or 1 without alpha), as ComfyUI does, so the
merge is ``weight + ((strength * scale) * delta).to(weight.dtype)``: the difference in
float32, added in the merge dtype (float16 where ComfyUI merges in fp16). Strength 0 returns
the weight untouched, which keeps a zero-strength LoRA bitwise identical to none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Suffixes every low-rank format shares: the scale numerator and DoRA's magnitude.
ALPHA = ".alpha"
DORA_SCALE = ".dora_scale"
SHARED_SUFFIXES = (ALPHA, DORA_SCALE)


def f32(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``tensor`` as float32 on ``like``'s device (no copy when it already is)."""
    import torch

    return tensor.to(device=like.device, dtype=torch.float32)


def alpha_of(parts: Mapping[str, Any]) -> float | None:
    """The layer's ``.alpha`` as a float (kohya stores a 0-d tensor), or None."""
    import torch

    alpha = parts.get(ALPHA)
    if alpha is None:
        return None
    return float(alpha.item()) if isinstance(alpha, torch.Tensor) else float(alpha)


def alpha_scale(alpha: float | None, rank: int) -> float:
    """``alpha / rank``, or 1 without alpha (ComfyUI's and kohya's convention)."""
    return 1.0 if alpha is None else alpha / rank


class DeltaPatch:
    """Base of the low-rank patches: subclasses define :meth:`delta` and :attr:`scale`."""

    scale: float

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        """The unscaled difference, float32, shaped like ``weight``."""
        raise NotImplementedError

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        if strength == 0.0:
            return weight
        # scaled in float32, then cast to the weight's (merge) dtype and added there
        return weight + ((strength * self.scale) * self.delta(weight)).to(weight.dtype)
