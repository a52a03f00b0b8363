"""Placing one handle's module on a compute device: resident units, streamed units, patches.

A *unit* is a submodule with tensors of its own (a Linear, a GroupNorm, ...). Placing a
handle decides, unit by unit, which are *resident* (their weights copied to the compute
device, patched) and which are *streamed*: their weights stay on the offload device and a
forward pre-hook copies them to the compute device for that one call; the forward hook
drops the copy afterwards. Cast layers compute in the target's dtype while placed. Every
replaced tensor's original is kept in ``home`` and put back by :meth:`Placement.revert`,
which also clears the cast layers' dtype, so the module ends as it started.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any

import attrs
import torch
from torch import nn

from loom.memory.cast import FLOAT8_DTYPES, CastWeights, set_compute_dtype
from loom.memory.compute import ComputeTarget
from loom.memory.handle import ModelHandle
from loom.memory.merged_cache import MergedWeightCache
from loom.memory.patches import (
    PatchEntries,
    apply_object_patches,
    patched_quantized,
    patched_weight,
    quantized_owner,
    revert_object_patches,
    set_tensor,
)
from loom.memory.rounding import key_seed
from loom.memory.safetensors_file import release_file_pages

log = logging.getLogger(__name__)


@attrs.define(eq=False)
class Unit:
    """A submodule holding tensors directly, placed as a whole."""

    path: str
    module: nn.Module
    names: tuple[str, ...]
    size_bytes: int

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def tensors(self) -> list[tuple[str, torch.Tensor]]:
        found = []
        for name in self.names:
            tensor = self.module._parameters.get(name)
            if tensor is None:
                tensor = self.module._buffers.get(name)
            if tensor is not None:
                found.append((name, tensor))
        return found


def units_of(module: nn.Module) -> list[Unit]:
    """Every submodule with parameters or buffers of its own, in definition order."""
    units = []
    for path, sub in module.named_modules():
        names = [n for n, t in (*sub._parameters.items(), *sub._buffers.items()) if t is not None]
        if names:
            size = sum(
                t.numel() * t.element_size()
                for t in (*sub._parameters.values(), *sub._buffers.values())
                if t is not None
            )
            units.append(Unit(path, sub, tuple(names), size))
    return units


@attrs.define(eq=False)
class StreamMeter:
    """Bytes streamed onto the compute device right now, and the peak of all bytes there."""

    current_bytes: int = 0
    #: bytes resident on the device besides the streamed ones (kept up to date by the manager)
    resident_bytes: int = 0
    #: most bytes on the device at any moment, resident plus streamed
    peak_bytes: int = 0

    def add(self, size: int) -> None:
        self.current_bytes += size
        self.observe()

    def observe(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.resident_bytes + self.current_bytes)

    def remove(self, size: int) -> None:
        self.current_bytes -= size


@attrs.define(eq=False)
class Placement:
    """How one loaded handle's module sits on the devices; undone by :meth:`revert`."""

    handle: ModelHandle
    target: ComputeTarget
    resident: list[Unit]
    streamed: list[Unit]
    home: dict[str, tuple[nn.Module, str, torch.Tensor]] = attrs.Factory(dict)
    object_backups: dict[str, Any] = attrs.Factory(dict)
    hooks: list[Any] = attrs.Factory(list)
    signature: tuple[Any, ...] = ()
    #: where merged weights are kept between loads (the handle's ``merged_cache``), the
    #: bytes it may hold, and the keys of the kept tensors this placement applied
    cache: MergedWeightCache | None = None
    cache_room: int = 0
    cached_keys: list[Hashable] = attrs.Factory(list)

    @property
    def resident_bytes(self) -> int:
        return sum(u.size_bytes for u in self.resident)

    @property
    def streamed_bytes(self) -> int:
        return sum(u.size_bytes for u in self.streamed)

    @property
    def largest_streamed_bytes(self) -> int:
        """Room one streamed unit needs on the device while it runs."""
        return max((u.size_bytes for u in self.streamed), default=0)

    @property
    def is_partial(self) -> bool:
        return bool(self.streamed)

    def revert(self) -> None:
        """Remove hooks, object patches, weight replacements and the cast layers' compute
        dtype: originals come back."""
        set_compute_dtype(self.handle.module, None)
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()
        revert_object_patches(self.handle.module, self.object_backups)
        self.object_backups.clear()
        for owner, name, original in self.home.values():
            set_tensor(owner, name, original)
        self.home.clear()
        if self.cache is not None:
            for key in self.cached_keys:
                self.cache.release(key)
        self.cached_keys.clear()


