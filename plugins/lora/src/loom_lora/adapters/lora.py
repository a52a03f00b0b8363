"""LoRA and LoCon: ``W + s * (alpha / rank) * up @ down`` (Hu et al. 2021), conv included.

Key layouts (``<layer>`` is what the model family's key map names):

- kohya sd-scripts / LyCORIS LoCon: ``<layer>.lora_up.weight``, ``.lora_down.weight`` and,
  for LoCon's Tucker-decomposed convolutions, ``.lora_mid.weight``;
- diffusers / PEFT: ``<layer>.lora_B.weight`` / ``.lora_A.weight``, ``<layer>.lora.up.weight``
  / ``.lora.down.weight``, the older attention-processor ``<layer>_lora.up.weight``, and
  transformers' ``.lora_linear_layer.up.weight``.

Conv layers: ``down`` is ``[rank, in, kh, kw]`` and ``up`` ``[out, rank, 1, 1]``; with a mid
weight ``down`` is ``[rank, in, 1, 1]``, ``mid`` ``[rank, rank, kh, kw]``, and the three
compose like the three convolutions they stand for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from loom_lora.adapters.base import SHARED_SUFFIXES, DeltaPatch, alpha_of, alpha_scale, f32
from loom_lora.adapters.dora import with_dora

if TYPE_CHECKING:
    import torch

#: (up, down) suffix pairs, in ComfyUI's order of preference.
UP_DOWN = (
    (".lora_up.weight", ".lora_down.weight"),
    ("_lora.up.weight", "_lora.down.weight"),
    (".lora_B.weight", ".lora_A.weight"),
    (".lora.up.weight", ".lora.down.weight"),
    (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight"),
)
MID = ".lora_mid.weight"


@attrs.frozen(eq=False)
class LoraPatch(DeltaPatch):
    """``up @ down`` (with LoCon's ``mid`` between them), scaled by ``alpha / rank``."""

    up: torch.Tensor
    down: torch.Tensor
    mid: torch.Tensor | None = None
    alpha: float | None = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:  # type: ignore[override]
        return alpha_scale(self.alpha, self.rank)

    def factors(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(up [out, rank], down [rank, in * kh * kw])`` in float32 on ``weight``'s device."""
        import torch

        up, down = f32(self.up, weight), f32(self.down, weight)
        if self.mid is not None:
            # mid [rank, rank, kh, kw] after down [rank, in, 1, 1]: down' [rank, in, kh, kw]
            down = torch.einsum("rmhw,mi->rihw", f32(self.mid, weight), down.flatten(1))
        return up.flatten(1), down.flatten(1)

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        """``up @ down`` as ComfyUI computes it: one float32 matmul, then reshaped. The merge
        (:meth:`DeltaPatch.apply`) scales that product and adds it, in that order, for
        ComfyUI's float32 rounding; a fused ``addmm`` rounds differently in a few percent
        of the elements, which shows after the cast to fp16 / bf16."""
        up, down = self.factors(weight)
        import torch

        return torch.mm(up, down).reshape(weight.shape)


class LoraAdapter:
    """LoRA / LoCon in the kohya, diffusers, PEFT and transformers layouts."""

    name = "lora"
    suffixes = (*(s for pair in UP_DOWN for s in pair), MID, *SHARED_SUFFIXES)

    def patches(self, parts: Mapping[str, Any], weight_key: str) -> dict[str, Any]:
        for up_name, down_name in UP_DOWN:
            if up_name in parts and down_name in parts:
                mid = parts.get(MID) if up_name == ".lora_up.weight" else None
                patch = LoraPatch(parts[up_name], parts[down_name], mid, alpha_of(parts))
                return {weight_key: with_dora(patch, parts)}
        return {}
