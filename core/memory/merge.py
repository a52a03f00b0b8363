"""Merging two models as weight patches (ComfyUI's model-merging nodes).

ComfyUI merges by patching a clone of the first model with the second model's weights:
each weight becomes ``model_scale * W1 + other_scale * W2``, where ``W1`` is the first model's
weight with the patches it already carries and ``W2`` the second's with its own patches
(``ModelMergeSimple``: ``ratio * W1 + (1 - ratio) * W2``). Nothing is computed until the
merged handle is loaded, and the second model's weights stay shared, not copied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import attrs
import torch

from loom.memory.handle import ModelHandle
from loom.memory.patches import (
    PatchEntries,
    QuantizedWeights,
    patched_quantized,
    patched_weight,
    quantized_owner,
    value_shapes,
)
from loom.memory.rounding import key_seed
from loom.memory.scaled import SCALE_TENSORS, ScaledLinear

log = logging.getLogger(__name__)

#: ``(model_scale, other_scale)`` for a weight, from its ComfyUI key; ``None`` leaves it alone.
MergeScales = Callable[[str], "tuple[float, float] | None"]


@attrs.frozen
class MergeSite:
    """Where and in which dtype :func:`patched_tensors` merges a handle's patches: the
    compute device and its merge dtype (:func:`loom.memory.merge_dtype_for`)."""

    device: torch.device
    merge_dtype: torch.dtype


_SAVE_SITE: ContextVar[MergeSite | None] = ContextVar("loom_save_merge_site", default=None)


@contextmanager
def merging_at(site: MergeSite) -> Iterator[None]:
    """Within it, :func:`patched_tensors` merges at ``site`` whether or not the handle is
    loaded: the saving nodes' way to merge as loading the handle on the configured device
    would (ComfyUI loads a model onto its device, merging its patches there, before saving
    it). :meth:`loom.memory.MemoryManager.merging_for_save` gives the manager's site."""
    token = _SAVE_SITE.set(site)
    try:
        yield
    finally:
        _SAVE_SITE.reset(token)


@attrs.frozen(eq=False)
class MergePatch:
    """``model_scale * weight + strength * other_scale * other``: one weight of a merge.

    ``other`` is the second model's stored weight and ``other_entries`` the patches that
    model carried when merged (applied to ``other`` first, as its own load would);
    ``other_owner`` the second model's layer and tensor name when that layer stores quantised
    values (scaled fp8, NVFP4, MXFP8): ``other`` is dequantised first, as ComfyUI's
    ``convert_func`` does, with ``other_scales``, the layer's stored scales (not the ones it
    holds while a patched clone of the second model is loaded).
    """

    other: torch.Tensor
    other_entries: tuple[tuple[object, float], ...]
    model_scale: float
    other_scale: float
    other_owner: tuple[QuantizedWeights, str] | None = None
    other_scales: Mapping[str, torch.Tensor] | None = None

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        if self.model_scale != 1.0:
            weight = weight * self.model_scale
        scale = strength * self.other_scale
        if scale == 0:  # ComfyUI adds nothing then (not even 0 * W2, which could hold inf/nan)
            return weight
        # the other model's weight with its own patches, in float32 (ComfyUI's intermediate
        # dtype), then cast to the merge dtype and scaled there, as ComfyUI adds a diff
        other = self.other.to(device=weight.device, dtype=torch.float32)
        if self.other_owner is not None:
            other = self.other_owner[0].dequantize(self.other_owner[1], other, self.other_scales)
        other = patched_weight(other, self.other_entries, dtype=torch.float32)
        return weight + scale * other.to(weight.dtype)


def stored_tensors(handle: ModelHandle) -> dict[str, torch.Tensor]:
    """The module's tensors as stored (before any handle's patches), by state-dict key.

    While a handle is loaded its patched weights replace the stored ones in the module;
    the stored tensors are then those the placement keeps to put back.
    """
    tensors = dict(handle.module.state_dict(keep_vars=True))
    placement = handle.shared.placement
    if placement is not None:
        for key, (_owner, _name, original) in placement.home.items():
            if key in tensors:
                tensors[key] = original
    return {key: tensor.detach() for key, tensor in tensors.items()}