def choose_resident(units: list[Unit], limit_bytes: int) -> tuple[list[Unit], list[Unit]]:
    """Split ``units`` into (resident, streamed): first fit, in order, within ``limit_bytes``."""
    resident, streamed, used = [], [], 0
    for unit in units:
        if used + unit.size_bytes <= limit_bytes:
            resident.append(unit)
            used += unit.size_bytes
        else:
            streamed.append(unit)
    return resident, streamed


def _resident_dtype(
    unit: Unit, name: str, tensor: torch.Tensor, compute_dtype: torch.dtype | None
) -> torch.dtype:
    """The dtype a resident tensor is kept in while placed.

    A cast layer converts its weight and bias to the compute dtype on every call; where
    that conversion costs no extra bytes (fp16 -> bf16, fp32 -> bf16), it is done once
    here instead. The values are the ones each call would have made. Growing conversions
    (fp16 -> fp32, fp8 -> bf16) stay per call, so the model keeps its stored size.
    """
    if (
        compute_dtype is None
        or tensor.dtype == compute_dtype
        or not isinstance(unit.module, CastWeights)
        or name not in ("weight", "bias")
        or not tensor.is_floating_point()
        or tensor.dtype in FLOAT8_DTYPES
    ):
        return tensor.dtype
    grows = compute_dtype.itemsize > tensor.element_size()
    return tensor.dtype if grows else compute_dtype


def _merged_dtype(
    unit: Unit, name: str, tensor: torch.Tensor, compute_dtype: torch.dtype | None
) -> torch.dtype:
    """The dtype a patched tensor is rounded to once its patches are merged (in the merge
    dtype).

    ComfyUI's rule: the merge is rounded to the dtype the model holds its weights in, which
    for 16- and 32-bit files is the dtype it computes in (it converts them at load; on a CPU
    that is float32, so a LoRA on an fp16 file is never rounded to fp16), and for fp8 the
    fp8 storage itself (cast per layer). A cast layer's weight and bias follow that rule;
    anything else keeps its stored dtype.
    """
    if (
        compute_dtype is None
        or not isinstance(unit.module, CastWeights)
        or name not in ("weight", "bias")
        or not tensor.is_floating_point()
        or tensor.dtype in FLOAT8_DTYPES
    ):
        return tensor.dtype
    return compute_dtype


def _place_unit(placement: Placement, unit: Unit, to_device: bool) -> None:
    patches = placement.handle.weight_patches
    device, compute_dtype = placement.target.device, placement.target.dtype
    requantized = _requantized(placement, unit, to_device)
    for name, original in unit.tensors():
        key = unit.key(name)
        entries = patches.get(key)
        dtype = (
            _resident_dtype(unit, name, original, compute_dtype) if to_device else original.dtype
        )
        if name in requantized:
            new = requantized[name]
        elif entries:
            new = _merged(placement, unit, key, name, original, entries, to_device)
        elif (to_device and original.device != device) or dtype != original.dtype:
            new = original.detach().to(device, dtype)
        else:
            continue
        placement.home[key] = (unit.module, name, original)
        set_tensor(unit.module, name, new)
        if to_device:
            release_file_pages(original)


