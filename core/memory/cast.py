"""Layers that keep weights in their storage dtype and cast them on the fly for compute.

Model code builds with the :class:`ops` namespace (``ops.Linear(320, 640)``) instead of
``torch.nn``. Weights stay stored as loaded (fp32, fp16, bf16, float8_e4m3fn, float8_e5m2)
and each forward casts them, on the input's device, to the layer's ``compute_dtype`` (or,
when that is None, the input's dtype). The input is cast to the same dtype. A layer whose
weights already match costs nothing extra.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

FLOAT8_DTYPES = tuple(
    getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name)
)


class CastWeights:
    """Mixin: ``compute_dtype`` and the weight/bias casting every cast layer shares."""

    compute_dtype: torch.dtype | None = None

    def _target_dtype(self, x: torch.Tensor) -> torch.dtype:
        if self.compute_dtype is not None:
            return self.compute_dtype
        if x.is_floating_point() and x.dtype not in FLOAT8_DTYPES:
            return x.dtype
        return torch.float32

    def cast_params(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.dtype]:
        """``(x, weight, bias, dtype)`` with all three on ``x.device`` in the compute dtype."""
        dtype = self._target_dtype(x)
        weight = _cast(getattr(self, "weight", None), dtype, x.device)
        bias = _cast(getattr(self, "bias", None), dtype, x.device)
        if x.is_floating_point() and x.dtype != dtype:
            x = x.to(dtype)
        return x, weight, bias, dtype


def _cast(
    tensor: torch.Tensor | None, dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    if tensor is None:
        return None
    if tensor.dtype == dtype and tensor.device == device:
        return tensor
    # Asynchronous only towards an accelerator: the stream orders the copy before its use
    # there, while a copy to the CPU could still be in flight when the CPU reads it.
    return tensor.to(device=device, dtype=dtype, non_blocking=device.type != "cpu")


class Linear(CastWeights, nn.Linear):
    """``nn.Linear`` computing in ``compute_dtype`` from weights in any storage dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, weight, bias, _ = self.cast_params(x)
        return F.linear(x, weight, bias)


class Conv1d(CastWeights, nn.Conv1d):
    """``nn.Conv1d`` with on-the-fly weight casting."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, weight, bias, _ = self.cast_params(x)
        return self._conv_forward(x, weight, bias)


class Conv2d(CastWeights, nn.Conv2d):
    """``nn.Conv2d`` with on-the-fly weight casting."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, weight, bias, _ = self.cast_params(x)
        return self._conv_forward(x, weight, bias)


class Conv3d(CastWeights, nn.Conv3d):
    """``nn.Conv3d`` with on-the-fly weight casting."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, weight, bias, _ = self.cast_params(x)
        return self._conv_forward(x, weight, bias)


class GroupNorm(CastWeights, nn.GroupNorm):
    """``nn.GroupNorm`` with on-the-fly weight casting."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, weight, bias, _ = self.cast_params(x)
        return F.group_norm(x, self.num_groups, weight, bias, self.eps)


class LayerNorm(CastWeights, nn.LayerNorm):
    """``nn.LayerNorm`` with on-the-fly weight casting."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, weight, bias, _ = self.cast_params(x)
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


class Embedding(CastWeights, nn.Embedding):
    """``nn.Embedding`` returning rows in ``compute_dtype`` (fp32 for fp8 storage by default).

    Only the looked-up rows are cast, not the whole table.
    """

    def _target_dtype(self, x: torch.Tensor) -> torch.dtype:
        if self.compute_dtype is not None:
            return self.compute_dtype
        stored = self.weight.dtype
        return torch.float32 if stored in FLOAT8_DTYPES else stored

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self._target_dtype(x)
        weight = self.weight if self.weight.device == x.device else self.weight.to(x.device)
        if weight.dtype in FLOAT8_DTYPES:
            # fp8 has no gather kernel everywhere: look rows up as raw bytes, then cast.
            rows = F.embedding(x, weight.view(torch.uint8), self.padding_idx)
            return rows.view(weight.dtype).to(dtype)
        out = F.embedding(
            x,
            weight,
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )
        return out.to(dtype)


class ops:  # lower-case: model code spells it like ``torch.nn``
    """Cast-on-the-fly layer classes, used by model code as ``ops.Linear(...)``."""

    Linear = Linear
    Conv1d = Conv1d
    Conv2d = Conv2d
    Conv3d = Conv3d
    GroupNorm = GroupNorm
    LayerNorm = LayerNorm
    Embedding = Embedding


def set_compute_dtype(module: nn.Module, dtype: torch.dtype | None) -> int:
    """Set ``compute_dtype`` on every cast layer inside ``module``; return how many."""
    count = 0
    for sub in module.modules():
        if isinstance(sub, CastWeights):
            sub.compute_dtype = dtype
            count += 1
    return count


def cast_to(module: nn.Module, dtype: torch.dtype, *, floating_only: bool = True) -> nn.Module:
    """Convert the stored weights of ``module`` to ``dtype`` (storage, not compute), in place."""
    for sub in module.modules():
        for name, tensor in [*sub._parameters.items(), *sub._buffers.items()]:
            if tensor is None or (floating_only and not tensor.is_floating_point()):
                continue
            converted = tensor.detach().to(dtype)
            if name in sub._parameters:
                sub._parameters[name] = nn.Parameter(converted, requires_grad=False)
            else:
                sub._buffers[name] = converted
    return module
