"""A LoRA file onto model handles: parse, resolve names, build patches, report the rest.

:func:`plan_patches` is pure (tensors in, patches out). :func:`apply_lora` clones nothing
itself: the caller hands it the already-cloned targets (the ``adapter_key_map`` answers),
and it queues the patches at the given strengths. Every key of the file ends up either
used, or in :attr:`LoraReport.unmatched` (logged as a warning with examples), or, for a
model-only loader, in :attr:`LoraReport.skipped` (keys meant for a part not being patched).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from loom.types import AdapterTarget, WeightSlice
from loom_lora.keys import group_keys, part_of
from loom_lora.slices import sliced

log = logging.getLogger(__name__)

#: How many unmatched keys a warning shows.
EXAMPLES = 8


@attrs.frozen
class Target:
    """One part to patch: ``kind`` (``"model"`` / ``"clip"``), its handle, its key map
    (whole weights) and its slice map (layers that are rows of a fused weight)."""

    kind: AdapterTarget
    handle: Any
    key_map: Mapping[str, str]
    strength: float
    slices: Mapping[str, WeightSlice] = attrs.field(factory=dict)


@attrs.define
class LoraReport:
    """What happened to each key of a LoRA file."""

    #: kind -> model key -> patches built for it (in file order).
    patches: dict[str, dict[str, list[Any]]] = attrs.Factory(dict)
    used: set[str] = attrs.Factory(set)
    unmatched: list[str] = attrs.Factory(list)
    skipped: list[str] = attrs.Factory(list)

    @property
    def patched_keys(self) -> int:
        return sum(len(keys) for keys in self.patches.values())


def plan_patches(
    tensors: Mapping[str, Any],
    targets: Sequence[Target],
    adapters: Sequence[Any],
    skip_parts: Sequence[str] = (),
) -> LoraReport:
    """Build the patches ``tensors`` (a LoRA state dict) make for each of ``targets``.

    :param adapters: objects implementing :class:`loom.types.WeightAdapter`, in the order
        they are offered a layer.
    :param skip_parts: parts (``"clip"``) deliberately not patched: their keys are
        reported as skipped rather than unmatched.
    """
    suffixes = {s for adapter in adapters for s in adapter.suffixes}
    parsed = group_keys(tensors.keys(), suffixes)
    report = LoraReport(patches={t.kind: {} for t in targets})
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    for layer in parsed.layers.values():
        target, weight_key = _resolve(layer.layer, targets)
        if target is None or weight_key is None:
            continue
        parts = {suffix: tensors[key] for suffix, key in layer.keys.items()}
        for adapter in adapters:
            if isinstance(weight_key, WeightSlice):
                found = sliced(adapter.patches(parts, weight_key.key), weight_key)
            else:
                found = adapter.patches(parts, weight_key)
            if not found:
                continue
            if target.kind not in shapes:
                shapes[target.kind] = _shapes(target.handle)
            if not all(_fits(p, shapes[target.kind].get(k)) for k, p in found.items()):
                continue  # a layer of another model (an SD1.5 LoRA on SDXL): left unmatched
            for key, patch in found.items():
                report.patches[target.kind].setdefault(key, []).append(patch)
            report.used.update(k for s, k in layer.keys.items() if s in adapter.suffixes)
    layer_of = {key: lk.layer for lk in parsed.layers.values() for key in lk.keys.values()}
    for key in tensors.keys():
        if key in report.used:
            continue
        layer = layer_of.get(key)
        if layer is not None and part_of(layer) in skip_parts:
            report.skipped.append(key)
        else:
            report.unmatched.append(key)
    return report


def _shapes(handle: Any) -> dict[str, tuple[int, ...]]:
    module = getattr(handle, "module", None)
    if module is None:
        return {}
    from loom.memory import value_shapes

    return value_shapes(module)  # an NVFP4 weight by its [out, in], not its packed shape


def _fits(patch: Any, shape: tuple[int, ...] | None) -> bool:
    """Whether ``patch`` gives a weight of ``shape``, tried on the meta device (no data)."""
    import torch

    if shape is None:  # a tensor the module lacks: apply_report drops and counts it
        return True
    try:
        out = patch.apply(torch.empty(shape, device="meta"), 1.0)
    except RuntimeError as exc:
        log.debug("LoRA patch does not fit a %s weight: %s", shape, exc)
        return False
    return tuple(out.shape) == shape


def _resolve(
    layer: str, targets: Sequence[Target]
) -> tuple[Target | None, str | WeightSlice | None]:
    for target in targets:
        key = target.key_map.get(layer)
        if key is None:
            key = target.slices.get(layer)
        if key is not None:
            return target, key
    return None, None


def apply_report(report: LoraReport, targets: Sequence[Target]) -> dict[str, int]:
    """Queue ``report``'s patches on each target's handle; returns kind -> keys patched.

    A patch the handle's module has no tensor for (a bias that does not exist) is dropped
    by the handle and counted as unmatched in the log.
    """
    counts: dict[str, int] = {}
    for target in targets:
        wanted = report.patches.get(target.kind, {})
        used = 0
        depth = max((len(v) for v in wanted.values()), default=0)
        for index in range(depth):  # one add_patches call per "layer" of stacked patches
            batch = {k: v[index] for k, v in wanted.items() if len(v) > index}
            used += len(target.handle.add_patches(batch, target.strength))
        counts[target.kind] = used
        missing = sum(len(v) for v in wanted.values()) - used
        if missing:
            log.warning("%d LoRA patches name %s tensors that do not exist", missing, target.kind)
    return counts


def log_report(name: str, report: LoraReport, counts: Mapping[str, int]) -> None:
    """One INFO line for the load, one WARNING with examples if keys matched nothing."""
    log.info(
        "LoRA %s: %s; %d of %d keys used",
        name,
        ", ".join(f"{n} {kind} weights" for kind, n in counts.items()) or "nothing patched",
        len(report.used),
        len(report.used) + len(report.unmatched) + len(report.skipped),
    )
    if report.unmatched:
        shown = ", ".join(report.unmatched[:EXAMPLES])
        more = (
            f" (+{len(report.unmatched) - EXAMPLES} more)"
            if len(report.unmatched) > EXAMPLES
            else ""
        )
        log.warning(
            "LoRA %s: %d keys match no weight and were not applied (no layer of that name, "
            "or one of another shape): %s%s",
            name,
            len(report.unmatched),
            shown,
            more,
        )
    if report.skipped:
        log.info(
            "LoRA %s: %d keys for parts not being patched were skipped", name, len(report.skipped)
        )
