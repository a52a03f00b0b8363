"""A T2I-Adapter bound to a hint image: the :class:`loom.types.ControlSignal` for adapters.

As ComfyUI's ``T2IAdapter.get_control``: the hint is resized to the latent x 8 (averaged to
one channel for single-channel adapters), the adapter runs once per hint size (its features
do not depend on the step), the features are scaled by ``strength`` and placed after the
last residual block of each UNet level (XL: ComfyUI's fixed blocks and the middle block).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch

from loom.errors import LoomError
from loom.types import ControlResiduals, ControlSignal
from loom_controlnet.adapter import block_placement
from loom_controlnet.loader import AdapterModel
from loom_controlnet.signal import (
    broadcast_hint,
    chained_models,
    merge,
    previous_and_active,
    resized_hint,
    scaled,
)


@attrs.define(eq=False)
class AdapterSignal:
    """An :class:`AdapterModel` bound to ``hint``, ``strength`` and a timestep range."""

    control: AdapterModel
    hint: torch.Tensor
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    previous: ControlSignal | None = None
    applied_by: str = "ControlNetApplyAdvanced"
    _resized: torch.Tensor | None = attrs.field(default=None, init=False)
    _features: list[torch.Tensor] | None = attrs.field(default=None, init=False)

    def models(self, model: Any) -> list[Any]:
        return chained_models(self.control.handle, self.previous, model)

    def residuals(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        cond: Mapping[str, Any],
        model: Any,
        batched_number: int,
    ) -> ControlResiduals | None:
        previous, active = previous_and_active(self, x, sigma, cond, model, batched_number)
        if not active:
            return previous
        features = self._features_for(x, batched_number)
        placement, xl = block_placement(
            self.control.config.kind, len(features), self._res_blocks(model)
        )
        blocks: list[Any] = [None] * (max(p for p in placement if p is not None) + 1)
        middle: tuple[Any, ...] = ()
        for feature, block in zip(features, placement, strict=True):
            if block is None:
                middle = (feature,)
            else:
                blocks[block] = feature
        out = ControlResiduals(input=tuple(blocks), middle=middle if xl else ())
        return merge(scaled(out, self.strength), previous)

    def _features_for(self, x: torch.Tensor, batched_number: int) -> list[torch.Tensor]:
        resized = resized_hint(self.hint, self._resized, x)
        if resized is not self._resized:
            self._resized, self._features = resized, None
        if self._features is None:
            hint = self._resized
            if self.control.config.hint_channels == 1 and hint.shape[1] > 1:
                hint = hint.mean(dim=1, keepdim=True)
            target = self.control.handle.compute_target
            with torch.inference_mode():
                self._features = self.control.module(hint.to(target.device, target.dtype))
        return [broadcast_hint(f, x.shape[0], batched_number) for f in self._features]

    def _res_blocks(self, model: Any) -> int:
        blocks = getattr(getattr(model, "config", None), "num_res_blocks", None)
        if blocks is None:
            raise LoomError(
                f"{self.applied_by}: input 'control_net' ({self.control.file}) is a T2I-Adapter, "
                f"which needs an LDM UNet model (SD1.x, SD2.x, SDXL), not {type(model).__name__}"
            )
        return int(blocks)