def _requantized(placement: Placement, unit: Unit, to_device: bool) -> dict[str, torch.Tensor]:
    """The new stored tensors of a quantised layer whose weights are patched (its weight and
    the scale recalculated with it), by local name; empty for other units. Merged in the
    target's merge dtype on its device, kept where the unit lives; not kept in the
    merged-weight cache."""
    out: dict[str, torch.Tensor] = {}
    home = placement.target.device if to_device else None
    for name, original in unit.tensors():
        key = unit.key(name)
        entries = placement.handle.weight_patches.get(key)
        owner = quantized_owner(unit.module, name) if entries else None
        if owner is None:
            continue
        seed = key_seed(placement.handle.comfy_prefix + key)
        target = placement.target
        new = patched_quantized(original, entries, owner, target.device, seed, target.merge_dtype)
        out.update({k: v.to(home or original.device) for k, v in new.items()})
    return out


def _merged(
    placement: Placement,
    unit: Unit,
    key: str,
    name: str,
    original: torch.Tensor,
    entries: PatchEntries,
    to_device: bool,
) -> torch.Tensor:
    """``original`` with its patches merged: from the placement's cache when it kept the
    same merge, else computed (and kept when there is room). Only resident weights are
    kept: a streamed unit's merge lives off the compute device, outside its budget."""
    device, compute_dtype = placement.target.device, placement.target.dtype
    merged = _merged_dtype(unit, name, original, compute_dtype)
    home = device if to_device else original.device
    cache = placement.cache if to_device else None
    cache_key = None
    if cache is not None:
        cache_key = cache.key(key, original, entries, home, merged, placement.target.merge_dtype)
        kept = cache.get(cache_key)
        if kept is not None:
            placement.cached_keys.append(cache_key)
            return kept
    seed = key_seed(placement.handle.comfy_prefix + key)
    merge_dtype = placement.target.merge_dtype
    new = patched_weight(original, entries, device, merged, seed, merge_dtype).to(home)
    if cache is not None and cache.put(cache_key, original, entries, new, placement.cache_room):
        placement.cached_keys.append(cache_key)
    return new


def _stream_hooks(unit: Unit, device: torch.device, meter: StreamMeter) -> list[Any]:
    stash: list[list[tuple[str, torch.Tensor]]] = []

    def pre(module: nn.Module, args: Any) -> None:
        saved = unit.tensors()
        stash.append(saved)
        for name, tensor in saved:
            set_tensor(module, name, tensor.detach().to(device, copy=True))
        meter.add(unit.size_bytes)

    def post(module: nn.Module, args: Any, output: Any) -> None:
        for name, tensor in stash.pop():
            set_tensor(module, name, tensor)
        meter.remove(unit.size_bytes)

    return [
        unit.module.register_forward_pre_hook(pre),
        unit.module.register_forward_hook(post, always_call=True),
    ]


def place(
    handle: ModelHandle,
    target: ComputeTarget,
    resident_limit_bytes: int,
    meter: StreamMeter,
    cache_room: int = 0,
) -> Placement:
    """Put ``handle`` on ``target.device``: units fitting ``resident_limit_bytes`` move, the
    rest stream.

    Weight patches are computed in the target's merge dtype on its device and rounded to the
    compute dtype (cast layers' 16/32-bit tensors) or the stored dtype (fp8, other tensors) as
    ComfyUI rounds its merges (a scaled-fp8 layer's weight is requantised with a new scale,
    :meth:`loom.memory.ScaledLinear.requantize`); object patches are set;
    cast layers compute in ``target.dtype``. Merged weights come from and go to the handle's
    ``merged_cache`` (:mod:`loom.memory.merged_cache`), which may hold ``cache_room`` bytes.
    On failure everything done so far is reverted.
    """
    resident, streamed = choose_resident(units_of(handle.module), resident_limit_bytes)
    placement = Placement(
        handle,
        target,
        resident,
        streamed,
        signature=handle.patch_signature(),
        cache=handle.merged_cache,
        cache_room=cache_room,
    )
    try:
        for unit in resident:
            _place_unit(placement, unit, to_device=True)
        for unit in streamed:
            _place_unit(placement, unit, to_device=False)
            placement.hooks += _stream_hooks(unit, target.device, meter)
        placement.object_backups = apply_object_patches(handle.module, handle.object_patches)
        set_compute_dtype(handle.module, target.dtype)
    except BaseException:
        placement.revert()
        raise
    return placement