def patched_tensors(handle: ModelHandle) -> dict[str, torch.Tensor]:
    """The module's tensors with ``handle``'s weight patches applied (LoRA, merges), on the
    CPU in their stored dtypes, by state-dict key: what saving the handle writes.

    ComfyUI saves a model with its patches applied, merged on its load device in that
    device's LoRA compute dtype. Here they are merged at the site :func:`merging_at` sets
    (the save nodes set the memory manager's), else on the CPU in the merge dtype of the
    handle's compute target (float32 when no manager has loaded it).
    """
    out = {}
    requantized: dict[str, torch.Tensor] = {}
    site = _SAVE_SITE.get()
    if site is None:
        site = MergeSite(torch.device("cpu"), handle.compute_target.merge_dtype)
    device, merge_dtype = site.device, site.merge_dtype
    stored = stored_tensors(handle)
    for key, tensor in stored.items():
        entries = handle.weight_patches.get(key)
        if entries:
            owner_path, _, name = key.rpartition(".")
            layer = handle.module.get_submodule(owner_path)
            owner = quantized_owner(layer, name)
            # rounded as loading rounds it (fp8: seeded by ComfyUI's key), so a saved file
            # holds exactly the weights the handle computes with
            seed = key_seed(handle.comfy_prefix + key)
            if owner is not None:
                prefix = f"{owner_path}." if owner_path else ""
                scales = _stored_scales(stored, owner_path)
                new = patched_quantized(tensor, entries, owner, device, seed, merge_dtype, scales)
                requantized.update({prefix + k: v.to("cpu") for k, v in new.items()})
                continue
            tensor = patched_weight(tensor, entries, device, tensor.dtype, seed, merge_dtype)
        out[key] = tensor.to("cpu")
    # a requantised layer's new scale replaces the stored one
    out.update(requantized)
    return out


def _stored_scales(stored: Mapping[str, torch.Tensor], layer: str) -> dict[str, torch.Tensor]:
    """Layer ``layer``'s quantisation tensors (:data:`SCALE_TENSORS`) among ``stored``
    (:func:`stored_tensors`), by local name."""
    prefix = f"{layer}." if layer else ""
    return {name: stored[prefix + name] for name in SCALE_TENSORS if prefix + name in stored}


def merge_into(target: ModelHandle, source: ModelHandle, scales: MergeScales) -> list[str]:
    """Queue on ``target`` (a clone) a :class:`MergePatch` per weight both modules hold.

    ``scales`` receives each key with ``source.comfy_prefix`` in front (ComfyUI's name, e.g.
    ``diffusion_model.input_blocks.0.0.weight``). Weights whose shapes differ are left
    unmerged, as ComfyUI does; weights only one model has are ignored; a scaled-fp8 layer's
    scales are not weights (its weight merges dequantised). Returns the merged module keys.
    """
    # compared as the layers compute (an NVFP4 weight is stored packed), as ComfyUI compares
    # the dequantised weights
    own = value_shapes(target.module)
    other_shapes = value_shapes(source.module)
    merged: list[str] = []
    skipped: list[str] = []
    stored = stored_tensors(source)
    for key, other in stored.items():
        answer = scales(source.comfy_prefix + key)
        if answer is None or key not in own:
            continue
        if own[key] != other_shapes.get(key, tuple(other.shape)):
            skipped.append(key)
            continue
        owner_path, _, name = key.rpartition(".")
        layer = source.module.get_submodule(owner_path) if owner_path else source.module
        if isinstance(layer, ScaledLinear) and name in SCALE_TENSORS:
            continue
        owner = quantized_owner(layer, name)
        entries: PatchEntries = tuple(source.weight_patches.get(key, ()))
        other_scales = None if owner is None else _stored_scales(stored, owner_path)
        patch = MergePatch(
            other, tuple(entries), float(answer[0]), float(answer[1]), owner, other_scales
        )
        merged.extend(target.add_patches({key: patch}, 1.0))
    if skipped:
        log.warning(
            "%s: %d weights differ in shape from %s's and were not merged (first: %s)",
            target.name,
            len(skipped),
            source.name,
            skipped[0],
        )
    return merged


def ratio_scales(ratio_of: Callable[[str], float | None]) -> MergeScales:
    """``(ratio, 1 - ratio)``: a weighted sum keeping ``ratio`` of the first model."""

    def scales(key: str) -> tuple[float, float] | None:
        ratio = ratio_of(key)
        return None if ratio is None else (ratio, 1.0 - ratio)

    return scales


def block_ratio(
    ratios: dict[str, float], prefix: str = "diffusion_model."
) -> Callable[[str], float]:
    """ComfyUI's ModelMergeBlocks rule: the ratio of the longest name in ``ratios`` that the
    key (without ``prefix``) starts with; the first ratio for keys no name matches."""
    default = next(iter(ratios.values()))

    def ratio_of(key: str) -> float:
        local = key[len(prefix) :] if key.startswith(prefix) else key
        best, ratio = 0, default
        for name, value in ratios.items():
            if local.startswith(name) and len(name) > best:
                best, ratio = len(name), value
        return ratio

    return ratio_of
