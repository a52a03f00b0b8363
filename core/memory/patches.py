"""Reversible weight patches: the protocol adapters implement, and how they are applied.

A weight patch never modifies a tensor in place. Applying one computes the patched weight
from the original in the *merge dtype* of the device it is merged on (ComfyUI's LoRA compute
dtype, :func:`loom.memory.compute.merge_dtype_for`: float32 on the CPU, float16 on most
GPUs), rounds it to the original's dtype, and *replaces* the module's parameter; the
original tensor object is kept aside and put back on revert. That makes revert bitwise
exact by construction, however many load/patch/unload cycles run, and costs no backup copy
of the base weights. A layer that stores its weight quantised
(:class:`QuantizedWeights`, scaled fp8) gets the patch merged into its dequantised values and
quantises the result itself, which may replace its quantisation data (scale) as well.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs
import torch
from torch import nn

from loom.memory.rounding import round_to

log = logging.getLogger(__name__)


@runtime_checkable
class WeightPatch(Protocol):
    """A change to one weight, provided by a weight adapter (LoRA, LoHa, diff, ...).

    ``apply`` receives the current weight in the merge dtype (float32, or float16 where
    ComfyUI merges in fp16) on the compute device and returns the patched weight in that
    dtype and shape, computed as ComfyUI does: the patch's own difference in float32
    (a LoRA's ``up @ down`` and its scaling), cast to the weight's dtype, then added in that
    dtype (``weight + d.to(weight.dtype)``); a stored tensor (a diff, another model's
    weight) is cast to the weight's dtype first and multiplied by the strength there. With
    a float32 weight every cast is a no-op. It must not modify ``weight`` in place.
    """

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor: ...


@attrs.frozen(eq=False)
class DiffPatch:
    """``weight + strength * diff``: the simplest adapter (a stored weight difference)."""

    diff: torch.Tensor

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        diff = self.diff.to(weight.device, weight.dtype)
        return weight + strength * diff.reshape(weight.shape)


@attrs.frozen(eq=False)
class ReplacePatch:
    """Replace the weight by ``value`` blended with ``strength`` (``set`` patches)."""

    value: torch.Tensor

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        value = self.value.to(weight.device, weight.dtype).reshape(weight.shape)
        return torch.lerp(weight, value, strength)


@attrs.frozen
class ScalePatch:
    """``weight * factor``, blended with ``strength`` (the attention-multiply nodes; ComfyUI's
    ``strength_model`` of a ``(None,)`` patch)."""

    factor: float

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        return weight * (1.0 + strength * (float(self.factor) - 1.0))


PatchEntries = Sequence[tuple[WeightPatch, float]]


def resolve(module: nn.Module, key: str) -> tuple[nn.Module, str]:
    """The submodule owning tensor ``key`` (``"down.0.weight"``) and the tensor's local name."""
    owner_path, _, name = key.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    return owner, name


def get_tensor(module: nn.Module, key: str) -> torch.Tensor:
    """The parameter or buffer ``key`` of ``module``; ``KeyError`` if there is none."""
    try:
        owner, name = resolve(module, key)
    except AttributeError as exc:
        raise KeyError(key) from exc
    if name in owner._parameters and owner._parameters[name] is not None:
        return owner._parameters[name]
    if name in owner._buffers and owner._buffers[name] is not None:
        return owner._buffers[name]
    raise KeyError(key)


def set_tensor(owner: nn.Module, name: str, value: torch.Tensor) -> None:
    """Put ``value`` in ``owner`` as parameter or buffer ``name`` (whichever it is now)."""
    if name in owner._parameters:
        if not isinstance(value, nn.Parameter):
            value = nn.Parameter(value, requires_grad=False)
        owner._parameters[name] = value
    else:
        owner._buffers[name] = value


@runtime_checkable
class QuantizedWeights(Protocol):
    """A layer whose stored tensors are not the values it computes with (scaled fp8): weight
    patches are merged into the dequantised values and the layer quantises the result again,
    which may change its quantisation data too (a new weight scale)."""

    def quantizes(self, name: str) -> bool:
        """Whether the layer stores its tensor ``name`` quantised."""
        ...

    def dequantize(
        self, name: str, tensor: torch.Tensor, scales: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``tensor`` (the layer's stored ``name``, cast to the dtype to dequantise in) as the
        values the layer computes with. ``scales``: the layer's stored quantisation tensors
        by local name (``weight_scale``, ...) to use instead of the ones it holds now, which
        while a patched clone of the model is loaded are that clone's requantised ones."""
        ...

    def value_shape(self, name: str) -> tuple[int, ...]:
        """The shape of tensor ``name``'s values (an NVFP4 weight is stored packed)."""
        ...

    def requantize(self, name: str, merged: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """The layer's new stored tensors, by local name (``{"weight": ..., "weight_scale":
        ...}``), for ``merged`` (the values of tensor ``name`` in the merge dtype); fp8
        rounding seeded by ``seed`` (a seed of 0 rounds to nearest, as ComfyUI's does)."""
        ...


def value_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Each state-dict tensor's shape as the module computes with it: a quantised layer's
    weight by the shape of its values, whatever shape it is stored in (what a patch of that
    weight must produce)."""
    shapes = {k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items()}
    for path, layer in module.named_modules():
        if isinstance(layer, QuantizedWeights):
            prefix = f"{path}." if path else ""
            for name in (*layer._parameters, *layer._buffers):
                if prefix + name in shapes and layer.quantizes(name):
                    shapes[prefix + name] = layer.value_shape(name)
    return shapes


def quantized_owner(layer: nn.Module, name: str) -> tuple[QuantizedWeights, str] | None:
    """``(layer, name)`` when ``layer`` stores its tensor ``name`` quantised, else ``None``."""
    if isinstance(layer, QuantizedWeights) and layer.quantizes(name):
        return layer, name
    return None


def merged_values(
    original: torch.Tensor,
    entries: PatchEntries,
    device: torch.device | None = None,
    owner: tuple[QuantizedWeights, str] | None = None,
    merge_dtype: torch.dtype = torch.float32,
    scales: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``original`` (dequantised by ``owner`` when given, with its stored ``scales``:
    :meth:`QuantizedWeights.dequantize`) with ``entries`` applied, in ``merge_dtype`` on
    ``device`` (ComfyUI casts the weight there first, then dequantises)."""
    device = original.device if device is None else device
    weight = original.detach().to(device=device, dtype=merge_dtype, copy=True)
    if owner is not None:
        weight = owner[0].dequantize(owner[1], weight, scales)
    for patch, strength in entries:
        if strength == 0:  # no arithmetic at all: W + 0*d would turn -0.0 into +0.0
            continue
        weight = patch.apply(weight, float(strength))
    return weight


def patched_weight(
    original: torch.Tensor,
    entries: PatchEntries,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    merge_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``original`` with ``entries`` applied in ``merge_dtype`` on ``device``, rounded once
    to ``dtype`` (default: the original's) after the last patch
    (:func:`loom.memory.rounding.round_to`: stochastically, seeded by ``seed``, for fp8)."""
    dtype = original.dtype if dtype is None else dtype
    merged = merged_values(original, entries, device, merge_dtype=merge_dtype)
    return round_to(merged, dtype, seed)


def patched_quantized(
    original: torch.Tensor,
    entries: PatchEntries,
    owner: tuple[QuantizedWeights, str],
    device: torch.device | None = None,
    seed: int = 0,
    merge_dtype: torch.dtype = torch.float32,
    scales: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The new stored tensors of ``owner``'s layer (by local name) once ``entries`` patch its
    tensor ``owner[1]`` (``original``, stored with ``scales``, default the layer's own):
    merged into the dequantised values in ``merge_dtype`` on ``device``, then quantised
    again by the layer (:meth:`QuantizedWeights.requantize`)."""
    merged = merged_values(original, entries, device, owner, merge_dtype, scales)
    return owner[0].requantize(owner[1], merged, seed)


def patch_keys_present(module: nn.Module, keys: Iterable[str]) -> list[str]:
    """The subset of ``keys`` that name a tensor of ``module`` (adapters may carry extras)."""
    present = []
    for key in keys:
        try:
            get_tensor(module, key)
        except KeyError:
            continue
        present.append(key)
    return present


def set_object(module: nn.Module, path: str, value: Any) -> Any:
    """Set attribute ``path`` (dotted, from ``module``) to ``value``; return the old value."""
    owner_path, _, name = path.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    old = getattr(owner, name)
    setattr(owner, name, value)
    return old


def apply_object_patches(module: nn.Module, patches: Mapping[str, Any]) -> dict[str, Any]:
    """Apply object patches; return the backups :func:`revert_object_patches` needs."""
    return {path: set_object(module, path, value) for path, value in patches.items()}


def revert_object_patches(module: nn.Module, backups: Mapping[str, Any]) -> None:
    """Put back the objects saved by :func:`apply_object_patches`."""
    for path, value in backups.items():
        set_object(module, path, value)
